/*
 * carehub — the operator's and supervisor's command line: read cases, case
 * files and the trail, verify the trail, draw the yearly spot-check sample,
 * and report response times per agency (docs/protocol.md, Extensions: the
 * `query` op).
 *
 *   carehub -b EP -a AGENT cases [--status S] [--agency A] [--type T] [--overdue]
 *                                [--since DATE|ms] [--limit N] [--after ID] [--all] [--json]
 *   carehub -b EP -a AGENT case ID [--json]
 *   carehub -b EP -a AGENT trail ID [--json]
 *   carehub -b EP -a AGENT verify [--json]         (online, supervisors)
 *   carehub verify --data DIR                      (offline: runs carehubd verify)
 *   carehub -b EP -a AGENT sample [--n N] [--seed S] [--json]
 *   carehub -b EP -a AGENT report [--since DATE] [--json|--csv|--html FILE]
 *   carehub -b EP -a AGENT stats [--json]
 *
 * The broker decides what the agent may read (least privilege) and writes
 * every read and every refusal to the trail; a refusal is printed and the
 * exit code is 65.
 *
 * Why not libcarehub: the answers to `query what:"trail"` carry the records'
 * hashes as msgpack bin values, which libcarehub's reply path (JSON text)
 * cannot represent and drops. This program therefore speaks the wire protocol
 * itself (one DEALER, hello, then one request at a time, answering pings),
 * turning bin values into lowercase hex. It sends no events and keeps no
 * spool. The common options (-b, -a, --key-file, --server-key, --wait) are
 * those of agents/lib/cli.h.
 */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <msgpack.h>
#include <sodium.h>
#include <zmq.h>

#include "cli.h"
#include "frame.h"
#include "util.h"

#define SOFTWARE "carehub/1.0"
#define DEFAULT_WAIT_MS 10000     /* each answer from the broker: wait this long */
#define PAGE_MAX 1000             /* the broker's largest page */
#define DEFAULT_SAMPLE_N 20
#define EX_BROKEN 1               /* verify: the trail is broken */
#define EX_UNAVAILABLE 69         /* verify --data: carehubd not found */

/* ---- msgpack <-> JSON ----------------------------------------------------------------- */

/* A msgpack value as JSON: bin as lowercase hex text, ext as null, text that
 * is not UTF-8 as "?". Never NULL. */
static json_t *to_json(const msgpack_object *o, int depth)
{
    if (depth > 64)
        return json_null();
    switch (o->type) {
    case MSGPACK_OBJECT_BOOLEAN:
        return json_boolean(o->via.boolean);
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        return json_integer(o->via.u64 > (uint64_t)INT64_MAX ? INT64_MAX : (json_int_t)o->via.u64);
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
        return json_integer(o->via.i64);
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64:
        return isfinite(o->via.f64) ? json_real(o->via.f64) : json_null();
    case MSGPACK_OBJECT_STR: {
        json_t *j = json_stringn(o->via.str.size ? o->via.str.ptr : "", o->via.str.size);
        return j ? j : json_string("?");
    }
    case MSGPACK_OBJECT_BIN: {
        size_t n = o->via.bin.size;
        char *hex = xmalloc(2 * n + 1);
        sodium_bin2hex(hex, 2 * n + 1, (const unsigned char *)o->via.bin.ptr, n);
        json_t *j = json_string(hex);
        free(hex);
        return j;
    }
    case MSGPACK_OBJECT_ARRAY: {
        json_t *a = json_array();
        for (uint32_t i = 0; i < o->via.array.size; i++)
            json_array_append_new(a, to_json(&o->via.array.ptr[i], depth + 1));
        return a;
    }
    case MSGPACK_OBJECT_MAP: {
        json_t *m = json_object();
        for (uint32_t i = 0; i < o->via.map.size; i++) {
            const msgpack_object_kv *kv = &o->via.map.ptr[i];
            if (kv->key.type != MSGPACK_OBJECT_STR)
                continue;
            char *k = xstrndup(kv->key.via.str.size ? kv->key.via.str.ptr : "", kv->key.via.str.size);
            json_object_set_new(m, k, to_json(&kv->val, depth + 1));
            free(k);
        }
        return m;
    }
    default:
        return json_null();
    }
}

/* ---- the session: one DEALER, hello, requests one at a time -------------------------------- */

typedef struct {
    void *ctx, *sock;
    const cli_common_t *co;
    int wait_ms;
    char code[64], error[1024], field[256];
} sess_t;

static void new_id(char out[33])
{
    unsigned char r[12];
    randombytes_buf(r, sizeof r);
    memcpy(out, "cli-", 4);
    sodium_bin2hex(out + 4, 25, r, sizeof r);
}

/* Send {v:1, op, id, ...fields}. 0 or -1. */
static int sess_send(sess_t *s, const char *op, const char *id, json_t *fields)
{
    uint32_t extra = 0;
    const char *k;
    json_t *v;
    if (fields)
        json_object_foreach(fields, k, v)
            if (strcmp(k, "v") && strcmp(k, "op") && strcmp(k, "id"))
                extra++;
    frame_out_t o;
    frame_out_message(&o, op, id, extra);
    if (fields)
        json_object_foreach(fields, k, v) {
            if (!strcmp(k, "v") || !strcmp(k, "op") || !strcmp(k, "id"))
                continue;
            frame_out_key(&o, k);
            frame_pack_json(&o.pk, v);
        }
    int rc = zmq_send(s->sock, o.sb.data, o.sb.size, 0) < 0 ? -1 : 0;
    frame_out_end(&o);
    return rc;
}

/* Wait for the answer to `id` until deadline (mono ms): 0 answer in *out
 * (JSON), 1 nack (code, error, field set), -1 time ran out or stopped. */
static int sess_wait(sess_t *s, const char *id, int64_t deadline, json_t **out)
{
    for (;;) {
        if (cli_stop)
            return -1;
        int64_t left = deadline - util_mono_ms();
        if (left <= 0)
            return -1;
        zmq_pollitem_t it = {s->sock, 0, ZMQ_POLLIN, 0};
        int k = zmq_poll(&it, 1, left < 200 ? (long)left : 200);
        if (k <= 0)
            continue;
        /* a message may come in parts; the payload is the last */
        zmq_msg_t msg;
        zmq_msg_init(&msg);
        int more = 1, got = 0;
        while (more) {
            zmq_msg_close(&msg);
            zmq_msg_init(&msg);
            if (zmq_msg_recv(&msg, s->sock, ZMQ_DONTWAIT) < 0)
                break;
            got = 1;
            more = zmq_msg_more(&msg);
        }
        if (!got) {
            zmq_msg_close(&msg);
            continue;
        }
        msgpack_unpacked u;
        msgpack_unpacked_init(&u);
        int done = 0;
        if (msgpack_unpack_next(&u, zmq_msg_data(&msg), zmq_msg_size(&msg), NULL) ==
                MSGPACK_UNPACK_SUCCESS &&
            u.data.type == MSGPACK_OBJECT_MAP) {
            json_t *m = to_json(&u.data, 0);
            const char *op = cli_json_str(m, "op", "");
            const char *mid = cli_json_str(m, "id", NULL);
            if (!strcmp(op, "ping")) {
                json_t *none = json_object();
                (void)sess_send(s, "pong", mid ? mid : "pong", none);
                json_decref(none);
            } else if (mid && !strcmp(mid, id)) {
                if (!strcmp(op, "nack")) {
                    util_fmt(s->code, sizeof s->code, "%s", cli_json_str(m, "code", "?"));
                    util_fmt(s->error, sizeof s->error, "%s", cli_json_str(m, "error", ""));
                    util_fmt(s->field, sizeof s->field, "%s", cli_json_str(m, "field", ""));
                    done = 1;
                } else {
                    *out = json_incref(m);
                    done = 2;
                }
            } /* pushes (case, outcome) and late answers: not for this program */
            json_decref(m);
        }
        msgpack_unpacked_destroy(&u);
        zmq_msg_close(&msg);
        if (done)
            return done == 2 ? 0 : 1;
    }
}

