/* assign.c — routing, the assignment state machine, deadlines, outbox, outcomes; see assign.h. */
#include "assign.h"

#include <errno.h>
#include <lmdb.h>
#include <msgpack.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "route.h"
#include "trail.h"
#include "util.h"

/* Bounds of what one assignment record carries from its workflow step. */
#define MAX_STEPS 8
#define MAX_NOTIFY 8
#define ID_LEN 65

static const char *STATE_NAMES[AS_STATE_COUNT] = {
    "open", "acknowledged", "in_progress", "resolved", "referred", "declined",
};

const char *assign_state_name(assign_state_t s)
{
    return s < AS_STATE_COUNT ? STATE_NAMES[s] : NULL;
}

int assign_state_parse(const char *s, size_t n)
{
    for (int i = 0; i < AS_STATE_COUNT; i++)
        if (strlen(STATE_NAMES[i]) == n && memcmp(STATE_NAMES[i], s, n) == 0)
            return i;
    return -1;
}

static int is_final(assign_state_t s)
{
    return s == AS_RESOLVED || s == AS_REFERRED || s == AS_DECLINED;
}

/* ---- effects ----------------------------------------------------------------- */

#define ADD_UNIQUE(arr, n, cap, width, val)                                   \
    do {                                                                      \
        size_t i_;                                                            \
        for (i_ = 0; i_ < (n); i_++)                                          \
            if (strcmp((arr)[i_], (val)) == 0)                                \
                break;                                                        \
        if (i_ == (n)) {                                                      \
            if ((n) == (cap)) {                                               \
                (cap) = (cap) ? (cap) * 2 : 16;                               \
                (arr) = xrealloc((arr), (cap) * sizeof *(arr));               \
            }                                                                 \
            util_fmt((arr)[(n)++], (width), "%s", (val));                     \
        }                                                                     \
    } while (0)

static void fx_deliver(assign_effects_t *e, const char *id)
{
    ADD_UNIQUE(e->deliver, e->n_deliver, e->cap_deliver, STORE_ID_MAX, id);
}

static void fx_outcome(assign_effects_t *e, const char *agent)
{
    ADD_UNIQUE(e->outcome_to, e->n_outcome_to, e->cap_outcome_to, ID_LEN, agent);
}

static void fx_webhook(assign_effects_t *e, const char *id)
{
    ADD_UNIQUE(e->webhooks, e->n_webhooks, e->cap_webhooks, ID_LEN, id);
}

void assign_effects_clear(assign_effects_t *e)
{
    e->n_deliver = e->n_outcome_to = e->n_webhooks = 0;
    e->deadlines_changed = 0;
    e->escalations = 0;
}

void assign_effects_free(assign_effects_t *e)
{
    free(e->deliver);
    free(e->outcome_to);
    free(e->webhooks);
    memset(e, 0, sizeof *e);
}

/* ---- the assignment record ---------------------------------------------------- */

typedef struct {
    int64_t after_ms;
    size_t n_notify;
    char notify[MAX_NOTIFY][ID_LEN];
} step_t;

/* What routing and resolution need of the other assignments of a case. */
typedef struct {
    char id[STORE_ID_MAX];
    char case_id[STORE_ID_MAX];
    char agency[ID_LEN];
    assign_state_t state;
} as_brief_t;

typedef struct {
    char id[STORE_ID_MAX];
    char case_id[STORE_ID_MAX];
    char agency[ID_LEN];
    char type[ID_LEN];      /* the case's event type */
    assign_state_t state;
    int severity;
    int64_t created, ack_by, acked_at, next_due;
    char by[129];
    char to[ID_LEN];
    char note[4097];
    int level;              /* escalation steps fired so far */
    size_t n_steps;
    step_t steps[MAX_STEPS];
} as_t;

static void copy_str(char *dst, size_t size, const msgpack_object *o)
{
    const char *s;
    size_t n;
    dst[0] = '\0';
    if (frame_str(o, &s, &n)) {
        if (n >= size)
            n = size - 1;
        memcpy(dst, s, n);
        dst[n] = '\0';
    }
}

static int64_t get_int(const msgpack_object *map, const char *key)
{
    int64_t v = 0;
    (void)frame_int(frame_map_get(map, key), &v); /* absent: 0 */
    return v;
}

/* The head of an assignment record (id, case, agency, state), the one reading of
 * those fields: 0 when the state is known and id and agency are there, else
 * MDB_CORRUPTED. Nothing sealed is opened. */
static int as_decode_head(const msgpack_object *m, as_brief_t *b)
{
    char st[32];
    memset(b, 0, sizeof *b);
    copy_str(b->id, sizeof b->id, frame_map_get(m, "id"));
    copy_str(b->case_id, sizeof b->case_id, frame_map_get(m, "case"));
    copy_str(b->agency, sizeof b->agency, frame_map_get(m, "agency"));
    copy_str(st, sizeof st, frame_map_get(m, "state"));
    int s = assign_state_parse(st, strlen(st));
    if (s < 0 || !b->id[0] || !b->agency[0])
        return MDB_CORRUPTED;
    b->state = (assign_state_t)s;
    return 0;
}

/* The whole record: the head (with its case required), the note opened, the plan. */
static int as_decode(store_txn_t *t, const void *data, size_t len, as_t *a)
{
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    int rc = MDB_CORRUPTED;
    memset(a, 0, sizeof *a);
    if (msgpack_unpack_next(&u, data, len, NULL) == MSGPACK_UNPACK_SUCCESS &&
        u.data.type == MSGPACK_OBJECT_MAP) {
        const msgpack_object *m = &u.data;
        as_brief_t h;
        int head = as_decode_head(m, &h);
        memcpy(a->id, h.id, sizeof a->id);
        memcpy(a->case_id, h.case_id, sizeof a->case_id);
        memcpy(a->agency, h.agency, sizeof a->agency);
        copy_str(a->type, sizeof a->type, frame_map_get(m, "type"));
        copy_str(a->by, sizeof a->by, frame_map_get(m, "by"));
        copy_str(a->to, sizeof a->to, frame_map_get(m, "to"));
        copy_str(a->note, sizeof a->note, frame_map_get(m, "note"));
        const msgpack_object *ne = frame_map_get(m, "note_enc");
        if (ne && ne->type == MSGPACK_OBJECT_BIN) { /* sealed note: open it */
            msgpack_sbuffer nb;
            msgpack_sbuffer_init(&nb);
            if (store_txn_open(t, a->id, ne->via.bin.ptr, ne->via.bin.size, &nb) == 0 && nb.size &&
                nb.size < sizeof a->note) {
                memcpy(a->note, nb.data, nb.size);
                a->note[nb.size] = '\0';
            }
            if (nb.data)
                sodium_memzero(nb.data, nb.alloc);
            msgpack_sbuffer_destroy(&nb);
        }
        a->severity = (int)get_int(m, "severity");
        a->created = get_int(m, "created");
        a->ack_by = get_int(m, "ack_by");
        a->acked_at = get_int(m, "acked_at");
        a->next_due = get_int(m, "next_due");
        a->level = (int)get_int(m, "level");
        const msgpack_object *plan = frame_map_get(m, "plan");
        if (plan && plan->type == MSGPACK_OBJECT_ARRAY) {
            for (uint32_t i = 0; i < plan->via.array.size && a->n_steps < MAX_STEPS; i++) {
                const msgpack_object *st_o = &plan->via.array.ptr[i];
                if (st_o->type != MSGPACK_OBJECT_ARRAY || st_o->via.array.size != 2)
                    continue;
                step_t *sp = &a->steps[a->n_steps++];
                (void)frame_int(&st_o->via.array.ptr[0], &sp->after_ms);
                const msgpack_object *nl = &st_o->via.array.ptr[1];
                if (nl->type == MSGPACK_OBJECT_ARRAY)
                    for (uint32_t j = 0; j < nl->via.array.size && sp->n_notify < MAX_NOTIFY; j++)
                        copy_str(sp->notify[sp->n_notify++], ID_LEN, &nl->via.array.ptr[j]);
            }
        }
        if (head == 0 && a->case_id[0]) {
            a->state = h.state;
            rc = 0;
        }
    }
    msgpack_unpacked_destroy(&u);
    return rc;
}

