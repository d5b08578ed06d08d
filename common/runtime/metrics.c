/* metrics.c - a small fixed-capacity registry guarded by one mutex; series are found by
 * linear search (a worker has a few dozen), rendered in Prometheus text format. */
#include "metrics.h"

#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"

#define MAX_SERIES 512
#define MAX_FAMILIES 64
#define NBUCKETS 12

static const double buckets[NBUCKETS] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                         0.5,   1,    2.5,   5,    30,  120};

typedef struct {
    const char *name;
    char labels[160];
    double value;        /* counter/gauge value, or histogram sum */
    unsigned long count; /* histogram */
    unsigned long bucket[NBUCKETS];
    int histogram;
} series;

typedef struct {
    const char *name, *type, *help;
} family;

struct metrics {
    pthread_mutex_t lock;
    series s[MAX_SERIES];
    size_t n;
    family f[MAX_FAMILIES];
    size_t nf;
    int broker_up, db_up;
    struct MHD_Daemon *http;
};

metrics *metrics_new(void)
{
    metrics *m = calloc(1, sizeof *m);
    if (m)
        pthread_mutex_init(&m->lock, NULL);
    return m;
}

void metrics_free(metrics *m)
{
    if (!m)
        return;
    if (m->http)
        MHD_stop_daemon(m->http);
    pthread_mutex_destroy(&m->lock);
    free(m);
}

void metrics_describe(metrics *m, const char *name, const char *type, const char *help)
{
    if (!m)
        return;
    pthread_mutex_lock(&m->lock);
    size_t i = 0;
    while (i < m->nf && strcmp(m->f[i].name, name) != 0)
        i++;
    if (i == m->nf && m->nf < MAX_FAMILIES)
        m->f[m->nf++] = (family){name, type, help};
    pthread_mutex_unlock(&m->lock);
}

/* Finds or creates a series; called with the lock held. NULL when full. */
static series *find(metrics *m, const char *name, const char *labels)
{
    for (size_t i = 0; i < m->n; i++)
        if (strcmp(m->s[i].name, name) == 0 && strcmp(m->s[i].labels, labels) == 0)
            return &m->s[i];
    if (m->n == MAX_SERIES)
        return NULL;
    series *s = &m->s[m->n++];
    memset(s, 0, sizeof *s);
    s->name = name;
    snprintf(s->labels, sizeof s->labels, "%s", labels);
    return s;
}

void metrics_add(metrics *m, const char *name, const char *labels, double by)
{
    if (!m)
        return;
    pthread_mutex_lock(&m->lock);
    series *s = find(m, name, labels);
    if (s)
        s->value += by;
    pthread_mutex_unlock(&m->lock);
}

void metrics_set(metrics *m, const char *name, const char *labels, double value)
{
    if (!m)
        return;
    pthread_mutex_lock(&m->lock);
    series *s = find(m, name, labels);
    if (s)
        s->value = value;
    pthread_mutex_unlock(&m->lock);
}

void metrics_observe(metrics *m, const char *name, const char *labels, double seconds)
{
    if (!m)
        return;
    pthread_mutex_lock(&m->lock);
    series *s = find(m, name, labels);
    if (s) {
        s->histogram = 1;
        s->value += seconds;
        s->count++;
        for (int i = 0; i < NBUCKETS; i++)
            if (seconds <= buckets[i])
                s->bucket[i]++;
    }
    pthread_mutex_unlock(&m->lock);
}

void metrics_health(metrics *m, int broker_up, int db_up)
{
    if (!m)
        return;
    pthread_mutex_lock(&m->lock);
    m->broker_up = broker_up;
    m->db_up = db_up;
    pthread_mutex_unlock(&m->lock);
}

static void render_series(buf *t, const series *s)
{
    const char *sep = s->labels[0] ? "," : "";
    if (!s->histogram) {
        buf_printf(t, "%s{%s} %.17g\n", s->name, s->labels, s->value);
        return;
    }
    for (int i = 0; i < NBUCKETS; i++)
        buf_printf(t, "%s_bucket{%s%sle=\"%g\"} %lu\n", s->name, s->labels, sep, buckets[i],
                   s->bucket[i]);
    buf_printf(t, "%s_bucket{%s%sle=\"+Inf\"} %lu\n", s->name, s->labels, sep, s->count);
    buf_printf(t, "%s_sum{%s} %.17g\n%s_count{%s} %lu\n", s->name, s->labels, s->value, s->name,
               s->labels, s->count);
}

