/*
 * proto.c — envelope checks, the op table, replies and nacks, and the ops but
 * `event` (hello, ping, pong, case_ack, case_update, received, query,
 * test_clock); see proto.h. The event op and its batches: proto_event.c;
 * silence and silence_expire: proto_silence.c.
 */
#include "proto_int.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <string.h>

#include "assign.h"
#include "carehub_wire.h"
#include "clock.h"
#include "job.h"
#include "query.h"
#include "log.h"
#include "util.h"

/* ---- replies ---------------------------------------------------------------- */

/* A reply that cannot be sent is lost only to a peer that is gone, or one that
 * stopped reading while it kept sending (its queue, broker.peer_queue, is full): it
 * re-sends what was not answered and is told duplicate:true. Counted and logged,
 * never silent. */
void proto_send_out(proto_t *p, const unsigned char *rid, size_t rid_len, frame_out_t *o)
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

void proto_nack_to(proto_t *p, const unsigned char *rid, size_t rid_len, const char *id,
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
    proto_send_out(p, rid, rid_len, &o);
}

void proto_join(char *buf, size_t size, const char *(*name)(const void *ctx, size_t i),
                const void *ctx, size_t n, int quoted)
{
    size_t total = 0, k = 0, len = 0;
    for (size_t i = 0; i < n; i++)
        total += name(ctx, i) != NULL;
    buf[0] = '\0';
    if (total == 0)
        util_fmt(buf, size, "(none)");
    for (size_t i = 0; i < n && len + 1 < size; i++) {
        const char *nm = name(ctx, i);
        if (!nm)
            continue;
        const char *sep = k == 0 ? "" : quoted && k + 1 == total ? " or " : ", ";
        const char *q = quoted ? "\"" : "";
        util_fmt(buf + len, size - len, "%s%s%s%s", sep, q, nm, q);
        len += strlen(buf + len);
        k++;
    }
}

/* ---- handlers --------------------------------------------------------------- */

typedef struct {
    proto_t *p;
    unsigned char rid[SESSION_ROUTING_MAX];
    size_t rid_len;
} hello_op_t;

static void hello_done(void *ud, store_rc_t rc)
{
    (void)rc; /* pushes read what is committed, whatever this turn did */
    hello_op_t *c = ud;
    deliver_on_hello_of(c->p->deliver, c->rid, c->rid_len);
    free(c);
}

/* welcome's `agencies`: {id: name} of the configured agencies that have a name. */
static void pack_agency_names(frame_out_t *o, const config_t *cfg)
{
    uint32_t n = 0;
    for (size_t i = 0; i < cfg->n_agencies; i++)
        n += cfg->agencies[i].name && cfg->agencies[i].name[0];
    frame_out_key(o, "agencies");
    msgpack_pack_map(&o->pk, n);
    for (size_t i = 0; i < cfg->n_agencies; i++) {
        const config_agency_t *ag = &cfg->agencies[i];
        if (!ag->name || !ag->name[0])
            continue;
        frame_pack_cstr(&o->pk, ag->id);
        frame_pack_cstr(&o->pk, ag->name);
    }
}

