/* test_import.c - the import worker end to end (AMQP jobs, two import workers, a real
 * database, the Duo emulator): manual import by Duo user id and by Duo username (with
 * and without Admin API credentials), automatic import counting created / existing /
 * unknown users with existing devices untouched, a worker killed mid-run, two
 * concurrent requests for one stage, paced pages deferred through the delay queue (the
 * worker meanwhile free for other jobs), and the licence and credential preflights. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <unistd.h>

#include <cmocka.h>

#include "clock.h"
#include "testlib.h"
#include "tl_stack.h"

static tl_stack S; /* licensed, with admin credentials, two import workers */
static tl_stack T; /* a stack for one special-case test */
static pid_t workers[2];

static const char *const worker_env[] = {"IMPORT_PAGES_PER_MIN=1200", NULL};

static int setup(void **state)
{
    (void)state;
    if (tl_stack_init(&S, "import", 0) < 0)
        return -1;
    for (int i = 0; i < 2; i++)
        if ((workers[i] = tl_stack_worker(&S, "import", worker_env)) <= 0)
            return -1;
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    tl_stack_fini(&S);
    return 0;
}

static long long count(const tl_stack *s, const char *sql)
{
    char out[64];
    assert_int_equal(tl_query1(s->db, sql, out, sizeof out), 0);
    return strtoll(out, NULL, 10);
}

static void duo_users(const tl_stack *s, const char *prefix, int n)
{
    char body[256];
    snprintf(body, sizeof body,
             "{\"account\":\"%s\",\"generate\":{\"count\":%d,\"prefix\":\"%s\",\"start\":0}}",
             s->account, n, prefix);
    assert_int_equal(tl_emu("POST", "/_emu/users", body, NULL, 0), 200);
}

/* Local users prefix0000000 .. prefix(n-1), as the emulator names generated users. */
static void local_users(const tl_stack *s, const char *prefix, int n)
{
    char sql[256];
    snprintf(sql, sizeof sql,
             "INSERT INTO app_user (username) SELECT '%s' || "
             "lpad(g::text, 7, '0') FROM generate_series(0, %d) g",
             prefix, n - 1);
    assert_int_equal(tl_exec(s->db, sql), 0);
}

static json_t *manual(tl_stack *s, const char *duo_user_id, const char *username)
{
    char id[64];
    tl_job_id(s, id, sizeof id);
    return tl_job(s, "import.manual", id,
                  json_pack("{s:s, s:s, s:s}", "stage_uuid", s->stage_uuid, "duo_user_id",
                            duo_user_id, "username", username),
                  30000);
}

static void send_auto(tl_stack *s, char *id, size_t n, int page_size)
{
    tl_job_id(s, id, n);
    err_t e = {0};
    json_t *body = json_pack("{s:s, s:i}", "stage_uuid", s->stage_uuid, "page_size", page_size);
    assert_int_equal(jobs_send(s->client, "import.auto", id, body, &e), 0);
    json_decref(body);
}

static json_t *next_reply(tl_stack *s, const char *id, int timeout_ms)
{
    json_t *r = NULL;
    err_t e = {0};
    int rc = jobs_wait(s->client, id, timeout_ms, &r, NULL, &e);
    if (rc != 1)
        fprintf(stderr, "no reply for %s: %s\n", id, rc == 0 ? "timeout" : e.msg);
    return rc == 1 ? r : NULL;
}

/* Reads the job's messages until the final one (progress false); returns it. */
static json_t *final_reply(tl_stack *s, const char *id)
{
    for (int i = 0; i < 500; i++) {
        json_t *r = next_reply(s, id, 120000);
        assert_non_null(r);
        if (!json_is_true(json_object_get(r, "progress")))
            return r;
        json_decref(r);
    }
    fail_msg("no final message for %s", id);
    return NULL;
}