static int as_put(store_txn_t *t, const as_t *a)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 15);
    frame_pack_cstr(&pk, "id");       frame_pack_cstr(&pk, a->id);
    frame_pack_cstr(&pk, "case");     frame_pack_cstr(&pk, a->case_id);
    frame_pack_cstr(&pk, "agency");   frame_pack_cstr(&pk, a->agency);
    frame_pack_cstr(&pk, "type");     frame_pack_cstr(&pk, a->type);
    frame_pack_cstr(&pk, "state");    frame_pack_cstr(&pk, assign_state_name(a->state));
    frame_pack_cstr(&pk, "severity"); msgpack_pack_int(&pk, a->severity);
    frame_pack_cstr(&pk, "created");  msgpack_pack_int64(&pk, a->created);
    frame_pack_cstr(&pk, "ack_by");   msgpack_pack_int64(&pk, a->ack_by);
    frame_pack_cstr(&pk, "acked_at"); msgpack_pack_int64(&pk, a->acked_at);
    frame_pack_cstr(&pk, "next_due"); msgpack_pack_int64(&pk, a->next_due);
    frame_pack_cstr(&pk, "by");       frame_pack_cstr(&pk, a->by);
    frame_pack_cstr(&pk, "to");       frame_pack_cstr(&pk, a->to);
    msgpack_sbuffer sealed;
    msgpack_sbuffer_init(&sealed);
    if (a->note[0])
        (void)store_txn_seal(t, a->id, a->note, strlen(a->note), &sealed); /* cannot fail */
    if (sealed.size && sealed.data[0] == 0) { /* sealed: the agency's free text is not kept in the clear */
        frame_pack_cstr(&pk, "note_enc");
        msgpack_pack_bin(&pk, sealed.size);
        msgpack_pack_bin_body(&pk, sealed.data, sealed.size);
    } else {
        frame_pack_cstr(&pk, "note");
        frame_pack_cstr(&pk, a->note);
    }
    msgpack_sbuffer_destroy(&sealed);
    frame_pack_cstr(&pk, "level");    msgpack_pack_int(&pk, a->level);
    frame_pack_cstr(&pk, "plan");
    msgpack_pack_array(&pk, a->n_steps);
    for (size_t i = 0; i < a->n_steps; i++) {
        msgpack_pack_array(&pk, 2);
        msgpack_pack_int64(&pk, a->steps[i].after_ms);
        msgpack_pack_array(&pk, a->steps[i].n_notify);
        for (size_t j = 0; j < a->steps[i].n_notify; j++)
            frame_pack_cstr(&pk, a->steps[i].notify[j]);
    }
    int rc = store_put(t, STORE_DB_ASSIGNMENTS, a->id, strlen(a->id), sb.data, sb.size, 0);
    if (rc == 0) {
        char kind[48];
        util_fmt(kind, sizeof kind, "assignment_%s", assign_state_name(a->state));
        rc = trail_append(t, a->case_id, kind, a->state == AS_OPEN ? "broker" : a->agency,
                          STORE_DB_ASSIGNMENTS, a->id, sb.data, sb.size, a->by[0] ? a->by : NULL);
    }
    msgpack_sbuffer_destroy(&sb);
    return rc;
}

static int as_get(store_txn_t *t, const char *id, as_t *a)
{
    const void *v;
    size_t vl;
    int rc = store_get(t, STORE_DB_ASSIGNMENTS, id, strlen(id), &v, &vl);
    return rc ? rc : as_decode(t, v, vl, a);
}

/* Deadline index key: due (8 bytes big-endian) + assignment id. */
static size_t deadline_key(unsigned char *k, int64_t due, const char *id)
{
    uint64_t d = (uint64_t)(due < 0 ? 0 : due);
    for (int i = 7; i >= 0; i--, d >>= 8)
        k[i] = (unsigned char)(d & 0xff);
    size_t n = strlen(id);
    memcpy(k + 8, id, n);
    return 8 + n;
}

/* pending key: agency NUL assignment id. */
static size_t pending_key(char *k, size_t size, const char *agency, const char *id)
{
    util_fmt(k, size, "%s", agency);
    size_t a = strlen(k);
    util_fmt(k + a + 1, size - a - 1, "%s", id);
    return a + 1 + strlen(k + a + 1);
}

/* ---- figures kept as they change (metrics read them without a scan) -------------- */

#define OPEN_COUNTER "assignments.open"

/* ack_due key: ack_by (8 bytes big-endian) + the assignment id. */
static size_t ack_due_key(unsigned char *k, size_t size, int64_t ack_by, const char *id)
{
    size_t il = strlen(id);
    if (8 + il > size)
        return 0;
    uint64_t x = (uint64_t)(ack_by < 0 ? 0 : ack_by);
    for (int i = 7; i >= 0; i--, x >>= 8)
        k[i] = (unsigned char)(x & 0xff);
    memcpy(k + 8, id, il);
    return 8 + il;
}

static int ack_due_put(store_txn_t *t, const as_t *a, int del)
{
    unsigned char k[8 + ID_LEN];
    size_t kl = ack_due_key(k, sizeof k, a->ack_by, a->id);
    if (!kl)
        return MDB_BAD_VALSIZE;
    return del ? store_del(t, STORE_DB_ACK_DUE, k, kl, NULL, 0)
               : store_put(t, STORE_DB_ACK_DUE, k, kl, "", 0, 0);
}

/* Add d (+1, -1) to the count of assignments not final. */
static int open_count_add(store_txn_t *t, int d)
{
    const void *v;
    size_t vl;
    uint64_t n = 0;
    int rc = store_get(t, STORE_DB_COUNTERS, OPEN_COUNTER, strlen(OPEN_COUNTER), &v, &vl);
    if (rc == 0 && vl == sizeof n)
        memcpy(&n, v, sizeof n);
    else if (rc == 0 || rc != MDB_NOTFOUND)
        return rc ? rc : MDB_CORRUPTED;
    n = d < 0 && n == 0 ? 0 : n + (uint64_t)(int64_t)d;
    return store_put(t, STORE_DB_COUNTERS, OPEN_COUNTER, strlen(OPEN_COUNTER), &n, sizeof n, 0);
}

/* Schedule the next escalation step (or none) and keep the index in step. */
static int schedule(store_txn_t *t, as_t *a, assign_effects_t *fx)
{
    unsigned char k[8 + STORE_ID_MAX];
    int rc;
    if (a->next_due && (rc = store_del(t, STORE_DB_DEADLINES, k, deadline_key(k, a->next_due, a->id),
                                       NULL, 0)))
        return rc;
    a->next_due = 0;
    if (a->state == AS_OPEN && (size_t)a->level < a->n_steps) {
        a->next_due = a->ack_by + a->steps[a->level].after_ms;
        if (a->next_due <= 0)
            a->next_due = 1;
        if ((rc = store_put(t, STORE_DB_DEADLINES, k, deadline_key(k, a->next_due, a->id), "", 0, 0)))
            return rc;
    }
    fx->deadlines_changed = 1;
    return 0;
}

/* The one place an assignment's state changes. */
static int set_state(store_txn_t *t, as_t *a, assign_state_t to, int64_t now, assign_effects_t *fx)
{
    assign_state_t from = a->state;
    int rc;
    if (from == to)
        return 0;
    log_debug("assign: %s (%s, %s) %s -> %s", a->id, a->case_id, a->agency, assign_state_name(from),
             assign_state_name(to));
    a->state = to;
    if (!is_final(from) && is_final(to) && (rc = open_count_add(t, -1)))
        return rc;
    if (from == AS_OPEN) {
        char k[2 * ID_LEN + 2];
        a->acked_at = now;
        if ((rc = store_del(t, STORE_DB_PENDING, k, pending_key(k, sizeof k, a->agency, a->id), NULL, 0)) ||
            (rc = ack_due_put(t, a, 1)))
            return rc;
        if ((rc = schedule(t, a, fx))) /* acknowledged: escalation stops */
            return rc;
    }
    return 0;
}

/* ---- webhook notices ---------------------------------------------------------- */

static void rfc3339(int64_t ms, char *buf, size_t size)
{
    time_t s = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&s, &tm);
    char base[32];
    strftime(base, sizeof base, "%Y-%m-%dT%H:%M:%S", &tm);
    util_fmt(buf, size, "%s.%03dZ", base, (int)(ms % 1000));
}

