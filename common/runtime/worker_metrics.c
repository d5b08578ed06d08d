/* worker_metrics.c - the runtime's own metric families (jobs, retries, dead letters,
 * reconnects, jobs held) and the hooks through which the layers above report theirs. */
#include <stdio.h>

#include "worker_int.h"

void worker_metrics_describe(worker *w)
{
    metrics_describe(w->metrics, "duo_jobs_total", "counter",
                     "Jobs finished, by job type and outcome (ok or error code)");
    metrics_describe(w->metrics, "duo_job_seconds", "histogram", "Time a handler spent on a job");
    metrics_describe(w->metrics, "duo_retries_total", "counter",
                     "Jobs sent to a delayed-retry tier");
    metrics_describe(w->metrics, "duo_dead_letters_total", "counter", "Messages dead-lettered");
    metrics_describe(w->metrics, "duo_jobs_in_flight", "gauge", "Jobs being worked on");
    metrics_describe(w->metrics, "duo_reconnects_total", "counter", "Reconnections, by dependency");
    metrics_describe(w->metrics, "duo_pushes_held", "gauge",
                     "Asynchronous jobs held open waiting for Duo (pending pushes)");
}

static void label(char *out, size_t n, const char *type, const char *outcome)
{
    snprintf(out, n, "type=\"%s\",outcome=\"%s\"", type ? type : "unknown", outcome);
}

void metrics_job(worker *w, const char *type, const char *outcome)
{
    char l[160];
    label(l, sizeof l, type, outcome);
    metrics_add(w->metrics, "duo_jobs_total", l, 1);
}

void metrics_job_time(worker *w, const char *type, long long ms)
{
    char l[100];
    snprintf(l, sizeof l, "type=\"%s\"", type);
    metrics_observe(w->metrics, "duo_job_seconds", l, (double)ms / 1000.0);
}

void metrics_retry(worker *w, const char *type)
{
    char l[100];
    snprintf(l, sizeof l, "type=\"%s\"", type);
    metrics_add(w->metrics, "duo_retries_total", l, 1);
}

void metrics_dead_letter(worker *w)
{
    metrics_add(w->metrics, "duo_dead_letters_total", "", 1);
}

void metrics_held(worker *w)
{
    metrics_set(w->metrics, "duo_pushes_held", "", (double)w->npending);
}

void worker_metric_add(const worker_env *env, const char *name, const char *labels, double by)
{
    metrics_add(env->w->metrics, name, labels, by);
}

void worker_metric_set(const worker_env *env, const char *name, const char *labels, double v)
{
    metrics_set(env->w->metrics, name, labels, v);
}

void metrics_inflight(worker *w, int delta)
{
    metrics_add(w->metrics, "duo_jobs_in_flight", "", delta);
}

void metrics_reconnect(worker *w, const char *what)
{
    char l[64];
    snprintf(l, sizeof l, "dependency=\"%s\"", what);
    metrics_add(w->metrics, "duo_reconnects_total", l, 1);
}

void worker_metric_describe(const worker_env *env, const char *name, const char *type,
                            const char *help)
{
    metrics_describe(env->w->metrics, name, type, help);
}

void worker_metric_observe(const worker_env *env, const char *name, const char *labels,
                           double seconds)
{
    metrics_observe(env->w->metrics, name, labels, seconds);
}
