/*
 * config_agents.c — the agencies section, with the district's built-in
 * agencies added for ids the file does not list, the check of any reference
 * to an agency (with a "did you mean"), the lists of channel ids that
 * agencies and escalation steps name; and the agents section: id, role, the
 * agency an agency agent works for, and its CURVE public key when
 * broker.security is curve.
 */
#include "config_int.h"
#include "keyfile.h"

#include <stdlib.h>
#include <string.h>

/* ---- agencies ------------------------------------------------------------ */

/* The district's agencies (DOMAIN.md), known without being listed under
 * `agencies:`; a listed entry with the same id replaces the built-in one. */
static const struct {
    const char *id;
    const char *name;
} builtin_agencies[] = {
    {"police", "滨海新区公安局"},
    {"procuratorate", "滨海新区人民检察院"},
    {"court", "滨海新区人民法院"},
    {"civil_affairs", "滨海新区民政局"},
    {"education", "滨海新区教育体育局"},
    {"health", "滨海新区卫生健康委员会"},
    {"cyberspace", "滨海新区委网信办"},
    {"womens_federation", "滨海新区妇女联合会"},
    {"youth_league", "共青团滨海新区委员会"},
    {"disabled_federation", "滨海新区残疾人联合会"},
};

/* Channel ids in `v` that must all be configured: *out (count returned). */
size_t cfg_channel_refs(loader_t *ld, yaml_node_t *v, const char *what, char ***out)
{
    char **ids;
    yaml_node_t **items;
    size_t n = cfg_str_list(ld, v, what, &ids, &items), kept = 0;
    *out = xcalloc(n, sizeof **out);
    for (size_t i = 0; i < n; i++) {
        if (!util_valid_id(ids[i], strlen(ids[i]))) {
            cfg_err_at(ld, items[i], "%s: %s is not a valid channel id", what, cfg_qv(ld, ids[i]));
        } else if (!config_find_channel(ld->cfg, ids[i])) {
            char hint[96], known[512];
            const char *names[64];
            size_t nn = 0;
            for (size_t j = 0; j < ld->cfg->n_channels && nn < UTIL_ARRAY_LEN(names); j++)
                if (ld->cfg->channels[j].id)
                    names[nn++] = ld->cfg->channels[j].id;
            cfg_suggest(hint, sizeof hint, ids[i], names, nn);
            cfg_join_names(known, sizeof known, names, nn);
            cfg_err_at(ld, items[i], "%s: %s is not a configured channel%s%s (channels: %s)", what,
                       cfg_qv(ld, ids[i]), hint[0] ? ";" : "", hint, nn ? known : "none");
        } else if (cfg_strs_has(*out, kept, ids[i])) {
            cfg_err_at(ld, items[i], "%s lists %s twice", what, cfg_qv(ld, ids[i]));
        } else {
            (*out)[kept++] = ids[i];
            ids[i] = NULL;
        }
    }
    cfg_free_strs(ids, n);
    free(items);
    return kept;
}

void cfg_parse_agency(loader_t *ld, yaml_node_t *node, size_t idx)
{
    config_t *cfg = ld->cfg;
    char where[WHERE_SIZE], w[WHERE_SIZE];
    util_fmt(where, sizeof where, "agencies[%zu]", idx);
    field_t f[] = {{"id", 0, 0}, {"name", 0, 0}, {"channels", 0, 0}};
    if (!GET_FIELDS(ld, node, where))
        return;
    config_agency_t *ag = &cfg->agencies[cfg->n_agencies++];
    memset(ag, 0, sizeof *ag);
    ag->line = cfg_node_line(node);
    const char *s;
    yaml_node_t *v;
    if ((v = FV("id")) == NULL) {
        cfg_err_at(ld, node, "%s needs an id (e.g. id: police)", where);
    } else if ((s = cfg_id_value(ld, v, "agency id")) != NULL) {
        const config_agency_t *dup = config_find_agency(cfg, s);
        if (dup)
            cfg_err_at(ld, v, "agency id %s is used twice (first at line %d); ids must be unique",
                       cfg_qv(ld, s), dup->line);
        else
            ag->id = xstrdup(s);
    }
    if (ag->id)
        util_fmt(where, sizeof where, "agency %s", ag->id);
    if ((v = FV("name")) != NULL) {
        util_fmt(w, sizeof w, "%s.name", where);
        if ((s = cfg_scalar(ld, v, w)) != NULL)
            ag->name = xstrdup(s);
    }
    if ((v = FV("channels")) != NULL) {
        util_fmt(w, sizeof w, "%s.channels", where);
        ag->n_channels = cfg_channel_refs(ld, v, w, &ag->channels);
    }
}

/* The built-in agencies that the file did not list. */
void cfg_add_builtin_agencies(loader_t *ld)
{
    config_t *cfg = ld->cfg;
    cfg->agencies = xrealloc(cfg->agencies, (cfg->n_agencies + UTIL_ARRAY_LEN(builtin_agencies)) *
                                                sizeof *cfg->agencies);
    for (size_t i = 0; i < UTIL_ARRAY_LEN(builtin_agencies); i++) {
        if (config_find_agency(cfg, builtin_agencies[i].id))
            continue;
        config_agency_t *ag = &cfg->agencies[cfg->n_agencies++];
        memset(ag, 0, sizeof *ag);
        ag->id = xstrdup(builtin_agencies[i].id);
        ag->name = xstrdup(builtin_agencies[i].name);
    }
}

