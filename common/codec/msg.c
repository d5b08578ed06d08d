/* msg.c - msgpack <-> jansson codec; the only file that includes <msgpack.h>.
 *
 * Invariant: msg_decode reads each byte at most once, checks every length against the
 * bytes that remain before touching them, and recurses at most lim->max_depth levels, so
 * no input can crash it or make it allocate more than a small multiple of its size.
 *
 * Why decoding does not use msgpack_unpack(): msgpack-c allocates an array of a map's or
 * array's declared entry count before reading the entries (a 5-byte header can ask for
 * 100 GB) and keeps a fixed 32-level parse stack, so a bounded pre-scan of the same grammar
 * would be needed anyway; building the JSON value during that scan is the simpler single
 * pass. Encoding uses msgpack-c's packer, which picks the compact forms. */
#include "msg.h"

#include "buf.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <msgpack.h>

enum { MAX_DEPTH_CAP = 64, PATH_MAX_LEN = 200 };

/* Decoder state: the unread bytes, the limits and the JSON path of the current value. */
typedef struct rd {
    const unsigned char *p;
    const unsigned char *end;
    msg_limits lim;
    char path[PATH_MAX_LEN + 8];
    size_t plen;
    err_t *e;
} rd;

static int decode_value(rd *r, size_t depth, json_t **out);

static int fail(rd *r, const char *reason)
{
    return err_set(r->e, ERR_INVAL, "%s: %s", r->path, reason);
}

/* Appends text to the path; past PATH_MAX_LEN the path ends in "..." instead. */
static size_t path_push(rd *r, const char *sep, const char *s, size_t n)
{
    size_t saved = r->plen;
    size_t sl = strlen(sep);
    if (r->plen + sl + n > PATH_MAX_LEN) {
        if (r->plen + 3 <= PATH_MAX_LEN + 7) {
            memcpy(r->path + r->plen, "...", 4);
            r->plen += 3;
        }
        return saved;
    }
    memcpy(r->path + r->plen, sep, sl);
    memcpy(r->path + r->plen + sl, s, n);
    r->plen += sl + n;
    r->path[r->plen] = '\0';
    return saved;
}

static void path_pop(rd *r, size_t saved)
{
    r->plen = saved;
    r->path[saved] = '\0';
}

static int need(rd *r, size_t n)
{
    if ((size_t)(r->end - r->p) < n)
        return fail(r, "truncated message");
    return 0;
}

static uint64_t read_be(rd *r, size_t n)
{
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++)
        v = (v << 8) | r->p[i];
    r->p += n;
    return v;
}

/* Strict UTF-8 (no overlongs, surrogates or code points past U+10FFFF) and no NUL. */
static const char *utf8_problem(const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        if (c == 0)
            return "contains a NUL character";
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t k = c >= 0xf0 ? 3 : c >= 0xe0 ? 2 : 1;
        if (c < 0xc2 || c > 0xf4 || n - i <= k) /* stray continuation, overlong, short */
            return "is not valid UTF-8";
        unsigned c1 = s[i + 1];
        if ((c == 0xe0 && c1 < 0xa0) || (c == 0xed && c1 > 0x9f) || (c == 0xf0 && c1 < 0x90) ||
            (c == 0xf4 && c1 > 0x8f))
            return "is not valid UTF-8";
        for (size_t j = 1; j <= k; j++)
            if ((s[i + j] & 0xc0) != 0x80)
                return "is not valid UTF-8";
        i += k + 1;
    }
    return NULL;
}

/* Name of the msgpack type that starts with byte b, for messages. */
static const char *type_name(unsigned b)
{
    if (b <= 0x7f || b >= 0xe0 || (b >= 0xcc && b <= 0xd3))
        return "integer";
    if (b <= 0x8f || b == 0xde || b == 0xdf)
        return "map";
    if (b <= 0x9f || b == 0xdc || b == 0xdd)
        return "array";
    if (b <= 0xbf || (b >= 0xd9 && b <= 0xdb))
        return "string";
    if (b == 0xc0)
        return "nil";
    if (b == 0xc2 || b == 0xc3)
        return "boolean";
    if (b >= 0xc4 && b <= 0xc6)
        return "bin";
    if (b == 0xca || b == 0xcb)
        return "float";
    if (b == 0xc1)
        return "reserved byte 0xc1";
    return "ext";
}

