/* session.c — per-connection state, a chained hash table keyed by routing id; see session.h. */
#include "session.h"

#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

#define BUCKETS 4096

struct session_table {
    session_t *bucket[BUCKETS];
    size_t count;
    session_t *all;    /* list of every session: walks cost O(sessions), not O(buckets) */
    unsigned char hkey[crypto_shorthash_KEYBYTES]; /* SipHash key: peers cannot aim at one chain */
};

session_table_t *session_table_new(void)
{
    session_table_t *t = xcalloc(1, sizeof *t);
    randombytes_buf(t->hkey, sizeof t->hkey);
    return t;
}

void session_table_destroy(session_table_t **pt)
{
    if (!pt || !*pt)
        return;
    session_table_t *t = *pt;
    for (size_t i = 0; i < BUCKETS; i++) {
        session_t *s = t->bucket[i];
        while (s) {
            session_t *n = s->next;
            free(s);
            s = n;
        }
    }
    free(t);
    *pt = NULL;
}

static size_t slot(const session_table_t *t, const void *rid, size_t len)
{
    unsigned char h[crypto_shorthash_BYTES];
    crypto_shorthash(h, rid, len, t->hkey);
    uint64_t x;
    memcpy(&x, h, sizeof x);
    return (size_t)(x % BUCKETS);
}

static void all_unlink(session_table_t *t, session_t *s)
{
    if (s->all_prev)
        s->all_prev->all_next = s->all_next;
    else
        t->all = s->all_next;
    if (s->all_next)
        s->all_next->all_prev = s->all_prev;
}

/* Drop the least recently heard session to keep the table bounded. */
static void evict_oldest(session_table_t *t)
{
    session_t **victim = NULL;
    for (size_t i = 0; i < BUCKETS; i++)
        for (session_t **p = &t->bucket[i]; *p; p = &(*p)->next)
            if (!victim || (*p)->last_heard < (*victim)->last_heard)
                victim = p;
    if (victim) {
        session_t *s = *victim;
        *victim = s->next;
        all_unlink(t, s);
        free(s);
        t->count--;
    }
}

session_t *session_find(session_table_t *t, const void *rid, size_t len)
{
    if (len > SESSION_ROUTING_MAX)
        len = SESSION_ROUTING_MAX; /* ZeroMQ routing ids are at most 255 bytes */
    for (session_t *s = t->bucket[slot(t, rid, len)]; s; s = s->next)
        if (s->rid_len == len && memcmp(s->rid, rid, len) == 0)
            return s;
    return NULL;
}

session_t *session_get(session_table_t *t, const void *rid, size_t len, int64_t now)
{
    session_t *found = session_find(t, rid, len);
    if (found)
        return found;
    if (len > SESSION_ROUTING_MAX)
        len = SESSION_ROUTING_MAX;
    size_t b = slot(t, rid, len);
    if (t->count >= SESSION_MAX)
        evict_oldest(t);
    session_t *s = xcalloc(1, sizeof *s);
    memcpy(s->rid, rid, len);
    s->rid_len = len;
    s->last_heard = now;
    s->next = t->bucket[b];
    t->bucket[b] = s;
    s->all_next = t->all;
    if (t->all)
        t->all->all_prev = s;
    t->all = s;
    t->count++;
    return s;
}

size_t session_count(const session_table_t *t)
{
    return t->count;
}

void session_table_sweep(session_table_t *t, int64_t now, int64_t idle_drop_ms,
                         void (*visit)(session_t *s, void *ud), void *ud)
{
    for (size_t i = 0; i < BUCKETS; i++) {
        session_t **p = &t->bucket[i];
        while (*p) {
            session_t *s = *p;
            if (now - s->last_heard > idle_drop_ms) {
                *p = s->next;
                all_unlink(t, s);
                free(s);
                t->count--;
                continue;
            }
            if (visit)
                visit(s, ud);
            p = &s->next;
        }
    }
}

void session_each(session_table_t *t, void (*fn)(session_t *s, void *ud), void *ud)
{
    for (session_t *s = t->all; s; s = s->all_next)
        fn(s, ud);
}
