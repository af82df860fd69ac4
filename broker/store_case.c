/*
 * store_case.c — the event and case records: an event's idempotency entry and
 * its record (body sealed when privacy is on), joining it to the open case of
 * its child (or opening one), the trail records of both, and reading an event
 * or a case back as the protocol shows them.
 */
#include "store_int.h"

#include <errno.h>
#include <msgpack.h>
#include <stdlib.h>
#include <string.h>

#include "frame.h"
#include "log.h"
#include "trail.h"
#include "util.h"

static const char *sev_names[] = {"low", "normal", "high", "critical"};

int store_severity_parse(const char *s, size_t n)
{
    for (int i = 0; i < 4; i++)
        if (strlen(sev_names[i]) == n && memcmp(sev_names[i], s, n) == 0)
            return i;
    return -1;
}

const char *store_severity_name(int sev)
{
    return sev >= 0 && sev < 4 ? sev_names[sev] : "normal";
}

/* A case's status: made open, left once for resolved or closed (both final). */
static const struct {
    const char *name;
    unsigned next; /* bit per status it may move to */
} CASE_STATUS[STORE_CASE_STATUS_COUNT] = {
    [STORE_CASE_OPEN] = {"open", 1u << STORE_CASE_RESOLVED | 1u << STORE_CASE_CLOSED},
    [STORE_CASE_RESOLVED] = {"resolved", 0},
    [STORE_CASE_CLOSED] = {"closed", 0},
};

const char *store_case_status_name(store_case_status_t s)
{
    return s < STORE_CASE_STATUS_COUNT ? CASE_STATUS[s].name : NULL;
}

int store_case_status_parse(const char *s, size_t n)
{
    for (int i = 0; i < STORE_CASE_STATUS_COUNT; i++)
        if (strlen(CASE_STATUS[i].name) == n && memcmp(CASE_STATUS[i].name, s, n) == 0)
            return i;
    return -1;
}

int store_case_may_move(store_case_status_t from, store_case_status_t to)
{
    return from < STORE_CASE_STATUS_COUNT && to < STORE_CASE_STATUS_COUNT &&
           (CASE_STATUS[from].next & (1u << to)) != 0;
}

static int put_packed(MDB_txn *txn, MDB_dbi dbi, const void *key, size_t klen,
                      const msgpack_sbuffer *sb, unsigned flags)
{
    MDB_val k = {klen, (void *)key}, v = {sb->size, sb->data};
    return mdb_put(txn, dbi, &k, &v, flags);
}

/* Write the case record: {id, type, status, opened, severity}. How many events
 * it has is not stored here (case_events counts them), so joining an event to a
 * case rewrites the record only when the severity rises. */
static int put_case(MDB_txn *txn, store_t *st, const char *case_id, const char *type,
                    int64_t opened, int severity, const void *join, size_t jlen)
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
    frame_pack_cstr(&pk, "status");   frame_pack_cstr(&pk, store_case_status_name(STORE_CASE_OPEN));
    frame_pack_cstr(&pk, "opened");   msgpack_pack_int64(&pk, opened);
    frame_pack_cstr(&pk, "severity"); frame_pack_cstr(&pk, store_severity_name(severity));
    int rc = put_packed(txn, st->dbi[STORE_DB_CASES], case_id, strlen(case_id), &sb, 0);
    msgpack_sbuffer_destroy(&sb);
    return rc;
}

/* Read the fields of a case record that joining needs. */
static int get_case_fields(MDB_txn *txn, store_t *st, const char *case_id, int64_t *opened,
                           int *severity)
{
    MDB_val k = store_val_str(case_id), v;
    int rc = mdb_get(txn, st->dbi[STORE_DB_CASES], &k, &v);
    if (rc)
        return rc;
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    rc = MDB_CORRUPTED;
    if (msgpack_unpack_next(&u, v.mv_data, v.mv_size, NULL) == MSGPACK_UNPACK_SUCCESS) {
        int64_t o;
        const char *s;
        size_t sl;
        if (frame_int(frame_map_get(&u.data, "opened"), &o) &&
            frame_str(frame_map_get(&u.data, "severity"), &s, &sl)) {
            *opened = o;
            *severity = store_severity_parse(s, sl);
            rc = 0;
        }
    }
    msgpack_unpacked_destroy(&u);
    return rc;
}

