/* cmd_stage.c - `duoctl stage create|list|show|update|delete|rotate-key`: Duo stages
 * (one Duo application each) as the operator manages them.
 *
 * Invariant: secrets given on the command line, in files or on standard input go to
 * the store only through store_stage (which encrypts them) and are never printed:
 * output shows "set"/"unset" and the key id. Buffers read from files are wiped. */
#include <stdio.h>
#include <string.h>

#include "admin_io.h"
#include "cmd.h"
#include "store_keys.h"
#include "store_stage.h"

#define MAX_SECRET_BYTES 4096
#define MAX_CA_BYTES (1024 * 1024)

static const char USAGE[] =
    "usage: duoctl stage COMMAND [ARGS]\n"
    "  create --name N --api-hostname H --client-id ID CLIENT_SECRET [FIELDS]\n"
    "  update STAGE [FIELDS]      change the given fields (\"\" clears an optional one)\n"
    "  list                       one JSON object per line, by name\n"
    "  show STAGE                 one JSON object\n"
    "  delete STAGE               delete the stage and its devices; prints the count\n"
    "  rotate-key                 re-encrypt every secret not under DUO_SECRET_KEY\n"
    "STAGE is a stage uuid or name. CLIENT_SECRET is one of --client-secret S,\n"
    "--client-secret-file FILE or --client-secret-stdin. FIELDS: --name, --api-hostname,\n"
    "--client-id, --admin-integration-key K, --admin-secret-key S (or -file FILE, -stdin),\n"
    "--friendly-name, --configure-flow, --ca-bundle PEMFILE, --sig-version 2|5,\n"
    "--max-calls N|default (the stage's Duo calls in flight per worker).\n"
    "Secrets are encrypted with DUO_SECRET_KEY (or DUO_SECRET_KEY_FILE) and never shown;\n"
    "prefer -file/-stdin over flags, which other local users can see in the process list.\n"
    "Output is JSON (one object per line). Needs DATABASE_URL.\n";

typedef struct {
    stage_fields f;
    char *owned[3]; /* client secret, admin secret, CA bundle read from files */
    int used_stdin;
} stage_args;

static void args_free(stage_args *a)
{
    for (int i = 0; i < 3; i++)
        secret_free(a->owned[i]);
}

/* The slot of a plain value flag, or NULL. */
static const char **value_slot(stage_fields *f, const char *flag)
{
    struct {
        const char *flag;
        const char **slot;
    } t[] = {{"--name", &f->name},
             {"--api-hostname", &f->api_hostname},
             {"--client-id", &f->client_id},
             {"--client-secret", &f->client_secret},
             {"--admin-integration-key", &f->admin_integration_key},
             {"--admin-secret-key", &f->admin_secret_key},
             {"--friendly-name", &f->friendly_name},
             {"--configure-flow", &f->configure_flow}};
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++)
        if (strcmp(flag, t[i].flag) == 0)
            return t[i].slot;
    return NULL;
}

/* Reads a file-backed field: idx 0 client secret, 1 admin secret, 2 CA bundle. */
static int read_field(stage_args *a, const char *what, int idx, const char *path)
{
    const char **slots[] = {&a->f.client_secret, &a->f.admin_secret_key, &a->f.ca_bundle};
    if (strcmp(path, "-") == 0 && a->used_stdin++) {
        fprintf(stderr, "duoctl %s: only one value can come from standard input\n", what);
        return -1;
    }
    secret_free(a->owned[idx]);
    a->owned[idx] =
        admin_read_file(what, path, idx == 2 ? MAX_CA_BYTES : MAX_SECRET_BYTES, idx != 2);
    if (!a->owned[idx])
        return -1;
    if (idx == 2 && !strstr(a->owned[idx], "-----BEGIN ")) {
        fprintf(stderr, "duoctl %s: %s: not a PEM file\n", what, path);
        return -1;
    }
    *slots[idx] = a->owned[idx];
    return 0;
}

/* Handles one flag that reads a file or stdin; returns 1 if consumed it, 0 if not
 * such a flag, -1 on error. *i advances past a value. */
static int file_flag(stage_args *a, const char *what, int argc, char **argv, int *i)
{
    const char *flag = argv[*i];
    const char *files[] = {"--client-secret-file", "--admin-secret-key-file", "--ca-bundle"};
    const char *stdins[] = {"--client-secret-stdin", "--admin-secret-key-stdin"};
    for (int k = 0; k < 2; k++)
        if (strcmp(flag, stdins[k]) == 0)
            return read_field(a, what, k, "-") < 0 ? -1 : 1;
    for (int k = 0; k < 3; k++) {
        if (strcmp(flag, files[k]) != 0)
            continue;
        if (*i + 1 >= argc) {
            fprintf(stderr, "duoctl %s: %s needs a value\n", what, flag);
            return -1;
        }
        return read_field(a, what, k, argv[++*i]) < 0 ? -1 : 1;
    }
    return 0;
}

