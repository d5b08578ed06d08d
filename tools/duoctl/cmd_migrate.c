/* cmd_migrate.c - `duoctl migrate [--dir DIR]`: applies pending migrations. Safe to run
 * from many processes at once (the store takes an advisory lock). */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "cmd.h"
#include "config.h"
#include "paths.h"
#include "store.h"

int cmd_migrate(int argc, char **argv)
{
    const char *dir = NULL;
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--dir") == 0 && i + 1 < argc) {
            dir = argv[++i];
        } else {
            fprintf(stderr, "usage: duoctl migrate [--dir DIR]\n");
            return 2;
        }
    }
    char found[4096];
    if (!dir) {
        if (paths_find("migrations", found, sizeof found) < 0) {
            fprintf(stderr,
                    "duoctl migrate: no migrations folder found (set DUO_MIGRATIONS_DIR)\n");
            return 1;
        }
        dir = found;
    }
    config c;
    err_t e = {0};
    if (config_load(&c, CONFIG_NEED_DB, &e) < 0) {
        fprintf(stderr, "duoctl migrate: %s\n", e.msg);
        return 1;
    }
    store *s = store_open(c.database_url, &e);
    int applied = 0, version = 0;
    int rc = s ? store_migrate(s, dir, &applied, &e) : ERR_DB;
    if (rc == 0)
        rc = store_schema_version(s, &version, &e);
    store_close(s);
    config_free(&c);
    if (rc < 0) {
        fprintf(stderr, "duoctl migrate: %s\n", e.msg);
        return 1;
    }
    printf("{\"applied\":%d,\"schema_version\":%d}\n", applied, version);
    return 0;
}
