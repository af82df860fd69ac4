/*
 * config.c — load and check the YAML configuration; see config.h and
 * docs/config.md.
 *
 * The file is parsed with libyaml's document API into a node tree, then walked
 * section by section against a fixed shape: every mapping is read through
 * cfg_get_fields(), which knows the section's keys and reports any other as an
 * error. Nothing here recurses over the tree generically, so aliases (even
 * self-referencing ones) and any node type in any place are harmless: a node of
 * the wrong kind is reported and skipped.
 *
 * Errors are collected, never fatal: each check reports what is wrong, where
 * (FILE:LINE:COL of the offending node) and how to fix it, and the walk goes on
 * so that one run lists every problem. The lines are sorted by position before
 * they reach the caller. Values read from the file are quoted, truncated and
 * escaped before they appear in a message; secrets never do.
 *
 * Sections are read in dependency order, whatever their order in the file:
 * broker (webhook_allow), privacy, channels, agencies (+ the built-in ones),
 * agents (then the test clock's agent), workflows; then the cross-references
 * among channels.
 *
 * This file holds the whole-file loader (reading the file, a guard against deep
 * flow nesting, libyaml, the sections in that order), the defaults, the lookups
 * and the teardown. The pieces it calls live beside it, declared in
 * config_int.h: config_diag.c (errors), config_parse.c (small parsers),
 * config_yaml.c (node helpers) and one file per section or two:
 * config_broker.c, config_channels.c, config_agents.c, config_workflows.c, and
 * config_security.c (what broker.security allows).
 */
#include "config_int.h"

#include <errno.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <yaml.h>

enum {
    MAX_CONFIG_BYTES = 16 << 20, /* a config larger than this is a mistake */
    MAX_FLOW_DEPTH = 100,        /* libyaml's scanner is quadratic in flow nesting */
};

/* ---- the whole file ---------------------------------------------------- */

/*
 * A cheap guard before libyaml: its scanner takes time quadratic in the depth
 * of flow collections ([[[[...), so refuse absurd depths up front. Brackets in
 * quoted strings and comments are skipped; ones in plain text may over-count,
 * which only matters for hundreds of unbalanced brackets.
 */
static int flow_depth_ok(loader_t *ld, const char *buf, size_t len)
{
    int depth = 0, line = 1, col = 0;
    char quote = 0;
    int at_token = 1; /* a quote or # here starts a string or comment */
    for (size_t i = 0; i < len; i++) {
        char c = buf[i];
        col++;
        if (c == '\n') {
            line++;
            col = 0;
        }
        if (quote) {
            if (quote == '"' && c == '\\')
                i++;
            else if (c == quote)
                quote = 0;
            continue;
        }
        if (at_token && (c == '"' || c == '\'')) {
            quote = c;
            continue;
        }
        if (at_token && c == '#') {
            while (i < len && buf[i] != '\n')
                i++;
            line++;
            col = 0;
            continue;
        }
        if (c == '[' || c == '{') {
            if (++depth > MAX_FLOW_DEPTH) {
                cfg_err_pos(ld, line, col,
                            "collections nested more than %d deep; a carehub configuration "
                            "needs only a few levels",
                            MAX_FLOW_DEPTH);
                return 0;
            }
        } else if ((c == ']' || c == '}') && depth > 0) {
            depth--;
        }
        at_token = (c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '[' ||
                    c == '{' || c == ',' || c == ':' || c == '-' || c == '?');
    }
    return 1;
}

/* A top-level list section (agents, agencies, ...): NULL when absent or empty,
 * after an error when it is not a list. */
static yaml_node_t *section_list(loader_t *ld, yaml_node_t *v, const char *name, const char *eg)
{
    if (!v || cfg_is_null(v))
        return NULL;
    if (v->type != YAML_SEQUENCE_NODE) {
        cfg_err_at(ld, v, "%s must be a list (- %s), not %s", name, eg, cfg_kind_name(v));
        return NULL;
    }
    return v;
}

