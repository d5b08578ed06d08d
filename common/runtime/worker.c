/* worker.c - the job pipeline (see worker.h). Acks only after COMMIT and a confirmed
 * reply: a crash in between means a redelivery, and the claim makes it a re-send of the
 * stored reply. An asynchronous worker takes the deliveries in hand as one batch (their
 * claims travel in one round trip) and commits the jobs finished in one turn together
 * (one round trip, each job its own transaction); a synchronous one runs one delivery at
 * a time. */
#include "worker.h"

#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "log.h"
#include "msg.h"
#include "paths.h"
#include "schema.h"
#include "store_jobs.h"
#include "worker_int.h"

#define CONFIRM_TIMEOUT_MS 30000
#define DB_RECONNECT_MS 60000

static volatile sig_atomic_t stop_requested;

static void on_signal(int sig)
{
    (void)sig;
    stop_requested = 1;
}

void job_fail(job_outcome *o, const char *code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(o->message, sizeof o->message, fmt, ap);
    va_end(ap);
    o->code = code;
    o->retry = 0;
}

void job_retry(job_outcome *o, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(o->message, sizeof o->message, fmt, ap);
    va_end(ap);
    o->retry = 1;
}

int worker_idle(void *arg)
{
    worker *w = arg;
    if (!mq_is_broken(w->mq))
        mq_service(w->mq, NULL);
    if (stop_requested && !w->stop_at_ms)
        w->stop_at_ms = clock_ms() + w->cfg.shutdown_grace_ms;
    return w->stop_at_ms && clock_ms() > w->stop_at_ms;
}

int worker_publish(worker *w, const mq_msg *m, err_t *e)
{
    uint64_t seq = 0;
    int rc = mq_publish(w->mq, m, &seq, e);
    if (rc == 0)
        rc = mq_wait_confirm(w->mq, seq, CONFIRM_TIMEOUT_MS, e);
    return rc;
}

int worker_publish_all(worker *w, const mq_msg *ms, size_t n, err_t *e)
{
    uint64_t *seq = n ? calloc(n, sizeof *seq) : NULL;
    if (n && !seq)
        return err_set(e, ERR_NOMEM, "out of memory publishing %zu messages", n);
    int rc = 0;
    size_t sent = 0;
    for (; rc == 0 && sent < n; sent++)
        rc = mq_publish(w->mq, &ms[sent], &seq[sent], e);
    if (rc < 0)
        sent--; /* the failed one has no sequence number */
    /* Every publish sent is waited for, even after a failure: none is left unsettled. */
    for (size_t i = 0; i < sent; i++) {
        err_t we = {0};
        int wrc = mq_wait_confirm(w->mq, seq[i], CONFIRM_TIMEOUT_MS, &we);
        if (wrc < 0 && rc == 0) {
            rc = wrc;
            if (e)
                *e = we;
        }
    }
    free(seq);
    return rc;
}

void worker_set_app(worker *w, void *app)
{
    w->env.app = app;
}

const char *worker_jobs_exchange(const worker *w)
{
    return mq_jobs_exchange(w->mq);
}

/* Fault injection for reliability tests: with DUO_FAULT_POINT=<name>, the process dies
 * abruptly at that point, as a kill -9 would leave it. Off unless the variable is set. */
static void fault_point(const worker *w, const char *name)
{
    if (w->fault_point && strcmp(w->fault_point, name) == 0) {
        LOG(LOG_WARN, "fault point reached: exiting abruptly", "point", name);
        _exit(137);
    }
}

void worker_fault_point(const worker_env *env, const char *name)
{
    fault_point(env->w, name);
}

/* DUO_FAULT_POINT=reconnect_while_pending: the first time an asynchronous job is pending,
 * the broker connection is dropped and made again, as a broker restart or a network
 * blip would; the broker redelivers the job while it still runs here. */
