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
    void *tag;        /* on a Sync: the store_commit_later() whose transaction it ends; on
                       * a mark: the one whose transaction ends there */
    int mark;         /* not a command: the end of a transaction committed with its group
                       * (store_commit_later), at the segment's Sync; members[member] */
    int member;
} sent_cmd;

/* A statement kept until its transaction ends (store_send outside an explicit
 * transaction): sent then, and sent again alone when the group it was committed with
 * failed. Owns its copies. */
typedef struct {
    const store_stmt *st;
    int n;
    char **v; /* n values, NULL for SQL NULL */
    int *len; /* n lengths */
    int *bin; /* n binary flags */
} kept_stmt;

/* A transaction committed with a group (store_commit_later without a Sync of its own):
 * its outcome is its segment's; when the segment failed, it is replayed alone. */
typedef struct {
    void *tag;
    int nst;
    kept_stmt *st; /* owned */
    int replay;    /* its segment failed: send it again alone */
} member;

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
    int nkept, capkept;
    kept_stmt *kept; /* the implicit transaction being built (store_send), not sent yet */
    int nmembers, capmembers;
    member *members; /* transactions committed with their group, until the drain */
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

/* Keeps a statement of the implicit transaction being built (copied; sent when it ends). */
int pipe_keep(store *s, const store_stmt *st, int n, const char *const *values, const int *lengths,
              const int *binary, err_t *e);
/* Sends the kept statements (into whatever transaction is open: after a BEGIN, or as an
 * implicit one that the next Sync commits) and forgets them. */
int pipe_send_kept(store *s, err_t *e);
/* Ends the implicit transaction being built as a member of the open group: its statements
 * are sent, its end marked, and its outcome (tag) is the group's segment's, read at its
 * Sync; a failed segment's members are replayed alone. */
int pipe_commit_member(store *s, void *tag, err_t *e);
/* Ends the segment in progress with a Sync, if there is one (a group, reads ahead). */
int pipe_part(store *s, err_t *e);
/* 1 when the segment in progress holds a group's members. */
int pipe_group_open(const store *s);
/* Frees every kept statement and member (a reset connection, a closed store). */
void pipe_forget_kept(store *s);
/* Frees the kept statements of the transaction being built (its rollback). */
void pipe_forget_kept_only(store *s);
/* Sends st now, in the pipeline (the body of store_send inside an explicit transaction,
 * and of store_send_alone). 0, or the error (what was queued is then drained). */
int store_send_now(store *s, const store_stmt *st, int n, const char *const *values,
                   const int *lengths, const int *binary, err_t *e);

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