static void load_root(loader_t *ld, yaml_node_t *root)
{
    config_t *cfg = ld->cfg;
    field_t f[] = {{"broker", 0, 0},   {"privacy", 0, 0},  {"agents", 0, 0},
                   {"agencies", 0, 0}, {"channels", 0, 0}, {"workflows", 0, 0},
                   {"rhythms", 0, 0},  {"calendar", 0, 0}};
    if (!root || cfg_is_null(root)) {
        cfg_err_pos(ld, 1, 1, "the configuration is empty; it needs at least a privacy section "
                    "(see docs/config.md)");
        return;
    }
    if (root->type != YAML_MAPPING_NODE) {
        cfg_err_at(ld, root,
                   "the configuration must be a mapping with the sections broker, privacy, "
                   "agents, agencies, channels and workflows; found %s",
                   cfg_kind_name(root));
        return;
    }
    (void)GET_FIELDS(ld, root, "the configuration");

    cfg_parse_calendar(ld, FV("calendar")); /* first: the deadline keys may count on it */
    cfg_parse_broker(ld, FV("broker"));
    if (!cfg->timezone) /* no broker section */
        cfg_parse_timezone(ld, NULL);
    cfg_parse_privacy(ld, FV("privacy"), root);

    yaml_node_t *chs = section_list(ld, FV("channels"), "channels", "id: police-hook");
    yaml_node_t **fallback_nodes = NULL;
    if (chs) {
        size_t n = cfg_seq_len(chs);
        cfg->channels = xcalloc(n, sizeof *cfg->channels);
        fallback_nodes = xcalloc(n, sizeof *fallback_nodes);
        for (size_t i = 0; i < n; i++)
            cfg_parse_channel(ld, cfg_seq_at(ld, chs, i), i, fallback_nodes);
        cfg_check_channel_fallbacks(ld, fallback_nodes);
    }
    free(fallback_nodes);

    yaml_node_t *ags = section_list(ld, FV("agencies"), "agencies", "id: police");
    if (ags) {
        size_t n = cfg_seq_len(ags);
        cfg->agencies = xcalloc(n, sizeof *cfg->agencies);
        for (size_t i = 0; i < n; i++)
            cfg_parse_agency(ld, cfg_seq_at(ld, ags, i), i);
    }
    cfg_add_builtin_agencies(ld);
    cfg_agency_ref_ok(
        ld, ld->fallback_node ? ld->fallback_node : (ld->broker_node ? ld->broker_node : root),
        "broker.fallback_agency", cfg->fallback_agency, ld->fallback_node == NULL);

    yaml_node_t *agents = section_list(ld, FV("agents"), "agents", "id: school-0042");
    if (agents) {
        size_t n = cfg_seq_len(agents);
        cfg->agents = xcalloc(n, sizeof *cfg->agents);
        for (size_t i = 0; i < n; i++)
            cfg_parse_agent(ld, cfg_seq_at(ld, agents, i), i);
    }
    cfg_check_test_clock_agent(ld);
    cfg_parse_users(ld);

    yaml_node_t *wfs = section_list(ld, FV("workflows"), "workflows", "name: ...");
    if (wfs) {
        size_t n = cfg_seq_len(wfs);
        cfg->workflows = xcalloc(n, sizeof *cfg->workflows);
        for (size_t i = 0; i < n; i++)
            cfg_parse_workflow(ld, cfg_seq_at(ld, wfs, i), i);
    }

    yaml_node_t *rhs = section_list(ld, FV("rhythms"), "rhythms", "name: default");
    if (rhs) {
        size_t n = cfg_seq_len(rhs);
        cfg->rhythms = xcalloc(n, sizeof *cfg->rhythms);
        for (size_t i = 0; i < n; i++)
            cfg_parse_rhythm(ld, cfg_seq_at(ld, rhs, i), i);
    }
}

/* The config file's directory, absolute. */
static char *config_dir(const char *path)
{
    const char *slash = strrchr(path, '/');
    char *dir;
    if (!slash)
        dir = xstrdup(".");
    else if (slash == path)
        dir = xstrdup("/");
    else
        dir = xstrndup(path, (size_t)(slash - path));
    char *real = realpath(dir, NULL);
    if (real) {
        char *r = xstrdup(real);
        free(real);
        free(dir);
        return r;
    }
    if (dir[0] == '/')
        return dir;
    char cwd[4096];
    if (!getcwd(cwd, sizeof cwd))
        return dir;
    size_t n = strlen(cwd) + strlen(dir) + 2;
    char *r = xmalloc(n);
    util_fmt(r, n, "%s/%s", cwd, dir);
    cfg_clean_path(r);
    free(dir);
    return r;
}

