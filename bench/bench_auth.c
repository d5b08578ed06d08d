/* bench_auth.c - the authentication worker benchmark (run it through bench/run_auth.sh,
 * which prepares the database, stage, users and emulator account).
 *
 *   held N,N,.. R  N pushes held DELAY by the emulator, all sent at once to one fresh
 *                  worker process: completion time versus the hold, peak RSS (VmHWM).
 *   fast M W R     passcode jobs (answered at once), W in flight: jobs/s of one worker
 *                  side by side with raw_roundtrip (same broker, same message sizes) and
 *                  with the emulator alone (duo_async, no broker); round-trip p50/p99
 *                  at one job in flight for both; worker CPU time per job (/proc stat).
 * Each figure is the median of R runs. Loopback only; every wait is bounded.
 * Environment: AMQP_URL, DATABASE_URL, MQ_PREFIX, DUO_SECRET_KEY, DUO_CA_FILE,
 * DUO_EMU_HOST, DUO_BIN_DIR, BENCH_STAGE, BENCH_USER_PREFIX, BENCH_USERS, BENCH_IKEY,
 * BENCH_SKEY, BENCH_HOLD_MS. */
#include <amqp.h>
#include <amqp_tcp_socket.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "clock.h"
#include "duo_async.h"
#include "mq.h"
#include "msg.h"

#define MAX_JOBS 20000
#define PHASE_LIMIT_MS 60000

static const char *env(const char *k)
{
    const char *v = getenv(k);
    if (!v || !*v) {
        fprintf(stderr, "bench_auth: %s is not set\n", k);
        exit(2);
    }
    return v;
}

static double now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

/* ---- processes ------------------------------------------------------------------- */

static pid_t spawn(char *const argv[], const char *log)
{
    pid_t pid = fork();
    if (pid == 0) {
        FILE *f = freopen(log, "a", stderr);
        (void)f;
        execv(argv[0], argv);
        _exit(127);
    }
    return pid;
}

static void stop(pid_t pid)
{
    if (pid <= 0)
        return;
    kill(pid, SIGTERM);
    for (int i = 0; i < 100; i++) {
        if (waitpid(pid, NULL, WNOHANG) == pid)
            return;
        usleep(50000);
    }
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
}

/* Peak RSS in KiB (VmHWM). */
static long vm_hwm_kb(pid_t pid)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    long kb = -1;
    while (f && fgets(line, sizeof line, f))
        if (strncmp(line, "VmHWM:", 6) == 0)
            kb = strtol(line + 6, NULL, 10);
    if (f)
        fclose(f);
    return kb;
}

/* utime + stime in seconds. */
static double cpu_secs(pid_t pid)
{
    char path[64], buf[2048];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    size_t n = f ? fread(buf, 1, sizeof buf - 1, f) : 0;
    if (f)
        fclose(f);
    buf[n] = '\0';
    char *p = strrchr(buf, ')');
    if (!p)
        return -1;
    unsigned long ut = 0, st = 0;
    /* fields after ")": state(3) ... utime(14) stime(15) */
    if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2)
        return -1;
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

/* ---- AMQP client ----------------------------------------------------------------- */

typedef struct {
    amqp_connection_state_t c;
    char reply_q[256];
} client;

static int client_open(client *cl)
{
    char url[1024];
    snprintf(url, sizeof url, "%s", env("AMQP_URL"));
    struct amqp_connection_info ci;
    if (amqp_parse_url(url, &ci) != AMQP_STATUS_OK)
        return -1;
    if (!ci.vhost || !*ci.vhost) /* "amqp://host/" names the default vhost */
        ci.vhost = "/";
    cl->c = amqp_new_connection();
    amqp_socket_t *s = amqp_tcp_socket_new(cl->c);
    if (!s || amqp_socket_open(s, ci.host, ci.port) != AMQP_STATUS_OK)
        return -1;
    if (amqp_login(cl->c, ci.vhost, 0, 131072, 0, AMQP_SASL_METHOD_PLAIN, ci.user, ci.password)
            .reply_type != AMQP_RESPONSE_NORMAL)
        return -1;
    amqp_channel_open(cl->c, 1);
    amqp_queue_declare_ok_t *q =
        amqp_queue_declare(cl->c, 1, amqp_empty_bytes, 0, 0, 1, 1, amqp_empty_table);
    if (!q)
        return -1;
    snprintf(cl->reply_q, sizeof cl->reply_q, "%.*s", (int)q->queue.len, (char *)q->queue.bytes);
    amqp_basic_consume(cl->c, 1, q->queue, amqp_empty_bytes, 0, 1, 1, amqp_empty_table);
    return amqp_get_rpc_reply(cl->c).reply_type == AMQP_RESPONSE_NORMAL ? 0 : -1;
}

