/* bench_auth.c - the authentication worker benchmark (run it through bench/run_auth.sh,
 * which prepares the database, stage, users and emulator account).
 *
 *   held N,N,.. R  N pushes held DELAY by the emulator, all sent at once to one fresh
 *                  worker process: completion time versus the hold, peak RSS (VmHWM).
 *   fast M W R     passcode jobs (answered at once), W in flight: jobs/s of one worker
 *                  side by side with raw_roundtrip (same broker, same message sizes,
 *                  asynchronous confirms) and with the emulator alone (duo_async, no
 *                  broker), and the worker as a share of the lower of those two ceilings;
 *                  round-trip p50/p99 at one job in flight for worker and raw; worker
 *                  CPU time per job (/proc stat). BENCH_ATTACH runs a profiler on the
 *                  worker during one phase (see attach()).
 *   raw M W R      raw_roundtrip alone, with the client's own CPU per message.
 * Each figure is the median of R runs. Loopback only; every wait is bounded. With
 * BENCH_BASE_WORKER (a base revision's duo-auth) both workers are measured, alternately
 * within each run, on MQ prefixes of their own.
 * Environment: AMQP_URL, DATABASE_URL, MQ_PREFIX, DUO_SECRET_KEY, DUO_CA_FILE,
 * DUO_EMU_HOST, DUO_BIN_DIR, BENCH_STAGE, BENCH_USER_PREFIX, BENCH_USERS, BENCH_IKEY,
 * BENCH_SKEY, BENCH_HOLD_MS. */
#include <amqp.h>
#include <amqp_tcp_socket.h>
#include <dirent.h>
#include <signal.h>
#include <stddef.h>
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
#define RAW_PREFETCH 2000
#define RAW_WINDOW 512

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
    return (double)clock_us();
}

/* ---- processes ------------------------------------------------------------------- */

/* Runs argv with stderr to log; prefix, when set, replaces MQ_PREFIX for it. */
static pid_t spawn(char *const argv[], const char *log, const char *prefix)
{
    pid_t pid = fork();
    if (pid == 0) {
        if (prefix)
            setenv("MQ_PREFIX", prefix, 1);
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

/* Reads /proc/<pid>/stat: the parent pid and utime + stime in clock ticks. 0 or -1. */
static int proc_stat(pid_t pid, long *ppid, unsigned long *ticks)
{
    char path[64], buf[2048];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    size_t n = f ? fread(buf, 1, sizeof buf - 1, f) : 0;
    if (f)
        fclose(f);
    buf[n] = '\0';
    char *p = strrchr(buf, ')');
    unsigned long ut = 0, st = 0;
    /* fields after ")": state(3) ppid(4) ... utime(14) stime(15) */
    if (!p ||
        sscanf(p + 2, "%*c %ld %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", ppid, &ut, &st) != 3)
        return -1;
    *ticks = ut + st;
    return 0;
}

/* utime + stime in seconds. */
static double cpu_secs(pid_t pid)
{
    long ppid = 0;
    unsigned long t = 0;
    return proc_stat(pid, &ppid, &t) < 0 ? -1 : (double)t / (double)sysconf(_SC_CLK_TCK);
}

/* CPU seconds of the PostgreSQL server the benchmark uses: its postmaster (the pid in
 * $DUO_RUN_DIR/pg/data/postmaster.pid) and every child of it (backends, WAL writer,
 * checkpointer, ...), so another cluster on the machine is not counted. -1 unknown. */
static double pg_cpu_secs(void)
{
    char path[512];
    snprintf(path, sizeof path, "%s/pg/data/postmaster.pid", env("DUO_RUN_DIR"));
    FILE *f = fopen(path, "r");
    long pm = 0, ppid = 0;
    if (!f || fscanf(f, "%ld", &pm) != 1)
        pm = 0;
    if (f)
        fclose(f);
    unsigned long t = 0, sum = 0;
    if (pm <= 0 || proc_stat((pid_t)pm, &ppid, &sum) < 0)
        return -1;
    DIR *d = opendir("/proc");
    for (struct dirent *de; d && (de = readdir(d));) {
        long pid = strtol(de->d_name, NULL, 10);
        if (pid > 0 && proc_stat((pid_t)pid, &ppid, &t) == 0 && ppid == pm)
            sum += t;
    }
    if (d)
        closedir(d);
    return (double)sum / (double)sysconf(_SC_CLK_TCK);
}

/* The server's WAL insert position in bytes (pg_current_wal_insert_lsn), via psql on
 * DATABASE_URL; -1 unknown. */
static double pg_wal_bytes(void)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd,
             "psql -XAtq '%s' -c \"SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), '0/0')\" "
             "2>/dev/null",
             env("DATABASE_URL"));
    FILE *p = popen(cmd, "r");
    double v = -1;
    if (!p || fscanf(p, "%lf", &v) != 1)
        v = -1;
    if (p)
        pclose(p);
    return v;
}

