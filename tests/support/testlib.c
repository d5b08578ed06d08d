/* testlib.c - database and environment helpers for integration tests (tests may use
 * libpq directly; product code goes through common/store). */
#include "testlib.h"

#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "paths.h"
#include "store.h"

const char *tl_env(const char *name)
{
    const char *v = getenv(name);
    if (!v || !*v) {
        fprintf(stderr, "testlib: %s is not set (run through scripts/test.sh)\n", name);
        exit(1);
    }
    return v;
}

static PGconn *connect_url(const char *url)
{
    PGconn *c = PQconnectdb(url);
    if (PQstatus(c) != CONNECTION_OK) {
        fprintf(stderr, "testlib: connect %s: %s", url, PQerrorMessage(c));
        PQfinish(c);
        return NULL;
    }
    return c;
}

int tl_exec(const char *url, const char *sql)
{
    PGconn *c = connect_url(url);
    if (!c)
        return -1;
    PGresult *r = PQexec(c, sql);
    int ok = PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK;
    if (!ok)
        fprintf(stderr, "testlib: %s: %s", sql, PQerrorMessage(c));
    PQclear(r);
    PQfinish(c);
    return ok ? 0 : -1;
}

int tl_query1(const char *url, const char *sql, char *out, size_t outlen)
{
    PGconn *c = connect_url(url);
    if (!c)
        return -1;
    PGresult *r = PQexec(c, sql);
    int ok = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) >= 1;
    if (ok)
        snprintf(out, outlen, "%s", PQgetisnull(r, 0, 0) ? "" : PQgetvalue(r, 0, 0));
    else
        fprintf(stderr, "testlib: %s: %s", sql, PQerrorMessage(c));
    PQclear(r);
    PQfinish(c);
    return ok ? 0 : -1;
}

static unsigned counter;

void tl_unique_prefix(const char *tag, char *out, size_t outlen)
{
    snprintf(out, outlen, "t%s%ld%u%ld", tag, (long)getpid(), counter++, (long)time(NULL) % 100000);
}

int tl_create_db(const char *tag, char *out, size_t outlen)
{
    const char *admin = tl_env("DUO_PG_ADMIN_URL");
    char name[96];
    tl_unique_prefix(tag, name, sizeof name);
    for (char *p = name; *p; p++)
        if (*p >= 'A' && *p <= 'Z')
            *p = (char)(*p - 'A' + 'a');
    char sql[160];
    snprintf(sql, sizeof sql, "CREATE DATABASE %s", name);
    if (tl_exec(admin, sql) < 0)
        return -1;
    /* The admin URL ends in /postgres; swap the database name. */
    const char *slash = strrchr(admin, '/');
    snprintf(out, outlen, "%.*s/%s", (int)(slash - admin), admin, name);
    return 0;
}

store *tl_migrated_store(const char *tag, char *db, size_t dblen)
{
    char dir[1024];
    err_t e = {0};
    if (tl_create_db(tag, db, dblen) < 0 || paths_find("migrations", dir, sizeof dir) < 0)
        return NULL;
    store *s = store_open(db, &e);
    if (!s || store_migrate(s, dir, NULL, &e) < 0) {
        fprintf(stderr, "testlib: migrating %s: %s\n", db, e.msg);
        store_close(s);
        return NULL;
    }
    return s;
}

void tl_drop_db(const char *url)
{
    const char *slash = strrchr(url, '/');
    if (!slash)
        return;
    char sql[200];
    snprintf(sql, sizeof sql, "DROP DATABASE IF EXISTS %s WITH (FORCE)", slash + 1);
    tl_exec(tl_env("DUO_PG_ADMIN_URL"), sql);
}

void tl_bin(const char *name, char *out, size_t outlen)
{
    snprintf(out, outlen, "%s/%s", tl_env("DUO_BIN_DIR"), name);
}

int tl_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    int port = -1;
    if (fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &len) == 0)
        port = ntohs(a.sin_port);
    if (fd >= 0)
        close(fd);
    return port;
}
