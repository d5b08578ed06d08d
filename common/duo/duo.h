/* duo.h - the Duo Auth API v2 / Admin API v1 client (HTTPS via libcurl, JSON via jansson).
 *
 * Three layers, each public so the asynchronous engine (duo_async.h) can reuse the first
 * and last:
 *   duo_request_build()  signs one attempt (pure: URL, headers, body; no I/O);
 *   duo_call()           performs it with retries on a duo_client (blocking: a loop over
 *                        a private duo_async engine, so one retry policy serves both);
 *   duo_response_parse() turns (HTTP status, body) into a response or a duo_error.
 * Parameter builders (duo_auth_params, duo_preauth_params) are the one place an acting
 * call's parameters are listed; typed calls (duo_enroll, duo_preauth, ...) sit on
 * duo_call.
 *
 * Invariants: TLS peer and host verification are always on; every attempt is signed
 * afresh; only HTTP 429, 5xx and connection failures are retried (never 4xx, never a
 * timed-out request, which Duo may already have acted on, e.g. a delivered push); a
 * failure is always an error result with a filled duo_error, never a crash.
 * Ownership: strings in result structs are heap copies owned by the struct and released
 * by its *_free() function; json_t outputs are new references the caller json_decref()s.
 * A duo_client is not thread-safe: use one per thread. */
#ifndef DUO_DUO_H
#define DUO_DUO_H

#include <jansson.h>
#include <stddef.h>
#include <time.h>

#include "duo_sign.h"
#include "err.h"

/* ---- errors ------------------------------------------------------------------------ */

typedef enum {
    DUO_CLASS_NONE = 0,
    DUO_CLASS_TRANSIENT,   /* 429, 5xx, network, timeout, cancelled: try again later */
    DUO_CLASS_PERMANENT,   /* other 4xx (e.g. 40002), malformed answer, bad arguments */
    DUO_CLASS_AUTH_CONFIG, /* 401xx: wrong ikey/skey, clock skew, missing credentials */
    DUO_CLASS_LICENSE,     /* 403 (40301): Admin API not licensed or not permitted */
    DUO_CLASS_TLS,         /* handshake or certificate verification failed */
} duo_error_class;

/* What failed; together with http_status/code it picks duo_error_code()'s string. */
typedef enum {
    DUO_FAIL_NONE = 0,
    DUO_FAIL_HTTP,         /* Duo answered a non-200 status */
    DUO_FAIL_BAD_RESPONSE, /* 200 but not JSON, wrong envelope, missing field, oversize */
    DUO_FAIL_NETWORK,      /* could not connect, connection dropped */
    DUO_FAIL_TIMEOUT,      /* connect or total timeout of an attempt */
    DUO_FAIL_TLS,
    DUO_FAIL_CANCELLED,    /* the idle hook asked to stop */
    DUO_FAIL_LOCAL,        /* bad arguments or out of memory, nothing was sent */
    DUO_FAIL_NOT_FOUND,    /* a lookup found nothing (ERR_NOTFOUND) */
    DUO_FAIL_CIRCUIT_OPEN, /* the host's circuit breaker is open: nothing was sent */
    DUO_FAIL_STAGE_BUSY,   /* the call's group (stage) was at its limit of calls in flight
                            * longer than it may wait: nothing was sent */
} duo_fail;

typedef struct duo_error {
    int http_status;   /* HTTP status of the last attempt, 0 when none arrived */
    int code;          /* Duo's code (e.g. 40103), 0 when none */
    char message[256]; /* Duo's message or ours; never holds secrets */
    char detail[512];  /* Duo's message_detail, or what we know (CA file, curl error) */
    duo_error_class cls;
    duo_fail fail;
    int attempts;          /* HTTP attempts made by the call */
    int not_sent;          /* the last attempt never reached Duo (name lookup or connect failed) */
    long long retry_in_ms; /* CIRCUIT_OPEN: when the host may be probed again; STAGE_BUSY:
                            * a hint; else 0 */
} duo_error;

/* Static name of a class ("transient", "permanent", "auth_config", "license", "tls"). */
const char *duo_error_class_name(duo_error_class cls);

/* Stable snake_case code for replies, e.g. "duo_rate_limited", "duo_unavailable",
 * "duo_bad_signature", "duo_bad_integration_key", "duo_missing_credentials",
 * "duo_timestamp", "duo_forbidden", "duo_invalid_request", "duo_not_found",
 * "duo_tls", "duo_timeout", "duo_cancelled", "duo_bad_response", "duo_network",
 * "duo_user_not_found", "duo_local_error", "duo_circuit_open", "duo_stage_busy". Static;
 * never NULL. */
