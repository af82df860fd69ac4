/*
 * strbuf.h — a growable NUL-terminated string with a size cap: the one string
 * builder of the broker (schema error sentences and paths, the metrics page)
 * and the agents.
 *
 * strbuf_t b = {0} is empty (buf NULL until the first append) and capped at
 * STRBUF_MAX_DEFAULT bytes; set b.max for another cap. What would pass the cap
 * is cut (at a UTF-8 character boundary) and b.cut set: a text built from
 * outside input cannot grow without bound. Free buf with free().
 */
#ifndef CAREHUB_STRBUF_H
#define CAREHUB_STRBUF_H

#include <stddef.h>

#define STRBUF_MAX_DEFAULT (1u << 20)

typedef struct {
    char *buf;
    size_t len, cap;
    size_t max;   /* longest text kept, without its NUL; 0: STRBUF_MAX_DEFAULT */
    int cut;      /* 1 once something was cut at max */
} strbuf_t;

void strbuf_append(strbuf_t *b, const char *s, size_t n);
void strbuf_puts(strbuf_t *b, const char *s);
void strbuf_printf(strbuf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
