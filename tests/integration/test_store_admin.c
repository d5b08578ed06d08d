/* test_store_admin.c - the operator's entities (store_stage, store_keys, store_user) on a
 * fresh database: stages round-trip with their secrets decrypted, a stage found by name
 * and by uuid, unknown and malformed refs, envelopes bound to their column, rotation,
 * and user batches whose names need array escaping. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "store_keys.h"
#include "store_stage.h"
#include "store_user.h"
#include "testlib.h"

#define KEY_A "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
#define KEY_B "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE="

typedef struct {
    char db[512];
    store *s;
    secret_keyring *k;
} fixture;

static secret_keyring *ring(const char *cur, const char *prev)
{
    config c;
    memset(&c, 0, sizeof c);
    c.secret_key = (char *)cur;
    c.secret_key_previous = (char *)prev;
    err_t e = {0};
    secret_keyring *k = secret_keyring_load(&c, &e);
    assert_non_null(k);
    return k;
}

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    if (!f || !(f->s = tl_migrated_store("stadmin", f->db, sizeof f->db)))
        return -1;
    f->k = ring(KEY_A, NULL);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    store_close(f->s);
    secret_keyring_free(f->k);
    tl_drop_db(f->db);
    free(f);
    return 0;
}

static void create_stage(fixture *f, const char *name, int with_admin, char uuid[37])
{
    stage_fields in = {.name = name,
                       .api_hostname = "api-test.example.com",
                       .client_id = "CID",
                       .client_secret = "client-secret-\"'\\value",
                       .admin_integration_key = with_admin ? "DIKEY" : NULL,
                       .admin_secret_key = with_admin ? "admin-secret-value" : NULL,
                       .ca_bundle = "-----BEGIN CERTIFICATE-----\nX\n-----END CERTIFICATE-----\n",
                       .sig_version = 2};
    err_t e = {0};
    assert_int_equal(store_stage_create(f->s, f->k, &in, uuid, &e), 0);
    assert_true(store_is_uuid(uuid));
}

/* Copies the uuid of the stage shown (the view dies with the callback). */
static int view_uuid(const stage_view *v, void *arg)
{
    snprintf(arg, 37, "%s", v->uuid);
    return 0;
}

static void test_get_decrypts(void **state)
{
    fixture *f = *state;
    char uuid[37];
    create_stage(f, "get-stage", 1, uuid);
    stage_rec r;
    err_t e = {0};
    assert_int_equal(store_stage_load(f->s, f->k, uuid, &r, &e), 0);
    assert_string_equal(r.uuid, uuid);
    assert_string_equal(r.name, "get-stage");
    assert_string_equal(r.api_hostname, "api-test.example.com");
    assert_string_equal(r.client_id, "CID");
    assert_string_equal(r.client_secret, "client-secret-\"'\\value");
    assert_string_equal(r.admin_integration_key, "DIKEY");
    assert_string_equal(r.admin_secret_key, "admin-secret-value");
    assert_null(r.friendly_name);
    assert_non_null(strstr(r.ca_bundle, "BEGIN CERTIFICATE"));
    assert_int_equal(r.sig_version, 2);
    assert_true(r.id > 0);
    stage_rec_free(&r);
    assert_null(r.client_secret);
    stage_rec_free(&r); /* idempotent */
    char shown[37] = "";
    assert_int_equal(store_stage_show(f->s, "get-stage", view_uuid, shown, &e), 0);
    assert_string_equal(shown, uuid);
    shown[0] = '\0';
    assert_int_equal(store_stage_show(f->s, uuid, view_uuid, shown, &e), 0);
    assert_string_equal(shown, uuid);
}

static void test_without_admin(void **state)
{
    fixture *f = *state;
    char uuid[37];
    create_stage(f, "no-admin", 0, uuid);
    stage_rec r;
    err_t e = {0};
    assert_int_equal(store_stage_load(f->s, f->k, uuid, &r, &e), 0);
    assert_null(r.admin_integration_key);
    assert_null(r.admin_secret_key);
    stage_rec_free(&r);
}