static int sess_hello(sess_t *s)
{
    char id[33];
    new_id(id);
    json_t *f = json_pack("{s:s, s:s}", "agent", s->co->agent, "software", SOFTWARE);
    int rc = sess_send(s, "hello", id, f);
    json_decref(f);
    if (rc < 0) {
        cli_err("cannot send to %s: %s", s->co->endpoint, zmq_strerror(zmq_errno()));
        return CLI_EX_UNREACHABLE;
    }
    json_t *w = NULL;
    rc = sess_wait(s, id, util_mono_ms() + s->wait_ms, &w);
    if (rc < 0) {
        cli_err("no answer from the broker at %s within %d s; is it running? (--wait S waits "
                "longer)", s->co->endpoint, s->wait_ms / 1000);
        return CLI_EX_UNREACHABLE;
    }
    if (rc > 0) {
        cli_err("the broker refused agent %s: %s: %s", s->co->agent, s->code, s->error);
        return !strcmp(s->code, "unauthorized") ? CLI_EX_NOPERM : CLI_EX_DATA;
    }
    json_decref(w);
    return 0;
}

static int sess_open(sess_t *s, const cli_common_t *co)
{
    memset(s, 0, sizeof *s);
    s->co = co;
    s->wait_ms = cli_wait(co, DEFAULT_WAIT_MS);
    if (s->wait_ms <= 0)
        s->wait_ms = DEFAULT_WAIT_MS;
    s->ctx = zmq_ctx_new();
    s->sock = s->ctx ? zmq_socket(s->ctx, ZMQ_DEALER) : NULL;
    if (!s->sock) {
        cli_err("cannot make a ZeroMQ socket: %s", zmq_strerror(zmq_errno()));
        return CLI_EX_UNREACHABLE;
    }
    int zero = 0;
    (void)zmq_setsockopt(s->sock, ZMQ_LINGER, &zero, sizeof zero);
    if (co->curve &&
        (zmq_setsockopt(s->sock, ZMQ_CURVE_SERVERKEY, co->server, 41) < 0 ||
         zmq_setsockopt(s->sock, ZMQ_CURVE_PUBLICKEY, co->public_key, 41) < 0 ||
         zmq_setsockopt(s->sock, ZMQ_CURVE_SECRETKEY, co->secret, 41) < 0)) {
        cli_err("cannot set the CURVE keys: %s", zmq_strerror(zmq_errno()));
        return CLI_EX_USAGE;
    }
    if (zmq_connect(s->sock, co->endpoint) < 0) {
        cli_err("-b %s: %s (an endpoint is e.g. tcp://127.0.0.1:5570)", co->endpoint,
                zmq_strerror(zmq_errno()));
        return CLI_EX_USAGE;
    }
    return sess_hello(s);
}

static void sess_close(sess_t *s)
{
    if (s->sock)
        zmq_close(s->sock);
    if (s->ctx)
        zmq_ctx_term(s->ctx);
    s->sock = s->ctx = NULL;
}

/* One request ({op, ...} without v and id): 0 and the answer in *out, or an
 * exit code with the message printed (65 refused, 75 no answer). */
static int sess_request(sess_t *s, json_t *req, json_t **out)
{
    *out = NULL;
    for (int attempt = 0; attempt < 2; attempt++) {
        char id[33];
        new_id(id);
        if (sess_send(s, cli_json_str(req, "op", "?"), id, req) < 0) {
            cli_err("cannot send to %s: %s", s->co->endpoint, zmq_strerror(zmq_errno()));
            return CLI_EX_UNREACHABLE;
        }
        int rc = sess_wait(s, id, util_mono_ms() + s->wait_ms, out);
        if (rc == 0)
            return 0;
        if (rc < 0) {
            cli_err(cli_stop ? "interrupted" : "no answer from the broker at %s within %d s "
                    "(--wait S waits longer)", s->co->endpoint, s->wait_ms / 1000);
            return CLI_EX_UNREACHABLE;
        }
        if (!strcmp(s->code, "hello_required") && attempt == 0) {
            int h = sess_hello(s); /* the broker restarted: say hello again, ask again */
            if (h)
                return h;
            continue;
        }
        break;
    }
    cli_err("the broker refused: %s: %s%s%s%s", s->code, s->error, s->field[0] ? " (at " : "",
            s->field, s->field[0] ? ")" : "");
    return !strcmp(s->code, "unavailable") ? CLI_EX_UNREACHABLE : CLI_EX_DATA;
}

/* A query {op:"query", what, ...fields}. */
static int query(sess_t *s, const char *what, json_t *fields, json_t **out)
{
    json_t *req = fields ? json_deep_copy(fields) : json_object();
    json_object_set_new(req, "op", json_string("query"));
    json_object_set_new(req, "what", json_string(what));
    int rc = sess_request(s, req, out);
    json_decref(req);
    return rc;
}

/* Every item (`key` of each answer) of the list query `what`, following `next`
 * while all (else one page). items gets them; *last the last answer (or NULL). */
static int query_pages(sess_t *s, const char *what, json_t *fields, const char *key, int all,
                       json_t *items, json_t **last, const char **next_out)
{
    json_t *f = fields ? json_deep_copy(fields) : json_object();
    json_t *r = NULL;
    int rc = 0;
    *last = NULL;
    for (;;) {
        rc = query(s, what, f, &r);
        if (rc)
            break;
        json_t *arr = json_object_get(r, key);
        if (!json_is_array(arr)) {
            cli_err("the broker's answer to query %s has no list `%s`", what, key);
            rc = CLI_EX_DATA;
            break;
        }
        json_array_extend(items, arr);
        const char *next = cli_json_str(r, "next", NULL);
        const char *prev = cli_json_str(f, "after", NULL);
        json_decref(*last);
        *last = r;
        r = NULL;
        if (!all || !next || !*next || !json_array_size(arr) || (prev && !strcmp(prev, next)))
            break;
        json_object_set_new(f, "after", json_string(next));
    }
    json_decref(r);
    json_decref(f);
    if (next_out)
        *next_out = *last ? cli_json_str(*last, "next", NULL) : NULL;
    return rc;
}

/* ---- printing ------------------------------------------------------------------------------- */

static int is_time_key(const char *k)
{
    static const char *const keys[] = {"opened", "at", "received", "created", "ack_by", "acked_at",
                                       "next_due", "closed", "updated", "occurred_at", "resolved_at",
                                       "last_event", "now", NULL};
    return cli_enum_index(k, keys) >= 0;
}

