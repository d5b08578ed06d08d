/* enroll.c - enrollment jobs, asynchronous. begin records its attempt, asks Duo for an
 * activation and records it as a pending enrollment; status asks Duo whether it was
 * scanned and, on success, stores the device once (one device per Duo user per stage)
 * and closes the enrollment.
 *
 * Invariant: every started job ends in exactly one worker_job_done(), from its Duo
 * callback (each request carries a deadline, so the callback comes). Duo's enroll acts
 * (it creates the activation), so it goes out only after its attempt was committed, and
 * a rerun that finds the attempt calls nothing (enroll_outcome_unknown). */
#include "enroll.h"

#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "log.h"
#include "store_device.h"
#include "store_enroll.h"
#include "store_user.h"

/* One job waiting for Duo; owned by the app until its job is done. */
struct enroll_call {
    enroll_app *app;
    const worker_env *env; /* borrowed: lives as long as the worker */
    job_async *h;
    int64_t stage_id;
    char *stage_name; /* the reply's stage_name (owned) */
    int64_t user_id;
    store_enrollment en; /* enroll.status: the pending enrollment */
    long long call_ms;
    enroll_call *prev, *next;
};

static const char *str(const job *j, const char *key)
{
    return json_string_value(json_object_get(j->body, key));
}

int enroll_init(const worker_env *env, err_t *e)
{
    enroll_app *app = calloc(1, sizeof *app);
    /* Every job in hand may hold a connection; keeping them saves a TLS set-up each. */
    duo_async_opts ao = {.max_idle_connections = env->cfg->prefetch + 16};
    if (!app)
        return err_set(e, ERR_NOMEM, "out of memory");
    int rc = stages_engine_new(env, &ao, &app->stages, &app->engine, e);
    if (rc < 0) {
        free(app);
        return rc;
    }
    worker_set_app(env->w, app);
    return 0;
}

static void call_free(enroll_call *c)
{
    if (c->prev)
        c->prev->next = c->next;
    else
        c->app->calls = c->next;
    if (c->next)
        c->next->prev = c->prev;
    free(c->stage_name);
    free(c);
}

void enroll_fini(const worker_env *env)
{
    enroll_app *app = env->app;
    if (!app)
        return;
    duo_async_free(app->engine); /* no callbacks: the jobs go back to the queue unacked */
    while (app->calls)
        call_free(app->calls);
    stages_free(app->stages);
    free(app);
    worker_set_app(env->w, NULL);
}

void enroll_poll(const worker_env *env, int mq_fd, int timeout_ms)
{
    enroll_app *app = env->app;
    stages_engine_poll(app->stages, app->engine, env, mq_fd, timeout_ms);
}

/* A call for job j of stage st, linked into the pending list; NULL when out of memory. */
static enroll_call *call_new(const worker_env *env, job_async *h, const stage_rec *st)
{
    enroll_call *c = calloc(1, sizeof *c);
    const char *name = st->friendly_name && *st->friendly_name ? st->friendly_name : st->name;
    if (!c || !(c->stage_name = strdup(name ? name : ""))) {
        free(c);
        return NULL;
    }
    enroll_app *app = env->app;
    c->app = app;
    c->env = env;
    c->h = h;
    c->stage_id = st->id;
    c->next = app->calls;
    if (app->calls)
        app->calls->prev = c;
    app->calls = c;
    return c;
}

/* Submits c's Duo call; -1 with *out set (the call is freed). */
static int submit(enroll_call *c, const stage_rec *st, const duo_call_spec *spec, duo_async_cb cb,
                  job_outcome *out)
{
    const worker_env *env = c->env;
    enroll_app *app = env->app;
    const config *cfg = env->cfg;
    c->call_ms = clock_ms();
    long long deadline = c->call_ms + cfg->duo_retry_budget_ms + cfg->duo_quick_timeout_ms;
    if (stages_submit(app->stages, env, app->engine, st, STAGE_AUTH_API, spec, deadline, cb, c,
                      NULL, out) < 0) {
        call_free(c);
        return -1;
    }
    return 0;
}

