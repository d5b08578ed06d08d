/* store_keys.c - re-encrypts stage secrets under the keyring's current key
 * (store_keys.h).
 *
 * Invariant: the rows are locked (FOR UPDATE) and rewritten in one transaction; any
 * failure rolls all of it back. A row is written only when one of its secrets changed,
 * and a plaintext lives only between one secret_decrypt and the secret_free after it. */
#include "store_keys.h"

#include <stdlib.h>
#include <string.h>

#include "store_int.h"
#include "store_stage.h"

static const store_stmt STAGE_SECRETS = {
    "keys_stage_secrets",
    "SELECT id, client_secret_enc, admin_secret_key_enc FROM duo_stage ORDER BY id FOR UPDATE"};
static const store_stmt STAGE_RESEAL = {
    "keys_stage_reseal",
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
    const char *admin_env = store_col_opt(r, i, 2);
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
