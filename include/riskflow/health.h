/*
 * health.h — whether the service is alive and ready, and telling systemd (notify.h).
 *
 * Owns the readiness verdict, the Redis round trip it measures, the systemd notifier, and two
 * loop timers: the health tick and the watchdog. Ready means all of: the consumer has
 * partitions assigned, Redis answers a PING (the memory backend has no Redis to ask), the
 * models are loaded (they are, once the engine exists; a reload in progress is not ready),
 * and the daemon is not stopping. The tick PINGs Redis (every 250 ms until ready, then every
 * second), sends READY=1 the first time everything holds (and again after each reload), and
 * STATUS= with live counters. WATCHDOG=1 comes from a timer of its own at half of
 * WATCHDOG_USEC: it runs only while the loop turns, so a stalled loop misses it and systemd
 * restarts the service. /readyz and /healthz (issue 8's listener) read the same verdict.
 * Loop thread only; nothing allocated after rf_health_new.
 */
#ifndef RISKFLOW_HEALTH_H
#define RISKFLOW_HEALTH_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "riskflow/engine.h"
#include "riskflow/metrics.h"
#include "riskflow/store.h"

typedef struct rf_health_s rf_health_t;

/* Borrowed; must outlive the health object. */
struct rf_health_deps {
    uv_loop_t *loop;
    rf_store_t *store;
    rf_engine_t *engine;
    const struct rf_metrics *metrics;
    int redis; /* the store's backend is Redis: readiness waits for its PONG */
};

/* The notifier from the environment (rf_notify_new): NULL + errstr when NOTIFY_SOCKET is set
 * but unusable. Timers are initialised, not started. */
rf_health_t *rf_health_new(const struct rf_health_deps *deps, char *errstr, size_t errstr_size);

/* Start the tick and, when systemd asked for one, the watchdog. */
void rf_health_start(rf_health_t *h);

/* Ready as above; why: what it waits for ("" when ready). */
int rf_health_ready(const rf_health_t *h, const char **why);

/* Every PING's round trip (the /metrics histogram), and whether the last was answered (1
 * without Redis). */
const struct rf_hist *rf_health_rtt_hist(const rf_health_t *h);
int rf_health_redis_up(const rf_health_t *h);

/* systemd notifications that could not be sent (the socket full or gone): a watchdog ping
 * among them can get the service killed, so SREs see the count. */
uint64_t rf_health_notify_dropped(const rf_health_t *h);

/* The watchdog interval systemd asked for, in microseconds (0: none). */
uint64_t rf_health_watchdog_usec(const rf_health_t *h);

/* A reload begins (RELOADING=1; not ready) / ends (READY=1 again, when ready). */
void rf_health_reload_begin(rf_health_t *h);
void rf_health_reload_end(rf_health_t *h);

/* SIGTERM: STOPPING=1, never ready again. */
void rf_health_stopping(rf_health_t *h);

/* Stop the timers and close them (the loop can then run out); free with rf_health_destroy
 * once the loop has. */
void rf_health_close(rf_health_t *h);
void rf_health_destroy(rf_health_t *h); /* accepts NULL */

#endif
