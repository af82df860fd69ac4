/*
 * broker.h — carehubd's event loop: one ROUTER socket bound on every
 * broker.listen endpoint (plus the ZAP socket under CURVE), served by a single
 * zmq_poll loop. Each turn drains what has arrived (up to PROTO_BATCH_MAX
 * messages), hands each message to proto, commits the staged events in one
 * LMDB transaction (proto_flush), sends the acks, and runs the heartbeat.
 * Nothing in the loop blocks except zmq_poll itself.
 */
#ifndef CAREHUB_BROKER_H
#define CAREHUB_BROKER_H

#include <stddef.h>

#include "config.h"

typedef struct broker broker_t;

/*
 * Load the schemas, open the store and bind every endpoint. `schemas_dir` is
 * used when the config does not name one. Returns NULL with a message in err.
 */
broker_t *broker_new(const config_t *cfg, const char *schemas_dir, char *err, size_t errlen);

/* Write the bound endpoints (ZMQ_LAST_ENDPOINT of each bind), one per line, to
 * path atomically (path.tmp, then rename). Returns 0 or -1 with err. */
int broker_write_ready(const broker_t *b, const char *path, char *err, size_t errlen);

/* Serve until broker_request_stop(). Returns 0 on a clean stop, -1 on a fatal error. */
int broker_run(broker_t *b);

/* Async-signal-safe: ask the loop to finish the batch in hand and return. */
void broker_request_stop(void);

/* Close sockets and the store; null the pointer; safe on NULL and twice. */
void broker_destroy(broker_t **b);

#endif
