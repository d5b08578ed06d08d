/* auth_duo.c - what an auth job sends to Duo, and what Duo's answer means for it.
 *
 * Invariant: result "allow" is produced only from a Duo answer whose result is exactly
 * "allow" (duo_result_of); "waiting", unknown strings and every failure are never
 * success. A bad passcode is a deny, not an error. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth_int.h"
#include "clock.h"
#include "log.h"

/* curl may fire a timeout a few ms before the deadline it was given. */
#define DEADLINE_SLACK_MS 100

static const char *str(const job *j, const char *key)
{
    return json_string_value(json_object_get(j->body, key));
}

static const char *factor_of(const job *j)
{
    const char *f = str(j, "factor");
    return f ? f : "auto";
}

int auth_factor_guarded(const job *j)
{
    return strcmp(factor_of(j), "passcode") != 0;
}

int auth_factor_async(const job *j)
{
    const char *f = factor_of(j);
    return strcmp(f, "passcode") != 0 && strcmp(f, "sms") != 0;
}

int auth_device_named(const job *j)
{
    const char *d = str(j, "device");
    return d && strcmp(d, "auto") != 0 && strcmp(factor_of(j), "passcode") != 0;
}

/* The capability a factor needs of the device ("auto" needs any of Duo's). */
static const char *capability_of(const char *factor)
{
    return strcmp(factor, "push") == 0    ? "push"
           : strcmp(factor, "phone") == 0 ? "phone"
           : strcmp(factor, "sms") == 0   ? "sms"
                                          : "auto";
}

static int has_string(const json_t *arr, const char *s)
{
    for (size_t i = 0; i < json_array_size(arr); i++) {
        const char *v = json_string_value(json_array_get(arr, i));
        if (v && strcmp(v, s) == 0)
            return 1;
    }
    return 0;
}

int auth_device_check(const job *j, const json_t *preauth, job_outcome *o)
{
    const json_t *devices = json_object_get(preauth, "devices");
    const char *want = str(j, "device"), *cap = capability_of(factor_of(j));
    if (!json_is_array(devices))
        return 0;
    size_t i;
    json_t *d;
    json_array_foreach(devices, i, d)
    {
        if (json_is_string(json_object_get(d, "device")) &&
            strcmp(json_string_value(json_object_get(d, "device")), want) == 0) {
            if (has_string(json_object_get(d, "capabilities"), cap))
                return 0;
            job_fail(o, "invalid_parameter",
                     "Duo device %.40s cannot do %s (its capabilities do not include it)", want,
                     cap);
            return -1;
        }
    }
    job_fail(o, "invalid_parameter", "%.40s is not one of this user's Duo devices", want);
    return -1;
}

/* The job's pushinfo, URL-encoded into *pushinfo (NULL when none); -1 with *o set when
 * it cannot be encoded or Duo would refuse its size. */
static int job_pushinfo(const job *j, char **pushinfo, job_outcome *o)
{
    *pushinfo = NULL;
    const json_t *pi = json_object_get(j->body, "pushinfo");
    if (!pi || json_object_size(pi) == 0)
        return 0;
    if (duo_pushinfo_encode(pi, pushinfo, NULL) < 0) {
        job_retry(o, "out of memory encoding pushinfo");
        return -1;
    }
    size_t len = strlen(*pushinfo); /* the URL-encoded pairs, as Duo measures them */
    if (len >= AUTH_PUSHINFO_MAX) {
        job_fail(o, "invalid_parameter",
                 "pushinfo is %zu bytes URL-encoded; Duo accepts under %d: send less", len,
                 AUTH_PUSHINFO_MAX);
        free(*pushinfo);
        *pushinfo = NULL;
        return -1;
    }
    return 0;
}

