/* store_stage.c - stage rows for duoctl and the workers' decrypted stage load
 * (store_stage.h).
 *
 * Invariant: every statement is a static store_stmt with $n parameters; input never
 * becomes SQL text. Secrets are encrypted (secret.h) before a parameter is built and
 * decrypted only into a stage_rec, whose free wipes them. A stage ref that is not a
 * uuid is passed as NULL to the uuid parameter, so Postgres never sees a bad cast. */
#include "store_stage.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store_int.h"

/* ---- stage views ---- */

/* What emit_stage() reads, in its column order: envelopes only for their key ids. */
#define VIEW_COLS                                                                                  \
    "s.id, s.uuid::text, s.name, s.api_hostname, s.client_id, s.client_secret_enc,"                \
    " s.admin_integration_key, s.admin_secret_key_enc, s.friendly_name, s.configure_flow,"         \
    " s.ca_bundle IS NOT NULL, COALESCE(s.sig_version, 0), COALESCE(s.max_calls, 0),"              \
    " (SELECT count(*) FROM duo_device d WHERE d.stage_id = s.id),"                                \
    " " STORE_TS("s.created_at") ", " STORE_TS("s.updated_at") " FROM duo_stage s"

static const store_stmt STAGE_LIST = {"stage_list", "SELECT " VIEW_COLS " ORDER BY s.name"};

static const store_stmt STAGE_SHOW = {"stage_show",
                                      "SELECT " VIEW_COLS STORE_REF_WHERE STORE_REF_ORDER};

/* Fills a view from row i of a STAGE_LIST/STAGE_SHOW result and calls fn. */
static int emit_stage(const store_res *r, int i, stage_view_fn fn, void *arg)
{
    char cid[9] = "", aid[9] = "";
    const char *admin_env = store_col_opt(r, i, 7);
    if (secret_envelope_key_id(store_res_get(r, i, 5), cid) < 0)
        memcpy(cid, "invalid", 8);
    if (admin_env && secret_envelope_key_id(admin_env, aid) < 0)
        memcpy(aid, "invalid", 8);
    stage_view v = {
        .id = store_col_i64(r, i, 0),
        .uuid = store_res_get(r, i, 1),
        .name = store_res_get(r, i, 2),
        .api_hostname = store_res_get(r, i, 3),
        .client_id = store_res_get(r, i, 4),
        .client_secret_key_id = cid,
        .admin_integration_key = store_col_opt(r, i, 6),
        .admin_secret_key_id = admin_env ? aid : NULL,
        .friendly_name = store_col_opt(r, i, 8),
        .configure_flow = store_col_opt(r, i, 9),
        .has_ca_bundle = store_col_bool(r, i, 10),
        .sig_version = (int)store_col_i64(r, i, 11),
        .max_calls = (int)store_col_i64(r, i, 12),
        .devices = store_col_i64(r, i, 13),
        .created_at = store_res_get(r, i, 14),
        .updated_at = store_res_get(r, i, 15),
    };
    return fn(&v, arg);
}

int store_stage_list(store *s, stage_view_fn fn, void *arg, err_t *e)
{
    store_res *r = NULL;
    int rc = store_exec(s, &STAGE_LIST, 0, NULL, &r, e);
    for (int i = 0; rc == 0 && i < store_res_rows(r); i++)
        rc = emit_stage(r, i, fn, arg);
    store_res_free(r);
    return rc;
}

int store_stage_show(store *s, const char *ref, stage_view_fn fn, void *arg, err_t *e)
{
    store_res *r = NULL;
    int rc = store_ref_exec(s, &STAGE_SHOW, ref, "stage", &r, e);
    if (rc == 0)
        rc = emit_stage(r, 0, fn, arg);
    store_res_free(r);
    return rc;
}

/* ---- create / update ---- */

/* Encrypts an optional secret: NULL stays NULL, "" stays "" (update: clear). */
static int seal(const secret_keyring *k, const char *plain, const char *aad, char **out, err_t *e)
{
    *out = NULL;
    if (!plain)
        return 0;
    if (!plain[0]) {
        *out = calloc(1, 1);
        return *out ? 0 : err_set(e, ERR_NOMEM, "out of memory");
    }
    return secret_encrypt(k, plain, aad, out, e);
}

