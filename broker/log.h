/*
 * log.h — the broker's log: one line per record on stderr.
 *
 *   2026-11-28T10:31:02.123Z INFO  store: opened var/carehub (map 64 MiB)
 *
 * Under systemd, when stderr is the journal (JOURNAL_STREAM names stderr's
 * device and inode), a record is its syslog level in angle brackets and the
 * text, without a time (the journal keeps its own and shows the level):
 *
 *   <6>store: opened /var/lib/carehub/data (map 64 MiB)
 *
 * Levels: debug <7>, info <6>, warn <4>, error <3>.
 *
 * Privacy rule: log ids (agent, message, event, case), never a child's name,
 * birth date, guardian or free text. Bodies are never logged.
 */
#ifndef CAREHUB_LOG_H
#define CAREHUB_LOG_H

typedef enum { LOG_DEBUG = 0, LOG_INFO, LOG_WARN, LOG_ERROR } log_level_t;

/* Records below this level are dropped. Default LOG_INFO; CAREHUB_LOG=debug lowers it. */
void log_set_level(log_level_t level);
log_level_t log_get_level(void);

/* 1 when records go to the journal (decided at the first call, from
 * JOURNAL_STREAM and fstat of stderr), else 0. */
int log_to_journal(void);

void log_write(log_level_t level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_debug(...) log_write(LOG_DEBUG, __VA_ARGS__)
#define log_info(...)  log_write(LOG_INFO, __VA_ARGS__)
#define log_warn(...)  log_write(LOG_WARN, __VA_ARGS__)
#define log_error(...) log_write(LOG_ERROR, __VA_ARGS__)

#endif
