/* page.c - one import.page job, asynchronous: load the run and reserve the run's shared
 * page slot (one statement), fetch the page through the worker's Duo engine with its
 * first attempt deferred to that slot (a timer in the event loop, never a sleep), apply
 * it in one statement when it arrives. Meanwhile the worker takes other jobs, so the
 * next page's fetch is on the wire while this one is applied, and a page waiting for its
 * slot holds nothing but its delivery. A 429 slows the shared pace and the page is
 * fetched again after a fresh slot. A page that cannot succeed is marked failed (the run
 * still completes and reports it); a replayed page is a no-op.
 *
 * Duo's limit is a request, not a promise: when a page ends short of its range (fewer
 * users, or a next_offset inside the range), the rest of the range becomes a page of its
 * own, added with the page's effect and published before the job is acked; a replay of
 * the page publishes it again if it is still pending.
 *
 * Invariant: every started job ends in exactly one worker_job_done() (each request
 * carries a deadline, so its callback comes), and the end of a run (Duo's total, the
 * final message) is settled before the page job that saw it is acked. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "duo_users_scan.h"
#include "import.h"
#include "log.h"

/* The part of the page's range Duo did not list, from its next_offset: 1 when there is
 * one (*rest filled), 0 when Duo covered the range or the list ended. */
static int rest_of(const import_page_ref *page, const duo_users_page *pg, import_page_ref *rest)
{
    long long end = page->offset + page->limit, next = pg->next_offset;
    if (next < 0 || next >= end)
        return 0;
    if (next <= page->offset) { /* Duo pointed back: never loop on one offset */
        LOG(LOG_WARN, "Duo's next_offset does not advance; ignoring it", "offset", "page");
        return 0;
    }
    *rest = (import_page_ref){.page_no = -1, .offset = next, .limit = (int)(end - next)};
    return 1;
}

/* Applies the fetched users (and adds a page for the rest of the range when Duo
 * answered short of it). 0, or -1 with *o set. */
static int apply(const worker_env *env, const import_run *run, const import_page_ref *page,
                 const duo_users_page *pg, import_page_result *res, job_outcome *o)
{
    size_t n = json_array_size(pg->users);
    const char **ids = calloc(n ? n : 1, sizeof *ids), **names = calloc(n ? n : 1, sizeof *names);
    int rc = ids && names ? 0 : -1;
    for (size_t i = 0; rc == 0 && i < n; i++) {
        json_t *u = json_array_get(pg->users, i);
        ids[i] = json_string_value(json_object_get(u, "user_id"));
        names[i] = json_string_value(json_object_get(u, "username"));
        if (!ids[i] || !names[i])
            rc = -2;
    }
    import_page_ref rest;
    const import_page_ref *rp = rc == 0 && rest_of(page, pg, &rest) ? &rest : NULL;
    err_t e = {0};
    if (rc == -1)
        job_retry(o, "out of memory");
    else if (rc == -2)
        job_fail(o, "duo_bad_response", "a user on the page has no user_id or username");
    else if ((rc = store_import_page_apply(env->db, run->id, page, rp, run->stage_id, run->dry_run,
                                           n, ids, names, IMPORT_PROGRESS_MS, res, &e)) ==
             ERR_INVAL)
        job_fail(o, "duo_bad_response", "%s", e.msg);
    else if (rc < 0)
        job_retry(o, "applying page: %s", e.msg);
    free(ids);
    free(names);
    return rc < 0 ? -1 : 0;
}

/* Publishes the pages this page added for the rest of its range and that are still
 * pending (after applying it, and again on a replay: a crash may have come between). */
static int publish_rest(const worker_env *env, const import_run *run, long long offset,
                        job_outcome *o)
{
    import_page_ref *pages = NULL;
    size_t n = 0;
    err_t e = {0};
    int rc = store_import_pages_children(env->db, run->id, offset, &pages, &n, &e);
    if (rc == 0 && n > 0) {
        LOG(LOG_INFO, "Duo answered short of the page; paging the rest", "run_id", run->uuid);
        rc = import_publish_pages(env, run, pages, n, &e);
    }
    free(pages);
    if (rc < 0)
        job_retry(o, "publishing the rest of a short page: %s", e.msg);
    return rc;
}

/* A page that failed for good: recorded as failed so the run can still finish. */
static void give_up(const worker_env *env, const import_run *run, int page_no, job_outcome *o)
{
    err_t e = {0};
    int applied = 0;
    if (store_import_page_fail(env->db, run->id, page_no, o->message, &applied, &e) < 0) {
        job_retry(o, "recording failed page: %s", e.msg);
        return;
    }
    if (o->retry) {
        char why[sizeof o->message];
        memcpy(why, o->message, sizeof why);
        job_fail(o, "import_page_failed", "gave up on the page: %s", why);
    }
    o->dead_letter = 0;
    LOG(LOG_WARN, "import page failed", "run_id", run->uuid, "reason", o->message);
}

