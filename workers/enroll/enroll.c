/* enroll.c - enrollment jobs. begin asks Duo for an activation and records it as a
 * pending enrollment; status asks Duo whether it was scanned and, on success, stores
 * the device once (one device per Duo user per stage) and closes the enrollment. */
#include "enroll.h"

#include <string.h>

#include "clock.h"
#include "log.h"
#include "store_device.h"
#include "store_enroll.h"
#include "store_user.h"

static const char *str(const job *j, const char *key)
{
    return json_string_value(json_object_get(j->body, key));
}

/* Loads the local user a job names; fails the job when it does not exist. */
static int load_user(const worker_env *env, const char *username, store_user *u, job_outcome *out)
{
    err_t e = {0};
    int rc = store_user_by_name(env->db, username, u, &e);
    if (rc == ERR_NOTFOUND)
        job_fail(out, "user_not_found", "no local user named '%.150s'", username);
    else if (rc < 0)
        job_retry(out, "looking up user: %s", e.msg);
    else if (!u->active)
        job_fail(out, "user_inactive", "user '%.150s' is deactivated", username);
    return rc < 0 || !u->active ? -1 : 0;
}

/* A 400 naming the username on enroll means Duo already has this user. */
static int is_existing_duo_user(const duo_error *de)
{
    return de->http_status == 400 && de->code == 40002 &&
           (strstr(de->detail, "exist") || strstr(de->message, "exist") ||
            strstr(de->detail, "username"));
}

static void fail_enroll(job_outcome *out, int rc, const duo_error *de, const char *username)
{
    if (is_existing_duo_user(de)) {
        job_fail(out, "duo_user_exists",
                 "Duo already has a user named '%.150s': import it "
                 "(job import.manual with its Duo user id or username) instead of enrolling "
                 "it again",
                 username);
        stage_duo_code(out, de->code);
    } else
        /* Duo may have created the activation before failing: a rerun would make a second
         * one (or meet duo_user_exists), so an acting call is not retried then. */
        stage_fail_duo(out, rc, de, "enrollment", STAGE_CALL_ACTS);
}

static void begin_record(const worker_env *env, const stage_rec *st, const store_user *u,
                         const duo_enroll_result *r, job_outcome *out)
{
    err_t e = {0};
    store_enrollment en = {0};
    int rc = store_begin(env->db, &e);
    if (rc == 0)
        rc = store_enrollment_add(env->db, st->id, u->id, r->user_id, r->activation_code,
                                  r->expiration, &en, &e);
    if (rc < 0) {
        job_retry(out, "recording enrollment: %s", e.msg);
        return;
    }
    out->fields =
        json_pack("{s:s, s:s, s:s, s:I, s:s}", "enrollment_id", en.uuid, "activation_barcode",
                  r->activation_barcode, "activation_code", r->activation_code, "expires_at",
                  (json_int_t)r->expiration, "stage_name",
                  st->friendly_name && *st->friendly_name ? st->friendly_name : st->name);
    if (r->activation_url)
        json_object_set_new(out->fields, "activation_url", json_string(r->activation_url));
}

void enroll_begin(const worker_env *env, const job *j, job_outcome *out)
{
    const char *username = str(j, "username");
    json_t *vs = json_object_get(j->body, "valid_secs");
    store_user u;
    const stage_rec *st = stages_get(env->app, env, str(j, "stage_uuid"), out);
    if (!st)
        return;
    duo_client *duo = NULL;
    if (load_user(env, username, &u, out) == 0 &&
        (duo = stages_duo(env->app, env, st, STAGE_AUTH_API, out))) {
        duo_enroll_result r = {0};
        duo_error de = {0};
        long long t0 = clock_ms();
        int rc = duo_enroll(duo, username, vs ? (long)json_integer_value(vs) : 0, &r, &de);
        stage_observe(env, "enroll", clock_ms() - t0, rc, &de);
        if (rc < 0)
            fail_enroll(out, rc, &de, username);
        else
            begin_record(env, st, &u, &r, out);
        duo_enroll_result_free(&r);
    }
}

static void status_fields(job_outcome *out, const char *state, const char *device_uuid)
{
    out->fields = json_pack("{s:s}", "enrollment_status", state);
    if (device_uuid && *device_uuid)
        json_object_set_new(out->fields, "device_id", json_string(device_uuid));
}

/* Duo said success: store the device and close the enrollment, in one transaction. */
static void status_success(const worker_env *env, const store_enrollment *en, job_outcome *out)
{
    err_t e = {0};
    int64_t device_id = 0;
    char device_uuid[40] = "";
    int rc = store_begin(env->db, &e);
    if (rc == 0)
        rc = store_device_add(env->db, en->user_id, en->stage_id, en->duo_user_id, "user_id",
                              "Duo Authenticator", &device_id, device_uuid, &e);
    if (rc == ERR_CONFLICT) {
        store_rollback(env->db);
        job_fail(out, "device_exists",
                 "a Duo device for Duo user %s already exists on this "
                 "stage",
                 en->duo_user_id);
        return;
    }
    if (rc == 0)
        rc = store_enrollment_close(env->db, en->id, "success", device_id, &e);
    if (rc < 0) {
        job_retry(out, "storing device: %s", e.msg);
        return;
    }
    LOG(LOG_INFO, "enrollment succeeded", "enrollment_id", en->uuid, "device_id", device_uuid);
    status_fields(out, "success", device_uuid);
}

static void status_check(const worker_env *env, const stage_rec *st, const store_enrollment *en,
                         job_outcome *out)
{
    duo_client *duo = stages_duo(env->app, env, st, STAGE_AUTH_API, out);
    if (!duo)
        return;
    duo_enroll_state state = 0;
    duo_error de = {0};
    long long t0 = clock_ms();
    int rc = duo_enroll_status(duo, en->duo_user_id, en->activation_code, &state, &de);
    stage_observe(env, "enroll_status", clock_ms() - t0, rc, &de);
    err_t e = {0};
    if (rc < 0) {
        stage_fail_duo(out, rc, &de, "enroll_status", 0);
    } else if (state == DUO_ENROLL_SUCCESS) {
        status_success(env, en, out);
    } else if (state == DUO_ENROLL_INVALID) {
        if (store_begin(env->db, &e) < 0 ||
            store_enrollment_close(env->db, en->id, "invalid", 0, &e) < 0)
            job_retry(out, "closing enrollment: %s", e.msg);
        else
            status_fields(out, "invalid", NULL);
    } else {
        status_fields(out, "waiting", NULL);
    }
}

void enroll_status(const worker_env *env, const job *j, job_outcome *out)
{
    const stage_rec *st = stages_get(env->app, env, str(j, "stage_uuid"), out);
    if (!st)
        return;
    store_enrollment en = {0};
    err_t e = {0};
    int rc = store_enrollment_get(env->db, st->id, str(j, "enrollment_id"), &en, &e);
    if (rc == ERR_NOTFOUND || rc == ERR_INVAL)
        job_fail(out, "enrollment_not_found", "%s", e.msg);
    else if (rc < 0)
        job_retry(out, "loading enrollment: %s", e.msg);
    else if (strcmp(en.state, "pending") != 0)
        status_fields(out, en.state, en.device_uuid); /* already decided: answer the same */
    else
        status_check(env, st, &en, out);
}
