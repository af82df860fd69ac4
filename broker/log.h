/*
 * log.h — the broker's log: one line per record on stderr.
 *
 *   2026-11-28T10:31:02.123Z INFO  store: opened var/carehub (map 64 MiB)
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

void log_write(log_level_t level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_debug(...) log_write(LOG_DEBUG, __VA_ARGS__)
#define log_info(...)  log_write(LOG_INFO, __VA_ARGS__)
#define log_warn(...)  log_write(LOG_WARN, __VA_ARGS__)
#define log_error(...) log_write(LOG_ERROR, __VA_ARGS__)

#endif
