/* mq_frames.c - reads frames and dispatches them: deliveries are assembled and queued,
 * publisher acks/nacks update the confirm records, close methods break the connection.
 *
 * Key invariant: a frame's data is copied out before the library's channel buffers are
 * released, and a complete delivery is always queued, whoever was pumping (mq_poll,
 * mq_service, mq_wait_confirm); only mq_poll takes deliveries off the queue. */
#include <limits.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

#include <amqp.h>
#include <amqp_framing.h>

#include "log.h"
#include "mq_int.h"

/* ---- confirm records (sorted by seq; acked ones removed) ---- */

enum { MAX_FAILED_RECS = 65536 };

int mq_seq_reserve(mq_conn *c)
{
    if (c->nrecs < c->caprecs)
        return 0;
    size_t cap = c->caprecs ? c->caprecs * 2 : 64;
    seq_rec *r = realloc(c->recs, cap * sizeof *r);
    if (!r)
        return -1;
    c->recs = r;
    c->caprecs = cap;
    return 0;
}

void mq_seq_add(mq_conn *c, uint64_t seq)
{
    /* Failed records are kept so a caller keeps hearing "lost"; past the cap the oldest
     * goes, and every seq at or below it is reported lost from then on (never confirmed:
     * the worst case is a redelivery answered from the job record, not an early ack). */
    if (c->nrecs >= MAX_FAILED_RECS && c->recs[0].failed) {
        if (c->recs[0].seq > c->evicted_failed)
            c->evicted_failed = c->recs[0].seq;
        memmove(c->recs, c->recs + 1, (c->nrecs - 1) * sizeof *c->recs);
        c->nrecs--;
    }
    c->recs[c->nrecs].seq = seq;
    c->recs[c->nrecs++].failed = 0;
}

