/* duo_calls.c - the typed Auth API v2 and Admin API v1 calls the workers make, on top of
 * duo_call() (anything else goes through duo_call itself, e.g. duoctl api).
 *
 * Invariant: a call succeeds only when every field it promises is present with the
 * right type; a missing field is a bad response (ERR_DUO, DUO_FAIL_BAD_RESPONSE), and
 * results are never half-filled on failure (each *_free() is safe either way). */
#include "duo.h"
#include "duo_users_scan.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int missing(duo_error *err, const char *call, const char *field)
{
    if (err)
        err->http_status = 200;
    return duo_fail_set(err, ERR_DUO, DUO_FAIL_BAD_RESPONSE, DUO_CLASS_PERMANENT,
                        "malformed Duo response: %s lacks \"%s\"", call, field);
}

static int bad_arg(duo_error *err, const char *what)
{
    if (err)
        memset(err, 0, sizeof *err);
    return duo_fail_set(err, ERR_INVAL, DUO_FAIL_LOCAL, DUO_CLASS_PERMANENT, "%s", what);
}

/* strdup of o[k] when it is a string; *out NULL otherwise. Returns -1 only on OOM. */
static int dup_field(json_t *o, const char *k, char **out)
{
    const char *s = json_string_value(json_object_get(o, k));
    *out = NULL;
    if (!s)
        return 0;
    return (*out = strdup(s)) ? 0 : -1;
}

static int oom(duo_error *err)
{
    return duo_fail_set(err, ERR_NOMEM, DUO_FAIL_LOCAL, DUO_CLASS_TRANSIENT, "out of memory");
}

void duo_enroll_result_free(duo_enroll_result *r)
{
    if (!r)
        return;
    free(r->activation_barcode);
    free(r->activation_code);
    free(r->activation_url);
    free(r->user_id);
    free(r->username);
    memset(r, 0, sizeof *r);
}

static int fill_enroll(json_t *resp, duo_enroll_result *out, duo_error *err)
{
    static const char *fields[] = {"activation_barcode", "activation_code", "activation_url",
                                   "user_id", "username"};
    char **dst[] = {&out->activation_barcode, &out->activation_code, &out->activation_url,
                    &out->user_id, &out->username};
    for (size_t i = 0; i < 5; i++) {
        if (!json_is_string(json_object_get(resp, fields[i])))
            return missing(err, "enroll", fields[i]);
        if (dup_field(resp, fields[i], dst[i]) < 0)
            return oom(err);
    }
    json_t *exp = json_object_get(resp, "expiration");
    if (!json_is_integer(exp))
        return missing(err, "enroll", "expiration");
    out->expiration = json_integer_value(exp);
    return 0;
}

void duo_auth_result_free(duo_auth_result *r)
{
    if (!r)
        return;
    free(r->result_raw);
    free(r->status);
    free(r->status_msg);
    free(r->enroll_portal_url);
    json_decref(r->response);
    memset(r, 0, sizeof *r);
}

/* Takes ownership of resp; requires "result". */
static int fill_auth(json_t *resp, const char *call, duo_auth_result *out, duo_error *err)
{
    out->response = resp;
    if (!json_is_object(resp))
        return missing(err, call, "response object");
    if (!json_is_string(json_object_get(resp, "result")))
        return missing(err, call, "result");
    if (dup_field(resp, "result", &out->result_raw) < 0 ||
        dup_field(resp, "status", &out->status) < 0 ||
        dup_field(resp, "status_msg", &out->status_msg) < 0 ||
        dup_field(resp, "enroll_portal_url", &out->enroll_portal_url) < 0)
        return oom(err);
    out->result = duo_result_of(out->result_raw);
    return 0;
}

void duo_users_page_free(duo_users_page *p)
{
    if (!p)
        return;
    json_decref(p->users);
    memset(p, 0, sizeof *p);
}

/* -1 for absent/null, else the integer (a non-integer is malformed: -2). */
static long long meta_int(json_t *meta, const char *k)
{
    json_t *v = json_object_get(meta, k);
    if (!v || json_is_null(v))
        return -1;
    return json_is_integer(v) ? json_integer_value(v) : -2;
}

/* ---- specs and answers ---------------------------------------------------------- */

static int spec_init(duo_call_spec *c, const char *method, const char *path)
{
    memset(c, 0, sizeof *c);
    c->method = method;
    snprintf(c->path, sizeof c->path, "%s", path);
    return 0;
}

int duo_enroll_spec(duo_call_spec *c, const char *username, long valid_secs)
{
    spec_init(c, "POST", "/auth/v2/enroll");
    if (username)
        c->p[c->n++] = (duo_param){"username", username};
    if (valid_secs > 0) {
        snprintf(c->buf, sizeof c->buf, "%ld", valid_secs);
        c->p[c->n++] = (duo_param){"valid_secs", c->buf};
    }
    return 0;
}