const char *duo_error_code(const duo_error *err);

/* 1 when a call makes Duo act (POST /auth/v2/auth sends a push, call or SMS, or checks
 * a passcode; POST /auth/v2/enroll creates an activation): repeating it after Duo may
 * have received it could act twice, so the engine retries such a call only when the
 * attempt never reached Duo or Duo refused it unprocessed (429). */
int duo_call_acts(const char *method, const char *path);

/* 1 when an acting call reaches a person (a push, call or SMS, or an enrollment): it is
 * sent on a fresh connection, because libcurl silently re-sends a request whose reused
 * keep-alive connection died before any answer, and Duo may have acted on the first.
 * A passcode check reaches nobody and keeps connection reuse. params borrowed. */
int duo_call_reaches_user(const char *method, const char *path, const duo_param *params,
                          size_t nparams);

/* 1 when Duo holds the call until something happens (a long poll): GET
 * /auth/v2/auth_status, and a POST /auth/v2/auth that waits for the user (push, phone or
 * auto without async=1). Every other call is answered at once and gets the short
 * timeout (duo_client_opts.quick_timeout_ms). params borrowed. */
int duo_call_long_poll(const char *method, const char *path, const duo_param *params,
                       size_t nparams);

/* ---- client ------------------------------------------------------------------------ */

typedef struct duo_client_opts {
    const char *host; /* "api-xxxx.duosecurity.com" or "127.0.0.1:58443" */
    const char *ikey;
    const char *skey;    /* secret: never logged nor put in an error */
    int sig_version;     /* 5 (default) or 2 */
    duo_digest digest;   /* v2 only: SHA-512 (default) or SHA-1 */
    const char *ca_file; /* CA bundle; NULL/"" = $DUO_CA_FILE if set, else system CAs */
    long connect_timeout_ms;
    long timeout_ms;       /* one attempt of a long poll (duo_call_long_poll), transfer
                            * included */
    long quick_timeout_ms; /* one attempt of any other call; 0: timeout_ms */
    /* Bulkhead (asynchronous engine only): calls of one group (a stage) in flight at once
     * on the engine. NULL/0: no limit. A call over the limit waits for a slot, at most
     * group_queue_max of them and group_queue_ms each, then fails DUO_FAIL_STAGE_BUSY. */
    const char *group;
    int group_limit;
    int group_queue_max;
    long group_queue_ms;
    int retry_attempts;   /* attempts in all (>= 1) */
    long retry_budget_ms; /* no retry starts once this much time has passed */
    long backoff_base_ms; /* first backoff; doubles up to 32x; jitter up to this much */
    size_t max_response_bytes;
    /* Called at least every ~200 ms while a call waits (transfer or backoff). Returning
     * non-zero cancels the call (DUO_FAIL_CANCELLED, ERR_TIMEOUT). May be NULL. */
    int (*idle)(void *arg);
    void *idle_arg;
} duo_client_opts;

/* Fills *o with the defaults: v5, SHA-512, 5 s connect, 75 s total, 7 attempts, 90 s
 * budget, 1000 ms backoff base, 4 MiB responses, no hook; strings NULL. */
void duo_client_opts_default(duo_client_opts *o);

typedef struct duo_client duo_client;

/* Creates a client for one Duo host and integration; copies every string in *o (the
 * hook's arg is borrowed). NULL on failure with *e set. Free with duo_client_free(). */
duo_client *duo_client_new(const duo_client_opts *o, err_t *e);

/* Accepts NULL. */
void duo_client_free(duo_client *c);

/* ---- the three layers -------------------------------------------------------------- */

/* One signed attempt, ready to send. All strings owned by the request. */
typedef struct duo_request {
    char *method; /* upper case */
    char *url;    /* https://host[:port]/path[?query] */
    char *body;   /* NULL when none (GET/DELETE) */
    size_t body_len;
    char *headers[4]; /* "Name: value" lines: Authorization, date, Content-Type */
    size_t nheaders;
} duo_request;

/* Signs method+path+params for o (host, ikey, skey, sig_version, digest) at time now.
 * *out is owned by the caller: duo_request_free(). */
int duo_request_build(const duo_client_opts *o, const char *method, const char *path,
                      const duo_param *params, size_t nparams, time_t now, duo_request **out,
                      err_t *e);

