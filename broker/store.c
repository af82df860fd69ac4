/* store.c — the storage: the LMDB environment, its named databases, write and read
 * transactions (group commit, map growth, syncs), get/put/del/walks, sealing, and
 * LMDB's codes mapped to store_rc_t; no record kind lives here (store_index.c holds
 * the bulk-written index entries; store_int.h). See store.h. */
#include "store.h"

#include <errno.h>
#include <lmdb.h>
#include <pthread.h>
#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sodium.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "frame.h"
#include "log.h"
#include "seal.h"
#include "store_int.h"
#include "util.h"

#define STORE_FORMAT 1u


/* The named databases (docs/data-model.md), in store_db_t order. */
static const struct {
    const char *name;
    unsigned flags;
} DBS[STORE_DB_COUNT] = {
    [STORE_DB_EVENTS] = {"events", 0},
    [STORE_DB_IDEM] = {"idem", 0},
    [STORE_DB_CASES] = {"cases", 0},
    [STORE_DB_CASE_EVENTS] = {"case_events", MDB_DUPSORT},
    [STORE_DB_OPEN_CASES] = {"open_cases", 0},
    [STORE_DB_ASSIGNMENTS] = {"assignments", 0},
    [STORE_DB_CASE_ASSIGN] = {"case_assign", MDB_DUPSORT},
    [STORE_DB_PENDING] = {"pending", 0},
    [STORE_DB_DEADLINES] = {"deadlines", 0},
    [STORE_DB_OUTBOX] = {"outbox", 0},
    [STORE_DB_OUTCOMES] = {"outcomes", 0},
    [STORE_DB_CASE_LOG] = {"case_log", MDB_DUPSORT},
    [STORE_DB_QUIET] = {"quiet", 0},
    [STORE_DB_TRAIL] = {"trail", 0},
    [STORE_DB_TRAIL_HEAD] = {"trail_head", 0},
    [STORE_DB_DELIVERED] = {"delivered", 0},
    [STORE_DB_TRAIL_LAST] = {"trail_last", 0},
    [STORE_DB_TRAIL_PREV] = {"trail_prev", 0},
    [STORE_DB_ACK_DUE] = {"ack_due", 0},
    [STORE_DB_COUNTERS] = {"counters", 0},
    [STORE_DB_REGISTER] = {"register", 0},
    [STORE_DB_SILENCES] = {"silences", 0},
    [STORE_DB_PHONE] = {"phone", 0},
};


const char *store_strerror(store_rc_t rc)
{
    switch (rc) {
    case STORE_OK: return "ok";
    case STORE_FULL: return "storage is full";
    case STORE_IO: return "storage failed";
    case STORE_NOTFOUND: return "not found";
    case STORE_KEYEXIST: return "already stored";
    case STORE_CORRUPTED: return "a record does not decode or open";
    case STORE_BADVALUE: return "a key or value of a size the store cannot hold";
    case STORE_ABORTED: return "the transaction refused its own writes";
    case STORE_MAPFULL: return "the map is full";
    }
    return "unknown store error";
}

int store_rc_of(int rc)
{
    if (rc == 0 || (rc >= STORE_RC_MIN && rc < 0) || rc == STORE_EACH_STOP)
        return rc;
    switch (rc) {
    case MDB_NOTFOUND: return STORE_NOTFOUND;
    case MDB_KEYEXIST: return STORE_KEYEXIST;
    case MDB_CORRUPTED: case MDB_PAGE_NOTFOUND: case MDB_INCOMPATIBLE: return STORE_CORRUPTED;
    case MDB_BAD_VALSIZE: return STORE_BADVALUE;
    case MDB_MAP_FULL: return STORE_MAPFULL;
    case ENOSPC: return STORE_FULL;
    }
    log_error("store: %s", mdb_strerror(rc));
    return STORE_IO;
}

/* A code's text, whichever side of the boundary it comes from. */
static const char *rc_text(int rc)
{
    return rc >= STORE_RC_MIN && rc < 0 ? store_strerror((store_rc_t)rc) : mdb_strerror(rc);
}

MDB_val store_val_str(const char *s)
{
    MDB_val v = {strlen(s), (void *)s};
    return v;
}

