/* main.c - duo-import: consumes the import queue (import.manual, import.auto and the
 * import.page jobs the worker fans out to itself and its peers; every job runs
 * asynchronously on one Duo engine, driven by import_poll). */
#include <stdlib.h>

#include "import.h"

/* Every import job type is asynchronous: a deeper prefetch than the runtime's 16 lets one
 * stage's slow Duo hold only its bulkhead while other stages' jobs and pages run.
 * WORKER_PREFETCH wins. */
#define IMPORT_DEFAULT_PREFETCH "32"

int main(int argc, char **argv)
{
    static const job_type_def types[] = {
        {.type = "import.manual", .start = import_manual_start},
        {.type = "import.auto", .start = import_auto_start},
        {.type = "import.page", .start = import_page_start},
    };
    static const worker_def def = {.name = "import",
                                   .queue_kind = MQ_KIND_IMPORT,
                                   .types = types,
                                   .ntypes = 3,
                                   .poll = import_poll,
                                   .init = import_init,
                                   .fini = import_fini};
    setenv("WORKER_PREFETCH", IMPORT_DEFAULT_PREFETCH, 0);
    return worker_main(&def, argc, argv);
}
