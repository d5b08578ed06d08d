/* test_store_migrate.c - migrations on a real, freshly created database: idempotent,
 * safe when many processes run them at once, and the schema's constraints hold
 * (cascade on stage/user delete, one device per Duo user per stage, one running
 * import per stage). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "store.h"
#include "testlib.h"

static char db[512];

static int setup(void **state)
{
    (void)state;
    return tl_create_db("migrate", db, sizeof db);
}

static int teardown(void **state)
{
    (void)state;
    tl_drop_db(db);
    return 0;
}

static void test_concurrent_migrate(void **state)
{
    (void)state;
    char bin[512];
    tl_bin("duoctl", bin, sizeof bin);
    setenv("DATABASE_URL", db, 1);
    enum { N = 6 };
    pid_t pids[N];
    for (int i = 0; i < N; i++) {
        pids[i] = fork();
        if (pids[i] == 0) {
            int devnull = open("/dev/null", 1);
            dup2(devnull, 1);
            execl(bin, "duoctl", "migrate", (char *)NULL);
            _exit(127);
        }
    }
    for (int i = 0; i < N; i++) {
        int status = 0;
        waitpid(pids[i], &status, 0);
        assert_true(WIFEXITED(status));
        assert_int_equal(WEXITSTATUS(status), 0);
    }
    /* Each migration file applied exactly once. */
    char out[64], dir[600], cmd[700], files[64];
    snprintf(dir, sizeof dir, "%s/migrations", tl_env("DUO_SOURCE_DIR"));
    snprintf(cmd, sizeof cmd, "ls %s | grep -c '^[0-9]*_.*\\.sql$'", dir);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    assert_non_null(fgets(files, sizeof files, p));
    pclose(p);
    files[strcspn(files, "\n")] = '\0';
    assert_int_equal(tl_query1(db, "SELECT count(*) FROM schema_migrations", out, sizeof out), 0);
    assert_string_equal(out, files);

    /* Through the library as well: a second run applies nothing. */
    err_t e = {0};
    store *s = store_open(db, &e);
    assert_non_null(s);
    int applied = -1;
    assert_int_equal(store_migrate(s, dir, &applied, &e), 0);
    assert_int_equal(applied, 0);
    store_close(s);
}

static void seed(void)
{
    assert_int_equal(
        tl_exec(db, "INSERT INTO duo_stage (name, api_hostname, client_id, client_secret_enc) "
                    "VALUES ('s1', 'api-x.duosecurity.com', 'DIX', 'v1:k:x'), "
                    "('s2', 'api-y.duosecurity.com', 'DIY', 'v1:k:y');"
                    "INSERT INTO app_user (username) VALUES ('alice'), ('bob');"
                    "INSERT INTO duo_device (user_id, stage_id, duo_user_id, name) "
                    "SELECT u.id, s.id, 'DU' || u.username || s.name, 'Duo Authenticator' "
                    "FROM app_user u, duo_stage s"),
        0);
}

static void test_constraints(void **state)
{
    (void)state;
    seed();
    char out[64];
    /* Same Duo user id twice on one stage is refused, whatever the local user. */
    assert_int_not_equal(
        tl_exec(db, "INSERT INTO duo_device (user_id, stage_id, duo_user_id, name) "
                    "SELECT (SELECT id FROM app_user WHERE username='bob'), id, 'DUalices1', 'x' "
                    "FROM duo_stage WHERE name='s1'"),
        0);
    /* Usernames and stage names are unique. */
    assert_int_not_equal(tl_exec(db, "INSERT INTO app_user (username) VALUES ('alice')"), 0);
    assert_int_not_equal(
        tl_exec(db, "INSERT INTO duo_stage (name, api_hostname, client_id, client_secret_enc) "
                    "VALUES ('s1', 'h', 'c', 'v1:k:z')"),
        0);
    /* Admin key and admin secret go together. */
    assert_int_not_equal(
        tl_exec(db, "INSERT INTO duo_stage (name, api_hostname, client_id, client_secret_enc, "
                    "admin_integration_key) VALUES ('s3', 'h', 'c', 'v1:k:z', 'DIADMIN')"),
        0);

    /* Deleting a stage deletes its devices, and only its devices. */
    assert_int_equal(tl_exec(db, "DELETE FROM duo_stage WHERE name='s1'"), 0);
    assert_int_equal(tl_query1(db, "SELECT count(*) FROM duo_device", out, sizeof out), 0);
    assert_string_equal(out, "2");
    /* Deleting a user deletes theirs. */
    assert_int_equal(tl_exec(db, "DELETE FROM app_user WHERE username='bob'"), 0);
    assert_int_equal(tl_query1(db, "SELECT count(*) FROM duo_device", out, sizeof out), 0);
    assert_string_equal(out, "1");

    /* One running import per stage. */
    assert_int_equal(tl_exec(db, "INSERT INTO import_run (stage_id, job_id, page_size) "
                                 "SELECT id, 'j1', 300 FROM duo_stage WHERE name='s2'"),
                     0);
    assert_int_not_equal(tl_exec(db, "INSERT INTO import_run (stage_id, job_id, page_size) "
                                     "SELECT id, 'j2', 300 FROM duo_stage WHERE name='s2'"),
                         0);
}

