/*
 * schema.c — a JSON Schema 2020-12 subset compiled into a C tree; see schema.h
 * and docs/schemas.md. This file loads the schema files and holds the public
 * set API; the pieces are described in schema_int.h.
 *
 * Load: each schemas/TYPE.json is parsed with jansson and compiled once into
 * schema_t nodes (schema_compile.c). Every keyword is checked; an unknown
 * keyword, a malformed value or a $ref that is not "#/$defs/NAME" (or names no
 * such def) refuses the whole set. $ref targets are resolved to node pointers,
 * chains of $ref that never descend into the instance (a→b→a) are refused, and
 * every `default` is validated against its own schema so that applying it cannot
 * make a body invalid. The JSON document is freed afterwards: validation
 * (schema_validate.c) reads only the C tree.
 *
 * Memory: every node of a file is recorded in that file's node list, which is
 * what frees them; $ref pointers borrow.
 */
#include "schema_int.h"

#include "util.h"

#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

int schema_load_fail(schema_load_ctx_t *lc, const char *loc, const char *fmt, const char *a,
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

static void file_free(schema_file_t *sf)
{
    for (size_t i = 0; i < sf->nnodes; i++)
        schema_node_free(sf->nodes[i]);
    free(sf->nodes);
    for (size_t i = 0; i < sf->ndefs; i++)
        free(sf->defs[i].name);
    free(sf->defs);
    free(sf->name);
    memset(sf, 0, sizeof *sf);
}

/* Resolve every $ref, refuse chains that loop, and check each default. */
static int link_file(schema_load_ctx_t *lc)
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
            return schema_load_fail(lc, s->loc,
                                    "\"$ref\" names \"#/$defs/%s\", which this file does "
                                    "not define",
                                    s->ref_name, NULL);
    }
    /* A cycle of $ref alone never reaches the instance's end: refuse it, then long chains. */
    for (size_t i = 0; i < sf->nnodes; i++) {
        const schema_t *s = sf->nodes[i];
        for (size_t hops = 0; s->ref && hops <= sf->nnodes; hops++) {
            s = s->ref;
            if (s == sf->nodes[i])
                return schema_load_fail(lc, s->loc,
                                        "\"$ref\" leads back to this schema without descending "
                                        "into the instance (a cycle of $defs)",
                                        NULL, NULL);
        }
    }
    for (size_t i = 0; i < sf->nnodes; i++) {
        const schema_t *s = sf->nodes[i];
        int hops = 0;
        for (; s->ref; s = s->ref)
            if (++hops > SCHEMA_MAX_REF_CHAIN)
                return schema_load_fail(lc, sf->nodes[i]->loc,
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
            return schema_load_fail(lc, s->loc,
                                    "\"default\" does not match its own schema: %s", where,
                                    NULL);
        }
    }
    return 0;
}

static int load_file(schema_file_t *sf, const char *path, char *err, size_t errlen)
{
    schema_load_ctx_t lc = {.file = path, .err = err, .errlen = errlen, .sf = sf};
    json_error_t je;
    json_t *doc = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
    if (!doc) {
        util_fmt(err, errlen, "%s:%d:%d: %s", path, je.line, je.column, je.text);
        return -1;
    }
    int rc = -1;
    if (!json_is_object(doc)) {
        schema_load_fail(&lc, NULL, "must hold one JSON object (a schema)", NULL, NULL);
        goto out;
    }
    sf->root = schema_compile(&lc, doc, "#", 1);
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
