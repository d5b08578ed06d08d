/* test_msg.c - msg_encode/msg_decode: round trips, every rejection with its path, limits,
 * and a fixed-seed random-bytes loop that must never crash. Bodies are built by hand
 * byte by byte so the test does not share the codec's view of the format. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "msg.h"

/* A growable byte buffer for hand-made msgpack. */
typedef struct buf {
    unsigned char *d;
    size_t n, cap;
} buf;

static void put(buf *b, const void *p, size_t n)
{
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 16;
        b->d = realloc(b->d, b->cap);
        assert_non_null(b->d);
    }
    memcpy(b->d + b->n, p, n);
    b->n += n;
}

static void put1(buf *b, unsigned v)
{
    unsigned char c = (unsigned char)v;
    put(b, &c, 1);
}

static void put_be(buf *b, uint64_t v, int n)
{
    for (int i = n - 1; i >= 0; i--)
        put1(b, (unsigned)(v >> (8 * i)) & 0xff);
}

/* fixstr (len < 32) */
static void put_str(buf *b, const char *s)
{
    size_t n = strlen(s);
    assert_true(n < 32);
    put1(b, 0xa0 | (unsigned)n);
    put(b, s, n);
}

/* Decodes and expects ERR_INVAL with `needle` in the message. */
static void expect_reject(const buf *b, const msg_limits *lim, const char *needle)
{
    json_t *v = (json_t *)1;
    err_t e = {0};
    int rc = msg_decode(b->d, b->n, lim, &v, &e);
    if (rc != ERR_INVAL || !strstr(e.msg, needle))
        fail_msg("rc=%d msg='%s', wanted ERR_INVAL with '%s'", rc, e.msg, needle);
    assert_null(v);
}

static json_t *expect_ok(const buf *b, const msg_limits *lim)
{
    json_t *v = NULL;
    err_t e = {0};
    int rc = msg_decode(b->d, b->n, lim, &v, &e);
    if (rc != 0)
        fail_msg("rc=%d msg='%s'", rc, e.msg);
    assert_non_null(v);
    return v;
}

static void test_round_trip(void **state)
{
    (void)state;
    json_error_t je;
    json_t *in = json_loads(
        "{\"s\":\"h\\u00e9llo \\u4e16\\u754c \\ud83d\\ude00\",\"i\":[0,1,-1,127,128,-32,-33,"
        "255,256,65535,65536,-129,-32769,4294967296,9223372036854775807,"
        "-9223372036854775808],\"f\":[1.5,-0.25,1e300],\"t\":true,\"n\":null,\"b\":false,"
        "\"nested\":{\"a\":{\"b\":[{},[],\"\"]}},\"pushinfo\":{\"Domain\":\"x\"}}",
        0, &je);
    assert_non_null(in);
    /* A long string and a large map take the 16/32-bit header forms. */
    char big[5000];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    json_object_set_new(in, "big", json_string(big));
    json_t *many = json_object();
    for (int i = 0; i < 300; i++) {
        char k[16];
        snprintf(k, sizeof k, "k%d", i);
        json_object_set_new(many, k, json_integer(i));
    }
    json_object_set_new(in, "many", many);

    void *out;
    size_t len;
    err_t e = {0};
    assert_int_equal(msg_encode(in, &out, &len, &e), 0);
    json_t *back = NULL;
    assert_int_equal(msg_decode(out, len, NULL, &back, &e), 0);
    assert_true(json_equal(in, back));
    json_decref(back);
    free(out);
    json_decref(in);
}

static void test_encode_rejects_non_object(void **state)
{
    (void)state;
    json_t *a = json_array();
    void *out = (void *)1;
    size_t len = 7;
    err_t e = {0};
    assert_int_equal(msg_encode(a, &out, &len, &e), ERR_INVAL);
    assert_null(out);
    json_decref(a);
}

static void test_truncated_every_prefix(void **state)
{
    (void)state;
    json_t *in = json_pack("{s:s, s:{s:[i,i,f]}, s:I}", "username", "alice", "x", "y", 1, 300, 2.5,
                           "big", (json_int_t)1 << 40);
    void *out;
    size_t len;
    assert_int_equal(msg_encode(in, &out, &len, NULL), 0);
    for (size_t n = 1; n < len; n++) {
        json_t *v = NULL;
        err_t e = {0};
        assert_int_equal(msg_decode(out, n, NULL, &v, &e), ERR_INVAL);
        assert_non_null(strstr(e.msg, "truncated"));
        assert_null(v);
    }
    free(out);
    json_decref(in);
}

