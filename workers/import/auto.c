/* auto.c - the import.auto job, asynchronous: preflight the stage's Admin API (licence,
 * permission, credentials) with a one-user page on the worker's engine, then, from its
 * callback, create the run with all its pages in one statement and fan the pages out as
 * import.page jobs. Nothing is written when the preflight fails; a stage has at most one
 * running run. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clock.h"
#include "import.h"
#include "log.h"

/* One answer for a second run on a stage: this error, with the running run's id as a
 * field of the error so a caller can follow that run. */
static void already_running(job_outcome *out, const import_run *run)
{
    job_fail(out, "import_already_running",
             "import run %s is already running for this stage "
             "(%d of %d pages done); follow it or wait for it to finish",
             run->uuid, run->pages_done, run->pages_total);
    out->error_fields = json_pack("{s:s}", "run_id", run->uuid);
}

/* One import.auto waiting for its preflight; owned by the app until its job is done. */
typedef struct auto_call {
    import_pending link; /* first: import_fini frees what is left */
    import_app *app;
    const worker_env *env;
    job_async *h;
    int64_t stage_id;
    char stage_name[201];
    long long call_ms;
} auto_call;

static void call_free(auto_call *c)
{
    import_pending_del(c->app, &c->link);
    free(c);
}

/* The preflight's answer (Duo's first user) proves the Admin API answers and gives the
 * total. 0, or -1 with *out set. */
static int preflight_answer(const auto_call *c, int rc, json_t *resp, json_t *meta,
                            const duo_error *err, long long *total, job_outcome *out)
{
    duo_error de = *err;
    duo_users_page pg;
    rc = duo_admin_users_page_answer(rc, resp, meta, &pg, &de);
    stage_observe(c->env, "admin_users_page", clock_ms() - c->call_ms, rc, &de);
    *total = pg.total_objects;
    duo_users_page_free(&pg);
    if (rc == 0 && *total < 0) {
        job_fail(out, "duo_bad_response", "Duo's user list carried no total_objects");
        return -1;
    }
    if (rc == 0)
        return 0;
    stage_fail_duo(out, rc, &de, "the Admin API preflight", STAGE_CALL_ADMIN);
    return -1;
}

/* The job's own reply: the run as it stands. */
static void reply_run(job_outcome *out, const import_run *run)
{
    out->fields = import_run_fields(run, strcmp(run->state, "running") == 0);
}

/* A run with no pages ends at once, and the job's own reply is its final reply (no
 * separate final message). 0, or -1 with *out set to a retry. */
static int finish_empty(const worker_env *env, import_run *run, job_outcome *out)
{
    err_t e = {0};
    int finished = 0;
    if (store_import_run_finish(env->db, run->id, run->total_objects, &finished, run, &e) < 0 ||
        store_import_run_final_sent(env->db, run->id, &e) < 0) {
        job_retry(out, "finishing an empty import run: %s", e.msg);
        return -1;
    }
    return 0;
}

/* Our own run already exists (a redelivery after a crash): publish what may be missing. */
static void resume(const worker_env *env, import_run *run, job_outcome *out)
{
    err_t e = {0};
    LOG(LOG_INFO, "import.auto redelivered; re-publishing pending pages", "run_id", run->uuid);
    if (run->pages_total == 0) {
        if (finish_empty(env, run, out) == 0)
            reply_run(out, run);
    } else if (import_publish_pending(env, run, 0, &e) < 0)
        job_retry(out, "publishing pages: %s", e.msg);
    else
        reply_run(out, run);
}

