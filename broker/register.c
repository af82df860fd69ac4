/*
 * register.c — the child directors' register and the visit rhythm (see
 * register.h): the entry record and its codec, enrolments and visits, the
 * timers of each child in the deadline index, visit_overdue and reminders when
 * they fall due, recomputing at start after a rules change. The reads
 * (figures, a director's due list, the sample) are in register_read.c.
 */
#include "register.h"

#include <msgpack.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "register_int.h"
#include "route.h"
#include "trail.h"
#include "util.h"

static const char *const KIND_NAMES[REGISTER_KINDS] = {"contact", "home_visit"};
/* The record keys of the per-kind fields, in register_kind_t order. */
static const char *const K_LAST[REGISTER_KINDS] = {"contact", "visit"};
static const char *const K_DUE[REGISTER_KINDS] = {"c_due", "v_due"};
static const char *const K_REM[REGISTER_KINDS] = {"c_rem", "v_rem"};
static const char *const K_FIRED[REGISTER_KINDS] = {"c_fired", "v_fired"};
static const char *const K_OWED[REGISTER_KINDS] = {"c_owed", "v_owed"};
static const assign_due_kind_t DUE_KIND[REGISTER_KINDS] = {ASSIGN_DUE_CONTACT, ASSIGN_DUE_VISIT};
static const assign_due_kind_t REM_KIND[REGISTER_KINDS] = {ASSIGN_DUE_REMIND_CONTACT,
                                                           ASSIGN_DUE_REMIND_VISIT};

const char *register_kind_name(register_kind_t k)
{
    return k < REGISTER_KINDS ? KIND_NAMES[k] : "?";
}

/* ---- the record ---------------------------------------------------------------------- */

static void copy_str(char *dst, size_t size, const msgpack_object *o)
{
    const char *s;
    size_t n;
    if (!frame_str(o, &s, &n))
        n = 0;
    if (n >= size)
        n = size - 1;
    if (n)
        memcpy(dst, s, n);
    dst[n] = '\0';
}

static int64_t get_int(const msgpack_object *map, const char *key)
{
    int64_t v = 0;
    return frame_int(frame_map_get(map, key), &v) ? v : 0;
}

int reg_decode(const void *v, size_t vl, reg_t *r, int with_entry)
{
    memset(r, 0, sizeof *r);
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    int rc = 0;
    if (msgpack_unpack_next(&u, v, vl, NULL) != MSGPACK_UNPACK_SUCCESS ||
        u.data.type != MSGPACK_OBJECT_MAP) {
        rc = STORE_CORRUPTED;
        goto out;
    }
    const msgpack_object *m = &u.data;
    copy_str(r->director, sizeof r->director, frame_map_get(m, "director"));
    copy_str(r->village, sizeof r->village, frame_map_get(m, "village"));
    copy_str(r->risk, sizeof r->risk, frame_map_get(m, "risk"));
    copy_str(r->rhythm, sizeof r->rhythm, frame_map_get(m, "rhythm"));
    copy_str(r->enrol_case, sizeof r->enrol_case, frame_map_get(m, "enrol_case"));
    copy_str(r->visit_case, sizeof r->visit_case, frame_map_get(m, "visit_case"));
    const msgpack_object *a = frame_map_get(m, "active");
    r->active = a && a->type == MSGPACK_OBJECT_BOOLEAN && a->via.boolean;
    r->enrolled = get_int(m, "enrolled");
    r->updated = get_int(m, "updated");
    for (int k = 0; k < REGISTER_KINDS; k++) {
        r->last[k] = get_int(m, K_LAST[k]);
        r->due[k] = get_int(m, K_DUE[k]);
        r->rem[k] = get_int(m, K_REM[k]);
        r->fired[k] = get_int(m, K_FIRED[k]);
        r->owed[k] = get_int(m, K_OWED[k]);
    }
    const msgpack_object *e = frame_map_get(m, "entry");
    if (!r->director[0] || !e || e->type != MSGPACK_OBJECT_BIN) {
        rc = STORE_CORRUPTED;
    } else if (with_entry) {
        r->entry = xmalloc(e->via.bin.size ? e->via.bin.size : 1);
        memcpy(r->entry, e->via.bin.ptr, e->via.bin.size);
        r->entry_len = e->via.bin.size;
    }
out:
    msgpack_unpacked_destroy(&u);
    return rc;
}