/* Where jobs go: the worker's exchange and routing key, or raw_roundtrip's queue. */
typedef struct {
    const char *exchange;
    const char *key;
} target;

static int publish(client *cl, const target *t, const char *id, const void *body, size_t len)
{
    amqp_basic_properties_t p = {
        ._flags = AMQP_BASIC_DELIVERY_MODE_FLAG | AMQP_BASIC_CORRELATION_ID_FLAG |
                  AMQP_BASIC_MESSAGE_ID_FLAG | AMQP_BASIC_CONTENT_TYPE_FLAG |
                  AMQP_BASIC_REPLY_TO_FLAG | AMQP_BASIC_TYPE_FLAG,
        .delivery_mode = 2,
        .content_type = amqp_cstring_bytes("application/msgpack"),
        .correlation_id = amqp_cstring_bytes(id),
        .message_id = amqp_cstring_bytes(id),
        .reply_to = amqp_cstring_bytes(cl->reply_q),
        .type = amqp_cstring_bytes("auth")};
    amqp_bytes_t b = {.len = len, .bytes = (void *)body};
    return amqp_basic_publish(cl->c, 1, amqp_cstring_bytes(t->exchange), amqp_cstring_bytes(t->key),
                              0, 0, &p, b) == AMQP_STATUS_OK
               ? 0
               : -1;
}

/* Next reply within ms: its job index (from "<run>-<index>") and result; -1 timeout. */
static int next_reply(client *cl, int ms, char *result, size_t n, size_t *len)
{
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    amqp_envelope_t e;
    amqp_maybe_release_buffers(cl->c);
    if (amqp_consume_message(cl->c, &e, &tv, 0).reply_type != AMQP_RESPONSE_NORMAL)
        return -1;
    amqp_bytes_t cid = e.message.properties.correlation_id;
    char id[128];
    snprintf(id, sizeof id, "%.*s", (int)cid.len, (char *)cid.bytes);
    const char *dash = strrchr(id, '-');
    int idx = dash ? (int)strtol(dash + 1, NULL, 10) : -1;
    json_t *j = NULL;
    result[0] = '\0';
    if (msg_decode(e.message.body.bytes, e.message.body.len, NULL, &j, NULL) == 0) {
        const char *r = json_string_value(json_object_get(j, "result"));
        snprintf(result, n, "%s", r ? r : "error");
        json_decref(j);
    }
    *len = e.message.body.len;
    amqp_destroy_envelope(&e);
    return idx;
}

/* ---- phases ---------------------------------------------------------------------- */

typedef struct {
    double secs;       /* first send to last reply */
    double first_secs; /* first send to first reply */
    double sent_secs;  /* first send to last send */
    int answered, allowed;
    double lat_us[MAX_JOBS];
    size_t reply_len;
} phase;

typedef void (*body_fn)(int i, void **buf, size_t *len);

static int run_seq;

/* Sends m jobs keeping at most w unanswered; records each round trip. */
static void run_phase(client *cl, const target *t, int m, int w, body_fn body, phase *ph)
{
    static double sent_at[MAX_JOBS];
    int sent = 0, run = ++run_seq;
    memset(ph, 0, sizeof *ph);
    double t0 = now_us();
    long long limit = clock_ms() + PHASE_LIMIT_MS;
    while (ph->answered < m && clock_ms() < limit) {
        while (sent < m && sent - ph->answered < w) {
            char id[64];
            void *buf = NULL;
            size_t len = 0;
            snprintf(id, sizeof id, "b%d-%d-%d", (int)getpid(), run, sent);
            body(sent, &buf, &len);
            sent_at[sent] = now_us();
            if (publish(cl, t, id, buf, len) < 0)
                fprintf(stderr, "bench_auth: publish failed\n");
            free(buf);
            sent++;
        }
        char res[32];
        int idx = next_reply(cl, 1000, res, sizeof res, &ph->reply_len);
        if (idx < 0 || idx >= m)
            continue;
        if (ph->answered == 0)
            ph->first_secs = (now_us() - t0) / 1e6;
        if (sent == m && ph->sent_secs == 0)
            ph->sent_secs = (now_us() - t0) / 1e6;
        ph->lat_us[ph->answered++] = now_us() - sent_at[idx];
        ph->allowed += strcmp(res, "allow") == 0;
    }
    ph->secs = (now_us() - t0) / 1e6;
}