static size_t rec_lower_bound(const mq_conn *c, uint64_t seq)
{
    size_t lo = 0, hi = c->nrecs;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (c->recs[mid].seq < seq)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* Acks (nack = 0) remove the covered pending records; nacks mark them failed. */
static void confirm(mq_conn *c, uint64_t tag, int multiple, int nack)
{
    c->confirm_frames++;
    uint64_t hi = c->seq_base + tag;
    size_t from = multiple ? rec_lower_bound(c, c->seq_base + 1) : rec_lower_bound(c, hi);
    size_t out = from;
    for (size_t i = from; i < c->nrecs; i++) {
        seq_rec r = c->recs[i];
        int covered = r.seq <= hi && (multiple || r.seq == hi) && !r.failed;
        if (covered && nack)
            r.failed = 1;
        if (!covered || nack)
            c->recs[out++] = r;
    }
    c->nrecs = out;
}

void mq_seq_fail_pending(mq_conn *c)
{
    c->confirm_frames++; /* decided too: a waiter must look again */
    for (size_t i = 0; i < c->nrecs; i++)
        c->recs[i].failed = 1;
}

int mq_confirmed(const mq_conn *c, uint64_t seq)
{
    if (!c || seq == 0 || seq > c->seq_base + c->chan_seq)
        return -1;
    size_t i = rec_lower_bound(c, seq);
    if (i < c->nrecs && c->recs[i].seq == seq)
        return c->recs[i].failed ? -1 : 0;
    return seq <= c->evicted_failed ? -1 : 1;
}

/* ---- delivery queue ---- */

void mq_delivery_free(mq_delivery *d)
{
    if (!d)
        return;
    empty_amqp_pool(&d->priv->pool);
    free(d->priv);
    free(d);
}

static void queue_push(mq_conn *c, mq_delivery *d)
{
    d->priv->next = NULL;
    if (c->qtail)
        c->qtail->priv->next = d;
    else
        c->qhead = d;
    c->qtail = d;
    c->qlen++;
}

static mq_delivery *queue_pop(mq_conn *c)
{
    mq_delivery *d = c->qhead;
    if (d) {
        c->qhead = d->priv->next;
        if (!c->qhead)
            c->qtail = NULL;
        c->qlen--;
        d->priv->next = NULL;
    }
    return d;
}

void mq_queue_clear(mq_conn *c)
{
    mq_delivery *d;
    while ((d = queue_pop(c)))
        mq_delivery_free(d);
    mq_delivery_free(c->asm_d);
    c->asm_d = NULL;
}

size_t mq_pending_deliveries(const mq_conn *c)
{
    return c ? c->qlen : 0;
}

/* ---- assembling one delivery ---- */

static char *pool_str(amqp_pool_t *p, amqp_bytes_t b)
{
    char *s = amqp_pool_alloc(p, b.len + 1);
    if (s) {
        if (b.len)
            memcpy(s, b.bytes, b.len);
        s[b.len] = '\0';
    }
    return s;
}

static int start_delivery(mq_conn *c, const amqp_basic_deliver_t *m, err_t *e)
{
    mq_delivery_free(c->asm_d); /* a previous one cut short: protocol error, drop it */
    c->asm_d = NULL;
    mq_delivery *d = calloc(1, sizeof *d);
    struct mq_delivery_priv *p = calloc(1, sizeof *p);
    if (!d || !p) {
        free(d);
        free(p);
        return err_set(e, ERR_NOMEM, "out of memory for a delivery");
    }
    d->priv = p;
    /* 1 KiB pages: a job's strings and body usually fit one, and a page that size is
     * recycled by malloc's per-thread cache, where a 4 KiB one was not (a larger body
     * gets a block of its own from the pool). */
    init_amqp_pool(&p->pool, 1024);
    p->gen = c->gen;
    d->kind = pool_str(&p->pool, m->consumer_tag);
    d->routing_key = pool_str(&p->pool, m->routing_key);
    d->delivery_tag = m->delivery_tag;
    d->redelivered = m->redelivered ? 1 : 0;
    c->asm_d = d;
    c->asm_have_header = 0;
    if (!d->kind || !d->routing_key)
        return err_set(e, ERR_NOMEM, "out of memory for a delivery");
    return 0;
}

static int header_attempt(const amqp_table_t *h)
{
    for (int i = 0; i < h->num_entries; i++) {
        const amqp_table_entry_t *t = &h->entries[i];
        if (t->key.len != 9 || memcmp(t->key.bytes, "x-attempt", 9) != 0)
            continue;
        int64_t v;
        switch (t->value.kind) {
        case AMQP_FIELD_KIND_I8:
            v = t->value.value.i8;
            break;
        case AMQP_FIELD_KIND_U8:
            v = t->value.value.u8;
            break;
        case AMQP_FIELD_KIND_I16:
            v = t->value.value.i16;
            break;
        case AMQP_FIELD_KIND_U16:
            v = t->value.value.u16;
            break;
        case AMQP_FIELD_KIND_I32:
            v = t->value.value.i32;
            break;
        case AMQP_FIELD_KIND_U32:
            v = t->value.value.u32;
            break;
        case AMQP_FIELD_KIND_I64:
            v = t->value.value.i64;
            break;
        case AMQP_FIELD_KIND_U64:
            v = t->value.value.u64 > INT_MAX ? INT_MAX : (int64_t)t->value.value.u64;
            break;
        default:
            return 0;
        }
        return v < 0 ? 0 : (v > INT_MAX ? INT_MAX : (int)v);
    }
    return 0;
}

/* Deep copy of the properties into the delivery's pool. */
static int copy_props(struct mq_delivery_priv *p, const amqp_basic_properties_t *src)
{
    amqp_basic_properties_t *dst = &p->props;
    *dst = *src;
    /* Fields whose flag is clear are uninitialised in decoded properties. */
    amqp_bytes_t *f[] = {&dst->content_type, &dst->content_encoding, &dst->correlation_id,
                         &dst->reply_to,     &dst->expiration,       &dst->message_id,
                         &dst->type,         &dst->user_id,          &dst->app_id,
                         &dst->cluster_id};
    const amqp_flags_t fl[] = {AMQP_BASIC_CONTENT_TYPE_FLAG,   AMQP_BASIC_CONTENT_ENCODING_FLAG,
                               AMQP_BASIC_CORRELATION_ID_FLAG, AMQP_BASIC_REPLY_TO_FLAG,
                               AMQP_BASIC_EXPIRATION_FLAG,     AMQP_BASIC_MESSAGE_ID_FLAG,
                               AMQP_BASIC_TYPE_FLAG,           AMQP_BASIC_USER_ID_FLAG,
                               AMQP_BASIC_APP_ID_FLAG,         AMQP_BASIC_CLUSTER_ID_FLAG};
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++) {
        if (!(src->_flags & fl[i])) {
            *f[i] = amqp_empty_bytes;
            continue;
        }
        if (f[i]->len == 0)
            continue;
        void *b = amqp_pool_alloc(&p->pool, f[i]->len);
        if (!b)
            return ERR_NOMEM;
        memcpy(b, f[i]->bytes, f[i]->len);
        f[i]->bytes = b;
    }
    dst->headers = amqp_empty_table;
    if ((src->_flags & AMQP_BASIC_HEADERS_FLAG) &&
        amqp_table_clone(&src->headers, &dst->headers, &p->pool) != AMQP_STATUS_OK)
        return ERR_NOMEM;
    return 0;
}

