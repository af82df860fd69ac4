/* cli.c — the command-line agents' shared helpers; see cli.h. */
#include "cli.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <fcntl.h>
#include <jansson.h>
#include <sys/stat.h>
#include <zmq.h>

#include "csv.h"
#include "hmap.h"
#include "keyfile.h"
#include "util.h"

static char prog_name[64] = "carehub";
volatile sig_atomic_t cli_stop = 0;

const char cli_common_help[] =
    "  -b, --broker ENDPOINT  the broker ($CAREHUB_ENDPOINT, default tcp://127.0.0.1:5570)\n"
    "  -a, --agent ID         this agent's id as configured on the broker ($CAREHUB_AGENT)\n"
    "  -s, --spool DIR        the outbox ($CAREHUB_SPOOL, default ./carehub-spool-ID);\n"
    "                         one process per spool at a time\n"
    "      --key-file FILE    CURVE: this agent's secret key (first line: 40 Z85 characters);\n"
    "                         its public key is derived from it\n"
    "      --server-key KEY   CURVE: the broker's public key, 40 Z85 characters, or @FILE\n"
    "  -w, --wait SECONDS     how long to wait for the broker (also 500ms, 2m)\n"
    "      --lang zh|en       the language of what people read: zh (中文, default) or en\n"
    "                         ($CAREHUB_LANG); --json and --csv output stays as it is\n"
    "  -h, --help             this help\n";

/* ---- exit codes and messages -------------------------------------------------- */

int cli_exit_for(int err)
{
    switch (err) {
    case CAREHUB_OK:
        return CLI_EX_OK;
    case CAREHUB_EINVAL:
    case CAREHUB_EJSON:
        return CLI_EX_USAGE;
    case CAREHUB_ESPOOL:
    case CAREHUB_ENOMEM:
        return CLI_EX_IO;
    case CAREHUB_EREFUSED:
        return CLI_EX_NOPERM;
    case CAREHUB_ENET:
    case CAREHUB_ETIMEOUT:
    default:
        return CLI_EX_UNREACHABLE;
    }
}

void cli_init(const char *argv0)
{
    umask(077);
    const char *base = argv0 ? strrchr(argv0, '/') : NULL;
    base = base ? base + 1 : (argv0 ? argv0 : "carehub");
    util_fmt(prog_name, sizeof prog_name, "%s", base);
}

const char *cli_prog(void)
{
    return prog_name;
}

void cli_err(const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "%s: ", prog_name);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

/* ---- common options -------------------------------------------------------------- */

void cli_common_init(cli_common_t *c)
{
    memset(c, 0, sizeof *c);
    c->wait_ms = -1;
}

int cli_getopt(cli_common_t *c, int argc, char **argv, const struct option *longopts)
{
    for (;;) {
        int opt = getopt_long(argc, argv, CLI_COMMON_SHORTOPTS, longopts, NULL);
        if (opt == -1)
            return 0;
        int k = cli_common_opt(c, opt, optarg);
        if (k < 0)
            return -1;
        if (k == 0)
            return opt;
    }
}

int cli_common_opt(cli_common_t *c, int opt, const char *arg)
{
    switch (opt) {
    case 'b':
        c->endpoint = arg;
        return 1;
    case 'a':
        c->agent = arg;
        return 1;
    case 'h':
        c->help = 1;
        return 1;
    case 's':
        c->spool_dir = arg;
        return 1;
    case CLI_OPT_KEY_FILE:
        c->key_file = arg;
        return 1;
    case CLI_OPT_SERVER_KEY:
        c->server_key = arg;
        return 1;
    case CLI_OPT_LANG: {
        cli_lang_t l;
        if (cli_lang_parse(arg, &l) < 0) {
            cli_err("--lang %s: give zh (中文, the default) or en (English)", cli_show(arg));
            return -1;
        }
        cli_set_lang(l);
        return 1;
    }
    case 'w':
        if (cli_parse_duration_ms(arg, &c->wait_ms) < 0) {
            cli_err("--wait %s: give seconds (e.g. 10, 2.5, 500ms, 2m; at most a day)", arg);
            return -1;
        }
        return 1;
    default:
        return 0;
    }
}

