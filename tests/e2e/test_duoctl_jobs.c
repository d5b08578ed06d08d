/* test_duoctl_jobs.c - `duoctl enroll|auth|job` against real workers: each publishes a
 * job per schemas/README.md, waits for the reply and prints it as JSON; exit codes say
 * ok (0), error reply (1), usage (2) and no reply in time (3). */
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
    if (tl_stack_init(&S, "duoctljobs", 0) < 0 || tl_stack_user(&S, "hal") < 0)
        return -1;
    if (tl_stack_worker(&S, "enroll", NULL) < 0 || tl_stack_worker(&S, "auth", NULL) < 0)
        return -1;
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    tl_stack_fini(&S);
    return 0;
}

static json_t *run_json(const char *args, int want_status)
{
    static char out[16384];
    int st = tl_stack_duoctl(&S, args, out, sizeof out);
    if (st != want_status)
        fail_msg("duoctl %s: exit %d, wanted %d; output: %s", args, st, want_status, out);
    json_t *j = json_loads(out, JSON_DISABLE_EOF_CHECK, NULL);
    return j;
}

static void test_enroll_then_auth(void **state)
{
    (void)state;
    char args[512], body[512];
    /* The stage by name: duoctl looks its uuid up. */
    snprintf(args, sizeof args, "enroll begin --stage %s --username hal --timeout 60",
             S.stage_name);
    json_t *r = run_json(args, 0);
    assert_string_equal(tl_str(r, "status"), "ok");
    snprintf(body, sizeof body,
             "{\"account\":\"%s\",\"activation_code\":\"%s\",\"action\":\"complete\"}", S.account,
             tl_str(r, "activation_code"));
    assert_int_equal(tl_emu("POST", "/_emu/enrollment", body, NULL, 0), 200);
    snprintf(args, sizeof args, "enroll status --stage %s --enrollment %s", S.stage_uuid,
             tl_str(r, "enrollment_id"));
    json_decref(r);
    r = run_json(args, 0);
    assert_string_equal(tl_str(r, "enrollment_status"), "success");
    json_decref(r);

    snprintf(args, sizeof args,
             "auth --stage %s --username hal --factor push "
             "--pushinfo 'Domain=login.example.com' --ipaddr 203.0.113.9",
             S.stage_uuid);
    r = run_json(args, 0);
    assert_string_equal(tl_str(r, "result"), "allow");
    json_decref(r);
    snprintf(args, sizeof args,
             "auth --stage %s --username hal --factor passcode --passcode 000000", S.stage_uuid);
    r = run_json(args, 0);
    assert_string_equal(tl_str(r, "result"), "deny");
    json_decref(r);
}

static void test_errors_and_usage(void **state)
{
    (void)state;
    char args[512];
    snprintf(args, sizeof args, "auth --stage %s --username nobody-here", S.stage_uuid);
    json_t *r = run_json(args, 1);
    assert_string_equal(tl_str(r, "status"), "error");
    json_decref(r);
    /* A generic job with a schema violation is answered, not hung. */
    snprintf(args, sizeof args, "job enroll.begin '{\"stage_uuid\":\"%s\",\"username\":7}'",
             S.stage_uuid);
    r = run_json(args, 1);
    assert_string_equal(tl_code(r), "schema_invalid");
    json_decref(r);
    assert_int_equal(tl_stack_duoctl(&S, "enroll", NULL, 0), 2);
    assert_int_equal(tl_stack_duoctl(&S, "job enroll.begin 'not json'", NULL, 0), 2);
    assert_int_equal(
        tl_stack_duoctl(&S, "enroll begin --stage no-such-stage --username hal", NULL, 0), 1);
    /* No worker serves import here: no reply in time is exit 3. */
    snprintf(args, sizeof args,
             "job import.manual '{\"stage_uuid\":\"%s\",\"duo_user_id\":\"x\","
             "\"username\":\"hal\"}' --timeout 2",
             S.stage_uuid);
    assert_int_equal(tl_stack_duoctl(&S, args, NULL, 0), 3);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_enroll_then_auth),
        cmocka_unit_test(test_errors_and_usage),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
