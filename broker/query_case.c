/*
 * query_case.c — one case's file (what:"case", paged under max_message_bytes)
 * and trail (what:"trail"), read for a reader the op already allowed
 * (query.c decides who may read what). See query_int.h.
 */
#include "query_int.h"

#include <sodium.h>
#include <string.h>

#include "assign.h"
#include "trail.h"
#include "util.h"

/* ---- what:"case" -------------------------------------------------------------------- */

typedef struct {
    store_txn_t *t;
    msgpack_packer *pk;
    size_t n;
    int count_only;
    int rc;
    const char *agency; /* the reading agency (its own words only), NULL: a supervisor */
} pack_list_t;

/* The first pass of a list counts (1: counted, nothing more to do); the
 * second copies the visited id out (0, or STORE_CORRUPTED when it is no id). */
static int list_item(pack_list_t *l, const void *v, size_t vl, char id[STORE_ID_MAX])
{
    if (l->count_only) {
        l->n++;
        return 1;
    }
    return store_copy_id(v, vl, id, STORE_ID_MAX) ? STORE_CORRUPTED : 0;
}

static int pack_event_visit(void *ud, const void *k, size_t kl, const void *v, size_t vl)
{
    (void)k;
    (void)kl;
    pack_list_t *l = ud;
    char ev[STORE_ID_MAX];
    int first = list_item(l, v, vl, ev);
    if (first)
        return first == 1 ? 0 : first;
    const void *rec;
    size_t rl;
    int rc = store_get(l->t, STORE_DB_EVENTS, ev, vl, &rec, &rl);
    if (rc)
        return rc;
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    rc = STORE_CORRUPTED;
    if (msgpack_unpack_next(&u, rec, rl, NULL) == MSGPACK_UNPACK_SUCCESS &&
        u.data.type == MSGPACK_OBJECT_MAP) {
        msgpack_sbuffer body;
        msgpack_sbuffer_init(&body);
        int opened = store_txn_event_body(l->t, ev, &u.data, &body) == 0;
        uint32_t n = 0;
        for (uint32_t i = 0; i < u.data.via.map.size; i++) {
            const char *ks;
            size_t kn;
            if (!(frame_str(&u.data.via.map.ptr[i].key, &ks, &kn) && kn >= 4 &&
                  memcmp(ks, "body", 4) == 0))
                n++;
        }
        msgpack_pack_map(l->pk, n + 1);
        for (uint32_t i = 0; i < u.data.via.map.size; i++) {
            const char *ks;
            size_t kn;
            if (frame_str(&u.data.via.map.ptr[i].key, &ks, &kn) && kn >= 4 && memcmp(ks, "body", 4) == 0)
                continue;
            msgpack_pack_object(l->pk, u.data.via.map.ptr[i].key);
            msgpack_pack_object(l->pk, u.data.via.map.ptr[i].val);
        }
        frame_pack_cstr(l->pk, "body");
        if (opened)
            l->pk->callback(l->pk->data, body.data, body.size);
        else
            msgpack_pack_nil(l->pk); /* sealed with another key: shown as missing */
        if (body.data)
            sodium_memzero(body.data, body.alloc);
        msgpack_sbuffer_destroy(&body);
        rc = 0;
    }
    msgpack_unpacked_destroy(&u);
    return rc;
}

static int pack_assignment_visit(void *ud, const void *k, size_t kl, const void *v, size_t vl)
{
    (void)k;
    (void)kl;
    pack_list_t *l = ud;
    char id[STORE_ID_MAX];
    int first = list_item(l, v, vl, id);
    if (first)
        return first == 1 ? 0 : first;
    return assign_pack_record(l->t, id, l->pk, 1, l->agency); /* a supervisor: every note */
}

/* Pack a list: count first (msgpack arrays need their length), then the items. */
static int pack_list(store_txn_t *t, msgpack_packer *pk, int events, const char *case_id,
                     const char *agency)
{
    pack_list_t l = {t, pk, 0, 1, 0, agency};
    store_each_fn fn = events ? pack_event_visit : pack_assignment_visit;
    int rc = events ? store_each_case_event(t, case_id, fn, &l)
                    : store_each(t, STORE_DB_CASE_ASSIGN, case_id, strlen(case_id), 1, fn, &l);
    if (rc)
        return rc;
    msgpack_pack_array(pk, l.n);
    l.count_only = 0;
    return events ? store_each_case_event(t, case_id, fn, &l)
                  : store_each(t, STORE_DB_CASE_ASSIGN, case_id, strlen(case_id), 1, fn, &l);
}

/* The case record of q->case_id in *rec, or *rec NULL when there is none
 * (refused not_found); 0 or another store_rc_t. */
static int get_case(q_t *q, store_txn_t *t, const void **rec, size_t *rl)
{
    *rec = NULL;
    int rc = store_get(t, STORE_DB_CASES, q->case_id, strlen(q->case_id), rec, rl);
    if (rc == STORE_NOTFOUND) {
        query_refuse(q, QUERY_NOT_FOUND, "/case", "no case %s exists", q->case_id);
        *rec = NULL;
        return 0;
    }
    return rc;
}

/* One page of a case file's events: those after `after`, packed while they fit in
 * `budget` bytes (at least one); every event counted in total. */