void reg_free(reg_t *r)
{
    free(r->entry);
    r->entry = NULL;
}

static void pack_str(msgpack_packer *pk, const char *k, const char *v)
{
    frame_pack_cstr(pk, k);
    frame_pack_cstr(pk, v);
}

static void pack_int(msgpack_packer *pk, const char *k, int64_t v)
{
    frame_pack_cstr(pk, k);
    msgpack_pack_int64(pk, v);
}

int reg_put(store_txn_t *t, const char *key, const reg_t *r)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 10 + 5 * REGISTER_KINDS);
    pack_str(&pk, "director", r->director);
    pack_str(&pk, "village", r->village);
    pack_str(&pk, "risk", r->risk);
    pack_str(&pk, "rhythm", r->rhythm);
    frame_pack_cstr(&pk, "active");
    if (r->active)
        msgpack_pack_true(&pk);
    else
        msgpack_pack_false(&pk);
    pack_int(&pk, "enrolled", r->enrolled);
    pack_int(&pk, "updated", r->updated);
    for (int k = 0; k < REGISTER_KINDS; k++) {
        pack_int(&pk, K_LAST[k], r->last[k]);
        pack_int(&pk, K_DUE[k], r->due[k]);
        pack_int(&pk, K_REM[k], r->rem[k]);
        pack_int(&pk, K_FIRED[k], r->fired[k]);
        pack_int(&pk, K_OWED[k], r->owed[k]);
    }
    pack_str(&pk, "enrol_case", r->enrol_case);
    pack_str(&pk, "visit_case", r->visit_case);
    frame_pack_cstr(&pk, "entry");
    msgpack_pack_bin(&pk, r->entry_len);
    msgpack_pack_bin_body(&pk, r->entry, r->entry_len);
    int rc = store_put(t, STORE_DB_REGISTER, key, strlen(key), sb.data, sb.size, 0);
    msgpack_sbuffer_destroy(&sb);
    return rc;
}

/* The entry record of a child key: 0, STORE_NOTFOUND or STORE_CORRUPTED. */
static int reg_get(store_txn_t *t, const char *key, reg_t *r)
{
    const void *v;
    size_t vl;
    int rc = store_get(t, STORE_DB_REGISTER, key, strlen(key), &v, &vl);
    return rc ? rc : reg_decode(v, vl, r, 1);
}

void reg_entry_id(const char *key, char out[REGISTER_ENTRY_ID_MAX])
{
    unsigned char h[12];
    crypto_generichash(h, sizeof h, (const unsigned char *)key, strlen(key), NULL, 0);
    memcpy(out, "rg-", 3);
    sodium_bin2hex(out + 3, REGISTER_ENTRY_ID_MAX - 3, h, sizeof h);
}

int reg_entry_open(store_txn_t *t, const char *key, const reg_t *r, msgpack_sbuffer *body,
                   msgpack_unpacked *u)
{
    msgpack_sbuffer_init(body);
    msgpack_unpacked_init(u);
    int rc = store_txn_open(t, key, r->entry, r->entry_len, body);
    if (rc == 0 && (msgpack_unpack_next(u, body->data, body->size, NULL) != MSGPACK_UNPACK_SUCCESS ||
                    u->data.type != MSGPACK_OBJECT_MAP))
        rc = STORE_CORRUPTED;
    return rc;
}

void reg_entry_close(msgpack_sbuffer *body, msgpack_unpacked *u)
{
    msgpack_unpacked_destroy(u);
    if (body->data)
        sodium_memzero(body->data, body->alloc);
    msgpack_sbuffer_destroy(body);
}

