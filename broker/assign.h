/*
 * assign.h — a case's assignments: routing to agencies, the assignment state
 * machine, acknowledgement deadlines and escalation, the webhook outbox, and
 * the outcome told to the reporters (PROTOCOL §5–7, CONFIG.md workflows).
 *
 * Everything here runs inside a store transaction (store_write), so what an
 * event causes commits with the event, and what a deadline causes commits with
 * the deadline's removal. What must leave the process after the commit —
 * `case` pushes to agency agents, `outcome` pushes, webhook deliveries — is
 * collected in an assign_effects_t and carried out by the caller once the
 * commit returned 0.
 *
 * Assignment states (one set_state() makes every change and logs it):
 *
 *     open ──case_ack──▶ acknowledged ──in_progress──▶ in_progress
 *       │                     │                             │
 *       └──── resolved / referred / declined (final) ◀──────┘
 *
 * in_progress, resolved and referred imply the acknowledgement. A final state
 * takes the same final status again as a retry; anything else is a conflict.
 * declined sends the case to broker.fallback_agency, which cannot decline.
 * A case is resolved when every assignment is final and one is resolved.
 *
 * Deadlines: one entry per unacknowledged assignment with escalation steps
 * left, keyed by due time (8 bytes big-endian ms) + assignment id, so the
 * loop reads only the first key to know when to wake up. A step fires at
 * ack_by + after, once: firing removes the entry and schedules the next step.
 * The second deadline (PROTOCOL §10): a step with resolve_within sets
 * resolve_by = acknowledgement + resolve_within; while acknowledged or in
 * progress the same one entry holds the next escalate_unresolved step
 * (resolve_by + after; notices with stage "resolve"); a final status removes it.
 */
#ifndef CAREHUB_ASSIGN_H
#define CAREHUB_ASSIGN_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "carehub_wire.h"
#include "config.h"
#include "frame.h"
#include "case.h"
#include "store.h"

typedef enum {
    AS_OPEN = 0,
    AS_ACKNOWLEDGED,
    AS_IN_PROGRESS,
    AS_RESOLVED,
    AS_REFERRED,
    AS_DECLINED,
    AS_STATE_COUNT
} assign_state_t;

/* "open", "acknowledged", …; -1 / NULL when unknown. */
const char *assign_state_name(assign_state_t s);
int assign_state_parse(const char *s, size_t n);
/* The state case_update's status s[0..n) names, or -1 when an agency does not set
 * it that way; and those statuses, "in_progress, resolved, …", into buf. */
int assign_update_status(const char *s, size_t n);
void assign_update_statuses(char *buf, size_t size);
/* 1 when the state machine allows from -> to (the table in assign.c). */
int assign_may_move(assign_state_t from, assign_state_t to);

/* What to do after the commit. Ids are copied; duplicates are not added twice. */
typedef struct {
    char (*deliver)[STORE_ID_MAX]; /* assignments to push to their agency's agents */
    size_t n_deliver, cap_deliver;
    char (*outcome_to)[CAREHUB_ID_MAX + 1];        /* agents with new outcomes to push */
    size_t n_outcome_to, cap_outcome_to;
    char (*webhooks)[CAREHUB_ID_MAX + 1];          /* outbox entries to hand to the webhook engine */
    size_t n_webhooks, cap_webhooks;
    int deadlines_changed;         /* the deadline index changed: recompute the next wake-up */
    unsigned escalations;          /* escalation steps fired (for metrics) */
    unsigned overdue_events;       /* visit_overdue events the broker recorded (for metrics) */
} assign_effects_t;

void assign_effects_clear(assign_effects_t *e);
/* An agent with new pushes waiting in `outcomes` (outcomes, reminders): push after the commit. */
void assign_fx_outcome(assign_effects_t *e, const char *agent);
void assign_effects_free(assign_effects_t *e);

