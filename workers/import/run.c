/* run.c - what the import handlers share: the worker's state (stage cache, Duo engine),
 * the pace ceiling, page job fan-out, run messages (progress and final) and the end of
 * a run. Messages for a run are sent only after the rows they report were committed. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "import.h"
#include "log.h"
#include "msg.h"

#define PUBLISH_BATCH 500

int import_init(const worker_env *env, err_t *e)
{
    worker_metric_describe(env, "duo_import_pages_total", "counter",
                           "Import pages applied by this worker");
    worker_metric_describe(env, "duo_import_run_pages", "gauge",
                           "Pages done and total of the import run this worker last advanced");
    duo_async_opts ao = {.max_host_connections = IMPORT_FETCHES_IN_FLIGHT,
                         .buffer_size = 64 * 1024};
    import_app *app = calloc(1, sizeof *app);
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

void import_fini(const worker_env *env)
{
    import_app *app = env->app;
    if (!app)
        return;
    /* No callbacks: pending page jobs go back to the queue unacked. */
    duo_async_free(app->engine);
    while (app->pending) { /* no callbacks came: their jobs go back to the queue */
        import_pending *p = app->pending;
        import_pending_del(app, p);
        free(p);
    }
    stages_free(app->stages);
    free(app);
    worker_set_app(env->w, NULL);
}

void import_poll(const worker_env *env, int mq_fd, int timeout_ms)
{
    import_app *app = env->app;
    stages_engine_poll(app->stages, app->engine, env, mq_fd, timeout_ms);
}

void import_pending_add(import_app *app, import_pending *p)
{
    p->prev = NULL;
    p->next = app->pending;
    if (app->pending)
        app->pending->prev = p;
    app->pending = p;
}

void import_pending_del(import_app *app, import_pending *p)
{
    if (p->prev)
        p->prev->next = p->next;
    else
        app->pending = p->next;
    if (p->next)
        p->next->prev = p->prev;
}

stages *import_stages(const worker_env *env)
{
    return ((import_app *)env->app)->stages;
}

double import_max_rate(const worker_env *env)
{
    return env->cfg->import_pages_per_min * IMPORT_PACE_HEADROOM;
}

int import_publish_msg(const worker_env *env, const json_t *body, const mq_msg *props, err_t *e)
{
    void *buf = NULL;
    size_t len = 0;
    int rc = body ? msg_encode(body, &buf, &len, e) : err_set(e, ERR_NOMEM, "out of memory");
    mq_msg m = *props;
    m.body = buf;
    m.body_len = len;
    m.content_type = "application/msgpack";
    if (rc == 0)
        rc = worker_publish(env->w, &m, e);
    free(buf);
    return rc;
}

/* Publishes the page jobs (body {run_id, offset, limit}, id "<run uuid>.<page_no>") as one
 * batch: their confirms are awaited together (worker_publish_all). Before, each page
 * waited for its own confirm, and a run's fan-out of 500 pages kept the worker from its
 * Duo calls long enough for some to time out (bench/README, issue 24). */
int import_publish_pages(const worker_env *env, const import_run *run, const import_page_ref *pages,
                         size_t n, err_t *e)
{
    mq_msg *ms = n ? calloc(n, sizeof *ms) : NULL;
    char(*ids)[64] = n ? calloc(n, sizeof *ids) : NULL;
    void **bufs = n ? calloc(n, sizeof *bufs) : NULL;
    int rc = n && (!ms || !ids || !bufs) ? err_set(e, ERR_NOMEM, "out of memory") : 0;
    for (size_t i = 0; rc == 0 && i < n; i++) {
        json_t *b = json_pack("{s:s, s:I, s:i}", "run_id", run->uuid, "offset",
                              (json_int_t)pages[i].offset, "limit", pages[i].limit);
        size_t len = 0;
        rc = b ? msg_encode(b, &bufs[i], &len, e) : err_set(e, ERR_NOMEM, "out of memory");
        json_decref(b);
        snprintf(ids[i], sizeof ids[i], "%s.%d", run->uuid, pages[i].page_no);
        ms[i] = (mq_msg){.exchange = worker_jobs_exchange(env->w),
                         .routing_key = MQ_KIND_IMPORT,
                         .message_id = ids[i],
                         .type = "import.page",
                         .body = bufs[i],
                         .body_len = len,
                         .content_type = "application/msgpack"};
    }
    if (rc == 0)
        rc = worker_publish_all(env->w, ms, n, e);
    for (size_t i = 0; bufs && i < n; i++)
        free(bufs[i]);
    free(bufs);
    free(ids);
    free(ms);
    return rc;
}

int import_publish_pending(const worker_env *env, const import_run *run, int from, err_t *e)
{
    for (;;) {
        import_page_ref *pages = NULL;
        size_t n = 0;
        if (store_import_pages_pending(env->db, run->id, from, PUBLISH_BATCH, &pages, &n, e) < 0)
            return -1;
        int rc = import_publish_pages(env, run, pages, n, e);
        if (n > 0)
            from = pages[n - 1].page_no + 1;
        free(pages);
        if (rc < 0)
            return -1;
        if (n < PUBLISH_BATCH)
            return 0;
    }
}

