/* strbuf.c — a growable string with a size cap; see strbuf.h. */
#include "strbuf.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

void strbuf_append(strbuf_t *b, const char *s, size_t n)
{
    size_t max = b->max ? b->max : STRBUF_MAX_DEFAULT;
    if (b->len + n > max) {
        n = b->len < max ? max - b->len : 0;
        while (n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80)
            n--; /* not in the middle of a character */
        b->cut = 1;
    }
    if (!b->buf || b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        while (b->len + n + 1 > cap)
            cap *= 2;
        b->buf = xrealloc(b->buf, cap);
        b->cap = cap;
    }
    memcpy(b->buf + b->len, s, n);
    b->len += n;
    b->buf[b->len] = '\0';
}

void strbuf_puts(strbuf_t *b, const char *s)
{
    strbuf_append(b, s, strlen(s));
}

void strbuf_printf(strbuf_t *b, const char *fmt, ...)
{
    char small[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (n < 0)
        return; /* an encoding error: nothing appended */
    if ((size_t)n < sizeof small) {
        strbuf_append(b, small, (size_t)n);
        return;
    }
    char *big = xmalloc((size_t)n + 1);
    va_start(ap, fmt);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    strbuf_append(b, big, (size_t)n);
    free(big);
}
