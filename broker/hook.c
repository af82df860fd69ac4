/*
 * hook.c — signed webhook POSTs through libcurl's multi interface; see hook.h.
 *
 * Each queued message is in exactly one state (set_state() is the only place
 * that changes it):
 *
 *   QUEUED    in the due-time heap, waiting for its next attempt (due_ms);
 *   BLOCKED   due, but its channel already has HOOK_MAX_PER_CHANNEL transfers
 *             in flight: parked on the channel's FIFO until one of them ends;
 *   IN_FLIGHT an easy handle is in the multi handle;
 *   FINISHED  delivered or given up; the done callback runs, then it is freed.
 *
 * Every message is also in the id hash (duplicate check, hook_destroy's walk)
 * until it finishes. Retry times and max_age use clock_now_ms(); curl's own
 * timeouts and the webhook-timestamp header are real time (see attempt_setup).
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
#include "hook.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "clock.h"
#include "log.h"
#include "util.h"

#define HOOK_ID_MAX 64                   /* webhook-id length, as util_valid_id() */
#define HOOK_SIG_LEN 48                  /* "v1," + 44 base64 chars + NUL */
#define HOOK_KEY_MIN 16                  /* bytes of HMAC key; as config.c's valid_secret() */
#define HOOK_SECRET_B64_MAX 4096         /* base64 characters after "whsec_" */
#define HOOK_MAX_IN_FLIGHT 4096          /* transfers at once, all channels: bounds sockets */
#define HOOK_LOG_EVERY_MS 10000          /* retries and deliveries: one summary line per this */
#define HOOK_RESPONSE_CAP (64 * 1024)    /* response bytes read (and dropped) before hanging up */
#define HOOK_DEFAULT_TIMEOUT_MS 5000     /* config.c's defaults, for hand-built channels */
#define HOOK_DEFAULT_MAX_AGE_MS (24LL * 3600 * 1000)
#define HOOK_BACKOFF_FIRST_MS 1000       /* first retry: 750..1250 ms */
#define HOOK_BACKOFF_CAP_MS 600000       /* 10 minutes */
#define HOOK_RETRY_AFTER_MAX_MS (30LL * 24 * 3600 * 1000) /* a longer Retry-After is read as this */
#define HOOK_POLL_FALLBACK_MS 10         /* sockets the loop had no room to poll: checked this often */
#define HOOK_LATE_MS 1000                /* an attempt due by max_age still starts this late */
#define HOOK_ERR_LEN 200
#define HOOK_BUCKETS_MIN 64

typedef enum { MSG_QUEUED = 0, MSG_BLOCKED, MSG_IN_FLIGHT, MSG_FINISHED } msg_state_t;

static const char *const state_names[] = {"queued", "blocked", "in_flight", "finished"};

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
    hook_msg_t *hnext;          /* id hash chain */
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

    hook_msg_t **buckets;       /* id hash: every message not yet finished */
    size_t n_buckets;           /* a power of two */
    size_t count;
    unsigned char hkey[crypto_shorthash_KEYBYTES];

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

/* ---- small helpers ----------------------------------------------------- */

static long tmin(long a, long b)
{
    if (a < 0)
        return b;
    if (b < 0)
        return a;
    return a < b ? a : b;
}

static void set_state(hook_msg_t *m, msg_state_t s)
{
    if (m->state != s)
        log_debug("hook: %s %s -> %s", m->id, state_names[m->state], state_names[s]);
    m->state = s;
}

/* Decode "whsec_<standard base64>" into a fresh key; 0, or -1 when malformed. */
static int decode_secret(const char *secret, uint8_t **key, size_t *key_len)
{
    if (!secret || strncmp(secret, "whsec_", 6) != 0)
        return -1;
    const char *b64 = secret + 6;
    size_t n = strlen(b64);
    if (n == 0 || n > HOOK_SECRET_B64_MAX)
        return -1;
    uint8_t *bin = xmalloc(n);
    size_t bin_len = 0;
    if (sodium_base642bin(bin, n, b64, n, NULL, &bin_len, NULL, sodium_base64_VARIANT_ORIGINAL) !=
            0 ||
        bin_len < HOOK_KEY_MIN) {
        sodium_memzero(bin, n);
        free(bin);
        return -1;
    }
    *key = bin;
    *key_len = bin_len;
    return 0;
}

