/*
 * test_proto.c — unit tests for broker/proto.c: the envelope, hello, the op
 * table and event intake with ack-after-commit.
 *
 * proto is driven as broker.c drives it: proto_on_message() per received
 * message, proto_flush() per drained batch. Replies go to a fake send callback
 * that records them; they are decoded with msgpack-c. The config is built by
 * hand (only what proto reads: agents' id and role, heartbeat_ms,
 * max_message_bytes); the schemas are the project's real ones and the store is
 * a real LMDB environment in a temporary directory.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "carehub_wire.h"
#include "case.h"
#include "log.h"
#include "clock.h"
#include "proto.h"

#ifndef CAREHUB_SOURCE_DIR
#error "CAREHUB_SOURCE_DIR must name the source tree (the Makefile defines it)"
#endif

#define MAX_BYTES 4096
#define AT 1764000000000LL

/* ---- recorded replies --------------------------------------------------------- */

typedef struct {
    unsigned char rid[SESSION_ROUTING_MAX];
    size_t rid_len;
    char *data;
    size_t len;
    msgpack_unpacked u;
} reply_t;

typedef struct {
    reply_t *r;
    size_t n, cap;
    int fail;       /* make send report "peer gone" */
} sink_t;

static int fake_send(void *ud, const unsigned char *rid, size_t rid_len, const void *data,
                     size_t len)
{
    sink_t *k = ud;
    if (k->n == k->cap) {
        k->cap = k->cap ? k->cap * 2 : 64;
        k->r = realloc(k->r, k->cap * sizeof *k->r);
        assert_non_null(k->r);
    }
    reply_t *r = &k->r[k->n++];
    assert_true(rid_len <= SESSION_ROUTING_MAX);
    memcpy(r->rid, rid, rid_len);
    r->rid_len = rid_len;
    r->data = malloc(len ? len : 1);
    assert_non_null(r->data);
    memcpy(r->data, data, len);
    r->len = len;
    /* every reply is one msgpack map, exactly */
    size_t off = 0;
    msgpack_unpacked_init(&r->u);
    assert_int_equal(msgpack_unpack_next(&r->u, r->data, r->len, &off), MSGPACK_UNPACK_SUCCESS);
    assert_int_equal(off, len);
    assert_int_equal(r->u.data.type, MSGPACK_OBJECT_MAP);
    return k->fail ? -1 : 0;
}

static void sink_clear(sink_t *k)
{
    for (size_t i = 0; i < k->n; i++) {
        msgpack_unpacked_destroy(&k->r[i].u);
        free(k->r[i].data);
    }
    k->n = 0;
}

static const msgpack_object *rget(const reply_t *r, const char *key)
{
    const msgpack_object_map *m = &r->u.data.via.map;
    const msgpack_object *found = NULL;
    for (uint32_t i = 0; i < m->size; i++) {
        const msgpack_object *k = &m->ptr[i].key;
        assert_int_equal(k->type, MSGPACK_OBJECT_STR);
        if (k->via.str.size == strlen(key) && memcmp(k->via.str.ptr, key, strlen(key)) == 0) {
            assert_null(found); /* no key twice */
            found = &m->ptr[i].val;
        }
    }
    return found;
}

/* The string value of key as a NUL-terminated copy in a rotating static buffer, or NULL. */
static const char *rstr(const reply_t *r, const char *key)
{
    static char bufs[8][1024];
    static int at;
    const msgpack_object *o = rget(r, key);
    if (!o)
        return NULL;
    assert_int_equal(o->type, MSGPACK_OBJECT_STR);
    assert_true(o->via.str.size < sizeof bufs[0]);
    char *b = bufs[at++ % 8];
    memcpy(b, o->via.str.ptr, o->via.str.size);
    b[o->via.str.size] = '\0';
    return b;
}

static int64_t rint64(const reply_t *r, const char *key)
{
    const msgpack_object *o = rget(r, key);
    assert_non_null(o);
    if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
        return (int64_t)o->via.u64;
    assert_int_equal(o->type, MSGPACK_OBJECT_NEGATIVE_INTEGER);
    return o->via.i64;
}

/* ---- fixture ------------------------------------------------------------------ */

typedef struct {
    char base[64];
    config_agent_t agents[8];
    config_t cfg;
    schema_set_t *schemas;
    store_t *store;
    session_table_t *sessions;
    proto_t *p;
    turn_t *turn;
    sink_t sink;
    int64_t now;
} fx_t;

static void rm_rf(const char *path)
{
    DIR *d = opendir(path);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d))) {
            if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
                continue;
            char sub[512];
            snprintf(sub, sizeof sub, "%s/%s", path, e->d_name);
            rm_rf(sub);
        }
        closedir(d);
        (void)rmdir(path);
    } else {
        (void)unlink(path);
    }
}

static int setup_with_map(void **state, uint64_t map_size, uint64_t map_max)
{
    fx_t *fx = calloc(1, sizeof *fx);
    assert_non_null(fx);
    snprintf(fx->base, sizeof fx->base, "/tmp/carehub-test-proto-XXXXXX");
    assert_non_null(mkdtemp(fx->base));
    static const struct {
        const char *id;
        config_role_t role;
        const char *agency;
    } agents[] = {
        {"school-1", ROLE_SCHOOL, NULL},         {"school-2", ROLE_SCHOOL, NULL},
        {"reporter-1", ROLE_REPORTER, NULL},     {"monitor-1", ROLE_MONITOR, NULL},
        {"agency-police", ROLE_AGENCY, "police"}, {"agency-civil", ROLE_AGENCY, "civil_affairs"},
        {"supervisor-1", ROLE_SUPERVISOR, NULL}, {"supervisor-2", ROLE_SUPERVISOR, NULL},
    };
    for (size_t i = 0; i < sizeof agents / sizeof agents[0]; i++) {
        fx->agents[i].id = (char *)agents[i].id;
        fx->agents[i].role = agents[i].role;
        fx->agents[i].agency = (char *)agents[i].agency;
        fx->agents[i].line = (int)i + 1;
    }
    fx->cfg.agents = fx->agents;
    fx->cfg.n_agents = sizeof agents / sizeof agents[0];
    fx->cfg.heartbeat_ms = 5000;
    fx->cfg.max_message_bytes = MAX_BYTES;
    fx->cfg.security = SECURITY_NONE;
    fx->cfg.default_ack_within_ms = 86400000;
    fx->cfg.test_clock_agent = "supervisor-1"; /* broker.test_clock_agent */

    char err[512] = "";
    fx->schemas = schema_set_load(CAREHUB_SOURCE_DIR "/schemas", err, sizeof err);
    if (!fx->schemas)
        fail_msg("schema_set_load: %s", err);
    char dir[128];
    snprintf(dir, sizeof dir, "%s/data", fx->base);
    fx->store = store_open(dir, map_size, map_max, err, sizeof err);
    if (!fx->store)
        fail_msg("store_open: %s", err);
    fx->sessions = session_table_new();
    fx->turn = turn_new(fx->store);
    fx->p = proto_new(&fx->cfg, fx->schemas, fx->store, fx->turn, fake_send, &fx->sink);
    assert_non_null(fx->p);
    fx->now = 100000;
    *state = fx;
    return 0;
}

static int setup(void **state) { return setup_with_map(state, 4u << 20, 64u << 20); }
static int setup_tiny(void **state) { return setup_with_map(state, 256u << 10, 256u << 10); }

static int teardown(void **state)
{
    fx_t *fx = *state;
    turn_destroy(&fx->turn);
    proto_destroy(&fx->p);
    proto_destroy(&fx->p); /* twice is safe */
    session_table_destroy(&fx->sessions);
    store_close(&fx->store);
    schema_set_destroy(&fx->schemas);
    sink_clear(&fx->sink);
    free(fx->sink.r);
    rm_rf(fx->base);
    free(fx);
    return 0;
}

/* The end of a loop turn: the staged batch is queued, the turn committed,
 * replies sent. */
static void flush(fx_t *fx)
{
    proto_flush(fx->p);
    (void)turn_commit(fx->turn);
}

static session_t *conn(fx_t *fx, const char *name)
{
    return session_get(fx->sessions, name, strlen(name), fx->now);
}

/* ---- building frames ---------------------------------------------------------- */

/* Pack a JSON value as msgpack, keys in the text's order (independent of frame.c). */
static void pack_json(msgpack_packer *pk, json_t *j)
{
    const char *k;
    size_t kl, i;
    json_t *v;
    switch (json_typeof(j)) {
    case JSON_OBJECT:
        msgpack_pack_map(pk, json_object_size(j));
        json_object_keylen_foreach(j, k, kl, v) {
            msgpack_pack_str(pk, kl);
            msgpack_pack_str_body(pk, k, kl);
            pack_json(pk, v);
        }
        break;
    case JSON_ARRAY:
        msgpack_pack_array(pk, json_array_size(j));
        json_array_foreach(j, i, v)
            pack_json(pk, v);
        break;
    case JSON_STRING:
        msgpack_pack_str(pk, json_string_length(j));
        msgpack_pack_str_body(pk, json_string_value(j), json_string_length(j));
        break;
    case JSON_INTEGER: msgpack_pack_int64(pk, json_integer_value(j)); break;
    case JSON_REAL: msgpack_pack_double(pk, json_real_value(j)); break;
    case JSON_TRUE: msgpack_pack_true(pk); break;
    case JSON_FALSE: msgpack_pack_false(pk); break;
    case JSON_NULL: msgpack_pack_nil(pk); break;
    }
}

