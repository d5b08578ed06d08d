/* dead_fill.c - puts N schema-valid enroll.begin messages straight into P.dead (through
 * P.dlx, confirmed), to time `duoctl status`, `duoctl dead list` and `duoctl dead replay`
 * on a dead-letter queue of a known size (bench/README.md, "Dead letters").
 *   AMQP_URL=... MQ_PREFIX=... dead_fill N STAGE_UUID */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "mq.h"
#include "msg.h"

int main(int argc, char **argv)
{
    if (argc != 3 || !getenv("AMQP_URL") || !getenv("MQ_PREFIX")) {
        fprintf(stderr, "usage: AMQP_URL=... MQ_PREFIX=... dead_fill N STAGE_UUID\n");
        return 2;
    }
    long n = strtol(argv[1], NULL, 10);
    mq_opts o = {.urls = getenv("AMQP_URL"), .prefix = getenv("MQ_PREFIX")};
    err_t e = {0};
    mq_conn *c = mq_open(&o, &e);
    if (!c) {
        fprintf(stderr, "dead_fill: %s\n", e.msg);
        return 1;
    }
    char dlx[256], id[64], user[32];
    snprintf(dlx, sizeof dlx, "%s.dlx", o.prefix);
    uint64_t seq = 0;
    int rc = 0;
    for (long i = 0; rc == 0 && i < n; i++) {
        snprintf(id, sizeof id, "fill-%ld", i);
        snprintf(user, sizeof user, "user%ld", i);
        json_t *b = json_pack("{s:s, s:s}", "stage_uuid", argv[2], "username", user);
        void *buf = NULL;
        size_t len = 0;
        rc = msg_encode(b, &buf, &len, &e);
        json_decref(b);
        mq_msg m = {.exchange = dlx,
                    .routing_key = "enroll",
                    .body = buf,
                    .body_len = len,
                    .message_id = id,
                    .type = "enroll.begin",
                    .content_type = "application/msgpack"};
        if (rc == 0)
            rc = mq_publish(c, &m, &seq, &e);
        free(buf);
    }
    if (rc == 0)
        rc = mq_wait_confirm(c, seq, 60000, &e);
    if (rc < 0)
        fprintf(stderr, "dead_fill: %s\n", e.msg);
    mq_close(c);
    return rc < 0 ? 1 : 0;
}
