/* duo_async.c - the asynchronous Duo engine (see duo_async.h): one curl multi handle
 * driven by curl's socket interface on an epoll set (so a turn costs O(sockets ready),
 * not O(requests): thousands of held pushes stay cheap), one easy handle per request on
 * the wire, a list of requests waiting out a backoff.
 *
 * Invariant: a request is in exactly one place at a time - on the multi handle
 * (running) or on the waiting list - until it completes or is cancelled, and its
 * callback runs at most once, after it left both. The blocking client (duo_http.c) runs
 * on this engine too, so retries follow one policy (duo_retry.h) for both faces. Only
 * this file and duo_transfer.c include curl. */
#include "duo_async.h"
#include "clock.h"
#include "duo_retry.h"
#include "duo_transfer.h"

#include <curl/curl.h>
#include <errno.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

#define POOL_MAX 64
/* A call refused while the engine's probe is out may ask again after this long. */
#define PROBE_WAIT_MS 1000
#define EVENTS_PER_TURN 256

typedef duo_body reply;

/* A bulkhead: the calls of one group (a stage) holding a slot, and those waiting for
 * one in arrival order. Groups live as long as the engine. */
typedef struct group {
    char *name;
    int limit; /* the newest request's group_limit */
    int inflight, nqueued;
    duo_areq *qhead, *qtail;
    struct group *next;
} group;

struct duo_areq {
    duo_async *a;
    CURL *easy;        /* while running; NULL while waiting */
    duo_client_opts o; /* strings point at the copies below */
    char *host, *ikey, *skey, *ca_file, *method, *path;
    duo_param *params; /* keys and values heap copies */
    size_t nparams;
    long long deadline_ms;
    long long start_by_ms;  /* no attempt starts after this (0: no such limit) */
    long long wake_ms;      /* waiting: when the next attempt starts */
    int attempt;            /* attempts made so far */
    int waiting;            /* on the waiting list */
    int long_poll;          /* duo_call_long_poll: the long timeout, never the probe */
    group *g;               /* its bulkhead, or NULL */
    int holds;              /* holds a slot of g */
    int queued;             /* waits in g's queue for a slot (not on the waiting list) */
    long long queued_until; /* queued: when it gives up (DUO_FAIL_STAGE_BUSY) */
    duo_areq *qnext;
    duo_breaker_ticket ticket; /* the attempt on the wire, admitted by the breaker */
    int probe_req;             /* the engine's own half-open probe (ticket preset) */
    duo_request *req;          /* current attempt (curl borrows its body) */
    struct curl_slist *hdrs;
    reply r;
    duo_error last; /* the failed attempt a retry is waiting to follow */
    duo_async_cb cb;
    void *arg;
    duo_parse_fn parse;      /* chosen by the caller; NULL: duo_response_parse */
    duo_areq *prev, *next;   /* all requests of the engine */
    duo_areq *wprev, *wnext; /* the waiting list */
    char errbuf[CURL_ERROR_SIZE];
};

struct duo_async {
    CURLM *multi;
    CURLSH *share; /* TLS sessions and DNS shared by all transfers */
    duo_async_opts o;
    duo_areq *all;
    duo_areq *waiting; /* requests not on the wire: new, or backing off */
    size_t nactive, nrunning;
    int epfd;           /* curl's sockets */
    long long timer_ms; /* curl's timer: when to call it back, -1 none */
    unsigned long long attempts;
    CURL *pool[POOL_MAX]; /* reset easy handles ready for reuse */
    size_t npool;
    unsigned rng;
    int curl_inited;
    duo_breakers *breakers; /* NULL: no circuit breaking */
    group *groups;
};

/* curl says which events a socket needs (or that it is done with it). */
static int on_socket(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
    (void)easy;
    (void)socketp;
    duo_async *a = userp;
    if (what == CURL_POLL_REMOVE) {
        epoll_ctl(a->epfd, EPOLL_CTL_DEL, fd, NULL);
        return 0;
    }
    struct epoll_event ev = {.data.fd = fd};
    ev.events = ((what & CURL_POLL_IN) ? EPOLLIN : 0u) | ((what & CURL_POLL_OUT) ? EPOLLOUT : 0u);
    if (epoll_ctl(a->epfd, EPOLL_CTL_MOD, fd, &ev) < 0 && errno == ENOENT)
        epoll_ctl(a->epfd, EPOLL_CTL_ADD, fd, &ev);
    return 0;
}

/* curl's single timer: -1 cancels it, 0 means "call me as soon as you can". */
static int on_timer(CURLM *multi, long timeout_ms, void *userp)
{
    (void)multi;
    duo_async *a = userp;
    a->timer_ms = timeout_ms < 0 ? -1 : clock_ms() + timeout_ms;
    return 0;
}

