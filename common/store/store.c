/* store.c - one libpq connection with lazily prepared statements. Every statement is
 * parameterised; no SQL is ever built from input. Errors are converted to err_t here,
 * once, with SQLSTATE 23505 (unique violation) reported as ERR_CONFLICT.
 * Invariant: the connection in use is to a writable primary. A multi-host URL is tried
 * host by host for one (target_session_attrs=read-write unless the URL says otherwise),
 * a server that reports itself read-only (a standby) is refused at connect, and one that
 * refuses a write as read-only (SQLSTATE 25006) marks the connection unusable, so the
 * caller's next store_ok() is 0 and store_reconnect() looks for the primary again. */
#include "store.h"

#include <libpq-fe.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"

#define MAX_PREPARED 128

struct store {
    PGconn *pg;
    char *url;
    int in_tx;
    int read_only; /* the server refused a write as read-only: reconnect before reuse */
    int nprepared;
    const char *prepared[MAX_PREPARED]; /* names, borrowed from static store_stmt */
};

struct store_res {
    PGresult *r;
};

static void notice_quiet(void *arg, const char *msg)
{
    (void)arg;
    (void)msg; /* NOTICEs (e.g. "relation exists, skipping") are not errors. */
}

/* Settings the store wants unless the URL sets them. They come before the URL, and libpq
 * keeps the last value of a repeated keyword, so the URL's own values win:
 * - target_session_attrs: of a multi-host URL's hosts, take the one that accepts writes
 *   now (the primary after a failover), skipping standbys;
 * - connect_timeout: a host that does not answer costs seconds per try, not minutes;
 * - keepalives: a primary whose machine vanished (no RST, no FIN) is noticed in about
 *   25 s instead of the kernel's two hours, so a worker waiting on it moves on. */
static const char *const conn_keys[] = {"target_session_attrs",
                                        "connect_timeout",
                                        "keepalives_idle",
                                        "keepalives_interval",
                                        "keepalives_count",
                                        "dbname",
                                        NULL};

/* 1 when the server said it accepts no writes: a hot standby, or a primary set to
 * default_transaction_read_only. Servers since 14 report both as they change. */
static int server_read_only(const PGconn *pg)
{
    const char *hs = PQparameterStatus(pg, "in_hot_standby");
    const char *ro = PQparameterStatus(pg, "default_transaction_read_only");
    return (hs && strcmp(hs, "on") == 0) || (ro && strcmp(ro, "on") == 0);
}

/* Copies libpq's message into out as one line: with several hosts it holds one line (and
 * a tabbed hint) per host tried, and each says why that host was not taken. */
static void one_line(const char *msg, char *out, size_t outlen)
{
    size_t n = 0;
    for (const char *p = msg; *p && n + 3 < outlen; p++) {
        if (*p == '\n' && p[1] && p[1] != '\t') {
            out[n++] = ';';
            out[n++] = ' ';
        } else if (*p == '\n' || *p == '\t') {
            if (n && out[n - 1] != ' ')
                out[n++] = ' ';
        } else {
            out[n++] = *p;
        }
    }
    while (n && out[n - 1] == ' ')
        n--;
    out[n] = '\0';
}

/* The value of one connection option as libpq parsed it ("" when unset). */
static void conn_option(PGconn *pg, const char *key, char *out, size_t n)
{
    out[0] = '\0';
    PQconninfoOption *opts = PQconninfo(pg);
    for (PQconninfoOption *o = opts; o && o->keyword; o++)
        if (strcmp(o->keyword, key) == 0 && o->val)
            snprintf(out, n, "%s", o->val);
    PQconninfoFree(opts);
}

/* A refused certificate, as one line naming the part of DATABASE_URL to fix: sslrootcert
 * when the chain does not verify, host when the certificate names another one. Returns
 * 0 when msg is not a certificate failure. */