/*
 * A new event joined `it->case_id` (inside the batch transaction): apply the
 * workflows to it and make the missing assignments (one per agency per case);
 * with no workflow matching and no assignment yet, one for fallback_agency.
 * The case's unacknowledged assignments are re-delivered (a new event joined).
 */
int assign_on_event(const config_t *cfg, store_txn_t *t, const case_event_t *it,
                    const json_t *body, int64_t now, assign_effects_t *fx);

/* Results of an agency's request, mapped to nack codes by proto. */
typedef enum {
    ASSIGN_OK = 0,
    ASSIGN_NOT_FOUND,   /* no such assignment */
    ASSIGN_FORBIDDEN,   /* it belongs to another agency */
    ASSIGN_CONFLICT,    /* contradicts the state (e.g. changing a final status) */
    ASSIGN_BAD_TARGET,  /* referred: `to` is not a configured agency */
    ASSIGN_STORE,       /* the store failed (the transaction says why) */
} assign_result_t;

typedef struct {
    const char *agency;      /* the requesting agent's agency */
    const char *assignment;  /* the assignment id */
    const char *status;      /* NULL for case_ack; else in_progress|resolved|referred|declined */
    const char *by;          /* case_ack: the officer (may be NULL) */
    const char *note;        /* may be NULL */
    const char *to;          /* referred: the agency */
    int64_t now;
    /* out */
    assign_result_t result;
    char case_id[STORE_ID_MAX];
    char detail[256];        /* for the nack sentence */
} assign_request_t;

/* case_ack / case_update inside a write transaction. Returns 0 (see r->result)
 * or a store_rc_t to abort the transaction. */
int assign_request(const config_t *cfg, store_txn_t *t, assign_request_t *r, assign_effects_t *fx);

/* The kinds of timer in the deadline index (one byte of its key, after the
 * 8-byte due time), and what each fires on. */
typedef enum {
    ASSIGN_DUE_STEP = 1,           /* an escalation step of an assignment (id: assignment) */
    ASSIGN_DUE_QUIET = 2,          /* quiet close of a case (id: case) */
    ASSIGN_DUE_PURGE = 3,          /* retention purge of a case (id: case) */
    ASSIGN_DUE_CONTACT = 4,        /* a registered child's contact falls due (id: child key) */
    ASSIGN_DUE_VISIT = 5,          /* … its home visit (register.h) */
    ASSIGN_DUE_REMIND_CONTACT = 6, /* the director's reminder of the contact */
    ASSIGN_DUE_REMIND_VISIT = 7,   /* … of the home visit */
    ASSIGN_DUE_KIND_END
} assign_due_kind_t;
/* The longest id a timer fires on, with its NUL (a child key with privacy off
 * is the child id itself: up to 64 bytes). */
#define ASSIGN_DUE_ID_MAX 80

/* Move a timer of `kind` for `id` from old_due to new_due (either 0: none) in
 * the deadline index, in the caller's transaction. */
int assign_due_set(store_txn_t *t, assign_due_kind_t kind, const char *id, int64_t old_due,
                   int64_t new_due, assign_effects_t *fx);
/* 0 when that timer is in the index, STORE_NOTFOUND when not, or another store_rc_t. */
int assign_due_has(store_txn_t *t, assign_due_kind_t kind, const char *id, int64_t due);

/* Fire every escalation step due at or before `now` (at most `max` of them;
 * returns how many fired in *fired). */
int assign_fire_due(const config_t *cfg, store_txn_t *t, int64_t now, size_t max, size_t *fired,
                    assign_effects_t *fx);

/* Metrics: assignments not final (a counter kept as states change), and the
 * unacknowledged past ack_by (the ack_due index, read only up to now: as many
 * reads as there are overdue, not a scan of every assignment). */
int assign_gauges(store_txn_t *t, int64_t now, uint64_t *open_, uint64_t *overdue);

/* A store written before those figures: build the counter and the ack_due index
 * from the assignments (one write transaction, at start; nothing to do when
 * the counter is there). 0 or -1. */