static int check_lengths(const stage_fields *f, err_t *e)
{
    if (f->name && strlen(f->name) > 200)
        return err_set(e, ERR_INVAL, "stage name longer than 200 bytes");
    if (f->api_hostname && strlen(f->api_hostname) > 255)
        return err_set(e, ERR_INVAL, "api hostname longer than 255 bytes");
    if (f->client_id && strlen(f->client_id) > 255)
        return err_set(e, ERR_INVAL, "client id longer than 255 bytes");
    if (f->sig_version != 0 && f->sig_version != 2 && f->sig_version != 5)
        return err_set(e, ERR_INVAL, "sig version must be 2 or 5");
    if (f->max_calls < -1 || f->max_calls > 65535)
        return err_set(e, ERR_INVAL, "max calls must be 1..65535");
    return 0;
}

static int check_create(const stage_fields *f, err_t *e)
{
    const char *need[][2] = {{f->name, "name"},
                             {f->api_hostname, "api hostname"},
                             {f->client_id, "client id"},
                             {f->client_secret, "client secret"}};
    for (size_t i = 0; i < 4; i++)
        if (!need[i][0] || !need[i][0][0])
            return err_set(e, ERR_INVAL, "stage %s is required", need[i][1]);
    int has_ikey = f->admin_integration_key && f->admin_integration_key[0];
    int has_skey = f->admin_secret_key && f->admin_secret_key[0];
    if (has_ikey != has_skey)
        return err_set(e, ERR_INVAL, "the admin integration key and admin secret key go together");
    return check_lengths(f, e);
}

static const char *empty_null(const char *v)
{
    return v && v[0] ? v : NULL;
}

static const store_stmt STAGE_INSERT = {
    "stage_insert",
    "INSERT INTO duo_stage (name, api_hostname, client_id, client_secret_enc,"
    " admin_integration_key, admin_secret_key_enc, friendly_name, configure_flow,"
    " ca_bundle, sig_version, max_calls) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9,"
    " $10::smallint, $11::integer)"
    " RETURNING uuid::text"};

int store_stage_create(store *s, const secret_keyring *k, const stage_fields *f, char uuid_out[37],
                       err_t *e)
{
    int rc = check_create(f, e);
    if (rc < 0)
        return rc;
    char *csec = NULL, *asec = NULL, sig[8] = "", calls[16] = "";
    rc = seal(k, f->client_secret, STAGE_AAD_CLIENT_SECRET, &csec, e);
    if (rc == 0)
        rc = seal(k, empty_null(f->admin_secret_key), STAGE_AAD_ADMIN_SECRET, &asec, e);
    snprintf(sig, sizeof sig, "%d", f->sig_version);
    snprintf(calls, sizeof calls, "%d", f->max_calls);
    const char *p[11] = {f->name,
                         f->api_hostname,
                         f->client_id,
                         csec,
                         empty_null(f->admin_integration_key),
                         asec,
                         empty_null(f->friendly_name),
                         empty_null(f->configure_flow),
                         empty_null(f->ca_bundle),
                         f->sig_version ? sig : NULL,
                         f->max_calls > 0 ? calls : NULL};
    store_res *r = NULL;
    if (rc == 0)
        rc = store_exec(s, &STAGE_INSERT, 11, p, &r, e);
    if (rc == ERR_CONFLICT)
        err_set(e, rc, "a stage named '%s' already exists", f->name);
    if (rc == 0)
        snprintf(uuid_out, 37, "%s", store_res_get(r, 0, 0));
    store_res_free(r);
    free(csec);
    free(asec);
    return rc;
}

static const store_stmt STAGE_LOCK = {
    "stage_lock",
    "SELECT s.id, s.admin_integration_key IS NOT NULL, s.admin_secret_key_enc IS NOT NULL"
    " FROM duo_stage s" STORE_REF_WHERE STORE_REF_ORDER " FOR UPDATE"};

