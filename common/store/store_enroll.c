/* store_enroll.c - users, enrollments and devices for the enrollment worker. */
#include "store_enroll.h"

#include <stdio.h>
#include <string.h>

#include "store_admin.h"

static const store_stmt st_user = {"user_by_name",
                                   "SELECT id, uuid, active FROM app_user WHERE username = $1"};
static const store_stmt st_enr_add = {
    "enrollment_add",
    "INSERT INTO duo_enrollment (stage_id, user_id, duo_user_id, activation_code, expires_at) "
    "VALUES ($1::bigint, $2::bigint, $3, $4, to_timestamp($5::bigint)) RETURNING id, uuid"};
static const store_stmt st_enr_get = {
    "enrollment_get",
    "SELECT e.id, e.stage_id, e.user_id, e.uuid, e.duo_user_id, e.activation_code, e.state, "
    "coalesce(d.uuid::text, ''), extract(epoch FROM e.expires_at)::bigint "
    "FROM duo_enrollment e LEFT JOIN duo_device d ON d.id = e.device_id "
    "WHERE e.uuid = $1::uuid AND e.stage_id = $2::bigint"};
static const store_stmt st_enr_close = {
    "enrollment_close", "UPDATE duo_enrollment SET state = $2, device_id = nullif($3::bigint, 0), "
                        "closed_at = now() WHERE id = $1::bigint AND state = 'pending'"};
static const store_stmt st_dev_add = {
    "device_add",
    "INSERT INTO duo_device (user_id, stage_id, duo_user_id, duo_user_kind, name, confirmed) "
    "VALUES ($1::bigint, $2::bigint, $3, $4, $5, true) RETURNING id, uuid"};

static void copy(char *dst, size_t n, const char *src)
{
    snprintf(dst, n, "%s", src);
}

int store_user_by_name(store *s, const char *username, store_user *out, err_t *e)
{
    store_res *r = NULL;
    const char *v[] = {username};
    int rc = store_exec(s, &st_user, 1, v, &r, e);
    if (rc == 0 && store_res_rows(r) == 0)
        rc = err_set(e, ERR_NOTFOUND, "no user named '%s'", username);
    if (rc == 0) {
        store_res_i64(r, 0, 0, &out->id);
        copy(out->uuid, sizeof out->uuid, store_res_get(r, 0, 1));
        out->active = strcmp(store_res_get(r, 0, 2), "t") == 0;
    }
    store_res_free(r);
    return rc;
}

int store_enrollment_add(store *s, int64_t stage_id, int64_t user_id, const char *duo_user_id,
                         const char *activation_code, int64_t expires_at, store_enrollment *out,
                         err_t *e)
{
    char sid[24], uid[24], exp[24];
    snprintf(sid, sizeof sid, "%lld", (long long)stage_id);
    snprintf(uid, sizeof uid, "%lld", (long long)user_id);
    snprintf(exp, sizeof exp, "%lld", (long long)expires_at);
    const char *v[] = {sid, uid, duo_user_id, activation_code, exp};
    store_res *r = NULL;
    int rc = store_exec(s, &st_enr_add, 5, v, &r, e);
    if (rc == 0) {
        store_res_i64(r, 0, 0, &out->id);
        copy(out->uuid, sizeof out->uuid, store_res_get(r, 0, 1));
    }
    store_res_free(r);
    return rc;
}

int store_enrollment_get(store *s, int64_t stage_id, const char *uuid, store_enrollment *out,
                         err_t *e)
{
    if (!store_is_uuid(uuid))
        return err_set(e, ERR_INVAL, "enrollment_id '%.60s' is not a uuid", uuid);
    char sid[24];
    snprintf(sid, sizeof sid, "%lld", (long long)stage_id);
    const char *v[] = {uuid, sid};
    store_res *r = NULL;
    int rc = store_exec(s, &st_enr_get, 2, v, &r, e);
    if (rc == 0 && store_res_rows(r) == 0)
        rc = err_set(e, ERR_NOTFOUND, "no enrollment %s on this stage", uuid);
    if (rc == 0) {
        store_res_i64(r, 0, 0, &out->id);
        store_res_i64(r, 0, 1, &out->stage_id);
        store_res_i64(r, 0, 2, &out->user_id);
        copy(out->uuid, sizeof out->uuid, store_res_get(r, 0, 3));
        copy(out->duo_user_id, sizeof out->duo_user_id, store_res_get(r, 0, 4));
        copy(out->activation_code, sizeof out->activation_code, store_res_get(r, 0, 5));
        copy(out->state, sizeof out->state, store_res_get(r, 0, 6));
        copy(out->device_uuid, sizeof out->device_uuid, store_res_get(r, 0, 7));
        store_res_i64(r, 0, 8, &out->expires_at);
    }
    store_res_free(r);
    return rc;
}

int store_enrollment_close(store *s, int64_t enrollment_id, const char *state, int64_t device_id,
                           err_t *e)
{
    char id[24], dev[24];
    snprintf(id, sizeof id, "%lld", (long long)enrollment_id);
    snprintf(dev, sizeof dev, "%lld", (long long)device_id);
    const char *v[] = {id, state, dev};
    return store_exec(s, &st_enr_close, 3, v, NULL, e);
}

int store_device_add(store *s, int64_t user_id, int64_t stage_id, const char *duo_user_id,
                     const char *kind, const char *name, int64_t *id_out, char *uuid_out, err_t *e)
{
    char uid[24], sid[24];
    snprintf(uid, sizeof uid, "%lld", (long long)user_id);
    snprintf(sid, sizeof sid, "%lld", (long long)stage_id);
    const char *v[] = {uid, sid, duo_user_id, kind, name};
    store_res *r = NULL;
    int rc = store_exec(s, &st_dev_add, 5, v, &r, e);
    if (rc == ERR_CONFLICT)
        err_set(e, ERR_CONFLICT, "this stage already has a device for Duo user %s", duo_user_id);
    if (rc == 0) {
        store_res_i64(r, 0, 0, id_out);
        snprintf(uuid_out, 40, "%s", store_res_get(r, 0, 1));
    }
    store_res_free(r);
    return rc;
}
