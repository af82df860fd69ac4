/*
 * hook_queue.c — where webhook messages wait (see hook.c for their states): the
 * id index (duplicate check, hook_destroy's walk), the due-time heap of QUEUED
 * messages, and the channels: transfers in flight against the channel's
 * `concurrency`, the FIFO of BLOCKED messages, and the summary log lines.
 */
#include "hook_int.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "util.h"

#define HOOK_LOG_EVERY_MS 10000          /* retries and deliveries: one summary line per this */

static const char *const state_names[] = {"queued", "blocked", "in_flight", "finished"};

void hook_set_state(hook_msg_t *m, msg_state_t s)
{
    if (m->state != s)
        log_debug("hook: %s %s -> %s", m->id, state_names[m->state], state_names[s]);
    m->state = s;
}

/* ---- id index ----------------------------------------------------------- */

static int id_eq(void *ctx, uintptr_t val, const void *id, size_t len)
{
    (void)ctx;
    const hook_msg_t *m = (const hook_msg_t *)val;
    return strlen(m->id) == len && memcmp(m->id, id, len) == 0;
}

void hook_ids_init(hook_t *h)
{
    hmap_init(&h->by_id, id_eq, NULL);
}

hook_msg_t *hook_ids_find(const hook_t *h, const char *id)
{
    return (hook_msg_t *)hmap_get(&h->by_id, id, strlen(id));
}

void hook_ids_add(hook_t *h, hook_msg_t *m)
{
    hmap_put(&h->by_id, m->id, strlen(m->id), (uintptr_t)m);
}

void hook_ids_remove(hook_t *h, hook_msg_t *m)
{
    hmap_del(&h->by_id, m->id, strlen(m->id));
}

/* ---- due-time heap ------------------------------------------------------ */

static int heap_less(const hook_msg_t *a, const hook_msg_t *b)
{
    return a->due_ms < b->due_ms || (a->due_ms == b->due_ms && a->seq < b->seq);
}

static void heap_set(hook_t *h, size_t i, hook_msg_t *m)
{
    h->heap[i] = m;
    m->heap_i = i;
}

void hook_heap_push(hook_t *h, hook_msg_t *m)
{
    if (h->heap_len == h->heap_cap) {
        h->heap_cap = h->heap_cap ? h->heap_cap * 2 : 64;
        h->heap = xrealloc(h->heap, h->heap_cap * sizeof *h->heap);
    }
    size_t i = h->heap_len++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!heap_less(m, h->heap[parent]))
            break;
        heap_set(h, i, h->heap[parent]);
        i = parent;
    }
    heap_set(h, i, m);
    hook_set_state(m, MSG_QUEUED);
}

hook_msg_t *hook_heap_pop(hook_t *h)
{
    hook_msg_t *top = h->heap[0];
    hook_msg_t *last = h->heap[--h->heap_len];
    size_t i = 0;
    if (h->heap_len > 0) {
        for (;;) {
            size_t c = 2 * i + 1;
            if (c >= h->heap_len)
                break;
            if (c + 1 < h->heap_len && heap_less(h->heap[c + 1], h->heap[c]))
                c++;
            if (!heap_less(h->heap[c], last))
                break;
            heap_set(h, i, h->heap[c]);
            i = c;
        }
        heap_set(h, i, last);
    }
    return top;
}

/* ---- channels ----------------------------------------------------------- */

hook_chan_t *hook_chan_get(hook_t *h, const char *id, int limit)
{
    if (limit <= 0)
        limit = CONFIG_CHANNEL_CONCURRENCY;
    for (hook_chan_t *c = h->chans; c; c = c->next)
        if (strcmp(c->id, id) == 0) {
            c->limit = limit; /* the configuration of the newest message */
            return c;
        }
    hook_chan_t *c = xcalloc(1, sizeof *c);
    c->id = xstrdup(id);
    c->limit = limit;
    c->next = h->chans;
    h->chans = c;
    return c;
}

void hook_chan_block(hook_chan_t *c, hook_msg_t *m)
{
    m->bnext = NULL;
    if (c->blocked_tail)
        c->blocked_tail->bnext = m;
    else
        c->blocked_head = m;
    c->blocked_tail = m;
    hook_set_state(m, MSG_BLOCKED);
}

/* A slot of `c` came free: its oldest blocked message goes back to the heap (still due). */
void hook_chan_unblock_one(hook_t *h, hook_chan_t *c)
{
    hook_msg_t *m = c->blocked_head;
    if (!m)
        return;
    c->blocked_head = m->bnext;
    if (!c->blocked_head)
        c->blocked_tail = NULL;
    m->bnext = NULL;
    hook_heap_push(h, m);
}

/* Open the channel's summary window if none is open. */
void hook_chan_log_window(hook_chan_t *c)
{
    if (c->log_next == 0)
        c->log_next = util_mono_ms() + HOOK_LOG_EVERY_MS;
}

/* One line per channel and window: what was delivered and retried meanwhile. */
void hook_chan_log_summaries(hook_t *h)
{
    int64_t now = util_mono_ms();
    for (hook_chan_t *c = h->chans; c; c = c->next) {
        if (c->log_next == 0 || now < c->log_next)
            continue;
        if (c->retried)
            log_info("hook: channel %s: %" PRIu64 " delivered, %" PRIu64 " more attempts failed "
                     "and will be retried in the last %d s (the last: %s)",
                     c->id, c->delivered, c->retried, HOOK_LOG_EVERY_MS / 1000, c->last_retry);
        else if (c->delivered)
            log_info("hook: channel %s: %" PRIu64 " delivered in the last %d s", c->id,
                     c->delivered, HOOK_LOG_EVERY_MS / 1000);
        c->log_next = c->delivered || c->retried ? now + HOOK_LOG_EVERY_MS : 0;
        c->delivered = c->retried = 0;
        c->retry_shown = 0;
    }
}

void hook_chans_free(hook_t *h)
{
    while (h->chans) {
        hook_chan_t *c = h->chans;
        h->chans = c->next;
        free(c->id);
        free(c);
    }
}