/* A value for a table or a key=value line. */
static void put_val(FILE *f, const char *key, const json_t *v)
{
    if (json_is_string(v)) {
        const char *s = json_string_value(v);
        cli_put_safe(f, *s ? s : "-");
    } else if (json_is_integer(v)) {
        json_int_t n = json_integer_value(v);
        if (key && is_time_key(key)) {
            char t[64];
            if (n <= 0)
                fputc('-', f);
            else {
                cli_format_time(n, t, sizeof t);
                fputs(t, f);
            }
        } else {
            fprintf(f, "%lld", (long long)n);
        }
    } else if (json_is_real(v)) {
        fprintf(f, "%g", json_real_value(v));
    } else if (json_is_boolean(v)) {
        fputs(json_is_true(v) ? "yes" : "no", f);
    } else if (json_is_null(v) || !v) {
        fputc('-', f);
    } else if (json_is_array(v)) {
        size_t i;
        json_t *x;
        json_array_foreach(v, i, x) {
            if (i)
                fputc(',', f);
            put_val(f, NULL, x);
        }
    } else {
        fputs("{…}", f);
    }
}

/* Every leaf of o as "  prefix.key: value" lines (nested objects flattened). */
static void put_tree(FILE *f, const char *indent, const char *prefix, const json_t *o)
{
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)o, k, v) {
        char path[512];
        util_fmt(path, sizeof path, "%s%s%s", prefix, *prefix ? "." : "", k);
        if (json_is_object(v)) {
            put_tree(f, indent, path, v);
            continue;
        }
        fputs(indent, f);
        cli_put_safe(f, path);
        fputs(": ", f);
        put_val(f, k, v);
        fputc('\n', f);
    }
}

static void put_json_line(const json_t *j)
{
    char *t = json_dumps(j, JSON_COMPACT);
    if (t) {
        fputs(t, stdout);
        fputc('\n', stdout);
    }
    free(t);
}

static void put_cell(const char *key, const json_t *v, int width)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&buf, &len);
    if (!m)
        return;
    put_val(m, key, v);
    fclose(m);
    fputs(buf, stdout);
    /* pad by characters, not bytes (names may be Chinese) */
    int n = (int)cli_utf8_len(buf);
    for (; n < width; n++)
        fputc(' ', stdout);
    fputc(' ', stdout);
    free(buf);
}

static void put_case_row(const json_t *c)
{
    put_cell("id", json_object_get(c, "id"), 20);
    put_cell("type", json_object_get(c, "type"), 16);
    put_cell("status", json_object_get(c, "status"), 11);
    put_cell("severity", json_object_get(c, "severity"), 8);
    put_cell("opened", json_object_get(c, "opened"), 23);
    size_t i;
    json_t *a;
    json_array_foreach(json_object_get(c, "assignments"), i, a) {
        if (i)
            fputs(", ", stdout);
        cli_put_safe(stdout, cli_json_str(a, "agency", "?"));
        fputc(':', stdout);
        cli_put_safe(stdout, cli_json_str(a, "state", "?"));
    }
    fputc('\n', stdout);
}

static void put_case_header(void)
{
    printf("%-20s %-16s %-11s %-8s %-23s %s\n", "CASE", "TYPE", "STATUS", "SEVERITY", "OPENED",
           "ASSIGNMENTS");
}

/* ---- options -------------------------------------------------------------------------------- */

enum {
    OPT_JSON = CLI_OPT_FIRST_PROGRAM,
    OPT_CSV,
    OPT_HTML,
    OPT_STATUS,
    OPT_AGENCY,
    OPT_TYPE,
    OPT_OVERDUE,
    OPT_SINCE,
    OPT_LIMIT,
    OPT_AFTER,
    OPT_ALL,
    OPT_DATA,
    OPT_N,
    OPT_SEED,
    OPT_END
};
#define BIT(o) (1u << ((o) - CLI_OPT_FIRST_PROGRAM))

typedef struct {
    unsigned given;         /* BIT(OPT_*) of the options given */
    int json, csv, overdue, all;
    const char *html, *status, *agency, *type, *after, *data, *seed;
    int64_t since;          /* -1 = not given */
    long limit, n;
} opts_t;

/* ---- cases, case, trail ----------------------------------------------------------------------- */

static int cmd_cases(sess_t *s, const opts_t *o)
{
    json_t *f = json_object();
    if (o->status)
        json_object_set_new(f, "status", json_string(o->status));
    if (o->agency)
        json_object_set_new(f, "agency", json_string(o->agency));
    if (o->type)
        json_object_set_new(f, "type", json_string(o->type));
    if (o->overdue)
        json_object_set_new(f, "overdue", json_true());
    if (o->since >= 0)
        json_object_set_new(f, "since", json_integer(o->since));
    if (o->after)
        json_object_set_new(f, "after", json_string(o->after));
    json_object_set_new(f, "limit", json_integer(o->limit > 0 ? o->limit : (o->all ? PAGE_MAX : 100)));
    json_t *items = json_array(), *last = NULL;
    const char *next = NULL;
    int rc = query_pages(s, "cases", f, "cases", o->all, items, &last, &next);
    if (!rc) {
        size_t i;
        json_t *c;
        if (!o->json && json_array_size(items))
            put_case_header();
        json_array_foreach(items, i, c) {
            if (o->json)
                put_json_line(c);
            else
                put_case_row(c);
        }
        if (!o->json)
            fprintf(stderr, "%zu case(s)\n", json_array_size(items));
        if (!o->all && next && *next)
            fprintf(stderr, "%s: more cases: --after %s for the next page, or --all\n", cli_prog(),
                    next);
    }
    json_decref(last);
    json_decref(items);
    json_decref(f);
    return rc;
}

static int cmd_case(sess_t *s, const opts_t *o, const char *id)
{
    json_t *f = json_pack("{s:s}", "case", id), *r = NULL;
    int rc = query(s, "case", f, &r);
    json_decref(f);
    if (rc)
        return rc;
    if (o->json) {
        put_json_line(r);
        json_decref(r);
        return 0;
    }
    json_t *c = json_deep_copy(json_object_get(r, "case"));
    printf("case %s\n", cli_show(cli_json_str(c, "id", id)));
    json_object_del(c, "join"); /* the broker's internal joining key */
    put_tree(stdout, "  ", "", c);
    json_decref(c);
    json_t *evs = json_object_get(r, "events"), *as = json_object_get(r, "assignments"), *x;
    size_t i;
    printf("events (%zu):\n", json_array_size(evs));
    json_array_foreach(evs, i, x) {
        printf("  %zu. ", i + 1);
        cli_put_safe(stdout, cli_json_str(x, "type", "?"));
        static const char *const keys[] = {"id", "at", "received", "severity", "agent", "ref", NULL};
        for (int k = 0; keys[k]; k++) {
            json_t *v = json_object_get(x, keys[k]);
            if (!v)
                continue;
            printf(" %s=", keys[k]);
            put_val(stdout, keys[k], v);
        }
        fputc('\n', stdout);
        json_t *body = json_object_get(x, "body");
        if (json_is_object(body))
            put_tree(stdout, "       ", "", body);
    }
    printf("assignments (%zu):\n", json_array_size(as));
    json_array_foreach(as, i, x) {
        printf("  ");
        cli_put_safe(stdout, cli_json_str(x, "agency", "?"));
        static const char *const keys[] = {"id", "state", "created", "ack_by", "acked_at", "by",
                                           "level", "to", NULL};
        for (int k = 0; keys[k]; k++) {
            json_t *v = json_object_get(x, keys[k]);
            if (!v)
                continue;
            printf(" %s=", keys[k]);
            put_val(stdout, keys[k], v);
        }
        fputc('\n', stdout);
        const char *note = cli_json_str(x, "note", "");
        if (*note) {
            fputs("     note: ", stdout);
            cli_put_safe(stdout, note);
            fputc('\n', stdout);
        }
    }
    json_decref(r);
    return 0;
}

