/* test_rng.c - jitter seeds (common/base/rng.c): every process gets its own, so workers
 * restarted together do not retry in step after a failover (an unseeded rand() gives
 * every process the same delays). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "rng.h"

/* The first jitter draw of a fresh child process seeded as the store and the engines
 * seed theirs. */
static unsigned first_draw_in_child(void)
{
    int p[2];
    assert_int_equal(pipe(p), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        unsigned seed = rng_seed(NULL);
        unsigned v = (unsigned)rand_r(&seed);
        _exit(write(p[1], &v, sizeof v) == (ssize_t)sizeof v ? 0 : 1);
    }
    unsigned v = 0;
    assert_int_equal(read(p[0], &v, sizeof v), (ssize_t)sizeof v);
    waitpid(pid, NULL, 0);
    close(p[0]);
    close(p[1]);
    return v;
}

static void test_processes_draw_different_jitter(void **state)
{
    (void)state;
    /* Eight processes: with 31-bit draws, a repeat among them is a broken seed. */
    unsigned v[8];
    for (int i = 0; i < 8; i++)
        v[i] = first_draw_in_child();
    for (int i = 0; i < 8; i++)
        for (int k = i + 1; k < 8; k++)
            assert_true(v[i] != v[k]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_processes_draw_different_jitter)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
