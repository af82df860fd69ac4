/*
 * zap.h — the ZeroMQ authentication handler (ZAP, RFC 27) for CURVE.
 *
 * With broker.security: curve the broker binds a REP socket on
 * inproc://zeromq.zap.01 in its own context and answers each handshake from
 * the main loop (no thread): a client key listed under `agents` is admitted
 * with User-Id = that agent's id; any other key is refused (status 400).
 */
#ifndef CAREHUB_ZAP_H
#define CAREHUB_ZAP_H

#include "config.h"

/* Bind the handler socket in ctx; returns the socket or NULL (errno set). */
void *zap_open(void *ctx);

/* Answer every pending ZAP request on the socket. Never blocks. */
void zap_handle(void *zap, const config_t *cfg);

#endif
