/* duo_sign.c - builds the exact canonical strings Duo signs and their HMACs.
 *
 * Invariant: output depends only on the inputs (no locale, no clock), so a request signed
 * here verifies byte for byte against Duo's own canonicalisation. The one global is a
 * cache of OpenSSL algorithm handles, fetched once: OpenSSL 3's one-shot HMAC() and
 * EVP_sha512() look the implementation up by name on every call (about a third of a
 * request's signing time). */
#include "duo_sign.h"

#include "buf.h"

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* Hands the buffer to *out ("" when nothing was written) or reports ERR_NOMEM. */
static int sb_finish(buf *b, char **out, size_t *len, err_t *e)
{
    if (!(*out = buf_release(b, len)))
        return err_set(e, ERR_NOMEM, "out of memory building a Duo request");
    return 0;
}

static const char hexdig_upper[] = "0123456789ABCDEF";
static const char hexdig_lower[] = "0123456789abcdef";

static void hex_lower(const unsigned char *d, size_t n, char *out)
{
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = hexdig_lower[d[i] >> 4];
        out[2 * i + 1] = hexdig_lower[d[i] & 15];
    }
    out[2 * n] = '\0';
}

int duo_format_date(time_t t, char out[DUO_DATE_LEN])
{
    static const char days[7][4] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static const char months[12][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                       "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    struct tm tm;
    if (!gmtime_r(&t, &tm) || tm.tm_wday < 0 || tm.tm_wday > 6 || tm.tm_mon < 0 || tm.tm_mon > 11) {
        out[0] = '\0';
        return ERR_INVAL;
    }
    /* Years past 9999 would not fit; a wide scratch buffer keeps snprintf honest. */
    char tmp[96];
    int n = snprintf(tmp, sizeof tmp, "%s, %02d %s %04d %02d:%02d:%02d -0000", days[tm.tm_wday],
                     tm.tm_mday, months[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min,
                     tm.tm_sec);
    if (n < 0 || n >= DUO_DATE_LEN) {
        out[0] = '\0';
        return ERR_INVAL;
    }
    memcpy(out, tmp, (size_t)n + 1);
    return 0;
}

static int unreserved(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '.' || c == '_' || c == '~';
}

static void sb_encode(buf *b, const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (unreserved(c)) {
            buf_put(b, (const char *)&s[i], 1);
        } else {
            char esc[3] = {'%', hexdig_upper[c >> 4], hexdig_upper[c & 15]};
            buf_put(b, esc, 3);
        }
    }
}

int duo_percent_encode(const char *s, size_t len, char **out, err_t *e)
{
    buf b = {0};
    sb_encode(&b, s, len);
    return sb_finish(&b, out, NULL, e);
}

typedef struct {
    char *k, *v;
} enc_pair;

static int cmp_enc(const void *a, const void *b)
{
    const enc_pair *x = a, *y = b;
    int c = strcmp(x->k, y->k);
    return c ? c : strcmp(x->v, y->v);
}

static void free_pairs(enc_pair *pairs, size_t n)
{
    for (size_t i = 0; i < n && pairs; i++) {
        free(pairs[i].k);
        free(pairs[i].v);
    }
    free(pairs);
}

int duo_canon_params(const duo_param *p, size_t n, char **out, err_t *e)
{
    *out = NULL;
    enc_pair *pairs = calloc(n ? n : 1, sizeof *pairs);
    if (!pairs)
        return err_set(e, ERR_NOMEM, "out of memory building a Duo request");
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        if (!p[i].key || !p[i].value)
            rc = err_set(e, ERR_INVAL, "Duo parameter %zu has no key or value", i);
        else if ((rc = duo_percent_encode(p[i].key, strlen(p[i].key), &pairs[i].k, e)) == 0)
            rc = duo_percent_encode(p[i].value, strlen(p[i].value), &pairs[i].v, e);
    }
    if (rc < 0) {
        free_pairs(pairs, n);
        return rc;
    }
    qsort(pairs, n, sizeof *pairs, cmp_enc);
    buf b = {0};
    for (size_t i = 0; i < n; i++) {
        if (i)
            buf_put(&b, "&", 1);
        buf_str(&b, pairs[i].k);
        buf_put(&b, "=", 1);
        buf_str(&b, pairs[i].v);
    }
    free_pairs(pairs, n);
    return sb_finish(&b, out, NULL, e);
}

