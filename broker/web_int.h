/*
 * web_int.h — what the web view's files share (web.c: sessions, routing and
 * the reads; web_pages.c: the HTML); nothing outside broker/web*.c includes
 * it. The API is web.h.
 */
#ifndef CAREHUB_WEB_INT_H
#define CAREHUB_WEB_INT_H

#include <msgpack.h>
#include <stdint.h>
#include <stdio.h>

#include "config.h"
#include "web_form.h"

/* Who the page is for. */
typedef struct {
    const config_t *cfg;
    const char *user;   /* NULL: nobody logged in (no navigation) */
    const char *agent;
    const char *csrf;
} web_ctx_t;

/* The last verification of the whole trail (web.c keeps it). */
typedef struct {
    int done;           /* 0: none yet */
    int running;
    int intact;
    int64_t at;
    uint64_t records;
    char problem[256];
} web_verify_t;

/* A page's start (title, navigation for a user, the logout form) and end. */
void web_head(FILE *f, const web_ctx_t *x, const char *title);
void web_foot(FILE *f);

/* The pages; `res` is the query's result map (query.h). */
void web_page_login(FILE *f, const web_ctx_t *x, const char *msg, const char *login_csrf);
void web_page_message(FILE *f, const web_ctx_t *x, const char *title, const char *msg);
void web_page_cases(FILE *f, const web_ctx_t *x, const msgpack_object *res, const web_filter_t *flt);
void web_page_case(FILE *f, const web_ctx_t *x, const msgpack_object *res, int reveal);
void web_page_trail(FILE *f, const web_ctx_t *x, const msgpack_object *res, const web_verify_t *v);
void web_page_report(FILE *f, const web_ctx_t *x, const msgpack_object *res);
void web_page_register(FILE *f, const web_ctx_t *x, const msgpack_object *res);
void web_page_silences(FILE *f, const web_ctx_t *x, const msgpack_object *res);

extern const char WEB_CSS[];

#endif
