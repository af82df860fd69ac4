/*
 * store_index.c — the case_events index, which lags the events by about a
 * second (CASE_INDEX_LAG_MS; store_int.h): joining an event to one of many
 * cases would dirty one random page per event, so entries wait in memory and
 * are written in bulk, one slice of the case-number range per write
 * transaction. Reads merge what waits (store_each_case_event); at open what
 * the last run did not write is rebuilt from the events.
 *
 * Each event's idempotency entry (agent NUL ref -> [event, case]) waits and is
 * written with its case_events entry: an agent's ids come in any order, so
 * writing each with its event dirtied one random page of `idem` per event —
 * measured, the largest part of every intake commit. Until written, the
 * writer finds it in memory (store_index_find); the event itself, which holds
 * agent and ref, is committed before its ack, so a crash loses no answer.
 */
#include "store_int.h"

#include <msgpack.h>
#include <stdlib.h>
#include <string.h>

#include "frame.h"
#include "log.h"
#include "util.h"

/* The number in an id ("case-0000000042" -> 42): its digits, read in order. */
static uint64_t id_number(const char *id)
{
    uint64_t n = 0;
    for (const char *c = id; *c; c++)
        if (*c >= '0' && *c <= '9')
            n = n * 10 + (uint64_t)(*c - '0');
    return n;
}

static int pair_eq(void *ctx, uintptr_t val, const void *pair, size_t len)
{
    const struct pend_entry *p = &((const store_t *)ctx)->pend[val - 1];
    return p->pair_len == len && !p->dropped && memcmp(p->pair, pair, len) == 0;
}

void store_index_init(store_t *st)
{
    hmap_init(&st->by_pair, pair_eq, st);
}

static void slot_put(store_t *st, size_t n)
{
    const struct pend_entry *e = &st->pend[n];
    if (e->pair_len && !e->dropped)
        hmap_put(&st->by_pair, e->pair, e->pair_len, (uintptr_t)(n + 1));
}

/* After pend moved or shrank: the pairs again, with room for pend_cap. */
static void slots_rebuild(store_t *st)
{
    hmap_clear(&st->by_pair);
    hmap_reserve(&st->by_pair, st->pend_cap);
    for (size_t i = 0; i < st->pend_n; i++)
        slot_put(st, i);
}

int store_index_add(store_t *st, size_t txn, uint64_t seq, const char *case_id,
                    const char *event_id, const char *pair, size_t pair_len)
{
    int waits = pair && pair_len > 0 && pair_len <= STORE_PAIR_MAX;
    pthread_mutex_lock(&st->pend_mu);
    int grown = st->pend_n == st->pend_cap;
    if (grown) {
        st->pend_cap = st->pend_cap ? st->pend_cap * 2 : 1024;
        st->pend = xrealloc(st->pend, st->pend_cap * sizeof *st->pend);
    }
    struct pend_entry *e = &st->pend[st->pend_n++];
    e->seq = seq;
    e->case_no = id_number(case_id);
    e->added_txn = txn;
    e->flushed_txn = 0;
    util_fmt(e->case_id, sizeof e->case_id, "%s", case_id);
    util_fmt(e->event_id, sizeof e->event_id, "%s", event_id);
    e->pair_len = waits ? (unsigned char)pair_len : 0;
    e->dropped = 0;
    if (waits)
        memcpy(e->pair, pair, pair_len);
    pthread_mutex_unlock(&st->pend_mu);
    if (grown)
        slots_rebuild(st);
    else
        slot_put(st, st->pend_n - 1);
    return waits;
}

int store_index_find(store_t *st, const char *pair, size_t pair_len, char *event_id, char *case_id)
{
    if (pair_len == 0 || pair_len > STORE_PAIR_MAX)
        return 0;
    uintptr_t e = hmap_get(&st->by_pair, pair, pair_len);
    if (!e)
        return 0;
    memcpy(event_id, st->pend[e - 1].event_id, STORE_ID_MAX);
    memcpy(case_id, st->pend[e - 1].case_id, STORE_ID_MAX);
    return 1;
}

void store_index_drop_case(store_txn_t *t, const char *case_id)
{
    store_t *st = t->st;
    int any = 0;
    pthread_mutex_lock(&st->pend_mu);
    for (size_t i = 0; i < st->pend_n; i++) {
        struct pend_entry *e = &st->pend[i];
        if (e->flushed_txn || strcmp(e->case_id, case_id) != 0)
            continue;
        e->flushed_txn = t->id; /* gone from case_events in this transaction's view */
        e->dropped = 1;
        t->pend_flushed++;
        any = 1;
    }
    pthread_mutex_unlock(&st->pend_mu);
    if (any)
        slots_rebuild(st);
}

int store_del_case_events(store_txn_t *t, const char *case_id)
{
    store_index_drop_case(t, case_id);
    return store_del(t, STORE_DB_CASE_EVENTS, case_id, strlen(case_id), NULL, 0);
}

