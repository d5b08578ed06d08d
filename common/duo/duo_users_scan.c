/* duo_users_scan.c - a users page read in one streaming pass (see duo_users_scan.h).
 *
 * The import needs two strings per user out of ~30 members (phones, groups, tokens,
 * ...); building jansson's tree of the whole page and freeing it again was two thirds
 * of an import worker's CPU. yajl calls back per token; the scanner keeps only what the
 * page needs. Every path that is not a well-formed success (non-200, FAIL envelope,
 * invalid JSON) is handed to duo_response_parse() so errors are classified once.
 *
 * Invariant: the body is fully validated (yajl checks syntax and UTF-8) before a page is
 * returned; a duplicate of a member the scanner reads is rejected, as jansson's
 * JSON_REJECT_DUPLICATES did. */
#include "duo_users_scan.h"

#include <string.h>
#include <yajl/yajl_parse.h>

/* Depths: 1 = the envelope, 2 = inside "response" / "metadata", 3 = inside one user. */
enum { IN_ROOT = 1, IN_SECTION = 2, IN_USER = 3 };

enum slot {
    S_NONE = 0,
    S_STAT,
    S_RESPONSE,
    S_METADATA,
    S_TOTAL,
    S_NEXT,
    S_USER_ID,
    S_USERNAME,
};

typedef struct scan {
    int depth;
    int in_users;    /* the depth-2 container is the response array */
    int in_meta;     /* the depth-2 container is the metadata object */
    enum slot key;   /* which member the next value belongs to */
    const char *bad; /* first structural problem (static text), NULL when none */
    char stat[8];    /* "OK" or what Duo said (truncated) */
    int seen;        /* bit per slot seen at the envelope / metadata level */
    json_t *users;   /* the compact array */
    json_t *user;    /* the user object being filled (borrowed from users) */
    long long total, next;
    int has_total, has_next;
} scan;

static int flag(scan *s, enum slot k)
{
    int bit = 1 << k;
    if (s->seen & bit)
        return -1;
    s->seen |= bit;
    return 0;
}

static int fail(scan *s, const char *why)
{
    if (!s->bad)
        s->bad = why;
    return 0; /* stops the parse */
}

/* A member name: which slot, if any, its value fills. */
static int on_key(void *ctx, const unsigned char *k, size_t n)
{
    scan *s = ctx;
    s->key = S_NONE;
#define IS(lit) (n == sizeof lit - 1 && memcmp(k, lit, n) == 0)
    if (s->depth == IN_ROOT)
        s->key = IS("stat")       ? S_STAT
                 : IS("response") ? S_RESPONSE
                 : IS("metadata") ? S_METADATA
                                  : S_NONE;
    else if (s->depth == IN_SECTION && s->in_meta)
        s->key = IS("total_objects") ? S_TOTAL : IS("next_offset") ? S_NEXT : S_NONE;
    else if (s->depth == IN_USER && s->in_users)
        s->key = IS("user_id") ? S_USER_ID : IS("username") ? S_USERNAME : S_NONE;
#undef IS
    if (s->key != S_NONE && s->key != S_USER_ID && s->key != S_USERNAME && flag(s, s->key) < 0)
        return fail(s, "a duplicate member");
    return 1;
}

/* A scalar that is not a string: only metadata integers (or null) matter. */
static int scalar(scan *s, int is_int, long long v, int is_null)
{
    enum slot k = s->key;
    s->key = S_NONE;
    if (s->depth == IN_SECTION && s->in_users)
        return fail(s, "a user that is not an object");
    if (k == S_TOTAL || k == S_NEXT) {
        if (!is_int && !is_null)
            return fail(s, "integer metadata");
        *(k == S_TOTAL ? &s->total : &s->next) = is_null ? -1 : v;
        *(k == S_TOTAL ? &s->has_total : &s->has_next) = 1;
    } else if (k == S_STAT || k == S_USER_ID || k == S_USERNAME) {
        return fail(s, k == S_STAT ? "stat is not a string" : "a user without user_id or username");
    } else if (k == S_RESPONSE) {
        return fail(s, "response array");
    }
    return 1;
}

static int on_null(void *ctx)
{
    return scalar(ctx, 0, 0, 1);
}

static int on_bool(void *ctx, int b)
{
    (void)b;
    return scalar(ctx, 0, 0, 0);
}

static int on_int(void *ctx, long long v)
{
    return scalar(ctx, 1, v, 0);
}

static int on_double(void *ctx, double d)
{
    (void)d;
    return scalar(ctx, 0, 0, 0);
}

static int on_string(void *ctx, const unsigned char *v, size_t n)
{
    scan *s = ctx;
    enum slot k = s->key;
    if (k != S_STAT && k != S_USER_ID && k != S_USERNAME)
        return scalar(s, 0, 0, 0);
    s->key = S_NONE;
    if (k == S_STAT) {
        if (memchr(v, '\0', n))
            n = 0; /* never "OK" */
        size_t m = n < sizeof s->stat - 1 ? n : sizeof s->stat - 1;
        memcpy(s->stat, v, m);
        s->stat[m] = '\0';
        return 1;
    }
    if (k == S_USER_ID || k == S_USERNAME) {
        const char *name = k == S_USER_ID ? "user_id" : "username";
        if (memchr(v, '\0', n))
            return fail(s, "a user_id or username holding a NUL");
        if (json_object_get(s->user, name))
            return fail(s, "a duplicate member");
        /* yajl already checked the UTF-8 */
        if (json_object_set_new_nocheck(s->user, name, json_stringn_nocheck((const char *)v, n)))
            return fail(s, "out of memory");
        return 1;
    }
    return scalar(s, 0, 0, 0);
}

