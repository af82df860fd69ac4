/* rekey.c — carehubd rekey: the store under a new data key; see rekey.h. */
#define _GNU_SOURCE /* renameat2 */
#include "rekey.h"

#include <errno.h>
#include <fcntl.h>
#include <msgpack.h>
#include <signal.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "assign.h"
#include "backup.h"
#include "case.h"
#include "frame.h"
#include "log.h"
#include "store.h"
#include "trail.h"
#include "util.h"

#define REKEY_CHUNK 512 /* records a commit */
#define REKEY_ACTOR "rekey"

/* A child key under the old data key and under the new one. */
typedef struct {
    char old[STORE_CHILD_KEY_MAX];
    char neu[STORE_CHILD_KEY_MAX];
} kpair_t;

typedef struct {
    store_t *old, *neu;
    store_txn_t *ot, *nt;        /* the transactions of the chunk being written */
    kpair_t *map;                /* sorted by old */
    size_t n_map, cap_map;
    store_db_t db;               /* the database being rewritten */
    size_t chunk_max;            /* records a commit (dupsort databases: all at once) */
    unsigned char *from;         /* the last key committed (resume after it) */
    size_t from_len;
    unsigned char *next;         /* the last key of the chunk being written */
    size_t next_len;
    size_t in_chunk;
    int done;                    /* the database was walked to its end */
    unsigned long long records, records_work, resealed, resealed_work, unmapped;
    long long kill_after;        /* the test hook; -1: none */
    char err[512];
} rk_t;

/* ---- the child keys: old → new ------------------------------------------------------ */

static int kpair_cmp(const void *a, const void *b)
{
    return strcmp(((const kpair_t *)a)->old, ((const kpair_t *)b)->old);
}

static void map_add(rk_t *r, const char *child_id)
{
    if (r->n_map == r->cap_map) {
        r->cap_map = r->cap_map ? r->cap_map * 2 : 256;
        r->map = xrealloc(r->map, r->cap_map * sizeof *r->map);
    }
    kpair_t *p = &r->map[r->n_map++];
    char buf[STORE_CHILD_KEY_MAX];
    util_fmt(p->old, sizeof p->old, "%s", store_txn_child_key(r->ot, child_id, buf));
    util_fmt(p->neu, sizeof p->neu, "%s", store_txn_child_key(r->nt, child_id, buf));
}

/* The new child key of an old one, or NULL when no event or entry names it. */
static const char *map_find(rk_t *r, const char *old, size_t len)
{
    kpair_t probe;
    if (len >= sizeof probe.old)
        return NULL;
    memcpy(probe.old, old, len);
    probe.old[len] = '\0';
    const kpair_t *p = r->n_map ? bsearch(&probe, r->map, r->n_map, sizeof *r->map, kpair_cmp) : NULL;
    if (!p)
        r->unmapped++;
    return p ? p->neu : NULL;
}

/* child.id of a msgpack body into out: 1, or 0 when it has none. */
static int body_child_id(const void *body, size_t len, char *out, size_t size)
{
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    int ok = 0;
    const char *s;
    size_t n;
    if (msgpack_unpack_next(&u, body, len, NULL) == MSGPACK_UNPACK_SUCCESS &&
        u.data.type == MSGPACK_OBJECT_MAP) {
        const msgpack_object *child = frame_map_get(&u.data, "child");
        if (child && frame_str(frame_map_get(child, "id"), &s, &n) && n && n < size) {
            memcpy(out, s, n);
            out[n] = '\0';
            ok = 1;
        }
    }
    msgpack_unpacked_destroy(&u);
    return ok;
}

static void wipe(msgpack_sbuffer *sb)
{
    if (sb->data)
        sodium_memzero(sb->data, sb->alloc);
    msgpack_sbuffer_destroy(sb);
}

/* Decode a stored map: 0, or STORE_CORRUPTED. */
static int unpack_map(msgpack_unpacked *u, const void *v, size_t vl)
{
    msgpack_unpacked_init(u);
    return msgpack_unpack_next(u, v, vl, NULL) == MSGPACK_UNPACK_SUCCESS &&
                   u->data.type == MSGPACK_OBJECT_MAP
               ? 0
               : STORE_CORRUPTED;
}

