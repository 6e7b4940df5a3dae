/* sd_notify protocol without libsystemd: datagrams to $NOTIFY_SOCKET. */
#ifndef SHMNET_DAEMON_SDNOTIFY_H
#define SHMNET_DAEMON_SDNOTIFY_H

#include <stdint.h>

/* Send state (e.g. "READY=1") to $NOTIFY_SOCKET, a path or "@abstract".
 * Returns 1 when sent, 0 when NOTIFY_SOCKET is unset, -errno on failure. */
int sdnotify_send(const char *state);
int sdnotify_printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* The watchdog interval asked for by systemd ($WATCHDOG_USEC, honouring $WATCHDOG_PID),
 * or 0 when there is none. */
uint64_t sdnotify_watchdog_usec(void);

#endif
