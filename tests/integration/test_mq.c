/* test_mq.c - the AMQP transport against the real local RabbitMQ ($AMQP_URL): topology,
 * round trips with every property, confirms, dead letters, retry tiers, prefetch,
 * oversized bodies, redelivery after close, heartbeats. Each test uses its own prefix
 * and deletes its queues and exchanges at the end. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "mq.h"
#include "testlib.h"

typedef struct fixture {
    char prefix[96];
    mq_opts o;
} fixture;

static const char *const enroll_only[] = {MQ_KIND_ENROLL, NULL};
static const char *const dead_only[] = {MQ_KIND_DEAD, NULL};

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    tl_unique_prefix("mq", f->prefix, sizeof f->prefix);
    f->o.urls = tl_env("AMQP_URL");
    f->o.prefix = f->prefix;
    f->o.kinds = enroll_only;
    f->o.heartbeat_secs = 10;
    f->o.prefetch = 50;
    f->o.retry_ms[0] = 200;
    f->o.retry_ms[1] = 300;
    f->o.retry_ms[2] = 400;
    f->o.conn_name = "test_mq";
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    mq_opts o = f->o;
    o.kinds = NULL;
    err_t e = {0};
    mq_conn *c = mq_open(&o, &e);
    if (c)
        mq_delete_topology(c, &e);
    mq_close(c);
    free(f);
    return 0;
}

static mq_conn *open_ok(const mq_opts *o)
{
    err_t e = {0};
    mq_conn *c = mq_open(o, &e);
    if (!c)
        fail_msg("mq_open: %s", e.msg);
    return c;
}

static void publish_job(mq_conn *c, const char *prefix, const char *id, const void *body,
                        size_t len)
{
    char ex[128];
    snprintf(ex, sizeof ex, "%s.jobs", prefix);
    mq_msg m = {.exchange = ex,
                .routing_key = MQ_KIND_ENROLL,
                .body = body,
                .body_len = len,
                .message_id = id,
                .correlation_id = "corr-1",
                .type = "enroll.begin",
                .content_type = "application/msgpack",
                .reply_to = "some.reply.queue"};
    uint64_t seq = 0;
    err_t e = {0};
    if (mq_publish(c, &m, &seq, &e) < 0 || mq_wait_confirm(c, seq, 5000, &e) < 0)
        fail_msg("publish: %s", e.msg);
}

/* Polls until a delivery arrives or 10 s pass (a generous bound, not a timing assert). */
static mq_delivery *next(mq_conn *c)
{
    mq_delivery *d = NULL;
    err_t e = {0};
    int rc = mq_poll(c, 10000, &d, &e);
    if (rc < 0)
        fail_msg("mq_poll: %s", e.msg);
    if (rc == 0)
        fail_msg("no delivery within 10 s");
    return d;
}

static void test_topology_twice(void **state)
{
    fixture *f = *state;
    mq_conn *a = open_ok(&f->o);
    mq_conn *b = open_ok(&f->o);
    assert_false(mq_is_broken(a));
    assert_false(mq_is_broken(b));
    assert_true(mq_fd(a) >= 0);
    mq_close(a);
    mq_close(b);
}

static void test_round_trip_properties(void **state)
{
    fixture *f = *state;
    mq_conn *c = open_ok(&f->o);
    const unsigned char body[] = {0x81, 0xa1, 'k', 0x00, 0xff};
    publish_job(c, f->prefix, "job-1", body, sizeof body);
    mq_delivery *d = next(c);
    assert_int_equal(d->body_len, sizeof body);
    assert_memory_equal(d->body, body, sizeof body);
    assert_string_equal(d->message_id, "job-1");
    assert_string_equal(d->correlation_id, "corr-1");
    assert_string_equal(d->type, "enroll.begin");
    assert_string_equal(d->content_type, "application/msgpack");
    assert_string_equal(d->reply_to, "some.reply.queue");
    assert_string_equal(d->kind, MQ_KIND_ENROLL);
    assert_string_equal(d->routing_key, MQ_KIND_ENROLL);
    assert_int_equal(d->attempt, 0);
    assert_int_equal(d->redelivered, 0);
    assert_int_equal(d->too_large, 0);
    err_t e = {0};
    assert_int_equal(mq_ack(c, d, &e), 0);
    mq_delivery_free(d);
    mq_close(c);
}