static config_t *config_new_defaults(void)
{
    config_t *cfg = xcalloc(1, sizeof *cfg);
    cfg->security = SECURITY_NONE;
    cfg->heartbeat_ms = 5000;
    cfg->max_message_bytes = 262144;
    cfg->fallback_agency = xstrdup("civil_affairs");
    cfg->default_ack_within_ms = (int64_t)86400 * 1000;
    cfg->redeliver_every_ms = 30 * 1000;
    cfg->quiet_close_ms = (int64_t)14 * 86400 * 1000;
    cfg->default_ack_within_wd = CONFIG_NOT_WD;
    cfg->quiet_close_wd = CONFIG_NOT_WD;
    cfg->map_size = (uint64_t)64 << 20;
    cfg->map_max = (uint64_t)64 << 30;
    cfg->peer_queue = 4096;
    cfg->retention_ms = (int64_t)730 * 86400 * 1000;
    return cfg;
}

config_t *config_load(const char *path, int resolve_hosts, config_diag_t *diag)
{
    loader_t ld;
    memset(&ld, 0, sizeof ld);
    ld.path = path ? path : "(no file)";
    ld.resolve_hosts = resolve_hosts;
    char *buf = NULL;
    size_t len = 0;
    yaml_parser_t parser;
    int have_parser = 0, e;
    yaml_node_t *root;
    config_t *cfg;

    if (!path || !*path) {
        cfg_err_pos(&ld, 0, 0, "no configuration file given");
        goto out;
    }
    if (sodium_init() < 0) {
        cfg_err_pos(&ld, 0, 0, "libsodium failed to initialise");
        goto out;
    }
    e = cfg_read_file(path, MAX_CONFIG_BYTES, &buf, &len);
    if (e) {
        cfg_err_pos(&ld, 0, 0, "cannot read the configuration: %s",
                    e == EFBIG ? "larger than 16 MiB" : cfg_read_errstr(e));
        goto out;
    }
    if (!flow_depth_ok(&ld, buf, len))
        goto out;
    if (!yaml_parser_initialize(&parser)) {
        cfg_err_pos(&ld, 0, 0, "out of memory initialising the YAML parser");
        goto out;
    }
    have_parser = 1;
    yaml_parser_set_input_string(&parser, (const unsigned char *)buf, len);
    if (!yaml_parser_load(&parser, &ld.doc)) {
        cfg_yaml_error(&ld, &parser, buf, len);
        goto out;
    }
    ld.have_doc = 1;
    root = yaml_document_get_root_node(&ld.doc);
    if (root) {
        yaml_document_t extra;
        if (!yaml_parser_load(&parser, &extra)) {
            cfg_yaml_error(&ld, &parser, buf, len);
        } else {
            yaml_node_t *r2 = yaml_document_get_root_node(&extra);
            if (r2)
                cfg_err_at(&ld, r2,
                           "a second YAML document (after ---); carehub reads one document "
                           "per file, so remove it or move it to its own file");
            yaml_document_delete(&extra);
        }
    }
    ld.dir = config_dir(path);
    ld.cfg = config_new_defaults();
    ld.cfg->path = xstrdup(path);
    load_root(&ld, root);

out:
    cfg = ld.cfg;
    if (ld.n_total > 0)
        config_destroy(&cfg);
    cfg_flush_errors(&ld, diag);
    if (ld.have_doc)
        yaml_document_delete(&ld.doc);
    if (have_parser)
        yaml_parser_delete(&parser);
    free(ld.dir);
    free(buf);
    return cfg;
}

/* ---- lookups and teardown ---------------------------------------------- */

const config_agent_t *config_find_agent(const config_t *cfg, const char *id)
{
    if (!cfg || !id)
        return NULL;
    for (size_t i = 0; i < cfg->n_agents; i++)
        if (cfg->agents[i].id && !strcmp(cfg->agents[i].id, id))
            return &cfg->agents[i];
    return NULL;
}

const config_agent_t *config_find_agent_by_key(const config_t *cfg, const char *z85_public_key)
{
    if (!cfg || !z85_public_key)
        return NULL;
    for (size_t i = 0; i < cfg->n_agents; i++)
        if (cfg->agents[i].public_key && !strcmp(cfg->agents[i].public_key, z85_public_key))
            return &cfg->agents[i];
    return NULL;
}

