/* import.h - the import worker: manual import of one Duo user, and automatic import of a
 * whole Duo tenant split into page jobs that any import worker takes (see worker.h for
 * the handler contract, store_import.h for the run/page rows).
 *
 * Invariant: a page's effect is one statement that only applies while the page is
 * pending, so a redelivered or duplicated page job changes nothing; the run finishes
 * exactly once, by whichever worker sees its last page done. No handler sleeps: a page
 * waits for its pace slot on a timer of the worker's event loop. */
#ifndef DUO_IMPORT_H
#define DUO_IMPORT_H

#include "store_import.h"
#include "duo_async.h"
#include "stage.h"

/* Progress messages go out at most this often per run. */
#define IMPORT_PROGRESS_MS 2000
/* Pace at this fraction of IMPORT_PAGES_PER_MIN: Duo's window is a sliding minute, and
 * evenly spaced pages at exactly the limit would graze it with every clock jitter. */
#define IMPORT_PACE_HEADROOM 0.95
/* A 429 slows the run's shared pace by this factor (recovering slowly afterwards). */
#define IMPORT_PACE_SLOWDOWN 0.8
/* Attempts at one page (each after a fresh pace slot) before the job is retried later. */
#define IMPORT_PAGE_TRIES 8
/* Page requests on the wire per worker: the next page's fetch runs while this one is
 * applied; more would only queue at Duo (the pace, not the connections, sets the rate). */
#define IMPORT_FETCHES_IN_FLIGHT 2
/* A page request gives up this long after its slot (curl's own timeouts come first). */
#define IMPORT_FETCH_DEADLINE_MS 120000

/* The import worker's own state (env->app): its stage cache and the asynchronous Duo
 * engine the page jobs fetch through. Made by import_init, freed by import_fini. */
/* An import.manual or import.auto job waiting for Duo: the first member of its call
 * struct (one malloc block, nothing else owned), so import_fini frees what is left. */
typedef struct import_pending {
    struct import_pending *prev, *next;
} import_pending;

typedef struct import_app {
    stages *stages;
    duo_async *engine;
    import_pending *pending; /* jobs waiting for Duo (import_pending_add) */
} import_app;

/* {stage_uuid, duo_user_id, username} -> one confirmed device. Asynchronous (worker.h):
 * its Duo lookups go out on env->app's engine; 1 while the job is pending, 0 when *out
 * was decided at once. */
int import_manual_start(const worker_env *env, const job *j, job_async *h, job_outcome *out);

/* {stage_uuid, page_size?, dry_run?} -> preflight, run + page jobs, "running" reply.
 * Asynchronous: the preflight goes out on env->app's engine; 1 while pending. */
int import_auto_start(const worker_env *env, const job *j, job_async *h, job_outcome *out);

/* {run_id, offset, limit} -> one paced Admin API page applied in one statement. An
 * asynchronous job (worker.h): the page is fetched through env->app's engine, its first
 * attempt deferred to the run's page slot by a timer, so a paced page never holds the
 * worker; the apply runs when the answer arrives, while the next page's fetch is on the
 * wire. Returns 1 while the job is pending (it ends in worker_job_done), 0 when *out was
 * decided at once. */
int import_page_start(const worker_env *env, const job *j, job_async *h, job_outcome *out);

/* ---- shared by the handlers (run.c) ---- */

/* The worker's init: describes its metrics and makes env->app (the stage cache; its
 * blocking Admin API clients make one HTTP attempt per call: the import handles 429s
 * itself, slowing the shared pace; and the asynchronous engine). */
int import_init(const worker_env *env, err_t *e);
void import_fini(const worker_env *env);

/* Drives the page fetches (the worker_def poll): waits up to timeout_ms for Duo's
 * sockets, the engine's timers (page slots) and mq_fd, runs finished fetches. */
void import_poll(const worker_env *env, int mq_fd, int timeout_ms);

/* Links p (the first member of a call struct) into app's pending jobs / unlinks it. */
void import_pending_add(import_app *app, import_pending *p);
void import_pending_del(import_app *app, import_pending *p);

/* The worker's stage cache (borrowed from env->app). */
stages *import_stages(const worker_env *env);

/* The run's pace ceiling in pages per minute (IMPORT_PAGES_PER_MIN with headroom). */
double import_max_rate(const worker_env *env);

/* Publishes body (msgpack) with the properties of *props (its body ignored), confirmed.
 * 0, or ERR_NOMEM (body NULL) / the publish's error (*e). */
int import_publish_msg(const worker_env *env, const json_t *body, const mq_msg *props, err_t *e);

/* Publishes one import.page job for each page (confirmed). Returns 0 or -1 (*e). */
int import_publish_pages(const worker_env *env, const import_run *run, const import_page_ref *pages,
                         size_t n, err_t *e);

/* Publishes every pending page of the run from page_no `from` on. 0 or -1 (*e). */
int import_publish_pending(const worker_env *env, const import_run *run, int from, err_t *e);

/* The result fields of a run: run_id, state, progress, dry_run, counts. New reference. */
json_t *import_run_fields(const import_run *run, int progress);

/* Sends a progress (progress = 1) or final message for the run to the reply_to of its
 * import.auto job (or the results exchange). Returns 0 or -1 (logged). */
int import_send(const worker_env *env, const import_run *run, int progress);

/* What the end of a run still needs after one of its pages was settled. */
typedef enum {
    IMPORT_END_NONE = 0, /* pages left, or the run is over and its final message sent */
    IMPORT_END_TOTAL,    /* every page done: ask Duo's total (a paced one-user page), then
                          * import_end() with it */
    IMPORT_END_SEND,     /* the run is over but its final message was not sent:
                          * import_end() with total -1 sends it */
} import_end_need;

/* Loads the run (into *run) and says what its end needs. Failures are logged and need
 * nothing: a redelivered page job repeats this check. */
import_end_need import_end_due(const worker_env *env, const char *run_uuid, import_run *run);

/* With Duo's total now (-1: unknown), grows a running run whose total grew (publishing
 * the new pages) or finishes it, then sends the final message once. Failures are
 * logged; a redelivered page job repeats the check. */
void import_end(const worker_env *env, import_run *run, long long total);

#endif
