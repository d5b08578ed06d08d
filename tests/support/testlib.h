/* testlib.h - helpers shared by integration and end-to-end tests.
 *
 * Every test gets its own freshly created database and its own MQ_PREFIX, so tests
 * can run in parallel against the one local PostgreSQL and RabbitMQ. The services'
 * addresses come from the environment written by scripts/services.sh (DUO_PG_ADMIN_URL,
 * AMQP_URL, DUO_EMU_URL, DUO_CA_FILE). */
#ifndef DUO_TESTLIB_H
#define DUO_TESTLIB_H

#include <stddef.h>

/* Returns getenv(name) (borrowed); exits the test with a clear message when unset. */
const char *tl_env(const char *name);

/* A TCP port on 127.0.0.1 that was free a moment ago (the kernel's pick), e.g. for a
 * worker's METRICS_PORT: fixed numbers collide with other sockets on a busy machine.
 * -1 when none could be had. */
int tl_free_port(void);

/* Creates a new empty database named after `tag` plus a unique suffix and writes its
 * URL to out. Returns 0 or -1. */
int tl_create_db(const char *tag, char *out, size_t outlen);

/* Creates a fresh database (tl_create_db; URL in db), applies every migration and returns
 * a store on it (caller store_close()s), or NULL with a message on stderr. */
struct store;
struct store *tl_migrated_store(const char *tag, char *db, size_t dblen);

/* Drops a database created by tl_create_db (terminating its connections). */
void tl_drop_db(const char *url);

/* Runs one SQL statement on url; returns 0 or -1 (message on stderr). */
int tl_exec(const char *url, const char *sql);

/* Runs a query returning one value; copies it to out ("" for NULL). Returns 0 or -1. */
int tl_query1(const char *url, const char *sql, char *out, size_t outlen);

/* A unique MQ prefix ("t<tag><pid><counter>") written to out. */
void tl_unique_prefix(const char *tag, char *out, size_t outlen);

/* Path of a built binary (DUO_BIN_DIR/name) written to out. */
void tl_bin(const char *name, char *out, size_t outlen);

#endif
