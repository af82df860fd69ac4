/* proto.c — envelope checks, the op table and event intake; see proto.h. */
#include "proto.h"

#include <errno.h>
#include <msgpack.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <string.h>

#include "assign.h"
#include "carehub_wire.h"
#include "clock.h"
#include "frame.h"
#include "query.h"
#include "log.h"
#include "util.h"

/* One staged event: the store item plus the copies it points into. */
typedef struct {
    store_event_t item;
    unsigned char rid[SESSION_ROUTING_MAX]; /* where to answer */
    size_t rid_len;
    char ref[65];          /* the agent's message id */
    char type[65];
    char *child_id;        /* owned, or NULL */
    char *body;            /* owned packed msgpack */
    size_t body_len;
    json_t *json;          /* the validated body, for routing inside the commit */
    schema_error_t verr;   /* why the body is invalid (item.refuse) */
} staged_t;

struct proto {
    const config_t *cfg;
    const schema_set_t *schemas;
    store_t *store;
    deliver_t *deliver;    /* pushes and notices after commits; may be NULL (unit tests) */
    metrics_t *metrics;    /* counters; may be NULL */
    int64_t dropped_logged; /* monotonic ms of the last "reply dropped" warning */
    assign_effects_t fx;   /* effects of the transaction in hand */
    proto_send_fn send;
    void *send_ud;
    staged_t *batch;       /* PROTO_BATCH_MAX staged events */
    store_event_t *items;  /* PROTO_BATCH_MAX: the store's view of the batch */
    size_t n_batch;
    uint64_t ping_seq;     /* ids of broker-originated pings */
};

/* A decoded message on its way through the handlers. */
typedef struct {
    session_t *s;
    const msgpack_object *map;
    char id[65];
    const char *user_id;
    int64_t now;
} msg_t;

/* ---- replies ---------------------------------------------------------------- */

/* A reply that cannot be sent is lost only to a peer that is gone, or one that
 * stopped reading while it kept sending (its queue, broker.peer_queue, is full): it
 * re-sends what was not answered and is told duplicate:true. Counted and logged,
 * never silent. */
static void send_out(proto_t *p, const unsigned char *rid, size_t rid_len, frame_out_t *o)
{
    if (p->send(p->send_ud, rid, rid_len, o->sb.data, o->sb.size) < 0) {
        if (errno == EAGAIN) {
            metrics_reply_dropped(p->metrics);
            int64_t now = util_mono_ms();
            if (p->dropped_logged == 0 || now - p->dropped_logged >= 10000) {
                log_warn("proto: a peer is not reading its replies (its queue is full): reply "
                         "dropped; the agent re-sends unanswered messages and gets "
                         "duplicate:true (logged at most every 10 s)");
                p->dropped_logged = now;
            }
        } else {
            log_debug("proto: reply not delivered (peer gone)");
        }
    }
    frame_out_end(o);
}

/* nack: {v, op:"nack", id?, code, error, field?} */
static void nack_to(proto_t *p, const unsigned char *rid, size_t rid_len, const char *id,
                    const char *code, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 7, 8)));

static void nack_to(proto_t *p, const unsigned char *rid, size_t rid_len, const char *id,
                    const char *code, const char *field, const char *fmt, ...)
{
    char error[768];
    va_list ap;
    va_start(ap, fmt);
    (void)vsnprintf(error, sizeof error, fmt, ap); /* a long sentence is cut, never overflows */
    va_end(ap);
    frame_text_clean(error); /* a cut may split a character; paths may echo a peer's bytes */
    char fbuf[600];
    if (field) {
        util_fmt(fbuf, sizeof fbuf, "%s", field);
        frame_text_clean(fbuf);
        field = fbuf;
    }
    metrics_nack(p->metrics, code);
    frame_out_t o;
    frame_out_message(&o, "nack", id, 2 + (field != NULL));
    frame_out_str(&o, "code", code);
    frame_out_str(&o, "error", error);
    if (field)
        frame_out_str(&o, "field", field);
    log_debug("proto: nack %s %s%s%s", id ? id : "(no id)", code, field ? " at " : "",
              field ? field : "");
    send_out(p, rid, rid_len, &o);
}

