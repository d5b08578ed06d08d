/* test_auth.c - the authentication worker end to end: AMQP jobs to two duo-auth
 * processes, a real database, the Duo emulator. Every factor; allow, deny and timeout;
 * strict results (a "waiting" or unknown result is never allow); Duo errors as stable
 * codes; the push-fatigue cap and the cool-down held across both processes; many
 * challenges in flight at once, all completing (counts only, no timing asserts). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "testlib.h"
#include "tl_stack.h"

#define CAP 3
#define MANY 250

static tl_stack S;

/* Creates a Duo user in the emulator, a local user and its device on the stack's stage
 * (kind "user_id" with the emulator's id, or "username"). Writes the device uuid. */
static void user_with_device(const char *name, int by_username, char *device, size_t n)
{
    char body[256], out[1024];
    snprintf(body, sizeof body, "{\"account\":\"%s\",\"users\":[{\"username\":\"%s\"}]}", S.account,
             name);
    assert_int_equal(tl_emu("POST", "/_emu/users", body, out, sizeof out), 200);
    json_t *j = json_loads(out, 0, NULL);
    json_t *u = json_array_get(json_object_get(json_object_get(j, "response"), "users"), 0);
    if (!u)
        u = json_array_get(json_object_get(j, "users"), 0);
    const char *duo_id = json_string_value(json_object_get(u, "user_id"));
    assert_non_null(duo_id);
    assert_int_equal(tl_stack_user(&S, name), 0);
    char sql[1024];
    snprintf(sql, sizeof sql,
             "INSERT INTO duo_device (user_id, stage_id, duo_user_id, duo_user_kind, name) "
             "SELECT u.id, st.id, '%s', '%s', 'test phone' FROM app_user u, duo_stage st "
             "WHERE u.username = '%s' AND st.uuid = '%s' RETURNING uuid",
             by_username ? name : duo_id, by_username ? "username" : "user_id", name, S.stage_uuid);
    assert_int_equal(tl_query1(S.db, sql, device, n), 0);
    json_decref(j);
}

static void behave(const char *user, const char *push, int delay_ms)
{
    char body[256];
    snprintf(body, sizeof body,
             "{\"account\":\"%s\",\"user\":\"%s\",\"push\":\"%s\",\"delay_ms\":%d}", S.account,
             user, push, delay_ms);
    assert_int_equal(tl_emu("POST", "/_emu/behavior", body, NULL, 0), 200);
}

static long long auth_requests(void)
{
    return tl_emu_requests(S.account, "/auth/v2/auth");
}

static int count(const char *sql)
{
    char out[32];
    assert_int_equal(tl_query1(S.db, sql, out, sizeof out), 0);
    return (int)strtol(out, NULL, 10);
}

/* Sends an auth job for username (factor, optional passcode) and waits for the reply. */
static json_t *auth_user(const char *username, const char *factor, const char *passcode)
{
    char id[64];
    tl_job_id(&S, id, sizeof id);
    json_t *b = json_pack("{s:s, s:s, s:s}", "stage_uuid", S.stage_uuid, "username", username,
                          "factor", factor);
    if (passcode)
        json_object_set_new(b, "passcode", json_string(passcode));
    json_t *r = tl_job(&S, "auth", id, b, 60000);
    assert_non_null(r);
    assert_string_equal(tl_str(r, "job_type"), "auth");
    return r;
}

static void expect_result(json_t *r, const char *result, const char *device)
{
    assert_string_equal(tl_str(r, "status"), "ok");
    assert_string_equal(tl_str(r, "result"), result);
    if (device)
        assert_string_equal(tl_str(r, "device_id"), device);
    json_decref(r);
}

static int setup(void **state)
{
    (void)state;
    if (tl_stack_init(&S, "auth", TL_NO_ADMIN) < 0)
        return -1;
    static const char *env[] = {"AUTH_DEADLINE_SECS=5", "PUSH_CAP=3", "PUSH_WINDOW_SECS=300",
                                "DENY_COOLDOWN_SECS=60", NULL};
    if (tl_stack_worker(&S, "auth", env) <= 0 || tl_stack_worker(&S, "auth", env) <= 0)
        return -1;
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    tl_stack_fini(&S);
    return 0;
}

