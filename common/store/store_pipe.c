/* store_pipe.c - the pipeline engine: commands sent in libpq pipeline mode without
 * waiting, and read back in order at the next synchronisation (pipe_drain). What lies
 * between two Syncs is one transaction (a segment): a deferred commit's Sync records its
 * outcome for store_take_committed(); statements sent ahead (store_send_ahead) are
 * answered once, and forgotten when their segment failed. The transactions built on it
 * are store_tx.c's; the statements, store.c's. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "store_priv.h"

/* ---- pipeline: statements sent without waiting, read at the next synchronisation ----
 * store_begin and store_send only queue their commands; the next store_exec, store_flush
 * or store_commit sends a Sync and reads every result in order, so a transaction of
 * BEGIN, effects, job record and COMMIT costs one round trip. */

int store_result_error(store *s, PGresult *r, const char *what, err_t *e)
{
    const char *state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
    char msg[400];
    snprintf(msg, sizeof msg, "%s", r ? PQresultErrorMessage(r) : PQerrorMessage(s->pg));
    msg[strcspn(msg, "\n")] = '\0';
    int code = (state && strcmp(state, "23505") == 0) ? ERR_CONFLICT : ERR_DB;
    if (state && strcmp(state, "25006") == 0) /* read_only_sql_transaction */
        s->read_only = 1;
    if (PQstatus(s->pg) != CONNECTION_OK) {
        s->in_tx = 0;
        s->nprepared = 0;
    }
    return err_set(e, code, "%s: %s", what, msg);
}

/* Makes room for one more element in *arr (of *cap elements of size sz). 0 or -1. */
int pipe_grow(void **arr, int n, int *cap, size_t sz)
{
    if (n < *cap)
        return 0;
    int c = *cap ? *cap * 2 : 16;
    void *p = realloc(*arr, (size_t)c * sz);
    if (!p)
        return -1;
    *arr = p;
    *cap = c;
    return 0;
}

int pipe_enter(store *s, err_t *e)
{
    if (s->piped)
        return 0;
    if (PQenterPipelineMode(s->pg) != 1)
        return store_result_error(s, NULL, "entering pipeline mode", e);
    s->piped = 1;
    return 0;
}

int pipe_push(store *s, sent_cmd c, err_t *e)
{
    if (pipe_grow((void **)&s->sent, s->nsent, &s->capsent, sizeof *s->sent) < 0)
        return err_set(e, ERR_NOMEM, "%s: out of memory queueing a statement", c.what);
    s->sent[s->nsent++] = c;
    return 0;
}

int pipe_note(store *s, const char *what, int prepare, err_t *e)
{
    return pipe_push(s, (sent_cmd){.what = what, .prepare = prepare, .ahead = -1}, e);
}

/* Records the outcome of a deferred commit (e: NULL or code 0 when it committed). */
static void note_done(store *s, void *tag, const err_t *e)
{
    if (pipe_grow((void **)&s->done, s->ndone, &s->capdone, sizeof *s->done) < 0) {
        /* No room to say it committed: the caller then never hears of it, and only a
         * redelivery finishes the job (its record makes that a re-sent reply). */
        LOG(LOG_ERROR, "out of memory recording a commit's outcome");
        return;
    }
    s->done[s->ndone] = (committed){.tag = tag};
    if (e && e->code)
        s->done[s->ndone].e = *e;
    s->ndone++;
}

/* Every deferred commit still unread is reported failed (the connection is gone). */
void pipe_fail_unread(store *s, int from, const char *why)
{
    for (int i = from; i < s->nsent; i++)
        if ((s->sent[i].sync || s->sent[i].mark) && s->sent[i].tag) {
            err_t e = {0};
            err_set(&e, ERR_DB, "COMMIT: outcome unknown: %s", why);
            note_done(s, s->sent[i].tag, &e);
        }
}

/* Reads what a read-ahead answered: kept when it succeeded, else forgotten. */
static int read_ahead(store *s, const sent_cmd *c, PGresult *r)
{
    ExecStatusType t = PQresultStatus(r);
    int ok = t == PGRES_TUPLES_OK || t == PGRES_COMMAND_OK;
    if (!ok)
        s->ahead_failed = 1;
    if (c->ahead >= 0 && c->ahead < s->nahead && !ok && !s->ahead[c->ahead].failed) {
        s->ahead[c->ahead].failed = 1;
        s->nahead_failed++;
    }
    if (c->ahead >= 0 && c->ahead < s->nahead && ok && !s->ahead[c->ahead].r)
        s->ahead[c->ahead].r = r;
    else
        PQclear(r);
    return ok;
}

