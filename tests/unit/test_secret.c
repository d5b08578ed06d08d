/* test_secret.c - secret envelopes: round trip, AAD binding, tampering, key ids,
 * rotation with a previous key, malformed envelopes and malformed keys. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "secret.h"

/* 32 zero bytes and 32 bytes of 0x01; ids are the first 8 hex of SHA-256(key). */
#define KEY_A "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
#define KEY_A_ID "66687aad"
#define KEY_B "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE="
#define KEY_B_ID "72cd6e84"
#define AAD "duo_stage.client_secret"

static secret_keyring *ring(const char *cur, const char *prev, const char *file, err_t *e)
{
    config c;
    memset(&c, 0, sizeof c);
    c.secret_key = (char *)cur;
    c.secret_key_previous = (char *)prev;
    c.secret_key_file = (char *)file;
    return secret_keyring_load(&c, e);
}

static char *enc(const secret_keyring *k, const char *plain, const char *aad)
{
    char *out = NULL;
    err_t e = {0};
    assert_int_equal(secret_encrypt(k, plain, aad, &out, &e), 0);
    assert_non_null(out);
    return out;
}

static void test_round_trip(void **state)
{
    (void)state;
    err_t e = {0};
    secret_keyring *k = ring(KEY_A, NULL, NULL, &e);
    assert_non_null(k);
    assert_string_equal(secret_keyring_current_id(k), KEY_A_ID);
    const char *plains[] = {"s3cr3t-client-secret-value", "", "ünïcode ✓"};
    for (size_t i = 0; i < 3; i++) {
        char *env = enc(k, plains[i], AAD);
        assert_true(strncmp(env, "v1:" KEY_A_ID ":", 12) == 0);
        if (plains[i][0])
            assert_null(strstr(env, plains[i]));
        char *back = NULL;
        assert_int_equal(secret_decrypt(k, env, AAD, &back, &e), 0);
        assert_string_equal(back, plains[i]);
        assert_int_equal(secret_needs_rotation(k, env), 0);
        char id[9];
        assert_int_equal(secret_envelope_key_id(env, id), 0);
        assert_string_equal(id, KEY_A_ID);
        secret_free(back);
        free(env);
    }
    /* Fresh nonce each time: the same plaintext never gives the same envelope. */
    char *x = enc(k, "same", AAD), *y = enc(k, "same", AAD);
    assert_string_not_equal(x, y);
    free(x);
    free(y);
    secret_keyring_free(k);
}

static void test_wrong_aad(void **state)
{
    (void)state;
    err_t e = {0};
    secret_keyring *k = ring(KEY_A, NULL, NULL, &e);
    char *env = enc(k, "value", "duo_stage.client_secret");
    char *back = NULL;
    assert_int_equal(secret_decrypt(k, env, "duo_stage.admin_secret_key", &back, &e), ERR_CRYPTO);
    assert_null(back);
    assert_non_null(strstr(e.msg, "authentication failed"));
    assert_int_equal(secret_decrypt(k, env, NULL, &back, &e), ERR_CRYPTO);
    free(env);
    secret_keyring_free(k);
}

/* Flips one base64 character in the body at every position; each must fail. */
static void test_tamper(void **state)
{
    (void)state;
    err_t e = {0};
    secret_keyring *k = ring(KEY_A, NULL, NULL, &e);
    char *env = enc(k, "tamper-me", AAD);
    size_t body = 12, len = strlen(env);
    for (size_t i = body; i < len && env[i] != '='; i++) {
        char saved = env[i];
        env[i] = saved == 'A' ? 'B' : 'A';
        char *back = NULL;
        int rc = secret_decrypt(k, env, AAD, &back, &e);
        assert_true(rc == ERR_CRYPTO || rc == ERR_INVAL);
        assert_null(back);
        env[i] = saved;
    }
    char *back = NULL;
    assert_int_equal(secret_decrypt(k, env, AAD, &back, &e), 0);
    secret_free(back);
    free(env);
    secret_keyring_free(k);
}

