/* feed.c — JSON lines into libcarehub for carehub-send and carehub-monitor; see feed.h. */
#include "carehub_wire.h"
#include "feed.h"

#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <signal.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>
#include <time.h>
#include <unistd.h>

#include "carehub.h"
#include "jsonl.h"
#include "util.h"

static volatile sig_atomic_t feed_stop;

static void on_signal(int sig)
{
    (void)sig;
    feed_stop = 1;
}

void feed_opts_init(feed_opts_t *o, const char *prog, feed_mode_t mode)
{
    cli_init(prog); /* umask 077 */
    memset(o, 0, sizeof *o);
    o->prog = prog;
    o->mode = mode;
    o->endpoint = getenv("CAREHUB_ENDPOINT");
    if (!o->endpoint || !o->endpoint[0])
        o->endpoint = "tcp://127.0.0.1:5570";
    o->agent = getenv("CAREHUB_AGENT");
    if (o->agent && !o->agent[0])
        o->agent = NULL;
    o->spool = getenv("CAREHUB_SPOOL");
    if (o->spool && !o->spool[0])
        o->spool = NULL;
    o->wait_s = 10;
    o->timeout_ms = 3000;
    o->poll_ms = 200;
}

/* A non-negative integer option in [lo, hi]. */
static int int_arg(const feed_opts_t *o, const char *name, const char *s, long lo, long hi, int *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) {
        fprintf(stderr, "%s: %s must be a whole number from %ld to %ld, not \"%s\"\n", o->prog, name,
                lo, hi, s);
        return -1;
    }
    *out = (int)v;
    return 0;
}

int feed_getopt(feed_opts_t *o, int argc, char **argv, int allow_follow, void (*usage)(FILE *out))
{
    enum { O_REJECTED = 256, O_KEYFILE, O_SERVERKEY, O_TIMEOUT, O_FOLLOW, O_POLL };
    static const struct option longopts[] = {
        {"broker", required_argument, NULL, 'b'},
        {"agent", required_argument, NULL, 'a'},
        {"spool", required_argument, NULL, 's'},
        {"rejected", required_argument, NULL, O_REJECTED},
        {"key-file", required_argument, NULL, O_KEYFILE},
        {"server-key", required_argument, NULL, O_SERVERKEY},
        {"wait", required_argument, NULL, 'w'},
        {"timeout", required_argument, NULL, O_TIMEOUT},
        {"follow", no_argument, NULL, O_FOLLOW},
        {"poll-interval", required_argument, NULL, O_POLL},
        {"verbose", no_argument, NULL, 'v'},
        {"quiet", no_argument, NULL, 'q'},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0},
    };
    int ch;
    optind = 1;
    opterr = 0;
    while ((ch = getopt_long(argc, argv, ":b:a:s:w:vqhVf", longopts, NULL)) != -1) {
        switch (ch) {
        case 'b': o->endpoint = optarg; break;
        case 'a': o->agent = optarg; break;
        case 's': o->spool = optarg; break;
        case O_REJECTED: o->rejected = optarg; break;
        case O_KEYFILE: o->key_file = optarg; break;
        case O_SERVERKEY: o->server_key = optarg; break;
        case 'w':
            if (int_arg(o, "--wait", optarg, 0, 86400 * 365, &o->wait_s) < 0)
                return -2;
            break;
        case O_TIMEOUT:
            if (int_arg(o, "--timeout", optarg, 10, 3600000, &o->timeout_ms) < 0)
                return -2;
            break;
        case 'f':
        case O_FOLLOW:
            if (!allow_follow)
                goto unknown;
            o->follow = 1;
            break;
        case O_POLL:
            if (!allow_follow)
                goto unknown;
            if (int_arg(o, "--poll-interval", optarg, 1, 60000, &o->poll_ms) < 0)
                return -2;
            break;
        case 'v': o->verbose = 1; break;
        case 'q': o->quiet = 1; break;
        case 'h':
            usage(stdout);
            return -1;
        case 'V':
            printf("%s (libcarehub %s)\n", o->prog, carehub_version());
            return -1;
        case ':':
            fprintf(stderr, "%s: %s needs a value\n", o->prog, argv[optind - 1]);
            usage(stderr);
            return -2;
        default:
        unknown:
            fprintf(stderr, "%s: unknown option %s\n", o->prog, argv[optind - 1]);
            usage(stderr);
            return -2;
        }
    }
    if (!o->agent) {
        fprintf(stderr, "%s: -a AGENT is required (the agent id configured on the broker)\n", o->prog);
        return -2;
    }
    if (!util_valid_id(o->agent, strlen(o->agent))) {
        fprintf(stderr, "%s: the agent id \"%s\" is not 1-64 characters of [A-Za-z0-9._:-]\n", o->prog,
                o->agent);
        return -2;
    }
    if (!o->key_file != !o->server_key) {
        fprintf(stderr, "%s: CURVE needs both --key-file (this agent's secret key) and --server-key "
                "(the broker's public key)\n", o->prog);
        return -2;
    }
    return optind;
}

