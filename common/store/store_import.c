/* store_import.c - import runs, pages and the shared pace (see store_import.h). Every
 * write that must be atomic is a single statement (data-modifying CTEs), so it needs no
 * explicit transaction and holds row locks only for the statement's duration. */
#include "store_import.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store_int.h"

#define RUN_COLS                                                                                   \
    "r.id, r.uuid::text, r.stage_id, s.uuid::text, r.job_id, coalesce(r.reply_to, ''),"            \
    " coalesce(r.correlation_id, ''), r.state, r.dry_run, r.page_size,"                            \
    " coalesce(r.total_objects, 0), r.pages_total, r.pages_done, r.created, r.existing,"           \
    " r.unknown_user, r.errors, r.final_sent_at IS NOT NULL,"                                      \
    " extract(epoch FROM coalesce(r.finished_at, clock_timestamp()) - r.started_at)::float8,"      \
    " coalesce(r.total_at_end, -1)"                                                                \
    " FROM import_run r JOIN duo_stage s ON s.id = r.stage_id "

#define RUN_NCOLS 20

/* Commits the statement's own transaction without waiting for the WAL flush (the setting
 * ends with the transaction). Safe for a page's writes: the runtime's commit of the page
 * job comes after and is synchronous, and it flushes the WAL up to itself, this commit
 * included, before the delivery is acked; a crash before that loses the page's writes
 * and its job together (redelivered, applied again). Saves one fsync wait per page. */
#define ASYNC_COMMIT "set_config('synchronous_commit', 'off', true)"

static const store_stmt RUN_BY_ID = {"import_run_by_id",
                                     "SELECT " RUN_COLS "WHERE r.id = $1::bigint"};
static const store_stmt RUN_BY_UUID = {"import_run_by_uuid",
                                       "SELECT " RUN_COLS "WHERE r.uuid = $1::uuid"};
static const store_stmt RUN_RUNNING = {"import_run_running",
                                       "SELECT " RUN_COLS
                                       "WHERE r.stage_id = $1::bigint AND r.state = 'running'"};

/* Run, its pages and its pace in one statement: all or nothing without a transaction. */
static const store_stmt RUN_START = {
    "import_run_start",
    "WITH r AS (INSERT INTO import_run (stage_id, job_id, reply_to, correlation_id, dry_run,"
    " page_size, total_objects, pages_total) VALUES ($1::bigint, $2, $3, $4, $5::boolean,"
    " $6::int, $7::bigint, (($7::bigint + $6::int - 1) / $6::int)::int)"
    " RETURNING id, pages_total, page_size),"
    " p AS (INSERT INTO import_page (run_id, page_no, \"offset\", \"limit\")"
    " SELECT r.id, g, g::bigint * r.page_size, r.page_size FROM r,"
    " generate_series(0, r.pages_total - 1) g),"
    " c AS (INSERT INTO import_pace (run_id, rate_per_min, next_slot_at, max_rate_per_min)"
    " SELECT r.id, $8::float8, clock_timestamp() + $9::int * interval '1 millisecond',"
    " $10::float8 FROM r)"
    " SELECT id FROM r"};

static const store_stmt PAGES_PENDING = {
    "import_pages_pending",
    "SELECT page_no, \"offset\", \"limit\" FROM import_page WHERE run_id = $1::bigint"
    " AND state = 'pending' AND page_no >= $2::int ORDER BY page_no LIMIT $3::bigint"};

static const store_stmt RUN_LOCK = {
    "import_run_lock", "SELECT id FROM import_run WHERE id = $1::bigint AND state = 'running'"
                       " FOR UPDATE"};

