/*
 * session.c — bin/carehub's session with the broker: one DEALER, hello, then
 * one request at a time, answering pings; answers as JSON with msgpack bin
 * values (the trail's hashes) as lowercase hex. See carehub_cli.h.
 */
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <msgpack.h>
#include <sodium.h>
#include <zmq.h>

#include "carehub_cli.h"
#include "cli.h"
#include "frame.h"
#include "util.h"

#define SOFTWARE "carehub/1.0"
#define DEFAULT_WAIT_MS 10000     /* each answer from the broker: wait this long */

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

int sess_open(sess_t *s, const cli_common_t *co)
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

void sess_close(sess_t *s)
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
int sess_query(sess_t *s, const char *what, json_t *fields, json_t **out)
{
    json_t *req = fields ? json_deep_copy(fields) : json_object();
    json_object_set_new(req, "op", json_string("query"));
    json_object_set_new(req, "what", json_string(what));
    int rc = sess_request(s, req, out);
    json_decref(req);
    return rc;
}

/* A list query, page after page (carehub_cli.h). */
int sess_query_pages(sess_t *s, const char *what, json_t *fields, const char *key, int all,
                     json_t *items, json_t **last, const char **next_out)
{
    json_t *f = fields ? json_deep_copy(fields) : json_object();
    json_t *r = NULL;
    int rc = 0;
    *last = NULL;
    for (;;) {
        rc = sess_query(s, what, f, &r);
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