static int cmd_trail(sess_t *s, const opts_t *o, const char *id)
{
    json_t *f = json_pack("{s:s}", "case", id), *r = NULL;
    int rc = query(s, "trail", f, &r);
    json_decref(f);
    if (rc)
        return rc;
    json_t *recs = json_object_get(r, "records"), *x;
    size_t i;
    if (!o->json)
        printf("%-6s %-23s %-12s %-16s %-26s %-8s %s\n", "SEQ", "TIME", "KIND", "ACTOR", "OBJECT",
               "REF", "HASH");
    json_array_foreach(recs, i, x) {
        if (o->json) {
            put_json_line(x);
            continue;
        }
        put_cell("seq", json_object_get(x, "seq"), 6);
        put_cell("at", json_object_get(x, "at"), 23);
        put_cell("kind", json_object_get(x, "kind"), 12);
        put_cell("actor", json_object_get(x, "actor"), 16);
        put_cell("obj", json_object_get(x, "obj"), 26);
        put_cell("ref", json_object_get(x, "ref"), 8);
        const char *hh = cli_json_str(x, "hash", "");
        printf("%.16s\n", *hh ? hh : "-");
    }
    if (!o->json)
        fprintf(stderr, "%zu trail record(s) of case %s\n", json_array_size(recs), cli_show(id));
    json_decref(r);
    return 0;
}

/* ---- verify -------------------------------------------------------------------------------- */

static int cmd_verify_online(sess_t *s, const opts_t *o)
{
    json_t *r = NULL;
    int rc = query(s, "verify", NULL, &r);
    if (rc)
        return rc;
    int intact = json_is_true(json_object_get(r, "intact"));
    json_int_t recs = json_integer_value(json_object_get(r, "records"));
    json_int_t objs = json_integer_value(json_object_get(r, "objects"));
    if (o->json) {
        put_json_line(r);
    } else if (intact) {
        printf("intact: %lld trail records chained; %lld events, cases and assignments match "
               "their trail\n", (long long)recs, (long long)objs);
    } else {
        fputs("BROKEN: ", stdout);
        cli_put_safe(stdout, cli_json_str(r, "problem", "(no problem named)"));
        printf("\n(%lld trail records walked, %lld records checked before it)\n", (long long)recs,
               (long long)objs);
    }
    json_decref(r);
    return intact ? CLI_EX_OK : EX_BROKEN;
}

/* verify --data DIR: run carehubd verify (next to this program, else on $PATH);
 * its output and exit code are ours. Returns only when it cannot be run. */
static int cmd_verify_offline(const char *dir)
{
    char self[4096], path[4200];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    char *argv[] = {(char *)"carehubd", (char *)"verify", (char *)"--data", (char *)dir, NULL};
    fflush(NULL);
    if (n > 0) {
        self[n] = '\0';
        char *slash = strrchr(self, '/');
        if (slash) {
            *slash = '\0';
            util_fmt(path, sizeof path, "%s/carehubd", self);
            if (access(path, X_OK) == 0) {
                execv(path, argv);
                cli_err("cannot run %s: %s", path, strerror(errno));
                return EX_UNAVAILABLE;
            }
        }
    }
    execvp("carehubd", argv);
    cli_err("cannot run carehubd (not next to %s nor on $PATH): %s", cli_prog(), strerror(errno));
    return EX_UNAVAILABLE;
}

/* ---- sample --------------------------------------------------------------------------------- */

static const char *const CHECK_ABSENCE[] = {
    "contact with the guardian recorded", "the reason for the absence found",
    "follow-up recorded (back at school, or referred)", NULL};
static const char *const CHECK_REPORT[] = {
    "every agency acknowledged in time (before ack_by)", "the reporter told the outcome",
    "the harm reported acted on (visit, protection measure, referral)", NULL};
static const char *const CHECK_ONLINE[] = {
    "the content removed (or the platform asked to)", "the child contacted",
    "the guardian informed where appropriate", NULL};
static const char *const CHECK_OTHER[] = {
    "the case file complete", "every agency acknowledged in time", "the outcome recorded", NULL};

static const char *const *checklist(const char *type)
{
    if (!strcmp(type, "absence"))
        return CHECK_ABSENCE;
    if (!strcmp(type, "mandatory_report"))
        return CHECK_REPORT;
    if (!strcmp(type, "online_risk"))
        return CHECK_ONLINE;
    return CHECK_OTHER;
}

static int by_id(const void *a, const void *b)
{
    const json_t *x = *(json_t *const *)a, *y = *(json_t *const *)b;
    return strcmp(cli_json_str(x, "id", ""), cli_json_str(y, "id", ""));
}

static int cmd_sample(sess_t *s, const opts_t *o)
{
    char year[16];
    const char *seed = o->seed;
    if (!seed) {
        time_t t = time(NULL);
        struct tm tm;
        localtime_r(&t, &tm);
        util_fmt(year, sizeof year, "%d", tm.tm_year + 1900);
        seed = year;
    }
    long want = o->n > 0 ? o->n : DEFAULT_SAMPLE_N;
    json_t *f = json_pack("{s:i}", "limit", PAGE_MAX), *items = json_array(), *last = NULL;
    int rc = query_pages(s, "cases", f, "cases", 1, items, &last, NULL);
    json_decref(f);
    json_decref(last);
    if (rc) {
        json_decref(items);
        return rc;
    }
    size_t n = json_array_size(items);
    json_t **v = xcalloc(n ? n : 1, sizeof *v);
    for (size_t i = 0; i < n; i++)
        v[i] = json_array_get(items, i);
    if (n)
        qsort(v, n, sizeof *v, by_id); /* the same population gives the same order */

    /* seed text -> 32 bytes -> a deterministic stream -> Fisher-Yates */
    unsigned char key[randombytes_SEEDBYTES];
    crypto_generichash(key, sizeof key, (const unsigned char *)seed, strlen(seed), NULL, 0);
    unsigned char *rnd = xmalloc(8 * (n ? n : 1));
    randombytes_buf_deterministic(rnd, 8 * (n ? n : 1), key);
    for (size_t i = n; i > 1; i--) {
        uint64_t r = 0;
        for (int b = 0; b < 8; b++)
            r = (r << 8) | rnd[8 * (i - 1) + (size_t)b];
        size_t j = (size_t)(r % i); /* bias below 2^-40 for any real case count */
        json_t *tmp = v[i - 1];
        v[i - 1] = v[j];
        v[j] = tmp;
    }
    size_t k = (size_t)want < n ? (size_t)want : n;
    if (o->json) {
        json_t *out = json_pack("{s:s, s:I, s:I, s:[]}", "seed", seed, "population", (json_int_t)n,
                                "n", (json_int_t)k, "cases");
        json_t *arr = json_object_get(out, "cases");
        for (size_t i = 0; i < k; i++) {
            json_t *c = json_deep_copy(v[i]), *chk = json_array();
            for (const char *const *q = checklist(cli_json_str(c, "type", "")); *q; q++)
                json_array_append_new(chk, json_string(*q));
            json_object_set_new(c, "check", chk);
            json_array_append_new(arr, c);
        }
        put_json_line(out);
        json_decref(out);
    } else {
        printf("spot check: %zu of %zu case(s), seed ", k, n);
        cli_put_safe(stdout, seed);
        printf(" (redraw the same sample: %s sample --n %ld --seed ", cli_prog(), want);
        cli_put_safe(stdout, seed);
        printf(")\n");
        if (n < (size_t)want)
            printf("(fewer cases than --n: all of them are in the sample)\n");
        for (size_t i = 0; i < k; i++) {
            printf("\n%zu. ", i + 1);
            put_case_row(v[i]);
            for (const char *const *q = checklist(cli_json_str(v[i], "type", "")); *q; q++)
                printf("   [ ] %s\n", *q);
        }
    }
    sodium_memzero(key, sizeof key);
    free(rnd);
    free(v);
    json_decref(items);
    return 0;
}

