/* secret.c - AES-256-GCM envelopes for secrets at rest (OpenSSL 3 EVP).
 *
 * Invariant: key bytes and plaintext live only in buffers this module wipes
 * (OPENSSL_cleanse) before freeing, or in caller-owned buffers for secret_free(); every
 * error path unwinds through one label that wipes. A nonce is never reused: each
 * encryption draws 12 fresh bytes from RAND_bytes. */
#include "secret.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

#define KEY_LEN 32
#define NONCE_LEN 12
#define TAG_LEN 16
#define ID_LEN 8
#define MAX_PLAINTEXT (1 << 20)
#define MAX_KEY_FILE 4096

typedef struct {
    unsigned char bytes[KEY_LEN];
    char id[ID_LEN + 1];
} ring_key;

struct secret_keyring {
    ring_key current;
    ring_key previous;
    int has_previous;
};

/* ---- strict base64 (RFC 4648 alphabet, padding required, no whitespace) ---- */

static int b64_value(unsigned char ch)
{
    if (ch >= 'A' && ch <= 'Z')
        return ch - 'A';
    if (ch >= 'a' && ch <= 'z')
        return ch - 'a' + 26;
    if (ch >= '0' && ch <= '9')
        return ch - '0' + 52;
    if (ch == '+')
        return 62;
    if (ch == '/')
        return 63;
    return -1;
}

/* Decodes len characters of s into a fresh buffer (*out, caller frees, wiping when it
 * held key material). Returns 0 or -1 on any malformed input. */
static int b64_decode(const char *s, size_t len, unsigned char **out, size_t *outlen)
{
    if (len == 0 || len % 4 != 0)
        return -1;
    size_t pad = (s[len - 1] == '=') + (len > 1 && s[len - 2] == '=');
    unsigned char *buf = malloc(len / 4 * 3);
    if (!buf)
        return -1;
    size_t n = 0;
    for (size_t i = 0; i < len; i += 4) {
        int v[4];
        for (int j = 0; j < 4; j++) {
            int is_pad = s[i + j] == '=' && i + 4 == len && j >= 4 - (int)pad;
            v[j] = is_pad ? 0 : b64_value((unsigned char)s[i + j]);
            if (v[j] < 0) {
                OPENSSL_cleanse(buf, n);
                free(buf);
                return -1;
            }
        }
        /* Canonical only: the bits under the padding must be zero, so each byte
         * string has exactly one encoding. */
        int loose = i + 4 == len && ((pad == 2 && (v[1] & 15)) || (pad == 1 && (v[2] & 3)));
        if (loose) {
            OPENSSL_cleanse(buf, n);
            free(buf);
            return -1;
        }
        unsigned long w = ((unsigned long)v[0] << 18) | ((unsigned long)v[1] << 12) |
                          ((unsigned long)v[2] << 6) | (unsigned long)v[3];
        buf[n++] = (unsigned char)(w >> 16);
        buf[n++] = (unsigned char)(w >> 8);
        buf[n++] = (unsigned char)w;
    }
    *out = buf;
    *outlen = n - pad;
    return 0;
}

/* Encodes into a fresh NUL-terminated string the caller frees, or NULL. */
static char *b64_encode(const unsigned char *in, size_t len)
{
    char *out = malloc((len + 2) / 3 * 4 + 1);
    if (!out)
        return NULL;
    EVP_EncodeBlock((unsigned char *)out, in, (int)len);
    return out;
}

/* ---- keys ---- */

static void key_id(const unsigned char key[KEY_LEN], char id[ID_LEN + 1])
{
    unsigned char digest[SHA256_DIGEST_LENGTH];
    static const char hex[] = "0123456789abcdef";
    SHA256(key, KEY_LEN, digest);
    for (int i = 0; i < ID_LEN / 2; i++) {
        id[2 * i] = hex[digest[i] >> 4];
        id[2 * i + 1] = hex[digest[i] & 15];
    }
    id[ID_LEN] = '\0';
}

