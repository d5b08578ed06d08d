/* test_duo_users_scan.c - the streaming users-page reader: the same users and metadata as
 * the full JSON tree for good pages (escapes and non-ASCII included), a classified
 * duo_bad_response for every malformed, oversize or oddly shaped page, the same error
 * as duo_response_parse for Duo's own errors, and no crash on thousands of mutations. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "duo_users_scan.h"

#define PAGE_HEAD "{\"stat\": \"OK\", \"response\": ["
#define META_TAIL "], \"metadata\": {\"total_objects\": 7, \"next_offset\": 3, \"prev_offset\": 0}}"

static int scan_str(long status, const char *body, json_t **resp, json_t **meta, duo_error *e)
{
    memset(e, 0, sizeof *e);
    return duo_users_scan(status, body, body ? strlen(body) : 0, resp, meta, e);
}

static void expect_bad(const char *body, const char *why)
{
    json_t *resp = (json_t *)1, *meta = (json_t *)1;
    duo_error e;
    if (scan_str(200, body, &resp, &meta, &e) != ERR_DUO)
        fail_msg("accepted: %s", body ? body : "(null)");
    assert_null(resp);
    assert_null(meta);
    assert_int_equal(e.fail, DUO_FAIL_BAD_RESPONSE);
    assert_int_equal(e.cls, DUO_CLASS_PERMANENT);
    assert_string_equal(duo_error_code(&e), "duo_bad_response");
    if (why && !strstr(e.message, why))
        fail_msg("'%s' does not say '%s'", e.message, why);
}

static const char *user_field(json_t *resp, size_t i, const char *k)
{
    return json_string_value(json_object_get(json_array_get(resp, i), k));
}

static void test_good_page(void **state)
{
    (void)state;
    const char *body = PAGE_HEAD
        "{\"user_id\": \"DU1\", \"username\": \"al\\u00e9 \\\"q\\\" \\\\ \\ud83d\\ude00\","
        " \"phones\": [{\"user_id\": \"nested\", \"number\": \"+1\"}], \"groups\": [],"
        " \"is_enrolled\": true, \"last_login\": null, \"created\": 1.5e9},"
        "{\"username\": \"bob\", \"alias1\": {\"username\": \"x\"}, \"user_id\": \"DU2\"},"
        "{\"user_id\": \"DU3\", \"username\": \"\xc3\xa7\xc3\xa0\"}" META_TAIL;
    json_t *resp = NULL, *meta = NULL;
    duo_error e;
    assert_int_equal(scan_str(200, body, &resp, &meta, &e), 0);
    assert_int_equal(json_array_size(resp), 3);
    assert_string_equal(user_field(resp, 0, "user_id"), "DU1");
    assert_string_equal(user_field(resp, 0, "username"), "al\xc3\xa9 \"q\" \\ \xf0\x9f\x98\x80");
    assert_int_equal(json_object_size(json_array_get(resp, 0)), 2);
    assert_string_equal(user_field(resp, 1, "user_id"), "DU2");
    assert_string_equal(user_field(resp, 1, "username"), "bob");
    assert_string_equal(user_field(resp, 2, "username"), "\xc3\xa7\xc3\xa0");
    assert_int_equal(json_integer_value(json_object_get(meta, "total_objects")), 7);
    assert_int_equal(json_integer_value(json_object_get(meta, "next_offset")), 3);
    json_decref(resp);
    json_decref(meta);
}

static void test_last_page_and_no_metadata(void **state)
{
    (void)state;
    json_t *resp = NULL, *meta = NULL;
    duo_error e;
    assert_int_equal(scan_str(200,
                              "{\"metadata\": {\"next_offset\": null, \"total_objects\": 0},"
                              " \"response\": [], \"stat\": \"OK\"}",
                              &resp, &meta, &e),
                     0);
    assert_int_equal(json_array_size(resp), 0);
    assert_true(json_is_null(json_object_get(meta, "next_offset")));
    json_decref(resp);
    json_decref(meta);
    assert_int_equal(scan_str(200, "{\"stat\": \"OK\", \"response\": []}", &resp, &meta, &e), 0);
    assert_null(meta);
    json_decref(resp);
}

static void test_bad_shapes(void **state)
{
    (void)state;
    expect_bad(PAGE_HEAD "{\"user_id\": \"DU1\"}" META_TAIL, "without user_id or username");
    expect_bad(PAGE_HEAD "{\"user_id\": 5, \"username\": \"a\"}" META_TAIL, "without user_id");
    expect_bad(PAGE_HEAD "{\"user_id\": null, \"username\": \"a\"}" META_TAIL, "without");
    expect_bad(PAGE_HEAD "{\"user_id\": [\"x\"], \"username\": \"a\"}" META_TAIL, "without");
    expect_bad(PAGE_HEAD "{\"user_id\": \"a\\u0000b\", \"username\": \"a\"}" META_TAIL, "NUL");
    expect_bad(PAGE_HEAD "{\"user_id\": \"a\", \"user_id\": \"b\", \"username\": \"a\"}" META_TAIL,
               "duplicate");
    expect_bad(PAGE_HEAD "1" META_TAIL, "not an object");
    expect_bad(PAGE_HEAD "\"DU1\"" META_TAIL, "not an object");
    expect_bad(PAGE_HEAD "[]" META_TAIL, "not an object");
    expect_bad("{\"stat\": \"OK\", \"response\": {}}", "response array");
    expect_bad("{\"stat\": \"OK\", \"response\": null}", "response array");
    expect_bad("{\"stat\": \"OK\", \"response\": [], \"response\": []}", "duplicate");
    expect_bad("{\"stat\": \"OK\", \"response\": [], \"metadata\": {\"total_objects\": \"7\"}}",
               "integer metadata");
    expect_bad("{\"stat\": \"OK\", \"response\": [], \"metadata\": {\"next_offset\": 1.5}}",
               "integer metadata");
    expect_bad("{\"stat\": \"OK\", \"response\": [], \"metadata\": {\"next_offset\": [1]}}",
               "integer metadata");
    expect_bad("{\"stat\": \"OK\", \"response\": [], \"metadata\": []}", "metadata object");
    expect_bad("[1, 2]", NULL);
    expect_bad("{\"stat\": \"OK\"}", NULL);
    expect_bad("{\"stat\": 1, \"response\": []}", NULL);
}

static void test_bad_json(void **state)
{
    (void)state;
    expect_bad("", NULL);
    expect_bad("not json", NULL);
    expect_bad(PAGE_HEAD "{\"user_id\": \"DU1\", \"username\": \"a\"}", NULL); /* truncated */
    expect_bad(PAGE_HEAD "{\"user_id\": \"DU1\", \"username\": \"\xff\xfe\"}" META_TAIL, NULL);
    expect_bad(PAGE_HEAD "{\"user_id\": \"DU1\", \"username\": \"a\\q\"}" META_TAIL, NULL);
    expect_bad("{\"stat\": \"OK\", \"response\": []} trailing", NULL);
    expect_bad("{\"stat\": \"OK\", \"response\": [], \"metadata\": "
               "{\"total_objects\": 99999999999999999999999}}",
               NULL);
    expect_bad(NULL, NULL);
}

