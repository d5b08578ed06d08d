/* duo_retry.h - the one retry policy of Duo calls: which failed attempt may be tried
 * again, how long to wait before it, and whether that wait still fits the call's limits.
 * The asynchronous engine (duo_async.c) applies it; the blocking client runs on that
 * engine, so both faces retry alike.
 *
 * Invariant: pure functions (no I/O, no clock, no randomness of their own: the caller
 * passes the time and a random number), so the schedule is unit-tested as it runs.
 * Internal to the duo module. */
#ifndef DUO_RETRY_H
#define DUO_RETRY_H

#include "duo.h"

/* Backoff doubles per attempt up to this multiple of the base. */
#define DUO_BACKOFF_MAX_SHIFT 5

/* 1 when a failed attempt (rc, e) may be tried again: network failures, HTTP 429 and 5xx
 * (never other 4xx, never timeouts: Duo may already have acted). For a call that makes
 * Duo act (acts, see duo_call_acts) only 429 and attempts that never reached Duo. */
int duo_retry_allowed(int rc, const duo_error *e, int acts);

/* Wait in ms before attempt n+1 after attempt n (n >= 1) failed: Retry-After when Duo
 * sent one (retry_after_ms >= 0), else base_ms * 2^(n-1), capped at 32 x base_ms, plus a
 * jitter of jitter % (base_ms + 1), so 0 <= jitter part <= base_ms. */
long long duo_backoff_ms(int n, long long base_ms, long retry_after_ms, unsigned jitter);

/* When the next attempt may start: now_ms + wait_ms, or -1 when that is too late: at or
 * past deadline_ms (the request must have ended by then) or past start_by_ms (no
 * attempt starts later: the blocking client's retry budget). 0 means no such limit. */
long long duo_retry_wake(long long now_ms, long long wait_ms, long long deadline_ms,
                         long long start_by_ms);

#endif
