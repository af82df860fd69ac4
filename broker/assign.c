/*
 * assign.c — assignments: the record and its codec, the state machine and its one
 * setter (set_state), making assignments from the workflows (assign_on_event) and
 * the agencies' requests (case_ack / case_update). The effects list is kept here
 * too. The other pieces: assign_deadline.c, assign_outcome.c, assign_notice.c,
 * assign_message.c, assign_figures.c; what they share is in assign_int.h.
 */
#include "assign.h"

#include <errno.h>
#include <msgpack.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "route.h"
#include "trail.h"
#include "util.h"

#include "assign_int.h"

/* The assignment state machine (assign.h draws it): each state's name, whether
 * it is final, whether an agency sets it with case_update (case_ack sets
 * acknowledged), and the states it may move to. set_state() checks every move
 * against `next`; case_update's checks and nack texts are read from here. */
#define TO(s) (1u << (s))
static const struct {
    const char *name;
    int final;
    int by_update;
    unsigned next;
} STATES[AS_STATE_COUNT] = {
    [AS_OPEN] = {"open", 0, 0,
                 TO(AS_ACKNOWLEDGED) | TO(AS_IN_PROGRESS) | TO(AS_RESOLVED) | TO(AS_REFERRED) |
                     TO(AS_DECLINED)},
    [AS_ACKNOWLEDGED] = {"acknowledged", 0, 0,
                         TO(AS_IN_PROGRESS) | TO(AS_RESOLVED) | TO(AS_REFERRED) | TO(AS_DECLINED)},
    [AS_IN_PROGRESS] = {"in_progress", 0, 1, TO(AS_RESOLVED) | TO(AS_REFERRED) | TO(AS_DECLINED)},
    [AS_RESOLVED] = {"resolved", 1, 1, 0},
    [AS_REFERRED] = {"referred", 1, 1, 0},
    [AS_DECLINED] = {"declined", 1, 1, 0},
};

const char *assign_state_name(assign_state_t s)
{
    return s < AS_STATE_COUNT ? STATES[s].name : NULL;
}

int assign_state_parse(const char *s, size_t n)
{
    for (int i = 0; i < AS_STATE_COUNT; i++)
        if (strlen(STATES[i].name) == n && memcmp(STATES[i].name, s, n) == 0)
            return i;
    return -1;
}

int assign_is_final(assign_state_t s)
{
    return s < AS_STATE_COUNT && STATES[s].final;
}

int assign_update_status(const char *s, size_t n)
{
    int st = assign_state_parse(s, n);
    return st >= 0 && STATES[st].by_update ? st : -1;
}

void assign_update_statuses(char *buf, size_t size)
{
    size_t at = 0;
    buf[0] = '\0';
    for (int i = 0; i < AS_STATE_COUNT; i++)
        if (STATES[i].by_update && at < size)
            at += (size_t)snprintf(buf + at, size - at, "%s%s", at ? ", " : "", STATES[i].name);
}

int assign_may_move(assign_state_t from, assign_state_t to)
{
    return from < AS_STATE_COUNT && to < AS_STATE_COUNT && (STATES[from].next & TO(to)) != 0;
}

/* ---- effects ------------------------------------------------------------- */

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

void assign_fx_outcome(assign_effects_t *e, const char *agent)
{
    ADD_UNIQUE(e->outcome_to, e->n_outcome_to, e->cap_outcome_to, ID_LEN, agent);
}

void assign_fx_webhook(assign_effects_t *e, const char *id)
{
    ADD_UNIQUE(e->webhooks, e->n_webhooks, e->cap_webhooks, ID_LEN, id);
}

void assign_effects_clear(assign_effects_t *e)
{
    e->n_deliver = e->n_outcome_to = e->n_webhooks = 0;
    e->deadlines_changed = 0;
    e->escalations = 0;
    e->overdue_events = 0;
}

void assign_effects_free(assign_effects_t *e)
{
    free(e->deliver);
    free(e->outcome_to);
    free(e->webhooks);
    memset(e, 0, sizeof *e);
}

/* ---- the assignment record ----------------------------------------------- */

void assign_copy_str(char *dst, size_t size, const msgpack_object *o)
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

