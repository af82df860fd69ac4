/*
 * store.h — the storage: one LMDB environment, its named databases, write
 * transactions with group commit and map growth, syncs, get/put/del/walks,
 * sealing. It knows LMDB and no record: each record kind has its module above
 * it (case.h: events and cases; assign.h: assignments, deadlines, outbox,
 * outcomes; trail.h: the trail), and docs/data-model.md lists them all. The
 * storage's own entries: meta ("format", key check), idem and case_events
 * (written in bulk: store_txn_index_add), counters.
 *
 * Durability: the environment is opened with MDB_NOMETASYNC (not MDB_NOSYNC,
 * not MDB_WRITEMAP): a commit syncs its data pages and writes the meta page
 * that makes them current without syncing it. The store stays consistent
 * after any crash; a commit is durable once the next commit or store_sync()
 * returned. store_write() syncs before returning, so
 * STORE_OK means on disk; the loop's turn (turn.c) uses store_write_nosync()
 * and runs store_sync() in a thread of its own while it writes the next turn,
 * acknowledging only after that sync. Group commit: a whole batch (a whole
 * turn) in one write transaction.
 *
 * Errors: 0 or a negative store_rc_t, everywhere; store_strerror() names it.
 * The store is single-threaded (the broker loop owns it).
 */
#ifndef CAREHUB_STORE_H
#define CAREHUB_STORE_H

#include <msgpack.h>
#include <stddef.h>
#include <stdint.h>

typedef struct store store_t;

/* One transaction, handed to a store_fn by store_write()/store_read(). */
typedef struct store_txn store_txn_t;

/* The named databases other modules reach through store_get/put/del/each. */
typedef enum {
    STORE_DB_EVENTS = 0,
    STORE_DB_IDEM,
    STORE_DB_CASES,
    STORE_DB_CASE_EVENTS,  /* dupsort; lags: read it with store_each_case_event() */
    STORE_DB_OPEN_CASES,
    STORE_DB_ASSIGNMENTS,
    STORE_DB_CASE_ASSIGN,  /* dupsort */
    STORE_DB_PENDING,
    STORE_DB_DEADLINES,
    STORE_DB_OUTBOX,
    STORE_DB_OUTCOMES,
    STORE_DB_CASE_LOG,     /* dupsort */
    STORE_DB_QUIET,        /* case id → when it closes quietly (8 bytes big-endian ms) */
    STORE_DB_TRAIL,        /* 8-byte big-endian sequence → trail record (trail.h) */
    STORE_DB_TRAIL_HEAD,   /* "head" → 8-byte sequence + 32-byte hash of the last record */
    STORE_DB_DELIVERED,    /* agent NUL assignment id → "": first delivery recorded in the trail */
    STORE_DB_TRAIL_LAST,   /* case id → 8-byte sequence of the case's newest trail record */
    STORE_DB_TRAIL_PREV,   /* 8-byte sequence → 8-byte sequence of the same case's record before it */
    STORE_DB_ACK_DUE,      /* ack_by (8 bytes big-endian ms) + assignment id → "": unacknowledged */
    STORE_DB_COUNTERS,     /* name → u64 (host order): "assignments.open" (not final); "deadlines.typed" → "" */
    STORE_DB_REGISTER,     /* child key → register entry (register.h) */
    STORE_DB_SILENCES,     /* silence id → silence record (silence.h) */
    STORE_DB_PHONE,        /* phone acknowledgement: links, reply codes (phone.h) */
    STORE_DB_COUNT
} store_db_t;

/*
 * The store's one error contract: 0, or a negative store_rc_t. LMDB's codes
 * (and the errno values it also returns) are mapped here, at the boundary:
 * nothing above the store sees an MDB_* code. A store_fn returns these too,
 * and store_each's callbacks STORE_EACH_STOP to stop early.
 */
