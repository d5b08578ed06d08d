/* mq.h - the AMQP transport: one broker connection, its topology, deliveries and
 * publisher-confirmed publishes. The only module that talks to rabbitmq-c.
 *
 * Key invariant: nothing that arrives is ever dropped while the connection is alive.
 * Every call that reads from the socket (mq_poll, mq_service, mq_wait_confirm, mq_retry)
 * dispatches all frames: deliveries are queued in arrival order and handed out by
 * mq_poll, publisher acks/nacks update the confirm bookkeeping, heartbeats are answered.
 *
 * Threading: an mq_conn belongs to one thread (rabbitmq-c allows one connection per
 * thread); nothing here blocks longer than the timeout it is given (plus an RPC timeout
 * of a few seconds during connect/declare).
 *
 * Names, for prefix P and each kind K in {enroll, auth, import} (all declared by every
 * process, idempotently, at connect and at every reconnect):
 *   P.jobs             direct exchange, durable; routing key K -> queue P.K
 *   P.K                quorum queue, dead-letters to P.dlx (routing key K), delivery limit 20
 *   P.K.retry.5s|30s|300s  quorum queues with a TTL; messages expire back to P.jobs
 *                      with key K (at-least-once dead-lettering)
 *   P.dlx              fanout exchange -> P.dead (quorum queue; it dead-letters to P.jobs
 *                      with each message's own routing key: rejecting a dead message
 *                      replays it to its work queue)
 *   P.results          topic exchange for replies to jobs that carry no reply_to
 *
 * Errors: every failure is ERR_MQ (broker or socket), ERR_TIMEOUT, ERR_INVAL or ERR_NOMEM,
 * with a readable message in err_t. After an ERR_MQ the connection is usually broken
 * (mq_is_broken): call mq_reconnect(). */
#ifndef DUO_MQ_H
#define DUO_MQ_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"

typedef struct mq_conn mq_conn;

/* Kind of deliveries from the private reply queue (mq_opts.reply_queue). */
#define MQ_KIND_REPLY "reply"

/* The three job kinds whose topology every process declares. */
#define MQ_KIND_ENROLL "enroll"
#define MQ_KIND_AUTH "auth"
#define MQ_KIND_IMPORT "import"
/* Not a job kind: consuming "dead" reads the dead-letter queue P.dead (tools, tests). */
#define MQ_KIND_DEAD "dead"

/* Connection options. Everything is copied by mq_open; the caller may free it after. */
typedef struct mq_opts {
    const char *urls;         /* "amqp://u:p@h:port/vhost,amqps://..." (required) */
    const char *prefix;       /* exchange/queue name prefix, e.g. "duo" (required) */
    const char *const *kinds; /* NULL-terminated kinds to consume; NULL = publish only */
    int heartbeat_secs;       /* 0 = no heartbeats; negative = default 30 */
    int prefetch;             /* basic.qos per consumer channel; <= 0 = 16 */
    size_t max_message_bytes; /* bodies above this are delivered with too_large; 0 = 1 MiB */
    int retry_ms[3];          /* retry tier TTLs; 0 = 5000, 30000, 300000. A non-default
                               * TTL gets its own queue name (P.K.retry.200ms). */
    const char *conn_name;    /* connection_name client property; NULL = none */
    const char *ca_file;      /* CA bundle for amqps://; NULL = system default */
    int rpc_timeout_ms;       /* connect, login and declare timeout; <= 0 = 10000 */
    int reply_queue;          /* 1: declare a private server-named reply queue and consume
                               * it (deliveries of kind MQ_KIND_REPLY): for clients that
                               * publish jobs and wait for their replies. Its name changes
                               * on reconnect (mq_reply_queue). */
    const char *reply_bind;   /* with reply_queue: also bind it to P.results with this
                               * routing-key pattern (e.g. "#"); NULL = no binding */
    int no_topology;          /* 1: do not declare the exchanges and queues above (they must
                               * exist): for a publisher whose broker user may only write to
                               * P.jobs and read its own reply queue */
} mq_opts;

/* One received message. Every pointer is owned by the delivery and valid until
 * mq_delivery_free(); string fields are NUL-terminated copies, NULL when the property is
 * absent. Read-only for callers. */