/* JSON text with ' for " (for readable literals) → packed msgpack in sb. */
static void frame_from(msgpack_sbuffer *sb, const char *text)
{
    char *t = strdup(text);
    assert_non_null(t);
    for (char *c = t; *c; c++)
        if (*c == '\'')
            *c = '"';
    json_error_t err;
    json_t *j = json_loads(t, JSON_ALLOW_NUL, &err);
    if (!j)
        fail_msg("bad test JSON: %s: %s", t, err.text);
    msgpack_packer pk;
    msgpack_sbuffer_init(sb);
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    pack_json(&pk, j);
    json_decref(j);
    free(t);
}

/* Send one message (JSON text) on a connection; returns proto_on_message's result. */
static size_t msg(fx_t *fx, session_t *s, const char *text)
{
    msgpack_sbuffer sb;
    frame_from(&sb, text);
    size_t n = proto_on_message(fx->p, s, sb.data, sb.size, 1, NULL, fx->now);
    msgpack_sbuffer_destroy(&sb);
    return n;
}

static size_t raw(fx_t *fx, session_t *s, const void *data, size_t len)
{
    return proto_on_message(fx->p, s, data, len, 1, NULL, fx->now);
}

static void hello(fx_t *fx, session_t *s, const char *agent)
{
    char text[256];
    snprintf(text, sizeof text, "{'v': 1, 'op': 'hello', 'id': 'hello-%s', 'agent': '%s'}", agent,
             agent);
    size_t before = fx->sink.n;
    msg(fx, s, text);
    assert_int_equal(fx->sink.n, before + 1);
    const reply_t *r = &fx->sink.r[before];
    if (strcmp(rstr(r, "op"), "welcome") != 0)
        fail_msg("hello as %s: %s %s", agent, rstr(r, "op"), rstr(r, "code"));
    sink_clear(&fx->sink);
}

static const char *ABSENCE =
    "{'school': 'Binhai No. 3', 'date': '2026-11-27', 'reason': 'unexplained',"
    " 'consecutive_days': 2, 'child': {'id': 'child-1', 'name': 'Li Ming'}}";
static const char *REPORT =
    "{'reporter': {'organisation': 'Binhai Hospital'}, 'harm': 'neglect',"
    " 'description': 'Left alone.', 'child': {'name': 'Zhang'}}";
static const char *RISK = "{'risk': 'grooming', 'platform': 'ExampleChat'}";

/* An event message with this id, type and body (JSON text). */
static size_t event(fx_t *fx, session_t *s, const char *id, const char *type, const char *body)
{
    size_t n = strlen(body) + 256;
    char *text = malloc(n);
    assert_non_null(text);
    snprintf(text, n, "{'v': 1, 'op': 'event', 'id': '%s', 'type': '%s', 'at': %lld, 'body': %s}",
             id, type, (long long)AT, body);
    size_t r = msg(fx, s, text);
    free(text);
    return r;
}

/* ---- checking replies --------------------------------------------------------- */

static const reply_t *only_reply(fx_t *fx)
{
    if (fx->sink.n != 1)
        fail_msg("expected exactly one reply, got %zu", fx->sink.n);
    return &fx->sink.r[0];
}

/* For assert_nack: the id is readable, so the nack may carry it or not. */
static const char ANY_ID[] = "(any)";

/* The reply is a nack with this code, id (NULL: must have none; ANY_ID: not
 * checked) and field (NULL: not checked; "" must have none). */
static void assert_nack(const reply_t *r, const char *code, const char *id, const char *field)
{
    assert_int_equal(rint64(r, "v"), 1);
    if (strcmp(rstr(r, "op"), "nack") != 0)
        fail_msg("expected nack %s, got %s", code, rstr(r, "op"));
    const char *c = rstr(r, "code");
    if (strcmp(c, code) != 0)
        fail_msg("expected nack code %s, got %s (%s)", code, c, rstr(r, "error"));
    const char *got_id = rstr(r, "id");
    if (id == ANY_ID) {
        /* either */
    } else if (id) {
        if (!got_id || strcmp(got_id, id) != 0)
            fail_msg("nack %s: id %s, want %s", code, got_id ? got_id : "(none)", id);
    } else if (got_id) {
        fail_msg("nack %s carries id \"%s\" but should have none", code, got_id);
    }
    const char *err = rstr(r, "error");
    assert_non_null(err);
    assert_true(strlen(err) > 10); /* a sentence */
    if (field) {
        const char *f = rstr(r, "field");
        if (*field == '\0') {
            assert_null(f);
        } else if (!f || strcmp(f, field) != 0) {
            fail_msg("nack %s: field %s, want %s", code, f ? f : "(none)", field);
        }
    }
}

static void expect_nack(fx_t *fx, const char *code, const char *id, const char *field)
{
    assert_nack(only_reply(fx), code, id, field);
    sink_clear(&fx->sink);
}

/* The reply is an ack for id; copies out the event and case ids. */
static void assert_ack(const reply_t *r, const char *id, int duplicate, char *event_id,
                       char *case_id)
{
    assert_int_equal(rint64(r, "v"), 1);
    if (strcmp(rstr(r, "op"), "ack") != 0)
        fail_msg("expected ack for %s, got %s %s (%s) field %s", id, rstr(r, "op"),
                 rstr(r, "code") ? rstr(r, "code") : "", rstr(r, "error") ? rstr(r, "error") : "",
                 rstr(r, "field") ? rstr(r, "field") : "");
    assert_string_equal(rstr(r, "id"), id);
    const msgpack_object *d = rget(r, "duplicate");
    assert_non_null(d);
    assert_int_equal(d->type, MSGPACK_OBJECT_BOOLEAN);
    if ((int)d->via.boolean != duplicate)
        fail_msg("ack %s: duplicate %d, want %d", id, (int)d->via.boolean, duplicate);
    const char *e = rstr(r, "event"), *c = rstr(r, "case");
    assert_non_null(e);
    assert_non_null(c);
    assert_true(strlen(e) > 0 && strlen(e) < STORE_ID_MAX);
    assert_true(strlen(c) > 0 && strlen(c) < STORE_ID_MAX);
    if (event_id)
        strcpy(event_id, e);
    if (case_id)
        strcpy(case_id, c);
}

static const reply_t *reply_for(fx_t *fx, const char *id)
{
    const reply_t *found = NULL;
    for (size_t i = 0; i < fx->sink.n; i++) {
        const char *rid = rstr(&fx->sink.r[i], "id");
        if (rid && strcmp(rid, id) == 0) {
            if (found)
                fail_msg("two replies for %s", id);
            found = &fx->sink.r[i];
        }
    }
    if (!found)
        fail_msg("no reply for %s", id);
    return found;
}

/* Read a stored record's string field. */
static void stored_field(fx_t *fx, int is_case, const char *id, const char *key, char *out,
                         size_t outsize)
{
    char *data = NULL;
    size_t len = 0;
    store_rc_t rc = is_case ? case_get(fx->store, id, &data, &len)
                            : case_get_event(fx->store, id, &data, &len);
    assert_int_equal(rc, STORE_OK);
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    size_t off = 0;
    msgpack_unpack_return ur = msgpack_unpack_next(&u, data, len, &off);
    if (ur != MSGPACK_UNPACK_SUCCESS || off != len)
        fail_msg("record %s (%zu bytes) does not decode: %d at %zu", id, len, (int)ur, off);
    reply_t r = {.u = u};
    const msgpack_object *o = rget(&r, key);
    assert_non_null(o);
    if (o->type == MSGPACK_OBJECT_STR) {
        assert_true(o->via.str.size < outsize);
        memcpy(out, o->via.str.ptr, o->via.str.size);
        out[o->via.str.size] = '\0';
    } else if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER) {
        snprintf(out, outsize, "%llu", (unsigned long long)o->via.u64);
    } else {
        msgpack_object_print_buffer(out, outsize, *o);
    }
    msgpack_unpacked_destroy(&u);
    free(data);
}

/* ---- hello -------------------------------------------------------------------- */

static void test_hello_welcome(void **state)
{
    fx_t *fx = *state;
    session_t *s = conn(fx, "conn-1");
    assert_int_equal(msg(fx, s, "{'v': 1, 'op': 'hello', 'id': 'h-1', 'agent': 'school-1',"
                                " 'software': 'test/1.0'}"),
                     0);
    const reply_t *r = only_reply(fx);
    assert_int_equal(r->rid_len, 6);
    assert_memory_equal(r->rid, "conn-1", 6); /* to the connection that asked */
    assert_int_equal(rint64(r, "v"), 1);
    assert_string_equal(rstr(r, "op"), "welcome");
    assert_string_equal(rstr(r, "id"), "h-1");
    assert_string_equal(rstr(r, "agent"), "school-1");
    assert_string_equal(rstr(r, "role"), "school");
    assert_int_equal(rint64(r, "heartbeat_ms"), 5000);
    assert_int_equal(rint64(r, "max_message_bytes"), MAX_BYTES);
    assert_non_null(s->agent);
    assert_string_equal(s->agent->id, "school-1");
    sink_clear(&fx->sink);

    /* every role is named in the welcome */
    static const struct {
        const char *agent, *role;
    } roles[] = {{"reporter-1", "reporter"},
                 {"monitor-1", "monitor"},
                 {"agency-police", "agency"},
                 {"supervisor-1", "supervisor"}};
    for (size_t i = 0; i < 4; i++) {
        char text[200], cname[32];
        snprintf(cname, sizeof cname, "conn-r%zu", i);
        snprintf(text, sizeof text, "{'v': 1, 'op': 'hello', 'id': 'h', 'agent': '%s'}",
                 roles[i].agent);
        session_t *rs = conn(fx, cname);
        msg(fx, rs, text);
        r = only_reply(fx);
        assert_string_equal(rstr(r, "op"), "welcome");
        assert_string_equal(rstr(r, "agent"), roles[i].agent);
        assert_string_equal(rstr(r, "role"), roles[i].role);
        assert_string_equal(rs->agent->id, roles[i].agent);
        sink_clear(&fx->sink);
    }
}

