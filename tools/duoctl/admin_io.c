/* admin_io.c - shared plumbing of duoctl's administration commands.
 *
 * Invariant: buffers that may hold a secret are wiped before they are freed, also on
 * error paths; error lines never include file contents. */
#include "admin_io.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

int admin_open(const char *what, int want_keys, config *c, store **s, secret_keyring **k)
{
    err_t e = {0};
    *s = NULL;
    if (k)
        *k = NULL;
    if (config_load(c, CONFIG_NEED_DB, &e) < 0) {
        fprintf(stderr, "duoctl %s: %s\n", what, e.msg);
        return -1;
    }
    if (want_keys && !(*k = secret_keyring_load(c, &e))) {
        fprintf(stderr, "duoctl %s: %s\n", what, e.msg);
        config_free(c);
        return -1;
    }
    *s = store_open(c->database_url, &e);
    if (!*s) {
        fprintf(stderr, "duoctl %s: %s\n", what, e.msg);
        admin_close(c, NULL, k ? *k : NULL);
        return -1;
    }
    return 0;
}

void admin_close(config *c, store *s, secret_keyring *k)
{
    store_close(s);
    secret_keyring_free(k);
    config_free(c);
}

int admin_print(json_t *obj)
{
    if (!obj)
        return -1;
    int rc = json_dumpf(obj, stdout, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(obj);
    if (rc < 0 || fputc('\n', stdout) == EOF)
        return -1;
    return 0;
}

json_t *admin_jstr(const char *s)
{
    json_t *v = s ? json_string(s) : json_null();
    return v ? v : json_null(); /* not UTF-8: print null rather than bad JSON */
}

/* Reads all of f into a growing buffer; returns it (wiped on failure) or NULL. */
static char *slurp(FILE *f, size_t max, size_t *len)
{
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    while (buf) {
        if (n + 1 == cap) {
            char *bigger = malloc(cap * 2);
            if (bigger)
                memcpy(bigger, buf, n);
            OPENSSL_cleanse(buf, n);
            free(buf);
            buf = bigger;
            cap *= 2;
            continue;
        }
        size_t got = fread(buf + n, 1, cap - 1 - n, f);
        n += got;
        if (n > max || ferror(f)) {
            OPENSSL_cleanse(buf, n);
            free(buf);
            return NULL;
        }
        if (got == 0)
            break;
    }
    if (buf)
        buf[n] = '\0';
    *len = n;
    return buf;
}

char *admin_read_file(const char *what, const char *path, size_t max, int trim)
{
    int is_stdin = strcmp(path, "-") == 0;
    FILE *f = is_stdin ? stdin : fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "duoctl %s: %s: %s\n", what, path, strerror(errno));
        return NULL;
    }
    size_t n = 0;
    char *buf = slurp(f, max, &n);
    if (!is_stdin)
        fclose(f);
    if (!buf) {
        fprintf(stderr, "duoctl %s: %s: unreadable or larger than %zu bytes\n", what,
                is_stdin ? "standard input" : path, max);
        return NULL;
    }
    if (strlen(buf) != n) {
        fprintf(stderr, "duoctl %s: %s: contains a NUL byte\n", what, path);
        OPENSSL_cleanse(buf, n);
        free(buf);
        return NULL;
    }
    if (trim && n > 0 && buf[n - 1] == '\n')
        buf[--n] = '\0';
    if (trim && n > 0 && buf[n - 1] == '\r')
        buf[--n] = '\0';
    return buf;
}

int admin_parse_long(const char *s, long min, long max, long *out)
{
    char *end = NULL;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < min || v > max)
        return -1;
    *out = v;
    return 0;
}
