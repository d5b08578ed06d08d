/* mq_conn.c - connection lifecycle of the AMQP transport: open, login, channels,
 * close, reconnect with jittered backoff across the URL list.
 *
 * Key invariant: a connection is either fully set up (topology declared, confirm mode on,
 * consumers started) with a fresh generation, or torn down (st == NULL); a half-open
 * connection is never left in c->st. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <amqp.h>
#include <amqp_framing.h>
#include <amqp_ssl_socket.h>
#include <amqp_tcp_socket.h>
#include <openssl/ssl.h>

#include "log.h"
#include "mq_int.h"

static struct timeval ms_to_tv(int ms)
{
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    return tv;
}

static amqp_socket_t *make_socket(mq_conn *c, amqp_connection_state_t st, int ssl, err_t *e)
{
    if (!ssl) {
        amqp_socket_t *s = amqp_tcp_socket_new(st);
        if (!s)
            err_set(e, ERR_NOMEM, "creating AMQP socket");
        return s;
    }
    amqp_socket_t *s = amqp_ssl_socket_new(st);
    if (!s) {
        err_set(e, ERR_TLS, "creating AMQP TLS socket");
        return NULL;
    }
    amqp_ssl_socket_set_verify_peer(s, 1);
    amqp_ssl_socket_set_verify_hostname(s, 1);
    if (c->ca_file) {
        if (amqp_ssl_socket_set_cacert(s, c->ca_file) != AMQP_STATUS_OK) {
            err_set(e, ERR_TLS, "loading AMQP CA file %s", c->ca_file);
            return NULL;
        }
    } else {
        SSL_CTX_set_default_verify_paths(amqp_ssl_socket_get_context(s));
    }
    return s;
}

/* A failed TLS handshake, turned into one line naming the setting to fix: the CA
 * (AMQP_CA_FILE) when the chain does not verify, the URL's host when the certificate
 * names another one. */
static int tls_error(const mq_conn *c, const struct amqp_connection_info *ci, int status, err_t *e)
{
    const char *ca = c->ca_file ? c->ca_file : "the system CAs (AMQP_CA_FILE unset)";
    switch (status) {
    case AMQP_STATUS_SSL_PEER_VERIFY_FAILED:
        return err_set(e, ERR_TLS, "AMQP_CA_FILE: the broker's certificate is not signed by %s",
                       ca);
    case AMQP_STATUS_SSL_HOSTNAME_VERIFY_FAILED:
        return err_set(e, ERR_TLS,
                       "AMQP_URL: host '%s' does not match the names in the broker's certificate",
                       ci->host);
    case AMQP_STATUS_SSL_CONNECTION_FAILED:
        return err_set(e, ERR_TLS,
                       "AMQP_URL/AMQP_CA_FILE: TLS handshake with the broker failed (is the port "
                       "a TLS listener, and does %s sign its certificate?)",
                       ca);
    default:
        return mq_err_status(e, status, "connecting to AMQP broker");
    }
}

/* Client properties: connection name, product, and the capability that makes the
 * broker tell us (basic.cancel) when a consumed queue disappears. */
static amqp_rpc_reply_t login(mq_conn *c, amqp_connection_state_t st,
                              const struct amqp_connection_info *ci)
{
    amqp_table_entry_t caps[1];
    caps[0].key = amqp_cstring_bytes("consumer_cancel_notify");
    caps[0].value.kind = AMQP_FIELD_KIND_BOOLEAN;
    caps[0].value.value.boolean = 1;
    amqp_table_entry_t ent[3];
    int n = 0;
    ent[n].key = amqp_cstring_bytes("product");
    ent[n].value.kind = AMQP_FIELD_KIND_UTF8;
    ent[n++].value.value.bytes = amqp_cstring_bytes("duo-workers");
    ent[n].key = amqp_cstring_bytes("capabilities");
    ent[n].value.kind = AMQP_FIELD_KIND_TABLE;
    ent[n].value.value.table.num_entries = 1;
    ent[n++].value.value.table.entries = caps;
    if (c->conn_name) {
        ent[n].key = amqp_cstring_bytes("connection_name");
        ent[n].value.kind = AMQP_FIELD_KIND_UTF8;
        ent[n++].value.value.bytes = amqp_cstring_bytes(c->conn_name);
    }
    amqp_table_t props = {n, ent};
    return amqp_login_with_properties(st, ci->vhost, 0, AMQP_DEFAULT_FRAME_SIZE, c->heartbeat,
                                      &props, AMQP_SASL_METHOD_PLAIN, ci->user, ci->password);
}

static int open_channels(amqp_connection_state_t st, err_t *e)
{
    for (int ch = CH_CONSUME; ch <= CH_ADMIN; ch++) {
        amqp_channel_open(st, (amqp_channel_t)ch);
        int rc = mq_err_reply(e, amqp_get_rpc_reply(st), "opening channel");
        if (rc < 0)
            return rc;
    }
    amqp_confirm_select(st, CH_PUBLISH);
    return mq_err_reply(e, amqp_get_rpc_reply(st), "enabling publisher confirms");
}

