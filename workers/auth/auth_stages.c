/* auth_stages.c - stage credentials for the authentication worker, cached so a burst of
 * jobs does not decrypt the same secrets thousands of times.
 *
 * Invariant: an entry is reloaded from the database after STAGE_TTL_MS, so a changed or
 * rotated stage is picked up within that time; secrets are wiped when an entry goes. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "auth_int.h"

#define STAGE_SLOTS 16
#define STAGE_TTL_MS 30000

typedef struct {
    stage_rec st;      /* st.uuid[0] == 0: empty slot */
    char ca_path[256]; /* temp file with the stage's CA bundle, "" when none */
    long long loaded_ms;
} stage_slot;

struct auth_stages {
    stage_slot slot[STAGE_SLOTS];
};

auth_stages *auth_stages_new(void)
{
    return calloc(1, sizeof(auth_stages));
}

static void slot_clear(stage_slot *s)
{
    stage_rec_free(&s->st);
    if (s->ca_path[0])
        unlink(s->ca_path);
    memset(s, 0, sizeof *s);
}

void auth_stages_free(auth_stages *s)
{
    if (!s)
        return;
    for (int i = 0; i < STAGE_SLOTS; i++)
        slot_clear(&s->slot[i]);
    free(s);
}

static int write_ca(const char *pem, char *path, size_t n)
{
    const char *tmp = getenv("TMPDIR");
    snprintf(path, n, "%s/duo-auth-ca-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    int fd = mkstemp(path);
    if (fd < 0) {
        path[0] = '\0';
        return -1;
    }
    size_t len = strlen(pem);
    int ok = write(fd, pem, len) == (ssize_t)len;
    close(fd);
    if (!ok) {
        unlink(path);
        path[0] = '\0';
    }
    return ok ? 0 : -1;
}

/* The fresh slot for uuid, or the one to (re)load it into. */
static stage_slot *find(auth_stages *s, const char *uuid, long long now, int *fresh)
{
    stage_slot *oldest = &s->slot[0];
    for (int i = 0; i < STAGE_SLOTS; i++) {
        stage_slot *x = &s->slot[i];
        if (x->st.uuid[0] && strcasecmp(x->st.uuid, uuid) == 0) {
            *fresh = now - x->loaded_ms < STAGE_TTL_MS;
            return x;
        }
        if (x->loaded_ms < oldest->loaded_ms)
            oldest = x;
    }
    *fresh = 0;
    return oldest;
}

static int load(const worker_env *env, stage_slot *x, const char *uuid, job_outcome *o)
{
    slot_clear(x);
    if (worker_stage(env, uuid, &x->st, o) < 0)
        return -1;
    if (x->st.ca_bundle && *x->st.ca_bundle &&
        write_ca(x->st.ca_bundle, x->ca_path, sizeof x->ca_path) < 0) {
        slot_clear(x);
        job_retry(o, "cannot write the stage's CA bundle to a temporary file");
        return -1;
    }
    x->loaded_ms = duo_async_now_ms();
    return 0;
}

int auth_stage_creds(const worker_env *env, auth_stages *s, const char *stage_uuid,
                     duo_client_opts *creds, job_outcome *o)
{
    int fresh = 0;
    stage_slot *x = find(s, stage_uuid, duo_async_now_ms(), &fresh);
    if (!fresh && load(env, x, stage_uuid, o) < 0)
        return -1;
    const config *cfg = env->cfg;
    duo_client_opts_default(creds);
    creds->host = x->st.api_hostname;
    creds->ikey = x->st.client_id;
    creds->skey = x->st.client_secret;
    creds->sig_version = x->st.sig_version ? x->st.sig_version : cfg->duo_sig_version;
    creds->ca_file = x->ca_path[0] ? x->ca_path : cfg->duo_ca_file;
    creds->connect_timeout_ms = cfg->duo_connect_timeout_ms;
    creds->timeout_ms = cfg->duo_timeout_ms;
    creds->retry_attempts = cfg->duo_retry_attempts;
    return 0;
}
