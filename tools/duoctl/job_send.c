/* job_send.c - publish a job and print its reply: the reference client for upstream
 * developers and smoke tests. */
#include "job_send.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "jobs_client.h"
#include "store.h"
#include "store_stage.h"

static int print_stage_uuid(const stage_view *v, void *arg)
{
    snprintf(arg, 37, "%s", v->uuid);
    return 0;
}

int job_stage_uuid(const char *ref, char *out)
{
    if (store_is_uuid(ref)) {
        snprintf(out, 37, "%s", ref);
        return 0;
    }
    config c;
    err_t e = {0};
    if (config_load(&c, CONFIG_NEED_DB, &e) < 0) {
        fprintf(stderr, "duoctl: stage '%s' is not a uuid and it cannot be looked up: %s\n", ref,
                e.msg);
        return -1;
    }
    store *s = store_open(c.database_url, &e);
    out[0] = '\0';
    int rc = s ? store_stage_show(s, ref, print_stage_uuid, out, &e) : ERR_DB;
    store_close(s);
    config_free(&c);
    if (rc < 0 || !out[0]) {
        fprintf(stderr, "duoctl: stage '%s': %s\n", ref, rc < 0 ? e.msg : "not found");
        return -1;
    }
    return 0;
}

static void fresh_id(char *out, size_t n)
{
    unsigned char b[16] = {0};
    FILE *f = fopen("/dev/urandom", "rb");
    if (!f || fread(b, 1, sizeof b, f) != sizeof b)
        fprintf(stderr, "duoctl: /dev/urandom unreadable; job id may repeat\n");
    if (f)
        fclose(f);
    b[6] = (unsigned char)((b[6] & 0x0f) | 0x40);
    b[8] = (unsigned char)((b[8] & 0x3f) | 0x80);
    snprintf(out, n, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0],
             b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13],
             b[14], b[15]);
}

int job_send(const char *type, const char *job_id, json_t *body, int wait_secs)
{
    config c;
    err_t e = {0};
    if (config_load(&c, CONFIG_NEED_MQ, &e) < 0) {
        fprintf(stderr, "duoctl: %s\n", e.msg);
        json_decref(body);
        return 1;
    }
    char id[64];
    if (!job_id)
        fresh_id(id, sizeof id);
    else
        snprintf(id, sizeof id, "%s", job_id);
    jobs_client *jc =
        jobs_client_open_ex(c.amqp_url, c.mq_prefix, NULL, c.amqp_ca_file, c.amqp_declare, &e);
    int rc = jc ? jobs_send(jc, type, id, body, &e) : ERR_MQ;
    json_decref(body);
    int status = rc < 0 ? 1 : 0;
    if (rc < 0)
        fprintf(stderr, "duoctl: cannot send %s job: %s\n", type, e.msg);
    else if (wait_secs <= 0)
        printf("{\"job_id\":\"%s\",\"sent\":true}\n", id);
    else {
        json_t *reply = NULL;
        rc = jobs_wait(jc, id, wait_secs * 1000, &reply, NULL, &e);
        if (rc == 1) {
            char *text = json_dumps(reply, JSON_COMPACT | JSON_SORT_KEYS);
            printf("%s\n", text ? text : "{}");
            free(text);
            const char *st = json_string_value(json_object_get(reply, "status"));
            status = st && strcmp(st, "ok") == 0 ? 0 : 1;
            json_decref(reply);
        } else {
            fprintf(stderr, "duoctl: no reply to job %s within %d s%s%s\n", id, wait_secs,
                    rc < 0 ? ": " : "", rc < 0 ? e.msg : "");
            status = 3;
        }
    }
    jobs_client_close(jc);
    config_free(&c);
    return status;
}
