/*
 * case.c — the event and case records (see case.h): storing a batch of events,
 * joining each to its child's open case, reading them back. Over the storage:
 * every read and write goes through store.h.
 */
#include "case.h"

#include <msgpack.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "carehub_wire.h"
#include "frame.h"
#include "log.h"
#include "trail.h"
#include "util.h"

static const char *sev_names[] = {"low", "normal", "high", "critical"};

int case_severity_parse(const char *s, size_t n)
{
    for (int i = 0; i < 4; i++)
        if (strlen(sev_names[i]) == n && memcmp(sev_names[i], s, n) == 0)
            return i;
    return -1;
}

const char *case_severity_name(int sev)
{
    return sev >= 0 && sev < 4 ? sev_names[sev] : "normal";
}

/* A case's status: made open, left once for resolved or closed (both final). */
static const struct {
    const char *name;
    unsigned next; /* bit per status it may move to */
} CASE_STATUS[CASE_STATUS_COUNT] = {
    [CASE_OPEN] = {"open", 1u << CASE_RESOLVED | 1u << CASE_CLOSED},
    [CASE_RESOLVED] = {"resolved", 0},
    [CASE_CLOSED] = {"closed", 0},
};

const char *case_status_name(case_status_t s)
{
    return s < CASE_STATUS_COUNT ? CASE_STATUS[s].name : NULL;
}

int case_status_parse(const char *s, size_t n)
{
    for (int i = 0; i < CASE_STATUS_COUNT; i++)
        if (strlen(CASE_STATUS[i].name) == n && memcmp(CASE_STATUS[i].name, s, n) == 0)
            return i;
    return -1;
}

int case_may_move(case_status_t from, case_status_t to)
{
    return from < CASE_STATUS_COUNT && to < CASE_STATUS_COUNT &&
           (CASE_STATUS[from].next & (1u << to)) != 0;
}

/* Write the case record: {join, id, type, status, opened, severity}. How many
 * events it has is not stored here (case_events counts them), so joining an
 * event to a case rewrites the record only when the severity rises. */
static int put_case(store_txn_t *t, const char *case_id, const char *type, int64_t opened,
                    int severity, const void *join, size_t jlen)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 6);
    /* "join": the open_cases key, so closing the case can remove it */
    frame_pack_cstr(&pk, "join");
    msgpack_pack_bin(&pk, jlen);
    msgpack_pack_bin_body(&pk, join, jlen);
    frame_pack_cstr(&pk, "id");       frame_pack_cstr(&pk, case_id);
    frame_pack_cstr(&pk, "type");     frame_pack_cstr(&pk, type);
    frame_pack_cstr(&pk, "status");   frame_pack_cstr(&pk, case_status_name(CASE_OPEN));
    frame_pack_cstr(&pk, "opened");   msgpack_pack_int64(&pk, opened);
    frame_pack_cstr(&pk, "severity"); frame_pack_cstr(&pk, case_severity_name(severity));
    int rc = store_put(t, STORE_DB_CASES, case_id, strlen(case_id), sb.data, sb.size, 0);
    msgpack_sbuffer_destroy(&sb);
    return rc;
}

/* The case record, decoded into u (a map; valid while the transaction is):
 * 0, or a store_rc_t (STORE_CORRUPTED when it is no map). Destroy u either way. */
static int case_rec_get(store_txn_t *t, const char *case_id, msgpack_unpacked *u)
{
    const void *v;
    size_t vl;
    msgpack_unpacked_init(u);
    int rc = store_get(t, STORE_DB_CASES, case_id, strlen(case_id), &v, &vl);
    if (rc)
        return rc;
    if (msgpack_unpack_next(u, v, vl, NULL) != MSGPACK_UNPACK_SUCCESS ||
        u->data.type != MSGPACK_OBJECT_MAP)
        return STORE_CORRUPTED;
    return 0;
}

