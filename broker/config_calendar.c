/*
 * config_calendar.c — working days (CONFIG.md additions; PROTOCOL §10):
 * broker.timezone, the `calendar` section, `Nwd` durations for the deadline
 * keys, and the deadline arithmetic over them (config_deadline()).
 *
 *   broker:
 *     timezone: Asia/Shanghai          # IANA name; default UTC
 *   calendar:
 *     workdays: [mon, tue, wed, thu, fri]
 *     workday_start: "09:00"
 *     holidays: ["2026-10-01..2026-10-07", "2027-01-01"]
 *     extra_workdays: ["2026-09-20", "2026-10-10"]
 *
 * No zone rules are written here: a time zone is a name the C library's tz
 * database knows (a regular file under /usr/share/zoneinfo), and every
 * conversion is localtime_r()/mktime() in the process's zone, which carehubd
 * sets to broker.timezone at start (config_apply_timezone()).
 */
#include "config_int.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#define ZONEINFO_DIR "/usr/share/zoneinfo"
#define DEFAULT_TZ "UTC"
#define DEFAULT_START_MIN (9 * 60)
#define MAX_RANGE_DAYS 366     /* one range: at most a year of dates */
#define MAX_LIST_DAYS 36600    /* one list (holidays, extra_workdays): at most 100 years of dates */
#define MAX_WD 3660            /* Nwd: at most about ten years of working days */
#define MAX_SCAN_DAYS 3660     /* a calendar with no working day ahead: give up */
#define DAY_MS 86400000LL

static const char *const WEEKDAYS[] = {"sun", "mon", "tue", "wed", "thu", "fri", "sat"};

/* ---- civil dates --------------------------------------------------------- */

