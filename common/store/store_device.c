/* store_device.c - Duo device rows (store_device.h): the workers' add and the
 * operator's list and delete.
 *
 * Invariant: every statement is a static store_stmt with $n parameters; a device or
 * stage reference is checked (numeric id, uuid) before it reaches a typed parameter, so
 * PostgreSQL never sees a bad cast. */
#include "store_device.h"

#include <stdio.h>
#include <string.h>

#include "store_int.h"

static const store_stmt DEVICE_ADD = {
    "device_add",
    "INSERT INTO duo_device (user_id, stage_id, duo_user_id, duo_user_kind, name, confirmed) "
    "VALUES ($1::bigint, $2::bigint, $3, $4, $5, true) RETURNING id, uuid"};

int store_device_add(store *s, int64_t user_id, int64_t stage_id, const char *duo_user_id,
                     const char *kind, const char *name, int64_t *id_out, char *uuid_out, err_t *e)
{
    char uid[STORE_I64_LEN], sid[STORE_I64_LEN];
    store_i64_text(uid, user_id);
    store_i64_text(sid, stage_id);
    const char *v[] = {uid, sid, duo_user_id, kind, name};
    store_res *r = NULL;
    int rc = store_exec(s, &DEVICE_ADD, 5, v, &r, e);
    if (rc == ERR_CONFLICT)
        err_set(e, ERR_CONFLICT, "this stage already has a device for Duo user %s", duo_user_id);
    if (rc == 0) {
        *id_out = store_col_i64(r, 0, 0);
        snprintf(uuid_out, 40, "%s", store_res_get(r, 0, 1));
    }
    store_res_free(r);
    return rc;
}

static const store_stmt DEVICE_STAGE_ID = {
    "device_stage_id", "SELECT s.id FROM duo_stage s" STORE_REF_WHERE STORE_REF_ORDER};

static const store_stmt DEVICE_LIST = {
    "device_list",
    "SELECT d.id, d.uuid::text, s.uuid::text, s.name, u.username, d.duo_user_id,"
    " d.duo_user_kind, d.name, d.confirmed, " STORE_TS("d.created_at") ", " STORE_TS(
        "d.last_used") " FROM duo_device d JOIN duo_stage s ON s.id = d.stage_id"
                       " JOIN app_user u ON u.id = d.user_id"
                       " WHERE ($1::bigint IS NULL OR d.stage_id = $1::bigint)"
                       " AND ($2::text IS NULL OR u.username = $2) ORDER BY d.id LIMIT $3::bigint"};

/* Resolves a stage ref to its numeric id (text). */
static int stage_id(store *s, const char *ref, char id[STORE_I64_LEN], err_t *e)
{
    store_res *r = NULL;
    int rc = store_ref_exec(s, &DEVICE_STAGE_ID, ref, "stage", &r, e);
    if (rc == 0)
        snprintf(id, STORE_I64_LEN, "%s", store_res_get(r, 0, 0));
    store_res_free(r);
    return rc;
}

static int emit_device(const store_res *r, int i, device_view_fn fn, void *arg)
{
    device_view v = {
        .id = store_col_i64(r, i, 0),
        .uuid = store_res_get(r, i, 1),
        .stage_uuid = store_res_get(r, i, 2),
        .stage_name = store_res_get(r, i, 3),
        .username = store_res_get(r, i, 4),
        .duo_user_id = store_res_get(r, i, 5),
        .duo_user_kind = store_res_get(r, i, 6),
        .name = store_res_get(r, i, 7),
        .confirmed = store_col_bool(r, i, 8),
        .created_at = store_res_get(r, i, 9),
        .last_used = store_col_opt(r, i, 10),
    };
    return fn(&v, arg);
}

int store_device_list(store *s, const char *stage_ref, const char *username, long limit,
                      device_view_fn fn, void *arg, err_t *e)
{
    char sid[STORE_I64_LEN] = "", lim[STORE_I64_LEN];
    int rc = stage_ref ? stage_id(s, stage_ref, sid, e) : 0;
    store_i64_text(lim, limit);
    const char *p[3] = {stage_ref ? sid : NULL, username, limit > 0 ? lim : NULL};
    store_res *r = NULL;
    if (rc == 0)
        rc = store_exec(s, &DEVICE_LIST, 3, p, &r, e);
    for (int i = 0; rc == 0 && i < store_res_rows(r); i++)
        rc = emit_device(r, i, fn, arg);
    store_res_free(r);
    return rc;
}

static const store_stmt DEVICE_DELETE = {
    "device_delete", "DELETE FROM duo_device WHERE id = $1::bigint OR uuid = $2::uuid"};

int store_device_delete(store *s, const char *id_or_uuid, err_t *e)
{
    int num = store_is_id(id_or_uuid), uuid = store_is_uuid(id_or_uuid);
    if (!num && !uuid)
        return err_set(e, ERR_INVAL, "device '%s' is neither a numeric id nor a uuid", id_or_uuid);
    const char *p[2] = {num ? id_or_uuid : NULL, uuid ? id_or_uuid : NULL};
    store_res *r = NULL;
    int rc = store_exec(s, &DEVICE_DELETE, 2, p, &r, e);
    if (rc == 0 && store_res_affected(r) == 0)
        rc = err_set(e, ERR_NOTFOUND, "no device '%s'", id_or_uuid);
    store_res_free(r);
    return rc;
}
