/*
 * test_assign.c — the assignment state machine's table (broker/assign.c), as
 * assign.h draws it: every pair of states, the statuses an agency may set with
 * case_update, and the list its nack names.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "assign.h"

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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_moves_are_the_drawn_ones),
        cmocka_unit_test(test_update_statuses),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
