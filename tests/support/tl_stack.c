/* tl_stack.c - builds and tears down a private end-to-end stack (see tl_stack.h). */
#include "tl_stack.h"

#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "testlib.h"

static unsigned job_counter;

static void rand_hex(char *out, size_t n)
{
    static const char hex[] = "0123456789ABCDEF";
    unsigned char b[64];
    FILE *f = fopen("/dev/urandom", "rb");
    size_t got = f ? fread(b, 1, n, f) : 0;
    if (f)
        fclose(f);
    for (size_t i = 0; i + 1 < n; i++)
        out[i] = hex[(i < got ? b[i] : (unsigned char)rand()) & 15];
    out[n - 1] = '\0';
}

typedef struct {
    char *buf;
    size_t len, cap;
} sink;

static size_t on_data(char *p, size_t size, size_t n, void *arg)
{
    sink *s = arg;
    size_t len = size * n;
    size_t room = s->cap - s->len - 1;
    size_t take = len < room ? len : room;
    memcpy(s->buf + s->len, p, take);
    s->len += take;
    s->buf[s->len] = '\0';
    return len;
}

int tl_emu(const char *method, const char *path, const char *body, char *out, size_t outlen)
{
    char url[512];
    snprintf(url, sizeof url, "%s%s", tl_env("DUO_EMU_URL"), path);
    CURL *c = curl_easy_init();
    struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
    char scratch[256];
    sink s = {out ? out : scratch, 0, out ? outlen : sizeof scratch};
    s.buf[0] = '\0';
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(c, CURLOPT_CAINFO, tl_env("DUO_CA_FILE"));
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &s);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 60L);
    if (body)
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    long status = -1;
    if (curl_easy_perform(c) == CURLE_OK)
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    return (int)status;
}

json_t *tl_emu_json(const char *path, const char *body)
{
    size_t cap = 1u << 20;
    char *out = malloc(cap);
    if (!out) {
        fprintf(stderr, "tl_emu_json: out of memory\n");
        exit(1);
    }
    int st = tl_emu(body ? "POST" : "GET", path, body, out, cap);
    json_t *j = st == 200 ? json_loads(out, 0, NULL) : NULL;
    if (!j) {
        fprintf(stderr, "tl_emu_json: emulator %s answered HTTP %d: %.300s\n", path, st, out);
        free(out);
        exit(1);
    }
    free(out);
    return j;
}

static int make_tenant_account(const tl_tenant *t, unsigned flags)
{
    char body[1024];
    snprintf(body, sizeof body,
             "{\"account\":\"%s\",\"integrations\":[{\"ikey\":\"%s\",\"skey\":\"%s\","
             "\"type\":\"auth\"},{\"ikey\":\"%s\",\"skey\":\"%s\",\"type\":\"admin\"}],"
             "\"admin_licensed\":%s,\"admin_pages_per_min\":0}",
             t->account, t->auth_ikey, t->auth_skey, t->admin_ikey, t->admin_skey,
             (flags & TL_UNLICENSED) ? "false" : "true");
    char out[512];
    int st = tl_emu("POST", "/_emu/account", body, out, sizeof out);
    if (st != 200)
        fprintf(stderr, "tl_stack: emulator account: HTTP %d %s\n", st, out);
    return st == 200 ? 0 : -1;
}

static int make_account(tl_stack *s, unsigned flags)
{
    tl_tenant t = {0};
    snprintf(t.account, sizeof t.account, "%s", s->account);
    snprintf(t.auth_ikey, sizeof t.auth_ikey, "%s", s->auth_ikey);
    snprintf(t.auth_skey, sizeof t.auth_skey, "%s", s->auth_skey);
    snprintf(t.admin_ikey, sizeof t.admin_ikey, "%s", s->admin_ikey);
    snprintf(t.admin_skey, sizeof t.admin_skey, "%s", s->admin_skey);
    return make_tenant_account(&t, flags);
}