const config_rhythm_t *reg_rule(const config_t *cfg, const char *name)
{
    for (size_t i = 0; name[0] && i < cfg->n_rhythms; i++)
        if (strcmp(cfg->rhythms[i].name, name) == 0)
            return &cfg->rhythms[i];
    return NULL;
}

int64_t reg_next(const config_t *cfg, const config_rhythm_t *rule, register_kind_t k, int64_t from)
{
    return k == REGISTER_CONTACT
               ? config_deadline(cfg, from, rule->contact_every_ms, rule->contact_every_wd)
               : config_deadline(cfg, from, rule->visit_every_ms, rule->visit_every_wd);
}

int64_t reg_owed(const reg_t *r, register_kind_t k)
{
    return r->owed[k] ? r->owed[k] : r->due[k];
}

int64_t reg_base(const reg_t *r, register_kind_t k)
{
    return r->last[k] > r->enrolled ? r->last[k] : r->enrolled;
}

/* ---- timers -------------------------------------------------------------------------- */

static void reminder_id(const char *key, register_kind_t k, int64_t due, char out[CAREHUB_ID_MAX + 1])
{
    char entry[REGISTER_ENTRY_ID_MAX];
    reg_entry_id(key, entry);
    util_fmt(out, CAREHUB_ID_MAX + 1, "%s%c-%lld-%.16s", REGISTER_REMINDER_PREFIX,
             k == REGISTER_CONTACT ? 'c' : 'v', (long long)due, entry + 3);
}

/* Withdraw the reminder of kind k for `due` waiting for `director` (absent is fine). */
static int reminder_withdraw(store_txn_t *t, const char *key, const char *director,
                             register_kind_t k, int64_t due)
{
    char id[CAREHUB_ID_MAX + 1], pk[2 * (CAREHUB_ID_MAX + 1) + 2];
    reminder_id(key, k, due, id);
    size_t n = store_pair_key(pk, sizeof pk, director, id);
    return n ? store_del(t, STORE_DB_OUTCOMES, pk, n, NULL, 0) : 0;
}

/*
 * Put kind k's timers where the record says they belong. `from` is what the
 * next due time counts from: the base (a visit, an enrolment) or the due time
 * that just fired. The reminder is set with a new due time (or when `force`,
 * at start after a rules change) and only when it falls after `from`.
 */
static int schedule(const config_t *cfg, store_txn_t *t, const char *key, reg_t *r,
                    const config_rhythm_t *rule, register_kind_t k, int force,
                    assign_effects_t *fx)
{
    int64_t due = 0, rem = r->rem[k];
    if (r->active && rule) {
        int64_t base = reg_base(r, k);
        due = reg_next(cfg, rule, k, base);
        if (r->fired[k] >= due) /* fired already for this base: the period after it */
            due = reg_next(cfg, rule, k, r->fired[k]);
        if (!r->fired[k])
            r->owed[k] = due; /* a new period: it is owed then, until a visit */
    } else {
        r->owed[k] = 0;
    }
    int rc;
    /* a reminder already sent (rem 0) is not set again for the same due time */
    if (due != r->due[k] || (force && r->rem[k])) {
        if (r->due[k] && due != r->due[k] &&
            (rc = reminder_withdraw(t, key, r->director, k, r->due[k])))
            return rc;
        rem = 0;
        if (due && (rule->remind_before_wd > 0 ||
                    (rule->remind_before_wd < 0 && rule->remind_before_ms > 0))) {
            int64_t from = r->fired[k] > reg_base(r, k) ? r->fired[k] : reg_base(r, k);
            int64_t at = config_deadline_before(cfg, due, rule->remind_before_ms,
                                                rule->remind_before_wd);
            if (at > from)
                rem = at;
        }
    }
    if ((rc = assign_due_set(t, DUE_KIND[k], key, r->due[k], due, fx)) ||
        (rc = assign_due_set(t, REM_KIND[k], key, r->rem[k], rem, fx)))
        return rc;
    r->due[k] = due;
    r->rem[k] = rem;
    return 0;
}

