/*
 * config_broker.c — the broker section (security, listen endpoints, paths,
 * metrics, the broker's CURVE key file, durations, sizes and the LMDB map
 * bounds, fallback_agency, test_clock_agent, webhook_allow) and the privacy
 * section (the 32-byte key file or `privacy: off`, retention). Values left out
 * keep the defaults set by config.c. config_security.c judges each endpoint as it
 * is read and test_clock_agent once the agents are; fallback_agency waits for the
 * agencies.
 */
#include "config_int.h"
#include "keyfile.h"
#include "httpd.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>

#define DEFAULT_LISTEN "tcp://127.0.0.1:5570"
#define MAX_MSG_MIN ((uint64_t)1024)
#define MAX_MSG_MAX ((uint64_t)64 << 20)
#define MAP_MIN ((uint64_t)64 << 10)
#define MAP_LIMIT ((uint64_t)64 << 40)
#define PRIVACY_HINT "32 random bytes: (umask 077; head -c 32 /dev/urandom > data.key)"

/* ---- broker -------------------------------------------------------------- */

/* Check one ZeroMQ endpoint; returns it (ipc paths made absolute) or NULL. */
static char *endpoint(loader_t *ld, const yaml_node_t *n, const char *what, const char *s)
{
    static const char hint[] = "write tcp://HOST:PORT (e.g. tcp://127.0.0.1:5570, port * for "
                               "any free port) or ipc://PATH";
    if (!strncmp(s, "tcp://", 6)) {
        const char *hp = s + 6;
        const char *colon = strrchr(hp, ':');
        if (!colon) {
            cfg_err_at(ld, n, "%s %s has no port; %s", what, cfg_qv(ld, s), hint);
            return NULL;
        }
        const char *port = colon + 1;
        size_t hlen = (size_t)(colon - hp);
        int port_ok = !strcmp(port, "*");
        if (!port_ok && *port && strlen(port) <= 5) {
            long v = 0;
            port_ok = 1;
            for (const char *c = port; *c; c++) {
                if (*c < '0' || *c > '9')
                    port_ok = 0;
                else
                    v = v * 10 + (*c - '0');
            }
            if (v > 65535)
                port_ok = 0;
        }
        if (!port_ok) {
            cfg_err_at(ld, n, "%s %s: port must be 0-65535 or *; %s", what, cfg_qv(ld, s), hint);
            return NULL;
        }
        int host_ok = hlen > 0 && hlen < 256;
        if (host_ok && hp[0] == '[') {
            char v6[256];
            host_ok = hlen > 2 && hp[hlen - 1] == ']';
            if (host_ok) {
                memcpy(v6, hp + 1, hlen - 2);
                v6[hlen - 2] = '\0';
                struct in6_addr a6;
                host_ok = inet_pton(AF_INET6, v6, &a6) == 1;
            }
        } else if (host_ok && !(hlen == 1 && hp[0] == '*')) {
            for (size_t i = 0; i < hlen; i++) {
                char c = hp[i];
                if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                      c == '.' || c == '-' || c == '_'))
                    host_ok = 0;
            }
        }
        if (!host_ok) {
            cfg_err_at(ld, n,
                       "%s %s: the host must be *, an IPv4 address, [IPv6] in brackets, a host or "
                       "an interface name; %s",
                       what, cfg_qv(ld, s), hint);
            return NULL;
        }
        return xstrdup(s);
    }
    if (!strncmp(s, "ipc://", 6)) {
        const char *p = s + 6;
        if (!*p) {
            cfg_err_at(ld, n, "%s %s has no path; %s", what, cfg_qv(ld, s), hint);
            return NULL;
        }
        if (!strcmp(p, "*") || p[0] == '@') /* any free name; Linux abstract socket */
            return xstrdup(s);
        char *abs = cfg_abs_path(ld, p);
        struct sockaddr_un sun;
        if (strlen(abs) >= sizeof sun.sun_path) {
            cfg_err_at(ld, n, "%s %s: the socket path %s is %zu bytes, longer than the system's "
                       "limit of %zu; use a shorter path",
                       what, cfg_qv(ld, s), cfg_qv(ld, abs), strlen(abs), sizeof sun.sun_path - 1);
            free(abs);
            return NULL;
        }
        size_t len = strlen(abs) + 7;
        char *r = xmalloc(len);
        util_fmt(r, len, "ipc://%s", abs);
        free(abs);
        return r;
    }
    if (!strncmp(s, "inproc://", 9)) {
        cfg_err_at(ld, n,
                   "%s %s: inproc:// endpoints are reachable only inside the broker process; %s",
                   what, cfg_qv(ld, s), hint);
        return NULL;
    }
    const char *sep = strstr(s, "://");
    if (sep) {
        char t[32];
        size_t tl = (size_t)(sep - s) < sizeof t - 1 ? (size_t)(sep - s) : sizeof t - 1;
        memcpy(t, s, tl);
        t[tl] = '\0';
        cfg_err_at(ld, n, "%s %s: transport %s is not supported; %s", what, cfg_qv(ld, s),
                   cfg_qv(ld, t), hint);
        return NULL;
    }
    cfg_err_at(ld, n, "%s %s is not a ZeroMQ endpoint; %s", what, cfg_qv(ld, s), hint);
    return NULL;
}

