/* parse_page.c - CPU per users page of the two ways to read it: the whole JSON tree
 * (duo_response_parse, then user_id/username picked from it, as the import did) and the
 * streaming scanner (duo_users_scan). No network: the page is a file, e.g. one written
 * by bench_import.sh from the emulator's own template.
 *
 * usage: parse_page FILE [ITERATIONS]
 * Prints "tree_ms=X scan_ms=Y users=N bytes=B" (milliseconds of CPU per page, best of
 * three rounds). Exit 1 when the file cannot be read or either reader refuses it. */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "duo_users_scan.h"

static double cpu_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    size_t cap = 1 << 20, n = 0;
    char *b = malloc(cap);
    while (b) {
        size_t got = fread(b + n, 1, cap - n, f);
        n += got;
        if (got == 0)
            break;
        if (n == cap) {
            char *nb = realloc(b, cap * 2);
            if (!nb) {
                free(b);
                b = NULL;
            }
            b = nb;
            cap *= 2;
        }
    }
    fclose(f);
    *len = n;
    return b;
}

/* One page read as a tree (the two strings per user picked out, as the import did) or
 * by the scanner; users found, or -1. */
static long read_once(int tree, const char *body, size_t len)
{
    json_t *resp = NULL, *meta = NULL;
    duo_error de = {0};
    int rc = tree ? duo_response_parse(200, body, len, &resp, &meta, &de)
                  : duo_users_scan(200, body, len, &resp, &meta, &de);
    long n = rc < 0 ? -1 : 0;
    for (size_t i = 0; rc == 0 && i < json_array_size(resp); i++) {
        json_t *u = json_array_get(resp, i);
        n += json_string_value(json_object_get(u, "user_id")) &&
             json_string_value(json_object_get(u, "username"));
    }
    json_decref(resp);
    json_decref(meta);
    return n;
}

/* Best of three rounds of iters reads: ms of CPU per page. */
static double measure(int tree, const char *body, size_t len, int iters, long *users)
{
    double best = 1e18;
    for (int round = 0; round < 3; round++) {
        double t0 = cpu_ms();
        for (int i = 0; i < iters; i++)
            *users = read_once(tree, body, len);
        double per = (cpu_ms() - t0) / iters;
        best = per < best ? per : best;
    }
    return best;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: parse_page FILE [ITERATIONS]\n");
        return 1;
    }
    int iters = argc > 2 ? (int)strtol(argv[2], NULL, 10) : 200;
    size_t len = 0;
    char *body = slurp(argv[1], &len);
    if (!body || iters < 1) {
        fprintf(stderr, "parse_page: cannot read %s\n", argv[1]);
        free(body);
        return 1;
    }
    long tu = 0, su = 0;
    double tree = measure(1, body, len, iters, &tu);
    double scan = measure(0, body, len, iters, &su);
    free(body);
    if (tu < 0 || su < 0 || tu != su) {
        fprintf(stderr, "parse_page: the readers disagree (%ld vs %ld users)\n", tu, su);
        return 1;
    }
    printf("tree_ms=%.3f scan_ms=%.3f users=%ld bytes=%zu\n", tree, scan, su, len);
    return 0;
}
