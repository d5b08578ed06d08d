/* schema.c - loads and applies the JSON Schemas in schemas/.
 *
 * Invariant: a schema that loaded uses only keywords this file checks, with values of the
 * right shape and every $ref resolved, so validation never meets a keyword it would have to
 * ignore. Validation is read-only, bounded by MAX_EVAL_DEPTH (a $ref cycle ends in an error,
 * not a stack overflow) and reports the first failure with its JSON path. */
#include "schema.h"

#include <ctype.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { MAX_EVAL_DEPTH = 128, PATH_MAX_LEN = 200 };

struct schema {
    char *name;
    json_t *root;
};

struct schema_set {
    schema *items;
    size_t n;
};

/* ---- load-time checks ---- */

static const char *const annotations[] = {"$schema",     "$id",     "$comment", "title",
                                          "description", "default", "examples", NULL};
static const char *const count_words[] = {"minLength",     "maxLength",     "minItems", "maxItems",
                                          "minProperties", "maxProperties", NULL};
static const char *const schema_words[] = {"items", "not", "if", "then", "else", NULL};
static const char *const list_words[] = {"allOf", "anyOf", "oneOf", NULL};
static const char *const type_names[] = {"string", "integer", "number", "boolean",
                                         "object", "array",   "null",   NULL};

static int in_list(const char *const *list, const char *s)
{
    for (; *list; list++)
        if (strcmp(*list, s) == 0)
            return 1;
    return 0;
}

static int check_node(const json_t *root, const json_t *node, const char *where, int depth,
                      err_t *e);

static int bad(err_t *e, const char *where, const char *key, const char *why)
{
    return err_set(e, ERR_CONFIG, "%s.%s: %s", where, key, why);
}

/* Recurses into a child schema with "where" extended by the child's location. */
static int check_child(const json_t *root, const json_t *node, const char *where, const char *step,
                       int depth, err_t *e)
{
    char sub[512];
    snprintf(sub, sizeof sub, "%s.%s", where, step);
    return check_node(root, node, sub, depth + 1, e);
}

static int check_type(const json_t *v, const char *where, err_t *e)
{
    if (json_is_string(v))
        return in_list(type_names, json_string_value(v)) ? 0
                                                         : bad(e, where, "type", "unknown type");
    if (!json_is_array(v) || json_array_size(v) == 0)
        return bad(e, where, "type", "must be a type name or a non-empty array of them");
    size_t i;
    json_t *t;
    json_array_foreach(v, i, t)
    {
        if (!json_is_string(t) || !in_list(type_names, json_string_value(t)))
            return bad(e, where, "type", "unknown type in the array");
    }
    return 0;
}

static int check_ref(const json_t *root, const json_t *v, const char *where, err_t *e)
{
    const char *ref = json_string_value(v);
    if (!ref || strncmp(ref, "#/$defs/", 8) != 0)
        return bad(e, where, "$ref", "only \"#/$defs/<name>\" references are supported");
    if (!json_object_get(json_object_get(root, "$defs"), ref + 8))
        return bad(e, where, "$ref", "points to a missing definition");
    return 0;
}

static int check_required(const json_t *v, const char *where, err_t *e)
{
    size_t i;
    json_t *s;
    if (!json_is_array(v))
        return bad(e, where, "required", "must be an array of strings");
    json_array_foreach(v, i, s)
    {
        if (!json_is_string(s))
            return bad(e, where, "required", "must be an array of strings");
    }
    return 0;
}

/* Keywords whose value is an object of named sub-schemas: properties, $defs. */
static int check_named(const json_t *root, const json_t *v, const char *where, const char *key,
                       int depth, err_t *e)
{
    if (!json_is_object(v))
        return bad(e, where, key, "must be an object of schemas");
    const char *name;
    json_t *sub;
    json_object_foreach((json_t *)v, name, sub)
    {
        char step[256];
        snprintf(step, sizeof step, "%s.%s", key, name);
        int rc = check_child(root, sub, where, step, depth, e);
        if (rc < 0)
            return rc;
    }
    return 0;
}

