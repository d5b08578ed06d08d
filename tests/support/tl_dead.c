/* tl_dead.c - dead-letter helpers for end-to-end tests (tl_dead.h). */
#include "tl_dead.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mq.h"
#include "msg.h"
#include "testlib.h"

static int publish_one(mq_conn *c, const char *dlx, const tl_dead_msgs *w, const char *id,
                       uint64_t *seq, err_t *e)
{
    char user[300];
    snprintf(user, sizeof user, "u%s", id);
    json_t *b = w->no_username ? json_pack("{s:s}", "stage_uuid", w->stage)
                               : json_pack("{s:s, s:s}", "stage_uuid", w->stage, "username", user);
    void *buf = NULL;
    size_t len = 0;
    int rc = msg_encode(b, &buf, &len, e);
    json_decref(b);
    mq_msg m = {.exchange = dlx,
                .routing_key = w->kind,
                .body = buf,
                .body_len = len,
                .message_id = id,
                .type = w->type,
                .reply_to = w->reply_to,
                .content_type = "application/msgpack"};
    if (rc == 0)
        rc = mq_publish(c, &m, seq, e);
    free(buf);
    return rc;
}

int tl_dead_fill(tl_stack *s, const char *kind, const char *type, const char *id_prefix, int from,
                 int n)
{
    tl_dead_msgs w = {kind, type, id_prefix, s->stage_uuid, NULL, 0};
    return tl_dead_fill_ex(s, &w, from, n);
}

int tl_dead_fill_ex(tl_stack *s, const tl_dead_msgs *w, int from, int n)
{
    mq_opts o = {.urls = tl_env("AMQP_URL"), .prefix = s->prefix, .conn_name = "tl_dead_fill"};
    err_t e = {0};
    mq_conn *c = mq_open(&o, &e);
    if (!c) {
        fprintf(stderr, "tl_dead_fill: %s\n", e.msg);
        return -1;
    }
    char dlx[256], id[256];
    snprintf(dlx, sizeof dlx, "%s.dlx", s->prefix);
    uint64_t seq = 0;
    int rc = 0;
    for (int i = 0; rc == 0 && i < n; i++) {
        snprintf(id, sizeof id, "%s-%d", w->id_prefix, from + i);
        rc = publish_one(c, dlx, w, id, &seq, &e);
        if (rc == 0 && i % 1000 == 999) /* keep the unconfirmed window small */
            rc = mq_wait_confirm(c, seq, 60000, &e);
    }
    if (rc == 0 && n > 0)
        rc = mq_wait_confirm(c, seq, 60000, &e);
    if (rc < 0)
        fprintf(stderr, "tl_dead_fill: %s\n", e.msg);
    mq_close(c);
    return rc < 0 ? -1 : 0;
}

/* The vhost of AMQP_URL (its path), "/" when it has none. */
static void url_vhost(char *out, size_t n)
{
    const char *u = tl_env("AMQP_URL");
    const char *h = strstr(u, "://");
    const char *p = h ? strchr(h + 3, '/') : NULL;
    snprintf(out, n, "%s", p && p[1] ? p + 1 : "/");
}

long tl_mq_messages(const char *name, long *leaving)
{
    char vhost[128], cmd[2048], line[512];
    url_vhost(vhost, sizeof vhost);
    /* The queue's own state, read on its leader: list_queues' counts are the metrics of
     * the last tick, seconds old. */
    snprintf(cmd, sizeof cmd,
             "bash %s/scripts/services.sh mqctl eval '{ok, Q} = rabbit_amqqueue:lookup("
             "rabbit_misc:r(<<\"%s\">>, queue, <<\"%s\">>)), {ok, {_, O}, _} = "
             "ra:local_query(amqqueue:get_pid(Q), fun rabbit_fifo:overview/1), "
             "io_lib:format(\"~b ~b\", [maps:get(num_messages, O), maps:get(num_discarded, O) "
             "+ maps:get(num_discard_checked_out, O)]).' 2>/dev/null",
             tl_env("DUO_SOURCE_DIR"), vhost, name);
    FILE *p = popen(cmd, "r");
    long v = -1, out = -1;
    if (p && fgets(line, sizeof line, p)) {
        const char *q = line + strspn(line, "\"");
        if (sscanf(q, "%ld %ld", &v, &out) != 2)
            v = -1;
    }
    if (p)
        pclose(p);
    if (leaving)
        *leaving = out;
    return v;
}

json_t *tl_duoctl_json(tl_stack *s, const char *args)
{
    static char out[1 << 22];
    int rc = tl_stack_duoctl(s, args, out, sizeof out);
    json_t *j = rc == 0 ? json_loads(out, JSON_DISABLE_EOF_CHECK, NULL) : NULL;
    if (!j)
        fprintf(stderr, "duoctl %s: exit %d: %.2000s\n", args, rc, out);
    return j;
}
