/* test_schema.c - the message contract: every example in schemas/examples/<schema>/ goes
 * through msg_encode -> msg_decode and is validated against its schema (valid-* must pass,
 * invalid-* must fail with the expected path and reason); plus the validator's own rules
 * (unknown keywords refused at load, $ref cycles bounded, code-point lengths, ...). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <dirent.h>
#include <unistd.h>

#include "msg.h"
#include "schema.h"

static const char *source_dir(void)
{
    const char *d = getenv("DUO_SOURCE_DIR");
    return d && *d ? d : DUO_SOURCE_DIR;
}

static schema_set *load_project_set(void)
{
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/schemas", source_dir());
    err_t e = {0};
    schema_set *s = schema_set_load(dir, &e);
    if (!s)
        fail_msg("loading %s: %s", dir, e.msg);
    return s;
}

static void test_every_job_and_result_has_a_schema(void **state)
{
    (void)state;
    static const char *names[] = {
        "enroll.begin.job", "enroll.begin.result", "enroll.status.job", "enroll.status.result",
        "auth.job",         "auth.result",         "import.manual.job", "import.manual.result",
        "import.auto.job",  "import.auto.result",  "import.page.job",   "import.page.result",
        "error.result",
    };
    schema_set *s = load_project_set();
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (!schema_get(s, names[i]))
            fail_msg("no schema %s", names[i]);
    assert_null(schema_get(s, "nope"));
    assert_null(schema_get(s, "auth.jo"));
    /* The runtime looks a job's schema up by its AMQP type. */
    assert_ptr_equal(schema_get(s, "auth"), schema_get(s, "auth.job"));
    assert_ptr_equal(schema_get(s, "import.page"), schema_get(s, "import.page.job"));
    assert_string_equal(schema_name(schema_get(s, "enroll.begin")), "enroll.begin.job");
    schema_set_free(s);
}

/* Encodes, decodes, and checks the decoded body equals the original. */
static json_t *round_trip(const json_t *body, const char *file)
{
    void *buf;
    size_t len;
    err_t e = {0};
    if (msg_encode(body, &buf, &len, &e) < 0)
        fail_msg("%s: encode: %s", file, e.msg);
    json_t *back = NULL;
    int rc = msg_decode(buf, len, NULL, &back, &e);
    free(buf);
    if (rc < 0)
        fail_msg("%s: decode: %s", file, e.msg);
    assert_true(json_equal(body, back));
    return back;
}

/* Checks one example file; returns 1 for a valid-*, 0 for an invalid-* example. */
static int check_example(const schema *sch, const char *path, const char *file)
{
    int valid = strncmp(file, "valid-", 6) == 0;
    if (!valid && strncmp(file, "invalid-", 8) != 0)
        fail_msg("%s: example names start with valid- or invalid-", path);
    json_error_t je;
    json_t *doc = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
    if (!doc)
        fail_msg("%s:%d: %s", path, je.line, je.text);
    const json_t *body = valid ? doc : json_object_get(doc, "message");
    const char *expect = valid ? NULL : json_string_value(json_object_get(doc, "expect"));
    if (!body || (!valid && !expect))
        fail_msg("%s: an invalid example is {\"expect\": \"...\", \"message\": {...}}", path);
    json_t *back = round_trip(body, path);
    err_t e = {0};
    int rc = schema_validate(sch, back, &e);
    if (valid && rc != 0)
        fail_msg("%s: should pass, got: %s", path, e.msg);
    if (!valid && (rc != ERR_INVAL || !strstr(e.msg, expect)))
        fail_msg("%s: should fail with '%s', got rc=%d '%s'", path, expect, rc, e.msg);
    json_decref(back);
    json_decref(doc);
    return valid;
}

static void check_example_dir(const schema_set *s, const char *root, const char *name)
{
    const schema *sch = schema_get(s, name);
    if (!sch)
        fail_msg("examples/%s: no schema of that name", name);
    char dir[4096];
    if (snprintf(dir, sizeof dir, "%s/%s", root, name) >= (int)sizeof dir)
        fail_msg("path too long");
    DIR *d = opendir(dir);
    assert_non_null(d);
    int nvalid = 0, ninvalid = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.')
            continue;
        char path[8192];
        snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
        if (check_example(sch, path, de->d_name))
            nvalid++;
        else
            ninvalid++;
    }
    closedir(d);
    if (nvalid == 0 || ninvalid == 0)
        fail_msg("examples/%s: needs at least one valid and one invalid example", name);
}

