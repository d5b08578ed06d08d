/* auth_int.h - state shared by the authentication worker's files: auth.c (job
 * lifecycle) and auth_duo.c (what is sent to Duo and what its answer means). Not for
 * use outside workers/auth. */
#ifndef DUO_AUTH_INT_H
#define DUO_AUTH_INT_H

#include <stdint.h>

#include "auth.h"
#include "duo_async.h"
#include "stage.h"
#include "store_auth.h"

typedef struct auth_call auth_call;

/* The worker's own state (env->app), created by auth_init, freed by auth_fini. */
typedef struct auth_app {
    duo_async *engine;
    stages *stages;         /* the stage cache (stage.h) */
    auth_call *calls;       /* jobs waiting for Duo */
    auth_call *guard_queue; /* started pushes waiting for their guard row (run_guards) */
} auth_app;

/* One job waiting for Duo; owned by the app until its job is done. */
struct auth_call {
    auth_app *app;
    const worker_env *env; /* borrowed: lives as long as the worker */
    job_async *h;
    duo_areq *req;
    auth_device dev;
    int64_t challenge_id; /* 0 when the factor is not guarded (passcode) */
    long long t0_ms;
    long long deadline_ms; /* t0 + AUTH_DEADLINE_SECS: past it the answer is timeout */
    long long call_ms;     /* when the Duo call in flight started */
    char txid[128];        /* the push's Duo transaction, once known */
    int polls;             /* auth_status answers "waiting" so far */
    auth_call *prev, *next;
    auth_call *gnext; /* in app->guard_queue */
};

/* ---- auth_duo.c ---- */

/* Most parameters an auth call sends (the duo layer builds them). */
#define AUTH_MAX_PARAMS DUO_AUTH_MAX_PARAMS

/* Duo refuses a pushinfo of this many URL-encoded bytes or more. */
#define AUTH_PUSHINFO_MAX 20000

/* Fills p (AUTH_MAX_PARAMS) with the /auth/v2/auth parameters for job j on device dev
 * (with async=1 when auth_factor_async), listed by duo_auth_params after the job's own
 * checks (pushinfo size); *pushinfo receives the URL-encoded pushinfo
 * (caller frees; NULL when none). Returns the count, or -1 with *o set: an error
 * (`invalid_parameter`, nothing sent to Duo) or a retry. */
int auth_params(const job *j, const auth_device *dev, duo_param *p, char **pushinfo,
                job_outcome *o);

/* 1 when the job's factor sends something to the user (guarded), 0 for passcode. */
int auth_factor_guarded(const job *j);

/* 1 when the job's factor reaches the user's phone and is waited for (auto, push,
 * phone): sent with async=1, its txid stored before waiting with auth_status, so that
 * no fault makes a second push. passcode and sms answer at once and go synchronously. */
int auth_factor_async(const job *j);

/* 1 when the job names a Duo device (device other than "auto") for a factor that uses
 * one: it is checked with preauth before anything reaches the user. */
int auth_device_named(const job *j);

/* Checks the job's device against a preauth answer: it must be one of the user's
 * devices with the capability the factor needs (push, phone, sms). 0, or -1 with *o set
 * (`invalid_parameter`). A preauth that does not list devices (allow, deny, enroll)
 * passes: the auth call then gets Duo's own answer. */
int auth_device_check(const job *j, const json_t *preauth, job_outcome *o);

/* Turns Duo's answer (or failure) into the job outcome; *decided receives what the
 * challenge row records ("allow", "deny", "timeout", "other", "error"; static). */
void auth_outcome(const auth_call *c, int rc, const json_t *resp, const duo_error *de,
                  job_outcome *out, const char **decided);

#endif
