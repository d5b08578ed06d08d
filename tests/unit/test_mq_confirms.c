/* test_mq_confirms.c - the publisher-confirm bookkeeping of the AMQP module (mq_frames.c),
 * without a broker: a pending publish reads 0, a lost one -1, and a failed record dropped
 * past the cap keeps reading -1, never "confirmed" (which would let a delivery be acked
 * before its reply is safe). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <cmocka.h>

#include "mq_int.h"

enum { CAP = 65536 }; /* MAX_FAILED_RECS in mq_frames.c */

static void publish(mq_conn *c)
{
    assert_int_equal(mq_seq_reserve(c), 0);
    c->chan_seq++;
    mq_seq_add(c, c->seq_base + c->chan_seq);
}

static void test_pending_and_lost(void **state)
{
    (void)state;
    mq_conn *c = calloc(1, sizeof *c);
    assert_non_null(c);
    publish(c);
    publish(c);
    assert_int_equal(mq_confirmed(c, 1), 0);
    assert_int_equal(mq_confirmed(c, 2), 0);
    assert_int_equal(mq_confirmed(c, 3), -1); /* never published */
    mq_seq_fail_pending(c);                   /* the connection was lost */
    assert_int_equal(mq_confirmed(c, 1), -1);
    assert_int_equal(mq_confirmed(c, 2), -1);
    free(c->recs);
    free(c);
}

static void test_dropped_failed_record_stays_lost(void **state)
{
    (void)state;
    mq_conn *c = calloc(1, sizeof *c);
    assert_non_null(c);
    for (int i = 0; i < CAP; i++)
        publish(c);
    mq_seq_fail_pending(c);
    publish(c); /* over the cap: the oldest failed record (seq 1) is dropped */
    assert_int_equal(c->nrecs, (size_t)CAP);
    assert_int_equal(mq_confirmed(c, 1), -1); /* not "confirmed" */
    assert_int_equal(mq_confirmed(c, 2), -1);
    assert_int_equal(mq_confirmed(c, CAP + 1), 0);
    free(c->recs);
    free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pending_and_lost),
        cmocka_unit_test(test_dropped_failed_record_stays_lost),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