static void test_unknown_key_id(void **state)
{
    (void)state;
    err_t e = {0};
    secret_keyring *a = ring(KEY_A, NULL, NULL, &e);
    secret_keyring *b = ring(KEY_B, NULL, NULL, &e);
    char *env = enc(a, "under-a", AAD);
    char *back = NULL;
    assert_int_equal(secret_decrypt(b, env, AAD, &back, &e), ERR_CRYPTO);
    assert_non_null(strstr(e.msg, KEY_A_ID));
    assert_non_null(strstr(e.msg, "DUO_SECRET_KEY_PREVIOUS"));
    assert_null(back);
    assert_int_equal(secret_needs_rotation(b, env), 1);
    free(env);
    secret_keyring_free(a);
    secret_keyring_free(b);
}

static void test_previous_key_decrypts(void **state)
{
    (void)state;
    err_t e = {0};
    secret_keyring *old = ring(KEY_A, NULL, NULL, &e);
    secret_keyring *rot = ring(KEY_B, KEY_A, NULL, &e);
    assert_non_null(rot);
    assert_string_equal(secret_keyring_current_id(rot), KEY_B_ID);
    char *env = enc(old, "rotate-me", AAD);
    assert_int_equal(secret_needs_rotation(rot, env), 1);
    char *back = NULL;
    assert_int_equal(secret_decrypt(rot, env, AAD, &back, &e), 0);
    assert_string_equal(back, "rotate-me");
    char *fresh = enc(rot, back, AAD);
    assert_true(strncmp(fresh, "v1:" KEY_B_ID ":", 12) == 0);
    assert_int_equal(secret_needs_rotation(rot, fresh), 0);
    /* The old ring cannot read the new envelope. */
    char *none = NULL;
    assert_int_equal(secret_decrypt(old, fresh, AAD, &none, &e), ERR_CRYPTO);
    secret_free(back);
    free(env);
    free(fresh);
    secret_keyring_free(old);
    secret_keyring_free(rot);
}

static void test_malformed_envelopes(void **state)
{
    (void)state;
    err_t e = {0};
    secret_keyring *k = ring(KEY_A, NULL, NULL, &e);
    const char *bad[] = {
        "",
        "plain-secret",
        "v2:" KEY_A_ID ":AAAA",
        "v1:" KEY_A_ID,
        "v1:" KEY_A_ID ":",
        "v1:66687AAD:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "v1:6668:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "v1:" KEY_A_ID ":AAAA", /* shorter than nonce + tag */
        "v1:" KEY_A_ID ":!!!!AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "v1:" KEY_A_ID ":AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", /* not a multiple of 4 */
        "v1:" KEY_A_ID ":AA==AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char *back = NULL;
        assert_int_equal(secret_decrypt(k, bad[i], AAD, &back, &e), ERR_INVAL);
        assert_null(back);
    }
    assert_int_equal(secret_needs_rotation(k, "garbage"), ERR_INVAL);
    assert_int_equal(secret_needs_rotation(k, NULL), ERR_INVAL);
    char id[9];
    assert_int_equal(secret_envelope_key_id("v1:xyz:AAAA", id), ERR_INVAL);
    /* Well-formed but forged: authentication failure, not a crash. */
    char *back = NULL;
    assert_int_equal(secret_decrypt(k, "v1:" KEY_A_ID ":AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
                                    AAD, &back, &e),
                     ERR_CRYPTO);
    secret_keyring_free(k);
}

static void test_malformed_keys(void **state)
{
    (void)state;
    err_t e = {0};
    assert_null(ring(NULL, NULL, NULL, &e));
    assert_int_equal(e.code, ERR_CONFIG);
    assert_non_null(strstr(e.msg, "DUO_SECRET_KEY"));
    const char *bad[] = {"not base64!", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA==",
                         "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "AAA"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        memset(&e, 0, sizeof e);
        assert_null(ring(bad[i], NULL, NULL, &e));
        assert_int_equal(e.code, ERR_CRYPTO);
        assert_non_null(strstr(e.msg, "DUO_SECRET_KEY"));
        assert_null(strstr(e.msg, bad[i])); /* never echo key material */
    }
    memset(&e, 0, sizeof e);
    assert_null(ring(KEY_A, "short", NULL, &e));
    assert_non_null(strstr(e.msg, "DUO_SECRET_KEY_PREVIOUS"));
    memset(&e, 0, sizeof e);
    assert_null(ring(NULL, NULL, "/nonexistent/duo-key", &e));
    assert_int_equal(e.code, ERR_CONFIG);
    assert_non_null(strstr(e.msg, "DUO_SECRET_KEY_FILE"));
}

