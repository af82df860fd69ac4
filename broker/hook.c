/*
 * hook.c — signed webhook POSTs through libcurl's multi interface; see hook.h.
 * This is the engine: messages and their attempts, retries, and the integration
 * of libcurl's multi socket interface with the broker's poll loop. Where
 * messages wait (id hash, due-time heap, channels): hook_queue.c; one attempt's
 * signed request and its answer: hook_request.c; what they share: hook_int.h.
 *
 * Each queued message is in exactly one state (hook_set_state() is the only place
 * that changes it):
 *
 *   QUEUED    in the due-time heap, waiting for its next attempt (due_ms);
 *   BLOCKED   due, but its channel already has its `concurrency` transfers
 *             in flight: parked on the channel's FIFO until one of them ends;
 *   IN_FLIGHT an easy handle is in the multi handle;
 *   FINISHED  delivered or given up; the done callback runs, then it is freed.
 *
 * Every message is also in the id hash (duplicate check, hook_destroy's walk)
 * until it finishes. Retry times and max_age use clock_now_ms(); curl's own
 * timeouts and the webhook-timestamp header are real time (see hook_request_new).
 *
 * Callbacks run only inside hook_perform(). They may call hook_submit() (it
 * only queues: the new message starts at a later hook_perform() step) but
 * not hook_destroy().
 *
 * Poll integration is libcurl's socket interface: CURLMOPT_SOCKETFUNCTION
 * tells which sockets to watch for what (kept in h->socks), and
 * CURLMOPT_TIMERFUNCTION when to call curl_multi_socket_action() with
 * CURL_SOCKET_TIMEOUT. The loop polls those sockets (zmq_poll uses poll(): no
 * FD_SETSIZE ceiling) and hands back what became ready; only those transfers
 * run. Connections are kept alive in the multi handle's cache and reused by the
 * next first attempt to the same receiver; a channel has up to its
 * `concurrency` transfers (so connections) at once.
 */
#include "hook_int.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "clock.h"
#include "log.h"
#include "util.h"

#define HOOK_MAX_IN_FLIGHT 4096          /* transfers at once, all channels: bounds sockets */
#define HOOK_DEFAULT_TIMEOUT_MS 5000     /* config.c's defaults, for hand-built channels */
#define HOOK_DEFAULT_MAX_AGE_MS (24LL * 3600 * 1000)
#define HOOK_BACKOFF_FIRST_MS 1000       /* first retry: 750..1250 ms */
#define HOOK_BACKOFF_CAP_MS 600000       /* 10 minutes */
#define HOOK_POLL_FALLBACK_MS 10         /* sockets the loop had no room to poll: checked this often */
#define HOOK_LATE_MS 1000                /* an attempt due by max_age still starts this late */

/* ---- small helpers ----------------------------------------------------- */

static long tmin(long a, long b)
{
    if (a < 0)
        return b;
    if (b < 0)
        return a;
    return a < b ? a : b;
}

int64_t hook_backoff_ms(int attempt, int64_t retry_after_ms)
{
    if (attempt < 1)
        attempt = 1;
    /* base doubles from 1 s; 2^20 s is far past the cap, so stop shifting there */
    int64_t base = attempt > 20 ? HOOK_BACKOFF_CAP_MS
                                : (int64_t)HOOK_BACKOFF_FIRST_MS << (attempt - 1);
    if (base > HOOK_BACKOFF_CAP_MS)
        base = HOOK_BACKOFF_CAP_MS;
    /* ±25 % jitter so that receivers coming back are not hit in lockstep;
     * at the cap it only goes down, never past 10 minutes. */
    int64_t d = base * 3 / 4;
    if (sodium_init() >= 0)
        d += (int64_t)randombytes_uniform((uint32_t)(base / 2 + 1));
    else
        d = base;
    if (d > HOOK_BACKOFF_CAP_MS)
        d = HOOK_BACKOFF_CAP_MS;
    if (retry_after_ms > d)
        d = retry_after_ms;
    return d;
}

/* ---- messages ----------------------------------------------------------- */

static void msg_free(hook_msg_t *m)
{
    if (!m)
        return;
    if (m->key) {
        sodium_memzero(m->key, m->key_len);
        free(m->key);
    }
    free(m->url);
    free(m->body);
    free(m);
}