/* Reads body with both readers: the same classified error, field by field. */
static void same_error_as_parser(long status, const char *body, size_t len)
{
    duo_error a, b;
    memset(&a, 0, sizeof a);
    memset(&b, 0, sizeof b);
    json_t *ra = NULL, *rb = NULL;
    int rca = duo_users_scan(status, body, len, &ra, NULL, &a);
    int rcb = duo_response_parse(status, body, len, &rb, NULL, &b);
    assert_int_equal(rca, rcb);
    assert_true(rca < 0);
    assert_null(ra);
    assert_int_equal(a.fail, b.fail);
    assert_int_equal(a.cls, b.cls);
    assert_int_equal(a.code, b.code);
    assert_int_equal(a.http_status, b.http_status);
    assert_string_equal(a.message, b.message);
}

/* Above the 4 MiB cap nothing is parsed: the cap's own error. */
static void test_oversize(void **state)
{
    (void)state;
    size_t n = DUO_MAX_RESPONSE_BYTES + 16;
    char *big = malloc(n);
    assert_non_null(big);
    memcpy(big, PAGE_HEAD, strlen(PAGE_HEAD));
    memset(big + strlen(PAGE_HEAD), ' ', n - strlen(PAGE_HEAD));
    same_error_as_parser(200, big, n);
    free(big);
}

