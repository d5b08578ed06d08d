/* test_settle.c - the settle queue (runtime/settle.c) without a broker: a delivery is
 * settled only once its reply is decided, confirmed ones as asked, lost or nacked ones
 * requeued, pending ones kept in order whatever order the confirms arrive in. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "settle.h"

typedef struct {
    int state[16]; /* by seq: 1 confirmed, 0 pending, -1 lost */
    uint64_t settled_tag[16];
    int settled_how[16];
    int n;
} fake;

static int confirmed(void *arg, uint64_t seq)
{
    return ((fake *)arg)->state[seq];
}

static void settle(void *arg, mq_ticket t, int how)
{
    fake *f = arg;
    f->settled_tag[f->n] = t.tag;
    f->settled_how[f->n++] = how;
}

static mq_ticket ticket(uint64_t tag)
{
    mq_ticket t = {0};
    t.tag = tag;
    return t;
}

static void test_settles_only_decided(void **state)
{
    (void)state;
    settle_queue q = {0};
    fake f = {0};
    assert_int_equal(settle_push(&q, 1, ticket(101), SETTLE_ACK), 0);
    assert_int_equal(settle_push(&q, 2, ticket(102), SETTLE_DEAD_LETTER), 0);
    assert_int_equal(settle_push(&q, 3, ticket(103), SETTLE_ACK), 0);
    assert_int_equal(settle_last_seq(&q), 3);

    assert_int_equal(settle_ready(&q, confirmed, settle, &f), 0); /* nothing confirmed */
    assert_int_equal(q.n, 3);

    f.state[2] = 1; /* out of order: the middle one first */
    assert_int_equal(settle_ready(&q, confirmed, settle, &f), 1);
    assert_int_equal(f.settled_tag[0], 102);
    assert_int_equal(f.settled_how[0], SETTLE_DEAD_LETTER);
    assert_int_equal(q.n, 2);

    f.state[3] = -1; /* the newest is lost: requeued, not acked */
    assert_int_equal(settle_ready(&q, confirmed, settle, &f), 1);
    assert_int_equal(f.settled_tag[1], 103);
    assert_int_equal(f.settled_how[1], SETTLE_REQUEUE);
    assert_int_equal(settle_last_seq(&q), 1); /* the tail moved back */

    assert_int_equal(settle_push(&q, 4, ticket(104), SETTLE_ACK), 0);
    f.state[1] = 1;
    f.state[4] = 1;
    assert_int_equal(settle_ready(&q, confirmed, settle, &f), 2);
    assert_int_equal(f.settled_tag[2], 101);
    assert_int_equal(f.settled_tag[3], 104);
    assert_int_equal(q.n, 0);
    assert_null(q.head);
    assert_null(q.tail);
    assert_int_equal(settle_last_seq(&q), 0);
}

static void test_clear_settles_nothing(void **state)
{
    (void)state;
    settle_queue q = {0};
    fake f = {0};
    settle_push(&q, 1, ticket(1), SETTLE_ACK);
    settle_push(&q, 2, ticket(2), SETTLE_ACK);
    settle_clear(&q);
    assert_int_equal(q.n, 0);
    assert_int_equal(settle_ready(&q, confirmed, settle, &f), 0);
    assert_int_equal(f.n, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_settles_only_decided),
        cmocka_unit_test(test_clear_settles_nothing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