static int open_container(scan *s, int is_map)
{
    enum slot k = s->key;
    s->key = S_NONE;
    s->depth++;
    if (s->depth == IN_ROOT)
        return is_map ? 1 : fail(s, "the body is not a JSON object");
    if (s->depth == IN_SECTION) {
        s->in_users = k == S_RESPONSE && !is_map;
        s->in_meta = k == S_METADATA && is_map;
        if (k == S_RESPONSE && is_map)
            return fail(s, "response array");
        if (k == S_METADATA && !is_map)
            return fail(s, "metadata object");
        if (k == S_TOTAL || k == S_NEXT) /* cannot happen at this depth */
            return fail(s, "integer metadata");
        return 1;
    }
    if (s->depth == IN_SECTION + 1 && s->in_meta && (k == S_TOTAL || k == S_NEXT))
        return fail(s, "integer metadata");
    if (s->depth == IN_USER && s->in_users) {
        if (!is_map)
            return fail(s, "a user that is not an object");
        s->user = json_object();
        if (!s->user || json_array_append_new(s->users, s->user))
            return fail(s, "out of memory");
        return 1;
    }
    if (s->depth == IN_USER + 1 && s->in_users && (k == S_USER_ID || k == S_USERNAME))
        return fail(s, "a user without user_id or username");
    return 1;
}

static int close_container(scan *s)
{
    if (s->depth == IN_USER && s->in_users) {
        if (!json_object_get(s->user, "user_id") || !json_object_get(s->user, "username"))
            return fail(s, "a user without user_id or username");
        s->user = NULL;
    }
    if (s->depth == IN_SECTION)
        s->in_users = s->in_meta = 0;
    s->depth--;
    s->key = S_NONE;
    return 1;
}

static int on_start_map(void *ctx)
{
    return open_container(ctx, 1);
}

static int on_start_array(void *ctx)
{
    return open_container(ctx, 0);
}

static int on_end(void *ctx)
{
    return close_container(ctx);
}

static const yajl_callbacks CALLBACKS = {
    .yajl_null = on_null,
    .yajl_boolean = on_bool,
    .yajl_integer = on_int,
    .yajl_double = on_double,
    .yajl_string = on_string,
    .yajl_start_map = on_start_map,
    .yajl_map_key = on_key,
    .yajl_end_map = on_end,
    .yajl_start_array = on_start_array,
    .yajl_end_array = on_end,
};

/* Runs the pass. 0: the body is valid JSON (s->bad may still name a problem of shape);
 * -1: invalid JSON, or the scan stopped (s->bad set). */
static int run(scan *s, const char *body, size_t len)
{
    yajl_handle h = yajl_alloc(&CALLBACKS, NULL, s);
    if (!h) {
        fail(s, "out of memory");
        return -1;
    }
    yajl_status st = yajl_parse(h, (const unsigned char *)body, len);
    if (st == yajl_status_ok)
        st = yajl_complete_parse(h);
    yajl_free(h);
    return st == yajl_status_ok ? 0 : -1;
}

static int bad_page(duo_error *err, long status, const char *why)
{
    if (err)
        err->http_status = (int)status;
    return duo_fail_set(err, ERR_DUO, DUO_FAIL_BAD_RESPONSE, DUO_CLASS_PERMANENT,
                        "malformed Duo response: users page: %s", why);
}

static json_t *metadata_of(const scan *s)
{
    if (!(s->seen & (1 << S_METADATA)))
        return NULL;
    json_t *m = json_object();
    if (m && s->has_total)
        json_object_set_new(m, "total_objects",
                            s->total < 0 ? json_null() : json_integer(s->total));
    if (m && s->has_next)
        json_object_set_new(m, "next_offset", s->next < 0 ? json_null() : json_integer(s->next));
    return m;
}

int duo_users_scan(long http_status, const char *body, size_t len, json_t **response,
                   json_t **metadata, duo_error *err)
{
    if (response)
        *response = NULL;
    if (metadata)
        *metadata = NULL;
    if (http_status != 200 || !body || len > DUO_MAX_RESPONSE_BYTES)
        return duo_response_parse(http_status, body, len, response, metadata, err);
    scan s = {.users = json_array()};
    if (!s.users)
        return bad_page(err, http_status, "out of memory");
    int valid = run(&s, body, len) == 0;
    int rc = 0;
    if (!valid && !s.bad) /* not JSON at all: classified by the one parser */
        rc = duo_response_parse(http_status, body, len, NULL, NULL, err);
    else if (!valid || s.bad)
        rc = bad_page(err, http_status, s.bad);
    else if (strcmp(s.stat, "OK") != 0 || !(s.seen & (1 << S_RESPONSE)))
        rc = duo_response_parse(http_status, body, len, NULL, NULL, err);
    if (rc == 0 && !valid) /* duo_response_parse accepted what yajl refused */
        rc = bad_page(err, http_status, "invalid JSON");
    if (rc == 0 && strcmp(s.stat, "OK") != 0)
        rc = bad_page(err, http_status, "no users in a successful answer");
    if (rc == 0 && response)
        *response = json_incref(s.users);
    if (rc == 0 && metadata)
        *metadata = metadata_of(&s);
    json_decref(s.users);
    return rc;
}
