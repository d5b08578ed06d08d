/* msg.h - the wire codec: msgpack bodies <-> jansson values.
 *
 * Every job and result body is a msgpack map with string keys, mapped 1:1 onto a JSON
 * object so that schemas/ can describe it. Decoding is strict and bounded: whatever the
 * bytes, msg_decode either returns a well-formed object within the limits or ERR_INVAL
 * with a message naming the offending path ("$.pushinfo.Domain: ..."). It never crashes
 * and never recurses deeper than lim->max_depth. This is the only module that includes
 * <msgpack.h>. */
#ifndef DUO_MSG_H
#define DUO_MSG_H

#include <stddef.h>

#include <jansson.h>

#include "err.h"

/* Bounds applied while decoding. A zero field means "use the default". */
typedef struct msg_limits {
    size_t max_bytes;  /* whole body; default 65536 (MAX_MESSAGE_BYTES) */
    size_t max_depth;  /* nesting of maps/arrays, top map = 1; default 16, at most 64 */
    size_t max_string; /* bytes per string or key; default 8192 */
    size_t max_items;  /* entries per map or array; default 1024 */
} msg_limits;

#define MSG_DEFAULT_MAX_BYTES 65536
#define MSG_DEFAULT_MAX_DEPTH 16
#define MSG_DEFAULT_MAX_STRING 8192
#define MSG_DEFAULT_MAX_ITEMS 1024

/* Decodes buf[0..len) into a new JSON object. Accepted: exactly one map at the top with
 * nothing after it; keys are unique, valid UTF-8 strings without NUL; strings are valid
 * UTF-8 without NUL; integers fit int64; floats become reals; nil, booleans, arrays, maps.
 * Rejected with ERR_INVAL: everything else (bin, ext, truncation, trailing bytes, limits).
 * lim may be NULL (defaults). On success *out is a new reference owned by the caller
 * (json_decref); on failure *out is NULL. ERR_NOMEM if jansson cannot allocate. */
int msg_decode(const void *buf, size_t len, const msg_limits *lim, json_t **out, err_t *e);

/* Encodes a JSON object (the top level must be an object) into msgpack: objects -> maps,
 * arrays, strings -> str, integers -> int, reals -> float64, true/false/null. On success
 * *out is a malloc'ed buffer of *len bytes owned by the caller (free()). On failure *out
 * is NULL and nothing is left allocated. v is borrowed. */
int msg_encode(const json_t *v, void **out, size_t *len, err_t *e);

#endif
