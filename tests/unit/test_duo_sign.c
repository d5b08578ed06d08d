/* test_duo_sign.c - duo_sign against every vector computed by Duo's official Python
 * client (tests/data/duo-signing-vectors.json), plus canonicalisation edge cases and a
 * locale-independent date. A vector that does not reproduce fails the test. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <cmocka.h>
#include <jansson.h>
#include <locale.h>

#include "duo_sign.h"

static json_t *load_vectors(void)
{
    const char *src = getenv("DUO_SOURCE_DIR");
    char path[1024];
    snprintf(path, sizeof path, "%s/tests/data/duo-signing-vectors.json",
             src ? src : DUO_SOURCE_DIR);
    json_error_t je;
    json_t *v = json_load_file(path, 0, &je);
    if (!v)
        fail_msg("cannot read %s: %s", path, je.text);
    return v;
}

/* Turns [[k, v], ...] into a duo_param array borrowing the JSON strings. */
static duo_param *params_of(json_t *arr, size_t *n)
{
    *n = json_array_size(arr);
    duo_param *p = calloc(*n ? *n : 1, sizeof *p);
    assert_non_null(p);
    for (size_t i = 0; i < *n; i++) {
        json_t *pair = json_array_get(arr, i);
        p[i].key = json_string_value(json_array_get(pair, 0));
        p[i].value = json_string_value(json_array_get(pair, 1));
        assert_non_null(p[i].key);
        assert_non_null(p[i].value);
    }
    return p;
}

static const char *str(json_t *o, const char *k)
{
    const char *s = json_string_value(json_object_get(o, k));
    if (!s)
        fail_msg("vector lacks string '%s'", k);
    return s;
}

static void test_params_vectors(void **state)
{
    (void)state;
    json_t *all = load_vectors();
    json_t *vecs = json_object_get(all, "params");
    assert_true(json_array_size(vecs) > 0);
    size_t i;
    json_t *v;
    json_array_foreach(vecs, i, v)
    {
        size_t n;
        duo_param *p = params_of(json_object_get(v, "params"), &n);
        char *canon = NULL;
        err_t e = {0};
        assert_int_equal(duo_canon_params(p, n, &canon, &e), 0);
        if (strcmp(canon, str(v, "canonical")) != 0)
            fail_msg("params vector %s: got '%s'", str(v, "name"), canon);
        free(canon);
        free(p);
    }
    json_decref(all);
}

static int is_body_method(const char *m)
{
    return strcasecmp(m, "POST") == 0 || strcasecmp(m, "PUT") == 0 || strcasecmp(m, "PATCH") == 0;
}

/* Builds the v5 body from the params (checked against the vector's body), then the
 * canonical string, signature and header. */
static void check_request_vector(json_t *v)
{
    const char *name = str(v, "name");
    size_t n, nh = 0;
    duo_param *p = params_of(json_object_get(v, "params"), &n);
    json_t *xh = json_object_get(v, "x_duo_headers");
    duo_param *h = xh ? params_of(xh, &nh) : NULL;
    duo_sign_input in = {.sig_version = (int)json_integer_value(json_object_get(v, "sig_version")),
                         .digest = strcmp(str(v, "digest"), "sha1") == 0 ? DUO_DIGEST_SHA1
                                                                         : DUO_DIGEST_SHA512,
                         .method = str(v, "method"),
                         .host = str(v, "host"),
                         .path = str(v, "path"),
                         .date = str(v, "date"),
                         .params = p,
                         .nparams = n,
                         .x_duo = h,
                         .nx_duo = nh};
    char *body = NULL;
    err_t e = {0};
    if (in.sig_version == 5 && is_body_method(in.method)) {
        size_t len;
        assert_int_equal(duo_json_body(p, n, &body, &len, &e), 0);
        if (strcmp(body, str(v, "body")) != 0)
            fail_msg("vector %s: body '%s'", name, body);
        in.body = body, in.body_len = len, in.params = NULL, in.nparams = 0;
    }
    char *canon = NULL, *auth = NULL, hex[DUO_HEX_LEN];
    assert_int_equal(duo_canon_request(&in, &canon, &e), 0);
    if (strcmp(canon, str(v, "canonical")) != 0)
        fail_msg("vector %s: canonical\n%s", name, canon);
    assert_int_equal(duo_sign(&in, str(v, "skey"), hex, &e), 0);
    if (strcmp(hex, str(v, "signature_hex")) != 0)
        fail_msg("vector %s: signature %s", name, hex);
    assert_int_equal(duo_auth_header(str(v, "ikey"), hex, &auth, &e), 0);
    if (strcmp(auth, str(v, "authorization")) != 0)
        fail_msg("vector %s: authorization %s", name, auth);
    free(canon);
    free(auth);
    free(body);
    free(p);
    free(h);
}

static void test_request_vectors(void **state)
{
    (void)state;
    json_t *all = load_vectors();
    json_t *vecs = json_object_get(all, "requests");
    assert_true(json_array_size(vecs) > 0);
    size_t i;
    json_t *v;
    json_array_foreach(vecs, i, v) check_request_vector(v);
    json_decref(all);
}

static void expect_canon(const duo_param *p, size_t n, const char *want)
{
    char *got = NULL;
    assert_int_equal(duo_canon_params(p, n, &got, NULL), 0);
    assert_string_equal(got, want);
    free(got);
}

