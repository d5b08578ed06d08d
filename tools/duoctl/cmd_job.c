/* cmd_job.c - `duoctl job|enroll|auth`: enqueue a job per schemas/README.md and print
 * its reply. Options map one to one onto the job's fields; the worker validates them. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd.h"
#include "job_send.h"

typedef struct {
    const char *option; /* "--username" */
    const char *field;  /* "username" */
    int integer;        /* 1: JSON integer, 2: boolean flag (no value) */
} field_opt;

typedef struct {
    const char *id;
    int wait_secs;
    json_t *body;
} job_args;

/* Parses the options common to every enqueue command and the command's own fields;
 * pushinfo k=v pairs go into an object. Returns 0, or 2 after a usage message. */
static int parse(int argc, char **argv, const field_opt *fields, job_args *a)
{
    a->wait_secs = 90;
    a->body = json_object();
    for (int i = 0; i < argc; i++) {
        const char *opt = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(opt, "--no-wait") == 0) {
            a->wait_secs = 0;
            continue;
        }
        const field_opt *f = fields;
        while (f->option && strcmp(f->option, opt) != 0)
            f++;
        if (f->option && f->integer == 2) {
            json_object_set_new(a->body, f->field, json_true());
            continue;
        }
        if (!val) {
            fprintf(stderr, "duoctl: %s needs a value\n", opt);
            return 2;
        }
        i++;
        char *end = NULL;
        long n = strtol(val, &end, 10);
        if (strcmp(opt, "--id") == 0) {
            a->id = val;
        } else if (strcmp(opt, "--timeout") == 0 && *end == '\0' && n > 0) {
            a->wait_secs = (int)n;
        } else if (strcmp(opt, "--pushinfo") == 0 && strchr(val, '=')) {
            json_t *pi = json_object_get(a->body, "pushinfo");
            if (!pi)
                json_object_set_new(a->body, "pushinfo", pi = json_object());
            char key[256];
            snprintf(key, sizeof key, "%.*s", (int)(strchr(val, '=') - val), val);
            json_object_set_new(pi, key, json_string(strchr(val, '=') + 1));
        } else if (f->option && f->integer && *end == '\0' && end != val) {
            json_object_set_new(a->body, f->field, json_integer(n));
        } else if (f->option && !f->integer) {
            json_object_set_new(a->body, f->field, json_string(val));
        } else {
            fprintf(stderr, "duoctl: unexpected '%s %s'\n", opt, val);
            return 2;
        }
    }
    return 0;
}

/* Replaces a stage name by its uuid in the body. */
static int resolve_stage(json_t *body)
{
    const char *ref = json_string_value(json_object_get(body, "stage_uuid"));
    char uuid[37];
    if (!ref)
        return 0;
    if (job_stage_uuid(ref, uuid) < 0)
        return -1;
    json_object_set_new(body, "stage_uuid", json_string(uuid));
    return 0;
}

static int run(const char *type, int argc, char **argv, const field_opt *fields, const char *usage)
{
    job_args a = {0};
    if (argc == 0 || parse(argc, argv, fields, &a) != 0) {
        fprintf(stderr, "%s", usage);
        json_decref(a.body);
        return 2;
    }
    if (resolve_stage(a.body) < 0) {
        json_decref(a.body);
        return 1;
    }
    return job_send(type, a.id, a.body, a.wait_secs);
}

#define COMMON                                                                                     \
    "  common: [--id JOB_ID] [--timeout SECS (90)] [--no-wait]\n"                                  \
    "  Needs AMQP_URL (and DATABASE_URL to look a stage up by name). Prints the reply\n"           \
    "  as JSON; exit 0 ok, 1 error reply, 3 no reply in time.\n"

int cmd_enroll(int argc, char **argv)
{
    static const char usage[] =
        "usage: duoctl enroll begin --stage S --username U [--valid-secs N]\n"
        "       duoctl enroll status --stage S --enrollment ENROLLMENT_ID\n" COMMON;
    static const field_opt begin[] = {{"--stage", "stage_uuid", 0},
                                      {"--username", "username", 0},
                                      {"--valid-secs", "valid_secs", 1},
                                      {NULL, NULL, 0}};
    static const field_opt status[] = {
        {"--stage", "stage_uuid", 0}, {"--enrollment", "enrollment_id", 0}, {NULL, NULL, 0}};
    if (argc >= 1 && strcmp(argv[0], "begin") == 0)
        return run("enroll.begin", argc - 1, argv + 1, begin, usage);
    if (argc >= 1 && strcmp(argv[0], "status") == 0)
        return run("enroll.status", argc - 1, argv + 1, status, usage);
    fprintf(stderr, "%s", usage);
    return 2;
}

int cmd_auth(int argc, char **argv)
{
    static const char usage[] =
        "usage: duoctl auth (--stage S --username U | --device-id D) [--factor "
        "auto|push|passcode|phone|sms]\n"
        "       [--passcode P] [--device auto|ID] [--ipaddr IP] [--type T] [--display-username N]\n"
        "       [--pushinfo KEY=VALUE ...]\n" COMMON;
    static const field_opt f[] = {{"--stage", "stage_uuid", 0},
                                  {"--username", "username", 0},
                                  {"--device-id", "device_id", 0},
                                  {"--factor", "factor", 0},
                                  {"--passcode", "passcode", 0},
                                  {"--device", "device", 0},
                                  {"--ipaddr", "ipaddr", 0},
                                  {"--type", "type", 0},
                                  {"--display-username", "display_username", 0},
                                  {NULL, NULL, 0}};
    return run("auth", argc, argv, f, usage);
}

int cmd_job(int argc, char **argv)
{
    static const char usage[] =
        "usage: duoctl job TYPE JSON_BODY [--id JOB_ID] [--timeout SECS] [--no-wait]\n"
        "  sends any job type of schemas/README.md with a literal JSON body\n";
    if (argc < 2) {
        fprintf(stderr, "%s", usage);
        return 2;
    }
    json_error_t je;
    json_t *body = json_loads(argv[1], 0, &je);
    if (!json_is_object(body)) {
        fprintf(stderr, "duoctl job: the body must be a JSON object: %s\n", je.text);
        json_decref(body);
        return 2;
    }
    static const field_opt none[] = {{NULL, NULL, 0}};
    job_args a = {0};
    if (parse(argc - 2, argv + 2, none, &a) != 0) {
        json_decref(body);
        json_decref(a.body);
        fprintf(stderr, "%s", usage);
        return 2;
    }
    json_decref(a.body);
    return job_send(argv[0], a.id, body, a.wait_secs);
}