int cli_read_secret_key(const char *path, char out[41], char *why, size_t whylen)
{
    errno = 0;
    if (carehub_read_secret_key(path, out) == CAREHUB_OK)
        return 0;
    int e = errno;
    struct stat st;
    if (e == EINVAL && stat(path, &st) == 0 && S_ISREG(st.st_mode)) {
        util_fmt(why, whylen, "holds no key: its first line is not 40 Z85 characters");
        return CLI_EX_USAGE;
    }
    keyfile_why(e, path, 4096, why, whylen);
    return CLI_EX_NOINPUT;
}

int cli_open_append(const char *path)
{
    return open(path, O_WRONLY | O_CREAT | O_APPEND | O_NOFOLLOW | O_CLOEXEC, 0600);
}

const char *cli_open_errstr(int err)
{
    return err == ELOOP ? "it is a symbolic link (files with children's data are not written "
                          "through links)"
                        : strerror(err);
}

static int load_keys(cli_common_t *c)
{
    if (!c->key_file && !c->server_key)
        return 0;
    if (!c->key_file || !c->server_key) {
        cli_err("CURVE needs both --key-file (this agent's secret key) and --server-key "
                "(the broker's public key)");
        return CLI_EX_USAGE;
    }
    char why[4400];
    int rc = cli_read_secret_key(c->key_file, c->secret, why, sizeof why);
    if (rc != 0) {
        cli_err("--key-file %s %s", c->key_file, why);
        return rc;
    }
    if (zmq_curve_public(c->public_key, c->secret) != 0) {
        cli_err("--key-file %s: not a CURVE secret key: %s", c->key_file, zmq_strerror(errno));
        return CLI_EX_USAGE;
    }
    /* A key is 40 Z85 characters, and '@' is one of them: a valid key is a key. */
    if (keyfile_z85_valid(c->server_key)) {
        memcpy(c->server, c->server_key, 41);
    } else {
        const char *path = c->server_key[0] == '@' ? c->server_key + 1 : c->server_key;
        errno = 0;
        rc = carehub_read_key(path, c->server);
        if (rc != CAREHUB_OK) {
            int bad_key = errno == EINVAL || errno == 0;
            cli_err("--server-key %s: %s", c->server_key,
                    bad_key ? "give 40 Z85 characters, or @FILE with them on its first line"
                            : strerror(errno));
            return bad_key ? CLI_EX_USAGE : CLI_EX_NOINPUT;
        }
    }
    c->curve = 1;
    return 0;
}

int cli_common_check(cli_common_t *c, int need_agent)
{
    int lrc = cli_lang_check_env();
    if (lrc)
        return lrc;
    if (!c->endpoint || !*c->endpoint)
        c->endpoint = getenv("CAREHUB_ENDPOINT");
    if (!c->endpoint || !*c->endpoint)
        c->endpoint = CLI_DEFAULT_ENDPOINT;
    if (!c->agent || !*c->agent)
        c->agent = getenv("CAREHUB_AGENT");
    if ((need_agent || !c->spool_dir) && (!c->agent || !*c->agent)) {
        cli_err("no agent id: give -a ID (as configured under `agents` on the broker) or set "
                "CAREHUB_AGENT");
        return CLI_EX_USAGE;
    }
    if (c->agent && !util_valid_id(c->agent, strlen(c->agent))) {
        cli_err("-a %s: an agent id is 1-64 characters of A-Z a-z 0-9 . _ : -", c->agent);
        return CLI_EX_USAGE;
    }
    if (!c->spool_dir && !c->no_spool) {
        if (cli_default_spool(c->agent, c->spool_buf, sizeof c->spool_buf) < 0) {
            cli_err("the default spool directory is too long; give --spool DIR");
            return CLI_EX_USAGE;
        }
        c->spool_dir = c->spool_buf;
    }
    return load_keys(c);
}

int cli_wait(const cli_common_t *c, int def_ms)
{
    return c->wait_ms >= 0 ? c->wait_ms : def_ms;
}

int cli_default_spool(const char *agent, char *buf, size_t len)
{
    const char *env = getenv("CAREHUB_SPOOL");
    int n = env && *env ? snprintf(buf, len, "%s", env)
                        : snprintf(buf, len, "carehub-spool-%s", agent);
    return (n < 0 || (size_t)n >= len) ? -1 : 0;
}

