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

#include "config.h"
#include "frame.h"
#include "store.h"

typedef enum {
    QUERY_OK = 0,
    QUERY_FORBIDDEN,
    QUERY_NOT_FOUND,
    QUERY_INVALID,
    QUERY_UNAVAILABLE,
} query_result_t;

typedef struct query query_t;

/*
 * Check one query from `agent` (`map`: the decoded request). Three outcomes:
 *  - QUERY_OK and *qp set: it reads the store and records the read in the trail,
 *    so it runs in the loop's write transaction: query_run() inside it, then
 *    query_end() after its commit gives the answer. `map` and `id` must stay
 *    valid until then (query_run reads the request's fields).
 *  - QUERY_OK and *qp NULL: answered now (what:"verify" reads only); the reply
 *    {v, op:"result", id, what, …} is in `out` (the caller sends it and calls
 *    frame_out_end).
 *  - otherwise a refusal: `why` (and `field`) say what to put in the nack.
 */
query_result_t query_begin(const config_t *cfg, store_t *st, const config_agent_t *agent,
                           const char *id, const msgpack_object *map, frame_out_t *out,
                           char *why, size_t whysize, const char **field, query_t **qp);

/* Inside the write transaction: 0 or an LMDB code (re-runnable). */
int query_run(store_txn_t *t, query_t *q);

/* After the commit (rc: the transaction's result): QUERY_OK with the reply in
 * `out` (the caller sends it and calls frame_out_end), or a refusal in
 * `why`/`field` (unavailable when rc is not STORE_OK). */
query_result_t query_end(query_t *q, store_rc_t rc, frame_out_t *out, char *why, size_t whysize,
                         const char **field);

/* Free a query (and a reply never taken); nulls the pointer. */
void query_free(query_t **q);

#endif
