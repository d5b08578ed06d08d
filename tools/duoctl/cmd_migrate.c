/* cmd_migrate.c - placeholder until its issue lands. */
#include <stdio.h>

#include "cmd.h"

int cmd_migrate(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "duoctl migrate: not built yet\n");
    return 1;
}