carehub_t *cli_open(const cli_common_t *c, const char *software, const carehub_callbacks_t *cb,
                    int *exit_code)
{
    carehub_opts_t o;
    memset(&o, 0, sizeof o);
    o.endpoint = c->endpoint;
    o.agent = c->agent;
    o.spool_dir = c->spool_dir;
    o.software = software;
    o.request_timeout_ms = c->request_timeout_ms;
    if (c->curve) {
        o.secret_key = c->secret;
        o.public_key = c->public_key;
        o.server_key = c->server;
    }
    int err = 0;
    char msg[512] = "";
    carehub_t *h = carehub_new(&o, cb, &err, msg, sizeof msg);
    if (!h) {
        if (err == CAREHUB_ENET) {
            cli_err("cannot connect to %s: %s", c->endpoint, msg[0] ? msg : carehub_strerror(err));
            *exit_code = CLI_EX_USAGE;   /* a bad endpoint or key: fix the command line */
        } else {
            cli_err("%s", msg[0] ? msg : carehub_strerror(err));
            *exit_code = cli_exit_for(err);
        }
        return NULL;
    }
    *exit_code = 0;
    return h;
}

static int is_connected(carehub_t *c, void *ud)
{
    (void)ud;
    return carehub_connected(c);
}

int cli_wait_connected(carehub_t *c, int timeout_ms)
{
    cli_until_t u = {is_connected, NULL, NULL, 0};
    int rc = cli_poll_until(c, timeout_ms < 0 ? INT64_MAX / 2 : timeout_ms, &u);
    if (rc)
        return rc;
    if (!carehub_connected(c))
        return CLI_EX_UNREACHABLE;
    cli_follow_broker_zone(c);
    return 0;
}

int cli_poll_until(carehub_t *c, int64_t wait_ms, const cli_until_t *u)
{
    int64_t deadline = util_mono_ms() + wait_ms;
    size_t seen = u->progress ? u->progress(c, u->ud) : 0;
    while (!cli_stop && !(u->done && u->done(c, u->ud))) {
        int64_t left = deadline - util_mono_ms();
        if (left <= 0)
            break;
        int rc = carehub_poll(c, (int)(left < 200 ? left : 200));
        if (rc != CAREHUB_OK && !(rc == CAREHUB_ENET && u->retry_enet)) {
            cli_err("%s", carehub_last_error(c));
            return cli_exit_for(rc);
        }
        cli_follow_broker_zone(c); /* before a callback that shows a time runs next */
        if (u->progress) {
            size_t now = u->progress(c, u->ud);
            if (now != seen) {
                seen = now;
                deadline = util_mono_ms() + wait_ms;
            }
        }
    }
    return 0;
}

static size_t map_count(carehub_t *c, void *ud)
{
    (void)c;
    return cli_map_size(ud);
}

int cli_collect_quiet(carehub_t *c, int quiet_ms, const struct cli_map *seen, const char *hint)
{
    int rc = cli_wait_connected(c, quiet_ms > 5000 ? quiet_ms : 5000);
    if (rc == CLI_EX_UNREACHABLE)
        cli_err("the broker did not answer%s%s", hint ? "; " : "", hint ? hint : "");
    if (rc)
        return rc;
    cli_until_t u = {NULL, map_count, (void *)seen, 0};
    return cli_poll_until(c, quiet_ms, &u);
}

void cli_nack_set(cli_nack_t *n, const char *code, const char *error, const char *field)
{
    util_fmt(n->code, sizeof n->code, "%s", code ? code : "?");
    util_fmt(n->error, sizeof n->error, "%s", error ? error : "");
    util_fmt(n->field, sizeof n->field, "%s", field ? field : "");
}

int cli_nack_report(const cli_nack_t *n, const char *what)
{
    cli_err("the broker refused%s%s: %s: %s%s%s", what && *what ? " " : "", what ? what : "", n->code,
            n->error, n->field[0] ? " at " : "", n->field);
    return !strcmp(n->code, "unavailable") ? CLI_EX_UNREACHABLE : CLI_EX_DATA;
}

int cli_nothing_pending(carehub_t *c, void *ud)
{
    (void)ud;
    return carehub_pending(c) == 0;
}

int cli_flag_set(carehub_t *c, void *ud)
{
    (void)c;
    return *(const int *)ud != 0;
}

/* ---- signals ------------------------------------------------------------------ */

static void on_signal(int sig)
{
    (void)sig;
    cli_stop = 1;
}

void cli_catch_signals(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
}

/* ---- values ------------------------------------------------------------------- */

