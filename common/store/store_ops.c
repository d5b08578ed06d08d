/* store_ops.c - the operator's queries over job records and import runs (store_ops.h). */
#include "store_ops.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clock.h"
#include "store_int.h"

static const store_stmt st_view = {
    "ops_job_view",
    "SELECT job_type, state, attempts, coalesce(error_code, ''), "
    "extract(epoch FROM created_at)::bigint, "
    "coalesce(extract(epoch FROM finished_at)::bigint, 0), reply FROM job WHERE job_id = $1"};
static const store_stmt st_views = {
    "ops_job_views", "SELECT job_type, state, attempts, coalesce(error_code, ''), "
                     "extract(epoch FROM created_at)::bigint, "
                     "coalesce(extract(epoch FROM finished_at)::bigint, 0), reply, job_id FROM job "
                     "WHERE job_id = ANY($1::text[])"};
static const store_stmt st_rearm_many = {
    "ops_jobs_rearm", "UPDATE job SET state = 'running', attempts = 0 "
                      "WHERE job_id = ANY($1::text[]) "
                      "AND (state = 'running' OR error_code IS NOT NULL) RETURNING job_id"};
static const store_stmt st_rearm = {
    "ops_job_rearm", "UPDATE job SET state = 'running', attempts = 0 WHERE job_id = $1 "
                     "AND (state = 'running' OR error_code IS NOT NULL)"};
static const store_stmt st_lock = {"ops_lock", "SELECT pg_try_advisory_lock(hashtext($1))"};
static const store_stmt st_unlock = {"ops_unlock", "SELECT pg_advisory_unlock(hashtext($1))"};
static const store_stmt st_outcomes = {
    "ops_job_outcomes",
    "SELECT job_type, coalesce(error_code, 'ok') AS outcome, count(*) FROM "
    "(SELECT job_type, error_code FROM job WHERE state = 'done' "
    "ORDER BY finished_at DESC LIMIT $1) j GROUP BY 1, 2 ORDER BY 3 DESC, 1, 2"};
/* Jobs claimed now: a claim is a session advisory lock held by a worker (migration 013:
 * no row is written until the job ends), whose program names its kind (the store's
 * fallback_application_name). */
static const store_stmt st_running = {
    "ops_job_claimed",
    "SELECT a.application_name, count(*) FROM pg_locks l JOIN pg_stat_activity a"
    " ON a.pid = l.pid WHERE l.locktype = 'advisory' AND l.granted"
    " AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
    " AND a.application_name IN ('duo-enroll', 'duo-auth', 'duo-import')"
    " GROUP BY 1 ORDER BY 1"};
/* Every run, newest first, or (with $1 false) the running ones; state and why it ended. */
static const store_stmt st_runs_all = {
    "ops_import_runs",
    "SELECT r.uuid, s.name, r.dry_run, r.pages_total, r.pages_done, r.created, r.existing, "
    "r.unknown_user, r.errors, extract(epoch FROM coalesce(r.finished_at, clock_timestamp()) - "
    "r.started_at)::float8, extract(epoch FROM clock_timestamp() - coalesce(r.last_progress_at, "
    "r.started_at))::float8, r.state, coalesce(r.error_message, ''), "
    "extract(epoch FROM r.started_at)::bigint FROM import_run r JOIN duo_stage s "
    "ON s.id = r.stage_id WHERE $1::boolean OR r.state = 'running' "
    "ORDER BY r.started_at DESC LIMIT $2::bigint"};
/* A cancel ends the pages first (the order a page's apply locks them: page, then run), so
 * a worker still paging finds its page no longer pending and changes nothing. */
static const store_stmt st_cancel_pages = {
    "ops_import_cancel_pages",
    "UPDATE import_page SET state = 'failed', error = 'cancelled by an operator', "
    "done_at = now() WHERE run_id = (SELECT id FROM import_run WHERE uuid = $1::uuid "
    "AND state = 'running') AND state = 'pending'"};
static const store_stmt st_cancel_run = {
    "ops_import_cancel_run",
    "UPDATE import_run SET state = 'failed', finished_at = now(), "
    "error_message = 'cancelled by an operator' WHERE uuid = $1::uuid AND state = 'running'"};
static const store_stmt st_runs = {
    "ops_import_running",
    "SELECT r.uuid, s.name, r.dry_run, r.pages_total, r.pages_done, r.created, r.existing, "
    "r.unknown_user, r.errors, extract(epoch FROM clock_timestamp() - r.started_at)::float8, "
    "extract(epoch FROM clock_timestamp() - coalesce(r.last_progress_at, r.started_at))::float8 "
    "FROM import_run r JOIN duo_stage s ON s.id = r.stage_id WHERE r.state = 'running' "
    "ORDER BY r.started_at"};

