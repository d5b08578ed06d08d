/* test_store_pipeline.c - statements queued in libpq pipeline mode (store_begin,
 * store_send) on a real PostgreSQL: a transaction's statements and its COMMIT travel
 * together and commit together; the first failure of what was queued is reported by
 * the COMMIT (or the next synchronous statement), the transaction is rolled back, and
 * the connection is usable afterwards. Transactions ended with store_commit_later are
 * independent of each other and of the statement that reads them. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "store.h"
#include "testlib.h"

static char db[512];
static store *s;

static const store_stmt st_create = {
    "t_create", "CREATE TABLE IF NOT EXISTS pipe_t (k text PRIMARY KEY, v int NOT NULL)"};
static const store_stmt st_put = {"t_put", "INSERT INTO pipe_t (k, v) VALUES ($1, $2::int)"};
static const store_stmt st_bump = {"t_bump", "UPDATE pipe_t SET v = v + 1 WHERE k = $1"};
static const store_stmt st_get = {"t_get", "SELECT v FROM pipe_t WHERE k = $1"};

static int setup(void **state)
{
    (void)state;
    if (tl_create_db("pipeline", db, sizeof db) < 0)
        return -1;
    err_t e = {0};
    s = store_open(db, &e);
    return s && store_exec(s, &st_create, 0, NULL, NULL, &e) == 0 ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    store_close(s);
    tl_drop_db(db);
    return 0;
}

static void put(const char *k, const char *v)
{
    err_t e = {0};
    const char *p[] = {k, v};
    assert_int_equal(store_send(s, &st_put, 2, p, NULL, NULL, &e), 0);
}

/* -1 when k has no row. */
static long value_of(const char *k)
{
    err_t e = {0};
    store_res *r = NULL;
    const char *p[] = {k};
    assert_int_equal(store_exec(s, &st_get, 1, p, &r, &e), 0);
    int64_t v = -1;
    if (store_res_rows(r) == 1)
        store_res_i64(r, 0, 0, &v);
    store_res_free(r);
    return (long)v;
}

static void test_queued_transaction_commits_together(void **state)
{
    (void)state;
    err_t e = {0};
    assert_int_equal(store_begin(s, &e), 0);
    put("a", "1");
    put("b", "2");
    const char *pa[] = {"a"};
    assert_int_equal(store_send(s, &st_bump, 1, pa, NULL, NULL, &e), 0);
    assert_int_equal(store_commit(s, &e), 0);
    assert_int_equal(value_of("a"), 2);
    assert_int_equal(value_of("b"), 2);
}

static void test_failure_rolls_back_everything(void **state)
{
    (void)state;
    err_t e = {0};
    assert_int_equal(store_begin(s, &e), 0);
    put("c", "1");
    put("a", "9"); /* "a" exists: unique violation */
    put("d", "1"); /* skipped: the pipeline is aborted */
    int rc = store_commit(s, &e);
    assert_int_equal(rc, ERR_CONFLICT);
    assert_non_null(strstr(e.msg, "t_put"));
    assert_int_equal(store_in_tx(s), 0);
    /* Nothing of the transaction stayed, and the connection is usable at once. */
    assert_int_equal(value_of("c"), -1);
    assert_int_equal(value_of("d"), -1);
    assert_int_equal(value_of("a"), 2);
    assert_int_equal(store_ok(s), 1);
}

/* A statement that raises (as job_finish does for a missing record) stops the COMMIT. */
static const store_stmt st_must = {"t_must",
                                   "SELECT CASE WHEN count(*) = 1 THEN 1 ELSE (SELECT 1 / 0) END "
                                   "FROM pipe_t WHERE k = $1"};