/* Parses FIELDS from argv[from..]; returns 0, or -1 after printing the problem. */
static int parse_fields(stage_args *a, const char *what, int argc, char **argv, int from)
{
    for (int i = from; i < argc; i++) {
        int rc = file_flag(a, what, argc, argv, &i);
        if (rc < 0)
            return -1;
        if (rc > 0)
            continue;
        const char **slot = value_slot(&a->f, argv[i]);
        int sig = strcmp(argv[i], "--sig-version") == 0;
        int calls = strcmp(argv[i], "--max-calls") == 0;
        if ((!slot && !sig && !calls) || i + 1 >= argc) {
            fprintf(stderr, "duoctl %s: %s '%s'\n%s", what,
                    slot || sig || calls ? "missing value for" : "unknown option", argv[i], USAGE);
            return -1;
        }
        long v = 0;
        if (sig && (admin_parse_long(argv[i + 1], 2, 5, &v) < 0 || (v != 2 && v != 5))) {
            fprintf(stderr, "duoctl %s: --sig-version must be 2 or 5\n", what);
            return -1;
        }
        /* "default" clears the stage's own limit: STAGE_MAX_CALLS applies again. */
        if (calls && strcmp(argv[i + 1], "default") == 0)
            v = -1;
        else if (calls && admin_parse_long(argv[i + 1], 1, 65535, &v) < 0) {
            fprintf(stderr, "duoctl %s: --max-calls must be 1..65535 or 'default'\n", what);
            return -1;
        }
        if (sig)
            a->f.sig_version = (int)v;
        else if (calls)
            a->f.max_calls = (int)v;
        else
            *slot = argv[i + 1];
        i++;
    }
    return 0;
}

/* Prints a stage view as one JSON object; secrets appear only as set/unset. */
static int print_stage(const stage_view *v, void *arg)
{
    (void)arg;
    json_t *o = json_object();
    if (!o)
        return ERR_NOMEM;
    json_object_set_new(o, "uuid", admin_jstr(v->uuid));
    json_object_set_new(o, "name", admin_jstr(v->name));
    json_object_set_new(o, "api_hostname", admin_jstr(v->api_hostname));
    json_object_set_new(o, "client_id", admin_jstr(v->client_id));
    json_object_set_new(o, "client_secret", json_string("set"));
    json_object_set_new(o, "client_secret_key_id", admin_jstr(v->client_secret_key_id));
    json_object_set_new(o, "admin_integration_key", admin_jstr(v->admin_integration_key));
    json_object_set_new(o, "admin_secret_key",
                        json_string(v->admin_secret_key_id ? "set" : "unset"));
    json_object_set_new(o, "admin_secret_key_id", admin_jstr(v->admin_secret_key_id));
    json_object_set_new(o, "friendly_name", admin_jstr(v->friendly_name));
    json_object_set_new(o, "configure_flow", admin_jstr(v->configure_flow));
    json_object_set_new(o, "ca_bundle", json_string(v->has_ca_bundle ? "set" : "unset"));
    json_object_set_new(o, "sig_version",
                        v->sig_version ? json_integer(v->sig_version) : json_null());
    json_object_set_new(o, "max_calls", v->max_calls ? json_integer(v->max_calls) : json_null());
    json_object_set_new(o, "devices", json_integer(v->devices));
    json_object_set_new(o, "id", json_integer(v->id));
    json_object_set_new(o, "created_at", admin_jstr(v->created_at));
    json_object_set_new(o, "updated_at", admin_jstr(v->updated_at));
    return admin_print(o) < 0 ? ERR_IO : 0;
}

static int fail(const char *what, const err_t *e)
{
    fprintf(stderr, "duoctl %s: %s\n", what, e->msg[0] ? e->msg : err_name(e->code));
    return 1;
}

