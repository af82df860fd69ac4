/*
 * schema.c — a JSON Schema 2020-12 subset compiled into a C tree; see schema.h
 * and docs/schemas.md.
 *
 * Load: each schemas/TYPE.json is parsed with jansson and compiled once into
 * schema_t nodes. Every keyword is checked; an unknown keyword, a malformed
 * value or a $ref that is not "#/$defs/NAME" (or names no such def) refuses the
 * whole set. $ref targets are resolved to node pointers, chains of $ref that
 * never descend into the instance (a→b→a) are refused, and every `default` is
 * validated against its own schema so that applying it cannot make a body
 * invalid. The JSON document is freed afterwards: validation reads only the
 * C tree.
 *
 * Validate: a recursive walk over the instance, at most SCHEMA_MAX_DEPTH levels
 * of instance nesting deep, stopping at the first error. Messages never quote
 * the instance's values (they may be a child's name or birth date and the
 * broker may log the error), only the schema's own words and limits.
 *
 * Memory: every node of a file is recorded in that file's node list, which is
 * what frees them; $ref pointers borrow.
 */
#include "schema.h"

#include "util.h"

#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Instance nesting accepted by the validator (the root object is depth 0). */
#define SCHEMA_MAX_DEPTH 64
/* Longest chain of $ref that does not descend into the instance. */
#define SCHEMA_MAX_REF_CHAIN 32

#define SCHEMA_DRAFT_URI "https://json-schema.org/draft/2020-12/schema"

/* JSON Schema primitive types, as a bit mask in schema_t.types. */
enum {
    T_NULL = 1u << 0,
    T_BOOLEAN = 1u << 1,
    T_OBJECT = 1u << 2,
    T_ARRAY = 1u << 3,
    T_NUMBER = 1u << 4,
    T_INTEGER = 1u << 5,
    T_STRING = 1u << 6,
};

/* Type names as written in schemas and in messages, in the order messages list them. */
static const struct {
    unsigned bit;
    const char *name;    /* as written in "type" */
    const char *phrase;  /* as written in "must be ..." */
} type_names[] = {
    {T_STRING, "string", "a string"},     {T_INTEGER, "integer", "an integer"},
    {T_NUMBER, "number", "a number"},     {T_BOOLEAN, "boolean", "a boolean"},
    {T_OBJECT, "object", "an object"},    {T_ARRAY, "array", "an array"},
    {T_NULL, "null", "null"},
};

typedef struct {
    char *name;         /* property name (NUL-free: it comes from a JSON key) */
    size_t len;         /* strlen(name) */
    schema_t *schema;
} schema_prop_t;

struct schema {
    int boolean;            /* -1: an object schema; 0: the schema `false`; 1: `true` */
    char *loc;              /* where it is in its file, "#/properties/child", for load errors */
    char *ref_name;         /* NAME of "$ref": "#/$defs/NAME", or NULL */
    const schema_t *ref;    /* the resolved target (borrowed) */
    unsigned types;         /* T_* mask; 0 = any type */
    json_t *enum_vals;      /* array, or NULL */
    json_t *const_val;      /* any value, or NULL when absent */
    json_t *minimum;        /* number, or NULL */
    json_t *maximum;        /* number, or NULL */
    long long min_length;   /* code points; -1 = none */
    long long max_length;
    long long min_items;    /* -1 = none */
    long long max_items;
    int unique_items;
    int format_date;        /* "format": "date" */
    schema_prop_t *props;   /* "properties", in file order */
    size_t nprops;
    char *allowed;          /* "a, b, c": the property names, for the unknown-field message */
    char **required;
    size_t nrequired;
    schema_t *additional;   /* "additionalProperties"; NULL = anything */
    schema_t *items;        /* "items"; NULL = anything */
    json_t *default_val;    /* "default", or NULL */
};

/* One loaded file: its type name, its root and every node it owns. */
typedef struct {
    char *name;
    schema_t *root;
    schema_t **nodes;
    size_t nnodes;
    /* $defs of the root, for resolving $ref at load */
    schema_prop_t *defs;
    size_t ndefs;
} schema_file_t;

/* State of one validation: the path walked so far and where the error goes. */
typedef struct {
    char path[sizeof(((schema_error_t *)0)->path)];  /* JSON Pointer of the current value */
    size_t len;                                       /* strlen(path) */
    schema_error_t *err;
} vctx_t;

struct schema_set {
    schema_file_t *files;   /* sorted by name */
    size_t nfiles;
};

/* ------------------------------------------------------------------------ */
/* Small helpers shared by load and validate                                */
/* ------------------------------------------------------------------------ */

/* Append to a growable NUL-terminated string. */
typedef struct {
    char *buf;
    size_t len, cap;
} strbuf_t;

static void sb_append(strbuf_t *sb, const char *s, size_t n)
{
    if (sb->len + n + 1 > sb->cap) {
        size_t cap = sb->cap ? sb->cap : 64;
        while (sb->len + n + 1 > cap)
            cap *= 2;
        sb->buf = xrealloc(sb->buf, cap);
        sb->cap = cap;
    }
    memcpy(sb->buf + sb->len, s, n);
    sb->len += n;
    sb->buf[sb->len] = '\0';
}

static void sb_puts(strbuf_t *sb, const char *s)
{
    sb_append(sb, s, strlen(s));
}

/* 1 when the real r has no fractional part. */
static int real_is_integral(double r)
{
    if (r != r)
        return 0; /* NaN: jansson does not make these, but be safe */
    if (r >= 4503599627370496.0 || r <= -4503599627370496.0)
        return 1; /* |r| >= 2^52: every double there is an integer (or infinite) */
    return (double)(long long)r == r;
}

/* Compare an integer with a real exactly (no rounding of large integers). */
static int cmp_int_real(json_int_t i, double r)
{
    if (r >= 9223372036854775808.0)
        return -1;
    if (r < -9223372036854775808.0)
        return 1;
    long long t = (long long)r; /* truncates towards zero */
    if ((double)t > r)
        t--; /* floor for negative non-integers */
    if ((long long)i < t)
        return -1;
    if ((long long)i > t)
        return 1;
    return (double)t < r ? -1 : 0;
}

