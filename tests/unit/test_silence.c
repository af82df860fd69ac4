/*
 * test_silence.c — silences (broker/silence.h): the request's checks (every
 * form that could hold a child in danger refused with /match, missing and bad
 * fields, the 90-day bound, the normalised match), then over a real store:
 * create, load, find by receive time and match, never an event in danger,
 * expire (once), the trail records, and a verify that checks the records.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <jansson.h>
#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "frame.h"
#include "silence.h"
#include "store.h"
#include "trail.h"

#define NOW INT64_C(1767225600000) /* 2026-01-01 */
#define HOUR INT64_C(3600000)
#define DAY (24 * HOUR)

/* A request from JSON text (the test's own, trusted). */
typedef struct {
    msgpack_sbuffer sb;
    msgpack_unpacked u;
} msg_t;

static const msgpack_object *msg(msg_t *m, const char *json)
{
    json_error_t e;
    json_t *j = json_loads(json, 0, &e);
    assert_non_null(j);
    msgpack_sbuffer_init(&m->sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &m->sb, msgpack_sbuffer_write);
    frame_pack_json(&pk, j);
    json_decref(j);
    msgpack_unpacked_init(&m->u);
    assert_int_equal(msgpack_unpack_next(&m->u, m->sb.data, m->sb.size, NULL), MSGPACK_UNPACK_SUCCESS);
    return &m->u.data;
}

static void msg_free(msg_t *m)
{
    msgpack_unpacked_destroy(&m->u);
    msgpack_sbuffer_destroy(&m->sb);
}

/* Parse `json`; returns the field refused (NULL: accepted, req freed). */
static const char *parse(const char *json, char *why, size_t ws)
{
    msg_t m;
    silence_new_t req;
    const char *field = NULL;
    int rc = silence_parse(msg(&m, json), "supervisor-01", NOW, &req, &field, why, ws);
    if (rc == 0) {
        silence_new_free(&req);
        field = NULL;
    } else {
        assert_non_null(field);
    }
    msg_free(&m);
    return field;
}

static void test_danger_refused(void **state)
{
    (void)state;
    static const char *const matches[] = {
        "{\"type\":\"mandatory_report\"}",
        "{\"type\":[\"absence\",\"mandatory_report\"]}",
        "{\"type\":\"online_risk\"}",
        "{\"type\":\"online_risk\",\"body.risk\":\">=0\"}",
        "{\"type\":\"online_risk\",\"body.risk\":\"self_harm\"}",
        "{\"type\":\"online_risk\",\"body.risk\":\"suicide\"}",
        "{\"type\":\"online_risk\",\"body.risk\":[\"doxxing\",\"grooming\"]}",
        "{\"type\":[\"online_risk\",\"absence\"],\"body.risk\":[\"sexual_content\"]}",
    };
    for (size_t i = 0; i < sizeof matches / sizeof *matches; i++) {
        char json[512], why[512];
        snprintf(json, sizeof json, "{\"match\":%s,\"ends\":%lld,\"reason\":\"r\"}", matches[i],
                 (long long)(NOW + HOUR));
        const char *f = parse(json, why, sizeof why);
        assert_non_null(f);
        assert_string_equal(f, "/match");
        assert_non_null(strstr(why, "a child in danger is never silenced"));
        msg_t m;
        assert_int_equal(silence_match_is_dangerous(frame_map_get(msg(&m, json), "match"), why,
                                                    sizeof why), 1);
        msg_free(&m);
    }
}