static void page_fields(job_outcome *out, const import_run *run, long long offset, int limit,
                        const import_page_result *res)
{
    out->fields = json_pack("{s:s, s:I, s:i, s:I, s:I, s:I}", "run_id", run->uuid, "offset",
                            (json_int_t)offset, "limit", limit, "created", (json_int_t)res->created,
                            "existing", (json_int_t)res->existing, "unknown_user",
                            (json_int_t)res->unknown_user);
}

/* Import progress for the dashboard: pages applied, and where this run stands. */
static void page_metrics(const worker_env *env, const import_page_result *res)
{
    worker_metric_add(env, "duo_import_pages_total", "", 1);
    worker_metric_set(env, "duo_import_run_pages", "state=\"done\"", res->pages_done);
    worker_metric_set(env, "duo_import_run_pages", "state=\"total\"", res->pages_total);
}

/* ---- the job's life ------------------------------------------------------------------ */

/* One page job in flight. Owned by this file from start until done(). */
typedef struct page_call {
    const worker_env *env; /* the runtime's, valid for the worker's life */
    job_async *h;
    int async;    /* start returned 1: the job ends in worker_job_done */
    int finished; /* decided before start returned: start hands out back */
    import_run run;
    import_page_ref page;
    import_run end_run; /* the run as loaded for its end (IMPORT_END_TOTAL) */
    int tries;          /* fetch attempts made */
    long long start_ms; /* when the current request may go out (latency metric) */
    job_outcome out;
} page_call;

/* Ends the job: through the runtime when it is pending, else back to start. */
static void done(page_call *c)
{
    if (!c->out.retry && !c->out.code && !c->out.fields) {
        import_page_result none = {0};
        page_fields(&c->out, &c->run, c->page.offset, c->page.limit, &none);
    }
    if (!c->async) {
        c->finished = 1;
        return;
    }
    worker *w = c->env->w;
    job_async *h = c->h;
    job_outcome out = c->out;
    free(c);
    worker_job_done(w, h, &out);
}

/* Submits GET /admin/v1/users?limit&offset for the call's run, its first attempt
 * deferred wait_ms. 0, or -1 with *o set. */
static int submit(page_call *c, int limit, long long offset, long long wait_ms, duo_async_cb cb,
                  job_outcome *o)
{
    const worker_env *env = c->env;
    import_app *app = env->app;
    duo_client_opts opts;
    const stage_rec *st = stages_get(app->stages, env, c->run.stage_uuid, o);
    if (!st || stages_duo_opts(app->stages, env, st, STAGE_ADMIN_API, &opts, o) < 0)
        return -1;
    char lim[16], off[32];
    snprintf(lim, sizeof lim, "%d", limit);
    snprintf(off, sizeof off, "%lld", offset);
    duo_param p[] = {{"limit", lim}, {"offset", off}};
    c->start_ms = clock_ms() + (wait_ms > 0 ? wait_ms : 0);
    duo_areq *r = NULL;
    err_t e = {0};
    if (duo_async_submit(app->engine, &opts, "GET", "/admin/v1/users", p, 2,
                         c->start_ms + IMPORT_FETCH_DEADLINE_MS, cb, c, &r, &e) < 0) {
        job_retry(o, "starting a users page request: %s", e.msg);
        return -1;
    }
    duo_async_set_parser(r, duo_users_scan); /* a page: only what the import keeps */
    if (wait_ms > 0)
        duo_async_defer(r, c->start_ms);
    return 0;
}

static long long meta_int(const json_t *meta, const char *k)
{
    const json_t *v = json_object_get(meta, k);
    return json_is_integer(v) ? json_integer_value(v) : -1;
}

/* Duo's total from the one-user page asked at the end of a run: the run ends with it. */
static void on_total(void *arg, int rc, json_t *resp, json_t *meta, const duo_error *de)
{
    (void)resp;
    page_call *c = arg;
    stage_observe(c->env, "admin_users_page", clock_ms() - c->start_ms, rc, de);
    if (rc < 0)
        LOG(LOG_WARN, "could not re-check the Duo user total", "error", de->message);
    import_end(c->env, &c->end_run, rc == 0 ? meta_int(meta, "total_objects") : -1);
    done(c);
}

