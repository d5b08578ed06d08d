/* test_store_conn.c - the store's connection handling against the real PostgreSQL: a
 * multi-host DATABASE_URL (conninfo and URL form) lands on a host that answers, a server
 * that accepts no writes is refused at connect and detected mid-session (never written
 * to), and a lost or read-only connection is found again by store_reconnect(). A real
 * standby and its promotion are exercised by tests/e2e/test_chaos_failover_serial.sh. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "store.h"
#include "testlib.h"

static char db[512], ro_db[512];
static char hostport[128]; /* "127.0.0.1:55432" of the local server */
static char userinfo[256]; /* "postgres:<password>" (or "postgres") from the admin URL */

static const store_stmt st_pid = {"t_backend_pid", "SELECT pg_backend_pid()"};
static const store_stmt st_write = {"t_write", "INSERT INTO t_conn (i) VALUES (1)"};

/* Splits the URL "postgresql://user[:password]@host:port/name" into userinfo and
 * hostport (the local server asks for a password over TCP). */
static int parse_hostport(const char *url)
{
    const char *at = strchr(url, '@');
    const char *slash = at ? strchr(at, '/') : NULL;
    const char *start = strstr(url, "://");
    if (!slash || !start)
        return -1;
    snprintf(userinfo, sizeof userinfo, "%.*s", (int)(at - start - 3), start + 3);
    snprintf(hostport, sizeof hostport, "%.*s", (int)(slash - at - 1), at + 1);
    return strchr(hostport, ':') ? 0 : -1;
}

static int setup(void **state)
{
    (void)state;
    if (tl_create_db("conn", db, sizeof db) < 0 ||
        tl_create_db("connro", ro_db, sizeof ro_db) < 0 || parse_hostport(db) < 0 ||
        tl_exec(db, "CREATE TABLE t_conn (i int)") < 0)
        return -1;
    char sql[700];
    snprintf(sql, sizeof sql, "ALTER DATABASE %s SET default_transaction_read_only = on",
             strrchr(ro_db, '/') + 1);
    return tl_exec(db, sql);
}

static int teardown(void **state)
{
    (void)state;
    tl_drop_db(db);
    tl_drop_db(ro_db);
    return 0;
}

static const char *dbname(const char *url)
{
    return strrchr(url, '/') + 1;
}

static void expect_writable(store *s)
{
    err_t e = {0};
    assert_non_null(s);
    assert_true(store_ok(s));
    if (store_exec(s, &st_write, 0, NULL, NULL, &e) < 0)
        fail_msg("write failed: %s", e.msg);
}

/* The first host refuses connections (port 1): libpq goes on to the next one. */
static void test_multi_host_conninfo(void **state)
{
    (void)state;
    char url[900], host[128];
    snprintf(host, sizeof host, "%s", hostport);
    char *colon = strchr(host, ':');
    *colon = '\0';
    char user[256];
    snprintf(user, sizeof user, "%s", userinfo);
    char *pw = strchr(user, ':');
    if (pw)
        *pw++ = '\0';
    snprintf(url, sizeof url, "host=%s,%s port=1,%s user=%s password=%s dbname=%s", host, host,
             colon + 1, user, pw ? pw : "", dbname(db));
    err_t e = {0};
    store *s = store_open(url, &e);
    if (!s)
        fail_msg("store_open: %s", e.msg);
    expect_writable(s);
    store_close(s);
}

static void test_multi_host_url(void **state)
{
    (void)state;
    char url[900];
    snprintf(url, sizeof url, "postgresql://%s@127.0.0.1:1,%s/%s", userinfo, hostport, dbname(db));
    err_t e = {0};
    store *s = store_open(url, &e);
    if (!s)
        fail_msg("store_open: %s", e.msg);
    expect_writable(s);
    store_close(s);
}

/* A server accepting no writes (here a database defaulting to read-only, as a standby
 * does) is refused: by libpq's read-write check by default, by the store's own check when
 * the URL relaxes target_session_attrs. */
static void test_read_only_refused(void **state)
{
    (void)state;
    err_t e = {0};
    assert_null(store_open(ro_db, &e));
    assert_int_equal(e.code, ERR_DB);
    assert_non_null(strstr(e.msg, "read-only"));

    char url[900];
    snprintf(url, sizeof url, "%s?target_session_attrs=any", ro_db);
    err_t e2 = {0};
    assert_null(store_open(url, &e2));
    assert_non_null(strstr(e2.msg, "is read-only (a standby?); the store needs the primary"));

    /* No host takes writes: the error, on one line, says why for each host. */
    snprintf(url, sizeof url, "postgresql://%s@127.0.0.1:1,%s/%s", userinfo, hostport,
             dbname(ro_db));
    err_t e3 = {0};
    assert_null(store_open(url, &e3));
    assert_non_null(strstr(e3.msg, "Connection refused"));
    assert_non_null(strstr(e3.msg, "; connection to server at"));
    assert_non_null(strstr(e3.msg, "read-only"));
    assert_null(strchr(e3.msg, '\n'));
}

/* The session turns read-only (the server reports it): store_ok() says so, and the
 * reconnect gives a writable session again. */
static void test_read_only_mid_session(void **state)
{
    (void)state;
    err_t e = {0};
    store *s = store_open(db, &e);
    expect_writable(s);
    assert_int_equal(store_exec_script(s, "SET default_transaction_read_only = on", &e), 0);
    assert_false(store_ok(s));
    assert_int_equal(store_reconnect(s, 0, &e), 0);
    expect_writable(s);

    /* A write refused as read-only (SQLSTATE 25006) marks the connection unusable even
     * when no parameter said so beforehand. */
    assert_int_equal(store_begin(s, &e), 0);
    assert_int_equal(store_exec_script(s, "SET TRANSACTION READ ONLY", &e), 0);
    assert_true(store_ok(s));
    assert_int_equal(store_exec(s, &st_write, 0, NULL, NULL, &e), ERR_DB);
    assert_non_null(strstr(e.msg, "read-only"));
    assert_false(store_ok(s));
    store_rollback(s);
    assert_false(store_ok(s));
    assert_int_equal(store_reconnect(s, 0, &e), 0);
    expect_writable(s);
    store_close(s);
}

/* The server ends the session (as a primary that goes away does): the next statement
 * fails, store_ok() is 0, a rollback leaves it so, and store_reconnect() restores it. */
static void test_lost_connection(void **state)
{
    (void)state;
    err_t e = {0};
    store *s = store_open(db, &e);
    expect_writable(s);
    store_res *r = NULL;
    assert_int_equal(store_exec(s, &st_pid, 0, NULL, &r, &e), 0);
    char sql[128];
    snprintf(sql, sizeof sql, "SELECT pg_terminate_backend(%s)", store_res_get(r, 0, 0));
    store_res_free(r);
    assert_int_equal(store_begin(s, &e), 0);
    assert_int_equal(tl_exec(db, sql), 0);
    usleep(200 * 1000); /* let the backend act on the signal */
    assert_int_equal(store_exec(s, &st_write, 0, NULL, NULL, &e), ERR_DB);
    assert_false(store_ok(s));
    store_rollback(s);
    assert_false(store_ok(s));
    assert_false(store_in_tx(s));
    assert_int_equal(store_reconnect(s, 2000, &e), 0);
    expect_writable(s);
    store_close(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_multi_host_conninfo), cmocka_unit_test(test_multi_host_url),
        cmocka_unit_test(test_read_only_refused),   cmocka_unit_test(test_read_only_mid_session),
        cmocka_unit_test(test_lost_connection),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
