/* manual.c - the import.manual job: one Duo user becomes a confirmed device of a local
 * user. Operators paste either a Duo user id or a Duo username; a username is resolved
 * to the user id through the Admin API when the stage has it, or else verified with
 * preauth and stored as a username (duo_user_kind 'username'), so a later push never
 * sends a username where Duo expects a user id. */
#include <ctype.h>
#include <string.h>
#include <time.h>

#include "import.h"
#include "log.h"
#include "store_enroll.h"

/* What the job's duo_user_id turned into. */
typedef struct resolved {
    char duo_user_id[201]; /* what is stored */
    const char *kind;      /* duo_user_kind: "user_id" or "username" */
    const char *from;      /* resolved_from: "user_id" or "username" */
} resolved;

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

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

static void not_found(job_outcome *out, const char *name)
{
    job_fail(out, "duo_user_not_found", "Duo has no user with id or username '%.150s'", name);
}

/* Admin API: username -> user id. 0, 1 (Admin API refused: try preauth), or -1 (*out). */
static int by_admin(const worker_env *env, duo_client *duo, const char *name, resolved *r,
                    job_outcome *out)
{
    json_t *user = NULL;
    duo_error de = {0};
    long long t0 = now_ms();
    int rc = duo_admin_user_by_username(duo, name, &user, &de);
    worker_duo_observe(env, "admin_user_by_username", now_ms() - t0, rc, &de);
    const char *id = json_string_value(json_object_get(user, "user_id"));
    if (rc == 0 && id && *id && strlen(id) < sizeof r->duo_user_id) {
        memcpy(r->duo_user_id, id, strlen(id) + 1);
        r->kind = "user_id";
    } else if (rc == 0) {
        job_fail(out, "duo_bad_response", "Duo's user object for '%.150s' has no usable user_id",
                 name);
    } else if (rc == ERR_NOTFOUND) {
        not_found(out, name);
    } else if (de.cls == DUO_CLASS_LICENSE) {
        json_decref(user);
        return 1;
    } else {
        job_fail_duo(out, rc, &de, "user lookup");
    }
    json_decref(user);
    return out->code || out->retry ? -1 : 0;
}

/* Auth API preauth: does Duo know this username (result auth or allow)? */
static int by_preauth(const worker_env *env, const stage_rec *st, const char *name, resolved *r,
                      job_outcome *out)
{
    duo_client *duo = worker_duo(env, st, 0, out);
    if (!duo)
        return -1;
    duo_auth_result res = {0};
    duo_error de = {0};
    long long t0 = now_ms();
    int rc = duo_preauth(duo, NULL, name, NULL, &res, &de);
    worker_duo_observe(env, "preauth", now_ms() - t0, rc, &de);
    const char *result = res.result_raw ? res.result_raw : "";
    if (rc < 0)
        job_fail_duo(out, rc, &de, "preauth");
    else if (strcmp(result, "auth") == 0 || strcmp(result, "allow") == 0) {
        memcpy(r->duo_user_id, name, strlen(name) + 1);
        r->kind = "username";
    } else if (strcmp(result, "deny") == 0)
        job_fail(out, "duo_user_denied", "Duo denies user '%.150s' (preauth: deny); not imported",
                 name);
    else
        not_found(out, name); /* "enroll": unknown or never enrolled */
    duo_auth_result_free(&res);
    return out->code || out->retry ? -1 : 0;
}

/* Turns the job's duo_user_id into what is stored. 0 or -1 (*out set). */
static int resolve(const worker_env *env, const stage_rec *st, const char *given, resolved *r,
                   job_outcome *out)
{
    if (looks_like_user_id(given)) {
        memcpy(r->duo_user_id, given, strlen(given) + 1);
        r->kind = r->from = "user_id";
        return 0;
    }
    r->from = "username";
    if (st->admin_integration_key && st->admin_secret_key) {
        duo_client *duo = import_admin_duo(env, st, out);
        int rc = duo ? by_admin(env, duo, given, r, out) : -1;
        if (rc <= 0)
            return rc;
        LOG(LOG_INFO, "Admin API refused the lookup; verifying the username with preauth");
    }
    return by_preauth(env, st, given, r, out);
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
    stage_rec st;
    if (worker_stage(env, json_string_value(json_object_get(j->body, "stage_uuid")), &st, out) < 0)
        return;
    store_user u;
    resolved r = {0};
    err_t e = {0};
    int rc = store_user_by_name(env->db, username, &u, &e);
    if (rc == ERR_NOTFOUND)
        job_fail(out, "user_not_found", "no local user named '%.150s'", username);
    else if (rc < 0)
        job_retry(out, "looking up user: %s", e.msg);
    else if (resolve(env, &st, given, &r, out) == 0)
        store_it(env, &st, &u, &r, out);
    stage_rec_free(&st);
}