/* Howard Hinnant's days_from_civil: exact for the proleptic Gregorian calendar. */
int32_t config_day_number(int y, int m, int d)
{
    y -= m <= 2;
    int era = (y >= 0 ? y : y - 399) / 400;
    int yoe = y - era * 400;
    int doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

void config_day_date(int32_t day, int *y, int *m, int *d)
{
    int32_t z = day + 719468;
    int era = (z >= 0 ? z : z - 146096) / 146097;
    int doe = z - era * 146097;
    int yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int mp = (5 * doy + 2) / 153;
    *d = doy - (153 * mp + 2) / 5 + 1;
    *m = mp + (mp < 10 ? 3 : -9);
    *y = yoe + era * 400 + (*m <= 2);
}

/* 0 = Sunday; 1970-01-01 (day 0) was a Thursday. */
static int weekday(int32_t day)
{
    int w = (int)((day + 4) % 7);
    return w < 0 ? w + 7 : w;
}

/* "YYYY-MM-DD" exactly, a real date: its day number in *out; else -1. */
static int parse_date(const char *s, size_t len, int32_t *out)
{
    static const int mdays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (len != 10 || s[4] != '-' || s[7] != '-')
        return -1;
    for (size_t i = 0; i < 10; i++)
        if (i != 4 && i != 7 && (s[i] < '0' || s[i] > '9'))
            return -1;
    int y = (s[0] - '0') * 1000 + (s[1] - '0') * 100 + (s[2] - '0') * 10 + (s[3] - '0');
    int m = (s[5] - '0') * 10 + (s[6] - '0');
    int d = (s[8] - '0') * 10 + (s[9] - '0');
    if (y < 1970 || m < 1 || m > 12 || d < 1 || d > mdays[m - 1])
        return -1;
    if (m == 2 && d == 29 && !((y % 4 == 0 && y % 100 != 0) || y % 400 == 0))
        return -1;
    *out = config_day_number(y, m, d);
    return 0;
}

static int day_cmp(const void *a, const void *b)
{
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

static int day_in(const int32_t *v, size_t n, int32_t day)
{
    return n && bsearch(&day, v, n, sizeof *v, day_cmp) != NULL;
}

int config_is_workday(const config_calendar_t *cal, int32_t day)
{
    if (day_in(cal->holidays, cal->n_holidays, day))
        return 0;
    if (day_in(cal->extra, cal->n_extra, day))
        return 1;
    return (cal->workdays >> weekday(day)) & 1;
}

/* ---- loading ------------------------------------------------------------- */

void cfg_parse_timezone(loader_t *ld, yaml_node_t *v)
{
    config_t *cfg = ld->cfg;
    const char *s;
    if (!v || !(s = cfg_scalar(ld, v, "broker.timezone")))
        goto dflt;
    size_t n = strlen(s);
    int bad = n == 0 || n > 128 || s[0] == '/' || strstr(s, "..") != NULL;
    for (size_t i = 0; !bad && i < n; i++)
        bad = !((s[i] >= 'A' && s[i] <= 'Z') || (s[i] >= 'a' && s[i] <= 'z') ||
                (s[i] >= '0' && s[i] <= '9') || strchr("/_+-", s[i]));
    if (bad) {
        cfg_err_at(ld, v, "broker.timezone %s is not a time zone name: write an IANA name such "
                   "as Asia/Shanghai or UTC (letters, digits, / _ + -; no \"..\")", cfg_qv(ld, s));
        goto dflt;
    }
    char path[256];
    struct stat st;
    util_fmt(path, sizeof path, "%s/%s", ZONEINFO_DIR, s);
    if (stat(path, &st) != 0 || !S_ISREG(st.st_mode)) {
        cfg_err_at(ld, v, "broker.timezone %s is not in this host's time zone database (%s "
                   "%s): write an IANA name such as Asia/Shanghai, or install the tzdata package",
                   cfg_qv(ld, s), path, stat(path, &st) != 0 ? "does not exist" : "is not a file");
        goto dflt;
    }
    cfg->timezone = xstrdup(s);
    cfg->timezone_set = 1;
    return;
dflt:
    if (!cfg->timezone)
        cfg->timezone = xstrdup(DEFAULT_TZ);
}

/* Add a day number to a list sorted later; capacity doubles (a power of two from 16). */
static void push_day(int32_t **v, size_t *n, int32_t day)
{
    if (*n >= 16 && (*n & (*n - 1)) == 0)
        *v = xrealloc(*v, 2 * *n * sizeof **v);
    else if (*n == 0)
        *v = xrealloc(*v, 16 * sizeof **v);
    (*v)[(*n)++] = day;
}

/* holidays / extra_workdays: dates or inclusive ranges "A..B". */
static void parse_dates(loader_t *ld, yaml_node_t *n, const char *what, int32_t **out,
                        size_t *n_out)
{
    char **vals;
    yaml_node_t **items;
    size_t cnt = cfg_str_list(ld, n, what, &vals, &items);
    for (size_t i = 0; i < cnt; i++) {
        const char *s = vals[i];
        if (*n_out > MAX_LIST_DAYS) {
            cfg_err_at(ld, items[i], "%s lists more than %d dates; keep the calendar to the "
                       "years it is used for", what, MAX_LIST_DAYS);
            break;
        }
        const char *dots = strstr(s, "..");
        int32_t a, b;
        if (!dots) {
            if (parse_date(s, strlen(s), &a) == 0) {
                push_day(out, n_out, a);
                continue;
            }
        } else if (parse_date(s, (size_t)(dots - s), &a) == 0 &&
                   parse_date(dots + 2, strlen(dots + 2), &b) == 0) {
            if (b < a)
                cfg_err_at(ld, items[i], "%s %s ends before it starts: write the earlier date "
                           "first (\"2026-10-01..2026-10-07\")", what, cfg_qv(ld, s));
            else if (b - a >= MAX_RANGE_DAYS)
                cfg_err_at(ld, items[i], "%s %s spans %d days; a range is at most %d days "
                           "(write one range per holiday)", what, cfg_qv(ld, s), (int)(b - a + 1),
                           MAX_RANGE_DAYS);
            else
                for (int32_t d = a; d <= b; d++)
                    push_day(out, n_out, d);
            continue;
        }
        cfg_err_at(ld, items[i], "%s %s is not a date: write YYYY-MM-DD (\"2026-10-01\") or an "
                   "inclusive range of two (\"2026-10-01..2026-10-07\"), each a real date "
                   "from 1970", what, cfg_qv(ld, s));
    }
    cfg_free_strs(vals, cnt);
    free(items);
    if (*n_out) {
        qsort(*out, *n_out, sizeof **out, day_cmp);
        size_t w = 1;
        for (size_t r = 1; r < *n_out; r++)
            if ((*out)[r] != (*out)[w - 1])
                (*out)[w++] = (*out)[r];
        *n_out = w;
    }
}

void cfg_parse_calendar(loader_t *ld, yaml_node_t *node)
{
    config_calendar_t *cal = &ld->cfg->calendar;
    field_t f[] = {{"workdays", 0, 0}, {"workday_start", 0, 0}, {"holidays", 0, 0},
                   {"extra_workdays", 0, 0}};
    if (!node)
        return;
    cal->present = 1; /* even when broken: `wd` elsewhere is then not also reported */
    cal->line = cfg_node_line(node);
    cal->workdays = 0x3e; /* mon..fri */
    cal->start_min = DEFAULT_START_MIN;
    if (!GET_FIELDS(ld, node, "calendar"))
        return;
    yaml_node_t *v;
    const char *s;
    if ((v = FV("workdays")) != NULL) {
        char **vals;
        yaml_node_t **items;
        size_t cnt = cfg_str_list(ld, v, "calendar.workdays", &vals, &items);
        cal->workdays = 0;
        for (size_t i = 0; i < cnt; i++) {
            size_t w = 0;
            while (w < 7 && strcmp(vals[i], WEEKDAYS[w]) != 0)
                w++;
            if (w == 7) {
                char hint[96];
                cfg_suggest(hint, sizeof hint, vals[i], WEEKDAYS, 7);
                cfg_err_at(ld, items[i], "calendar.workdays %s is not a weekday: write mon, tue, "
                           "wed, thu, fri, sat or sun;%s", cfg_qv(ld, vals[i]), hint);
            } else if (cal->workdays & (1u << w)) {
                cfg_err_at(ld, items[i], "calendar.workdays lists %s twice", cfg_qv(ld, vals[i]));
            } else {
                cal->workdays |= (uint8_t)(1u << w);
            }
        }
        if (cnt == 0 && v->type == YAML_SEQUENCE_NODE)
            cfg_err_at(ld, v, "calendar.workdays is empty: list the weekdays that work, e.g. "
                       "[mon, tue, wed, thu, fri]");
        if (cal->workdays == 0) /* reported above; keep the arithmetic finite */
            cal->workdays = 0x3e;
        cfg_free_strs(vals, cnt);
        free(items);
    }
    if ((v = FV("workday_start")) != NULL && (s = cfg_scalar(ld, v, "calendar.workday_start"))) {
        int ok = strlen(s) == 5 && s[2] == ':' && s[0] >= '0' && s[0] <= '2' && s[1] >= '0' &&
                 s[1] <= '9' && s[3] >= '0' && s[3] <= '5' && s[4] >= '0' && s[4] <= '9';
        int h = ok ? (s[0] - '0') * 10 + (s[1] - '0') : 0;
        if (!ok || h > 23)
            cfg_err_at(ld, v, "calendar.workday_start %s is not a time of day: write \"HH:MM\" "
                       "from \"00:00\" to \"23:59\", quoted (e.g. \"09:00\")", cfg_qv(ld, s));
        else
            cal->start_min = h * 60 + (s[3] - '0') * 10 + (s[4] - '0');
    }
    parse_dates(ld, FV("holidays"), "calendar.holidays", &cal->holidays, &cal->n_holidays);
    parse_dates(ld, FV("extra_workdays"), "calendar.extra_workdays", &cal->extra, &cal->n_extra);
    for (size_t i = 0; i < cal->n_extra; i++)
        if (day_in(cal->holidays, cal->n_holidays, cal->extra[i])) {
            int y, m, d;
            config_day_date(cal->extra[i], &y, &m, &d);
            cfg_err_at(ld, FV("extra_workdays"), "calendar: %04d-%02d-%02d is both a holiday and "
                       "an extra working day; keep it in one of the two lists", y, m, d);
        }
    if (cal->n_holidays)
        cal->last_day = cal->holidays[cal->n_holidays - 1];
    if (cal->n_extra && cal->extra[cal->n_extra - 1] > cal->last_day)
        cal->last_day = cal->extra[cal->n_extra - 1];
}

int64_t cfg_deadline_duration(loader_t *ld, yaml_node_t *n, const char *what, int64_t dflt,
                              int allow_zero, int *wd)
{
    const char *s = n && n->type == YAML_SCALAR_NODE ? (const char *)n->data.scalar.value : NULL;
    size_t len = s ? strlen(s) : 0;
    if (!(len > 2 && strcmp(s + len - 2, "wd") == 0))
        return cfg_duration(ld, n, what, dflt, allow_zero); /* *wd stays as the caller set it */
    long v = 0;
    size_t i = 0;
    for (; i < len - 2 && s[i] >= '0' && s[i] <= '9' && v <= MAX_WD; i++)
        v = v * 10 + (s[i] - '0');
    if (i != len - 2 || i == 0 || v > MAX_WD) {
        cfg_err_at(ld, n, "%s %s is not a number of working days: write a whole number from 0 "
                   "to %d and wd (e.g. 2wd)", what, cfg_qv(ld, s), MAX_WD);
        return dflt;
    }
    if (!ld->cfg->calendar.present) {
        cfg_err_at(ld, n, "%s %s counts working days, which needs a `calendar` section (workdays, "
                   "workday_start, holidays, extra_workdays; see docs/config.md): add one, or "
                   "write calendar days (e.g. 2d)", what, cfg_qv(ld, s));
        return dflt;
    }
    if (v == 0 && !allow_zero) {
        cfg_err_at(ld, n, "%s must be more than 0 (e.g. 5wd)", what);
        return dflt;
    }
    *wd = (int)v;
    return 0;
}

/* ---- the arithmetic ------------------------------------------------------ */

void config_local_time(const config_t *cfg, int64_t ms, char *buf, size_t size)
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    const char *tz = cfg && cfg->timezone ? cfg->timezone : DEFAULT_TZ;
    if (!localtime_r(&t, &tm)) {
        util_fmt(buf, size, "%lld", (long long)ms);
        return;
    }
    util_fmt(buf, size, "%d月%d日 %02d:%02d%s", tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
             strcmp(tz, "UTC") == 0 ? " UTC" : "");
}

int config_apply_timezone(const config_t *cfg)
{
    const char *tz = cfg && cfg->timezone ? cfg->timezone : DEFAULT_TZ;
    if (setenv("TZ", tz, 1) != 0)
        return -1;
    tzset();
    return 0;
}

/* The local date of epoch seconds t (day number) and the seconds into it. */
static int32_t local_day(time_t t, int *sec_of_day)
{
    struct tm tm;
    if (!localtime_r(&t, &tm))
        return 0;
    *sec_of_day = tm.tm_hour * 3600 + tm.tm_min * 60 + tm.tm_sec;
    return config_day_number(tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday);
}

/* Epoch seconds of a local date and time of day (mktime: an hour a DST change
 * skips moves forward, as mktime normalises it). */
static time_t local_time(int32_t day, int sec_of_day)
{
    struct tm tm;
    memset(&tm, 0, sizeof tm);
    int y, m, d;
    config_day_date(day, &y, &m, &d);
    tm.tm_year = y - 1900;
    tm.tm_mon = m - 1;
    tm.tm_mday = d;
    tm.tm_hour = sec_of_day / 3600;
    tm.tm_min = sec_of_day / 60 % 60;
    tm.tm_sec = sec_of_day % 60;
    tm.tm_isdst = -1;
    return mktime(&tm);
}

/* The next working day after `day` (dir +1) or before it (dir -1); `day` itself
 * when none within MAX_SCAN_DAYS (a calendar without working days: the loader
 * refuses an empty workdays list, so only all-holiday stretches could do this). */
static int32_t step_workday(const config_calendar_t *cal, int32_t day, int dir)
{
    for (int i = 1; i <= MAX_SCAN_DAYS; i++)
        if (config_is_workday(cal, day + dir * i))
            return day + dir * i;
    return day;
}

static int64_t floor_div(int64_t a, int64_t b)
{
    return a / b - (a % b != 0 && (a < 0) != (b < 0));
}

int64_t config_deadline(const config_t *cfg, int64_t start_ms, int64_t ms, int wd)
{
    if (wd < 0 || !cfg || !cfg->calendar.present)
        return start_ms + ms;
    const config_calendar_t *cal = &cfg->calendar;
    int64_t secs = floor_div(start_ms, 1000);
    int64_t frac = start_ms - secs * 1000;
    int sod = 0;
    int32_t day = local_day((time_t)secs, &sod);
    if (!config_is_workday(cal, day)) { /* counted from workday_start of the next working day */
        day = step_workday(cal, day, +1);
        sod = cal->start_min * 60;
        frac = 0;
    }
    for (int i = 0; i < wd; i++)
        day = step_workday(cal, day, +1);
    return (int64_t)local_time(day, sod) * 1000 + frac;
}

int64_t config_deadline_before(const config_t *cfg, int64_t due_ms, int64_t ms, int wd)
{
    if (wd < 0 || !cfg || !cfg->calendar.present)
        return due_ms - ms;
    if (wd == 0)
        return due_ms;
    int64_t secs = floor_div(due_ms, 1000);
    int64_t frac = due_ms - secs * 1000;
    int sod = 0;
    int32_t day = local_day((time_t)secs, &sod);
    for (int i = 0; i < wd; i++)
        day = step_workday(&cfg->calendar, day, -1);
    return (int64_t)local_time(day, sod) * 1000 + frac;
}

int config_calendar_warning(const config_t *cfg, int64_t now_ms, char *buf, size_t n)
{
    const config_calendar_t *cal = cfg ? &cfg->calendar : NULL;
    if (!cal || !cal->present || n == 0)
        return 0;
    int sod;
    int32_t today = local_day((time_t)floor_div(now_ms, 1000), &sod);
    if (cal->last_day && cal->last_day >= today + 60)
        return 0;
    if (!cal->last_day) {
        util_fmt(buf, n, "%s:%d:1: warning: the calendar lists no holidays or extra working "
                 "days: every %s counts by workdays alone; add the official dates",
                 cfg->path ? cfg->path : "(config)", cal->line, "Nwd");
        return 1;
    }
    int y, m, d, ty, tm_, td;
    config_day_date(cal->last_day, &y, &m, &d);
    config_day_date(today, &ty, &tm_, &td);
    util_fmt(buf, n, "%s:%d:1: warning: the calendar's last listed date, %04d-%02d-%02d, is %s "
             "(today is %04d-%02d-%02d): after it every Nwd counts by workdays alone; add the "
             "next year's holidays and make-up working days from the official notice",
             cfg->path ? cfg->path : "(config)", cal->line, y, m, d,
             cal->last_day < today ? "past" : "less than 60 days away", ty, tm_, td);
    return 1;
}
