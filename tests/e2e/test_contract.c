/* test_contract.c - the message contract of schemas/README.md end to end, from the
 * integrator's side: starts a private stack (database, emulator account, stage, the
 * three workers) and runs tests/e2e/contract.py against it with Debian's pika, msgpack
 * and jsonschema. The script reads routing keys, message_id rules, error codes and the
 * Python examples from schemas/README.md, so documentation and workers are held together;
 * it exits non-zero naming every broken promise. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include <cmocka.h>

#include "testlib.h"
#include "tl_stack.h"

static tl_stack S;

static int setup(void **state)
{
    (void)state;
    if (tl_stack_init(&S, "contract", 0) < 0)
        return -1;
    return tl_stack_workers(&S, NULL);
}

static int teardown(void **state)
{
    (void)state;
    tl_stack_fini(&S);
    return 0;
}

static void test_contract_as_documented(void **state)
{
    (void)state;
    /* The script's environment: the stack's (set by tl_stack_init) plus what it needs to
     * drive the emulator and name the stage. The secret stays in the environment only. */
    setenv("DUO_STAGE_UUID", S.stage_uuid, 1);
    setenv("EMU_ACCOUNT", S.account, 1);
    setenv("EMU_AUTH_IKEY", S.auth_ikey, 1);
    setenv("DUO_SOURCE_DIR", tl_env("DUO_SOURCE_DIR"), 1);
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 %s/tests/e2e/contract.py",
             tl_env("DUO_SOURCE_DIR"));
    int st = system(cmd);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_contract_as_documented),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
