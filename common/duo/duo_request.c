/* duo_request.c - turns a call (method, path, params) into one signed attempt.
 *
 * Invariant: the body and query put on the wire are exactly what was signed (v5 hashes
 * the body bytes; v2 and v5 GET sign the decoded params, which the strict encoding used
 * here round-trips). No I/O happens here, so an async engine can reuse it. */
#include "duo.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

int duo_call_acts(const char *method, const char *path)
{
    if (!method || !path || strcmp(method, "POST") != 0)
        return 0;
    return strcmp(path, "/auth/v2/auth") == 0 || strcmp(path, "/auth/v2/enroll") == 0;
}

int duo_call_reaches_user(const char *method, const char *path, const duo_param *params,
                          size_t nparams)
{
    if (!duo_call_acts(method, path))
        return 0;
    for (size_t i = 0; i < nparams; i++)
        if (params[i].key && strcmp(params[i].key, "factor") == 0)
            return !params[i].value || strcmp(params[i].value, "passcode") != 0;
    return 1;
}

static const char *param_of(const duo_param *params, size_t n, const char *key)
{
    for (size_t i = 0; i < n; i++)
        if (params[i].key && strcmp(params[i].key, key) == 0)
            return params[i].value ? params[i].value : "";
    return NULL;
}

int duo_call_long_poll(const char *method, const char *path, const duo_param *params,
                       size_t nparams)
{
    if (!method || !path)
        return 0;
    if (strcmp(method, "GET") == 0)
        return strcmp(path, "/auth/v2/auth_status") == 0;
    if (strcmp(method, "POST") != 0 || strcmp(path, "/auth/v2/auth") != 0)
        return 0;
    const char *async = param_of(params, nparams, "async");
    const char *factor = param_of(params, nparams, "factor");
    if (async && strcmp(async, "1") == 0)
        return 0;
    return !factor || (strcmp(factor, "passcode") != 0 && strcmp(factor, "sms") != 0);
}

void duo_request_free(duo_request *r)
{
    if (!r)
        return;
    free(r->method);
    free(r->url);
    free(r->body);
    for (size_t i = 0; i < r->nheaders; i++)
        free(r->headers[i]);
    free(r);
}

/* The host as signed: lower-cased by the canonicaliser, without ":port" ("[v6]:p" too). */
static int sign_host(const char *host, char *out, size_t outlen)
{
    size_t n = strlen(host);
    if (host[0] == '[') {
        const char *end = strchr(host, ']');
        if (end)
            n = (size_t)(end - host) + 1;
    } else {
        const char *colon = strchr(host, ':');
        if (colon && !strchr(colon + 1, ':'))
            n = (size_t)(colon - host);
    }
    if (n == 0 || n >= outlen)
        return ERR_INVAL;
    memcpy(out, host, n);
    out[n] = '\0';
    return 0;
}

static int has_body(const char *method)
{
    return strcmp(method, "POST") == 0 || strcmp(method, "PUT") == 0 ||
           strcmp(method, "PATCH") == 0;
}

/* "a=b&c=d" with the strict encoding: valid both as a query and as a form body. */
static int wire_params(const duo_param *p, size_t n, char **out, err_t *e)
{
    return duo_canon_params(p, n, out, e);
}

static int add_header(duo_request *r, err_t *e, const char *name, const char *value)
{
    size_t len = strlen(name) + 2 + strlen(value) + 1;
    char *h = malloc(len);
    if (!h || r->nheaders >= sizeof r->headers / sizeof r->headers[0]) {
        free(h);
        return err_set(e, ERR_NOMEM, "out of memory building a Duo request");
    }
    snprintf(h, len, "%s: %s", name, value);
    r->headers[r->nheaders++] = h;
    return 0;
}

static int set_url(duo_request *r, const char *host, const char *path, const char *query, err_t *e)
{
    size_t len = 8 + strlen(host) + strlen(path) + 1 + (query ? strlen(query) : 0) + 1;
    if (!(r->url = malloc(len)))
        return err_set(e, ERR_NOMEM, "out of memory building a Duo request");
    snprintf(r->url, len, "https://%s%s%s%s", host, path, query && *query ? "?" : "",
             query && *query ? query : "");
    return 0;
}

