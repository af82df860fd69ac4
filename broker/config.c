/*
 * config.c — load and check the YAML configuration; see config.h and
 * docs/config.md.
 *
 * The file is parsed with libyaml's document API into a node tree, then walked
 * section by section against a fixed shape: every mapping is read through
 * get_fields(), which knows the section's keys and reports any other as an
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
 * agents, workflows; then the cross-references among channels.
 */
#include "config.h"
#include "metrics.h"

#include "util.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include <yaml.h>
#include <zmq.h>

#define FMT(a, b) __attribute__((format(printf, a, b)))

enum {
    MAX_CONFIG_BYTES = 16 << 20, /* a config larger than this is a mistake */
    MAX_FLOW_DEPTH = 100,        /* libyaml's scanner is quadratic in flow nesting */
    MAX_ERRORS = 200,            /* errors kept; the rest are counted */
    MAX_KEY_FILE_BYTES = 4096,   /* key and secret files: one short line */
    Z85_KEY_LEN = 40,
    QBUFS = 4,
    QBUF_SIZE = 256,
    WHERE_SIZE = 160,
};

#define MAX_DURATION_MS ((int64_t)36500 * 86400000) /* 100 years: keeps now + d far from overflow */
#define DEFAULT_LISTEN "tcp://127.0.0.1:5570"
#define MAX_MSG_MIN ((uint64_t)1024)
#define MAX_MSG_MAX ((uint64_t)64 << 20)
#define MAP_MIN ((uint64_t)64 << 10)
#define MAP_LIMIT ((uint64_t)64 << 40)
#define PRIVACY_HINT "32 random bytes: head -c 32 /dev/urandom > data.key"

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

static const char *const role_names[ROLE_COUNT] = {
    "school", "reporter", "monitor", "agency", "supervisor",
};

static const char *const severities[] = {"critical", "high", "normal", "low"};

/* One collected error, sorted by position before it is handed out. */
typedef struct {
    int line, col; /* 1-based; 0 = the file as a whole */
    size_t seq;    /* report order, to keep the sort stable */
    char *msg;
} cerr_t;

typedef struct {
    const char *path;     /* the config file as given, the FILE of every message */
    char *dir;            /* its directory, absolute; relative paths start here */
    int resolve_hosts;
    yaml_document_t doc;
    int have_doc;
    config_t *cfg;

    cerr_t *errs;
    size_t n_errs, cap_errs, n_total;

    const yaml_node_t *broker_node;   /* for messages about defaults */
    const yaml_node_t *fallback_node; /* broker.fallback_agency, when given */
    const yaml_node_t *security_node;
    int map_size_set;

    char qbuf[QBUFS][QBUF_SIZE]; /* ring of quoted values for messages */
    unsigned qnext;
} loader_t;

/* ---- errors -------------------------------------------------------------- */

static void add_err_v(loader_t *ld, int line, int col, const char *fmt, va_list ap)
{
    ld->n_total++;
    if (ld->n_errs >= MAX_ERRORS)
        return;
    va_list ap2;
    va_copy(ap2, ap);
    int n = vsnprintf(NULL, 0, fmt, ap);
    char *msg = xmalloc(n > 0 ? (size_t)n + 1 : 1);
    if (n > 0)
        (void)vsnprintf(msg, (size_t)n + 1, fmt, ap2);
    else
        msg[0] = '\0';
    va_end(ap2);
    if (ld->n_errs == ld->cap_errs) {
        ld->cap_errs = ld->cap_errs ? 2 * ld->cap_errs : 16;
        ld->errs = xrealloc(ld->errs, ld->cap_errs * sizeof *ld->errs);
    }
    size_t seq = ld->n_errs;
    ld->errs[seq] = (cerr_t){line, col, seq, msg};
    ld->n_errs++;
}

static void FMT(4, 5) err_pos(loader_t *ld, int line, int col, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    add_err_v(ld, line, col, fmt, ap);
    va_end(ap);
}

/* An error located at a node (or at the file when node is NULL). */
static void FMT(3, 4) err_at(loader_t *ld, const yaml_node_t *node, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (node)
        add_err_v(ld, (int)node->start_mark.line + 1, (int)node->start_mark.column + 1, fmt, ap);
    else
        add_err_v(ld, 0, 0, fmt, ap);
    va_end(ap);
}

static int node_line(const yaml_node_t *n)
{
    return n ? (int)n->start_mark.line + 1 : 0;
}

static int cmp_err(const void *a, const void *b)
{
    const cerr_t *x = a, *y = b;
    if (x->line != y->line)
        return x->line < y->line ? -1 : 1;
    if (x->col != y->col)
        return x->col < y->col ? -1 : 1;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

static void diag_push(config_diag_t *diag, char *line)
{
    diag->lines = xrealloc(diag->lines, (diag->n + 1) * sizeof *diag->lines);
    diag->lines[diag->n++] = line;
}

/* Hand the sorted errors to the caller as "FILE:LINE:COL: message" lines. */
static void flush_errors(loader_t *ld, config_diag_t *diag)
{
    if (ld->n_errs > 1)
        qsort(ld->errs, ld->n_errs, sizeof *ld->errs, cmp_err);
    for (size_t i = 0; i < ld->n_errs; i++) {
        cerr_t *e = &ld->errs[i];
        if (diag) {
            size_t n = strlen(ld->path) + strlen(e->msg) + 48;
            char *line = xmalloc(n);
            if (e->line > 0)
                util_fmt(line, n, "%s:%d:%d: %s", ld->path, e->line, e->col, e->msg);
            else
                util_fmt(line, n, "%s: %s", ld->path, e->msg);
            diag_push(diag, line);
        }
        free(e->msg);
    }
    if (diag && ld->n_total > ld->n_errs) {
        size_t n = strlen(ld->path) + 96;
        char *line = xmalloc(n);
        util_fmt(line, n, "%s: %zu more errors not shown; fix the ones above first", ld->path,
                 ld->n_total - ld->n_errs);
        diag_push(diag, line);
    }
    free(ld->errs);
    ld->errs = NULL;
    ld->n_errs = ld->cap_errs = 0;
}

/* Quote a value from the file for a message: at most ~60 bytes (cut at a UTF-8
 * boundary), control characters, quotes and backslashes escaped. The result
 * lives until QBUFS more calls. */
static const char *qv(loader_t *ld, const char *s)
{
    char *buf = ld->qbuf[ld->qnext++ % QBUFS];
    size_t o = 0;
    buf[o++] = '"';
    for (size_t i = 0; s[i]; i++) {
        unsigned char c = (unsigned char)s[i];
        if (i >= 60 && (c & 0xC0) != 0x80) {
            memcpy(buf + o, "...", 3);
            o += 3;
            break;
        }
        if (o + 8 >= QBUF_SIZE)
            break;
        if (c == '"' || c == '\\') {
            buf[o++] = '\\';
            buf[o++] = (char)c;
        } else if (c < 0x20 || c == 0x7f) {
            util_fmt(buf + o, QBUF_SIZE - o, "\\x%02x", (unsigned)c);
            o += 4;
        } else {
            buf[o++] = (char)c;
        }
    }
    buf[o++] = '"';
    buf[o] = '\0';
    return buf;
}

/* ---- small parsers (no YAML) ------------------------------------------- */

const char *config_role_name(config_role_t role)
{
    if ((int)role < 0 || role >= ROLE_COUNT)
        return NULL;
    return role_names[role];
}

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
static int parse_size(const char *s, uint64_t *out)
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
static void fmt_size(char *buf, size_t n, uint64_t v)
{
    static const char *const units[] = {"bytes", "KiB", "MiB", "GiB", "TiB"};
    unsigned u = 0;
    while (u + 1 < UTIL_ARRAY_LEN(units) && v >= 1024 && v % 1024 == 0) {
        v /= 1024;
        u++;
    }
    util_fmt(buf, n, "%llu %s", (unsigned long long)v, units[u]);
}

/* 1 when s is a CURVE key: exactly 40 Z85 characters that decode. */
static int valid_z85_key(const char *s)
{
    uint8_t bin[32];
    return s && strlen(s) == Z85_KEY_LEN && zmq_z85_decode(bin, s) != NULL;
}

/* 1 when s is "whsec_" + standard base64 (with padding) of at least 16 bytes. */
static int valid_secret(const char *s)
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

/* Parse "10.0.0.0/8", "::1/128" or a bare address into a network. */
static int parse_cidr(const char *s, config_cidr_t *out)
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
static void fmt_allow(const config_t *cfg, char *buf, size_t n)
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

/* Levenshtein distance of short strings, for "did you mean". */
static size_t edit_distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    if (la > 64 || lb > 64)
        return 99;
    size_t row[65];
    for (size_t j = 0; j <= lb; j++)
        row[j] = j;
    for (size_t i = 1; i <= la; i++) {
        size_t diag = row[0];
        row[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t up = row[j];
            size_t best = diag + (a[i - 1] != b[j - 1]);
            if (row[j] + 1 < best)
                best = row[j] + 1;
            if (row[j - 1] + 1 < best)
                best = row[j - 1] + 1;
            row[j] = best;
            diag = up;
        }
    }
    return row[lb];
}

