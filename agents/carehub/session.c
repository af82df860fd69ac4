/*
 * session.c — bin/carehub's session with the broker, through libcarehub: a
 * handle without a spool (requests only), hello, then one request at a time;
 * libcarehub answers pings, says hello again after a broker restart and hands
 * the answers over as JSON, bin values (the trail's hashes) in lowercase hex.
 * See carehub_cli.h.
 */
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "carehub.h"
#include "carehub_cli.h"
#include "cli.h"
#include "util.h"

#define SOFTWARE "carehub/1.0"
#define DEFAULT_WAIT_MS 10000     /* each answer from the broker: wait this long */

static void on_reply(void *ud, const char *id, const char *json)
{
    sess_t *s = ud;
    if (strcmp(id, s->want) != 0)
        return; /* a late answer to an earlier request */
    json_decref(s->reply);
    s->reply = json_loads(json, 0, NULL);
    s->answered = s->reply ? 1 : -1;
    if (!s->reply)
        cli_nack_set(&s->nack, "malformed", "the answer is not JSON", NULL);
}

static void on_nack(void *ud, const char *ref, const char *code, const char *error, const char *field)
{
    sess_t *s = ud;
    if (strcmp(ref, s->want) != 0)
        return;
    cli_nack_set(&s->nack, code, error, field);
    s->answered = -1;
}

int sess_open(sess_t *s, cli_common_t *co)
{
    memset(s, 0, sizeof *s);
    s->co = co;
    s->wait_ms = cli_wait(co, DEFAULT_WAIT_MS);
    if (s->wait_ms <= 0)
        s->wait_ms = DEFAULT_WAIT_MS;
    co->request_timeout_ms = s->wait_ms; /* one answer may take that long: no resend before */
    carehub_callbacks_t cb = {NULL, on_nack, NULL, on_reply, s};
    int rc;
    if (!(s->c = cli_open(co, SOFTWARE, &cb, &rc)))
        return rc;
    rc = cli_wait_connected(s->c, s->wait_ms);
    if (rc == CLI_EX_UNREACHABLE)
        cli_err(cli_stop ? "interrupted" : "no answer from the broker at %s within %d s; is it "
                "running? (--wait S waits longer)", co->endpoint, s->wait_ms / 1000);
    return rc;
}

void sess_close(sess_t *s)
{
    carehub_destroy(&s->c);
    json_decref(s->reply);
    s->reply = NULL;
}

/* One request (carehub_cli.h). */
int sess_request(sess_t *s, json_t *req, json_t **out)
{
    *out = NULL;
    char *text = json_dumps(req, JSON_COMPACT);
    s->answered = 0;
    cli_nack_set(&s->nack, "", "", "");
    int rc = text ? carehub_request(s->c, text, s->want) : CAREHUB_ENOMEM;
    free(text);
    if (rc != CAREHUB_OK) {
        cli_err("%s", carehub_last_error(s->c));
        return cli_exit_for(rc);
    }
    cli_until_t u = {cli_flag_set, NULL, &s->answered, 0};
    if ((rc = cli_poll_until(s->c, s->wait_ms, &u)))
        return rc;
    if (s->answered > 0) {
        *out = s->reply;
        s->reply = NULL;
        return 0;
    }
    if (s->answered == 0) {
        cli_err(cli_stop ? "interrupted" : "no answer from the broker at %s within %d s "
                "(--wait S waits longer)", s->co->endpoint, s->wait_ms / 1000);
        return CLI_EX_UNREACHABLE;
    }
    return cli_nack_report(&s->nack, "");
}

/* A query {op:"query", what, ...fields}. */
int sess_query(sess_t *s, const char *what, json_t *fields, json_t **out)
{
    json_t *req = fields ? json_deep_copy(fields) : json_object();
    json_object_set_new(req, "op", json_string("query"));
    json_object_set_new(req, "what", json_string(what));
    int rc = sess_request(s, req, out);
    json_decref(req);
    return rc;
}

/* A query about one case (carehub_cli.h). */
int sess_query_case(sess_t *s, const char *what, const char *case_id, json_t **out)
{
    json_t *f = json_pack("{s:s}", "case", case_id);
    int rc = sess_query(s, what, f, out);
    json_decref(f);
    return rc;
}

/* A list query, page after page (carehub_cli.h). */
int sess_query_pages(sess_t *s, const char *what, json_t *fields, const char *key, int all,
                     json_t *items, json_t **last, const char **next_out)
{
    json_t *f = fields ? json_deep_copy(fields) : json_object();
    json_t *r = NULL;
    int rc = 0;
    *last = NULL;
    for (;;) {
        rc = sess_query(s, what, f, &r);
        if (rc)
            break;
        json_t *arr = json_object_get(r, key);
        if (!json_is_array(arr)) {
            cli_err("the broker's answer to query %s has no list `%s`", what, key);
            rc = CLI_EX_DATA;
            break;
        }
        json_array_extend(items, arr);
        const char *next = cli_json_str(r, "next", NULL);
        const char *prev = cli_json_str(f, "after", NULL);
        json_decref(*last);
        *last = r;
        r = NULL;
        if (!all || !next || !*next || !json_array_size(arr) || (prev && !strcmp(prev, next)))
            break;
        json_object_set_new(f, "after", json_string(next));
    }
    json_decref(r);
    json_decref(f);
    if (next_out)
        *next_out = *last ? cli_json_str(*last, "next", NULL) : NULL;
    return rc;
}
