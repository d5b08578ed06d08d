/* ops.h - what duoctl status and duoctl dead share: the connections they open, and one
 * scanned dead-lettered message with what is known about it (x-death history, the job
 * record, the reason code).
 *
 * Key invariant: scanning P.dead takes messages with basic.get and holds them unsettled;
 * whatever the caller does not ack or reject returns to P.dead untouched when the
 * connection closes (or the process dies). */
#ifndef DUOCTL_OPS_H
#define DUOCTL_OPS_H

#include <jansson.h>
#include <stdint.h>

#include "config.h"
#include "mq.h"
#include "schema.h"
#include "store.h"
#include "store_ops.h"

enum { OPS_MQ = 1, OPS_DB = 2, OPS_SCHEMAS = 4 };

typedef struct ops_env {
    config cfg;
    mq_conn *mq;
    store *db;
    schema_set *schemas;
} ops_env;

/* Opens what `need` asks for; on failure prints one line and returns -1 (nothing left
 * open). ops_close frees everything (unsettled dead messages return to P.dead). */
int ops_open(ops_env *o, unsigned need);
void ops_close(ops_env *o);

/* One dead-lettered message. Strings are "" when unknown. */
typedef struct dead_entry {
    mq_delivery *d; /* owned: the held message */
    char job_id[256];
    char type[64];
    char kind[16];        /* routing key: the work queue's kind it returns to */
    char stage[64];       /* stage_uuid of the body, if it has one */
    char reason[64];      /* stable error code (see schemas/README.md) */
    char from_queue[128]; /* the queue it was first dead-lettered from */
    int64_t time;         /* Unix seconds it was (last) dead-lettered */
    long deaths;          /* times dead-lettered from a work queue */
    long replays;         /* times replayed from P.dead before */
    int has_record;
    store_job_view rec;   /* the job record when has_record */
    json_t *body;         /* decoded body, NULL when undecodable */
    char body_error[200]; /* why the body could not be decoded */
} dead_entry;

typedef struct dead_list {
    dead_entry *v;
    size_t n;
} dead_list;

/* Takes up to `limit` messages of P.dead and describes each. 0 or -1 (printed). */
int dead_scan(ops_env *o, size_t limit, dead_list *out);
void dead_list_free(dead_list *l);

/* Selection by the filters of duoctl dead; NULL / 0 = no filter. */
typedef struct dead_filter {
    const char *reason; /* comma-separated codes */
    const char *type;   /* comma-separated job types */
    const char *id;     /* one job id */
    int64_t since;      /* dead-lettered at or after (Unix seconds) */
} dead_filter;
int dead_match(const dead_entry *x, const dead_filter *f);

/* The entry as a JSON object (body and stored reply redacted when with_body). */
json_t *dead_entry_json(const dead_entry *x, int with_body);

/* A deep copy of v with every secret-bearing value replaced by "[redacted]". */
json_t *ops_redact(const json_t *v);

#endif
