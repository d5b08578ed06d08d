/* test_operator.c - duoctl status and duoctl dead against a live stack: queue depths
 * and consumers with known queue contents; dead letters listed with their reason, shown
 * with secrets redacted, replayed after the cause is gone (by a replay killed with
 * SIGKILL twice on the way: nothing lost, nothing doubled), and purged. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "msg.h"
#include "testlib.h"
#include "tl_stack.h"

enum { NDEAD = 30 };

static tl_stack S;
static char dlx[128], jobs_ex[128];

static int setup(void **state)
{
    (void)state;
    setenv("JOB_MAX_ATTEMPTS", "2", 1);
    if (tl_stack_init(&S, "ops", 0) < 0)
        return -1;
    snprintf(dlx, sizeof dlx, "%s.dlx", S.prefix);
    snprintf(jobs_ex, sizeof jobs_ex, "%s.jobs", S.prefix);
    return tl_exec(S.db, "INSERT INTO app_user (username) SELECT 'ops' || g "
                         "FROM generate_series(1, 40) g");
}

static int teardown(void **state)
{
    (void)state;
    tl_stack_fini(&S);
    return 0;
}

static json_t *duoctl_json(const char *args)
{
    static char out[1 << 20];
    int rc = tl_stack_duoctl(&S, args, out, sizeof out);
    if (rc != 0)
        fail_msg("duoctl %s: exit %d: %s", args, rc, out);
    json_error_t je;
    json_t *j = json_loads(out, JSON_DISABLE_EOF_CHECK, &je);
    if (!j)
        fail_msg("duoctl %s: not JSON: %s", args, out);
    return j;
}

static json_int_t at(const json_t *st, const char *kind, const char *field)
{
    return json_integer_value(
        json_object_get(json_object_get(json_object_get(st, "queues"), kind), field));
}

static json_int_t dead_total(void)
{
    json_t *st = duoctl_json("status --json");
    json_int_t n = json_integer_value(json_object_get(json_object_get(st, "dead"), "ready"));
    json_decref(st);
    return n;
}

/* Publishes a raw job (body from JSON) to exchange ex with routing key rk. */
static void raw(const char *ex, const char *rk, const char *type, const char *id, json_t *body)
{
    void *buf = NULL;
    size_t len = 0;
    err_t e = {0};
    assert_int_equal(msg_encode(body, &buf, &len, &e), 0);
    json_decref(body);
    mq_msg m = {.exchange = ex,
                .routing_key = rk,
                .body = buf,
                .body_len = len,
                .message_id = id,
                .type = type,
                .content_type = "application/msgpack"};
    if (jobs_send_raw(S.client, &m, &e) < 0)
        fail_msg("publish: %s", e.msg);
    free(buf);
}

/* Waits (bounded) until status says `kind` has `want` ready messages. */
static json_t *status_when(const char *kind, json_int_t want)
{
    for (int i = 0; i < 100; i++) {
        json_t *st = duoctl_json("status --json");
        if (at(st, kind, "ready") == want)
            return st;
        json_decref(st);
        usleep(100000);
    }
    fail_msg("%s never reached %lld ready", kind, (long long)want);
    return NULL;
}

