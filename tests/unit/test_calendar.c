/*
 * test_calendar.c — working days (PROTOCOL §10) on the official 2026 calendar of
 * mainland China (config/calendar-cn-2026.yaml, loaded through config_load) in
 * Asia/Shanghai: config_deadline() and config_deadline_before(), one table row per
 * case with its start and its expected deadline written out in local time.
 *
 * The expected instants are computed here without the C library's zone rules:
 * Asia/Shanghai is UTC+08:00 all year (no summer time since 1991), so a local
 * "YYYY-MM-DD HH:MM:SS.mmm" is that civil time minus 8 hours.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static config_t *g_cfg;
static char g_dir[64];

/* "YYYY-MM-DD HH:MM[:SS[.mmm]]" in Shanghai time -> epoch ms. */
static int64_t sh(const char *s)
{
    int y, mo, d, h, mi, sec = 0, ms = 0;
    int n = sscanf(s, "%d-%d-%d %d:%d:%d.%d", &y, &mo, &d, &h, &mi, &sec, &ms);
    assert_true(n >= 5);
    int64_t day = config_day_number(y, mo, d);
    return ((day * 86400 + h * 3600 + mi * 60 + sec) - 8 * 3600) * 1000LL + ms;
}

/* epoch ms -> "YYYY-MM-DD HH:MM:SS.mmm" in Shanghai time, for failure messages. */
static void fmt_sh(int64_t t, char *buf, size_t n)
{
    int64_t s = t / 1000 + 8 * 3600, ms = t % 1000;
    int y, mo, d;
    config_day_date((int32_t)(s / 86400), &y, &mo, &d);
    int64_t sod = s % 86400;
    snprintf(buf, n, "%04d-%02d-%02d %02d:%02d:%02d.%03d", y, mo, d, (int)(sod / 3600),
             (int)(sod / 60 % 60), (int)(sod % 60), (int)ms);
}

static int find_file(const char *rel, char *out, size_t n)
{
    static const char *const up[] = {"", "../", "../../"};
    for (size_t i = 0; i < 3; i++) {
        snprintf(out, n, "%s%s", up[i], rel);
        if (access(out, R_OK) == 0)
            return 0;
    }
    return -1;
}

static int setup(void **state)
{
    (void)state;
    char calp[256];
    if (find_file("config/calendar-cn-2026.yaml", calp, sizeof calp) < 0) {
        fprintf(stderr, "config/calendar-cn-2026.yaml not found; run from the project root\n");
        return -1;
    }
    FILE *in = fopen(calp, "rb");
    static char cal[16384];
    size_t len = in ? fread(cal, 1, sizeof cal - 1, in) : 0;
    if (in)
        fclose(in);
    cal[len] = '\0';
    snprintf(g_dir, sizeof g_dir, "/tmp/carehub-test-calendar-XXXXXX");
    if (!mkdtemp(g_dir))
        return -1;
    char path[128];
    snprintf(path, sizeof path, "%s/c.yaml", g_dir);
    FILE *f = fopen(path, "wb");
    if (!f)
        return -1;
    fprintf(f, "privacy: off\nbroker: {timezone: Asia/Shanghai}\n%s", cal);
    fclose(f);
    config_diag_t d = {0};
    g_cfg = config_load(path, 0, &d);
    for (size_t i = 0; i < d.n; i++)
        fprintf(stderr, "%s\n", d.lines[i]);
    config_diag_free(&d);
    unlink(path);
    rmdir(g_dir);
    if (!g_cfg || config_apply_timezone(g_cfg) < 0)
        return -1;
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    config_destroy(&g_cfg);
    return 0;
}

typedef struct {
    const char *why;
    const char *start; /* Shanghai time */
    int wd;
    const char *want;  /* Shanghai time */
} wd_case_t;

/* Weekdays checked with date(1): 2026-09-18 Fri, 09-20 Sun, 09-30 Wed, 10-08 Thu,
 * 10-10 Sat, 10-12 Mon; 02-13 Fri, 02-14 Sat, 02-24 Tue, 02-28 Sat; 04-03 Fri,
 * 04-07 Tue; 04-30 Thu, 05-06 Wed, 05-09 Sat; 06-18 Thu, 06-22 Mon; 2025-12-31
 * Wed, 2026-01-04 Sun; 12-31 Thu, 2027-01-01 Fri, 01-04 Mon. */