static int check_list(const json_t *root, const json_t *v, const char *where, const char *key,
                      int depth, err_t *e)
{
    if (!json_is_array(v) || json_array_size(v) == 0)
        return bad(e, where, key, "must be a non-empty array of schemas");
    size_t i;
    json_t *sub;
    json_array_foreach(v, i, sub)
    {
        char step[64];
        snprintf(step, sizeof step, "%s[%zu]", key, i);
        int rc = check_child(root, sub, where, step, depth, e);
        if (rc < 0)
            return rc;
    }
    return 0;
}

/* Checks one keyword's value; unknown keywords are refused. */
static int check_keyword(const json_t *root, const char *key, const json_t *v, const char *where,
                         int depth, err_t *e)
{
    if (in_list(annotations, key) || strcmp(key, "const") == 0)
        return 0;
    if (in_list(count_words, key))
        return json_is_integer(v) && json_integer_value(v) >= 0
                   ? 0
                   : bad(e, where, key, "must be a non-negative integer");
    if (strcmp(key, "minimum") == 0 || strcmp(key, "maximum") == 0)
        return json_is_number(v) ? 0 : bad(e, where, key, "must be a number");
    if (strcmp(key, "type") == 0)
        return check_type(v, where, e);
    if (strcmp(key, "$ref") == 0)
        return check_ref(root, v, where, e);
    if (strcmp(key, "required") == 0)
        return check_required(v, where, e);
    if (strcmp(key, "enum") == 0)
        return json_is_array(v) && json_array_size(v) > 0
                   ? 0
                   : bad(e, where, key, "must be a non-empty array");
    if (strcmp(key, "format") == 0)
        return json_is_string(v) && strcmp(json_string_value(v), "uuid") == 0
                   ? 0
                   : bad(e, where, key, "only the \"uuid\" format is supported");
    if (strcmp(key, "properties") == 0 || strcmp(key, "$defs") == 0)
        return check_named(root, v, where, key, depth, e);
    if (in_list(list_words, key))
        return check_list(root, v, where, key, depth, e);
    if (in_list(schema_words, key) || strcmp(key, "additionalProperties") == 0)
        return check_child(root, v, where, key, depth, e);
    return bad(e, where, key, "unknown or unsupported keyword");
}

static int check_node(const json_t *root, const json_t *node, const char *where, int depth,
                      err_t *e)
{
    if (depth > MAX_EVAL_DEPTH)
        return err_set(e, ERR_CONFIG, "%s: schema nested too deeply", where);
    if (json_is_boolean(node))
        return 0;
    if (!json_is_object(node))
        return err_set(e, ERR_CONFIG, "%s: a schema must be an object or a boolean", where);
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)node, key, v)
    {
        int rc = check_keyword(root, key, v, where, depth, e);
        if (rc < 0)
            return rc;
    }
    return 0;
}

/* ---- validation ---- */

/* Validation state: the instance path of the value being checked. */
typedef struct vctx {
    const json_t *root;
    char path[PATH_MAX_LEN + 8];
    size_t plen;
} vctx;

static int eval(vctx *c, const json_t *sch, const json_t *v, int depth, err_t *e);

/* Appends a step to the path; past PATH_MAX_LEN the path ends in "..." instead. */
static size_t path_append(vctx *c, const char *step, int n)
{
    size_t saved = c->plen;
    if (n < 0 || c->plen + (size_t)n > PATH_MAX_LEN) {
        snprintf(c->path + c->plen, sizeof c->path - c->plen, "...");
        c->plen = strlen(c->path);
        return saved;
    }
    memcpy(c->path + c->plen, step, (size_t)n + 1);
    c->plen += (size_t)n;
    return saved;
}

static size_t path_push_key(vctx *c, const char *key)
{
    char step[PATH_MAX_LEN + 2];
    return path_append(c, step, snprintf(step, sizeof step, ".%s", key));
}

