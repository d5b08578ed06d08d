/* clock.h - the one clock every layer measures time with.
 *
 * clock_ms() is CLOCK_MONOTONIC in milliseconds: deadlines, timers, latencies. It never
 * goes backwards and has no meaning across processes (use time() for wall time). */
#ifndef DUO_CLOCK_H
#define DUO_CLOCK_H

long long clock_ms(void);

/* CLOCK_MONOTONIC in microseconds, for measuring short stages of a job. */
long long clock_us(void);

#endif
