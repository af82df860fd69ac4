/* store.c — LMDB environment, group commit, idempotency and case joining; see store.h. */
#include "store.h"

#include <errno.h>
#include <lmdb.h>
#include <pthread.h>
#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sodium.h>
#include <sys/stat.h>
#include <sys/statvfs.h>

#include "frame.h"
#include "log.h"
#include "trail.h"
#include "util.h"

#define STORE_FORMAT 1u

#define CASE_INDEX_LAG_MS 1000
#define CASE_INDEX_SLICES 8
#define CASE_INDEX_SMALL 256 /* pending entries written at once without slicing */
#define CASE_INDEX_MAX_PENDING 65536 /* a bound on memory (about 6 MB) */

struct store {
    MDB_env *env;
    MDB_dbi meta;
    MDB_dbi dbi[STORE_DB_COUNT];
    uint64_t seq_event;  /* last event number handed out (committed) */
    uint64_t seq_case;   /* last case number handed out (committed) */
    uint64_t seq_assign; /* last assignment number handed out (committed) */
    uint64_t map_size;
    uint64_t map_max;
    char *dir;
    /* The case_events index lags the events by about CASE_INDEX_LAG_MS: joining an
     * event to one of many cases dirties one random page per event, so entries
     * wait in memory and are written in bulk (many events of a case share a
     * page). A sweep writes them one slice of the case-number range at a time
     * (CASE_INDEX_SLICES per CASE_INDEX_LAG_MS), so that no one commit writes a
     * page per active case. Events are the log; meta "case_events.upto" is the
     * event number below which every entry is written, and at open the entries
     * after it that are missing are rebuilt from the events. Reads merge. */
    struct pend_entry {
        uint64_t seq;                 /* the event's number */
        uint64_t case_no;             /* the case's number (its id's digits) */
        int flushed;                  /* written by the write transaction in progress */
        char case_id[STORE_ID_MAX];
        char event_id[STORE_ID_MAX];
    } *pend;
    size_t pend_n, pend_cap;
    int64_t sweep_next;               /* monotonic ms: the next slice is due */
    int sweep_slice;                  /* 0 .. CASE_INDEX_SLICES - 1 */
    uint64_t sweep_bound[CASE_INDEX_SLICES];          /* slice k: case numbers from bound[k] to bound[k+1] */
    /* privacy.key_file: event bodies sealed with XChaCha20-Poly1305 (AD: the
     * event id); the child-id join key is a keyed BLAKE2b hash. Both keys are
     * derived from the configured one (crypto_kdf). */
    int privacy;
    unsigned char body_key[crypto_aead_xchacha20poly1305_ietf_KEYBYTES];
    unsigned char join_key[crypto_generichash_KEYBYTES];
    int readonly;                     /* store_open_readonly */
    /* Read transactions open now, in any thread (job.c runs long reads off the
     * loop): the map may not be resized while one is (mdb_env_set_mapsize). */
    pthread_mutex_t readers_mu;
    int readers;
    int opened;                       /* mdb_env_open succeeded */
};


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
};

struct store_txn {
    store_t *st;
    MDB_txn *txn;
    uint64_t seq_event, seq_case, seq_assign; /* counters as this transaction moves them */
    size_t pend_before;  /* st->pend_n when the transaction began (rolled back to on abort) */
    size_t pend_flushed; /* entries written to case_events here (marked `flushed`) */
};

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

const char *store_strerror(store_rc_t rc)
{
    switch (rc) {
    case STORE_OK: return "ok";
    case STORE_FULL: return "storage is full";
    case STORE_IO: return "storage failed";
    case STORE_NOTFOUND: return "not found";
    }
    return "unknown store error";
}

static MDB_val val_str(const char *s)
{
    MDB_val v = {strlen(s), (void *)s};
    return v;
}

