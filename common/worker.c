/* worker.c - the job pipeline (see worker.h). One delivery at a time; acks only after
 * COMMIT and a confirmed reply: a crash in between means a redelivery, and the claim
 * makes it a re-send of the stored reply. */
#include "worker.h"

#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

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

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int worker_idle(void *arg)
{
    worker *w = arg;
    if (!mq_is_broken(w->mq))
        mq_service(w->mq, NULL);
    if (stop_requested && !w->stop_at_ms)
        w->stop_at_ms = now_ms() + w->cfg.shutdown_grace_ms;
    return w->stop_at_ms && now_ms() > w->stop_at_ms;
}

int worker_publish(worker *w, const mq_msg *m, err_t *e)
{
    uint64_t seq = 0;
    int rc = mq_publish(w->mq, m, &seq, e);
    if (rc == 0)
        rc = mq_wait_confirm(w->mq, seq, CONFIRM_TIMEOUT_MS, e);
    return rc;
}

const char *worker_jobs_exchange(const worker *w)
{
    return mq_jobs_exchange(w->mq);
}

/* ---- replies ------------------------------------------------------------------------ */

/* Builds the reply map: job_id, job_type, status, and fields or error. Steals fields. */
static json_t *reply_build(const char *job_id, const char *job_type, const job_outcome *o)
{
    json_t *r = o->fields && !o->code ? json_incref(o->fields) : json_object();
    json_object_set_new(r, "job_id", json_string(job_id ? job_id : ""));
    json_object_set_new(r, "job_type", json_string(job_type ? job_type : "unknown"));
    if (o->code) {
        json_object_set_new(r, "status", json_string("error"));
        json_object_set_new(r, "error", json_pack("{s:s, s:s}", "code", o->code, "message",
                                                  o->message));
    } else {
        json_object_set_new(r, "status", json_string("ok"));
    }
    return r;
}

/* Publishes an encoded reply to d's reply_to (or the results exchange) and waits for the
 * broker's confirm. */
static int reply_send(worker *w, const mq_delivery *d, const char *job_type, const void *buf,
                      size_t len, err_t *e)
{
    char type[128];
    snprintf(type, sizeof type, "%s.result", job_type ? job_type : "unknown");
    mq_msg m = {.body = buf, .body_len = len, .message_id = d->message_id,
                .type = type, .content_type = "application/msgpack"};
    uint64_t seq = 0;
    int rc = mq_reply(w->mq, d, &m, &seq, e);
    if (rc == 0)
        rc = mq_wait_confirm(w->mq, seq, CONFIRM_TIMEOUT_MS, e);
    return rc;
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
    if (rc == 0 && (d->reply_to || d->message_id))
        rc = reply_send(w, d, d->type, buf, len, &e);
    free(buf);
    if (rc == 0)
        rc = mq_dead_letter(w->mq, d, code, &e);
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
static int accept_input(worker *w, const mq_delivery *d, const job_type_def **def,
                        json_t **body)
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
    if (store_reconnect(w->db, DB_RECONNECT_MS, &e) < 0) {
        LOG(LOG_ERROR, "PostgreSQL unreachable", "error", e.msg);
        return -1;
    }
    return 0;
}

/* Commits the outcome with the job record and sends the reply. */
static int commit_and_reply(worker *w, const mq_delivery *d, const job *j, job_outcome *o)
{
    err_t e = {0};
    json_t *r = reply_build(j->id, j->type, o);
    void *buf = NULL;
    size_t len = 0;
    int rc = msg_encode(r, &buf, &len, &e);
    json_decref(r);
    if (rc == 0 && !store_in_tx(w->db))
        rc = store_begin(w->db, &e);
    if (rc == 0)
        rc = store_job_finish(w->db, j->id, buf, len, o->code, &e);
    if (rc == 0)
        rc = store_commit(w->db, &e);
    if (rc < 0) {
        store_rollback(w->db);
        free(buf);
        LOG(LOG_ERROR, "could not commit job", "job_id", j->id, "error", e.msg);
        return rc;
    }
    store_job_release(w->db, j->id);
    rc = reply_send(w, d, j->type, buf, len, &e);
    free(buf);
    if (rc == 0)
        rc = o->dead_letter ? mq_dead_letter(w->mq, d, o->code, &e) : mq_ack(w->mq, d, &e);
    if (rc < 0)
        LOG(LOG_WARN, "reply or ack failed after commit; redelivery will re-send it",
            "job_id", j->id, "error", e.msg);
    return 0;
}