static int map_event(void *ud, const void *k, size_t kl, const void *v, size_t vl)
{
    rk_t *r = ud;
    char id[STORE_ID_MAX], child[CAREHUB_ID_MAX + 1];
    msgpack_unpacked u;
    if (store_copy_id(k, kl, id, sizeof id) != 0) {
        util_fmt(r->err, sizeof r->err, "events: a key is not an id");
        return STORE_CORRUPTED;
    }
    if (unpack_map(&u, v, vl) != 0) {
        msgpack_unpacked_destroy(&u);
        util_fmt(r->err, sizeof r->err, "events/%s: does not decode", id);
        return STORE_CORRUPTED;
    }
    msgpack_sbuffer body;
    msgpack_sbuffer_init(&body);
    int rc = store_txn_event_body(r->ot, id, &u.data, &body);
    if (rc)
        util_fmt(r->err, sizeof r->err, "events/%s: its body does not open with the old key", id);
    else if (body_child_id(body.data, body.size, child, sizeof child))
        map_add(r, child);
    sodium_memzero(child, sizeof child);
    wipe(&body);
    msgpack_unpacked_destroy(&u);
    return rc;
}

/* A register entry's sealed enrolment (the child key as associated data) appended
 * to body (initialised by the caller). */
static int open_entry(rk_t *r, const char *key, const msgpack_object *rec, msgpack_sbuffer *body)
{
    const msgpack_object *e = frame_map_get(rec, "entry");
    if (!e || e->type != MSGPACK_OBJECT_BIN)
        return STORE_CORRUPTED;
    return store_txn_open(r->ot, key, e->via.bin.ptr, e->via.bin.size, body);
}

static int map_entry(void *ud, const void *k, size_t kl, const void *v, size_t vl)
{
    rk_t *r = ud;
    char key[STORE_CHILD_KEY_MAX], child[CAREHUB_ID_MAX + 1];
    msgpack_unpacked u;
    msgpack_sbuffer body;
    msgpack_sbuffer_init(&body);
    msgpack_unpacked_init(&u);
    int rc = store_copy_id(k, kl, key, sizeof key) ? STORE_CORRUPTED : 0;
    if (rc == 0) {
        msgpack_unpacked_destroy(&u);
        rc = unpack_map(&u, v, vl);
    }
    if (rc == 0)
        rc = open_entry(r, key, &u.data, &body);
    if (rc == 0 && body_child_id(body.data, body.size, child, sizeof child))
        map_add(r, child);
    if (rc)
        util_fmt(r->err, sizeof r->err, "register: an entry does not open with the old key");
    wipe(&body);
    msgpack_unpacked_destroy(&u);
    return rc;
}

static int map_old_txn(store_txn_t *ot, void *ud)
{
    rk_t *r = ud;
    r->ot = ot;
    int rc = store_each(ot, STORE_DB_EVENTS, NULL, 0, 0, map_event, r);
    if (rc == 0)
        rc = store_each(ot, STORE_DB_REGISTER, NULL, 0, 0, map_entry, r);
    return rc;
}

static int map_txn(store_txn_t *nt, void *ud)
{
    rk_t *r = ud;
    r->nt = nt;
    return store_read_long(r->old, map_old_txn, r) == STORE_OK ? 0 : STORE_CORRUPTED;
}

/* ---- rewriting records ------------------------------------------------------------- */

/* One replaced value of a map being repacked. */
typedef struct {
    const char *key;
    int bin;             /* 1: a bin, 0: a string */
    const void *data;
    size_t len;
} repl_t;

/* map with the values of the keys in repl replaced, into out. */
static void repack(const msgpack_object *map, const repl_t *repl, size_t n, msgpack_sbuffer *out)
{
    msgpack_packer pk;
    msgpack_packer_init(&pk, out, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, map->via.map.size);
    for (uint32_t i = 0; i < map->via.map.size; i++) {
        const msgpack_object_kv *kv = &map->via.map.ptr[i];
        msgpack_pack_object(&pk, kv->key);
        const repl_t *hit = NULL;
        for (size_t j = 0; j < n && !hit; j++)
            if (kv->key.type == MSGPACK_OBJECT_STR && kv->key.via.str.size == strlen(repl[j].key) &&
                memcmp(kv->key.via.str.ptr, repl[j].key, kv->key.via.str.size) == 0)
                hit = &repl[j];
        if (!hit) {
            msgpack_pack_object(&pk, kv->val);
        } else if (hit->bin) {
            msgpack_pack_bin(&pk, hit->len);
            msgpack_pack_bin_body(&pk, hit->data, hit->len);
        } else {
            msgpack_pack_str(&pk, hit->len);
            msgpack_pack_str_body(&pk, hit->data, hit->len);
        }
    }
}