static void fault_reconnect(worker *w)
{
    if (!w->fault_point || strcmp(w->fault_point, "reconnect_while_pending") != 0 || w->fault_fired)
        return;
    w->fault_fired = 1;
    LOG(LOG_WARN, "fault point reached: reconnecting to the broker", "point",
        "reconnect_while_pending");
    err_t e = {0};
    while (mq_reconnect(w->mq, 5000, &e) < 0)
        LOG(LOG_WARN, "broker still unreachable", "error", e.msg);
}

/* ---- replies ------------------------------------------------------------------------ */

/* Builds the reply map: job_id, job_type, status, and fields or error. Steals fields. */
static json_t *reply_build(const char *job_id, const char *job_type, const job_outcome *o)
{
    json_t *r = o->fields && !o->code ? json_incref(o->fields) : json_object();
    json_object_set_new(r, "job_id", json_string(job_id ? job_id : ""));
    json_object_set_new(r, "job_type", json_string(job_type ? job_type : "unknown"));
    if (o->code) {
        json_t *err = o->error_fields ? json_deep_copy(o->error_fields) : json_object();
        json_object_set_new(err, "code", json_string(o->code));
        json_object_set_new(err, "message", json_string(o->message));
        json_object_set_new(r, "status", json_string("error"));
        json_object_set_new(r, "error", err);
    } else {
        json_object_set_new(r, "status", json_string("ok"));
    }
    return r;
}

/* Publishes an encoded reply to d's reply_to (or the results exchange) and queues d to be
 * settled `how` once the broker confirms the reply. */
static int reply_send(worker *w, const mq_delivery *d, const char *job_type, const void *buf,
                      size_t len, int how, err_t *e)
{
    char type[128];
    snprintf(type, sizeof type, "%s.result", job_type ? job_type : "unknown");
    /* A job without a usable id (missing or empty) gets a reply without message_id; its
     * correlation_id, when it had one, is the only way to match it. */
    const char *id = d->message_id && *d->message_id ? d->message_id : NULL;
    mq_msg m = {.body = buf,
                .body_len = len,
                .message_id = id,
                .correlation_id = d->correlation_id && *d->correlation_id ? d->correlation_id : id,
                .type = type,
                .content_type = "application/msgpack"};
    uint64_t seq = 0;
    int rc = mq_reply(w->mq, d, &m, &seq, e);
    if (rc == 0 && settle_push(&w->settle, seq, mq_ticket_of(d), how) < 0)
        /* Not acked: the redelivery re-sends the stored reply. */
        rc = err_set(e, ERR_NOMEM, "out of memory");
    return rc;
}

static int confirmed(void *w, uint64_t seq)
{
    return mq_confirmed(((worker *)w)->mq, seq);
}

static void settle_one(void *w, mq_ticket t, int how)
{
    mq_settle(((worker *)w)->mq, t, how, NULL);
}

/* Settles every delivery whose reply the broker has confirmed (or lost). The queue is
 * walked only when confirms arrived or the connection broke: at hundreds of replies in
 * flight, walking it on every loop turn was 6 % of a worker's CPU. */
static void settle_confirmed(worker *w)
{
    unsigned long now = mq_confirm_count(w->mq);
    if (!w->settle.n || now == w->settled_at)
        return;
    w->settled_at = now;
    settle_ready(&w->settle, confirmed, settle_one, w);
}

/* Waits for the broker's confirms (arriving deliveries are queued, not taken) until
 * every queued settle is done or timeout_ms passed; what is left goes back unacked. */
static void settle_all(worker *w, int timeout_ms)
{
    long long end = clock_ms() + timeout_ms;
    while (w->settle.n && clock_ms() < end && !mq_is_broken(w->mq)) {
        /* The newest reply is confirmed last; a failed or lost one ends its wait too. */
        mq_wait_confirm(w->mq, settle_last_seq(&w->settle), (int)(end - clock_ms()), NULL);
        settle_confirmed(w);
    }
    settle_clear(&w->settle);
}

