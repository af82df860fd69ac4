/*
 * test_audit.c — verify covers the indexes the trail does not (issue 12,
 * finding 6): a bad entry planted with plain LMDB in open_cases, idem,
 * case_assign, deadlines or outcomes passes trail_verify (the precondition:
 * the trail alone does not see it) and is named by audit_verify.
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

#include "audit.h"
#include "case.h"
#include "store.h"

typedef struct {
    char dir[64];
} fx_t;

static int setup(void **state)
{
    fx_t *fx = calloc(1, sizeof *fx);
    strcpy(fx->dir, "/tmp/carehub-audit-XXXXXX");
    assert_non_null(mkdtemp(fx->dir));
    char err[256];
    store_t *st = store_open(fx->dir, 1 << 20, 1 << 24, err, sizeof err);
    assert_non_null(st);
    static char body[] = "\x81\xa1n\x01";
    case_event_t e[2];
    memset(e, 0, sizeof e);
    const char *refs[] = {"m-1", "m-2"}, *kids[] = {"k-1", "k-2"};
    for (int i = 0; i < 2; i++) {
        e[i].agent = "school-1";
        e[i].ref = refs[i];
        e[i].type = "absence";
        e[i].at = 1000 + i;
        e[i].received = 2000 + i;
        e[i].child_id = kids[i];
        e[i].severity = 1;
        e[i].body = body;
        e[i].body_len = sizeof body - 1;
    }
    assert_int_equal(case_put_events(st, e, 2, NULL, NULL), STORE_OK);
    assert_int_equal(store_flush_index(st), STORE_OK); /* idem entries on disk */
    store_close(&st);
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

static void plant(const fx_t *fx, const char *db, const void *k, size_t kl, const void *v, size_t vl)
{
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi dbi;
    MDB_val mk = {kl, (void *)k}, mv = {vl, (void *)v};
    assert_int_equal(mdb_env_create(&env), 0);
    assert_int_equal(mdb_env_set_maxdbs(env, 32), 0);
    assert_int_equal(mdb_env_open(env, fx->dir, 0, 0600), 0);
    assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
    assert_int_equal(mdb_dbi_open(txn, db, 0, &dbi), 0);
    assert_int_equal(mdb_put(txn, dbi, &mk, &mv, 0), 0);
    assert_int_equal(mdb_txn_commit(txn), 0);
    mdb_env_close(env);
}

/* trail_verify passes (the precondition) and audit_verify names db. */
static void caught(const fx_t *fx, const char *db, const char *words)
{
    char err[256];
    store_t *st = store_open_readonly(fx->dir, err, sizeof err);
    assert_non_null(st);
    trail_report_t r;
    assert_int_equal(trail_verify(st, NULL, &r), 0);
    assert_int_equal(audit_verify(st, NULL, &r), 1);
    store_close(&st);
    assert_int_equal(strncmp(r.problem, db, strlen(db)), 0);
    assert_non_null(strstr(r.problem, words));
}

static void test_intact(void **state)
{
    fx_t *fx = *state;
    char err[256];
    store_t *st = store_open_readonly(fx->dir, err, sizeof err);
    assert_non_null(st);
    trail_report_t r;
    assert_int_equal(audit_verify(st, NULL, &r), 0);
    assert_string_equal(r.problem, "");
    assert_true(r.index_entries >= 4); /* two open_cases, two idem */
    store_close(&st);
}

static void test_open_case_to_nowhere(void **state)
{
    fx_t *fx = *state;
    plant(fx, "open_cases", "absence\0k-9", 11, "case-0000000099", 15);
    caught(fx, "open_cases", "names a case that is not there");
}

static void test_open_case_under_another_key(void **state)
{
    fx_t *fx = *state;
    plant(fx, "open_cases", "absence\0k-9", 11, "case-0000000001", 15);
    caught(fx, "open_cases", "not open under it");
}