/* Accepts NULL. */
void duo_request_free(duo_request *r);

/* Default cap on response bodies (bigger ones are a bad response). */
#define DUO_MAX_RESPONSE_BYTES ((size_t)4 << 20)

/* Parses one answer. 0: *response (and *metadata when present, else NULL) are new
 * references owned by the caller; either out pointer may be NULL. ERR_DUO: err is
 * filled (class, code, message, detail) and nothing is returned. */
int duo_response_parse(long http_status, const char *body, size_t len, json_t **response,
                       json_t **metadata, duo_error *err);

/* A parser of answers with duo_response_parse()'s contract. The caller that knows the
 * call chooses it (the user-list pages of an import: duo_users_scan); the engine never
 * looks at an endpoint to pick one. */
typedef int (*duo_parse_fn)(long http_status, const char *body, size_t len, json_t **response,
                            json_t **metadata, duo_error *err);

/* Performs a signed call with retries. 0: *response / *metadata as duo_response_parse.
 * Negative: ERR_DUO (Duo error or bad answer), ERR_TLS, ERR_TIMEOUT (timeout or
 * cancelled), ERR_NET, ERR_INVAL, ERR_NOMEM; err (may be NULL) says which. */
int duo_call(duo_client *c, const char *method, const char *path, const duo_param *params,
             size_t nparams, json_t **response, json_t **metadata, duo_error *err);
/* duo_call() whose answer is read by parse (NULL: duo_response_parse). */
int duo_call_parsed(duo_client *c, const char *method, const char *path, const duo_param *params,
                    size_t nparams, duo_parse_fn parse, json_t **response, json_t **metadata,
                    duo_error *err);

/* ---- parameter builders ----------------------------------------------------------- */

typedef struct duo_auth_req {
    const char *user_id; /* exactly one of user_id / username */
    const char *username;
    const char *factor;   /* NULL = "auto" */
    const char *device;   /* NULL = "auto" (not sent for factor passcode) */
    const char *passcode; /* factor passcode */
    const char *ipaddr;   /* the rest are optional (NULL = not sent) */
    const char *type;
    const char *display_username;
    const char *pushinfo; /* URL-encoded pairs, sent as one value (duo_pushinfo_encode) */
    int async;            /* 1: Duo answers with a txid at once */
} duo_auth_req;

#define DUO_AUTH_MAX_PARAMS 12

/* Fills p with the parameters of POST /auth/v2/auth for req and returns their count, or
 * ERR_INVAL when req names not exactly one of user_id / username. p borrows req's
 * strings: valid while they are. */
int duo_auth_params(const duo_auth_req *req, duo_param p[DUO_AUTH_MAX_PARAMS]);

/* The same for POST /auth/v2/preauth: exactly one of user_id / username; ipaddr may be
 * NULL. */
int duo_preauth_params(const char *user_id, const char *username, const char *ipaddr,
                       duo_param p[2]);

/* pushinfo as Duo takes it: obj's members as percent-encoded "k=v" pairs joined by "&"
 * in the object's order (a non-string value is sent empty). *out is a new string owned
 * by the caller ("" for an empty object). 0, or ERR_NOMEM with *e set. */
int duo_pushinfo_encode(const json_t *obj, char **out, err_t *e);

/* ---- typed calls ------------------------------------------------------------------- */

/* A typed call in two halves, so that the asynchronous engine can carry it as well as
 * the blocking client: duo_*_spec() fills the request (method, path, parameters) and
 * duo_*_answer() judges what came back (rc and the response of duo_call or of an engine
 * callback; both borrowed). The caller that knows the call chooses its parser: the
 * engine knows no endpoint. A spec's parameters point into the spec itself: submit it
 * where it was built (duo_async_submit copies them). *_spec returns 0 or ERR_INVAL
 * (err filled); *_answer returns 0 with the result filled, or the call's failure (rc)
 * or its own (err filled), leaving the result empty. */
typedef struct duo_call_spec {
    const char *method; /* static */
    char path[96];
    duo_param p[3];
    size_t n;
    char buf[32], buf2[32]; /* storage of numeric parameters */
    duo_parse_fn parse;     /* the answer's reader (NULL: duo_response_parse) */
} duo_call_spec;

typedef struct duo_enroll_result {
    char *activation_barcode; /* URL of a QR image */
    char *activation_code;    /* duo://... */
    char *activation_url;
    char *user_id;
    char *username;
    long long expiration; /* unix time */
} duo_enroll_result;

