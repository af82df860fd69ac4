/* trail.c — the hash-chained trail and its verification; see trail.h. */
#include "trail.h"

#include <msgpack.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "frame.h"
#include "log.h"
#include "util.h"

#define HASH_LEN crypto_generichash_BYTES /* 32: BLAKE2b-256 */

static void be64(unsigned char *b, uint64_t x)
{
    for (int i = 7; i >= 0; i--, x >>= 8)
        b[i] = (unsigned char)(x & 0xff);
}

static uint64_t get_be64(const unsigned char *b)
{
    uint64_t x = 0;
    for (int i = 0; i < 8; i++)
        x = (x << 8) | b[i];
    return x;
}

static void hash(unsigned char out[HASH_LEN], const void *data, size_t len)
{
    crypto_generichash(out, HASH_LEN, data, len, NULL, 0);
}

static void pack_str(msgpack_packer *pk, const char *key, const char *val)
{
    frame_pack_cstr(pk, key);
    frame_pack_cstr(pk, val ? val : "");
}

/* The per-case index: the case's newest record (trail_last) and, for each
 * record, the case's record before it (trail_prev). One entry per case is
 * rewritten and one appended per record: no page per case per record. */
static int index_record(store_txn_t *t, const char *case_id, uint64_t seq)
{
    if (!case_id || !*case_id)
        return 0;
    size_t cl = strlen(case_id);
    const void *v;
    size_t vl;
    int rc = store_get(t, STORE_DB_TRAIL_LAST, case_id, cl, &v, &vl);
    if (rc && rc != STORE_NOTFOUND)
        return rc;
    unsigned char k[8], p[8];
    be64(k, seq);
    if (rc == 0) {
        if (vl != 8)
            return STORE_CORRUPTED;
        memcpy(p, v, 8);
        if ((rc = store_put(t, STORE_DB_TRAIL_PREV, k, 8, p, 8, 0)))
            return rc;
    }
    return store_put(t, STORE_DB_TRAIL_LAST, case_id, cl, k, 8, 0);
}

int trail_each_of_case(store_txn_t *t, const char *case_id,
                       int (*fn)(void *ud, const void *rec, size_t len), void *ud)
{
    size_t cl = strlen(case_id), n = 0, cap = 0;
    uint64_t *seqs = NULL;
    const void *v;
    size_t vl;
    int rc = store_get(t, STORE_DB_TRAIL_LAST, case_id, cl, &v, &vl);
    if (rc == STORE_NOTFOUND)
        return 0;
    while (rc == 0) { /* newest to oldest along the chain */
        if (vl != 8) {
            rc = STORE_CORRUPTED;
            break;
        }
        uint64_t s = get_be64(v);
        if (n && s >= seqs[n - 1]) { /* a chain must go back in time */
            rc = STORE_CORRUPTED;
            break;
        }
        if (n == cap) {
            cap = cap ? cap * 2 : 64;
            seqs = xrealloc(seqs, cap * sizeof *seqs);
        }
        seqs[n++] = s;
        unsigned char k[8];
        be64(k, s);
        rc = store_get(t, STORE_DB_TRAIL_PREV, k, 8, &v, &vl);
    }
    if (rc == STORE_NOTFOUND)
        rc = 0;
    for (size_t i = n; !rc && i > 0; i--) { /* oldest first */
        unsigned char k[8];
        be64(k, seqs[i - 1]);
        rc = store_get(t, STORE_DB_TRAIL, k, 8, &v, &vl);
        if (rc == 0)
            rc = fn(ud, v, vl);
        else if (rc == STORE_NOTFOUND)
            rc = STORE_CORRUPTED; /* the index names a record that is not there */
    }
    free(seqs);
    return rc;
}

typedef struct {
    store_txn_t *t;
    int rc;
} rebuild_t;

