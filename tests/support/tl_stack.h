/* tl_stack.h - a whole private stack for an end-to-end test: a freshly created and
 * migrated database, an emulator account (Auth and Admin integrations with random
 * keys), a Duo stage pointing at the emulator with encrypted secrets, a unique
 * MQ_PREFIX, worker processes started with that environment, and a jobs client to send
 * jobs and wait for replies. Everything is removed by tl_stack_fini.
 *
 * The environment of the calling process is set (DATABASE_URL, MQ_PREFIX,
 * DUO_SECRET_KEY, short RETRY_DELAYS_MS, ...) so children inherit it. */
#ifndef DUO_TL_STACK_H
#define DUO_TL_STACK_H

#include <jansson.h>
#include <sys/types.h>

#include "jobs_client.h"

enum {
    TL_NO_ADMIN = 1,   /* the stage gets no Admin API credentials */
    TL_UNLICENSED = 2, /* the emulator account refuses the Admin API (403 40301) */
    TL_SIG_V2 = 4,     /* the stage signs with v2 */
};

#define TL_MAX_WORKERS 16

typedef struct tl_stack {
    char tag[32];
    char db[512];
    char prefix[96];
    char account[96];
    char auth_ikey[32], auth_skey[48], admin_ikey[32], admin_skey[48];
    char stage_uuid[40];
    char stage_name[128];
    char logdir[512];
    pid_t workers[TL_MAX_WORKERS];
    int nworkers;
    jobs_client *client;
} tl_stack;

/* Builds the stack; 0 or -1 (with a message on stderr). */
int tl_stack_init(tl_stack *s, const char *tag, unsigned flags);

/* Removes workers (SIGTERM, then SIGKILL), topology and database. */
void tl_stack_fini(tl_stack *s);

/* Starts $DUO_BIN_DIR/duo-<name> with the stack's environment plus extra "K=V" pairs
 * (NULL-terminated, may be NULL); its stderr goes to logdir. Returns the pid or -1.
 * The worker connects to the database as its own least-privilege role (DUO_DB_URL_<NAME>
 * of scripts/services.sh, on the test's database), so every end-to-end test also proves
 * that `duoctl migrate` granted it enough. */
pid_t tl_stack_worker(tl_stack *s, const char *name, const char *const *extra_env);

/* Starts one worker of each kind (enroll, auth, import) as tl_stack_worker does, each
 * with extra_env. 0, or -1 when one did not start. */
int tl_stack_workers(tl_stack *s, const char *const *extra_env);

/* Sends a signal to a worker started by tl_stack_worker and, for SIGKILL/SIGTERM, reaps
 * it and forgets it. */
void tl_stack_signal(tl_stack *s, pid_t pid, int sig);

/* Another tenant of the stack: an emulator account of its own (its own keys, so faults
 * and behaviours queued for it touch no other tenant) with Admin API access, and a
 * stage on it (Auth and Admin credentials) whose api hostname is host (NULL: the
 * emulator's DUO_EMU_HOST). The same emulator under another name, e.g.
 * "localhost:<port>", is another Duo host to the workers (their circuit breakers are
 * per host). */
typedef struct tl_tenant {
    char account[128];
    char auth_ikey[32], auth_skey[48], admin_ikey[32], admin_skey[48];
    char stage_uuid[40];
    char stage_name[160];
} tl_tenant;

/* Makes a tenant named `name` (unique within the stack). 0 or -1 (message on stderr). */
int tl_stack_tenant(tl_stack *s, const char *name, const char *host, unsigned flags, tl_tenant *t);

/* Creates a local user (duoctl user upsert). 0 or -1. */
int tl_stack_user(tl_stack *s, const char *username);

/* Runs a duoctl command line (shell words) with the stack's environment; output to out.
 * Returns the exit status. */
int tl_stack_duoctl(tl_stack *s, const char *args, char *out, size_t outlen);

/* Calls the emulator's control API: method, path ("/_emu/..."), JSON body or NULL.
 * Returns the HTTP status (or -1) and the answer in out. */
int tl_emu(const char *method, const char *path, const char *body, char *out, size_t outlen);

/* The emulator's control API answering JSON: POST body (a JSON text) or, with body NULL,
 * GET. Returns the parsed answer (caller json_decref()s); fails the test when the call or
 * the answer is unusable. */
json_t *tl_emu_json(const char *path, const char *body);

/* Requests the emulator answered (any status) for account on one path. Fails the test
 * when the emulator cannot say. */
long long tl_emu_requests(const char *account, const char *path);

/* Sends a job (body stolen) and waits up to timeout_ms for its reply. Returns the reply
 * (caller json_decref()s) or NULL on timeout/error (message on stderr). */
json_t *tl_job(tl_stack *s, const char *type, const char *job_id, json_t *body, int timeout_ms);

/* Convenience: a string field of a reply ("" when absent). Borrowed. */
const char *tl_str(const json_t *reply, const char *key);
/* The error code of an error reply ("" when none). Borrowed. */
const char *tl_code(const json_t *reply);

/* A fresh job id "<tag>-<n>-<pid>". */
void tl_job_id(tl_stack *s, char *out, size_t n);

#endif
