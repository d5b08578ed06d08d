/* test_duo_retry.c - the one retry policy of Duo calls (duo_retry.h), without a network:
 * the backoff schedule (doubling to 32 x, jitter bound, Retry-After), the limits that end
 * retrying (deadline, retry budget) and which failures are retried, acting calls apart. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include "duo_retry.h"

static void test_doubling_capped(void **state)
{
    (void)state;
    /* jitter 0: exactly base * 2^(n-1), never more than 32 x base. */
    long long want[] = {100, 200, 400, 800, 1600, 3200, 3200, 3200};
    for (int n = 1; n <= 8; n++)
        assert_int_equal(duo_backoff_ms(n, 100, -1, 0), want[n - 1]);
    assert_int_equal(duo_backoff_ms(1000, 100, -1, 0), 3200);
    assert_int_equal(duo_backoff_ms(0, 100, -1, 0), 100); /* a bad n is the first wait */
    assert_int_equal(duo_backoff_ms(3, 0, -1, 12345), 0); /* no base: no wait, no jitter */
}

static void test_jitter_bound(void **state)
{
    (void)state;
    /* The jitter part lies in [0, base]; every value in it is reachable. */
    int seen_max = 0, seen_zero = 0;
    for (unsigned j = 0; j < 5000; j++) {
        long long w = duo_backoff_ms(2, 10, -1, j * 2654435761u);
        assert_true(w >= 20 && w <= 30);
        seen_max |= w == 30;
        seen_zero |= w == 20;
    }
    assert_true(seen_max && seen_zero);
    assert_int_equal(duo_backoff_ms(1, 10, -1, 10), 20);
    assert_int_equal(duo_backoff_ms(1, 10, -1, 11), 10);
    assert_true(duo_backoff_ms(6, 1000, -1, ~0u) <= 32000 + 1000);
}

static void test_retry_after_wins(void **state)
{
    (void)state;
    assert_int_equal(duo_backoff_ms(1, 10, 1000, 7), 1000); /* no jitter added either */
    assert_int_equal(duo_backoff_ms(6, 1000, 0, 7), 0);     /* "Retry-After: 0" */
    assert_int_equal(duo_backoff_ms(2, 10, -1, 0), 20);     /* -1: absent */
}

static void test_limits(void **state)
{
    (void)state;
    /* No limits: now + wait. */
    assert_int_equal(duo_retry_wake(1000, 50, 0, 0), 1050);
    /* The deadline: a retry must start before it. */
    assert_int_equal(duo_retry_wake(1000, 50, 1051, 0), 1050);
    assert_int_equal(duo_retry_wake(1000, 50, 1050, 0), -1);
    /* The budget: no retry starts after it (starting exactly at it is allowed). */
    assert_int_equal(duo_retry_wake(1000, 50, 0, 1050), 1050);
    assert_int_equal(duo_retry_wake(1000, 51, 0, 1050), -1);
    /* A Retry-After beyond the budget ends the call rather than waiting. */
    assert_int_equal(duo_retry_wake(1000, duo_backoff_ms(1, 1, 60000, 0), 0, 1000 + 5000), -1);
    /* Both: the nearer wins. */
    assert_int_equal(duo_retry_wake(1000, 50, 2000, 1040), -1);
    assert_int_equal(duo_retry_wake(1000, 50, 1040, 2000), -1);
}

static duo_error failure(duo_fail fail, int status, int not_sent)
{
    duo_error e;
    memset(&e, 0, sizeof e);
    e.fail = fail, e.http_status = status, e.not_sent = not_sent;
    return e;
}

static void test_what_is_retried(void **state)
{
    (void)state;
    duo_error e429 = failure(DUO_FAIL_HTTP, 429, 0), e503 = failure(DUO_FAIL_HTTP, 503, 0),
              e400 = failure(DUO_FAIL_HTTP, 400, 0), net = failure(DUO_FAIL_NETWORK, 0, 0),
              unsent = failure(DUO_FAIL_NETWORK, 0, 1), tmo = failure(DUO_FAIL_TIMEOUT, 0, 0),
              bad = failure(DUO_FAIL_BAD_RESPONSE, 200, 0);
    /* A reading call: 429, 5xx and network failures; never 4xx, timeouts, bad answers. */
    assert_true(duo_retry_allowed(ERR_DUO, &e429, 0));
    assert_true(duo_retry_allowed(ERR_DUO, &e503, 0));
    assert_true(duo_retry_allowed(ERR_NET, &net, 0));
    assert_false(duo_retry_allowed(ERR_DUO, &e400, 0));
    assert_false(duo_retry_allowed(ERR_TIMEOUT, &tmo, 0));
    assert_false(duo_retry_allowed(ERR_DUO, &bad, 0));
    /* An acting call: only 429 and an attempt that never reached Duo. */
    assert_true(duo_retry_allowed(ERR_DUO, &e429, 1));
    assert_true(duo_retry_allowed(ERR_NET, &unsent, 1));
    assert_false(duo_retry_allowed(ERR_DUO, &e503, 1));
    assert_false(duo_retry_allowed(ERR_NET, &net, 1));
    assert_false(duo_retry_allowed(ERR_TIMEOUT, &tmo, 1));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_doubling_capped),  cmocka_unit_test(test_jitter_bound),
        cmocka_unit_test(test_retry_after_wins), cmocka_unit_test(test_limits),
        cmocka_unit_test(test_what_is_retried),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