/* Answers a message that never became a job (bad input) and dead-letters it. */
static void reject_input(worker *w, const mq_delivery *d, const char *code, const char *msg)
{
    job_outcome o = {0};
    job_fail(&o, code, "%s", msg);
    LOG(LOG_WARN, "rejected message", "code", code, "reason", msg, "job_id", d->message_id,
        "correlation_id", d->correlation_id);
    metrics_job(w, d->type, code);
    json_t *r = reply_build(d->message_id, d->type, &o);
    void *buf = NULL;
    size_t len = 0;
    err_t e = {0};
    int rc = msg_encode(r, &buf, &len, &e);
    json_decref(r);
    LOG(LOG_WARN, "dead-lettering message", "message_id", d->message_id, "reason", code);
    if (rc == 0)
        rc = reply_send(w, d, d->type, buf, len, -1, &e);
    else
        rc = mq_dead_letter(w->mq, d, code, &e);
    free(buf);
    metrics_dead_letter(w);
    if (rc < 0)
        LOG(LOG_WARN, "could not finish rejecting a message", "error", e.msg);
}

/* ---- the job path -------------------------------------------------------------------- */

static const job_type_def *find_type(const worker *w, const char *type)
{
    for (size_t i = 0; type && i < w->def->ntypes; i++)
        if (strcmp(w->def->types[i].type, type) == 0)
            return &w->def->types[i];
    return NULL;
}

static int refuse(worker *w, const mq_delivery *d, const char *code, const char *why)
{
    reject_input(w, d, code, why);
    return -1;
}

/* Decodes and validates d into *body; answers and dead-letters it when it can't. */
static int accept_input(worker *w, const mq_delivery *d, const job_type_def **def, json_t **body)
{
    char why[700];
    err_t e = {0};
    if (d->too_large) {
        snprintf(why, sizeof why, "message of %zu bytes exceeds MAX_MESSAGE_BYTES (%d)",
                 d->body_size, w->cfg.max_message_bytes);
        return refuse(w, d, "message_too_large", why);
    }
    if (!d->message_id || !*d->message_id)
        return refuse(w, d, "invalid_message", "the message_id property (job id) is missing");
    *def = find_type(w, d->type);
    if (!*def) {
        snprintf(why, sizeof why, "unknown job type '%.100s' on queue %s", d->type ? d->type : "",
                 d->kind);
        return refuse(w, d, "unknown_job_type", why);
    }
    msg_limits lim = {.max_bytes = (size_t)w->cfg.max_message_bytes};
    if (msg_decode(d->body, d->body_len, &lim, body, &e) < 0) {
        snprintf(why, sizeof why, "undecodable msgpack body: %s", e.msg);
        return refuse(w, d, "invalid_message", why);
    }
    char name[160];
    snprintf(name, sizeof name, "%s.job", (*def)->type);
    const schema *sc = schema_get(w->schemas, name);
    if (!sc || schema_validate(sc, *body, &e) < 0) {
        json_decref(*body);
        *body = NULL;
        return refuse(w, d, "schema_invalid", e.msg);
    }
    return 0;
}

/* Makes sure the database is reachable before a job touches it. */
static int db_ready(worker *w)
{
    if (store_ok(w->db))
        return 0;
    err_t e = {0};
    metrics_reconnect(w, "postgres");
    /* Reconnect in one-second slices, servicing the broker in between, so a long
     * database outage does not also cost the AMQP connection its heartbeats. */
    long long end = clock_ms() + DB_RECONNECT_MS;
    while (store_reconnect(w->db, 1000, &e) < 0) {
        if (worker_idle(w) || clock_ms() > end) {
            LOG(LOG_ERROR, "PostgreSQL unreachable", "error", e.msg);
            return -1;
        }
    }
    return 0;
}

/* A job whose record was committed without waiting (store_commit_later): its reply goes
 * out once the commit is known to have happened (collect_commits). */
typedef struct finishing {
    mq_delivery *d; /* owned */
    const char *type;
    void *buf; /* the encoded reply, owned */
    size_t len;
    int how; /* 0 ack, -1 dead-letter, once the reply is confirmed */
} finishing;

