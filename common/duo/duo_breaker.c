/* duo_breaker.c - per-host circuit breakers (see duo_breaker.h). A short list of hosts:
 * a worker talks to as many Duo hosts as it has stages, a handful to a few dozen. */
#include "duo_breaker.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* A refused long poll, or a call refused while the probe is out, may ask again after. */
#define BREAKER_BUSY_RETRY_MS 1000

typedef struct host_entry {
    char *host;
    duo_breaker_state state;
    int failures;         /* consecutive, while closed */
    long long open_ms;    /* the current open time (doubles while probes fail) */
    long long open_until; /* while open */
    long long epoch;      /* bumped each time the host opens */
    int probe_out;        /* half-open: the probe is on the wire */
    struct host_entry *next;
} host_entry;

struct duo_breakers {
    duo_breaker_opts o;
    duo_breaker_cb cb;
    void *arg;
    host_entry *hosts;
};

const char *duo_breaker_state_name(duo_breaker_state s)
{
    switch (s) {
    case DUO_BREAKER_OPEN:
        return "open";
    case DUO_BREAKER_HALF_OPEN:
        return "half_open";
    default:
        return "closed";
    }
}

duo_breakers *duo_breakers_new(const duo_breaker_opts *o, duo_breaker_cb cb, void *arg)
{
    duo_breakers *b = calloc(1, sizeof *b);
    if (!b)
        return NULL;
    if (o)
        b->o = *o;
    if (b->o.open_ms < 1)
        b->o.open_ms = 1;
    if (b->o.max_open_ms < b->o.open_ms)
        b->o.max_open_ms = b->o.open_ms;
    b->cb = cb;
    b->arg = arg;
    return b;
}

void duo_breakers_free(duo_breakers *b)
{
    if (!b)
        return;
    while (b->hosts) {
        host_entry *h = b->hosts;
        b->hosts = h->next;
        free(h->host);
        free(h);
    }
    free(b);
}

static host_entry *find(duo_breakers *b, const char *host, int create)
{
    for (host_entry *h = b->hosts; h; h = h->next)
        if (strcasecmp(h->host, host) == 0)
            return h;
    if (!create)
        return NULL;
    host_entry *h = calloc(1, sizeof *h);
    if (!h || !(h->host = strdup(host))) {
        free(h);
        return NULL; /* out of memory: the host is treated as closed */
    }
    h->open_ms = b->o.open_ms;
    h->next = b->hosts;
    b->hosts = h;
    return h;
}

static void move(duo_breakers *b, host_entry *h, duo_breaker_state to, long long now)
{
    h->state = to;
    h->probe_out = 0;
    if (to == DUO_BREAKER_OPEN) {
        h->epoch++;
        h->open_until = now + h->open_ms;
    } else if (to == DUO_BREAKER_CLOSED) {
        h->failures = 0;
        h->open_ms = b->o.open_ms;
    }
    if (b->cb)
        b->cb(b->arg, h->host, to, to == DUO_BREAKER_OPEN ? h->open_ms : 0);
}

static void due(duo_breakers *b, host_entry *h, long long now)
{
    if (h->state == DUO_BREAKER_OPEN && now >= h->open_until)
        move(b, h, DUO_BREAKER_HALF_OPEN, now);
}

duo_breaker_ticket duo_breakers_admit(duo_breakers *b, const char *host, long long now_ms,
                                      int may_probe)
{
    duo_breaker_ticket t = {.admitted = 1};
    host_entry *h = b && host ? find(b, host, 1) : NULL;
    if (!h)
        return t;
    due(b, h, now_ms);
    t.epoch = h->epoch;
    if (h->state == DUO_BREAKER_CLOSED)
        return t;
    t.admitted = 0;
    if (h->state == DUO_BREAKER_OPEN) {
        t.retry_in_ms = h->open_until - now_ms;
    } else if (!may_probe || h->probe_out) {
        t.retry_in_ms = BREAKER_BUSY_RETRY_MS;
    } else {
        h->probe_out = 1;
        t.admitted = t.probe = 1;
    }
    return t;
}

void duo_breakers_record(duo_breakers *b, const char *host, const duo_breaker_ticket *t, int ok,
                         long long now_ms)
{
    host_entry *h = b && host && t && t->admitted ? find(b, host, 0) : NULL;
    if (!h)
        return;
    if (t->probe && h->state == DUO_BREAKER_HALF_OPEN && t->epoch == h->epoch)
        h->probe_out = 0;
    /* An attempt that started before the host last opened says nothing new. */
    if (ok < 0 || t->epoch != h->epoch)
        return;
    if (ok) {
        if (h->state != DUO_BREAKER_CLOSED)
            move(b, h, DUO_BREAKER_CLOSED, now_ms);
        h->failures = 0;
        return;
    }
    if (h->state == DUO_BREAKER_HALF_OPEN && t->probe) {
        h->open_ms = h->open_ms * 2 > b->o.max_open_ms ? b->o.max_open_ms : h->open_ms * 2;
        move(b, h, DUO_BREAKER_OPEN, now_ms);
    } else if (h->state == DUO_BREAKER_CLOSED && b->o.failures > 0 &&
               ++h->failures >= b->o.failures) {
        move(b, h, DUO_BREAKER_OPEN, now_ms);
    }
}

duo_breaker_state duo_breakers_state(duo_breakers *b, const char *host, long long now_ms)
{
    host_entry *h = b && host ? find(b, host, 0) : NULL;
    if (!h)
        return DUO_BREAKER_CLOSED;
    if (h->state == DUO_BREAKER_OPEN && now_ms >= h->open_until)
        return DUO_BREAKER_HALF_OPEN;
    return h->state;
}

void duo_breakers_tick(duo_breakers *b, long long now_ms)
{
    for (host_entry *h = b ? b->hosts : NULL; h; h = h->next)
        due(b, h, now_ms);
}

void duo_breakers_each(duo_breakers *b, long long now_ms,
                       void (*fn)(void *arg, const char *host, duo_breaker_state s), void *arg)
{
    for (host_entry *h = b ? b->hosts : NULL; h; h = h->next)
        fn(arg, h->host, duo_breakers_state(b, h->host, now_ms));
}