/* "v1,<base64 HMAC-SHA256(key, id.ts.body)>" into sig (at least HOOK_SIG_LEN bytes). */
static void sign_with_key(const uint8_t *key, size_t key_len, const char *id, int64_t ts,
                          const char *body, size_t body_len, char *sig)
{
    crypto_auth_hmacsha256_state st;
    unsigned char mac[crypto_auth_hmacsha256_BYTES];
    char tsbuf[24];
    int tslen = snprintf(tsbuf, sizeof tsbuf, "%" PRId64, ts);

    /* The one-shot crypto_auth_hmacsha256() wants a 32-byte key; secrets are
     * any length (the Standard Webhooks example is 24 bytes), so stream it. */
    /* these return 0 always (libsodium documents no failure for them) */
    (void)crypto_auth_hmacsha256_init(&st, key, key_len);
    (void)crypto_auth_hmacsha256_update(&st, (const unsigned char *)id, strlen(id));
    (void)crypto_auth_hmacsha256_update(&st, (const unsigned char *)".", 1);
    (void)crypto_auth_hmacsha256_update(&st, (const unsigned char *)tsbuf,
                                        (unsigned long long)tslen);
    (void)crypto_auth_hmacsha256_update(&st, (const unsigned char *)".", 1);
    if (body_len)
        (void)crypto_auth_hmacsha256_update(&st, (const unsigned char *)body, body_len);
    (void)crypto_auth_hmacsha256_final(&st, mac);
    memcpy(sig, "v1,", 3);
    /* 32 bytes always fit the 45 bytes left: the result cannot be NULL */
    (void)sodium_bin2base64(sig + 3, HOOK_SIG_LEN - 3, mac, sizeof mac,
                            sodium_base64_VARIANT_ORIGINAL);
    sodium_memzero(&st, sizeof st);
}

int hook_sign(const char *secret, const char *webhook_id, int64_t timestamp_s, const char *body,
              size_t body_len, char *sig, size_t sigsize)
{
    if (!webhook_id || !sig || sigsize < HOOK_SIG_LEN || (!body && body_len))
        return -1;
    if (sodium_init() < 0)
        return -1;
    uint8_t *key = NULL;
    size_t key_len = 0;
    if (decode_secret(secret, &key, &key_len) != 0)
        return -1;
    sign_with_key(key, key_len, webhook_id, timestamp_s, body, body_len, sig);
    sodium_memzero(key, key_len);
    free(key);
    return 0;
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

/* Retry-After as milliseconds from now: delta-seconds or an HTTP date; -1 if absent or bad. */
static int64_t parse_retry_after(const char *v, int64_t now_ms)
{
    while (*v == ' ' || *v == '\t')
        v++;
    if (*v >= '0' && *v <= '9') {
        int64_t secs = 0;
        for (; *v >= '0' && *v <= '9'; v++)
            if (secs < HOOK_RETRY_AFTER_MAX_MS / 1000)
                secs = secs * 10 + (*v - '0');
        while (*v == ' ' || *v == '\t')
            v++;
        if (*v)
            return -1;
        int64_t ms = secs * 1000;
        return ms > HOOK_RETRY_AFTER_MAX_MS ? HOOK_RETRY_AFTER_MAX_MS : ms;
    }
    time_t t = curl_getdate(v, NULL);
    if (t == (time_t)-1)
        return -1;
    int64_t ms = (int64_t)t * 1000 - now_ms;
    if (ms < 0)
        return 0;
    return ms > HOOK_RETRY_AFTER_MAX_MS ? HOOK_RETRY_AFTER_MAX_MS : ms;
}

/* ---- id hash ------------------------------------------------------------ */

static size_t slot(const hook_t *h, const char *id)
{
    unsigned char out[crypto_shorthash_BYTES];
    uint64_t x;
    crypto_shorthash(out, (const unsigned char *)id, strlen(id), h->hkey);
    memcpy(&x, out, sizeof x);
    return (size_t)(x & (h->n_buckets - 1));
}

static hook_msg_t *find_msg(const hook_t *h, const char *id)
{
    for (hook_msg_t *m = h->buckets[slot(h, id)]; m; m = m->hnext)
        if (strcmp(m->id, id) == 0)
            return m;
    return NULL;
}

static void hash_grow(hook_t *h)
{
    size_t old_n = h->n_buckets;
    hook_msg_t **old = h->buckets;
    h->n_buckets = old_n * 2;
    h->buckets = xcalloc(h->n_buckets, sizeof *h->buckets);
    for (size_t i = 0; i < old_n; i++) {
        hook_msg_t *m = old[i];
        while (m) {
            hook_msg_t *next = m->hnext;
            size_t s = slot(h, m->id);
            m->hnext = h->buckets[s];
            h->buckets[s] = m;
            m = next;
        }
    }
    free(old);
}

static void hash_add(hook_t *h, hook_msg_t *m)
{
    if (h->count >= h->n_buckets)
        hash_grow(h);
    size_t s = slot(h, m->id);
    m->hnext = h->buckets[s];
    h->buckets[s] = m;
    h->count++;
}

static void hash_remove(hook_t *h, hook_msg_t *m)
{
    for (hook_msg_t **pp = &h->buckets[slot(h, m->id)]; *pp; pp = &(*pp)->hnext) {
        if (*pp == m) {
            *pp = m->hnext;
            m->hnext = NULL;
            h->count--;
            return;
        }
    }
}

/* ---- due-time heap ------------------------------------------------------ */

static int heap_less(const hook_msg_t *a, const hook_msg_t *b)
{
    return a->due_ms < b->due_ms || (a->due_ms == b->due_ms && a->seq < b->seq);
}

static void heap_set(hook_t *h, size_t i, hook_msg_t *m)
{
    h->heap[i] = m;
    m->heap_i = i;
}

static void heap_push(hook_t *h, hook_msg_t *m)
{
    if (h->heap_len == h->heap_cap) {
        h->heap_cap = h->heap_cap ? h->heap_cap * 2 : 64;
        h->heap = xrealloc(h->heap, h->heap_cap * sizeof *h->heap);
    }
    size_t i = h->heap_len++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!heap_less(m, h->heap[parent]))
            break;
        heap_set(h, i, h->heap[parent]);
        i = parent;
    }
    heap_set(h, i, m);
    set_state(m, MSG_QUEUED);
}

