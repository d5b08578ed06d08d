/* buf.c - see buf.h. */
#include "buf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int grow(buf *b, size_t need)
{
    if (b->max && need > b->max + 1) {
        b->failed = 1;
        return -1;
    }
    if (need <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < need)
        cap *= 2;
    char *nd = realloc(b->data, cap);
    if (!nd) {
        b->failed = 1;
        return -1;
    }
    b->data = nd;
    b->cap = cap;
    return 0;
}

int buf_put(buf *b, const void *p, size_t n)
{
    if (b->failed || grow(b, b->len + n + 1) < 0)
        return -1;
    if (n)
        memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
    return 0;
}

int buf_str(buf *b, const char *s)
{
    return buf_put(b, s, strlen(s));
}

int buf_vprintf(buf *b, const char *fmt, va_list ap)
{
    if (b->failed)
        return -1;
    va_list again;
    va_copy(again, ap);
    char small[256];
    int n = vsnprintf(small, sizeof small, fmt, ap);
    int rc = -1;
    if (n < 0)
        b->failed = 1;
    else if ((size_t)n < sizeof small)
        rc = buf_put(b, small, (size_t)n);
    else if (grow(b, b->len + (size_t)n + 1) == 0) {
        vsnprintf(b->data + b->len, (size_t)n + 1, fmt, again);
        b->len += (size_t)n;
        rc = 0;
    }
    va_end(again);
    return rc;
}

int buf_printf(buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = buf_vprintf(b, fmt, ap);
    va_end(ap);
    return rc;
}

char *buf_release(buf *b, size_t *len)
{
    if (!b->failed && !b->data)
        buf_put(b, "", 0);
    if (b->failed) {
        buf_free(b);
        return NULL;
    }
    char *out = b->data;
    if (len)
        *len = b->len;
    memset(b, 0, sizeof *b);
    return out;
}

void buf_reset(buf *b)
{
    b->len = 0;
    b->failed = 0;
    if (b->data)
        b->data[0] = '\0';
}

void buf_free(buf *b)
{
    free(b->data);
    size_t max = b->max;
    memset(b, 0, sizeof *b);
    b->max = max;
}
