/* cmd_status.c - duoctl status: the whole system on one screen (or as JSON): per job kind
 * the work queue's ready messages and consumers, jobs claimed and unfinished, retry tiers
 * and dead letters; running import runs with progress, rate and ETA; recent outcomes.
 *
 * Key invariant: status only reads. Queues are read by passive declare (no management
 * plugin); dead letters are counted by kind in one pass over P.dead (ops.h: passes take
 * turns with duoctl dead), which settles nothing: every message it held returns to
 * P.dead when its connection closes. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cmd.h"
#include "jobs_client.h"
#include "ops.h"
#include "store_breaker.h"

static const char *const kinds[] = {MQ_KIND_ENROLL, MQ_KIND_AUTH, MQ_KIND_IMPORT, NULL};

typedef struct status_args {
    int json, watch, count, last;
} status_args;

static int queue_json(mq_conn *mq, const char *name, json_t **out, err_t *e)
{
    mq_queue_stat st;
    int rc = mq_queue_inspect(mq, name, &st, e);
    if (rc == 0)
        *out = json_pack("{s:s, s:b, s:I, s:I}", "queue", name, "exists", st.exists, "ready",
                         (json_int_t)st.ready, "consumers", (json_int_t)st.consumers);
    return rc;
}

static int kind_json(mq_conn *mq, const char *kind, json_t **out, err_t *e)
{
    char q[256];
    mq_kind_queue(mq, kind, q, sizeof q);
    int rc = queue_json(mq, q, out, e);
    json_t *retry = json_object();
    for (int tier = 0; rc == 0 && tier < 3; tier++) {
        json_t *t = NULL;
        mq_retry_queue(mq, kind, tier, q, sizeof q);
        rc = queue_json(mq, q, &t, e);
        if (rc == 0)
            json_object_set_new(retry, strrchr(q, '.') + 1,
                                json_incref(json_object_get(t, "ready")));
        json_decref(t);
    }
    if (rc == 0) {
        json_object_set_new(*out, "retry", retry);
        json_object_set_new(*out, "claimed", json_integer(0));
        json_object_set_new(*out, "dead", json_null());
    } else {
        json_decref(retry);
    }
    return rc;
}

/* Counts P.dead by routing key (kind) in one pass; the total is what the pass read. */
static int count_dead(ops_env *o, json_t *queues, json_t *dead)
{
    for (int i = 0; kinds[i]; i++)
        json_object_set_new(json_object_get(queues, kinds[i]), "dead", json_integer(0));
    dead_pass p;
    if (dead_pass_begin(o, &p) < 0)
        return -1;
    json_int_t total = 0;
    dead_entry x;
    int rc;
    while ((rc = dead_pass_next(&p, 0, &x)) > 0) {
        json_t *k = json_object_get(queues, x.kind);
        if (k)
            json_object_set_new(k, "dead",
                                json_integer(json_integer_value(json_object_get(k, "dead")) + 1));
        total++;
        dead_entry_clear(&x);
    }
    if (rc < 0)
        dead_entry_clear(&x);
    if (dead_pass_end(&p) < 0)
        rc = -1;
    json_object_set_new(dead, "ready", json_integer(total));
    return rc < 0 ? -1 : 0;
}

static int add_claimed(const char *program, int64_t n, void *arg)
{
    /* "duo-auth": the auth worker's claims */
    const char *kind = strncmp(program, "duo-", 4) == 0 ? program + 4 : NULL;
    json_t *k = kind ? json_object_get(arg, kind) : NULL;
    if (k)
        json_object_set_new(k, "claimed",
                            json_integer(json_integer_value(json_object_get(k, "claimed")) + n));
    return 0;
}

static int add_outcome(const char *type, const char *outcome, int64_t n, void *arg)
{
    json_array_append_new(arg, json_pack("{s:s, s:s, s:I}", "type", type, "outcome", outcome,
                                         "count", (json_int_t)n));
    return 0;
}

static int add_run(const store_run_progress *r, void *arg)
{
    double rate = r->elapsed_s > 1 ? r->pages_done / r->elapsed_s * 60.0 : 0.0;
    int left = r->pages_total - r->pages_done;
    json_t *eta = rate > 0 ? json_integer((json_int_t)(left / rate * 60.0)) : json_null();
    json_array_append_new(
        arg,
        json_pack("{s:s, s:s, s:b, s:i, s:i, s:I, s:I, s:I, s:i, s:I, s:f, s:o, s:I}", "run_id",
                  r->uuid, "stage", r->stage, "dry_run", r->dry_run, "pages_done", r->pages_done,
                  "pages_total", r->pages_total, "created", (json_int_t)r->created, "existing",
                  (json_int_t)r->existing, "unknown_user", (json_int_t)r->unknown_user, "errors",
                  r->errors, "elapsed_s", (json_int_t)r->elapsed_s, "pages_per_min", rate, "eta_s",
                  eta, "idle_s", (json_int_t)r->idle_s));
    return 0;
}