/* ---- report --------------------------------------------------------------------------------- */

typedef struct {
    char agency[128];
    long count, due, on_time, escalations, open_overdue;
    double *mins;           /* time to acknowledge, minutes */
    size_t nmins;
} agency_row_t;

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Nearest-rank percentile of sorted values; NAN when there are none. */
static double percentile(const double *v, size_t n, double p)
{
    if (!n)
        return NAN;
    size_t r = (size_t)ceil(p * (double)n);
    return v[r ? r - 1 : 0];
}

static json_t *num_or_null(double x)
{
    return isnan(x) ? json_null() : json_real(round(x * 10) / 10);
}

static void fmt_num(char *buf, size_t len, double x, const char *suffix)
{
    if (isnan(x))
        util_fmt(buf, len, "-");
    else
        util_fmt(buf, len, "%.1f%s", x, suffix);
}

static void html_escape(FILE *f, const char *s)
{
    for (; *s; s++) {
        switch (*s) {
        case '&': fputs("&amp;", f); break;
        case '<': fputs("&lt;", f); break;
        case '>': fputs("&gt;", f); break;
        case '"': fputs("&quot;", f); break;
        case '\'': fputs("&#39;", f); break;
        default:
            if ((unsigned char)*s < 0x20 && *s != '\n' && *s != '\t')
                fputc('?', f);
            else
                fputc(*s, f);
        }
    }
}

static void csv_field(FILE *f, const char *s)
{
    if (!strpbrk(s, ",\"\r\n")) {
        fputs(s, f);
        return;
    }
    fputc('"', f);
    for (; *s; s++) {
        if (*s == '"')
            fputc('"', f);
        fputc(*s, f);
    }
    fputc('"', f);
}

static int write_html(const char *file, agency_row_t *rows, size_t n, const double *pct,
                      const double *p50, const double *p90, int64_t now, int64_t since,
                      const cli_common_t *co)
{
    FILE *f = fopen(file, "w");
    if (!f) {
        cli_err("--html %s: cannot write: %s", file, strerror(errno));
        return CLI_EX_IO;
    }
    char t[64], t2[64];
    cli_format_time(now, t, sizeof t);
    fputs("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
          "<title>carehub: acknowledgement per agency</title>\n<style>\n"
          "body{font-family:sans-serif;margin:2em;color:#1a1a1a;background:#ffffff}\n"
          "table{border-collapse:collapse;margin:1em 0}\n"
          "th,td{border:1px solid #888;padding:4px 10px;text-align:right}\n"
          "th:first-child,td:first-child{text-align:left}\n"
          "th{background:#e8eef4}\n.note{color:#555;font-size:90%}\n"
          "</style>\n</head>\n<body>\n<h1>Acknowledgement per agency</h1>\n<p class=\"note\">",
          f);
    fputs("Figures at ", f);
    html_escape(f, t);
    if (since > 0) {
        cli_format_time(since, t2, sizeof t2);
        fputs(", assignments created since ", f);
        html_escape(f, t2);
    }
    fputs("; broker ", f);
    html_escape(f, co->endpoint);
    fputs(", read as ", f);
    html_escape(f, co->agent);
    fputs(".</p>\n<table>\n<tr><th>agency</th><th>assignments</th><th>due</th>"
          "<th>on time</th><th>on time %</th><th>ack p50 (min)</th><th>ack p90 (min)</th>"
          "<th>escalations</th><th>open overdue</th></tr>\n", f);
    for (size_t i = 0; i < n; i++) {
        char a[32], b[32], c[32];
        fmt_num(a, sizeof a, pct[i], "%");
        fmt_num(b, sizeof b, p50[i], "");
        fmt_num(c, sizeof c, p90[i], "");
        fputs("<tr><td>", f);
        html_escape(f, rows[i].agency);
        fprintf(f, "</td><td>%ld</td><td>%ld</td><td>%ld</td><td>", rows[i].count, rows[i].due,
                rows[i].on_time);
        html_escape(f, a);
        fputs("</td><td>", f);
        html_escape(f, b);
        fputs("</td><td>", f);
        html_escape(f, c);
        fprintf(f, "</td><td>%ld</td><td>%ld</td></tr>\n", rows[i].escalations,
                rows[i].open_overdue);
    }
    fputs("</table>\n<h2>Acknowledged on time (%)</h2>\n", f);
    const int label_w = 180, bar_w = 500, row_h = 28;
    int height = (int)n * row_h + 40;
    fprintf(f, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" "
               "viewBox=\"0 0 %d %d\" role=\"img\" aria-label=\"acknowledged on time per agency\">\n"
               "<title>Acknowledged on time, per agency</title>\n",
            label_w + bar_w + 80, height, label_w + bar_w + 80, height);
    for (size_t i = 0; i < n; i++) {
        int y = 10 + (int)i * row_h;
        double p = isnan(pct[i]) ? 0 : pct[i];
        char a[32];
        fmt_num(a, sizeof a, pct[i], "%");
        fprintf(f, "<text x=\"%d\" y=\"%d\" font-size=\"14\" text-anchor=\"end\" "
                   "font-family=\"sans-serif\">", label_w - 8, y + 16);
        html_escape(f, rows[i].agency);
        fprintf(f, "</text>\n<rect x=\"%d\" y=\"%d\" width=\"%.1f\" height=\"%d\" "
                   "fill=\"%s\"><title>",
                label_w, y, p * bar_w / 100.0, row_h - 8, p >= 90 ? "#2e7d32" : p >= 60 ? "#f9a825" : "#c62828");
        html_escape(f, rows[i].agency);
        fputs(": ", f);
        html_escape(f, a);
        fprintf(f, "</title></rect>\n<text x=\"%.1f\" y=\"%d\" font-size=\"13\" "
                   "font-family=\"sans-serif\">", label_w + p * bar_w / 100.0 + 6, y + 16);
        html_escape(f, a);
        fputs("</text>\n", f);
    }
    fprintf(f, "<line x1=\"%d\" y1=\"5\" x2=\"%d\" y2=\"%d\" stroke=\"#333\"/>\n"
               "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"#333\"/>\n"
               "<text x=\"%d\" y=\"%d\" font-size=\"12\" text-anchor=\"end\" "
               "font-family=\"sans-serif\">100%%</text>\n</svg>\n",
            label_w, label_w, height - 20, label_w, height - 20, label_w + bar_w, height - 20,
            label_w + bar_w, height - 6);
    fputs("<p class=\"note\">On time: acknowledged no later than its deadline (ack_by), of the "
          "assignments that are due (acknowledged, or past the deadline). Time to acknowledge: "
          "from the assignment's creation, in minutes (nearest-rank percentiles). "
          "Escalations: escalation steps fired.</p>\n</body>\n</html>\n", f);
    int bad = ferror(f);
    if (fclose(f) != 0 || bad) {
        cli_err("--html %s: cannot write: %s", file, strerror(errno));
        return CLI_EX_IO;
    }
    return 0;
}

