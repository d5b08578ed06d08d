/* test_import_cancel.c - `duoctl import runs` and `duoctl import cancel`: a run stranded
 * by a dead worker (nobody will finish it) is listed as running, is cancelled, and the
 * stage can start its next run; a run cancelled while a worker is still paging it (a
 * page in flight at Duo) changes nothing afterwards: no page applied after the cancel,
 * no device made, the run stays failed. */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "testlib.h"
#include "tl_dead.h"
#include "tl_stack.h"

enum { NUSERS = 2000 };

static tl_stack S;

static int setup(void **state)
{
    (void)state;
    if (tl_stack_init(&S, "icn", 0) < 0)
        return -1;
    char body[256];
    snprintf(body, sizeof body,
             "{\"account\":\"%s\",\"generate\":{\"count\":%d,\"prefix\":\"ic\",\"start\":0}}",
             S.account, NUSERS);
    if (tl_emu("POST", "/_emu/users", body, NULL, 0) != 200)
        return -1;
    snprintf(body, sizeof body,
             "INSERT INTO app_user (username) SELECT 'ic' || lpad(g::text, 7, '0') "
             "FROM generate_series(0, %d) g",
             NUSERS - 1);
    return tl_exec(S.db, body);
}

static int teardown(void **state)
{
    (void)state;
    tl_stack_fini(&S);
    return 0;
}

static long long count(const char *sql)
{
    char out[64];
    assert_int_equal(tl_query1(S.db, sql, out, sizeof out), 0);
    return strtoll(out, NULL, 10);
}

static pid_t start_worker(void)
{
    static char port_env[32];
    snprintf(port_env, sizeof port_env, "METRICS_PORT=%d", tl_free_port());
    static const char *env[] = {port_env, NULL};
    pid_t pid = tl_stack_worker(&S, "import", env);
    assert_true(pid > 0);
    return pid;
}

/* Sends import.auto (slowly paced: 50 users a page, 40 pages a minute); its first reply
 * says the run started. */
static void start_run(void)
{
    char id[64];
    tl_job_id(&S, id, sizeof id);
    json_t *r = tl_job(&S, "import.auto", id,
                       json_pack("{s:s, s:i, s:i}", "stage_uuid", S.stage_uuid, "page_size", 50,
                                 "pages_per_min", 40),
                       30000);
    assert_non_null(r);
    if (strcmp(tl_str(r, "status"), "ok") != 0)
        fail_msg("import.auto answered %s", tl_code(r));
    json_decref(r);
}

/* The running run of the stack's stage, once it has done `pages` pages: its id in out. */
static void running_run(int pages, char *out, size_t n)
{
    for (int i = 0; i < 300; i++) {
        json_t *runs = tl_duoctl_json(&S, "import runs --json");
        assert_non_null(runs);
        json_t *r = json_array_get(runs, 0);
        int ok = r && json_array_size(runs) == 1 &&
                 strcmp(json_string_value(json_object_get(r, "state")), "running") == 0 &&
                 json_integer_value(json_object_get(r, "pages_done")) >= pages;
        if (ok)
            snprintf(out, n, "%s", json_string_value(json_object_get(r, "run_id")));
        json_decref(runs);
        if (ok)
            return;
        usleep(200000);
    }
    fail_msg("no running run with %d pages done", pages);
}

static json_t *run_by_id(const char *id)
{
    json_t *runs = tl_duoctl_json(&S, "import runs --all --json");
    assert_non_null(runs);
    size_t i;
    json_t *r;
    json_array_foreach(runs, i, r)
    {
        if (strcmp(json_string_value(json_object_get(r, "run_id")), id) == 0) {
            json_incref(r);
            json_decref(runs);
            return r;
        }
    }
    json_decref(runs);
    fail_msg("run %s not listed", id);
    return NULL;
}

static void cancel(const char *run)
{
    char args[128];
    snprintf(args, sizeof args, "import cancel %s", run);
    json_t *c = tl_duoctl_json(&S, args);
    assert_non_null(c);
    assert_true(json_is_true(json_object_get(c, "cancelled")));
    assert_true(json_integer_value(json_object_get(c, "pages_cancelled")) > 0);
    json_decref(c);
    /* a second cancel finds nothing running */
    assert_int_not_equal(tl_stack_duoctl(&S, args, NULL, 0), 0);
}

static void assert_cancelled(const char *run)
{
    json_t *r = run_by_id(run);
    assert_string_equal(json_string_value(json_object_get(r, "state")), "failed");
    assert_string_equal(json_string_value(json_object_get(r, "error")), "cancelled by an operator");
    json_decref(r);
}

/* The worker dies mid-run: the run is stranded (listed running, idle), and a cancel ends
 * it so the stage's next run can start. */
static void test_cancel_stranded_run(void **state)
{
    (void)state;
    pid_t w = start_worker();
    start_run();
    char run[64];
    running_run(2, run, sizeof run);
    tl_stack_signal(&S, w, SIGKILL);
    sleep(2);
    json_t *r = run_by_id(run);
    assert_string_equal(json_string_value(json_object_get(r, "state")), "running");
    assert_true(json_integer_value(json_object_get(r, "pages_done")) <
                json_integer_value(json_object_get(r, "pages_total")));
    json_decref(r);
    cancel(run);
    assert_cancelled(run);
    /* the stage is free: a new run starts (and is ended below) */
    start_worker();
    start_run();
    char next[64];
    running_run(0, next, sizeof next);
    assert_string_not_equal(next, run);
}

/* A page in flight at Duo when the cancel lands: its apply finds the page no longer
 * pending, so nothing changes after the cancel returned. */
static void test_cancel_while_paging(void **state)
{
    (void)state;
    char run[64], body[256];
    running_run(1, run, sizeof run);
    snprintf(body, sizeof body,
             "{\"account\":\"%s\",\"path_prefix\":\"/admin/v1/users\",\"latency_ms\":1500,"
             "\"count\":1000}",
             S.account);
    assert_int_equal(tl_emu("POST", "/_emu/faults", body, NULL, 0), 200);
    sleep(2); /* a page now waits on Duo's slow answer */
    cancel(run);
    long long devices = count("SELECT count(*) FROM duo_device");
    sleep(5); /* the page in flight comes back and is applied, or not */
    char sql[512];
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM import_page p JOIN import_run r ON r.id = p.run_id "
             "WHERE r.uuid = '%s' AND p.state = 'done' AND p.done_at > r.finished_at",
             run);
    assert_int_equal(count(sql), 0);
    assert_int_equal(count("SELECT count(*) FROM duo_device"), devices);
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM import_page p JOIN import_run r ON r.id = p.run_id "
             "WHERE r.uuid = '%s' AND p.state = 'pending'",
             run);
    assert_int_equal(count(sql), 0);
    assert_cancelled(run);
    json_t *runs = tl_duoctl_json(&S, "import runs --json");
    assert_int_equal(json_array_size(runs), 0);
    json_decref(runs);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cancel_stranded_run),
        cmocka_unit_test(test_cancel_while_paging),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
