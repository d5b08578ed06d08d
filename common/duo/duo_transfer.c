/* duo_transfer.c - see duo_transfer.h. */
#include "duo_transfer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

size_t duo_body_on_data(char *p, size_t size, size_t n, void *arg)
{
    duo_body *r = arg;
    size_t add = size * n;
    if (add > r->max || r->b.len > r->max - add) {
        r->oversize = 1;
        return 0; /* aborts the transfer with CURLE_WRITE_ERROR */
    }
    return buf_put(&r->b, p, add) < 0 ? 0 : add;
}

/* Retry-After in seconds (the HTTP-date form is ignored: the backoff applies then). */
size_t duo_body_on_header(char *p, size_t size, size_t n, void *arg)
{
    duo_body *r = arg;
    size_t len = size * n;
    static const char name[] = "retry-after:";
    if (len > sizeof name - 1 && len < 64 && strncasecmp(p, name, sizeof name - 1) == 0) {
        char v[64];
        memcpy(v, p + sizeof name - 1, len - (sizeof name - 1));
        v[len - (sizeof name - 1)] = '\0';
        char *end = NULL;
        long secs = strtol(v, &end, 10);
        if (end != v && secs >= 0 && secs < 86400)
            r->retry_after_ms = secs * 1000;
    }
    return len;
}

static int is_tls_error(CURLcode cc)
{
    switch (cc) {
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_INVALIDCERTSTATUS:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
    case CURLE_SSL_CRL_BADFILE:
    case CURLE_SSL_ENGINE_NOTFOUND:
    case CURLE_SSL_ENGINE_SETFAILED:
    case CURLE_SSL_ENGINE_INITFAILED:
    case CURLE_USE_SSL_FAILED:
        return 1;
    default:
        return 0;
    }
}

int duo_transfer_error(CURLcode cc, const duo_body *b, const char *errbuf, const char *host,
                       const char *ca_file, duo_error *err)
{
    const char *why = errbuf && errbuf[0] ? errbuf : curl_easy_strerror(cc);
    int rc;
    if (b->oversize)
        rc = duo_fail_set(err, ERR_DUO, DUO_FAIL_BAD_RESPONSE, DUO_CLASS_PERMANENT,
                          "malformed Duo response: body larger than %zu bytes", b->max);
    else if (is_tls_error(cc))
        rc = duo_fail_set(err, ERR_TLS, DUO_FAIL_TLS, DUO_CLASS_TLS,
                          "TLS failure talking to Duo at %s (CA file: %s)", host,
                          ca_file ? ca_file : "system default");
    else if (cc == CURLE_OPERATION_TIMEDOUT)
        rc = duo_fail_set(err, ERR_TIMEOUT, DUO_FAIL_TIMEOUT, DUO_CLASS_TRANSIENT,
                          "Duo at %s did not answer in time", host);
    else
        rc = duo_fail_set(err, ERR_NET, DUO_FAIL_NETWORK, DUO_CLASS_TRANSIENT,
                          "network failure talking to Duo at %s", host);
    if (err) {
        snprintf(err->detail, sizeof err->detail, "%s", why);
        err->not_sent = cc == CURLE_COULDNT_CONNECT || cc == CURLE_COULDNT_RESOLVE_HOST ||
                        cc == CURLE_COULDNT_RESOLVE_PROXY;
    }
    return rc;
}

void duo_transfer_note_sent(CURL *h, duo_error *err)
{
    long sent = -1;
    if (err && curl_easy_getinfo(h, CURLINFO_REQUEST_SIZE, &sent) == CURLE_OK && sent == 0)
        err->not_sent = 1;
}