static int cmd_report(sess_t *s, const opts_t *o)
{
    json_t *f = json_pack("{s:i}", "limit", PAGE_MAX), *items = json_array(), *last = NULL;
    int rc = query_pages(s, "assignments", f, "assignments", 1, items, &last, NULL);
    json_decref(f);
    if (rc) {
        json_decref(items);
        json_decref(last);
        return rc;
    }
    json_t *jnow = json_object_get(last, "now");
    int64_t now = json_is_integer(jnow) ? json_integer_value(jnow) : util_now_ms();
    json_decref(last);

    agency_row_t *rows = NULL;
    size_t n = 0, i;
    json_t *a;
    json_array_foreach(items, i, a) {
        json_int_t created = json_integer_value(json_object_get(a, "created"));
        json_int_t ack_by = json_integer_value(json_object_get(a, "ack_by"));
        json_int_t acked = json_integer_value(json_object_get(a, "acked_at"));
        if (o->since >= 0 && created < o->since)
            continue;
        const char *ag = cli_json_str(a, "agency", "?");
        size_t r;
        for (r = 0; r < n && strcmp(rows[r].agency, ag); r++)
            ;
        if (r == n) {
            rows = xrealloc(rows, (n + 1) * sizeof *rows);
            memset(&rows[n], 0, sizeof rows[n]);
            util_fmt(rows[n].agency, sizeof rows[n].agency, "%s", ag);
            n++;
        }
        agency_row_t *row = &rows[r];
        row->count++;
        if (acked > 0 || ack_by < now)
            row->due++;
        if (acked > 0 && acked <= ack_by)
            row->on_time++;
        if (acked > 0) {
            row->mins = xrealloc(row->mins, (row->nmins + 1) * sizeof *row->mins);
            row->mins[row->nmins++] = (double)(acked - created) / 60000.0;
        }
        row->escalations += (long)json_integer_value(json_object_get(a, "level"));
        if (!strcmp(cli_json_str(a, "state", ""), "open") && ack_by < now)
            row->open_overdue++;
    }
    json_decref(items);
    /* agencies in name order */
    for (size_t x = 1; x < n; x++)
        for (size_t y = x; y > 0 && strcmp(rows[y - 1].agency, rows[y].agency) > 0; y--) {
            agency_row_t tmp = rows[y];
            rows[y] = rows[y - 1];
            rows[y - 1] = tmp;
        }
    double *pct = xcalloc(n + 1, sizeof *pct), *p50 = xcalloc(n + 1, sizeof *p50),
           *p90 = xcalloc(n + 1, sizeof *p90);
    for (i = 0; i < n; i++) {
        if (rows[i].nmins)
            qsort(rows[i].mins, rows[i].nmins, sizeof *rows[i].mins, cmp_double);
        pct[i] = rows[i].due ? 100.0 * (double)rows[i].on_time / (double)rows[i].due : NAN;
        p50[i] = percentile(rows[i].mins, rows[i].nmins, 0.5);
        p90[i] = percentile(rows[i].mins, rows[i].nmins, 0.9);
    }

    if (o->html) {
        rc = write_html(o->html, rows, n, pct, p50, p90, now, o->since, s->co);
        if (!rc)
            fprintf(stderr, "%s: wrote %s (%zu agencies)\n", cli_prog(), o->html, n);
    } else if (o->json) {
        json_t *out = json_pack("{s:I, s:o, s:[]}", "now", (json_int_t)now, "since",
                                o->since >= 0 ? json_integer(o->since) : json_null(), "agencies");
        json_t *arr = json_object_get(out, "agencies");
        for (i = 0; i < n; i++)
            json_array_append_new(arr, json_pack(
                "{s:s, s:I, s:I, s:I, s:o, s:o, s:o, s:I, s:I}", "agency", rows[i].agency,
                "assignments", (json_int_t)rows[i].count, "due", (json_int_t)rows[i].due,
                "on_time", (json_int_t)rows[i].on_time, "on_time_pct", num_or_null(pct[i]),
                "ack_p50_min", num_or_null(p50[i]), "ack_p90_min", num_or_null(p90[i]),
                "escalations", (json_int_t)rows[i].escalations, "open_overdue",
                (json_int_t)rows[i].open_overdue));
        put_json_line(out);
        json_decref(out);
    } else if (o->csv) {
        puts("agency,assignments,due,on_time,on_time_pct,ack_p50_min,ack_p90_min,escalations,"
             "open_overdue");
        for (i = 0; i < n; i++) {
            char a1[32], a2[32], a3[32];
            fmt_num(a1, sizeof a1, pct[i], "");
            fmt_num(a2, sizeof a2, p50[i], "");
            fmt_num(a3, sizeof a3, p90[i], "");
            csv_field(stdout, rows[i].agency);
            printf(",%ld,%ld,%ld,%s,%s,%s,%ld,%ld\n", rows[i].count, rows[i].due,
                   rows[i].on_time, isnan(pct[i]) ? "" : a1, isnan(p50[i]) ? "" : a2,
                   isnan(p90[i]) ? "" : a3, rows[i].escalations, rows[i].open_overdue);
        }
    } else {
        char t[64];
        cli_format_time(now, t, sizeof t);
        printf("acknowledgement per agency, at %s\n", t);
        printf("%-20s %11s %5s %8s %9s %9s %9s %11s %12s\n", "AGENCY", "ASSIGNMENTS", "DUE",
               "ON TIME", "ON TIME %", "ACK p50", "ACK p90", "ESCALATIONS", "OPEN OVERDUE");
        for (i = 0; i < n; i++) {
            char a1[32], a2[32], a3[32];
            fmt_num(a1, sizeof a1, pct[i], "%");
            fmt_num(a2, sizeof a2, p50[i], "m");
            fmt_num(a3, sizeof a3, p90[i], "m");
            fputs(cli_show(rows[i].agency), stdout);
            for (size_t w = cli_utf8_len(cli_show(rows[i].agency)); w < 21; w++)
                fputc(' ', stdout);
            printf("%11ld %5ld %8ld %9s %9s %9s %11ld %12ld\n", rows[i].count, rows[i].due,
                   rows[i].on_time, a1, a2, a3, rows[i].escalations, rows[i].open_overdue);
        }
        if (!n)
            printf("(no assignments)\n");
    }
    for (i = 0; i < n; i++)
        free(rows[i].mins);
    free(rows);
    free(pct);
    free(p50);
    free(p90);
    return rc;
}

