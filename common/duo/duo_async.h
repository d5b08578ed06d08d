/* duo_async.h - many signed Duo requests in flight at once on one curl multi handle.
 *
 * The engine is driven from the caller's event loop: duo_async_poll() waits for Duo's
 * sockets, retry timers and one extra descriptor (the AMQP socket) together, makes
 * progress and runs completion callbacks. Keep-alive connections are reused across
 * requests of the same host. The blocking client (duo_call) is a loop over one private
 * engine, so this is the one transfer engine and the one retry policy (duo_retry.h).
 *
 * Invariants: every attempt is signed afresh (duo_request_build); only HTTP 429, 5xx
 * and connection failures are retried, with backoff that never blocks (a timer, not a
 * sleep), within the attempt count and the request's deadline; a request never outlives
 * its deadline (it completes with DUO_FAIL_TIMEOUT); each submitted request completes
 * exactly once, through its callback, unless cancelled first; TLS verification is
 * always on. The engine is single-threaded and not re-entrant: callbacks may submit
 * and cancel requests but must not call duo_async_poll() or duo_async_free(). */
#ifndef DUO_DUO_ASYNC_H
#define DUO_DUO_ASYNC_H

#include <jansson.h>
#include <stddef.h>

#include "duo.h"
#include "duo_breaker.h"
#include "err.h"

typedef struct duo_async duo_async;
typedef struct duo_areq duo_areq;

typedef struct duo_async_opts {
    long max_host_connections; /* 0 = unlimited (each held push needs its own) */
    long buffer_size;          /* per-transfer receive buffer; 0 = 1 KiB (libcurl's least:
                                  Duo's auth answers are smaller) */
    long max_idle_connections; /* connections kept open between calls; 0 = libcurl's
                                  default (4 x the transfers in hand, so it shrinks when
                                  they drain). Size it to the calls a worker can have in
                                  flight (its prefetch): one per held push, all reusable. */
    /* One circuit breaker per Duo host (duo_breaker.h), shared by every request of the
     * engine; breaker.failures 0: none. on_breaker (may be NULL) hears every change. */
    duo_breaker_opts breaker;
    duo_breaker_cb on_breaker;
    void *breaker_arg;
} duo_async_opts;

/* Completion. rc 0: response (and metadata, or NULL) are borrowed, valid during the
 * call only (json_incref to keep). rc < 0 (as duo_call: ERR_DUO, ERR_TLS, ERR_TIMEOUT,
 * ERR_NET, ERR_INVAL, ERR_NOMEM): err says why, response is NULL. err is borrowed. The
 * request handle is already freed when the callback runs. */
typedef void (*duo_async_cb)(void *arg, int rc, json_t *response, json_t *metadata,
                             const duo_error *err);

/* Creates an engine; o may be NULL for defaults. NULL with *e set on failure. The
 * caller owns it: duo_async_free(). */
duo_async *duo_async_new(const duo_async_opts *o, err_t *e);

/* Cancels every request without running its callback and frees the engine. Accepts
 * NULL. */
void duo_async_free(duo_async *a);

/* Starts one call. creds supplies host, ikey, skey, sig_version, digest, ca_file,
 * connect_timeout_ms, timeout_ms and quick_timeout_ms (per attempt), retry_attempts,
 * backoff_base_ms, max_response_bytes and the bulkhead (group, group_limit,
 * group_queue_max, group_queue_ms) (the idle hook and retry budget are not used: the deadline, and
 * duo_async_start_by(), replace the budget); its strings and params are copied.
 * deadline_ms is an absolute clock_ms() time (clock.h); <= 0 means none.
 * cb(arg, ...) runs from a later duo_async_poll(), never from inside this call. *out
 * (may be NULL) receives a handle valid until the callback runs or duo_async_cancel().
 * Returns 0, or ERR_INVAL / ERR_NOMEM with *e set (nothing started, no callback). */
int duo_async_submit(duo_async *a, const duo_client_opts *creds, const char *method,
                     const char *path, const duo_param *params, size_t nparams,
                     long long deadline_ms, duo_async_cb cb, void *arg, duo_areq **out, err_t *e);

/* A refused call completes through its callback like a failed one, never sent: the
 * host's breaker is open (DUO_FAIL_CIRCUIT_OPEN, err->retry_in_ms says when it is probed
 * again), or its group stayed at its limit (DUO_FAIL_STAGE_BUSY). Both are transient
 * with not_sent set. */

/* Delays the first attempt of a request just submitted (not yet started) until
 * start_ms (CLOCK_MONOTONIC ms), e.g. to poll auth_status at a pace; its deadline still
 * holds. No effect on a request that has started. */
void duo_async_defer(duo_areq *r, long long start_ms);

/* No attempt of r starts after start_by_ms (clock_ms(); 0: no such limit). Unlike the
 * deadline, an attempt started before it runs its full timeout: this is the blocking
 * client's retry budget. */
void duo_async_start_by(duo_areq *r, long long start_by_ms);

/* Reads r's answers with parse instead of duo_response_parse (NULL: that one again). */
void duo_async_set_parser(duo_areq *r, duo_parse_fn parse);

/* Fills *out with what r has been through so far: attempts made, and while r waits to
 * retry, the error of the attempt that failed (else the rest is zero). */
void duo_async_last_error(const duo_areq *r, duo_error *out);

/* Drops a request (closing its connection if a transfer is under way) without running
 * its callback; the handle is freed. */
void duo_async_cancel(duo_async *a, duo_areq *r);

/* Waits up to timeout_ms (less when a retry timer or deadline is due) for Duo's sockets
 * or extra_fd (-1: none) to become ready, performs the transfers and runs callbacks of
 * finished requests. *extra_ready (may be NULL) is set to 1 when extra_fd woke the wait
 * (or may have: curl does not always say). Returns the number of callbacks run, or
 * ERR_NET when curl's multi interface itself failed. */
int duo_async_poll(duo_async *a, int extra_fd, int timeout_ms, int *extra_ready);

/* Requests submitted and not yet completed or cancelled. */
size_t duo_async_active(const duo_async *a);

/* Transfers currently on the wire (the rest wait in backoff). */
size_t duo_async_running(const duo_async *a);

/* The breaker state of host now (closed when the engine has no breakers). */
duo_breaker_state duo_async_breaker_state(duo_async *a, const char *host);

/* Calls fn for every host the engine's breakers know, with its state. */
void duo_async_breaker_each(duo_async *a,
                            void (*fn)(void *arg, const char *host, duo_breaker_state s),
                            void *arg);

/* Calls of group in flight (holding a slot) and waiting for one. */
void duo_async_group_load(const duo_async *a, const char *group, int *inflight, int *queued);

/* HTTP attempts made in all, retries included (for tests and metrics). */
unsigned long long duo_async_attempts(const duo_async *a);

#endif
