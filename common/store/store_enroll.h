/* store_enroll.h - the pending enrollments the enrollment worker writes and closes (the
 * users it looks up are store_user.h, the devices it adds store_device.h). Every struct
 * returned is the caller's; uuids cross this API as text. Built only on store.h.
 * Invariant: an enrollment leaves 'pending' once, to 'success' or 'invalid'. */
#ifndef DUO_STORE_ENROLL_H
#define DUO_STORE_ENROLL_H

#include <stdint.h>

#include "store.h"

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

/* ---- the attempt of an enroll.begin (enroll_attempt) ----
 * Recorded, in a commit of its own, before Duo's /auth/v2/enroll is called: Duo creates
 * the activation when it receives the call, so a rerun that finds its job's attempt
 * must not call again. */

/* Records job_id's attempt. 0 when recorded now, 1 when an earlier run of the job had
 * recorded one (nothing written), or an error. */
int store_enroll_attempt_take(store *s, const char *job_id, int64_t stage_id, err_t *e);

/* Forgets job_id's attempt: the call is known not to have reached Duo (or Duo refused it
 * unprocessed). At once (one round trip), so a retry of the job may call again. */
int store_enroll_attempt_drop(store *s, const char *job_id, err_t *e);

/* The same, queued in the open transaction (store_send): it goes with the enrollment
 * that the attempt created. */
int store_enroll_attempt_drop_in_tx(store *s, const char *job_id, err_t *e);

#endif
