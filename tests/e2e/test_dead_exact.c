/* test_dead_exact.c - the counts and contents duoctl gives of P.dead are the truth: a
 * purge stays purged (its acks are applied before it says so), a filtered purge removes
 * exactly what it selected, readers running at once each see every message (none hides
 * what it holds from another), and a copy of a job whose first copy was left in place is
 * not dropped as the twin of a replay. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "testlib.h"
#include "tl_dead.h"
#include "tl_stack.h"

static tl_stack S;
static char dead_q[128];

static int setup(void **state)
{
    (void)state;
    if (tl_stack_init(&S, "dex", 0) < 0)
        return -1;
    snprintf(dead_q, sizeof dead_q, "%s.dead", S.prefix);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    tl_stack_fini(&S);
    return 0;
}

static json_t *duoctl(const char *args)
{
    json_t *j = tl_duoctl_json(&S, args);
    if (!j)
        fail_msg("duoctl %s failed", args);
    return j;
}

static json_int_t num(const json_t *o, const char *k)
{
    return json_integer_value(json_object_get(o, k));
}

/* Holds while nothing moves: every reading of the broker, the list and status agree on
 * `want` for `ms` milliseconds. */
static void assert_dead_stays(long want, int ms)
{
    for (int t = 0; t <= ms; t += 500) {
        long n = tl_mq_messages(dead_q, NULL);
        if (n != want)
            fail_msg("after %d ms the broker counts %ld dead letters, not %ld", t, n, want);
        json_t *l = duoctl("dead list --json");
        if ((long)json_array_size(l) != want)
            fail_msg("after %d ms dead list shows %zu, not %ld", t, json_array_size(l), want);
        json_decref(l);
        json_t *st = duoctl("status --json");
        if (num(json_object_get(st, "dead"), "ready") != want)
            fail_msg("after %d ms status counts %lld, not %ld", t,
                     (long long)num(json_object_get(st, "dead"), "ready"), want);
        json_decref(st);
        usleep(500000);
    }
}

/* A purge of more than the broker's 32 unapplied settlements per channel: each ack is
 * applied before duoctl closes, so none of the messages comes back. */
static void test_purge_all_stays_purged(void **state)
{
    (void)state;
    assert_int_equal(tl_dead_fill(&S, "enroll", "enroll.begin", "pa", 0, 2000), 0);
    json_t *p = duoctl("dead purge --all --yes");
    assert_int_equal(num(p, "purged"), 2000);
    assert_int_equal(num(p, "selected"), 2000);
    json_decref(p);
    assert_dead_stays(0, 4000);
}

static int has_prefix_only(const json_t *l, const char *prefix)
{
    size_t i;
    json_t *x;
    json_array_foreach(l, i, x)
    {
        if (strncmp(json_string_value(json_object_get(x, "job_id")), prefix, strlen(prefix)) != 0)
            return 0;
    }
    return 1;
}

/* Interleaved kinds, one of them purged: acks one by one (none cumulative), paced. */
static void test_filtered_purge_exact(void **state)
{
    (void)state;
    for (int i = 0; i < 6; i++) {
        assert_int_equal(tl_dead_fill(&S, "enroll", "enroll.begin", "fa", i * 100, 100), 0);
        assert_int_equal(tl_dead_fill(&S, "auth", "auth", "fb", i * 100, 100), 0);
    }
    json_t *p = duoctl("dead purge --type auth --yes");
    assert_int_equal(num(p, "purged"), 600);
    assert_int_equal(num(p, "selected"), 600);
    json_decref(p);
    assert_dead_stays(600, 2000);
    json_t *l = duoctl("dead list --json");
    assert_true(has_prefix_only(l, "fa-"));
    json_decref(l);
    json_t *st = duoctl("status --json");
    json_t *q = json_object_get(st, "queues");
    assert_int_equal(num(json_object_get(q, "enroll"), "dead"), 600);
    assert_int_equal(num(json_object_get(q, "auth"), "dead"), 0);
    json_decref(st);
    p = duoctl("dead purge --all --yes");
    assert_int_equal(num(p, "purged"), 600);
    json_decref(p);
    assert_dead_stays(0, 1000);
}

