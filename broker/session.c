/* session.c — per-connection state in a table keyed by routing id (hmap.h); see session.h. */
#include "session.h"

#include <stdlib.h>
#include <string.h>

#include "hmap.h"
#include "util.h"

struct session_table {
    hmap_t by_rid;     /* routing id -> session_t * */
    session_t *all;    /* list of every session: walks cost O(sessions) */
};

static int rid_eq(void *ctx, uintptr_t val, const void *rid, size_t len)
{
    (void)ctx;
    const session_t *s = (const session_t *)val;
    return s->rid_len == len && memcmp(s->rid, rid, len) == 0;
}

session_table_t *session_table_new(void)
{
    session_table_t *t = xcalloc(1, sizeof *t);
    hmap_init(&t->by_rid, rid_eq, NULL);
    return t;
}

void session_table_destroy(session_table_t **pt)
{
    if (!pt || !*pt)
        return;
    session_table_t *t = *pt;
    while (t->all) {
        session_t *n = t->all->all_next;
        free(t->all);
        t->all = n;
    }
    hmap_free(&t->by_rid);
    free(t);
    *pt = NULL;
}

/* Forget s: out of the table and the list, freed. */
static void drop(session_table_t *t, session_t *s)
{
    hmap_del(&t->by_rid, s->rid, s->rid_len);
    if (s->all_prev)
        s->all_prev->all_next = s->all_next;
    else
        t->all = s->all_next;
    if (s->all_next)
        s->all_next->all_prev = s->all_prev;
    free(s);
}

/* Drop the least recently heard session to keep the table bounded. */
static void evict_oldest(session_table_t *t)
{
    session_t *victim = NULL;
    for (session_t *s = t->all; s; s = s->all_next)
        if (!victim || s->last_heard < victim->last_heard)
            victim = s;
    if (victim)
        drop(t, victim);
}

session_t *session_find(session_table_t *t, const void *rid, size_t len)
{
    if (len > SESSION_ROUTING_MAX)
        len = SESSION_ROUTING_MAX; /* ZeroMQ routing ids are at most 255 bytes */
    return (session_t *)hmap_get(&t->by_rid, rid, len);
}

session_t *session_get(session_table_t *t, const void *rid, size_t len, int64_t now)
{
    session_t *found = session_find(t, rid, len);
    if (found)
        return found;
    if (len > SESSION_ROUTING_MAX)
        len = SESSION_ROUTING_MAX;
    if (hmap_count(&t->by_rid) >= SESSION_MAX)
        evict_oldest(t);
    session_t *s = xcalloc(1, sizeof *s);
    memcpy(s->rid, rid, len);
    s->rid_len = len;
    s->last_heard = now;
    hmap_put(&t->by_rid, s->rid, len, (uintptr_t)s);
    s->all_next = t->all;
    if (t->all)
        t->all->all_prev = s;
    t->all = s;
    return s;
}

size_t session_count(const session_table_t *t)
{
    return hmap_count(&t->by_rid);
}

void session_table_sweep(session_table_t *t, int64_t now, int64_t idle_drop_ms,
                         void (*visit)(session_t *s, void *ud), void *ud)
{
    for (session_t *s = t->all, *next; s; s = next) {
        next = s->all_next;
        if (now - s->last_heard > idle_drop_ms)
            drop(t, s);
        else if (visit)
            visit(s, ud);
    }
}

void session_each(session_table_t *t, void (*fn)(session_t *s, void *ud), void *ud)
{
    for (session_t *s = t->all; s; s = s->all_next)
        fn(s, ud);
}