/* Take the easy handle out of the multi and free the attempt's resources. */
static void attempt_release(hook_t *h, hook_msg_t *m)
{
    if (m->easy) {
        CURLMcode mc = curl_multi_remove_handle(h->multi, m->easy);
        if (mc != CURLM_OK)
            log_error("hook: %s: curl_multi_remove_handle: %s", m->id, curl_multi_strerror(mc));
        curl_easy_cleanup(m->easy);
        m->easy = NULL;
        h->in_flight--;
        m->chan->in_flight--;
    }
    curl_slist_free_all(m->headers);
    m->headers = NULL;
}

/* Delivered or given up: leave the hash, tell the caller, free. */
static void finish(hook_t *h, hook_msg_t *m, hook_outcome_t outcome)
{
    hook_ids_remove(h, m);
    hook_set_state(m, MSG_FINISHED);
    if (outcome == HOOK_DELIVERED) { /* counted (metrics, the channel's summary), not a line each */
        log_debug("hook: %s channel %s delivered after %d attempt%s", m->id, m->chan->id,
                  m->attempts, m->attempts == 1 ? "" : "s");
        m->chan->delivered++;
        hook_chan_log_window(m->chan);
    } else
        log_warn("hook: %s channel %s failed for good after %d attempt%s: %s", m->id,
                 m->chan->id, m->attempts, m->attempts == 1 ? "" : "s", m->error);
    if (h->done)
        h->done(h->ud, m->id, outcome, m->attempts,
                outcome == HOOK_DELIVERED ? "" : m->error);
    msg_free(m);
}

/*
 * An attempt ended (m->error says how; status 0 = no answer). Tell the caller,
 * then deliver, give up, or schedule the next attempt.
 */
static void attempt_ended(hook_t *h, hook_msg_t *m, long status, int64_t retry_after_ms)
{
    int delivered = status >= 200 && status <= 299;
    if (delivered)
        m->error[0] = '\0';
    if (h->attempt)
        h->attempt(h->ud, m->id, m->attempts, status, m->error);
    if (delivered) {
        finish(h, m, HOOK_DELIVERED);
        return;
    }
    if (status == 410) {
        finish(h, m, HOOK_FAILED);
        return;
    }
    int64_t now = clock_now_ms();
    if (now >= m->deadline_ms) {
        finish(h, m, HOOK_FAILED);
        return;
    }
    int64_t delay = hook_backoff_ms(m->attempts, retry_after_ms);
    if (now + delay > m->deadline_ms) {
        if (retry_after_ms > 0 && now + retry_after_ms > m->deadline_ms) {
            /* the receiver asks us to wait past max_age: honour it by stopping */
            size_t len = strlen(m->error);
            util_fmt(m->error + len, sizeof m->error - len, " (Retry-After beyond max_age)");
            finish(h, m, HOOK_FAILED);
            return;
        }
        delay = m->deadline_ms - now; /* one last attempt right at max_age */
    }
    m->due_ms = now + delay;
    hook_chan_t *c = m->chan;
    if (!c->retry_shown++) /* the first of a window: at once */
        log_info("hook: %s channel %s attempt %d: %s; retry in %" PRId64 " ms", m->id, c->id,
                 m->attempts, m->error, delay);
    else /* the rest: in the channel's summary */
        c->retried++;
    util_fmt(c->last_retry, sizeof c->last_retry, "%s", m->error);
    hook_chan_log_window(c);
    hook_heap_push(h, m);
}

/* ---- curl callbacks ----------------------------------------------------- */

/* CURLMOPT_SOCKETFUNCTION: what to watch on a socket, or stop watching it. */
static int socket_cb(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
    (void)easy;
    (void)socketp;
    hook_t *h = userp;
    size_t i = 0;
    while (i < h->n_socks && h->socks[i].fd != fd)
        i++;
    if (what == CURL_POLL_REMOVE) {
        if (i < h->n_socks)
            h->socks[i] = h->socks[--h->n_socks];
        return 0;
    }
    if (i == h->n_socks) {
        if (h->n_socks == h->cap_socks) {
            h->cap_socks = h->cap_socks ? h->cap_socks * 2 : 64;
            h->socks = xrealloc(h->socks, h->cap_socks * sizeof *h->socks);
        }
        h->socks[h->n_socks++].fd = fd;
    }
    h->socks[i].events = (short)((what & CURL_POLL_IN ? ZMQ_POLLIN : 0) |
                                 (what & CURL_POLL_OUT ? ZMQ_POLLOUT : 0));
    return 0;
}

/* CURLMOPT_TIMERFUNCTION: when curl wants CURL_SOCKET_TIMEOUT (-1: never). */
static int timer_cb(CURLM *multi, long timeout_ms, void *userp)
{
    (void)multi;
    hook_t *h = userp;
    h->timer_due = timeout_ms < 0 ? -1 : util_mono_ms() + timeout_ms;
    return 0;
}

