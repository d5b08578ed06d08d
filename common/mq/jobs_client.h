/* jobs_client.h - the reference client for upstream code: publish a job as schemas/README.md
 * describes (msgpack body; message_id, type, reply_to, correlation_id, content_type) and
 * wait for its reply on a private reply queue. Used by duoctl and by the tests.
 *
 * Replies that arrive for other jobs while waiting are kept and handed out later. A
 * client is used by one thread. */
#ifndef DUO_JOBS_CLIENT_H
#define DUO_JOBS_CLIENT_H

#include <jansson.h>

#include "err.h"
#include "mq.h"

typedef struct jobs_client jobs_client;

/* Connects (URL list as AMQP_URL) with the given name prefix. results_bind, when not
 * NULL, also binds the reply queue to P.results with that pattern (to see replies of
 * jobs sent without reply_to). Caller owns the result: jobs_client_close(). */
jobs_client *jobs_client_open(const char *urls, const char *prefix, const char *results_bind,
                              err_t *e);
/* The same with the broker's TLS and topology settings: ca_file (borrowed for the call)
 * verifies an amqps:// broker, NULL = the system CAs; declare 0 assumes the topology
 * exists, so a publisher whose broker user may only write P.jobs can connect. */
jobs_client *jobs_client_open_ex(const char *urls, const char *prefix, const char *results_bind,
                                 const char *ca_file, int declare, err_t *e);
void jobs_client_close(jobs_client *c);

/* The queue kind ("enroll", "auth", "import") that serves a job type, or NULL. Static. */
const char *jobs_kind_of(const char *type);

/* Publishes a job (confirmed). body is borrowed. job_id doubles as correlation id. */
int jobs_send(jobs_client *c, const char *type, const char *job_id, const json_t *body, err_t *e);

/* Publishes raw bytes with explicit properties (tests of bad input); m->reply_to NULL
 * means this client's reply queue, m->exchange NULL means P.jobs. */
int jobs_send_raw(jobs_client *c, const mq_msg *m, err_t *e);

/* Waits up to timeout_ms for the reply whose correlation_id is job_id. 1: *reply is the
 * decoded body (caller json_decref()s) and *type (optional) a copy of its AMQP type the
 * caller free()s; 0: timeout; negative: error. */
int jobs_wait(jobs_client *c, const char *job_id, int timeout_ms, json_t **reply, char **type,
              err_t *e);

/* Waits for the next reply of any job: like jobs_wait, plus *correlation_id (caller frees). */
int jobs_next(jobs_client *c, int timeout_ms, json_t **reply, char **correlation_id, err_t *e);

/* The current reply queue name (borrowed). */
const char *jobs_reply_queue(const jobs_client *c);

#endif
