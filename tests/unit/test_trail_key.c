/*
 * test_trail_key.c — the keyed trail and its anchor (issue 12, finding 6).
 *
 * Someone who can write data.mdb but lacks the data key rewrites the last trail
 * record and recomputes the head as a plain hash, as they would: on a store
 * without privacy that passes verify (the precondition: the attack is real),
 * on a sealed store the keyed chain catches it. Without the key a verify checks
 * what it can and says where it stopped; a removed or changed key mark is
 * found; a head kept outside (the anchor) must be passed through.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <lmdb.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "case.h"
#include "store.h"
#include "trail.h"

typedef struct {
    char dir[64];
    unsigned char key[32];
} fx_t;

static int setup(void **state)
{
    fx_t *fx = calloc(1, sizeof *fx);
    strcpy(fx->dir, "/tmp/carehub-trailkey-XXXXXX");
    assert_non_null(mkdtemp(fx->dir));
    for (size_t i = 0; i < sizeof fx->key; i++)
        fx->key[i] = (unsigned char)(0xA5 ^ i);
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    fx_t *fx = *state;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", fx->dir);
    assert_int_equal(system(cmd), 0);
    free(fx);
    return 0;
}

/* n events stored as carehubd does at start: privacy, then the key mark. */
static void fill(const fx_t *fx, const unsigned char *key, int first, int n)
{
    char err[256];
    store_t *st = store_open(fx->dir, 1 << 20, 1 << 24, err, sizeof err);
    assert_non_null(st);
    assert_int_equal(store_set_privacy(st, key, err, sizeof err), 0);
    assert_int_equal(trail_key_mark(st, key != NULL), 0);
    static char body[] = "\x81\xa1n\x01";
    char refs[16][16];
    case_event_t e[16];
    memset(e, 0, sizeof e);
    for (int i = 0; i < n; i++) {
        snprintf(refs[i], sizeof refs[i], "m-%d", first + i);
        e[i].agent = "school-1";
        e[i].ref = refs[i];
        e[i].type = "absence";
        e[i].at = 1000 + i;
        e[i].received = 2000 + i;
        e[i].severity = 1;
        e[i].body = body;
        e[i].body_len = sizeof body - 1;
    }
    assert_int_equal(case_put_events(st, e, (size_t)n, NULL, NULL), STORE_OK);
    store_close(&st);
}

static int verify(const fx_t *fx, const unsigned char *key, const trail_anchor_t *anchor,
                  trail_report_t *r)
{
    char err[256];
    store_t *st = store_open_readonly(fx->dir, err, sizeof err);
    assert_non_null(st);
    assert_int_equal(store_set_privacy(st, key, err, sizeof err), 0);
    int rc = trail_verify(st, anchor, r);
    store_close(&st);
    return rc;
}

static int head_txn(store_txn_t *t, void *ud)
{
    return trail_txn_head(t, ud);
}

static trail_anchor_t head_of(const fx_t *fx)
{
    char err[256];
    trail_anchor_t h;
    store_t *st = store_open_readonly(fx->dir, err, sizeof err);
    assert_non_null(st);
    assert_int_equal(store_read(st, head_txn, &h), STORE_OK);
    store_close(&st);
    return h;
}

/* The attack: with plain LMDB, change "school-1" to "school-9" in the last trail
 * record and write the head as BLAKE2b-256 of the new record (no key). */
static void rewrite_last(const fx_t *fx)
{
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi trail, head;
    MDB_cursor *cur;
    MDB_val k, v;
    assert_int_equal(mdb_env_create(&env), 0);
    assert_int_equal(mdb_env_set_maxdbs(env, 32), 0);
    assert_int_equal(mdb_env_open(env, fx->dir, 0, 0600), 0);
    assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
    assert_int_equal(mdb_dbi_open(txn, "trail", 0, &trail), 0);
    assert_int_equal(mdb_dbi_open(txn, "trail_head", 0, &head), 0);
    assert_int_equal(mdb_cursor_open(txn, trail, &cur), 0);
    assert_int_equal(mdb_cursor_get(cur, &k, &v, MDB_LAST), 0);
    mdb_cursor_close(cur);
    unsigned char *rec = malloc(v.mv_size), seq[8];
    memcpy(rec, v.mv_data, v.mv_size);
    memcpy(seq, k.mv_data, 8);
    int changed = 0;
    for (size_t i = 0; i + 8 <= v.mv_size; i++)
        if (memcmp(rec + i, "school-1", 8) == 0) {
            rec[i + 7] = '9';
            changed = 1;
            break;
        }
    assert_true(changed); /* the record named the agent: it was changed */
    MDB_val nk = {8, seq}, nv = {v.mv_size, rec};
    assert_int_equal(mdb_put(txn, trail, &nk, &nv, 0), 0);
    unsigned char h[8 + 32];
    memcpy(h, seq, 8);
    crypto_generichash(h + 8, 32, rec, v.mv_size, NULL, 0);
    MDB_val hk = {4, (void *)"head"}, hv = {sizeof h, h};
    assert_int_equal(mdb_put(txn, head, &hk, &hv, 0), 0);
    assert_int_equal(mdb_txn_commit(txn), 0);
    mdb_env_close(env);
    free(rec);
}

