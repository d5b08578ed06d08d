/* test_store_import.c - store_import on a fresh database: a run starts with its pages
 * (and only one per stage), a page's batched upsert counts created / existing / unknown
 * users, a replayed page changes nothing, a dry run writes no device, pages applied
 * concurrently by several processes add up, failed pages still let the run finish
 * exactly once, the run grows when Duo's total grows, the shared pace spaces slots, a
 * page job's start reserves a slot only for a page still pending, a deferred page takes
 * back the slot it kept, and a run's own budget caps its pace. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "store_import.h"
#include "store_stage.h"
#include "testlib.h"

#define KEY_A "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="

typedef struct {
    char db[512];
    store *s;
    secret_keyring *k;
    int64_t stage_id;
    char stage_uuid[37];
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    if (!f || !(f->s = tl_migrated_store("stimport", f->db, sizeof f->db)))
        return -1;
    err_t e = {0};
    config c;
    memset(&c, 0, sizeof c);
    c.secret_key = KEY_A;
    f->k = secret_keyring_load(&c, &e);
    stage_fields in = {.name = "s1",
                       .api_hostname = "h",
                       .client_id = "c",
                       .client_secret = "x",
                       .sig_version = 5};
    if (!f->k || store_stage_create(f->s, f->k, &in, f->stage_uuid, &e) < 0)
        return -1;
    char id[32];
    char q[200];
    snprintf(q, sizeof q, "SELECT id FROM duo_stage WHERE uuid = '%s'", f->stage_uuid);
    if (tl_query1(f->db, q, id, sizeof id) < 0)
        return -1;
    f->stage_id = strtoll(id, NULL, 10);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    store_close(f->s);
    secret_keyring_free(f->k);
    tl_drop_db(f->db);
    free(f);
    return 0;
}

static void start(fixture *f, long long total, int dry_run, import_run *run)
{
    import_run_new n = {.stage_id = f->stage_id,
                        .job_id = "job-1",
                        .reply_to = "rq",
                        .correlation_id = "corr",
                        .dry_run = dry_run,
                        .page_size = 300,
                        .total_objects = total,
                        .rate_per_min = 6000,
                        .first_slot_ms = 0};
    err_t e = {0};
    assert_int_equal(store_import_run_start(f->s, &n, run, &e), 0);
}

static long long count(fixture *f, const char *sql)
{
    char v[64];
    assert_int_equal(tl_query1(f->db, sql, v, sizeof v), 0);
    return strtoll(v, NULL, 10);
}

static void load_users(fixture *f, int n, const char *prefix)
{
    char sql[300];
    snprintf(sql, sizeof sql,
             "INSERT INTO app_user (username) SELECT '%s' || g FROM generate_series(1, %d) g",
             prefix, n);
    assert_int_equal(tl_exec(f->db, sql), 0);
}

static void test_start_pages_and_one_per_stage(void **state)
{
    fixture *f = *state;
    import_run run, again;
    start(f, 650, 0, &run);
    assert_string_equal(run.state, "running");
    assert_int_equal(run.pages_total, 3);
    assert_string_equal(run.stage_uuid, f->stage_uuid);
    assert_string_equal(run.reply_to, "rq");
    import_page_ref *pages = NULL;
    size_t n = 0;
    err_t e = {0};
    assert_int_equal(store_import_pages_pending(f->s, run.id, 0, 100, &pages, &n, &e), 0);
    assert_int_equal(n, 3);
    assert_int_equal(pages[2].page_no, 2);
    assert_int_equal(pages[2].offset, 600);
    assert_int_equal(pages[2].limit, 300);
    free(pages);
    import_run_new dup = {.stage_id = f->stage_id,
                          .job_id = "job-2",
                          .page_size = 100,
                          .total_objects = 5,
                          .rate_per_min = 10,
                          .correlation_id = "c"};
    assert_int_equal(store_import_run_start(f->s, &dup, &again, &e), ERR_CONFLICT);
    assert_int_equal(count(f, "SELECT count(*) FROM import_run"), 1);
    assert_int_equal(store_import_run_running(f->s, f->stage_id, &again, &e), 0);
    assert_string_equal(again.uuid, run.uuid);
    assert_int_equal(store_import_run_get(f->s, "not-a-uuid", &again, &e), ERR_NOTFOUND);
}

/* Page page_no of a run of page_size-user pages (how store_import_run_start lays them out). */
static import_page_ref page_of(int page_no, int page_size)
{
    return (import_page_ref){
        .page_no = page_no, .offset = (int64_t)page_no * page_size, .limit = page_size};
}