/* Fills out from row i of a view query. */
static int view_row(const store_res *r, int i, store_job_view *out, err_t *e)
{
    memset(out, 0, sizeof *out);
    snprintf(out->job_type, sizeof out->job_type, "%s", store_res_get(r, i, 0));
    snprintf(out->state, sizeof out->state, "%s", store_res_get(r, i, 1));
    out->attempts = (int)store_col_i64(r, i, 2);
    snprintf(out->error_code, sizeof out->error_code, "%s", store_res_get(r, i, 3));
    out->created_at = store_col_i64(r, i, 4);
    out->finished_at = store_col_i64(r, i, 5);
    if (!store_res_isnull(r, i, 6) && store_res_bytea(r, i, 6, &out->reply, &out->reply_len) < 0)
        return err_set(e, ERR_NOMEM, "unreadable stored reply");
    return 0;
}

int store_job_view_get(store *s, const char *job_id, store_job_view *out, err_t *e)
{
    memset(out, 0, sizeof *out);
    store_res *r = NULL;
    const char *v[] = {job_id};
    int rc = store_exec(s, &st_view, 1, v, &r, e);
    if (rc == 0 && store_res_rows(r) != 1)
        rc = err_set(e, ERR_NOTFOUND, "no job record for this job id");
    if (rc == 0)
        rc = view_row(r, 0, out, e);
    store_res_free(r);
    return rc;
}

int store_job_views_get(store *s, const char *const *ids, size_t n, store_job_view *out, int *found,
                        err_t *e)
{
    for (size_t k = 0; k < n; k++) {
        memset(&out[k], 0, sizeof out[k]);
        found[k] = 0;
    }
    if (n == 0)
        return 0;
    char *arr = store_text_array(ids, n);
    if (!arr)
        return err_set(e, ERR_NOMEM, "out of memory");
    const char *v[] = {arr};
    store_res *r = NULL;
    int rc = store_exec(s, &st_views, 1, v, &r, e);
    free(arr);
    for (int i = 0; rc == 0 && i < store_res_rows(r); i++) {
        const char *id = store_res_get(r, i, 7);
        for (size_t k = 0; rc == 0 && k < n; k++) /* one id may be asked for twice */
            if (!found[k] && strcmp(ids[k], id) == 0 && (rc = view_row(r, i, &out[k], e)) == 0)
                found[k] = 1;
    }
    store_res_free(r);
    if (rc < 0)
        for (size_t k = 0; k < n; k++)
            store_job_view_clear(&out[k]), found[k] = 0;
    return rc;
}

int store_jobs_rearm(store *s, const char *const *ids, size_t n, int *rearmed, err_t *e)
{
    for (size_t k = 0; k < n; k++)
        rearmed[k] = 0;
    if (n == 0)
        return 0;
    char *arr = store_text_array(ids, n);
    if (!arr)
        return err_set(e, ERR_NOMEM, "out of memory");
    const char *v[] = {arr};
    store_res *r = NULL;
    int rc = store_exec(s, &st_rearm_many, 1, v, &r, e);
    free(arr);
    for (int i = 0; rc == 0 && i < store_res_rows(r); i++) {
        const char *id = store_res_get(r, i, 0);
        for (size_t k = 0; k < n; k++)
            rearmed[k] |= strcmp(ids[k], id) == 0;
    }
    store_res_free(r);
    return rc;
}

void store_job_view_clear(store_job_view *v)
{
    if (!v)
        return;
    free(v->reply);
    memset(v, 0, sizeof *v);
}

int store_job_rearm(store *s, const char *job_id, int *rearmed, err_t *e)
{
    store_res *r = NULL;
    const char *v[] = {job_id};
    int rc = store_exec(s, &st_rearm, 1, v, &r, e);
    *rearmed = rc == 0 && store_res_affected(r) > 0;
    store_res_free(r);
    return rc;
}

static int exec1(store *s, const store_stmt *st, const char *arg, err_t *e)
{
    store_res *r = NULL;
    const char *v[] = {arg};
    int rc = store_exec(s, st, 1, v, &r, e);
    store_res_free(r);
    return rc;
}

