/* chaos.c - the message side of the chaos harness (tests/chaos/run.sh drives it).
 *
 *   chaos send URLS PREFIX
 *       reads one JSON job per stdin line: {"id","type","kind","body"} (body encoded as
 *       msgpack) or {"id"?,"corr"?,"type"?,"kind","raw_hex"} (bytes sent as they are, for
 *       deliberately bad messages); publishes each to PREFIX.jobs with routing key kind,
 *       WITHOUT reply_to (replies go to PREFIX.results), persistent, and waits for the
 *       broker's confirm. A publish that fails is republished after reconnecting: such
 *       job ids are printed as {"republished": id} (the first copy may have arrived, so
 *       a second reply for them is the harness's doing, not the workers').
 *   chaos drain URLS QUEUE [--bind PREFIX] [--idle-exit MS]
 *       consumes QUEUE and prints one JSON line per message (correlation_id, message_id,
 *       type, redelivered flag, decoded body), acking each after it is written. With
 *       --bind the queue is first declared as a durable quorum queue bound to
 *       PREFIX.results with "#", so replies survive broker restarts. Reconnects across
 *       the URL list forever; with --idle-exit it exits once the queue stayed empty MS.
 *   chaos cleanup URLS PREFIX
 *       deletes every queue and exchange of PREFIX and the harness's PREFIX.chaos.replies.
 *
 * Key invariant: a message is acked only after its line reached stdout (fflush), so the
 * reply record loses nothing; a broker restart between the write and the ack shows up as
 * a line with "redelivered": 1, which the orchestrator counts apart. */
#include <amqp.h>
#include <amqp_tcp_socket.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "mq.h"
#include "msg.h"

#define LINE_MAX_BYTES (1 << 20)
#define CONFIRM_MS 15000
#define RECONNECT_MS 180000

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- send -------------------------------------------------------------------------- */

static int hex_decode(const char *hex, unsigned char **out, size_t *len)
{
    size_t n = strlen(hex) / 2;
    unsigned char *b = malloc(n ? n : 1);
    if (!b)
        return -1;
    for (size_t i = 0; i < n; i++) {
        char pair[3] = {hex[2 * i], hex[2 * i + 1], '\0'};
        b[i] = (unsigned char)strtoul(pair, NULL, 16);
    }
    *out = b;
    *len = n;
    return 0;
}

/* Builds the message for one input line; *buf receives the body the caller frees. */
static int make_msg(const json_t *j, mq_msg *m, const char *exchange, void **buf, err_t *e)
{
    memset(m, 0, sizeof *m);
    m->exchange = exchange;
    m->routing_key = json_string_value(json_object_get(j, "kind"));
    m->message_id = json_string_value(json_object_get(j, "id"));
    m->type = json_string_value(json_object_get(j, "type"));
    m->correlation_id = json_string_value(json_object_get(j, "corr"));
    if (!m->correlation_id)
        m->correlation_id = m->message_id;
    m->content_type = "application/msgpack";
    if (!m->routing_key)
        return err_set(e, ERR_INVAL, "line without kind");
    const char *hex = json_string_value(json_object_get(j, "raw_hex"));
    if (hex) {
        unsigned char *b = NULL;
        if (hex_decode(hex, &b, &m->body_len) < 0)
            return err_set(e, ERR_NOMEM, "out of memory");
        *buf = b;
        m->body = b;
        return 0;
    }
    int rc = msg_encode(json_object_get(j, "body"), buf, &m->body_len, e);
    m->body = *buf;
    return rc;
}

/* Publishes m and waits for its confirm; reconnects and tries again on failure. Returns
 * the number of extra attempts (0 = first try), or negative when the broker stayed away. */
