/* stage.c - see stage.h: the stage cache (decrypted row, CA file, Duo clients) and the
 * one mapping from Duo failures to job outcomes. */
#include "stage.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "clock.h"
#include "log.h"
#include "store_breaker.h"

#define STAGE_SLOTS 16

/* A breaker change heard from the engine, waiting to be written (stages_after_poll). */
typedef struct breaker_note {
    char *host;
    duo_breaker_state to;
    long long open_ms;
    struct breaker_note *next;
} breaker_note;

typedef struct {
    stage_rec st;      /* st.uuid[0] == 0: empty slot */
    char ca_path[256]; /* temp file with the stage's CA bundle, "" when none */
    long long loaded_ms;
    long long used;        /* LRU stamp */
    duo_client *client[2]; /* by stage_api, made on first use */
} slot;

struct stages {
    slot slot[STAGE_SLOTS];
    long long stamp;
    const worker_env *env;      /* for the breaker's metrics; NULL: none */
    breaker_note *notes, *tail; /* oldest first */
    char worker_id[96];         /* host name and pid: the duo_host_breaker row's worker */
};

stages *stages_new(const worker_env *env)
{
    if (env) {
        worker_metric_describe(env, "duo_api_seconds", "histogram",
                               "Duo API call latency, by call");
        worker_metric_describe(env, "duo_api_errors_total", "counter",
                               "Duo API errors, by stable code");
    }
    stages *s = calloc(1, sizeof(stages));
    if (!s)
        return NULL;
    s->env = env;
    char host[64] = "";
    gethostname(host, sizeof host - 1);
    snprintf(s->worker_id, sizeof s->worker_id, "%s:%ld", host, (long)getpid());
    return s;
}

int stages_init(const worker_env *env, err_t *e)
{
    stages *s = stages_new(env);
    if (!s)
        return err_set(e, ERR_NOMEM, "out of memory");
    worker_set_app(env->w, s);
    return 0;
}

void stages_fini(const worker_env *env)
{
    stages_free(env->app);
    worker_set_app(env->w, NULL);
}

static void slot_clear(slot *x)
{
    duo_client_free(x->client[0]);
    duo_client_free(x->client[1]);
    stage_rec_free(&x->st);
    if (x->ca_path[0])
        unlink(x->ca_path);
    memset(x, 0, sizeof *x);
}

void stages_free(stages *s)
{
    if (!s)
        return;
    while (s->notes) {
        breaker_note *n = s->notes;
        s->notes = n->next;
        free(n->host);
        free(n);
    }
    for (int i = 0; i < STAGE_SLOTS; i++)
        slot_clear(&s->slot[i]);
    free(s);
}

