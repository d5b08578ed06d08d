/* store_auth.h - what the authentication worker reads and writes: the device a job
 * addresses, the push-fatigue guard, and the marks left by a decided challenge.
 *
 * Invariant: the guard lives in PostgreSQL (auth_challenge, migrations/002_auth.sql)
 * and takes a slot under the user's row lock, so the cap holds across any number of
 * worker processes. Built only on store.h; ids crossing the API are uuids as text.
 *
 * Durability trade: the device lookups switch the session to synchronous_commit=off,
 * because one fsync per job (PostgreSQL's default) serialises the worker at a few
 * hundred jobs/s. A database crash can then lose the last fraction of a second of
 * commits (job records, last_used, challenge rows) of jobs already answered: such a
 * job is never re-run (it was acked), and the guard may admit that many challenges
 * again, except for a challenge that reaches the phone: its guard row is committed
 * synchronously (store_auth_take) before the push goes out, so a rerun after a crash or
 * failover finds it and does not push twice. Crash-safe ordering (commit before reply,
 * reply before ack) is unchanged. */
#ifndef DUO_STORE_AUTH_H
#define DUO_STORE_AUTH_H

#include <stdint.h>

#include "store.h"

/* Why a lookup found no usable device (AUTH_DEV_OK when it did). */
typedef enum {
    AUTH_DEV_OK = 0,
    AUTH_DEV_NO_STAGE,  /* no stage with that uuid */
    AUTH_DEV_NO_USER,   /* no local user with that name */
    AUTH_DEV_NO_DEVICE, /* no confirmed device for that user on that stage / uuid */
    AUTH_DEV_INACTIVE,  /* the local user is deactivated */
} auth_dev_state;

/* A device as the worker needs it; plain values, owned by the caller's struct. */
typedef struct auth_device {
    auth_dev_state state;
    int64_t id;
    char uuid[40];
    int64_t user_id;
    int64_t stage_id;
    char stage_uuid[40];
    char duo_user_id[204];
    int by_username; /* duo_user_kind = 'username': address Duo by username */
} auth_device;

/* Sends the lookup that store_auth_device_by_uuid (device_uuid given) or
 * store_auth_device_for_user will make, ahead of its use (store_send_ahead): that call then
 * costs no round trip of its own. Malformed ids are left to that call to refuse. */
void store_auth_device_ahead(store *s, const char *stage_uuid, const char *username,
                             const char *device_uuid);

/* The user's confirmed device on the stage (the most recently used one when several);
 * sets the session's synchronous_commit to off (above).
 * Returns 0 with out->state saying whether one was found, ERR_INVAL for a malformed
 * stage uuid, or ERR_DB. */
int store_auth_device_for_user(store *s, const char *stage_uuid, const char *username,
                               auth_device *out, err_t *e);

/* A confirmed device by its uuid. Same returns (ERR_INVAL for a malformed uuid). */
int store_auth_device_by_uuid(store *s, const char *device_uuid, auth_device *out, err_t *e);

/* The guard's settings. */
typedef struct auth_guard {
    int cap; /* challenges per user per window */
    int window_secs;
    int cooldown_secs; /* after a deny */
} auth_guard;

/* What store_auth_take found. */
typedef struct auth_take {
    int64_t challenge_id; /* > 0 when granted (or resumed) */
    int retry_after_secs; /* when refused: when to try again */
    const char *why;      /* "ok", "resume", "cap" or "cooldown" (static) */
    char txid[128];       /* "resume": the Duo txid stored by the earlier run, "" if none */
} auth_take;

/* Takes a challenge slot for the user on behalf of job job_id (autocommit, one round
 * trip; must not run inside an open transaction of the caller). When that job already
 * holds a challenge (an earlier run of it died), it is returned instead (why "resume",
 * with the txid that run stored, if any), spending no new slot. 0 with *out filled, or
 * ERR_DB. */
int store_auth_take(store *s, int64_t user_id, int64_t stage_id, const auth_guard *g,
                    const char *job_id, auth_take *out, err_t *e);

/* Sends store_auth_take for these arguments ahead (store_send_ahead): the takes sent ahead
 * together run as one transaction, committed synchronously once, and each is served to
 * the store_auth_take with the same arguments (the first one's round trip reads them
 * all). If any of them fails, all are rolled back and each store_auth_take runs alone.
 * Send them in ascending user_id, so that two workers' groups lock users in the same
 * order. Only for a take that will be asked for before store_ahead_clear(): one never
 * asked for still counts against the user's cap. */
void store_auth_take_ahead(store *s, int64_t user_id, int64_t stage_id, const auth_guard *g,
                           const char *job_id);

/* Stores the txid Duo gave the challenge's asynchronous auth call, so a rerun of the job
 * waits on it instead of pushing again. Queued as a transaction of its own
 * (store_send_alone): it travels with the next round trip, and its failure is logged
 * (a rerun then answers push_outcome_unknown rather than push again). */
int store_auth_set_txid(store *s, int64_t challenge_id, const char *txid, err_t *e);

/* Records the outcome of a challenge ("allow", "deny", "timeout", "error"; challenge_id
 * 0: none) and, with used_device_id non-zero, sets that device's last_used to now, in
 * one statement. A "deny" starts the user's cool-down. Inside an open transaction the
 * statement is queued (store_send) and its failure is reported by the COMMIT. */
int store_auth_record(store *s, int64_t challenge_id, const char *result, int64_t used_device_id,
                      err_t *e);

#endif
