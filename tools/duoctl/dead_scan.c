/* dead_scan.c - one pass over the dead-letter queue (taking turns with other passes),
 * each message described as a dead_entry: x-death history, the decoded body, the job
 * record, and the reason code an operator filters by.
 *
 * Key invariant: the reason is the one the worker gave. A job that ran has its error code
 * in its record; a message that never became a job is classified with the worker's own
 * checks in the worker's order (size, job id, type, msgpack, schema), so the same
 * message always gets the same code. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jobs_client.h"
#include "msg.h"
#include "ops.h"
#include "store_ops.h"

/* Copies s into out, cut to fit (names and codes here are short; a cut one still shows). */
static void copy(char *out, size_t n, const char *s)
{
    size_t len = s ? strlen(s) : 0;
    if (len >= n)
        len = n - 1;
    if (len)
        memcpy(out, s, len);
    out[len] = '\0';
}

/* deaths, replays, first queue and time from the x-death entries. */
static void read_deaths(const ops_env *o, dead_entry *x)
{
    mq_death deaths[8];
    int n = mq_delivery_deaths(x->d, deaths, 8);
    if (n > 8)
        n = 8;
    const char *dead_q = mq_dead_queue(o->mq);
    for (int i = 0; i < n; i++) {
        if (strcmp(deaths[i].queue, dead_q) == 0) {
            x->replays += deaths[i].count;
            continue;
        }
        x->deaths += deaths[i].count;
        if (!x->from_queue[0] || deaths[i].time > x->time) {
            copy(x->from_queue, sizeof x->from_queue, deaths[i].queue);
            x->time = deaths[i].time;
        }
    }
}

static void decode_body(dead_entry *x)
{
    err_t e = {0};
    msg_limits lim = {.max_bytes = 16 * 1024 * 1024};
    if (x->d->too_large)
        copy(x->body_error, sizeof x->body_error, "body not kept (too large)");
    else if (msg_decode(x->d->body, x->d->body_len, &lim, &x->body, &e) < 0)
        snprintf(x->body_error, sizeof x->body_error, "undecodable msgpack body: %.150s", e.msg);
    const json_t *st = x->body ? json_object_get(x->body, "stage_uuid") : NULL;
    copy(x->stage, sizeof x->stage, json_string_value(st));
}

/* The worker's accept_input checks, for a message that left no job record. */
static const char *classify_input(const ops_env *o, const dead_entry *x, const char *last_reason)
{
    if (strcmp(last_reason, "delivery_limit") == 0)
        return "delivery_limit";
    if (x->d->too_large || x->d->body_size > (size_t)o->cfg.max_message_bytes)
        return "message_too_large";
    if (!x->d->message_id || !*x->d->message_id)
        return "invalid_message";
    const char *kind = jobs_kind_of(x->d->type);
    if (!kind || strcmp(kind, x->kind) != 0)
        return "unknown_job_type";
    if (!x->body)
        return "invalid_message";
    char name[160];
    snprintf(name, sizeof name, "%s.job", x->d->type);
    const schema *sc = schema_get(o->schemas, name);
    err_t e = {0};
    if (!sc || schema_validate(sc, x->body, &e) < 0)
        return "schema_invalid";
    return "unknown";
}

/* The message's own facts: ids, kind, deaths, body. */
static void describe_message(ops_env *o, dead_entry *x)
{
    const mq_delivery *d = x->d;
    copy(x->job_id, sizeof x->job_id, d->message_id);
    copy(x->type, sizeof x->type, d->type);
    copy(x->kind, sizeof x->kind, d->routing_key);
    read_deaths(o, x);
    decode_body(x);
}

/* The reason code, once the job record (if any) is in x. */
static void give_reason(ops_env *o, dead_entry *x)
{
    mq_death newest;
    const char *last_reason = mq_delivery_deaths(x->d, &newest, 1) > 0 ? newest.reason : "";
    if (strcmp(last_reason, "delivery_limit") == 0)
        copy(x->reason, sizeof x->reason, "delivery_limit");
    else if (x->has_record && strcmp(x->rec.state, "done") == 0 && !x->rec.error_code[0])
        copy(x->reason, sizeof x->reason, "already_done"); /* a stale copy: the job succeeded */
    else if (x->has_record && x->rec.error_code[0])
        copy(x->reason, sizeof x->reason, x->rec.error_code);
    else
        copy(x->reason, sizeof x->reason, classify_input(o, x, last_reason));
}