/* After RUN_LOCK in the same transaction, so max(page_no) is read under the lock. */
static const store_stmt PAGES_EXTEND = {
    "import_pages_extend",
    "WITH cur AS (SELECT r.id, r.page_size,"
    " coalesce((SELECT max(page_no) + 1 FROM import_page WHERE run_id = r.id), 0) AS next_no,"
    " coalesce((SELECT max(\"offset\" + \"limit\") FROM import_page WHERE run_id = r.id), 0)"
    " AS cover FROM import_run r WHERE r.id = $1::bigint AND r.state = 'running'"
    " AND $2::bigint > coalesce(r.total_objects, 0)),"
    " add AS (SELECT cur.id, cur.next_no + g AS page_no, cur.cover + g::bigint * cur.page_size"
    " AS off, cur.page_size AS lim FROM cur, generate_series(0,"
    " ((greatest($2::bigint - cur.cover, 0) + cur.page_size - 1) / cur.page_size)::int - 1) g),"
    " ins AS (INSERT INTO import_page (run_id, page_no, \"offset\", \"limit\")"
    " SELECT id, page_no, off, lim FROM add),"
    " up AS (UPDATE import_run r SET total_objects = $2::bigint,"
    " pages_total = r.pages_total + (SELECT count(*) FROM add)::int FROM cur"
    " WHERE r.id = cur.id)"
    " SELECT coalesce((SELECT next_no FROM cur), 0), (SELECT count(*) FROM add)"};

/* The run's rate ceiling: the worker's, or the run's own budget when lower. */
#define PACE_CAP "least($2::float8, coalesce(max_rate_per_min, $2::float8))"

/* Reserves max(next slot, now); a slowed rate recovers 0.2 % of the ceiling per page. */
static const store_stmt PACE_TAKE = {
    "import_pace_take",
    "WITH o AS (SELECT run_id, greatest(next_slot_at, clock_timestamp()) AS slot, rate_per_min,"
    " " PACE_CAP " AS cap FROM import_pace WHERE run_id = $1::bigint FOR UPDATE)"
    " UPDATE import_pace p SET next_slot_at = o.slot + make_interval(secs => 60.0 /"
    " o.rate_per_min), rate_per_min = least(o.cap, o.rate_per_min + o.cap * 0.002)"
    " FROM o WHERE p.run_id = o.run_id"
    " RETURNING greatest(0, extract(epoch FROM o.slot - clock_timestamp()) * 1000)::bigint"};

/* A page job's start: the run, whether the page is still pending, and (only then, and
 * only while the run is running) its page slot: the one a deferred page kept (slot_at,
 * taken and cleared here), else the next one reserved as PACE_TAKE does - one round
 * trip instead of three. A kept slot more than two slot intervals past is dropped for a
 * fresh one: a deferred page that came back late must not go out in a burst with the
 * pages whose slots are now (Duo counts pages per sliding minute). A run that is not
 * found returns no row. */
static const store_stmt PAGE_BEGIN = {
    "import_page_begin",
    "WITH run AS (SELECT " RUN_COLS "WHERE r.uuid = $1::uuid),"
    " g AS (SELECT g.page_no, g.\"limit\", g.state = 'pending' AND run.state = 'running' AS open,"
    " g.slot_at, g.slot_at >= clock_timestamp() - make_interval(secs => 120.0 /"
    " (SELECT rate_per_min FROM import_pace WHERE run_id = run.id)) AS timely"
    " FROM import_page g, run WHERE g.run_id = run.id AND g.\"offset\" = $2::bigint),"
    " pg AS (SELECT 1 FROM g WHERE g.open),"
    " kept AS (UPDATE import_page k SET slot_at = NULL FROM g, run WHERE k.run_id = run.id"
    " AND k.page_no = g.page_no AND g.open AND g.slot_at IS NOT NULL"
    " AND g.timely"
    " RETURNING greatest(0, extract(epoch FROM g.slot_at - clock_timestamp()) * 1000)::bigint"
    " AS w),"
    " late AS (UPDATE import_page k SET slot_at = NULL FROM g, run WHERE k.run_id = run.id"
    " AND k.page_no = g.page_no AND g.open AND NOT g.timely),"
    " o AS (SELECT p.run_id, greatest(p.next_slot_at, clock_timestamp()) AS slot,"
    " p.rate_per_min, least($3::float8, coalesce(p.max_rate_per_min, $3::float8)) AS cap"
    " FROM import_pace p, run WHERE p.run_id = run.id AND EXISTS (SELECT 1 FROM pg)"
    " AND (SELECT slot_at IS NULL OR NOT timely FROM g) FOR UPDATE OF p),"
    " t AS (UPDATE import_pace p SET next_slot_at = o.slot + make_interval(secs => 60.0 /"
    " o.rate_per_min), rate_per_min = least(o.cap, o.rate_per_min + o.cap * 0.002)"
    " FROM o WHERE p.run_id = o.run_id"
    " RETURNING greatest(0, extract(epoch FROM o.slot - clock_timestamp()) * 1000)::bigint AS w)"
    " SELECT run.*, EXISTS (SELECT 1 FROM pg),"
    " coalesce((SELECT w FROM kept), (SELECT w FROM t), 0),"
    " coalesce((SELECT page_no FROM g), -1), coalesce((SELECT \"limit\" FROM g), 0), " ASYNC_COMMIT
    " FROM run"};