void store_index_rollback(store_t *st, size_t pend_before)
{
    pthread_mutex_lock(&st->pend_mu);
    st->pend_n = pend_before;
    pthread_mutex_unlock(&st->pend_mu);
    slots_rebuild(st);
}

int store_txn_index_add(store_txn_t *t, const char *case_id, const char *event_id,
                        const char *pair, size_t pair_len)
{
    if (store_index_add(t->st, t->id, id_number(event_id), case_id, event_id, pair, pair_len))
        return 0;
    /* a pair too long to wait: its idempotency entry is written now */
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    store_idem_pack(&sb, event_id, case_id);
    int rc = store_put(t, STORE_DB_IDEM, pair, pair_len, sb.data, sb.size, 1);
    msgpack_sbuffer_destroy(&sb);
    return rc;
}

int store_txn_idem_get(store_txn_t *t, const char *pair, size_t pair_len, char *event_id,
                       char *case_id)
{
    if (store_index_find(t->st, pair, pair_len, event_id, case_id))
        return 0; /* still waiting in memory */
    const void *v;
    size_t vl;
    int rc = store_get(t, STORE_DB_IDEM, pair, pair_len, &v, &vl);
    return rc ? rc : store_idem_unpack(v, vl, event_id, case_id);
}

void store_idem_pack(msgpack_sbuffer *sb, const char *event_id, const char *case_id)
{
    msgpack_packer pk;
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    msgpack_pack_array(&pk, 2);
    frame_pack_cstr(&pk, event_id);
    frame_pack_cstr(&pk, case_id);
}

int store_idem_unpack(const void *v, size_t vl, char *event_id, char *case_id)
{
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    int ok = 0;
    if (msgpack_unpack_next(&u, v, vl, NULL) == MSGPACK_UNPACK_SUCCESS &&
        u.data.type == MSGPACK_OBJECT_ARRAY && u.data.via.array.size == 2) {
        const msgpack_object *e = &u.data.via.array.ptr[0], *c = &u.data.via.array.ptr[1];
        if (e->type == MSGPACK_OBJECT_STR && c->type == MSGPACK_OBJECT_STR &&
            e->via.str.size < STORE_ID_MAX && c->via.str.size < STORE_ID_MAX) {
            memcpy(event_id, e->via.str.ptr, e->via.str.size);
            event_id[e->via.str.size] = '\0';
            memcpy(case_id, c->via.str.ptr, c->via.str.size);
            case_id[c->via.str.size] = '\0';
            ok = 1;
        }
    }
    msgpack_unpacked_destroy(&u);
    return ok ? 0 : STORE_CORRUPTED;
}

int store_index_rebuild(MDB_txn *txn, store_t *st)
{
    uint64_t upto;
    int rc = store_u64_read(txn, st->meta, "case_events.upto", &upto);
    if (rc || upto >= st->seq_event)
        return rc;
    char from[STORE_ID_MAX];
    util_fmt(from, sizeof from, "ev-%012llu", (unsigned long long)(upto + 1));
    MDB_cursor *cur, *idx;
    MDB_val k = store_val_str(from), v;
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
        char case_id[STORE_ID_MAX] = "", ev[STORE_ID_MAX], agent[STORE_PAIR_MAX] = "",
             ref[STORE_PAIR_MAX] = "", pair[STORE_PAIR_MAX];
        const char *s;
        size_t n;
        if (msgpack_unpack_next(&u, v.mv_data, v.mv_size, NULL) == MSGPACK_UNPACK_SUCCESS) {
            if (frame_str(frame_map_get(&u.data, "case"), &s, &n) && n < sizeof case_id) {
                memcpy(case_id, s, n);
                case_id[n] = '\0';
            }
            if (frame_str(frame_map_get(&u.data, "agent"), &s, &n) && n < sizeof agent) {
                memcpy(agent, s, n);
                agent[n] = '\0';
            }
            if (frame_str(frame_map_get(&u.data, "ref"), &s, &n) && n < sizeof ref) {
                memcpy(ref, s, n);
                ref[n] = '\0';
            }
        }
        msgpack_unpacked_destroy(&u);
        size_t pl = store_pair_key(pair, sizeof pair, agent, ref);
        if (!agent[0] || !ref[0] || !pl) {
            rc = MDB_CORRUPTED; /* an event without its agent's id cannot be answered twice */
            break;
        }
        if (!case_id[0] || k.mv_size >= sizeof ev || k.mv_size <= 3) {
            rc = MDB_CORRUPTED;
            break;
        }
        memcpy(ev, k.mv_data, k.mv_size);
        ev[k.mv_size] = '\0';
        /* the sweep writes out of event order: some entries after upto are there */
        MDB_val ck = store_val_str(case_id), cv = store_val_str(ev);
        int have = mdb_cursor_get(idx, &ck, &cv, MDB_GET_BOTH);
        if (have == 0)
            continue;
        if (have != MDB_NOTFOUND) {
            rc = have;
            break;
        }
        store_index_add(st, 0, id_number(ev), case_id, ev, pair, pl);
    }
    mdb_cursor_close(idx);
    mdb_cursor_close(cur);
    if (rc == MDB_NOTFOUND)
        rc = 0;
    if (!rc && st->pend_n)
        log_info("store: %zu recent events to add to the case and idempotency indexes", st->pend_n);
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
int store_index_flush(store_txn_t *t, int force)
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
    int rc = 0;
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    pthread_mutex_lock(&st->pend_mu); /* readers in other threads see the marks at once */
    for (size_t i = 0; i < st->pend_n; i++) {
        struct pend_entry *e = &st->pend[i];
        if (e->flushed_txn)
            continue; /* by an earlier call in this transaction, or kept for a reader */
        if (!all && (e->case_no < from || e->case_no >= below)) {
            if (e->seq - 1 < upto)
                upto = e->seq - 1;
            continue;
        }
        MDB_val cs = store_val_str(e->case_id), ev = store_val_str(e->event_id);
        rc = mdb_put(t->txn, st->dbi[STORE_DB_CASE_EVENTS], &cs, &ev, MDB_NODUPDATA);
        if (rc == 0 && e->pair_len) {
            /* (KEYEXIST: rebuilt after an older carehubd, which wrote it with the event) */
            msgpack_sbuffer_clear(&sb);
            store_idem_pack(&sb, e->event_id, e->case_id);
            MDB_val pk = {e->pair_len, e->pair}, pv = {sb.size, sb.data};
            rc = mdb_put(t->txn, st->dbi[STORE_DB_IDEM], &pk, &pv, MDB_NOOVERWRITE);
        }
        if (rc && rc != MDB_KEYEXIST)
            break; /* (MAP_FULL) the marks set so far are cleared on abort */
        rc = 0;
        e->flushed_txn = t->id;
        t->pend_flushed++; /* counted at once: store_index_settle must see every mark */
        n++;
    }
    pthread_mutex_unlock(&st->pend_mu);
    msgpack_sbuffer_destroy(&sb);
    if (rc || n == 0)
        return rc;
    return store_u64_write(t->txn, st->meta, "case_events.upto", upto);
}