static void test_push_allow_updates_last_used(void **state)
{
    (void)state;
    char dev[64], sql[256];
    user_with_device("alice", 0, dev, sizeof dev);
    json_t *r = auth_user("alice", "push", NULL);
    assert_string_equal(tl_str(r, "duo_status"), "allow");
    assert_true(strlen(tl_str(r, "duo_status_msg")) > 0);
    expect_result(r, "allow", dev);
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM duo_device WHERE uuid = '%s' AND "
             "last_used IS NOT NULL",
             dev);
    assert_int_equal(count(sql), 1);
}

static void test_every_factor(void **state)
{
    (void)state;
    char dev[64];
    user_with_device("fiona", 0, dev, sizeof dev);
    expect_result(auth_user("fiona", "auto", NULL), "allow", dev);
    expect_result(auth_user("fiona", "phone", NULL), "allow", dev);
    expect_result(auth_user("fiona", "passcode", "123456"), "allow", dev);
    json_t *r = auth_user("fiona", "passcode", "999999"); /* wrong: a deny, not an error */
    expect_result(r, "deny", dev);
    r = auth_user("fiona", "sms", NULL);
    assert_string_equal(tl_str(r, "duo_status"), "sent");
    expect_result(r, "deny", dev);
}

static void test_deny_then_cooldown(void **state)
{
    (void)state;
    char dev[64];
    user_with_device("dave", 0, dev, sizeof dev);
    behave("dave", "deny", 0);
    json_t *r = auth_user("dave", "push", NULL);
    assert_string_equal(tl_str(r, "duo_status"), "deny");
    expect_result(r, "deny", dev);
    long long before = auth_requests();
    r = auth_user("dave", "push", NULL);
    assert_non_null(strstr(tl_str(r, "message"), "denied"));
    long long after_secs = json_integer_value(json_object_get(r, "retry_after_secs"));
    assert_true(after_secs > 0 && after_secs <= 60);
    expect_result(r, "rate_limited", dev);
    assert_int_equal(auth_requests(), before); /* Duo was not called */
    /* A passcode is not a push: the cool-down does not block it. */
    expect_result(auth_user("dave", "passcode", "123456"), "allow", dev);
}

static void test_strict_results(void **state)
{
    (void)state;
    char dev[64];
    user_with_device("sam", 0, dev, sizeof dev);
    /* "waiting" is Duo saying "ask auth_status again": forever waiting ends at the job's
     * deadline, never in an allow. */
    behave("sam", "waiting", 0);
    expect_result(auth_user("sam", "push", NULL), "timeout", dev);
    behave("sam", "maybe", 0);
    expect_result(auth_user("sam", "push", NULL), "deny", dev);
    behave("sam", "ALLOW", 0);
    expect_result(auth_user("sam", "push", NULL), "deny", dev);
}

static void test_timeouts(void **state)
{
    (void)state;
    char dev[64];
    user_with_device("tim", 0, dev, sizeof dev);
    behave("tim", "hang", 0); /* nobody answers: the job deadline (5 s) ends it */
    expect_result(auth_user("tim", "push", NULL), "timeout", dev);
    behave("tim", "timeout", 0); /* Duo's own push timeout */
    json_t *r = auth_user("tim", "push", NULL);
    assert_string_equal(tl_str(r, "duo_status"), "timeout");
    expect_result(r, "timeout", dev);
}

static void test_addressing(void **state)
{
    (void)state;
    char dev[64], dev2[64];
    user_with_device("uma", 1, dev, sizeof dev); /* imported by Duo username */
    expect_result(auth_user("uma", "push", NULL), "allow", dev);
    user_with_device("victor", 0, dev2, sizeof dev2);
    char id[64];
    tl_job_id(&S, id, sizeof id);
    json_t *r = tl_job(&S, "auth", id,
                       json_pack("{s:s, s:s, s:{s:s, s:s}}", "device_id", dev2, "factor", "push",
                                 "pushinfo", "from", "login page", "ip", "10.0.0.1&x=y"),
                       60000);
    assert_non_null(r);
    expect_result(r, "allow", dev2);
}

static void expect_error(json_t *r, const char *code)
{
    assert_non_null(r);
    assert_string_equal(tl_str(r, "status"), "error");
    assert_string_equal(tl_code(r), code);
    json_decref(r);
}

/* What Duo would refuse is refused before any push: a pushinfo of 20,000 bytes or more
 * URL-encoded, a device that is not the user's (checked with preauth). */
