/* duo_http.c - the blocking Duo client: one curl easy handle driven through a private
 * multi handle (so the idle hook runs every <= 200 ms), with retries and backoff.
 *
 * Invariants: peer and host verification are always on; each attempt is built and
 * signed afresh; only 429, 5xx and connection failures are retried, within both the
 * attempt count and the time budget; the only library that sees curl is this file. */
#include "duo.h"
#include "duo_transfer.h"

#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define IDLE_SLICE_MS 200

struct duo_client {
    duo_client_opts o; /* strings point at the copies below */
    char *host, *ikey, *skey, *ca_file;
    CURLM *multi;
    CURL *easy;
    unsigned rng;    /* jitter state, per client */
    int curl_inited; /* curl_global_init succeeded: cleanup owed */
    char errbuf[CURL_ERROR_SIZE];
};

/* What one attempt brought back. */
typedef duo_body reply;

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

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int set_static_opts(duo_client *c)
{
    CURL *h = c->easy;
    int bad = 0;
    bad |= curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 1L) != CURLE_OK;
    bad |= curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 2L) != CURLE_OK;
    if (c->ca_file)
        bad |= curl_easy_setopt(h, CURLOPT_CAINFO, c->ca_file) != CURLE_OK;
    bad |= curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "https") != CURLE_OK;
    bad |= curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L) != CURLE_OK;
    bad |= curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, c->o.connect_timeout_ms) != CURLE_OK;
    bad |= curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, c->o.timeout_ms) != CURLE_OK;
    bad |= curl_easy_setopt(h, CURLOPT_TCP_KEEPALIVE, 1L) != CURLE_OK;
    bad |= curl_easy_setopt(h, CURLOPT_USERAGENT, "duo-workers/1.0") != CURLE_OK;
    bad |= curl_easy_setopt(h, CURLOPT_ERRORBUFFER, c->errbuf) != CURLE_OK;
    bad |= curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, duo_body_on_data) != CURLE_OK;
    bad |= curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, duo_body_on_header) != CURLE_OK;
    return bad ? ERR_INVAL : 0;
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
    c->rng = (unsigned)now_ms() ^ (unsigned)(size_t)c;
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        err_set(e, ERR_NET, "libcurl initialisation failed");
        goto fail;
    }
    c->curl_inited = 1;
    if (!(c->multi = curl_multi_init()) || !(c->easy = curl_easy_init()) ||
        set_static_opts(c) < 0) {
        err_set(e, ERR_NET, "libcurl handle setup failed");
        goto fail;
    }
    return c;
fail:
    duo_client_free(c);
    return NULL;
}

void duo_client_free(duo_client *c)
{
    if (!c)
        return;
    if (c->easy)
        curl_easy_cleanup(c->easy);
    if (c->multi)
        curl_multi_cleanup(c->multi);
    if (c->curl_inited)
        curl_global_cleanup();
    if (c->skey)
        memset(c->skey, 0, strlen(c->skey));
    free(c->host);
    free(c->ikey);
    free(c->skey);
    free(c->ca_file);
    free(c);
}

/* Runs the idle hook; non-zero means the caller wants the call cancelled. */
static int idle_says_stop(duo_client *c)
{
    return c->o.idle && c->o.idle(c->o.idle_arg) != 0;
}

/* Drives the easy handle through the multi handle until done, calling the idle hook
 * between polls of at most IDLE_SLICE_MS. */
static int run_transfer(duo_client *c, CURLcode *result, duo_error *err)
{
    if (curl_multi_add_handle(c->multi, c->easy) != CURLM_OK)
        return duo_fail_set(err, ERR_NET, DUO_FAIL_LOCAL, DUO_CLASS_TRANSIENT,
                            "libcurl refused the transfer");
    int running = 1, rc = 0;
    *result = CURLE_OK;
    while (running) {
        if (curl_multi_perform(c->multi, &running) != CURLM_OK) {
            *result = CURLE_FAILED_INIT;
            break;
        }
        if (running && curl_multi_poll(c->multi, NULL, 0, IDLE_SLICE_MS, NULL) != CURLM_OK) {
            *result = CURLE_FAILED_INIT;
            break;
        }
        if (running && idle_says_stop(c)) {
            rc = duo_fail_set(err, ERR_TIMEOUT, DUO_FAIL_CANCELLED, DUO_CLASS_TRANSIENT,
                              "Duo call cancelled while waiting for %s", c->host);
            break;
        }
    }
    int left;
    CURLMsg *m;
    while ((m = curl_multi_info_read(c->multi, &left)))
        if (m->msg == CURLMSG_DONE)
            *result = m->data.result;
    curl_multi_remove_handle(c->multi, c->easy);
    return rc;
}

