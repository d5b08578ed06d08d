/* store_admin.c - stage, user and device rows for duoctl and the workers' stage loader.
 *
 * Invariant: every statement is a static store_stmt with $n parameters; input never
 * becomes SQL text. Secrets are encrypted (secret.h) before a parameter is built and
 * decrypted only into a stage_rec, whose free wipes them. A stage ref that is not a
 * uuid is passed as NULL to the uuid parameter, so Postgres never sees a bad cast. */
#include "store_admin.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TS(col) "to_char(" col " AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')"

/* $1 = uuid or NULL, $2 = name; a uuid match wins over a stage named like a uuid. */
#define REF_WHERE " WHERE s.uuid = $1::uuid OR s.name = $2"
#define REF_ORDER " ORDER BY (s.uuid = $1::uuid) IS TRUE DESC LIMIT 1"

int store_is_uuid(const char *s)
{
    if (!s || strlen(s) != 36)
        return 0;
    for (int i = 0; i < 36; i++) {
        char c = s[i];
        int dash = i == 8 || i == 13 || i == 18 || i == 23;
        int hex = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
        if (dash ? c != '-' : !hex)
            return 0;
    }
    return 1;
}

/* The two parameters of REF_WHERE. */
static void ref_params(const char *ref, const char *p[2])
{
    p[0] = store_is_uuid(ref) ? ref : NULL;
    p[1] = ref;
}

static const char *opt(const store_res *r, int row, int col)
{
    return store_res_isnull(r, row, col) ? NULL : store_res_get(r, row, col);
}

static int64_t i64(const store_res *r, int row, int col)
{
    int64_t v = 0;
    return store_res_i64(r, row, col, &v) == 0 ? v : 0;
}

static int is_true(const store_res *r, int row, int col)
{
    return !store_res_isnull(r, row, col) && store_res_get(r, row, col)[0] == 't';
}

/* ---- stage views ---- */

static const store_stmt STAGE_LIST = {
    "admin_stage_list",
    "SELECT s.id, s.uuid::text, s.name, s.api_hostname, s.client_id, s.client_secret_enc,"
    " s.admin_integration_key, s.admin_secret_key_enc, s.friendly_name, s.configure_flow,"
    " s.ca_bundle IS NOT NULL, COALESCE(s.sig_version, 0),"
    " (SELECT count(*) FROM duo_device d WHERE d.stage_id = s.id),"
    " " TS("s.created_at") ", " TS("s.updated_at") " FROM duo_stage s ORDER BY s.name"};

static const store_stmt STAGE_SHOW = {
    "admin_stage_show",
    "SELECT s.id, s.uuid::text, s.name, s.api_hostname, s.client_id, s.client_secret_enc,"
    " s.admin_integration_key, s.admin_secret_key_enc, s.friendly_name, s.configure_flow,"
    " s.ca_bundle IS NOT NULL, COALESCE(s.sig_version, 0),"
    " (SELECT count(*) FROM duo_device d WHERE d.stage_id = s.id),"
    " " TS("s.created_at") ", " TS("s.updated_at") " FROM duo_stage s" REF_WHERE REF_ORDER};