/* Everything between two Syncs is one transaction: when any of it failed, what the reads
 * ahead in sent[from..to) answered was rolled back with it (a claim sent ahead is a
 * write) and is forgotten, so each is run again on its own when asked for. */
static void forget_segment(store *s, int from, int to)
{
    for (int i = from; i < to && i < s->nsent; i++) {
        int p = s->sent[i].ahead;
        if (p < 0 || p >= s->nahead)
            continue;
        PQclear(s->ahead[p].r);
        s->ahead[p].r = NULL;
        s->nahead_failed += !s->ahead[p].failed;
        s->ahead[p].failed = 1;
    }
}

/* Checks one queued command's result; the first failure is kept in *e. */
static int check_sent(store *s, const sent_cmd *c, PGresult *r, int rc, err_t *e)
{
    ExecStatusType t = PQresultStatus(r);
    if (t == PGRES_COMMAND_OK || t == PGRES_TUPLES_OK)
        return rc;
    if (c->prepare)
        store_forget_prepared(s, c->what);
    if (rc < 0 || t == PGRES_PIPELINE_ABORTED)
        return rc < 0 ? rc : err_set(e, ERR_DB, "%s: not run (pipeline aborted)", c->what);
    return store_result_error(s, r, c->what, e);
}

/* Resolves the members whose marks lie in sent[from..to), a segment that committed or
 * (failed) did not: done, or to be replayed alone. Returns 1 when there was one. */
static int resolve_marks(store *s, int from, int to, int failed)
{
    int any = 0;
    for (int i = from; i < to && i < s->nsent; i++) {
        if (!s->sent[i].mark)
            continue;
        any = 1;
        member *m = &s->members[s->sent[i].member];
        if (failed)
            m->replay = 1;
        else
            note_done(s, m->tag, NULL);
    }
    return any;
}

static void kept_free(kept_stmt *k)
{
    for (int i = 0; i < k->n; i++)
        free(k->v[i]);
    free(k->v);
    free(k->len);
    free(k->bin);
}

/* Frees every member's statements; the array stays for the next group. */
static void members_free(store *s)
{
    for (int m = 0; m < s->nmembers; m++) {
        for (int i = 0; i < s->members[m].nst; i++)
            kept_free(&s->members[m].st[i]);
        free(s->members[m].st);
    }
    s->nmembers = 0;
}

void pipe_forget_kept(store *s)
{
    pipe_forget_kept_only(s);
    members_free(s);
}

static int send_kept_one(store *s, const kept_stmt *k, err_t *e)
{
    int rc = store_ensure_prepared(s, k->st, k->n, e);
    if (rc == 0 && PQsendQueryPrepared(s->pg, k->st->name, k->n, (const char *const *)k->v, k->len,
                                       k->bin, 0) != 1)
        rc = store_result_error(s, NULL, k->st->name, e);
    return rc == 0 ? pipe_note(s, k->st->name, 0, e) : rc;
}

/* Sends each member of a failed group again, alone: its statements and a Sync of its
 * own that records its outcome under its tag. Out of pipeline mode on entry (after a
 * drain). Frees every member. Returns 1 when any was sent (a drain then reads them). */
static int replay_members(store *s)
{
    int sent = 0;
    for (int m = 0; m < s->nmembers; m++) {
        member *x = &s->members[m];
        if (!x->replay)
            continue;
        err_t e = {0};
        int rc = pipe_usable(s) ? pipe_enter(s, &e)
                                : err_set(&e, ERR_DB, "COMMIT: outcome unknown: connection lost");
        for (int i = 0; rc == 0 && i < x->nst; i++)
            rc = send_kept_one(s, &x->st[i], &e);
        if (rc == 0 && PQpipelineSync(s->pg) != 1)
            rc = store_result_error(s, NULL, "sending to PostgreSQL", &e);
        if (rc == 0)
            rc =
                pipe_push(s, (sent_cmd){.what = "Sync", .sync = 1, .ahead = -1, .tag = x->tag}, &e);
        if (rc < 0)
            note_done(s, x->tag, &e); /* not sent whole: it did not commit */
        sent |= rc == 0;
        if (rc == 0)
            s->seg = s->nsent;
    }
    members_free(s);
    return sent || s->nsent;
}

int pipe_group_open(const store *s)
{
    for (int i = s->seg; i < s->nsent; i++)
        if (s->sent[i].mark)
            return 1;
    return 0;
}