/* Records the secrets a test hands out so scripts/check-secret-logs.sh can prove that
 * none of them reaches a log. */
static void record_secrets(const tl_stack *s)
{
    char path[600];
    snprintf(path, sizeof path, "%s/test-secrets.txt", tl_env("DUO_RUN_DIR"));
    FILE *f = fopen(path, "a");
    if (!f)
        return;
    fprintf(f, "%s\n%s\n%s\n", s->auth_skey, s->admin_skey, getenv("DUO_SECRET_KEY"));
    fclose(f);
}

static void set_env(tl_stack *s)
{
    setenv("DATABASE_URL", s->db, 1);
    setenv("MQ_PREFIX", s->prefix, 1);
    /* A fixed test key (base64 of 32 bytes); never a production key. */
    setenv("DUO_SECRET_KEY", "dGVzdC1rZXktdGVzdC1rZXktdGVzdC1rZXktdGVzdDA=", 1);
    setenv("RETRY_DELAYS_MS", "200,400,800", 1);
    setenv("DUO_RETRY_BUDGET_MS", "20000", 1);
    if (!getenv("LOG_LEVEL"))
        setenv("LOG_LEVEL", "info", 1);
}

int tl_stack_duoctl(tl_stack *s, const char *args, char *out, size_t outlen)
{
    (void)s;
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "%s/duoctl %s", tl_env("DUO_BIN_DIR"), args);
    FILE *p = popen(cmd, "r");
    if (!p)
        return -1;
    size_t n = out ? fread(out, 1, outlen - 1, p) : 0;
    if (out)
        out[n] = '\0';
    char sink_buf[4096];
    while (fread(sink_buf, 1, sizeof sink_buf, p) > 0)
        ;
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static int make_stage(tl_stack *s, unsigned flags)
{
    char args[2048], out[4096];
    snprintf(args, sizeof args,
             "stage create --name %s --api-hostname %s --client-id %s --client-secret %s "
             "--friendly-name 'Duo (%s)' %s%s%s%s %s",
             s->stage_name, tl_env("DUO_EMU_HOST"), s->auth_ikey, s->auth_skey, s->tag,
             (flags & TL_NO_ADMIN) ? "" : "--admin-integration-key ",
             (flags & TL_NO_ADMIN) ? "" : s->admin_ikey,
             (flags & TL_NO_ADMIN) ? "" : " --admin-secret-key ",
             (flags & TL_NO_ADMIN) ? "" : s->admin_skey,
             (flags & TL_SIG_V2) ? "--sig-version 2" : "");
    if (tl_stack_duoctl(s, args, out, sizeof out) != 0) {
        fprintf(stderr, "tl_stack: stage create failed: %s\n", out);
        return -1;
    }
    json_t *j = json_loads(out, JSON_DISABLE_EOF_CHECK, NULL);
    const char *uuid = json_string_value(json_object_get(j, "uuid"));
    snprintf(s->stage_uuid, sizeof s->stage_uuid, "%s", uuid ? uuid : "");
    json_decref(j);
    return s->stage_uuid[0] ? 0 : -1;
}

