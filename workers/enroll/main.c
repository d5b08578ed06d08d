/* main.c - duo-enroll: consumes the enrollment queue (enroll.begin, enroll.status). */
#include "enroll.h"
#include "worker.h"

int main(int argc, char **argv)
{
    static const job_type_def types[] = {
        {.type = "enroll.begin", .handle = enroll_begin},
        {.type = "enroll.status", .handle = enroll_status},
    };
    static const worker_def def = {.name = "enroll",
                                   .queue_kind = MQ_KIND_ENROLL,
                                   .types = types,
                                   .ntypes = 2,
                                   .init = stages_init,
                                   .fini = stages_fini};
    return worker_main(&def, argc, argv);
}