static void op_hello(proto_t *p, proto_msg_t *m)
{
    const config_agent_t *agent;
    const char *name;
    size_t n;
    if (m->user_id) {
        /* CURVE: the agent is whoever owns the key; the message does not name it. */
        agent = m->user_id[0] ? config_find_agent(p->cfg, m->user_id) : NULL;
        if (!agent) {
            PROTO_NACK(p, m, CAREHUB_E_UNAUTHORIZED, NULL, "this key is not configured for any agent");
            return;
        }
    } else {
        if (!frame_str(frame_map_get(m->map, "agent"), &name, &n) || !util_valid_id(name, n)) {
            PROTO_NACK(p, m, CAREHUB_E_MALFORMED, "/agent",
                       "hello needs `agent`: your agent id as a string of 1-64 characters "
                       "[A-Za-z0-9._:-], as configured under `agents` on the broker");
            return;
        }
        char aid[CAREHUB_ID_MAX + 1];
        memcpy(aid, name, n);
        aid[n] = '\0';
        agent = config_find_agent(p->cfg, aid);
        if (!agent) {
            PROTO_NACK(p, m, CAREHUB_E_UNAUTHORIZED, "/agent",
                       "agent \"%s\" is not configured on this broker; ask the operator to add it "
                       "under `agents`", aid);
            return;
        }
    }
    m->s->agent = agent;
    log_info("proto: hello from agent %s (%s)", agent->id, config_role_name(agent->role));
    frame_out_t o;
    /* Extensions for the agents' displays (docs/protocol.md): the zone people read
     * times in, and the agencies' names for the roles that see agency ids. */
    int with_tz = p->cfg->timezone_set && p->cfg->timezone;
    int with_names = agent->role == ROLE_AGENCY || agent->role == ROLE_SUPERVISOR;
    frame_out_message(&o, "welcome", m->id, 4 + (uint32_t)with_tz + (uint32_t)with_names);
    frame_out_str(&o, "agent", agent->id);
    frame_out_str(&o, "role", config_role_name(agent->role));
    frame_out_int(&o, "heartbeat_ms", p->cfg->heartbeat_ms);
    frame_out_int(&o, "max_message_bytes", (int64_t)p->cfg->max_message_bytes);
    if (with_tz)
        frame_out_str(&o, "timezone", p->cfg->timezone);
    if (with_names)
        pack_agency_names(&o, p->cfg);
    proto_send_out(p, m->s->rid, m->s->rid_len, &o);
    if (p->deliver) { /* what waited for this agent: after the welcome, and after this turn's
                       * commit, so that a `received` sent just before is not pushed again */
        hello_op_t *c = xcalloc(1, sizeof *c);
        c->p = p;
        memcpy(c->rid, m->s->rid, m->s->rid_len);
        c->rid_len = m->s->rid_len;
        turn_add(p->turn, NULL, hello_done, c);
    }
}

static void op_ping(proto_t *p, proto_msg_t *m)
{
    frame_out_t o;
    frame_out_message(&o, "pong", m->id, 0);
    proto_send_out(p, m->s->rid, m->s->rid_len, &o);
}

static void op_pong(proto_t *p, proto_msg_t *m)
{
    (void)p;
    (void)m; /* being heard is all a pong does: last_heard is already updated */
}

/* ---- agencies: case_ack and case_update (PROTOCOL §5) ---- */

/* One agency request, queued in the turn and answered after its commit. */
typedef struct {
    proto_t *p;
    unsigned char rid[SESSION_ROUTING_MAX];
    size_t rid_len;
    char id[CAREHUB_ID_MAX + 1];
    char assignment[CAREHUB_ID_MAX + 1], by[129], status[32], note[4097], to[CAREHUB_ID_MAX + 1];
    assign_request_t r;
} request_op_t;

static int request_fn(store_txn_t *t, assign_effects_t *fx, void *ud)
{
    request_op_t *c = ud;
    return assign_request(c->p->cfg, t, &c->r, fx);
}

