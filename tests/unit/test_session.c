/*
 * test_session.c — unit tests for broker/session.c: the table of connections
 * keyed by ROUTER routing id, its idle sweep and its size bound.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "session.h"

/* ZeroMQ's generated routing ids are 5 bytes: 0x00 + a 32-bit number. */
static size_t make_rid(unsigned char *rid, uint32_t n)
{
    rid[0] = 0;
    rid[1] = (unsigned char)(n >> 24);
    rid[2] = (unsigned char)(n >> 16);
    rid[3] = (unsigned char)(n >> 8);
    rid[4] = (unsigned char)n;
    return 5;
}

static uint32_t rid_num(const session_t *s)
{
    assert_int_equal(s->rid_len, 5);
    return (uint32_t)s->rid[1] << 24 | (uint32_t)s->rid[2] << 16 | (uint32_t)s->rid[3] << 8 |
           s->rid[4];
}

static void test_get_creates(void **state)
{
    (void)state;
    session_table_t *t = session_table_new();
    assert_non_null(t);
    assert_int_equal(session_count(t), 0);
    session_t *s = session_get(t, "peer-A", 6, 1000);
    assert_non_null(s);
    assert_int_equal(session_count(t), 1);
    assert_int_equal(s->rid_len, 6);
    assert_memory_equal(s->rid, "peer-A", 6);
    assert_null(s->agent);
    assert_true(s->last_heard == 1000);
    assert_true(s->last_pinged == 0);
    session_table_destroy(&t);
    assert_null(t);
}

static void test_same_and_different(void **state)
{
    (void)state;
    session_table_t *t = session_table_new();
    session_t *a = session_get(t, "peer-A", 6, 1000);
    config_agent_t agent = {.id = "school-1", .role = ROLE_SCHOOL};
    a->agent = &agent;
    /* The same id (from another buffer) is the same session, state kept. */
    char copy[8];
    memcpy(copy, "peer-A", 6);
    session_t *again = session_get(t, copy, 6, 5000);
    assert_ptr_equal(again, a);
    assert_ptr_equal(again->agent, &agent);
    assert_int_equal(session_count(t), 1);

    /* Different ids are different sessions: other bytes, a prefix, a longer id. */
    session_t *b = session_get(t, "peer-B", 6, 1000);
    session_t *prefix = session_get(t, "peer-", 5, 1000);
    session_t *longer = session_get(t, "peer-AA", 7, 1000);
    unsigned char bin[5] = {0, 0, 0, 0, 1}, bin2[5] = {0, 0, 0, 0, 2};
    session_t *c = session_get(t, bin, 5, 1000);
    session_t *d = session_get(t, bin2, 5, 1000);
    session_t *all[] = {a, b, prefix, longer, c, d};
    for (size_t i = 0; i < 6; i++) {
        assert_non_null(all[i]);
        for (size_t j = 0; j < i; j++)
            assert_ptr_not_equal(all[i], all[j]);
    }
    assert_null(b->agent);
    assert_int_equal(session_count(t), 6);
    /* Each is found again. */
    assert_ptr_equal(session_get(t, "peer-", 5, 1), prefix);
    assert_ptr_equal(session_get(t, bin2, 5, 1), d);
    assert_int_equal(session_count(t), 6);

    /* Many sessions: every lookup finds its own (hash chains work). */
    enum { N = 20000 };
    static session_t *many[N];
    unsigned char rid[5];
    for (uint32_t i = 0; i < N; i++) {
        make_rid(rid, 1000 + i);
        many[i] = session_get(t, rid, 5, 2000);
    }
    assert_int_equal(session_count(t), 6 + N);
    for (uint32_t i = 0; i < N; i++) {
        make_rid(rid, 1000 + i);
        assert_ptr_equal(session_get(t, rid, 5, 3000), many[i]);
        assert_int_equal(rid_num(many[i]), 1000 + i);
    }
    assert_int_equal(session_count(t), 6 + N);
    session_table_destroy(&t);
    session_table_destroy(&t); /* twice is safe */
    session_table_destroy(NULL);
}

/* Routing ids longer than the table keeps (ZeroMQ allows at most 255 bytes)
 * are not copied past the session's buffer. */
static void test_long_routing_id(void **state)
{
    (void)state;
    session_table_t *t = session_table_new();
    unsigned char big[SESSION_ROUTING_MAX + 50];
    memset(big, 'r', sizeof big);
    session_t *s = session_get(t, big, sizeof big, 1);
    assert_non_null(s);
    assert_true(s->rid_len <= SESSION_ROUTING_MAX);
    assert_ptr_equal(session_get(t, big, sizeof big, 2), s);
    unsigned char max255[255];
    memset(max255, 'm', sizeof max255);
    session_t *m = session_get(t, max255, sizeof max255, 1);
    assert_int_equal(m->rid_len, 255);
    assert_memory_equal(m->rid, max255, 255);
    session_table_destroy(&t);
}

typedef struct {
    int visits;
    uint32_t seen[16];
} visit_log_t;

static void record_visit(session_t *s, void *ud)
{
    visit_log_t *v = ud;
    if (v->visits < 16)
        v->seen[v->visits] = rid_num(s);
    v->visits++;
}

static int was_seen(const visit_log_t *v, uint32_t n)
{
    for (int i = 0; i < v->visits && i < 16; i++)
        if (v->seen[i] == n)
            return 1;
    return 0;
}

