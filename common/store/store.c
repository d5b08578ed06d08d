/* store.c - one libpq connection with lazily prepared statements. Every statement is
 * parameterised; no SQL is ever built from input. Errors are converted to err_t here,
 * once, with SQLSTATE 23505 (unique violation) reported as ERR_CONFLICT.
 * Invariant: the connection in use is to a writable primary. A multi-host URL is tried
 * host by host for one (target_session_attrs=read-write unless the URL says otherwise),
 * a server that reports itself read-only (a standby) is refused at connect, and one that
 * refuses a write as read-only (SQLSTATE 25006) marks the connection unusable, so the
 * caller's next store_ok() is 0 and store_reconnect() looks for the primary again. */
#include "store.h"
#include "rng.h"

#include <libpq-fe.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"

#define MAX_PREPARED 128

/* A command sent in pipeline mode whose result has not been read yet. */
typedef struct {
    const char *what; /* statement name, "BEGIN", "COMMIT", or a prepare's name */
    int prepare;      /* a PQsendPrepare: on failure the name is forgotten */
    int sync;         /* a Sync marker, not a command */
    int quiet;        /* its result is nobody's (the ROLLBACK after a deferred commit) */
    int pre;          /* >= 0: a read-ahead (store_prefetch) into pre[pre]; its failure
                       * is nobody's: the statement runs again when it is asked for */
    void *tag;        /* on a Sync: the store_commit_later() whose transaction it ends */
} sent_cmd;

/* A read sent ahead of its use (store_prefetch), served once by the store_exec that asks
 * for the same statement with the same parameters. */
typedef struct {
    const char *name;
    char *key;   /* the parameters, joined */
    PGresult *r; /* NULL until read (or when it failed) */
    int failed;  /* it failed, or its transaction did (store_prefetch_failed) */
    int taken;   /* served already */
} prefetched;

/* sent_cmd.pre of a read ahead whose answer was dropped (store_prefetch_clear). */
#define PRE_DROPPED (-2)

/* A deferred commit whose outcome was read, waiting for store_take_committed(). */
typedef struct {
    void *tag;
    err_t e; /* code 0: committed */
} committed;