/* username may be NULL (Duo picks one); valid_secs <= 0 leaves Duo's default. */
int duo_enroll(duo_client *c, const char *username, long valid_secs, duo_enroll_result *out,
               duo_error *err);
void duo_enroll_result_free(duo_enroll_result *r);
int duo_enroll_spec(duo_call_spec *c, const char *username, long valid_secs);
int duo_enroll_answer(int rc, json_t *resp, duo_enroll_result *out, duo_error *err);

typedef enum { DUO_ENROLL_WAITING = 1, DUO_ENROLL_SUCCESS, DUO_ENROLL_INVALID } duo_enroll_state;

/* Any answer other than waiting/success/invalid is a bad response. */
int duo_enroll_status(duo_client *c, const char *user_id, const char *activation_code,
                      duo_enroll_state *state, duo_error *err);
int duo_enroll_status_spec(duo_call_spec *c, const char *user_id, const char *activation_code,
                           duo_error *err);
int duo_enroll_status_answer(int rc, json_t *resp, duo_enroll_state *state, duo_error *err);

/* Only exactly "allow" is ALLOW and "deny" DENY ("waiting" is WAITING); anything else,
 * including an unexpected string, is OTHER: never treat OTHER as success. */
typedef enum {
    DUO_RESULT_OTHER = 0,
    DUO_RESULT_ALLOW,
    DUO_RESULT_DENY,
    DUO_RESULT_WAITING
} duo_result;

duo_result duo_result_of(const char *s);

typedef struct duo_auth_result {
    duo_result result;
    char *result_raw;        /* as Duo sent it */
    char *status;            /* may be NULL */
    char *status_msg;        /* may be NULL */
    char *enroll_portal_url; /* preauth "enroll" only */
    json_t *response;        /* the whole response object (owned), e.g. preauth devices */
} duo_auth_result;

void duo_auth_result_free(duo_auth_result *r);

/* Exactly one of user_id / username; ipaddr may be NULL. */
int duo_preauth(duo_client *c, const char *user_id, const char *username, const char *ipaddr,
                duo_auth_result *out, duo_error *err);
int duo_preauth_spec(duo_call_spec *c, const char *user_id, const char *username,
                     const char *ipaddr, duo_error *err);
/* *out owns a new reference to resp (out->response). */
int duo_preauth_answer(int rc, json_t *resp, duo_auth_result *out, duo_error *err);

typedef struct duo_users_page {
    json_t *users;           /* owned array of user objects */
    long long total_objects; /* -1 when Duo did not say */
    long long next_offset;   /* -1 when absent or null: the last page */
} duo_users_page;

/* limit 1..300. */
int duo_admin_users_page(duo_client *c, int limit, long long offset, duo_users_page *out,
                         duo_error *err);
void duo_users_page_free(duo_users_page *p);
int duo_admin_users_page_spec(duo_call_spec *c, int limit, long long offset, duo_error *err);
/* out->users is a new reference to resp. */
int duo_admin_users_page_answer(int rc, json_t *resp, json_t *meta, duo_users_page *out,
                                duo_error *err);

/* *user: a new reference to the user object; ERR_NOTFOUND when no such user. */
int duo_admin_user_by_username(duo_client *c, const char *username, json_t **user, duo_error *err);
int duo_admin_user_by_username_spec(duo_call_spec *c, const char *username, duo_error *err);
int duo_admin_user_by_username_answer(int rc, json_t *resp, const char *username, json_t **user,
                                      duo_error *err);

/* GET /admin/v1/users/<user_id>. *user: a new reference to the user object; ERR_NOTFOUND
 * (with err->code 40401) when Duo has no such user; ERR_INVAL for an id that is not
 * letters and digits (it goes into the path). */
int duo_admin_user_by_id(duo_client *c, const char *user_id, json_t **user, duo_error *err);
int duo_admin_user_by_id_spec(duo_call_spec *c, const char *user_id, duo_error *err);
/* ERR_NOTFOUND (fail DUO_FAIL_NOT_FOUND, Duo's code kept) for a 404. */
int duo_admin_user_by_id_answer(int rc, json_t *resp, json_t **user, duo_error *err);

/* ---- internal helpers shared by the duo_*.c files (not for other modules) ---------- */

/* Fills err (may be NULL) and returns rc. */
int duo_fail_set(duo_error *err, int rc, duo_fail fail, duo_error_class cls, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

#endif