/* Join the event to its child's open case of the same type, or open one. */
static int join_case(store_txn_t *t, store_event_t *it)
{
    MDB_txn *txn = t->txn;
    store_t *st = t->st;
    uint64_t *seq_case = &t->seq_case;
    char jkey[512];
    size_t jlen = 0;
    int rc;
    if (it->child_id) {
        const char *cid = it->child_id;
        char hashed[2 * 16 + 1];
        if (st->privacy) { /* the child id is not stored: its keyed hash joins */
            unsigned char h[16];
            crypto_generichash(h, sizeof h, (const unsigned char *)cid, strlen(cid), st->join_key,
                               sizeof st->join_key);
            sodium_bin2hex(hashed, sizeof hashed, h, sizeof h);
            cid = hashed;
        }
        size_t tl = strlen(it->type), c = strlen(cid);
        if (tl + 1 + c <= sizeof jkey) {
            memcpy(jkey, it->type, tl);
            jkey[tl] = '\0';
            memcpy(jkey + tl + 1, cid, c);
            jlen = tl + 1 + c;
        }
    }
    if (jlen) {
        MDB_val k = {jlen, jkey}, v;
        rc = mdb_get(txn, st->dbi[STORE_DB_OPEN_CASES], &k, &v);
        if (rc == 0 && v.mv_size < STORE_ID_MAX) {
            memcpy(it->case_id, v.mv_data, v.mv_size);
            it->case_id[v.mv_size] = '\0';
            int64_t opened;
            int sev;
            if ((rc = get_case_fields(txn, st, it->case_id, &opened, &sev)))
                return rc;
            if (it->severity <= sev)
                return 0;
            if ((rc = put_case(txn, st, it->case_id, it->type, opened, it->severity, jkey, jlen)))
                return rc;
            return trail_append_stored(t, it->case_id, "case_severity", "broker", STORE_DB_CASES,
                                       it->case_id, NULL);
        }
        if (rc && rc != MDB_NOTFOUND)
            return rc;
    }
    util_fmt(it->case_id, STORE_ID_MAX, "case-%010llu", (unsigned long long)++*seq_case);
    if (jlen) {
        MDB_val k = {jlen, jkey}, v = store_val_str(it->case_id);
        if ((rc = mdb_put(txn, st->dbi[STORE_DB_OPEN_CASES], &k, &v, 0)))
            return rc;
    }
    if ((rc = put_case(txn, st, it->case_id, it->type, it->received, it->severity, jkey, jlen)))
        return rc;
    return trail_append_stored(t, it->case_id, "case_opened", "broker", STORE_DB_CASES, it->case_id,
                               NULL);
}

static int put_event(MDB_txn *txn, store_t *st, const store_event_t *it)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 9);
    frame_pack_cstr(&pk, "id");       frame_pack_cstr(&pk, it->event_id);
    frame_pack_cstr(&pk, "agent");    frame_pack_cstr(&pk, it->agent);
    frame_pack_cstr(&pk, "ref");      frame_pack_cstr(&pk, it->ref);
    frame_pack_cstr(&pk, "type");     frame_pack_cstr(&pk, it->type);
    frame_pack_cstr(&pk, "at");       msgpack_pack_int64(&pk, it->at);
    frame_pack_cstr(&pk, "received"); msgpack_pack_int64(&pk, it->received);
    frame_pack_cstr(&pk, "case");     frame_pack_cstr(&pk, it->case_id);
    frame_pack_cstr(&pk, "severity"); frame_pack_cstr(&pk, store_severity_name(it->severity));
    if (st->privacy) { /* "body_enc": nonce + sealed body; the event id is the associated data */
        const size_t nb = crypto_aead_xchacha20poly1305_ietf_NPUBBYTES,
                     ab = crypto_aead_xchacha20poly1305_ietf_ABYTES;
        unsigned char *box = xmalloc(nb + it->body_len + ab);
        unsigned long long clen;
        randombytes_buf(box, nb);
        crypto_aead_xchacha20poly1305_ietf_encrypt(box + nb, &clen, (const unsigned char *)it->body,
                                                   it->body_len, (const unsigned char *)it->event_id,
                                                   strlen(it->event_id), NULL, box, st->body_key);
        frame_pack_cstr(&pk, "body_enc");
        msgpack_pack_bin(&pk, nb + (size_t)clen);
        msgpack_pack_bin_body(&pk, box, nb + (size_t)clen);
        free(box);
    } else {
        frame_pack_cstr(&pk, "body");
        msgpack_sbuffer_write(&sb, it->body, it->body_len); /* already msgpack */
    }
    int rc = put_packed(txn, st->dbi[STORE_DB_EVENTS], it->event_id, strlen(it->event_id), &sb, MDB_NOOVERWRITE);
    msgpack_sbuffer_destroy(&sb);
    return rc;
}

