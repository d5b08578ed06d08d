/* mq_int.h - private state shared by the mq_*.c files; never included outside them.
 *
 * Key invariant: `gen` changes on every (re)connect, and every delivery and every publish
 * sequence number is tied to the generation it came from, so nothing from a broken
 * connection is acked or reported confirmed on a new one. */
#ifndef DUO_MQ_INT_H
#define DUO_MQ_INT_H

#include <amqp.h>

#include "clock.h"
#include "mq.h"

enum { CH_CONSUME = 1, CH_PUBLISH = 2, CH_ADMIN = 3 };

/* Private part of a delivery: its own pool holds every string and the copied
 * properties, so the delivery outlives the connection's frame buffers. */
struct mq_delivery_priv {
    amqp_pool_t pool;
    amqp_basic_properties_t props; /* deep copy (pool) of the received properties */
    uint64_t gen;                  /* connection generation it arrived on */
    size_t cap;                    /* bytes allocated for body */
    size_t received;               /* body bytes received so far (kept or not) */
    mq_delivery *next;             /* FIFO link while queued inside mq_conn */
};

/* One publish awaiting its confirm, or failed (nacked/lost) and remembered. */
typedef struct seq_rec {
    uint64_t seq;
    int failed;
} seq_rec;

struct mq_conn {
    /* options (owned copies) */
    char **urls;
    int nurls;
    int next_url;
    char *prefix;
    char **kinds;     /* consumed kinds, NULL-terminated */
    char **all_kinds; /* declared kinds (the three + any extra consumed) */
    int heartbeat;
    int prefetch;
    size_t max_body;
    int retry_ms[3];
    char *conn_name;
    char *ca_file;
    int rpc_timeout_ms;
    int want_reply_queue;
    int no_topology; /* 1: never declare the project's exchanges and queues */
    char *reply_bind;
    char reply_q[256]; /* server-named private reply queue, "" when none */
    char user[128];    /* broker user of the current connection */
    char *jobs_ex, *results_ex, *dlx_ex, *dead_q;
    unsigned rnd_state;

    /* connection state */
    amqp_connection_state_t st; /* NULL when not connected */
    int broken;
    uint64_t gen;
    uint64_t seq_base; /* public seq = seq_base + channel seq */
    uint64_t chan_seq; /* last channel publish seq on this connection */

    /* confirm bookkeeping: sorted by seq */
    seq_rec *recs;
    size_t nrecs, caprecs;
    unsigned long confirm_frames; /* acks/nacks received and losses (mq_confirm_count) */
    uint64_t evicted_failed;      /* highest failed seq dropped from recs (0: none) */

    /* deliveries: FIFO of complete ones, plus the one being assembled */
    mq_delivery *qhead, *qtail;
    size_t qlen;
    mq_delivery *asm_d; /* non-NULL between basic.deliver and its last body frame */
    int asm_have_header;

    /* an asynchronous basic.get on CH_CONSUME (mq_reader): its answer, read by the
     * dispatcher alongside a consumer's deliveries */
    int get_reply;     /* 0 none yet, 1 get-ok (a delivery follows), 2 get-empty */
    char get_kind[32]; /* kind given to the get-ok delivery */
};

/* mq_err.c: converts the library's three error forms into err_t, once. */
int mq_err_status(err_t *e, int status, const char *what);
int mq_err_reply(err_t *e, amqp_rpc_reply_t r, const char *what);
int mq_err_method(err_t *e, const amqp_method_t *m, const char *what);

/* mq_conn.c */
int mq_connect_once(mq_conn *c, const char *url, err_t *e);
void mq_drop(mq_conn *c, int graceful);
int mq_broken(mq_conn *c, err_t *e, int code);

/* mq_topology.c */
int mq_declare_topology(mq_conn *c, err_t *e);
int mq_start_consuming(mq_conn *c, err_t *e);
int mq_start_reply_queue(mq_conn *c, err_t *e);
int mq_retry_queue_name(const mq_conn *c, const char *kind, int tier, char *out, size_t n);

/* mq_frames.c */
void mq_queue_clear(mq_conn *c);
/* Waits up to timeout_ms for one frame and dispatches it: 1 = a frame, 0 = timeout. */
int mq_pump_once(mq_conn *c, int timeout_ms, err_t *e);
/* Makes room to record one more publish: call before sending it, so a publish that
 * could not be recorded is never sent (it would read as confirmed). 0, or -1 when out
 * of memory. */
int mq_seq_reserve(mq_conn *c);
/* Records a publish as pending (room reserved by mq_seq_reserve). */
void mq_seq_add(mq_conn *c, uint64_t seq);
void mq_seq_fail_pending(mq_conn *c);

/* mq_deaths.c: queue of the newest x-death entry into out; 1 when there is one. */
int mq_last_death_queue(const mq_delivery *d, char *out, size_t n);

#endif
