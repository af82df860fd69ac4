/*
 * enc.c — carehub-school's encodings; see enc.h.
 */
#define _GNU_SOURCE /* fopencookie */
#include "enc.h"

#include <errno.h>
#include <iconv.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "util.h"

struct enc_conv {
    enc_t enc;
    iconv_t cd; /* (iconv_t)-1 for UTF-8: only checked */
};

int enc_parse(const char *name, enc_t *out)
{
    if (!strcasecmp(name, "utf-8") || !strcasecmp(name, "utf8"))
        *out = ENC_UTF8;
    else if (!strcasecmp(name, "gb18030"))
        *out = ENC_GB18030;
    else if (!strcasecmp(name, "gbk") || !strcasecmp(name, "cp936"))
        *out = ENC_GBK;
    else
        return -1;
    return 0;
}

const char *enc_name(enc_t e)
{
    switch (e) {
    case ENC_UTF8:
        return "UTF-8";
    case ENC_GB18030:
        return "GB18030";
    case ENC_GBK:
        return "GBK";
    default:
        return "auto";
    }
}

enc_t enc_detect(const unsigned char *p, size_t n, int at_eof)
{
    if (n >= 3 && p[0] == 0xEF && p[1] == 0xBB && p[2] == 0xBF)
        return ENC_UTF8;
    size_t valid = 0, bad = 0;
    for (size_t i = 0; i < n;) {
        if (p[i] < 0x80) {
            i++;
            continue;
        }
        size_t k = util_utf8_seq(p + i, n - i);
        if (k > 1) {
            valid++;
            i += k;
            continue;
        }
        if (!at_eof && n - i < 4)
            break; /* a character cut by the end of what was read */
        bad++;
        i++;
    }
    if (bad == 0 || valid >= 4 * bad)
        return ENC_UTF8;
    return ENC_GB18030;
}

int enc_separator_ok(enc_t e, char sep)
{
    unsigned char c = (unsigned char)sep;
    if (e == ENC_UTF8 || e == ENC_AUTO)
        return c < 0x80;
    return c < 0x30 || (c > 0x39 && c < 0x40);
}

/* ---- a stream: the bytes read for the detection, then the rest of the file ---- */

typedef struct {
    unsigned char *buf;
    size_t len, pos;
    FILE *rest; /* NULL when buf holds the whole file */
} chain_t;

static ssize_t chain_read(void *cookie, char *out, size_t size)
{
    chain_t *ch = cookie;
    if (ch->pos < ch->len) {
        size_t k = ch->len - ch->pos < size ? ch->len - ch->pos : size;
        memcpy(out, ch->buf + ch->pos, k);
        ch->pos += k;
        return (ssize_t)k;
    }
    if (!ch->rest)
        return 0;
    size_t k = fread(out, 1, size, ch->rest);
    if (k == 0 && ferror(ch->rest))
        return -1;
    return (ssize_t)k;
}

static int chain_close(void *cookie)
{
    chain_t *ch = cookie;
    free(ch->buf);
    free(ch);
    return 0;
}

FILE *enc_detect_stream(FILE *f, enc_t *enc)
{
    chain_t *ch = xcalloc(1, sizeof *ch);
    ch->buf = xmalloc(ENC_DETECT_BYTES);
    ch->len = fread(ch->buf, 1, ENC_DETECT_BYTES, f);
    if (ch->len < ENC_DETECT_BYTES && ferror(f)) {
        int e = errno;
        chain_close(ch);
        errno = e ? e : EIO;
        return NULL;
    }
    int at_eof = ch->len < ENC_DETECT_BYTES;
    ch->rest = at_eof ? NULL : f;
    *enc = enc_detect(ch->buf, ch->len, at_eof);
    cookie_io_functions_t io = {.read = chain_read, .close = chain_close};
    FILE *s = fopencookie(ch, "rb", io);
    if (!s) {
        int e = errno;
        chain_close(ch);
        errno = e;
    }
    return s;
}

/* ---- converting a field --------------------------------------------------------- */

enc_conv_t *enc_conv_new(enc_t e)
{
    enc_conv_t *c = xcalloc(1, sizeof *c);
    c->enc = e;
    c->cd = (iconv_t)-1;
    if (e == ENC_GB18030 || e == ENC_GBK) {
        c->cd = iconv_open("UTF-8", e == ENC_GBK ? "GBK" : "GB18030");
        if (c->cd == (iconv_t)-1) {
            int err = errno;
            free(c);
            errno = err;
            return NULL;
        }
    }
    return c;
}

void enc_conv_free(enc_conv_t **cp)
{
    if (!cp || !*cp)
        return;
    if ((*cp)->cd != (iconv_t)-1)
        iconv_close((*cp)->cd);
    free(*cp);
    *cp = NULL;
}

/* The first byte of in[0..len) that does not start a valid UTF-8 sequence. */
static size_t utf8_bad_at(const char *in, size_t len)
{
    size_t i = 0;
    while (i < len) {
        size_t k = util_utf8_seq(in + i, len - i);
        if (!k)
            break;
        i += k;
    }
    return i;
}

char *enc_to_utf8(enc_conv_t *c, const char *in, size_t len, char *why, size_t whylen)
{
    if (c->cd == (iconv_t)-1) {
        size_t at = utf8_bad_at(in, len);
        if (at < len) {
            util_fmt(why, whylen, "byte 0x%02X at byte %zu is not UTF-8", (unsigned char)in[at],
                     at + 1);
            return NULL;
        }
        char *s = xmalloc(len + 1);
        memcpy(s, in, len);
        s[len] = '\0';
        return s;
    }
    /* GB18030 -> UTF-8: a 1-byte character stays 1, 2 bytes become at most 3, 4 at most 4 */
    size_t cap = len * 2 + 4;
    char *out = xmalloc(cap);
    char *ip = (char *)in, *op = out;
    size_t il = len, ol = cap - 1;
    iconv(c->cd, NULL, NULL, NULL, NULL); /* the initial state */
    if (iconv(c->cd, &ip, &il, &op, &ol) == (size_t)-1 ||
        iconv(c->cd, NULL, NULL, &op, &ol) == (size_t)-1) {
        size_t at = (size_t)(ip - in);
        if (errno == EINVAL || at >= len)
            util_fmt(why, whylen, "it ends inside a %s character (byte %zu)", enc_name(c->enc),
                     at + 1);
        else
            util_fmt(why, whylen, "byte 0x%02X at byte %zu is not %s", (unsigned char)in[at],
                     at + 1, enc_name(c->enc));
        free(out);
        return NULL;
    }
    *op = '\0';
    size_t n = (size_t)(op - out);
    if (!util_utf8_valid(out, n) || memchr(out, '\0', n)) {
        util_fmt(why, whylen, "it does not convert from %s to UTF-8", enc_name(c->enc));
        free(out);
        return NULL;
    }
    return out;
}
