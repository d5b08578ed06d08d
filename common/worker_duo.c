/* worker_duo.c - what every handler needs from a stage: its row with secrets decrypted,
 * a Duo client for its credentials (cached, so keep-alive connections are reused across
 * jobs), and one mapping from Duo failures to job outcomes. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "worker_int.h"

#define CACHE_SLOTS 16

typedef struct {
    uint64_t key; /* identity of (stage, which API, credentials, CA) */
    duo_client *client;
    char ca_path[256]; /* temp file holding the stage's CA bundle, "" when none */
    long long used;
} cached_client;

struct duo_cache {
    cached_client slot[CACHE_SLOTS];
    long long clock;
};

static uint64_t fnv(uint64_t h, const char *s)
{
    for (const unsigned char *p = (const unsigned char *)(s ? s : ""); *p; p++)
        h = (h ^ *p) * 1099511628211ULL;
    return (h ^ 0xff) * 1099511628211ULL;
}

int worker_stage(const worker_env *env, const char *stage_uuid, stage_rec *out, job_outcome *o)
{
    err_t e = {0};
    memset(out, 0, sizeof *out);
    int rc = store_stage_load(env->db, env->keys, stage_uuid, out, &e);
    if (rc == 0)
        return 0;
    if (rc == ERR_NOTFOUND || rc == ERR_INVAL)
        job_fail(o, "stage_not_found",
                 "no Duo stage with uuid '%.80s': stage_uuid must be the "
                 "uuid of a Duo Authenticator Setup stage",
                 stage_uuid);
    else if (rc == ERR_CRYPTO) {
        job_fail(o, "stage_secret_unreadable", "the stage's secrets cannot be decrypted: %s",
                 e.msg);
        o->dead_letter = 1;
    } else
        job_retry(o, "loading stage: %s", e.msg);
    return -1;
}