#define NACK(p, m, code, field, ...) \
    nack_to((p), (m)->s->rid, (m)->s->rid_len, (m)->id, (code), (field), __VA_ARGS__)

/* ---- handlers --------------------------------------------------------------- */

static void op_hello(proto_t *p, msg_t *m)
{
    const config_agent_t *agent;
    const char *name;
    size_t n;
    if (m->user_id) {
        /* CURVE: the agent is whoever owns the key; the message does not name it. */
        agent = m->user_id[0] ? config_find_agent(p->cfg, m->user_id) : NULL;
        if (!agent) {
            NACK(p, m, CAREHUB_E_UNAUTHORIZED, NULL, "this key is not configured for any agent");
            return;
        }
    } else {
        if (!frame_str(frame_map_get(m->map, "agent"), &name, &n) || !util_valid_id(name, n)) {
            NACK(p, m, CAREHUB_E_MALFORMED, "/agent",
                 "hello needs `agent`: your agent id as a string of 1-64 characters "
                 "[A-Za-z0-9._:-], as configured under `agents` on the broker");
            return;
        }
        char aid[65];
        memcpy(aid, name, n);
        aid[n] = '\0';
        agent = config_find_agent(p->cfg, aid);
        if (!agent) {
            NACK(p, m, CAREHUB_E_UNAUTHORIZED, "/agent",
                 "agent \"%s\" is not configured on this broker; ask the operator to add it "
                 "under `agents`", aid);
            return;
        }
    }
    m->s->agent = agent;
    log_info("proto: hello from agent %s (%s)", agent->id, config_role_name(agent->role));
    frame_out_t o;
    frame_out_message(&o, "welcome", m->id, 4);
    frame_out_str(&o, "agent", agent->id);
    frame_out_str(&o, "role", config_role_name(agent->role));
    frame_out_int(&o, "heartbeat_ms", p->cfg->heartbeat_ms);
    frame_out_int(&o, "max_message_bytes", (int64_t)p->cfg->max_message_bytes);
    send_out(p, m->s->rid, m->s->rid_len, &o);
    if (p->deliver)
        deliver_on_hello(p->deliver, m->s); /* what waited for this agent, after the welcome */
}

static void op_ping(proto_t *p, msg_t *m)
{
    frame_out_t o;
    frame_out_message(&o, "pong", m->id, 0);
    send_out(p, m->s->rid, m->s->rid_len, &o);
}

static void op_pong(proto_t *p, msg_t *m)
{
    (void)p;
    (void)m; /* being heard is all a pong does: last_heard is already updated */
}

/* Which roles may send which event type (PROTOCOL §4). A type with a schema
 * but no row here may be sent by no role. */
static const struct {
    const char *type;
    unsigned roles;
} EVENT_ROLES[] = {
    {"absence", 1u << ROLE_SCHOOL},
    {"mandatory_report", 1u << ROLE_SCHOOL | 1u << ROLE_REPORTER},
    {"online_risk", 1u << ROLE_MONITOR},
};

static int role_may_send(config_role_t role, const char *type)
{
    for (size_t i = 0; i < UTIL_ARRAY_LEN(EVENT_ROLES); i++)
        if (strcmp(EVENT_ROLES[i].type, type) == 0)
            return (EVENT_ROLES[i].roles >> role) & 1u;
    return 0;
}

