/*
 * config_channels.c — the channels section: each channel's id, kind, url
 * (http or https, its host inside broker.webhook_allow: IP literals always,
 * names resolved when the loader resolves hosts), secret or secret_file,
 * timeouts, concurrency, sms recipients and fallback; then the fallbacks
 * across channels, which must name another channel and never loop.
 */
#include "config_int.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

/* The url's host must lie inside webhook_allow: IP literals always, names when
 * resolving. */
static void check_host(loader_t *ld, const yaml_node_t *n, const char *where, const char *host)
{
    char h[256], allow[512];
    size_t len = strlen(host);
    if (len >= sizeof h) {
        cfg_err_at(ld, n, "%s.url: the host name is too long", where);
        return;
    }
    if (host[0] == '[' && len >= 2 && host[len - 1] == ']') {
        memcpy(h, host + 1, len - 2);
        h[len - 2] = '\0';
        h[strcspn(h, "%")] = '\0'; /* zone id */
    } else {
        memcpy(h, host, len + 1);
    }
    cfg_fmt_allow(ld->cfg, allow, sizeof allow);
    uint8_t addr[16];
    int fam = 0;
    if (inet_pton(AF_INET, h, addr) == 1)
        fam = 4;
    else if (inet_pton(AF_INET6, h, addr) == 1)
        fam = 6;
    if (fam) {
        if (!config_addr_allowed(ld->cfg, fam, addr))
            cfg_err_at(ld, n, "%s.url: address %s is outside broker.webhook_allow (%s); add its "
                       "network to webhook_allow or use an allowed host",
                       where, h, allow);
        return;
    }
    if (!ld->resolve_hosts)
        return;
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    int rc = getaddrinfo(h, NULL, &hints, &res);
    if (rc != 0) {
        cfg_err_at(ld, n, "%s.url: host %s does not resolve (%s); use a host name this machine can "
                   "resolve or an address",
                   where, cfg_qv(ld, h), gai_strerror(rc));
        return;
    }
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        const uint8_t *a = NULL;
        if (ai->ai_family == AF_INET) {
            a = (const uint8_t *)&((const struct sockaddr_in *)(const void *)ai->ai_addr)->sin_addr;
            fam = 4;
        } else if (ai->ai_family == AF_INET6) {
            a = (const uint8_t *)&((const struct sockaddr_in6 *)(const void *)ai->ai_addr)->sin6_addr;
            fam = 6;
        } else {
            continue;
        }
        if (!config_addr_allowed(ld->cfg, fam, a)) {
            char text[INET6_ADDRSTRLEN];
            if (!inet_ntop(fam == 4 ? AF_INET : AF_INET6, a, text, sizeof text))
                util_fmt(text, sizeof text, "?");
            cfg_err_at(ld, n, "%s.url: host %s resolves to %s, outside broker.webhook_allow (%s); "
                       "add its network to webhook_allow or use an allowed host",
                       where, cfg_qv(ld, h), text, allow);
            break;
        }
    }
    freeaddrinfo(res);
}

static void check_url(loader_t *ld, const yaml_node_t *n, const char *where, const char *url)
{
    CURLU *u = curl_url();
    if (!u) {
        cfg_err_at(ld, n, "%s.url: out of memory checking the URL", where);
        return;
    }
    char *scheme = NULL, *host = NULL;
    CURLUcode rc = curl_url_set(u, CURLUPART_URL, url, CURLU_NON_SUPPORT_SCHEME);
    if (rc != CURLUE_OK) {
        cfg_err_at(ld, n, "%s.url %s is not a valid URL (%s); write http://HOST:PORT/PATH", where,
                   cfg_qv(ld, url), curl_url_strerror(rc));
        goto done;
    }
    if (curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK || !scheme ||
        (strcmp(scheme, "http") != 0 && strcmp(scheme, "https") != 0)) {
        cfg_err_at(ld, n, "%s.url %s must start with http:// or https://", where, cfg_qv(ld, url));
        goto done;
    }
    if (curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK || !host || !*host) {
        cfg_err_at(ld, n, "%s.url %s has no host; write http://HOST:PORT/PATH", where,
                   cfg_qv(ld, url));
        goto done;
    }
    check_host(ld, n, where, host);
done:
    curl_free(scheme);
    curl_free(host);
    curl_url_cleanup(u);
}

/* Read a secret_file: one line, "whsec_...". */
static char *read_secret_file(loader_t *ld, const yaml_node_t *n, const char *where,
                              const char *path)
{
    char *buf = NULL;
    size_t len = 0;
    char what[WHERE_SIZE + 16];
    util_fmt(what, sizeof what, "%s.secret_file", where);
    int e = cfg_read_secret(ld, n, what, path, MAX_KEY_FILE_BYTES, &buf, &len);
    if (e < 0)
        return NULL;
    if (e) {
        cfg_err_at(ld, n, "%s.secret_file %s cannot be read: %s", where, cfg_qv(ld, path),
                   cfg_read_errstr(e));
        return NULL;
    }
    while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == '\r' || buf[len - 1] == ' ' ||
                       buf[len - 1] == '\t'))
        buf[--len] = '\0';
    char *secret = NULL;
    if (strlen(buf) != len || strchr(buf, '\n'))
        cfg_err_at(ld, n, "%s.secret_file %s must hold the secret on one line (whsec_ and base64)",
                   where, cfg_qv(ld, path));
    else if (!cfg_valid_secret(buf))
        cfg_err_at(ld, n,
                   "%s.secret_file %s does not hold a valid secret: it must be whsec_ followed "
                   "by standard base64 of at least 16 bytes",
                   where, cfg_qv(ld, path));
    else
        secret = xstrdup(buf);
    sodium_memzero(buf, len);
    free(buf);
    return secret;
}