static void test_fields_checked(void **state)
{
    (void)state;
    char why[512], json[512];
    static const struct {
        const char *json;
        const char *field;
    } cases[] = {
        {"{\"ends\":%lld,\"reason\":\"r\"}", "/match"},
        {"{\"match\":{\"severity\":\"low\"},\"ends\":%lld,\"reason\":\"r\"}", "/match"},
        {"{\"match\":{\"type\":\"absence\",\"x\":1},\"ends\":%lld,\"reason\":\"r\"}", "/match"},
        {"{\"match\":{\"type\":\">=1\"},\"ends\":%lld,\"reason\":\"r\"}", "/match"},
        {"{\"match\":{\"type\":\"absence\",\"body.a\":[\"<1\"]},\"ends\":%lld,\"reason\":\"r\"}", "/match"},
        {"{\"match\":{\"type\":\"absence\"},\"ends\":%lld}", "/reason"},
        {"{\"match\":{\"type\":\"absence\"},\"ends\":%lld,\"reason\":\"\"}", "/reason"},
        {"{\"match\":{\"type\":\"absence\"},\"reason\":\"r\",\"x\":%lld}", "/ends"},
        {"{\"match\":{\"type\":\"absence\"},\"reason\":\"r\",\"ends\":%lld,\"starts\":-1}", "/starts"},
        {"{\"match\":{\"type\":\"absence\"},\"reason\":\"r\",\"ends\":%lld,\"starts\":1767225600000}", NULL},
        {"{\"match\":{\"type\":\"online_risk\",\"body.risk\":[\"gambling\",\"doxxing\"],"
         "\"body.n\":\">=2\",\"severity\":[\"low\",\"normal\"]},\"ends\":%lld,\"reason\":\"r\"}", NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        snprintf(json, sizeof json, cases[i].json, (long long)(NOW + HOUR));
        const char *f = parse(json, why, sizeof why);
        if (cases[i].field) {
            assert_non_null(f);
            assert_string_equal(f, cases[i].field);
        } else {
            assert_null(f);
        }
    }
    snprintf(json, sizeof json, "{\"match\":{\"type\":\"absence\"},\"ends\":%lld,\"reason\":\"r\"}",
             (long long)(NOW + 90 * DAY));
    assert_null(parse(json, why, sizeof why));
    snprintf(json, sizeof json, "{\"match\":{\"type\":\"absence\"},\"ends\":%lld,\"reason\":\"r\"}",
             (long long)(NOW + 90 * DAY + 1));
    assert_string_equal(parse(json, why, sizeof why), "/ends");
    snprintf(json, sizeof json, "{\"match\":{\"type\":\"absence\"},\"ends\":%lld,\"reason\":\"r\"}",
             (long long)NOW);
    assert_string_equal(parse(json, why, sizeof why), "/ends");
}

/* ---- over a store --------------------------------------------------------------- */

typedef struct {
    silence_new_t *req;
    const char *expire;
    int64_t now;
    int found;
} write_t;

static int write_fn(store_txn_t *t, void *ud)
{
    write_t *w = ud;
    if (w->expire)
        return silence_expire(t, w->expire, "supervisor-01", w->now, &w->found);
    return silence_create(t, w->req);
}

typedef struct {
    const char *type;
    const char *body;
    int64_t received;
    char got[SILENCE_ID_MAX];
} find_t;

static int find_fn(store_txn_t *t, void *ud)
{
    find_t *f = ud;
    silence_set_t *s = NULL;
    int rc = silence_load(t, f->received, &s);
    if (rc)
        return rc;
    json_t *body = json_loads(f->body, 0, NULL);
    const char *id = silence_find(s, f->type, body, f->received);
    snprintf(f->got, sizeof f->got, "%s", id ? id : "");
    json_decref(body);
    silence_set_free(&s);
    return 0;
}

static const char *find(store_t *st, const char *type, const char *body, int64_t received,
                        find_t *f)
{
    *f = (find_t){type, body, received, ""};
    assert_int_equal(store_read(st, find_fn, f), STORE_OK);
    return f->got;
}

typedef struct {
    char after[SILENCE_ID_MAX];
    size_t budget;
    uint32_t n;
    char next[SILENCE_ID_MAX];
} page_t;

static int page_fn(store_txn_t *t, void *ud)
{
    page_t *p = ud;
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    int rc = silence_pack_page(t, p->after, p->budget, &sb, &p->n, p->next);
    msgpack_sbuffer_destroy(&sb);
    return rc;
}

static void test_store_create_find_expire(void **state)
{
    (void)state;
    char dir[] = "/tmp/carehub-silence-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char err[256];
    store_t *st = store_open(dir, 1 << 20, 1 << 24, err, sizeof err);
    assert_non_null(st);

    char json[512], why[256];
    const char *field;
    msg_t m;
    silence_new_t req;
    snprintf(json, sizeof json, "{\"match\":{\"type\":\"absence\",\"body.reason\":[\"sick\",\"trip\"]},"
             "\"starts\":%lld,\"ends\":%lld,\"reason\":\"trip\"}", (long long)(NOW + HOUR),
             (long long)(NOW + 2 * HOUR));
    assert_int_equal(silence_parse(msg(&m, json), "supervisor-01", NOW, &req, &field, why, sizeof why), 0);
    msg_free(&m);
    write_t w = {&req, NULL, 0, 0};
    assert_int_equal(store_write(st, write_fn, &w), STORE_OK);
    assert_string_equal(req.id, "sil-000001");
    silence_new_free(&req);

    find_t f;
    const char *sick = "{\"reason\":\"sick\",\"child\":{\"id\":\"c1\"}}";
    assert_string_equal(find(st, "absence", sick, NOW + HOUR - 1, &f), "");
    assert_string_equal(find(st, "absence", sick, NOW + HOUR, &f), "sil-000001");
    assert_string_equal(find(st, "absence", "{\"reason\":\"family\"}", NOW + HOUR, &f), "");
    assert_string_equal(find(st, "absence", sick, NOW + 2 * HOUR - 1, &f), "sil-000001");
    assert_string_equal(find(st, "absence", sick, NOW + 2 * HOUR, &f), "");
    assert_string_equal(find(st, "mandatory_report", sick, NOW + HOUR, &f), "");

    /* expire: once; unknown ids are not found */
    w = (write_t){NULL, "sil-000001", NOW + HOUR + 10, 0};
    assert_int_equal(store_write(st, write_fn, &w), STORE_OK);
    assert_int_equal(w.found, 1);
    w = (write_t){NULL, "sil-000001", NOW + HOUR + 20, 0};
    assert_int_equal(store_write(st, write_fn, &w), STORE_OK);
    assert_int_equal(w.found, 1);
    w = (write_t){NULL, "sil-000009", NOW, 0};
    assert_int_equal(store_write(st, write_fn, &w), STORE_OK);
    assert_int_equal(w.found, 0);
    assert_string_equal(find(st, "absence", sick, NOW + HOUR + 9, &f), "sil-000001");
    assert_string_equal(find(st, "absence", sick, NOW + HOUR + 10, &f), "");

    trail_report_t r;
    assert_int_equal(trail_verify(st, NULL, &r), 0);
    assert_int_equal(r.records, 2); /* created, expired once */
    assert_int_equal(r.objects, 1);

    /* two more, then the list page by page: a small budget holds one each */
    for (int i = 0; i < 2; i++) {
        snprintf(json, sizeof json, "{\"match\":{\"type\":\"absence\"},\"ends\":%lld,"
                 "\"reason\":\"r%d\"}", (long long)(NOW + HOUR), i);
        assert_int_equal(silence_parse(msg(&m, json), "supervisor-01", NOW, &req, &field, why,
                                       sizeof why), 0);
        msg_free(&m);
        w = (write_t){&req, NULL, 0, 0};
        assert_int_equal(store_write(st, write_fn, &w), STORE_OK);
        silence_new_free(&req);
    }
    page_t pg = {"", 1, 0, ""};
    static const char *const want[] = {"sil-000001", "sil-000002", ""}; /* next: the last packed */
    for (int i = 0; i < 3; i++) {
        assert_int_equal(store_read(st, page_fn, &pg), STORE_OK);
        assert_int_equal(pg.n, 1);
        assert_string_equal(pg.next, want[i]);
        snprintf(pg.after, sizeof pg.after, "%s", pg.next);
    }
    pg = (page_t){"", 1 << 20, 0, ""};
    assert_int_equal(store_read(st, page_fn, &pg), STORE_OK);
    assert_int_equal(pg.n, 3);
    assert_string_equal(pg.next, "");
    store_close(&st);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_danger_refused),
        cmocka_unit_test(test_fields_checked),
        cmocka_unit_test(test_store_create_find_expire),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