/* Keeps the slot a deferred page reserved (wait_ms from now) until it comes back. */
static const store_stmt PAGE_KEEP_SLOT = {
    "import_page_keep_slot",
    "UPDATE import_page SET slot_at = clock_timestamp() + $3::bigint * interval '1 millisecond'"
    " WHERE run_id = $1::bigint AND page_no = $2::int AND state = 'pending'"};

static const store_stmt PACE_SLOW = {
    "import_pace_slow",
    "UPDATE import_pace SET rate_per_min = greatest(rate_per_min * $2::float8, $3::float8)"
    " WHERE run_id = $1::bigint"};

/* The page: devices, page row, run counters and the progress claim, in one statement.
 * pg locks the page while pending; a replay finds no pending row and every later CTE is
 * empty. existing = matched - created: a matched user not inserted conflicted with a
 * device already there (or came twice in the page). The conflict target names the one
 * unique index a device can collide on (id and uuid are generated): PostgreSQL then
 * pre-checks only that index per row instead of every unique index. ON CONFLICT stays,
 * although its speculative insertion costs a WAL record per device: a plain INSERT behind
 * NOT EXISTS (tried for issue 24) saved that record, but its anti-join's generic plan,
 * made while duo_device was nearly empty, scanned the whole table for every page as it
 * grew (25 ms a page instead of 10 at a million devices); the pre-check cannot. */
static const store_stmt PAGE_APPLY = {
    "import_page_apply",
    "WITH pg AS (SELECT page_no FROM import_page WHERE run_id = $1::bigint"
    " AND page_no = $2::int AND state = 'pending' FOR UPDATE),"
    " d AS (SELECT x.duo_user_id, u.id AS uid, CASE WHEN $4::boolean AND u.id IS NOT NULL"
    " THEN EXISTS (SELECT 1 FROM duo_device v WHERE v.stage_id = $3::bigint"
    " AND v.duo_user_id = x.duo_user_id) ELSE false END AS had"
    " FROM unnest($5::text[], $6::text[]) AS x(duo_user_id, username)"
    " LEFT JOIN app_user u ON u.username = x.username WHERE EXISTS (SELECT 1 FROM pg)),"
    " ins AS (INSERT INTO duo_device (user_id, stage_id, duo_user_id, duo_user_kind, name,"
    " confirmed) SELECT uid, $3::bigint, duo_user_id, 'user_id', '" IMPORT_DEVICE_NAME "', true"
    " FROM d WHERE uid IS NOT NULL AND NOT $4::boolean"
    " ON CONFLICT (stage_id, duo_user_id) DO NOTHING RETURNING 1),"
    " c AS (SELECT CASE WHEN $4::boolean THEN count(*) FILTER (WHERE uid IS NOT NULL AND NOT had)"
    " ELSE (SELECT count(*) FROM ins) END AS created,"
    " count(*) FILTER (WHERE uid IS NOT NULL) AS matched,"
    " count(*) FILTER (WHERE uid IS NULL) AS unknown FROM d),"
    " p AS (UPDATE import_page g SET state = 'done', created = c.created,"
    " existing = c.matched - c.created, unknown_user = c.unknown, done_at = now()"
    " FROM c, pg WHERE g.run_id = $1::bigint AND g.page_no = pg.page_no RETURNING 1),"
    " r AS (UPDATE import_run r SET pages_done = r.pages_done + 1,"
    " pages_total = r.pages_total + CASE WHEN $8::bigint IS NULL THEN 0 ELSE 1 END,"
    " created = r.created + c.created, existing = r.existing + c.matched - c.created,"
    " unknown_user = r.unknown_user + c.unknown,"
    " last_progress_at = CASE WHEN r.last_progress_at IS NULL OR r.last_progress_at <="
    " now() - $7::int * interval '1 millisecond' THEN now() ELSE r.last_progress_at END"
    " FROM c WHERE r.id = $1::bigint AND EXISTS (SELECT 1 FROM p)"
    " RETURNING r.pages_done, r.pages_total, r.last_progress_at = now() AS due),"
    /* The rest of a short page, numbered under the run's row lock taken just above: pages
     * are numbered densely 0 .. pages_total - 1. */
    " rem AS (INSERT INTO import_page (run_id, page_no, \"offset\", \"limit\", parent_offset)"
    " SELECT $1::bigint, r.pages_total - 1, $8::bigint, $9::int, $10::bigint FROM r"
    " WHERE $8::bigint IS NOT NULL RETURNING page_no)"
    " SELECT c.created, c.matched - c.created, c.unknown, EXISTS (SELECT 1 FROM pg),"
    " coalesce(r.pages_done, 0), coalesce(r.pages_total, 0), coalesce(r.due, false),"
    " coalesce((SELECT page_no FROM rem), -1), " ASYNC_COMMIT " FROM c LEFT JOIN r ON true"};

