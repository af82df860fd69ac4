/* clock.c — wall clock or a test's virtual clock; see clock.h. */
#include "clock.h"

#include <stdatomic.h>

#include "util.h"

static int test_mode;
/* Set by the loop (test_clock), read by the writer thread (turn.c) too. */
static _Atomic int64_t virtual_now;

int64_t clock_now_ms(void)
{
    return test_mode ? virtual_now : util_now_ms();
}

void clock_enable_test(void)
{
    test_mode = 1;
    virtual_now = util_now_ms();
}

int clock_is_test(void)
{
    return test_mode;
}

int clock_set_ms(int64_t ms)
{
    if (!test_mode || ms < virtual_now || ms > CLOCK_MAX_MS)
        return -1;
    virtual_now = ms;
    return 0;
}

int clock_advance_ms(int64_t ms)
{
    if (!test_mode || ms < 0 || ms > CLOCK_MAX_MS - virtual_now)
        return -1;
    virtual_now += ms;
    return 0;
}