/* Compare two JSON numbers by value: <0, 0, >0. */
static int num_cmp(const json_t *a, const json_t *b)
{
    if (json_is_integer(a) && json_is_integer(b)) {
        json_int_t x = json_integer_value(a), y = json_integer_value(b);
        return x < y ? -1 : x > y;
    }
    if (json_is_integer(a))
        return cmp_int_real(json_integer_value(a), json_real_value(b));
    if (json_is_integer(b))
        return -cmp_int_real(json_integer_value(b), json_real_value(a));
    double x = json_real_value(a), y = json_real_value(b);
    return x < y ? -1 : x > y;
}

/* Rank of a value's type in the total order below. */
static int type_rank(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_NULL: return 0;
    case JSON_FALSE: return 1;
    case JSON_TRUE: return 2;
    case JSON_INTEGER:
    case JSON_REAL: return 3;
    case JSON_STRING: return 4;
    case JSON_ARRAY: return 5;
    case JSON_OBJECT: return 6;
    }
    return 7;
}

/* Bytewise order of two byte strings, shorter first on a common prefix. */
static int cmp_bytes(const char *a, size_t la, const char *b, size_t lb)
{
    int c = memcmp(a, b, la < lb ? la : lb);
    if (c)
        return c < 0 ? -1 : 1;
    return la < lb ? -1 : la > lb;
}

/* One member of an object, for comparing objects key by key. */
typedef struct {
    const char *key;
    size_t len;
    json_t *val;
} member_t;

static int cmp_members(const void *a, const void *b)
{
    const member_t *x = a, *y = b;
    return cmp_bytes(x->key, x->len, y->key, y->len);
}

/* An object's members (borrowed) sorted by key. */
static member_t *sorted_members(json_t *obj, size_t *n)
{
    member_t *m = xcalloc(json_object_size(obj) + 1, sizeof *m);
    const char *key;
    size_t len, i = 0;
    json_t *v;
    json_object_keylen_foreach(obj, key, len, v) {
        m[i++] = (member_t){key, len, v};
    }
    qsort(m, i, sizeof *m, cmp_members);
    *n = i;
    return m;
}

/*
 * A total order on JSON values whose equality is JSON Schema's equality:
 * numbers by value (1 == 1.0), booleans distinct from numbers, arrays element by
 * element, objects by key set and values. Sets *deep when nesting exceeds the
 * validator's limit (the result is then meaningless).
 */
static int json_cmp(json_t *a, json_t *b, int depth, int *deep)
{
    if (depth > SCHEMA_MAX_DEPTH) {
        *deep = 1;
        return 0;
    }
    int ra = type_rank(a), rb = type_rank(b);
    if (ra != rb)
        return ra < rb ? -1 : 1;
    switch (json_typeof(a)) {
    case JSON_INTEGER:
    case JSON_REAL:
        return num_cmp(a, b);
    case JSON_STRING:
        return cmp_bytes(json_string_value(a), json_string_length(a), json_string_value(b),
                         json_string_length(b));
    case JSON_ARRAY: {
        size_t la = json_array_size(a), lb = json_array_size(b);
        for (size_t i = 0; i < la && i < lb; i++) {
            int c = json_cmp(json_array_get(a, i), json_array_get(b, i), depth + 1, deep);
            if (c || *deep)
                return c;
        }
        return la < lb ? -1 : la > lb;
    }
    case JSON_OBJECT: {
        size_t la = json_object_size(a), lb = json_object_size(b);
        if (la != lb)
            return la < lb ? -1 : 1;
        size_t na, nb;
        member_t *ka = sorted_members(a, &na), *kb = sorted_members(b, &nb);
        int c = 0;
        for (size_t i = 0; i < na && i < nb && !c; i++)
            c = cmp_members(&ka[i], &kb[i]);
        for (size_t i = 0; i < na && i < nb && !c && !*deep; i++)
            c = json_cmp(ka[i].val, kb[i].val, depth + 1, deep);
        free(ka);
        free(kb);
        return c;
    }
    default:
        return 0; /* null, true, false: same rank is equal */
    }
}

/* Count Unicode code points of UTF-8 text (bytes that do not continue a sequence). */
static size_t utf8_count(const char *s, size_t n)
{
    size_t count = 0;
    for (size_t i = 0; i < n; i++)
        if (((unsigned char)s[i] & 0xC0) != 0x80)
            count++;
    return count;
}

/* Length in bytes of the valid UTF-8 sequence at s[0..n), or 0 when invalid. */
static size_t utf8_seq(const unsigned char *s, size_t n)
{
    unsigned char c = s[0];
    size_t len;
    unsigned int cp;
    if (c < 0x80)
        return c ? 1 : 0; /* NUL is not written into C strings */
    if ((c & 0xE0) == 0xC0) {
        len = 2;
        cp = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
        len = 3;
        cp = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
        len = 4;
        cp = c & 0x07;
    } else {
        return 0;
    }
    if (len > n)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3F);
    }
    if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
        cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
        return 0;
    return len;
}