static const store_stmt PAGES_CHILDREN = {
    "import_pages_children",
    "SELECT page_no, \"offset\", \"limit\" FROM import_page WHERE run_id = $1::bigint"
    " AND parent_offset = $2::bigint AND state = 'pending' ORDER BY page_no"};

static const store_stmt PAGE_FAIL = {
    "import_page_fail",
    "WITH p AS (UPDATE import_page SET state = 'failed', error = $3, done_at = now()"
    " WHERE run_id = $1::bigint AND page_no = $2::int AND state = 'pending' RETURNING 1)"
    " UPDATE import_run SET pages_done = pages_done + 1, errors = errors + 1"
    " WHERE id = $1::bigint AND EXISTS (SELECT 1 FROM p)"};

static const store_stmt RUN_FINISH = {
    "import_run_finish",
    "UPDATE import_run SET state = 'done', finished_at = now(),"
    " total_at_end = CASE WHEN $2::bigint >= 0 THEN $2::bigint END WHERE id = $1::bigint"
    " AND state = 'running' AND pages_done >= pages_total"};

static const store_stmt RUN_FINAL_SENT = {
    "import_run_final_sent", "UPDATE import_run SET final_sent_at = now() WHERE id = $1::bigint"};

static const store_stmt PAGE_ERRORS = {
    "import_page_errors",
    "SELECT \"offset\", coalesce(error, '') FROM import_page WHERE run_id = $1::bigint"
    " AND state = 'failed' ORDER BY page_no LIMIT $2::bigint"};

static void run_read(const store_res *r, import_run *o)
{
    memset(o, 0, sizeof *o);
    o->id = store_col_i64(r, 0, 0);
    snprintf(o->uuid, sizeof o->uuid, "%s", store_res_get(r, 0, 1));
    o->stage_id = store_col_i64(r, 0, 2);
    snprintf(o->stage_uuid, sizeof o->stage_uuid, "%s", store_res_get(r, 0, 3));
    snprintf(o->job_id, sizeof o->job_id, "%s", store_res_get(r, 0, 4));
    snprintf(o->reply_to, sizeof o->reply_to, "%s", store_res_get(r, 0, 5));
    snprintf(o->correlation_id, sizeof o->correlation_id, "%s", store_res_get(r, 0, 6));
    snprintf(o->state, sizeof o->state, "%s", store_res_get(r, 0, 7));
    o->dry_run = store_col_bool(r, 0, 8);
    o->page_size = (int)store_col_i64(r, 0, 9);
    o->total_objects = store_col_i64(r, 0, 10);
    o->pages_total = (int)store_col_i64(r, 0, 11);
    o->pages_done = (int)store_col_i64(r, 0, 12);
    o->created = store_col_i64(r, 0, 13);
    o->existing = store_col_i64(r, 0, 14);
    o->unknown_user = store_col_i64(r, 0, 15);
    o->errors = (int)store_col_i64(r, 0, 16);
    o->final_sent = store_col_bool(r, 0, 17);
    o->elapsed_s = store_col_f64(r, 0, 18);
    o->total_at_end = store_col_i64(r, 0, 19);
}