typedef struct mq_delivery {
    const unsigned char *body; /* NULL when too_large or empty */
    size_t body_len;           /* bytes in body */
    size_t body_size;          /* size announced by the broker (even when too_large) */
    int too_large;             /* 1: body_size > max_message_bytes, body not kept */
    const char *message_id;
    const char *type;
    const char *reply_to;
    const char *correlation_id;
    const char *content_type;
    const char *user_id;     /* the publisher's broker user, validated by RabbitMQ (it
                              * refuses a user_id other than the connection's); NULL when
                              * the publisher did not set it */
    const char *kind;        /* kind of the queue it came from; never NULL */
    const char *routing_key; /* never NULL (may be "") */
    int attempt;             /* x-attempt header; 0 when absent or not an integer, and
                              * 0 for a message replayed from P.dead (its newest x-death
                              * names P.dead): a replayed job gets all its attempts again */
    int redelivered;         /* broker's redelivered flag */
    uint64_t delivery_tag;
    struct mq_delivery_priv *priv; /* internal: original properties, connection generation */
} mq_delivery;

/* A message to publish. All pointers are borrowed for the duration of the call. */
typedef struct mq_msg {
    const char *exchange;    /* full name; NULL or "" = default exchange */
    const char *routing_key; /* required */
    const void *body;
    size_t body_len;
    const char *message_id; /* optional properties: NULL = absent */
    const char *correlation_id;
    const char *type;
    const char *content_type;
    const char *reply_to;
    const char *user_id; /* must be the connection's own user (mq_user), or the broker
                          * closes the channel */
    int attempt;         /* > 0: sent as the x-attempt header */
} mq_msg;

/* Connects to one of the URLs (starting at a random one, trying each in turn), declares
 * the topology, opens the publishing channel in confirm mode and starts consuming
 * o->kinds. Returns a connection the caller owns (mq_close), or NULL with *e set. */
mq_conn *mq_open(const mq_opts *o, err_t *e);

/* Closes cleanly if still connected and frees everything, including queued deliveries
 * (unacked deliveries go back to their queue). Accepts NULL. */
void mq_close(mq_conn *c);

/* Waits up to timeout_ms (0 = do not block) for the next delivery while processing
 * everything else that arrives. Returns 1 with *out set (caller owns it:
 * mq_delivery_free), 0 on timeout, or a negative ERR_* (connection lost: ERR_MQ). */
int mq_poll(mq_conn *c, int timeout_ms, mq_delivery **out, err_t *e);

/* As mq_poll, but also returns 0 as soon as publisher confirms arrived, so an event loop
 * settles what was confirmed without waiting out its timeout. */
int mq_poll_event(mq_conn *c, int timeout_ms, mq_delivery **out, err_t *e);

/* Zero-timeout pump: answers heartbeats, records confirms, queues deliveries. Call it at
 * least every heartbeat_secs/2 during long work. Returns 0 or a negative ERR_*. */
int mq_service(mq_conn *c, err_t *e);

/* The socket descriptor, for poll() alongside other fds; -1 when not connected.
 * Note: data may already be buffered inside the library, so call mq_service/mq_poll
 * after waking, not only when the fd is readable. */
int mq_fd(const mq_conn *c);

/* Number of deliveries received and queued but not yet handed out by mq_poll. */
size_t mq_pending_deliveries(const mq_conn *c);

/* Frees a delivery; accepts NULL. Does not ack: an unacked delivery is redelivered when
 * the connection closes. */
void mq_delivery_free(mq_delivery *d);

/* Acks / rejects a delivery of this connection. A delivery received on an earlier
 * (broken) connection is refused with ERR_MQ: the broker redelivers it anyway. */
int mq_ack(mq_conn *c, const mq_delivery *d, err_t *e);
int mq_reject(mq_conn *c, const mq_delivery *d, int requeue, err_t *e);

/* A ticket settles a delivery later without keeping it: its tag and the connection it
 * came on. Acting on a ticket of an earlier connection is refused like mq_ack's. */
typedef struct mq_ticket {
    uint64_t tag;
    uint64_t gen;
} mq_ticket;

mq_ticket mq_ticket_of(const mq_delivery *d);
/* requeue: 0 = ack, 1 = reject and requeue, -1 = reject without requeue (dead-letter). */
int mq_settle(mq_conn *c, mq_ticket t, int how, err_t *e);

/* Rejects without requeue so the queue dead-letters it to P.dead with its original
 * properties; `reason` (may be NULL) is logged. */
int mq_dead_letter(mq_conn *c, const mq_delivery *d, const char *reason, err_t *e);