/* Queues the job record (joining the handler's open transaction, if any) and its commit
 * for the turn's one round trip; takes d when it returns 0. */
static int commit_later(worker *w, mq_delivery *d, const job *j, job_outcome *o, void *buf,
                        size_t len, err_t *e)
{
    finishing *f = malloc(sizeof *f);
    if (!f) {
        free(buf);
        store_rollback(w->db);
        return err_set(e, ERR_NOMEM, "out of memory");
    }
    *f = (finishing){d, j->type, buf, len, o->dead_letter ? -1 : 0};
    job_record_in rec = {j->id, j->type, d->user_id, buf, len, o->code};
    if (store_job_finish_later(w->db, &rec, f, e) < 0) {
        free(buf);
        free(f);
        LOG(LOG_ERROR, "could not commit job", "job_id", j->id, "error", e->msg);
        return -1;
    }
    return 0;
}

/* Sends the replies of the jobs whose deferred commits are done (and returns to the
 * queue those that did not commit). */
static void collect_commits(worker *w)
{
    err_t e = {0};
    void *tag = NULL;
    if (store_flush(w->db, &e) < 0)
        LOG(LOG_WARN, "queued statements failed", "error", e.msg);
    while (store_take_committed(w->db, &tag, &e)) {
        finishing *f = tag;
        const char *id = f->d->message_id;
        if (e.code) {
            LOG(LOG_ERROR, "could not commit job", "job_id", id, "error", e.msg);
            store_job_release(w->db, id);
            mq_reject(w->mq, f->d, 1, NULL);
        } else {
            fault_point(w, "after_commit");
            if (f->how < 0)
                LOG(LOG_WARN, "dead-lettering job", "job_id", id);
            if (reply_send(w, f->d, f->type, f->buf, f->len, f->how, &e) < 0)
                LOG(LOG_WARN, "reply or ack failed after commit; redelivery will re-send it",
                    "job_id", id, "error", e.msg);
        }
        free(f->buf);
        mq_delivery_free(f->d);
        free(f);
    }
}

/* Commits the outcome with the job record and sends the reply. With later (a job
 * finished by an asynchronous worker), the commit is only queued and d taken: 1. */
static int commit_and_reply(worker *w, mq_delivery *d, const job *j, job_outcome *o, int later)
{
    err_t e = {0};
    json_t *r = reply_build(j->id, j->type, o);
    void *buf = NULL;
    size_t len = 0;
    int rc = msg_encode(r, &buf, &len, &e);
    json_decref(r);
    if (rc == 0 && later)
        return commit_later(w, d, j, o, buf, len, &e) == 0 ? 1 : -1;
    /* With the handler's effect in an open transaction, the job record joins it; alone,
     * the record is one autocommitted statement. */
    int in_tx = store_in_tx(w->db);
    job_record_in rec = {j->id, j->type, d->user_id, buf, len, o->code};
    if (rc == 0)
        rc = store_job_finish(w->db, &rec, &e);
    if (rc == 0 && in_tx)
        rc = store_commit(w->db, &e);
    if (rc < 0) {
        store_rollback(w->db);
        free(buf);
        LOG(LOG_ERROR, "could not commit job", "job_id", j->id, "error", e.msg);
        return rc;
    }
    fault_point(w, "after_commit");
    if (o->dead_letter)
        LOG(LOG_WARN, "dead-lettering job", "job_id", j->id, "reason", o->code);
    rc = reply_send(w, d, j->type, buf, len, o->dead_letter ? -1 : 0, &e);
    free(buf);
    if (rc < 0)
        LOG(LOG_WARN, "reply or ack failed after commit; redelivery will re-send it", "job_id",
            j->id, "error", e.msg);
    return 0;
}