int store_u64_read(MDB_txn *txn, MDB_dbi dbi, const char *key, uint64_t *out)
{
    MDB_val k = store_val_str(key), v;
    int rc = mdb_get(txn, dbi, &k, &v);
    if (rc == MDB_NOTFOUND) {
        *out = 0;
        return 0;
    }
    if (rc)
        return rc;
    if (v.mv_size != sizeof *out)
        return MDB_CORRUPTED;
    memcpy(out, v.mv_data, sizeof *out);
    return 0;
}

int store_u64_write(MDB_txn *txn, MDB_dbi dbi, const char *key, uint64_t x)
{
    MDB_val k = store_val_str(key), v = {sizeof x, &x};
    return mdb_put(txn, dbi, &k, &v, 0);
}

/* The number in the last (highest) id of a database whose keys are PREFIX +
 * zero-padded number: ids sort in the order they were made, so the counters
 * need not be stored (one page less to write per commit). */
static int last_seq(MDB_txn *txn, MDB_dbi dbi, const char *prefix, uint64_t *out)
{
    MDB_cursor *cur;
    MDB_val k, v;
    int rc = mdb_cursor_open(txn, dbi, &cur);
    if (rc)
        return rc;
    *out = 0;
    rc = mdb_cursor_get(cur, &k, &v, MDB_LAST);
    mdb_cursor_close(cur);
    if (rc == MDB_NOTFOUND)
        return 0;
    if (rc)
        return rc;
    size_t pl = strlen(prefix);
    if (k.mv_size <= pl || k.mv_size >= STORE_ID_MAX || memcmp(k.mv_data, prefix, pl) != 0)
        return MDB_CORRUPTED;
    for (size_t i = pl; i < k.mv_size; i++) {
        unsigned char c = ((const unsigned char *)k.mv_data)[i];
        if (c < '0' || c > '9')
            return MDB_CORRUPTED;
        *out = *out * 10 + (c - '0');
    }
    return 0;
}

/* "64 MiB", "256 KiB": sizes for log lines. */
static const char *size_text(uint64_t bytes, char *buf, size_t size)
{
    if (bytes >= (1ull << 20) && bytes % (1ull << 20) == 0)
        util_fmt(buf, size, "%llu MiB", (unsigned long long)(bytes >> 20));
    else
        util_fmt(buf, size, "%llu KiB", (unsigned long long)(bytes >> 10));
    return buf;
}

store_t *store_open(const char *dir, uint64_t map_size, uint64_t map_max, char *err, size_t errlen)
{
    store_t *st = xcalloc(1, sizeof *st);
    pthread_mutex_init(&st->readers_mu, NULL);
    pthread_mutex_init(&st->pend_mu, NULL);
    store_index_init(st);
    MDB_txn *txn = NULL;
    int rc;
    st->dir = xstrdup(dir);
    st->map_max = map_max;
    if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
        util_fmt(err, errlen, "cannot create data directory %s: %s", dir, strerror(errno));
        goto fail;
    }
    if ((rc = mdb_env_create(&st->env))) {
        util_fmt(err, errlen, "mdb_env_create: %s", mdb_strerror(rc));
        goto fail;
    }
    (void)mdb_env_set_maxdbs(st->env, 32); /* cannot fail before open */
    if ((rc = mdb_env_set_mapsize(st->env, map_size))) {
        util_fmt(err, errlen, "mdb_env_set_mapsize: %s", mdb_strerror(rc));
        goto fail;
    }
    /* MDB_NOTLS: one thread writes and reads (another only syncs).
     * MDB_NOMETASYNC: a commit syncs the data pages and writes the meta page
     * without syncing it, which keeps the store consistent after any crash
     * (LMDB's ACI) but not yet durable: the meta page is synced by the next
     * commit or by store_sync(), which the loop's turn runs in a thread of its
     * own while the next turn is written, and nothing is acknowledged before it
     * returned (turn.c). store_write() syncs before it returns. */
    if ((rc = mdb_env_open(st->env, dir, MDB_NOTLS | MDB_NOMETASYNC, 0600))) {
        util_fmt(err, errlen, "cannot open LMDB environment in %s: %s", dir, mdb_strerror(rc));
        goto fail;
    }
    st->opened = 1;
    (void)store_reader_check(st); /* clear readers left by a killed process */
    MDB_envinfo info;
    mdb_env_info(st->env, &info);
    st->map_size = info.me_mapsize > map_size ? info.me_mapsize : map_size;

    if ((rc = mdb_txn_begin(st->env, NULL, 0, &txn)))
        goto lmdb_fail;
    if ((rc = mdb_dbi_open(txn, "meta", MDB_CREATE, &st->meta)))
        goto lmdb_fail;
    for (int i = 0; i < STORE_DB_COUNT; i++)
        if ((rc = mdb_dbi_open(txn, DBS[i].name, DBS[i].flags | MDB_CREATE, &st->dbi[i])))
            goto lmdb_fail;
    uint64_t format;
    if ((rc = store_u64_read(txn, st->meta, "format", &format)))
        goto lmdb_fail;
    if (format == 0) {
        if ((rc = store_u64_write(txn, st->meta, "format", STORE_FORMAT)))
            goto lmdb_fail;
    } else if (format != STORE_FORMAT) {
        util_fmt(err, errlen, "data directory %s has store format %llu; this carehubd reads format %u",
                 dir, (unsigned long long)format, STORE_FORMAT);
        goto fail;
    }
    if ((rc = last_seq(txn, st->dbi[STORE_DB_EVENTS], "ev-", &st->seq_event)) ||
        (rc = last_seq(txn, st->dbi[STORE_DB_CASES], "case-", &st->seq_case)) ||
        (rc = last_seq(txn, st->dbi[STORE_DB_ASSIGNMENTS], "as-", &st->seq_assign)) ||
        (rc = store_index_rebuild(txn, st)))
        goto lmdb_fail;
    if ((rc = mdb_txn_commit(txn))) {
        txn = NULL;
        goto lmdb_fail;
    }
    (void)chmod(dir, 0700); /* the directory holds children's data */
    char s1[32], s2[32];
    log_info("store: opened %s (map %s, max %s, %llu events, %llu cases)", dir,
             size_text(st->map_size, s1, sizeof s1), size_text(map_max, s2, sizeof s2),
             (unsigned long long)st->seq_event, (unsigned long long)st->seq_case);
    return st;