static void start(const worker_env *env, const job *j, int64_t stage_id, const char *stage_name,
                  long long total, job_outcome *out)
{
    json_t *ps = json_object_get(j->body, "page_size");
    /* A run's own budget (a tenant with a smaller Duo limit) caps its pace for good. */
    json_t *ppm = json_object_get(j->body, "pages_per_min");
    double own = ppm ? (double)json_integer_value(ppm) * IMPORT_PACE_HEADROOM : 0;
    double rate = own > 0 && own < import_max_rate(env) ? own : import_max_rate(env);
    import_run_new n = {.stage_id = stage_id,
                        .job_id = j->id,
                        .reply_to = j->reply_to,
                        .correlation_id = j->correlation_id ? j->correlation_id : j->id,
                        .dry_run = json_is_true(json_object_get(j->body, "dry_run")),
                        .page_size = ps ? (int)json_integer_value(ps) : env->cfg->import_page_size,
                        .total_objects = total,
                        .rate_per_min = rate,
                        .max_rate_per_min = own,
                        .first_slot_ms = (int)(60000.0 / rate)};
    import_run run;
    err_t e = {0};
    int rc = store_import_run_start(env->db, &n, &run, &e);
    if (rc == ERR_CONFLICT && store_import_run_running(env->db, stage_id, &run, &e) == 0) {
        already_running(out, &run);
        return;
    }
    if (rc < 0) {
        job_retry(out, "creating import run: %s", e.msg);
        return;
    }
    LOG(LOG_INFO, "import run started", "run_id", run.uuid, "stage", stage_name);
    if (run.pages_total == 0) {
        if (finish_empty(env, &run, out) < 0)
            return;
    } else if (import_publish_pending(env, &run, 0, &e) < 0) {
        job_retry(out, "publishing pages: %s", e.msg); /* the redelivery resumes */
        return;
    }
    reply_run(out, &run);
}

static void on_preflight(void *arg, int rc, json_t *resp, json_t *meta, const duo_error *err)
{
    auto_call *c = arg;
    job_outcome out = {0};
    long long total = 0;
    if (preflight_answer(c, rc, resp, meta, err, &total, &out) == 0)
        start(c->env, worker_job_of(c->h), c->stage_id, c->stage_name, total, &out);
    worker *w = c->env->w;
    job_async *h = c->h;
    call_free(c);
    worker_job_done(w, h, &out);
}

/* Submits the preflight (GET /admin/v1/users?limit=1&offset=0). 1, or 0 with *out set. */
static int preflight(const worker_env *env, const stage_rec *st, job_async *h, job_outcome *out)
{
    import_app *app = env->app;
    auto_call *c = calloc(1, sizeof *c);
    if (!c) {
        job_retry(out, "out of memory");
        return 0;
    }
    *c = (auto_call){.app = app, .env = env, .h = h, .stage_id = st->id};
    snprintf(c->stage_name, sizeof c->stage_name, "%s", st->name ? st->name : "");
    import_pending_add(app, &c->link);
    duo_call_spec spec;
    duo_error de = {0};
    duo_admin_users_page_spec(&spec, 1, 0, &de);
    c->call_ms = clock_ms();
    long long deadline =
        c->call_ms + env->cfg->duo_retry_budget_ms + env->cfg->duo_quick_timeout_ms;
    if (stages_submit(app->stages, env, app->engine, st, STAGE_ADMIN_API, &spec, deadline,
                      on_preflight, c, NULL, out) < 0) {
        call_free(c);
        return 0;
    }
    return 1;
}

int import_auto_start(const worker_env *env, const job *j, job_async *h, job_outcome *out)
{
    const stage_rec *st = stages_get(
        import_stages(env), env, json_string_value(json_object_get(j->body, "stage_uuid")), out);
    if (!st)
        return 0;
    if (!st->admin_integration_key || !st->admin_secret_key) {
        duo_client_opts unused;
        stages_duo_opts(import_stages(env), env, st, STAGE_ADMIN_API, &unused, out);
        return 0; /* admin_api_not_configured */
    }
    import_run run;
    err_t e = {0};
    int rc = store_import_run_running(env->db, st->id, &run, &e);
    if (rc == 0 && strcmp(run.job_id, j->id) == 0)
        resume(env, &run, out);
    else if (rc == 0)
        already_running(out, &run);
    else if (rc != ERR_NOTFOUND)
        job_retry(out, "looking for a running import: %s", e.msg);
    else
        return preflight(env, st, h, out);
    return 0;
}
