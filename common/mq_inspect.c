/* mq_inspect.c - what an operator's tool reads from the broker without the management
 * plugin: queue depths and consumers by passive declare, and the x-death history of a
 * dead-lettered message.
 *
 * Key invariant: inspecting never changes a queue. A passive declare of a missing queue
 * makes the broker close the admin channel (404); it is reopened here, so the connection
 * stays usable and the consume/publish channels are untouched. */
#include <stdio.h>
#include <string.h>

#include <amqp.h>
#include <amqp_framing.h>

#include "mq_int.h"

/* The broker closed CH_ADMIN (a 404 on a passive declare): acknowledge and reopen it. */
static int reopen_admin(mq_conn *c, err_t *e)
{
    amqp_channel_close_ok_t ok = {0};
    int rc = amqp_send_method(c->st, CH_ADMIN, AMQP_CHANNEL_CLOSE_OK_METHOD, &ok);
    if (rc != AMQP_STATUS_OK)
        return mq_broken(c, e, mq_err_status(e, rc, "closing admin channel"));
    amqp_channel_open(c->st, CH_ADMIN);
    rc = mq_err_reply(e, amqp_get_rpc_reply(c->st), "reopening admin channel");
    return rc < 0 ? mq_broken(c, e, rc) : 0;
}

static int is_not_found(amqp_rpc_reply_t r)
{
    if (r.reply_type != AMQP_RESPONSE_SERVER_EXCEPTION || r.reply.id != AMQP_CHANNEL_CLOSE_METHOD)
        return 0;
    const amqp_channel_close_t *cc = r.reply.decoded;
    return cc && cc->reply_code == AMQP_NOT_FOUND;
}

int mq_queue_inspect(mq_conn *c, const char *name, mq_queue_stat *out, err_t *e)
{
    memset(out, 0, sizeof *out);
    if (mq_is_broken(c))
        return err_set(e, ERR_MQ, "AMQP connection is broken");
    amqp_queue_declare_ok_t *ok =
        amqp_queue_declare(c->st, CH_ADMIN, amqp_cstring_bytes(name), 1, 0, 0, 0, amqp_empty_table);
    amqp_rpc_reply_t r = amqp_get_rpc_reply(c->st);
    if (is_not_found(r))
        return reopen_admin(c, e);
    int rc = mq_err_reply(e, r, "inspecting queue");
    if (rc < 0)
        return mq_broken(c, e, err_wrap(e, rc, "%s", name));
    out->exists = 1;
    out->ready = ok->message_count;
    out->consumers = ok->consumer_count;
    return 0;
}

int mq_kind_queue(const mq_conn *c, const char *kind, char *out, size_t n)
{
    int w = snprintf(out, n, "%s.%s", c->prefix, kind);
    return w < 0 || (size_t)w >= n ? ERR_INVAL : 0;
}

int mq_retry_queue(const mq_conn *c, const char *kind, int tier, char *out, size_t n)
{
    if (tier < 0 || tier > 2)
        return ERR_INVAL;
    return mq_retry_queue_name(c, kind, tier, out, n);
}

/* ---- x-death ---- */

static int key_is(const amqp_table_entry_t *t, const char *k)
{
    size_t n = strlen(k);
    return t->key.len == n && memcmp(t->key.bytes, k, n) == 0;
}

static void copy_text(const amqp_field_value_t *v, char *out, size_t n)
{
    if (v->kind == AMQP_FIELD_KIND_UTF8 || v->kind == AMQP_FIELD_KIND_BYTES)
        snprintf(out, n, "%.*s", (int)v->value.bytes.len, (const char *)v->value.bytes.bytes);
}

static long field_long(const amqp_field_value_t *v)
{
    switch (v->kind) {
    case AMQP_FIELD_KIND_I8:
        return v->value.i8;
    case AMQP_FIELD_KIND_U8:
        return v->value.u8;
    case AMQP_FIELD_KIND_I16:
        return v->value.i16;
    case AMQP_FIELD_KIND_U16:
        return v->value.u16;
    case AMQP_FIELD_KIND_I32:
        return v->value.i32;
    case AMQP_FIELD_KIND_U32:
        return (long)v->value.u32;
    case AMQP_FIELD_KIND_I64:
        return (long)v->value.i64;
    case AMQP_FIELD_KIND_U64:
    case AMQP_FIELD_KIND_TIMESTAMP:
        return (long)v->value.u64;
    default:
        return 0;
    }
}

static void one_death(const amqp_table_t *t, mq_death *d)
{
    memset(d, 0, sizeof *d);
    for (int i = 0; i < t->num_entries; i++) {
        const amqp_table_entry_t *f = &t->entries[i];
        if (key_is(f, "queue"))
            copy_text(&f->value, d->queue, sizeof d->queue);
        else if (key_is(f, "reason"))
            copy_text(&f->value, d->reason, sizeof d->reason);
        else if (key_is(f, "count"))
            d->count = field_long(&f->value);
        else if (key_is(f, "time"))
            d->time = field_long(&f->value);
    }
}

static const amqp_array_t *x_death(const mq_delivery *d)
{
    const amqp_basic_properties_t *p = &d->priv->props;
    if (!(p->_flags & AMQP_BASIC_HEADERS_FLAG))
        return NULL;
    for (int i = 0; i < p->headers.num_entries; i++) {
        const amqp_table_entry_t *t = &p->headers.entries[i];
        if (key_is(t, "x-death") && t->value.kind == AMQP_FIELD_KIND_ARRAY)
            return &t->value.value.array;
    }
    return NULL;
}

int mq_delivery_deaths(const mq_delivery *d, mq_death *out, int n)
{
    const amqp_array_t *a = x_death(d);
    if (!a)
        return 0;
    int k = 0;
    for (int i = 0; i < a->num_entries; i++) {
        if (a->entries[i].kind != AMQP_FIELD_KIND_TABLE)
            continue;
        if (k < n)
            one_death(&a->entries[i].value.table, &out[k]);
        k++;
    }
    return k;
}

int mq_last_death_queue(const mq_delivery *d, char *out, size_t n)
{
    mq_death first;
    out[0] = '\0';
    if (mq_delivery_deaths(d, &first, 1) < 1)
        return 0;
    snprintf(out, n, "%s", first.queue);
    return 1;
}

int mq_close_sync(mq_conn *c, err_t *e)
{
    int rc = 0;
    if (!mq_is_broken(c)) {
        /* A synchronous method on the consume channel returns only after the broker's
         * channel has handled every ack and reject sent before it. */
        amqp_basic_qos(c->st, CH_CONSUME, 0, (uint16_t)c->prefetch, 0);
        rc = mq_err_reply(e, amqp_get_rpc_reply(c->st), "flushing settlements");
    } else {
        rc = err_set(e, ERR_MQ, "AMQP connection is broken");
    }
    mq_close(c);
    return rc;
}