lmdb_fail:
    util_fmt(err, errlen, "cannot initialise store in %s: %s", dir, mdb_strerror(rc));
fail:
    if (txn)
        mdb_txn_abort(txn);
    store_close(&st);
    return NULL;
}

/* The check value meta["privacy.check"] holds: a keyed hash (crypto_kdf
 * context 3) that names the key without revealing it. */
static void key_check(const uint8_t *key, unsigned char check[32])
{
    unsigned char ck[crypto_generichash_KEYBYTES];
    crypto_kdf_derive_from_key(ck, sizeof ck, 3, "carehub_", key);
    crypto_generichash(check, 32, (const unsigned char *)"carehub key check", 17, ck, sizeof ck);
    sodium_memzero(ck, sizeof ck);
}

void store_key_fingerprint(const uint8_t *key, char out[STORE_KEY_FP_MAX])
{
    unsigned char check[32];
    key_check(key, check);
    sodium_bin2hex(out, STORE_KEY_FP_MAX, check, (STORE_KEY_FP_MAX - 1) / 2);
}

void store_derive_trail_key(const uint8_t *key, unsigned char out[32])
{
    crypto_kdf_derive_from_key(out, 32, 5, "carehub_", key);
}

int store_set_privacy(store_t *st, const uint8_t *key, char *err, size_t errlen)
{
    unsigned char check[32] = {0};
    if (key) {
        crypto_kdf_derive_from_key(st->body_key, sizeof st->body_key, 1, "carehub_", key);
        crypto_kdf_derive_from_key(st->join_key, sizeof st->join_key, 2, "carehub_", key);
        crypto_kdf_derive_from_key(st->ref_key, sizeof st->ref_key, 4, "carehub_", key);
        store_derive_trail_key(key, st->trail_key);
        key_check(key, check);
    }
    /* The store remembers which key sealed it: another key, or none, would
     * leave cases unreadable and a child's events split over two cases. */
    MDB_txn *txn;
    MDB_val k = store_val_str("privacy.check"), v;
    int rc = mdb_txn_begin(st->env, NULL, st->readonly ? MDB_RDONLY : 0, &txn);
    if (rc) {
        util_fmt(err, errlen, "cannot read the store: %s", mdb_strerror(rc));
        return -1;
    }
    rc = mdb_get(txn, st->meta, &k, &v);
    st->sealed = rc == 0;
    if (rc == 0 && !key && st->readonly) { /* a verify without the key: what it can check */
        mdb_txn_abort(txn);
        return 0;
    }
    if (rc == 0 && (!key || v.mv_size != sizeof check || memcmp(v.mv_data, check, sizeof check))) {
        mdb_txn_abort(txn);
        util_fmt(err, errlen, key ? "the data directory %s was sealed with another privacy key; "
                                    "configure the key it was written with (privacy.key_file)"
                                  : "the data directory %s holds sealed children's data; "
                                    "configure its privacy.key_file (privacy: off cannot read it)",
                 st->dir);
        return -1;
    }
    if (rc == MDB_NOTFOUND && key && !st->readonly) {
        MDB_val nv = {sizeof check, check};
        rc = mdb_put(txn, st->meta, &k, &nv, 0);
        st->sealed = rc == 0;
    } else if (rc == MDB_NOTFOUND) {
        rc = 0;
    }
    if (rc) /* a read or write error: the transaction is still ours to end */
        mdb_txn_abort(txn);
    else
        rc = mdb_txn_commit(txn); /* ends it either way */
    if (rc) {
        util_fmt(err, errlen, "cannot write the store: %s", mdb_strerror(rc));
        return -1;
    }
    st->privacy = key != NULL;
    return 0;
}

