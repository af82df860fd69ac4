/*
 * config_yaml.c — YAML node helpers for the section readers: the kind of a
 * node in words, nulls, list items, a scalar's text or an error saying why
 * there is none, protocol ids, a mapping read against the section's known
 * keys (unknown, repeated and merge keys reported, with a "did you mean"), a
 * string or list of strings, and durations. Each helper reports at the node it
 * was given and returns a value the caller can skip on.
 */
#include "config_int.h"

#include <stdlib.h>
#include <string.h>

/* What a node is, in words for messages: "a mapping", "a list", ... */
const char *cfg_kind_name(const yaml_node_t *n)
{
    switch (n->type) {
    case YAML_MAPPING_NODE: return "a mapping";
    case YAML_SEQUENCE_NODE: return "a list";
    case YAML_SCALAR_NODE: return cfg_is_null(n) ? "an empty value" : "a value";
    default: return "nothing";
    }
}

/* 1 for a missing node or an empty/null plain scalar (~, null, nothing). */
int cfg_is_null(const yaml_node_t *n)
{
    if (!n || n->type == YAML_NO_NODE)
        return 1;
    if (n->type != YAML_SCALAR_NODE || n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
        return 0;
    const char *v = (const char *)n->data.scalar.value;
    return !*v || !strcmp(v, "~") || !strcmp(v, "null") || !strcmp(v, "Null") ||
           !strcmp(v, "NULL");
}

size_t cfg_seq_len(const yaml_node_t *n)
{
    return (size_t)(n->data.sequence.items.top - n->data.sequence.items.start);
}

yaml_node_t *cfg_seq_at(loader_t *ld, const yaml_node_t *n, size_t i)
{
    return yaml_document_get_node(&ld->doc, n->data.sequence.items.start[i]);
}

/* The text of a scalar, or NULL after reporting why there is none. */
const char *cfg_scalar(loader_t *ld, const yaml_node_t *n, const char *what)
{
    if (!n || n->type != YAML_SCALAR_NODE) {
        cfg_err_at(ld, n, "%s must be a single value, not %s", what,
                   n ? cfg_kind_name(n) : "nothing");
        return NULL;
    }
    if (cfg_is_null(n)) {
        cfg_err_at(ld, n, "%s has no value; give one or remove the key", what);
        return NULL;
    }
    const char *v = (const char *)n->data.scalar.value;
    if (strlen(v) != n->data.scalar.length) {
        cfg_err_at(ld, n, "%s contains a NUL character", what);
        return NULL;
    }
    return v;
}

/* A protocol id (PROTOCOL §1), or NULL after an error. */
const char *cfg_id_value(loader_t *ld, const yaml_node_t *n, const char *what)
{
    const char *v = cfg_scalar(ld, n, what);
    if (v && !util_valid_id(v, strlen(v))) {
        cfg_err_at(ld, n,
                   "%s %s is not a valid id: use 1-64 characters of A-Z a-z 0-9 . _ : -", what,
                   cfg_qv(ld, v));
        return NULL;
    }
    return v;
}

/* The value given for key `name` among f[]; NULL when absent. */
yaml_node_t *cfg_fget(field_t *f, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (!strcmp(f[i].name, name))
            return f[i].val;
    return NULL;
}

/*
 * Read a mapping whose keys must be among f[].name: each value goes to its
 * field; unknown, repeated and non-text keys are errors. Returns 0 (after an
 * error) when `map` is not a mapping.
 */
int cfg_get_fields(loader_t *ld, yaml_node_t *map, const char *where, field_t *f, size_t nf)
{
    if (!map || map->type != YAML_MAPPING_NODE) {
        cfg_err_at(ld, map, "%s must be a mapping of keys (%s: ...), not %s", where,
                   nf ? f[0].name : "key", map ? cfg_kind_name(map) : "nothing");
        return 0;
    }
    for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top; p++) {
        yaml_node_t *k = yaml_document_get_node(&ld->doc, p->key);
        yaml_node_t *v = yaml_document_get_node(&ld->doc, p->value);
        if (!k || !v)
            continue;
        if (k->type != YAML_SCALAR_NODE) {
            cfg_err_at(ld, k, "keys in %s must be names, not %s", where, cfg_kind_name(k));
            continue;
        }
        const char *name = (const char *)k->data.scalar.value;
        size_t i;
        for (i = 0; i < nf; i++)
            if (!strcmp(f[i].name, name))
                break;
        if (i < nf) {
            if (f[i].key) {
                cfg_err_at(ld, k, "key %s appears twice in %s (first at line %d); keep one",
                           cfg_qv(ld, name), where, cfg_node_line(f[i].key));
                continue;
            }
            f[i].key = k;
            f[i].val = v;
            continue;
        }
        const char *names[24];
        size_t nn = nf < UTIL_ARRAY_LEN(names) ? nf : UTIL_ARRAY_LEN(names);
        for (size_t j = 0; j < nn; j++)
            names[j] = f[j].name;
        char known[512], hint[96];
        cfg_join_names(known, sizeof known, names, nn);
        if (!strcmp(name, "<<")) {
            cfg_err_at(ld, k, "merge keys (<<) are not supported in %s; repeat the keys instead",
                       where);
            continue;
        }
        cfg_suggest(hint, sizeof hint, name, names, nn);
        cfg_err_at(ld, k, "unknown key %s in %s%s%s (known: %s)", cfg_qv(ld, name), where,
                   hint[0] ? ";" : "", hint, known);
    }
    return 1;
}