/* ---- enrolment and visit --------------------------------------------------------------- */

static const char *str_at(const json_t *o, const char *key, const char *dflt)
{
    const json_t *v = json_object_get(o, key);
    return json_is_string(v) ? json_string_value(v) : dflt;
}

static int on_enrolment(const config_t *cfg, store_txn_t *t, const case_event_t *it,
                        const json_t *body, const char *key, int64_t at, int64_t now,
                        assign_effects_t *fx)
{
    reg_t r;
    int rc = reg_get(t, key, &r);
    int existed = rc == 0;
    if (rc && rc != STORE_NOTFOUND)
        return rc;
    if (!existed) {
        memset(&r, 0, sizeof r);
        rc = 0;
    }
    const json_t *act = json_object_get(body, "active");
    int active = !json_is_false(act);
    int fresh = active && (!existed || !r.active); /* counting starts afresh from this one */
    if (existed && strcmp(r.director, it->agent) != 0)
        for (int k = 0; k < REGISTER_KINDS && !rc; k++) /* the old director's reminders go */
            if (r.due[k])
                rc = reminder_withdraw(t, key, r.director, (register_kind_t)k, r.due[k]);
    const config_rhythm_t *rule = route_rhythm(cfg, body);
    util_fmt(r.director, sizeof r.director, "%s", it->agent);
    util_fmt(r.village, sizeof r.village, "%s", str_at(body, "village", ""));
    util_fmt(r.risk, sizeof r.risk, "%s", str_at(body, "risk", "normal"));
    util_fmt(r.rhythm, sizeof r.rhythm, "%s", rule ? rule->name : "");
    util_fmt(r.enrol_case, sizeof r.enrol_case, "%s", it->case_id);
    r.active = active;
    r.updated = now;
    if (fresh) {
        r.enrolled = at;
        r.fired[REGISTER_CONTACT] = r.fired[REGISTER_VISIT] = 0;
    }
    msgpack_sbuffer sealed;
    msgpack_sbuffer_init(&sealed);
    (void)store_txn_seal(t, key, it->body, it->body_len, &sealed);
    free(r.entry);
    r.entry = (unsigned char *)sealed.data;
    r.entry_len = sealed.size;
    /* a new enrolment of an active child moves no due time (PROTOCOL §9) */
    for (int k = 0; k < REGISTER_KINDS && !rc && (fresh || !active); k++)
        rc = schedule(cfg, t, key, &r, rule, (register_kind_t)k, 0, fx);
    if (!rc)
        rc = reg_put(t, key, &r);
    msgpack_sbuffer_destroy(&sealed); /* r.entry is its data */
    r.entry = NULL;
    if (!rc)
        log_debug("register: entry %s %s by %s", it->case_id,
                  !active ? "left the register" : fresh ? "enrolled" : "updated", it->agent);
    return rc;
}

static int on_visit(const config_t *cfg, store_txn_t *t, const case_event_t *it, const json_t *body,
                    const char *key, int64_t at, assign_effects_t *fx)
{
    reg_t r;
    int rc = reg_get(t, key, &r);
    if (rc == STORE_NOTFOUND) {
        log_debug("register: visit %s is for a child not in the register", it->event_id);
        return 0;
    }
    if (rc)
        return rc;
    int home = strcmp(str_at(body, "kind", ""), "home_visit") == 0;
    const config_rhythm_t *rule = reg_rule(cfg, r.rhythm);
    for (int k = 0; k < REGISTER_KINDS && !rc; k++) {
        if ((k == REGISTER_VISIT && !home) || at <= r.last[k])
            continue; /* not this kind, or older than the newest recorded */
        r.last[k] = at;
        r.fired[k] = 0;
        rc = schedule(cfg, t, key, &r, rule, (register_kind_t)k, 0, fx);
    }
    util_fmt(r.visit_case, sizeof r.visit_case, "%s", it->case_id);
    if (!rc)
        rc = reg_put(t, key, &r);
    reg_free(&r);
    return rc;
}