static size_t path_push_index(vctx *c, size_t i)
{
    char step[32];
    return path_append(c, step, snprintf(step, sizeof step, "[%zu]", i));
}

static void path_pop(vctx *c, size_t saved)
{
    c->plen = saved;
    c->path[saved] = '\0';
}

static int fail(vctx *c, err_t *e, const char *why)
{
    return err_set(e, ERR_INVAL, "%s: %s", c->path, why);
}

static const char *kind_of(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        return "object";
    case JSON_ARRAY:
        return "array";
    case JSON_STRING:
        return "string";
    case JSON_INTEGER:
        return "integer";
    case JSON_REAL:
        return "number";
    case JSON_TRUE:
    case JSON_FALSE:
        return "boolean";
    default:
        return "null";
    }
}

static int type_matches(const char *t, const json_t *v)
{
    const char *k = kind_of(v);
    return strcmp(t, k) == 0 || (strcmp(t, "number") == 0 && strcmp(k, "integer") == 0);
}

static int eval_type(vctx *c, const json_t *t, const json_t *v, err_t *e)
{
    char want[128] = "";
    size_t off = 0;
    if (json_is_string(t)) {
        if (type_matches(json_string_value(t), v))
            return 0;
        snprintf(want, sizeof want, "%s", json_string_value(t));
    } else {
        size_t i;
        json_t *x;
        json_array_foreach(t, i, x)
        {
            if (type_matches(json_string_value(x), v))
                return 0;
            int n = snprintf(want + off, sizeof want - off, "%s%s", i ? " or " : "",
                             json_string_value(x));
            if (n > 0 && off + (size_t)n < sizeof want)
                off += (size_t)n;
        }
    }
    return err_set(e, ERR_INVAL, "%s: must be %s, not %s", c->path, want, kind_of(v));
}

/* Writes a value for a message: strings bare, anything else as compact JSON. */
static void show(const json_t *v, char *out, size_t cap)
{
    if (json_is_string(v)) {
        snprintf(out, cap, "%s", json_string_value(v));
        return;
    }
    char *s = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
    snprintf(out, cap, "%s", s ? s : "?");
    free(s);
}

static int eval_enum(vctx *c, const json_t *list, const json_t *v, err_t *e)
{
    size_t i;
    json_t *x;
    char all[300] = "";
    size_t off = 0;
    json_array_foreach(list, i, x)
    {
        if (json_equal(x, v))
            return 0;
        char one[64];
        show(x, one, sizeof one);
        int n = snprintf(all + off, sizeof all - off, "%s%s", i ? ", " : "", one);
        if (n > 0 && off + (size_t)n < sizeof all)
            off += (size_t)n;
    }
    return err_set(e, ERR_INVAL, "%s: must be one of %s", c->path, all);
}

static size_t utf8_len(const char *s, size_t n)
{
    size_t cp = 0;
    for (size_t i = 0; i < n; i++)
        if (((unsigned char)s[i] & 0xc0) != 0x80)
            cp++;
    return cp;
}

static int is_uuid(const char *s, size_t n)
{
    if (n != 36)
        return 0;
    for (size_t i = 0; i < n; i++) {
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (s[i] != '-')
                return 0;
        } else if (!isxdigit((unsigned char)s[i])) {
            return 0;
        }
    }
    return 1;
}

static const json_t *kw(const json_t *sch, const char *k)
{
    return json_object_get(sch, k);
}

static int eval_string(vctx *c, const json_t *sch, const json_t *v, err_t *e)
{
    const char *s = json_string_value(v);
    size_t n = json_string_length(v);
    size_t cp = utf8_len(s, n);
    const json_t *k;
    if ((k = kw(sch, "minLength")) && cp < (size_t)json_integer_value(k))
        return err_set(e, ERR_INVAL, "%s: must be at least %lld characters long", c->path,
                       (long long)json_integer_value(k));
    if ((k = kw(sch, "maxLength")) && cp > (size_t)json_integer_value(k))
        return err_set(e, ERR_INVAL, "%s: must be at most %lld characters long", c->path,
                       (long long)json_integer_value(k));
    if (kw(sch, "format") && !is_uuid(s, n))
        return fail(c, e, "must be a UUID (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)");
    return 0;
}