static const wd_case_t FORWARD[] = {
    /* National Day: 10-01..07 off; 09-25..27 Mid-Autumn; 调休 Sun 09-20, Sat 10-10 */
    {"last working day before National Day, afternoon", "2026-09-30 15:30", 1, "2026-10-08 15:30"},
    {"… two working days", "2026-09-30 15:30", 2, "2026-10-09 15:30"},
    {"… three: the 调休 Saturday 10-10 works", "2026-09-30 15:30", 3, "2026-10-10 15:30"},
    {"… four: Sunday 10-11 does not", "2026-09-30 15:30", 4, "2026-10-12 15:30"},
    {"Friday afternoon: the 调休 Sunday 09-20 is next", "2026-09-18 16:00", 1, "2026-09-20 16:00"},
    {"Friday afternoon, 5wd: 09-20..09-24", "2026-09-18 16:00", 5, "2026-09-24 16:00"},
    {"Friday afternoon, 6wd: over Mid-Autumn", "2026-09-18 16:00", 6, "2026-09-28 16:00"},
    {"start on the 调休 Sunday 09-20", "2026-09-20 10:00", 1, "2026-09-21 10:00"},
    {"start on the 调休 Saturday 10-10", "2026-10-10 17:00", 1, "2026-10-12 17:00"},
    {"start on a holiday: from workday_start of 10-08", "2026-10-02 11:00", 1, "2026-10-09 09:00"},
    {"0wd on a holiday: workday_start of the next working day", "2026-10-02 11:00", 0,
     "2026-10-08 09:00"},
    {"0wd on a working day: the start itself", "2026-09-29 14:15:30.250", 0,
     "2026-09-29 14:15:30.250"},
    {"start on a Sunday before 09:00 (not a working day)", "2026-10-11 08:00", 2,
     "2026-10-14 09:00"},
    {"before workday_start on a working day keeps its time", "2026-09-28 07:30", 1,
     "2026-09-29 07:30"},
    {"milliseconds are kept", "2026-09-29 23:59:59.999", 1, "2026-09-30 23:59:59.999"},
    /* Spring Festival: 02-15..23 off; 调休 Sat 02-14 and Sat 02-28 */
    {"Friday evening before Spring Festival: Saturday 02-14 works", "2026-02-13 18:00", 1,
     "2026-02-14 18:00"},
    {"the 调休 Saturday 02-14: over the whole week", "2026-02-14 12:00", 1, "2026-02-24 12:00"},
    {"after Spring Festival, 4wd ends on the 调休 Saturday 02-28", "2026-02-24 10:00", 4,
     "2026-02-28 10:00"},
    {"0wd in the middle of Spring Festival", "2026-02-18 03:00", 0, "2026-02-24 09:00"},
    {"3wd from inside Spring Festival", "2026-02-20 16:00", 3, "2026-02-27 09:00"},
    /* Qingming, Labour Day, Dragon Boat, New Year */
    {"Qingming: Fri 04-03 over 04-04..06", "2026-04-03 12:00", 1, "2026-04-07 12:00"},
    {"Labour Day: Thu 04-30 over 05-01..05", "2026-04-30 16:00", 1, "2026-05-06 16:00"},
    {"Labour Day, 4wd: the 调休 Saturday 05-09", "2026-04-30 16:00", 4, "2026-05-09 16:00"},
    {"Dragon Boat: Thu 06-18 over 06-19..21", "2026-06-18 09:00", 1, "2026-06-22 09:00"},
    {"New Year: 2025-12-31 over 01-01..03 to the 调休 Sunday 01-04", "2025-12-31 16:00", 1,
     "2026-01-04 16:00"},
    /* year end: no 2027 holidays are known; weekends still count */
    {"year end: 2027-01-01 is a Friday, a working day as far as known", "2026-12-31 17:00", 1,
     "2027-01-01 17:00"},
    {"year end, 2wd: over the weekend", "2026-12-31 17:00", 2, "2027-01-04 17:00"},
    /* the local date decides, not the UTC one: 2026-09-30T20:00Z is 10-01 04:00 here */
    {"a UTC evening that is a holiday morning in Shanghai", "2026-10-01 04:00", 1,
     "2026-10-09 09:00"},
    {"a UTC Wednesday evening that is Thursday 00:30 here", "2026-10-08 00:30", 1,
     "2026-10-09 00:30"},
};

static const wd_case_t BACKWARD[] = {
    {"1wd before the first day back: the last before the holiday", "2026-10-08 15:00", 1,
     "2026-09-30 15:00"},
    {"2wd before Monday 10-12: Saturday 10-10, then Friday 10-09", "2026-10-12 10:00", 2,
     "2026-10-09 10:00"},
    {"1wd before a Sunday (not working): the working day before", "2026-10-11 10:00", 1,
     "2026-10-10 10:00"},
    {"1wd before Tue 02-24: the 调休 Saturday 02-14", "2026-02-24 09:30", 1, "2026-02-14 09:30"},
    {"0wd: the due time itself", "2026-10-03 12:00", 0, "2026-10-03 12:00"},
};

