/* test_dead_soak.c - a soak of the dead-letter tooling: rounds of thousands of dead letters
 * of several stages and reasons; a replay and a purge each killed with SIGKILL from
 * outside at a random moment and run again; `duoctl status --watch` and `dead list`
 * running beside them all the while. After each round every replayed job was answered
 * exactly once, and the queue's contents and every count status and list print equal
 * the truth, with no stale twins left.
 *
 * Short in the suite; longer by environment: DUO_SOAK_ROUNDS (3), DUO_SOAK_DEAD (dead
 * letters per round, 1500), DUO_SOAK_SEED (time). It ends with one line:
 *   soak rounds=R kills=K dead_letters=D answered=A snapshots=N mismatches=M seed=S
 * (snapshots: what status --watch and the list loop printed during the rounds, each
 * checked: kinds adding up to the total, no message twice, within what was there). */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "testlib.h"
#include "tl_dead.h"
#include "tl_stack.h"

static tl_stack S;
static char dead_q[128];
static const char *other_stage = "0b0b0b0b-0000-4000-8000-00000000beef";
static long kills, mismatches, answered, dead_total, snapshots;

static int env_int(const char *name, int dflt)
{
    const char *v = getenv(name);
    return v && *v ? (int)strtol(v, NULL, 10) : dflt;
}

static int setup(void **state)
{
    (void)state;
    if (tl_stack_init(&S, "soak", 0) < 0)
        return -1;
    snprintf(dead_q, sizeof dead_q, "%s.dead", S.prefix);
    static char port_env[32];
    snprintf(port_env, sizeof port_env, "METRICS_PORT=%d", tl_free_port());
    static const char *env[] = {port_env, NULL};
    if (tl_stack_worker(&S, "enroll", env) <= 0)
        return -1;
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    tl_stack_fini(&S);
    return 0;
}

static void mismatch(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "soak mismatch: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    mismatches++;
}

/* Runs duoctl with `args` (words split on blanks) without a shell, output to `out`. */
static pid_t spawn(const char *args, const char *out)
{
    pid_t pid = fork();
    if (pid != 0)
        return pid;
    char buf[512], bin[600];
    snprintf(buf, sizeof buf, "%s", args);
    snprintf(bin, sizeof bin, "%s/duoctl", tl_env("DUO_BIN_DIR"));
    char *argv[32] = {bin};
    int n = 1;
    for (char *save = NULL, *w = strtok_r(buf, " ", &save); w && n < 31;
         w = strtok_r(NULL, " ", &save))
        argv[n++] = w;
    argv[n] = NULL;
    FILE *f = freopen(out, "w", stdout);
    (void)f;
    FILE *g = freopen("/dev/null", "w", stderr);
    (void)g;
    execv(bin, argv);
    _exit(127);
}

/* Starts `args`, kills it with SIGKILL after a random 0..max_ms, then runs it again to
 * its end. */
static void killed_then_again(const char *args, int max_ms)
{
    pid_t pid = spawn(args, "/dev/null");
    assert_true(pid > 0);
    usleep((useconds_t)(rand() % (max_ms + 1)) * 1000);
    int st = 0;
    kill(pid, SIGKILL);
    waitpid(pid, &st, 0);
    if (WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL) /* else it had finished already */
        kills++;
    json_t *j = tl_duoctl_json(&S, args);
    if (!j)
        mismatch("'%s' failed after the kill", args);
    json_decref(j);
}

typedef struct group {
    const char *name, *kind, *type, *stage, *reason;
    int replay, no_username;
} group;

/* Several stages and reasons; the replayable one runs on the stack's stage. */
static group groups[] = {
    {"rp", "enroll", "enroll.begin", NULL, "duo_bad_signature", 1, 0},
    {"si", "enroll", "enroll.begin", NULL, "schema_invalid", 0, 1},
    {"ax", "auth", "auth", NULL, "retries_exhausted", 0, 0},
    {"uj", "enroll", "bogus.kind", NULL, "unknown_job_type", 0, 0},
    {"ip", "import", "import.page", NULL, "duo_bad_signature", 0, 0},
};
enum { NGROUPS = sizeof groups / sizeof groups[0] };

static void record_errors(int round, const group *g, int n)
{
    char sql[1024];
    snprintf(sql, sizeof sql,
             "INSERT INTO job (job_id, job_type, state, attempts, error_code, finished_at) "
             "SELECT 'r%d%s-' || g, '%s', 'done', 1, '%s', now() FROM generate_series(0, %d) g",
             round, g->name, g->type, g->reason, n - 1);
    assert_int_equal(tl_exec(S.db, sql), 0);
}