int duo_enroll_answer(int rc, json_t *resp, duo_enroll_result *out, duo_error *err)
{
    memset(out, 0, sizeof *out);
    if (rc == 0)
        rc = fill_enroll(resp, out, err);
    if (rc < 0)
        duo_enroll_result_free(out);
    return rc;
}

int duo_enroll_status_spec(duo_call_spec *c, const char *user_id, const char *activation_code,
                           duo_error *err)
{
    if (!user_id || !activation_code)
        return bad_arg(err, "enroll_status needs user_id and activation_code");
    spec_init(c, "POST", "/auth/v2/enroll_status");
    c->p[c->n++] = (duo_param){"user_id", user_id};
    c->p[c->n++] = (duo_param){"activation_code", activation_code};
    return 0;
}

int duo_enroll_status_answer(int rc, json_t *resp, duo_enroll_state *state, duo_error *err)
{
    if (rc < 0)
        return rc;
    const char *s = json_string_value(resp);
    if (s && strcmp(s, "waiting") == 0)
        *state = DUO_ENROLL_WAITING;
    else if (s && strcmp(s, "success") == 0)
        *state = DUO_ENROLL_SUCCESS;
    else if (s && strcmp(s, "invalid") == 0)
        *state = DUO_ENROLL_INVALID;
    else
        rc = duo_fail_set(err, ERR_DUO, DUO_FAIL_BAD_RESPONSE, DUO_CLASS_PERMANENT,
                          "malformed Duo response: enroll_status answered %s%s%s", s ? "'" : "",
                          s ? s : "a non-string", s ? "'" : "");
    return rc;
}

int duo_preauth_spec(duo_call_spec *c, const char *user_id, const char *username,
                     const char *ipaddr, duo_error *err)
{
    spec_init(c, "POST", "/auth/v2/preauth");
    int n = duo_preauth_params(user_id, username, ipaddr, c->p);
    if (n < 0)
        return bad_arg(err, "preauth needs exactly one of user_id and username");
    c->n = (size_t)n;
    return 0;
}

int duo_preauth_answer(int rc, json_t *resp, duo_auth_result *out, duo_error *err)
{
    memset(out, 0, sizeof *out);
    if (rc == 0)
        rc = fill_auth(json_incref(resp), "preauth", out, err);
    if (rc < 0)
        duo_auth_result_free(out);
    return rc;
}

int duo_admin_users_page_spec(duo_call_spec *c, int limit, long long offset, duo_error *err)
{
    if (limit < 1 || limit > 300 || offset < 0)
        return bad_arg(err, "users page needs 1 <= limit <= 300 and offset >= 0");
    spec_init(c, "GET", "/admin/v1/users");
    snprintf(c->buf, sizeof c->buf, "%d", limit);
    snprintf(c->buf2, sizeof c->buf2, "%lld", offset);
    c->p[c->n++] = (duo_param){"limit", c->buf};
    c->p[c->n++] = (duo_param){"offset", c->buf2};
    /* ~235 KB a page: read by the streaming scanner, which keeps what an import needs */
    c->parse = duo_users_scan;
    return 0;
}

int duo_admin_users_page_answer(int rc, json_t *resp, json_t *meta, duo_users_page *out,
                                duo_error *err)
{
    memset(out, 0, sizeof *out);
    out->total_objects = out->next_offset = -1;
    if (rc < 0)
        return rc;
    out->users = json_incref(resp);
    out->total_objects = meta_int(meta, "total_objects");
    out->next_offset = meta_int(meta, "next_offset");
    if (!json_is_array(resp))
        rc = missing(err, "users page", "response array");
    else if (out->total_objects < -1 || out->next_offset < -1)
        rc = missing(err, "users page", "integer metadata");
    if (rc < 0)
        duo_users_page_free(out);
    return rc;
}

int duo_admin_user_by_username_spec(duo_call_spec *c, const char *username, duo_error *err)
{
    if (!username)
        return bad_arg(err, "user lookup needs a username");
    spec_init(c, "GET", "/admin/v1/users");
    c->p[c->n++] = (duo_param){"username", username};
    return 0;
}

int duo_admin_user_by_username_answer(int rc, json_t *resp, const char *username, json_t **user,
                                      duo_error *err)
{
    *user = NULL;
    if (rc < 0)
        return rc;
    if (!json_is_array(resp))
        rc = missing(err, "user lookup", "response array");
    else if (json_array_size(resp) == 0)
        rc = duo_fail_set(err, ERR_NOTFOUND, DUO_FAIL_NOT_FOUND, DUO_CLASS_PERMANENT,
                          "no Duo user named '%s'", username ? username : "");
    else if (!json_is_object(json_array_get(resp, 0)))
        rc = missing(err, "user lookup", "user object");
    else
        *user = json_incref(json_array_get(resp, 0));
    return rc;
}