static void test_conflict_code(void **state)
{
    (void)state;
    err_t e = {0};
    store *s = store_open(db, &e);
    assert_non_null(s);
    static const store_stmt ins = {"t_ins", "INSERT INTO app_user (username) VALUES ($1)"};
    const char *v[] = {"carol"};
    assert_int_equal(store_exec(s, &ins, 1, v, NULL, &e), 0);
    assert_int_equal(store_exec(s, &ins, 1, v, NULL, &e), ERR_CONFLICT);
    assert_non_null(strstr(e.msg, "t_ins"));
    /* Inside a failed transaction, rollback leaves the connection usable. */
    assert_int_equal(store_begin(s, &e), 0);
    assert_int_equal(store_exec(s, &ins, 1, v, NULL, &e), ERR_CONFLICT);
    store_rollback(s);
    const char *v2[] = {"dave"};
    assert_int_equal(store_exec(s, &ins, 1, v2, NULL, &e), 0);
    store_close(s);
}

static void test_bad_url(void **state)
{
    (void)state;
    err_t e = {0};
    assert_null(store_open("postgresql://postgres@127.0.0.1:1/none", &e));
    assert_int_equal(e.code, ERR_DB);
    assert_non_null(strstr(e.msg, "cannot connect"));
}

/* A database at the schema before this project's newest migrations, holding data in
 * that schema's shape, is upgraded in place: every row survives, and what workers of
 * either version write still works (a rolling upgrade runs both). The "before" schema is
 * migrations up to UPGRADE_FROM, applied from a directory of links to them. */
#define UPGRADE_FROM 12

