/* manual.c - the import.manual job: one Duo user becomes a confirmed device of a local
 * user. Operators paste either a Duo user id or a Duo username. Either is verified with
 * Duo before anything is stored: through the Admin API when the stage has it (a username
 * is resolved to its user id), or else with preauth, and a username preauth verified is
 * stored as a username (duo_user_kind 'username'), so a later push never sends a
 * username where Duo expects a user id.
 *
 * Invariant: a device is stored only for a user Duo proved it has. preauth's `allow` for
 * a username proves nothing (Duo allows unknown users under an "allow" new-user policy). */
#include <ctype.h>
#include <string.h>
#include <time.h>

#include "clock.h"
#include "import.h"
#include "log.h"
#include "store_device.h"
#include "store_user.h"

/* What the job's duo_user_id turned into. */
typedef struct resolved {
    char duo_user_id[201]; /* what is stored */
    const char *kind;      /* duo_user_kind: "user_id" or "username" */
    const char *from;      /* resolved_from: "user_id" or "username" */
} resolved;

/* Duo user ids are 20 characters, "DU" then upper-case letters and digits. */
static int looks_like_user_id(const char *s)
{
    if (strlen(s) != 20 || strncmp(s, "DU", 2) != 0)
        return 0;
    for (const char *p = s; *p; p++)
        if (!isdigit((unsigned char)*p) && !isupper((unsigned char)*p))
            return 0;
    return 1;
}

static void not_found(job_outcome *out, const char *name, int duo_code)
{
    job_fail(out, "duo_user_not_found", "Duo has no user with id or username '%.150s'", name);
    stage_duo_code(out, duo_code);
}

/* Admin API: the user by id (GET /admin/v1/users/<id>) or by username (the user list
 * filtered by it); what is stored is Duo's user id. 0, 1 (Admin API refused: try
 * preauth), or -1 (*out set). */
static int by_admin(const worker_env *env, duo_client *duo, const char *given, int is_id,
                    resolved *r, job_outcome *out)
{
    json_t *user = NULL;
    duo_error de = {0};
    long long t0 = clock_ms();
    int rc = is_id ? duo_admin_user_by_id(duo, given, &user, &de)
                   : duo_admin_user_by_username(duo, given, &user, &de);
    stage_observe(env, is_id ? "admin_user_by_id" : "admin_user_by_username", clock_ms() - t0, rc,
                  &de);
    const char *id = json_string_value(json_object_get(user, "user_id"));
    if (rc == 0 && id && *id && strlen(id) < sizeof r->duo_user_id) {
        memcpy(r->duo_user_id, id, strlen(id) + 1);
        r->kind = "user_id";
    } else if (rc == 0) {
        job_fail(out, "duo_bad_response", "Duo's user object for '%.150s' has no usable user_id",
                 given);
    } else if (rc == ERR_NOTFOUND) {
        not_found(out, given, de.code);
    } else if (de.cls == DUO_CLASS_LICENSE) {
        json_decref(user);
        return 1;
    } else {
        stage_fail_duo(out, rc, &de, "the user lookup", STAGE_CALL_ADMIN);
    }
    json_decref(user);
    return out->code || out->retry ? -1 : 0;
}

/* What a preauth answer proves. For a user id, any answer does (Duo refuses an unknown
 * id with 40002); for a username only `auth` does: `enroll` is an unknown or unenrolled
 * user, and `allow` may be Duo's new-user policy letting an unknown name through. */
static void judge_preauth(const char *given, int is_id, const char *result, resolved *r,
                          job_outcome *out)
{
    if (strcmp(result, "deny") == 0) {
        job_fail(out, "duo_user_denied", "Duo denies user '%.150s' (preauth: deny); not imported",
                 given);
    } else if (is_id || strcmp(result, "auth") == 0) {
        memcpy(r->duo_user_id, given, strlen(given) + 1);
        r->kind = is_id ? "user_id" : "username";
    } else if (strcmp(result, "allow") == 0) {
        job_fail(out, "duo_user_unverified",
                 "Duo allows '%.150s' without a second factor (preauth: allow), which its "
                 "new-user policy also does for users it does not have; not imported. Import "
                 "it by Duo user id, or give the stage Admin API credentials",
                 given);
    } else {
        not_found(out, given, 0); /* "enroll": unknown, or never enrolled */
    }
}