/* If the next value is a string, reads its header and body; *s points into the input. */
static int read_str(rd *r, const char *what, const unsigned char **s, size_t *n)
{
    if (need(r, 1) < 0)
        return ERR_INVAL;
    unsigned b = *r->p;
    size_t hdr = b >= 0xa0 && b <= 0xbf ? 0 : b == 0xd9 ? 1 : b == 0xda ? 2 : b == 0xdb ? 4 : 9;
    if (hdr == 9)
        return err_set(r->e, ERR_INVAL, "%s: %s must be a string, not %s", r->path, what,
                       type_name(b));
    r->p++;
    if (need(r, hdr) < 0)
        return ERR_INVAL;
    *n = hdr == 0 ? (b & 0x1f) : (size_t)read_be(r, hdr);
    if (*n > r->lim.max_string)
        return err_set(r->e, ERR_INVAL, "%s: %s of %zu bytes exceeds the limit of %zu", r->path,
                       what, *n, r->lim.max_string);
    if (need(r, *n) < 0)
        return ERR_INVAL;
    *s = r->p;
    r->p += *n;
    const char *bad = utf8_problem(*s, *n);
    if (bad)
        return err_set(r->e, ERR_INVAL, "%s: %s %s", r->path, what, bad);
    return 0;
}

/* Checks a container header's count against depth, item and size limits. */
static int check_container(rd *r, size_t depth, size_t count, size_t min_entry_bytes)
{
    if (depth > r->lim.max_depth)
        return err_set(r->e, ERR_INVAL, "%s: nesting deeper than %zu levels", r->path,
                       r->lim.max_depth);
    if (count > r->lim.max_items)
        return err_set(r->e, ERR_INVAL, "%s: %zu entries exceed the limit of %zu", r->path, count,
                       r->lim.max_items);
    if (count > (size_t)(r->end - r->p) / min_entry_bytes)
        return fail(r, "truncated message");
    return 0;
}

static int decode_map(rd *r, size_t depth, size_t count, json_t **out)
{
    int rc = check_container(r, depth, count, 2);
    if (rc < 0)
        return rc;
    json_t *obj = json_object();
    if (!obj)
        return err_set(r->e, ERR_NOMEM, "out of memory decoding a map");
    for (size_t i = 0; i < count; i++) {
        const unsigned char *k;
        size_t kn;
        rc = read_str(r, "map key", &k, &kn);
        if (rc < 0)
            goto fail;
        size_t saved = path_push(r, ".", (const char *)k, kn);
        if (json_object_getn(obj, (const char *)k, kn)) {
            rc = fail(r, "duplicated key");
            goto fail;
        }
        json_t *v = NULL;
        rc = decode_value(r, depth, &v);
        if (rc < 0)
            goto fail;
        path_pop(r, saved);
        if (json_object_setn_new_nocheck(obj, (const char *)k, kn, v) < 0) {
            rc = err_set(r->e, ERR_NOMEM, "out of memory decoding a map");
            goto fail;
        }
    }
    *out = obj;
    return 0;
fail:
    json_decref(obj);
    return rc;
}

static int decode_array(rd *r, size_t depth, size_t count, json_t **out)
{
    int rc = check_container(r, depth, count, 1);
    if (rc < 0)
        return rc;
    json_t *arr = json_array();
    if (!arr)
        return err_set(r->e, ERR_NOMEM, "out of memory decoding an array");
    for (size_t i = 0; i < count; i++) {
        char idx[32];
        int n = snprintf(idx, sizeof idx, "[%zu]", i);
        size_t saved = path_push(r, "", idx, (size_t)n);
        json_t *v = NULL;
        rc = decode_value(r, depth, &v);
        if (rc < 0)
            goto fail;
        path_pop(r, saved);
        if (json_array_append_new(arr, v) < 0) {
            rc = err_set(r->e, ERR_NOMEM, "out of memory decoding an array");
            goto fail;
        }
    }
    *out = arr;
    return 0;
fail:
    json_decref(arr);
    return rc;
}

static int make(rd *r, json_t *v, json_t **out)
{
    if (!v)
        return err_set(r->e, ERR_NOMEM, "%s: out of memory", r->path);
    *out = v;
    return 0;
}