static const store_stmt STAGE_UPDATE = {
    "stage_update",
    "UPDATE duo_stage SET name = COALESCE($2, name), api_hostname = COALESCE($3, api_hostname),"
    " client_id = COALESCE($4, client_id), client_secret_enc = COALESCE($5, client_secret_enc),"
    " admin_integration_key = CASE WHEN $6::text IS NULL THEN admin_integration_key"
    "   ELSE NULLIF($6, '') END,"
    " admin_secret_key_enc = CASE WHEN $7::text IS NULL THEN admin_secret_key_enc"
    "   ELSE NULLIF($7, '') END,"
    " friendly_name = CASE WHEN $8::text IS NULL THEN friendly_name ELSE NULLIF($8, '') END,"
    " configure_flow = CASE WHEN $9::text IS NULL THEN configure_flow ELSE NULLIF($9, '') END,"
    " ca_bundle = CASE WHEN $10::text IS NULL THEN ca_bundle ELSE NULLIF($10, '') END,"
    " sig_version = COALESCE($11::smallint, sig_version),"
    " max_calls = CASE WHEN $12::integer IS NULL THEN max_calls ELSE NULLIF($12, -1) END,"
    " updated_at = now()"
    " WHERE id = $1::bigint"};

static int check_update(const stage_fields *f, err_t *e)
{
    const char *req[][2] = {{f->name, "name"},
                            {f->api_hostname, "api hostname"},
                            {f->client_id, "client id"},
                            {f->client_secret, "client secret"}};
    for (size_t i = 0; i < 4; i++)
        if (req[i][0] && !req[i][0][0])
            return err_set(e, ERR_INVAL, "stage %s cannot be empty", req[i][1]);
    return check_lengths(f, e);
}

/* Locks the stage row; writes its id and whether each admin half is set now. */
static int lock_stage(store *s, const char *ref, char id[24], int admin[2], err_t *e)
{
    store_res *r = NULL;
    int rc = store_ref_exec(s, &STAGE_LOCK, ref, "stage", &r, e);
    if (rc == 0) {
        snprintf(id, 24, "%s", store_res_get(r, 0, 0));
        admin[0] = store_col_bool(r, 0, 1);
        admin[1] = store_col_bool(r, 0, 2);
    }
    store_res_free(r);
    return rc;
}

/* After the update, is exactly one half of the admin pair set? */
static int admin_half_set(const stage_fields *f, const int admin[2])
{
    int ikey = f->admin_integration_key ? f->admin_integration_key[0] != '\0' : admin[0];
    int skey = f->admin_secret_key ? f->admin_secret_key[0] != '\0' : admin[1];
    return ikey != skey;
}

static int update_row(store *s, const char *id, const stage_fields *f, const char *csec,
                      const char *asec, err_t *e)
{
    char sig[8], calls[16];
    snprintf(sig, sizeof sig, "%d", f->sig_version);
    snprintf(calls, sizeof calls, "%d", f->max_calls);
    const char *p[12] = {id,
                         f->name,
                         f->api_hostname,
                         f->client_id,
                         csec,
                         f->admin_integration_key,
                         asec,
                         f->friendly_name,
                         f->configure_flow,
                         f->ca_bundle,
                         f->sig_version ? sig : NULL,
                         f->max_calls ? calls : NULL};
    int rc = store_exec(s, &STAGE_UPDATE, 12, p, NULL, e);
    if (rc == ERR_CONFLICT)
        err_set(e, rc, "a stage named '%s' already exists", f->name ? f->name : "");
    return rc;
}

int store_stage_update(store *s, const secret_keyring *k, const char *ref, const stage_fields *f,
                       err_t *e)
{
    int rc = check_update(f, e);
    if (rc < 0)
        return rc;
    char *csec = NULL, *asec = NULL, id[24];
    int admin[2];
    rc = seal(k, f->client_secret, STAGE_AAD_CLIENT_SECRET, &csec, e);
    if (rc == 0)
        rc = seal(k, f->admin_secret_key, STAGE_AAD_ADMIN_SECRET, &asec, e);
    if (rc == 0)
        rc = store_begin(s, e);
    if (rc == 0)
        rc = lock_stage(s, ref, id, admin, e);
    if (rc == 0 && admin_half_set(f, admin))
        rc = err_set(e, ERR_INVAL, "the admin integration key and admin secret key go together");
    if (rc == 0)
        rc = update_row(s, id, f, csec, asec, e);
    if (rc == 0)
        rc = store_commit(s, e);
    if (rc < 0)
        store_rollback(s);
    free(csec);
    free(asec);
    return rc;
}

/* ---- delete ---- */

static const store_stmt STAGE_DEVICES = {
    "stage_devices", "SELECT count(*) FROM duo_device WHERE stage_id = $1::bigint"};