/* Read the fields of a case record that joining needs. */
static int get_case_fields(store_txn_t *t, const char *case_id, int64_t *opened, int *severity)
{
    msgpack_unpacked u;
    int rc = case_rec_get(t, case_id, &u);
    if (rc == 0) {
        rc = STORE_CORRUPTED;
        int64_t o;
        const char *s;
        size_t sl;
        if (frame_int(frame_map_get(&u.data, "opened"), &o) &&
            frame_str(frame_map_get(&u.data, "severity"), &s, &sl)) {
            *opened = o;
            *severity = case_severity_parse(s, sl);
            rc = 0;
        }
    }
    msgpack_unpacked_destroy(&u);
    return rc;
}

/* Join the event to its child's open case of the same type, or open one. */
static int join_case(store_txn_t *t, case_event_t *it)
{
    char jkey[512];
    size_t jlen = 0;
    int rc;
    if (it->child_id) { /* with privacy on the child id is not stored: its keyed hash joins */
        char buf[STORE_CHILD_KEY_MAX];
        jlen = store_pair_key(jkey, sizeof jkey, it->type, store_txn_child_key(t, it->child_id, buf));
    }
    if (jlen) {
        const void *v;
        size_t vl;
        rc = store_get(t, STORE_DB_OPEN_CASES, jkey, jlen, &v, &vl);
        if (rc == 0 && store_copy_id(v, vl, it->case_id, STORE_ID_MAX) == 0) {
            int64_t opened;
            int sev;
            if ((rc = get_case_fields(t, it->case_id, &opened, &sev)))
                return rc;
            if (it->severity <= sev)
                return 0;
            if ((rc = put_case(t, it->case_id, it->type, opened, it->severity, jkey, jlen)))
                return rc;
            return trail_append_stored(t, it->case_id, "case_severity", "broker", STORE_DB_CASES,
                                       it->case_id, NULL);
        }
        if (rc && rc != STORE_NOTFOUND)
            return rc;
    }
    store_next_id(t, STORE_SEQ_CASE, it->case_id);
    if (jlen && (rc = store_put(t, STORE_DB_OPEN_CASES, jkey, jlen, it->case_id,
                                strlen(it->case_id), 0)))
        return rc;
    if ((rc = put_case(t, it->case_id, it->type, it->received, it->severity, jkey, jlen)))
        return rc;
    return trail_append_stored(t, it->case_id, "case_opened", "broker", STORE_DB_CASES, it->case_id,
                               NULL);
}

/* The associated data of an event's sealed ref: not the body's, so that neither
 * box opens in the other's place. */
void case_ref_ad(char *ad, size_t size, const char *event_id)
{
    util_fmt(ad, size, "%s#ref", event_id);
}

static void pack_box(msgpack_packer *pk, store_txn_t *t, const char *key, const char *ad,
                     const void *m, size_t mlen)
{
    msgpack_sbuffer box;
    msgpack_sbuffer_init(&box);
    store_txn_seal_box(t, ad, m, mlen, &box);
    frame_pack_cstr(pk, key);
    msgpack_pack_bin(pk, box.size);
    msgpack_pack_bin_body(pk, box.data, box.size);
    msgpack_sbuffer_destroy(&box);
}

/* The event record; ref_key is the ref as stored (store_txn_ref_key). With
 * privacy on, the body and the ref itself (an outcome names it to its agent)
 * are sealed: "body_enc" bound to the event id, "ref_enc" to id "#ref". */
