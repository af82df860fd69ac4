/*
 * carehub_int.h — what libcarehub's two files share, and nothing outside
 * them sees (compiled with hidden visibility: not exported). carehub.c: the
 * API, life cycle, sending, driving; carehub_conn.c: the window, the socket,
 * what the broker sends, timers. The manual is include/carehub.h.
 */
#ifndef CAREHUB_LIB_INT_H
#define CAREHUB_LIB_INT_H

#include <msgpack.h>
#include <stddef.h>
#include <stdint.h>

#include "carehub.h"
#include "carehub_wire.h"
#include "spool.h"

/* Events in flight at once. The broker commits in groups, so a window keeps
 * it busy; it stays far below ZeroMQ's default send high-water mark (1000). */
#define WINDOW 64
/* Largest frame accepted from the broker (ZMQ_MAXMSGSIZE): a `case` fits in
 * the broker's max_message_bytes, 256 KiB by default. */
#define MAX_IN_FRAME (8 * 1024 * 1024)
/* Largest event or request accepted for sending (the broker's own limit, from
 * welcome, is checked before each send). */
#define MAX_OUT_FRAME (16 * 1024 * 1024)
/* Messages read in one carehub_poll() before the spool removals are committed. */
#define DRAIN_MAX 4096

typedef enum { ST_HELLO, ST_READY, ST_REFUSED } state_t;

/* An event of the spool that is in the window. */
typedef struct {
    uint64_t seq;
    char id[CAREHUB_ID_MAX + 1];
    char *frame;
    size_t len;
    char *tag;
    int sent;          /* 1: sent on this connection, unanswered */
    int64_t retry_at;  /* when unsent: not before this (mono ms) */
} slot_t;

/* A request (carehub_request): in memory only. */
typedef struct {
    char id[CAREHUB_ID_MAX + 1];
    char *frame;
    size_t len;
    int sent;
    int64_t retry_at;
} req_t;

/* The longest time zone name taken from a welcome (IANA names are far shorter). */
#define CAREHUB_TZ_MAX 128
/* The most bytes of agency names (ids and names) kept from a welcome. */
#define CAREHUB_AGENCY_NAMES_MAX (256 * 1024)

struct carehub {
    char *endpoint, *agent, *software;
    int curve;
    char secret_key[41], public_key[41], server_key[41];
    int request_timeout_ms, max_backoff_ms;
    carehub_callbacks_t cb;
    carehub_reminder_fn on_reminder;  /* carehub_on_reminder() */
    void *reminder_ud;

    void *zctx;
    void *sock;
    spool_t *spool;

    state_t state;
    char hello_id[CAREHUB_ID_MAX + 1];
    int hello_out;           /* hello sent, unanswered */
    int64_t hello_retry_at;  /* HELLO/REFUSED without hello_out: send hello then */
    int heartbeat_ms;
    size_t max_message_bytes;
    char timezone[CAREHUB_TZ_MAX + 1]; /* welcome's `timezone`; "" when it had none */
    char *agency_names;      /* welcome's `agencies`: "id\0name\0" pairs, malloc'd; NULL: none */
    size_t agency_names_len; /* bytes in agency_names */

    int64_t progress_at;     /* last frame heard, or first send with nothing outstanding */
    int64_t last_heard;
    int cur_timeout;         /* Lazy Pirate: doubles per reconnect */
    int unavail_delay;       /* backoff after `unavailable` */
    unsigned reconnects;

    char ping_id[CAREHUB_ID_MAX + 1];
    int ping_out;

    slot_t win[WINDOW];
    int nwin;
    uint64_t next_seq;       /* spool position after the last record loaded */
    size_t damaged;          /* spool records that could not be read (skipped) */
    char *spool_dir;

    req_t *reqs;
    size_t nreqs, capreqs;

    uint64_t *rm_seq;        /* answered events, removed from the spool at the end of a poll */
    char (*rm_id)[CAREHUB_ID_MAX + 1];
    size_t nrm, caprm;

    char msg_prefix[24];
    uint64_t msg_n;
    const char *cb_tag;      /* carehub_event_tag() */
    int in_cb;
    char last_error[512];
};

/* ---- carehub.c ---------------------------------------------------------------- */

/* last_error = the message; returns rc. */
int carehub__set_err(carehub_t *c, int rc, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* The connection's state changes here only (CAREHUB_DEBUG=1 prints each change). */
void carehub__set_state(carehub_t *c, state_t s);
int64_t carehub__now_ms(void);
/* The next message id of this handle. */
void carehub__new_msg_id(carehub_t *c, char out[CAREHUB_ID_MAX + 1]);
/* A msgpack string into out (size bytes, NUL-terminated; "" when not a string). */
void carehub__copy_str(const msgpack_object *o, char *out, size_t size);

/* ---- carehub_conn.c ----------------------------------------------------------- */

void conn_slot_free(slot_t *s);
long conn_find_req(const carehub_t *c, const char *id);
/* Remove the answered events from the spool (one transaction). */
int conn_commit_removals(carehub_t *c);
/* A new DEALER socket with the keys and options, connected. */
int conn_open_socket(carehub_t *c);
void conn_send_hello(carehub_t *c);
/* Read what the broker sent (at most DRAIN_MAX messages), running the callbacks. */
int conn_drain(carehub_t *c);
/* Hello, pings and Lazy Pirate reconnects that are due. */
int conn_timers(carehub_t *c);
/* Send what the window and the requests allow. */
int conn_pump(carehub_t *c);

#endif