void assign_event_origin(const void *rec, size_t rl, char agent[ID_LEN], char ref[ID_LEN])
{
    agent[0] = ref[0] = '\0';
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    if (msgpack_unpack_next(&u, rec, rl, NULL) == MSGPACK_UNPACK_SUCCESS) {
        assign_copy_str(agent, ID_LEN, frame_map_get(&u.data, "agent"));
        assign_copy_str(ref, ID_LEN, frame_map_get(&u.data, "ref"));
    }
    msgpack_unpacked_destroy(&u);
}

int64_t assign_get_int(const msgpack_object *map, const char *key)
{
    int64_t v = 0;
    (void)frame_int(frame_map_get(map, key), &v); /* absent: 0 */
    return v;
}

/* The head of an assignment record (id, case, agency, state), the one reading of
 * those fields: 0 when the state is known and id and agency are there, else
 * STORE_CORRUPTED. Nothing sealed is opened. */
static int as_decode_head(const msgpack_object *m, as_brief_t *b)
{
    char st[32];
    memset(b, 0, sizeof *b);
    assign_copy_str(b->id, sizeof b->id, frame_map_get(m, "id"));
    assign_copy_str(b->case_id, sizeof b->case_id, frame_map_get(m, "case"));
    assign_copy_str(b->agency, sizeof b->agency, frame_map_get(m, "agency"));
    assign_copy_str(st, sizeof st, frame_map_get(m, "state"));
    int s = assign_state_parse(st, strlen(st));
    if (s < 0 || !b->id[0] || !b->agency[0])
        return STORE_CORRUPTED;
    b->state = (assign_state_t)s;
    return 0;
}

/* An escalation plan: [[after_ms, [channel, …]] or [after_ms, [channel, …], after_wd], …]. */
static void decode_plan(const msgpack_object *plan, step_t *steps, size_t *n)
{
    *n = 0;
    if (!plan || plan->type != MSGPACK_OBJECT_ARRAY)
        return;
    for (uint32_t i = 0; i < plan->via.array.size && *n < MAX_STEPS; i++) {
        const msgpack_object *st_o = &plan->via.array.ptr[i];
        if (st_o->type != MSGPACK_OBJECT_ARRAY || st_o->via.array.size < 2 ||
            st_o->via.array.size > 3)
            continue;
        step_t *sp = &steps[(*n)++];
        memset(sp, 0, sizeof *sp);
        sp->after_wd = CONFIG_NOT_WD;
        (void)frame_int(&st_o->via.array.ptr[0], &sp->after_ms);
        int64_t wd;
        if (st_o->via.array.size == 3 && frame_int(&st_o->via.array.ptr[2], &wd) && wd >= 0 &&
            wd <= INT32_MAX)
            sp->after_wd = (int)wd;
        const msgpack_object *nl = &st_o->via.array.ptr[1];
        if (nl->type == MSGPACK_OBJECT_ARRAY)
            for (uint32_t j = 0; j < nl->via.array.size && sp->n_notify < MAX_NOTIFY; j++)
                assign_copy_str(sp->notify[sp->n_notify++], ID_LEN, &nl->via.array.ptr[j]);
    }
}

static void pack_plan(msgpack_packer *pk, const step_t *steps, size_t n)
{
    msgpack_pack_array(pk, n);
    for (size_t i = 0; i < n; i++) {
        int wd = steps[i].after_wd >= 0;
        msgpack_pack_array(pk, wd ? 3 : 2);
        msgpack_pack_int64(pk, steps[i].after_ms);
        msgpack_pack_array(pk, steps[i].n_notify);
        for (size_t j = 0; j < steps[i].n_notify; j++)
            frame_pack_cstr(pk, steps[i].notify[j]);
        if (wd)
            msgpack_pack_int(pk, steps[i].after_wd);
    }
}

