/* test_duo_params.c - the one builder of each acting call's parameters (duo_params.c),
 * without a network: /auth/v2/auth for every factor, /auth/v2/preauth, and pushinfo's
 * encoding. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "duo.h"

/* The value of key in p[0..n), NULL when absent. */
static const char *get(const duo_param *p, int n, const char *key)
{
    for (int i = 0; i < n; i++)
        if (strcmp(p[i].key, key) == 0)
            return p[i].value;
    return NULL;
}

static void test_auth_push(void **state)
{
    (void)state;
    duo_param p[DUO_AUTH_MAX_PARAMS];
    duo_auth_req req = {.user_id = "DU123", .async = 1, .ipaddr = "203.0.113.7"};
    int n = duo_auth_params(&req, p);
    assert_int_equal(n, 5);
    assert_string_equal(get(p, n, "user_id"), "DU123");
    assert_null(get(p, n, "username"));
    assert_string_equal(get(p, n, "factor"), "auto");
    assert_string_equal(get(p, n, "device"), "auto");
    assert_string_equal(get(p, n, "ipaddr"), "203.0.113.7");
    assert_string_equal(get(p, n, "async"), "1");
    assert_null(get(p, n, "pushinfo"));
    /* Every optional field at once still fits. */
    duo_auth_req all = {.username = "u",
                        .factor = "push",
                        .device = "DPX",
                        .passcode = "1",
                        .ipaddr = "i",
                        .type = "t",
                        .display_username = "d",
                        .pushinfo = "a=b",
                        .async = 1};
    n = duo_auth_params(&all, p);
    assert_int_equal(n, 9);
    assert_string_equal(get(p, n, "device"), "DPX");
    assert_string_equal(get(p, n, "pushinfo"), "a=b");
    assert_string_equal(get(p, n, "display_username"), "d");
}

static void test_auth_passcode(void **state)
{
    (void)state;
    duo_param p[DUO_AUTH_MAX_PARAMS];
    /* No device with a passcode (Duo would refuse it), and no async. */
    duo_auth_req req = {
        .username = "carol", .factor = "passcode", .device = "DPX", .passcode = "123456"};
    int n = duo_auth_params(&req, p);
    assert_int_equal(n, 3);
    assert_string_equal(get(p, n, "username"), "carol");
    assert_string_equal(get(p, n, "passcode"), "123456");
    assert_null(get(p, n, "device"));
    assert_null(get(p, n, "async"));
    /* The passcode call keeps connection reuse; a push is sent on a fresh connection. */
    assert_false(duo_call_reaches_user("POST", "/auth/v2/auth", p, (size_t)n));
    duo_auth_req push = {.username = "carol", .factor = "push"};
    n = duo_auth_params(&push, p);
    assert_true(duo_call_reaches_user("POST", "/auth/v2/auth", p, (size_t)n));
}

static void test_exactly_one_user(void **state)
{
    (void)state;
    duo_param p[DUO_AUTH_MAX_PARAMS];
    duo_auth_req none = {.factor = "push"}, both = {.user_id = "DU1", .username = "u"};
    assert_int_equal(duo_auth_params(&none, p), ERR_INVAL);
    assert_int_equal(duo_auth_params(&both, p), ERR_INVAL);
    assert_int_equal(duo_auth_params(NULL, p), ERR_INVAL);
    assert_int_equal(duo_preauth_params(NULL, NULL, NULL, p), ERR_INVAL);
    assert_int_equal(duo_preauth_params("DU1", "u", NULL, p), ERR_INVAL);
    assert_int_equal(duo_preauth_params(NULL, "u", NULL, p), 1);
    assert_string_equal(get(p, 1, "username"), "u");
    assert_int_equal(duo_preauth_params("DU1", NULL, "198.51.100.1", p), 2);
    assert_string_equal(get(p, 2, "user_id"), "DU1");
    assert_string_equal(get(p, 2, "ipaddr"), "198.51.100.1");
}

static void test_pushinfo(void **state)
{
    (void)state;
    json_t *o = json_pack("{s:s, s:s, s:i}", "Domain", "x.test", "App name", "Mail & co=1", "n", 5);
    char *s = NULL;
    assert_int_equal(duo_pushinfo_encode(o, &s, NULL), 0);
    /* The object's order, both sides percent-encoded, a non-string sent empty. */
    assert_string_equal(s, "Domain=x.test&App%20name=Mail%20%26%20co%3D1&n=");
    free(s);
    json_decref(o);
    o = json_object();
    assert_int_equal(duo_pushinfo_encode(o, &s, NULL), 0);
    assert_string_equal(s, "");
    free(s);
    json_decref(o);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_auth_push),
        cmocka_unit_test(test_auth_passcode),
        cmocka_unit_test(test_exactly_one_user),
        cmocka_unit_test(test_pushinfo),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
