/*
 * assign_deadline.c — the deadline index and what falls due in it: an
 * assignment's escalation steps (scheduled, fired), a quiet close of a case
 * without assignments, and the retention purge of a resolved case.
 */
#include "assign.h"

#include <msgpack.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "register.h"
#include "trail.h"
#include "util.h"

#include "assign_int.h"

/* Deadline index key: due (8 bytes big-endian) + assignment id. */
size_t assign_deadline_key(unsigned char *k, int64_t due, const char *id)
{
    uint64_t d = (uint64_t)(due < 0 ? 0 : due);
    for (int i = 7; i >= 0; i--, d >>= 8)
        k[i] = (unsigned char)(d & 0xff);
    size_t n = strlen(id);
    memcpy(k + 8, id, n);
    return 8 + n;
}

int64_t assign_deadline_due(const void *k)
{
    const unsigned char *b = k;
    uint64_t d = 0;
    for (int i = 0; i < 8; i++)
        d = (d << 8) | b[i];
    return (int64_t)d;
}

/* The deadline index holds typed timers (assign_due_kind_t, assign.h). A key
 * is the due time (8 bytes big-endian, so the first key is the next to fall
 * due), a kind byte and the id the kind fires on (an assignment, a case, a
 * register entry's child key). The kind bytes are below any id character: a
 * key of a carehubd from before them (an id right after the time, told apart
 * by its prefix) is recognised and rewritten once (assign_deadlines_upgrade). */
typedef assign_due_kind_t due_kind_t;
#define DUE_STEP ASSIGN_DUE_STEP
#define DUE_QUIET ASSIGN_DUE_QUIET
#define DUE_PURGE ASSIGN_DUE_PURGE
#define DUE_KIND_END ASSIGN_DUE_KIND_END
#define DUE_KEY_MAX (8 + 1 + ASSIGN_DUE_ID_MAX)

static size_t due_key(unsigned char *k, int64_t due, due_kind_t kind, const char *id)
{
    assign_deadline_key(k, due, ""); /* the 8-byte time */
    k[8] = (unsigned char)kind;
    size_t n = strnlen(id, ASSIGN_DUE_ID_MAX - 1);
    memcpy(k + 9, id, n);
    return 9 + n;
}

int assign_due_has(store_txn_t *t, assign_due_kind_t kind, const char *id, int64_t due)
{
    unsigned char k[DUE_KEY_MAX];
    const void *v;
    size_t vl;
    return store_get(t, STORE_DB_DEADLINES, k, due_key(k, due, kind, id), &v, &vl);
}

int assign_due_set(store_txn_t *t, assign_due_kind_t kind, const char *id, int64_t old_due,
                   int64_t new_due, assign_effects_t *fx)
{
    unsigned char k[DUE_KEY_MAX];
    int rc = 0;
    if (old_due == new_due)
        return 0;
    if (old_due > 0 && (rc = store_del(t, STORE_DB_DEADLINES, k, due_key(k, old_due, kind, id), NULL, 0)))
        return rc;
    if (new_due > 0 && (rc = store_put(t, STORE_DB_DEADLINES, k, due_key(k, new_due, kind, id), "", 0, 0)))
        return rc;
    fx->deadlines_changed = 1;
    return 0;
}

/* Schedule the next escalation step (or none) and keep the index in step. */
int assign_schedule(store_txn_t *t, as_t *a, assign_effects_t *fx)
{
    unsigned char k[DUE_KEY_MAX];
    int rc;
    if (a->next_due &&
        (rc = store_del(t, STORE_DB_DEADLINES, k, due_key(k, a->next_due, DUE_STEP, a->id), NULL, 0)))
        return rc;
    a->next_due = 0;
    if (a->state == AS_OPEN && (size_t)a->level < a->n_steps)
        a->next_due = a->ack_by + a->steps[a->level].after_ms;
    else if (assign_resolve_stage(a))
        a->next_due = a->resolve_by + a->rsteps[a->rlevel].after_ms;
    if (a->next_due) {
        if (a->next_due <= 0)
            a->next_due = 1;
        if ((rc = store_put(t, STORE_DB_DEADLINES, k, due_key(k, a->next_due, DUE_STEP, a->id), "", 0,
                            0)))
            return rc;
    }
    fx->deadlines_changed = 1;
    return 0;
}