/* Put the rewritten object and record it in the trail (its hash changed). */
static int put_resealed(rk_t *r, const char *case_id, const char *id, const msgpack_sbuffer *sb)
{
    int rc = store_put(r->nt, r->db, id, strlen(id), sb->data, sb->size, 0);
    if (rc == 0)
        rc = trail_append(r->nt, case_id, "resealed", REKEY_ACTOR, (int)r->db, id, sb->data,
                          sb->size, NULL);
    r->resealed_work += rc == 0;
    return rc;
}

static void copy_field(const msgpack_object *map, const char *key, char *out, size_t size)
{
    const char *s;
    size_t n;
    out[0] = '\0';
    if (frame_str(frame_map_get(map, key), &s, &n) && n < size) {
        memcpy(out, s, n);
        out[n] = '\0';
    }
}

/* events: body and ref sealed anew, the ref's keyed hash computed anew. */
static int rekey_event(rk_t *r, const char *id, const msgpack_object *rec, const void *v, size_t vl)
{
    char case_id[STORE_ID_MAX], ref[CAREHUB_ID_MAX + 1], rk[STORE_REF_KEY_MAX], ad[STORE_ID_MAX + 8];
    copy_field(rec, "case", case_id, sizeof case_id);
    const msgpack_object *renc = frame_map_get(rec, "ref_enc");
    msgpack_sbuffer body, rbox, bbox, out;
    msgpack_sbuffer_init(&body);
    msgpack_sbuffer_init(&rbox);
    msgpack_sbuffer_init(&bbox);
    msgpack_sbuffer_init(&out);
    repl_t repl[3];
    size_t n = 0;
    int rc = 0;
    if (frame_map_get(rec, "body_enc")) {
        rc = store_txn_event_body(r->ot, id, rec, &body);
        if (rc == 0) {
            store_txn_seal_box(r->nt, id, body.data, body.size, &bbox);
            repl[n++] = (repl_t){"body_enc", 1, bbox.data, bbox.size};
        }
    }
    if (rc == 0 && renc) {
        rc = case_event_ref(r->ot, id, v, vl, NULL, ref, sizeof ref);
        if (rc == 0) {
            case_ref_ad(ad, sizeof ad, id);
            store_txn_seal_box(r->nt, ad, ref, strlen(ref), &rbox);
            const char *key = store_txn_ref_key(r->nt, ref, rk);
            repl[n++] = (repl_t){"ref_enc", 1, rbox.data, rbox.size};
            repl[n++] = (repl_t){"ref", 0, key, strlen(key)};
            sodium_memzero(ref, sizeof ref);
        }
    }
    if (rc)
        util_fmt(r->err, sizeof r->err, "events/%s: does not open with the old key", id);
    else if (n == 0)
        rc = store_put(r->nt, r->db, id, strlen(id), v, vl, 0); /* written in the clear */
    else {
        repack(rec, repl, n, &out);
        rc = put_resealed(r, case_id, id, &out);
    }
    wipe(&body);
    msgpack_sbuffer_destroy(&rbox);
    msgpack_sbuffer_destroy(&bbox);
    msgpack_sbuffer_destroy(&out);
    return rc;
}

/* "TYPE NUL CHILD-KEY" (open_cases keys, cases' join) under the new key into out:
 * its length, or 0 when it has no child key the map knows (kept as it is). */
static size_t rejoin(rk_t *r, const void *k, size_t kl, char *out, size_t size)
{
    const char *nul = memchr(k, '\0', kl);
    if (!nul)
        return 0;
    size_t tl = (size_t)(nul - (const char *)k);
    const char *neu = map_find(r, nul + 1, kl - tl - 1);
    if (!neu || tl + 1 + strlen(neu) > size)
        return 0;
    memcpy(out, k, tl + 1);
    memcpy(out + tl + 1, neu, strlen(neu));
    return tl + 1 + strlen(neu);
}

static int rekey_case(rk_t *r, const char *id, const msgpack_object *rec, const void *v, size_t vl)
{
    const msgpack_object *j = frame_map_get(rec, "join");
    char join[512];
    size_t jl = j && j->type == MSGPACK_OBJECT_BIN && j->via.bin.size
                    ? rejoin(r, j->via.bin.ptr, j->via.bin.size, join, sizeof join)
                    : 0;
    if (!jl)
        return store_put(r->nt, r->db, id, strlen(id), v, vl, 0);
    msgpack_sbuffer out;
    msgpack_sbuffer_init(&out);
    repl_t repl = {"join", 1, join, jl};
    repack(rec, &repl, 1, &out);
    int rc = put_resealed(r, id, id, &out);
    msgpack_sbuffer_destroy(&out);
    return rc;
}