/* Breakers that workers noted as not closed in the last BREAKER_MAX_AGE_S seconds. */
#define BREAKER_MAX_AGE_S 300

static int add_breaker(const breaker_view *v, void *arg)
{
    json_array_append_new(arg, json_pack("{s:s, s:s, s:s, s:I, s:I}", "host", v->host, "worker",
                                         v->worker, "state", v->state, "open_ms",
                                         (json_int_t)v->open_ms, "age_s", (json_int_t)v->age_secs));
    return 0;
}

static int gather_queues(ops_env *o, json_t *st, err_t *e)
{
    json_t *queues = json_object();
    json_object_set_new(st, "queues", queues);
    int rc = 0;
    for (int i = 0; rc == 0 && kinds[i]; i++) {
        json_t *k = NULL;
        rc = kind_json(o->mq, kinds[i], &k, e);
        if (rc == 0)
            json_object_set_new(queues, kinds[i], k);
    }
    json_t *dead = NULL;
    if (rc == 0)
        rc = queue_json(o->mq, mq_dead_queue(o->mq), &dead, e);
    if (rc == 0) {
        json_object_set_new(st, "dead", dead);
        if (count_dead(o, queues, dead) < 0)
            rc = err_set(e, ERR_MQ, "counting the dead letters failed");
    }
    return rc;
}

static json_t *gather(ops_env *o, int last, err_t *e)
{
    json_t *st =
        json_pack("{s:s, s:I}", "prefix", o->cfg.mq_prefix, "time", (json_int_t)time(NULL));
    json_t *outcomes = json_array(), *runs = json_array(), *breakers = json_array();
    json_object_set_new(st, "imports", runs);
    json_object_set_new(st, "breakers", breakers);
    json_object_set_new(st, "outcomes", json_pack("{s:i, s:o}", "last", last, "by", outcomes));
    int rc = gather_queues(o, st, e);
    if (rc == 0)
        rc = store_job_running(o->db, add_claimed, json_object_get(st, "queues"), e);
    if (rc == 0)
        rc = store_import_running(o->db, add_run, runs, e);
    if (rc == 0)
        rc = store_job_outcomes(o->db, last, add_outcome, outcomes, e);
    if (rc == 0)
        rc = store_breaker_list(o->db, BREAKER_MAX_AGE_S, add_breaker, breakers, e);
    if (rc < 0) {
        json_decref(st);
        return NULL;
    }
    return st;
}

/* ---- text rendering ---- */

static json_int_t num(const json_t *o, const char *k)
{
    return json_integer_value(json_object_get(o, k));
}

static void print_queues(const json_t *st)
{
    printf("%-8s %8s %9s %8s %8s %8s %8s %6s\n", "KIND", "READY", "CONSUMERS", "CLAIMED", "RETRY-1",
           "RETRY-2", "RETRY-3", "DEAD");
    for (int i = 0; kinds[i]; i++) {
        const json_t *k = json_object_get(json_object_get(st, "queues"), kinds[i]);
        const json_t *r = json_object_get(k, "retry");
        json_int_t t[3] = {0, 0, 0};
        const char *key;
        json_t *v;
        int n = 0;
        json_object_foreach((json_t *)r, key, v)
        {
            if (n < 3)
                t[n++] = json_integer_value(v);
        }
        const json_t *dead = json_object_get(k, "dead");
        char d[24];
        snprintf(d, sizeof d, "%s", json_is_integer(dead) ? "" : "?");
        if (json_is_integer(dead))
            snprintf(d, sizeof d, "%lld", (long long)json_integer_value(dead));
        printf("%-8s %8lld %9lld %8lld %8lld %8lld %8lld %6s%s\n", kinds[i],
               (long long)num(k, "ready"), (long long)num(k, "consumers"),
               (long long)num(k, "claimed"), (long long)t[0], (long long)t[1], (long long)t[2], d,
               json_is_true(json_object_get(k, "exists")) ? "" : "  (queue not declared yet)");
    }
    printf("dead letters in %s: %lld   (duoctl dead list)\n",
           json_string_value(json_object_get(json_object_get(st, "dead"), "queue")),
           (long long)num(json_object_get(st, "dead"), "ready"));
}

static void print_run(const json_t *r)
{
    json_int_t done = num(r, "pages_done"), total = num(r, "pages_total");
    int width = 30, fill = total > 0 ? (int)(done * width / total) : 0;
    char bar[32];
    for (int i = 0; i < width; i++)
        bar[i] = i < fill ? '#' : '.';
    bar[width] = '\0';
    const json_t *eta = json_object_get(r, "eta_s");
    char etas[32] = "-";
    if (json_is_integer(eta))
        snprintf(etas, sizeof etas, "%lldm%02llds", (long long)json_integer_value(eta) / 60,
                 (long long)json_integer_value(eta) % 60);
    printf("  %s [%s] %lld/%lld pages %3lld%%  created %lld existing %lld unknown %lld errors %lld"
           "  %.1f pages/min  ETA %s%s\n",
           json_string_value(json_object_get(r, "stage")), bar, (long long)done, (long long)total,
           (long long)(total > 0 ? done * 100 / total : 0), (long long)num(r, "created"),
           (long long)num(r, "existing"), (long long)num(r, "unknown_user"),
           (long long)num(r, "errors"), json_real_value(json_object_get(r, "pages_per_min")), etas,
           json_is_true(json_object_get(r, "dry_run")) ? "  (dry run)" : "");
}

