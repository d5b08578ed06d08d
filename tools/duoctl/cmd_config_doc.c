/* cmd_config_doc.c - prints the configuration reference generated from config.c. */
#include <stdio.h>

#include "cmd.h"
#include "config.h"

int cmd_config_doc(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    config_write_doc(stdout);
    return 0;
}