static void op_event(proto_t *p, msg_t *m)
{
    const char *s;
    size_t n;
    char type[65];
    if (!frame_str(frame_map_get(m->map, "type"), &s, &n)) {
        NACK(p, m, CAREHUB_E_INVALID, "/type", "`type` is required: the event type as a string, "
             "e.g. \"absence\", \"mandatory_report\" or \"online_risk\"");
        return;
    }
    /* A printable copy of the type for lookups and messages. */
    size_t tn = n < sizeof type ? n : sizeof type - 1;
    for (size_t i = 0; i < tn; i++)
        type[i] = (unsigned char)s[i] < 0x20 || (unsigned char)s[i] > 0x7e ? '?' : s[i];
    type[tn] = '\0';
    const schema_t *schema =
        tn == n && memcmp(type, s, n) == 0 ? schema_set_get(p->schemas, type) : NULL;
    if (!schema) {
        NACK(p, m, CAREHUB_E_UNKNOWN_TYPE, "/type",
             "no schema for event type \"%s\"; known types: absence, mandatory_report, online_risk",
             type);
        return;
    }
    if (!role_may_send(m->s->agent->role, type)) {
        NACK(p, m, CAREHUB_E_FORBIDDEN, "/type", "agent %s has role %s, which may not send %s events",
             m->s->agent->id, config_role_name(m->s->agent->role), type);
        return;
    }
    int64_t at;
    if (!frame_int(frame_map_get(m->map, "at"), &at) || at < 0) {
        NACK(p, m, CAREHUB_E_INVALID, "/at", "`at` is required: when it was observed, as an integer of "
             "milliseconds since the Unix epoch (UTC)");
        return;
    }
    const msgpack_object *bo = frame_map_get(m->map, "body");
    if (!bo || bo->type != MSGPACK_OBJECT_MAP) {
        NACK(p, m, CAREHUB_E_INVALID, "/body", "`body` is required and must be a map that matches the %s "
             "schema (see docs/schemas.md)", type);
        return;
    }
    if (p->n_batch == PROTO_BATCH_MAX)
        proto_flush(p); /* the loop flushes first; this keeps the bound whatever calls us */
    staged_t *st = &p->batch[p->n_batch];
    memset(st, 0, sizeof *st);
    /* A body that fails here is still staged, marked refuse: if (agent, id) was
     * acknowledged before, the retry gets that ack; otherwise it is `invalid`. */
    char why[256];
    json_t *body = frame_to_json(bo, st->verr.path, sizeof st->verr.path, why, sizeof why);
    if (!body) {
        util_fmt(st->verr.message, sizeof st->verr.message, "%s", why);
        st->item.refuse = 1;
    } else if (schema_validate(schema, body, 1, &st->verr) < 0) {
        st->item.refuse = 1;
    }

    /* Fields the store needs, from the validated body. */
    st->item.severity = 1;
    json_t *sev = json_object_get(body, "severity");
    if (json_is_string(sev)) {
        int v = store_severity_parse(json_string_value(sev), json_string_length(sev));
        if (v >= 0)
            st->item.severity = v;
    }
    json_t *cid = json_object_get(json_object_get(body, "child"), "id");
    if (!st->item.refuse && json_is_string(cid) && json_string_length(cid) > 0)
        st->child_id = xstrndup(json_string_value(cid), json_string_length(cid));

    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    if (!st->item.refuse)
        frame_pack_json(&pk, body);
    if (!st->item.refuse)
        st->json = body; /* kept for routing; freed with the staged event */
    else
        json_decref(body); /* NULL-safe */
    st->body_len = sb.size; /* before release, which zeroes it */
    st->body = msgpack_sbuffer_release(&sb);
    msgpack_sbuffer_destroy(&sb);

    memcpy(st->rid, m->s->rid, m->s->rid_len);
    st->rid_len = m->s->rid_len;
    memcpy(st->ref, m->id, sizeof st->ref);
    memcpy(st->type, type, sizeof st->type);
    st->item.agent = m->s->agent->id; /* lives in the config */
    st->item.ref = st->ref;
    st->item.type = st->type;
    st->item.at = at;
    st->item.received = clock_now_ms();
    st->item.child_id = st->child_id;
    st->item.body = st->body;
    st->item.body_len = st->body_len;
    p->n_batch++;
}

/* ---- agencies: case_ack and case_update (PROTOCOL §5) ---- */

typedef struct {
    proto_t *p;
    assign_request_t *r;
} request_ctx_t;

static int request_txn(store_txn_t *t, void *ud)
{
    request_ctx_t *c = ud;
    assign_effects_clear(&c->p->fx);
    return assign_request(c->p->cfg, t, c->r, &c->p->fx);
}

/* Copy a string field (at most size-1 bytes) or leave it empty. 0 when absent, 1 when
 * present, -1 when present but not a string or too long. */