/* Parses base64 text (surrounding whitespace ignored) into a 32-byte key. `var` names
 * the setting for the message; the message never echoes the value. */
static int key_parse(const char *text, const char *var, ring_key *k, err_t *e)
{
    size_t a = 0, b = strlen(text);
    while (a < b && strchr(" \t\r\n", text[a]))
        a++;
    while (b > a && strchr(" \t\r\n", text[b - 1]))
        b--;
    unsigned char *raw = NULL;
    size_t rawlen = 0;
    if (b64_decode(text + a, b - a, &raw, &rawlen) < 0)
        return err_set(e, ERR_CRYPTO,
                       "%s is not valid base64 (expected 32 random bytes, e.g. from "
                       "`openssl rand -base64 32`)",
                       var);
    if (rawlen != KEY_LEN) {
        OPENSSL_cleanse(raw, rawlen);
        free(raw);
        return err_set(e, ERR_CRYPTO, "%s decodes to %zu bytes, expected 32", var, rawlen);
    }
    memcpy(k->bytes, raw, KEY_LEN);
    OPENSSL_cleanse(raw, rawlen);
    free(raw);
    key_id(k->bytes, k->id);
    return 0;
}

/* Why a key file is refused, or NULL. As ssh does with private keys: a key file of our
 * own that other users can read is already disclosed (a mistake its owner fixes with
 * chmod). A file owned by another user (root: a Docker or Kubernetes secret, mounted
 * 0444 for the container's user) that nobody but that owner can write was given to us
 * read-only on purpose; the container is its boundary. Writable by others: never. */
static const char *key_file_refusal(const struct stat *st, uid_t me)
{
    if (st->st_mode & 022)
        return "lets other users change the key; refusing it (chmod 600 the file, or mount "
               "it read-only)";
    if (st->st_uid == me && (st->st_mode & 077))
        return "lets other users read the key; refusing it (chmod 600 the file)";
    return NULL;
}

/* Reads the key file (small, text) into a fresh buffer the caller wipes and frees. */
static int read_key_file(const char *path, char **out, err_t *e)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return err_set(e, ERR_CONFIG, "DUO_SECRET_KEY_FILE %s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fileno(f), &st) != 0) {
        int err = errno;
        fclose(f);
        return err_set(e, ERR_CONFIG, "DUO_SECRET_KEY_FILE %s: %s", path, strerror(err));
    }
    const char *why = key_file_refusal(&st, geteuid());
    if (why) {
        fclose(f);
        return err_set(e, ERR_CONFIG, "DUO_SECRET_KEY_FILE %s: mode %04o %s", path,
                       (unsigned)(st.st_mode & 07777), why);
    }
    char *buf = calloc(1, MAX_KEY_FILE + 1);
    if (!buf) {
        fclose(f);
        return err_set(e, ERR_NOMEM, "out of memory");
    }
    size_t n = fread(buf, 1, MAX_KEY_FILE + 1, f);
    int bad = ferror(f) || n > MAX_KEY_FILE;
    fclose(f);
    if (bad) {
        secret_free(buf);
        return err_set(e, ERR_CONFIG, "DUO_SECRET_KEY_FILE %s: unreadable or too large", path);
    }
    buf[n] = '\0';
    *out = buf;
    return 0;
}

static int load_current(const config *c, ring_key *k, err_t *e)
{
    if (c->secret_key && c->secret_key[0])
        return key_parse(c->secret_key, "DUO_SECRET_KEY", k, e);
    if (!c->secret_key_file || !c->secret_key_file[0])
        return err_set(e, ERR_CONFIG,
                       "no secret key configured: set DUO_SECRET_KEY (base64 of 32 bytes, "
                       "e.g. `openssl rand -base64 32`) or DUO_SECRET_KEY_FILE");
    char *text = NULL;
    int rc = read_key_file(c->secret_key_file, &text, e);
    if (rc < 0)
        return rc;
    rc = key_parse(text, "DUO_SECRET_KEY_FILE", k, e);
    secret_free(text);
    return rc;
}

