/* worker.h - the job pipeline every worker runs:
 *
 *   consume -> decode -> validate -> claim -> handler (Duo, effect) -> commit
 *   (effect + stored reply in one transaction) -> publish reply (confirmed) -> ack
 *
 * Invariant: a delivery is acked only after its job's transaction committed and its
 * reply was confirmed by the broker. A crash anywhere before the ack means a
 * redelivery; the claim (store_jobs.h) turns it into a re-send of the stored reply.
 * Bad input is answered with an error reply and dead-lettered, never a crash.
 *
 * A worker binary supplies a worker_def (its queue kind and one handler per job type)
 * and calls worker_main() from main(). */
#ifndef DUO_WORKER_H
#define DUO_WORKER_H

#include <jansson.h>
#include <stddef.h>

#include "config.h"
#include "err.h"
#include "mq.h"
#include "secret.h"
#include "store.h"

typedef struct worker worker;

/* One job as a handler sees it. Everything is borrowed and valid during the call. */
typedef struct job {
    const char *id;             /* AMQP message_id: the job id */
    const char *type;           /* AMQP type: "enroll.begin", ... */
    const char *correlation_id; /* may be NULL */
    const char *reply_to;       /* AMQP reply_to; may be NULL */
    int attempt;                /* 1 for the first attempt */
    const json_t *body;         /* decoded and valid against the job type's schema */
} job;

/* What a handler decided. Start zeroed; set exactly one of: fields (success), an error
 * (job_fail), or a retry (job_retry). */
typedef struct job_outcome {
    json_t *fields;       /* success: result fields; the runtime takes the reference */
    const char *code;     /* error: stable snake_case code (static storage) */
    char message[512];    /* error: one human sentence; never a secret */
    int retry;            /* transient failure: nothing committed, try again later */
    long long defer_ms;   /* with retry: not an attempt but a deferral (nothing was tried,
                           * e.g. Duo's host refused by its breaker): the job comes back
                           * after about this long with its attempts unchanged */
    int dead_letter;      /* with an error: also dead-letter (operator must look) */
    json_t *error_fields; /* with an error: extra members of the reply's error object
                           * (e.g. run_id, duo_code); the runtime takes the reference */
} job_outcome;

/* What a handler may use; all borrowed, valid during the call. The handler may open a
 * transaction on db (store_begin) for its effect and return with it open: the runtime
 * adds the job record to it and commits. A handler that fails rolls back itself or
 * leaves the transaction open for the runtime to roll back. */
typedef struct worker_env {
    const config *cfg;
    store *db;
    const secret_keyring *keys;
    worker *w;
    void *app; /* the worker's own state, set by its init (worker_set_app) */
} worker_env;

/* Stores a worker's own state (owned by the worker's code; freed by its fini) where
 * start and poll find it: env->app. */
void worker_set_app(worker *w, void *app);

typedef void (*job_handler)(const worker_env *env, const job *j, job_outcome *out);

/* ---- asynchronous jobs ----
 * A worker that keeps many jobs in flight (the authentication worker) gives its types a
 * `start` instead of a `handle`. start either decides at once (fills *out and returns 0)
 * or keeps the job running and returns 1; the worker's `poll` then drives its I/O and,
 * for each job that finishes, calls worker_job_done(). Prefetch bounds how many jobs
 * are pending at once. The job_async handle is owned by the runtime; it and the job it
 * points to stay valid until worker_job_done() returns. */
typedef struct job_async job_async;

typedef int (*job_start)(const worker_env *env, const job *j, job_async *h, job_outcome *out);

/* Finishes a pending job exactly as a synchronous handler's outcome would be finished:
 * commit, confirmed reply, ack (or retry, or dead-letter). Takes out->fields. */
void worker_job_done(worker *w, job_async *h, job_outcome *out);

/* The job behind a handle (borrowed, valid until worker_job_done). */
const job *worker_job_of(const job_async *h);

/* Called with a decoded, valid job just before its claim: may send the reads its
 * handler will make first (store_send_ahead), so that they travel with the claim instead
 * of costing round trips of their own. Must not do anything else: the claim may still
 * find the job done or held. */
typedef void (*job_send_ahead)(const worker_env *env, const job *j);

typedef struct job_type_def {
    const char *type;          /* AMQP type property value, also the schema name */
    job_handler handle;        /* synchronous handler, or NULL when `start` is set */
    job_start start;           /* asynchronous start (see above), or NULL */
    job_send_ahead send_ahead; /* optional */
} job_type_def;

typedef struct worker_def {
    const char *name;       /* "enroll": log component "duo-enroll" */
    const char *queue_kind; /* MQ_KIND_ENROLL, ... */
    const job_type_def *types;
    size_t ntypes;
    /* Asynchronous workers only: waits up to timeout_ms for the worker's own I/O and for
     * mq_fd to become readable, makes progress, and calls worker_job_done for finished
     * jobs. Called every loop turn; NULL for synchronous workers. */
    void (*poll)(const worker_env *env, int mq_fd, int timeout_ms);
    /* Called once after start (the worker's own state: worker_set_app) and at exit; either
     * may be NULL. */
    int (*init)(const worker_env *env, err_t *e);
    void (*fini)(const worker_env *env);
} worker_def;

/* Runs a worker until SIGTERM/SIGINT; returns the process exit status (0 after a clean
 * shutdown, 1 when it could not start: bad configuration, missing key, no schema). */
int worker_main(const worker_def *def, int argc, char **argv);

/* Sets an error outcome (code is a static string). */
void job_fail(job_outcome *o, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Sets a transient-failure outcome: the job is retried after a delay (up to
 * JOB_MAX_ATTEMPTS attempts, then answered with `retries_exhausted` and dead-lettered). */
void job_retry(job_outcome *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Fault injection for reliability tests (DUO_FAULT_POINT=<name>): the process exits
 * abruptly here, as kill -9 would leave it, when the variable names this point. Off
 * unless set. */
void worker_fault_point(const worker_env *env, const char *name);

/* Idle hook for long waits (the Duo client's idle callback): services the broker
 * connection so heartbeats never lapse. Returns non-zero when the worker is past its
 * shutdown grace period and the wait should be abandoned. arg is the worker. */
int worker_idle(void *arg);

/* Publishes a message (confirmed) through the worker's broker connection, e.g. fan-out
 * jobs or progress replies. Returns 0 or ERR_MQ/ERR_TIMEOUT. */
int worker_publish(worker *w, const mq_msg *m, err_t *e);

/* Publishes ms[0..n) (borrowed) and then waits for their confirms: one round trip to the
 * broker for all of them instead of one each, so a fan-out of hundreds of jobs does not
 * keep the worker away from its other work (its Duo calls' timers run meanwhile). 0 when
 * every one was confirmed; otherwise the first failure (ERR_MQ/ERR_TIMEOUT/ERR_NOMEM),
 * after waiting for every publish that was sent. */
int worker_publish_all(worker *w, const mq_msg *ms, size_t n, err_t *e);

/* The worker's broker names (borrowed). */
const char *worker_jobs_exchange(const worker *w);

/* ---- the worker's own metrics (worker_metrics.c) ----
 * A family must be described once (worker_metric_describe, e.g. from init) before it is
 * reported; labels must come from a small fixed set (never ids or usernames). */
void worker_metric_describe(const worker_env *env, const char *name, const char *type,
                            const char *help);
void worker_metric_add(const worker_env *env, const char *name, const char *labels, double by);
void worker_metric_set(const worker_env *env, const char *name, const char *labels, double v);
void worker_metric_observe(const worker_env *env, const char *name, const char *labels,
                           double seconds);

#endif