/* ---- stats ---------------------------------------------------------------------------------- */

static void count_by(json_t *counts, const json_t *items, const char *key)
{
    size_t i;
    json_t *x;
    json_array_foreach(items, i, x) {
        const char *k = cli_json_str(x, key, "?");
        json_t *c = json_object_get(counts, k);
        json_object_set_new(counts, k, json_integer(c ? json_integer_value(c) + 1 : 1));
    }
}

static void put_counts(const char *label, const json_t *counts)
{
    const char *k;
    json_t *v;
    printf("  %s:", label);
    if (!json_object_size(counts))
        fputs(" -", stdout);
    json_object_foreach((json_t *)counts, k, v) {
        fputc(' ', stdout);
        cli_put_safe(stdout, k);
        printf(" %lld", (long long)json_integer_value(v));
    }
    fputc('\n', stdout);
}

static int cmd_stats(sess_t *s, const opts_t *o)
{
    json_t *f = json_pack("{s:i}", "limit", PAGE_MAX), *cases = json_array(),
           *as = json_array(), *last = NULL;
    int rc = query_pages(s, "cases", f, "cases", 1, cases, &last, NULL);
    json_decref(last);
    last = NULL;
    if (!rc)
        rc = query_pages(s, "assignments", f, "assignments", 1, as, &last, NULL);
    json_decref(last);
    json_decref(f);
    if (!rc) {
        json_t *out = json_pack("{s:I, s:{}, s:{}, s:I, s:{}}", "cases",
                                (json_int_t)json_array_size(cases), "cases_by_status",
                                "cases_by_type", "assignments", (json_int_t)json_array_size(as),
                                "assignments_by_state");
        count_by(json_object_get(out, "cases_by_status"), cases, "status");
        count_by(json_object_get(out, "cases_by_type"), cases, "type");
        count_by(json_object_get(out, "assignments_by_state"), as, "state");
        if (o->json) {
            put_json_line(out);
        } else {
            printf("cases: %zu\n", json_array_size(cases));
            put_counts("by status", json_object_get(out, "cases_by_status"));
            put_counts("by type", json_object_get(out, "cases_by_type"));
            printf("assignments: %zu\n", json_array_size(as));
            put_counts("by state", json_object_get(out, "assignments_by_state"));
        }
        json_decref(out);
    }
    json_decref(cases);
    json_decref(as);
    return rc;
}

/* ---- main ----------------------------------------------------------------------------------- */

typedef struct {
    const char *name;
    int nargs;              /* positional arguments */
    unsigned allowed;       /* BIT(OPT_*) */
    const char *synopsis;
    const char *help;
} command_t;

static const command_t COMMANDS[] = {
    {"cases", 0,
     BIT(OPT_JSON) | BIT(OPT_STATUS) | BIT(OPT_AGENCY) | BIT(OPT_TYPE) | BIT(OPT_OVERDUE) |
         BIT(OPT_SINCE) | BIT(OPT_LIMIT) | BIT(OPT_AFTER) | BIT(OPT_ALL),
     "cases [--status S] [--agency A] [--type T] [--overdue] [--since DATE|ms]\n"
     "             [--limit N] [--after CASE] [--all] [--json]",
     "The cases this agent may read (no personal data), oldest first: one page of --limit\n"
     "(default 100) after --after, or every page with --all (--limit is then the page size).\n"
     "--overdue: with an open assignment past its deadline. --since: opened at or after.\n"
     "--json: one JSON object per case.\n"},
    {"case", 1, BIT(OPT_JSON), "case CASE [--json]",
     "The case file: the case, its events with their bodies opened (the child's name,\n"
     "the reporter...: personal data; the read is recorded in the trail) and its\n"
     "assignments. --json: the broker's answer as one JSON object.\n"},
    {"trail", 1, BIT(OPT_JSON), "trail CASE [--json]",
     "The case's trail records, one per line: seq, time, kind, actor, object, ref and the\n"
     "first 16 hex digits of the object's hash. --json: one JSON object per record.\n"},
    {"verify", 0, BIT(OPT_JSON) | BIT(OPT_DATA), "verify [--json] | verify --data DIR",
     "Check the trail's hash chain and every event, case and assignment against it.\n"
     "Online (supervisors): the broker walks its store. --data DIR: offline, on a stopped\n"
     "broker's data directory or an mdb_copy: runs `carehubd verify --data DIR` (carehubd\n"
     "next to this program, else on $PATH) and passes its output and exit code through.\n"
     "Exit 0 intact, 1 broken (the problem is printed), 74 the store cannot be read.\n"},
    {"sample", 0, BIT(OPT_JSON) | BIT(OPT_N) | BIT(OPT_SEED), "sample [--n N] [--seed S] [--json]",
     "The yearly spot check: N cases (default 20) drawn at random from every case this\n"
     "agent may read, with what to check in each. The draw is reproducible: the same\n"
     "seed (any text; default the current year) and the same cases give the same sample.\n"},
    {"report", 0, BIT(OPT_JSON) | BIT(OPT_CSV) | BIT(OPT_HTML) | BIT(OPT_SINCE),
     "report [--since DATE|ms] [--json | --csv | --html FILE]",
     "Acknowledgement per agency, from every assignment (created since --since):\n"
     "assignments; due (acknowledged, or past the deadline); on time (acked_at <= ack_by)\n"
     "and its % of due; time to acknowledge p50/p90 in minutes from creation; escalations\n"
     "(steps fired); open overdue (open and past ack_by at the broker's now).\n"
     "--html FILE writes a self-contained page with the table and a bar chart.\n"},
    {"stats", 0, BIT(OPT_JSON), "stats [--json]",
     "Counts of cases by status and type, and of assignments by state.\n"},
};

static const command_t *find_command(const char *name)
{
    for (size_t i = 0; i < UTIL_ARRAY_LEN(COMMANDS); i++)
        if (!strcmp(COMMANDS[i].name, name))
            return &COMMANDS[i];
    return NULL;
}

static const char EXIT_HELP[] =
    "Exit: 0 done (verify: intact); 1 verify: the trail is broken; 64 usage; 65 the broker\n"
    "refused the request (forbidden: this agent may not read it; not_found; invalid); 66 a\n"
    "key file cannot be read; 69 verify --data: carehubd not found; 74 a file cannot be\n"
    "written (--html) or the store cannot be read (verify --data); 75 no answer from the\n"
    "broker within --wait (default 10 s per answer); 77 the broker refused this agent.\n";