static int read_u64(MDB_txn *txn, MDB_dbi dbi, const char *key, uint64_t *out)
{
    MDB_val k = val_str(key), v;
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

static int write_u64(MDB_txn *txn, MDB_dbi dbi, const char *key, uint64_t x)
{
    MDB_val k = val_str(key), v = {sizeof x, &x};
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

/* The number in an id ("case-0000000042" -> 42): its digits, read in order. */
static uint64_t id_number(const char *id)
{
    uint64_t n = 0;
    for (const char *c = id; *c; c++)
        if (*c >= '0' && *c <= '9')
            n = n * 10 + (uint64_t)(*c - '0');
    return n;
}

static void pend_add(store_t *st, uint64_t seq, const char *case_id, const char *event_id)
{
    if (st->pend_n == st->pend_cap) {
        st->pend_cap = st->pend_cap ? st->pend_cap * 2 : 1024;
        st->pend = xrealloc(st->pend, st->pend_cap * sizeof *st->pend);
    }
    struct pend_entry *e = &st->pend[st->pend_n++];
    e->seq = seq;
    e->case_no = id_number(case_id);
    e->flushed = 0;
    util_fmt(e->case_id, sizeof e->case_id, "%s", case_id);
    util_fmt(e->event_id, sizeof e->event_id, "%s", event_id);
}

/* At open: the events after meta "case_events.upto" are not in the index yet. */
static int pend_rebuild(MDB_txn *txn, store_t *st)
{
    uint64_t upto;
    int rc = read_u64(txn, st->meta, "case_events.upto", &upto);
    if (rc || upto >= st->seq_event)
        return rc;
    char from[STORE_ID_MAX];
    util_fmt(from, sizeof from, "ev-%012llu", (unsigned long long)(upto + 1));
    MDB_cursor *cur, *idx;
    MDB_val k = val_str(from), v;
    if ((rc = mdb_cursor_open(txn, st->dbi[STORE_DB_EVENTS], &cur)))
        return rc;
    if ((rc = mdb_cursor_open(txn, st->dbi[STORE_DB_CASE_EVENTS], &idx))) {
        mdb_cursor_close(cur);
        return rc;
    }
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE); rc == 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        msgpack_unpacked u;
        msgpack_unpacked_init(&u);
        char case_id[STORE_ID_MAX] = "", ev[STORE_ID_MAX];
        const char *s;
        size_t n;
        if (msgpack_unpack_next(&u, v.mv_data, v.mv_size, NULL) == MSGPACK_UNPACK_SUCCESS &&
            frame_str(frame_map_get(&u.data, "case"), &s, &n) && n < sizeof case_id) {
            memcpy(case_id, s, n);
            case_id[n] = '\0';
        }
        msgpack_unpacked_destroy(&u);
        if (!case_id[0] || k.mv_size >= sizeof ev || k.mv_size <= 3) {
            rc = MDB_CORRUPTED;
            break;
        }
        memcpy(ev, k.mv_data, k.mv_size);
        ev[k.mv_size] = '\0';
        /* the sweep writes out of event order: some entries after upto are there */
        MDB_val ck = val_str(case_id), cv = val_str(ev);
        int have = mdb_cursor_get(idx, &ck, &cv, MDB_GET_BOTH);
        if (have == 0)
            continue;
        if (have != MDB_NOTFOUND) {
            rc = have;
            break;
        }
        pend_add(st, id_number(ev), case_id, ev);
    }
    mdb_cursor_close(idx);
    mdb_cursor_close(cur);
    if (rc == MDB_NOTFOUND)
        rc = 0;
    if (!rc && st->pend_n)
        log_info("store: %zu recent events to add to the case index", st->pend_n);
    return rc;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* A round's slices: as many distinct pending cases in each (about as many pages). */
static void sweep_bounds(store_t *st)
{
    uint64_t *no = xmalloc(st->pend_n * sizeof *no);
    for (size_t i = 0; i < st->pend_n; i++)
        no[i] = st->pend[i].case_no;
    qsort(no, st->pend_n, sizeof *no, cmp_u64);
    size_t m = 0;
    for (size_t i = 0; i < st->pend_n; i++)
        if (m == 0 || no[m - 1] != no[i])
            no[m++] = no[i];
    st->sweep_bound[0] = 0;
    for (int k = 1; k < CASE_INDEX_SLICES; k++)
        st->sweep_bound[k] = no[m * (size_t)k / CASE_INDEX_SLICES];
    free(no);
}

/* Write pending index entries inside this write transaction (at its start):
 * all of them when forced, too many or few, else, when the sweep's next slice is
 * due, the entries of that slice of the case-number range. The first slice of a
 * round cuts the range at the octiles of the distinct case numbers pending (as
 * many cases, so about as many pages, per slice); the first slice also takes
 * what lies below, the last what lies above. So each
 * page is written about once a round, and an entry waits at most about two
 * rounds (one that arrived just after its slice passed waits for the next).
 * Entries leave memory only once the transaction commits (store_write). */
static int pend_flush(store_txn_t *t, int force)
{
    store_t *st = t->st;
    if (st->pend_n == 0)
        return 0;
    int all = force || st->pend_n >= CASE_INDEX_MAX_PENDING;
    uint64_t from = 0, below = UINT64_MAX; /* this slice: case numbers from .. below */
    if (!all) {
        int64_t now = util_mono_ms();
        if (t->pend_flushed || now < st->sweep_next)
            return 0;
        st->sweep_next = now + CASE_INDEX_LAG_MS / CASE_INDEX_SLICES;
        if (st->pend_n <= CASE_INDEX_SMALL) {
            all = 1; /* a few pages: no need to slice */
            st->sweep_slice = 0;
        } else {
            if (st->sweep_slice == 0)
                sweep_bounds(st);
            from = st->sweep_bound[st->sweep_slice];
            if (st->sweep_slice < CASE_INDEX_SLICES - 1)
                below = st->sweep_bound[st->sweep_slice + 1];
            st->sweep_slice = (st->sweep_slice + 1) % CASE_INDEX_SLICES;
        }
    }
    size_t n = 0;
    uint64_t upto = t->seq_event; /* every event so far, unless one stays pending */
    for (size_t i = 0; i < st->pend_n; i++) {
        struct pend_entry *e = &st->pend[i];
        if (e->flushed)
            continue; /* by an earlier call in this transaction */
        if (!all && (e->case_no < from || e->case_no >= below)) {
            if (e->seq - 1 < upto)
                upto = e->seq - 1;
            continue;
        }
        MDB_val cs = val_str(e->case_id), ev = val_str(e->event_id);
        int rc = mdb_put(t->txn, st->dbi[STORE_DB_CASE_EVENTS], &cs, &ev, MDB_NODUPDATA);
        if (rc && rc != MDB_KEYEXIST)
            return rc; /* (MAP_FULL) the flags set so far are cleared on abort */
        e->flushed = 1;
        t->pend_flushed++; /* counted at once: pend_settle must see every flag */
        n++;
    }
    if (n == 0)
        return 0;
    return write_u64(t->txn, st->meta, "case_events.upto", upto);
}

/* After a transaction: drop what it wrote (committed) or unmark it (aborted). */
static void pend_settle(store_t *st, size_t n_flushed, int committed)
{
    if (!n_flushed)
        return;
    size_t w = 0;
    for (size_t i = 0; i < st->pend_n; i++) {
        if (st->pend[i].flushed && committed)
            continue;
        st->pend[i].flushed = 0;
        if (w != i)
            st->pend[w] = st->pend[i];
        w++;
    }
    st->pend_n = w;
}

store_t *store_open(const char *dir, uint64_t map_size, uint64_t map_max, char *err, size_t errlen)
{
    store_t *st = xcalloc(1, sizeof *st);
    pthread_mutex_init(&st->readers_mu, NULL);
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
    if ((rc = read_u64(txn, st->meta, "format", &format)))
        goto lmdb_fail;
    if (format == 0) {
        if ((rc = write_u64(txn, st->meta, "format", STORE_FORMAT)))
            goto lmdb_fail;
    } else if (format != STORE_FORMAT) {
        util_fmt(err, errlen, "data directory %s has store format %llu; this carehubd reads format %u",
                 dir, (unsigned long long)format, STORE_FORMAT);
        goto fail;
    }
    if ((rc = last_seq(txn, st->dbi[STORE_DB_EVENTS], "ev-", &st->seq_event)) ||
        (rc = last_seq(txn, st->dbi[STORE_DB_CASES], "case-", &st->seq_case)) ||
        (rc = last_seq(txn, st->dbi[STORE_DB_ASSIGNMENTS], "as-", &st->seq_assign)) ||
        (rc = pend_rebuild(txn, st)))
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

int store_set_privacy(store_t *st, const uint8_t *key, char *err, size_t errlen)
{
    unsigned char check[32] = {0};
    if (key) {
        unsigned char ck[crypto_generichash_KEYBYTES];
        crypto_kdf_derive_from_key(st->body_key, sizeof st->body_key, 1, "carehub_", key);
        crypto_kdf_derive_from_key(st->join_key, sizeof st->join_key, 2, "carehub_", key);
        crypto_kdf_derive_from_key(ck, sizeof ck, 3, "carehub_", key);
        crypto_generichash(check, sizeof check, (const unsigned char *)"carehub key check", 17, ck,
                           sizeof ck);
        sodium_memzero(ck, sizeof ck);
    }
    /* The store remembers which key sealed it: another key, or none, would
     * leave cases unreadable and a child's events split over two cases. */
    MDB_txn *txn;
    MDB_val k = val_str("privacy.check"), v;
    int rc = mdb_txn_begin(st->env, NULL, 0, &txn);
    if (rc) {
        util_fmt(err, errlen, "cannot read the store: %s", mdb_strerror(rc));
        return -1;
    }
    rc = mdb_get(txn, st->meta, &k, &v);
    if (rc == 0 && (!key || v.mv_size != sizeof check || memcmp(v.mv_data, check, sizeof check))) {
        mdb_txn_abort(txn);
        util_fmt(err, errlen, key ? "the data directory %s was sealed with another privacy key; "
                                    "configure the key it was written with (privacy.key_file)"
                                  : "the data directory %s holds sealed children's data; "
                                    "configure its privacy.key_file (privacy: off cannot read it)",
                 st->dir);
        return -1;
    }
    if (rc == MDB_NOTFOUND && key) {
        MDB_val nv = {sizeof check, check};
        rc = mdb_put(txn, st->meta, &k, &nv, 0);
    } else if (rc == MDB_NOTFOUND) {
        rc = 0;
    }
    if (rc || (rc = mdb_txn_commit(txn))) {
        if (rc && txn)
            util_fmt(err, errlen, "cannot write the store: %s", mdb_strerror(rc));
        return -1;
    }
    st->privacy = key != NULL;
    return 0;
}

int store_txn_seal(store_txn_t *t, const char *ad, const void *m, size_t mlen, msgpack_sbuffer *out)
{
    if (!t->st->privacy) {
        msgpack_sbuffer_write(out, m, mlen);
        return 0;
    }
    const size_t nb = crypto_aead_xchacha20poly1305_ietf_NPUBBYTES,
                 ab = crypto_aead_xchacha20poly1305_ietf_ABYTES;
    unsigned char *box = xmalloc(1 + nb + mlen + ab);
    unsigned long long clen;
    box[0] = 0; /* marker: never the first byte of a msgpack map */
    randombytes_buf(box + 1, nb);
    crypto_aead_xchacha20poly1305_ietf_encrypt(box + 1 + nb, &clen, m, mlen,
                                               (const unsigned char *)ad, strlen(ad), NULL, box + 1,
                                               t->st->body_key);
    msgpack_sbuffer_write(out, (const char *)box, 1 + nb + (size_t)clen);
    free(box);
    return 0;
}

int store_txn_open(store_txn_t *t, const char *ad, const void *v, size_t vl, msgpack_sbuffer *out)
{
    const unsigned char *b = v;
    if (vl == 0 || b[0] != 0) { /* not sealed */
        msgpack_sbuffer_write(out, v, vl);
        return 0;
    }
    const size_t nb = crypto_aead_xchacha20poly1305_ietf_NPUBBYTES,
                 ab = crypto_aead_xchacha20poly1305_ietf_ABYTES;
    if (vl < 1 + nb + ab || !t->st->privacy)
        return MDB_CORRUPTED;
    unsigned char *m = xmalloc(vl);
    unsigned long long mlen;
    int rc = crypto_aead_xchacha20poly1305_ietf_decrypt(m, &mlen, NULL, b + 1 + nb, vl - 1 - nb,
                                                        (const unsigned char *)ad, strlen(ad),
                                                        b + 1, t->st->body_key);
    if (rc == 0)
        msgpack_sbuffer_write(out, (const char *)m, (size_t)mlen);
    sodium_memzero(m, vl);
    free(m);
    return rc == 0 ? 0 : MDB_CORRUPTED;
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
    const size_t nb = crypto_aead_xchacha20poly1305_ietf_NPUBBYTES,
                 ab = crypto_aead_xchacha20poly1305_ietf_ABYTES;
    if (!sealed || sealed->type != MSGPACK_OBJECT_BIN || sealed->via.bin.size < nb + ab ||
        !t->st->privacy)
        return MDB_CORRUPTED;
    const unsigned char *n = (const unsigned char *)sealed->via.bin.ptr;
    size_t clen = sealed->via.bin.size - nb;
    unsigned char *m = xmalloc(clen);
    unsigned long long mlen;
    int rc = crypto_aead_xchacha20poly1305_ietf_decrypt(m, &mlen, NULL, n + nb, clen,
                                                        (const unsigned char *)event_id,
                                                        strlen(event_id), n, t->st->body_key);
    if (rc == 0)
        msgpack_sbuffer_write(out, (const char *)m, (size_t)mlen);
    else
        log_error("store: the body of %s does not open with this privacy key (another key, or "
                  "changed)", event_id);
    sodium_memzero(m, clen);
    free(m);
    return rc == 0 ? 0 : MDB_CORRUPTED;
}

const char *store_db_name(store_db_t db)
{
    return db < STORE_DB_COUNT ? DBS[db].name : "?";
}

store_t *store_open_readonly(const char *dir, char *err, size_t errlen)
{
    store_t *st = xcalloc(1, sizeof *st);
    pthread_mutex_init(&st->readers_mu, NULL);
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
    free(st->dir);
    pthread_mutex_destroy(&st->readers_mu);
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

/* Decode a msgpack [event id, case id] idempotency value. */
static int idem_decode(const MDB_val *v, store_event_t *it)
{
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    int ok = 0;
    if (msgpack_unpack_next(&u, v->mv_data, v->mv_size, NULL) == MSGPACK_UNPACK_SUCCESS &&
        u.data.type == MSGPACK_OBJECT_ARRAY && u.data.via.array.size == 2) {
        const msgpack_object *e = &u.data.via.array.ptr[0], *c = &u.data.via.array.ptr[1];
        if (e->type == MSGPACK_OBJECT_STR && c->type == MSGPACK_OBJECT_STR &&
            e->via.str.size < STORE_ID_MAX && c->via.str.size < STORE_ID_MAX) {
            memcpy(it->event_id, e->via.str.ptr, e->via.str.size);
            it->event_id[e->via.str.size] = '\0';
            memcpy(it->case_id, c->via.str.ptr, c->via.str.size);
            it->case_id[c->via.str.size] = '\0';
            ok = 1;
        }
    }
    msgpack_unpacked_destroy(&u);
    return ok ? 0 : MDB_CORRUPTED;
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
    frame_pack_cstr(&pk, "status");   frame_pack_cstr(&pk, "open");
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
    MDB_val k = val_str(case_id), v;
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
        MDB_val k = {jlen, jkey}, v = val_str(it->case_id);
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
        rc = mdb_get(txn, st->dbi[STORE_DB_IDEM], &k, &v);
        if (rc == 0) {
            if ((rc = idem_decode(&v, it)))
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
        pend_add(st, t->seq_event, it->case_id, it->event_id); /* kept only if this commits */
        msgpack_sbuffer sb;
        msgpack_packer pk;
        msgpack_sbuffer_init(&sb);
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        msgpack_pack_array(&pk, 2);
        frame_pack_cstr(&pk, it->event_id);
        frame_pack_cstr(&pk, it->case_id);
        rc = put_packed(txn, st->dbi[STORE_DB_IDEM], key, klen, &sb, MDB_NOOVERWRITE);
        msgpack_sbuffer_destroy(&sb);
        if (rc)
            return rc;
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

/* Free space below which a failed write counts as a full disk. */
#define STORE_DISK_FULL_BELOW (1u << 20)

/* Classify a failed write; log it. */
static store_rc_t write_failed(store_t *st, int rc)
{
    if (rc == MDB_MAP_FULL) {
        char s1[32];
        log_error("store: map full at its maximum (%s); refusing writes until space is "
                  "freed or broker.map_max is raised", size_text(st->map_max, s1, sizeof s1));
        return STORE_FULL;
    }
    /* A disk that fills mid-write shows as ENOSPC, or as EIO when LMDB's pwrite
     * came back short; tell them apart by the space left. */
    struct statvfs vfs;
    if (rc == ENOSPC ||
        (rc == EIO && statvfs(st->dir, &vfs) == 0 &&
         (uint64_t)vfs.f_bavail * vfs.f_frsize < STORE_DISK_FULL_BELOW)) {
        log_error("store: disk full writing %s; refusing writes until space is freed", st->dir);
        return STORE_FULL;
    }
    log_error("store: write failed: %s", mdb_strerror(rc));
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
        store_txn_t t = {st, NULL, st->seq_event, st->seq_case, st->seq_assign, st->pend_n, 0};
        int rc = mdb_txn_begin(st->env, NULL, 0, &t.txn);
        if (rc)
            return write_failed(st, rc);
        rc = pend_flush(&t, 0);
        if (rc == 0)
            rc = fn(&t, ud);
        if (rc == 0) {
            rc = mdb_txn_commit(t.txn); /* frees the transaction either way */
            if (rc == 0) {
                st->seq_event = t.seq_event;
                st->seq_case = t.seq_case;
                st->seq_assign = t.seq_assign;
                pend_settle(st, t.pend_flushed, 1); /* written: out of memory */
                return STORE_OK;
            }
        } else {
            mdb_txn_abort(t.txn);
        }
        st->pend_n = t.pend_before; /* the events of the aborted transaction do not exist */
        pend_settle(st, t.pend_flushed, 0);
        int g = rc == MDB_MAP_FULL ? grow(st) : -1;
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

static int flush_fn(store_txn_t *t, void *ud)
{
    (void)ud;
    return pend_flush(t, 1);
}

store_rc_t store_flush_index(store_t *st)
{
    return store_write(st, flush_fn, NULL);
}

int store_each_case_event(store_txn_t *t, const char *case_id, store_each_fn fn, void *ud)
{
    size_t cl = strlen(case_id);
    int rc = store_each(t, STORE_DB_CASE_EVENTS, case_id, cl, 1, fn, ud);
    if (rc)
        return rc;
    /* Then the entries not written yet (those written in this transaction were seen above). */
    store_t *st = t->st;
    for (size_t i = 0; i < st->pend_n; i++) {
        if (st->pend[i].flushed || strcmp(st->pend[i].case_id, case_id) != 0)
            continue;
        int r = fn(ud, case_id, cl, st->pend[i].event_id, strlen(st->pend[i].event_id));
        if (r)
            return r == STORE_EACH_STOP ? 0 : r;
    }
    return 0;
}

store_rc_t store_read(store_t *st, store_fn fn, void *ud)
{
    /* Nothing of the loop's state is read here: jobs call this from their thread. */
    store_txn_t t = {st, NULL, 0, 0, 0, 0, 0};
    pthread_mutex_lock(&st->readers_mu);
    st->readers++;
    pthread_mutex_unlock(&st->readers_mu);
    int rc = mdb_txn_begin(st->env, NULL, MDB_RDONLY, &t.txn);
    if (rc) {
        pthread_mutex_lock(&st->readers_mu);
        st->readers--;
        pthread_mutex_unlock(&st->readers_mu);
        log_error("store: read failed: %s", mdb_strerror(rc));
        return STORE_IO;
    }
    rc = fn(&t, ud);
    mdb_txn_abort(t.txn);
    pthread_mutex_lock(&st->readers_mu);
    st->readers--;
    pthread_mutex_unlock(&st->readers_mu);
    if (rc && rc != MDB_NOTFOUND) {
        log_error("store: read failed: %s", mdb_strerror(rc));
        return STORE_IO;
    }
    return rc ? STORE_NOTFOUND : STORE_OK;
}

int store_get(store_txn_t *t, store_db_t db, const void *k, size_t kl, const void **v, size_t *vl)
{
    MDB_val key = {kl, (void *)k}, val;
    if (kl == 0 || kl > (size_t)mdb_env_get_maxkeysize(t->st->env))
        return MDB_NOTFOUND;
    int rc = mdb_get(t->txn, t->st->dbi[db], &key, &val);
    if (rc == 0) {
        *v = val.mv_data;
        *vl = val.mv_size;
    }
    return rc;
}

int store_put(store_txn_t *t, store_db_t db, const void *k, size_t kl, const void *v, size_t vl,
              int only_new)
{
    MDB_val key = {kl, (void *)k}, val = {vl, (void *)v};
    unsigned flags = only_new ? (DBS[db].flags & MDB_DUPSORT ? MDB_NODUPDATA : MDB_NOOVERWRITE) : 0;
    return mdb_put(t->txn, t->st->dbi[db], &key, &val, flags);
}

int store_del(store_txn_t *t, store_db_t db, const void *k, size_t kl, const void *v, size_t vl)
{
    MDB_val key = {kl, (void *)k}, val = {vl, (void *)v};
    int rc = mdb_del(t->txn, t->st->dbi[db], &key, v ? &val : NULL);
    return rc == MDB_NOTFOUND ? 0 : rc;
}

int store_each(store_txn_t *t, store_db_t db, const void *from, size_t fl, int only_key,
               store_each_fn fn, void *ud)
{
    MDB_cursor *cur;
    MDB_val k = {fl, (void *)from}, v;
    int rc = mdb_cursor_open(t->txn, t->st->dbi[db], &cur);
    if (rc)
        return rc;
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
    return rc == MDB_NOTFOUND ? 0 : rc;
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
    }
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
    MDB_val k = val_str(id), v;
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
    MDB_val k = val_str(g->case_id), v, last;
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
    MDB_val lk = val_str(g->last);
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
