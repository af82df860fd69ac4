/*
 * phone.h — acknowledging from a phone (PROTOCOL §11): the links and reply codes
 * an SMS about an unacknowledged assignment carries, and the HTTP listener on
 * broker.http.listen that takes them (httpd.h, inside the loop).
 *
 * What a text carries (phone_issue(), called by the notice code in the notice's
 * own transaction, once per recipient of a channel with can_acknowledge):
 *   - a link <public_url>/a/<token>: 32 random bytes (libsodium), base64url;
 *     only BLAKE2b(token) is stored, with the assignment, the recipient and the
 *     expiry (24 h, or the acknowledgement, whichever is first); used once;
 *   - a 6-digit code, one per assignment and recipient (the same in every text
 *     about it), unique among the live codes of that number (live: its
 *     assignment not yet acknowledged).
 *
 * What the listener serves:
 *   GET  /a/<token>    a page with the case id, agency and deadline and a confirm
 *                      button (never the child); 404 for an unknown, used or
 *                      expired link
 *   POST /a/<token>    acknowledges with by "sms:<phone>"
 *   POST /sms/inbound  the gateway's replies {"from","text"}, signed like §7's
 *                      webhooks with a can_acknowledge channel's secret: unsigned
 *                      or badly signed 401, over 64 KiB 413, other methods 405,
 *                      anything else 200 (a live code from the number it was sent
 *                      to acknowledges)
 *   /, /login, /cases, … the supervisors' web view: handed to web.h (web_owns())
 * Wrong codes are limited per number: after PHONE_WRONG_MAX in an hour, the
 * number's replies acknowledge nothing until the hour is over. Every phone
 * acknowledgement and every refused attempt is in the trail (phone_ack,
 * phone_refused, with the number as actor).
 *
 * Acknowledging is an op of the turn (turn.h): the request's connection is
 * suspended until the turn's commit, so an answer means it is on disk, and a
 * thousand requests cost the loop one turn's write, not a thousand.
 *
 * Errors: phone_new() NULL with a sentence; phone_issue() a store_rc_t.
 */
#ifndef CAREHUB_PHONE_H
#define CAREHUB_PHONE_H

#include <stddef.h>
#include <stdint.h>
#include <zmq.h>

#include "config.h"
#include "job.h"
#include "store.h"
#include "turn.h"

#define PHONE_TOKEN_BYTES 32              /* random bytes of a link's token */
#define PHONE_LINK_TTL_MS (24LL * 3600 * 1000)
#define PHONE_WRONG_MAX 5                 /* wrong codes per number and hour */
#define PHONE_INBOUND_MAX (64 * 1024)     /* bytes of an inbound body */
#define PHONE_SIG_TOLERANCE_S 300         /* webhook-timestamp within this of the clock */
#define PHONE_MAX_CONNECTIONS 1024       /* at once; more wait in the listen backlog */
#define PHONE_BACKLOG 1024               /* a burst of links (a page to many phones) */
#define PHONE_CODES_MAX 8                 /* codes looked at in one reply */

typedef struct phone phone_t;

/* Listen on cfg->http_listen; the turn is where acknowledgements are written;
 * jobs (may be NULL) where the web view checks passwords and verifies the
 * trail. NULL with err on failure. */
phone_t *phone_new(const config_t *cfg, store_t *st, turn_t *turn, job_set_t *jobs, char *err,
                   size_t errlen);
/* Answers every request still waiting (503), stops the listener. Call after the
 * turn is destroyed (its ops' `done` still reach the listener). */
void phone_destroy(phone_t **p);
int phone_port(const phone_t *p);
int phone_pollitems(phone_t *p, zmq_pollitem_t *items, int max);
long phone_timeout_ms(phone_t *p);
void phone_perform(phone_t *p);

/* In a write transaction: make the link and code for one recipient of a text
 * about `assignment` (not yet acknowledged) and write into `suffix` what the
 * text ends with: " 回复 123456 确认，或打开 <url>". agency and ack_by are for
 * the link's page. 0 or a store_rc_t. */
int phone_issue(store_txn_t *t, const char *assignment, const char *case_id,
                const char *agency, int64_t ack_by, const char *to, int64_t now, char *suffix,
                size_t size);

/* An inbound body {"from": "...", "text": "..."}: 0 with the number copied to
 * from (NUL-terminated) and up to PHONE_CODES_MAX 6-digit codes (each a run of
 * exactly six ASCII digits in the text) in codes; -1 when it is not such a body. */
int phone_parse_inbound(const char *body, size_t len, char *from, size_t fromsize,
                        char codes[][7], size_t *ncodes);

#endif