/* A page of the run was settled: end the run when that was its last page. */
static void end_check(page_call *c)
{
    import_end_need need = import_end_due(c->env, c->run.uuid, &c->end_run);
    if (need == IMPORT_END_SEND)
        import_end(c->env, &c->end_run, -1);
    if (need != IMPORT_END_TOTAL) {
        done(c);
        return;
    }
    /* Duo's total is asked with a one-user page, paced like any page. */
    err_t e = {0};
    long long wait = 0;
    job_outcome why = {0}; /* the page's own outcome stands whatever happens here */
    if (store_import_pace_take(c->env->db, c->run.id, import_max_rate(c->env), &wait, &e) < 0 ||
        submit(c, 1, 0, wait, on_total, &why) < 0) {
        LOG(LOG_WARN, "could not ask Duo's user total", "run_id", c->run.uuid, "error",
            e.code ? e.msg : why.message);
        json_decref(why.error_fields);
        import_end(c->env, &c->end_run, -1);
        done(c);
    }
}

/* The page could not be fetched or applied: retry later, or give up on it for good. */
static void failed(page_call *c)
{
    if (!c->out.retry || worker_job_of(c->h)->attempt >= c->env->cfg->max_attempts) {
        give_up(c->env, &c->run, c->page.page_no, &c->out);
        if (!c->out.retry) {
            end_check(c);
            return;
        }
    }
    done(c);
}

/* The page arrived: apply it, publish the rest of a short page, report progress. */
static void fetched(page_call *c, json_t *users, const json_t *meta)
{
    const worker_env *env = c->env;
    import_page_result res = {0};
    duo_users_page pg = {.users = users,
                         .total_objects = meta_int(meta, "total_objects"),
                         .next_offset = meta_int(meta, "next_offset")};
    if (apply(env, &c->run, &c->page, &pg, &res, &c->out) < 0) {
        failed(c);
        return;
    }
    if (res.rest_page_no >= 0 && publish_rest(env, &c->run, c->page.offset, &c->out) < 0) {
        done(c); /* retried: the replay publishes the rest again */
        return;
    }
    page_fields(&c->out, &c->run, c->page.offset, c->page.limit, &res);
    int last = !res.applied || res.pages_done >= res.pages_total;
    if (res.applied)
        page_metrics(env, &res);
    if (res.applied && res.progress_due && !last) {
        import_run now;
        err_t e = {0};
        if (store_import_run_get(env->db, c->run.uuid, &now, &e) == 0)
            import_send(env, &now, 1);
    }
    if (last)
        end_check(c);
    else
        done(c);
}

/* Asks for the page again after a 429, at a fresh slot of the (now slower) shared pace. */
static int refetch(page_call *c, duo_async_cb cb)
{
    err_t e = {0};
    long long wait = 0;
    if (store_import_pace_slow(c->env->db, c->run.id, IMPORT_PACE_SLOWDOWN, 1.0, &e) < 0)
        LOG(LOG_WARN, "could not slow the import pace", "error", e.msg);
    if (store_import_pace_take(c->env->db, c->run.id, import_max_rate(c->env), &wait, &e) < 0) {
        job_retry(&c->out, "reserving a page slot: %s", e.msg);
        return -1;
    }
    return submit(c, c->page.limit, c->page.offset, wait, cb, &c->out);
}

static void on_page(void *arg, int rc, json_t *resp, json_t *meta, const duo_error *de)
{
    page_call *c = arg;
    stage_observe(c->env, "admin_users_page", clock_ms() - c->start_ms, rc, de);
    if (rc == 0) {
        fetched(c, resp, meta);
        return;
    }
    if (de->http_status != 429)
        stage_fail_duo(&c->out, rc, de, "users page", STAGE_CALL_ADMIN);
    else if (++c->tries >= IMPORT_PAGE_TRIES)
        job_retry(&c->out, "Duo kept answering 429 for this page");
    else if (refetch(c, on_page) == 0)
        return;
    failed(c);
}

/* ---- deferring a page whose slot is far ---------------------------------------------- */

/* The longest retry delay (RETRY_DELAYS_MS) not beyond wait_ms: the page is deferred
 * through that delay queue. 0 when wait_ms is shorter than every delay: the page waits
 * on a timer in this worker instead (at most the shortest delay, 5 s by default). */
static int defer_ms(const worker_env *env, long long wait_ms)
{
    int delays[3];
    err_t e = {0};
    if (config_retry_delays(env->cfg, delays, &e) < 0)
        return 0;
    int best = 0;
    for (int i = 0; i < 3; i++)
        if (delays[i] > best && delays[i] <= wait_ms)
            best = delays[i];
    return best;
}

