/* test_client_py.c - the Python client package (clients/python) against a live stack: the
 * three workers on a private prefix and database, the emulator, the shared broker. Runs
 * the package's pytest suite (every job type, the contract's error codes, concurrent calls
 * from threads and asyncio tasks, replies arriving twice, timeouts) through tl_pytest;
 * the tests that restart the broker or stop a cluster node are test_client_py_serial's. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>

#include <cmocka.h>

#include "testlib.h"
#include "tl_pytest.h"
#include "tl_stack.h"

static tl_stack S;

static int setup(void **state)
{
    (void)state;
    if (tl_stack_init(&S, "clientpy", 0) < 0)
        return -1;
    return tl_stack_workers(&S, NULL);
}

static int teardown(void **state)
{
    (void)state;
    tl_stack_fini(&S);
    return 0;
}

static void test_client_package(void **state)
{
    (void)state;
    assert_int_equal(tl_pytest(&S, "main", "not restart and not cluster"), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_client_package),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