static int put_event(store_txn_t *t, const case_event_t *it, const char *ref_key)
{
    int sealed = store_txn_privacy(t);
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, (sealed ? 10 : 9) + (it->silenced != NULL));
    frame_pack_cstr(&pk, "id");       frame_pack_cstr(&pk, it->event_id);
    frame_pack_cstr(&pk, "agent");    frame_pack_cstr(&pk, it->agent);
    frame_pack_cstr(&pk, "ref");      frame_pack_cstr(&pk, ref_key);
    frame_pack_cstr(&pk, "type");     frame_pack_cstr(&pk, it->type);
    frame_pack_cstr(&pk, "at");       msgpack_pack_int64(&pk, it->at);
    frame_pack_cstr(&pk, "received"); msgpack_pack_int64(&pk, it->received);
    frame_pack_cstr(&pk, "case");     frame_pack_cstr(&pk, it->case_id);
    frame_pack_cstr(&pk, "severity"); frame_pack_cstr(&pk, case_severity_name(it->severity));
    if (it->silenced) {
        frame_pack_cstr(&pk, "silenced");
        frame_pack_cstr(&pk, it->silenced);
    }
    if (sealed) {
        char ad[STORE_ID_MAX + 8];
        case_ref_ad(ad, sizeof ad, it->event_id);
        pack_box(&pk, t, "ref_enc", ad, it->ref, strlen(it->ref));
        pack_box(&pk, t, "body_enc", it->event_id, it->body, it->body_len);
    } else {
        frame_pack_cstr(&pk, "body");
        msgpack_sbuffer_write(&sb, it->body, it->body_len); /* already msgpack */
    }
    int rc = store_put(t, STORE_DB_EVENTS, it->event_id, strlen(it->event_id), sb.data, sb.size, 1);
    msgpack_sbuffer_destroy(&sb);
    return rc;
}

/* A string field of a map into out (NUL-terminated): 1, or 0 when it is absent,
 * not a string or too long. */
static int copy_field(const msgpack_object *map, const char *key, char *out, size_t size)
{
    const char *s;
    size_t n;
    if (!frame_str(frame_map_get(map, key), &s, &n) || n >= size)
        return 0;
    memcpy(out, s, n);
    out[n] = '\0';
    return 1;
}

int case_event_ref(store_txn_t *t, const char *event_id, const void *rec, size_t rl,
                   char agent[CAREHUB_ID_MAX + 1], char *ref, size_t size)
{
    ref[0] = '\0';
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    int rc = STORE_CORRUPTED;
    if (msgpack_unpack_next(&u, rec, rl, NULL) == MSGPACK_UNPACK_SUCCESS &&
        (!agent || (copy_field(&u.data, "agent", agent, CAREHUB_ID_MAX + 1) && agent[0]))) {
        const msgpack_object *enc = frame_map_get(&u.data, "ref_enc");
        if (enc && enc->type == MSGPACK_OBJECT_BIN) {
            char ad[STORE_ID_MAX + 8];
            case_ref_ad(ad, sizeof ad, event_id);
            msgpack_sbuffer m;
            msgpack_sbuffer_init(&m);
            rc = store_txn_open_box(t, ad, enc->via.bin.ptr, enc->via.bin.size, &m);
            if (rc == 0 && m.size < size) {
                memcpy(ref, m.data, m.size);
                ref[m.size] = '\0';
            } else if (rc == 0) {
                rc = STORE_CORRUPTED;
            }
            msgpack_sbuffer_destroy(&m);
        } else if (copy_field(&u.data, "ref", ref, size)) {
            rc = 0; /* privacy off: the ref as sent */
        }
    }
    msgpack_unpacked_destroy(&u);
    return rc;
}

int case_txn_put_events(store_txn_t *t, case_event_t *items, size_t n, case_stored_fn on_stored,
                        void *ud)
{
    int rc;
    for (size_t i = 0; i < n; i++)
        items[i].status = CASE_ITEM_PENDING;
    for (size_t i = 0; i < n; i++) {
        case_event_t *it = &items[i];
        char key[512], rk[STORE_REF_KEY_MAX];
        const char *ref_key = store_txn_ref_key(t, it->ref, rk);
        size_t klen = store_pair_key(key, sizeof key, it->agent, ref_key);
        if (!klen)
            return STORE_BADVALUE; /* ids are at most 64 bytes: cannot happen */
        rc = store_txn_idem_get(t, key, klen, it->event_id, it->case_id);
        if (rc == 0) {
            it->status = CASE_ITEM_DUPLICATE;
            continue;
        }
        if (rc != STORE_NOTFOUND)
            return rc;
        if (it->refuse) {
            it->status = CASE_ITEM_REFUSED;
            continue;
        }
        store_next_id(t, STORE_SEQ_EVENT, it->event_id);
        if ((rc = join_case(t, it)) || (rc = put_event(t, it, ref_key)) ||
            (rc = trail_append_stored(t, it->case_id, "event", it->agent, STORE_DB_EVENTS,
                                      it->event_id, ref_key)) ||
            /* the case_events and idempotency entries wait in memory, kept only
             * if this commits, and are written in bulk (store_index.c) */
            (rc = store_txn_index_add(t, it->case_id, it->event_id, key, klen)))
            return rc;
        it->status = CASE_ITEM_STORED;
        if (on_stored && (rc = on_stored(t, it, ud)))
            return rc;
    }
    return 0;
}

