/* store_breaker.c - the duo_host_breaker rows (store_breaker.h). */
#include "store_breaker.h"

#include <stdio.h>
#include <stdlib.h>

#include "store_int.h"

static const store_stmt BREAKER_UPSERT = {
    "breaker_upsert",
    "INSERT INTO duo_host_breaker (host, worker, state, open_ms) VALUES ($1, $2, $3, $4::integer)"
    " ON CONFLICT (host, worker) DO UPDATE SET state = EXCLUDED.state,"
    " open_ms = EXCLUDED.open_ms, updated_at = now()"};

static const store_stmt BREAKER_DELETE = {
    "breaker_delete", "DELETE FROM duo_host_breaker WHERE host = $1 AND worker = $2"};

static const store_stmt BREAKER_LIST = {
    "breaker_list",
    "SELECT host, worker, state, open_ms,"
    " floor(extract(epoch FROM now() - updated_at))::bigint FROM duo_host_breaker"
    " WHERE updated_at > now() - make_interval(secs => $1::integer) ORDER BY host, worker"};

int store_breaker_note(store *s, const char *host, const char *worker, const char *state,
                       long long open_ms, err_t *e)
{
    char ms[24];
    snprintf(ms, sizeof ms, "%lld", open_ms > 2000000000 ? 2000000000LL : open_ms);
    const char *p[4] = {host, worker, state, ms};
    if (!state)
        return store_send_alone(s, &BREAKER_DELETE, 2, p, e);
    return store_send_alone(s, &BREAKER_UPSERT, 4, p, e);
}

int store_breaker_list(store *s, int max_age_secs, breaker_view_fn fn, void *arg, err_t *e)
{
    char age[16];
    snprintf(age, sizeof age, "%d", max_age_secs);
    const char *p[1] = {age};
    store_res *r = NULL;
    int rc = store_exec(s, &BREAKER_LIST, 1, p, &r, e);
    for (int i = 0; rc == 0 && i < store_res_rows(r); i++) {
        breaker_view v = {.host = store_res_get(r, i, 0),
                          .worker = store_res_get(r, i, 1),
                          .state = store_res_get(r, i, 2),
                          .open_ms = store_col_i64(r, i, 3),
                          .age_secs = store_col_i64(r, i, 4)};
        rc = fn(&v, arg);
    }
    store_res_free(r);
    return rc;
}