/* The closest candidate to s (edit distance <= 2, and small for short words)
 * formatted with `fmt` into buf; "" when none is close. */
static void suggest_fmt(char *buf, size_t n, const char *s, const char *const *cand,
                        size_t n_cand, const char *fmt)
{
    size_t best = 3, len = strlen(s);
    const char *pick = NULL;
    buf[0] = '\0';
    for (size_t i = 0; i < n_cand; i++) {
        size_t d = edit_distance(s, cand[i]);
        if (d < best && d * 3 <= len + 1) {
            best = d;
            pick = cand[i];
        }
    }
    if (pick)
        util_fmt(buf, n, fmt, pick);
}

/* " did you mean \"x\"?" when one candidate is close to s, else "". */
static void suggest(char *buf, size_t n, const char *s, const char *const *cand, size_t n_cand)
{
    suggest_fmt(buf, n, s, cand, n_cand, " did you mean \"%s\"?");
}

/* " (did you mean \"x\"?)": the same, for the middle of a sentence. */
static void suggest_paren(char *buf, size_t n, const char *s, const char *const *cand,
                          size_t n_cand)
{
    suggest_fmt(buf, n, s, cand, n_cand, " (did you mean \"%s\"?)");
}

/* "a, b, c" into buf. */
static void join_names(char *buf, size_t n, const char *const *names, size_t count)
{
    size_t o = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < count && o + 4 < n; i++) {
        util_fmt(buf + o, n - o, "%s%s", i ? ", " : "", names[i]);
        o += strlen(buf + o);
    }
}

/* Normalise an absolute path lexically: no ".", "..", or repeated slashes. */
static void clean_path(char *p)
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

static char *abs_path(const loader_t *ld, const char *p)
{
    char *r;
    if (p[0] == '/') {
        r = xstrdup(p);
    } else {
        size_t n = strlen(ld->dir) + strlen(p) + 2;
        r = xmalloc(n);
        util_fmt(r, n, "%s/%s", ld->dir, p);
    }
    clean_path(r);
    return r;
}

/* Read a regular file of at most `max` bytes. 0 on success; else an errno value
 * (EFBIG when larger than max). *out is NUL-terminated. */
static int read_file(const char *path, size_t max, char **out, size_t *len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return errno;
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return e;
    }
    if (S_ISDIR(st.st_mode)) {
        close(fd);
        return EISDIR;
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return EINVAL;
    }
    char *buf = xmalloc(max + 2);
    size_t n = 0;
    for (;;) {
        ssize_t r = read(fd, buf + n, max + 1 - n);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            int e = errno;
            free(buf);
            close(fd);
            return e;
        }
        if (r == 0)
            break;
        n += (size_t)r;
        if (n > max) {
            sodium_memzero(buf, n);
            free(buf);
            close(fd);
            return EFBIG;
        }
    }
    close(fd);
    buf[n] = '\0';
    *out = buf;
    *len = n;
    return 0;
}

static const char *read_errstr(int e)
{
    if (e == EINVAL)
        return "not a regular file";
    if (e == EFBIG)
        return "file too large";
    return strerror(e);
}

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
                err_pos(ld, line, col,
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

/* ---- YAML node helpers -------------------------------------------------- */

static int is_null(const yaml_node_t *n);

static const char *kind_name(const yaml_node_t *n)
{
    switch (n->type) {
    case YAML_MAPPING_NODE: return "a mapping";
    case YAML_SEQUENCE_NODE: return "a list";
    case YAML_SCALAR_NODE: return is_null(n) ? "an empty value" : "a value";
    default: return "nothing";
    }
}

static int is_null(const yaml_node_t *n)
{
    if (!n || n->type == YAML_NO_NODE)
        return 1;
    if (n->type != YAML_SCALAR_NODE || n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
        return 0;
    const char *v = (const char *)n->data.scalar.value;
    return !*v || !strcmp(v, "~") || !strcmp(v, "null") || !strcmp(v, "Null") ||
           !strcmp(v, "NULL");
}

/* YAML 1.1 booleans, as carehub reads them (continue:, privacy: off). */
static int parse_bool(const char *s, int *out)
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

static size_t seq_len(const yaml_node_t *n)
{
    return (size_t)(n->data.sequence.items.top - n->data.sequence.items.start);
}

static yaml_node_t *seq_at(loader_t *ld, const yaml_node_t *n, size_t i)
{
    return yaml_document_get_node(&ld->doc, n->data.sequence.items.start[i]);
}

/* The text of a scalar, or NULL after reporting why there is none. */
static const char *scalar(loader_t *ld, const yaml_node_t *n, const char *what)
{
    if (!n || n->type != YAML_SCALAR_NODE) {
        err_at(ld, n, "%s must be a single value, not %s", what, n ? kind_name(n) : "nothing");
        return NULL;
    }
    if (is_null(n)) {
        err_at(ld, n, "%s has no value; give one or remove the key", what);
        return NULL;
    }
    const char *v = (const char *)n->data.scalar.value;
    if (strlen(v) != n->data.scalar.length) {
        err_at(ld, n, "%s contains a NUL character", what);
        return NULL;
    }
    return v;
}

/* A protocol id (PROTOCOL §1), or NULL after an error. */
static const char *id_value(loader_t *ld, const yaml_node_t *n, const char *what)
{
    const char *v = scalar(ld, n, what);
    if (v && !util_valid_id(v, strlen(v))) {
        err_at(ld, n,
               "%s %s is not a valid id: use 1-64 characters of A-Z a-z 0-9 . _ : -", what,
               qv(ld, v));
        return NULL;
    }
    return v;
}

/* One key of a section: the name, and where it was found. */
typedef struct {
    const char *name;
    yaml_node_t *key;
    yaml_node_t *val;
} field_t;

static yaml_node_t *fget(field_t *f, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (!strcmp(f[i].name, name))
            return f[i].val;
    return NULL;
}
#define FV(name) fget(f, UTIL_ARRAY_LEN(f), name)
#define GET_FIELDS(ld, node, where) get_fields(ld, node, where, f, UTIL_ARRAY_LEN(f))

/*
 * Read a mapping whose keys must be among f[].name: each value goes to its
 * field; unknown, repeated and non-text keys are errors. Returns 0 (after an
 * error) when `map` is not a mapping.
 */
static int get_fields(loader_t *ld, yaml_node_t *map, const char *where, field_t *f, size_t nf)
{
    if (!map || map->type != YAML_MAPPING_NODE) {
        err_at(ld, map, "%s must be a mapping of keys (%s: ...), not %s", where,
               nf ? f[0].name : "key", map ? kind_name(map) : "nothing");
        return 0;
    }
    for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top; p++) {
        yaml_node_t *k = yaml_document_get_node(&ld->doc, p->key);
        yaml_node_t *v = yaml_document_get_node(&ld->doc, p->value);
        if (!k || !v)
            continue;
        if (k->type != YAML_SCALAR_NODE) {
            err_at(ld, k, "keys in %s must be names, not %s", where, kind_name(k));
            continue;
        }
        const char *name = (const char *)k->data.scalar.value;
        size_t i;
        for (i = 0; i < nf; i++)
            if (!strcmp(f[i].name, name))
                break;
        if (i < nf) {
            if (f[i].key) {
                err_at(ld, k, "key %s appears twice in %s (first at line %d); keep one",
                       qv(ld, name), where, node_line(f[i].key));
                continue;
            }
            f[i].key = k;
            f[i].val = v;
            continue;
        }
        const char *names[24];
        size_t nn = nf < UTIL_ARRAY_LEN(names) ? nf : UTIL_ARRAY_LEN(names);
        for (size_t j = 0; j < nn; j++)
            names[j] = f[j].name;
        char known[512], hint[96];
        join_names(known, sizeof known, names, nn);
        if (!strcmp(name, "<<")) {
            err_at(ld, k, "merge keys (<<) are not supported in %s; repeat the keys instead",
                   where);
            continue;
        }
        suggest(hint, sizeof hint, name, names, nn);
        err_at(ld, k, "unknown key %s in %s%s%s (known: %s)", qv(ld, name), where,
               hint[0] ? ";" : "", hint, known);
    }
    return 1;
}

/*
 * A list of strings: a YAML list of values, or a single value meaning a list of
 * one. Returns the number of strings stored in *out (bad items are reported and
 * skipped); `items` (optional) receives each stored string's node.
 */
static size_t str_list(loader_t *ld, yaml_node_t *n, const char *what, char ***out,
                       yaml_node_t ***items)
{
    *out = NULL;
    if (items)
        *items = NULL;
    if (!n)
        return 0;
    if (n->type == YAML_SCALAR_NODE) {
        const char *v = scalar(ld, n, what);
        if (!v)
            return 0;
        *out = xmalloc(sizeof **out);
        (*out)[0] = xstrdup(v);
        if (items) {
            *items = xmalloc(sizeof **items);
            (*items)[0] = n;
        }
        return 1;
    }
    if (n->type != YAML_SEQUENCE_NODE) {
        err_at(ld, n, "%s must be a list of values ([a, b]), not %s", what, kind_name(n));
        return 0;
    }
    size_t len = seq_len(n), count = 0;
    *out = xcalloc(len, sizeof **out);
    if (items)
        *items = xcalloc(len, sizeof **items);
    for (size_t i = 0; i < len; i++) {
        yaml_node_t *it = seq_at(ld, n, i);
        char what_i[WHERE_SIZE];
        util_fmt(what_i, sizeof what_i, "%s[%zu]", what, i);
        const char *v = scalar(ld, it, what_i);
        if (!v)
            continue;
        if (items)
            (*items)[count] = it;
        (*out)[count++] = xstrdup(v);
    }
    return count;
}

static void free_strs(char **v, size_t n)
{
    if (!v)
        return;
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

/* A duration value; `dflt` when absent or wrong (after an error). */
static int64_t duration(loader_t *ld, yaml_node_t *n, const char *what, int64_t dflt,
                        int allow_zero)
{
    if (!n)
        return dflt;
    const char *v = scalar(ld, n, what);
    if (!v)
        return dflt;
    int64_t ms = config_parse_duration(v);
    if (ms < 0) {
        if (v[0] == '-')
            err_at(ld, n, "%s %s is negative; durations are 0 or more", what, qv(ld, v));
        else
            err_at(ld, n,
                   "%s %s is not a duration: write a whole number and a unit, one of ms, s, m, "
                   "h, d (250ms, 5s, 15m, 1h, 1d), at most 36500d",
                   what, qv(ld, v));
        return dflt;
    }
    if (ms == 0 && !allow_zero) {
        err_at(ld, n, "%s must be more than 0 (e.g. 5s)", what);
        return dflt;
    }
    return ms;
}

/* Does a sequence of strings hold s? (For duplicate checks.) */
static int strs_has(char **v, size_t n, const char *s)
{
    for (size_t i = 0; i < n; i++)
        if (v[i] && !strcmp(v[i], s))
            return 1;
    return 0;
}

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
            err_at(ld, n, "%s %s has no port; %s", what, qv(ld, s), hint);
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
            err_at(ld, n, "%s %s: port must be 0-65535 or *; %s", what, qv(ld, s), hint);
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
            err_at(ld, n,
                   "%s %s: the host must be *, an IPv4 address, [IPv6] in brackets, a host or "
                   "an interface name; %s",
                   what, qv(ld, s), hint);
            return NULL;
        }
        return xstrdup(s);
    }
    if (!strncmp(s, "ipc://", 6)) {
        const char *p = s + 6;
        if (!*p) {
            err_at(ld, n, "%s %s has no path; %s", what, qv(ld, s), hint);
            return NULL;
        }
        if (!strcmp(p, "*") || p[0] == '@') /* any free name; Linux abstract socket */
            return xstrdup(s);
        char *abs = abs_path(ld, p);
        struct sockaddr_un sun;
        if (strlen(abs) >= sizeof sun.sun_path) {
            err_at(ld, n, "%s %s: the socket path %s is %zu bytes, longer than the system's "
                   "limit of %zu; use a shorter path",
                   what, qv(ld, s), qv(ld, abs), strlen(abs), sizeof sun.sun_path - 1);
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
        err_at(ld, n, "%s %s: inproc:// endpoints are reachable only inside the broker process; %s",
               what, qv(ld, s), hint);
        return NULL;
    }
    const char *sep = strstr(s, "://");
    if (sep) {
        char t[32];
        size_t tl = (size_t)(sep - s) < sizeof t - 1 ? (size_t)(sep - s) : sizeof t - 1;
        memcpy(t, s, tl);
        t[tl] = '\0';
        err_at(ld, n, "%s %s: transport %s is not supported; %s", what, qv(ld, s), qv(ld, t), hint);
        return NULL;
    }
    err_at(ld, n, "%s %s is not a ZeroMQ endpoint; %s", what, qv(ld, s), hint);
    return NULL;
}

