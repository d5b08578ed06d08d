/* err.c - fills err_t; messages are truncated, never overflowed. */
#include "err.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

int err_set(err_t *e, int code, const char *fmt, ...)
{
    if (!e)
        return code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->msg, sizeof e->msg, fmt, ap);
    va_end(ap);
    e->code = code;
    return code;
}

int err_wrap(err_t *e, int code, const char *fmt, ...)
{
    if (!e)
        return code;
    char prefix[256];
    char old[sizeof e->msg];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, e->msg, sizeof old);
    /* Truncation is acceptable for a human message; compute it explicitly so the
     * compiler sees bounded writes. */
    size_t n = strnlen(prefix, sizeof prefix - 1);
    if (n > sizeof e->msg - 3)
        n = sizeof e->msg - 3;
    memcpy(e->msg, prefix, n);
    memcpy(e->msg + n, ": ", 2);
    size_t room = sizeof e->msg - n - 3;
    size_t m = strnlen(old, room);
    memcpy(e->msg + n + 2, old, m);
    e->msg[n + 2 + m] = '\0';
    if (e->code == 0)
        e->code = code;
    return e->code;
}

const char *err_name(int code)
{
    switch (code) {
    case ERR_OK:
        return "ERR_OK";
    case ERR_NOMEM:
        return "ERR_NOMEM";
    case ERR_INVAL:
        return "ERR_INVAL";
    case ERR_IO:
        return "ERR_IO";
    case ERR_DB:
        return "ERR_DB";
    case ERR_MQ:
        return "ERR_MQ";
    case ERR_DUO:
        return "ERR_DUO";
    case ERR_TLS:
        return "ERR_TLS";
    case ERR_NOTFOUND:
        return "ERR_NOTFOUND";
    case ERR_CONFLICT:
        return "ERR_CONFLICT";
    case ERR_TIMEOUT:
        return "ERR_TIMEOUT";
    case ERR_CRYPTO:
        return "ERR_CRYPTO";
    case ERR_CONFIG:
        return "ERR_CONFIG";
    case ERR_NET:
        return "ERR_NET";
    default:
        return "ERR_UNKNOWN";
    }
}
