/* fuzz_duo_sign.c - libFuzzer harness for Duo request canonicalisation and signing.
 *
 * Input layout: byte 0 holds flags (bit 0: v5 instead of v2, bit 1: SHA-1 for v2,
 * bits 2-3: method, bits 4-5: host); the rest is split at NUL bytes into key, value,
 * key, value, ... (a trailing key gets ""; at most MAX_PARAMS pairs). Invariants:
 * percent-encoding leaves only A-Z a-z 0-9 - . _ ~ bare, writes %XX in upper case and
 * decodes back to its input; the params line is deterministic, independent of the
 * parameters' order and has exactly n '=' and n-1 '&'; the v5 JSON body succeeds exactly
 * when every string is valid UTF-8 and keys are unique, and parses back to the same
 * pairs; the canonical request is deterministic and holds the params line; signatures
 * are deterministic lower-case hex of the digest's length. Broken ones trap. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "duo_sign.h"

#define MAX_PARAMS 32

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Names the broken invariant on stderr, then traps so libFuzzer saves the input. */
static void broken(const char *what, int line)
{
    fprintf(stderr, "%s:%d: invariant broken: %s\n", __FILE__, line, what);
    __builtin_trap();
}
#define CHECK(cond) ((cond) ? (void)0 : broken(#cond, __LINE__))

static const char *const methods[] = {"GET", "post", "DELETE", "Put"};
static const char *const hosts[] = {"api-xxxxxxxx.duosecurity.com", "API-FOO.Example.COM",
                                    "127.0.0.1", "h"};

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1; /* lower case is not what Duo expects */
}

static int bare(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '.' || c == '_' || c == '~';
}

/* Checks the encoding of s character by character and that it decodes back to s. */
static void check_percent(const char *s)
{
    char *enc = NULL;
    err_t e = {0};
    CHECK(duo_percent_encode(s, strlen(s), &enc, &e) == 0 && enc);
    const char *p = enc, *orig = s;
    while (*p) {
        unsigned char c;
        if (*p == '%') {
            int hi = hexval(p[1]), lo = hi < 0 ? -1 : hexval(p[2]);
            CHECK(hi >= 0 && lo >= 0);
            c = (unsigned char)(hi * 16 + lo);
            CHECK(!bare(c)); /* bare characters must not be escaped */
            p += 3;
        } else {
            c = (unsigned char)*p++;
            CHECK(bare(c));
        }
        CHECK(*orig != '\0' && (unsigned char)*orig++ == c);
    }
    CHECK(*orig == '\0');
    free(enc);
}

static char *canon_params(const duo_param *p, size_t n)
{
    char *out = NULL;
    err_t e = {0};
    CHECK(duo_canon_params(p, n, &out, &e) == 0 && out);
    return out;
}

/* Deterministic, order independent, only encoded pairs joined by '=' and '&'. */
static char *check_params_line(const duo_param *p, size_t n)
{
    char *a = canon_params(p, n), *b = canon_params(p, n);
    CHECK(strcmp(a, b) == 0);
    free(b);
    duo_param rev[MAX_PARAMS];
    for (size_t i = 0; i < n; i++)
        rev[i] = p[n - 1 - i];
    b = canon_params(rev, n);
    CHECK(strcmp(a, b) == 0);
    free(b);
    size_t eq = 0, amp = 0;
    for (const char *c = a; *c; c++) {
        eq += *c == '=';
        amp += *c == '&';
        CHECK(bare((unsigned char)*c) || *c == '%' || *c == '=' || *c == '&');
    }
    CHECK(eq == n && amp == (n ? n - 1 : 0));
    return a;
}

/* The expected JSON body as a jansson object, or NULL when duo_json_body must refuse
 * (invalid UTF-8 anywhere, or a repeated key). */
static json_t *expected_body(const duo_param *p, size_t n)
{
    json_t *obj = json_object();
    CHECK(obj != NULL);
    for (size_t i = 0; i < n; i++) {
        json_t *v = json_string(p[i].value); /* NULL for invalid UTF-8 */
        int bad = v == NULL;
        if (!bad && json_object_get(obj, p[i].key)) {
            json_decref(v);
            bad = 1;
        }
        /* json_object_set_new rejects a key that is not UTF-8 and always takes v. */
        if (bad || json_object_set_new(obj, p[i].key, v) != 0) {
            json_decref(obj);
            return NULL;
        }
    }
    return obj;
}

