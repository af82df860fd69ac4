/*
 * proto_event.c — the `event` op (PROTOCOL §4): who may send which type, the
 * checks and schema validation of one event, its staging in a batch, and the
 * batch's commit as one op of the loop's turn and its answers (see proto.h).
 */
#include "proto_int.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "assign.h"
#include "case.h"
#include "carehub_wire.h"
#include "clock.h"
#include "log.h"
#include "register.h"
#include "silence.h"
#include "util.h"

/* One staged event: the store item plus the copies it points into. */
typedef struct {
    case_event_t item;
    unsigned char rid[SESSION_ROUTING_MAX]; /* where to answer */
    size_t rid_len;
    char ref[CAREHUB_ID_MAX + 1];          /* the agent's message id */
    char type[CAREHUB_ID_MAX + 1];
    char *child_id;        /* owned, or NULL */
    char *body;            /* owned packed msgpack */
    size_t body_len;
    json_t *json;          /* the validated body, for routing inside the commit */
    schema_error_t verr;   /* why the body is invalid (item.refuse) */
} staged_t;

/* One batch of staged events, queued as an op of the loop's turn (turn.h) by
 * proto_flush() and answered by its `done` after the turn's commit. Batches
 * are reused (a free list): at most a few exist at once. */
struct proto_batch {
    proto_t *p;
    assign_effects_t *fx;  /* the turn's effects, while its transaction runs */
    size_t n;
    proto_batch_t *next_free;
    staged_t staged[PROTO_BATCH_MAX];
    case_event_t items[PROTO_BATCH_MAX]; /* the store's view of the batch */
};

/* Which roles may send which event type (PROTOCOL §4). A type with a schema
 * but no row here may be sent by no role. */
static const struct {
    const char *type;
    unsigned roles;
} EVENT_ROLES[] = {
    {"absence", 1u << ROLE_SCHOOL},
    {"mandatory_report", 1u << ROLE_SCHOOL | 1u << ROLE_REPORTER | 1u << ROLE_DIRECTOR},
    {"online_risk", 1u << ROLE_MONITOR},
    {"enrolment", 1u << ROLE_DIRECTOR},
    {"visit", 1u << ROLE_DIRECTOR},
    /* visit_overdue: recorded by the broker itself (register.c); no role sends it */
};

static int role_may_send(config_role_t role, const char *type)
{
    for (size_t i = 0; i < UTIL_ARRAY_LEN(EVENT_ROLES); i++)
        if (strcmp(EVENT_ROLES[i].type, type) == 0)
            return (EVENT_ROLES[i].roles >> role) & 1u;
    return 0;
}

static void staged_free(staged_t *st)
{
    free(st->child_id);
    free(st->body);
    json_decref(st->json);
    st->child_id = NULL;
    st->body = NULL;
    st->json = NULL;
}

static proto_batch_t *batch_get(proto_t *p)
{
    proto_batch_t *b = p->free_batches;
    if (b)
        p->free_batches = b->next_free;
    else
        b = xcalloc(1, sizeof *b);
    b->p = p;
    b->n = 0;
    b->next_free = NULL;
    return b;
}

/* The i-th loaded event type, for the lists in nack texts (proto_join). */
static const char *schema_name(const void *schemas, size_t i)
{
    return schema_set_name(schemas, i);
}

/* event {type, at, body}: checked here, validated against the type's schema and
 * staged; answered after the batch's commit (proto_flush). */
void proto_op_event(proto_t *p, proto_msg_t *m)
{
    const char *s;
    size_t n;
    char type[CAREHUB_ID_MAX + 1];
    char known[512];
    if (!frame_str(frame_map_get(m->map, "type"), &s, &n)) {
        proto_join(known, sizeof known, schema_name, p->schemas, schema_set_count(p->schemas), 1);
        PROTO_NACK(p, m, CAREHUB_E_INVALID, "/type",
                   "`type` is required: the event type as a string, e.g. %s", known);
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
        proto_join(known, sizeof known, schema_name, p->schemas, schema_set_count(p->schemas), 0);
        PROTO_NACK(p, m, CAREHUB_E_UNKNOWN_TYPE, "/type",
                   "no schema for event type \"%s\"; known types: %s", type, known);
        return;
    }
    if (!role_may_send(m->s->agent->role, type)) {
        PROTO_NACK(p, m, CAREHUB_E_FORBIDDEN, "/type",
                   "agent %s has role %s, which may not send %s events", m->s->agent->id,
                   config_role_name(m->s->agent->role), type);
        return;
    }
    int64_t at;
    if (!frame_int(frame_map_get(m->map, "at"), &at) || at < 0) {
        PROTO_NACK(p, m, CAREHUB_E_INVALID, "/at", "`at` is required: when it was observed, as an "
                   "integer of milliseconds since the Unix epoch (UTC)");
        return;
    }
    const msgpack_object *bo = frame_map_get(m->map, "body");
    if (!bo || bo->type != MSGPACK_OBJECT_MAP) {
        PROTO_NACK(p, m, CAREHUB_E_INVALID, "/body", "`body` is required and must be a map that "
                   "matches the %s schema (see docs/schemas.md)", type);
        return;
    }
    if (p->cur && p->cur->n == PROTO_BATCH_MAX)
        proto_flush(p); /* the loop flushes first; this keeps the bound whatever calls us */
    if (!p->cur)
        p->cur = batch_get(p);
    staged_t *st = &p->cur->staged[p->cur->n];
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
        int v = case_severity_parse(json_string_value(sev), json_string_length(sev));
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
    p->cur->n++;
}

