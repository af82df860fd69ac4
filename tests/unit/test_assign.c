/*
 * test_assign.c — the assignment state machine's table (broker/assign.c), as
 * assign.h draws it: every pair of states, the statuses an agency may set with
 * case_update, and the list its nack names; and the deadline index's keys: a
 * store of a carehubd from before the kind byte is rewritten once at start.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <lmdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "assign.h"
#include "assign_int.h"
#include "frame.h"
#include "config.h"
#include "log.h"

static void test_moves_are_the_drawn_ones(void **state)
{
    (void)state;
    /* want[from][to]: open -> anything else; acknowledged -> forward; in_progress ->
     * a final state; final states -> nothing */
    static const int want[AS_STATE_COUNT][AS_STATE_COUNT] = {
        [AS_OPEN] = {[AS_ACKNOWLEDGED] = 1, [AS_IN_PROGRESS] = 1, [AS_RESOLVED] = 1,
                     [AS_REFERRED] = 1, [AS_DECLINED] = 1},
        [AS_ACKNOWLEDGED] = {[AS_IN_PROGRESS] = 1, [AS_RESOLVED] = 1, [AS_REFERRED] = 1,
                             [AS_DECLINED] = 1},
        [AS_IN_PROGRESS] = {[AS_RESOLVED] = 1, [AS_REFERRED] = 1, [AS_DECLINED] = 1},
    };
    for (int f = 0; f < AS_STATE_COUNT; f++)
        for (int t = 0; t < AS_STATE_COUNT; t++)
            if (assign_may_move((assign_state_t)f, (assign_state_t)t) != want[f][t])
                fail_msg("%s -> %s: %d, want %d", assign_state_name((assign_state_t)f),
                         assign_state_name((assign_state_t)t),
                         assign_may_move((assign_state_t)f, (assign_state_t)t), want[f][t]);
    assert_false(assign_may_move(AS_STATE_COUNT, AS_OPEN));
    for (int s = 0; s < AS_STATE_COUNT; s++)
        assert_int_equal(assign_is_final((assign_state_t)s),
                         s == AS_RESOLVED || s == AS_REFERRED || s == AS_DECLINED);
}

static void test_update_statuses(void **state)
{
    (void)state;
    assert_int_equal(assign_update_status("resolved", 8), AS_RESOLVED);
    assert_int_equal(assign_update_status("in_progress", 11), AS_IN_PROGRESS);
    assert_int_equal(assign_update_status("acknowledged", 12), -1); /* case_ack's */
    assert_int_equal(assign_update_status("open", 4), -1);
    assert_int_equal(assign_update_status("resolve", 7), -1);
    char list[128];
    assign_update_statuses(list, sizeof list);
    assert_string_equal(list, "in_progress, resolved, referred, declined");
    char tiny[8];
    assign_update_statuses(tiny, sizeof tiny); /* truncated, still a string */
    assert_true(strlen(tiny) < sizeof tiny);
    for (int s = 0; s < AS_STATE_COUNT; s++) {
        const char *n = assign_state_name((assign_state_t)s);
        assert_int_equal(assign_state_parse(n, strlen(n)), s);
    }
}

/* ---- the deadline index --------------------------------------------------- */

static void be64(unsigned char *b, uint64_t x)
{
    for (int i = 7; i >= 0; i--, x >>= 8)
        b[i] = (unsigned char)(x & 0xff);
}

typedef struct {
    unsigned char k[64];
    size_t kl;
} key_t_;

typedef struct {
    key_t_ keys[8];
    size_t n;
} keys_t;

static int keep_key(void *ud, const void *k, size_t kl, const void *v, size_t vl)
{
    (void)v, (void)vl;
    keys_t *ks = ud;
    assert_true(ks->n < 8 && kl <= sizeof ks->keys[0].k);
    memcpy(ks->keys[ks->n].k, k, kl);
    ks->keys[ks->n++].kl = kl;
    return 0;
}

static int read_keys(store_txn_t *t, void *ud)
{
    return store_each(t, STORE_DB_DEADLINES, NULL, 0, 0, keep_key, ud);
}

/* Three keys as a carehubd from before the kind byte wrote them: due + id. */
static int put_legacy(store_txn_t *t, void *ud)
{
    (void)ud;
    static const char *const ids[] = {"as-0000000001", "case-0000000002", "purge:case-0000000003"};
    for (int i = 0; i < 3; i++) {
        unsigned char k[64];
        be64(k, 1000 + (uint64_t)i);
        memcpy(k + 8, ids[i], strlen(ids[i]));
        int rc = store_put(t, STORE_DB_DEADLINES, k, 8 + strlen(ids[i]), "", 0, 0);
        if (rc)
            return rc;
    }
    return 0;
}

typedef struct {
    size_t fired;
    int rc;
} fire_t;

static int fire_all(store_txn_t *t, void *ud)
{
    fire_t *f = ud;
    static config_t cfg; /* nothing configured: no channels, retention off */
    assign_effects_t fx;
    memset(&fx, 0, sizeof fx);
    f->rc = assign_fire_due(&cfg, t, 5000, 16, &f->fired, &fx);
    assign_effects_free(&fx);
    return f->rc;
}