/* Duo's own errors read exactly as duo_response_parse reads them. */
static void test_errors_as_the_parser(void **state)
{
    (void)state;
    static const struct {
        long status;
        const char *body;
    } cases[] = {
        {429, "{\"stat\": \"FAIL\", \"code\": 42901, \"message\": \"Too Many Requests\"}"},
        {200, "{\"stat\": \"FAIL\", \"code\": 40002, \"message\": \"Invalid request\"}"},
        {403, "{\"stat\": \"FAIL\", \"code\": 40301, \"message\": \"Access forbidden\"}"},
        {500, "<html>oops</html>"},
        {401, ""},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        same_error_as_parser(cases[i].status, cases[i].body, strlen(cases[i].body));
}

/* A page like Duo's (and the emulator's) in size: 300 users with many members. */
static char *big_page(int users, size_t *len)
{
    size_t cap = 400 * 1024, n = 0;
    char *b = malloc(cap);
    assert_non_null(b);
    n += (size_t)snprintf(b + n, cap - n, "%s", PAGE_HEAD);
    for (int i = 0; i < users; i++)
        n += (size_t)snprintf(
            b + n, cap - n,
            "%s{\"alias1\": null, \"created\": 1600000000, \"email\": \"u%d@example.com\","
            " \"groups\": [{\"desc\": \"g\", \"name\": \"n\"}], \"is_enrolled\": true,"
            " \"phones\": [{\"number\": \"+1555%04d\", \"platform\": \"Apple iOS\","
            " \"capabilities\": [\"push\", \"sms\"]}], \"realname\": \"User \\u00e9 %d\","
            " \"status\": \"active\", \"tokens\": [], \"user_id\": \"DU%018d\","
            " \"username\": \"user%d\"}",
            i ? "," : "", i, i, i, i, i);
    n += (size_t)snprintf(b + n, cap - n, "%s", META_TAIL);
    *len = n;
    return b;
}

static void test_same_as_tree(void **state)
{
    (void)state;
    size_t len = 0;
    char *body = big_page(300, &len);
    json_t *resp = NULL, *tree = NULL;
    duo_error e;
    memset(&e, 0, sizeof e);
    assert_int_equal(duo_users_scan(200, body, len, &resp, NULL, &e), 0);
    assert_int_equal(duo_response_parse(200, body, len, &tree, NULL, &e), 0);
    assert_int_equal(json_array_size(resp), json_array_size(tree));
    for (size_t i = 0; i < json_array_size(tree); i++) {
        assert_string_equal(user_field(resp, i, "user_id"), user_field(tree, i, "user_id"));
        assert_string_equal(user_field(resp, i, "username"), user_field(tree, i, "username"));
    }
    json_decref(resp);
    json_decref(tree);
    free(body);
}

/* Truncations and byte flips of a real-sized page: an answer or a classified error. */
static void test_mutations_never_crash(void **state)
{
    (void)state;
    size_t len = 0;
    char *body = big_page(40, &len);
    char *copy = malloc(len);
    assert_non_null(copy);
    unsigned seed = 12345;
    for (int i = 0; i < 2000; i++) {
        memcpy(copy, body, len);
        seed = seed * 1103515245u + 12345u;
        size_t at = (seed >> 4) % len, n = len;
        if (i % 3 == 0)
            n = at; /* truncated */
        else
            copy[at] = (char)(seed >> 16);
        json_t *resp = NULL, *meta = NULL;
        duo_error e;
        memset(&e, 0, sizeof e);
        int rc = duo_users_scan(200, copy, n, &resp, &meta, &e);
        if (rc == 0) {
            assert_true(json_is_array(resp));
        } else {
            assert_int_equal(rc, ERR_DUO);
            assert_null(resp);
            /* a mangled "stat" is Duo's failure envelope, read as duo_response_parse does */
            assert_true(e.fail == DUO_FAIL_BAD_RESPONSE || e.fail == DUO_FAIL_HTTP);
        }
        json_decref(resp);
        json_decref(meta);
    }
    free(copy);
    free(body);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_good_page),    cmocka_unit_test(test_last_page_and_no_metadata),
        cmocka_unit_test(test_bad_shapes),   cmocka_unit_test(test_bad_json),
        cmocka_unit_test(test_oversize),     cmocka_unit_test(test_errors_as_the_parser),
        cmocka_unit_test(test_same_as_tree), cmocka_unit_test(test_mutations_never_crash),

    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
