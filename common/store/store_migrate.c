/* store_migrate.c - applies numbered SQL migrations (NNN_name.sql) once each, in order,
 * each in its own transaction, under a session advisory lock: many workers starting at
 * once serialise here and all but the first find nothing to do. */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store.h"

/* An arbitrary constant naming this project's migration lock ("DUOM"). */
#define MIGRATE_LOCK "1146441549"

static const store_stmt st_lock = {"migrate_lock", "SELECT pg_advisory_lock($1::bigint)"};
static const store_stmt st_unlock = {"migrate_unlock", "SELECT pg_advisory_unlock($1::bigint)"};
static const store_stmt st_version = {"migrate_version",
                                      "SELECT coalesce(max(version), 0) FROM schema_migrations"};
static const store_stmt st_record = {
    "migrate_record", "INSERT INTO schema_migrations (version, name) VALUES ($1::int, $2)"};

typedef struct {
    int version;
    char name[256];
} migration;

static int cmp_migration(const void *a, const void *b)
{
    return ((const migration *)a)->version - ((const migration *)b)->version;
}

/* Lists NNN_*.sql files of dir sorted by version; caller frees *out. */
static int list_migrations(const char *dir, migration **out, int *n, err_t *e)
{
    DIR *d = opendir(dir);
    if (!d)
        return err_set(e, ERR_IO, "cannot open migrations folder %s", dir);
    migration *list = NULL;
    int count = 0, cap = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        size_t len = strlen(de->d_name);
        char *end = NULL;
        long v = strtol(de->d_name, &end, 10);
        if (len < 5 || strcmp(de->d_name + len - 4, ".sql") != 0 || end == de->d_name ||
            *end != '_' || v <= 0 || len >= sizeof list->name)
            continue;
        if (count == cap) {
            cap = cap ? cap * 2 : 16;
            migration *grown = realloc(list, (size_t)cap * sizeof *list);
            if (!grown) {
                free(list);
                closedir(d);
                return err_set(e, ERR_NOMEM, "out of memory");
            }
            list = grown;
        }
        list[count].version = (int)v;
        memcpy(list[count].name, de->d_name, len + 1);
        count++;
    }
    closedir(d);
    qsort(list, (size_t)count, sizeof *list, cmp_migration);
    for (int i = 1; i < count; i++)
        if (list[i].version == list[i - 1].version) {
            err_set(e, ERR_CONFIG, "two migrations share version %d: %s and %s", list[i].version,
                    list[i - 1].name, list[i].name);
            free(list);
            return ERR_CONFIG;
        }
    *out = list;
    *n = count;
    return 0;
}

static char *read_file(const char *path, err_t *e)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        err_set(e, ERR_IO, "cannot read %s", path);
        return NULL;
    }
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = size >= 0 ? malloc((size_t)size + 1) : NULL;
    if (!buf || fread(buf, 1, (size_t)size, f) != (size_t)size) {
        free(buf);
        fclose(f);
        err_set(e, ERR_IO, "cannot read %s", path);
        return NULL;
    }
    buf[size] = '\0';
    fclose(f);
    return buf;
}

static int apply_one(store *s, const char *dir, const migration *m, err_t *e)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, m->name);
    char *sql = read_file(path, e);
    if (!sql)
        return ERR_IO;
    char version[16];
    snprintf(version, sizeof version, "%d", m->version);
    const char *params[] = {version, m->name};
    int rc = store_begin(s, e);
    if (rc == 0)
        rc = store_exec_script(s, sql, e);
    if (rc == 0)
        rc = store_exec(s, &st_record, 2, params, NULL, e);
    if (rc == 0)
        rc = store_commit(s, e);
    free(sql);
    if (rc < 0) {
        store_rollback(s);
        return err_wrap(e, rc, "migration %s", m->name);
    }
    return 0;
}

static int current_version(store *s, int *version, err_t *e)
{
    store_res *r = NULL;
    int rc = store_exec(s, &st_version, 0, NULL, &r, e);
    int64_t v = 0;
    if (rc == 0 && store_res_i64(r, 0, 0, &v) < 0)
        rc = err_set(e, ERR_DB, "unreadable schema version");
    store_res_free(r);
    *version = (int)v;
    return rc;
}

static int migrate_locked(store *s, const char *dir, int *applied, err_t *e)
{
    int rc = store_exec_script(
        s,
        "CREATE TABLE IF NOT EXISTS schema_migrations (version integer PRIMARY KEY, "
        "name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())",
        e);
    migration *list = NULL;
    int n = 0, have = 0;
    if (rc == 0)
        rc = list_migrations(dir, &list, &n, e);
    if (rc == 0)
        rc = current_version(s, &have, e);
    for (int i = 0; rc == 0 && i < n; i++) {
        if (list[i].version <= have)
            continue;
        rc = apply_one(s, dir, &list[i], e);
        if (rc == 0 && applied)
            (*applied)++;
    }
    free(list);
    return rc;
}

int store_migrate(store *s, const char *dir, int *applied, err_t *e)
{
    const char *lock[] = {MIGRATE_LOCK};
    if (applied)
        *applied = 0;
    int rc = store_exec(s, &st_lock, 1, lock, NULL, e);
    if (rc < 0)
        return rc;
    rc = migrate_locked(s, dir, applied, e);
    store_exec(s, &st_unlock, 1, lock, NULL, NULL);
    return rc;
}

int store_schema_version(store *s, int *version, err_t *e)
{
    return current_version(s, version, e);
}