/* Quiet close: a case without assignments closes after broker.quiet_close
 * without a new event. Its entry shares the deadline index (DUE_QUIET);
 * STORE_DB_QUIET holds the due time so a later event can move it. */
int assign_quiet_set(store_txn_t *t, const char *case_id, int64_t due, assign_effects_t *fx)
{
    const void *v;
    size_t vl;
    unsigned char k[DUE_KEY_MAX], d[8];
    int rc = store_get(t, STORE_DB_QUIET, case_id, strlen(case_id), &v, &vl);
    if (rc == STORE_NOTFOUND && due <= 0)
        return 0; /* nothing to cancel: the common case of an assigned case */
    if (rc == 0 && vl == 8) {
        int64_t old = assign_deadline_due(v);
        if ((rc = store_del(t, STORE_DB_DEADLINES, k, due_key(k, old, DUE_QUIET, case_id), NULL, 0)))
            return rc;
    } else if (rc && rc != STORE_NOTFOUND) {
        return rc;
    }
    fx->deadlines_changed = 1;
    if (due <= 0) /* cancel */
        return store_del(t, STORE_DB_QUIET, case_id, strlen(case_id), NULL, 0);
    assign_deadline_key(d, due, ""); /* the 8-byte big-endian time */
    if ((rc = store_put(t, STORE_DB_QUIET, case_id, strlen(case_id), d, 8, 0)))
        return rc;
    return store_put(t, STORE_DB_DEADLINES, k, due_key(k, due, DUE_QUIET, case_id), "", 0, 0);
}

/* ---- escalation steps ---------------------------------------------------- */

typedef struct {
    int64_t now;
    size_t max;
    char (*ids)[ASSIGN_DUE_ID_MAX];
    int64_t *dues;
    due_kind_t *kinds;
    size_t n;
} due_ctx_t;

int assign_due_key_parse(const void *k, size_t kl, int *kind, char id[ASSIGN_DUE_ID_MAX])
{
    const unsigned char *b = k;
    if (kl <= 9 || kl - 9 >= ASSIGN_DUE_ID_MAX || b[8] < DUE_STEP || b[8] >= DUE_KIND_END)
        return -1;
    *kind = b[8];
    memcpy(id, b + 9, kl - 9);
    id[kl - 9] = '\0';
    return 0;
}

static int collect_due(void *ud, const void *k, size_t kl, const void *v, size_t vl)
{
    (void)v;
    (void)vl;
    due_ctx_t *c = ud;
    const unsigned char *b = k;
    if (kl <= 9 || kl - 9 >= ASSIGN_DUE_ID_MAX || b[8] < DUE_STEP || b[8] >= DUE_KIND_END)
        return STORE_CORRUPTED;
    int64_t due = assign_deadline_due(k);
    if (due > c->now || c->n == c->max)
        return STORE_EACH_STOP;
    c->kinds[c->n] = (due_kind_t)b[8];
    memcpy(c->ids[c->n], b + 9, kl - 9);
    c->ids[c->n][kl - 9] = '\0';
    c->dues[c->n] = due;
    c->n++;
    return 0;
}

/* Fire the current step of one overdue assignment and schedule the next: of
 * the acknowledgement deadline while open (stage "ack"), of resolve_by once
 * acknowledged (stage "resolve"; `level` counts that stage's steps from 1). */