duo_async *duo_async_new(const duo_async_opts *o, err_t *e)
{
    duo_async *a = calloc(1, sizeof *a);
    if (!a) {
        err_set(e, ERR_NOMEM, "out of memory creating the Duo engine");
        return NULL;
    }
    if (o)
        a->o = *o;
    if (a->o.buffer_size <= 0)
        a->o.buffer_size = 1024;
    a->rng = (unsigned)clock_ms() ^ (unsigned)(size_t)a;
    a->timer_ms = -1;
    a->epfd = -1;
    if ((a->epfd = epoll_create1(EPOLL_CLOEXEC)) < 0) {
        err_set(e, ERR_IO, "epoll_create1 failed");
        goto fail;
    }
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        err_set(e, ERR_NET, "libcurl initialisation failed");
        goto fail;
    }
    a->curl_inited = 1;
    if (!(a->multi = curl_multi_init()) || !(a->share = curl_share_init())) {
        err_set(e, ERR_NET, "libcurl multi handle setup failed");
        goto fail;
    }
    curl_share_setopt(a->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION);
    curl_share_setopt(a->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS);
    curl_multi_setopt(a->multi, CURLMOPT_SOCKETFUNCTION, on_socket);
    curl_multi_setopt(a->multi, CURLMOPT_SOCKETDATA, a);
    curl_multi_setopt(a->multi, CURLMOPT_TIMERFUNCTION, on_timer);
    curl_multi_setopt(a->multi, CURLMOPT_TIMERDATA, a);
    if (a->o.max_host_connections > 0)
        curl_multi_setopt(a->multi, CURLMOPT_MAX_HOST_CONNECTIONS, a->o.max_host_connections);
    if (a->o.max_idle_connections > 0)
        curl_multi_setopt(a->multi, CURLMOPT_MAXCONNECTS, a->o.max_idle_connections);
    if (a->o.breaker.failures > 0 &&
        !(a->breakers = duo_breakers_new(&a->o.breaker, a->o.on_breaker, a->o.breaker_arg))) {
        err_set(e, ERR_NOMEM, "out of memory creating the Duo engine");
        goto fail;
    }
    return a;
fail:
    duo_async_free(a);
    return NULL;
}

/* ---- request lifetime ------------------------------------------------------------ */

static void wipe_free(char *s)
{
    if (s)
        memset(s, 0, strlen(s));
    free(s);
}

static void wait_add(duo_areq *r, long long wake_ms)
{
    duo_async *a = r->a;
    r->wake_ms = wake_ms;
    if (r->waiting)
        return;
    r->waiting = 1;
    r->wprev = NULL;
    r->wnext = a->waiting;
    if (a->waiting)
        a->waiting->wprev = r;
    a->waiting = r;
}

static void wait_del(duo_areq *r)
{
    duo_async *a = r->a;
    if (!r->waiting)
        return;
    if (r->wprev)
        r->wprev->wnext = r->wnext;
    else
        a->waiting = r->wnext;
    if (r->wnext)
        r->wnext->wprev = r->wprev;
    r->waiting = 0;
    r->wprev = r->wnext = NULL;
}

/* Takes the easy handle off the multi handle and back to the pool. */
static void detach_easy(duo_areq *r)
{
    duo_async *a = r->a;
    if (!r->easy)
        return;
    curl_multi_remove_handle(a->multi, r->easy);
    a->nrunning--;
    if (a->npool < POOL_MAX) {
        curl_easy_reset(r->easy);
        a->pool[a->npool++] = r->easy;
    } else {
        curl_easy_cleanup(r->easy);
    }
    r->easy = NULL;
}

static void attempt_clear(duo_areq *r)
{
    curl_slist_free_all(r->hdrs);
    r->hdrs = NULL;
    duo_request_free(r->req);
    r->req = NULL;
    buf_free(&r->r.b);
    r->r = (reply){0};
}

/* ---- bulkheads ---------------------------------------------------------------------- */

static group *group_get(duo_async *a, const char *name)
{
    for (group *g = a->groups; g; g = g->next)
        if (strcmp(g->name, name) == 0)
            return g;
    group *g = calloc(1, sizeof *g);
    if (!g || !(g->name = strdup(name))) {
        free(g);
        return NULL; /* out of memory: the call goes without a bulkhead */
    }
    g->next = a->groups;
    a->groups = g;
    return g;
}

static void group_unqueue(duo_areq *r)
{
    group *g = r->g;
    duo_areq **pp = &g->qhead, *prev = NULL;
    while (*pp && *pp != r) {
        prev = *pp;
        pp = &(*pp)->qnext;
    }
    if (*pp) {
        *pp = r->qnext;
        if (g->qtail == r)
            g->qtail = prev;
        g->nqueued--;
    }
    r->queued = 0;
    r->qnext = NULL;
}