/* Socket, TLS, login, channels; on success *out is a logged-in connection. */
static int handshake(mq_conn *c, struct amqp_connection_info *ci, amqp_connection_state_t *out,
                     err_t *e)
{
    amqp_connection_state_t st = amqp_new_connection();
    if (!st)
        return err_set(e, ERR_NOMEM, "creating AMQP connection");
    int rc;
    amqp_socket_t *s = make_socket(c, st, ci->ssl, e);
    if (!s) {
        rc = e ? e->code : ERR_MQ;
        goto fail;
    }
    struct timeval tv = ms_to_tv(c->rpc_timeout_ms);
    amqp_set_handshake_timeout(st, &tv);
    amqp_set_rpc_timeout(st, &tv);
    rc = amqp_socket_open_noblock(s, ci->host, ci->port, &tv);
    if (rc != AMQP_STATUS_OK) {
        rc = ci->ssl ? tls_error(c, ci, rc, e) : mq_err_status(e, rc, "connecting to AMQP broker");
        goto fail;
    }
    rc = mq_err_reply(e, login(c, st, ci), "logging in to AMQP broker");
    if (rc < 0)
        goto fail;
    rc = open_channels(st, e);
    if (rc < 0)
        goto fail;
    *out = st;
    return 0;
fail:
    amqp_destroy_connection(st);
    return rc < 0 ? rc : ERR_MQ;
}

int mq_connect_once(mq_conn *c, const char *url, err_t *e)
{
    char *tmp = strdup(url);
    if (!tmp)
        return err_set(e, ERR_NOMEM, "out of memory");
    struct amqp_connection_info ci;
    int rc = amqp_parse_url(tmp, &ci);
    if (rc != AMQP_STATUS_OK) {
        free(tmp);
        return mq_err_status(e, rc, "parsing AMQP URL");
    }
    /* "amqp://host/" parses to the empty vhost, which RabbitMQ never has: mean "/". */
    if (!ci.vhost || !*ci.vhost)
        ci.vhost = "/";
    amqp_connection_state_t st = NULL;
    rc = handshake(c, &ci, &st, e);
    if (rc < 0) {
        err_wrap(e, rc, "%s:%d", ci.host, ci.port);
        free(tmp);
        return rc;
    }
    c->st = st;
    snprintf(c->user, sizeof c->user, "%s", ci.user ? ci.user : "");
    c->broken = 0;
    c->gen++;
    c->seq_base += c->chan_seq;
    c->chan_seq = 0;
    rc = c->no_topology ? 0 : mq_declare_topology(c, e);
    if (rc == 0 && c->kinds[0])
        rc = mq_start_consuming(c, e);
    if (rc == 0 && c->want_reply_queue)
        rc = mq_start_reply_queue(c, e);
    if (rc < 0) {
        err_wrap(e, rc, "%s:%d", ci.host, ci.port);
        mq_drop(c, 0);
    } else {
        LOG(LOG_INFO, "amqp connected", "host", ci.host, "prefix", c->prefix);
    }
    free(tmp);
    return rc;
}

void mq_drop(mq_conn *c, int graceful)
{
    if (c->st) {
        if (graceful && !c->broken)
            amqp_connection_close(c->st, AMQP_REPLY_SUCCESS);
        amqp_destroy_connection(c->st);
        c->st = NULL;
    }
    c->broken = 1;
    mq_seq_fail_pending(c);
    mq_queue_clear(c);
}

int mq_error_is_connection(int code)
{
    return code == ERR_MQ || code == ERR_TIMEOUT || code == ERR_NET || code == ERR_TLS;
}

int mq_fd(const mq_conn *c)
{
    if (!c || !c->st)
        return -1;
    return amqp_get_sockfd(c->st);
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0)
        ;
}

int mq_reconnect(mq_conn *c, int max_wait_ms, err_t *e)
{
    mq_drop(c, 1);
    int64_t deadline = max_wait_ms > 0 ? clock_ms() + max_wait_ms : INT64_MAX;
    int rc = ERR_MQ;
    for (int attempt = 0;; attempt++) {
        const char *url = c->urls[c->next_url];
        c->next_url = (c->next_url + 1) % c->nurls;
        rc = mq_connect_once(c, url, e);
        if (rc == 0)
            return 0;
        LOG(LOG_WARN, "amqp reconnect failed", "error", e ? e->msg : err_name(rc));
        int wait =
            mq_backoff_ms(attempt < 30 ? attempt : 30, (double)rand_r(&c->rnd_state) / RAND_MAX);
        int64_t left = deadline - clock_ms();
        if (left <= 0)
            break;
        sleep_ms(wait < left ? wait : (int)left);
        if (deadline - clock_ms() <= 0)
            break;
    }
    err_wrap(e, rc, "reconnecting to AMQP gave up after %d ms", max_wait_ms);
    if (e)
        e->code = ERR_TIMEOUT;
    return ERR_TIMEOUT;
}

const char *mq_user(const mq_conn *c)
{
    return c && c->st ? c->user : "";
}
