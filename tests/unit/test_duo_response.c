/* test_duo_response.c - duo_response_parse and duo_request_build without a network:
 * malformed answers are classified errors (never crashes), and a built request carries
 * what was signed (v5 JSON body + X-Duo-Date, v2 form body + Date, GET query). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "duo.h"

static int parse(long status, const char *body, duo_error *e, json_t **resp)
{
    memset(e, 0, sizeof *e);
    return duo_response_parse(status, body, body ? strlen(body) : 0, resp, NULL, e);
}

static void expect_bad(long status, const char *body)
{
    duo_error e;
    json_t *resp = (json_t *)1;
    assert_int_equal(parse(status, body, &e, &resp), ERR_DUO);
    assert_null(resp);
    assert_int_equal(e.fail, DUO_FAIL_BAD_RESPONSE);
    assert_int_equal(e.cls, DUO_CLASS_PERMANENT);
    assert_string_equal(duo_error_code(&e), "duo_bad_response");
    assert_true(strlen(e.message) > 0);
}

static void test_malformed_success(void **state)
{
    (void)state;
    expect_bad(200, "");
    expect_bad(200, "not json");
    expect_bad(200, "[1,2]");
    expect_bad(200, "{\"response\": {}}");
    expect_bad(200, "{\"stat\": \"OK\"}");
    expect_bad(200, "{\"stat\": 1, \"response\": {}}");
    expect_bad(200, "{\"stat\": \"OK\", \"response\": {\"a\": ");
    expect_bad(200, NULL);
}

static void test_huge_body(void **state)
{
    (void)state;
    size_t n = DUO_MAX_RESPONSE_BYTES + 16;
    char *big = malloc(n);
    assert_non_null(big);
    memset(big, ' ', n);
    duo_error e;
    memset(&e, 0, sizeof e);
    json_t *resp = NULL;
    assert_int_equal(duo_response_parse(200, big, n, &resp, NULL, &e), ERR_DUO);
    assert_int_equal(e.fail, DUO_FAIL_BAD_RESPONSE);
    assert_non_null(strstr(e.message, "4 MiB"));
    free(big);
}

static void test_ok_with_metadata(void **state)
{
    (void)state;
    const char *body = "{\"stat\":\"OK\",\"response\":[{\"u\":1}],"
                       "\"metadata\":{\"total_objects\":3,\"next_offset\":null}}";
    json_t *resp = NULL, *meta = NULL;
    duo_error e;
    assert_int_equal(duo_response_parse(200, body, strlen(body), &resp, &meta, &e), 0);
    assert_true(json_is_array(resp));
    assert_int_equal(json_integer_value(json_object_get(meta, "total_objects")), 3);
    json_decref(resp);
    json_decref(meta);
    /* A bare string response (enroll_status) is fine. */
    assert_int_equal(parse(200, "{\"stat\":\"OK\",\"response\":\"waiting\"}", &e, &resp), 0);
    assert_string_equal(json_string_value(resp), "waiting");
    json_decref(resp);
}

static void expect_fail(long status, int code, duo_error_class cls, const char *name)
{
    char body[256];
    snprintf(body, sizeof body,
             "{\"stat\":\"FAIL\",\"code\":%d,\"message\":\"m%d\",\"message_detail\":\"d\"}", code,
             code);
    duo_error e;
    json_t *resp = NULL;
    assert_int_equal(parse(status, body, &e, &resp), ERR_DUO);
    assert_int_equal(e.http_status, status);
    assert_int_equal(e.code, code);
    assert_int_equal(e.cls, cls);
    assert_string_equal(duo_error_code(&e), name);
    assert_string_equal(e.detail, "d");
    assert_non_null(strstr(e.message, "m"));
}