static void check_table(const wd_case_t *t, size_t n, int backward)
{
    int bad = 0;
    for (size_t i = 0; i < n; i++) {
        int64_t start = sh(t[i].start), want = sh(t[i].want);
        int64_t got = backward ? config_deadline_before(g_cfg, start, 0, t[i].wd)
                               : config_deadline(g_cfg, start, 0, t[i].wd);
        if (got != want) {
            char g[40];
            fmt_sh(got, g, sizeof g);
            print_message("%s %s %s %dwd: want %s, got %s (%s)\n", t[i].start,
                          backward ? "minus" : "plus", "", t[i].wd, t[i].want, g, t[i].why);
            bad++;
        }
    }
    assert_int_equal(bad, 0);
}

static void test_forward(void **state)
{
    (void)state;
    assert_true(sizeof FORWARD / sizeof FORWARD[0] >= 15);
    check_table(FORWARD, sizeof FORWARD / sizeof FORWARD[0], 0);
}

static void test_backward(void **state)
{
    (void)state;
    check_table(BACKWARD, sizeof BACKWARD / sizeof BACKWARD[0], 1);
}

/* Clock durations are clock arithmetic, whatever the calendar says. */
static void test_clock_durations_unchanged(void **state)
{
    (void)state;
    int64_t s = sh("2026-10-02 11:00");
    assert_int_equal(config_deadline(g_cfg, s, 86400000, CONFIG_NOT_WD), s + 86400000);
    assert_int_equal(config_deadline(g_cfg, s, 0, CONFIG_NOT_WD), s);
    assert_int_equal(config_deadline_before(g_cfg, s, 3600000, CONFIG_NOT_WD), s - 3600000);
    /* without a calendar, even a wd count is ignored (a hand-built config) */
    config_t bare;
    memset(&bare, 0, sizeof bare);
    assert_int_equal(config_deadline(&bare, s, 5000, 0), s + 5000);
    assert_int_equal(config_deadline(NULL, s, 5000, 3), s + 5000);
}

/* The calendar as loaded: each official date, and plain weekdays around them. */
static void test_calendar_days(void **state)
{
    (void)state;
    const config_calendar_t *c = &g_cfg->calendar;
    assert_string_equal(g_cfg->timezone, "Asia/Shanghai");
    assert_int_equal(c->n_holidays, 3 + 9 + 3 + 5 + 3 + 3 + 7);
    assert_int_equal(c->n_extra, 6);
    assert_int_equal(c->last_day, config_day_number(2026, 10, 10));
    assert_int_equal(c->start_min, 9 * 60);
    static const int off[][3] = {{2026, 1, 1},  {2026, 2, 23}, {2026, 4, 6},  {2026, 5, 5},
                                 {2026, 6, 19}, {2026, 9, 25}, {2026, 10, 7}, {2026, 10, 11},
                                 {2026, 12, 5}, {2027, 1, 2}};
    static const int on[][3] = {{2026, 1, 4},  {2026, 2, 14}, {2026, 2, 28}, {2026, 5, 9},
                                {2026, 9, 20}, {2026, 10, 10}, {2026, 10, 8}, {2026, 12, 31},
                                {2027, 1, 1}};
    for (size_t i = 0; i < sizeof off / sizeof off[0]; i++)
        assert_false(config_is_workday(c, config_day_number(off[i][0], off[i][1], off[i][2])));
    for (size_t i = 0; i < sizeof on / sizeof on[0]; i++)
        assert_true(config_is_workday(c, config_day_number(on[i][0], on[i][1], on[i][2])));
}

static void test_day_numbers(void **state)
{
    (void)state;
    assert_int_equal(config_day_number(1970, 1, 1), 0);
    assert_int_equal(config_day_number(2000, 3, 1), 11017);
    assert_int_equal(config_day_number(2026, 12, 3), 20790);
    for (int32_t d = -800; d < 80000; d += 37) {
        int y, m, dd;
        config_day_date(d, &y, &m, &dd);
        assert_int_equal(config_day_number(y, m, dd), d);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_day_numbers),
        cmocka_unit_test(test_calendar_days),
        cmocka_unit_test(test_forward),
        cmocka_unit_test(test_backward),
        cmocka_unit_test(test_clock_durations_unchanged),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
