/* auth.c - the authentication job's life: start (device, guard, submit) and the Duo
 * callbacks that record the decision and finish the job through the runtime.
 *
 * A factor that reaches the phone (auto, push, phone) goes out once: POST /auth/v2/auth
 * with async=1 (retried only when Duo cannot have received it), its txid stored with
 * the job's challenge, then GET /auth/v2/auth_status until Duo decides. A rerun of the
 * job (worker killed, redelivery) finds its challenge: with a txid it waits on it again,
 * without one it does not push again (push_outcome_unknown).
 *
 * Invariant: every started job ends in exactly one worker_job_done(), from a Duo
 * callback - every request carries the job's deadline (AUTH_DEADLINE_SECS), so the
 * callback comes and no job hangs. Guard rows are taken before Duo is called. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "auth_int.h"
#include "clock.h"
#include "log.h"

/* Pause before asking auth_status again when it answered "waiting" at once. */
#define AUTH_STATUS_PAUSE_MS 1000

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
    /* Every job the broker may hand over at once can hold one connection; keeping them
     * all between calls saves a TLS set-up (about 1 ms of CPU) per reconnect. */
    duo_async_opts ao = {.max_idle_connections = env->cfg->prefetch + 16};
    if (!app)
        return err_set(e, ERR_NOMEM, "out of memory");
    int rc = stages_engine_new(env, &ao, &app->stages, &app->engine, e);
    if (rc < 0) {
        free(app);
        return rc;
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
    stages_free(app->stages);
    free(app);
    worker_set_app(env->w, NULL);
}

static void run_guards(const worker_env *env, auth_app *app);

void auth_poll(const worker_env *env, int mq_fd, int timeout_ms)
{
    auth_app *app = env->app;
    if (app->guard_queue) { /* the pushes started last turn: out before any wait */
        run_guards(env, app);
        timeout_ms = 0;
    }
    stages_engine_poll(app->stages, app->engine, env, mq_fd, timeout_ms);
}

/* ---- finishing ------------------------------------------------------------------- */

/* Records the decision (challenge result, last_used) in the transaction the runtime
 * commits with the job record: BEGIN, this mark, the job record and COMMIT travel in one
 * round trip (store.h: store_begin, store_send), and the mark never outlives a job that
 * did not commit. */
static void record(const auth_call *c, const char *decided)
{
    store *db = c->env->db;
    err_t e = {0};
    int allow = strcmp(decided, "allow") == 0;
    if (!c->challenge_id && !allow)
        return;
    if (store_begin(db, &e) < 0 ||
        store_auth_record(db, c->challenge_id, decided, allow ? c->dev.id : 0, &e) < 0)
        LOG(LOG_WARN, "could not record the auth decision", "device_id", c->dev.uuid, "error",
            e.msg);
}

/* Ends the call: the outcome of Duo's final answer (or failure), recorded, then done. */
static void finish(auth_call *c, int rc, const json_t *resp, const duo_error *de)
{
    job_outcome out = {0};
    const char *decided = "error";
    auth_outcome(c, rc, resp, de, &out, &decided);
    record(c, decided);
    call_unlink(c);
    worker *w = c->env->w;
    job_async *h = c->h;
    free(c);
    worker_job_done(w, h, &out);
}

/* Ends the call with an error outcome decided here (no Duo answer to map). */
static void finish_fail(auth_call *c, job_outcome *out)
{
    record(c, "error");
    call_unlink(c);
    worker *w = c->env->w;
    job_async *h = c->h;
    free(c);
    worker_job_done(w, h, out);
}

static void on_duo(void *arg, int rc, json_t *resp, json_t *meta, const duo_error *de)
{
    (void)meta;
    auth_call *c = arg;
    stage_observe(c->env, "auth", clock_ms() - c->call_ms, rc, de);
    finish(c, rc, resp, de);
}

static int submit_status(auth_call *c, long long start_ms, job_outcome *out);