/* ---- batch commit ----------------------------------------------------------- */

/* Inside the turn's transaction: route each new event to its agencies. */
static int route_stored(store_txn_t *t, case_event_t *item, void *ud)
{
    proto_batch_t *b = ud;
    staged_t *st = &b->staged[item - b->items];
    int rc = assign_on_event(b->p->cfg, t, item, st->json, item->received, b->fx);
    return rc ? rc : register_on_event(b->p->cfg, t, item, st->json, item->received, b->fx);
}

static int batch_fn(store_txn_t *t, assign_effects_t *fx, void *ud)
{
    proto_batch_t *b = ud;
    int64_t first = INT64_MAX;
    for (size_t i = 0; i < b->n; i++) {
        b->items[i] = b->staged[i].item; /* afresh on every run */
        if (b->items[i].received < first)
            first = b->items[i].received;
    }
    b->fx = fx;
    /* Silences (PROTOCOL §10): read from the store in this transaction, so that
     * one created or expired by an op before this batch counts. */
    silence_set_t *sil = NULL;
    int rc = silence_load(t, first, &sil);
    if (rc)
        return rc;
    for (size_t i = 0; i < b->n; i++)
        if (!b->items[i].refuse)
            b->items[i].silenced = silence_find(sil, b->items[i].type, b->staged[i].json,
                                                b->items[i].received);
    rc = case_txn_put_events(t, b->items, b->n, route_stored, b);
    for (size_t i = 0; i < b->n; i++)
        b->items[i].silenced = NULL; /* pointed into sil */
    silence_set_free(&sil);
    return rc;
}

/* After the turn's commit: answer every event of the batch. */
static void batch_done(void *ud, store_rc_t rc)
{
    proto_batch_t *b = ud;
    proto_t *p = b->p;
    size_t stored = 0, dup = 0, refused = 0;
    for (size_t i = 0; i < b->n; i++) {
        staged_t *st = &b->staged[i];
        case_event_t *it = &b->items[i];
        if (rc != STORE_OK) {
            proto_nack_to(p, st->rid, st->rid_len, st->ref, CAREHUB_E_UNAVAILABLE, NULL,
                          "the broker cannot store events right now (%s); nothing was stored, "
                          "retry later", store_strerror(rc));
        } else if (it->status == CASE_ITEM_REFUSED) {
            char field[600];
            util_fmt(field, sizeof field, "/body%s", st->verr.path);
            proto_nack_to(p, st->rid, st->rid_len, st->ref, CAREHUB_E_INVALID, field, "%s %s",
                          field, st->verr.message);
            refused++;
        } else {
            frame_out_t o;
            frame_out_message(&o, "ack", st->ref, 3);
            frame_out_str(&o, "event", it->event_id);
            frame_out_str(&o, "case", it->case_id);
            frame_out_bool(&o, "duplicate", it->status == CASE_ITEM_DUPLICATE);
            proto_send_out(p, st->rid, st->rid_len, &o);
            if (it->status == CASE_ITEM_DUPLICATE) {
                dup++;
            } else {
                stored++;
                metrics_event(p->metrics, it->type); /* committed and synced: counted once */
            }
        }
        staged_free(st);
    }
    log_debug("proto: batch of %zu: %zu stored, %zu duplicate, %zu invalid%s", b->n, stored, dup,
              refused, rc == STORE_OK ? "" : " (store failed: all refused as unavailable)");
    b->n = 0;
    b->next_free = p->free_batches;
    p->free_batches = b;
}

void proto_flush(proto_t *p)
{
    if (!p->cur || p->cur->n == 0)
        return;
    turn_add(p->turn, batch_fn, batch_done, p->cur);
    p->cur = NULL;
}

size_t proto_pending(const proto_t *p)
{
    return p->cur ? p->cur->n : 0;
}

void proto_batches_free(proto_t *p)
{
    if (p->cur) {
        for (size_t i = 0; i < p->cur->n; i++)
            staged_free(&p->cur->staged[i]);
        free(p->cur);
        p->cur = NULL;
    }
    while (p->free_batches) {
        proto_batch_t *b = p->free_batches;
        p->free_batches = b->next_free;
        free(b);
    }
}