static int publish_confirmed(mq_conn *c, const mq_msg *m, err_t *e)
{
    for (int tries = 0; tries < 50; tries++) {
        if (mq_is_broken(c) && mq_reconnect(c, RECONNECT_MS, e) < 0)
            return ERR_MQ;
        uint64_t seq = 0;
        int rc = mq_publish(c, m, &seq, e);
        if (rc == 0)
            rc = mq_wait_confirm(c, seq, CONFIRM_MS, e);
        if (rc == 0)
            return tries;
        fprintf(stderr, "chaos send: %s: %s (retrying)\n", m->message_id ? m->message_id : "-",
                e->msg);
        if (!mq_is_broken(c) && mq_reconnect(c, RECONNECT_MS, e) < 0)
            return ERR_MQ;
        usleep(200000);
    }
    return ERR_MQ;
}

static int send_line(mq_conn *c, const char *line, long *sent, err_t *e)
{
    json_error_t je;
    json_t *j = json_loads(line, 0, &je);
    if (!j)
        return err_set(e, ERR_INVAL, "bad input line: %s", je.text);
    mq_msg m;
    void *buf = NULL;
    int rc = make_msg(j, &m, mq_jobs_exchange(c), &buf, e);
    if (rc == 0)
        rc = publish_confirmed(c, &m, e);
    if (rc > 0 && m.message_id)
        printf("{\"republished\": \"%s\"}\n", m.message_id);
    if (rc >= 0)
        (*sent)++;
    free(buf);
    json_decref(j);
    return rc < 0 ? rc : 0;
}

static int cmd_send(const char *urls, const char *prefix)
{
    err_t e = {0};
    mq_opts o = {.urls = urls, .prefix = prefix, .conn_name = "chaos-send"};
    mq_conn *c = NULL;
    for (int i = 0; i < 60 && !c; i++) {
        c = mq_open(&o, &e);
        if (!c)
            sleep(1);
    }
    if (!c) {
        fprintf(stderr, "chaos send: %s\n", e.msg);
        return 1;
    }
    char *line = malloc(LINE_MAX_BYTES);
    long sent = 0;
    int rc = line ? 0 : ERR_NOMEM;
    while (rc == 0 && fgets(line, LINE_MAX_BYTES, stdin)) {
        if (line[0] == '\n')
            continue;
        rc = send_line(c, line, &sent, &e);
        fflush(stdout);
    }
    if (rc < 0)
        fprintf(stderr, "chaos send: %s\n", e.msg);
    printf("{\"done\": %ld}\n", sent);
    fflush(stdout);
    free(line);
    mq_close(c);
    return rc < 0 ? 1 : 0;
}

/* ---- drain ------------------------------------------------------------------------- */

typedef struct {
    char **urls;
    int nurls;
    int next;
    const char *queue;
    const char *bind_prefix; /* NULL: do not declare */
    long idle_exit_ms;       /* 0: never */
    amqp_connection_state_t st;
} drainer;

static int rpc_ok(amqp_connection_state_t st, const char *what)
{
    amqp_rpc_reply_t r = amqp_get_rpc_reply(st);
    if (r.reply_type == AMQP_RESPONSE_NORMAL)
        return 0;
    fprintf(stderr, "chaos drain: %s failed (reply type %d)\n", what, (int)r.reply_type);
    return -1;
}

static int declare_bound(drainer *d)
{
    amqp_table_entry_t arg[1];
    arg[0].key = amqp_cstring_bytes("x-queue-type");
    arg[0].value.kind = AMQP_FIELD_KIND_UTF8;
    arg[0].value.value.bytes = amqp_cstring_bytes("quorum");
    amqp_table_t args = {1, arg};
    amqp_queue_declare(d->st, 1, amqp_cstring_bytes(d->queue), 0, 1, 0, 0, args);
    if (rpc_ok(d->st, "queue.declare") < 0)
        return -1;
    char ex[300];
    snprintf(ex, sizeof ex, "%s.results", d->bind_prefix);
    /* The workers declare the exchange too; declaring it here lets the harness start
     * first without a race. Same arguments as common/mq_topology.c: topic, durable. */
    amqp_exchange_declare(d->st, 1, amqp_cstring_bytes(ex), amqp_cstring_bytes("topic"), 0, 1, 0, 0,
                          amqp_empty_table);
    if (rpc_ok(d->st, "exchange.declare") < 0)
        return -1;
    amqp_queue_bind(d->st, 1, amqp_cstring_bytes(d->queue), amqp_cstring_bytes(ex),
                    amqp_cstring_bytes("#"), amqp_empty_table);
    return rpc_ok(d->st, "queue.bind");
}