static void test_raising_statement_stops_commit(void **state)
{
    (void)state;
    err_t e = {0};
    assert_int_equal(store_begin(s, &e), 0);
    put("e", "1");
    const char *none[] = {"no-such-key"};
    assert_int_equal(store_send(s, &st_must, 1, none, NULL, NULL, &e), 0);
    assert_int_equal(store_commit(s, &e), ERR_DB);
    assert_non_null(strstr(e.msg, "t_must"));
    assert_int_equal(value_of("e"), -1); /* rolled back */
}

static void test_sync_statement_reads_what_was_queued(void **state)
{
    (void)state;
    err_t e = {0};
    assert_int_equal(store_begin(s, &e), 0);
    put("f", "5");
    /* The queued BEGIN and insert travel with this statement, whose result comes back. */
    assert_int_equal(value_of("f"), 5);
    assert_int_equal(store_in_tx(s), 1);
    store_rollback(s);
    assert_int_equal(value_of("f"), -1);

    /* A queued failure is reported by the next synchronous statement. */
    assert_int_equal(store_begin(s, &e), 0);
    put("a", "1");
    const char *pa[] = {"a"};
    store_res *r = NULL;
    assert_int_equal(store_exec(s, &st_get, 1, pa, &r, &e), ERR_CONFLICT);
    assert_null(r);
    store_rollback(s);
    assert_int_equal(value_of("a"), 2);
}

static void test_flush_outside_a_transaction(void **state)
{
    (void)state;
    err_t e = {0};
    put("g", "1");
    put("h", "1");
    assert_int_equal(store_flush(s, &e), 0);
    assert_int_equal(store_flush(s, &e), 0); /* nothing queued: no effect */
    assert_int_equal(value_of("g"), 1);
    assert_int_equal(value_of("h"), 1);
}

static const store_stmt st_div = {"t_div", "SELECT 10 / $1::int"};

static void test_sent_ahead_served_once_and_isolated(void **state)
{
    (void)state;
    err_t e = {0};
    const char *pk[] = {"p"};
    put("p", "1");
    assert_int_equal(store_flush(s, &e), 0);
    assert_int_equal(value_of("p"), 1); /* prepares t_get: only prepared reads go ahead */

    assert_int_equal(store_send_ahead(s, &st_get, 1, pk), 1);
    const char *pa[] = {"a"};
    store_res *r = NULL;
    /* The read-ahead travels with this statement ... */
    assert_int_equal(store_exec(s, &st_get, 1, pa, &r, &e), 0);
    store_res_free(r);
    /* ... so a change made after it is not in its answer, which is served once. */
    assert_int_equal(tl_exec(db, "UPDATE pipe_t SET v = 7 WHERE k = 'p'"), 0);
    assert_int_equal(value_of("p"), 1);
    assert_int_equal(value_of("p"), 7);

    /* A read-ahead that fails is forgotten; the statement it travelled with, aborted
     * with it, is run again on its own. */
    const char *one[] = {"1"}, *zero[] = {"0"};
    r = NULL;
    assert_int_equal(store_exec(s, &st_div, 1, one, &r, &e), 0);
    store_res_free(r);
    assert_int_equal(store_send_ahead(s, &st_div, 1, zero), 1);
    assert_int_equal(value_of("a"), 2);
    r = NULL;
    assert_int_equal(store_exec(s, &st_div, 1, zero, &r, &e), ERR_DB); /* runs it itself */
    assert_non_null(strstr(e.msg, "division by zero"));

    /* Never inside a transaction, which a failed read would abort. */
    assert_int_equal(store_begin(s, &e), 0);
    assert_int_equal(store_send_ahead(s, &st_get, 1, pk), 0);
    store_rollback(s);

    /* Answers never asked for are dropped. */
    assert_int_equal(store_send_ahead(s, &st_get, 1, pk), 1);
    assert_int_equal(value_of("a"), 2);
    store_ahead_clear(s);
    assert_int_equal(tl_exec(db, "UPDATE pipe_t SET v = 8 WHERE k = 'p'"), 0);
    assert_int_equal(value_of("p"), 8);
}

