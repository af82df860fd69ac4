/*
 * config_workflows.c — the workflows section: each workflow's name, its
 * match conditions (type, severity, body.FIELD: a value, a list of values or
 * a number comparison such as ">=3"; values that can never match are
 * errors), continue, and its assignments to agencies with ack_within and the
 * escalation steps (after, notify channels) in order.
 */
#include "config_int.h"

#include <stdlib.h>
#include <string.h>

static const char *const severities[] = {"critical", "high", "normal", "low"};

static int valid_body_path(const char *p)
{
    /* "body." then segments of [A-Za-z0-9_-] separated by single dots */
    if (strncmp(p, "body.", 5) != 0)
        return 0;
    p += 5;
    int seg = 0;
    for (; *p; p++) {
        char c = *p;
        if (c == '.') {
            if (seg == 0)
                return 0;
            seg = 0;
        } else if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                   c == '_' || c == '-') {
            seg++;
        } else {
            return 0;
        }
    }
    return seg > 0;
}

/* ">=3" and the like: 0 = not a comparison, 1 = one (op and number set),
 * -1 = an operator without a valid number. */
static int parse_cmp(const char *s, config_match_op_t *op, double *num)
{
    static const struct {
        const char *text;
        config_match_op_t op;
    } ops[] = {
        {">=", MATCH_GE}, {"<=", MATCH_LE}, {"==", MATCH_EQ_NUM}, {"!=", MATCH_NE_NUM},
        {">", MATCH_GT}, {"<", MATCH_LT},
    };
    size_t i;
    for (i = 0; i < UTIL_ARRAY_LEN(ops); i++)
        if (!strncmp(s, ops[i].text, strlen(ops[i].text)))
            break;
    if (i == UTIL_ARRAY_LEN(ops))
        return 0;
    const char *p = s + strlen(ops[i].text);
    while (*p == ' ')
        p++;
    /* [+-]digits[.digits][(e|E)[+-]digits], then nothing but spaces */
    const char *q = p;
    if (*q == '+' || *q == '-')
        q++;
    int digits = 0;
    while (*q >= '0' && *q <= '9') {
        q++;
        digits++;
    }
    if (*q == '.') {
        q++;
        while (*q >= '0' && *q <= '9') {
            q++;
            digits++;
        }
    }
    if (!digits)
        return -1;
    if (*q == 'e' || *q == 'E') {
        q++;
        if (*q == '+' || *q == '-')
            q++;
        if (*q < '0' || *q > '9')
            return -1;
        while (*q >= '0' && *q <= '9')
            q++;
    }
    const char *end = q;
    while (*q == ' ')
        q++;
    if (*q)
        return -1;
    char buf[64];
    size_t len = (size_t)(end - p);
    if (len >= sizeof buf)
        return -1;
    memcpy(buf, p, len);
    buf[len] = '\0';
    double d = strtod(buf, NULL);
    if (!(d == d) || d > 1e300 || d < -1e300) /* NaN or overflow to infinity */
        return -1;
    *op = ops[i].op;
    *num = d;
    return 1;
}

/* Canonical text of a match value: YAML booleans as true/false. */
static char *match_text(const yaml_node_t *n, const char *s)
{
    if (n->data.scalar.style == YAML_PLAIN_SCALAR_STYLE) {
        if (!strcmp(s, "true") || !strcmp(s, "True") || !strcmp(s, "TRUE"))
            return xstrdup("true");
        if (!strcmp(s, "false") || !strcmp(s, "False") || !strcmp(s, "FALSE"))
            return xstrdup("false");
    }
    return xstrdup(s);
}

void cfg_free_match(config_match_t *match, size_t n)
{
    for (size_t j = 0; j < n; j++) {
        free(match[j].key);
        cfg_free_strs(match[j].values, match[j].n_values);
    }
    free(match);
}