static void usage(FILE *f, const command_t *cmd)
{
    if (cmd) {
        fprintf(f, "usage: %s [-b ENDPOINT] -a AGENT %s\n\n%s\nOptions:\n%s\n%s", cli_prog(),
                cmd->synopsis, cmd->help, cli_common_help, EXIT_HELP);
        return;
    }
    fprintf(f, "usage: %s [-b ENDPOINT] -a AGENT [--key-file F --server-key K] [--wait S] "
               "COMMAND ...\n\n"
               "Read carehub's cases as a supervisor or an agency desk: the broker allows only\n"
               "what the agent may read, and records every read and refusal in the trail.\n\n"
               "Commands:\n", cli_prog());
    for (size_t i = 0; i < UTIL_ARRAY_LEN(COMMANDS); i++)
        fprintf(f, "  %s\n", COMMANDS[i].synopsis);
    fprintf(f, "\n`%s COMMAND --help` describes a command.\n\nOptions:\n%s\n%s", cli_prog(),
            cli_common_help, EXIT_HELP);
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        CLI_COMMON_LONGOPTS,
        {"json", no_argument, NULL, OPT_JSON},
        {"csv", no_argument, NULL, OPT_CSV},
        {"html", required_argument, NULL, OPT_HTML},
        {"status", required_argument, NULL, OPT_STATUS},
        {"agency", required_argument, NULL, OPT_AGENCY},
        {"type", required_argument, NULL, OPT_TYPE},
        {"overdue", no_argument, NULL, OPT_OVERDUE},
        {"since", required_argument, NULL, OPT_SINCE},
        {"limit", required_argument, NULL, OPT_LIMIT},
        {"after", required_argument, NULL, OPT_AFTER},
        {"all", no_argument, NULL, OPT_ALL},
        {"data", required_argument, NULL, OPT_DATA},
        {"n", required_argument, NULL, OPT_N},
        {"seed", required_argument, NULL, OPT_SEED},
        {NULL, 0, NULL, 0},
    };
    static const char *const optnames[] = {"--json", "--csv", "--html", "--status", "--agency",
                                           "--type", "--overdue", "--since", "--limit", "--after",
                                           "--all", "--data", "--n", "--seed"};
    cli_common_t co;
    opts_t o;
    int opt;

    cli_init(argv[0]);
    cli_common_init(&co);
    memset(&o, 0, sizeof o);
    o.since = -1;
    if (sodium_init() < 0) {
        cli_err("libsodium cannot start");
        return CLI_EX_IO;
    }
    while ((opt = getopt_long(argc, argv, CLI_COMMON_SHORTOPTS, longopts, NULL)) != -1) {
        int k = cli_common_opt(&co, opt, optarg);
        if (k < 0)
            return CLI_EX_USAGE;
        if (k > 0)
            continue;
        if (opt < CLI_OPT_FIRST_PROGRAM || opt >= OPT_END) {
            fprintf(stderr, "Try '%s --help'.\n", cli_prog());
            return CLI_EX_USAGE;
        }
        o.given |= BIT(opt);
        char *end;
        switch (opt) {
        case OPT_JSON: o.json = 1; break;
        case OPT_CSV: o.csv = 1; break;
        case OPT_HTML: o.html = optarg; break;
        case OPT_STATUS: o.status = optarg; break;
        case OPT_AGENCY: o.agency = optarg; break;
        case OPT_TYPE: o.type = optarg; break;
        case OPT_OVERDUE: o.overdue = 1; break;
        case OPT_ALL: o.all = 1; break;
        case OPT_AFTER: o.after = optarg; break;
        case OPT_DATA: o.data = optarg; break;
        case OPT_SEED:
            if (!*optarg || strlen(optarg) > 256) {
                cli_err("--seed: give 1-256 characters (e.g. 2025)");
                return CLI_EX_USAGE;
            }
            o.seed = optarg;
            break;
        case OPT_SINCE:
            if (cli_parse_time(optarg, &o.since) < 0 || o.since < 0) {
                cli_err("--since %s: give a date (2025-03-01), a date and time "
                        "(2025-03-01T08:00) or ms since the epoch", cli_show(optarg));
                return CLI_EX_USAGE;
            }
            break;
        case OPT_LIMIT:
        case OPT_N: {
            errno = 0;
            long v = strtol(optarg, &end, 10);
            long max = opt == OPT_LIMIT ? PAGE_MAX : 100000;
            if (errno || end == optarg || *end || v < 1 || v > max) {
                cli_err("%s %s: give a whole number from 1 to %ld", optnames[opt - OPT_JSON],
                        cli_show(optarg), max);
                return CLI_EX_USAGE;
            }
            if (opt == OPT_LIMIT)
                o.limit = v;
            else
                o.n = v;
            break;
        }
        default:
            break;
        }
    }
    const command_t *cmd = optind < argc ? find_command(argv[optind]) : NULL;
    if (co.help) {
        usage(stdout, cmd);
        return CLI_EX_OK;
    }
    if (optind >= argc) {
        cli_err("no command: cases, case, trail, verify, sample, report or stats (--help)");
        return CLI_EX_USAGE;
    }
    if (!cmd) {
        cli_err("unknown command '%s': cases, case, trail, verify, sample, report or stats",
                cli_show(argv[optind]));
        return CLI_EX_USAGE;
    }
    optind++;
    int nargs = argc - optind;
    char **args = argv + optind;
    if (nargs != cmd->nargs) {
        cli_err("usage: %s %s", cli_prog(), cmd->synopsis);
        return CLI_EX_USAGE;
    }
    for (int b = 0; b < OPT_END - OPT_JSON; b++)
        if ((o.given & (1u << b)) && !(cmd->allowed & (1u << b))) {
            cli_err("%s does not go with %s (%s %s --help)", optnames[b], cmd->name, cli_prog(),
                    cmd->name);
            return CLI_EX_USAGE;
        }
    if (o.json + o.csv + (o.html != NULL) > 1) {
        cli_err("give one of --json, --csv and --html");
        return CLI_EX_USAGE;
    }
    if (cmd->nargs == 1 && !util_valid_id(args[0], strlen(args[0]))) {
        cli_err("'%s' is not a case id (1-64 characters of A-Z a-z 0-9 . _ : -)", cli_show(args[0]));
        return CLI_EX_USAGE;
    }
    if (o.after && !util_valid_id(o.after, strlen(o.after))) {
        cli_err("--after %s: not a case id", cli_show(o.after));
        return CLI_EX_USAGE;
    }
    if (!strcmp(cmd->name, "verify") && o.data) {
        if (o.json) {
            cli_err("verify --data prints carehubd's own lines; --json goes with online verify");
            return CLI_EX_USAGE;
        }
        return cmd_verify_offline(o.data);
    }

    /* no spool is used; cli_common_check still wants a directory name */
    if (!co.spool_dir)
        co.spool_dir = ".";
    int rc = cli_common_check(&co, 1);
    if (rc)
        return rc;
    cli_catch_signals();
    sess_t s;
    rc = sess_open(&s, &co);
    if (!rc) {
        if (!strcmp(cmd->name, "cases"))
            rc = cmd_cases(&s, &o);
        else if (!strcmp(cmd->name, "case"))
            rc = cmd_case(&s, &o, args[0]);
        else if (!strcmp(cmd->name, "trail"))
            rc = cmd_trail(&s, &o, args[0]);
        else if (!strcmp(cmd->name, "verify"))
            rc = cmd_verify_online(&s, &o);
        else if (!strcmp(cmd->name, "sample"))
            rc = cmd_sample(&s, &o);
        else if (!strcmp(cmd->name, "report"))
            rc = cmd_report(&s, &o);
        else
            rc = cmd_stats(&s, &o);
    }
    sess_close(&s);
    if (fflush(stdout) != 0 || ferror(stdout)) {
        cli_err("cannot write the output: %s", strerror(errno));
        if (rc == 0)
            rc = CLI_EX_IO;
    }
    return rc;
}