static int tls_error(PGconn *pg, const char *msg, err_t *e)
{
    char v[300];
    if (strstr(msg, "does not match host name")) {
        conn_option(pg, "host", v, sizeof v);
        return err_set(e, ERR_TLS,
                       "cannot connect to PostgreSQL: DATABASE_URL host=%s does not match the "
                       "server's certificate (%s)",
                       v, msg);
    }
    if (strstr(msg, "certificate verify failed") || strstr(msg, "root certificate file")) {
        conn_option(pg, "sslrootcert", v, sizeof v);
        return err_set(e, ERR_TLS,
                       "cannot connect to PostgreSQL: DATABASE_URL sslrootcert=%s does not verify "
                       "the server's certificate (%s)",
                       v[0] ? v : "~/.postgresql/root.crt", msg);
    }
    return 0;
}

static int connect_pg(store *s, err_t *e)
{
    const char *vals[] = {"read-write", "5", "10", "5", "3", s->url, NULL};
    PQfinish(s->pg);
    s->pg = PQconnectdbParams(conn_keys, vals, 1);
    s->nprepared = 0;
    s->in_tx = 0;
    s->read_only = 0;
    if (PQstatus(s->pg) != CONNECTION_OK) {
        char msg[600];
        one_line(PQerrorMessage(s->pg), msg, sizeof msg);
        int rc = tls_error(s->pg, msg, e);
        if (rc < 0)
            return rc;
        return err_set(e, ERR_DB, "cannot connect to PostgreSQL: %s", msg);
    }
    if (server_read_only(s->pg)) {
        /* Only reachable when the URL relaxed target_session_attrs: never write here. */
        s->read_only = 1;
        return err_set(e, ERR_DB,
                       "cannot connect to PostgreSQL: server %s:%s is read-only "
                       "(a standby?); the store needs the primary",
                       PQhost(s->pg), PQport(s->pg));
    }
    PQsetNoticeProcessor(s->pg, notice_quiet, NULL);
    return 0;
}

store *store_open(const char *url, err_t *e)
{
    store *s = calloc(1, sizeof *s);
    if (!s || !(s->url = strdup(url))) {
        free(s);
        err_set(e, ERR_NOMEM, "out of memory");
        return NULL;
    }
    if (connect_pg(s, e) < 0) {
        store_close(s);
        return NULL;
    }
    return s;
}

void store_close(store *s)
{
    if (!s)
        return;
    if (s->in_tx)
        store_rollback(s);
    PQfinish(s->pg);
    free(s->url);
    free(s);
}

int store_ok(const store *s)
{
    return s && s->pg && PQstatus(s->pg) == CONNECTION_OK && !s->read_only &&
           !server_read_only(s->pg);
}

static long jitter_ms(long base)
{
    return base / 2 + (long)(((unsigned long)rand() % (unsigned long)(base + 1)));
}

int store_reconnect(store *s, int max_wait_ms, err_t *e)
{
    long waited = 0, delay = 100;
    for (;;) {
        if (connect_pg(s, e) == 0) {
            char server[300]; /* which host of a multi-host URL is the primary now */
            snprintf(server, sizeof server, "%s:%s", PQhost(s->pg), PQport(s->pg));
            LOG(LOG_INFO, "reconnected to PostgreSQL", "server", server);
            return 0;
        }
        if (waited >= max_wait_ms)
            return ERR_DB;
        long d = jitter_ms(delay);
        struct timespec ts = {d / 1000, (d % 1000) * 1000000L};
        nanosleep(&ts, NULL);
        waited += d;
        delay = delay * 2 > 5000 ? 5000 : delay * 2;
    }
}

static int result_error(store *s, PGresult *r, const char *what, err_t *e)
{
    const char *state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
    char msg[400];
    snprintf(msg, sizeof msg, "%s", r ? PQresultErrorMessage(r) : PQerrorMessage(s->pg));
    msg[strcspn(msg, "\n")] = '\0';
    int code = (state && strcmp(state, "23505") == 0) ? ERR_CONFLICT : ERR_DB;
    if (state && strcmp(state, "25006") == 0) /* read_only_sql_transaction */
        s->read_only = 1;
    if (PQstatus(s->pg) != CONNECTION_OK) {
        s->in_tx = 0;
        s->nprepared = 0;
    }
    return err_set(e, code, "%s: %s", what, msg);
}

static int simple(store *s, const char *sql, err_t *e)
{
    PGresult *r = PQexec(s->pg, sql);
    int ok = PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK;
    int rc = ok ? 0 : result_error(s, r, sql, e);
    PQclear(r);
    return rc;
}

