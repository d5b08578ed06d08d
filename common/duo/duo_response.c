/* duo_response.c - turns an HTTP answer into a Duo response or a classified duo_error.
 *
 * Invariant: success means HTTP 200 AND a JSON object with stat "OK" AND a "response"
 * member; anything else (including a huge or truncated body) is an error, never a crash. */
#include "duo.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

int duo_fail_set(duo_error *err, int rc, duo_fail fail, duo_error_class cls, const char *fmt, ...)
{
    if (!err)
        return rc;
    err->fail = fail;
    err->cls = cls;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof err->message, fmt, ap);
    va_end(ap);
    return rc;
}

const char *duo_error_class_name(duo_error_class cls)
{
    switch (cls) {
    case DUO_CLASS_NONE:
        return "none";
    case DUO_CLASS_TRANSIENT:
        return "transient";
    case DUO_CLASS_PERMANENT:
        return "permanent";
    case DUO_CLASS_AUTH_CONFIG:
        return "auth_config";
    case DUO_CLASS_LICENSE:
        return "license";
    case DUO_CLASS_TLS:
        return "tls";
    }
    return "unknown";
}

static const char *http_code_name(int status, int code)
{
    switch (code) {
    case 40101:
        return "duo_missing_credentials";
    case 40102:
        return "duo_bad_integration_key";
    case 40103:
        return "duo_bad_signature";
    case 40104:
    case 40105:
        return "duo_timestamp";
    default:
        break;
    }
    if (status == 429)
        return "duo_rate_limited";
    if (status >= 500)
        return "duo_unavailable";
    if (status == 401)
        return "duo_missing_credentials";
    if (status == 403)
        return "duo_forbidden";
    if (status == 404)
        return "duo_not_found";
    return "duo_invalid_request";
}

const char *duo_error_code(const duo_error *err)
{
    if (!err)
        return "duo_local_error";
    switch (err->fail) {
    case DUO_FAIL_HTTP:
        return http_code_name(err->http_status, err->code);
    case DUO_FAIL_BAD_RESPONSE:
        return "duo_bad_response";
    case DUO_FAIL_NETWORK:
        return "duo_network";
    case DUO_FAIL_TIMEOUT:
        return "duo_timeout";
    case DUO_FAIL_TLS:
        return "duo_tls";
    case DUO_FAIL_CANCELLED:
        return "duo_cancelled";
    case DUO_FAIL_LOCAL:
        return "duo_local_error";
    case DUO_FAIL_NOT_FOUND:
        return "duo_user_not_found";
    case DUO_FAIL_CIRCUIT_OPEN:
        return "duo_circuit_open";
    case DUO_FAIL_STAGE_BUSY:
        return "duo_stage_busy";
    case DUO_FAIL_NONE:
        break;
    }
    return "duo_ok";
}

static duo_error_class class_of(long status)
{
    if (status == 429 || status >= 500)
        return DUO_CLASS_TRANSIENT;
    if (status == 401)
        return DUO_CLASS_AUTH_CONFIG;
    if (status == 403)
        return DUO_CLASS_LICENSE;
    return DUO_CLASS_PERMANENT;
}

static int bad_response(duo_error *err, long status, const char *why)
{
    if (err)
        err->http_status = (int)status;
    return duo_fail_set(err, ERR_DUO, DUO_FAIL_BAD_RESPONSE, DUO_CLASS_PERMANENT,
                        "malformed Duo response: %s", why);
}

/* A non-200: take code/message/detail from a FAIL envelope when there is one. */
static int http_error(duo_error *err, long status, json_t *root)
{
    if (!err)
        return ERR_DUO;
    err->http_status = (int)status;
    json_t *code = json_object_get(root, "code");
    const char *msg = json_string_value(json_object_get(root, "message"));
    const char *detail = json_string_value(json_object_get(root, "message_detail"));
    err->code = json_is_integer(code) ? (int)json_integer_value(code) : 0;
    if (msg && *msg) /* an empty message says nothing: use the fallback */
        duo_fail_set(err, ERR_DUO, DUO_FAIL_HTTP, class_of(status), "%s", msg);
    else
        duo_fail_set(err, ERR_DUO, DUO_FAIL_HTTP, class_of(status), "Duo answered HTTP %ld%s",
                     status, root ? "" : " with a body that is not a Duo error envelope");
    snprintf(err->detail, sizeof err->detail, "%s", detail ? detail : "");
    return ERR_DUO;
}

int duo_response_parse(long http_status, const char *body, size_t len, json_t **response,
                       json_t **metadata, duo_error *err)
{
    if (response)
        *response = NULL;
    if (metadata)
        *metadata = NULL;
    if (len > DUO_MAX_RESPONSE_BYTES)
        return bad_response(err, http_status, "body larger than the 4 MiB cap");
    json_t *root = body ? json_loadb(body, len, JSON_REJECT_DUPLICATES, NULL) : NULL;
    if (root && !json_is_object(root)) {
        json_decref(root);
        root = NULL;
    }
    if (http_status != 200) {
        int rc = http_error(err, http_status, root);
        json_decref(root);
        return rc;
    }
    if (!root)
        return bad_response(err, http_status, "body is not a JSON object");
    const char *stat = json_string_value(json_object_get(root, "stat"));
    json_t *resp = json_object_get(root, "response");
    int rc = 0;
    if (!stat)
        rc = bad_response(err, http_status, "no \"stat\" member");
    else if (strcmp(stat, "OK") != 0)
        rc = http_error(err, http_status, root);
    else if (!resp)
        rc = bad_response(err, http_status, "stat OK without a \"response\" member");
    if (rc == 0 && response)
        *response = json_incref(resp);
    if (rc == 0 && metadata)
        *metadata = json_incref(json_object_get(root, "metadata"));
    json_decref(root);
    return rc;
}