/* Re-sends the stored reply of a job that already committed. */
static void resend_stored(worker *w, const mq_delivery *d, const job_claim *c)
{
    err_t e = {0};
    LOG(LOG_INFO, "job already done; re-sending its reply", "job_id", d->message_id);
    metrics_job(w, d->type, "duplicate");
    int rc = reply_send(w, d, d->type, c->reply, c->reply_len, 0, &e);
    if (rc < 0)
        LOG(LOG_WARN, "could not re-send stored reply", "job_id", d->message_id, "error", e.msg);
}

/* A transient failure: retry after a delay, or give up once attempts are exhausted. */
static void retry_or_give_up(worker *w, mq_delivery *d, const job *j, job_outcome *o)
{
    store_rollback(w->db);
    err_t e = {0};
    if (o->defer_ms > 0) { /* nothing was tried: not an attempt, whatever the count says */
        LOG(LOG_INFO, "job deferred", "job_id", j->id, "reason", o->message);
        metrics_retry(w, j->type);
        store_job_release(w->db, j->id);
        if (mq_retry_in(w->mq, d, d->attempt, o->defer_ms, CONFIRM_TIMEOUT_MS, &e) < 0)
            LOG(LOG_WARN, "could not defer the job; the broker will redeliver", "error", e.msg);
        return;
    }
    if (j->attempt < w->cfg.max_attempts) {
        char n[16];
        snprintf(n, sizeof n, "%d", j->attempt);
        LOG(LOG_WARN, "job failed transiently; retrying later", "job_id", j->id, "attempt", n,
            "reason", o->message);
        metrics_retry(w, j->type);
        store_job_release(w->db, j->id);
        if (mq_retry(w->mq, d, j->attempt + 1, CONFIRM_TIMEOUT_MS, &e) < 0)
            LOG(LOG_WARN, "could not schedule retry; the broker will redeliver", "error", e.msg);
        return;
    }
    char last[sizeof o->message];
    memcpy(last, o->message, sizeof last);
    job_fail(o, "retries_exhausted", "gave up after %d attempts: %.400s", j->attempt, last);
    o->dead_letter = 1;
    metrics_dead_letter(w);
    if (commit_and_reply(w, d, j, o, 0) < 0)
        mq_reject(w->mq, d, 1, &e);
}

struct job_async {
    worker *w;
    mq_delivery *d; /* owned */
    json_t *body;   /* owned */
    job j;          /* points into d and body */
    job_async *prev, *next;
    job_async *hnext; /* in w->by_id[bucket(j.id)] */
};

/* ---- pending jobs by id: a copy of a job that runs here must not run beside it ---------- */

static unsigned bucket(const char *id)
{
    unsigned h = 2166136261u; /* FNV-1a */
    for (const unsigned char *p = (const unsigned char *)id; *p; p++)
        h = (h ^ *p) * 16777619u;
    return h % WORKER_ID_BUCKETS;
}

static void by_id_add(worker *w, job_async *h)
{
    unsigned b = bucket(h->j.id);
    h->hnext = w->by_id[b];
    w->by_id[b] = h;
}

static void by_id_del(worker *w, job_async *h)
{
    for (job_async **pp = &w->by_id[bucket(h->j.id)]; *pp; pp = &(*pp)->hnext)
        if (*pp == h) {
            *pp = h->hnext;
            return;
        }
}

static int is_pending(const worker *w, const char *id)
{
    for (const job_async *h = w->by_id[bucket(id)]; h; h = h->hnext)
        if (strcmp(h->j.id, id) == 0)
            return 1;
    return 0;
}

/* Finishes a job whose handler decided: retry, or commit + reply + ack. With later, the
 * commit may be deferred to the turn's round trip: returns 1 when it took d. */
static int finish_job(worker *w, mq_delivery *d, const job *j, job_outcome *o, int later)
{
    int kept = 0;
    if (o->retry) {
        retry_or_give_up(w, d, j, o);
    } else {
        metrics_job(w, j->type, o->code ? o->code : "ok");
        int rc = commit_and_reply(w, d, j, o, later);
        if (rc < 0) {
            store_job_release(w->db, j->id);
            mq_reject(w->mq, d, 1, NULL);
        }
        kept = rc == 1;
    }
    json_decref(o->fields);
    o->fields = NULL;
    json_decref(o->error_fields);
    o->error_fields = NULL;
    return kept;
}