/* Queue one notice in the outbox: {type, timestamp, data} as JSON, for channel ch. */
static int outbox_put(store_txn_t *t, const config_channel_t *ch, const char *case_id,
                      const char *type, json_t *data, int64_t now, assign_effects_t *fx)
{
    unsigned char rnd[12];
    char hex[25], wid[ID_LEN], ts[40];
    randombytes_buf(rnd, sizeof rnd);
    sodium_bin2hex(hex, sizeof hex, rnd, sizeof rnd);
    util_fmt(wid, sizeof wid, "msg_%s", hex);
    rfc3339(now, ts, sizeof ts);
    json_t *msg = json_pack("{s:s, s:s, s:O}", "type", type, "timestamp", ts, "data", data);
    char *body = msg ? json_dumps(msg, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    json_decref(msg);
    if (!body)
        return ENOMEM; /* jansson out of memory: abort the transaction */
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 4);
    frame_pack_cstr(&pk, "channel"); frame_pack_cstr(&pk, ch->id);
    frame_pack_cstr(&pk, "case");    frame_pack_cstr(&pk, case_id);
    frame_pack_cstr(&pk, "body");    frame_pack_cstr(&pk, body);
    frame_pack_cstr(&pk, "created"); msgpack_pack_int64(&pk, now);
    int rc = store_put(t, STORE_DB_OUTBOX, wid, strlen(wid), sb.data, sb.size, 1);
    msgpack_sbuffer_destroy(&sb);
    free(body);
    if (rc == 0)
        rc = trail_append(t, case_id, "notice_queued", "broker", -1, NULL, NULL, 0, wid);
    if (rc == 0) {
        fx_webhook(fx, wid);
        log_debug("assign: %s queued for channel %s (%s, case %s)", wid, ch->id, type, case_id);
    }
    return rc;
}

/* Send `type` with `data` to a channel: one message for a webhook; one per
 * recipient, with `to` and `text` added, for an SMS gateway. */
static int notify_channel(store_txn_t *t, const config_channel_t *ch, const char *case_id,
                          const char *type, json_t *data, const char *text, int64_t now,
                          assign_effects_t *fx)
{
    if (ch->kind == CHANNEL_WEBHOOK)
        return outbox_put(t, ch, case_id, type, data, now, fx);
    for (size_t i = 0; i < ch->n_to; i++) {
        json_t *d = json_deep_copy(data);
        json_object_set_new(d, "to", json_string(ch->to[i]));
        json_object_set_new(d, "text", json_string(text));
        int rc = outbox_put(t, ch, case_id, type, d, now, fx);
        json_decref(d);
        if (rc)
            return rc;
    }
    return 0;
}

static const char *agency_name(const config_t *cfg, const char *id)
{
    const config_agency_t *ag = config_find_agency(cfg, id);
    return ag && ag->name ? ag->name : id;
}

/* case.assigned to the agency's own channels. */
static int tell_assigned(const config_t *cfg, store_txn_t *t, const as_t *a, int64_t now,
                         assign_effects_t *fx)
{
    const config_agency_t *ag = config_find_agency(cfg, a->agency);
    if (!ag || ag->n_channels == 0)
        return 0;
    json_t *data = json_pack("{s:s, s:s, s:s, s:s, s:s, s:I}", "case", a->case_id, "assignment",
                             a->id, "agency", a->agency, "event_type", a->type, "severity",
                             store_severity_name(a->severity), "ack_by", (json_int_t)a->ack_by);
    char text[512];
    util_fmt(text, sizeof text, "【carehub】新案件 %s 已分派给%s，请于时限内确认。", a->case_id,
             agency_name(cfg, a->agency));
    int rc = 0;
    for (size_t i = 0; i < ag->n_channels && !rc; i++) {
        const config_channel_t *ch = config_find_channel(cfg, ag->channels[i]);
        if (ch)
            rc = notify_channel(t, ch, a->case_id, "case.assigned", data, text, now, fx);
    }
    json_decref(data);
    return rc;
}

/* ---- making assignments -------------------------------------------------------- */

typedef struct {
    as_brief_t *list;
    size_t n, cap;
} as_list_t;

static int as_get_brief(store_txn_t *t, const char *id, as_brief_t *b)
{
    const void *v;
    size_t vl;
    int rc = store_get(t, STORE_DB_ASSIGNMENTS, id, strlen(id), &v, &vl);
    if (rc)
        return rc;
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    rc = msgpack_unpack_next(&u, v, vl, NULL) == MSGPACK_UNPACK_SUCCESS
             ? as_decode_head(&u.data, b)
             : MDB_CORRUPTED;
    msgpack_unpacked_destroy(&u);
    return rc;
}

static int collect_assignment(void *ud, const void *k, size_t kl, const void *v, size_t vl)
{
    (void)k;
    (void)kl;
    as_list_t *l = ud;
    (void)l; /* filled by the caller from the ids */
    char id[STORE_ID_MAX];
    if (store_copy_id(v, vl, id, sizeof id))
        return MDB_CORRUPTED;
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 8;
        l->list = xrealloc(l->list, l->cap * sizeof *l->list);
    }
    util_fmt(l->list[l->n++].id, STORE_ID_MAX, "%s", id);
    return 0;
}

/* Every assignment of a case, loaded. The caller frees l->list. */
static int case_assignments(store_txn_t *t, const char *case_id, as_list_t *l)
{
    memset(l, 0, sizeof *l);
    int rc = store_each(t, STORE_DB_CASE_ASSIGN, case_id, strlen(case_id), 1, collect_assignment, l);
    for (size_t i = 0; !rc && i < l->n; i++) {
        char id[STORE_ID_MAX];
        memcpy(id, l->list[i].id, sizeof id);
        rc = as_get_brief(t, id, &l->list[i]);
    }
    return rc;
}

/*
 * Make one assignment of a case to an agency. From a workflow (`spec`), not
 * when the case has any assignment for that agency (one per agency per case).
 * Handed over by a referral or a decline (`from`), not when the agency has
 * one still active; the new one keeps the urgency of the one it comes from
 * (its acknowledgement window and escalation steps).
 */
static int make_assignment(const config_t *cfg, store_txn_t *t, const char *case_id,
                           const char *type, int severity, const char *agency,
                           const config_assign_t *spec, const as_t *from, int64_t now,
                           as_list_t *existing, assign_effects_t *fx)
{
    for (size_t i = 0; i < existing->n; i++)
        if (strcmp(existing->list[i].agency, agency) == 0 &&
            (!from || !is_final(existing->list[i].state)))
            return 0;
    as_t a;
    memset(&a, 0, sizeof a);
    store_next_id(t, STORE_SEQ_ASSIGNMENT, a.id);
    util_fmt(a.case_id, sizeof a.case_id, "%s", case_id);
    util_fmt(a.agency, sizeof a.agency, "%s", agency);
    util_fmt(a.type, sizeof a.type, "%s", type);
    a.state = AS_OPEN;
    a.severity = severity;
    a.created = now;
    a.ack_by = now + (spec   ? spec->ack_within_ms
                      : from ? from->ack_by - from->created
                             : cfg->default_ack_within_ms);
    if (from) {
        a.n_steps = from->n_steps;
        memcpy(a.steps, from->steps, sizeof a.steps);
    } else if (spec) {
        if (spec->n_escalate > MAX_STEPS)
            log_warn("assign: workflow step for %s has %zu escalation steps; the first %d are used",
                     agency, spec->n_escalate, MAX_STEPS);
        for (size_t i = 0; i < spec->n_escalate && a.n_steps < MAX_STEPS; i++) {
            step_t *sp = &a.steps[a.n_steps++];
            sp->after_ms = spec->escalate[i].after_ms;
            for (size_t j = 0; j < spec->escalate[i].n_notify && sp->n_notify < MAX_NOTIFY; j++)
                util_fmt(sp->notify[sp->n_notify++], ID_LEN, "%s", spec->escalate[i].notify[j]);
        }
    }
    int rc;
    char pk[2 * ID_LEN + 2];
    if ((rc = schedule(t, &a, fx)) || (rc = as_put(t, &a)) ||
        (rc = store_put(t, STORE_DB_CASE_ASSIGN, case_id, strlen(case_id), a.id, strlen(a.id), 1)) ||
        (rc = store_put(t, STORE_DB_PENDING, pk, pending_key(pk, sizeof pk, agency, a.id), "", 0, 0)) ||
        (rc = ack_due_put(t, &a, 0)) || (rc = open_count_add(t, +1)) ||
        (rc = tell_assigned(cfg, t, &a, now, fx)))
        return rc;
    log_debug("assign: %s made: case %s to %s, ack by %lld", a.id, case_id, agency, (long long)a.ack_by);
    if (existing->n == existing->cap) {
        existing->cap = existing->cap ? existing->cap * 2 : 8;
        existing->list = xrealloc(existing->list, existing->cap * sizeof *existing->list);
    }
    as_brief_t *b = &existing->list[existing->n++];
    memcpy(b->id, a.id, sizeof b->id);
    memcpy(b->case_id, a.case_id, sizeof b->case_id);
    memcpy(b->agency, a.agency, sizeof b->agency);
    b->state = a.state;
    fx_deliver(fx, a.id);
    return 0;
}

