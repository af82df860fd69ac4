/*
 * store.h — durable storage of events and cases in one LMDB environment.
 *
 * The data model (named databases, keys, values) is documented in
 * docs/data-model.md. In short:
 *
 *   meta         "format" → u32 format version; "seq.event", "seq.case" → u64 counters
 *   events       event id → msgpack map {id, agent, ref, type, at, received, case, severity, body}
 *   idem         agent "\0" message id → msgpack [event id, case id]     (idempotency)
 *   cases        case id → msgpack map {id, type, status, opened, updated, severity, events}
 *   case_events  case id → event id (MDB_DUPSORT; ids sort in arrival order)
 *   open_cases   type "\0" child id → case id                          (joining)
 *   assignments, case_assign, pending, deadlines, outbox, outcomes, case_log:
 *                routing and escalation (assign.c; see docs/data-model.md)
 *
 * Durability: the environment is opened with MDB_NOMETASYNC (not MDB_NOSYNC,
 * not MDB_WRITEMAP): a commit syncs its data pages and writes the meta page
 * that makes them current without syncing it. The store stays consistent
 * after any crash; a commit is durable once the next commit or store_sync()
 * returned. store_write() (and store_put_events()) sync before returning, so
 * STORE_OK means on disk; the loop's turn (turn.c) uses store_write_nosync()
 * and runs store_sync() in a thread of its own while it writes the next turn,
 * acknowledging only after that sync. Group commit: a whole batch (a whole
 * turn) in one write transaction.
 *
 * Errors: every function returns a store_rc_t; store_strerror() names it.
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
    STORE_DB_COUNT
} store_db_t;

typedef enum {
    STORE_OK = 0,
    STORE_FULL,      /* the map is at its configured maximum, or the disk is full */
    STORE_IO,        /* LMDB or the file system failed; see the log */
    STORE_NOTFOUND,  /* the record asked for does not exist */
} store_rc_t;

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

/* What happened to one event of a batch. */
typedef enum {
    STORE_ITEM_PENDING = 0, /* input: not yet processed */
    STORE_ITEM_STORED,      /* new: stored and joined to a case */
    STORE_ITEM_DUPLICATE,   /* (agent, ref) was seen before: ids of the first time */
    STORE_ITEM_REFUSED,     /* input `refuse` was set and it was not a duplicate: nothing stored */
} store_item_status_t;

typedef struct {
    /* input — pointers must stay valid during the call */
    const char *agent;       /* the sending agent's id */
    const char *ref;         /* the agent's message id: the idempotency key */
    const char *type;        /* event type */
    int64_t at;              /* observed, ms since epoch */
    int64_t received;        /* received by the broker, ms since epoch */
    const char *child_id;    /* body.child.id or NULL: events of one type about one child join */
    int severity;            /* 0 low .. 3 critical */
    const char *body;        /* the body, packed msgpack */
    size_t body_len;
    int refuse;              /* the body is invalid: answer a duplicate, store nothing new */
    /* output */
    store_item_status_t status;
    char event_id[STORE_ID_MAX];
    char case_id[STORE_ID_MAX];
} store_event_t;

/* Called inside the batch's transaction for each newly STORED event, so that
 * what the event causes (assignments, notifications) commits with it. Returns
 * 0 or an LMDB error code from the store_* calls, which aborts the batch. It
 * may run more than once for the same event when the map had to grow (the
 * earlier run's writes were rolled back): keep outside effects idempotent. */
typedef int (*store_stored_fn)(store_txn_t *t, store_event_t *item, void *ud);

/*
 * Store a batch in one write transaction. Each item comes back DUPLICATE (a
 * retry, also within the same batch), REFUSED or STORED. On STORE_FULL or
 * STORE_IO nothing of the batch is stored and every item's status is left
 * PENDING. When the map fills, it is grown (doubling, up to map_max) and the
 * batch retried.
 */
store_rc_t store_put_events(store_t *st, store_event_t *items, size_t n, store_stored_fn on_stored,
                            void *ud);

/* The same inside a write transaction the caller runs (the loop's turn,
 * turn.h): 0 or an LMDB code, which must abort the transaction (every item is
 * then to be treated as PENDING). Re-runnable like every store_fn. */
int store_txn_put_events(store_txn_t *t, store_event_t *items, size_t n, store_stored_fn on_stored,
                         void *ud);

/* ---- transactions for other modules ---------------------------------------
 *
 * store_write() runs fn inside one write transaction and commits it when fn
 * returns 0; when the map fills it is grown and fn run again from the start
 * (so fn must not have effects outside the transaction that a second run
 * would repeat wrongly). fn returns 0 or the LMDB code a store_* call gave.
 * store_read() runs fn in a read-only transaction. Values seen inside fn live
 * only until it returns: copy what you keep.
 *
 * store_get/put/del/each return 0, MDB_NOTFOUND (get: absent), or another
 * LMDB error code, which fn should return unchanged.
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
/* only_new: refuse (MDB_KEYEXIST) to overwrite a key, or to add a duplicate value. */
int store_put(store_txn_t *t, store_db_t db, const void *k, size_t kl, const void *v, size_t vl,
              int only_new);
