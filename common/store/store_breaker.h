/* store_breaker.h - the duo_host_breaker rows: each worker's circuit breakers that are
 * not closed (written by the worker on each change, read by duoctl status). The rows
 * are a view for operators, never a source of truth: a worker's breakers live in its
 * memory, and losing a write costs nothing but a stale line in `duoctl status`. */
#ifndef DUO_STORE_BREAKER_H
#define DUO_STORE_BREAKER_H

#include "err.h"
#include "store.h"

/* Queues the write of one change (store_send_alone: it travels with the next round
 * trip, a failure is only logged): state "open" or "half_open" upserts the row of
 * (host, worker), NULL ("closed") deletes it. Strings borrowed for the call. 0 or an
 * error when it could not be queued. */
int store_breaker_note(store *s, const char *host, const char *worker, const char *state,
                       long long open_ms, err_t *e);

/* One row as duoctl sees it; strings borrowed, valid during the callback only. */
typedef struct breaker_view {
    const char *host;
    const char *worker;
    const char *state;
    long long open_ms;
    long long age_secs; /* since the worker last wrote the row */
} breaker_view;

typedef int (*breaker_view_fn)(const breaker_view *v, void *arg);

/* Calls fn for every row written in the last max_age_secs, by host then worker. 0, the
 * first non-zero value fn returned, or an error. */
int store_breaker_list(store *s, int max_age_secs, breaker_view_fn fn, void *arg, err_t *e);

#endif