/* Busy and total CPU time of the whole machine, in clock ticks (/proc/stat). */
static void machine_ticks(double *busy, double *total)
{
    unsigned long long v[8] = {0};
    FILE *f = fopen("/proc/stat", "r");
    if (!f || fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3],
                     &v[4], &v[5], &v[6], &v[7]) != 8)
        v[3] = 1;
    if (f)
        fclose(f);
    /* user nice system idle iowait irq softirq steal */
    *total = (double)(v[0] + v[1] + v[2] + v[3] + v[4] + v[5] + v[6] + v[7]);
    *busy = *total - (double)(v[3] + v[4]);
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

/* An encoded job body; the bodies are made once per user and kept (see job_body). */
typedef struct {
    void *buf;
    size_t len;
} body;

typedef const body *(*body_fn)(int i);

static int run_seq;

/* Sends m jobs keeping at most w unanswered; records each round trip. */
static void run_phase(client *cl, const target *t, int m, int w, body_fn make, phase *ph)
{
    static double sent_at[MAX_JOBS];
    int sent = 0, run = ++run_seq;
    memset(ph, 0, sizeof *ph);
    double t0 = now_us();
    long long limit = clock_ms() + PHASE_LIMIT_MS;
    while (ph->answered < m && clock_ms() < limit) {
        while (sent < m && sent - ph->answered < w) {
            char id[64];
            snprintf(id, sizeof id, "b%d-%d-%d", (int)getpid(), run, sent);
            const body *b = make(sent);
            sent_at[sent] = now_us();
            if (!b || publish(cl, t, id, b->buf, b->len) < 0)
                fprintf(stderr, "bench_auth: publish failed\n");
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

/* The body of job i (user i modulo BENCH_USERS) for factor, encoded on first use and
 * kept for the process's life, so the client's own CPU per job stays small next to the
 * round trips it measures. NULL when out of memory. */
static const body *job_body(int i, const char *factor, body **cache)
{
    int users = (int)strtol(env("BENCH_USERS"), NULL, 10);
    if (!*cache)
        *cache = calloc((size_t)users, sizeof **cache);
    if (!*cache || users <= 0)
        return NULL;
    body *b = &(*cache)[i % users];
    if (b->buf)
        return b;
    char user[64];
    snprintf(user, sizeof user, "%s%07d", env("BENCH_USER_PREFIX"), i % users);
    json_t *j = json_pack("{s:s, s:s, s:s}", "stage_uuid", env("BENCH_STAGE"), "username", user,
                          "factor", factor);
    if (strcmp(factor, "passcode") == 0)
        json_object_set_new(j, "passcode", json_string("123456"));
    int rc = msg_encode(j, &b->buf, &b->len, NULL);
    json_decref(j);
    return rc == 0 ? b : NULL;
}

static const body *push_body(int i)
{
    static body *cache;
    return job_body(i, "push", &cache);
}

static const body *passcode_body(int i)
{
    static body *cache;
    return job_body(i, "passcode", &cache);
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

/* A passive declare of queue: its consumers and ready messages; -1 when it does not
 * exist. A failed passive declare closes its channel, so each look uses its own. */
static int queue_look(client *cl, const char *queue, int *consumers, int *messages)
{
    static amqp_channel_t ch = 1;
    ch = ch >= 2000 ? 2 : ch + 1;
    amqp_channel_open(cl->c, ch);
    amqp_queue_declare_ok_t *ok =
        amqp_queue_declare(cl->c, ch, amqp_cstring_bytes(queue), 1, 0, 0, 0, amqp_empty_table);
    if (!ok) {
        amqp_channel_close_ok_t close_ok = {0};
        amqp_send_method(cl->c, ch, AMQP_CHANNEL_CLOSE_OK_METHOD, &close_ok);
        return -1;
    }
    *consumers = (int)ok->consumer_count;
    *messages = (int)ok->message_count;
    amqp_channel_close(cl->c, ch, AMQP_REPLY_SUCCESS);
    return 0;
}

/* Waits (at most 30 s) until queue has a consumer: the process behind it is ready. */
static int wait_consumer(client *cl, const char *queue)
{
    for (int i = 0; i < 300; i++) {
        int consumers = 0, messages = 0;
        if (queue_look(cl, queue, &consumers, &messages) == 0 && consumers > 0)
            return 0;
        usleep(100000);
    }
    return -1;
}

/* After raw_roundtrip stopped: the messages its queue holds again (within 5 s of its
 * consumer going), i.e. deliveries it never acked; -1 when the queue cannot be read.
 * Every job was answered, so anything left means an ack was lost. */
static int raw_unacked(client *cl, const char *queue)
{
    int consumers = 1, messages = -1;
    for (int i = 0; i < 50 && consumers > 0; i++) {
        if (queue_look(cl, queue, &consumers, &messages) < 0)
            return -1;
        if (consumers > 0)
            usleep(100000);
    }
    return consumers > 0 ? -1 : messages;
}

/* A worker under test: this tree's (DUO_BIN_DIR) or, with BENCH_BASE_WORKER set (the
 * duo-auth of a base revision, see run_auth.sh BASE_REV), that one, on an MQ prefix of
 * its own so both stay up side by side and are measured alternately. */
typedef struct {
    const char *name;
    char bin[512], prefix[128], exchange[160];
    target t;
} variant;

static void variant_set(variant *v, const char *name, const char *bin, const char *suffix)
{
    v->name = name;
    snprintf(v->bin, sizeof v->bin, "%s", bin);
    snprintf(v->prefix, sizeof v->prefix, "%s%s", env("MQ_PREFIX"), suffix);
    snprintf(v->exchange, sizeof v->exchange, "%s.jobs", v->prefix);
    v->t = (target){v->exchange, "auth"};
}

/* The workers to measure, the base one first; how many (1 or 2). */
static int variants(variant v[2])
{
    int n = 0;
    const char *base = getenv("BENCH_BASE_WORKER");
    if (base && *base)
        variant_set(&v[n++], "base", base, "b");
    char bin[512];
    snprintf(bin, sizeof bin, "%s/duo-auth", env("DUO_BIN_DIR"));
    variant_set(&v[n], n ? "this tree" : "worker", bin, "");
    return n + 1;
}

/* Starts v's duo-auth and waits until it answers one job. */
static pid_t start_worker(client *cl, const variant *v)
{
    char log[600];
    snprintf(log, sizeof log, "%s/bench-auth-worker%s.log",
             getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp", strcmp(v->name, "base") ? "" : "-base");
    char *argv[] = {(char *)v->bin, NULL};
    pid_t pid = spawn(argv, log, v->prefix);
    char q[256];
    snprintf(q, sizeof q, "%s.auth", v->prefix);
    static phase warm;
    if (wait_consumer(cl, q) < 0) {
        fprintf(stderr, "bench_auth: the worker did not start (see %s)\n", log);
        stop(pid);
        return -1;
    }
    run_phase(cl, &v->t, 1, 1, passcode_body, &warm);
    if (warm.answered != 1) {
        fprintf(stderr, "bench_auth: the worker did not answer (see %s)\n", log);
        stop(pid);
        return -1;
    }
    return pid;
}

/* One held-push run of v with n pushes: complete_s, allowed, rss_MB, first_s, cpu_ms. */
static int held_once(client *cl, const variant *v, int n, double out[5])
{
    pid_t pid = start_worker(cl, v);
    if (pid < 0)
        return -1;
    static phase ph;
    double c0 = cpu_secs(pid);
    run_phase(cl, &v->t, n, n, push_body, &ph);
    out[4] = (cpu_secs(pid) - c0) * 1000.0 / n;
    out[0] = ph.secs;
    out[1] = ph.allowed;
    out[2] = vm_hwm_kb(pid) / 1024.0;
    out[3] = ph.first_secs;
    stop(pid);
    return 0;
}

static int held(client *cl, char *list, int runs)
{
    int hold = (int)strtol(env("BENCH_HOLD_MS"), NULL, 10);
    variant vs[2];
    int nv = variants(vs);
    runs = runs < 16 ? runs : 16;
    printf("\n(a) pushes held %d ms by the emulator, one worker process, median of %d runs\n", hold,
           runs);
    printf("%6s %-10s %12s %8s %10s %10s %10s %12s\n", "N", "worker", "complete_s", "x_hold",
           "allowed", "rss_MB", "first_s", "cpu_ms/job");
    for (char *s = list; s && *s;) {
        int n = (int)strtol(s, &s, 10);
        s += *s == ',';
        double v[2][5][16], one[5];
        for (int r = 0; r < runs; r++)
            for (int k = 0; k < nv; k++) {
                if (held_once(cl, &vs[k], n, one) < 0)
                    return 1;
                for (int f = 0; f < 5; f++)
                    v[k][f][r] = one[f];
            }
        for (int k = 0; k < nv; k++) {
            double secs = median(v[k][0], runs);
            printf("%6d %-10s %12.2f %8.2f %10.0f %10.1f %10.2f %12.3f\n", n, vs[k].name, secs,
                   secs * 1000.0 / hold, median(v[k][1], runs), median(v[k][2], runs),
                   median(v[k][3], runs), median(v[k][4], runs));
        }
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

/* m passcode calls straight to the emulator with w in flight; jobs/s. Then k calls one at
 * a time on the same engine (kept-alive connection): *p50, *p99 in ms, the Duo round trip
 * a job at one in flight cannot avoid. */
static double emu_alone(int m, int w, int k, double *p50, double *p99)
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
    int ok = c.ok == m;
    static double lat[MAX_JOBS];
    int nlat = 0;
    for (; a && nlat < k && nlat < MAX_JOBS && clock_ms() < limit; nlat++) {
        emu_count one = {0};
        char user[64];
        snprintf(user, sizeof user, "%s%07d", env("BENCH_USER_PREFIX"), 0);
        duo_param p[] = {{"username", user}, {"factor", "passcode"}, {"passcode", "123456"}};
        double s0 = now_us();
        duo_async_submit(a, &o, "POST", "/auth/v2/auth", p, 3, 0, on_emu, &one, NULL, NULL);
        while (!one.done && clock_ms() < limit)
            duo_async_poll(a, -1, 100, NULL);
        lat[nlat] = (now_us() - s0) / 1000.0;
        ok &= one.ok == 1;
    }
    qsort(lat, (size_t)nlat, sizeof *lat, cmp_d);
    *p50 = nlat ? lat[nlat / 2] : -1;
    *p99 = nlat ? lat[(int)(nlat * 0.99)] : -1;
    duo_async_free(a);
    return ok ? m / secs : -1;
}

/* ---- fast path --------------------------------------------------------------------- */

typedef struct {
    double raw, emu, rp50, rp99, raw_cpu_ms, ep50, ep99;
    double worker[2], wp50[2], wp99[2], cpu_ms[2]; /* per variant */
    double pg_ms[2]; /* PostgreSQL's CPU (every process of the server) per job */
    double wal_b[2]; /* WAL bytes written per job */
    double busy[2];  /* the machine's CPU in use during the variant's 256-in-flight phase,
                      * in CPUs (2 = both cores saturated) */
} fast_run;

static pid_t start_raw(client *cl, const target *t, size_t reply_len)
{
    char bin[512], prefetch[16], bytes[16], window[16];
    snprintf(bin, sizeof bin, "%s/raw_roundtrip", env("DUO_BIN_DIR"));
    /* The worker's prefetch, and the confirm window of the loop the issue measured. */
    snprintf(prefetch, sizeof prefetch, "%d", RAW_PREFETCH);
    snprintf(bytes, sizeof bytes, "%zu", reply_len);
    snprintf(window, sizeof window, "%d", RAW_WINDOW);
    char *argv[] = {bin, (char *)t->key, prefetch, bytes, window, NULL};
    pid_t pid = spawn(argv, "/dev/null", NULL);
    static phase warm;
    if (wait_consumer(cl, t->key) < 0) {
        stop(pid);
        return -1;
    }
    run_phase(cl, t, 1, 1, passcode_body, &warm);
    return warm.answered == 1 ? pid : -1;
}

/* Prints and checks raw_roundtrip's settlement: 0 when it acked every delivery. */
static int raw_check(client *cl, const char *queue)
{
    int left = raw_unacked(cl, queue);
    printf("  raw_roundtrip acked every delivery: %s\n",
           left == 0 ? "yes" : (left < 0 ? "unknown (queue unreadable)" : "NO"));
    if (left != 0)
        fprintf(stderr, "bench_auth: %d deliveries left unacked in %s\n", left, queue);
    return left == 0 ? 0 : -1;
}

/* Profiling hook: with BENCH_ATTACH set (a shell command; BENCH_WORKER_PID names the
 * worker) and BENCH_ATTACH_PHASE equal to which ("throughput", the default, or
 * "latency"), the command runs during that worker phase of the first run and gets
 * SIGINT at its end, e.g. BENCH_ATTACH='perf record -g -p $BENCH_WORKER_PID -o f'.
 * BENCH_ATTACH_WAIT_MS (default 2000) lets it attach before the first job. */
static pid_t attach(pid_t worker, const char *which)
{
    static int used;
    const char *cmd = getenv("BENCH_ATTACH");
    const char *want = getenv("BENCH_ATTACH_PHASE");
    if (!cmd || !*cmd || strcmp(want && *want ? want : "throughput", which) != 0 || used)
        return -1;
    used = 1;
    char pid[16];
    snprintf(pid, sizeof pid, "%d", (int)worker);
    setenv("BENCH_WORKER_PID", pid, 1);
    pid_t p = fork();
    if (p == 0) {
        setpgid(0, 0); /* its own group: SIGINT reaches the profiler, not only sh */
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    const char *wait = getenv("BENCH_ATTACH_WAIT_MS");
    long ms = wait ? strtol(wait, NULL, 10) : 2000;
    usleep((useconds_t)(ms > 0 ? ms : 0) * 1000);
    return p;
}

static void detach(pid_t p)
{
    if (p <= 0)
        return;
    kill(-p, SIGINT);
    waitpid(p, NULL, 0);
}

/* Throughput, CPU per job and latency of one worker; the profiler hook on "this tree". */
static void fast_worker(client *cl, const variant *v, pid_t wp, int m, int w, int k, fast_run *f)
{
    static phase ph;
    int profiled = strcmp(v->name, "base") != 0;
    pid_t prof = profiled ? attach(wp, "throughput") : -1;
    /* psql's own backend before and after the CPU snapshots: not counted */
    double wal0 = pg_wal_bytes(), c0 = cpu_secs(wp), b0, t0, b1, t1, pg0 = pg_cpu_secs();
    machine_ticks(&b0, &t0);
    run_phase(cl, &v->t, m, w, passcode_body, &ph);
    machine_ticks(&b1, &t1);
    double pg1 = pg_cpu_secs(), wal1 = pg_wal_bytes();
    f->pg_ms[k] = pg0 >= 0 && pg1 >= 0 ? (pg1 - pg0) * 1000.0 / m : -1;
    f->wal_b[k] = wal0 >= 0 && wal1 >= 0 ? (wal1 - wal0) / m : -1;
    f->busy[k] = t1 > t0 ? (b1 - b0) / (t1 - t0) * (double)sysconf(_SC_NPROCESSORS_ONLN) : -1;
    f->worker[k] = ph.answered == m && ph.allowed == m ? m / ph.secs : -1;
    f->cpu_ms[k] = (cpu_secs(wp) - c0) * 1000.0 / m;
    detach(prof);
    prof = profiled ? attach(wp, "latency") : -1;
    run_phase(cl, &v->t, m / 10 < 500 ? m / 10 : 500, 1, passcode_body, &ph);
    detach(prof);
    f->wp50[k] = pct(&ph, 0.5), f->wp99[k] = pct(&ph, 0.99);
}

static void fast_once(client *cl, const variant *vs, int nv, const pid_t *wp, const target *rt,
                      pid_t rp, int m, int w, fast_run *f)
{
    static phase ph;
    for (int k = 0; k < nv; k++)
        fast_worker(cl, &vs[k], wp[k], m, w, k, f);
    double c0 = cpu_secs(rp);
    run_phase(cl, rt, m, w, passcode_body, &ph);
    f->raw = ph.answered == m ? m / ph.secs : -1;
    f->raw_cpu_ms = (cpu_secs(rp) - c0) * 1000.0 / m;
    f->emu = emu_alone(m, w, m / 10 < 500 ? m / 10 : 500, &f->ep50, &f->ep99);
    run_phase(cl, rt, m / 10 < 500 ? m / 10 : 500, 1, passcode_body, &ph);
    f->rp50 = pct(&ph, 0.5), f->rp99 = pct(&ph, 0.99);
}

/* Median over n runs of the double at byte offset off in fast_run. */
static double fast_med(const fast_run *runs, int n, size_t off)
{
    double v[16];
    for (int r = 0; r < n; r++)
        v[r] = *(const double *)((const char *)&runs[r] + off);
    return median(v, n);
}

#define FAST_MED(field) fast_med(runs, n, offsetof(fast_run, field))

static void fast_print(const fast_run *runs, int n, const variant *vs, int nv, int m, int w)
{
    double raw = FAST_MED(raw), emu = FAST_MED(emu), rp50 = FAST_MED(rp50), rp99 = FAST_MED(rp99);
    double ceiling = emu > 0 && emu < raw ? emu : raw;
    printf("\n(b) fast path: %d passcode jobs, %d in flight, median of %d runs\n", m, w, n);
    printf("  raw_roundtrip   %8.0f msgs/s  (async confirms, window %d, prefetch %d); CPU %.3f "
           "ms per message; 1 in flight p50 %.2f ms p99 %.2f ms\n",
           raw, RAW_WINDOW, RAW_PREFETCH, FAST_MED(raw_cpu_ms), rp50, rp99);
    double ep50 = FAST_MED(ep50), ep99 = FAST_MED(ep99);
    printf("  emulator alone  %8.0f calls/s (duo_async, no broker); 1 in flight p50 %.2f ms p99 "
           "%.2f ms\n",
           emu, ep50, ep99);
    for (int k = 0; k < nv; k++) {
        double jobs = FAST_MED(worker[k]), p50 = FAST_MED(wp50[k]), p99 = FAST_MED(wp99[k]);
        printf("  %-15s %8.0f jobs/s  = %.0f%% of min(raw, emulator alone) = %.0f/s (%.0f%% of "
               "raw); CPU %.3f ms per job; machine busy %.2f of %ld CPUs; 1 in flight p50 %.2f "
               "ms p99 %.2f ms, added over raw p50 %.2f ms p99 %.2f ms, over raw + emulator "
               "p50 %.2f ms\n",
               vs[k].name, jobs, ceiling > 0 ? 100.0 * jobs / ceiling : 0, ceiling,
               raw > 0 ? 100.0 * jobs / raw : 0, FAST_MED(cpu_ms[k]), FAST_MED(busy[k]),
               sysconf(_SC_NPROCESSORS_ONLN), p50, p99, p50 - rp50, p99 - rp99, p50 - rp50 - ep50);
        printf("  %-15s PostgreSQL CPU %.3f ms per job (server and every backend), WAL %.0f "
               "bytes per job\n",
               vs[k].name, FAST_MED(pg_ms[k]), FAST_MED(wal_b[k]));
    }
}

static int fast(client *cl, int m, int w, int runs)
{
    m = m < MAX_JOBS ? m : MAX_JOBS;
    runs = runs < 16 ? runs : 16;
    variant vs[2];
    int nv = variants(vs);
    pid_t wp[2] = {-1, -1}, rp = -1;
    static phase probe;
    char rq[256];
    snprintf(rq, sizeof rq, "%s.rawbench", env("MQ_PREFIX"));
    target rt = {"", rq};
    int ok = 1;
    for (int k = 0; k < nv && ok; k++)
        ok = (wp[k] = start_worker(cl, &vs[k])) > 0;
    if (ok) {
        run_phase(cl, &vs[nv - 1].t, 1, 1, passcode_body, &probe);
        ok = (rp = start_raw(cl, &rt, probe.reply_len)) > 0;
    }
    fast_run res[16];
    for (int r = 0; r < runs && ok; r++)
        fast_once(cl, vs, nv, wp, &rt, rp, m, w, &res[r]);
    if (ok) {
        printf("  (reply size %zu bytes for all)\n", probe.reply_len);
        fast_print(res, runs, vs, nv, m, w);
    }
    for (int k = 0; k < nv; k++)
        stop(wp[k]);
    stop(rp);
    return ok && raw_check(cl, rq) == 0 ? 0 : 1;
}

/* raw_roundtrip alone (no worker, no emulator): M messages with W in flight, then 500
 * at one in flight, R runs; the client's own CPU per message shows whether it, rather
 * than the loop or the broker, is the limit. Replies of reply_len bytes. */
static int raw_only(client *cl, int m, int w, int runs, size_t reply_len)
{
    char rq[256];
    snprintf(rq, sizeof rq, "%s.rawbench", env("MQ_PREFIX"));
    target rt = {"", rq};
    pid_t rp = start_raw(cl, &rt, reply_len);
    if (rp < 0)
        return 1;
    if (m > MAX_JOBS)
        m = MAX_JOBS;
    double v[5][16];
    int n = runs < 16 ? runs : 16;
    for (int r = 0; r < n; r++) {
        static phase ph;
        double c0 = cpu_secs(rp), s0 = cpu_secs(getpid());
        run_phase(cl, &rt, m, w, passcode_body, &ph);
        v[0][r] = ph.answered == m ? m / ph.secs : -1;
        v[1][r] = (cpu_secs(rp) - c0) * 1000.0 / m;
        v[2][r] = (cpu_secs(getpid()) - s0) * 1000.0 / m;
        run_phase(cl, &rt, m / 10 < 500 ? m / 10 : 500, 1, passcode_body, &ph);
        v[3][r] = pct(&ph, 0.5), v[4][r] = pct(&ph, 0.99);
    }
    printf("raw_roundtrip alone: %d messages, %d in flight, window %d, prefetch %d, median of %d"
           " runs\n  %.0f msgs/s; CPU per message: raw %.3f ms, client %.3f ms; 1 in flight p50"
           " %.2f ms p99 %.2f ms\n",
           m, w, RAW_WINDOW, RAW_PREFETCH, n, median(v[0], n), median(v[1], n), median(v[2], n),
           median(v[3], n), median(v[4], n));
    stop(rp);
    return raw_check(cl, rq) == 0 ? 0 : 1;
}

static void delete_topology(const char *prefix)
{
    err_t e = {0};
    mq_opts o = {.urls = env("AMQP_URL"), .prefix = prefix};
    mq_conn *c = mq_open(&o, &e);
    if (c)
        mq_delete_topology(c, &e);
    mq_close(c);
}

/* Deletes the run's broker names: the workers' topologies and raw_roundtrip's queue. */
static int cleanup(client *cl)
{
    char rq[256];
    snprintf(rq, sizeof rq, "%s.rawbench", env("MQ_PREFIX"));
    amqp_queue_delete(cl->c, 1, amqp_cstring_bytes(rq), 0, 0);
    variant vs[2];
    int nv = variants(vs);
    for (int k = 0; k < nv; k++)
        delete_topology(vs[k].prefix);
    return 0;
}

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN);
    client cl = {0};
    if (argc < 2 || client_open(&cl) < 0) {
        fprintf(stderr, "usage: bench_auth held N[,N..] RUNS | fast M W RUNS | raw M W RUNS "
                        "(see run_auth.sh)\n");
        return 2;
    }
    int rc = 2;
    if (strcmp(argv[1], "cleanup") == 0)
        rc = cleanup(&cl);
    else if (strcmp(argv[1], "held") == 0 && argc == 4)
        rc = held(&cl, argv[2], (int)strtol(argv[3], NULL, 10));
    else if (strcmp(argv[1], "raw") == 0 && argc == 5)
        rc = raw_only(&cl, (int)strtol(argv[2], NULL, 10), (int)strtol(argv[3], NULL, 10),
                      (int)strtol(argv[4], NULL, 10), 171);
    else if (strcmp(argv[1], "fast") == 0 && argc == 5)
        rc = fast(&cl, (int)strtol(argv[2], NULL, 10), (int)strtol(argv[3], NULL, 10),
                  (int)strtol(argv[4], NULL, 10));
    amqp_connection_close(cl.c, AMQP_REPLY_SUCCESS);
    amqp_destroy_connection(cl.c);
    return rc;
}
