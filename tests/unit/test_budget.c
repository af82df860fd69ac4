/*
 * test_budget.c — per-agent budgets (broker/budget.c): the query bucket's
 * burst, refusal and refill, agents apart; refusals written once a window,
 * the rest counted into the next record; a rerun of the same query's
 * transaction gets the same answer.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>

#include "budget.h"

static void test_query_bucket(void **state)
{
    (void)state;
    budget_t *b = budget_new();
    int64_t retry = -1, t = 1000000;
    for (int i = 0; i < BUDGET_QUERY_BURST; i++)
        assert_int_equal(budget_query(b, "sup-1", t, &retry), 1);
    assert_int_equal(budget_query(b, "sup-1", t, &retry), 0);
    assert_true(retry > 0 && retry <= 1000 / BUDGET_QUERY_PER_S + 1);
    /* another agent has its own */
    assert_int_equal(budget_query(b, "desk-2", t, &retry), 1);
    /* one token back after 1/rate s, not before */
    assert_int_equal(budget_query(b, "sup-1", t + 1000 / BUDGET_QUERY_PER_S / 2, &retry), 0);
    assert_int_equal(budget_query(b, "sup-1", t + 1000 / BUDGET_QUERY_PER_S + 1, &retry), 1);
    assert_int_equal(budget_query(b, "sup-1", t + 1000 / BUDGET_QUERY_PER_S + 1, &retry), 0);
    /* a long pause refills to the burst, not beyond */
    t += 3600 * 1000;
    int n = 0;
    while (budget_query(b, "sup-1", t, &retry))
        n++;
    assert_int_equal(n, BUDGET_QUERY_BURST);
    budget_destroy(&b);
    assert_null(b);
}

static void test_refusals_coalesced(void **state)
{
    (void)state;
    budget_t *b = budget_new();
    uint64_t more = 99;
    int64_t t = 5000;
    assert_int_equal(budget_refusal(b, "school-1", "q-0", t, &more), 1);
    assert_int_equal(more, 0);
    char id[32];
    for (int i = 1; i <= 41; i++) {
        snprintf(id, sizeof id, "q-%d", i);
        assert_int_equal(budget_refusal(b, "school-1", id, t + i, &more), 0);
    }
    /* the same query again (its transaction rerun): the same answer, not counted twice */
    assert_int_equal(budget_refusal(b, "school-1", "q-41", t + 41, &more), 0);
    /* another agent's first is written */
    assert_int_equal(budget_refusal(b, "school-2", "q-x", t + 50, &more), 1);
    /* after the window: written, carrying the 41 counted */
    assert_int_equal(budget_refusal(b, "school-1", "q-42", t + BUDGET_REFUSAL_WINDOW_MS, &more), 1);
    assert_int_equal(more, 41);
    assert_int_equal(budget_refusal(b, "school-1", "q-42", t + BUDGET_REFUSAL_WINDOW_MS, &more), 1);
    assert_int_equal(more, 41); /* the rerun of the written one writes it again, same count */
    /* no budget (unit tests of other modules): every refusal written */
    assert_int_equal(budget_refusal(NULL, "x", "q", 0, &more), 1);
    assert_int_equal(more, 0);
    budget_destroy(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_query_bucket),
        cmocka_unit_test(test_refusals_coalesced),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
