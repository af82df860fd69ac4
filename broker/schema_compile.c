/*
 * schema_compile.c — compiling one schema document (a jansson value) into the
 * validator's schema_t nodes (broker/schema_int.h).
 *
 * Every keyword is looked up in a table of the supported ones, each with its
 * own compile function that checks the value and fills the node; an unknown
 * keyword or a malformed value refuses the document. $ref is only recorded here
 * (by NAME); schema.c resolves it once the whole file is compiled.
 */
#include "schema_int.h"

#include "util.h"

#include <stdlib.h>
#include <string.h>

static schema_t *node_new(schema_load_ctx_t *lc, const char *loc)
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

void schema_node_free(schema_t *s)
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
    strbuf_puts(&sb, loc);
    strbuf_puts(&sb, "/");
    for (const char *p = key; *p; p++) {
        if (*p == '~')
            strbuf_puts(&sb, "~0");
        else if (*p == '/')
            strbuf_puts(&sb, "~1");
        else
            strbuf_append(&sb, p, 1);
    }
    return sb.buf;
}

/* Compile the schema v found at loc + "/" + seg into *out; 0 or -1 with lc->err set. */
static int compile_at(schema_load_ctx_t *lc, json_t *v, const char *loc, const char *seg,
                      schema_t **out)
{
    char *sub = loc_join(loc, seg);
    *out = schema_compile(lc, v, sub, 0);
    free(sub);
    return *out ? 0 : -1;
}

/* Compile the schemas of an object keyword ("properties", "$defs") in file order. */
static int compile_map(schema_load_ctx_t *lc, json_t *obj, const char *loc, const char *kw,
                       schema_prop_t **out, size_t *nout)
{
    if (!json_is_object(obj))
        return schema_load_fail(lc, loc, "\"%s\" must be an object of schemas", kw, NULL);
    char *kwloc = loc_join(loc, kw);
    size_t n = json_object_size(obj), i = 0;
    *out = xcalloc(n + 1, sizeof **out);
    const char *key;
    size_t klen;
    json_t *v;
    int rc = 0;
    json_object_keylen_foreach(obj, key, klen, v) {
        if (strlen(key) != klen) {
            rc = schema_load_fail(lc, kwloc, "a name in \"%s\" contains a NUL character", kw,
                                  NULL);
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
    schema_load_ctx_t *lc;
    schema_t *s;        /* the node the keyword fills */
    const char *kw;     /* the keyword, "minLength" */
    json_t *v;          /* its value */
    const char *loc;    /* where the node is in its file, for messages */
} keyword_arg_t;

/* Refuse the keyword's value: fmt (with a for its %s) becomes lc->err; returns -1. */
static int kw_fail(const keyword_arg_t *k, const char *fmt, const char *a)
{
    return schema_load_fail(k->lc, k->loc, fmt, a, NULL);
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
        schema_real_is_integral(json_real_value(v))) {
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
        for (size_t t = 0; t < schema_ntype_names; t++)
            if (strcmp(json_string_value(one), schema_type_names[t].name) == 0)
                bit = schema_type_names[t].bit;
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
    strbuf_puts(&sb, "");
    for (size_t i = 0; i < s->nprops; i++) {
        if (i)
            strbuf_puts(&sb, ", ");
        strbuf_puts(&sb, s->props[i].name);
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
    strbuf_puts(&sb, "");
    for (const char *p = r + sizeof prefix - 1; *p; p++) {
        if (p[0] == '~' && p[1] == '0') {
            strbuf_puts(&sb, "~");
            p++;
        } else if (p[0] == '~' && p[1] == '1') {
            strbuf_puts(&sb, "/");
            p++;
        } else if (p[0] == '~' || p[0] == '%') {
            free(sb.buf);
            return kw_fail(k,
                           "\"$ref\": \"%s\": NAME has a bad escape (only ~0 and ~1 are "
                           "understood)",
                           r);
        } else {
            strbuf_append(&sb, p, 1);
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
static int compile_keyword(schema_load_ctx_t *lc, schema_t *s, const char *kw, json_t *v,
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
schema_t *schema_compile(schema_load_ctx_t *lc, json_t *j, const char *loc, int is_root)
{
    if (json_is_boolean(j)) {
        schema_t *s = node_new(lc, loc);
        s->boolean = json_is_true(j);
        return s;
    }
    if (!json_is_object(j)) {
        schema_load_fail(lc, loc, "a schema must be an object or true/false", NULL, NULL);
        return NULL;
    }
    schema_t *s = node_new(lc, loc);
    const char *kw;
    size_t klen;
    json_t *v;
    json_object_keylen_foreach(j, kw, klen, v) {
        if (strlen(kw) != klen) {
            schema_load_fail(lc, loc, "a keyword contains a NUL character", NULL, NULL);
            return NULL;
        }
        if (compile_keyword(lc, s, kw, v, loc, is_root) < 0)
            return NULL; /* the node is in lc->sf->nodes and freed with the file */
    }
    if (s->min_length >= 0 && s->max_length >= 0 && s->min_length > s->max_length) {
        schema_load_fail(lc, loc, "minLength is greater than maxLength", NULL, NULL);
        return NULL;
    }
    if (s->min_items >= 0 && s->max_items >= 0 && s->min_items > s->max_items) {
        schema_load_fail(lc, loc, "minItems is greater than maxItems", NULL, NULL);
        return NULL;
    }
    return s;
}