typedef enum {
    STORE_OK = 0,
    STORE_NOTFOUND = -1,  /* the record asked for does not exist */
    STORE_KEYEXIST = -2,  /* only_new: the key, or the dupsort value, is there already */
    STORE_CORRUPTED = -3, /* a record does not decode or open (a damaged store, another key) */
    STORE_BADVALUE = -4,  /* a key or value of a size the store cannot hold */
    STORE_FULL = -5,      /* the map is at its configured maximum, or the disk is full */
    STORE_IO = -6,        /* LMDB or the file system failed; see the log */
    STORE_ABORTED = -7,   /* a store_fn refused its own writes (a broken invariant; logged) */
    STORE_MAPFULL = -8,   /* inside a write: the map must grow. store_write grows it and runs
                             fn again, or says STORE_FULL at map_max; it never returns this */
} store_rc_t;
#define STORE_RC_MIN STORE_MAPFULL

const char *store_strerror(store_rc_t rc);

/* Longest event or case id the store makes, with its NUL. */
#define STORE_ID_MAX 32

/*
 * Open (creating if needed, mode 0700) the environment in `dir`. The map starts
 * at `map_size` bytes (or the existing file's size if larger) and may grow by
 * doubling up to `map_max`. Returns NULL with a message in err on failure.
 */
store_t *store_open(const char *dir, uint64_t map_size, uint64_t map_max, char *err, size_t errlen);

/* Close and null the pointer; safe on NULL and twice. */
void store_close(store_t **st);

/* Clear the reader slots of processes that died holding a read transaction
 * (mdb_reader_check): a stale slot pins old pages, so the file only grows.
 * Done by store_open and every broker.heartbeat by the loop. Returns the number
 * cleared (logged when > 0), -1 on error (logged). */
int store_reader_check(store_t *st);

/* ---- transactions for other modules ---------------------------------------
 *
 * store_write() runs fn inside one write transaction and commits it when fn
 * returns 0; when the map fills it is grown and fn run again from the start
 * (so fn must not have effects outside the transaction that a second run
 * would repeat wrongly). fn returns 0 or the store_rc_t a store_* call gave.
 * store_read() runs fn in a read-only transaction. Values seen inside fn live
 * only until it returns: copy what you keep.
 *
 * store_get/put/del/each return 0, STORE_NOTFOUND (get: absent), or another
 * store_rc_t, which fn should return unchanged.
 */
typedef int (*store_fn)(store_txn_t *t, void *ud);
store_rc_t store_write(store_t *st, store_fn fn, void *ud);
store_rc_t store_read(store_t *st, store_fn fn, void *ud);
/* The same for a long read off the loop (a verify): it never reads the case
 * events index, so the index's written entries need not wait for it to end. */
store_rc_t store_read_long(store_t *st, store_fn fn, void *ud);

/* store_write() without the sync: committed and consistent, durable only once
 * store_sync() (or another commit) returned. */
store_rc_t store_write_nosync(store_t *st, store_fn fn, void *ud);

/* Make every commit so far durable (mdb_env_sync: fdatasync of the data
 * file). Safe to call from another thread while the loop writes: it touches
 * nothing of the store_t but the LMDB environment's file. 0, or -1 (logged). */
int store_sync(store_t *st);

int store_get(store_txn_t *t, store_db_t db, const void *k, size_t kl, const void **v, size_t *vl);
/* only_new: refuse (STORE_KEYEXIST) to overwrite a key, or to add a duplicate value. */
int store_put(store_txn_t *t, store_db_t db, const void *k, size_t kl, const void *v, size_t vl,
              int only_new);
/* Delete a key (v NULL: all its values) or one value of a dupsort key. Absent is not an error. */
int store_del(store_txn_t *t, store_db_t db, const void *k, size_t kl, const void *v, size_t vl);

/* Visit entries in key order: with only_key, the values of key `from`;
 * otherwise from the first key >= from (from NULL/0: the first). fn returns
 * 0 to go on, STORE_EACH_STOP to stop (store_each then returns 0), or any
 * other value (a store_rc_t) to stop with that error, which store_each
 * returns as it is. */
#define STORE_EACH_STOP (-1000001)
typedef int (*store_each_fn)(void *ud, const void *k, size_t kl, const void *v, size_t vl);
int store_each(store_txn_t *t, store_db_t db, const void *from, size_t fl, int only_key,
               store_each_fn fn, void *ud);