/* Decodes one UTF-8 sequence at s (at most `left` bytes); returns its length and the
 * code point, or 0 for an invalid (overlong, surrogate, truncated) sequence. */
static size_t utf8_decode(const unsigned char *s, size_t left, uint32_t *cp)
{
    size_t n;
    uint32_t c, min;
    if (s[0] < 0x80) {
        *cp = s[0];
        return 1;
    } else if ((s[0] & 0xE0) == 0xC0) {
        n = 2, c = s[0] & 0x1F, min = 0x80;
    } else if ((s[0] & 0xF0) == 0xE0) {
        n = 3, c = s[0] & 0x0F, min = 0x800;
    } else if ((s[0] & 0xF8) == 0xF0) {
        n = 4, c = s[0] & 0x07, min = 0x10000;
    } else {
        return 0;
    }
    if (n > left)
        return 0;
    for (size_t i = 1; i < n; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0;
        c = (c << 6) | (s[i] & 0x3F);
    }
    if (c < min || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF))
        return 0;
    *cp = c;
    return n;
}

static void sb_u16(buf *b, uint32_t u)
{
    char esc[7] = {'\\',
                   'u',
                   hexdig_lower[(u >> 12) & 15],
                   hexdig_lower[(u >> 8) & 15],
                   hexdig_lower[(u >> 4) & 15],
                   hexdig_lower[u & 15],
                   0};
    buf_put(b, esc, 6);
}

/* Writes s as a JSON string the way Python's json.dumps(ensure_ascii=True) does. */
static int sb_json_string(buf *b, const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t left = strlen(s);
    buf_put(b, "\"", 1);
    while (left) {
        uint32_t cp;
        size_t n = utf8_decode(p, left, &cp);
        if (n == 0)
            return ERR_INVAL;
        const char *short_esc = NULL;
        switch (cp) {
        case '"':
            short_esc = "\\\"";
            break;
        case '\\':
            short_esc = "\\\\";
            break;
        case '\n':
            short_esc = "\\n";
            break;
        case '\r':
            short_esc = "\\r";
            break;
        case '\t':
            short_esc = "\\t";
            break;
        case '\b':
            short_esc = "\\b";
            break;
        case '\f':
            short_esc = "\\f";
            break;
        default:
            break;
        }
        if (short_esc) {
            buf_str(b, short_esc);
        } else if (cp >= 0x20 && cp < 0x7F) {
            buf_put(b, (const char *)p, 1);
        } else if (cp < 0x10000) {
            sb_u16(b, cp);
        } else {
            sb_u16(b, 0xD800 + ((cp - 0x10000) >> 10));
            sb_u16(b, 0xDC00 + ((cp - 0x10000) & 0x3FF));
        }
        p += n;
        left -= n;
    }
    buf_put(b, "\"", 1);
    return 0;
}

static int cmp_param_key(const void *a, const void *b)
{
    const duo_param *const *x = a, *const *y = b;
    return strcmp((*x)->key, (*y)->key);
}

int duo_json_body(const duo_param *p, size_t n, char **out, size_t *len, err_t *e)
{
    *out = NULL;
    const duo_param **sorted = calloc(n ? n : 1, sizeof *sorted);
    if (!sorted)
        return err_set(e, ERR_NOMEM, "out of memory building a Duo request");
    for (size_t i = 0; i < n; i++)
        sorted[i] = &p[i];
    qsort(sorted, n, sizeof *sorted, cmp_param_key);
    buf b = {0};
    int rc = 0;
    buf_put(&b, "{", 1);
    for (size_t i = 0; i < n && rc == 0; i++) {
        if (!sorted[i]->key || !sorted[i]->value)
            rc = err_set(e, ERR_INVAL, "Duo parameter has no key or value");
        else if (i && strcmp(sorted[i - 1]->key, sorted[i]->key) == 0)
            rc =
                err_set(e, ERR_INVAL, "Duo parameter '%s' repeated in a JSON body", sorted[i]->key);
        else if (i)
            buf_put(&b, ",", 1);
        if (rc == 0 && (sb_json_string(&b, sorted[i]->key) < 0 ||
                        (buf_put(&b, ":", 1), sb_json_string(&b, sorted[i]->value) < 0)))
            rc = err_set(e, ERR_INVAL, "Duo parameter is not valid UTF-8");
    }
    free(sorted);
    if (rc < 0) {
        buf_free(&b);
        return rc;
    }
    buf_put(&b, "}", 1);
    return sb_finish(&b, out, len, e);
}