/* Quiet close: a case without assignments closes after broker.quiet_close
 * without a new event. Its entry shares the deadline index (key: due + case
 * id); STORE_DB_QUIET holds the due time so a later event can move it. */
static int quiet_set(store_txn_t *t, const char *case_id, int64_t due, assign_effects_t *fx)
{
    const void *v;
    size_t vl;
    unsigned char k[8 + STORE_ID_MAX], d[8];
    int rc = store_get(t, STORE_DB_QUIET, case_id, strlen(case_id), &v, &vl);
    if (rc == MDB_NOTFOUND && due <= 0)
        return 0; /* nothing to cancel: the common case of an assigned case */
    if (rc == 0 && vl == 8) {
        uint64_t old = 0;
        for (int i = 0; i < 8; i++)
            old = (old << 8) | ((const unsigned char *)v)[i];
        if ((rc = store_del(t, STORE_DB_DEADLINES, k, deadline_key(k, (int64_t)old, case_id), NULL, 0)))
            return rc;
    } else if (rc && rc != MDB_NOTFOUND) {
        return rc;
    }
    fx->deadlines_changed = 1;
    if (due <= 0) /* cancel */
        return store_del(t, STORE_DB_QUIET, case_id, strlen(case_id), NULL, 0);
    deadline_key(d, due, ""); /* the 8-byte big-endian time */
    if ((rc = store_put(t, STORE_DB_QUIET, case_id, strlen(case_id), d, 8, 0)))
        return rc;
    return store_put(t, STORE_DB_DEADLINES, k, deadline_key(k, due, case_id), "", 0, 0);
}

int assign_on_event(const config_t *cfg, store_txn_t *t, const store_event_t *it,
                    const json_t *body, int64_t now, assign_effects_t *fx)
{
    route_hit_t hits[32];
    int matched;
    size_t n = route_match(cfg, it->type, body, hits, UTIL_ARRAY_LEN(hits), &matched);
    as_list_t existing;
    int rc = case_assignments(t, it->case_id, &existing);
    for (size_t i = 0; !rc && i < n; i++)
        rc = make_assignment(cfg, t, it->case_id, it->type, it->severity, hits[i].assign->agency,
                             hits[i].assign, NULL, now, &existing, fx);
    if (!rc && !matched && existing.n == 0 && cfg->fallback_agency &&
        config_find_agency(cfg, cfg->fallback_agency)) /* none configured: nobody to assign */
        rc = make_assignment(cfg, t, it->case_id, it->type, it->severity, cfg->fallback_agency,
                             NULL, NULL, now, &existing, fx);
    /* No assignment (assign: []): the case closes by itself unless events keep coming. */
    if (!rc)
        rc = quiet_set(t, it->case_id, existing.n ? 0 : it->received + cfg->quiet_close_ms, fx);
    /* A new event joined: the agencies that have not acknowledged see it again. */
    for (size_t i = 0; !rc && i < existing.n; i++)
        if (existing.list[i].state == AS_OPEN)
            fx_deliver(fx, existing.list[i].id);
    free(existing.list);
    return rc;
}

/* ---- resolution and outcomes --------------------------------------------------- */

typedef struct {
    store_txn_t *t;
    const char *case_id;
    const char *note;
    assign_effects_t *fx;
    int rc;
} outcome_ctx_t;

/* One event of a resolved case: its agent is told the outcome. */
static int outcome_for_event(void *ud, const void *k, size_t kl, const void *v, size_t vl)
{
    (void)k;
    (void)kl;
    outcome_ctx_t *c = ud;
    const void *rec;
    size_t rl;
    char ev[STORE_ID_MAX];
    if (store_copy_id(v, vl, ev, sizeof ev))
        return MDB_CORRUPTED;
    int rc = store_get(c->t, STORE_DB_EVENTS, ev, vl, &rec, &rl);
    if (rc)
        return rc;
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    char agent[ID_LEN] = "", ref[ID_LEN] = "";
    if (msgpack_unpack_next(&u, rec, rl, NULL) == MSGPACK_UNPACK_SUCCESS) {
        copy_str(agent, sizeof agent, frame_map_get(&u.data, "agent"));
        copy_str(ref, sizeof ref, frame_map_get(&u.data, "ref"));
    }
    msgpack_unpacked_destroy(&u);
    if (!agent[0])
        return MDB_CORRUPTED;
    char oid[ID_LEN];
    util_fmt(oid, sizeof oid, "out-%s", ev);
    frame_out_t o;
    frame_out_message(&o, "outcome", oid, 5);
    frame_out_str(&o, "event", ev);
    frame_out_str(&o, "ref", ref);
    frame_out_str(&o, "case", c->case_id);
    frame_out_str(&o, "status", "resolved");
    frame_out_str(&o, "note", c->note ? c->note : "");
    char key[2 * ID_LEN + 2];
    msgpack_sbuffer sealed;
    msgpack_sbuffer_init(&sealed);
    (void)store_txn_seal(c->t, oid, o.sb.data, o.sb.size, &sealed); /* the note is free text */
    rc = store_put(c->t, STORE_DB_OUTCOMES, key, pending_key(key, sizeof key, agent, oid),
                   sealed.data, sealed.size, 0);
    msgpack_sbuffer_destroy(&sealed);
    frame_out_end(&o);
    if (rc == 0)
        rc = trail_append(c->t, c->case_id, "outcome_stored", "broker", -1, NULL, NULL, 0, agent);
    if (rc == 0)
        fx_outcome(c->fx, agent);
    return rc;
}

/* Set a case's status ("resolved", "closed") with the time, and make it no
 * longer joinable: a later event about the child opens a new case. */
static int case_set_status(store_txn_t *t, const char *case_id, const char *status, int64_t now)
{
    const void *v;
    size_t vl;
    int rc = store_get(t, STORE_DB_CASES, case_id, strlen(case_id), &v, &vl);
    if (rc)
        return rc;
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    if (msgpack_unpack_next(&u, v, vl, NULL) != MSGPACK_UNPACK_SUCCESS ||
        u.data.type != MSGPACK_OBJECT_MAP) {
        msgpack_unpacked_destroy(&u);
        return MDB_CORRUPTED;
    }
    const msgpack_object *join = frame_map_get(&u.data, "join");
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, u.data.via.map.size + (frame_map_get(&u.data, status) ? 0 : 1));
    for (uint32_t i = 0; i < u.data.via.map.size; i++) {
        const msgpack_object *key = &u.data.via.map.ptr[i].key;
        const char *ks;
        size_t kn;
        int is_str = frame_str(key, &ks, &kn);
        if (is_str && kn == 6 && memcmp(ks, "status", 6) == 0) {
            frame_pack_cstr(&pk, "status");
            frame_pack_cstr(&pk, status);
        } else if (!(is_str && kn == strlen(status) && memcmp(ks, status, kn) == 0)) {
            msgpack_pack_object(&pk, *key);
            msgpack_pack_object(&pk, u.data.via.map.ptr[i].val);
        }
    }
    frame_pack_cstr(&pk, status); /* "resolved": <ms> / "closed": <ms> */
    msgpack_pack_int64(&pk, now);
    rc = store_put(t, STORE_DB_CASES, case_id, strlen(case_id), sb.data, sb.size, 0);
    if (rc == 0) {
        char kind[48];
        util_fmt(kind, sizeof kind, "case_%s", status);
        rc = trail_append(t, case_id, kind, "broker", STORE_DB_CASES, case_id, sb.data, sb.size,
                          NULL);
    }
    msgpack_sbuffer_destroy(&sb);
    if (!rc && join && join->type == MSGPACK_OBJECT_BIN && join->via.bin.size > 0) {
        /* Only if the child's open case is still this one. */
        const void *cur;
        size_t cl;
        int g = store_get(t, STORE_DB_OPEN_CASES, join->via.bin.ptr, join->via.bin.size, &cur, &cl);
        if (g == 0 && cl == strlen(case_id) && memcmp(cur, case_id, cl) == 0)
            rc = store_del(t, STORE_DB_OPEN_CASES, join->via.bin.ptr, join->via.bin.size, NULL, 0);
        else if (g && g != MDB_NOTFOUND)
            rc = g;
    }
    msgpack_unpacked_destroy(&u);
    return rc;
}