/* After write transaction `txn`: committed, drop the entries written to
 * case_events (by it, or kept from earlier ones) unless a short read is open,
 * whose snapshot may predate them; aborted, unmark those it wrote. */
void store_index_settle(store_t *st, size_t txn, size_t n_flushed, int committed)
{
    int keep = 0;
    if (committed) {
        pthread_mutex_lock(&st->readers_mu);
        keep = st->short_readers > 0;
        pthread_mutex_unlock(&st->readers_mu);
    }
    if (!n_flushed && (!committed || keep || !st->pend_kept))
        return;
    pthread_mutex_lock(&st->pend_mu);
    size_t w = 0;
    int revived = 0;
    for (size_t i = 0; i < st->pend_n; i++) {
        struct pend_entry *e = &st->pend[i];
        if (committed && e->flushed_txn && !keep)
            continue;
        if (!committed && e->flushed_txn == txn) {
            e->flushed_txn = 0;
            revived |= e->dropped;
            e->dropped = 0;
        }
        if (w != i)
            st->pend[w] = *e;
        w++;
    }
    int moved = w != st->pend_n;
    st->pend_n = w;
    if (committed)
        st->pend_kept = keep;
    pthread_mutex_unlock(&st->pend_mu);
    if (moved || revived)
        slots_rebuild(st); /* entries moved, or dropped ones are back */
}

static int flush_fn(store_txn_t *t, void *ud)
{
    (void)ud;
    return store_index_flush(t, 1);
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
    /* Then the entries not in this transaction's case_events: in the writer's own,
     * those not written yet; in a read, those whose event its snapshot has and
     * whose entry it does not. Copied under the lock, then visited. */
    store_t *st = t->st;
    size_t n = 0, cap = 0;
    char (*ids)[STORE_ID_MAX] = NULL;
    pthread_mutex_lock(&st->pend_mu);
    for (size_t i = 0; i < st->pend_n; i++) {
        const struct pend_entry *e = &st->pend[i];
        int listed = t->write ? e->flushed_txn == 0
                              : e->added_txn <= t->id && !(e->flushed_txn && e->flushed_txn <= t->id);
        if (!listed || strcmp(e->case_id, case_id) != 0)
            continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 16;
            ids = xrealloc(ids, cap * sizeof *ids);
        }
        memcpy(ids[n++], e->event_id, STORE_ID_MAX);
    }
    pthread_mutex_unlock(&st->pend_mu);
    for (size_t i = 0; i < n; i++) {
        int r = fn(ud, case_id, cl, ids[i], strlen(ids[i]));
        if (r) {
            free(ids);
            return r == STORE_EACH_STOP ? 0 : r;
        }
    }
    free(ids);
    return 0;
}