void cfg_parse_match(loader_t *ld, yaml_node_t *node, const char *where, config_match_t **match,
                     size_t *n_match)
{
    if (!node || cfg_is_null(node))
        return; /* no conditions: every event matches */
    if (node->type != YAML_MAPPING_NODE) {
        cfg_err_at(ld, node, "%s.match must be a mapping of conditions (type: ..., severity: ..., "
                   "body.FIELD: ...), not %s", where, cfg_kind_name(node));
        return;
    }
    size_t np = (size_t)(node->data.mapping.pairs.top - node->data.mapping.pairs.start);
    *match = xcalloc(np, sizeof **match);
    char w[WHERE_SIZE];
    for (yaml_node_pair_t *p = node->data.mapping.pairs.start; p < node->data.mapping.pairs.top; p++) {
        yaml_node_t *k = yaml_document_get_node(&ld->doc, p->key);
        yaml_node_t *v = yaml_document_get_node(&ld->doc, p->value);
        if (!k || !v)
            continue;
        if (k->type != YAML_SCALAR_NODE) {
            cfg_err_at(ld, k, "keys in %s.match must be names, not %s", where, cfg_kind_name(k));
            continue;
        }
        const char *key = (const char *)k->data.scalar.value;
        int is_type = !strcmp(key, "type"), is_sev = !strcmp(key, "severity");
        if (!is_type && !is_sev && !valid_body_path(key)) {
            static const char *const known[] = {"type", "severity"};
            char hint[96];
            cfg_suggest(hint, sizeof hint, key, known, 2);
            cfg_err_at(ld, k, "unknown key %s in %s.match%s%s (known: type, severity, and "
                       "body.FIELD or body.FIELD.SUBFIELD for body fields)",
                       cfg_qv(ld, key), where, hint[0] ? ";" : "", hint);
            continue;
        }
        int dup = 0;
        for (size_t i = 0; i < *n_match; i++)
            if (!strcmp((*match)[i].key, key))
                dup = 1;
        if (dup) {
            cfg_err_at(ld, k, "key %s appears twice in %s.match; keep one", cfg_qv(ld, key), where);
            continue;
        }
        util_fmt(w, sizeof w, "%s.match.%s", where, key);
        config_match_t m;
        memset(&m, 0, sizeof m);
        const yaml_node_t *vnodes[1] = {v};
        const yaml_node_t **value_nodes = vnodes; /* where each value was written */
        m.line = cfg_node_line(k);
        m.op = MATCH_EQ;
        int ok = 1;
        if (v->type == YAML_SCALAR_NODE) {
            const char *s = cfg_scalar(ld, v, w);
            int c = s ? parse_cmp(s, &m.op, &m.number) : 0;
            if (!s) {
                ok = 0;
            } else if (c < 0) {
                cfg_err_at(ld, v, "%s %s: a comparison needs a number after the operator, like "
                           "\">=3\" (operators: >=, >, <=, <, ==, !=)", w, cfg_qv(ld, s));
                ok = 0;
            } else if (c > 0 && (is_type || is_sev)) {
                cfg_err_at(ld, v, "%s %s: number comparisons apply to body fields only; give a "
                           "value or a list of values", w, cfg_qv(ld, s));
                ok = 0;
            } else if (c == 0) {
                m.values = xmalloc(sizeof *m.values);
                m.values[m.n_values++] = match_text(v, s);
            }
        } else if (v->type == YAML_SEQUENCE_NODE) {
            size_t n = cfg_seq_len(v);
            if (n == 0) {
                cfg_err_at(ld, v, "%s is an empty list, which matches nothing; give at least one "
                           "value or remove the condition", w);
                ok = 0;
            }
            m.values = xcalloc(n, sizeof *m.values);
            value_nodes = xcalloc(n ? n : 1, sizeof *value_nodes);
            for (size_t i = 0; i < n; i++) {
                yaml_node_t *it = cfg_seq_at(ld, v, i);
                char wi[WHERE_SIZE];
                util_fmt(wi, sizeof wi, "%s[%zu]", w, i);
                const char *s = cfg_scalar(ld, it, wi);
                config_match_op_t op;
                double d;
                if (!s) {
                    ok = 0;
                } else if (parse_cmp(s, &op, &d) > 0) {
                    cfg_err_at(ld, it,
                               "%s %s looks like a comparison; a list holds values matched "
                               "exactly, so write the comparison as the only value",
                               wi, cfg_qv(ld, s));
                    ok = 0;
                } else {
                    value_nodes[m.n_values] = it;
                    m.values[m.n_values++] = match_text(it, s);
                }
            }
        } else {
            cfg_err_at(ld, v, "%s must be a value, a list of values, or a comparison like \">=3\"; "
                       "not %s", w, cfg_kind_name(v));
            ok = 0;
        }
        /* Values that can never match are mistakes. */
        for (size_t i = 0; ok && i < m.n_values; i++) {
            if (is_sev) {
                int known = 0;
                for (size_t j = 0; j < UTIL_ARRAY_LEN(severities); j++)
                    if (!strcmp(m.values[i], severities[j]))
                        known = 1;
                if (!known) {
                    char hint[96];
                    cfg_suggest_paren(hint, sizeof hint, m.values[i], severities,
                                      UTIL_ARRAY_LEN(severities));
                    cfg_err_at(ld, value_nodes[i],
                               "%s: %s is not a severity%s; use critical, high, "
                               "normal or low",
                               w, cfg_qv(ld, m.values[i]), hint);
                    ok = 0;
                }
            } else if (is_type && !util_valid_id(m.values[i], strlen(m.values[i]))) {
                cfg_err_at(ld, value_nodes[i], "%s: %s is not an event type name (e.g. absence, "
                           "mandatory_report, online_risk)", w, cfg_qv(ld, m.values[i]));
                ok = 0;
            }
        }
        if (value_nodes != vnodes)
            free(value_nodes);
        if (!ok) {
            cfg_free_strs(m.values, m.n_values);
            continue;
        }
        m.key = xstrdup(key);
        (*match)[(*n_match)++] = m;
    }
}