/* Adds one user to the stack's emulator account, with the given Duo user id. */
static void emu_user(const tl_stack *s, const char *username, const char *user_id)
{
    char body[256];
    snprintf(body, sizeof body,
             "{\"account\":\"%s\",\"users\":[{\"username\":\"%s\",\"user_id\":\"%s\"}]}",
             s->account, username, user_id);
    assert_int_equal(tl_emu("POST", "/_emu/users", body, NULL, 0), 200);
}

static long long duo_code_of(const json_t *r)
{
    return json_integer_value(json_object_get(json_object_get(r, "error"), "duo_code"));
}

static long long counted(const json_t *r, const char *key)
{
    return json_integer_value(json_object_get(json_object_get(r, "counts"), key));
}

static void test_manual_by_id_and_username(void **state)
{
    (void)state;
    duo_users(&S, "g", 1000);
    local_users(&S, "g", 800);
    json_t *r = manual(&S, "g0000005", "g0000005"); /* a Duo username: resolved via Admin */
    assert_non_null(r);
    assert_string_equal(tl_str(r, "status"), "ok");
    assert_string_equal(tl_str(r, "resolved_from"), "username");
    const char *stored = tl_str(r, "duo_user_id");
    assert_int_equal(strlen(stored), 20);
    assert_memory_equal(stored, "DU", 2);
    assert_int_equal(count(&S, "SELECT count(*) FROM duo_device WHERE duo_user_kind = 'user_id'"
                               " AND name = 'Imported Duo Authenticator' AND confirmed"),
                     1);
    char again[21];
    snprintf(again, sizeof again, "%s", stored);
    json_decref(r);
    r = manual(&S, again, "g0000006"); /* the same Duo user id for another user */
    assert_string_equal(tl_code(r), "device_exists");
    json_decref(r);
    emu_user(&S, "idonly", "DUAAAAAAAAAAAAAAAAA1");
    r = manual(&S, "DUAAAAAAAAAAAAAAAAA1", "g0000007"); /* a user id Duo has: stored as is */
    assert_string_equal(tl_str(r, "resolved_from"), "user_id");
    assert_string_equal(tl_str(r, "duo_user_id"), "DUAAAAAAAAAAAAAAAAA1");
    json_decref(r);
    r = manual(&S, "DUBBBBBBBBBBBBBBBBB2", "g0000008"); /* Admin API: 404 40401 */
    assert_string_equal(tl_code(r), "duo_user_not_found");
    assert_int_equal(duo_code_of(r), 40401);
    json_decref(r);
    r = manual(&S, "no-such-duo-user", "g0000008");
    assert_string_equal(tl_code(r), "duo_user_not_found");
    json_decref(r);
    assert_int_equal(count(&S, "SELECT count(*) FROM duo_device d JOIN app_user u ON u.id = "
                               "d.user_id WHERE u.username = 'g0000008'"),
                     0);
    r = manual(&S, "g0000009", "no-such-local-user");
    assert_string_equal(tl_code(r), "user_not_found");
    json_decref(r);
    assert_int_equal(count(&S, "DELETE FROM duo_device WHERE duo_user_id = 'DUAAAAAAAAAAAAAAAAA1'"
                               " RETURNING 1"),
                     1);
    /* The automatic import tests count the 1000 generated users only. */
    char body[160];
    snprintf(body, sizeof body, "{\"account\":\"%s\",\"user_id\":\"DUAAAAAAAAAAAAAAAAA1\"}",
             S.account);
    assert_int_equal(tl_emu("POST", "/_emu/users/remove", body, NULL, 0), 200);
}

