/* test_real_duo.c - what real Duo says that a simple emulator never did, end to end:
 * every auth status Duo sends and its documented outcome; at most one push per auth job
 * under a 5xx after the push, a connection dropped after the push, a 429 before it and a
 * worker killed while waiting (the emulator's push log is the judge); automatic imports
 * paged by next_offset through short pages, and users removed and added mid-run
 * imported exactly as schemas/README.md "What an automatic import guarantees" says; an
 * unknown user that preauth allows by policy is not imported. */
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
#include "tl_stack.h"

static tl_stack S;
static pid_t auth_pid;
static const char *auth_env[] = {"AUTH_DEADLINE_SECS=20", "PUSH_CAP=50", "DENY_COOLDOWN_SECS=60",
                                 NULL};

static int setup(void **state)
{
    (void)state;
    if (tl_stack_init(&S, "realduo", 0) < 0)
        return -1;
    static const char *import_env[] = {"IMPORT_PAGES_PER_MIN=3000", NULL};
    auth_pid = tl_stack_worker(&S, "auth", auth_env);
    return auth_pid > 0 && tl_stack_worker(&S, "import", import_env) > 0 ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    tl_stack_fini(&S);
    return 0;
}

/* ---- helpers ---------------------------------------------------------------------- */

static void emu_post(const char *path, const char *fmt, ...)
{
    char body[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(body, sizeof body, fmt, ap);
    va_end(ap);
    char out[1024];
    int st = tl_emu("POST", path, body, out, sizeof out);
    if (st != 200)
        fail_msg("%s %s: HTTP %d %s", path, body, st, out);
}

/* A Duo user, a local user and its device (by Duo user id). */
static void user_with_device(const char *name)
{
    char body[256], sql[1024], dev[64];
    snprintf(body, sizeof body, "{\"account\":\"%s\",\"users\":[{\"username\":\"%s\"}]}", S.account,
             name);
    json_t *j = tl_emu_json("/_emu/users", body);
    json_t *users = json_object_get(j, "users");
    if (!users) /* the control API's envelope */
        users = json_object_get(json_object_get(j, "response"), "users");
    const char *duo_id = json_string_value(json_object_get(json_array_get(users, 0), "user_id"));
    assert_non_null(duo_id);
    assert_int_equal(tl_stack_user(&S, name), 0);
    snprintf(sql, sizeof sql,
             "INSERT INTO duo_device (user_id, stage_id, duo_user_id, duo_user_kind, name) "
             "SELECT u.id, st.id, '%s', 'user_id', 'phone' FROM app_user u, duo_stage st "
             "WHERE u.username = '%s' AND st.uuid = '%s' RETURNING uuid",
             duo_id, name, S.stage_uuid);
    assert_int_equal(tl_query1(S.db, sql, dev, sizeof dev), 0);
    json_decref(j);
}

static void behave(const char *user, const char *push, int delay_ms)
{
    emu_post("/_emu/behavior",
             "{\"account\":\"%s\",\"user\":\"%s\",\"push\":\"%s\",\"delay_ms\":%d}", S.account,
             user, push, delay_ms);
}

/* Pushes the emulator recorded for a user. */
static long long pushes(const char *user)
{
    char path[256];
    snprintf(path, sizeof path, "/_emu/pushes?account=%s&user=%s", S.account, user);
    json_t *j = tl_emu_json(path, NULL);
    long long n = json_integer_value(json_object_get(json_object_get(j, "by_username"), user));
    json_decref(j);
    return n;
}

static void send_auth(const char *user, char *id, size_t n)
{
    tl_job_id(&S, id, n);
    err_t e = {0};
    json_t *b = json_pack("{s:s, s:s, s:s}", "stage_uuid", S.stage_uuid, "username", user, "factor",
                          "push");
    assert_int_equal(jobs_send(S.client, "auth", id, b, &e), 0);
    json_decref(b);
}

static json_t *reply_of(const char *id, int timeout_ms)
{
    json_t *r = NULL;
    err_t e = {0};
    int rc = jobs_wait(S.client, id, timeout_ms, &r, NULL, &e);
    if (rc != 1)
        fail_msg("no reply for %s: %s", id, rc == 0 ? "timeout" : e.msg);
    return r;
}

static json_t *push(const char *user)
{
    char id[64];
    send_auth(user, id, sizeof id);
    return reply_of(id, 60000);
}

static void expect(json_t *r, const char *status_or_code, const char *result)
{
    int as_expected =
        result ? strcmp(tl_str(r, "result"), result) == 0 : strcmp(tl_code(r), status_or_code) == 0;
    if (!as_expected) { /* say what came instead */
        char *dump = json_dumps(r, JSON_COMPACT);
        fprintf(stderr, "unexpected reply: %.400s\n", dump ? dump : "?");
        free(dump);
    }
    if (result) {
        assert_string_equal(tl_str(r, "status"), "ok");
        assert_string_equal(tl_str(r, "result"), result);
        assert_string_equal(tl_str(r, "duo_status"), status_or_code);
    } else {
        assert_string_equal(tl_code(r), status_or_code);
    }
    json_decref(r);
}

/* ---- statuses --------------------------------------------------------------------- */

static void test_every_status(void **state)
{
    (void)state;
    user_with_device("st_allow");
    json_t *r = push("st_allow");
    assert_false(json_is_true(json_object_get(r, "bypass")));
    expect(r, "allow", "allow");
    user_with_device("st_bypass");
    behave("st_bypass", "bypass", 0);
    r = push("st_bypass");
    assert_true(json_is_true(json_object_get(r, "bypass"))); /* no second factor happened */
    expect(r, "bypass", "allow");
    user_with_device("st_fail");
    behave("st_fail", "push_failed", 0);
    expect(push("st_fail"), "push_failed", "deny");
    user_with_device("st_locked");
    behave("st_locked", "locked_out", 0);
    expect(push("st_locked"), "duo_user_locked_out", NULL);
    user_with_device("st_fraud");
    behave("st_fraud", "fraud", 0);
    expect(push("st_fraud"), "fraud", "deny");
    r = push("st_fraud"); /* a reported push starts the cool-down, as a deny does */
    assert_string_equal(tl_str(r, "result"), "rate_limited");
    json_decref(r);
    assert_int_equal(pushes("st_fraud"), 1);
}

/* ---- one push per job ------------------------------------------------------------- */

/* Arms one emulator fault on /auth/v2/auth, pushes for a new user and checks the
 * outcome, and that exactly one push reached the user. */
static void push_under_fault(const char *user, const char *fault, const char *status_or_code,
                             const char *result)
{
    user_with_device(user);
    emu_post("/_emu/faults", "{\"account\":\"%s\",\"path_prefix\":\"/auth/v2/auth\",%s}", S.account,
             fault);
    expect(push(user), status_or_code, result);
    assert_int_equal(pushes(user), 1);
}

static void test_one_push_under_faults(void **state)
{
    (void)state;
    /* 5xx from Duo's edge after the push went out: not repeated. */
    push_under_fault("f_5xx", "\"status\":503,\"after\":true", "duo_unavailable", NULL);
    /* The connection dropped after the push: not repeated either (nor by libcurl). */
    push_under_fault("f_drop", "\"drop\":true,\"after\":true", "duo_unavailable", NULL);
    /* A 429 before acting is safe to repeat: one push, allowed. */
    push_under_fault("f_429", "\"status\":429,\"retry_after\":1", "allow", "allow");
}

/* The worker dies while the user looks at the push; its successor waits on the same
 * push (stored txid) and answers it: one push in all. */
static void test_worker_killed_while_waiting(void **state)
{
    (void)state;
    user_with_device("k_wait");
    behave("k_wait", "allow", 4000);
    char id[64];
    send_auth("k_wait", id, sizeof id);
    for (int i = 0; i < 200 && pushes("k_wait") < 1; i++)
        usleep(50000);
    assert_int_equal(pushes("k_wait"), 1);
    usleep(300000); /* the txid is stored right after Duo answers the push */
    tl_stack_signal(&S, auth_pid, SIGKILL);
    auth_pid = tl_stack_worker(&S, "auth", auth_env);
    assert_true(auth_pid > 0);
    json_t *r = reply_of(id, 60000);
    expect(r, "allow", "allow");
    assert_int_equal(pushes("k_wait"), 1);
}

/* A rerun of a job whose earlier run took its challenge but stored no txid (it died
 * between Duo receiving the push and the txid's commit): nothing is sent again. */
static void test_rerun_without_txid_does_not_push(void **state)
{
    (void)state;
    user_with_device("p_unknown");
    char id[64], sql[512], n[32];
    tl_job_id(&S, id, sizeof id);
    snprintf(sql, sizeof sql,
             "INSERT INTO auth_challenge (user_id, stage_id, job_id) SELECT u.id, st.id, '%s' "
             "FROM app_user u, duo_stage st WHERE u.username = 'p_unknown' AND st.uuid = '%s' "
             "RETURNING id",
             id, S.stage_uuid);
    assert_int_equal(tl_query1(S.db, sql, n, sizeof n), 0);
    err_t e = {0};
    json_t *b = json_pack("{s:s, s:s, s:s}", "stage_uuid", S.stage_uuid, "username", "p_unknown",
                          "factor", "push");
    assert_int_equal(jobs_send(S.client, "auth", id, b, &e), 0);
    json_decref(b);
    expect(reply_of(id, 30000), "push_outcome_unknown", NULL);
    assert_int_equal(pushes("p_unknown"), 0);
}

/* ---- imports ---------------------------------------------------------------------- */

static long long counted(const json_t *r, const char *key)
{
    return json_integer_value(json_object_get(json_object_get(r, "counts"), key));
}

/* Sends import.auto and returns its final reply. */
static json_t *import_all(int page_size)
{
    char id[64];
    tl_job_id(&S, id, sizeof id);
    err_t e = {0};
    json_t *b = json_pack("{s:s, s:i}", "stage_uuid", S.stage_uuid, "page_size", page_size);
    assert_int_equal(jobs_send(S.client, "import.auto", id, b, &e), 0);
    json_decref(b);
    for (int i = 0; i < 1000; i++) {
        json_t *r = reply_of(id, 120000);
        if (strcmp(tl_str(r, "status"), "ok") != 0)
            fail_msg("import.auto: %s", tl_code(r));
        if (!json_is_true(json_object_get(r, "progress")))
            return r;
        json_decref(r);
    }
    fail_msg("no final reply");
    return NULL;
}

static long long devices(void)
{
    char n[32];
    assert_int_equal(tl_query1(S.db,
                               "SELECT count(*) FROM duo_device WHERE name = "
                               "'Imported Duo Authenticator'",
                               n, sizeof n),
                     0);
    return strtoll(n, NULL, 10);
}

static void reset_import(void)
{
    assert_int_equal(tl_exec(S.db, "DELETE FROM duo_device WHERE name = "
                                   "'Imported Duo Authenticator'"),
                     0);
}

/* 1000 Duo users whose pages Duo answers short (at most 70 of the 100 asked): every
 * user is imported once, through pages added for the rest of each short page. */
static void test_short_pages(void **state)
{
    (void)state;
    emu_post("/_emu/users", "{\"account\":\"%s\",\"generate\":{\"count\":1000,\"prefix\":\"sp\"}}",
             S.account);
    assert_int_equal(tl_exec(S.db, "INSERT INTO app_user (username) SELECT 'sp' || "
                                   "lpad(g::text, 7, '0') FROM generate_series(0, 999) g"),
                     0);
    emu_post("/_emu/settings", "{\"account\":\"%s\",\"page_cap\":70}", S.account);
    json_t *r = import_all(100);
    emu_post("/_emu/settings", "{\"account\":\"%s\",\"page_cap\":0}", S.account);
    assert_int_equal(counted(r, "created"), 1000);
    assert_int_equal(counted(r, "seen"), counted(r, "total_at_end"));
    assert_true(counted(r, "pages_total") > 10); /* the rests were paged too */
    assert_int_equal(counted(r, "pages_done"), counted(r, "pages_total"));
    json_decref(r);
    assert_int_equal(devices(), 1000);
    reset_import();
}

/* Users removed and added while the run pages, one worker taking pages in order: the
 * removed users (already imported) stay imported, the five users they shifted into a
 * page already done are skipped, the users added at the end are imported - exactly
 * what the contract documents. */
static void test_users_change_mid_run(void **state)
{
    (void)state;
    /* Duo lists the 9 explicit users of the tests above first, then the 1000 "sp" users
     * (positions 9..1008). Pages of 100; the preflight is the first listing page, so
     * after 4 pages served pages 0-2 (positions 0..299) are done. Then five users of
     * page 0 go and two are appended: everyone after the five moves down by five. */
    emu_post("/_emu/users/schedule",
             "{\"account\":\"%s\",\"after_pages\":4,\"remove\":[\"sp0000010\",\"sp0000011\","
             "\"sp0000012\",\"sp0000013\",\"sp0000014\"],\"generate\":{\"count\":2,"
             "\"prefix\":\"late\"}}",
             S.account);
    assert_int_equal(tl_exec(S.db, "INSERT INTO app_user (username) VALUES ('late0000000'), "
                                   "('late0000001')"),
                     0);
    json_t *r = import_all(100);
    /* E explicit users come first; pages 0-2 held sp0000000 .. sp(299-E), the removed
     * five among them; sp(300-E) .. sp(304-E) moved into page 2 after it was done and
     * are skipped; the rest and the 2 appended are imported. */
    long long e = counted(r, "total_objects") - 1000;
    assert_true(e >= 0 && e < 50);
    assert_int_equal(counted(r, "created"), 1000 - 5 + 2);
    assert_int_equal(counted(r, "total_at_end"), counted(r, "total_objects") - 5 + 2);
    json_decref(r);
    char n[32], sql[512];
    snprintf(
        sql, sizeof sql,
        "SELECT count(*) FROM app_user u JOIN duo_device d ON d.user_id = u.id WHERE "
        "u.username IN (SELECT 'sp' || lpad(g::text, 7, '0') FROM generate_series(%lld, %lld) g)",
        300 - e, 304 - e);
    assert_int_equal(tl_query1(S.db, sql, n, sizeof n), 0);
    assert_string_equal(n, "0"); /* shifted into page 2 after it was done: skipped */
    assert_int_equal(tl_query1(S.db,
                               "SELECT count(*) FROM app_user u JOIN duo_device d ON d.user_id = "
                               "u.id WHERE u.username IN ('late0000000', 'late0000001', "
                               "'sp0000010')",
                               n, sizeof n),
                     0);
    assert_string_equal(n, "3");
    reset_import();
}

/* Under a new-user policy of "allow", preauth allows a name Duo does not have: the
 * manual import by username (no Admin API lookup can answer: the stage's Admin API is
 * refused here) must not store a device for it. */
static void test_policy_allowed_unknown_user_not_imported(void **state)
{
    (void)state;
    emu_post("/_emu/settings", "{\"account\":\"%s\",\"new_user_policy\":\"allow\"}", S.account);
    emu_post("/_emu/integration", "{\"ikey\":\"%s\",\"disabled\":true}", S.admin_ikey);
    assert_int_equal(tl_stack_user(&S, "nobody_local"), 0);
    char id[64];
    tl_job_id(&S, id, sizeof id);
    json_t *r = tl_job(&S, "import.manual", id,
                       json_pack("{s:s, s:s, s:s}", "stage_uuid", S.stage_uuid, "duo_user_id",
                                 "not-in-duo", "username", "nobody_local"),
                       30000);
    emu_post("/_emu/integration", "{\"ikey\":\"%s\",\"disabled\":false}", S.admin_ikey);
    emu_post("/_emu/settings", "{\"account\":\"%s\",\"new_user_policy\":\"enroll\"}", S.account);
    expect(r, "duo_user_unverified", NULL);
    char n[32];
    assert_int_equal(tl_query1(S.db,
                               "SELECT count(*) FROM duo_device WHERE duo_user_id = 'not-in-duo'",
                               n, sizeof n),
                     0);
    assert_string_equal(n, "0");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_status),
        cmocka_unit_test(test_one_push_under_faults),
        cmocka_unit_test(test_worker_killed_while_waiting),
        cmocka_unit_test(test_rerun_without_txid_does_not_push),
        cmocka_unit_test(test_short_pages),
        cmocka_unit_test(test_users_change_mid_run),
        cmocka_unit_test(test_policy_allowed_unknown_user_not_imported),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