/* Read a CURVE key file: its first line must be 40 Z85 characters. */
static char *read_z85_file(loader_t *ld, const yaml_node_t *n, const char *what, const char *path)
{
    char *buf = NULL;
    size_t len = 0;
    int e = read_file(path, MAX_KEY_FILE_BYTES, &buf, &len);
    if (e == EFBIG) {
        /* Only the first line matters; a long file is still wrong for a key. */
        err_at(ld, n, "%s %s is larger than %d bytes; a key file holds one 40-character Z85 key",
               what, qv(ld, path), MAX_KEY_FILE_BYTES);
        return NULL;
    }
    if (e) {
        err_at(ld, n, "%s %s cannot be read: %s", what, qv(ld, path), read_errstr(e));
        return NULL;
    }
    size_t line = strcspn(buf, "\n");
    if (line > 0 && buf[line - 1] == '\r')
        line--;
    buf[line] = '\0';
    char *key = NULL;
    if (valid_z85_key(buf))
        key = xstrdup(buf);
    else
        err_at(ld, n,
               "%s %s: the first line is not a key (%zu characters; expected exactly 40 Z85 "
               "characters as zmq_curve_keypair writes them)",
               what, qv(ld, path), line);
    sodium_memzero(buf, len);
    free(buf);
    return key;
}

