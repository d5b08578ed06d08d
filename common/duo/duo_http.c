/* duo_http.c - the blocking Duo client: a thin loop over a private asynchronous engine
 * (duo_async), the way curl's easy interface drives its multi interface. A call submits
 * one request, then polls the engine until its callback fires, running the idle hook
 * between polls of at most IDLE_SLICE_MS.
 *
 * Invariants: retries, backoff, TLS and the answer's parsing are the engine's (one
 * implementation); the retry budget is the request's start-by limit; the engine lives
 * as long as the client, so keep-alive connections are reused across its calls. */
#include "duo.h"
#include "clock.h"
#include "duo_async.h"

#include <stdlib.h>
#include <string.h>

#define IDLE_SLICE_MS 200
/* curl's own default receive buffer: admin pages are a few hundred KiB. */
#define CLIENT_BUFFER_SIZE 16384

struct duo_client {
    duo_client_opts o; /* strings point at the copies below */
    char *host, *ikey, *skey, *ca_file;
    duo_async *engine; /* private: one request at a time */
};

/* What the engine's callback left for the waiting call. */
typedef struct call_state {
    int done, rc;
    json_t *response, *metadata;
    duo_error err;
} call_state;

void duo_client_opts_default(duo_client_opts *o)
{
    memset(o, 0, sizeof *o);
    o->sig_version = 5;
    o->digest = DUO_DIGEST_SHA512;
    o->connect_timeout_ms = 5000;
    o->timeout_ms = 75000;
    o->retry_attempts = 7;
    o->retry_budget_ms = 90000;
    o->backoff_base_ms = 1000;
    o->max_response_bytes = DUO_MAX_RESPONSE_BYTES;
}

static int copy_str(const char *s, char **out)
{
    *out = NULL;
    if (!s || !*s)
        return 0;
    return (*out = strdup(s)) ? 0 : ERR_NOMEM;
}

static int check_opts(const duo_client_opts *o, err_t *e)
{
    if (!o || !o->host || !*o->host || !o->ikey || !*o->ikey || !o->skey || !*o->skey)
        return err_set(e, ERR_INVAL, "Duo host, integration key and secret key are required");
    if (o->sig_version != 2 && o->sig_version != 5)
        return err_set(e, ERR_INVAL, "Duo signature version must be 2 or 5");
    if (o->retry_attempts < 1 || o->timeout_ms <= 0 || o->connect_timeout_ms <= 0 ||
        o->backoff_base_ms < 0 || o->retry_budget_ms < 0)
        return err_set(e, ERR_INVAL, "Duo client timeouts, attempts and budget must be positive");
    return 0;
}

duo_client *duo_client_new(const duo_client_opts *o, err_t *e)
{
    if (check_opts(o, e) < 0)
        return NULL;
    duo_client *c = calloc(1, sizeof *c);
    if (!c) {
        err_set(e, ERR_NOMEM, "out of memory creating the Duo client");
        return NULL;
    }
    c->o = *o;
    const char *ca = (o->ca_file && *o->ca_file) ? o->ca_file : getenv("DUO_CA_FILE");
    if (copy_str(o->host, &c->host) < 0 || copy_str(o->ikey, &c->ikey) < 0 ||
        copy_str(o->skey, &c->skey) < 0 || copy_str(ca, &c->ca_file) < 0) {
        err_set(e, ERR_NOMEM, "out of memory creating the Duo client");
        goto fail;
    }
    c->o.host = c->host, c->o.ikey = c->ikey, c->o.skey = c->skey, c->o.ca_file = c->ca_file;
    if (!c->o.max_response_bytes || c->o.max_response_bytes > DUO_MAX_RESPONSE_BYTES)
        c->o.max_response_bytes = DUO_MAX_RESPONSE_BYTES;
    duo_async_opts ao = {.max_host_connections = 0, .buffer_size = CLIENT_BUFFER_SIZE};
    if (!(c->engine = duo_async_new(&ao, e)))
        goto fail;
    return c;
fail:
    duo_client_free(c);
    return NULL;
}