/* Read a CURVE key file: its first line must be 40 Z85 characters. */
static char *read_z85_file(loader_t *ld, const yaml_node_t *n, const char *what, const char *path)
{
    char *buf = NULL;
    size_t len = 0;
    int e = cfg_read_secret(ld, n, what, path, MAX_KEY_FILE_BYTES, &buf, &len);
    if (e < 0)
        return NULL;
    if (e == EFBIG) {
        /* Only the first line matters; a long file is still wrong for a key. */
        cfg_err_at(ld, n,
                   "%s %s is larger than %d bytes; a key file holds one 40-character Z85 key", what,
                   cfg_qv(ld, path), MAX_KEY_FILE_BYTES);
        return NULL;
    }
    if (e) {
        cfg_err_at(ld, n, "%s %s cannot be read: %s", what, cfg_qv(ld, path), cfg_read_errstr(e));
        return NULL;
    }
    char key41[41];
    char *key = NULL;
    if (keyfile_z85_line(buf, key41))
        key = xstrdup(key41);
    else
        cfg_err_at(ld, n,
                   "%s %s: the first line is not a key (%zu characters; expected exactly 40 Z85 "
                   "characters as zmq_curve_keypair writes them)",
                   what, cfg_qv(ld, path), strlen(buf));
    sodium_memzero(key41, sizeof key41);
    sodium_memzero(buf, len);
    free(buf);
    return key;
}

/* broker.map_size or broker.map_max: a size from 64K to 64T into *out. 1 when
 * read, 0 when absent or not a value (reported), -1 after reporting a bad size
 * (*out unchanged). */
static int map_bound(loader_t *ld, yaml_node_t *v, const char *what, uint64_t *out)
{
    const char *s;
    uint64_t sz;
    if (!v || (s = cfg_scalar(ld, v, what)) == NULL)
        return 0;
    if (cfg_parse_size(s, &sz) != 0 || sz < MAP_MIN || sz > MAP_LIMIT) {
        cfg_err_at(ld, v, "%s %s must be a size from 64K to 64T: a number of bytes or one "
                   "with K, M, G or T (64M, 8G)", what, cfg_qv(ld, s));
        return -1;
    }
    *out = sz;
    return 1;
}

/* The HOST:PORT of an HTTP listener (httpd.h) at v, copied; NULL when v is absent or
 * wrong (then an error saying so, with `example`). */
static char *listen_address(loader_t *ld, yaml_node_t *v, const char *what, const char *example)
{
    const char *s = v ? cfg_scalar(ld, v, what) : NULL;
    char why[256];
    if (!s)
        return NULL;
    if (httpd_check_address(s, why, sizeof why) < 0) {
        cfg_err_at(ld, v, "%s %s: %s (e.g. %s; port 0: any free one)", what, cfg_qv(ld, s), why,
                   example);
        return NULL;
    }
    return xstrdup(s);
}

