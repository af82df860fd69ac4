/*
 * assign_int.h — what the pieces of the assignment module share (private: only
 * broker/assign*.c include it; the module's API is assign.h).
 *
 *   assign.c           the record and its codec, the state machine, making
 *                      assignments, agencies' requests, the effects list
 *   assign_deadline.c  the deadline index: escalation steps, quiet close, purge
 *   assign_outcome.c   a case resolved or closed; outcomes for the reporters
 *   assign_notice.c    notices to channels through the webhook outbox
 *   assign_message.c   the `case` message, the pending walk, the record for readers
 *   assign_figures.c   the open counter and the ack_due index (metrics)
 *
 * Everything here runs inside the caller's store transaction.
 */
#ifndef CAREHUB_ASSIGN_INT_H
#define CAREHUB_ASSIGN_INT_H

#include <msgpack.h>
#include <stddef.h>
#include <stdint.h>

#include "carehub_wire.h"
#include "assign.h"
#include "config.h"
#include "store.h"

/* Bounds of what one assignment record carries from its workflow step. */
#define MAX_STEPS 8
#define MAX_NOTIFY 8
#define ID_LEN (CAREHUB_ID_MAX + 1)

typedef struct {
    int64_t after_ms;
    int after_wd;           /* escalate_unresolved before the acknowledgement: working
                             * days after resolve_by (CONFIG_NOT_WD: after_ms); made
                             * clock time when resolve_by is set */
    size_t n_notify;
    char notify[MAX_NOTIFY][ID_LEN];
} step_t;

/* What routing and resolution need of the other assignments of a case. */
typedef struct {
    char id[STORE_ID_MAX];
    char case_id[STORE_ID_MAX];
    char agency[ID_LEN];
    assign_state_t state;
} as_brief_t;

/* An assignment record, decoded. */
typedef struct {
    char id[STORE_ID_MAX];
    char case_id[STORE_ID_MAX];
    char agency[ID_LEN];
    char type[ID_LEN];      /* the case's event type */
    assign_state_t state;
    int severity;
    int64_t created, ack_by, acked_at, next_due;
    char by[129];
    char to[ID_LEN];
    char note[4097];
    int level;              /* escalation steps fired so far */
    size_t n_steps;
    step_t steps[MAX_STEPS];
    /* The second deadline (PROTOCOL §10): resolve_within from the workflow step
     * (has_rw), resolve_by set at the acknowledgement, its own steps. */
    int has_rw;
    int64_t rw_ms;
    int rw_wd;
    int64_t resolve_by;     /* 0: not set (not acknowledged, or no resolve_within) */
    int64_t final_at;       /* when it reached a final status; 0 while not final */
    int rlevel;             /* escalate_unresolved steps fired so far */
    size_t n_rsteps;
    step_t rsteps[MAX_STEPS];
} as_t;

typedef struct {
    as_brief_t *list;
    size_t n, cap;
} as_list_t;

/* ---- assign.c ------------------------------------------------------------------- */

/* resolved, referred or declined. */

/* Add an agent with new outcomes / an outbox entry to the effects (once each). */
void assign_fx_webhook(assign_effects_t *e, const char *id);

/* A msgpack string into dst (NUL-terminated, cut to size; "" when not a string). */
void assign_copy_str(char *dst, size_t size, const msgpack_object *o);
/* Who sent an event: its record's `agent` and `ref` as stored (a keyed hash of
 * the agent's own id with privacy on: the idempotency key's second part; the
 * ref sent is case_event_ref's), each "" when the record lacks it or is not a map. */
void assign_event_origin(const void *rec, size_t rl, char agent[ID_LEN], char ref[ID_LEN]);
/* An integer of a map (0 when absent). */
int64_t assign_get_int(const msgpack_object *map, const char *key);

/* The assignment record: decode (the sealed note opened), write (with its trail
 * entry), read by id. 0, STORE_NOTFOUND, STORE_CORRUPTED or another store_rc_t. */
int assign_rec_decode(store_txn_t *t, const void *data, size_t len, as_t *a);
int assign_rec_put(store_txn_t *t, const as_t *a);
int assign_rec_get(store_txn_t *t, const char *id, as_t *a);

/* pending and outcomes key: owner (agency or agent) NUL id. Returns its length. */
size_t assign_pending_key(char *k, size_t size, const char *agency, const char *id);

/* Every assignment of a case, brief view. The caller frees l->list. */
int assign_case_assignments(store_txn_t *t, const char *case_id, as_list_t *l);

/* ---- assign_deadline.c ------------------------------------------------------------ */

/* Deadline index key: due (8 bytes big-endian, a negative time as 0) + id. Returns
 * its length. The ack_due index and STORE_DB_QUIET's values share the layout. */
size_t assign_deadline_key(unsigned char *k, int64_t due, const char *id);
/* The time at the front of such a key (at least 8 bytes). */
int64_t assign_deadline_due(const void *k);
/* A deadlines key: its kind (assign_due_kind_t) and the id it is for. 0, or -1
 * when malformed. */
int assign_due_key_parse(const void *k, size_t kl, int *kind, char id[ASSIGN_DUE_ID_MAX]);

/* Acknowledged or in progress, with a resolve_by and escalate_unresolved steps left. */
static inline int assign_resolve_stage(const as_t *a)
{
    return (a->state == AS_ACKNOWLEDGED || a->state == AS_IN_PROGRESS) && a->resolve_by > 0 &&
           (size_t)a->rlevel < a->n_rsteps;
}

/* Schedule the next escalation step (or none) and keep the index in step: while
 * open, the next `escalate` step after ack_by; acknowledged or in progress with a
 * resolve_by, the next `escalate_unresolved` step after it; final, none. */
int assign_schedule(store_txn_t *t, as_t *a, assign_effects_t *fx);

/* Set (due > 0) or cancel (due <= 0) the quiet close of a case. */
int assign_quiet_set(store_txn_t *t, const char *case_id, int64_t due, assign_effects_t *fx);

/* privacy.retention: schedule the purge of a case resolved at `now` (nothing when
 * privacy is off or no retention is configured). */
int assign_purge_schedule(const config_t *cfg, store_txn_t *t, const char *case_id, int64_t now,
                          assign_effects_t *fx);

/* ---- assign_outcome.c ------------------------------------------------------------- */

/* After an assignment became final: resolve the case when it is done. */
int assign_check_case(const config_t *cfg, store_txn_t *t, const as_t *changed, int64_t now,
                      assign_effects_t *fx);

/* ---- assign_notice.c -------------------------------------------------------------- */

/* Queue `type` with `data` for a channel: one message for a webhook, one per
 * recipient (with `to` and `text`) for an SMS gateway. */
int assign_notify_channel(store_txn_t *t, const config_channel_t *ch, const char *case_id,
                          const char *type, json_t *data, const char *text, int64_t now,
                          assign_effects_t *fx);

/* An agency's configured name, else its id. */
const char *assign_agency_name(const config_t *cfg, const char *id);

/* ---- assign_figures.c ------------------------------------------------------------- */

/* Add (del == 0) or remove the assignment's entry in the ack_due index. */
int assign_ack_due_put(store_txn_t *t, const as_t *a, int del);

/* Add d (+1, -1) to the count of assignments not final. */
int assign_open_count_add(store_txn_t *t, int d);

#endif