/* Mark the case resolved, tell the reporters and the agencies' channels. */
static int resolve_case(const config_t *cfg, store_txn_t *t, const char *case_id, const char *note,
                        const as_list_t *all, int64_t now, assign_effects_t *fx)
{
    int rc = case_set_status(t, case_id, "resolved", now);
    if (rc)
        return rc;
    log_info("assign: case %s resolved", case_id);
    /* privacy.retention: the case's data is purged this long after resolution */
    if (!cfg->privacy_off && cfg->retention_ms > 0) {
        unsigned char k[8 + STORE_ID_MAX + 8];
        char pid[STORE_ID_MAX + 8];
        util_fmt(pid, sizeof pid, "purge:%s", case_id);
        if ((rc = store_put(t, STORE_DB_DEADLINES, k, deadline_key(k, now + cfg->retention_ms, pid),
                            "", 0, 0)))
            return rc;
        fx->deadlines_changed = 1;
    }
    outcome_ctx_t c = {t, case_id, note, fx, 0};
    if ((rc = store_each_case_event(t, case_id, outcome_for_event, &c)))
        return rc;
    /* case.resolved to the channels of every agency in the case */
    json_t *data = json_pack("{s:s, s:s}", "case", case_id, "status", "resolved");
    char text[256];
    util_fmt(text, sizeof text, "【carehub】案件 %s 已办结。", case_id);
    for (size_t i = 0; !rc && i < all->n; i++) {
        const config_agency_t *ag = config_find_agency(cfg, all->list[i].agency);
        for (size_t j = 0; ag && !rc && j < ag->n_channels; j++) {
            const config_channel_t *ch = config_find_channel(cfg, ag->channels[j]);
            if (ch)
                rc = notify_channel(t, ch, case_id, "case.resolved", data, text, now, fx);
        }
    }
    json_decref(data);
    return rc;
}

/* After an assignment became final: is the whole case resolved? */
static int check_case(const config_t *cfg, store_txn_t *t, const as_t *changed, int64_t now,
                      assign_effects_t *fx)
{
    as_list_t all;
    int rc = case_assignments(t, changed->case_id, &all);
    int all_final = 1, any_resolved = 0;
    for (size_t i = 0; !rc && i < all.n; i++) {
        assign_state_t st =
            strcmp(all.list[i].id, changed->id) == 0 ? changed->state : all.list[i].state;
        all_final &= is_final(st);
        any_resolved |= st == AS_RESOLVED;
    }
    if (!rc && all_final && any_resolved)
        rc = resolve_case(cfg, t, changed->case_id, changed->note, &all, now, fx);
    free(all.list);
    return rc;
}

/* ---- requests from agencies ---------------------------------------------------- */

int assign_request(const config_t *cfg, store_txn_t *t, assign_request_t *r, assign_effects_t *fx)
{
    as_t a;
    int rc = as_get(t, r->assignment, &a);
    r->result = ASSIGN_OK;
    if (rc == MDB_NOTFOUND) {
        r->result = ASSIGN_NOT_FOUND;
        return 0;
    }
    if (rc)
        return rc;
    util_fmt(r->case_id, sizeof r->case_id, "%s", a.case_id);
    if (strcmp(a.agency, r->agency) != 0) {
        r->result = ASSIGN_FORBIDDEN;
        util_fmt(r->detail, sizeof r->detail, "assignment %s belongs to agency %s", a.id, a.agency);
        return 0;
    }
    if (!r->status) { /* case_ack: idempotent, also on a final assignment */
        if (a.state != AS_OPEN)
            return 0;
        if (r->by)
            util_fmt(a.by, sizeof a.by, "%s", r->by);
        if ((rc = set_state(t, &a, AS_ACKNOWLEDGED, r->now, fx)))
            return rc;
        return as_put(t, &a);
    }
    int to = assign_state_parse(r->status, strlen(r->status));
    if (is_final(a.state)) {
        if (to != (int)a.state) {
            r->result = ASSIGN_CONFLICT;
            util_fmt(r->detail, sizeof r->detail, "assignment %s is already %s (final)", a.id,
                     assign_state_name(a.state));
        }
        return 0; /* the same final status again: a retry */
    }
    if (to == AS_DECLINED && cfg->fallback_agency && strcmp(a.agency, cfg->fallback_agency) == 0) {
        r->result = ASSIGN_CONFLICT;
        util_fmt(r->detail, sizeof r->detail,
                 "%s is the fallback agency and cannot decline: refer the case or resolve it",
                 a.agency);
        return 0;
    }
    if (to == AS_REFERRED && (!r->to || !config_find_agency(cfg, r->to))) {
        r->result = ASSIGN_BAD_TARGET;
        util_fmt(r->detail, sizeof r->detail, "`to` must name a configured agency");
        return 0;
    }
    if (to == AS_REFERRED && strcmp(r->to, a.agency) == 0) {
        r->result = ASSIGN_BAD_TARGET;
        util_fmt(r->detail, sizeof r->detail,
                 "`to` must be another agency: a case is not referred to the agency that holds it");
        return 0;
    }
    if (r->note)
        util_fmt(a.note, sizeof a.note, "%s", r->note);
    if (to == AS_REFERRED)
        util_fmt(a.to, sizeof a.to, "%s", r->to);
    if ((rc = set_state(t, &a, (assign_state_t)to, r->now, fx)) || (rc = as_put(t, &a)))
        return rc;
    if (to == AS_REFERRED || to == AS_DECLINED) {
        as_list_t all;
        const char *target = to == AS_REFERRED ? r->to : cfg->fallback_agency;
        rc = case_assignments(t, a.case_id, &all);
        if (!rc && target)
            rc = make_assignment(cfg, t, a.case_id, a.type, a.severity, target, NULL, &a, r->now,
                                 &all, fx);
        free(all.list);
        if (rc)
            return rc;
    }
    if (is_final(a.state))
        return check_case(cfg, t, &a, r->now, fx);
    return 0;
}

/* ---- deadlines ----------------------------------------------------------------- */

typedef struct {
    int64_t now;
    size_t max;
    char (*ids)[STORE_ID_MAX];
    int64_t *dues;
    size_t n;
} due_ctx_t;

static int collect_due(void *ud, const void *k, size_t kl, const void *v, size_t vl)
{
    (void)v;
    (void)vl;
    due_ctx_t *c = ud;
    if (kl <= 8 || kl - 8 >= STORE_ID_MAX)
        return MDB_CORRUPTED;
    const unsigned char *b = k;
    uint64_t due = 0;
    for (int i = 0; i < 8; i++)
        due = (due << 8) | b[i];
    if ((int64_t)due > c->now || c->n == c->max)
        return STORE_EACH_STOP;
    memcpy(c->ids[c->n], b + 8, kl - 8);
    c->ids[c->n][kl - 8] = '\0';
    c->dues[c->n] = (int64_t)due;
    c->n++;
    return 0;
}

/* Fire the current step of one overdue assignment and schedule the next. */
static int fire(const config_t *cfg, store_txn_t *t, as_t *a, int64_t now, assign_effects_t *fx)
{
    int level = a->level + 1; /* 1-based in notices */
    const step_t *sp = &a->steps[a->level];
    int64_t overdue_min = (now - a->ack_by) / 60000;
    json_t *data = json_pack("{s:s, s:s, s:s, s:s, s:s, s:I, s:i}", "case", a->case_id, "assignment",
                             a->id, "agency", a->agency, "event_type", a->type, "severity",
                             store_severity_name(a->severity), "ack_by", (json_int_t)a->ack_by,
                             "level", level);
    char text[512];
    util_fmt(text, sizeof text, "【carehub】案件 %s 分派给%s，已超过确认时限 %lld 分钟仍未确认（第%d级升级）。",
             a->case_id, agency_name(cfg, a->agency), (long long)(overdue_min < 0 ? 0 : overdue_min),
             level);
    int rc = 0;
    for (size_t i = 0; i < sp->n_notify && !rc; i++) {
        const config_channel_t *ch = config_find_channel(cfg, sp->notify[i]);
        if (ch)
            rc = notify_channel(t, ch, a->case_id, "assignment.overdue", data, text, now, fx);
        else
            log_warn("assign: %s escalation names channel %s, which is no longer configured", a->id,
                     sp->notify[i]);
    }
    json_decref(data);
    if (rc)
        return rc;
    log_debug("assign: %s overdue: escalation step %d fired", a->id, level);
    fx->escalations++;
    a->level++;
    if ((rc = schedule(t, a, fx)))
        return rc;
    return as_put(t, a);
}

/* ---- retention ---------------------------------------------------------------------- */

typedef struct {
    store_txn_t *t;
    const char *case_id;
    int rc;
} purge_ctx_t;