/* broker.http: {listen: HOST:PORT, public_url?: http(s)://…} */
static void parse_http(loader_t *ld, yaml_node_t *node)
{
    config_t *cfg = ld->cfg;
    field_t f[] = {{"listen", 0, 0}, {"public_url", 0, 0}, {"users", 0, 0}};
    if (!GET_FIELDS(ld, node, "broker.http"))
        return;
    ld->users_node = FV("users"); /* read after the agents (config_users.c) */
    yaml_node_t *v;
    const char *s;
    if (!FV("listen"))
        cfg_err_at(ld, node, "broker.http needs listen: the HOST:PORT of the phone and web "
                   "listener (e.g. 127.0.0.1:8470, behind a reverse proxy)");
    cfg->http_listen = listen_address(ld, FV("listen"), "broker.http.listen", "127.0.0.1:8470");
    if ((v = FV("public_url")) != NULL && (s = cfg_scalar(ld, v, "broker.http.public_url")) != NULL) {
        size_t n = strlen(s);
        while (n > 0 && s[n - 1] == '/')
            n--;
        int ok = (!strncmp(s, "http://", 7) && n > 7) || (!strncmp(s, "https://", 8) && n > 8);
        for (size_t i = 0; i < n && ok; i++)
            if ((unsigned char)s[i] <= 0x20 || s[i] == 0x7f || s[i] == '"' || s[i] == '<' ||
                s[i] == '>' || s[i] == '?' || s[i] == '#')
                ok = 0;
        if (!ok)
            cfg_err_at(ld, v, "broker.http.public_url %s is not an http:// or https:// URL without "
                       "spaces, query or fragment (e.g. https://hub.example.cn): phones open "
                       "<public_url>/a/<token>", cfg_qv(ld, s));
        else
            cfg->http_public_url = xstrndup(s, n);
    }
}

