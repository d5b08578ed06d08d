/* test_stage_outcome.c - the one mapping from a failed Duo call to a job outcome
 * (stage_fail_duo), without services: which failures are retried, which answer at once,
 * which are dead-lettered, and that Duo's numeric code reaches the reply. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "stage.h"

static duo_error err_of(int http, int code, duo_error_class cls, const char *detail)
{
    duo_error de = {.http_status = http, .code = code, .cls = cls, .attempts = 1};
    de.fail = http ? DUO_FAIL_HTTP : DUO_FAIL_NETWORK;
    snprintf(de.message, sizeof de.message, "message");
    snprintf(de.detail, sizeof de.detail, "%s", detail);
    return de;
}

static long long duo_code(const job_outcome *o)
{
    return json_integer_value(json_object_get(o->error_fields, "duo_code"));
}

static void done(job_outcome *o)
{
    json_decref(o->error_fields);
    json_decref(o->fields);
}

static void test_user_gone(void **state)
{
    (void)state;
    duo_error de = err_of(400, 40002, DUO_CLASS_PERMANENT, "user_id");
    job_outcome o = {0};
    stage_fail_duo(&o, ERR_DUO, &de, "auth", STAGE_CALL_ACTS | STAGE_CALL_USER_WAITS);
    assert_string_equal(o.code, "duo_user_not_found");
    assert_int_equal(o.dead_letter, 0);
    assert_int_equal(duo_code(&o), 40002);
    done(&o);
}

static void test_transient_is_retried_unless_unsafe(void **state)
{
    (void)state;
    duo_error de = err_of(503, 0, DUO_CLASS_TRANSIENT, "");
    job_outcome o = {0};
    stage_fail_duo(&o, ERR_DUO, &de, "enroll_status", 0);
    assert_int_equal(o.retry, 1);
    assert_null(o.code);
    done(&o);

    /* An acting call Duo may have received is not repeated. */
    job_outcome a = {0};
    stage_fail_duo(&a, ERR_DUO, &de, "enrollment", STAGE_CALL_ACTS);
    assert_int_equal(a.retry, 0);
    assert_string_equal(a.code, "duo_unavailable");
    done(&a);

    /* ... but one Duo refused unprocessed (429) or that never reached Duo is. */
    duo_error limited = err_of(429, 42901, DUO_CLASS_TRANSIENT, "");
    job_outcome b = {0};
    stage_fail_duo(&b, ERR_DUO, &limited, "enrollment", STAGE_CALL_ACTS);
    assert_int_equal(b.retry, 1);
    done(&b);
    duo_error unsent = err_of(0, 0, DUO_CLASS_TRANSIENT, "");
    unsent.not_sent = 1;
    job_outcome c = {0};
    stage_fail_duo(&c, ERR_NET, &unsent, "enrollment", STAGE_CALL_ACTS);
    assert_int_equal(c.retry, 1);
    done(&c);

    /* A person waits: no later retry whatever the cause. */
    job_outcome d = {0};
    stage_fail_duo(&d, ERR_DUO, &limited, "auth", STAGE_CALL_USER_WAITS);
    assert_int_equal(d.retry, 0);
    assert_string_equal(d.code, "duo_unavailable");
    assert_int_equal(duo_code(&d), 42901);
    done(&d);
}

static void test_forbidden(void **state)
{
    (void)state;
    duo_error disabled = err_of(403, 40301, DUO_CLASS_LICENSE, "");
    job_outcome o = {0};
    stage_fail_duo(&o, ERR_DUO, &disabled, "auth", 0);
    assert_string_equal(o.code, "duo_integration_disabled");
    assert_int_equal(o.dead_letter, 1);
    assert_int_equal(duo_code(&o), 40301);
    done(&o);

    duo_error other = err_of(403, 40300, DUO_CLASS_LICENSE, "");
    job_outcome f = {0};
    stage_fail_duo(&f, ERR_DUO, &other, "preauth", 0);
    assert_string_equal(f.code, "duo_forbidden");
    assert_int_equal(f.dead_letter, 1);
    done(&f);

    /* The Admin API refused: the plan lacks it; the operator is told, nothing parked. */
    job_outcome a = {0};
    stage_fail_duo(&a, ERR_DUO, &disabled, "users page", STAGE_CALL_ADMIN);
    assert_string_equal(a.code, "license_required");
    assert_int_equal(a.dead_letter, 0);
    assert_int_equal(duo_code(&a), 40301);
    done(&a);
}

static void test_configuration_is_dead_lettered(void **state)
{
    (void)state;
    duo_error sig = err_of(401, 40103, DUO_CLASS_AUTH_CONFIG, "");
    job_outcome o = {0};
    stage_fail_duo(&o, ERR_DUO, &sig, "enroll", 0);
    assert_string_equal(o.code, duo_error_code(&sig));
    assert_int_equal(o.dead_letter, 1);
    assert_int_equal(duo_code(&o), 40103);
    done(&o);

    duo_error bad = err_of(400, 40001, DUO_CLASS_PERMANENT, "factor");
    job_outcome p = {0};
    stage_fail_duo(&p, ERR_DUO, &bad, "auth", 0);
    assert_string_equal(p.code, duo_error_code(&bad));
    assert_int_equal(p.dead_letter, 0);
    assert_int_equal(p.retry, 0);
    done(&p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_user_gone),
        cmocka_unit_test(test_transient_is_retried_unless_unsafe),
        cmocka_unit_test(test_forbidden),
        cmocka_unit_test(test_configuration_is_dead_lettered),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
