/* paths.c - locates data folders; an explicit environment variable always wins. */
#include "paths.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

static int is_dir(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

int paths_find(const char *what, char *out, size_t outlen)
{
    char env[64];
    int n = snprintf(env, sizeof env, "DUO_%s_DIR", what);
    for (int i = 4; i < n; i++)
        env[i] = (char)toupper((unsigned char)env[i]);
    const char *v = getenv(env);
    if (v && *v) {
        snprintf(out, outlen, "%s", v);
        return is_dir(out) ? 0 : -1;
    }
    snprintf(out, outlen, "%s/%s", DUO_DATADIR, what);
    if (is_dir(out))
        return 0;
    snprintf(out, outlen, "%s/%s", DUO_SOURCE_DIR, what);
    return is_dir(out) ? 0 : -1;
}