static int str_field(const msgpack_object *map, const char *key, char *out, size_t size)
{
    const msgpack_object *o = frame_map_get(map, key);
    const char *s;
    size_t n;
    out[0] = '\0';
    if (!o)
        return 0;
    if (!frame_str(o, &s, &n) || n >= size || memchr(s, '\0', n))
        return -1;
    memcpy(out, s, n);
    out[n] = '\0';
    return 1;
}

static void assignment_op(proto_t *p, msg_t *m, int is_update)
{
    char assignment[65], by[129], status[32], note[4097], to[65];
    if (m->s->agent->role != ROLE_AGENCY || !m->s->agent->agency) {
        NACK(p, m, CAREHUB_E_FORBIDDEN, NULL, "only agency agents acknowledge or update assignments; "
             "agent %s has role %s", m->s->agent->id, config_role_name(m->s->agent->role));
        return;
    }
    if (str_field(m->map, "assignment", assignment, sizeof assignment) != 1 ||
        !util_valid_id(assignment, strlen(assignment))) {
        NACK(p, m, CAREHUB_E_INVALID, "/assignment",
             "`assignment` is required: the id of the assignment, as in the `case` message's id");
        return;
    }
    assign_request_t r = {.agency = m->s->agent->agency, .assignment = assignment,
                          .now = clock_now_ms()};
    if (!is_update) {
        if (str_field(m->map, "by", by, sizeof by) < 0) {
            NACK(p, m, CAREHUB_E_INVALID, "/by", "`by` must be a string of at most 128 bytes: the officer");
            return;
        }
        r.by = by[0] ? by : NULL;
    } else {
        int st = str_field(m->map, "status", status, sizeof status);
        int s_ok = st == 1 && (strcmp(status, "in_progress") == 0 || strcmp(status, "resolved") == 0 ||
                               strcmp(status, "referred") == 0 || strcmp(status, "declined") == 0);
        if (!s_ok) {
            NACK(p, m, CAREHUB_E_INVALID, "/status",
                 "`status` is required: one of in_progress, resolved, referred, declined");
            return;
        }
        if (str_field(m->map, "note", note, sizeof note) < 0) {
            NACK(p, m, CAREHUB_E_INVALID, "/note", "`note` must be a string of at most 4096 bytes");
            return;
        }
        int has_to = str_field(m->map, "to", to, sizeof to);
        if (strcmp(status, "referred") == 0 && has_to != 1) {
            NACK(p, m, CAREHUB_E_INVALID, "/to", "`referred` needs `to`: the agency the case goes to");
            return;
        }
        r.status = status;
        r.note = note[0] ? note : NULL;
        r.to = has_to == 1 ? to : NULL;
    }
    request_ctx_t c = {p, &r};
    store_rc_t rc = store_write(p->store, request_txn, &c);
    if (rc != STORE_OK) {
        NACK(p, m, CAREHUB_E_UNAVAILABLE, NULL, "the broker cannot record this right now (%s); retry later",
             store_strerror(rc));
        return;
    }
    switch (r.result) {
    case ASSIGN_OK: {
        frame_out_t o;
        frame_out_message(&o, "ack", m->id, 2);
        frame_out_str(&o, "assignment", assignment);
        frame_out_str(&o, "case", r.case_id);
        send_out(p, m->s->rid, m->s->rid_len, &o);
        if (p->deliver)
            deliver_effects(p->deliver, &p->fx);
        return;
    }
    case ASSIGN_NOT_FOUND:
        NACK(p, m, CAREHUB_E_NOT_FOUND, "/assignment", "no assignment %s exists", assignment);
        return;
    case ASSIGN_FORBIDDEN:
        NACK(p, m, CAREHUB_E_FORBIDDEN, "/assignment", "%s; your agency is %s", r.detail,
             m->s->agent->agency);
        return;
    case ASSIGN_CONFLICT:
        NACK(p, m, CAREHUB_E_CONFLICT, "/status", "%s", r.detail);
        return;
    case ASSIGN_BAD_TARGET:
        NACK(p, m, CAREHUB_E_INVALID, "/to", "%s (got \"%s\")", r.detail, to);
        return;
    case ASSIGN_STORE:
        break;
    }
    NACK(p, m, CAREHUB_E_UNAVAILABLE, NULL, "the broker cannot record this right now; retry later");
}

