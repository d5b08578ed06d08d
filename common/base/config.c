/* config.c - the settings table and its loader. One row per environment variable; the
 * loader, the bounds checks and the generated documentation all read the same table. */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

typedef enum { T_STR, T_INT } setting_type;

typedef struct {
    const char *env;
    setting_type type;
    size_t offset;
    const char *def; /* NULL: no default */
    long min, max;   /* T_INT bounds */
    unsigned need;   /* CONFIG_NEED_* bits that make it required */
    const char *help;
} setting;

#define S(env, field, def, need, help)                                                             \
    {                                                                                              \
        env, T_STR, offsetof(config, field), def, 0, 0, need, help                                 \
    }
#define I(env, field, def, min, max, help)                                                         \
    {                                                                                              \
        env, T_INT, offsetof(config, field), def, min, max, 0, help                                \
    }

static const setting settings[] = {
    S("DATABASE_URL", database_url, NULL, CONFIG_NEED_DB,
      "PostgreSQL connection: libpq conninfo (`host=... dbname=...`) or `postgres://` URL; "
      "several hosts (`host=a,b`) for a primary with standbys: each (re)connect finds the "
      "primary"),
    S("AMQP_URL", amqp_url, NULL, CONFIG_NEED_MQ,
      "RabbitMQ broker URL `amqp://user:pass@host:port/vhost` (or `amqps://`); a comma-separated "
      "list for a cluster, tried in turn"),
    S("MQ_PREFIX", mq_prefix, "duo", 0, "Prefix of every exchange and queue this project declares"),
    I("AMQP_HEARTBEAT_SECS", amqp_heartbeat_secs, "30", 0, 600,
      "AMQP heartbeat interval (0 disables)"),
    I("WORKER_PREFETCH", prefetch, "16", 1, 65535,
      "Unacknowledged deliveries a worker holds at once (bounds in-flight jobs)"),
    I("JOB_MAX_ATTEMPTS", max_attempts, "5", 1, 100,
      "Attempts for a job failing transiently before it is dead-lettered"),
    I("MAX_MESSAGE_BYTES", max_message_bytes, "65536", 1024, 16777216,
      "Largest job body accepted; larger ones are rejected and dead-lettered"),
    I("SHUTDOWN_GRACE_MS", shutdown_grace_ms, "30000", 0, 600000,
      "On SIGTERM/SIGINT, time to finish in-flight jobs before returning them to the queue"),
    S("RETRY_DELAYS_MS", retry_delays_ms, "5000,30000,300000", 0,
      "Delays of the three retry tiers for transiently failed jobs (milliseconds, "
      "comma-separated)"),
    S("AMQP_CA_FILE", amqp_ca_file, NULL, 0,
      "CA bundle that verifies the broker's certificate for `amqps://` (the host name is "
      "always checked); unset: the system CAs"),
    I("AMQP_DECLARE", amqp_declare, "1", 0, 1,
      "1: declare the exchanges and queues at connect; 0: assume they exist (a publisher whose "
      "broker user may not configure them)"),
    S("DB_ROLE_ENROLL", db_role_enroll, "duo_enroll", 0,
      "Database role of the enrollment worker: `duoctl migrate` grants it exactly the tables it "
      "uses (`none`: grant nothing)"),
    S("DB_ROLE_AUTH", db_role_auth, "duo_auth", 0,
      "Database role of the authentication worker (as `DB_ROLE_ENROLL`)"),
    S("DB_ROLE_IMPORT", db_role_import, "duo_import", 0,
      "Database role of the import worker (as `DB_ROLE_ENROLL`)"),
    S("DUO_CA_FILE", duo_ca_file, NULL, 0,
      "CA bundle for Duo TLS (for TLS-inspecting proxies); a stage's own bundle takes precedence"),
    I("DUO_CONNECT_TIMEOUT_MS", duo_connect_timeout_ms, "5000", 100, 120000,
      "TCP+TLS connect timeout for Duo calls"),
    I("DUO_TIMEOUT_MS", duo_timeout_ms, "75000", 1000, 600000,
      "Total timeout of one Duo HTTP attempt of a long poll: `auth_status`, or a synchronous "
      "push (which waits about 60 s); other calls use `DUO_QUICK_TIMEOUT_MS`"),
    I("DUO_QUICK_TIMEOUT_MS", duo_quick_timeout_ms, "10000", 500, 600000,
      "Total timeout of one Duo HTTP attempt of a call Duo answers at once (enroll, "
      "enroll_status, preauth, passcode and SMS auth, the asynchronous push's submission, the "
      "Admin API); only `auth_status` and a synchronous push wait `DUO_TIMEOUT_MS`"),
    I("DUO_BREAKER_FAILURES", breaker_failures, "5", 0, 1000,
      "Consecutive failed attempts (no connection, timeout, 5xx, an HTML error page) that open "
      "a Duo host's circuit breaker in a worker: its calls are then refused without a network "
      "call (0: no breaker)"),
    I("DUO_BREAKER_OPEN_MS", breaker_open_ms, "5000", 100, 3600000,
      "How long an opened breaker stays open before the worker probes the host (`GET "
      "/auth/v2/ping`); doubles each time the probe fails"),
    I("DUO_BREAKER_MAX_OPEN_MS", breaker_max_open_ms, "20000", 100, 3600000,
      "The longest a breaker stays open before its next probe (bounds how late a recovery is "
      "seen)"),
    I("STAGE_MAX_CALLS", stage_max_calls, "0", 0, 65535,
      "Bulkhead: Duo calls one stage may have in flight in one worker; a stage's own "
      "`max_calls` (`duoctl stage update --max-calls`) overrides it (0: half the worker's "
      "prefetch); never more than the worker's connections per Duo host (the import worker "
      "keeps 2)"),
    I("STAGE_QUEUE_MS", stage_queue_ms, "2000", 0, 600000,
      "How long a job of a stage at its limit waits in the worker for a slot before it is "
      "answered or deferred, per job type (README, Scaling)"),
    I("DUO_RETRY_ATTEMPTS", duo_retry_attempts, "7", 1, 20,
      "Attempts per Duo call on 429, 5xx or network errors (4xx are never retried)"),
    I("DUO_RETRY_BUDGET_MS", duo_retry_budget_ms, "90000", 0, 3600000,
      "Total time a Duo call may spend across its retries"),
    I("DUO_STAGE_CACHE_MS", stage_cache_ms, "30000", 0, 3600000,
      "How long a worker reuses a stage it loaded (decrypted credentials, CA bundle, Duo "
      "connections) before reading it again: a changed or deleted stage is seen within this "
      "time (0: read it for every job)"),
    I("DUO_SIG_VERSION", duo_sig_version, "5", 2, 5,
      "Default request signature version for stages that do not set one (5 or 2)"),
    S("DUO_SECRET_KEY", secret_key, NULL, 0,
      "Base64 of the 32-byte AES-256-GCM key that encrypts stage secrets at rest"),
    S("DUO_SECRET_KEY_FILE", secret_key_file, NULL, 0,
      "File holding the secret key (base64); used when DUO_SECRET_KEY is unset"),
    S("DUO_SECRET_KEY_PREVIOUS", secret_key_previous, NULL, 0,
      "The previous key (base64), still accepted for decryption while `duoctl stage rotate-key` "
      "re-encrypts"),
    I("AUTH_DEADLINE_SECS", auth_deadline_secs, "75", 5, 600,
      "Deadline of one authentication job; past it the reply is `timeout`"),
    I("PUSH_CAP", push_cap, "5", 1, 1000,
      "Push-fatigue guard: challenges allowed per user per window"),
    I("PUSH_WINDOW_SECS", push_window_secs, "300", 1, 86400, "Push-fatigue guard: the window"),
    I("DENY_COOLDOWN_SECS", deny_cooldown_secs, "60", 0, 86400,
      "After a denied push, further pushes for the user wait this long"),
    I("IMPORT_PAGES_PER_MIN", import_pages_per_min, "200", 1, 100000,
      "Shared Admin API page budget of one import run, across all workers"),
    I("IMPORT_PAGE_SIZE", import_page_size, "300", 1, 300,
      "Users per Admin API page (Duo's maximum is 300)"),
    I("METRICS_PORT", metrics_port, "0", 0, 65535,
      "Port of the /metrics and /healthz endpoint; 0 turns it off"),
    S("METRICS_ADDR", metrics_addr, "127.0.0.1", 0,
      "Address the /metrics and /healthz endpoint listens on (IPv4 or IPv6; `0.0.0.0` for all "
      "interfaces, as in containers)"),
    S("LOG_LEVEL", log_level, "info", 0, "debug, info, warn or error"),
};

