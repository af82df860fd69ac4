/*
 * store_int.h — what the store's files share, and nothing outside them sees.
 *
 * The store is two files over one LMDB environment:
 *   store.c        the storage: the environment, its named databases, write and
 *                  read transactions (group commit, map growth, syncs), get, put,
 *                  delete and walks, sealing; it knows LMDB and no record;
 *   store_index.c  the case_events and idempotency entries that lag the events
 *                  (written in bulk).
 * store.h is the manual for the rest of the broker; the records are above it
 * (case.c, assign*.c, trail.c), and no LMDB code crosses store.h (store_rc_of).
 */
#ifndef CAREHUB_STORE_INT_H
#define CAREHUB_STORE_INT_H

#include <lmdb.h>
#include <msgpack.h>
#include <pthread.h>
#include <sodium.h>
#include <stdint.h>

#include "hmap.h"
#include "seal.h"
#include "store.h"

#define CASE_INDEX_LAG_MS 1000
#define CASE_INDEX_SLICES 8
#define CASE_INDEX_SMALL 256 /* pending entries written at once without slicing */
#define CASE_INDEX_MAX_PENDING 65536 /* a bound on memory (about 16 MB) */
#define STORE_PAIR_MAX 130 /* an idempotency key that waits: two ids of 64 bytes and a NUL */

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
     * after it that are missing are rebuilt from the events. Reads merge.
     * The idempotency entry (agent NUL ref -> event, case) of each event waits
     * with it and is written with it, for the same reason (an agent's ids are
     * random or interleaved: one page per event): until then the writer finds it
     * here, through `by_pair` (hmap.h: the pair -> entry number + 1). */
    struct pend_entry {
        uint64_t seq;                 /* the event's number */
        uint64_t case_no;             /* the case's number (its id's digits) */
        size_t added_txn;             /* the write transaction that stored the event (0: before open) */
        size_t flushed_txn;           /* the one that wrote this entry to case_events; 0: none yet */
        char case_id[STORE_ID_MAX];
        char event_id[STORE_ID_MAX];
        unsigned char pair_len;       /* the idempotency key's length; 0: written with the event */
        unsigned char dropped;        /* the case was purged here: never written, never found */
        char pair[STORE_PAIR_MAX];    /* the idempotency key: agent NUL ref (store_pair_key) */
    } *pend;
    size_t pend_n, pend_cap;
    hmap_t by_pair;                   /* pair -> entry number + 1; written and read by the writer */
    /* The writer thread (turn.c) adds, writes and drops entries while the loop
     * reads them (store_each_case_event in a read transaction): pend, pend_n and
     * the entries' fields change only under pend_mu. */
    pthread_mutex_t pend_mu;
    int pend_kept;                    /* written entries were kept for a reader */
    int64_t sweep_next;               /* monotonic ms: the next slice is due */
    int sweep_slice;                  /* 0 .. CASE_INDEX_SLICES - 1 */
    uint64_t sweep_bound[CASE_INDEX_SLICES];          /* slice k: case numbers from bound[k] to bound[k+1] */
    /* privacy.key_file: event bodies sealed with XChaCha20-Poly1305 (AD: the
     * event id); the child-id join key is a keyed BLAKE2b hash. Both keys are
     * derived from the configured one (crypto_kdf). */
    int privacy;
    unsigned char body_key[SEAL_KEYBYTES];
    unsigned char join_key[crypto_generichash_KEYBYTES];
    unsigned char ref_key[crypto_generichash_KEYBYTES]; /* clients' refs: store_txn_ref_key */
    unsigned char trail_key[crypto_generichash_KEYBYTES]; /* the trail's chain: store_txn_chain_hash */
    int sealed;                       /* meta privacy.check is there: written with a key */
    int readonly;                     /* store_open_readonly */
    /* Read transactions open now, in any thread (job.c runs long reads off the
     * loop): the map may not be resized while one is (mdb_env_set_mapsize). */
    pthread_mutex_t readers_mu;
    int readers;
    int short_readers;                /* of them, those of store_read (not store_read_long): while
                                       * one is open, written entries stay in pend (its snapshot
                                       * may not have them in case_events yet) */
    int opened;                       /* mdb_env_open succeeded */
};

struct store_txn {
    store_t *st;
    MDB_txn *txn;
    uint64_t seq_event, seq_case, seq_assign; /* counters as this transaction moves them */
    size_t pend_before;  /* st->pend_n when the transaction began (rolled back to on abort) */
    size_t pend_flushed; /* entries written to case_events here (marked `flushed_txn`) */
    size_t id;           /* mdb_txn_id: a write transaction's own, a read's snapshot */
    int write;           /* 1 in store_write's transaction */
};

/* ---- shared by the store's files ---------------------------------------------- */

/* A NUL-terminated string as an LMDB value (without its NUL). */
MDB_val store_val_str(const char *s);
/* The u64 under key in db (0 when absent), and writing it. 0 or an LMDB code. */
int store_u64_read(MDB_txn *txn, MDB_dbi dbi, const char *key, uint64_t *out);
int store_u64_write(MDB_txn *txn, MDB_dbi dbi, const char *key, uint64_t x);

/* store_rc_of: an LMDB code (or errno) as the store's store_rc_t; store codes,
 * 0 and STORE_EACH_STOP pass unchanged. Every exported function maps its result
 * with it; an I/O-class code is logged here with LMDB's text. */
int store_rc_of(int rc);

/* store_index.c: the case_events and idempotency entries waiting in memory.
 * store_index_add: pair (agent NUL ref, store_pair_key) of at most STORE_PAIR_MAX
 * bytes waits too and is written with the entry; 0 when it does not fit (the
 * caller then writes it itself). pair may be NULL (pair_len 0). */
int store_index_add(store_t *st, size_t txn, uint64_t seq, const char *case_id, const char *event_id,
                    const char *pair, size_t pair_len);
/* The waiting idempotency entry of pair: 1 and its event and case copied out
 * (STORE_ID_MAX each), or 0. Only in the thread of the write transaction. */
int store_index_find(store_t *st, const char *pair, size_t pair_len, char *event_id, char *case_id);
/* store_index_init: the empty pair table, at open. */
void store_index_init(store_t *st);
/* In a write transaction: the waiting entries of case_id will not be written
 * (store_del_case_events: a purge), once this commits. */
void store_index_drop_case(store_txn_t *t, const char *case_id);
/* An aborted write transaction: its events (entries from pend_before on) never were. */
void store_index_rollback(store_t *st, size_t pend_before);
/* The idempotency value: msgpack [event id, case id] (reading one: store.h). */
void store_idem_pack(msgpack_sbuffer *sb, const char *event_id, const char *case_id);
/* At open: the events after meta "case_events.upto" are not in the index yet. */
int store_index_rebuild(MDB_txn *txn, store_t *st);
/* In every write transaction: write the slice due (force: everything). */
int store_index_flush(store_txn_t *t, int force);
/* After the transaction: drop what it wrote (committed) or mark it unwritten. */
void store_index_settle(store_t *st, size_t txn, size_t n_flushed, int committed);

#endif
