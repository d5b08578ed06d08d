/* auth.c - the authentication job's life: start (device, guard, submit) and the Duo
 * callback that records the decision and finishes the job through the runtime.
 *
 * Invariant: every started job ends in exactly one worker_job_done(), from its Duo
 * callback - the engine's per-request deadline (AUTH_DEADLINE_SECS) guarantees the
 * callback comes, so no job hangs. Guard rows are taken before Duo is called. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "auth_int.h"
#include "log.h"

static const char *str(const job *j, const char *key)
{
    return json_string_value(json_object_get(j->body, key));
}

/* Held pushes each keep a socket open: allow as many descriptors as the hard limit. */
static void raise_fd_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

int auth_init(const worker_env *env, err_t *e)
{
    auth_app *app = calloc(1, sizeof *app);
    if (!app || !(app->stages = auth_stages_new()) || !(app->engine = duo_async_new(NULL, e))) {
        if (app)
            auth_stages_free(app->stages);
        free(app);
        return e && e->code ? e->code : err_set(e, ERR_NOMEM, "out of memory");
    }
    raise_fd_limit();
    worker_set_app(env->w, app);
    return 0;
}

static void call_unlink(auth_call *c)
{
    auth_app *app = c->app;
    if (c->prev)
        c->prev->next = c->next;
    else
        app->calls = c->next;
    if (c->next)
        c->next->prev = c->prev;
}

void auth_fini(const worker_env *env)
{
    auth_app *app = env->app;
    if (!app)
        return;
    duo_async_free(app->engine); /* no callbacks: the jobs go back to the queue unacked */
    while (app->calls) {
        auth_call *c = app->calls;
        call_unlink(c);
        free(c);
    }
    auth_stages_free(app->stages);
    free(app);
    worker_set_app(env->w, NULL);
}

void auth_poll(const worker_env *env, int mq_fd, int timeout_ms)
{
    auth_app *app = env->app;
    if (duo_async_poll(app->engine, mq_fd, timeout_ms, NULL) < 0)
        LOG(LOG_WARN, "curl multi interface failed; retrying next turn");
}

/* ---- finishing ------------------------------------------------------------------- */

/* Records the decision (challenge result, last_used) in one statement of its own, just
 * before the runtime records the job: these marks need no atomicity with the job
 * record (a crash in between reruns the job, and the guard then sees the decision), and
 * one round trip instead of a transaction's four matters at thousands of logins/s. */
static void record(const auth_call *c, const char *decided, job_outcome *out)
{
    store *db = c->env->db;
    err_t e = {0};
    int allow = strcmp(decided, "allow") == 0;
    if (!c->challenge_id && !allow)
        return;
    int rc = store_auth_record(db, c->challenge_id, decided, allow ? c->dev.id : 0, &e);
    if (rc < 0) {
        LOG(LOG_WARN, "could not record the auth decision", "device_id", c->dev.uuid, "error",
            e.msg);
        (void)out;
    }
}

static void on_duo(void *arg, int rc, json_t *resp, json_t *meta, const duo_error *de)
{
    (void)meta;
    auth_call *c = arg;
    job_outcome out = {0};
    const char *decided = "error";
    worker_duo_observe(c->env, "auth", duo_async_now_ms() - c->t0_ms, rc, de);
    auth_outcome(c, rc, resp, de, &out, &decided);
    record(c, decided, &out);
    call_unlink(c);
    worker *w = c->env->w;
    job_async *h = c->h;
    free(c);
    worker_job_done(w, h, &out);
}

/* ---- starting -------------------------------------------------------------------- */

