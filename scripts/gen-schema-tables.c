/*
 * gen-schema-tables — the build's generator of schema_tables.h: the enums and
 * limits of the schemas (schemas/NAME.json) as C macros, so that the agent programs take them
 * from the schemas instead of restating them (issue 11).
 *
 *   gen-schema-tables OUT.h SCHEMA.json...
 *
 * For every property of a schema, depth first (object properties, array
 * items), under the name SCHEMA_<TYPE>_<PATH> (TYPE the file's name without
 * .json, PATH the property names joined with '_', "_ITEMS" for an array's
 * items; upper case, any other character than A-Z 0-9 made '_'):
 *
 *   <NAME>_REQUIRED          1 when the property and every object above it is
 *                            required ("required" of each step), else 0
 *   <NAME>_MIN_LENGTH, _MAX_LENGTH, _MINIMUM, _MAXIMUM, _MIN_ITEMS, _MAX_ITEMS
 *                            the keyword's integer, when the schema has it
 *   <NAME>_ENUM              a string enum as an initializer, NULL-terminated:
 *                            static const char *const V[] = SCHEMA_X_ENUM;
 *   <NAME>_ENUM_COUNT        how many values it has
 *   <NAME>_ENUM_TEXT         the values joined with '|', a string literal
 *
 * "$ref": "#/$defs/NAME" (the only form the broker supports, docs/schemas.md) is
 * followed; keywords beside a $ref win over those of its target, and "required"
 * is the union along the chain. Two properties that would get the same macro
 * name, an enum that is not all strings or a $ref it cannot follow are errors:
 * the build stops (exit 1) rather than generate a table that is not the schema.
 * The output is written to OUT.h.tmp and renamed, so a failed run leaves no
 * half-written header. Built and run by the Makefile; jansson only.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#define REF_DEPTH_MAX 16

typedef struct {
    FILE *out;
    const char *file;   /* the schema's path, for messages */
    json_t *root;
    json_t *names;      /* macro names emitted so far (a set) */
} gen_t;

static int fail(const gen_t *g, const char *path, const char *what)
{
    fprintf(stderr, "gen-schema-tables: %s: %s%s%s\n", g->file, what, *path ? " at " : "", path);
    return -1;
}

/* The target of a "$ref": "#/$defs/NAME" of g's root; NULL when it is not one. */
static json_t *ref_target(const gen_t *g, const json_t *node)
{
    const char *ref = json_string_value(json_object_get(node, "$ref"));
    static const char prefix[] = "#/$defs/";
    if (!ref || strncmp(ref, prefix, sizeof prefix - 1) != 0)
        return NULL;
    return json_object_get(json_object_get(g->root, "$defs"), ref + sizeof prefix - 1);
}

/* Checks that node's $ref chain, if any, can be followed to its end. */
static int check_refs(const gen_t *g, const json_t *node, const char *path)
{
    for (int depth = 0; json_object_get(node, "$ref"); depth++) {
        if (depth == REF_DEPTH_MAX)
            return fail(g, path, "a $ref chain too long (a loop?)");
        if (!(node = ref_target(g, node)))
            return fail(g, path, "a $ref that is not \"#/$defs/NAME\" of an existing NAME");
    }
    return 0;
}

/*
 * node as one schema without "$ref": the schema its "$ref" chain leads to, with
 * node's own keywords over it (JSON Schema applies both). "required" is the
 * union along the chain, and "properties" are merged by name, so that a
 * property node adds or narrows (e.g. "category": {"minItems": 1} beside a
 * "$ref" to a "child" with its other properties) keeps the target's others and
 * the target's keywords of that property. A new reference (the caller
 * json_decref()s it), or NULL when a $ref cannot be followed.
 */
static json_t *resolved(const gen_t *g, json_t *node, int depth)
{
    if (!json_is_object(node) || !json_object_get(node, "$ref"))
        return json_incref(node);
    json_t *target = depth < REF_DEPTH_MAX ? ref_target(g, node) : NULL;
    json_t *base = target ? resolved(g, target, depth + 1) : NULL;
    if (!base)
        return NULL;
    json_t *m = json_copy(base);   /* shallow: the values are shared, never changed */
    json_decref(base);
    const char *key;
    json_t *v;
    json_object_foreach(node, key, v) {
        if (!strcmp(key, "$ref"))
            continue;
        json_t *have = json_object_get(m, key);
        if (!strcmp(key, "required") && json_is_array(have) && json_is_array(v)) {
            json_t *u = json_copy(have);
            json_array_extend(u, v);
            json_object_set_new(m, key, u);
        } else if (!strcmp(key, "properties") && json_is_object(have) && json_is_object(v)) {
            json_t *props = json_copy(have);
            const char *pk;
            json_t *pv;
            json_object_foreach(v, pk, pv) {
                json_t *under = json_object_get(props, pk);
                if (json_is_object(under) && json_is_object(pv)) {
                    /* the local keywords over the target's property: a $ref to it */
                    json_t *over = json_copy(pv);
                    json_t *ru = resolved(g, under, depth + 1);
                    json_t *ro = ru ? resolved(g, over, depth + 1) : NULL;
                    json_decref(over);
                    if (!ro) {
                        json_decref(ru);
                        json_decref(props);
                        json_decref(m);
                        return NULL;
                    }
                    json_t *both = json_copy(ru);
                    json_object_update(both, ro);
                    json_decref(ru);
                    json_decref(ro);
                    json_object_set_new(props, pk, both);
                } else {
                    json_object_set(props, pk, pv);
                }
            }
            json_object_set_new(m, key, props);
        } else {
            json_object_set(m, key, v);
        }
    }
    return m;
}

