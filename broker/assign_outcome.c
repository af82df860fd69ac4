/*
 * assign_outcome.c — a case resolved or closed, and the outcome told to the
 * reporters: stored per agent when the case is resolved, walked for delivery,
 * forgotten on `received`.
 */
#include "assign.h"

#include <msgpack.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "register.h"
#include "trail.h"
#include "util.h"

#include "assign_int.h"

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
        return STORE_CORRUPTED;
    int rc = store_get(c->t, STORE_DB_EVENTS, ev, vl, &rec, &rl);
    if (rc)
        return rc;
    char agent[CAREHUB_ID_MAX + 1], ref[ID_LEN];
    /* its agent, and the ref it sent (opened): the reporter matches its outcome by it */
    if ((rc = case_event_ref(c->t, ev, rec, rl, agent, ref, sizeof ref)))
        return rc;
    if (strcmp(agent, REGISTER_AGENT) == 0)
        return 0; /* the broker's own visit_overdue: nobody to tell */
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
    rc = store_put(c->t, STORE_DB_OUTCOMES, key, assign_pending_key(key, sizeof key, agent, oid),
                   sealed.data, sealed.size, 0);
    msgpack_sbuffer_destroy(&sealed);
    frame_out_end(&o);
    if (rc == 0)
        rc = trail_append(c->t, c->case_id, "outcome_stored", "broker", -1, NULL, NULL, 0, agent);
    if (rc == 0)
        assign_fx_outcome(c->fx, agent);
    return rc;
}

/* Mark the case resolved, tell the reporters and the agencies' channels. */
static int resolve_case(const config_t *cfg, store_txn_t *t, const char *case_id, const char *note,
                        const as_list_t *all, int64_t now, assign_effects_t *fx)
{
    int moved;
    int rc = case_set_status(t, case_id, CASE_RESOLVED, now, &moved);
    if (rc || !moved)
        return rc;
    log_info("assign: case %s resolved", case_id);
    /* privacy.retention: the case's data is purged this long after resolution */
    if ((rc = assign_purge_schedule(cfg, t, case_id, now, fx)))
        return rc;
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
                rc = assign_notify_channel(t, ch, case_id, "case.resolved", data, text, now, fx);
        }
    }
    json_decref(data);
    return rc;
}

/* After an assignment became final: is the whole case resolved? */
int assign_check_case(const config_t *cfg, store_txn_t *t, const as_t *changed, int64_t now,
                      assign_effects_t *fx)
{
    as_list_t all;
    int rc = assign_case_assignments(t, changed->case_id, &all);
    int all_final = 1, any_resolved = 0;
    for (size_t i = 0; !rc && i < all.n; i++) {
        assign_state_t st =
            strcmp(all.list[i].id, changed->id) == 0 ? changed->state : all.list[i].state;
        all_final &= assign_is_final(st);
        any_resolved |= st == AS_RESOLVED;
    }
    if (!rc && all_final && any_resolved)
        rc = resolve_case(cfg, t, changed->case_id, changed->note, &all, now, fx);
    free(all.list);
    return rc;
}

/* ---- outcomes for the reporters' agents ---------------------------------- */

typedef struct {
    const char *prefix; /* the agent, with its NUL */
    size_t plen;
    int (*fn_msg)(void *, const void *, size_t);
    void *ud;
    store_txn_t *t;
} outcome_walk_t;

/* The outcome id from an outcomes key (agent NUL id). */
static void outcome_key_id(const outcome_walk_t *c, const void *k, size_t kl, char *oid, size_t size)
{
    size_t n = kl - c->plen < size - 1 ? kl - c->plen : size - 1;
    memcpy(oid, (const char *)k + c->plen, n);
    oid[n] = '\0';
}

static int visit_outcome(void *ud, const void *k, size_t kl, const void *v, size_t vl)
{
    outcome_walk_t *c = ud;
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
    outcome_walk_t c = {prefix, plen, fn, ud, t};
    return store_each(t, STORE_DB_OUTCOMES, prefix, plen, 0, visit_outcome, &c);
}

int assign_outcome_received(store_txn_t *t, const char *agent, const char *outcome_id)
{
    char key[2 * ID_LEN + 2], case_id[STORE_ID_MAX] = "";
    size_t kl = assign_pending_key(key, sizeof key, agent, outcome_id);
    const void *v;
    size_t vl;
    int rc = store_get(t, STORE_DB_OUTCOMES, key, kl, &v, &vl);
    if (rc == STORE_NOTFOUND)
        return 0; /* unknown or already confirmed */
    if (rc)
        return rc;
    msgpack_sbuffer m;
    msgpack_sbuffer_init(&m);
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    if (store_txn_open(t, outcome_id, v, vl, &m) == 0 &&
        msgpack_unpack_next(&u, m.data, m.size, NULL) == MSGPACK_UNPACK_SUCCESS)
        assign_copy_str(case_id, sizeof case_id, frame_map_get(&u.data, "case"));
    msgpack_unpacked_destroy(&u);
    msgpack_sbuffer_destroy(&m);
    if ((rc = store_del(t, STORE_DB_OUTCOMES, key, kl, NULL, 0)))
        return rc;
    int reminder = strncmp(outcome_id, REGISTER_REMINDER_PREFIX, 3) == 0;
    return trail_append(t, case_id, reminder ? "reminder_received" : "outcome_received", agent, -1,
                        NULL, NULL, 0, outcome_id);
}