int pipe_part(store *s, err_t *e)
{
    if (!s->piped || s->nsent == s->seg)
        return 0;
    if (PQpipelineSync(s->pg) != 1)
        return store_result_error(s, NULL, "sending to PostgreSQL", e);
    int rc = pipe_push(s, (sent_cmd){.what = "Sync", .sync = 1, .ahead = -1}, e);
    if (rc == 0)
        s->seg = s->nsent;
    return rc;
}

int pipe_keep(store *s, const store_stmt *st, int n, const char *const *values, const int *lengths,
              const int *binary, err_t *e)
{
    if (pipe_grow((void **)&s->kept, s->nkept, &s->capkept, sizeof *s->kept) < 0)
        return err_set(e, ERR_NOMEM, "%s: out of memory keeping a statement", st->name);
    kept_stmt k = {.st = st, .n = n};
    k.v = calloc((size_t)(n ? n : 1), sizeof *k.v);
    k.len = calloc((size_t)(n ? n : 1), sizeof *k.len);
    k.bin = calloc((size_t)(n ? n : 1), sizeof *k.bin);
    int ok = k.v && k.len && k.bin;
    for (int i = 0; ok && i < n; i++) {
        k.bin[i] = binary ? binary[i] : 0;
        k.len[i] = lengths ? lengths[i] : 0;
        if (!values[i])
            continue;
        size_t l = k.bin[i] ? (size_t)k.len[i] : strlen(values[i]) + 1;
        k.v[i] = malloc(l ? l : 1);
        ok = k.v[i] != NULL;
        if (ok)
            memcpy(k.v[i], values[i], l);
    }
    if (!ok) {
        kept_free(&k);
        return err_set(e, ERR_NOMEM, "%s: out of memory keeping a statement", st->name);
    }
    s->kept[s->nkept++] = k;
    return 0;
}

int pipe_send_kept(store *s, err_t *e)
{
    int rc = s->nkept ? pipe_enter(s, e) : 0;
    for (int i = 0; rc == 0 && i < s->nkept; i++)
        rc = send_kept_one(s, &s->kept[i], e);
    for (int i = 0; i < s->nkept; i++)
        kept_free(&s->kept[i]);
    s->nkept = 0;
    return rc;
}

int pipe_commit_member(store *s, void *tag, err_t *e)
{
    int rc = pipe_enter(s, e);
    /* Reads ahead in progress are a transaction of their own: a Sync parts them. A group
     * in progress is joined. */
    if (rc == 0 && s->nsent > s->seg && !pipe_group_open(s))
        rc = pipe_part(s, e);
    if (rc == 0 &&
        pipe_grow((void **)&s->members, s->nmembers, &s->capmembers, sizeof *s->members) < 0)
        rc = err_set(e, ERR_NOMEM, "out of memory committing");
    for (int i = 0; rc == 0 && i < s->nkept; i++)
        rc = send_kept_one(s, &s->kept[i], e);
    if (rc == 0)
        rc = pipe_push(
            s,
            (sent_cmd){.what = "mark", .mark = 1, .member = s->nmembers, .ahead = -1, .tag = tag},
            e);
    if (rc < 0) { /* some of it may be queued: the group is failed, and this one too */
        for (int i = 0; i < s->nkept; i++)
            kept_free(&s->kept[i]);
        s->nkept = 0;
        return rc;
    }
    s->members[s->nmembers++] = (member){.tag = tag, .nst = s->nkept, .st = s->kept};
    s->kept = NULL; /* the member owns them now */
    s->nkept = s->capkept = 0;
    return 0;
}

/* Sends a Sync and reads every queued result; *keep (may be NULL) receives the result of
 * the last queued command (the caller's statement). Deferred commits met on the way
 * (store_commit_later) have their outcome recorded for store_take_committed(); only what
 * follows the last of them counts for the return value. A segment (what lies between
 * two Syncs: one transaction) whose Sync is not read back is failed, and so are the
 * answers of its reads ahead. Leaves pipeline mode. */
