/*
 * config_security.c — what broker.security allows.
 *
 * With `security: none` an agent is whoever it names itself in hello: a
 * supervisor too. So such a broker listens only where no other host reaches it,
 * ipc:// endpoints and tcp:// on a loopback address (127.0.0.0/8, [::1],
 * localhost); `*`, 0.0.0.0, a LAN address, a host or an interface name is an
 * error naming the endpoint and the two ways out (loopback, or curve with keys).
 *
 * The test clock (carehubd --test-clock) lets an agent move every deadline, so
 * only the one agent named by broker.test_clock_agent (extension) may send
 * test_clock, and never on a broker with security: curve (a production one).
 * The key is checked at load; config_test_clock_check() is what carehubd asks
 * when it is started with --test-clock.
 */
#include "config_int.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>
#include <strings.h>

int cfg_endpoint_local(const char *ep)
{
    if (!strncmp(ep, "ipc://", 6))
        return 1;
    if (strncmp(ep, "tcp://", 6) != 0)
        return 0;
    const char *hp = ep + 6, *colon = strrchr(hp, ':');
    char host[256];
    size_t hlen = colon ? (size_t)(colon - hp) : 0;
    if (hlen == 0 || hlen >= sizeof host)
        return 0;
    memcpy(host, hp, hlen);
    host[hlen] = '\0';
    if (!strcasecmp(host, "localhost"))
        return 1;
    struct in_addr a4;
    if (inet_pton(AF_INET, host, &a4) == 1)
        return ((const unsigned char *)&a4)[0] == 127;
    struct in6_addr a6;
    if (hlen < 3 || host[0] != '[' || host[hlen - 1] != ']')
        return 0;
    host[hlen - 1] = '\0';
    if (inet_pton(AF_INET6, host + 1, &a6) != 1)
        return 0;
    return IN6_IS_ADDR_LOOPBACK(&a6) || (IN6_IS_ADDR_V4MAPPED(&a6) && a6.s6_addr[12] == 127);
}

void cfg_check_listen_security(loader_t *ld, const yaml_node_t *n, const char *ep)
{
    if (ld->cfg->security != SECURITY_NONE || cfg_endpoint_local(ep))
        return;
    cfg_err_at(ld, n,
               "broker.listen %s is reachable from other hosts, but broker.security is none%s: "
               "agents name themselves in hello, so anyone who reaches the port could act as any "
               "agent, a supervisor too; listen on loopback (tcp://127.0.0.1:PORT) or ipc://PATH, "
               "or set `security: curve` with keys (`carehubd keygen broker` writes broker.key for "
               "broker.secret_key_file, and `carehubd keygen AGENT` a pair per agent, whose .pub "
               "goes in its public_key)",
               cfg_qv(ld, ep), ld->security_node ? "" : " (the default)");
}

void cfg_check_test_clock_agent(loader_t *ld)
{
    const config_t *cfg = ld->cfg;
    if (!cfg->test_clock_agent)
        return;
    if (cfg->security == SECURITY_CURVE) {
        cfg_err_at(ld, ld->test_clock_node,
                   "broker.test_clock_agent is refused with security: curve: the test clock "
                   "(carehubd --test-clock) moves every deadline and is for tests on a loopback "
                   "broker with security: none; remove the key");
        return;
    }
    if (config_find_agent(cfg, cfg->test_clock_agent))
        return;
    /* A suggestion, not the list: a district configures hundreds of agents. */
    const char *names[256];
    size_t nn = 0;
    for (size_t i = 0; i < cfg->n_agents && nn < UTIL_ARRAY_LEN(names); i++)
        if (cfg->agents[i].id)
            names[nn++] = cfg->agents[i].id;
    char hint[96];
    cfg_suggest_paren(hint, sizeof hint, cfg->test_clock_agent, names, nn);
    cfg_err_at(ld, ld->test_clock_node,
               "broker.test_clock_agent %s is not a configured agent%s; use the id of one "
               "listed under agents:", cfg_qv(ld, cfg->test_clock_agent), hint);
}

int config_test_clock_check(const config_t *cfg, char *why, size_t whylen)
{
    if (cfg->security == SECURITY_CURVE) {
        util_fmt(why, whylen,
                 "--test-clock is refused with broker.security: curve: the test clock moves every "
                 "deadline and is for tests on a loopback broker with security: none; start "
                 "without --test-clock");
        return -1;
    }
    if (!cfg->test_clock_agent) {
        util_fmt(why, whylen,
                 "--test-clock needs broker.test_clock_agent, the id of the one configured agent "
                 "that may move the clock (e.g. test_clock_agent: supervisor-01; docs/config.md)");
        return -1;
    }
    return 0;
}