static void test_legacy_deadlines_rewritten(void **state)
{
    (void)state;
    char dir[] = "/tmp/carehub-test-assign-XXXXXX", err[256];
    assert_non_null(mkdtemp(dir));
    store_t *st = store_open(dir, 1 << 20, 1 << 24, err, sizeof err);
    assert_non_null(st);
    assert_int_equal(store_write(st, put_legacy, NULL), STORE_OK);
    assert_int_equal(assign_deadlines_upgrade(st), 0);
    keys_t ks = {.n = 0};
    assert_int_equal(store_read(st, read_keys, &ks), STORE_OK);
    assert_int_equal(ks.n, 3);
    /* due order kept; a kind byte (1 step, 2 quiet close, 3 purge) and the bare id */
    static const struct { unsigned char kind; const char *id; } want[] = {
        {1, "as-0000000001"}, {2, "case-0000000002"}, {3, "case-0000000003"}};
    for (size_t i = 0; i < 3; i++) {
        unsigned char due[8];
        be64(due, 1000 + i);
        assert_memory_equal(ks.keys[i].k, due, 8);
        assert_int_equal(ks.keys[i].k[8], want[i].kind);
        assert_int_equal(ks.keys[i].kl, 9 + strlen(want[i].id));
        assert_memory_equal(ks.keys[i].k + 9, want[i].id, strlen(want[i].id));
    }
    /* a second start rewrites nothing */
    assert_int_equal(assign_deadlines_upgrade(st), 0);
    keys_t again = {.n = 0};
    assert_int_equal(store_read(st, read_keys, &again), STORE_OK);
    assert_int_equal(again.n, 3);
    assert_memory_equal(&again, &ks, sizeof ks);
    /* each fires through its kind: the unknown assignment's entry is dropped, the
     * quiet close and the purge of cases that do not exist remove theirs */
    fire_t f = {0, 0};
    assert_int_equal(store_write(st, fire_all, &f), STORE_OK);
    assert_int_equal(f.rc, 0);
    keys_t after = {.n = 0};
    assert_int_equal(store_read(st, read_keys, &after), STORE_OK);
    assert_int_equal(after.n, 0);
    store_close(&st);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    assert_int_equal(system(cmd), 0);
}

/* Severity is a name in the assignment record, as in the case and event
 * records; a number (stores written before 2026-12) is still read. */
typedef struct {
    int got_new, got_old;
    char stored[16];
} sev_t;

static int sev_txn(store_txn_t *t, void *ud)
{
    sev_t *c = ud;
    as_t a;
    memset(&a, 0, sizeof a);
    snprintf(a.id, sizeof a.id, "as-000000000001");
    snprintf(a.case_id, sizeof a.case_id, "case-0000000001");
    snprintf(a.agency, sizeof a.agency, "police");
    snprintf(a.type, sizeof a.type, "absence");
    a.state = AS_OPEN;
    a.severity = 3;
    int rc = assign_rec_put(t, &a);
    if (rc)
        return rc;
    const void *v;
    size_t vl;
    if ((rc = store_get(t, STORE_DB_ASSIGNMENTS, a.id, strlen(a.id), &v, &vl)))
        return rc;
    /* what is stored, and the same record with the number an older broker wrote */
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    assert_int_equal(msgpack_unpack_next(&u, v, vl, NULL), MSGPACK_UNPACK_SUCCESS);
    const char *s;
    size_t sl;
    assert_true(frame_str(frame_map_get(&u.data, "severity"), &s, &sl));
    snprintf(c->stored, sizeof c->stored, "%.*s", (int)sl, s);
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, u.data.via.map.size);
    for (uint32_t i = 0; i < u.data.via.map.size; i++) {
        const msgpack_object_kv *kv = &u.data.via.map.ptr[i];
        msgpack_pack_object(&pk, kv->key);
        if (kv->key.type == MSGPACK_OBJECT_STR && kv->key.via.str.size == 8 &&
            memcmp(kv->key.via.str.ptr, "severity", 8) == 0)
            msgpack_pack_int(&pk, 2);
        else
            msgpack_pack_object(&pk, kv->val);
    }
    msgpack_unpacked_destroy(&u);
    as_t back;
    if ((rc = assign_rec_get(t, a.id, &back)))
        return rc;
    c->got_new = back.severity;
    if ((rc = assign_rec_decode(t, sb.data, sb.size, &back)))
        return rc;
    c->got_old = back.severity;
    msgpack_sbuffer_destroy(&sb);
    return 0;
}

static void test_severity_is_a_name_in_the_record(void **state)
{
    (void)state;
    char dir[] = "/tmp/carehub-test-assign-XXXXXX", err[256];
    assert_non_null(mkdtemp(dir));
    store_t *st = store_open(dir, 1 << 20, 1 << 24, err, sizeof err);
    assert_non_null(st);
    sev_t c = {-1, -1, ""};
    assert_int_equal(store_write(st, sev_txn, &c), STORE_OK);
    assert_string_equal(c.stored, "critical");
    assert_int_equal(c.got_new, 3);
    assert_int_equal(c.got_old, 2);
    store_close(&st);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    assert_int_equal(system(cmd), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_moves_are_the_drawn_ones),
        cmocka_unit_test(test_update_statuses),
        cmocka_unit_test(test_legacy_deadlines_rewritten),
        cmocka_unit_test(test_severity_is_a_name_in_the_record),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
