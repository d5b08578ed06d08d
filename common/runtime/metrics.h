/* metrics.h - Prometheus counters, gauges and histograms, and the /metrics + /healthz
 * endpoint (libmicrohttpd, its own thread). The only module that includes
 * <microhttpd.h>. All functions are thread-safe: the HTTP thread renders while the
 * worker's thread counts. */
#ifndef DUO_METRICS_H
#define DUO_METRICS_H

#include <stddef.h>

#include "err.h"

typedef struct metrics metrics;

/* Returns a new empty registry (caller frees with metrics_free), NULL when out of memory. */
metrics *metrics_new(void);
/* Stops the endpoint if running and frees; accepts NULL. */
void metrics_free(metrics *m);

/* Declares a metric family's help text and type ("counter", "gauge", "histogram");
 * both strings borrowed for the registry's lifetime (use literals). */
void metrics_describe(metrics *m, const char *name, const char *type, const char *help);

/* labels: the Prometheus label list without braces, e.g. `type="auth",outcome="ok"`, or
 * "" for none; copied. Label values must already be safe (codes, job types). */
void metrics_add(metrics *m, const char *name, const char *labels, double by);
void metrics_set(metrics *m, const char *name, const char *labels, double value);
/* Histogram observation in seconds (buckets 5 ms .. 120 s). */
void metrics_observe(metrics *m, const char *name, const char *labels, double seconds);

/* Health flags shown by /healthz: 200 when both are up, else 503. */
void metrics_health(metrics *m, int broker_up, int db_up);

/* Renders the exposition text into a new buffer the caller frees (free()); NULL when
 * out of memory. */
char *metrics_render(metrics *m, size_t *len);

/* Serves /metrics and /healthz on addr:port (a numeric IPv4 or IPv6 address, borrowed
 * for the call) from a background thread. ERR_IO naming the address when it cannot
 * listen (port taken), ERR_CONFIG when addr is not numeric. */
int metrics_serve(metrics *m, const char *addr, int port, err_t *e);

#endif