static void op_case_ack(proto_t *p, msg_t *m)
{
    assignment_op(p, m, 0);
}

static void op_case_update(proto_t *p, msg_t *m)
{
    assignment_op(p, m, 1);
}

typedef struct {
    const char *agent;
    const char *id;
} received_ctx_t;

static int received_txn(store_txn_t *t, void *ud)
{
    received_ctx_t *c = ud;
    return assign_outcome_received(t, c->agent, c->id);
}

/* received {id}: the agent has the outcome with this id. No reply. */
static void op_received(proto_t *p, msg_t *m)
{
    received_ctx_t c = {m->s->agent->id, m->id};
    if (store_write(p->store, received_txn, &c) != STORE_OK)
        log_warn("proto: could not record `received` %s from %s; the outcome will be sent again",
                 m->id, m->s->agent->id);
}

/* query {what: case|cases|trail, …}: read cases under least privilege (query.h). */
static void op_query(proto_t *p, msg_t *m)
{
    frame_out_t o;
    char why[512];
    const char *field;
    static const char *codes[] = {
        [QUERY_FORBIDDEN] = CAREHUB_E_FORBIDDEN, [QUERY_NOT_FOUND] = CAREHUB_E_NOT_FOUND,
        [QUERY_INVALID] = CAREHUB_E_INVALID, [QUERY_UNAVAILABLE] = CAREHUB_E_UNAVAILABLE,
    };
    query_result_t r = query_handle(p->cfg, p->store, m->s->agent, m->id, m->map, &o, why,
                                    sizeof why, &field);
    if (r == QUERY_OK)
        send_out(p, m->s->rid, m->s->rid_len, &o);
    else
        NACK(p, m, codes[r], field, "%s", why);
}

/* test_clock {set?: ms, advance?: ms} → {op:"clock", now}: moves the virtual
 * clock. Exists only in a broker started with --test-clock (docs/protocol.md). */
static void op_test_clock(proto_t *p, msg_t *m)
{
    int64_t v;
    const msgpack_object *set = frame_map_get(m->map, "set"), *adv = frame_map_get(m->map, "advance");
    proto_flush(p); /* what came before the clock moved is committed before it moved */
    if ((set && (!frame_int(set, &v) || clock_set_ms(v) < 0)) ||
        (adv && (!frame_int(adv, &v) || clock_advance_ms(v) < 0))) {
        NACK(p, m, CAREHUB_E_INVALID, set ? "/set" : "/advance",
             "`set` takes a time in ms not before the clock's current time; `advance` takes ms >= 0");
        return;
    }
    /* What fell due fires now, before any later message is handled. */
    if (p->deliver)
        deliver_fire_due(p->deliver, clock_now_ms());
    frame_out_t o;
    frame_out_message(&o, "clock", m->id, 1);
    frame_out_int(&o, "now", clock_now_ms());
    send_out(p, m->s->rid, m->s->rid_len, &o);
}

/* The op table: every op the broker accepts, checked in one place. */
typedef void (*op_handler_t)(proto_t *, msg_t *);
static const struct op_def {
    const char *name;
    op_handler_t handler;
    int needs_hello;  /* refused with hello_required before a hello on this connection */
    int test_only;    /* exists only with the test clock (carehubd --test-clock) */
} OPS[] = {
    {"hello", op_hello, 0, 0},
    {"ping", op_ping, 1, 0},
    {"pong", op_pong, 1, 0},
    {"event", op_event, 1, 0},
    {"case_ack", op_case_ack, 1, 0},
    {"case_update", op_case_update, 1, 0},
    {"received", op_received, 1, 0},
    {"query", op_query, 1, 0},
    {"test_clock", op_test_clock, 1, 1},
};

/* ---- envelope --------------------------------------------------------------- */

