/* test_trail.c — the hash-chained trail: an intact store verifies; a changed
 * byte in a trail record or in an event/case record, a deleted record and a
 * truncated trail are each found and named. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <lmdb.h>
#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "case.h"
#include "store.h"
#include "trail.h"

typedef struct {
    char dir[64];
} fx_t;

static int setup(void **state)
{
    fx_t *fx = calloc(1, sizeof *fx);
    strcpy(fx->dir, "/tmp/carehub-trail-XXXXXX");
    assert_non_null(mkdtemp(fx->dir));
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

/* Store 3 events: two about one child (one case), one about another. */
static void fill(const char *dir)
{
    char err[256];
    store_t *st = store_open(dir, 1 << 20, 1 << 24, err, sizeof err);
    assert_non_null(st);
    static char body[] = "\x81\xa1n\x01"; /* {"n": 1} */
    case_event_t e[3];
    memset(e, 0, sizeof e);
    const char *refs[] = {"m-1", "m-2", "m-3"}, *kids[] = {"k-1", "k-1", "k-2"};
    for (int i = 0; i < 3; i++) {
        e[i].agent = "school-1";
        e[i].ref = refs[i];
        e[i].type = "absence";
        e[i].at = 1000 + i;
        e[i].received = 2000 + i;
        e[i].child_id = kids[i];
        e[i].severity = 1 + (i == 1); /* the second raises the case's severity */
        e[i].body = body;
        e[i].body_len = sizeof body - 1;
    }
    assert_int_equal(case_put_events(st, e, 3, NULL, NULL), STORE_OK);
    store_close(&st);
}

static int verify(const char *dir, char *problem, size_t size)
{
    char err[256];
    store_t *st = store_open_readonly(dir, err, sizeof err);
    if (!st)
        fail_msg("%s", err);
    trail_report_t r;
    int rc = trail_verify(st, NULL, &r);
    store_close(&st);
    snprintf(problem, size, "%s", r.problem);
    return rc;
}

/* Flip one byte of the value at (db, key) with plain LMDB, as an attacker would. */
static void tamper(const char *dir, const char *db, const void *key, size_t kl, int delete_it)
{
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi dbi;
    MDB_val k = {kl, (void *)key}, v;
    assert_int_equal(mdb_env_create(&env), 0);
    assert_int_equal(mdb_env_set_maxdbs(env, 32), 0);
    assert_int_equal(mdb_env_open(env, dir, 0, 0600), 0);
    assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
    assert_int_equal(mdb_dbi_open(txn, db, 0, &dbi), 0);
    if (delete_it) {
        assert_int_equal(mdb_del(txn, dbi, &k, NULL), 0);
    } else {
        assert_int_equal(mdb_get(txn, dbi, &k, &v), 0);
        char *copy = malloc(v.mv_size);
        memcpy(copy, v.mv_data, v.mv_size);
        copy[v.mv_size - 1] ^= 0x01; /* the last byte */
        MDB_val nv = {v.mv_size, copy};
        assert_int_equal(mdb_put(txn, dbi, &k, &nv, 0), 0);
        free(copy);
    }
    assert_int_equal(mdb_txn_commit(txn), 0);
    mdb_env_close(env);
}

static const unsigned char SEQ2[8] = {0, 0, 0, 0, 0, 0, 0, 2};

static void test_intact(void **state)
{
    fx_t *fx = *state;
    char problem[512];
    fill(fx->dir);
    assert_int_equal(verify(fx->dir, problem, sizeof problem), 0);
    assert_string_equal(problem, "");
}

static void test_changed_trail_record(void **state)
{
    fx_t *fx = *state;
    char problem[512];
    fill(fx->dir);
    tamper(fx->dir, "trail", SEQ2, 8, 0);
    assert_int_equal(verify(fx->dir, problem, sizeof problem), 1);
    assert_non_null(strstr(problem, "record 2")); /* record 3 no longer follows record 2 */
}

static void test_changed_event(void **state)
{
    fx_t *fx = *state;
    char problem[512];
    fill(fx->dir);
    tamper(fx->dir, "events", "ev-000000000002", 15, 0);
    assert_int_equal(verify(fx->dir, problem, sizeof problem), 1);
    assert_non_null(strstr(problem, "events/ev-000000000002"));
}

static void test_changed_case(void **state)
{
    fx_t *fx = *state;
    char problem[512];
    fill(fx->dir);
    tamper(fx->dir, "cases", "case-0000000001", 15, 0);
    assert_int_equal(verify(fx->dir, problem, sizeof problem), 1);
    assert_non_null(strstr(problem, "cases/case-0000000001"));
}

static void test_deleted_event(void **state)
{
    fx_t *fx = *state;
    char problem[512];
    fill(fx->dir);
    tamper(fx->dir, "events", "ev-000000000003", 15, 1);
    assert_int_equal(verify(fx->dir, problem, sizeof problem), 1);
    assert_non_null(strstr(problem, "ev-000000000003"));
    assert_non_null(strstr(problem, "deleted"));
}

static void test_deleted_trail_record(void **state)
{
    fx_t *fx = *state;
    char problem[512];
    fill(fx->dir);
    tamper(fx->dir, "trail", SEQ2, 8, 1);
    assert_int_equal(verify(fx->dir, problem, sizeof problem), 1);
    assert_non_null(strstr(problem, "record 3"));
}

static void test_truncated_trail(void **state)
{
    fx_t *fx = *state;
    char problem[512];
    fill(fx->dir);
    /* the last record: fill() writes 3 events + 2 case openings + 1 severity rise = 6 */
    unsigned char last[8] = {0, 0, 0, 0, 0, 0, 0, 6};
    tamper(fx->dir, "trail", last, 8, 1);
    assert_int_equal(verify(fx->dir, problem, sizeof problem), 1);
    assert_non_null(strstr(problem, "truncated"));
}