static void on_status(void *arg, int rc, json_t *resp, json_t *meta, const duo_error *de)
{
    (void)meta;
    auth_call *c = arg;
    long long now = clock_ms();
    stage_observe(c->env, "auth_status", now - c->call_ms, rc, de);
    const char *result = rc == 0 ? json_string_value(json_object_get(resp, "result")) : NULL;
    if (!result || strcmp(result, "waiting") != 0) {
        finish(c, rc, resp, de);
        return;
    }
    /* Duo answers the first poll at once ("pushed") and long-polls later ones until the
     * answer changes; a later one that came back at once (an edge, a proxy) is asked
     * again after a pause, not in a tight loop. */
    int quick = now - c->call_ms < AUTH_STATUS_PAUSE_MS && c->polls++ > 0;
    long long start = quick ? now + AUTH_STATUS_PAUSE_MS : now;
    job_outcome out = {0};
    if (submit_status(c, start, &out) < 0)
        finish_fail(c, &out);
}

/* The Auth API credentials of the job's stage (strings borrowed from the stage cache:
 * duo_async_submit copies them). -1 with *out set. */
static int stage_creds(const worker_env *env, auth_app *app, const char *stage_uuid,
                       duo_client_opts *creds, job_outcome *out)
{
    const stage_rec *st = stages_get(app->stages, env, stage_uuid, out);
    return st ? stages_duo_opts(app->stages, env, st, STAGE_AUTH_API, creds, out) : -1;
}

/* Waits on the push's txid (safe to repeat: it only reads Duo's answer). */
static int submit_status(auth_call *c, long long start_ms, job_outcome *out)
{
    auth_app *app = c->app;
    duo_client_opts creds;
    if (stage_creds(c->env, app, c->dev.stage_uuid, &creds, out) < 0)
        return -1;
    duo_param p[] = {{"txid", c->txid}};
    err_t e = {0};
    c->call_ms = clock_ms();
    if (duo_async_submit(app->engine, &creds, "GET", "/auth/v2/auth_status", p, 1, c->deadline_ms,
                         on_status, c, &c->req, &e) < 0) {
        job_fail(out, "duo_local_error", "cannot start the Duo call: %s", e.msg);
        return -1;
    }
    if (start_ms > c->call_ms)
        duo_async_defer(c->req, start_ms);
    return 0;
}

