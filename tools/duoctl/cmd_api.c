/* cmd_api.c - placeholder until its issue lands. */
#include <stdio.h>

#include "cmd.h"

int cmd_api(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "duoctl api: not built yet\n");
    return 1;
}
