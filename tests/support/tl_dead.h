/* tl_dead.h - dead-letter helpers for end-to-end tests of duoctl dead and status: filling
 * P.dead with known messages, the broker's own count of a queue (rabbitmqctl, the truth
 * the tools' counts are held to), and duoctl's JSON answers. */
#ifndef DUO_TL_DEAD_H
#define DUO_TL_DEAD_H

#include <jansson.h>

#include "tl_stack.h"

/* Puts n messages straight into s's P.dead (through P.dlx, publisher-confirmed): routing
 * key `kind`, type `type`, message ids "<id_prefix>-<from + i>", a schema-valid
 * enroll.begin-like body. 0 or -1 (message on stderr). */
int tl_dead_fill(tl_stack *s, const char *kind, const char *type, const char *id_prefix, int from,
                 int n);

/* What tl_dead_fill_ex publishes; every pointer borrowed for the call. */
typedef struct tl_dead_msgs {
    const char *kind, *type, *id_prefix;
    const char *stage;    /* the body's stage_uuid */
    const char *reply_to; /* NULL: none */
    int no_username;      /* 1: a body that fails the enroll.begin schema */
} tl_dead_msgs;
int tl_dead_fill_ex(tl_stack *s, const tl_dead_msgs *w, int from, int n);

/* The messages of quorum queue `name` (tests' vhost) as the queue itself counts them
 * now (rabbitmqctl eval on its state: ready and held by consumers), or -1; *leaving
 * (optional) receives those it dead-lettered that are still on their way out (a replay in
 * progress). */
long tl_mq_messages(const char *name, long *leaving);

/* Runs duoctl (tl_stack_duoctl) and parses its output as JSON: the answer (caller
 * json_decref()s), or NULL when it exited non-zero or printed no JSON (said on stderr). */
json_t *tl_duoctl_json(tl_stack *s, const char *args);

#endif
