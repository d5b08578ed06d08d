/* log.h - structured JSON log lines on stderr, one object per line.
 *
 * LOG(level, msg, key, value, ...) takes pairs of NUL-terminated strings and checks the
 * level before evaluating its arguments. Values are JSON-escaped; nothing is retained.
 * The component name and minimum level are the only global state (set once at start).
 * Never pass a secret as a value. */
#ifndef DUO_LOG_H
#define DUO_LOG_H

typedef enum { LOG_DEBUG = 0, LOG_INFO = 1, LOG_WARN = 2, LOG_ERROR = 3 } log_level;

extern log_level log_min_level;

/* Sets the component name (borrowed: must outlive logging, e.g. a literal) and level. */
void log_init(const char *component, log_level min);

/* Parses "debug|info|warn|error"; returns 0 or -1 when unknown. */
int log_parse_level(const char *s, log_level *out);

/* Writes one line; the variadic part is key/value string pairs ended by NULL. A NULL
 * value is written as JSON null. Use the LOG macro, not this. */
void log_write(log_level level, const char *msg, ...);

#define LOG(level, ...)                                                                            \
    do {                                                                                           \
        if ((level) >= log_min_level)                                                              \
            log_write((level), __VA_ARGS__, (const char *)0);                                      \
    } while (0)

#endif
