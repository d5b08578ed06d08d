/* test_store_pipe.c - the store's pipeline engine (store_pipe.c) on its own, against a
 * real PostgreSQL, through its internal interface (store_priv.h): after every drain,
 * whatever happened, nothing is left listed, libpq has left pipeline mode, and the store
 * agrees with libpq about it; results libpq holds that the engine cannot match to its
 * commands make the connection given up (store_ok() 0), never silently kept; a drain
 * hands back only the last command's result; segments fail alone. The transaction and
 * statement behaviour built on it is test_store_pipeline.c's. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "store_priv.h"
#include "testlib.h"

static char db[512];
static store *s;

static const store_stmt st_one = {"p_one", "SELECT 1"};
static const store_stmt st_div = {"p_div", "SELECT 1 / $1::int"};

static int setup(void **state)
{
    (void)state;
    if (tl_create_db("pipe", db, sizeof db) < 0)
        return -1;
    err_t e = {0};
    s = store_open(db, &e);
    /* prepared once, outside pipeline mode, so that the tests queue only executions */
    return s && store_exec(s, &st_one, 0, NULL, NULL, &e) == 0 &&
                   store_exec(s, &st_div, 1, (const char *[]){"1"}, NULL, &e) == 0
               ? 0
               : -1;
}

static int teardown(void **state)
{
    (void)state;
    store_close(s);
    tl_drop_db(db);
    return 0;
}

/* The engine's invariant after a drain: nothing listed, out of pipeline mode in both
 * the store's and libpq's view. */
static void assert_left(void)
{
    assert_int_equal(s->nsent, 0);
    assert_int_equal(s->piped, 0);
    if (store_ok(s))
        assert_int_equal(PQpipelineStatus(s->pg), PQ_PIPELINE_OFF);
}

static void send_one(const store_stmt *st, int n, const char *const *v)
{
    err_t e = {0};
    assert_int_equal(pipe_enter(s, &e), 0);
    assert_int_equal(store_ensure_prepared(s, st, n, &e), 0); /* after a reconnect: again */
    assert_int_equal(PQsendQueryPrepared(s->pg, st->name, n, v, NULL, NULL, 0), 1);
    assert_int_equal(pipe_note(s, st->name, 0, &e), 0);
}

static void test_drain_keeps_only_the_last_result(void **state)
{
    (void)state;
    err_t e = {0};
    send_one(&st_one, 0, NULL);
    send_one(&st_div, 1, (const char *[]){"2"});
    PGresult *r = NULL;
    assert_int_equal(pipe_drain(s, &r, &e), 0);
    assert_non_null(r);
    assert_string_equal(PQgetvalue(r, 0, 0), "0"); /* 1 / 2, the last command's */
    PQclear(r);
    assert_left();
}

/* A command libpq sent that the engine does not list (as when recording it ran out of
 * memory after the send): the drain reads what it lists, and libpq is left holding
 * results. Before pipe_leave, PQexitPipelineMode's refusal was ignored: the store
 * believed it had left pipeline mode, store_ok() said 1, and the next synchronous
 * statement failed ("not allowed in pipeline mode") or read another's result. */
static void test_unlisted_results_give_the_connection_up(void **state)
{
    (void)state;
    err_t e = {0};
    send_one(&st_one, 0, NULL);
    assert_int_equal(PQsendQueryPrepared(s->pg, st_one.name, 0, NULL, NULL, NULL, 0), 1);
    assert_int_not_equal(pipe_drain(s, NULL, &e), 0); /* the unlisted one is a surprise */
    assert_left();
    assert_int_equal(store_ok(s), 0); /* given up, not kept in pipeline mode */
    assert_int_equal(store_reconnect(s, 5000, &e), 0);
    assert_int_equal(store_ok(s), 1);
    store_res *r = NULL;
    assert_int_equal(store_exec(s, &st_div, 1, (const char *[]){"1"}, &r, &e), 0);
    assert_string_equal(store_res_get(r, 0, 0), "1");
    store_res_free(r);
    assert_left();
}

/* Two segments, each a transaction ending with its own Sync (a deferred commit): the
 * first fails, the second commits; each outcome is recorded under its tag, and the
 * drain's own result is what follows the last Sync. */
