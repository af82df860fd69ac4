/*
 * hook.h — outgoing notifications: signed HTTP POSTs to webhook receivers and
 * SMS gateways (PROTOCOL §7), through libcurl's multi interface inside the
 * broker's zmq_poll loop. Nothing here blocks.
 *
 * Signing follows Standard Webhooks: headers webhook-id (stable across
 * retries), webhook-timestamp (Unix seconds of this attempt) and
 * webhook-signature "v1,<base64 HMAC-SHA256(key, id.timestamp.body)>", where
 * the channel secret is "whsec_<base64 key>". HMAC and base64 are libsodium's.
 *
 * Delivery: a 2xx answer delivers. Anything else — a connection error, a
 * timeout (the channel's `timeout`), a non-2xx status — is retried: the first
 * retry within 2 s, then doubling with jitter, capped at 10 minutes, honouring
 * Retry-After (seconds or HTTP date) when larger; until the message is older
 * than the channel's `max_age`, then it has failed for good. A 410 Gone stops
 * at once (failed). Redirects are not followed; only http and https. First
 * attempts may reuse a kept-alive connection; a retry always opens a new one.
 * A channel has at most its `concurrency` (default 64) deliveries in flight;
 * the rest wait their turn in order.
 *
 * SSRF guard: every connection's resolved address must lie inside
 * broker.webhook_allow (checked in CURLOPT_OPENSOCKETFUNCTION, so DNS
 * rebinding or odd address spellings cannot get around the check done at
 * config load). A refused address is a failed attempt, retried like others.
 *
 * Persistence is the caller's: the broker keeps pending notifications in an
 * LMDB outbox and re-submits them after a restart (with their original
 * created_ms, so max_age still counts from the first attempt).
 *
 * Times for retry scheduling and max_age come from clock_now_ms() (so tests
 * can move them); curl's own timeouts are real time.
 */
#ifndef CAREHUB_HOOK_H
#define CAREHUB_HOOK_H

#include <stddef.h>
#include <stdint.h>
#include <zmq.h>

#include "config.h"

typedef struct hook hook_t;

typedef enum {
    HOOK_DELIVERED = 0, /* a 2xx answer */
    HOOK_FAILED,        /* max_age passed, or 410 Gone: given up */
} hook_outcome_t;

/* Told once per message when it is delivered or given up. `attempts` counts
 * every attempt made; `last_error` says what happened last ("HTTP 500",
 * "timeout", "address 10.0.0.1 not in webhook_allow", …), "" on delivery. */
typedef void (*hook_done_fn)(void *ud, const char *webhook_id, hook_outcome_t outcome,
                             int attempts, const char *last_error);

/* Told after every attempt (for the trail and metrics). http_status is 0 (no answer, or
 * a status line whose code is outside 100..999: error says "invalid HTTP status N") or
 * the receiver's 100..999; error is "" after a 2xx and never "" otherwise. */
typedef void (*hook_attempt_fn)(void *ud, const char *webhook_id, int attempt, long http_status,
                                const char *error);

hook_t *hook_new(const config_t *cfg, hook_done_fn done, hook_attempt_fn attempt, void *ud);
/* Abort transfers in flight (they are still in the caller's outbox) and free; nulls *h. */
void hook_destroy(hook_t **h);

/*
 * Queue one message for `channel`: POST `json_body` (copied) to the channel's
 * url, signed with the channel's secret, with the header webhook-id =
 * `webhook_id` (1–64 chars, unique per message). `created_ms` is when the
 * message was first made (max_age counts from it). The first attempt starts
 * at the next hook_perform(). Returns 0, or -1 if the id is already queued.
 */
int hook_submit(hook_t *h, const config_channel_t *channel, const char *webhook_id,
                const char *json_body, int64_t created_ms);

/* Number of messages queued or in flight. */
size_t hook_pending(const hook_t *h);

/*
 * Poll integration (libcurl's socket interface; no FD_SETSIZE limit).
 * hook_socket_count() is how many sockets curl watches now: give
 * hook_pollitems() that much room. hook_pollitems() fills up to `max`
 * zmq_pollitem_t with them (fd-based items) and returns how many (sockets it
 * had no room for are checked every 10 ms instead); hook_timeout_ms() is how
 * long the loop may sleep before a hook_perform must run (the earliest of
 * curl's timer and the next attempt), or -1 for no limit. After the poll, hook_perform_items() with the same items drives the
 * transfers whose sockets are ready, curl's timer, finished transfers (the
 * callbacks) and due attempts. hook_perform() does the same without poll
 * results: curl checks every socket itself (tests).
 *
 * Logging at volume: a delivered notice is not logged on its own (metrics
 * count it); each channel's deliveries and retries are summed up in one line
 * per 10 s or so (written at the first wake-up after the 10 s), the first retry
 * of such a window logged at once; a notice given up is always logged.
 */
size_t hook_socket_count(const hook_t *h);
int hook_pollitems(hook_t *h, zmq_pollitem_t *items, int max);
long hook_timeout_ms(hook_t *h);
void hook_perform_items(hook_t *h, const zmq_pollitem_t *items, int n);
void hook_perform(hook_t *h);

/*
 * Sign: fills `sig` (NUL-terminated, at most `sigsize` bytes) with
 * "v1,<base64 HMAC-SHA256(key, id.timestamp.body)>". `secret` is "whsec_<base64>".
 * Returns 0, or -1 when the secret is malformed or sig too small.
 */
int hook_sign(const char *secret, const char *webhook_id, int64_t timestamp_s, const char *body,
              size_t body_len, char *sig, size_t sigsize);

/* Delay before retry number `attempt` (1 = the first retry): about 1 s then
 * doubling, with jitter, capped at 10 minutes; never below `retry_after_ms`. */
int64_t hook_backoff_ms(int attempt, int64_t retry_after_ms);

#endif