#define NSETTINGS (sizeof settings / sizeof settings[0])

static int parse_int(const setting *s, const char *v, config *c, err_t *e)
{
    char *end = NULL;
    errno = 0;
    long n = strtol(v, &end, 10);
    if (errno || end == v || *end != '\0')
        return err_set(e, ERR_CONFIG, "%s: '%s' is not an integer", s->env, v);
    if (n < s->min || n > s->max)
        return err_set(e, ERR_CONFIG, "%s: %ld is out of range [%ld, %ld]", s->env, n, s->min,
                       s->max);
    *(int *)((char *)c + s->offset) = (int)n;
    return 0;
}

static int load_one(const setting *s, config *c, unsigned need, err_t *e)
{
    const char *v = getenv(s->env);
    if (v && *v == '\0')
        v = NULL;
    if (!v)
        v = s->def;
    if (!v) {
        if (s->need & need)
            return err_set(e, ERR_CONFIG, "%s is not set: %s", s->env, s->help);
        return 0;
    }
    if (s->type == T_INT)
        return parse_int(s, v, c, e);
    char *dup = strdup(v);
    if (!dup)
        return err_set(e, ERR_NOMEM, "out of memory");
    *(char **)((char *)c + s->offset) = dup;
    return 0;
}

static int check_urls(const config *c, err_t *e)
{
    if (c->amqp_url) {
        /* Each comma-separated entry must carry a scheme we speak. */
        const char *p = c->amqp_url;
        while (*p) {
            while (*p == ' ')
                p++;
            if (strncmp(p, "amqp://", 7) != 0 && strncmp(p, "amqps://", 8) != 0)
                return err_set(e, ERR_CONFIG,
                               "AMQP_URL: each URL must start with amqp:// or amqps://");
            const char *comma = strchr(p, ',');
            if (!comma)
                break;
            p = comma + 1;
        }
    }
    if (c->database_url && strchr(c->database_url, '=') == NULL &&
        strncmp(c->database_url, "postgres://", 11) != 0 &&
        strncmp(c->database_url, "postgresql://", 13) != 0)
        return err_set(e, ERR_CONFIG,
                       "DATABASE_URL: expected a postgres:// URL or a key=value conninfo");
    unsigned char addr[16];
    if (inet_pton(AF_INET, c->metrics_addr, addr) != 1 &&
        inet_pton(AF_INET6, c->metrics_addr, addr) != 1)
        return err_set(e, ERR_CONFIG,
                       "METRICS_ADDR: '%s' is not an IPv4 or IPv6 address (e.g. 127.0.0.1)",
                       c->metrics_addr);
    if (c->duo_sig_version != 2 && c->duo_sig_version != 5)
        return err_set(e, ERR_CONFIG, "DUO_SIG_VERSION: must be 2 or 5, not %d",
                       c->duo_sig_version);
    static const char *levels[] = {"debug", "info", "warn", "error"};
    for (size_t i = 0; i < 4; i++)
        if (strcmp(c->log_level, levels[i]) == 0)
            return 0;
    return err_set(e, ERR_CONFIG, "LOG_LEVEL: '%s' is not one of debug, info, warn, error",
                   c->log_level);
}

