/*
 * schema_int.h — private to the schema validator (broker/schema*.c): the compiled
 * node tree, the loaded files, the load context, and the helpers the pieces share.
 * Nothing outside broker/schema*.c includes it; the public API is schema.h.
 *
 *   schema.c           loading schemas/TYPE.json, resolving $ref, the public set API
 *   schema_compile.c   one schema document → schema_t nodes (the keyword table)
 *   schema_validate.c  an instance against the nodes: errors with JSON Pointer paths,
 *                      and applying defaults
 *   schema_value.c     JSON values as JSON Schema sees them (types, equality,
 *                      numbers, dates) and a growable string (UTF-8: util.h)
 */
#ifndef CAREHUB_SCHEMA_INT_H
#define CAREHUB_SCHEMA_INT_H

#include "schema.h"
#include "strbuf.h"

#include <jansson.h>
#include <stddef.h>

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
typedef struct {
    unsigned bit;
    const char *name;    /* as written in "type" */
    const char *phrase;  /* as written in "must be ..." */
} schema_type_name_t;

extern const schema_type_name_t schema_type_names[];
extern const size_t schema_ntype_names;

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

struct schema_set {
    schema_file_t *files;   /* sorted by name */
    size_t nfiles;
};

/* Loading one file: where errors go and the file that owns the nodes. */
typedef struct {
    const char *file;   /* path, for messages */
    char *err;
    size_t errlen;
    schema_file_t *sf;  /* the file being compiled: owns the nodes */
} schema_load_ctx_t;

/* ---- schema.c ---------------------------------------------------------- */

/*
 * Fill lc->err with "FILE: WHAT (at LOC)", WHAT being fmt with a and b (NULL
 * counts as "") for its %s; returns -1.
 */
int schema_load_fail(schema_load_ctx_t *lc, const char *loc, const char *fmt, const char *a,
                     const char *b);

/* ---- schema_compile.c -------------------------------------------------- */

/*
 * Compile a schema value (an object or true/false) found at loc ("#" for the
 * file's root) into nodes owned by lc->sf; NULL with lc->err set.
 */
schema_t *schema_compile(schema_load_ctx_t *lc, json_t *j, const char *loc, int is_root);

/* Free one node and what it owns (not the nodes it points to). */
void schema_node_free(schema_t *s);

/* ---- schema_value.c ---------------------------------------------------- */


/* 1 when the real r has no fractional part. */
int schema_real_is_integral(double r);

/* Compare two JSON numbers by value: <0, 0, >0. */
int schema_num_cmp(const json_t *a, const json_t *b);

/*
 * A total order on JSON values whose equality is JSON Schema's equality; sets
 * *deep when nesting exceeds SCHEMA_MAX_DEPTH (the result is then meaningless).
 */
int schema_json_cmp(json_t *a, json_t *b, int depth, int *deep);

/* 1 when s[0..n) is a real calendar date written YYYY-MM-DD (years 0001–9999). */
int schema_is_date(const char *s, size_t n);

#endif