size_t proto_on_message(proto_t *p, session_t *s, const void *frame, size_t len, int frames,
                        const char *user_id, int64_t now_ms)
{
    char peek[65];
    const char *pid = frame_peek_id(frame, len, peek, sizeof peek) == 0 ? peek : NULL;
    s->last_heard = now_ms;
    s->last_pinged = 0;

    if (frames != 1) {
        nack_to(p, s->rid, s->rid_len, pid, CAREHUB_E_MALFORMED, NULL,
                "a message is exactly one frame holding one msgpack map; this one had %d frames",
                frames);
        return p->n_batch;
    }
    if (len > p->cfg->max_message_bytes) {
        nack_to(p, s->rid, s->rid_len, pid, CAREHUB_E_TOO_LARGE, NULL,
                "the message is %zu bytes; this broker takes at most %zu (broker.max_message_bytes)",
                len, p->cfg->max_message_bytes);
        return p->n_batch;
    }
    frame_rc_t frc = frame_check(frame, len);
    if (frc != FRAME_OK) {
        nack_to(p, s->rid, s->rid_len, frc == FRAME_TRAILING || frc == FRAME_KEY_TYPE ? pid : NULL,
                CAREHUB_E_MALFORMED, NULL, "%s", frame_strerror(frc));
        return p->n_batch;
    }

    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    if (msgpack_unpack_next(&u, frame, len, NULL) != MSGPACK_UNPACK_SUCCESS) {
        nack_to(p, s->rid, s->rid_len, NULL, CAREHUB_E_MALFORMED, NULL, "the frame is not valid msgpack");
        goto done;
    }
    msg_t m = {.s = s, .map = &u.data, .user_id = user_id, .now = now_ms};
    const char *str;
    size_t n;
    if (!frame_str(frame_map_get(m.map, "id"), &str, &n) || !util_valid_id(str, n)) {
        nack_to(p, s->rid, s->rid_len, NULL, CAREHUB_E_MALFORMED, "/id",
                "`id` is required: a string of 1-64 characters [A-Za-z0-9._:-]");
        goto done;
    }
    memcpy(m.id, str, n);
    m.id[n] = '\0';

    const msgpack_object *v = frame_map_get(m.map, "v");
    if (!v || v->type != MSGPACK_OBJECT_POSITIVE_INTEGER) {
        NACK(p, &m, CAREHUB_E_MALFORMED, "/v", "`v` is required: the protocol version as an unsigned "
             "integer (this broker speaks 1)");
        goto done;
    }
    if (v->via.u64 != 1) {
        NACK(p, &m, CAREHUB_E_VERSION, "/v", "protocol version %llu is not supported; this broker speaks 1",
             (unsigned long long)v->via.u64);
        goto done;
    }
    if (!frame_str(frame_map_get(m.map, "op"), &str, &n)) {
        NACK(p, &m, CAREHUB_E_MALFORMED, "/op", "`op` is required: the operation name as a string");
        goto done;
    }
    const struct op_def *op = NULL;
    for (size_t i = 0; i < UTIL_ARRAY_LEN(OPS); i++)
        if (strlen(OPS[i].name) == n && memcmp(OPS[i].name, str, n) == 0 &&
            (!OPS[i].test_only || clock_is_test()))
            op = &OPS[i];
    if (!op) {
        NACK(p, &m, CAREHUB_E_UNKNOWN_OP, "/op", "unknown op; this broker knows: hello, ping, pong, event, case_ack, case_update, received, query");
        goto done;
    }
    if (op->needs_hello && !s->agent) {
        if (op->handler != op_pong && op->handler != op_received) /* no reply, not even a nack */
            NACK(p, &m, CAREHUB_E_HELLO_REQUIRED, NULL,
                 "say hello on this connection first (the broker may have restarted), then resend");
        goto done;
    }
    op->handler(p, &m);
done:
    msgpack_unpacked_destroy(&u);
    return p->n_batch;
}

/* ---- batch commit ----------------------------------------------------------- */

static void staged_free(staged_t *st)
{
    free(st->child_id);
    free(st->body);
    json_decref(st->json);
    st->child_id = NULL;
    st->body = NULL;
    st->json = NULL;
}