static void test_canon_edges(void **state)
{
    (void)state;
    duo_param empty[] = {{"b", ""}, {"a", "x"}};
    expect_canon(empty, 2, "a=x&b=");
    /* '=' '&' in keys and values are data, not syntax. */
    duo_param punct[] = {{"k=1&", "v=2&x"}, {"-k", "~._-"}};
    expect_canon(punct, 2, "-k=~._-&k%3D1%26=v%3D2%26x");
    /* Sorting is by the encoded key: "%" (0x25) sorts before "A". */
    duo_param enc_sort[] = {{"A", "1"}, {" ", "2"}};
    expect_canon(enc_sort, 2, "%20=2&A=1");
    duo_param slash[] = {{"p", "/*+"}};
    expect_canon(slash, 1, "p=%2F%2A%2B");
    duo_param high[] = {{"k", "\xff\x80"}};
    expect_canon(high, 1, "k=%FF%80");
    expect_canon(NULL, 0, "");
    duo_param nul_value[] = {{"k", NULL}};
    char *out = NULL;
    err_t e = {0};
    assert_int_equal(duo_canon_params(nul_value, 1, &out, &e), ERR_INVAL);
    assert_null(out);
}

static void expect_body(const duo_param *p, size_t n, const char *want)
{
    char *got = NULL;
    size_t len = 0;
    assert_int_equal(duo_json_body(p, n, &got, &len, NULL), 0);
    assert_string_equal(got, want);
    assert_int_equal(len, strlen(want));
    free(got);
}

static void test_json_body(void **state)
{
    (void)state;
    expect_body(NULL, 0, "{}");
    duo_param ctl[] = {{"q", "a\"b\\c\n\t\x01\x7f/"}};
    expect_body(ctl, 1, "{\"q\":\"a\\\"b\\\\c\\n\\t\\u0001\\u007f/\"}");
    /* U+1F600 needs a surrogate pair, as Python writes it. */
    duo_param emoji[] = {{"e", "\xf0\x9f\x98\x80"}, {"d", "\xc3\xa9"}};
    expect_body(emoji, 2, "{\"d\":\"\\u00e9\",\"e\":\"\\ud83d\\ude00\"}");
    char *out = NULL;
    size_t len;
    err_t e = {0};
    duo_param bad[] = {{"k", "\xc3"}};
    assert_int_equal(duo_json_body(bad, 1, &out, &len, &e), ERR_INVAL);
    duo_param overlong[] = {{"k", "\xc0\xaf"}};
    assert_int_equal(duo_json_body(overlong, 1, &out, &len, &e), ERR_INVAL);
    duo_param dup[] = {{"k", "1"}, {"k", "2"}};
    assert_int_equal(duo_json_body(dup, 2, &out, &len, &e), ERR_INVAL);
    assert_non_null(strstr(e.msg, "repeated"));
    assert_null(out);
}

static void test_date_format(void **state)
{
    (void)state;
    char d[DUO_DATE_LEN];
    assert_int_equal(duo_format_date((time_t)1345570158, d), 0);
    assert_string_equal(d, "Tue, 21 Aug 2012 17:29:18 -0000");
    assert_int_equal(duo_format_date((time_t)0, d), 0);
    assert_string_equal(d, "Thu, 01 Jan 1970 00:00:00 -0000");
    assert_int_equal(duo_format_date((time_t)1709251199, d), 0); /* leap day */
    assert_string_equal(d, "Thu, 29 Feb 2024 23:59:59 -0000");
}

/* A localised day name gets 40104 from Duo: the date must not follow the locale. */
static void test_date_ignores_locale(void **state)
{
    (void)state;
    static const char *locales[] = {"de_DE.UTF-8", "fr_FR.UTF-8", "ja_JP.UTF-8", "C.UTF-8"};
    const char *set = NULL;
    for (size_t i = 0; i < 4 && !set; i++)
        set = setlocale(LC_ALL, locales[i]);
    char d[DUO_DATE_LEN];
    assert_int_equal(duo_format_date((time_t)1345570158, d), 0);
    assert_string_equal(d, "Tue, 21 Aug 2012 17:29:18 -0000");
    setlocale(LC_ALL, "C");
}

/* No locale-dependent formatting in the client sources (no strftime at all). */
static void test_sources_avoid_strftime(void **state)
{
    (void)state;
    static const char *files[] = {"common/duo_sign.c", "common/duo.c"};
    for (size_t i = 0; i < 2; i++) {
        char path[1024];
        const char *src = getenv("DUO_SOURCE_DIR");
        snprintf(path, sizeof path, "%s/%s", src ? src : DUO_SOURCE_DIR, files[i]);
        FILE *f = fopen(path, "r");
        if (!f)
            continue;
        char line[4096];
        while (fgets(line, sizeof line, f))
            if (strstr(line, "strftime"))
                fail_msg("%s uses strftime: %s", files[i], line);
        fclose(f);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_params_vectors),
        cmocka_unit_test(test_request_vectors),
        cmocka_unit_test(test_canon_edges),
        cmocka_unit_test(test_json_body),
        cmocka_unit_test(test_date_format),
        cmocka_unit_test(test_date_ignores_locale),
        cmocka_unit_test(test_sources_avoid_strftime),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
