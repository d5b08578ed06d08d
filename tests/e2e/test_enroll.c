/* test_enroll.c - the enrollment worker end to end: real AMQP jobs and replies, a real
 * database, the Duo emulator. Covers begin -> scan -> status success -> one device, the
 * error codes an operator acts on, bad input (answered and dead-lettered while the
 * worker keeps serving), and a worker killed between COMMIT and ack. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "testlib.h"
#include "tl_stack.h"

static tl_stack S;
static char metrics_port[32];

static int setup(void **state)
{
    (void)state;
    setenv("MAX_MESSAGE_BYTES", "4096", 1);
    if (tl_stack_init(&S, "enroll", 0) < 0)
        return -1;
    if (tl_stack_user(&S, "alice") < 0 || tl_stack_user(&S, "bob") < 0 ||
        tl_stack_user(&S, "carol") < 0)
        return -1;
    snprintf(metrics_port, sizeof metrics_port, "METRICS_PORT=%d", tl_free_port());
    static const char *env[2];
    env[0] = metrics_port;
    return tl_stack_worker(&S, "enroll", env) > 0 ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    tl_stack_fini(&S);
    return 0;
}

static json_t *begin(const char *username, char *job_id, size_t n)
{
    tl_job_id(&S, job_id, n);
    return tl_job(&S, "enroll.begin", job_id,
                  json_pack("{s:s, s:s}", "stage_uuid", S.stage_uuid, "username", username), 30000);
}

static json_t *status(const char *enrollment_id)
{
    char id[64];
    tl_job_id(&S, id, sizeof id);
    return tl_job(
        &S, "enroll.status", id,
        json_pack("{s:s, s:s}", "stage_uuid", S.stage_uuid, "enrollment_id", enrollment_id), 30000);
}

static void emu_enrollment(const char *code, const char *action)
{
    char body[1024];
    snprintf(body, sizeof body, "{\"account\":\"%s\",\"activation_code\":\"%s\",\"action\":\"%s\"}",
             S.account, code, action);
    assert_int_equal(tl_emu("POST", "/_emu/enrollment", body, NULL, 0), 200);
}

static int count(const char *sql)
{
    char out[32];
    assert_int_equal(tl_query1(S.db, sql, out, sizeof out), 0);
    return (int)strtol(out, NULL, 10);
}

static void test_enroll_end_to_end(void **state)
{
    (void)state;
    char job_id[64];
    json_t *r = begin("alice", job_id, sizeof job_id);
    assert_non_null(r);
    assert_string_equal(tl_str(r, "status"), "ok");
    assert_string_equal(tl_str(r, "job_type"), "enroll.begin");
    assert_string_equal(tl_str(r, "job_id"), job_id);
    assert_true(strncmp(tl_str(r, "activation_code"), "duo://", 6) == 0);
    assert_true(strlen(tl_str(r, "activation_barcode")) > 0);
    assert_true(json_integer_value(json_object_get(r, "expires_at")) > 0);
    assert_non_null(strstr(tl_str(r, "stage_name"), "Duo (enroll)"));
    char enrollment[64], code[512];
    snprintf(enrollment, sizeof enrollment, "%s", tl_str(r, "enrollment_id"));
    snprintf(code, sizeof code, "%s", tl_str(r, "activation_code"));
    json_decref(r);

    r = status(enrollment);
    assert_string_equal(tl_str(r, "enrollment_status"), "waiting");
    json_decref(r);

    emu_enrollment(code, "complete");
    r = status(enrollment);
    assert_string_equal(tl_str(r, "status"), "ok");
    assert_string_equal(tl_str(r, "enrollment_status"), "success");
    char device[64];
    snprintf(device, sizeof device, "%s", tl_str(r, "device_id"));
    assert_true(strlen(device) == 36);
    json_decref(r);
    assert_int_equal(count("SELECT count(*) FROM duo_device WHERE name = 'Duo Authenticator' "
                           "AND confirmed"),
                     1);

    /* Asking again answers the same device and stores nothing new. */
    r = status(enrollment);
    assert_string_equal(tl_str(r, "enrollment_status"), "success");
    assert_string_equal(tl_str(r, "device_id"), device);
    json_decref(r);
    assert_int_equal(count("SELECT count(*) FROM duo_device"), 1);
}