/* Ends the call: the job is finished with *out. */
static void finish(enroll_call *c, job_outcome *out)
{
    worker *w = c->env->w;
    job_async *h = c->h;
    call_free(c);
    worker_job_done(w, h, out);
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

/* ---- enroll.begin -------------------------------------------------------------------- */

/* A 400 naming the username on enroll means Duo already has this user. */
static int is_existing_duo_user(const duo_error *de)
{
    return de->http_status == 400 && de->code == 40002 &&
           (strstr(de->detail, "exist") || strstr(de->message, "exist") ||
            strstr(de->detail, "username"));
}

/* 0 when a failed enroll certainly made no activation: it never reached Duo, or Duo
 * refused it (4xx, 429). Otherwise (timeout, dropped connection, 5xx, an answer we could
 * not read) Duo may have acted. */
static int may_have_acted(const duo_error *de)
{
    if (de->not_sent)
        return 0;
    switch (de->fail) {
    case DUO_FAIL_HTTP:
        return de->http_status >= 500;
    case DUO_FAIL_LOCAL:
    case DUO_FAIL_TLS:
    case DUO_FAIL_CIRCUIT_OPEN:
    case DUO_FAIL_STAGE_BUSY:
        return 0;
    default:
        return 1;
    }
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
         * one (or meet duo_user_exists), so an acting call is not retried then. A person
         * waits at the enrollment screen: a refusal (breaker, bulkhead) answers at once. */
        stage_fail_duo(out, rc, de, "enrollment", STAGE_CALL_ACTS | STAGE_CALL_PERSON);
}

/* The pending enrollment and the end of the attempt, in the job's transaction. */
static void begin_record(enroll_call *c, const duo_enroll_result *r, job_outcome *out)
{
    const worker_env *env = c->env;
    const job *j = worker_job_of(c->h);
    err_t e = {0};
    store_enrollment en = {0};
    int rc = store_begin(env->db, &e);
    if (rc == 0)
        rc = store_enrollment_add(env->db, c->stage_id, c->user_id, r->user_id, r->activation_code,
                                  r->expiration, &en, &e);
    if (rc == 0)
        rc = store_enroll_attempt_drop_in_tx(env->db, j->id, &e);
    if (rc < 0) {
        /* The activation exists at Duo; the attempt's row makes the rerun say so. */
        job_retry(out, "recording enrollment: %s", e.msg);
        return;
    }
    out->fields =
        json_pack("{s:s, s:s, s:s, s:I, s:s}", "enrollment_id", en.uuid, "activation_barcode",
                  r->activation_barcode, "activation_code", r->activation_code, "expires_at",
                  (json_int_t)r->expiration, "stage_name", c->stage_name);
    if (r->activation_url)
        json_object_set_new(out->fields, "activation_url", json_string(r->activation_url));
}

static void on_enroll(void *arg, int rc, json_t *resp, json_t *meta, const duo_error *err)
{
    (void)meta;
    enroll_call *c = arg;
    const job *j = worker_job_of(c->h);
    duo_error de = *err;
    duo_enroll_result r;
    rc = duo_enroll_answer(rc, resp, &r, &de);
    stage_observe(c->env, "enroll", clock_ms() - c->call_ms, rc, &de);
    job_outcome out = {0};
    if (rc == 0)
        worker_fault_point(c->env, "enroll_after_duo"); /* Duo acted; nothing recorded */
    if (rc == 0) {
        begin_record(c, &r, &out);
    } else {
        err_t e = {0};
        if (!may_have_acted(&de) && store_enroll_attempt_drop(c->env->db, j->id, &e) < 0)
            LOG(LOG_WARN, "could not forget an enroll attempt that never reached Duo", "job_id",
                j->id, "error", e.msg);
        fail_enroll(&out, rc, &de, str(j, "username"));
    }
    duo_enroll_result_free(&r);
    finish(c, &out);
}

/* Records the job's attempt before Duo is called; -1 with *out set when it must not be
 * called: the attempt could not be recorded, or an earlier run of the job recorded it. */
static int take_attempt(const worker_env *env, const job *j, int64_t stage_id, job_outcome *out)
{
    err_t e = {0};
    int rc = store_enroll_attempt_take(env->db, j->id, stage_id, &e);
    if (rc < 0)
        job_retry(out, "recording the enroll attempt: %s", e.msg);
    else if (rc == 1)
        job_fail(out, "enroll_outcome_unknown",
                 "an earlier attempt of this job called Duo's enroll and its answer was lost: "
                 "Duo may have created an activation, so nothing is sent again. Send a new job "
                 "to try again (if Duo then answers duo_user_exists, import the user)");
    return rc == 0 ? 0 : -1;
}

int enroll_begin_start(const worker_env *env, const job *j, job_async *h, job_outcome *out)
{
    enroll_app *app = env->app;
    const char *username = str(j, "username");
    json_t *vs = json_object_get(j->body, "valid_secs");
    store_user u;
    const stage_rec *st = stages_get(app->stages, env, str(j, "stage_uuid"), out);
    if (!st || load_user(env, username, &u, out) < 0 || take_attempt(env, j, st->id, out) < 0)
        return 0;
    enroll_call *c = call_new(env, h, st);
    duo_call_spec spec;
    duo_enroll_spec(&spec, username, vs ? (long)json_integer_value(vs) : 0);
    if (c)
        c->user_id = u.id;
    else
        job_retry(out, "out of memory");
    if (c && submit(c, st, &spec, on_enroll, out) == 0)
        return 1;
    err_t e = {0};
    store_enroll_attempt_drop(env->db, j->id, &e); /* nothing was sent */
    return 0;
}

/* ---- enroll.status ------------------------------------------------------------------- */

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

static void on_status(void *arg, int rc, json_t *resp, json_t *meta, const duo_error *err)
{
    (void)meta;
    enroll_call *c = arg;
    const worker_env *env = c->env;
    duo_error de = *err;
    duo_enroll_state state = 0;
    rc = duo_enroll_status_answer(rc, resp, &state, &de);
    stage_observe(env, "enroll_status", clock_ms() - c->call_ms, rc, &de);
    job_outcome out = {0};
    err_t e = {0};
    if (rc < 0) {
        stage_fail_duo(&out, rc, &de, "enroll_status", 0); /* a refusal is deferred */
    } else if (state == DUO_ENROLL_SUCCESS) {
        status_success(env, &c->en, &out);
    } else if (state == DUO_ENROLL_INVALID) {
        if (store_begin(env->db, &e) < 0 ||
            store_enrollment_close(env->db, c->en.id, "invalid", 0, &e) < 0)
            job_retry(&out, "closing enrollment: %s", e.msg);
        else
            status_fields(&out, "invalid", NULL);
    } else {
        status_fields(&out, "waiting", NULL);
    }
    finish(c, &out);
}

int enroll_status_start(const worker_env *env, const job *j, job_async *h, job_outcome *out)
{
    enroll_app *app = env->app;
    const stage_rec *st = stages_get(app->stages, env, str(j, "stage_uuid"), out);
    if (!st)
        return 0;
    store_enrollment en = {0};
    err_t e = {0};
    int rc = store_enrollment_get(env->db, st->id, str(j, "enrollment_id"), &en, &e);
    if (rc == ERR_NOTFOUND || rc == ERR_INVAL) {
        job_fail(out, "enrollment_not_found", "%s", e.msg);
        return 0;
    }
    if (rc < 0) {
        job_retry(out, "loading enrollment: %s", e.msg);
        return 0;
    }
    if (strcmp(en.state, "pending") != 0) {
        status_fields(out, en.state, en.device_uuid); /* already decided: answer the same */
        return 0;
    }
    enroll_call *c = call_new(env, h, st);
    if (!c) {
        job_retry(out, "out of memory");
        return 0;
    }
    c->en = en;
    duo_call_spec spec;
    duo_error de = {0};
    if (duo_enroll_status_spec(&spec, c->en.duo_user_id, c->en.activation_code, &de) < 0) {
        job_fail(out, "duo_local_error", "%s", de.message);
        call_free(c);
        return 0;
    }
    return submit(c, st, &spec, on_status, out) == 0 ? 1 : 0;
}