static int eval_number(vctx *c, const json_t *sch, const json_t *v, err_t *e)
{
    double d = json_number_value(v);
    const json_t *k;
    char lim[64];
    if ((k = kw(sch, "minimum")) && d < json_number_value(k)) {
        show(k, lim, sizeof lim);
        return err_set(e, ERR_INVAL, "%s: must be at least %s", c->path, lim);
    }
    if ((k = kw(sch, "maximum")) && d > json_number_value(k)) {
        show(k, lim, sizeof lim);
        return err_set(e, ERR_INVAL, "%s: must be at most %s", c->path, lim);
    }
    return 0;
}

static int count_bounds(vctx *c, const json_t *sch, const char *lo, const char *hi, size_t n,
                        const char *what, err_t *e)
{
    const json_t *k;
    if ((k = kw(sch, lo)) && n < (size_t)json_integer_value(k))
        return err_set(e, ERR_INVAL, "%s: must have at least %lld %s", c->path,
                       (long long)json_integer_value(k), what);
    if ((k = kw(sch, hi)) && n > (size_t)json_integer_value(k))
        return err_set(e, ERR_INVAL, "%s: must have at most %lld %s", c->path,
                       (long long)json_integer_value(k), what);
    return 0;
}

static int eval_object(vctx *c, const json_t *sch, const json_t *v, int depth, err_t *e)
{
    const json_t *req = kw(sch, "required"), *props = kw(sch, "properties");
    const json_t *extra = kw(sch, "additionalProperties");
    size_t i;
    json_t *r;
    json_array_foreach(req, i, r)
    {
        if (!json_object_get(v, json_string_value(r))) {
            path_push_key(c, json_string_value(r));
            return fail(c, e, "is required");
        }
    }
    const char *key;
    json_t *val;
    json_object_foreach((json_t *)v, key, val)
    {
        const json_t *sub = json_object_get(props, key);
        if (!sub && !extra)
            continue;
        size_t saved = path_push_key(c, key);
        if (!sub && json_is_false(extra))
            return fail(c, e, "is not an allowed property");
        int rc = eval(c, sub ? sub : extra, val, depth + 1, e);
        if (rc < 0)
            return rc;
        path_pop(c, saved);
    }
    return count_bounds(c, sch, "minProperties", "maxProperties", json_object_size(v), "properties",
                        e);
}

static int eval_array(vctx *c, const json_t *sch, const json_t *v, int depth, err_t *e)
{
    int rc = count_bounds(c, sch, "minItems", "maxItems", json_array_size(v), "items", e);
    if (rc < 0)
        return rc;
    const json_t *items = kw(sch, "items");
    if (!items)
        return 0;
    size_t i;
    json_t *x;
    json_array_foreach(v, i, x)
    {
        size_t saved = path_push_index(c, i);
        rc = eval(c, items, x, depth + 1, e);
        if (rc < 0)
            return rc;
        path_pop(c, saved);
    }
    return 0;
}

/* Runs sch on v without touching the caller's path; the branch's error goes to *be. */
static int try_branch(vctx *c, const json_t *sch, const json_t *v, int depth, err_t *be)
{
    vctx sub = *c;
    *be = (err_t){0};
    return eval(&sub, sch, v, depth + 1, be);
}

/* anyOf/oneOf: counts matching branches; lists each branch's failure when none matches. */
static int eval_alternatives(vctx *c, const json_t *list, int exactly_one, const json_t *v,
                             int depth, err_t *e)
{
    char why[400] = "";
    size_t off = 0, i, matched = 0;
    json_t *sub;
    json_array_foreach(list, i, sub)
    {
        err_t be;
        int rc = try_branch(c, sub, v, depth, &be);
        if (rc == 0) {
            matched++;
            continue;
        }
        if (rc != ERR_INVAL)
            return err_set(e, rc, "%s", be.msg);
        int n = snprintf(why + off, sizeof why - off, "%s(%zu) %s", off ? "; " : "", i + 1, be.msg);
        if (n > 0 && off + (size_t)n < sizeof why)
            off += (size_t)n;
    }
    if (matched == 0)
        return err_set(e, ERR_INVAL, "%s: must match one of the allowed forms: %s", c->path, why);
    if (exactly_one && matched > 1)
        return fail(c, e, "matches more than one of the allowed forms");
    return 0;
}

