/* ops.c - connections for duoctl status/dead, and redaction of secrets in what they
 * print (a job body may carry a passcode; a stored reply an activation code). */
#include "ops.h"

#include <stdio.h>
#include <string.h>

#include "paths.h"

static int open_mq(ops_env *o, err_t *e)
{
    int delays[3];
    int rc = config_retry_delays(&o->cfg, delays, e);
    if (rc < 0)
        return rc;
    mq_opts m = {.urls = o->cfg.amqp_url,
                 .prefix = o->cfg.mq_prefix,
                 .heartbeat_secs = o->cfg.amqp_heartbeat_secs,
                 .prefetch = 1,
                 .max_message_bytes = 16 * 1024 * 1024,
                 .retry_ms = {delays[0], delays[1], delays[2]},
                 .conn_name = "duoctl"};
    o->mq = mq_open(&m, e);
    return o->mq ? 0 : ERR_MQ;
}

int ops_mq(ops_env *o)
{
    if (o->mq)
        return 0;
    err_t e = {0};
    if (open_mq(o, &e) == 0)
        return 0;
    fprintf(stderr, "duoctl: %s\n", e.msg);
    return -1;
}

static int open_schemas(ops_env *o, err_t *e)
{
    char dir[4096];
    if (paths_find("schemas", dir, sizeof dir) < 0)
        return err_set(e, ERR_CONFIG, "no schemas folder found (set DUO_SCHEMAS_DIR)");
    o->schemas = schema_set_load(dir, e);
    return o->schemas ? 0 : ERR_CONFIG;
}

int ops_open(ops_env *o, unsigned need)
{
    memset(o, 0, sizeof *o);
    err_t e = {0};
    unsigned cneed =
        ((need & OPS_MQ) ? CONFIG_NEED_MQ : 0) | ((need & OPS_DB) ? CONFIG_NEED_DB : 0);
    int rc = config_load(&o->cfg, cneed, &e);
    if (rc == 0 && (need & OPS_MQ))
        rc = open_mq(o, &e);
    if (rc == 0 && (need & OPS_DB) && !(o->db = store_open(o->cfg.database_url, &e)))
        rc = ERR_DB;
    if (rc == 0 && (need & OPS_SCHEMAS))
        rc = open_schemas(o, &e);
    if (rc < 0) {
        fprintf(stderr, "duoctl: %s\n", e.msg);
        ops_close(o);
        return -1;
    }
    return 0;
}

void ops_close(ops_env *o)
{
    mq_close(o->mq);
    store_close(o->db);
    schema_set_free(o->schemas);
    config_free(&o->cfg);
    memset(o, 0, sizeof *o);
}

/* Keys whose values are secrets or hand over a device: never printed. */
static int secret_key(const char *k)
{
    static const char *const exact[] = {
        "passcode", "activation_code", "activation_barcode", "activation_url", "skey", "password",
        NULL};
    for (int i = 0; exact[i]; i++)
        if (strcmp(k, exact[i]) == 0)
            return 1;
    return strstr(k, "secret") != NULL || strstr(k, "token") != NULL;
}

json_t *ops_redact(const json_t *v)
{
    if (json_is_object(v)) {
        json_t *out = json_object();
        const char *k;
        json_t *x;
        json_object_foreach((json_t *)v, k, x)
        {
            json_object_set_new(out, k, secret_key(k) ? json_string("[redacted]") : ops_redact(x));
        }
        return out;
    }
    if (json_is_array(v)) {
        json_t *out = json_array();
        size_t i;
        json_t *x;
        json_array_foreach(v, i, x)
        {
            json_array_append_new(out, ops_redact(x));
        }
        return out;
    }
    return json_deep_copy(v);
}
