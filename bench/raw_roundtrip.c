/* raw_roundtrip.c - the ceiling for the worker benchmarks: the best plain rabbitmq-c job
 * loop on this broker. Consumes QUEUE (a quorum queue it declares, like the job queues)
 * and, for each delivery, publishes a reply of REPLY_BYTES to its reply_to on a confirm
 * channel and acks the delivery once the broker confirmed that reply. Confirms are
 * asynchronous: up to WINDOW replies await theirs while the next deliveries are handled,
 * and one basic.ack (multiple) settles every delivery whose reply is confirmed, as far
 * as the first one that is not. No decoding, database or Duo: the broker work of a job
 * and nothing else.
 *
 * Invariant: a delivery is acked only after the broker confirmed its reply (the worker
 * runtime's rule), so the loop pays what a durable worker must pay.
 *
 * Frames are read one by one (amqp_simple_wait_frame_noblock) and a delivery is
 * assembled from its method, header and body frames, as common/mq/mq_frames.c does:
 * rabbitmq-c 0.11 has no asynchronous confirm API, and amqp_consume_message would drop
 * the basic.ack frames that arrive between deliveries.
 *
 * usage: raw_roundtrip QUEUE PREFETCH REPLY_BYTES [WINDOW]   (AMQP_URL from the
 * environment; WINDOW, the most unconfirmed replies, defaults to 512)
 * Runs until SIGTERM/SIGINT. Exit 0 after a signal, 1 on a connection or protocol error. */
#include <amqp.h>
#include <amqp_tcp_socket.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { CH_CONSUME = 1, CH_PUBLISH = 2, SHORTSTR = 256 };

static volatile sig_atomic_t stop;

static void on_signal(int sig)
{
    (void)sig;
    stop = 1;
}

/* One delivery, from its basic.deliver until the ack that settles it. */
typedef struct {
    uint64_t dtag;
    uint64_t seq; /* its reply's publish sequence number; 0 = not yet published */
    int confirmed;
    char reply_to[SHORTSTR], correlation_id[SHORTSTR], message_id[SHORTSTR];
} job;

/* Deliveries in arrival order: [head, pub) published, [pub, tail) waiting for a confirm
 * slot. Indexes grow without bound; the slot is index % cap. */
typedef struct {
    job *j;
    size_t cap;
    uint64_t head, pub, tail;
    uint64_t next_seq;    /* the channel's next publish sequence number */
    size_t window;        /* most replies awaiting a confirm */
    uint64_t body_left;   /* body bytes still expected for the delivery at tail */
    int in_delivery;      /* a basic.deliver was read, its content is not complete */
    amqp_bytes_t reply;   /* the reply body */
    unsigned long long n; /* deliveries acked */
} loop;

static job *at(loop *l, uint64_t i)
{
    return &l->j[i % l->cap];
}

static int ok(amqp_connection_state_t c, const char *what)
{
    amqp_rpc_reply_t r = amqp_get_rpc_reply(c);
    if (r.reply_type == AMQP_RESPONSE_NORMAL)
        return 1;
    fprintf(stderr, "raw_roundtrip: %s failed (%d)\n", what, (int)r.reply_type);
    return 0;
}

static amqp_connection_state_t connect_url(const char *url_in)
{
    char url[1024];
    snprintf(url, sizeof url, "%s", url_in);
    struct amqp_connection_info ci;
    amqp_default_connection_info(&ci);
    if (amqp_parse_url(url, &ci) != AMQP_STATUS_OK)
        return NULL;
    if (!ci.vhost || !*ci.vhost) /* "amqp://host/" names the default vhost */
        ci.vhost = "/";
    amqp_connection_state_t c = amqp_new_connection();
    amqp_socket_t *s = amqp_tcp_socket_new(c);
    if (!s || amqp_socket_open(s, ci.host, ci.port) != AMQP_STATUS_OK) {
        amqp_destroy_connection(c);
        return NULL;
    }
    /* No heartbeats: the benchmark's connection is never idle long, and each frame read
     * would otherwise also read the clock. */
    amqp_rpc_reply_t r =
        amqp_login(c, ci.vhost, 0, 131072, 0, AMQP_SASL_METHOD_PLAIN, ci.user, ci.password);
    if (r.reply_type != AMQP_RESPONSE_NORMAL) {
        amqp_destroy_connection(c);
        return NULL;
    }
    return c;
}