static int open_one(drainer *d, const char *url)
{
    char *tmp = strdup(url);
    struct amqp_connection_info ci;
    if (!tmp || amqp_parse_url(tmp, &ci) != AMQP_STATUS_OK) {
        free(tmp);
        return -1;
    }
    d->st = amqp_new_connection();
    amqp_socket_t *s = amqp_tcp_socket_new(d->st);
    struct timeval tv = {5, 0};
    int rc = -1;
    if (s && amqp_socket_open_noblock(s, ci.host, ci.port, &tv) == AMQP_STATUS_OK) {
        amqp_rpc_reply_t r =
            amqp_login(d->st, (ci.vhost && *ci.vhost) ? ci.vhost : "/", 0, AMQP_DEFAULT_FRAME_SIZE,
                       10, AMQP_SASL_METHOD_PLAIN, ci.user, ci.password);
        rc = r.reply_type == AMQP_RESPONSE_NORMAL ? 0 : -1;
    }
    free(tmp);
    if (rc == 0) {
        amqp_channel_open(d->st, 1);
        rc = rpc_ok(d->st, "channel.open");
    }
    if (rc < 0) {
        amqp_destroy_connection(d->st);
        d->st = NULL;
    }
    return rc;
}

/* Declares (with --bind) and starts consuming d->queue on the open connection. */
static int subscribe(drainer *d)
{
    int rc = d->bind_prefix ? declare_bound(d) : 0;
    if (rc == 0) {
        amqp_basic_qos(d->st, 1, 0, 500, 0);
        amqp_basic_consume(d->st, 1, amqp_cstring_bytes(d->queue), amqp_empty_bytes, 0, 0, 0,
                           amqp_empty_table);
        rc = rpc_ok(d->st, "basic.consume");
    }
    return rc;
}

static void drop(drainer *d)
{
    if (d->st)
        amqp_destroy_connection(d->st);
    d->st = NULL;
}

static void connect_any(drainer *d)
{
    for (int attempt = 0; !d->st; attempt++) {
        const char *url = d->urls[d->next];
        d->next = (d->next + 1) % d->nurls;
        if (open_one(d, url) == 0 && subscribe(d) == 0)
            return;
        drop(d);
        usleep(attempt < 10 ? 200000 : 1000000);
    }
}

static json_t *jstr_or_null(amqp_bytes_t b, int present)
{
    return present ? json_stringn(b.bytes, b.len) : json_null();
}

/* Writes one line describing a message. */
static void print_envelope(const amqp_envelope_t *env)
{
    const amqp_basic_properties_t *p = &env->message.properties;
    json_t *o = json_object();
    json_object_set_new(
        o, "corr", jstr_or_null(p->correlation_id, !!(p->_flags & AMQP_BASIC_CORRELATION_ID_FLAG)));
    json_object_set_new(o, "mid",
                        jstr_or_null(p->message_id, !!(p->_flags & AMQP_BASIC_MESSAGE_ID_FLAG)));
    json_object_set_new(o, "type", jstr_or_null(p->type, !!(p->_flags & AMQP_BASIC_TYPE_FLAG)));
    json_object_set_new(o, "rk", json_stringn(env->routing_key.bytes, env->routing_key.len));
    json_object_set_new(o, "redelivered", json_integer(env->redelivered ? 1 : 0));
    json_t *body = NULL;
    err_t e = {0};
    if (msg_decode(env->message.body.bytes, env->message.body.len, NULL, &body, &e) == 0)
        json_object_set_new(o, "body", body);
    else
        json_object_set_new(o, "decode_error", json_string(e.msg));
    char *s = json_dumps(o, JSON_COMPACT);
    if (s)
        printf("%s\n", s);
    fflush(stdout);
    free(s);
    json_decref(o);
}

