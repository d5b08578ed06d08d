/* enroll.h - the enrollment worker's two job types, asynchronous (worker.h: job_start):
 * each loads what it needs from the store, submits its one Duo call on the worker's
 * engine and returns; the engine's callback records the result and finishes the job.
 * A slow Duo holds a slot of the stage's bulkhead, never the worker.
 *
 * Its own state (env->app) is an enroll_app: the stage cache and the Duo engine, made by
 * enroll_init and freed by enroll_fini. */
#ifndef DUO_ENROLL_H
#define DUO_ENROLL_H

#include "duo_async.h"
#include "stage.h"

typedef struct enroll_call enroll_call;

typedef struct enroll_app {
    stages *stages;
    duo_async *engine;
    enroll_call *calls; /* jobs waiting for Duo */
} enroll_app;

int enroll_init(const worker_env *env, err_t *e);
void enroll_fini(const worker_env *env);

/* Drives the Duo calls (the worker_def poll). */
void enroll_poll(const worker_env *env, int mq_fd, int timeout_ms);

/* {stage_uuid, username, valid_secs?} -> attempt recorded -> Duo enroll -> pending
 * enrollment row. A rerun that finds its attempt without an enrollment answers
 * `enroll_outcome_unknown` and calls nothing. */
int enroll_begin_start(const worker_env *env, const job *j, job_async *h, job_outcome *out);

/* {stage_uuid, enrollment_id} -> Duo enroll_status -> waiting | invalid | success
 * (device stored once). */
int enroll_status_start(const worker_env *env, const job *j, job_async *h, job_outcome *out);

#endif
