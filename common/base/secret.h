/* secret.h - secrets at rest: AES-256-GCM envelopes under a keyring of one current key
 * and an optional previous key (decrypt-only, during rotation).
 *
 * Envelope text stored in the database: "v1:<keyid>:<base64(nonce12 || ciphertext ||
 * tag16)>", where keyid is the first 8 hex characters of SHA-256(key). The AAD is a
 * caller-chosen context, by convention the column ("duo_stage.client_secret"), so an
 * envelope copied into another column fails authentication. Key invariant: plaintext
 * never leaves this module except in caller-owned buffers that secret_free() wipes;
 * error messages never contain key material or plaintext. */
#ifndef DUO_SECRET_H
#define DUO_SECRET_H

#include "config.h"
#include "err.h"

typedef struct secret_keyring secret_keyring;

/* Builds the keyring from c->secret_key (DUO_SECRET_KEY), else the file named by
 * c->secret_key_file (DUO_SECRET_KEY_FILE), plus c->secret_key_previous. Returns NULL
 * with ERR_CONFIG (no key configured, unreadable file) or ERR_CRYPTO (malformed key),
 * the message naming the variable. The caller owns the result: secret_keyring_free(). */
secret_keyring *secret_keyring_load(const config *c, err_t *e);

/* Wipes and frees; accepts NULL. */
void secret_keyring_free(secret_keyring *k);

/* Id of the current key (8 lowercase hex characters); borrowed, valid until free. */
const char *secret_keyring_current_id(const secret_keyring *k);

/* Encrypts plaintext under the current key with a fresh random nonce, binding aad
 * (NULL means ""). *out receives a NUL-terminated envelope the caller frees with free()
 * (it is not secret). Returns 0, ERR_INVAL (too long), ERR_NOMEM or ERR_CRYPTO. */
int secret_encrypt(const secret_keyring *k, const char *plaintext, const char *aad, char **out,
                   err_t *e);

/* Decrypts an envelope with whichever key in the ring has its id. *out receives the
 * NUL-terminated plaintext, owned by the caller, to release with secret_free().
 * Errors: ERR_INVAL (malformed envelope), ERR_CRYPTO (key id not in the ring - the
 * message names the id needed - or authentication failure: wrong aad or tampering),
 * ERR_NOMEM. */
int secret_decrypt(const secret_keyring *k, const char *envelope, const char *aad, char **out,
                   err_t *e);

/* 1 when a well-formed envelope is not under the current key (rotate-key must
 * re-encrypt it), 0 when it is, ERR_INVAL when the envelope is malformed. */
int secret_needs_rotation(const secret_keyring *k, const char *envelope);

/* Copies the key id of a well-formed envelope header into id (8 hex + NUL); returns 0 or
 * ERR_INVAL. Key ids are not secret: operators see them to follow a rotation. */
int secret_envelope_key_id(const char *envelope, char id[9]);

/* Wipes (OPENSSL_cleanse) and frees a plaintext returned by secret_decrypt or any other
 * heap string holding a secret; accepts NULL. */
void secret_free(char *p);

#endif
