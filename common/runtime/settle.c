/* settle.c - see settle.h. */
#include "settle.h"

#include <stdlib.h>

struct settle_entry {
    uint64_t seq;
    mq_ticket ticket;
    int how;
    settle_entry *next;
};

int settle_push(settle_queue *q, uint64_t seq, mq_ticket ticket, int how)
{
    settle_entry *s = calloc(1, sizeof *s);
    if (!s)
        return -1;
    s->seq = seq;
    s->ticket = ticket;
    s->how = how;
    *(q->tail ? &q->tail->next : &q->head) = s;
    q->tail = s;
    q->n++;
    return 0;
}

size_t settle_ready(settle_queue *q, settle_confirmed_fn confirmed, settle_fn settle, void *arg)
{
    settle_entry **pp = &q->head, *prev = NULL;
    size_t done = 0;
    while (*pp) {
        settle_entry *s = *pp;
        int c = confirmed(arg, s->seq);
        if (c == 0) {
            prev = s;
            pp = &s->next;
            continue;
        }
        settle(arg, s->ticket, c == 1 ? s->how : SETTLE_REQUEUE);
        *pp = s->next;
        if (q->tail == s)
            q->tail = prev;
        q->n--;
        done++;
        free(s);
    }
    return done;
}

uint64_t settle_last_seq(const settle_queue *q)
{
    return q->tail ? q->tail->seq : 0;
}

void settle_clear(settle_queue *q)
{
    while (q->head) {
        settle_entry *s = q->head;
        q->head = s->next;
        free(s);
    }
    q->tail = NULL;
    q->n = 0;
}
