/* hmap.c — the one hash table; see hmap.h. */
#include "hmap.h"

#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

_Static_assert(sizeof(((hmap_t *)0)->key) == crypto_shorthash_KEYBYTES, "SipHash key size");

#define HMAP_MIN_SLOTS 64

static uint64_t hash_of(const hmap_t *m, const void *key, size_t len)
{
    unsigned char h[crypto_shorthash_BYTES];
    uint64_t x;
    crypto_shorthash(h, key, len, m->key);
    memcpy(&x, h, sizeof x);
    return x;
}

void hmap_init(hmap_t *m, hmap_eq_fn eq, void *ctx)
{
    memset(m, 0, sizeof *m);
    m->eq = eq;
    m->ctx = ctx;
    randombytes_buf(m->key, sizeof m->key);
}

void hmap_free(hmap_t *m)
{
    free(m->slots);
    m->slots = NULL;
    m->mask = 0;
    m->count = 0;
}

/* Where key is, or the empty slot where it would go (the table has room). */
static size_t find_slot(const hmap_t *m, uint64_t h, const void *key, size_t len)
{
    size_t i = (size_t)h & m->mask;
    for (; m->slots[i].val; i = (i + 1) & m->mask)
        if (m->slots[i].hash == h && m->eq(m->ctx, m->slots[i].val, key, len))
            break;
    return i;
}

static void resize(hmap_t *m, size_t nslots)
{
    hmap_slot_t *old = m->slots;
    size_t old_n = old ? m->mask + 1 : 0;
    m->slots = xcalloc(nslots, sizeof *m->slots);
    m->mask = nslots - 1;
    for (size_t i = 0; i < old_n; i++) {
        if (!old[i].val)
            continue;
        size_t j = (size_t)old[i].hash & m->mask;
        while (m->slots[j].val)
            j = (j + 1) & m->mask;
        m->slots[j] = old[i];
    }
    free(old);
}

void hmap_reserve(hmap_t *m, size_t n)
{
    size_t want = HMAP_MIN_SLOTS;
    while (want < 2 * n)
        want *= 2;
    if (!m->slots || want > m->mask + 1)
        resize(m, want);
}

uintptr_t hmap_get(const hmap_t *m, const void *key, size_t len)
{
    if (!m->count)
        return 0;
    return m->slots[find_slot(m, hash_of(m, key, len), key, len)].val;
}

uintptr_t hmap_put(hmap_t *m, const void *key, size_t len, uintptr_t val)
{
    if (!m->slots || 2 * (m->count + 1) > m->mask + 1)
        hmap_reserve(m, m->count + 1);
    uint64_t h = hash_of(m, key, len);
    hmap_slot_t *s = &m->slots[find_slot(m, h, key, len)];
    uintptr_t old = s->val;
    if (!old)
        m->count++;
    s->hash = h;
    s->val = val;
    return old;
}

uintptr_t hmap_del(hmap_t *m, const void *key, size_t len)
{
    if (!m->count)
        return 0;
    size_t i = find_slot(m, hash_of(m, key, len), key, len);
    uintptr_t old = m->slots[i].val;
    if (!old)
        return 0;
    /* Backward shift: pull later entries of the run into the hole when the hole
     * lies between their home slot and where they are. */
    for (size_t j = i;;) {
        j = (j + 1) & m->mask;
        if (!m->slots[j].val)
            break;
        size_t home = (size_t)m->slots[j].hash & m->mask;
        if (((j - home) & m->mask) >= ((j - i) & m->mask)) {
            m->slots[i] = m->slots[j];
            i = j;
        }
    }
    m->slots[i].val = 0;
    m->count--;
    return old;
}

void hmap_clear(hmap_t *m)
{
    if (m->slots)
        memset(m->slots, 0, (m->mask + 1) * sizeof *m->slots);
    m->count = 0;
}

size_t hmap_count(const hmap_t *m)
{
    return m->count;
}

uintptr_t hmap_next(const hmap_t *m, size_t *pos)
{
    if (!m->slots)
        return 0;
    for (size_t n = m->mask + 1; *pos < n; (*pos)++)
        if (m->slots[*pos].val)
            return m->slots[(*pos)++].val;
    return 0;
}