int store_sealed(const store_t *st)
{
    return st->sealed;
}

int store_txn_chain_hash(store_txn_t *t, unsigned char out[32], const void *data, size_t len)
{
    int keyed = t->st->privacy;
    crypto_generichash(out, 32, data, len, keyed ? t->st->trail_key : NULL,
                       keyed ? sizeof t->st->trail_key : 0);
    return keyed;
}

static void seal_append(const store_t *st, const char *ad, const void *m, size_t mlen,
                        msgpack_sbuffer *out)
{
    unsigned char *box = xmalloc(mlen + SEAL_OVERHEAD);
    size_t blen = seal_box(box, m, mlen, ad, st->body_key);
    msgpack_sbuffer_write(out, (const char *)box, blen);
    free(box);
}

/* Open a box (seal.h) into out; STORE_CORRUPTED when it does not open. */
static int unseal_append(const store_t *st, const char *ad, const void *box, size_t blen,
                         msgpack_sbuffer *out)
{
    if (!st->privacy || blen < SEAL_OVERHEAD)
        return STORE_CORRUPTED;
    unsigned char *m = xmalloc(blen);
    size_t mlen;
    int rc = seal_open(m, &mlen, box, blen, ad, st->body_key);
    if (rc == 0)
        msgpack_sbuffer_write(out, (const char *)m, mlen);
    sodium_memzero(m, blen);
    free(m);
    return rc == 0 ? 0 : STORE_CORRUPTED;
}

const char *store_txn_ref_key(store_txn_t *t, const char *ref, char *buf)
{
    if (!t->st->privacy)
        return ref;
    unsigned char h[(STORE_REF_KEY_MAX - 3) / 2];
    crypto_generichash(h, sizeof h, (const unsigned char *)ref, strlen(ref), t->st->ref_key,
                       sizeof t->st->ref_key);
    buf[0] = 'h';
    buf[1] = ':';
    sodium_bin2hex(buf + 2, STORE_REF_KEY_MAX - 2, h, sizeof h);
    return buf;
}

void store_txn_seal_box(store_txn_t *t, const char *ad, const void *m, size_t mlen,
                        msgpack_sbuffer *out)
{
    seal_append(t->st, ad, m, mlen, out);
}

int store_txn_open_box(store_txn_t *t, const char *ad, const void *box, size_t blen,
                       msgpack_sbuffer *out)
{
    return unseal_append(t->st, ad, box, blen, out);
}

int store_txn_privacy(const store_txn_t *t)
{
    return t->st->privacy;
}

const char *store_txn_child_key(store_txn_t *t, const char *child_id, char *buf)
{
    if (!t->st->privacy)
        return child_id;
    unsigned char h[(STORE_CHILD_KEY_MAX - 1) / 2];
    crypto_generichash(h, sizeof h, (const unsigned char *)child_id, strlen(child_id),
                       t->st->join_key, sizeof t->st->join_key);
    sodium_bin2hex(buf, STORE_CHILD_KEY_MAX, h, sizeof h);
    return buf;
}

