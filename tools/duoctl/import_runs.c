/* import_runs.c - `duoctl import runs` and `duoctl import cancel RUN`: the import runs an
 * operator can see and end, read from the store (no broker needed).
 *
 * Key invariant: a cancel only ever ends a run that is running, and ends its pending
 * pages before the run (store_import_cancel), so a worker still paging it changes
 * nothing afterwards; a stage's next `import auto` may then start. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "import_runs.h"
#include "ops.h"

static int usage(void)
{
    fprintf(stderr, "usage: duoctl import runs [--all] [--limit N] [--json]\n"
                    "       duoctl import cancel RUN_ID\n"
                    "  runs: the running import runs (--all: every run, newest first)\n"
                    "  cancel: ends a running run (one a failover stranded, or unwanted)\n");
    return 2;
}

static int add_row(const store_run_progress *r, void *arg)
{
    json_array_append_new(
        arg, json_pack("{s:s, s:s, s:s, s:b, s:i, s:i, s:I, s:I, s:I, s:i, s:I, s:I, s:s*}",
                       "run_id", r->uuid, "stage", r->stage, "state", r->state, "dry_run",
                       r->dry_run, "pages_done", r->pages_done, "pages_total", r->pages_total,
                       "created", (json_int_t)r->created, "existing", (json_int_t)r->existing,
                       "unknown_user", (json_int_t)r->unknown_user, "errors", r->errors, "started",
                       (json_int_t)r->started, "idle_s", (json_int_t)r->idle_s, "error",
                       r->error[0] ? r->error : NULL));
    return 0;
}

static void print_table(const json_t *runs)
{
    printf("%-36s %-16s %-8s %11s %8s %-20s %7s %s\n", "RUN ID", "STAGE", "STATE", "PAGES",
           "CREATED", "STARTED", "IDLE", "ERROR");
    size_t i;
    json_t *r;
    json_array_foreach(runs, i, r)
    {
        char pages[32], started[32];
        snprintf(pages, sizeof pages, "%lld/%lld",
                 (long long)json_integer_value(json_object_get(r, "pages_done")),
                 (long long)json_integer_value(json_object_get(r, "pages_total")));
        time_t t = (time_t)json_integer_value(json_object_get(r, "started"));
        struct tm tm;
        if (!gmtime_r(&t, &tm) || !strftime(started, sizeof started, "%Y-%m-%d %H:%M:%SZ", &tm))
            snprintf(started, sizeof started, "-");
        const char *err = json_string_value(json_object_get(r, "error"));
        printf("%-36s %-16.16s %-8s %11s %8lld %-20s %6llds %s\n",
               json_string_value(json_object_get(r, "run_id")),
               json_string_value(json_object_get(r, "stage")),
               json_string_value(json_object_get(r, "state")), pages,
               (long long)json_integer_value(json_object_get(r, "created")), started,
               (long long)json_integer_value(json_object_get(r, "idle_s")), err ? err : "");
    }
}

static int do_runs(ops_env *o, int argc, char **argv)
{
    int all = 0, json = 0;
    long limit = 50;
    for (int i = 0; i < argc; i++) {
        char *end = NULL;
        if (strcmp(argv[i], "--all") == 0)
            all = 1;
        else if (strcmp(argv[i], "--json") == 0)
            json = 1;
        else if (strcmp(argv[i], "--limit") == 0 && i + 1 < argc &&
                 (limit = strtol(argv[i + 1], &end, 10)) > 0 && *end == '\0')
            i++;
        else
            return usage();
    }
    json_t *runs = json_array();
    err_t e = {0};
    if (store_import_runs(o->db, all, (int)limit, add_row, runs, &e) < 0) {
        fprintf(stderr, "duoctl: import runs: %s\n", e.msg);
        json_decref(runs);
        return 1;
    }
    if (json) {
        char *s = json_dumps(runs, JSON_COMPACT);
        printf("%s\n", s ? s : "[]");
        free(s);
    } else {
        print_table(runs);
    }
    json_decref(runs);
    return 0;
}

static int do_cancel(ops_env *o, int argc, char **argv)
{
    if (argc != 1 || argv[0][0] == '-')
        return usage();
    int cancelled = 0;
    int64_t pages = 0;
    err_t e = {0};
    if (store_import_cancel(o->db, argv[0], &cancelled, &pages, &e) < 0) {
        fprintf(stderr, "duoctl: import cancel %s: %s\n", argv[0], e.msg);
        return 1;
    }
    if (!cancelled) {
        fprintf(stderr, "duoctl: import cancel: no running import run %s\n", argv[0]);
        return 1;
    }
    printf("{\"run_id\":\"%s\",\"cancelled\":true,\"pages_cancelled\":%lld}\n", argv[0],
           (long long)pages);
    return 0;
}

int import_runs_cmd(int argc, char **argv)
{
    if (argc < 1)
        return usage();
    int cancel = strcmp(argv[0], "cancel") == 0;
    if (!cancel && strcmp(argv[0], "runs") != 0)
        return usage();
    ops_env o;
    if (ops_open(&o, OPS_DB) < 0)
        return 1;
    int rc = cancel ? do_cancel(&o, argc - 1, argv + 1) : do_runs(&o, argc - 1, argv + 1);
    ops_close(&o);
    return rc;
}
