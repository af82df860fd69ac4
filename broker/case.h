/*
 * case.h — the event and case records: storing a batch of events (each with
 * its idempotency entry, its record — body sealed when privacy is on — and its
 * trail record), joining each to the open case of its child or opening one,
 * and reading an event or a case back as the protocol shows them.
 *
 * The records (docs/data-model.md):
 *   events      event id → {id, agent, ref, type, at, received, case, severity,
 *                            silenced?, body | ref_enc + body_enc}; ref as store_txn_ref_key
 *               stores it (a keyed hash with privacy on), the ref sent in ref_enc
 *   cases       case id → {join, id, type, status, opened, severity}
 *   open_cases  type NUL child key → case id (store_txn_child_key: a keyed hash
 *               with privacy on)
 * This module owns them; it reaches them through the storage (store.h) only,
 * and writes their trail records (trail.h). Errors are the store's: 0 or a
 * negative store_rc_t.
 */
#ifndef CAREHUB_CASE_H
#define CAREHUB_CASE_H

#include <stddef.h>
#include <stdint.h>

#include "carehub_wire.h"
#include "store.h"

/* ---- severity and case status: enums in memory, names in records and on the wire */

/* Severity names, index 0..3: low, normal, high, critical. -1 when unknown. */
int case_severity_parse(const char *s, size_t n);
const char *case_severity_name(int sev); /* "normal" when out of range */

/* A case's status, "status" in its record: open until it is resolved (every
 * assignment final, one resolved) or closed (quiet close); both are final. */
typedef enum {
    CASE_OPEN = 0,
    CASE_RESOLVED,
    CASE_CLOSED,
    CASE_STATUS_COUNT
} case_status_t;
const char *case_status_name(case_status_t s); /* NULL when unknown */
int case_status_parse(const char *s, size_t n); /* -1 when unknown */
/* 1 when a case may move from -> to (open -> resolved | closed). */
int case_may_move(case_status_t from, case_status_t to);

/* ---- a batch of events ------------------------------------------------------- */

/* What happened to one event of a batch. */
typedef enum {
    CASE_ITEM_PENDING = 0, /* input: not yet processed */
    CASE_ITEM_STORED,      /* new: stored and joined to a case */
    CASE_ITEM_DUPLICATE,   /* (agent, ref) was seen before: ids of the first time */
    CASE_ITEM_REFUSED,     /* input `refuse` was set and it was not a duplicate: nothing stored */
} case_item_status_t;

typedef struct {
    /* input — pointers must stay valid during the call */
    const char *agent;       /* the sending agent's id */
    const char *ref;         /* the agent's message id: the idempotency key */
    const char *type;        /* event type */
    int64_t at;              /* observed, ms since epoch */
    int64_t received;        /* received by the broker, ms since epoch */
    const char *child_id;    /* body.child.id or NULL: events of one type about one child join */
    int severity;            /* 0 low .. 3 critical */
    const char *body;        /* the body, packed msgpack */
    size_t body_len;
    const char *silenced;    /* the id of the silence that holds it (silence.h), or NULL:
                              * recorded as "silenced"; it makes no assignment, no notice */
    int refuse;              /* the body is invalid: answer a duplicate, store nothing new */
    /* output */
    case_item_status_t status;
    char event_id[STORE_ID_MAX];
    char case_id[STORE_ID_MAX];
} case_event_t;

/* Called inside the batch's transaction for each newly STORED event, so that
 * what the event causes (assignments, notifications) commits with it. Returns
 * 0 or a store_rc_t from the store_* calls, which aborts the batch. It may run
 * more than once for the same event when the map had to grow (the earlier
 * run's writes were rolled back): keep outside effects idempotent. */
typedef int (*case_stored_fn)(store_txn_t *t, case_event_t *item, void *ud);

/*
 * Store a batch in one write transaction. Each item comes back DUPLICATE (a
 * retry, also within the same batch), REFUSED or STORED. On STORE_FULL or
 * STORE_IO nothing of the batch is stored and every item's status is left
 * PENDING. When the map fills, it is grown (doubling, up to map_max) and the
 * batch retried.
 */
store_rc_t case_put_events(store_t *st, case_event_t *items, size_t n, case_stored_fn on_stored,
                           void *ud);

/* The same inside a write transaction the caller runs (the loop's turn,
 * turn.h): 0 or a store_rc_t, which must abort the transaction (every item is
 * then to be treated as PENDING). Re-runnable like every store_fn. */
int case_txn_put_events(store_txn_t *t, case_event_t *items, size_t n, case_stored_fn on_stored,
                        void *ud);

/* Move a case to status `to` (resolved, closed) with the time ("resolved": ms,
 * "closed": ms in its record, a trail record case_resolved / case_closed), and
 * make it no longer joinable: a later event about the child opens a new case.
 * The one setter of a case's status. *moved is 0 when the status may not move
 * there (case_may_move: it left open already); nothing is written then. */
int case_set_status(store_txn_t *t, const char *case_id, case_status_t to, int64_t now, int *moved);

/* At start, with privacy on: the events stored by a broker from before 2026-12
 * hold their refs in clear; key them (store_txn_ref_key) and seal the ref sent,
 * and move their idempotency entries to the keyed pair, once (a mark in
 * `counters`). Trail records written before keep the refs they were written
 * with (the chain cannot be rewritten). 0, or -1 (logged). */
int case_refs_upgrade(store_t *st, int privacy);

/* Verification (a read transaction): every open_cases entry names an open case
 * joined under that key; every written idem entry names an event sent by that
 * agent with that ref, in that case. 0 consistent, 1 with the first problem in
 * problem, or a store_rc_t. *entries counts the entries checked. */
int case_verify_indexes(store_txn_t *t, char *problem, size_t size, unsigned long long *entries);

/* ---- reading back ------------------------------------------------------------ */

/* The associated data an event's sealed ref ("ref_enc") is bound to: the
 * event id + "#ref" (not the body's, so that neither box opens in the other's
 * place). ad has STORE_ID_MAX + 8 bytes. */
void case_ref_ad(char *ad, size_t size, const char *event_id);

/* Who sent an event and the ref it sent (its own message id), from the event
 * record rec of event_id: agent (may be NULL) and the ref, opened from
 * "ref_enc" with privacy on, else "ref". 0, or a store_rc_t (STORE_CORRUPTED:
 * no agent, or the ref does not open or is longer than size - 1). */
int case_event_ref(store_txn_t *t, const char *event_id, const void *rec, size_t rl,
                   char agent[CAREHUB_ID_MAX + 1], char *ref, size_t size);

/* Copy out the stored record of an event (msgpack map, see above). *out is the
 * caller's to free(). STORE_OK, STORE_NOTFOUND or STORE_IO. */
store_rc_t case_get_event(store_t *st, const char *event_id, char **out, size_t *len);

/* Copy out a case record (msgpack map) with "events" (how many joined) and
 * "updated" (when the newest was received). *out is the caller's to free(). */
store_rc_t case_get(store_t *st, const char *case_id, char **out, size_t *len);

#endif
