/* mq_publish.c - publishing on the confirm channel, replies, acks, rejects, retries.
 *
 * Key invariant: an ack or reject is only ever sent for a delivery of the current
 * connection generation (a delivery tag from an earlier connection would name some other
 * message, or close the channel); a retried delivery is acked only after its copy in the
 * retry queue was confirmed by the broker. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <amqp.h>
#include <amqp_framing.h>

#include "log.h"
#include "mq_int.h"

static int check_live(const mq_conn *c, err_t *e)
{
    if (mq_is_broken(c))
        return err_set(e, ERR_MQ, "AMQP connection is broken");
    return 0;
}

static amqp_bytes_t bytes_or_empty(const void *p, size_t n)
{
    amqp_bytes_t b = {n, (void *)p};
    return p ? b : amqp_empty_bytes;
}

/* Sends one persistent message on the confirm channel and records its sequence. */
static int publish_props(mq_conn *c, const char *exchange, const char *rk,
                         amqp_basic_properties_t *props, amqp_bytes_t body, uint64_t *seq, err_t *e)
{
    int rc = check_live(c, e);
    if (rc < 0)
        return rc;
    props->_flags |= AMQP_BASIC_DELIVERY_MODE_FLAG;
    props->delivery_mode = AMQP_DELIVERY_PERSISTENT;
    if (mq_seq_reserve(c) < 0) /* unrecorded, it would read as confirmed: do not send it */
        return err_set(e, ERR_NOMEM, "out of memory recording a publish");
    rc = amqp_basic_publish(c->st, CH_PUBLISH, amqp_cstring_bytes(exchange ? exchange : ""),
                            amqp_cstring_bytes(rk), 0, 0, props, body);
    if (rc != AMQP_STATUS_OK)
        return mq_broken(c, e, mq_err_status(e, rc, "publishing"));
    c->chan_seq++;
    mq_seq_add(c, c->seq_base + c->chan_seq);
    if (seq)
        *seq = c->seq_base + c->chan_seq;
    return 0;
}

static void set_str(amqp_basic_properties_t *p, amqp_flags_t flag, amqp_bytes_t *f, const char *v)
{
    if (v) {
        p->_flags |= flag;
        *f = amqp_cstring_bytes(v);
    }
}

static int publish_to(mq_conn *c, const char *exchange, const char *rk, const mq_msg *m,
                      uint64_t *seq, err_t *e)
{
    if (!rk)
        return err_set(e, ERR_INVAL, "publish without a routing key");
    amqp_basic_properties_t p;
    memset(&p, 0, sizeof p);
    set_str(&p, AMQP_BASIC_MESSAGE_ID_FLAG, &p.message_id, m->message_id);
    set_str(&p, AMQP_BASIC_CORRELATION_ID_FLAG, &p.correlation_id, m->correlation_id);
    set_str(&p, AMQP_BASIC_TYPE_FLAG, &p.type, m->type);
    set_str(&p, AMQP_BASIC_CONTENT_TYPE_FLAG, &p.content_type, m->content_type);
    set_str(&p, AMQP_BASIC_REPLY_TO_FLAG, &p.reply_to, m->reply_to);
    set_str(&p, AMQP_BASIC_USER_ID_FLAG, &p.user_id, m->user_id);
    amqp_table_entry_t h;
    if (m->attempt > 0) {
        h.key = amqp_cstring_bytes("x-attempt");
        h.value.kind = AMQP_FIELD_KIND_I32;
        h.value.value.i32 = m->attempt;
        p._flags |= AMQP_BASIC_HEADERS_FLAG;
        p.headers.num_entries = 1;
        p.headers.entries = &h;
    }
    return publish_props(c, exchange, rk, &p, bytes_or_empty(m->body, m->body_len), seq, e);
}

int mq_publish(mq_conn *c, const mq_msg *m, uint64_t *seq, err_t *e)
{
    return publish_to(c, m->exchange, m->routing_key, m, seq, e);
}

int mq_reply(mq_conn *c, const mq_delivery *d, const mq_msg *m, uint64_t *seq, err_t *e)
{
    mq_msg r = *m;
    if (!r.correlation_id)
        r.correlation_id = d->correlation_id ? d->correlation_id : d->message_id;
    if (d->reply_to && *d->reply_to)
        return publish_to(c, "", d->reply_to, &r, seq, e);
    const char *rk = m->type ? m->type : (d->type ? d->type : d->kind);
    return publish_to(c, c->results_ex, rk, &r, seq, e);
}

static int check_delivery(const mq_conn *c, const mq_delivery *d, err_t *e)
{
    int rc = check_live(c, e);
    if (rc == 0 && d->priv->gen != c->gen)
        rc = err_set(e, ERR_MQ, "delivery %llu is from an earlier AMQP connection",
                     (unsigned long long)d->delivery_tag);
    return rc;
}

int mq_ack(mq_conn *c, const mq_delivery *d, err_t *e)
{
    int rc = check_delivery(c, d, e);
    if (rc < 0)
        return rc;
    rc = amqp_basic_ack(c->st, CH_CONSUME, d->delivery_tag, 0);
    return rc == AMQP_STATUS_OK ? 0 : mq_broken(c, e, mq_err_status(e, rc, "acking"));
}

