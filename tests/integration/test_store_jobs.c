/* test_store_jobs.c - job claims and records on a real PostgreSQL, with two sessions
 * standing for two workers: a claim writes nothing; a twin's claim is refused while the
 * job runs and while its record's transaction is open, and reads the committed record
 * after; a job that ended without a record (its worker died, or it was released) runs
 * again; a record's failed transaction leaves nothing and the job can be claimed. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "store.h"
#include "store_jobs.h"
#include "store_ops.h"
#include "testlib.h"

static char db[512];
static store *a, *b; /* two workers' connections */

static int setup(void **state)
{
    (void)state;
    a = tl_migrated_store("jobs", db, sizeof db);
    err_t e = {0};
    b = a ? store_open(db, &e) : NULL;
    return a && b ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    store_close(a);
    store_close(b);
    tl_drop_db(db);
    return 0;
}

static job_claim_state claim(store *s, const char *id)
{
    err_t e = {0};
    job_claim c;
    assert_int_equal(store_job_claim(s, id, &c, &e), 0);
    job_claim_state st = c.state;
    job_claim_clear(&c);
    return st;
}

static long count(const char *sql)
{
    char out[32];
    assert_int_equal(tl_query1(db, sql, out, sizeof out), 0);
    return strtol(out, NULL, 10);
}

static void test_claim_writes_nothing_and_keeps_twins_apart(void **state)
{
    (void)state;
    err_t e = {0};
    assert_int_equal(claim(a, "j1"), JOB_CLAIM_NEW);
    assert_int_equal(count("SELECT count(*) FROM job"), 0);
    assert_int_equal(claim(b, "j1"), JOB_CLAIM_BUSY); /* running on a */

    /* a records it inside a transaction: until the COMMIT the twin is still refused
     * (the lock passed to the transaction), although a no longer holds the claim. */
    job_record_in rec = {"j1", "auth", "duo-upstream", "\x81\xa1x", 3, NULL};
    assert_int_equal(store_begin(a, &e), 0);
    assert_int_equal(store_job_finish(a, &rec, &e), 0);
    assert_int_equal(store_flush(a, &e), 0); /* sent and run, not committed */
    assert_int_equal(claim(b, "j1"), JOB_CLAIM_BUSY);
    assert_int_equal(store_commit(a, &e), 0);

    /* Committed: the twin reads the record and its reply, and takes no lock. */
    job_claim c;
    assert_int_equal(store_job_claim(b, "j1", &c, &e), 0);
    assert_int_equal(c.state, JOB_CLAIM_DONE);
    assert_int_equal(c.reply_len, 3);
    assert_memory_equal(c.reply, "\x81\xa1x", 3);
    job_claim_clear(&c);
    assert_int_equal(claim(a, "j1"), JOB_CLAIM_DONE);
    assert_int_equal(count("SELECT count(*) FROM job WHERE job_id = 'j1' AND state = 'done' "
                           "AND attempts = 1 AND publisher = 'duo-upstream'"),
                     1);
}

static void test_released_or_failed_job_runs_again(void **state)
{
    (void)state;
    err_t e = {0};
    /* Released (a retry): no record, the next claim anywhere is new. */
    assert_int_equal(claim(a, "j2"), JOB_CLAIM_NEW);
    store_job_release(a, "j2");
    assert_int_equal(claim(b, "j2"), JOB_CLAIM_NEW);
    store_job_release(b, "j2");

    /* The record's transaction fails (a statement with it fails): nothing is written and
     * the lock is gone with the transaction, so the job can be claimed again. */
    static const store_stmt st_fail = {"t_fail", "SELECT 1 / 0"};
    job_record_in rec = {"j2", "auth", NULL, "\x80", 1, NULL};
    assert_int_equal(claim(a, "j2"), JOB_CLAIM_NEW);
    assert_int_equal(store_begin(a, &e), 0);
    assert_int_equal(store_job_finish(a, &rec, &e), 0);
    assert_int_equal(store_send(a, &st_fail, 0, NULL, NULL, NULL, &e), 0);
    assert_int_not_equal(store_commit(a, &e), 0);
    assert_true(store_ok(a));
    assert_int_equal(count("SELECT count(*) FROM job WHERE job_id = 'j2'"), 0);
    assert_int_equal(claim(b, "j2"), JOB_CLAIM_NEW);
    store_job_release(b, "j2");

    /* A worker whose session ends mid-job (dies) leaves no record and no lock. */
    assert_int_equal(claim(a, "j3"), JOB_CLAIM_NEW);
    assert_int_equal(claim(b, "j3"), JOB_CLAIM_BUSY);
    store_close(a);
    a = store_open(db, &e);
    assert_non_null(a);
    assert_int_equal(claim(b, "j3"), JOB_CLAIM_NEW);
    store_job_release(b, "j3");
}

