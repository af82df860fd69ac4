/*
 * session.h — what the broker knows about each ZeroMQ connection.
 *
 * A session is keyed by the ROUTER routing id of a connection. It exists from
 * the first message on that connection; `agent` is set by a successful hello
 * (PROTOCOL §3) and stays valid while the connection does. A broker restart
 * forgets every session, so peers get `hello_required` and say hello again.
 *
 * Sessions idle for longer than the idle limit are dropped by
 * session_table_sweep(); a peer that comes back after that simply gets
 * `hello_required`. The table is bounded: beyond SESSION_MAX the least recently
 * heard session is dropped.
 */
#ifndef CAREHUB_SESSION_H
#define CAREHUB_SESSION_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"

#define SESSION_ROUTING_MAX 256
#define SESSION_MAX 65536

typedef struct session {
    unsigned char rid[SESSION_ROUTING_MAX]; /* routing id bytes */
    size_t rid_len;
    const config_agent_t *agent;  /* NULL until hello */
    int64_t last_heard;           /* monotonic ms of the last message from the peer */
    int64_t last_pinged;          /* monotonic ms of our last ping, 0 if none since last heard */
    uint64_t pushes_deferred;     /* pushes its full queue refused since it last took one */
    struct session *all_prev, *all_next; /* every session, for session_each() */
} session_t;

typedef struct session_table session_table_t;

session_table_t *session_table_new(void);
void session_table_destroy(session_table_t **t);

/* The session of a routing id, created (without agent) when absent. */
session_t *session_get(session_table_t *t, const void *rid, size_t len, int64_t now);

/* The session of a routing id, or NULL (a pointer kept across a turn may
 * dangle: a new connection can evict the oldest session; look it up again). */
session_t *session_find(session_table_t *t, const void *rid, size_t len);

/* Number of sessions. */
size_t session_count(const session_table_t *t);

/*
 * Walk every session: drop those not heard from for `idle_drop_ms`, and call
 * `visit` on the others (e.g. to send a ping). `visit` must not add or drop
 * sessions.
 */
void session_table_sweep(session_table_t *t, int64_t now, int64_t idle_drop_ms,
                         void (*visit)(session_t *s, void *ud), void *ud);

/* Visit every session (no adding or dropping inside fn). */
void session_each(session_table_t *t, void (*fn)(session_t *s, void *ud), void *ud);

#endif