int duo_admin_user_by_id_spec(duo_call_spec *c, const char *user_id, duo_error *err)
{
    size_t n = user_id ? strlen(user_id) : 0;
    if (n == 0 || n > 64 || strspn(user_id, "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789") != n)
        return bad_arg(err, "user lookup needs a Duo user id (letters and digits)");
    spec_init(c, "GET", "/admin/v1/users/");
    snprintf(c->path, sizeof c->path, "/admin/v1/users/%s", user_id);
    return 0;
}

int duo_admin_user_by_id_answer(int rc, json_t *resp, json_t **user, duo_error *err)
{
    *user = NULL;
    if (rc < 0 && err && err->http_status == 404) {
        /* Keep Duo's code and message; the caller only needs to know it is not there. */
        err->fail = DUO_FAIL_NOT_FOUND;
        return ERR_NOTFOUND;
    }
    if (rc < 0)
        return rc;
    if (!json_is_object(resp))
        return missing(err, "user lookup", "user object");
    *user = json_incref(resp);
    return 0;
}

/* ---- the blocking typed calls: spec, duo_call, answer --------------------------------- */

static int run_spec(duo_client *dc, const duo_call_spec *c, json_t **resp, json_t **meta,
                    duo_error *err)
{
    return duo_call_parsed(dc, c->method, c->path, c->p, c->n, c->parse, resp, meta, err);
}

int duo_enroll(duo_client *dc, const char *username, long valid_secs, duo_enroll_result *out,
               duo_error *err)
{
    duo_call_spec c;
    json_t *resp = NULL;
    duo_enroll_spec(&c, username, valid_secs);
    int rc = run_spec(dc, &c, &resp, NULL, err);
    rc = duo_enroll_answer(rc, resp, out, err);
    json_decref(resp);
    return rc;
}

int duo_enroll_status(duo_client *dc, const char *user_id, const char *activation_code,
                      duo_enroll_state *state, duo_error *err)
{
    duo_call_spec c;
    json_t *resp = NULL;
    int rc = duo_enroll_status_spec(&c, user_id, activation_code, err);
    if (rc == 0) {
        rc = run_spec(dc, &c, &resp, NULL, err);
        rc = duo_enroll_status_answer(rc, resp, state, err);
    }
    json_decref(resp);
    return rc;
}

duo_result duo_result_of(const char *s)
{
    if (!s)
        return DUO_RESULT_OTHER;
    if (strcmp(s, "allow") == 0)
        return DUO_RESULT_ALLOW;
    if (strcmp(s, "deny") == 0)
        return DUO_RESULT_DENY;
    if (strcmp(s, "waiting") == 0)
        return DUO_RESULT_WAITING;
    return DUO_RESULT_OTHER;
}

int duo_preauth(duo_client *dc, const char *user_id, const char *username, const char *ipaddr,
                duo_auth_result *out, duo_error *err)
{
    memset(out, 0, sizeof *out);
    duo_call_spec c;
    json_t *resp = NULL;
    int rc = duo_preauth_spec(&c, user_id, username, ipaddr, err);
    if (rc == 0) {
        rc = run_spec(dc, &c, &resp, NULL, err);
        rc = duo_preauth_answer(rc, resp, out, err);
    }
    json_decref(resp);
    return rc;
}

int duo_admin_users_page(duo_client *dc, int limit, long long offset, duo_users_page *out,
                         duo_error *err)
{
    memset(out, 0, sizeof *out);
    out->total_objects = out->next_offset = -1;
    duo_call_spec c;
    json_t *resp = NULL, *meta = NULL;
    int rc = duo_admin_users_page_spec(&c, limit, offset, err);
    if (rc == 0) {
        rc = run_spec(dc, &c, &resp, &meta, err);
        rc = duo_admin_users_page_answer(rc, resp, meta, out, err);
    }
    json_decref(resp);
    json_decref(meta);
    return rc;
}

int duo_admin_user_by_username(duo_client *dc, const char *username, json_t **user, duo_error *err)
{
    *user = NULL;
    duo_call_spec c;
    json_t *resp = NULL;
    int rc = duo_admin_user_by_username_spec(&c, username, err);
    if (rc == 0) {
        rc = run_spec(dc, &c, &resp, NULL, err);
        rc = duo_admin_user_by_username_answer(rc, resp, username, user, err);
    }
    json_decref(resp);
    return rc;
}

int duo_admin_user_by_id(duo_client *dc, const char *user_id, json_t **user, duo_error *err)
{
    *user = NULL;
    duo_call_spec c;
    json_t *resp = NULL;
    int rc = duo_admin_user_by_id_spec(&c, user_id, err);
    if (rc == 0) {
        rc = run_spec(dc, &c, &resp, NULL, err);
        rc = duo_admin_user_by_id_answer(rc, resp, user, err);
    }
    json_decref(resp);
    return rc;
}
