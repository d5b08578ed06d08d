/* cmd_import.c - `duoctl import manual|auto`: enqueue an import job and print its reply;
 * `auto --follow` then reads the run's progress messages until the final one, drawing a
 * progress bar (pages, users/s, ETA) on a terminal and plain lines otherwise. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cmd.h"
#include "config.h"
#include "import_runs.h"
#include "job_send.h"
#include "jobs_client.h"

#define USAGE                                                                                      \
    "usage: duoctl import manual --stage S --duo-user-id ID_OR_DUO_USERNAME --username U\n"        \
    "       duoctl import auto --stage S [--page-size N] [--pages-per-min N] [--dry-run]\n"        \
    "                          [--follow]\n"                                                       \
    "       duoctl import runs [--all] [--limit N] [--json]\n"                                     \
    "       duoctl import cancel RUN_ID\n"                                                         \
    "  common: [--timeout SECS (90; with --follow: per message)]\n"                                \
    "  Needs AMQP_URL (and DATABASE_URL to look a stage up by name). Prints the reply as\n"        \
    "  JSON; exit 0 ok, 1 error reply, 3 no reply in time.\n"

typedef struct {
    const char *stage, *duo_user_id, *username;
    long page_size, pages_per_min;
    int dry_run, follow, timeout;
} import_args;

static int parse(int argc, char **argv, import_args *a)
{
    *a = (import_args){.timeout = 90};
    for (int i = 0; i < argc; i++) {
        const char *o = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(o, "--dry-run") == 0 || strcmp(o, "--follow") == 0) {
            *(o[2] == 'd' ? &a->dry_run : &a->follow) = 1;
            continue;
        }
        if (!v)
            return -1;
        i++;
        char *end = NULL;
        long n = strtol(v, &end, 10);
        int num_ok = end != v && *end == '\0' && n > 0;
        if (strcmp(o, "--stage") == 0)
            a->stage = v;
        else if (strcmp(o, "--duo-user-id") == 0)
            a->duo_user_id = v;
        else if (strcmp(o, "--username") == 0)
            a->username = v;
        else if (strcmp(o, "--page-size") == 0 && num_ok && n <= 300)
            a->page_size = n;
        else if (strcmp(o, "--pages-per-min") == 0 && num_ok && n <= 100000)
            a->pages_per_min = n;
        else if (strcmp(o, "--timeout") == 0 && num_ok && n < 86400)
            a->timeout = (int)n;
        else
            return -1;
    }
    return a->stage ? 0 : -1;
}

static void fresh_id(char *out, size_t n)
{
    unsigned char b[16] = {0};
    FILE *f = fopen("/dev/urandom", "rb");
    size_t got = f ? fread(b, 1, sizeof b, f) : 0;
    if (f)
        fclose(f);
    if (got != sizeof b)
        fprintf(stderr, "duoctl: /dev/urandom unreadable; the job id may repeat\n");
    char *w = out;
    for (size_t i = 0; i < sizeof b && (size_t)(w - out) + 3 < n; i++, w += 2)
        snprintf(w, 3, "%02x", b[i]);
}

static long long count_of(const json_t *r, const char *k)
{
    return json_integer_value(json_object_get(json_object_get(r, "counts"), k));
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* One progress line: a bar on a terminal (redrawn in place), else a plain line. */
static void show(const json_t *r, double elapsed, int tty)
{
    long long done = count_of(r, "pages_done"), total = count_of(r, "pages_total");
    long long users =
        count_of(r, "created") + count_of(r, "existing") + count_of(r, "unknown_user");
    double rate = elapsed > 0 ? users / elapsed : 0;
    double eta = done > 0 ? (double)(total - done) * elapsed / (double)done : -1;
    if (!tty) {
        printf("pages %lld/%lld users %lld (%.0f/s) created %lld existing %lld unknown %lld "
               "errors %lld eta %.0fs\n",
               done, total, users, rate, count_of(r, "created"), count_of(r, "existing"),
               count_of(r, "unknown_user"), count_of(r, "errors"), eta);
        fflush(stdout);
        return;
    }
    char bar[31];
    int fill = total > 0 ? (int)(30 * done / total) : 0;
    for (int i = 0; i < 30; i++)
        bar[i] = i < fill ? '#' : '.';
    bar[30] = '\0';
    fprintf(stderr, "\r[%s] %lld/%lld pages  %.0f users/s  ETA %.0fs   ", bar, done, total, rate,
            eta < 0 ? 0 : eta);
}

