/* budget.c — per-agent budgets; see budget.h. */
#include "budget.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "hmap.h"
#include "util.h"

typedef struct {
    char agent[65];
    double tokens;
    int64_t refilled_ms;       /* when tokens was last brought up to date */
    int64_t refusal_window_ms; /* when the last refusal record was written; -1: none yet */
    uint64_t coalesced;        /* refusals counted since, not written */
    char last_id[65];          /* the query last decided: a rerun of its transaction */
    int last_written;          /* gets the same answer */
    uint64_t last_coalesced;
} entry_t;

struct budget {
    pthread_mutex_t mu;
    hmap_t by_agent; /* agent id -> entry_t *, which it owns */
};

static int agent_eq(void *ctx, uintptr_t val, const void *key, size_t len)
{
    (void)ctx;
    const entry_t *e = (const entry_t *)val;
    return strlen(e->agent) == len && memcmp(e->agent, key, len) == 0;
}

budget_t *budget_new(void)
{
    budget_t *b = xcalloc(1, sizeof *b);
    pthread_mutex_init(&b->mu, NULL);
    hmap_init(&b->by_agent, agent_eq, NULL);
    return b;
}

void budget_destroy(budget_t **pb)
{
    if (!pb || !*pb)
        return;
    budget_t *b = *pb;
    size_t pos = 0;
    for (uintptr_t e; (e = hmap_next(&b->by_agent, &pos));)
        free((entry_t *)e);
    hmap_free(&b->by_agent);
    pthread_mutex_destroy(&b->mu);
    free(b);
    *pb = NULL;
}

/* The agent's entry, made full on first use (under b->mu). */
static entry_t *entry(budget_t *b, const char *agent, int64_t now_ms)
{
    size_t len = strlen(agent);
    if (len >= sizeof ((entry_t *)0)->agent)
        len = sizeof ((entry_t *)0)->agent - 1;
    entry_t *e = (entry_t *)hmap_get(&b->by_agent, agent, len);
    if (e)
        return e;
    e = xcalloc(1, sizeof *e);
    memcpy(e->agent, agent, len);
    e->tokens = BUDGET_QUERY_BURST;
    e->refilled_ms = now_ms;
    e->refusal_window_ms = -1;
    hmap_put(&b->by_agent, e->agent, len, (uintptr_t)e);
    return e;
}

int budget_query(budget_t *b, const char *agent, int64_t now_ms, int64_t *retry_ms)
{
    pthread_mutex_lock(&b->mu);
    entry_t *e = entry(b, agent, now_ms);
    if (now_ms > e->refilled_ms) {
        e->tokens += (double)(now_ms - e->refilled_ms) * BUDGET_QUERY_PER_S / 1000.0;
        if (e->tokens > BUDGET_QUERY_BURST)
            e->tokens = BUDGET_QUERY_BURST;
    }
    e->refilled_ms = now_ms; /* a clock that went back refills nothing */
    int ok = e->tokens >= 1.0;
    if (ok)
        e->tokens -= 1.0;
    else
        *retry_ms = (int64_t)((1.0 - e->tokens) * 1000.0 / BUDGET_QUERY_PER_S) + 1;
    pthread_mutex_unlock(&b->mu);
    return ok;
}

int budget_refusal(budget_t *b, const char *agent, const char *query_id, int64_t now_ms,
                   uint64_t *coalesced)
{
    *coalesced = 0;
    if (!b)
        return 1;
    pthread_mutex_lock(&b->mu);
    entry_t *e = entry(b, agent, now_ms);
    if (strcmp(e->last_id, query_id) == 0) { /* the same refusal, its transaction run again */
        *coalesced = e->last_coalesced;
        int again = e->last_written;
        pthread_mutex_unlock(&b->mu);
        return again;
    }
    util_fmt(e->last_id, sizeof e->last_id, "%s", query_id);
    int write = e->refusal_window_ms < 0 || now_ms - e->refusal_window_ms >= BUDGET_REFUSAL_WINDOW_MS ||
                now_ms < e->refusal_window_ms;
    if (write) {
        *coalesced = e->coalesced;
        e->coalesced = 0;
        e->refusal_window_ms = now_ms;
    } else {
        e->coalesced++;
    }
    e->last_written = write;
    e->last_coalesced = *coalesced;
    pthread_mutex_unlock(&b->mu);
    return write;
}