static int purge_event(void *ud, const void *k, size_t kl, const void *v, size_t vl)
{
    (void)k;
    (void)kl;
    purge_ctx_t *c = ud;
    char ev[STORE_ID_MAX];
    if (store_copy_id(v, vl, ev, sizeof ev))
        return MDB_CORRUPTED;
    int rc = store_del(c->t, STORE_DB_EVENTS, ev, vl, NULL, 0);
    return rc ? rc : trail_append(c->t, c->case_id, "purged", "broker", STORE_DB_EVENTS, ev, "", 0, NULL);
}

static int purge_assignment(void *ud, const void *k, size_t kl, const void *v, size_t vl)
{
    (void)k;
    (void)kl;
    purge_ctx_t *c = ud;
    char id[STORE_ID_MAX], agency[STORE_ID_MAX], pk[2 * ID_LEN + 2];
    if (store_copy_id(v, vl, id, sizeof id))
        return MDB_CORRUPTED;
    int rc = assign_agency(c->t, id, agency);
    if (rc == MDB_NOTFOUND)
        return 0;
    if (rc || (rc = store_del(c->t, STORE_DB_PENDING, pk, pending_key(pk, sizeof pk, agency, id), NULL, 0)) ||
        (rc = store_del(c->t, STORE_DB_ASSIGNMENTS, id, vl, NULL, 0)))
        return rc;
    return trail_append(c->t, c->case_id, "purged", "broker", STORE_DB_ASSIGNMENTS, id, "", 0, NULL);
}

/* privacy.retention passed since the case was resolved: its events (the
 * children's data), assignments and log go; the trail keeps a stub for each
 * (that it existed, when, that it was purged). Idempotency entries stay, so
 * a late retry still gets its old answer. */
static int purge_case(store_txn_t *t, const char *case_id, int64_t due, int64_t now,
                      assign_effects_t *fx)
{
    (void)now;
    unsigned char k[8 + STORE_ID_MAX + 8];
    char pid[STORE_ID_MAX + 8];
    util_fmt(pid, sizeof pid, "purge:%s", case_id);
    int rc = store_del(t, STORE_DB_DEADLINES, k, deadline_key(k, due, pid), NULL, 0);
    fx->deadlines_changed = 1;
    if (rc)
        return rc;
    const void *v;
    size_t vl;
    rc = store_get(t, STORE_DB_CASES, case_id, strlen(case_id), &v, &vl);
    if (rc == MDB_NOTFOUND)
        return 0; /* purged already */
    if (rc)
        return rc;
    purge_ctx_t c = {t, case_id, 0};
    size_t cl = strlen(case_id);
    if ((rc = store_each_case_event(t, case_id, purge_event, &c)) ||
        (rc = store_each(t, STORE_DB_CASE_ASSIGN, case_id, cl, 1, purge_assignment, &c)) ||
        (rc = store_del(t, STORE_DB_CASE_EVENTS, case_id, cl, NULL, 0)) ||
        (rc = store_del(t, STORE_DB_CASE_ASSIGN, case_id, cl, NULL, 0)) ||
        (rc = store_del(t, STORE_DB_CASE_LOG, case_id, cl, NULL, 0)) ||
        (rc = store_del(t, STORE_DB_CASES, case_id, cl, NULL, 0)))
        return rc;
    log_info("assign: case %s purged (privacy.retention passed since it was resolved)", case_id);
    return trail_append(t, case_id, "purged", "broker", STORE_DB_CASES, case_id, "", 0, NULL);
}

/* A quiet-close entry fell due: close the case if it still has no assignment. */
static int quiet_close(store_txn_t *t, const char *case_id, int64_t due, int64_t now,
                       assign_effects_t *fx)
{
    unsigned char k[8 + STORE_ID_MAX];
    int rc = store_del(t, STORE_DB_DEADLINES, k, deadline_key(k, due, case_id), NULL, 0);
    if (!rc)
        rc = store_del(t, STORE_DB_QUIET, case_id, strlen(case_id), NULL, 0);
    fx->deadlines_changed = 1;
    if (rc)
        return rc;
    as_list_t all;
    rc = case_assignments(t, case_id, &all);
    size_t n = all.n;
    free(all.list);
    if (rc || n)
        return rc; /* assigned meanwhile: it closes when resolved */
    rc = case_set_status(t, case_id, "closed", now);
    if (rc == MDB_NOTFOUND)
        return 0;
    if (!rc)
        log_info("assign: case %s closed: no assignment and no new event for quiet_close", case_id);
    return rc;
}

int assign_fire_due(const config_t *cfg, store_txn_t *t, int64_t now, size_t max, size_t *fired,
                    assign_effects_t *fx)
{
    *fired = 0;
    due_ctx_t c = {now, max, xcalloc(max ? max : 1, STORE_ID_MAX),
                   xcalloc(max ? max : 1, sizeof(int64_t)), 0};
    int rc = store_each(t, STORE_DB_DEADLINES, NULL, 0, 0, collect_due, &c);
    for (size_t i = 0; !rc && i < c.n; i++) {
        if (strncmp(c.ids[i], "purge:", 6) == 0) {
            rc = purge_case(t, c.ids[i] + 6, c.dues[i], now, fx);
            if (!rc)
                (*fired)++;
            continue;
        }
        if (strncmp(c.ids[i], "case-", 5) == 0) {
            rc = quiet_close(t, c.ids[i], c.dues[i], now, fx);
            if (!rc)
                (*fired)++;
            continue;
        }
        as_t a;
        rc = as_get(t, c.ids[i], &a);
        if (rc == MDB_NOTFOUND) { /* an index entry without its record: drop it */
            log_warn("assign: deadline for unknown assignment %s dropped", c.ids[i]);
            rc = 0;
            continue;
        }
        if (rc)
            break;
        if (a.state != AS_OPEN || (size_t)a.level >= a.n_steps) {
            rc = schedule(t, &a, fx); /* stale entry: re-sync the index */
            if (!rc)
                rc = as_put(t, &a);
            continue;
        }
        rc = fire(cfg, t, &a, now, fx);
        if (!rc)
            (*fired)++;
    }
    free(c.ids);
    free(c.dues);
    return rc;
}

typedef struct {
    int64_t now;
    uint64_t overdue;
} gauge_ctx_t;

static int overdue_visit(void *ud, const void *k, size_t kl, const void *v, size_t vl)
{
    (void)v;
    (void)vl;
    gauge_ctx_t *g = ud;
    if (kl < 8)
        return MDB_CORRUPTED;
    const unsigned char *b = k;
    uint64_t due = 0;
    for (int i = 0; i < 8; i++)
        due = (due << 8) | b[i];
    if ((int64_t)due >= g->now)
        return STORE_EACH_STOP; /* the rest fall due later */
    g->overdue++;
    return 0;
}

int assign_gauges(store_txn_t *t, int64_t now, uint64_t *open_, uint64_t *overdue)
{
    const void *v;
    size_t vl;
    *open_ = 0;
    int rc = store_get(t, STORE_DB_COUNTERS, OPEN_COUNTER, strlen(OPEN_COUNTER), &v, &vl);
    if (rc == 0 && vl == sizeof *open_)
        memcpy(open_, v, sizeof *open_);
    else if (rc && rc != MDB_NOTFOUND)
        return rc;
    gauge_ctx_t g = {now, 0};
    rc = store_each(t, STORE_DB_ACK_DUE, NULL, 0, 0, overdue_visit, &g); /* the overdue only */
    *overdue = g.overdue;
    return rc;
}

/* ---- the figures for a store written before them ---------------------------------- */

typedef struct {
    store_txn_t *t;
    uint64_t open;
} figures_ctx_t;

static int figures_visit(void *ud, const void *k, size_t kl, const void *v, size_t vl)
{
    (void)k;
    (void)kl;
    figures_ctx_t *c = ud;
    as_t a;
    int rc = as_decode(c->t, v, vl, &a);
    if (rc)
        return rc;
    if (!is_final(a.state))
        c->open++;
    return a.state == AS_OPEN ? ack_due_put(c->t, &a, 0) : 0;
}

static int figures_txn(store_txn_t *t, void *ud)
{
    int *built = ud;
    const void *v;
    size_t vl;
    int rc = store_get(t, STORE_DB_COUNTERS, OPEN_COUNTER, strlen(OPEN_COUNTER), &v, &vl);
    if (rc != MDB_NOTFOUND)
        return rc; /* there (or unreadable) */
    figures_ctx_t c = {t, 0};
    if ((rc = store_each(t, STORE_DB_ASSIGNMENTS, NULL, 0, 0, figures_visit, &c)))
        return rc;
    *built = 1;
    return store_put(t, STORE_DB_COUNTERS, OPEN_COUNTER, strlen(OPEN_COUNTER), &c.open,
                     sizeof c.open, 0);
}