int register_on_event(const config_t *cfg, store_txn_t *t, const case_event_t *it,
                      const json_t *body, int64_t now, assign_effects_t *fx)
{
    int enrol = strcmp(it->type, "enrolment") == 0;
    if ((!enrol && strcmp(it->type, "visit") != 0) || !it->child_id || !body)
        return 0;
    char buf[STORE_CHILD_KEY_MAX];
    const char *key = store_txn_child_key(t, it->child_id, buf);
    if (strlen(key) >= ASSIGN_DUE_ID_MAX)
        return 0; /* the schema allows 64 bytes: not reached */
    /* counted from when it happened, never from the future */
    int64_t at = it->at < it->received ? it->at : it->received;
    return enrol ? on_enrolment(cfg, t, it, body, key, at, now, fx)
                 : on_visit(cfg, t, it, body, key, at, fx);
}

/* ---- what falls due ---------------------------------------------------------------------- */

typedef struct {
    const config_t *cfg;
    const json_t *body;
    assign_effects_t *fx;
    int64_t now;
} overdue_ctx_t;

static int overdue_route(store_txn_t *t, case_event_t *item, void *ud)
{
    overdue_ctx_t *c = ud;
    return assign_on_event(c->cfg, t, item, c->body, c->now, c->fx);
}

/* The child id of an entry (opened), into out. */
static int entry_child(store_txn_t *t, const char *key, const reg_t *r, char *out, size_t size,
                       char *name, size_t nsize)
{
    msgpack_sbuffer body;
    msgpack_unpacked u;
    int rc = reg_entry_open(t, key, r, &body, &u);
    if (rc == 0) {
        const msgpack_object *child = frame_map_get(&u.data, "child");
        copy_str(out, size, child ? frame_map_get(child, "id") : NULL);
        if (name)
            copy_str(name, nsize, child ? frame_map_get(child, "name") : NULL);
        if (!out[0])
            rc = STORE_CORRUPTED;
    }
    reg_entry_close(&body, &u);
    return rc;
}

/* Record the visit_overdue event of kind k that fell due at `due` and route it. */
static int record_overdue(const config_t *cfg, store_txn_t *t, const char *key, const reg_t *r,
                          register_kind_t k, int64_t due, int64_t now, assign_effects_t *fx)
{
    char child[CAREHUB_ID_MAX + 1], entry[REGISTER_ENTRY_ID_MAX], ref[CAREHUB_ID_MAX + 1];
    int rc = entry_child(t, key, r, child, sizeof child, NULL, 0);
    if (rc)
        return rc;
    /* severity as the schema's default would store it, so that workflows match it */
    json_t *body = json_pack("{s:s, s:{s:s}, s:s, s:s, s:s, s:I}", "severity", "normal", "child",
                             "id", child, "village", r->village, "director", r->director, "kind",
                             KIND_NAMES[k], "due", (json_int_t)due);
    if (r->last[k] && r->last[k] >= r->enrolled) /* absent: none since the enrolment */
        json_object_set_new(body, "last", json_integer(r->last[k]));
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    frame_pack_json(&pk, body);
    reg_entry_id(key, entry);
    util_fmt(ref, sizeof ref, "od-%c-%lld-%s", k == REGISTER_CONTACT ? 'c' : 'v', (long long)due,
             entry + 3);
    case_event_t it = {.agent = REGISTER_AGENT, .ref = ref, .type = "visit_overdue", .at = due,
                       .received = now, .child_id = child, .severity = 1, .body = sb.data,
                       .body_len = sb.size};
    overdue_ctx_t c = {cfg, body, fx, now};
    rc = case_txn_put_events(t, &it, 1, overdue_route, &c);
    if (!rc && it.status == CASE_ITEM_STORED)
        fx->overdue_events++;
    if (!rc)
        log_info("register: %s of a child of %s (%s) overdue since %lld: %s %s", KIND_NAMES[k],
                 r->director, r->village, (long long)due, it.event_id,
                 it.status == CASE_ITEM_DUPLICATE ? "(recorded before)" : "recorded");
    sodium_memzero(sb.data, sb.size);
    msgpack_sbuffer_destroy(&sb);
    json_decref(body);
    return rc;
}

