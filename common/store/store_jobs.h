/* store_jobs.h - job records: the claim that makes a redelivered or repeated job a
 * no-op, and the stored reply that is re-sent for it.
 *
 * A claim is a session advisory lock on the job id, held while the job runs, and a read
 * of the job's record. The record (a row in `job`) is written once, when the job ends,
 * with its reply (migration 013). The lock keeps a twin delivery being worked on right
 * now by another worker apart (lock held: try later); PostgreSQL drops it if the worker
 * dies, and a job that died before its end has no record (or a 'running' one, from a
 * worker before 013 or an operator's rearm): it runs again. */
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

/* Claims job_id (outside any transaction): takes its lock and reads its record (a batch
 * of one, store_job_claims). On success the caller must eventually call
 * store_job_release() or store_job_finish*() unless state is DONE or BUSY (no lock is
 * held then). */
int store_job_claim(store *s, const char *job_id, job_claim *out, err_t *e);

/* Claims the jobs ids[0..n) (distinct ids) in one statement, outside any transaction:
 * out[i] answers ids[i] as store_job_claim would (a DONE one holds no lock: the statement
 * released it). The caller owns out[i].reply (job_claim_clear). 0, or an error with
 * every out[] cleared and no lock of the batch held. */
int store_job_claims(store *s, const char *const *ids, size_t n, job_claim *out, err_t *e);

/* Sends store_job_claims for these ids ahead (store_send_ahead), so that the batch's
 * claims travel with the reads sent ahead of them; the store_job_claims that follows
 * (before store_ahead_clear()) takes the answer. Only for claims that will be asked for:
 * an answer never taken leaves the jobs' locks held by this session. */
void store_job_claims_ahead(store *s, const char *const *ids, size_t n);

/* A job's record, as its end writes it. Every pointer is borrowed for the call. */
typedef struct job_record_in {
    const char *job_id;
    const char *job_type;
    const char *publisher; /* the broker user that published it (AMQP user_id), or NULL */
    const void *reply;     /* the encoded reply */
    size_t reply_len;
    const char *error_code; /* NULL when the job succeeded */
} job_record_in;

/* Writes the record, done with its encoded reply, and releases the claim's lock when the
 * writing transaction ends: on its own (one statement), or queued in the caller's open
 * transaction, whose COMMIT fails if the record could not be written (store_send). */
int store_job_finish(store *s, const job_record_in *rec, err_t *e);

/* The same, committed without waiting (store_commit_later): the record joins the open
 * transaction, or is a transaction of its own, and the outcome is collected under tag
 * with store_take_committed() after the next round trip. */
int store_job_finish_later(store *s, const job_record_in *rec, void *tag, err_t *e);

/* Releases the advisory lock taken by store_job_claim when the job is not finished
 * (retries, failures). Never fails visibly: a lost connection released it already. */
void store_job_release(store *s, const char *job_id);

/* Frees the reply of a claim; accepts a zeroed claim. */
void job_claim_clear(job_claim *c);

#endif
