/* admin_io.h - helpers shared by duoctl's administration commands (stage, user, device):
 * opening the store and keyring from the environment, printing JSON lines, and reading
 * secrets from files or standard input without leaving copies behind. */
#ifndef DUOCTL_ADMIN_IO_H
#define DUOCTL_ADMIN_IO_H

#include <stddef.h>

#include <jansson.h>

#include "config.h"
#include "secret.h"
#include "store.h"

/* Loads the configuration (DATABASE_URL required) and connects. With want_keys, also
 * loads the keyring (*k), refusing to go on without a key. On failure prints one line
 * "duoctl <what>: <reason>" on stderr, leaves nothing open and returns -1. On success
 * the caller releases everything with admin_close(). k may be NULL when !want_keys. */
int admin_open(const char *what, int want_keys, config *c, store **s, secret_keyring **k);

/* Closes what admin_open opened; accepts NULLs. */
void admin_close(config *c, store *s, secret_keyring *k);

/* Prints obj as one compact JSON line on stdout and releases it (steals the reference).
 * Returns 0, or -1 when obj is NULL (out of memory) or stdout fails. */
int admin_print(json_t *obj);

/* json_string of an optional string: JSON null for NULL. New reference. */
json_t *admin_jstr(const char *s);

/* Reads a whole file ("-" = standard input) into a fresh NUL-terminated buffer of at
 * most max bytes; with trim, one trailing newline (LF or CRLF) is dropped. The caller
 * owns the result and releases it with secret_free() (it may hold a secret). Returns
 * NULL and prints "duoctl <what>: <path>: <reason>" on failure. */
char *admin_read_file(const char *what, const char *path, size_t max, int trim);

/* Parses a decimal long in [min, max]; returns 0 or -1. */
int admin_parse_long(const char *s, long min, long max, long *out);

#endif