/* 1 when s is a real calendar date written YYYY-MM-DD (years 0001–9999). */
static int is_date(const char *s, size_t n)
{
    static const int mdays[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (n != 10 || s[4] != '-' || s[7] != '-')
        return 0;
    for (size_t i = 0; i < n; i++)
        if (i != 4 && i != 7 && (s[i] < '0' || s[i] > '9'))
            return 0;
    int y = (s[0] - '0') * 1000 + (s[1] - '0') * 100 + (s[2] - '0') * 10 + (s[3] - '0');
    int m = (s[5] - '0') * 10 + (s[6] - '0');
    int d = (s[8] - '0') * 10 + (s[9] - '0');
    if (y < 1 || m < 1 || m > 12 || d < 1)
        return 0;
    int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    int dim = mdays[m - 1] + (m == 2 && leap);
    return d <= dim;
}

/* ------------------------------------------------------------------------ */
/* Load                                                                     */
/* ------------------------------------------------------------------------ */

typedef struct {
    const char *file;   /* path, for messages */
    char *err;
    size_t errlen;
    schema_file_t *sf;  /* the file being compiled: owns the nodes */
} load_ctx_t;

static int load_fail(load_ctx_t *lc, const char *loc, const char *fmt, const char *a,
                     const char *b)
{
    char what[400];
    util_fmt(what, sizeof what, fmt, a ? a : "", b ? b : "");
    if (loc && *loc)
        util_fmt(lc->err, lc->errlen, "%s: %s (at %s)", lc->file, what, loc);
    else
        util_fmt(lc->err, lc->errlen, "%s: %s", lc->file, what);
    return -1;
}

static schema_t *node_new(load_ctx_t *lc, const char *loc)
{
    schema_t *s = xcalloc(1, sizeof *s);
    s->boolean = -1;
    s->loc = xstrdup(loc);
    s->min_length = s->max_length = s->min_items = s->max_items = -1;
    schema_file_t *sf = lc->sf;
    sf->nodes = xrealloc(sf->nodes, (sf->nnodes + 1) * sizeof *sf->nodes);
    sf->nodes[sf->nnodes++] = s;
    return s;
}

static void node_free(schema_t *s)
{
    free(s->loc);
    free(s->ref_name);
    json_decref(s->enum_vals);
    json_decref(s->const_val);
    json_decref(s->minimum);
    json_decref(s->maximum);
    json_decref(s->default_val);
    for (size_t i = 0; i < s->nprops; i++)
        free(s->props[i].name);
    free(s->props);
    free(s->allowed);
    for (size_t i = 0; i < s->nrequired; i++)
        free(s->required[i]);
    free(s->required);
    free(s);
}

/* loc + "/" + escaped key, as a new string. */
static char *loc_join(const char *loc, const char *key)
{
    strbuf_t sb = {0};
    sb_puts(&sb, loc);
    sb_puts(&sb, "/");
    for (const char *p = key; *p; p++) {
        if (*p == '~')
            sb_puts(&sb, "~0");
        else if (*p == '/')
            sb_puts(&sb, "~1");
        else
            sb_append(&sb, p, 1);
    }
    return sb.buf;
}

static schema_t *compile(load_ctx_t *lc, json_t *j, const char *loc, int is_root);

/* Compile the schema v found at loc + "/" + seg into *out; 0 or -1 with lc->err set. */
static int compile_at(load_ctx_t *lc, json_t *v, const char *loc, const char *seg,
                      schema_t **out)
{
    char *sub = loc_join(loc, seg);
    *out = compile(lc, v, sub, 0);
    free(sub);
    return *out ? 0 : -1;
}

/* Compile the schemas of an object keyword ("properties", "$defs") in file order. */
static int compile_map(load_ctx_t *lc, json_t *obj, const char *loc, const char *kw,
                       schema_prop_t **out, size_t *nout)
{
    if (!json_is_object(obj))
        return load_fail(lc, loc, "\"%s\" must be an object of schemas", kw, NULL);
    char *kwloc = loc_join(loc, kw);
    size_t n = json_object_size(obj), i = 0;
    *out = xcalloc(n + 1, sizeof **out);
    const char *key;
    size_t klen;
    json_t *v;
    int rc = 0;
    json_object_keylen_foreach(obj, key, klen, v) {
        if (strlen(key) != klen) {
            rc = load_fail(lc, kwloc, "a name in \"%s\" contains a NUL character", kw, NULL);
            break;
        }
        schema_t *s;
        if (compile_at(lc, v, kwloc, key, &s) < 0) {
            rc = -1;
            break;
        }
        (*out)[i].name = xstrdup(key);
        (*out)[i].len = klen;
        (*out)[i].schema = s;
        *nout = ++i;
    }
    free(kwloc);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Keywords: one compile function each, found by name in `keywords` below    */
/* ------------------------------------------------------------------------ */

/* One keyword of an object schema being compiled. */
typedef struct {
    load_ctx_t *lc;
    schema_t *s;        /* the node the keyword fills */
    const char *kw;     /* the keyword, "minLength" */
    json_t *v;          /* its value */
    const char *loc;    /* where the node is in its file, for messages */
} keyword_arg_t;

/* Refuse the keyword's value: fmt (with a for its %s) becomes lc->err; returns -1. */
static int kw_fail(const keyword_arg_t *k, const char *fmt, const char *a)
{
    return load_fail(k->lc, k->loc, fmt, a, NULL);
}

/* A non-negative integer keyword value (an integral real such as 4.0 counts, as in the
 * standard). */
static int get_count(const keyword_arg_t *k, long long *out)
{
    json_t *v = k->v;
    if (json_is_integer(v) && json_integer_value(v) >= 0) {
        *out = (long long)json_integer_value(v);
        return 0;
    }
    if (json_is_real(v) && json_real_value(v) >= 0 && json_real_value(v) < 9.2e18 &&
        real_is_integral(json_real_value(v))) {
        *out = (long long)json_real_value(v);
        return 0;
    }
    return kw_fail(k, "\"%s\" must be a non-negative integer", k->kw);
}

/* A number keyword value, copied. */
static int get_number(const keyword_arg_t *k, json_t **out)
{
    if (!json_is_number(k->v))
        return kw_fail(k, "\"%s\" must be a number", k->kw);
    *out = json_deep_copy(k->v);
    return 0;
}

static int kw_type(const keyword_arg_t *k)
{
    json_t *v = k->v, *one = v;
    size_t n = 1;
    if (json_is_array(v)) {
        n = json_array_size(v);
        if (n == 0)
            return kw_fail(k, "\"type\" must not be an empty list", NULL);
    }
    unsigned *out = &k->s->types;
    *out = 0;
    for (size_t i = 0; i < n; i++) {
        if (json_is_array(v))
            one = json_array_get(v, i);
        if (!json_is_string(one))
            return kw_fail(k, "\"type\" must be a type name or a list of them", NULL);
        unsigned bit = 0;
        for (size_t t = 0; t < UTIL_ARRAY_LEN(type_names); t++)
            if (strcmp(json_string_value(one), type_names[t].name) == 0)
                bit = type_names[t].bit;
        if (!bit)
            return kw_fail(k,
                           "unknown type \"%s\" (known: string, integer, number, boolean, "
                           "object, array, null)",
                           json_string_value(one));
        if (*out & bit)
            return kw_fail(k, "\"type\" lists \"%s\" twice", json_string_value(one));
        *out |= bit;
    }
    return 0;
}

static int kw_properties(const keyword_arg_t *k)
{
    schema_t *s = k->s;
    if (compile_map(k->lc, k->v, k->loc, k->kw, &s->props, &s->nprops) < 0)
        return -1;
    strbuf_t sb = {0};
    sb_puts(&sb, "");
    for (size_t i = 0; i < s->nprops; i++) {
        if (i)
            sb_puts(&sb, ", ");
        sb_puts(&sb, s->props[i].name);
    }
    s->allowed = sb.buf;
    return 0;
}

static int kw_required(const keyword_arg_t *k)
{
    static const char not_names[] = "\"required\" must be a list of property names";
    schema_t *s = k->s;
    if (!json_is_array(k->v))
        return kw_fail(k, not_names, NULL);
    size_t n = json_array_size(k->v);
    s->required = xcalloc(n + 1, sizeof *s->required);
    for (size_t i = 0; i < n; i++) {
        json_t *e = json_array_get(k->v, i);
        if (!json_is_string(e) || strlen(json_string_value(e)) != json_string_length(e))
            return kw_fail(k, not_names, NULL);
        for (size_t j = 0; j < s->nrequired; j++)
            if (strcmp(s->required[j], json_string_value(e)) == 0)
                return kw_fail(k, "\"required\" lists \"%s\" twice", json_string_value(e));
        s->required[s->nrequired++] = xstrdup(json_string_value(e));
    }
    return 0;
}

static int kw_additional_properties(const keyword_arg_t *k)
{
    return compile_at(k->lc, k->v, k->loc, k->kw, &k->s->additional);
}

static int kw_items(const keyword_arg_t *k)
{
    if (json_is_array(k->v))
        return kw_fail(k,
                       "\"items\" must be one schema (a list is draft-07 tuple syntax; "
                       "2020-12 calls it prefixItems, which is not supported)",
                       NULL);
    return compile_at(k->lc, k->v, k->loc, k->kw, &k->s->items);
}

static int kw_enum(const keyword_arg_t *k)
{
    if (!json_is_array(k->v) || json_array_size(k->v) == 0)
        return kw_fail(k, "\"enum\" must be a non-empty list", NULL);
    k->s->enum_vals = json_deep_copy(k->v);
    return 0;
}

static int kw_const(const keyword_arg_t *k)
{
    k->s->const_val = json_deep_copy(k->v);
    return 0;
}

/* Checked against the node's own schema once the file is linked (schema.c). */
static int kw_default(const keyword_arg_t *k)
{
    k->s->default_val = json_deep_copy(k->v);
    return 0;
}

static int kw_minimum(const keyword_arg_t *k)
{
    return get_number(k, &k->s->minimum);
}

static int kw_maximum(const keyword_arg_t *k)
{
    return get_number(k, &k->s->maximum);
}

static int kw_min_length(const keyword_arg_t *k)
{
    return get_count(k, &k->s->min_length);
}

static int kw_max_length(const keyword_arg_t *k)
{
    return get_count(k, &k->s->max_length);
}

static int kw_min_items(const keyword_arg_t *k)
{
    return get_count(k, &k->s->min_items);
}

static int kw_max_items(const keyword_arg_t *k)
{
    return get_count(k, &k->s->max_items);
}

static int kw_unique_items(const keyword_arg_t *k)
{
    if (!json_is_boolean(k->v))
        return kw_fail(k, "\"uniqueItems\" must be true or false", NULL);
    k->s->unique_items = json_is_true(k->v);
    return 0;
}

static int kw_format(const keyword_arg_t *k)
{
    if (!json_is_string(k->v))
        return kw_fail(k, "\"format\" must be a string", NULL);
    if (strcmp(json_string_value(k->v), "date") != 0)
        return kw_fail(k,
                       "format \"%s\" is not supported (only \"date\" is); the broker "
                       "refuses rather than ignore it",
                       json_string_value(k->v));
    k->s->format_date = 1;
    return 0;
}

/* Only "#/$defs/NAME" within the same file; records NAME (unescaped) for schema.c to resolve. */
static int kw_ref(const keyword_arg_t *k)
{
    static const char prefix[] = "#/$defs/";
    if (!json_is_string(k->v))
        return kw_fail(k, "\"$ref\" must be a string", NULL);
    const char *r = json_string_value(k->v);
    if (strncmp(r, prefix, sizeof prefix - 1) != 0 || r[sizeof prefix - 1] == '\0' ||
        strchr(r + sizeof prefix - 1, '/') || strlen(r) != json_string_length(k->v))
        return kw_fail(k,
                       "\"$ref\": \"%s\" is not supported (only \"#/$defs/NAME\" within "
                       "the same file)",
                       r);
    /* unescape ~1 and ~0 (RFC 6901) in NAME */
    strbuf_t sb = {0};
    sb_puts(&sb, "");
    for (const char *p = r + sizeof prefix - 1; *p; p++) {
        if (p[0] == '~' && p[1] == '0') {
            sb_puts(&sb, "~");
            p++;
        } else if (p[0] == '~' && p[1] == '1') {
            sb_puts(&sb, "/");
            p++;
        } else if (p[0] == '~' || p[0] == '%') {
            free(sb.buf);
            return kw_fail(k,
                           "\"$ref\": \"%s\": NAME has a bad escape (only ~0 and ~1 are "
                           "understood)",
                           r);
        } else {
            sb_append(&sb, p, 1);
        }
    }
    k->s->ref_name = sb.buf;
    return 0;
}

/* Root only (the table says so): the file's definitions, where "#/$defs/NAME" points. */
static int kw_defs(const keyword_arg_t *k)
{
    schema_file_t *sf = k->lc->sf;
    return compile_map(k->lc, k->v, k->loc, k->kw, &sf->defs, &sf->ndefs);
}

static int kw_schema(const keyword_arg_t *k)
{
    const char *uri = json_is_string(k->v) ? json_string_value(k->v) : NULL;
    if (!uri || (strcmp(uri, SCHEMA_DRAFT_URI) != 0 && strcmp(uri, SCHEMA_DRAFT_URI "#") != 0))
        return kw_fail(k, "\"$schema\" must be \"%s\" (draft 2020-12)", SCHEMA_DRAFT_URI);
    return 0;
}

static int kw_id(const keyword_arg_t *k)
{
    if (!json_is_string(k->v))
        return kw_fail(k, "\"$id\" must be a string", NULL);
    return 0;
}

/* title, description, $comment: read by people, not by the validator. */
static int kw_annotation(const keyword_arg_t *k)
{
    if (!json_is_string(k->v))
        return kw_fail(k, "\"%s\" must be a string", k->kw);
    return 0;
}

static int kw_examples(const keyword_arg_t *k)
{
    if (!json_is_array(k->v))
        return kw_fail(k, "\"examples\" must be a list", NULL);
    return 0;
}

/*
 * The supported keywords (docs/schemas.md). A keyword with `root_only` is
 * refused with that message anywhere but at the root of the file, before its
 * value is looked at.
 */
static const struct {
    const char *name;
    int (*compile)(const keyword_arg_t *k);
    const char *root_only;
} keywords[] = {
    {"type", kw_type, NULL},
    {"properties", kw_properties, NULL},
    {"required", kw_required, NULL},
    {"additionalProperties", kw_additional_properties, NULL},
    {"items", kw_items, NULL},
    {"enum", kw_enum, NULL},
    {"const", kw_const, NULL},
    {"default", kw_default, NULL},
    {"minimum", kw_minimum, NULL},
    {"maximum", kw_maximum, NULL},
    {"minLength", kw_min_length, NULL},
    {"maxLength", kw_max_length, NULL},
    {"minItems", kw_min_items, NULL},
    {"maxItems", kw_max_items, NULL},
    {"uniqueItems", kw_unique_items, NULL},
    {"format", kw_format, NULL},
    {"$ref", kw_ref, NULL},
    {"$defs", kw_defs,
     "\"$defs\" is only supported at the root of the file (where \"#/$defs/NAME\" points)"},
    {"$schema", kw_schema, "\"$schema\" is only allowed at the root"},
    /* A nested $id would change what "#/$defs/NAME" means below it. */
    {"$id", kw_id, "\"$id\" is only supported at the root"},
    {"title", kw_annotation, NULL},
    {"description", kw_annotation, NULL},
    {"$comment", kw_annotation, NULL},
    {"examples", kw_examples, NULL},
};

/* Compile one keyword of an object schema; 0 or -1 with lc->err set. */
static int compile_keyword(load_ctx_t *lc, schema_t *s, const char *kw, json_t *v,
                           const char *loc, int is_root)
{
    const keyword_arg_t k = {.lc = lc, .s = s, .kw = kw, .v = v, .loc = loc};
    for (size_t i = 0; i < UTIL_ARRAY_LEN(keywords); i++) {
        if (strcmp(kw, keywords[i].name) != 0)
            continue;
        if (keywords[i].root_only && !is_root)
            return kw_fail(&k, keywords[i].root_only, NULL);
        return keywords[i].compile(&k);
    }
    return kw_fail(&k,
                   "unknown keyword \"%s\" (supported: type, properties, required, "
                   "additionalProperties, enum, const, minimum, maximum, minLength, maxLength, "
                   "format, items, minItems, maxItems, uniqueItems, $ref, $defs, default and "
                   "annotations; see docs/schemas.md)",
                   kw);
}

/* Compile a schema value (an object or true/false); NULL with lc->err set. */
static schema_t *compile(load_ctx_t *lc, json_t *j, const char *loc, int is_root)
{
    if (json_is_boolean(j)) {
        schema_t *s = node_new(lc, loc);
        s->boolean = json_is_true(j);
        return s;
    }
    if (!json_is_object(j)) {
        load_fail(lc, loc, "a schema must be an object or true/false", NULL, NULL);
        return NULL;
    }
    schema_t *s = node_new(lc, loc);
    const char *kw;
    size_t klen;
    json_t *v;
    json_object_keylen_foreach(j, kw, klen, v) {
        if (strlen(kw) != klen) {
            load_fail(lc, loc, "a keyword contains a NUL character", NULL, NULL);
            return NULL;
        }
        if (compile_keyword(lc, s, kw, v, loc, is_root) < 0)
            return NULL; /* the node is in lc->sf->nodes and freed with the file */
    }
    if (s->min_length >= 0 && s->max_length >= 0 && s->min_length > s->max_length) {
        load_fail(lc, loc, "minLength is greater than maxLength", NULL, NULL);
        return NULL;
    }
    if (s->min_items >= 0 && s->max_items >= 0 && s->min_items > s->max_items) {
        load_fail(lc, loc, "minItems is greater than maxItems", NULL, NULL);
        return NULL;
    }
    return s;
}

static int validate_node(const schema_t *s, json_t *inst, vctx_t *v, int depth);

static void file_free(schema_file_t *sf)
{
    for (size_t i = 0; i < sf->nnodes; i++)
        node_free(sf->nodes[i]);
    free(sf->nodes);
    for (size_t i = 0; i < sf->ndefs; i++)
        free(sf->defs[i].name);
    free(sf->defs);
    free(sf->name);
    memset(sf, 0, sizeof *sf);
}

/* Resolve every $ref, refuse chains that loop, and check each default. */
static int link_file(load_ctx_t *lc)
{
    schema_file_t *sf = lc->sf;
    for (size_t i = 0; i < sf->nnodes; i++) {
        schema_t *s = sf->nodes[i];
        if (!s->ref_name)
            continue;
        for (size_t d = 0; d < sf->ndefs; d++)
            if (strcmp(sf->defs[d].name, s->ref_name) == 0)
                s->ref = sf->defs[d].schema;
        if (!s->ref)
            return load_fail(lc, s->loc, "\"$ref\" names \"#/$defs/%s\", which this file does "
                                         "not define",
                             s->ref_name, NULL);
    }
    /* A cycle of $ref alone never reaches the instance's end: refuse it, then long chains. */
    for (size_t i = 0; i < sf->nnodes; i++) {
        const schema_t *s = sf->nodes[i];
        for (size_t hops = 0; s->ref && hops <= sf->nnodes; hops++) {
            s = s->ref;
            if (s == sf->nodes[i])
                return load_fail(lc, s->loc,
                                 "\"$ref\" leads back to this schema without descending into "
                                 "the instance (a cycle of $defs)",
                                 NULL, NULL);
        }
    }
    for (size_t i = 0; i < sf->nnodes; i++) {
        const schema_t *s = sf->nodes[i];
        int hops = 0;
        for (; s->ref; s = s->ref)
            if (++hops > SCHEMA_MAX_REF_CHAIN)
                return load_fail(lc, sf->nodes[i]->loc,
                                 "\"$ref\" chain is longer than 32 steps", NULL, NULL);
    }
    for (size_t i = 0; i < sf->nnodes; i++) {
        const schema_t *s = sf->nodes[i];
        if (!s->default_val)
            continue;
        schema_error_t e;
        json_t *copy = json_deep_copy(s->default_val);
        int rc = schema_validate(s, copy, 0, &e);
        json_decref(copy);
        if (rc < 0) {
            char where[600];
            util_fmt(where, sizeof where, "%s%s%s", e.path, *e.path ? " " : "", e.message);
            return load_fail(lc, s->loc, "\"default\" does not match its own schema: %s",
                             where, NULL);
        }
    }
    return 0;
}

static int load_file(schema_file_t *sf, const char *path, char *err, size_t errlen)
{
    load_ctx_t lc = {.file = path, .err = err, .errlen = errlen, .sf = sf};
    json_error_t je;
    json_t *doc = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
    if (!doc) {
        util_fmt(err, errlen, "%s:%d:%d: %s", path, je.line, je.column, je.text);
        return -1;
    }
    int rc = -1;
    if (!json_is_object(doc)) {
        load_fail(&lc, NULL, "must hold one JSON object (a schema)", NULL, NULL);
        goto out;
    }
    sf->root = compile(&lc, doc, "#", 1);
    if (!sf->root)
        goto out;
    rc = link_file(&lc);
out:
    json_decref(doc);
    return rc;
}

static int cmp_files(const void *a, const void *b)
{
    return strcmp(((const schema_file_t *)a)->name, ((const schema_file_t *)b)->name);
}

schema_set_t *schema_set_load(const char *dir, char *err, size_t errlen)
{
    char dummy[8];
    if (!err || errlen == 0) {
        err = dummy;
        errlen = sizeof dummy;
    }
    err[0] = '\0';
    if (!dir) {
        util_fmt(err, errlen, "schemas: no directory given");
        return NULL;
    }
    DIR *d = opendir(dir);
    if (!d) {
        util_fmt(err, errlen, "%s: cannot open schema directory: %s", dir, strerror(errno));
        return NULL;
    }
    schema_set_t *set = xcalloc(1, sizeof *set);
    size_t cap = 0;
    struct dirent *de;
    int failed = 0;
    while (!failed && (de = readdir(d)) != NULL) {
        const char *nm = de->d_name;
        size_t n = strlen(nm);
        if (nm[0] == '.' || n <= 5 || strcmp(nm + n - 5, ".json") != 0)
            continue;
        if (!util_valid_id(nm, n - 5)) {
            util_fmt(err, errlen,
                     "%s/%s: the type name (the file name without .json) must be 1-64 "
                     "characters of A-Z a-z 0-9 . _ : -",
                     dir, nm);
            failed = 1;
            break;
        }
        if (set->nfiles == cap) {
            cap = cap ? cap * 2 : 8;
            set->files = xrealloc(set->files, cap * sizeof *set->files);
        }
        memset(&set->files[set->nfiles], 0, sizeof *set->files);
        set->files[set->nfiles++].name = xstrndup(nm, n - 5);
    }
    closedir(d);
    if (!failed && set->nfiles == 0) {
        util_fmt(err, errlen, "%s: no schema files (*.json) found", dir);
        failed = 1;
    }
    if (!failed)
        qsort(set->files, set->nfiles, sizeof *set->files, cmp_files);
    for (size_t i = 0; !failed && i < set->nfiles; i++) {
        size_t plen = strlen(dir) + strlen(set->files[i].name) + 8;
        char *path = xmalloc(plen);
        util_fmt(path, plen, "%s/%s.json", dir, set->files[i].name);
        if (load_file(&set->files[i], path, err, errlen) < 0)
            failed = 1;
        free(path);
    }
    if (failed) {
        schema_set_destroy(&set);
        return NULL;
    }
    return set;
}

void schema_set_destroy(schema_set_t **setp)
{
    if (!setp || !*setp)
        return;
    schema_set_t *set = *setp;
    for (size_t i = 0; i < set->nfiles; i++)
        file_free(&set->files[i]);
    free(set->files);
    free(set);
    *setp = NULL;
}

const schema_t *schema_set_get(const schema_set_t *set, const char *type)
{
    if (!set || !type)
        return NULL;
    schema_file_t key = {.name = (char *)type};
    const schema_file_t *f = bsearch(&key, set->files, set->nfiles, sizeof *set->files, cmp_files);
    return f ? f->root : NULL;
}

size_t schema_set_count(const schema_set_t *set)
{
    return set ? set->nfiles : 0;
}

const char *schema_set_name(const schema_set_t *set, size_t i)
{
    return set && i < set->nfiles ? set->files[i].name : NULL;
}

/* ------------------------------------------------------------------------ */
/* Validate                                                                 */
/* ------------------------------------------------------------------------ */

/* Append "/" + an escaped segment to the path; returns the old length to restore. */
static size_t path_push(vctx_t *v, const char *seg, size_t n)
{
    size_t old = v->len;
    strbuf_t sb = {0};
    sb_puts(&sb, "/");
    const unsigned char *p = (const unsigned char *)seg;
    for (size_t i = 0; i < n;) {
        size_t k = utf8_seq(p + i, n - i);
        if (p[i] == '~') {
            sb_puts(&sb, "~0");
            i++;
        } else if (p[i] == '/') {
            sb_puts(&sb, "~1");
            i++;
        } else if (k == 0) {
            sb_puts(&sb, "\xEF\xBF\xBD"); /* NUL or invalid UTF-8: U+FFFD */
            i++;
        } else {
            sb_append(&sb, seg + i, k);
            i += k;
        }
    }
    size_t room = sizeof v->path - 1 - v->len;
    size_t take = sb.len;
    if (take > room) {
        take = room;
        while (take > 0 && ((unsigned char)sb.buf[take] & 0xC0) == 0x80)
            take--; /* do not cut a UTF-8 sequence */
    }
    memcpy(v->path + v->len, sb.buf, take);
    v->len += take;
    v->path[v->len] = '\0';
    free(sb.buf);
    return old;
}

static size_t path_push_index(vctx_t *v, size_t i)
{
    char num[32];
    util_fmt(num, sizeof num, "%zu", i);
    return path_push(v, num, strlen(num));
}

static void path_pop(vctx_t *v, size_t old)
{
    v->len = old;
    v->path[old] = '\0';
}

static int fail(vctx_t *v, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int fail(vctx_t *v, const char *fmt, ...)
{
    va_list ap;
    util_fmt(v->err->path, sizeof v->err->path, "%s", v->path);
    va_start(ap, fmt);
    (void)vsnprintf(v->err->message, sizeof v->err->message, fmt, ap); /* truncation is fine */
    va_end(ap);
    return -1;
}

/* A value as it appears in a message: strings bare (enum words), others as JSON. */
static void sb_value(strbuf_t *sb, const json_t *val)
{
    if (json_is_string(val)) {
        sb_puts(sb, json_string_value(val));
        return;
    }
    char *s = json_dumps(val, JSON_ENCODE_ANY | JSON_COMPACT);
    sb_puts(sb, s ? s : "?");
    free(s);
}

static int type_matches(unsigned types, const json_t *inst)
{
    switch (json_typeof(inst)) {
    case JSON_NULL: return (types & T_NULL) != 0;
    case JSON_TRUE:
    case JSON_FALSE: return (types & T_BOOLEAN) != 0;
    case JSON_OBJECT: return (types & T_OBJECT) != 0;
    case JSON_ARRAY: return (types & T_ARRAY) != 0;
    case JSON_STRING: return (types & T_STRING) != 0;
    case JSON_INTEGER: return (types & (T_NUMBER | T_INTEGER)) != 0;
    case JSON_REAL:
        return (types & T_NUMBER) ||
               ((types & T_INTEGER) && real_is_integral(json_real_value(inst)));
    }
    return 0;
}

static int fail_type(vctx_t *v, unsigned types)
{
    strbuf_t sb = {0};
    size_t count = 0, total = 0;
    for (size_t t = 0; t < UTIL_ARRAY_LEN(type_names); t++)
        if (types & type_names[t].bit)
            total++;
    sb_puts(&sb, "must be ");
    for (size_t t = 0; t < UTIL_ARRAY_LEN(type_names); t++) {
        if (!(types & type_names[t].bit))
            continue;
        if (count)
            sb_puts(&sb, count + 1 == total ? " or " : ", ");
        sb_puts(&sb, type_names[t].phrase);
        count++;
    }
    int rc = fail(v, "%s", sb.buf);
    free(sb.buf);
    return rc;
}

static int fail_limit(vctx_t *v, const char *what, const json_t *limit)
{
    strbuf_t sb = {0};
    sb_value(&sb, limit);
    int rc = fail(v, "%s %s", what, sb.buf);
    free(sb.buf);
    return rc;
}

static int check_string(const schema_t *s, json_t *inst, vctx_t *v)
{
    const char *str = json_string_value(inst);
    size_t n = json_string_length(inst);
    if (s->min_length >= 0 || s->max_length >= 0) {
        size_t cps = utf8_count(str, n);
        if (s->min_length >= 0 && cps < (unsigned long long)s->min_length) {
            if (s->min_length == 1)
                return fail(v, "must not be empty");
            return fail(v, "must be at least %lld characters", s->min_length);
        }
        if (s->max_length >= 0 && cps > (unsigned long long)s->max_length)
            return fail(v, "must be at most %lld characters", s->max_length);
    }
    if (s->format_date && !is_date(str, n))
        return fail(v, "must be a date YYYY-MM-DD%s",
                    n == 10 && str[4] == '-' && str[7] == '-'
                        ? " that exists (year 0001-9999, month 01-12, day within the month)"
                        : "");
    return 0;
}

static int check_object(const schema_t *s, json_t *inst, vctx_t *v, int depth)
{
    const char *key;
    size_t klen;
    json_t *val;
    /* Unknown fields first: a misspelt field explains the "is required" that follows it. */
    if (s->additional) {
        json_object_keylen_foreach(inst, key, klen, val) {
            int known = 0;
            for (size_t i = 0; i < s->nprops && !known; i++)
                known = s->props[i].len == klen && memcmp(s->props[i].name, key, klen) == 0;
            if (known)
                continue;
            size_t old = path_push(v, key, klen);
            int rc;
            if (s->additional->boolean == 0)
                rc = fail(v, "is not a known field (allowed: %s)",
                          s->nprops ? s->allowed : "none");
            else
                rc = validate_node(s->additional, val, v, depth + 1);
            path_pop(v, old);
            if (rc < 0)
                return -1;
        }
    }
    for (size_t i = 0; i < s->nrequired; i++) {
        if (json_object_get(inst, s->required[i]))
            continue;
        path_push(v, s->required[i], strlen(s->required[i]));
        return fail(v, "is required");
    }
    for (size_t i = 0; i < s->nprops; i++) {
        val = json_object_getn(inst, s->props[i].name, s->props[i].len);
        if (!val)
            continue;
        size_t old = path_push(v, s->props[i].name, s->props[i].len);
        int rc = validate_node(s->props[i].schema, val, v, depth + 1);
        path_pop(v, old);
        if (rc < 0)
            return -1;
    }
    return 0;
}

typedef struct {
    json_t *val;
    size_t index;
} item_ref_t;

/* Order items by value, then by position; json_cmp never hits its depth limit here. */
static int cmp_items(const void *a, const void *b)
{
    const item_ref_t *x = a, *y = b;
    int deep = 0;
    int c = json_cmp(x->val, y->val, 0, &deep);
    if (c)
        return c;
    return x->index < y->index ? -1 : x->index > y->index;
}

/* 1 when val nests more than `levels` levels of arrays/objects below itself. */
static int nests_deeper(json_t *val, int levels)
{
    if (!json_is_object(val) && !json_is_array(val))
        return 0;
    if (levels <= 0)
        return 1;
    if (json_is_array(val)) {
        for (size_t i = 0; i < json_array_size(val); i++)
            if (nests_deeper(json_array_get(val, i), levels - 1))
                return 1;
        return 0;
    }
    const char *key;
    json_t *v;
    json_object_foreach(val, key, v) {
        if (nests_deeper(v, levels - 1))
            return 1;
    }
    return 0;
}

/*
 * uniqueItems in O(n log n): sort (value, index) pairs; each run of equal values
 * is then in position order, and its second member is a repeat. Reports the
 * repeat with the smallest position, and the item it repeats.
 */
static int check_unique(json_t *inst, vctx_t *v, int depth)
{
    size_t n = json_array_size(inst);
    if (n < 2)
        return 0;
    if (nests_deeper(inst, SCHEMA_MAX_DEPTH - depth))
        return fail(v, "is nested deeper than %d levels", SCHEMA_MAX_DEPTH);
    item_ref_t *items = xcalloc(n, sizeof *items);
    for (size_t i = 0; i < n; i++)
        items[i] = (item_ref_t){json_array_get(inst, i), i};
    qsort(items, n, sizeof *items, cmp_items);
    size_t dup = SIZE_MAX, first = 0;
    for (size_t i = 1; i < n; i++) {
        int deep = 0;
        if (json_cmp(items[i - 1].val, items[i].val, 0, &deep) != 0)
            continue;
        /* items[i-1] starts the run unless it equals its own predecessor */
        int starts = i == 1 || json_cmp(items[i - 2].val, items[i - 1].val, 0, &deep) != 0;
        if (starts && items[i].index < dup) {
            dup = items[i].index;
            first = items[i - 1].index;
        }
    }
    free(items);
    if (dup == SIZE_MAX)
        return 0;
    size_t old = path_push_index(v, dup);
    int rc = fail(v, "repeats item %zu (items must be unique)", first);
    path_pop(v, old);
    return rc;
}

static int check_array(const schema_t *s, json_t *inst, vctx_t *v, int depth)
{
    size_t n = json_array_size(inst);
    if (s->min_items >= 0 && n < (unsigned long long)s->min_items)
        return fail(v, "must have at least %lld item%s", s->min_items,
                    s->min_items == 1 ? "" : "s");
    if (s->max_items >= 0 && n > (unsigned long long)s->max_items)
        return fail(v, "must have at most %lld item%s", s->max_items,
                    s->max_items == 1 ? "" : "s");
    if (s->items) {
        for (size_t i = 0; i < n; i++) {
            size_t old = path_push_index(v, i);
            int rc = validate_node(s->items, json_array_get(inst, i), v, depth + 1);
            path_pop(v, old);
            if (rc < 0)
                return -1;
        }
    }
    if (s->unique_items)
        return check_unique(inst, v, depth);
    return 0;
}

/* Validate inst (at instance depth `depth`) against s; 0 or -1 with the error filled. */
static int validate_node(const schema_t *s, json_t *inst, vctx_t *v, int depth)
{
    if (!inst)
        return fail(v, "is missing");
    if (depth > SCHEMA_MAX_DEPTH)
        return fail(v, "is nested deeper than %d levels", SCHEMA_MAX_DEPTH);
    if (s->boolean == 1)
        return 0;
    if (s->boolean == 0)
        return fail(v, "is not allowed here");
    if (s->ref && validate_node(s->ref, inst, v, depth) < 0)
        return -1;
    if (s->types && !type_matches(s->types, inst))
        return fail_type(v, s->types);
    if (s->const_val) {
        int deep = 0;
        if (json_cmp(s->const_val, inst, depth, &deep) != 0 || deep) {
            strbuf_t sb = {0};
            sb_value(&sb, s->const_val);
            int rc = fail(v, "must be exactly %s", sb.buf);
            free(sb.buf);
            return rc;
        }
    }
    if (s->enum_vals) {
        size_t n = json_array_size(s->enum_vals);
        int found = 0;
        for (size_t i = 0; i < n && !found; i++) {
            int deep = 0;
            found = json_cmp(json_array_get(s->enum_vals, i), inst, depth, &deep) == 0 && !deep;
        }
        if (!found) {
            strbuf_t sb = {0};
            sb_puts(&sb, "must be one of: ");
            for (size_t i = 0; i < n; i++) {
                if (i)
                    sb_puts(&sb, ", ");
                sb_value(&sb, json_array_get(s->enum_vals, i));
            }
            int rc = fail(v, "%s", sb.buf);
            free(sb.buf);
            return rc;
        }
    }
    if (json_is_string(inst))
        return check_string(s, inst, v);
    if (json_is_number(inst)) {
        if (s->minimum && num_cmp(inst, s->minimum) < 0)
            return fail_limit(v, "must be at least", s->minimum);
        if (s->maximum && num_cmp(inst, s->maximum) > 0)
            return fail_limit(v, "must be at most", s->maximum);
        return 0;
    }
    if (json_is_object(inst))
        return check_object(s, inst, v, depth);
    if (json_is_array(inst))
        return check_array(s, inst, v, depth);
    return 0;
}

/* The default of s, looking through $ref when s has none of its own. */
static const json_t *node_default(const schema_t *s)
{
    for (; s; s = s->ref)
        if (s->default_val)
            return s->default_val;
    return NULL;
}

/* Add absent properties that have a default, through present objects and arrays. */
static void apply_defaults(const schema_t *s, json_t *inst, int depth)
{
    if (!s || s->boolean >= 0 || depth > SCHEMA_MAX_DEPTH)
        return;
    if (s->ref)
        apply_defaults(s->ref, inst, depth);
    if (json_is_object(inst)) {
        for (size_t i = 0; i < s->nprops; i++) {
            const schema_prop_t *p = &s->props[i];
            json_t *val = json_object_getn(inst, p->name, p->len);
            if (val) {
                apply_defaults(p->schema, val, depth + 1);
                continue;
            }
            const json_t *d = node_default(p->schema);
            if (d)
                (void)json_object_setn_new(inst, p->name, p->len, json_deep_copy(d));
            /* failure here means out of memory inside jansson; the body stays valid */
        }
        if (s->additional && s->additional->boolean < 0) {
            const char *key;
            size_t klen;
            json_t *val;
            json_object_keylen_foreach(inst, key, klen, val) {
                int known = 0;
                for (size_t i = 0; i < s->nprops && !known; i++)
                    known = s->props[i].len == klen && memcmp(s->props[i].name, key, klen) == 0;
                if (!known)
                    apply_defaults(s->additional, val, depth + 1);
            }
        }
    } else if (json_is_array(inst) && s->items) {
        for (size_t i = 0; i < json_array_size(inst); i++)
            apply_defaults(s->items, json_array_get(inst, i), depth + 1);
    }
}

int schema_validate(const schema_t *schema, json_t *instance, int apply, schema_error_t *err)
{
    schema_error_t dummy;
    vctx_t v;
    v.len = 0;
    v.path[0] = '\0';
    v.err = err ? err : &dummy;
    v.err->path[0] = '\0';
    v.err->message[0] = '\0';
    if (!schema)
        return fail(&v, "has no schema to be checked against");
    if (!instance)
        return fail(&v, "is missing");
    if (validate_node(schema, instance, &v, 0) < 0)
        return -1;
    if (apply)
        apply_defaults(schema, instance, 0);
    return 0;
}
