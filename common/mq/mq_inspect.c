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