int cli_utf8_valid(const char *s)
{
    return util_utf8_valid(s, strlen(s));
}

size_t cli_utf8_len(const char *s)
{
    return util_utf8_count(s, strlen(s));
}

const char *cli_json_str(const json_t *o, const char *key, const char *def)
{
    const char *v = json_string_value(json_object_get(o, key));
    return v ? v : def;
}

const char *cli_show(const char *s)
{
    static char ring[8][200];
    static unsigned next;
    char *out = ring[next++ % 8];
    size_t o = 0, chars = 0;
    const unsigned char *p = (const unsigned char *)s;
    while (*p && chars < 40) {
        size_t n = util_utf8_seq(p, strnlen((const char *)p, 4));
        if (n == 0) {
            out[o++] = '?';
            p++;
        } else if (n == 1 && (*p < 0x20 || *p == 0x7f)) {
            out[o++] = '?';
            p++;
        } else {
            memcpy(out + o, p, n);
            o += n;
            p += n;
        }
        chars++;
    }
    if (*p) {
        memcpy(out + o, "...", 3);
        o += 3;
    }
    out[o] = '\0';
    return out;
}

void cli_put_safe(FILE *f, const char *s)
{
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        fputc(ch < 0x20 || ch == 0x7f ? '?' : ch, f);
    }
}

char *cli_trim(char *s)
{
    size_t n = strlen(s);
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r' || s[n - 1] == '\n'))
        s[--n] = '\0';
    size_t i = 0;
    while (s[i] == ' ' || s[i] == '\t' || s[i] == '\r' || s[i] == '\n')
        i++;
    if (i)
        memmove(s, s + i, n - i + 1);
    return s;
}

int cli_parse_bool(const char *s, int *out)
{
    static const char *const yes[] = {"yes", "y", "true", "t", "1", "on", NULL};
    static const char *const no[] = {"no", "n", "false", "f", "0", "off", NULL};
    char w[16];
    size_t n = strlen(s);
    if (n >= sizeof w)
        return -1;   /* longer than any accepted word, blanks included */
    memcpy(w, s, n + 1);
    cli_trim(w);
    for (char *p = w; *p; p++)
        *p = (char)tolower((unsigned char)*p);
    for (int i = 0; yes[i]; i++)
        if (!strcmp(w, yes[i])) {
            *out = 1;
            return 0;
        }
    for (int i = 0; no[i]; i++)
        if (!strcmp(w, no[i])) {
            *out = 0;
            return 0;
        }
    return -1;
}

int cli_enum_index(const char *s, const char *const *vals)
{
    for (int i = 0; vals[i]; i++)
        if (!strcmp(s, vals[i]))
            return i;
    return -1;
}

void cli_enum_list(const char *const *vals, const char *sep, char *buf, size_t len)
{
    size_t used = 0;
    if (len == 0)
        return;
    buf[0] = '\0';
    for (int i = 0; vals[i]; i++) {
        int n = snprintf(buf + used, len - used, "%s%s", i ? sep : "", vals[i]);
        if (n < 0 || (size_t)n >= len - used)
            return;
        used += (size_t)n;
    }
}

int cli_enum_check(const char *s, const char *const *vals, const char *sep, char *why,
                   size_t whylen)
{
    int k = cli_enum_index(s, vals);
    if (k < 0) {
        char list[512];
        cli_enum_list(vals, sep, list, sizeof list);
        util_fmt(why, whylen, "'%s' is not one of %s", cli_show(s), list);
    }
    return k;
}

int cli_parse_duration_ms(const char *s, int *out_ms)
{
    char *end = NULL;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || errno || !(v >= 0))
        return -1;
    double mult = 1000;
    if (!strcmp(end, "") || !strcmp(end, "s"))
        mult = 1000;
    else if (!strcmp(end, "ms"))
        mult = 1;
    else if (!strcmp(end, "m"))
        mult = 60000;
    else if (!strcmp(end, "h"))
        mult = 3600000;
    else
        return -1;
    double ms = v * mult;
    if (ms > 86400000.0)
        return -1;
    *out_ms = (int)(ms + 0.5);
    return 0;
}

/* ---- string map: keys and values in one array, found through an hmap ---------- */

struct cli_map {
    hmap_t index;    /* key -> position in ents + 1 */
    struct {
        char *key;
        long val;
    } *ents;
    size_t n, cap;
};

