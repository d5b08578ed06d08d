/* worker_int.h - the worker's private state, shared by worker.c (the job path),
 * worker_setup.c (start and stop) and worker_metrics.c (metrics). Not for use outside
 * these files. */
#ifndef DUO_WORKER_INT_H
#define DUO_WORKER_INT_H

#include "metrics.h"
#include "schema.h"
#include "settle.h"
#include "worker.h"

/* Buckets of the pending jobs' id index: a few thousand jobs pending stay short chains. */
#define WORKER_ID_BUCKETS 4096

struct worker {
    const worker_def *def;
    config cfg;
    int retry_ms[3]; /* RETRY_DELAYS_MS, parsed */
    store *db;
    mq_conn *mq;
    secret_keyring *keys;
    schema_set *schemas;
    metrics *metrics;
    worker_env env;                      /* what handlers see; points into this struct */
    settle_queue settle;                 /* deliveries whose replies await confirms */
    unsigned long settled_at;            /* mq_confirm_count() when the queue was last walked */
    job_async *pending;                  /* asynchronous jobs started and not done */
    job_async *by_id[WORKER_ID_BUCKETS]; /* the same, by job id (twins, worker.c) */
    size_t npending;
    long long stop_at_ms;    /* shutdown deadline once a stop was requested, else 0 */
    const char *fault_point; /* DUO_FAULT_POINT (tests only), else NULL */
    int fault_fired;         /* a once-only fault point has fired */
};

/* Loads configuration, key, schemas; connects to PostgreSQL and RabbitMQ. On failure
 * *e says what is wrong and *out may hold a partly built worker for worker_close. */
int worker_open(const worker_def *def, worker **out, err_t *e);
void worker_close(worker *w);

/* Publishes the connection states to /healthz. */
void worker_health(worker *w);

/* Describes the runtime's metric families (worker_metrics.c). */
void worker_metrics_describe(worker *w);

/* Counters (labels are job types and stable codes, never user input). */
void metrics_job(worker *w, const char *type, const char *outcome);
void metrics_job_time(worker *w, const char *type, long long ms);
void metrics_retry(worker *w, const char *type);
void metrics_dead_letter(worker *w);
void metrics_inflight(worker *w, int delta);
void metrics_held(worker *w);
void metrics_reconnect(worker *w, const char *what);

#endif
