/* store_auth.c - devices, guard and challenge marks for the authentication worker. */
#include "store_auth.h"

#include <stdio.h>
#include <string.h>

#include "store_int.h"

/* Both lookups also (re)set the session's synchronous_commit to off (see
 * store_auth.h): every job starts with one of them, so the setting survives a
 * reconnect after at most one job, at no extra round trip. */
#define ASYNC_COMMIT "set_config('synchronous_commit', 'off', false)"

/* Left joins tell a missing stage, user or device apart in one round trip. */
static const store_stmt st_for_user = {
    "auth_device_for_user",
    "SELECT st.id, u.id, u.active, d.id, d.uuid, d.duo_user_id, d.duo_user_kind, " ASYNC_COMMIT
    " FROM (SELECT 1) one "
    "LEFT JOIN duo_stage st ON st.uuid = $1::uuid "
    "LEFT JOIN app_user u ON u.username = $2 "
    "LEFT JOIN LATERAL (SELECT * FROM duo_device x WHERE x.user_id = u.id "
    "  AND x.stage_id = st.id AND x.confirmed "
    "  ORDER BY x.last_used DESC NULLS LAST, x.id LIMIT 1) d ON true"};
static const store_stmt st_by_uuid = {
    "auth_device_by_uuid",
    "SELECT d.stage_id, d.user_id, u.active, d.id, d.uuid, d.duo_user_id, d.duo_user_kind, "
    "st.uuid, " ASYNC_COMMIT " FROM duo_device d JOIN app_user u ON u.id = d.user_id "
    "JOIN duo_stage st ON st.id = d.stage_id WHERE d.uuid = $1::uuid AND d.confirmed"};
/* The guard row must outlive a database failover before anything reaches the user's
 * phone: a rerun that did not find it would push again. So this one statement commits
 * with synchronous_commit on (transaction-local), whatever the session says. */
static const store_stmt st_take = {
    "auth_take", "SELECT challenge_id, retry_after_secs, reason, duo_txid, "
                 "set_config('synchronous_commit', 'on', true) "
                 "FROM auth_challenge_take_for_job($1::bigint, $2::bigint, $3, $4, $5, $6)"};
static const store_stmt st_txid = {"auth_txid",
                                   "UPDATE auth_challenge SET duo_txid = $2 WHERE id = $1::bigint"};
/* Both marks of a decided challenge in one round trip (an id of 0 matches no row). */
static const store_stmt st_record = {
    "auth_record",
    "WITH c AS (UPDATE auth_challenge SET result = $2, decided_at = clock_timestamp() "
    "WHERE id = $1::bigint RETURNING 1), "
    "d AS (UPDATE duo_device SET last_used = now() WHERE id = $3::bigint RETURNING 1) "
    "SELECT (SELECT count(*) FROM c), (SELECT count(*) FROM d)"};

/* Fills out from a row: stage id, user id, active, device id, uuid, duo id, kind. */
static void fill(const store_res *r, auth_device *out)
{
    if (store_res_isnull(r, 0, 0)) {
        out->state = AUTH_DEV_NO_STAGE;
        return;
    }
    store_res_i64(r, 0, 0, &out->stage_id);
    if (store_res_isnull(r, 0, 1)) {
        out->state = AUTH_DEV_NO_USER;
        return;
    }
    store_res_i64(r, 0, 1, &out->user_id);
    if (!store_col_bool(r, 0, 2)) {
        out->state = AUTH_DEV_INACTIVE;
        return;
    }
    if (store_res_isnull(r, 0, 3)) {
        out->state = AUTH_DEV_NO_DEVICE;
        return;
    }
    store_res_i64(r, 0, 3, &out->id);
    snprintf(out->uuid, sizeof out->uuid, "%s", store_res_get(r, 0, 4));
    snprintf(out->duo_user_id, sizeof out->duo_user_id, "%s", store_res_get(r, 0, 5));
    out->by_username = strcmp(store_res_get(r, 0, 6), "username") == 0;
    out->state = AUTH_DEV_OK;
}

void store_auth_device_ahead(store *s, const char *stage_uuid, const char *username,
                             const char *device_uuid)
{
    if (device_uuid && store_is_uuid(device_uuid)) {
        const char *v[] = {device_uuid};
        store_send_ahead(s, &st_by_uuid, 1, v);
    } else if (!device_uuid && stage_uuid && username && store_is_uuid(stage_uuid)) {
        const char *v[] = {stage_uuid, username};
        store_send_ahead(s, &st_for_user, 2, v);
    }
}

