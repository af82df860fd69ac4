/*
 * carehub.h — libcarehub, the agent side of carehub: the integrator's manual.
 *
 * An agent (a school's attendance system, a mandated reporter's tool, an
 * online-monitoring feed, an agency's case desk) talks to the carehub broker
 * over ZeroMQ (shared/PROTOCOL.md). This library does the parts every agent
 * must get right:
 *
 *  - Store-and-forward. carehub_submit() writes the event to a durable local
 *    outbox (an LMDB environment in the spool directory) before it returns; it
 *    leaves the outbox only when the broker acknowledges it (`ack`, also with
 *    duplicate:true) or refuses it for good (a `nack` other than
 *    `unavailable`/`hello_required`). A report typed in a village is not lost
 *    because the link was down at that moment, nor when the agent is killed.
 *  - Resending. Unacknowledged events are resent with exponential backoff
 *    (Lazy Pirate: the DEALER socket is closed and reopened after a timeout),
 *    always with the same id, so the broker stores each exactly once.
 *  - Session. hello on every (re)connect and after `hello_required`;
 *    answering the broker's `ping`; noticing a silent broker.
 *  - Pushes. `case` messages (agencies) and `outcome` messages (reporters) are
 *    handed to callbacks; outcomes are confirmed with `received` after the
 *    callback returns. `reminder` messages (directors, PROTOCOL §9) go to
 *    their own handler (carehub_on_reminder()), which says when a reminder is
 *    kept, and only then is it confirmed.
 *
 * Threads: a carehub_t is not thread-safe; use it from one thread (all calls,
 * and the callbacks, which run inside carehub_poll()). Different carehub_t
 * objects may be used from different threads. carehub_strerror() and
 * carehub_version() are thread-safe.
 *
 * Errors: functions returning int give CAREHUB_OK (0) or a negative
 * carehub_err_t; carehub_last_error(c) is a sentence saying what went wrong.
 *
 * Out of memory is an error (CAREHUB_ENOMEM, or an event left in the spool to
 * be resent), never an abort.
 *
 * Build and link: pkg-config --cflags --libs libcarehub (shared library
 * libcarehub.so.0), or pkg-config --static --cflags --libs libcarehub for the
 * archive. The library exports the carehub_* functions only.
 */
#ifndef CAREHUB_H
#define CAREHUB_H

#include <stddef.h>
#include <stdint.h>

#include "carehub_wire.h" /* CAREHUB_ID_MAX: ids are at most 64 bytes */