/* ---- algorithm handles, fetched once (never freed: they live as long as the process) */

static pthread_once_t algs_once = PTHREAD_ONCE_INIT;
static EVP_MD *alg_sha512;
static EVP_MAC_CTX *alg_hmac[2]; /* HMAC contexts with their digest set: SHA-1, SHA-512 */

static EVP_MAC_CTX *hmac_template(EVP_MAC *mac, const char *digest)
{
    EVP_MAC_CTX *c = mac ? EVP_MAC_CTX_new(mac) : NULL;
    OSSL_PARAM p[] = {OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)digest, 0),
                      OSSL_PARAM_construct_end()};
    if (c && !EVP_MAC_CTX_set_params(c, p)) {
        EVP_MAC_CTX_free(c);
        c = NULL;
    }
    return c;
}

static void algs_fetch(void)
{
    alg_sha512 = EVP_MD_fetch(NULL, "SHA512", NULL);
    EVP_MAC *mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    alg_hmac[0] = hmac_template(mac, "SHA1");
    alg_hmac[1] = hmac_template(mac, "SHA512");
    EVP_MAC_free(mac); /* the contexts keep their own reference */
}

/* HMAC of data under key into out (EVP_MAX_MD_SIZE bytes); 0 or -1. */
static int hmac(int sha512, const char *key, const char *data, unsigned char *out, size_t *outlen)
{
    pthread_once(&algs_once, algs_fetch);
    EVP_MAC_CTX *c = alg_hmac[sha512] ? EVP_MAC_CTX_dup(alg_hmac[sha512]) : NULL;
    int ok = c && EVP_MAC_init(c, (const unsigned char *)key, strlen(key), NULL) &&
             EVP_MAC_update(c, (const unsigned char *)data, strlen(data)) &&
             EVP_MAC_final(c, out, outlen, EVP_MAX_MD_SIZE);
    EVP_MAC_CTX_free(c);
    return ok ? 0 : -1;
}

int duo_sha512_hex(const void *data, size_t len, char hex[DUO_HEX_LEN], err_t *e)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    pthread_once(&algs_once, algs_fetch);
    if (!alg_sha512 || !EVP_Digest(data ? data : "", len, md, &mdlen, alg_sha512, NULL))
        return err_set(e, ERR_CRYPTO, "SHA-512 failed");
    hex_lower(md, mdlen, hex);
    return 0;
}

typedef struct {
    char *name;
    const char *value;
} hdr_pair;

static int cmp_hdr(const void *a, const void *b)
{
    return strcmp(((const hdr_pair *)a)->name, ((const hdr_pair *)b)->name);
}

/* SHA-512 hex of the lower-cased, name-sorted X-Duo-* headers joined with NULs. */
static int x_duo_hash(const duo_param *h, size_t n, char hex[DUO_HEX_LEN], err_t *e)
{
    hdr_pair *pairs = calloc(n ? n : 1, sizeof *pairs);
    if (!pairs)
        return err_set(e, ERR_NOMEM, "out of memory building a Duo request");
    size_t m = 0;
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        if (strncasecmp(h[i].key, "x-duo-", 6) != 0)
            continue;
        if (!(pairs[m].name = strdup(h[i].key))) {
            rc = err_set(e, ERR_NOMEM, "out of memory building a Duo request");
            break;
        }
        for (char *c = pairs[m].name; *c; c++)
            if (*c >= 'A' && *c <= 'Z')
                *c = (char)(*c - 'A' + 'a');
        pairs[m++].value = h[i].value;
    }
    buf b = {0};
    qsort(pairs, m, sizeof *pairs, cmp_hdr);
    for (size_t i = 0; i < m; i++) {
        if (i)
            buf_put(&b, "", 1); /* the NUL separator */
        buf_str(&b, pairs[i].name);
        buf_put(&b, "", 1);
        buf_str(&b, pairs[i].value);
        free(pairs[i].name);
    }
    free(pairs);
    if (rc == 0 && b.failed)
        rc = err_set(e, ERR_NOMEM, "out of memory building a Duo request");
    if (rc == 0)
        rc = duo_sha512_hex(b.data, b.len, hex, e);
    buf_free(&b);
    return rc;
}