static void test_missing_properties_are_null(void **state)
{
    fixture *f = *state;
    mq_conn *c = open_ok(&f->o);
    mq_msg m = {.exchange = mq_jobs_exchange(c), .routing_key = MQ_KIND_ENROLL};
    uint64_t seq;
    err_t e = {0};
    assert_int_equal(mq_publish(c, &m, &seq, &e), 0);
    mq_delivery *d = next(c);
    assert_null(d->message_id);
    assert_null(d->type);
    assert_null(d->reply_to);
    assert_null(d->correlation_id);
    assert_null(d->content_type);
    assert_null(d->body);
    assert_int_equal(d->body_len, 0);
    assert_int_equal(mq_ack(c, d, &e), 0);
    mq_delivery_free(d);
    mq_close(c);
}

static void test_hundred_confirms(void **state)
{
    fixture *f = *state;
    mq_opts o = f->o;
    o.kinds = NULL;
    mq_conn *c = open_ok(&o);
    uint64_t seqs[100];
    err_t e = {0};
    for (int i = 0; i < 100; i++) {
        mq_msg m = {
            .exchange = mq_results_exchange(c), .routing_key = "x", .body = "r", .body_len = 1};
        assert_int_equal(mq_publish(c, &m, &seqs[i], &e), 0);
        if (i)
            assert_true(seqs[i] > seqs[i - 1]);
    }
    assert_int_equal(mq_wait_confirm(c, seqs[99], 10000, &e), 0);
    for (int i = 0; i < 100; i++) {
        int st = mq_confirmed(c, seqs[i]);
        while (st == 0 && mq_wait_confirm(c, seqs[i], 10000, &e) == 0)
            st = mq_confirmed(c, seqs[i]);
        assert_int_equal(st, 1);
    }
    mq_close(c);
}

/* Deliveries that arrive while waiting for a confirm are queued, not lost. */
static void test_deliveries_during_confirm_wait(void **state)
{
    fixture *f = *state;
    mq_opts po = f->o;
    po.kinds = NULL;
    mq_conn *pub = open_ok(&po);
    mq_conn *c = open_ok(&f->o);
    for (int i = 0; i < 5; i++)
        publish_job(pub, f->prefix, "job-w", "b", 1);
    err_t e = {0};
    /* Pump on c only through confirm waits until all five are queued inside it. */
    for (int round = 0; round < 100 && mq_pending_deliveries(c) < 5; round++) {
        mq_msg m = {
            .exchange = mq_results_exchange(c), .routing_key = "x", .body = "r", .body_len = 1};
        uint64_t seq;
        assert_int_equal(mq_publish(c, &m, &seq, &e), 0);
        assert_int_equal(mq_wait_confirm(c, seq, 5000, &e), 0);
        assert_int_equal(mq_service(c, &e), 0);
    }
    assert_int_equal(mq_pending_deliveries(c), 5);
    for (int i = 0; i < 5; i++) {
        mq_delivery *d = NULL;
        assert_int_equal(mq_poll(c, 0, &d, &e), 1);
        assert_string_equal(d->message_id, "job-w");
        assert_int_equal(mq_ack(c, d, &e), 0);
        mq_delivery_free(d);
    }
    mq_close(c);
    mq_close(pub);
}

static void test_reject_lands_in_dead(void **state)
{
    fixture *f = *state;
    mq_conn *c = open_ok(&f->o);
    publish_job(c, f->prefix, "job-dead", "poison", 6);
    mq_delivery *d = next(c);
    err_t e = {0};
    assert_int_equal(mq_dead_letter(c, d, "test", &e), 0);
    mq_delivery_free(d);
    mq_opts o = f->o;
    o.kinds = dead_only;
    mq_conn *dc = open_ok(&o);
    d = next(dc);
    assert_string_equal(d->message_id, "job-dead");
    assert_string_equal(d->correlation_id, "corr-1");
    assert_string_equal(d->reply_to, "some.reply.queue");
    assert_string_equal(d->type, "enroll.begin");
    assert_int_equal(d->body_len, 6);
    assert_memory_equal(d->body, "poison", 6);
    assert_int_equal(mq_ack(dc, d, &e), 0);
    mq_delivery_free(d);
    mq_close(dc);
    mq_close(c);
}

static void test_retry_tier_returns_with_attempt(void **state)
{
    fixture *f = *state;
    mq_conn *c = open_ok(&f->o);
    publish_job(c, f->prefix, "job-retry", "again", 5);
    mq_delivery *d = next(c);
    assert_int_equal(d->attempt, 0);
    err_t e = {0};
    for (int attempt = 1; attempt <= 3; attempt++) {
        if (mq_retry(c, d, d->attempt + 1, 5000, &e) < 0)
            fail_msg("mq_retry: %s", e.msg);
        mq_delivery_free(d);
        d = next(c);
        assert_int_equal(d->attempt, attempt);
        assert_string_equal(d->message_id, "job-retry");
        assert_string_equal(d->correlation_id, "corr-1");
        assert_string_equal(d->reply_to, "some.reply.queue");
        assert_string_equal(d->content_type, "application/msgpack");
        assert_int_equal(d->body_len, 5);
        assert_memory_equal(d->body, "again", 5);
    }
    assert_int_equal(mq_ack(c, d, &e), 0);
    mq_delivery_free(d);
    mq_close(c);
}

