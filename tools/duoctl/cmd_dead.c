/* cmd_dead.c - duoctl dead list|show|replay|purge: the dead-letter queue an operator can
 * read and act on.
 *
 * Key invariant: replay never loses nor doubles a message. For each selected message the
 * job record is first re-armed (it may run once more; repeating that is harmless), then
 * the message is rejected from P.dead, which dead-letters it to P.jobs with its routing
 * key: the broker moves it to its work queue in one step. A replay killed at any point
 * leaves each message either moved (once) or still in P.dead (to replay again), and a
 * count printed is of settlements P.dead has applied (dead_pass_end). */
#include <signal.h>
#include <stdint.h>
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
            "DUR: seconds, or a number with s, m, h or d (e.g. 30m): dead-lettered since then\n"
            "--limit N: read at most the first N messages of the queue (default: all)\n");
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
    a->limit = SIZE_MAX; /* a pass's memory does not grow with the queue: read it all */
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

static void print_row(const dead_entry *x)
{
    char t[32];
    fmt_time(x->time, t, sizeof t);
    printf("%-38.38s %-14.14s %-24.24s %-21s %6ld %8d %s\n", x->job_id[0] ? x->job_id : "-",
           x->type[0] ? x->type : "-", x->reason, t, x->deaths, x->has_record ? x->rec.attempts : 0,
           x->stage[0] ? x->stage : "-");
}

static void print_json_entry(const dead_entry *x, size_t shown)
{
    json_t *j = dead_entry_json(x, 0);
    char *s = json_dumps(j, JSON_COMPACT);
    printf("%s%s", shown ? "," : "", s ? s : "{}");
    free(s);
    json_decref(j);
}

/* Prints each message as it is read: memory stays flat however long the queue. */
static int do_list(ops_env *o, const dead_args *a)
{
    dead_pass p;
    if (dead_pass_begin(o, &p) < 0)
        return 1;
    if (a->json)
        printf("[");
    else
        printf("%-38s %-14s %-24s %-21s %6s %8s %s\n", "JOB ID", "TYPE", "REASON", "DEAD-LETTERED",
               "DEATHS", "ATTEMPTS", "STAGE");
    size_t shown = 0, n = 0;
    int rc = 0;
    dead_entry x;
    while (n < a->limit && (rc = dead_pass_next(&p, 1, &x)) > 0) {
        n++;
        if (dead_match(&x, &a->f)) {
            if (a->json)
                print_json_entry(&x, shown);
            else
                print_row(&x);
            shown++;
        }
        dead_entry_clear(&x);
    }
    if (rc < 0)
        dead_entry_clear(&x);
    if (dead_pass_end(&p) < 0)
        rc = -1;
    if (a->json)
        printf("]\n");
    else
        printf("%zu of %zu dead letters\n", shown, n);
    return rc < 0 ? 1 : 0;
}