/* A due time of kind k fell due: record visit_overdue and move to the next period. */
static int due_fire(const config_t *cfg, store_txn_t *t, const char *key, register_kind_t k,
                    int64_t due, int64_t now, assign_effects_t *fx, int *fired)
{
    reg_t r;
    *fired = 0;
    int rc = reg_get(t, key, &r);
    if (rc == STORE_NOTFOUND || (rc == 0 && (!r.active || r.due[k] != due))) {
        if (rc == 0)
            reg_free(&r);
        return assign_due_set(t, DUE_KIND[k], key, due, 0, fx); /* stale: drop it */
    }
    if (rc)
        return rc;
    const config_rhythm_t *rule = reg_rule(cfg, r.rhythm);
    if (rule && (rc = record_overdue(cfg, t, key, &r, k, due, now, fx)) == 0) {
        r.fired[k] = due;
        *fired = 1;
    }
    if (!rc)
        rc = schedule(cfg, t, key, &r, rule, k, 0, fx);
    if (!rc)
        rc = reg_put(t, key, &r);
    reg_free(&r);
    return rc;
}

/* A reminder fell due: it waits in `outcomes` for the director's agent. */
static int remind_fire(store_txn_t *t, const char *key, register_kind_t k, int64_t at,
                       assign_effects_t *fx, int *fired)
{
    reg_t r;
    *fired = 0;
    int rc = reg_get(t, key, &r);
    if (rc == STORE_NOTFOUND || (rc == 0 && (!r.active || r.rem[k] != at || !r.due[k]))) {
        if (rc == 0)
            reg_free(&r);
        return assign_due_set(t, REM_KIND[k], key, at, 0, fx);
    }
    if (rc)
        return rc;
    char child[CAREHUB_ID_MAX + 1], id[CAREHUB_ID_MAX + 1], pk[2 * (CAREHUB_ID_MAX + 1) + 2];
    if ((rc = entry_child(t, key, &r, child, sizeof child, NULL, 0))) {
        reg_free(&r);
        return rc;
    }
    reminder_id(key, k, r.due[k], id);
    frame_out_t o;
    frame_out_message(&o, "reminder", id, 3);
    frame_out_str(&o, "child", child);
    frame_out_str(&o, "kind", KIND_NAMES[k]);
    frame_out_int(&o, "due", r.due[k]);
    msgpack_sbuffer sealed;
    msgpack_sbuffer_init(&sealed);
    (void)store_txn_seal(t, id, o.sb.data, o.sb.size, &sealed); /* it names the child */
    size_t kl = store_pair_key(pk, sizeof pk, r.director, id);
    rc = kl ? store_put(t, STORE_DB_OUTCOMES, pk, kl, sealed.data, sealed.size, 0) : STORE_CORRUPTED;
    msgpack_sbuffer_destroy(&sealed);
    sodium_memzero(o.sb.data, o.sb.size);
    frame_out_end(&o);
    if (!rc)
        rc = trail_append(t, "", "reminder_stored", REGISTER_AGENT, -1, NULL, NULL, 0, id);
    if (!rc)
        rc = assign_due_set(t, REM_KIND[k], key, at, 0, fx);
    if (!rc) {
        r.rem[k] = 0;
        rc = reg_put(t, key, &r);
    }
    if (!rc) {
        assign_fx_outcome(fx, r.director);
        *fired = 1;
    }
    reg_free(&r);
    return rc;
}

int register_due_contact(const config_t *cfg, store_txn_t *t, const char *id, int64_t due,
                         int64_t now, assign_effects_t *fx, int *fired)
{
    return due_fire(cfg, t, id, REGISTER_CONTACT, due, now, fx, fired);
}