static void sb_lower(buf *b, const char *s, int upper)
{
    for (; *s; s++) {
        char c = *s;
        if (upper && c >= 'a' && c <= 'z')
            c = (char)(c - 'a' + 'A');
        else if (!upper && c >= 'A' && c <= 'Z')
            c = (char)(c - 'A' + 'a');
        buf_put(b, &c, 1);
    }
}

int duo_canon_request(const duo_sign_input *in, char **out, err_t *e)
{
    *out = NULL;
    if (in->sig_version != 2 && in->sig_version != 5)
        return err_set(e, ERR_INVAL, "unsupported Duo signature version %d", in->sig_version);
    if (!in->method || !in->host || !in->path || !in->date)
        return err_set(e, ERR_INVAL, "Duo request lacks method, host, path or date");
    char *params = NULL;
    int rc = duo_canon_params(in->params, in->nparams, &params, e);
    if (rc < 0)
        return rc;
    char body_hex[DUO_HEX_LEN], hdr_hex[DUO_HEX_LEN];
    if (in->sig_version == 5) {
        if ((rc = duo_sha512_hex(in->body, in->body ? in->body_len : 0, body_hex, e)) < 0 ||
            (rc = x_duo_hash(in->x_duo, in->nx_duo, hdr_hex, e)) < 0) {
            free(params);
            return rc;
        }
    }
    buf b = {0};
    buf_str(&b, in->date);
    buf_put(&b, "\n", 1);
    sb_lower(&b, in->method, 1);
    buf_put(&b, "\n", 1);
    sb_lower(&b, in->host, 0);
    buf_put(&b, "\n", 1);
    buf_str(&b, in->path);
    buf_put(&b, "\n", 1);
    buf_str(&b, params);
    if (in->sig_version == 5) {
        buf_put(&b, "\n", 1);
        buf_str(&b, body_hex);
        buf_put(&b, "\n", 1);
        buf_str(&b, hdr_hex);
    }
    free(params);
    return sb_finish(&b, out, NULL, e);
}

int duo_sign(const duo_sign_input *in, const char *skey, char hex[DUO_HEX_LEN], err_t *e)
{
    hex[0] = '\0';
    if (!skey)
        return err_set(e, ERR_INVAL, "no Duo secret key");
    char *canon = NULL;
    int rc = duo_canon_request(in, &canon, e);
    if (rc < 0)
        return rc;
    int sha512 = !(in->sig_version == 2 && in->digest == DUO_DIGEST_SHA1);
    unsigned char mac[EVP_MAX_MD_SIZE];
    size_t maclen = 0;
    if (hmac(sha512, skey, canon, mac, &maclen) < 0)
        rc = err_set(e, ERR_CRYPTO, "HMAC failed");
    else
        hex_lower(mac, maclen, hex);
    free(canon);
    return rc;
}

int duo_auth_header(const char *ikey, const char *hex, char **out, err_t *e)
{
    *out = NULL;
    buf raw = {0};
    buf_str(&raw, ikey ? ikey : "");
    buf_put(&raw, ":", 1);
    buf_str(&raw, hex);
    if (raw.failed) {
        buf_free(&raw);
        return err_set(e, ERR_NOMEM, "out of memory building a Duo request");
    }
    size_t cap = 6 + 4 * ((raw.len + 2) / 3) + 1;
    char *s = malloc(cap);
    if (!s) {
        buf_free(&raw);
        return err_set(e, ERR_NOMEM, "out of memory building a Duo request");
    }
    memcpy(s, "Basic ", 6);
    EVP_EncodeBlock((unsigned char *)s + 6, (const unsigned char *)raw.data, (int)raw.len);
    buf_free(&raw);
    *out = s;
    return 0;
}