int case_set_status(store_txn_t *t, const char *case_id, case_status_t to, int64_t now, int *moved)
{
    msgpack_unpacked u;
    *moved = 0;
    int rc = case_rec_get(t, case_id, &u);
    if (rc) {
        msgpack_unpacked_destroy(&u);
        return rc;
    }
    const char *cs;
    size_t cn;
    int from = frame_str(frame_map_get(&u.data, "status"), &cs, &cn) ? case_status_parse(cs, cn) : -1;
    if (from < 0 || !case_may_move((case_status_t)from, to)) {
        log_warn("case: %s is %.*s: not moved to %s", case_id, from < 0 ? 1 : (int)cn,
                 from < 0 ? "?" : cs, case_status_name(to));
        msgpack_unpacked_destroy(&u);
        return 0;
    }
    *moved = 1;
    const char *status = case_status_name(to);
    /* The join key, copied: u points into the stored record, which the put below
     * rewrites in place (LMDB's dirty page) — read after it, it could be other
     * bytes, and the child's open_cases entry would be left naming a case that
     * is no longer open (events joining a resolved case). */
    const msgpack_object *jo = frame_map_get(&u.data, "join");
    char join[512];
    size_t jlen = jo && jo->type == MSGPACK_OBJECT_BIN && jo->via.bin.size <= sizeof join
                      ? jo->via.bin.size : 0;
    if (jlen)
        memcpy(join, jo->via.bin.ptr, jlen);
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
    if (!rc && jlen) {
        /* Only if the child's open case is still this one. */
        const void *cur;
        size_t cl;
        int g = store_get(t, STORE_DB_OPEN_CASES, join, jlen, &cur, &cl);
        if (g == 0 && cl == strlen(case_id) && memcmp(cur, case_id, cl) == 0)
            rc = store_del(t, STORE_DB_OPEN_CASES, join, jlen, NULL, 0);
        else if (g && g != STORE_NOTFOUND)
            rc = g;
    }
    msgpack_unpacked_destroy(&u);
    return rc;
}

/* ---- refs kept in clear by a broker from before 2026-12 ----------------------- */

/* Set once every stored ref is in store_txn_ref_key's form: later starts skip the walk. */
#define REFS_MARK "refs.keyed"

typedef struct {
    char (*ids)[STORE_ID_MAX];
    size_t n, cap;
} id_list_t;

/* An event whose record still holds the ref sent (no "ref_enc"). */
static int collect_clear_ref(void *ud, const void *k, size_t kl, const void *v, size_t vl)
{
    id_list_t *l = ud;
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    int clear = msgpack_unpack_next(&u, v, vl, NULL) == MSGPACK_UNPACK_SUCCESS &&
                frame_map_get(&u.data, "ref") && !frame_map_get(&u.data, "ref_enc");
    msgpack_unpacked_destroy(&u);
    if (!clear)
        return 0;
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 256;
        l->ids = xrealloc(l->ids, l->cap * sizeof *l->ids);
    }
    return store_copy_id(k, kl, l->ids[l->n++], STORE_ID_MAX) ? STORE_CORRUPTED : 0;
}

/* One event: its record with the ref keyed and sealed, its idempotency entry
 * moved to the keyed pair. */
