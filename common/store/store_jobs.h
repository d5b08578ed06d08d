/* store_jobs.h - job records: the claim that makes a redelivered or repeated job a
 * no-op, and the stored reply that is re-sent for it.
 *
 * A claim is two things: a row in `job` (inserted if new) and a session advisory lock
 * on the job id, held while the job runs. The lock tells a crashed earlier attempt
 * (row 'running', no lock holder: redo it) from a twin delivery being worked on right
 * now by another worker (lock held: try later). PostgreSQL drops the lock if the
 * worker dies. */
#ifndef DUO_STORE_JOBS_H
#define DUO_STORE_JOBS_H

#include <stddef.h>

#include "store.h"

typedef enum {
    JOB_CLAIM_NEW,   /* first time seen: run it */
    JOB_CLAIM_RERUN, /* an earlier attempt died before committing: run it again */
    JOB_CLAIM_DONE,  /* already committed: re-send the stored reply */
    JOB_CLAIM_BUSY,  /* another worker holds it right now: retry later */
} job_claim_state;

typedef struct job_claim {
    job_claim_state state;
    int attempts;         /* including this one */
    unsigned char *reply; /* JOB_CLAIM_DONE only: owned, free() */
    size_t reply_len;
} job_claim;

/* Claims job_id (outside any transaction). publisher (may be NULL) is the broker user
 * that published it, as the broker validated it (AMQP user_id); a new job's row records
 * it, a rerun keeps the first one. On success the caller must eventually call
 * store_job_release() unless state is DONE or BUSY (no lock is held then). */
int store_job_claim(store *s, const char *job_id, const char *job_type, const char *publisher,
                    job_claim *out, err_t *e);

/* Sends the claim of a job ahead (store_prefetch), so that the claims of the deliveries in
 * hand travel in one round trip: the next store_job_claim of the same job, which must
 * follow before store_prefetch_clear(), takes its answer. Only for a claim that will be
 * asked for: an answer never taken leaves the job's lock held by this session. Nothing
 * is lost when it could not be sent (the claim then runs itself). */
void store_job_claim_ahead(store *s, const char *job_id, const char *job_type,
                           const char *publisher);

/* Marks the job done with its encoded reply and releases the claim's lock: on its own
 * (one statement), or queued in the caller's open transaction, where the COMMIT checks
 * that the record was there (store_send). */
int store_job_finish(store *s, const char *job_id, const void *reply, size_t len,
                     const char *error_code, err_t *e);

/* The same, committed without waiting (store_commit_later): the record joins the open
 * transaction, or is a transaction of its own, and the outcome is collected under tag
 * with store_take_committed() after the next round trip. */
int store_job_finish_later(store *s, const char *job_id, const void *reply, size_t len,
                           const char *error_code, void *tag, err_t *e);

/* Releases the advisory lock taken by store_job_claim when the job is not finished
 * (retries, failures). Never fails visibly: a lost connection released it already. */
void store_job_release(store *s, const char *job_id);

/* Frees the reply of a claim; accepts a zeroed claim. */
void job_claim_clear(job_claim *c);

#endif