void cfg_parse_broker(loader_t *ld, yaml_node_t *node)
{
    config_t *cfg = ld->cfg;
    field_t f[] = {
        {"listen", 0, 0}, {"data_dir", 0, 0}, {"security", 0, 0}, {"secret_key_file", 0, 0},
        {"heartbeat", 0, 0}, {"max_message_bytes", 0, 0}, {"fallback_agency", 0, 0},
        {"default_ack_within", 0, 0}, {"redeliver_every", 0, 0}, {"quiet_close", 0, 0}, {"timezone", 0, 0},
        {"webhook_allow", 0, 0}, {"schemas", 0, 0}, {"map_size", 0, 0}, {"map_max", 0, 0},
        {"peer_queue", 0, 0}, {"metrics", 0, 0}, {"test_clock_agent", 0, 0}, {"http", 0, 0},
    };
    ld->broker_node = node;
    if (node && !cfg_is_null(node) && !GET_FIELDS(ld, node, "broker"))
        return;
    yaml_node_t *v;
    const char *s;

    /* security, before listen: with none, the broker listens on loopback only */
    int security_known = 1;
    if ((v = FV("security")) != NULL && (s = cfg_scalar(ld, v, "broker.security")) != NULL) {
        ld->security_node = v;
        security_known = !strcmp(s, "none") || !strcmp(s, "curve");
        if (!strcmp(s, "curve"))
            cfg->security = SECURITY_CURVE;
        else if (!security_known)
            cfg_err_at(ld, v, "broker.security %s is not known; use none or curve", cfg_qv(ld, s));
    }

    /* listen */
    if ((v = FV("listen")) != NULL) {
        char **eps;
        yaml_node_t **items;
        size_t n = cfg_str_list(ld, v, "broker.listen", &eps, &items);
        if (v->type == YAML_SEQUENCE_NODE && cfg_seq_len(v) == 0)
            cfg_err_at(ld, v,
                       "broker.listen needs at least one endpoint, e.g. tcp://127.0.0.1:5570");
        for (size_t i = 0; i < n; i++) {
            char *ep = endpoint(ld, items[i], "broker.listen", eps[i]);
            if (!ep)
                continue;
            if (cfg_strs_has(cfg->listen, cfg->n_listen, ep)) {
                cfg_err_at(ld, items[i], "broker.listen lists %s twice", cfg_qv(ld, ep));
                free(ep);
                continue;
            }
            if (security_known)
                cfg_check_listen_security(ld, items[i], ep);
            cfg->listen = xrealloc(cfg->listen, (cfg->n_listen + 1) * sizeof *cfg->listen);
            cfg->listen[cfg->n_listen++] = ep;
        }
        cfg_free_strs(eps, n);
        free(items);
    }
    if (cfg->n_listen == 0) {
        cfg->listen = xmalloc(sizeof *cfg->listen);
        cfg->listen[cfg->n_listen++] = xstrdup(DEFAULT_LISTEN);
    }

    /* paths */
    if ((v = FV("data_dir")) != NULL && (s = cfg_scalar(ld, v, "broker.data_dir")) != NULL)
        cfg->data_dir = cfg_abs_path(ld, s);
    if (!cfg->data_dir)
        cfg->data_dir = cfg_abs_path(ld, "var/carehub");
    if ((v = FV("schemas")) != NULL && (s = cfg_scalar(ld, v, "broker.schemas")) != NULL)
        cfg->schemas_dir = cfg_abs_path(ld, s);

    /* metrics (extension): "HOST:PORT" of the Prometheus endpoint; loopback by default */
    cfg->metrics = listen_address(ld, FV("metrics"), "broker.metrics", "127.0.0.1:9570");

    /* http (PROTOCOL §11): the phone/web listener and how phones reach it */
    if ((v = FV("http")) != NULL && !cfg_is_null(v))
        parse_http(ld, v);

    /* the broker's secret key (curve) */
    yaml_node_t *skf = FV("secret_key_file");
    if (skf && (s = cfg_scalar(ld, skf, "broker.secret_key_file")) != NULL)
        cfg->secret_key_file = cfg_abs_path(ld, s);
    if (cfg->security == SECURITY_CURVE) {
        if (!skf)
            cfg_err_at(ld, ld->security_node,
                       "security: curve needs broker.secret_key_file, the broker's secret key file "
                       "(its first line: 40 Z85 characters, as zmq_curve_keypair gives)");
        else if (cfg->secret_key_file)
            cfg->secret_key = read_z85_file(ld, skf, "broker.secret_key_file",
                                            cfg->secret_key_file);
    }

    /* durations */
    cfg->heartbeat_ms = cfg_duration(ld, FV("heartbeat"), "broker.heartbeat", cfg->heartbeat_ms, 0);
    cfg->default_ack_within_ms = cfg_deadline_duration(
        ld, FV("default_ack_within"), "broker.default_ack_within", cfg->default_ack_within_ms, 1,
        &cfg->default_ack_within_wd);
    cfg->redeliver_every_ms = cfg_duration(ld, FV("redeliver_every"), "broker.redeliver_every",
                                           cfg->redeliver_every_ms, 0);
    cfg->quiet_close_ms = cfg_deadline_duration(ld, FV("quiet_close"), "broker.quiet_close",
                                                cfg->quiet_close_ms, 0, &cfg->quiet_close_wd);
    cfg_parse_timezone(ld, FV("timezone"));

    /* sizes */
    if ((v = FV("max_message_bytes")) != NULL &&
        (s = cfg_scalar(ld, v, "broker.max_message_bytes")) != NULL) {
        uint64_t sz;
        if (cfg_parse_size(s, &sz) != 0 || sz < MAX_MSG_MIN || sz > MAX_MSG_MAX)
            cfg_err_at(ld, v,
                       "broker.max_message_bytes %s must be a number of bytes from 1024 to "
                       "67108864 (64M), e.g. 262144",
                       cfg_qv(ld, s));
        else
            cfg->max_message_bytes = (size_t)sz;
    }
    if ((v = FV("peer_queue")) != NULL && (s = cfg_scalar(ld, v, "broker.peer_queue")) != NULL) {
        char *end;
        errno = 0;
        long q = strtol(s, &end, 10);
        if (errno || end == s || *end || q < 16 || q > 1000000)
            cfg_err_at(ld, v,
                       "broker.peer_queue %s must be a number of messages from 16 to 1000000 "
                       "(the messages queued towards one agent before it counts as not "
                       "reading), e.g. 4096",
                       cfg_qv(ld, s));
        else
            cfg->peer_queue = (int)q;
    }
    /* map_size and map_max (extensions): the map starts at one and grows up to the other */
    int size_rc = map_bound(ld, FV("map_size"), "broker.map_size", &cfg->map_size);
    int max_rc = map_bound(ld, FV("map_max"), "broker.map_max", &cfg->map_max);
    if (size_rc >= 0 && max_rc >= 0 && cfg->map_size > cfg->map_max) {
        if (size_rc == 0) {
            cfg->map_size = cfg->map_max; /* a small map_max alone shrinks the start size too */
        } else {
            char a[32], b[32];
            cfg_fmt_size(a, sizeof a, cfg->map_size);
            cfg_fmt_size(b, sizeof b, cfg->map_max);
            cfg_err_at(ld, FV("map_size"), "broker.map_size (%s) is larger than broker.map_max "
                       "(%s); the map starts at map_size and grows up to map_max", a, b);
        }
    }

    /* fallback agency: checked against the agencies later */
    if ((v = FV("fallback_agency")) != NULL &&
        (s = cfg_id_value(ld, v, "broker.fallback_agency")) != NULL) {
        free(cfg->fallback_agency);
        cfg->fallback_agency = xstrdup(s);
        ld->fallback_node = v;
    }

    /* test_clock_agent (extension): checked against the agents and security later */
    if ((v = FV("test_clock_agent")) != NULL &&
        (s = cfg_id_value(ld, v, "broker.test_clock_agent")) != NULL) {
        cfg->test_clock_agent = xstrdup(s);
        ld->test_clock_node = v;
    }

    /* webhook_allow */
    if ((v = FV("webhook_allow")) != NULL) {
        char **nets;
        yaml_node_t **items;
        size_t n = cfg_str_list(ld, v, "broker.webhook_allow", &nets, &items);
        cfg->webhook_allow = xcalloc(n, sizeof *cfg->webhook_allow);
        for (size_t i = 0; i < n; i++) {
            config_cidr_t net;
            if (cfg_parse_cidr(nets[i], &net) != 0) {
                cfg_err_at(ld, items[i],
                           "broker.webhook_allow %s is not a network: write an address with a "
                           "prefix length, like 127.0.0.0/8, 10.1.2.0/24 or ::1/128 (a bare "
                           "address is /32 or /128)",
                           cfg_qv(ld, nets[i]));
                continue;
            }
            cfg->webhook_allow[cfg->n_webhook_allow++] = net;
        }
        cfg_free_strs(nets, n);
        free(items);
    }
}