/* ---- attempts ----------------------------------------------------------- */

/* Set up one attempt and add it to the multi handle; 0, or -1 with m->error set. */
static int attempt_setup(hook_t *h, hook_msg_t *m)
{
    if (hook_request_new(h, m) != 0)
        return -1;
    CURL *e = m->easy;
    CURLMcode mc = curl_multi_add_handle(h->multi, e);
    if (mc != CURLM_OK) {
        util_fmt(m->error, sizeof m->error, "curl_multi_add_handle: %s", curl_multi_strerror(mc));
        curl_easy_cleanup(e);
        m->easy = NULL;
        return -1;
    }
    h->in_flight++;
    m->chan->in_flight++;
    hook_set_state(m, MSG_IN_FLIGHT);
    return 0;
}

static void attempt_start(hook_t *h, hook_msg_t *m)
{
    m->attempts++;
    log_debug("hook: %s channel %s attempt %d", m->id, m->chan->id, m->attempts);
    if (attempt_setup(h, m) != 0) {
        curl_slist_free_all(m->headers);
        m->headers = NULL;
        attempt_ended(h, m, 0, -1); /* a local failure: retried like the others */
    }
}

/* curl says the transfer of `m` is over with `res`. */
static void attempt_done(hook_t *h, hook_msg_t *m, CURLcode res)
{
    int64_t retry_after;
    long status = hook_request_result(m, res, &retry_after);
    attempt_release(h, m);
    hook_chan_unblock_one(h, m->chan);
    attempt_ended(h, m, status, retry_after);
}

/* Collect finished transfers. */
static void reap(hook_t *h)
{
    CURLMsg *cm;
    int left = 0;
    while ((cm = curl_multi_info_read(h->multi, &left)) != NULL) {
        if (cm->msg != CURLMSG_DONE)
            continue;
        CURL *e = cm->easy_handle;
        CURLcode res = cm->data.result; /* cm dies with the handle's removal */
        char *priv = NULL;
        if (curl_easy_getinfo(e, CURLINFO_PRIVATE, &priv) != CURLE_OK || !priv) {
            log_error("hook: finished transfer without its message");
            continue;
        }
        attempt_done(h, (hook_msg_t *)(void *)priv, res);
    }
}

/* A message that took a free slot of its channel is given up without an
 * attempt: the slot goes to the next one waiting (it would wait for a transfer
 * to end, and none may be in flight). */
static void pass_turn_on(hook_t *h, hook_chan_t *c)
{
    if (c->in_flight < c->limit)
        hook_chan_unblock_one(h, c);
}

/* Start every due attempt there is room for. */
static int start_due(hook_t *h)
{
    int started = 0;
    int64_t now = clock_now_ms();
    while (h->heap_len > 0 && h->in_flight < HOOK_MAX_IN_FLIGHT && h->heap[0]->due_ms <= now) {
        hook_msg_t *m = hook_heap_pop(h);
        if (m->config_error) {
            pass_turn_on(h, m->chan);
            finish(h, m, HOOK_FAILED);
            continue;
        }
        /* The last retry is due right at max_age (attempt_ended), and the loop
         * wakes at its due time or a little after: an attempt due by max_age
         * still starts when reached within HOOK_LATE_MS (else it would be skipped
         * whenever the wake-up is a millisecond late). Past that, or due after
         * max_age (resubmitted after a restart), it has failed. */
        if (now > m->deadline_ms &&
            (m->due_ms > m->deadline_ms || now - m->due_ms > HOOK_LATE_MS)) {
            if (!m->error[0])
                util_fmt(m->error, sizeof m->error, "max_age passed before an attempt");
            pass_turn_on(h, m->chan);
            finish(h, m, HOOK_FAILED);
            continue;
        }
        if (m->chan->in_flight >= m->chan->limit) {
            hook_chan_block(m->chan, m);
            continue;
        }
        attempt_start(h, m);
        started++;
    }
    return started;
}

/* ---- public ------------------------------------------------------------- */