/* The next deferred outcome: its tag, and its error code (0: committed). */
static int take(void **tag)
{
    err_t e = {0};
    *tag = NULL;
    assert_int_equal(store_take_committed(s, tag, &e), 1);
    return e.code;
}

static void test_deferred_commits_are_independent(void **state)
{
    (void)state;
    err_t e = {0};
    int t1, t2, t3, t4;
    void *tag = NULL;
    /* An explicit transaction, a failing one, a lone statement, and one after them. */
    assert_int_equal(store_begin(s, &e), 0);
    put("q1", "1");
    const char *pa[] = {"a"};
    assert_int_equal(store_send(s, &st_bump, 1, pa, NULL, NULL, &e), 0);
    assert_int_equal(store_commit_later(s, &t1, &e), 0);
    assert_int_equal(store_in_tx(s), 0);
    assert_int_equal(store_begin(s, &e), 0);
    put("q2", "1");
    put("a", "1"); /* unique violation: this transaction only */
    assert_int_equal(store_commit_later(s, &t2, &e), 0);
    put("q3", "1"); /* outside a transaction: one of its own */
    assert_int_equal(store_commit_later(s, &t3, &e), 0);
    assert_int_equal(store_begin(s, &e), 0);
    put("q4", "1");
    assert_int_equal(store_commit_later(s, &t4, &e), 0);
    /* Nothing read yet; a synchronous statement reads all of it and is not affected by
     * the failure before it. */
    assert_int_equal(store_take_committed(s, &tag, &e), 0);
    assert_int_equal(value_of("q1"), 1);
    assert_int_equal(take(&tag), 0);
    assert_ptr_equal(tag, &t1);
    assert_int_equal(take(&tag), ERR_CONFLICT);
    assert_ptr_equal(tag, &t2);
    assert_int_equal(take(&tag), 0);
    assert_ptr_equal(tag, &t3);
    assert_int_equal(take(&tag), 0);
    assert_ptr_equal(tag, &t4);
    assert_int_equal(store_take_committed(s, &tag, &e), 0);
    assert_int_equal(value_of("a"), 3); /* bumped by the first */
    assert_int_equal(value_of("q2"), -1);
    assert_int_equal(value_of("q3"), 1);
    assert_int_equal(value_of("q4"), 1);
    assert_int_equal(store_ok(s), 1);
    assert_int_equal(tl_exec(db, "UPDATE pipe_t SET v = 2 WHERE k = 'a'"), 0);

    /* store_flush reads them too; a failure in the last one leaves the connection ready. */
    assert_int_equal(store_begin(s, &e), 0);
    put("a", "1");
    assert_int_equal(store_commit_later(s, &t1, &e), 0);
    assert_int_equal(store_flush(s, &e), 0);
    assert_int_equal(take(&tag), ERR_CONFLICT);
    assert_int_equal(store_in_tx(s), 0);
    assert_int_equal(value_of("a"), 2);
}

/* BEGIN goes out only when a statement inside needs its answer; before that the queued
 * statements are the pipeline's implicit transaction, which a rollback aborts whole and
 * which a later BEGIN turns into the explicit one. */