static int fire(const config_t *cfg, store_txn_t *t, as_t *a, int64_t now, assign_effects_t *fx)
{
    int resolve = a->state != AS_OPEN;
    int level = (resolve ? a->rlevel : a->level) + 1; /* 1-based in notices */
    const step_t *sp = resolve ? &a->rsteps[a->rlevel] : &a->steps[a->level];
    int64_t due = resolve ? a->resolve_by : a->ack_by;
    int64_t overdue_min = (now - due) / 60000;
    json_t *data = json_pack("{s:s, s:s, s:s, s:s, s:s, s:I, s:i, s:s}", "case", a->case_id,
                             "assignment", a->id, "agency", a->agency, "event_type", a->type,
                             "severity", case_severity_name(a->severity), "ack_by",
                             (json_int_t)a->ack_by, "level", level, "stage",
                             resolve ? "resolve" : "ack");
    char text[512], when[64];
    config_local_time(cfg, due, when, sizeof when);
    if (resolve) {
        json_object_set_new(data, "resolve_by", json_integer(a->resolve_by));
        util_fmt(text, sizeof text,
                 "【carehub】案件 %s 由%s办理，办结时限 %s 已过 %lld 分钟仍未办结（第%d级升级）。",
                 a->case_id, assign_agency_name(cfg, a->agency), when,
                 (long long)(overdue_min < 0 ? 0 : overdue_min), level);
    } else {
        util_fmt(text, sizeof text,
                 "【carehub】案件 %s 分派给%s，确认时限 %s 已过 %lld 分钟仍未确认（第%d级升级）。",
                 a->case_id, assign_agency_name(cfg, a->agency), when,
                 (long long)(overdue_min < 0 ? 0 : overdue_min), level);
    }
    int rc = 0;
    for (size_t i = 0; i < sp->n_notify && !rc; i++) {
        const config_channel_t *ch = config_find_channel(cfg, sp->notify[i]);
        if (ch)
            rc = assign_notify_channel(t, ch, a->case_id, "assignment.overdue", data, text, now, fx);
        else
            log_warn("assign: %s escalation names channel %s, which is no longer configured", a->id,
                     sp->notify[i]);
    }
    json_decref(data);
    if (rc)
        return rc;
    log_debug("assign: %s overdue: %s escalation step %d fired", a->id, resolve ? "resolve" : "ack",
              level);
    fx->escalations++;
    if (resolve)
        a->rlevel++;
    else
        a->level++;
    if ((rc = assign_schedule(t, a, fx)))
        return rc;
    return assign_rec_put(t, a);
}

/* ---- retention ----------------------------------------------------------- */

int assign_purge_schedule(const config_t *cfg, store_txn_t *t, const char *case_id, int64_t now,
                          assign_effects_t *fx)
{
    if (cfg->privacy_off || cfg->retention_ms <= 0)
        return 0;
    unsigned char k[DUE_KEY_MAX];
    int rc = store_put(t, STORE_DB_DEADLINES, k, due_key(k, now + cfg->retention_ms, DUE_PURGE, case_id),
                       "", 0, 0);
    if (rc == 0)
        fx->deadlines_changed = 1;
    return rc;
}

typedef struct {
    const config_t *cfg;
    store_txn_t *t;
    const char *case_id;
    int rc;
} purge_ctx_t;

/* What an event left beside its record, keyed by its agent: the idempotency
 * entry (agent, ref: the client's own id, which may name a child) and the
 * outcome waiting for that agent's `received`. */
static int purge_event_traces(purge_ctx_t *c, const char *ev, const void *rec, size_t rl)
{
    char agent[ID_LEN], ref[ID_LEN];
    assign_event_origin(rec, rl, agent, ref);
    if (!agent[0] || !ref[0])
        return STORE_CORRUPTED;
    char key[2 * ID_LEN + 8], oid[ID_LEN + 8];
    size_t kl = store_pair_key(key, sizeof key, agent, ref);
    int rc = kl ? store_del(c->t, STORE_DB_IDEM, key, kl, NULL, 0) : STORE_CORRUPTED;
    util_fmt(oid, sizeof oid, "out-%s", ev);
    if (!rc)
        rc = store_del(c->t, STORE_DB_OUTCOMES, key, assign_pending_key(key, sizeof key, agent, oid),
                       NULL, 0);
    return rc;
}

static int purge_event(void *ud, const void *k, size_t kl, const void *v, size_t vl)
{
    (void)k;
    (void)kl;
    purge_ctx_t *c = ud;
    char ev[STORE_ID_MAX];
    if (store_copy_id(v, vl, ev, sizeof ev))
        return STORE_CORRUPTED;
    const void *rec;
    size_t rl;
    int rc = store_get(c->t, STORE_DB_EVENTS, ev, vl, &rec, &rl);
    if (rc == STORE_NOTFOUND)
        return 0;
    if (rc || (rc = purge_event_traces(c, ev, rec, rl)) ||
        (rc = store_del(c->t, STORE_DB_EVENTS, ev, vl, NULL, 0)))
        return rc;
    return trail_append(c->t, c->case_id, "purged", "broker", STORE_DB_EVENTS, ev, "", 0, NULL);
}