/* Fills a view from row i of a STAGE_LIST/STAGE_SHOW result and calls fn. */
static int emit_stage(const store_res *r, int i, stage_view_fn fn, void *arg)
{
    char cid[9] = "", aid[9] = "";
    const char *admin_env = opt(r, i, 7);
    if (secret_envelope_key_id(store_res_get(r, i, 5), cid) < 0)
        memcpy(cid, "invalid", 8);
    if (admin_env && secret_envelope_key_id(admin_env, aid) < 0)
        memcpy(aid, "invalid", 8);
    stage_view v = {
        .id = i64(r, i, 0),
        .uuid = store_res_get(r, i, 1),
        .name = store_res_get(r, i, 2),
        .api_hostname = store_res_get(r, i, 3),
        .client_id = store_res_get(r, i, 4),
        .client_secret_key_id = cid,
        .admin_integration_key = opt(r, i, 6),
        .admin_secret_key_id = admin_env ? aid : NULL,
        .friendly_name = opt(r, i, 8),
        .configure_flow = opt(r, i, 9),
        .has_ca_bundle = is_true(r, i, 10),
        .sig_version = (int)i64(r, i, 11),
        .devices = i64(r, i, 12),
        .created_at = store_res_get(r, i, 13),
        .updated_at = store_res_get(r, i, 14),
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
    const char *p[2];
    ref_params(ref, p);
    store_res *r = NULL;
    int rc = store_exec(s, &STAGE_SHOW, 2, p, &r, e);
    if (rc == 0 && store_res_rows(r) == 0)
        rc = err_set(e, ERR_NOTFOUND, "no stage '%s'", ref);
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
    "admin_stage_insert",
    "INSERT INTO duo_stage (name, api_hostname, client_id, client_secret_enc,"
    " admin_integration_key, admin_secret_key_enc, friendly_name, configure_flow,"
    " ca_bundle, sig_version) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10::smallint)"
    " RETURNING uuid::text"};

int store_stage_create(store *s, const secret_keyring *k, const stage_fields *f, char uuid_out[37],
                       err_t *e)
{
    int rc = check_create(f, e);
    if (rc < 0)
        return rc;
    char *csec = NULL, *asec = NULL, sig[8] = "";
    rc = seal(k, f->client_secret, STAGE_AAD_CLIENT_SECRET, &csec, e);
    if (rc == 0)
        rc = seal(k, empty_null(f->admin_secret_key), STAGE_AAD_ADMIN_SECRET, &asec, e);
    snprintf(sig, sizeof sig, "%d", f->sig_version);
    const char *p[10] = {f->name,
                         f->api_hostname,
                         f->client_id,
                         csec,
                         empty_null(f->admin_integration_key),
                         asec,
                         empty_null(f->friendly_name),
                         empty_null(f->configure_flow),
                         empty_null(f->ca_bundle),
                         f->sig_version ? sig : NULL};
    store_res *r = NULL;
    if (rc == 0)
        rc = store_exec(s, &STAGE_INSERT, 10, p, &r, e);
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
    "admin_stage_lock",
    "SELECT s.id, s.admin_integration_key IS NOT NULL, s.admin_secret_key_enc IS NOT NULL"
    " FROM duo_stage s" REF_WHERE REF_ORDER " FOR UPDATE"};

static const store_stmt STAGE_UPDATE = {
    "admin_stage_update",
    "UPDATE duo_stage SET name = COALESCE($2, name), api_hostname = COALESCE($3, api_hostname),"
    " client_id = COALESCE($4, client_id), client_secret_enc = COALESCE($5, client_secret_enc),"
    " admin_integration_key = CASE WHEN $6::text IS NULL THEN admin_integration_key"
    "   ELSE NULLIF($6, '') END,"
    " admin_secret_key_enc = CASE WHEN $7::text IS NULL THEN admin_secret_key_enc"
    "   ELSE NULLIF($7, '') END,"
    " friendly_name = CASE WHEN $8::text IS NULL THEN friendly_name ELSE NULLIF($8, '') END,"
    " configure_flow = CASE WHEN $9::text IS NULL THEN configure_flow ELSE NULLIF($9, '') END,"
    " ca_bundle = CASE WHEN $10::text IS NULL THEN ca_bundle ELSE NULLIF($10, '') END,"
    " sig_version = COALESCE($11::smallint, sig_version), updated_at = now()"
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
    const char *p[2];
    ref_params(ref, p);
    store_res *r = NULL;
    int rc = store_exec(s, &STAGE_LOCK, 2, p, &r, e);
    if (rc == 0 && store_res_rows(r) == 0)
        rc = err_set(e, ERR_NOTFOUND, "no stage '%s'", ref);
    if (rc == 0) {
        snprintf(id, 24, "%s", store_res_get(r, 0, 0));
        admin[0] = is_true(r, 0, 1);
        admin[1] = is_true(r, 0, 2);
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
    char sig[8];
    snprintf(sig, sizeof sig, "%d", f->sig_version);
    const char *p[11] = {id,
                         f->name,
                         f->api_hostname,
                         f->client_id,
                         csec,
                         f->admin_integration_key,
                         asec,
                         f->friendly_name,
                         f->configure_flow,
                         f->ca_bundle,
                         f->sig_version ? sig : NULL};
    int rc = store_exec(s, &STAGE_UPDATE, 11, p, NULL, e);
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
    "admin_stage_devices", "SELECT count(*) FROM duo_device WHERE stage_id = $1::bigint"};
static const store_stmt STAGE_DELETE = {"admin_stage_delete",
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
        *devices = i64(r, 0, 0);
    if (rc == 0)
        rc = store_exec(s, &STAGE_DELETE, 1, p, NULL, e);
    if (rc == 0)
        rc = store_commit(s, e);
    if (rc < 0)
        store_rollback(s);
    store_res_free(r);
    return rc;
}

/* ---- rotation ---- */

static const store_stmt STAGE_SECRETS = {
    "admin_stage_secrets",
    "SELECT id, client_secret_enc, admin_secret_key_enc FROM duo_stage ORDER BY id FOR UPDATE"};
static const store_stmt STAGE_RESEAL = {
    "admin_stage_reseal",
    "UPDATE duo_stage SET client_secret_enc = $2, admin_secret_key_enc = $3, updated_at = now()"
    " WHERE id = $1::bigint"};

/* Re-encrypts env under the current key when it is not already; *out is a fresh copy
 * either way (caller frees), *changed says whether it was rewritten. */
static int reseal(const secret_keyring *k, const char *env, const char *aad, char **out,
                  int *changed, err_t *e)
{
    int need = secret_needs_rotation(k, env);
    if (need < 0)
        return err_set(e, ERR_CRYPTO, "malformed envelope in %s", aad);
    *changed = need;
    if (!need) {
        *out = strdup(env);
        return *out ? 0 : err_set(e, ERR_NOMEM, "out of memory");
    }
    char *plain = NULL;
    int rc = secret_decrypt(k, env, aad, &plain, e);
    if (rc == 0)
        rc = secret_encrypt(k, plain, aad, out, e);
    secret_free(plain);
    return rc;
}

static int rotate_row(store *s, const secret_keyring *k, const store_res *r, int i, int64_t *count,
                      err_t *e)
{
    char *c = NULL, *a = NULL;
    int cchg = 0, achg = 0;
    const char *admin_env = opt(r, i, 2);
    int rc = reseal(k, store_res_get(r, i, 1), STAGE_AAD_CLIENT_SECRET, &c, &cchg, e);
    if (rc == 0 && admin_env)
        rc = reseal(k, admin_env, STAGE_AAD_ADMIN_SECRET, &a, &achg, e);
    const char *p[3] = {store_res_get(r, i, 0), c, a};
    if (rc == 0 && (cchg || achg))
        rc = store_exec(s, &STAGE_RESEAL, 3, p, NULL, e);
    if (rc == 0)
        *count += cchg + achg;
    if (rc < 0)
        err_wrap(e, rc, "stage id %s", store_res_get(r, i, 0));
    free(c);
    free(a);
    return rc;
}

int store_stage_rotate(store *s, const secret_keyring *k, int64_t *count, err_t *e)
{
    store_res *r = NULL;
    int64_t n = 0;
    int rc = store_begin(s, e);
    if (rc == 0)
        rc = store_exec(s, &STAGE_SECRETS, 0, NULL, &r, e);
    for (int i = 0; rc == 0 && i < store_res_rows(r); i++)
        rc = rotate_row(s, k, r, i, &n, e);
    if (rc == 0)
        rc = store_commit(s, e);
    if (rc < 0)
        store_rollback(s);
    else
        *count = n;
    store_res_free(r);
    return rc;
}

/* ---- decrypted load ---- */

static const store_stmt STAGE_GET = {
    "admin_stage_get",
    "SELECT s.id, s.uuid::text, s.name, s.api_hostname, s.client_id, s.client_secret_enc,"
    " s.admin_integration_key, s.admin_secret_key_enc, s.friendly_name, s.configure_flow,"
    " s.ca_bundle, COALESCE(s.sig_version, 0) FROM duo_stage s" REF_WHERE REF_ORDER};

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
    const char *v = opt(r, 0, col);
    *out = v ? strdup(v) : NULL;
    return v && !*out ? -1 : 0;
}

static int fill_rec(const secret_keyring *k, const store_res *r, stage_rec *out, err_t *e)
{
    out->id = i64(r, 0, 0);
    snprintf(out->uuid, sizeof out->uuid, "%s", store_res_get(r, 0, 1));
    out->sig_version = (int)i64(r, 0, 11);
    int cols[] = {2, 3, 4, 6, 8, 9, 10};
    char **dst[] = {
        &out->name,          &out->api_hostname,   &out->client_id, &out->admin_integration_key,
        &out->friendly_name, &out->configure_flow, &out->ca_bundle};
    for (size_t i = 0; i < sizeof cols / sizeof cols[0]; i++)
        if (dup_cell(r, cols[i], dst[i]) < 0)
            return err_set(e, ERR_NOMEM, "out of memory");
    int rc =
        secret_decrypt(k, store_res_get(r, 0, 5), STAGE_AAD_CLIENT_SECRET, &out->client_secret, e);
    if (rc == 0 && opt(r, 0, 7))
        rc = secret_decrypt(k, opt(r, 0, 7), STAGE_AAD_ADMIN_SECRET, &out->admin_secret_key, e);
    if (rc < 0)
        err_wrap(e, rc, "stage %s", out->uuid);
    return rc;
}

static const store_stmt STAGE_GET_UUID = {
    "admin_stage_get_uuid",
    "SELECT s.id, s.uuid::text, s.name, s.api_hostname, s.client_id, s.client_secret_enc,"
    " s.admin_integration_key, s.admin_secret_key_enc, s.friendly_name, s.configure_flow,"
    " s.ca_bundle, COALESCE(s.sig_version, 0) FROM duo_stage s WHERE s.uuid = $1::uuid"};

static int get_rec(store *s, const secret_keyring *k, const store_stmt *st, int n,
                   const char *const *p, const char *ref, stage_rec *out, err_t *e)
{
    memset(out, 0, sizeof *out);
    store_res *r = NULL;
    int rc = store_exec(s, st, n, p, &r, e);
    if (rc == 0 && store_res_rows(r) == 0)
        rc = err_set(e, ERR_NOTFOUND, "no stage '%s'", ref);
    if (rc == 0)
        rc = fill_rec(k, r, out, e);
    if (rc < 0)
        stage_rec_free(out);
    store_res_free(r);
    return rc;
}

int store_stage_get(store *s, const secret_keyring *k, const char *ref, stage_rec *out, err_t *e)
{
    const char *p[2];
    ref_params(ref, p);
    return get_rec(s, k, &STAGE_GET, 2, p, ref, out, e);
}

int store_stage_load(store *s, const secret_keyring *k, const char *uuid, stage_rec *out, err_t *e)
{
    memset(out, 0, sizeof *out);
    if (!store_is_uuid(uuid))
        return err_set(e, ERR_INVAL, "stage id is not a uuid");
    const char *p[1] = {uuid};
    return get_rec(s, k, &STAGE_GET_UUID, 1, p, uuid, out, e);
}

/* ---- users ---- */

static int username_ok(const char *u)
{
    size_t n = u ? strlen(u) : 0;
    return n >= 1 && n <= 150;
}

static const store_stmt USER_UPSERT = {
    "admin_user_upsert",
    "INSERT INTO app_user (username, email, active) VALUES ($1, $2, $3::boolean)"
    " ON CONFLICT (username) DO UPDATE SET email = COALESCE(EXCLUDED.email, app_user.email),"
    " active = EXCLUDED.active RETURNING id, (xmax = 0)"};

int store_user_upsert(store *s, const char *username, const char *email, int active, int64_t *id,
                      int *inserted, err_t *e)
{
    if (!username_ok(username))
        return err_set(e, ERR_INVAL, "username must be 1 to 150 bytes");
    const char *p[3] = {username, email, active ? "true" : "false"};
    store_res *r = NULL;
    int rc = store_exec(s, &USER_UPSERT, 3, p, &r, e);
    if (rc == 0 && id)
        *id = i64(r, 0, 0);
    if (rc == 0 && inserted)
        *inserted = is_true(r, 0, 1);
    store_res_free(r);
    return rc;
}

static const store_stmt USER_LIST = {
    "admin_user_list", "SELECT id, uuid::text, username, email, active, " TS(
                           "created_at") " FROM app_user ORDER BY id LIMIT $1::bigint"};

int store_user_list(store *s, long limit, user_view_fn fn, void *arg, err_t *e)
{
    char lim[24];
    snprintf(lim, sizeof lim, "%ld", limit);
    const char *p[1] = {limit > 0 ? lim : NULL}; /* LIMIT NULL = no limit */
    store_res *r = NULL;
    int rc = store_exec(s, &USER_LIST, 1, p, &r, e);
    for (int i = 0; rc == 0 && i < store_res_rows(r); i++) {
        user_view v = {i64(r, i, 0), store_res_get(r, i, 1), store_res_get(r, i, 2),
                       opt(r, i, 3), is_true(r, i, 4),       store_res_get(r, i, 5)};
        rc = fn(&v, arg);
    }
    store_res_free(r);
    return rc;
}

/* Builds a Postgres text[] literal {"a","b",NULL}: a parameter value, never SQL.
 * Returns a fresh string the caller frees, or NULL when out of memory. */
static char *text_array(const char *const *v, size_t n)
{
    size_t cap = 3;
    for (size_t i = 0; i < n; i++)
        cap += (v && v[i] ? 2 * strlen(v[i]) + 2 : 4) + 1;
    char *out = malloc(cap), *w = out;
    if (!out)
        return NULL;
    *w++ = '{';
    for (size_t i = 0; i < n; i++) {
        if (i)
            *w++ = ',';
        if (!v || !v[i]) {
            memcpy(w, "NULL", 4);
            w += 4;
            continue;
        }
        *w++ = '"';
        for (const char *c = v[i]; *c; c++) {
            if (*c == '"' || *c == '\\')
                *w++ = '\\';
            *w++ = *c;
        }
        *w++ = '"';
    }
    *w++ = '}';
    *w = '\0';
    return out;
}

static const store_stmt USER_BATCH = {"admin_user_batch",
                                      "INSERT INTO app_user (username, email)"
                                      " SELECT * FROM unnest($1::text[], $2::text[])"
                                      " ON CONFLICT (username) DO NOTHING"};

int store_user_insert_batch(store *s, const char *const *usernames, const char *const *emails,
                            size_t n, int64_t *inserted, err_t *e)
{
    for (size_t i = 0; i < n; i++)
        if (!username_ok(usernames[i]))
            return err_set(e, ERR_INVAL, "username #%zu must be 1 to 150 bytes", i + 1);
    char *names = text_array(usernames, n), *mails = text_array(emails, n);
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

/* ---- devices ---- */

static const store_stmt STAGE_ID = {"admin_stage_id",
                                    "SELECT s.id FROM duo_stage s" REF_WHERE REF_ORDER};

static const store_stmt DEVICE_LIST = {
    "admin_device_list",
    "SELECT d.id, d.uuid::text, s.uuid::text, s.name, u.username, d.duo_user_id,"
    " d.duo_user_kind, d.name, d.confirmed, " TS("d.created_at") ", " TS(
        "d.last_used") " FROM duo_device d JOIN duo_stage s ON s.id = d.stage_id"
                       " JOIN app_user u ON u.id = d.user_id"
                       " WHERE ($1::bigint IS NULL OR d.stage_id = $1::bigint)"
                       " AND ($2::text IS NULL OR u.username = $2) ORDER BY d.id LIMIT $3::bigint"};

/* Resolves a stage ref to its numeric id (text). */
static int stage_id(store *s, const char *ref, char id[24], err_t *e)
{
    const char *p[2];
    ref_params(ref, p);
    store_res *r = NULL;
    int rc = store_exec(s, &STAGE_ID, 2, p, &r, e);
    if (rc == 0 && store_res_rows(r) == 0)
        rc = err_set(e, ERR_NOTFOUND, "no stage '%s'", ref);
    if (rc == 0)
        snprintf(id, 24, "%s", store_res_get(r, 0, 0));
    store_res_free(r);
    return rc;
}

static int emit_device(const store_res *r, int i, device_view_fn fn, void *arg)
{
    device_view v = {
        .id = i64(r, i, 0),
        .uuid = store_res_get(r, i, 1),
        .stage_uuid = store_res_get(r, i, 2),
        .stage_name = store_res_get(r, i, 3),
        .username = store_res_get(r, i, 4),
        .duo_user_id = store_res_get(r, i, 5),
        .duo_user_kind = store_res_get(r, i, 6),
        .name = store_res_get(r, i, 7),
        .confirmed = is_true(r, i, 8),
        .created_at = store_res_get(r, i, 9),
        .last_used = opt(r, i, 10),
    };
    return fn(&v, arg);
}

int store_device_list(store *s, const char *stage_ref, const char *username, long limit,
                      device_view_fn fn, void *arg, err_t *e)
{
    char sid[24] = "", lim[24];
    int rc = stage_ref ? stage_id(s, stage_ref, sid, e) : 0;
    snprintf(lim, sizeof lim, "%ld", limit);
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
    "admin_device_delete", "DELETE FROM duo_device WHERE id = $1::bigint OR uuid = $2::uuid"};

/* 1 when s is a positive decimal integer that fits a bigint. */
static int is_id(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 18)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (s[i] < '0' || s[i] > '9')
            return 0;
    return 1;
}

int store_device_delete(store *s, const char *id_or_uuid, err_t *e)
{
    int num = is_id(id_or_uuid), uuid = store_is_uuid(id_or_uuid);
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