static void test_repeated_job_id_answered_from_record(void **state)
{
    (void)state;
    char job_id[64];
    json_t *first = begin("carol", job_id, sizeof job_id);
    assert_string_equal(tl_str(first, "status"), "ok");
    /* The same job id again: the same reply, no second enrollment. */
    json_t *again =
        tl_job(&S, "enroll.begin", job_id,
               json_pack("{s:s, s:s}", "stage_uuid", S.stage_uuid, "username", "carol"), 30000);
    assert_non_null(again);
    assert_string_equal(tl_str(again, "enrollment_id"), tl_str(first, "enrollment_id"));
    /* ... and the job did not run again: no further reply, one attempt on record. */
    json_t *extra = NULL;
    err_t e = {0};
    assert_int_equal(jobs_wait(S.client, job_id, 3000, &extra, NULL, &e), 0);
    char sql[256], out[32];
    snprintf(sql, sizeof sql, "SELECT attempts FROM job WHERE job_id = '%s'", job_id);
    assert_int_equal(tl_query1(S.db, sql, out, sizeof out), 0);
    assert_string_equal(out, "1");
    assert_int_equal(count("SELECT count(*) FROM duo_enrollment e JOIN app_user u ON "
                           "u.id = e.user_id WHERE u.username = 'carol'"),
                     1);
    json_decref(first);
    json_decref(again);
}

static void test_second_device_for_duo_user_refused(void **state)
{
    (void)state;
    assert_int_equal(tl_stack_user(&S, "gina"), 0);
    char job_id[64];
    json_t *r = begin("gina", job_id, sizeof job_id);
    char enrollment[64], sql[512];
    snprintf(enrollment, sizeof enrollment, "%s", tl_str(r, "enrollment_id"));
    /* Another local user already holds a device for the Duo user this enrollment made. */
    snprintf(sql, sizeof sql,
             "INSERT INTO duo_device (user_id, stage_id, duo_user_id, name) "
             "SELECT u.id, e.stage_id, e.duo_user_id, 'Imported Duo Authenticator' "
             "FROM duo_enrollment e, app_user u WHERE e.uuid = '%s' AND u.username = 'alice'",
             enrollment);
    assert_int_equal(tl_exec(S.db, sql), 0);
    emu_enrollment(tl_str(r, "activation_code"), "complete");
    json_decref(r);
    r = status(enrollment);
    assert_string_equal(tl_str(r, "status"), "error");
    assert_string_equal(tl_code(r), "device_exists");
    json_decref(r);
}

static void test_expired_is_invalid(void **state)
{
    (void)state;
    char job_id[64];
    json_t *r = begin("bob", job_id, sizeof job_id);
    char enrollment[64];
    snprintf(enrollment, sizeof enrollment, "%s", tl_str(r, "enrollment_id"));
    emu_enrollment(tl_str(r, "activation_code"), "expire");
    json_decref(r);
    r = status(enrollment);
    assert_string_equal(tl_str(r, "enrollment_status"), "invalid");
    json_decref(r);
}

static void test_operator_errors(void **state)
{
    (void)state;
    /* A Duo user that already exists must be imported, not enrolled. */
    char body[256];
    snprintf(body, sizeof body, "{\"account\":\"%s\",\"users\":[{\"username\":\"dave\"}]}",
             S.account);
    assert_int_equal(tl_emu("POST", "/_emu/users", body, NULL, 0), 200);
    assert_int_equal(tl_stack_user(&S, "dave"), 0);
    char job_id[64];
    json_t *r = begin("dave", job_id, sizeof job_id);
    assert_string_equal(tl_str(r, "status"), "error");
    assert_string_equal(tl_code(r), "duo_user_exists");
    assert_non_null(strstr(tl_str(json_object_get(r, "error"), "message"), "import"));
    json_decref(r);

    r = begin("nobody", job_id, sizeof job_id);
    assert_string_equal(tl_code(r), "user_not_found");
    json_decref(r);

    tl_job_id(&S, job_id, sizeof job_id);
    r = tl_job(&S, "enroll.begin", job_id,
               json_pack("{s:s, s:s}", "stage_uuid", "00000000-0000-4000-8000-000000000000",
                         "username", "alice"),
               30000);
    assert_string_equal(tl_code(r), "stage_not_found");
    json_decref(r);

    tl_job_id(&S, job_id, sizeof job_id);
    r = tl_job(&S, "enroll.status", job_id,
               json_pack("{s:s, s:s}", "stage_uuid", S.stage_uuid, "enrollment_id",
                         "00000000-0000-4000-8000-000000000000"),
               30000);
    assert_string_equal(tl_code(r), "enrollment_not_found");
    json_decref(r);
}

