/* cmd_migrate.c - `duoctl migrate [--dir DIR] [--no-grants] [--grants-doc]`: applies
 * pending migrations as the connecting (owner) role, then grants each worker kind's role
 * (DB_ROLE_ENROLL, DB_ROLE_AUTH, DB_ROLE_IMPORT) exactly the tables it uses. Safe to run
 * from many processes at once (the store takes an advisory lock) and again at any time:
 * the grants are re-made from the table in common/store_grants.c. */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "cmd.h"
#include "config.h"
#include "paths.h"
#include "store.h"
#include "store_grants.h"

static int usage(void)
{
    fprintf(stderr, "usage: duoctl migrate [--dir DIR] [--no-grants] [--grants-doc]\n");
    return 2;
}

static int migrate_and_grant(const config *c, const char *dir, int grants, err_t *e)
{
    store *s = store_open(c->database_url, e);
    int applied = 0, version = 0, granted = 0;
    int rc = s ? store_migrate(s, dir, &applied, e) : ERR_DB;
    if (rc == 0)
        rc = store_schema_version(s, &version, e);
    store_grant_roles r = {
        .role = {c->db_role_enroll, c->db_role_auth, c->db_role_import},
        .setting = {"DB_ROLE_ENROLL", "DB_ROLE_AUTH", "DB_ROLE_IMPORT"},
    };
    if (rc == 0 && grants)
        rc = store_grants_apply(s, &r, &granted, e);
    store_close(s);
    if (rc < 0)
        return rc;
    printf("{\"applied\":%d,\"schema_version\":%d,\"granted_roles\":%d}\n", applied, version,
           granted);
    return 0;
}

int cmd_migrate(int argc, char **argv)
{
    const char *dir = NULL;
    int grants = 1;
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--dir") == 0 && i + 1 < argc) {
            dir = argv[++i];
        } else if (strcmp(argv[i], "--no-grants") == 0) {
            grants = 0;
        } else if (strcmp(argv[i], "--grants-doc") == 0) {
            store_grants_doc(stdout);
            return 0;
        } else {
            return usage();
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
    int rc = migrate_and_grant(&c, dir, grants, &e);
    config_free(&c);
    if (rc < 0) {
        fprintf(stderr, "duoctl migrate: %s\n", e.msg);
        return 1;
    }
    return 0;
}