static void test_page_counts_and_replay(void **state)
{
    fixture *f = *state;
    load_users(f, 4, "u");
    assert_int_equal(tl_exec(f->db, "INSERT INTO app_user (username) VALUES ('q\"uo\\te')"), 0);
    char sql[300];
    snprintf(sql, sizeof sql,
             "INSERT INTO duo_device (user_id, stage_id, duo_user_id, name) "
             "SELECT id, %lld, 'DU3', 'old' FROM app_user WHERE username = 'u3'",
             (long long)f->stage_id);
    assert_int_equal(tl_exec(f->db, sql), 0);
    import_run run;
    start(f, 6, 0, &run);
    import_page_ref P0 = page_of(0, run.page_size);
    const char *ids[] = {"DU1", "DU2", "DU3", "DUX", "DUQ", "DU4"};
    const char *names[] = {"u1", "u2", "u3", "ghost", "q\"uo\\te", "u4"};
    import_page_result r;
    err_t e = {0};
    assert_int_equal(store_import_page_apply(f->s, run.id, &P0, NULL, f->stage_id, 0, 6, ids, names,
                                             2000, &r, &e),
                     0);
    assert_int_equal(r.applied, 1);
    assert_int_equal(r.created, 4);
    assert_int_equal(r.existing, 1);
    assert_int_equal(r.unknown_user, 1);
    assert_int_equal(r.pages_done, 1);
    assert_int_equal(r.pages_total, 1);
    assert_int_equal(r.progress_due, 1);
    assert_int_equal(count(f, "SELECT count(*) FROM duo_device WHERE name = 'old'"), 1);
    assert_int_equal(count(f, "SELECT count(*) FROM duo_device WHERE name = '" IMPORT_DEVICE_NAME
                              "' AND confirmed AND duo_user_kind = 'user_id'"),
                     4);
    /* A replay (redelivered page job) changes nothing. */
    assert_int_equal(store_import_page_apply(f->s, run.id, &P0, NULL, f->stage_id, 0, 6, ids, names,
                                             2000, &r, &e),
                     0);
    assert_int_equal(r.applied, 0);
    import_run now;
    assert_int_equal(store_import_run_get(f->s, run.uuid, &now, &e), 0);
    assert_int_equal(now.pages_done, 1);
    assert_int_equal(now.created, 4);
    assert_int_equal(now.existing, 1);
    assert_int_equal(now.unknown_user, 1);
    assert_int_equal(count(f, "SELECT count(*) FROM duo_device"), 5);
    /* Bad input is refused before anything is written. */
    const char *empty[] = {""};
    assert_int_equal(store_import_page_apply(f->s, run.id, &P0, NULL, f->stage_id, 0, 1, empty,
                                             names, 2000, &r, &e),
                     ERR_INVAL);
}

/* A Duo user twice in one page (a page is Duo's answer: bad input is possible) makes one
 * device, counts the other as existing, and fails nothing. */
static void test_page_with_a_duplicate(void **state)
{
    fixture *f = *state;
    load_users(f, 2, "w");
    import_run run;
    start(f, 2, 0, &run);
    import_page_ref P0 = page_of(0, run.page_size);
    const char *ids[] = {"DUP", "DUP"};
    const char *names[] = {"w1", "w2"};
    import_page_result r;
    err_t e = {0};
    assert_int_equal(store_import_page_apply(f->s, run.id, &P0, NULL, f->stage_id, 0, 2, ids, names,
                                             2000, &r, &e),
                     0);
    assert_int_equal(r.created, 1);
    assert_int_equal(r.existing, 1);
    assert_int_equal(count(f, "SELECT count(*) FROM duo_device WHERE duo_user_id = 'DUP'"), 1);
}

static void test_dry_run_writes_nothing(void **state)
{
    fixture *f = *state;
    load_users(f, 3, "d");
    import_run run;
    start(f, 4, 1, &run);
    import_page_ref P0 = page_of(0, run.page_size);
    const char *ids[] = {"DUa", "DUb", "DUc", "DUd"};
    const char *names[] = {"d1", "d2", "d3", "nobody"};
    import_page_result r;
    err_t e = {0};
    assert_int_equal(store_import_page_apply(f->s, run.id, &P0, NULL, f->stage_id, 1, 4, ids, names,
                                             2000, &r, &e),
                     0);
    assert_int_equal(r.created, 3);
    assert_int_equal(r.existing, 0);
    assert_int_equal(r.unknown_user, 1);
    assert_int_equal(count(f, "SELECT count(*) FROM duo_device"), 0);
}

