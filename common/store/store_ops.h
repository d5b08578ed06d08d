/* store_ops.h - what an operator reads and resets in the store: job records of
 * dead-lettered messages, recent outcomes, claimed jobs and running import runs
 * (duoctl status, duoctl dead). Built only on store.h.
 *
 * Key invariant: the one write, store_job_rearm(), only ever lets a recorded job run
 * once more; it never touches a job's effects. The caller does it before handing the
 * job's dead message back to its work queue, so the worker runs it instead of answering
 * it from the stored reply. */
#ifndef DUO_STORE_OPS_H
#define DUO_STORE_OPS_H

#include <stddef.h>
#include <stdint.h>

#include "store.h"

/* A job record as stored. The caller owns the struct and frees `reply` (free()). */
typedef struct store_job_view {
    char job_type[64];
    char state[12];       /* running | done */
    int attempts;         /* claims of the record, including crashed ones */
    char error_code[64];  /* "" when the job succeeded or is unfinished */
    int64_t created_at;   /* Unix seconds */
    int64_t finished_at;  /* Unix seconds, 0 when unfinished */
    unsigned char *reply; /* the encoded reply (msgpack), NULL when none */
    size_t reply_len;
} store_job_view;

/* Loads job_id's record. ERR_NOTFOUND when there is none (a message that never became a
 * job: bad input). */
int store_job_view_get(store *s, const char *job_id, store_job_view *out, err_t *e);
void store_job_view_clear(store_job_view *v);

/* store_job_view_get for n ids in one round trip: found[k] = 1 and out[k] filled (clear
 * each) for every ids[k] that has a record, else out[k] zeroed. An id may repeat. On
 * failure nothing is filled. */
int store_job_views_get(store *s, const char *const *ids, size_t n, store_job_view *out, int *found,
                        err_t *e);

/* Lets job_id run once more: its record goes back to 'running' with no claims, so the
 * next delivery is claimed as new (the stored reply stays until the run overwrites it).
 * Only a failed or unfinished record is re-armed: one that succeeded (a replayed copy
 * already ran) is left alone. *rearmed = 0 when nothing was re-armed (no record, or it
 * succeeded). */
int store_job_rearm(store *s, const char *job_id, int *rearmed, err_t *e);
/* store_job_rearm for n ids in one statement: rearmed[k] = 1 for each ids[k] re-armed. */
int store_jobs_rearm(store *s, const char *const *ids, size_t n, int *rearmed, err_t *e);

/* Takes the lock `name`, shared by every session of the database, waiting up to wait_ms
 * while another session holds it (then ERR_TIMEOUT); a session's locks go with it (also
 * when its process is killed). store_ops_unlock gives it back. Operators' tools use it to
 * take turns at something outside the database (reading the dead-letter queue). */
int store_ops_lock(store *s, const char *name, int wait_ms, err_t *e);
int store_ops_unlock(store *s, const char *name, err_t *e);

/* Outcomes of the last `limit` finished jobs: one callback per (job type, outcome) with
 * the count; outcome is "ok" or the error code. Most frequent first. */
typedef int (*store_outcome_cb)(const char *job_type, const char *outcome, int64_t n, void *arg);
int store_job_outcomes(store *s, int limit, store_outcome_cb cb, void *arg, err_t *e);

/* Jobs claimed now and not finished, per worker program (key "duo-enroll", "duo-auth" or
 * "duo-import"): the claims' locks its sessions hold. */
typedef int (*store_count_cb)(const char *key, int64_t n, void *arg);
int store_job_running(store *s, store_count_cb cb, void *arg, err_t *e);

/* A running import run, for a progress bar. */
typedef struct store_run_progress {
    char uuid[37];
    char stage[128]; /* the stage's name */
    int dry_run;
    int pages_total, pages_done;
    int64_t created, existing, unknown_user;
    int errors;
    double elapsed_s; /* since it started (to its end, once ended) */
    double idle_s;    /* since its last progress (or its start) */
    char state[12];   /* running | done | failed (store_import_runs only) */
    char error[200];  /* why it failed, "" (store_import_runs only) */
    int64_t started;  /* Unix seconds (store_import_runs only) */
} store_run_progress;

typedef int (*store_run_cb)(const store_run_progress *r, void *arg);
int store_import_running(store *s, store_run_cb cb, void *arg, err_t *e);
/* The `limit` newest import runs (all: whatever their state, else the running ones). */
int store_import_runs(store *s, int all, int limit, store_run_cb cb, void *arg, err_t *e);

/* Ends a running import run for good: its pending pages become failed ("cancelled by an
 * operator") and the run failed, in one transaction, pages first, so a worker still
 * paging finds its page no longer pending (its apply changes nothing: no device is made
 * after the cancel) and no page job of the run starts one again; a stage's next run may
 * start at once. *cancelled = 0 when the run was not running (unknown, or over);
 * *pages = pending pages ended. */
int store_import_cancel(store *s, const char *run_uuid, int *cancelled, int64_t *pages, err_t *e);

#endif