hook_t *hook_new(const config_t *cfg, hook_done_fn done, hook_attempt_fn attempt, void *ud)
{
    if (!cfg)
        return NULL;
    if (sodium_init() < 0) {
        log_error("hook: libsodium failed to initialise");
        return NULL;
    }
    CURLcode gc = curl_global_init(CURL_GLOBAL_DEFAULT); /* reference-counted by curl */
    if (gc != CURLE_OK) {
        log_error("hook: curl_global_init: %s", curl_easy_strerror(gc));
        return NULL;
    }
    hook_t *h = xcalloc(1, sizeof *h);
    h->cfg = cfg;
    h->done = done;
    h->attempt = attempt;
    h->ud = ud;
    h->multi = curl_multi_init();
    if (!h->multi) {
        log_error("hook: curl_multi_init failed");
        free(h);
        curl_global_cleanup();
        return NULL;
    }
    h->timer_due = -1;
    if (curl_multi_setopt(h->multi, CURLMOPT_SOCKETFUNCTION, socket_cb) != CURLM_OK ||
        curl_multi_setopt(h->multi, CURLMOPT_SOCKETDATA, (void *)h) != CURLM_OK ||
        curl_multi_setopt(h->multi, CURLMOPT_TIMERFUNCTION, timer_cb) != CURLM_OK ||
        curl_multi_setopt(h->multi, CURLMOPT_TIMERDATA, (void *)h) != CURLM_OK) {
        log_error("hook: cannot set libcurl's socket callbacks");
        curl_multi_cleanup(h->multi);
        free(h);
        curl_global_cleanup();
        return NULL;
    }
    hook_ids_init(h);
    return h;
}

void hook_destroy(hook_t **ph)
{
    if (!ph || !*ph)
        return;
    hook_t *h = *ph;
    size_t aborted = 0;
    size_t pos = 0;
    for (hook_msg_t *m; (m = (hook_msg_t *)hmap_next(&h->by_id, &pos));) {
        if (m->state == MSG_IN_FLIGHT)
            aborted++;
        attempt_release(h, m);
        msg_free(m);
    }
    if (aborted)
        log_info("hook: %zu transfer%s aborted at shutdown (kept in the outbox)", aborted,
                 aborted == 1 ? "" : "s");
    CURLMcode mc = curl_multi_cleanup(h->multi); /* closes cached connections via close_socket */
    if (mc != CURLM_OK)
        log_error("hook: curl_multi_cleanup: %s", curl_multi_strerror(mc));
    curl_global_cleanup();
    hook_chans_free(h);
    hmap_free(&h->by_id);
    free(h->heap);
    free(h->socks);
    free(h);
    *ph = NULL;
}

/* 1 when url starts with http:// or https:// (any case). */
static int http_url(const char *url)
{
    return url && (strncasecmp(url, "http://", 7) == 0 || strncasecmp(url, "https://", 8) == 0);
}

int hook_submit(hook_t *h, const config_channel_t *channel, const char *webhook_id,
                const char *json_body, int64_t created_ms)
{
    if (!h || !channel || !webhook_id || !json_body)
        return -1;
    size_t id_len = strlen(webhook_id);
    if (!util_valid_id(webhook_id, id_len)) {
        log_warn("hook: refused a message with an invalid webhook-id (1-64 of [A-Za-z0-9._:-])");
        return -1;
    }
    if (hook_ids_find(h, webhook_id)) {
        log_warn("hook: %s is already queued", webhook_id);
        return -1;
    }
    const char *chan_id = channel->id ? channel->id : "?";
    hook_msg_t *m = xcalloc(1, sizeof *m);
    m->h = h;
    m->chan = hook_chan_get(h, chan_id, channel->concurrency);
    memcpy(m->id, webhook_id, id_len + 1);
    m->body_len = strlen(json_body);
    m->body = xstrndup(json_body, m->body_len);
    m->url = xstrdup(channel->url ? channel->url : "");
    m->timeout_ms = channel->timeout_ms > 0 ? (long)channel->timeout_ms : HOOK_DEFAULT_TIMEOUT_MS;
    int64_t max_age = channel->max_age_ms > 0 ? channel->max_age_ms : HOOK_DEFAULT_MAX_AGE_MS;
    m->deadline_ms = created_ms + max_age;
    m->seq = h->seq++;
    m->due_ms = clock_now_ms();

    /* A channel that can never work fails at the next hook_perform(), without
     * an attempt, rather than being retried for max_age. */
    if (!http_url(channel->url)) {
        util_fmt(m->error, sizeof m->error, "channel %s: url must start with http:// or https://",
                 chan_id);
        m->config_error = 1;
    } else if (hook_decode_secret(channel->secret, &m->key, &m->key_len) != 0) {
        util_fmt(m->error, sizeof m->error,
                 "channel %s: secret is malformed: it must be whsec_ followed by standard base64 "
                 "(with padding) of at least %d bytes",
                 chan_id, HOOK_KEY_MIN);
        m->config_error = 1;
    }
    hook_ids_add(h, m);
    hook_heap_push(h, m);
    log_debug("hook: %s channel %s queued (%zu body bytes)", m->id, chan_id, m->body_len);
    return 0;
}