/* duo_json_body succeeds exactly when expected and parses back to the same pairs. */
static void check_json_body(const duo_param *p, size_t n, char **body, size_t *len)
{
    json_t *want = expected_body(p, n);
    err_t e = {0};
    int rc = duo_json_body(p, n, body, len, &e);
    if (!want) {
        CHECK(rc == ERR_INVAL && *body == NULL);
        return;
    }
    CHECK(rc == 0 && *body && strlen(*body) == *len);
    for (size_t i = 0; i < *len; i++)
        CHECK((unsigned char)(*body)[i] >= 0x20 && (unsigned char)(*body)[i] < 0x7F);
    json_error_t je;
    json_t *got = json_loadb(*body, *len, JSON_REJECT_DUPLICATES, &je);
    CHECK(got && json_equal(got, want));
    json_decref(got);
    json_decref(want);
}

static char *canon_request(const duo_sign_input *in)
{
    char *out = NULL;
    err_t e = {0};
    CHECK(duo_canon_request(in, &out, &e) == 0 && out);
    return out;
}

/* Canonical string: deterministic, line 5 is the params line, 5 or 7 lines; then the
 * signature and the header built on it. */
static void check_request(const duo_sign_input *in, const char *params_line)
{
    char *a = canon_request(in), *b = canon_request(in);
    CHECK(strcmp(a, b) == 0);
    free(b);
    size_t lines = 1;
    const char *line5 = NULL;
    for (const char *c = a; *c; c++)
        if (*c == '\n' && ++lines == 5)
            line5 = c + 1;
    CHECK(lines == (in->sig_version == 5 ? 7u : 5u) && line5);
    size_t plen = strlen(params_line);
    CHECK(strncmp(line5, params_line, plen) == 0 && (line5[plen] == '\0' || line5[plen] == '\n'));
    free(a);
    char h1[DUO_HEX_LEN], h2[DUO_HEX_LEN];
    err_t e = {0};
    CHECK(duo_sign(in, "fuzz-skey-0123456789", h1, &e) == 0);
    CHECK(duo_sign(in, "fuzz-skey-0123456789", h2, &e) == 0 && strcmp(h1, h2) == 0);
    int sha1 = in->sig_version == 2 && in->digest == DUO_DIGEST_SHA1;
    CHECK(strlen(h1) == (sha1 ? 40u : 128u));
    for (const char *c = h1; *c; c++)
        CHECK((*c >= '0' && *c <= '9') || (*c >= 'a' && *c <= 'f'));
    char *auth = NULL;
    CHECK(duo_auth_header("DIXXXXXXXXXXXXXXXXXX", h1, &auth, &e) == 0 && auth);
    CHECK(strncmp(auth, "Basic ", 6) == 0);
    free(auth);
}

/* Splits buf (NUL-terminated, len bytes before the terminator) into params. */
static size_t split_params(char *buf, size_t len, duo_param *p)
{
    size_t n = 0;
    char *c = buf, *end = buf + len;
    while (c < end && n < MAX_PARAMS) {
        p[n].key = c;
        c += strlen(c) + 1;
        p[n].value = c < end ? c : "";
        if (c < end)
            c += strlen(c) + 1;
        n++;
    }
    return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    unsigned flags = data[0];
    char *buf = malloc(size); /* size - 1 bytes of params plus a NUL */
    CHECK(buf != NULL);
    memcpy(buf, data + 1, size - 1);
    buf[size - 1] = '\0';
    duo_param p[MAX_PARAMS];
    size_t n = split_params(buf, size - 1, p);
    for (size_t i = 0; i < n; i++) {
        check_percent(p[i].key);
        check_percent(p[i].value);
    }
    char *line = check_params_line(p, n);
    char *body = NULL;
    size_t body_len = 0;
    check_json_body(p, n, &body, &body_len);
    duo_sign_input in = {.sig_version = (flags & 1) ? 5 : 2,
                         .digest = (flags & 2) ? DUO_DIGEST_SHA1 : DUO_DIGEST_SHA512,
                         .method = methods[(flags >> 2) & 3],
                         .host = hosts[(flags >> 4) & 3],
                         .path = "/admin/v1/users",
                         .date = "Tue, 21 Aug 2012 17:29:18 -0000",
                         .params = p,
                         .nparams = n,
                         .body = body,
                         .body_len = body_len,
                         .x_duo = p,
                         .nx_duo = n};
    check_request(&in, line);
    /* A v5 POST signs its params in the body and leaves the params line empty. */
    if (in.sig_version == 5 && body) {
        in.params = NULL;
        in.nparams = 0;
        check_request(&in, "");
    }
    free(body);
    free(line);
    free(buf);
    return 0;
}