static void test_hello_refused(void **state)
{
    fx_t *fx = *state;
    session_t *s = conn(fx, "conn-1");
    msg(fx, s, "{'v': 1, 'op': 'hello', 'id': 'h-1', 'agent': 'school-999'}");
    expect_nack(fx, CAREHUB_E_UNAUTHORIZED, "h-1", NULL);
    assert_null(s->agent);
    /* an agent id that is a prefix of a configured one is not that one */
    msg(fx, s, "{'v': 1, 'op': 'hello', 'id': 'h-2', 'agent': 'school-'}");
    expect_nack(fx, CAREHUB_E_UNAUTHORIZED, "h-2", NULL);
    assert_null(s->agent);
    msg(fx, s, "{'v': 1, 'op': 'hello', 'id': 'h-3'}");
    expect_nack(fx, CAREHUB_E_MALFORMED, "h-3", "/agent");
    msg(fx, s, "{'v': 1, 'op': 'hello', 'id': 'h-4', 'agent': 42}");
    expect_nack(fx, CAREHUB_E_MALFORMED, "h-4", "/agent");
    msg(fx, s, "{'v': 1, 'op': 'hello', 'id': 'h-5', 'agent': 'school 1'}");
    expect_nack(fx, CAREHUB_E_MALFORMED, "h-5", "/agent");
    assert_null(s->agent);
    /* still not allowed to send */
    event(fx, s, "e-1", "absence", ABSENCE);
    expect_nack(fx, CAREHUB_E_HELLO_REQUIRED, "e-1", NULL);
    assert_int_equal(proto_pending(fx->p), 0);
}

/* Under CURVE the key decides who the agent is; the hello's agent field is ignored. */
static void test_hello_curve_user_id(void **state)
{
    fx_t *fx = *state;
    session_t *s = conn(fx, "conn-1");
    msgpack_sbuffer sb;
    frame_from(&sb, "{'v': 1, 'op': 'hello', 'id': 'h-1', 'agent': 'school-1'}");
    proto_on_message(fx->p, s, sb.data, sb.size, 1, "monitor-1", fx->now);
    const reply_t *r = only_reply(fx);
    assert_string_equal(rstr(r, "op"), "welcome");
    assert_string_equal(rstr(r, "agent"), "monitor-1");
    assert_string_equal(rstr(r, "role"), "monitor");
    assert_string_equal(s->agent->id, "monitor-1");
    sink_clear(&fx->sink);

    session_t *t = conn(fx, "conn-2");
    proto_on_message(fx->p, t, sb.data, sb.size, 1, "stranger", fx->now);
    expect_nack(fx, CAREHUB_E_UNAUTHORIZED, "h-1", NULL);
    assert_null(t->agent);
    msgpack_sbuffer_destroy(&sb);

    /* no agent field at all is fine under CURVE */
    frame_from(&sb, "{'v': 1, 'op': 'hello', 'id': 'h-2'}");
    proto_on_message(fx->p, t, sb.data, sb.size, 1, "reporter-1", fx->now);
    assert_string_equal(rstr(only_reply(fx), "agent"), "reporter-1");
    sink_clear(&fx->sink);
    msgpack_sbuffer_destroy(&sb);
}

/* Under CURVE the key is checked on every message: a message on a session bound
 * to one agent that comes with another agent's key (a connection that took the
 * routing id over) unbinds the session and is answered as before any hello. */
static void test_curve_key_bound_on_every_message(void **state)
{
    fx_t *fx = *state;
    session_t *s = conn(fx, "conn-1");
    msgpack_sbuffer sb;
    frame_from(&sb, "{'v': 1, 'op': 'hello', 'id': 'h-1'}");
    proto_on_message(fx->p, s, sb.data, sb.size, 1, "monitor-1", fx->now);
    assert_string_equal(rstr(only_reply(fx), "op"), "welcome");
    sink_clear(&fx->sink);
    msgpack_sbuffer_destroy(&sb);

    frame_from(&sb, "{'v': 1, 'op': 'ping', 'id': 'p-1'}");
    proto_on_message(fx->p, s, sb.data, sb.size, 1, "monitor-1", fx->now); /* its own key */
    assert_string_equal(rstr(only_reply(fx), "op"), "pong");
    sink_clear(&fx->sink);
    proto_on_message(fx->p, s, sb.data, sb.size, 1, "school-1", fx->now); /* another agent's */
    expect_nack(fx, CAREHUB_E_HELLO_REQUIRED, "p-1", NULL);
    assert_null(s->agent);
    proto_on_message(fx->p, s, sb.data, sb.size, 1, "monitor-1", fx->now); /* stays unbound */
    expect_nack(fx, CAREHUB_E_HELLO_REQUIRED, "p-1", NULL);
    msgpack_sbuffer_destroy(&sb);

    frame_from(&sb, "{'v': 1, 'op': 'hello', 'id': 'h-2'}");
    proto_on_message(fx->p, s, sb.data, sb.size, 1, "school-1", fx->now);
    assert_string_equal(rstr(only_reply(fx), "agent"), "school-1");
    sink_clear(&fx->sink);
    msgpack_sbuffer_destroy(&sb);
    frame_from(&sb, "{'v': 1, 'op': 'ping', 'id': 'p-2'}");
    proto_on_message(fx->p, s, sb.data, sb.size, 1, "", fx->now); /* an unconfigured key */
    expect_nack(fx, CAREHUB_E_HELLO_REQUIRED, "p-2", NULL);
    assert_null(s->agent);
    msgpack_sbuffer_destroy(&sb);
}

/* A second hello on a connection switches the agent it speaks for. */
static void test_hello_again(void **state)
{
    fx_t *fx = *state;
    session_t *s = conn(fx, "conn-1");
    hello(fx, s, "school-1");
    hello(fx, s, "monitor-1");
    assert_string_equal(s->agent->id, "monitor-1");
    event(fx, s, "e-1", "absence", ABSENCE);
    expect_nack(fx, CAREHUB_E_FORBIDDEN, "e-1", NULL);
}

/* ---- ping, pong, hello_required --------------------------------------------------- */

static void test_hello_required_and_ping(void **state)
{
    fx_t *fx = *state;
    session_t *s = conn(fx, "conn-1");
    assert_int_equal(event(fx, s, "e-1", "absence", ABSENCE), 0);
    expect_nack(fx, CAREHUB_E_HELLO_REQUIRED, "e-1", NULL);
    assert_int_equal(proto_pending(fx->p), 0);
    msg(fx, s, "{'v': 1, 'op': 'ping', 'id': 'p-1'}");
    expect_nack(fx, CAREHUB_E_HELLO_REQUIRED, "p-1", NULL);
    /* pong gets no reply, before or after hello */
    msg(fx, s, "{'v': 1, 'op': 'pong', 'id': 'ping-7'}");
    assert_int_equal(fx->sink.n, 0);
    hello(fx, s, "school-1");
    msg(fx, s, "{'v': 1, 'op': 'pong', 'id': 'ping-8'}");
    assert_int_equal(fx->sink.n, 0);
    /* ping is answered with pong and the same id */
    msg(fx, s, "{'v': 1, 'op': 'ping', 'id': 'p-2'}");
    const reply_t *r = only_reply(fx);
    assert_int_equal(rint64(r, "v"), 1);
    assert_string_equal(rstr(r, "op"), "pong");
    assert_string_equal(rstr(r, "id"), "p-2");
    sink_clear(&fx->sink);
    /* the hello is per connection */
    session_t *other = conn(fx, "conn-2");
    msg(fx, other, "{'v': 1, 'op': 'ping', 'id': 'p-3'}");
    expect_nack(fx, CAREHUB_E_HELLO_REQUIRED, "p-3", NULL);
}

