/* log.c - JSON lines on stderr; each line is built in one buffer and written with one
 * write(2) so lines from concurrent processes never interleave mid-line. */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

log_level log_min_level = LOG_INFO;
static const char *log_component = "duo";

void log_init(const char *component, log_level min)
{
    if (component)
        log_component = component;
    log_min_level = min;
}

int log_parse_level(const char *s, log_level *out)
{
    static const char *names[] = {"debug", "info", "warn", "error"};
    for (int i = 0; i < 4; i++) {
        if (s && strcasecmp(s, names[i]) == 0) {
            *out = (log_level)i;
            return 0;
        }
    }
    return -1;
}

typedef struct {
    char buf[8192];
    size_t len;
} line;

static void put(line *l, const char *s, size_t n)
{
    /* Keep two bytes for the closing "}\n", which is appended directly. */
    if (l->len + n > sizeof l->buf - 2)
        n = sizeof l->buf - 2 - l->len;
    memcpy(l->buf + l->len, s, n);
    l->len += n;
}

static void put_str(line *l, const char *s)
{
    put(l, "\"", 1);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        char esc[8];
        if (*p == '"' || *p == '\\') {
            esc[0] = '\\';
            esc[1] = (char)*p;
            put(l, esc, 2);
        } else if (*p < 0x20) {
            snprintf(esc, sizeof esc, "\\u%04x", *p);
            put(l, esc, 6);
        } else {
            put(l, (const char *)p, 1);
        }
    }
    put(l, "\"", 1);
}

void log_write(log_level level, const char *msg, ...)
{
    static const char *names[] = {"debug", "info", "warn", "error"};
    line l = {.len = 0};
    struct timeval tv;
    gettimeofday(&tv, NULL);
    struct tm tm;
    gmtime_r(&tv.tv_sec, &tm);
    char ts[64];
    snprintf(ts, sizeof ts, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(tv.tv_usec / 1000));
    put(&l, "{\"ts\":", 6);
    put_str(&l, ts);
    put(&l, ",\"level\":", 9);
    put_str(&l, names[level]);
    put(&l, ",\"component\":", 13);
    put_str(&l, log_component);
    put(&l, ",\"msg\":", 7);
    put_str(&l, msg ? msg : "");
    va_list ap;
    va_start(ap, msg);
    for (;;) {
        const char *k = va_arg(ap, const char *);
        if (!k)
            break;
        const char *v = va_arg(ap, const char *);
        put(&l, ",", 1);
        put_str(&l, k);
        put(&l, ":", 1);
        if (v)
            put_str(&l, v);
        else
            put(&l, "null", 4);
    }
    va_end(ap);
    memcpy(l.buf + l.len, "}\n", 2);
    l.len += 2;
    ssize_t w = write(STDERR_FILENO, l.buf, l.len);
    (void)w;
}
