/*
 * config_users.c — broker.http.users: the logins of the supervisors' web view
 * (docs/web.md, docs/config.md "broker.http"). Read after the agents, since a
 * user is bound to one: each entry is {name, agent, password_hash} with
 *   name           an id, unique among the users;
 *   agent          a configured agent of role supervisor (its least privilege is
 *                  the user's; a school's or an agency's agent is refused here);
 *   password_hash  an argon2id string as `carehubd passwd` prints it.
 */
#include "config_int.h"

#include <stdlib.h>
#include <string.h>

#include "util.h"

static void parse_user(loader_t *ld, yaml_node_t *node, size_t i)
{
    config_t *cfg = ld->cfg;
    field_t f[] = {{"name", 0, 0}, {"agent", 0, 0}, {"password_hash", 0, 0}};
    if (!GET_FIELDS(ld, node, "broker.http.users[]"))
        return;
    yaml_node_t *v;
    const char *name = NULL, *agent = NULL, *hash = NULL;
    for (size_t k = 0; k < UTIL_ARRAY_LEN(f); k++)
        if (!f[k].val)
            cfg_err_at(ld, node, "broker.http.users[%zu] needs %s (each user: name, agent — a "
                       "supervisor agent — and password_hash from `carehubd passwd`)", i, f[k].name);
    if ((v = FV("name")) != NULL && (name = cfg_id_value(ld, v, "broker.http.users[].name")) != NULL)
        for (size_t j = 0; j < cfg->n_http_users; j++)
            if (strcmp(cfg->http_users[j].name, name) == 0) {
                cfg_err_at(ld, v, "broker.http.users: user %s is listed twice; names are unique",
                           cfg_qv(ld, name));
                name = NULL;
                break;
            }
    if ((v = FV("agent")) != NULL && (agent = cfg_id_value(ld, v, "broker.http.users[].agent")) != NULL) {
        const config_agent_t *a = config_find_agent(cfg, agent);
        if (!a) {
            cfg_err_at(ld, v, "broker.http.users[].agent %s is not a configured agent: bind each "
                       "user to an agent of role supervisor", cfg_qv(ld, agent));
            agent = NULL;
        } else if (a->role != ROLE_SUPERVISOR) {
            cfg_err_at(ld, v, "broker.http.users[].agent %s has role %s: the web view is for "
                       "supervisors only, bind the user to an agent of role supervisor",
                       cfg_qv(ld, agent), config_role_name(a->role));
            agent = NULL;
        }
    }
    if ((v = FV("password_hash")) != NULL &&
        (hash = cfg_scalar(ld, v, "broker.http.users[].password_hash")) != NULL &&
        (strncmp(hash, "$argon2id$", 10) != 0 || strlen(hash) >= 128)) {
        /* the value is a secret's hash: never quoted in the message */
        cfg_err_at(ld, v, "broker.http.users[].password_hash is not an argon2id hash: make one "
                   "with `carehubd passwd` (it starts $argon2id$)");
        hash = NULL;
    }
    if (!name || !agent || !hash)
        return;
    config_user_t *u = &cfg->http_users[cfg->n_http_users++];
    u->name = xstrdup(name);
    u->agent = xstrdup(agent);
    u->password_hash = xstrdup(hash);
}

void cfg_parse_users(loader_t *ld)
{
    yaml_node_t *node = ld->users_node;
    if (!node || cfg_is_null(node))
        return;
    if (node->type != YAML_SEQUENCE_NODE) {
        cfg_err_at(ld, node, "broker.http.users must be a list of {name, agent, password_hash}; "
                   "found %s", cfg_kind_name(node));
        return;
    }
    size_t n = cfg_seq_len(node);
    ld->cfg->http_users = xcalloc(n ? n : 1, sizeof *ld->cfg->http_users);
    for (size_t i = 0; i < n; i++)
        parse_user(ld, cfg_seq_at(ld, node, i), i);
}

const config_user_t *config_find_user(const config_t *cfg, const char *name)
{
    for (size_t i = 0; i < cfg->n_http_users; i++)
        if (strcmp(cfg->http_users[i].name, name) == 0)
            return &cfg->http_users[i];
    return NULL;
}