/* Runs a one-parameter run query and reads its row. */
static int run_query(store *s, const store_stmt *st, const char *param, import_run *out, err_t *e)
{
    store_res *r = NULL;
    const char *v[] = {param};
    int rc = store_exec(s, st, 1, v, &r, e);
    if (rc == 0 && store_res_rows(r) == 0)
        rc = err_set(e, ERR_NOTFOUND, "no such import run");
    if (rc == 0)
        run_read(r, out);
    store_res_free(r);
    return rc;
}

static int run_by_id(store *s, int64_t id, import_run *out, err_t *e)
{
    char b[STORE_I64_LEN];
    store_i64_text(b, id);
    return run_query(s, &RUN_BY_ID, b, out, e);
}

int store_import_run_get(store *s, const char *run_uuid, import_run *out, err_t *e)
{
    if (!store_is_uuid(run_uuid))
        return err_set(e, ERR_NOTFOUND, "'%.60s' is not an import run id", run_uuid);
    return run_query(s, &RUN_BY_UUID, run_uuid, out, e);
}

int store_import_run_running(store *s, int64_t stage_id, import_run *out, err_t *e)
{
    char b[STORE_I64_LEN];
    store_i64_text(b, stage_id);
    return run_query(s, &RUN_RUNNING, b, out, e);
}

int store_import_run_start(store *s, const import_run_new *n, import_run *out, err_t *e)
{
    if (n->page_size < 1 || n->page_size > 300 || n->total_objects < 0 || n->rate_per_min <= 0)
        return err_set(e, ERR_INVAL, "bad import run parameters");
    char sid[STORE_I64_LEN], ps[STORE_I64_LEN], tot[STORE_I64_LEN], rate[32], first[STORE_I64_LEN],
        max[32];
    store_i64_text(sid, n->stage_id);
    store_i64_text(ps, n->page_size);
    store_i64_text(tot, n->total_objects);
    snprintf(rate, sizeof rate, "%.6f", n->rate_per_min);
    store_i64_text(first, n->first_slot_ms);
    snprintf(max, sizeof max, "%.6f", n->max_rate_per_min);
    const char *v[] = {sid,
                       n->job_id,
                       n->reply_to && *n->reply_to ? n->reply_to : NULL,
                       n->correlation_id,
                       n->dry_run ? "true" : "false",
                       ps,
                       tot,
                       rate,
                       first,
                       n->max_rate_per_min > 0 ? max : NULL};
    store_res *r = NULL;
    int rc = store_exec(s, &RUN_START, 10, v, &r, e);
    int64_t id = rc == 0 ? store_col_i64(r, 0, 0) : 0;
    store_res_free(r);
    if (rc == ERR_CONFLICT)
        return err_set(e, ERR_CONFLICT, "an import is already running for this stage");
    return rc < 0 ? rc : run_by_id(s, id, out, e);
}

/* Rows of (page_no, offset, limit) into a fresh array. */
static int read_refs(const store_res *r, import_page_ref **out, size_t *n, err_t *e)
{
    int rows = store_res_rows(r);
    if (rows > 0 && !(*out = calloc((size_t)rows, sizeof **out)))
        return err_set(e, ERR_NOMEM, "out of memory");
    for (int i = 0; i < rows; i++)
        (*out)[i] = (import_page_ref){.page_no = (int)store_col_i64(r, i, 0),
                                      .offset = store_col_i64(r, i, 1),
                                      .limit = (int)store_col_i64(r, i, 2)};
    *n = (size_t)rows;
    return 0;
}

/* Runs a page query (integer parameters v[0..nv)) into a fresh array of its rows. */
static int query_refs(store *s, const store_stmt *st, int nv, const int64_t *v,
                      import_page_ref **out, size_t *n, err_t *e)
{
    store_res *r = NULL;
    *out = NULL;
    *n = 0;
    int rc = store_exec_i64(s, st, nv, v, &r, e);
    if (rc == 0)
        rc = read_refs(r, out, n, e);
    store_res_free(r);
    return rc;
}

int store_import_pages_pending(store *s, int64_t run_id, int from_page, size_t max,
                               import_page_ref **out, size_t *n, err_t *e)
{
    const int64_t v[] = {run_id, from_page, (int64_t)max};
    return query_refs(s, &PAGES_PENDING, 3, v, out, n, e);
}

