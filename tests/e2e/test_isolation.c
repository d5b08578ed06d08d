/* test_isolation.c - one stage's Duo trouble stays with that stage. Two stages on two Duo
 * hosts (the emulator as 127.0.0.1:<port> for B and as localhost:<port> for A, each
 * tenant its own emulator account). A's Duo hangs every call; meanwhile B's enrollments,
 * manual imports and logins all succeed, A's logins and enrollments are answered
 * duo_unavailable (at once, reason circuit_open, once A's breaker is open), A's
 * enroll.status and import.manual are deferred; then A's Duo recovers and A's jobs
 * succeed without operator action. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "clock.h"
#include "testlib.h"
#include "tl_stack.h"

/* Workers tuned so the incident plays out in seconds: short timeouts, a breaker that
 * opens after two failures (each worker has its own: the first wave gives each two), retry tiers of
 * about a second, and no giving up. */
static const char *const WORKER_ENV[] = {"DUO_QUICK_TIMEOUT_MS=1500",
                                         "DUO_BREAKER_FAILURES=2",
                                         "DUO_BREAKER_OPEN_MS=3000",
                                         "DUO_BREAKER_MAX_OPEN_MS=4000",
                                         "RETRY_DELAYS_MS=500,1000,2000",
                                         "JOB_MAX_ATTEMPTS=100",
                                         "STAGE_QUEUE_MS=500",
                                         NULL};

#define MAX_JOBS 64

static tl_stack S; /* stage B: S.stage_uuid on DUO_EMU_HOST */
static tl_tenant A;

/* A job sent and, once it came, its reply. */
typedef struct sent {
    char id[96];
    long long sent_ms, got_ms;
    json_t *reply;
} sent;

static sent jobs[MAX_JOBS];
static int njobs;

static sent *send_job(const char *type, json_t *body)
{
    assert_true(njobs < MAX_JOBS);
    sent *j = &jobs[njobs++];
    tl_job_id(&S, j->id, sizeof j->id);
    err_t e = {0};
    j->sent_ms = clock_ms();
    assert_int_equal(jobs_send(S.client, type, j->id, body, &e), 0);
    json_decref(body);
    return j;
}

/* Collects replies until every job in js has one or timeout_ms passed. */
static void collect(sent **js, int n, int timeout_ms)
{
    long long end = clock_ms() + timeout_ms;
    for (;;) {
        int missing = 0;
        for (int i = 0; i < n; i++)
            missing += js[i]->reply == NULL;
        long long left = end - clock_ms();
        if (!missing || left <= 0)
            return;
        json_t *r = NULL;
        char *corr = NULL;
        err_t e = {0};
        if (jobs_next(S.client, (int)left, &r, &corr, &e) != 1)
            continue;
        for (int i = 0; corr && i < njobs; i++)
            if (!jobs[i].reply && strcmp(jobs[i].id, corr) == 0) {
                jobs[i].reply = json_incref(r);
                jobs[i].got_ms = clock_ms();
            }
        json_decref(r);
        free(corr);
    }
}

static const char *code_of(const sent *j)
{
    return j->reply ? tl_code(j->reply) : "(no reply)";
}

static const char *reason_of(const sent *j)
{
    const char *r =
        json_string_value(json_object_get(json_object_get(j->reply, "error"), "reason"));
    return r ? r : "";
}

/* ---- set-up helpers ---------------------------------------------------------------- */

static void emu_user(const char *account, const char *username)
{
    char body[512];
    snprintf(body, sizeof body, "{\"account\":\"%s\",\"users\":[{\"username\":\"%s\"}]}", account,
             username);
    json_decref(tl_emu_json("/_emu/users", body));
}

/* A local user with a device on stage (imported by Duo username) in a healthy Duo. */
static void user_with_device(const char *account, const char *stage, const char *name)
{
    emu_user(account, name);
    assert_int_equal(tl_stack_user(&S, name), 0);
    sent *j = send_job("import.manual", json_pack("{s:s, s:s, s:s}", "stage_uuid", stage,
                                                  "duo_user_id", name, "username", name));
    collect(&j, 1, 20000);
    assert_string_equal(tl_str(j->reply, "status"), "ok");
}

