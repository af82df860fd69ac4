/* route.c — workflow matching; see route.h. */
#include "route.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A scalar as match text: strings as they are, numbers and booleans printed.
 * Returns NULL for containers and null. */
static const char *scalar_text(const json_t *v, char *buf, size_t size)
{
    switch (json_typeof(v)) {
    case JSON_STRING: return json_string_value(v);
    case JSON_INTEGER: snprintf(buf, size, "%" JSON_INTEGER_FORMAT, json_integer_value(v)); return buf;
    case JSON_REAL: snprintf(buf, size, "%g", json_real_value(v)); return buf;
    case JSON_TRUE: return "true";
    case JSON_FALSE: return "false";
    default: return NULL;
    }
}

/* Does one value (not a list) satisfy the condition? */
static int value_matches(const config_match_t *m, const json_t *v)
{
    if (m->op == MATCH_EQ) {
        char buf[64];
        const char *t = scalar_text(v, buf, sizeof buf);
        if (!t)
            return 0;
        for (size_t i = 0; i < m->n_values; i++)
            if (strcmp(m->values[i], t) == 0)
                return 1;
        return 0;
    }
    if (!json_is_number(v))
        return 0;
    double x = json_number_value(v);
    switch (m->op) {
    case MATCH_GE: return x >= m->number;
    case MATCH_GT: return x > m->number;
    case MATCH_LE: return x <= m->number;
    case MATCH_LT: return x < m->number;
    case MATCH_EQ_NUM: return x == m->number;
    case MATCH_NE_NUM: return x != m->number;
    case MATCH_EQ: break;
    }
    return 0;
}

/* The body value at a dotted path ("child.category"), or NULL. */
static const json_t *body_at(const json_t *body, const char *path)
{
    const json_t *cur = body;
    char part[256];
    while (*path && cur) {
        const char *dot = strchr(path, '.');
        size_t n = dot ? (size_t)(dot - path) : strlen(path);
        if (n >= sizeof part)
            return NULL;
        memcpy(part, path, n);
        part[n] = '\0';
        cur = json_is_object(cur) ? json_object_get(cur, part) : NULL;
        path += n + (dot ? 1 : 0);
    }
    return cur;
}

int route_condition(const config_match_t *m, const char *type, const json_t *body)
{
    if (strcmp(m->key, "type") == 0) {
        json_t *t = json_string(type);
        int ok = t && value_matches(m, t);
        json_decref(t);
        return ok;
    }
    const json_t *v;
    if (strcmp(m->key, "severity") == 0)
        v = json_object_get(body, "severity");
    else if (strncmp(m->key, "body.", 5) == 0)
        v = body_at(body, m->key + 5);
    else
        return 0; /* config.c accepts no other key */
    if (!v)
        return 0;
    if (json_is_array(v)) {
        size_t i;
        const json_t *e;
        json_array_foreach(v, i, e)
            if (value_matches(m, e))
                return 1;
        return 0;
    }
    return value_matches(m, v);
}

static int all_hold(const config_match_t *m, size_t n, const char *type, const json_t *body)
{
    for (size_t i = 0; i < n; i++)
        if (!route_condition(&m[i], type, body))
            return 0;
    return 1;
}

static int workflow_applies(const config_workflow_t *wf, const char *type, const json_t *body)
{
    return all_hold(wf->match, wf->n_match, type, body);
}

const config_rhythm_t *route_rhythm(const config_t *cfg, const json_t *enrolment)
{
    for (size_t i = 0; i < cfg->n_rhythms; i++)
        if (all_hold(cfg->rhythms[i].match, cfg->rhythms[i].n_match, "enrolment", enrolment))
            return &cfg->rhythms[i];
    return NULL;
}

size_t route_match(const config_t *cfg, const char *type, const json_t *body, route_hit_t *out,
                   size_t max, int *matched)
{
    size_t n = 0;
    *matched = 0;
    for (size_t w = 0; w < cfg->n_workflows; w++) {
        const config_workflow_t *wf = &cfg->workflows[w];
        if (!workflow_applies(wf, type, body))
            continue;
        *matched = 1;
        for (size_t a = 0; a < wf->n_assign; a++) {
            size_t k = 0;
            while (k < n && strcmp(out[k].assign->agency, wf->assign[a].agency) != 0)
                k++;
            if (k == n && n < max)
                out[n++] = (route_hit_t){wf, &wf->assign[a]};
        }
        if (!wf->cont)
            break;
    }
    return n;
}