/* Inside the batch transaction: route each new event to its agencies. */
static int route_stored(store_txn_t *t, store_event_t *item, void *ud)
{
    proto_t *p = ud;
    staged_t *st = &p->batch[item - p->items];
    metrics_event(p->metrics, item->type); /* counted again if the map grows: rare, and only then */
    return assign_on_event(p->cfg, t, item, st->json, item->received, &p->fx);
}

void proto_flush(proto_t *p)
{
    if (p->n_batch == 0)
        return;
    store_event_t *items = p->items;
    for (size_t i = 0; i < p->n_batch; i++)
        items[i] = p->batch[i].item;
    assign_effects_clear(&p->fx); /* the callback may run again if the map grows */
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    store_rc_t rc = store_put_events(p->store, items, p->n_batch, route_stored, p);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    if (rc == STORE_OK)
        metrics_commit(p->metrics, (double)(t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9);
    size_t stored = 0, dup = 0, refused = 0;
    for (size_t i = 0; i < p->n_batch; i++) {
        staged_t *st = &p->batch[i];
        store_event_t *it = &items[i];
        if (rc != STORE_OK) {
            nack_to(p, st->rid, st->rid_len, st->ref, CAREHUB_E_UNAVAILABLE, NULL,
                    "the broker cannot store events right now (%s); nothing was stored, retry later",
                    store_strerror(rc));
        } else if (it->status == STORE_ITEM_REFUSED) {
            char field[600];
            util_fmt(field, sizeof field, "/body%s", st->verr.path);
            nack_to(p, st->rid, st->rid_len, st->ref, CAREHUB_E_INVALID, field, "%s %s", field,
                    st->verr.message);
            refused++;
        } else {
            frame_out_t o;
            frame_out_message(&o, "ack", st->ref, 3);
            frame_out_str(&o, "event", it->event_id);
            frame_out_str(&o, "case", it->case_id);
            frame_out_bool(&o, "duplicate", it->status == STORE_ITEM_DUPLICATE);
            send_out(p, st->rid, st->rid_len, &o);
            if (it->status == STORE_ITEM_DUPLICATE)
                dup++;
            else
                stored++;
        }
        staged_free(st);
    }
    if (rc == STORE_OK && p->deliver)
        deliver_effects(p->deliver, &p->fx);
    log_debug("proto: batch of %zu: %zu stored, %zu duplicate, %zu invalid%s", p->n_batch, stored,
              dup, refused, rc == STORE_OK ? "" : " (store failed: all refused as unavailable)");
    p->n_batch = 0;
}

void proto_set_metrics(proto_t *p, metrics_t *m)
{
    p->metrics = m;
}

void proto_set_deliver(proto_t *p, deliver_t *d)
{
    p->deliver = d;
}

size_t proto_pending(const proto_t *p)
{
    return p->n_batch;
}

int proto_ping(proto_t *p, session_t *s)
{
    char id[32];
    util_fmt(id, sizeof id, "ping-%llu", (unsigned long long)++p->ping_seq);
    frame_out_t o;
    frame_out_message(&o, "ping", id, 0);
    int rc = p->send(p->send_ud, s->rid, s->rid_len, o.sb.data, o.sb.size);
    frame_out_end(&o);
    return rc;
}

proto_t *proto_new(const config_t *cfg, const schema_set_t *schemas, store_t *store,
                   proto_send_fn send, void *send_ud)
{
    proto_t *p = xcalloc(1, sizeof *p);
    p->deliver = NULL;
    p->cfg = cfg;
    p->schemas = schemas;
    p->store = store;
    p->send = send;
    p->send_ud = send_ud;
    p->batch = xcalloc(PROTO_BATCH_MAX, sizeof *p->batch);
    p->items = xcalloc(PROTO_BATCH_MAX, sizeof *p->items);
    return p;
}

void proto_destroy(proto_t **pp)
{
    if (!pp || !*pp)
        return;
    proto_t *p = *pp;
    for (size_t i = 0; i < p->n_batch; i++)
        staged_free(&p->batch[i]);
    free(p->batch);
    free(p->items);
    assign_effects_free(&p->fx);
    free(p);
    *pp = NULL;
}