/* r gives its slot back: the oldest waiting call of the group takes it. */
static void group_release(duo_areq *r)
{
    group *g = r->g;
    r->holds = 0;
    g->inflight--;
    while (g->qhead && g->inflight < g->limit) {
        duo_areq *next = g->qhead;
        group_unqueue(next);
        next->holds = 1;
        g->inflight++;
        wait_add(next, 0); /* its start was due when it queued */
    }
}

/* Puts a new request under its group's limit (it takes a slot when its first attempt is
 * due: a request deferred to a later start, e.g. a paced import page, holds none). */
static void group_enter(duo_areq *r, const char *name)
{
    duo_async *a = r->a;
    group *g = name && *name && r->o.group_limit > 0 ? group_get(a, name) : NULL;
    r->o.group = g ? g->name : NULL;
    if (g) {
        r->g = g;
        /* Not more than libcurl runs at once on a host: a transfer over its connection
         * limit waits inside libcurl with its timeout running (the import's pages timed
         * out so, bench/README issue 24); here it waits in the group's queue, where its
         * attempt has not started. */
        int cap = a->o.max_host_connections;
        g->limit = cap > 0 && r->o.group_limit > cap ? cap : r->o.group_limit;
    }
}

/* A request whose first attempt is due takes a slot of its group: 0 when it has one, 1
 * when it now waits in the group's queue (off the waiting list), -1 when the queue is
 * full too (the caller refuses it). */
static int group_admit(duo_areq *r, long long now)
{
    group *g = r->g;
    if (!g || r->holds)
        return 0;
    if (g->inflight < g->limit) {
        g->inflight++;
        r->holds = 1;
        return 0;
    }
    if (g->nqueued >= r->o.group_queue_max)
        return -1;
    wait_del(r);
    r->queued = 1;
    r->queued_until = now + (r->o.group_queue_ms > 0 ? r->o.group_queue_ms : 0);
    if (g->qtail)
        g->qtail->qnext = r;
    else
        g->qhead = r;
    g->qtail = r;
    g->nqueued++;
    return 1;
}

void duo_async_group_load(const duo_async *a, const char *group_name, int *inflight, int *queued)
{
    *inflight = *queued = 0;
    for (const group *g = a ? a->groups : NULL; g && group_name; g = g->next)
        if (strcmp(g->name, group_name) == 0) {
            *inflight = g->inflight;
            *queued = g->nqueued;
        }
}

duo_breaker_state duo_async_breaker_state(duo_async *a, const char *host)
{
    return a ? duo_breakers_state(a->breakers, host, clock_ms()) : DUO_BREAKER_CLOSED;
}

void duo_async_breaker_each(duo_async *a,
                            void (*fn)(void *arg, const char *host, duo_breaker_state s), void *arg)
{
    if (a)
        duo_breakers_each(a->breakers, clock_ms(), fn, arg);
}

/* Unlinks r from the engine and frees it (no callback). */
static void areq_free(duo_areq *r)
{
    duo_async *a = r->a;
    if (r->ticket.admitted) /* cancelled on the wire: a probe's turn goes back */
        duo_breakers_record(a->breakers, r->host, &r->ticket, -1, clock_ms());
    if (r->queued)
        group_unqueue(r);
    if (r->holds)
        group_release(r);
    wait_del(r);
    detach_easy(r);
    attempt_clear(r);
    if (r->prev)
        r->prev->next = r->next;
    else
        a->all = r->next;
    if (r->next)
        r->next->prev = r->prev;
    a->nactive--;
    for (size_t i = 0; i < r->nparams; i++) {
        free((char *)r->params[i].key);
        wipe_free((char *)r->params[i].value);
    }
    free(r->params);
    free(r->host);
    free(r->ikey);
    wipe_free(r->skey);
    free(r->ca_file);
    free(r->method);
    free(r->path);
    free(r);
}

void duo_async_cancel(duo_async *a, duo_areq *r)
{
    (void)a;
    if (r)
        areq_free(r);
}

void duo_async_free(duo_async *a)
{
    if (!a)
        return;
    while (a->all)
        areq_free(a->all);
    while (a->groups) {
        group *g = a->groups;
        a->groups = g->next;
        free(g->name);
        free(g);
    }
    duo_breakers_free(a->breakers);
    for (size_t i = 0; i < a->npool; i++)
        curl_easy_cleanup(a->pool[i]);
    if (a->multi)
        curl_multi_cleanup(a->multi);
    if (a->share)
        curl_share_cleanup(a->share);
    if (a->curl_inited)
        curl_global_cleanup();
    if (a->epfd >= 0)
        close(a->epfd);
    free(a);
}