/* ---- ids and times ------------------------------------------------------------ */

void feed_line_id(const char *type, const char *name, long lineno, const char *text, size_t len,
                  char out[CAREHUB_ID_MAX + 1])
{
    crypto_generichash_state st;
    unsigned char h[16];
    char num[32], hex[33];
    util_fmt(num, sizeof num, "%ld", lineno);
    crypto_generichash_init(&st, NULL, 0, sizeof h);
    crypto_generichash_update(&st, (const unsigned char *)type, strlen(type) + 1);
    crypto_generichash_update(&st, (const unsigned char *)name, strlen(name) + 1);
    crypto_generichash_update(&st, (const unsigned char *)num, strlen(num) + 1);
    crypto_generichash_update(&st, (const unsigned char *)text, len);
    crypto_generichash_final(&st, h, sizeof h);
    sodium_bin2hex(hex, sizeof hex, h, sizeof h);
    util_fmt(out, 65, "h-%s", hex);
}

/* An id for a detection's own "id" value that is not a protocol id (a URL…). */
void feed_foreign_id(const char *type, const char *value, char out[CAREHUB_ID_MAX + 1])
{
    unsigned char h[16];
    char hex[33];
    crypto_generichash_state st;
    crypto_generichash_init(&st, NULL, 0, sizeof h);
    crypto_generichash_update(&st, (const unsigned char *)type, strlen(type) + 1);
    crypto_generichash_update(&st, (const unsigned char *)value, strlen(value));
    crypto_generichash_final(&st, h, sizeof h);
    sodium_bin2hex(hex, sizeof hex, h, sizeof h);
    util_fmt(out, 65, "d-%s", hex);
}

int feed_parse_time(const char *s, int64_t *ms)
{
    return cli_parse_rfc3339(s, ms);
}

/* ---- the run ------------------------------------------------------------------- */

typedef struct {
    const feed_opts_t *o;
    carehub_t *c;
    char spool[4096];
    char rejected_path[4096];
    FILE *rejected;
    int fatal;            /* an exit code that ends the run */
    long lines, submitted, acked, dups, refused, local_refused;
    int64_t last_answer;  /* mono ms: the broker's last ack/nack, or the end of the input */
} feed_t;

/* Append a refused line to the rejected file (durably: it may be all that is left of it). */
static void reject_write(feed_t *f, const char *text, size_t len)
{
    if (!f->rejected) {
        int fd = cli_open_append(f->rejected_path); /* 0600, not through a link */
        if (fd >= 0 && !(f->rejected = fdopen(fd, "a")))
            close(fd);
        if (!f->rejected) {
            fprintf(stderr, "%s: cannot open the rejected file %s: %s\n", f->o->prog, f->rejected_path,
                    cli_open_errstr(errno));
            f->fatal = FEED_EX_IOERR;
            return;
        }
    }
    if (fwrite(text, 1, len, f->rejected) != len || fputc('\n', f->rejected) == EOF ||
        fflush(f->rejected) != 0 || fsync(fileno(f->rejected)) != 0) {
        fprintf(stderr, "%s: cannot write the rejected file %s: %s\n", f->o->prog, f->rejected_path,
                strerror(errno));
        f->fatal = FEED_EX_IOERR;
    }
}

