/* rng.h - the seed of every jitter in the project (reconnect backoff, retry backoff).
 * Each process and each connection must wait different delays after a failover, or all
 * workers hit the new primary or broker node at the same instants: an unseeded rand()
 * gives every process the same sequence. Seeds come from getrandom(), falling back to
 * the clock, the pid and an address. */
#ifndef DUO_RNG_H
#define DUO_RNG_H

/* A seed for rand_r(), different in every process and call. salt (may be NULL) is mixed
 * in for the fallback. */
unsigned rng_seed(const void *salt);

#endif
