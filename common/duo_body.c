/* duo_body.c - see duo_body.h. */
#include "duo_body.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

size_t duo_body_on_data(char *p, size_t size, size_t n, void *arg)
{
    duo_body *r = arg;
    size_t add = size * n;
    if (r->len + add > r->max) {
        r->oversize = 1;
        return 0; /* aborts the transfer with CURLE_WRITE_ERROR */
    }
    if (r->len + add + 1 > r->cap) {
        size_t cap = r->cap ? r->cap : 1024;
        while (cap < r->len + add + 1)
            cap *= 2;
        char *nb = realloc(r->body, cap);
        if (!nb)
            return 0;
        r->body = nb;
        r->cap = cap;
    }
    memcpy(r->body + r->len, p, add);
    r->len += add;
    r->body[r->len] = '\0';
    return add;
}

/* Retry-After in seconds (the HTTP-date form is ignored: the backoff applies then). */
size_t duo_body_on_header(char *p, size_t size, size_t n, void *arg)
{
    duo_body *r = arg;
    size_t len = size * n;
    static const char name[] = "retry-after:";
    if (len > sizeof name - 1 && len < 64 && strncasecmp(p, name, sizeof name - 1) == 0) {
        char v[64];
        memcpy(v, p + sizeof name - 1, len - (sizeof name - 1));
        v[len - (sizeof name - 1)] = '\0';
        char *end = NULL;
        long secs = strtol(v, &end, 10);
        if (end != v && secs >= 0 && secs < 86400)
            r->retry_after_ms = secs * 1000;
    }
    return len;
}
