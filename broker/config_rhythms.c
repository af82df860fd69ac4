/*
 * config_rhythms.c — the `rhythms` section (CONFIG.md additions; PROTOCOL §9):
 * how often a registered child is to be contacted and visited at home, by the
 * first rule whose `match` holds for the child's newest enrolment.
 *
 *   rhythms:
 *     - name: elevated
 *       match: {body.risk: elevated}
 *       contact_every: 14d
 *       visit_every: 30d
 *       remind_before: 2d      # default 3d; 0s: no reminders
 */
#include "config_int.h"

#include <stdlib.h>
#include <string.h>

#define REMIND_BEFORE_DEFAULT (3 * 86400000LL)

/* A duration key of a rule; `Nwd` is named for what it needs. */
static int64_t rule_duration(loader_t *ld, yaml_node_t *v, const char *what, int64_t dflt,
                             int allow_zero)
{
    const char *s = v && v->type == YAML_SCALAR_NODE ? (const char *)v->data.scalar.value : NULL;
    size_t n = s ? strlen(s) : 0;
    if (n > 2 && strcmp(s + n - 2, "wd") == 0) {
        cfg_err_at(ld, v, "%s %s counts working days, which need a `calendar` section; this "
                   "broker has none yet: write calendar days (e.g. 30d)", what, cfg_qv(ld, s));
        return dflt;
    }
    return cfg_duration(ld, v, what, dflt, allow_zero);
}

void cfg_parse_rhythm(loader_t *ld, yaml_node_t *node, size_t idx)
{
    config_t *cfg = ld->cfg;
    char where[WHERE_SIZE], w[WHERE_SIZE];
    util_fmt(where, sizeof where, "rhythms[%zu]", idx);
    field_t f[] = {{"name", 0, 0},          {"match", 0, 0},       {"contact_every", 0, 0},
                   {"visit_every", 0, 0},   {"remind_before", 0, 0}};
    if (!GET_FIELDS(ld, node, where))
        return;
    config_rhythm_t *r = &cfg->rhythms[cfg->n_rhythms++];
    memset(r, 0, sizeof *r);
    r->line = cfg_node_line(node);
    yaml_node_t *v;
    const char *s;
    if ((v = FV("name")) != NULL) {
        util_fmt(w, sizeof w, "%s.name", where);
        if ((s = cfg_id_value(ld, v, w)) != NULL) {
            for (size_t i = 0; i + 1 < cfg->n_rhythms; i++)
                if (!strcmp(cfg->rhythms[i].name, s))
                    cfg_err_at(ld, v, "rhythm name %s is used twice (first at line %d); names "
                               "must be unique", cfg_qv(ld, s), cfg->rhythms[i].line);
            r->name = xstrdup(s);
            util_fmt(where, sizeof where, "rhythm %s", s);
        }
    }
    if (!r->name) {
        char def[32];
        util_fmt(def, sizeof def, "rhythm-%zu", idx + 1);
        r->name = xstrdup(def);
    }
    cfg_parse_match(ld, FV("match"), where, &r->match, &r->n_match);
    static const char *const keys[] = {"contact_every", "visit_every"};
    int64_t *dst[] = {&r->contact_every_ms, &r->visit_every_ms};
    for (size_t i = 0; i < 2; i++) {
        util_fmt(w, sizeof w, "%s.%s", where, keys[i]);
        if (!(v = cfg_fget(f, UTIL_ARRAY_LEN(f), keys[i]))) {
            cfg_err_at(ld, node, "%s needs %s: how often each child it matches is due (e.g. %s)",
                       where, keys[i], i == 0 ? "contact_every: 30d" : "visit_every: 90d");
            continue;
        }
        *dst[i] = rule_duration(ld, v, w, 0, 0);
    }
    util_fmt(w, sizeof w, "%s.remind_before", where);
    r->remind_before_ms = rule_duration(ld, FV("remind_before"), w, REMIND_BEFORE_DEFAULT, 1);
}