static void test_examples_round_trip_and_validate(void **state)
{
    (void)state;
    schema_set *s = load_project_set();
    char root[4096];
    snprintf(root, sizeof root, "%s/schemas/examples", source_dir());
    DIR *d = opendir(root);
    assert_non_null(d);
    size_t dirs = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.' || strchr(de->d_name, '.') == NULL)
            continue; /* schema names always contain a dot; skips README etc. */
        check_example_dir(s, root, de->d_name);
        dirs++;
    }
    closedir(d);
    assert_int_equal(dirs, schema_set_count(s)); /* every schema has examples */
    schema_set_free(s);
}

/* ---- the validator's own rules, on throw-away schema directories ---- */

typedef struct tmpdir {
    char path[64];
} tmpdir;

static void tmp_make(tmpdir *t)
{
    snprintf(t->path, sizeof t->path, "/tmp/test_schema.XXXXXX");
    assert_non_null(mkdtemp(t->path));
}

static void tmp_write(tmpdir *t, const char *file, const char *text)
{
    char p[256];
    snprintf(p, sizeof p, "%s/%s", t->path, file);
    FILE *f = fopen(p, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void tmp_remove(tmpdir *t)
{
    DIR *d = opendir(t->path);
    struct dirent *de;
    while (d && (de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.')
            continue;
        char p[512];
        snprintf(p, sizeof p, "%s/%s", t->path, de->d_name);
        unlink(p);
    }
    if (d)
        closedir(d);
    rmdir(t->path);
}

/* Loads one schema text as t.schema.json; expects a load error containing needle. */
static void expect_load_error(const char *text, int code, const char *needle)
{
    tmpdir t;
    tmp_make(&t);
    tmp_write(&t, "t.schema.json", text);
    err_t e = {0};
    schema_set *s = schema_set_load(t.path, &e);
    tmp_remove(&t);
    if (s || e.code != code || !strstr(e.msg, needle)) {
        schema_set_free(s);
        fail_msg("wanted load error %d '%s', got %d '%s'", code, needle, e.code, e.msg);
    }
}

static void test_load_refuses_what_it_cannot_check(void **state)
{
    (void)state;
    expect_load_error("{\"type\":\"string\",\"pattern\":\"^a\"}", ERR_CONFIG, "t.pattern");
    expect_load_error("{\"properties\":{\"a\":{\"minLenght\":1}}}", ERR_CONFIG,
                      "t.properties.a.minLenght: unknown");
    expect_load_error("{\"format\":\"email\"}", ERR_CONFIG, "uuid");
    expect_load_error("{\"$ref\":\"#/$defs/missing\"}", ERR_CONFIG, "missing definition");
    expect_load_error("{\"$ref\":\"other.json#/x\"}", ERR_CONFIG, "$ref");
    expect_load_error("{\"type\":\"float\"}", ERR_CONFIG, "unknown type");
    expect_load_error("{\"minLength\":-1}", ERR_CONFIG, "non-negative");
    expect_load_error("{\"oneOf\":[]}", ERR_CONFIG, "non-empty");
    expect_load_error("{\"items\":5}", ERR_CONFIG, "object or a boolean");
    expect_load_error("{\"$id\":\"urn:x:other\"}", ERR_CONFIG, "does not name this file");
    expect_load_error("{\"type\":\"string\",\"type\":\"integer\"}", ERR_CONFIG, "duplicate");
    expect_load_error("[1]", ERR_CONFIG, "top level");
    err_t e = {0};
    assert_null(schema_set_load("/nonexistent/schemas", &e));
    assert_int_equal(e.code, ERR_IO);
    tmpdir t;
    tmp_make(&t);
    assert_null(schema_set_load(t.path, &e));
    assert_int_equal(e.code, ERR_CONFIG);
    tmp_remove(&t);
}

/* Loads one schema and validates a JSON text; returns rc and fills e. */
static int check(const char *schema_text, const char *doc_text, err_t *e)
{
    tmpdir t;
    tmp_make(&t);
    tmp_write(&t, "t.schema.json", schema_text);
    schema_set *s = schema_set_load(t.path, e);
    tmp_remove(&t);
    if (!s)
        fail_msg("load: %s", e->msg);
    json_error_t je;
    json_t *doc = json_loads(doc_text, JSON_DECODE_ANY, &je);
    assert_non_null(doc);
    *e = (err_t){0};
    int rc = schema_validate(schema_get(s, "t"), doc, e);
    json_decref(doc);
    schema_set_free(s);
    return rc;
}

static void expect_pass(const char *sch, const char *doc)
{
    err_t e = {0};
    if (check(sch, doc, &e) != 0)
        fail_msg("%s on %s: %s", sch, doc, e.msg);
}

static void expect_fail(const char *sch, const char *doc, const char *needle)
{
    err_t e = {0};
    int rc = check(sch, doc, &e);
    if (rc != ERR_INVAL || !strstr(e.msg, needle))
        fail_msg("%s on %s: wanted '%s', got rc=%d '%s'", sch, doc, needle, rc, e.msg);
}

static void test_validator_rules(void **state)
{
    (void)state;
    const char *len = "{\"type\":\"string\",\"minLength\":2,\"maxLength\":3}";
    expect_pass(len, "\"\\u00e9\\u00e9\\u00e9\""); /* 3 code points, 6 bytes */
    expect_fail(len, "\"\\u00e9\"", "$: must be at least 2 characters");
    expect_fail(len, "\"abcd\"", "at most 3 characters");
    expect_pass("{\"type\":[\"string\",\"null\"]}", "null");
    expect_fail("{\"type\":[\"string\",\"null\"]}", "1", "$: must be string or null, not integer");
    expect_pass("{\"type\":\"number\",\"minimum\":0.5}", "1");
    expect_fail("{\"type\":\"integer\"}", "1.0", "must be integer, not number");
    expect_fail("{\"maximum\":10}", "10.5", "must be at most 10");
    expect_pass("{\"format\":\"uuid\"}", "\"A0B1C2D3-E4F5-4A6B-8C7D-9E0F1A2B3C4D\"");
    expect_fail("{\"format\":\"uuid\"}", "\"a0b1c2d3-e4f5-4a6b-8c7d-9e0f1a2b3c4\"", "UUID");
    expect_fail("{\"format\":\"uuid\"}", "\"a0b1c2d3e-4f5-4a6b-8c7d-9e0f1a2b3c4d\"", "UUID");
    expect_fail("{\"const\":{\"a\":1}}", "{\"a\":2}", "$: must be {\"a\":1}");
    expect_fail("{\"items\":{\"enum\":[1,\"x\",null]}}", "[1,\"y\"]",
                "$[1]: must be one of 1, x, null");
    expect_fail("{\"minItems\":1}", "[]", "at least 1 items");
    expect_fail("{\"maxProperties\":1}", "{\"a\":1,\"b\":2}", "at most 1 properties");
    const char *one = "{\"oneOf\":[{\"type\":\"integer\"},{\"minimum\":0}]}";
    expect_pass(one, "-1");
    expect_fail(one, "1", "more than one");
    expect_fail("{\"not\":{\"type\":\"null\"}}", "null", "not allowed");
    expect_fail("{\"allOf\":[{\"required\":[\"a\"]},{\"required\":[\"b\"]}]}", "{\"a\":1}",
                "$.b: is required");
    const char *cond = "{\"if\":{\"properties\":{\"k\":{\"const\":1}}},"
                       "\"then\":{\"required\":[\"x\"]},\"else\":{\"required\":[\"y\"]}}";
    expect_fail(cond, "{\"k\":1}", "$.x: is required");
    expect_fail(cond, "{\"k\":2}", "$.y: is required");
    expect_fail("{\"additionalProperties\":{\"type\":\"string\"}}", "{\"a\":{}}",
                "$.a: must be string, not object");
    expect_fail("{\"properties\":{\"a\":false}}", "{\"a\":1}", "$.a: is not allowed");
    /* A $ref cycle that consumes no input ends in an error, not a stack overflow. */
    expect_fail("{\"$defs\":{\"a\":{\"$ref\":\"#/$defs/a\"}},\"$ref\":\"#/$defs/a\"}", "1",
                "recursion");
    const char *tree = "{\"$defs\":{\"n\":{\"type\":\"object\",\"properties\":{\"c\":"
                       "{\"$ref\":\"#/$defs/n\"}},\"additionalProperties\":false}},"
                       "\"$ref\":\"#/$defs/n\"}";
    expect_pass(tree, "{\"c\":{\"c\":{}}}");
    expect_fail(tree, "{\"c\":{\"c\":{\"d\":1}}}", "$.c.c.d: is not an allowed property");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_job_and_result_has_a_schema),
        cmocka_unit_test(test_examples_round_trip_and_validate),
        cmocka_unit_test(test_load_refuses_what_it_cannot_check),
        cmocka_unit_test(test_validator_rules),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
