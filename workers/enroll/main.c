/* main.c - duo-enroll: consumes the enrollment queue (enroll.begin, enroll.status). */
#include "enroll.h"
#include "worker.h"

int main(int argc, char **argv)
{
    static const job_type_def types[] = {
        {"enroll.begin", enroll_begin},
        {"enroll.status", enroll_status},
    };
    static const worker_def def = {"enroll", MQ_KIND_ENROLL, types, 2};
    return worker_main(&def, argc, argv);
}