int auth_params(const job *j, const auth_device *dev, duo_param *p, char **pushinfo, job_outcome *o)
{
    if (job_pushinfo(j, pushinfo, o) < 0)
        return -1;
    duo_auth_req req = {.factor = factor_of(j),
                        .device = str(j, "device"),
                        .passcode = str(j, "passcode"),
                        .ipaddr = str(j, "ipaddr"),
                        .type = str(j, "type"),
                        .display_username = str(j, "display_username"),
                        .pushinfo = *pushinfo,
                        .async = auth_factor_async(j)};
    if (dev->by_username)
        req.username = dev->duo_user_id;
    else
        req.user_id = dev->duo_user_id;
    int n = duo_auth_params(&req, p);
    if (n < 0) {
        job_fail(o, "invalid_parameter", "the device names no Duo user");
        free(*pushinfo);
        *pushinfo = NULL;
    }
    return n < 0 ? -1 : n;
}

/* Copies at most max bytes of s into a JSON string, cut on a UTF-8 boundary. */
static json_t *clipped(const char *s, size_t max)
{
    size_t n = strlen(s);
    if (n > max) {
        n = max;
        while (n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80)
            n--;
    }
    return json_stringn(s, n);
}

static json_t *fields(const auth_call *c, const char *result, const json_t *resp)
{
    json_t *f = json_pack("{s:s, s:s}", "result", result, "device_id", c->dev.uuid);
    const char *st = json_string_value(json_object_get(resp, "status"));
    const char *msg = json_string_value(json_object_get(resp, "status_msg"));
    if (st)
        json_object_set_new(f, "duo_status", clipped(st, 64));
    if (msg)
        json_object_set_new(f, "duo_status_msg", clipped(msg, 1000));
    return f;
}

void auth_outcome(const auth_call *c, int rc, const json_t *resp, const duo_error *de,
                  job_outcome *out, const char **decided)
{
    /* Nobody answered by the job's deadline: an answer, not a system error. A timeout
     * before it (connect, or one attempt's DUO_TIMEOUT_MS) is Duo's trouble. */
    if (rc == ERR_TIMEOUT && de->fail == DUO_FAIL_TIMEOUT &&
        clock_ms() >= c->deadline_ms - DEADLINE_SLACK_MS) {
        out->fields = fields(c, "timeout", NULL);
        *decided = "timeout";
        return;
    }
    if (rc < 0) {
        /* A person waits: no later retry; and the call may have reached the phone. */
        stage_fail_duo(out, rc, de, "auth", STAGE_CALL_ACTS | STAGE_CALL_USER_WAITS);
        *decided = "error";
        return;
    }
    const char *raw = json_string_value(json_object_get(resp, "result"));
    const char *status = json_string_value(json_object_get(resp, "status"));
    const char *st = status ? status : "";
    duo_result r = duo_result_of(raw);
    if (r == DUO_RESULT_ALLOW && (strcmp(st, "allow") == 0 || strcmp(st, "bypass") == 0)) {
        out->fields = fields(c, "allow", resp);
        /* Duo let the user in without a second factor (user in bypass status). */
        json_object_set_new(out->fields, "bypass", json_boolean(strcmp(st, "bypass") == 0));
        *decided = "allow";
    } else if (r == DUO_RESULT_DENY && strcmp(st, "locked_out") == 0) {
        job_fail(out, "duo_user_locked_out",
                 "Duo has locked this user out after repeated failed attempts: an "
                 "administrator must unlock the user in Duo");
        *decided = "other";
    } else if (r == DUO_RESULT_DENY && status && strcmp(status, "timeout") == 0) {
        out->fields = fields(c, "timeout", resp); /* Duo gave up waiting for the user */
        *decided = "timeout";
    } else {
        if (r != DUO_RESULT_DENY)
            LOG(LOG_WARN, "Duo answered an unexpected auth result or status; treated as deny",
                "result", raw ? raw : "(none)", "status", st, "device_id", c->dev.uuid);
        out->fields = fields(c, "deny", resp);
        /* Only a refusal by the user starts the cool-down (not "sent" for sms). */
        *decided = r == DUO_RESULT_DENY && status &&
                           (strcmp(status, "deny") == 0 || strcmp(status, "fraud") == 0)
                       ? "deny"
                       : "other";
    }
}
