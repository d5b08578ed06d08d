/* store_import.h - import runs, their pages and the shared page-rate budget, as the
 * import worker reads and writes them.
 *
 * Key invariant: a page is applied at most once. store_import_page_apply() writes the
 * page's devices, marks the page done and adds to the run's counters in one statement,
 * and only while the page is still 'pending'; a replayed page changes nothing. A run's
 * state goes 'running' -> 'done' exactly once (store_import_run_finish), and at most one
 * run per stage is 'running' (a partial unique index). Built only on store.h. */
#ifndef DUO_STORE_IMPORT_H
#define DUO_STORE_IMPORT_H

#include <stddef.h>
#include <stdint.h>

#include "store.h"

/* Name given to every device an import creates. */
#define IMPORT_DEVICE_NAME "Imported Duo Authenticator"

/* A run as stored (plain values, no pointers: the caller owns the struct). */
typedef struct import_run {
    int64_t id;
    char uuid[37];
    int64_t stage_id;
    char stage_uuid[37];
    char job_id[256];
    char reply_to[256];       /* "" when the job had none */
    char correlation_id[256]; /* the original job's correlation id, or its job id */
    char state[12];           /* running | done | failed */
    int dry_run;
    int page_size;
    int64_t total_objects;
    int pages_total;
    int pages_done;
    int64_t created;
    int64_t existing;
    int64_t unknown_user;
    int errors;
    int final_sent;       /* 1 once the final message went out */
    double elapsed_s;     /* since the run started (or until it finished) */
    int64_t total_at_end; /* Duo's total when the run finished; -1 when unknown */
} import_run;

/* What starting a run needs; strings borrowed for the call (reply_to may be NULL). */
typedef struct import_run_new {
    int64_t stage_id;
    const char *job_id;
    const char *reply_to;
    const char *correlation_id;
    int dry_run;
    int page_size;           /* 1..300 */
    int64_t total_objects;   /* from the preflight page's metadata */
    double rate_per_min;     /* initial shared page budget */
    double max_rate_per_min; /* the run's own ceiling (pages/min); <= 0: none, the
                              * ceiling each reservation passes (store_import_pace_take) */
    int first_slot_ms;       /* the next page may start this long from now */
} import_run_new;

/* Creates the run, one pending page per offset range [k*page_size, total) and its pace
 * row, in one transaction (must be called outside one). ERR_CONFLICT when the stage
 * already has a running run (nothing written). Fills *out. */
int store_import_run_start(store *s, const import_run_new *n, import_run *out, err_t *e);

/* The stage's running run: 0, ERR_NOTFOUND, ERR_DB. */
int store_import_run_running(store *s, int64_t stage_id, import_run *out, err_t *e);

/* A run by uuid: 0, ERR_NOTFOUND (also for a malformed uuid), ERR_DB. */
int store_import_run_get(store *s, const char *run_uuid, import_run *out, err_t *e);

/* One page of a run. */
typedef struct import_page_ref {
    int page_no;
    int64_t offset;
    int limit;
} import_page_ref;

/* The run's pending pages with page_no >= from_page, in order, at most max of them.
 * *out is a fresh array the caller frees (free()); *n its length. */
int store_import_pages_pending(store *s, int64_t run_id, int from_page, size_t max,
                               import_page_ref **out, size_t *n, err_t *e);

/* The pending pages that the page at parent_offset added for the rest of its range (see
 * store_import_page_apply), so a replay of that page can publish them again. Same
 * ownership as store_import_pages_pending. */
int store_import_pages_children(store *s, int64_t run_id, int64_t parent_offset,
                                import_page_ref **out, size_t *n, err_t *e);

/* Grows a running run whose Duo total grew to new_total: adds pages covering
 * [current end, new_total) and updates total_objects / pages_total, in one transaction
 * (call outside one). *first_new receives the first new page_no, *added the count (0
 * when nothing grew). */
int store_import_pages_extend(store *s, int64_t run_id, int64_t new_total, int *first_new,
                              int *added, err_t *e);

/* Reserves the run's next page slot at its shared rate and returns in *wait_ms how long
 * until it (0 when it is now). Each reservation also lets a slowed rate recover a little
 * toward its ceiling: max_rate, or the run's own max_rate_per_min when lower.
 * Autocommit: call outside a transaction so the row is not held. */
