/* worker_setup.c - starting and stopping a worker: configuration, the secret key (a
 * worker without it refuses to start), schemas, the database (must be migrated) and
 * the broker; and the counters the job path updates. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "paths.h"
#include "worker_int.h"

static int open_db(worker *w, err_t *e)
{
    w->db = store_open(w->cfg.database_url, e);
    /* The database may still be starting; a certificate that does not verify will not. */
    for (int i = 0; !w->db && (!e || e->code != ERR_TLS) && i < 30; i++) {
        sleep(1);
        w->db = store_open(w->cfg.database_url, e);
    }
    if (!w->db)
        return ERR_DB;
    int version = 0;
    if (store_schema_version(w->db, &version, e) < 0 || version < 1)
        return err_set(e, ERR_CONFIG, "the database is not migrated: run `duoctl migrate` first");
    return 0;
}

static int open_mq(worker *w, err_t *e)
{
    const char *kinds[] = {w->def->queue_kind, NULL};
    mq_opts o = {.urls = w->cfg.amqp_url,
                 .prefix = w->cfg.mq_prefix,
                 .kinds = kinds,
                 .heartbeat_secs = w->cfg.amqp_heartbeat_secs,
                 .prefetch = w->cfg.prefetch,
                 .max_message_bytes = (size_t)w->cfg.max_message_bytes,
                 .ca_file = w->cfg.amqp_ca_file,
                 .no_topology = !w->cfg.amqp_declare};
    char name[64];
    snprintf(name, sizeof name, "duo-%s pid %ld", w->def->name, (long)getpid());
    o.conn_name = name;
    memcpy(o.retry_ms, w->retry_ms, sizeof o.retry_ms);
    for (int i = 0; i < 30 && !w->mq; i++) {
        w->mq = mq_open(&o, e);
        if (!w->mq && e && (e->code == ERR_TLS || e->code == ERR_CONFIG))
            break; /* retrying cannot fix a certificate or a refused login */
        if (!w->mq)
            sleep(1);
    }
    return w->mq ? 0 : ERR_MQ;
}

int worker_open(const worker_def *def, worker **out, err_t *e)
{
    worker *w = calloc(1, sizeof *w);
    *out = w;
    if (!w)
        return err_set(e, ERR_NOMEM, "out of memory");
    w->def = def;
    w->env = (worker_env){.cfg = &w->cfg, .w = w};
    w->fault_point = getenv("DUO_FAULT_POINT");
    int rc = config_load(&w->cfg, CONFIG_NEED_DB | CONFIG_NEED_MQ, e);
    if (rc < 0 || (rc = config_retry_delays(&w->cfg, w->retry_ms, e)) < 0)
        return rc;
    log_level lvl = LOG_INFO;
    log_parse_level(w->cfg.log_level, &lvl);
    static char component[64];
    snprintf(component, sizeof component, "duo-%s", def->name);
    log_init(component, lvl);
    if (!(w->keys = secret_keyring_load(&w->cfg, e)))
        return err_wrap(e, ERR_CONFIG, "refusing to start without the secret key");
    char dir[4096];
    if (paths_find("schemas", dir, sizeof dir) < 0)
        return err_set(e, ERR_CONFIG, "no schemas folder found (set DUO_SCHEMAS_DIR)");
    if (!(w->schemas = schema_set_load(dir, e)))
        return ERR_CONFIG;
    for (size_t i = 0; i < def->ntypes; i++) {
        char name[160];
        snprintf(name, sizeof name, "%s.job", def->types[i].type);
        if (!schema_get(w->schemas, name))
            return err_set(e, ERR_CONFIG, "no schema %s in %s", name, dir);
    }
    if (!(w->metrics = metrics_new()))
        return err_set(e, ERR_NOMEM, "out of memory");
    worker_metrics_describe(w);
    metrics_held(w); /* present (0) from the start, so a dashboard shows it */
    if (w->cfg.metrics_port &&
        (rc = metrics_serve(w->metrics, w->cfg.metrics_addr, w->cfg.metrics_port, e)) < 0)
        return rc;
    if ((rc = open_db(w, e)) < 0 || (rc = open_mq(w, e)) < 0)
        return rc;
    w->env.db = w->db;
    w->env.keys = w->keys;
    worker_health(w);
    return 0;
}

void worker_close(worker *w)
{
    if (!w)
        return;
    mq_close(w->mq);
    store_close(w->db);
    metrics_free(w->metrics);
    schema_set_free(w->schemas);
    secret_keyring_free(w->keys);
    config_free(&w->cfg);
    free(w);
}

void worker_health(worker *w)
{
    metrics_health(w->metrics, w->mq && !mq_is_broken(w->mq), store_ok(w->db));
}