/* Visit the event ids of a case, oldest first (fn gets k = case id, v = event
 * id). The case_events index is written in bulk, up to a second behind the
 * events; this merges what is not written yet. */
int store_each_case_event(store_txn_t *t, const char *case_id, store_each_fn fn, void *ud);

/* ---- the idempotency and case-events entries of new events ------------------
 *
 * Each new event has an idempotency entry (`idem`: its agent NUL ref -> [event
 * id, case id]) and a case_events entry. Both wait in memory and are written in
 * bulk, a slice of the cases per commit (store_index.c says why); these reach
 * them wherever they are. */

/* In a write transaction: event_id (numbered by its digits) joined case_id; pair
 * (store_pair_key: agent NUL ref) is its idempotency key. 0 or a store_rc_t. */
int store_txn_index_add(store_txn_t *t, const char *case_id, const char *event_id,
                        const char *pair, size_t pair_len);

/* The idempotency entry of pair, waiting or written: 0 with the event and case
 * ids (STORE_ID_MAX each) copied out, STORE_NOTFOUND, or another store_rc_t. */
int store_txn_idem_get(store_txn_t *t, const char *pair, size_t pair_len, char *event_id,
                       char *case_id);

/* An idem value, msgpack [event id, case id], read back (STORE_ID_MAX each):
 * 0, or STORE_CORRUPTED. */
int store_idem_unpack(const void *v, size_t vl, char *event_id, char *case_id);

/* 1 when `counters` holds the mark name (a once-only rewrite at start was done:
 * its writer sets it in the same transaction), 0 when not, -1 when the store
 * cannot be read. A read transaction: checking costs no write and no sync. */
int store_marked(store_t *st, const char *name);

/* Write the case index now (at close; tests). */
store_rc_t store_flush_index(store_t *st);
/* Delete a case's case_events entries, written and waiting (a purge): nothing
 * of the case is written later, and its waiting idempotency entries go too. */
int store_del_case_events(store_txn_t *t, const char *case_id);

/* Copy an id read from the store (v, vl: not NUL-terminated) into out as a C
 * string. 0, or -1 when it does not fit (a corrupted record). */
int store_copy_id(const void *v, size_t vl, char *out, size_t size);

/* A two-part key "a NUL b" (idem: agent, message id; delivered: agent,
 * assignment) into buf; its length, 0 when it does not fit. */
size_t store_pair_key(char *buf, size_t size, const char *a, const char *b);

/* The next id of a kind, made inside the transaction (rolled back with it):
 * "ev-" + 12 digits, "case-" + 10, "as-" + 12; ids sort in the order made. */
typedef enum { STORE_SEQ_ASSIGNMENT = 0, STORE_SEQ_EVENT, STORE_SEQ_CASE } store_seq_t;
void store_next_id(store_txn_t *t, store_seq_t seq, char *out /* STORE_ID_MAX */);

/* privacy.key_file (key, 32 bytes) or privacy: off (NULL). With a key, event
 * bodies and agencies' notes are sealed at rest (XChaCha20-Poly1305, the
 * record's id as associated data) and the child-id join uses a keyed BLAKE2b
 * hash, with keys derived from this one. The store remembers a check value of
 * the key: -1 with a message in err when the store was sealed with another
 * key, or sealed and now opened without one. On a store_open_readonly store
 * nothing is written, and no key is accepted on a sealed store (a verify
 * without the key: what it cannot check, it says). */
int store_set_privacy(store_t *st, const uint8_t *key, char *err, size_t errlen);

/* A key's fingerprint for logs and the trail: the hex of the first 8 bytes of
 * its check value (meta "privacy.check"), never the key nor anything derived
 * that seals or hashes. */
#define STORE_KEY_FP_MAX 17
void store_key_fingerprint(const uint8_t *key, char out[STORE_KEY_FP_MAX]);

/* The trail key of a data key (crypto_kdf context 5): what store_txn_chain_hash
 * keys the chain with (rekey.c keeps the old one for the records it keyed). */
void store_derive_trail_key(const uint8_t *key, unsigned char out[32]);

/* 1 when the store was written with a privacy key (its check is stored),
 * whether or not this process was given it (a verify without the key). */
int store_sealed(const store_t *st);