static int rebuild_visit(void *ud, const void *k, size_t kl, const void *v, size_t vl)
{
    rebuild_t *r = ud;
    if (kl != 8)
        return STORE_CORRUPTED;
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    int rc = STORE_CORRUPTED;
    const char *c;
    size_t cn;
    char case_id[STORE_ID_MAX];
    if (msgpack_unpack_next(&u, v, vl, NULL) == MSGPACK_UNPACK_SUCCESS &&
        frame_str(frame_map_get(&u.data, "case"), &c, &cn) && cn < sizeof case_id) {
        memcpy(case_id, c, cn);
        case_id[cn] = '\0';
        rc = index_record(r->t, case_id, get_be64(k));
    }
    msgpack_unpacked_destroy(&u);
    return rc;
}

static int rebuild_txn(store_txn_t *t, void *ud)
{
    size_t *n = ud;
    *n = store_txn_entries(t, STORE_DB_TRAIL);
    if (*n == 0 || store_txn_entries(t, STORE_DB_TRAIL_LAST) > 0) {
        *n = 0;
        return 0; /* nothing to index, or indexed already */
    }
    rebuild_t r = {t, 0};
    return store_each(t, STORE_DB_TRAIL, NULL, 0, 0, rebuild_visit, &r);
}

int trail_index_rebuild(store_t *st)
{
    size_t n = 0;
    store_rc_t rc = store_write(st, rebuild_txn, &n);
    if (rc != STORE_OK)
        return -1;
    if (n)
        log_info("trail: per-case index built for %zu trail records (a store from before it)", n);
    return 0;
}

int trail_append(store_txn_t *t, const char *case_id, const char *kind, const char *actor, int db,
                 const char *obj_id, const void *obj, size_t objlen, const char *ref)
{
    /* The head: the last record's number and hash (none yet: 0 and zeros). */
    unsigned char prev[HASH_LEN] = {0};
    uint64_t seq = 0;
    const void *hv;
    size_t hl;
    int rc = store_get(t, STORE_DB_TRAIL_HEAD, "head", 4, &hv, &hl);
    if (rc == 0 && hl == 8 + HASH_LEN) {
        seq = get_be64(hv);
        memcpy(prev, (const unsigned char *)hv + 8, HASH_LEN);
    } else if (rc == 0 || rc != STORE_NOTFOUND) {
        return rc ? rc : STORE_CORRUPTED;
    }
    seq++;
    unsigned char oh[HASH_LEN];
    if (obj)
        hash(oh, obj, objlen);

    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 10);
    frame_pack_cstr(&pk, "seq");
    msgpack_pack_uint64(&pk, seq);
    frame_pack_cstr(&pk, "at");
    msgpack_pack_int64(&pk, clock_now_ms());
    pack_str(&pk, "case", case_id);
    pack_str(&pk, "kind", kind);
    pack_str(&pk, "actor", actor);
    pack_str(&pk, "db", db >= 0 ? store_db_name((store_db_t)db) : "");
    pack_str(&pk, "obj", obj_id);
    frame_pack_cstr(&pk, "hash");
    msgpack_pack_bin(&pk, obj ? HASH_LEN : 0);
    msgpack_pack_bin_body(&pk, oh, obj ? HASH_LEN : 0);
    pack_str(&pk, "ref", ref);
    frame_pack_cstr(&pk, "prev");
    msgpack_pack_bin(&pk, HASH_LEN);
    msgpack_pack_bin_body(&pk, prev, HASH_LEN);

    unsigned char key[8], head[8 + HASH_LEN];
    be64(key, seq);
    rc = store_put(t, STORE_DB_TRAIL, key, 8, sb.data, sb.size, 1);
    if (rc == 0) {
        be64(head, seq);
        store_txn_chain_hash(t, head + 8, sb.data, sb.size); /* keyed with privacy on */
        rc = store_put(t, STORE_DB_TRAIL_HEAD, "head", 4, head, sizeof head, 0);
    }
    if (rc == 0)
        rc = index_record(t, case_id, seq);
    msgpack_sbuffer_destroy(&sb);
    return rc;
}

/* ---- the key mark: from which record the chain is keyed ------------------------ */

#define KEY_MARK "trail.keyed_from"

