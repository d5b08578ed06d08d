/* mq_reader.c - reads a whole queue as an operator's tool does (duoctl dead, status): a
 * consumer with a wide window takes every ready message and holds it unsettled, and the
 * caller settles what it selected.
 *
 * Key invariant: a settlement counts only once the queue applied it. A quorum queue
 * applies acks and rejects asynchronously, and a channel whose queue client has 32 of
 * them unapplied keeps the next ones back in the channel process (they are lost if the
 * channel closes first: the messages come back). So at most SYNC_EVERY settlements
 * travel between two syncs, and a sync is a basic.get on the same queue: the queue
 * answers it only after applying everything the channel sent before it. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <amqp.h>
#include <amqp_framing.h>

#include "mq_int.h"

/* Well under the channel's 32 unapplied commands, counting those whose applied notice
 * may still be on its way after the sync's answer. */
enum { SYNC_EVERY = 8, WINDOW = 60000 };

struct mq_reader {
    mq_conn *c;
    char queue[256];
    char kind[32];
    uint32_t window;   /* messages one consumer holds at most */
    uint32_t want;     /* ready messages when it started */
    uint32_t got;      /* deliveries handed out */
    unsigned unsynced; /* settlements sent since the last sync */
    int ended;
};

static void nap_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* A reader that closed (or died) gives its messages back only when the queue handled
 * its channel's end, which is also when its consumers go: wait for none. */
static int wait_no_consumers(mq_conn *c, const char *queue, int wait_ms, mq_queue_stat *st,
                             err_t *e)
{
    int64_t end = clock_ms() + wait_ms;
    for (;;) {
        int rc = mq_queue_inspect(c, queue, st, e);
        if (rc < 0)
            return rc;
        if (!st->exists)
            return err_set(e, ERR_MQ, "queue %s does not exist", queue);
        if (st->consumers == 0)
            return 0;
        if (clock_ms() >= end)
            return err_set(e, ERR_TIMEOUT,
                           "%s still has %u consumer(s) holding messages after %d ms", queue,
                           st->consumers, wait_ms);
        nap_ms(50);
    }
}

static int start_consumers(mq_reader *r, uint32_t ready, err_t *e)
{
    mq_conn *c = r->c;
    amqp_basic_qos(c->st, CH_CONSUME, 0, (uint16_t)r->window, 0);
    int rc = mq_err_reply(e, amqp_get_rpc_reply(c->st), "setting the reader's window");
    /* One window per consumer: enough consumers to hold every ready message, plus one
     * for what arrives meanwhile. */
    uint32_t n = ready / r->window + 1;
    for (uint32_t i = 0; rc == 0 && i < n; i++) {
        char tag[64];
        snprintf(tag, sizeof tag, i ? "%s~%u" : "%s", r->kind, i);
        amqp_basic_consume(c->st, CH_CONSUME, amqp_cstring_bytes(r->queue), amqp_cstring_bytes(tag),
                           0, 0, 0, amqp_empty_table);
        rc = mq_err_reply(e, amqp_get_rpc_reply(c->st), "consuming");
    }
    return rc < 0 ? mq_broken(c, e, err_wrap(e, rc, "%s", r->queue)) : 0;
}

int mq_reader_open(mq_conn *c, const char *queue, const char *kind, int window, int wait_ms,
                   mq_reader **out, uint32_t *ready, err_t *e)
{
    *out = NULL;
    if (mq_is_broken(c))
        return err_set(e, ERR_MQ, "AMQP connection is broken");
    mq_queue_stat st;
    int rc = wait_no_consumers(c, queue, wait_ms, &st, e);
    if (rc < 0)
        return rc;
    mq_reader *r = calloc(1, sizeof *r);
    if (!r)
        return err_set(e, ERR_NOMEM, "out of memory");
    r->c = c;
    snprintf(r->queue, sizeof r->queue, "%s", queue);
    snprintf(r->kind, sizeof r->kind, "%s", kind);
    r->window = window > 0 && window < WINDOW ? (uint32_t)window : WINDOW;
    r->want = st.ready;
    rc = start_consumers(r, st.ready, e);
    if (rc < 0) {
        free(r);
        return rc;
    }
    if (ready)
        *ready = st.ready;
    *out = r;
    return 0;
}

/* basic.get on the reader's channel, sent without the library's RPC helper so that the
 * consumer's deliveries read meanwhile are queued as usual. 1: a message came (queued),
 * 0: the queue had none ready. Either way every settlement sent before was applied. */
static int sync_get(mq_reader *r, err_t *e)
{
    mq_conn *c = r->c;
    if (mq_is_broken(c))
        return err_set(e, ERR_MQ, "AMQP connection is broken");
    amqp_basic_get_t req = {.queue = amqp_cstring_bytes(r->queue), .no_ack = 0};
    c->get_reply = 0;
    snprintf(c->get_kind, sizeof c->get_kind, "%s", r->kind);
    int rc = amqp_send_method(c->st, CH_CONSUME, AMQP_BASIC_GET_METHOD, &req);
    if (rc != AMQP_STATUS_OK)
        return mq_broken(c, e, mq_err_status(e, rc, "basic.get"));
    int64_t deadline = clock_ms() + c->rpc_timeout_ms;
    while (c->get_reply == 0 || c->asm_d) {
        int64_t left = deadline - clock_ms();
        if (left <= 0)
            return mq_broken(c, e, err_set(e, ERR_TIMEOUT, "basic.get on %s: no answer", r->queue));
        rc = mq_pump_once(c, (int)left, e);
        if (rc < 0)
            return rc;
    }
    r->unsynced = 0;
    return c->get_reply == 1;
}

int mq_reader_next(mq_reader *r, int idle_ms, mq_delivery **out, err_t *e)
{
    *out = NULL;
    for (;;) {
        int rc = mq_poll(r->c, 0, out, e);
        if (rc == 0 && !r->ended && r->got < r->want)
            rc = mq_poll(r->c, idle_ms, out, e);
        if (rc != 0) {
            r->got += rc == 1;
            return rc;
        }
        if (r->ended)
            return 0;
        /* Everything that was ready has come, or nothing came for idle_ms: ask the queue.
         * Its answer follows every delivery it sent this consumer before. */
        rc = sync_get(r, e);
        if (rc < 0)
            return rc;
        if (rc == 0 && mq_pending_deliveries(r->c) == 0)
            r->ended = 1;
    }
}

int mq_reader_settle(mq_reader *r, mq_ticket t, int how, int multiple, err_t *e)
{
    mq_conn *c = r->c;
    if (mq_is_broken(c))
        return err_set(e, ERR_MQ, "AMQP connection is broken");
    if (t.gen != c->gen)
        return err_set(e, ERR_MQ, "delivery %llu is from an earlier AMQP connection",
                       (unsigned long long)t.tag);
    int rc = how == 0 ? amqp_basic_ack(c->st, CH_CONSUME, t.tag, multiple ? 1 : 0)
                      : amqp_basic_nack(c->st, CH_CONSUME, t.tag, multiple ? 1 : 0, 0);
    if (rc != AMQP_STATUS_OK)
        return mq_broken(c, e, mq_err_status(e, rc, "settling"));
    if (++r->unsynced < SYNC_EVERY)
        return 0;
    rc = sync_get(r, e);
    return rc < 0 ? rc : 0;
}

int mq_reader_sync(mq_reader *r, err_t *e)
{
    int rc = sync_get(r, e);
    return rc < 0 ? rc : 0;
}

void mq_reader_free(mq_reader *r)
{
    free(r);
}