size_t duo_async_active(const duo_async *a)
{
    return a ? a->nactive : 0;
}

size_t duo_async_running(const duo_async *a)
{
    return a ? a->nrunning : 0;
}

unsigned long long duo_async_attempts(const duo_async *a)
{
    return a ? a->attempts : 0;
}

/* ---- completion ------------------------------------------------------------------- */

/* Frees r, then runs its callback with what it brought back. */
static void complete(duo_areq *r, int rc, json_t *resp, json_t *meta, const duo_error *err)
{
    duo_async_cb cb = r->cb;
    void *arg = r->arg;
    duo_error copy = *err;
    areq_free(r);
    cb(arg, rc, resp, meta, &copy);
    json_decref(resp);
    json_decref(meta);
}

static int fail_local(duo_areq *r, int rc, duo_error_class cls, const char *what)
{
    duo_error de;
    memset(&de, 0, sizeof de);
    de.attempts = r->attempt;
    duo_fail_set(&de, rc, DUO_FAIL_LOCAL, cls, "%s", what);
    complete(r, rc, NULL, NULL, &de);
    return rc;
}

/* Completes r unsent: its host's breaker is open, or its group stayed full. */
static int refuse(duo_areq *r, duo_fail why, long long retry_in_ms)
{
    duo_error de;
    memset(&de, 0, sizeof de);
    de.attempts = r->attempt;
    if (why == DUO_FAIL_CIRCUIT_OPEN)
        duo_fail_set(&de, ERR_NET, why, DUO_CLASS_TRANSIENT,
                     "Duo host %s is failing: its circuit breaker is open (probed again in "
                     "%lld s); nothing was sent",
                     r->host, (retry_in_ms + 999) / 1000);
    else
        duo_fail_set(&de, ERR_NET, why, DUO_CLASS_TRANSIENT,
                     "this stage already has %d Duo calls in flight on this worker; nothing "
                     "was sent",
                     r->g ? r->g->limit : 0);
    de.not_sent = 1;
    de.retry_in_ms = retry_in_ms;
    complete(r, ERR_NET, NULL, NULL, &de);
    return ERR_NET;
}

/* 1 when an answer's body is an HTML page (an edge or proxy error page), not Duo's JSON. */
static int html_page(const reply *rp)
{
    size_t i = 0;
    while (i < rp->b.len && (rp->b.data[i] == ' ' || rp->b.data[i] == '\n' ||
                             rp->b.data[i] == '\r' || rp->b.data[i] == '\t'))
        i++;
    return i < rp->b.len && rp->b.data[i] == '<';
}

/* What a finished attempt says about its host: 1 alive (an answer from Duo, even a 4xx
 * or 429 or a malformed JSON one), 0 failing (no connection, timeout, 5xx, an HTML error
 * page), -1 nothing (local, TLS verification). */
static int host_verdict(int rc, const duo_error *de, const reply *rp)
{
    if (rc == 0)
        return 1;
    switch (de->fail) {
    case DUO_FAIL_NETWORK:
    case DUO_FAIL_TIMEOUT:
        return 0;
    case DUO_FAIL_BAD_RESPONSE:
        return de->http_status >= 500 || html_page(rp) ? 0 : 1;
    case DUO_FAIL_HTTP:
        return de->http_status >= 500 ? 0 : 1;
    default:
        return -1;
    }
}

/* ---- one attempt ------------------------------------------------------------------ */

static long min_l(long long a, long long b)
{
    return (long)(a < b ? a : b);
}

/* A held push leaves its TLS connection idle for seconds: let OpenSSL drop the idle
 * connection's 2 x ~17 KiB record buffers meanwhile (thousands of them add up). */
static CURLcode on_ssl_ctx(CURL *h, void *ssl_ctx, void *arg)
{
    (void)h;
    (void)arg;
    SSL_CTX_set_mode((SSL_CTX *)ssl_ctx, SSL_MODE_RELEASE_BUFFERS);
    return CURLE_OK;
}

