/*
 * trail.h — the tamper-evident trail (issue 5, first part).
 *
 * Every change to a case — an event joined, a case record written, an
 * assignment made or changed, a notice queued, delivered or given up, an
 * outcome stored or received — appends one record to the named database
 * `trail`, in the same transaction as the change. Records are numbered (key:
 * 8-byte big-endian sequence) and each carries the chain hash of the record
 * before it: BLAKE2b-256, keyed with the trail key (derived from the data key)
 * when privacy is on, so that whoever can write data.mdb without the key cannot
 * write a chain that verifies (store_txn_chain_hash; counters["trail.keyed_from"]
 * says from which record, for stores from before); the head (last sequence
 * number and its hash) is kept in `trail_head`, and can be anchored outside. A record that names a stored object (an event, case or
 * assignment) also carries the hash of the object's bytes as written.
 *
 * trail_verify() walks the chain and then every event, case and assignment:
 * a changed byte in a trail record breaks the chain at the next record; a
 * deleted record leaves a gap; a truncated trail no longer ends at the head;
 * a changed object no longer matches the hash of its last trail record. The
 * first problem is named.
 *
 * Records hold ids and hashes, never names or free text (the trail is for
 * supervisors and is kept longer than the data); the one exception is a
 * silence's records (silence.h), whose `ref` is the supervisor's reason,
 * which PROTOCOL §10 wants in the trail (it names no child).
 */
#ifndef CAREHUB_TRAIL_H
#define CAREHUB_TRAIL_H

#include <stddef.h>
#include <stdint.h>

#include "store.h"

/* Append a record. `db`/`obj_id`/`obj` name the object written (db < 0 and
 * obj NULL when none); `ref` is an extra id (a webhook id, an agent) or NULL.
 * Returns 0 or another store_rc_t. */
int trail_append(store_txn_t *t, const char *case_id, const char *kind, const char *actor, int db,
                 const char *obj_id, const void *obj, size_t objlen, const char *ref);

/* Same, reading the object's current bytes from `db` inside the transaction. */
int trail_append_stored(store_txn_t *t, const char *case_id, const char *kind, const char *actor,
                        store_db_t db, const char *obj_id, const char *ref);

/* Visit the trail records of one case, oldest first, through the per-case
 * index (trail_last, trail_prev): as many reads as the case has records, not
 * a walk of the whole trail. fn gets each packed record; it returns 0 to go
 * on, else that code stops the walk. 0, STORE_CORRUPTED (a broken chain), or
 * another store_rc_t. */
int trail_each_of_case(store_txn_t *t, const char *case_id,
                       int (*fn)(void *ud, const void *rec, size_t len), void *ud);

/* A store written before the per-case index: build it from the trail (one
 * write transaction, at start; nothing to do when the index is there). 0 or -1. */
int trail_index_rebuild(store_t *st);

typedef struct {
    unsigned long long records;   /* trail records walked */
    unsigned long long objects;   /* events, cases and assignments checked */
    unsigned long long keyed_from;     /* the first record keyed (0: an unsealed store) */
    unsigned long long unchecked_from; /* 0, or the first record whose chain was not
                                          checked: it is keyed and the key was not given */
    int anchor_checked;           /* the anchor given matched its record */
    unsigned long long index_entries; /* audit_verify: index entries checked (audit.h) */
    char problem[512];            /* the first problem found, "" when intact */
} trail_report_t;

/* A head taken earlier and kept outside the store (`carehub trail-head`): the
 * record's number and its chain hash, the value the next record carries in
 * `prev`. Whoever can rewrite the store (even with the key) cannot rewrite
 * the records up to an anchor kept elsewhere without verify telling. */
typedef struct {
    unsigned long long seq;
    unsigned char hash[32];
} trail_anchor_t;

/* Verify the whole store (read transaction): the chain (its keyed part only
 * when the store was given its key: otherwise r->unchecked_from says where
 * checking stopped), the key mark, the anchor when one is given (NULL: none),
 * then every event, case, assignment and silence against its last trail record. 0
 * when intact; 1 with r->problem naming the first broken record or object; a
 * store_rc_t on a read failure. */
int trail_verify(store_t *st, const trail_anchor_t *anchor, trail_report_t *r);

/* The current head (record number and chain hash): 0, STORE_NOTFOUND when the
 * trail is empty, or another store_rc_t. */
int trail_txn_head(store_txn_t *t, trail_anchor_t *head);

/* Key epochs (carehubd rekey, rekey.h): the records up to `until` were chained
 * with an earlier data key's trail key, kept in counters["trail.epochs"],
 * sealed with the current data key, so that verify with the current key checks
 * the whole chain (and an anchor taken before the rekey still matches). */
typedef struct {
    uint64_t until;          /* the last record chained with this key */
    unsigned char key[32];   /* that trail key (crypto_kdf context 5 of the old data key) */
} trail_epoch_t;

/* The epochs of a store opened with its key, oldest first: 0 (n = 0: none),
 * STORE_CORRUPTED when they do not open. Free with trail_epochs_free. */
int trail_txn_epochs(store_txn_t *t, trail_epoch_t **out, size_t *n);
void trail_epochs_free(trail_epoch_t **e, size_t *n);

/* In a store rekeyed to a new key (t's), whose trail was copied as it was: add
 * the epoch of the records so far (old_trail_key) to `before` (the old store's
 * epochs), write the key mark anew under the new key, and append a `rekey`
 * record (actor "rekey", ref "old:FP new:FP": the keys' fingerprints,
 * store_key_fingerprint). 0 or a store_rc_t. */
int trail_txn_rekey(store_txn_t *t, const trail_epoch_t *before, size_t n,
                    const unsigned char old_trail_key[32], const char *old_fp, const char *new_fp);

/* At start, with privacy on: mark from which record on the chain is keyed (the
 * head's next, 1 for a new store), with a MAC of the mark itself, once. 0 or -1. */
int trail_key_mark(store_t *st, int privacy);

#endif