static void test_checked_before_sending(void **state)
{
    (void)state;
    char dev[64], id[64];
    user_with_device("wes", 0, dev, sizeof dev);
    long long before = auth_requests();
    json_t *info = json_object();
    char key[16], value[1001];
    memset(value, 'v', 1000);
    value[1000] = '\0';
    for (int i = 0; i < 21; i++) { /* 21 x ~1005 bytes: over 20,000 */
        snprintf(key, sizeof key, "k%d", i);
        json_object_set_new(info, key, json_string(value));
    }
    tl_job_id(&S, id, sizeof id);
    json_t *r = tl_job(&S, "auth", id,
                       json_pack("{s:s, s:s, s:s, s:o}", "stage_uuid", S.stage_uuid, "username",
                                 "wes", "factor", "push", "pushinfo", info),
                       30000);
    expect_error(r, "invalid_parameter");
    tl_job_id(&S, id, sizeof id);
    r = tl_job(&S, "auth", id,
               json_pack("{s:s, s:s, s:s, s:s}", "stage_uuid", S.stage_uuid, "username", "wes",
                         "factor", "push", "device", "DPNOTHISUSERSPHONE01"),
               30000);
    assert_non_null(
        strstr(json_string_value(json_object_get(json_object_get(r, "error"), "message")),
               "not one of this user's Duo devices"));
    expect_error(r, "invalid_parameter");
    assert_int_equal(auth_requests(), before);                   /* nothing reached /auth/v2/auth */
    expect_result(auth_user("wes", "push", NULL), "allow", dev); /* the guard was not spent */
}

static void test_errors(void **state)
{
    (void)state;
    char dev[64], body[256];
    expect_error(auth_user("nobody", "push", NULL), "user_not_found");
    assert_int_equal(tl_stack_user(&S, "nodevice"), 0);
    expect_error(auth_user("nodevice", "push", NULL), "no_device");
    char id[64];
    tl_job_id(&S, id, sizeof id);
    expect_error(tl_job(&S, "auth", id,
                        json_pack("{s:s}", "device_id", "7e57ab1e-0000-4000-8000-00000000beef"),
                        30000),
                 "device_not_found");
    user_with_device("rita", 0, dev, sizeof dev);
    snprintf(body, sizeof body, "{\"account\":\"%s\",\"username\":\"rita\"}", S.account);
    assert_int_equal(tl_emu("POST", "/_emu/users/remove", body, NULL, 0), 200);
    expect_error(auth_user("rita", "push", NULL), "duo_user_not_found");
    user_with_device("ivan", 0, dev, sizeof dev);
    snprintf(body, sizeof body, "{\"ikey\":\"%s\",\"disabled\":true}", S.auth_ikey);
    assert_int_equal(tl_emu("POST", "/_emu/integration", body, NULL, 0), 200);
    expect_error(auth_user("ivan", "passcode", "123456"), "duo_integration_disabled");
    snprintf(body, sizeof body, "{\"ikey\":\"%s\",\"disabled\":false}", S.auth_ikey);
    assert_int_equal(tl_emu("POST", "/_emu/integration", body, NULL, 0), 200);
    expect_result(auth_user("ivan", "passcode", "123456"), "allow", dev);
}

/* Duo busy (429 asking to come back after the job's deadline): an error at once, never a
 * retry of the job later - the user is waiting now. */
static void test_duo_unavailable(void **state)
{
    (void)state;
    char dev[64], body[256];
    user_with_device("bella", 0, dev, sizeof dev);
    snprintf(body, sizeof body,
             "{\"account\":\"%s\",\"path_prefix\":\"/auth/v2/auth\","
             "\"status\":429,\"count\":1,\"retry_after\":30}",
             S.account);
    assert_int_equal(tl_emu("POST", "/_emu/faults", body, NULL, 0), 200);
    expect_error(auth_user("bella", "push", NULL), "duo_unavailable");
    expect_result(auth_user("bella", "passcode", "123456"), "allow", dev); /* fault used up */
}