void cfg_parse_channel(loader_t *ld, yaml_node_t *node, size_t idx, yaml_node_t **fallback_nodes)
{
    config_t *cfg = ld->cfg;
    char where[WHERE_SIZE];
    util_fmt(where, sizeof where, "channels[%zu]", idx);
    field_t f[] = {
        {"id", 0, 0}, {"kind", 0, 0}, {"url", 0, 0}, {"secret", 0, 0}, {"secret_file", 0, 0},
        {"timeout", 0, 0}, {"max_age", 0, 0}, {"to", 0, 0}, {"fallback", 0, 0},
        {"concurrency", 0, 0}, {"can_acknowledge", 0, 0},
    };
    if (!GET_FIELDS(ld, node, where))
        return;
    config_channel_t *ch = &cfg->channels[cfg->n_channels++];
    memset(ch, 0, sizeof *ch);
    ch->line = cfg_node_line(node);
    ch->concurrency = CONFIG_CHANNEL_CONCURRENCY;
    ch->timeout_ms = 5000;
    ch->max_age_ms = 24 * 3600 * 1000;
    char w[WHERE_SIZE];
    const char *s;
    yaml_node_t *v;

    if ((v = FV("id")) == NULL) {
        cfg_err_at(ld, node, "%s needs an id (e.g. id: police-hook)", where);
    } else if ((s = cfg_id_value(ld, v, "channel id")) != NULL) {
        const config_channel_t *dup = config_find_channel(cfg, s);
        if (dup)
            cfg_err_at(ld, v, "channel id %s is used twice (first at line %d); ids must be unique",
                       cfg_qv(ld, s), dup->line);
        else
            ch->id = xstrdup(s);
    }
    if (ch->id)
        util_fmt(where, sizeof where, "channel %s", ch->id);

    ch->kind = CHANNEL_WEBHOOK;
    if ((v = FV("kind")) != NULL) {
        util_fmt(w, sizeof w, "%s.kind", where);
        if ((s = cfg_scalar(ld, v, w)) != NULL) {
            if (!strcmp(s, "webhook"))
                ch->kind = CHANNEL_WEBHOOK;
            else if (!strcmp(s, "sms"))
                ch->kind = CHANNEL_SMS;
            else
                cfg_err_at(ld, v, "%s %s is not known; use webhook or sms", w, cfg_qv(ld, s));
        }
    }

    if ((v = FV("url")) == NULL) {
        cfg_err_at(ld, node, "%s needs a url (http:// or https://)", where);
    } else {
        util_fmt(w, sizeof w, "%s.url", where);
        if ((s = cfg_scalar(ld, v, w)) != NULL) {
            ch->url = xstrdup(s);
            check_url(ld, v, where, s);
        }
    }

    yaml_node_t *sec = FV("secret"), *secf = FV("secret_file");
    if (sec && secf) {
        cfg_err_at(ld, secf, "%s has both secret and secret_file; keep one", where);
    } else if (!sec && !secf) {
        cfg_err_at(ld, node, "%s needs a secret (secret: whsec_<base64>) or secret_file: a file "
                   "holding it", where);
    } else if (sec) {
        util_fmt(w, sizeof w, "%s.secret", where);
        if ((s = cfg_scalar(ld, sec, w)) != NULL) {
            if (cfg_valid_secret(s))
                ch->secret = xstrdup(s);
            else
                cfg_err_at(ld, sec,
                           "%s is not valid: it must be whsec_ followed by standard base64 "
                           "of at least 16 random bytes (e.g. whsec_$(head -c 24 /dev/urandom | "
                           "base64))",
                           w);
        }
    } else {
        util_fmt(w, sizeof w, "%s.secret_file", where);
        if ((s = cfg_scalar(ld, secf, w)) != NULL) {
            char *path = cfg_abs_path(ld, s);
            ch->secret = read_secret_file(ld, secf, where, path);
            free(path);
        }
    }

    util_fmt(w, sizeof w, "%s.timeout", where);
    ch->timeout_ms = cfg_duration(ld, FV("timeout"), w, ch->timeout_ms, 0);
    util_fmt(w, sizeof w, "%s.max_age", where);
    ch->max_age_ms = cfg_duration(ld, FV("max_age"), w, ch->max_age_ms, 1);
    if ((v = FV("concurrency")) != NULL) {
        util_fmt(w, sizeof w, "%s.concurrency", where);
        if ((s = cfg_scalar(ld, v, w)) != NULL) {
            char *end;
            errno = 0;
            long c = strtol(s, &end, 10);
            if (errno || end == s || *end || c < 1 || c > CONFIG_CHANNEL_CONCURRENCY_MAX)
                cfg_err_at(ld, v,
                           "%s %s must be a number of deliveries in flight at once from 1 to %d "
                           "(default %d), e.g. concurrency: 16 for a receiver that wants few "
                           "connections",
                           w, cfg_qv(ld, s), CONFIG_CHANNEL_CONCURRENCY_MAX,
                           CONFIG_CHANNEL_CONCURRENCY);
            else
                ch->concurrency = (int)c;
        }
    }

    v = FV("to");
    if (ch->kind == CHANNEL_WEBHOOK && v) {
        cfg_err_at(ld, v, "%s is a webhook and takes no `to`; recipients are for kind: sms", where);
    } else if (ch->kind == CHANNEL_SMS) {
        if (!v) {
            cfg_err_at(ld, node,
                       "%s is an sms channel and needs `to`: a list of phone numbers, e.g. "
                       "to: [\"+8613800000000\"]",
                       where);
        } else {
            util_fmt(w, sizeof w, "%s.to", where);
            char **to;
            yaml_node_t **items;
            size_t n = cfg_str_list(ld, v, w, &to, &items);
            ch->to = xcalloc(n, sizeof *ch->to);
            for (size_t i = 0; i < n; i++) {
                size_t len = strlen(to[i]);
                int ok = len <= 64;
                for (size_t j = 0; j < len && ok; j++)
                    if ((unsigned char)to[i][j] < 0x20 || to[i][j] == 0x7f)
                        ok = 0;
                if (!ok) {
                    cfg_err_at(ld, items[i], "%s %s is not a recipient (at most 64 printable "
                               "characters, e.g. +8613800000000)", w, cfg_qv(ld, to[i]));
                } else if (cfg_strs_has(ch->to, ch->n_to, to[i])) {
                    cfg_err_at(ld, items[i], "%s lists %s twice", w, cfg_qv(ld, to[i]));
                } else {
                    ch->to[ch->n_to++] = to[i];
                    to[i] = NULL;
                }
            }
            if (n == 0 && v->type == YAML_SEQUENCE_NODE && cfg_seq_len(v) == 0)
                cfg_err_at(ld, v, "%s is empty; an sms channel needs at least one recipient", w);
            cfg_free_strs(to, n);
            free(items);
        }
    }

    if ((v = FV("can_acknowledge")) != NULL && (s = cfg_scalar(ld, v, "can_acknowledge")) != NULL) {
        if (cfg_parse_bool(s, &ch->can_acknowledge) < 0)
            cfg_err_at(ld, v, "%s.can_acknowledge %s: expected true or false", where, cfg_qv(ld, s));
        else if (ch->can_acknowledge && ch->kind != CHANNEL_SMS)
            cfg_err_at(ld, v, "%s.can_acknowledge: only an sms channel's recipients acknowledge by "
                       "link or reply (PROTOCOL §11); remove it from this webhook channel", where);
        else if (ch->can_acknowledge && !cfg->http_listen)
            cfg_err_at(ld, v, "%s.can_acknowledge needs broker.http (listen, public_url): the links "
                       "and the SMS gateway's replies come in there", where);
    }

    if ((v = FV("fallback")) != NULL) {
        util_fmt(w, sizeof w, "%s.fallback", where);
        if ((s = cfg_id_value(ld, v, w)) != NULL) {
            ch->fallback = xstrdup(s);
            fallback_nodes[cfg->n_channels - 1] = v;
        }
    }
}