/* The asynchronous auth call answered: keep its txid with the challenge, then wait. */
static void on_push(void *arg, int rc, json_t *resp, json_t *meta, const duo_error *de)
{
    (void)meta;
    auth_call *c = arg;
    stage_observe(c->env, "auth", clock_ms() - c->call_ms, rc, de);
    const char *txid = rc == 0 ? json_string_value(json_object_get(resp, "txid")) : NULL;
    job_outcome out = {0};
    if (rc < 0) {
        finish(c, rc, NULL, de);
        return;
    }
    if (!txid || !*txid || strlen(txid) >= sizeof c->txid) {
        job_fail(&out, "duo_bad_response", "Duo's asynchronous auth answer carried no txid");
        finish_fail(c, &out);
        return;
    }
    memcpy(c->txid, txid, strlen(txid) + 1);
    err_t e = {0};
    /* Not fatal: without it a rerun of this job refuses to push rather than push twice. */
    if (store_auth_set_txid(c->env->db, c->challenge_id, c->txid, &e) < 0)
        LOG(LOG_WARN, "could not store the push's txid", "device_id", c->dev.uuid, "error", e.msg);
    if (submit_status(c, 0, &out) < 0)
        finish_fail(c, &out);
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

/* The push-fatigue guard; -1 with a rate_limited answer in *out when over it. A rerun
 * of the job gets its own challenge back (*take->why "resume", with its txid). */
static int guard(const worker_env *env, const job *j, const auth_device *dev, auth_take *take,
                 job_outcome *out)
{
    const config *cfg = env->cfg;
    auth_guard g = {cfg->push_cap, cfg->push_window_secs, cfg->deny_cooldown_secs};
    err_t e = {0};
    if (store_auth_take(env->db, dev->user_id, dev->stage_id, &g, j->id, take, &e) < 0) {
        job_retry(out, "push-fatigue guard: %s", e.msg);
        return -1;
    }
    if (take->challenge_id)
        return 0;
    int after = take->retry_after_secs;
    const char *why = take->why;
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

/* A rerun of a job that took its challenge: wait on its push when the earlier run
 * stored the txid; otherwise a push may have gone out unseen, and sending another is
 * what this design never does. */
static int resume(auth_call *c, const auth_take *take, job_outcome *out)
{
    if (!take->txid[0]) {
        job_fail(out, "push_outcome_unknown",
                 "an earlier attempt of this job may already have reached the user's phone and its "
                 "answer was lost; nothing is sent again. Send a new job to try again");
        return -1;
    }
    LOG(LOG_INFO, "auth job rerun: waiting on its push again", "device_id", c->dev.uuid);
    memcpy(c->txid, take->txid, sizeof c->txid);
    return submit_status(c, 0, out);
}

/* Submits the Duo call for c (parameters already built in p); -1 with *out set when it
 * cannot be sent. */
static int submit(const worker_env *env, const job *j, auth_call *c, const duo_param *p, int n,
                  job_outcome *out)
{
    auth_app *app = env->app;
    duo_client_opts creds;
    if (stage_creds(env, app, c->dev.stage_uuid, &creds, out) < 0)
        return -1;
    err_t e = {0};
    c->call_ms = clock_ms();
    int rc =
        duo_async_submit(app->engine, &creds, "POST", "/auth/v2/auth", p, (size_t)n, c->deadline_ms,
                         auth_factor_async(j) ? on_push : on_duo, c, &c->req, &e);
    if (rc < 0)
        job_fail(out, "duo_local_error", "cannot start the Duo call: %s", e.msg);
    return rc < 0 ? -1 : 0;
}

/* Parameters (checked before anything is sent), guard, then the Duo call - or, for a
 * rerun of a job whose push went out, the wait on that push. -1 with *out set. */
static int guard_and_send(const worker_env *env, const job *j, auth_call *c, job_outcome *out)
{
    duo_param p[AUTH_MAX_PARAMS];
    char *pushinfo = NULL;
    auth_take take = {0};
    int n = auth_params(j, &c->dev, p, &pushinfo, out), rc = -1;
    if (n < 0)
        return -1;
    if (auth_factor_guarded(j) && guard(env, j, &c->dev, &take, out) < 0)
        ;
    else if ((c->challenge_id = take.challenge_id) && strcmp(take.why, "resume") == 0)
        rc = resume(c, &take, out);
    else
        rc = submit(env, j, c, p, n, out);
    free(pushinfo);
    return rc;
}

/* A factor that reaches the phone waits for the turn's guard rows (run_guards), whose
 * synchronous commit is then one WAL flush for all of them instead of one each; its
 * parameters are checked now, so that a job refused for them never takes a challenge.
 * Anything else goes out at once. */
static int queue_or_send(const worker_env *env, const job *j, auth_call *c, job_outcome *out)
{
    if (!auth_factor_guarded(j))
        return guard_and_send(env, j, c, out);
    duo_param p[AUTH_MAX_PARAMS];
    char *pushinfo = NULL;
    int n = auth_params(j, &c->dev, p, &pushinfo, out);
    free(pushinfo);
    if (n < 0)
        return -1;
    c->gnext = c->app->guard_queue;
    c->app->guard_queue = c;
    return 0;
}

static int by_user(const void *a, const void *b)
{
    int64_t x = (*(auth_call *const *)a)->dev.user_id, y = (*(auth_call *const *)b)->dev.user_id;
    return x < y ? -1 : x > y;
}

/* Takes the guard rows of every queued push in one round trip and one synchronous
 * commit (store_auth_take_ahead, in ascending user id), then sends each push (or waits
 * on a rerun's, or answers rate_limited) as guard_and_send does one by one. */
static void run_guards(const worker_env *env, auth_app *app)
{
    size_t n = 0;
    for (auth_call *c = app->guard_queue; c; c = c->gnext)
        n++;
    if (!n)
        return;
    auth_call **cs = malloc(n * sizeof *cs), *next = NULL;
    size_t k = 0;
    for (auth_call *c = app->guard_queue; c; c = next) {
        next = c->gnext; /* finish_fail frees c */
        if (cs)
            cs[k++] = c;
        else { /* no room to sort: each takes its guard alone, still exactly once */
            job_outcome out = {0};
            if (guard_and_send(env, worker_job_of(c->h), c, &out) < 0)
                finish_fail(c, &out);
        }
    }
    app->guard_queue = NULL;
    if (!cs)
        return;
    qsort(cs, n, sizeof *cs, by_user);
    const config *cfg = env->cfg;
    auth_guard g = {cfg->push_cap, cfg->push_window_secs, cfg->deny_cooldown_secs};
    for (size_t i = 0; n > 1 && i < n; i++)
        store_auth_take_ahead(env->db, cs[i]->dev.user_id, cs[i]->dev.stage_id, &g,
                              worker_job_of(cs[i]->h)->id);
    for (size_t i = 0; i < n; i++) {
        job_outcome out = {0};
        if (guard_and_send(env, worker_job_of(cs[i]->h), cs[i], &out) < 0)
            finish_fail(cs[i], &out);
    }
    store_ahead_clear(env->db); /* none is left: each was asked for above */
    free(cs);
}

/* preauth answered: the job's device must be one of the user's with the capability the
 * factor needs, as Duo itself would insist; then the challenge goes out. */
static void on_preauth(void *arg, int rc, json_t *resp, json_t *meta, const duo_error *de)
{
    (void)meta;
    auth_call *c = arg;
    stage_observe(c->env, "preauth", clock_ms() - c->call_ms, rc, de);
    if (rc < 0) {
        finish(c, rc, NULL, de);
        return;
    }
    const job *j = worker_job_of(c->h);
    job_outcome out = {0};
    /* A refusal by the guard (rate_limited) took no challenge: finish_fail records none. */
    if (auth_device_check(j, resp, &out) < 0 || queue_or_send(c->env, j, c, &out) < 0)
        finish_fail(c, &out);
}

/* Device, then (for a job naming a Duo device) a preauth to check it, then the rest. */
static int begin(const worker_env *env, const job *j, auth_call *c, job_outcome *out)
{
    if (resolve(env, j, &c->dev, out) < 0)
        return -1;
    if (!auth_device_named(j))
        return queue_or_send(env, j, c, out);
    auth_app *app = env->app;
    duo_client_opts creds;
    if (stage_creds(env, app, c->dev.stage_uuid, &creds, out) < 0)
        return -1;
    duo_param p[2];
    int n = c->dev.by_username ? duo_preauth_params(NULL, c->dev.duo_user_id, NULL, p)
                               : duo_preauth_params(c->dev.duo_user_id, NULL, NULL, p);
    err_t e = {0};
    c->call_ms = clock_ms();
    if (n < 0 || duo_async_submit(app->engine, &creds, "POST", "/auth/v2/preauth", p, (size_t)n,
                                  c->deadline_ms, on_preauth, c, &c->req, &e) < 0) {
        job_fail(out, "duo_local_error", "cannot start the Duo call: %s", e.msg);
        return -1;
    }
    return 0;
}

void auth_send_ahead(const worker_env *env, const job *j)
{
    store_auth_device_ahead(env->db, str(j, "stage_uuid"), str(j, "username"), str(j, "device_id"));
}

int auth_start(const worker_env *env, const job *j, job_async *h, job_outcome *out)
{
    auth_app *app = env->app;
    auth_call *c = calloc(1, sizeof *c);
    if (!c) {
        job_retry(out, "out of memory");
        return 0;
    }
    long long t0 = clock_ms();
    *c = (auth_call){.app = app,
                     .env = env,
                     .h = h,
                     .t0_ms = t0,
                     .deadline_ms = t0 + (long long)env->cfg->auth_deadline_secs * 1000};
    if (begin(env, j, c, out) < 0) {
        if (c->challenge_id && !out->fields)
            record(c, "error");
        free(c);
        return 0;
    }
    c->next = app->calls;
    if (app->calls)
        app->calls->prev = c;
    app->calls = c;
    return 1;
}