static void parse_broker(loader_t *ld, yaml_node_t *node)
{
    config_t *cfg = ld->cfg;
    field_t f[] = {
        {"listen", 0, 0}, {"data_dir", 0, 0}, {"security", 0, 0}, {"secret_key_file", 0, 0},
        {"heartbeat", 0, 0}, {"max_message_bytes", 0, 0}, {"fallback_agency", 0, 0},
        {"default_ack_within", 0, 0}, {"redeliver_every", 0, 0}, {"quiet_close", 0, 0},
        {"webhook_allow", 0, 0}, {"schemas", 0, 0}, {"map_size", 0, 0}, {"map_max", 0, 0},
        {"peer_queue", 0, 0},
        {"metrics", 0, 0},
    };
    ld->broker_node = node;
    if (node && !is_null(node) && !GET_FIELDS(ld, node, "broker"))
        return;
    yaml_node_t *v;

    /* listen */
    if ((v = FV("listen")) != NULL) {
        char **eps;
        yaml_node_t **items;
        size_t n = str_list(ld, v, "broker.listen", &eps, &items);
        if (v->type == YAML_SEQUENCE_NODE && seq_len(v) == 0)
            err_at(ld, v, "broker.listen needs at least one endpoint, e.g. tcp://127.0.0.1:5570");
        for (size_t i = 0; i < n; i++) {
            char *ep = endpoint(ld, items[i], "broker.listen", eps[i]);
            if (!ep)
                continue;
            if (strs_has(cfg->listen, cfg->n_listen, ep)) {
                err_at(ld, items[i], "broker.listen lists %s twice", qv(ld, ep));
                free(ep);
                continue;
            }
            cfg->listen = xrealloc(cfg->listen, (cfg->n_listen + 1) * sizeof *cfg->listen);
            cfg->listen[cfg->n_listen++] = ep;
        }
        free_strs(eps, n);
        free(items);
    }
    if (cfg->n_listen == 0) {
        cfg->listen = xmalloc(sizeof *cfg->listen);
        cfg->listen[cfg->n_listen++] = xstrdup(DEFAULT_LISTEN);
    }

    /* paths */
    const char *s;
    if ((v = FV("data_dir")) != NULL && (s = scalar(ld, v, "broker.data_dir")) != NULL)
        cfg->data_dir = abs_path(ld, s);
    if (!cfg->data_dir)
        cfg->data_dir = abs_path(ld, "var/carehub");
    if ((v = FV("schemas")) != NULL && (s = scalar(ld, v, "broker.schemas")) != NULL)
        cfg->schemas_dir = abs_path(ld, s);

    /* metrics (extension): "HOST:PORT" of the Prometheus endpoint; loopback by default */
    if ((v = FV("metrics")) != NULL && (s = scalar(ld, v, "broker.metrics")) != NULL) {
        char why[256];
        if (metrics_check_address(s, why, sizeof why) < 0)
            err_at(ld, v, "broker.metrics %s: %s (e.g. 127.0.0.1:9570; port 0: any free one)",
                   qv(ld, s), why);
        else
            cfg->metrics = xstrdup(s);
    }

    /* security */
    if ((v = FV("security")) != NULL && (s = scalar(ld, v, "broker.security")) != NULL) {
        ld->security_node = v;
        if (!strcmp(s, "none"))
            cfg->security = SECURITY_NONE;
        else if (!strcmp(s, "curve"))
            cfg->security = SECURITY_CURVE;
        else
            err_at(ld, v, "broker.security %s is not known; use none or curve", qv(ld, s));
    }
    yaml_node_t *skf = FV("secret_key_file");
    if (skf && (s = scalar(ld, skf, "broker.secret_key_file")) != NULL)
        cfg->secret_key_file = abs_path(ld, s);
    if (cfg->security == SECURITY_CURVE) {
        if (!skf)
            err_at(ld, ld->security_node,
                   "security: curve needs broker.secret_key_file, the broker's secret key file "
                   "(its first line: 40 Z85 characters, as zmq_curve_keypair gives)");
        else if (cfg->secret_key_file)
            cfg->secret_key = read_z85_file(ld, skf, "broker.secret_key_file",
                                            cfg->secret_key_file);
    }

    /* durations */
    cfg->heartbeat_ms = duration(ld, FV("heartbeat"), "broker.heartbeat", cfg->heartbeat_ms, 0);
    cfg->default_ack_within_ms = duration(ld, FV("default_ack_within"), "broker.default_ack_within",
                                          cfg->default_ack_within_ms, 1);
    cfg->redeliver_every_ms = duration(ld, FV("redeliver_every"), "broker.redeliver_every",
                                       cfg->redeliver_every_ms, 0);
    cfg->quiet_close_ms = duration(ld, FV("quiet_close"), "broker.quiet_close",
                                   cfg->quiet_close_ms, 0);

    /* sizes */
    char a[32], b[32];
    if ((v = FV("max_message_bytes")) != NULL &&
        (s = scalar(ld, v, "broker.max_message_bytes")) != NULL) {
        uint64_t sz;
        if (parse_size(s, &sz) != 0 || sz < MAX_MSG_MIN || sz > MAX_MSG_MAX)
            err_at(ld, v,
                   "broker.max_message_bytes %s must be a number of bytes from 1024 to 67108864 "
                   "(64M), e.g. 262144",
                   qv(ld, s));
        else
            cfg->max_message_bytes = (size_t)sz;
    }
    if ((v = FV("peer_queue")) != NULL && (s = scalar(ld, v, "broker.peer_queue")) != NULL) {
        char *end;
        errno = 0;
        long q = strtol(s, &end, 10);
        if (errno || end == s || *end || q < 16 || q > 1000000)
            err_at(ld, v,
                   "broker.peer_queue %s must be a number of messages from 16 to 1000000 (the "
                   "messages queued towards one agent before it counts as not reading), e.g. 4096",
                   qv(ld, s));
        else
            cfg->peer_queue = (int)q;
    }
    int map_ok = 1;
    if ((v = FV("map_size")) != NULL && (s = scalar(ld, v, "broker.map_size")) != NULL) {
        uint64_t sz;
        if (parse_size(s, &sz) != 0 || sz < MAP_MIN || sz > MAP_LIMIT) {
            err_at(ld, v, "broker.map_size %s must be a size from 64K to 64T: a number of bytes "
                   "or one with K, M, G or T (64M, 8G)", qv(ld, s));
            map_ok = 0;
        } else {
            cfg->map_size = sz;
            ld->map_size_set = 1;
        }
    }
    yaml_node_t *mm = FV("map_max");
    if (mm && (s = scalar(ld, mm, "broker.map_max")) != NULL) {
        uint64_t sz;
        if (parse_size(s, &sz) != 0 || sz < MAP_MIN || sz > MAP_LIMIT) {
            err_at(ld, mm, "broker.map_max %s must be a size from 64K to 64T: a number of bytes "
                   "or one with K, M, G or T (64M, 8G)", qv(ld, s));
            map_ok = 0;
        } else {
            cfg->map_max = sz;
        }
    }
    if (map_ok && cfg->map_size > cfg->map_max) {
        if (!ld->map_size_set) {
            cfg->map_size = cfg->map_max; /* a small map_max alone shrinks the start size too */
        } else {
            fmt_size(a, sizeof a, cfg->map_size);
            fmt_size(b, sizeof b, cfg->map_max);
            err_at(ld, FV("map_size"), "broker.map_size (%s) is larger than broker.map_max (%s); "
                   "the map starts at map_size and grows up to map_max", a, b);
        }
    }

    /* fallback agency: checked against the agencies later */
    if ((v = FV("fallback_agency")) != NULL &&
        (s = id_value(ld, v, "broker.fallback_agency")) != NULL) {
        free(cfg->fallback_agency);
        cfg->fallback_agency = xstrdup(s);
        ld->fallback_node = v;
    }

    /* webhook_allow */
    if ((v = FV("webhook_allow")) != NULL) {
        char **nets;
        yaml_node_t **items;
        size_t n = str_list(ld, v, "broker.webhook_allow", &nets, &items);
        cfg->webhook_allow = xcalloc(n, sizeof *cfg->webhook_allow);
        for (size_t i = 0; i < n; i++) {
            config_cidr_t net;
            if (parse_cidr(nets[i], &net) != 0) {
                err_at(ld, items[i],
                       "broker.webhook_allow %s is not a network: write an address with a prefix "
                       "length, like 127.0.0.0/8, 10.1.2.0/24 or ::1/128 (a bare address is /32 or "
                       "/128)",
                       qv(ld, nets[i]));
                continue;
            }
            cfg->webhook_allow[cfg->n_webhook_allow++] = net;
        }
        free_strs(nets, n);
        free(items);
    }
}

/* ---- privacy ------------------------------------------------------------- */

static void parse_privacy(loader_t *ld, yaml_node_t *node, const yaml_node_t *root)
{
    config_t *cfg = ld->cfg;
    if (!node || is_null(node)) {
        err_at(ld, node ? node : root,
               "privacy is not configured, so the broker will not start: set privacy.key_file "
               "(" PRIVACY_HINT ") or `privacy: off` for tests and demos");
        return;
    }
    if (node->type == YAML_SCALAR_NODE) {
        int on;
        const char *s = (const char *)node->data.scalar.value;
        if (parse_bool(s, &on) == 0 && !on) {
            cfg->privacy_off = 1;
            return;
        }
        err_at(ld, node,
               "privacy: %s is not a setting; give privacy.key_file (" PRIVACY_HINT
               ") or write `privacy: off` for tests and demos",
               qv(ld, s));
        return;
    }
    field_t f[] = {{"key_file", 0, 0}, {"retention", 0, 0}};
    if (!GET_FIELDS(ld, node, "privacy"))
        return;
    cfg->retention_ms = duration(ld, FV("retention"), "privacy.retention", cfg->retention_ms, 0);
    yaml_node_t *v = FV("key_file");
    if (!v) {
        err_at(ld, node,
               "privacy needs key_file (" PRIVACY_HINT "), or write `privacy: off` for tests "
               "and demos");
        return;
    }
    const char *s = scalar(ld, v, "privacy.key_file");
    if (!s)
        return;
    cfg->privacy_key_file = abs_path(ld, s);
    char *buf = NULL;
    size_t len = 0;
    int e = read_file(cfg->privacy_key_file, 32, &buf, &len);
    if (e == EFBIG) {
        err_at(ld, v, "privacy.key_file %s holds more than 32 bytes; it must hold exactly 32 "
               "random bytes (head -c 32 /dev/urandom > %s)",
               qv(ld, cfg->privacy_key_file), cfg->privacy_key_file);
        return;
    }
    if (e) {
        err_at(ld, v, "privacy.key_file %s cannot be read: %s; create it with: head -c 32 "
               "/dev/urandom > %s",
               qv(ld, cfg->privacy_key_file), read_errstr(e), cfg->privacy_key_file);
        return;
    }
    if (len != 32)
        err_at(ld, v, "privacy.key_file %s holds %zu bytes; it must hold exactly 32 random "
               "bytes (head -c 32 /dev/urandom > %s)",
               qv(ld, cfg->privacy_key_file), len, cfg->privacy_key_file);
    else
        memcpy(cfg->privacy_key, buf, 32);
    sodium_memzero(buf, len);
    free(buf);
}

/* ---- channels ------------------------------------------------------------ */

/* The url's host must lie inside webhook_allow: IP literals always, names when
 * resolving. */
static void check_host(loader_t *ld, const yaml_node_t *n, const char *where, const char *host)
{
    char h[256], allow[512];
    size_t len = strlen(host);
    if (len >= sizeof h) {
        err_at(ld, n, "%s.url: the host name is too long", where);
        return;
    }
    if (host[0] == '[' && len >= 2 && host[len - 1] == ']') {
        memcpy(h, host + 1, len - 2);
        h[len - 2] = '\0';
        h[strcspn(h, "%")] = '\0'; /* zone id */
    } else {
        memcpy(h, host, len + 1);
    }
    fmt_allow(ld->cfg, allow, sizeof allow);
    uint8_t addr[16];
    int fam = 0;
    if (inet_pton(AF_INET, h, addr) == 1)
        fam = 4;
    else if (inet_pton(AF_INET6, h, addr) == 1)
        fam = 6;
    if (fam) {
        if (!config_addr_allowed(ld->cfg, fam, addr))
            err_at(ld, n, "%s.url: address %s is outside broker.webhook_allow (%s); add its "
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
        err_at(ld, n, "%s.url: host %s does not resolve (%s); use a host name this machine can "
               "resolve or an address",
               where, qv(ld, h), gai_strerror(rc));
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
            err_at(ld, n, "%s.url: host %s resolves to %s, outside broker.webhook_allow (%s); "
                   "add its network to webhook_allow or use an allowed host",
                   where, qv(ld, h), text, allow);
            break;
        }
    }
    freeaddrinfo(res);
}

