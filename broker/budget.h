/*
 * budget.h — per-agent budgets, so that no agent can make the broker work or
 * the store grow without bound by asking (issue 12, finding 9):
 *
 *  - queries: a token bucket per agent, BUDGET_QUERY_BURST queries at once and
 *    BUDGET_QUERY_PER_S a second after that; a query over it is refused
 *    `unavailable` with the wait, before it costs a read or a trail record;
 *  - refusals recorded in the trail: the first of an agent's refused reads in
 *    each BUDGET_REFUSAL_WINDOW_MS is written at once, the others in that window
 *    are counted and the count goes into the next one written ("case+41":
 *    41 more refused since the last record). Every refusal is still answered.
 *
 * The table is keyed by agent id (hmap.h), one entry per configured agent that
 * asked; it is touched by the loop (queries) and the writer thread (refusals),
 * under its own lock.
 */
#ifndef CAREHUB_BUDGET_H
#define CAREHUB_BUDGET_H

#include <stdint.h>

#define BUDGET_QUERY_BURST 200
#define BUDGET_QUERY_PER_S 20
#define BUDGET_REFUSAL_WINDOW_MS 60000

typedef struct budget budget_t;

budget_t *budget_new(void);
void budget_destroy(budget_t **b);

/* One query of agent at now_ms: 1 when within its budget (a token taken), 0
 * when over it, with *retry_ms until one is back. */
int budget_query(budget_t *b, const char *agent, int64_t now_ms, int64_t *retry_ms);

/* A refused read of agent (its query's message id) at now_ms: 1 when it is to
 * be written to the trail now, with *coalesced the refusals not written one by
 * one since the last record; 0 when it is only counted. The same query id
 * again (its transaction run again after the map grew) gets the same answer.
 * NULL b: always 1, nothing coalesced. */
int budget_refusal(budget_t *b, const char *agent, const char *query_id, int64_t now_ms,
                   uint64_t *coalesced);

#endif