secret_keyring *secret_keyring_load(const config *c, err_t *e)
{
    secret_keyring *k = calloc(1, sizeof *k);
    if (!k) {
        err_set(e, ERR_NOMEM, "out of memory");
        return NULL;
    }
    if (load_current(c, &k->current, e) < 0)
        goto fail;
    if (c->secret_key_previous && c->secret_key_previous[0]) {
        if (key_parse(c->secret_key_previous, "DUO_SECRET_KEY_PREVIOUS", &k->previous, e) < 0)
            goto fail;
        k->has_previous = strcmp(k->previous.id, k->current.id) != 0;
    }
    return k;
fail:
    secret_keyring_free(k);
    return NULL;
}

void secret_keyring_free(secret_keyring *k)
{
    if (!k)
        return;
    OPENSSL_cleanse(k, sizeof *k);
    free(k);
}

const char *secret_keyring_current_id(const secret_keyring *k)
{
    return k->current.id;
}

void secret_free(char *p)
{
    if (!p)
        return;
    OPENSSL_cleanse(p, strlen(p));
    free(p);
}

/* ---- envelopes ---- */

/* Checks "v1:<8 lowercase hex>:" and returns a pointer to the base64 part, or NULL. */
static const char *envelope_body(const char *env, char id[ID_LEN + 1])
{
    if (!env || strncmp(env, "v1:", 3) != 0)
        return NULL;
    for (int i = 0; i < ID_LEN; i++) {
        char ch = env[3 + i];
        if (!((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f')))
            return NULL;
        id[i] = ch;
    }
    id[ID_LEN] = '\0';
    if (env[3 + ID_LEN] != ':')
        return NULL;
    return env + 3 + ID_LEN + 1;
}

static const ring_key *ring_find(const secret_keyring *k, const char *id)
{
    if (strcmp(k->current.id, id) == 0)
        return &k->current;
    if (k->has_previous && strcmp(k->previous.id, id) == 0)
        return &k->previous;
    return NULL;
}

int secret_needs_rotation(const secret_keyring *k, const char *envelope)
{
    char id[ID_LEN + 1];
    if (!envelope_body(envelope, id))
        return ERR_INVAL;
    return strcmp(id, k->current.id) != 0;
}

int secret_envelope_key_id(const char *envelope, char id[ID_LEN + 1])
{
    return envelope_body(envelope, id) ? 0 : ERR_INVAL;
}

/* One GCM pass. enc=1: in -> out (same length), tag written; enc=0: tag checked.
 * Returns 0 or -1 (for decryption: authentication failed). */
static int gcm(int enc, const unsigned char *key, const unsigned char *nonce, const char *aad,
               const unsigned char *in, int len, unsigned char *out, unsigned char *tag)
{
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    int n = 0, ok = ctx != NULL;
    ok = ok && EVP_CipherInit_ex(ctx, EVP_aes_256_gcm(), NULL, NULL, NULL, enc) == 1;
    ok = ok && EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_IVLEN, NONCE_LEN, NULL) == 1;
    ok = ok && EVP_CipherInit_ex(ctx, NULL, NULL, key, nonce, enc) == 1;
    ok = ok && EVP_CipherUpdate(ctx, NULL, &n, (const unsigned char *)aad, (int)strlen(aad)) == 1;
    ok = ok && (len == 0 || EVP_CipherUpdate(ctx, out, &n, in, len) == 1);
    if (ok && !enc)
        ok = EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, TAG_LEN, tag) == 1;
    ok = ok && EVP_CipherFinal_ex(ctx, out + (len == 0 ? 0 : n), &n) == 1;
    if (ok && enc)
        ok = EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, TAG_LEN, tag) == 1;
    EVP_CIPHER_CTX_free(ctx);
    return ok ? 0 : -1;
}