/* The whole record: the head (with its case required), the note opened, the plan. */
int assign_rec_decode(store_txn_t *t, const void *data, size_t len, as_t *a)
{
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    int rc = STORE_CORRUPTED;
    memset(a, 0, sizeof *a);
    if (msgpack_unpack_next(&u, data, len, NULL) == MSGPACK_UNPACK_SUCCESS &&
        u.data.type == MSGPACK_OBJECT_MAP) {
        const msgpack_object *m = &u.data;
        as_brief_t h;
        int head = as_decode_head(m, &h);
        memcpy(a->id, h.id, sizeof a->id);
        memcpy(a->case_id, h.case_id, sizeof a->case_id);
        memcpy(a->agency, h.agency, sizeof a->agency);
        assign_copy_str(a->type, sizeof a->type, frame_map_get(m, "type"));
        assign_copy_str(a->by, sizeof a->by, frame_map_get(m, "by"));
        assign_copy_str(a->to, sizeof a->to, frame_map_get(m, "to"));
        assign_copy_str(a->note, sizeof a->note, frame_map_get(m, "note"));
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
        /* a name, as in every record; a number in stores written before 2026-12 */
        const msgpack_object *sev = frame_map_get(m, "severity");
        const char *sn;
        size_t sl;
        a->severity = frame_str(sev, &sn, &sl) ? case_severity_parse(sn, sl)
                                                : (int)assign_get_int(m, "severity");
        if (a->severity < 0 || a->severity > 3)
            a->severity = 1; /* what case_severity_name shows: normal */
        a->created = assign_get_int(m, "created");
        a->ack_by = assign_get_int(m, "ack_by");
        a->acked_at = assign_get_int(m, "acked_at");
        a->next_due = assign_get_int(m, "next_due");
        a->level = (int)assign_get_int(m, "level");
        decode_plan(frame_map_get(m, "plan"), a->steps, &a->n_steps);
        /* the second deadline: absent in records from before it */
        const msgpack_object *rw = frame_map_get(m, "rw");
        if (rw && rw->type == MSGPACK_OBJECT_ARRAY && rw->via.array.size == 2) {
            int64_t wd = CONFIG_NOT_WD;
            a->has_rw = frame_int(&rw->via.array.ptr[0], &a->rw_ms) &&
                        frame_int(&rw->via.array.ptr[1], &wd);
            a->rw_wd = wd >= 0 && wd <= INT32_MAX ? (int)wd : CONFIG_NOT_WD;
        }
        a->resolve_by = assign_get_int(m, "resolve_by");
        a->final_at = assign_get_int(m, "final_at");
        a->rlevel = (int)assign_get_int(m, "rlevel");
        decode_plan(frame_map_get(m, "rplan"), a->rsteps, &a->n_rsteps);
        if (head == 0 && a->case_id[0]) {
            a->state = h.state;
            rc = 0;
        }
    }
    msgpack_unpacked_destroy(&u);
    return rc;
}

int assign_rec_put(store_txn_t *t, const as_t *a)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 16 + (a->has_rw ? 4 : 0));
    frame_pack_cstr(&pk, "id");       frame_pack_cstr(&pk, a->id);
    frame_pack_cstr(&pk, "case");     frame_pack_cstr(&pk, a->case_id);
    frame_pack_cstr(&pk, "agency");   frame_pack_cstr(&pk, a->agency);
    frame_pack_cstr(&pk, "type");     frame_pack_cstr(&pk, a->type);
    frame_pack_cstr(&pk, "state");    frame_pack_cstr(&pk, assign_state_name(a->state));
    frame_pack_cstr(&pk, "severity"); frame_pack_cstr(&pk, case_severity_name(a->severity));
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
    pack_plan(&pk, a->steps, a->n_steps);
    frame_pack_cstr(&pk, "final_at"); msgpack_pack_int64(&pk, a->final_at);
    if (a->has_rw) { /* the second deadline */
        frame_pack_cstr(&pk, "rw");
        msgpack_pack_array(&pk, 2);
        msgpack_pack_int64(&pk, a->rw_ms);
        msgpack_pack_int(&pk, a->rw_wd);
        frame_pack_cstr(&pk, "resolve_by"); msgpack_pack_int64(&pk, a->resolve_by);
        frame_pack_cstr(&pk, "rlevel");     msgpack_pack_int(&pk, a->rlevel);
        frame_pack_cstr(&pk, "rplan");
        pack_plan(&pk, a->rsteps, a->n_rsteps);
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

int assign_rec_get(store_txn_t *t, const char *id, as_t *a)
{
    const void *v;
    size_t vl;
    int rc = store_get(t, STORE_DB_ASSIGNMENTS, id, strlen(id), &v, &vl);
    return rc ? rc : assign_rec_decode(t, v, vl, a);
}

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
             : STORE_CORRUPTED;
    msgpack_unpacked_destroy(&u);
    return rc;
}

