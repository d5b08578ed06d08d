/* enroll.h - the enrollment worker's two job handlers (see worker.h for the contract).
 * Its own state (env->app) is its stage cache (stage.h: stages_init). */
#ifndef DUO_ENROLL_H
#define DUO_ENROLL_H

#include "stage.h"

/* {stage_uuid, username, valid_secs?} -> Duo enroll -> pending enrollment row. */
void enroll_begin(const worker_env *env, const job *j, job_outcome *out);

/* {stage_uuid, enrollment_id} -> Duo enroll_status -> waiting | invalid | success (device). */
void enroll_status(const worker_env *env, const job *j, job_outcome *out);

#endif
