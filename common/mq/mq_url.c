/* mq_url.c - pure helpers of the AMQP transport: URL lists, reconnect backoff, retry
 * queue suffixes, the monotonic clock. No connection state; unit-tested.
 *
 * Key invariant: error messages never contain a URL's password. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <amqp.h>

#include "mq_int.h"

int mq_backoff_ms(int attempt, double rnd)
{
    int64_t base = 100;
    for (int i = 0; i < attempt && base < 10000; i++)
        base *= 2;
    if (base > 10000)
        base = 10000;
    if (!(rnd >= 0.0))
        rnd = 0.0; /* also catches NaN */
    if (rnd > 1.0)
        rnd = 1.0;
    return (int)((double)base * (0.5 + rnd));
}

void mq_ttl_suffix(int ttl_ms, char *out, size_t outlen)
{
    if (ttl_ms > 0 && ttl_ms % 1000 == 0)
        snprintf(out, outlen, "%ds", ttl_ms / 1000);
    else
        snprintf(out, outlen, "%dms", ttl_ms);
}

void mq_urls_free(char **urls)
{
    if (!urls)
        return;
    for (char **p = urls; *p; p++)
        free(*p);
    free(urls);
}

/* Checks one URL with amqp_parse_url (which writes into its argument: use a copy). */
static int check_url(const char *url, err_t *e)
{
    char *tmp = strdup(url);
    if (!tmp)
        return err_set(e, ERR_NOMEM, "out of memory");
    struct amqp_connection_info ci;
    int rc = amqp_parse_url(tmp, &ci);
    if (rc == AMQP_STATUS_OK && strncmp(url, "amqp", 4) != 0)
        rc = AMQP_STATUS_BAD_URL;
    free(tmp);
    if (rc != AMQP_STATUS_OK) {
        const char *at = strrchr(url, '@');
        return err_set(e, ERR_INVAL, "bad AMQP URL (...%.80s): %s", at ? at : "",
                       amqp_error_string2(rc));
    }
    return 0;
}

static char *trimmed_dup(const char *s, size_t n)
{
    while (n && (*s == ' ' || *s == '\t' || *s == '\n')) {
        s++;
        n--;
    }
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\n'))
        n--;
    return strndup(s, n);
}

int mq_urls_parse(const char *list, char ***out, err_t *e)
{
    *out = NULL;
    if (!list)
        return err_set(e, ERR_INVAL, "no AMQP URL given");
    size_t n = 1;
    for (const char *p = list; *p; p++)
        n += *p == ',';
    char **urls = calloc(n + 1, sizeof *urls);
    if (!urls)
        return err_set(e, ERR_NOMEM, "out of memory");
    int count = 0;
    for (const char *p = list;;) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        char *u = trimmed_dup(p, len);
        if (!u) {
            mq_urls_free(urls);
            return err_set(e, ERR_NOMEM, "out of memory");
        }
        if (*u == '\0') {
            free(u);
        } else {
            urls[count++] = u;
            if (check_url(u, e) < 0) {
                mq_urls_free(urls);
                return ERR_INVAL;
            }
        }
        if (!comma)
            break;
        p = comma + 1;
    }
    if (count == 0) {
        mq_urls_free(urls);
        return err_set(e, ERR_INVAL, "no AMQP URL given");
    }
    *out = urls;
    return count;
}