char *metrics_render(metrics *m, size_t *len)
{
    buf t = {0};
    pthread_mutex_lock(&m->lock);
    for (size_t f = 0; f < m->nf; f++) {
        buf_printf(&t, "# HELP %s %s\n# TYPE %s %s\n", m->f[f].name, m->f[f].help, m->f[f].name,
                   m->f[f].type);
        for (size_t i = 0; i < m->n; i++)
            if (strcmp(m->s[i].name, m->f[f].name) == 0)
                render_series(&t, &m->s[i]);
    }
    buf_printf(&t,
               "# HELP duo_up Broker and database connections (1 = up)\n# TYPE duo_up gauge\n"
               "duo_up{dependency=\"rabbitmq\"} %d\nduo_up{dependency=\"postgres\"} %d\n",
               m->broker_up, m->db_up);
    pthread_mutex_unlock(&m->lock);
    return buf_release(&t, len);
}

static enum MHD_Result answer(void *cls, struct MHD_Connection *conn, const char *url,
                              const char *method, const char *version, const char *upload,
                              size_t *upload_len, void **ctx)
{
    (void)version, (void)upload, (void)upload_len, (void)ctx;
    metrics *m = cls;
    char *body = NULL;
    size_t len = 0;
    unsigned status = MHD_HTTP_OK;
    if (strcmp(method, "GET") != 0) {
        status = MHD_HTTP_METHOD_NOT_ALLOWED;
    } else if (strcmp(url, "/metrics") == 0) {
        body = metrics_render(m, &len);
    } else if (strcmp(url, "/healthz") == 0) {
        pthread_mutex_lock(&m->lock);
        int up = m->broker_up && m->db_up;
        char tmp[128];
        int n = snprintf(tmp, sizeof tmp, "{\"rabbitmq\":%s,\"postgres\":%s}\n",
                         m->broker_up ? "true" : "false", m->db_up ? "true" : "false");
        pthread_mutex_unlock(&m->lock);
        status = up ? MHD_HTTP_OK : MHD_HTTP_SERVICE_UNAVAILABLE;
        body = strdup(tmp);
        len = body ? (size_t)n : 0;
    } else {
        status = MHD_HTTP_NOT_FOUND;
    }
    struct MHD_Response *r = MHD_create_response_from_buffer(
        len, body ? body : (char *)"", body ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_PERSISTENT);
    enum MHD_Result ret = MHD_queue_response(conn, status, r);
    MHD_destroy_response(r);
    return ret;
}

/* Fills *ss from a numeric address; returns its length, or 0 when addr is not one. */
static socklen_t make_addr(const char *addr, int port, struct sockaddr_storage *ss)
{
    memset(ss, 0, sizeof *ss);
    struct sockaddr_in *v4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)ss;
    if (inet_pton(AF_INET, addr, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons((uint16_t)port);
        return sizeof *v4;
    }
    if (inet_pton(AF_INET6, addr, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons((uint16_t)port);
        return sizeof *v6;
    }
    return 0;
}

int metrics_serve(metrics *m, const char *addr, int port, err_t *e)
{
    struct sockaddr_storage ss;
    if (!addr || !make_addr(addr, port, &ss))
        return err_set(e, ERR_CONFIG, "METRICS_ADDR: '%s' is not an IPv4 or IPv6 address",
                       addr ? addr : "");
    /* No MHD_USE_ERROR_LOG: its lines are not in the log's format; a failure to listen is
     * reported below, once. */
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD;
    if (ss.ss_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    errno = 0;
    m->http = MHD_start_daemon(flags, (uint16_t)port, NULL, NULL, answer, m, MHD_OPTION_SOCK_ADDR,
                               (struct sockaddr *)&ss, MHD_OPTION_END);
    if (!m->http)
        return err_set(e, ERR_IO, "METRICS_PORT: cannot listen on %s%s%s:%d: %s",
                       ss.ss_family == AF_INET6 ? "[" : "", addr,
                       ss.ss_family == AF_INET6 ? "]" : "", port,
                       errno ? strerror(errno) : "in use?");
    return 0;
}
