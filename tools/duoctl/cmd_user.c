/* cmd_user.c - `duoctl user upsert|list|load`: the local users table that jobs refer to.
 *
 * `load` reads CSV (username,email) or JSON lines and inserts in batches of BATCH rows
 * with one unnest() statement each, all in one transaction: a bad line loads nothing
 * and names its line number. Existing usernames are left as they are. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "admin_io.h"
#include "cmd.h"
#include "store_user.h"

#define BATCH 10000

static const char USAGE[] =
    "usage: duoctl user COMMAND [ARGS]\n"
    "  upsert --username U [--email E] [--inactive]   insert or update one user\n"
    "  list [--limit N]          one JSON object per line by id (default 100; 0 = all)\n"
    "  load FILE|-               bulk insert from CSV lines \"username,email\" (an optional\n"
    "                            header line \"username,email\"; email may be empty) or\n"
    "                            JSON lines {\"username\":..,\"email\":..}; existing\n"
    "                            usernames are skipped; all or nothing\n"
    "Output is JSON. Needs DATABASE_URL.\n";

static int user_upsert(int argc, char **argv)
{
    const char *username = NULL, *email = NULL;
    int active = 1;
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--inactive") == 0)
            active = 0;
        else if (strcmp(argv[i], "--username") == 0 && i + 1 < argc)
            username = argv[++i];
        else if (strcmp(argv[i], "--email") == 0 && i + 1 < argc)
            email = argv[++i];
        else {
            fprintf(stderr, "duoctl user upsert: bad argument '%s'\n%s", argv[i], USAGE);
            return 2;
        }
    }
    if (!username) {
        fprintf(stderr, "duoctl user upsert: --username is required\n");
        return 2;
    }
    config c;
    store *s = NULL;
    if (admin_open("user upsert", 0, &c, &s, NULL) < 0)
        return 1;
    err_t e = {0};
    int64_t id = 0;
    int inserted = 0;
    int rc = store_user_upsert(s, username, email, active, &id, &inserted, &e);
    admin_close(&c, s, NULL);
    if (rc < 0) {
        fprintf(stderr, "duoctl user upsert: %s\n", e.msg);
        return 1;
    }
    json_t *o = json_pack("{s:I, s:s, s:b, s:b}", "id", (json_int_t)id, "username", username,
                          "active", active, "inserted", inserted);
    return admin_print(o) < 0 ? 1 : 0;
}

static int print_user(const user_view *v, void *arg)
{
    (void)arg;
    json_t *o = json_object();
    if (!o)
        return ERR_NOMEM;
    json_object_set_new(o, "id", json_integer(v->id));
    json_object_set_new(o, "uuid", admin_jstr(v->uuid));
    json_object_set_new(o, "username", admin_jstr(v->username));
    json_object_set_new(o, "email", admin_jstr(v->email));
    json_object_set_new(o, "active", json_boolean(v->active));
    json_object_set_new(o, "created_at", admin_jstr(v->created_at));
    return admin_print(o) < 0 ? ERR_IO : 0;
}

static int user_list(int argc, char **argv)
{
    long limit = 100;
    if (argc == 2 && strcmp(argv[0], "--limit") == 0) {
        if (admin_parse_long(argv[1], 0, 1000000000L, &limit) < 0)
            argc = -1;
    } else if (argc != 0) {
        argc = -1;
    }
    if (argc < 0) {
        fprintf(stderr, "duoctl user list: bad arguments\n%s", USAGE);
        return 2;
    }
    config c;
    store *s = NULL;
    if (admin_open("user list", 0, &c, &s, NULL) < 0)
        return 1;
    err_t e = {0};
    int rc = store_user_list(s, limit, print_user, NULL, &e);
    admin_close(&c, s, NULL);
    if (rc < 0) {
        fprintf(stderr, "duoctl user list: %s\n", e.msg);
        return 1;
    }
    return 0;
}

/* ---- bulk load ---- */

typedef struct {
    char *names[BATCH];
    char *mails[BATCH];
    size_t n;
    int64_t read;
    int64_t inserted;
} batch;

static void batch_clear(batch *b)
{
    for (size_t i = 0; i < b->n; i++) {
        free(b->names[i]);
        free(b->mails[i]);
    }
    b->n = 0;
}

static int batch_flush(store *s, batch *b, err_t *e)
{
    int64_t added = 0;
    int rc = b->n ? store_user_insert_batch(s, (const char *const *)b->names,
                                            (const char *const *)b->mails, b->n, &added, e)
                  : 0;
    b->inserted += added;
    batch_clear(b);
    return rc;
}

/* Parses one CSV field in place starting at *p; advances *p past its comma. Sets *more
 * when a comma followed. Returns the field or NULL when malformed. */
static char *csv_field(char **p, int *more)
{
    char *s = *p, *w = s, *start = s;
    if (*s == '"') {
        for (s++;; s++) {
            if (!*s)
                return NULL;
            if (*s == '"' && s[1] != '"')
                break;
            if (*s == '"')
                s++;
            *w++ = *s;
        }
        s++;
    } else {
        while (*s && *s != ',' && *s != '"')
            s++;
        w = s;
    }
    if (*s && *s != ',')
        return NULL;
    *more = *s == ',';
    *p = *more ? s + 1 : s;
    *w = '\0';
    return start;
}