int store_txn_seal(store_txn_t *t, const char *ad, const void *m, size_t mlen, msgpack_sbuffer *out)
{
    if (!t->st->privacy) {
        msgpack_sbuffer_write(out, m, mlen);
        return 0;
    }
    msgpack_sbuffer_write(out, "\0", 1); /* marker: never the first byte of a msgpack map */
    seal_append(t->st, ad, m, mlen, out);
    return 0;
}

int store_txn_open(store_txn_t *t, const char *ad, const void *v, size_t vl, msgpack_sbuffer *out)
{
    const unsigned char *b = v;
    if (vl == 0 || b[0] != 0) { /* not sealed */
        msgpack_sbuffer_write(out, v, vl);
        return 0;
    }
    return unseal_append(t->st, ad, b + 1, vl - 1, out);
}

int store_txn_event_body(store_txn_t *t, const char *event_id, const msgpack_object *rec,
                         msgpack_sbuffer *out)
{
    const msgpack_object *plain = frame_map_get(rec, "body"), *sealed = frame_map_get(rec, "body_enc");
    if (plain) {
        msgpack_packer pk;
        msgpack_packer_init(&pk, out, msgpack_sbuffer_write);
        msgpack_pack_object(&pk, *plain);
        return 0;
    }
    if (!sealed || sealed->type != MSGPACK_OBJECT_BIN)
        return STORE_CORRUPTED;
    int rc = unseal_append(t->st, event_id, sealed->via.bin.ptr, sealed->via.bin.size, out);
    if (rc)
        log_error("store: the body of %s does not open with this privacy key (another key, or "
                  "changed)", event_id);
    return rc;
}

int store_entry_problem(char *problem, size_t size, store_db_t db, const void *k, size_t kl,
                        const char *what)
{
    char shown[52];
    util_printable(shown, sizeof shown, k, kl);
    util_fmt(problem, size, "%s: the entry %s %s", store_db_name(db), shown, what);
    return STORE_EACH_STOP;
}

int store_db_dupsort(store_db_t db)
{
    return db < STORE_DB_COUNT && (DBS[db].flags & MDB_DUPSORT) != 0;
}

const char *store_db_name(store_db_t db)
{
    return db < STORE_DB_COUNT ? DBS[db].name : "?";
}

int store_copy(store_t *st, const char *dest, char *err, size_t errlen)
{
    /* one read transaction over the whole copy: a consistent snapshot, whatever
     * the broker writes meanwhile; compacted: free pages are not copied */
    int rc = mdb_env_copy2(st->env, dest, MDB_CP_COMPACT);
    if (rc == MDB_MAP_RESIZED) { /* the broker grew the map since the open: adopt its size */
        char path[4096];
        util_fmt(path, sizeof path, "%s/data.mdb", dest);
        (void)unlink(path); /* created before the read transaction failed; empty */
        rc = mdb_env_set_mapsize(st->env, 0);
        if (rc == 0)
            rc = mdb_env_copy2(st->env, dest, MDB_CP_COMPACT);
    }
    if (rc) {
        util_fmt(err, errlen, "cannot copy the store in %s to %s: %s", st->dir, dest,
                 mdb_strerror(rc));
        return -1;
    }
    return 0;
}

store_t *store_open_readonly(const char *dir, char *err, size_t errlen)
{
    store_t *st = xcalloc(1, sizeof *st);
    pthread_mutex_init(&st->readers_mu, NULL);
    pthread_mutex_init(&st->pend_mu, NULL);
    MDB_txn *txn = NULL;
    int rc;
    st->dir = xstrdup(dir);
    if ((rc = mdb_env_create(&st->env)))
        goto fail;
    (void)mdb_env_set_maxdbs(st->env, 32);
    st->readonly = 1;
    if ((rc = mdb_env_open(st->env, dir, MDB_NOTLS | MDB_RDONLY, 0600)))
        goto fail;
    if ((rc = mdb_txn_begin(st->env, NULL, MDB_RDONLY, &txn)))
        goto fail;
    if ((rc = mdb_dbi_open(txn, "meta", 0, &st->meta)))
        goto fail;
    for (int i = 0; i < STORE_DB_COUNT; i++) {
        rc = mdb_dbi_open(txn, DBS[i].name, DBS[i].flags, &st->dbi[i]);
        if (rc) /* MDB_NOTFOUND: written by an older carehubd; open it with carehubd once */
            goto fail;
    }
    rc = mdb_txn_commit(txn); /* committed, the handles stay valid for later transactions */
    txn = NULL;
    if (rc)
        goto fail;
    return st;
fail:
    util_fmt(err, errlen, "cannot open the store in %s read-only: %s", dir, mdb_strerror(rc));
    if (txn)
        mdb_txn_abort(txn);
    store_close(&st);
    return NULL;
}