static int rekey_assignment(rk_t *r, const char *id, const msgpack_object *rec, const void *v,
                            size_t vl)
{
    const msgpack_object *ne = frame_map_get(rec, "note_enc");
    if (!ne || ne->type != MSGPACK_OBJECT_BIN)
        return store_put(r->nt, r->db, id, strlen(id), v, vl, 0);
    char case_id[STORE_ID_MAX];
    copy_field(rec, "case", case_id, sizeof case_id);
    msgpack_sbuffer note, sealed, out;
    msgpack_sbuffer_init(&note);
    msgpack_sbuffer_init(&sealed);
    msgpack_sbuffer_init(&out);
    int rc = store_txn_open(r->ot, id, ne->via.bin.ptr, ne->via.bin.size, &note);
    if (rc == 0) {
        (void)store_txn_seal(r->nt, id, note.data, note.size, &sealed);
        repl_t repl = {"note_enc", 1, sealed.data, sealed.size};
        repack(rec, &repl, 1, &out);
        rc = put_resealed(r, case_id, id, &out);
    } else {
        util_fmt(r->err, sizeof r->err, "assignments/%s: its note does not open with the old key", id);
    }
    wipe(&note);
    msgpack_sbuffer_destroy(&sealed);
    msgpack_sbuffer_destroy(&out);
    return rc;
}

/* events, cases, assignments: records named by the trail. */
static int rekey_object(rk_t *r, const void *k, size_t kl, const void *v, size_t vl)
{
    char id[STORE_ID_MAX];
    if (store_copy_id(k, kl, id, sizeof id)) {
        util_fmt(r->err, sizeof r->err, "%s: a key is not an id", store_db_name(r->db));
        return STORE_CORRUPTED;
    }
    msgpack_unpacked u;
    int rc = unpack_map(&u, v, vl);
    if (rc)
        util_fmt(r->err, sizeof r->err, "%s/%s: does not decode", store_db_name(r->db), id);
    else
        rc = r->db == STORE_DB_EVENTS  ? rekey_event(r, id, &u.data, v, vl)
             : r->db == STORE_DB_CASES ? rekey_case(r, id, &u.data, v, vl)
                                       : rekey_assignment(r, id, &u.data, v, vl);
    msgpack_unpacked_destroy(&u);
    return rc;
}

/* outcomes: agent NUL id → the message sealed whole, its id as associated data. */
static int rekey_outcome(rk_t *r, const void *k, size_t kl, const void *v, size_t vl)
{
    const char *nul = memchr(k, '\0', kl);
    char id[128];
    if (!nul || store_copy_id(nul + 1, kl - (size_t)(nul + 1 - (const char *)k), id, sizeof id)) {
        util_fmt(r->err, sizeof r->err, "outcomes: a key is not an agent and an id");
        return STORE_CORRUPTED;
    }
    msgpack_sbuffer m, sealed;
    msgpack_sbuffer_init(&m);
    msgpack_sbuffer_init(&sealed);
    int rc = store_txn_open(r->ot, id, v, vl, &m);
    if (rc == 0) {
        (void)store_txn_seal(r->nt, id, m.data, m.size, &sealed);
        rc = store_put(r->nt, r->db, k, kl, sealed.data, sealed.size, 0);
    } else {
        util_fmt(r->err, sizeof r->err, "outcomes/%s: does not open with the old key", id);
    }
    wipe(&m);
    msgpack_sbuffer_destroy(&sealed);
    return rc;
}

/* register: child key → entry; the key and the entry's seal (bound to the key) anew. */
static int rekey_entry(rk_t *r, const void *k, size_t kl, const void *v, size_t vl)
{
    char key[STORE_CHILD_KEY_MAX];
    const char *neu = store_copy_id(k, kl, key, sizeof key) ? NULL : map_find(r, key, strlen(key));
    if (!neu) {
        util_fmt(r->err, sizeof r->err, "register: an entry whose key names no child");
        return STORE_CORRUPTED;
    }
    msgpack_unpacked u;
    msgpack_sbuffer body, sealed, out;
    msgpack_sbuffer_init(&body);
    msgpack_sbuffer_init(&sealed);
    msgpack_sbuffer_init(&out);
    int rc = unpack_map(&u, v, vl);
    if (rc == 0)
        rc = open_entry(r, key, &u.data, &body);
    if (rc == 0) {
        (void)store_txn_seal(r->nt, neu, body.data, body.size, &sealed);
        repl_t repl = {"entry", 1, sealed.data, sealed.size};
        repack(&u.data, &repl, 1, &out);
        rc = store_put(r->nt, r->db, neu, strlen(neu), out.data, out.size, 0);
    } else {
        util_fmt(r->err, sizeof r->err, "register: an entry does not open with the old key");
    }
    wipe(&body);
    msgpack_sbuffer_destroy(&sealed);
    msgpack_sbuffer_destroy(&out);
    msgpack_unpacked_destroy(&u);
    return rc;
}

