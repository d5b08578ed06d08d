/* rng.c - seeds for jitter (rng.h). */
#include "rng.h"

#include <stdint.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

unsigned rng_seed(const void *salt)
{
    unsigned r = 0;
    if (getrandom(&r, sizeof r, GRND_NONBLOCK) == (ssize_t)sizeof r)
        return r;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (unsigned)ts.tv_nsec ^ ((unsigned)getpid() << 16) ^ (unsigned)(uintptr_t)salt;
}