static void test_sweep(void **state)
{
    (void)state;
    session_table_t *t = session_table_new();
    unsigned char rid[5];
    /* heard at 0, 100, ..., 900 */
    for (uint32_t i = 0; i < 10; i++) {
        make_rid(rid, i);
        session_t *s = session_get(t, rid, 5, 0);
        s->last_heard = (int64_t)i * 100; /* what proto does on each message */
    }
    assert_int_equal(session_count(t), 10);

    /* now = 1000, idle limit 450: those heard at 0..500 are gone (idle 1000..500),
     * those heard at 600..900 (idle 400..100) are visited */
    visit_log_t v = {0};
    session_table_sweep(t, 1000, 450, record_visit, &v);
    assert_int_equal(session_count(t), 4);
    assert_int_equal(v.visits, 4);
    for (uint32_t i = 6; i < 10; i++)
        assert_true(was_seen(&v, i));

    /* The dropped are really gone: getting one creates a fresh session. */
    make_rid(rid, 0);
    session_t *fresh = session_get(t, rid, 5, 1000);
    assert_null(fresh->agent);
    assert_true(fresh->last_heard == 1000);
    assert_int_equal(session_count(t), 5);
    /* The kept are the same objects. */
    make_rid(rid, 9);
    session_t *kept = session_get(t, rid, 5, 1000);
    assert_true(kept->last_heard == 900);
    assert_int_equal(session_count(t), 5);

    /* A NULL visitor only drops. */
    session_table_sweep(t, 1000, 10000, NULL, NULL);
    assert_int_equal(session_count(t), 5);
    /* Heard at 1000 (the fresh one), 600, 700, 800, 900; at 1101 with a limit of
     * 200 only the fresh one (idle 101) stays; 900 (idle 201) goes too. */
    v.visits = 0;
    session_table_sweep(t, 1101, 200, record_visit, &v);
    assert_int_equal(session_count(t), 1);
    assert_int_equal(v.visits, 1);
    assert_true(was_seen(&v, 0));
    session_table_destroy(&t);
}

/* Exact arithmetic of the limit: idle by less than the limit is kept, by more dropped. */
static void test_sweep_limit(void **state)
{
    (void)state;
    session_table_t *t = session_table_new();
    session_get(t, "a", 1, 1000)->last_heard = 1000; /* idle 99 at 1099 */
    session_get(t, "b", 1, 1000)->last_heard = 998;  /* idle 101 */
    visit_log_t v = {0};
    session_table_sweep(t, 1099, 100, NULL, &v);
    assert_int_equal(session_count(t), 1);
    session_t *a = session_get(t, "a", 1, 0);
    assert_true(a->last_heard == 1000); /* "a" kept (not recreated with now=0) */
    /* Sweep everything. */
    session_table_sweep(t, 1000000, 0, NULL, NULL);
    assert_int_equal(session_count(t), 0);
    /* Sweeping an empty table is fine. */
    session_table_sweep(t, 1000000, 0, record_visit, &v);
    assert_int_equal(v.visits, 0);
    session_table_destroy(&t);
}

static void count_visit(session_t *s, void *ud)
{
    (void)s;
    ++*(size_t *)ud;
}

typedef struct {
    unsigned char *present; /* indexed by rid number */
    size_t n;
} presence_t;

static void mark_present(session_t *s, void *ud)
{
    presence_t *p = ud;
    uint32_t n = rid_num(s);
    assert_true(n < p->n);
    assert_int_equal(p->present[n], 0); /* each session visited once */
    p->present[n] = 1;
}

/* Beyond SESSION_MAX the least recently heard sessions are dropped. */
static void test_eviction(void **state)
{
    (void)state;
    session_table_t *t = session_table_new();
    unsigned char rid[5];
    const uint32_t total = SESSION_MAX + 10;
    for (uint32_t i = 0; i < total; i++) {
        make_rid(rid, i);
        session_t *s = session_get(t, rid, 5, 1000 + (int64_t)i);
        assert_non_null(s);
        assert_int_equal(rid_num(s), i);
        if (i == 2) {
            /* session 0 is heard again: it becomes recent, so 1, 3, 4... go first */
            make_rid(rid, 0);
            session_get(t, rid, 5, 0)->last_heard = 1000 + (int64_t)total;
        }
        assert_true(session_count(t) <= SESSION_MAX);
    }
    assert_int_equal(session_count(t), SESSION_MAX);

    presence_t p = {calloc(total, 1), total};
    assert_non_null(p.present);
    session_table_sweep(t, 0, INT64_MAX / 2, mark_present, &p);
    size_t present = 0;
    for (uint32_t i = 0; i < total; i++)
        present += p.present[i];
    assert_int_equal(present, SESSION_MAX);
    assert_int_equal(p.present[0], 1); /* recently heard: kept */
    /* the 10 evicted are the least recently heard: 1, 2, 3, ..., 10 */
    for (uint32_t i = 1; i <= 10; i++)
        if (p.present[i])
            fail_msg("session %u (heard at %u) was kept; an older-heard one should go first", i,
                     1000 + i);
    for (uint32_t i = 11; i < total; i++)
        assert_int_equal(p.present[i], 1);
    free(p.present);

    size_t visits = 0;
    session_table_sweep(t, 0, INT64_MAX / 2, count_visit, &visits);
    assert_int_equal(visits, SESSION_MAX);
    session_table_destroy(&t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_get_creates),
        cmocka_unit_test(test_same_and_different),
        cmocka_unit_test(test_long_routing_id),
        cmocka_unit_test(test_sweep),
        cmocka_unit_test(test_sweep_limit),
        cmocka_unit_test(test_eviction),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
