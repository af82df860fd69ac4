/*
 * query_int.h — what the query op's files share (query.c: the op, lists,
 * verify, budgets; query_case.c: one case's file and trail); nothing outside
 * broker/query*.c includes it. The API is query.h.
 */
#ifndef CAREHUB_QUERY_INT_H
#define CAREHUB_QUERY_INT_H

#include <msgpack.h>

#include "query.h"

/* One query as it runs in the turn's write transaction. */
typedef struct {
    const config_t *cfg;
    const config_agent_t *agent;
    const char *id;
    const msgpack_object *map;
    frame_out_t *out;
    char *why;
    size_t whysize;
    const char **field;
    query_result_t result;
    char what[16];
    char case_id[STORE_ID_MAX];
    budget_t *budget;       /* per-agent budgets (budget.h); NULL: none (unit tests) */
    char ref[QUERY_REF_MAX]; /* the trail's ref for this read; "": `what` (query_set_ref) */
} q_t;

/* The ref of this query's read and refusal records: q->ref, or `what`. */
const char *query_ref(const q_t *q);

/* Refuse the query: r, the field, and the sentence (fmt with one %s, arg). */
void query_refuse(q_t *q, query_result_t r, const char *field, const char *fmt, const char *arg);

/* An optional string field of the request into out: 0 (absent: ""), -1 when not
 * a string, too long, or holding a NUL. */
int query_opt_str(q_t *q, const char *key, char *out, size_t size);

/* The trail record of a refused read (at once, or coalesced: budget.h). */
int query_record_refusal(q_t *q, store_txn_t *t, const char *case_id);

/* ---- query_register.c -------------------------------------------------------------- */

/* what:"register" (supervisors: figures per village and director),
 * "register_due" (a director: its children due soon), "register_sample"
 * (supervisors: the spot check). 0 or a store_rc_t; a refusal in q. */
int query_register(q_t *q, store_txn_t *t);

/* ---- query_case.c ---------------------------------------------------------------- */

/* what:"case": the case record, a page of its events (after?: the page before's
 * `next`; as many as fit under max_message_bytes), events_total, next, and its
 * assignments. 0 or a store_rc_t; a refusal in q. */
int query_case_file(q_t *q, store_txn_t *t);

/* what:"trail": the case's trail records through the per-case index. */
int query_case_trail(q_t *q, store_txn_t *t);

#endif
