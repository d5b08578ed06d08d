/* store_tx.c - transactions over the pipeline engine: BEGIN is sent only when a
 * statement inside needs its answer; a transaction that only queues statements ends with
 * its Sync (store_commit_later, store_send_alone) or with one round trip (store_commit). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "store_priv.h"

/* ---- transactions: BEGIN is sent only when a statement inside must be answered before
 * the end. Until then the statements queued since store_begin form the implicit
 * transaction of a pipeline (one that the next Sync commits, or that a failure or a
 * ROLLBACK aborts whole), and BEGIN, when it comes, makes them an explicit transaction
 * (PostgreSQL turns the implicit transaction in progress into the block). A transaction
 * that only queues statements and ends with store_commit_later therefore costs no BEGIN,
 * COMMIT or ROLLBACK statement, just its Sync. */

int store_begin(store *s, err_t *e)
{
    (void)e; /* nothing is sent until the transaction needs it (pipe_send_begin) or ends */
    s->in_tx = s->begin_pending = 1;
    return 0;
}

int store_commit(store *s, err_t *e)
{
    int rc = 0;
    if (s->begin_pending) { /* implicit: its statements, then the drain's Sync commits them */
        s->begin_pending = 0;
        rc = pipe_enter(s, e);
        if (rc == 0) /* apart from what is queued (a group, reads ahead) */
            rc = pipe_part(s, e);
        if (rc == 0)
            rc = pipe_send_kept(s, e);
        pipe_forget_kept_only(s);
        int drc = s->piped ? pipe_drain(s, NULL, rc < 0 ? NULL : e) : 0;
        rc = rc < 0 ? rc : drc;
    } else if (!s->piped)
        rc = store_simple(s, "COMMIT", e);
    else if (PQsendQueryParams(s->pg, "COMMIT", 0, NULL, NULL, NULL, NULL, 0) != 1 ||
             pipe_note(s, "COMMIT", 0, e) < 0) {
        pipe_drain(s, NULL, NULL);
        rc = err_set(e, ERR_DB, "COMMIT: could not be sent");
    } else
        rc = pipe_drain(s, NULL, e);
    s->in_tx = 0;
    return rc;
}

void store_rollback(store *s)
{
    if (s->begin_pending) { /* nothing of it was sent: forgetting it is the rollback */
        s->begin_pending = s->in_tx = 0;
        pipe_forget_kept_only(s);
        return;
    }
    pipe_forget_kept_only(s); /* statements kept outside a transaction */
    if (s->piped)
        pipe_drain(s, NULL, NULL); /* what was queued is discarded with the transaction */
    if (!s->in_tx)
        return;
    s->in_tx = 0;
    /* On a lost connection this fails at once; store_ok() is then 0 and the caller's
     * store_reconnect() finds the current primary (a PQreset would retry blindly). */
    store_simple(s, "ROLLBACK", NULL);
}

int store_in_tx(const store *s)
{
    return s->in_tx;
}

int store_commit_later(store *s, void *tag, err_t *e)
{
    int explicit = s->in_tx && !s->begin_pending, rc = pipe_enter(s, e);
    s->begin_pending = 0;
    if (!explicit) { /* committed with the turn's others: one transaction, one Sync */
        s->in_tx = 0;
        rc = rc < 0 ? rc : pipe_commit_member(s, tag, e);
        if (rc < 0 && s->piped) /* the group's segment is failed: its members replayed */
            pipe_drain(s, NULL, NULL);
        return rc;
    }
    if (rc == 0 && explicit &&
        PQsendQueryParams(s->pg, "COMMIT", 0, NULL, NULL, NULL, NULL, 0) != 1)
        rc = store_result_error(s, NULL, "COMMIT", e);
    if (rc == 0 && explicit)
        rc = pipe_note(s, "COMMIT", 0, e);
    /* The Sync ends the transaction: an explicit one committed above, or the implicit one
     * of the statements queued since the last Sync (the pipeline commits them at it). */
    if (rc == 0 && PQpipelineSync(s->pg) != 1)
        rc = store_result_error(s, NULL, "sending to PostgreSQL", e);
    if (rc == 0)
        rc = pipe_push(s, (sent_cmd){.what = "Sync", .sync = 1, .ahead = -1, .tag = tag}, e);
    /* After an error, an explicit transaction stays aborted past its Sync: a ROLLBACK
     * (a no-op with a warning when it committed) keeps that from the next one. */
    if (rc == 0 && explicit &&
        (PQsendQueryParams(s->pg, "ROLLBACK", 0, NULL, NULL, NULL, NULL, 0) != 1 ||
         pipe_push(s, (sent_cmd){.what = "ROLLBACK", .quiet = 1, .ahead = -1}, e) < 0))
        rc = store_result_error(s, NULL, "ROLLBACK", e);
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
            pipe_push(s, (sent_cmd){.what = "ROLLBACK", .quiet = 1, .ahead = -1}, NULL);
        pipe_drain(s, NULL, NULL);
        if (PQtransactionStatus(s->pg) != PQTRANS_IDLE) {
            PGresult *r = PQexec(s->pg, "ROLLBACK");
            PQclear(r);
        }
    }
    return rc;
}

int store_send_alone(store *s, const store_stmt *st, int n, const char *const *values, err_t *e)
{
    if (s->in_tx || s->nkept || (s->piped && s->nsent > s->seg)) /* it would join others */
        return store_exec(s, st, n, values, NULL, e);
    int rc = store_send_now(s, st, n, values, NULL, NULL, e);
    if (rc == 0 && PQpipelineSync(s->pg) != 1)
        rc = store_result_error(s, NULL, "sending to PostgreSQL", e);
    if (rc == 0)
        rc = pipe_push(s, (sent_cmd){.what = "Sync", .sync = 1, .quiet = 1, .ahead = -1}, e);
    if (rc == 0)
        s->seg = s->nsent;
    return rc;
}