static int eval_combinators(vctx *c, const json_t *sch, const json_t *v, int depth, err_t *e)
{
    const json_t *k;
    size_t i;
    json_t *sub;
    int rc;
    json_array_foreach(kw(sch, "allOf"), i, sub)
    {
        if ((rc = eval(c, sub, v, depth + 1, e)) < 0)
            return rc;
    }
    if ((k = kw(sch, "anyOf")) && (rc = eval_alternatives(c, k, 0, v, depth, e)) < 0)
        return rc;
    if ((k = kw(sch, "oneOf")) && (rc = eval_alternatives(c, k, 1, v, depth, e)) < 0)
        return rc;
    err_t be;
    if ((k = kw(sch, "not")) && try_branch(c, k, v, depth, &be) == 0)
        return fail(c, e, "matches a form that is not allowed");
    if ((k = kw(sch, "if"))) {
        const json_t *next =
            try_branch(c, k, v, depth, &be) == 0 ? kw(sch, "then") : kw(sch, "else");
        if (next && (rc = eval(c, next, v, depth + 1, e)) < 0)
            return rc;
    }
    return 0;
}

static int eval(vctx *c, const json_t *sch, const json_t *v, int depth, err_t *e)
{
    if (depth > MAX_EVAL_DEPTH)
        return fail(c, e, "schema recursion too deep (a $ref cycle?)");
    if (json_is_boolean(sch))
        return json_is_true(sch) ? 0 : fail(c, e, "is not allowed");
    const json_t *k;
    int rc;
    if ((k = kw(sch, "$ref"))) {
        const json_t *target = json_object_get(kw(c->root, "$defs"), json_string_value(k) + 8);
        if ((rc = eval(c, target, v, depth + 1, e)) < 0)
            return rc;
    }
    if ((k = kw(sch, "type")) && (rc = eval_type(c, k, v, e)) < 0)
        return rc;
    if ((k = kw(sch, "const")) && !json_equal(k, v)) {
        char want[128];
        show(k, want, sizeof want);
        return err_set(e, ERR_INVAL, "%s: must be %s", c->path, want);
    }
    if ((k = kw(sch, "enum")) && (rc = eval_enum(c, k, v, e)) < 0)
        return rc;
    rc = 0;
    if (json_is_string(v))
        rc = eval_string(c, sch, v, e);
    else if (json_is_number(v))
        rc = eval_number(c, sch, v, e);
    else if (json_is_object(v))
        rc = eval_object(c, sch, v, depth, e);
    else if (json_is_array(v))
        rc = eval_array(c, sch, v, depth, e);
    if (rc < 0)
        return rc;
    return eval_combinators(c, sch, v, depth, e);
}

int schema_validate(const schema *s, const json_t *doc, err_t *e)
{
    vctx c = {.root = s->root, .path = "$", .plen = 1};
    return eval(&c, s->root, doc, 0, e);
}

/* ---- the set ---- */

static int has_suffix(const char *s, const char *suf)
{
    size_t n = strlen(s), m = strlen(suf);
    return n > m && strcmp(s + n - m, suf) == 0;
}

/* "$id", when present, must name the file: its last segment is <name>[.schema.json]. */
static int check_id(const json_t *root, const char *name, err_t *e)
{
    const json_t *id = json_object_get(root, "$id");
    if (!id)
        return 0;
    const char *s = json_string_value(id);
    if (!s)
        return err_set(e, ERR_CONFIG, "%s: $id must be a string", name);
    const char *last = s;
    for (const char *p = s; *p; p++)
        if (*p == '/' || *p == ':')
            last = p + 1;
    size_t n = strlen(name);
    if (strncmp(last, name, n) != 0 || (last[n] && strcmp(last + n, ".schema.json") != 0))
        return err_set(e, ERR_CONFIG, "%s: $id \"%s\" does not name this file", name, s);
    return 0;
}