int store_auth_device_for_user(store *s, const char *stage_uuid, const char *username,
                               auth_device *out, err_t *e)
{
    memset(out, 0, sizeof *out);
    if (!store_is_uuid(stage_uuid))
        return err_set(e, ERR_INVAL, "stage_uuid '%.60s' is not a uuid", stage_uuid);
    const char *v[] = {stage_uuid, username};
    store_res *r = NULL;
    int rc = store_exec(s, &st_for_user, 2, v, &r, e);
    if (rc == 0) {
        fill(r, out);
        snprintf(out->stage_uuid, sizeof out->stage_uuid, "%s", stage_uuid);
    }
    store_res_free(r);
    return rc;
}

int store_auth_device_by_uuid(store *s, const char *device_uuid, auth_device *out, err_t *e)
{
    memset(out, 0, sizeof *out);
    if (!store_is_uuid(device_uuid))
        return err_set(e, ERR_INVAL, "device_id '%.60s' is not a uuid", device_uuid);
    const char *v[] = {device_uuid};
    store_res *r = NULL;
    int rc = store_exec(s, &st_by_uuid, 1, v, &r, e);
    if (rc == 0 && store_res_rows(r) == 0)
        out->state = AUTH_DEV_NO_DEVICE;
    else if (rc == 0) {
        fill(r, out);
        snprintf(out->stage_uuid, sizeof out->stage_uuid, "%s", store_res_get(r, 0, 7));
    }
    store_res_free(r);
    return rc;
}

typedef struct {
    char uid[STORE_I64_LEN], sid[STORE_I64_LEN], cap[STORE_I64_LEN], win[STORE_I64_LEN],
        cool[STORE_I64_LEN];
} take_args;

static void take_params(take_args *a, int64_t user_id, int64_t stage_id, const auth_guard *g,
                        const char *job_id, const char *v[6])
{
    store_i64_text(a->uid, user_id);
    store_i64_text(a->sid, stage_id);
    store_i64_text(a->cap, g->cap);
    store_i64_text(a->win, g->window_secs);
    store_i64_text(a->cool, g->cooldown_secs);
    v[0] = a->uid, v[1] = a->sid, v[2] = a->cap, v[3] = a->win, v[4] = a->cool, v[5] = job_id;
}

void store_auth_take_ahead(store *s, int64_t user_id, int64_t stage_id, const auth_guard *g,
                           const char *job_id)
{
    take_args a;
    const char *v[6];
    take_params(&a, user_id, stage_id, g, job_id, v);
    store_send_ahead(s, &st_take, 6, v);
}

int store_auth_take(store *s, int64_t user_id, int64_t stage_id, const auth_guard *g,
                    const char *job_id, auth_take *out, err_t *e)
{
    take_args a;
    const char *v[6];
    take_params(&a, user_id, stage_id, g, job_id, v);
    store_res *r = NULL;
    memset(out, 0, sizeof *out);
    out->why = "ok";
    int rc = store_exec(s, &st_take, 6, v, &r, e);
    if (rc == 0 && store_res_rows(r) != 1)
        rc = err_set(e, ERR_DB, "auth_challenge_take answered %d rows", store_res_rows(r));
    if (rc == 0) {
        int64_t secs = 0;
        if (!store_res_isnull(r, 0, 0))
            store_res_i64(r, 0, 0, &out->challenge_id);
        store_res_i64(r, 0, 1, &secs);
        out->retry_after_secs = (int)secs;
        const char *reason = store_res_get(r, 0, 2);
        out->why = strcmp(reason, "cooldown") == 0 ? "cooldown"
                   : strcmp(reason, "resume") == 0 ? "resume"
                   : out->challenge_id             ? "ok"
                                                   : "cap";
        if (!store_res_isnull(r, 0, 3))
            snprintf(out->txid, sizeof out->txid, "%s", store_res_get(r, 0, 3));
    }
    store_res_free(r);
    return rc;
}

int store_auth_set_txid(store *s, int64_t challenge_id, const char *txid, err_t *e)
{
    char cid[STORE_I64_LEN];
    store_i64_text(cid, challenge_id);
    const char *v[] = {cid, txid};
    return store_send_alone(s, &st_txid, 2, v, e);
}

int store_auth_record(store *s, int64_t challenge_id, const char *result, int64_t used_device_id,
                      err_t *e)
{
    char cid[STORE_I64_LEN], did[STORE_I64_LEN];
    store_i64_text(cid, challenge_id);
    store_i64_text(did, used_device_id);
    const char *v[] = {cid, result, did};
    return store_in_tx(s) ? store_send(s, &st_record, 3, v, NULL, NULL, e)
                          : store_exec(s, &st_record, 3, v, NULL, e);
}