/* The id of the page job's deferred copy: "<page job id>~<n+1>" after "~<n>". The same
 * for a redelivered original, so a copy published twice runs once (its claim). */
static void copy_id(const char *id, char *out, size_t n)
{
    const char *t = strrchr(id, '~');
    char *end = NULL;
    long k = t ? strtol(t + 1, &end, 10) : 0;
    if (t && end && *end == '\0' && end != t + 1 && k >= 0 && k < 1000000)
        snprintf(out, n, "%.*s~%ld", (int)(t - id), id, k + 1);
    else
        snprintf(out, n, "%s~1", id);
}

/* Publishes the job again (confirmed) into the delay queue of `ms`, as a new job id. */
static int publish_copy(const worker_env *env, const job *j, int ms, const char *id, err_t *e)
{
    char sfx[32], queue[256];
    mq_ttl_suffix(ms, sfx, sizeof sfx);
    snprintf(queue, sizeof queue, "%s.%s.retry.%s", env->cfg->mq_prefix, MQ_KIND_IMPORT, sfx);
    mq_msg m = {.exchange = "",
                .routing_key = queue,
                .message_id = id,
                .correlation_id = j->correlation_id,
                .type = "import.page"};
    return import_publish_msg(env, j->body, &m, e);
}

/* Defers the page: keeps its slot on the page row, publishes the job again into a delay
 * queue, and answers this delivery (the copy carries the page on). A crash in between
 * loses nothing: the original is redelivered and defers again (the same copy id). */
static void defer(page_call *c, const job *j, long long wait_ms, int ms)
{
    const worker_env *env = c->env;
    char id[300];
    err_t e = {0};
    copy_id(j->id, id, sizeof id);
    if (strlen(id) > 255) {
        job_fail(&c->out, "import_page_failed", "page job id too long to defer");
        return;
    }
    if (store_import_page_keep_slot(env->db, c->run.id, c->page.page_no, wait_ms, &e) < 0 ||
        publish_copy(env, j, ms, id, &e) < 0) {
        job_retry(&c->out, "deferring the page to its slot: %s", e.msg);
        return;
    }
    import_page_result none = {0};
    page_fields(&c->out, &c->run, c->page.offset, c->page.limit, &none);
    json_object_set_new(c->out.fields, "deferred_as", json_string(id));
    json_object_set_new(c->out.fields, "deferred_ms", json_integer(ms));
}

/* Loads the run and the page, reserving the page's slot when it is pending. 0 with
 * c->run / c->page set and *pending, *wait_ms; -1 with *out decided. */
static int begin(const worker_env *env, const job *j, page_call *c, int *pending,
                 long long *wait_ms, job_outcome *out)
{
    const char *run_uuid = json_string_value(json_object_get(j->body, "run_id"));
    long long offset = json_integer_value(json_object_get(j->body, "offset"));
    int limit = (int)json_integer_value(json_object_get(j->body, "limit"));
    err_t e = {0};
    int rc = store_import_page_begin(env->db, run_uuid, offset, import_max_rate(env), &c->run,
                                     &c->page, pending, wait_ms, &e);
    if (rc == ERR_NOTFOUND || (rc == 0 && (c->page.page_no < 0 || limit != c->page.limit))) {
        job_fail(out, "import_run_not_found", "no import run %.60s with a page at offset %lld",
                 run_uuid, offset);
        return -1;
    }
    if (rc < 0) {
        job_retry(out, "loading import run: %s", e.msg);
        return -1;
    }
    return stages_get(import_stages(env), env, c->run.stage_uuid, out) ? 0 : -1;
}

int import_page_start(const worker_env *env, const job *j, job_async *h, job_outcome *out)
{
    page_call *c = calloc(1, sizeof *c);
    if (!c) {
        job_retry(out, "out of memory");
        return 0;
    }
    *c = (page_call){.env = env, .h = h};
    int pending = 0, ms = 0;
    long long wait_ms = 0;
    if (begin(env, j, c, &pending, &wait_ms, out) < 0) {
        free(c);
        return 0;
    }
    if (!pending) {
        /* A replay, or the run is over: only the rest of a short page and the end need
         * checking. */
        if (publish_rest(env, &c->run, c->page.offset, &c->out) == 0)
            end_check(c);
        else
            done(c);
    } else if ((ms = defer_ms(env, wait_ms)) > 0) {
        defer(c, j, wait_ms, ms);
        done(c);
    } else if (submit(c, c->page.limit, c->page.offset, wait_ms, on_page, &c->out) < 0) {
        failed(c);
    }
    if (c->finished) {
        *out = c->out;
        free(c);
        return 0;
    }
    c->async = 1;
    return 1;
}
