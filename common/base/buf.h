/* buf.h - the one growable byte buffer: always NUL-terminated, `failed` latches the
 * first allocation failure (or a write past `max`) so a writer checks once at the end.
 *
 * A zeroed buf is empty and valid. The bytes are owned by the buf until buf_release();
 * buf_free() frees them. */
#ifndef DUO_BUF_H
#define DUO_BUF_H

#include <stdarg.h>
#include <stddef.h>

typedef struct buf {
    char *data; /* NULL until something is written */
    size_t len, cap;
    size_t max; /* 0: no limit; else writing past max bytes sets failed */
    int failed;
} buf;

/* Appends n bytes (no effect once failed). Returns 0, or -1 when the buffer failed. */
int buf_put(buf *b, const void *p, size_t n);
int buf_str(buf *b, const char *s);
int buf_printf(buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int buf_vprintf(buf *b, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));

/* Hands the bytes to the caller ("" when nothing was written; the caller frees) and
 * empties b. NULL when b failed (b is freed then). */
char *buf_release(buf *b, size_t *len);

/* Forgets the contents but keeps the memory. */
void buf_reset(buf *b);

/* Frees the bytes; b is empty afterwards. */
void buf_free(buf *b);

#endif
