/*
 * clock.h — the broker's notion of "now" for deadlines, escalations, webhook
 * retries and timestamps.
 *
 * Normally the wall clock. Started with `carehubd --test-clock`, the clock is
 * virtual: it starts at the real time and moves only when a test says so (the
 * `test_clock` op, docs/protocol.md, sent by the one agent named by
 * broker.test_clock_agent), so a one-hour deadline or a 24-hour max_age is
 * tested in milliseconds. Never enabled otherwise, and never with security:
 * curve (config_test_clock_check()).
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

/* The latest time the virtual clock reaches: 9999-12-31T23:59:59.999Z, so that a
 * deadline computed from it (now + at most 36500d) cannot overflow. */
#define CLOCK_MAX_MS INT64_C(253402300799999)

/* Virtual clock only: set it or move it on; -1 (and unchanged) for a time before
 * the clock's current one or past CLOCK_MAX_MS. */
int clock_set_ms(int64_t ms);
int clock_advance_ms(int64_t ms);

#endif
