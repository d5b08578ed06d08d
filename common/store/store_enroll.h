/* store_enroll.h - rows the enrollment worker reads and writes: local users, pending
 * enrollments and the Duo devices they produce. All ids crossing this API are the
 * public uuids as text; internal bigint ids stay inside the store. */
#ifndef DUO_STORE_ENROLL_H
#define DUO_STORE_ENROLL_H

#include <stdint.h>

#include "store.h"

typedef struct store_user {
    int64_t id;
    char uuid[40];
    int active;
} store_user;

/* Looks up a local user by username: 0, ERR_NOTFOUND, or ERR_DB. */
int store_user_by_name(store *s, const char *username, store_user *out, err_t *e);

typedef struct store_enrollment {
    int64_t id;
    int64_t stage_id;
    int64_t user_id;
    char uuid[40];
    char duo_user_id[201];
    char activation_code[512];
    char state[16];       /* pending | success | invalid */
    char device_uuid[40]; /* "" unless success */
    int64_t expires_at;   /* unix seconds */
} store_enrollment;

/* Inserts a pending enrollment; writes its uuid to out->uuid. */
int store_enrollment_add(store *s, int64_t stage_id, int64_t user_id, const char *duo_user_id,
                         const char *activation_code, int64_t expires_at, store_enrollment *out,
                         err_t *e);

/* Loads an enrollment by uuid that belongs to stage_id: 0, ERR_NOTFOUND, ERR_INVAL for a
 * malformed uuid, or ERR_DB. */
int store_enrollment_get(store *s, int64_t stage_id, const char *uuid, store_enrollment *out,
                         err_t *e);

/* Closes a pending enrollment as 'success' (with device row id) or 'invalid'. */
int store_enrollment_close(store *s, int64_t enrollment_id, const char *state, int64_t device_id,
                           err_t *e);

/* Adds a confirmed device; ERR_CONFLICT when the stage already has one for this Duo
 * user. Writes the new device's id and uuid (uuid_out: 40 bytes). kind is "user_id"
 * or "username" (what duo_user_id holds). */
int store_device_add(store *s, int64_t user_id, int64_t stage_id, const char *duo_user_id,
                     const char *kind, const char *name, int64_t *id_out, char *uuid_out, err_t *e);

#endif
