/* test_restart_serial.c - the runtime through the failures operators fear, against the
 * shared local services (so it runs alone): RabbitMQ restarted while jobs flow, PostgreSQL
 * restarted between jobs, heartbeats kept while a job waits on a slow Duo, and SIGTERM
 * letting the job in hand finish. Nothing may be lost: every job gets its reply. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "testlib.h"
#include "tl_stack.h"

static tl_stack S;

static int setup(void **state)
{
    (void)state;
    setenv("AMQP_HEARTBEAT_SECS", "2", 1);
    if (tl_stack_init(&S, "restart", 0) < 0)
        return -1;
    return tl_stack_worker(&S, "enroll", NULL) > 0 ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    tl_stack_fini(&S);
    return 0;
}

static void services(const char *what)
{
    char cmd[600];
    snprintf(cmd, sizeof cmd, "%s/scripts/services.sh %s >/dev/null 2>&1", tl_env("DUO_SOURCE_DIR"),
             what);
    assert_int_equal(system(cmd), 0);
}

static json_t *body_for(const char *user)
{
    return json_pack("{s:s, s:s}", "stage_uuid", S.stage_uuid, "username", user);
}

/* Sends n begin jobs (users u<i>) and returns how many got an ok reply. */
static int send_and_collect(jobs_client *c, const char *prefix, int n, int restart_at,
                            const char *restart)
{
    char ids[64][64];
    err_t e = {0};
    for (int i = 0; i < n; i++) {
        char user[64];
        snprintf(user, sizeof user, "%s%d", prefix, i);
        assert_int_equal(tl_stack_user(&S, user), 0);
        tl_job_id(&S, ids[i], sizeof ids[i]);
        json_t *b = body_for(user);
        while (jobs_send(c, "enroll.begin", ids[i], b, &e) < 0) /* broker may be down */
            sleep(1);
        json_decref(b);
        if (i == restart_at)
            services(restart);
    }
    int ok = 0;
    for (int i = 0; i < n; i++) {
        json_t *r = NULL;
        if (jobs_wait(c, ids[i], 90000, &r, NULL, &e) == 1 &&
            strcmp(tl_str(r, "status"), "ok") == 0)
            ok++;
        json_decref(r);
    }
    return ok;
}

static void test_broker_restart_loses_nothing(void **state)
{
    (void)state;
    /* The test's private reply queue dies with its connection, so the durable record of
     * each job (the job table) is what is checked here. */
    err_t e = {0};
    jobs_client *c = jobs_client_open(tl_env("AMQP_URL"), S.prefix, NULL, &e);
    assert_non_null(c);
    char ids[20][64];
    for (int i = 0; i < 20; i++) {
        char user[32];
        snprintf(user, sizeof user, "mq%d", i);
        assert_int_equal(tl_stack_user(&S, user), 0);
        tl_job_id(&S, ids[i], sizeof ids[i]);
        json_t *b = body_for(user);
        assert_int_equal(jobs_send(c, "enroll.begin", ids[i], b, &e), 0);
        json_decref(b);
        if (i == 9) {
            jobs_client_close(c);
            services("restart-mq");
            c = jobs_client_open(tl_env("AMQP_URL"), S.prefix, NULL, &e);
            assert_non_null(c);
        }
    }
    jobs_client_close(c);
    /* The worker reconnected by itself and still answers. */
    jobs_client_close(S.client);
    S.client = jobs_client_open(tl_env("AMQP_URL"), S.prefix, "#", &e);
    assert_non_null(S.client);
    /* Every job committed exactly once (quorum queues kept them through the restart). */
    char out[32] = "";
    for (int tries = 0; tries < 180; tries++) {
        assert_int_equal(tl_query1(S.db,
                                   "SELECT count(*) FROM duo_enrollment e JOIN app_user u "
                                   "ON u.id = e.user_id WHERE u.username LIKE 'mq%'",
                                   out, sizeof out),
                         0);
        if (strtol(out, NULL, 10) >= 20)
            break;
        sleep(1);
    }
    assert_string_equal(out, "20");
    assert_int_equal(send_and_collect(S.client, "after", 3, -1, NULL), 3);
}

static void test_postgres_restart(void **state)
{
    (void)state;
    assert_int_equal(send_and_collect(S.client, "pg", 6, 2, "restart-pg"), 6);
}

static void test_heartbeats_during_slow_duo(void **state)
{
    (void)state;
    /* Duo takes 7 s (over three 2-second heartbeat intervals) to answer. */
    char body[256];
    snprintf(body, sizeof body,
             "{\"account\":\"%s\",\"path_prefix\":\"/auth/v2/enroll\","
             "\"count\":1,\"latency_ms\":7000}",
             S.account);
    int st = tl_emu("POST", "/_emu/faults", body, NULL, 0);
    assert_int_equal(st, 200);
    assert_int_equal(send_and_collect(S.client, "slow", 1, -1, NULL), 1);
    /* No reconnect happened: the worker's log has no lost connection. */
    char cmd[800], out[32];
    snprintf(cmd, sizeof cmd, "cat %s/%s-enroll-*.log | grep -c 'connection lost'", S.logdir,
             S.prefix);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    assert_non_null(fgets(out, sizeof out, p));
    pclose(p);
    assert_int_equal(strtol(out, NULL, 10), 0);
}

static void test_sigterm_finishes_job_in_hand(void **state)
{
    (void)state;
    char body[256];
    snprintf(body, sizeof body,
             "{\"account\":\"%s\",\"path_prefix\":\"/auth/v2/enroll\","
             "\"count\":1,\"latency_ms\":3000}",
             S.account);
    assert_int_equal(tl_emu("POST", "/_emu/faults", body, NULL, 0), 200);
    assert_int_equal(tl_stack_user(&S, "term"), 0);
    char id[64];
    tl_job_id(&S, id, sizeof id);
    err_t e = {0};
    json_t *b = body_for("term");
    assert_int_equal(jobs_send(S.client, "enroll.begin", id, b, &e), 0);
    json_decref(b);
    sleep(1); /* the job is now waiting on Duo */
    pid_t w = S.workers[S.nworkers - 1];
    kill(w, SIGTERM);
    int status = 0;
    assert_int_equal(waitpid(w, &status, 0), w);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    S.nworkers--;
    json_t *r = NULL;
    assert_int_equal(jobs_wait(S.client, id, 10000, &r, NULL, &e), 1);
    assert_string_equal(tl_str(r, "status"), "ok");
    json_decref(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_heartbeats_during_slow_duo),
        cmocka_unit_test(test_postgres_restart),
        cmocka_unit_test(test_broker_restart_loses_nothing),
        cmocka_unit_test(test_sigterm_finishes_job_in_hand),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