static void test_key_file(void **state)
{
    (void)state;
    char path[] = "/tmp/duo-secret-test-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    const char text[] = KEY_B "\n";
    assert_int_equal(write(fd, text, sizeof text - 1), (ssize_t)(sizeof text - 1));
    close(fd);
    err_t e = {0};
    secret_keyring *k = ring(NULL, NULL, path, &e);
    assert_non_null(k);
    assert_string_equal(secret_keyring_current_id(k), KEY_B_ID);
    secret_keyring_free(k);
    /* DUO_SECRET_KEY wins over the file. */
    k = ring(KEY_A, NULL, path, &e);
    assert_string_equal(secret_keyring_current_id(k), KEY_A_ID);
    secret_keyring_free(k);
    unlink(path);
}

/* A key file other users can read is refused, as ssh refuses such private keys; the
 * message names the setting, the file and the fix, and never the key. */
static void test_key_file_mode(void **state)
{
    (void)state;
    char path[] = "/tmp/duo-secret-mode-XXXXXX";
    int fd = mkstemp(path); /* mode 0600 */
    assert_true(fd >= 0);
    const char text[] = KEY_B "\n";
    assert_int_equal(write(fd, text, sizeof text - 1), (ssize_t)(sizeof text - 1));
    close(fd);
    static const mode_t bad[] = {0644, 0640, 0604, 0660};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(chmod(path, bad[i]), 0);
        err_t e = {0};
        assert_null(ring(NULL, NULL, path, &e));
        assert_int_equal(e.code, ERR_CONFIG);
        assert_non_null(strstr(e.msg, "DUO_SECRET_KEY_FILE"));
        assert_non_null(strstr(e.msg, path));
        assert_non_null(strstr(e.msg, "chmod 600"));
        assert_null(strstr(e.msg, KEY_B));
    }
    static const mode_t good[] = {0600, 0400};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        assert_int_equal(chmod(path, good[i]), 0);
        err_t e = {0};
        secret_keyring *k = ring(NULL, NULL, path, &e);
        assert_non_null(k);
        secret_keyring_free(k);
    }
    unlink(path);
}

/* A Docker secret: owned by another user (root, when the worker runs as 10001) and
 * mounted 0444. Accepted as long as nobody but its owner can write it. Giving a file to
 * another owner takes root, so the test needs it (the suite runs as root here). */
static void test_key_file_of_another_owner(void **state)
{
    (void)state;
    if (geteuid() != 0)
        skip(); /* only root can give a file away */
    char path[] = "/tmp/duo-secret-owner-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    const char text[] = KEY_B "\n";
    assert_int_equal(write(fd, text, sizeof text - 1), (ssize_t)(sizeof text - 1));
    close(fd);
    assert_int_equal(chown(path, 65534, 65534), 0);
    static const mode_t good[] = {0444, 0440, 0400, 0644};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        assert_int_equal(chmod(path, good[i]), 0);
        err_t e = {0};
        secret_keyring *k = ring(NULL, NULL, path, &e);
        if (!k)
            fail_msg("mode %04o of another owner refused: %s", (unsigned)good[i], e.msg);
        secret_keyring_free(k);
    }
    static const mode_t bad[] = {0666, 0664, 0646};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(chmod(path, bad[i]), 0);
        err_t e = {0};
        assert_null(ring(NULL, NULL, path, &e));
        assert_non_null(strstr(e.msg, "change the key"));
    }
    /* Our own file at 0444 is still refused: we could (and should) chmod it. */
    assert_int_equal(chown(path, 0, 0), 0);
    assert_int_equal(chmod(path, 0444), 0);
    err_t e = {0};
    assert_null(ring(NULL, NULL, path, &e));
    assert_non_null(strstr(e.msg, "chmod 600"));
    unlink(path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_wrong_aad),
        cmocka_unit_test(test_tamper),
        cmocka_unit_test(test_unknown_key_id),
        cmocka_unit_test(test_previous_key_decrypts),
        cmocka_unit_test(test_malformed_envelopes),
        cmocka_unit_test(test_malformed_keys),
        cmocka_unit_test(test_key_file),
        cmocka_unit_test(test_key_file_mode),
        cmocka_unit_test(test_key_file_of_another_owner),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