static json_t *auth_body(const char *stage, const char *name)
{
    return json_pack("{s:s, s:s, s:s, s:s}", "stage_uuid", stage, "username", name, "factor",
                     "passcode", "passcode", "123456");
}

static json_t *enroll_body(const char *stage, const char *name)
{
    return json_pack("{s:s, s:s}", "stage_uuid", stage, "username", name);
}

static json_t *manual_body(const char *stage, const char *name)
{
    return json_pack("{s:s, s:s, s:s}", "stage_uuid", stage, "duo_user_id", name, "username", name);
}

static void incident(int on)
{
    char body[512];
    if (on)
        snprintf(body, sizeof body,
                 "{\"account\":\"%s\",\"path_prefix\":\"/\",\"latency_ms\":20000,"
                 "\"count\":1000000}",
                 A.account);
    else
        snprintf(body, sizeof body, "{\"account\":\"%s\",\"clear\":true}", A.account);
    json_decref(tl_emu_json("/_emu/faults", body));
}

static int setup(void **state)
{
    (void)state;
    if (tl_stack_init(&S, "isolation", 0) < 0)
        return -1;
    /* The same emulator under another name: another Duo host to the workers. */
    const char *colon = strrchr(tl_env("DUO_EMU_HOST"), ':');
    char host_a[64];
    snprintf(host_a, sizeof host_a, "localhost%s", colon ? colon : "");
    if (tl_stack_tenant(&S, "a", host_a, 0, &A) < 0)
        return -1;
    return tl_stack_workers(&S, WORKER_ENV);
}

static int teardown(void **state)
{
    (void)state;
    for (int i = 0; i < njobs; i++)
        json_decref(jobs[i].reply);
    tl_stack_fini(&S);
    return 0;
}

/* ---- the test ------------------------------------------------------------------------ */

/* Each job answered ok (the timing is the bench's: bench/run_isolation.sh). */
static void expect_ok(sent **js, int n, const char *what)
{
    for (int i = 0; i < n; i++) {
        if (!js[i]->reply || strcmp(tl_str(js[i]->reply, "status"), "ok") != 0)
            fail_msg("%s %s: %s", what, js[i]->id, code_of(js[i]));
        if (json_object_get(js[i]->reply, "result"))
            assert_string_equal(tl_str(js[i]->reply, "result"), "allow");
    }
}

static int breaker_rows(const char *host_like)
{
    char sql[256], out[32];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM duo_host_breaker WHERE host LIKE '%s'",
             host_like);
    assert_int_equal(tl_query1(S.db, sql, out, sizeof out), 0);
    return (int)strtol(out, NULL, 10);
}

