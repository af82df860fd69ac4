/* cli_time.c — the agents' dates and times as people and feeds write them; see cli.h. */
#include "cli.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "util.h"

static int days_in_month(int y, int m)
{
    static const int d[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (m == 2 && ((y % 4 == 0 && y % 100 != 0) || y % 400 == 0))
        return 29;
    return d[m - 1];
}

/* Digits s[0..n) into *out; -1 when one is not a digit. */
static int digits(const char *s, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return 0;
}

static int parse_date(const char *s, int *y, int *m, int *d)
{
    if (strlen(s) < 10 || s[4] != '-' || s[7] != '-')
        return -1;
    if (digits(s, 4, y) || digits(s + 5, 2, m) || digits(s + 8, 2, d))
        return -1;
    if (*y < 1 || *m < 1 || *m > 12 || *d < 1 || *d > days_in_month(*y, *m))
        return -1;
    return 0;
}

int cli_valid_date(const char *s)
{
    int y, m, d;
    return strlen(s) == 10 && parse_date(s, &y, &m, &d) == 0;
}

/* What cli_parse_time() reads, or with rfc3339 only an RFC 3339 date-time (the
 * seconds and the offset required, no "now", no bare ms, no ',' fraction). */
static int parse_time(const char *s, int rfc3339, int64_t *out_ms)
{
    size_t n = strlen(s);
    if (n == 0)
        return -1;
    if (!rfc3339 && !strcmp(s, "now")) {
        *out_ms = util_now_ms();
        return 0;
    }
    if (!rfc3339 && strspn(s, "0123456789") == n) {
        if (n > 15)
            return -1;   /* beyond year 33658 */
        *out_ms = strtoll(s, NULL, 10);
        return 0;
    }
    int y, mo, d, hh = 0, mi = 0, ss = 0, frac_ms = 0;
    if (parse_date(s, &y, &mo, &d) < 0)
        return -1;
    const char *p = s + 10;
    if (*p == 'T' || *p == 't' || *p == ' ') {
        p++;
        if (strlen(p) < 5 || p[2] != ':' || digits(p, 2, &hh) || digits(p + 3, 2, &mi))
            return -1;
        p += 5;
        if (*p == ':') {
            if (digits(p + 1, 2, &ss))
                return -1;
            p += 3;
            if (*p == '.' || (*p == ',' && !rfc3339)) {   /* a fraction of a second */
                p++;
                if (*p < '0' || *p > '9')
                    return -1;
                for (int k = 0; *p >= '0' && *p <= '9'; k++, p++)
                    if (k < 3)
                        frac_ms += (*p - '0') * (k == 0 ? 100 : k == 1 ? 10 : 1);
            }
        } else if (rfc3339) {
            return -1;
        }
        if (hh > 23 || mi > 59 || ss > 60)
            return -1;
    } else if (rfc3339) {
        return -1;
    }
    struct tm tm;
    memset(&tm, 0, sizeof tm);
    tm.tm_year = y - 1900;
    tm.tm_mon = mo - 1;
    tm.tm_mday = d;
    tm.tm_hour = hh;
    tm.tm_min = mi;
    tm.tm_sec = ss;
    time_t t;
    if (*p == '\0') {
        if (rfc3339)
            return -1;
        tm.tm_isdst = -1;
        t = mktime(&tm);
    } else {
        int off = 0;
        if ((*p == 'Z' || *p == 'z') && p[1] == '\0') {
            off = 0;
        } else if ((*p == '+' || *p == '-') && strlen(p) == 6 && p[3] == ':') {
            int oh, om;
            if (digits(p + 1, 2, &oh) || digits(p + 4, 2, &om) || oh > 23 || om > 59)
                return -1;
            off = (oh * 60 + om) * 60 * (*p == '-' ? -1 : 1);
        } else {
            return -1;
        }
        t = timegm(&tm);
        if (t != (time_t)-1)
            t -= off;
    }
    if (t == (time_t)-1 || t < 0)
        return -1;
    *out_ms = (int64_t)t * 1000 + frac_ms;
    return 0;
}

int cli_parse_time(const char *s, int64_t *out_ms)
{
    return parse_time(s, 0, out_ms);
}

int cli_parse_rfc3339(const char *s, int64_t *out_ms)
{
    return parse_time(s, 1, out_ms);
}

int cli_parse_span_ms(const char *s, int64_t *out_ms)
{
    char *end = NULL;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || errno || !(v >= 0))
        return -1;
    static const struct {
        const char *suffix;
        double ms;
    } U[] = {{"", 1e3}, {"s", 1e3}, {"m", 6e4}, {"h", 3.6e6}, {"d", 8.64e7}, {"w", 6.048e8}};
    for (size_t i = 0; i < sizeof U / sizeof U[0]; i++) {
        if (strcmp(end, U[i].suffix) != 0)
            continue;
        double ms = v * U[i].ms;
        if (ms > 366 * 8.64e7)
            return -1;
        *out_ms = (int64_t)(ms + 0.5);
        return 0;
    }
    return -1;
}
