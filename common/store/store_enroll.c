/* store_enroll.c - pending enrollments for the enrollment worker (store_enroll.h).
 * Invariant: an enrollment is closed at most once (the close only matches 'pending'). */
#include "store_enroll.h"

#include <stdio.h>
#include <string.h>

#include "store_int.h"

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

static void copy(char *dst, size_t n, const char *src)
{
    snprintf(dst, n, "%s", src);
}

int store_enrollment_add(store *s, int64_t stage_id, int64_t user_id, const char *duo_user_id,
                         const char *activation_code, int64_t expires_at, store_enrollment *out,
                         err_t *e)
{
    char sid[STORE_I64_LEN], uid[STORE_I64_LEN], exp[STORE_I64_LEN];
    store_i64_text(sid, stage_id);
    store_i64_text(uid, user_id);
    store_i64_text(exp, expires_at);
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
    char sid[STORE_I64_LEN];
    store_i64_text(sid, stage_id);
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
    char id[STORE_I64_LEN], dev[STORE_I64_LEN];
    store_i64_text(id, enrollment_id);
    store_i64_text(dev, device_id);
    const char *v[] = {id, state, dev};
    return store_exec(s, &st_enr_close, 3, v, NULL, e);
}

static const store_stmt st_attempt_take = {
    "enroll_attempt_take",
    /* The attempt names its job's record, which is written at the job's end (013): a
     * 'running' record stands for it until then (the job's own end updates it). */
    "WITH j AS (INSERT INTO job (job_id, job_type, state, attempts)"
    " VALUES ($1, 'enroll.begin', 'running', 0)"
    " ON CONFLICT (job_id) DO NOTHING)"
    " INSERT INTO enroll_attempt (job_id, stage_id) VALUES ($1, $2::bigint)"
    " ON CONFLICT (job_id) DO NOTHING"};

static const store_stmt st_attempt_drop = {"enroll_attempt_drop",
                                           "DELETE FROM enroll_attempt WHERE job_id = $1"};

int store_enroll_attempt_take(store *s, const char *job_id, int64_t stage_id, err_t *e)
{
    char sid[STORE_I64_LEN];
    store_i64_text(sid, stage_id);
    const char *v[] = {job_id, sid};
    store_res *r = NULL;
    int rc = store_exec(s, &st_attempt_take, 2, v, &r, e);
    if (rc == 0)
        rc = store_res_affected(r) == 1 ? 0 : 1;
    store_res_free(r);
    return rc;
}

int store_enroll_attempt_drop(store *s, const char *job_id, err_t *e)
{
    const char *v[] = {job_id};
    return store_exec(s, &st_attempt_drop, 1, v, NULL, e);
}

int store_enroll_attempt_drop_in_tx(store *s, const char *job_id, err_t *e)
{
    const char *v[] = {job_id};
    return store_send(s, &st_attempt_drop, 1, v, NULL, NULL, e);
}