/* escalate (steps after ack_by) or escalate_unresolved (after resolve_by): `key`
 * names the list, `from` the deadline its steps count from. */
static void parse_escalate(loader_t *ld, yaml_node_t *node, const char *where, const char *key,
                           const char *from, config_escalate_t **steps, size_t *n_steps)
{
    char w[WHERE_SIZE], ws[WHERE_SIZE];
    util_fmt(w, sizeof w, "%s.%s", where, key);
    if (node->type != YAML_SEQUENCE_NODE) {
        cfg_err_at(ld, node, "%s must be a list of steps (- after: 0s, notify: [CHANNEL]), not %s",
                   w, cfg_kind_name(node));
        return;
    }
    size_t n = cfg_seq_len(node);
    *steps = xcalloc(n, sizeof **steps);
    int64_t prev = -1;  /* the previous step's after, in its unit */
    int prev_wd = CONFIG_NOT_WD;
    for (size_t i = 0; i < n; i++) {
        yaml_node_t *it = cfg_seq_at(ld, node, i);
        util_fmt(ws, sizeof ws, "%s[%zu]", w, i);
        field_t f[] = {{"after", 0, 0}, {"notify", 0, 0}};
        if (!GET_FIELDS(ld, it, ws))
            continue;
        config_escalate_t *st = &(*steps)[(*n_steps)++];
        st->line = cfg_node_line(it);
        st->after_wd = CONFIG_NOT_WD;
        yaml_node_t *v;
        char wf[WHERE_SIZE];
        if ((v = FV("after")) == NULL) {
            cfg_err_at(ld, it, "%s needs after: the time after %s (0s = at once)", ws, from);
        } else {
            util_fmt(wf, sizeof wf, "%s.after", ws);
            st->after_ms = cfg_deadline_duration(ld, v, wf, -1, 1, &st->after_wd);
            if (st->after_wd >= 0) {
                /* steps in working days are compared with each other; with clock
                 * times they are not (which comes first depends on the date) */
                if (prev_wd >= 0 && st->after_wd < prev_wd)
                    cfg_err_at(ld, v, "%s comes before the previous step's; list escalation steps "
                               "in order of after", wf);
                prev_wd = st->after_wd;
            } else if (st->after_ms >= 0) {
                if (st->after_ms < prev)
                    cfg_err_at(ld, v, "%s comes before the previous step's; list escalation steps "
                               "in order of after", wf);
                prev = st->after_ms;
            } else {
                st->after_ms = 0;
            }
        }
        if ((v = FV("notify")) == NULL) {
            cfg_err_at(ld, it, "%s needs notify: the channels to tell (e.g. notify: [duty-sms])",
                       ws);
        } else {
            util_fmt(wf, sizeof wf, "%s.notify", ws);
            st->n_notify = cfg_channel_refs(ld, v, wf, &st->notify);
            if (v->type == YAML_SEQUENCE_NODE && cfg_seq_len(v) == 0)
                cfg_err_at(ld, v, "%s is empty; name at least one channel", wf);
        }
    }
}