int assign_figures_rebuild(store_t *st)
{
    int built = 0;
    if (store_write(st, figures_txn, &built) != STORE_OK)
        return -1;
    if (built)
        log_info("assign: open and overdue figures built from the assignments (a store from "
                 "before them)");
    return 0;
}

static int first_due(void *ud, const void *k, size_t kl, const void *v, size_t vl)
{
    (void)v;
    (void)vl;
    int64_t *due = ud;
    if (kl < 8)
        return MDB_CORRUPTED;
    const unsigned char *b = k;
    uint64_t d = 0;
    for (int i = 0; i < 8; i++)
        d = (d << 8) | b[i];
    *due = (int64_t)d;
    return STORE_EACH_STOP;
}

int assign_next_due(store_txn_t *t, int64_t *due)
{
    *due = INT64_MAX;
    return store_each(t, STORE_DB_DEADLINES, NULL, 0, 0, first_due, due);
}

/* ---- messages ------------------------------------------------------------------- */

typedef struct {
    store_txn_t *t;
    char (*ids)[STORE_ID_MAX];
    size_t n, cap;
} ev_list_t;

static int collect_event_id(void *ud, const void *k, size_t kl, const void *v, size_t vl)
{
    (void)k;
    (void)kl;
    ev_list_t *l = ud;
    if (vl >= STORE_ID_MAX)
        return MDB_CORRUPTED;
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 16;
        l->ids = xrealloc(l->ids, l->cap * sizeof *l->ids);
    }
    memcpy(l->ids[l->n], v, vl);
    l->ids[l->n][vl] = '\0';
    l->n++;
    return 0;
}

/* Pack {event, type, at, body} of one stored event into pk. */
static int pack_event(store_txn_t *t, const char *ev, msgpack_packer *pk)
{
    const void *rec;
    size_t rl;
    int rc = store_get(t, STORE_DB_EVENTS, ev, strlen(ev), &rec, &rl);
    if (rc)
        return rc;
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    rc = MDB_CORRUPTED;
    if (msgpack_unpack_next(&u, rec, rl, NULL) == MSGPACK_UNPACK_SUCCESS) {
        const msgpack_object *type = frame_map_get(&u.data, "type"), *at = frame_map_get(&u.data, "at");
        msgpack_sbuffer body;
        msgpack_sbuffer_init(&body);
        if (type && at && store_txn_event_body(t, ev, &u.data, &body) == 0) {
            msgpack_pack_map(pk, 4);
            frame_pack_cstr(pk, "event"); frame_pack_cstr(pk, ev);
            frame_pack_cstr(pk, "type");  msgpack_pack_object(pk, *type);
            frame_pack_cstr(pk, "at");    msgpack_pack_object(pk, *at);
            frame_pack_cstr(pk, "body");
            pk->callback(pk->data, body.data, body.size); /* already msgpack */
            rc = 0;
        }
        if (body.data)
            sodium_memzero(body.data, body.alloc);
        msgpack_sbuffer_destroy(&body);
    }
    msgpack_unpacked_destroy(&u);
    return rc;
}

int assign_case_message(store_txn_t *t, const char *assignment, size_t max_bytes, frame_out_t *o,
                        char *agency, int *open_)
{
    as_t a;
    int rc = as_get(t, assignment, &a);
    if (rc)
        return rc;
    util_fmt(agency, STORE_ID_MAX, "%s", a.agency);
    *open_ = a.state == AS_OPEN;
    const void *cv;
    size_t cl;
    int64_t opened = 0;
    int sev = a.severity;
    if ((rc = store_get(t, STORE_DB_CASES, a.case_id, strlen(a.case_id), &cv, &cl)))
        return rc;
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    if (msgpack_unpack_next(&u, cv, cl, NULL) == MSGPACK_UNPACK_SUCCESS) {
        const char *s;
        size_t n;
        opened = get_int(&u.data, "opened");
        if (frame_str(frame_map_get(&u.data, "severity"), &s, &n) && store_severity_parse(s, n) >= 0)
            sev = store_severity_parse(s, n);
    }
    msgpack_unpacked_destroy(&u);

    ev_list_t l = {t, NULL, 0, 0};
    if ((rc = store_each_case_event(t, a.case_id, collect_event_id, &l))) {
        free(l.ids);
        return rc;
    }
    /* The newest events that fit: pack each alone to learn its size. */
    size_t budget = max_bytes > 2048 ? max_bytes - 2048 : max_bytes / 2, used = 0, first = l.n;
    while (first > 0) {
        msgpack_sbuffer sb;
        msgpack_packer pk;
        msgpack_sbuffer_init(&sb);
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        rc = pack_event(t, l.ids[first - 1], &pk);
        size_t sz = sb.size;
        msgpack_sbuffer_destroy(&sb);
        if (rc) {
            free(l.ids);
            return rc;
        }
        if (used + sz > budget)
            break;
        used += sz;
        first--;
    }
    frame_out_message(o, "case", a.id, 8);
    frame_out_str(o, "case", a.case_id);
    frame_out_str(o, "agency", a.agency);
    frame_out_str(o, "type", a.type);
    frame_out_str(o, "severity", store_severity_name(sev));
    frame_out_int(o, "opened", opened);
    frame_out_int(o, "ack_by", a.ack_by);
    frame_out_key(o, "events");
    msgpack_pack_array(&o->pk, l.n - first);
    for (size_t i = first; i < l.n && !rc; i++)
        rc = pack_event(t, l.ids[i], &o->pk);
    frame_out_int(o, "events_total", (int64_t)l.n);
    free(l.ids);
    if (rc)
        frame_out_end(o);
    return rc;
}

int assign_pack_record(store_txn_t *t, const char *assignment, msgpack_packer *pk, int with_note)
{
    as_t a;
    int rc = as_get(t, assignment, &a);
    if (rc)
        return rc;
    msgpack_pack_map(pk, 13 + (with_note ? 1 : 0));
    frame_pack_cstr(pk, "id");       frame_pack_cstr(pk, a.id);
    frame_pack_cstr(pk, "case");     frame_pack_cstr(pk, a.case_id);
    frame_pack_cstr(pk, "agency");   frame_pack_cstr(pk, a.agency);
    frame_pack_cstr(pk, "type");     frame_pack_cstr(pk, a.type);
    frame_pack_cstr(pk, "state");    frame_pack_cstr(pk, assign_state_name(a.state));
    frame_pack_cstr(pk, "severity"); frame_pack_cstr(pk, store_severity_name(a.severity));
    frame_pack_cstr(pk, "created");  msgpack_pack_int64(pk, a.created);
    frame_pack_cstr(pk, "ack_by");   msgpack_pack_int64(pk, a.ack_by);
    frame_pack_cstr(pk, "acked_at"); msgpack_pack_int64(pk, a.acked_at);
    frame_pack_cstr(pk, "by");       frame_pack_cstr(pk, a.by);
    frame_pack_cstr(pk, "to");       frame_pack_cstr(pk, a.to);
    frame_pack_cstr(pk, "level");    msgpack_pack_int(pk, a.level);
    frame_pack_cstr(pk, "steps");    msgpack_pack_uint64(pk, a.n_steps);
    if (with_note) {
        frame_pack_cstr(pk, "note");
        frame_pack_cstr(pk, a.note);
    }
    sodium_memzero(a.note, sizeof a.note);
    return 0;
}

/* Both read only the brief view: no sealed note is opened to learn an id. */
int assign_case_of(store_txn_t *t, const char *assignment, char *case_id)
{
    as_brief_t b;
    int rc = as_get_brief(t, assignment, &b);
    if (rc == 0)
        util_fmt(case_id, STORE_ID_MAX, "%s", b.case_id);
    return rc;
}

int assign_agency(store_txn_t *t, const char *assignment, char *agency)
{
    as_brief_t b;
    int rc = as_get_brief(t, assignment, &b);
    if (rc == 0)
        util_fmt(agency, STORE_ID_MAX, "%s", b.agency);
    return rc;
}

typedef struct {
    const char *prefix;
    size_t plen;
    int (*fn)(void *, const char *);
    int (*fn_msg)(void *, const void *, size_t);
    void *ud;
    store_txn_t *t;
} prefix_ctx_t;

/* The outcome id from an outcomes key (agent NUL id). */
static void outcome_key_id(const prefix_ctx_t *c, const void *k, size_t kl, char *oid, size_t size)
{
    size_t n = kl - c->plen < size - 1 ? kl - c->plen : size - 1;
    memcpy(oid, (const char *)k + c->plen, n);
    oid[n] = '\0';
}

