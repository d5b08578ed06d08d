/* raw_roundtrip.c - the ceiling for the worker benchmarks: the least a job consumer can
 * do on the broker. Consumes QUEUE (a quorum queue it declares, like the job queues),
 * and for each delivery publishes a fixed reply of REPLY_BYTES to its reply_to on a
 * confirm channel, waits for the confirm, then acks - the same per-job broker work as
 * the worker runtime, with no decoding, database or Duo.
 *
 * usage: raw_roundtrip QUEUE PREFETCH REPLY_BYTES   (AMQP_URL from the environment)
 * Runs until SIGTERM/SIGINT. Exit 0 after a signal, 1 when it cannot connect. */
#include <amqp.h>
#include <amqp_tcp_socket.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static volatile sig_atomic_t stop;

static void on_signal(int sig)
{
    (void)sig;
    stop = 1;
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
    amqp_rpc_reply_t r =
        amqp_login(c, ci.vhost, 0, 131072, 30, AMQP_SASL_METHOD_PLAIN, ci.user, ci.password);
    if (r.reply_type != AMQP_RESPONSE_NORMAL) {
        amqp_destroy_connection(c);
        return NULL;
    }
    return c;
}

/* Channel 1 consumes, channel 2 publishes with confirms. */
static int setup(amqp_connection_state_t c, const char *queue, int prefetch)
{
    amqp_channel_open(c, 1);
    if (!ok(c, "channel 1"))
        return -1;
    amqp_channel_open(c, 2);
    if (!ok(c, "channel 2"))
        return -1;
    amqp_confirm_select(c, 2);
    if (!ok(c, "confirm.select"))
        return -1;
    amqp_table_entry_t qt = {
        .key = amqp_cstring_bytes("x-queue-type"),
        .value = {.kind = AMQP_FIELD_KIND_UTF8, .value.bytes = amqp_cstring_bytes("quorum")}};
    amqp_table_t args = {.num_entries = 1, .entries = &qt};
    amqp_queue_declare(c, 1, amqp_cstring_bytes(queue), 0, 1, 0, 0, args);
    if (!ok(c, "queue.declare"))
        return -1;
    amqp_basic_qos(c, 1, 0, (uint16_t)prefetch, 0);
    if (!ok(c, "basic.qos"))
        return -1;
    amqp_basic_consume(c, 1, amqp_cstring_bytes(queue), amqp_empty_bytes, 0, 0, 0,
                       amqp_empty_table);
    return ok(c, "basic.consume") ? 0 : -1;
}

/* Deliveries that arrived while a confirm was awaited, handled next (FIFO). */
typedef struct {
    uint64_t tag;
    amqp_message_t msg;
} held;

typedef struct {
    held *q;
    size_t cap, head, n;
} fifo;

/* Reads the body of a basic.deliver frame seen while waiting and keeps it. */
static int keep_delivery(amqp_connection_state_t c, const amqp_frame_t *f, fifo *q)
{
    uint64_t tag = ((amqp_basic_deliver_t *)f->payload.method.decoded)->delivery_tag;
    amqp_message_t m;
    amqp_rpc_reply_t r = amqp_read_message(c, 1, &m, 0);
    if (r.reply_type != AMQP_RESPONSE_NORMAL || q->n == q->cap)
        return -1;
    q->q[(q->head + q->n++) % q->cap] = (held){tag, m};
    return 0;
}

/* Waits for the ack of the one publish in flight on channel 2. */
static int wait_confirm(amqp_connection_state_t c, fifo *q)
{
    for (;;) {
        amqp_frame_t f;
        if (amqp_simple_wait_frame(c, &f) != AMQP_STATUS_OK)
            return -1;
        if (f.frame_type != AMQP_FRAME_METHOD)
            continue;
        amqp_method_number_t id = f.payload.method.id;
        if (f.channel == 1 && id == AMQP_BASIC_DELIVER_METHOD && keep_delivery(c, &f, q) < 0)
            return -1;
        if (f.channel == 2 && id == AMQP_BASIC_ACK_METHOD)
            return 0;
        if (f.channel == 2 && id == AMQP_BASIC_NACK_METHOD)
            return -1;
    }
}

static int reply(amqp_connection_state_t c, uint64_t tag, const amqp_message_t *msg,
                 amqp_bytes_t body, fifo *q)
{
    amqp_basic_properties_t p = {
        ._flags = AMQP_BASIC_DELIVERY_MODE_FLAG | AMQP_BASIC_CORRELATION_ID_FLAG |
                  AMQP_BASIC_MESSAGE_ID_FLAG | AMQP_BASIC_CONTENT_TYPE_FLAG,
        .delivery_mode = 2,
        .content_type = amqp_cstring_bytes("application/msgpack"),
        .correlation_id = msg->properties.correlation_id,
        .message_id = msg->properties.message_id};
    if (amqp_basic_publish(c, 2, amqp_empty_bytes, msg->properties.reply_to, 0, 0, &p, body) !=
            AMQP_STATUS_OK ||
        wait_confirm(c, q) < 0)
        return -1;
    return amqp_basic_ack(c, 1, tag, 0) == AMQP_STATUS_OK ? 0 : -1;
}

/* One delivery: a kept one first, else the next from the socket. 1 handled, 0 idle. */
static int step(amqp_connection_state_t c, fifo *q, amqp_bytes_t body)
{
    struct timeval tv = {0, 200000};
    if (q->n) {
        held h = q->q[q->head];
        q->head = (q->head + 1) % q->cap;
        q->n--;
        int rc = reply(c, h.tag, &h.msg, body, q);
        amqp_destroy_message(&h.msg);
        return rc < 0 ? -1 : 1;
    }
    amqp_envelope_t env;
    amqp_maybe_release_buffers(c);
    amqp_rpc_reply_t r = amqp_consume_message(c, &env, &tv, 0);
    if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION && r.library_error == AMQP_STATUS_TIMEOUT)
        return 0;
    if (r.reply_type != AMQP_RESPONSE_NORMAL)
        return -1;
    int rc = reply(c, env.delivery_tag, &env.message, body, q);
    amqp_destroy_envelope(&env);
    return rc < 0 ? -1 : 1;
}

int main(int argc, char **argv)
{
    if (argc != 4 || !getenv("AMQP_URL")) {
        fprintf(stderr, "usage: raw_roundtrip QUEUE PREFETCH REPLY_BYTES (AMQP_URL set)\n");
        return 1;
    }
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    amqp_connection_state_t c = connect_url(getenv("AMQP_URL"));
    if (!c || setup(c, argv[1], (int)strtol(argv[2], NULL, 10)) < 0) {
        fprintf(stderr, "raw_roundtrip: cannot connect or declare\n");
        return 1;
    }
    size_t n = (size_t)strtol(argv[3], NULL, 10);
    char *buf = calloc(1, n ? n : 1);
    amqp_bytes_t body = {.len = n, .bytes = buf};
    fifo q = {.cap = (size_t)strtol(argv[2], NULL, 10) + 64};
    q.q = calloc(q.cap, sizeof *q.q);
    while (!stop && q.q && step(c, &q, body) >= 0)
        ;
    free(q.q);
    free(buf);
    amqp_connection_close(c, AMQP_REPLY_SUCCESS);
    amqp_destroy_connection(c);
    return 0;
}
