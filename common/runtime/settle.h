/* settle.h - deliveries whose replies await the broker's publisher confirm, in publish
 * order. A delivery is settled (acked, or rejected into the dead-letter queue) only once
 * its reply is confirmed; a reply nacked or lost with the connection leaves its delivery
 * to the broker's redelivery (requeue), which re-sends the stored reply.
 *
 * Pure bookkeeping: the caller says how to ask for a confirm and how to settle, so the
 * queue is tested without a broker. */
#ifndef DUO_SETTLE_H
#define DUO_SETTLE_H

#include <stddef.h>
#include <stdint.h>

#include "mq.h"

typedef struct settle_entry settle_entry;

/* A zeroed queue is empty and valid. */
typedef struct settle_queue {
    settle_entry *head, *tail;
    size_t n;
} settle_queue;

/* How a delivery is settled once its reply is confirmed (mq_settle's `how`). */
enum { SETTLE_ACK = 0, SETTLE_REQUEUE = 1, SETTLE_DEAD_LETTER = -1 };

/* Queues a delivery (ticket) whose reply was published as seq, to be settled `how`.
 * Returns 0, or -1 on out of memory (nothing queued: the caller must not ack). */
int settle_push(settle_queue *q, uint64_t seq, mq_ticket ticket, int how);

/* 1 = confirmed, 0 = pending, -1 = nacked or lost (as mq_confirmed). */
typedef int (*settle_confirmed_fn)(void *arg, uint64_t seq);
/* Settles one delivery (as mq_settle). */
typedef void (*settle_fn)(void *arg, mq_ticket ticket, int how);

/* Settles every queued delivery whose reply is decided: confirmed ones `how`, failed
 * ones SETTLE_REQUEUE; pending ones stay in order. Returns how many were settled. */
size_t settle_ready(settle_queue *q, settle_confirmed_fn confirmed, settle_fn settle, void *arg);

/* The newest queued reply's seq (0 when empty): once it is decided, so are all. */
uint64_t settle_last_seq(const settle_queue *q);

/* Forgets every queued delivery without settling it (the broker requeues them when the
 * connection closes). */
void settle_clear(settle_queue *q);

#endif
