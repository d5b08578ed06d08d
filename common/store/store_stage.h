/* store_stage.h - Duo stages: the rows an operator creates, changes, lists and deletes
 * (duoctl), and the decrypted record a worker loads (the stage layer's cache).
 *
 * Key invariant: a stage's client secret and admin secret key cross this module's
 * boundary in plaintext only inside stage_fields (input, borrowed) and stage_rec (output,
 * owned by the caller, wiped by stage_rec_free); the database only ever receives and
 * returns envelopes (secret.h) bound to their column by the AAD below. Re-encryption
 * under a new key is store_keys.h. Built only on store.h and secret.h.
 *
 * A stage is addressed by "ref": its uuid (any case) or its name. */
#ifndef DUO_STORE_STAGE_H
#define DUO_STORE_STAGE_H

#include <stdint.h>

#include "err.h"
#include "secret.h"
#include "store.h"

/* AAD of each encrypted column: an envelope only decrypts in the column it was made for. */
#define STAGE_AAD_CLIENT_SECRET "duo_stage.client_secret"
#define STAGE_AAD_ADMIN_SECRET "duo_stage.admin_secret_key"

/* Input of create/update; all strings borrowed for the call, secrets in plaintext.
 * NULL means "not given" (update: unchanged). On update, "" clears an optional field
 * (admin keys, friendly_name, configure_flow, ca_bundle). sig_version 0 = not given. */
typedef struct stage_fields {
    const char *name;
    const char *api_hostname;
    const char *client_id;
    const char *client_secret;
    const char *admin_integration_key;
    const char *admin_secret_key;
    const char *friendly_name;
    const char *configure_flow;
    const char *ca_bundle; /* PEM text */
    int sig_version;       /* 2 or 5 */
    int max_calls;         /* bulkhead override, 1..65535; -1 clears it; 0 = not given */
} stage_fields;

/* A decrypted stage, owned by the caller: stage_rec_free() wipes the secrets. Optional
 * strings are NULL when unset; sig_version is 0 when unset (use DUO_SIG_VERSION). */
typedef struct stage_rec {
    int64_t id;
    char uuid[37];
    char *name;
    char *api_hostname;
    char *client_id;
    char *client_secret;
    char *admin_integration_key;
    char *admin_secret_key;
    char *friendly_name;
    char *configure_flow;
    char *ca_bundle;
    int sig_version;
    int max_calls; /* the stage's own bulkhead (0: STAGE_MAX_CALLS) */
} stage_rec;

/* What an operator may see of a stage: no secrets, only whether they are set and under
 * which key id. Strings are borrowed, valid during the callback only; optional ones are
 * NULL when unset. */
typedef struct stage_view {
    int64_t id;
    const char *uuid;
    const char *name;
    const char *api_hostname;
    const char *client_id;
    const char *client_secret_key_id;
    const char *admin_integration_key;
    const char *admin_secret_key_id;
    const char *friendly_name;
    const char *configure_flow;
    int has_ca_bundle;
    int sig_version;
    int max_calls; /* 0: unset */
    int64_t devices;
    const char *created_at; /* ISO 8601 UTC */
    const char *updated_at;
} stage_view;

/* Called once per row; a negative return stops the walk and is returned. */
typedef int (*stage_view_fn)(const stage_view *v, void *arg);

/* Inserts a stage, encrypting its secrets with k's current key. name, api_hostname,
 * client_id and client_secret are required; the admin key pair is both-or-neither.
 * Writes the new uuid to uuid_out. ERR_INVAL, ERR_CONFLICT (name taken), ERR_CRYPTO,
 * ERR_DB. */
int store_stage_create(store *s, const secret_keyring *k, const stage_fields *f, char uuid_out[37],
                       err_t *e);

/* Changes the given fields of the stage ref (one transaction). ERR_NOTFOUND, ERR_INVAL
 * (empty required field, admin pair left half set), ERR_CONFLICT, ERR_DB. */
int store_stage_update(store *s, const secret_keyring *k, const char *ref, const stage_fields *f,
                       err_t *e);

/* Walks every stage by name. */
int store_stage_list(store *s, stage_view_fn fn, void *arg, err_t *e);

/* Calls fn once for the stage ref; ERR_NOTFOUND when there is none. */
int store_stage_show(store *s, const char *ref, stage_view_fn fn, void *arg, err_t *e);

/* Deletes the stage ref with its devices (cascade) in one transaction and reports how
 * many devices went with it. ERR_NOTFOUND, ERR_DB. */
int store_stage_delete(store *s, const char *ref, int64_t *devices, err_t *e);

/* Loads the stage with this uuid, secrets decrypted (for workers). ERR_INVAL for a
 * malformed uuid (checked before any query), ERR_NOTFOUND, ERR_CRYPTO, ERR_DB. On
 * success the caller owns *out: stage_rec_free(). On failure *out is empty. */
int store_stage_load(store *s, const secret_keyring *k, const char *uuid, stage_rec *out, err_t *e);

/* Wipes the secrets and frees the strings of r (not r itself); accepts NULL and an
 * already-freed record. */
void stage_rec_free(stage_rec *r);

#endif
