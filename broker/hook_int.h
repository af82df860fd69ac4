/*
 * hook_int.h — what the pieces of the webhook engine share: the message, channel
 * and engine structures and the functions each piece offers the others.
 * Private to broker/hook.c (the engine: lifecycle, retries, libcurl's multi
 * socket interface), hook_queue.c (where messages wait: id hash, due-time heap,
 * channels) and hook_request.c (one attempt's signed HTTP request and its
 * answer). The module's API is hook.h.
 */
#ifndef CAREHUB_HOOK_INT_H
#define CAREHUB_HOOK_INT_H

#include <curl/curl.h>
#include <netinet/in.h>
#include <sodium.h>
#include <stddef.h>
#include <stdint.h>

#include "hmap.h"
#include "hook.h"

#define HOOK_ID_MAX 64                   /* webhook-id length, as util_valid_id() */
#define HOOK_KEY_MIN 16                  /* bytes of HMAC key; as config.c's valid_secret() */
#define HOOK_ERR_LEN 200

typedef enum { MSG_QUEUED = 0, MSG_BLOCKED, MSG_IN_FLIGHT, MSG_FINISHED } msg_state_t;

typedef struct hook_msg hook_msg_t;

/* Per channel id: how many of its transfers are in flight, and who waits for a slot. */
typedef struct hook_chan {
    struct hook_chan *next;
    char *id;
    int in_flight;
    int limit;                  /* the channel's `concurrency` (transfers in flight at most) */
    hook_msg_t *blocked_head, *blocked_tail; /* BLOCKED messages, oldest first */
    /* quiet logs at volume: counted, then summed up once per HOOK_LOG_EVERY_MS */
    int64_t log_next;           /* monotonic ms: the next summary (0: none pending) */
    uint64_t delivered;         /* delivered since the last summary */
    uint64_t retried;           /* attempts that failed and will be retried, since then (not shown) */
    int retry_shown;            /* the window's first retry was logged on its own */
    char last_retry[HOOK_ERR_LEN]; /* what the last of those said */
} hook_chan_t;

/* A socket curl wants watched (CURLMOPT_SOCKETFUNCTION). */
typedef struct {
    curl_socket_t fd;
    short events;               /* ZMQ_POLLIN | ZMQ_POLLOUT */
} hook_sock_t;

struct hook_msg {
    hook_t *h;
    hook_chan_t *chan;
    hook_msg_t *bnext;          /* chan's blocked FIFO */
    size_t heap_i;              /* index in h->heap while QUEUED */
    msg_state_t state;
    char id[HOOK_ID_MAX + 1];   /* webhook-id */
    char *url;                  /* copied from the channel */
    uint8_t *key;               /* decoded channel secret (NULL when malformed) */
    size_t key_len;
    char *body;                 /* the JSON text, copied */
    size_t body_len;
    int64_t deadline_ms;        /* created_ms + max_age: no attempt starts after it */
    int64_t due_ms;             /* next attempt (clock_now_ms() time) */
    uint64_t seq;               /* submission order: FIFO among equal due times */
    long timeout_ms;            /* per attempt, real time */
    int attempts;               /* attempts started so far */
    char error[HOOK_ERR_LEN];   /* what happened last; "" when nothing yet */
    int config_error;           /* 1: error[] says why the channel cannot work: fail at once */

    /* the attempt in flight */
    CURL *easy;
    struct curl_slist *headers;
    size_t resp_bytes;          /* response body bytes seen (dropped) */
    int resp_capped;            /* hung up after HOOK_RESPONSE_CAP bytes */
    char refused[INET6_ADDRSTRLEN + 16]; /* address the SSRF guard refused, "" if none */
    char errbuf[CURL_ERROR_SIZE];
};

struct hook {
    const config_t *cfg;
    hook_done_fn done;
    hook_attempt_fn attempt;
    void *ud;
    CURLM *multi;

    hmap_t by_id;               /* webhook-id -> hook_msg_t *: every message not yet finished */

    hook_msg_t **heap;          /* QUEUED messages, min-heap on (due_ms, seq) */
    size_t heap_len, heap_cap;

    hook_chan_t *chans;
    int in_flight;
    uint64_t seq;
    hook_sock_t *socks;         /* what curl wants watched */
    size_t n_socks, cap_socks;
    int64_t timer_due;          /* monotonic ms for CURL_SOCKET_TIMEOUT; -1: none */
    int poll_truncated;         /* the last hook_pollitems() had more sockets than room */
    int warned_truncated;
};

/* ---- hook_queue.c: where messages wait ---------------------------------- */

/* The only place a message's state changes (logged at debug level). */
void hook_set_state(hook_msg_t *m, msg_state_t s);

/* The id index: every message not yet finished, by webhook-id. */
void hook_ids_init(hook_t *h);
hook_msg_t *hook_ids_find(const hook_t *h, const char *id);
void hook_ids_add(hook_t *h, hook_msg_t *m);
void hook_ids_remove(hook_t *h, hook_msg_t *m);

/* The due-time heap: push makes m QUEUED; pop takes the earliest (h->heap_len > 0). */
void hook_heap_push(hook_t *h, hook_msg_t *m);
hook_msg_t *hook_heap_pop(hook_t *h);

/* Channels: found or made by id (limit <= 0: the default concurrency); a message
 * BLOCKED on its channel's FIFO; the oldest one back to the heap when a slot of
 * the channel comes free. */
hook_chan_t *hook_chan_get(hook_t *h, const char *id, int limit);
void hook_chan_block(hook_chan_t *c, hook_msg_t *m);
void hook_chan_unblock_one(hook_t *h, hook_chan_t *c);
void hook_chans_free(hook_t *h);

/* Quiet logs at volume: open the channel's summary window if none is open; write
 * the summary line of every channel whose window has passed. */
void hook_chan_log_window(hook_chan_t *c);
void hook_chan_log_summaries(hook_t *h);

/* ---- hook_request.c: one attempt's HTTP request and answer -------------- */

/* Decode "whsec_<standard base64>" into a fresh key; 0, or -1 when malformed. */
int hook_decode_secret(const char *secret, uint8_t **key, size_t *key_len);

/* Build the attempt's signed request: its headers (m->headers) and easy handle
 * (m->easy), not yet in the multi handle. 0, or -1 with m->error set (m->headers
 * is then the caller's to free). */
int hook_request_new(hook_t *h, hook_msg_t *m);

/* Read the answer of the finished transfer of `m` (curl's result `res`): returns
 * the HTTP status (0: no answer, or one outside 100..999), sets m->error to what
 * happened ("" after a 2xx) and *retry_after_ms to the Retry-After wait (-1: none). */
long hook_request_result(hook_msg_t *m, CURLcode res, int64_t *retry_after_ms);

#endif