/* The records of first deliveries of an assignment to its agency's agents. */
static int purge_deliveries(purge_ctx_t *c, const char *agency, const char *assignment)
{
    for (size_t i = 0; i < c->cfg->n_agents; i++) {
        const config_agent_t *ag = &c->cfg->agents[i];
        if (!ag->agency || strcmp(ag->agency, agency) != 0)
            continue;
        char key[2 * ID_LEN + 8];
        size_t kl = store_pair_key(key, sizeof key, ag->id, assignment);
        int rc = kl ? store_del(c->t, STORE_DB_DELIVERED, key, kl, NULL, 0) : 0;
        if (rc)
            return rc;
    }
    return 0;
}

static int purge_assignment(void *ud, const void *k, size_t kl, const void *v, size_t vl)
{
    (void)k;
    (void)kl;
    purge_ctx_t *c = ud;
    char id[STORE_ID_MAX], agency[STORE_ID_MAX], pk[2 * ID_LEN + 2];
    if (store_copy_id(v, vl, id, sizeof id))
        return STORE_CORRUPTED;
    int rc = assign_agency(c->t, id, agency);
    if (rc == STORE_NOTFOUND)
        return 0;
    if (rc ||
        (rc = store_del(c->t, STORE_DB_PENDING, pk, assign_pending_key(pk, sizeof pk, agency, id), NULL,
                        0)) ||
        (rc = purge_deliveries(c, agency, id)) ||
        (rc = store_del(c->t, STORE_DB_ASSIGNMENTS, id, vl, NULL, 0)))
        return rc;
    return trail_append(c->t, c->case_id, "purged", "broker", STORE_DB_ASSIGNMENTS, id, "", 0, NULL);
}

/* privacy.retention passed since the case ended (resolved or closed quietly):
 * its events (the children's data) with their idempotency entries (the
 * clients' refs) and unconfirmed outcomes, its assignments with their notes
 * and delivery records, and its log go; the trail keeps a stub for each (that
 * it existed, when, that it was purged) and its hashes. A retry of a purged
 * event's id after that is stored as a new event. */
static int purge_case(const config_t *cfg, store_txn_t *t, const char *case_id, int64_t due,
                      int64_t now, assign_effects_t *fx, int *fired)
{
    (void)now;
    unsigned char k[DUE_KEY_MAX];
    *fired = 1;
    int rc = store_del(t, STORE_DB_DEADLINES, k, due_key(k, due, DUE_PURGE, case_id), NULL, 0);
    fx->deadlines_changed = 1;
    if (rc)
        return rc;
    const void *v;
    size_t vl;
    rc = store_get(t, STORE_DB_CASES, case_id, strlen(case_id), &v, &vl);
    if (rc == STORE_NOTFOUND)
        return 0; /* purged already */
    if (rc)
        return rc;
    purge_ctx_t c = {cfg, t, case_id, 0};
    size_t cl = strlen(case_id);
    if ((rc = store_each_case_event(t, case_id, purge_event, &c)) ||
        (rc = store_each(t, STORE_DB_CASE_ASSIGN, case_id, cl, 1, purge_assignment, &c)) ||
        (rc = store_del_case_events(t, case_id)) ||
        (rc = store_del(t, STORE_DB_CASE_ASSIGN, case_id, cl, NULL, 0)) ||
        (rc = store_del(t, STORE_DB_CASE_LOG, case_id, cl, NULL, 0)) ||
        (rc = store_del(t, STORE_DB_CASES, case_id, cl, NULL, 0)))
        return rc;
    log_info("assign: case %s purged (privacy.retention passed since it ended)", case_id);
    return trail_append(t, case_id, "purged", "broker", STORE_DB_CASES, case_id, "", 0, NULL);
}