static const char *prop_str(struct mq_delivery_priv *p, amqp_flags_t flag, amqp_bytes_t b)
{
    return (p->props._flags & flag) ? pool_str(&p->pool, b) : NULL;
}

static void complete_delivery(mq_conn *c)
{
    queue_push(c, c->asm_d);
    c->asm_d = NULL;
}

static int on_header(mq_conn *c, const amqp_frame_t *f, err_t *e)
{
    mq_delivery *d = c->asm_d;
    struct mq_delivery_priv *p = d->priv;
    const amqp_basic_properties_t *src = f->payload.properties.decoded;
    if (copy_props(p, src) < 0)
        return err_set(e, ERR_NOMEM, "out of memory for a delivery");
    amqp_basic_properties_t *pr = &p->props;
    d->message_id = prop_str(p, AMQP_BASIC_MESSAGE_ID_FLAG, pr->message_id);
    d->type = prop_str(p, AMQP_BASIC_TYPE_FLAG, pr->type);
    d->reply_to = prop_str(p, AMQP_BASIC_REPLY_TO_FLAG, pr->reply_to);
    d->correlation_id = prop_str(p, AMQP_BASIC_CORRELATION_ID_FLAG, pr->correlation_id);
    d->content_type = prop_str(p, AMQP_BASIC_CONTENT_TYPE_FLAG, pr->content_type);
    d->user_id = prop_str(p, AMQP_BASIC_USER_ID_FLAG, pr->user_id);
    d->attempt = (pr->_flags & AMQP_BASIC_HEADERS_FLAG) ? header_attempt(&pr->headers) : 0;
    /* Last dead-lettered from P.dead means an operator replayed it: it starts over. */
    char last[128];
    if (d->attempt > 0 && mq_last_death_queue(d, last, sizeof last) && strcmp(last, c->dead_q) == 0)
        d->attempt = 0;
    uint64_t size = f->payload.properties.body_size;
    d->body_size = (size_t)size;
    c->asm_have_header = 1;
    if (size > c->max_body) {
        d->too_large = 1;
    } else if (size > 0) {
        d->body = amqp_pool_alloc(&p->pool, (size_t)size);
        if (!d->body)
            return err_set(e, ERR_NOMEM, "out of memory for a %zu-byte body", (size_t)size);
        p->cap = (size_t)size;
    }
    if (size == 0)
        complete_delivery(c);
    return 0;
}

static void on_body(mq_conn *c, const amqp_frame_t *f)
{
    mq_delivery *d = c->asm_d;
    amqp_bytes_t b = f->payload.body_fragment;
    if (!d->too_large) {
        size_t n = b.len;
        if (n > d->priv->cap - d->body_len)
            n = d->priv->cap - d->body_len;
        memcpy((unsigned char *)d->body + d->body_len, b.bytes, n);
        d->body_len += n;
    }
    d->priv->received += b.len;
    if (d->priv->received >= d->body_size)
        complete_delivery(c);
}

/* ---- dispatch ---- */

static int on_close(mq_conn *c, const amqp_frame_t *f, err_t *e)
{
    int rc = mq_err_method(e, &f->payload.method, "AMQP");
    if (f->payload.method.id == AMQP_CONNECTION_CLOSE_METHOD) {
        amqp_connection_close_ok_t ok = {0};
        amqp_send_method(c->st, 0, AMQP_CONNECTION_CLOSE_OK_METHOD, &ok);
    }
    LOG(LOG_WARN, "amqp closed by broker", "error", e ? e->msg : "");
    return mq_broken(c, e, rc);
}

/* The answer to a basic.get sent without waiting (mq_reader): a delivery like a
 * consumer's, queued once complete. */