/* The mark's value: 8-byte first keyed record + its MAC under the trail key. */
static void mark_value(store_txn_t *t, uint64_t from, unsigned char out[8 + HASH_LEN])
{
    unsigned char m[sizeof KEY_MARK - 1 + 8];
    memcpy(m, KEY_MARK, sizeof KEY_MARK - 1);
    be64(m + sizeof KEY_MARK - 1, from);
    be64(out, from);
    store_txn_chain_hash(t, out + 8, m, sizeof m);
}

static int key_mark_txn(store_txn_t *t, void *ud)
{
    uint64_t *from = ud;
    const void *v;
    size_t vl;
    int rc = store_get(t, STORE_DB_COUNTERS, KEY_MARK, strlen(KEY_MARK), &v, &vl);
    if (rc != STORE_NOTFOUND)
        return rc; /* marked before */
    rc = store_get(t, STORE_DB_TRAIL_HEAD, "head", 4, &v, &vl);
    if (rc && rc != STORE_NOTFOUND)
        return rc;
    *from = (rc == 0 && vl == 8 + HASH_LEN ? get_be64(v) : 0) + 1;
    unsigned char mark[8 + HASH_LEN];
    mark_value(t, *from, mark);
    return store_put(t, STORE_DB_COUNTERS, KEY_MARK, strlen(KEY_MARK), mark, sizeof mark, 0);
}

int trail_key_mark(store_t *st, int privacy)
{
    uint64_t from = 0;
    int marked = privacy ? store_marked(st, KEY_MARK) : 1;
    if (marked)
        return marked < 0 ? -1 : 0;
    if (store_write(st, key_mark_txn, &from) != STORE_OK)
        return -1;
    if (from > 1)
        log_info("trail: keyed from record %llu on (the records before it, written before "
                 "2026-12, keep their plain chain)", (unsigned long long)from);
    return 0;
}

/* ---- key epochs: the chain keyed with earlier data keys (rekey) ------------------- */

#define EPOCHS "trail.epochs"

int trail_txn_epochs(store_txn_t *t, trail_epoch_t **out, size_t *n)
{
    *out = NULL;
    *n = 0;
    const void *v;
    size_t vl;
    int rc = store_get(t, STORE_DB_COUNTERS, EPOCHS, strlen(EPOCHS), &v, &vl);
    if (rc)
        return rc == STORE_NOTFOUND ? 0 : rc;
    msgpack_sbuffer m;
    msgpack_sbuffer_init(&m);
    rc = store_txn_open_box(t, EPOCHS, v, vl, &m);
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    if (rc == 0 && (msgpack_unpack_next(&u, m.data, m.size, NULL) != MSGPACK_UNPACK_SUCCESS ||
                    u.data.type != MSGPACK_OBJECT_ARRAY))
        rc = STORE_CORRUPTED;
    for (uint32_t i = 0; rc == 0 && i < u.data.via.array.size; i++) {
        const msgpack_object *e = &u.data.via.array.ptr[i];
        int64_t until;
        if (e->type != MSGPACK_OBJECT_ARRAY || e->via.array.size != 2 ||
            !frame_int(&e->via.array.ptr[0], &until) || until < 1 ||
            e->via.array.ptr[1].type != MSGPACK_OBJECT_BIN ||
            e->via.array.ptr[1].via.bin.size != HASH_LEN || (*n && (uint64_t)until <= (*out)[*n - 1].until)) {
            rc = STORE_CORRUPTED;
            break;
        }
        *out = xrealloc(*out, (*n + 1) * sizeof **out);
        (*out)[*n].until = (uint64_t)until;
        memcpy((*out)[*n].key, e->via.array.ptr[1].via.bin.ptr, HASH_LEN);
        (*n)++;
    }
    msgpack_unpacked_destroy(&u);
    if (m.data)
        sodium_memzero(m.data, m.alloc);
    msgpack_sbuffer_destroy(&m);
    if (rc) {
        trail_epochs_free(out, n);
        return STORE_CORRUPTED;
    }
    return 0;
}

void trail_epochs_free(trail_epoch_t **e, size_t *n)
{
    if (*e)
        sodium_memzero(*e, *n * sizeof **e);
    free(*e);
    *e = NULL;
    *n = 0;
}