int register_due_visit(const config_t *cfg, store_txn_t *t, const char *id, int64_t due,
                       int64_t now, assign_effects_t *fx, int *fired)
{
    return due_fire(cfg, t, id, REGISTER_VISIT, due, now, fx, fired);
}

int register_remind_contact(const config_t *cfg, store_txn_t *t, const char *id, int64_t due,
                            int64_t now, assign_effects_t *fx, int *fired)
{
    (void)cfg;
    (void)now;
    return remind_fire(t, id, REGISTER_CONTACT, due, fx, fired);
}

int register_remind_visit(const config_t *cfg, store_txn_t *t, const char *id, int64_t due,
                          int64_t now, assign_effects_t *fx, int *fired)
{
    (void)cfg;
    (void)now;
    return remind_fire(t, id, REGISTER_VISIT, due, fx, fired);
}

/* ---- the rules changed: recompute at start ----------------------------------------------- */

#define RULES_MARK "register.rhythms"

/* A fingerprint of the rules: everything that decides a rule or a timer. */
static void rules_fingerprint(const config_t *cfg, unsigned char out[32])
{
    crypto_generichash_state h;
    int uses_wd = 0;
    crypto_generichash_init(&h, NULL, 0, 32);
    for (size_t i = 0; i < cfg->n_rhythms; i++) {
        const config_rhythm_t *r = &cfg->rhythms[i];
        char num[96];
        crypto_generichash_update(&h, (const unsigned char *)r->name, strlen(r->name) + 1);
        util_fmt(num, sizeof num, "%lld %lld %lld %zu", (long long)r->contact_every_ms,
                 (long long)r->visit_every_ms, (long long)r->remind_before_ms, r->n_match);
        crypto_generichash_update(&h, (const unsigned char *)num, strlen(num) + 1);
        /* working days: their counts, and once the calendar and zone they count on
         * (rules in clock time only hash as they did before working days) */
        if (r->contact_every_wd >= 0 || r->visit_every_wd >= 0 || r->remind_before_wd >= 0) {
            util_fmt(num, sizeof num, "wd %d %d %d", r->contact_every_wd, r->visit_every_wd,
                     r->remind_before_wd);
            crypto_generichash_update(&h, (const unsigned char *)num, strlen(num) + 1);
            uses_wd = 1;
        }
        for (size_t j = 0; j < r->n_match; j++) {
            const config_match_t *m = &r->match[j];
            util_fmt(num, sizeof num, "%d %.17g %zu", (int)m->op, m->number, m->n_values);
            crypto_generichash_update(&h, (const unsigned char *)m->key, strlen(m->key) + 1);
            crypto_generichash_update(&h, (const unsigned char *)num, strlen(num) + 1);
            for (size_t v = 0; v < m->n_values; v++)
                crypto_generichash_update(&h, (const unsigned char *)m->values[v],
                                          strlen(m->values[v]) + 1);
        }
    }
    if (uses_wd) {
        const config_calendar_t *cal = &cfg->calendar;
        char num[96];
        util_fmt(num, sizeof num, "calendar %s %u %d %zu %zu", cfg->timezone ? cfg->timezone : "",
                 (unsigned)cal->workdays, cal->start_min, cal->n_holidays, cal->n_extra);
        crypto_generichash_update(&h, (const unsigned char *)num, strlen(num) + 1);
        if (cal->n_holidays)
            crypto_generichash_update(&h, (const unsigned char *)cal->holidays,
                                      cal->n_holidays * sizeof *cal->holidays);
        if (cal->n_extra)
            crypto_generichash_update(&h, (const unsigned char *)cal->extra,
                                      cal->n_extra * sizeof *cal->extra);
    }
    crypto_generichash_final(&h, out, 32);
}

typedef struct {
    const config_t *cfg;
    unsigned char fp[32];
    int64_t now;
    char (*keys)[ASSIGN_DUE_ID_MAX];
    size_t n, cap;
    size_t recomputed;
    assign_effects_t fx;
} rules_ctx_t;