/* Gives a delivery back for later through the retry tier of its next attempt: a copy of a
 * job that runs elsewhere (or here) now. When the copy cannot be parked (its publish was
 * refused or not confirmed), the delivery goes back to its queue (requeued): left
 * unsettled it would stay with this channel, unanswered, as long as the connection
 * lives. */
static void look_again_later(worker *w, const mq_delivery *d)
{
    err_t e = {0};
    if (mq_retry(w->mq, d, d->attempt + 1, CONFIRM_TIMEOUT_MS, &e) == 0)
        return;
    LOG(LOG_WARN, "could not park a copy of a running job; returning it to the queue", "job_id",
        d->message_id, "error", e.msg);
    mq_reject(w->mq, d, 1, NULL);
}

/* Acts on d's claim; returns 1 when the job should run, 0 when the claim dealt with it
 * (NULL: the batch's claims failed, and d goes back to the queue). */
static int claimed(worker *w, const mq_delivery *d, job_claim *c, const err_t *why)
{
    if (!c) {
        LOG(LOG_WARN, "cannot claim job; returning it to the queue", "job_id", d->message_id,
            "error", why->msg);
        mq_reject(w->mq, d, 1, NULL);
        return 0;
    }
    job_claim_state state = c->state;
    if (state == JOB_CLAIM_DONE)
        resend_stored(w, d, c);
    else if (state == JOB_CLAIM_BUSY) /* a twin runs elsewhere: look again later */
        look_again_later(w, d);
    job_claim_clear(c);
    return state == JOB_CLAIM_NEW || state == JOB_CLAIM_RERUN;
}

/* Starts an asynchronous job; returns 1 when the runtime keeps d (job pending). */
static int start_async(worker *w, mq_delivery *d, const job_type_def *def, json_t *body)
{
    job_async *h = calloc(1, sizeof *h);
    if (!h) {
        mq_reject(w->mq, d, 1, NULL);
        store_job_release(w->db, d->message_id);
        return 0;
    }
    *h = (job_async){.w = w,
                     .d = d,
                     .body = json_incref(body),
                     .j = {.id = d->message_id,
                           .type = def->type,
                           .correlation_id = d->correlation_id,
                           .reply_to = d->reply_to,
                           .attempt = d->attempt + 1,
                           .body = body}};
    job_outcome o = {0};
    if (def->start(&w->env, &h->j, h, &o) == 1) {
        h->next = w->pending;
        if (w->pending)
            w->pending->prev = h;
        w->pending = h;
        by_id_add(w, h);
        w->npending++;
        metrics_inflight(w, 1);
        metrics_held(w);
        fault_reconnect(w);
        return 1;
    }
    finish_job(w, d, &h->j, &o, 0);
    json_decref(h->body);
    free(h);
    return 0;
}

void worker_job_done(worker *w, job_async *h, job_outcome *out)
{
    if (h->prev)
        h->prev->next = h->next;
    else
        w->pending = h->next;
    if (h->next)
        h->next->prev = h->prev;
    by_id_del(w, h);
    w->npending--;
    metrics_inflight(w, -1);
    metrics_held(w);
    if (!finish_job(w, h->d, &h->j, out, 1))
        mq_delivery_free(h->d);
    json_decref(h->body);
    free(h);
}

const job *worker_job_of(const job_async *h)
{
    return &h->j;
}

/* The most deliveries taken as one batch: their claims share a round trip. */
#define BATCH_MAX 64

/* Decodes and checks d and sends the handler's reads ahead (the batch's claims follow
 * them); NULL when d was answered here (bad input, shutting down) and the caller frees
 * it. */