/* Channel fallbacks name other channels and never loop. */
void cfg_check_channel_fallbacks(loader_t *ld, yaml_node_t **fallback_nodes)
{
    config_t *cfg = ld->cfg;
    for (size_t i = 0; i < cfg->n_channels; i++) {
        const config_channel_t *ch = &cfg->channels[i];
        if (!ch->fallback || !ch->id)
            continue;
        if (!strcmp(ch->fallback, ch->id)) {
            cfg_err_at(ld, fallback_nodes[i],
                       "channel %s names itself as its fallback; name another "
                       "channel or remove fallback",
                       ch->id);
            continue;
        }
        if (!config_find_channel(cfg, ch->fallback)) {
            cfg_err_at(ld, fallback_nodes[i], "channel %s: fallback %s is not a configured channel",
                       ch->id, cfg_qv(ld, ch->fallback));
            continue;
        }
        /* Follow the chain; more steps than channels means a loop. */
        const config_channel_t *c = ch;
        size_t steps = 0;
        while (c && c->fallback && steps <= cfg->n_channels) {
            c = config_find_channel(cfg, c->fallback);
            steps++;
            if (c == ch)
                break;
        }
        if (c == ch || steps > cfg->n_channels)
            cfg_err_at(ld, fallback_nodes[i],
                       "channel %s: fallbacks form a loop through %s; end the "
                       "chain at a channel without fallback",
                       ch->id, cfg_qv(ld, ch->fallback));
    }
}