void store_close(store_t **pst)
{
    if (!pst || !*pst)
        return;
    store_t *st = *pst;
    if (st->env && st->pend_n)
        (void)store_flush_index(st); /* else rebuilt from the events at the next open */
    if (st->env && st->opened && !st->readonly)
        (void)store_sync(st); /* the last commit's meta page */
    if (st->env)
        mdb_env_close(st->env);
    free(st->pend);
    hmap_free(&st->by_pair);
    free(st->dir);
    pthread_mutex_destroy(&st->readers_mu);
    pthread_mutex_destroy(&st->pend_mu);
    free(st);
    *pst = NULL;
}

uint64_t store_map_size(const store_t *st)
{
    return st->map_size;
}

uint64_t store_map_used(const store_t *st)
{
    MDB_envinfo info;
    MDB_stat stat;
    if (mdb_env_info(st->env, &info) || mdb_env_stat(st->env, &stat))
        return 0;
    return (uint64_t)(info.me_last_pgno + 1) * stat.ms_psize;
}

uint64_t store_txn_entries(store_txn_t *t, store_db_t db)
{
    MDB_stat stat;
    return mdb_stat(t->txn, t->st->dbi[db], &stat) == 0 ? stat.ms_entries : 0;
}

static int grow_locked(store_t *st);

/* Double the map, up to map_max. Returns 0 when it grew, -1 at map_max or on
 * error, -2 while a read transaction is open (a long read in a job thread):
 * LMDB resizes only with no transaction open in the process. */
static int grow(store_t *st)
{
    if (st->map_size >= st->map_max)
        return -1;
    pthread_mutex_lock(&st->readers_mu);
    /* The loop's reads are short (the writer thread writes while they run): wait
     * a little for them; a long one (a verify) is not waited for. */
    for (int i = 0; i < 200 && st->readers > 0 && st->readers == st->short_readers; i++) {
        pthread_mutex_unlock(&st->readers_mu);
        struct timespec ms = {0, 1000000};
        nanosleep(&ms, NULL);
        pthread_mutex_lock(&st->readers_mu);
    }
    if (st->readers > 0) {
        pthread_mutex_unlock(&st->readers_mu);
        return -2;
    }
    int r = grow_locked(st);
    pthread_mutex_unlock(&st->readers_mu);
    return r;
}

static int grow_locked(store_t *st)
{
    uint64_t next = st->map_size * 2;
    if (next > st->map_max)
        next = st->map_max;
    int rc = mdb_env_set_mapsize(st->env, next);
    if (rc) {
        log_error("store: cannot grow map to %llu bytes: %s", (unsigned long long)next,
                  mdb_strerror(rc));
        return -1;
    }
    char s1[32], s2[32];
    log_info("store: map grown from %s to %s", size_text(st->map_size, s1, sizeof s1),
             size_text(next, s2, sizeof s2));
    st->map_size = next;
    return 0;
}

size_t store_pair_key(char *buf, size_t size, const char *a, const char *b)
{
    size_t al = strlen(a), bl = strlen(b);
    if (al + 1 + bl > size)
        return 0;
    memcpy(buf, a, al);
    buf[al] = '\0';
    memcpy(buf + al + 1, b, bl);
    return al + 1 + bl;
}

/* Free space below which a failed write counts as a full disk. */
#define STORE_DISK_FULL_BELOW (1u << 20)