static void test_begin_sent_only_when_needed(void **state)
{
    (void)state;
    err_t e = {0};
    int t1, t2;
    void *tag = NULL;
    assert_int_equal(store_begin(s, &e), 0);
    put("s1", "1");
    put("s2", "1");
    store_rollback(s);
    assert_int_equal(store_in_tx(s), 0);
    assert_int_equal(value_of("s1"), -1);
    assert_int_equal(value_of("s2"), -1);

    /* An explicit transaction (a read inside sent BEGIN) that fails when deferred, then
     * an implicit one: the second is not caught in the first one's aborted block. */
    assert_int_equal(store_begin(s, &e), 0);
    put("s3", "1");
    assert_int_equal(value_of("s3"), 1); /* BEGIN now: s3 is in the explicit transaction */
    put("a", "1");                       /* unique violation */
    assert_int_equal(store_commit_later(s, &t1, &e), 0);
    assert_int_equal(store_begin(s, &e), 0);
    put("s4", "1");
    assert_int_equal(store_commit_later(s, &t2, &e), 0);
    assert_int_equal(store_flush(s, &e), 0);
    assert_int_equal(take(&tag), ERR_CONFLICT);
    assert_ptr_equal(tag, &t1);
    assert_int_equal(take(&tag), 0);
    assert_ptr_equal(tag, &t2);
    assert_int_equal(value_of("s3"), -1);
    assert_int_equal(value_of("s4"), 1);

    /* store_flush inside a transaction reads what was queued but does not end it. */
    assert_int_equal(store_begin(s, &e), 0);
    put("s5", "1");
    assert_int_equal(store_flush(s, &e), 0);
    assert_int_equal(store_in_tx(s), 1);
    store_rollback(s);
    assert_int_equal(value_of("s5"), -1);
}

/* A statement sent alone commits by itself with the next round trip; its failure is
 * nobody's (logged), not the next statement's. */
static void test_send_alone(void **state)
{
    (void)state;
    err_t e = {0};
    const char *p1[] = {"u1", "1"}, *dup[] = {"a", "1"};
    assert_int_equal(store_send_alone(s, &st_put, 2, p1, &e), 0);
    assert_int_equal(store_send_alone(s, &st_put, 2, dup, &e), 0); /* unique violation */
    assert_int_equal(value_of("u1"), 1); /* this round trip read both; it is not failed */
    assert_int_equal(value_of("a"), 2);
    /* Inside a transaction it runs at once, as part of it. */
    const char *p2[] = {"u2", "1"};
    assert_int_equal(store_begin(s, &e), 0);
    assert_int_equal(store_send_alone(s, &st_put, 2, p2, &e), 0);
    store_rollback(s);
    assert_int_equal(value_of("u2"), -1);
}

static void test_deferred_commit_lost_with_the_connection(void **state)
{
    (void)state;
    err_t e = {0};
    int t1;
    void *tag = NULL;
    store_res *r = NULL;
    static const store_stmt st_pid = {"t_pid", "SELECT pg_backend_pid()"};
    assert_int_equal(store_exec(s, &st_pid, 0, NULL, &r, &e), 0);
    char sql[256];
    snprintf(sql, sizeof sql, "SELECT pg_terminate_backend(%s)", store_res_get(r, 0, 0));
    store_res_free(r);
    /* The server ended the session: a deferred commit is reported failed, never as
     * committed (or refused at once, when the send already fails). */
    assert_int_equal(tl_exec(db, sql), 0);
    assert_int_equal(store_begin(s, &e), 0);
    put("r2", "1");
    /* Either refused at once, or queued and then reported failed: never committed. */
    int reported = store_commit_later(s, &t1, &e) != 0;
    if (!reported) {
        store_flush(s, &e);
        reported = take(&tag) != 0;
        assert_ptr_equal(tag, &t1);
    }
    assert_true(reported);
    assert_int_equal(store_take_committed(s, &tag, &e), 0);
    assert_int_equal(store_ok(s), 0);
    assert_int_equal(store_reconnect(s, 5000, &e), 0);
    assert_int_equal(value_of("r2"), -1);
}

/* What is sent ahead between two Syncs is one transaction: a write whose group failed
 * was rolled back, so its answer is not served and it runs again alone; a group ended
 * with store_ahead_end is not touched by the next one's failure. */
