/* duo_users_scan.h - reads a page of Duo's user list (GET /admin/v1/users?limit&offset)
 * without building the JSON tree of its ~235 KB body: one streaming pass (yajl) keeps
 * each user's user_id and username and the metadata's total_objects and next_offset.
 *
 * Invariant: the whole body is still validated as JSON (UTF-8 included) before anything
 * is returned, so a page is either complete or an error; bad input is a classified
 * error (duo_bad_response), never a crash or a partial page. */
#ifndef DUO_DUO_USERS_SCAN_H
#define DUO_DUO_USERS_SCAN_H

#include <jansson.h>
#include <stddef.h>

#include "duo.h"

/* Parses the answer to a user-list page with duo_response_parse()'s contract, except
 * that on success *response is an array holding, per user and in Duo's order, an object
 * with only "user_id" and "username" (strings), and *metadata (when present) an object
 * with only the integer-or-null members total_objects and next_offset. A user without
 * both strings (or with one of them holding a NUL), a response that is not an array of
 * objects, or non-integer metadata is ERR_DUO with DUO_FAIL_BAD_RESPONSE. Non-200
 * answers, FAIL envelopes, invalid JSON and oversize bodies are classified exactly as
 * duo_response_parse() does (it reads them). Either out pointer may be NULL; both are
 * new references owned by the caller. */
int duo_users_scan(long http_status, const char *body, size_t len, json_t **response,
                   json_t **metadata, duo_error *err);

/* (It is a duo_parse_fn: a caller fetching a page passes it to duo_call_parsed() or
 * duo_async_set_parser().) */

#endif
