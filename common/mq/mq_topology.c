/* mq_topology.c - declares the exchanges and queues of a prefix and starts consumers.
 *
 * Key invariant: every declaration is idempotent (same name, same arguments every time),
 * so any process may run it at every connect; declarations use their own channel so a
 * rejected one (PRECONDITION_FAILED) is reported without touching the consume/publish
 * channels' state. */
#include <stdio.h>
#include <string.h>

#include <amqp.h>
#include <amqp_framing.h>

#include "mq_int.h"

enum { DELIVERY_LIMIT = 20 };

static amqp_table_entry_t str_arg(const char *k, const char *v)
{
    amqp_table_entry_t t;
    t.key = amqp_cstring_bytes(k);
    t.value.kind = AMQP_FIELD_KIND_UTF8;
    t.value.value.bytes = amqp_cstring_bytes(v);
    return t;
}

static amqp_table_entry_t int_arg(const char *k, int64_t v)
{
    amqp_table_entry_t t;
    t.key = amqp_cstring_bytes(k);
    t.value.kind = AMQP_FIELD_KIND_I64;
    t.value.value.i64 = v;
    return t;
}

static int declare_exchange(mq_conn *c, const char *name, const char *type, err_t *e)
{
    amqp_exchange_declare(c->st, CH_ADMIN, amqp_cstring_bytes(name), amqp_cstring_bytes(type), 0, 1,
                          0, 0, amqp_empty_table);
    int rc = mq_err_reply(e, amqp_get_rpc_reply(c->st), "declaring exchange");
    return rc < 0 ? err_wrap(e, rc, "%s", name) : 0;
}

static int declare_queue(mq_conn *c, const char *name, amqp_table_entry_t *args, int nargs,
                         err_t *e)
{
    amqp_table_t t = {nargs, args};
    amqp_queue_declare(c->st, CH_ADMIN, amqp_cstring_bytes(name), 0, 1, 0, 0, t);
    int rc = mq_err_reply(e, amqp_get_rpc_reply(c->st), "declaring queue");
    return rc < 0 ? err_wrap(e, rc, "%s", name) : 0;
}

static int bind_queue(mq_conn *c, const char *q, const char *ex, const char *key, err_t *e)
{
    amqp_queue_bind(c->st, CH_ADMIN, amqp_cstring_bytes(q), amqp_cstring_bytes(ex),
                    amqp_cstring_bytes(key), amqp_empty_table);
    int rc = mq_err_reply(e, amqp_get_rpc_reply(c->st), "binding queue");
    return rc < 0 ? err_wrap(e, rc, "%s", q) : 0;
}

int mq_retry_queue_name(const mq_conn *c, const char *kind, int tier, char *out, size_t n)
{
    char sfx[32];
    mq_ttl_suffix(c->retry_ms[tier], sfx, sizeof sfx);
    int w = snprintf(out, n, "%s.%s.retry.%s", c->prefix, kind, sfx);
    return w < 0 || (size_t)w >= n ? ERR_INVAL : 0;
}

/* P.K (quorum, dead-lettered to P.dlx) bound to P.jobs, and its three retry tiers. */
static int declare_kind(mq_conn *c, const char *kind, err_t *e)
{
    char q[256];
    if (snprintf(q, sizeof q, "%s.%s", c->prefix, kind) >= (int)sizeof q)
        return err_set(e, ERR_INVAL, "queue name too long");
    /* at-least-once dead-lettering (3.10+, needs reject-publish overflow): a message on
     * its way to the dead-letter queue is not dropped when that queue is unavailable. */
    amqp_table_entry_t a[6] = {str_arg("x-queue-type", "quorum"),
                               str_arg("x-dead-letter-exchange", c->dlx_ex),
                               str_arg("x-dead-letter-routing-key", kind),
                               int_arg("x-delivery-limit", DELIVERY_LIMIT),
                               str_arg("x-dead-letter-strategy", "at-least-once"),
                               str_arg("x-overflow", "reject-publish")};
    int rc = declare_queue(c, q, a, 6, e);
    if (rc == 0)
        rc = bind_queue(c, q, c->jobs_ex, kind, e);
    for (int tier = 0; rc == 0 && tier < 3; tier++) {
        if (mq_retry_queue_name(c, kind, tier, q, sizeof q) < 0)
            return err_set(e, ERR_INVAL, "queue name too long");
        /* Retry tiers are quorum queues too: a classic queue lives on one node, and while
         * that node is down nobody could even redeclare the topology to reconnect. Expired
         * messages go back to the work queue at least once. */
        amqp_table_entry_t r[6] = {str_arg("x-queue-type", "quorum"),
                                   int_arg("x-message-ttl", c->retry_ms[tier]),
                                   str_arg("x-dead-letter-exchange", c->jobs_ex),
                                   str_arg("x-dead-letter-routing-key", kind),
                                   str_arg("x-dead-letter-strategy", "at-least-once"),
                                   str_arg("x-overflow", "reject-publish")};
        rc = declare_queue(c, q, r, 6, e);
    }
    return rc;
}