static void test_sent_ahead_writes_roll_back_with_their_group(void **state)
{
    (void)state;
    err_t e = {0};
    const char *w1[] = {"w1", "1"}, *w2[] = {"w2", "1"}, *zero[] = {"0"};
    store_res *r = NULL;
    assert_int_equal(store_exec(s, &st_put, 2, (const char *[]){"w0", "1"}, NULL, &e), 0);
    assert_int_equal(store_exec(s, &st_div, 1, (const char *[]){"1"}, &r, &e), 0);
    store_res_free(r);
    assert_int_equal(store_send_ahead(s, &st_put, 2, w1), 1);
    assert_int_equal(store_send_ahead(s, &st_div, 1, zero), 1); /* fails: w1 rolled back */
    assert_int_equal(store_flush(s, &e), 0);
    assert_int_equal(value_of("w1"), -1);
    assert_int_equal(store_ahead_failed(s, &st_put, 2, w1), 1);
    r = NULL;
    assert_int_equal(store_exec(s, &st_put, 2, w1, &r, &e), 0); /* runs alone, once */
    assert_int_equal(store_res_affected(r), 1);
    store_res_free(r);
    assert_int_equal(value_of("w1"), 1);
    store_ahead_clear(s);

    assert_int_equal(store_send_ahead(s, &st_put, 2, w2), 1);
    store_ahead_end(s);
    assert_int_equal(store_send_ahead(s, &st_div, 1, zero), 1);
    assert_int_equal(store_flush(s, &e), 0);
    assert_int_equal(store_ahead_failed(s, &st_put, 2, w2), 0);
    r = NULL;
    assert_int_equal(store_exec(s, &st_put, 2, w2, &r, &e), 0); /* served: not run again */
    assert_int_equal(store_res_affected(r), 1);
    store_res_free(r);
    assert_int_equal(value_of("w2"), 1);
    store_ahead_clear(s);

    /* Answers of a lost session are never served after reconnecting. */
    const char *w3[] = {"w3", "1"};
    assert_int_equal(store_send_ahead(s, &st_put, 2, w3), 1);
    assert_int_equal(store_flush(s, &e), 0);
    assert_int_equal(tl_exec(db, "DELETE FROM pipe_t WHERE k = 'w3'"), 0);
    assert_int_equal(store_reconnect(s, 5000, &e), 0);
    assert_int_equal(store_exec(s, &st_put, 2, w3, NULL, &e), 0); /* runs: not served */
    assert_int_equal(value_of("w3"), 1);
}

/* A read ahead asked for before anything read it is its own round trip, never run twice
 * (a claim sent ahead must not count two attempts). */
static void test_sent_ahead_asked_before_read(void **state)
{
    (void)state;
    err_t e = {0};
    const char *pa[] = {"a"}, *pp[] = {"p"};
    store_res *r = NULL;
    assert_int_equal(store_exec(s, &st_bump, 1, pa, NULL, &e), 0); /* prepares it */
    long a = value_of("a");
    assert_int_equal(store_send_ahead(s, &st_bump, 1, pa), 1);
    assert_int_equal(store_send_ahead(s, &st_get, 1, pp), 1);
    assert_int_equal(store_exec(s, &st_bump, 1, pa, &r, &e), 0); /* served, not re-run */
    assert_int_equal(store_res_affected(r), 1);
    store_res_free(r);
    store_ahead_clear(s);
    assert_int_equal(value_of("a"), a + 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_queued_transaction_commits_together),
        cmocka_unit_test(test_failure_rolls_back_everything),
        cmocka_unit_test(test_raising_statement_stops_commit),
        cmocka_unit_test(test_sync_statement_reads_what_was_queued),
        cmocka_unit_test(test_flush_outside_a_transaction),
        cmocka_unit_test(test_sent_ahead_served_once_and_isolated),
        cmocka_unit_test(test_deferred_commits_are_independent),
        cmocka_unit_test(test_begin_sent_only_when_needed),
        cmocka_unit_test(test_send_alone),
        cmocka_unit_test(test_deferred_commit_lost_with_the_connection),
        cmocka_unit_test(test_sent_ahead_asked_before_read),
        cmocka_unit_test(test_sent_ahead_writes_roll_back_with_their_group),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