static void test_trailing_and_top_level(void **state)
{
    (void)state;
    buf b = {0};
    put1(&b, 0x81);
    put_str(&b, "a");
    put1(&b, 0x01);
    json_decref(expect_ok(&b, NULL));
    put1(&b, 0xc0);
    expect_reject(&b, NULL, "trailing");
    b.n = 0;
    put1(&b, 0x91);
    put1(&b, 0x01);
    expect_reject(&b, NULL, "top level must be a map");
    b.n = 0;
    put1(&b, 0x05);
    expect_reject(&b, NULL, "top level must be a map");
    b.n = 0;
    put1(&b, 0x00);
    expect_reject(&b, NULL, "top level");
    json_t *v = (json_t *)1;
    assert_int_equal(msg_decode("", 0, NULL, &v, NULL), ERR_INVAL);
    assert_null(v);
    free(b.d);
}

static void test_duplicated_keys(void **state)
{
    (void)state;
    buf b = {0};
    put1(&b, 0x81);
    put_str(&b, "pushinfo");
    put1(&b, 0x82);
    put_str(&b, "Domain");
    put1(&b, 0x01);
    put_str(&b, "Domain");
    put1(&b, 0x02);
    expect_reject(&b, NULL, "$.pushinfo.Domain: duplicated key");
    free(b.d);
}

/* {"pushinfo": {<key>: <val>}} with raw bytes for key or value. */
static void nested_raw(buf *b, const char *k, size_t kn, const char *v, size_t vn)
{
    b->n = 0;
    put1(b, 0x81);
    put_str(b, "pushinfo");
    put1(b, 0x81);
    put1(b, 0xa0 | (unsigned)kn);
    put(b, k, kn);
    put1(b, 0xa0 | (unsigned)vn);
    put(b, v, vn);
}

static void test_invalid_utf8(void **state)
{
    (void)state;
    static const char *bad[] = {
        "\xff",         "\x80",         "\xc0\x80",         "\xc1\xbf",
        "\xe0\x80\x80", "\xed\xa0\x80", "\xf4\x90\x80\x80", "\xf5\x80\x80\x80",
        "\xe2\x82",     "a\xc3",
    };
    buf b = {0};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        nested_raw(&b, "Domain", 6, bad[i], strlen(bad[i]));
        expect_reject(&b, NULL, "$.pushinfo.Domain: string is not valid UTF-8");
        nested_raw(&b, bad[i], strlen(bad[i]), "x", 1);
        expect_reject(&b, NULL, "$.pushinfo: map key is not valid UTF-8");
    }
    nested_raw(&b, "Domain", 6, "a\0b", 3);
    expect_reject(&b, NULL, "$.pushinfo.Domain: string contains a NUL");
    nested_raw(&b, "D\0", 2, "x", 1);
    expect_reject(&b, NULL, "map key contains a NUL");
    /* Valid edge cases: 2-, 3- and 4-byte forms up to U+10FFFF. */
    nested_raw(&b, "Domain", 6, "\xc2\x80\xef\xbf\xbf\xf4\x8f\xbf\xbf", 9);
    json_t *v = expect_ok(&b, NULL);
    assert_int_equal(json_string_length(json_object_get(json_object_get(v, "pushinfo"), "Domain")),
                     9);
    json_decref(v);
    free(b.d);
}

static void test_deep_nesting(void **state)
{
    (void)state;
    buf b = {0};
    for (int i = 0; i < 10000; i++) {
        put1(&b, 0x81);
        put_str(&b, "a");
    }
    put1(&b, 0xc0);
    expect_reject(&b, NULL, "nesting deeper than 16");
    b.n = 0;
    put1(&b, 0x81);
    put_str(&b, "a");
    for (int i = 0; i < 10000; i++)
        put1(&b, 0x91);
    expect_reject(&b, NULL, "$.a[0][0]");
    /* Exactly the limit passes; one more level fails. */
    b.n = 0;
    for (int i = 0; i < 16; i++) {
        put1(&b, 0x81);
        put_str(&b, "a");
    }
    put1(&b, 0x01);
    json_decref(expect_ok(&b, NULL));
    msg_limits lim = {.max_depth = 15};
    expect_reject(&b, &lim, "nesting deeper than 15");
    free(b.d);
}

