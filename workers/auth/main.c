/* main.c - duo-auth: consumes the authentication queue (auth jobs), many at once. */
#include <stdlib.h>

#include "auth.h"
#include "worker.h"

/* Held pushes cost a socket and a few KiB each, so this worker defaults to a deep
 * prefetch (it bounds the challenges in flight); WORKER_PREFETCH still wins. */
#define AUTH_DEFAULT_PREFETCH "2000"

int main(int argc, char **argv)
{
    static const job_type_def types[] = {
        {.type = "auth", .start = auth_start, .send_ahead = auth_send_ahead}};
    static const worker_def def = {.name = "auth",
                                   .queue_kind = MQ_KIND_AUTH,
                                   .types = types,
                                   .ntypes = 1,
                                   .poll = auth_poll,
                                   .init = auth_init,
                                   .fini = auth_fini};
    setenv("WORKER_PREFETCH", AUTH_DEFAULT_PREFETCH, 0);
    return worker_main(&def, argc, argv);
}
