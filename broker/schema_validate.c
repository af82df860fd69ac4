/*
 * schema_validate.c — validating a JSON value against compiled schema nodes
 * (broker/schema_int.h), and applying defaults to a valid one.
 *
 * A recursive walk over the instance, at most SCHEMA_MAX_DEPTH levels of
 * instance nesting deep, stopping at the first error, which it reports as a
 * JSON Pointer into the instance and a sentence. Messages never quote the
 * instance's values (they may be a child's name or birth date and the broker
 * may log the error), only the schema's own words and limits.
 */
#include "schema_int.h"

#include "util.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* State of one validation: the path walked so far and where the error goes. */
typedef struct {
    char path[sizeof(((schema_error_t *)0)->path)];  /* JSON Pointer of the current value */
    size_t len;                                       /* strlen(path) */
    schema_error_t *err;
} vctx_t;

static int validate_node(const schema_t *s, json_t *inst, vctx_t *v, int depth);

/* Append "/" + an escaped segment to the path; returns the old length to restore. */
static size_t path_push(vctx_t *v, const char *seg, size_t n)
{
    size_t old = v->len;
    strbuf_t sb = {0};
    strbuf_puts(&sb, "/");
    const unsigned char *p = (const unsigned char *)seg;
    for (size_t i = 0; i < n;) {
        size_t k = p[i] ? util_utf8_seq(p + i, n - i) : 0;
        if (p[i] == '~') {
            strbuf_puts(&sb, "~0");
            i++;
        } else if (p[i] == '/') {
            strbuf_puts(&sb, "~1");
            i++;
        } else if (k == 0) {
            strbuf_puts(&sb, "\xEF\xBF\xBD"); /* NUL or invalid UTF-8: U+FFFD */
            i++;
        } else {
            strbuf_append(&sb, seg + i, k);
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
        strbuf_puts(sb, json_string_value(val));
        return;
    }
    char *s = json_dumps(val, JSON_ENCODE_ANY | JSON_COMPACT);
    strbuf_puts(sb, s ? s : "?");
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
               ((types & T_INTEGER) && schema_real_is_integral(json_real_value(inst)));
    }
    return 0;
}

static int fail_type(vctx_t *v, unsigned types)
{
    strbuf_t sb = {0};
    size_t count = 0, total = 0;
    for (size_t t = 0; t < schema_ntype_names; t++)
        if (types & schema_type_names[t].bit)
            total++;
    strbuf_puts(&sb, "must be ");
    for (size_t t = 0; t < schema_ntype_names; t++) {
        if (!(types & schema_type_names[t].bit))
            continue;
        if (count)
            strbuf_puts(&sb, count + 1 == total ? " or " : ", ");
        strbuf_puts(&sb, schema_type_names[t].phrase);
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
        size_t cps = util_utf8_count(str, n);
        if (s->min_length >= 0 && cps < (unsigned long long)s->min_length) {
            if (s->min_length == 1)
                return fail(v, "must not be empty");
            return fail(v, "must be at least %lld characters", s->min_length);
        }
        if (s->max_length >= 0 && cps > (unsigned long long)s->max_length)
            return fail(v, "must be at most %lld characters", s->max_length);
    }
    if (s->format_date && !schema_is_date(str, n))
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

/* Order items by value, then by position; schema_json_cmp never hits its depth limit here. */
static int cmp_items(const void *a, const void *b)
{
    const item_ref_t *x = a, *y = b;
    int deep = 0;
    int c = schema_json_cmp(x->val, y->val, 0, &deep);
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
        if (schema_json_cmp(items[i - 1].val, items[i].val, 0, &deep) != 0)
            continue;
        /* items[i-1] starts the run unless it equals its own predecessor */
        int starts = i == 1 || schema_json_cmp(items[i - 2].val, items[i - 1].val, 0, &deep) != 0;
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
        if (schema_json_cmp(s->const_val, inst, depth, &deep) != 0 || deep) {
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
            found = schema_json_cmp(json_array_get(s->enum_vals, i), inst, depth, &deep) == 0 &&
                    !deep;
        }
        if (!found) {
            strbuf_t sb = {0};
            strbuf_puts(&sb, "must be one of: ");
            for (size_t i = 0; i < n; i++) {
                if (i)
                    strbuf_puts(&sb, ", ");
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
        if (s->minimum && schema_num_cmp(inst, s->minimum) < 0)
            return fail_limit(v, "must be at least", s->minimum);
        if (s->maximum && schema_num_cmp(inst, s->maximum) > 0)
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