int mq_reject(mq_conn *c, const mq_delivery *d, int requeue, err_t *e)
{
    int rc = check_delivery(c, d, e);
    if (rc < 0)
        return rc;
    rc = amqp_basic_reject(c->st, CH_CONSUME, d->delivery_tag, requeue ? 1 : 0);
    return rc == AMQP_STATUS_OK ? 0 : mq_broken(c, e, mq_err_status(e, rc, "rejecting"));
}

mq_ticket mq_ticket_of(const mq_delivery *d)
{
    return (mq_ticket){.tag = d->delivery_tag, .gen = d->priv->gen};
}

int mq_settle(mq_conn *c, mq_ticket t, int how, err_t *e)
{
    int rc = check_live(c, e);
    if (rc == 0 && t.gen != c->gen)
        rc = err_set(e, ERR_MQ, "delivery %llu is from an earlier AMQP connection",
                     (unsigned long long)t.tag);
    if (rc < 0)
        return rc;
    rc = how == 0 ? amqp_basic_ack(c->st, CH_CONSUME, t.tag, 0)
                  : amqp_basic_reject(c->st, CH_CONSUME, t.tag, how > 0 ? 1 : 0);
    return rc == AMQP_STATUS_OK ? 0 : mq_broken(c, e, mq_err_status(e, rc, "settling"));
}

int mq_dead_letter(mq_conn *c, const mq_delivery *d, const char *reason, err_t *e)
{
    LOG(LOG_WARN, "dead-lettering message", "kind", d->kind, "message_id", d->message_id, "reason",
        reason);
    return mq_reject(c, d, 0, e);
}

/* Headers of d with x-attempt replaced; entries array is malloc'ed (caller frees). */
static int headers_with_attempt(const amqp_table_t *src, int attempt, amqp_table_t *out)
{
    amqp_table_entry_t *ent = malloc(((size_t)src->num_entries + 1) * sizeof *ent);
    if (!ent)
        return ERR_NOMEM;
    int n = 0;
    for (int i = 0; i < src->num_entries; i++) {
        const amqp_table_entry_t *t = &src->entries[i];
        if (!(t->key.len == 9 && memcmp(t->key.bytes, "x-attempt", 9) == 0))
            ent[n++] = *t;
    }
    ent[n].key = amqp_cstring_bytes("x-attempt");
    ent[n].value.kind = AMQP_FIELD_KIND_I32;
    ent[n++].value.value.i32 = attempt;
    out->num_entries = n;
    out->entries = ent;
    return 0;
}

static int declared_kind(const mq_conn *c, const char *kind)
{
    for (int i = 0; c->all_kinds[i]; i++)
        if (strcmp(c->all_kinds[i], kind) == 0)
            return 1;
    return 0;
}

static int retry_to(mq_conn *c, const mq_delivery *d, int attempt, int tier, int timeout_ms,
                    err_t *e);

int mq_retry(mq_conn *c, const mq_delivery *d, int attempt, int timeout_ms, err_t *e)
{
    return retry_to(c, d, attempt, attempt <= 1 ? 0 : (attempt == 2 ? 1 : 2), timeout_ms, e);
}

int mq_retry_in(mq_conn *c, const mq_delivery *d, int attempt, long long delay_ms, int timeout_ms,
                err_t *e)
{
    int tier = 0;
    for (int i = 1; i < 3; i++)
        if (c->retry_ms[i] <= delay_ms)
            tier = i;
    return retry_to(c, d, attempt, tier, timeout_ms, e);
}

static int retry_to(mq_conn *c, const mq_delivery *d, int attempt, int tier, int timeout_ms,
                    err_t *e)
{
    int rc = check_delivery(c, d, e);
    if (rc < 0)
        return rc;
    if (d->too_large)
        return err_set(e, ERR_INVAL, "cannot retry a message whose body was not kept");
    if (!declared_kind(c, d->kind)) /* its retry queue does not exist: the copy would vanish */
        return err_set(e, ERR_INVAL, "no retry queues for kind '%.40s'", d->kind);
    char q[256];
    if (mq_retry_queue_name(c, d->kind, tier, q, sizeof q) < 0)
        return err_set(e, ERR_INVAL, "retry queue name too long");
    amqp_basic_properties_t p = d->priv->props;
    /* The publisher's user_id names another user than ours: the broker would refuse the
     * copy. The job's record kept it at the first attempt. */
    p._flags &= ~(amqp_flags_t)AMQP_BASIC_USER_ID_FLAG;
    const amqp_table_t empty = amqp_empty_table;
    const amqp_table_t *src = (p._flags & AMQP_BASIC_HEADERS_FLAG) ? &p.headers : &empty;
    if (headers_with_attempt(src, attempt, &p.headers) < 0)
        return err_set(e, ERR_NOMEM, "out of memory");
    p._flags |= AMQP_BASIC_HEADERS_FLAG;
    uint64_t seq = 0;
    rc = publish_props(c, "", q, &p, bytes_or_empty(d->body, d->body_len), &seq, e);
    free(p.headers.entries);
    if (rc == 0)
        rc = mq_wait_confirm(c, seq, timeout_ms, e);
    if (rc == 0)
        rc = mq_ack(c, d, e);
    return rc < 0 ? err_wrap(e, rc, "retrying via %s", q) : 0;
}
