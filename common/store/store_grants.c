/* store_grants.c - the privileges of each worker kind's database role, and the code that
 * grants exactly those. Key invariant: after store_grants_apply() a worker role holds
 * the privileges in the table below and no other on the schema's tables, sequences and
 * the project's functions; anything granted earlier by hand is revoked. */
#include "store_grants.h"

#include <string.h>

#include "store_int.h"

/* One privilege line: what a kind may do to one object. */
typedef struct {
    unsigned kinds;   /* bit per STORE_GRANT_* kind */
    const char *what; /* "TABLE", "SEQUENCE" or "FUNCTION" */
    const char *object;
    const char *privileges;
} grant_row;

#define ENROLL (1u << STORE_GRANT_ENROLL)
#define AUTH (1u << STORE_GRANT_AUTH)
#define IMPORT (1u << STORE_GRANT_IMPORT)
#define ALL (ENROLL | AUTH | IMPORT)

/* The job runtime (claim, record, replay), the stage a job names and the schema version
 * check are common; the rest is what each kind's handlers use (common/store_*.c). */
static const grant_row grants[] = {
    {ALL, "TABLE", "schema_migrations", "SELECT"},
    {ALL, "TABLE", "job", "SELECT, INSERT, UPDATE"},
    {ALL, "FUNCTION", "job_finish(text, bytea, text)", "EXECUTE"},
    {ALL, "TABLE", "duo_stage", "SELECT"},
    {ALL, "TABLE", "app_user", "SELECT"},
    {ENROLL | IMPORT, "TABLE", "duo_device", "SELECT, INSERT"},
    {AUTH, "TABLE", "duo_device", "SELECT, UPDATE"},
    {ENROLL | IMPORT, "SEQUENCE", "duo_device_id_seq", "USAGE"},
    {ENROLL, "TABLE", "duo_enrollment", "SELECT, INSERT, UPDATE"},
    {ENROLL, "SEQUENCE", "duo_enrollment_id_seq", "USAGE"},
    {ENROLL, "TABLE", "enroll_attempt", "SELECT, INSERT, DELETE"},
    {ALL, "TABLE", "duo_host_breaker", "SELECT, INSERT, UPDATE, DELETE"},
    {AUTH, "TABLE", "auth_challenge", "SELECT, UPDATE"},
    {AUTH, "FUNCTION", "auth_challenge_take(bigint, bigint, integer, integer, integer)", "EXECUTE"},
    {AUTH, "FUNCTION",
     "auth_challenge_take_for_job(bigint, bigint, integer, integer, integer, text)", "EXECUTE"},
    {IMPORT, "TABLE", "import_run", "SELECT, INSERT, UPDATE"},
    {IMPORT, "SEQUENCE", "import_run_id_seq", "USAGE"},
    {IMPORT, "TABLE", "import_page", "SELECT, INSERT, UPDATE"},
    {IMPORT, "TABLE", "import_pace", "SELECT, INSERT, UPDATE"},
};

static const char *const kind_names[STORE_GRANT_KINDS] = {"enroll", "auth", "import"};

/* Same lock as store_migrate: grants and migrations never interleave. */
static const store_stmt st_lock = {"grants_lock", "SELECT pg_advisory_xact_lock(1146441549)"};
static const store_stmt st_role = {
    "grants_role", "SELECT r.rolsuper, d.datdba = r.oid FROM pg_roles r "
                   "JOIN pg_database d ON d.datname = current_database() WHERE r.rolname = $1"};

/* Role names are spliced into GRANT statements, so only plain identifiers pass. */
static int plain_name(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 63 || (s[0] >= '0' && s[0] <= '9'))
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '_'))
            return 0;
    return 1;
}