/* Describes v[0..n) with one round trip for all their job records. 0 or -1 (printed). */
static int describe_batch(ops_env *o, dead_entry *v, size_t n)
{
    const char *ids[PASS_BATCH] = {0};
    store_job_view recs[PASS_BATCH];
    int found[PASS_BATCH];
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        describe_message(o, &v[i]);
        if (v[i].job_id[0])
            ids[m++] = v[i].job_id;
    }
    err_t e = {0};
    if (store_job_views_get(o->db, ids, m, recs, found, &e) < 0) {
        fprintf(stderr, "duoctl: reading job records: %s\n", e.msg);
        return -1;
    }
    for (size_t i = 0, k = 0; i < n; i++) {
        if (v[i].job_id[0]) {
            v[i].rec = recs[k]; /* owned by the entry from here */
            v[i].has_record = found[k++];
        }
        give_reason(o, &v[i]);
    }
    return 0;
}

/* Long enough for a loaded broker to start delivering; the end itself is asked of the
 * queue, not guessed from this. */
enum {
    IDLE_MS = 1000,
    TURN_WAIT_MS = 300000,   /* another pass (a long replay, a purge asking yes) */
    CONSUMER_WAIT_MS = 60000 /* a reader's messages coming back, once it is gone */
};

/* Takes what has arrived, up to PASS_BATCH messages (waiting only for the first), and
 * describes them together. 0 with p->nbuf set (0 at the end), or -1 (printed). */
static int fill(dead_pass *p, int describe_it)
{
    p->nbuf = p->pos = 0;
    err_t e = {0};
    int rc = 1;
    while (p->nbuf < PASS_BATCH && rc > 0) {
        if (p->nbuf && mq_pending_deliveries(p->o->mq) == 0 &&
            (mq_service(p->o->mq, &e) < 0 || mq_pending_deliveries(p->o->mq) == 0))
            break; /* nothing more has arrived yet: describe what is in hand */
        mq_delivery *d = NULL;
        rc = mq_reader_next(p->r, IDLE_MS, &d, &e);
        if (rc > 0) {
            dead_entry *x = &p->buf[p->nbuf++];
            memset(x, 0, sizeof *x);
            x->d = d;
            x->t = mq_ticket_of(d);
        }
    }
    if (rc < 0 || e.code) {
        fprintf(stderr, "duoctl: reading %s: %s\n", mq_dead_queue(p->o->mq), e.msg);
        return -1;
    }
    if (describe_it)
        return describe_batch(p->o, p->buf, p->nbuf);
    for (size_t i = 0; i < p->nbuf; i++) {
        dead_entry *x = &p->buf[i];
        copy(x->job_id, sizeof x->job_id, x->d->message_id);
        copy(x->type, sizeof x->type, x->d->type);
        copy(x->kind, sizeof x->kind, x->d->routing_key);
    }
    return 0;
}

int dead_pass_begin(ops_env *o, dead_pass *p)
{
    memset(p, 0, sizeof *p);
    p->o = o;
    err_t e = {0};
    p->buf = calloc(PASS_BATCH, sizeof *p->buf);
    if (!p->buf) {
        fprintf(stderr, "duoctl: out of memory\n");
        return -1;
    }
    snprintf(p->lock, sizeof p->lock, "duoctl dead pass %s", mq_dead_queue(o->mq));
    /* One pass at a time: each holds what it read, so two at once would each miss what
     * the other holds. */
    if (store_ops_lock(o->db, p->lock, TURN_WAIT_MS, &e) < 0) {
        fprintf(stderr, "duoctl: waiting for another duoctl status or dead to finish with %s: %s\n",
                mq_dead_queue(o->mq), e.msg);
        dead_pass_end(p);
        return -1;
    }
    p->locked = 1;
    /* DUO_DEAD_WINDOW (tests): a small window per consumer, so that a few hundred
     * messages take several consumers, as 100,000 do. */
    const char *w = getenv("DUO_DEAD_WINDOW");
    int window = w ? (int)strtol(w, NULL, 10) : 0;
    if (mq_reader_open(o->mq, mq_dead_queue(o->mq), MQ_KIND_DEAD, window, CONSUMER_WAIT_MS, &p->r,
                       &p->ready, &e) < 0) {
        fprintf(stderr, "duoctl: reading %s: %s\n", mq_dead_queue(o->mq), e.msg);
        dead_pass_end(p);
        return -1;
    }
    return 0;
}