/* ---- quiet close --------------------------------------------------------- */

/* A quiet-close entry fell due: close the case if it still has no assignment;
 * its data is purged privacy.retention later, as a resolved case's. */
static int quiet_close(const config_t *cfg, store_txn_t *t, const char *case_id, int64_t due,
                       int64_t now, assign_effects_t *fx, int *fired)
{
    unsigned char k[DUE_KEY_MAX];
    *fired = 1;
    int rc = store_del(t, STORE_DB_DEADLINES, k, due_key(k, due, DUE_QUIET, case_id), NULL, 0);
    if (!rc)
        rc = store_del(t, STORE_DB_QUIET, case_id, strlen(case_id), NULL, 0);
    fx->deadlines_changed = 1;
    if (rc)
        return rc;
    as_list_t all;
    rc = assign_case_assignments(t, case_id, &all);
    size_t n = all.n;
    free(all.list);
    if (rc || n)
        return rc; /* assigned meanwhile: it closes when resolved */
    int moved;
    rc = case_set_status(t, case_id, CASE_CLOSED, now, &moved);
    if (rc == STORE_NOTFOUND || (!rc && !moved))
        return 0;
    if (!rc)
        log_info("assign: case %s closed: no assignment and no new event for quiet_close", case_id);
    return rc ? rc : assign_purge_schedule(cfg, t, case_id, now, fx);
}

/* ---- firing what is due -------------------------------------------------- */

/* An escalation step fell due: fire it unless the entry is stale. */
static int step_due(const config_t *cfg, store_txn_t *t, const char *id, int64_t due, int64_t now,
                    assign_effects_t *fx, int *fired)
{
    as_t a;
    *fired = 0;
    int rc = assign_rec_get(t, id, &a);
    if (rc == STORE_NOTFOUND) { /* an index entry without its record: drop it */
        unsigned char k[DUE_KEY_MAX];
        log_warn("assign: deadline for unknown assignment %s dropped", id);
        return store_del(t, STORE_DB_DEADLINES, k, due_key(k, due, DUE_STEP, id), NULL, 0);
    }
    if (rc)
        return rc;
    int open_step = a.state == AS_OPEN && (size_t)a.level < a.n_steps;
    if (due != a.next_due || (!open_step && !assign_resolve_stage(&a))) {
        /* stale entry: drop it, re-sync the index from the record */
        unsigned char k[DUE_KEY_MAX];
        if (due != a.next_due &&
            (rc = store_del(t, STORE_DB_DEADLINES, k, due_key(k, due, DUE_STEP, id), NULL, 0)))
            return rc;
        rc = assign_schedule(t, &a, fx);
        return rc ? rc : assign_rec_put(t, &a);
    }
    *fired = 1;
    return fire(cfg, t, &a, now, fx);
}

/* What each kind of timer does when it falls due (it removes its own entry). */
static int (*const DUE_FIRE[DUE_KIND_END])(const config_t *cfg, store_txn_t *t, const char *id,
                                           int64_t due, int64_t now, assign_effects_t *fx,
                                           int *fired) = {
    [DUE_STEP] = step_due,
    [DUE_QUIET] = quiet_close,
    [DUE_PURGE] = purge_case,
    [ASSIGN_DUE_CONTACT] = register_due_contact,
    [ASSIGN_DUE_VISIT] = register_due_visit,
    [ASSIGN_DUE_REMIND_CONTACT] = register_remind_contact,
    [ASSIGN_DUE_REMIND_VISIT] = register_remind_visit,
};

int assign_fire_due(const config_t *cfg, store_txn_t *t, int64_t now, size_t max, size_t *fired,
                    assign_effects_t *fx)
{
    *fired = 0;
    size_t m = max ? max : 1;
    due_ctx_t c = {now, max, xcalloc(m, ASSIGN_DUE_ID_MAX), xcalloc(m, sizeof(int64_t)),
                   xcalloc(m, sizeof(due_kind_t)), 0};
    int rc = store_each(t, STORE_DB_DEADLINES, NULL, 0, 0, collect_due, &c);
    for (size_t i = 0; !rc && i < c.n; i++) {
        int one = 0;
        rc = DUE_FIRE[c.kinds[i]](cfg, t, c.ids[i], c.dues[i], now, fx, &one);
        if (!rc && one)
            (*fired)++;
    }
    free(c.ids);
    free(c.dues);
    free(c.kinds);
    return rc;
}

