/*
 * proto.h — the wire protocol's operations (PROTOCOL.md §2–4): envelope checks,
 * the op table, and the intake of events into group-committed batches.
 *
 * Flow of one message (see docs/architecture.md):
 *   broker.c receives [routing id][frame] → proto_on_message():
 *     size limit → frame_check() (msgpack guard) → decode → envelope (id, v, op)
 *     → op table: hello needed? → handler.
 *   The `event` handler validates and *stages* the event; nothing is answered
 *   yet. broker.c calls proto_flush() once per drained batch, which queues the
 *   batch in the loop's turn (turn.h); so do case_ack, case_update, received
 *   and query with their own ops. The turn writes them all in one LMDB write
 *   transaction; after its commit every ack, nack and result is sent.
 *   Messages refused before they reach the store (malformed, forbidden, …) are
 *   answered at once.
 *
 * Replies leave through the `send` callback given at creation, so this module
 * never touches a socket and can be unit-tested alone.
 */
#ifndef CAREHUB_PROTO_H
#define CAREHUB_PROTO_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "deliver.h"
#include "schema.h"
#include "session.h"
#include "store.h"
#include "turn.h"

/* Send one reply frame to the connection with this routing id. Returns 0 when
 * queued, -1 when the peer is gone (the session may then be dropped). */
typedef int (*proto_send_fn)(void *ud, const unsigned char *rid, size_t rid_len,
                             const void *data, size_t len);

typedef struct proto proto_t;

/* Most events staged before the batch is committed, whatever is still queued. */
#define PROTO_BATCH_MAX 1024

/* `turn`: where every write of an op goes (the broker's; outlives proto). */
proto_t *proto_new(const config_t *cfg, const schema_set_t *schemas, store_t *store,
                   turn_t *turn, proto_send_fn send, void *send_ud);
void proto_destroy(proto_t **p);

/*
 * Handle one message from a connection. `frames` is the number of data frames
 * it had (anything but 1 is malformed); `frame`/`len` is the first. `user_id`
 * is the ZAP User-Id under CURVE (the agent id from its key), else NULL.
 * Returns the number of staged events waiting for proto_flush().
 */
size_t proto_on_message(proto_t *p, session_t *s, const void *frame, size_t len, int frames,
                        const char *user_id, int64_t now_ms);

/* Where nacks, events and commit times are counted (NULL: not counted). */
void proto_set_metrics(proto_t *p, metrics_t *m);

/* Where long reads run (a supervisor's verify); NULL: in the loop (unit tests). */
typedef struct job_set job_set_t;
void proto_set_jobs(proto_t *p, job_set_t *jobs);

/* Where pushes and notices go after commits (NULL: nowhere, as in unit tests). */
void proto_set_deliver(proto_t *p, deliver_t *d);

/* Queue the staged events as one op of the turn; each is answered after the
 * turn's commit (turn_commit). */
void proto_flush(proto_t *p);

/* Number of staged events. */
size_t proto_pending(const proto_t *p);

/* Send a broker ping to a session (heartbeat). Returns the send result. */
int proto_ping(proto_t *p, session_t *s);

#endif