static void test_segments_fail_alone(void **state)
{
    (void)state;
    err_t e = {0};
    int t1 = 1, t2 = 2;
    send_one(&st_div, 1, (const char *[]){"0"});
    assert_int_equal(PQpipelineSync(s->pg), 1);
    assert_int_equal(
        pipe_push(s, (sent_cmd){.what = "Sync", .sync = 1, .ahead = -1, .tag = &t1}, &e), 0);
    send_one(&st_one, 0, NULL);
    assert_int_equal(PQpipelineSync(s->pg), 1);
    assert_int_equal(
        pipe_push(s, (sent_cmd){.what = "Sync", .sync = 1, .ahead = -1, .tag = &t2}, &e), 0);
    assert_int_equal(pipe_drain(s, NULL, &e), 0);
    assert_left();
    void *tag = NULL;
    assert_int_equal(store_take_committed(s, &tag, &e), 1);
    assert_ptr_equal(tag, &t1);
    assert_int_equal(e.code, ERR_DB);
    assert_non_null(strstr(e.msg, "division by zero"));
    assert_int_equal(store_take_committed(s, &tag, &e), 1);
    assert_ptr_equal(tag, &t2);
    assert_int_equal(e.code, 0);
    assert_int_equal(store_take_committed(s, &tag, &e), 0);
    assert_int_equal(store_ok(s), 1);
}

/* Transactions ended with store_commit_later one after another are committed as one
 * group: marks, no Sync each, one Sync for all at the next round trip; a member that
 * fails makes the group's segment fail, and every member is then sent again alone, so
 * each commits or fails by itself. A transaction rolled back meanwhile sent nothing. */
static void test_group_commit(void **state)
{
    (void)state;
    err_t e = {0};
    static const store_stmt st_mk = {
        "p_mk", "CREATE TABLE IF NOT EXISTS g (k text PRIMARY KEY, v int NOT NULL)"};
    static const store_stmt st_put = {"p_put", "INSERT INTO g VALUES ($1, 1)"};
    assert_int_equal(store_exec(s, &st_mk, 0, NULL, NULL, &e), 0);
    int tags[6];
    const char *keys[] = {"g1", "g2", "g3", "g1", "g5", "g6"}; /* the 4th repeats g1 */
    for (int i = 0; i < 6; i++) {
        assert_int_equal(store_begin(s, &e), 0);
        assert_int_equal(store_send(s, &st_put, 1, &keys[i], NULL, NULL, &e), 0);
        if (i == 2) { /* rolled back: nothing of it was sent */
            store_rollback(s);
            continue;
        }
        assert_int_equal(store_commit_later(s, &tags[i], &e), 0);
    }
    int syncs = 0, marks = 0;
    for (int i = 0; i < s->nsent; i++) {
        syncs += s->sent[i].sync;
        marks += s->sent[i].mark;
    }
    assert_int_equal(syncs, 0);
    assert_int_equal(marks, 5);
    assert_int_equal(store_flush(s, &e), 0);
    assert_left();
    int failed = 0, ok = 0;
    void *tag = NULL;
    while (store_take_committed(s, &tag, &e))
        if (e.code) {
            failed++;
            assert_ptr_equal(tag, &tags[3]); /* the repeated key, alone */
            assert_int_equal(e.code, ERR_CONFLICT);
        } else
            ok++;
    assert_int_equal(failed, 1);
    assert_int_equal(ok, 4);
    char out[64];
    assert_int_equal(tl_query1(db, "SELECT string_agg(k, ',' ORDER BY k) FROM g", out, sizeof out),
                     0);
    assert_string_equal(out, "g1,g2,g5,g6");

    /* Without a failure: one segment, committed once for all. */
    const char *more[] = {"h1", "h2", "h3"};
    for (int i = 0; i < 3; i++) {
        assert_int_equal(store_send(s, &st_put, 1, &more[i], NULL, NULL, &e), 0);
        assert_int_equal(store_commit_later(s, &tags[i], &e), 0);
    }
    assert_int_equal(store_flush(s, &e), 0);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(store_take_committed(s, &tag, &e), 1);
        assert_int_equal(e.code, 0);
        assert_ptr_equal(tag, &tags[i]);
    }
    assert_int_equal(tl_query1(db, "SELECT count(*) FROM g WHERE k LIKE 'h%'", out, sizeof out), 0);
    assert_string_equal(out, "3");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_drain_keeps_only_the_last_result),
        cmocka_unit_test(test_unlisted_results_give_the_connection_up),
        cmocka_unit_test(test_segments_fail_alone),
        cmocka_unit_test(test_group_commit),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