/* Child process: applies page p (users p*300+1 .. p*300+300). Exit status 0 = applied. */
static int child_apply(fixture *f, int64_t run_id, int p)
{
    err_t e = {0};
    store *s = store_open(f->db, &e);
    static char id_buf[300][16], name_buf[300][16];
    const char *ids[300], *names[300];
    for (int i = 0; i < 300; i++) {
        snprintf(id_buf[i], sizeof id_buf[i], "DUC%d", p * 300 + i + 1);
        snprintf(name_buf[i], sizeof name_buf[i], "c%d", p * 300 + i + 1);
        ids[i] = id_buf[i];
        names[i] = name_buf[i];
    }
    import_page_result r;
    import_page_ref pg = page_of(p, 300);
    int rc = s ? store_import_page_apply(s, run_id, &pg, NULL, f->stage_id, 0, 300, ids, names,
                                         2000, &r, &e)
               : -1;
    store_close(s);
    return rc == 0 && r.applied ? 0 : rc == 0 ? 3 : 1;
}

static void test_concurrent_pages(void **state)
{
    fixture *f = *state;
    load_users(f, 1500, "c"); /* pages 0..5 of 300; the last page's users are unknown */
    import_run run;
    start(f, 1800, 0, &run);
    pid_t pids[8];
    const int page_of[8] = {0, 1, 2, 3, 4, 5, 5, 2}; /* two pages delivered twice */
    for (int i = 0; i < 8; i++) {
        pids[i] = fork();
        assert_true(pids[i] >= 0);
        if (pids[i] == 0)
            _exit(child_apply(f, run.id, page_of[i]));
    }
    int applied = 0, replays = 0;
    for (int i = 0; i < 8; i++) {
        int st = 0;
        waitpid(pids[i], &st, 0);
        assert_true(WIFEXITED(st));
        applied += WEXITSTATUS(st) == 0;
        replays += WEXITSTATUS(st) == 3;
    }
    assert_int_equal(applied, 6);
    assert_int_equal(replays, 2);
    import_run now;
    err_t e = {0};
    assert_int_equal(store_import_run_get(f->s, run.uuid, &now, &e), 0);
    assert_int_equal(now.pages_done, 6);
    assert_int_equal(now.created, 1500);
    assert_int_equal(now.unknown_user, 300);
    assert_int_equal(now.existing, 0);
    assert_int_equal(count(f, "SELECT count(*) FROM duo_device"), 1500);
}

static void test_fail_finish_once_and_grow(void **state)
{
    fixture *f = *state;
    import_run run, now;
    start(f, 600, 0, &run);
    import_page_ref P0 = page_of(0, run.page_size);
    err_t e = {0};
    int done = 0, applied = 0;
    assert_int_equal(store_import_run_finish(f->s, run.id, 700, &done, &now, &e), 0);
    assert_int_equal(done, 0); /* pages pending */
    const char *ids[] = {"DU1"}, *names[] = {"nobody"};
    import_page_result r;
    assert_int_equal(store_import_page_apply(f->s, run.id, &P0, NULL, f->stage_id, 0, 1, ids, names,
                                             2000, &r, &e),
                     0);
    /* Duo grew from 600 to 700 users: one more page at offset 600. */
    int first = 0, added = 0;
    assert_int_equal(store_import_pages_extend(f->s, run.id, 700, &first, &added, &e), 0);
    assert_int_equal(first, 2);
    assert_int_equal(added, 1);
    assert_int_equal(store_import_pages_extend(f->s, run.id, 700, &first, &added, &e), 0);
    assert_int_equal(added, 0);
    import_page_ref *pages = NULL;
    size_t n = 0;
    assert_int_equal(store_import_pages_pending(f->s, run.id, 2, 10, &pages, &n, &e), 0);
    assert_int_equal(n, 1);
    assert_int_equal(pages[0].offset, 600);
    free(pages);
    assert_int_equal(store_import_page_fail(f->s, run.id, 1, "Duo said no", &applied, &e), 0);
    assert_int_equal(applied, 1);
    assert_int_equal(store_import_page_fail(f->s, run.id, 1, "again", &applied, &e), 0);
    assert_int_equal(applied, 0);
    assert_int_equal(store_import_page_fail(f->s, run.id, 2, "third", &applied, &e), 0);
    assert_int_equal(store_import_run_finish(f->s, run.id, 700, &done, &now, &e), 0);
    assert_int_equal(done, 1);
    assert_string_equal(now.state, "done");
    assert_int_equal(now.errors, 2);
    assert_int_equal(now.unknown_user, 1);
    assert_int_equal(now.total_objects, 700);
    assert_int_equal(store_import_run_finish(f->s, run.id, 700, &done, &now, &e), 0);
    assert_int_equal(done, 0);
    assert_int_equal(now.final_sent, 0);
    assert_int_equal(store_import_run_final_sent(f->s, run.id, &e), 0);
    assert_int_equal(store_import_run_get(f->s, run.uuid, &now, &e), 0);
    assert_int_equal(now.final_sent, 1);
    /* The stage is free for a new run. */
    start(f, 1, 0, &now);
}

