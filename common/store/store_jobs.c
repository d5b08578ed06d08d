/* store_jobs.c - claim, finish and release job records (see store_jobs.h). */
#include "store_jobs.h"

#include <stdlib.h>
#include <string.h>

#include "store_int.h"

/* One round trip: take the job's advisory lock and, holding it, insert the job or count
 * another attempt of a crashed one. The joined row is read from the snapshot before the
 * insert, so a finished job shows as 'done' with its reply. */
static const store_stmt st_claim = {
    "job_claim",
    "WITH l AS MATERIALIZED (SELECT pg_try_advisory_lock(hashtextextended($1, 7)) AS got), "
    "ins AS (INSERT INTO job (job_id, job_type, state, publisher) SELECT $1, $2, 'running', $3 "
    "FROM l "
    "WHERE l.got ON CONFLICT (job_id) DO UPDATE SET attempts = job.attempts + 1 "
    "WHERE job.state = 'running' RETURNING attempts) "
    "SELECT l.got, (SELECT attempts FROM ins), j.state, j.reply "
    "FROM l LEFT JOIN job j ON j.job_id = $1 AND l.got"};
static const store_stmt st_unlock = {"job_unlock",
                                     "SELECT pg_advisory_unlock(hashtextextended($1, 7))"};
/* Finishing also drops the claim's lock. That is safe before COMMIT: a twin that takes
 * the lock then blocks on this row in its INSERT ... ON CONFLICT until we commit, and
 * then sees 'done'. job_finish (migration 010) raises when there is no record, so a
 * finish queued in a transaction fails that transaction instead of committing without
 * it. */
static const store_stmt st_finish = {"job_finish", "SELECT job_finish($1, $2::bytea, $3)"};

static int claim_result(store_res *r, const char *job_id, job_claim *out, err_t *e)
{
    if (store_res_rows(r) != 1)
        return err_set(e, ERR_DB, "job %s: claim answered no row", job_id);
    if (!store_col_bool(r, 0, 0)) {
        out->state = JOB_CLAIM_BUSY;
        return 0;
    }
    int64_t attempts = 0;
    if (store_res_i64(r, 0, 1, &attempts) == 0) {
        out->attempts = (int)attempts;
        out->state = attempts > 1 ? JOB_CLAIM_RERUN : JOB_CLAIM_NEW;
        return 0;
    }
    if (strcmp(store_res_get(r, 0, 2), "done") != 0)
        return err_set(e, ERR_DB, "job %s: neither new, running nor done", job_id);
    out->state = JOB_CLAIM_DONE;
    if (!store_res_isnull(r, 0, 3) && store_res_bytea(r, 0, 3, &out->reply, &out->reply_len) < 0)
        return err_set(e, ERR_NOMEM, "job %s: unreadable stored reply", job_id);
    return 0;
}

void store_job_claim_ahead(store *s, const char *job_id, const char *job_type,
                           const char *publisher)
{
    const char *v[] = {job_id, job_type, publisher};
    store_prefetch(s, &st_claim, 3, v);
}

int store_job_claim(store *s, const char *job_id, const char *job_type, const char *publisher,
                    job_claim *out, err_t *e)
{
    memset(out, 0, sizeof *out);
    store_res *r = NULL;
    const char *v[] = {job_id, job_type, publisher};
    /* Sent ahead and failed (or rolled back with its group): that run may have taken the
     * job's lock, which a rollback does not release. Drop it before claiming again, so
     * that the lock is held once (unlocking one not held is a no-op). */
    if (store_prefetch_failed(s, &st_claim, 3, v))
        store_job_release(s, job_id);
    int rc = store_exec(s, &st_claim, 3, v, &r, e);
    if (rc == 0)
        rc = claim_result(r, job_id, out, e);
    store_res_free(r);
    if ((rc < 0 && store_ok(s)) || out->state == JOB_CLAIM_DONE)
        store_job_release(s, job_id);
    return rc;
}

int store_job_finish(store *s, const char *job_id, const void *reply, size_t len,
                     const char *error_code, err_t *e)
{
    const char *v[] = {job_id, reply, error_code};
    int lengths[] = {0, (int)len, 0};
    int binary[] = {0, 1, 0};
    if (store_in_tx(s)) /* queued: its outcome is the COMMIT's */
        return store_send(s, &st_finish, 3, v, lengths, binary, e);
    return store_exec_bin(s, &st_finish, 3, v, lengths, binary, NULL, e);
}

int store_job_finish_later(store *s, const char *job_id, const void *reply, size_t len,
                           const char *error_code, void *tag, err_t *e)
{
    const char *v[] = {job_id, reply, error_code};
    int lengths[] = {0, (int)len, 0};
    int binary[] = {0, 1, 0};
    int rc = store_send(s, &st_finish, 3, v, lengths, binary, e);
    if (rc == 0)
        rc = store_commit_later(s, tag, e);
    else
        store_rollback(s);
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
