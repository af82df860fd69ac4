/* service.c — sd_notify readiness, watchdog and stop notices; see service.h. */
#include "service.h"

#include <stdio.h>
#include <string.h>
#include <systemd/sd-daemon.h>

#include "log.h"

static int64_t watchdog_every_ms = -1; /* half of WATCHDOG_USEC; -1: no watchdog */
static int64_t watchdog_last_ms = -1;  /* when WATCHDOG=1 went out last; -1: never */

/* sd_notify with the failure logged: a notice that cannot be sent is worth a
 * line, never a stop (the supervisor will say what it missed). */
static void notify(const char *what)
{
    int rc = sd_notify(0, what);
    if (rc < 0)
        log_warn("service: sd_notify(%.*s): %s", (int)strcspn(what, "\n"), what, strerror(-rc));
}

void service_init(void)
{
    uint64_t usec = 0;
    int rc = sd_watchdog_enabled(0, &usec);
    if (rc < 0) {
        log_warn("service: WATCHDOG_USEC or WATCHDOG_PID is not valid (%s); no watchdog", strerror(-rc));
        return;
    }
    if (rc == 0 || usec == 0)
        return;
    watchdog_every_ms = (int64_t)(usec / 2000);
    if (watchdog_every_ms < 1)
        watchdog_every_ms = 1;
    log_info("service: watchdog every %lld ms (WATCHDOG_USEC=%llu)", (long long)watchdog_every_ms,
             (unsigned long long)usec);
}

void service_ready(const char *status)
{
    char msg[1024];
    snprintf(msg, sizeof msg, "READY=1\nSTATUS=%s", status ? status : "ready");
    notify(msg);
}

void service_watchdog(int64_t now_ms)
{
    if (watchdog_every_ms < 0 || (watchdog_last_ms >= 0 && now_ms - watchdog_last_ms < watchdog_every_ms))
        return;
    watchdog_last_ms = now_ms;
    notify("WATCHDOG=1");
}

long service_timeout_ms(int64_t now_ms)
{
    if (watchdog_every_ms < 0)
        return -1;
    if (watchdog_last_ms < 0)
        return 0;
    int64_t left = watchdog_last_ms + watchdog_every_ms - now_ms;
    return left < 0 ? 0 : (long)left;
}

void service_stopping(void)
{
    notify("STOPPING=1\nSTATUS=stopping: flushing the last turns");
}