int store_import_pace_take(store *s, int64_t run_id, double max_rate, long long *wait_ms, err_t *e);

/* Starts a page job in one round trip: loads the run (as store_import_run_get) and,
 * when the run is running and its page at offset is still pending, sets *pending = 1 and
 * gives the page its slot (*wait_ms until it): the one it kept when it was deferred
 * (store_import_page_keep_slot; taken and cleared; dropped when it is more than two
 * slot intervals past, so late pages never burst), else the run's next page slot,
 * reserved as store_import_pace_take does.
 * Otherwise *pending = 0, *wait_ms = 0 and no slot is taken. *page receives the page at
 * that offset (page_no -1 when the run has none there) with its limit. 0, ERR_NOTFOUND
 * (also for a malformed uuid), ERR_DB. Autocommit: call outside a transaction. */
int store_import_page_begin(store *s, const char *run_uuid, long long offset, double max_rate,
                            import_run *run, import_page_ref *page, int *pending,
                            long long *wait_ms, err_t *e);

/* Keeps on a pending page the slot it reserved, due wait_ms from now, while the page is
 * deferred (store_import_page_begin takes it back). Autocommit. */
int store_import_page_keep_slot(store *s, int64_t run_id, int page_no, long long wait_ms, err_t *e);

/* Slows the run's shared rate: rate = max(rate * factor, floor). Persisted. */
int store_import_pace_slow(store *s, int64_t run_id, double factor, double floor, err_t *e);

/* Result of applying one page. */
typedef struct import_page_result {
    int applied;          /* 0: the page was not pending (a replay): nothing changed */
    int64_t created;      /* devices created (dry run: that would be created) */
    int64_t existing;     /* Duo users whose device already exists on the stage */
    int64_t unknown_user; /* Duo users with no local user of that username */
    int pages_done;       /* the run's counters after this page (applied only) */
    int pages_total;
    int progress_due; /* 1 when this page claimed the run's next progress message */
    int rest_page_no; /* the page added for the rest of the range, or -1 */
} import_page_result;

/* Applies one page of n Duo users (ids[i], names[i]; both borrowed) to stage_id in a
 * single statement: devices for matching local usernames (ON CONFLICT DO NOTHING;
 * none in a dry run), the page marked done with its counts, the run's counters
 * advanced, and a progress message claimed when the last one is progress_ms old. With
 * rest non-NULL (Duo answered short of the page's range), a pending page for
 * [rest->offset, +rest->limit) is added in the same statement (out->rest_page_no).
 * ERR_INVAL for a name or id that is empty or too long (nothing written). Commits
 * without waiting for the WAL flush: the page is durable once any later synchronous
 * commit on the same database returned (the runtime's commit of the page job), so the
 * job must not be acknowledged before one. */
int store_import_page_apply(store *s, int64_t run_id, const import_page_ref *page,
                            const import_page_ref *rest, int64_t stage_id, int dry_run, size_t n,
                            const char *const *ids, const char *const *names, int progress_ms,
                            import_page_result *out, err_t *e);

/* Marks a pending page failed with a message, counting it as done and as an error in
 * the run (so the run still completes). *applied = 0 when it was not pending. */
int store_import_page_fail(store *s, int64_t run_id, int page_no, const char *message, int *applied,
                           err_t *e);

/* Sets a running run whose pages are all done to 'done', recording Duo's total then
 * (total_at_end; -1: unknown). *finished = 1 when this call did it (the caller then
 * sends the final message), 0 otherwise. Fills *out with the run as it is after the
 * call. */
int store_import_run_finish(store *s, int64_t run_id, int64_t total_at_end, int *finished,
                            import_run *out, err_t *e);

/* Records that the final message was sent. */
int store_import_run_final_sent(store *s, int64_t run_id, err_t *e);

/* Called once per failed page (offset, message borrowed for the call). */
typedef void (*import_page_error_fn)(int64_t offset, const char *message, void *arg);

/* Walks up to max failed pages of the run by page number. */
int store_import_page_errors(store *s, int64_t run_id, size_t max, import_page_error_fn fn,
                             void *arg, err_t *e);

#endif
