/* cmd_api.c - `duoctl api`: one signed Duo call from the command line.
 *
 * Invariant: options come first and `--` ends them, so a key=value may hold any
 * character ('-', '=', '&', UTF-8); a pair splits at its first '='. The secret key is
 * never printed, not even in errors. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd.h"
#include "duo.h"

static const char usage_text[] =
    "usage: duoctl api --host HOST --ikey IKEY --skey SKEY [--ca-file FILE]\n"
    "                  [--sig-version 2|5] [--digest sha1|sha512] [--]\n"
    "                  METHOD PATH [key=value ...]\n"
    "\n"
    "Makes one signed Duo API call (v5 signature by default; --digest applies to v2)\n"
    "and prints the whole success envelope on stdout as JSON:\n"
    "  {\"stat\": \"OK\", \"response\": ..., \"metadata\": ... (when Duo sends it)}\n"
    "Exit status: 0 on stat OK; 1 on a Duo, TLS or network error (HTTP status, code,\n"
    "message and detail on stderr); 2 on a usage error.\n"
    "HOST may carry a port (127.0.0.1:8443); the signature uses the host without it.\n"
    "The CA bundle is --ca-file, else $DUO_CA_FILE, else the system's.\n"
    "Options must come first; `--` ends them. Each key=value splits at its first '='.\n";

typedef struct {
    duo_client_opts o;
    const char *method, *path;
    char **pairs;
    int npairs;
} api_args;

static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static int usage_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "duoctl api: ");
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n\n%s", usage_text);
    return 2;
}

/* Applies one "--name value" option; returns 0 or 2 (usage error). */
static int apply_option(api_args *a, const char *name, const char *value)
{
    if (strcmp(name, "--host") == 0)
        a->o.host = value;
    else if (strcmp(name, "--ikey") == 0)
        a->o.ikey = value;
    else if (strcmp(name, "--skey") == 0)
        a->o.skey = value;
    else if (strcmp(name, "--ca-file") == 0)
        a->o.ca_file = value;
    else if (strcmp(name, "--sig-version") == 0 && strcmp(value, "2") == 0)
        a->o.sig_version = 2;
    else if (strcmp(name, "--sig-version") == 0 && strcmp(value, "5") == 0)
        a->o.sig_version = 5;
    else if (strcmp(name, "--digest") == 0 && strcmp(value, "sha1") == 0)
        a->o.digest = DUO_DIGEST_SHA1;
    else if (strcmp(name, "--digest") == 0 && strcmp(value, "sha512") == 0)
        a->o.digest = DUO_DIGEST_SHA512;
    else if (strcmp(name, "--sig-version") == 0 || strcmp(name, "--digest") == 0)
        return usage_error("bad value for %s", name);
    else
        return usage_error("unknown option '%s'", name);
    return 0;
}

/* Parses argv; returns 0, 2 (usage error) or -1 (help was printed). */
static int parse_args(api_args *a, int argc, char **argv)
{
    int i = 0;
    for (; i < argc && strncmp(argv[i], "-", 1) == 0; i++) {
        if (strcmp(argv[i], "--") == 0) {
            i++;
            break;
        }
        if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            fputs(usage_text, stdout);
            return -1;
        }
        if (i + 1 >= argc)
            return usage_error("option %s needs a value", argv[i]);
        int rc = apply_option(a, argv[i], argv[i + 1]);
        if (rc)
            return rc;
        i++;
    }
    if (!a->o.host || !a->o.ikey || !a->o.skey)
        return usage_error("%s", "--host, --ikey and --skey are required");
    if (argc - i < 2)
        return usage_error("%s", "METHOD and PATH are required");
    a->method = argv[i];
    a->path = argv[i + 1];
    if (a->path[0] != '/')
        return usage_error("PATH must start with '/': %s", a->path);
    a->pairs = argv + i + 2;
    a->npairs = argc - i - 2;
    return 0;
}

/* Splits each key=value at its first '=' (in place); returns 0 or 2. */
static int split_pairs(const api_args *a, duo_param *p)
{
    for (int i = 0; i < a->npairs; i++) {
        char *eq = strchr(a->pairs[i], '=');
        if (!eq)
            return usage_error("parameter '%s' is not key=value", a->pairs[i]);
        *eq = '\0';
        p[i].key = a->pairs[i];
        p[i].value = eq + 1;
    }
    return 0;
}

static void print_envelope(json_t *response, json_t *metadata)
{
    json_t *env = json_pack("{s:s, s:O}", "stat", "OK", "response", response);
    if (env && metadata)
        json_object_set(env, "metadata", metadata);
    if (env)
        json_dumpf(env, stdout, JSON_INDENT(2) | JSON_SORT_KEYS);
    fputc('\n', stdout);
    json_decref(env);
}

static void print_error(int rc, const duo_error *e)
{
    fprintf(stderr, "duoctl api: %s (%s, class %s)\n", e->message[0] ? e->message : err_name(rc),
            duo_error_code(e), duo_error_class_name(e->cls));
    fprintf(stderr,
            "  http_status: %d\n  code: %d\n  message: %s\n  detail: %s\n"
            "  attempts: %d\n",
            e->http_status, e->code, e->message, e->detail, e->attempts);
}

static int call_and_print(const api_args *a, const duo_param *p)
{
    err_t e = {0};
    duo_client *c = duo_client_new(&a->o, &e);
    if (!c) {
        fprintf(stderr, "duoctl api: %s\n", e.msg);
        return 1;
    }
    json_t *response = NULL, *metadata = NULL;
    duo_error de;
    int rc = duo_call(c, a->method, a->path, p, (size_t)a->npairs, &response, &metadata, &de);
    duo_client_free(c);
    if (rc < 0) {
        print_error(rc, &de);
        return 1;
    }
    print_envelope(response, metadata);
    json_decref(response);
    json_decref(metadata);
    return 0;
}

int cmd_api(int argc, char **argv)
{
    api_args a;
    memset(&a, 0, sizeof a);
    duo_client_opts_default(&a.o);
    int rc = parse_args(&a, argc, argv);
    if (rc)
        return rc < 0 ? 0 : rc;
    duo_param *p = calloc((size_t)a.npairs + 1, sizeof *p);
    if (!p) {
        fprintf(stderr, "duoctl api: out of memory\n");
        return 1;
    }
    rc = split_pairs(&a, p);
    if (rc == 0)
        rc = call_and_print(&a, p);
    free(p);
    return rc;
}