int assign_figures_rebuild(store_t *st);

/* The earliest due time in the deadline index, or INT64_MAX when none. */
int assign_next_due(store_txn_t *t, int64_t *due);

/* At start: rewrite the deadline keys of a carehubd from before the kind byte
 * (an id right after the time) into typed keys, once (counters
 * "deadlines.typed" marks it done). 0, or -1 (logged). */
int assign_deadlines_upgrade(store_t *st);

/* Build the `case` message of an assignment (PROTOCOL §5) into o, with as many
 * of the case's events (newest last) as fit in max_bytes. Returns 0,
 * STORE_NOTFOUND, or another store_rc_t. Fills *agency (STORE_ID_MAX) and *open_ (1
 * while it still wants delivering: not yet acknowledged — or acknowledged with a
 * resolve_by and not final, the one push after the acknowledgement that carries
 * resolve_by; PROTOCOL §10). */
int assign_case_message(store_txn_t *t, const char *assignment, size_t max_bytes, frame_out_t *o,
                        char *agency, int *open_);

/* Pack an assignment record as a msgpack map for readers, never the escalation
 * plan. with_note: the agency's own words (`note` opened, `by`) for a reader
 * allowed them — with reader_agency set, only on that agency's assignments;
 * else no `note` and `by` empty. 0 or another store_rc_t. */
int assign_pack_record(store_txn_t *t, const char *assignment, msgpack_packer *pk, int with_note,
                       const char *reader_agency);

/* The case (STORE_ID_MAX) of an assignment. 0, STORE_NOTFOUND or another store_rc_t. */
int assign_case_of(store_txn_t *t, const char *assignment, char *case_id);

/* The agency (STORE_ID_MAX) of an assignment, and (state may be NULL) its
 * state. 0, STORE_NOTFOUND or another store_rc_t. */
int assign_agency(store_txn_t *t, const char *assignment, char *agency);
int assign_agency_state(store_txn_t *t, const char *assignment, char *agency, assign_state_t *state);

/* Verification (a read transaction): every case_assign entry names an
 * assignment of that case, every assignment is listed under its case, which
 * exists; every deadline is for an assignment (steps) or a case (quiet close,
 * purge) that exists; every stored outcome is for an event that exists. 0
 * consistent, 1 with the first problem in problem, or a store_rc_t. */
int assign_verify_indexes(store_txn_t *t, char *problem, size_t size, unsigned long long *entries);

/* 1 for the states an assignment ends in (resolved, referred, declined). */
int assign_is_final(assign_state_t s);

/* Visit the unacknowledged assignments of an agency. */
int assign_each_pending(store_txn_t *t, const char *agency,
                        int (*fn)(void *ud, const char *assignment), void *ud);

/* Visit an agent's outcomes not yet confirmed with `received`; fn gets the
 * packed `outcome` message. */
int assign_each_outcome(store_txn_t *t, const char *agent,
                        int (*fn)(void *ud, const void *msg, size_t len), void *ud);

/* `received` for an outcome id: forget it (absent is fine). */
int assign_outcome_received(store_txn_t *t, const char *agent, const char *outcome_id);

/* Outbox: read one entry (channel id, JSON body, created ms); *body is malloc'd. */
int assign_outbox_get(store_txn_t *t, const char *webhook_id, char *channel, size_t chsize,
                      char **body, int64_t *created);
/* Visit every outbox entry's webhook id (restart: resubmit them all). */
int assign_outbox_each(store_txn_t *t, int (*fn)(void *ud, const char *webhook_id), void *ud);
/* A delivery ended: remove the entry; on failure record it in the case log
 * and, when the channel has a `fallback`, queue a `webhook.failed` notice there. */
int assign_outbox_done(const config_t *cfg, store_txn_t *t, const char *webhook_id, int delivered,
                       int attempts, const char *error, int64_t now, assign_effects_t *fx);

#endif
