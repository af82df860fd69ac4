/*
 * carehub_wire.h — names and limits of the carehub wire protocol, version 1
 * (shared/PROTOCOL.md), for the broker and for agents written in C.
 *
 * Every message is one ZeroMQ frame holding one msgpack map with string keys;
 * every message has `v` (CAREHUB_WIRE_VERSION), `op` and `id`.
 */
#ifndef CAREHUB_WIRE_H
#define CAREHUB_WIRE_H

#define CAREHUB_WIRE_VERSION 1

/* Ids: 1–64 bytes of [A-Za-z0-9._:-]. */
#define CAREHUB_ID_MAX 64

/* Default broker.max_message_bytes. */
#define CAREHUB_MAX_MESSAGE_BYTES 262144

/* nack codes (PROTOCOL §4). */
#define CAREHUB_E_MALFORMED      "malformed"
#define CAREHUB_E_VERSION        "version"
#define CAREHUB_E_UNKNOWN_OP     "unknown_op"
#define CAREHUB_E_HELLO_REQUIRED "hello_required"
#define CAREHUB_E_UNAUTHORIZED   "unauthorized"
#define CAREHUB_E_FORBIDDEN      "forbidden"
#define CAREHUB_E_UNKNOWN_TYPE   "unknown_type"
#define CAREHUB_E_INVALID        "invalid"
#define CAREHUB_E_TOO_LARGE      "too_large"
#define CAREHUB_E_UNAVAILABLE    "unavailable"
#define CAREHUB_E_CONFLICT       "conflict"
#define CAREHUB_E_NOT_FOUND      "not_found"

#endif