static int do_show(ops_env *o, const dead_args *a)
{
    if (!a->show_id)
        return usage();
    dead_pass p;
    if (dead_pass_begin(o, &p) < 0)
        return 1;
    int found = 0, rc = 0;
    dead_entry x;
    for (size_t n = 0; n < a->limit && (rc = dead_pass_next(&p, 1, &x)) > 0; n++) {
        if (strcmp(x.job_id, a->show_id) == 0) {
            json_t *j = dead_entry_json(&x, 1);
            char *s = json_dumps(j, JSON_INDENT(2));
            printf("%s\n", s ? s : "{}");
            free(s);
            json_decref(j);
            found++;
        }
        dead_entry_clear(&x);
    }
    if (rc < 0)
        dead_entry_clear(&x);
    if (dead_pass_end(&p) < 0)
        rc = -1;
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

/* A selected message, kept small: a pass may select 100,000. */
typedef struct chosen {
    mq_ticket t;
    char *job_id; /* owned; "" when the message has none */
    char kind[16];
    int has_record;
} chosen;

typedef struct selection {
    chosen *v;
    size_t n, cap;
    size_t scanned;
    int all; /* every message read was selected (so acks may be cumulative) */
} selection;

static int choose(selection *s, const dead_entry *x)
{
    if (s->n == s->cap) {
        size_t nc = s->cap ? s->cap * 2 : 256;
        chosen *v = realloc(s->v, nc * sizeof *v);
        if (!v)
            return -1;
        s->v = v;
        s->cap = nc;
    }
    chosen *c = &s->v[s->n];
    c->job_id = strdup(x->job_id);
    if (!c->job_id)
        return -1;
    c->t = x->t;
    snprintf(c->kind, sizeof c->kind, "%s", x->kind);
    c->has_record = x->has_record;
    s->n++;
    return 0;
}

static void selection_free(selection *s)
{
    for (size_t i = 0; i < s->n; i++)
        free(s->v[i].job_id);
    free(s->v);
    memset(s, 0, sizeof *s);
}

/* Reads the whole pass, keeping what the filters select. 0 or -1 (printed). */
static int select_all(dead_pass *p, const dead_args *a, selection *s)
{
    memset(s, 0, sizeof *s);
    s->all = 1;
    dead_entry x;
    int rc = 0;
    while (s->scanned < a->limit && (rc = dead_pass_next(p, 1, &x)) > 0) {
        s->scanned++;
        if (!dead_match(&x, &a->f))
            s->all = 0;
        else if (choose(s, &x) < 0)
            rc = -1;
        dead_entry_clear(&x);
        if (rc < 0) {
            fprintf(stderr, "duoctl: out of memory\n");
            return -1;
        }
    }
    if (rc < 0)
        dead_entry_clear(&x);
    return rc < 0 ? -1 : 0;
}

/* Job ids replayed in this run: a later copy of one of them is a twin. */
typedef struct idset {
    char **slot;
    size_t cap, n;
} idset;

static size_t id_hash(const char *s)
{
    size_t h = 1469598103934665603ULL;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return h;
}

static char **id_find(const idset *set, const char *id)
{
    size_t i = id_hash(id) & (set->cap - 1);
    while (set->slot[i] && strcmp(set->slot[i], id) != 0)
        i = (i + 1) & (set->cap - 1);
    return &set->slot[i];
}

static int id_has(const idset *set, const char *id)
{
    return set->cap && *id_find(set, id) != NULL;
}

/* Adds id (borrowed: it must outlive the set). 0 or -1 (out of memory). */
static int id_add(idset *set, char *id)
{
    if ((set->n + 1) * 2 > set->cap) {
        idset big = {calloc(set->cap ? set->cap * 2 : 1024, sizeof(char *)),
                     set->cap ? set->cap * 2 : 1024, 0};
        if (!big.slot)
            return -1;
        for (size_t i = 0; i < set->cap; i++)
            if (set->slot[i]) {
                *id_find(&big, set->slot[i]) = set->slot[i];
                big.n++;
            }
        free(set->slot);
        *set = big;
    }
    char **at = id_find(set, id);
    if (!*at) {
        *at = id;
        set->n++;
    }
    return 0;
}

typedef struct tally {
    size_t done, twins, skipped;
} tally;

/* Re-arms the job record, then hands the message back (reject from P.dead). A later
 * copy of a job replayed just now is dropped: only a copy that was handed back makes its
 * twins redundant (one left in place, or skipped, does not). */
/* Hand-backs waiting to go as one cumulative reject (basic.nack multiple: every unsettled
 * message read up to the last one). Only while every message read before them is settled
 * or about to be: all selected, none left in place yet. */
typedef struct handback {
    int cumulative;
    mq_ticket last;
    size_t n;
} handback;

static int handback_flush(dead_pass *p, handback *h)
{
    if (!h->n)
        return 0;
    h->n = 0;
    return dead_pass_settle(p, h->last, -1, 1);
}

/* A message left in place (held until the pass ends): nothing after it may be rejected
 * cumulatively, which would take it along. */
static int leave(dead_pass *p, handback *h, tally *t)
{
    t->skipped++;
    h->cumulative = 0;
    return handback_flush(p, h);
}

static int hand_back(dead_pass *p, handback *h, const chosen *c)
{
    /* a fault point of the tests kills "after the Nth was handed back": send each */
    if (!h->cumulative || getenv("DUO_FAULT_POINT"))
        return dead_pass_settle(p, c->t, -1, 0);
    h->last = c->t;
    return ++h->n >= 4096 ? handback_flush(p, h) : 0;
}

static int replay_one(dead_pass *p, chosen *c, int rearmed, idset *replayed, tally *t, handback *h)
{
    const char *id = c->job_id[0] ? c->job_id : "(no job id)";
    if (!work_kind(c->kind)) {
        fprintf(stderr, "duoctl: %s: routing key '%s' names no work queue; left in place\n", id,
                c->kind);
        return leave(p, h, t);
    }
    if (c->job_id[0] && id_has(replayed, c->job_id)) {
        t->twins++; /* its twin's reject goes first: a cumulative one would take it along */
        return handback_flush(p, h) < 0 ? -1 : dead_pass_settle(p, c->t, 0, 0);
    }
    if (c->has_record && !rearmed) { /* it succeeded meanwhile: running it again would
                                      * repeat its effect */
        fprintf(stderr, "duoctl: %s: the job has succeeded since; not replayed (purge it)\n", id);
        return leave(p, h, t);
    }
    fault("replay_kill_between", t->done + 1);
    if (hand_back(p, h, c) < 0)
        return -1;
    if (c->job_id[0] && id_add(replayed, c->job_id) < 0) {
        fprintf(stderr, "duoctl: out of memory\n");
        return -1;
    }
    t->done++;
    fault("replay_kill_after", t->done);
    return 0;
}

/* Re-arms, in one statement, the jobs of s->v[from..to) (at most PASS_BATCH) that may be
 * handed back: of a work queue's kind, with a job id not replayed earlier in this run.
 * rearmed[i - from] says which were. 0 or -1 (printed). */
static int rearm_chunk(dead_pass *p, const selection *s, size_t from, size_t to,
                       const idset *replayed, int *rearmed)
{
    const char *ids[PASS_BATCH] = {0};
    size_t at[PASS_BATCH], m = 0;
    int got[PASS_BATCH] = {0};
    for (size_t i = from; i < to; i++) {
        const chosen *c = &s->v[i];
        rearmed[i - from] = 0;
        if (work_kind(c->kind) && c->job_id[0] && !id_has(replayed, c->job_id)) {
            ids[m] = c->job_id;
            at[m++] = i - from;
        }
    }
    err_t e = {0};
    if (store_jobs_rearm(p->o->db, ids, m, got, &e) < 0) {
        fprintf(stderr, "duoctl: re-arming job records: %s\n", e.msg);
        return -1;
    }
    for (size_t k = 0; k < m; k++)
        rearmed[at[k]] = got[k];
    return 0;
}

/* In chunks: each chunk's records re-armed in one round trip, then its messages handed
 * back one by one (a kill in between leaves re-armed records whose messages are still in
 * P.dead: the next replay re-arms them again, harmlessly, and moves them). */
static int replay_all(dead_pass *p, selection *s, tally *t)
{
    idset replayed = {0};
    handback h = {.cumulative = s->all};
    int rearmed[PASS_BATCH];
    int rc = 0;
    for (size_t from = 0; rc == 0 && from < s->n; from += PASS_BATCH) {
        size_t to = from + PASS_BATCH < s->n ? from + PASS_BATCH : s->n;
        rc = rearm_chunk(p, s, from, to, &replayed, rearmed);
        for (size_t i = from; rc == 0 && i < to; i++)
            rc = replay_one(p, &s->v[i], rearmed[i - from], &replayed, t, &h);
    }
    if (rc == 0)
        rc = handback_flush(p, &h);
    free(replayed.slot);
    return rc;
}

static int purge_all(dead_pass *p, const selection *s, tally *t)
{
    for (size_t i = 0; i < s->n; i++) {
        /* With nothing unselected in between, one ack covers a run of messages. */
        int last = i + 1 == s->n || (i + 1) % 4096 == 0;
        if (s->all && !last)
            continue;
        if (dead_pass_settle(p, s->v[i].t, 0, s->all) < 0)
            return -1;
        t->done = s->all ? i + 1 : t->done + 1;
    }
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

static int act(dead_pass *p, const dead_args *a, selection *s, int replay, tally *t)
{
    if (a->dry_run)
        return 0;
    if (!replay && s->n > 0 && !confirm("purge", s->n, a->yes))
        return 1; /* nothing purged; the selection is still freed by the caller */
    return replay ? replay_all(p, s, t) : purge_all(p, s, t);
}

static int settle_selected(ops_env *o, const dead_args *a, int replay)
{
    if (!has_filter(a) && !a->all) {
        fprintf(stderr, "duoctl: select with --reason, --type, --id, --since, or say --all\n");
        return 2;
    }
    dead_pass p;
    if (dead_pass_begin(o, &p) < 0)
        return 1;
    selection s;
    tally t = {0};
    int rc = select_all(&p, a, &s);
    size_t n = s.n;
    if (rc == 0)
        rc = act(&p, a, &s, replay, &t);
    /* Counted only once P.dead applied them: a close that overtook them would bring the
     * messages back. */
    if (dead_pass_end(&p) < 0 && rc == 0)
        rc = -1;
    selection_free(&s);
    if (rc < 0)
        t.done = 0;
    if (rc >= 0 || t.done)
        printf("{\"%s\":%zu,\"selected\":%zu,\"duplicates_dropped\":%zu,\"skipped\":%zu%s}\n",
               replay ? "replayed" : "purged", t.done, rc == 1 ? 0 : n, t.twins, t.skipped,
               a->dry_run ? ",\"dry_run\":true" : "");
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
