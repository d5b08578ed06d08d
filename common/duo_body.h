/* duo_body.h - collecting one Duo HTTP answer from libcurl's callbacks: the body (capped,
 * an oversize answer aborts the transfer) and a Retry-After header. Shared by the
 * blocking client (duo_http.c) and the asynchronous engine (duo_async.c); internal to
 * the duo module. */
#ifndef DUO_BODY_H
#define DUO_BODY_H

#include <stddef.h>

typedef struct duo_body {
    char *body;            /* NUL-terminated, owned: free() */
    size_t len, cap, max;  /* max: the cap, set by the caller */
    int oversize;          /* 1 when the answer passed max (transfer aborted) */
    long retry_after_ms;   /* -1 when absent */
} duo_body;

/* CURLOPT_WRITEFUNCTION / CURLOPT_HEADERFUNCTION callbacks; arg is a duo_body. */
size_t duo_body_on_data(char *p, size_t size, size_t n, void *arg);
size_t duo_body_on_header(char *p, size_t size, size_t n, void *arg);

#endif