static int decode_float(rd *r, unsigned b, json_t **out)
{
    double d;
    if (b == 0xca) {
        uint32_t u = (uint32_t)read_be(r, 4);
        float f;
        memcpy(&f, &u, sizeof f);
        d = f;
    } else {
        uint64_t u = read_be(r, 8);
        memcpy(&d, &u, sizeof d);
    }
    if (!isfinite(d))
        return fail(r, "float is not a finite number");
    return make(r, json_real(d), out);
}

static int decode_int(rd *r, unsigned b, json_t **out)
{
    size_t n = (size_t)1 << (b & 3);
    if (need(r, n) < 0)
        return ERR_INVAL;
    uint64_t u = read_be(r, n);
    int64_t v;
    if (b <= 0xcf) { /* uint8..uint64 */
        if (u > (uint64_t)INT64_MAX)
            return fail(r, "integer is larger than 9223372036854775807");
        v = (int64_t)u;
    } else if (n == 1) {
        v = (int8_t)(uint8_t)u;
    } else if (n == 2) {
        v = (int16_t)(uint16_t)u;
    } else if (n == 4) {
        v = (int32_t)(uint32_t)u;
    } else {
        v = (int64_t)u; /* two's complement, as every supported compiler does */
    }
    return make(r, json_integer((json_int_t)v), out);
}

/* Values that are neither containers nor integers/floats. */
static int decode_other(rd *r, unsigned b, json_t **out)
{
    if (b == 0xc0)
        return make(r, json_null(), out);
    if (b == 0xc2 || b == 0xc3)
        return make(r, json_boolean(b == 0xc3), out);
    if ((b >= 0xa0 && b <= 0xbf) || (b >= 0xd9 && b <= 0xdb)) {
        const unsigned char *s;
        size_t n;
        r->p--; /* read_str reads the header itself */
        int rc = read_str(r, "string", &s, &n);
        if (rc < 0)
            return rc;
        return make(r, json_stringn_nocheck((const char *)s, n), out);
    }
    return err_set(r->e, ERR_INVAL, "%s: %s values are not allowed", r->path, type_name(b));
}

static int decode_value(rd *r, size_t depth, json_t **out)
{
    if (need(r, 1) < 0)
        return ERR_INVAL;
    unsigned b = *r->p++;
    if (b <= 0x7f)
        return make(r, json_integer((json_int_t)b), out);
    if (b >= 0xe0)
        return make(r, json_integer((json_int_t)(int8_t)(uint8_t)b), out);
    if (b <= 0x8f)
        return decode_map(r, depth + 1, b & 0x0f, out);
    if (b <= 0x9f)
        return decode_array(r, depth + 1, b & 0x0f, out);
    if (b >= 0xcc && b <= 0xd3)
        return decode_int(r, b, out);
    if (b == 0xca || b == 0xcb) {
        if (need(r, b == 0xca ? 4 : 8) < 0)
            return ERR_INVAL;
        return decode_float(r, b, out);
    }
    if (b >= 0xdc && b <= 0xdf) {
        size_t hn = (b & 1) ? 4 : 2;
        if (need(r, hn) < 0)
            return ERR_INVAL;
        size_t count = (size_t)read_be(r, hn);
        if (b >= 0xde)
            return decode_map(r, depth + 1, count, out);
        return decode_array(r, depth + 1, count, out);
    }
    return decode_other(r, b, out);
}

static void limits_resolve(const msg_limits *in, msg_limits *l)
{
    l->max_bytes = in && in->max_bytes ? in->max_bytes : MSG_DEFAULT_MAX_BYTES;
    l->max_depth = in && in->max_depth ? in->max_depth : MSG_DEFAULT_MAX_DEPTH;
    l->max_string = in && in->max_string ? in->max_string : MSG_DEFAULT_MAX_STRING;
    l->max_items = in && in->max_items ? in->max_items : MSG_DEFAULT_MAX_ITEMS;
    if (l->max_depth > MAX_DEPTH_CAP)
        l->max_depth = MAX_DEPTH_CAP;
}