/* Publishes raw bytes and returns the error code of the reply. */
static char *send_raw(const void *body, size_t len, const char *type, int with_id)
{
    char job_id[64];
    tl_job_id(&S, job_id, sizeof job_id);
    mq_msg m = {.routing_key = "enroll",
                .body = body,
                .body_len = len,
                .message_id = with_id ? job_id : NULL,
                .correlation_id = job_id,
                .type = type,
                .content_type = "application/msgpack"};
    err_t e = {0};
    assert_int_equal(jobs_send_raw(S.client, &m, &e), 0);
    json_t *reply = NULL;
    assert_int_equal(jobs_wait(S.client, job_id, 30000, &reply, NULL, &e), 1);
    assert_string_equal(tl_str(reply, "status"), "error");
    char *code = strdup(tl_code(reply));
    json_decref(reply);
    return code;
}

static int dead_count(void)
{
    char sql[256];
    (void)sql;
    /* Read the dead-letter queue through a consumer of the "dead" kind. */
    mq_opts o = {.urls = tl_env("AMQP_URL"),
                 .prefix = S.prefix,
                 .kinds = (const char *const[]){MQ_KIND_DEAD, NULL}};
    err_t e = {0};
    mq_conn *c = mq_open(&o, &e);
    assert_non_null(c);
    int n = 0;
    mq_delivery *d = NULL;
    while (mq_poll(c, 1500, &d, &e) == 1) {
        n++;
        mq_delivery_free(d); /* unacked: returns to the queue on close */
    }
    mq_close(c);
    return n;
}

static void test_bad_input_answered_and_dead_lettered(void **state)
{
    (void)state;
    int before = dead_count();
    static const unsigned char garbage[] = {0xc1, 0xff, 0x00, 0x13};
    char *code = send_raw(garbage, sizeof garbage, "enroll.begin", 1);
    assert_string_equal(code, "invalid_message");
    free(code);

    /* {"stage_uuid": 123, "username": "alice"}: a wrong type. */
    static const unsigned char wrong_type[] = {0x82, 0xaa, 's',  't',  'a', 'g', 'e', '_', 'u', 'u',
                                               'i',  'd',  0x7b, 0xa8, 'u', 's', 'e', 'r', 'n', 'a',
                                               'm',  'e',  0xa5, 'a',  'l', 'i', 'c', 'e'};
    code = send_raw(wrong_type, sizeof wrong_type, "enroll.begin", 1);
    assert_string_equal(code, "schema_invalid");
    free(code);

    /* {"username": "alice"}: stage_uuid missing. */
    static const unsigned char missing[] = {0x81, 0xa8, 'u',  's', 'e', 'r', 'n', 'a',
                                            'm',  'e',  0xa5, 'a', 'l', 'i', 'c', 'e'};
    code = send_raw(missing, sizeof missing, "enroll.begin", 1);
    assert_string_equal(code, "schema_invalid");
    free(code);

    size_t big = 10000; /* over MAX_MESSAGE_BYTES=4096 */
    unsigned char *huge = calloc(1, big);
    code = send_raw(huge, big, "enroll.begin", 1);
    assert_string_equal(code, "message_too_large");
    free(code);
    free(huge);

    code = send_raw(missing, sizeof missing, "enroll.nonsense", 1);
    assert_string_equal(code, "unknown_job_type");
    free(code);

    code = send_raw(missing, sizeof missing, "enroll.begin", 0);
    assert_string_equal(code, "invalid_message");
    free(code);

    assert_int_equal(dead_count() - before, 6);

    /* And the worker still serves. */
    char job_id[64];
    assert_int_equal(tl_stack_user(&S, "erin"), 0);
    json_t *r = begin("erin", job_id, sizeof job_id);
    assert_string_equal(tl_str(r, "status"), "ok");
    json_decref(r);
}