static void print_json(const json_t *r)
{
    char *text = json_dumps(r, JSON_COMPACT | JSON_SORT_KEYS);
    printf("%s\n", text ? text : "{}");
    free(text);
    fflush(stdout);
}

/* Reads the run's messages until the final one; prints it. Returns the exit status. */
static int follow(jobs_client *jc, const char *id, int timeout)
{
    int tty = isatty(STDERR_FILENO) && isatty(STDOUT_FILENO);
    double t0 = now_s();
    for (;;) {
        json_t *r = NULL;
        err_t e = {0};
        int rc = jobs_wait(jc, id, timeout * 1000, &r, NULL, &e);
        if (rc != 1) {
            fprintf(stderr, "%sduoctl: no progress from the run for %d s%s%s\n", tty ? "\n" : "",
                    timeout, rc < 0 ? ": " : "", rc < 0 ? e.msg : "");
            return 3;
        }
        int final = !json_is_true(json_object_get(r, "progress"));
        show(r, now_s() - t0, tty);
        if (final) {
            if (tty)
                fputc('\n', stderr);
            print_json(r);
        }
        const char *st = json_string_value(json_object_get(r, "state"));
        int ok = st && strcmp(st, "done") == 0;
        json_decref(r);
        if (final)
            return ok ? 0 : 1;
    }
}

static int send_auto(const import_args *a, json_t *body)
{
    config c;
    err_t e = {0};
    if (config_load(&c, CONFIG_NEED_MQ, &e) < 0) {
        fprintf(stderr, "duoctl: %s\n", e.msg);
        json_decref(body);
        return 1;
    }
    char id[40];
    fresh_id(id, sizeof id);
    jobs_client *jc =
        jobs_client_open_ex(c.amqp_url, c.mq_prefix, NULL, c.amqp_ca_file, c.amqp_declare, &e);
    int rc = jc ? jobs_send(jc, "import.auto", id, body, &e) : ERR_MQ;
    json_decref(body);
    json_t *r = NULL;
    if (rc == 0)
        rc = jobs_wait(jc, id, a->timeout * 1000, &r, NULL, &e);
    int status = rc == 1 ? 0 : rc == 0 ? 3 : 1;
    if (rc != 1)
        fprintf(stderr, "duoctl: import.auto job %s: %s\n", id,
                rc == 0 ? "no reply in time" : e.msg);
    else
        print_json(r);
    const char *st = json_string_value(json_object_get(r, "status"));
    if (rc == 1 && !(st && strcmp(st, "ok") == 0))
        status = 1;
    else if (rc == 1 && a->follow && json_is_true(json_object_get(r, "progress")))
        status = follow(jc, id, a->timeout);
    json_decref(r);
    jobs_client_close(jc);
    config_free(&c);
    return status;
}

int cmd_import(int argc, char **argv)
{
    import_args a;
    if (argc > 0 && (strcmp(argv[0], "runs") == 0 || strcmp(argv[0], "cancel") == 0))
        return import_runs_cmd(argc, argv);
    int manual = argc > 0 && strcmp(argv[0], "manual") == 0;
    int automatic = argc > 0 && strcmp(argv[0], "auto") == 0;
    if ((!manual && !automatic) || parse(argc - 1, argv + 1, &a) < 0 ||
        (manual && (!a.duo_user_id || !a.username))) {
        fprintf(stderr, USAGE);
        return 2;
    }
    char uuid[37];
    if (job_stage_uuid(a.stage, uuid) < 0)
        return 1;
    json_t *body = json_pack("{s:s}", "stage_uuid", uuid);
    if (manual) {
        json_object_set_new(body, "duo_user_id", json_string(a.duo_user_id));
        json_object_set_new(body, "username", json_string(a.username));
        return job_send("import.manual", NULL, body, a.timeout);
    }
    if (a.page_size)
        json_object_set_new(body, "page_size", json_integer(a.page_size));
    if (a.pages_per_min)
        json_object_set_new(body, "pages_per_min", json_integer(a.pages_per_min));
    if (a.dry_run)
        json_object_set_new(body, "dry_run", json_true());
    return send_auto(&a, body);
}
