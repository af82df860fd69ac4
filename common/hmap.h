/*
 * hmap.h — the one hash table of the broker and the agents.
 *
 * Open addressing with linear probing, grown at half full, deletion by backward
 * shift (no tombstones, so a table that sees many adds and removes never needs a
 * rebuild). The hash is keyed SipHash (libsodium's crypto_shorthash) with a key
 * drawn at hmap_init: a peer that chooses the keys (routing ids, client refs)
 * cannot aim them all at one run of slots.
 *
 * The table stores, per entry, the key's hash and one value — a pointer, or an
 * index + 1 — and not the key itself: the caller keeps each key with its value
 * (a session holds its routing id, a message its id) and tells the table how to
 * compare through `eq`. So a table costs 16 bytes an entry and no allocation per
 * entry. Value 0 means "absent" and cannot be stored.
 *
 * Not thread-safe: one owner, or the owner's lock. Embed an hmap_t where it is
 * used; its fields are private.
 */
#ifndef CAREHUB_HMAP_H
#define CAREHUB_HMAP_H

#include <stddef.h>
#include <stdint.h>

/* Nonzero when `val`'s key is the `len` bytes at `key`; `ctx` is hmap_init's. */
typedef int (*hmap_eq_fn)(void *ctx, uintptr_t val, const void *key, size_t len);

typedef struct hmap_slot {
    uint64_t hash;
    uintptr_t val; /* 0: empty */
} hmap_slot_t;

typedef struct hmap {
    hmap_slot_t *slots;
    size_t mask;  /* slots - 1; slots is a power of two, or 0 before the first put */
    size_t count;
    hmap_eq_fn eq;
    void *ctx;
    unsigned char key[16]; /* crypto_shorthash_KEYBYTES */
} hmap_t;

/* An empty table comparing keys with eq(ctx, ...). Allocates nothing yet. */
void hmap_init(hmap_t *m, hmap_eq_fn eq, void *ctx);

/* Release the slots (not the values: walk them with hmap_next first if they are
 * owned). The table may be used again after hmap_init. */
void hmap_free(hmap_t *m);

/* The value stored under key, or 0. */
uintptr_t hmap_get(const hmap_t *m, const void *key, size_t len);

/* Store val (nonzero) under key; returns the value it replaces, or 0 when the
 * key is new. Aborts on out-of-memory like xmalloc (util.h). */
uintptr_t hmap_put(hmap_t *m, const void *key, size_t len, uintptr_t val);

/* Remove key; returns the value it held, or 0 when absent. */
uintptr_t hmap_del(hmap_t *m, const void *key, size_t len);

/* Remove every entry, keeping the slots for reuse. */
void hmap_clear(hmap_t *m);

/* Make room for n entries without growing on the way (rebuilds of known size). */
void hmap_reserve(hmap_t *m, size_t n);

size_t hmap_count(const hmap_t *m);

/* Walk: start with *pos = 0; each call returns the next value and moves *pos,
 * or 0 at the end. No put or del during a walk. */
uintptr_t hmap_next(const hmap_t *m, size_t *pos);

#endif