typedef struct {
    store_txn_t *t;
    const char *agency;
    const char *after;      /* "" : from the first */
    size_t budget;
    msgpack_sbuffer items;  /* the page's events, packed */
    size_t n, total;
    int full;               /* one did not fit: `next` names the last that did */
    char last[STORE_ID_MAX];
} page_t;

static int page_event_visit(void *ud, const void *k, size_t kl, const void *v, size_t vl)
{
    page_t *p = ud;
    char ev[STORE_ID_MAX];
    if (store_copy_id(v, vl, ev, sizeof ev))
        return STORE_CORRUPTED;
    p->total++;
    if (p->full || (p->after[0] && strcmp(ev, p->after) <= 0)) /* ids sort in arrival order */
        return 0;
    msgpack_sbuffer one;
    msgpack_packer pk;
    msgpack_sbuffer_init(&one);
    msgpack_packer_init(&pk, &one, msgpack_sbuffer_write);
    pack_list_t l = {p->t, &pk, 0, 0, 0, p->agency};
    int rc = pack_event_visit(&l, k, kl, v, vl);
    if (!rc && p->n > 0 && p->items.size + one.size > p->budget) {
        p->full = 1;
    } else if (!rc) {
        msgpack_sbuffer_write(&p->items, one.data, one.size);
        p->n++;
        memcpy(p->last, ev, sizeof ev);
    }
    if (one.data)
        sodium_memzero(one.data, one.alloc); /* children's data */
    msgpack_sbuffer_destroy(&one);
    return rc;
}

/* what:"case", after?: the case record, one page of its events (as many as fit
 * under max_message_bytes with the rest of the reply; `next` when more follow,
 * `events_total` always) and its assignments. */
int query_case_file(q_t *q, store_txn_t *t)
{
    const void *rec;
    size_t rl;
    char after[STORE_ID_MAX] = "";
    if (query_opt_str(q, "after", after, sizeof after) < 0) {
        query_refuse(q, QUERY_INVALID, "/after", "`after` is the `next` of the page before (an event "
               "id)%s", "");
        return 0;
    }
    int rc = get_case(q, t, &rec, &rl);
    if (rc || !rec)
        return rc;
    const char *agency = q->agent->role == ROLE_AGENCY ? q->agent->agency : NULL;
    msgpack_sbuffer as;
    msgpack_packer apk;
    msgpack_sbuffer_init(&as);
    msgpack_packer_init(&apk, &as, msgpack_sbuffer_write);
    rc = pack_list(t, &apk, 0, q->case_id, agency);
    size_t fixed = rl + as.size + 1024, max = q->cfg->max_message_bytes;
    page_t p = {t, agency, after, max > fixed ? max - fixed : 1, {0}, 0, 0, 0, ""};
    msgpack_sbuffer_init(&p.items);
    if (!rc)
        rc = store_each_case_event(t, q->case_id, page_event_visit, &p);
    if (!rc) {
        frame_out_message(q->out, "result", q->id, p.full ? 6 : 5);
        frame_out_str(q->out, "what", "case");
        frame_out_key(q->out, "case");
        q->out->pk.callback(q->out->pk.data, rec, rl);
        frame_out_key(q->out, "events");
        msgpack_pack_array(&q->out->pk, (uint32_t)p.n);
        q->out->pk.callback(q->out->pk.data, p.items.data, p.items.size);
        frame_out_int(q->out, "events_total", (int64_t)p.total);
        if (p.full)
            frame_out_str(q->out, "next", p.last);
        frame_out_key(q->out, "assignments");
        q->out->pk.callback(q->out->pk.data, as.data, as.size);
    }
    if (p.items.data)
        sodium_memzero(p.items.data, p.items.alloc);
    msgpack_sbuffer_destroy(&p.items);
    msgpack_sbuffer_destroy(&as);
    return rc;
}

/* ---- what:"trail" -------------------------------------------------------------------- */

typedef struct {
    const char *case_id;
    msgpack_sbuffer items; /* the case's records, packed, counted in n */
    size_t n;
} trail_list_t;

static int trail_visit(void *ud, const void *rec, size_t len)
{
    trail_list_t *l = ud;
    msgpack_sbuffer_write(&l->items, rec, len);
    l->n++;
    return 0;
}

int query_case_trail(q_t *q, store_txn_t *t)
{
    const void *rec;
    size_t rl;
    int rc = get_case(q, t, &rec, &rl);
    if (rc || !rec)
        return rc;
    /* The case's records through the per-case index, not a walk of the trail. */
    trail_list_t l = {q->case_id, {0}, 0};
    msgpack_sbuffer_init(&l.items);
    rc = trail_each_of_case(t, q->case_id, trail_visit, &l);
    if (!rc) {
        frame_out_message(q->out, "result", q->id, 3);
        frame_out_str(q->out, "what", "trail");
        frame_out_str(q->out, "case", q->case_id);
        frame_out_key(q->out, "records");
        msgpack_pack_array(&q->out->pk, l.n);
        q->out->pk.callback(q->out->pk.data, l.items.data, l.items.size);
    }
    msgpack_sbuffer_destroy(&l.items);
    return rc;
}

