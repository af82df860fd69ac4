/*
 * clock.h — the broker's notion of "now" for deadlines, escalations, webhook
 * retries and timestamps.
 *
 * Normally the wall clock. Started with `carehubd --test-clock`, the clock is
 * virtual: it starts at the real time and moves only when a test says so (the
 * `test_clock` op, docs/protocol.md), so a one-hour deadline or a 24-hour
 * max_age is tested in milliseconds. Never enabled otherwise.
 */
#ifndef CAREHUB_CLOCK_H
#define CAREHUB_CLOCK_H

#include <stdint.h>

/* Milliseconds since the Unix epoch (UTC): the wall clock or the test clock. */
int64_t clock_now_ms(void);

/* Switch to the virtual clock, starting at the current wall-clock time. */
void clock_enable_test(void);

/* 1 when the virtual clock is in use. */
int clock_is_test(void);

/* Virtual clock only: set it (never backwards; returns -1 then) or move it on. */
int clock_set_ms(int64_t ms);
int clock_advance_ms(int64_t ms);

#endif
