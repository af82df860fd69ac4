/*
 * deliver.h — what leaves the broker after a commit: `case` pushes to the
 * connected agents of an agency, `outcome` pushes to reporters, webhook and
 * SMS notices to the webhook engine; and the timers that make them: the
 * deadline index (escalations), periodic re-delivery, the outbox at start.
 *
 * An agent counts as connected while it has been heard from within three
 * heartbeat intervals (PROTOCOL §3); pushes to others wait for their next
 * hello or the next re-delivery round.
 */
#ifndef CAREHUB_DELIVER_H
#define CAREHUB_DELIVER_H

#include <stdint.h>

#include "assign.h"
#include "config.h"
#include "hook.h"
#include "metrics.h"
#include "session.h"
#include "store.h"
#include "turn.h"

/* Same shape as proto_send_fn: one frame to one routing id. */
typedef int (*deliver_send_fn)(void *ud, const unsigned char *rid, size_t rid_len,
                               const void *data, size_t len);

typedef struct deliver deliver_t;

/* `turn`: the loop's write transaction, where every write made here goes. */
deliver_t *deliver_new(const config_t *cfg, store_t *store, turn_t *turn,
                       session_table_t *sessions, deliver_send_fn send, void *send_ud);
void deliver_destroy(deliver_t **d);

/* Where to count escalations and webhook attempts (may stay NULL). */
void deliver_set_metrics(deliver_t *d, metrics_t *m);

/* The webhook engine (may stay NULL: notices then wait in the outbox). */
void deliver_set_hook(deliver_t *d, hook_t *hook);

/* Carry out the effects of a committed turn (the turn's effects callback). */
void deliver_effects(deliver_t *d, const assign_effects_t *fx);

/* A session said hello: push what waits for it (its agency's unacknowledged
 * assignments, its outcomes). */
void deliver_on_hello(deliver_t *d, session_t *s);
/* The same for the session of a routing id, if it is still there. */
void deliver_on_hello_of(deliver_t *d, const unsigned char *rid, size_t rid_len);

/* Re-send every unacknowledged assignment to its agency's connected agents, and
 * every outcome not yet `received` to its connected reporter. */
void deliver_redeliver_all(deliver_t *d);

/* Earliest escalation due time (clock_now_ms scale), INT64_MAX when none. */
int64_t deliver_next_due(deliver_t *d);

/* Queue the escalation steps due at `now` in this turn: at most a turn's slice
 * (1024; the loop comes back at once while more are due), or all of them
 * (`all`: the test clock moved). Nothing when none is due or a slice is
 * already queued. They fire — and their notices leave — after the commit. */
void deliver_fire_due(deliver_t *d, int64_t now, int all);

/* 1 while a firing op waits for the turn's commit. */
int deliver_fire_pending(const deliver_t *d);

/* Hand every outbox entry to the webhook engine (at start). */
void deliver_resubmit_outbox(deliver_t *d);

/* Webhook engine callbacks (pass d as their ud). The end of a delivery is
 * written in the turn (the outbox entry removed, a failure recorded). */
void deliver_webhook_done(void *d, const char *webhook_id, hook_outcome_t outcome, int attempts,
                          const char *last_error);
void deliver_webhook_attempt(void *d, const char *webhook_id, int attempt, long http_status,
                             const char *error);

#endif