/* Classify a failed write; log it. */
static store_rc_t write_failed(store_t *st, int rc)
{
    if (rc == MDB_MAP_FULL || rc == STORE_MAPFULL) {
        char s1[32];
        log_error("store: map full at its maximum (%s); refusing writes until space is "
                  "freed or broker.map_max is raised", size_text(st->map_max, s1, sizeof s1));
        return STORE_FULL;
    }
    if (rc == STORE_FULL) /* said by fn, which logged why */
        return STORE_FULL;
    /* A disk that fills mid-write shows as ENOSPC, or as EIO when LMDB's pwrite
     * came back short; tell them apart by the space left. */
    struct statvfs vfs;
    if (rc == ENOSPC ||
        (rc == EIO && statvfs(st->dir, &vfs) == 0 &&
         (uint64_t)vfs.f_bavail * vfs.f_frsize < STORE_DISK_FULL_BELOW)) {
        log_error("store: disk full writing %s; refusing writes until space is freed", st->dir);
        return STORE_FULL;
    }
    log_error("store: write failed: %s", rc_text(rc));
    return STORE_IO;
}

int store_reader_check(store_t *st)
{
    int dead = 0;
    int rc = mdb_reader_check(st->env, &dead);
    if (rc) {
        log_error("store: checking for stale readers: %s", mdb_strerror(rc));
        return -1;
    }
    if (dead > 0)
        log_warn("store: cleared %d stale reader slot%s (a process holding a read transaction "
                 "died)", dead, dead == 1 ? "" : "s");
    return dead;
}

int store_sync(store_t *st)
{
    int rc = mdb_env_sync(st->env, 1);
    if (rc) {
        log_error("store: sync failed: %s", mdb_strerror(rc));
        return -1;
    }
    return 0;
}

store_rc_t store_write(store_t *st, store_fn fn, void *ud)
{
    store_rc_t rc = store_write_nosync(st, fn, ud);
    if (rc == STORE_OK && store_sync(st) != 0)
        return STORE_IO;
    return rc;
}

store_rc_t store_write_nosync(store_t *st, store_fn fn, void *ud)
{
    /* Grow ahead of need, at three quarters: a map that fills while a long read
     * (job.c) holds a transaction cannot grow until that read ends. */
    if (st->map_size < st->map_max && store_map_used(st) > st->map_size / 4 * 3)
        (void)grow(st);
    for (;;) {
        /* pend_n changes only in the thread of the write transaction: this one */
        store_txn_t t = {st, NULL, st->seq_event, st->seq_case, st->seq_assign, st->pend_n, 0, 0, 1};
        int rc = mdb_txn_begin(st->env, NULL, 0, &t.txn);
        if (rc)
            return write_failed(st, rc);
        t.id = mdb_txn_id(t.txn);
        rc = store_rc_of(store_index_flush(&t, 0));
        if (rc == 0)
            rc = store_rc_of(fn(&t, ud));
        if (rc == 0) {
            rc = mdb_txn_commit(t.txn); /* frees the transaction either way */
            if (rc == 0) {
                st->seq_event = t.seq_event;
                st->seq_case = t.seq_case;
                st->seq_assign = t.seq_assign;
                store_index_settle(st, t.id, t.pend_flushed, 1); /* written: out of memory */
                return STORE_OK;
            }
        } else {
            mdb_txn_abort(t.txn);
        }
        store_index_rollback(st, t.pend_before); /* the events of the aborted transaction do not exist */
        store_index_settle(st, t.id, t.pend_flushed, 0);
        int g = rc == MDB_MAP_FULL || rc == STORE_MAPFULL ? grow(st) : -1;
        if (g == 0)
            continue;
        if (g == -2) {
            log_warn("store: the map is full and cannot grow while a long read (a verify) has "
                     "the store open; writes are refused until it ends");
            return STORE_FULL;
        }
        return write_failed(st, rc);
    }
}

/* A read transaction: `longer` ones (a verify in a job's thread) do not hold
 * written case_events entries in memory while they run (they do not read them). */
static store_rc_t read_txn(store_t *st, store_fn fn, void *ud, int longer)
{
    /* Nothing of the loop's state is read here: jobs call this from their thread. */
    store_txn_t t = {st, NULL, 0, 0, 0, 0, 0, 0, 0};
    pthread_mutex_lock(&st->readers_mu);
    st->readers++;
    st->short_readers += !longer;
    pthread_mutex_unlock(&st->readers_mu);
    int rc = mdb_txn_begin(st->env, NULL, MDB_RDONLY, &t.txn);
    if (rc == 0) {
        t.id = mdb_txn_id(t.txn);
        rc = fn(&t, ud);
        mdb_txn_abort(t.txn);
    }
    pthread_mutex_lock(&st->readers_mu);
    st->readers--;
    st->short_readers -= !longer;
    pthread_mutex_unlock(&st->readers_mu);
    rc = store_rc_of(rc);
    if (rc && rc != STORE_NOTFOUND) {
        log_error("store: read failed: %s", store_strerror((store_rc_t)rc));
        return STORE_IO;
    }
    return rc ? STORE_NOTFOUND : STORE_OK;
}

