/* import.h - the import worker: manual import of one Duo user, and automatic import of a
 * whole Duo tenant split into page jobs that any import worker takes (see worker.h for
 * the handler contract, store_import.h for the run/page rows).
 *
 * Invariant: a page's effect is one statement that only applies while the page is
 * pending, so a redelivered or duplicated page job changes nothing; the run finishes
 * exactly once, by whichever worker sees its last page done. */
#ifndef DUO_IMPORT_H
#define DUO_IMPORT_H

#include "store_import.h"
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

/* {stage_uuid, duo_user_id, username} -> one confirmed device. */
void import_manual(const worker_env *env, const job *j, job_outcome *out);

/* {stage_uuid, page_size?, dry_run?} -> preflight, run + page jobs, "running" reply. */
void import_auto(const worker_env *env, const job *j, job_outcome *out);

/* {run_id, offset, limit} -> one paced Admin API page applied in one statement. */
void import_page(const worker_env *env, const job *j, job_outcome *out);

/* ---- shared by the handlers (run.c) ---- */

/* The worker's init: describes its metrics and makes its stage cache (env->app; the
 * Admin API client it gives makes one HTTP attempt per call: the import handles 429s
 * itself, slowing the shared pace, instead of sleeping in the client). Its fini is
 * stages_fini. */
int import_init(const worker_env *env, err_t *e);

/* The run's pace ceiling in pages per minute (IMPORT_PAGES_PER_MIN with headroom). */
double import_max_rate(const worker_env *env);

/* Waits for the run's next shared page slot, servicing the broker meanwhile. Returns 0,
 * or -1 with *o set (database trouble or shutdown: retry later). */
int import_pace_wait(const worker_env *env, int64_t run_id, job_outcome *o);

/* Sleeps until a slot already reserved wait ms ahead, servicing the broker meanwhile.
 * 0, or -1 with *o set (shutdown: retry later). */
int import_pace_sleep(const worker_env *env, long long wait, job_outcome *o);

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

/* Called after a page of the run was settled: when every page is done, re-checks Duo's
 * total (adding pages if it grew), else finishes the run and sends the final message
 * once. Failures are logged; a redelivered page job repeats this check. */
void import_complete(const worker_env *env, const stage_rec *st, const char *run_uuid);

#endif