int store_txn_put_events(store_txn_t *t, store_event_t *items, size_t n, store_stored_fn on_stored,
                         void *ud)
{
    store_t *st = t->st;
    MDB_txn *txn = t->txn;
    int rc;
    for (size_t i = 0; i < n; i++)
        items[i].status = STORE_ITEM_PENDING;
    for (size_t i = 0; i < n; i++) {
        store_event_t *it = &items[i];
        char key[512];
        size_t klen = store_pair_key(key, sizeof key, it->agent, it->ref);
        if (!klen)
            return EINVAL; /* ids are at most 64 bytes: cannot happen */
        MDB_val k = {klen, key}, v;
        if (store_index_find(st, key, klen, it->event_id, it->case_id)) {
            it->status = STORE_ITEM_DUPLICATE; /* its entry still waits in memory */
            continue;
        }
        rc = mdb_get(txn, st->dbi[STORE_DB_IDEM], &k, &v);
        if (rc == 0) {
            if ((rc = store_idem_unpack(v.mv_data, v.mv_size, it->event_id, it->case_id)))
                return rc;
            it->status = STORE_ITEM_DUPLICATE;
            continue;
        }
        if (rc != MDB_NOTFOUND)
            return rc;
        if (it->refuse) {
            it->status = STORE_ITEM_REFUSED;
            continue;
        }
        util_fmt(it->event_id, STORE_ID_MAX, "ev-%012llu", (unsigned long long)++t->seq_event);
        if ((rc = join_case(t, it)) || (rc = put_event(txn, st, it)) ||
            (rc = trail_append_stored(t, it->case_id, "event", it->agent, STORE_DB_EVENTS,
                                      it->event_id, it->ref)))
            return rc;
        /* The case_events and idempotency entries wait in memory (kept only if
         * this commits) and are written in bulk (store_index.c). */
        if (!store_index_add(st, t->id, t->seq_event, it->case_id, it->event_id, key, klen)) {
            msgpack_sbuffer sb;
            msgpack_sbuffer_init(&sb);
            store_idem_pack(&sb, it->event_id, it->case_id);
            rc = put_packed(txn, st->dbi[STORE_DB_IDEM], key, klen, &sb, MDB_NOOVERWRITE);
            msgpack_sbuffer_destroy(&sb);
            if (rc)
                return rc;
        }
        it->status = STORE_ITEM_STORED;
        if (on_stored && (rc = on_stored(t, it, ud)))
            return rc;
    }
    return 0;
}

/* What store_put_events() hands to store_write(). */
typedef struct {
    store_event_t *items;
    size_t n;
    store_stored_fn on_stored;
    void *ud;
} put_batch_t;

static int put_batch(store_txn_t *t, void *ud)
{
    put_batch_t *b = ud;
    return store_txn_put_events(t, b->items, b->n, b->on_stored, b->ud);
}

store_rc_t store_put_events(store_t *st, store_event_t *items, size_t n, store_stored_fn on_stored,
                            void *ud)
{
    put_batch_t b = {items, n, on_stored, ud};
    store_rc_t rc = store_write(st, put_batch, &b);
    if (rc != STORE_OK)
        for (size_t i = 0; i < n; i++)
            items[i].status = STORE_ITEM_PENDING;
    return rc;
}

/* 1 when id could be an LMDB key at all (an id that could not cannot exist). */
static int key_ok(store_t *st, const MDB_val *k)
{
    return k->mv_size > 0 && k->mv_size <= (size_t)mdb_env_get_maxkeysize(st->env);
}

static store_rc_t get_copy(store_t *st, MDB_dbi dbi, const char *id, char **out, size_t *len)
{
    MDB_txn *txn;
    int rc = mdb_txn_begin(st->env, NULL, MDB_RDONLY, &txn);
    if (rc) {
        log_error("store: read failed: %s", mdb_strerror(rc));
        return STORE_IO;
    }
    MDB_val k = store_val_str(id), v;
    /* an id LMDB could not hold as a key cannot exist */
    rc = key_ok(st, &k) ? mdb_get(txn, dbi, &k, &v) : MDB_NOTFOUND;
    store_rc_t r = STORE_OK;
    if (rc == 0) {
        *out = xmalloc(v.mv_size);
        memcpy(*out, v.mv_data, v.mv_size); /* copy out before the txn ends */
        *len = v.mv_size;
    } else {
        r = rc == MDB_NOTFOUND ? STORE_NOTFOUND : STORE_IO;
    }
    mdb_txn_abort(txn);
    return r;
}

store_rc_t store_get_event(store_t *st, const char *event_id, char **out, size_t *len)
{
    return get_copy(st, st->dbi[STORE_DB_EVENTS], event_id, out, len);
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
    store_t *st = t->st;
    MDB_val k = store_val_str(g->case_id), v, last;
    int rc = key_ok(st, &k) ? mdb_get(t->txn, st->dbi[STORE_DB_CASES], &k, &v) : MDB_NOTFOUND;
    if (rc)
        return rc;
    char *rec = xmalloc(v.mv_size); /* copied: the walk below reads other records */
    size_t rlen = v.mv_size;
    memcpy(rec, v.mv_data, rlen);
    if ((rc = store_each_case_event(t, g->case_id, count_event, g))) {
        free(rec);
        return rc;
    }
    /* "updated": when the newest event was received. */
    int64_t updated = 0;
    MDB_val lk = store_val_str(g->last);
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    if (g->last[0] && mdb_get(t->txn, st->dbi[STORE_DB_EVENTS], &lk, &last) == 0 &&
        msgpack_unpack_next(&u, last.mv_data, last.mv_size, NULL) == MSGPACK_UNPACK_SUCCESS)
        (void)frame_int(frame_map_get(&u.data, "received"), &updated);
    msgpack_unpacked_destroy(&u);
    /* The record plus "events" (how many joined) and "updated". */
    msgpack_unpacked_init(&u);
    rc = MDB_CORRUPTED;
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

store_rc_t store_get_case(store_t *st, const char *case_id, char **out, size_t *len)
{
    get_case_t g = {case_id, out, len, 0, ""};
    return store_read(st, get_case_txn, &g);
}
