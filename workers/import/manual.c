/* manual.c - the import.manual job, asynchronous: one Duo user becomes a confirmed
 * device of a local user. Operators paste either a Duo user id or a Duo username. Either is
 * verified with Duo before anything is stored: through the Admin API when the stage has it (a
 * username is resolved to its user id), or else with preauth, and a username preauth verified is
 * stored as a username (duo_user_kind 'username'), so a later push never sends a
 * username where Duo expects a user id.
 *
 * Each Duo call goes out on the worker's engine (a slow Duo holds the stage's bulkhead,
 * not the worker) and its callback takes the next step; the job ends in exactly one
 * worker_job_done(), from a callback.
 *
 * Invariant: a device is stored only for a user Duo proved it has. preauth's `allow` for
 * a username proves nothing (Duo allows unknown users under an "allow" new-user policy). */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clock.h"
#include "import.h"
#include "log.h"
#include "store_device.h"
#include "store_user.h"

/* One import.manual waiting for Duo; owned by the app until its job is done. */
typedef struct manual_call {
    import_pending link; /* first: import_fini frees what is left */
    import_app *app;
    const worker_env *env;
    job_async *h;
    char stage_uuid[37];
    int64_t stage_id;
    int64_t user_id;
    int is_id; /* the job's duo_user_id looks like a Duo user id */
    long long call_ms;
} manual_call;

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

static const char *given_of(const manual_call *c)
{
    return json_string_value(json_object_get(worker_job_of(c->h)->body, "duo_user_id"));
}

static void call_free(manual_call *c)
{
    import_pending_del(c->app, &c->link);
    free(c);
}

static void finish(manual_call *c, job_outcome *out)
{
    worker *w = c->env->w;
    job_async *h = c->h;
    call_free(c);
    worker_job_done(w, h, out);
}