static hook_msg_t *heap_pop(hook_t *h)
{
    hook_msg_t *top = h->heap[0];
    hook_msg_t *last = h->heap[--h->heap_len];
    size_t i = 0;
    if (h->heap_len > 0) {
        for (;;) {
            size_t c = 2 * i + 1;
            if (c >= h->heap_len)
                break;
            if (c + 1 < h->heap_len && heap_less(h->heap[c + 1], h->heap[c]))
                c++;
            if (!heap_less(h->heap[c], last))
                break;
            heap_set(h, i, h->heap[c]);
            i = c;
        }
        heap_set(h, i, last);
    }
    return top;
}

/* ---- channels ----------------------------------------------------------- */

static hook_chan_t *chan_get(hook_t *h, const char *id, int limit)
{
    if (limit <= 0)
        limit = CONFIG_CHANNEL_CONCURRENCY;
    for (hook_chan_t *c = h->chans; c; c = c->next)
        if (strcmp(c->id, id) == 0) {
            c->limit = limit; /* the configuration of the newest message */
            return c;
        }
    hook_chan_t *c = xcalloc(1, sizeof *c);
    c->id = xstrdup(id);
    c->limit = limit;
    c->next = h->chans;
    h->chans = c;
    return c;
}

static void chan_block(hook_chan_t *c, hook_msg_t *m)
{
    m->bnext = NULL;
    if (c->blocked_tail)
        c->blocked_tail->bnext = m;
    else
        c->blocked_head = m;
    c->blocked_tail = m;
    set_state(m, MSG_BLOCKED);
}