static void test_prefetch_honoured(void **state)
{
    fixture *f = *state;
    mq_opts po = f->o;
    po.kinds = NULL;
    mq_conn *pub = open_ok(&po);
    for (int i = 0; i < 10; i++)
        publish_job(pub, f->prefix, "job-p", "p", 1);
    mq_opts o = f->o;
    o.prefetch = 3;
    mq_conn *c = open_ok(&o);
    mq_delivery *got[10];
    int n = 0;
    err_t e = {0};
    mq_delivery *d;
    while (n < 10 && mq_poll(c, 1500, &d, &e) == 1)
        got[n++] = d;
    assert_int_equal(n, 3);
    for (int i = 0; i < n; i++) {
        assert_int_equal(mq_ack(c, got[i], &e), 0);
        mq_delivery_free(got[i]);
    }
    int rest = 0;
    while (rest < 7 && mq_poll(c, 5000, &d, &e) == 1) {
        assert_int_equal(mq_ack(c, d, &e), 0);
        mq_delivery_free(d);
        rest++;
    }
    assert_int_equal(rest, 7);
    mq_close(c);
    mq_close(pub);
}

static void test_oversized_flagged(void **state)
{
    fixture *f = *state;
    mq_opts o = f->o;
    o.max_message_bytes = 1000;
    mq_conn *c = open_ok(&o);
    size_t big = 300000; /* several body frames */
    char *body = malloc(big);
    memset(body, 'x', big);
    publish_job(c, f->prefix, "job-big", body, big);
    publish_job(c, f->prefix, "job-small", body, 1000);
    free(body);
    mq_delivery *d = next(c);
    assert_string_equal(d->message_id, "job-big");
    assert_int_equal(d->too_large, 1);
    assert_null(d->body);
    assert_int_equal(d->body_size, big);
    err_t e = {0};
    assert_int_equal(mq_dead_letter(c, d, "too large", &e), 0);
    mq_delivery_free(d);
    d = next(c);
    assert_string_equal(d->message_id, "job-small");
    assert_int_equal(d->too_large, 0);
    assert_int_equal(d->body_len, 1000);
    assert_int_equal(mq_ack(c, d, &e), 0);
    mq_delivery_free(d);
    mq_close(c);
}

