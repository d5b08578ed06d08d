/* mq.c - creation and destruction of an mq_conn: copies the options, builds the names,
 * connects to the first live URL.
 *
 * Key invariant: mq_open either returns a connected, consuming mq_conn or leaves nothing
 * behind; mq_close frees everything it ever allocated, connected or not. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/random.h>
#include <unistd.h>

#include "mq_int.h"

static const char *const default_kinds[] = {MQ_KIND_ENROLL, MQ_KIND_AUTH, MQ_KIND_IMPORT};

static void free_strv(char **v)
{
    if (!v)
        return;
    for (char **p = v; *p; p++)
        free(*p);
    free(v);
}

static char *name_join(const char *prefix, const char *suffix)
{
    size_t n = strlen(prefix) + strlen(suffix) + 2;
    char *s = malloc(n);
    if (s)
        snprintf(s, n, "%s.%s", prefix, suffix);
    return s;
}

static int valid_name(const char *s)
{
    if (!s || !*s || strlen(s) > 100)
        return 0;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
              *s == '_' || *s == '-' || *s == '.'))
            return 0;
    return 1;
}

static int has_kind(char **v, int n, const char *k)
{
    for (int i = 0; i < n; i++)
        if (strcmp(v[i], k) == 0)
            return 1;
    return 0;
}

/* Consumed kinds, and declared kinds = the three defaults plus extra consumed ones
 * ("dead" is the dead-letter queue, declared anyway). */
static int copy_kinds(mq_conn *c, const char *const *kinds, err_t *e)
{
    size_t n = 0;
    while (kinds && kinds[n])
        n++;
    c->kinds = calloc(n + 1, sizeof *c->kinds);
    c->all_kinds = calloc(n + 4, sizeof *c->all_kinds);
    if (!c->kinds || !c->all_kinds)
        return err_set(e, ERR_NOMEM, "out of memory");
    int na = 0;
    for (int i = 0; i < 3; i++)
        if (!(c->all_kinds[na++] = strdup(default_kinds[i])))
            return err_set(e, ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < n; i++) {
        if (!valid_name(kinds[i]) || has_kind(c->kinds, (int)i, kinds[i]))
            return err_set(e, ERR_INVAL, "bad or repeated MQ kind '%.40s'", kinds[i]);
        if (!(c->kinds[i] = strdup(kinds[i])))
            return err_set(e, ERR_NOMEM, "out of memory");
        if (strcmp(kinds[i], "dead") != 0 && !has_kind(c->all_kinds, na, kinds[i]) &&
            !(c->all_kinds[na++] = strdup(kinds[i])))
            return err_set(e, ERR_NOMEM, "out of memory");
    }
    return 0;
}

static int copy_opts(mq_conn *c, const mq_opts *o, err_t *e)
{
    if (!valid_name(o->prefix))
        return err_set(e, ERR_INVAL, "bad MQ prefix '%.40s'", o->prefix ? o->prefix : "");
    int n = mq_urls_parse(o->urls, &c->urls, e);
    if (n < 0)
        return n;
    c->nurls = n;
    c->heartbeat = o->heartbeat_secs < 0 ? 30 : o->heartbeat_secs;
    c->prefetch = o->prefetch > 0 ? (o->prefetch > 65535 ? 65535 : o->prefetch) : 16;
    c->max_body = o->max_message_bytes ? o->max_message_bytes : 1024 * 1024;
    static const int defaults[3] = {5000, 30000, 300000};
    for (int i = 0; i < 3; i++)
        c->retry_ms[i] = o->retry_ms[i] > 0 ? o->retry_ms[i] : defaults[i];
    c->rpc_timeout_ms = o->rpc_timeout_ms > 0 ? o->rpc_timeout_ms : 10000;
    c->want_reply_queue = o->reply_queue;
    c->no_topology = o->no_topology;
    c->reply_bind = o->reply_bind ? strdup(o->reply_bind) : NULL;
    c->prefix = strdup(o->prefix);
    c->conn_name = o->conn_name ? strdup(o->conn_name) : NULL;
    c->ca_file = o->ca_file ? strdup(o->ca_file) : NULL;
    c->jobs_ex = name_join(o->prefix, "jobs");
    c->results_ex = name_join(o->prefix, "results");
    c->dlx_ex = name_join(o->prefix, "dlx");
    c->dead_q = name_join(o->prefix, "dead");
    if (!c->prefix || (o->conn_name && !c->conn_name) || (o->ca_file && !c->ca_file) ||
        !c->jobs_ex || !c->results_ex || !c->dlx_ex || !c->dead_q)
        return err_set(e, ERR_NOMEM, "out of memory");
    return copy_kinds(c, o->kinds, e);
}

/* Random jitter seed and a random first generation, so a delivery can never be taken
 * for one of another mq_conn (even one later allocated at the same address). */
static void seed(mq_conn *c)
{
    uint64_t r[2] = {0, 0};
    if (getrandom(r, sizeof r, 0) != (ssize_t)sizeof r) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        r[0] = (uint64_t)ts.tv_nsec ^ ((uint64_t)getpid() << 32) ^ (uint64_t)(uintptr_t)c;
        r[1] = (uint64_t)ts.tv_sec * 1000003u ^ r[0];
    }
    c->rnd_state = (unsigned)r[0];
    c->gen = r[1] << 16; /* low bits left for reconnect increments */
}

mq_conn *mq_open(const mq_opts *o, err_t *e)
{
    if (!o) {
        err_set(e, ERR_INVAL, "mq_open: no options");
        return NULL;
    }
    mq_conn *c = calloc(1, sizeof *c);
    if (!c) {
        err_set(e, ERR_NOMEM, "out of memory");
        return NULL;
    }
    seed(c);
    c->broken = 1;
    int rc = copy_opts(c, o, e);
    if (rc < 0)
        goto fail;
    int start = rand_r(&c->rnd_state) % c->nurls;
    for (int i = 0; i < c->nurls; i++) {
        c->next_url = (start + i + 1) % c->nurls;
        rc = mq_connect_once(c, c->urls[(start + i) % c->nurls], e);
        if (rc == 0)
            return c;
    }
fail:
    mq_close(c);
    return NULL;
}

void mq_close(mq_conn *c)
{
    if (!c)
        return;
    mq_drop(c, 1);
    mq_urls_free(c->urls);
    free_strv(c->kinds);
    free_strv(c->all_kinds);
    free(c->prefix);
    free(c->conn_name);
    free(c->ca_file);
    free(c->reply_bind);
    free(c->jobs_ex);
    free(c->results_ex);
    free(c->dlx_ex);
    free(c->dead_q);
    free(c->recs);
    free(c);
}

const char *mq_jobs_exchange(const mq_conn *c)
{
    return c->jobs_ex;
}

const char *mq_results_exchange(const mq_conn *c)
{
    return c->results_ex;
}

const char *mq_dead_queue(const mq_conn *c)
{
    return c->dead_q;
}
