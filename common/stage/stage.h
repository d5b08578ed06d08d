/* stage.h - the domain layer between the job runtime and Duo: what every worker (and
 * duoctl) needs from a Duo stage, in one place and with one policy.
 *
 *   - the stage row with its secrets decrypted, cached per process for
 *     DUO_STAGE_CACHE_MS (a changed, rotated or deleted stage is seen within that time);
 *   - the stage's CA bundle written once to a private temporary file;
 *   - Duo client options for the stage (credentials, timeouts, retry budget, the
 *     runtime's idle hook), and a blocking client kept with the cached stage so
 *     keep-alive connections are reused across jobs;
 *   - one mapping from a failed Duo call to a job outcome (stage_fail_duo).
 *
 * Invariant: decrypted secrets live only in cache entries and are wiped when an entry
 * goes (reload, eviction, stages_free). */
#ifndef DUO_STAGE_H
#define DUO_STAGE_H

#include "duo.h"
#include "duo_async.h"
#include "store_stage.h"
#include "worker.h"

typedef struct stages stages;

/* A cache of up to 16 stages for one worker process; describes the metric families
 * stage_observe() reports (env may be NULL: no metrics). NULL on out of memory. The
 * caller owns it: stages_free() (accepts NULL). */
stages *stages_new(const worker_env *env);
void stages_free(stages *s);

/* A worker_def's init and fini for a worker whose own state (env->app) is just its stage
 * cache (enrollment, import). */
int stages_init(const worker_env *env, err_t *e);
void stages_fini(const worker_env *env);

/* The Duo stage `stage_uuid`, decrypted (from the cache when fresh). Borrowed: valid
 * until the next stages_get() on s. NULL with *o set: `stage_not_found` (unknown or
 * malformed uuid), a retry for database trouble, or `stage_secret_unreadable` (wrong
 * key), dead-lettered. */
const stage_rec *stages_get(stages *s, const worker_env *env, const char *stage_uuid,
                            job_outcome *o);

/* ---- the worker's Duo engine ----
 * Every worker runs its Duo calls on one asynchronous engine (duo_async.h). The stage
 * layer gives that engine its isolation: a circuit breaker per Duo host
 * (DUO_BREAKER_*; its changes are logged, counted in the metrics duo_breaker_state{host}
 * and duo_breaker_transitions_total{host,to}, and noted in duo_host_breaker for duoctl
 * status), and through stages_duo_opts a bulkhead per stage and per-call timeouts. */

/* Fills the breaker part of *ao (other members untouched) so that the engine reports
 * to s. s must outlive the engine. */
void stages_engine_opts(stages *s, const worker_env *env, duo_async_opts *ao);

/* Makes the worker's stage cache and its Duo engine together (ao: the engine's own
 * options; the breakers are added, stages_engine_opts). 0, or an error (*e) with
 * nothing left behind. The caller owns both: duo_async_free(*engine) first, then
 * stages_free(*s). */
int stages_engine_new(const worker_env *env, const duo_async_opts *ao, stages **s,
                      duo_async **engine, err_t *e);

/* The worker's poll over that engine: duo_async_poll (Duo's sockets, its timers and
 * mq_fd, up to timeout_ms), then stages_after_poll. */
void stages_engine_poll(stages *s, duo_async *engine, const worker_env *env, int mq_fd,
                        int timeout_ms);

/* Writes the breaker changes heard since the last call (queued, they travel with the
 * next round trip). Call it from the worker's poll, after duo_async_poll, when no
 * transaction is open. */
void stages_after_poll(stages *s, const worker_env *env);

/* The bulkhead of st in this worker: the stage's own max_calls, else STAGE_MAX_CALLS,
 * else half the worker's prefetch (at least 1). */
int stages_max_calls(const worker_env *env, const stage_rec *st);

/* Which credentials of a stage a call uses. */
typedef enum {
    STAGE_AUTH_API,  /* the Auth API integration (client id / secret) */
    STAGE_ADMIN_API, /* the Admin API integration: one attempt per call (pages are paced
                      * and retried by the import itself) */
} stage_api;