/* Report an agency reference that names no agency. */
int cfg_agency_ref_ok(loader_t *ld, const yaml_node_t *n, const char *what, const char *id,
                      int is_default)
{
    const config_t *cfg = ld->cfg;
    if (config_find_agency(cfg, id))
        return 1;
    const char *names[64];
    size_t nn = 0;
    for (size_t j = 0; j < cfg->n_agencies && nn < UTIL_ARRAY_LEN(names); j++)
        if (cfg->agencies[j].id)
            names[nn++] = cfg->agencies[j].id;
    char hint[96], known[1024];
    cfg_suggest_paren(hint, sizeof hint, id, names, nn);
    cfg_join_names(known, sizeof known, names, nn);
    cfg_err_at(ld, n, "%s %s%s is not a known agency%s; add it under agencies: or use one of: %s",
               what, cfg_qv(ld, id), is_default ? " (the default)" : "", hint, known);
    return 0;
}

/* ---- agents -------------------------------------------------------------- */

static const char *const role_names[ROLE_COUNT] = {
    "school", "reporter", "monitor", "agency", "supervisor", "director",
};

const char *config_role_name(config_role_t role)
{
    if ((int)role < 0 || role >= ROLE_COUNT)
        return NULL;
    return role_names[role];
}

void cfg_parse_agent(loader_t *ld, yaml_node_t *node, size_t idx)
{
    config_t *cfg = ld->cfg;
    char where[WHERE_SIZE], w[WHERE_SIZE];
    util_fmt(where, sizeof where, "agents[%zu]", idx);
    field_t f[] = {{"id", 0, 0}, {"role", 0, 0}, {"agency", 0, 0}, {"public_key", 0, 0}};
    if (!GET_FIELDS(ld, node, where))
        return;
    config_agent_t *ag = &cfg->agents[cfg->n_agents++];
    memset(ag, 0, sizeof *ag);
    ag->line = cfg_node_line(node);
    ag->role = ROLE_COUNT; /* unknown until read */
    const char *s;
    yaml_node_t *v;
    if ((v = FV("id")) == NULL) {
        cfg_err_at(ld, node, "%s needs an id (e.g. id: school-0042)", where);
    } else if ((s = cfg_id_value(ld, v, "agent id")) != NULL) {
        const config_agent_t *dup = config_find_agent(cfg, s);
        if (dup)
            cfg_err_at(ld, v, "agent id %s is used twice (first at line %d); ids must be unique",
                       cfg_qv(ld, s), dup->line);
        else if (strcmp(s, "broker") == 0) /* the broker's own events (visit_overdue) carry it */
            cfg_err_at(ld, v, "agent id \"broker\" is reserved for the events the broker records "
                       "itself; choose another id");
        else
            ag->id = xstrdup(s);
    }
    if (ag->id)
        util_fmt(where, sizeof where, "agent %s", ag->id);

    char roles[128];
    cfg_join_names(roles, sizeof roles, role_names, ROLE_COUNT);
    if ((v = FV("role")) == NULL) {
        cfg_err_at(ld, node, "%s needs a role: one of %s", where, roles);
    } else {
        util_fmt(w, sizeof w, "%s.role", where);
        if ((s = cfg_scalar(ld, v, w)) != NULL) {
            for (int r = 0; r < ROLE_COUNT; r++)
                if (!strcmp(s, role_names[r]))
                    ag->role = (config_role_t)r;
            if (ag->role == ROLE_COUNT) {
                char hint[96];
                cfg_suggest_paren(hint, sizeof hint, s, role_names, ROLE_COUNT);
                cfg_err_at(ld, v, "%s %s is not a role%s; use one of %s", w, cfg_qv(ld, s), hint,
                           roles);
            }
        }
    }

    v = FV("agency");
    if (ag->role == ROLE_AGENCY) {
        if (!v) {
            cfg_err_at(ld, node, "%s has role agency and needs `agency:`, the agency whose "
                       "assignments it takes (e.g. agency: police)", where);
        } else {
            util_fmt(w, sizeof w, "%s.agency", where);
            if ((s = cfg_id_value(ld, v, w)) != NULL && cfg_agency_ref_ok(ld, v, w, s, 0))
                ag->agency = xstrdup(s);
        }
    } else if (v && ag->role != ROLE_COUNT) {
        cfg_err_at(ld, v, "%s has role %s; only agents with role agency take `agency:` (remove it "
                   "or set role: agency)", where, role_names[ag->role]);
    }

    v = FV("public_key");
    if (cfg->security == SECURITY_CURVE) {
        if (!v) {
            cfg_err_at(ld, node,
                       "%s needs public_key because broker.security is curve: the agent's "
                       "public key, 40 Z85 characters (the first line of its NAME.pub)",
                       where);
        } else {
            util_fmt(w, sizeof w, "%s.public_key", where);
            if ((s = cfg_scalar(ld, v, w)) != NULL) {
                if (!keyfile_z85_valid(s)) {
                    cfg_err_at(ld, v, "%s is not a CURVE public key: it must be exactly 40 Z85 "
                               "characters (%zu given)", w, strlen(s));
                } else {
                    const config_agent_t *dup = config_find_agent_by_key(cfg, s);
                    if (dup)
                        cfg_err_at(ld, v, "%s is also the key of agent %s (line %d); each agent "
                                   "needs its own key", w, dup->id ? dup->id : "?", dup->line);
                    else
                        ag->public_key = xstrdup(s);
                }
            }
        }
    }
    /* With security none a public_key is allowed and unused (not even read). */
}
