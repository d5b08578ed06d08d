/* store_conn.c - one libpq connection: connecting, failover to the writable primary,
 * reconnecting with jitter, and turning libpq's errors into err_t, once, with SQLSTATE
 * 23505 (unique violation) reported as ERR_CONFLICT.
 * Invariant: the connection in use is to a writable primary. A multi-host URL is tried
 * host by host for one (target_session_attrs=read-write unless the URL says otherwise),
 * a server that reports itself read-only (a standby) is refused at connect, and one that
 * refuses a write as read-only (SQLSTATE 25006) marks the connection unusable, so the
 * caller's next store_ok() is 0 and store_reconnect() looks for the primary again. */
/* program_invocation_short_name: _GNU_SOURCE comes from the build (CMakeLists.txt) */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "rng.h"
#include "store_priv.h"

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
 *   25 s instead of the kernel's two hours, so a worker waiting on it moves on;
 * - fallback_application_name: the program (duo-auth, ...), so an operator (and duoctl
 *   status, counting the jobs each worker kind has claimed) tells the sessions apart. */
static const char *const conn_keys[] = {
    "target_session_attrs", "connect_timeout",           "keepalives_idle", "keepalives_interval",
    "keepalives_count",     "fallback_application_name", "dbname",          NULL};

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
    const char *vals[] = {"read-write", "5", "10", "5", "3", program_invocation_short_name,
                          s->url,       NULL};
    pipe_fail_unread(s, 0, "the connection was reset");
    pipe_forget_kept(s);  /* statements of the old session's transactions */
    store_ahead_clear(s); /* answers of the old session: its locks are gone */
    s->seg = 0;
    PQfinish(s->pg);
    s->pg = PQconnectdbParams(conn_keys, vals, 1);
    s->nprepared = 0;
    s->in_tx = 0;
    s->begin_pending = 0;
    s->piped = 0;
    s->nsent = 0;
    s->read_only = 0;
    s->broken = 0;
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
    s->rnd = rng_seed(s);
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
    store_ahead_clear(s);
    if (s->in_tx)
        store_rollback(s);
    PQfinish(s->pg);
    free(s->url);
    free(s->sent);
    free(s->ahead);
    free(s->done);
    pipe_forget_kept(s);
    free(s->kept);
    free(s->members);
    free(s);
}

int store_ok(const store *s)
{
    return s && s->pg && PQstatus(s->pg) == CONNECTION_OK && !s->read_only && !s->broken &&
           !server_read_only(s->pg);
}

static long jitter_ms(store *s, long base)
{
    return base / 2 + (long)(((unsigned long)rand_r(&s->rnd) % (unsigned long)(base + 1)));
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
        long d = jitter_ms(s, delay);
        struct timespec ts = {d / 1000, (d % 1000) * 1000000L};
        nanosleep(&ts, NULL);
        waited += d;
        delay = delay * 2 > 5000 ? 5000 : delay * 2;
    }
}