static int write_ca(const char *pem, char *path, size_t n)
{
    const char *tmp = getenv("TMPDIR");
    snprintf(path, n, "%s/duo-ca-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    int fd = mkstemp(path);
    if (fd < 0) {
        path[0] = '\0';
        return -1;
    }
    size_t len = strlen(pem);
    int ok = write(fd, pem, len) == (ssize_t)len;
    close(fd);
    if (!ok) {
        unlink(path);
        path[0] = '\0';
    }
    return ok ? 0 : -1;
}

/* The slot holding uuid (*fresh says whether it may be used as it is), or the least
 * recently used one to load it into. */
static slot *find(stages *s, const char *uuid, long long now, long long ttl, int *fresh)
{
    slot *lru = &s->slot[0];
    for (int i = 0; i < STAGE_SLOTS; i++) {
        slot *x = &s->slot[i];
        if (x->st.uuid[0] && strcasecmp(x->st.uuid, uuid) == 0) {
            *fresh = now - x->loaded_ms < ttl;
            return x;
        }
        if (x->used < lru->used)
            lru = x;
    }
    *fresh = 0;
    return lru;
}

static int load(const worker_env *env, slot *x, const char *uuid, job_outcome *o)
{
    slot_clear(x);
    err_t e = {0};
    int rc = store_stage_load(env->db, env->keys, uuid, &x->st, &e);
    if (rc == ERR_NOTFOUND || rc == ERR_INVAL) {
        job_fail(o, "stage_not_found",
                 "no Duo stage with uuid '%.80s': stage_uuid must be the "
                 "uuid of a Duo Authenticator Setup stage",
                 uuid);
    } else if (rc == ERR_CRYPTO) {
        job_fail(o, "stage_secret_unreadable", "the stage's secrets cannot be decrypted: %s",
                 e.msg);
        o->dead_letter = 1;
    } else if (rc < 0) {
        job_retry(o, "loading stage: %s", e.msg);
    } else if (x->st.ca_bundle && *x->st.ca_bundle &&
               write_ca(x->st.ca_bundle, x->ca_path, sizeof x->ca_path) < 0) {
        job_retry(o, "cannot write the stage's CA bundle to a temporary file");
        rc = -1;
    }
    if (rc < 0) {
        slot_clear(x);
        return -1;
    }
    x->loaded_ms = clock_ms();
    return 0;
}

const stage_rec *stages_get(stages *s, const worker_env *env, const char *stage_uuid,
                            job_outcome *o)
{
    if (!stage_uuid)
        stage_uuid = "";
    int fresh = 0;
    slot *x = find(s, stage_uuid, clock_ms(), env->cfg->stage_cache_ms, &fresh);
    if (!fresh && load(env, x, stage_uuid, o) < 0)
        return NULL;
    x->used = ++s->stamp;
    return &x->st;
}

static slot *slot_of(stages *s, const stage_rec *st)
{
    for (int i = 0; i < STAGE_SLOTS; i++)
        if (&s->slot[i].st == st)
            return &s->slot[i];
    return NULL;
}

int stages_duo_opts(stages *s, const worker_env *env, const stage_rec *st, stage_api api,
                    duo_client_opts *opts, job_outcome *o)
{
    int admin = api == STAGE_ADMIN_API;
    if (admin && (!st->admin_integration_key || !st->admin_secret_key)) {
        job_fail(o, "admin_api_not_configured",
                 "stage '%s' has no Admin API credentials "
                 "(admin integration key and admin secret key)",
                 st->name);
        return -1;
    }
    const config *cfg = env->cfg;
    const slot *x = slot_of(s, st);
    duo_client_opts_default(opts);
    opts->host = st->api_hostname;
    opts->ikey = admin ? st->admin_integration_key : st->client_id;
    opts->skey = admin ? st->admin_secret_key : st->client_secret;
    opts->sig_version = st->sig_version ? st->sig_version : cfg->duo_sig_version;
    opts->ca_file = x && x->ca_path[0] ? x->ca_path : cfg->duo_ca_file;
    opts->connect_timeout_ms = cfg->duo_connect_timeout_ms;
    opts->timeout_ms = cfg->duo_timeout_ms;
    opts->quick_timeout_ms = cfg->duo_quick_timeout_ms;
    opts->group = st->uuid;
    opts->group_limit = stages_max_calls(env, st);
    /* No count bound short of the prefetch: a burst of one healthy stage waits a few ms
     * for slots, it is not refused; only STAGE_QUEUE_MS of waiting turns a job away. */
    opts->group_queue_max = cfg->prefetch;
    opts->group_queue_ms = cfg->stage_queue_ms;
    opts->retry_attempts = admin ? 1 : cfg->duo_retry_attempts;
    opts->retry_budget_ms = cfg->duo_retry_budget_ms;
    opts->idle = worker_idle;
    opts->idle_arg = env->w;
    return 0;
}

duo_client *stages_duo(stages *s, const worker_env *env, const stage_rec *st, stage_api api,
                       job_outcome *o)
{
    slot *x = slot_of(s, st);
    if (!x) {
        job_retry(o, "internal error: a stage not loaded through the stage cache");
        return NULL;
    }
    if (x->client[api])
        return x->client[api];
    duo_client_opts opts;
    if (stages_duo_opts(s, env, st, api, &opts, o) < 0)
        return NULL;
    opts.group = NULL; /* a blocking client makes one call at a time: no bulkhead */
    err_t e = {0};
    if (!(x->client[api] = duo_client_new(&opts, &e)))
        job_fail(o, "stage_misconfigured", "cannot make a Duo client for the stage: %s", e.msg);
    return x->client[api];
}

int stages_submit(stages *s, const worker_env *env, duo_async *engine, const stage_rec *st,
                  stage_api api, const duo_call_spec *c, long long deadline_ms, duo_async_cb cb,
                  void *arg, duo_areq **req, job_outcome *o)
{
    duo_client_opts opts;
    if (stages_duo_opts(s, env, st, api, &opts, o) < 0)
        return -1;
    err_t e = {0};
    duo_areq *r = NULL;
    if (duo_async_submit(engine, &opts, c->method, c->path, c->p, c->n, deadline_ms, cb, arg, &r,
                         &e) < 0) {
        job_fail(o, "duo_local_error", "cannot start the Duo call: %s", e.msg);
        return -1;
    }
    if (c->parse)
        duo_async_set_parser(r, c->parse);
    if (req)
        *req = r;
    return 0;
}

void stage_duo_code(job_outcome *o, int duo_code)
{
    if (duo_code <= 0)
        return;
    if (!o->error_fields)
        o->error_fields = json_object();
    json_object_set_new(o->error_fields, "duo_code", json_integer(duo_code));
}

/* A removed Duo user: 400 40002 naming the user parameter. */
static int user_gone(const duo_error *de)
{
    return de->http_status == 400 && de->code == 40002 &&
           (strstr(de->detail, "user_id") || strstr(de->detail, "username"));
}

static void fail_transient(job_outcome *o, const duo_error *de, const char *what, unsigned flags)
{
    const char *code = duo_error_code(de);
    if (flags & STAGE_CALL_USER_WAITS)
        job_fail(o, "duo_unavailable", "Duo could not be reached after %d attempt(s): %s (%s)",
                 de->attempts, de->message, code);
    else if ((flags & STAGE_CALL_ACTS) && de->http_status != 429 && !de->not_sent)
        /* Duo may have acted before failing: a rerun could act twice. */
        job_fail(o, "duo_unavailable",
                 "Duo failed after it may have received the %s (%s): it is not repeated", what,
                 de->message);
    else
        job_retry(o, "Duo %s: %s (%s)", what, de->message, code);
}

static void fail_forbidden(job_outcome *o, const duo_error *de, const char *what, unsigned flags)
{
    if (flags & STAGE_CALL_ADMIN) {
        job_fail(o, "license_required",
                 "Duo refused the Admin API for %s (403 %d %s): automatic import needs a Duo "
                 "MFA (Essentials) or higher plan and an Admin API integration with the "
                 "\"Grant read resource\" permission",
                 what, de->code, de->message);
        return;
    }
    /* The same Duo answer gets the same code whatever the job: 40301 from the Auth API
     * means the stage's integration is disabled (or of the wrong type). */
    if (de->code == 40301)
        job_fail(o, "duo_integration_disabled",
                 "Duo refused %s with 403 %d (%s): the stage's Auth API integration is "
                 "disabled or not permitted this call",
                 what, de->code, de->message);
    else
        job_fail(o, "duo_forbidden",
                 "Duo refused %s with 403 %d (%s): check the integration's type and "
                 "permissions",
                 what, de->code, de->message);
    o->dead_letter = 1;
}

/* Nothing was sent: the host's breaker is open or the stage is at its bulkhead. A person
 * waiting is answered at once with when to try again; any other job is deferred. */
static void fail_refused(job_outcome *o, const duo_error *de, const char *what, unsigned flags)
{
    int busy = de->fail == DUO_FAIL_STAGE_BUSY;
    long long secs = (de->retry_in_ms + 999) / 1000;
    if (secs < 1)
        secs = 1;
    if (!(flags & (STAGE_CALL_USER_WAITS | STAGE_CALL_PERSON))) {
        /* Nothing was tried: a deferral, not an attempt, so a long incident does not use
         * up the job's attempts (the breaker bounds how often it comes back). */
        job_retry(o, "%s deferred: %s", what, de->message);
        o->defer_ms = de->retry_in_ms > 1000 ? de->retry_in_ms : 1000;
        return;
    }
    job_fail(o, "duo_unavailable", "%s not sent: %s", what, de->message);
    if (!o->error_fields)
        o->error_fields = json_object();
    json_object_set_new(o->error_fields, "reason",
                        json_string(busy ? "stage_busy" : "circuit_open"));
    json_object_set_new(o->error_fields, "retry_after_secs", json_integer(secs));
}

void stage_fail_duo(job_outcome *o, int rc, const duo_error *de, const char *what, unsigned flags)
{
    if (de->fail == DUO_FAIL_CIRCUIT_OPEN || de->fail == DUO_FAIL_STAGE_BUSY)
        fail_refused(o, de, what, flags);
    else if (user_gone(de))
        job_fail(o, "duo_user_not_found",
                 "Duo has no such user (%s): the device refers to a Duo user that was removed",
                 de->detail);
    else if (de->cls == DUO_CLASS_TRANSIENT)
        fail_transient(o, de, what, flags);
    else if (de->cls == DUO_CLASS_LICENSE)
        fail_forbidden(o, de, what, flags);
    else {
        job_fail(o, duo_error_code(de), "Duo %s failed: %s%s%s (rc %d)", what, de->message,
                 de->detail[0] ? ": " : "", de->detail, rc);
        o->dead_letter = de->cls == DUO_CLASS_AUTH_CONFIG || de->cls == DUO_CLASS_TLS;
    }
    stage_duo_code(o, de->code);
}

void stage_observe(const worker_env *env, const char *call, long long ms, int rc,
                   const duo_error *de)
{
    char l[100];
    snprintf(l, sizeof l, "call=\"%s\"", call);
    worker_metric_observe(env, "duo_api_seconds", l, (double)ms / 1000.0);
    if (rc < 0 && de) {
        snprintf(l, sizeof l, "code=\"%s\"", duo_error_code(de));
        worker_metric_add(env, "duo_api_errors_total", l, 1);
    }
}

/* ---- the worker's engine: breakers and bulkheads --------------------------------------- */

int stages_max_calls(const worker_env *env, const stage_rec *st)
{
    if (st && st->max_calls > 0)
        return st->max_calls;
    if (env->cfg->stage_max_calls > 0)
        return env->cfg->stage_max_calls;
    return env->cfg->prefetch / 2 > 0 ? env->cfg->prefetch / 2 : 1;
}

/* The engine's breaker callback: metrics and a log line now, the row later. */
static void on_breaker(void *arg, const char *host, duo_breaker_state to, long long open_ms)
{
    stages *s = arg;
    char l[400], ms[24];
    snprintf(ms, sizeof ms, "%lld", open_ms);
    LOG(to == DUO_BREAKER_CLOSED ? LOG_INFO : LOG_WARN, "Duo host circuit breaker changed", "host",
        host, "state", duo_breaker_state_name(to), "open_ms", ms);
    if (s->env) {
        snprintf(l, sizeof l, "host=\"%.200s\"", host);
        worker_metric_set(s->env, "duo_breaker_state", l, (double)to);
        snprintf(l, sizeof l, "host=\"%.200s\",to=\"%s\"", host, duo_breaker_state_name(to));
        worker_metric_add(s->env, "duo_breaker_transitions_total", l, 1);
    }
    breaker_note *n = calloc(1, sizeof *n);
    if (!n || !(n->host = strdup(host))) {
        free(n);
        return; /* only the operator's view misses it */
    }
    n->to = to;
    n->open_ms = open_ms;
    if (s->tail)
        s->tail->next = n;
    else
        s->notes = n;
    s->tail = n;
}

void stages_engine_opts(stages *s, const worker_env *env, duo_async_opts *ao)
{
    const config *cfg = env->cfg;
    ao->breaker = (duo_breaker_opts){.failures = cfg->breaker_failures,
                                     .open_ms = cfg->breaker_open_ms,
                                     .max_open_ms = cfg->breaker_max_open_ms};
    ao->on_breaker = on_breaker;
    ao->breaker_arg = s;
    worker_metric_describe(env, "duo_breaker_state", "gauge",
                           "Circuit breaker of a Duo host in this worker: 0 closed, 1 open, "
                           "2 half-open");
    worker_metric_describe(env, "duo_breaker_transitions_total", "counter",
                           "Circuit breaker changes of a Duo host, by the state entered");
}

int stages_engine_new(const worker_env *env, const duo_async_opts *ao, stages **s,
                      duo_async **engine, err_t *e)
{
    duo_async_opts o = *ao;
    *engine = NULL;
    if (!(*s = stages_new(env)))
        return err_set(e, ERR_NOMEM, "out of memory");
    stages_engine_opts(*s, env, &o);
    if (!(*engine = duo_async_new(&o, e))) {
        stages_free(*s);
        *s = NULL;
        return e && e->code ? e->code : err_set(e, ERR_NOMEM, "out of memory");
    }
    return 0;
}

void stages_engine_poll(stages *s, duo_async *engine, const worker_env *env, int mq_fd,
                        int timeout_ms)
{
    if (duo_async_poll(engine, mq_fd, timeout_ms, NULL) < 0)
        LOG(LOG_WARN, "curl multi interface failed; retrying next turn");
    stages_after_poll(s, env);
}

void stages_after_poll(stages *s, const worker_env *env)
{
    if (store_in_tx(env->db))
        return; /* the next poll writes them */
    while (s->notes) {
        breaker_note *n = s->notes;
        err_t e = {0};
        const char *state = n->to == DUO_BREAKER_CLOSED ? NULL : duo_breaker_state_name(n->to);
        if (store_breaker_note(env->db, n->host, s->worker_id, state, n->open_ms, &e) < 0)
            LOG(LOG_WARN, "could not note a breaker change", "host", n->host, "error", e.msg);
        s->notes = n->next;
        if (!s->notes)
            s->tail = NULL;
        free(n->host);
        free(n);
        if (!s->notes) { /* an idle worker has no next round trip: send them now */
            err_t fe = {0};
            if (store_flush(env->db, &fe) < 0)
                LOG(LOG_WARN, "could not note a breaker change", "error", fe.msg);
        }
    }
}