/* One record of the database being rewritten, into the new store. */
static int rekey_record(rk_t *r, const void *k, size_t kl, const void *v, size_t vl)
{
    char buf[512];
    size_t bl;
    switch (r->db) {
    case STORE_DB_EVENTS:
    case STORE_DB_CASES:
    case STORE_DB_ASSIGNMENTS:
        return rekey_object(r, k, kl, v, vl);
    case STORE_DB_OUTCOMES:
        return rekey_outcome(r, k, kl, v, vl);
    case STORE_DB_REGISTER:
        return rekey_entry(r, k, kl, v, vl);
    case STORE_DB_OPEN_CASES:
        bl = rejoin(r, k, kl, buf, sizeof buf);
        return store_put(r->nt, r->db, bl ? buf : k, bl ? bl : kl, v, vl, 0);
    case STORE_DB_DEADLINES: { /* due (8) + kind (1) + id: kinds 4-7 name a child key */
        const unsigned char *b = k;
        const char *neu = NULL;
        if (kl > 9 && b[8] >= ASSIGN_DUE_CONTACT && b[8] <= ASSIGN_DUE_REMIND_VISIT)
            neu = map_find(r, (const char *)b + 9, kl - 9);
        if (neu && 9 + strlen(neu) <= sizeof buf) {
            memcpy(buf, b, 9);
            memcpy(buf + 9, neu, strlen(neu));
            return store_put(r->nt, r->db, buf, 9 + strlen(neu), v, vl, 0);
        }
        return store_put(r->nt, r->db, k, kl, v, vl, 0);
    }
    case STORE_DB_COUNTERS:
        if (kl == strlen("trail.epochs") && memcmp(k, "trail.epochs", kl) == 0)
            return 0; /* sealed with the old key: trail_txn_rekey writes it anew */
        return store_put(r->nt, r->db, k, kl, v, vl, 0);
    default:
        return store_put(r->nt, r->db, k, kl, v, vl, 0);
    }
}

static int chunk_visit(void *ud, const void *k, size_t kl, const void *v, size_t vl)
{
    rk_t *r = ud;
    if (r->from && kl == r->from_len && memcmp(k, r->from, kl) == 0)
        return 0; /* the last record of the chunk before */
    if (r->in_chunk >= r->chunk_max)
        return STORE_EACH_STOP;
    int rc = rekey_record(r, k, kl, v, vl);
    if (rc)
        return rc;
    r->next = xrealloc(r->next, kl ? kl : 1);
    memcpy(r->next, k, kl);
    r->next_len = kl;
    r->in_chunk++;
    r->records_work++;
    if (r->kill_after >= 0 && r->records_work == (unsigned long long)r->kill_after)
        r->chunk_max = r->in_chunk; /* commit exactly this far */
    return 0;
}

static int chunk_old_txn(store_txn_t *ot, void *ud)
{
    rk_t *r = ud;
    r->ot = ot;
    int rc = store_each(ot, r->db, r->from, r->from_len, 0, chunk_visit, r);
    if (rc == 0 && r->in_chunk < r->chunk_max)
        r->done = 1;
    return rc;
}

static int chunk_txn(store_txn_t *nt, void *ud)
{
    rk_t *r = ud;
    /* from the state of the last commit: store_write runs this again when the map grows */
    r->nt = nt;
    r->in_chunk = 0;
    r->done = 0;
    r->records_work = r->records;
    r->resealed_work = r->resealed;
    r->err[0] = '\0';
    store_rc_t rc = store_read_long(r->old, chunk_old_txn, r);
    if (rc != STORE_OK && !r->err[0])
        util_fmt(r->err, sizeof r->err, "%s: cannot be read or written (%s)", store_db_name(r->db),
                 store_strerror(rc));
    return rc == STORE_OK ? 0 : STORE_ABORTED;
}

static void kill_hook(rk_t *r, const char *tmp)
{
    if (r->kill_after < 0 || r->records < (unsigned long long)r->kill_after)
        return;
    fprintf(stderr, "carehubd rekey: CAREHUB_REKEY_KILL_AFTER=%lld: killed after %llu records "
            "committed to %s\n", r->kill_after, r->records, tmp);
    fflush(stderr);
    (void)raise(SIGKILL);
}