static int check_role(store *s, const char *role, const char *setting, err_t *e)
{
    if (!plain_name(role))
        return err_set(e, ERR_CONFIG,
                       "%s: '%s' is not a plain role name (lowercase letters, digits, _)", setting,
                       role);
    store_res *r = NULL;
    int rc = store_exec(s, &st_role, 1, &role, &r, e);
    if (rc < 0)
        return rc;
    if (store_res_rows(r) != 1)
        rc = err_set(e, ERR_CONFIG,
                     "%s: role %s does not exist; create it (CREATE ROLE %s LOGIN PASSWORD "
                     "'...') and run `duoctl migrate` again, or set %s=none",
                     setting, role, role, setting);
    else if (store_col_bool(r, 0, 0))
        rc = err_set(e, ERR_CONFIG, "%s: role %s is a superuser; a worker role must not be one",
                     setting, role);
    else if (store_col_bool(r, 0, 1))
        rc = err_set(e, ERR_CONFIG,
                     "%s: role %s owns the database; a worker role must be another role than "
                     "the one that migrates",
                     setting, role);
    store_res_free(r);
    return rc;
}

static int run_sql(store *s, const char *sql, size_t n, err_t *e)
{
    if (n >= 512)
        return err_set(e, ERR_INVAL, "grant statement too long");
    return store_exec_script(s, sql, e);
}

/* Revokes everything, then grants this kind's rows. */
static int grant_kind(store *s, int kind, const char *role, err_t *e)
{
    char sql[512];
    int n = snprintf(sql, sizeof sql,
                     "REVOKE ALL ON ALL TABLES IN SCHEMA public FROM %s; "
                     "REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM %s; "
                     "REVOKE ALL ON ALL FUNCTIONS IN SCHEMA public FROM %s; "
                     "REVOKE CREATE ON SCHEMA public FROM %s",
                     role, role, role, role);
    int rc = run_sql(s, sql, (size_t)n, e);
    for (size_t i = 0; rc == 0 && i < sizeof grants / sizeof grants[0]; i++) {
        if (!(grants[i].kinds & (1u << kind)))
            continue;
        n = snprintf(sql, sizeof sql, "GRANT %s ON %s %s TO %s", grants[i].privileges,
                     grants[i].what, grants[i].object, role);
        rc = run_sql(s, sql, (size_t)n, e);
    }
    return rc;
}

static int skipped(const char *role)
{
    return !role || !*role || strcmp(role, "none") == 0;
}

int store_grants_apply(store *s, const store_grant_roles *r, int *granted, err_t *e)
{
    int n = 0;
    int rc = store_begin(s, e);
    if (rc == 0)
        rc = store_exec(s, &st_lock, 0, NULL, NULL, e);
    for (int k = 0; rc == 0 && k < STORE_GRANT_KINDS; k++)
        if (!skipped(r->role[k]))
            rc = check_role(s, r->role[k], r->setting[k], e);
    for (int k = 0; rc == 0 && k < STORE_GRANT_KINDS; k++) {
        if (skipped(r->role[k]))
            continue;
        rc = grant_kind(s, k, r->role[k], e);
        if (rc < 0)
            err_wrap(e, rc, "granting %s to role %s", kind_names[k], r->role[k]);
        n++;
    }
    if (rc == 0)
        rc = store_commit(s, e);
    if (rc < 0) {
        store_rollback(s);
        return rc;
    }
    if (granted)
        *granted = n;
    return 0;
}

void store_grants_doc(FILE *out)
{
    fprintf(out, "| object | enroll | auth | import |\n|---|---|---|---|\n");
    for (size_t i = 0; i < sizeof grants / sizeof grants[0]; i++) {
        if (i > 0 && strcmp(grants[i].object, grants[i - 1].object) == 0)
            continue; /* one line per object, merged below */
        fprintf(out, "| `%s` |", grants[i].object);
        for (int k = 0; k < STORE_GRANT_KINDS; k++) {
            const char *p = "";
            for (size_t j = i; j < sizeof grants / sizeof grants[0] &&
                               strcmp(grants[j].object, grants[i].object) == 0;
                 j++)
                if (grants[j].kinds & (1u << k))
                    p = grants[j].privileges;
            fprintf(out, " %s |", p);
        }
        fprintf(out, "\n");
    }
}