/* The keyword `key` of a resolved node. */
static json_t *keyword(const json_t *node, const char *key)
{
    return json_object_get(node, key);
}

/* Whether `name` is in the "required" of a resolved node. */
static int is_required(const json_t *node, const char *name)
{
    size_t i;
    json_t *v;
    json_array_foreach(json_object_get(node, "required"), i, v)
        if (json_is_string(v) && !strcmp(json_string_value(v), name))
            return 1;
    return 0;
}

/* A C string literal of s: quotes, backslashes, '?' (trigraphs) and every byte
 * outside printable ASCII escaped (three-digit octal, so no digit can follow on). */
static void put_c_string(FILE *f, const char *s)
{
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\' || *p == '?')
            fprintf(f, "\\%c", *p);
        else if (*p >= 0x20 && *p < 0x7f)
            fputc(*p, f);
        else
            fprintf(f, "\\%03o", *p);
    }
    fputc('"', f);
}

/* Starts the line of macro NAME+suffix; an error when that name was emitted before. */
static int define(gen_t *g, const char *name, const char *suffix, const char *path)
{
    char full[512];
    if ((size_t)snprintf(full, sizeof full, "%s%s", name, suffix) >= sizeof full)
        return fail(g, path, "a property path too long for a macro name");
    if (json_object_get(g->names, full))
        return fail(g, path, "two properties give the same macro name");
    json_object_set_new(g->names, full, json_true());
    fprintf(g->out, "#define %s ", full);
    return 0;
}

static int emit_enum(gen_t *g, const char *name, const json_t *vals, const char *path)
{
    size_t i;
    json_t *v;
    json_array_foreach(vals, i, v)
        if (!json_is_string(v) || strlen(json_string_value(v)) != json_string_length(v))
            return fail(g, path, "an enum value that is not a string without NUL");
    if (define(g, name, "_ENUM", path) < 0)
        return -1;
    fputc('{', g->out);
    json_array_foreach(vals, i, v) {
        put_c_string(g->out, json_string_value(v));
        fputs(", ", g->out);
    }
    fputs("NULL}\n", g->out);
    if (define(g, name, "_ENUM_COUNT", path) < 0)
        return -1;
    fprintf(g->out, "%zu\n", json_array_size(vals));
    if (define(g, name, "_ENUM_TEXT", path) < 0)
        return -1;
    json_array_foreach(vals, i, v) {
        if (i)
            fputs(" \"|\" ", g->out);
        put_c_string(g->out, json_string_value(v));
    }
    fputc('\n', g->out);
    return 0;
}

/* The macros of one property `node` named `name` (with `_REQUIRED` when say_required:
 * not for the schema itself or an array's items), then of what it holds. */
static int emit_node(gen_t *g, json_t *node, const char *name, const char *path, int required,
                     int say_required);

/* emit_node() of the resolved node. */
static int emit_resolved(gen_t *g, const json_t *node, const char *name, const char *path,
                         int required, int say_required);

static int emit_node(gen_t *g, json_t *node, const char *name, const char *path, int required,
                     int say_required)
{
    if (!json_is_object(node))
        return 0;   /* a boolean schema: nothing to tell */
    if (check_refs(g, node, path) < 0)
        return -1;
    json_t *r = resolved(g, node, 0);
    if (!r)
        return fail(g, path, "a $ref that cannot be followed");
    int rc = emit_resolved(g, r, name, path, required, say_required);
    json_decref(r);
    return rc;
}

