/*
 * web.h — the supervisors' read-only web view (docs/web.md), in Chinese, on the
 * phone/web listener (broker.http, phone.h routes these paths here).
 *
 * Who: the users of broker.http.users, each bound to a configured supervisor
 * agent; a user reads exactly what that agent reads over ZeroMQ, through the
 * same code (query.h: query_begin/query_run/query_end in the loop's turn), so
 * every page's read is in the trail with the agent as actor and a ref naming
 * the page and the user ("cases web:alice"). The child's personal data (the
 * events' bodies) appears only after the explicit "显示个人资料" POST, a read
 * of its own ("personal_data web:alice").
 *
 * Paths (GET unless said):
 *   /, /login        the login page; POST /login {user, password, csrf}
 *   POST /logout     {csrf}
 *   /cases           the case list; filters status, type, agency, overdue, after
 *   /case?id=C       a case file without personal data; POST /reveal {id, csrf}: with it
 *   /trail?id=C      the case's trail, with the last verification of the whole trail;
 *                    POST /verify {id, csrf} runs one (a job, job.h) and answers when done
 *   /report          response times per agency, with a chart (inline SVG)
 *   /register        the register's coverage (query what:"register")
 *   /silences        the silences
 *   /web.css         the style sheet (no external assets anywhere)
 *
 * Sessions: 32 random bytes (libsodium) in the cookie `carehub_session`
 * (HttpOnly, SameSite=Strict, Path=/, Secure when public_url is https); only
 * BLAKE2b(id) is kept, in memory, with the user and a CSRF token; a session idle
 * WEB_SESSION_IDLE_MS is gone (broker time: clock.h). At most WEB_SESSIONS_MAX;
 * the oldest gives way. A restart logs everyone out.
 * Lock-out: WEB_FAIL_MAX failed logins of one user name within WEB_FAIL_WINDOW_MS
 * refuse that name, right password or not, until the window ends.
 * Passwords: checked with crypto_pwhash_str_verify in a job (argon2id costs
 * tens of milliseconds: never in the loop); the request waits suspended.
 *
 * Every page: Content-Security-Policy default-src 'none' (style from /web.css
 * only, forms to self), no JavaScript, every value HTML-escaped, every POST
 * with the session's CSRF token (the login form: a token in a cookie and the
 * form, which must match).
 *
 * Errors: web_new() cannot fail; a request that cannot be answered is closed.
 * Threads: the loop's only, except the jobs' work (which only verifies a hash
 * or reads the store).
 */
#ifndef CAREHUB_WEB_H
#define CAREHUB_WEB_H

#include <microhttpd.h>
#include <stddef.h>
#include <stdio.h>

#include "config.h"
#include "job.h"
#include "store.h"
#include "turn.h"

#define WEB_SESSION_IDLE_MS (30LL * 60 * 1000)
#define WEB_SESSIONS_MAX 256
#define WEB_FAIL_MAX 5
#define WEB_FAIL_WINDOW_MS (15LL * 60 * 1000)
#define WEB_BODY_MAX 8192            /* bytes of a form body */

typedef struct web web_t;

/* jobs: where password checks and verifications run; NULL: logins refused (503). */
web_t *web_new(const config_t *cfg, store_t *st, turn_t *turn, job_set_t *jobs);
void web_destroy(web_t **w);

/* 1 when `url` is one of the web view's paths (above). */
int web_owns(const char *url);

/* MHD's access handler for those paths; *req is the request's state (NULL on
 * the first call), freed by web_request_free() when MHD completes it. */
enum MHD_Result web_request(web_t *w, struct MHD_Connection *c, const char *url,
                            const char *method, const char *upload, size_t *upload_size,
                            void **req);
void web_request_free(void **req);

/* `carehubd passwd`: read a password from stdin (echo off on a terminal), print
 * its argon2id hash (crypto_pwhash_str, interactive limits). Exit status. */
int web_passwd_main(int argc, char **argv);

/* HTML-escape s (n bytes; a NUL becomes U+FFFD) onto f: for every page the listener
 * serves, the web view's and the phone links' alike. */
void web_escn(FILE *f, const char *s, size_t n);
void web_esc(FILE *f, const char *s);

#endif