static void parse_assign(loader_t *ld, yaml_node_t *node, const char *where, config_workflow_t *wf)
{
    char w[WHERE_SIZE];
    if (node->type != YAML_SEQUENCE_NODE) {
        cfg_err_at(ld, node,
                   "%s.assign must be a list (- agency: police ...), or [] to record cases "
                   "without assigning them; not %s",
                   where, cfg_kind_name(node));
        return;
    }
    size_t n = cfg_seq_len(node);
    wf->assign = xcalloc(n, sizeof *wf->assign);
    for (size_t i = 0; i < n; i++) {
        yaml_node_t *it = cfg_seq_at(ld, node, i);
        util_fmt(w, sizeof w, "%s.assign[%zu]", where, i);
        field_t f[] = {{"agency", 0, 0},         {"ack_within", 0, 0},
                       {"escalate", 0, 0},       {"resolve_within", 0, 0},
                       {"escalate_unresolved", 0, 0}};
        if (!GET_FIELDS(ld, it, w))
            continue;
        config_assign_t *as = &wf->assign[wf->n_assign++];
        as->line = cfg_node_line(it);
        yaml_node_t *v;
        const char *s;
        char wk[WHERE_SIZE];
        if ((v = FV("agency")) == NULL) {
            cfg_err_at(ld, it, "%s needs agency: the agency to assign (e.g. agency: police)", w);
        } else {
            util_fmt(wk, sizeof wk, "%s.agency", w);
            if ((s = cfg_id_value(ld, v, wk)) != NULL && cfg_agency_ref_ok(ld, v, wk, s, 0)) {
                int dup = 0;
                for (size_t j = 0; j + 1 < wf->n_assign; j++)
                    if (wf->assign[j].agency && !strcmp(wf->assign[j].agency, s))
                        dup = 1;
                if (dup)
                    cfg_err_at(ld, v, "%s: %s is assigned twice in this workflow; keep one", wk,
                               cfg_qv(ld, s));
                else
                    as->agency = xstrdup(s);
            }
        }
        util_fmt(wk, sizeof wk, "%s.ack_within", w);
        as->ack_within_ms = ld->cfg->default_ack_within_ms;
        as->ack_within_wd = ld->cfg->default_ack_within_wd;
        if ((v = FV("ack_within")) != NULL) {
            int wd = CONFIG_NOT_WD;
            int64_t ms = cfg_deadline_duration(ld, v, wk, -1, 1, &wd);
            if (wd >= 0 || ms >= 0) {
                as->ack_within_ms = wd >= 0 ? 0 : ms;
                as->ack_within_wd = wd;
            }
        }
        if ((v = FV("escalate")) != NULL && !cfg_is_null(v))
            parse_escalate(ld, v, w, "escalate", "the ack deadline", &as->escalate,
                           &as->n_escalate);
        as->resolve_within_wd = CONFIG_NOT_WD;
        if ((v = FV("resolve_within")) != NULL) {
            util_fmt(wk, sizeof wk, "%s.resolve_within", w);
            int wd = CONFIG_NOT_WD;
            int64_t ms = cfg_deadline_duration(ld, v, wk, -1, 0, &wd);
            if (wd >= 0 || ms >= 0) {
                as->has_resolve = 1;
                as->resolve_within_ms = wd >= 0 ? 0 : ms;
                as->resolve_within_wd = wd;
            }
        }
        yaml_node_t *eu = FV("escalate_unresolved");
        if (eu && !cfg_is_null(eu)) {
            if (!FV("resolve_within"))
                cfg_err_at(ld, eu, "%s.escalate_unresolved needs resolve_within beside it: the time "
                           "after acknowledgement a final status is due (e.g. resolve_within: 10wd)",
                           w);
            parse_escalate(ld, eu, w, "escalate_unresolved", "resolve_by",
                           &as->escalate_unresolved, &as->n_escalate_unresolved);
        }
    }
}

