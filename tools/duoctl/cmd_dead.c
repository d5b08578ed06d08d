/* cmd_dead.c - duoctl dead list|show|replay|purge: the dead-letter queue an operator can
 * read and act on.
 *
 * Key invariant: replay never loses nor doubles a message. For each selected message the
 * job record is first re-armed (it may run once more; repeating that is harmless), then
 * the message is rejected from P.dead, which dead-letters it to P.jobs with its routing
 * key: the broker moves it to its work queue in one step. A replay killed at any point
 * leaves each message either moved (once) or still in P.dead (to replay again). */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cmd.h"
#include "ops.h"

typedef struct dead_args {
    dead_filter f;
    int json, yes, all, dry_run;
    size_t limit;
    const char *show_id;
} dead_args;

static int usage(void)
{
    fprintf(stderr,
            "usage: duoctl dead list [--reason CODE[,CODE]] [--type TYPE[,TYPE]] [--since DUR]\n"
            "                        [--id JOB_ID] [--limit N] [--json]\n"
            "       duoctl dead show JOB_ID\n"
            "       duoctl dead replay (FILTERS | --all) [--dry-run]\n"
            "       duoctl dead purge (FILTERS | --all) [--yes]\n"
            "DUR: seconds, or a number with s, m, h or d (e.g. 30m): dead-lettered since then\n");
    return 2;
}

static int parse_since(const char *s, int64_t *out)
{
    char *end = NULL;
    long long v = strtoll(s, &end, 10);
    if (end == s || v < 0)
        return -1;
    long long mult = 1;
    if (*end == 'm')
        mult = 60;
    else if (*end == 'h')
        mult = 3600;
    else if (*end == 'd')
        mult = 86400;
    else if (*end != 's' && *end != '\0')
        return -1;
    if (*end && end[1])
        return -1;
    *out = (int64_t)time(NULL) - v * mult;
    return 0;
}

static int parse_args(int argc, char **argv, dead_args *a)
{
    memset(a, 0, sizeof *a);
    a->limit = 100000;
    for (int i = 0; i < argc; i++) {
        const char *o = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(o, "--json") == 0)
            a->json = 1;
        else if (strcmp(o, "--yes") == 0)
            a->yes = 1;
        else if (strcmp(o, "--all") == 0)
            a->all = 1;
        else if (strcmp(o, "--dry-run") == 0)
            a->dry_run = 1;
        else if (!v && o[0] == '-')
            return -1;
        else if (strcmp(o, "--reason") == 0 && ++i)
            a->f.reason = v;
        else if (strcmp(o, "--type") == 0 && ++i)
            a->f.type = v;
        else if (strcmp(o, "--id") == 0 && ++i)
            a->f.id = v;
        else if (strcmp(o, "--since") == 0 && ++i) {
            if (parse_since(v, &a->f.since) < 0)
                return -1;
        } else if (strcmp(o, "--limit") == 0 && ++i) {
            char *end = NULL;
            long n = strtol(v, &end, 10);
            if (*end || n < 1)
                return -1;
            a->limit = (size_t)n;
        } else if (o[0] != '-' && !a->show_id)
            a->show_id = o;
        else
            return -1;
    }
    return 0;
}

static void fmt_time(int64_t t, char *out, size_t n)
{
    time_t tt = (time_t)t;
    struct tm tm;
    if (t <= 0 || !gmtime_r(&tt, &tm) || !strftime(out, n, "%Y-%m-%d %H:%M:%SZ", &tm))
        snprintf(out, n, "-");
}

static void print_table(const dead_list *l, const dead_filter *f)
{
    printf("%-38s %-14s %-24s %-21s %6s %8s %s\n", "JOB ID", "TYPE", "REASON", "DEAD-LETTERED",
           "DEATHS", "ATTEMPTS", "STAGE");
    size_t shown = 0;
    for (size_t i = 0; i < l->n; i++) {
        const dead_entry *x = &l->v[i];
        if (!dead_match(x, f))
            continue;
        char t[32];
        fmt_time(x->time, t, sizeof t);
        printf("%-38.38s %-14.14s %-24.24s %-21s %6ld %8d %s\n", x->job_id[0] ? x->job_id : "-",
               x->type[0] ? x->type : "-", x->reason, t, x->deaths,
               x->has_record ? x->rec.attempts : 0, x->stage[0] ? x->stage : "-");
        shown++;
    }
    printf("%zu of %zu dead letters\n", shown, l->n);
}

