/*
 * fuzz_web.c — libFuzzer target for what a browser sends the supervisors' web
 * view (broker/web_form.c): urlencoded form bodies and query strings, the
 * Cookie header, the case list's filters. Whatever arrives must never crash the
 * broker, and what comes out is clean.
 *
 * The input is used three ways, whole: as a form body (web_form_get for the keys
 * the view reads, into small and large buffers), as a Cookie header (up to its
 * first NUL; web_cookie_get), and as a query string (web_filter_parse).
 * Invariants (a violation aborts):
 *  - web_form_get returns -1, 0 or 1; 0 only when the key does not start any
 *    `&`-separated segment; on 1 the value is NUL-terminated within the buffer,
 *    valid UTF-8 without control characters, and percent-encoding it and
 *    decoding again gives it back; on -1 and 0 the buffer holds "";
 *  - web_cookie_get returns -1, 0 or 1; on 1 the value is a substring of the
 *    header, shorter than the buffer, of RFC 6265 cookie-octets only;
 *  - web_filter_parse returns 0 or -1; on 0 status is "", open, resolved or
 *    closed, type/agency/after are "" or ids (util_valid_id), overdue 0 or 1,
 *    and the filters written back as a query string parse to the same; on -1 a
 *    sentence says why.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"
#include "web_form.h"

static void broken(const char *what)
{
    fprintf(stderr, "fuzz_web: invariant broken: %s\n", what);
    abort();
}

/* 1 when some '&'-separated segment of d starts with key followed by '=', '&' or its end. */
static int key_present(const char *d, size_t n, const char *key)
{
    size_t kl = strlen(key);
    for (size_t i = 0; i < n;) {
        size_t end = i;
        while (end < n && d[end] != '&')
            end++;
        if (end - i >= kl && memcmp(d + i, key, kl) == 0 && (end - i == kl || d[i + kl] == '='))
            return 1;
        i = end + 1;
    }
    return 0;
}

static void encode(char *out, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        *out++ = '%';
        *out++ = hex[c >> 4];
        *out++ = hex[c & 15];
    }
    *out = '\0';
}

static void form(const char *d, size_t n, const char *key, size_t size)
{
    char out[300], again[300], enc[3 * 300 + 8];
    memset(out, 'x', sizeof out);
    int r = web_form_get(d, n, key, out, size);
    if (r < -1 || r > 1)
        broken("web_form_get's return value");
    if (r == 0 && key_present(d, n, key))
        broken("a present key reported absent");
    if (r != 1) {
        if (out[0] != '\0')
            broken("a refused value left in the buffer");
        return;
    }
    size_t len = strnlen(out, size);
    if (len >= size)
        broken("value not NUL-terminated within its buffer");
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)out[i] < 0x20 || out[i] == 0x7f)
            broken("a control character in a value");
    if (!util_utf8_valid(out, len))
        broken("invalid UTF-8 in a value");
    char body[3 * 300 + 16];
    snprintf(body, sizeof body, "k=");
    encode(enc, out);
    snprintf(body + 2, sizeof body - 2, "%s", enc);
    if (web_form_get(body, strlen(body), "k", again, sizeof again) != 1 || strcmp(again, out) != 0)
        broken("the value does not survive encoding and decoding");
}

static int cookie_octet(unsigned char c)
{
    return c == 0x21 || (c >= 0x23 && c <= 0x2b) || (c >= 0x2d && c <= 0x3a) ||
           (c >= 0x3c && c <= 0x5b) || (c >= 0x5d && c <= 0x7e);
}

static void cookie(const char *hdr, const char *name, size_t size)
{
    char out[64];
    int r = web_cookie_get(hdr, name, out, size);
    if (r < -1 || r > 1)
        broken("web_cookie_get's return value");
    if (r != 1)
        return;
    size_t len = strnlen(out, size);
    if (len >= size || !strstr(hdr, out))
        broken("a cookie value not from the header, or too long");
    for (size_t i = 0; i < len; i++)
        if (!cookie_octet((unsigned char)out[i]))
            broken("a cookie value outside cookie-octets");
}

static void filter(const char *d, size_t n)
{
    web_filter_t f, g;
    char why[256] = "", why2[256];
    int r = web_filter_parse(d, n, &f, why, sizeof why);
    if (r != 0 && r != -1)
        broken("web_filter_parse's return value");
    if (r < 0) {
        if (!why[0])
            broken("a refusal without a sentence");
        return;
    }
    if (f.status[0] && strcmp(f.status, "open") != 0 && strcmp(f.status, "resolved") != 0 &&
        strcmp(f.status, "closed") != 0)
        broken("a status outside the set");
    const char *ids[] = {f.type, f.agency, f.after};
    for (size_t i = 0; i < 3; i++)
        if (ids[i][0] && !util_valid_id(ids[i], strlen(ids[i])))
            broken("a filter id that is no id");
    if (f.overdue != 0 && f.overdue != 1)
        broken("overdue not 0 or 1");
    char q[512];
    snprintf(q, sizeof q, "status=%s&type=%s&agency=%s&after=%s%s", f.status, f.type, f.agency,
             f.after, f.overdue ? "&overdue=1" : "");
    if (web_filter_parse(q, strlen(q), &g, why2, sizeof why2) != 0 || memcmp(&f, &g, sizeof f) != 0)
        broken("the filters written back parse differently");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *d = (const char *)data;
    static const char *const keys[] = {"csrf", "user", "password", "id", "status", ""};
    for (size_t i = 0; i < sizeof keys / sizeof *keys; i++) {
        form(d, size, keys[i], 300);
        form(d, size, keys[i], 8);
        form(d, size, keys[i], 1);
    }
    char *hdr = malloc(size + 1);
    if (!hdr)
        return 0;
    memcpy(hdr, d, size);
    hdr[size] = '\0';
    cookie(hdr, "carehub_session", 64);
    cookie(hdr, "carehub_login", 8);
    cookie(hdr, "", 64);
    free(hdr);
    filter(d, size);
    return 0;
}