/*
 * A list of strings: a YAML list of values, or a single value meaning a list of
 * one. Returns the number of strings stored in *out (bad items are reported and
 * skipped); `items` (optional) receives each stored string's node.
 */
size_t cfg_str_list(loader_t *ld, yaml_node_t *n, const char *what, char ***out,
                    yaml_node_t ***items)
{
    *out = NULL;
    if (items)
        *items = NULL;
    if (!n)
        return 0;
    if (n->type == YAML_SCALAR_NODE) {
        const char *v = cfg_scalar(ld, n, what);
        if (!v)
            return 0;
        *out = xmalloc(sizeof **out);
        (*out)[0] = xstrdup(v);
        if (items) {
            *items = xmalloc(sizeof **items);
            (*items)[0] = n;
        }
        return 1;
    }
    if (n->type != YAML_SEQUENCE_NODE) {
        cfg_err_at(ld, n, "%s must be a list of values ([a, b]), not %s", what, cfg_kind_name(n));
        return 0;
    }
    size_t len = cfg_seq_len(n), count = 0;
    *out = xcalloc(len, sizeof **out);
    if (items)
        *items = xcalloc(len, sizeof **items);
    for (size_t i = 0; i < len; i++) {
        yaml_node_t *it = cfg_seq_at(ld, n, i);
        char what_i[WHERE_SIZE];
        util_fmt(what_i, sizeof what_i, "%s[%zu]", what, i);
        const char *v = cfg_scalar(ld, it, what_i);
        if (!v)
            continue;
        if (items)
            (*items)[count] = it;
        (*out)[count++] = xstrdup(v);
    }
    return count;
}

/* Free an array of n strings (NULL entries allowed) and the array; NULL is fine. */
void cfg_free_strs(char **v, size_t n)
{
    if (!v)
        return;
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

/* A duration value; `dflt` when absent or wrong (after an error). */
int64_t cfg_duration(loader_t *ld, yaml_node_t *n, const char *what, int64_t dflt,
                     int allow_zero)
{
    if (!n)
        return dflt;
    const char *v = cfg_scalar(ld, n, what);
    if (!v)
        return dflt;
    int64_t ms = config_parse_duration(v);
    size_t vl = strlen(v);
    if (ms < 0 && vl > 2 && strcmp(v + vl - 2, "wd") == 0) {
        cfg_err_at(ld, n, "%s %s counts working days, which this key does not: write clock time "
                   "(ms, s, m, h, d); working days are for deadlines (ack_within, escalation "
                   "after, default_ack_within, quiet_close, and the rhythms' durations)",
                   what, cfg_qv(ld, v));
        return dflt;
    }
    if (ms < 0) {
        if (v[0] == '-')
            cfg_err_at(ld, n, "%s %s is negative; durations are 0 or more", what, cfg_qv(ld, v));
        else
            cfg_err_at(ld, n,
                       "%s %s is not a duration: write a whole number and a unit, one of ms, s, m, "
                       "h, d (250ms, 5s, 15m, 1h, 1d), at most 36500d",
                       what, cfg_qv(ld, v));
        return dflt;
    }
    if (ms == 0 && !allow_zero) {
        cfg_err_at(ld, n, "%s must be more than 0 (e.g. 5s)", what);
        return dflt;
    }
    return ms;
}

/* Does a sequence of strings hold s? (For duplicate checks.) */
int cfg_strs_has(char **v, size_t n, const char *s)
{
    for (size_t i = 0; i < n; i++)
        if (v[i] && !strcmp(v[i], s))
            return 1;
    return 0;
}