/* ---- the per-case index ---- */

typedef struct {
    char cases[16][32];
    unsigned long long seqs[16];
    int n;
} seen_list_t;

static int collect(void *ud, const void *rec, size_t len)
{
    seen_list_t *l = ud;
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    assert_int_equal(msgpack_unpack_next(&u, rec, len, NULL), MSGPACK_UNPACK_SUCCESS);
    assert_true(l->n < 16);
    for (uint32_t i = 0; i < u.data.via.map.size; i++) {
        msgpack_object_kv *kv = &u.data.via.map.ptr[i];
        if (kv->key.via.str.size == 4 && memcmp(kv->key.via.str.ptr, "case", 4) == 0)
            snprintf(l->cases[l->n], sizeof l->cases[0], "%.*s", (int)kv->val.via.str.size,
                     kv->val.via.str.ptr);
        if (kv->key.via.str.size == 3 && memcmp(kv->key.via.str.ptr, "seq", 3) == 0)
            l->seqs[l->n] = kv->val.via.u64;
    }
    msgpack_unpacked_destroy(&u);
    l->n++;
    return 0;
}

typedef struct {
    const char *case_id;
    seen_list_t *l;
} each_t;

static int each_txn(store_txn_t *t, void *ud)
{
    each_t *e = ud;
    return trail_each_of_case(t, e->case_id, collect, e->l);
}

static void case_records(const char *dir, const char *case_id, seen_list_t *l)
{
    char err[256];
    store_t *st = store_open_readonly(dir, err, sizeof err);
    assert_non_null(st);
    memset(l, 0, sizeof *l);
    each_t e = {case_id, l};
    assert_int_equal(store_read(st, each_txn, &e), STORE_OK);
    store_close(&st);
}

/* fill(): case 1 has records 1 (case_opened), 2 (event), 3 (severity), 4 (event);
 * case 2 has 5 (case_opened), 6 (event): the index gives each case its own, in order. */
static void check_cases(const char *dir)
{
    seen_list_t l;
    case_records(dir, "case-0000000001", &l);
    assert_int_equal(l.n, 4);
    for (int i = 0; i < l.n; i++) {
        assert_string_equal(l.cases[i], "case-0000000001");
        assert_int_equal(l.seqs[i], (unsigned long long)i + 1);
    }
    case_records(dir, "case-0000000002", &l);
    assert_int_equal(l.n, 2);
    assert_int_equal(l.seqs[0], 5);
    assert_int_equal(l.seqs[1], 6);
    assert_string_equal(l.cases[1], "case-0000000002");
    case_records(dir, "case-0000000009", &l);
    assert_int_equal(l.n, 0);
}

static void test_case_index(void **state)
{
    fx_t *fx = *state;
    fill(fx->dir);
    check_cases(fx->dir);
}

/* A store from before the index (its entries deleted): built again at start, the same. */
static void test_case_index_rebuilt(void **state)
{
    fx_t *fx = *state;
    fill(fx->dir);
    tamper(fx->dir, "trail_last", "case-0000000001", 15, 1);
    tamper(fx->dir, "trail_last", "case-0000000002", 15, 1);
    seen_list_t l;
    case_records(fx->dir, "case-0000000001", &l);
    assert_int_equal(l.n, 0); /* precondition: the index is gone */
    char err[256];
    store_t *st = store_open(fx->dir, 1 << 20, 1 << 24, err, sizeof err);
    assert_non_null(st);
    assert_int_equal(trail_index_rebuild(st), 0);
    store_close(&st);
    check_cases(fx->dir);
}

/* A broken chain (an entry pointing forward) is corruption, not a loop. */
static void test_case_index_broken_chain(void **state)
{
    fx_t *fx = *state;
    fill(fx->dir);
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi dbi;
    assert_int_equal(mdb_env_create(&env), 0);
    assert_int_equal(mdb_env_set_maxdbs(env, 32), 0);
    assert_int_equal(mdb_env_open(env, fx->dir, 0, 0600), 0);
    assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
    assert_int_equal(mdb_dbi_open(txn, "trail_prev", 0, &dbi), 0);
    unsigned char k[8] = {0, 0, 0, 0, 0, 0, 0, 4}, v[8] = {0, 0, 0, 0, 0, 0, 0, 4};
    MDB_val kk = {8, k}, vv = {8, v};
    assert_int_equal(mdb_put(txn, dbi, &kk, &vv, 0), 0); /* 4 -> 4: a loop */
    assert_int_equal(mdb_txn_commit(txn), 0);
    mdb_env_close(env);
    char err[256];
    store_t *st = store_open_readonly(fx->dir, err, sizeof err);
    assert_non_null(st);
    seen_list_t l = {0};
    each_t e = {"case-0000000001", &l};
    assert_int_equal(store_read(st, each_txn, &e), STORE_IO);
    store_close(&st);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_intact, setup, teardown),
        cmocka_unit_test_setup_teardown(test_changed_trail_record, setup, teardown),
        cmocka_unit_test_setup_teardown(test_changed_event, setup, teardown),
        cmocka_unit_test_setup_teardown(test_changed_case, setup, teardown),
        cmocka_unit_test_setup_teardown(test_deleted_event, setup, teardown),
        cmocka_unit_test_setup_teardown(test_deleted_trail_record, setup, teardown),
        cmocka_unit_test_setup_teardown(test_truncated_trail, setup, teardown),
        cmocka_unit_test_setup_teardown(test_case_index, setup, teardown),
        cmocka_unit_test_setup_teardown(test_case_index_rebuilt, setup, teardown),
        cmocka_unit_test_setup_teardown(test_case_index_broken_chain, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