/* test_clock exists only with the virtual clock; it moves the time events get. */
static void test_test_clock_op(void **state)
{
    fx_t *fx = *state;
    session_t *s = conn(fx, "conn-1");
    hello(fx, s, "supervisor-1");
    msg(fx, s, "{'v': 1, 'op': 'test_clock', 'id': 'c-1', 'advance': 1000}");
    expect_nack(fx, CAREHUB_E_UNKNOWN_OP, "c-1", NULL);
    clock_enable_test();
    int64_t t0 = clock_now_ms();
    msg(fx, s, "{'v': 1, 'op': 'test_clock', 'id': 'c-2', 'advance': 3600000}");
    assert_int_equal(fx->sink.n, 0); /* a reply, too, waits for the turn's commit */
    flush(fx);
    const reply_t *r = only_reply(fx);
    assert_string_equal(rstr(r, "op"), "clock");
    assert_string_equal(rstr(r, "id"), "c-2");
    assert_int_equal(rint64(r, "now"), t0 + 3600000);
    sink_clear(&fx->sink);
    /* never backwards, never past the year 9999 (no deadline arithmetic overflows) */
    msg(fx, s, "{'v': 1, 'op': 'test_clock', 'id': 'c-3', 'set': 5}");
    expect_nack(fx, CAREHUB_E_INVALID, "c-3", "/set");
    msg(fx, s, "{'v': 1, 'op': 'test_clock', 'id': 'c-4', 'advance': 9223372036854775807}");
    expect_nack(fx, CAREHUB_E_INVALID, "c-4", "/advance");
    msg(fx, s, "{'v': 1, 'op': 'test_clock', 'id': 'c-5', 'set': 253402300800000}");
    expect_nack(fx, CAREHUB_E_INVALID, "c-5", "/set");
    assert_int_equal(clock_now_ms(), t0 + 3600000);
}

/* Only the agent broker.test_clock_agent names moves the test clock: every other
 * agent, whatever its role (another supervisor too), is forbidden and the clock
 * stays; with no test clock agent configured, nobody moves it. */
static void test_test_clock_agent_only(void **state)
{
    fx_t *fx = *state;
    clock_enable_test();
    int64_t t0 = clock_now_ms();
    static const char *const others[] = {"school-1", "reporter-1", "monitor-1", "agency-police",
                                         "supervisor-2"};
    for (size_t i = 0; i < sizeof others / sizeof others[0]; i++) {
        session_t *s = conn(fx, others[i]);
        hello(fx, s, others[i]);
        msg(fx, s, "{'v': 1, 'op': 'test_clock', 'id': 'c-1', 'advance': 86400000}");
        flush(fx);
        const reply_t *r = only_reply(fx);
        assert_nack(r, CAREHUB_E_FORBIDDEN, "c-1", "");
        assert_non_null(strstr(rstr(r, "error"), "broker.test_clock_agent"));
        assert_non_null(strstr(rstr(r, "error"), others[i]));
        sink_clear(&fx->sink);
    }
    assert_int_equal(clock_now_ms(), t0);
    fx->cfg.test_clock_agent = NULL;
    session_t *s = conn(fx, "supervisor-1");
    hello(fx, s, "supervisor-1");
    msg(fx, s, "{'v': 1, 'op': 'test_clock', 'id': 'c-2', 'advance': 1000}");
    expect_nack(fx, CAREHUB_E_FORBIDDEN, "c-2", "");
    assert_int_equal(clock_now_ms(), t0);
}

/* Every message counts as being heard from the peer. */
static void test_last_heard(void **state)
{
    fx_t *fx = *state;
    session_t *s = conn(fx, "conn-1");
    s->last_pinged = 99;
    fx->now = 123456;
    msg(fx, s, "{'v': 1, 'op': 'pong', 'id': 'x'}");
    assert_true(s->last_heard == 123456);
    assert_true(s->last_pinged == 0);
    fx->now = 200000;
    raw(fx, s, "\xc1", 1); /* even garbage */
    assert_true(s->last_heard == 200000);
    sink_clear(&fx->sink);
}

static void test_broker_ping(void **state)
{
    fx_t *fx = *state;
    session_t *s = conn(fx, "conn-1");
    assert_int_equal(proto_ping(fx->p, s), 0);
    assert_int_equal(proto_ping(fx->p, s), 0);
    assert_int_equal(fx->sink.n, 2);
    const reply_t *a = &fx->sink.r[0], *b = &fx->sink.r[1];
    assert_int_equal(rint64(a, "v"), 1);
    assert_string_equal(rstr(a, "op"), "ping");
    assert_memory_equal(a->rid, "conn-1", 6);
    const char *ida = rstr(a, "id"), *idb = rstr(b, "id");
    assert_non_null(ida);
    assert_non_null(idb);
    assert_string_not_equal(ida, idb); /* each ping its own id */
    sink_clear(&fx->sink);
    fx->sink.fail = 1;
    assert_int_equal(proto_ping(fx->p, s), -1); /* the send result is passed on */
    fx->sink.fail = 0;
    sink_clear(&fx->sink);
}

/* ---- the envelope ----------------------------------------------------------------- */

static void test_envelope_malformed_without_id(void **state)
{
    fx_t *fx = *state;
    session_t *s = conn(fx, "conn-1");
#define B(lit) {lit, sizeof(lit) - 1}
    static const struct {
        const char *f;
        size_t n;
    } frames[] = {
        B(""),
        B("\xc1"),
        B("\x93\x01\x02\x03"),                  /* an array */
        B("\xa5hello"),                         /* a string */
        B("\x81"),                              /* truncated map */
        B("\xdd\xff\x00\x00\x00"),              /* huge array */
        B("\xdf\xff\xff\xff\xff"),              /* huge map */
        B("\x83\xa1v\x01\xa2op\xa4ping\xa2id\xdb\xff\xff\xff\xff"), /* id claims 4 GiB */
    };
#undef B
    for (size_t i = 0; i < sizeof frames / sizeof frames[0]; i++) {
        raw(fx, s, frames[i].f, frames[i].n);
        expect_nack(fx, CAREHUB_E_MALFORMED, NULL, NULL);
    }
    /* id missing, of the wrong type, or not an id: malformed, no id, field /id */
    static const char *texts[] = {
        "{'v': 1, 'op': 'ping'}",
        "{'v': 1, 'op': 'ping', 'id': 5}",
        "{'v': 1, 'op': 'ping', 'id': ''}",
        "{'v': 1, 'op': 'ping', 'id': 'a b'}",
        "{'v': 1, 'op': 'ping', 'id': 'a/b'}",
        "{'v': 1, 'op': 'ping', 'id': 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa'}",
        "{'v': 1, 'op': 'ping', 'id': ['x']}",
        "{'op': 'ping'}",
    };
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
        msg(fx, s, texts[i]);
        expect_nack(fx, CAREHUB_E_MALFORMED, NULL, "/id");
    }
    /* 64 characters is still an id */
    msg(fx, s, "{'v': 1, 'op': 'ping', 'id': "
               "'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa'}");
    expect_nack(fx, CAREHUB_E_HELLO_REQUIRED,
                "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", NULL);
}

static void test_envelope_errors_with_id(void **state)
{
    fx_t *fx = *state;
    session_t *s = conn(fx, "conn-1");
    msg(fx, s, "{'op': 'ping', 'id': 'x-1'}");
    expect_nack(fx, CAREHUB_E_MALFORMED, "x-1", "/v");
    msg(fx, s, "{'v': '1', 'op': 'ping', 'id': 'x-2'}");
    expect_nack(fx, CAREHUB_E_MALFORMED, "x-2", "/v");
    msg(fx, s, "{'v': -1, 'op': 'ping', 'id': 'x-3'}");
    expect_nack(fx, CAREHUB_E_MALFORMED, "x-3", "/v");
    msg(fx, s, "{'v': 1.0, 'op': 'ping', 'id': 'x-4'}");
    expect_nack(fx, CAREHUB_E_MALFORMED, "x-4", "/v");
    msg(fx, s, "{'v': 2, 'op': 'ping', 'id': 'x-5'}");
    expect_nack(fx, CAREHUB_E_VERSION, "x-5", NULL);
    msg(fx, s, "{'v': 0, 'op': 'hello', 'id': 'x-6', 'agent': 'school-1'}");
    expect_nack(fx, CAREHUB_E_VERSION, "x-6", NULL);
    assert_null(s->agent);
    msg(fx, s, "{'v': 1, 'id': 'x-7'}");
    expect_nack(fx, CAREHUB_E_MALFORMED, "x-7", "/op");
    msg(fx, s, "{'v': 1, 'op': 3, 'id': 'x-8'}");
    expect_nack(fx, CAREHUB_E_MALFORMED, "x-8", "/op");
    msg(fx, s, "{'v': 1, 'op': 'frobnicate', 'id': 'x-9'}");
    expect_nack(fx, CAREHUB_E_UNKNOWN_OP, "x-9", NULL);
    msg(fx, s, "{'v': 1, 'op': 'Hello', 'id': 'x-10', 'agent': 'school-1'}");
    expect_nack(fx, CAREHUB_E_UNKNOWN_OP, "x-10", NULL);
    msg(fx, s, "{'v': 1, 'op': 'hell', 'id': 'x-11', 'agent': 'school-1'}");
    expect_nack(fx, CAREHUB_E_UNKNOWN_OP, "x-11", NULL);
    msg(fx, s, "{'v': 1, 'op': 'hellox', 'id': 'x-12', 'agent': 'school-1'}");
    expect_nack(fx, CAREHUB_E_UNKNOWN_OP, "x-12", NULL);
    assert_null(s->agent);
    /* unknown op is checked before hello_required: it is not an op at all */
    msg(fx, s, "{'v': 1, 'op': 'case_ack', 'id': 'x-13'}");
    assert_int_equal(fx->sink.n, 1);
    sink_clear(&fx->sink);
    /* version is checked before the op */
    msg(fx, s, "{'v': 9, 'op': 'frobnicate', 'id': 'x-14'}");
    expect_nack(fx, CAREHUB_E_VERSION, "x-14", NULL);
}