/* Republishes d (same body and properties, x-attempt header set to `attempt`) to the
 * retry tier for `attempt` (1 -> first TTL, 2 -> second, >= 3 -> third), waits up to
 * timeout_ms for the publisher confirm, then acks d. The caller usually passes
 * d->attempt + 1. Fails with ERR_INVAL for a too_large delivery (no body held) and for
 * one from P.dead (no retry queues). */
int mq_retry(mq_conn *c, const mq_delivery *d, int attempt, int timeout_ms, err_t *e);

/* The same into the longest retry tier whose delay is at most delay_ms (the first tier
 * when all are longer): a deferral that should come back after about delay_ms, whatever
 * its attempt count. */
int mq_retry_in(mq_conn *c, const mq_delivery *d, int attempt, long long delay_ms, int timeout_ms,
                err_t *e);

/* Publishes m (persistent) on the confirm channel. *seq (optional) receives the publish
 * sequence number, unique for the life of c across reconnects. */
int mq_publish(mq_conn *c, const mq_msg *m, uint64_t *seq, err_t *e);

/* Publishes a reply to job d: to d->reply_to via the default exchange, or without one to
 * P.results with routing key m->type, else d->type, else d->kind. The reply's
 * correlation_id defaults to d's (or d's message_id); exchange/routing_key in m are
 * ignored. A reply_to naming no queue is dropped by the broker (still confirmed). */
int mq_reply(mq_conn *c, const mq_delivery *d, const mq_msg *m, uint64_t *seq, err_t *e);

/* 1 = confirmed by the broker, 0 = still pending, -1 = nacked, or lost with a broken
 * connection (the caller republishes). Never blocks; mq_poll/mq_service update it. */
int mq_confirmed(const mq_conn *c, uint64_t seq);

/* Counts the events that decide pending publishes: publisher acks and nacks received,
 * and connection losses (which fail what was pending). While it has not changed, no
 * pending publish has become confirmed or failed. */
unsigned long mq_confirm_count(const mq_conn *c);

/* Pumps frames (queueing deliveries) until seq is confirmed. Returns 0, ERR_MQ when
 * nacked or the connection broke, ERR_TIMEOUT after timeout_ms. */
int mq_wait_confirm(mq_conn *c, uint64_t seq, int timeout_ms, err_t *e);

/* Drops the broken connection and reconnects with jittered exponential backoff across
 * the URL list, trying for at most max_wait_ms (<= 0: until it succeeds), redeclaring
 * the topology and consuming again. Queued deliveries of the old connection are freed
 * (the broker redelivers them); its pending publishes become mq_confirmed() == -1.
 * Returns 0 or the last connection error (ERR_TIMEOUT when max_wait_ms passed). */
int mq_reconnect(mq_conn *c, int max_wait_ms, err_t *e);

/* 1 when the connection is known broken (mq_reconnect needed), else 0. */
int mq_is_broken(const mq_conn *c);

/* 1 when an error code from this module means "connection lost, reconnect". */
int mq_error_is_connection(int code);

/* Deletes every queue and exchange of c's prefix (the tests' and operators' cleanup).
 * Deliveries consumed from them are lost: never call it on a production prefix. */
int mq_delete_topology(mq_conn *c, err_t *e);

/* The broker user of the current connection (from its URL), "" when not connected.
 * Borrowed, valid until the next reconnect. */
const char *mq_user(const mq_conn *c);

/* Borrowed names ("P.jobs", "P.results", "P.dead"), valid for the life of c. */
const char *mq_jobs_exchange(const mq_conn *c);
const char *mq_results_exchange(const mq_conn *c);
const char *mq_dead_queue(const mq_conn *c);
/* The private reply queue's current name (mq_opts.reply_queue), "" when none. Borrowed,
 * valid until the next reconnect. */
const char *mq_reply_queue(const mq_conn *c);

/* ---- Operators' view: queue statistics and the dead-letter queue (duoctl) ---- */

/* What a passive queue.declare tells: ready messages and attached consumers. AMQP 0-9-1
 * has no count of unacknowledged messages. */
typedef struct mq_queue_stat {
    int exists;         /* 0: no such queue (ready and consumers are 0) */
    uint32_t ready;     /* messages ready for delivery */
    uint32_t consumers; /* consumers attached (worker processes) */
} mq_queue_stat;

/* Passively declares queue `name` (full name) and fills *out; a missing queue is not an
 * error (exists = 0). Returns 0 or a negative ERR_*. */
int mq_queue_inspect(mq_conn *c, const char *name, mq_queue_stat *out, err_t *e);

/* Full names of kind's work queue ("P.K") and retry tier 0..2 ("P.K.retry.5s", from
 * mq_opts.retry_ms) into out. 0 or ERR_INVAL (name too long, bad tier). */
