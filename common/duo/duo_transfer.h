/* duo_transfer.h - one HTTP attempt as the asynchronous engine (duo_async.c) sees it:
 * collecting the answer from libcurl's callbacks (body capped, Retry-After) and naming a
 * failed transfer. Which failures are retried, and when, is duo_retry.h.
 *
 * Invariant: a body never grows past its cap (the transfer is aborted and marked
 * oversize instead). Internal to the duo module. */
#ifndef DUO_TRANSFER_H
#define DUO_TRANSFER_H

#include <curl/curl.h>
#include <stddef.h>

#include "buf.h"
#include "duo.h"

typedef struct duo_body {
    buf b;               /* the answer, NUL-terminated, owned: buf_free() */
    size_t max;          /* the cap, set by the caller */
    int oversize;        /* 1 when the answer passed max (transfer aborted) */
    long retry_after_ms; /* -1 when absent */
} duo_body;

/* CURLOPT_WRITEFUNCTION / CURLOPT_HEADERFUNCTION callbacks; arg is a duo_body. */
size_t duo_body_on_data(char *p, size_t size, size_t n, void *arg);
size_t duo_body_on_header(char *p, size_t size, size_t n, void *arg);

/* Fills err (may be NULL) for a transfer that failed with cc: oversize answer, TLS
 * (naming host and CA file), timeout or network; curl's own words (errbuf, else its
 * description of cc) go to the detail. Returns the ERR_* code. */
int duo_transfer_error(CURLcode cc, const duo_body *b, const char *errbuf, const char *host,
                       const char *ca_file, duo_error *err);

/* Marks err->not_sent when transfer h never sent a byte of its request (it failed in
 * name lookup, connect or the TLS handshake): Duo cannot have acted on it. */
void duo_transfer_note_sent(CURL *h, duo_error *err);

#endif