int store_begin(store *s, err_t *e)
{
    int rc = simple(s, "BEGIN", e);
    if (rc == 0)
        s->in_tx = 1;
    return rc;
}

int store_commit(store *s, err_t *e)
{
    int rc = simple(s, "COMMIT", e);
    s->in_tx = 0;
    return rc;
}

void store_rollback(store *s)
{
    if (!s->in_tx)
        return;
    s->in_tx = 0;
    /* On a lost connection this fails at once; store_ok() is then 0 and the caller's
     * store_reconnect() finds the current primary (a PQreset would retry blindly). */
    simple(s, "ROLLBACK", NULL);
}

int store_in_tx(const store *s)
{
    return s->in_tx;
}

static int ensure_prepared(store *s, const store_stmt *st, int n, err_t *e)
{
    for (int i = 0; i < s->nprepared; i++)
        if (strcmp(s->prepared[i], st->name) == 0)
            return 0;
    PGresult *r = PQprepare(s->pg, st->name, st->sql, n, NULL);
    int rc = PQresultStatus(r) == PGRES_COMMAND_OK ? 0 : result_error(s, r, st->name, e);
    PQclear(r);
    if (rc == 0 && s->nprepared < MAX_PREPARED)
        s->prepared[s->nprepared++] = st->name;
    return rc;
}

int store_exec_bin(store *s, const store_stmt *st, int n, const char *const *values,
                   const int *lengths, const int *binary, store_res **out, err_t *e)
{
    if (out)
        *out = NULL;
    int rc = ensure_prepared(s, st, n, e);
    if (rc < 0)
        return rc;
    PGresult *r = PQexecPrepared(s->pg, st->name, n, values, lengths, binary, 0);
    ExecStatusType t = PQresultStatus(r);
    if (t != PGRES_COMMAND_OK && t != PGRES_TUPLES_OK) {
        rc = result_error(s, r, st->name, e);
        PQclear(r);
        return rc;
    }
    if (!out) {
        PQclear(r);
        return 0;
    }
    store_res *res = malloc(sizeof *res);
    if (!res) {
        PQclear(r);
        return err_set(e, ERR_NOMEM, "out of memory");
    }
    res->r = r;
    *out = res;
    return 0;
}

int store_exec(store *s, const store_stmt *st, int n, const char *const *values, store_res **out,
               err_t *e)
{
    return store_exec_bin(s, st, n, values, NULL, NULL, out, e);
}

int store_exec_script(store *s, const char *sql, err_t *e)
{
    return simple(s, sql, e);
}

int store_res_rows(const store_res *r)
{
    return r ? PQntuples(r->r) : 0;
}

const char *store_res_get(const store_res *r, int row, int col)
{
    return PQgetvalue(r->r, row, col);
}

int store_res_isnull(const store_res *r, int row, int col)
{
    return PQgetisnull(r->r, row, col);
}

long store_res_affected(const store_res *r)
{
    const char *t = PQcmdTuples(r->r);
    return t && *t ? strtol(t, NULL, 10) : 0;
}

void store_res_free(store_res *r)
{
    if (!r)
        return;
    PQclear(r->r);
    free(r);
}

int store_res_i64(const store_res *r, int row, int col, int64_t *out)
{
    if (PQgetisnull(r->r, row, col))
        return ERR_INVAL;
    char *end = NULL;
    const char *v = PQgetvalue(r->r, row, col);
    long long n = strtoll(v, &end, 10);
    if (end == v || *end)
        return ERR_INVAL;
    *out = (int64_t)n;
    return 0;
}

int store_res_bytea(const store_res *r, int row, int col, unsigned char **out, size_t *len)
{
    size_t n = 0;
    unsigned char *u = PQunescapeBytea((const unsigned char *)PQgetvalue(r->r, row, col), &n);
    if (!u)
        return ERR_NOMEM;
    unsigned char *copy = malloc(n ? n : 1);
    if (!copy) {
        PQfreemem(u);
        return ERR_NOMEM;
    }
    memcpy(copy, u, n);
    PQfreemem(u);
    *out = copy;
    *len = n;
    return 0;
}