static void check_url(loader_t *ld, const yaml_node_t *n, const char *where, const char *url)
{
    CURLU *u = curl_url();
    if (!u) {
        err_at(ld, n, "%s.url: out of memory checking the URL", where);
        return;
    }
    char *scheme = NULL, *host = NULL;
    CURLUcode rc = curl_url_set(u, CURLUPART_URL, url, CURLU_NON_SUPPORT_SCHEME);
    if (rc != CURLUE_OK) {
        err_at(ld, n, "%s.url %s is not a valid URL (%s); write http://HOST:PORT/PATH", where,
               qv(ld, url), curl_url_strerror(rc));
        goto done;
    }
    if (curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK || !scheme ||
        (strcmp(scheme, "http") != 0 && strcmp(scheme, "https") != 0)) {
        err_at(ld, n, "%s.url %s must start with http:// or https://", where, qv(ld, url));
        goto done;
    }
    if (curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK || !host || !*host) {
        err_at(ld, n, "%s.url %s has no host; write http://HOST:PORT/PATH", where, qv(ld, url));
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
    int e = read_file(path, MAX_KEY_FILE_BYTES, &buf, &len);
    if (e) {
        err_at(ld, n, "%s.secret_file %s cannot be read: %s", where, qv(ld, path),
               read_errstr(e));
        return NULL;
    }
    while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == '\r' || buf[len - 1] == ' ' ||
                       buf[len - 1] == '\t'))
        buf[--len] = '\0';
    char *secret = NULL;
    if (strlen(buf) != len || strchr(buf, '\n'))
        err_at(ld, n, "%s.secret_file %s must hold the secret on one line (whsec_ and base64)",
               where, qv(ld, path));
    else if (!valid_secret(buf))
        err_at(ld, n, "%s.secret_file %s does not hold a valid secret: it must be whsec_ followed "
               "by standard base64 of at least 16 bytes",
               where, qv(ld, path));
    else
        secret = xstrdup(buf);
    sodium_memzero(buf, len);
    free(buf);
    return secret;
}

static void parse_channel(loader_t *ld, yaml_node_t *node, size_t idx, yaml_node_t **fallback_nodes)
{
    config_t *cfg = ld->cfg;
    char where[WHERE_SIZE];
    util_fmt(where, sizeof where, "channels[%zu]", idx);
    field_t f[] = {
        {"id", 0, 0}, {"kind", 0, 0}, {"url", 0, 0}, {"secret", 0, 0}, {"secret_file", 0, 0},
        {"timeout", 0, 0}, {"max_age", 0, 0}, {"to", 0, 0}, {"fallback", 0, 0},
        {"concurrency", 0, 0},
    };
    if (!GET_FIELDS(ld, node, where))
        return;
    config_channel_t *ch = &cfg->channels[cfg->n_channels++];
    memset(ch, 0, sizeof *ch);
    ch->line = node_line(node);
    ch->concurrency = CONFIG_CHANNEL_CONCURRENCY;
    ch->timeout_ms = 5000;
    ch->max_age_ms = 24 * 3600 * 1000;
    char w[WHERE_SIZE];
    const char *s;
    yaml_node_t *v;

    if ((v = FV("id")) == NULL) {
        err_at(ld, node, "%s needs an id (e.g. id: police-hook)", where);
    } else if ((s = id_value(ld, v, "channel id")) != NULL) {
        const config_channel_t *dup = config_find_channel(cfg, s);
        if (dup)
            err_at(ld, v, "channel id %s is used twice (first at line %d); ids must be unique",
                   qv(ld, s), dup->line);
        else
            ch->id = xstrdup(s);
    }
    if (ch->id)
        util_fmt(where, sizeof where, "channel %s", ch->id);

    ch->kind = CHANNEL_WEBHOOK;
    if ((v = FV("kind")) != NULL) {
        util_fmt(w, sizeof w, "%s.kind", where);
        if ((s = scalar(ld, v, w)) != NULL) {
            if (!strcmp(s, "webhook"))
                ch->kind = CHANNEL_WEBHOOK;
            else if (!strcmp(s, "sms"))
                ch->kind = CHANNEL_SMS;
            else
                err_at(ld, v, "%s %s is not known; use webhook or sms", w, qv(ld, s));
        }
    }

    if ((v = FV("url")) == NULL) {
        err_at(ld, node, "%s needs a url (http:// or https://)", where);
    } else {
        util_fmt(w, sizeof w, "%s.url", where);
        if ((s = scalar(ld, v, w)) != NULL) {
            ch->url = xstrdup(s);
            check_url(ld, v, where, s);
        }
    }

    yaml_node_t *sec = FV("secret"), *secf = FV("secret_file");
    if (sec && secf) {
        err_at(ld, secf, "%s has both secret and secret_file; keep one", where);
    } else if (!sec && !secf) {
        err_at(ld, node, "%s needs a secret (secret: whsec_<base64>) or secret_file: a file "
               "holding it", where);
    } else if (sec) {
        util_fmt(w, sizeof w, "%s.secret", where);
        if ((s = scalar(ld, sec, w)) != NULL) {
            if (valid_secret(s))
                ch->secret = xstrdup(s);
            else
                err_at(ld, sec, "%s is not valid: it must be whsec_ followed by standard base64 "
                       "of at least 16 random bytes (e.g. whsec_$(head -c 24 /dev/urandom | "
                       "base64))", w);
        }
    } else {
        util_fmt(w, sizeof w, "%s.secret_file", where);
        if ((s = scalar(ld, secf, w)) != NULL) {
            char *path = abs_path(ld, s);
            ch->secret = read_secret_file(ld, secf, where, path);
            free(path);
        }
    }

    util_fmt(w, sizeof w, "%s.timeout", where);
    ch->timeout_ms = duration(ld, FV("timeout"), w, ch->timeout_ms, 0);
    util_fmt(w, sizeof w, "%s.max_age", where);
    ch->max_age_ms = duration(ld, FV("max_age"), w, ch->max_age_ms, 1);
    if ((v = FV("concurrency")) != NULL) {
        util_fmt(w, sizeof w, "%s.concurrency", where);
        if ((s = scalar(ld, v, w)) != NULL) {
            char *end;
            errno = 0;
            long c = strtol(s, &end, 10);
            if (errno || end == s || *end || c < 1 || c > CONFIG_CHANNEL_CONCURRENCY_MAX)
                err_at(ld, v,
                       "%s %s must be a number of deliveries in flight at once from 1 to %d "
                       "(default %d), e.g. concurrency: 16 for a receiver that wants few "
                       "connections",
                       w, qv(ld, s), CONFIG_CHANNEL_CONCURRENCY_MAX, CONFIG_CHANNEL_CONCURRENCY);
            else
                ch->concurrency = (int)c;
        }
    }

    v = FV("to");
    if (ch->kind == CHANNEL_WEBHOOK && v) {
        err_at(ld, v, "%s is a webhook and takes no `to`; recipients are for kind: sms", where);
    } else if (ch->kind == CHANNEL_SMS) {
        if (!v) {
            err_at(ld, node, "%s is an sms channel and needs `to`: a list of phone numbers, e.g. "
                   "to: [\"+8613800000000\"]", where);
        } else {
            util_fmt(w, sizeof w, "%s.to", where);
            char **to;
            yaml_node_t **items;
            size_t n = str_list(ld, v, w, &to, &items);
            ch->to = xcalloc(n, sizeof *ch->to);
            for (size_t i = 0; i < n; i++) {
                size_t len = strlen(to[i]);
                int ok = len <= 64;
                for (size_t j = 0; j < len && ok; j++)
                    if ((unsigned char)to[i][j] < 0x20 || to[i][j] == 0x7f)
                        ok = 0;
                if (!ok) {
                    err_at(ld, items[i], "%s %s is not a recipient (at most 64 printable "
                           "characters, e.g. +8613800000000)", w, qv(ld, to[i]));
                } else if (strs_has(ch->to, ch->n_to, to[i])) {
                    err_at(ld, items[i], "%s lists %s twice", w, qv(ld, to[i]));
                } else {
                    ch->to[ch->n_to++] = to[i];
                    to[i] = NULL;
                }
            }
            if (n == 0 && v->type == YAML_SEQUENCE_NODE && seq_len(v) == 0)
                err_at(ld, v, "%s is empty; an sms channel needs at least one recipient", w);
            free_strs(to, n);
            free(items);
        }
    }

    if ((v = FV("fallback")) != NULL) {
        util_fmt(w, sizeof w, "%s.fallback", where);
        if ((s = id_value(ld, v, w)) != NULL) {
            ch->fallback = xstrdup(s);
            fallback_nodes[cfg->n_channels - 1] = v;
        }
    }
}