/* Rewrite one database into the new store, a chunk a commit. 0, or -1 (r->err). */
static int rekey_db(rk_t *r, store_db_t db, int dupsort, const char *tmp)
{
    r->db = db;
    free(r->from);
    r->from = NULL;
    r->from_len = 0;
    r->done = 0;
    while (!r->done) {
        /* a dupsort key's values cannot be resumed by key: all at once */
        r->chunk_max = dupsort ? (size_t)-1 : REKEY_CHUNK;
        if (store_write(r->neu, chunk_txn, r) != STORE_OK) {
            if (!r->err[0])
                util_fmt(r->err, sizeof r->err, "%s: cannot be written to %s", store_db_name(db), tmp);
            return -1;
        }
        r->records = r->records_work;
        r->resealed = r->resealed_work;
        if (r->in_chunk) {
            unsigned char *t = r->from;
            r->from = r->next;
            r->from_len = r->next_len;
            r->next = t;
        }
        kill_hook(r, tmp);
    }
    return 0;
}

/* ---- the rekey record ---------------------------------------------------------------- */

typedef struct {
    rk_t *r;
    const uint8_t *old_key, *new_key;
    trail_epoch_t *epochs;
    size_t n;
} mark_ctx_t;

static int epochs_old_txn(store_txn_t *ot, void *ud)
{
    mark_ctx_t *c = ud;
    return trail_txn_epochs(ot, &c->epochs, &c->n);
}

static int rekey_record_txn(store_txn_t *nt, void *ud)
{
    mark_ctx_t *c = ud;
    trail_epochs_free(&c->epochs, &c->n);
    if (store_read(c->r->old, epochs_old_txn, c) != STORE_OK) {
        util_fmt(c->r->err, sizeof c->r->err, "counters/trail.epochs: does not open with the old key");
        return STORE_ABORTED;
    }
    unsigned char tk[32];
    char ofp[STORE_KEY_FP_MAX], nfp[STORE_KEY_FP_MAX];
    store_derive_trail_key(c->old_key, tk);
    store_key_fingerprint(c->old_key, ofp);
    store_key_fingerprint(c->new_key, nfp);
    int rc = trail_txn_rekey(nt, c->epochs, c->n, tk, ofp, nfp);
    sodium_memzero(tk, sizeof tk);
    if (rc)
        util_fmt(c->r->err, sizeof c->r->err, "the trail's head or key mark cannot be read (%s)",
                 store_strerror((store_rc_t)rc));
    return rc;
}

/* ---- the directories ---------------------------------------------------------------- */

/* Take the lock LMDB takes on the first byte of dir/lock.mdb while a process has
 * the environment open (shared once open, exclusive only while nobody else has
 * it): held by this process, no other can have the store open, and one that
 * starts meanwhile waits in mdb_env_open until it is released (closing *fd).
 * 0 with *fd, REKEY_BUSY naming the process that has it, or BACKUP_UNREADABLE.
 * Not while this process has the environment open: closing *fd would drop
 * LMDB's own lock too. */
static int lock_store(const char *dir, int *fd, char *err, size_t errlen)
{
    char path[4096];
    util_fmt(path, sizeof path, "%s/lock.mdb", dir);
    *fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (*fd < 0) {
        util_fmt(err, errlen, "cannot open %s: %s", path, strerror(errno));
        return BACKUP_UNREADABLE;
    }
    struct flock fl;
    memset(&fl, 0, sizeof fl);
    fl.l_type = F_WRLCK;
    fl.l_whence = SEEK_SET;
    fl.l_start = 0;
    fl.l_len = 1;
    if (fcntl(*fd, F_SETLK, &fl) == 0)
        return 0;
    int e = errno;
    long pid = (e == EAGAIN || e == EACCES) && fcntl(*fd, F_GETLK, &fl) == 0 && fl.l_type != F_UNLCK
                   ? (long)fl.l_pid
                   : 0;
    close(*fd);
    *fd = -1;
    if (e == EAGAIN || e == EACCES) {
        util_fmt(err, errlen, "the store in %s is open in process %ld (a running carehubd, or a "
                 "verify or backup); stop it first: rekey works offline", dir, pid);
        return REKEY_BUSY;
    }
    util_fmt(err, errlen, "cannot lock %s: %s", path, strerror(e));
    return BACKUP_UNREADABLE;
}