/* pending key: agency NUL assignment id. */
size_t assign_pending_key(char *k, size_t size, const char *agency, const char *id)
{
    util_fmt(k, size, "%s", agency);
    size_t a = strlen(k);
    util_fmt(k + a + 1, size - a - 1, "%s", id);
    return a + 1 + strlen(k + a + 1);
}

/* ---- the state machine --------------------------------------------------- */

/* The second deadline starts with the acknowledgement: resolve_by, and the
 * escalate_unresolved steps written in working days made clock times after it. */
static void start_resolve_deadline(const config_t *cfg, as_t *a, int64_t now)
{
    if (!a->has_rw || a->resolve_by)
        return;
    a->resolve_by = config_deadline(cfg, now, a->rw_ms, a->rw_wd);
    if (a->resolve_by <= 0)
        a->resolve_by = 1;
    for (size_t i = 0; i < a->n_rsteps; i++)
        if (a->rsteps[i].after_wd >= 0) {
            a->rsteps[i].after_ms =
                config_deadline(cfg, a->resolve_by, 0, a->rsteps[i].after_wd) - a->resolve_by;
            a->rsteps[i].after_wd = CONFIG_NOT_WD;
        }
}

/* The one place an assignment's state changes. */
static int set_state(const config_t *cfg, store_txn_t *t, as_t *a, assign_state_t to, int64_t now,
                     assign_effects_t *fx)
{
    assign_state_t from = a->state;
    int rc;
    if (from == to)
        return 0;
    if (!assign_may_move(from, to)) { /* the callers check first: a bug, refused whole */
        log_error("assign: %s: no move from %s to %s", a->id, assign_state_name(from),
                  assign_state_name(to));
        return STORE_ABORTED;
    }
    log_debug("assign: %s (%s, %s) %s -> %s", a->id, a->case_id, a->agency, assign_state_name(from),
             assign_state_name(to));
    a->state = to;
    if (!assign_is_final(from) && assign_is_final(to)) {
        a->final_at = now;
        if ((rc = assign_open_count_add(t, -1)))
            return rc;
    }
    if (from == AS_OPEN) {
        char k[2 * ID_LEN + 2];
        a->acked_at = now;
        if (!assign_is_final(to))
            start_resolve_deadline(cfg, a, now);
        if ((rc = store_del(t, STORE_DB_PENDING, k, assign_pending_key(k, sizeof k, a->agency, a->id),
                            NULL, 0)) ||
            (rc = assign_ack_due_put(t, a, 1)))
            return rc;
    }
    /* acknowledged: the ack escalation stops (the resolve one may start); final:
     * every escalation stops */
    if (from == AS_OPEN || assign_is_final(to))
        return assign_schedule(t, a, fx);
    return 0;
}

/* ---- making assignments -------------------------------------------------- */

/* case.assigned to the agency's own channels. */
static int tell_assigned(const config_t *cfg, store_txn_t *t, const as_t *a, int64_t now,
                         assign_effects_t *fx)
{
    const config_agency_t *ag = config_find_agency(cfg, a->agency);
    if (!ag || ag->n_channels == 0)
        return 0;
    json_t *data = json_pack("{s:s, s:s, s:s, s:s, s:s, s:I}", "case", a->case_id, "assignment",
                             a->id, "agency", a->agency, "event_type", a->type, "severity",
                             case_severity_name(a->severity), "ack_by", (json_int_t)a->ack_by);
    char text[512], when[64];
    config_local_time(cfg, a->ack_by, when, sizeof when);
    util_fmt(text, sizeof text, "【carehub】新案件 %s 已分派给%s，请于 %s 前确认。", a->case_id,
             assign_agency_name(cfg, a->agency), when);
    int rc = 0;
    for (size_t i = 0; i < ag->n_channels && !rc; i++) {
        const config_channel_t *ch = config_find_channel(cfg, ag->channels[i]);
        if (ch)
            rc = assign_notify_channel(t, ch, a->case_id, "case.assigned", data, text, now, fx);
    }
    json_decref(data);
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
        return STORE_CORRUPTED;
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 8;
        l->list = xrealloc(l->list, l->cap * sizeof *l->list);
    }
    util_fmt(l->list[l->n++].id, STORE_ID_MAX, "%s", id);
    return 0;
}

