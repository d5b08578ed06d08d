/* test_duo_breaker.c - the per-host circuit breaker (common/duo/duo_breaker.c): when a
 * host opens, how long it stays open, the half-open probe, and which results count. The
 * clock is passed in, so the schedule is tested as it runs. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include "duo_breaker.h"

typedef struct seen {
    int n;
    duo_breaker_state last;
    long long last_open_ms;
} seen;

static void on_change(void *arg, const char *host, duo_breaker_state to, long long open_ms)
{
    (void)host;
    seen *s = arg;
    s->n++;
    s->last = to;
    s->last_open_ms = open_ms;
}

static const duo_breaker_opts OPTS = {.failures = 3, .open_ms = 1000, .max_open_ms = 3000};

/* One attempt to host at now that ends with ok. Returns whether it was admitted. */
static int attempt(duo_breakers *b, const char *host, long long now, int ok)
{
    duo_breaker_ticket t = duo_breakers_admit(b, host, now, 1);
    if (t.admitted)
        duo_breakers_record(b, host, &t, ok, now);
    return t.admitted;
}

static void test_opens_after_consecutive_failures_only(void **state)
{
    (void)state;
    seen s = {0};
    duo_breakers *b = duo_breakers_new(&OPTS, on_change, &s);
    attempt(b, "a", 0, 0);
    attempt(b, "a", 1, 0);
    attempt(b, "a", 2, 1); /* an answer (even a 4xx) resets the count */
    attempt(b, "a", 3, 0);
    attempt(b, "a", 4, 0);
    assert_int_equal(duo_breakers_state(b, "a", 5), DUO_BREAKER_CLOSED);
    attempt(b, "a", 5, 0);
    assert_int_equal(duo_breakers_state(b, "a", 6), DUO_BREAKER_OPEN);
    assert_int_equal(s.n, 1);
    assert_int_equal(s.last_open_ms, 1000);
    /* Another host is not touched. */
    assert_int_equal(duo_breakers_state(b, "b", 6), DUO_BREAKER_CLOSED);
    assert_true(attempt(b, "b", 6, 1));
    duo_breakers_free(b);
}

static void test_open_refuses_with_time_left(void **state)
{
    (void)state;
    duo_breakers *b = duo_breakers_new(&OPTS, NULL, NULL);
    for (int i = 0; i < 3; i++)
        attempt(b, "a", 100, 0);
    duo_breaker_ticket t = duo_breakers_admit(b, "a", 400, 1);
    assert_false(t.admitted);
    assert_int_equal(t.retry_in_ms, 700);
    duo_breakers_free(b);
}

static void test_half_open_lets_one_probe_and_its_success_closes(void **state)
{
    (void)state;
    seen s = {0};
    duo_breakers *b = duo_breakers_new(&OPTS, on_change, &s);
    for (int i = 0; i < 3; i++)
        attempt(b, "a", 0, 0);
    assert_int_equal(duo_breakers_state(b, "a", 1000), DUO_BREAKER_HALF_OPEN);
    duo_breaker_ticket probe = duo_breakers_admit(b, "a", 1000, 1);
    assert_true(probe.admitted);
    assert_true(probe.probe);
    duo_breaker_ticket other = duo_breakers_admit(b, "a", 1001, 1);
    assert_false(other.admitted); /* the probe is out */
    duo_breakers_record(b, "a", &probe, 1, 1100);
    assert_int_equal(duo_breakers_state(b, "a", 1100), DUO_BREAKER_CLOSED);
    assert_int_equal(s.last, DUO_BREAKER_CLOSED);
    assert_int_equal(s.n, 3); /* open, half_open, closed */
    duo_breakers_free(b);
}

static void test_failed_probes_double_the_open_time_up_to_the_cap(void **state)
{
    (void)state;
    seen s = {0};
    duo_breakers *b = duo_breakers_new(&OPTS, on_change, &s);
    for (int i = 0; i < 3; i++)
        attempt(b, "a", 0, 0);
    long long now = 1000, expect[] = {2000, 3000, 3000};
    for (int i = 0; i < 3; i++) {
        assert_true(attempt(b, "a", now, 0)); /* the probe fails */
        assert_int_equal(s.last, DUO_BREAKER_OPEN);
        assert_int_equal(s.last_open_ms, expect[i]);
        assert_false(duo_breakers_admit(b, "a", now + expect[i] - 1, 1).admitted);
        now += expect[i];
    }
    assert_true(attempt(b, "a", now, 1));
    /* Closed again: the next opening starts from the base time. */
    for (int i = 0; i < 3; i++)
        attempt(b, "a", now, 0);
    assert_int_equal(s.last_open_ms, 1000);
    duo_breakers_free(b);
}

static void test_attempts_from_before_the_opening_change_nothing(void **state)
{
    (void)state;
    duo_breakers *b = duo_breakers_new(&OPTS, NULL, NULL);
    duo_breaker_ticket old_ok = duo_breakers_admit(b, "a", 0, 1);
    duo_breaker_ticket old_fail = duo_breakers_admit(b, "a", 0, 1);
    for (int i = 0; i < 3; i++)
        attempt(b, "a", 1, 0);
    /* A slow answer that started before the host opened neither closes it... */
    duo_breakers_record(b, "a", &old_ok, 1, 10);
    assert_int_equal(duo_breakers_state(b, "a", 10), DUO_BREAKER_OPEN);
    /* ...nor does a late failure extend it. */
    duo_breakers_record(b, "a", &old_fail, 0, 500);
    assert_int_equal(duo_breakers_state(b, "a", 1001), DUO_BREAKER_HALF_OPEN);
    duo_breakers_free(b);
}

static void test_long_polls_never_probe_and_cancelled_probes_give_back_the_turn(void **state)
{
    (void)state;
    duo_breakers *b = duo_breakers_new(&OPTS, NULL, NULL);
    for (int i = 0; i < 3; i++)
        attempt(b, "a", 0, 0);
    assert_false(duo_breakers_admit(b, "a", 1000, 0).admitted); /* a long poll */
    duo_breaker_ticket probe = duo_breakers_admit(b, "a", 1000, 1);
    assert_true(probe.probe);
    duo_breakers_record(b, "a", &probe, -1, 1001); /* cancelled: says nothing */
    assert_int_equal(duo_breakers_state(b, "a", 1001), DUO_BREAKER_HALF_OPEN);
    assert_true(duo_breakers_admit(b, "a", 1002, 1).probe);
    duo_breakers_free(b);
}

static void test_zero_failures_never_opens(void **state)
{
    (void)state;
    duo_breaker_opts o = {.failures = 0, .open_ms = 10, .max_open_ms = 10};
    duo_breakers *b = duo_breakers_new(&o, NULL, NULL);
    for (int i = 0; i < 100; i++)
        assert_true(attempt(b, "a", i, 0));
    duo_breakers_free(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_opens_after_consecutive_failures_only),
        cmocka_unit_test(test_open_refuses_with_time_left),
        cmocka_unit_test(test_half_open_lets_one_probe_and_its_success_closes),
        cmocka_unit_test(test_failed_probes_double_the_open_time_up_to_the_cap),
        cmocka_unit_test(test_attempts_from_before_the_opening_change_nothing),
        cmocka_unit_test(test_long_polls_never_probe_and_cancelled_probes_give_back_the_turn),
        cmocka_unit_test(test_zero_failures_never_opens),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