/* A map whose first key is the id, padded to exactly `size` bytes with a "pad" string. */
static void padded_frame(msgpack_sbuffer *sb, const char *id, const char *op, size_t size)
{
    msgpack_packer pk;
    msgpack_sbuffer_init(sb);
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 4);
    msgpack_pack_str(&pk, 2); msgpack_pack_str_body(&pk, "id", 2);
    msgpack_pack_str(&pk, strlen(id)); msgpack_pack_str_body(&pk, id, strlen(id));
    msgpack_pack_str(&pk, 1); msgpack_pack_str_body(&pk, "v", 1);
    msgpack_pack_int(&pk, 1);
    msgpack_pack_str(&pk, 2); msgpack_pack_str_body(&pk, "op", 2);
    msgpack_pack_str(&pk, strlen(op)); msgpack_pack_str_body(&pk, op, strlen(op));
    msgpack_pack_str(&pk, 3); msgpack_pack_str_body(&pk, "pad", 3);
    size_t head = sb->size + (size - sb->size - 3 <= 65535 ? 3 : 5); /* str16 or str32 */
    assert_true(size > head + 256);
    size_t n = size - head;
    char *pad = malloc(n);
    assert_non_null(pad);
    memset(pad, 'p', n);
    msgpack_pack_str(&pk, n);
    msgpack_pack_str_body(&pk, pad, n);
    free(pad);
    assert_int_equal(sb->size, size);
}

static void test_envelope_too_large(void **state)
{
    fx_t *fx = *state;
    session_t *s = conn(fx, "conn-1");
    msgpack_sbuffer sb;
    /* exactly the limit: accepted (here: a ping before hello) */
    padded_frame(&sb, "edge-1", "ping", MAX_BYTES);
    raw(fx, s, sb.data, sb.size);
    expect_nack(fx, CAREHUB_E_HELLO_REQUIRED, "edge-1", NULL);
    msgpack_sbuffer_destroy(&sb);
    /* one byte over: too_large, with the id read from the envelope */
    padded_frame(&sb, "big-1", "ping", MAX_BYTES + 1);
    raw(fx, s, sb.data, sb.size);
    expect_nack(fx, CAREHUB_E_TOO_LARGE, "big-1", NULL);
    msgpack_sbuffer_destroy(&sb);
    /* ... also when it is huge, and when the huge frame is cut short */
    padded_frame(&sb, "big-2", "event", 40 * MAX_BYTES);
    raw(fx, s, sb.data, sb.size);
    expect_nack(fx, CAREHUB_E_TOO_LARGE, "big-2", NULL);
    raw(fx, s, sb.data, 2 * MAX_BYTES);
    expect_nack(fx, CAREHUB_E_TOO_LARGE, "big-2", NULL);
    msgpack_sbuffer_destroy(&sb);
    /* an oversized frame with no readable id: too_large without id */
    char *junk = malloc(MAX_BYTES * 2);
    assert_non_null(junk);
    memset(junk, 0x91, MAX_BYTES * 2);
    raw(fx, s, junk, MAX_BYTES * 2);
    expect_nack(fx, CAREHUB_E_TOO_LARGE, NULL, NULL);
    free(junk);
    /* too_large even after hello, and the event is not staged */
    hello(fx, s, "school-1");
    padded_frame(&sb, "big-3", "event", MAX_BYTES + 100);
    raw(fx, s, sb.data, sb.size);
    expect_nack(fx, CAREHUB_E_TOO_LARGE, "big-3", NULL);
    assert_int_equal(proto_pending(fx->p), 0);
    msgpack_sbuffer_destroy(&sb);
}

static void test_envelope_multi_frame(void **state)
{
    fx_t *fx = *state;
    session_t *s = conn(fx, "conn-1");
    msgpack_sbuffer sb;
    frame_from(&sb, "{'v': 1, 'op': 'hello', 'id': 'h-1', 'agent': 'school-1'}");
    proto_on_message(fx->p, s, sb.data, sb.size, 2, NULL, fx->now);
    assert_nack(only_reply(fx), CAREHUB_E_MALFORMED, ANY_ID, NULL);
    sink_clear(&fx->sink);
    assert_null(s->agent); /* the hello in it was not acted on */
    proto_on_message(fx->p, s, sb.data, sb.size, 0, NULL, fx->now);
    assert_nack(only_reply(fx), CAREHUB_E_MALFORMED, ANY_ID, NULL);
    sink_clear(&fx->sink);
    assert_null(s->agent);
    msgpack_sbuffer_destroy(&sb);
    /* a staged event is not made by a multi-frame message */
    hello(fx, s, "school-1");
    char text[512];
    snprintf(text, sizeof text, "{'v': 1, 'op': 'event', 'id': 'e-1', 'type': 'absence', 'at': 1, 'body': %s}",
             ABSENCE);
    frame_from(&sb, text);
    assert_int_equal(proto_on_message(fx->p, s, sb.data, sb.size, 3, NULL, fx->now), 0);
    assert_nack(only_reply(fx), CAREHUB_E_MALFORMED, ANY_ID, NULL);
    sink_clear(&fx->sink);
    msgpack_sbuffer_destroy(&sb);
}

static void test_envelope_bad_frames(void **state)
{
    fx_t *fx = *state;
    session_t *s = conn(fx, "conn-1");
    hello(fx, s, "school-1");
    msgpack_sbuffer sb;
    /* trailing bytes after a good map */
    frame_from(&sb, "{'v': 1, 'op': 'ping', 'id': 't-1'}");
    msgpack_sbuffer_write(&sb, "\x00", 1);
    raw(fx, s, sb.data, sb.size);
    assert_nack(only_reply(fx), CAREHUB_E_MALFORMED, ANY_ID, NULL);
    sink_clear(&fx->sink);
    msgpack_sbuffer_destroy(&sb);
    /* a top-level key that is not a string */
    static const char keytype[] = "\x84\xa1v\x01\xa2op\xa4ping\xa2id\xa3t-2\x07\x07";
    raw(fx, s, keytype, sizeof keytype - 1);
    assert_nack(only_reply(fx), CAREHUB_E_MALFORMED, ANY_ID, NULL);
    sink_clear(&fx->sink);
    /* nesting deeper than the guard allows, inside an otherwise good ping */
    char deep[300];
    size_t n = 0;
    static const char head[] = "\x84\xa1v\x01\xa2op\xa4ping\xa2id\xa3t-3\xa1x";
    memcpy(deep, head, sizeof head - 1);
    n = sizeof head - 1;
    for (int i = 0; i < 200; i++)
        deep[n++] = (char)0x91;
    deep[n++] = 0x01;
    raw(fx, s, deep, n);
    assert_nack(only_reply(fx), CAREHUB_E_MALFORMED, ANY_ID, NULL);
    sink_clear(&fx->sink);
    assert_int_equal(proto_pending(fx->p), 0);
    /* the connection still works */
    msg(fx, s, "{'v': 1, 'op': 'ping', 'id': 't-4'}");
    assert_string_equal(rstr(only_reply(fx), "op"), "pong");
    sink_clear(&fx->sink);
}

/* ---- events: refusals before staging ------------------------------------------------ */

static void test_event_unknown_type_before_forbidden(void **state)
{
    fx_t *fx = *state;
    static const char *agents[] = {"agency-police", "supervisor-1", "school-1", "monitor-1"};
    for (size_t i = 0; i < 4; i++) {
        session_t *s = conn(fx, agents[i]);
        hello(fx, s, agents[i]);
        event(fx, s, "e-1", "no_such_type", ABSENCE);
        expect_nack(fx, CAREHUB_E_UNKNOWN_TYPE, "e-1", "/type");
        event(fx, s, "e-2", "Absence", ABSENCE);
        expect_nack(fx, CAREHUB_E_UNKNOWN_TYPE, "e-2", "/type");
        event(fx, s, "e-3", "absence\\u0000", ABSENCE); /* NUL-extended name */
        expect_nack(fx, CAREHUB_E_UNKNOWN_TYPE, "e-3", "/type");
        event(fx, s, "e-4", "", ABSENCE);
        expect_nack(fx, CAREHUB_E_UNKNOWN_TYPE, "e-4", "/type");
    }
    session_t *s = conn(fx, "agency-police");
    event(fx, s, "e-5", "absence", ABSENCE);
    expect_nack(fx, CAREHUB_E_FORBIDDEN, "e-5", NULL);
    assert_int_equal(proto_pending(fx->p), 0);
}

/* PROTOCOL §4: school → absence, mandatory_report; reporter → mandatory_report;
 * monitor → online_risk; agency and supervisor → nothing. */