int store_ops_lock(store *s, const char *name, int wait_ms, err_t *e)
{
    int64_t end = clock_ms() + wait_ms;
    for (;;) {
        store_res *r = NULL;
        const char *v[] = {name};
        int rc = store_exec(s, &st_lock, 1, v, &r, e);
        int got = rc == 0 && store_col_bool(r, 0, 0);
        store_res_free(r);
        if (rc < 0 || got)
            return rc;
        if (clock_ms() >= end)
            return err_set(e, ERR_TIMEOUT, "'%s' was held by another session for %d ms", name,
                           wait_ms);
        struct timespec ts = {0, 50 * 1000000L};
        nanosleep(&ts, NULL);
    }
}

int store_ops_unlock(store *s, const char *name, err_t *e)
{
    return exec1(s, &st_unlock, name, e);
}

int store_job_outcomes(store *s, int limit, store_outcome_cb cb, void *arg, err_t *e)
{
    char lim[STORE_I64_LEN];
    store_i64_text(lim, limit > 0 ? limit : 1);
    const char *v[] = {lim};
    store_res *r = NULL;
    int rc = store_exec(s, &st_outcomes, 1, v, &r, e);
    for (int i = 0; rc == 0 && i < store_res_rows(r); i++)
        rc = cb(store_res_get(r, i, 0), store_res_get(r, i, 1), store_col_i64(r, i, 2), arg);
    store_res_free(r);
    return rc;
}

int store_job_running(store *s, store_count_cb cb, void *arg, err_t *e)
{
    store_res *r = NULL;
    int rc = store_exec(s, &st_running, 0, NULL, &r, e);
    for (int i = 0; rc == 0 && i < store_res_rows(r); i++)
        rc = cb(store_res_get(r, i, 0), store_col_i64(r, i, 1), arg);
    store_res_free(r);
    return rc;
}

static void run_row(const store_res *r, int i, store_run_progress *p);

int store_import_runs(store *s, int all, int limit, store_run_cb cb, void *arg, err_t *e)
{
    char lim[STORE_I64_LEN];
    store_i64_text(lim, limit > 0 ? limit : 1);
    const char *v[] = {all ? "true" : "false", lim};
    store_res *r = NULL;
    int rc = store_exec(s, &st_runs_all, 2, v, &r, e);
    for (int i = 0; rc == 0 && i < store_res_rows(r); i++) {
        store_run_progress p;
        run_row(r, i, &p);
        snprintf(p.state, sizeof p.state, "%s", store_res_get(r, i, 11));
        snprintf(p.error, sizeof p.error, "%s", store_res_get(r, i, 12));
        p.started = store_col_i64(r, i, 13);
        rc = cb(&p, arg);
    }
    store_res_free(r);
    return rc;
}

int store_import_cancel(store *s, const char *run_uuid, int *cancelled, int64_t *pages, err_t *e)
{
    *cancelled = 0;
    *pages = 0;
    const char *v[] = {run_uuid};
    store_res *r = NULL;
    int rc = store_begin(s, e);
    if (rc == 0)
        rc = store_exec(s, &st_cancel_pages, 1, v, &r, e);
    if (rc == 0)
        *pages = store_res_affected(r);
    store_res_free(r);
    r = NULL;
    if (rc == 0)
        rc = store_exec(s, &st_cancel_run, 1, v, &r, e);
    if (rc == 0)
        *cancelled = store_res_affected(r) > 0;
    store_res_free(r);
    if (rc == 0)
        rc = store_commit(s, e);
    else
        store_rollback(s);
    if (rc < 0)
        *cancelled = 0, *pages = 0;
    return rc;
}

static void run_row(const store_res *r, int i, store_run_progress *p)
{
    memset(p, 0, sizeof *p);
    snprintf(p->uuid, sizeof p->uuid, "%s", store_res_get(r, i, 0));
    snprintf(p->stage, sizeof p->stage, "%s", store_res_get(r, i, 1));
    p->dry_run = store_col_bool(r, i, 2);
    p->pages_total = (int)store_col_i64(r, i, 3);
    p->pages_done = (int)store_col_i64(r, i, 4);
    p->created = store_col_i64(r, i, 5);
    p->existing = store_col_i64(r, i, 6);
    p->unknown_user = store_col_i64(r, i, 7);
    p->errors = (int)store_col_i64(r, i, 8);
    p->elapsed_s = store_col_f64(r, i, 9);
    p->idle_s = store_col_f64(r, i, 10);
}

int store_import_running(store *s, store_run_cb cb, void *arg, err_t *e)
{
    store_res *r = NULL;
    int rc = store_exec(s, &st_runs, 0, NULL, &r, e);
    for (int i = 0; rc == 0 && i < store_res_rows(r); i++) {
        store_run_progress p;
        run_row(r, i, &p);
        rc = cb(&p, arg);
    }
    store_res_free(r);
    return rc;
}
