/*
 * proto_int.h — what broker/proto.c (envelope, op table, replies, the other
 * ops) and broker/proto_event.c (the event op: validation, staging, the batch
 * commit) and broker/proto_silence.c (silences) share. Private to those files; the module's API is proto.h.
 */
#ifndef CAREHUB_PROTO_INT_H
#define CAREHUB_PROTO_INT_H

#include <msgpack.h>
#include <stddef.h>
#include <stdint.h>

#include "budget.h"
#include "carehub_wire.h"
#include "frame.h"
#include "proto.h"

/* A batch of staged events (proto_event.c). */
typedef struct proto_batch proto_batch_t;

struct proto {
    const config_t *cfg;
    const schema_set_t *schemas;
    store_t *store;
    turn_t *turn;          /* this turn's write transaction: every write goes there */
    job_set_t *jobs;       /* long reads off the loop (verify); NULL: done in the loop */
    budget_t *budget;      /* per-agent query budgets, refusals coalesced (budget.h) */
    deliver_t *deliver;    /* pushes and notices after commits; may be NULL (unit tests) */
    metrics_t *metrics;    /* counters; may be NULL */
    int64_t dropped_logged; /* monotonic ms of the last "reply dropped" warning */
    proto_send_fn send;
    void *send_ud;
    proto_batch_t *cur;          /* events staged in this turn and not yet queued; NULL: none */
    proto_batch_t *free_batches; /* answered batches, for reuse */
    uint64_t ping_seq;     /* ids of broker-originated pings */
};

/* A decoded message on its way through the handlers. */
typedef struct {
    session_t *s;
    const void *frame;   /* the raw frame (checked by frame_check) */
    size_t len;
    const msgpack_object *map;
    char id[CAREHUB_ID_MAX + 1];
    const char *user_id;
    int64_t now;
} proto_msg_t;

/* Send one reply frame and end `o`; a reply that cannot be sent is counted and logged. */
void proto_send_out(proto_t *p, const unsigned char *rid, size_t rid_len, frame_out_t *o);

/* nack: {v, op:"nack", id?, code, error, field?} */
void proto_nack_to(proto_t *p, const unsigned char *rid, size_t rid_len, const char *id,
                   const char *code, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 7, 8)));

/* A nack to the sender of message `m`, with its id. */
#define PROTO_NACK(p, m, code, field, ...) \
    proto_nack_to((p), (m)->s->rid, (m)->s->rid_len, (m)->id, (code), (field), __VA_ARGS__)

/*
 * Names for a sentence, into buf (always NUL-terminated; a long list is cut):
 * "a, b, c", or with `quoted` "\"a\", \"b\" or \"c\"". name(ctx, i) gives the
 * i-th of n; a NULL name is left out. No names at all: "(none)".
 */
void proto_join(char *buf, size_t size, const char *(*name)(const void *ctx, size_t i),
                const void *ctx, size_t n, int quoted);

/* The `event` op: validate the event and stage it in p->cur (proto_event.c). */
void proto_op_event(proto_t *p, proto_msg_t *m);

/* The supervisors' `silence` and `silence_expire` ops (proto_silence.c, PROTOCOL §10). */
void proto_op_silence(proto_t *p, proto_msg_t *m);
void proto_op_silence_expire(proto_t *p, proto_msg_t *m);

/* Free the staged events not yet queued and the batches kept for reuse (proto_destroy). */
void proto_batches_free(proto_t *p);

#endif
