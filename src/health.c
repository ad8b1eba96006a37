/*
 * health.c — readiness, the Redis PING, and the systemd notifications. See health.h.
 */
#include "riskflow/health.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "riskflow/err.h"
#include "riskflow/notify.h"

#define TICK_WAITING_MS 250
#define TICK_READY_MS 1000

struct rf_health_s {
    struct rf_health_deps d;
    rf_notify_t *notify;
    uv_timer_t tick, watchdog;
    int has_redis;
    int redis_ok;      /* the last PING was answered */
    int ping_status;   /* its status */
    uint64_t rtt_us;
    struct rf_hist rtt;
    int ready_sent;    /* READY=1 sent since the start or the last reload */
    int reloading, stopping, closed;
    char status[512];  /* the last STATUS= sent */
};

static void on_ping(rf_store_t *store, int status, uint64_t rtt_us, void *arg) {
    rf_health_t *h = arg;
    (void)store;
    h->ping_status = status;
    h->redis_ok = status == 0;
    if (status == 0) {
        h->rtt_us = rtt_us;
        rf_hist_add(&h->rtt, rtt_us);
    }
}

int rf_health_ready(const rf_health_t *h, const char **why) {
    const char *w = "";
    if (h->stopping)
        w = "stopping";
    else if (h->reloading)
        w = "reloading the models";
    else if (h->has_redis && !h->redis_ok)
        w = "waiting for Redis to answer";
    else if (rf_engine_assigned(h->d.engine) == 0)
        w = "waiting for partitions";
    if (why)
        *why = w;
    return !*w;
}

/* "STATUS=..." with the counters; sent when it changed. */
static void send_status(rf_health_t *h, int ready, const char *why) {
    const struct rf_metrics *m = h->d.metrics;
    char msg[sizeof h->status];
    int n = snprintf(msg, sizeof msg, "STATUS=%s: %d partitions, %" PRIu64 " in, %" PRIu64
                     " scored, %" PRIu64 " dead-lettered, %d in flight",
                     ready ? "ready" : why, rf_engine_assigned(h->d.engine), m->events_in,
                     m->scored, m->dead_lettered, rf_engine_inflight(h->d.engine));
    if (h->has_redis && h->redis_ok && n > 0 && (size_t)n < sizeof msg)
        snprintf(msg + n, sizeof msg - (size_t)n, ", Redis round trip %.2f ms",
                 (double)h->rtt_us / 1000.0);
    if (strcmp(msg, h->status) == 0)
        return;
    memcpy(h->status, msg, sizeof msg);
    rf_notify_send(h->notify, msg);
}

static void on_tick(uv_timer_t *t) {
    rf_health_t *h = t->data;
    if (h->has_redis) {
        int rc = rf_store_ping(h->d.store, on_ping, h);
        if (rc < 0 && rc != RF_E_BUSY) {
            h->redis_ok = 0;
            h->ping_status = rc;
        }
    }
    const char *why;
    int ready = rf_health_ready(h, &why);
    if (ready && !h->ready_sent) {
        h->ready_sent = 1;
        rf_notify_send(h->notify, "READY=1");
        uv_timer_set_repeat(&h->tick, TICK_READY_MS);
    }
    send_status(h, ready, why);
}

static void on_watchdog(uv_timer_t *t) {
    rf_health_t *h = t->data;
    rf_notify_send(h->notify, "WATCHDOG=1");
}

rf_health_t *rf_health_new(const struct rf_health_deps *deps, char *errstr, size_t errstr_size) {
    rf_health_t *h = calloc(1, sizeof *h);
    if (!h) {
        snprintf(errstr, errstr_size, "out of memory");
        return NULL;
    }
    h->d = *deps;
    h->notify = rf_notify_new(errstr, errstr_size);
    if (!h->notify) {
        free(h);
        return NULL;
    }
    h->has_redis = deps->redis;
    uv_timer_init(deps->loop, &h->tick);
    uv_timer_init(deps->loop, &h->watchdog);
    h->tick.data = h->watchdog.data = h;
    return h;
}

void rf_health_start(rf_health_t *h) {
    uv_timer_start(&h->tick, on_tick, 0, TICK_WAITING_MS);
    uint64_t us = rf_notify_watchdog_usec(h->notify);
    if (us) {
        uint64_t ms = us / 2000;
        uv_timer_start(&h->watchdog, on_watchdog, 0, ms ? ms : 1);
    }
}

const struct rf_hist *rf_health_rtt_hist(const rf_health_t *h) {
    return &h->rtt;
}

int rf_health_redis_up(const rf_health_t *h) {
    return !h->has_redis || h->redis_ok;
}

uint64_t rf_health_notify_dropped(const rf_health_t *h) {
    return rf_notify_dropped(h->notify);
}

uint64_t rf_health_watchdog_usec(const rf_health_t *h) {
    return rf_notify_watchdog_usec(h->notify);
}

void rf_health_reload_begin(rf_health_t *h) {
    h->reloading = 1;
    h->ready_sent = 0;
    rf_notify_send(h->notify, "RELOADING=1");
}

void rf_health_reload_end(rf_health_t *h) {
    h->reloading = 0;
    if (!h->closed)
        on_tick(&h->tick); /* READY=1 now if everything holds, else at the tick that finds it */
}

void rf_health_stopping(rf_health_t *h) {
    if (h->stopping)
        return;
    h->stopping = 1;
    rf_notify_send(h->notify, "STOPPING=1");
    send_status(h, 0, "stopping");
}

void rf_health_close(rf_health_t *h) {
    if (!h || h->closed)
        return;
    h->closed = 1;
    uv_timer_stop(&h->tick);
    uv_timer_stop(&h->watchdog);
    uv_close((uv_handle_t *)&h->tick, NULL);
    uv_close((uv_handle_t *)&h->watchdog, NULL);
}

void rf_health_destroy(rf_health_t *h) {
    if (!h)
        return;
    rf_notify_destroy(h->notify);
    free(h);
}