static int rekey_event(store_txn_t *t, const char *ev)
{
    const void *v;
    size_t vl;
    int rc = store_get(t, STORE_DB_EVENTS, ev, strlen(ev), &v, &vl);
    if (rc)
        return rc;
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    char agent[CAREHUB_ID_MAX + 1], ref[CAREHUB_ID_MAX + 1], rk[STORE_REF_KEY_MAX],
        ad[STORE_ID_MAX + 8];
    const char *s;
    size_t n;
    if (msgpack_unpack_next(&u, v, vl, NULL) != MSGPACK_UNPACK_SUCCESS ||
        u.data.type != MSGPACK_OBJECT_MAP || !copy_field(&u.data, "agent", agent, sizeof agent) ||
        !copy_field(&u.data, "ref", ref, sizeof ref)) {
        msgpack_unpacked_destroy(&u);
        return STORE_CORRUPTED;
    }
    const char *key = store_txn_ref_key(t, ref, rk);
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, u.data.via.map.size + 1);
    for (uint32_t i = 0; i < u.data.via.map.size; i++) {
        const msgpack_object_kv *kv = &u.data.via.map.ptr[i];
        msgpack_pack_object(&pk, kv->key);
        if (frame_str(&kv->key, &s, &n) && n == 3 && memcmp(s, "ref", 3) == 0)
            frame_pack_cstr(&pk, key);
        else
            msgpack_pack_object(&pk, kv->val);
    }
    case_ref_ad(ad, sizeof ad, ev);
    pack_box(&pk, t, "ref_enc", ad, ref, strlen(ref));
    msgpack_unpacked_destroy(&u);
    rc = store_put(t, STORE_DB_EVENTS, ev, strlen(ev), sb.data, sb.size, 0);
    msgpack_sbuffer_destroy(&sb);
    char old[2 * CAREHUB_ID_MAX + 2], new_[2 * CAREHUB_ID_MAX + 2];
    size_t ol = store_pair_key(old, sizeof old, agent, ref),
           nl = store_pair_key(new_, sizeof new_, agent, key);
    if (rc || !ol || !nl)
        return rc ? rc : STORE_CORRUPTED;
    rc = store_get(t, STORE_DB_IDEM, old, ol, &v, &vl);
    if (rc == STORE_NOTFOUND)
        return 0; /* purged, or never written */
    char val[2 * STORE_ID_MAX + 8]; /* copied: a value in the map is not input to a put */
    if (rc || vl > sizeof val)
        return rc ? rc : STORE_CORRUPTED;
    memcpy(val, v, vl);
    if ((rc = store_put(t, STORE_DB_IDEM, new_, nl, val, vl, 0)))
        return rc;
    rc = store_del(t, STORE_DB_IDEM, old, ol, NULL, 0);
    sodium_memzero(ref, sizeof ref);
    return rc;
}

static int refs_upgrade_txn(store_txn_t *t, void *ud)
{
    id_list_t *l = ud;
    const void *v;
    size_t vl;
    int rc = store_get(t, STORE_DB_COUNTERS, REFS_MARK, strlen(REFS_MARK), &v, &vl);
    if (rc != STORE_NOTFOUND)
        return rc; /* done before (or unreadable) */
    l->n = 0; /* a rerun after the map grew starts again */
    rc = store_each(t, STORE_DB_EVENTS, NULL, 0, 0, collect_clear_ref, l);
    for (size_t i = 0; !rc && i < l->n; i++)
        rc = rekey_event(t, l->ids[i]);
    return rc ? rc : store_put(t, STORE_DB_COUNTERS, REFS_MARK, strlen(REFS_MARK), "", 0, 0);
}

int case_refs_upgrade(store_t *st, int privacy)
{
    int marked = privacy ? store_marked(st, REFS_MARK) : 1;
    if (marked)
        return marked < 0 ? -1 : 0;
    /* the idempotency entries waiting in memory hold the refs as they were: on disk first */
    if (store_flush_index(st) != STORE_OK)
        return -1;
    id_list_t l = {NULL, 0, 0};
    store_rc_t rc = store_write(st, refs_upgrade_txn, &l);
    if (rc == STORE_OK && l.n)
        log_info("case: the refs of %zu event(s) of a carehubd from before 2026-12 keyed and sealed",
                 l.n);
    free(l.ids);
    return rc == STORE_OK ? 0 : -1;
}

/* ---- verification of the indexes this module owns ---------------------------------- */

