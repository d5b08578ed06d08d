/* duo_breaker.h - one circuit breaker per Duo host (Envoy's outlier ejection, Hystrix's
 * half-open probe): after `failures` consecutive failed attempts against a host (no
 * connection, timeout, 5xx, an HTML error page), the host is open for open_ms; each
 * time it opens again without a success in between, the time doubles up to
 * max_open_ms. When the time is up the host is half-open: one attempt goes through as
 * the probe (the engine sends its own, duo_async.c); its success closes the host, its
 * failure opens it again.
 *
 * A 4xx or 429 is an answer from a live host: a success here (429 has its own pacing).
 * Failures of attempts that started before the host opened do not extend it.
 *
 * Invariant: pure bookkeeping - no I/O, no clock of its own (the caller passes now), so
 * the schedule is unit-tested as it runs. One table per engine (per worker process):
 * single-threaded. Internal to the duo module and its users (the stage layer reads the
 * states it reports). */
#ifndef DUO_DUO_BREAKER_H
#define DUO_DUO_BREAKER_H

typedef enum {
    DUO_BREAKER_CLOSED = 0,
    DUO_BREAKER_OPEN = 1,
    DUO_BREAKER_HALF_OPEN = 2,
} duo_breaker_state;

/* Static lower-case name: "closed", "open", "half_open". */
const char *duo_breaker_state_name(duo_breaker_state s);

typedef struct duo_breaker_opts {
    int failures;          /* consecutive failures that open a host; 0: never opens */
    long long open_ms;     /* first open time */
    long long max_open_ms; /* the doubled open time never exceeds this */
} duo_breaker_opts;

/* Told of every state change; host borrowed for the call. open_ms: how long the host
 * stays open (0 unless the new state is open). */
typedef void (*duo_breaker_cb)(void *arg, const char *host, duo_breaker_state to,
                               long long open_ms);

typedef struct duo_breakers duo_breakers;

/* A table of hosts; cb may be NULL. NULL on out of memory. The caller owns it:
 * duo_breakers_free() (accepts NULL). */
duo_breakers *duo_breakers_new(const duo_breaker_opts *o, duo_breaker_cb cb, void *arg);
void duo_breakers_free(duo_breakers *b);

/* What admission decided for one attempt. */
typedef struct duo_breaker_ticket {
    int admitted;          /* 1: the attempt may go out */
    int probe;             /* 1: it is the half-open probe (report its result) */
    long long retry_in_ms; /* refused: ms until the host may be probed again */
    long long epoch;       /* for duo_breakers_record: which opening this attempt saw */
} duo_breaker_ticket;

/* May an attempt to host go out now? may_probe 0 for a call that cannot answer fast
 * (a long poll): it never becomes the probe and is refused while the host is not
 * closed. Unknown hosts are closed. */
duo_breaker_ticket duo_breakers_admit(duo_breakers *b, const char *host, long long now_ms,
                                      int may_probe);

/* The attempt admitted with t ended: ok 1 (an answer from a live host), 0 (a host
 * failure), -1 (says nothing about the host: cancelled, local error, TLS verification;
 * a probe's slot is given back). */
void duo_breakers_record(duo_breakers *b, const char *host, const duo_breaker_ticket *t, int ok,
                         long long now_ms);

/* The host's state now (an open host whose time is up reads half_open). */
duo_breaker_state duo_breakers_state(duo_breakers *b, const char *host, long long now_ms);

/* Moves every open host whose time is up to half_open (telling the callback), so that
 * states read by metrics follow the clock even without traffic. */
void duo_breakers_tick(duo_breakers *b, long long now_ms);

/* Calls fn for every host the table knows, with its state now. */
void duo_breakers_each(duo_breakers *b, long long now_ms,
                       void (*fn)(void *arg, const char *host, duo_breaker_state s), void *arg);

#endif