static void fill_round(int round, int per)
{
    for (int i = 0; i < NGROUPS; i++) {
        group *g = &groups[i];
        char prefix[32];
        snprintf(prefix, sizeof prefix, "r%d%s", round, g->name);
        if (g->replay) { /* the users the replayed enrollments name */
            char sql[512];
            snprintf(sql, sizeof sql,
                     "INSERT INTO app_user (username) SELECT 'u%s-' || g FROM "
                     "generate_series(0, %d) g",
                     prefix, per - 1);
            assert_int_equal(tl_exec(S.db, sql), 0);
        }
        if (strcmp(g->reason, "duo_bad_signature") == 0 ||
            strcmp(g->reason, "retries_exhausted") == 0)
            record_errors(round, g, per);
        tl_dead_msgs w = {g->kind,
                          g->type,
                          prefix,
                          g->stage ? g->stage : (i == 2 ? other_stage : S.stage_uuid),
                          g->replay ? jobs_reply_queue(S.client) : NULL,
                          g->no_username};
        assert_int_equal(tl_dead_fill_ex(&S, &w, 0, per), 0);
    }
    dead_total += (long)per * NGROUPS;
}

/* Waits for the replies of the round's replayed jobs: each exactly once. */
static void count_replies(int round, int per)
{
    char *seen = calloc((size_t)per, 1);
    assert_non_null(seen);
    char prefix[32];
    snprintf(prefix, sizeof prefix, "r%drp-", round);
    int got = 0, quiet_ms = 0;
    time_t end = time(NULL) + 120 + per / 20;
    while (quiet_ms < 3000 && time(NULL) < end) {
        json_t *r = NULL;
        char *corr = NULL;
        err_t e = {0};
        int rc = jobs_next(S.client, 500, &r, &corr, &e);
        if (rc < 0)
            fail_msg("reading replies: %s", e.msg);
        if (rc != 1) {
            quiet_ms += got == per ? 500 : 0; /* then a while longer for a second reply */
            continue;
        }
        quiet_ms = 0;
        const char *id = tl_str(r, "job_id");
        int k = strncmp(id, prefix, strlen(prefix)) == 0
                    ? (int)strtol(id + strlen(prefix), NULL, 10)
                    : -1;
        if (k < 0 || k >= per)
            mismatch("a reply for %s, not a job of this round", id);
        else if (seen[k]++)
            mismatch("a second reply for %s", id);
        else if (strcmp(tl_str(r, "status"), "ok") != 0)
            mismatch("%s answered %s", id, tl_code(r));
        else
            got++;
        json_decref(r);
        free(corr);
    }
    if (got != per)
        mismatch("round %d: %d of %d replayed jobs answered", round, got, per);
    answered += got;
    free(seen);
}

/* The quiet truth after a round: what stays is every group not acted on. */
static void check_truth(int round, int per, long want)
{
    long leaving = 1;
    for (int i = 0; i < 100 && leaving != 0; i++) {
        tl_mq_messages(dead_q, &leaving);
        if (leaving)
            usleep(100000);
    }
    long n = tl_mq_messages(dead_q, NULL);
    if (n != want)
        mismatch("round %d: P.dead holds %ld, not %ld", round, n, want);
    json_t *l = tl_duoctl_json(&S, "dead list --json");
    if ((long)json_array_size(l) != want)
        mismatch("round %d: dead list shows %zu, not %ld", round, json_array_size(l), want);
    size_t i;
    json_t *x;
    json_array_foreach(l, i, x)
    {
        const char *reason = json_string_value(json_object_get(x, "reason"));
        const char *id = json_string_value(json_object_get(x, "job_id"));
        /* the replayed and the purged groups are gone, and no stale copy is left */
        if (strcmp(reason, "already_done") == 0 || strstr(id, "rp-") || strstr(id, "si-"))
            mismatch("round %d: %s (%s) should not be in P.dead", round, id, reason);
    }
    json_decref(l);
    json_t *st = tl_duoctl_json(&S, "status --json");
    json_t *q = json_object_get(st, "queues");
    const char *kinds[3] = {"enroll", "auth", "import"};
    if (json_integer_value(json_object_get(json_object_get(st, "dead"), "ready")) != want)
        mismatch(
            "round %d: status counts %lld dead, not %ld", round,
            (long long)json_integer_value(json_object_get(json_object_get(st, "dead"), "ready")),
            want);
    for (int k = 0; k < 3; k++) {
        long have = (long)json_integer_value(json_object_get(json_object_get(q, kinds[k]), "dead"));
        if (have != per) /* one group left of each kind */
            mismatch("round %d: status counts %ld dead %s, not %d", round, have, kinds[k], per);
    }
    json_decref(st);
}

/* status --watch and a loop of dead list, beside everything else. */
static pid_t watchers[2];

