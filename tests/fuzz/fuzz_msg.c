/* fuzz_msg.c - libFuzzer harness for the wire codec and the schema validator.
 *
 * Every input goes through msg_decode; a decoded object is validated against every
 * schema in schemas/ and must survive msg_encode -> msg_decode unchanged (json_equal).
 * Invariant checked: no input crashes, leaks or trips UBSan, and a decoded value always
 * round-trips. A broken invariant calls __builtin_trap() so libFuzzer saves a reproducer.
 * The schema set is loaded once (LLVMFuzzerInitialize) from $DUO_SOURCE_DIR/schemas or,
 * failing that, the source tree compiled in as FUZZ_SOURCE_DIR. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "msg.h"
#include "schema.h"

#ifndef FUZZ_SOURCE_DIR
#define FUZZ_SOURCE_DIR "."
#endif

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Names the broken invariant on stderr, then traps so libFuzzer saves the input. */
static void broken(const char *what, int line)
{
    fprintf(stderr, "%s:%d: invariant broken: %s\n", __FILE__, line, what);
    __builtin_trap();
}
#define CHECK(cond) ((cond) ? (void)0 : broken(#cond, __LINE__))

/* The harness's only state: read-only after LLVMFuzzerInitialize, freed at exit by the
 * OS (libFuzzer has no teardown hook). */
static schema_set *schemas;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    const char *src = getenv("DUO_SOURCE_DIR");
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/schemas", src && *src ? src : FUZZ_SOURCE_DIR);
    err_t e = {0};
    schemas = schema_set_load(dir, &e);
    if (!schemas || schema_set_count(schemas) == 0) {
        /* Fuzzing without schemas would silently skip half the harness. */
        fprintf(stderr, "fuzz_msg: cannot load schemas from %s: %s\n", dir, e.msg);
        abort();
    }
    return 0;
}

static void validate_all(const json_t *doc)
{
    size_t n = schema_set_count(schemas);
    for (size_t i = 0; i < n; i++) {
        err_t e = {0};
        int rc = schema_validate(schema_set_at(schemas, i), doc, &e);
        /* A rejection must be ERR_INVAL with a reason. */
        CHECK(rc == 0 || (rc == ERR_INVAL && e.msg[0] != '\0'));
    }
    /* schema_get with a fuzzer-chosen name (the runtime passes the AMQP type, which
     * may name a job schema by its type alone, e.g. "auth"). */
    const char *type = json_string_value(json_object_get(doc, "job_type"));
    if (type) {
        const schema *s = schema_get(schemas, type);
        err_t e = {0};
        if (s)
            (void)schema_validate(s, doc, &e);
    }
}

/* decode -> encode -> decode must give an equal value. The second decode gets a larger
 * byte cap: float32 inputs grow to float64 on re-encoding. */
static void check_round_trip(const json_t *doc)
{
    void *buf = NULL;
    size_t len = 0;
    err_t e = {0};
    CHECK(msg_encode(doc, &buf, &len, &e) == 0);
    msg_limits lim = {.max_bytes = 4 * MSG_DEFAULT_MAX_BYTES};
    json_t *again = NULL;
    int rc = msg_decode(buf, len, &lim, &again, &e);
    if (rc != 0)
        fprintf(stderr, "re-decoding failed: %s\n", e.msg);
    CHECK(rc == 0 && json_equal(doc, again));
    json_decref(again);
    free(buf);
}

/* Tight limits reach every limit check with short inputs. Whatever passes them must pass
 * the defaults too, with the same value (doc is the default decode, or NULL). */
static void check_tight_limits(const uint8_t *data, size_t size, const json_t *doc)
{
    msg_limits tight = {
        .max_bytes = size / 2 + 1, .max_depth = 3, .max_string = 12, .max_items = 5};
    json_t *small = NULL;
    err_t e = {0};
    int rc = msg_decode(data, size, &tight, &small, &e);
    CHECK(rc == 0 || (small == NULL && e.msg[0] != '\0'));
    if (rc == 0)
        CHECK(doc != NULL && json_equal(doc, small));
    json_decref(small);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_t *doc = NULL;
    err_t e = {0};
    int rc = msg_decode(data, size, NULL, &doc, &e);
    check_tight_limits(data, size, doc);
    if (rc != 0) {
        /* A failure leaves nothing behind and says why. */
        CHECK(doc == NULL && (rc == ERR_INVAL || rc == ERR_NOMEM) && e.msg[0] != '\0');
        return 0;
    }
    CHECK(json_is_object(doc));
    validate_all(doc);
    check_round_trip(doc);
    json_decref(doc);
    return 0;
}