static int emit_resolved(gen_t *g, const json_t *node, const char *name, const char *path,
                         int required, int say_required)
{
    static const struct {
        const char *keyword, *suffix;
    } INTS[] = {{"minLength", "_MIN_LENGTH"}, {"maxLength", "_MAX_LENGTH"},
                {"minimum", "_MINIMUM"},      {"maximum", "_MAXIMUM"},
                {"minItems", "_MIN_ITEMS"},   {"maxItems", "_MAX_ITEMS"}};
    if (say_required) {
        if (define(g, name, "_REQUIRED", path) < 0)
            return -1;
        fprintf(g->out, "%d\n", required);
    }
    for (size_t i = 0; i < sizeof INTS / sizeof INTS[0]; i++) {
        json_t *v = keyword(node, INTS[i].keyword);
        if (!v)
            continue;
        if (!json_is_integer(v))
            return fail(g, path, "a limit that is not an integer");
        if (define(g, name, INTS[i].suffix, path) < 0)
            return -1;
        fprintf(g->out, "%" JSON_INTEGER_FORMAT "\n", json_integer_value(v));
    }
    json_t *vals = keyword(node, "enum");
    if (vals && emit_enum(g, name, vals, path) < 0)
        return -1;

    json_t *items = keyword(node, "items");
    if (items) {
        char iname[512], ipath[512];
        snprintf(iname, sizeof iname, "%s_ITEMS", name);
        snprintf(ipath, sizeof ipath, "%s/items", path);
        if (emit_node(g, items, iname, ipath, 0, 0) < 0)
            return -1;
    }
    const char *key;
    json_t *sub;
    json_object_foreach(keyword(node, "properties"), key, sub) {
        char sname[512], spath[512];
        size_t n = (size_t)snprintf(sname, sizeof sname, "%s_%s", name, key);
        if (n >= sizeof sname)
            return fail(g, path, "a property path too long for a macro name");
        for (char *p = sname + strlen(name) + 1; *p; p++)
            *p = isalnum((unsigned char)*p) ? (char)toupper((unsigned char)*p) : '_';
        snprintf(spath, sizeof spath, "%s/properties/%s", path, key);
        if (emit_node(g, sub, sname, spath, required && is_required(node, key), 1) < 0)
            return -1;
    }
    return 0;
}

static int emit_schema(FILE *out, json_t *names, const char *file)
{
    json_error_t err;
    json_t *root = json_load_file(file, JSON_PRESERVE_ORDER | JSON_REJECT_DUPLICATES, &err);
    gen_t g = {out, file, root, names};
    if (!root) {
        fprintf(stderr, "gen-schema-tables: %s:%d:%d: %s\n", file, err.line, err.column, err.text);
        return -1;
    }
    const char *base = strrchr(file, '/');
    base = base ? base + 1 : file;
    size_t len = strlen(base);
    if (len <= 5 || strcmp(base + len - 5, ".json") != 0) {
        json_decref(root);
        return fail(&g, "", "not a NAME.json file");
    }
    char name[256] = "SCHEMA_";
    if (len - 5 + 8 > sizeof name) {
        json_decref(root);
        return fail(&g, "", "a file name too long");
    }
    for (size_t i = 0; i < len - 5; i++)
        name[7 + i] = isalnum((unsigned char)base[i]) ? (char)toupper((unsigned char)base[i]) : '_';
    name[7 + len - 5] = '\0';
    fprintf(out, "\n/* %s */\n", file);
    int rc = emit_node(&g, root, name, "#", 1, 0);
    json_decref(root);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: gen-schema-tables OUT.h SCHEMA.json...\n");
        return 2;
    }
    char tmp[4096];
    if ((size_t)snprintf(tmp, sizeof tmp, "%s.tmp", argv[1]) >= sizeof tmp) {
        fprintf(stderr, "gen-schema-tables: %s: path too long\n", argv[1]);
        return 1;
    }
    FILE *out = fopen(tmp, "w");
    if (!out) {
        perror(tmp);
        return 1;
    }
    fputs("/*\n * schema_tables.h — generated from schemas/NAME.json by scripts/gen-schema-tables.c\n"
          " * (the Makefile runs it when a schema changes); do not edit. The enums and limits\n"
          " * of each event type; the names are explained in the generator.\n */\n"
          "#ifndef CAREHUB_SCHEMA_TABLES_H\n#define CAREHUB_SCHEMA_TABLES_H\n\n"
          "#include <stddef.h>\n", out);
    json_t *names = json_object();
    int rc = 0;
    for (int i = 2; i < argc && rc == 0; i++)
        rc = emit_schema(out, names, argv[i]);
    json_decref(names);
    fputs("\n#endif\n", out);
    if (fclose(out) != 0 && rc == 0) {
        perror(tmp);
        rc = -1;
    }
    if (rc == 0 && rename(tmp, argv[1]) != 0) {
        perror(argv[1]);
        rc = -1;
    }
    if (rc != 0)
        remove(tmp);
    return rc == 0 ? 0 : 1;
}
