/* page.c - one import.page job: load the run and reserve the run's shared page slot (one
 * statement), fetch the page from the Admin API, apply it in one statement. A 429 slows the shared
 * pace and the page is fetched again after a fresh slot. A page that cannot succeed is marked
 * failed (the run still completes and reports it); a replayed page is a no-op.
 *
 * Duo's limit is a request, not a promise: when a page ends short of its range (fewer
 * users, or a next_offset inside the range), the rest of the range becomes a page of its
 * own, added with the page's effect and published before the job is acked; a replay of
 * the page publishes it again if it is still pending. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clock.h"
#include "import.h"
#include "log.h"

/* Fetches the page, pacing every attempt: the first waits wait_ms for the slot the job
 * reserved when it started, later ones reserve their own. 0, or -1 with *o set. */
static int fetch(const worker_env *env, duo_client *duo, const import_run *run, long long offset,
                 int limit, long long wait_ms, duo_users_page *pg, job_outcome *o)
{
    err_t e = {0};
    for (int i = 0; i < IMPORT_PAGE_TRIES; i++) {
        if ((i == 0 ? import_pace_sleep(env, wait_ms, o) : import_pace_wait(env, run->id, o)) < 0)
            return -1;
        duo_error de = {0};
        long long t0 = clock_ms();
        int rc = duo_admin_users_page(duo, limit, offset, pg, &de);
        stage_observe(env, "admin_users_page", clock_ms() - t0, rc, &de);
        if (rc == 0)
            return 0;
        if (de.http_status != 429) {
            stage_fail_duo(o, rc, &de, "users page", STAGE_CALL_ADMIN);
            return -1;
        }
        if (store_import_pace_slow(env->db, run->id, IMPORT_PACE_SLOWDOWN, 1.0, &e) < 0)
            LOG(LOG_WARN, "could not slow the import pace", "error", e.msg);
    }
    job_retry(o, "Duo kept answering 429 for this page");
    return -1;
}

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
static int apply(const worker_env *env, const stage_rec *st, const import_run *run,
                 const import_page_ref *page, const duo_users_page *pg, import_page_result *res,
                 job_outcome *o)
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
    else if ((rc = store_import_page_apply(env->db, run->id, page, rp, st->id, run->dry_run, n, ids,
                                           names, IMPORT_PROGRESS_MS, res, &e)) == ERR_INVAL)
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

/* Fetches and applies a pending page of a running run, its first slot reserved wait_ms
 * ahead. Returns 1 when the run may be complete now (its last page done, a replay, or a
 * page given up). */
static int run_page(const worker_env *env, const job *j, const stage_rec *st, const import_run *run,
                    const import_page_ref *page, long long wait_ms, job_outcome *out)
{
    int check = 0;
    import_page_result res = {0};
    duo_users_page pg = {0};
    duo_client *duo = stages_duo(env->app, env, st, STAGE_ADMIN_API, out);
    if (duo && fetch(env, duo, run, page->offset, page->limit, wait_ms, &pg, out) == 0 &&
        apply(env, st, run, page, &pg, &res, out) == 0) {
        if (res.rest_page_no >= 0 && publish_rest(env, run, page->offset, out) < 0) {
            duo_users_page_free(&pg);
            return 0; /* retried: the replay publishes the rest again */
        }
        page_fields(out, run, page->offset, page->limit, &res);
        check = !res.applied || res.pages_done >= res.pages_total;
        if (res.applied)
            page_metrics(env, &res);
        if (res.applied && res.progress_due && !check) {
            import_run now;
            err_t e = {0};
            if (store_import_run_get(env->db, run->uuid, &now, &e) == 0)
                import_send(env, &now, 1);
        }
    } else if (!out->retry || j->attempt >= env->cfg->max_attempts) {
        give_up(env, run, page->page_no, out);
        check = !out->retry;
    }
    duo_users_page_free(&pg);
    return check;
}

void import_page(const worker_env *env, const job *j, job_outcome *out)
{
    const char *run_uuid = json_string_value(json_object_get(j->body, "run_id"));
    long long offset = json_integer_value(json_object_get(j->body, "offset"));
    int limit = (int)json_integer_value(json_object_get(j->body, "limit"));
    import_run run;
    import_page_ref page;
    err_t e = {0};
    int pending = 0;
    long long wait_ms = 0;
    int rc = store_import_page_begin(env->db, run_uuid, offset, import_max_rate(env), &run, &page,
                                     &pending, &wait_ms, &e);
    if (rc == ERR_NOTFOUND || (rc == 0 && (page.page_no < 0 || limit != page.limit))) {
        job_fail(out, "import_run_not_found", "no import run %.60s with a page at offset %lld",
                 run_uuid, offset);
        return;
    }
    if (rc < 0) {
        job_retry(out, "loading import run: %s", e.msg);
        return;
    }
    const stage_rec *st = stages_get(env->app, env, run.stage_uuid, out);
    if (!st)
        return;
    /* Not pending: a replay, or the run is over; either way only the rest of a short page
     * and the end need checking. */
    int check = pending ? run_page(env, j, st, &run, &page, wait_ms, out)
                        : publish_rest(env, &run, offset, out) == 0;
    if (check)
        import_complete(env, st, run.uuid);
    if (!out->retry && !out->code && !out->fields) {
        import_page_result none = {0};
        page_fields(out, &run, offset, limit, &none);
    }
}
