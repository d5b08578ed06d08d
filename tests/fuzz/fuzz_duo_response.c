/* fuzz_duo_response.c - libFuzzer harness for duo_response_parse.
 *
 * Input layout: byte 0 picks the HTTP status (values < 0xF0 index a table of the statuses
 * Duo really sends; 0xF0.. take bytes 1-2 as a raw status), the rest is the body. Bit 0
 * of byte 0 also chooses whether the caller asks for the outputs, and an empty body is
 * passed as NULL. Invariants: success only for HTTP 200 with both outputs filled
 * (metadata optional); a failure is ERR_DUO with a class, a reason and a stable code,
 * and leaves no output behind. */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <jansson.h>

#include "duo.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Names the broken invariant on stderr, then traps so libFuzzer saves the input. */
static void broken(const char *what, int line)
{
    fprintf(stderr, "%s:%d: invariant broken: %s\n", __FILE__, line, what);
    __builtin_trap();
}
#define CHECK(cond) ((cond) ? (void)0 : broken(#cond, __LINE__))

static const long statuses[] = {200, 200, 200, 200, 400, 401, 403, 404, 405,
                                429, 500, 502, 503, 504, 0,   -1,  201, 299};

/* Splits the input into status and body; returns how many bytes the status took. */
static size_t pick_status(const uint8_t *data, size_t size, long *status)
{
    if (size == 0) {
        *status = 200;
        return 0;
    }
    if (data[0] < 0xF0 || size < 3) {
        *status = statuses[data[0] % (sizeof statuses / sizeof statuses[0])];
        return 1;
    }
    *status = (long)((data[1] << 8) | data[2]);
    return 3;
}

/* A Duo-supplied message may be empty (Duo sent ""); ours never is. */
static void check_error(int rc, const duo_error *err)
{
    CHECK(rc == ERR_DUO);
    CHECK(err->fail != DUO_FAIL_NONE && err->cls != DUO_CLASS_NONE);
    CHECK(memchr(err->message, '\0', sizeof err->message) != NULL);
    CHECK(err->message[0] != '\0' || err->fail == DUO_FAIL_HTTP);
    CHECK(memchr(err->detail, '\0', sizeof err->detail) != NULL);
    const char *code = duo_error_code(err);
    CHECK(code && strncmp(code, "duo_", 4) == 0 && strcmp(code, "duo_ok") != 0);
    CHECK(duo_error_class_name(err->cls) != NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    long status;
    size_t skip = pick_status(data, size, &status);
    const char *body = size > skip ? (const char *)data + skip : NULL;
    size_t len = size - skip;
    int want_outputs = size == 0 || (data[0] & 1) == 0;
    json_t *response = NULL, *metadata = NULL;
    duo_error err;
    memset(&err, 0, sizeof err);
    int rc = want_outputs ? duo_response_parse(status, body, len, &response, &metadata, &err)
                          : duo_response_parse(status, body, len, NULL, NULL, &err);
    if (rc == 0) {
        CHECK(status == 200 && err.fail == DUO_FAIL_NONE);
        CHECK(!want_outputs || response != NULL);
    } else {
        check_error(rc, &err);
        CHECK(response == NULL && metadata == NULL);
    }
    json_decref(response);
    json_decref(metadata);
    /* The same input without an error struct must give the same verdict. */
    CHECK(duo_response_parse(status, body, len, NULL, NULL, NULL) == rc);
    return 0;
}