/* Options of one attempt; the time left before the deadline caps both timeouts. */
static int set_opts(duo_areq *r, CURL *h, long long left)
{
    const duo_request *q = r->req;
    int bad = 0;
    bad |= curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 1L) != CURLE_OK;
    bad |= curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 2L) != CURLE_OK;
    if (r->ca_file)
        bad |= curl_easy_setopt(h, CURLOPT_CAINFO, r->ca_file) != CURLE_OK;
    /* Debian's libcurl has a default CApath (/etc/ssl/certs) besides its CA file, and
     * libcurl keeps a loaded CA store for reuse (CURLOPT_CA_CACHE_TIMEOUT) only when no
     * CApath is set: without this every connection parses the CA file into a store of
     * its own. The CA file (ours, or the system bundle) holds every trusted CA. */
    bad |= curl_easy_setopt(h, CURLOPT_CAPATH, (char *)NULL) != CURLE_OK;
    bad |= curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "https") != CURLE_OK;
    bad |= curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L) != CURLE_OK;
    bad |= curl_easy_setopt(h, CURLOPT_SHARE, r->a->share) != CURLE_OK;
    bad |= curl_easy_setopt(h, CURLOPT_BUFFERSIZE, r->a->o.buffer_size) != CURLE_OK;
    /* libcurl copies every HTTPS request through an upload buffer (64 KiB by default,
     * kept per handle): its minimum is plenty for a Duo request and saves ~48 KiB per
     * request in flight. */
    bad |= curl_easy_setopt(h, CURLOPT_UPLOAD_BUFFERSIZE, 16384L) != CURLE_OK;
    bad |= curl_easy_setopt(h, CURLOPT_SSL_CTX_FUNCTION, on_ssl_ctx) != CURLE_OK;
    bad |= curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, min_l(r->o.connect_timeout_ms, left)) !=
           CURLE_OK;
    /* Only a long poll waits long; every other call is answered at once by a live Duo. */
    long t = r->long_poll || r->o.quick_timeout_ms <= 0 ? r->o.timeout_ms : r->o.quick_timeout_ms;
    bad |= curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, min_l(t, left)) != CURLE_OK;
    bad |= curl_easy_setopt(h, CURLOPT_TCP_KEEPALIVE, 1L) != CURLE_OK;
    /* Set every time: pooled handles keep their options. */
    bad |= curl_easy_setopt(
               h, CURLOPT_FRESH_CONNECT,
               (long)duo_call_reaches_user(r->method, r->path, r->params, r->nparams)) != CURLE_OK;
    bad |= curl_easy_setopt(h, CURLOPT_USERAGENT, "duo-workers/1.0") != CURLE_OK;
    bad |= curl_easy_setopt(h, CURLOPT_ERRORBUFFER, r->errbuf) != CURLE_OK;
    bad |= curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, duo_body_on_data) != CURLE_OK;
    bad |= curl_easy_setopt(h, CURLOPT_WRITEDATA, &r->r) != CURLE_OK;
    bad |= curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, duo_body_on_header) != CURLE_OK;
    bad |= curl_easy_setopt(h, CURLOPT_HEADERDATA, &r->r) != CURLE_OK;
    bad |= curl_easy_setopt(h, CURLOPT_PRIVATE, r) != CURLE_OK;
    bad |= curl_easy_setopt(h, CURLOPT_URL, q->url) != CURLE_OK;
    bad |= curl_easy_setopt(h, CURLOPT_HTTPHEADER, r->hdrs) != CURLE_OK;
    if (strcmp(q->method, "GET") == 0) {
        bad |= curl_easy_setopt(h, CURLOPT_HTTPGET, 1L) != CURLE_OK;
    } else {
        bad |=
            curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)q->body_len) != CURLE_OK;
        bad |= curl_easy_setopt(h, CURLOPT_POSTFIELDS, q->body ? q->body : "") != CURLE_OK;
        if (strcmp(q->method, "POST") != 0)
            bad |= curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, q->method) != CURLE_OK;
    }
    return bad ? ERR_INVAL : 0;
}

static CURL *take_easy(duo_async *a)
{
    return a->npool ? a->pool[--a->npool] : curl_easy_init();
}

/* A half-open host is probed by the engine itself with GET /auth/v2/ping (signed with the
 * credentials of the call that found it due): no person's job waits out a host that may
 * still hang, and a call that would act (a push) is never the probe. The probe's result
 * is recorded like any attempt's (finished()); callers meanwhile are refused. */
static void on_probe(void *arg, int rc, json_t *response, json_t *metadata, const duo_error *err)
{
    (void)arg;
    (void)rc;
    (void)response;
    (void)metadata;
    (void)err;
}

static void probe_start(duo_areq *from, duo_breaker_ticket t)
{
    duo_async *a = from->a;
    duo_client_opts o = from->o;
    o.retry_attempts = 1;
    o.group = NULL;
    long long deadline = clock_ms() + o.connect_timeout_ms +
                         (o.quick_timeout_ms > 0 ? o.quick_timeout_ms : o.timeout_ms);
    duo_areq *p = NULL;
    if (duo_async_submit(a, &o, "GET", "/auth/v2/ping", NULL, 0, deadline, on_probe, NULL, &p,
                         NULL) < 0) {
        duo_breakers_record(a->breakers, from->host, &t, -1, clock_ms()); /* next call probes */
        return;
    }
    p->probe_req = 1;
    p->ticket = t;
}