/* The device, in the job's transaction (the runtime commits it with the job record). */
static void store_it(const manual_call *c, const resolved *r, job_outcome *out)
{
    const worker_env *env = c->env;
    err_t e = {0};
    int64_t id = 0;
    char uuid[40] = "";
    int rc = store_begin(env->db, &e);
    if (rc == 0)
        rc = store_device_add(env->db, c->user_id, c->stage_id, r->duo_user_id, r->kind,
                              IMPORT_DEVICE_NAME, &id, uuid, &e);
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

/* Submits the call of spec with the stage's `api` credentials. -1 with *out set. */
static int submit(manual_call *c, stage_api api, const duo_call_spec *spec, duo_async_cb cb,
                  job_outcome *out)
{
    const worker_env *env = c->env;
    const stage_rec *st = stages_get(c->app->stages, env, c->stage_uuid, out);
    if (!st)
        return -1;
    c->call_ms = clock_ms();
    long long deadline =
        c->call_ms + env->cfg->duo_retry_budget_ms + env->cfg->duo_quick_timeout_ms;
    return stages_submit(c->app->stages, env, c->app->engine, st, api, spec, deadline, cb, c, NULL,
                         out);
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

static void on_preauth(void *arg, int rc, json_t *resp, json_t *meta, const duo_error *err)
{
    (void)meta;
    manual_call *c = arg;
    const char *given = given_of(c);
    duo_error de = *err;
    duo_auth_result res;
    rc = duo_preauth_answer(rc, resp, &res, &de);
    stage_observe(c->env, "preauth", clock_ms() - c->call_ms, rc, &de);
    resolved r = {.from = c->is_id ? "user_id" : "username"};
    job_outcome out = {0};
    if (rc < 0 && c->is_id && de.http_status == 400 && de.code == 40002 &&
        strstr(de.detail, "user_id"))
        not_found(&out, given, de.code);
    else if (rc < 0)
        stage_fail_duo(&out, rc, &de, "preauth", 0);
    else
        judge_preauth(given, c->is_id, res.result_raw ? res.result_raw : "", &r, &out);
    duo_auth_result_free(&res);
    if (!out.code && !out.retry)
        store_it(c, &r, &out);
    finish(c, &out);
}

/* Auth API preauth by user id or username. -1 with *out set. */
static int send_preauth(manual_call *c, job_outcome *out)
{
    const char *given = given_of(c);
    duo_call_spec spec;
    duo_error de = {0};
    if (duo_preauth_spec(&spec, c->is_id ? given : NULL, c->is_id ? NULL : given, NULL, &de) < 0) {
        job_fail(out, "duo_local_error", "%s", de.message);
        return -1;
    }
    return submit(c, STAGE_AUTH_API, &spec, on_preauth, out);
}

/* Admin API answered the lookup by id (GET /admin/v1/users/<id>) or by username (the
 * user list filtered by it): what is stored is Duo's user id. A 403 (no Admin API
 * licence or permission) falls back to preauth. */
static void on_admin(void *arg, int rc, json_t *resp, json_t *meta, const duo_error *err)
{
    (void)meta;
    manual_call *c = arg;
    const char *given = given_of(c);
    duo_error de = *err;
    json_t *user = NULL;
    rc = c->is_id ? duo_admin_user_by_id_answer(rc, resp, &user, &de)
                  : duo_admin_user_by_username_answer(rc, resp, given, &user, &de);
    stage_observe(c->env, c->is_id ? "admin_user_by_id" : "admin_user_by_username",
                  clock_ms() - c->call_ms, rc, &de);
    const char *id = json_string_value(json_object_get(user, "user_id"));
    resolved r = {.from = c->is_id ? "user_id" : "username"};
    job_outcome out = {0};
    if (rc == 0 && id && *id && strlen(id) < sizeof r.duo_user_id) {
        memcpy(r.duo_user_id, id, strlen(id) + 1);
        r.kind = "user_id";
        store_it(c, &r, &out);
    } else if (rc == 0) {
        job_fail(&out, "duo_bad_response", "Duo's user object for '%.150s' has no usable user_id",
                 given);
    } else if (rc == ERR_NOTFOUND) {
        not_found(&out, given, de.code);
    } else if (de.cls == DUO_CLASS_LICENSE) {
        json_decref(user);
        LOG(LOG_INFO, "Admin API refused the lookup; verifying the user with preauth");
        if (send_preauth(c, &out) == 0)
            return;
        finish(c, &out);
        return;
    } else {
        stage_fail_duo(&out, rc, &de, "the user lookup", STAGE_CALL_ADMIN);
    }
    json_decref(user);
    finish(c, &out);
}

/* The first Duo call: the Admin API when the stage has it, else preauth. -1 with *out. */
static int resolve(manual_call *c, const stage_rec *st, job_outcome *out)
{
    if (!st->admin_integration_key || !st->admin_secret_key)
        return send_preauth(c, out);
    const char *given = given_of(c);
    duo_call_spec spec;
    duo_error de = {0};
    int rc = c->is_id ? duo_admin_user_by_id_spec(&spec, given, &de)
                      : duo_admin_user_by_username_spec(&spec, given, &de);
    if (rc < 0) {
        job_fail(out, "duo_local_error", "%s", de.message);
        return -1;
    }
    return submit(c, STAGE_ADMIN_API, &spec, on_admin, out);
}

int import_manual_start(const worker_env *env, const job *j, job_async *h, job_outcome *out)
{
    import_app *app = env->app;
    const char *username = json_string_value(json_object_get(j->body, "username"));
    const char *given = json_string_value(json_object_get(j->body, "duo_user_id"));
    const stage_rec *st = stages_get(
        app->stages, env, json_string_value(json_object_get(j->body, "stage_uuid")), out);
    if (!st)
        return 0;
    store_user u;
    err_t e = {0};
    int rc = store_user_by_name(env->db, username, &u, &e);
    if (rc == ERR_NOTFOUND)
        job_fail(out, "user_not_found", "no local user named '%.150s'", username);
    else if (rc < 0)
        job_retry(out, "looking up user: %s", e.msg);
    manual_call *c = rc == 0 ? calloc(1, sizeof *c) : NULL;
    if (rc == 0 && !c)
        job_retry(out, "out of memory");
    if (!c)
        return 0;
    *c = (manual_call){.app = app,
                       .env = env,
                       .h = h,
                       .stage_id = st->id,
                       .user_id = u.id,
                       .is_id = looks_like_user_id(given)};
    memcpy(c->stage_uuid, st->uuid, sizeof c->stage_uuid);
    import_pending_add(app, &c->link);
    if (resolve(c, st, out) == 0)
        return 1;
    call_free(c);
    return 0;
}