static int set_request_opts(duo_client *c, const duo_request *req, struct curl_slist *hdrs,
                            reply *r)
{
    CURL *h = c->easy;
    int bad = 0;
    bad |= curl_easy_setopt(h, CURLOPT_URL, req->url) != CURLE_OK;
    bad |= curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs) != CURLE_OK;
    bad |= curl_easy_setopt(h, CURLOPT_WRITEDATA, r) != CURLE_OK;
    bad |= curl_easy_setopt(h, CURLOPT_HEADERDATA, r) != CURLE_OK;
    if (strcmp(req->method, "GET") == 0) {
        bad |= curl_easy_setopt(h, CURLOPT_HTTPGET, 1L) != CURLE_OK;
        bad |= curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, (char *)NULL) != CURLE_OK;
    } else {
        const char *b = req->body ? req->body : "";
        bad |=
            curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->body_len) != CURLE_OK;
        bad |= curl_easy_setopt(h, CURLOPT_POSTFIELDS, b) != CURLE_OK;
        bad |= curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST,
                                strcmp(req->method, "POST") == 0 ? NULL : req->method) != CURLE_OK;
    }
    return bad ? ERR_INVAL : 0;
}

/* One HTTP exchange. 0: *status and r hold the answer; negative: transfer failed. */
static int attempt(duo_client *c, const duo_request *req, long *status, reply *r, duo_error *err)
{
    struct curl_slist *hdrs = NULL, *tmp;
    for (size_t i = 0; i < req->nheaders; i++) {
        if (!(tmp = curl_slist_append(hdrs, req->headers[i])))
            break;
        hdrs = tmp;
    }
    if ((tmp = curl_slist_append(hdrs, "Expect:")))
        hdrs = tmp;
    c->errbuf[0] = '\0';
    int rc = set_request_opts(c, req, hdrs, r);
    CURLcode cc = CURLE_OK;
    if (rc < 0)
        rc = duo_fail_set(err, ERR_INVAL, DUO_FAIL_LOCAL, DUO_CLASS_PERMANENT,
                          "libcurl rejected the request options");
    else
        rc = run_transfer(c, &cc, err);
    if (rc == 0 && cc != CURLE_OK) {
        rc = duo_transfer_error(cc, r, c->errbuf, c->host, c->ca_file, err);
        duo_transfer_note_sent(c->easy, err);
    }
    if (rc == 0)
        curl_easy_getinfo(c->easy, CURLINFO_RESPONSE_CODE, status);
    curl_easy_setopt(c->easy, CURLOPT_HTTPHEADER, (struct curl_slist *)NULL);
    curl_slist_free_all(hdrs);
    return rc;
}

/* Sleeps ms in slices, calling the idle hook; returns non-zero when cancelled. */
static int sleep_sliced(duo_client *c, long long ms)
{
    long long until = now_ms() + ms;
    for (long long left = ms; left > 0; left = until - now_ms()) {
        long long slice = left < IDLE_SLICE_MS ? left : IDLE_SLICE_MS;
        struct timespec ts = {(time_t)(slice / 1000), (long)(slice % 1000) * 1000000L};
        nanosleep(&ts, NULL);
        if (idle_says_stop(c))
            return 1;
    }
    return 0;
}

/* Builds, signs and performs attempt n; parses the answer. */
static int one_attempt(duo_client *c, const char *method, const char *path, const duo_param *params,
                       size_t nparams, reply *r, json_t **response, json_t **metadata, duo_error *e)
{
    duo_request *req = NULL;
    err_t be = {0};
    int rc = duo_request_build(&c->o, method, path, params, nparams, time(NULL), &req, &be);
    if (rc < 0)
        return duo_fail_set(e, rc, DUO_FAIL_LOCAL, DUO_CLASS_PERMANENT, "%s", be.msg);
    long status = 0;
    /* A call that reaches a person never rides a reused connection (see duo.h). */
    curl_easy_setopt(c->easy, CURLOPT_FRESH_CONNECT,
                     (long)duo_call_reaches_user(method, path, params, nparams));
    rc = attempt(c, req, &status, r, e);
    duo_request_free(req);
    if (rc < 0)
        return rc;
    return duo_response_parse(status, r->body, r->len, response, metadata, e);
}

int duo_call(duo_client *c, const char *method, const char *path, const duo_param *params,
             size_t nparams, json_t **response, json_t **metadata, duo_error *err)
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
    long long start = now_ms();
    for (int n = 1;; n++) {
        reply r = {.max = c->o.max_response_bytes, .retry_after_ms = -1};
        duo_error attempt_err;
        memset(&attempt_err, 0, sizeof attempt_err);
        int rc =
            one_attempt(c, method, path, params, nparams, &r, response, metadata, &attempt_err);
        free(r.body);
        *e = attempt_err;
        e->attempts = n;
        if (rc == 0 || !duo_transfer_retryable(rc, e, duo_call_acts(method, path)) ||
            n >= c->o.retry_attempts)
            return rc;
        long long wait =
            duo_transfer_backoff_ms(c->o.backoff_base_ms, n, r.retry_after_ms, &c->rng);
        if (now_ms() - start + wait > c->o.retry_budget_ms)
            return rc;
        if (sleep_sliced(c, wait))
            return duo_fail_set(e, ERR_TIMEOUT, DUO_FAIL_CANCELLED, DUO_CLASS_TRANSIENT,
                                "Duo call cancelled during backoff");
    }
}
