/* store.h - the PostgreSQL store: one connection, transactions, and prepared,
 * parameterised statements. Its files (store_conn.c, store_pipe.c, store_tx.c, store.c,
 * sharing store_priv.h) are the only ones that include <libpq-fe.h>; domain
 * modules (store_*.c) build on store_exec() and the layer's helpers (store_int.h,
 * store_util.c) and never see libpq.
 *
 * A store is used by one thread. Statements are described by a static store_stmt
 * (name + SQL) and prepared lazily, once per connection. */
#ifndef DUO_STORE_H
#define DUO_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"

typedef struct store store;
typedef struct store_res store_res;

/* A statement: both strings are borrowed for the program's lifetime (use literals). */
typedef struct store_stmt {
    const char *name;
    const char *sql;
} store_stmt;

/* Connects to url (libpq conninfo or URL, one host or several: `host=a,b port=5432,5432`
 * or `postgresql://a:5432,b:5432/db`). Unless the URL sets them, target_session_attrs is
 * read-write (of several hosts, the one that is primary now), connect_timeout 5 s and TCP
 * keepalives notice a dead peer in about 25 s. A server that reports itself read-only (a
 * hot standby) is refused. Returns NULL and fills e on failure. The url string is copied
 * (never logged: it may hold a password). The caller owns the result: store_close(). */
store *store_open(const char *url, err_t *e);

/* Closes and frees; accepts NULL. Rolls back an open transaction. */
void store_close(store *s);

/* 1 when the connection is up and usable for writes (a cheap local check, no round
 * trip): 0 after a lost connection, and after the server refused a write as read-only
 * (SQLSTATE 25006) or reported itself a standby, and after libpq was left holding
 * results the store could not match to its commands (it then gives the connection up). */
int store_ok(const store *s);

/* Re-establishes a lost (or read-only) connection with jittered backoff for up to
 * max_wait_ms (0: one try), to whichever host of the URL accepts writes now; a standby
 * counts as a failed try. Prepared statements are re-prepared lazily. Returns 0 or
 * ERR_DB. */
int store_reconnect(store *s, int max_wait_ms, err_t *e);

/* Opens a transaction without a round trip. BEGIN is sent only when a statement inside
 * needs its answer (store_exec, store_flush); until then the statements queued with
 * store_send are kept, and sent when the transaction ends: as an implicit transaction
 * (store_commit), with its group (store_commit_later), or after the BEGIN that makes them
 * part of the explicit one; a rollback before that sends nothing. Results are read in
 * order; the first failure is reported there. */
int store_begin(store *s, err_t *e);
/* Ends the transaction with everything still queued and reads it all: 0 only when every
 * queued statement succeeded and the transaction committed. On failure the transaction
 * is rolled back. */
int store_commit(store *s, err_t *e);
/* Rolls back if a transaction is open; never fails. A broken connection is left broken
 * (store_ok() == 0) for the caller's store_reconnect(). */
void store_rollback(store *s);
int store_in_tx(const store *s);

/* Executes st with n text parameters (values[i] may be NULL for SQL NULL; lengths/
 * binary are optional: pass NULL for all-text). On success *out (if out is non-NULL)
 * receives a result the caller frees with store_res_free(). Errors: ERR_CONFLICT for
 * unique violations (23505), ERR_NOTFOUND never (check rows), ERR_DB otherwise, with
 * the server's message in e. A lost connection is reported as ERR_DB with
 * store_ok() == 0 afterwards. */
int store_exec(store *s, const store_stmt *st, int n, const char *const *values, store_res **out,
               err_t *e);

/* Queues st (as store_exec_bin) without waiting for its result, for a statement whose
 * result the caller does not need: it runs in order with the statements around it and
 * its outcome is read at the next store_exec, store_flush or store_commit, which fails
 * with the first error of what was queued (a failed statement also aborts the
 * transaction it is in, so the COMMIT does not happen). A statement that must change
 * something to be right has to fail by itself when it does not (e.g. a function that
 * raises): its row count is not looked at. 0, or an error when it could not be sent. */
int store_send(store *s, const store_stmt *st, int n, const char *const *values, const int *lengths,
               const int *binary, err_t *e);

/* Sends a statement ahead of its use: its answer travels back with the next round trip
 * (store_flush, or a store_exec; one asked for before that is read by its own), and is
 * served, once, by the first store_exec of the same statement with the same text
 * parameters. Only a statement this connection has prepared, and only outside a
 * transaction with nothing but other statements sent ahead queued. Those sent ahead
 * between two Syncs are one transaction (store_ahead_end parts them): an answer is
 * served only when its whole group committed; if any of it failed, every answer of the
 * group is forgotten (its writes were rolled back: a claim or a guard row may be sent
 * ahead) and each statement runs on its own when asked for, as does a statement that
 * travelled with them. Returns 1 when sent, 0 when not (nothing lost: the store_exec
 * runs it). Answers never asked for are dropped by store_ahead_clear(). */