static void test_upgrade_with_data(void **state)
{
    (void)state;
    char up[512], dir[600], old_dir[] = "/tmp/duo-migrate-XXXXXX", cmd[1600], out[128];
    assert_int_equal(tl_create_db("upgrade", up, sizeof up), 0);
    snprintf(dir, sizeof dir, "%s/migrations", tl_env("DUO_SOURCE_DIR"));
    assert_non_null(mkdtemp(old_dir));
    snprintf(cmd, sizeof cmd,
             "for f in %s/[0-9]*_*.sql; do n=$(basename $f); "
             "[ \"${n%%%%_*}\" -le %d ] && ln -s $f %s/$n; done; true",
             dir, UPGRADE_FROM, old_dir);
    assert_int_equal(system(cmd), 0);
    err_t e = {0};
    store *s = store_open(up, &e);
    assert_non_null(s);
    int applied = 0;
    assert_int_equal(store_migrate(s, old_dir, &applied, &e), 0);
    assert_int_equal(applied, UPGRADE_FROM);

    /* Data as workers before the upgrade left it: finished and running jobs (a running
     * one is an old worker's claim, one with an enrollment attempt), stages, users,
     * devices, a challenge, an import run. */
    assert_int_equal(
        tl_exec(up,
                "INSERT INTO duo_stage (name, api_hostname, client_id, client_secret_enc) "
                "VALUES ('s1', 'api-x.duosecurity.com', 'DIX', 'v1:k:x');"
                "INSERT INTO app_user (username) SELECT 'u' || g FROM generate_series(1, 500) g;"
                "INSERT INTO duo_device (user_id, stage_id, duo_user_id, name) "
                "SELECT u.id, s.id, 'DU' || u.id, 'Duo' FROM app_user u, duo_stage s;"
                "INSERT INTO job (job_id, job_type, state, attempts, reply, finished_at) "
                "SELECT 'done' || g, 'auth', 'done', 1, '\\x81'::bytea, now() "
                "FROM generate_series(1, 1000) g;"
                "INSERT INTO job (job_id, job_type, state, attempts, publisher) VALUES "
                "('run1', 'auth', 'running', 2, 'duo-upstream'), "
                "('enr1', 'enroll.begin', 'running', 1, NULL);"
                "INSERT INTO enroll_attempt (job_id, stage_id) SELECT 'enr1', id FROM duo_stage;"
                "INSERT INTO auth_challenge (user_id, stage_id, job_id) "
                "SELECT min(id), (SELECT id FROM duo_stage), 'run1' FROM app_user;"
                "INSERT INTO import_run (stage_id, job_id, page_size) "
                "SELECT id, 'imp1', 300 FROM duo_stage"),
        0);
    assert_int_equal(store_migrate(s, dir, &applied, &e), 0);
    assert_true(applied >= 1);
    store_close(s);

    /* Every row is still there. */
    assert_int_equal(tl_query1(up,
                               "SELECT (SELECT count(*) FROM job) || ' ' || "
                               "(SELECT count(*) FROM duo_device) || ' ' || "
                               "(SELECT count(*) FROM enroll_attempt) || ' ' || "
                               "(SELECT count(*) FROM auth_challenge) || ' ' || "
                               "(SELECT count(*) FROM import_run)",
                               out, sizeof out),
                     0);
    assert_string_equal(out, "1002 500 1 1 1");
    /* New devices get time-ordered (version 7) uuids; the existing keep theirs. */
    assert_int_equal(tl_exec(up, "INSERT INTO app_user (username) VALUES ('new-user');"
                                 "INSERT INTO duo_device (user_id, stage_id, duo_user_id, name) "
                                 "SELECT u.id, s.id, 'DUnew', 'Duo' FROM app_user u, duo_stage s "
                                 "WHERE u.username = 'new-user'"),
                     0);
    assert_int_equal(tl_query1(up,
                               "SELECT string_agg(DISTINCT substr(uuid::text, 15, 1), ',') "
                               "FROM duo_device WHERE duo_user_id = 'DUnew'",
                               out, sizeof out),
                     0);
    assert_string_equal(out, "7");
    assert_int_equal(tl_query1(up,
                               "SELECT count(*) FROM duo_device WHERE duo_user_id <> 'DUnew' "
                               "AND substr(uuid::text, 15, 1) = '4'",
                               out, sizeof out),
                     0);
    assert_string_equal(out, "500");
    /* An old worker's finish still works on its own claim's row. */
    assert_int_equal(tl_exec(up, "SELECT job_finish('enr1', '\\x84', NULL)"), 0);
    assert_int_equal(tl_query1(up, "SELECT state FROM job WHERE job_id = 'enr1'", out, sizeof out),
                     0);
    assert_string_equal(out, "done");
    /* The age index is BRIN now; the btree that no query used is gone. */
    assert_int_equal(tl_query1(up,
                               "SELECT string_agg(indexname, ',' ORDER BY indexname) "
                               "FROM pg_indexes WHERE tablename = 'job'",
                               out, sizeof out),
                     0);
    assert_string_equal(out, "job_created_brin,job_pkey");

    snprintf(cmd, sizeof cmd, "rm -rf %s", old_dir);
    assert_int_equal(system(cmd), 0);
    tl_drop_db(up);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_concurrent_migrate), cmocka_unit_test(test_constraints),
        cmocka_unit_test(test_conflict_code),      cmocka_unit_test(test_bad_url),
        cmocka_unit_test(test_upgrade_with_data),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