/* 1000 Duo users, 800 local ones, one of them (g0000005) already imported manually. */
static void test_auto_counts_and_existing_untouched(void **state)
{
    (void)state;
    char before[160], id[64];
    assert_int_equal(tl_query1(S.db, "SELECT uuid::text || created_at::text FROM duo_device",
                               before, sizeof before),
                     0);
    send_auto(&S, id, sizeof id, 100);
    json_t *r = next_reply(&S, id, 60000);
    assert_non_null(r);
    assert_string_equal(tl_str(r, "status"), "ok");
    assert_string_equal(tl_str(r, "state"), "running");
    json_decref(r);
    r = final_reply(&S, id);
    assert_string_equal(tl_str(r, "state"), "done");
    assert_int_equal(counted(r, "pages_total"), 10);
    assert_int_equal(counted(r, "pages_done"), 10);
    assert_int_equal(counted(r, "created"), 799);
    assert_int_equal(counted(r, "existing"), 1);
    assert_int_equal(counted(r, "unknown_user"), 200);
    assert_int_equal(counted(r, "errors"), 0);
    json_decref(r);
    assert_int_equal(count(&S, "SELECT count(*) FROM duo_device"), 800);
    assert_int_equal(count(&S, "SELECT count(DISTINCT duo_user_id) FROM duo_device"), 800);
    char q[400];
    snprintf(q, sizeof q,
             "SELECT count(*) FROM duo_device WHERE uuid::text || created_at::text"
             " = '%s'",
             before);
    assert_int_equal(count(&S, q), 1); /* the manually imported device is the same row */
}

/* 3000 more Duo users with local users; one of the two workers is killed mid-run. */
static void test_worker_killed_mid_run(void **state)
{
    (void)state;
    duo_users(&S, "k", 3000);
    local_users(&S, "k", 3000);
    char id[64];
    send_auto(&S, id, sizeof id, 100);
    json_t *r = next_reply(&S, id, 60000);
    assert_non_null(r);
    assert_string_equal(tl_str(r, "state"), "running");
    json_decref(r);
    /* Wait until pages are being applied, then kill one worker outright. */
    for (int i = 0; i < 200 && count(&S, "SELECT coalesce(max(pages_done), 0) FROM import_run "
                                         "WHERE state = 'running'") < 5;
         i++)
        usleep(50000);
    tl_stack_signal(&S, workers[0], SIGKILL);
    r = final_reply(&S, id);
    assert_string_equal(tl_str(r, "state"), "done");
    assert_int_equal(counted(r, "pages_total"), 40);
    assert_int_equal(counted(r, "created"), 3000);
    assert_int_equal(counted(r, "existing"), 800);
    assert_int_equal(counted(r, "unknown_user"), 200);
    assert_int_equal(counted(r, "errors"), 0);
    json_decref(r);
    assert_int_equal(count(&S, "SELECT count(*) FROM duo_device"), 3800);
    workers[0] = tl_stack_worker(&S, "import", worker_env);
    assert_true(workers[0] > 0);
}

static void test_two_requests_for_one_stage(void **state)
{
    (void)state;
    char a[64], b[64];
    send_auto(&S, a, sizeof a, 50);
    send_auto(&S, b, sizeof b, 50);
    json_t *ra = next_reply(&S, a, 60000), *rb = next_reply(&S, b, 60000);
    assert_non_null(ra);
    assert_non_null(rb);
    int a_ok = strcmp(tl_str(ra, "status"), "ok") == 0,
        b_ok = strcmp(tl_str(rb, "status"), "ok") == 0;
    assert_int_equal(a_ok + b_ok, 1);
    json_t *loser = a_ok ? rb : ra;
    assert_string_equal(tl_code(loser), "import_already_running");
    const char *run = tl_str(a_ok ? ra : rb, "run_id");
    const char *msg =
        json_string_value(json_object_get(json_object_get(loser, "error"), "message"));
    assert_non_null(strstr(msg, run)); /* the refusal names the running run */
    const char *named =
        json_string_value(json_object_get(json_object_get(loser, "error"), "run_id"));
    assert_non_null(named); /* ... as a field, not only in the text */
    assert_string_equal(named, run);
    json_t *fin = final_reply(&S, a_ok ? a : b);
    assert_int_equal(counted(fin, "created"), 0);
    assert_int_equal(counted(fin, "existing"), 3800);
    json_decref(fin);
    json_decref(ra);
    json_decref(rb);
    assert_int_equal(count(&S, "SELECT count(*) FROM import_run"), 3);
}

static int setup_t(unsigned flags)
{
    if (tl_stack_init(&T, "import1", flags) < 0)
        return -1;
    return tl_stack_worker(&T, "import", worker_env) > 0 ? 0 : -1;
}