static int on_get_ok(mq_conn *c, const amqp_basic_get_ok_t *ok, err_t *e)
{
    amqp_basic_deliver_t dv = {.consumer_tag = amqp_cstring_bytes(c->get_kind),
                               .delivery_tag = ok->delivery_tag,
                               .redelivered = ok->redelivered,
                               .exchange = ok->exchange,
                               .routing_key = ok->routing_key};
    c->get_reply = 1;
    return start_delivery(c, &dv, e);
}

static int on_method(mq_conn *c, const amqp_frame_t *f, err_t *e)
{
    const amqp_method_t *m = &f->payload.method;
    switch (m->id) {
    case AMQP_BASIC_DELIVER_METHOD:
        return f->channel == CH_CONSUME ? start_delivery(c, m->decoded, e) : 0;
    case AMQP_BASIC_GET_OK_METHOD:
        return f->channel == CH_CONSUME ? on_get_ok(c, m->decoded, e) : 0;
    case AMQP_BASIC_GET_EMPTY_METHOD:
        if (f->channel == CH_CONSUME)
            c->get_reply = 2;
        return 0;
    case AMQP_BASIC_ACK_METHOD:
        if (f->channel == CH_PUBLISH) {
            const amqp_basic_ack_t *a = m->decoded;
            confirm(c, a->delivery_tag, a->multiple, 0);
        }
        return 0;
    case AMQP_BASIC_NACK_METHOD:
        if (f->channel == CH_PUBLISH) {
            const amqp_basic_nack_t *n = m->decoded;
            confirm(c, n->delivery_tag, n->multiple, 1);
        }
        return 0;
    case AMQP_CHANNEL_CLOSE_METHOD:
    case AMQP_CONNECTION_CLOSE_METHOD:
        return on_close(c, f, e);
    case AMQP_BASIC_CANCEL_METHOD:
        LOG(LOG_WARN, "amqp consumer cancelled by broker");
        return mq_broken(c, e, err_set(e, ERR_MQ, "consumer cancelled by broker"));
    case AMQP_CONNECTION_BLOCKED_METHOD:
        LOG(LOG_WARN, "amqp connection blocked by broker (resource alarm)");
        return 0;
    default:
        return 0; /* basic.return (unroutable reply) and others: nothing to do */
    }
}

static int dispatch(mq_conn *c, const amqp_frame_t *f, err_t *e)
{
    if (f->frame_type == AMQP_FRAME_METHOD)
        return on_method(c, f, e);
    /* Content frames on other channels belong to basic.return: ignored. */
    if (f->channel != CH_CONSUME || !c->asm_d)
        return 0;
    if (f->frame_type == AMQP_FRAME_HEADER && !c->asm_have_header)
        return on_header(c, f, e);
    if (f->frame_type == AMQP_FRAME_BODY && c->asm_have_header)
        on_body(c, f);
    return 0;
}

int mq_pump_once(mq_conn *c, int timeout_ms, err_t *e)
{
    if (mq_is_broken(c))
        return err_set(e, ERR_MQ, "AMQP connection is broken");
    struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
    amqp_frame_t f;
    int rc = amqp_simple_wait_frame_noblock(c->st, &f, &tv);
    if (rc == AMQP_STATUS_TIMEOUT)
        return 0;
    if (rc != AMQP_STATUS_OK) {
        rc = mq_err_status(e, rc, "receiving from AMQP broker");
        return mq_broken(c, e, rc == ERR_TIMEOUT ? ERR_MQ : rc);
    }
    rc = dispatch(c, &f, e);
    amqp_maybe_release_buffers_on_channel(c->st, f.channel);
    return rc < 0 ? rc : 1;
}

static int time_left(int64_t deadline)
{
    int64_t left = deadline - clock_ms();
    return left <= 0 ? 0 : (left > INT_MAX ? INT_MAX : (int)left);
}

static int poll_for(mq_conn *c, int timeout_ms, int wake_on_confirm, mq_delivery **out, err_t *e)
{
    *out = NULL;
    if (mq_is_broken(c)) /* queued deliveries of a broken connection cannot be acked */
        return err_set(e, ERR_MQ, "AMQP connection is broken");
    int64_t deadline = clock_ms() + (timeout_ms > 0 ? timeout_ms : 0);
    unsigned long confirms = c->confirm_frames;
    for (;;) {
        if (c->qhead) {
            *out = queue_pop(c);
            return 1;
        }
        if (wake_on_confirm && c->confirm_frames != confirms)
            return 0; /* the caller may settle what was confirmed */
        int rc = mq_pump_once(c, time_left(deadline), e);
        if (rc <= 0)
            return rc;
    }
}