static int visit_pending(void *ud, const void *k, size_t kl, const void *v, size_t vl)
{
    (void)v;
    (void)vl;
    prefix_ctx_t *c = ud;
    if (kl <= c->plen || memcmp(k, c->prefix, c->plen) != 0)
        return STORE_EACH_STOP; /* past this agency */
    char id[STORE_ID_MAX];
    size_t n = kl - c->plen;
    if (n >= sizeof id)
        return MDB_CORRUPTED;
    memcpy(id, (const char *)k + c->plen, n);
    id[n] = '\0';
    return c->fn(c->ud, id) < 0 ? -1 : 0;
}

int assign_each_pending(store_txn_t *t, const char *agency,
                        int (*fn)(void *ud, const char *assignment), void *ud)
{
    char prefix[ID_LEN + 1];
    util_fmt(prefix, sizeof prefix, "%s", agency);
    size_t plen = strlen(prefix) + 1; /* with the NUL */
    prefix_ctx_t c = {prefix, plen, fn, NULL, ud, t};
    return store_each(t, STORE_DB_PENDING, prefix, plen, 0, visit_pending, &c);
}

static int visit_outcome(void *ud, const void *k, size_t kl, const void *v, size_t vl)
{
    prefix_ctx_t *c = ud;
    if (kl <= c->plen || memcmp(k, c->prefix, c->plen) != 0)
        return STORE_EACH_STOP;
    char oid[ID_LEN];
    outcome_key_id(c, k, kl, oid, sizeof oid);
    msgpack_sbuffer m;
    msgpack_sbuffer_init(&m);
    int rc = store_txn_open(c->t, oid, v, vl, &m);
    if (rc == 0)
        rc = c->fn_msg(c->ud, m.data, m.size) < 0 ? -1 : 0;
    else
        rc = 0; /* sealed with another key: skipped (the store refuses such a key at start) */
    if (m.data)
        sodium_memzero(m.data, m.alloc);
    msgpack_sbuffer_destroy(&m);
    return rc;
}

int assign_each_outcome(store_txn_t *t, const char *agent,
                        int (*fn)(void *ud, const void *msg, size_t len), void *ud)
{
    char prefix[ID_LEN + 1];
    util_fmt(prefix, sizeof prefix, "%s", agent);
    size_t plen = strlen(prefix) + 1;
    prefix_ctx_t c = {prefix, plen, NULL, fn, ud, t};
    return store_each(t, STORE_DB_OUTCOMES, prefix, plen, 0, visit_outcome, &c);
}

int assign_outcome_received(store_txn_t *t, const char *agent, const char *outcome_id)
{
    char key[2 * ID_LEN + 2], case_id[STORE_ID_MAX] = "";
    size_t kl = pending_key(key, sizeof key, agent, outcome_id);
    const void *v;
    size_t vl;
    int rc = store_get(t, STORE_DB_OUTCOMES, key, kl, &v, &vl);
    if (rc == MDB_NOTFOUND)
        return 0; /* unknown or already confirmed */
    if (rc)
        return rc;
    msgpack_sbuffer m;
    msgpack_sbuffer_init(&m);
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    if (store_txn_open(t, outcome_id, v, vl, &m) == 0 &&
        msgpack_unpack_next(&u, m.data, m.size, NULL) == MSGPACK_UNPACK_SUCCESS)
        copy_str(case_id, sizeof case_id, frame_map_get(&u.data, "case"));
    msgpack_unpacked_destroy(&u);
    msgpack_sbuffer_destroy(&m);
    if ((rc = store_del(t, STORE_DB_OUTCOMES, key, kl, NULL, 0)))
        return rc;
    return trail_append(t, case_id, "outcome_received", agent, -1, NULL, NULL, 0, outcome_id);
}

/* ---- outbox ----------------------------------------------------------------------- */

int assign_outbox_get(store_txn_t *t, const char *webhook_id, char *channel, size_t chsize,
                      char **body, int64_t *created)
{
    const void *v;
    size_t vl;
    int rc = store_get(t, STORE_DB_OUTBOX, webhook_id, strlen(webhook_id), &v, &vl);
    if (rc)
        return rc;
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    rc = MDB_CORRUPTED;
    const char *b;
    size_t bl;
    if (msgpack_unpack_next(&u, v, vl, NULL) == MSGPACK_UNPACK_SUCCESS &&
        frame_str(frame_map_get(&u.data, "body"), &b, &bl)) {
        copy_str(channel, chsize, frame_map_get(&u.data, "channel"));
        *created = get_int(&u.data, "created");
        *body = xstrndup(b, bl);
        rc = 0;
    }
    msgpack_unpacked_destroy(&u);
    return rc;
}

typedef struct {
    int (*fn)(void *, const char *);
    void *ud;
} outbox_each_t;

static int visit_outbox(void *ud, const void *k, size_t kl, const void *v, size_t vl)
{
    (void)v;
    (void)vl;
    outbox_each_t *c = ud;
    char id[ID_LEN];
    if (store_copy_id(k, kl, id, sizeof id))
        return MDB_CORRUPTED;
    return c->fn(c->ud, id) < 0 ? -1 : 0;
}

int assign_outbox_each(store_txn_t *t, int (*fn)(void *ud, const char *webhook_id), void *ud)
{
    outbox_each_t c = {fn, ud};
    return store_each(t, STORE_DB_OUTBOX, NULL, 0, 0, visit_outbox, &c);
}

int assign_outbox_done(const config_t *cfg, store_txn_t *t, const char *webhook_id, int delivered,
                       int attempts, const char *error, int64_t now, assign_effects_t *fx)
{
    const void *v;
    size_t vl;
    int rc = store_get(t, STORE_DB_OUTBOX, webhook_id, strlen(webhook_id), &v, &vl);
    if (rc == MDB_NOTFOUND)
        return 0;
    if (rc)
        return rc;
    char channel[ID_LEN] = "", case_id[STORE_ID_MAX] = "";
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    if (msgpack_unpack_next(&u, v, vl, NULL) == MSGPACK_UNPACK_SUCCESS) {
        copy_str(channel, sizeof channel, frame_map_get(&u.data, "channel"));
        copy_str(case_id, sizeof case_id, frame_map_get(&u.data, "case"));
    }
    msgpack_unpacked_destroy(&u);
    if ((rc = store_del(t, STORE_DB_OUTBOX, webhook_id, strlen(webhook_id), NULL, 0)) ||
        (rc = trail_append(t, case_id, delivered ? "notice_delivered" : "notice_failed", channel,
                           -1, NULL, NULL, 0, webhook_id)))
        return rc;
    if (delivered || !case_id[0])
        return 0;
    /* Failed for good: in the case's log, and the channel's fallback is told. */
    unsigned char rec[8];
    uint64_t at = (uint64_t)now;
    for (int i = 7; i >= 0; i--, at >>= 8)
        rec[i] = (unsigned char)(at & 0xff);
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_sbuffer_write(&sb, (const char *)rec, sizeof rec); /* time first: dups sort by time */
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 5);
    frame_pack_cstr(&pk, "what");       frame_pack_cstr(&pk, "webhook_failed");
    frame_pack_cstr(&pk, "webhook_id"); frame_pack_cstr(&pk, webhook_id);
    frame_pack_cstr(&pk, "channel");    frame_pack_cstr(&pk, channel);
    frame_pack_cstr(&pk, "attempts");   msgpack_pack_int(&pk, attempts);
    frame_pack_cstr(&pk, "error");      frame_pack_cstr(&pk, error ? error : "");
    rc = store_put(t, STORE_DB_CASE_LOG, case_id, strlen(case_id), sb.data, sb.size, 0);
    msgpack_sbuffer_destroy(&sb);
    if (rc)
        return rc;
    log_warn("assign: %s to channel %s failed for good after %d attempts (%s); recorded in case %s",
             webhook_id, channel, attempts, error ? error : "", case_id);
    const config_channel_t *ch = config_find_channel(cfg, channel);
    const config_channel_t *fb = ch && ch->fallback ? config_find_channel(cfg, ch->fallback) : NULL;
    if (!fb)
        return 0;
    json_t *data = json_pack("{s:s, s:s, s:s, s:i, s:s}", "case", case_id, "channel", channel,
                             "webhook_id", webhook_id, "attempts", attempts, "error", error ? error : "");
    char text[256];
    util_fmt(text, sizeof text, "【carehub】案件 %s 的通知未能送达（渠道 %s）。", case_id, channel);
    rc = notify_channel(t, fb, case_id, "webhook.failed", data, text, now, fx);
    json_decref(data);
    return rc;
}
