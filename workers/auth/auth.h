/* auth.h - the authentication worker's asynchronous job type (see worker.h): start
 * resolves the device, applies the push-fatigue guard and submits the Duo call; poll
 * drives every call in flight and finishes each job as its answer (or deadline) comes.
 *
 * Invariant: only a Duo answer whose result is exactly "allow" produces result allow. */
#ifndef DUO_AUTH_H
#define DUO_AUTH_H

#include "worker.h"

int auth_init(const worker_env *env, err_t *e);
void auth_fini(const worker_env *env);
void auth_poll(const worker_env *env, int mq_fd, int timeout_ms);
int auth_start(const worker_env *env, const job *j, job_async *h, job_outcome *out);

/* Sends the job's device lookup ahead, with its claim (job_type_def.send_ahead). */
void auth_send_ahead(const worker_env *env, const job *j);

#endif
