/* config.h - the one read-only configuration struct, loaded from the environment.
 *
 * Every setting is described once in the table in config.c (name, type, default,
 * bounds, help); `duoctl config-doc` prints that table as the README's reference.
 * config_load() fills a caller-owned struct; config_free() releases its strings.
 * After loading, the struct is read-only and may be shared by every module. */
#ifndef DUO_CONFIG_H
#define DUO_CONFIG_H

#include <stdio.h>

#include "err.h"

typedef struct config {
    /* Connections */
    char *database_url;      /* DATABASE_URL: libpq conninfo or postgres:// URL */
    char *amqp_url;          /* AMQP_URL: amqp(s)://user:pass@host:port/vhost[,...] */
    char *mq_prefix;         /* MQ_PREFIX: prefix of every exchange and queue name */
    int amqp_heartbeat_secs; /* AMQP_HEARTBEAT_SECS */
    int prefetch;            /* WORKER_PREFETCH */
    int max_attempts;        /* JOB_MAX_ATTEMPTS: deliveries before dead-lettering */
    int max_message_bytes;   /* MAX_MESSAGE_BYTES */
    int shutdown_grace_ms;   /* SHUTDOWN_GRACE_MS */
    char *retry_delays_ms;   /* RETRY_DELAYS_MS: "5000,30000,300000" (three tiers) */
    char *amqp_ca_file;      /* AMQP_CA_FILE: CA bundle for amqps:// (NULL = system CAs) */
    int amqp_declare;        /* AMQP_DECLARE: 1 = declare the topology at connect */
    /* Database roles (duoctl migrate grants each worker kind its tables) */
    char *db_role_enroll; /* DB_ROLE_ENROLL: role of the enrollment worker ("none": skip) */
    char *db_role_auth;   /* DB_ROLE_AUTH */
    char *db_role_import; /* DB_ROLE_IMPORT */
    /* Duo */
    char *duo_ca_file;          /* DUO_CA_FILE: global CA bundle (stage bundle wins) */
    int duo_connect_timeout_ms; /* DUO_CONNECT_TIMEOUT_MS */
    int duo_timeout_ms;         /* DUO_TIMEOUT_MS: total per HTTP attempt of a long poll */
    int duo_quick_timeout_ms;   /* DUO_QUICK_TIMEOUT_MS: per attempt of any other call */
    int breaker_failures;       /* DUO_BREAKER_FAILURES */
    int breaker_open_ms;        /* DUO_BREAKER_OPEN_MS */
    int breaker_max_open_ms;    /* DUO_BREAKER_MAX_OPEN_MS */
    int stage_max_calls;        /* STAGE_MAX_CALLS (0: half the worker's prefetch) */
    int stage_queue_ms;         /* STAGE_QUEUE_MS */
    int duo_retry_attempts;     /* DUO_RETRY_ATTEMPTS: attempts for 429/5xx/network */
    int duo_retry_budget_ms;    /* DUO_RETRY_BUDGET_MS: total time across attempts */
    int stage_cache_ms;         /* DUO_STAGE_CACHE_MS: how long a loaded stage is reused */
    int duo_sig_version;        /* DUO_SIG_VERSION: 5 (default) or 2 */
    /* Secrets at rest */
    char *secret_key;          /* DUO_SECRET_KEY: base64 of 32 bytes */
    char *secret_key_file;     /* DUO_SECRET_KEY_FILE */
    char *secret_key_previous; /* DUO_SECRET_KEY_PREVIOUS: old key, readable during rotation */
    /* Authentication worker */
    int auth_deadline_secs; /* AUTH_DEADLINE_SECS */
    int push_cap;           /* PUSH_CAP: challenges per user per window */
    int push_window_secs;   /* PUSH_WINDOW_SECS */
    int deny_cooldown_secs; /* DENY_COOLDOWN_SECS */
    /* Import worker */
    int import_pages_per_min; /* IMPORT_PAGES_PER_MIN */
    int import_page_size;     /* IMPORT_PAGE_SIZE */
    /* Operations */
    int metrics_port;   /* METRICS_PORT: 0 = off */
    char *metrics_addr; /* METRICS_ADDR: address to listen on (default loopback) */
    char *log_level;    /* LOG_LEVEL */
} config;

/* Which settings a program needs: a required one that is unset is an error. */
enum { CONFIG_NEED_DB = 1, CONFIG_NEED_MQ = 2 };

/* Loads every setting from the environment (getenv), applying defaults and bounds.
 * On error returns ERR_CONFIG with e->msg naming the variable and the problem, and
 * leaves *c empty (nothing to free). On success the caller owns *c: config_free(). */
int config_load(config *c, unsigned need, err_t *e);

/* Releases the strings of *c; accepts NULL and an already-freed struct. */
void config_free(config *c);

/* Parses RETRY_DELAYS_MS into the three tiers' delays (ms). 0 or ERR_CONFIG naming it. */
int config_retry_delays(const config *c, int out[3], err_t *e);

/* Writes the configuration reference (Markdown table) to out. */
void config_write_doc(FILE *out);

#endif