static void test_idem_moved_to_another_event(void **state)
{
    fx_t *fx = *state;
    /* [ev-000000000002, case-0000000002] under the first event's key */
    static const char v[] = "\x92\xaf" "ev-000000000002" "\xaf" "case-0000000002";
    plant(fx, "idem", "school-1\0m-1", 12, v, sizeof v - 1);
    caught(fx, "idem", "does not match the event");
}

static void test_case_assign_to_nowhere(void **state)
{
    fx_t *fx = *state;
    plant(fx, "case_assign", "case-0000000001", 15, "as-000000000077", 15);
    caught(fx, "case_assign", "names an assignment that is not there");
}

static void test_deadline_for_nothing(void **state)
{
    fx_t *fx = *state;
    unsigned char k[8 + 1 + 15] = {0, 0, 0, 0, 0, 0, 0x10, 0, 1};
    memcpy(k + 9, "as-000000000077", 15);
    plant(fx, "deadlines", k, sizeof k, "", 0);
    caught(fx, "deadlines", "not there");
}

static void test_outcome_for_nothing(void **state)
{
    fx_t *fx = *state;
    plant(fx, "outcomes", "reporter-1\0out-ev-000000000099", 30, "x", 1);
    caught(fx, "outcomes", "for an event that is not there");
}

/* A case made and resolved in one write transaction (its record on a page
 * already dirty, which the status write rewrites in place): the child's
 * open_cases entry goes with it, and the next event about the child opens a
 * new case. It stayed before the fix (the join key was read after the write),
 * and the storm crash loop's verify named the entry. */
typedef struct {
    case_event_t e;
    int moved;
} resolve_t;

static int put_and_resolve(store_txn_t *t, void *ud)
{
    resolve_t *r = ud;
    int rc = case_txn_put_events(t, &r->e, 1, NULL, NULL);
    if (!rc)
        rc = case_set_status(t, r->e.case_id, CASE_RESOLVED, 5000, &r->moved);
    return rc;
}

static void test_resolved_in_its_own_transaction_is_no_longer_joined(void **state)
{
    fx_t *fx = *state;
    char err[256];
    static char body[] = "\x81\xa1n\x01";
    store_t *st = store_open(fx->dir, 1 << 20, 1 << 24, err, sizeof err);
    assert_non_null(st);
    resolve_t r;
    memset(&r, 0, sizeof r);
    r.e.agent = "reporter-1";
    r.e.ref = "r-1";
    r.e.type = "mandatory_report";
    r.e.child_id = "k-7";
    r.e.severity = 1;
    r.e.body = body;
    r.e.body_len = sizeof body - 1;
    assert_int_equal(store_write(st, put_and_resolve, &r), STORE_OK);
    assert_int_equal(r.moved, 1);
    case_event_t next = r.e;
    next.ref = "r-2";
    next.status = CASE_ITEM_PENDING;
    assert_int_equal(case_put_events(st, &next, 1, NULL, NULL), STORE_OK);
    assert_int_equal(next.status, CASE_ITEM_STORED);
    assert_string_not_equal(next.case_id, r.e.case_id); /* not joined to the resolved case */
    store_close(&st);
    st = store_open_readonly(fx->dir, err, sizeof err);
    assert_non_null(st);
    trail_report_t rep;
    assert_int_equal(audit_verify(st, NULL, &rep), 0);
    store_close(&st);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_intact, setup, teardown),
        cmocka_unit_test_setup_teardown(test_open_case_to_nowhere, setup, teardown),
        cmocka_unit_test_setup_teardown(test_open_case_under_another_key, setup, teardown),
        cmocka_unit_test_setup_teardown(test_idem_moved_to_another_event, setup, teardown),
        cmocka_unit_test_setup_teardown(test_case_assign_to_nowhere, setup, teardown),
        cmocka_unit_test_setup_teardown(test_deadline_for_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_outcome_for_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_resolved_in_its_own_transaction_is_no_longer_joined,
                                        setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
