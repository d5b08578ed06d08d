/* main.c - duo-enroll: consumes the enrollment queue (enroll.begin, enroll.status), many
 * jobs at once on one Duo engine. */
#include <stdlib.h>

#include "enroll.h"
#include "worker.h"

/* Enrollment calls are answered at once by a live Duo; a deep prefetch lets one stage's
 * slow Duo hold only its bulkhead while other stages' jobs run. WORKER_PREFETCH wins. */
#define ENROLL_DEFAULT_PREFETCH "64"

int main(int argc, char **argv)
{
    static const job_type_def types[] = {
        {.type = "enroll.begin", .start = enroll_begin_start},
        {.type = "enroll.status", .start = enroll_status_start},
    };
    static const worker_def def = {.name = "enroll",
                                   .queue_kind = MQ_KIND_ENROLL,
                                   .types = types,
                                   .ntypes = 2,
                                   .poll = enroll_poll,
                                   .init = enroll_init,
                                   .fini = enroll_fini};
    setenv("WORKER_PREFETCH", ENROLL_DEFAULT_PREFETCH, 0);
    return worker_main(&def, argc, argv);
}