static void test_pace_spaces_and_slows(void **state)
{
    fixture *f = *state;
    import_run run;
    start(f, 10, 0, &run);
    assert_int_equal(tl_exec(f->db, "UPDATE import_pace SET rate_per_min = 60"), 0);
    err_t e = {0};
    long long w1 = -1, w2 = -1, w3 = -1;
    assert_int_equal(store_import_pace_take(f->s, run.id, 60, &w1, &e), 0);
    assert_int_equal(store_import_pace_take(f->s, run.id, 60, &w2, &e), 0);
    assert_true(w1 < 500); /* the first slot is (about) now */
    assert_true(w2 > 500); /* the next one a second later at 60 pages/min */
    assert_int_equal(store_import_pace_slow(f->s, run.id, 0.5, 1, &e), 0);
    assert_int_equal(count(f, "SELECT rate_per_min::int FROM import_pace"), 30);
    assert_int_equal(store_import_pace_take(f->s, run.id, 60, &w3, &e), 0);
    assert_true(w3 > w2);
    assert_int_equal(store_import_pace_slow(f->s, run.id, 0.001, 1, &e), 0);
    assert_int_equal(count(f, "SELECT rate_per_min::int FROM import_pace"), 1);
}

/* Duo answered short of page 0 (next_offset 250 inside its range): the rest becomes page
 * 2 at [250, 300) in the same statement, once; a page job finds it by its offset. */
static void test_short_page_adds_the_rest(void **state)
{
    fixture *f = *state;
    load_users(f, 2, "u");
    import_run run, got;
    start(f, 600, 0, &run);
    import_page_ref P0 = page_of(0, run.page_size), ref;
    import_page_ref rest = {.page_no = -1, .offset = 250, .limit = 50};
    const char *ids[] = {"DU1"}, *names[] = {"u1"};
    import_page_result r;
    err_t e = {0};
    assert_int_equal(store_import_page_apply(f->s, run.id, &P0, &rest, f->stage_id, 0, 1, ids,
                                             names, 2000, &r, &e),
                     0);
    assert_int_equal(r.applied, 1);
    assert_int_equal(r.rest_page_no, 2);
    assert_int_equal(r.pages_total, 3);
    /* A replay adds nothing more. */
    assert_int_equal(store_import_page_apply(f->s, run.id, &P0, &rest, f->stage_id, 0, 1, ids,
                                             names, 2000, &r, &e),
                     0);
    assert_int_equal(r.applied, 0);
    assert_int_equal(r.rest_page_no, -1);
    assert_int_equal(count(f, "SELECT count(*) FROM import_page"), 3);
    import_page_ref *kids = NULL;
    size_t n = 0;
    assert_int_equal(store_import_pages_children(f->s, run.id, 0, &kids, &n, &e), 0);
    assert_int_equal(n, 1);
    assert_int_equal(kids[0].page_no, 2);
    assert_int_equal(kids[0].offset, 250);
    assert_int_equal(kids[0].limit, 50);
    free(kids);
    int pending = 0;
    long long w = 0;
    assert_int_equal(
        store_import_page_begin(f->s, run.uuid, 250, 6000, &got, &ref, &pending, &w, &e), 0);
    assert_int_equal(pending, 1);
    assert_int_equal(ref.page_no, 2);
    assert_int_equal(ref.limit, 50);
    assert_int_equal(got.pages_total, 3);
    /* Once applied, it is no longer a pending child of page 0. */
    assert_int_equal(store_import_page_apply(f->s, run.id, &ref, NULL, f->stage_id, 0, 0, ids,
                                             names, 2000, &r, &e),
                     0);
    assert_int_equal(r.applied, 1);
    assert_int_equal(store_import_pages_children(f->s, run.id, 0, &kids, &n, &e), 0);
    assert_int_equal(n, 0);
    free(kids);
}

