/* store_priv.h - the store's internals, shared by its files and nothing else (its tests
 * aside): the connection (store_conn.c), the pipeline engine (store_pipe.c), transactions
 * (store_tx.c) and statements and results (store.c). Domain modules (store_*.c for
 * entities) never include it: they use store.h and store_int.h.
 *
 * Invariant: s->piped mirrors libpq's pipeline mode, and sent[0..nsent) lists, in order,
 * every command sent in it whose result has not been read (a Sync too). */
#ifndef DUO_STORE_PRIV_H
#define DUO_STORE_PRIV_H

#include <libpq-fe.h>

#include "store.h"

#define MAX_PREPARED 128

/* A command sent in pipeline mode whose result has not been read yet. */
typedef struct {
    const char *what; /* statement name, "BEGIN", "COMMIT", or a prepare's name */
    int prepare;      /* a PQsendPrepare: on failure the name is forgotten */
    int sync;         /* a Sync marker, not a command */
    int quiet;        /* its result is nobody's (the ROLLBACK after a deferred commit) */
    int ahead;        /* >= 0: a read-ahead (store_send_ahead) into ahead[pre]; its failure
                       * is nobody's: the statement runs again when it is asked for */
    void *tag;        /* on a Sync: the store_commit_later() whose transaction it ends */
} sent_cmd;

/* A read sent ahead of its use (store_send_ahead), served once by the store_exec that asks
 * for the same statement with the same parameters. */
typedef struct {
    const char *name;
    char *key;   /* the parameters, joined */
    PGresult *r; /* NULL until read (or when it failed) */
    int failed;  /* it failed, or its transaction did (store_ahead_failed) */
    int taken;   /* served already */
} ahead_entry;

/* sent_cmd.ahead of a read ahead whose answer was dropped (store_ahead_clear). */
#define AHEAD_DROPPED (-2)

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
    int broken;        /* libpq could not leave pipeline mode (pipe_leave): reconnect */
    unsigned rnd;      /* reconnect jitter (rng_seed: every process waits its own delays) */
    int nprepared;
    const char *prepared[MAX_PREPARED]; /* names, borrowed from static store_stmt */
    int piped;                          /* in libpq pipeline mode */
    int nsent, capsent;
    sent_cmd *sent; /* commands sent and not yet read, in order */
    int seg;        /* sent[seg..]: what follows the last deferred commit's Sync */
    int nahead, capahead;
    ahead_entry *ahead;
    int ahead_failed;  /* the last drain met a failed read ahead */
    int nahead_failed; /* entries of ahead[] marked failed (store_ahead_failed) */
    int ndone, capdone, done_at;
    committed *done; /* done[done_at..ndone): outcomes not taken yet */
};

struct store_res {
    PGresult *r;
};

/* Converts a failed result (or, with r NULL, the connection's last error) into e, once:
 * ERR_CONFLICT for a unique violation, ERR_DB otherwise, and marks the connection
 * unusable when the server refused a write as read-only. Returns the code. */
int store_result_error(store *s, PGresult *r, const char *what, err_t *e);

/* ---- the pipeline engine (store_pipe.c): the lowest of the four files ---- */

/* Makes room for one more element in *arr (of *cap elements of size sz). 0 or -1. */
int pipe_grow(void **arr, int n, int *cap, size_t sz);
/* Enters libpq's pipeline mode unless in it. 0 or ERR_DB. */
int pipe_enter(store *s, err_t *e);
/* Records a command just sent (pipe_note: a statement, or a prepare) in sent[]. */
int pipe_push(store *s, sent_cmd c, err_t *e);
int pipe_note(store *s, const char *what, int prepare, err_t *e);
/* Sends a Sync and reads every queued result; leaves pipeline mode (see store_pipe.c). */
int pipe_drain(store *s, PGresult **keep, err_t *e);
/* Records every deferred commit from sent[from] on as failed (outcome unknown: why). */
void pipe_fail_unread(store *s, int from, const char *why);
/* Serves an answer sent ahead of st with these parameters into *r (NULL when none). */
int pipe_take_ahead(store *s, const store_stmt *st, int n, const char *const *values, PGresult **r,
                    err_t *e);
/* Leaves libpq's pipeline mode with nothing left unread; when libpq refuses (results
 * still pending that cannot be read), the connection is marked unusable (store_ok() 0)
 * rather than left in pipeline mode while the store believes it left. */
void pipe_leave(store *s);

/* Sends the BEGIN of a transaction whose statements so far were only queued. */
int pipe_send_begin(store *s, err_t *e);
/* 1 while the connection is up and not given up (pipe_leave); store_ok() adds the
 * read-only checks. */
int pipe_usable(const store *s);

/* ---- statements (store.c), above the engine; transactions (store_tx.c) above both;
 * the connection (store_conn.c) on top. No file calls one above it (test_layers). ---- */

/* Runs a plain SQL command outside pipeline mode. 0 or the error. */
int store_simple(store *s, const char *sql, err_t *e);
/* Forgets that a statement is prepared (its PREPARE failed). */
void store_forget_prepared(store *s, const char *name);
/* Hands a successful result to *out (or frees it). 0 or ERR_NOMEM. */
int store_keep_result(PGresult *r, store_res **out, err_t *e);
/* Prepares st on this connection unless it is (queued in pipeline mode). */
int store_ensure_prepared(store *s, const store_stmt *st, int n, err_t *e);

#endif
