/* test_config.c - config_load: defaults, required variables, bounds, clear messages. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "config.h"

static void clear_env(void)
{
    unsetenv("DATABASE_URL");
    unsetenv("AMQP_URL");
    unsetenv("WORKER_PREFETCH");
    unsetenv("LOG_LEVEL");
    unsetenv("DUO_SIG_VERSION");
    unsetenv("METRICS_ADDR");
    unsetenv("AMQP_DECLARE");
}

static void test_defaults(void **state)
{
    (void)state;
    clear_env();
    config c;
    err_t e = {0};
    assert_int_equal(config_load(&c, 0, &e), 0);
    assert_int_equal(c.prefetch, 16);
    assert_int_equal(c.duo_sig_version, 5);
    assert_string_equal(c.mq_prefix, "duo");
    assert_null(c.database_url);
    /* Production posture: metrics on loopback unless told otherwise, the topology
     * declared, one role per worker kind, the system CAs for amqps://. */
    assert_string_equal(c.metrics_addr, "127.0.0.1");
    assert_int_equal(c.amqp_declare, 1);
    assert_string_equal(c.db_role_enroll, "duo_enroll");
    assert_string_equal(c.db_role_auth, "duo_auth");
    assert_string_equal(c.db_role_import, "duo_import");
    assert_null(c.amqp_ca_file);
    config_free(&c);
    config_free(&c); /* idempotent */
}

static void test_required_missing_names_variable(void **state)
{
    (void)state;
    clear_env();
    config c;
    err_t e = {0};
    assert_int_equal(config_load(&c, CONFIG_NEED_DB, &e), ERR_CONFIG);
    assert_non_null(strstr(e.msg, "DATABASE_URL"));
    setenv("DATABASE_URL", "host=127.0.0.1 dbname=x", 1);
    assert_int_equal(config_load(&c, CONFIG_NEED_DB | CONFIG_NEED_MQ, &e), ERR_CONFIG);
    assert_non_null(strstr(e.msg, "AMQP_URL"));
}

static void test_metrics_addr(void **state)
{
    (void)state;
    static const char *good[] = {"127.0.0.1", "0.0.0.0", "::1", "::", "10.1.2.3"};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        clear_env();
        setenv("METRICS_ADDR", good[i], 1);
        config c;
        err_t e = {0};
        assert_int_equal(config_load(&c, 0, &e), 0);
        assert_string_equal(c.metrics_addr, good[i]);
        config_free(&c);
    }
    static const char *bad[] = {"localhost", "127.0.0.1:9100", "1.2.3", "*"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        clear_env();
        setenv("METRICS_ADDR", bad[i], 1);
        config c;
        err_t e = {0};
        assert_int_equal(config_load(&c, 0, &e), ERR_CONFIG);
        assert_non_null(strstr(e.msg, "METRICS_ADDR"));
    }
    clear_env();
    setenv("AMQP_DECLARE", "2", 1);
    config c;
    err_t e = {0};
    assert_int_equal(config_load(&c, 0, &e), ERR_CONFIG);
    assert_non_null(strstr(e.msg, "AMQP_DECLARE"));
    clear_env();
}

static void test_malformed(void **state)
{
    (void)state;
    clear_env();
    config c;
    err_t e = {0};
    setenv("WORKER_PREFETCH", "12abc", 1);
    assert_int_equal(config_load(&c, 0, &e), ERR_CONFIG);
    assert_non_null(strstr(e.msg, "WORKER_PREFETCH"));
    setenv("WORKER_PREFETCH", "0", 1);
    assert_int_equal(config_load(&c, 0, &e), ERR_CONFIG);
    assert_non_null(strstr(e.msg, "out of range"));
    clear_env();
    setenv("AMQP_URL", "http://x", 1);
    assert_int_equal(config_load(&c, 0, &e), ERR_CONFIG);
    assert_non_null(strstr(e.msg, "AMQP_URL"));
    setenv("AMQP_URL", "amqp://a/,amqps://b/", 1);
    assert_int_equal(config_load(&c, 0, &e), 0);
    config_free(&c);
    setenv("AMQP_URL", "amqp://a/,redis://b/", 1);
    assert_int_equal(config_load(&c, 0, &e), ERR_CONFIG);
    clear_env();
    setenv("DATABASE_URL", "mysql:thing", 1);
    assert_int_equal(config_load(&c, 0, &e), ERR_CONFIG);
    assert_non_null(strstr(e.msg, "DATABASE_URL"));
    clear_env();
    setenv("DUO_SIG_VERSION", "3", 1);
    assert_int_equal(config_load(&c, 0, &e), ERR_CONFIG);
    clear_env();
    setenv("LOG_LEVEL", "loud", 1);
    assert_int_equal(config_load(&c, 0, &e), ERR_CONFIG);
    assert_non_null(strstr(e.msg, "LOG_LEVEL"));
}

static void test_empty_means_unset(void **state)
{
    (void)state;
    clear_env();
    setenv("WORKER_PREFETCH", "", 1);
    config c;
    err_t e = {0};
    assert_int_equal(config_load(&c, 0, &e), 0);
    assert_int_equal(c.prefetch, 16);
    config_free(&c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_required_missing_names_variable),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_metrics_addr),
        cmocka_unit_test(test_empty_means_unset),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