static void print_json_list(const dead_list *l, const dead_filter *f)
{
    json_t *arr = json_array();
    for (size_t i = 0; i < l->n; i++)
        if (dead_match(&l->v[i], f))
            json_array_append_new(arr, dead_entry_json(&l->v[i], 0));
    char *s = json_dumps(arr, JSON_COMPACT);
    printf("%s\n", s ? s : "[]");
    free(s);
    json_decref(arr);
}

static int do_list(ops_env *o, const dead_args *a)
{
    dead_list l;
    int rc = dead_scan(o, a->limit, &l);
    if (rc == 0) {
        if (a->json)
            print_json_list(&l, &a->f);
        else
            print_table(&l, &a->f);
    }
    dead_list_free(&l);
    return rc < 0 ? 1 : 0;
}

static int do_show(ops_env *o, const dead_args *a)
{
    if (!a->show_id)
        return usage();
    dead_list l;
    int rc = dead_scan(o, a->limit, &l);
    int found = 0;
    for (size_t i = 0; rc == 0 && i < l.n; i++) {
        if (strcmp(l.v[i].job_id, a->show_id) != 0)
            continue;
        json_t *j = dead_entry_json(&l.v[i], 1);
        char *s = json_dumps(j, JSON_INDENT(2));
        printf("%s\n", s ? s : "{}");
        free(s);
        json_decref(j);
        found++;
    }
    dead_list_free(&l);
    if (rc == 0 && !found)
        fprintf(stderr, "duoctl: no dead letter with job id '%s'\n", a->show_id);
    return rc < 0 || !found ? 1 : 0;
}

static int has_filter(const dead_args *a)
{
    return a->f.reason || a->f.type || a->f.id || a->f.since;
}

/* DUO_FAULT_POINT=replay_kill_after:N / replay_kill_between:N: die as kill -9 would after
 * the Nth message was handed back, or between its re-arm and its hand-back (tests). */
static void fault(const char *point, size_t nth)
{
    const char *fp = getenv("DUO_FAULT_POINT");
    size_t len = strlen(point);
    if (fp && strncmp(fp, point, len) == 0 && fp[len] == ':' &&
        strtoul(fp + len + 1, NULL, 10) == nth)
        raise(SIGKILL);
}

static int work_kind(const char *k)
{
    return strcmp(k, MQ_KIND_ENROLL) == 0 || strcmp(k, MQ_KIND_AUTH) == 0 ||
           strcmp(k, MQ_KIND_IMPORT) == 0;
}

static int seen_before(const dead_list *l, size_t upto, const char *id)
{
    for (size_t i = 0; id[0] && i < upto; i++)
        if (l->v[i].job_id[0] && strcmp(l->v[i].job_id, id) == 0 && l->v[i].d == NULL)
            return 1;
    return 0;
}

typedef struct tally {
    size_t done, twins, skipped;
} tally;

/* Re-arms the job record, then hands the message back (reject from P.dead). */
static int replay_one(ops_env *o, dead_list *l, size_t i, tally *t)
{
    dead_entry *x = &l->v[i];
    err_t e = {0};
    if (!work_kind(x->kind)) {
        fprintf(stderr, "duoctl: %s: routing key '%s' names no work queue; left in place\n",
                x->job_id[0] ? x->job_id : "(no job id)", x->kind);
        t->skipped++;
        return 0;
    }
    if (seen_before(l, i, x->job_id)) { /* a twin of a job replayed just now: drop it */
        t->twins++;
        if (mq_ack(o->mq, x->d, &e) < 0) {
            fprintf(stderr, "duoctl: %s: %s\n", x->job_id, e.msg);
            return -1;
        }
        return 0;
    }
    int rearmed = 0;
    if (x->job_id[0] && store_job_rearm(o->db, x->job_id, &rearmed, &e) < 0) {
        fprintf(stderr, "duoctl: %s: %s\n", x->job_id, e.msg);
        return -1;
    }
    if (x->has_record && !rearmed) { /* it succeeded meanwhile: running it again would
                                      * repeat its effect */
        fprintf(stderr, "duoctl: %s: the job has succeeded since; not replayed (purge it)\n",
                x->job_id);
        t->skipped++;
        return 0;
    }
    fault("replay_kill_between", t->done + 1);
    if (mq_reject(o->mq, x->d, 0, &e) < 0) {
        fprintf(stderr, "duoctl: %s: %s\n", x->job_id, e.msg);
        return -1;
    }
    t->done++;
    fault("replay_kill_after", t->done);
    return 0;
}