/* Channel fallbacks name other channels and never loop. */
static void check_channel_fallbacks(loader_t *ld, yaml_node_t **fallback_nodes)
{
    config_t *cfg = ld->cfg;
    for (size_t i = 0; i < cfg->n_channels; i++) {
        const config_channel_t *ch = &cfg->channels[i];
        if (!ch->fallback || !ch->id)
            continue;
        if (!strcmp(ch->fallback, ch->id)) {
            err_at(ld, fallback_nodes[i], "channel %s names itself as its fallback; name another "
                   "channel or remove fallback", ch->id);
            continue;
        }
        if (!config_find_channel(cfg, ch->fallback)) {
            err_at(ld, fallback_nodes[i], "channel %s: fallback %s is not a configured channel",
                   ch->id, qv(ld, ch->fallback));
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
            err_at(ld, fallback_nodes[i], "channel %s: fallbacks form a loop through %s; end the "
                   "chain at a channel without fallback", ch->id, qv(ld, ch->fallback));
    }
}

/* ---- agencies ------------------------------------------------------------ */

/* Channel ids in `v` that must all be configured: *out (count returned). */
static size_t channel_refs(loader_t *ld, yaml_node_t *v, const char *what, char ***out)
{
    char **ids;
    yaml_node_t **items;
    size_t n = str_list(ld, v, what, &ids, &items), kept = 0;
    *out = xcalloc(n, sizeof **out);
    for (size_t i = 0; i < n; i++) {
        if (!util_valid_id(ids[i], strlen(ids[i]))) {
            err_at(ld, items[i], "%s: %s is not a valid channel id", what, qv(ld, ids[i]));
        } else if (!config_find_channel(ld->cfg, ids[i])) {
            char hint[96], known[512];
            const char *names[64];
            size_t nn = 0;
            for (size_t j = 0; j < ld->cfg->n_channels && nn < UTIL_ARRAY_LEN(names); j++)
                if (ld->cfg->channels[j].id)
                    names[nn++] = ld->cfg->channels[j].id;
            suggest(hint, sizeof hint, ids[i], names, nn);
            join_names(known, sizeof known, names, nn);
            err_at(ld, items[i], "%s: %s is not a configured channel%s%s (channels: %s)", what,
                   qv(ld, ids[i]), hint[0] ? ";" : "", hint, nn ? known : "none");
        } else if (strs_has(*out, kept, ids[i])) {
            err_at(ld, items[i], "%s lists %s twice", what, qv(ld, ids[i]));
        } else {
            (*out)[kept++] = ids[i];
            ids[i] = NULL;
        }
    }
    free_strs(ids, n);
    free(items);
    return kept;
}

static void parse_agency(loader_t *ld, yaml_node_t *node, size_t idx)
{
    config_t *cfg = ld->cfg;
    char where[WHERE_SIZE], w[WHERE_SIZE];
    util_fmt(where, sizeof where, "agencies[%zu]", idx);
    field_t f[] = {{"id", 0, 0}, {"name", 0, 0}, {"channels", 0, 0}};
    if (!GET_FIELDS(ld, node, where))
        return;
    config_agency_t *ag = &cfg->agencies[cfg->n_agencies++];
    memset(ag, 0, sizeof *ag);
    ag->line = node_line(node);
    const char *s;
    yaml_node_t *v;
    if ((v = FV("id")) == NULL) {
        err_at(ld, node, "%s needs an id (e.g. id: police)", where);
    } else if ((s = id_value(ld, v, "agency id")) != NULL) {
        const config_agency_t *dup = config_find_agency(cfg, s);
        if (dup)
            err_at(ld, v, "agency id %s is used twice (first at line %d); ids must be unique",
                   qv(ld, s), dup->line);
        else
            ag->id = xstrdup(s);
    }
    if (ag->id)
        util_fmt(where, sizeof where, "agency %s", ag->id);
    if ((v = FV("name")) != NULL) {
        util_fmt(w, sizeof w, "%s.name", where);
        if ((s = scalar(ld, v, w)) != NULL)
            ag->name = xstrdup(s);
    }
    if ((v = FV("channels")) != NULL) {
        util_fmt(w, sizeof w, "%s.channels", where);
        ag->n_channels = channel_refs(ld, v, w, &ag->channels);
    }
}

/* The built-in agencies that the file did not list. */
static void add_builtin_agencies(loader_t *ld)
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
static int agency_ref_ok(loader_t *ld, const yaml_node_t *n, const char *what, const char *id,
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
    suggest_paren(hint, sizeof hint, id, names, nn);
    join_names(known, sizeof known, names, nn);
    err_at(ld, n, "%s %s%s is not a known agency%s; add it under agencies: or use one of: %s",
           what, qv(ld, id), is_default ? " (the default)" : "", hint, known);
    return 0;
}

/* ---- agents -------------------------------------------------------------- */

static void parse_agent(loader_t *ld, yaml_node_t *node, size_t idx)
{
    config_t *cfg = ld->cfg;
    char where[WHERE_SIZE], w[WHERE_SIZE];
    util_fmt(where, sizeof where, "agents[%zu]", idx);
    field_t f[] = {{"id", 0, 0}, {"role", 0, 0}, {"agency", 0, 0}, {"public_key", 0, 0}};
    if (!GET_FIELDS(ld, node, where))
        return;
    config_agent_t *ag = &cfg->agents[cfg->n_agents++];
    memset(ag, 0, sizeof *ag);
    ag->line = node_line(node);
    ag->role = ROLE_COUNT; /* unknown until read */
    const char *s;
    yaml_node_t *v;
    if ((v = FV("id")) == NULL) {
        err_at(ld, node, "%s needs an id (e.g. id: school-0042)", where);
    } else if ((s = id_value(ld, v, "agent id")) != NULL) {
        const config_agent_t *dup = config_find_agent(cfg, s);
        if (dup)
            err_at(ld, v, "agent id %s is used twice (first at line %d); ids must be unique",
                   qv(ld, s), dup->line);
        else
            ag->id = xstrdup(s);
    }
    if (ag->id)
        util_fmt(where, sizeof where, "agent %s", ag->id);

    char roles[128];
    join_names(roles, sizeof roles, role_names, ROLE_COUNT);
    if ((v = FV("role")) == NULL) {
        err_at(ld, node, "%s needs a role: one of %s", where, roles);
    } else {
        util_fmt(w, sizeof w, "%s.role", where);
        if ((s = scalar(ld, v, w)) != NULL) {
            for (int r = 0; r < ROLE_COUNT; r++)
                if (!strcmp(s, role_names[r]))
                    ag->role = (config_role_t)r;
            if (ag->role == ROLE_COUNT) {
                char hint[96];
                suggest_paren(hint, sizeof hint, s, role_names, ROLE_COUNT);
                err_at(ld, v, "%s %s is not a role%s; use one of %s", w, qv(ld, s), hint, roles);
            }
        }
    }

    v = FV("agency");
    if (ag->role == ROLE_AGENCY) {
        if (!v) {
            err_at(ld, node, "%s has role agency and needs `agency:`, the agency whose "
                   "assignments it takes (e.g. agency: police)", where);
        } else {
            util_fmt(w, sizeof w, "%s.agency", where);
            if ((s = id_value(ld, v, w)) != NULL && agency_ref_ok(ld, v, w, s, 0))
                ag->agency = xstrdup(s);
        }
    } else if (v && ag->role != ROLE_COUNT) {
        err_at(ld, v, "%s has role %s; only agents with role agency take `agency:` (remove it "
               "or set role: agency)", where, role_names[ag->role]);
    }

    v = FV("public_key");
    if (cfg->security == SECURITY_CURVE) {
        if (!v) {
            err_at(ld, node, "%s needs public_key because broker.security is curve: the agent's "
                   "public key, 40 Z85 characters (the first line of its NAME.pub)", where);
        } else {
            util_fmt(w, sizeof w, "%s.public_key", where);
            if ((s = scalar(ld, v, w)) != NULL) {
                if (!valid_z85_key(s)) {
                    err_at(ld, v, "%s is not a CURVE public key: it must be exactly 40 Z85 "
                           "characters (%zu given)", w, strlen(s));
                } else {
                    const config_agent_t *dup = config_find_agent_by_key(cfg, s);
                    if (dup)
                        err_at(ld, v, "%s is also the key of agent %s (line %d); each agent "
                               "needs its own key", w, dup->id ? dup->id : "?", dup->line);
                    else
                        ag->public_key = xstrdup(s);
                }
            }
        }
    }
    /* With security none a public_key is allowed and unused (not even read). */
}

/* ---- workflows ----------------------------------------------------------- */

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

static void parse_match(loader_t *ld, yaml_node_t *node, const char *where, config_workflow_t *wf)
{
    if (!node || is_null(node))
        return; /* no conditions: every event matches */
    if (node->type != YAML_MAPPING_NODE) {
        err_at(ld, node, "%s.match must be a mapping of conditions (type: ..., severity: ..., "
               "body.FIELD: ...), not %s", where, kind_name(node));
        return;
    }
    size_t np = (size_t)(node->data.mapping.pairs.top - node->data.mapping.pairs.start);
    wf->match = xcalloc(np, sizeof *wf->match);
    char w[WHERE_SIZE];
    for (yaml_node_pair_t *p = node->data.mapping.pairs.start; p < node->data.mapping.pairs.top; p++) {
        yaml_node_t *k = yaml_document_get_node(&ld->doc, p->key);
        yaml_node_t *v = yaml_document_get_node(&ld->doc, p->value);
        if (!k || !v)
            continue;
        if (k->type != YAML_SCALAR_NODE) {
            err_at(ld, k, "keys in %s.match must be names, not %s", where, kind_name(k));
            continue;
        }
        const char *key = (const char *)k->data.scalar.value;
        int is_type = !strcmp(key, "type"), is_sev = !strcmp(key, "severity");
        if (!is_type && !is_sev && !valid_body_path(key)) {
            static const char *const known[] = {"type", "severity"};
            char hint[96];
            suggest(hint, sizeof hint, key, known, 2);
            err_at(ld, k, "unknown key %s in %s.match%s%s (known: type, severity, and "
                   "body.FIELD or body.FIELD.SUBFIELD for body fields)",
                   qv(ld, key), where, hint[0] ? ";" : "", hint);
            continue;
        }
        int dup = 0;
        for (size_t i = 0; i < wf->n_match; i++)
            if (!strcmp(wf->match[i].key, key))
                dup = 1;
        if (dup) {
            err_at(ld, k, "key %s appears twice in %s.match; keep one", qv(ld, key), where);
            continue;
        }
        util_fmt(w, sizeof w, "%s.match.%s", where, key);
        config_match_t m;
        memset(&m, 0, sizeof m);
        const yaml_node_t *vnodes[1] = {v};
        const yaml_node_t **value_nodes = vnodes; /* where each value was written */
        m.line = node_line(k);
        m.op = MATCH_EQ;
        int ok = 1;
        if (v->type == YAML_SCALAR_NODE) {
            const char *s = scalar(ld, v, w);
            int c = s ? parse_cmp(s, &m.op, &m.number) : 0;
            if (!s) {
                ok = 0;
            } else if (c < 0) {
                err_at(ld, v, "%s %s: a comparison needs a number after the operator, like "
                       "\">=3\" (operators: >=, >, <=, <, ==, !=)", w, qv(ld, s));
                ok = 0;
            } else if (c > 0 && (is_type || is_sev)) {
                err_at(ld, v, "%s %s: number comparisons apply to body fields only; give a "
                       "value or a list of values", w, qv(ld, s));
                ok = 0;
            } else if (c == 0) {
                m.values = xmalloc(sizeof *m.values);
                m.values[m.n_values++] = match_text(v, s);
            }
        } else if (v->type == YAML_SEQUENCE_NODE) {
            size_t n = seq_len(v);
            if (n == 0) {
                err_at(ld, v, "%s is an empty list, which matches nothing; give at least one "
                       "value or remove the condition", w);
                ok = 0;
            }
            m.values = xcalloc(n, sizeof *m.values);
            value_nodes = xcalloc(n ? n : 1, sizeof *value_nodes);
            for (size_t i = 0; i < n; i++) {
                yaml_node_t *it = seq_at(ld, v, i);
                char wi[WHERE_SIZE];
                util_fmt(wi, sizeof wi, "%s[%zu]", w, i);
                const char *s = scalar(ld, it, wi);
                config_match_op_t op;
                double d;
                if (!s) {
                    ok = 0;
                } else if (parse_cmp(s, &op, &d) > 0) {
                    err_at(ld, it, "%s %s looks like a comparison; a list holds values matched "
                           "exactly, so write the comparison as the only value", wi, qv(ld, s));
                    ok = 0;
                } else {
                    value_nodes[m.n_values] = it;
                    m.values[m.n_values++] = match_text(it, s);
                }
            }
        } else {
            err_at(ld, v, "%s must be a value, a list of values, or a comparison like \">=3\"; "
                   "not %s", w, kind_name(v));
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
                    suggest_paren(hint, sizeof hint, m.values[i], severities,
                                  UTIL_ARRAY_LEN(severities));
                    err_at(ld, value_nodes[i], "%s: %s is not a severity%s; use critical, high, "
                           "normal or low", w, qv(ld, m.values[i]), hint);
                    ok = 0;
                }
            } else if (is_type && !util_valid_id(m.values[i], strlen(m.values[i]))) {
                err_at(ld, value_nodes[i], "%s: %s is not an event type name (e.g. absence, "
                       "mandatory_report, online_risk)", w, qv(ld, m.values[i]));
                ok = 0;
            }
        }
        if (value_nodes != vnodes)
            free(value_nodes);
        if (!ok) {
            free_strs(m.values, m.n_values);
            continue;
        }
        m.key = xstrdup(key);
        wf->match[wf->n_match++] = m;
    }
}

