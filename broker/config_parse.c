/*
 * config_parse.c — the configuration's small parsers, which know nothing of
 * YAML: durations ("15m"), sizes ("64M"), networks ("10.0.0.0/8") and the
 * webhook_allow test, CURVE keys and webhook secrets, YAML 1.1 booleans, and
 * paths (lexical clean-up, resolution against the config file's directory,
 * reading short key and secret files). The section readers call them and
 * report what they reject.
 */
#include "config_int.h"
#include "keyfile.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>


#define MAX_DURATION_MS ((int64_t)36500 * 86400000) /* 100 years: keeps now + d far from overflow */

/* ---- durations, sizes, keys, secrets ------------------------------------- */

int64_t config_parse_duration(const char *s)
{
    if (!s || *s < '0' || *s > '9')
        return -1;
    int64_t v = 0;
    while (*s >= '0' && *s <= '9') {
        v = v * 10 + (*s++ - '0');
        if (v > MAX_DURATION_MS)
            return -1;
    }
    int64_t mult;
    if (*s == '\0')
        return v == 0 ? 0 : -1; /* a bare number is only fine for 0 */
    else if (strcmp(s, "ms") == 0)
        mult = 1;
    else if (strcmp(s, "s") == 0)
        mult = 1000;
    else if (strcmp(s, "m") == 0)
        mult = 60 * 1000;
    else if (strcmp(s, "h") == 0)
        mult = 3600 * 1000;
    else if (strcmp(s, "d") == 0)
        mult = 86400 * 1000;
    else
        return -1;
    if (v > MAX_DURATION_MS / mult)
        return -1;
    return v * mult;
}

/* A size in bytes: digits, optionally K, M, G or T (binary multiples, either
 * case), optionally followed by "B" or "iB". 0 on success, -1 otherwise. */
int cfg_parse_size(const char *s, uint64_t *out)
{
    if (!s || *s < '0' || *s > '9')
        return -1;
    uint64_t v = 0;
    while (*s >= '0' && *s <= '9') {
        v = v * 10 + (uint64_t)(*s++ - '0');
        if (v > ((uint64_t)1 << 50))
            return -1;
    }
    unsigned shift = 0;
    switch (*s) {
    case 'k': case 'K': shift = 10; s++; break;
    case 'm': case 'M': shift = 20; s++; break;
    case 'g': case 'G': shift = 30; s++; break;
    case 't': case 'T': shift = 40; s++; break;
    default: break;
    }
    if (shift && (strcmp(s, "iB") == 0 || strcmp(s, "B") == 0))
        s += strlen(s);
    if (*s != '\0')
        return -1;
    if (shift && v > (((uint64_t)1 << 62) >> shift))
        return -1;
    *out = v << shift;
    return 0;
}

/* "64 MiB"-style text for messages. */
void cfg_fmt_size(char *buf, size_t n, uint64_t v)
{
    static const char *const units[] = {"bytes", "KiB", "MiB", "GiB", "TiB"};
    unsigned u = 0;
    while (u + 1 < UTIL_ARRAY_LEN(units) && v >= 1024 && v % 1024 == 0) {
        v /= 1024;
        u++;
    }
    util_fmt(buf, n, "%llu %s", (unsigned long long)v, units[u]);
}

/* 1 when s is "whsec_" + standard base64 (with padding) of at least 16 bytes. */
int cfg_valid_secret(const char *s)
{
    if (strncmp(s, "whsec_", 6) != 0)
        return 0;
    const char *b64 = s + 6;
    size_t len = strlen(b64);
    if (len == 0 || len > 4096)
        return 0;
    unsigned char *bin = xmalloc(len);
    size_t bin_len = 0;
    int rc = sodium_base642bin(bin, len, b64, len, NULL, &bin_len, NULL,
                               sodium_base64_VARIANT_ORIGINAL);
    sodium_memzero(bin, len);
    free(bin);
    return rc == 0 && bin_len >= 16;
}

/* ---- networks (webhook_allow) -------------------------------------------- */

/* Parse "10.0.0.0/8", "::1/128" or a bare address into a network. */
int cfg_parse_cidr(const char *s, config_cidr_t *out)
{
    char host[64];
    const char *slash = strchr(s, '/');
    size_t hlen = slash ? (size_t)(slash - s) : strlen(s);
    if (hlen == 0 || hlen >= sizeof host)
        return -1;
    memcpy(host, s, hlen);
    host[hlen] = '\0';
    memset(out, 0, sizeof *out);
    unsigned max;
    if (inet_pton(AF_INET, host, out->addr) == 1) {
        out->family = 4;
        max = 32;
    } else if (inet_pton(AF_INET6, host, out->addr) == 1) {
        out->family = 6;
        max = 128;
    } else {
        return -1;
    }
    unsigned prefix = max;
    if (slash) {
        const char *p = slash + 1;
        if (*p < '0' || *p > '9' || strlen(p) > 3)
            return -1;
        prefix = 0;
        for (; *p; p++) {
            if (*p < '0' || *p > '9')
                return -1;
            prefix = prefix * 10 + (unsigned)(*p - '0');
        }
        if (prefix > max)
            return -1;
    }
    out->prefix = (uint8_t)prefix;
    /* Clear host bits: "127.0.0.1/8" means 127.0.0.0/8. */
    for (unsigned bit = prefix; bit < max; bit++)
        out->addr[bit / 8] &= (uint8_t)~(0x80u >> (bit % 8));
    return 0;
}