static void test_unkeyed_chain_is_rewritten_unseen(void **state)
{
    fx_t *fx = *state;
    trail_report_t r;
    fill(fx, NULL, 0, 3);
    rewrite_last(fx);
    /* the precondition: without a key the rewrite passes */
    assert_int_equal(verify(fx, NULL, NULL, &r), 0);
    assert_int_equal(r.keyed_from, 0);
}

static void test_keyed_chain_catches_the_rewrite(void **state)
{
    fx_t *fx = *state;
    trail_report_t r;
    fill(fx, fx->key, 0, 3);
    assert_int_equal(verify(fx, fx->key, NULL, &r), 0);
    assert_int_equal(r.keyed_from, 1);
    assert_int_equal(r.unchecked_from, 0);
    rewrite_last(fx);
    assert_int_equal(verify(fx, fx->key, NULL, &r), 1);
    assert_non_null(strstr(r.problem, "its head says"));
    /* without the key: the keyed chain is not checked, and the report says so */
    assert_int_equal(verify(fx, NULL, NULL, &r), 0);
    assert_int_equal(r.unchecked_from, 1);
}

static int drop_mark(store_txn_t *t, void *ud)
{
    (void)ud;
    return store_del(t, STORE_DB_COUNTERS, "trail.keyed_from", 16, NULL, 0);
}

static int forge_mark(store_txn_t *t, void *ud)
{
    (void)ud;
    const void *v;
    size_t vl;
    int rc = store_get(t, STORE_DB_COUNTERS, "trail.keyed_from", 16, &v, &vl);
    if (rc)
        return rc;
    unsigned char m[40];
    assert_int_equal(vl, sizeof m);
    memcpy(m, v, sizeof m);
    m[7] = 99; /* "keyed from record 99": the records before pass as unkeyed */
    return store_put(t, STORE_DB_COUNTERS, "trail.keyed_from", 16, m, sizeof m, 0);
}

static void test_key_mark_removed_or_changed(void **state)
{
    fx_t *fx = *state;
    trail_report_t r;
    char err[256];
    fill(fx, fx->key, 0, 2);
    store_t *st = store_open(fx->dir, 1 << 20, 1 << 24, err, sizeof err);
    assert_non_null(st);
    assert_int_equal(store_write(st, forge_mark, NULL), STORE_OK);
    store_close(&st);
    assert_int_equal(verify(fx, fx->key, NULL, &r), 1);
    assert_non_null(strstr(r.problem, "mark of its key was changed"));
    st = store_open(fx->dir, 1 << 20, 1 << 24, err, sizeof err);
    assert_non_null(st);
    assert_int_equal(store_write(st, drop_mark, NULL), STORE_OK);
    store_close(&st);
    assert_int_equal(verify(fx, fx->key, NULL, &r), 1);
    assert_non_null(strstr(r.problem, "mark of its key is missing"));
    assert_int_equal(verify(fx, NULL, NULL, &r), 1); /* with or without the key */
}

static void test_anchor(void **state)
{
    fx_t *fx = *state;
    trail_report_t r;
    fill(fx, fx->key, 0, 2);
    trail_anchor_t a = head_of(fx);
    assert_true(a.seq > 0);
    fill(fx, fx->key, 10, 2); /* the trail goes on past the anchor */
    assert_true(head_of(fx).seq > a.seq);
    assert_int_equal(verify(fx, fx->key, &a, &r), 0);
    assert_int_equal(r.anchor_checked, 1);
    /* an anchor the trail does not pass through: rewritten up to it */
    trail_anchor_t bad = a;
    bad.hash[0] ^= 1;
    assert_int_equal(verify(fx, fx->key, &bad, &r), 1);
    assert_non_null(strstr(r.problem, "does not match the anchored head"));
    /* beyond the end: truncated */
    trail_anchor_t far = a;
    far.seq = 1000;
    assert_int_equal(verify(fx, fx->key, &far, &r), 1);
    assert_non_null(strstr(r.problem, "truncated below it"));
    /* without the key an anchor in the keyed chain cannot be checked: said, not passed */
    assert_int_equal(verify(fx, NULL, &a, &r), 1);
    assert_non_null(strstr(r.problem, "without the data key"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_unkeyed_chain_is_rewritten_unseen, setup, teardown),
        cmocka_unit_test_setup_teardown(test_keyed_chain_catches_the_rewrite, setup, teardown),
        cmocka_unit_test_setup_teardown(test_key_mark_removed_or_changed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_anchor, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
