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
 * after store_sync(). With turn_start_syncer(), two threads take the writing
 * off the loop: turn_commit() hands the turn's ops to the writer thread, which
 * runs them in the write transaction and commits, then has the sync thread run
 * the sync; the loop meanwhile reads and validates the next batch. An op's `fn`
 * therefore runs in the writer thread: it may touch only the store (through t),
 * the config, the clock and its own ud, and collects into fx; its `done` and
 * the effects run in the loop. While the writer has a turn (turn_writing()),
 * turn_commit() leaves the ops queued for the next one. The loop polls
 * turn_fd(): readable after each write and each sync → turn_on_synced() takes
 * the written turn back and answers every turn now durable. Without the threads
 * (unit tests), turn_commit() writes, syncs and answers inline before it
 * returns. A failed sync answers the turn's ops STORE_IO (a retry finds what
 * was stored: idempotency); its effects still run, since what is committed is
 * in the store.
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
 * or the store_rc_t a store_* call gave. */
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

/* Write every queued op in one transaction and commit. Inline (no threads):
 * write, sync, then run the `done`s and the effects; returns STORE_OK (also
 * when single ops were set aside with errors of their own), or the error every
 * op was told (a failed commit answers its ops at once). With the threads: hand
 * the ops to the writer (nothing, while it still has the last turn) and return
 * STORE_OK; the outcome reaches the `done`s from turn_on_synced(). */
store_rc_t turn_commit(turn_t *t);

/* 1 while the writer thread has a turn: turn_commit() then waits for it (the
 * ops stay queued for the next turn), so the loop should not spin on them. */
int turn_writing(const turn_t *t);
/* Start the writer and sync threads (the broker does; tests need not). 0, or
 * -1 (logged: the turn then writes and syncs inline). */
int turn_start_syncer(turn_t *t);

/* The descriptor the loop polls for finished writes and syncs (-1 without the
 * threads), and what to call when it is readable: takes a finished write back
 * (a failed one is answered at once) and answers every turn now durable. */
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