#ifdef __cplusplus
extern "C" {
#endif

/* What the library exports: it is built with hidden visibility, so nothing
 * but the carehub_* functions below is visible to a program that links it. */
#if defined(__GNUC__) && __GNUC__ >= 4
#define CAREHUB_API __attribute__((visibility("default")))
#else
#define CAREHUB_API
#endif

typedef struct carehub carehub_t;

typedef enum {
    CAREHUB_OK = 0,
    CAREHUB_EINVAL = -1,     /* a bad argument (e.g. an id not of 1–64 [A-Za-z0-9._:-]) */
    CAREHUB_ESPOOL = -2,     /* the spool (outbox) cannot be opened or written */
    CAREHUB_ENET = -3,       /* ZeroMQ failed (bad endpoint, bad key) */
    CAREHUB_ETIMEOUT = -4,   /* carehub_flush(): time ran out with events still unacknowledged */
    CAREHUB_EREFUSED = -5,   /* the broker refused (hello unauthorized; see last_error) */
    CAREHUB_EJSON = -6,      /* a body is not a JSON object */
    CAREHUB_ENOMEM = -7,     /* out of memory (the library never aborts on it) */
} carehub_err_t;

CAREHUB_API const char *carehub_strerror(int err);
CAREHUB_API const char *carehub_version(void);

/* ---- configuration --------------------------------------------------------- */

typedef struct {
    const char *endpoint;     /* e.g. "tcp://127.0.0.1:5570" (required) */
    const char *agent;        /* the agent id, as configured on the broker (required) */
    const char *spool_dir;    /* the outbox directory, created 0700 if missing; refused
                                 when it is a symbolic link or not a directory, is not
                                 owned by the effective uid, or group or others may write
                                 in it. NULL: no spool, a handle for carehub_request()
                                 only (carehub_submit() gives CAREHUB_EINVAL) */
    const char *software;     /* sent in hello; default "libcarehub/<version>" */
    /* CURVE (broker.security: curve); all three or none: */
    const char *secret_key;   /* the agent's secret key, 40 Z85 chars */
    const char *public_key;   /* the agent's public key, 40 Z85 chars */
    const char *server_key;   /* the broker's public key, 40 Z85 chars */
    int request_timeout_ms;   /* resend after this long without an answer; default 3000 */
    int max_backoff_ms;       /* longest wait between resends; default 30000 */
} carehub_opts_t;

/* Read a key file (CONFIG.md: 40 Z85 chars on the first line) into out[41].
 * For a public key (the broker's); on failure errno says why (EINVAL: not a
 * key, or not a regular file; EFBIG: over 4 KiB, which no key file is). */
CAREHUB_API int carehub_read_key(const char *path, char out[41]);

/* Read a secret key file as carehub_read_key() does, but only the file itself,
 * private to its owner. CAREHUB_EINVAL with errno ELOOP when path is a symbolic
 * link (opened O_NOFOLLOW), EPERM when group or others may access the file
 * (mode & 077: chmod 600 it), EISDIR or EINVAL when it is not a regular file,
 * EINVAL when its first line is not a key, or open(2)'s errno. */
CAREHUB_API int carehub_read_secret_key(const char *path, char out[41]);

/* ---- callbacks --------------------------------------------------------------- */

/* The broker acknowledged an event: `ref` is your event id, `event` and `case`
 * the broker's ids; duplicate is 1 when it had it already. */
typedef void (*carehub_ack_fn)(void *ud, const char *ref, const char *event, const char *case_id,
                               int duplicate);

/* The broker refused a message for good. The event (if it was one) has left
 * the outbox. `field` may be NULL. */
typedef void (*carehub_nack_fn)(void *ud, const char *ref, const char *code, const char *error,
                                const char *field);

/* A push: the whole message as a JSON object text (`case` or `outcome`,
 * PROTOCOL §5–6). Outcomes are confirmed with `received` after this returns;
 * with no on_push they are not confirmed (the broker keeps them for an agent
 * that shows them). Pushes may repeat (after each hello): treat the same id as
 * the same message. */
typedef void (*carehub_push_fn)(void *ud, const char *op, const char *json);

/* A reply to carehub_request(): the broker's answer as JSON text. In replies and
 * pushes, msgpack bin values (the trail's hashes in a `query what:"trail"`
 * answer) are strings of their bytes in lowercase hex. */
typedef void (*carehub_reply_fn)(void *ud, const char *id, const char *json);

typedef struct {
    carehub_ack_fn on_ack;
    carehub_nack_fn on_nack;
    carehub_push_fn on_push;
    carehub_reply_fn on_reply;
    void *ud;
} carehub_callbacks_t;

/* A `reminder` push (PROTOCOL §9, role director): the contact or home visit of
 * the child `child` (its id) of kind `kind` ("contact" | "home_visit") is due
 * at `due` (ms since the epoch); `id` is the reminder's id and `json` the whole
 * message as a JSON object text (for fields added later). Return 0 once the
 * reminder is kept where it survives a crash (a file fsync'ed, a database
 * commit): the library then confirms it with `received` and the broker does
 * not send it again. Any other value leaves it unconfirmed: the broker sends it
 * again after the next hello. The same id may come more than once (a
 * `received` lost on the way): treat it as the same reminder. The strings are
 * valid until the handler returns. */
typedef int (*carehub_reminder_fn)(void *ud, const char *id, const char *child, const char *kind,
                                   int64_t due, const char *json);

/* ---- life cycle ---------------------------------------------------------------- */

/* Open the spool and connect (connecting never blocks: the broker may be
 * down). NULL with *err set on failure; `errbuf` gets a sentence. */
CAREHUB_API carehub_t *carehub_new(const carehub_opts_t *opts, const carehub_callbacks_t *cb, int *err,
                       char *errbuf, size_t errlen);

/* Close the socket and the spool; what is still unacknowledged stays in the
 * spool for the next run. Nulls *c; safe on NULL and twice. */
CAREHUB_API void carehub_destroy(carehub_t **c);

CAREHUB_API const char *carehub_last_error(const carehub_t *c);

/*
 * Extension: hand `reminder` pushes to fn (with ud), from the next
 * carehub_poll() on; fn NULL removes the handler. Without one, a reminder goes
 * to on_push (op "reminder") if there is one and is never confirmed (the broker
 * keeps re-sending it to an agent program that keeps it). A reminder without
 * an id, a child id, a kind or an integer `due` is ignored (carehub_last_error()
 * says so). CAREHUB_OK, or CAREHUB_EINVAL when c is NULL or inside a callback.
 */
CAREHUB_API int carehub_on_reminder(carehub_t *c, carehub_reminder_fn fn, void *ud);

/* ---- sending ------------------------------------------------------------------- */

/*
 * Submit an event: `type` ("absence", …), `at` (ms since the epoch; 0 = now),
 * `body_json` (a JSON object text, validated by the broker). `id` is the
 * idempotency key: pass your own to make retries across runs safe (e.g.
 * school + student + date), or NULL to get a random one in id_out (65 bytes).
 * The event is on disk (committed to the spool) when this returns CAREHUB_OK.
 * Submitting an id that is already in the spool is not an error (nothing is
 * added).
 */
CAREHUB_API int carehub_submit(carehub_t *c, const char *type, int64_t at, const char *body_json,
                   const char *id, char id_out[CAREHUB_ID_MAX + 1]);

/*
 * Extension: as carehub_submit(), and store `tag` (any NUL-terminated text,
 * e.g. where the event came from; NULL for none) with the event in the spool.
 * While on_ack or on_nack runs for that event — in this run or a later one —
 * carehub_event_tag() returns it. (carehub-send keeps FILE:LINE and the input
 * line there, to report a refusal that arrives after a restart.)
 */
CAREHUB_API int carehub_submit_tagged(carehub_t *c, const char *type, int64_t at, const char *body_json,
                          const char *id, const char *tag, char id_out[CAREHUB_ID_MAX + 1]);

/* Extension: inside on_ack/on_nack for an event, the tag it was submitted with;
 * NULL when it has none or outside such a callback. Valid until the callback
 * returns. */
CAREHUB_API const char *carehub_event_tag(const carehub_t *c);

/*
 * Send a request that is not an event (case_ack, case_update, or any op the
 * broker adds), given as a JSON object text without v/id: e.g.
 * {"op":"case_ack","assignment":"as-…","by":"王警官"}. Not spooled: it is
 * resent while unanswered until carehub_destroy(). The answer reaches on_reply
 * (ack) or on_nack. id_out (65 bytes) gets the message id.
 */
CAREHUB_API int carehub_request(carehub_t *c, const char *json, char id_out[CAREHUB_ID_MAX + 1]);

/* Events in the spool not yet acknowledged (plus requests in flight). */
CAREHUB_API size_t carehub_pending(const carehub_t *c);

/* 1 once the broker answered this connection's hello with welcome. */
CAREHUB_API int carehub_connected(const carehub_t *c);

/*
 * Extension (1.2): the broker's `broker.timezone` from the last welcome, an IANA
 * name such as "Asia/Shanghai", or NULL when the broker has none configured (or
 * before the first welcome). The zone people read times in: a program that
 * shows times sets TZ to it (setenv + tzset) and formats with localtime_r().
 * The wire stays in UTC ms. Valid until the next carehub_poll().
 */
CAREHUB_API const char *carehub_timezone(const carehub_t *c);

/*
 * Extension (1.2): the display name of agency `agency` (its id, e.g. "police")
 * from the last welcome, e.g. "滨海新区公安局", or NULL when the broker sent
 * none for it. Only agents of role agency and supervisor are told the names.
 * Valid until the next carehub_poll().
 */
CAREHUB_API const char *carehub_agency_name(const carehub_t *c, const char *agency);

/* ---- driving it --------------------------------------------------------------- */

/* Do the work that is due and wait up to timeout_ms (0 = do not wait, -1 =
 * until something happens) for replies and pushes; callbacks run here.
 * Returns CAREHUB_OK or an error (CAREHUB_EREFUSED when hello was refused). */
CAREHUB_API int carehub_poll(carehub_t *c, int timeout_ms);

/* Poll until nothing is pending or timeout_ms passed: CAREHUB_OK or CAREHUB_ETIMEOUT
 * (or at once what carehub_poll() gave: CAREHUB_EREFUSED, CAREHUB_ESPOOL). */
CAREHUB_API int carehub_flush(carehub_t *c, int timeout_ms);

/* The ZeroMQ socket's file descriptor (ZMQ_FD) for an outside event loop, and
 * how long that loop may sleep before calling carehub_poll(c, 0).
 * The fd changes when the library reopens its socket (a broker that does not
 * answer, Lazy Pirate): read carehub_fd() again after every carehub_poll().
 * ZMQ_FD is edge-triggered: after it turns readable, call carehub_poll(c, 0),
 * which reads everything waiting. carehub_next_timeout_ms() is -1 when no
 * timer is due (wait for the fd only). */
CAREHUB_API int carehub_fd(const carehub_t *c);
CAREHUB_API int carehub_next_timeout_ms(const carehub_t *c);

#ifdef __cplusplus
}
#endif

#endif