static int collect_key(void *ud, const void *k, size_t kl, const void *v, size_t vl)
{
    (void)v;
    (void)vl;
    rules_ctx_t *c = ud;
    if (kl >= ASSIGN_DUE_ID_MAX)
        return STORE_CORRUPTED;
    if (c->n == c->cap) {
        c->cap = c->cap ? 2 * c->cap : 1024;
        c->keys = xrealloc(c->keys, c->cap * sizeof *c->keys);
    }
    memcpy(c->keys[c->n], k, kl);
    c->keys[c->n++][kl] = '\0';
    return 0;
}

/* One entry under the rules of now: its rule from its enrolment, its timers. */
static int recompute(rules_ctx_t *c, store_txn_t *t, const char *key)
{
    reg_t r;
    int rc = reg_get(t, key, &r);
    if (rc)
        return rc;
    msgpack_sbuffer body;
    msgpack_unpacked u;
    const config_rhythm_t *rule = NULL;
    if ((rc = reg_entry_open(t, key, &r, &body, &u)) == 0) {
        char path[64], why[128];
        json_t *j = frame_to_json(&u.data, path, sizeof path, why, sizeof why);
        rule = j ? route_rhythm(c->cfg, j) : NULL;
        json_decref(j);
    }
    reg_entry_close(&body, &u);
    if (!rc) {
        util_fmt(r.rhythm, sizeof r.rhythm, "%s", rule ? rule->name : "");
        for (int k = 0; k < REGISTER_KINDS && !rc; k++)
            rc = schedule(c->cfg, t, key, &r, rule, (register_kind_t)k, 1, &c->fx);
    }
    if (!rc)
        rc = reg_put(t, key, &r);
    reg_free(&r);
    return rc;
}

static int rules_txn(store_txn_t *t, void *ud)
{
    rules_ctx_t *c = ud;
    const void *v;
    size_t vl;
    c->n = 0;
    c->recomputed = 0;
    int rc = store_get(t, STORE_DB_COUNTERS, RULES_MARK, strlen(RULES_MARK), &v, &vl);
    if (rc == 0 && vl == sizeof c->fp && memcmp(v, c->fp, vl) == 0)
        return 0;
    if (rc && rc != STORE_NOTFOUND)
        return rc;
    rc = store_each(t, STORE_DB_REGISTER, NULL, 0, 0, collect_key, c);
    for (size_t i = 0; !rc && i < c->n; i++)
        rc = recompute(c, t, c->keys[i]);
    c->recomputed = c->n;
    return rc ? rc : store_put(t, STORE_DB_COUNTERS, RULES_MARK, strlen(RULES_MARK), c->fp, sizeof c->fp, 0);
}

int register_rules_apply(store_t *st, const config_t *cfg, int64_t now, size_t *recomputed)
{
    rules_ctx_t c = {.cfg = cfg, .now = now};
    rules_fingerprint(cfg, c.fp);
    *recomputed = 0;
    /* the common start: the rules are those the register was scheduled with */
    store_rc_t rc = store_read(st, reg_rules_same, c.fp);
    if (rc == STORE_OK)
        return 0;
    if (rc != STORE_NOTFOUND) {
        log_error("register: cannot read the rules mark: %s", store_strerror(rc));
        return -1;
    }
    rc = store_write(st, rules_txn, &c);
    free(c.keys);
    assign_effects_free(&c.fx);
    if (rc != STORE_OK) {
        log_error("register: cannot recompute the rhythm after a rules change: %s",
                  store_strerror(rc));
        return -1;
    }
    *recomputed = c.recomputed;
    if (c.recomputed)
        log_info("register: rhythms changed: %zu entries' due times recomputed", c.recomputed);
    return 0;
}

int reg_rules_same(store_txn_t *t, void *ud)
{
    const void *v;
    size_t vl;
    int rc = store_get(t, STORE_DB_COUNTERS, RULES_MARK, strlen(RULES_MARK), &v, &vl);
    if (rc)
        return rc;
    return vl == 32 && memcmp(v, ud, 32) == 0 ? 0 : STORE_NOTFOUND;
}
