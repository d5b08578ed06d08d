/* schema.h - a small JSON Schema (draft 2020-12 subset) validator for message bodies.
 *
 * Supported keywords: type, properties, required, additionalProperties (bool or schema),
 * minProperties/maxProperties, enum, const, minLength/maxLength (UTF-8 code points),
 * format "uuid", minimum/maximum, items, minItems/maxItems, allOf/anyOf/oneOf/not,
 * if/then/else, $ref to "#/$defs/<name>" in the same file, boolean schemas, and the
 * annotations $schema, $id, $defs, $comment, title, description, default, examples.
 * Any other keyword (pattern included) or an unknown format is a load error, so a schema
 * can never promise more than is checked. Defaults are annotations: nothing is filled in. */
#ifndef DUO_SCHEMA_H
#define DUO_SCHEMA_H

#include <stddef.h>

#include <jansson.h>

#include "err.h"

typedef struct schema schema;
typedef struct schema_set schema_set;

/* Loads every "<name>.schema.json" in dir, keyed by <name> (e.g. "auth.job"); a "$id", if
 * present, must end in <name>. Returns a new set owned by the caller (schema_set_free), or
 * NULL with e set: ERR_IO (unreadable dir or file), ERR_CONFIG (bad JSON, unknown keyword,
 * unresolvable $ref, no schema found), ERR_NOMEM. */
schema_set *schema_set_load(const char *dir, err_t *e);

/* Frees the set and every schema in it; accepts NULL. */
void schema_set_free(schema_set *s);

/* The schema called name, or NULL. A job type alone names its job schema: "auth" finds
 * "auth.job" when no schema is called "auth". Borrowed: valid until schema_set_free. */
const schema *schema_get(const schema_set *s, const char *name);

/* Number of schemas in the set and the i-th one (sorted by name; borrowed). */
size_t schema_set_count(const schema_set *s);
const schema *schema_set_at(const schema_set *s, size_t i);

/* The schema's name (borrowed, lives as long as the set). */
const char *schema_name(const schema *s);

/* Validates doc (borrowed) against s. Returns 0, or ERR_INVAL with e->msg holding the
 * first failing path and the reason, e.g. "$.factor: must be one of auto, push". */
int schema_validate(const schema *s, const json_t *doc, err_t *e);

#endif
