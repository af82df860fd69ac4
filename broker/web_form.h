/*
 * web_form.h — reading what a browser sends the web view (web.h): form bodies
 * and query strings (application/x-www-form-urlencoded), the Cookie header,
 * and the case list's filters. Pure functions over bytes: no allocation, no
 * state, so the fuzz target (tests/fuzz/fuzz_web.c) drives them directly.
 *
 * Every value out is NUL-terminated, valid UTF-8 without control characters,
 * and fits its buffer; anything else is refused, never cut.
 */
#ifndef CAREHUB_WEB_FORM_H
#define CAREHUB_WEB_FORM_H

#include <stddef.h>

/* The value of `key` in a urlencoded body or query string of len bytes ('+' is
 * a space, %XX a byte). 1 with the decoded value in out; 0 when the key is
 * absent; -1 when its value is malformed (a bad %-escape, a NUL or control
 * character, invalid UTF-8) or does not fit `size` (with size > 0). The first
 * occurrence counts. */
int web_form_get(const char *body, size_t len, const char *key, char *out, size_t size);

/* The value of cookie `name` in a Cookie header ("a=1; b=2"). 1 with it in out,
 * 0 when absent, -1 when it is there but longer than size - 1 or holds a byte
 * outside the cookie-octet set (RFC 6265). */
int web_cookie_get(const char *header, const char *name, char *out, size_t size);

#define WEB_FILTER_ID_MAX 65

/* The case list's filters, as the page's GET form sends them. */
typedef struct {
    char status[16];                 /* "", open, resolved, closed */
    char type[WEB_FILTER_ID_MAX];    /* "" or an id */
    char agency[WEB_FILTER_ID_MAX];  /* "" or an id */
    int overdue;                     /* overdue=1 */
    char after[WEB_FILTER_ID_MAX];   /* the next page: "" or a case id */
} web_filter_t;

/* Parse the filters of a query string (status, type, agency, overdue, after;
 * other keys are ignored, empty values mean "any"). 0, or -1 with a sentence
 * in why naming the field and what it takes. */
int web_filter_parse(const char *query, size_t len, web_filter_t *f, char *why, size_t whysize);

#endif
