/* gen_msg_seeds.c - writes the msgpack seed corpus for fuzz_msg from schemas/examples.
 *
 * Usage: gen_msg_seeds <schemas/examples dir> <output dir>. Each examples/<type>/<x>.json
 * becomes <output>/<type>-<x>.mpk, encoded by msg_encode so seeds are exactly what
 * producers send. Invariant: output names are derived from the inputs only, so rerunning
 * rewrites the same files. Built and run by tests/fuzz/gen_seeds.sh, not by CTest. */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "msg.h"

static int write_file(const char *path, const void *buf, size_t len)
{
    FILE *f = fopen(path, "wb");
    if (!f)
        return -1;
    size_t n = fwrite(buf, 1, len, f);
    return (fclose(f) == 0 && n == len) ? 0 : -1;
}

/* Encodes one example; returns 0, or -1 after saying why. */
static int encode_one(const char *in, const char *out)
{
    json_error_t je;
    json_t *v = json_load_file(in, 0, &je);
    if (!v) {
        fprintf(stderr, "%s: %s\n", in, je.text);
        return -1;
    }
    void *buf = NULL;
    size_t len = 0;
    err_t e = {0};
    int rc = msg_encode(v, &buf, &len, &e);
    json_decref(v);
    if (rc == 0)
        rc = write_file(out, buf, len);
    else
        fprintf(stderr, "%s: %s\n", in, e.msg);
    free(buf);
    return rc;
}

static int do_type(const char *examples, const char *type, const char *outdir)
{
    char dir[4096], in[8192], out[8192];
    snprintf(dir, sizeof dir, "%s/%s", examples, type);
    DIR *d = opendir(dir);
    if (!d)
        return 0;
    int rc = 0;
    struct dirent *ent;
    while ((ent = readdir(d)) && rc == 0) {
        size_t n = strlen(ent->d_name);
        if (n < 6 || strcmp(ent->d_name + n - 5, ".json") != 0)
            continue;
        snprintf(in, sizeof in, "%s/%s", dir, ent->d_name);
        snprintf(out, sizeof out, "%s/%s-%.*s.mpk", outdir, type, (int)(n - 5), ent->d_name);
        rc = encode_one(in, out);
    }
    closedir(d);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: %s <schemas/examples> <outdir>\n", argv[0]);
        return 2;
    }
    DIR *d = opendir(argv[1]);
    if (!d) {
        perror(argv[1]);
        return 1;
    }
    int rc = 0;
    struct dirent *ent;
    while ((ent = readdir(d)) && rc == 0)
        if (ent->d_name[0] != '.')
            rc = do_type(argv[1], ent->d_name, argv[2]);
    closedir(d);
    return rc == 0 ? 0 : 1;
}