void duo_client_free(duo_client *c)
{
    if (!c)
        return;
    duo_async_free(c->engine);
    if (c->skey)
        memset(c->skey, 0, strlen(c->skey));
    free(c->host);
    free(c->ikey);
    free(c->skey);
    free(c->ca_file);
    free(c);
}

static void on_done(void *arg, int rc, json_t *response, json_t *metadata, const duo_error *err)
{
    call_state *s = arg;
    s->done = 1;
    s->rc = rc;
    s->err = *err;
    s->response = json_incref(response);
    s->metadata = json_incref(metadata);
}

/* The idle hook asked to stop: drop the request, saying where it was. */
static int cancel(duo_client *c, duo_areq *r, duo_error *e)
{
    int on_wire = duo_async_running(c->engine) > 0;
    duo_async_last_error(r, e);
    if (on_wire) { /* nothing of an earlier attempt applies to this one */
        int n = e->attempts;
        memset(e, 0, sizeof *e);
        e->attempts = n;
    }
    duo_async_cancel(c->engine, r);
    if (on_wire)
        return duo_fail_set(e, ERR_TIMEOUT, DUO_FAIL_CANCELLED, DUO_CLASS_TRANSIENT,
                            "Duo call cancelled while waiting for %s", c->host);
    return duo_fail_set(e, ERR_TIMEOUT, DUO_FAIL_CANCELLED, DUO_CLASS_TRANSIENT,
                        "Duo call cancelled during backoff");
}

/* Polls the engine until r's callback ran, calling the idle hook between polls. */
static int wait_for(duo_client *c, duo_areq *r, call_state *s, duo_error *e)
{
    while (!s->done) {
        int rc = duo_async_poll(c->engine, -1, IDLE_SLICE_MS, NULL);
        if (s->done)
            break;
        if (rc < 0) {
            duo_async_last_error(r, e);
            duo_async_cancel(c->engine, r);
            return duo_fail_set(e, ERR_NET, DUO_FAIL_NETWORK, DUO_CLASS_TRANSIENT,
                                "network failure talking to Duo at %s", c->host);
        }
        if (c->o.idle && c->o.idle(c->o.idle_arg) != 0)
            return cancel(c, r, e);
    }
    *e = s->err;
    return s->rc;
}

int duo_call(duo_client *c, const char *method, const char *path, const duo_param *params,
             size_t nparams, json_t **response, json_t **metadata, duo_error *err)
{
    return duo_call_parsed(c, method, path, params, nparams, NULL, response, metadata, err);
}

int duo_call_parsed(duo_client *c, const char *method, const char *path, const duo_param *params,
                    size_t nparams, duo_parse_fn parse, json_t **response, json_t **metadata,
                    duo_error *err)
{
    duo_error local;
    duo_error *e = err ? err : &local;
    memset(e, 0, sizeof *e);
    if (response)
        *response = NULL;
    if (metadata)
        *metadata = NULL;
    if (!c)
        return duo_fail_set(e, ERR_INVAL, DUO_FAIL_LOCAL, DUO_CLASS_PERMANENT, "no Duo client");
    call_state s = {0};
    duo_areq *r = NULL;
    err_t se = {0};
    long long start = clock_ms();
    int rc =
        duo_async_submit(c->engine, &c->o, method, path, params, nparams, 0, on_done, &s, &r, &se);
    if (rc < 0)
        return duo_fail_set(e, rc, DUO_FAIL_LOCAL,
                            rc == ERR_NOMEM ? DUO_CLASS_TRANSIENT : DUO_CLASS_PERMANENT, "%s",
                            se.msg);
    duo_async_start_by(r, start + c->o.retry_budget_ms);
    duo_async_set_parser(r, parse);
    rc = wait_for(c, r, &s, e);
    if (rc == 0 && response)
        *response = json_incref(s.response);
    if (rc == 0 && metadata)
        *metadata = json_incref(s.metadata);
    json_decref(s.response);
    json_decref(s.metadata);
    return rc;
}
