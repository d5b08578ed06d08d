/* mq_err.c - the one place where rabbitmq-c errors become err_t.
 *
 * rabbitmq-c reports failure three ways: negative amqp_status_enum ints, amqp_rpc_reply_t
 * (library exception, server exception carrying a close method, or NONE), and close
 * methods that arrive asynchronously as frames. Each form is converted here exactly once
 * into ERR_MQ or ERR_TIMEOUT with a message naming the action that failed. */
#include <string.h>

#include <amqp.h>
#include <amqp_framing.h>

#include "mq_int.h"

int mq_err_status(err_t *e, int status, const char *what)
{
    int code = status == AMQP_STATUS_TIMEOUT ? ERR_TIMEOUT : ERR_MQ;
    if (status == AMQP_STATUS_NO_MEMORY)
        code = ERR_NOMEM;
    return err_set(e, code, "%s: %s", what, amqp_error_string2(status));
}

/* reply_text of a close method, bounded for the message. */
static int close_text_len(amqp_bytes_t t)
{
    return t.len > 200 ? 200 : (int)t.len;
}

int mq_err_method(err_t *e, const amqp_method_t *m, const char *what)
{
    if (m->id == AMQP_CONNECTION_CLOSE_METHOD && m->decoded) {
        const amqp_connection_close_t *cc = m->decoded;
        return err_set(e, ERR_MQ, "%s: connection closed by broker: %u %.*s", what, cc->reply_code,
                       close_text_len(cc->reply_text), (const char *)cc->reply_text.bytes);
    }
    if (m->id == AMQP_CHANNEL_CLOSE_METHOD && m->decoded) {
        const amqp_channel_close_t *cc = m->decoded;
        return err_set(e, ERR_MQ, "%s: channel closed by broker: %u %.*s", what, cc->reply_code,
                       close_text_len(cc->reply_text), (const char *)cc->reply_text.bytes);
    }
    return err_set(e, ERR_MQ, "%s: unexpected method 0x%08x from broker", what, (unsigned)m->id);
}

int mq_err_reply(err_t *e, amqp_rpc_reply_t r, const char *what)
{
    switch (r.reply_type) {
    case AMQP_RESPONSE_NORMAL:
        return 0;
    case AMQP_RESPONSE_NONE:
        return err_set(e, ERR_MQ, "%s: no reply from broker (missing RPC reply type)", what);
    case AMQP_RESPONSE_LIBRARY_EXCEPTION:
        return mq_err_status(e, r.library_error, what);
    case AMQP_RESPONSE_SERVER_EXCEPTION:
        return mq_err_method(e, &r.reply, what);
    }
    return err_set(e, ERR_MQ, "%s: unknown reply type %d", what, (int)r.reply_type);
}
