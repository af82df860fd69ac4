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
 *
 * Each duration may be `Nwd`, working days on the `calendar` (config_calendar.c).
 */
#include "config_int.h"

#include <stdlib.h>
#include <string.h>

#define REMIND_BEFORE_DEFAULT (3 * 86400000LL)

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
    int *dst_wd[] = {&r->contact_every_wd, &r->visit_every_wd};
    r->contact_every_wd = r->visit_every_wd = r->remind_before_wd = CONFIG_NOT_WD;
    for (size_t i = 0; i < 2; i++) {
        util_fmt(w, sizeof w, "%s.%s", where, keys[i]);
        if (!(v = cfg_fget(f, UTIL_ARRAY_LEN(f), keys[i]))) {
            cfg_err_at(ld, node, "%s needs %s: how often each child it matches is due (e.g. %s)",
                       where, keys[i], i == 0 ? "contact_every: 30d" : "visit_every: 90d");
            continue;
        }
        *dst[i] = cfg_deadline_duration(ld, v, w, 0, 0, dst_wd[i]);
    }
    util_fmt(w, sizeof w, "%s.remind_before", where);
    r->remind_before_ms = cfg_deadline_duration(ld, FV("remind_before"), w, REMIND_BEFORE_DEFAULT,
                                                1, &r->remind_before_wd);
}