/* ---- privacy ------------------------------------------------------------- */

void cfg_parse_privacy(loader_t *ld, yaml_node_t *node, const yaml_node_t *root)
{
    config_t *cfg = ld->cfg;
    if (!node || cfg_is_null(node)) {
        cfg_err_at(ld, node ? node : root,
                   "privacy is not configured, so the broker will not start: set privacy.key_file "
                   "(" PRIVACY_HINT ") or `privacy: off` for tests and demos");
        return;
    }
    if (node->type == YAML_SCALAR_NODE) {
        int on;
        const char *s = (const char *)node->data.scalar.value;
        if (cfg_parse_bool(s, &on) == 0 && !on) {
            cfg->privacy_off = 1;
            return;
        }
        cfg_err_at(ld, node,
                   "privacy: %s is not a setting; give privacy.key_file (" PRIVACY_HINT
                   ") or write `privacy: off` for tests and demos",
                   cfg_qv(ld, s));
        return;
    }
    field_t f[] = {{"key_file", 0, 0}, {"retention", 0, 0}};
    if (!GET_FIELDS(ld, node, "privacy"))
        return;
    cfg->retention_ms =
        cfg_duration(ld, FV("retention"), "privacy.retention", cfg->retention_ms, 0);
    yaml_node_t *v = FV("key_file");
    if (!v) {
        cfg_err_at(ld, node,
                   "privacy needs key_file (" PRIVACY_HINT "), or write `privacy: off` for tests "
                   "and demos");
        return;
    }
    const char *s = cfg_scalar(ld, v, "privacy.key_file");
    if (!s)
        return;
    cfg->privacy_key_file = cfg_abs_path(ld, s);
    char *buf = NULL;
    size_t len = 0;
    int e = cfg_read_secret(ld, v, "privacy.key_file", cfg->privacy_key_file, 32, &buf, &len);
    if (e < 0)
        return;
    if (e == EFBIG) {
        cfg_err_at(ld, v, "privacy.key_file %s holds more than 32 bytes; it must hold exactly 32 "
                   "random bytes (head -c 32 /dev/urandom > %s)",
                   cfg_qv(ld, cfg->privacy_key_file), cfg->privacy_key_file);
        return;
    }
    if (e) {
        cfg_err_at(ld, v, "privacy.key_file %s cannot be read: %s; create it with: (umask 077; "
                   "head -c 32 /dev/urandom > %s)",
                   cfg_qv(ld, cfg->privacy_key_file), cfg_read_errstr(e), cfg->privacy_key_file);
        return;
    }
    if (len != 32)
        cfg_err_at(ld, v, "privacy.key_file %s holds %zu bytes; it must hold exactly 32 random "
                   "bytes (head -c 32 /dev/urandom > %s)",
                   cfg_qv(ld, cfg->privacy_key_file), len, cfg->privacy_key_file);
    else
        memcpy(cfg->privacy_key, buf, 32);
    sodium_memzero(buf, len);
    free(buf);
}