const config_agency_t *config_find_agency(const config_t *cfg, const char *id)
{
    if (!cfg || !id)
        return NULL;
    for (size_t i = 0; i < cfg->n_agencies; i++)
        if (cfg->agencies[i].id && !strcmp(cfg->agencies[i].id, id))
            return &cfg->agencies[i];
    return NULL;
}

const config_channel_t *config_find_channel(const config_t *cfg, const char *id)
{
    if (!cfg || !id)
        return NULL;
    for (size_t i = 0; i < cfg->n_channels; i++)
        if (cfg->channels[i].id && !strcmp(cfg->channels[i].id, id))
            return &cfg->channels[i];
    return NULL;
}

static void free_secret(char *s)
{
    if (s) {
        sodium_memzero(s, strlen(s));
        free(s);
    }
}

void config_destroy(config_t **pcfg)
{
    if (!pcfg || !*pcfg)
        return;
    config_t *cfg = *pcfg;
    free(cfg->path);
    free(cfg->timezone);
    free(cfg->calendar.holidays);
    free(cfg->calendar.extra);
    cfg_free_strs(cfg->listen, cfg->n_listen);
    free(cfg->data_dir);
    free(cfg->schemas_dir);
    free(cfg->metrics);
    free(cfg->http_listen);
    free(cfg->http_public_url);
    for (size_t i = 0; i < cfg->n_http_users; i++) {
        free(cfg->http_users[i].name);
        free(cfg->http_users[i].agent);
        free(cfg->http_users[i].password_hash);
    }
    free(cfg->http_users);
    free_secret(cfg->secret_key);
    free(cfg->secret_key_file);
    free(cfg->fallback_agency);
    free(cfg->test_clock_agent);
    free(cfg->webhook_allow);
    free(cfg->privacy_key_file);
    sodium_memzero(cfg->privacy_key, sizeof cfg->privacy_key);
    for (size_t i = 0; i < cfg->n_agents; i++) {
        free(cfg->agents[i].id);
        free(cfg->agents[i].agency);
        free(cfg->agents[i].public_key);
    }
    free(cfg->agents);
    for (size_t i = 0; i < cfg->n_agencies; i++) {
        free(cfg->agencies[i].id);
        free(cfg->agencies[i].name);
        cfg_free_strs(cfg->agencies[i].channels, cfg->agencies[i].n_channels);
    }
    free(cfg->agencies);
    for (size_t i = 0; i < cfg->n_channels; i++) {
        config_channel_t *ch = &cfg->channels[i];
        free(ch->id);
        free(ch->url);
        free_secret(ch->secret);
        cfg_free_strs(ch->to, ch->n_to);
        free(ch->fallback);
    }
    free(cfg->channels);
    for (size_t i = 0; i < cfg->n_workflows; i++) {
        config_workflow_t *wf = &cfg->workflows[i];
        free(wf->name);
        cfg_free_match(wf->match, wf->n_match);
        for (size_t j = 0; j < wf->n_assign; j++) {
            config_assign_t *as = &wf->assign[j];
            free(as->agency);
            for (size_t k = 0; k < as->n_escalate; k++)
                cfg_free_strs(as->escalate[k].notify, as->escalate[k].n_notify);
            free(as->escalate);
            for (size_t k = 0; k < as->n_escalate_unresolved; k++)
                cfg_free_strs(as->escalate_unresolved[k].notify, as->escalate_unresolved[k].n_notify);
            free(as->escalate_unresolved);
        }
        free(wf->assign);
    }
    free(cfg->workflows);
    for (size_t i = 0; i < cfg->n_rhythms; i++) {
        free(cfg->rhythms[i].name);
        cfg_free_match(cfg->rhythms[i].match, cfg->rhythms[i].n_match);
    }
    free(cfg->rhythms);
    free(cfg);
    *pcfg = NULL;
}

void config_diag_free(config_diag_t *diag)
{
    if (!diag)
        return;
    for (size_t i = 0; i < diag->n; i++)
        free(diag->lines[i]);
    free(diag->lines);
    diag->lines = NULL;
    diag->n = 0;
}