static void test_event_role_table(void **state)
{
    fx_t *fx = *state;
    static const char *agents[] = {"school-1", "reporter-1", "monitor-1", "agency-police",
                                   "supervisor-1"};
    static const char *types[] = {"absence", "mandatory_report", "online_risk"};
    static const int allowed[5][3] = {{1, 1, 0}, {0, 1, 0}, {0, 0, 1}, {0, 0, 0}, {0, 0, 0}};
    const char *bodies[] = {ABSENCE, REPORT, RISK};
    size_t staged = 0;
    for (size_t a = 0; a < 5; a++) {
        session_t *s = conn(fx, agents[a]);
        hello(fx, s, agents[a]);
        for (size_t t = 0; t < 3; t++) {
            char id[64];
            snprintf(id, sizeof id, "%s.%s", agents[a], types[t]);
            size_t n = event(fx, s, id, types[t], bodies[t]);
            if (allowed[a][t]) {
                staged++;
                assert_int_equal(n, staged);
                if (fx->sink.n)
                    fail_msg("%s sending %s was answered before the commit", agents[a], types[t]);
            } else {
                if (fx->sink.n != 1)
                    fail_msg("%s sending %s: %zu replies, want a forbidden nack", agents[a],
                             types[t], fx->sink.n);
                expect_nack(fx, CAREHUB_E_FORBIDDEN, id, NULL);
                assert_int_equal(n, staged);
            }
        }
    }
    assert_int_equal(proto_pending(fx->p), 4);
    flush(fx);
    assert_int_equal(fx->sink.n, 4);
    assert_ack(reply_for(fx, "school-1.absence"), "school-1.absence", 0, NULL, NULL);
    assert_ack(reply_for(fx, "school-1.mandatory_report"), "school-1.mandatory_report", 0, NULL, NULL);
    assert_ack(reply_for(fx, "reporter-1.mandatory_report"), "reporter-1.mandatory_report", 0, NULL,
               NULL);
    assert_ack(reply_for(fx, "monitor-1.online_risk"), "monitor-1.online_risk", 0, NULL, NULL);
}

static void test_event_field_errors(void **state)
{
    fx_t *fx = *state;
    session_t *s = conn(fx, "conn-1");
    hello(fx, s, "school-1");
    char text[1024];
    /* type missing / not a string */
    snprintf(text, sizeof text, "{'v': 1, 'op': 'event', 'id': 'f-1', 'at': 1, 'body': %s}", ABSENCE);
    msg(fx, s, text);
    expect_nack(fx, CAREHUB_E_INVALID, "f-1", "/type");
    snprintf(text, sizeof text, "{'v': 1, 'op': 'event', 'id': 'f-2', 'type': 7, 'at': 1, 'body': %s}",
             ABSENCE);
    msg(fx, s, text);
    expect_nack(fx, CAREHUB_E_INVALID, "f-2", "/type");
    /* at missing, negative, not an integer */
    snprintf(text, sizeof text, "{'v': 1, 'op': 'event', 'id': 'f-3', 'type': 'absence', 'body': %s}",
             ABSENCE);
    msg(fx, s, text);
    expect_nack(fx, CAREHUB_E_INVALID, "f-3", "/at");
    snprintf(text, sizeof text,
             "{'v': 1, 'op': 'event', 'id': 'f-4', 'type': 'absence', 'at': -5, 'body': %s}", ABSENCE);
    msg(fx, s, text);
    expect_nack(fx, CAREHUB_E_INVALID, "f-4", "/at");
    snprintf(text, sizeof text,
             "{'v': 1, 'op': 'event', 'id': 'f-5', 'type': 'absence', 'at': '2026-11-27', 'body': %s}",
             ABSENCE);
    msg(fx, s, text);
    expect_nack(fx, CAREHUB_E_INVALID, "f-5", "/at");
    snprintf(text, sizeof text,
             "{'v': 1, 'op': 'event', 'id': 'f-6', 'type': 'absence', 'at': 1.5, 'body': %s}", ABSENCE);
    msg(fx, s, text);
    expect_nack(fx, CAREHUB_E_INVALID, "f-6", "/at");
    /* body missing / not a map */
    msg(fx, s, "{'v': 1, 'op': 'event', 'id': 'f-7', 'type': 'absence', 'at': 1}");
    expect_nack(fx, CAREHUB_E_INVALID, "f-7", "/body");
    msg(fx, s, "{'v': 1, 'op': 'event', 'id': 'f-8', 'type': 'absence', 'at': 1, 'body': 'text'}");
    expect_nack(fx, CAREHUB_E_INVALID, "f-8", "/body");
    msg(fx, s, "{'v': 1, 'op': 'event', 'id': 'f-9', 'type': 'absence', 'at': 1, 'body': []}");
    expect_nack(fx, CAREHUB_E_INVALID, "f-9", "/body");
    assert_int_equal(proto_pending(fx->p), 0);
}

/* An event map {v, op, id, type, at, body} whose body is packed by `body`. */
static void event_with_raw_body(msgpack_sbuffer *sb, const char *id, const char *type,
                                void (*body)(msgpack_packer *))
{
    msgpack_packer pk;
    msgpack_sbuffer_init(sb);
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 6);
#define S(str) msgpack_pack_str(&pk, strlen(str)), msgpack_pack_str_body(&pk, str, strlen(str))
    S("v"); msgpack_pack_int(&pk, 1);
    S("op"); S("event");
    S("id"); S(id);
    S("type"); S(type);
    S("at"); msgpack_pack_int64(&pk, AT);
    S("body"); body(&pk);
#undef S
}

#define PS(pk, str) msgpack_pack_str((pk), strlen(str)), msgpack_pack_str_body((pk), str, strlen(str))

/* An absence body whose child.name is bin instead of str. */
static void body_with_bin(msgpack_packer *pk)
{
    msgpack_pack_map(pk, 5);
    PS(pk, "school"); PS(pk, "Binhai No. 3");
    PS(pk, "date"); PS(pk, "2026-11-27");
    PS(pk, "reason"); PS(pk, "unexplained");
    PS(pk, "consecutive_days"); msgpack_pack_int(pk, 2);
    PS(pk, "child");
    msgpack_pack_map(pk, 2);
    PS(pk, "id"); PS(pk, "child-1");
    PS(pk, "name"); msgpack_pack_bin(pk, 7); msgpack_pack_bin_body(pk, "Li Ming", 7);
}

/* An absence body with "school" twice. */
static void body_with_dup_key(msgpack_packer *pk)
{
    msgpack_pack_map(pk, 6);
    PS(pk, "school"); PS(pk, "Binhai No. 3");
    PS(pk, "date"); PS(pk, "2026-11-27");
    PS(pk, "reason"); PS(pk, "unexplained");
    PS(pk, "consecutive_days"); msgpack_pack_int(pk, 2);
    PS(pk, "child");
    msgpack_pack_map(pk, 2);
    PS(pk, "id"); PS(pk, "child-1");
    PS(pk, "name"); PS(pk, "Li Ming");
    PS(pk, "school"); PS(pk, "Other School");
}

/* An absence body whose note is not UTF-8. */
static void body_with_bad_utf8(msgpack_packer *pk)
{
    msgpack_pack_map(pk, 6);
    PS(pk, "school"); PS(pk, "Binhai No. 3");
    PS(pk, "date"); PS(pk, "2026-11-27");
    PS(pk, "reason"); PS(pk, "unexplained");
    PS(pk, "consecutive_days"); msgpack_pack_int(pk, 2);
    PS(pk, "child");
    msgpack_pack_map(pk, 2);
    PS(pk, "id"); PS(pk, "child-1");
    PS(pk, "name"); PS(pk, "Li Ming");
    PS(pk, "note"); msgpack_pack_str(pk, 2); msgpack_pack_str_body(pk, "\xff\xfe", 2);
}

/* Values JSON cannot hold: refused invalid with the path of the value. */
static void test_event_unconvertible_body(void **state)
{
    fx_t *fx = *state;
    session_t *s = conn(fx, "conn-1");
    hello(fx, s, "school-1");
    msgpack_sbuffer sb;
    event_with_raw_body(&sb, "u-1", "absence", body_with_bin);
    raw(fx, s, sb.data, sb.size);
    msgpack_sbuffer_destroy(&sb);
    event_with_raw_body(&sb, "u-2", "absence", body_with_dup_key);
    raw(fx, s, sb.data, sb.size);
    msgpack_sbuffer_destroy(&sb);
    event_with_raw_body(&sb, "u-3", "absence", body_with_bad_utf8);
    raw(fx, s, sb.data, sb.size);
    msgpack_sbuffer_destroy(&sb);
    flush(fx);
    assert_int_equal(fx->sink.n, 3);
    assert_nack(reply_for(fx, "u-1"), CAREHUB_E_INVALID, "u-1", "/body/child/name");
    assert_nack(reply_for(fx, "u-2"), CAREHUB_E_INVALID, "u-2", "/body/school");
    assert_nack(reply_for(fx, "u-3"), CAREHUB_E_INVALID, "u-3", "/body/note");
    sink_clear(&fx->sink);
    /* nothing stored: the next event is the first */
    event(fx, s, "ok-1", "absence", ABSENCE);
    flush(fx);
    char ev[STORE_ID_MAX];
    assert_ack(only_reply(fx), "ok-1", 0, ev, NULL);
    assert_string_equal(ev, "ev-000000000001");
    sink_clear(&fx->sink);
}

/* ---- events: schema validation, staging, acks -------------------------------------- */