/* Where an answered event came from, out of its tag: src ("FILE:LINE") and the line. */
static json_t *tag_of(feed_t *f)
{
    const char *tag = carehub_event_tag(f->c);
    return tag ? json_loads(tag, 0, NULL) : NULL;
}

static void cb_ack(void *ud, const char *ref, const char *event, const char *case_id, int duplicate)
{
    feed_t *f = ud;
    f->acked++;
    if (duplicate)
        f->dups++;
    f->last_answer = util_mono_ms();
    if (f->o->verbose) {
        json_t *t = tag_of(f);
        const char *src = json_string_value(json_object_get(t, "src"));
        printf("%s\t%s\t%s\t%s\t%s\n", src ? src : "-", ref, event, case_id,
               duplicate ? "duplicate" : "new");
        fflush(stdout);
        json_decref(t);
    }
}

static void cb_nack(void *ud, const char *ref, const char *code, const char *error, const char *field)
{
    feed_t *f = ud;
    json_t *t = tag_of(f);
    const char *src = json_string_value(json_object_get(t, "src"));
    json_t *line = json_object_get(t, "line");
    f->refused++;
    f->last_answer = util_mono_ms();
    fprintf(stderr, "%s: %s: event %s refused by the broker: %s: %s%s%s%s\n", f->o->prog,
            src ? src : "(spooled earlier)", ref, code, error, field ? " (field " : "",
            field ? field : "", field ? ")" : "");
    if (json_is_string(line))
        reject_write(f, json_string_value(line), json_string_length(line));
    else
        fprintf(stderr, "%s: event %s has no input line on record; nothing written to %s\n",
                f->o->prog, ref, f->rejected_path);
    if (f->o->verbose) {
        printf("%s\t%s\t-\t-\trefused:%s\n", src ? src : "-", ref, code);
        fflush(stdout);
    }
    json_decref(t);
}

static void local_refuse(feed_t *f, const char *name, long lineno, const char *text, size_t len,
                         const char *why)
{
    f->local_refused++;
    fprintf(stderr, "%s: %s:%ld: not sent: %s\n", f->o->prog, name, lineno, why);
    reject_write(f, text, len);
    if (f->o->verbose) {
        printf("%s:%ld\t-\t-\t-\trefused:local\n", name, lineno);
        fflush(stdout);
    }
}

/* `at` out of a JSON value: integer ms or RFC 3339 text. */
static int json_time(const json_t *v, int64_t *ms)
{
    if (json_is_integer(v) && json_integer_value(v) >= 0) {
        *ms = json_integer_value(v);
        return 0;
    }
    if (json_is_string(v))
        return feed_parse_time(json_string_value(v), ms);
    return -1;
}

static int is_blank(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r')
            return 0;
    return 1;
}

