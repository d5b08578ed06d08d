/* test_store_util.c - the pure helpers of the store layer (store_util.c): the uuid and
 * numeric id checks that guard typed parameters, text lengths, decimal parameters and
 * the text[] literal a batch is sent as, the bound on integer parameters. No database
 * needed. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "store.h"
#include "store_int.h"

static void test_uuid_accepts_canonical_any_case(void **state)
{
    (void)state;
    assert_true(store_is_uuid("00000000-0000-4000-8000-000000000000"));
    assert_true(store_is_uuid("0123abcd-ef01-4a2b-9c3d-4e5f6a7b8c9d"));
    assert_true(store_is_uuid("0123ABCD-EF01-4A2B-9C3D-4E5F6A7B8C9D"));
    assert_true(store_is_uuid("0123abCD-Ef01-4a2B-9c3d-4E5f6a7b8c9d"));
}

static void test_uuid_rejects_everything_else(void **state)
{
    (void)state;
    const char *bad[] = {
        "",
        "not-a-uuid",
        "00000000-0000-4000-8000-00000000000",   /* 35 chars */
        "00000000-0000-4000-8000-0000000000000", /* 37 chars */
        "00000000-0000-4000-8000-00000000000g",  /* not hex */
        "0000000000000-4000-8000-000000000000",  /* dash moved */
        "00000000-0000-4000-8000_000000000000",  /* wrong separator */
        "{0000000-0000-4000-8000-000000000000}",
        "'; DROP TABLE duo_stage; --",
        "00000000000000000000000000000000", /* no dashes */
        " 0000000-0000-4000-8000-000000000000",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_false(store_is_uuid(bad[i]));
    assert_false(store_is_uuid(NULL));
}

static void test_is_id(void **state)
{
    (void)state;
    assert_true(store_is_id("1"));
    assert_true(store_is_id("0042"));
    assert_true(store_is_id("999999999999999999")); /* 18 digits: fits a bigint */
    assert_false(store_is_id("9999999999999999999"));
    assert_false(store_is_id(""));
    assert_false(store_is_id(NULL));
    assert_false(store_is_id("-1"));
    assert_false(store_is_id("+1"));
    assert_false(store_is_id("1 "));
    assert_false(store_is_id("12a"));
    assert_false(store_is_id("00000000-0000-4000-8000-000000000000"));
}

static void test_text_ok_bounds(void **state)
{
    (void)state;
    char big[152];
    memset(big, 'u', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    assert_false(store_text_ok(big, 150)); /* 151 bytes */
    big[150] = '\0';
    assert_true(store_text_ok(big, 150)); /* 150 bytes */
    assert_true(store_text_ok("a", 150));
    assert_false(store_text_ok("", 150));
    assert_false(store_text_ok(NULL, 150));
}

static void test_i64_text(void **state)
{
    (void)state;
    char b[STORE_I64_LEN];
    store_i64_text(b, 0);
    assert_string_equal(b, "0");
    store_i64_text(b, -42);
    assert_string_equal(b, "-42");
    store_i64_text(b, INT64_MAX);
    assert_string_equal(b, "9223372036854775807");
    store_i64_text(b, INT64_MIN);
    assert_string_equal(b, "-9223372036854775808");
}

/* More integer parameters than it holds: refused before anything is sent (no store is
 * needed to see that: the NULL store is never touched). */
static void test_exec_i64_refuses_too_many(void **state)
{
    (void)state;
    static const store_stmt st = {"test_many", "SELECT $1, $2, $3, $4, $5"};
    const int64_t v[STORE_I64_PARAMS + 1] = {1, 2, 3, 4, 5};
    store_res *r = (store_res *)&r; /* must be reset to NULL */
    err_t e = {0};
    assert_int_equal(store_exec_i64(NULL, &st, STORE_I64_PARAMS + 1, v, &r, &e), ERR_INVAL);
    assert_null(r);
    assert_non_null(strstr(e.msg, "test_many"));
    assert_int_equal(store_exec_i64(NULL, &st, -1, v, &r, &e), ERR_INVAL);
}

static void expect_array(const char *const *v, size_t n, const char *want)
{
    char *got = store_text_array(v, n);
    assert_non_null(got);
    assert_string_equal(got, want);
    free(got);
}

static void test_text_array_quotes_and_escapes(void **state)
{
    (void)state;
    const char *plain[] = {"a", "bc"};
    expect_array(plain, 2, "{\"a\",\"bc\"}");
    /* Quotes and backslashes escaped; commas, braces, spaces and the word NULL stay
     * inside their quotes, so none of them can end an element or make it SQL NULL. */
    const char *odd[] = {"with \"quote\"", "back\\slash", "comma,{brace}", "NULL", "", " "};
    expect_array(odd, 6,
                 "{\"with \\\"quote\\\"\",\"back\\\\slash\",\"comma,{brace}\",\"NULL\",\"\","
                 "\" \"}");
}

static void test_text_array_nulls_and_empty(void **state)
{
    (void)state;
    const char *some[] = {"a@x", NULL, "b@x"};
    expect_array(some, 3, "{\"a@x\",NULL,\"b@x\"}");
    expect_array(NULL, 3, "{NULL,NULL,NULL}"); /* no array at all: every element NULL */
    expect_array(some, 0, "{}");
    expect_array(NULL, 0, "{}");
}

/* The size computed up front must hold the worst case: every byte escaped. */
static void test_text_array_worst_case_fits(void **state)
{
    (void)state;
    char q[65], b[65];
    memset(q, '"', 64);
    memset(b, '\\', 64);
    q[64] = b[64] = '\0';
    const char *v[] = {q, b, NULL};
    char *got = store_text_array(v, 3);
    assert_non_null(got);
    assert_int_equal(strlen(got), 1 + (2 + 128) + 1 + (2 + 128) + 1 + 4 + 1);
    free(got);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_uuid_accepts_canonical_any_case),
        cmocka_unit_test(test_uuid_rejects_everything_else),
        cmocka_unit_test(test_is_id),
        cmocka_unit_test(test_text_ok_bounds),
        cmocka_unit_test(test_i64_text),
        cmocka_unit_test(test_exec_i64_refuses_too_many),
        cmocka_unit_test(test_text_array_quotes_and_escapes),
        cmocka_unit_test(test_text_array_nulls_and_empty),
        cmocka_unit_test(test_text_array_worst_case_fits),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