/* Re-sends the stored reply of a job that already committed. */
static void resend_stored(worker *w, const mq_delivery *d, const job_claim *c)
{
    err_t e = {0};
    LOG(LOG_INFO, "job already done; re-sending its reply", "job_id", d->message_id);
    metrics_job(w, d->type, "duplicate");
    int rc = reply_send(w, d, d->type, c->reply, c->reply_len, &e);
    if (rc == 0)
        rc = mq_ack(w->mq, d, &e);
    if (rc < 0)
        LOG(LOG_WARN, "could not re-send stored reply", "job_id", d->message_id, "error", e.msg);
}

/* A transient failure: retry after a delay, or give up once attempts are exhausted. */
static void retry_or_give_up(worker *w, const mq_delivery *d, const job *j, job_outcome *o)
{
    store_rollback(w->db);
    err_t e = {0};
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
    if (commit_and_reply(w, d, j, o) < 0)
        mq_reject(w->mq, d, 1, &e);
}

static void run_job(worker *w, const mq_delivery *d, const job_type_def *def, json_t *body)
{
    err_t e = {0};
    job_claim claim;
    if (db_ready(w) < 0 || store_job_claim(w->db, d->message_id, def->type, &claim, &e) < 0) {
        LOG(LOG_WARN, "cannot claim job; returning it to the queue", "job_id", d->message_id,
            "error", e.msg);
        mq_reject(w->mq, d, 1, NULL);
        return;
    }
    if (claim.state == JOB_CLAIM_DONE) {
        resend_stored(w, d, &claim);
        job_claim_clear(&claim);
        return;
    }
    if (claim.state == JOB_CLAIM_BUSY) {
        /* A twin delivery is running elsewhere; look again after a delay. */
        mq_retry(w->mq, d, d->attempt + 1, CONFIRM_TIMEOUT_MS, NULL);
        return;
    }
    job j = {.id = d->message_id, .type = def->type, .correlation_id = d->correlation_id,
             .attempt = d->attempt + 1, .body = body};
    job_outcome o = {0};
    worker_env env = {.cfg = &w->cfg, .db = w->db, .keys = w->keys, .w = w};
    long long t0 = now_ms();
    def->handle(&env, &j, &o);
    metrics_job_time(w, def->type, now_ms() - t0);
    if (o.retry) {
        retry_or_give_up(w, d, &j, &o);
    } else {
        metrics_job(w, def->type, o.code ? o.code : "ok");
        if (commit_and_reply(w, d, &j, &o) < 0) {
            store_job_release(w->db, j.id);
            mq_reject(w->mq, d, 1, NULL);
        }
    }
    json_decref(o.fields);
    job_claim_clear(&claim);
}

static void handle_delivery(worker *w, const mq_delivery *d)
{
    const job_type_def *def = NULL;
    json_t *body = NULL;
    if (accept_input(w, d, &def, &body) < 0)
        return;
    metrics_inflight(w, 1);
    run_job(w, d, def, body);
    metrics_inflight(w, -1);
    json_decref(body);
}

/* ---- main loop ------------------------------------------------------------------------ */

static void loop(worker *w)
{
    while (!stop_requested) {
        mq_delivery *d = NULL;
        err_t e = {0};
        int rc = mq_poll(w->mq, 500, &d, &e);
        if (rc > 0) {
            handle_delivery(w, d);
            mq_delivery_free(d);
        } else if (rc < 0 && mq_error_is_connection(rc)) {
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
        fprintf(stderr, "duo-%s: %s\n", def->name, e.msg);
        LOG(LOG_ERROR, "cannot start", "error", e.msg);
        worker_close(w);
        return 1;
    }
    struct sigaction sa = {.sa_handler = on_signal};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    LOG(LOG_INFO, "worker started", "queue", def->queue_kind);
    loop(w);
    LOG(LOG_INFO, "worker stopping");
    worker_close(w);
    return 0;
}