/* A slot of `c` came free: its oldest blocked message goes back to the heap (still due). */
static void chan_unblock_one(hook_t *h, hook_chan_t *c)
{
    hook_msg_t *m = c->blocked_head;
    if (!m)
        return;
    c->blocked_head = m->bnext;
    if (!c->blocked_head)
        c->blocked_tail = NULL;
    m->bnext = NULL;
    heap_push(h, m);
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

/* Open the channel's summary window if none is open. */
static void chan_log_window(hook_chan_t *c)
{
    if (c->log_next == 0)
        c->log_next = util_mono_ms() + HOOK_LOG_EVERY_MS;
}

/* One line per channel and window: what was delivered and retried meanwhile. */
static void chan_log_summaries(hook_t *h)
{
    int64_t now = util_mono_ms();
    for (hook_chan_t *c = h->chans; c; c = c->next) {
        if (c->log_next == 0 || now < c->log_next)
            continue;
        if (c->retried)
            log_info("hook: channel %s: %" PRIu64 " delivered, %" PRIu64 " more attempts failed "
                     "and will be retried in the last %d s (the last: %s)",
                     c->id, c->delivered, c->retried, HOOK_LOG_EVERY_MS / 1000, c->last_retry);
        else if (c->delivered)
            log_info("hook: channel %s: %" PRIu64 " delivered in the last %d s", c->id,
                     c->delivered, HOOK_LOG_EVERY_MS / 1000);
        c->log_next = c->delivered || c->retried ? now + HOOK_LOG_EVERY_MS : 0;
        c->delivered = c->retried = 0;
        c->retry_shown = 0;
    }
}

/* Delivered or given up: leave the hash, tell the caller, free. */
static void finish(hook_t *h, hook_msg_t *m, hook_outcome_t outcome)
{
    hash_remove(h, m);
    set_state(m, MSG_FINISHED);
    if (outcome == HOOK_DELIVERED) { /* counted (metrics, the channel's summary), not a line each */
        log_debug("hook: %s channel %s delivered after %d attempt%s", m->id, m->chan->id,
                  m->attempts, m->attempts == 1 ? "" : "s");
        m->chan->delivered++;
        chan_log_window(m->chan);
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
    chan_log_window(c);
    heap_push(h, m);
}

/* ---- curl callbacks ----------------------------------------------------- */

/*
 * The SSRF guard: every socket curl opens for a transfer comes through here
 * with the address it is about to connect to (after DNS, so rebinding or odd
 * spellings of an address cannot get around it).
 */
static curl_socket_t open_socket(void *clientp, curlsocktype purpose, struct curl_sockaddr *a)
{
    hook_msg_t *m = clientp;
    hook_t *h = m->h;
    const unsigned char *raw = (const unsigned char *)&a->addr;
    uint8_t bytes[16];
    int family = 0;
    char text[INET6_ADDRSTRLEN] = "";

    if (a->family == AF_INET && a->addrlen >= sizeof(struct sockaddr_in)) {
        struct sockaddr_in sin;
        memcpy(&sin, raw, sizeof sin);
        memcpy(bytes, &sin.sin_addr, 4);
        family = 4;
        (void)inet_ntop(AF_INET, &sin.sin_addr, text, sizeof text);
    } else if (a->family == AF_INET6 && a->addrlen >= sizeof(struct sockaddr_in6)) {
        struct sockaddr_in6 sin6;
        memcpy(&sin6, raw, sizeof sin6);
        memcpy(bytes, &sin6.sin6_addr, 16);
        family = 6;
        (void)inet_ntop(AF_INET6, &sin6.sin6_addr, text, sizeof text);
    }
    if (purpose != CURLSOCKTYPE_IPCXN || family == 0 ||
        !config_addr_allowed(h->cfg, family, bytes)) {
        if (family == 0)
            util_fmt(text, sizeof text, "(family %d)", a->family);
        util_fmt(m->refused, sizeof m->refused, "%s", text);
        log_warn("hook: %s channel %s: refused connection to %s: not in broker.webhook_allow",
                 m->id, m->chan->id, text);
        return CURL_SOCKET_BAD;
    }

    int type = a->socktype;
#ifdef SOCK_CLOEXEC
    type |= SOCK_CLOEXEC;
#endif
    int fd = socket(a->family, type, a->protocol);
    return fd < 0 ? CURL_SOCKET_BAD : fd;
}

/* Connections outlive transfers (curl's connection cache), so clientp is the hook. */
static int close_socket(void *clientp, curl_socket_t fd)
{
    (void)clientp;
    return close(fd);
}

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

/* The response body is not used: count it and hang up past the cap. */
static size_t drop_body(char *data, size_t size, size_t nmemb, void *ud)
{
    hook_msg_t *m = ud;
    size_t n = size * nmemb;
    (void)data;
    if (n > HOOK_RESPONSE_CAP - m->resp_bytes) {
        m->resp_capped = 1;
        return 0; /* CURLE_WRITE_ERROR; the status line has already been read */
    }
    m->resp_bytes += n;
    return n;
}

/* ---- attempts ----------------------------------------------------------- */

/* Set up one attempt's easy handle; 0, or -1 with m->error set. */
static int attempt_setup(hook_t *h, hook_msg_t *m)
{
    char sig[HOOK_SIG_LEN];
    char line[128];
    /* Wall time, not clock_now_ms(): receivers check webhook-timestamp against
     * their own clock (Standard Webhooks allows 5 minutes), and a broker run
     * with --test-clock moved hours ahead must still be verifiable. */
    int64_t ts = util_now_ms() / 1000;
    static const char *const fixed[] = {"Content-Type: application/json",
                                        "Expect:" /* no 100-continue round trip */};

    sign_with_key(m->key, m->key_len, m->id, ts, m->body, m->body_len, sig);
    struct curl_slist *hs = NULL;
    for (size_t i = 0; i < UTIL_ARRAY_LEN(fixed) + 3; i++) {
        if (i < UTIL_ARRAY_LEN(fixed))
            util_fmt(line, sizeof line, "%s", fixed[i]);
        else if (i == UTIL_ARRAY_LEN(fixed))
            util_fmt(line, sizeof line, "webhook-id: %s", m->id);
        else if (i == UTIL_ARRAY_LEN(fixed) + 1)
            util_fmt(line, sizeof line, "webhook-timestamp: %" PRId64, ts);
        else
            util_fmt(line, sizeof line, "webhook-signature: %s", sig);
        struct curl_slist *n = curl_slist_append(hs, line);
        if (!n) {
            curl_slist_free_all(hs);
            util_fmt(m->error, sizeof m->error, "out of memory building headers");
            return -1;
        }
        hs = n;
    }
    m->headers = hs;

    CURL *e = curl_easy_init();
    if (!e) {
        util_fmt(m->error, sizeof m->error, "curl_easy_init failed");
        return -1;
    }
    m->easy = e;
    m->errbuf[0] = '\0';
    m->refused[0] = '\0';
    m->resp_bytes = 0;
    m->resp_capped = 0;

    CURLcode rc = CURLE_OK;
#define SET(opt, val)                                   \
    do {                                                \
        if (rc == CURLE_OK)                             \
            rc = curl_easy_setopt(e, opt, val);         \
    } while (0)
    SET(CURLOPT_ERRORBUFFER, m->errbuf);
    SET(CURLOPT_PRIVATE, (void *)m);
    SET(CURLOPT_URL, m->url);
    SET(CURLOPT_PROTOCOLS_STR, "http,https");
    SET(CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
    SET(CURLOPT_FOLLOWLOCATION, 0L);
    SET(CURLOPT_PROXY, ""); /* straight to the receiver, so the guard sees its address */
    SET(CURLOPT_NOSIGNAL, 1L);
    SET(CURLOPT_POST, 1L);
    SET(CURLOPT_POSTFIELDS, m->body);
    SET(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)m->body_len);
    SET(CURLOPT_HTTPHEADER, m->headers);
    SET(CURLOPT_USERAGENT, "carehubd");
    SET(CURLOPT_TIMEOUT_MS, m->timeout_ms);
    SET(CURLOPT_CONNECTTIMEOUT_MS, m->timeout_ms);
    /* A retry never rides on a kept-alive connection: the one that failed may hold
     * what a broken receiver sent after its answer (found by fuzz_hook: a 503 with
     * bytes past its Content-Length made the retry read them as its answer). */
    SET(CURLOPT_FRESH_CONNECT, m->attempts > 1 ? 1L : 0L); /* counted before setup */
    SET(CURLOPT_OPENSOCKETFUNCTION, open_socket);
    SET(CURLOPT_OPENSOCKETDATA, (void *)m);
    SET(CURLOPT_CLOSESOCKETFUNCTION, close_socket);
    SET(CURLOPT_CLOSESOCKETDATA, (void *)h);
    SET(CURLOPT_WRITEFUNCTION, drop_body);
    SET(CURLOPT_WRITEDATA, (void *)m);
#undef SET
    if (rc != CURLE_OK) {
        util_fmt(m->error, sizeof m->error, "curl setup: %s", curl_easy_strerror(rc));
        curl_easy_cleanup(e);
        m->easy = NULL;
        return -1;
    }
    CURLMcode mc = curl_multi_add_handle(h->multi, e);
    if (mc != CURLM_OK) {
        util_fmt(m->error, sizeof m->error, "curl_multi_add_handle: %s", curl_multi_strerror(mc));
        curl_easy_cleanup(e);
        m->easy = NULL;
        return -1;
    }
    h->in_flight++;
    m->chan->in_flight++;
    set_state(m, MSG_IN_FLIGHT);
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
    long status = 0;
    int64_t retry_after = -1;
    if (curl_easy_getinfo(m->easy, CURLINFO_RESPONSE_CODE, &status) != CURLE_OK)
        status = 0;
    /* curl 7.88 takes any integer after "HTTP/2 " ("HTTP/2 -5", "HTTP/2 0", "HTTP/2 88"),
     * even over HTTP/1.1, and ends such a transfer with CURLE_OK: a code outside
     * 100..999 is no answer (status 0), and the error says why rather than "No error". */
    long bad_status = status;
    int bad = (status != 0 && (status < 100 || status > 999)) || (status == 0 && res == CURLE_OK);
    if (bad)
        status = 0;
    if (status > 0) {
        struct curl_header *hd = NULL;
        if (curl_easy_header(m->easy, "Retry-After", 0, CURLH_HEADER, -1, &hd) == CURLHE_OK &&
            hd && hd->value)
            retry_after = parse_retry_after(hd->value, clock_now_ms());
    }

    /* The status line is the receiver's verdict, even if the body then failed
     * (or was cut at the cap). */
    if (status >= 200 && status <= 299)
        m->error[0] = '\0';
    else if (status > 0)
        util_fmt(m->error, sizeof m->error, "HTTP %ld", status);
    else if (m->refused[0])
        util_fmt(m->error, sizeof m->error, "address %s not in webhook_allow", m->refused);
    else if (bad)
        util_fmt(m->error, sizeof m->error, "invalid HTTP status %ld", bad_status);
    else if (res == CURLE_OPERATION_TIMEDOUT)
        util_fmt(m->error, sizeof m->error, "timeout");
    else
        util_fmt(m->error, sizeof m->error, "%s", m->errbuf[0] ? m->errbuf : curl_easy_strerror(res));
    attempt_release(h, m);
    chan_unblock_one(h, m->chan);
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
        chan_unblock_one(h, c);
}

/* Start every due attempt there is room for. */
static int start_due(hook_t *h)
{
    int started = 0;
    int64_t now = clock_now_ms();
    while (h->heap_len > 0 && h->in_flight < HOOK_MAX_IN_FLIGHT && h->heap[0]->due_ms <= now) {
        hook_msg_t *m = heap_pop(h);
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
            chan_block(m->chan, m);
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
    h->n_buckets = HOOK_BUCKETS_MIN;
    h->buckets = xcalloc(h->n_buckets, sizeof *h->buckets);
    randombytes_buf(h->hkey, sizeof h->hkey);
    return h;
}

void hook_destroy(hook_t **ph)
{
    if (!ph || !*ph)
        return;
    hook_t *h = *ph;
    size_t aborted = 0;
    for (size_t i = 0; i < h->n_buckets; i++) {
        hook_msg_t *m = h->buckets[i];
        while (m) {
            hook_msg_t *next = m->hnext;
            if (m->state == MSG_IN_FLIGHT)
                aborted++;
            attempt_release(h, m);
            msg_free(m);
            m = next;
        }
    }
    if (aborted)
        log_info("hook: %zu transfer%s aborted at shutdown (kept in the outbox)", aborted,
                 aborted == 1 ? "" : "s");
    CURLMcode mc = curl_multi_cleanup(h->multi); /* closes cached connections via close_socket */
    if (mc != CURLM_OK)
        log_error("hook: curl_multi_cleanup: %s", curl_multi_strerror(mc));
    curl_global_cleanup();
    while (h->chans) {
        hook_chan_t *c = h->chans;
        h->chans = c->next;
        free(c->id);
        free(c);
    }
    free(h->buckets);
    free(h->heap);
    free(h->socks);
    sodium_memzero(h->hkey, sizeof h->hkey);
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
    if (find_msg(h, webhook_id)) {
        log_warn("hook: %s is already queued", webhook_id);
        return -1;
    }
    const char *chan_id = channel->id ? channel->id : "?";
    hook_msg_t *m = xcalloc(1, sizeof *m);
    m->h = h;
    m->chan = chan_get(h, chan_id, channel->concurrency);
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
    } else if (decode_secret(channel->secret, &m->key, &m->key_len) != 0) {
        util_fmt(m->error, sizeof m->error,
                 "channel %s: secret is malformed: it must be whsec_ followed by standard base64 "
                 "(with padding) of at least %d bytes",
                 chan_id, HOOK_KEY_MIN);
        m->config_error = 1;
    }
    hash_add(h, m);
    heap_push(h, m);
    log_debug("hook: %s channel %s queued (%zu body bytes)", m->id, chan_id, m->body_len);
    return 0;
}

size_t hook_pending(const hook_t *h)
{
    return h ? h->count : 0;
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
    chan_log_summaries(h);
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