/* Auth API preauth by user id or username. 0 or -1 (*out set). */
static int by_preauth(const worker_env *env, const stage_rec *st, const char *given, int is_id,
                      resolved *r, job_outcome *out)
{
    duo_client *duo = stages_duo(import_stages(env), env, st, STAGE_AUTH_API, out);
    if (!duo)
        return -1;
    duo_auth_result res = {0};
    duo_error de = {0};
    long long t0 = clock_ms();
    int rc = duo_preauth(duo, is_id ? given : NULL, is_id ? NULL : given, NULL, &res, &de);
    stage_observe(env, "preauth", clock_ms() - t0, rc, &de);
    if (rc < 0 && is_id && de.http_status == 400 && de.code == 40002 &&
        strstr(de.detail, "user_id"))
        not_found(out, given, de.code);
    else if (rc < 0)
        stage_fail_duo(out, rc, &de, "preauth", 0);
    else
        judge_preauth(given, is_id, res.result_raw ? res.result_raw : "", r, out);
    duo_auth_result_free(&res);
    return out->code || out->retry ? -1 : 0;
}

/* Turns the job's duo_user_id into what is stored. 0 or -1 (*out set). */
static int resolve(const worker_env *env, const stage_rec *st, const char *given, resolved *r,
                   job_outcome *out)
{
    int is_id = looks_like_user_id(given);
    r->from = is_id ? "user_id" : "username";
    if (st->admin_integration_key && st->admin_secret_key) {
        duo_client *duo = stages_duo(import_stages(env), env, st, STAGE_ADMIN_API, out);
        int rc = duo ? by_admin(env, duo, given, is_id, r, out) : -1;
        if (rc <= 0)
            return rc;
        LOG(LOG_INFO, "Admin API refused the lookup; verifying the user with preauth");
    }
    return by_preauth(env, st, given, is_id, r, out);
}

static void store_it(const worker_env *env, const stage_rec *st, const store_user *u,
                     const resolved *r, job_outcome *out)
{
    err_t e = {0};
    int64_t id = 0;
    char uuid[40] = "";
    int rc = store_begin(env->db, &e);
    if (rc == 0)
        rc = store_device_add(env->db, u->id, st->id, r->duo_user_id, r->kind, IMPORT_DEVICE_NAME,
                              &id, uuid, &e);
    if (rc == ERR_CONFLICT) {
        store_rollback(env->db);
        job_fail(out, "device_exists", "a device for Duo user %s already exists on this stage",
                 r->duo_user_id);
    } else if (rc < 0) {
        job_retry(out, "storing device: %s", e.msg);
    } else {
        out->fields = json_pack("{s:s, s:s, s:s}", "device_id", uuid, "duo_user_id", r->duo_user_id,
                                "resolved_from", r->from);
    }
}

void import_manual(const worker_env *env, const job *j, job_outcome *out)
{
    const char *username = json_string_value(json_object_get(j->body, "username"));
    const char *given = json_string_value(json_object_get(j->body, "duo_user_id"));
    const stage_rec *st = stages_get(
        import_stages(env), env, json_string_value(json_object_get(j->body, "stage_uuid")), out);
    if (!st)
        return;
    store_user u;
    resolved r = {0};
    err_t e = {0};
    int rc = store_user_by_name(env->db, username, &u, &e);
    if (rc == ERR_NOTFOUND)
        job_fail(out, "user_not_found", "no local user named '%.150s'", username);
    else if (rc < 0)
        job_retry(out, "looking up user: %s", e.msg);
    else if (resolve(env, st, given, &r, out) == 0)
        store_it(env, st, &u, &r, out);
}
