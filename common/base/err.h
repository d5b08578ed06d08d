/* err.h - the project's one error convention.
 *
 * Every fallible function returns 0 on success or a negative ERR_* code, and fills an
 * optional caller-owned `err_t` with the code and a short human message. Callers check
 * every return (`if (rc < 0) return rc;`). An err_t never owns heap memory, so it needs
 * no free and can live on the stack. */
#ifndef DUO_ERR_H
#define DUO_ERR_H

#include <stddef.h>

enum {
    ERR_OK = 0,
    ERR_NOMEM = -1,    /* allocation failed */
    ERR_INVAL = -2,    /* bad input: a message, an argument, a configuration value */
    ERR_IO = -3,       /* local I/O: files, sockets */
    ERR_DB = -4,       /* PostgreSQL */
    ERR_MQ = -5,       /* RabbitMQ */
    ERR_DUO = -6,      /* Duo answered an error (see duo_error for detail) */
    ERR_TLS = -7,      /* TLS handshake or certificate verification */
    ERR_NOTFOUND = -8, /* a looked-up row or object does not exist */
    ERR_CONFLICT = -9, /* a uniqueness or state conflict */
    ERR_TIMEOUT = -10, /* a deadline passed */
    ERR_CRYPTO = -11,  /* encryption, decryption or key problems */
    ERR_CONFIG = -12,  /* missing or malformed configuration */
    ERR_NET = -13,     /* network failure talking to a remote */
};

typedef struct err {
    int code;      /* one of ERR_*, 0 when unset */
    char msg[512]; /* NUL-terminated, never holds secrets */
} err_t;

/* Sets *e (if non-NULL) to code and a printf-formatted message; returns code so
 * callers can `return err_set(e, ERR_INVAL, "...")`. */
int err_set(err_t *e, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Prefixes the existing message of *e with context ("loading stage: ..."); returns e->code
 * (or `code` when e is NULL). */
int err_wrap(err_t *e, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Static name of a code ("ERR_INVAL"); never NULL. */
const char *err_name(int code);

#endif