json_t *import_run_fields(const import_run *run, int progress)
{
    json_t *counts = json_pack("{s:I, s:i, s:i, s:I, s:I, s:I, s:i, s:I}", "total_objects",
                               (json_int_t)run->total_objects, "pages_total", run->pages_total,
                               "pages_done", run->pages_done, "created", (json_int_t)run->created,
                               "existing", (json_int_t)run->existing, "unknown_user",
                               (json_int_t)run->unknown_user, "errors", run->errors, "seen",
                               (json_int_t)(run->created + run->existing + run->unknown_user));
    if (run->total_at_end >= 0)
        json_object_set_new(counts, "total_at_end", json_integer(run->total_at_end));
    return json_pack("{s:s, s:s, s:b, s:b, s:o}", "run_id", run->uuid, "state", run->state,
                     "progress", progress, "dry_run", run->dry_run, "counts", counts);
}

static void add_page_error(int64_t offset, const char *message, void *arg)
{
    json_array_append_new(arg,
                          json_pack("{s:I, s:s%}", "offset", (json_int_t)offset, "message", message,
                                    strlen(message) > 1000 ? (size_t)1000 : strlen(message)));
}

/* The whole message: the run's fields as an import.auto result of its original job. */
static json_t *run_message(const worker_env *env, const import_run *run, int progress)
{
    json_t *m = import_run_fields(run, progress);
    json_object_set_new(m, "job_id", json_string(run->job_id));
    json_object_set_new(m, "job_type", json_string("import.auto"));
    json_object_set_new(m, "status", json_string("ok"));
    if (!progress && run->errors > 0) {
        json_t *errs = json_array();
        err_t e = {0};
        if (store_import_page_errors(env->db, run->id, 100, add_page_error, errs, &e) < 0)
            LOG(LOG_WARN, "could not list page errors", "run_id", run->uuid, "error", e.msg);
        json_object_set_new(m, "page_errors", errs);
    }
    return m;
}

int import_send(const worker_env *env, const import_run *run, int progress)
{
    json_t *body = run_message(env, run, progress);
    err_t e = {0};
    char results[200], id[80];
    snprintf(results, sizeof results, "%s.results", env->cfg->mq_prefix);
    /* A reply's message_id names that reply (schemas/README.md "Several replies"): a copy
     * re-sent after a crash repeats it, a later progress message never does. */
    if (progress)
        snprintf(id, sizeof id, "%s.progress.%d", run->uuid, run->pages_done);
    else
        snprintf(id, sizeof id, "%s.final", run->uuid);
    int direct = run->reply_to[0] != '\0';
    mq_msg m = {.exchange = direct ? "" : results,
                .routing_key = direct ? run->reply_to : "import.auto.result",
                .message_id = id,
                .correlation_id = run->correlation_id,
                .type = "import.auto.result"};
    int rc = import_publish_msg(env, body, &m, &e);
    json_decref(body);
    if (rc < 0)
        LOG(LOG_WARN, "could not send import message", "run_id", run->uuid, "error", e.msg);
    return rc < 0 ? -1 : 0;
}

/* Adds and publishes pages for users Duo gained while the run paged (its total is now
 * total). 1 when it did. */
static int grow(const worker_env *env, const import_run *run, long long total)
{
    if (total <= run->total_objects)
        return 0;
    err_t e = {0};
    int first = 0, added = 0;
    if (store_import_pages_extend(env->db, run->id, total, &first, &added, &e) < 0) {
        LOG(LOG_WARN, "could not add pages for new Duo users", "error", e.msg);
        return 0;
    }
    if (added == 0)
        return 0;
    LOG(LOG_INFO, "Duo gained users during the run; paging them too", "run_id", run->uuid);
    if (import_publish_pending(env, run, first, &e) < 0)
        LOG(LOG_WARN, "could not publish the new pages", "run_id", run->uuid, "error", e.msg);
    return 1;
}

import_end_need import_end_due(const worker_env *env, const char *run_uuid, import_run *run)
{
    err_t e = {0};
    if (store_import_run_get(env->db, run_uuid, run, &e) < 0) {
        LOG(LOG_WARN, "could not load the import run", "run_id", run_uuid, "error", e.msg);
        return IMPORT_END_NONE;
    }
    if (strcmp(run->state, "running") == 0)
        return run->pages_done < run->pages_total ? IMPORT_END_NONE : IMPORT_END_TOTAL;
    return run->final_sent ? IMPORT_END_NONE : IMPORT_END_SEND;
}

void import_end(const worker_env *env, import_run *run, long long total)
{
    err_t e = {0};
    int finished = 0;
    /* Duo's total now: more users than at the start are paged too; the final reply
     * reports it beside what the run saw. */
    if (strcmp(run->state, "running") == 0 &&
        (grow(env, run, total) ||
         store_import_run_finish(env->db, run->id, total, &finished, run, &e) < 0 || !finished))
        return; /* grew, failed, or another worker finished it and sends the message */
    if (finished)
        LOG(LOG_INFO, "import run finished", "run_id", run->uuid);
    if (run->final_sent)
        return;
    if (import_send(env, run, 0) == 0 && store_import_run_final_sent(env->db, run->id, &e) < 0)
        LOG(LOG_WARN, "could not record the final message", "run_id", run->uuid, "error", e.msg);
}