static const store_stmt STAGE_DELETE = {"stage_delete",
                                        "DELETE FROM duo_stage WHERE id = $1::bigint"};

int store_stage_delete(store *s, const char *ref, int64_t *devices, err_t *e)
{
    char id[24];
    int admin[2];
    store_res *r = NULL;
    int rc = store_begin(s, e);
    if (rc == 0)
        rc = lock_stage(s, ref, id, admin, e);
    const char *p[1] = {id};
    if (rc == 0)
        rc = store_exec(s, &STAGE_DEVICES, 1, p, &r, e);
    if (rc == 0)
        *devices = store_col_i64(r, 0, 0);
    if (rc == 0)
        rc = store_exec(s, &STAGE_DELETE, 1, p, NULL, e);
    if (rc == 0)
        rc = store_commit(s, e);
    if (rc < 0)
        store_rollback(s);
    store_res_free(r);
    return rc;
}

/* ---- decrypted load ---- */

void stage_rec_free(stage_rec *r)
{
    if (!r)
        return;
    secret_free(r->client_secret);
    secret_free(r->admin_secret_key);
    char **plain[] = {
        &r->name,          &r->api_hostname,   &r->client_id, &r->admin_integration_key,
        &r->friendly_name, &r->configure_flow, &r->ca_bundle};
    for (size_t i = 0; i < sizeof plain / sizeof plain[0]; i++)
        free(*plain[i]);
    memset(r, 0, sizeof *r);
}

/* strdup of an optional cell; returns -1 only when a non-NULL copy failed. */
static int dup_cell(const store_res *r, int col, char **out)
{
    const char *v = store_col_opt(r, 0, col);
    *out = v ? strdup(v) : NULL;
    return v && !*out ? -1 : 0;
}

static int fill_rec(const secret_keyring *k, const store_res *r, stage_rec *out, err_t *e)
{
    out->id = store_col_i64(r, 0, 0);
    snprintf(out->uuid, sizeof out->uuid, "%s", store_res_get(r, 0, 1));
    out->sig_version = (int)store_col_i64(r, 0, 11);
    out->max_calls = (int)store_col_i64(r, 0, 12);
    int cols[] = {2, 3, 4, 6, 8, 9, 10};
    char **dst[] = {
        &out->name,          &out->api_hostname,   &out->client_id, &out->admin_integration_key,
        &out->friendly_name, &out->configure_flow, &out->ca_bundle};
    for (size_t i = 0; i < sizeof cols / sizeof cols[0]; i++)
        if (dup_cell(r, cols[i], dst[i]) < 0)
            return err_set(e, ERR_NOMEM, "out of memory");
    int rc =
        secret_decrypt(k, store_res_get(r, 0, 5), STAGE_AAD_CLIENT_SECRET, &out->client_secret, e);
    if (rc == 0 && store_col_opt(r, 0, 7))
        rc = secret_decrypt(k, store_col_opt(r, 0, 7), STAGE_AAD_ADMIN_SECRET,
                            &out->admin_secret_key, e);
    if (rc < 0)
        err_wrap(e, rc, "stage %s", out->uuid);
    return rc;
}

static const store_stmt STAGE_LOAD = {
    "stage_load",
    "SELECT s.id, s.uuid::text, s.name, s.api_hostname, s.client_id, s.client_secret_enc,"
    " s.admin_integration_key, s.admin_secret_key_enc, s.friendly_name, s.configure_flow,"
    " s.ca_bundle, COALESCE(s.sig_version, 0), COALESCE(s.max_calls, 0) FROM duo_stage s"
    " WHERE s.uuid = $1::uuid"};

int store_stage_load(store *s, const secret_keyring *k, const char *uuid, stage_rec *out, err_t *e)
{
    memset(out, 0, sizeof *out);
    if (!store_is_uuid(uuid))
        return err_set(e, ERR_INVAL, "stage id is not a uuid");
    const char *p[1] = {uuid};
    store_res *r = NULL;
    int rc = store_exec(s, &STAGE_LOAD, 1, p, &r, e);
    if (rc == 0 && store_res_rows(r) == 0)
        rc = err_set(e, ERR_NOTFOUND, "no stage '%s'", uuid);
    if (rc == 0)
        rc = fill_rec(k, r, out, e);
    if (rc < 0)
        stage_rec_free(out);
    store_res_free(r);
    return rc;
}