/* A page job's start: run loaded, slot reserved only for a pending page of a running run. */
static void test_page_begin(void **state)
{
    fixture *f = *state;
    load_users(f, 2, "u");
    import_run run, got;
    start(f, 650, 0, &run);
    import_page_ref P1 = page_of(1, run.page_size), ref;
    assert_int_equal(tl_exec(f->db, "UPDATE import_pace SET rate_per_min = 60"), 0);
    err_t e = {0};
    int pending = -1;
    long long w1 = -1, w2 = -1, w3 = -1;
    assert_int_equal(
        store_import_page_begin(f->s, run.uuid, 300, 60, &got, &ref, &pending, &w1, &e), 0);
    assert_string_equal(got.uuid, run.uuid);
    assert_int_equal(got.pages_total, 3);
    assert_int_equal(pending, 1);
    assert_true(w1 < 500);
    assert_int_equal(
        store_import_page_begin(f->s, run.uuid, 600, 60, &got, &ref, &pending, &w2, &e), 0);
    assert_int_equal(pending, 1);
    assert_true(w2 > 500); /* the second slot a second after the first */
    /* Page 1 applied: a replay of its job is not pending and takes no slot. */
    const char *ids[] = {"DU1"}, *names[] = {"u1"};
    import_page_result r;
    assert_int_equal(store_import_page_apply(f->s, run.id, &P1, NULL, f->stage_id, 0, 1, ids, names,
                                             2000, &r, &e),
                     0);
    char before[64], after[64];
    assert_int_equal(tl_query1(f->db, "SELECT next_slot_at FROM import_pace", before, 64), 0);
    assert_int_equal(
        store_import_page_begin(f->s, run.uuid, 300, 60, &got, &ref, &pending, &w3, &e), 0);
    assert_int_equal(pending, 0);
    assert_int_equal(w3, 0);
    assert_int_equal(got.pages_done, 1);
    assert_int_equal(tl_query1(f->db, "SELECT next_slot_at FROM import_pace", after, 64), 0);
    assert_string_equal(before, after);
    /* An offset that is not a page's start, a finished run, unknown runs. */
    assert_int_equal(
        store_import_page_begin(f->s, run.uuid, 301, 60, &got, &ref, &pending, &w3, &e), 0);
    assert_int_equal(pending, 0);
    assert_int_equal(ref.page_no, -1);
    assert_int_equal(tl_exec(f->db, "UPDATE import_run SET state = 'done'"), 0);
    assert_int_equal(store_import_page_begin(f->s, run.uuid, 0, 60, &got, &ref, &pending, &w3, &e),
                     0);
    assert_int_equal(pending, 0);
    assert_string_equal(got.state, "done");
    assert_int_equal(store_import_page_begin(f->s, "00000000-0000-0000-0000-000000000000", 0, 60,
                                             &got, &ref, &pending, &w3, &e),
                     ERR_NOTFOUND);
    assert_int_equal(store_import_page_begin(f->s, "nope", 0, 60, &got, &ref, &pending, &w3, &e),
                     ERR_NOTFOUND);
}

/* A deferred page keeps its slot: the next begin of that page takes it (not a fresh
 * one, the run's next slot is untouched) and clears it, so a later begin reserves. */
