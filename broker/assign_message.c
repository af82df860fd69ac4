/*
 * assign_message.c — an assignment as it leaves the store: the `case` message for
 * the agency's agents (with the case's newest events), the walk of an agency's
 * pending assignments that drives its delivery, and the record packed for readers.
 */
#include "assign.h"

#include <msgpack.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

#include "assign_int.h"

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
        return STORE_CORRUPTED;
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
    rc = STORE_CORRUPTED;
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
    int rc = assign_rec_get(t, assignment, &a);
    if (rc)
        return rc;
    util_fmt(agency, STORE_ID_MAX, "%s", a.agency);
    /* pushed while open; once more when acknowledged with a resolve_by (PROTOCOL §10) */
    *open_ = a.state == AS_OPEN || (a.resolve_by > 0 && !assign_is_final(a.state));
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
        opened = assign_get_int(&u.data, "opened");
        if (frame_str(frame_map_get(&u.data, "severity"), &s, &n) && case_severity_parse(s, n) >= 0)
            sev = case_severity_parse(s, n);
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
    frame_out_message(o, "case", a.id, 8 + (a.resolve_by > 0 ? 1 : 0));
    frame_out_str(o, "case", a.case_id);
    frame_out_str(o, "agency", a.agency);
    frame_out_str(o, "type", a.type);
    frame_out_str(o, "severity", case_severity_name(sev));
    frame_out_int(o, "opened", opened);
    frame_out_int(o, "ack_by", a.ack_by);
    if (a.resolve_by > 0) /* the second deadline, once acknowledged (PROTOCOL §10) */
        frame_out_int(o, "resolve_by", a.resolve_by);
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

typedef struct {
    const char *prefix; /* the agency, with its NUL */
    size_t plen;
    int (*fn)(void *, const char *);
    void *ud;
} pending_walk_t;

static int visit_pending(void *ud, const void *k, size_t kl, const void *v, size_t vl)
{
    (void)v;
    (void)vl;
    pending_walk_t *c = ud;
    if (kl <= c->plen || memcmp(k, c->prefix, c->plen) != 0)
        return STORE_EACH_STOP; /* past this agency */
    char id[STORE_ID_MAX];
    size_t n = kl - c->plen;
    if (n >= sizeof id)
        return STORE_CORRUPTED;
    memcpy(id, (const char *)k + c->plen, n);
    id[n] = '\0';
    return c->fn(c->ud, id) < 0 ? STORE_ABORTED : 0;
}

int assign_each_pending(store_txn_t *t, const char *agency,
                        int (*fn)(void *ud, const char *assignment), void *ud)
{
    char prefix[ID_LEN + 1];
    util_fmt(prefix, sizeof prefix, "%s", agency);
    size_t plen = strlen(prefix) + 1; /* with the NUL */
    pending_walk_t c = {prefix, plen, fn, ud};
    return store_each(t, STORE_DB_PENDING, prefix, plen, 0, visit_pending, &c);
}

int assign_pack_record(store_txn_t *t, const char *assignment, msgpack_packer *pk, int with_note,
                       const char *reader_agency)
{
    as_t a;
    int rc = assign_rec_get(t, assignment, &a);
    if (rc)
        return rc;
    if (reader_agency && strcmp(a.agency, reader_agency) != 0)
        with_note = 0; /* another agency's words are its own */
    msgpack_pack_map(pk, 17 + (with_note ? 1 : 0));
    frame_pack_cstr(pk, "id");       frame_pack_cstr(pk, a.id);
    frame_pack_cstr(pk, "case");     frame_pack_cstr(pk, a.case_id);
    frame_pack_cstr(pk, "agency");   frame_pack_cstr(pk, a.agency);
    frame_pack_cstr(pk, "type");     frame_pack_cstr(pk, a.type);
    frame_pack_cstr(pk, "state");    frame_pack_cstr(pk, assign_state_name(a.state));
    frame_pack_cstr(pk, "severity"); frame_pack_cstr(pk, case_severity_name(a.severity));
    frame_pack_cstr(pk, "created");  msgpack_pack_int64(pk, a.created);
    frame_pack_cstr(pk, "ack_by");   msgpack_pack_int64(pk, a.ack_by);
    frame_pack_cstr(pk, "acked_at"); msgpack_pack_int64(pk, a.acked_at);
    frame_pack_cstr(pk, "by");       frame_pack_cstr(pk, with_note ? a.by : "");
    frame_pack_cstr(pk, "to");       frame_pack_cstr(pk, a.to);
    frame_pack_cstr(pk, "level");    msgpack_pack_int(pk, a.level);
    frame_pack_cstr(pk, "steps");    msgpack_pack_uint64(pk, a.n_steps);
    /* the second deadline: resolve_by 0 while none is set; final_at 0 while not final */
    frame_pack_cstr(pk, "resolve_by");     msgpack_pack_int64(pk, a.resolve_by);
    frame_pack_cstr(pk, "final_at");       msgpack_pack_int64(pk, a.final_at);
    frame_pack_cstr(pk, "resolve_level");  msgpack_pack_int(pk, a.rlevel);
    frame_pack_cstr(pk, "resolve_steps");  msgpack_pack_uint64(pk, a.n_rsteps);
    if (with_note) {
        frame_pack_cstr(pk, "note");
        frame_pack_cstr(pk, a.note);
    }
    sodium_memzero(a.note, sizeof a.note);
    return 0;
}