int trail_txn_rekey(store_txn_t *t, const trail_epoch_t *before, size_t n,
                    const unsigned char old_trail_key[32], const char *old_fp, const char *new_fp)
{
    trail_anchor_t head;
    int rc = trail_txn_head(t, &head);
    if (rc && rc != STORE_NOTFOUND)
        return rc;
    if (rc == 0 && head.seq > 0) { /* records to keep under the old key: a new epoch */
        if (n && before[n - 1].until >= head.seq)
            return STORE_CORRUPTED;
        msgpack_sbuffer sb, box;
        msgpack_packer pk;
        msgpack_sbuffer_init(&sb);
        msgpack_sbuffer_init(&box);
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        msgpack_pack_array(&pk, n + 1);
        for (size_t i = 0; i <= n; i++) {
            msgpack_pack_array(&pk, 2);
            msgpack_pack_uint64(&pk, i < n ? before[i].until : head.seq);
            msgpack_pack_bin(&pk, HASH_LEN);
            msgpack_pack_bin_body(&pk, i < n ? before[i].key : old_trail_key, HASH_LEN);
        }
        store_txn_seal_box(t, EPOCHS, sb.data, sb.size, &box);
        rc = store_put(t, STORE_DB_COUNTERS, EPOCHS, strlen(EPOCHS), box.data, box.size, 0);
        sodium_memzero(sb.data, sb.alloc);
        msgpack_sbuffer_destroy(&sb);
        msgpack_sbuffer_destroy(&box);
    }
    /* the key mark, MAC'd anew with the new trail key (from where it was) */
    const void *mv;
    size_t ml;
    if (rc == STORE_NOTFOUND) /* no record yet */
        rc = 0;
    int g = rc ? rc : store_get(t, STORE_DB_COUNTERS, KEY_MARK, strlen(KEY_MARK), &mv, &ml);
    if (g == 0 && ml == 8 + HASH_LEN) {
        unsigned char mark[8 + HASH_LEN];
        mark_value(t, get_be64(mv), mark);
        rc = store_put(t, STORE_DB_COUNTERS, KEY_MARK, strlen(KEY_MARK), mark, sizeof mark, 0);
    } else if (g != STORE_NOTFOUND) { /* none: the broker marks it at its next start */
        rc = g ? g : STORE_CORRUPTED;
    }
    if (rc == 0) {
        char ref[64];
        util_fmt(ref, sizeof ref, "old:%s new:%s", old_fp, new_fp);
        rc = trail_append(t, "", "rekey", "rekey", -1, NULL, NULL, 0, ref);
    }
    return rc;
}

int trail_append_stored(store_txn_t *t, const char *case_id, const char *kind, const char *actor,
                        store_db_t db, const char *obj_id, const char *ref)
{
    const void *v;
    size_t vl;
    int rc = store_get(t, db, obj_id, strlen(obj_id), &v, &vl);
    if (rc)
        return rc;
    return trail_append(t, case_id, kind, actor, (int)db, obj_id, v, vl, ref);
}

/* ---- verification ------------------------------------------------------------ */

/* The last hash the trail recorded for each object, "db\0id" → hash. A sorted
 * array built while walking (objects are few compared to memory). */
typedef struct {
    char key[96];
    unsigned char hash[HASH_LEN];
    unsigned long long seq;
    int purged;   /* the last record says it was purged (retention): it must be absent */
} seen_t;

typedef struct {
    trail_report_t *r;
    store_txn_t *t;
    const trail_anchor_t *anchor;   /* NULL: none given */
    seen_t *seen;
    size_t n, cap;
    unsigned long long expect;      /* next sequence number */
    unsigned char prev[HASH_LEN];   /* hash of the previous record */
    int known;                      /* prev is known (0: keyed, and no key here) */
    int sealed, have_key;           /* written with a privacy key; given it here */
    uint64_t keyed_from;            /* the first record whose chain hash is keyed */
    trail_epoch_t *epochs;          /* records keyed with earlier data keys (rekey) */
    size_t n_epochs, epoch;         /* how many; the one the walk is in */
    store_db_t db;                  /* the object database being checked */
} verify_t;