struct store {
    PGconn *pg;
    char *url;
    int in_tx;
    int begin_pending; /* in_tx, BEGIN not sent: the statements queued since store_begin
                        * are an implicit transaction that the next Sync would commit */
    int read_only;     /* the server refused a write as read-only: reconnect before reuse */
    unsigned rnd;      /* reconnect jitter (rng_seed: every process waits its own delays) */
    int nprepared;
    const char *prepared[MAX_PREPARED]; /* names, borrowed from static store_stmt */
    int piped;                          /* in libpq pipeline mode */
    int nsent, capsent;
    sent_cmd *sent; /* commands sent and not yet read, in order */
    int seg;        /* sent[seg..]: what follows the last deferred commit's Sync */
    int npre, cappre;
    prefetched *pre;
    int prefetch_failed; /* the last drain met a failed read ahead */
    int npre_failed;     /* entries of pre[] marked failed (store_prefetch_failed) */
    int ndone, capdone, done_at;
    committed *done; /* done[done_at..ndone): outcomes not taken yet */
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

static void fail_unread(store *s, int from, const char *why);
static int send_begin(store *s, err_t *e);

static int connect_pg(store *s, err_t *e)
{
    const char *vals[] = {"read-write", "5", "10", "5", "3", s->url, NULL};
    fail_unread(s, 0, "the connection was reset");
    store_prefetch_clear(s); /* answers of the old session: its locks are gone */
    s->seg = 0;
    PQfinish(s->pg);
    s->pg = PQconnectdbParams(conn_keys, vals, 1);
    s->nprepared = 0;
    s->in_tx = 0;
    s->begin_pending = 0;
    s->piped = 0;
    s->nsent = 0;
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
    store_prefetch_clear(s);
    if (s->in_tx)
        store_rollback(s);
    PQfinish(s->pg);
    free(s->url);
    free(s->sent);
    free(s->pre);
    free(s->done);
    free(s);
}

int store_ok(const store *s)
{
    return s && s->pg && PQstatus(s->pg) == CONNECTION_OK && !s->read_only &&
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

/* ---- pipeline: statements sent without waiting, read at the next synchronisation ----
 * store_begin and store_send only queue their commands; the next store_exec, store_flush
 * or store_commit sends a Sync and reads every result in order, so a transaction of
 * BEGIN, effects, job record and COMMIT costs one round trip. */

/* Makes room for one more element in *arr (of *cap elements of size sz). 0 or -1. */
static int grow(void **arr, int n, int *cap, size_t sz)
{
    if (n < *cap)
        return 0;
    int c = *cap ? *cap * 2 : 16;
    void *p = realloc(*arr, (size_t)c * sz);
    if (!p)
        return -1;
    *arr = p;
    *cap = c;
    return 0;
}

static int enter_pipeline(store *s, err_t *e)
{
    if (s->piped)
        return 0;
    if (PQenterPipelineMode(s->pg) != 1)
        return result_error(s, NULL, "entering pipeline mode", e);
    s->piped = 1;
    return 0;
}

static int push_sent(store *s, sent_cmd c, err_t *e)
{
    if (grow((void **)&s->sent, s->nsent, &s->capsent, sizeof *s->sent) < 0)
        return err_set(e, ERR_NOMEM, "%s: out of memory queueing a statement", c.what);
    s->sent[s->nsent++] = c;
    return 0;
}

static int note_sent(store *s, const char *what, int prepare, err_t *e)
{
    return push_sent(s, (sent_cmd){.what = what, .prepare = prepare, .pre = -1}, e);
}

/* Records the outcome of a deferred commit (e: NULL or code 0 when it committed). */
static void note_done(store *s, void *tag, const err_t *e)
{
    if (grow((void **)&s->done, s->ndone, &s->capdone, sizeof *s->done) < 0) {
        /* No room to say it committed: the caller then never hears of it, and only a
         * redelivery finishes the job (its record makes that a re-sent reply). */
        LOG(LOG_ERROR, "out of memory recording a commit's outcome");
        return;
    }
    s->done[s->ndone] = (committed){.tag = tag};
    if (e && e->code)
        s->done[s->ndone].e = *e;
    s->ndone++;
}

/* Every deferred commit still unread is reported failed (the connection is gone). */
static void fail_unread(store *s, int from, const char *why)
{
    for (int i = from; i < s->nsent; i++)
        if (s->sent[i].sync && s->sent[i].tag) {
            err_t e = {0};
            err_set(&e, ERR_DB, "COMMIT: outcome unknown: %s", why);
            note_done(s, s->sent[i].tag, &e);
        }
}

/* Reads what a read-ahead answered: kept when it succeeded, else forgotten. */
static int read_prefetch(store *s, const sent_cmd *c, PGresult *r)
{
    ExecStatusType t = PQresultStatus(r);
    int ok = t == PGRES_TUPLES_OK || t == PGRES_COMMAND_OK;
    if (!ok)
        s->prefetch_failed = 1;
    if (c->pre >= 0 && c->pre < s->npre && !ok && !s->pre[c->pre].failed) {
        s->pre[c->pre].failed = 1;
        s->npre_failed++;
    }
    if (c->pre >= 0 && c->pre < s->npre && ok && !s->pre[c->pre].r)
        s->pre[c->pre].r = r;
    else
        PQclear(r);
    return ok;
}

/* Everything between two Syncs is one transaction: when any of it failed, what the reads
 * ahead in sent[from..to) answered was rolled back with it (a claim sent ahead is a
 * write) and is forgotten, so each is run again on its own when asked for. */
static void forget_segment(store *s, int from, int to)
{
    for (int i = from; i < to && i < s->nsent; i++) {
        int p = s->sent[i].pre;
        if (p < 0 || p >= s->npre)
            continue;
        PQclear(s->pre[p].r);
        s->pre[p].r = NULL;
        s->npre_failed += !s->pre[p].failed;
        s->pre[p].failed = 1;
    }
}

static void forget_prepared(store *s, const char *name)
{
    for (int i = 0; i < s->nprepared; i++)
        if (strcmp(s->prepared[i], name) == 0) {
            s->prepared[i] = s->prepared[--s->nprepared];
            return;
        }
}

/* Checks one queued command's result; the first failure is kept in *e. */
static int check_sent(store *s, const sent_cmd *c, PGresult *r, int rc, err_t *e)
{
    ExecStatusType t = PQresultStatus(r);
    if (t == PGRES_COMMAND_OK || t == PGRES_TUPLES_OK)
        return rc;
    if (c->prepare)
        forget_prepared(s, c->what);
    if (rc < 0 || t == PGRES_PIPELINE_ABORTED)
        return rc < 0 ? rc : err_set(e, ERR_DB, "%s: not run (pipeline aborted)", c->what);
    return result_error(s, r, c->what, e);
}

/* Sends a Sync and reads every queued result; *keep (may be NULL) receives the result of
 * the last queued command (the caller's statement). Deferred commits met on the way
 * (store_commit_later) have their outcome recorded for store_take_committed(); only what
 * follows the last of them counts for the return value. A segment (what lies between
 * two Syncs: one transaction) whose Sync is not read back is failed, and so are the
 * answers of its reads ahead. Leaves pipeline mode. */
static int drain(store *s, PGresult **keep, err_t *e)
{
    int rc = 0, i = 0, seg_first = 0, seg_failed = 0;
    err_t le = {0}; /* the current segment's first failure */
    s->prefetch_failed = 0;
    if (keep)
        *keep = NULL;
    /* Queued work that ends with a Sync (a deferred commit) needs no other: one more
     * would cost another wake-up of the server, waited for, at one job in flight. */
    int own_sync = !(s->nsent && s->sent[s->nsent - 1].sync);
    if (own_sync ? PQpipelineSync(s->pg) != 1 : PQflush(s->pg) != 0)
        rc = result_error(s, NULL, "sending to PostgreSQL", &le);
    for (; i < s->nsent && PQstatus(s->pg) == CONNECTION_OK; i++) {
        PGresult *r = PQgetResult(s->pg);
        if (!r) {
            rc = rc < 0 ? rc : result_error(s, NULL, s->sent[i].what, &le);
            break;
        }
        if (s->sent[i].sync) { /* ends a segment: a deferred commit's, or a part */
            if (PQresultStatus(r) != PGRES_PIPELINE_SYNC) { /* its commit failed */
                seg_failed = 1;
                rc = rc < 0 ? rc : result_error(s, r, "COMMIT", &le);
                /* The Sync's own result follows the error: read up to it, so that the
                 * next segment's results stay in step (two NULLs: there is none). */
                for (int nulls = 0; nulls < 2 && PQstatus(s->pg) == CONNECTION_OK;) {
                    PGresult *x = PQgetResult(s->pg);
                    int done = x && PQresultStatus(x) == PGRES_PIPELINE_SYNC;
                    nulls = x ? 0 : nulls + 1;
                    PQclear(x);
                    if (done)
                        break;
                }
            }
            PQclear(r);
            if (seg_failed)
                forget_segment(s, seg_first, i);
            seg_first = i + 1;
            seg_failed = 0;
            if (s->sent[i].quiet) { /* store_send_alone: nobody waits for its outcome */
                if (rc < 0)
                    LOG(LOG_WARN, "a statement sent alone failed", "error", le.msg);
            } else if (!s->sent[i].tag) {
                continue; /* a first failure before it is still the caller's */
            } else
                note_done(s, s->sent[i].tag, rc < 0 ? &le : NULL);
            rc = 0;
            le = (err_t){0};
            s->prefetch_failed = 0;
            continue;
        }
        if (s->sent[i].pre >= 0 || s->sent[i].pre == PRE_DROPPED)
            seg_failed |= !read_prefetch(s, &s->sent[i], r);
        else if (s->sent[i].quiet)
            PQclear(r);
        else {
            rc = check_sent(s, &s->sent[i], r, rc, &le);
            seg_failed |= rc < 0;
            if (keep && i == s->nsent - 1 && rc == 0)
                *keep = r;
            else
                PQclear(r);
        }
        for (PGresult *more; (more = PQgetResult(s->pg));) /* ends the command's results */
            PQclear(more);
    }
    int synced = !own_sync && i == s->nsent; /* the last entry was a Sync, read back */
    for (PGresult *r; own_sync && PQstatus(s->pg) == CONNECTION_OK && (r = PQgetResult(s->pg));) {
        synced = PQresultStatus(r) == PGRES_PIPELINE_SYNC;
        if (!synced && rc == 0)
            rc = result_error(s, r, "COMMIT", &le);
        PQclear(r);
        if (synced)
            break;
    }
    if (!synced || seg_failed) { /* the last segment did not commit (or is unknown) */
        forget_segment(s, seg_first, s->nsent);
        if (rc == 0 && !synced)
            rc = result_error(s, NULL, "reading from PostgreSQL", &le);
    }
    fail_unread(s, i, "connection lost");
    s->nsent = 0;
    s->seg = 0;
    if (PQstatus(s->pg) == CONNECTION_OK)
        PQexitPipelineMode(s->pg);
    s->piped = 0;
    if (rc < 0 && keep && *keep) {
        PQclear(*keep);
        *keep = NULL;
    }
    /* A failed statement leaves an explicit transaction aborted: end it here, so the
     * caller's rollback (or the next statement) finds the connection usable. */
    if (rc < 0 && PQtransactionStatus(s->pg) == PQTRANS_INERROR) {
        PGresult *r = PQexec(s->pg, "ROLLBACK");
        PQclear(r);
        s->in_tx = 0;
    }
    if (PQstatus(s->pg) != CONNECTION_OK) {
        s->in_tx = 0;
        s->nprepared = 0;
    }
    if (rc < 0 && e)
        *e = le;
    return rc;
}

int store_flush(store *s, err_t *e)
{
    int rc = send_begin(s, e); /* a Sync must not commit an open transaction */
    return rc < 0 ? rc : s->piped ? drain(s, NULL, e) : 0;
}

int store_commit_later(store *s, void *tag, err_t *e)
{
    int explicit = s->in_tx && !s->begin_pending, rc = enter_pipeline(s, e);
    s->begin_pending = 0;
    if (rc == 0 && explicit &&
        PQsendQueryParams(s->pg, "COMMIT", 0, NULL, NULL, NULL, NULL, 0) != 1)
        rc = result_error(s, NULL, "COMMIT", e);
    if (rc == 0 && explicit)
        rc = note_sent(s, "COMMIT", 0, e);
    /* The Sync ends the transaction: an explicit one committed above, or the implicit one
     * of the statements queued since the last Sync (the pipeline commits them at it). */
    if (rc == 0 && PQpipelineSync(s->pg) != 1)
        rc = result_error(s, NULL, "sending to PostgreSQL", e);
    if (rc == 0)
        rc = push_sent(s, (sent_cmd){.what = "Sync", .sync = 1, .pre = -1, .tag = tag}, e);
    /* After an error, an explicit transaction stays aborted past its Sync: a ROLLBACK
     * (a no-op with a warning when it committed) keeps that from the next one. */
    if (rc == 0 && explicit &&
        (PQsendQueryParams(s->pg, "ROLLBACK", 0, NULL, NULL, NULL, NULL, 0) != 1 ||
         push_sent(s, (sent_cmd){.what = "ROLLBACK", .quiet = 1, .pre = -1}, e) < 0))
        rc = result_error(s, NULL, "ROLLBACK", e);
    if (rc == 0) /* reads ahead may follow: nothing before can be aborted by them */
        s->seg = s->nsent;
    s->in_tx = 0;
    if (rc < 0 && s->piped) {
        /* Not queued as a whole: tell the caller now. Without its Sync, the transaction
         * is aborted before the drain's Sync could commit it; with it (only the trailing
         * ROLLBACK failed) it may still commit, and the job record then turns the
         * caller's retry into a re-send. */
        if (s->nsent && s->sent[s->nsent - 1].sync && s->sent[s->nsent - 1].tag == tag)
            s->sent[s->nsent - 1].tag = NULL;
        else if (PQsendQueryParams(s->pg, "ROLLBACK", 0, NULL, NULL, NULL, NULL, 0) == 1)
            push_sent(s, (sent_cmd){.what = "ROLLBACK", .quiet = 1, .pre = -1}, NULL);
        drain(s, NULL, NULL);
        if (PQtransactionStatus(s->pg) != PQTRANS_IDLE) {
            PGresult *r = PQexec(s->pg, "ROLLBACK");
            PQclear(r);
        }
    }
    return rc;
}

int store_send_alone(store *s, const store_stmt *st, int n, const char *const *values, err_t *e)
{
    if (s->in_tx || (s->piped && s->nsent > s->seg)) /* it would join other statements */
        return store_exec(s, st, n, values, NULL, e);
    int rc = store_send(s, st, n, values, NULL, NULL, e);
    if (rc == 0 && PQpipelineSync(s->pg) != 1)
        rc = result_error(s, NULL, "sending to PostgreSQL", e);
    if (rc == 0)
        rc = push_sent(s, (sent_cmd){.what = "Sync", .sync = 1, .quiet = 1, .pre = -1}, e);
    if (rc == 0)
        s->seg = s->nsent;
    return rc;
}

int store_take_committed(store *s, void **tag, err_t *e)
{
    if (s->done_at == s->ndone) {
        s->done_at = s->ndone = 0;
        return 0;
    }
    committed *c = &s->done[s->done_at++];
    *tag = c->tag;
    if (e)
        *e = c->e;
    return 1;
}

static int simple(store *s, const char *sql, err_t *e)
{
    PGresult *r = PQexec(s->pg, sql);
    int ok = PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK;
    int rc = ok ? 0 : result_error(s, r, sql, e);
    PQclear(r);
    return rc;
}

/* ---- transactions: BEGIN is sent only when a statement inside must be answered before
 * the end. Until then the statements queued since store_begin form the implicit
 * transaction of a pipeline (one that the next Sync commits, or that a failure or a
 * ROLLBACK aborts whole), and BEGIN, when it comes, makes them an explicit transaction
 * (PostgreSQL turns the implicit transaction in progress into the block). A transaction
 * that only queues statements and ends with store_commit_later therefore costs no BEGIN,
 * COMMIT or ROLLBACK statement, just its Sync. */

static int send_begin(store *s, err_t *e)
{
    if (!s->begin_pending)
        return 0;
    s->begin_pending = 0;
    int rc = enter_pipeline(s, e);
    if (rc == 0 && PQsendQueryParams(s->pg, "BEGIN", 0, NULL, NULL, NULL, NULL, 0) != 1)
        rc = result_error(s, NULL, "BEGIN", e);
    if (rc == 0)
        rc = note_sent(s, "BEGIN", 0, e);
    return rc;
}

int store_begin(store *s, err_t *e)
{
    int rc = 0;
    /* What is queued already (reads ahead) is not the transaction's: a Sync parts them. */
    if (s->piped && s->nsent > s->seg) {
        if (PQpipelineSync(s->pg) != 1)
            rc = result_error(s, NULL, "sending to PostgreSQL", e);
        if (rc == 0)
            rc = push_sent(s, (sent_cmd){.what = "Sync", .sync = 1, .pre = -1}, e);
        if (rc == 0)
            s->seg = s->nsent;
    }
    if (rc == 0)
        s->in_tx = s->begin_pending = 1;
    return rc;
}

int store_commit(store *s, err_t *e)
{
    int rc = 0;
    if (s->begin_pending) { /* implicit: the drain's Sync commits what was queued */
        s->begin_pending = 0;
        rc = s->piped ? drain(s, NULL, e) : 0;
    } else if (!s->piped)
        rc = simple(s, "COMMIT", e);
    else if (PQsendQueryParams(s->pg, "COMMIT", 0, NULL, NULL, NULL, NULL, 0) != 1 ||
             note_sent(s, "COMMIT", 0, e) < 0) {
        drain(s, NULL, NULL);
        rc = err_set(e, ERR_DB, "COMMIT: could not be sent");
    } else
        rc = drain(s, NULL, e);
    s->in_tx = 0;
    return rc;
}

void store_rollback(store *s)
{
    if (s->begin_pending) {
        /* The queued statements are an implicit transaction: a ROLLBACK before the Sync
         * aborts it (with a warning that no transaction block is in progress). */
        s->begin_pending = s->in_tx = 0;
        if (s->piped && s->nsent > s->seg &&
            PQsendQueryParams(s->pg, "ROLLBACK", 0, NULL, NULL, NULL, NULL, 0) == 1)
            push_sent(s, (sent_cmd){.what = "ROLLBACK", .quiet = 1, .pre = -1}, NULL);
        if (s->piped)
            drain(s, NULL, NULL);
        return;
    }
    if (s->piped)
        drain(s, NULL, NULL); /* what was queued is discarded with the transaction */
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

/* Hands a successful result to *out (or frees it). */
static int keep_result(PGresult *r, store_res **out, err_t *e)
{
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

/* The parameters of a statement as one string (NULL and "" told apart), or NULL. */
static char *params_key(int n, const char *const *values)
{
    size_t len = 1;
    for (int i = 0; i < n; i++)
        len += (values[i] ? strlen(values[i]) : 0) + 2;
    char *k = malloc(len), *p = k;
    if (!k)
        return NULL;
    for (int i = 0; i < n; i++) {
        *p++ = values[i] ? '\x1f' : '\x1e';
        size_t l = values[i] ? strlen(values[i]) : 0;
        memcpy(p, values[i] ? values[i] : "", l);
        p += l;
    }
    *p = '\0';
    return k;
}

void store_prefetch_clear(store *s)
{
    for (int i = 0; i < s->npre; i++) {
        PQclear(s->pre[i].r);
        free(s->pre[i].key);
    }
    s->npre = s->npre_failed = 0;
    for (int i = 0; i < s->nsent; i++) /* still unread: their answers are dropped */
        if (s->sent[i].pre >= 0)
            s->sent[i].pre = PRE_DROPPED;
}

int store_prefetch_failed(store *s, const store_stmt *st, int n, const char *const *values)
{
    char *key = s->npre_failed ? params_key(n, values) : NULL; /* none failed: no search */
    int failed = 0;
    for (int i = 0; key && i < s->npre && !failed; i++)
        failed = s->pre[i].failed && strcmp(s->pre[i].name, st->name) == 0 &&
                 strcmp(s->pre[i].key, key) == 0;
    free(key);
    return failed;
}

void store_prefetch_end(store *s)
{
    if (!s->piped || s->in_tx || s->nsent == s->seg || PQpipelineSync(s->pg) != 1)
        return;
    if (push_sent(s, (sent_cmd){.what = "Sync", .sync = 1, .pre = -1}, NULL) == 0)
        s->seg = s->nsent;
}

/* Serves a read-ahead answer for st with these parameters into *r (the caller owns it;
 * NULL when there is none: the caller runs the statement). One still unread is read
 * first, with everything queued before it: its own round trip then stands for the
 * statement's, and a failure of what was queued with it is the caller's. */
static int take_prefetched(store *s, const store_stmt *st, int n, const char *const *values,
                           PGresult **r, err_t *e)
{
    *r = NULL;
    if (!s->npre)
        return 0;
    char *key = params_key(n, values);
    int unread = -1, rc = 0;
    for (int i = 0; key && i < s->npre; i++)
        if (strcmp(s->pre[i].name, st->name) == 0 && strcmp(s->pre[i].key, key) == 0) {
            if (s->pre[i].r) {
                *r = s->pre[i].r;
                s->pre[i].r = NULL;
                s->pre[i].taken = 1;
                break;
            }
            if (!s->pre[i].failed && !s->pre[i].taken && unread < 0)
                unread = i;
        }
    if (!*r && unread >= 0 && s->piped) {
        rc = drain(s, NULL, e);
        if (rc == 0 && s->pre[unread].r) {
            *r = s->pre[unread].r;
            s->pre[unread].r = NULL;
            s->pre[unread].taken = 1;
        }
    }
    free(key);
    return rc;
}

int store_prefetch(store *s, const store_stmt *st, int n, const char *const *values)
{
    int known = 0, only_reads = 1;
    for (int i = 0; i < s->nprepared && !known; i++)
        known = strcmp(s->prepared[i], st->name) == 0;
    for (int i = s->seg; i < s->nsent; i++) /* deferred commits before s->seg are apart */
        only_reads &= s->sent[i].pre >= 0;
    /* Only a statement already prepared, outside a transaction, with nothing but other
     * reads ahead queued: if it fails, the statement it travels with is aborted too and
     * simply run again on its own (store_exec_bin), so nothing else can be lost. */
    if (!known || s->in_tx || !only_reads ||
        grow((void **)&s->pre, s->npre, &s->cappre, sizeof *s->pre) < 0 ||
        grow((void **)&s->sent, s->nsent, &s->capsent, sizeof *s->sent) < 0 ||
        enter_pipeline(s, NULL) < 0)
        return 0;
    char *key = params_key(n, values);
    if (!key || PQsendQueryPrepared(s->pg, st->name, n, values, NULL, NULL, 0) != 1) {
        free(key);
        return 0;
    }
    s->pre[s->npre] = (prefetched){.name = st->name, .key = key};
    s->sent[s->nsent++] = (sent_cmd){.what = st->name, .pre = s->npre++};
    return 1;
}

static int ensure_prepared(store *s, const store_stmt *st, int n, err_t *e)
{
    for (int i = 0; i < s->nprepared; i++)
        if (strcmp(s->prepared[i], st->name) == 0)
            return 0;
    if (s->piped) { /* queued too; forgotten again if it fails */
        if (PQsendPrepare(s->pg, st->name, st->sql, n, NULL) != 1)
            return result_error(s, NULL, st->name, e);
        int rc = note_sent(s, st->name, 1, e);
        if (rc == 0 && s->nprepared < MAX_PREPARED)
            s->prepared[s->nprepared++] = st->name;
        return rc;
    }
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
    int rc = send_begin(s, e); /* this answer is needed before the transaction ends */
    if (rc < 0)
        return rc;
    PGresult *r = NULL;
    if (!lengths && !binary && (rc = take_prefetched(s, st, n, values, &r, e)) < 0)
        return rc;
    if (r)
        return keep_result(r, out, e);
    rc = ensure_prepared(s, st, n, e);
    if (rc < 0)
        return rc;
    if (s->piped) { /* the queued commands and this one, one round trip */
        if (PQsendQueryPrepared(s->pg, st->name, n, values, lengths, binary, 0) != 1) {
            rc = result_error(s, NULL, st->name, e);
            drain(s, NULL, NULL);
            return rc;
        }
        if ((rc = note_sent(s, st->name, 0, e)) == 0)
            rc = drain(s, &r, e);
        if (s->piped)
            drain(s, NULL, NULL);
        if (rc < 0 && s->prefetch_failed && store_ok(s)) /* aborted by a read ahead */
            rc = 0, r = PQexecPrepared(s->pg, st->name, n, values, lengths, binary, 0);
        else if (rc < 0)
            return rc;
    } else
        r = PQexecPrepared(s->pg, st->name, n, values, lengths, binary, 0);
    ExecStatusType t = PQresultStatus(r);
    if (t != PGRES_COMMAND_OK && t != PGRES_TUPLES_OK) {
        rc = result_error(s, r, st->name, e);
        PQclear(r);
        return rc;
    }
    return keep_result(r, out, e);
}

int store_send(store *s, const store_stmt *st, int n, const char *const *values, const int *lengths,
               const int *binary, err_t *e)
{
    int reads_ahead = 0;
    for (int i = s->seg; i < s->nsent && !reads_ahead; i++)
        reads_ahead = s->sent[i].pre >= 0;
    if (!s->in_tx && reads_ahead) /* not into the reads' transaction */
        store_prefetch_end(s);
    int rc = enter_pipeline(s, e);
    if (rc == 0)
        rc = ensure_prepared(s, st, n, e);
    if (rc == 0 && PQsendQueryPrepared(s->pg, st->name, n, values, lengths, binary, 0) != 1)
        rc = result_error(s, NULL, st->name, e);
    if (rc == 0)
        rc = note_sent(s, st->name, 0, e);
    if (rc < 0 && s->piped)
        drain(s, NULL, NULL);
    return rc;
}

int store_exec(store *s, const store_stmt *st, int n, const char *const *values, store_res **out,
               err_t *e)
{
    return store_exec_bin(s, st, n, values, NULL, NULL, out, e);
}

int store_exec_script(store *s, const char *sql, err_t *e)
{
    int rc = store_flush(s, e); /* with the BEGIN of an open transaction */
    return rc < 0 ? rc : simple(s, sql, e);
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
