/* store_jobs.c - claim, finish and release job records (see store_jobs.h). */
#include "store_jobs.h"

#include <stdlib.h>
#include <string.h>

#include "store_int.h"

/* The claims of a batch in one statement: x(id, ord) the batch's ids in order; a job
 * already done has its lock released at once (its reply is all the claim needs): in a CASE,
 * which evaluates it only then (an AND goes on past a NULL: a job with no record lost its
 * lock so, as test_batch_claims found). */
static const store_stmt st_claims = {
    "job_claims",
    "WITH l AS MATERIALIZED (SELECT x.id, x.ord, pg_try_advisory_lock(hashtextextended(x.id, 7))"
    " AS got FROM unnest($1::text[]) WITH ORDINALITY AS x(id, ord))"
    " SELECT l.got, j.attempts, j.state, j.reply,"
    " CASE WHEN l.got AND j.state = 'done' THEN pg_advisory_unlock(hashtextextended(l.id, 7)) END"
    " FROM l LEFT JOIN job j ON j.job_id = l.id AND l.got ORDER BY l.ord"};
static const store_stmt st_unlock_all = {"job_unlock_all",
                                         "SELECT count(pg_advisory_unlock(hashtextextended(x, 7)))"
                                         " FROM unnest($1::text[]) x"};
static const store_stmt st_unlock = {"job_unlock",
                                     "SELECT pg_advisory_unlock(hashtextextended($1, 7))"};
/* Writes the record, done with its reply, and hands the claim's session lock to the
 * writing transaction (k: the same session may hold both), so the lock is released by its
 * COMMIT (or ROLLBACK): a twin that claims after that reads the committed record. A row
 * exists only for a job run before (a worker before 013 inserted one at its claim, an
 * operator rearmed it): it is updated, counting this attempt. Otherwise a plain insert, without ON
 * CONFLICT, whose speculative insertion costs another WAL record per row: a twin inserting the same
 * id (possible only after a lost lock) fails the transaction on the primary key, and the job's
 * retry then reads the record. k is u's one-time condition: an UPDATE always runs (it is a
 * data-modifying CTE), and its condition is evaluated before its scan, so the lock changes hands
 * whether or not a row was there (a condition of the INSERT would be skipped when the UPDATE found
 * the row; test_store_jobs checks both). */
static const store_stmt st_record = {
    "job_record",
    "WITH k AS MATERIALIZED (SELECT pg_advisory_xact_lock(hashtextextended($1, 7)) IS NULL AS x,"
    " pg_advisory_unlock(hashtextextended($1, 7)) AS y),"
    " u AS (UPDATE job SET state = 'done', reply = $4::bytea, error_code = $5,"
    " finished_at = now(), publisher = coalesce(publisher, $3), attempts = attempts + 1"
    " WHERE job_id = $1 AND (SELECT NOT x FROM k) RETURNING 1)"
    " INSERT INTO job (job_id, job_type, state, publisher, reply, error_code, finished_at)"
    " SELECT $1, $2, 'done', $3, $4::bytea, $5, now() WHERE NOT EXISTS (SELECT 1 FROM u)"};

/* Reads row i of a claim's answer into out. */
static int claim_row(store_res *r, int i, const char *job_id, job_claim *out, err_t *e)
{
    if (!store_col_bool(r, i, 0)) {
        out->state = JOB_CLAIM_BUSY;
        return 0;
    }
    if (store_res_isnull(r, i, 2)) { /* no record: never ended */
        out->state = JOB_CLAIM_NEW;
        out->attempts = 1;
        return 0;
    }
    const char *state = store_res_get(r, i, 2);
    if (strcmp(state, "running") == 0) { /* an old worker's claim, or rearmed */
        out->state = JOB_CLAIM_RERUN;
        out->attempts = (int)store_col_i64(r, i, 1) + 1;
        return 0;
    }
    if (strcmp(state, "done") != 0)
        return err_set(e, ERR_DB, "job %s: neither running nor done", job_id);
    out->state = JOB_CLAIM_DONE;
    if (!store_res_isnull(r, i, 3) && store_res_bytea(r, i, 3, &out->reply, &out->reply_len) < 0)
        return err_set(e, ERR_NOMEM, "job %s: unreadable stored reply", job_id);
    return 0;
}

int store_job_claim(store *s, const char *job_id, job_claim *out, err_t *e)
{
    return store_job_claims(s, &job_id, 1, out, e);
}

void store_job_claims_ahead(store *s, const char *const *ids, size_t n)
{
    char *arr = n ? store_text_array(ids, n) : NULL;
    const char *v[] = {arr};
    if (arr)
        store_send_ahead(s, &st_claims, 1, v);
    free(arr);
}

/* Releases every id's lock (one not held: a no-op). */
static void release_all(store *s, const char *arr)
{
    const char *v[] = {arr};
    if (store_ok(s))
        store_exec(s, &st_unlock_all, 1, v, NULL, NULL);
}

int store_job_claims(store *s, const char *const *ids, size_t n, job_claim *out, err_t *e)
{
    memset(out, 0, n * sizeof *out);
    if (!n)
        return 0;
    char *arr = store_text_array(ids, n);
    if (!arr)
        return err_set(e, ERR_NOMEM, "out of memory claiming %zu jobs", n);
    const char *v[] = {arr};
    /* Sent ahead and failed (or rolled back with its group): that run may have taken
     * locks, which a rollback does not release. Drop them before claiming again, so that
     * each lock is held once. */
    if (store_ahead_failed(s, &st_claims, 1, v))
        release_all(s, arr);
    store_res *r = NULL;
    int rc = store_exec(s, &st_claims, 1, v, &r, e);
    if (rc == 0 && store_res_rows(r) != (int)n)
        rc = err_set(e, ERR_DB, "claim of %zu jobs answered %d rows", n, store_res_rows(r));
    for (size_t i = 0; rc == 0 && i < n; i++)
        rc = claim_row(r, (int)i, ids[i], &out[i], e);
    store_res_free(r);
    if (rc < 0) {
        for (size_t i = 0; i < n; i++)
            job_claim_clear(&out[i]);
        release_all(s, arr); /* whatever the failed statement took */
    }
    free(arr);
    return rc;
}

int store_job_finish(store *s, const job_record_in *rec, err_t *e)
{
    const char *v[] = {rec->job_id, rec->job_type, rec->publisher, rec->reply, rec->error_code};
    int lengths[] = {0, 0, 0, (int)rec->reply_len, 0};
    int binary[] = {0, 0, 0, 1, 0};
    if (store_in_tx(s)) /* queued: its outcome is the COMMIT's */
        return store_send(s, &st_record, 5, v, lengths, binary, e);
    return store_exec_bin(s, &st_record, 5, v, lengths, binary, NULL, e);
}

int store_job_finish_later(store *s, const job_record_in *rec, void *tag, err_t *e)
{
    const char *v[] = {rec->job_id, rec->job_type, rec->publisher, rec->reply, rec->error_code};
    int lengths[] = {0, 0, 0, (int)rec->reply_len, 0};
    int binary[] = {0, 0, 0, 1, 0};
    int rc = store_send(s, &st_record, 5, v, lengths, binary, e);
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
