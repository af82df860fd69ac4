/*
 * query.h — reading cases: the `query` op (a carehub extension, docs/protocol.md).
 *
 *   {v, op:"query", id, what:"case",  case}
 *   {v, op:"query", id, what:"cases", status?, agency?, type?, since?, after?, limit?}
 *   {v, op:"query", id, what:"trail", case}
 *   → {v, op:"result", id, what, …}   or a nack (forbidden, not_found, invalid)
 *
 * Least privilege: schools, reporters and monitors read no case; an agency
 * reads only the cases it holds an assignment in; a supervisor reads every
 * case. Every read of a case's personal data (what:"case") and every refusal
 * is appended to the trail (kinds `read`, `read_refused`) with the agent.
 */
#ifndef CAREHUB_QUERY_H
#define CAREHUB_QUERY_H

#include <msgpack.h>

#include "budget.h"
#include "config.h"
#include "frame.h"
#include "store.h"

typedef enum {
    QUERY_OK = 0,
    QUERY_FORBIDDEN,
    QUERY_NOT_FOUND,
    QUERY_INVALID,
    QUERY_UNAVAILABLE,
    QUERY_VERIFY,       /* query_begin: a supervisor's verify, to run off the loop (below) */
} query_result_t;

typedef struct query query_t;

/*
 * Check one query from `agent` (`map`: the decoded request). Three outcomes:
 *  - QUERY_OK and *qp set: it reads the store and records the read in the trail,
 *    so it runs in the loop's write transaction: query_run() inside it, then
 *    query_end() after its commit gives the answer. `map` and `id` must stay
 *    valid until then (query_run reads the request's fields).
 *  - QUERY_VERIFY: a supervisor's what:"verify": it reads the whole store, so
 *    it runs in a job's thread (job.h): query_verify_new(), query_verify_work()
 *    in the thread, query_verify_answer() back in the loop.
 *  - otherwise a refusal: `why` (and `field`) say what to put in the nack;
 *    QUERY_UNAVAILABLE also when the agent is over its query budget (budget.h),
 *    which is checked first. Refused reads are recorded in the trail, an agent's
 *    many refusals within a minute coalesced into one record.
 */
query_result_t query_begin(const config_t *cfg, store_t *st, budget_t *budget,
                           const config_agent_t *agent, const char *id, const msgpack_object *map,
                           frame_out_t *out, char *why, size_t whysize, const char **field,
                           query_t **qp);

/* Before query_run: the trail records this read (and a refusal) with `ref`
 * instead of the bare `what`, so a reader other than an agent's own socket is
 * named: the web view (web.h) passes e.g. "personal_data web:alice". Ids only
 * (the trail holds ids and hashes); cut at QUERY_REF_MAX - 1 bytes. */
#define QUERY_REF_MAX 96
void query_set_ref(query_t *q, const char *ref);

/* Inside the write transaction: 0 or another store_rc_t (re-runnable). */
int query_run(store_txn_t *t, query_t *q);

/* After the commit (rc: the transaction's result): QUERY_OK with the reply in
 * `out` (the caller sends it and calls frame_out_end), or a refusal in
 * `why`/`field` (unavailable when rc is not STORE_OK). */
query_result_t query_end(query_t *q, store_rc_t rc, frame_out_t *out, char *why, size_t whysize,
                         const char **field);

/* Free a query (and a reply never taken); nulls the pointer. */
void query_free(query_t **q);

/* what:"verify" off the loop: `work` only reads the store (trail_verify). */
typedef struct query_verify query_verify_t;
query_verify_t *query_verify_new(store_t *st, const char *id);
void query_verify_work(void *ud);
/* QUERY_OK with the result in `out` (send it, then frame_out_end), or
 * QUERY_UNAVAILABLE with `why`. */
query_result_t query_verify_answer(query_verify_t *v, frame_out_t *out, char *why, size_t whysize);
void query_verify_free(query_verify_t **v);

#endif