/* Every assignment of a case, loaded. The caller frees l->list. */
int assign_case_assignments(store_txn_t *t, const char *case_id, as_list_t *l)
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
            (!from || !assign_is_final(existing->list[i].state)))
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
    /* config_deadline: clock time, or working days (PROTOCOL §10); a referral keeps
     * the length of the window it came from */
    a.ack_by = spec   ? config_deadline(cfg, now, spec->ack_within_ms, spec->ack_within_wd)
               : from ? now + (from->ack_by - from->created)
                      : config_deadline(cfg, now, cfg->default_ack_within_ms,
                                        cfg->default_ack_within_wd);
    if (from) {
        a.n_steps = from->n_steps;
        memcpy(a.steps, from->steps, sizeof a.steps);
        /* and the second deadline's length and steps (as clock times once the one
         * it comes from was acknowledged) */
        a.has_rw = from->has_rw;
        a.rw_ms = from->rw_ms;
        a.rw_wd = from->rw_wd;
        a.n_rsteps = from->n_rsteps;
        memcpy(a.rsteps, from->rsteps, sizeof a.rsteps);
    } else if (spec) {
        if (spec->n_escalate > MAX_STEPS)
            log_warn("assign: workflow step for %s has %zu escalation steps; the first %d are used",
                     agency, spec->n_escalate, MAX_STEPS);
        for (size_t i = 0; i < spec->n_escalate && a.n_steps < MAX_STEPS; i++) {
            step_t *sp = &a.steps[a.n_steps++];
            /* a step in working days is stored as the clock time it makes after this
             * ack_by (records keep after_ms, as before working days) */
            sp->after_ms = config_deadline(cfg, a.ack_by, spec->escalate[i].after_ms,
                                           spec->escalate[i].after_wd) - a.ack_by;
            for (size_t j = 0; j < spec->escalate[i].n_notify && sp->n_notify < MAX_NOTIFY; j++)
                util_fmt(sp->notify[sp->n_notify++], ID_LEN, "%s", spec->escalate[i].notify[j]);
        }
        if (spec->has_resolve) {
            a.has_rw = 1;
            a.rw_ms = spec->resolve_within_ms;
            a.rw_wd = spec->resolve_within_wd;
        }
        if (spec->n_escalate_unresolved > MAX_STEPS)
            log_warn("assign: workflow step for %s has %zu escalate_unresolved steps; the first %d "
                     "are used", agency, spec->n_escalate_unresolved, MAX_STEPS);
        /* as written (working days stay working days until resolve_by is known) */
        for (size_t i = 0; i < spec->n_escalate_unresolved && a.n_rsteps < MAX_STEPS; i++) {
            const config_escalate_t *ce = &spec->escalate_unresolved[i];
            step_t *sp = &a.rsteps[a.n_rsteps++];
            sp->after_wd = ce->after_wd >= 0 ? ce->after_wd : CONFIG_NOT_WD;
            sp->after_ms = sp->after_wd >= 0 ? 0 : ce->after_ms;
            for (size_t j = 0; j < ce->n_notify && sp->n_notify < MAX_NOTIFY; j++)
                util_fmt(sp->notify[sp->n_notify++], ID_LEN, "%s", ce->notify[j]);
        }
    }
    for (size_t i = 0; i < a.n_steps; i++)
        a.steps[i].after_wd = CONFIG_NOT_WD; /* made clock times above */
    int rc;
    char pk[2 * ID_LEN + 2];
    if ((rc = assign_schedule(t, &a, fx)) || (rc = assign_rec_put(t, &a)) ||
        (rc = store_put(t, STORE_DB_CASE_ASSIGN, case_id, strlen(case_id), a.id, strlen(a.id), 1)) ||
        (rc = store_put(t, STORE_DB_PENDING, pk, assign_pending_key(pk, sizeof pk, agency, a.id), "", 0,
                        0)) ||
        (rc = assign_ack_due_put(t, &a, 0)) || (rc = assign_open_count_add(t, +1)) ||
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

int assign_on_event(const config_t *cfg, store_txn_t *t, const case_event_t *it,
                    const json_t *body, int64_t now, assign_effects_t *fx)
{
    route_hit_t hits[32];
    int matched = 0;
    size_t n = 0;
    /* A silenced event (silence.h) is routed nowhere: no assignment, no
     * fallback, and the agencies already in the case are not told again. */
    if (!it->silenced)
        n = route_match(cfg, it->type, body, hits, UTIL_ARRAY_LEN(hits), &matched);
    else
        matched = 1;
    as_list_t existing;
    int rc = assign_case_assignments(t, it->case_id, &existing);
    for (size_t i = 0; !rc && i < n; i++)
        rc = make_assignment(cfg, t, it->case_id, it->type, it->severity, hits[i].assign->agency,
                             hits[i].assign, NULL, now, &existing, fx);
    if (!rc && !matched && existing.n == 0 && cfg->fallback_agency &&
        config_find_agency(cfg, cfg->fallback_agency)) /* none configured: nobody to assign */
        rc = make_assignment(cfg, t, it->case_id, it->type, it->severity, cfg->fallback_agency,
                             NULL, NULL, now, &existing, fx);
    /* No assignment (assign: []): the case closes by itself unless events keep coming. */
    if (!rc)
        rc = assign_quiet_set(t, it->case_id,
                              existing.n ? 0
                                         : config_deadline(cfg, it->received, cfg->quiet_close_ms,
                                                           cfg->quiet_close_wd),
                              fx);
    /* A new event joined: the agencies that have not acknowledged see it again. */
    for (size_t i = 0; !rc && !it->silenced && i < existing.n; i++)
        if (existing.list[i].state == AS_OPEN)
            fx_deliver(fx, existing.list[i].id);
    free(existing.list);
    return rc;
}

/* ---- requests from agencies ---------------------------------------------- */

int assign_request(const config_t *cfg, store_txn_t *t, assign_request_t *r, assign_effects_t *fx)
{
    as_t a;
    int rc = assign_rec_get(t, r->assignment, &a);
    r->result = ASSIGN_OK;
    if (rc == STORE_NOTFOUND) {
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
        if ((rc = set_state(cfg, t, &a, AS_ACKNOWLEDGED, r->now, fx)))
            return rc;
        if (a.resolve_by > 0)
            fx_deliver(fx, a.id); /* the `case` message again, now with resolve_by */
        return assign_rec_put(t, &a);
    }
    int to = assign_update_status(r->status, strlen(r->status));
    if (to < 0) { /* proto.c checked it: cannot happen */
        r->result = ASSIGN_CONFLICT;
        util_fmt(r->detail, sizeof r->detail, "`%s` is not a status an agency sets", r->status);
        return 0;
    }
    if (assign_is_final(a.state) && to == (int)a.state)
        return 0; /* the same final status again: a retry */
    if (to != (int)a.state && !assign_may_move(a.state, (assign_state_t)to)) {
        r->result = ASSIGN_CONFLICT;
        util_fmt(r->detail, sizeof r->detail, "assignment %s is already %s (final)", a.id,
                 assign_state_name(a.state));
        return 0;
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
    int64_t had_resolve_by = a.resolve_by;
    if ((rc = set_state(cfg, t, &a, (assign_state_t)to, r->now, fx)) || (rc = assign_rec_put(t, &a)))
        return rc;
    if (!had_resolve_by && a.resolve_by > 0)
        fx_deliver(fx, a.id); /* in progress straight from open: the `case` with resolve_by */
    if (to == AS_REFERRED || to == AS_DECLINED) {
        as_list_t all;
        const char *target = to == AS_REFERRED ? r->to : cfg->fallback_agency;
        rc = assign_case_assignments(t, a.case_id, &all);
        if (!rc && target)
            rc = make_assignment(cfg, t, a.case_id, a.type, a.severity, target, NULL, &a, r->now,
                                 &all, fx);
        free(all.list);
        if (rc)
            return rc;
    }
    if (assign_is_final(a.state))
        return assign_check_case(cfg, t, &a, r->now, fx);
    return 0;
}

/* ---- lookups ------------------------------------------------------------- */

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
    return assign_agency_state(t, assignment, agency, NULL);
}

int assign_agency_state(store_txn_t *t, const char *assignment, char *agency, assign_state_t *state)
{
    as_brief_t b;
    int rc = as_get_brief(t, assignment, &b);
    if (rc == 0) {
        util_fmt(agency, STORE_ID_MAX, "%s", b.agency);
        if (state)
            *state = b.state;
    }
    return rc;
}