static int setup_unlicensed(void **state)
{
    (void)state;
    return setup_t(TL_UNLICENSED);
}

static int setup_no_admin(void **state)
{
    (void)state;
    return setup_t(TL_NO_ADMIN);
}

/* One worker whose shortest retry delay is 1 s: a page whose slot is further than that
 * is deferred through the broker instead of waiting in the worker. */
static const char *const defer_env[] = {"IMPORT_PAGES_PER_MIN=6000",
                                        "RETRY_DELAYS_MS=1000,2000,5000", NULL};

static int setup_defer(void **state)
{
    (void)state;
    if (tl_stack_init(&T, "import2", 0) < 0)
        return -1;
    return tl_stack_worker(&T, "import", defer_env) > 0 ? 0 : -1;
}

static int teardown_t(void **state)
{
    (void)state;
    tl_stack_fini(&T);
    return 0;
}

static json_t *auto_once(tl_stack *s)
{
    char id[64];
    tl_job_id(s, id, sizeof id);
    return tl_job(s, "import.auto", id, json_pack("{s:s}", "stage_uuid", s->stage_uuid), 30000);
}

static void test_license_required(void **state)
{
    (void)state;
    json_t *r = auto_once(&T);
    assert_non_null(r);
    assert_string_equal(tl_code(r), "license_required");
    const char *msg = json_string_value(json_object_get(json_object_get(r, "error"), "message"));
    assert_non_null(strstr(msg, "Duo MFA"));
    json_decref(r);
    assert_int_equal(count(&T, "SELECT count(*) FROM import_run"), 0);
}

static void test_admin_missing_and_manual_by_preauth(void **state)
{
    (void)state;
    json_t *r = auto_once(&T);
    assert_string_equal(tl_code(r), "admin_api_not_configured");
    json_decref(r);
    assert_int_equal(count(&T, "SELECT count(*) FROM import_run"), 0);
    char body[256];
    snprintf(body, sizeof body, "{\"account\":\"%s\",\"users\":[{\"username\":\"ann\"}]}",
             T.account);
    assert_int_equal(tl_emu("POST", "/_emu/users", body, NULL, 0), 200);
    assert_int_equal(tl_stack_user(&T, "ann"), 0);
    assert_int_equal(tl_stack_user(&T, "ben"), 0);
    r = manual(&T, "ann", "ann"); /* no Admin API: verified by preauth, stored as username */
    assert_string_equal(tl_str(r, "status"), "ok");
    assert_string_equal(tl_str(r, "resolved_from"), "username");
    assert_string_equal(tl_str(r, "duo_user_id"), "ann");
    json_decref(r);
    assert_int_equal(count(&T, "SELECT count(*) FROM duo_device WHERE duo_user_kind = 'username'"
                               " AND duo_user_id = 'ann'"),
                     1);
    r = manual(&T, "nobody-in-duo", "ben");
    assert_string_equal(tl_code(r), "duo_user_not_found");
    json_decref(r);
    /* By user id without the Admin API: preauth with user_id, which Duo refuses (40002)
     * for an id it does not have. */
    emu_user(&T, "cid", "DUCCCCCCCCCCCCCCCCC3");
    r = manual(&T, "DUCCCCCCCCCCCCCCCCC3", "ben");
    assert_string_equal(tl_str(r, "status"), "ok");
    assert_string_equal(tl_str(r, "resolved_from"), "user_id");
    json_decref(r);
    assert_int_equal(tl_stack_user(&T, "cal"), 0);
    r = manual(&T, "DUDDDDDDDDDDDDDDDDD4", "cal");
    assert_string_equal(tl_code(r), "duo_user_not_found");
    assert_int_equal(duo_code_of(r), 40002);
    json_decref(r);
    /* preauth `allow` for a username proves nothing: not imported. */
    snprintf(body, sizeof body, "{\"account\":\"%s\",\"user\":\"cid\",\"preauth\":\"allow\"}",
             T.account);
    assert_int_equal(tl_emu("POST", "/_emu/behavior", body, NULL, 0), 200);
    r = manual(&T, "cid", "cal");
    assert_string_equal(tl_code(r), "duo_user_unverified");
    json_decref(r);
    assert_int_equal(count(&T, "SELECT count(*) FROM duo_device d JOIN app_user u ON u.id = "
                               "d.user_id WHERE u.username = 'cal'"),
                     0);
}