static const job_type_def *prepare(worker *w, mq_delivery *d, json_t **body)
{
    const job_type_def *def = NULL;
    *body = NULL;
    if (stop_requested) { /* shutting down: give it back for another worker */
        mq_reject(w->mq, d, 1, NULL);
        return NULL;
    }
    if (accept_input(w, d, &def, body) < 0)
        return NULL;
    if (store_ok(w->db) && def->send_ahead) { /* its reads travel with the claims */
        job pre = {.id = d->message_id, .type = def->type, .body = *body};
        def->send_ahead(&w->env, &pre);
    }
    return def;
}

/* Runs a prepared delivery from its claim on. Returns 1 when the runtime kept d (an
 * asynchronous job is pending), 0 when the caller frees it. */
static int run(worker *w, mq_delivery *d, const job_type_def *def, json_t *body, job_claim *c,
               const err_t *why)
{
    if (!claimed(w, d, c, why))
        return 0;
    if (def->start)
        return start_async(w, d, def, body);
    job j = {.id = d->message_id,
             .type = def->type,
             .correlation_id = d->correlation_id,
             .reply_to = d->reply_to,
             .attempt = d->attempt + 1,
             .body = body};
    job_outcome o = {0};
    long long t0 = clock_ms();
    metrics_inflight(w, 1);
    def->handle(&w->env, &j, &o);
    metrics_inflight(w, -1);
    metrics_job_time(w, def->type, clock_ms() - t0);
    finish_job(w, d, &j, &o, 0);
    return 0;
}

/* 1 when an earlier delivery of the batch has ds[i]'s job id (a redelivered twin): it is
 * given back for later, as a claim held by a twin is, since this session's claim lock
 * would not keep the two apart. */
static int twin_in_batch(worker *w, mq_delivery **ds, size_t i)
{
    const char *id = ds[i]->message_id;
    for (size_t k = 0; id && *id && k < i; k++)
        if (ds[k]->message_id && strcmp(ds[k]->message_id, id) == 0) {
            look_again_later(w, ds[i]);
            return 1;
        }
    return 0;
}

/* 1 when ds[i] is a copy of a job this process still has pending (redelivered after the
 * broker connection was re-made while it ran, or its deferral came back): the session's
 * advisory lock is re-entrant, so the claim would let the copy run beside it. The copy
 * is given back for later, when the claim answers it from the job record. */
static int twin_pending(worker *w, const mq_delivery *d)
{
    if (!w->npending || !d->message_id || !*d->message_id || !is_pending(w, d->message_id))
        return 0;
    LOG(LOG_WARN, "a copy of this job is still running here; looking again later", "job_id",
        d->message_id);
    look_again_later(w, d);
    return 1;
}

/* Runs the deliveries in hand through the job path: all prepared first, then their
 * claims as one statement, sent ahead with their reads (one round trip, one transaction:
 * if any of it fails, every answer is forgotten and the claims run again alone), then
 * each run. */
static void handle_batch(worker *w, mq_delivery **ds, size_t n)
{
    const job_type_def *defs[BATCH_MAX];
    json_t *bodies[BATCH_MAX];
    const char *ids[BATCH_MAX];
    size_t at[BATCH_MAX], nids = 0;
    for (size_t i = 0; i < n; i++) {
        bodies[i] = NULL;
        defs[i] = twin_in_batch(w, ds, i) || twin_pending(w, ds[i]) ? NULL
                                                                    : prepare(w, ds[i], &bodies[i]);
        if (defs[i]) /* distinct ids: twins of the batch were given back above */
            ids[at[i] = nids++] = ds[i]->message_id;
    }
    if (nids && store_ok(w->db))
        store_job_claims_ahead(w->db, ids, nids);
    collect_commits(w); /* one round trip: the turn's commits, the claims, their reads */
    job_claim claims[BATCH_MAX];
    err_t e = {0};
    int rc = nids ? db_ready(w) : 0;
    if (rc < 0)
        err_set(&e, ERR_DB, "PostgreSQL unreachable");
    else if (nids)
        rc = store_job_claims(w->db, ids, nids, claims, &e);
    for (size_t i = 0; i < n; i++) {
        if (!defs[i] || !run(w, ds[i], defs[i], bodies[i], rc < 0 ? NULL : &claims[at[i]], &e))
            mq_delivery_free(ds[i]);
        json_decref(bodies[i]);
    }
    store_ahead_clear(w->db); /* whatever the jobs did not ask for */
    collect_commits(w);       /* what the jobs' own statements read */
}