/* One input line → one spooled event (or a local refusal). */
static void feed_line(feed_t *f, const char *type, const char *name, long lineno, const char *text,
                      size_t len)
{
    json_error_t je;
    char why[512], id[CAREHUB_ID_MAX + 1] = "", src[4200];
    int64_t at = 0;
    json_t *body = NULL;

    if (is_blank(text, len))
        return; /* blank lines are not events */
    f->lines++;
    json_t *j = json_loadb(text, len, JSON_REJECT_DUPLICATES, &je);
    if (!j) {
        util_fmt(why, sizeof why, "not valid JSON: %s (column %d)", je.text, je.column);
        local_refuse(f, name, lineno, text, len, why);
        return;
    }
    if (!json_is_object(j)) {
        local_refuse(f, name, lineno, text, len, "not a JSON object; each line is one event body {...} "
                     "or one whole event {\"id\":…, \"at\":…, \"body\":{…}}");
        goto out;
    }
    json_t *jb = json_object_get(j, "body");
    int whole = json_is_object(jb);
    if (whole) {
        const char *k;
        json_t *v;
        json_object_foreach(j, k, v) {
            if (strcmp(k, "id") && strcmp(k, "at") && strcmp(k, "body")) {
                util_fmt(why, sizeof why, "a whole-event line has only \"id\", \"at\" and \"body\"; "
                         "\"%s\" is not one of them", k);
                local_refuse(f, name, lineno, text, len, why);
                goto out;
            }
        }
        body = json_incref(jb);
    } else {
        body = json_incref(j);
    }
    json_t *holder = whole ? j : (f->o->mode == FEED_DETECTION ? body : NULL);
    if (holder) {
        json_t *jid = json_object_get(holder, "id"), *jat = json_object_get(holder, "at");
        if (jid) {
            if (json_is_string(jid) && util_valid_id(json_string_value(jid), json_string_length(jid))) {
                util_fmt(id, sizeof id, "%s", json_string_value(jid));
            } else if (!whole && json_is_string(jid) && json_string_length(jid) > 0) {
                feed_foreign_id(type, json_string_value(jid), id);
            } else if (!whole && json_is_integer(jid)) {
                util_fmt(id, sizeof id, "%" JSON_INTEGER_FORMAT, json_integer_value(jid));
                if (!util_valid_id(id, strlen(id)))
                    feed_foreign_id(type, id, id);
            } else {
                local_refuse(f, name, lineno, text, len, "\"id\" must be 1-64 characters of "
                             "[A-Za-z0-9._:-]");
                goto out;
            }
        }
        if (jat && json_time(jat, &at) < 0) {
            local_refuse(f, name, lineno, text, len, "\"at\" must be milliseconds since the epoch or an "
                         "RFC 3339 time such as 2025-03-03T08:15:00+08:00");
            goto out;
        }
        if (!whole) { /* a detection's own id and at are not part of the body */
            (void)json_object_del(body, "id");
            (void)json_object_del(body, "at");
        }
    }
    if (!id[0])
        feed_line_id(type, name, lineno, text, len, id);

    util_fmt(src, sizeof src, "%s:%ld", name, lineno);
    json_t *tagj = json_pack("{s:s, s:s%}", "src", src, "line", text, len);
    char *tag = tagj ? json_dumps(tagj, JSON_COMPACT) : NULL;
    json_decref(tagj);
    char *bodytext = json_dumps(body, JSON_COMPACT);
    int rc = bodytext ? carehub_submit_tagged(f->c, type, at, bodytext, id, tag, NULL) : CAREHUB_EJSON;
    free(bodytext);
    free(tag);
    if (rc == CAREHUB_OK) {
        f->submitted++;
    } else if (rc == CAREHUB_ESPOOL) {
        fprintf(stderr, "%s: %s:%ld: cannot spool the event: %s\n", f->o->prog, name, lineno,
                carehub_last_error(f->c));
        f->fatal = FEED_EX_IOERR;
    } else {
        local_refuse(f, name, lineno, text, len, carehub_last_error(f->c));
    }
out:
    json_decref(body);
    json_decref(j);
}

/* Check what carehub_poll returned; sets f->fatal for what ends the run. */
static void poll_rc(feed_t *f, int rc)
{
    if (rc == CAREHUB_EREFUSED) {
        fprintf(stderr, "%s: %s\n", f->o->prog, carehub_last_error(f->c));
        f->fatal = FEED_EX_NOPERM;
    } else if (rc == CAREHUB_ESPOOL) {
        fprintf(stderr, "%s: %s\n", f->o->prog, carehub_last_error(f->c));
        f->fatal = FEED_EX_IOERR;
    }
    /* ENET (a send failed) and the rest: the library retries */
}