/* create and update share parsing; update takes the stage ref first. */
static int create_or_update(int update, int argc, char **argv)
{
    const char *what = update ? "stage update" : "stage create";
    if (update && (argc < 1 || argv[0][0] == '-')) {
        fprintf(stderr, "duoctl %s: which stage? (uuid or name)\n%s", what, USAGE);
        return 2;
    }
    stage_args a = {0};
    if (parse_fields(&a, what, argc, argv, update) < 0) {
        args_free(&a);
        return 2;
    }
    config c;
    store *s = NULL;
    secret_keyring *k = NULL;
    if (admin_open(what, 1, &c, &s, &k) < 0) {
        args_free(&a);
        return 1;
    }
    err_t e = {0};
    char uuid[37] = "";
    int rc = update ? store_stage_update(s, k, argv[0], &a.f, &e)
                    : store_stage_create(s, k, &a.f, uuid, &e);
    /* A stage renamed by name is shown under its new name. */
    const char *ref = !update ? uuid : a.f.name && !store_is_uuid(argv[0]) ? a.f.name : argv[0];
    if (rc == 0)
        rc = store_stage_show(s, ref, print_stage, NULL, &e);
    args_free(&a);
    admin_close(&c, s, k);
    return rc < 0 ? fail(what, &e) : 0;
}

static int cmd_list(int argc, char **argv)
{
    (void)argv;
    if (argc != 0) {
        fprintf(stderr, "%s", USAGE);
        return 2;
    }
    config c;
    store *s = NULL;
    if (admin_open("stage list", 0, &c, &s, NULL) < 0)
        return 1;
    err_t e = {0};
    int rc = store_stage_list(s, print_stage, NULL, &e);
    admin_close(&c, s, NULL);
    return rc < 0 ? fail("stage list", &e) : 0;
}

static int cmd_show(int argc, char **argv)
{
    if (argc != 1) {
        fprintf(stderr, "%s", USAGE);
        return 2;
    }
    config c;
    store *s = NULL;
    if (admin_open("stage show", 0, &c, &s, NULL) < 0)
        return 1;
    err_t e = {0};
    int rc = store_stage_show(s, argv[0], print_stage, NULL, &e);
    admin_close(&c, s, NULL);
    return rc < 0 ? fail("stage show", &e) : 0;
}

static int cmd_delete(int argc, char **argv)
{
    if (argc != 1) {
        fprintf(stderr, "%s", USAGE);
        return 2;
    }
    config c;
    store *s = NULL;
    if (admin_open("stage delete", 0, &c, &s, NULL) < 0)
        return 1;
    err_t e = {0};
    int64_t devices = 0;
    int rc = store_stage_delete(s, argv[0], &devices, &e);
    admin_close(&c, s, NULL);
    if (rc < 0)
        return fail("stage delete", &e);
    json_t *o = json_pack("{s:s, s:b, s:I}", "stage", argv[0], "deleted", 1, "devices_deleted",
                          (json_int_t)devices);
    return admin_print(o) < 0 ? 1 : 0;
}

static int cmd_rotate(int argc, char **argv)
{
    (void)argv;
    if (argc != 0) {
        fprintf(stderr, "%s", USAGE);
        return 2;
    }
    config c;
    store *s = NULL;
    secret_keyring *k = NULL;
    if (admin_open("stage rotate-key", 1, &c, &s, &k) < 0)
        return 1;
    err_t e = {0};
    int64_t n = 0;
    int rc = store_stage_rotate(s, k, &n, &e);
    json_t *o = rc == 0 ? json_pack("{s:s, s:I}", "key_id", secret_keyring_current_id(k),
                                    "reencrypted", (json_int_t)n)
                        : NULL;
    admin_close(&c, s, k);
    if (rc < 0)
        return fail("stage rotate-key", &e);
    return admin_print(o) < 0 ? 1 : 0;
}

int cmd_stage(int argc, char **argv)
{
    if (argc < 1 || strcmp(argv[0], "-h") == 0 || strcmp(argv[0], "--help") == 0) {
        fprintf(argc < 1 ? stderr : stdout, "%s", USAGE);
        return argc < 1 ? 2 : 0;
    }
    const char *sub = argv[0];
    if (strcmp(sub, "create") == 0)
        return create_or_update(0, argc - 1, argv + 1);
    if (strcmp(sub, "update") == 0)
        return create_or_update(1, argc - 1, argv + 1);
    if (strcmp(sub, "list") == 0)
        return cmd_list(argc - 1, argv + 1);
    if (strcmp(sub, "show") == 0)
        return cmd_show(argc - 1, argv + 1);
    if (strcmp(sub, "delete") == 0)
        return cmd_delete(argc - 1, argv + 1);
    if (strcmp(sub, "rotate-key") == 0)
        return cmd_rotate(argc - 1, argv + 1);
    fprintf(stderr, "duoctl stage: unknown command '%s'\n%s", sub, USAGE);
    return 2;
}