size_t hook_pending(const hook_t *h)
{
    return h ? hmap_count(&h->by_id) : 0;
}

size_t hook_socket_count(const hook_t *h)
{
    return h ? h->n_socks : 0;
}

int hook_pollitems(hook_t *h, zmq_pollitem_t *items, int max)
{
    if (!h || !items || max <= 0)
        return 0;
    int n = 0;
    h->poll_truncated = 0;
    for (size_t i = 0; i < h->n_socks; i++) {
        if (!h->socks[i].events)
            continue;
        if (n == max) {
            h->poll_truncated = 1; /* hook_timeout_ms() then polls instead */
            if (!h->warned_truncated++)
                log_warn("hook: more sockets than the poll has room for; the rest are checked "
                         "every %d ms", HOOK_POLL_FALLBACK_MS);
            break;
        }
        items[n].socket = NULL;
        items[n].fd = h->socks[i].fd;
        items[n].events = h->socks[i].events;
        items[n].revents = 0;
        n++;
    }
    return n;
}

long hook_timeout_ms(hook_t *h)
{
    if (!h)
        return -1;
    long t = -1;
    if (h->timer_due >= 0) {
        int64_t d = h->timer_due - util_mono_ms();
        t = d < 0 ? 0 : d > 3600000 ? 3600000 : (long)d;
    }
    if (h->poll_truncated)
        t = tmin(t, HOOK_POLL_FALLBACK_MS);
    if (h->heap_len > 0 && h->in_flight < HOOK_MAX_IN_FLIGHT) {
        int64_t d = h->heap[0]->due_ms - clock_now_ms();
        if (d < 0)
            d = 0;
        if (d > HOOK_BACKOFF_CAP_MS) /* a long Retry-After: waking early is harmless */
            d = HOOK_BACKOFF_CAP_MS;
        t = tmin(t, (long)d);
    }
    /* (summary lines wait for the next wake-up of the loop: heartbeats come often enough) */
    return t;
}

/* Tell curl about one socket (mask 0: curl checks it itself). */
static void socket_action(hook_t *h, curl_socket_t fd, int mask)
{
    int running = 0;
    CURLMcode mc = curl_multi_socket_action(h->multi, fd, mask, &running);
    if (mc != CURLM_OK)
        log_error("hook: curl_multi_socket_action: %s", curl_multi_strerror(mc));
}

/* curl's timer, if it fell due; then finished transfers, then new attempts (whose
 * connect starts at once: adding a handle sets the timer to 0). */
static void perform_rest(hook_t *h)
{
    for (int round = 0; round < 2; round++) {
        if (h->timer_due >= 0 && util_mono_ms() >= h->timer_due) {
            h->timer_due = -1;
            socket_action(h, CURL_SOCKET_TIMEOUT, 0);
        }
        reap(h);
        if (start_due(h) == 0)
            break;
    }
    hook_chan_log_summaries(h);
}

void hook_perform_items(hook_t *h, const zmq_pollitem_t *items, int n)
{
    if (!h)
        return;
    for (int i = 0; i < n; i++) {
        short r = items[i].revents;
        if (!r)
            continue;
        int mask = (r & ZMQ_POLLIN ? CURL_CSELECT_IN : 0) | (r & ZMQ_POLLOUT ? CURL_CSELECT_OUT : 0) |
                   (r & ZMQ_POLLERR ? CURL_CSELECT_ERR : 0);
        socket_action(h, items[i].fd, mask);
    }
    if (h->poll_truncated) /* the sockets left out of the poll: curl checks them */
        for (size_t i = 0; i < h->n_socks; i++)
            socket_action(h, h->socks[i].fd, 0);
    perform_rest(h);
}

void hook_perform(hook_t *h)
{
    if (!h)
        return;
    /* No poll results: curl checks every socket it watches itself. Copy the
     * list first: an action may change it. */
    size_t n = h->n_socks;
    if (n) {
        curl_socket_t *fds = xmalloc(n * sizeof *fds);
        for (size_t i = 0; i < n; i++)
            fds[i] = h->socks[i].fd;
        for (size_t i = 0; i < n; i++)
            socket_action(h, fds[i], 0);
        free(fds);
    }
    perform_rest(h);
}