static void test_status_known_queues(void **state)
{
    (void)state;
    char id[64], enroll_ids[3][64];
    for (int i = 0; i < 3; i++) {
        tl_job_id(&S, enroll_ids[i], sizeof enroll_ids[i]);
        raw(jobs_ex, "enroll", "enroll.begin", enroll_ids[i],
            json_pack("{s:s, s:s}", "stage_uuid", S.stage_uuid, "username", "ops1"));
    }
    for (int i = 0; i < 2; i++) {
        tl_job_id(&S, id, sizeof id);
        raw(jobs_ex, "auth", "auth", id, json_pack("{s:s}", "device_id", S.stage_uuid));
    }
    raw(dlx, "import", "import.manual", "dead-import-1", json_pack("{s:s}", "x", "y"));
    json_t *st = status_when("enroll", 3);
    assert_int_equal(at(st, "enroll", "consumers"), 0);
    assert_int_equal(at(st, "auth", "ready"), 2);
    assert_int_equal(at(st, "import", "ready"), 0);
    assert_int_equal(at(st, "import", "dead"), 1);
    assert_int_equal(at(st, "enroll", "dead"), 0);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(st, "dead"), "ready")), 1);
    assert_non_null(
        json_object_get(json_object_get(json_object_get(st, "queues"), "auth"), "retry"));
    json_decref(st);
    /* A worker attaches and drains its queue; the outcomes show up by code. */
    static char port_env[32];
    snprintf(port_env, sizeof port_env, "METRICS_PORT=%d", tl_free_port());
    static const char *env[] = {port_env, NULL};
    assert_true(tl_stack_worker(&S, "enroll", env) > 0);
    st = status_when("enroll", 0);
    for (int i = 0; i < 100 && at(st, "enroll", "consumers") != 1; i++) {
        json_decref(st);
        usleep(100000);
        st = duoctl_json("status --json");
    }
    assert_int_equal(at(st, "enroll", "consumers"), 1);
    assert_int_equal(at(st, "auth", "ready"), 2);
    json_decref(st);
    for (int i = 0; i < 3; i++) {
        json_t *r = NULL;
        err_t e = {0};
        assert_int_equal(jobs_wait(S.client, enroll_ids[i], 60000, &r, NULL, &e), 1);
        json_decref(r);
    }
    char text[8192];
    /* --watch refreshes: two snapshots, one JSON object each. */
    assert_int_equal(tl_stack_duoctl(&S, "status --json --watch 1 --count 2", text, sizeof text),
                     0);
    char *second = strchr(text, '\n');
    assert_non_null(second);
    json_t *w2 = json_loads(second + 1, JSON_DISABLE_EOF_CHECK, NULL);
    assert_non_null(w2);
    assert_int_equal(at(w2, "auth", "ready"), 2);
    json_decref(w2);
    assert_int_equal(tl_stack_duoctl(&S, "status", text, sizeof text), 0);
    assert_non_null(strstr(text, "enroll.begin"));
    assert_non_null(strstr(text, "dead letters in"));
    /* The known dead letter: purge needs --yes off a terminal, then removes it. */
    assert_int_not_equal(
        tl_stack_duoctl(&S, "dead purge --type import.manual < /dev/null", text, sizeof text), 0);
    assert_int_equal(dead_total(), 1);
    json_t *p = duoctl_json("dead purge --type import.manual --yes");
    assert_int_equal(json_integer_value(json_object_get(p, "purged")), 1);
    json_decref(p);
    assert_int_equal(dead_total(), 0);
}

static void fault_bad_signature(int count)
{
    char body[1024];
    snprintf(body, sizeof body,
             "{\"account\":\"%s\",\"path_prefix\":\"/auth/v2/enroll\",\"status\":401,"
             "\"count\":%d,\"body\":\"{\\\"stat\\\":\\\"FAIL\\\",\\\"code\\\":40103,"
             "\\\"message\\\":\\\"Invalid signature in request credentials\\\"}\"}",
             S.account, count);
    assert_int_equal(tl_emu("POST", "/_emu/faults", body, NULL, 0), 200);
}

static void drain_replies(char ids[][64], int n, const char *want_code)
{
    for (int i = 0; i < n; i++) {
        json_t *r = NULL;
        err_t e = {0};
        if (jobs_wait(S.client, ids[i], 60000, &r, NULL, &e) != 1)
            fail_msg("no reply for %s", ids[i]);
        if (want_code)
            assert_string_equal(tl_code(r), want_code);
        else if (strcmp(tl_str(r, "status"), "ok") != 0)
            fail_msg("job %s: %s", ids[i], tl_code(r));
        json_decref(r);
    }
}

static int replay_killed(const char *point)
{
    setenv("DUO_FAULT_POINT", point, 1);
    int rc = tl_stack_duoctl(&S, "dead replay --reason duo_bad_signature", NULL, 0);
    unsetenv("DUO_FAULT_POINT");
    return rc;
}