unsigned long mq_confirm_count(const mq_conn *c)
{
    return c ? c->confirm_frames : 0;
}

int mq_poll(mq_conn *c, int timeout_ms, mq_delivery **out, err_t *e)
{
    return poll_for(c, timeout_ms, 0, out, e);
}

int mq_poll_event(mq_conn *c, int timeout_ms, mq_delivery **out, err_t *e)
{
    return poll_for(c, timeout_ms, 1, out, e);
}

int mq_service(mq_conn *c, err_t *e)
{
    int rc;
    while ((rc = mq_pump_once(c, 0, e)) > 0)
        ;
    return rc;
}

int mq_wait_confirm(mq_conn *c, uint64_t seq, int timeout_ms, err_t *e)
{
    int64_t deadline = clock_ms() + (timeout_ms > 0 ? timeout_ms : 0);
    for (;;) {
        int st = mq_confirmed(c, seq);
        if (st > 0)
            return 0;
        if (st < 0)
            return err_set(e, ERR_MQ, "publish %llu was nacked or lost", (unsigned long long)seq);
        int left = time_left(deadline);
        int rc = mq_pump_once(c, left, e);
        if (rc < 0)
            return rc;
        if (rc == 0 && left == 0)
            return err_set(e, ERR_TIMEOUT, "no publisher confirm for %llu within %d ms",
                           (unsigned long long)seq, timeout_ms);
    }
}

/* ---- basic.get ---- */

/* Removes d from the delivery FIFO (it is there: complete_delivery queued it). */
static void queue_remove(mq_conn *c, mq_delivery *d)
{
    mq_delivery *prev = NULL;
    for (mq_delivery *x = c->qhead; x; prev = x, x = x->priv->next) {
        if (x != d)
            continue;
        if (prev)
            prev->priv->next = x->priv->next;
        else
            c->qhead = x->priv->next;
        if (c->qtail == x)
            c->qtail = prev;
        c->qlen--;
        x->priv->next = NULL;
        return;
    }
}

int mq_get(mq_conn *c, const char *name, const char *kind, mq_delivery **out, uint32_t *remaining,
           err_t *e)
{
    *out = NULL;
    if (mq_is_broken(c))
        return err_set(e, ERR_MQ, "AMQP connection is broken");
    amqp_rpc_reply_t r = amqp_basic_get(c->st, CH_CONSUME, amqp_cstring_bytes(name), 0);
    int rc = mq_err_reply(e, r, "basic.get");
    if (rc < 0)
        return mq_broken(c, e, err_wrap(e, rc, "%s", name));
    if (r.reply.id == AMQP_BASIC_GET_EMPTY_METHOD)
        return 0;
    if (r.reply.id != AMQP_BASIC_GET_OK_METHOD)
        return mq_broken(c, e, mq_err_method(e, &r.reply, "basic.get"));
    const amqp_basic_get_ok_t *ok = r.reply.decoded;
    if (remaining)
        *remaining = ok->message_count;
    amqp_basic_deliver_t dv = {.consumer_tag = amqp_cstring_bytes(kind),
                               .delivery_tag = ok->delivery_tag,
                               .redelivered = ok->redelivered,
                               .exchange = ok->exchange,
                               .routing_key = ok->routing_key};
    rc = start_delivery(c, &dv, e);
    mq_delivery *d = c->asm_d;
    int64_t deadline = clock_ms() + c->rpc_timeout_ms;
    while (rc == 0 && c->asm_d == d) {
        rc = mq_pump_once(c, time_left(deadline), e);
        if (rc == 0 && time_left(deadline) == 0)
            rc = mq_broken(c, e, err_set(e, ERR_TIMEOUT, "basic.get: message content timed out"));
        else if (rc > 0)
            rc = 0;
    }
    if (rc < 0)
        return rc;
    queue_remove(c, d);
    *out = d;
    return 1;
}

int mq_broken(mq_conn *c, err_t *e, int code)
{
    c->broken = 1;
    mq_seq_fail_pending(c); /* no confirm can arrive on a broken connection */
    (void)e;
    return code;
}

int mq_is_broken(const mq_conn *c)
{
    return !c || !c->st || c->broken;
}