static void job_body(int i, const char *factor, void **buf, size_t *len)
{
    char user[64];
    snprintf(user, sizeof user, "%s%07d", env("BENCH_USER_PREFIX"),
             i % (int)strtol(env("BENCH_USERS"), NULL, 10));
    json_t *j = json_pack("{s:s, s:s, s:s}", "stage_uuid", env("BENCH_STAGE"), "username", user,
                          "factor", factor);
    if (strcmp(factor, "passcode") == 0)
        json_object_set_new(j, "passcode", json_string("123456"));
    msg_encode(j, buf, len, NULL);
    json_decref(j);
}

static void push_body(int i, void **buf, size_t *len)
{
    job_body(i, "push", buf, len);
}

static void passcode_body(int i, void **buf, size_t *len)
{
    job_body(i, "passcode", buf, len);
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_d);
    return n ? v[n / 2] : 0;
}

static double pct(phase *ph, double p)
{
    qsort(ph->lat_us, (size_t)ph->answered, sizeof(double), cmp_d);
    int i = (int)(p * (ph->answered - 1));
    return ph->answered ? ph->lat_us[i] / 1000.0 : 0;
}

/* Waits (at most 30 s) until queue has a consumer: the process behind it is ready. A
 * failed passive declare closes its channel, so each look uses a channel of its own. */
static int wait_consumer(client *cl, const char *queue)
{
    static amqp_channel_t ch = 1;
    for (int i = 0; i < 300; i++) {
        ch = ch >= 2000 ? 2 : ch + 1;
        amqp_channel_open(cl->c, ch);
        amqp_queue_declare_ok_t *ok =
            amqp_queue_declare(cl->c, ch, amqp_cstring_bytes(queue), 1, 0, 0, 0, amqp_empty_table);
        int consumers = ok ? (int)ok->consumer_count : 0;
        if (ok) {
            amqp_channel_close(cl->c, ch, AMQP_REPLY_SUCCESS);
        } else {
            amqp_channel_close_ok_t close_ok = {0};
            amqp_send_method(cl->c, ch, AMQP_CHANNEL_CLOSE_OK_METHOD, &close_ok);
        }
        if (consumers > 0)
            return 0;
        usleep(100000);
    }
    return -1;
}