/* ---- main loop ------------------------------------------------------------------------ */

/* One turn: let an asynchronous worker drive its I/O (queueing the commits of what
 * finished), then take the deliveries in hand: *n of them (at most max). The commits
 * are read with the batch's claims, or alone when no delivery came. */
static int poll_once(worker *w, mq_delivery **ds, size_t max, size_t *n, err_t *e)
{
    *n = 0;
    settle_confirmed(w);
    if (!w->def->poll) {
        int rc = mq_poll_event(w->mq, 500, ds, e); /* wakes for confirms to settle */
        *n = rc > 0;
        return rc;
    }
    int wait = mq_pending_deliveries(w->mq) ? 0 : 200;
    w->def->poll(&w->env, mq_is_broken(w->mq) ? -1 : mq_fd(w->mq), wait);
    int rc = 0;
    while (*n < max && (rc = mq_poll(w->mq, 0, &ds[*n], e)) > 0)
        (*n)++;
    if (!*n) /* else the batch's claims read the commits in the same round trip */
        collect_commits(w);
    return *n ? 1 : rc;
}

static int should_stop(worker *w)
{
    if (!stop_requested)
        return 0;
    if (!w->stop_at_ms)
        w->stop_at_ms = clock_ms() + w->cfg.shutdown_grace_ms;
    /* Pending jobs get the grace period; what is left is returned by closing. */
    return w->npending == 0 || clock_ms() > w->stop_at_ms;
}

static void loop(worker *w)
{
    /* One delivery at a time for a synchronous worker: a batch's claims would count an
     * attempt of each job while the first one runs. */
    size_t max = w->def->poll ? BATCH_MAX : 1;
    while (!should_stop(w)) {
        mq_delivery *ds[BATCH_MAX];
        size_t n = 0;
        err_t e = {0};
        int rc = poll_once(w, ds, max, &n, &e);
        if (n)
            handle_batch(w, ds, n);
        if (rc < 0 && mq_error_is_connection(rc)) {
            LOG(LOG_WARN, "broker connection lost; reconnecting", "error", e.msg);
            metrics_reconnect(w, "rabbitmq");
            while (!stop_requested && mq_reconnect(w->mq, 5000, &e) < 0)
                LOG(LOG_WARN, "broker still unreachable", "error", e.msg);
        }
        worker_health(w);
    }
}

int worker_main(const worker_def *def, int argc, char **argv)
{
    (void)argc;
    (void)argv;
    worker *w = NULL;
    err_t e = {0};
    if (worker_open(def, &w, &e) < 0) {
        /* One line, in the log's format, naming the problem. */
        LOG(LOG_ERROR, "cannot start", "worker", def->name, "error", e.msg);
        worker_close(w);
        return 1;
    }
    struct sigaction sa = {.sa_handler = on_signal};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    LOG(LOG_INFO, "worker started", "queue", def->queue_kind);
    if (def->init && def->init(&w->env, &e) < 0) {
        LOG(LOG_ERROR, "cannot start", "error", e.msg);
        worker_close(w);
        return 1;
    }
    loop(w);
    collect_commits(w);  /* the last turn's commits, then their replies' confirms */
    settle_all(w, 5000); /* let confirmed replies' deliveries be acked before closing */
    if (def->fini)
        def->fini(&w->env);
    LOG(LOG_INFO, "worker stopping");
    worker_close(w);
    return 0;
}
