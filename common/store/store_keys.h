/* store_keys.h - key rotation of the stored stage secrets (duoctl stage rotate).
 *
 * Key invariant: rotation is all or nothing. Every envelope not under the keyring's
 * current key is decrypted and sealed again under it in one transaction; one envelope
 * that no key of the ring opens changes nothing. Nothing crosses this API in plaintext.
 * Built only on store.h, secret.h and the column AADs of store_stage.h. */
#ifndef DUO_STORE_KEYS_H
#define DUO_STORE_KEYS_H

#include <stdint.h>

#include "err.h"
#include "secret.h"
#include "store.h"

/* Re-encrypts, in one transaction, every stage secret not under k's current key;
 * *count receives how many secrets were rewritten. ERR_CRYPTO (a secret under a key not
 * in the ring: nothing is changed), ERR_DB. */
int store_stage_rotate(store *s, const secret_keyring *k, int64_t *count, err_t *e);

#endif