static void print_status(const json_t *st)
{
    char t[32];
    time_t now = (time_t)num(st, "time");
    struct tm tm;
    if (!gmtime_r(&now, &tm) || !strftime(t, sizeof t, "%Y-%m-%d %H:%M:%SZ", &tm))
        snprintf(t, sizeof t, "-");
    printf("duo-workers status  prefix %s  %s\n\n",
           json_string_value(json_object_get(st, "prefix")), t);
    print_queues(st);
    const json_t *runs = json_object_get(st, "imports");
    printf("\nimport runs: %zu running\n", json_array_size(runs));
    size_t i;
    json_t *r;
    json_array_foreach(runs, i, r)
    {
        print_run(r);
    }
    const json_t *br = json_object_get(st, "breakers");
    printf("\nDuo hosts with an open circuit breaker: %zu%s\n", json_array_size(br),
           json_array_size(br) ? "  (their stages' calls are refused or deferred)" : "");
    json_array_foreach(br, i, r)
    {
        printf("  %-40s %-10s worker %s  changed %lld s ago, open time %lld s\n",
               json_string_value(json_object_get(r, "host")),
               json_string_value(json_object_get(r, "state")),
               json_string_value(json_object_get(r, "worker")), (long long)num(r, "age_s"),
               (long long)num(r, "open_ms") / 1000);
    }
    const json_t *oc = json_object_get(st, "outcomes");
    printf("\nlast %lld job outcomes:\n", (long long)num(oc, "last"));
    json_array_foreach(json_object_get(oc, "by"), i, r)
    {
        printf("  %-14s %-28s %8lld\n", json_string_value(json_object_get(r, "type")),
               json_string_value(json_object_get(r, "outcome")), (long long)num(r, "count"));
    }
}

static int parse_args(int argc, char **argv, status_args *a)
{
    *a = (status_args){.last = 1000};
    for (int i = 0; i < argc; i++) {
        char *end = NULL;
        if (strcmp(argv[i], "--json") == 0) {
            a->json = 1;
        } else if (strcmp(argv[i], "--watch") == 0) {
            a->watch = 2;
            if (i + 1 < argc && argv[i + 1][0] != '-') {
                long v = strtol(argv[++i], &end, 10);
                if (*end || v < 1 || v > 3600)
                    return -1;
                a->watch = (int)v;
            }
        } else if ((strcmp(argv[i], "--count") == 0 || strcmp(argv[i], "--last") == 0) &&
                   i + 1 < argc) {
            long v = strtol(argv[i + 1], &end, 10);
            if (*end || v < 1 || v > 1000000)
                return -1;
            *(strcmp(argv[i], "--count") == 0 ? &a->count : &a->last) = (int)v;
            i++;
        } else {
            return -1;
        }
    }
    return 0;
}

static int show_once(ops_env *o, const status_args *a, int clear)
{
    err_t e = {0};
    if (ops_mq(o) < 0) /* the last refresh's dead-letter pass closed it */
        return -1;
    json_t *st = gather(o, a->last, &e);
    if (!st) {
        fprintf(stderr, "duoctl: status: %s\n", e.msg);
        return -1;
    }
    if (clear)
        printf("\033[H\033[2J");
    if (a->json) {
        char *s = json_dumps(st, JSON_COMPACT);
        printf("%s\n", s ? s : "{}");
        free(s);
    } else {
        print_status(st);
    }
    fflush(stdout);
    json_decref(st);
    return 0;
}

int cmd_status(int argc, char **argv)
{
    status_args a;
    if (parse_args(argc, argv, &a) < 0) {
        fprintf(stderr, "usage: duoctl status [--json] [--watch [SECS]] [--count N] [--last N]\n"
                        "  --watch refreshes every SECS (2) until interrupted or N refreshes;\n"
                        "  --last N counts the outcomes of the last N finished jobs (1000)\n");
        return 2;
    }
    ops_env o;
    if (ops_open(&o, OPS_MQ | OPS_DB) < 0)
        return 1;
    int rc = 0;
    for (int n = 1;; n++) {
        rc = show_once(&o, &a, a.watch && !a.json && isatty(STDOUT_FILENO));
        if (rc < 0 || !a.watch || (a.count && n >= a.count))
            break;
        sleep((unsigned)a.watch);
    }
    ops_close(&o);
    return rc < 0 ? 1 : 0;
}
