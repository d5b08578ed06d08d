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

/* Which credentials of a stage a call uses. */
typedef enum {
    STAGE_AUTH_API,  /* the Auth API integration (client id / secret) */
    STAGE_ADMIN_API, /* the Admin API integration: one attempt per call (pages are paced
                      * and retried by the import itself) */
} stage_api;

/* Fills *opts for calls to st's `api` (strings borrowed from the cached stage: valid
 * until the next stages_get()). -1 with *o set (`admin_api_not_configured`). */
int stages_duo_opts(stages *s, const worker_env *env, const stage_rec *st, stage_api api,
                    duo_client_opts *opts, job_outcome *o);

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

/* Turns a failed Duo call into the job outcome, the one mapping every worker uses:
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