int pipe_drain(store *s, PGresult **keep, err_t *e)
{
    int rc = 0, i = 0, seg_first = 0, seg_failed = 0;
    err_t le = {0}; /* the current segment's first failure */
    s->ahead_failed = 0;
    if (keep)
        *keep = NULL;
    if (pipe_group_open(s)) /* its own segment: a Sync of its own, apart from the caller's */
        rc = pipe_part(s, &le);
    /* Queued work that ends with a Sync (a deferred commit) needs no other: one more
     * would cost another wake-up of the server, waited for, at one job in flight. */
    int own_sync = !(s->nsent && s->sent[s->nsent - 1].sync);
    if (own_sync ? PQpipelineSync(s->pg) != 1 : PQflush(s->pg) != 0)
        rc = store_result_error(s, NULL, "sending to PostgreSQL", &le);
    for (; i < s->nsent && PQstatus(s->pg) == CONNECTION_OK; i++) {
        if (s->sent[i].mark) /* not a command: resolved at its segment's Sync */
            continue;
        PGresult *r = PQgetResult(s->pg);
        if (!r) {
            rc = rc < 0 ? rc : store_result_error(s, NULL, s->sent[i].what, &le);
            break;
        }
        if (s->sent[i].sync) { /* ends a segment: a deferred commit's, or a part */
            if (PQresultStatus(r) != PGRES_PIPELINE_SYNC) { /* its commit failed */
                seg_failed = 1;
                rc = rc < 0 ? rc : store_result_error(s, r, "COMMIT", &le);
                /* The Sync's own result follows the error: read up to it, so that the
                 * next segment's results stay in step (two NULLs: there is none). */
                for (int nulls = 0; nulls < 2 && PQstatus(s->pg) == CONNECTION_OK;) {
                    PGresult *x = PQgetResult(s->pg);
                    int done = x && PQresultStatus(x) == PGRES_PIPELINE_SYNC;
                    nulls = x ? 0 : nulls + 1;
                    PQclear(x);
                    if (done)
                        break;
                }
            }
            PQclear(r);
            if (seg_failed)
                forget_segment(s, seg_first, i);
            int group = resolve_marks(s, seg_first, i, seg_failed);
            seg_first = i + 1;
            seg_failed = 0;
            if (group) { /* its failures are its members', replayed alone below */
                rc = 0;
                le = (err_t){0};
                s->ahead_failed = 0;
                continue;
            }
            if (s->sent[i].quiet) { /* store_send_alone: nobody waits for its outcome */
                if (rc < 0)
                    LOG(LOG_WARN, "a statement sent alone failed", "error", le.msg);
            } else if (!s->sent[i].tag) {
                continue; /* a first failure before it is still the caller's */
            } else
                note_done(s, s->sent[i].tag, rc < 0 ? &le : NULL);
            rc = 0;
            le = (err_t){0};
            s->ahead_failed = 0;
            continue;
        }
        if (s->sent[i].ahead >= 0 || s->sent[i].ahead == AHEAD_DROPPED)
            seg_failed |= !read_ahead(s, &s->sent[i], r);
        else if (s->sent[i].quiet)
            PQclear(r);
        else {
            ExecStatusType t = PQresultStatus(r); /* this command's own, not an earlier one's */
            seg_failed |= t != PGRES_COMMAND_OK && t != PGRES_TUPLES_OK;
            rc = check_sent(s, &s->sent[i], r, rc, &le);
            if (keep && i == s->nsent - 1 && rc == 0)
                *keep = r;
            else
                PQclear(r);
        }
        for (PGresult *more; (more = PQgetResult(s->pg));) /* ends the command's results */
            PQclear(more);
    }
    int synced = !own_sync && i == s->nsent; /* the last entry was a Sync, read back */
    for (PGresult *r; own_sync && PQstatus(s->pg) == CONNECTION_OK && (r = PQgetResult(s->pg));) {
        synced = PQresultStatus(r) == PGRES_PIPELINE_SYNC;
        if (!synced && rc == 0)
            rc = store_result_error(s, r, "COMMIT", &le);
        PQclear(r);
        if (synced)
            break;
    }
    if (!synced || seg_failed) { /* the last segment did not commit (or is unknown) */
        forget_segment(s, seg_first, s->nsent);
        if (rc == 0 && !synced)
            rc = store_result_error(s, NULL, "reading from PostgreSQL", &le);
    }
    pipe_fail_unread(s, i, "connection lost");
    s->nsent = 0;
    s->seg = 0;
    pipe_leave(s);
    int replays = replay_members(s);
    if (rc < 0 && keep && *keep) {
        PQclear(*keep);
        *keep = NULL;
    }
    /* A failed statement leaves an explicit transaction aborted: end it here, so the
     * caller's rollback (or the next statement) finds the connection usable. */
    if (rc < 0 && pipe_usable(s) && PQtransactionStatus(s->pg) == PQTRANS_INERROR) {
        PGresult *r = PQexec(s->pg, "ROLLBACK");
        PQclear(r);
        s->in_tx = 0;
    }
    if (PQstatus(s->pg) != CONNECTION_OK) {
        s->in_tx = 0;
        s->nprepared = 0;
    }
    if (replays) /* their outcomes are recorded under their tags */
        pipe_drain(s, NULL, NULL);
    if (rc < 0 && e)
        *e = le;
    return rc;
}