static void test_huge_strings(void **state)
{
    (void)state;
    buf b = {0};
    put1(&b, 0x81);
    put_str(&b, "username");
    put1(&b, 0xda);
    put_be(&b, 8193, 2);
    for (int i = 0; i < 8193; i++)
        put1(&b, 'x');
    expect_reject(&b, NULL, "$.username: string of 8193 bytes exceeds the limit of 8192");
    /* A header that claims 4 GB with no data behind it. */
    b.n = 0;
    put1(&b, 0x81);
    put_str(&b, "u");
    put1(&b, 0xdb);
    put_be(&b, 0xffffffffu, 4);
    expect_reject(&b, NULL, "$.u: string of 4294967295 bytes");
    msg_limits lim = {.max_string = SIZE_MAX};
    expect_reject(&b, &lim, "truncated");
    /* A long key is limited as well. */
    b.n = 0;
    put1(&b, 0x81);
    put1(&b, 0xd9);
    put1(&b, 200);
    for (int i = 0; i < 200; i++)
        put1(&b, 'k');
    put1(&b, 0x01);
    lim = (msg_limits){.max_string = 100};
    expect_reject(&b, &lim, "$: map key of 200 bytes");
    free(b.d);
}

static void test_non_string_keys_bin_ext(void **state)
{
    (void)state;
    buf b = {0};
    put1(&b, 0x81);
    put1(&b, 0x01);
    put1(&b, 0x01);
    expect_reject(&b, NULL, "$: map key must be a string, not integer");
    b.n = 0;
    put1(&b, 0x81);
    put_str(&b, "m");
    put1(&b, 0x81);
    put1(&b, 0x81); /* a map as a key */
    put_str(&b, "k");
    put1(&b, 0x01);
    put1(&b, 0x01);
    expect_reject(&b, NULL, "$.m: map key must be a string, not map");
    static const unsigned char tails[][4] = {
        {0xc4, 0x01, 0x00}, {0xc5, 0x00, 0x00}, {0xd4, 0x01, 0x00}, {0xc7, 0x00, 0x05}, {0xc1},
        {0xd8, 0x01},
    };
    static const char *names[] = {"bin values", "bin values",    "ext values",
                                  "ext values", "reserved byte", "ext values"};
    for (size_t i = 0; i < sizeof tails / sizeof tails[0]; i++) {
        b.n = 0;
        put1(&b, 0x81);
        put_str(&b, "x");
        put(&b, tails[i], 3);
        expect_reject(&b, NULL, names[i]);
    }
    free(b.d);
}

static void test_integers_and_floats(void **state)
{
    (void)state;
    buf b = {0};
    put1(&b, 0x81);
    put_str(&b, "n");
    put1(&b, 0xcf);
    put_be(&b, (uint64_t)INT64_MAX + 1, 8);
    expect_reject(&b, NULL, "$.n: integer is larger than");
    b.n = 0;
    put1(&b, 0x82);
    put_str(&b, "n");
    put1(&b, 0xcf);
    put_be(&b, (uint64_t)INT64_MAX, 8);
    put_str(&b, "m");
    put1(&b, 0xd3);
    put_be(&b, (uint64_t)INT64_MIN, 8);
    json_t *v = expect_ok(&b, NULL);
    assert_true(json_integer_value(json_object_get(v, "n")) == INT64_MAX);
    assert_true(json_integer_value(json_object_get(v, "m")) == INT64_MIN);
    json_decref(v);
    b.n = 0; /* float32 1.5 and negative int16 */
    put1(&b, 0x82);
    put_str(&b, "f");
    put1(&b, 0xca);
    put_be(&b, 0x3fc00000u, 4);
    put_str(&b, "i");
    put1(&b, 0xd1);
    put_be(&b, 0xff38u, 2);
    v = expect_ok(&b, NULL);
    assert_true(json_is_real(json_object_get(v, "f")));
    assert_true(json_real_value(json_object_get(v, "f")) == 1.5);
    assert_int_equal(json_integer_value(json_object_get(v, "i")), -200);
    json_decref(v);
    b.n = 0; /* NaN */
    put1(&b, 0x81);
    put_str(&b, "f");
    put1(&b, 0xcb);
    put_be(&b, 0x7ff8000000000000ull, 8);
    expect_reject(&b, NULL, "$.f: float is not a finite number");
    free(b.d);
}