static void parse_escalate(loader_t *ld, yaml_node_t *node, const char *where, config_assign_t *as)
{
    char w[WHERE_SIZE], ws[WHERE_SIZE];
    util_fmt(w, sizeof w, "%s.escalate", where);
    if (node->type != YAML_SEQUENCE_NODE) {
        err_at(ld, node, "%s must be a list of steps (- after: 0s, notify: [CHANNEL]), not %s", w,
               kind_name(node));
        return;
    }
    size_t n = seq_len(node);
    as->escalate = xcalloc(n, sizeof *as->escalate);
    int64_t prev = -1;
    for (size_t i = 0; i < n; i++) {
        yaml_node_t *it = seq_at(ld, node, i);
        util_fmt(ws, sizeof ws, "%s[%zu]", w, i);
        field_t f[] = {{"after", 0, 0}, {"notify", 0, 0}};
        if (!GET_FIELDS(ld, it, ws))
            continue;
        config_escalate_t *st = &as->escalate[as->n_escalate++];
        st->line = node_line(it);
        yaml_node_t *v;
        char wf[WHERE_SIZE];
        if ((v = FV("after")) == NULL) {
            err_at(ld, it, "%s needs after: the time after the ack deadline (0s = at once)", ws);
        } else {
            util_fmt(wf, sizeof wf, "%s.after", ws);
            st->after_ms = duration(ld, v, wf, -1, 1);
            if (st->after_ms >= 0) {
                if (st->after_ms < prev)
                    err_at(ld, v, "%s comes before the previous step's; list escalation steps "
                           "in order of after", wf);
                prev = st->after_ms;
            } else {
                st->after_ms = 0;
            }
        }
        if ((v = FV("notify")) == NULL) {
            err_at(ld, it, "%s needs notify: the channels to tell (e.g. notify: [duty-sms])", ws);
        } else {
            util_fmt(wf, sizeof wf, "%s.notify", ws);
            st->n_notify = channel_refs(ld, v, wf, &st->notify);
            if (v->type == YAML_SEQUENCE_NODE && seq_len(v) == 0)
                err_at(ld, v, "%s is empty; name at least one channel", wf);
        }
    }
}

static void parse_assign(loader_t *ld, yaml_node_t *node, const char *where, config_workflow_t *wf)
{
    char w[WHERE_SIZE];
    if (node->type != YAML_SEQUENCE_NODE) {
        err_at(ld, node, "%s.assign must be a list (- agency: police ...), or [] to record cases "
               "without assigning them; not %s", where, kind_name(node));
        return;
    }
    size_t n = seq_len(node);
    wf->assign = xcalloc(n, sizeof *wf->assign);
    for (size_t i = 0; i < n; i++) {
        yaml_node_t *it = seq_at(ld, node, i);
        util_fmt(w, sizeof w, "%s.assign[%zu]", where, i);
        field_t f[] = {{"agency", 0, 0}, {"ack_within", 0, 0}, {"escalate", 0, 0}};
        if (!GET_FIELDS(ld, it, w))
            continue;
        config_assign_t *as = &wf->assign[wf->n_assign++];
        as->line = node_line(it);
        yaml_node_t *v;
        const char *s;
        char wk[WHERE_SIZE];
        if ((v = FV("agency")) == NULL) {
            err_at(ld, it, "%s needs agency: the agency to assign (e.g. agency: police)", w);
        } else {
            util_fmt(wk, sizeof wk, "%s.agency", w);
            if ((s = id_value(ld, v, wk)) != NULL && agency_ref_ok(ld, v, wk, s, 0)) {
                int dup = 0;
                for (size_t j = 0; j + 1 < wf->n_assign; j++)
                    if (wf->assign[j].agency && !strcmp(wf->assign[j].agency, s))
                        dup = 1;
                if (dup)
                    err_at(ld, v, "%s: %s is assigned twice in this workflow; keep one", wk,
                           qv(ld, s));
                else
                    as->agency = xstrdup(s);
            }
        }
        util_fmt(wk, sizeof wk, "%s.ack_within", w);
        as->ack_within_ms = duration(ld, FV("ack_within"), wk, ld->cfg->default_ack_within_ms, 1);
        if ((v = FV("escalate")) != NULL && !is_null(v))
            parse_escalate(ld, v, w, as);
    }
}