void pipe_leave(store *s)
{
    s->piped = 0;
    if (PQstatus(s->pg) != CONNECTION_OK || PQpipelineStatus(s->pg) == PQ_PIPELINE_OFF ||
        PQexitPipelineMode(s->pg) == 1)
        return;
    /* libpq still holds results nobody will read (a command it sent that sent[] does not
     * list: the drain stopped before them). They cannot be matched to their commands any
     * more, so the connection is given up: the caller's store_reconnect() makes a new one,
     * and what was unread was recorded as failed (pipe_fail_unread). */
    LOG(LOG_ERROR, "PostgreSQL connection left with unread results; it will be reconnected",
        "error", PQerrorMessage(s->pg));
    s->broken = 1;
}

void pipe_forget_kept_only(store *s)
{
    for (int i = 0; i < s->nkept; i++)
        kept_free(&s->kept[i]);
    s->nkept = 0;
}

int store_flush(store *s, err_t *e)
{
    int rc = pipe_send_begin(s, e);       /* a Sync must not commit an open transaction */
    if (rc == 0 && !s->in_tx && s->nkept) /* queued outside a transaction: one of their own */
        rc = pipe_send_kept(s, e);
    return rc < 0 ? rc : s->piped ? pipe_drain(s, NULL, e) : 0;
}

int store_take_committed(store *s, void **tag, err_t *e)
{
    if (s->done_at == s->ndone) {
        s->done_at = s->ndone = 0;
        return 0;
    }
    committed *c = &s->done[s->done_at++];
    *tag = c->tag;
    if (e)
        *e = c->e;
    return 1;
}

/* The parameters of a statement as one string (NULL and "" told apart), or NULL. */
static char *params_key(int n, const char *const *values)
{
    size_t len = 1;
    for (int i = 0; i < n; i++)
        len += (values[i] ? strlen(values[i]) : 0) + 2;
    char *k = malloc(len), *p = k;
    if (!k)
        return NULL;
    for (int i = 0; i < n; i++) {
        *p++ = values[i] ? '\x1f' : '\x1e';
        size_t l = values[i] ? strlen(values[i]) : 0;
        memcpy(p, values[i] ? values[i] : "", l);
        p += l;
    }
    *p = '\0';
    return k;
}

void store_ahead_clear(store *s)
{
    for (int i = 0; i < s->nahead; i++) {
        PQclear(s->ahead[i].r);
        free(s->ahead[i].key);
    }
    s->nahead = s->nahead_failed = 0;
    for (int i = 0; i < s->nsent; i++) /* still unread: their answers are dropped */
        if (s->sent[i].ahead >= 0)
            s->sent[i].ahead = AHEAD_DROPPED;
}

int store_ahead_failed(store *s, const store_stmt *st, int n, const char *const *values)
{
    char *key = s->nahead_failed ? params_key(n, values) : NULL; /* none failed: no search */
    int failed = 0;
    for (int i = 0; key && i < s->nahead && !failed; i++)
        failed = s->ahead[i].failed && strcmp(s->ahead[i].name, st->name) == 0 &&
                 strcmp(s->ahead[i].key, key) == 0;
    free(key);
    return failed;
}

void store_ahead_end(store *s)
{
    if (!s->piped || s->in_tx || s->nsent == s->seg || PQpipelineSync(s->pg) != 1)
        return;
    if (pipe_push(s, (sent_cmd){.what = "Sync", .sync = 1, .ahead = -1}, NULL) == 0)
        s->seg = s->nsent;
}

/* Serves a read-ahead answer for st with these parameters into *r (the caller owns it;
 * NULL when there is none: the caller runs the statement). One still unread is read
 * first, with everything queued before it: its own round trip then stands for the
 * statement's, and a failure of what was queued with it is the caller's. */
