/* jobs_client.c - publish jobs, collect replies by correlation id. Replies for other jobs
 * are parked in a small list until asked for. */
#include "jobs_client.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clock.h"
#include "msg.h"

typedef struct parked {
    char *correlation_id;
    char *type;
    json_t *reply;
    struct parked *next;
} parked;

struct jobs_client {
    mq_conn *mq;
    parked *parked;
};

jobs_client *jobs_client_open(const char *urls, const char *prefix, const char *results_bind,
                              err_t *e)
{
    return jobs_client_open_ex(urls, prefix, results_bind, NULL, 1, e);
}

jobs_client *jobs_client_open_ex(const char *urls, const char *prefix, const char *results_bind,
                                 const char *ca_file, int declare, err_t *e)
{
    jobs_client *c = calloc(1, sizeof *c);
    if (!c) {
        err_set(e, ERR_NOMEM, "out of memory");
        return NULL;
    }
    mq_opts o = {.urls = urls,
                 .prefix = prefix,
                 .heartbeat_secs = 30,
                 .prefetch = 1000,
                 .reply_queue = 1,
                 .reply_bind = results_bind,
                 .conn_name = "jobs client",
                 .ca_file = ca_file,
                 .no_topology = !declare,
                 .max_message_bytes = 16u << 20};
    c->mq = mq_open(&o, e);
    if (!c->mq) {
        free(c);
        return NULL;
    }
    return c;
}

static void parked_free(parked *p)
{
    free(p->correlation_id);
    free(p->type);
    json_decref(p->reply);
    free(p);
}

void jobs_client_close(jobs_client *c)
{
    if (!c)
        return;
    while (c->parked) {
        parked *n = c->parked->next;
        parked_free(c->parked);
        c->parked = n;
    }
    mq_close(c->mq);
    free(c);
}

const char *jobs_kind_of(const char *type)
{
    if (!type)
        return NULL;
    if (strncmp(type, "enroll.", 7) == 0)
        return MQ_KIND_ENROLL;
    if (strcmp(type, "auth") == 0)
        return MQ_KIND_AUTH;
    if (strncmp(type, "import.", 7) == 0)
        return MQ_KIND_IMPORT;
    return NULL;
}

const char *jobs_reply_queue(const jobs_client *c)
{
    return mq_reply_queue(c->mq);
}

int jobs_send_raw(jobs_client *c, const mq_msg *m, err_t *e)
{
    /* A client outlives broker restarts: reconnect (a new reply queue) before sending. */
    if (mq_is_broken(c->mq) && mq_reconnect(c->mq, 30000, e) < 0)
        return ERR_MQ;
    mq_msg copy = *m;
    if (!copy.exchange)
        copy.exchange = mq_jobs_exchange(c->mq);
    if (!copy.reply_to)
        copy.reply_to = mq_reply_queue(c->mq);
    /* Our broker user, validated by the broker: the worker records it as the publisher. */
    if (!copy.user_id && *mq_user(c->mq))
        copy.user_id = mq_user(c->mq);
    uint64_t seq = 0;
    int rc = mq_publish(c->mq, &copy, &seq, e);
    if (rc == 0)
        rc = mq_wait_confirm(c->mq, seq, 30000, e);
    return rc;
}

int jobs_send(jobs_client *c, const char *type, const char *job_id, const json_t *body, err_t *e)
{
    const char *kind = jobs_kind_of(type);
    if (!kind)
        return err_set(e, ERR_INVAL, "unknown job type '%s'", type ? type : "");
    void *buf = NULL;
    size_t len = 0;
    int rc = msg_encode(body, &buf, &len, e);
    if (rc < 0)
        return rc;
    mq_msg m = {.routing_key = kind,
                .body = buf,
                .body_len = len,
                .message_id = job_id,
                .correlation_id = job_id,
                .type = type,
                .content_type = "application/msgpack"};
    rc = jobs_send_raw(c, &m, e);
    free(buf);
    return rc;
}

/* Takes the first parked reply matching id (any when id is NULL). */
static parked *unpark(jobs_client *c, const char *id)
{
    for (parked **pp = &c->parked; *pp; pp = &(*pp)->next) {
        if (!id || strcmp((*pp)->correlation_id, id) == 0) {
            parked *p = *pp;
            *pp = p->next;
            return p;
        }
    }
    return NULL;
}

/* Receives one reply into the parked list; 1 got one, 0 timeout, < 0 error. */
static int receive(jobs_client *c, int timeout_ms, err_t *e)
{
    mq_delivery *d = NULL;
    int rc = mq_poll(c->mq, timeout_ms, &d, e);
    if (rc <= 0)
        return rc;
    parked *p = calloc(1, sizeof *p);
    json_t *reply = NULL;
    msg_limits lim = {.max_bytes = 16u << 20};
    if (p && msg_decode(d->body, d->body_len, &lim, &reply, e) < 0)
        reply = json_pack("{s:s}", "undecodable_reply", e->msg);
    if (p) {
        p->reply = reply;
        p->correlation_id = strdup(d->correlation_id ? d->correlation_id : "");
        p->type = strdup(d->type ? d->type : "");
        parked **tail = &c->parked;
        while (*tail)
            tail = &(*tail)->next;
        *tail = p;
    }
    mq_ack(c->mq, d, NULL);
    mq_delivery_free(d);
    return p ? 1 : err_set(e, ERR_NOMEM, "out of memory");
}

static int wait_for(jobs_client *c, const char *id, int timeout_ms, parked **out, err_t *e)
{
    long long deadline = clock_ms() + timeout_ms;
    for (;;) {
        if ((*out = unpark(c, id)))
            return 1;
        long long left = deadline - clock_ms();
        if (left <= 0)
            return 0;
        int rc = receive(c, (int)(left > 1000 ? 1000 : left), e);
        if (rc < 0)
            return rc;
    }
}

int jobs_wait(jobs_client *c, const char *job_id, int timeout_ms, json_t **reply, char **type,
              err_t *e)
{
    parked *p = NULL;
    int rc = wait_for(c, job_id, timeout_ms, &p, e);
    if (rc != 1)
        return rc;
    *reply = p->reply;
    p->reply = NULL;
    if (type) {
        *type = p->type;
        p->type = NULL;
    }
    parked_free(p);
    return 1;
}

int jobs_next(jobs_client *c, int timeout_ms, json_t **reply, char **correlation_id, err_t *e)
{
    parked *p = NULL;
    int rc = wait_for(c, NULL, timeout_ms, &p, e);
    if (rc != 1)
        return rc;
    *reply = p->reply;
    p->reply = NULL;
    if (correlation_id) {
        *correlation_id = p->correlation_id;
        p->correlation_id = NULL;
    }
    parked_free(p);
    return 1;
}