/* Channel 1 consumes with basic.qos = prefetch, channel 2 publishes with confirms. */
static int setup(amqp_connection_state_t c, const char *queue, int prefetch)
{
    amqp_channel_open(c, CH_CONSUME);
    if (!ok(c, "channel 1"))
        return -1;
    amqp_channel_open(c, CH_PUBLISH);
    if (!ok(c, "channel 2"))
        return -1;
    amqp_confirm_select(c, CH_PUBLISH);
    if (!ok(c, "confirm.select"))
        return -1;
    amqp_table_entry_t qt = {
        .key = amqp_cstring_bytes("x-queue-type"),
        .value = {.kind = AMQP_FIELD_KIND_UTF8, .value.bytes = amqp_cstring_bytes("quorum")}};
    amqp_table_t args = {.num_entries = 1, .entries = &qt};
    amqp_queue_declare(c, CH_CONSUME, amqp_cstring_bytes(queue), 0, 1, 0, 0, args);
    if (!ok(c, "queue.declare"))
        return -1;
    amqp_basic_qos(c, CH_CONSUME, 0, (uint16_t)prefetch, 0);
    if (!ok(c, "basic.qos"))
        return -1;
    amqp_basic_consume(c, CH_CONSUME, amqp_cstring_bytes(queue), amqp_empty_bytes, 0, 0, 0,
                       amqp_empty_table);
    return ok(c, "basic.consume") ? 0 : -1;
}

static void copy_str(char *dst, amqp_flags_t flags, amqp_flags_t flag, amqp_bytes_t b)
{
    size_t n = (flags & flag) ? b.len : 0;
    if (n >= SHORTSTR)
        n = SHORTSTR - 1;
    if (n)
        memcpy(dst, b.bytes, n);
    dst[n] = '\0';
}

/* Publishes the replies of waiting deliveries while the confirm window has room. */
static int publish_ready(amqp_connection_state_t c, loop *l)
{
    while (l->pub < l->tail && l->pub - l->head < l->window) {
        job *j = at(l, l->pub);
        amqp_basic_properties_t p = {._flags = AMQP_BASIC_DELIVERY_MODE_FLAG |
                                               AMQP_BASIC_CORRELATION_ID_FLAG |
                                               AMQP_BASIC_MESSAGE_ID_FLAG |
                                               AMQP_BASIC_CONTENT_TYPE_FLAG | AMQP_BASIC_TYPE_FLAG,
                                     .delivery_mode = 2,
                                     .content_type = amqp_cstring_bytes("application/msgpack"),
                                     .type = amqp_cstring_bytes("auth.result"),
                                     .correlation_id = amqp_cstring_bytes(j->correlation_id),
                                     .message_id = amqp_cstring_bytes(j->message_id)};
        if (amqp_basic_publish(c, CH_PUBLISH, amqp_empty_bytes, amqp_cstring_bytes(j->reply_to), 0,
                               0, &p, l->reply) != AMQP_STATUS_OK)
            return -1;
        j->seq = l->next_seq++;
        l->pub++;
    }
    return 0;
}

/* A delivery's content is complete: queue its reply. */
static int delivered(amqp_connection_state_t c, loop *l)
{
    l->in_delivery = 0;
    l->tail++;
    return publish_ready(c, l);
}

/* basic.ack on the confirm channel: marks the covered replies, acks (multiple) every
 * delivery from the oldest up to the first reply still unconfirmed. */
static int on_confirm(amqp_connection_state_t c, loop *l, const amqp_basic_ack_t *a)
{
    if (l->head == l->pub)
        return 0;
    uint64_t first = at(l, l->head)->seq;
    if (a->delivery_tag >= first) {
        uint64_t last = a->delivery_tag - first + l->head; /* index of the tagged reply */
        uint64_t from = a->multiple ? l->head : last;
        for (uint64_t i = from; i <= last && i < l->pub; i++)
            at(l, i)->confirmed = 1;
    }
    uint64_t acked = l->head;
    while (l->head < l->pub && at(l, l->head)->confirmed)
        l->head++;
    if (l->head == acked)
        return 0;
    l->n += l->head - acked;
    if (amqp_basic_ack(c, CH_CONSUME, at(l, l->head - 1)->dtag, 1) != AMQP_STATUS_OK)
        return -1;
    return publish_ready(c, l);
}

static int on_deliver(loop *l, const amqp_basic_deliver_t *d)
{
    if (l->tail - l->head >= l->cap) {
        fprintf(stderr, "raw_roundtrip: more deliveries in flight than the prefetch\n");
        return -1;
    }
    job *j = at(l, l->tail);
    memset(j, 0, sizeof *j);
    j->dtag = d->delivery_tag;
    l->in_delivery = 1;
    return 0;
}