int pipe_take_ahead(store *s, const store_stmt *st, int n, const char *const *values, PGresult **r,
                    err_t *e)
{
    *r = NULL;
    if (!s->nahead)
        return 0;
    char *key = params_key(n, values);
    int unread = -1, rc = 0;
    for (int i = 0; key && i < s->nahead; i++)
        if (strcmp(s->ahead[i].name, st->name) == 0 && strcmp(s->ahead[i].key, key) == 0) {
            if (s->ahead[i].r) {
                *r = s->ahead[i].r;
                s->ahead[i].r = NULL;
                s->ahead[i].taken = 1;
                break;
            }
            if (!s->ahead[i].failed && !s->ahead[i].taken && unread < 0)
                unread = i;
        }
    if (!*r && unread >= 0 && s->piped) {
        rc = pipe_drain(s, NULL, e);
        if (rc == 0 && s->ahead[unread].r) {
            *r = s->ahead[unread].r;
            s->ahead[unread].r = NULL;
            s->ahead[unread].taken = 1;
        }
    }
    free(key);
    return rc;
}

int store_send_ahead(store *s, const store_stmt *st, int n, const char *const *values)
{
    int known = 0, only_reads = 1;
    for (int i = 0; i < s->nprepared && !known; i++)
        known = strcmp(s->prepared[i], st->name) == 0;
    if (!s->in_tx && pipe_group_open(s) && pipe_part(s, NULL) < 0) /* the group: apart */
        return 0;
    for (int i = s->seg; i < s->nsent; i++) /* deferred commits before s->seg are apart */
        only_reads &= s->sent[i].ahead >= 0;
    /* Only a statement already prepared, outside a transaction, with nothing but other
     * reads ahead queued: if it fails, the statement it travels with is aborted too and
     * simply run again on its own (store_exec_bin), so nothing else can be lost. */
    if (!known || s->in_tx || !only_reads ||
        pipe_grow((void **)&s->ahead, s->nahead, &s->capahead, sizeof *s->ahead) < 0 ||
        pipe_grow((void **)&s->sent, s->nsent, &s->capsent, sizeof *s->sent) < 0 ||
        pipe_enter(s, NULL) < 0)
        return 0;
    char *key = params_key(n, values);
    if (!key || PQsendQueryPrepared(s->pg, st->name, n, values, NULL, NULL, 0) != 1) {
        free(key);
        return 0;
    }
    s->ahead[s->nahead] = (ahead_entry){.name = st->name, .key = key};
    s->sent[s->nsent++] = (sent_cmd){.what = st->name, .ahead = s->nahead++};
    return 1;
}

int pipe_send_begin(store *s, err_t *e)
{
    if (!s->begin_pending)
        return 0;
    s->begin_pending = 0;
    int rc = pipe_enter(s, e);
    /* What is queued already (reads ahead, a group) is not this transaction's: BEGIN
     * would make it part of it. A Sync parts them. */
    if (rc == 0)
        rc = pipe_part(s, e);
    if (rc == 0 && PQsendQueryParams(s->pg, "BEGIN", 0, NULL, NULL, NULL, NULL, 0) != 1)
        rc = store_result_error(s, NULL, "BEGIN", e);
    if (rc == 0)
        rc = pipe_note(s, "BEGIN", 0, e);
    if (rc == 0) /* what it queued before it needed an answer */
        rc = pipe_send_kept(s, e);
    return rc;
}

void store_forget_prepared(store *s, const char *name)
{
    for (int i = 0; i < s->nprepared; i++)
        if (strcmp(s->prepared[i], name) == 0) {
            s->prepared[i] = s->prepared[--s->nprepared];
            return;
        }
}

int store_ensure_prepared(store *s, const store_stmt *st, int n, err_t *e)
{
    for (int i = 0; i < s->nprepared; i++)
        if (strcmp(s->prepared[i], st->name) == 0)
            return 0;
    if (s->piped) { /* queued too; forgotten again if it fails */
        if (PQsendPrepare(s->pg, st->name, st->sql, n, NULL) != 1)
            return store_result_error(s, NULL, st->name, e);
        int rc = pipe_note(s, st->name, 1, e);
        if (rc == 0 && s->nprepared < MAX_PREPARED)
            s->prepared[s->nprepared++] = st->name;
        return rc;
    }
    PGresult *r = PQprepare(s->pg, st->name, st->sql, n, NULL);
    int rc = PQresultStatus(r) == PGRES_COMMAND_OK ? 0 : store_result_error(s, r, st->name, e);
    PQclear(r);
    if (rc == 0 && s->nprepared < MAX_PREPARED)
        s->prepared[s->nprepared++] = st->name;
    return rc;
}

int pipe_usable(const store *s)
{
    return PQstatus(s->pg) == CONNECTION_OK && !s->broken;
}