int tl_stack_init(tl_stack *s, const char *tag, unsigned flags)
{
    memset(s, 0, sizeof *s);
    snprintf(s->tag, sizeof s->tag, "%s", tag);
    tl_unique_prefix(tag, s->prefix, sizeof s->prefix);
    snprintf(s->account, sizeof s->account, "%s", s->prefix);
    snprintf(s->stage_name, sizeof s->stage_name, "stage-%s", s->prefix);
    memcpy(s->auth_ikey, "DI", 2);
    rand_hex(s->auth_ikey + 2, 19);
    memcpy(s->admin_ikey, "DA", 2);
    rand_hex(s->admin_ikey + 2, 19);
    rand_hex(s->auth_skey, 41);
    rand_hex(s->admin_skey, 41);
    snprintf(s->logdir, sizeof s->logdir, "%s/logs", tl_env("DUO_RUN_DIR"));
    mkdir(s->logdir, 0755);
    if (tl_create_db(tag, s->db, sizeof s->db) < 0)
        return -1;
    set_env(s);
    record_secrets(s);
    char out[1024];
    if (tl_stack_duoctl(s, "migrate", out, sizeof out) != 0) {
        fprintf(stderr, "tl_stack: migrate failed: %s\n", out);
        return -1;
    }
    if (make_account(s, flags) < 0 || make_stage(s, flags) < 0)
        return -1;
    err_t e = {0};
    s->client = jobs_client_open(tl_env("AMQP_URL"), s->prefix, "#", &e);
    if (!s->client) {
        fprintf(stderr, "tl_stack: jobs client: %s\n", e.msg);
        return -1;
    }
    return 0;
}

/* The worker's own least-privilege role (DUO_DB_URL_<NAME> from services.sh, which
 * `duoctl migrate` granted on this test's database too) with the test's database name;
 * the test database's URL when the stack does not provide one. */
static void worker_db_url(const tl_stack *s, const char *name, char *out, size_t n)
{
    char var[64];
    snprintf(var, sizeof var, "DUO_DB_URL_%s", name);
    for (char *p = var; *p; p++)
        if (*p >= 'a' && *p <= 'z')
            *p = (char)(*p - 'a' + 'A');
    const char *role_url = getenv(var);
    const char *db = strrchr(s->db, '/');
    const char *slash = role_url ? strrchr(role_url, '/') : NULL;
    if (!slash || !db)
        snprintf(out, n, "%s", s->db);
    else
        snprintf(out, n, "%.*s%s", (int)(slash - role_url), role_url, db);
}

pid_t tl_stack_worker(tl_stack *s, const char *name, const char *const *extra_env)
{
    if (s->nworkers == TL_MAX_WORKERS)
        return -1;
    char bin[512], log[1024];
    snprintf(bin, sizeof bin, "%s/duo-%s", tl_env("DUO_BIN_DIR"), name);
    snprintf(log, sizeof log, "%s/%s-%s-%d.log", s->logdir, s->prefix, name, s->nworkers);
    char db_url[1024];
    worker_db_url(s, name, db_url, sizeof db_url);
    pid_t pid = fork();
    if (pid == 0) {
        setenv("DATABASE_URL", db_url, 1);
        for (int i = 0; extra_env && extra_env[i]; i++)
            putenv((char *)extra_env[i]);
        int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0)
            dup2(fd, 2);
        execl(bin, bin, (char *)NULL);
        _exit(127);
    }
    if (pid > 0)
        s->workers[s->nworkers++] = pid;
    return pid;
}

int tl_stack_workers(tl_stack *s, const char *const *extra_env)
{
    static const char *const kinds[] = {"enroll", "auth", "import"};
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++)
        if (tl_stack_worker(s, kinds[i], extra_env) <= 0)
            return -1;
    return 0;
}

void tl_stack_signal(tl_stack *s, pid_t pid, int sig)
{
    kill(pid, sig);
    if (sig != SIGKILL && sig != SIGTERM)
        return;
    waitpid(pid, NULL, 0);
    for (int i = 0; i < s->nworkers; i++)
        if (s->workers[i] == pid)
            s->workers[i] = s->workers[--s->nworkers];
}

void tl_stack_fini(tl_stack *s)
{
    while (s->nworkers > 0)
        tl_stack_signal(s, s->workers[0], SIGKILL);
    if (s->client) {
        jobs_client_close(s->client);
        s->client = NULL;
    }
    err_t e = {0};
    mq_opts o = {.urls = tl_env("AMQP_URL"), .prefix = s->prefix};
    mq_conn *c = mq_open(&o, &e);
    if (c)
        mq_delete_topology(c, &e);
    mq_close(c);
    if (s->db[0])
        tl_drop_db(s->db);
}