static int confirm(const char *what, size_t n, int yes)
{
    if (yes)
        return 1;
    if (!isatty(STDIN_FILENO)) {
        fprintf(stderr, "duoctl: %s %zu dead letters needs --yes when not asked on a terminal\n",
                what, n);
        return 0;
    }
    fprintf(stderr, "%s %zu dead letters? Type 'yes': ", what, n);
    char line[16] = "";
    return fgets(line, sizeof line, stdin) && strcmp(line, "yes\n") == 0;
}

static int settle_selected(ops_env *o, const dead_args *a, int replay)
{
    if (!has_filter(a) && !a->all) {
        fprintf(stderr, "duoctl: select with --reason, --type, --id, --since, or say --all\n");
        return 2;
    }
    dead_list l;
    if (dead_scan(o, a->limit, &l) < 0)
        return 1;
    size_t n = 0;
    for (size_t i = 0; i < l.n; i++)
        n += dead_match(&l.v[i], &a->f);
    tally t = {0};
    int rc = 0;
    if (a->dry_run || (!replay && n > 0 && !confirm("purge", n, a->yes))) {
        rc = a->dry_run ? 0 : 1;
        n = a->dry_run ? n : 0;
    } else {
        for (size_t i = 0; rc == 0 && i < l.n; i++) {
            if (!dead_match(&l.v[i], &a->f))
                continue;
            err_t e = {0};
            rc = replay ? replay_one(o, &l, i, &t) : mq_ack(o->mq, l.v[i].d, &e);
            if (rc < 0 && !replay)
                fprintf(stderr, "duoctl: purge: %s\n", e.msg);
            if (!replay && rc == 0)
                t.done++;
            mq_delivery_free(l.v[i].d); /* settled (or left): the rest return on close */
            l.v[i].d = NULL;
        }
        err_t e = {0};
        if (mq_close_sync(o->mq, &e) < 0 && rc == 0) {
            fprintf(stderr, "duoctl: closing: %s\n", e.msg);
            rc = -1;
        }
        o->mq = NULL;
    }
    printf("{\"%s\":%zu,\"selected\":%zu,\"duplicates_dropped\":%zu,\"skipped\":%zu%s}\n",
           replay ? "replayed" : "purged", a->dry_run ? 0 : t.done, n, t.twins, t.skipped,
           a->dry_run ? ",\"dry_run\":true" : "");
    dead_list_free(&l);
    return rc < 0 ? 1 : rc;
}

int cmd_dead(int argc, char **argv)
{
    dead_args a;
    if (argc < 1 || parse_args(argc - 1, argv + 1, &a) < 0)
        return usage();
    const char *sub = argv[0];
    int (*run)(ops_env *, const dead_args *) = NULL;
    int settle = -1;
    if (strcmp(sub, "list") == 0)
        run = do_list;
    else if (strcmp(sub, "show") == 0)
        run = do_show;
    else if (strcmp(sub, "replay") == 0)
        settle = 1;
    else if (strcmp(sub, "purge") == 0)
        settle = 0;
    else
        return usage();
    if (strcmp(sub, "show") != 0 && a.show_id)
        return usage();
    ops_env o;
    if (ops_open(&o, OPS_MQ | OPS_DB | OPS_SCHEMAS) < 0)
        return 1;
    int rc = run ? run(&o, &a) : settle_selected(&o, &a, settle);
    ops_close(&o);
    return rc;
}
