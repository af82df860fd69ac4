/*
 * util.h — small helpers shared by every broker module.
 *
 * Out-of-memory policy (one for the whole broker, like Redis' zmalloc): the x*
 * allocators never return NULL; on allocation failure they print a message and
 * abort(). Nothing a peer sends can make the broker allocate without a bound, so
 * running out of memory is an operator problem, not an input problem.
 */
#ifndef CAREHUB_UTIL_H
#define CAREHUB_UTIL_H

#include <stddef.h>
#include <stdint.h>

void *xmalloc(size_t n);
void *xcalloc(size_t n, size_t size);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);

/* snprintf into a fixed buffer, always NUL-terminated; truncation is not an error. */
void util_fmt(char *buf, size_t size, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* 1 when s[0..len) is a protocol id: 1–64 bytes of [A-Za-z0-9._:-] (PROTOCOL §1). */
int util_valid_id(const char *s, size_t len);

/* UTF-8 (RFC 3629: no overlong forms, no surrogates, nothing above U+10FFFF).
 * util_utf8_seq: the length (1–4) of the valid sequence at s[0..n), 0 when there
 * is none (n == 0 or invalid); a NUL byte is a valid sequence of 1.
 * util_utf8_valid: 1 when all of s[0..n) is valid UTF-8.
 * util_utf8_count: the code points of s[0..n) (bytes that do not continue one). */
size_t util_utf8_seq(const void *s, size_t n);
int util_utf8_valid(const void *s, size_t n);
size_t util_utf8_count(const char *s, size_t n);

/* Wall-clock time in milliseconds since the Unix epoch (UTC). */
int64_t util_now_ms(void);
/* Monotonic time in milliseconds, for intervals. */
int64_t util_mono_ms(void);

#define UTIL_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* At most size-1 bytes of data as text for a message: bytes outside printable
 * ASCII shown as '.', and "…" after what was cut. */
void util_printable(char *out, size_t size, const void *data, size_t len);

#endif
