/* store_int.h - helpers shared by the store's domain modules (common/store/store_*.c),
 * implemented once in store_util.c. Internal to the store layer: nothing outside
 * common/store includes it (its unit test aside).
 *
 * Invariant: everything here builds parameter values or reads result cells; no helper
 * ever turns input into SQL text (a text[] literal is a parameter value, sent apart from
 * the statement). */
#ifndef DUO_STORE_INT_H
#define DUO_STORE_INT_H

#include <stddef.h>
#include <stdint.h>

#include "store.h"

/* A timestamptz column as ISO 8601 UTC text, for views (to_char in the SELECT list). */
#define STORE_TS(col) "to_char(" col " AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')"

/* Addresses a stage s by "ref" (uuid or name): $1 = uuid or NULL, $2 = name; a uuid match
 * wins over a stage named like a uuid. Fill the parameters with store_ref_params(). */
#define STORE_REF_WHERE " WHERE s.uuid = $1::uuid OR s.name = $2"
#define STORE_REF_ORDER " ORDER BY (s.uuid = $1::uuid) IS TRUE DESC LIMIT 1"

/* The two parameters of STORE_REF_WHERE (borrowed from ref): a ref that is not a uuid
 * is passed as NULL to the uuid parameter, so PostgreSQL never sees a bad cast. */
void store_ref_params(const char *ref, const char *p[2]);

/* Runs st (a STORE_REF_WHERE statement) for ref; ERR_NOTFOUND ("no <what> '<ref>'")
 * when it answers no row. On success the caller owns *out (store_res_free()). */
int store_ref_exec(store *s, const store_stmt *st, const char *ref, const char *what,
                   store_res **out, err_t *e);

/* ---- result cells (all borrowed from r: valid until store_res_free(r)) ---- */

/* The cell's text, or NULL for SQL NULL. */
const char *store_col_opt(const store_res *r, int row, int col);

/* 1 for a boolean cell that is true; 0 for false and for SQL NULL. */
int store_col_bool(const store_res *r, int row, int col);

/* The cell as an integer; 0 for SQL NULL or text that is not one. */
int64_t store_col_i64(const store_res *r, int row, int col);

/* The cell as a double; 0.0 for SQL NULL or text that is not one. */
double store_col_f64(const store_res *r, int row, int col);

/* ---- parameter values ---- */

/* Large enough for any int64_t in decimal, with its sign and NUL. */
#define STORE_I64_LEN 24

/* Writes v in decimal into buf (a bigint or int parameter). */
void store_i64_text(char buf[STORE_I64_LEN], int64_t v);

/* Most integer parameters store_exec_i64() takes. */
#define STORE_I64_PARAMS 4

/* store_exec() with n (<= STORE_I64_PARAMS) integer parameters, written in decimal;
 * ERR_INVAL for a larger n (nothing is sent). Same results and ownership as store_exec. */
int store_exec_i64(store *s, const store_stmt *st, int n, const int64_t *v, store_res **out,
                   err_t *e);

/* 1 when s is 1..max bytes long (NULL is not). */
int store_text_ok(const char *s, size_t max);

/* 1 when s is a positive decimal integer of at most 18 digits (fits a bigint). */
int store_is_id(const char *s);

/* The PostgreSQL text[] literal of v[0..n), e.g. {"a","b\"c",NULL}: every element quoted,
 * '"' and '\' escaped, a NULL element (or every element, when v is NULL) as NULL. A
 * fresh string the caller frees (free()), or NULL when out of memory. */
char *store_text_array(const char *const *v, size_t n);

#endif