/* Delete a key (v NULL: all its values) or one value of a dupsort key. Absent is not an error. */
int store_del(store_txn_t *t, store_db_t db, const void *k, size_t kl, const void *v, size_t vl);

/* Visit entries in key order: with only_key, the values of key `from`;
 * otherwise from the first key >= from (from NULL/0: the first). fn returns
 * 0 to go on, STORE_EACH_STOP to stop (store_each then returns 0), or any
 * other value to stop with that error, which store_each returns as it is:
 * LMDB's codes are negative and the errno codes it also gives (EINVAL,
 * ENOMEM, …) positive, so no error can pass for "stop". */
#define STORE_EACH_STOP (-1000001)
typedef int (*store_each_fn)(void *ud, const void *k, size_t kl, const void *v, size_t vl);
int store_each(store_txn_t *t, store_db_t db, const void *from, size_t fl, int only_key,
               store_each_fn fn, void *ud);

/* Visit the event ids of a case, oldest first (fn gets k = case id, v = event
 * id). The case_events index is written in bulk, up to a second behind the
 * events; this merges what is not written yet. */
int store_each_case_event(store_txn_t *t, const char *case_id, store_each_fn fn, void *ud);

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

/* The next id of a kind, made inside the transaction (rolled back with it). */
typedef enum { STORE_SEQ_ASSIGNMENT = 0 } store_seq_t;
void store_next_id(store_txn_t *t, store_seq_t seq, char *out /* STORE_ID_MAX */);

/* Copy out the stored record of an event (msgpack map, see above). *out is the
 * caller's to free(). */
store_rc_t store_get_event(store_t *st, const char *event_id, char **out, size_t *len);

/* Copy out a case record (msgpack map). *out is the caller's to free(). */
store_rc_t store_get_case(store_t *st, const char *case_id, char **out, size_t *len);

/* privacy.key_file (key, 32 bytes) or privacy: off (NULL). With a key, event
 * bodies and agencies' notes are sealed at rest (XChaCha20-Poly1305, the
 * record's id as associated data) and the child-id join uses a keyed BLAKE2b
 * hash, with keys derived from this one. The store remembers a check value of
 * the key: -1 with a message in err when the store was sealed with another
 * key, or sealed and now opened without one. */
int store_set_privacy(store_t *st, const uint8_t *key, char *err, size_t errlen);

/* Seal m (associated data ad) into out when privacy is on; else copy it. A
 * sealed value starts with a 0 byte, which no msgpack map does. */
int store_txn_seal(store_txn_t *t, const char *ad, const void *m, size_t mlen, msgpack_sbuffer *out);
/* Open what store_txn_seal wrote (plain values pass through). MDB_CORRUPTED
 * when it does not open with this key. */
int store_txn_open(store_txn_t *t, const char *ad, const void *v, size_t vl, msgpack_sbuffer *out);

/* Append the (opened) msgpack body of the event record `rec` (a decoded
 * events value) to out. 0, or MDB_CORRUPTED when it cannot be opened (another
 * key, or changed bytes). */
int store_txn_event_body(store_txn_t *t, const char *event_id, const msgpack_object *rec,
                         msgpack_sbuffer *out);

/* Open an existing store read-only (verification of a stopped broker's data or
 * of an mdb_copy). NULL with a message in err. */
store_t *store_open_readonly(const char *dir, char *err, size_t errlen);

/* Name of a named database ("events", …). */
const char *store_db_name(store_db_t db);

/* Current map size in bytes (for logs and tests). */
uint64_t store_map_size(const store_t *st);
/* Bytes of the map in use (pages × page size), for metrics. */
uint64_t store_map_used(const store_t *st);
/* Entries in a named database. */
uint64_t store_txn_entries(store_txn_t *t, store_db_t db);

/* Severity names, index 0..3: low, normal, high, critical. -1 when unknown. */
int store_severity_parse(const char *s, size_t n);
const char *store_severity_name(int sev);

/* A case's status, "status" in its record: open until it is resolved (every
 * assignment final, one resolved) or closed (quiet close); both are final. */
typedef enum {
    STORE_CASE_OPEN = 0,
    STORE_CASE_RESOLVED,
    STORE_CASE_CLOSED,
    STORE_CASE_STATUS_COUNT
} store_case_status_t;
const char *store_case_status_name(store_case_status_t s); /* NULL when unknown */
int store_case_status_parse(const char *s, size_t n);      /* -1 when unknown */
/* 1 when a case may move from -> to (open -> resolved | closed). */
int store_case_may_move(store_case_status_t from, store_case_status_t to);

#endif