typedef struct {
    store_txn_t *t;
    char *problem;
    size_t size;
    unsigned long long *entries;
} idx_check_t;

#define idx_problem(c, db, k, kl, what) store_entry_problem((c)->problem, (c)->size, db, k, kl, what)

/* open_cases: type NUL child key → an open case whose "join" is that key. */
static int check_open_case(void *ud, const void *k, size_t kl, const void *v, size_t vl)
{
    idx_check_t *c = ud;
    char id[STORE_ID_MAX];
    msgpack_unpacked u;
    ++*c->entries;
    if (store_copy_id(v, vl, id, sizeof id))
        return idx_problem(c, STORE_DB_OPEN_CASES, k, kl, "names no case id");
    int rc = case_rec_get(c->t, id, &u);
    const msgpack_object *join = rc ? NULL : frame_map_get(&u.data, "join");
    const char *st;
    size_t sn;
    int ok = !rc && join && join->type == MSGPACK_OBJECT_BIN && join->via.bin.size == kl &&
             memcmp(join->via.bin.ptr, k, kl) == 0 &&
             frame_str(frame_map_get(&u.data, "status"), &st, &sn) &&
             case_status_parse(st, sn) == CASE_OPEN;
    msgpack_unpacked_destroy(&u);
    if (rc && rc != STORE_NOTFOUND && rc != STORE_CORRUPTED)
        return rc;
    return ok ? 0 : idx_problem(c, STORE_DB_OPEN_CASES, k, kl, rc ? "names a case that is not there"
                                                            : "names a case not open under it");
}

/* idem: agent NUL ref (as stored) → [event, case] of an event sent with them. */
static int check_idem(void *ud, const void *k, size_t kl, const void *v, size_t vl)
{
    idx_check_t *c = ud;
    char ev[STORE_ID_MAX], cs[STORE_ID_MAX], agent[CAREHUB_ID_MAX + 1], ref[CAREHUB_ID_MAX + 1];
    const void *rec;
    size_t rl;
    ++*c->entries;
    if (store_idem_unpack(v, vl, ev, cs))
        return idx_problem(c, STORE_DB_IDEM, k, kl, "holds no [event, case]");
    int rc = store_get(c->t, STORE_DB_EVENTS, ev, strlen(ev), &rec, &rl);
    if (rc == STORE_NOTFOUND)
        return idx_problem(c, STORE_DB_IDEM, k, kl, "names an event that is not there");
    if (rc)
        return rc;
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    char pair[2 * CAREHUB_ID_MAX + 2], of[STORE_ID_MAX];
    int ok = msgpack_unpack_next(&u, rec, rl, NULL) == MSGPACK_UNPACK_SUCCESS &&
             copy_field(&u.data, "agent", agent, sizeof agent) &&
             copy_field(&u.data, "ref", ref, sizeof ref) &&
             copy_field(&u.data, "case", of, sizeof of) && strcmp(of, cs) == 0;
    size_t pl = ok ? store_pair_key(pair, sizeof pair, agent, ref) : 0;
    msgpack_unpacked_destroy(&u);
    if (!pl || pl != kl || memcmp(pair, k, kl) != 0)
        return idx_problem(c, STORE_DB_IDEM, k, kl, "does not match the event it names");
    return 0;
}

int case_verify_indexes(store_txn_t *t, char *problem, size_t size, unsigned long long *entries)
{
    idx_check_t c = {t, problem, size, entries};
    problem[0] = '\0';
    int rc = store_each(t, STORE_DB_OPEN_CASES, NULL, 0, 0, check_open_case, &c);
    if (!rc && !problem[0])
        rc = store_each(t, STORE_DB_IDEM, NULL, 0, 0, check_idem, &c);
    return rc ? rc : problem[0] != '\0';
}

/* What case_put_events() hands to store_write(). */
typedef struct {
    case_event_t *items;
    size_t n;
    case_stored_fn on_stored;
    void *ud;
} put_batch_t;

static int put_batch(store_txn_t *t, void *ud)
{
    put_batch_t *b = ud;
    return case_txn_put_events(t, b->items, b->n, b->on_stored, b->ud);
}