static void test_crash_between_commit_and_ack(void **state)
{
    (void)state;
    /* A second worker dies right after COMMIT, before replying; the first one is
     * stopped so the job lands on the crashing one. */
    while (S.nworkers)
        tl_stack_signal(&S, S.workers[0], SIGTERM);
    static const char *const fault[] = {"DUO_FAULT_POINT=after_commit", NULL};
    pid_t crashing = tl_stack_worker(&S, "enroll", fault);
    assert_int_equal(tl_stack_user(&S, "frank"), 0);
    char job_id[64];
    tl_job_id(&S, job_id, sizeof job_id);
    err_t e = {0};
    json_t *body = json_pack("{s:s, s:s}", "stage_uuid", S.stage_uuid, "username", "frank");
    assert_int_equal(jobs_send(S.client, "enroll.begin", job_id, body, &e), 0);
    json_decref(body);
    int status = 0;
    assert_int_equal(waitpid(crashing, &status, 0), crashing);
    tl_stack_signal(&S, crashing, SIGKILL);
    assert_int_equal(count("SELECT count(*) FROM job WHERE state = 'done'") > 0, 1);

    /* A healthy worker takes the redelivery: the stored reply, no second enrollment. */
    tl_stack_worker(&S, "enroll", NULL);
    json_t *r = NULL;
    assert_int_equal(jobs_wait(S.client, job_id, 30000, &r, NULL, &e), 1);
    assert_string_equal(tl_str(r, "status"), "ok");
    json_decref(r);
    assert_int_equal(count("SELECT count(*) FROM duo_enrollment e JOIN app_user u ON "
                           "u.id = e.user_id WHERE u.username = 'frank'"),
                     1);
}

static long long emu_requests(const char *path)
{
    return tl_emu_requests(S.account, path);
}

/* Replaces the stack's workers with one enrollment worker with extra environment. */
static pid_t only_worker(const char *const *env)
{
    while (S.nworkers)
        tl_stack_signal(&S, S.workers[0], SIGTERM);
    return tl_stack_worker(&S, "enroll", env);
}

static void test_rerun_after_duo_acted_does_not_enroll_again(void **state)
{
    (void)state;
    /* The worker dies after Duo created the activation and before it was recorded (as a
     * database outage there would leave it). The rerun must not call enroll again: Duo
     * would make a second activation, or answer duo_user_exists for this very user. */
    static const char *const fault[] = {"DUO_FAULT_POINT=enroll_after_duo", NULL};
    pid_t crashing = only_worker(fault);
    assert_int_equal(tl_stack_user(&S, "quinn"), 0);
    long long before = emu_requests("/auth/v2/enroll");
    char job_id[64];
    tl_job_id(&S, job_id, sizeof job_id);
    err_t e = {0};
    json_t *body = json_pack("{s:s, s:s}", "stage_uuid", S.stage_uuid, "username", "quinn");
    assert_int_equal(jobs_send(S.client, "enroll.begin", job_id, body, &e), 0);
    json_decref(body);
    int exited = 0;
    for (int i = 0; i < 300 && !exited; i++) {
        exited = waitpid(crashing, NULL, WNOHANG) == crashing;
        if (!exited)
            usleep(100 * 1000);
    }
    tl_stack_signal(&S, crashing, SIGKILL); /* kills it if it lived on; forgets it */
    assert_true(exited);
    assert_int_equal(emu_requests("/auth/v2/enroll"), before + 1);

    tl_stack_worker(&S, "enroll", NULL);
    json_t *r = NULL;
    assert_int_equal(jobs_wait(S.client, job_id, 30000, &r, NULL, &e), 1);
    assert_string_equal(tl_code(r), "enroll_outcome_unknown");
    json_decref(r);
    assert_int_equal(emu_requests("/auth/v2/enroll"), before + 1);
    /* An attempt that never reached Duo is forgotten: a later job for quinn calls again. */
    char again[64];
    r = begin("quinn", again, sizeof again);
    assert_non_null(r);
    assert_string_equal(tl_code(r), "duo_user_exists"); /* Duo made quinn the first time */
    json_decref(r);
}

