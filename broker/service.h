/*
 * service.h — carehubd as a systemd service (Type=notify): readiness, the
 * watchdog and the stop notice, through libsystemd's sd_notify(3).
 *
 * systemd passes NOTIFY_SOCKET (where to send notices) and, with WatchdogSec=,
 * WATCHDOG_USEC (how often it wants to hear from the service). Without
 * NOTIFY_SOCKET every function here does nothing: carehubd run by hand, by a
 * test or under another supervisor behaves as before. A notice is one datagram
 * to a local socket that systemd reads at once; no answer is awaited, so the
 * event loop does not wait on systemd (a failed send is logged, never fatal).
 *
 * Sequence: service_init() once at start; service_ready() once every listening
 * socket is bound and the store is open; service_watchdog() on each turn of the
 * event loop, whose poll waits at most service_timeout_ms(); service_stopping()
 * when a stop was asked for (SIGTERM, SIGINT), before the last flush.
 */
#ifndef CAREHUB_SERVICE_H
#define CAREHUB_SERVICE_H

#include <stdint.h>

/* Read the watchdog interval (sd_watchdog_enabled: WATCHDOG_USEC, and
 * WATCHDOG_PID when set must be this process) and log what was found. The
 * watchdog is fed at half the interval systemd asked for. */
void service_init(void);

/* READY=1 with a STATUS= line naming what listens (status may be NULL). */
void service_ready(const char *status);

/* WATCHDOG=1 when half the interval has passed since the last one (or none
 * was sent yet). now_ms: a monotonic clock (util_mono_ms). */
void service_watchdog(int64_t now_ms);

/* How long the event loop may wait before the next WATCHDOG=1 is due, in ms
 * (0 when due now), or -1 when there is no watchdog. */
long service_timeout_ms(int64_t now_ms);

/* STOPPING=1: the broker is flushing its last turns and will exit. */
void service_stopping(void);

#endif