static int load_one(const char *dir, const char *file, schema *out, err_t *e)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    json_error_t je;
    json_t *root = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
    if (!root)
        return err_set(e, ERR_CONFIG, "%s:%d: %s", path, je.line, je.text);
    size_t n = strlen(file) - strlen(".schema.json");
    char *name = strndup(file, n);
    int rc = name ? 0 : err_set(e, ERR_NOMEM, "out of memory");
    if (rc == 0 && !json_is_object(root))
        rc = err_set(e, ERR_CONFIG, "%s: the top level must be an object", path);
    if (rc == 0)
        rc = check_id(root, name, e);
    if (rc == 0)
        rc = check_node(root, root, name, 0, e);
    if (rc < 0) {
        free(name);
        json_decref(root);
        return rc;
    }
    *out = (schema){.name = name, .root = root};
    return 0;
}

static int by_name(const void *a, const void *b)
{
    return strcmp(((const schema *)a)->name, ((const schema *)b)->name);
}

static int add_file(schema_set *s, size_t *cap, const char *dir, const char *file, err_t *e)
{
    if (s->n == *cap) {
        size_t ncap = *cap ? *cap * 2 : 16;
        schema *items = realloc(s->items, ncap * sizeof *items);
        if (!items)
            return err_set(e, ERR_NOMEM, "out of memory loading schemas");
        s->items = items;
        *cap = ncap;
    }
    int rc = load_one(dir, file, &s->items[s->n], e);
    if (rc < 0)
        return rc;
    s->n++;
    return 0;
}

schema_set *schema_set_load(const char *dir, err_t *e)
{
    DIR *d = opendir(dir);
    if (!d) {
        err_set(e, ERR_IO, "cannot open schema directory %s", dir);
        return NULL;
    }
    schema_set *s = calloc(1, sizeof *s);
    size_t cap = 0;
    int rc = s ? 0 : err_set(e, ERR_NOMEM, "out of memory loading schemas");
    struct dirent *de;
    while (rc == 0 && (de = readdir(d)) != NULL)
        if (has_suffix(de->d_name, ".schema.json"))
            rc = add_file(s, &cap, dir, de->d_name, e);
    closedir(d);
    if (rc == 0 && s->n == 0)
        rc = err_set(e, ERR_CONFIG, "no *.schema.json files in %s", dir);
    if (rc < 0) {
        schema_set_free(s);
        return NULL;
    }
    qsort(s->items, s->n, sizeof *s->items, by_name);
    return s;
}

void schema_set_free(schema_set *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < s->n; i++) {
        free(s->items[i].name);
        json_decref(s->items[i].root);
    }
    free(s->items);
    free(s);
}

static const schema *find(const schema_set *s, const char *name, size_t n, const char *suffix)
{
    for (size_t i = 0; i < s->n; i++) {
        const char *x = s->items[i].name;
        if (strncmp(x, name, n) == 0 && strcmp(x + n, suffix) == 0)
            return &s->items[i];
    }
    return NULL;
}

const schema *schema_get(const schema_set *s, const char *name)
{
    if (!s || !name)
        return NULL;
    size_t n = strlen(name);
    const schema *r = find(s, name, n, "");
    /* The runtime looks job schemas up by the AMQP type alone ("auth" -> "auth.job"). */
    return r ? r : find(s, name, n, ".job");
}

size_t schema_set_count(const schema_set *s)
{
    return s ? s->n : 0;
}

const schema *schema_set_at(const schema_set *s, size_t i)
{
    return s && i < s->n ? &s->items[i] : NULL;
}

const char *schema_name(const schema *s)
{
    return s->name;
}