static void test_one_stage_in_trouble_leaves_the_other_alone(void **state)
{
    (void)state;
    /* Healthy: devices on both stages, and a pending enrollment on A. */
    char name[32];
    for (int i = 0; i < 3; i++) {
        snprintf(name, sizeof name, "a%d", i);
        user_with_device(A.account, A.stage_uuid, name);
        snprintf(name, sizeof name, "b%d", i);
        user_with_device(S.account, S.stage_uuid, name);
    }
    static const char *const later[] = {"ea0", "ea1", "ea2", "eb0", "eb1",
                                        "eb2", "ma0", "ma1", "mb0", "mb1"};
    for (size_t i = 0; i < sizeof later / sizeof later[0]; i++) {
        assert_int_equal(tl_stack_user(&S, later[i]), 0);
        if (later[i][0] == 'm')
            emu_user(later[i][1] == 'a' ? A.account : S.account, later[i]);
    }
    sent *pend = send_job("enroll.begin", enroll_body(A.stage_uuid, "ea0"));
    collect(&pend, 1, 20000);
    assert_string_equal(tl_str(pend->reply, "status"), "ok");
    const char *enrollment = tl_str(pend->reply, "enrollment_id");

    /* A's Duo hangs. A's first wave runs into it; B's work goes on beside it. */
    incident(1);
    sent *a_first[3], *a_deferred[3], *b[8];
    a_first[0] = send_job("auth", auth_body(A.stage_uuid, "a0"));
    a_first[1] = send_job("auth", auth_body(A.stage_uuid, "a1"));
    a_first[2] = send_job("enroll.begin", enroll_body(A.stage_uuid, "ea1"));
    a_deferred[0] = send_job("import.manual", manual_body(A.stage_uuid, "ma0"));
    a_deferred[2] = send_job("import.manual", manual_body(A.stage_uuid, "ma1"));
    a_deferred[1] = send_job("enroll.status", json_pack("{s:s, s:s}", "stage_uuid", A.stage_uuid,
                                                        "enrollment_id", enrollment));
    for (int i = 0; i < 3; i++) {
        snprintf(name, sizeof name, "b%d", i);
        b[i] = send_job("auth", auth_body(S.stage_uuid, name));
    }
    b[3] = send_job("enroll.begin", enroll_body(S.stage_uuid, "eb0"));
    b[4] = send_job("enroll.begin", enroll_body(S.stage_uuid, "eb1"));
    b[5] = send_job("import.manual", manual_body(S.stage_uuid, "mb0"));
    b[6] = send_job("import.manual", manual_body(S.stage_uuid, "mb1"));
    b[7] = send_job("auth", auth_body(S.stage_uuid, "b0"));
    collect(b, 8, 15000);
    expect_ok(b, 8, "stage B during A's incident");

    /* A's first wave: each call timed out (DUO_QUICK_TIMEOUT_MS), and a login or an
     * enrollment that may have reached Duo is answered, not repeated. */
    collect(a_first, 3, 15000);
    for (int i = 0; i < 3; i++)
        assert_string_equal(code_of(a_first[i]), "duo_unavailable");
    assert_true(breaker_rows("localhost:%") >= 1);
    assert_int_equal(breaker_rows("127.0.0.1:%"), 0);
    /* The operator sees it. */
    static char out[65536];
    assert_int_equal(tl_stack_duoctl(&S, "status", out, sizeof out), 0);
    if (!strstr(out, "open circuit breaker") || !strstr(out, "localhost:"))
        fail_msg("duoctl status does not show A's breaker:\n%s", out);

    /* The breaker is open: A's logins and enrollments are answered at once, unsent. */
    sent *a_open[2];
    a_open[0] = send_job("auth", auth_body(A.stage_uuid, "a2"));
    a_open[1] = send_job("enroll.begin", enroll_body(A.stage_uuid, "ea2"));
    collect(a_open, 2, 10000);
    for (int i = 0; i < 2; i++) {
        assert_string_equal(code_of(a_open[i]), "duo_unavailable");
        assert_string_equal(reason_of(a_open[i]), "circuit_open");
        assert_true(json_integer_value(json_object_get(json_object_get(a_open[i]->reply, "error"),
                                                       "retry_after_secs")) >= 1);
    }
    /* A's status check and manual import are deferred, not answered. */
    for (int i = 0; i < 3; i++)
        assert_null(a_deferred[i]->reply);

    /* A's Duo recovers: the breaker's probe closes it and A's work succeeds again. */
    incident(0);
    collect(a_deferred, 3, 30000);
    for (int i = 0; i < 3; i++)
        if (!a_deferred[i]->reply || strcmp(tl_str(a_deferred[i]->reply, "status"), "ok") != 0)
            fail_msg("A's deferred job %s after recovery: %s", a_deferred[i]->id,
                     code_of(a_deferred[i]));
    assert_string_equal(tl_str(a_deferred[1]->reply, "enrollment_status"), "waiting");
    const char *result = "";
    for (int tries = 0; tries < 20 && strcmp(result, "allow") != 0; tries++) {
        sent *j = send_job("auth", auth_body(A.stage_uuid, "a0"));
        collect(&j, 1, 10000);
        result = j->reply ? tl_str(j->reply, "result") : "";
        if (strcmp(result, "allow") != 0)
            sleep(1);
    }
    assert_string_equal(result, "allow");
    /* The closed breaker took its row away. */
    for (int i = 0; i < 20 && breaker_rows("localhost:%") > 0; i++)
        usleep(200 * 1000);
    assert_int_equal(breaker_rows("localhost:%"), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_one_stage_in_trouble_leaves_the_other_alone),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