static void test_close_with_unacked_redelivers(void **state)
{
    fixture *f = *state;
    mq_conn *c = open_ok(&f->o);
    publish_job(c, f->prefix, "job-r", "r", 1);
    mq_delivery *d = next(c);
    assert_int_equal(d->redelivered, 0);
    mq_close(c); /* d stays valid: it owns its data */
    assert_string_equal(d->message_id, "job-r");
    mq_conn *c2 = open_ok(&f->o);
    err_t e = {0};
    assert_true(mq_ack(c2, d, &e) < 0); /* a delivery of another connection is refused */
    mq_delivery_free(d);
    d = next(c2);
    assert_string_equal(d->message_id, "job-r");
    assert_int_equal(d->redelivered, 1);
    assert_int_equal(mq_ack(c2, d, &e), 0);
    mq_delivery_free(d);
    mq_close(c2);
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static void test_heartbeats_serviced(void **state)
{
    fixture *f = *state;
    mq_opts o = f->o;
    o.heartbeat_secs = 2;
    mq_conn *c = open_ok(&o);
    err_t e = {0};
    for (int i = 0; i < 35; i++) {
        sleep_ms(200);
        if (mq_service(c, &e) < 0)
            fail_msg("mq_service: %s", e.msg);
    }
    publish_job(c, f->prefix, "job-hb", "h", 1);
    mq_delivery *d = next(c);
    assert_string_equal(d->message_id, "job-hb");
    assert_int_equal(mq_ack(c, d, &e), 0);
    mq_delivery_free(d);
    mq_close(c);
}

static void test_reconnect(void **state)
{
    fixture *f = *state;
    mq_conn *c = open_ok(&f->o);
    publish_job(c, f->prefix, "job-rc", "r", 1);
    mq_delivery *d = next(c);
    err_t e = {0};
    assert_int_equal(mq_reconnect(c, 10000, &e), 0);
    assert_true(mq_ack(c, d, &e) < 0);
    mq_delivery_free(d);
    d = next(c);
    assert_string_equal(d->message_id, "job-rc");
    assert_int_equal(d->redelivered, 1);
    assert_int_equal(mq_ack(c, d, &e), 0);
    mq_delivery_free(d);
    mq_close(c);
}

static void test_reply_routing(void **state)
{
    fixture *f = *state;
    mq_opts o = f->o;
    o.kinds = (const char *const[]){MQ_KIND_AUTH, NULL};
    mq_conn *c = open_ok(&o);
    /* A job whose reply_to is the auth work queue, so the reply can be read back. */
    char rq[128];
    snprintf(rq, sizeof rq, "%s.auth", f->prefix);
    mq_msg job = {.exchange = mq_jobs_exchange(c),
                  .routing_key = MQ_KIND_AUTH,
                  .message_id = "j1",
                  .correlation_id = "c9",
                  .reply_to = rq,
                  .body = "x",
                  .body_len = 1};
    uint64_t seq;
    err_t e = {0};
    assert_int_equal(mq_publish(c, &job, &seq, &e), 0);
    mq_delivery *d = next(c);
    mq_msg r = {.body = "ok", .body_len = 2, .type = "auth.result", .message_id = "r1"};
    assert_int_equal(mq_reply(c, d, &r, &seq, &e), 0);
    assert_int_equal(mq_wait_confirm(c, seq, 5000, &e), 0);
    assert_int_equal(mq_ack(c, d, &e), 0);
    mq_delivery_free(d);
    d = next(c);
    assert_string_equal(d->message_id, "r1");
    assert_string_equal(d->correlation_id, "c9");
    assert_int_equal(mq_ack(c, d, &e), 0);
    mq_delivery_free(d);
    mq_close(c);
}

/* A publish to a missing exchange closes the channel asynchronously: the wait reports
 * it, the connection is broken, the publish counts as lost, and a reconnect recovers. */
static void test_failed_publish_breaks_and_recovers(void **state)
{
    fixture *f = *state;
    mq_conn *c = open_ok(&f->o);
    mq_msg m = {
        .exchange = "no.such.exchange.mqtest", .routing_key = "x", .body = "b", .body_len = 1};
    uint64_t seq = 0;
    err_t e = {0};
    assert_int_equal(mq_publish(c, &m, &seq, &e), 0);
    int rc = mq_wait_confirm(c, seq, 10000, &e);
    assert_int_equal(rc, ERR_MQ);
    assert_true(mq_error_is_connection(rc));
    assert_non_null(strstr(e.msg, "404"));
    assert_true(mq_is_broken(c));
    assert_int_equal(mq_confirmed(c, seq), -1);
    assert_true(mq_publish(c, &m, NULL, &e) < 0);
    assert_int_equal(mq_reconnect(c, 10000, &e), 0);
    assert_false(mq_is_broken(c));
    assert_int_equal(mq_confirmed(c, seq), -1);
    publish_job(c, f->prefix, "job-after", "a", 1);
    mq_delivery *d = next(c);
    assert_string_equal(d->message_id, "job-after");
    assert_int_equal(mq_ack(c, d, &e), 0);
    mq_delivery_free(d);
    mq_close(c);
}

static void test_bad_options(void **state)
{
    (void)state;
    err_t e = {0};
    mq_opts o = {.urls = "http://nope", .prefix = "p"};
    assert_null(mq_open(&o, &e));
    assert_int_equal(e.code, ERR_INVAL);
    mq_opts o2 = {.urls = "amqp://guest:guest@127.0.0.1:1/", .prefix = "p", .rpc_timeout_ms = 2000};
    assert_null(mq_open(&o2, &e));
    assert_true(mq_error_is_connection(e.code));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_topology_twice, setup, teardown),
        cmocka_unit_test_setup_teardown(test_round_trip_properties, setup, teardown),
        cmocka_unit_test_setup_teardown(test_missing_properties_are_null, setup, teardown),
        cmocka_unit_test_setup_teardown(test_hundred_confirms, setup, teardown),
        cmocka_unit_test_setup_teardown(test_deliveries_during_confirm_wait, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reject_lands_in_dead, setup, teardown),
        cmocka_unit_test_setup_teardown(test_retry_tier_returns_with_attempt, setup, teardown),
        cmocka_unit_test_setup_teardown(test_prefetch_honoured, setup, teardown),
        cmocka_unit_test_setup_teardown(test_oversized_flagged, setup, teardown),
        cmocka_unit_test_setup_teardown(test_close_with_unacked_redelivers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_heartbeats_serviced, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reconnect, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reply_routing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_failed_publish_breaks_and_recovers, setup, teardown),
        cmocka_unit_test(test_bad_options),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