/* Formats "v1:<id>:<b64>" into a fresh string (*out). */
static int envelope_format(const char *id, const unsigned char *blob, size_t len, char **out,
                           err_t *e)
{
    char *b64 = b64_encode(blob, len);
    if (!b64)
        return err_set(e, ERR_NOMEM, "out of memory");
    size_t total = 3 + ID_LEN + 1 + strlen(b64) + 1;
    char *s = malloc(total);
    if (!s) {
        free(b64);
        return err_set(e, ERR_NOMEM, "out of memory");
    }
    snprintf(s, total, "v1:%s:%s", id, b64);
    free(b64);
    *out = s;
    return 0;
}

int secret_encrypt(const secret_keyring *k, const char *plaintext, const char *aad, char **out,
                   err_t *e)
{
    size_t len = strlen(plaintext);
    if (len > MAX_PLAINTEXT)
        return err_set(e, ERR_INVAL, "secret too long (%zu bytes, limit %d)", len, MAX_PLAINTEXT);
    unsigned char *blob = malloc(NONCE_LEN + len + TAG_LEN);
    if (!blob)
        return err_set(e, ERR_NOMEM, "out of memory");
    int rc = 0;
    if (RAND_bytes(blob, NONCE_LEN) != 1 ||
        gcm(1, k->current.bytes, blob, aad ? aad : "", (const unsigned char *)plaintext, (int)len,
            blob + NONCE_LEN, blob + NONCE_LEN + len) < 0)
        rc = err_set(e, ERR_CRYPTO, "encryption failed (OpenSSL)");
    if (rc == 0)
        rc = envelope_format(k->current.id, blob, NONCE_LEN + len + TAG_LEN, out, e);
    free(blob);
    return rc;
}

int secret_decrypt(const secret_keyring *k, const char *envelope, const char *aad, char **out,
                   err_t *e)
{
    char id[ID_LEN + 1];
    const char *body = envelope_body(envelope, id);
    unsigned char *blob = NULL;
    size_t bloblen = 0;
    if (!body || b64_decode(body, strlen(body), &blob, &bloblen) < 0 ||
        bloblen < NONCE_LEN + TAG_LEN || bloblen > NONCE_LEN + TAG_LEN + MAX_PLAINTEXT) {
        free(blob);
        return err_set(e, ERR_INVAL, "malformed secret envelope (expected v1:<keyid>:<base64>)");
    }
    const ring_key *key = ring_find(k, id);
    if (!key) {
        free(blob);
        return err_set(e, ERR_CRYPTO,
                       "secret is encrypted with key id %s, which is not loaded (current key "
                       "id %s): set DUO_SECRET_KEY_PREVIOUS to the key with id %s",
                       id, k->current.id, id);
    }
    size_t len = bloblen - NONCE_LEN - TAG_LEN;
    char *plain = malloc(len + 1);
    if (!plain) {
        free(blob);
        return err_set(e, ERR_NOMEM, "out of memory");
    }
    int rc = gcm(0, key->bytes, blob, aad ? aad : "", blob + NONCE_LEN, (int)len,
                 (unsigned char *)plain, blob + NONCE_LEN + len);
    free(blob);
    if (rc < 0) {
        OPENSSL_cleanse(plain, len + 1);
        free(plain);
        return err_set(e, ERR_CRYPTO,
                       "secret authentication failed (key id %s): tampered, or stored for "
                       "another column",
                       id);
    }
    plain[len] = '\0';
    if (memchr(plain, '\0', len)) { /* secret_free() wipes up to the first NUL */
        OPENSSL_cleanse(plain, len);
        free(plain);
        return err_set(e, ERR_INVAL, "decrypted secret contains a NUL byte");
    }
    *out = plain;
    return 0;
}