static void parse_workflow(loader_t *ld, yaml_node_t *node, size_t idx)
{
    config_t *cfg = ld->cfg;
    char where[WHERE_SIZE], w[WHERE_SIZE];
    util_fmt(where, sizeof where, "workflows[%zu]", idx);
    field_t f[] = {{"name", 0, 0}, {"match", 0, 0}, {"continue", 0, 0}, {"assign", 0, 0}};
    if (!GET_FIELDS(ld, node, where))
        return;
    config_workflow_t *wf = &cfg->workflows[cfg->n_workflows++];
    memset(wf, 0, sizeof *wf);
    wf->line = node_line(node);
    const char *s;
    yaml_node_t *v;
    if ((v = FV("name")) != NULL) {
        util_fmt(w, sizeof w, "%s.name", where);
        if ((s = scalar(ld, v, w)) != NULL) {
            int ok = strlen(s) <= 128;
            for (const char *c = s; *c && ok; c++)
                if ((unsigned char)*c < 0x20 || *c == 0x7f)
                    ok = 0;
            if (!ok)
                err_at(ld, v, "%s must be at most 128 printable characters", w);
            for (size_t i = 0; ok && i + 1 < cfg->n_workflows; i++)
                if (cfg->workflows[i].name && !strcmp(cfg->workflows[i].name, s)) {
                    err_at(ld, v, "workflow name %s is used twice (first at line %d); names "
                           "must be unique", qv(ld, s), cfg->workflows[i].line);
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
        if ((s = scalar(ld, v, w)) != NULL && parse_bool(s, &wf->cont) != 0)
            err_at(ld, v, "%s %s must be true or false", w, qv(ld, s));
    }
    parse_match(ld, FV("match"), where, wf);
    v = FV("assign");
    if (!v || is_null(v))
        err_at(ld, v ? v : node, "%s needs assign: a list of agencies to assign (- agency: "
               "police), or assign: [] to record cases without assigning them", where);
    else
        parse_assign(ld, v, where, wf);
}

/* ---- the whole file ---------------------------------------------------- */

/* A top-level list section (agents, agencies, ...): NULL when absent or empty,
 * after an error when it is not a list. */
static yaml_node_t *section_list(loader_t *ld, yaml_node_t *v, const char *name, const char *eg)
{
    if (!v || is_null(v))
        return NULL;
    if (v->type != YAML_SEQUENCE_NODE) {
        err_at(ld, v, "%s must be a list (- %s), not %s", name, eg, kind_name(v));
        return NULL;
    }
    return v;
}

static void load_root(loader_t *ld, yaml_node_t *root)
{
    config_t *cfg = ld->cfg;
    field_t f[] = {{"broker", 0, 0},   {"privacy", 0, 0},  {"agents", 0, 0},
                   {"agencies", 0, 0}, {"channels", 0, 0}, {"workflows", 0, 0}};
    if (!root || is_null(root)) {
        err_pos(ld, 1, 1, "the configuration is empty; it needs at least a privacy section "
                "(see docs/config.md)");
        return;
    }
    if (root->type != YAML_MAPPING_NODE) {
        err_at(ld, root, "the configuration must be a mapping with the sections broker, privacy, "
               "agents, agencies, channels and workflows; found %s", kind_name(root));
        return;
    }
    (void)GET_FIELDS(ld, root, "the configuration");

    parse_broker(ld, FV("broker"));
    parse_privacy(ld, FV("privacy"), root);

    yaml_node_t *chs = section_list(ld, FV("channels"), "channels", "id: police-hook");
    yaml_node_t **fallback_nodes = NULL;
    if (chs) {
        size_t n = seq_len(chs);
        cfg->channels = xcalloc(n, sizeof *cfg->channels);
        fallback_nodes = xcalloc(n, sizeof *fallback_nodes);
        for (size_t i = 0; i < n; i++)
            parse_channel(ld, seq_at(ld, chs, i), i, fallback_nodes);
        check_channel_fallbacks(ld, fallback_nodes);
    }
    free(fallback_nodes);

    yaml_node_t *ags = section_list(ld, FV("agencies"), "agencies", "id: police");
    if (ags) {
        size_t n = seq_len(ags);
        cfg->agencies = xcalloc(n, sizeof *cfg->agencies);
        for (size_t i = 0; i < n; i++)
            parse_agency(ld, seq_at(ld, ags, i), i);
    }
    add_builtin_agencies(ld);
    agency_ref_ok(ld, ld->fallback_node ? ld->fallback_node : (ld->broker_node ? ld->broker_node : root),
                  "broker.fallback_agency", cfg->fallback_agency, ld->fallback_node == NULL);

    yaml_node_t *agents = section_list(ld, FV("agents"), "agents", "id: school-0042");
    if (agents) {
        size_t n = seq_len(agents);
        cfg->agents = xcalloc(n, sizeof *cfg->agents);
        for (size_t i = 0; i < n; i++)
            parse_agent(ld, seq_at(ld, agents, i), i);
    }

    yaml_node_t *wfs = section_list(ld, FV("workflows"), "workflows", "name: ...");
    if (wfs) {
        size_t n = seq_len(wfs);
        cfg->workflows = xcalloc(n, sizeof *cfg->workflows);
        for (size_t i = 0; i < n; i++)
            parse_workflow(ld, seq_at(ld, wfs, i), i);
    }
}

/* Where a reader error (bad UTF-8 ...) happened, from its byte offset. */
static void offset_pos(const char *buf, size_t len, size_t off, int *line, int *col)
{
    *line = 1;
    *col = 1;
    for (size_t i = 0; i < off && i < len; i++) {
        if (buf[i] == '\n') {
            (*line)++;
            *col = 1;
        } else {
            (*col)++;
        }
    }
}

static void yaml_error(loader_t *ld, const yaml_parser_t *p, const char *buf, size_t len)
{
    const char *problem = p->problem ? p->problem : "unknown problem";
    int line, col;
    switch (p->error) {
    case YAML_MEMORY_ERROR:
        err_pos(ld, 0, 0, "out of memory while parsing the YAML");
        return;
    case YAML_READER_ERROR:
        offset_pos(buf, len, p->problem_offset, &line, &col);
        err_pos(ld, line, col, "cannot read the file as YAML text: %s (byte 0x%02x); save it as "
                "UTF-8", problem, (unsigned)(p->problem_value & 0xff));
        return;
    default:
        line = (int)p->problem_mark.line + 1;
        col = (int)p->problem_mark.column + 1;
        if (p->context)
            err_pos(ld, line, col, "YAML syntax error: %s (%s at line %d, column %d)", problem,
                    p->context, (int)p->context_mark.line + 1, (int)p->context_mark.column + 1);
        else
            err_pos(ld, line, col, "YAML syntax error: %s", problem);
        return;
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
    clean_path(r);
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
        err_pos(&ld, 0, 0, "no configuration file given");
        goto out;
    }
    if (sodium_init() < 0) {
        err_pos(&ld, 0, 0, "libsodium failed to initialise");
        goto out;
    }
    e = read_file(path, MAX_CONFIG_BYTES, &buf, &len);
    if (e) {
        err_pos(&ld, 0, 0, "cannot read the configuration: %s",
                e == EFBIG ? "larger than 16 MiB" : read_errstr(e));
        goto out;
    }
    if (!flow_depth_ok(&ld, buf, len))
        goto out;
    if (!yaml_parser_initialize(&parser)) {
        err_pos(&ld, 0, 0, "out of memory initialising the YAML parser");
        goto out;
    }
    have_parser = 1;
    yaml_parser_set_input_string(&parser, (const unsigned char *)buf, len);
    if (!yaml_parser_load(&parser, &ld.doc)) {
        yaml_error(&ld, &parser, buf, len);
        goto out;
    }
    ld.have_doc = 1;
    root = yaml_document_get_root_node(&ld.doc);
    if (root) {
        yaml_document_t extra;
        if (!yaml_parser_load(&parser, &extra)) {
            yaml_error(&ld, &parser, buf, len);
        } else {
            yaml_node_t *r2 = yaml_document_get_root_node(&extra);
            if (r2)
                err_at(&ld, r2, "a second YAML document (after ---); carehub reads one document "
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
    flush_errors(&ld, diag);
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
    free_strs(cfg->listen, cfg->n_listen);
    free(cfg->data_dir);
    free(cfg->schemas_dir);
    free(cfg->metrics);
    free_secret(cfg->secret_key);
    free(cfg->secret_key_file);
    free(cfg->fallback_agency);
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
        free_strs(cfg->agencies[i].channels, cfg->agencies[i].n_channels);
    }
    free(cfg->agencies);
    for (size_t i = 0; i < cfg->n_channels; i++) {
        config_channel_t *ch = &cfg->channels[i];
        free(ch->id);
        free(ch->url);
        free_secret(ch->secret);
        free_strs(ch->to, ch->n_to);
        free(ch->fallback);
    }
    free(cfg->channels);
    for (size_t i = 0; i < cfg->n_workflows; i++) {
        config_workflow_t *wf = &cfg->workflows[i];
        free(wf->name);
        for (size_t j = 0; j < wf->n_match; j++) {
            free(wf->match[j].key);
            free_strs(wf->match[j].values, wf->match[j].n_values);
        }
        free(wf->match);
        for (size_t j = 0; j < wf->n_assign; j++) {
            config_assign_t *as = &wf->assign[j];
            free(as->agency);
            for (size_t k = 0; k < as->n_escalate; k++)
                free_strs(as->escalate[k].notify, as->escalate[k].n_notify);
            free(as->escalate);
        }
        free(wf->assign);
    }
    free(cfg->workflows);
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