static int read_server_key(const feed_opts_t *o, char out[41])
{
    const char *k = o->server_key;
    /* A key is 40 Z85 characters, and '@' is one of them: a valid key is a key. */
    char probe[41];
    if (strlen(k) == 40 && zmq_z85_decode((uint8_t *)probe, k)) {
        memcpy(out, k, 41);
        return 0;
    }
    if (k[0] == '@') {
        if (carehub_read_key(k + 1, out) != CAREHUB_OK) {
            fprintf(stderr, "%s: cannot read the broker's public key from %s: %s\n", o->prog, k + 1,
                    errno == EINVAL ? "the first line is not 40 Z85 characters" : strerror(errno));
            return errno == EINVAL ? FEED_EX_USAGE : FEED_EX_NOINPUT;
        }
        return 0;
    }
    if (strlen(k) != 40) {
        fprintf(stderr, "%s: --server-key must be the broker's public key (40 Z85 characters) or "
                "@FILE\n", o->prog);
        return FEED_EX_USAGE;
    }
    memcpy(out, k, 41);
    return 0;
}

int feed_run(const feed_opts_t *o, const char *type, char **paths, int npaths)
{
    feed_t f;
    char secret[41], server[41], err[512];
    int nin = npaths > 0 ? npaths : 1;
    jsonl_t **in = xcalloc((size_t)nin, sizeof *in);
    int code = FEED_EX_OK;
    int interrupted = 0;

    memset(&f, 0, sizeof f);
    f.o = o;
    if (o->spool)
        util_fmt(f.spool, sizeof f.spool, "%s", o->spool);
    else
        util_fmt(f.spool, sizeof f.spool, "carehub-spool-%s", o->agent);
    if (o->rejected)
        util_fmt(f.rejected_path, sizeof f.rejected_path, "%s", o->rejected);
    else
        util_fmt(f.rejected_path, sizeof f.rejected_path, "%s/rejected.jsonl", f.spool);

    /* Every input must open before anything is spooled. */
    for (int i = 0; i < nin; i++) {
        in[i] = jsonl_open(npaths > 0 ? paths[i] : "-", o->follow, err, sizeof err);
        if (!in[i]) {
            fprintf(stderr, "%s: %s\n", o->prog, err);
            code = FEED_EX_NOINPUT;
            goto done;
        }
        jsonl_set_nonblock(in[i], 1);
    }

    carehub_opts_t co = {0};
    co.endpoint = o->endpoint;
    co.agent = o->agent;
    co.spool_dir = f.spool;
    co.request_timeout_ms = o->timeout_ms;
    char software[64];
    util_fmt(software, sizeof software, "%s/%s", o->prog, carehub_version());
    co.software = software;
    if (o->key_file) {
        char why[4400];
        if ((code = cli_read_secret_key(o->key_file, secret, why, sizeof why)) != 0) {
            fprintf(stderr, "%s: the agent's secret key file %s %s\n", o->prog, o->key_file, why);
            goto done;
        }
        if ((code = read_server_key(o, server)) != 0)
            goto done;
        co.secret_key = secret;
        co.server_key = server; /* the public key is derived (zmq_curve_public) */
    }
    carehub_callbacks_t cb = {cb_ack, cb_nack, NULL, NULL, &f};
    int rc;
    f.c = carehub_new(&co, &cb, &rc, err, sizeof err);
    if (!f.c) {
        fprintf(stderr, "%s: %s\n", o->prog, err);
        code = rc == CAREHUB_ESPOOL ? FEED_EX_IOERR : FEED_EX_USAGE;
        goto done;
    }

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    (void)sigaction(SIGINT, &sa, NULL); /* no SA_RESTART: zmq_poll returns EINTR */
    (void)sigaction(SIGTERM, &sa, NULL);

    /* Read, spool and send; events spooled by an earlier run go first (spool order). */
    for (int i = 0; i < nin && !f.fatal && !feed_stop; i++) {
        for (;;) {
            const char *line;
            size_t len;
            long lineno;
            if (f.fatal || feed_stop)
                break;
            jsonl_rc_t r = jsonl_next(in[i], &line, &len, &lineno);
            if (r == JSONL_LINE) {
                feed_line(&f, type, jsonl_name(in[i]), lineno, line, len);
                if (!f.fatal)
                    poll_rc(&f, carehub_poll(f.c, 0));
            } else if (r == JSONL_AGAIN) {
                poll_rc(&f, carehub_poll(f.c, o->follow ? o->poll_ms : 20));
            } else if (r == JSONL_TOOLONG) {
                f.lines++;
                f.local_refused++;
                fprintf(stderr, "%s: %s:%ld: not sent: the line is longer than %d bytes (not written "
                        "to the rejected file)\n", o->prog, jsonl_name(in[i]), lineno, JSONL_MAX_LINE);
            } else if (r == JSONL_ERROR) {
                fprintf(stderr, "%s: %s\n", o->prog, jsonl_error(in[i]));
                f.fatal = FEED_EX_NOINPUT;
            } else {
                break; /* JSONL_EOF */
            }
        }
    }

    /* Wait for the answers; the clock restarts with every answer. */
    f.last_answer = util_mono_ms();
    while (!f.fatal && !feed_stop && carehub_pending(f.c) > 0) {
        int64_t left = (int64_t)o->wait_s * 1000 - (util_mono_ms() - f.last_answer);
        if (left <= 0)
            break;
        poll_rc(&f, carehub_poll(f.c, left > 500 ? 500 : (int)left));
    }
    interrupted = feed_stop != 0;

    size_t pending = carehub_pending(f.c);
    if (f.fatal)
        code = f.fatal;
    else if (f.refused + f.local_refused > 0)
        code = FEED_EX_DATAERR;
    else if (pending > 0 && !(o->follow && interrupted))
        code = FEED_EX_TEMPFAIL;
    if (pending > 0 && !f.fatal && !interrupted)
        fprintf(stderr, "%s: no answer from the broker at %s within %d s; %zu event(s) stay in the "
                "spool %s and go first on the next run\n", o->prog, o->endpoint, o->wait_s, pending,
                f.spool);
    if (!o->quiet)
        fprintf(stderr, "%s: %ld line(s): %ld spooled, %ld acknowledged (%ld already stored), "
                "%ld refused; %zu waiting in %s%s\n", o->prog, f.lines, f.submitted, f.acked, f.dups,
                f.refused + f.local_refused, pending, f.spool, interrupted ? " (interrupted)" : "");
    if (f.refused + f.local_refused > 0 && !o->quiet)
        fprintf(stderr, "%s: refused lines are in %s\n", o->prog, f.rejected_path);

done:
    carehub_destroy(&f.c);
    if (f.rejected && fclose(f.rejected) != 0 && code == FEED_EX_OK)
        code = FEED_EX_IOERR;
    for (int i = 0; i < nin; i++)
        jsonl_close(&in[i]);
    free(in);
    return code;
}

int feed_main(const char *prog, feed_mode_t mode, const char *type, int argc, char **argv,
              void (*usage)(FILE *out))
{
    feed_opts_t o;
    feed_opts_init(&o, prog, mode);
    int first = feed_getopt(&o, argc, argv, mode == FEED_DETECTION, usage);
    if (first == -1)
        return FEED_EX_OK;
    if (first < 0)
        return FEED_EX_USAGE;
    if (!type) {
        if (first >= argc) {
            fprintf(stderr, "%s: TYPE is required (absence, mandatory_report, online_risk)\n", prog);
            usage(stderr);
            return FEED_EX_USAGE;
        }
        type = argv[first++];
        if (!util_valid_id(type, strlen(type))) {
            fprintf(stderr, "%s: \"%s\" is not an event type (absence, mandatory_report, "
                    "online_risk)\n", prog, type);
            return FEED_EX_USAGE;
        }
    }
    return feed_run(&o, type, argv + first, argc - first);
}
