/* test_mq_url.c - the pure parts of the AMQP transport: URL lists, reconnect backoff,
 * retry queue suffixes. No broker needed. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include "mq.h"

static void test_urls_single_and_list(void **state)
{
    (void)state;
    char **u = NULL;
    err_t e = {0};
    assert_int_equal(mq_urls_parse("amqp://guest:guest@127.0.0.1:5672/", &u, &e), 1);
    assert_string_equal(u[0], "amqp://guest:guest@127.0.0.1:5672/");
    assert_null(u[1]);
    mq_urls_free(u);
    assert_int_equal(mq_urls_parse(" amqp://a:1/v , amqps://b/ ,,amqp://c", &u, &e), 3);
    assert_string_equal(u[0], "amqp://a:1/v");
    assert_string_equal(u[1], "amqps://b/");
    assert_string_equal(u[2], "amqp://c");
    assert_null(u[3]);
    mq_urls_free(u);
    mq_urls_free(NULL);
}

static void test_urls_rejected_without_password(void **state)
{
    (void)state;
    char **u = (char **)&u; /* must be reset to NULL on failure */
    err_t e = {0};
    assert_int_equal(mq_urls_parse("amqp://ok/,http://user:s3cret@host/", &u, &e), ERR_INVAL);
    assert_null(u);
    assert_null(strstr(e.msg, "s3cret"));
    assert_int_equal(mq_urls_parse("", &u, &e), ERR_INVAL);
    assert_int_equal(mq_urls_parse(" , ", &u, &e), ERR_INVAL);
    assert_int_equal(mq_urls_parse(NULL, &u, &e), ERR_INVAL);
    assert_int_equal(mq_urls_parse("amqp://h:notaport/", &u, &e), ERR_INVAL);
}

static void test_backoff(void **state)
{
    (void)state;
    /* rnd 0.5 = no jitter */
    assert_int_equal(mq_backoff_ms(0, 0.5), 100);
    assert_int_equal(mq_backoff_ms(1, 0.5), 200);
    assert_int_equal(mq_backoff_ms(3, 0.5), 800);
    assert_int_equal(mq_backoff_ms(7, 0.5), 10000); /* 12800 capped */
    assert_int_equal(mq_backoff_ms(1000, 0.5), 10000);
    /* jitter bounds: +-50% */
    assert_int_equal(mq_backoff_ms(0, 0.0), 50);
    assert_int_equal(mq_backoff_ms(0, 1.0), 150);
    assert_int_equal(mq_backoff_ms(1000, 1.0), 15000);
    assert_int_equal(mq_backoff_ms(2, -3.0), 200); /* clamped to 0 */
    assert_int_equal(mq_backoff_ms(2, 7.0), 600);  /* clamped to 1 */
    assert_int_equal(mq_backoff_ms(-5, 0.5), 100);
    for (int a = 0; a < 40; a++) {
        int lo = mq_backoff_ms(a, 0.0), hi = mq_backoff_ms(a, 1.0);
        assert_true(lo > 0 && lo < hi && hi <= 15000);
    }
}

static void test_ttl_suffix(void **state)
{
    (void)state;
    char s[32];
    mq_ttl_suffix(5000, s, sizeof s);
    assert_string_equal(s, "5s");
    mq_ttl_suffix(300000, s, sizeof s);
    assert_string_equal(s, "300s");
    mq_ttl_suffix(200, s, sizeof s);
    assert_string_equal(s, "200ms");
    mq_ttl_suffix(1500, s, sizeof s);
    assert_string_equal(s, "1500ms");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_urls_single_and_list),
        cmocka_unit_test(test_urls_rejected_without_password),
        cmocka_unit_test(test_backoff),
        cmocka_unit_test(test_ttl_suffix),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
