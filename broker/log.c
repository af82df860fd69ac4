/* log.c — timestamped records on stderr; see log.h. */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <time.h>

static log_level_t min_level = LOG_INFO;

void log_set_level(log_level_t level) { min_level = level; }
log_level_t log_get_level(void) { return min_level; }

void log_write(log_level_t level, const char *fmt, ...)
{
    static const char *names[] = {"DEBUG", "INFO ", "WARN ", "ERROR"};
    if (level < min_level)
        return;
    struct timespec ts;
    struct tm tm;
    char when[32];
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%S", &tm);
    char line[2048];
    va_list ap;
    va_start(ap, fmt);
    (void)vsnprintf(line, sizeof line, fmt, ap); /* long records are cut, never overflow */
    va_end(ap);
    fprintf(stderr, "%s.%03ldZ %s %s\n", when, (long)(ts.tv_nsec / 1000000), names[level], line);
}
