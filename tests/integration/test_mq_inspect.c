/* test_mq_inspect.c - the broker calls behind duoctl status and duoctl dead against the
 * real local RabbitMQ: queue depth and consumers by passive declare (a missing queue
 * included), basic.get with x-death history, and a replay (reject from P.dead) that lands
 * the message back on its work queue once, with its attempt count started over. */
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

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    tl_unique_prefix("mqi", f->prefix, sizeof f->prefix);
    f->o.urls = tl_env("AMQP_URL");
    f->o.prefix = f->prefix;
    f->o.retry_ms[0] = 200;
    f->o.retry_ms[1] = 300;
    f->o.retry_ms[2] = 400;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    err_t e = {0};
    mq_conn *c = mq_open(&f->o, &e);
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

static void publish(mq_conn *c, const char *id, int attempt)
{
    mq_msg m = {.exchange = mq_jobs_exchange(c),
                .routing_key = MQ_KIND_ENROLL,
                .body = "body",
                .body_len = 4,
                .message_id = id,
                .type = "enroll.begin",
                .attempt = attempt};
    uint64_t seq = 0;
    err_t e = {0};
    if (mq_publish(c, &m, &seq, &e) < 0 || mq_wait_confirm(c, seq, 5000, &e) < 0)
        fail_msg("publish: %s", e.msg);
}

static mq_queue_stat stat_of(mq_conn *c, const char *q)
{
    mq_queue_stat s;
    err_t e = {0};
    if (mq_queue_inspect(c, q, &s, &e) < 0)
        fail_msg("inspect %s: %s", q, e.msg);
    return s;
}

/* Depth as the broker counts it: settles asynchronously, so wait a little for it. */
static uint32_t ready_soon(mq_conn *c, const char *q, uint32_t want)
{
    mq_queue_stat s = stat_of(c, q);
    for (int i = 0; i < 100 && s.ready != want; i++) {
        struct timespec ts = {0, 50000000};
        nanosleep(&ts, NULL);
        s = stat_of(c, q);
    }
    return s.ready;
}

static void test_inspect_depth_consumers_missing(void **state)
{
    fixture *f = *state;
    mq_conn *c = open_ok(&f->o);
    char q[256], rq[256];
    assert_int_equal(mq_kind_queue(c, MQ_KIND_ENROLL, q, sizeof q), 0);
    assert_int_equal(mq_retry_queue(c, MQ_KIND_ENROLL, 1, rq, sizeof rq), 0);
    char want[256];
    snprintf(want, sizeof want, "%s.enroll.retry.300ms", f->prefix);
    assert_string_equal(rq, want);
    assert_int_equal(mq_retry_queue(c, MQ_KIND_ENROLL, 3, rq, sizeof rq), ERR_INVAL);
    for (int i = 0; i < 3; i++) {
        char id[32];
        snprintf(id, sizeof id, "job-%d", i);
        publish(c, id, 0);
    }
    assert_int_equal(ready_soon(c, q, 3), 3);
    mq_queue_stat s = stat_of(c, q);
    assert_int_equal(s.exists, 1);
    assert_int_equal(s.consumers, 0);
    /* A missing queue is reported, and the connection stays usable afterwards. */
    s = stat_of(c, "no.such.queue.anywhere");
    assert_int_equal(s.exists, 0);
    assert_false(mq_is_broken(c));
    mq_opts o = f->o;
    o.kinds = enroll_only;
    o.prefetch = 1;
    mq_conn *consumer = open_ok(&o);
    s = stat_of(c, q);
    assert_int_equal(s.consumers, 1);
    mq_close(consumer);
    mq_close(c);
}

/* Dead-letters one message with x-attempt 4 and returns the dead-lettering connection. */
static void make_dead(const fixture *f, const char *id)
{
    mq_opts o = f->o;
    o.kinds = enroll_only;
    mq_conn *w = open_ok(&o);
    publish(w, id, 4);
    mq_delivery *d = NULL;
    err_t e = {0};
    if (mq_poll(w, 10000, &d, &e) != 1)
        fail_msg("no delivery: %s", e.msg);
    assert_int_equal(d->attempt, 4);
    assert_int_equal(mq_dead_letter(w, d, "test", &e), 0);
    mq_delivery_free(d);
    mq_close(w);
}

static void test_get_deaths_and_replay(void **state)
{
    fixture *f = *state;
    make_dead(f, "job-dead-1");
    mq_conn *c = open_ok(&f->o);
    assert_int_equal(ready_soon(c, mq_dead_queue(c), 1), 1);
    mq_delivery *d = NULL;
    uint32_t left = 99;
    err_t e = {0};
    assert_int_equal(mq_get(c, mq_dead_queue(c), MQ_KIND_DEAD, &d, &left, &e), 1);
    assert_int_equal(left, 0);
    assert_string_equal(d->message_id, "job-dead-1");
    assert_string_equal(d->kind, MQ_KIND_DEAD);
    assert_string_equal(d->routing_key, MQ_KIND_ENROLL);
    assert_int_equal(d->body_len, 4);
    mq_death deaths[4];
    assert_int_equal(mq_delivery_deaths(d, deaths, 4), 1);
    char q[256];
    mq_kind_queue(c, MQ_KIND_ENROLL, q, sizeof q);
    assert_string_equal(deaths[0].queue, q);
    assert_string_equal(deaths[0].reason, "rejected");
    assert_int_equal(deaths[0].count, 1);
    assert_true(deaths[0].time > 1600000000);
    mq_delivery *none = NULL;
    assert_int_equal(mq_get(c, mq_dead_queue(c), MQ_KIND_DEAD, &none, NULL, &e), 0);
    /* Replay: a reject moves it back to its work queue, in one broker step. */
    assert_int_equal(mq_reject(c, d, 0, &e), 0);
    mq_delivery_free(d);
    assert_int_equal(mq_close_sync(c, &e), 0);
    mq_opts o = f->o;
    o.kinds = enroll_only;
    mq_conn *w = open_ok(&o);
    assert_int_equal(mq_poll(w, 10000, &d, &e), 1);
    assert_string_equal(d->message_id, "job-dead-1");
    assert_int_equal(d->attempt, 0); /* a replayed job starts its attempts over */
    assert_int_equal(mq_delivery_deaths(d, deaths, 4), 2);
    assert_string_equal(deaths[0].queue, mq_dead_queue(w));
    assert_int_equal(mq_ack(w, d, &e), 0);
    mq_delivery_free(d);
    assert_int_equal(ready_soon(w, mq_dead_queue(w), 0), 0);
    assert_int_equal(ready_soon(w, q, 0), 0);
    mq_close(w);
}

static void test_unsettled_get_returns_on_close(void **state)
{
    fixture *f = *state;
    make_dead(f, "job-dead-2");
    mq_conn *c = open_ok(&f->o);
    assert_int_equal(ready_soon(c, mq_dead_queue(c), 1), 1);
    mq_delivery *d = NULL;
    err_t e = {0};
    assert_int_equal(mq_get(c, mq_dead_queue(c), MQ_KIND_DEAD, &d, NULL, &e), 1);
    mq_delivery_free(d);
    mq_close(c);
    c = open_ok(&f->o);
    assert_int_equal(ready_soon(c, mq_dead_queue(c), 1), 1);
    mq_close(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_inspect_depth_consumers_missing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_get_deaths_and_replay, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unsettled_get_returns_on_close, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