store_rc_t store_read(store_t *st, store_fn fn, void *ud)
{
    return read_txn(st, fn, ud, 0);
}

store_rc_t store_read_long(store_t *st, store_fn fn, void *ud)
{
    return read_txn(st, fn, ud, 1);
}

static int marked_txn(store_txn_t *t, void *ud)
{
    const void *v;
    size_t vl;
    return store_get(t, STORE_DB_COUNTERS, ud, strlen(ud), &v, &vl);
}

int store_marked(store_t *st, const char *name)
{
    store_rc_t rc = store_read(st, marked_txn, (void *)name);
    return rc == STORE_OK ? 1 : rc == STORE_NOTFOUND ? 0 : -1;
}

int store_get(store_txn_t *t, store_db_t db, const void *k, size_t kl, const void **v, size_t *vl)
{
    MDB_val key = {kl, (void *)k}, val;
    if (kl == 0 || kl > (size_t)mdb_env_get_maxkeysize(t->st->env))
        return STORE_NOTFOUND;
    int rc = mdb_get(t->txn, t->st->dbi[db], &key, &val);
    if (rc == 0) {
        *v = val.mv_data;
        *vl = val.mv_size;
    }
    return store_rc_of(rc);
}

int store_put(store_txn_t *t, store_db_t db, const void *k, size_t kl, const void *v, size_t vl,
              int only_new)
{
    MDB_val key = {kl, (void *)k}, val = {vl, (void *)v};
    unsigned flags = only_new ? (DBS[db].flags & MDB_DUPSORT ? MDB_NODUPDATA : MDB_NOOVERWRITE) : 0;
    return store_rc_of(mdb_put(t->txn, t->st->dbi[db], &key, &val, flags));
}

int store_del(store_txn_t *t, store_db_t db, const void *k, size_t kl, const void *v, size_t vl)
{
    MDB_val key = {kl, (void *)k}, val = {vl, (void *)v};
    int rc = mdb_del(t->txn, t->st->dbi[db], &key, v ? &val : NULL);
    return rc == MDB_NOTFOUND ? 0 : store_rc_of(rc);
}

int store_each(store_txn_t *t, store_db_t db, const void *from, size_t fl, int only_key,
               store_each_fn fn, void *ud)
{
    MDB_cursor *cur;
    MDB_val k = {fl, (void *)from}, v;
    int rc = mdb_cursor_open(t->txn, t->st->dbi[db], &cur);
    if (rc)
        return store_rc_of(rc);
    if (only_key)
        rc = mdb_cursor_get(cur, &k, &v, MDB_SET_KEY);
    else
        rc = mdb_cursor_get(cur, &k, &v, fl ? MDB_SET_RANGE : MDB_FIRST);
    while (rc == 0) {
        int r = fn(ud, k.mv_data, k.mv_size, v.mv_data, v.mv_size);
        if (r) {
            mdb_cursor_close(cur);
            return r == STORE_EACH_STOP ? 0 : r;
        }
        rc = mdb_cursor_get(cur, &k, &v, only_key ? MDB_NEXT_DUP : MDB_NEXT);
    }
    mdb_cursor_close(cur);
    return rc == MDB_NOTFOUND ? 0 : store_rc_of(rc);
}

int store_copy_id(const void *v, size_t vl, char *out, size_t size)
{
    if (vl >= size)
        return -1;
    memcpy(out, v, vl);
    out[vl] = '\0';
    return 0;
}

void store_next_id(store_txn_t *t, store_seq_t seq, char *out)
{
    switch (seq) {
    case STORE_SEQ_ASSIGNMENT:
        util_fmt(out, STORE_ID_MAX, "as-%012llu", (unsigned long long)++t->seq_assign);
        break;
    case STORE_SEQ_EVENT:
        util_fmt(out, STORE_ID_MAX, "ev-%012llu", (unsigned long long)++t->seq_event);
        break;
    case STORE_SEQ_CASE:
        util_fmt(out, STORE_ID_MAX, "case-%010llu", (unsigned long long)++t->seq_case);
        break;
    }
}