/* Signs and starts the next attempt: 0, 1 when r now waits for a slot of its group
 * (nothing started), or on failure (refused, or the attempt could not start) completes r
 * (the caller must not touch it then) and returns the error. */
static int start_attempt(duo_areq *r, long long now)
{
    duo_async *a = r->a;
    err_t be = {0};
    int slot = group_admit(r, now);
    if (slot > 0)
        return 1; /* waits for a slot of its group */
    if (slot < 0) {
        wait_del(r);
        return refuse(r, DUO_FAIL_STAGE_BUSY, 0);
    }
    if (a->breakers && !r->probe_req) {
        r->ticket = duo_breakers_admit(a->breakers, r->host, now, !r->long_poll);
        if (r->ticket.probe) { /* the engine probes; this call is refused like the rest */
            probe_start(r, r->ticket);
            r->ticket = (duo_breaker_ticket){.retry_in_ms = PROBE_WAIT_MS};
        }
        if (!r->ticket.admitted) {
            wait_del(r);
            return refuse(r, DUO_FAIL_CIRCUIT_OPEN, r->ticket.retry_in_ms);
        }
    }
    attempt_clear(r);
    r->r = (reply){.max = r->o.max_response_bytes, .retry_after_ms = -1};
    r->errbuf[0] = '\0';
    r->attempt++; /* counted even when it fails before reaching the wire */
    wait_del(r);
    int rc = duo_request_build(&r->o, r->method, r->path, r->params, r->nparams, time(NULL),
                               &r->req, &be);
    if (rc < 0)
        return fail_local(r, rc, DUO_CLASS_PERMANENT, be.msg);
    for (size_t i = 0; i < r->req->nheaders; i++) {
        struct curl_slist *t = curl_slist_append(r->hdrs, r->req->headers[i]);
        if (!t)
            return fail_local(r, ERR_NOMEM, DUO_CLASS_TRANSIENT, "out of memory");
        r->hdrs = t;
    }
    struct curl_slist *t = curl_slist_append(r->hdrs, "Expect:");
    if (t)
        r->hdrs = t;
    long long left = r->deadline_ms > 0 ? r->deadline_ms - now : r->o.timeout_ms;
    if (left < 1)
        left = 1;
    CURL *h = take_easy(a);
    int opts_bad = h ? set_opts(r, h, left) : 0;
    if (opts_bad && h) {
        /* A pooled handle whose last transfer was cut short (a timeout) can refuse
         * CURLOPT_BUFFERSIZE (libcurl 7.88, seen in the isolation bench): take a new one. */
        curl_easy_cleanup(h);
        h = curl_easy_init();
        opts_bad = h ? set_opts(r, h, left) : 0;
    }
    CURLMcode mc = h && !opts_bad ? curl_multi_add_handle(a->multi, h) : CURLM_OK;
    if (!h || opts_bad || mc != CURLM_OK) {
        if (h)
            curl_easy_cleanup(h);
        char why[160];
        snprintf(why, sizeof why, "libcurl refused the transfer (%s)",
                 !h         ? "no handle"
                 : opts_bad ? "an option"
                            : curl_multi_strerror(mc));
        return fail_local(r, ERR_NET, DUO_CLASS_TRANSIENT, why);
    }
    r->easy = h;
    a->nrunning++;
    a->attempts++;
    return 0;
}

/* ---- submit ----------------------------------------------------------------------- */

static int dup_opt(const char *s, char **out)
{
    *out = NULL;
    if (!s || !*s)
        return 0;
    return (*out = strdup(s)) ? 0 : ERR_NOMEM;
}

/* Copies everything a retry needs to sign again. */
static int copy_call(duo_areq *r, const duo_client_opts *c, const char *method, const char *path,
                     const duo_param *params, size_t n)
{
    r->o = *c;
    r->o.group = NULL; /* group_enter points it at the engine's copy */
    r->long_poll = duo_call_long_poll(method, path, params, n);
    const char *ca = (c->ca_file && *c->ca_file) ? c->ca_file : getenv("DUO_CA_FILE");
    if (dup_opt(c->host, &r->host) < 0 || dup_opt(c->ikey, &r->ikey) < 0 ||
        dup_opt(c->skey, &r->skey) < 0 || dup_opt(ca, &r->ca_file) < 0 ||
        dup_opt(method, &r->method) < 0 || dup_opt(path, &r->path) < 0)
        return ERR_NOMEM;
    r->o.host = r->host, r->o.ikey = r->ikey, r->o.skey = r->skey, r->o.ca_file = r->ca_file;
    r->o.idle = NULL;
    if (!r->o.max_response_bytes || r->o.max_response_bytes > DUO_MAX_RESPONSE_BYTES)
        r->o.max_response_bytes = DUO_MAX_RESPONSE_BYTES;
    if (n && !(r->params = calloc(n, sizeof *r->params)))
        return ERR_NOMEM;
    for (size_t i = 0; i < n; i++, r->nparams++) {
        char *k = strdup(params[i].key ? params[i].key : "");
        char *v = strdup(params[i].value ? params[i].value : "");
        r->params[i] = (duo_param){k, v};
        if (!k || !v) {
            r->nparams++;
            return ERR_NOMEM;
        }
    }
    return 0;
}