static void request_done(void *ud, store_rc_t rc)
{
    request_op_t *c = ud;
    proto_t *p = c->p;
    assign_result_t res = rc == STORE_OK ? c->r.result : ASSIGN_STORE;
    switch (res) {
    case ASSIGN_OK: {
        frame_out_t o;
        frame_out_message(&o, "ack", c->id, 2);
        frame_out_str(&o, "assignment", c->assignment);
        frame_out_str(&o, "case", c->r.case_id);
        proto_send_out(p, c->rid, c->rid_len, &o);
        break;
    }
    case ASSIGN_NOT_FOUND:
        proto_nack_to(p, c->rid, c->rid_len, c->id, CAREHUB_E_NOT_FOUND, "/assignment",
                      "no assignment %s exists", c->assignment);
        break;
    case ASSIGN_FORBIDDEN:
        proto_nack_to(p, c->rid, c->rid_len, c->id, CAREHUB_E_FORBIDDEN, "/assignment",
                      "%s; your agency is %s", c->r.detail, c->r.agency);
        break;
    case ASSIGN_CONFLICT:
        proto_nack_to(p, c->rid, c->rid_len, c->id, CAREHUB_E_CONFLICT, "/status", "%s", c->r.detail);
        break;
    case ASSIGN_BAD_TARGET:
        proto_nack_to(p, c->rid, c->rid_len, c->id, CAREHUB_E_INVALID, "/to", "%s (got \"%s\")",
                      c->r.detail, c->to);
        break;
    case ASSIGN_STORE:
        proto_nack_to(p, c->rid, c->rid_len, c->id, CAREHUB_E_UNAVAILABLE, NULL,
                      "the broker cannot record this right now (%s); retry later",
                      store_strerror(rc == STORE_OK ? STORE_IO : rc));
        break;
    }
    free(c);
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

static void assignment_op(proto_t *p, proto_msg_t *m, int is_update)
{
    /* the op table let only agency agents with their agency through */
    request_op_t *c = xcalloc(1, sizeof *c);
    if (str_field(m->map, "assignment", c->assignment, sizeof c->assignment) != 1 ||
        !util_valid_id(c->assignment, strlen(c->assignment))) {
        PROTO_NACK(p, m, CAREHUB_E_INVALID, "/assignment",
                   "`assignment` is required: the id of the assignment, as in the `case` message's id");
        goto refused;
    }
    c->r = (assign_request_t){.agency = m->s->agent->agency, .assignment = c->assignment,
                              .now = clock_now_ms()};
    if (!is_update) {
        if (str_field(m->map, "by", c->by, sizeof c->by) < 0) {
            PROTO_NACK(p, m, CAREHUB_E_INVALID, "/by",
                       "`by` must be a string of at most 128 bytes: the officer");
            goto refused;
        }
        c->r.by = c->by[0] ? c->by : NULL;
    } else {
        const char *status = c->status;
        int st = str_field(m->map, "status", c->status, sizeof c->status);
        int to = st == 1 ? assign_update_status(status, strlen(status)) : -1;
        if (to < 0) {
            char list[128];
            assign_update_statuses(list, sizeof list);
            PROTO_NACK(p, m, CAREHUB_E_INVALID, "/status", "`status` is required: one of %s", list);
            goto refused;
        }
        if (str_field(m->map, "note", c->note, sizeof c->note) < 0) {
            PROTO_NACK(p, m, CAREHUB_E_INVALID, "/note", "`note` must be a string of at most 4096 bytes");
            goto refused;
        }
        int has_to = str_field(m->map, "to", c->to, sizeof c->to);
        if (to == AS_REFERRED && has_to != 1) {
            PROTO_NACK(p, m, CAREHUB_E_INVALID, "/to", "`referred` needs `to`: the agency the case goes to");
            goto refused;
        }
        c->r.status = status;
        c->r.note = c->note[0] ? c->note : NULL;
        c->r.to = has_to == 1 ? c->to : NULL;
    }
    c->p = p;
    memcpy(c->rid, m->s->rid, m->s->rid_len);
    c->rid_len = m->s->rid_len;
    memcpy(c->id, m->id, sizeof c->id);
    turn_add(p->turn, request_fn, request_done, c); /* answered after the turn's commit */
    return;
refused:
    free(c);
}

static void op_case_ack(proto_t *p, proto_msg_t *m)
{
    assignment_op(p, m, 0);
}

static void op_case_update(proto_t *p, proto_msg_t *m)
{
    assignment_op(p, m, 1);
}

typedef struct {
    const char *agent; /* the config's string */
    char id[CAREHUB_ID_MAX + 1];
} received_op_t;

static int received_fn(store_txn_t *t, assign_effects_t *fx, void *ud)
{
    (void)fx;
    received_op_t *c = ud;
    return assign_outcome_received(t, c->agent, c->id);
}

static void received_done(void *ud, store_rc_t rc)
{
    received_op_t *c = ud;
    if (rc != STORE_OK)
        log_warn("proto: could not record `received` %s from %s; the outcome will be sent again",
                 c->id, c->agent);
    free(c);
}

/* received {id}: the agent has the outcome with this id. No reply. */
static void op_received(proto_t *p, proto_msg_t *m)
{
    received_op_t *c = xcalloc(1, sizeof *c);
    c->agent = m->s->agent->id;
    memcpy(c->id, m->id, sizeof c->id);
    turn_add(p->turn, received_fn, received_done, c);
}

/* One query waiting for the turn's commit: it owns a copy of the request,
 * whose fields the query reads inside the transaction. */
typedef struct {
    proto_t *p;
    unsigned char rid[SESSION_ROUTING_MAX];
    size_t rid_len;
    char id[CAREHUB_ID_MAX + 1];
    char *frame;
    msgpack_unpacked u;
    query_t *q;
} query_op_t;

static const char *const QUERY_CODES[] = {
    [QUERY_FORBIDDEN] = CAREHUB_E_FORBIDDEN, [QUERY_NOT_FOUND] = CAREHUB_E_NOT_FOUND,
    [QUERY_INVALID] = CAREHUB_E_INVALID, [QUERY_UNAVAILABLE] = CAREHUB_E_UNAVAILABLE,
};

static void query_op_free(query_op_t *c)
{
    query_free(&c->q);
    msgpack_unpacked_destroy(&c->u);
    free(c->frame);
    free(c);
}

static int query_fn(store_txn_t *t, assign_effects_t *fx, void *ud)
{
    (void)fx;
    query_op_t *c = ud;
    return query_run(t, c->q);
}

static void query_done(void *ud, store_rc_t rc)
{
    query_op_t *c = ud;
    frame_out_t o;
    char why[512];
    const char *field;
    query_result_t r = query_end(c->q, rc, &o, why, sizeof why, &field);
    if (r == QUERY_OK)
        proto_send_out(c->p, c->rid, c->rid_len, &o);
    else
        proto_nack_to(c->p, c->rid, c->rid_len, c->id, QUERY_CODES[r], field, "%s", why);
    query_op_free(c);
}

/* A verify runs in a job's thread; its answer is sent from the loop. */
typedef struct {
    proto_t *p;
    unsigned char rid[SESSION_ROUTING_MAX];
    size_t rid_len;
    char id[CAREHUB_ID_MAX + 1];
    query_verify_t *v;
} verify_op_t;

static void verify_done(void *ud)
{
    verify_op_t *c = ud;
    frame_out_t o;
    char why[256];
    if (query_verify_answer(c->v, &o, why, sizeof why) == QUERY_OK)
        proto_send_out(c->p, c->rid, c->rid_len, &o);
    else
        proto_nack_to(c->p, c->rid, c->rid_len, c->id, CAREHUB_E_UNAVAILABLE, NULL, "%s", why);
    query_verify_free(&c->v);
    free(c);
}

static void verify_work(void *ud) /* in the job's thread */
{
    verify_op_t *c = ud;
    query_verify_work(c->v);
}

static void verify_start(proto_t *p, proto_msg_t *m)
{
    verify_op_t *c = xcalloc(1, sizeof *c);
    c->p = p;
    memcpy(c->rid, m->s->rid, m->s->rid_len);
    c->rid_len = m->s->rid_len;
    memcpy(c->id, m->id, sizeof c->id);
    c->v = query_verify_new(p->store, m->id);
    if (!p->jobs) { /* no job threads (unit tests): read here */
        query_verify_work(c->v);
        verify_done(c);
        return;
    }
    if (job_start(p->jobs, verify_work, verify_done, c) < 0) {
        query_verify_free(&c->v);
        free(c);
        PROTO_NACK(p, m, CAREHUB_E_UNAVAILABLE, NULL,
                   "%d verifies are running already; retry when one has answered", JOB_MAX);
    }
}

/* query {what: case|cases|trail|assignments|verify, …}: read cases under least
 * privilege (query.h); answered after the turn's commit, which holds the read's
 * trail record. */
static void op_query(proto_t *p, proto_msg_t *m)
{
    frame_out_t o;
    char why[512];
    const char *field;
    query_op_t *c = xcalloc(1, sizeof *c);
    c->p = p;
    memcpy(c->rid, m->s->rid, m->s->rid_len);
    c->rid_len = m->s->rid_len;
    memcpy(c->id, m->id, sizeof c->id);
    /* the frame was checked and decoded once already (proto_on_message) */
    c->frame = xmalloc(m->len ? m->len : 1);
    memcpy(c->frame, m->frame, m->len);
    msgpack_unpacked_init(&c->u);
    query_result_t r = QUERY_UNAVAILABLE;
    util_fmt(why, sizeof why, "the query could not be read again; retry");
    field = NULL;
    if (msgpack_unpack_next(&c->u, c->frame, m->len, NULL) == MSGPACK_UNPACK_SUCCESS)
        r = query_begin(p->cfg, p->store, p->budget, m->s->agent, c->id, &c->u.data, &o, why,
                        sizeof why, &field, &c->q);
    if (r == QUERY_OK && c->q) {
        turn_add(p->turn, query_fn, query_done, c);
        return;
    }
    query_op_free(c);
    if (r == QUERY_VERIFY) {
        verify_start(p, m);
        return;
    }
    PROTO_NACK(p, m, QUERY_CODES[r], field, "%s", why);
}

/* test_clock {set?: ms, advance?: ms} → {op:"clock", now}: moves the virtual
 * clock. Exists only in a broker started with --test-clock, and only for the agent
 * named by broker.test_clock_agent (docs/protocol.md). */
/* The `clock` reply: after the turn's commit, like every reply. */
typedef struct {
    proto_t *p;
    unsigned char rid[SESSION_ROUTING_MAX];
    size_t rid_len;
    char id[CAREHUB_ID_MAX + 1];
    int64_t now;
} clock_op_t;

static void clock_done(void *ud, store_rc_t rc)
{
    clock_op_t *c = ud;
    if (rc == STORE_OK) {
        frame_out_t o;
        frame_out_message(&o, "clock", c->id, 1);
        frame_out_int(&o, "now", c->now);
        proto_send_out(c->p, c->rid, c->rid_len, &o);
    } else {
        proto_nack_to(c->p, c->rid, c->rid_len, c->id, CAREHUB_E_UNAVAILABLE, NULL,
                      "the clock moved, but what fell due could not be recorded (%s); it fires when it "
                      "can", store_strerror(rc));
    }
    free(c);
}

static void op_test_clock(proto_t *p, proto_msg_t *m)
{
    int64_t v;
    const msgpack_object *set = frame_map_get(m->map, "set"), *adv = frame_map_get(m->map, "advance");
    proto_flush(p); /* what came before the clock moved is written before what it makes due */
    if ((set && (!frame_int(set, &v) || clock_set_ms(v) < 0)) ||
        (adv && (!frame_int(adv, &v) || clock_advance_ms(v) < 0))) {
        PROTO_NACK(p, m, CAREHUB_E_INVALID, set ? "/set" : "/advance",
                   "`set` takes a time in ms not before the clock's current time; `advance` takes "
                   "ms >= 0; neither may take the clock past the year 9999");
        return;
    }
    /* Everything that fell due fires in this turn, before any later message is handled. */
    if (p->deliver)
        deliver_fire_due(p->deliver, clock_now_ms(), 1);
    clock_op_t *c = xcalloc(1, sizeof *c);
    c->p = p;
    memcpy(c->rid, m->s->rid, m->s->rid_len);
    c->rid_len = m->s->rid_len;
    memcpy(c->id, m->id, sizeof c->id);
    c->now = clock_now_ms();
    turn_add(p->turn, NULL, clock_done, c);
}

/* The op table: every op the broker accepts and what the envelope checks for it, in
 * one place (the order is that of the list in the unknown_op nack). */
typedef void (*op_handler_t)(proto_t *, proto_msg_t *);
#define OP_HELLO     1u /* refused with hello_required before a hello on this connection */
#define OP_NO_REPLY  2u /* never answered: not even that nack */
#define OP_TEST_ONLY 4u /* exists only with the test clock (carehubd --test-clock), for the
                          * agent broker.test_clock_agent names; not listed */
#define ANY_ROLE ((1u << ROLE_COUNT) - 1)
static const struct op_def {
    const char *name;
    op_handler_t handler;
    unsigned flags;        /* OP_* */
    unsigned roles;        /* roles that may send it after their hello (1u << ROLE_*) */
    const char *forbidden; /* the forbidden nack's sentence for other roles */
} OPS[] = {
    {"hello", op_hello, 0, ANY_ROLE, NULL},
    {"ping", op_ping, OP_HELLO, ANY_ROLE, NULL},
    {"pong", op_pong, OP_HELLO | OP_NO_REPLY, ANY_ROLE, NULL},
    {"event", proto_op_event, OP_HELLO, ANY_ROLE, NULL}, /* which types: proto_event.c */
    {"case_ack", op_case_ack, OP_HELLO, 1u << ROLE_AGENCY,
     "only agency agents acknowledge or update assignments"},
    {"case_update", op_case_update, OP_HELLO, 1u << ROLE_AGENCY,
     "only agency agents acknowledge or update assignments"},
    {"received", op_received, OP_HELLO | OP_NO_REPLY, ANY_ROLE, NULL},
    {"query", op_query, OP_HELLO, ANY_ROLE, NULL}, /* what each role may read: query.c */
    {"silence", proto_op_silence, OP_HELLO, 1u << ROLE_SUPERVISOR,
     "only supervisors silence events (PROTOCOL §10)"},
    {"silence_expire", proto_op_silence_expire, OP_HELLO, 1u << ROLE_SUPERVISOR,
     "only supervisors silence events (PROTOCOL §10)"},
    {"test_clock", op_test_clock, OP_HELLO | OP_TEST_ONLY, ANY_ROLE, NULL},
};

/* 1 when agent `a` may send `op`. An agent of role agency counts as one only with
 * its agency (config.c requires it; a hand-built config may lack it). */
static int role_may_send_op(const struct op_def *op, const config_agent_t *a)
{
    if (!((op->roles >> a->role) & 1u))
        return 0;
    return op->roles == ANY_ROLE || a->role != ROLE_AGENCY || a->agency != NULL;
}

/* 1 when agent `a` may send a test-only op: it is broker.test_clock_agent. */
static int test_op_agent(const config_t *cfg, const config_agent_t *a)
{
    return cfg->test_clock_agent != NULL && strcmp(cfg->test_clock_agent, a->id) == 0;
}

/* The i-th op for the unknown_op nack's list; NULL for those not listed. */
static const char *op_listed(const void *ctx, size_t i)
{
    (void)ctx;
    return OPS[i].flags & OP_TEST_ONLY ? NULL : OPS[i].name;
}

/* ---- envelope --------------------------------------------------------------- */

size_t proto_on_message(proto_t *p, session_t *s, const void *frame, size_t len, int frames,
                        const char *user_id, int64_t now_ms)
{
    char peek[CAREHUB_ID_MAX + 1];
    const char *pid = frame_peek_id(frame, len, peek, sizeof peek) == 0 ? peek : NULL;
    s->last_heard = now_ms;
    s->last_pinged = 0;

    if (frames != 1) {
        proto_nack_to(p, s->rid, s->rid_len, pid, CAREHUB_E_MALFORMED, NULL,
                      "a message is exactly one frame holding one msgpack map; this one had %d frames",
                      frames);
        return proto_pending(p);
    }
    if (len > p->cfg->max_message_bytes) {
        proto_nack_to(p, s->rid, s->rid_len, pid, CAREHUB_E_TOO_LARGE, NULL,
                      "the message is %zu bytes; this broker takes at most %zu (broker.max_message_bytes)",
                      len, p->cfg->max_message_bytes);
        return proto_pending(p);
    }
    frame_rc_t frc = frame_check(frame, len);
    if (frc != FRAME_OK) {
        proto_nack_to(p, s->rid, s->rid_len, frc == FRAME_TRAILING || frc == FRAME_KEY_TYPE ? pid : NULL,
                      CAREHUB_E_MALFORMED, NULL, "%s", frame_strerror(frc));
        return proto_pending(p);
    }

    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    if (msgpack_unpack_next(&u, frame, len, NULL) != MSGPACK_UNPACK_SUCCESS) {
        proto_nack_to(p, s->rid, s->rid_len, NULL, CAREHUB_E_MALFORMED, NULL,
                      "the frame is not valid msgpack");
        goto done;
    }
    proto_msg_t m = {.s = s, .frame = frame, .len = len, .map = &u.data, .user_id = user_id, .now = now_ms};
    const char *str;
    size_t n;
    /* Under CURVE the key speaks, on every message, not only at hello: a session
     * bound to an agent whose message comes with another key (or none that is
     * configured) is unbound before anything is answered, so that it is judged
     * as a connection that has not said hello and nothing of that agent (its
     * cases, its pushes) reaches whoever sent it. */
    if (user_id && s->agent && strcmp(user_id, s->agent->id) != 0) {
        log_warn("proto: a message on agent %s's connection came with %s%s%s: the connection is "
                 "no longer that agent's until it says hello with its own key",
                 s->agent->id, user_id[0] ? "the key of " : "an unconfigured key",
                 user_id[0] ? "agent " : "", user_id);
        s->agent = NULL;
    }
    if (!frame_str(frame_map_get(m.map, "id"), &str, &n) || !util_valid_id(str, n)) {
        proto_nack_to(p, s->rid, s->rid_len, NULL, CAREHUB_E_MALFORMED, "/id",
                      "`id` is required: a string of 1-64 characters [A-Za-z0-9._:-]");
        goto done;
    }
    memcpy(m.id, str, n);
    m.id[n] = '\0';

    const msgpack_object *v = frame_map_get(m.map, "v");
    if (!v || v->type != MSGPACK_OBJECT_POSITIVE_INTEGER) {
        PROTO_NACK(p, &m, CAREHUB_E_MALFORMED, "/v", "`v` is required: the protocol version as an unsigned "
                   "integer (this broker speaks 1)");
        goto done;
    }
    if (v->via.u64 != 1) {
        PROTO_NACK(p, &m, CAREHUB_E_VERSION, "/v",
                   "protocol version %llu is not supported; this broker speaks 1",
                   (unsigned long long)v->via.u64);
        goto done;
    }
    if (!frame_str(frame_map_get(m.map, "op"), &str, &n)) {
        PROTO_NACK(p, &m, CAREHUB_E_MALFORMED, "/op", "`op` is required: the operation name as a string");
        goto done;
    }
    const struct op_def *op = NULL;
    for (size_t i = 0; i < UTIL_ARRAY_LEN(OPS); i++)
        if (strlen(OPS[i].name) == n && memcmp(OPS[i].name, str, n) == 0 &&
            (!(OPS[i].flags & OP_TEST_ONLY) || clock_is_test()))
            op = &OPS[i];
    if (!op) {
        char known[256];
        proto_join(known, sizeof known, op_listed, NULL, UTIL_ARRAY_LEN(OPS), 0);
        PROTO_NACK(p, &m, CAREHUB_E_UNKNOWN_OP, "/op", "unknown op; this broker knows: %s", known);
        goto done;
    }
    if ((op->flags & OP_HELLO) && !s->agent) {
        if (!(op->flags & OP_NO_REPLY))
            PROTO_NACK(p, &m, CAREHUB_E_HELLO_REQUIRED, NULL, "say hello on this connection first "
                       "(the broker may have restarted), then resend");
        goto done;
    }
    if ((op->flags & OP_HELLO) && !role_may_send_op(op, s->agent)) {
        PROTO_NACK(p, &m, CAREHUB_E_FORBIDDEN, NULL, "%s; agent %s has role %s",
                   op->forbidden ? op->forbidden : "this op is not for your role", s->agent->id,
                   config_role_name(s->agent->role));
        goto done;
    }
    if ((op->flags & OP_TEST_ONLY) && !test_op_agent(p->cfg, s->agent)) {
        PROTO_NACK(p, &m, CAREHUB_E_FORBIDDEN, NULL, "only the agent named by "
                   "broker.test_clock_agent moves the test clock; agent %s is not it", s->agent->id);
        goto done;
    }
    op->handler(p, &m);
done:
    msgpack_unpacked_destroy(&u);
    return proto_pending(p);
}

void proto_set_metrics(proto_t *p, metrics_t *m)
{
    p->metrics = m;
}

void proto_set_jobs(proto_t *p, job_set_t *jobs)
{
    p->jobs = jobs;
}

void proto_set_deliver(proto_t *p, deliver_t *d)
{
    p->deliver = d;
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
                   turn_t *turn, proto_send_fn send, void *send_ud)
{
    proto_t *p = xcalloc(1, sizeof *p);
    p->deliver = NULL;
    p->cfg = cfg;
    p->schemas = schemas;
    p->store = store;
    p->turn = turn;
    p->send = send;
    p->send_ud = send_ud;
    p->budget = budget_new();
    return p;
}

void proto_destroy(proto_t **pp)
{
    if (!pp || !*pp)
        return;
    proto_t *p = *pp;
    proto_batches_free(p);
    budget_destroy(&p->budget);
    free(p);
    *pp = NULL;
}