/* Runs `args` in a child writing to path; returns its pid. */
static pid_t spawn(const char *args, const char *path)
{
    char cmd[8192];
    snprintf(cmd, sizeof cmd, "%s/duoctl %s > %s 2>/dev/null", tl_env("DUO_BIN_DIR"), args, path);
    pid_t pid = fork();
    if (pid == 0) {
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    return pid;
}

static json_t *load(const char *path)
{
    json_t *j = json_load_file(path, JSON_DISABLE_EOF_CHECK, NULL);
    if (!j)
        fail_msg("no JSON in %s", path);
    return j;
}

/* Two lists and three status counts at once: each sees all 1,200 dead letters. */
static void test_concurrent_readers_see_all(void **state)
{
    (void)state;
    assert_int_equal(tl_dead_fill(&S, "enroll", "enroll.begin", "ca", 0, 800), 0);
    assert_int_equal(tl_dead_fill(&S, "import", "import.page", "cb", 0, 400), 0);
    char path[5][600];
    pid_t pid[5];
    for (int i = 0; i < 5; i++) {
        snprintf(path[i], sizeof path[i], "%s/concurrent-%d-%d.json", S.logdir, i, (int)getpid());
        pid[i] = spawn(i < 2 ? "dead list --json" : "status --json", path[i]);
        assert_true(pid[i] > 0);
    }
    for (int i = 0; i < 5; i++) {
        int st = 0;
        assert_int_equal(waitpid(pid[i], &st, 0), pid[i]);
        assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
        json_t *j = load(path[i]);
        if (i < 2) {
            assert_int_equal(json_array_size(j), 1200);
        } else {
            json_t *q = json_object_get(j, "queues");
            assert_int_equal(num(json_object_get(j, "dead"), "ready"), 1200);
            assert_int_equal(num(json_object_get(q, "enroll"), "dead"), 800);
            assert_int_equal(num(json_object_get(q, "import"), "dead"), 400);
        }
        json_decref(j);
    }
    /* with a window of 100 messages per consumer: 13 consumers hold the 1,200 */
    setenv("DUO_DEAD_WINDOW", "100", 1);
    json_t *l = duoctl("dead list --json");
    assert_int_equal(json_array_size(l), 1200);
    json_decref(l);
    json_t *p = duoctl("dead purge --type import.page --yes");
    assert_int_equal(num(p, "purged"), 400);
    json_decref(p);
    unsetenv("DUO_DEAD_WINDOW");
    assert_dead_stays(800, 1000);
    p = duoctl("dead purge --all --yes");
    assert_int_equal(num(p, "purged"), 800);
    json_decref(p);
    assert_dead_stays(0, 1000);
}

/* Two dead copies of a job that has succeeded: replay leaves both (already done), and the
 * second is not taken for the twin of a replayed first one and dropped. */
static void test_copy_after_skipped_is_kept(void **state)
{
    (void)state;
    char sql[512];
    snprintf(sql, sizeof sql,
             "INSERT INTO job (job_id, job_type, state, attempts, finished_at) "
             "VALUES ('tw-0', 'enroll.begin', 'done', 1, now())");
    assert_int_equal(tl_exec(S.db, sql), 0);
    assert_int_equal(tl_dead_fill(&S, "enroll", "enroll.begin", "tw", 0, 1), 0);
    assert_int_equal(tl_dead_fill(&S, "enroll", "enroll.begin", "tw", 0, 1), 0);
    json_t *r = duoctl("dead replay --id tw-0");
    assert_int_equal(num(r, "selected"), 2);
    assert_int_equal(num(r, "replayed"), 0);
    assert_int_equal(num(r, "skipped"), 2);
    assert_int_equal(num(r, "duplicates_dropped"), 0);
    json_decref(r);
    assert_dead_stays(2, 1000);
    json_t *l = duoctl("dead list --json --reason already_done");
    assert_int_equal(json_array_size(l), 2);
    json_decref(l);
    r = duoctl("dead purge --all --yes");
    assert_int_equal(num(r, "purged"), 2);
    json_decref(r);
}

/* A replay of everything (one cumulative reject for each run of hand-backs): 1,500
 * messages of 1,000 jobs, the second copies of 500 interleaved. Every job goes back to
 * its work queue once (no worker runs it here), every twin is dropped. */
static void test_replay_all_exact(void **state)
{
    (void)state;
    for (int i = 0; i < 5; i++) {
        assert_int_equal(tl_dead_fill(&S, "enroll", "enroll.begin", "ra", i * 200, 200), 0);
        assert_int_equal(tl_dead_fill(&S, "enroll", "enroll.begin", "ra", i * 200, 100), 0);
    }
    json_t *r = duoctl("dead replay --all");
    assert_int_equal(num(r, "selected"), 1500);
    assert_int_equal(num(r, "replayed"), 1000);
    assert_int_equal(num(r, "duplicates_dropped"), 500);
    json_decref(r);
    char work_q[128];
    snprintf(work_q, sizeof work_q, "%s.enroll", S.prefix);
    long leaving = 1;
    for (int i = 0; i < 100 && leaving; i++) {
        tl_mq_messages(dead_q, &leaving);
        if (leaving)
            usleep(100000);
    }
    assert_int_equal(leaving, 0);
    assert_int_equal(tl_mq_messages(work_q, NULL), 1000);
    assert_dead_stays(0, 1000);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_purge_all_stays_purged),
        cmocka_unit_test(test_filtered_purge_exact),
        cmocka_unit_test(test_concurrent_readers_see_all),
        cmocka_unit_test(test_copy_after_skipped_is_kept),
        cmocka_unit_test(test_replay_all_exact),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