static int in_net(const config_cidr_t *net, const uint8_t *addr)
{
    unsigned full = net->prefix / 8, rest = net->prefix % 8;
    if (memcmp(net->addr, addr, full) != 0)
        return 0;
    if (rest) {
        uint8_t mask = (uint8_t)(0xFFu << (8 - rest));
        if ((net->addr[full] & mask) != (addr[full] & mask))
            return 0;
    }
    return 1;
}

int config_addr_allowed(const config_t *cfg, int family, const uint8_t *addr)
{
    static const uint8_t v4mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF};
    if (!cfg || !addr || (family != 4 && family != 6))
        return 0;
    /* ::ffff:a.b.c.d reaches a.b.c.d: judge it by the IPv4 rules. */
    if (family == 6 && memcmp(addr, v4mapped, sizeof v4mapped) == 0) {
        family = 4;
        addr += 12;
    }
    for (size_t i = 0; i < cfg->n_webhook_allow; i++) {
        const config_cidr_t *net = &cfg->webhook_allow[i];
        if (net->family == family && in_net(net, addr))
            return 1;
    }
    return 0;
}

/* webhook_allow as text for messages. */
void cfg_fmt_allow(const config_t *cfg, char *buf, size_t n)
{
    if (cfg->n_webhook_allow == 0) {
        util_fmt(buf, n, "none configured");
        return;
    }
    size_t o = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < cfg->n_webhook_allow && o + 64 < n; i++) {
        const config_cidr_t *net = &cfg->webhook_allow[i];
        char a[INET6_ADDRSTRLEN];
        if (!inet_ntop(net->family == 4 ? AF_INET : AF_INET6, net->addr, a, sizeof a))
            util_fmt(a, sizeof a, "?");
        util_fmt(buf + o, n - o, "%s%s/%u", i ? ", " : "", a, (unsigned)net->prefix);
        o += strlen(buf + o);
    }
}

/* ---- booleans ------------------------------------------------------------ */

/* YAML 1.1 booleans, as carehub reads them (continue:, privacy: off). */
int cfg_parse_bool(const char *s, int *out)
{
    static const char *const t[] = {"true", "True", "TRUE", "yes", "Yes", "YES", "on", "On", "ON"};
    static const char *const f[] = {"false", "False", "FALSE", "no", "No", "NO", "off", "Off", "OFF"};
    for (size_t i = 0; i < UTIL_ARRAY_LEN(t); i++) {
        if (!strcmp(s, t[i])) {
            *out = 1;
            return 0;
        }
        if (!strcmp(s, f[i])) {
            *out = 0;
            return 0;
        }
    }
    return -1;
}

/* ---- paths and files ----------------------------------------------------- */

/* Normalise an absolute path lexically: no ".", "..", or repeated slashes. */
void cfg_clean_path(char *p)
{
    char *out = p;
    const char *in = p;
    size_t o = 0;
    while (*in) {
        while (*in == '/')
            in++;
        if (!*in)
            break;
        const char *seg = in;
        while (*in && *in != '/')
            in++;
        size_t len = (size_t)(in - seg);
        if (len == 1 && seg[0] == '.')
            continue;
        if (len == 2 && seg[0] == '.' && seg[1] == '.') {
            while (o > 0 && out[o - 1] != '/')
                o--;
            if (o > 0)
                o--; /* drop the slash too */
            continue;
        }
        out[o++] = '/';
        memmove(out + o, seg, len);
        o += len;
    }
    if (o == 0)
        out[o++] = '/';
    out[o] = '\0';
}

/* A path from the file, absolute (relative ones start at the config file's
 * directory) and cleaned; the caller frees it. */
char *cfg_abs_path(const loader_t *ld, const char *p)
{
    char *r;
    if (p[0] == '/') {
        r = xstrdup(p);
    } else {
        size_t n = strlen(ld->dir) + strlen(p) + 2;
        r = xmalloc(n);
        util_fmt(r, n, "%s/%s", ld->dir, p);
    }
    cfg_clean_path(r);
    return r;
}

/* Read a regular file of at most `max` bytes. 0 on success; else an errno value
 * (EFBIG when larger than max). *out is NUL-terminated. */
int cfg_read_file(const char *path, size_t max, char **out, size_t *len)
{
    return keyfile_read(path, 0, max, out, len);
}

/* Read a secret (a key file, a secret_file) as cfg_read_file does, but only from
 * a regular file named directly (O_NOFOLLOW: a symbolic link is refused) that
 * neither group nor others may read or write (mode & 077 == 0): keyfile.h. Those
 * two refusals are reported here, at node n, and give -1; other failures are
 * returned as errno values for the caller's own message. */
int cfg_read_secret(loader_t *ld, const yaml_node_t *n, const char *what, const char *path,
                    size_t max, char **out, size_t *len)
{
    int e = keyfile_read(path, 1, max, out, len);
    if (e == ELOOP || e == EPERM) {
        char why[4400];
        keyfile_why(e, path, max, why, sizeof why);
        cfg_err_at(ld, n, "%s %s %s", what, cfg_qv(ld, path), why);
        return -1;
    }
    return e;
}

const char *cfg_read_errstr(int e)
{
    if (e == EINVAL)
        return "not a regular file";
    if (e == EFBIG)
        return "file too large";
    return strerror(e);
}
