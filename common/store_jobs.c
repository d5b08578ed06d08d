/* store_jobs.c - claim, finish and release job records (see store_jobs.h). */
#include "store_jobs.h"

#include <stdlib.h>
#include <string.h>

static const store_stmt st_trylock = {
    "job_trylock", "SELECT pg_try_advisory_lock(hashtextextended($1, 7))"};
static const store_stmt st_unlock = {
    "job_unlock", "SELECT pg_advisory_unlock(hashtextextended($1, 7))"};
static const store_stmt st_insert = {
    "job_insert",
    "INSERT INTO job (job_id, job_type, state) VALUES ($1, $2, 'running') "
    "ON CONFLICT (job_id) DO UPDATE SET attempts = job.attempts + 1 "
    "WHERE job.state = 'running' "
    "RETURNING attempts"};
static const store_stmt st_get = {
    "job_get", "SELECT state, reply, attempts FROM job WHERE job_id = $1"};
static const store_stmt st_finish = {
    "job_finish",
    "UPDATE job SET state = 'done', reply = $2, error_code = $3, finished_at = now() "
    "WHERE job_id = $1"};

static int try_lock(store *s, const char *job_id, int *locked, err_t *e)
{
    store_res *r = NULL;
    const char *v[] = {job_id};
    int rc = store_exec(s, &st_trylock, 1, v, &r, e);
    if (rc == 0)
        *locked = strcmp(store_res_get(r, 0, 0), "t") == 0;
    store_res_free(r);
    return rc;
}

static int read_done(store *s, const char *job_id, job_claim *out, err_t *e)
{
    store_res *r = NULL;
    const char *v[] = {job_id};
    int rc = store_exec(s, &st_get, 1, v, &r, e);
    if (rc < 0)
        return rc;
    if (store_res_rows(r) != 1 || strcmp(store_res_get(r, 0, 0), "done") != 0) {
        store_res_free(r);
        return err_set(e, ERR_DB, "job %s vanished while claiming it", job_id);
    }
    out->state = JOB_CLAIM_DONE;
    if (!store_res_isnull(r, 0, 1))
        rc = store_res_bytea(r, 0, 1, &out->reply, &out->reply_len);
    store_res_free(r);
    return rc < 0 ? err_set(e, rc, "job %s: unreadable stored reply", job_id) : 0;
}

int store_job_claim(store *s, const char *job_id, const char *job_type, job_claim *out,
                    err_t *e)
{
    memset(out, 0, sizeof *out);
    int locked = 0;
    int rc = try_lock(s, job_id, &locked, e);
    if (rc < 0)
        return rc;
    if (!locked) {
        out->state = JOB_CLAIM_BUSY;
        return 0;
    }
    store_res *r = NULL;
    const char *v[] = {job_id, job_type};
    rc = store_exec(s, &st_insert, 2, v, &r, e);
    if (rc == 0 && store_res_rows(r) == 1) {
        int64_t attempts = 1;
        store_res_i64(r, 0, 0, &attempts);
        out->attempts = (int)attempts;
        out->state = attempts > 1 ? JOB_CLAIM_RERUN : JOB_CLAIM_NEW;
    } else if (rc == 0) {
        rc = read_done(s, job_id, out, e); /* the upsert skipped a 'done' row */
    }
    store_res_free(r);
    if (rc < 0 || out->state == JOB_CLAIM_DONE)
        store_job_release(s, job_id);
    return rc;
}

int store_job_finish(store *s, const char *job_id, const void *reply, size_t len,
                     const char *error_code, err_t *e)
{
    const char *v[] = {job_id, reply, error_code};
    int lengths[] = {0, (int)len, 0};
    int binary[] = {0, 1, 0};
    store_res *r = NULL;
    int rc = store_exec_bin(s, &st_finish, 3, v, lengths, binary, &r, e);
    if (rc == 0 && store_res_affected(r) != 1)
        rc = err_set(e, ERR_DB, "job %s: no record to finish", job_id);
    store_res_free(r);
    return rc;
}

void store_job_release(store *s, const char *job_id)
{
    const char *v[] = {job_id};
    if (store_ok(s))
        store_exec(s, &st_unlock, 1, v, NULL, NULL);
}

void job_claim_clear(job_claim *c)
{
    if (!c)
        return;
    free(c->reply);
    memset(c, 0, sizeof *c);
}