/* "username[,email]" -> fresh copies. Returns 0, 1 for the header line, -1 malformed. */
static int parse_csv(char *line, char **user, char **mail)
{
    int more = 0;
    char *p = line, *u = csv_field(&p, &more), *m = NULL;
    if (u && more)
        m = csv_field(&p, &more);
    if (!u || more || (m == NULL && p != line + strlen(line)))
        return -1;
    if (strcmp(u, "username") == 0 && m && strcmp(m, "email") == 0)
        return 1;
    *user = strdup(u);
    *mail = m && m[0] ? strdup(m) : NULL;
    return 0;
}

static int parse_json(const char *line, char **user, char **mail)
{
    json_t *o = json_loads(line, JSON_REJECT_DUPLICATES, NULL);
    json_t *u = json_object_get(o, "username"), *m = json_object_get(o, "email");
    int ok = json_is_object(o) && json_is_string(u) && (!m || json_is_null(m) || json_is_string(m));
    if (ok) {
        *user = strdup(json_string_value(u));
        *mail = json_is_string(m) ? strdup(json_string_value(m)) : NULL;
    }
    json_decref(o);
    return ok ? 0 : -1;
}

/* Adds one input line to the batch (flushing when full). Returns 0 or an ERR_*. */
static int load_line(store *s, batch *b, char *line, long lineno, err_t *e)
{
    size_t len = strlen(line);
    while (len && (line[len - 1] == '\n' || line[len - 1] == '\r'))
        line[--len] = '\0';
    if (len == 0)
        return 0;
    char *user = NULL, *mail = NULL;
    int rc = line[0] == '{' ? parse_json(line, &user, &mail) : parse_csv(line, &user, &mail);
    if (rc == 1 && lineno == 1)
        return 0;
    if (rc != 0 || !user) {
        free(user);
        free(mail);
        return err_set(e, ERR_INVAL,
                       "line %ld: expected username,email or a JSON object "
                       "with a string \"username\"",
                       lineno);
    }
    b->names[b->n] = user;
    b->mails[b->n++] = mail;
    b->read++;
    if (strlen(user) < 1 || strlen(user) > 150)
        return err_set(e, ERR_INVAL, "line %ld: username must be 1 to 150 bytes", lineno);
    return b->n == BATCH ? batch_flush(s, b, e) : 0;
}

static int load_stream(store *s, FILE *in, batch *b, err_t *e)
{
    char *line = NULL;
    size_t cap = 0;
    long lineno = 0;
    int rc = store_begin(s, e);
    while (rc == 0 && getline(&line, &cap, in) >= 0)
        rc = load_line(s, b, line, ++lineno, e);
    if (rc == 0 && ferror(in))
        rc = err_set(e, ERR_IO, "read error after line %ld", lineno);
    if (rc == 0)
        rc = batch_flush(s, b, e);
    if (rc == 0)
        rc = store_commit(s, e);
    if (rc < 0)
        store_rollback(s);
    batch_clear(b);
    free(line);
    return rc;
}

static int user_load(int argc, char **argv)
{
    if (argc != 1) {
        fprintf(stderr, "%s", USAGE);
        return 2;
    }
    int is_stdin = strcmp(argv[0], "-") == 0;
    FILE *in = is_stdin ? stdin : fopen(argv[0], "r");
    if (!in) {
        perror(argv[0]);
        return 1;
    }
    config c;
    store *s = NULL;
    batch *b = calloc(1, sizeof *b);
    int rc = b ? admin_open("user load", 0, &c, &s, NULL) : -1;
    err_t e = {0};
    if (rc == 0) {
        rc = load_stream(s, in, b, &e);
        admin_close(&c, s, NULL);
        if (rc < 0)
            fprintf(stderr, "duoctl user load: %s\n", e.msg);
    }
    if (!is_stdin)
        fclose(in);
    json_t *o = rc == 0 ? json_pack("{s:I, s:I, s:I}", "read", (json_int_t)b->read, "inserted",
                                    (json_int_t)b->inserted, "existing",
                                    (json_int_t)(b->read - b->inserted))
                        : NULL;
    free(b);
    return rc < 0 ? 1 : admin_print(o) < 0 ? 1 : 0;
}

int cmd_user(int argc, char **argv)
{
    if (argc < 1 || strcmp(argv[0], "-h") == 0 || strcmp(argv[0], "--help") == 0) {
        fprintf(argc < 1 ? stderr : stdout, "%s", USAGE);
        return argc < 1 ? 2 : 0;
    }
    if (strcmp(argv[0], "upsert") == 0)
        return user_upsert(argc - 1, argv + 1);
    if (strcmp(argv[0], "list") == 0)
        return user_list(argc - 1, argv + 1);
    if (strcmp(argv[0], "load") == 0)
        return user_load(argc - 1, argv + 1);
    fprintf(stderr, "duoctl user: unknown command '%s'\n%s", argv[0], USAGE);
    return 2;
}
