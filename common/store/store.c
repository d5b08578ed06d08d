/* store.c - statements and results: lazily prepared, parameterised statements, run at
 * once (store_exec, with whatever the pipeline engine has queued, in one round trip) or
 * queued (store_send); no SQL is ever built from input. The connection is
 * store_conn.c's, the pipeline engine store_pipe.c's, transactions store_tx.c's. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "store_priv.h"

int store_simple(store *s, const char *sql, err_t *e)
{
    PGresult *r = PQexec(s->pg, sql);
    int ok = PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK;
    int rc = ok ? 0 : store_result_error(s, r, sql, e);
    PQclear(r);
    return rc;
}

/* Hands a successful result to *out (or frees it). */
int store_keep_result(PGresult *r, store_res **out, err_t *e)
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

int store_exec_bin(store *s, const store_stmt *st, int n, const char *const *values,
                   const int *lengths, const int *binary, store_res **out, err_t *e)
{
    if (out)
        *out = NULL;
    /* Deferred commits are read (and a failed group's members replayed) before a statement
     * outside a transaction, so that it sees what they committed, as it would have had
     * each ended with a Sync of its own; their outcomes are their tags'. */
    if (!s->in_tx && pipe_group_open(s))
        pipe_drain(s, NULL, NULL);
    int rc = pipe_send_begin(s, e); /* this answer is needed before the transaction ends */
    if (rc == 0 && s->nkept)        /* sent before it, as one implicit transaction with it */
        rc = pipe_send_kept(s, e);
    if (rc < 0)
        return rc;
    PGresult *r = NULL;
    if (!lengths && !binary && (rc = pipe_take_ahead(s, st, n, values, &r, e)) < 0)
        return rc;
    if (r)
        return store_keep_result(r, out, e);
    rc = store_ensure_prepared(s, st, n, e);
    if (rc < 0)
        return rc;
    if (s->piped) { /* the queued commands and this one, one round trip */
        if (PQsendQueryPrepared(s->pg, st->name, n, values, lengths, binary, 0) != 1) {
            rc = store_result_error(s, NULL, st->name, e);
            pipe_drain(s, NULL, NULL);
            return rc;
        }
        if ((rc = pipe_note(s, st->name, 0, e)) == 0)
            rc = pipe_drain(s, &r, e);
        if (s->piped)
            pipe_drain(s, NULL, NULL);
        if (rc < 0 && s->ahead_failed && pipe_usable(s)) /* aborted by a read ahead */
            rc = 0, r = PQexecPrepared(s->pg, st->name, n, values, lengths, binary, 0);
        else if (rc < 0)
            return rc;
    } else
        r = PQexecPrepared(s->pg, st->name, n, values, lengths, binary, 0);
    ExecStatusType t = PQresultStatus(r);
    if (t != PGRES_COMMAND_OK && t != PGRES_TUPLES_OK) {
        rc = store_result_error(s, r, st->name, e);
        PQclear(r);
        return rc;
    }
    return store_keep_result(r, out, e);
}

int store_send(store *s, const store_stmt *st, int n, const char *const *values, const int *lengths,
               const int *binary, err_t *e)
{
    if (!s->in_tx || s->begin_pending) /* kept until its transaction ends */
        return pipe_keep(s, st, n, values, lengths, binary, e);
    return store_send_now(s, st, n, values, lengths, binary, e);
}

int store_send_now(store *s, const store_stmt *st, int n, const char *const *values,
                   const int *lengths, const int *binary, err_t *e)
{
    int reads_ahead = 0;
    for (int i = s->seg; i < s->nsent && !reads_ahead; i++)
        reads_ahead = s->sent[i].ahead >= 0;
    if (!s->in_tx && reads_ahead) /* not into the reads' transaction */
        store_ahead_end(s);
    int rc = pipe_enter(s, e);
    if (rc == 0)
        rc = store_ensure_prepared(s, st, n, e);
    if (rc == 0 && PQsendQueryPrepared(s->pg, st->name, n, values, lengths, binary, 0) != 1)
        rc = store_result_error(s, NULL, st->name, e);
    if (rc == 0)
        rc = pipe_note(s, st->name, 0, e);
    if (rc < 0 && s->piped)
        pipe_drain(s, NULL, NULL);
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
    return rc < 0 ? rc : store_simple(s, sql, e);
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
