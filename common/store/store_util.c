/* store_util.c - the store layer's small helpers, once (store_int.h, and store_is_uuid of
 * store.h): reading result cells, building parameter values, checking ids.
 *
 * Invariant: a helper never makes SQL text out of input; the text[] literal it builds is
 * a parameter value, and every element in it is quoted and escaped. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store.h"
#include "store_int.h"

int store_is_uuid(const char *s)
{
    if (!s || strlen(s) != 36)
        return 0;
    for (int i = 0; i < 36; i++) {
        char c = s[i];
        int dash = i == 8 || i == 13 || i == 18 || i == 23;
        int hex = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
        if (dash ? c != '-' : !hex)
            return 0;
    }
    return 1;
}

int store_is_id(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || n > 18)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (s[i] < '0' || s[i] > '9')
            return 0;
    return 1;
}

int store_text_ok(const char *s, size_t max)
{
    size_t n = s ? strlen(s) : 0;
    return n >= 1 && n <= max;
}

void store_ref_params(const char *ref, const char *p[2])
{
    p[0] = store_is_uuid(ref) ? ref : NULL;
    p[1] = ref;
}

int store_ref_exec(store *s, const store_stmt *st, const char *ref, const char *what,
                   store_res **out, err_t *e)
{
    const char *p[2];
    store_ref_params(ref, p);
    int rc = store_exec(s, st, 2, p, out, e);
    if (rc == 0 && store_res_rows(*out) == 0) {
        store_res_free(*out);
        *out = NULL;
        rc = err_set(e, ERR_NOTFOUND, "no %s '%s'", what, ref);
    }
    return rc;
}

const char *store_col_opt(const store_res *r, int row, int col)
{
    return store_res_isnull(r, row, col) ? NULL : store_res_get(r, row, col);
}

int store_col_bool(const store_res *r, int row, int col)
{
    return !store_res_isnull(r, row, col) && strcmp(store_res_get(r, row, col), "t") == 0;
}

int64_t store_col_i64(const store_res *r, int row, int col)
{
    int64_t v = 0;
    return store_res_i64(r, row, col, &v) == 0 ? v : 0;
}

double store_col_f64(const store_res *r, int row, int col)
{
    if (store_res_isnull(r, row, col))
        return 0.0;
    const char *s = store_res_get(r, row, col);
    char *end = NULL;
    double v = strtod(s, &end);
    return end != s && *end == '\0' ? v : 0.0;
}

void store_i64_text(char buf[STORE_I64_LEN], int64_t v)
{
    snprintf(buf, STORE_I64_LEN, "%lld", (long long)v);
}

int store_exec_i64(store *s, const store_stmt *st, int n, const int64_t *v, store_res **out,
                   err_t *e)
{
    if (out)
        *out = NULL;
    if (n < 0 || n > STORE_I64_PARAMS)
        return err_set(e, ERR_INVAL, "%s: %d integer parameters", st->name, n);
    char text[STORE_I64_PARAMS][STORE_I64_LEN];
    const char *p[STORE_I64_PARAMS];
    for (int i = 0; i < n; i++) {
        store_i64_text(text[i], v[i]);
        p[i] = text[i];
    }
    return store_exec(s, st, n, p, out, e);
}

/* Appends one element, quoted and escaped; w has room (store_text_array sized it). */
static char *put_elem(char *w, const char *s)
{
    *w++ = '"';
    for (; *s; s++) {
        if (*s == '"' || *s == '\\')
            *w++ = '\\';
        *w++ = *s;
    }
    *w++ = '"';
    return w;
}

char *store_text_array(const char *const *v, size_t n)
{
    size_t cap = 3; /* braces and NUL */
    for (size_t i = 0; i < n; i++)
        cap += (v && v[i] ? 2 * strlen(v[i]) + 2 : 4) + 1; /* escaped + quotes, or NULL; comma */
    char *out = malloc(cap), *w = out;
    if (!out)
        return NULL;
    *w++ = '{';
    for (size_t i = 0; i < n; i++) {
        if (i)
            *w++ = ',';
        if (v && v[i]) {
            w = put_elem(w, v[i]);
        } else {
            memcpy(w, "NULL", 4);
            w += 4;
        }
    }
    *w++ = '}';
    *w = '\0';
    return out;
}
