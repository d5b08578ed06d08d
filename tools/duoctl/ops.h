/* ops.h - what duoctl status and duoctl dead share: the connections they open, and one
 * pass over the dead-letter queue, message by message, with what is known about each
 * (x-death history, the job record, the reason code).
 *
 * Key invariant: a pass holds every message of P.dead it read, unsettled, until it ends;
 * whatever it did not ack or reject returns to P.dead when its connection closes (or the
 * process dies). Passes take turns (a database lock), so no pass misses what another
 * holds, and a pass ends only once P.dead applied its acks and rejects. */
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
/* Opens the broker connection again if a dead-letter pass closed it. 0 or -1 (printed). */
int ops_mq(ops_env *o);

/* One dead-lettered message. Strings are "" when unknown. */
typedef struct dead_entry {
    mq_delivery *d; /* owned: the held message (its body and properties) */
    mq_ticket t;    /* settles it, also once d is freed */
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

/* Messages described together (one round trip for their job records). */
enum { PASS_BATCH = 256 };

/* One pass over P.dead. */
typedef struct dead_pass {
    ops_env *o;   /* borrowed; its mq connection is closed by dead_pass_end */
    mq_reader *r; /* owned */
    char lock[160];
    int locked;
    uint32_t ready;  /* ready messages when the pass started */
    dead_entry *buf; /* owned: PASS_BATCH entries read ahead; buf[pos..nbuf) not handed out */
    size_t nbuf, pos;
} dead_pass;

/* Waits for its turn, then starts reading P.dead. 0 or -1 (printed; nothing held). */
int dead_pass_begin(ops_env *o, dead_pass *p);
/* The next message into *x (the caller clears it: dead_entry_clear), described
 * (decoded, its job record looked up, its reason) when `describe`, else only its
 * properties and routing key. 1, 0 at the end, -1 (printed). */
int dead_pass_next(dead_pass *p, int describe, dead_entry *x);
/* how: 0 = drop (ack), -1 = hand back (reject: P.dead dead-letters it to its work queue).
 * multiple: with every unsettled message read before it. 0 or -1 (printed). */
int dead_pass_settle(dead_pass *p, mq_ticket t, int how, int multiple);
/* Waits until P.dead applied every settlement, closes the broker connection (the rest
 * returns to P.dead) and gives the turn back. 0, or -1 when the settlements could not be
 * confirmed (printed). Accepts a pass that never began. */
int dead_pass_end(dead_pass *p);
/* Frees what x holds (its delivery, body, record); x can be filled again. */
void dead_entry_clear(dead_entry *x);

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
