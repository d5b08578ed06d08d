/* test_bad_input.c - a corpus of malformed messages and malformed Duo answers sent
 * through a running worker: each gets a clear error reply, malformed messages are
 * dead-lettered, and the worker keeps serving (a good job afterwards succeeds). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "testlib.h"
#include "tl_stack.h"

static tl_stack S;

static int setup(void **state)
{
    (void)state;
    /* One attempt, short Duo timeouts: every answer is final and quick. */
    setenv("JOB_MAX_ATTEMPTS", "1", 1);
    setenv("DUO_TIMEOUT_MS", "2000", 1);
    setenv("DUO_QUICK_TIMEOUT_MS", "2000", 1); /* enroll is answered at once by a live Duo */
    setenv("DUO_RETRY_ATTEMPTS", "1", 1);
    if (tl_stack_init(&S, "badinput", 0) < 0)
        return -1;
    return tl_stack_worker(&S, "enroll", NULL) > 0 ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    tl_stack_fini(&S);
    return 0;
}

typedef struct {
    const char *name;
    const unsigned char *bytes;
    size_t len;
    const char *type; /* AMQP type; NULL = absent */
    const char *want_code;
} bad_msg;

static char *send_bad(const bad_msg *b)
{
    char id[64];
    tl_job_id(&S, id, sizeof id);
    mq_msg m = {.routing_key = "enroll",
                .body = b->bytes,
                .body_len = b->len,
                .message_id = id,
                .correlation_id = id,
                .type = b->type,
                .content_type = "application/msgpack"};
    err_t e = {0};
    assert_int_equal(jobs_send_raw(S.client, &m, &e), 0);
    json_t *r = NULL;
    if (jobs_wait(S.client, id, 30000, &r, NULL, &e) != 1)
        fail_msg("%s: no reply", b->name);
    char *code = strdup(tl_code(r));
    const char *msg = json_string_value(json_object_get(json_object_get(r, "error"), "message"));
    if (!msg || !*msg)
        fail_msg("%s: error reply without a message", b->name);
    json_decref(r);
    return code;
}

static void good_job_still_works(void)
{
    static int n;
    char user[32], id[64];
    snprintf(user, sizeof user, "ok%d", n++);
    assert_int_equal(tl_stack_user(&S, user), 0);
    tl_job_id(&S, id, sizeof id);
    json_t *r =
        tl_job(&S, "enroll.begin", id,
               json_pack("{s:s, s:s}", "stage_uuid", S.stage_uuid, "username", user), 30000);
    assert_non_null(r);
    assert_string_equal(tl_str(r, "status"), "ok");
    json_decref(r);
}

static void test_malformed_messages(void **state)
{
    (void)state;
    /* map of 2 with only one entry */
    static const unsigned char truncated[] = {0x82, 0xa1, 'a', 0xa1};
    /* {"username": <str of 70000 bytes>} header only: declared far longer than sent */
    static const unsigned char huge_decl[] = {0x81, 0xa8, 'u',  's',  'e',  'r',  'n',  'a',
                                              'm',  'e',  0xdb, 0x00, 0x10, 0x00, 0x00, 'x'};
    /* {"a": [[[[...]]]]} 40 levels deep */
    static unsigned char deep[64];
    size_t dl = 0;
    deep[dl++] = 0x81;
    deep[dl++] = 0xa1;
    deep[dl++] = 'a';
    for (int i = 0; i < 40; i++)
        deep[dl++] = 0x91;
    deep[dl++] = 0xc0;
    /* {"username": "\xff\xfe"}: invalid UTF-8 */
    static const unsigned char bad_utf8[] = {0x81, 0xa8, 'u', 's',  'e',  'r', 'n',
                                             'a',  'm',  'e', 0xa2, 0xff, 0xfe};
    /* {"a": 1, "a": 2}: a duplicated key */
    static const unsigned char dup_keys[] = {0x82, 0xa1, 'a', 0x01, 0xa1, 'a', 0x02};
    /* a valid body, but no type property */
    static const unsigned char valid[] = {0x81, 0xa8, 'u', 's', 'e',  'r',
                                          'n',  'a',  'm', 'e', 0xa1, 'x'};
    /* {"username": 1.5}: a wrong type */
    static const unsigned char wrong_type[] = {0x81, 0xa8, 'u',  's', 'e', 'r', 'n', 'a', 'm', 'e',
                                               0xcb, 0x3f, 0xf8, 0,   0,   0,   0,   0,   0};
    const bad_msg corpus[] = {
        {"truncated", truncated, sizeof truncated, "enroll.begin", "invalid_message"},
        {"huge declared string", huge_decl, sizeof huge_decl, "enroll.begin", "invalid_message"},
        {"deep nesting", deep, dl, "enroll.begin", "invalid_message"},
        {"invalid utf-8", bad_utf8, sizeof bad_utf8, "enroll.begin", "invalid_message"},
        {"duplicated keys", dup_keys, sizeof dup_keys, "enroll.begin", "invalid_message"},
        {"no type property", valid, sizeof valid, NULL, "unknown_job_type"},
        {"unknown type", valid, sizeof valid, "enroll.everything", "unknown_job_type"},
        {"wrong field type", wrong_type, sizeof wrong_type, "enroll.begin", "schema_invalid"},
        {"empty body", (const unsigned char *)"", 0, "enroll.begin", "invalid_message"},
    };
    for (size_t i = 0; i < sizeof corpus / sizeof corpus[0]; i++) {
        char *code = send_bad(&corpus[i]);
        if (strcmp(code, corpus[i].want_code) != 0)
            fail_msg("%s: got '%s', wanted '%s'", corpus[i].name, code, corpus[i].want_code);
        free(code);
    }
    good_job_still_works();
}