/* Starts duo-auth and waits until it answers one job. */
static pid_t start_worker(client *cl, const target *t)
{
    char bin[512], log[600];
    snprintf(bin, sizeof bin, "%s/duo-auth", env("DUO_BIN_DIR"));
    snprintf(log, sizeof log, "%s/bench-auth-worker.log",
             getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    char *argv[] = {bin, NULL};
    pid_t pid = spawn(argv, log);
    char q[256];
    snprintf(q, sizeof q, "%s.auth", env("MQ_PREFIX"));
    static phase warm;
    if (wait_consumer(cl, q) < 0) {
        fprintf(stderr, "bench_auth: the worker did not start (see %s)\n", log);
        stop(pid);
        return -1;
    }
    run_phase(cl, t, 1, 1, passcode_body, &warm);
    if (warm.answered != 1) {
        fprintf(stderr, "bench_auth: the worker did not answer (see %s)\n", log);
        stop(pid);
        return -1;
    }
    return pid;
}

static int held(client *cl, const target *t, char *list, int runs)
{
    int hold = (int)strtol(env("BENCH_HOLD_MS"), NULL, 10);
    printf("\n(a) pushes held %d ms by the emulator, one worker process, median of %d runs\n", hold,
           runs);
    printf("%6s %12s %8s %10s %10s %10s %12s\n", "N", "complete_s", "x_hold", "allowed", "rss_MB",
           "first_s", "cpu_ms/job");
    for (char *s = list; s && *s;) {
        int n = (int)strtol(s, &s, 10);
        s += *s == ',';
        double secs[16], rss[16], ok[16], first[16], cpu[16];
        for (int r = 0; r < runs && r < 16; r++) {
            pid_t pid = start_worker(cl, t);
            if (pid < 0)
                return 1;
            static phase ph;
            double c0 = cpu_secs(pid);
            run_phase(cl, t, n, n, push_body, &ph);
            cpu[r] = (cpu_secs(pid) - c0) * 1000.0 / n;
            first[r] = ph.first_secs;
            secs[r] = ph.secs;
            ok[r] = ph.allowed;
            rss[r] = vm_hwm_kb(pid) / 1024.0;
            stop(pid);
        }
        double ms = median(secs, runs);
        printf("%6d %12.2f %8.2f %10.0f %10.1f %10.2f %12.3f\n", n, ms, ms * 1000.0 / hold,
               median(ok, runs), median(rss, runs), median(first, runs), median(cpu, runs));
        fflush(stdout);
    }
    return 0;
}

/* ---- emulator alone ---------------------------------------------------------------- */

typedef struct {
    int done, ok;
} emu_count;

static void on_emu(void *arg, int rc, json_t *resp, json_t *meta, const duo_error *err)
{
    (void)meta;
    (void)err;
    emu_count *c = arg;
    c->done++;
    c->ok += rc == 0 &&
             duo_result_of(json_string_value(json_object_get(resp, "result"))) == DUO_RESULT_ALLOW;
}

/* m passcode calls straight to the emulator with w in flight; jobs/s. */
static double emu_alone(int m, int w)
{
    duo_client_opts o;
    duo_client_opts_default(&o);
    o.host = env("DUO_EMU_HOST");
    o.ikey = env("BENCH_IKEY");
    o.skey = env("BENCH_SKEY");
    o.ca_file = env("DUO_CA_FILE");
    duo_async *a = duo_async_new(NULL, NULL);
    emu_count c = {0};
    int sent = 0;
    double t0 = now_us();
    long long limit = clock_ms() + PHASE_LIMIT_MS;
    while (c.done < m && a && clock_ms() < limit) {
        for (; sent < m && sent - c.done < w; sent++) {
            char user[64];
            snprintf(user, sizeof user, "%s%07d", env("BENCH_USER_PREFIX"),
                     sent % (int)strtol(env("BENCH_USERS"), NULL, 10));
            duo_param p[] = {{"username", user}, {"factor", "passcode"}, {"passcode", "123456"}};
            duo_async_submit(a, &o, "POST", "/auth/v2/auth", p, 3, 0, on_emu, &c, NULL, NULL);
        }
        duo_async_poll(a, -1, 100, NULL);
    }
    double secs = (now_us() - t0) / 1e6;
    duo_async_free(a);
    return c.ok == m ? m / secs : -1;
}

/* ---- fast path --------------------------------------------------------------------- */

typedef struct {
    double worker, raw, emu, wp50, wp99, rp50, rp99, cpu_ms, raw_cpu_ms;
} fast_run;

static pid_t start_raw(client *cl, const target *t, size_t reply_len)
{
    char bin[512], prefetch[16], bytes[16];
    snprintf(bin, sizeof bin, "%s/raw_roundtrip", env("DUO_BIN_DIR"));
    snprintf(prefetch, sizeof prefetch, "%d", 2000);
    snprintf(bytes, sizeof bytes, "%zu", reply_len);
    char *argv[] = {bin, (char *)t->key, prefetch, bytes, NULL};
    pid_t pid = spawn(argv, "/dev/null");
    static phase warm;
    if (wait_consumer(cl, t->key) < 0) {
        stop(pid);
        return -1;
    }
    run_phase(cl, t, 1, 1, passcode_body, &warm);
    return warm.answered == 1 ? pid : -1;
}

static void fast_once(client *cl, const target *wt, const target *rt, pid_t wp, pid_t rp, int m,
                      int w, fast_run *f)
{
    static phase ph;
    double c0 = cpu_secs(wp);
    run_phase(cl, wt, m, w, passcode_body, &ph);
    f->worker = ph.answered == m && ph.allowed == m ? m / ph.secs : -1;
    f->cpu_ms = (cpu_secs(wp) - c0) * 1000.0 / m;
    c0 = cpu_secs(rp);
    run_phase(cl, rt, m, w, passcode_body, &ph);
    f->raw = ph.answered == m ? m / ph.secs : -1;
    f->raw_cpu_ms = (cpu_secs(rp) - c0) * 1000.0 / m;
    f->emu = emu_alone(m, w);
    int lat = m / 10 < 500 ? m / 10 : 500;
    run_phase(cl, wt, lat, 1, passcode_body, &ph);
    f->wp50 = pct(&ph, 0.5), f->wp99 = pct(&ph, 0.99);
    run_phase(cl, rt, lat, 1, passcode_body, &ph);
    f->rp50 = pct(&ph, 0.5), f->rp99 = pct(&ph, 0.99);
}

static void fast_print(fast_run *runs, int n, int m, int w)
{
    double v[9][16];
    for (int r = 0; r < n; r++) {
        double row[9] = {runs[r].worker, runs[r].raw,    runs[r].emu,
                         runs[r].wp50,   runs[r].wp99,   runs[r].rp50,
                         runs[r].rp99,   runs[r].cpu_ms, runs[r].raw_cpu_ms};
        for (int k = 0; k < 9; k++)
            v[k][r] = row[k];
    }
    double med[9];
    for (int k = 0; k < 9; k++)
        med[k] = median(v[k], n);
    printf("\n(b) fast path: %d passcode jobs, %d in flight, median of %d runs\n", m, w, n);
    printf("  worker          %8.0f jobs/s  (%.0f%% of raw)\n", med[0],
           med[1] > 0 ? 100.0 * med[0] / med[1] : 0);
    printf("  raw_roundtrip   %8.0f msgs/s\n", med[1]);
    printf("  emulator alone  %8.0f calls/s (duo_async, no broker)\n", med[2]);
    printf("  round trip, 1 in flight: worker p50 %.2f ms p99 %.2f ms; raw p50 %.2f ms p99 "
           "%.2f ms; added by the worker p50 %.2f ms p99 %.2f ms\n",
           med[3], med[4], med[5], med[6], med[3] - med[5], med[4] - med[6]);
    printf("  CPU per job: worker %.3f ms, raw_roundtrip %.3f ms\n", med[7], med[8]);
}

static int fast(client *cl, const target *wt, int m, int w, int runs)
{
    if (m > MAX_JOBS)
        m = MAX_JOBS;
    pid_t wp = start_worker(cl, wt);
    static phase probe;
    run_phase(cl, wt, 1, 1, passcode_body, &probe);
    char rq[256];
    snprintf(rq, sizeof rq, "%s.rawbench", env("MQ_PREFIX"));
    target rt = {"", rq};
    pid_t rp = wp > 0 ? start_raw(cl, &rt, probe.reply_len) : -1;
    if (wp < 0 || rp < 0) {
        stop(wp);
        stop(rp);
        return 1;
    }
    fast_run res[16];
    for (int r = 0; r < runs && r < 16; r++)
        fast_once(cl, wt, &rt, wp, rp, m, w, &res[r]);
    printf("  (reply size %zu bytes for both)\n", probe.reply_len);
    fast_print(res, runs < 16 ? runs : 16, m, w);
    stop(wp);
    stop(rp);
    return 0;
}

/* Deletes the run's broker names: the worker topology and raw_roundtrip's queue. */
static int cleanup(client *cl)
{
    char rq[256];
    snprintf(rq, sizeof rq, "%s.rawbench", env("MQ_PREFIX"));
    amqp_queue_delete(cl->c, 1, amqp_cstring_bytes(rq), 0, 0);
    err_t e = {0};
    mq_opts o = {.urls = env("AMQP_URL"), .prefix = env("MQ_PREFIX")};
    mq_conn *c = mq_open(&o, &e);
    if (c)
        mq_delete_topology(c, &e);
    mq_close(c);
    return 0;
}

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN);
    client cl = {0};
    if (argc < 2 || client_open(&cl) < 0) {
        fprintf(stderr, "usage: bench_auth held N[,N..] RUNS | fast M W RUNS (see run_auth.sh)\n");
        return 2;
    }
    char ex[256];
    snprintf(ex, sizeof ex, "%s.jobs", env("MQ_PREFIX"));
    target wt = {ex, "auth"};
    int rc = 2;
    if (strcmp(argv[1], "cleanup") == 0)
        rc = cleanup(&cl);
    else if (strcmp(argv[1], "held") == 0 && argc == 4)
        rc = held(&cl, &wt, argv[2], (int)strtol(argv[3], NULL, 10));
    else if (strcmp(argv[1], "fast") == 0 && argc == 5)
        rc = fast(&cl, &wt, (int)strtol(argv[2], NULL, 10), (int)strtol(argv[3], NULL, 10),
                  (int)strtol(argv[4], NULL, 10));
    amqp_connection_close(cl.c, AMQP_REPLY_SUCCESS);
    amqp_destroy_connection(cl.c);
    return rc;
}
