/* test_mq_identity.c - the broker identities of scripts/mq-definitions.py, on a throwaway
 * vhost of the local RabbitMQ: the worker user declares the project's topology and
 * consumes its queues but nothing outside its prefix; an upstream publisher user publishes
 * jobs and reads its replies, and is refused (403) when it tries to consume a work queue,
 * declare the topology or publish a reply; the broker-validated user_id of each job names
 * its publisher and cannot be forged; guest cannot log in at all. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "jobs_client.h"
#include "mq.h"
#include "testlib.h"

static char prefix[96], vhost[128], worker_url[512], publisher_url[512], hostport[128];
static const char *const enroll_only[] = {MQ_KIND_ENROLL, NULL};

static int mqctl(const char *args)
{
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "%s/scripts/services.sh mqctl %s >/dev/null",
             tl_env("DUO_SOURCE_DIR"), args);
    return system(cmd);
}

/* host:port of the local broker, from the administrator's URL services.sh prints. */
static void broker_address(void)
{
    const char *admin = tl_env("DUO_MQ_ADMIN_URL");
    const char *at = strrchr(admin, '@');
    assert_non_null(at);
    snprintf(hostport, sizeof hostport, "%.*s", (int)strcspn(at + 1, "/"), at + 1);
}

static int setup(void **state)
{
    (void)state;
    tl_unique_prefix("idt", prefix, sizeof prefix);
    snprintf(vhost, sizeof vhost, "v%s", prefix);
    broker_address();
    char defs[256], cmd[2048];
    snprintf(defs, sizeof defs, "/tmp/%s.json", prefix);
    snprintf(cmd, sizeof cmd,
             "python3 %s/scripts/mq-definitions.py --vhost %s --prefix %s --worker %s-w:pw1 "
             "--publisher %s-p:pw2 > %s",
             tl_env("DUO_SOURCE_DIR"), vhost, prefix, prefix, prefix, defs);
    if (system(cmd) != 0)
        return -1;
    char args[512];
    snprintf(args, sizeof args, "import_definitions %s", defs);
    int rc = mqctl(args);
    unlink(defs);
    snprintf(worker_url, sizeof worker_url, "amqp://%s-w:pw1@%s/%s", prefix, hostport, vhost);
    snprintf(publisher_url, sizeof publisher_url, "amqp://%s-p:pw2@%s/%s", prefix, hostport, vhost);
    return rc == 0 ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    char args[512];
    snprintf(args, sizeof args, "delete_vhost %s", vhost);
    mqctl(args);
    snprintf(args, sizeof args, "delete_user %s-w", prefix);
    mqctl(args);
    snprintf(args, sizeof args, "delete_user %s-p", prefix);
    mqctl(args);
    return 0;
}

static mq_conn *open_worker(void)
{
    mq_opts o = {.urls = worker_url, .prefix = prefix, .kinds = enroll_only};
    o.retry_ms[0] = 200, o.retry_ms[1] = 300, o.retry_ms[2] = 400;
    err_t e = {0};
    mq_conn *c = mq_open(&o, &e);
    if (!c)
        fail_msg("worker user: %s", e.msg);
    return c;
}

/* The publisher sends a job, the worker user receives it from P.enroll and replies
 * through the default exchange, the publisher reads the reply on its own queue. */
static void test_publisher_round_trip(void **state)
{
    (void)state;
    mq_conn *w = open_worker();
    err_t e = {0};
    jobs_client *p = jobs_client_open_ex(publisher_url, prefix, NULL, NULL, 0, &e);
    if (!p)
        fail_msg("publisher: %s", e.msg);
    json_t *body = json_pack("{s:s}", "username", "alice");
    assert_int_equal(jobs_send(p, "enroll.begin", "idt-job-1", body, &e), 0);
    json_decref(body);
    mq_delivery *d = NULL;
    assert_int_equal(mq_poll(w, 10000, &d, &e), 1);
    assert_string_equal(d->message_id, "idt-job-1");
    /* The client stamps its broker user; the broker let it through because it is true. */
    char who[160];
    snprintf(who, sizeof who, "%s-p", prefix);
    assert_non_null(d->user_id);
    assert_string_equal(d->user_id, who);
    static const char reply[] = "\x81\xa6status\xa2ok"; /* msgpack {"status":"ok"} */
    mq_msg m = {.body = reply,
                .body_len = sizeof reply - 1,
                .type = "enroll.begin",
                .content_type = "application/msgpack"};
    uint64_t seq = 0;
    assert_int_equal(mq_reply(w, d, &m, &seq, &e), 0);
    assert_int_equal(mq_wait_confirm(w, seq, 5000, &e), 0);
    assert_int_equal(mq_ack(w, d, &e), 0);
    mq_delivery_free(d);
    json_t *r = NULL;
    assert_int_equal(jobs_wait(p, "idt-job-1", 10000, &r, NULL, &e), 1);
    assert_string_equal(json_string_value(json_object_get(r, "status")), "ok");
    json_decref(r);
    jobs_client_close(p);
    mq_close(w);
}