static void test_dead_list_show_replay(void **state)
{
    (void)state;
    static char ids[NDEAD][64];
    fault_bad_signature(NDEAD);
    for (int i = 0; i < NDEAD; i++) {
        char user[16];
        snprintf(user, sizeof user, "ops%d", i + 11);
        tl_job_id(&S, ids[i], sizeof ids[i]);
        json_t *body = json_pack("{s:s, s:s}", "stage_uuid", S.stage_uuid, "username", user);
        assert_int_equal(jobs_send(S.client, "enroll.begin", ids[i], body, NULL), 0);
        json_decref(body);
    }
    drain_replies(ids, NDEAD, "duo_bad_signature");
    static char bad[1][64];
    tl_job_id(&S, bad[0], sizeof bad[0]);
    raw(jobs_ex, "enroll", "enroll.begin", bad[0], json_pack("{s:s}", "stage_uuid", S.stage_uuid));
    drain_replies(bad, 1, "schema_invalid");
    raw(dlx, "auth", "auth", "dead-auth-secret",
        json_pack("{s:s, s:s, s:s, s:s}", "stage_uuid", S.stage_uuid, "username", "ops1", "factor",
                  "passcode", "passcode", "918273"));
    for (int i = 0; i < 100 && dead_total() != NDEAD + 2; i++)
        usleep(100000);
    assert_int_equal(dead_total(), NDEAD + 2);

    json_t *l = duoctl_json("dead list --json --reason duo_bad_signature --type enroll.begin");
    assert_int_equal(json_array_size(l), NDEAD);
    json_t *x = json_array_get(l, 0);
    assert_string_equal(json_string_value(json_object_get(x, "stage")), S.stage_uuid);
    assert_int_equal(json_integer_value(json_object_get(x, "attempts")), 1);
    assert_int_equal(json_integer_value(json_object_get(x, "deaths")), 1);
    assert_true(json_integer_value(json_object_get(x, "time")) > time(NULL) - 600);
    json_decref(l);
    l = duoctl_json("dead list --json --reason schema_invalid");
    assert_int_equal(json_array_size(l), 1);
    assert_string_equal(json_string_value(json_object_get(json_array_get(l, 0), "job_id")), bad[0]);
    json_decref(l);
    l = duoctl_json("dead list --json --since 1h --type auth");
    assert_int_equal(json_array_size(l), 0); /* published straight to the DLX: no x-death */
    json_decref(l);

    char args[256], out[16384];
    snprintf(args, sizeof args, "dead show %s", ids[0]);
    json_t *sh = duoctl_json(args);
    assert_string_equal(json_string_value(json_object_get(json_object_get(sh, "body"), "username")),
                        "ops11");
    json_t *rec = json_object_get(sh, "record");
    assert_string_equal(json_string_value(json_object_get(json_object_get(rec, "error"), "code")),
                        "duo_bad_signature");
    json_decref(sh);
    assert_int_equal(tl_stack_duoctl(&S, "dead show dead-auth-secret", out, sizeof out), 0);
    assert_null(strstr(out, "918273"));
    assert_non_null(strstr(out, "[redacted]"));

    /* The cause is gone (the fault is used up): replay, killed twice half-way. */
    assert_int_not_equal(replay_killed("replay_kill_after:10"), 0);
    assert_int_not_equal(replay_killed("replay_kill_between:7"), 0);
    json_t *r = duoctl_json("dead replay --reason duo_bad_signature");
    assert_true(json_integer_value(json_object_get(r, "replayed")) >= NDEAD - 16);
    json_decref(r);
    drain_replies(ids, NDEAD, NULL);
    /* Nothing doubled: no second reply for any job within a few seconds, each job ran
     * once more (one claim), and only the two other dead letters are left. */
    json_t *extra = NULL;
    char *corr = NULL;
    err_t e = {0};
    int more = jobs_next(S.client, 3000, &extra, &corr, &e);
    if (more == 1)
        fail_msg("unexpected extra reply for %s", corr);
    char sql[4096], n[32];
    size_t off = (size_t)snprintf(sql, sizeof sql,
                                  "SELECT count(*) FROM job WHERE state = 'done' AND error_code "
                                  "IS NULL AND attempts = 1 AND job_id IN ('%s'",
                                  ids[0]);
    for (int i = 1; i < NDEAD; i++)
        off += (size_t)snprintf(sql + off, sizeof sql - off, ",'%s'", ids[i]);
    snprintf(sql + off, sizeof sql - off, ")");
    assert_int_equal(tl_query1(S.db, sql, n, sizeof n), 0);
    assert_int_equal(strtol(n, NULL, 10), NDEAD);
    assert_int_equal(dead_total(), 2);
}

/* Publishes a copy of job `id` (enroll.begin for `user`) straight into P.dead. */
static void dead_copy(const char *id, const char *user)
{
    raw(dlx, "enroll", "enroll.begin", id,
        json_pack("{s:s, s:s}", "stage_uuid", S.stage_uuid, "username", user));
}

/* Two dead copies of one job in one replay: one goes back, the other is dropped; a
 * stale copy of a job that succeeded since is listed as such and never re-run. */