static int check_call(const duo_client_opts *c, const char *method, const char *path,
                      duo_async_cb cb, err_t *e)
{
    if (!c || !c->host || !*c->host || !c->ikey || !*c->ikey || !c->skey || !*c->skey)
        return err_set(e, ERR_INVAL, "Duo host, integration key and secret key are required");
    if (!method || !path || !cb)
        return err_set(e, ERR_INVAL, "a Duo call needs a method, a path and a callback");
    if (c->retry_attempts < 1 || c->timeout_ms <= 0 || c->connect_timeout_ms <= 0 ||
        c->backoff_base_ms < 0)
        return err_set(e, ERR_INVAL, "Duo timeouts and attempts must be positive");
    return 0;
}

int duo_async_submit(duo_async *a, const duo_client_opts *creds, const char *method,
                     const char *path, const duo_param *params, size_t nparams,
                     long long deadline_ms, duo_async_cb cb, void *arg, duo_areq **out, err_t *e)
{
    if (out)
        *out = NULL;
    int rc = check_call(creds, method, path, cb, e);
    if (rc < 0)
        return rc;
    duo_areq *r = calloc(1, sizeof *r);
    if (!r)
        return err_set(e, ERR_NOMEM, "out of memory starting a Duo call");
    *r = (duo_areq){.a = a, .deadline_ms = deadline_ms, .cb = cb, .arg = arg, .next = a->all};
    if (a->all)
        a->all->prev = r;
    a->all = r;
    a->nactive++;
    wait_add(r, 0);
    if (copy_call(r, creds, method, path, params, nparams) < 0) {
        areq_free(r);
        return err_set(e, ERR_NOMEM, "out of memory starting a Duo call");
    }
    group_enter(r, creds->group);
    /* Starts on the next poll, so the callback never runs inside this call. */
    if (out)
        *out = r;
    return 0;
}

void duo_async_defer(duo_areq *r, long long start_ms)
{
    if (r && r->waiting && r->attempt == 0)
        r->wake_ms = start_ms; /* still on the waiting list: only its time changes */
}

void duo_async_start_by(duo_areq *r, long long start_by_ms)
{
    if (r)
        r->start_by_ms = start_by_ms;
}

void duo_async_set_parser(duo_areq *r, duo_parse_fn parse)
{
    if (r)
        r->parse = parse;
}

void duo_async_last_error(const duo_areq *r, duo_error *out)
{
    memset(out, 0, sizeof *out);
    if (!r)
        return;
    if (r->waiting && r->attempt > 0)
        *out = r->last;
    out->attempts = r->attempt;
}

/* ---- finished transfers ----------------------------------------------------------- */

/* When a failed attempt is tried again (duo_retry.h), or -1: not again. */
static long long retry_wake(duo_areq *r, int rc, const duo_error *de)
{
    if (!duo_retry_allowed(rc, de, duo_call_acts(r->method, r->path)) ||
        r->attempt >= r->o.retry_attempts)
        return -1;
    long long wait = duo_backoff_ms(r->attempt, r->o.backoff_base_ms, r->r.retry_after_ms,
                                    (unsigned)rand_r(&r->a->rng));
    return duo_retry_wake(clock_ms(), wait, r->deadline_ms, r->start_by_ms);
}

/* Decides what a finished transfer means: done (callback), or a retry later. */
static int finished(duo_areq *r, CURLcode cc)
{
    duo_error de;
    memset(&de, 0, sizeof de);
    long status = 0;
    json_t *resp = NULL, *meta = NULL;
    int rc;
    if (cc != CURLE_OK) {
        rc = duo_transfer_error(cc, &r->r, r->errbuf, r->host, r->ca_file, &de);
        duo_transfer_note_sent(r->easy, &de);
    } else {
        curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &status);
        duo_parse_fn parse = r->parse ? r->parse : duo_response_parse;
        rc = parse(status, r->r.b.data, r->r.b.len, &resp, &meta, &de);
    }
    de.attempts = r->attempt;
    if (r->ticket.admitted) {
        int ok = host_verdict(rc, &de, &r->r);
        /* A long poll's answer may come a minute late from a host that is failing fast
         * calls: it proves nothing about the host. */
        duo_breakers_record(r->a->breakers, r->host, &r->ticket, r->long_poll && ok > 0 ? -1 : ok,
                            clock_ms());
        r->ticket.admitted = 0;
    }
    detach_easy(r);
    long long wake = rc < 0 ? retry_wake(r, rc, &de) : -1;
    if (wake >= 0) {
        r->last = de;
        wait_add(r, wake);
        return 0;
    }
    complete(r, rc, resp, meta, &de);
    return 1;
}