int store_send_ahead(store *s, const store_stmt *st, int n, const char *const *values);

/* Forgets every read-ahead answer not asked for (e.g. after the job it was for). */
void store_ahead_clear(store *s);

/* Ends the reads sent ahead since the last Sync as a transaction of their own, so that a
 * failure of one group (a job's reads and claim) rolls back neither an earlier group nor
 * what follows. Everything between two Syncs is one transaction: if any part of it
 * fails, every answer in it is forgotten (its writes were rolled back) and each
 * statement runs again on its own when asked for. No effect when nothing is queued. */
void store_ahead_end(store *s);

/* 1 when a read ahead of st with these parameters was read and failed (or its group
 * did): the statement then runs again on its own, and whatever session state its failed
 * run left (e.g. an advisory lock) is the caller's to undo first. */
int store_ahead_failed(store *s, const store_stmt *st, int n, const char *const *values);

/* Reads the results of everything queued (one round trip): 0, or the first failure of
 * what follows the last deferred commit (each store_commit_later's own outcome is
 * recorded for store_take_committed). Inside a transaction it sends BEGIN first and
 * leaves the transaction open. No effect when nothing is queued. */
int store_flush(store *s, err_t *e);

/* Ends a transaction without waiting for it: the open one (store_begin) is committed, or,
 * outside one, the statements queued by store_send since the last such call run as one
 * transaction. Everything travels with the next round trip (store_flush, store_exec,
 * store_commit), whose reading records this transaction's outcome under tag; collect it
 * with store_take_committed(). Transactions ended this way are independent: one that
 * fails changes neither those before nor those after it, nor the caller's statement of
 * that round trip. Those that never sent BEGIN (only queued statements) are committed as
 * one group: one transaction and one Sync for all of them until the next round trip (their
 * statements are kept, copied, until then); if the group fails, each is sent again alone,
 * so each still commits or fails by itself (a statement's effects outside the transaction,
 * e.g. a session lock released, happen once more). 0 when queued; an error when it could
 * not be (the transaction is then rolled back and nothing is recorded under tag). tag is
 * the caller's, never touched. */
int store_commit_later(store *s, void *tag, err_t *e);

/* Queues st (text parameters) as a transaction of its own whose outcome nobody waits
 * for: it travels with the next round trip, and a failure is only logged then. For a
 * write that may be lost without harm (e.g. a mark that only saves work later). Inside a
 * transaction, or behind other queued statements, it runs at once (store_exec). 0, or
 * an error when it could not be sent. */
int store_send_alone(store *s, const store_stmt *st, int n, const char *const *values, err_t *e);

/* Takes the oldest recorded outcome of a store_commit_later(): returns 1 with *tag and
 * *e (code 0: committed; otherwise why not: rolled back, or unknown when the connection
 * was lost first), 0 when none is left. A lost or reset connection records every
 * unread one as failed. */
int store_take_committed(store *s, void **tag, err_t *e);

/* Same with explicit per-parameter lengths and binary flags (for bytea). */
int store_exec_bin(store *s, const store_stmt *st, int n, const char *const *values,
                   const int *lengths, const int *binary, store_res **out, err_t *e);

/* Runs a plain SQL script (several statements, no parameters): migrations only. */
int store_exec_script(store *s, const char *sql, err_t *e);

int store_res_rows(const store_res *r);
/* Borrowed: valid until store_res_free(r). "" for NULL (check store_res_isnull). */
const char *store_res_get(const store_res *r, int row, int col);
int store_res_isnull(const store_res *r, int row, int col);
/* Rows affected by an INSERT/UPDATE/DELETE. */
long store_res_affected(const store_res *r);
void store_res_free(store_res *r);

/* Parses a result cell as a signed 64-bit integer; 0 or ERR_INVAL. */
int store_res_i64(const store_res *r, int row, int col, int64_t *out);

/* Decodes a bytea cell (text format "\x..") into a fresh buffer the caller frees.
 * Returns 0 or ERR_INVAL/ERR_NOMEM. */
int store_res_bytea(const store_res *r, int row, int col, unsigned char **out, size_t *len);

/* Applies every migrations/NNN_*.sql in dir not yet recorded in schema_migrations,
 * each in its own transaction, under a session advisory lock so concurrent starters
 * serialise. Reports applied count in *applied (may be NULL). */
int store_migrate(store *s, const char *dir, int *applied, err_t *e);

/* The schema version the database is at (highest applied), 0 when none. */
int store_schema_version(store *s, int *version, err_t *e);

/* 1 when s is a canonical textual uuid (8-4-4-4-12 hex digits, any case); 0 for NULL.
 * Check a uuid parameter with it before the query, so PostgreSQL never sees a bad cast
 * (store_util.c). */
int store_is_uuid(const char *s);

#endif