static void test_running_row_is_an_earlier_attempt(void **state)
{
    (void)state;
    err_t e = {0};
    /* A 'running' row (an older worker's claim, or an operator's rearm) is run again and
     * its record updated in place, counting the attempt it made. */
    assert_int_equal(tl_exec(db, "INSERT INTO job (job_id, job_type, state, attempts) "
                                 "VALUES ('j4', 'enroll.begin', 'running', 2)"),
                     0);
    job_claim c;
    assert_int_equal(store_job_claim(a, "j4", &c, &e), 0);
    assert_int_equal(c.state, JOB_CLAIM_RERUN);
    assert_int_equal(c.attempts, 3);
    job_claim_clear(&c);
    job_record_in rec = {"j4", "enroll.begin", "p", "\x80", 1, "bad_request"};
    assert_int_equal(store_job_finish(a, &rec, &e), 0);
    assert_int_equal(count("SELECT count(*) FROM job WHERE job_id = 'j4' AND state = 'done' "
                           "AND error_code = 'bad_request' AND attempts = 3"),
                     1);
    assert_int_equal(claim(b, "j4"), JOB_CLAIM_DONE);
}

/* A batch's claims in one statement: each id answered in order, a done one with its
 * reply and no lock left, a busy one refused; a failed batch leaves no lock held. */
static void test_batch_claims(void **state)
{
    (void)state;
    err_t e = {0};
    assert_int_equal(tl_exec(db, "INSERT INTO job (job_id, job_type, state, reply) VALUES "
                                 "('b-done', 'auth', 'done', '\\x8101'), "
                                 "('b-run', 'auth', 'running', NULL)"),
                     0);
    assert_int_equal(claim(b, "b-busy"), JOB_CLAIM_NEW); /* held by the other worker */
    const char *ids[] = {"b-new", "b-done", "b-busy", "b-run"};
    job_claim c[4];
    assert_int_equal(store_job_claims(a, ids, 4, c, &e), 0);
    assert_int_equal(c[0].state, JOB_CLAIM_NEW);
    assert_int_equal(c[1].state, JOB_CLAIM_DONE);
    assert_int_equal(c[1].reply_len, 2);
    assert_int_equal(c[2].state, JOB_CLAIM_BUSY);
    assert_int_equal(c[3].state, JOB_CLAIM_RERUN);
    for (int i = 0; i < 4; i++)
        job_claim_clear(&c[i]);
    /* a holds b-new and b-run, not b-done (released by the statement) */
    assert_int_equal(claim(b, "b-done"), JOB_CLAIM_DONE);
    assert_int_equal(claim(b, "b-new"), JOB_CLAIM_BUSY);
    assert_int_equal(claim(b, "b-run"), JOB_CLAIM_BUSY);
    store_job_release(a, "b-new");
    store_job_release(a, "b-run");
    store_job_release(b, "b-busy");
    assert_int_equal(
        count("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND database = "
              "(SELECT oid FROM pg_database WHERE datname = current_database())"),
        0);

    /* Sent ahead with a read that fails: the group is forgotten, the claims run again
     * alone, and each lock is held once (one release frees it). */
    static const store_stmt st_fail = {"t_fail_ahead", "SELECT 1 / $1::int"};
    const char *zero[] = {"0"};
    const char *one[] = {"1"};
    assert_int_equal(store_exec(a, &st_fail, 1, one, NULL, &e), 0); /* prepared */
    assert_int_equal(store_send_ahead(a, &st_fail, 1, zero), 1);
    store_job_claims_ahead(a, ids, 1);
    assert_int_equal(store_job_claims(a, ids, 1, c, &e), 0);
    assert_int_equal(c[0].state, JOB_CLAIM_NEW);
    store_ahead_clear(a);
    store_job_release(a, "b-new");
    assert_int_equal(
        count("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND database = "
              "(SELECT oid FROM pg_database WHERE datname = current_database())"),
        0);
}

static int count_claims(const char *program, int64_t n, void *arg)
{
    if (strcmp(program, "duo-auth") == 0)
        *(int64_t *)arg += n;
    return 0;
}

/* What duoctl status shows as claimed: the claims' locks held by a worker's sessions,
 * named by its program (the store's fallback_application_name; here set in the URL). */
static void test_claimed_jobs_are_counted(void **state)
{
    (void)state;
    err_t e = {0};
    char url[600];
    snprintf(url, sizeof url, "%s?application_name=duo-auth", db);
    store *w = store_open(url, &e);
    assert_non_null(w);
    assert_int_equal(claim(w, "c1"), JOB_CLAIM_NEW);
    assert_int_equal(claim(w, "c2"), JOB_CLAIM_NEW);
    assert_int_equal(claim(a, "c3"), JOB_CLAIM_NEW); /* not a worker's program */
    int64_t n = 0;
    assert_int_equal(store_job_running(a, count_claims, &n, &e), 0);
    assert_int_equal(n, 2);
    store_job_release(w, "c1");
    n = 0;
    assert_int_equal(store_job_running(a, count_claims, &n, &e), 0);
    assert_int_equal(n, 1);
    store_close(w);
    store_job_release(a, "c3");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_claim_writes_nothing_and_keeps_twins_apart),
        cmocka_unit_test(test_released_or_failed_job_runs_again),
        cmocka_unit_test(test_running_row_is_an_earlier_attempt),
        cmocka_unit_test(test_batch_claims),
        cmocka_unit_test(test_claimed_jobs_are_counted),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