static void test_redelivered_twin_of_a_pending_job_runs_once(void **state)
{
    (void)state;
    /* A job still waiting for Duo when the broker connection is re-made comes back as a
     * redelivery to the same process; the session's claim lock would let it run beside
     * the first copy. */
    static const char *const fault[] = {"DUO_FAULT_POINT=reconnect_while_pending", NULL};
    assert_int_equal(tl_stack_user(&S, "rosa"), 0);
    char id[64];
    json_t *r = begin("rosa", id, sizeof id);
    assert_string_equal(tl_str(r, "status"), "ok");
    char enrollment[64];
    snprintf(enrollment, sizeof enrollment, "%s", tl_str(r, "enrollment_id"));
    json_decref(r);
    only_worker(fault);
    char body[512];
    snprintf(body, sizeof body,
             "{\"account\":\"%s\",\"path_prefix\":\"/auth/v2/enroll_status\","
             "\"latency_ms\":2500,\"count\":1}",
             S.account);
    assert_int_equal(tl_emu("POST", "/_emu/faults", body, NULL, 0), 200);
    long long before = emu_requests("/auth/v2/enroll_status");
    r = status(enrollment);
    assert_non_null(r);
    assert_string_equal(tl_str(r, "enrollment_status"), "waiting");
    json_decref(r);
    sleep(4); /* the first call is answered (2.5 s), the twin answered from the record */
    assert_int_equal(emu_requests("/auth/v2/enroll_status"), before + 1);
    only_worker(NULL);
}

/* GETs http://127.0.0.1:<METRICS_PORT><path> into out; returns the HTTP status. */
static int http_get(const char *path, char *out, size_t n)
{
    char cmd[256];
    snprintf(cmd, sizeof cmd, "curl -s -o /dev/stdout -w '\\n%%{http_code}' http://127.0.0.1:%s%s",
             strchr(metrics_port, '=') + 1, path);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    size_t got = fread(out, 1, n - 1, p);
    out[got] = '\0';
    pclose(p);
    char *last = strrchr(out, '\n');
    return last ? (int)strtol(last + 1, NULL, 10) : -1;
}

static void test_metrics_and_health(void **state)
{
    (void)state;
    static char page[65536];
    assert_int_equal(http_get("/healthz", page, sizeof page), 200);
    assert_non_null(strstr(page, "\"rabbitmq\":true"));
    assert_int_equal(http_get("/metrics", page, sizeof page), 200);
    /* Earlier tests ran begin jobs, bad input and Duo calls through this worker. */
    assert_non_null(strstr(page, "duo_jobs_total{type=\"enroll.begin\",outcome=\"ok\"}"));
    assert_non_null(strstr(page, "outcome=\"duo_user_exists\"}"));
    assert_non_null(strstr(page, "duo_dead_letters_total{}"));
    assert_non_null(strstr(page, "duo_api_seconds_bucket{call=\"enroll\",le=\"+Inf\"}"));
    assert_non_null(strstr(page, "duo_up{dependency=\"postgres\"} 1"));
    assert_int_equal(http_get("/nothing", page, sizeof page), 404);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_enroll_end_to_end),
        cmocka_unit_test(test_repeated_job_id_answered_from_record),
        cmocka_unit_test(test_expired_is_invalid),
        cmocka_unit_test(test_second_device_for_duo_user_refused),
        cmocka_unit_test(test_operator_errors),
        cmocka_unit_test(test_bad_input_answered_and_dead_lettered),
        cmocka_unit_test(test_metrics_and_health),
        cmocka_unit_test(test_crash_between_commit_and_ack),
        cmocka_unit_test(test_rerun_after_duo_acted_does_not_enroll_again),
        cmocka_unit_test(test_redelivered_twin_of_a_pending_job_runs_once),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