static void assert_refused(const err_t *e, const char *what)
{
    if (!strstr(e->msg, "403") && !strstr(e->msg, "ACCESS_REFUSED"))
        fail_msg("%s: expected ACCESS_REFUSED, got: %s", what, e->msg);
}

static void test_publisher_cannot_consume(void **state)
{
    (void)state;
    mq_conn *w = open_worker(); /* the queues exist */
    mq_opts o = {.urls = publisher_url, .prefix = prefix, .kinds = enroll_only, .no_topology = 1};
    err_t e = {0};
    mq_conn *c = mq_open(&o, &e);
    assert_null(c);
    assert_refused(&e, "publisher consuming P.enroll");
    mq_close(w);
}

static void test_publisher_cannot_declare_or_reply(void **state)
{
    (void)state;
    mq_conn *w = open_worker();
    err_t e = {0};
    /* Declaring the topology needs configure rights on P.*. */
    assert_null(jobs_client_open_ex(publisher_url, prefix, NULL, NULL, 1, &e));
    assert_refused(&e, "publisher declaring the topology");
    /* Publishing a forged reply to P.results needs write on it. */
    memset(&e, 0, sizeof e);
    jobs_client *p = jobs_client_open_ex(publisher_url, prefix, NULL, NULL, 0, &e);
    assert_non_null(p);
    char results[160];
    snprintf(results, sizeof results, "%s.results", prefix);
    mq_msg m = {.exchange = results,
                .routing_key = "auth",
                .body = "x",
                .body_len = 1,
                .message_id = "forged"};
    assert_true(jobs_send_raw(p, &m, &e) < 0);
    assert_refused(&e, "publisher writing P.results");
    jobs_client_close(p);
    mq_close(w);
}

/* A job stamped with the publisher's user_id goes through a delayed retry (republished
 * by the worker's own user) and comes back: the copy must not carry the publisher's
 * user_id, which the broker would refuse from the worker, closing its channel. */
static void test_retry_of_a_stamped_job(void **state)
{
    (void)state;
    mq_conn *w = open_worker();
    err_t e = {0};
    jobs_client *p = jobs_client_open_ex(publisher_url, prefix, NULL, NULL, 0, &e);
    assert_non_null(p);
    json_t *body = json_pack("{s:s}", "username", "bob");
    assert_int_equal(jobs_send(p, "enroll.begin", "idt-retry", body, &e), 0);
    json_decref(body);
    mq_delivery *d = NULL;
    assert_int_equal(mq_poll(w, 10000, &d, &e), 1);
    assert_non_null(d->user_id);
    if (mq_retry(w, d, 1, 5000, &e) < 0)
        fail_msg("retrying a stamped job: %s", e.msg);
    mq_delivery_free(d);
    d = NULL;
    assert_int_equal(mq_poll(w, 10000, &d, &e), 1);
    assert_string_equal(d->message_id, "idt-retry");
    assert_int_equal(d->attempt, 1);
    assert_int_equal(mq_ack(w, d, &e), 0);
    assert_false(mq_is_broken(w));
    mq_delivery_free(d);
    jobs_client_close(p);
    mq_close(w);
}

/* A publisher cannot pass itself off as another user: the broker refuses the user_id. */
static void test_forged_user_id_refused(void **state)
{
    (void)state;
    mq_conn *w = open_worker();
    err_t e = {0};
    jobs_client *p = jobs_client_open_ex(publisher_url, prefix, NULL, NULL, 0, &e);
    assert_non_null(p);
    char routing[] = MQ_KIND_ENROLL;
    mq_msg m = {.routing_key = routing,
                .body = "x",
                .body_len = 1,
                .message_id = "forged-user",
                .type = "enroll.begin",
                .user_id = "duo-admin"};
    assert_true(jobs_send_raw(p, &m, &e) < 0);
    if (!strstr(e.msg, "406") && !strstr(e.msg, "user_id"))
        fail_msg("expected PRECONDITION_FAILED for a forged user_id, got: %s", e.msg);
    jobs_client_close(p);
    mq_close(w);
}

static void test_worker_user_stays_in_its_prefix(void **state)
{
    (void)state;
    char other[128];
    snprintf(other, sizeof other, "x%s", prefix);
    mq_opts o = {.urls = worker_url, .prefix = other, .kinds = enroll_only};
    err_t e = {0};
    assert_null(mq_open(&o, &e));
    assert_refused(&e, "worker user declaring another prefix");
}

static void test_guest_refused(void **state)
{
    (void)state;
    char url[256];
    snprintf(url, sizeof url, "amqp://guest:guest@%s/", hostport);
    mq_opts o = {.urls = url, .prefix = prefix, .rpc_timeout_ms = 5000};
    err_t e = {0};
    assert_null(mq_open(&o, &e));
    assert_refused(&e, "guest");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_publisher_round_trip),
        cmocka_unit_test(test_publisher_cannot_consume),
        cmocka_unit_test(test_publisher_cannot_declare_or_reply),
        cmocka_unit_test(test_retry_of_a_stamped_job),
        cmocka_unit_test(test_forged_user_id_refused),
        cmocka_unit_test(test_worker_user_stays_in_its_prefix),
        cmocka_unit_test(test_guest_refused),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