/* The trail's chain hash of data into out: BLAKE2b-256 keyed with the trail key
 * (crypto_kdf context 5 of the data key) when privacy is on, so that only a
 * holder of the key can write a chain that verifies; else plain BLAKE2b-256.
 * Returns 1 when keyed. */
int store_txn_chain_hash(store_txn_t *t, unsigned char out[32], const void *data, size_t len);

/* 1 when privacy is on (store_set_privacy with a key). */
int store_txn_privacy(const store_txn_t *t);

/* The key a child's id joins under: with privacy on, the hex of its keyed
 * BLAKE2b hash (16 bytes) in buf, so that no child id is stored; else the id
 * itself. buf has STORE_CHILD_KEY_MAX bytes. */
#define STORE_CHILD_KEY_MAX 33
const char *store_txn_child_key(store_txn_t *t, const char *child_id, char *buf);

/* The form a client's ref (its own message id, which may name a child: a
 * school's "abs:" + hash of school, student and date) is stored in: with
 * privacy on "h:" + the hex of its keyed BLAKE2b hash (16 bytes) — in the
 * idempotency key, the event record and the trail — so that no ref is kept
 * in clear and none can be found by trying ids; else the ref itself. buf has
 * STORE_REF_KEY_MAX bytes. */
#define STORE_REF_KEY_MAX 35
const char *store_txn_ref_key(store_txn_t *t, const char *ref, char *buf);

/* A box of m under the body key, bound to ad (common/seal.h: nonce, ciphertext,
 * tag), appended to out. Privacy must be on. */
void store_txn_seal_box(store_txn_t *t, const char *ad, const void *m, size_t mlen,
                        msgpack_sbuffer *out);
/* Open such a box into out (appended): 0, or STORE_CORRUPTED (another key or ad,
 * changed bytes, or privacy off). */
int store_txn_open_box(store_txn_t *t, const char *ad, const void *box, size_t blen,
                       msgpack_sbuffer *out);

/* Seal m (associated data ad) into out when privacy is on; else copy it. A
 * sealed value starts with a 0 byte, which no msgpack map does. */
int store_txn_seal(store_txn_t *t, const char *ad, const void *m, size_t mlen, msgpack_sbuffer *out);
/* Open what store_txn_seal wrote (plain values pass through). STORE_CORRUPTED
 * when it does not open with this key. */
int store_txn_open(store_txn_t *t, const char *ad, const void *v, size_t vl, msgpack_sbuffer *out);

/* Append the (opened) msgpack body of the event record `rec` (a decoded
 * events value) to out. 0, or STORE_CORRUPTED when it cannot be opened (another
 * key, or changed bytes). */
int store_txn_event_body(store_txn_t *t, const char *event_id, const msgpack_object *rec,
                         msgpack_sbuffer *out);

/* Open an existing store read-only (verification of a stopped broker's data or
 * of an mdb_copy). NULL with a message in err. */
store_t *store_open_readonly(const char *dir, char *err, size_t errlen);

/* A consistent copy of the whole store into the existing directory dest
 * (mdb_env_copy2 with MDB_CP_COMPACT: one read transaction, free pages left
 * out), while a broker may be writing it. Writes dest/data.mdb only. 0, or -1
 * with a message in err. */
int store_copy(store_t *st, const char *dest, char *err, size_t errlen);

/* For the index checks of a verify (case.h, assign.h): "DB: the entry KEY WHAT"
 * in problem, the key shown printable; returns STORE_EACH_STOP to end the walk. */
int store_entry_problem(char *problem, size_t size, store_db_t db, const void *k, size_t kl,
                        const char *what);

/* 1 when a named database holds several values a key (MDB_DUPSORT). */
int store_db_dupsort(store_db_t db);

/* Name of a named database ("events", …). */
const char *store_db_name(store_db_t db);

/* Current map size in bytes (for logs and tests). */
uint64_t store_map_size(const store_t *st);
/* Bytes of the map in use (pages × page size), for metrics. */
uint64_t store_map_used(const store_t *st);
/* Entries in a named database. */
uint64_t store_txn_entries(store_txn_t *t, store_db_t db);

#endif