int config_load(config *c, unsigned need, err_t *e)
{
    memset(c, 0, sizeof *c);
    for (size_t i = 0; i < NSETTINGS; i++) {
        int rc = load_one(&settings[i], c, need, e);
        if (rc < 0) {
            config_free(c);
            return rc;
        }
    }
    int rc = check_urls(c, e);
    if (rc < 0)
        config_free(c);
    return rc;
}

void config_free(config *c)
{
    if (!c)
        return;
    for (size_t i = 0; i < NSETTINGS; i++) {
        if (settings[i].type == T_STR) {
            char **p = (char **)((char *)c + settings[i].offset);
            free(*p);
            *p = NULL;
        }
    }
}

void config_write_doc(FILE *out)
{
    fprintf(out, "| Variable | Type | Default | Bounds | Meaning |\n|---|---|---|---|---|\n");
    for (size_t i = 0; i < NSETTINGS; i++) {
        const setting *s = &settings[i];
        char bounds[64] = "";
        if (s->type == T_INT)
            snprintf(bounds, sizeof bounds, "%ld–%ld", s->min, s->max);
        fprintf(out, "| `%s` | %s | %s | %s | %s%s |\n", s->env,
                s->type == T_INT ? "integer" : "string",
                s->def ? s->def : (s->need ? "*(required)*" : "*(unset)*"), bounds, s->help,
                s->need == CONFIG_NEED_MQ ? " (workers)" : "");
    }
}

int config_retry_delays(const config *c, int out[3], err_t *e)
{
    const char *s = c->retry_delays_ms ? c->retry_delays_ms : "5000,30000,300000";
    char *end = NULL;
    const char *p = s;
    for (int i = 0; i < 3; i++) {
        long v = strtol(p, &end, 10);
        if (end == p || v < 1 || v > 86400000 || (i < 2 && *end != ',') || (i == 2 && *end))
            return err_set(e, ERR_CONFIG,
                           "RETRY_DELAYS_MS: expected three delays in ms like "
                           "\"5000,30000,300000\", got '%s'",
                           s);
        out[i] = (int)v;
        p = end + 1;
    }
    return 0;
}
