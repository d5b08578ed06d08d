/* duo_transfer.h - what the blocking client (duo_http.c) and the asynchronous engine
 * (duo_async.c) share about one HTTP attempt: collecting the answer from libcurl's
 * callbacks (body capped, Retry-After), naming a failed transfer, which failures are
 * retried, and the backoff before the next attempt. Internal to the duo module. */
#ifndef DUO_TRANSFER_H
#define DUO_TRANSFER_H

#include <curl/curl.h>
#include <stddef.h>

#include "duo.h"

typedef struct duo_body {
    char *body;           /* NUL-terminated, owned: free() */
    size_t len, cap, max; /* max: the cap, set by the caller */
    int oversize;         /* 1 when the answer passed max (transfer aborted) */
    long retry_after_ms;  /* -1 when absent */
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

/* 1 when a failed attempt may be tried again: network failures, HTTP 429 and 5xx (never
 * other 4xx, never timeouts: Duo may already have acted). For a call that makes Duo act
 * (acts, see duo_call_acts) only 429 and attempts that never reached Duo. */
int duo_transfer_retryable(int rc, const duo_error *e, int acts);

/* Wait before attempt n+1: Retry-After when Duo sent one, else base * 2^(n-1) (capped at
 * 32x) plus up to one base of jitter drawn from *rng. */
long long duo_transfer_backoff_ms(long long base, int n, long retry_after_ms, unsigned *rng);

#endif
