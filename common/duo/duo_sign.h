/* duo_sign.h - Duo request canonicalisation and signing (v2 HMAC-SHA1/SHA512, v5).
 *
 * Pure functions: no network, no locale, no global state. The canonical string is
 * byte-identical to what Duo rebuilds on its side, so it must match Duo's official
 * client exactly (tests/unit/test_duo_sign.c checks every published vector). Returned
 * heap strings are owned by the caller (free()); fixed buffers are caller-supplied. */
#ifndef DUO_SIGN_H
#define DUO_SIGN_H

#include <stddef.h>
#include <time.h>

#include "err.h"

/* One request parameter; both strings are UTF-8, borrowed for the duration of a call. */
typedef struct duo_param {
    const char *key;
    const char *value;
} duo_param;

typedef enum { DUO_DIGEST_SHA512 = 0, DUO_DIGEST_SHA1 = 1 } duo_digest;

/* Room for "Tue, 21 Aug 2012 17:29:18 -0000" plus NUL. */
#define DUO_DATE_LEN 32
/* Room for a SHA-512 hex digest plus NUL. */
#define DUO_HEX_LEN 129

/* Everything that goes into one signature. `params` is what appears on the params line:
 * every param for v2 and for a v5 GET/DELETE, none (NULL, 0) for a v5 POST, whose params
 * travel in `body`. `body` is the exact body bytes (v5 only; NULL means empty).
 * `x_duo` lists the X-Duo-* headers sent (v5 only; other names are ignored). */
typedef struct duo_sign_input {
    int sig_version;    /* 2 or 5 */
    duo_digest digest;  /* v2 only; v5 is always SHA-512 */
    const char *method; /* any case; upper-cased */
    const char *host;   /* any case, without port; lower-cased */
    const char *path;   /* e.g. "/auth/v2/check" */
    const char *date;   /* RFC 2822, as sent in Date or X-Duo-Date */
    const duo_param *params;
    size_t nparams;
    const char *body;
    size_t body_len;
    const duo_param *x_duo;
    size_t nx_duo;
} duo_sign_input;

/* Writes t as an RFC 2822 date in UTC ("Tue, 21 Aug 2012 17:29:18 -0000"), with day
 * and month names built by hand so the process locale cannot change it. out must hold
 * DUO_DATE_LEN bytes. Returns 0 or ERR_INVAL. */
int duo_format_date(time_t t, char out[DUO_DATE_LEN]);

/* Percent-encodes len bytes of s (A-Z a-z 0-9 - . _ ~ stay bare, the rest %XX upper
 * case). *out is a new NUL-terminated string owned by the caller. */
int duo_percent_encode(const char *s, size_t len, char **out, err_t *e);

/* The params line: encoded key=value pairs sorted by encoded key, then encoded value,
 * joined with '&'; "" when n == 0. *out is owned by the caller. */
int duo_canon_params(const duo_param *p, size_t n, char **out, err_t *e);

/* The v5 JSON body for a POST: an object of string values, keys sorted, no spaces,
 * non-ASCII escaped as \uXXXX (as Duo's Python client writes it); "{}" when n == 0.
 * Rejects invalid UTF-8 and repeated keys (ERR_INVAL). *out (NUL-terminated, *len
 * bytes) is owned by the caller. */
int duo_json_body(const duo_param *p, size_t n, char **out, size_t *len, err_t *e);

/* The canonical string that is signed (fields joined by '\n'). *out is owned by the
 * caller. */
int duo_canon_request(const duo_sign_input *in, char **out, err_t *e);

/* Lower-case hex HMAC of the canonical string keyed with skey, into hex (DUO_HEX_LEN
 * bytes). */
int duo_sign(const duo_sign_input *in, const char *skey, char hex[DUO_HEX_LEN], err_t *e);

/* "Basic " + base64(ikey ":" hex). *out is owned by the caller. */
int duo_auth_header(const char *ikey, const char *hex, char **out, err_t *e);

/* Lower-case hex SHA-512 of len bytes (DUO_HEX_LEN bytes out). */
int duo_sha512_hex(const void *data, size_t len, char hex[DUO_HEX_LEN], err_t *e);

#endif