store_rc_t case_put_events(store_t *st, case_event_t *items, size_t n, case_stored_fn on_stored,
                           void *ud)
{
    put_batch_t b = {items, n, on_stored, ud};
    store_rc_t rc = store_write(st, put_batch, &b);
    if (rc != STORE_OK)
        for (size_t i = 0; i < n; i++)
            items[i].status = CASE_ITEM_PENDING;
    return rc;
}

typedef struct {
    const char *id;
    char **out;
    size_t *len;
} get_copy_t;

static int get_event_txn(store_txn_t *t, void *ud)
{
    get_copy_t *g = ud;
    const void *v;
    size_t vl;
    int rc = store_get(t, STORE_DB_EVENTS, g->id, strlen(g->id), &v, &vl);
    if (rc)
        return rc;
    *g->out = xmalloc(vl);
    memcpy(*g->out, v, vl); /* copy out before the transaction ends */
    *g->len = vl;
    return 0;
}

store_rc_t case_get_event(store_t *st, const char *event_id, char **out, size_t *len)
{
    get_copy_t g = {event_id, out, len};
    return store_read(st, get_event_txn, &g);
}
typedef struct {
    const char *case_id;
    char **out;
    size_t *len;
    size_t count;               /* events of the case */
    char last[STORE_ID_MAX];    /* the newest of them */
} get_case_t;

static int count_event(void *ud, const void *k, size_t kl, const void *v, size_t vl)
{
    (void)k;
    (void)kl;
    get_case_t *g = ud;
    g->count++;
    if (vl < sizeof g->last) {
        memcpy(g->last, v, vl);
        g->last[vl] = '\0';
    }
    return 0;
}

static int get_case_txn(store_txn_t *t, void *ud)
{
    get_case_t *g = ud;
    const void *v, *last;
    size_t vl, lastl;
    int rc = store_get(t, STORE_DB_CASES, g->case_id, strlen(g->case_id), &v, &vl);
    if (rc)
        return rc;
    char *rec = xmalloc(vl); /* copied: the walk below reads other records */
    size_t rlen = vl;
    memcpy(rec, v, rlen);
    if ((rc = store_each_case_event(t, g->case_id, count_event, g))) {
        free(rec);
        return rc;
    }
    /* "updated": when the newest event was received. */
    int64_t updated = 0;
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    if (g->last[0] && store_get(t, STORE_DB_EVENTS, g->last, strlen(g->last), &last, &lastl) == 0 &&
        msgpack_unpack_next(&u, last, lastl, NULL) == MSGPACK_UNPACK_SUCCESS)
        (void)frame_int(frame_map_get(&u.data, "received"), &updated);
    msgpack_unpacked_destroy(&u);
    /* The record plus "events" (how many joined) and "updated". */
    msgpack_unpacked_init(&u);
    rc = STORE_CORRUPTED;
    if (msgpack_unpack_next(&u, rec, rlen, NULL) == MSGPACK_UNPACK_SUCCESS &&
        u.data.type == MSGPACK_OBJECT_MAP) {
        msgpack_sbuffer sb;
        msgpack_packer pk;
        msgpack_sbuffer_init(&sb);
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        msgpack_pack_map(&pk, u.data.via.map.size + 2);
        for (uint32_t i = 0; i < u.data.via.map.size; i++) {
            msgpack_pack_object(&pk, u.data.via.map.ptr[i].key);
            msgpack_pack_object(&pk, u.data.via.map.ptr[i].val);
        }
        frame_pack_cstr(&pk, "events");
        msgpack_pack_uint64(&pk, g->count);
        frame_pack_cstr(&pk, "updated");
        msgpack_pack_int64(&pk, updated);
        *g->len = sb.size;
        *g->out = msgpack_sbuffer_release(&sb);
        rc = 0;
    }
    msgpack_unpacked_destroy(&u);
    free(rec);
    return rc;
}

store_rc_t case_get(store_t *st, const char *case_id, char **out, size_t *len)
{
    get_case_t g = {case_id, out, len, 0, ""};
    return store_read(st, get_case_txn, &g);
}
