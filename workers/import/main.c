/* main.c - duo-import: consumes the import queue (import.manual, import.auto and the
 * import.page jobs the worker fans out to itself and its peers; page jobs run
 * asynchronously, driven by import_poll). */
#include "import.h"

int main(int argc, char **argv)
{
    static const job_type_def types[] = {
        {.type = "import.manual", .start = import_manual_start},
        {.type = "import.auto", .handle = import_auto},
        {.type = "import.page", .start = import_page_start},
    };
    static const worker_def def = {.name = "import",
                                   .queue_kind = MQ_KIND_IMPORT,
                                   .types = types,
                                   .ntypes = 3,
                                   .poll = import_poll,
                                   .init = import_init,
                                   .fini = import_fini};
    return worker_main(&def, argc, argv);
}