/* Chooses where params travel, builds body/query, and fills in.params/body. */
static int place_params(duo_request *r, const duo_client_opts *o, const duo_param *params, size_t n,
                        char **query, duo_sign_input *in, err_t *e)
{
    int rc = 0;
    if (!has_body(r->method)) {
        rc = wire_params(params, n, query, e);
    } else if (o->sig_version == 5) {
        rc = duo_json_body(params, n, &r->body, &r->body_len, e);
        in->params = NULL, in->nparams = 0;
        in->body = r->body, in->body_len = r->body_len;
    } else {
        rc = wire_params(params, n, &r->body, e);
        if (rc == 0)
            r->body_len = strlen(r->body);
    }
    return rc;
}

static int sign_into(duo_request *r, const duo_client_opts *o, duo_sign_input *in, err_t *e)
{
    char hex[DUO_HEX_LEN];
    char *auth = NULL;
    int rc = duo_sign(in, o->skey, hex, e);
    if (rc == 0)
        rc = duo_auth_header(o->ikey, hex, &auth, e);
    if (rc == 0)
        rc = add_header(r, e, "Authorization", auth);
    free(auth);
    if (rc == 0)
        rc = add_header(r, e, o->sig_version == 5 ? "X-Duo-Date" : "Date", in->date);
    if (rc == 0 && r->body)
        rc = add_header(r, e, "Content-Type",
                        o->sig_version == 5 ? "application/json"
                                            : "application/x-www-form-urlencoded");
    return rc;
}

static int check_build_args(const duo_client_opts *o, const char *method, const char *path,
                            err_t *e)
{
    if (!o || !o->host || !*o->host || !o->ikey || !*o->ikey || !o->skey || !*o->skey)
        return err_set(e, ERR_INVAL, "Duo host, integration key and secret key are required");
    if (o->sig_version != 2 && o->sig_version != 5)
        return err_set(e, ERR_INVAL, "Duo signature version must be 2 or 5, not %d",
                       o->sig_version);
    if (!method || !*method || strlen(method) > 15 || !path || path[0] != '/')
        return err_set(e, ERR_INVAL, "Duo call needs a method and a path starting with '/'");
    return 0;
}

int duo_request_build(const duo_client_opts *o, const char *method, const char *path,
                      const duo_param *params, size_t nparams, time_t now, duo_request **out,
                      err_t *e)
{
    *out = NULL;
    int rc = check_build_args(o, method, path, e);
    if (rc < 0)
        return rc;
    char host[256], date[DUO_DATE_LEN];
    if (sign_host(o->host, host, sizeof host) < 0)
        return err_set(e, ERR_INVAL, "Duo host '%s' is malformed", o->host);
    if (duo_format_date(now, date) < 0)
        return err_set(e, ERR_INVAL, "cannot format the request date");
    duo_request *r = calloc(1, sizeof *r);
    if (!r || !(r->method = strdup(method))) {
        free(r);
        return err_set(e, ERR_NOMEM, "out of memory building a Duo request");
    }
    for (char *m = r->method; *m; m++)
        if (*m >= 'a' && *m <= 'z')
            *m = (char)(*m - 'a' + 'A');
    duo_param xdate = {"X-Duo-Date", date};
    duo_sign_input in = {.sig_version = o->sig_version,
                         .digest = o->digest,
                         .method = r->method,
                         .host = host,
                         .path = path,
                         .date = date,
                         .params = params,
                         .nparams = nparams,
                         .x_duo = o->sig_version == 5 ? &xdate : NULL,
                         .nx_duo = o->sig_version == 5 ? 1 : 0};
    char *query = NULL;
    rc = place_params(r, o, params, nparams, &query, &in, e);
    if (rc == 0)
        rc = set_url(r, o->host, path, query, e);
    free(query);
    if (rc == 0)
        rc = sign_into(r, o, &in, e);
    if (rc < 0) {
        duo_request_free(r);
        return rc;
    }
    *out = r;
    return 0;
}
