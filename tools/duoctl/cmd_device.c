/* cmd_device.c - `duoctl device list|delete`: the local record of Duo devices (one per
 * Duo user per stage). Deleting here does not touch Duo itself. */
#include <stdio.h>
#include <string.h>

#include "admin_io.h"
#include "cmd.h"
#include "store_device.h"

static const char USAGE[] =
    "usage: duoctl device COMMAND [ARGS]\n"
    "  list [--stage STAGE] [--user USERNAME] [--limit N]   one JSON object per line\n"
    "                            (default limit 1000; 0 = all)\n"
    "  delete DEVICE             by numeric id or uuid (local record only)\n"
    "STAGE is a stage uuid or name. Needs DATABASE_URL.\n";

static int print_device(const device_view *v, void *arg)
{
    (void)arg;
    json_t *o = json_object();
    if (!o)
        return ERR_NOMEM;
    json_object_set_new(o, "id", json_integer(v->id));
    json_object_set_new(o, "uuid", admin_jstr(v->uuid));
    json_object_set_new(o, "stage", admin_jstr(v->stage_name));
    json_object_set_new(o, "stage_uuid", admin_jstr(v->stage_uuid));
    json_object_set_new(o, "username", admin_jstr(v->username));
    json_object_set_new(o, "duo_user_id", admin_jstr(v->duo_user_id));
    json_object_set_new(o, "duo_user_kind", admin_jstr(v->duo_user_kind));
    json_object_set_new(o, "name", admin_jstr(v->name));
    json_object_set_new(o, "confirmed", json_boolean(v->confirmed));
    json_object_set_new(o, "created_at", admin_jstr(v->created_at));
    json_object_set_new(o, "last_used", admin_jstr(v->last_used));
    return admin_print(o) < 0 ? ERR_IO : 0;
}

typedef struct {
    const char *stage;
    const char *user;
    long limit;
} list_args;

static int parse_list(int argc, char **argv, list_args *a)
{
    a->limit = 1000;
    for (int i = 0; i < argc; i++) {
        if (i + 1 >= argc)
            return -1;
        if (strcmp(argv[i], "--stage") == 0)
            a->stage = argv[++i];
        else if (strcmp(argv[i], "--user") == 0)
            a->user = argv[++i];
        else if (strcmp(argv[i], "--limit") == 0) {
            if (admin_parse_long(argv[++i], 0, 1000000000L, &a->limit) < 0)
                return -1;
        } else
            return -1;
    }
    return 0;
}

static int device_list(int argc, char **argv)
{
    list_args a = {0};
    if (parse_list(argc, argv, &a) < 0) {
        fprintf(stderr, "duoctl device list: bad arguments\n%s", USAGE);
        return 2;
    }
    config c;
    store *s = NULL;
    if (admin_open("device list", 0, &c, &s, NULL) < 0)
        return 1;
    err_t e = {0};
    int rc = store_device_list(s, a.stage, a.user, a.limit, print_device, NULL, &e);
    admin_close(&c, s, NULL);
    if (rc < 0) {
        fprintf(stderr, "duoctl device list: %s\n", e.msg);
        return 1;
    }
    return 0;
}

static int device_delete(int argc, char **argv)
{
    if (argc != 1) {
        fprintf(stderr, "%s", USAGE);
        return 2;
    }
    config c;
    store *s = NULL;
    if (admin_open("device delete", 0, &c, &s, NULL) < 0)
        return 1;
    err_t e = {0};
    int rc = store_device_delete(s, argv[0], &e);
    admin_close(&c, s, NULL);
    if (rc < 0) {
        fprintf(stderr, "duoctl device delete: %s\n", e.msg);
        return 1;
    }
    return admin_print(json_pack("{s:s, s:b}", "device", argv[0], "deleted", 1)) < 0 ? 1 : 0;
}

int cmd_device(int argc, char **argv)
{
    if (argc < 1 || strcmp(argv[0], "-h") == 0 || strcmp(argv[0], "--help") == 0) {
        fprintf(argc < 1 ? stderr : stdout, "%s", USAGE);
        return argc < 1 ? 2 : 0;
    }
    if (strcmp(argv[0], "list") == 0)
        return device_list(argc - 1, argv + 1);
    if (strcmp(argv[0], "delete") == 0)
        return device_delete(argc - 1, argv + 1);
    fprintf(stderr, "duoctl device: unknown command '%s'\n%s", argv[0], USAGE);
    return 2;
}