int msg_decode(const void *data, size_t len, const msg_limits *lim, json_t **out, err_t *e)
{
    *out = NULL;
    rd r = {.p = data, .end = (const unsigned char *)data + len, .path = "$", .plen = 1, .e = e};
    limits_resolve(lim, &r.lim);
    if (!data || len == 0)
        return fail(&r, "empty message");
    if (len > r.lim.max_bytes)
        return err_set(e, ERR_INVAL, "$: message of %zu bytes exceeds the limit of %zu", len,
                       r.lim.max_bytes);
    unsigned b = *r.p;
    if (!(b >= 0x80 && b <= 0x8f) && b != 0xde && b != 0xdf)
        return err_set(e, ERR_INVAL, "$: top level must be a map, not a %s", type_name(b));
    json_t *v = NULL;
    int rc = decode_value(&r, 0, &v);
    if (rc < 0)
        return rc;
    if (r.p != r.end) {
        json_decref(v);
        return err_set(e, ERR_INVAL, "$: %zu trailing bytes after the top-level map",
                       (size_t)(r.end - r.p));
    }
    *out = v;
    return 0;
}

/* ---- encoding ---- */

static int pack_value(msgpack_packer *pk, const json_t *v, int depth, err_t *e);

static int pack_object(msgpack_packer *pk, const json_t *v, int depth, err_t *e)
{
    if (msgpack_pack_map(pk, json_object_size(v)) < 0)
        return err_set(e, ERR_NOMEM, "out of memory encoding a map");
    const char *key;
    size_t kn;
    json_t *val;
    json_object_keylen_foreach((json_t *)v, key, kn, val)
    {
        if (msgpack_pack_str(pk, kn) < 0 || msgpack_pack_str_body(pk, key, kn) < 0)
            return err_set(e, ERR_NOMEM, "out of memory encoding a key");
        int rc = pack_value(pk, val, depth + 1, e);
        if (rc < 0)
            return rc;
    }
    return 0;
}

static int pack_array(msgpack_packer *pk, const json_t *v, int depth, err_t *e)
{
    size_t n = json_array_size(v);
    if (msgpack_pack_array(pk, n) < 0)
        return err_set(e, ERR_NOMEM, "out of memory encoding an array");
    for (size_t i = 0; i < n; i++) {
        int rc = pack_value(pk, json_array_get(v, i), depth + 1, e);
        if (rc < 0)
            return rc;
    }
    return 0;
}

static int pack_value(msgpack_packer *pk, const json_t *v, int depth, err_t *e)
{
    if (depth > MAX_DEPTH_CAP)
        return err_set(e, ERR_INVAL, "value nested deeper than %d levels", MAX_DEPTH_CAP);
    int rc = 0;
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        return pack_object(pk, v, depth, e);
    case JSON_ARRAY:
        return pack_array(pk, v, depth, e);
    case JSON_STRING: {
        size_t n = json_string_length(v);
        rc = msgpack_pack_str(pk, n);
        if (rc == 0)
            rc = msgpack_pack_str_body(pk, json_string_value(v), n);
        break;
    }
    case JSON_INTEGER:
        rc = msgpack_pack_int64(pk, (int64_t)json_integer_value(v));
        break;
    case JSON_REAL:
        rc = msgpack_pack_double(pk, json_real_value(v));
        break;
    case JSON_TRUE:
        rc = msgpack_pack_true(pk);
        break;
    case JSON_FALSE:
        rc = msgpack_pack_false(pk);
        break;
    case JSON_NULL:
        rc = msgpack_pack_nil(pk);
        break;
    }
    return rc < 0 ? err_set(e, ERR_NOMEM, "out of memory encoding a value") : 0;
}

/* msgpack write callback into a buf: grows from the first write's size, not from
 * msgpack_sbuffer's fixed 8 KiB (a reply is a few hundred bytes; the big chunk made
 * malloc/free of one reply a visible share of a job's CPU). */
static int buf_write(void *data, const char *p, size_t n)
{
    return buf_put(data, p, n);
}

int msg_encode(const json_t *v, void **out, size_t *len, err_t *e)
{
    *out = NULL;
    *len = 0;
    if (!json_is_object(v))
        return err_set(e, ERR_INVAL, "only an object can be encoded as a message");
    buf b = {0};
    msgpack_packer pk;
    msgpack_packer_init(&pk, &b, buf_write);
    int rc = pack_value(&pk, v, 1, e);
    if (rc == 0 && b.failed)
        rc = err_set(e, ERR_NOMEM, "out of memory encoding a message");
    if (rc < 0) {
        buf_free(&b);
        return rc;
    }
    *out = buf_release(&b, len); /* allocated with malloc/realloc */
    return *out ? 0 : err_set(e, ERR_NOMEM, "out of memory encoding a message");
}
