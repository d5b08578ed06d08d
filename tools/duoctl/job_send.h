/* job_send.h - what the enqueue commands (job, enroll, auth, import) share: resolve a
 * stage reference, publish one job per schemas/README.md and print its reply as JSON. */
#ifndef DUOCTL_JOB_SEND_H
#define DUOCTL_JOB_SEND_H

#include <jansson.h>

/* Writes the uuid of stage `ref` (a uuid is taken as is; a name is looked up with
 * DATABASE_URL) into out (37 bytes). 0, or -1 with a message on stderr. */
int job_stage_uuid(const char *ref, char *out);

/* Publishes a job of `type` with body (stolen) to AMQP_URL/MQ_PREFIX; with wait_secs > 0
 * waits for the reply and prints it as one JSON line. job_id NULL = a fresh random id.
 * Returns the exit status: 0 reply ok (or sent without waiting), 1 error reply or
 * failure, 3 no reply in time. */
int job_send(const char *type, const char *job_id, json_t *body, int wait_secs);

#endif