static void test_deferred_page_keeps_its_slot(void **state)
{
    fixture *f = *state;
    import_run run, got;
    start(f, 650, 0, &run);
    assert_int_equal(tl_exec(f->db, "UPDATE import_pace SET rate_per_min = 6"), 0);
    err_t e = {0};
    import_page_ref ref;
    int pending = -1;
    long long w0 = -1, w1 = -1, w2 = -1;
    assert_int_equal(store_import_page_begin(f->s, run.uuid, 0, 6, &got, &ref, &pending, &w0, &e),
                     0);
    assert_int_equal(store_import_page_keep_slot(f->s, run.id, 0, 30000, &e), 0);
    char before[64], after[64];
    assert_int_equal(tl_query1(f->db, "SELECT next_slot_at FROM import_pace", before, 64), 0);
    assert_int_equal(store_import_page_begin(f->s, run.uuid, 0, 6, &got, &ref, &pending, &w1, &e),
                     0);
    assert_int_equal(pending, 1);
    assert_true(w1 > 20000 && w1 <= 30000); /* the kept slot, not the run's next (10 s) */
    assert_int_equal(tl_query1(f->db, "SELECT next_slot_at FROM import_pace", after, 64), 0);
    assert_string_equal(before, after);
    assert_int_equal(count(f, "SELECT count(*) FROM import_page WHERE slot_at IS NOT NULL"), 0);
    assert_int_equal(store_import_page_begin(f->s, run.uuid, 0, 6, &got, &ref, &pending, &w2, &e),
                     0);
    assert_true(w2 > 1000 && w2 <= 10000); /* taken once: now a fresh slot of the run */
    /* A kept slot long past (the deferred page came back late) is not used: the page
     * takes a fresh slot of the run instead of going out at once. */
    assert_int_equal(tl_exec(f->db, "UPDATE import_pace SET next_slot_at = clock_timestamp()"
                                    " + interval '20 seconds'"),
                     0);
    assert_int_equal(store_import_page_keep_slot(f->s, run.id, 0, -60000, &e), 0);
    assert_int_equal(store_import_page_begin(f->s, run.uuid, 0, 6, &got, &ref, &pending, &w2, &e),
                     0);
    assert_true(w2 > 15000 && w2 <= 20000);
    assert_int_equal(count(f, "SELECT count(*) FROM import_page WHERE slot_at IS NOT NULL"), 0);
    /* A page no longer pending keeps nothing. */
    assert_int_equal(tl_exec(f->db, "UPDATE import_page SET state = 'done' WHERE page_no = 1"), 0);
    assert_int_equal(store_import_page_keep_slot(f->s, run.id, 1, 30000, &e), 0);
    assert_int_equal(count(f, "SELECT count(*) FROM import_page WHERE slot_at IS NOT NULL"), 0);
}

/* A run with a budget of its own never recovers above it, whatever the workers allow. */
static void test_run_budget_caps_the_pace(void **state)
{
    fixture *f = *state;
    import_run_new n = {.stage_id = f->stage_id,
                        .job_id = "job-cap",
                        .correlation_id = "corr",
                        .page_size = 300,
                        .total_objects = 3000,
                        .rate_per_min = 57,
                        .max_rate_per_min = 57,
                        .first_slot_ms = 0};
    import_run run, got;
    err_t e = {0};
    assert_int_equal(store_import_run_start(f->s, &n, &run, &e), 0);
    assert_int_equal(count(f, "SELECT max_rate_per_min::int FROM import_pace"), 57);
    long long w = 0;
    for (int i = 0; i < 5; i++)
        assert_int_equal(store_import_pace_take(f->s, run.id, 6000, &w, &e), 0);
    assert_int_equal(count(f, "SELECT rate_per_min::int FROM import_pace"), 57);
    import_page_ref ref;
    int pending = 0;
    assert_int_equal(store_import_page_begin(f->s, run.uuid, 0, 6000, &got, &ref, &pending, &w, &e),
                     0);
    assert_int_equal(count(f, "SELECT rate_per_min::int FROM import_pace"), 57);
    /* Slowed by a 429, it recovers toward its own ceiling, not the workers'. */
    assert_int_equal(store_import_pace_slow(f->s, run.id, 0.5, 1, &e), 0);
    assert_int_equal(store_import_pace_take(f->s, run.id, 6000, &w, &e), 0);
    assert_true(count(f, "SELECT (rate_per_min * 1000)::int FROM import_pace") <= 28500 + 115);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_start_pages_and_one_per_stage, setup, teardown),
        cmocka_unit_test_setup_teardown(test_page_counts_and_replay, setup, teardown),
        cmocka_unit_test_setup_teardown(test_page_with_a_duplicate, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dry_run_writes_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_concurrent_pages, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fail_finish_once_and_grow, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pace_spaces_and_slows, setup, teardown),
        cmocka_unit_test_setup_teardown(test_short_page_adds_the_rest, setup, teardown),
        cmocka_unit_test_setup_teardown(test_page_begin, setup, teardown),
        cmocka_unit_test_setup_teardown(test_deferred_page_keeps_its_slot, setup, teardown),
        cmocka_unit_test_setup_teardown(test_run_budget_caps_the_pace, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