void cfg_parse_workflow(loader_t *ld, yaml_node_t *node, size_t idx)
{
    config_t *cfg = ld->cfg;
    char where[WHERE_SIZE], w[WHERE_SIZE];
    util_fmt(where, sizeof where, "workflows[%zu]", idx);
    field_t f[] = {{"name", 0, 0}, {"match", 0, 0}, {"continue", 0, 0}, {"assign", 0, 0}};
    if (!GET_FIELDS(ld, node, where))
        return;
    config_workflow_t *wf = &cfg->workflows[cfg->n_workflows++];
    memset(wf, 0, sizeof *wf);
    wf->line = cfg_node_line(node);
    const char *s;
    yaml_node_t *v;
    if ((v = FV("name")) != NULL) {
        util_fmt(w, sizeof w, "%s.name", where);
        if ((s = cfg_scalar(ld, v, w)) != NULL) {
            int ok = strlen(s) <= 128;
            for (const char *c = s; *c && ok; c++)
                if ((unsigned char)*c < 0x20 || *c == 0x7f)
                    ok = 0;
            if (!ok)
                cfg_err_at(ld, v, "%s must be at most 128 printable characters", w);
            for (size_t i = 0; ok && i + 1 < cfg->n_workflows; i++)
                if (cfg->workflows[i].name && !strcmp(cfg->workflows[i].name, s)) {
                    cfg_err_at(ld, v, "workflow name %s is used twice (first at line %d); names "
                               "must be unique", cfg_qv(ld, s), cfg->workflows[i].line);
                    ok = 0;
                }
            if (ok) {
                wf->name = xstrdup(s);
                util_fmt(where, sizeof where, "workflow %s", s);
            }
        }
    }
    if (!wf->name) {
        char def[32];
        util_fmt(def, sizeof def, "workflow-%zu", idx + 1);
        wf->name = xstrdup(def);
    }
    if ((v = FV("continue")) != NULL) {
        util_fmt(w, sizeof w, "%s.continue", where);
        if ((s = cfg_scalar(ld, v, w)) != NULL && cfg_parse_bool(s, &wf->cont) != 0)
            cfg_err_at(ld, v, "%s %s must be true or false", w, cfg_qv(ld, s));
    }
    cfg_parse_match(ld, FV("match"), where, &wf->match, &wf->n_match);
    v = FV("assign");
    if (!v || cfg_is_null(v))
        cfg_err_at(ld, v ? v : node, "%s needs assign: a list of agencies to assign (- agency: "
                   "police), or assign: [] to record cases without assigning them", where);
    else
        parse_assign(ld, v, where, wf);
}