/* ---- keys of a carehubd from before the kind byte -------------------------- */

typedef struct {
    unsigned char (*keys)[DUE_KEY_MAX];
    size_t *lens;
    size_t n, cap;
} legacy_t;

static int collect_legacy(void *ud, const void *k, size_t kl, const void *v, size_t vl)
{
    (void)v;
    (void)vl;
    legacy_t *l = ud;
    const unsigned char *b = k;
    if (kl <= 8 || b[8] < 0x20)
        return 0; /* typed (or corrupt: collect_due says so) */
    if (kl > DUE_KEY_MAX)
        return STORE_CORRUPTED;
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 64;
        l->keys = xrealloc(l->keys, l->cap * sizeof *l->keys);
        l->lens = xrealloc(l->lens, l->cap * sizeof *l->lens);
    }
    memcpy(l->keys[l->n], k, kl);
    l->lens[l->n++] = kl;
    return 0;
}

/* Set once the index holds typed keys only: later starts skip the walk. */
#define TYPED_MARK "deadlines.typed"

static int upgrade_txn(store_txn_t *t, void *ud)
{
    legacy_t *l = ud;
    const void *v;
    size_t vl;
    int rc = store_get(t, STORE_DB_COUNTERS, TYPED_MARK, strlen(TYPED_MARK), &v, &vl);
    if (rc != STORE_NOTFOUND)
        return rc; /* done before (or unreadable) */
    rc = store_each(t, STORE_DB_DEADLINES, NULL, 0, 0, collect_legacy, l);
    for (size_t i = 0; !rc && i < l->n; i++) {
        char id[STORE_ID_MAX + 8];
        size_t idl = l->lens[i] - 8;
        if (idl >= sizeof id)
            return STORE_CORRUPTED;
        memcpy(id, l->keys[i] + 8, idl);
        id[idl] = '\0';
        due_kind_t kind = DUE_STEP; /* "as-…" */
        const char *target = id;
        if (strncmp(id, "purge:", 6) == 0) {
            kind = DUE_PURGE;
            target = id + 6;
        } else if (strncmp(id, "case-", 5) == 0) {
            kind = DUE_QUIET;
        }
        unsigned char k[DUE_KEY_MAX];
        if (strlen(target) >= STORE_ID_MAX)
            return STORE_CORRUPTED;
        if ((rc = store_del(t, STORE_DB_DEADLINES, l->keys[i], l->lens[i], NULL, 0)) ||
            (rc = store_put(t, STORE_DB_DEADLINES, k,
                            due_key(k, assign_deadline_due(l->keys[i]), kind, target), "", 0, 0)))
            return rc;
    }
    return rc ? rc : store_put(t, STORE_DB_COUNTERS, TYPED_MARK, strlen(TYPED_MARK), "", 0, 0);
}

int assign_deadlines_upgrade(store_t *st)
{
    int marked = store_marked(st, TYPED_MARK);
    if (marked)
        return marked < 0 ? -1 : 0; /* rewritten before: no write transaction at start */
    legacy_t l = {NULL, NULL, 0, 0};
    store_rc_t rc = store_write(st, upgrade_txn, &l);
    if (rc == STORE_OK && l.n)
        log_info("assign: %zu deadline(s) of a carehubd from before the kind byte rewritten", l.n);
    free(l.keys);
    free(l.lens);
    return rc == STORE_OK ? 0 : -1;
}

static int first_due(void *ud, const void *k, size_t kl, const void *v, size_t vl)
{
    (void)v;
    (void)vl;
    int64_t *due = ud;
    if (kl < 8)
        return STORE_CORRUPTED;
    *due = assign_deadline_due(k);
    return STORE_EACH_STOP;
}

int assign_next_due(store_txn_t *t, int64_t *due)
{
    *due = INT64_MAX;
    return store_each(t, STORE_DB_DEADLINES, NULL, 0, 0, first_due, due);
}