int mq_kind_queue(const mq_conn *c, const char *kind, char *out, size_t n);
int mq_retry_queue(const mq_conn *c, const char *kind, int tier, char *out, size_t n);

/* Takes the next message of queue `name` without auto-ack (basic.get) as a delivery of
 * kind `kind`. 1: *out set (caller owns it: mq_delivery_free; ack, reject or leave it:
 * an unsettled one returns to its queue when the connection closes), 0: queue empty,
 * negative ERR_* on failure. `remaining` (optional) receives the broker's count of
 * messages left after this one. */
int mq_get(mq_conn *c, const char *name, const char *kind, mq_delivery **out, uint32_t *remaining,
           err_t *e);

/* Reading a whole queue (duoctl dead and status): a consumer with a wide window takes
 * every ready message and holds it unsettled until the caller settles it or the
 * connection closes (then it returns to the queue). Readers of one queue must not run at
 * once (each would hide from the other what it holds): callers serialise them.
 *
 * mq_reader_open waits up to wait_ms until the queue has no consumer (a reader that
 * just closed has given its messages back only then), then consumes it on the channel of
 * mq_get with as many consumers as the ready messages need, each holding up to `window`
 * (<= 0 or above 60000: 60000). *ready (optional) receives the ready count at the start. The reader
 * is the caller's (mq_reader_free, before mq_close); it borrows c. */
typedef struct mq_reader mq_reader;
int mq_reader_open(mq_conn *c, const char *queue, const char *kind, int window, int wait_ms,
                   mq_reader **out, uint32_t *ready, err_t *e);
/* The next message, waiting up to idle_ms for one: 1 with *out (caller owns it:
 * mq_delivery_free; settle it through its mq_ticket_of), 0 when the queue has no ready
 * message left, negative ERR_* on failure. */
int mq_reader_next(mq_reader *r, int idle_ms, mq_delivery **out, err_t *e);
/* how: 0 = ack (drop it), -1 = reject without requeue (dead-letter it). multiple: also
 * every unsettled message delivered before it. A settlement is applied by the queue by
 * the next mq_reader_sync (and never more than 8 of them wait for one). */
int mq_reader_settle(mq_reader *r, mq_ticket t, int how, int multiple, err_t *e);
/* Returns once the queue applied every settlement sent before. Call it before closing:
 * closing first can bring settled messages back. */
int mq_reader_sync(mq_reader *r, err_t *e);
void mq_reader_free(mq_reader *r);

/* One entry of a message's x-death header: the broker adds or updates one per
 * (queue, reason) each time it dead-letters the message, newest first. */
typedef struct mq_death {
    char queue[128];
    char reason[32]; /* rejected, expired, maxlen, delivery_limit */
    long count;      /* times dead-lettered from queue for reason */
    int64_t time;    /* Unix seconds of the first such death (0 when absent) */
} mq_death;

/* Copies up to n entries of d's x-death header into out (newest first); returns how many
 * entries the header has (may exceed n), 0 when it has none. */
int mq_delivery_deaths(const mq_delivery *d, mq_death *out, int n);

/* Closes the connection cleanly after a round trip on the consume channel, so the
 * channel has seen every ack and reject sent before; then frees like mq_close. Seen is
 * not applied: a quorum queue applies them later, and may never apply those its channel
 * held back (mq_reader_sync waits for that). Returns 0, or ERR_MQ when the clean close
 * failed (the connection is freed anyway). */
int mq_close_sync(mq_conn *c, err_t *e);

/* ---- Pure helpers (no connection; unit-tested) ---- */

/* Backoff before reconnect attempt n (0-based): 100 ms doubling, capped at 10 s, then
 * scaled by a jitter factor in [0.5, 1.5] taken from `rnd` (uniform in [0, 1]). */
int mq_backoff_ms(int attempt, double rnd);

/* Splits a comma-separated URL list (blanks around items ignored) into a NULL-terminated
 * array the caller frees with mq_urls_free; each must parse as amqp:// or amqps://.
 * Returns the count (> 0) or ERR_INVAL / ERR_NOMEM with *e naming the bad item (without
 * its password). */
int mq_urls_parse(const char *list, char ***out, err_t *e);
void mq_urls_free(char **urls);

/* Name of the retry queue suffix for a TTL: 5000 -> "5s", 200 -> "200ms". */
void mq_ttl_suffix(int ttl_ms, char *out, size_t outlen);

#endif
