/*
 * notify.c — the systemd notification datagrams. See notify.h.
 */
#include "riskflow/notify.h"

#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "riskflow/err.h"

struct rf_notify_s {
    int fd; /* -1: notifications off */
    struct sockaddr_un addr;
    socklen_t addr_len;
    uint64_t watchdog_usec;
    uint64_t dropped;
};

/* WATCHDOG_USEC applies to us when WATCHDOG_PID is unset or names this process. */
static uint64_t watchdog_from_env(void) {
    const char *us = getenv("WATCHDOG_USEC"), *pid = getenv("WATCHDOG_PID");
    if (!us)
        return 0;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(us, &end, 10);
    if (errno || *end || end == us || v == 0)
        return 0;
    if (pid) {
        long p = strtol(pid, &end, 10);
        if (*end || p != (long)getpid())
            return 0;
    }
    return (uint64_t)v;
}

rf_notify_t *rf_notify_new(char *errstr, size_t errstr_size) {
    rf_notify_t *n = calloc(1, sizeof *n);
    if (!n) {
        snprintf(errstr, errstr_size, "out of memory");
        return NULL;
    }
    n->fd = -1;
    const char *path = getenv("NOTIFY_SOCKET");
    n->watchdog_usec = path ? watchdog_from_env() : 0;
    if (path) {
        size_t len = strlen(path);
        if ((path[0] != '/' && path[0] != '@') || len < 2 || len >= sizeof n->addr.sun_path) {
            snprintf(errstr, errstr_size,
                     "NOTIFY_SOCKET '%s': not an absolute path or an @abstract name that fits",
                     path);
            free(n);
            return NULL;
        }
        n->addr.sun_family = AF_UNIX;
        memcpy(n->addr.sun_path, path, len);
        if (path[0] == '@')
            n->addr.sun_path[0] = '\0'; /* the abstract namespace; its length is exact */
        n->addr_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len +
                                  (path[0] == '@' ? 0 : 1));
        n->fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (n->fd < 0) {
            snprintf(errstr, errstr_size, "NOTIFY_SOCKET: socket: %s", strerror(errno));
            free(n);
            return NULL;
        }
    }
    unsetenv("NOTIFY_SOCKET");
    unsetenv("WATCHDOG_USEC");
    unsetenv("WATCHDOG_PID");
    return n;
}

void rf_notify_destroy(rf_notify_t *n) {
    if (!n)
        return;
    if (n->fd >= 0)
        close(n->fd);
    free(n);
}

int rf_notify_enabled(const rf_notify_t *n) {
    return n && n->fd >= 0;
}

int rf_notify_send(rf_notify_t *n, const char *msg) {
    if (!rf_notify_enabled(n))
        return 1;
    ssize_t w = sendto(n->fd, msg, strlen(msg), MSG_DONTWAIT | MSG_NOSIGNAL,
                       (const struct sockaddr *)&n->addr, n->addr_len);
    if (w < 0) {
        n->dropped++;
        return RF_E_IO;
    }
    return 0;
}

uint64_t rf_notify_watchdog_usec(const rf_notify_t *n) {
    return n ? n->watchdog_usec : 0;
}

uint64_t rf_notify_dropped(const rf_notify_t *n) {
    return n ? n->dropped : 0;
}