int rekey_clean_leftover(const char *data_dir)
{
    char tmp[4096], err[512];
    struct stat sb;
    backup_sibling(tmp, sizeof tmp, data_dir, ".rekey");
    if (stat(tmp, &sb) < 0)
        return 0;
    if (backup_remove_store_dir(tmp, err, sizeof err) < 0) {
        log_error("rekey: %s", err);
        return -1;
    }
    log_warn("rekey: removed %s, left by a rekey that did not finish (the store in %s is whole: "
             "the one from before the rekey, or after it if it got to the swap)", tmp, data_dir);
    return 0;
}

static unsigned long long file_size(const char *dir)
{
    char path[4096];
    struct stat sb;
    util_fmt(path, sizeof path, "%s/data.mdb", dir);
    return stat(path, &sb) == 0 ? (unsigned long long)sb.st_size : 0;
}

/* ---- the whole --------------------------------------------------------------------- */

/* What the key seals or hashes, rewritten after the rekey record (rekey_record);
 * idem and case_events are rebuilt from the events; every other database, the
 * trail first among them, is copied as it is before the rekey record. */
static const store_db_t KEYED[] = {STORE_DB_EVENTS,   STORE_DB_CASES,    STORE_DB_ASSIGNMENTS,
                                   STORE_DB_OUTCOMES, STORE_DB_REGISTER, STORE_DB_DEADLINES,
                                   STORE_DB_OPEN_CASES};

static int keyed_db(store_db_t db)
{
    for (size_t i = 0; i < UTIL_ARRAY_LEN(KEYED); i++)
        if (KEYED[i] == db)
            return 1;
    return db == STORE_DB_IDEM || db == STORE_DB_CASE_EVENTS;
}

static int rewrite(rk_t *r, const uint8_t *old_key, const uint8_t *new_key, const char *tmp)
{
    if (store_write(r->neu, map_txn, r) != STORE_OK) {
        if (!r->err[0])
            util_fmt(r->err, sizeof r->err, "the events and register cannot be read");
        return -1;
    }
    if (r->n_map) {
        qsort(r->map, r->n_map, sizeof *r->map, kpair_cmp);
        size_t w = 1;
        for (size_t i = 1; i < r->n_map; i++)
            if (strcmp(r->map[i].old, r->map[w - 1].old) != 0)
                r->map[w++] = r->map[i];
        r->n_map = w;
    }
    for (int db = 0; db < STORE_DB_COUNT; db++) /* as they are: the trail, counters, … */
        if (!keyed_db((store_db_t)db) &&
            rekey_db(r, (store_db_t)db, store_db_dupsort((store_db_t)db), tmp) < 0)
            return -1;
    mark_ctx_t c = {r, old_key, new_key, NULL, 0};
    store_rc_t rc = store_write(r->neu, rekey_record_txn, &c);
    trail_epochs_free(&c.epochs, &c.n);
    if (rc != STORE_OK)
        return -1;
    for (size_t i = 0; i < UTIL_ARRAY_LEN(KEYED); i++)
        if (rekey_db(r, KEYED[i], store_db_dupsort(KEYED[i]), tmp) < 0)
            return -1;
    return 0;
}