int mq_declare_topology(mq_conn *c, err_t *e)
{
    int rc = declare_exchange(c, c->jobs_ex, "direct", e);
    if (rc == 0)
        rc = declare_exchange(c, c->dlx_ex, "fanout", e);
    if (rc == 0)
        rc = declare_exchange(c, c->results_ex, "topic", e);
    /* P.dead dead-letters to P.jobs keeping each message's routing key (its kind): an
     * operator's replay is a reject, and the broker moves the message back to its work
     * queue in one step, so a replay cut short neither loses nor doubles it. */
    amqp_table_entry_t qa[4] = {str_arg("x-queue-type", "quorum"),
                                str_arg("x-dead-letter-exchange", c->jobs_ex),
                                str_arg("x-dead-letter-strategy", "at-least-once"),
                                str_arg("x-overflow", "reject-publish")};
    if (rc == 0)
        rc = declare_queue(c, c->dead_q, qa, 4, e);
    if (rc == 0)
        rc = bind_queue(c, c->dead_q, c->dlx_ex, "", e);
    for (int i = 0; rc == 0 && c->all_kinds[i]; i++)
        rc = declare_kind(c, c->all_kinds[i], e);
    return rc < 0 ? mq_broken(c, e, rc) : 0;
}

int mq_start_consuming(mq_conn *c, err_t *e)
{
    amqp_basic_qos(c->st, CH_CONSUME, 0, (uint16_t)c->prefetch, 0);
    int rc = mq_err_reply(e, amqp_get_rpc_reply(c->st), "setting prefetch");
    for (int i = 0; rc == 0 && c->kinds[i]; i++) {
        char q[256];
        snprintf(q, sizeof q, "%s.%s", c->prefix, c->kinds[i]);
        amqp_basic_consume(c->st, CH_CONSUME, amqp_cstring_bytes(q),
                           amqp_cstring_bytes(c->kinds[i]), 0, 0, 0, amqp_empty_table);
        rc = mq_err_reply(e, amqp_get_rpc_reply(c->st), "starting consumer");
        if (rc < 0)
            err_wrap(e, rc, "%s", q);
    }
    return rc < 0 ? mq_broken(c, e, rc) : 0;
}

/* Deletes every queue and exchange of the prefix (tests and operators' cleanup). */
int mq_delete_topology(mq_conn *c, err_t *e)
{
    if (mq_is_broken(c))
        return err_set(e, ERR_MQ, "AMQP connection is broken");
    char q[256];
    for (int i = 0; c->all_kinds[i]; i++) {
        for (int tier = -1; tier < 3; tier++) {
            if (tier < 0)
                snprintf(q, sizeof q, "%s.%s", c->prefix, c->all_kinds[i]);
            else
                mq_retry_queue_name(c, c->all_kinds[i], tier, q, sizeof q);
            amqp_queue_delete(c->st, CH_ADMIN, amqp_cstring_bytes(q), 0, 0);
            int rc = mq_err_reply(e, amqp_get_rpc_reply(c->st), "deleting queue");
            if (rc < 0)
                return mq_broken(c, e, rc);
        }
    }
    const char *names[4] = {c->dead_q, c->jobs_ex, c->dlx_ex, c->results_ex};
    amqp_queue_delete(c->st, CH_ADMIN, amqp_cstring_bytes(names[0]), 0, 0);
    int rc = mq_err_reply(e, amqp_get_rpc_reply(c->st), "deleting queue");
    for (int i = 1; rc == 0 && i < 4; i++) {
        amqp_exchange_delete(c->st, CH_ADMIN, amqp_cstring_bytes(names[i]), 0);
        rc = mq_err_reply(e, amqp_get_rpc_reply(c->st), "deleting exchange");
    }
    return rc < 0 ? mq_broken(c, e, rc) : 0;
}

/* A private, server-named, exclusive queue for replies: it lives and dies with this
 * connection, so a client that reconnects asks again for replies it still awaits. */
int mq_start_reply_queue(mq_conn *c, err_t *e)
{
    amqp_queue_declare_ok_t *ok =
        amqp_queue_declare(c->st, CH_CONSUME, amqp_empty_bytes, 0, 0, 1, 1, amqp_empty_table);
    int rc = mq_err_reply(e, amqp_get_rpc_reply(c->st), "declaring reply queue");
    if (rc == 0)
        snprintf(c->reply_q, sizeof c->reply_q, "%.*s", (int)ok->queue.len,
                 (const char *)ok->queue.bytes);
    if (rc == 0 && c->reply_bind)
        rc = bind_queue(c, c->reply_q, c->results_ex, c->reply_bind, e);
    if (rc == 0) {
        if (!c->kinds[0]) {
            amqp_basic_qos(c->st, CH_CONSUME, 0, (uint16_t)c->prefetch, 0);
            rc = mq_err_reply(e, amqp_get_rpc_reply(c->st), "setting prefetch");
        }
        amqp_basic_consume(c->st, CH_CONSUME, amqp_cstring_bytes(c->reply_q),
                           amqp_cstring_bytes(MQ_KIND_REPLY), 0, 0, 1, amqp_empty_table);
        if (rc == 0)
            rc = mq_err_reply(e, amqp_get_rpc_reply(c->st), "consuming reply queue");
    }
    return rc < 0 ? mq_broken(c, e, rc) : 0;
}

const char *mq_reply_queue(const mq_conn *c)
{
    return c->reply_q;
}