static void test_item_and_size_limits(void **state)
{
    (void)state;
    buf b = {0};
    put1(&b, 0x81);
    put_str(&b, "a");
    put1(&b, 0xdc);
    put_be(&b, 1025, 2);
    for (int i = 0; i < 1025; i++)
        put1(&b, 0x01);
    expect_reject(&b, NULL, "$.a: 1025 entries exceed the limit of 1024");
    msg_limits lim = {.max_items = 2000};
    json_decref(expect_ok(&b, &lim));
    lim = (msg_limits){.max_bytes = 100, .max_items = 2000};
    expect_reject(&b, &lim, "exceeds the limit of 100");
    /* A map header claiming 4 billion entries with nothing behind it. */
    b.n = 0;
    put1(&b, 0xdf);
    put_be(&b, 0xffffffffu, 4);
    lim = (msg_limits){.max_items = SIZE_MAX};
    expect_reject(&b, &lim, "truncated");
    free(b.d);
}

/* xorshift64: fixed seed, so a failure reproduces. */
static uint64_t next_rand(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

/* Anything that decodes must re-encode and decode to the same value. */
static void check_any(const unsigned char *d, size_t n)
{
    json_t *v = NULL;
    err_t e = {0};
    int rc = msg_decode(d, n, NULL, &v, &e);
    if (rc < 0) {
        assert_int_equal(rc, ERR_INVAL);
        assert_true(e.msg[0] == '$');
        return;
    }
    void *out;
    size_t len;
    assert_int_equal(msg_encode(v, &out, &len, &e), 0);
    json_t *back = NULL;
    assert_int_equal(msg_decode(out, len, NULL, &back, &e), 0);
    assert_true(json_equal(v, back));
    json_decref(back);
    json_decref(v);
    free(out);
}

static void test_random_bytes_never_crash(void **state)
{
    (void)state;
    uint64_t seed = 0x9e3779b97f4a7c15ull;
    unsigned char d[96];
    json_t *base = json_pack("{s:s, s:i, s:{s:s}, s:[b,n,f]}", "username", "alice", "n", 42,
                             "pushinfo", "Domain", "example.com", "a", 1, 2.5);
    void *enc;
    size_t elen;
    assert_int_equal(msg_encode(base, &enc, &elen, NULL), 0);
    assert_true(elen <= sizeof d);
    int decoded = 0;
    for (int i = 0; i < 4000; i++) {
        size_t n;
        if (i % 2 == 0) { /* pure noise, starting like a map half the time */
            n = next_rand(&seed) % sizeof d;
            for (size_t j = 0; j < n; j++)
                d[j] = (unsigned char)next_rand(&seed);
            if (n > 0 && i % 4 == 0)
                d[0] = 0x80 | (d[0] & 0x0f);
        } else { /* a valid body with a few bytes changed */
            n = elen;
            memcpy(d, enc, n);
            for (int k = 0; k < 1 + (int)(next_rand(&seed) % 3); k++)
                d[next_rand(&seed) % n] = (unsigned char)next_rand(&seed);
        }
        json_t *v = NULL;
        if (msg_decode(d, n, NULL, &v, NULL) == 0) {
            decoded++;
            json_decref(v);
        }
        check_any(d, n);
    }
    assert_true(decoded > 0); /* the mutations did exercise the success path */
    free(enc);
    json_decref(base);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_encode_rejects_non_object),
        cmocka_unit_test(test_truncated_every_prefix),
        cmocka_unit_test(test_trailing_and_top_level),
        cmocka_unit_test(test_duplicated_keys),
        cmocka_unit_test(test_invalid_utf8),
        cmocka_unit_test(test_deep_nesting),
        cmocka_unit_test(test_huge_strings),
        cmocka_unit_test(test_non_string_keys_bin_ext),
        cmocka_unit_test(test_integers_and_floats),
        cmocka_unit_test(test_item_and_size_limits),
        cmocka_unit_test(test_random_bytes_never_crash),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