static void test_replay_twins(void **state)
{
    (void)state;
    json_int_t before = dead_total();
    static char id[1][64];
    tl_job_id(&S, id[0], sizeof id[0]);
    fault_bad_signature(1);
    json_t *body = json_pack("{s:s, s:s}", "stage_uuid", S.stage_uuid, "username", "ops2");
    assert_int_equal(jobs_send(S.client, "enroll.begin", id[0], body, NULL), 0);
    json_decref(body);
    drain_replies(id, 1, "duo_bad_signature");
    dead_copy(id[0], "ops2");
    for (int i = 0; i < 100 && dead_total() != before + 2; i++)
        usleep(100000);
    assert_int_equal(dead_total(), before + 2);
    char args[256];
    snprintf(args, sizeof args, "dead replay --id %s", id[0]);
    json_t *r = duoctl_json(args);
    assert_int_equal(json_integer_value(json_object_get(r, "replayed")), 1);
    assert_int_equal(json_integer_value(json_object_get(r, "duplicates_dropped")), 1);
    json_decref(r);
    drain_replies(id, 1, NULL);
    json_t *extra = NULL;
    char *corr = NULL;
    err_t e = {0};
    if (jobs_next(S.client, 2000, &extra, &corr, &e) == 1)
        fail_msg("unexpected extra reply for %s", corr);
    assert_int_equal(dead_total(), before);
    dead_copy(id[0], "ops2"); /* stale: the job has succeeded */
    for (int i = 0; i < 100 && dead_total() != before + 1; i++)
        usleep(100000);
    snprintf(args, sizeof args, "dead list --json --id %s", id[0]);
    json_t *l = duoctl_json(args);
    assert_int_equal(json_array_size(l), 1);
    assert_string_equal(json_string_value(json_object_get(json_array_get(l, 0), "reason")),
                        "already_done");
    json_decref(l);
    snprintf(args, sizeof args, "dead replay --all --id %s", id[0]);
    r = duoctl_json(args);
    assert_int_equal(json_integer_value(json_object_get(r, "replayed")), 0);
    assert_int_equal(json_integer_value(json_object_get(r, "skipped")), 1);
    json_decref(r);
    assert_int_equal(dead_total(), before + 1);
    snprintf(args, sizeof args, "dead purge --yes --reason already_done");
    r = duoctl_json(args);
    assert_int_equal(json_integer_value(json_object_get(r, "purged")), 1);
    json_decref(r);
    assert_int_equal(dead_total(), before);
}

/* The value of the first /metrics line starting with `series ` on port, or -1. */
static double metric(int port, const char *series)
{
    char cmd[256], line[1024];
    snprintf(cmd, sizeof cmd, "curl -fsS http://127.0.0.1:%d/metrics", port);
    FILE *p = popen(cmd, "r");
    double v = -1;
    size_t n = strlen(series);
    while (p && fgets(line, sizeof line, p))
        if (v < 0 && strncmp(line, series, n) == 0 && line[n] == ' ')
            v = strtod(line + n + 1, NULL);
    if (p)
        pclose(p);
    return v;
}

/* The metrics the dashboard needs: held pushes, import pages and run progress. */
static void test_dashboard_metrics(void **state)
{
    (void)state;
    int iport = tl_free_port(), aport = tl_free_port();
    static char ip[32], ap[32];
    snprintf(ip, sizeof ip, "METRICS_PORT=%d", iport);
    snprintf(ap, sizeof ap, "METRICS_PORT=%d", aport);
    static const char *ienv[] = {ip, NULL};
    static const char *aenv[] = {ap, NULL};
    assert_true(tl_stack_worker(&S, "import", ienv) > 0);
    assert_true(tl_stack_worker(&S, "auth", aenv) > 0);
    char id[64];
    tl_job_id(&S, id, sizeof id);
    json_t *body = json_pack("{s:s, s:i}", "stage_uuid", S.stage_uuid, "page_size", 7);
    assert_int_equal(jobs_send(S.client, "import.auto", id, body, NULL), 0);
    json_decref(body);
    json_t *r = NULL;
    for (int i = 0; i < 100; i++) {
        err_t e = {0};
        assert_int_equal(jobs_wait(S.client, id, 120000, &r, NULL, &e), 1);
        if (!json_is_true(json_object_get(r, "progress")))
            break;
        json_decref(r);
        r = NULL;
    }
    assert_string_equal(tl_str(r, "state"), "done");
    json_int_t pages =
        json_integer_value(json_object_get(json_object_get(r, "counts"), "pages_total"));
    json_decref(r);
    assert_true(pages >= 2);
    assert_int_equal((long long)metric(iport, "duo_import_pages_total{}"), pages);
    assert_int_equal((long long)metric(iport, "duo_import_run_pages{state=\"done\"}"), pages);
    assert_int_equal((long long)metric(iport, "duo_import_run_pages{state=\"total\"}"), pages);
    double held = -1;
    for (int i = 0; i < 100 && held < 0; i++) {
        held = metric(aport, "duo_pushes_held{}");
        if (held < 0)
            usleep(100000);
    }
    assert_true(held == 0.0);
    json_t *st = duoctl_json("status --json");
    assert_int_equal(json_array_size(json_object_get(st, "imports")), 0);
    assert_int_equal(at(st, "import", "consumers"), 1);
    json_decref(st);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_status_known_queues),
        cmocka_unit_test(test_dead_list_show_replay),
        cmocka_unit_test(test_replay_twins),
        cmocka_unit_test(test_dashboard_metrics),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