static int read_done(duo_async *a)
{
    int ran = 0, left = 0;
    CURLMsg *m;
    while ((m = curl_multi_info_read(a->multi, &left))) {
        if (m->msg != CURLMSG_DONE)
            continue;
        duo_areq *r = NULL;
        curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&r);
        if (!r)
            continue;
        ran += finished(r, m->data.result);
    }
    return ran;
}

/* Starts waiting requests whose time came; returns ms until the next one (or -1). */
static long long fire_timers(duo_async *a, long long now, int *ran)
{
    long long next = -1;
    duo_areq *r = a->waiting;
    while (r) {
        duo_areq *nx = r->wnext;
        if (r->wake_ms <= now) {
            if (start_attempt(r, now) < 0) {
                (*ran)++; /* its callback may have freed others: walk again */
                next = -1;
                r = a->waiting;
                continue;
            }
        } else if (next < 0 || r->wake_ms - now < next) {
            next = r->wake_ms - now;
        }
        r = nx;
    }
    return next;
}

/* Refuses the queued calls that waited for a slot as long as they may; returns ms until
 * the next one gives up (or -1). */
static long long expire_queued(duo_async *a, long long now, int *ran)
{
    long long next = -1;
    for (group *g = a->groups; g; g = g->next) {
        while (g->qhead && g->qhead->queued_until <= now) {
            duo_areq *r = g->qhead;
            group_unqueue(r);
            refuse(r, DUO_FAIL_STAGE_BUSY, 0);
            (*ran)++;
        }
        if (g->qhead && (next < 0 || g->qhead->queued_until - now < next))
            next = g->qhead->queued_until - now;
    }
    return next;
}

/* How long the wait may last: the caller's bound, a due retry, curl's timer. */
static int wait_ms(const duo_async *a, int timeout_ms, long long next, long long now)
{
    long long w = timeout_ms < 0 ? 0 : timeout_ms;
    if (next >= 0 && next < w)
        w = next;
    if (a->timer_ms >= 0 && a->timer_ms - now < w)
        w = a->timer_ms - now;
    return w < 0 ? 0 : (int)w;
}

/* Hands the ready sockets (and an expired timer) to curl. */
static int drive(duo_async *a)
{
    int running = 0, bad = 0;
    struct epoll_event ev[EVENTS_PER_TURN];
    int n = epoll_wait(a->epfd, ev, EVENTS_PER_TURN, 0);
    for (int i = 0; i < n; i++) {
        int flags = ((ev[i].events & EPOLLIN) ? CURL_CSELECT_IN : 0) |
                    ((ev[i].events & EPOLLOUT) ? CURL_CSELECT_OUT : 0) |
                    ((ev[i].events & (EPOLLERR | EPOLLHUP)) ? CURL_CSELECT_ERR : 0);
        bad |= curl_multi_socket_action(a->multi, ev[i].data.fd, flags, &running) != CURLM_OK;
    }
    if (a->timer_ms >= 0 && clock_ms() >= a->timer_ms) {
        a->timer_ms = -1; /* curl may set a new one from inside the call */
        bad |= curl_multi_socket_action(a->multi, CURL_SOCKET_TIMEOUT, 0, &running) != CURLM_OK;
    }
    return bad ? ERR_NET : 0;
}

int duo_async_poll(duo_async *a, int extra_fd, int timeout_ms, int *extra_ready)
{
    int ran = 0;
    if (extra_ready)
        *extra_ready = 0;
    long long now = clock_ms();
    duo_breakers_tick(a->breakers, now);
    long long next = a->waiting ? fire_timers(a, now, &ran) : -1;
    long long qnext = a->groups ? expire_queued(a, now, &ran) : -1;
    if (qnext >= 0 && (next < 0 || qnext < next))
        next = qnext;
    int wait = ran ? 0 : wait_ms(a, timeout_ms, next, now);
    struct pollfd p[2] = {{.fd = a->epfd, .events = POLLIN}, {.fd = extra_fd, .events = POLLIN}};
    if (poll(p, extra_fd >= 0 ? 2 : 1, wait) < 0 && errno != EINTR)
        return ERR_NET;
    if (extra_ready)
        *extra_ready = extra_fd >= 0 && p[1].revents != 0;
    int rc = drive(a);
    ran += read_done(a);
    return rc < 0 ? rc : ran;
}