static void start_watchers(int round)
{
    char out[600];
    snprintf(out, sizeof out, "%s/soak-watch-%d.json", S.logdir, round);
    watchers[0] = spawn("status --json --watch 1", out);
    watchers[1] = fork();
    if (watchers[1] == 0) {
        for (int i = 0;; i++) {
            snprintf(out, sizeof out, "%s/soak-list-%d-%d.json", S.logdir, round, i);
            pid_t p = spawn("dead list --json", out);
            waitpid(p, NULL, 0);
        }
    }
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* A list printed while the round ran: between what stays and what was there, each
 * message once. */
static void check_list(int round, const json_t *l, long lo, long hi)
{
    size_t n = json_array_size(l);
    if ((long)n < lo || (long)n > hi)
        mismatch("round %d: a list during the round showed %zu (between %ld and %ld)", round, n, lo,
                 hi);
    const char **ids = calloc(n ? n : 1, sizeof *ids);
    assert_non_null(ids);
    for (size_t i = 0; i < n; i++)
        ids[i] = json_string_value(json_object_get(json_array_get(l, i), "job_id"));
    qsort(ids, n, sizeof *ids, cmp_str);
    for (size_t i = 1; i < n; i++)
        if (strcmp(ids[i - 1], ids[i]) == 0)
            mismatch("round %d: a list during the round showed %s twice", round, ids[i]);
    free(ids);
}

/* A status printed while the round ran: its kinds add up to its total, within bounds. */
static void check_status(int round, const json_t *st, long lo, long hi)
{
    json_int_t total = json_integer_value(json_object_get(json_object_get(st, "dead"), "ready"));
    json_int_t sum = 0;
    const char *k;
    json_t *q;
    json_object_foreach(json_object_get(st, "queues"), k, q)
    {
        sum += json_integer_value(json_object_get(q, "dead"));
    }
    if (sum != total || total < lo || total > hi)
        mismatch("round %d: a status during the round counted %lld dead, %lld by kind", round,
                 (long long)total, (long long)sum);
}

/* What status --watch and the list loop printed during the round (a file or line cut
 * short by the kill at the end is not JSON and is left out). */
static void check_snapshots(int round, long lo, long hi)
{
    char path[600], line[1 << 16];
    snprintf(path, sizeof path, "%s/soak-watch-%d.json", S.logdir, round);
    FILE *f = fopen(path, "r");
    while (f && fgets(line, sizeof line, f)) {
        json_t *st = json_loads(line, 0, NULL);
        if (st) {
            check_status(round, st, lo, hi);
            snapshots++;
        }
        json_decref(st);
    }
    if (f)
        fclose(f);
    unlink(path);
    for (int i = 0;; i++) {
        snprintf(path, sizeof path, "%s/soak-list-%d-%d.json", S.logdir, round, i);
        if (access(path, F_OK) != 0)
            break;
        json_t *l = json_load_file(path, 0, NULL);
        if (json_is_array(l)) {
            check_list(round, l, lo, hi);
            snapshots++;
        }
        json_decref(l);
        unlink(path);
    }
}

static void stop_watchers(void)
{
    for (int i = 0; i < 2; i++) {
        kill(watchers[i], SIGKILL);
        waitpid(watchers[i], NULL, 0);
    }
}

static void test_soak(void **state)
{
    (void)state;
    int rounds = env_int("DUO_SOAK_ROUNDS", 3), total = env_int("DUO_SOAK_DEAD", 1500);
    unsigned seed = (unsigned)env_int("DUO_SOAK_SEED", (int)time(NULL));
    srand(seed);
    int per = total / NGROUPS;
    for (int round = 0; round < rounds; round++) {
        fill_round(round, per);
        start_watchers(round);
        /* a pass takes about a millisecond a message here: kills land before, during
         * and (sometimes) after it */
        killed_then_again("dead replay --reason duo_bad_signature --type enroll.begin",
                          100 + per * 2);
        killed_then_again("dead purge --reason schema_invalid --yes", 100 + per);
        count_replies(round, per);
        stop_watchers();
        sleep(1); /* a list the loop had started ends */
        check_snapshots(round, (long)per * 3, (long)per * 5);
        check_truth(round, per, (long)per * 3);
        json_t *p = tl_duoctl_json(&S, "dead purge --all --yes");
        if (!p || json_integer_value(json_object_get(p, "purged")) != per * 3)
            mismatch("round %d: the last purge took %lld, not %d", round,
                     (long long)json_integer_value(json_object_get(p, "purged")), per * 3);
        json_decref(p);
        check_truth(round, 0, 0);
    }
    printf("soak rounds=%d kills=%ld dead_letters=%ld answered=%ld snapshots=%ld mismatches=%ld "
           "seed=%u\n",
           rounds, kills, dead_total, answered, snapshots, mismatches, seed);
    assert_int_equal(mismatches, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_soak)};
    return cmocka_run_group_tests(tests, setup, teardown);
}
