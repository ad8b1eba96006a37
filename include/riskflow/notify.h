/*
 * notify.h — telling systemd how the service is doing (sd_notify(3)'s protocol, written here).
 *
 * Owns the datagram socket to $NOTIFY_SOCKET and the watchdog interval systemd asked for.
 * The protocol is one datagram of "KEY=VALUE\n" lines to a Unix socket (a path, or an abstract
 * name written "@name"): READY=1, RELOADING=1, STOPPING=1, WATCHDOG=1, STATUS=text. Written
 * here rather than with libsystemd's sd_notify: it is this one sendto, ours never blocks the
 * loop (a non-blocking socket, MSG_DONTWAIT; a datagram systemd has no room for is dropped
 * and counted, where sd_notify's blocking socket would wait), and it needs no new library.
 * Without NOTIFY_SOCKET (not under systemd, or Type=simple) every send is a no-op.
 * Loop thread only; no allocation after rf_notify_new.
 */
#ifndef RISKFLOW_NOTIFY_H
#define RISKFLOW_NOTIFY_H

#include <stddef.h>
#include <stdint.h>

typedef struct rf_notify_s rf_notify_t;

/*
 * From the environment: NOTIFY_SOCKET, and WATCHDOG_USEC when WATCHDOG_PID is unset or is
 * this process. The variables are then unset, so that no child inherits them (as
 * sd_notify's unset_environment does). NULL + errstr when NOTIFY_SOCKET is set but unusable
 * (too long, not absolute nor abstract, no socket); a notifier that sends nothing when it is
 * not set.
 */
rf_notify_t *rf_notify_new(char *errstr, size_t errstr_size);
void rf_notify_destroy(rf_notify_t *n); /* accepts NULL */

/* 1 when there is a socket to notify. */
int rf_notify_enabled(const rf_notify_t *n);

/* Send one datagram (msg as is: lines separated by '\n'). 0, 1 when notifications are off,
 * or RF_E_IO (counted in rf_notify_dropped). */
int rf_notify_send(rf_notify_t *n, const char *msg);

/* The watchdog interval systemd asked for (WATCHDOG_USEC), in microseconds; 0 for none. */
uint64_t rf_notify_watchdog_usec(const rf_notify_t *n);

/* Datagrams that could not be sent. */
uint64_t rf_notify_dropped(const rf_notify_t *n);

#endif