/* Fills *opts for calls to st's `api` (strings borrowed from the cached stage: valid
 * until the next stages_get()): credentials, DUO_QUICK_TIMEOUT_MS for calls answered at
 * once and DUO_TIMEOUT_MS for long polls, and the stage's bulkhead (group = its uuid,
 * stages_max_calls, a queue as deep as the prefetch, waited in for STAGE_QUEUE_MS). -1 with *o set
 * (`admin_api_not_configured`). */
int stages_duo_opts(stages *s, const worker_env *env, const stage_rec *st, stage_api api,
                    duo_client_opts *opts, job_outcome *o);

/* Submits the typed call c (duo.h: duo_*_spec) for st's `api` on the worker's engine,
 * with the options of stages_duo_opts (credentials, timeouts, the stage's bulkhead),
 * to be finished no later than deadline_ms (clock_ms; the engine's limit across
 * retries). cb runs from a later duo_async_poll, never from this call; *req (may be
 * NULL) as duo_async_submit. 0, or -1 with *o set (nothing started, no callback). */
int stages_submit(stages *s, const worker_env *env, duo_async *engine, const stage_rec *st,
                  stage_api api, const duo_call_spec *c, long long deadline_ms, duo_async_cb cb,
                  void *arg, duo_areq **req, job_outcome *o);

/* A blocking Duo client for st's `api`, kept with the cached stage: borrowed, valid
 * until the next stages_get(). NULL with *o set. st must come from stages_get(s). */
duo_client *stages_duo(stages *s, const worker_env *env, const stage_rec *st, stage_api api,
                       job_outcome *o);

/* How a failed call is judged (flags of stage_fail_duo). */
#define STAGE_CALL_ADMIN 0x1 /* Admin API: a 403 is `license_required`, not dead-lettered */
#define STAGE_CALL_ACTS                                                                            \
    0x2 /* acts on Duo's side (enroll, auth): a transient failure                                  \
         * after Duo may have received it is not retried */
#define STAGE_CALL_USER_WAITS                                                                      \
    0x4 /* a person waits (login): a transient failure answers                                     \
         * `duo_unavailable` at once instead of a later retry */
#define STAGE_CALL_PERSON                                                                          \
    0x8 /* a person waits, but only refusals (breaker open, stage busy)                            \
         * answer at once; other transient failures are retried (enroll.begin) */

/* Turns a failed Duo call into the job outcome, the one mapping every worker uses:
 *   - refused unsent (the host's breaker is open, the stage at its bulkhead): with
 *     USER_WAITS or PERSON `duo_unavailable` at once, with error fields `reason`
 *     ("circuit_open" | "stage_busy") and `retry_after_secs`; otherwise deferred (a
 *     retry through the retry tiers, no network call made);
 *   - 400 40002 naming user_id/username: `duo_user_not_found` (the Duo user is gone);
 *   - transient (429, 5xx, network): a retry, unless the call acts and Duo may have
 *     received it, or a person waits: then `duo_unavailable`;
 *   - 403: `license_required` for the Admin API; else 40301 `duo_integration_disabled`,
 *     another `duo_forbidden`, both dead-lettered (an operator must fix the stage);
 *   - credentials, signature, TLS: duo_error_code(), dead-lettered;
 *   - anything else: duo_error_code().
 * Duo's numeric code, when it sent one, goes in the reply's error as `duo_code`. `what`
 * names the call in the message. */
void stage_fail_duo(job_outcome *o, int rc, const duo_error *de, const char *what, unsigned flags);

/* Puts Duo's numeric code (when > 0) in the reply's error object as `duo_code`. */
void stage_duo_code(job_outcome *o, int duo_code);

/* Records a Duo call's latency and, on failure, its error code in the worker's metrics
 * (duo_api_seconds, duo_api_errors_total). */
void stage_observe(const worker_env *env, const char *call, long long ms, int rc,
                   const duo_error *de);

#endif
