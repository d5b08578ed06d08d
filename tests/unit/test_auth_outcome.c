/* test_auth_outcome.c - what the authentication worker makes of Duo's answer
 * (auth_outcome) and of a preauth's device list (auth_device_check), without services:
 * only allow/bypass lets the user in, a lockout and a fraud report are told apart, the
 * job's deadline turns into a timeout answer, and a device must have the capability. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "auth_int.h"
#include "clock.h"

static auth_call call_with_deadline(long long deadline_ms)
{
    auth_call c = {0};
    snprintf(c.dev.uuid, sizeof c.dev.uuid, "11111111-2222-3333-4444-555555555555");
    c.deadline_ms = deadline_ms;
    return c;
}

/* Runs auth_outcome on a Duo answer {result, status}; returns what the challenge row
 * records, fills *o. */
static const char *answer(const char *result, const char *status, job_outcome *o)
{
    auth_call c = call_with_deadline(clock_ms() + 60000);
    json_t *resp =
        json_pack("{s:s, s:s, s:s}", "result", result, "status", status, "status_msg", "msg");
    duo_error de = {0};
    const char *decided = NULL;
    memset(o, 0, sizeof *o);
    auth_outcome(&c, 0, resp, &de, o, &decided);
    json_decref(resp);
    return decided;
}

static const char *result_of(const job_outcome *o)
{
    return json_string_value(json_object_get(o->fields, "result"));
}

static void test_allow_and_bypass(void **state)
{
    (void)state;
    job_outcome o;
    assert_string_equal(answer("allow", "allow", &o), "allow");
    assert_string_equal(result_of(&o), "allow");
    assert_false(json_is_true(json_object_get(o.fields, "bypass")));
    json_decref(o.fields);
    assert_string_equal(answer("allow", "bypass", &o), "allow");
    assert_true(json_is_true(json_object_get(o.fields, "bypass")));
    json_decref(o.fields);
    /* "allow" with a status Duo does not use for a real approval is not a way in. */
    assert_string_equal(answer("allow", "odd", &o), "other");
    assert_string_equal(result_of(&o), "deny");
    json_decref(o.fields);
}

static void test_denials(void **state)
{
    (void)state;
    job_outcome o;
    assert_string_equal(answer("deny", "deny", &o), "deny");
    assert_string_equal(result_of(&o), "deny");
    json_decref(o.fields);
    assert_string_equal(answer("deny", "fraud", &o), "deny");
    assert_string_equal(json_string_value(json_object_get(o.fields, "duo_status")), "fraud");
    json_decref(o.fields);
    assert_string_equal(answer("deny", "locked_out", &o), "other");
    assert_string_equal(o.code, "duo_user_locked_out");
    assert_null(o.fields);
    assert_string_equal(answer("deny", "timeout", &o), "timeout");
    assert_string_equal(result_of(&o), "timeout");
    json_decref(o.fields);
    assert_string_equal(answer("waiting", "pushed", &o), "other"); /* unexpected: deny */
    assert_string_equal(result_of(&o), "deny");
    json_decref(o.fields);
}

static void test_deadline_and_failures(void **state)
{
    (void)state;
    job_outcome o = {0};
    const char *decided = NULL;
    duo_error de = {.fail = DUO_FAIL_TIMEOUT, .cls = DUO_CLASS_TRANSIENT};
    auth_call late = call_with_deadline(clock_ms() - 1);
    auth_outcome(&late, ERR_TIMEOUT, NULL, &de, &o, &decided);
    assert_string_equal(decided, "timeout");
    assert_string_equal(result_of(&o), "timeout");
    json_decref(o.fields);

    /* The same timeout long before the deadline is Duo's trouble, answered at once. */
    memset(&o, 0, sizeof o);
    auth_call early = call_with_deadline(clock_ms() + 60000);
    auth_outcome(&early, ERR_TIMEOUT, NULL, &de, &o, &decided);
    assert_string_equal(decided, "error");
    assert_string_equal(o.code, "duo_unavailable");
    assert_int_equal(o.retry, 0);
    json_decref(o.error_fields);
}

static void test_device_capability(void **state)
{
    (void)state;
    json_t *preauth =
        json_pack("{s:[{s:s, s:[s]}]}", "devices", "device", "DPHONE", "capabilities", "sms");
    json_t *push = json_pack("{s:s, s:s}", "factor", "push", "device", "DPHONE");
    json_t *sms = json_pack("{s:s, s:s}", "factor", "sms", "device", "DPHONE");
    json_t *other = json_pack("{s:s, s:s}", "factor", "sms", "device", "DOTHER");
    job j = {.id = "j", .type = "auth.challenge"};
    job_outcome o = {0};
    j.body = push;
    assert_int_equal(auth_device_check(&j, preauth, &o), -1);
    assert_string_equal(o.code, "invalid_parameter");
    assert_non_null(strstr(o.message, "cannot do push"));
    memset(&o, 0, sizeof o);
    j.body = sms;
    assert_int_equal(auth_device_check(&j, preauth, &o), 0);
    j.body = other;
    assert_int_equal(auth_device_check(&j, preauth, &o), -1);
    assert_string_equal(o.code, "invalid_parameter");
    json_decref(preauth);
    json_decref(push);
    json_decref(sms);
    json_decref(other);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_allow_and_bypass),
        cmocka_unit_test(test_denials),
        cmocka_unit_test(test_deadline_and_failures),
        cmocka_unit_test(test_device_capability),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