int dead_pass_next(dead_pass *p, int describe_it, dead_entry *x)
{
    memset(x, 0, sizeof *x);
    if (p->pos == p->nbuf && fill(p, describe_it) < 0)
        return -1;
    if (p->pos == p->nbuf)
        return 0;
    *x = p->buf[p->pos]; /* the entry (and what it holds) is the caller's now */
    memset(&p->buf[p->pos++], 0, sizeof *x);
    return 1;
}

int dead_pass_settle(dead_pass *p, mq_ticket t, int how, int multiple)
{
    err_t e = {0};
    if (mq_reader_settle(p->r, t, how, multiple, &e) == 0)
        return 0;
    fprintf(stderr, "duoctl: settling a dead letter: %s\n", e.msg);
    return -1;
}

int dead_pass_end(dead_pass *p)
{
    int rc = 0;
    err_t e = {0};
    if (p->r && mq_reader_sync(p->r, &e) < 0) {
        fprintf(stderr, "duoctl: confirming what was settled: %s\n", e.msg);
        rc = -1;
    }
    mq_reader_free(p->r);
    p->r = NULL;
    for (size_t i = p->pos; p->buf && i < p->nbuf; i++)
        dead_entry_clear(&p->buf[i]); /* read, never handed out: it returns to P.dead */
    free(p->buf);
    p->buf = NULL;
    p->nbuf = p->pos = 0;
    if (p->o) {
        mq_close(p->o->mq); /* what was not settled returns to P.dead */
        p->o->mq = NULL;
    }
    if (p->locked && store_ops_unlock(p->o->db, p->lock, &e) < 0)
        fprintf(stderr, "duoctl: %s\n", e.msg); /* it goes with the session anyway */
    p->locked = 0;
    return rc;
}

void dead_entry_clear(dead_entry *x)
{
    mq_delivery_free(x->d);
    store_job_view_clear(&x->rec);
    json_decref(x->body);
    memset(x, 0, sizeof *x);
}

static int in_list(const char *csv, const char *v)
{
    size_t n = strlen(v);
    for (const char *p = csv; p && *p;) {
        const char *c = strchr(p, ',');
        size_t len = c ? (size_t)(c - p) : strlen(p);
        if (len == n && strncmp(p, v, n) == 0)
            return 1;
        p = c ? c + 1 : NULL;
    }
    return 0;
}

int dead_match(const dead_entry *x, const dead_filter *f)
{
    if (f->reason && !in_list(f->reason, x->reason))
        return 0;
    if (f->type && !in_list(f->type, x->type))
        return 0;
    if (f->id && strcmp(f->id, x->job_id) != 0)
        return 0;
    return !(f->since && x->time < f->since);
}

static json_t *record_json(const dead_entry *x)
{
    const store_job_view *r = &x->rec;
    json_t *j = json_pack("{s:s, s:i, s:s*, s:I, s:I}", "state", r->state, "attempts", r->attempts,
                          "error_code", r->error_code[0] ? r->error_code : NULL, "created_at",
                          (json_int_t)r->created_at, "finished_at", (json_int_t)r->finished_at);
    json_t *reply = NULL;
    msg_limits lim = {.max_bytes = 16 * 1024 * 1024};
    if (r->reply && msg_decode(r->reply, r->reply_len, &lim, &reply, NULL) == 0) {
        json_t *err = json_object_get(reply, "error");
        if (err)
            json_object_set_new(j, "error", ops_redact(err));
        json_decref(reply);
    }
    return j;
}

json_t *dead_entry_json(const dead_entry *x, int with_body)
{
    json_t *j = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:I, s:I, s:I, s:i}", "job_id", x->job_id,
                          "type", x->type, "kind", x->kind, "stage", x->stage, "reason", x->reason,
                          "from_queue", x->from_queue, "time", (json_int_t)x->time, "deaths",
                          (json_int_t)x->deaths, "replays", (json_int_t)x->replays, "attempts",
                          x->has_record ? x->rec.attempts : 0);
    if (!with_body)
        return j;
    const mq_delivery *d = x->d;
    json_object_set_new(j, "properties",
                        json_pack("{s:s*, s:s*, s:s*, s:s*, s:I}", "correlation_id",
                                  d->correlation_id, "reply_to", d->reply_to, "content_type",
                                  d->content_type, "routing_key", d->routing_key, "body_bytes",
                                  (json_int_t)d->body_size));
    if (x->body)
        json_object_set_new(j, "body", ops_redact(x->body));
    else
        json_object_set_new(j, "body_error", json_string(x->body_error));
    json_object_set_new(j, "record", x->has_record ? record_json(x) : json_null());
    return j;
}