/* A run with a budget of its own (60 pages/min, far below the worker's 6000): its pages
 * go out at its pace, those whose slot is further than the shortest retry delay are
 * deferred through the delay queue (as new job ids, "<page job>~n"), and the run still
 * counts every user once. The single worker meanwhile answers a manual import at once:
 * no paced page holds it. */
static void test_paced_pages_are_deferred(void **state)
{
    (void)state;
    duo_users(&T, "p", 600);
    local_users(&T, "p", 600);
    char id[64];
    tl_job_id(&T, id, sizeof id);
    err_t e = {0};
    json_t *body = json_pack("{s:s, s:i, s:i}", "stage_uuid", T.stage_uuid, "page_size", 100,
                             "pages_per_min", 60);
    long long t0 = clock_ms();
    assert_int_equal(jobs_send(T.client, "import.auto", id, body, &e), 0);
    json_decref(body);
    json_t *r = next_reply(&T, id, 60000);
    assert_non_null(r);
    assert_string_equal(tl_str(r, "state"), "running");
    json_decref(r);
    /* While pages wait for their slots, the worker takes other jobs. */
    emu_user(&T, "pmanual", "DUPMPMPMPMPMPMPMPMP1");
    assert_int_equal(tl_stack_user(&T, "pmanual"), 0);
    long long m0 = clock_ms();
    r = manual(&T, "DUPMPMPMPMPMPMPMPMP1", "pmanual");
    if (strcmp(tl_str(r, "status"), "ok") != 0)
        fail_msg("manual import: %s", json_dumps(r, 0));
    assert_true(clock_ms() - m0 < 3000);
    json_decref(r);
    r = final_reply(&T, id);
    long long took = clock_ms() - t0;
    assert_string_equal(tl_str(r, "state"), "done");
    /* The Duo user added meanwhile grew the run by a page at its end (total 601). */
    assert_int_equal(counted(r, "pages_total"), 7);
    assert_int_equal(counted(r, "created"), 600);
    assert_int_equal(counted(r, "seen"), 601);
    assert_int_equal(counted(r, "errors"), 0);
    json_decref(r);
    /* 7 pages and 2 total checks at 57 pages/min: about 9 s at least. */
    assert_true(took > 8000);
    assert_int_equal(count(&T, "SELECT count(*) FROM duo_device WHERE duo_user_id LIKE 'DU%'"),
                     601);
    assert_true(
        count(&T, "SELECT count(*) FROM job WHERE job_type = 'import.page' AND job_id LIKE '%~%'") >
        0);
    assert_int_equal(count(&T, "SELECT count(*) FROM import_page WHERE slot_at IS NOT NULL"), 0);
}

int main(void)
{
    const struct CMUnitTest main_stack[] = {
        cmocka_unit_test(test_manual_by_id_and_username),
        cmocka_unit_test(test_auto_counts_and_existing_untouched),
        cmocka_unit_test(test_worker_killed_mid_run),
        cmocka_unit_test(test_two_requests_for_one_stage),
    };
    const struct CMUnitTest own_stack[] = {
        cmocka_unit_test_setup_teardown(test_license_required, setup_unlicensed, teardown_t),
        cmocka_unit_test_setup_teardown(test_paced_pages_are_deferred, setup_defer, teardown_t),
        cmocka_unit_test_setup_teardown(test_admin_missing_and_manual_by_preauth, setup_no_admin,
                                        teardown_t),
    };
    int failed = cmocka_run_group_tests(main_stack, setup, teardown);
    return failed + cmocka_run_group_tests(own_stack, NULL, NULL);
}