static int write_ca(const char *pem, char *path, size_t n)
{
    const char *tmp = getenv("TMPDIR");
    snprintf(path, n, "%s/duo-ca-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    int fd = mkstemp(path);
    if (fd < 0)
        return -1;
    size_t len = strlen(pem);
    int ok = write(fd, pem, len) == (ssize_t)len;
    close(fd);
    if (!ok)
        unlink(path);
    return ok ? 0 : -1;
}

static void evict(cached_client *c)
{
    duo_client_free(c->client);
    if (c->ca_path[0])
        unlink(c->ca_path);
    memset(c, 0, sizeof *c);
}

static duo_client *make_client(const worker_env *env, const stage_rec *st, int admin,
                               cached_client *slot, job_outcome *o)
{
    duo_client_opts opts;
    duo_client_opts_default(&opts);
    opts.host = st->api_hostname;
    opts.ikey = admin ? st->admin_integration_key : st->client_id;
    opts.skey = admin ? st->admin_secret_key : st->client_secret;
    opts.sig_version = st->sig_version ? st->sig_version : env->cfg->duo_sig_version;
    opts.ca_file = env->cfg->duo_ca_file;
    opts.connect_timeout_ms = env->cfg->duo_connect_timeout_ms;
    opts.timeout_ms = env->cfg->duo_timeout_ms;
    opts.retry_attempts = env->cfg->duo_retry_attempts;
    opts.retry_budget_ms = env->cfg->duo_retry_budget_ms;
    opts.idle = worker_idle;
    opts.idle_arg = env->w;
    if (st->ca_bundle && *st->ca_bundle) {
        if (write_ca(st->ca_bundle, slot->ca_path, sizeof slot->ca_path) < 0) {
            job_retry(o, "cannot write the stage's CA bundle to a temporary file");
            return NULL;
        }
        opts.ca_file = slot->ca_path;
    }
    err_t e = {0};
    slot->client = duo_client_new(&opts, &e);
    if (!slot->client) {
        job_fail(o, "stage_misconfigured", "cannot make a Duo client for the stage: %s", e.msg);
        evict(slot);
    }
    return slot->client;
}

duo_client *worker_duo(const worker_env *env, const stage_rec *st, int admin, job_outcome *o)
{
    if (admin && (!st->admin_integration_key || !st->admin_secret_key)) {
        job_fail(o, "admin_api_not_configured",
                 "stage '%s' has no Admin API credentials "
                 "(admin integration key and admin secret key)",
                 st->name);
        return NULL;
    }
    uint64_t key = fnv(fnv(fnv(fnv(fnv(fnv(14695981039346656037ULL, st->uuid), admin ? "a" : "u"),
                                   st->api_hostname),
                               admin ? st->admin_integration_key : st->client_id),
                           admin ? st->admin_secret_key : st->client_secret),
                       st->ca_bundle);
    key = fnv(key, st->sig_version == 2 ? "2" : "5");
    worker *w = env->w;
    if (!w->duo_cache && !(w->duo_cache = calloc(1, sizeof *w->duo_cache))) {
        job_retry(o, "out of memory");
        return NULL;
    }
    cached_client *cache = w->duo_cache->slot, *lru = &cache[0];
    for (int i = 0; i < CACHE_SLOTS; i++) {
        if (cache[i].client && cache[i].key == key) {
            cache[i].used = ++w->duo_cache->clock;
            return cache[i].client;
        }
        if (cache[i].used < lru->used)
            lru = &cache[i];
    }
    evict(lru);
    lru->key = key;
    lru->used = ++w->duo_cache->clock;
    return make_client(env, st, admin, lru, o);
}

void job_fail_duo(job_outcome *o, int rc, const duo_error *de, const char *what)
{
    const char *code = duo_error_code(de);
    o->duo_code = de->code;
    switch (de->cls) {
    case DUO_CLASS_TRANSIENT:
        job_retry(o, "Duo %s: %s (%s)", what, de->message, code);
        return;
    case DUO_CLASS_LICENSE:
        /* The same Duo answer gets the same code whatever the job: 40301 from the Auth
         * API means the stage's integration is disabled (or of the wrong type). */
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
        return;
    case DUO_CLASS_AUTH_CONFIG:
    case DUO_CLASS_TLS:
        job_fail(o, code, "Duo %s failed: %s%s%s", what, de->message, de->detail[0] ? ": " : "",
                 de->detail);
        o->dead_letter = 1;
        return;
    default:
        job_fail(o, code, "Duo %s failed: %s%s%s (rc %d)", what, de->message,
                 de->detail[0] ? ": " : "", de->detail, rc);
    }
}

void job_fail_duo_admin(job_outcome *o, int rc, const duo_error *de, const char *what)
{
    if (de->cls != DUO_CLASS_LICENSE) {
        job_fail_duo(o, rc, de, what);
        return;
    }
    job_fail(o, "license_required",
             "Duo refused the Admin API for %s (403 %d %s): automatic import needs a Duo MFA "
             "(Essentials) or higher plan and an Admin API integration with the "
             "\"Grant read resource\" permission",
             what, de->code, de->message);
    o->duo_code = de->code;
}

void worker_duo_observe(const worker_env *env, const char *call, long long ms, int rc,
                        const duo_error *de)
{
    char l[100];
    snprintf(l, sizeof l, "call=\"%s\"", call);
    metrics_observe(env->w->metrics, "duo_api_seconds", l, (double)ms / 1000.0);
    if (rc < 0 && de) {
        snprintf(l, sizeof l, "code=\"%s\"", duo_error_code(de));
        metrics_add(env->w->metrics, "duo_api_errors_total", l, 1);
    }
}

void worker_duo_cache_free(worker *w)
{
    if (!w->duo_cache)
        return;
    for (int i = 0; i < CACHE_SLOTS; i++)
        evict(&w->duo_cache->slot[i]);
    free(w->duo_cache);
    w->duo_cache = NULL;
}