static void test_event_invalid_body(void **state)
{
    fx_t *fx = *state;
    session_t *s = conn(fx, "conn-1");
    hello(fx, s, "school-1");
    static const struct {
        const char *id, *body, *field;
    } bad[] = {
        {"i-1", "{'school': 'S', 'date': '2026-11-27', 'reason': 'unexplained', 'consecutive_days': 0,"
                " 'child': {'id': 'c', 'name': 'n'}}", "/body/consecutive_days"},
        {"i-2", "{'school': 'S', 'date': '2026-11-27', 'reason': 'unexplained', 'consecutive_days': 1,"
                " 'child': {'id': 'c', 'name': 'n', 'birth_date': '2023-02-29'}}", "/body/child/birth_date"},
        {"i-3", "{'school': 'S', 'date': '2026-11-27', 'reason': 'holiday', 'consecutive_days': 1,"
                " 'child': {'id': 'c', 'name': 'n'}}", "/body/reason"},
        {"i-4", "{'school': 'S', 'date': '2026-11-27', 'reason': 'sick', 'consecutive_days': 1,"
                " 'child': {'name': 'n'}}", "/body/child/id"},
        {"i-5", "{'school': 'S', 'date': '2026-11-27', 'reason': 'sick', 'consecutive_days': 1,"
                " 'child': {'id': 'c', 'name': 'n'}, 'severity': 'urgent'}", "/body/severity"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        event(fx, s, bad[i].id, "absence", bad[i].body);
    }
    /* invalid ones are answered with the batch too, never before the commit */
    assert_int_equal(fx->sink.n, 0);
    event(fx, s, "ok-1", "absence", ABSENCE);
    flush(fx);
    assert_int_equal(fx->sink.n, sizeof bad / sizeof bad[0] + 1);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        const reply_t *r = reply_for(fx, bad[i].id);
        assert_nack(r, CAREHUB_E_INVALID, bad[i].id, bad[i].field);
    }
    /* nothing stored for them: the valid one is the first event */
    char ev[STORE_ID_MAX];
    assert_ack(reply_for(fx, "ok-1"), "ok-1", 0, ev, NULL);
    assert_string_equal(ev, "ev-000000000001");
    sink_clear(&fx->sink);
    /* the refused ids were not remembered: a corrected resend is stored */
    event(fx, s, "i-1", "absence", ABSENCE);
    flush(fx);
    assert_ack(only_reply(fx), "i-1", 0, ev, NULL);
    assert_string_equal(ev, "ev-000000000002");
    sink_clear(&fx->sink);
}

/* The ack-after-commit rule: nothing is answered until proto_flush(). */
static void test_event_ack_after_commit(void **state)
{
    fx_t *fx = *state;
    session_t *s = conn(fx, "conn-1");
    hello(fx, s, "school-1");
    assert_int_equal(event(fx, s, "e-1", "absence", ABSENCE), 1);
    assert_int_equal(event(fx, s, "e-2", "mandatory_report", REPORT), 2);
    assert_int_equal(event(fx, s, "e-3", "absence",
                           "{'school': 'S', 'date': '2026-11-28', 'reason': 'sick',"
                           " 'consecutive_days': 1, 'severity': 'critical',"
                           " 'child': {'id': 'child-1', 'name': 'Li Ming'}}"),
                     3);
    assert_int_equal(fx->sink.n, 0);
    assert_int_equal(proto_pending(fx->p), 3);
    /* nothing in the store yet either */
    char *data = NULL;
    size_t len = 0;
    assert_int_equal(case_get_event(fx->store, "ev-000000000001", &data, &len), STORE_NOTFOUND);

    flush(fx);
    assert_int_equal(proto_pending(fx->p), 0);
    assert_int_equal(fx->sink.n, 3);
    char ev[3][STORE_ID_MAX], cs[3][STORE_ID_MAX];
    for (int i = 0; i < 3; i++) {
        char id[32];
        snprintf(id, sizeof id, "e-%d", i + 1);
        const reply_t *r = &fx->sink.r[i]; /* in arrival order */
        assert_memory_equal(r->rid, "conn-1", 6);
        assert_ack(r, id, 0, ev[i], cs[i]);
    }
    assert_string_not_equal(ev[0], ev[1]);
    assert_string_not_equal(ev[1], ev[2]);
    /* absence about child-1 twice: one case; the report has its own */
    assert_string_equal(cs[0], cs[2]);
    assert_string_not_equal(cs[0], cs[1]);
    sink_clear(&fx->sink);
    flush(fx); /* nothing staged: nothing sent */
    assert_int_equal(fx->sink.n, 0);
    /* the case joined both absences */
    char buf[64];
    stored_field(fx, 1, cs[0], "events", buf, sizeof buf);
    assert_string_equal(buf, "2");
}

/* What an ack promises is on disk: a whole event record (one msgpack map) with
 * the sender, its id, and the body as sent plus the schema's defaults. */
static void test_event_stored_record(void **state)
{
    fx_t *fx = *state;
    session_t *s = conn(fx, "conn-1");
    hello(fx, s, "school-1");
    event(fx, s, "e-1", "absence", ABSENCE);
    event(fx, s, "e-3", "absence",
          "{'school': 'S', 'date': '2026-11-28', 'reason': 'sick',"
          " 'consecutive_days': 1, 'severity': 'critical',"
          " 'child': {'id': 'child-1', 'name': 'Li Ming'}}");
    flush(fx);
    assert_int_equal(fx->sink.n, 2);
    char ev[3][STORE_ID_MAX], cs[3][STORE_ID_MAX];
    assert_ack(&fx->sink.r[0], "e-1", 0, ev[0], cs[0]);
    assert_ack(&fx->sink.r[1], "e-3", 0, ev[2], cs[2]);
    sink_clear(&fx->sink);
    char buf[512];
    stored_field(fx, 0, ev[0], "agent", buf, sizeof buf);
    assert_string_equal(buf, "school-1");
    stored_field(fx, 0, ev[0], "ref", buf, sizeof buf);
    assert_string_equal(buf, "e-1");
    stored_field(fx, 0, ev[0], "type", buf, sizeof buf);
    assert_string_equal(buf, "absence");
    stored_field(fx, 0, ev[0], "severity", buf, sizeof buf);
    assert_string_equal(buf, "normal");
    stored_field(fx, 0, ev[0], "at", buf, sizeof buf);
    assert_string_equal(buf, "1764000000000");
    stored_field(fx, 0, ev[0], "body", buf, sizeof buf);
    assert_non_null(strstr(buf, "\"severity\"=>\"normal\"")); /* the schema default */
    assert_non_null(strstr(buf, "\"consecutive_days\"=>2"));
    assert_non_null(strstr(buf, "\"child\"=>{\"id\"=>\"child-1\", \"name\"=>\"Li Ming\"}"));
    stored_field(fx, 0, ev[2], "severity", buf, sizeof buf);
    assert_string_equal(buf, "critical");
    stored_field(fx, 1, cs[0], "severity", buf, sizeof buf);
    assert_string_equal(buf, "critical");
    stored_field(fx, 1, cs[0], "events", buf, sizeof buf);
    assert_string_equal(buf, "2");
}

static void test_event_retry_duplicate(void **state)
{
    fx_t *fx = *state;
    session_t *s = conn(fx, "conn-1");
    hello(fx, s, "school-1");
    /* a retry in the same batch */
    event(fx, s, "e-1", "absence", ABSENCE);
    event(fx, s, "e-1", "absence", ABSENCE);
    assert_int_equal(fx->sink.n, 0);
    flush(fx);
    assert_int_equal(fx->sink.n, 2);
    char ev[2][STORE_ID_MAX], cs[2][STORE_ID_MAX];
    assert_ack(&fx->sink.r[0], "e-1", 0, ev[0], cs[0]);
    assert_ack(&fx->sink.r[1], "e-1", 1, ev[1], cs[1]);
    assert_string_equal(ev[0], ev[1]);
    assert_string_equal(cs[0], cs[1]);
    sink_clear(&fx->sink);
    /* a retry in a later batch, from another connection of the same agent */
    session_t *s2 = conn(fx, "conn-1b");
    hello(fx, s2, "school-1");
    event(fx, s2, "e-1", "absence", ABSENCE);
    flush(fx);
    char ev2[STORE_ID_MAX], cs2[STORE_ID_MAX];
    assert_ack(only_reply(fx), "e-1", 1, ev2, cs2);
    assert_memory_equal(fx->sink.r[0].rid, "conn-1b", 7);
    assert_string_equal(ev2, ev[0]);
    assert_string_equal(cs2, cs[0]);
    sink_clear(&fx->sink);
    /* the same id from another agent is another event */
    session_t *o = conn(fx, "conn-2");
    hello(fx, o, "school-2");
    event(fx, o, "e-1", "absence", ABSENCE);
    flush(fx);
    assert_ack(only_reply(fx), "e-1", 0, ev2, cs2);
    assert_string_not_equal(ev2, ev[0]);
    assert_string_equal(cs2, cs[0]); /* same type, same child: joins the case */
    sink_clear(&fx->sink);
    /* the duplicates were not counted into the case */
    char buf[64];
    stored_field(fx, 1, cs[0], "events", buf, sizeof buf);
    assert_string_equal(buf, "2");
}

/* A retry whose body is now invalid gets the first ack: the idempotency key wins
 * (docs/protocol.md). */
static void test_event_invalid_retry_is_duplicate(void **state)
{
    fx_t *fx = *state;
    session_t *s = conn(fx, "conn-1");
    hello(fx, s, "school-1");
    event(fx, s, "e-1", "absence", ABSENCE);
    flush(fx);
    char ev[STORE_ID_MAX], cs[STORE_ID_MAX];
    assert_ack(only_reply(fx), "e-1", 0, ev, cs);
    sink_clear(&fx->sink);
    event(fx, s, "e-1", "absence",
          "{'school': 'S', 'date': 'yesterday', 'reason': 'unexplained', 'consecutive_days': 0,"
          " 'child': {'id': 'child-1', 'name': 'Li Ming'}}");
    flush(fx);
    char ev2[STORE_ID_MAX], cs2[STORE_ID_MAX];
    assert_ack(only_reply(fx), "e-1", 1, ev2, cs2);
    assert_string_equal(ev2, ev);
    assert_string_equal(cs2, cs);
    sink_clear(&fx->sink);
    /* in the same batch as the original, too */
    event(fx, s, "e-2", "absence", ABSENCE);
    event(fx, s, "e-2", "absence", "{'nonsense': true}");
    flush(fx);
    assert_int_equal(fx->sink.n, 2);
    assert_ack(&fx->sink.r[0], "e-2", 0, ev, NULL);
    assert_ack(&fx->sink.r[1], "e-2", 1, ev2, NULL);
    assert_string_equal(ev, ev2);
    sink_clear(&fx->sink);
}