static int on_header(amqp_connection_state_t c, loop *l, const amqp_frame_t *f)
{
    const amqp_basic_properties_t *p = f->payload.properties.decoded;
    job *j = at(l, l->tail);
    copy_str(j->reply_to, p->_flags, AMQP_BASIC_REPLY_TO_FLAG, p->reply_to);
    copy_str(j->correlation_id, p->_flags, AMQP_BASIC_CORRELATION_ID_FLAG, p->correlation_id);
    copy_str(j->message_id, p->_flags, AMQP_BASIC_MESSAGE_ID_FLAG, p->message_id);
    l->body_left = f->payload.properties.body_size;
    return l->body_left == 0 ? delivered(c, l) : 0;
}

static int on_frame(amqp_connection_state_t c, loop *l, const amqp_frame_t *f)
{
    if (f->frame_type == AMQP_FRAME_HEADER && f->channel == CH_CONSUME && l->in_delivery)
        return on_header(c, l, f);
    if (f->frame_type == AMQP_FRAME_BODY && f->channel == CH_CONSUME && l->in_delivery) {
        size_t n = f->payload.body_fragment.len;
        l->body_left -= n < l->body_left ? n : l->body_left;
        return l->body_left == 0 ? delivered(c, l) : 0;
    }
    if (f->frame_type != AMQP_FRAME_METHOD)
        return 0;
    switch (f->payload.method.id) {
    case AMQP_BASIC_DELIVER_METHOD:
        return on_deliver(l, f->payload.method.decoded);
    case AMQP_BASIC_ACK_METHOD:
        return on_confirm(c, l, f->payload.method.decoded);
    case AMQP_BASIC_NACK_METHOD:
        fprintf(stderr, "raw_roundtrip: the broker nacked a reply\n");
        return -1;
    case AMQP_CHANNEL_CLOSE_METHOD:
    case AMQP_CONNECTION_CLOSE_METHOD:
        fprintf(stderr, "raw_roundtrip: closed by the broker\n");
        return -1;
    default:
        return 0;
    }
}

/* Reads and handles one frame; 0 also when none came within 200 ms (to see signals). */
static int step(amqp_connection_state_t c, loop *l)
{
    struct timeval tv = {0, 200000};
    amqp_frame_t f;
    int rc = amqp_simple_wait_frame_noblock(c, &f, &tv);
    if (rc == AMQP_STATUS_TIMEOUT)
        return 0;
    if (rc != AMQP_STATUS_OK)
        return -1;
    rc = on_frame(c, l, &f);
    amqp_maybe_release_buffers_on_channel(c, f.channel);
    return rc;
}

static int arg_int(const char *s, int lo, int hi)
{
    char *end;
    long v = strtol(s, &end, 10);
    return *s && !*end && v >= lo && v <= hi ? (int)v : -1;
}

int main(int argc, char **argv)
{
    int prefetch = argc >= 4 ? arg_int(argv[2], 1, 65535) : -1;
    int bytes = argc >= 4 ? arg_int(argv[3], 0, 1 << 20) : -1;
    int window = argc == 5 ? arg_int(argv[4], 1, 65535) : 512;
    if (argc < 4 || argc > 5 || prefetch < 0 || bytes < 0 || window < 0 || !getenv("AMQP_URL")) {
        fprintf(stderr, "usage: raw_roundtrip QUEUE PREFETCH REPLY_BYTES [WINDOW] (AMQP_URL)\n");
        return 1;
    }
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    amqp_connection_state_t c = connect_url(getenv("AMQP_URL"));
    if (!c || setup(c, argv[1], prefetch) < 0) {
        fprintf(stderr, "raw_roundtrip: cannot connect or declare\n");
        return 1;
    }
    loop l = {.cap = (size_t)prefetch, .next_seq = 1, .window = (size_t)window};
    l.j = calloc(l.cap, sizeof *l.j);
    l.reply = (amqp_bytes_t){.len = (size_t)bytes, .bytes = calloc(1, bytes ? (size_t)bytes : 1)};
    int rc = l.j && l.reply.bytes ? 0 : -1;
    while (!stop && rc >= 0)
        rc = step(c, &l);
    fprintf(stderr, "raw_roundtrip: %llu deliveries acked\n", l.n);
    free(l.j);
    free(l.reply.bytes);
    amqp_connection_close(c, AMQP_REPLY_SUCCESS);
    amqp_destroy_connection(c);
    return rc < 0 ? 1 : 0;
}