int store_import_pages_children(store *s, int64_t run_id, int64_t parent_offset,
                                import_page_ref **out, size_t *n, err_t *e)
{
    const int64_t v[] = {run_id, parent_offset};
    return query_refs(s, &PAGES_CHILDREN, 2, v, out, n, e);
}

int store_import_pages_extend(store *s, int64_t run_id, int64_t new_total, int *first_new,
                              int *added, err_t *e)
{
    const int64_t v[] = {run_id, new_total};
    store_res *r = NULL;
    *first_new = 0;
    *added = 0;
    int rc = store_begin(s, e);
    if (rc == 0)
        rc = store_exec_i64(s, &RUN_LOCK, 1, v, NULL, e);
    if (rc == 0)
        rc = store_exec_i64(s, &PAGES_EXTEND, 2, v, &r, e);
    if (rc == 0) {
        *first_new = (int)store_col_i64(r, 0, 0);
        *added = (int)store_col_i64(r, 0, 1);
        rc = store_commit(s, e);
    }
    store_res_free(r);
    if (rc < 0)
        store_rollback(s);
    return rc;
}

int store_import_pace_take(store *s, int64_t run_id, double max_rate, long long *wait_ms, err_t *e)
{
    char id[STORE_I64_LEN], rate[32];
    store_i64_text(id, run_id);
    snprintf(rate, sizeof rate, "%.6f", max_rate);
    const char *v[] = {id, rate};
    store_res *r = NULL;
    *wait_ms = 0;
    int rc = store_exec(s, &PACE_TAKE, 2, v, &r, e);
    if (rc == 0 && store_res_rows(r) == 0)
        rc = err_set(e, ERR_NOTFOUND, "import run %lld has no pace row", (long long)run_id);
    if (rc == 0)
        *wait_ms = store_col_i64(r, 0, 0);
    store_res_free(r);
    return rc;
}

int store_import_page_begin(store *s, const char *run_uuid, long long offset, double max_rate,
                            import_run *run, import_page_ref *page, int *pending,
                            long long *wait_ms, err_t *e)
{
    *pending = 0;
    *wait_ms = 0;
    *page = (import_page_ref){.page_no = -1, .offset = offset};
    if (!store_is_uuid(run_uuid))
        return err_set(e, ERR_NOTFOUND, "'%.60s' is not an import run id", run_uuid);
    char pg[STORE_I64_LEN], rate[32];
    store_i64_text(pg, offset);
    snprintf(rate, sizeof rate, "%.6f", max_rate);
    const char *v[] = {run_uuid, pg, rate};
    store_res *r = NULL;
    int rc = store_exec(s, &PAGE_BEGIN, 3, v, &r, e);
    if (rc == 0 && store_res_rows(r) == 0)
        rc = err_set(e, ERR_NOTFOUND, "no such import run");
    if (rc == 0) {
        run_read(r, run);
        *pending = store_col_bool(r, 0, RUN_NCOLS);
        *wait_ms = store_col_i64(r, 0, RUN_NCOLS + 1);
        page->page_no = (int)store_col_i64(r, 0, RUN_NCOLS + 2);
        page->limit = (int)store_col_i64(r, 0, RUN_NCOLS + 3);
    }
    store_res_free(r);
    return rc;
}

int store_import_page_keep_slot(store *s, int64_t run_id, int page_no, long long wait_ms, err_t *e)
{
    const int64_t v[] = {run_id, page_no, wait_ms};
    return store_exec_i64(s, &PAGE_KEEP_SLOT, 3, v, NULL, e);
}

int store_import_pace_slow(store *s, int64_t run_id, double factor, double floor, err_t *e)
{
    char id[STORE_I64_LEN], f[32], fl[32];
    store_i64_text(id, run_id);
    snprintf(f, sizeof f, "%.6f", factor);
    snprintf(fl, sizeof fl, "%.6f", floor);
    const char *v[] = {id, f, fl};
    return store_exec(s, &PACE_SLOW, 3, v, NULL, e);
}