/* The same rule for a retry whose body now holds a value msgpack has and JSON has
 * not (docs/protocol.md lists these as `invalid` bodies, and says a retry whose
 * body is now invalid gets the first ack). */
static void test_event_unconvertible_retry_is_duplicate(void **state)
{
    fx_t *fx = *state;
    session_t *s = conn(fx, "conn-1");
    hello(fx, s, "school-1");
    event(fx, s, "u-1", "absence", ABSENCE);
    flush(fx);
    char ev[STORE_ID_MAX], cs[STORE_ID_MAX];
    assert_ack(only_reply(fx), "u-1", 0, ev, cs);
    sink_clear(&fx->sink);
    msgpack_sbuffer sb;
    event_with_raw_body(&sb, "u-1", "absence", body_with_bin);
    raw(fx, s, sb.data, sb.size);
    msgpack_sbuffer_destroy(&sb);
    flush(fx);
    char ev2[STORE_ID_MAX], cs2[STORE_ID_MAX];
    assert_ack(only_reply(fx), "u-1", 1, ev2, cs2);
    assert_string_equal(ev2, ev);
    assert_string_equal(cs2, cs);
    sink_clear(&fx->sink);
}

static void test_event_batch_max(void **state)
{
    fx_t *fx = *state;
    session_t *s = conn(fx, "conn-1");
    hello(fx, s, "monitor-1");
    const size_t total = PROTO_BATCH_MAX + 5;
    for (size_t i = 0; i < total; i++) {
        char id[32];
        snprintf(id, sizeof id, "b-%zu", i);
        size_t n = event(fx, s, id, "online_risk", RISK);
        assert_true(n >= 1 && n <= PROTO_BATCH_MAX);
        assert_true(proto_pending(fx->p) <= PROTO_BATCH_MAX);
    }
    flush(fx);
    assert_int_equal(proto_pending(fx->p), 0);
    assert_int_equal(fx->sink.n, total);
    /* each event answered exactly once, with an ack and a distinct event id */
    unsigned char *seen = calloc(total, 1);
    assert_non_null(seen);
    char prev[STORE_ID_MAX] = "";
    for (size_t i = 0; i < total; i++) {
        const reply_t *r = &fx->sink.r[i];
        const char *id = rstr(r, "id");
        assert_non_null(id);
        size_t k = (size_t)strtoul(id + 2, NULL, 10);
        assert_true(k < total);
        assert_int_equal(seen[k], 0);
        seen[k] = 1;
        char ev[STORE_ID_MAX];
        char want[32];
        snprintf(want, sizeof want, "b-%zu", k);
        assert_ack(r, want, 0, ev, NULL);
        assert_true(strcmp(prev, ev) < 0); /* increasing: none reused */
        strcpy(prev, ev);
    }
    free(seen);
}

/* Replies go to the connection each event came from, even when that session
 * was dropped between staging and the commit. */
static void test_event_reply_routing(void **state)
{
    fx_t *fx = *state;
    session_t *a = conn(fx, "conn-A");
    session_t *b = conn(fx, "conn-BB");
    hello(fx, a, "school-1");
    hello(fx, b, "reporter-1");
    event(fx, a, "a-1", "absence", ABSENCE);
    event(fx, b, "b-1", "mandatory_report", REPORT);
    event(fx, a, "a-2", "mandatory_report", REPORT);
    /* the sessions are forgotten (idle sweep) before the batch commits */
    session_table_sweep(fx->sessions, fx->now + 1000000, 1, NULL, NULL);
    assert_int_equal(session_count(fx->sessions), 0);
    flush(fx);
    assert_int_equal(fx->sink.n, 3);
    const reply_t *ra1 = reply_for(fx, "a-1"), *rb1 = reply_for(fx, "b-1"),
                  *ra2 = reply_for(fx, "a-2");
    assert_int_equal(ra1->rid_len, 6);
    assert_memory_equal(ra1->rid, "conn-A", 6);
    assert_int_equal(ra2->rid_len, 6);
    assert_memory_equal(ra2->rid, "conn-A", 6);
    assert_int_equal(rb1->rid_len, 7);
    assert_memory_equal(rb1->rid, "conn-BB", 7);
    assert_ack(ra1, "a-1", 0, NULL, NULL);
    assert_ack(rb1, "b-1", 0, NULL, NULL);
    assert_ack(ra2, "a-2", 0, NULL, NULL);
}

/* A lost ack (peer not reading) does not lose the event: the retry is a duplicate. */
static void test_event_send_failure(void **state)
{
    fx_t *fx = *state;
    session_t *s = conn(fx, "conn-1");
    hello(fx, s, "school-1");
    event(fx, s, "e-1", "absence", ABSENCE);
    fx->sink.fail = 1;
    flush(fx);
    fx->sink.fail = 0;
    sink_clear(&fx->sink);
    event(fx, s, "e-1", "absence", ABSENCE);
    flush(fx);
    assert_ack(only_reply(fx), "e-1", 1, NULL, NULL);
    sink_clear(&fx->sink);
}

/* Storage full: every staged event is answered `unavailable`, with its id. */
static void test_event_store_full(void **state)
{
    fx_t *fx = *state;
    session_t *s = conn(fx, "conn-1");
    hello(fx, s, "school-1");
    char note[3000];
    memset(note, 'n', sizeof note - 1);
    note[sizeof note - 1] = '\0';
    char *body = malloc(4000);
    assert_non_null(body);
    snprintf(body, 4000,
             "{'school': 'S', 'date': '2026-11-27', 'reason': 'sick', 'consecutive_days': 1,"
             " 'child': {'id': 'c', 'name': 'n'}, 'note': '%s'}", note);
    int unavailable = 0, acked = 0;
    for (int batch = 0; batch < 100 && !unavailable; batch++) {
        for (int i = 0; i < 10; i++) {
            char id[32];
            snprintf(id, sizeof id, "f-%d-%d", batch, i);
            event(fx, s, id, "absence", body);
        }
        flush(fx);
        assert_int_equal(fx->sink.n, 10);
        for (size_t i = 0; i < 10; i++) {
            const reply_t *r = &fx->sink.r[i];
            char id[32];
            snprintf(id, sizeof id, "f-%d-%zu", batch, i);
            if (strcmp(rstr(r, "op"), "nack") == 0) {
                assert_nack(r, CAREHUB_E_UNAVAILABLE, id, NULL);
                unavailable++;
            } else {
                assert_ack(r, id, 0, NULL, NULL);
                acked++;
                assert_int_equal(unavailable, 0); /* never some of a batch */
            }
        }
        if (unavailable)
            assert_int_equal(unavailable, 10); /* the whole batch, nothing of it stored */
        sink_clear(&fx->sink);
    }
    free(body);
    assert_int_equal(unavailable, 10);
    assert_true(acked > 0);
    /* nothing of the refused batch was stored */
    char id[STORE_ID_MAX], *data = NULL;
    size_t len = 0;
    snprintf(id, sizeof id, "ev-%012d", acked + 1);
    assert_int_equal(case_get_event(fx->store, id, &data, &len), STORE_NOTFOUND);
    /* small messages still get through the envelope while full */
    msg(fx, s, "{'v': 1, 'op': 'ping', 'id': 'p-1'}");
    assert_string_equal(rstr(only_reply(fx), "op"), "pong");
    sink_clear(&fx->sink);
}

#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)

int main(void)
{
    log_set_level(LOG_ERROR); /* keep the test output readable */
    const struct CMUnitTest tests[] = {
        T(test_hello_welcome),
        T(test_hello_refused),
        T(test_hello_curve_user_id),
        T(test_curve_key_bound_on_every_message),
        T(test_hello_again),
        T(test_hello_required_and_ping),
        T(test_last_heard),
        T(test_broker_ping),
        T(test_envelope_malformed_without_id),
        T(test_envelope_errors_with_id),
        T(test_envelope_too_large),
        T(test_envelope_multi_frame),
        T(test_envelope_bad_frames),
        T(test_event_unknown_type_before_forbidden),
        T(test_event_role_table),
        T(test_event_field_errors),
        T(test_event_unconvertible_body),
        T(test_event_invalid_body),
        T(test_event_ack_after_commit),
        T(test_event_stored_record),
        T(test_event_retry_duplicate),
        T(test_event_invalid_retry_is_duplicate),
        T(test_event_unconvertible_retry_is_duplicate),
        T(test_event_batch_max),
        T(test_event_reply_routing),
        T(test_event_send_failure),
        cmocka_unit_test_setup_teardown(test_event_store_full, setup_tiny, teardown),
        T(test_test_clock_op), /* last: the virtual clock stays on in this process */
        T(test_test_clock_agent_only),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