/* Queues one emulator fault for enroll calls. */
static void duo_fault(const char *json_fields)
{
    char body[1024];
    snprintf(body, sizeof body,
             "{\"account\":\"%s\",\"path_prefix\":\"/auth/v2/enroll\","
             "\"count\":1,%s}",
             S.account, json_fields);
    assert_int_equal(tl_emu("POST", "/_emu/faults", body, NULL, 0), 200);
}

static char *begin_code(void)
{
    static int n;
    char user[32], id[64];
    snprintf(user, sizeof user, "duo%d", n++);
    assert_int_equal(tl_stack_user(&S, user), 0);
    tl_job_id(&S, id, sizeof id);
    json_t *r =
        tl_job(&S, "enroll.begin", id,
               json_pack("{s:s, s:s}", "stage_uuid", S.stage_uuid, "username", user), 60000);
    assert_non_null(r);
    assert_string_equal(tl_str(r, "status"), "error");
    char *code = strdup(tl_code(r));
    json_decref(r);
    return code;
}

static void test_malformed_duo_answers(void **state)
{
    (void)state;
    static const struct {
        const char *fault;
        const char *want;
    } cases[] = {
        {"\"body\":\"<html>proxy error</html>\"", "duo_bad_response"},
        {"\"body\":\"{\\\"stat\\\":\\\"OK\\\"}\"", "duo_bad_response"},
        {"\"body\":\"{\\\"stat\\\":\\\"OK\\\",\\\"response\\\":{\\\"user_id\\\":\\\"DUX\\\"}}\"",
         "duo_bad_response"},
        {"\"body\":\"[1,2,3]\"", "duo_bad_response"},
        /* enroll makes Duo act: after a 5xx or a timeout it may have, so it is not
         * repeated (a second call would create a second activation) */
        {"\"status\":503", "duo_unavailable"},
        /* slow drip: the answer comes after the 2 s timeout */
        {"\"latency_ms\":4000", "duo_unavailable"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        duo_fault(cases[i].fault);
        char *code = begin_code();
        if (strcmp(code, cases[i].want) != 0)
            fail_msg("fault %s: got '%s', wanted '%s'", cases[i].fault, code, cases[i].want);
        free(code);
    }
    /* A huge answer (over the client's 4 MiB cap). */
    size_t n = 5u << 20;
    char *big = malloc(n + 200);
    assert_non_null(big);
    int k = snprintf(big, 200,
                     "{\"account\":\"%s\",\"path_prefix\":\"/auth/v2/enroll\","
                     "\"count\":1,\"body\":\"",
                     S.account);
    memset(big + k, 'x', n);
    memcpy(big + k + n, "\"}", 3);
    assert_int_equal(tl_emu("POST", "/_emu/faults", big, NULL, 0), 200);
    free(big);
    char *code = begin_code();
    assert_string_equal(code, "duo_bad_response");
    free(code);
    good_job_still_works();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_malformed_messages),
        cmocka_unit_test(test_malformed_duo_answers),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