static void test_error_envelopes(void **state)
{
    (void)state;
    expect_fail(400, 40002, DUO_CLASS_PERMANENT, "duo_invalid_request");
    expect_fail(401, 40101, DUO_CLASS_AUTH_CONFIG, "duo_missing_credentials");
    expect_fail(401, 40102, DUO_CLASS_AUTH_CONFIG, "duo_bad_integration_key");
    expect_fail(401, 40103, DUO_CLASS_AUTH_CONFIG, "duo_bad_signature");
    expect_fail(401, 40104, DUO_CLASS_AUTH_CONFIG, "duo_timestamp");
    expect_fail(403, 40301, DUO_CLASS_LICENSE, "duo_forbidden");
    expect_fail(429, 42901, DUO_CLASS_TRANSIENT, "duo_rate_limited");
    expect_fail(500, 50001, DUO_CLASS_TRANSIENT, "duo_unavailable");
    assert_string_equal(duo_error_class_name(DUO_CLASS_LICENSE), "license");
    assert_string_equal(duo_error_class_name(DUO_CLASS_TLS), "tls");
    /* A non-JSON error page from a proxy still reports the status. */
    duo_error e;
    json_t *resp = NULL;
    assert_int_equal(parse(502, "<html>bad gateway</html>", &e, &resp), ERR_DUO);
    assert_int_equal(e.http_status, 502);
    assert_int_equal(e.cls, DUO_CLASS_TRANSIENT);
    assert_non_null(strstr(e.message, "502"));
}

static void test_result_enum(void **state)
{
    (void)state;
    assert_int_equal(duo_result_of("allow"), DUO_RESULT_ALLOW);
    assert_int_equal(duo_result_of("deny"), DUO_RESULT_DENY);
    assert_int_equal(duo_result_of("Allow"), DUO_RESULT_OTHER);
    assert_int_equal(duo_result_of("allow "), DUO_RESULT_OTHER);
    assert_int_equal(duo_result_of(""), DUO_RESULT_OTHER);
    assert_int_equal(duo_result_of(NULL), DUO_RESULT_OTHER);
}

static const char *header(const duo_request *r, const char *prefix)
{
    for (size_t i = 0; i < r->nheaders; i++)
        if (strncmp(r->headers[i], prefix, strlen(prefix)) == 0)
            return r->headers[i] + strlen(prefix);
    return NULL;
}

static void test_request_build(void **state)
{
    (void)state;
    duo_client_opts o;
    duo_client_opts_default(&o);
    o.host = "Example.COM:8443", o.ikey = "IK", o.skey = "SK";
    duo_param p[] = {{"username", "a b"}};
    duo_request *r = NULL;
    err_t e = {0};
    assert_int_equal(duo_request_build(&o, "post", "/auth/v2/enroll", p, 1, 1345570158, &r, &e), 0);
    assert_string_equal(r->method, "POST");
    assert_string_equal(r->url, "https://Example.COM:8443/auth/v2/enroll");
    assert_string_equal(r->body, "{\"username\":\"a b\"}");
    assert_string_equal(header(r, "X-Duo-Date: "), "Tue, 21 Aug 2012 17:29:18 -0000");
    assert_string_equal(header(r, "Content-Type: "), "application/json");
    /* The signature covers the lower-cased host without its port. */
    duo_sign_input in = {.sig_version = 5,
                         .method = "POST",
                         .host = "example.com",
                         .path = "/auth/v2/enroll",
                         .date = "Tue, 21 Aug 2012 17:29:18 -0000",
                         .body = r->body,
                         .body_len = r->body_len,
                         .x_duo = &(duo_param){"X-Duo-Date", "Tue, 21 Aug 2012 17:29:18 -0000"},
                         .nx_duo = 1};
    char hex[DUO_HEX_LEN], *auth = NULL;
    assert_int_equal(duo_sign(&in, "SK", hex, &e), 0);
    assert_int_equal(duo_auth_header("IK", hex, &auth, &e), 0);
    assert_string_equal(header(r, "Authorization: "), auth);
    free(auth);
    duo_request_free(r);
    o.sig_version = 2;
    assert_int_equal(duo_request_build(&o, "POST", "/x", p, 1, 0, &r, &e), 0);
    assert_string_equal(r->body, "username=a%20b");
    assert_non_null(header(r, "Date: "));
    assert_null(header(r, "X-Duo-Date: "));
    duo_request_free(r);
    assert_int_equal(duo_request_build(&o, "GET", "/x", p, 1, 0, &r, &e), 0);
    assert_string_equal(r->url, "https://Example.COM:8443/x?username=a%20b");
    assert_null(r->body);
    duo_request_free(r);
    o.skey = NULL;
    assert_int_equal(duo_request_build(&o, "GET", "/x", NULL, 0, 0, &r, &e), ERR_INVAL);
    assert_null(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_malformed_success), cmocka_unit_test(test_huge_body),
        cmocka_unit_test(test_ok_with_metadata),  cmocka_unit_test(test_error_envelopes),
        cmocka_unit_test(test_result_enum),       cmocka_unit_test(test_request_build),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
