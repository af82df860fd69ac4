/*
 * turn.h — one write transaction per loop turn.
 *
 * Everything the loop writes during one turn — the intake batch, agency ops
 * (case_ack, case_update), `received`, the audit records of queries, the ends
 * of webhook deliveries, escalation steps, quiet closes and purges, first
 * deliveries of assignments — is queued here as an *op* and written in the
 * turn's one LMDB write transaction (one synced commit) by turn_commit(),
 * which broker.c calls once at the end of every turn.
 *
 * What an op causes outside the store waits for that commit:
 *
 *   1. each op's `done` runs, in the order the ops were queued, with STORE_OK
 *      when the commit returned 0 (its replies may now be sent), or with the
 *      error that kept its writes out of the store (then nothing it wrote
 *      exists: it answers `unavailable`, or leaves its work to be retried);
 *   2. then the effects every op collected (assign_effects_t: `case` and
 *      `outcome` pushes, notices for the webhook engine, the next wake-up) go
 *      to the effects callback (deliver_effects).
 *
 * So the ack-after-commit rule holds for every op that has a reply.
 *
 * An op's `fn` must be safe to run more than once: when the map fills, the
 * transaction is rolled back, the map grown, and every op run again; when one
 * op fails with an error of its own (a corrupted record, say), the transaction
 * is rolled back and run again without that op, which alone is told the
 * error (up to 16 such ops a turn; past that every op of the turn is told
 * STORE_IO). Effects are collected afresh on every run.
 *
 * Ops queued while the turn commits (by `done` or the effects callback) belong
 * to the next turn; turn_pending() tells the loop not to sleep before it.
 *
 * Durability and the overlap. The store commits without syncing its meta page
 * (store.h, MDB_NOMETASYNC): a committed turn is consistent but durable only
 * after store_sync(). With turn_start_syncer(), a thread of its own runs that
 * sync while the loop reads, validates and writes the next turn; the
 * committed turn's `done`s and effects run in the loop when the loop sees the
 * sync finished (turn_fd() readable → turn_on_synced()). Without the thread
 * (unit tests), turn_commit() syncs inline and answers before it returns. A
 * failed sync answers the turn's ops STORE_IO (a retry finds what was
 * stored: idempotency); its effects still run, since what is committed is in
 * the store.
 */
#ifndef CAREHUB_TURN_H
#define CAREHUB_TURN_H

#include <stddef.h>

#include "assign.h"
#include "metrics.h"
#include "store.h"

typedef struct turn turn_t;

/* Runs inside the turn's write transaction; collects what must happen after
 * the commit into fx (never cleared here: shared by the turn's ops). Returns 0
 * or the LMDB code a store_* call gave. */
typedef int (*turn_fn)(store_txn_t *t, assign_effects_t *fx, void *ud);

/* After the commit: rc STORE_OK when fn's writes are on disk; else why they
 * are not (STORE_FULL, STORE_IO). Runs exactly once per op; owns ud (frees it). */
typedef void (*turn_done_fn)(void *ud, store_rc_t rc);

/* After every `done` of a turn that committed: what the turn's ops collected. */
typedef void (*turn_effects_fn)(void *ud, const assign_effects_t *fx);

turn_t *turn_new(store_t *st);
/* Stops the sync thread; answers committed turns after a last sync, and runs
 * the `done` of every op still queued with STORE_IO (nothing is written). */
void turn_destroy(turn_t **t);

void turn_set_effects(turn_t *t, turn_effects_fn fn, void *ud);
/* Where commit durations are observed (may stay NULL). */
void turn_set_metrics(turn_t *t, metrics_t *m);

/* Queue an op for this turn's transaction. fn may be NULL (an op that only
 * waits for the commit, e.g. a reply that must not overtake earlier acks);
 * done may be NULL. */
void turn_add(turn_t *t, turn_fn fn, turn_done_fn done, void *ud);

/* Ops queued and not yet committed. */
size_t turn_pending(const turn_t *t);

/* Write every queued op in one transaction and commit. Inline (no syncer):
 * sync, then run the `done`s and the effects. With the syncer: hand the sync
 * to it; the `done`s run from turn_on_synced(). A failed commit answers its
 * ops at once. Returns STORE_OK (also when single ops were set aside with
 * errors of their own), or the error every op was told. */
store_rc_t turn_commit(turn_t *t);

/* Start the sync thread (the broker does; tests need not). 0, or -1 (logged:
 * the turn then syncs inline). */
int turn_start_syncer(turn_t *t);

/* The descriptor the loop polls for finished syncs (-1 without the thread),
 * and what to call when it is readable: answers every turn now durable. */
int turn_fd(const turn_t *t);
void turn_on_synced(turn_t *t);

/* 1 when a committed turn waiting for its sync will push this assignment
 * (its effects): a hello or a re-delivery round leaves it to that push, so that
 * a desk does not get the same assignment twice, the second time older. */
int turn_delivery_waits(const turn_t *t, const char *assignment);

/* Committed turns still waiting for their sync. */
size_t turn_unsynced(const turn_t *t);

/* Commit what is queued, sync in this thread and answer everything (shutdown). */
void turn_flush(turn_t *t);

#endif