static int seen_cmp(const void *a, const void *b)
{
    return strcmp(((const seen_t *)a)->key, ((const seen_t *)b)->key);
}

static void problem(verify_t *v, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void problem(verify_t *v, const char *fmt, ...)
{
    if (v->r->problem[0])
        return;
    va_list ap;
    va_start(ap, fmt);
    (void)vsnprintf(v->r->problem, sizeof v->r->problem, fmt, ap);
    va_end(ap);
}

static int walk_record(void *ud, const void *k, size_t kl, const void *val, size_t vl)
{
    verify_t *v = ud;
    if (kl != 8) {
        problem(v, "trail: a key of %zu bytes is not a record number", kl);
        return STORE_EACH_STOP;
    }
    uint64_t seq = get_be64(k);
    v->r->records++;
    if (seq != v->expect) {
        problem(v, "trail record %llu: expected record %llu here (records missing or inserted)",
                (unsigned long long)seq, v->expect);
        return STORE_EACH_STOP;
    }
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    int ok = msgpack_unpack_next(&u, val, vl, NULL) == MSGPACK_UNPACK_SUCCESS &&
             u.data.type == MSGPACK_OBJECT_MAP;
    const msgpack_object *prev = ok ? frame_map_get(&u.data, "prev") : NULL;
    int64_t rseq = 0;
    if (!ok || !prev || prev->type != MSGPACK_OBJECT_BIN || prev->via.bin.size != HASH_LEN ||
        !frame_int(frame_map_get(&u.data, "seq"), &rseq) || (uint64_t)rseq != seq) {
        problem(v, "trail record %llu: not a well-formed record (changed?)", (unsigned long long)seq);
        msgpack_unpacked_destroy(&u);
        return STORE_EACH_STOP;
    }
    if (v->known && memcmp(prev->via.bin.ptr, v->prev, HASH_LEN) != 0) {
        problem(v, "trail record %llu: does not follow record %llu (one of the two was changed)",
                (unsigned long long)seq, (unsigned long long)seq - 1);
        msgpack_unpacked_destroy(&u);
        return STORE_EACH_STOP;
    }
    /* Remember the object's last recorded hash. */
    const char *db, *id;
    size_t dbn, idn;
    const msgpack_object *h = frame_map_get(&u.data, "hash");
    const char *kind;
    size_t kn;
    int purged = frame_str(frame_map_get(&u.data, "kind"), &kind, &kn) && kn == 6 &&
                 memcmp(kind, "purged", 6) == 0;
    if (frame_str(frame_map_get(&u.data, "db"), &db, &dbn) && dbn &&
        frame_str(frame_map_get(&u.data, "obj"), &id, &idn) && idn && h &&
        h->type == MSGPACK_OBJECT_BIN && (h->via.bin.size == HASH_LEN || purged) &&
        dbn + idn + 2 < 96) {
        if (v->n == v->cap) {
            v->cap = v->cap ? v->cap * 2 : 1024;
            v->seen = xrealloc(v->seen, v->cap * sizeof *v->seen);
        }
        seen_t *s = &v->seen[v->n++];
        memset(s->key, 0, sizeof s->key);
        memcpy(s->key, db, dbn);
        s->key[dbn] = '/';
        memcpy(s->key + dbn + 1, id, idn);
        memset(s->hash, 0, HASH_LEN);
        if (!purged)
            memcpy(s->hash, h->via.bin.ptr, HASH_LEN);
        s->seq = seq;
        s->purged = purged;
    }
    msgpack_unpacked_destroy(&u);
    /* this record's chain hash: keyed from the key mark on (store_txn_chain_hash) */
    int keyed = v->sealed && seq >= v->keyed_from;
    if (keyed && !v->have_key) {
        if (v->known)
            v->r->unchecked_from = seq; /* the rest of the chain needs the key */
        v->known = 0;
    } else if (keyed) {
        while (v->epoch < v->n_epochs && seq > v->epochs[v->epoch].until)
            v->epoch++;
        if (v->epoch < v->n_epochs) /* before a rekey: the key of its time */
            crypto_generichash(v->prev, HASH_LEN, val, vl, v->epochs[v->epoch].key, HASH_LEN);
        else
            store_txn_chain_hash(v->t, v->prev, val, vl);
    } else {
        hash(v->prev, val, vl);
    }
    if (v->anchor && seq == v->anchor->seq) {
        if (!v->known) {
            problem(v, "trail: the anchor at record %llu cannot be checked without the data key "
                       "(give --key-file)", (unsigned long long)seq);
            return STORE_EACH_STOP;
        }
        if (memcmp(v->prev, v->anchor->hash, HASH_LEN) != 0) {
            problem(v, "trail record %llu: does not match the anchored head (the trail up to it "
                       "was rewritten)", (unsigned long long)seq);
            return STORE_EACH_STOP;
        }
        v->r->anchor_checked = 1;
    }
    v->expect++;
    return 0;
}

/* Keep only the last entry per object (the array is in trail order). */
static void keep_last(verify_t *v)
{
    if (v->n == 0)
        return; /* an empty trail: nothing to sort (qsort must not get NULL) */
    qsort(v->seen, v->n, sizeof *v->seen, seen_cmp);
    size_t w = 0;
    for (size_t i = 0; i < v->n; i++) {
        if (w && strcmp(v->seen[w - 1].key, v->seen[i].key) == 0) {
            if (v->seen[i].seq > v->seen[w - 1].seq)
                v->seen[w - 1] = v->seen[i];
            continue;
        }
        v->seen[w++] = v->seen[i];
    }
    v->n = w;
}

static int check_object(void *ud, const void *k, size_t kl, const void *val, size_t vl)
{
    verify_t *v = ud;
    seen_t probe;
    const char *dbname = store_db_name(v->db);
    if (strlen(dbname) + kl + 2 >= sizeof probe.key) {
        problem(v, "%s: a key of %zu bytes is not an id", dbname, kl);
        return STORE_EACH_STOP;
    }
    memset(probe.key, 0, sizeof probe.key);
    util_fmt(probe.key, sizeof probe.key, "%s/", dbname);
    memcpy(probe.key + strlen(dbname) + 1, k, kl);
    v->r->objects++;
    seen_t *s = bsearch(&probe, v->seen, v->n, sizeof *v->seen, seen_cmp);
    if (!s) {
        problem(v, "%s: record not in the trail (added outside carehubd?)", probe.key);
        return STORE_EACH_STOP;
    }
    if (s->purged) {
        problem(v, "%s: purged by trail record %llu, yet still in the store (restored?)", probe.key,
                s->seq);
        return STORE_EACH_STOP;
    }
    unsigned char h[HASH_LEN];
    hash(h, val, vl);
    if (memcmp(h, s->hash, HASH_LEN) != 0) {
        problem(v, "%s: does not match its trail record %llu (changed)", probe.key, s->seq);
        return STORE_EACH_STOP;
    }
    s->seq = 0; /* found: marks it present */
    return 0;
}

/* From which record the chain is keyed, from the key mark (checked when the key
 * is here). 0, or 1 with the problem named. */
static int read_key_mark(verify_t *v)
{
    const void *mv, *hv;
    size_t ml, hl;
    v->keyed_from = 1;
    int rc = store_get(v->t, STORE_DB_COUNTERS, KEY_MARK, strlen(KEY_MARK), &mv, &ml);
    if (rc == STORE_NOTFOUND) {
        if (store_get(v->t, STORE_DB_TRAIL_HEAD, "head", 4, &hv, &hl) == STORE_NOTFOUND)
            return 0; /* no record yet: keyed from the first */
        problem(v, "trail: the mark of its key is missing from a sealed store (removed, to pass a "
                   "rewritten chain off as unkeyed?)");
        return 1;
    }
    if (rc || ml != 8 + HASH_LEN) {
        problem(v, "trail: the mark of its key is unreadable");
        return 1;
    }
    v->keyed_from = get_be64(mv);
    unsigned char want[8 + HASH_LEN];
    if (v->have_key) {
        mark_value(v->t, v->keyed_from, want);
        if (memcmp(want, mv, sizeof want) != 0) {
            problem(v, "trail: the mark of its key was changed (keyed from record %llu, says it)",
                    (unsigned long long)v->keyed_from);
            return 1;
        }
    }
    return 0;
}

typedef struct {
    trail_report_t *r;
    const trail_anchor_t *anchor;
    int sealed;
} verify_args_t;

static int verify_txn(store_txn_t *t, void *ud)
{
    verify_args_t *a = ud;
    trail_report_t *r = a->r;
    verify_t v = {.r = r, .t = t, .anchor = a->anchor, .expect = 1, .known = 1,
                  .sealed = a->sealed, .have_key = store_txn_privacy(t), .keyed_from = 1};
    if (v.sealed && read_key_mark(&v))
        return 0;
    if (v.sealed && v.have_key && trail_txn_epochs(t, &v.epochs, &v.n_epochs) != 0) {
        problem(&v, "trail: the keys of the records written before a rekey (counters/%s) do not "
                    "open with this key (changed?)", EPOCHS);
        return 0;
    }
    r->keyed_from = v.sealed ? v.keyed_from : 0;
    int rc = store_each(t, STORE_DB_TRAIL, NULL, 0, 0, walk_record, &v);
    if (rc == 0 && !r->problem[0] && v.anchor && !r->anchor_checked)
        problem(&v, "trail: no record %llu, the anchored head (truncated below it)",
                (unsigned long long)v.anchor->seq);
    if (rc == 0 && !r->problem[0]) {
        const void *hv;
        size_t hl;
        int g = store_get(t, STORE_DB_TRAIL_HEAD, "head", 4, &hv, &hl);
        if (g == STORE_NOTFOUND) {
            if (v.expect != 1)
                problem(&v, "trail: the head record is missing");
        } else if (g) {
            rc = g;
        } else if (hl != 8 + HASH_LEN || get_be64(hv) != v.expect - 1 ||
                   (v.known && memcmp((const unsigned char *)hv + 8, v.prev, HASH_LEN) != 0)) {
            problem(&v, "trail: ends at record %llu but its head says record %llu (truncated, "
                        "or the last record changed)",
                    v.expect - 1, hl == 8 + HASH_LEN ? (unsigned long long)get_be64(hv) : 0ull);
        }
    }
    if (rc == 0 && !r->problem[0]) {
        keep_last(&v);
        static const store_db_t objs[] = {STORE_DB_EVENTS, STORE_DB_CASES, STORE_DB_ASSIGNMENTS,
                                          STORE_DB_SILENCES};
        for (size_t i = 0; rc == 0 && !r->problem[0] && i < UTIL_ARRAY_LEN(objs); i++) {
            v.db = objs[i];
            rc = store_each(t, objs[i], NULL, 0, 0, check_object, &v);
        }
        for (size_t i = 0; rc == 0 && !r->problem[0] && i < v.n; i++)
            if (v.seen[i].seq && !v.seen[i].purged)
                problem(&v, "%s: in the trail (record %llu) but not in the store (deleted)",
                        v.seen[i].key, v.seen[i].seq);
    }
    free(v.seen);
    trail_epochs_free(&v.epochs, &v.n_epochs);
    return rc;
}

int trail_verify(store_t *st, const trail_anchor_t *anchor, trail_report_t *r)
{
    memset(r, 0, sizeof *r);
    verify_args_t a = {r, anchor, store_sealed(st)};
    store_rc_t rc = store_read_long(st, verify_txn, &a);
    if (rc != STORE_OK)
        return rc == STORE_NOTFOUND ? 0 : STORE_CORRUPTED;
    return r->problem[0] ? 1 : 0;
}

int trail_txn_head(store_txn_t *t, trail_anchor_t *head)
{
    memset(head, 0, sizeof *head);
    const void *v;
    size_t vl;
    int rc = store_get(t, STORE_DB_TRAIL_HEAD, "head", 4, &v, &vl);
    if (rc)
        return rc;
    if (vl != 8 + HASH_LEN)
        return STORE_CORRUPTED;
    head->seq = get_be64(v);
    memcpy(head->hash, (const unsigned char *)v + 8, HASH_LEN);
    return 0;
}