/* Sends n jobs at once; counts the replies' results. */
static void send_all(const char *const *users, int n, int *allow, int *limited, int *other)
{
    err_t e = {0};
    char ids[MANY][64];
    for (int i = 0; i < n; i++) {
        tl_job_id(&S, ids[i], sizeof ids[i]);
        json_t *b = json_pack("{s:s, s:s, s:s}", "stage_uuid", S.stage_uuid, "username", users[i],
                              "factor", "push");
        assert_int_equal(jobs_send(S.client, "auth", ids[i], b, &e), 0);
        json_decref(b);
    }
    *allow = *limited = *other = 0;
    for (int i = 0; i < n; i++) {
        json_t *r = NULL;
        assert_int_equal(jobs_wait(S.client, ids[i], 120000, &r, NULL, &e), 1);
        const char *res = tl_str(r, "result");
        if (strcmp(res, "allow") == 0)
            (*allow)++;
        else if (strcmp(res, "rate_limited") == 0)
            (*limited)++;
        else if ((*other)++ < 3) /* say what the unexpected answers were */
            fprintf(stderr, "send_all: %s: result '%s' duo_status '%s' error '%s'\n", ids[i], res,
                    tl_str(r, "duo_status"), tl_code(r));
        json_decref(r);
    }
}

/* Eight pushes at once for one user through two workers: exactly CAP reach Duo. */
static void test_fatigue_cap_across_workers(void **state)
{
    (void)state;
    char dev[64];
    user_with_device("paul", 0, dev, sizeof dev);
    behave("paul", "allow", 500);
    const char *users[8];
    for (int i = 0; i < 8; i++)
        users[i] = "paul";
    int allow, limited, other;
    send_all(users, 8, &allow, &limited, &other);
    assert_int_equal(allow, CAP);
    assert_int_equal(limited, 8 - CAP);
    assert_int_equal(other, 0);
    assert_int_equal(count("SELECT count(*) FROM auth_challenge c JOIN app_user u ON "
                           "u.id = c.user_id WHERE u.username = 'paul'"),
                     CAP);
}

/* MANY pushes held 2 s each by the emulator, all in flight together: all answered. */
static void test_many_concurrent(void **state)
{
    (void)state;
    char sql[512], body[256];
    snprintf(body, sizeof body,
             "{\"account\":\"%s\",\"generate\":{\"count\":%d,\"prefix\":"
             "\"many\"}}",
             S.account, MANY);
    assert_int_equal(tl_emu("POST", "/_emu/users", body, NULL, 0), 200);
    snprintf(sql, sizeof sql,
             "INSERT INTO app_user (username) SELECT 'many' || "
             "lpad(i::text, 7, '0') FROM generate_series(0, %d) i",
             MANY - 1);
    assert_int_equal(tl_exec(S.db, sql), 0);
    snprintf(sql, sizeof sql,
             "INSERT INTO duo_device (user_id, stage_id, duo_user_id, "
             "duo_user_kind, name) SELECT u.id, st.id, u.username, 'username', 'p' FROM "
             "app_user u, duo_stage st WHERE u.username LIKE 'many%%' AND st.uuid = '%s'",
             S.stage_uuid);
    assert_int_equal(tl_exec(S.db, sql), 0);
    snprintf(body, sizeof body, "{\"account\":\"%s\",\"user\":\"*\",\"delay_ms\":2000}", S.account);
    assert_int_equal(tl_emu("POST", "/_emu/behavior", body, NULL, 0), 200);
    static char names[MANY][16];
    const char *users[MANY];
    for (int i = 0; i < MANY; i++) {
        snprintf(names[i], sizeof names[i], "many%07d", i);
        users[i] = names[i];
    }
    int allow, limited, other;
    send_all(users, MANY, &allow, &limited, &other);
    assert_int_equal(allow, MANY);
    assert_int_equal(limited + other, 0);
    /* The deliveries arrived in batches whose claims travel ahead together: each job was
     * claimed once (one attempt) and pushed once. */
    const char *mine = "FROM auth_challenge c JOIN app_user u ON u.id = c.user_id "
                       "JOIN job j ON j.job_id = c.job_id WHERE u.username LIKE 'many%'";
    snprintf(sql, sizeof sql, "SELECT count(DISTINCT c.job_id) %s AND j.attempts = 1", mine);
    assert_int_equal(count(sql), MANY);
    snprintf(sql, sizeof sql, "SELECT count(*) %s", mine);
    assert_int_equal(count(sql), MANY);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_push_allow_updates_last_used),
        cmocka_unit_test(test_every_factor),
        cmocka_unit_test(test_deny_then_cooldown),
        cmocka_unit_test(test_strict_results),
        cmocka_unit_test(test_timeouts),
        cmocka_unit_test(test_addressing),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_checked_before_sending),
        cmocka_unit_test(test_duo_unavailable),
        cmocka_unit_test(test_fatigue_cap_across_workers),
        cmocka_unit_test(test_many_concurrent),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