/* One consume step: 1 = a message was handled, 0 = idle second, -1 = connection lost. */
static int drain_step(drainer *d)
{
    amqp_envelope_t env;
    struct timeval tv = {1, 0};
    amqp_maybe_release_buffers(d->st);
    amqp_rpc_reply_t r = amqp_consume_message(d->st, &env, &tv, 0);
    if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION && r.library_error == AMQP_STATUS_TIMEOUT)
        return 0;
    if (r.reply_type != AMQP_RESPONSE_NORMAL)
        return -1;
    print_envelope(&env);
    int ack = amqp_basic_ack(d->st, 1, env.delivery_tag, 0);
    amqp_destroy_envelope(&env);
    return ack == AMQP_STATUS_OK ? 1 : -1;
}

static int cmd_drain(drainer *d)
{
    long long last = now_ms();
    for (;;) {
        connect_any(d);
        int rc = drain_step(d);
        if (rc < 0) {
            fprintf(stderr, "chaos drain: connection lost, reconnecting\n");
            drop(d);
            continue;
        }
        if (rc > 0)
            last = now_ms();
        if (d->idle_exit_ms > 0 && now_ms() - last >= d->idle_exit_ms)
            break;
    }
    if (d->st)
        amqp_connection_close(d->st, AMQP_REPLY_SUCCESS);
    drop(d);
    return 0;
}

static int drain_main(int argc, char **argv)
{
    drainer d = {0};
    err_t e = {0};
    d.queue = argv[3];
    for (int i = 4; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--bind") == 0)
            d.bind_prefix = argv[i + 1];
        else if (strcmp(argv[i], "--idle-exit") == 0)
            d.idle_exit_ms = strtol(argv[i + 1], NULL, 10);
    }
    d.nurls = mq_urls_parse(argv[2], &d.urls, &e);
    if (d.nurls <= 0) {
        fprintf(stderr, "chaos drain: %s\n", e.msg);
        return 2;
    }
    int rc = cmd_drain(&d);
    mq_urls_free(d.urls);
    return rc;
}

/* ---- cleanup ----------------------------------------------------------------------- */

static int cmd_cleanup(const char *urls, const char *prefix)
{
    err_t e = {0};
    mq_opts o = {.urls = urls, .prefix = prefix, .conn_name = "chaos-cleanup"};
    mq_conn *c = mq_open(&o, &e);
    int rc = c ? mq_delete_topology(c, &e) : ERR_MQ;
    mq_close(c);
    char **list = NULL;
    drainer d = {0};
    if (mq_urls_parse(urls, &list, &e) > 0 && open_one(&d, list[0]) == 0) {
        char q[300];
        snprintf(q, sizeof q, "%s.chaos.replies", prefix);
        amqp_queue_delete(d.st, 1, amqp_cstring_bytes(q), 0, 0);
        amqp_connection_close(d.st, AMQP_REPLY_SUCCESS);
        drop(&d);
    }
    mq_urls_free(list);
    if (rc < 0)
        fprintf(stderr, "chaos cleanup: %s\n", e.msg);
    return rc < 0 ? 1 : 0;
}

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN);
    if (argc >= 4 && strcmp(argv[1], "send") == 0)
        return cmd_send(argv[2], argv[3]);
    if (argc >= 4 && strcmp(argv[1], "drain") == 0)
        return drain_main(argc, argv);
    if (argc >= 4 && strcmp(argv[1], "cleanup") == 0)
        return cmd_cleanup(argv[2], argv[3]);
    fprintf(stderr, "usage: chaos send URLS PREFIX < jobs.jsonl\n"
                    "       chaos drain URLS QUEUE [--bind PREFIX] [--idle-exit MS]\n"
                    "       chaos cleanup URLS PREFIX\n");
    return 2;
}