/* Resolves the job's device; -1 with *out set when there is no usable one. */
static int resolve(const worker_env *env, const job *j, auth_device *dev, job_outcome *out)
{
    err_t e = {0};
    const char *device_id = str(j, "device_id");
    const char *username = str(j, "username");
    int rc = device_id
                 ? store_auth_device_by_uuid(env->db, device_id, dev, &e)
                 : store_auth_device_for_user(env->db, str(j, "stage_uuid"), username, dev, &e);
    if (rc == ERR_INVAL)
        job_fail(out, device_id ? "device_not_found" : "stage_not_found", "%s", e.msg);
    else if (rc < 0)
        job_retry(out, "looking up the device: %s", e.msg);
    else if (dev->state == AUTH_DEV_NO_STAGE)
        job_fail(out, "stage_not_found", "no Duo stage with uuid '%.80s'", str(j, "stage_uuid"));
    else if (dev->state == AUTH_DEV_NO_USER)
        job_fail(out, "user_not_found", "no local user named '%.150s'", username);
    else if (dev->state == AUTH_DEV_INACTIVE)
        job_fail(out, "user_inactive", "the user is deactivated");
    else if (dev->state == AUTH_DEV_NO_DEVICE && device_id)
        job_fail(out, "device_not_found", "no confirmed Duo device with id %s", device_id);
    else if (dev->state == AUTH_DEV_NO_DEVICE)
        job_fail(out, "no_device",
                 "user '%.150s' has no confirmed Duo device on this stage: "
                 "enroll one (enroll.begin) or import it",
                 username);
    return rc < 0 || dev->state != AUTH_DEV_OK ? -1 : 0;
}

/* The push-fatigue guard; -1 with a rate_limited answer in *out when over it. */
static int guard(const worker_env *env, const auth_device *dev, int64_t *challenge,
                 job_outcome *out)
{
    const config *cfg = env->cfg;
    auth_guard g = {cfg->push_cap, cfg->push_window_secs, cfg->deny_cooldown_secs};
    int after = 0;
    const char *why = NULL;
    err_t e = {0};
    if (store_auth_take(env->db, dev->user_id, dev->stage_id, &g, challenge, &after, &why, &e) <
        0) {
        job_retry(out, "push-fatigue guard: %s", e.msg);
        return -1;
    }
    if (*challenge)
        return 0;
    char msg[256];
    if (strcmp(why, "cooldown") == 0)
        snprintf(msg, sizeof msg,
                 "a recent push was denied: new challenges for this user "
                 "wait %d s after a deny; retry in %d s",
                 g.cooldown_secs, after);
    else
        snprintf(msg, sizeof msg,
                 "too many challenges: at most %d per %d s for this user; "
                 "retry in %d s",
                 g.cap, g.window_secs, after);
    out->fields = json_pack("{s:s, s:s, s:i, s:s}", "result", "rate_limited", "device_id",
                            dev->uuid, "retry_after_secs", after, "message", msg);
    LOG(LOG_INFO, "challenge refused by the push-fatigue guard", "device_id", dev->uuid, "reason",
        why);
    return -1;
}

/* Submits the Duo call for c; -1 with *out set when it cannot be sent. */
static int submit(const worker_env *env, const job *j, auth_call *c, job_outcome *out)
{
    auth_app *app = env->app;
    duo_client_opts creds;
    if (auth_stage_creds(env, app->stages, c->dev.stage_uuid, &creds, out) < 0)
        return -1;
    duo_param p[AUTH_MAX_PARAMS];
    char *pushinfo = NULL;
    int n = auth_params(j, &c->dev, p, &pushinfo, out);
    if (n < 0)
        return -1;
    err_t e = {0};
    long long deadline = c->deadline_ms;
    int rc = duo_async_submit(app->engine, &creds, "POST", "/auth/v2/auth", p, (size_t)n, deadline,
                              on_duo, c, &c->req, &e);
    free(pushinfo);
    if (rc < 0)
        job_fail(out, "duo_local_error", "cannot start the Duo call: %s", e.msg);
    return rc < 0 ? -1 : 0;
}

int auth_start(const worker_env *env, const job *j, job_async *h, job_outcome *out)
{
    auth_app *app = env->app;
    auth_call *c = calloc(1, sizeof *c);
    if (!c) {
        job_retry(out, "out of memory");
        return 0;
    }
    long long t0 = duo_async_now_ms();
    *c = (auth_call){.app = app,
                     .env = env,
                     .h = h,
                     .t0_ms = t0,
                     .deadline_ms = t0 + (long long)env->cfg->auth_deadline_secs * 1000};
    if (resolve(env, j, &c->dev, out) < 0 ||
        (auth_factor_guarded(j) && guard(env, &c->dev, &c->challenge_id, out) < 0) ||
        submit(env, j, c, out) < 0) {
        if (c->challenge_id && !out->fields)
            record(c, "error", out);
        free(c);
        return 0;
    }
    c->next = app->calls;
    if (app->calls)
        app->calls->prev = c;
    app->calls = c;
    return 1;
}