static void test_not_found_and_bad_uuid(void **state)
{
    fixture *f = *state;
    stage_rec r;
    err_t e = {0};
    assert_int_equal(store_stage_load(f->s, f->k, "00000000-0000-4000-8000-000000000000", &r, &e),
                     ERR_NOTFOUND);
    const char *bad[] = {"",
                         "not-a-uuid",
                         "00000000-0000-4000-8000-00000000000",
                         "00000000-0000-4000-8000-00000000000g",
                         "'; DROP TABLE duo_stage; --",
                         "0000000000000-4000-8000-000000000000"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal(store_stage_load(f->s, f->k, bad[i], &r, &e), ERR_INVAL);
    assert_true(store_ok(f->s)); /* no Postgres error on the way */
    char shown[37] = "";
    assert_int_equal(store_stage_show(f->s, "no such stage", view_uuid, shown, &e), ERR_NOTFOUND);
    assert_int_equal(store_stage_show(f->s, "'; DROP TABLE duo_stage; --", view_uuid, shown, &e),
                     ERR_NOTFOUND);
    assert_string_equal(shown, "");
}

/* An envelope copied into the other column must not decrypt there. */
static void test_column_swap_rejected(void **state)
{
    fixture *f = *state;
    char uuid[37], sql[256];
    create_stage(f, "swap", 1, uuid);
    snprintf(sql, sizeof sql,
             "UPDATE duo_stage SET client_secret_enc = admin_secret_key_enc WHERE uuid = '%s'",
             uuid);
    assert_int_equal(tl_exec(f->db, sql), 0);
    stage_rec r;
    err_t e = {0};
    assert_int_equal(store_stage_load(f->s, f->k, uuid, &r, &e), ERR_CRYPTO);
    assert_null(strstr(e.msg, "admin-secret-value"));
    assert_null(r.client_secret);
    int64_t devices = 0; /* the broken row would stop test_rotation's all-or-nothing pass */
    assert_int_equal(store_stage_delete(f->s, uuid, &devices, &e), 0);
}

static void test_rotation(void **state)
{
    fixture *f = *state;
    char uuid[37];
    create_stage(f, "rotate", 1, uuid);
    secret_keyring *b_only = ring(KEY_B, NULL), *b_prev_a = ring(KEY_B, KEY_A);
    stage_rec r;
    err_t e = {0};
    assert_int_equal(store_stage_load(f->s, b_only, uuid, &r, &e), ERR_CRYPTO);
    assert_non_null(strstr(e.msg, secret_keyring_current_id(f->k)));
    int64_t n = -1;
    assert_int_equal(store_stage_rotate(f->s, b_only, &n, &e), ERR_CRYPTO);
    assert_false(store_in_tx(f->s));
    assert_int_equal(store_stage_rotate(f->s, b_prev_a, &n, &e), 0);
    assert_true(n >= 2);
    assert_int_equal(store_stage_load(f->s, b_only, uuid, &r, &e), 0);
    assert_string_equal(r.admin_secret_key, "admin-secret-value");
    stage_rec_free(&r);
    assert_int_equal(store_stage_rotate(f->s, b_prev_a, &n, &e), 0);
    assert_int_equal(n, 0);
    /* Rotate back so the other tests' key still reads everything. */
    secret_keyring *a_prev_b = ring(KEY_A, KEY_B);
    assert_int_equal(store_stage_rotate(f->s, a_prev_b, &n, &e), 0);
    secret_keyring_free(a_prev_b);
    secret_keyring_free(b_only);
    secret_keyring_free(b_prev_a);
}

static void test_update_and_delete(void **state)
{
    fixture *f = *state;
    char uuid[37];
    create_stage(f, "upd", 1, uuid);
    err_t e = {0};
    stage_fields ch = {.client_secret = "new-secret", .friendly_name = "Friendly"};
    assert_int_equal(store_stage_update(f->s, f->k, "upd", &ch, &e), 0);
    stage_fields half = {.admin_secret_key = ""};
    assert_int_equal(store_stage_update(f->s, f->k, uuid, &half, &e), ERR_INVAL);
    assert_false(store_in_tx(f->s));
    stage_rec r;
    assert_int_equal(store_stage_load(f->s, f->k, uuid, &r, &e), 0);
    assert_string_equal(r.client_secret, "new-secret");
    assert_string_equal(r.friendly_name, "Friendly");
    assert_string_equal(r.admin_secret_key, "admin-secret-value");
    stage_rec_free(&r);
    int64_t devices = -1;
    assert_int_equal(store_stage_delete(f->s, uuid, &devices, &e), 0);
    assert_int_equal(devices, 0);
    assert_int_equal(store_stage_delete(f->s, uuid, &devices, &e), ERR_NOTFOUND);
}

typedef struct {
    const char *want;
    char email[64]; /* copied: the view's strings die with the callback */
    int found;
} user_probe;

static int find_user(const user_view *v, void *arg)
{
    user_probe *p = arg;
    if (strcmp(v->username, p->want) == 0) {
        p->found++;
        snprintf(p->email, sizeof p->email, "%s", v->email ? v->email : "(null)");
    }
    return 0;
}

static void test_user_batch_escaping(void **state)
{
    fixture *f = *state;
    const char *names[] = {"plain", "with \"quote\"", "back\\slash", "comma,{brace}", "NULL"};
    const char *mails[] = {"a@x", NULL, "b@x", "c@x", NULL};
    int64_t added = 0;
    err_t e = {0};
    assert_int_equal(store_user_insert_batch(f->s, names, mails, 5, &added, &e), 0);
    assert_int_equal(added, 5);
    assert_int_equal(store_user_insert_batch(f->s, names, NULL, 5, &added, &e), 0);
    assert_int_equal(added, 0);
    for (size_t i = 0; i < 5; i++) {
        user_probe p = {.want = names[i]};
        assert_int_equal(store_user_list(f->s, 0, find_user, &p, &e), 0);
        assert_int_equal(p.found, 1);
        assert_string_equal(p.email, mails[i] ? mails[i] : "(null)");
    }
    const char *empty[] = {""};
    assert_int_equal(store_user_insert_batch(f->s, empty, NULL, 1, &added, &e), ERR_INVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_get_decrypts),
        cmocka_unit_test(test_without_admin),
        cmocka_unit_test(test_not_found_and_bad_uuid),
        cmocka_unit_test(test_column_swap_rejected),
        cmocka_unit_test(test_rotation),
        cmocka_unit_test(test_update_and_delete),
        cmocka_unit_test(test_user_batch_escaping),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
