/* store_user.c - local users (store_user.h): the workers' lookup by username and the
 * operator's upsert, list and batch insert.
 *
 * Invariant: usernames are checked (1..150 bytes) before any statement runs; a batch
 * goes to PostgreSQL as two text[] parameters, never as SQL text. */
#include "store_user.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store_int.h"

#define USERNAME_MAX 150

static const store_stmt USER_BY_NAME = {
    "user_by_name", "SELECT id, uuid, active FROM app_user WHERE username = $1"};

int store_user_by_name(store *s, const char *username, store_user *out, err_t *e)
{
    store_res *r = NULL;
    const char *v[] = {username};
    int rc = store_exec(s, &USER_BY_NAME, 1, v, &r, e);
    if (rc == 0 && store_res_rows(r) == 0)
        rc = err_set(e, ERR_NOTFOUND, "no user named '%s'", username);
    if (rc == 0) {
        out->id = store_col_i64(r, 0, 0);
        snprintf(out->uuid, sizeof out->uuid, "%s", store_res_get(r, 0, 1));
        out->active = store_col_bool(r, 0, 2);
    }
    store_res_free(r);
    return rc;
}

static const store_stmt USER_UPSERT = {
    "user_upsert",
    "INSERT INTO app_user (username, email, active) VALUES ($1, $2, $3::boolean)"
    " ON CONFLICT (username) DO UPDATE SET email = COALESCE(EXCLUDED.email, app_user.email),"
    " active = EXCLUDED.active RETURNING id, (xmax = 0)"};

int store_user_upsert(store *s, const char *username, const char *email, int active, int64_t *id,
                      int *inserted, err_t *e)
{
    if (!store_text_ok(username, USERNAME_MAX))
        return err_set(e, ERR_INVAL, "username must be 1 to 150 bytes");
    const char *p[3] = {username, email, active ? "true" : "false"};
    store_res *r = NULL;
    int rc = store_exec(s, &USER_UPSERT, 3, p, &r, e);
    if (rc == 0 && id)
        *id = store_col_i64(r, 0, 0);
    if (rc == 0 && inserted)
        *inserted = store_col_bool(r, 0, 1);
    store_res_free(r);
    return rc;
}

static const store_stmt USER_LIST = {
    "user_list", "SELECT id, uuid::text, username, email, active, " STORE_TS(
                     "created_at") " FROM app_user ORDER BY id LIMIT $1::bigint"};

int store_user_list(store *s, long limit, user_view_fn fn, void *arg, err_t *e)
{
    char lim[STORE_I64_LEN];
    store_i64_text(lim, limit);
    const char *p[1] = {limit > 0 ? lim : NULL}; /* LIMIT NULL = no limit */
    store_res *r = NULL;
    int rc = store_exec(s, &USER_LIST, 1, p, &r, e);
    for (int i = 0; rc == 0 && i < store_res_rows(r); i++) {
        user_view v = {store_col_i64(r, i, 0), store_res_get(r, i, 1),  store_res_get(r, i, 2),
                       store_col_opt(r, i, 3), store_col_bool(r, i, 4), store_res_get(r, i, 5)};
        rc = fn(&v, arg);
    }
    store_res_free(r);
    return rc;
}

static const store_stmt USER_BATCH = {"user_batch", "INSERT INTO app_user (username, email)"
                                                    " SELECT * FROM unnest($1::text[], $2::text[])"
                                                    " ON CONFLICT (username) DO NOTHING"};

int store_user_insert_batch(store *s, const char *const *usernames, const char *const *emails,
                            size_t n, int64_t *inserted, err_t *e)
{
    for (size_t i = 0; i < n; i++)
        if (!store_text_ok(usernames[i], USERNAME_MAX))
            return err_set(e, ERR_INVAL, "username #%zu must be 1 to 150 bytes", i + 1);
    char *names = store_text_array(usernames, n), *mails = store_text_array(emails, n);
    int rc = names && mails ? 0 : err_set(e, ERR_NOMEM, "out of memory");
    const char *p[2] = {names, mails};
    store_res *r = NULL;
    if (rc == 0)
        rc = store_exec(s, &USER_BATCH, 2, p, &r, e);
    if (rc == 0 && inserted)
        *inserted = store_res_affected(r);
    store_res_free(r);
    free(names);
    free(mails);
    return rc;
}