int rekey_run(const char *data_dir, const uint8_t *old_key, const uint8_t *new_key, char *err,
              size_t errlen)
{
    char tmp[4096], why[1024], parent[4096];
    if (sodium_memcmp(old_key, new_key, 32) == 0) {
        util_fmt(err, errlen, "--old-key and --new-key hold the same key; make a new one "
                 "(docs/backup-and-keys.md)");
        return BACKUP_BROKEN;
    }
    int64_t t0 = util_mono_ms();
    backup_sibling(tmp, sizeof tmp, data_dir, ".rekey");
    int lock_fd;
    int rc = lock_store(data_dir, &lock_fd, err, errlen);
    if (rc)
        return rc;
    close(lock_fd); /* a first look; taken again for the swap */
    if (rekey_clean_leftover(data_dir) < 0) {
        util_fmt(err, errlen, "cannot remove %s, left by an earlier rekey (see the log line above)",
                 tmp);
        return BACKUP_CANTCREATE;
    }
    rk_t r = {.kill_after = -1};
    const char *hook = getenv("CAREHUB_REKEY_KILL_AFTER");
    if (hook && *hook)
        r.kill_after = strtoll(hook, NULL, 10);
    r.old = backup_open(data_dir, old_key, why, sizeof why);
    if (!r.old) {
        util_fmt(err, errlen, "--old-key: %s", why);
        return BACKUP_UNREADABLE;
    }
    if (!store_sealed(r.old)) {
        store_close(&r.old);
        util_fmt(err, errlen, "the store in %s is not sealed (privacy: off): there is no key to "
                 "rotate", data_dir);
        return BACKUP_BROKEN;
    }
    unsigned long long old_size = file_size(data_dir);
    uint64_t map = old_size * 2 + (64ull << 20);
    if (mkdir(tmp, 0700) < 0) {
        util_fmt(err, errlen, "cannot create %s: %s", tmp, strerror(errno));
        store_close(&r.old);
        return BACKUP_CANTCREATE;
    }
    r.neu = store_open(tmp, map, map > (64ull << 30) ? map : (64ull << 30), why, sizeof why);
    if (r.neu && store_set_privacy(r.neu, new_key, why, sizeof why) != 0)
        store_close(&r.neu);
    if (!r.neu) {
        util_fmt(err, errlen, "%s", why);
        store_close(&r.old);
        return BACKUP_CANTCREATE;
    }
    rc = rewrite(&r, old_key, new_key, tmp);
    store_close(&r.neu);
    store_close(&r.old);
    free(r.from);
    free(r.next);
    if (r.map)
        sodium_memzero(r.map, r.cap_map * sizeof *r.map);
    free(r.map);
    if (rc < 0) {
        util_fmt(err, errlen, "%s; nothing was changed in %s (%s is left for the next rekey or "
                 "start to remove)", r.err, data_dir, tmp);
        return BACKUP_BROKEN;
    }
    /* idem and case_events: rebuilt from the events at open, written at close */
    store_t *st = store_open(tmp, map, map > (64ull << 30) ? map : (64ull << 30), why, sizeof why);
    if (st && store_flush_index(st) != STORE_OK)
        util_fmt(why, sizeof why, "cannot write the rebuilt indexes");
    int flushed = st != NULL;
    store_close(&st);
    int v = flushed ? backup_verify(tmp, new_key, why, sizeof why) : BACKUP_BROKEN;
    if (v != BACKUP_OK) {
        util_fmt(err, errlen, "the rekeyed store in %s does not verify, nothing was changed in "
                 "%s: %s", tmp, data_dir, why);
        return BACKUP_BROKEN;
    }
    char data[4096];
    util_fmt(data, sizeof data, "%s/data.mdb", tmp);
    if (backup_fsync_path(data) < 0 || backup_fsync_path(tmp) < 0) {
        util_fmt(err, errlen, "cannot sync %s: %s; nothing was changed in %s", tmp, strerror(errno),
                 data_dir);
        return BACKUP_CANTCREATE;
    }
    /* held over the swap: a broker that starts now waits, then opens the new store */
    if ((rc = lock_store(data_dir, &lock_fd, err, errlen)))
        return rc; /* a broker started meanwhile: it keeps the old store */
    if (renameat2(AT_FDCWD, data_dir, AT_FDCWD, tmp, RENAME_EXCHANGE) < 0) {
        util_fmt(err, errlen, "cannot swap %s and %s: %s; nothing was changed in %s", tmp, data_dir,
                 strerror(errno), data_dir);
        close(lock_fd);
        return BACKUP_CANTCREATE;
    }
    util_fmt(parent, sizeof parent, "%s/..", data_dir);
    (void)backup_fsync_path(parent);
    if (backup_remove_store_dir(tmp, why, sizeof why) < 0) /* now the old store */
        fprintf(stderr, "carehubd rekey: the old store stays in %s: %s\n", tmp, why);
    close(lock_fd);
    char ofp[STORE_KEY_FP_MAX], nfp[STORE_KEY_FP_MAX];
    store_key_fingerprint(old_key, ofp);
    store_key_fingerprint(new_key, nfp);
    printf("rekeyed %s from key %s to key %s in %lld ms: %llu records rewritten, %llu events, cases "
           "and assignments re-sealed (each with a `resealed` trail record), %zu child keys "
           "hashed anew; data.mdb %llu -> %llu bytes\n%s\n",
           data_dir, ofp, nfp, (long long)(util_mono_ms() - t0), r.records, r.resealed, r.n_map,
           old_size, file_size(data_dir), why);
    if (r.unmapped)
        printf("note: %llu keyed entries name a child no event or register entry names; they were "
               "kept as they were and join nothing under the new key\n", r.unmapped);
    printf("now set privacy.key_file to the new key and start carehubd; keep the old key only as "
           "long as older backups must be read\n");
    return BACKUP_OK;
}
