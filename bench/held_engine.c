/* held_engine.c - N pushes held by the emulator on one bare duo_async engine (no broker,
 * no database): the client's own cost of a held HTTPS connection, as peak RSS
 * and CPU time per push. Run through bench/run_held_engine.sh, which makes the
 * emulator account (BENCH_IKEY, BENCH_SKEY, users BENCH_USER_PREFIX0000000..) first.
 *
 * Invariant: every push is counted once, allowed or not; the line printed says how
 * many came back allowed, so a run with failures is visible as such. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "clock.h"
#include "duo_async.h"

typedef struct tally {
    int done, allowed;
} tally;

static void on_done(void *arg, int rc, json_t *resp, json_t *meta, const duo_error *err)
{
    (void)meta;
    tally *t = arg;
    t->done++;
    const char *r = json_string_value(json_object_get(resp, "result"));
    if (rc == 0 && r && strcmp(r, "allow") == 0)
        t->allowed++;
    else if (t->done - t->allowed <= 3)
        fprintf(stderr, "held_engine: push failed: %s\n", rc < 0 ? err->message : "not allow");
}

/* Peak RSS of this process in KiB (ru_maxrss is VmHWM, as bench_auth reads it). */
static long peak_rss_kb(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss;
}

static double cpu_ms(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec * 1e3 + ru.ru_utime.tv_usec / 1e3 + ru.ru_stime.tv_sec * 1e3 +
           ru.ru_stime.tv_usec / 1e3;
}

static int submit_all(duo_async *a, const duo_client_opts *o, const char *prefix, int n, tally *t)
{
    char user[96];
    for (int i = 0; i < n; i++) {
        snprintf(user, sizeof user, "%s%07d", prefix, i);
        duo_param p[] = {{"username", user}, {"factor", "push"}, {"device", "auto"}};
        err_t e = {0};
        if (duo_async_submit(a, o, "POST", "/auth/v2/auth", p, 3, 0, on_done, t, NULL, &e) < 0) {
            fprintf(stderr, "held_engine: %s\n", e.msg);
            return -1;
        }
    }
    return 0;
}

int main(int argc, char **argv)
{
    long n = argc > 1 ? strtol(argv[1], NULL, 10) : 2000;
    const char *prefix = getenv("BENCH_USER_PREFIX");
    duo_client_opts o;
    duo_client_opts_default(&o);
    o.host = getenv("DUO_EMU_HOST");
    o.ikey = getenv("BENCH_IKEY");
    o.skey = getenv("BENCH_SKEY");
    o.ca_file = getenv("DUO_CA_FILE");
    o.connect_timeout_ms = 60000; /* the emulator's handshakes queue up on a busy machine */
    if (n < 1 || n > 100000 || !prefix || !o.host || !o.ikey || !o.skey) {
        fprintf(stderr, "usage: held_engine N (env: see bench/run_held_engine.sh)\n");
        return 2;
    }
    duo_async *a = duo_async_new(NULL, NULL);
    tally t = {0};
    long long t0 = clock_ms();
    if (!a || submit_all(a, &o, prefix, (int)n, &t) < 0)
        return 1;
    while (t.done < n)
        if (duo_async_poll(a, -1, 100, NULL) < 0)
            break;
    printf("held=%ld allowed=%d wall_s=%.2f peak_rss_MB=%.1f cpu_ms_per_push=%.3f\n", n, t.allowed,
           (clock_ms() - t0) / 1e3, peak_rss_kb() / 1024.0, cpu_ms() / (double)n);
    duo_async_free(a);
    return t.allowed == n ? 0 : 1;
}
