/* log.c — timestamped records on stderr, or syslog-levelled ones to the journal; see log.h. */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static log_level_t min_level = LOG_INFO;
static int to_journal = -1; /* -1: not yet looked at */

int log_to_journal(void)
{
    if (to_journal < 0) {
        /* systemd sets JOURNAL_STREAM to "DEV:INO" of the stream it connected to
         * stdout/stderr; a match means stderr itself still goes there (not a file
         * a wrapper redirected it to, which inherits the variable). */
        const char *js = getenv("JOURNAL_STREAM");
        unsigned long long dev, ino;
        char tail;
        struct stat st;
        to_journal = js && sscanf(js, "%llu:%llu%c", &dev, &ino, &tail) == 2 &&
                     fstat(STDERR_FILENO, &st) == 0 && (unsigned long long)st.st_dev == dev &&
                     (unsigned long long)st.st_ino == ino;
    }
    return to_journal;
}

void log_set_level(log_level_t level) { min_level = level; }
log_level_t log_get_level(void) { return min_level; }

void log_write(log_level_t level, const char *fmt, ...)
{
    static const char *names[] = {"DEBUG", "INFO ", "WARN ", "ERROR"};
    static const int syslog_levels[] = {7, 6, 4, 3}; /* debug, info, warning, err */
    if (level < min_level)
        return;
    char line[2048];
    va_list ap;
    va_start(ap, fmt);
    (void)vsnprintf(line, sizeof line, fmt, ap); /* long records are cut, never overflow */
    va_end(ap);
    if (log_to_journal()) { /* the journal stamps the time and reads the level from <N> */
        fprintf(stderr, "<%d>%s\n", syslog_levels[level], line);
        return;
    }
    struct timespec ts;
    struct tm tm;
    char when[32];
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%S", &tm);
    fprintf(stderr, "%s.%03ldZ %s %s\n", when, (long)(ts.tv_nsec / 1000000), names[level], line);
}
