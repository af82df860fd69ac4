/*
 * hook_request.c — one webhook attempt as HTTP: the Standard Webhooks signature
 * (HMAC-SHA256 and base64 from libsodium) and headers, the easy handle's
 * options (POST of the body, http/https only, no redirects, timeouts), the SSRF
 * guard on every socket it opens, and reading the answer: the status, the
 * error text, Retry-After. See hook.h for the rules, hook.c for the engine.
 */
#include "hook_int.h"

#include <arpa/inet.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "log.h"
#include "util.h"

#define HOOK_SIG_LEN 48                  /* "v1," + 44 base64 chars + NUL */
#define HOOK_SECRET_B64_MAX 4096         /* base64 characters after "whsec_" */
#define HOOK_RESPONSE_CAP (64 * 1024)    /* response bytes read (and dropped) before hanging up */
#define HOOK_RETRY_AFTER_MAX_MS (30LL * 24 * 3600 * 1000) /* a longer Retry-After is read as this */

/* ---- signing ------------------------------------------------------------ */

int hook_decode_secret(const char *secret, uint8_t **key, size_t *key_len)
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
    if (hook_decode_secret(secret, &key, &key_len) != 0)
        return -1;
    sign_with_key(key, key_len, webhook_id, timestamp_s, body, body_len, sig);
    sodium_memzero(key, key_len);
    free(key);
    return 0;
}

/* ---- the request --------------------------------------------------------- */

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

/* The headers are signed anew for every attempt (webhook-timestamp is this attempt's). */
int hook_request_new(hook_t *h, hook_msg_t *m)
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
    return 0;
}

/* ---- the answer ---------------------------------------------------------- */

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
    /* a date far in the future (curl takes any year) is the cap, without overflow */
    int64_t now_s = now_ms / 1000;
    if ((int64_t)t - now_s > HOOK_RETRY_AFTER_MAX_MS / 1000 + 1)
        return HOOK_RETRY_AFTER_MAX_MS;
    int64_t ms = (int64_t)t * 1000 - now_ms;
    if (ms < 0)
        return 0;
    return ms > HOOK_RETRY_AFTER_MAX_MS ? HOOK_RETRY_AFTER_MAX_MS : ms;
}

long hook_request_result(hook_msg_t *m, CURLcode res, int64_t *retry_after_ms)
{
    long status = 0;
    *retry_after_ms = -1;
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
            *retry_after_ms = parse_retry_after(hd->value, clock_now_ms());
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
    return status;
}