static int map_eq(void *ctx, uintptr_t val, const void *key, size_t len)
{
    const char *k = ((const cli_map_t *)ctx)->ents[val - 1].key;
    return strlen(k) == len && memcmp(k, key, len) == 0;
}

cli_map_t *cli_map_new(void)
{
    cli_map_t *m = xcalloc(1, sizeof *m);
    hmap_init(&m->index, map_eq, m);
    return m;
}

void cli_map_destroy(cli_map_t **mp)
{
    if (!mp || !*mp)
        return;
    cli_map_t *m = *mp;
    for (size_t i = 0; i < m->n; i++)
        free(m->ents[i].key);
    free(m->ents);
    hmap_free(&m->index);
    free(m);
    *mp = NULL;
}

int cli_map_put(cli_map_t *m, const char *key, long value)
{
    size_t len = strlen(key);
    uintptr_t at = hmap_get(&m->index, key, len);
    if (at) {
        m->ents[at - 1].val = value;
        return 0;
    }
    if (m->n == m->cap) {
        m->cap = m->cap ? m->cap * 2 : 64;
        m->ents = xrealloc(m->ents, m->cap * sizeof *m->ents);
    }
    m->ents[m->n].key = xstrdup(key);
    m->ents[m->n].val = value;
    m->n++;
    hmap_put(&m->index, key, len, (uintptr_t)m->n);
    return 1;
}

int cli_map_get(const cli_map_t *m, const char *key, long *value)
{
    uintptr_t at = hmap_get(&m->index, key, strlen(key));
    if (!at)
        return 0;
    if (value)
        *value = m->ents[at - 1].val;
    return 1;
}

size_t cli_map_size(const cli_map_t *m)
{
    return m->n;
}

/* ---- outcome log ---------------------------------------------------------------- */

struct cli_outcomes {
    char path[4200];
    cli_map_t *seen;   /* outcome ids in the file */
};

cli_outcomes_t *cli_outcomes_open(const char *spool_dir)
{
    return cli_pushlog_open(spool_dir, CLI_OUTCOMES_FILE);
}

const char *cli_pushlog_path(const cli_pushlog_t *o)
{
    return o->path;
}

cli_pushlog_t *cli_pushlog_open(const char *spool_dir, const char *file)
{
    cli_outcomes_t *o = xcalloc(1, sizeof *o);
    util_fmt(o->path, sizeof o->path, "%s/%s", spool_dir, file);
    o->seen = cli_map_new();
    FILE *f = fopen(o->path, "r");
    if (!f)
        return o;
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    while ((n = getline(&line, &cap, f)) > 0) {
        json_t *j = json_loadb(line, (size_t)n, 0, NULL);
        const char *id = json_string_value(json_object_get(j, "id"));
        if (id)
            cli_map_put(o->seen, id, 1);
        json_decref(j);
    }
    free(line);
    fclose(f);
    return o;
}

void cli_outcomes_close(cli_outcomes_t **op)
{
    if (!op || !*op)
        return;
    cli_map_destroy(&(*op)->seen);
    free(*op);
    *op = NULL;
}

int cli_outcomes_add(cli_outcomes_t *o, const char *json)
{
    json_t *j = json_loads(json, 0, NULL);
    const char *id = json_string_value(json_object_get(j, "id"));
    if (!json_is_object(j) || !id) {
        json_decref(j);
        return -1;
    }
    if (cli_map_get(o->seen, id, NULL)) {
        json_decref(j);
        return 0;
    }
    json_object_set_new(j, "received_at", json_integer(util_now_ms()));
    char *text = json_dumps(j, JSON_COMPACT);
    int rc = -1;
    int fd = cli_open_append(o->path);
    if (fd >= 0 && text) {
        size_t len = strlen(text);
        text[len] = '\n';   /* json_dumps leaves room: its NUL */
        ssize_t w = write(fd, text, len + 1);
        if (w == (ssize_t)(len + 1) && fsync(fd) == 0) {
            rc = 1;
            cli_map_put(o->seen, id, 1);
        }
    }
    if (rc < 0)
        cli_err("cannot write the %s %s to %s: %s", cli_json_str(j, "op", "message"), id, o->path,
                cli_open_errstr(errno));
    if (fd >= 0)
        close(fd);
    free(text);
    json_decref(j);
    return rc;
}