/* 1 when every v[i] is 1..max bytes long. */
static int texts_ok(const char *const *v, size_t n, size_t max)
{
    for (size_t i = 0; i < n; i++)
        if (!store_text_ok(v[i], max))
            return 0;
    return 1;
}

static void page_result(const store_res *r, import_page_result *out)
{
    out->created = store_col_i64(r, 0, 0);
    out->existing = store_col_i64(r, 0, 1);
    out->unknown_user = store_col_i64(r, 0, 2);
    out->applied = store_col_bool(r, 0, 3);
    out->pages_done = (int)store_col_i64(r, 0, 4);
    out->pages_total = (int)store_col_i64(r, 0, 5);
    out->progress_due = store_col_bool(r, 0, 6);
    out->rest_page_no = (int)store_col_i64(r, 0, 7);
}

int store_import_page_apply(store *s, int64_t run_id, const import_page_ref *page,
                            const import_page_ref *rest, int64_t stage_id, int dry_run, size_t n,
                            const char *const *ids, const char *const *names, int progress_ms,
                            import_page_result *out, err_t *e)
{
    memset(out, 0, sizeof *out);
    if (!texts_ok(ids, n, 200) || !texts_ok(names, n, 150))
        return err_set(e, ERR_INVAL, "a Duo user id or username on this page is empty or too long");
    char *aid = store_text_array(ids, n), *anm = store_text_array(names, n);
    int rc = aid && anm ? 0 : err_set(e, ERR_NOMEM, "out of memory");
    char run[STORE_I64_LEN], pg[STORE_I64_LEN], st[STORE_I64_LEN], pms[STORE_I64_LEN],
        roff[STORE_I64_LEN], rlim[STORE_I64_LEN], poff[STORE_I64_LEN];
    store_i64_text(run, run_id);
    store_i64_text(pg, page->page_no);
    store_i64_text(st, stage_id);
    store_i64_text(pms, progress_ms);
    store_i64_text(poff, page->offset);
    if (rest) {
        store_i64_text(roff, rest->offset);
        store_i64_text(rlim, rest->limit);
    }
    const char *v[] = {run,
                       pg,
                       st,
                       dry_run ? "true" : "false",
                       aid,
                       anm,
                       pms,
                       rest ? roff : NULL,
                       rest ? rlim : NULL,
                       poff};
    store_res *r = NULL;
    if (rc == 0)
        rc = store_exec(s, &PAGE_APPLY, 10, v, &r, e);
    if (rc == 0)
        page_result(r, out);
    store_res_free(r);
    free(aid);
    free(anm);
    return rc;
}

int store_import_page_fail(store *s, int64_t run_id, int page_no, const char *message, int *applied,
                           err_t *e)
{
    char run[STORE_I64_LEN], pg[STORE_I64_LEN];
    store_i64_text(run, run_id);
    store_i64_text(pg, page_no);
    const char *v[] = {run, pg, message};
    store_res *r = NULL;
    int rc = store_exec(s, &PAGE_FAIL, 3, v, &r, e);
    *applied = rc == 0 && store_res_affected(r) > 0;
    store_res_free(r);
    return rc;
}

int store_import_run_finish(store *s, int64_t run_id, int64_t total_at_end, int *finished,
                            import_run *out, err_t *e)
{
    const int64_t v[] = {run_id, total_at_end};
    store_res *r = NULL;
    int rc = store_exec_i64(s, &RUN_FINISH, 2, v, &r, e);
    *finished = rc == 0 && store_res_affected(r) > 0;
    store_res_free(r);
    return rc < 0 ? rc : run_by_id(s, run_id, out, e);
}

int store_import_run_final_sent(store *s, int64_t run_id, err_t *e)
{
    return store_exec_i64(s, &RUN_FINAL_SENT, 1, &run_id, NULL, e);
}

int store_import_page_errors(store *s, int64_t run_id, size_t max, import_page_error_fn fn,
                             void *arg, err_t *e)
{
    const int64_t v[] = {run_id, (int64_t)max};
    store_res *r = NULL;
    int rc = store_exec_i64(s, &PAGE_ERRORS, 2, v, &r, e);
    for (int i = 0; rc == 0 && i < store_res_rows(r); i++)
        fn(store_col_i64(r, i, 0), store_res_get(r, i, 1), arg);
    store_res_free(r);
    return rc;
}