int tl_stack_tenant(tl_stack *s, const char *name, const char *host, unsigned flags, tl_tenant *t)
{
    memset(t, 0, sizeof *t);
    snprintf(t->account, sizeof t->account, "%s-%s", s->prefix, name);
    snprintf(t->stage_name, sizeof t->stage_name, "stage-%s-%s", s->prefix, name);
    memcpy(t->auth_ikey, "DI", 2);
    rand_hex(t->auth_ikey + 2, 19);
    memcpy(t->admin_ikey, "DA", 2);
    rand_hex(t->admin_ikey + 2, 19);
    rand_hex(t->auth_skey, 41);
    rand_hex(t->admin_skey, 41);
    char path[600];
    snprintf(path, sizeof path, "%s/test-secrets.txt", tl_env("DUO_RUN_DIR"));
    FILE *f = fopen(path, "a");
    if (f) {
        fprintf(f, "%s\n%s\n", t->auth_skey, t->admin_skey);
        fclose(f);
    }
    if (make_tenant_account(t, flags) < 0)
        return -1;
    char args[2048], out[4096];
    snprintf(args, sizeof args,
             "stage create --name %s --api-hostname %s --client-id %s --client-secret %s "
             "--admin-integration-key %s --admin-secret-key %s",
             t->stage_name, host ? host : tl_env("DUO_EMU_HOST"), t->auth_ikey, t->auth_skey,
             t->admin_ikey, t->admin_skey);
    if (tl_stack_duoctl(s, args, out, sizeof out) != 0) {
        fprintf(stderr, "tl_stack: stage create failed: %s\n", out);
        return -1;
    }
    json_t *j = json_loads(out, JSON_DISABLE_EOF_CHECK, NULL);
    const char *uuid = json_string_value(json_object_get(j, "uuid"));
    snprintf(t->stage_uuid, sizeof t->stage_uuid, "%s", uuid ? uuid : "");
    json_decref(j);
    return t->stage_uuid[0] ? 0 : -1;
}

int tl_stack_user(tl_stack *s, const char *username)
{
    char args[512];
    snprintf(args, sizeof args, "user upsert --username '%s'", username);
    return tl_stack_duoctl(s, args, NULL, 0) == 0 ? 0 : -1;
}

void tl_job_id(tl_stack *s, char *out, size_t n)
{
    snprintf(out, n, "%s-%u-%ld", s->tag, job_counter++, (long)getpid());
}

long long tl_emu_requests(const char *account, const char *path)
{
    char q[256];
    snprintf(q, sizeof q, "/_emu/stats?account=%s", account);
    json_t *j = tl_emu_json(q, NULL);
    json_t *st = json_object_get(json_object_get(j, "requests"), path);
    long long n = 0;
    const char *k;
    json_t *v;
    json_object_foreach(st, k, v) n += json_integer_value(v);
    json_decref(j);
    return n;
}

json_t *tl_job(tl_stack *s, const char *type, const char *job_id, json_t *body, int timeout_ms)
{
    err_t e = {0};
    json_t *reply = NULL;
    int rc = jobs_send(s->client, type, job_id, body, &e);
    json_decref(body);
    if (rc == 0)
        rc = jobs_wait(s->client, job_id, timeout_ms, &reply, NULL, &e);
    if (rc != 1)
        fprintf(stderr, "tl_job %s %s: %s\n", type, job_id, rc == 0 ? "no reply in time" : e.msg);
    return rc == 1 ? reply : NULL;
}

const char *tl_str(const json_t *reply, const char *key)
{
    const char *v = json_string_value(json_object_get(reply, key));
    return v ? v : "";
}

const char *tl_code(const json_t *reply)
{
    const char *v = json_string_value(json_object_get(json_object_get(reply, "error"), "code"));
    return v ? v : "";
}
