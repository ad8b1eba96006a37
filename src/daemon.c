/*
 * daemon.c — the loop and the order things start and stop in. See daemon.h.
 *
 * Everything runs on this one loop thread: librdkafka reaches it through queue I/O events
 * (kafka.h), Redis through our hiredis adapter, signals and timers as libuv handles.
 * The stop sequence is triggered from callbacks deep inside librdkafka or hiredis, so it is
 * never run there: on_idle only arms a zero timer, and the stop runs from the loop itself.
 * Must never: end the process itself (main.c does); block the loop except in the final stop
 * (synchronous commit and consumer close, which is what they are for).
 */
#define _GNU_SOURCE /* RUSAGE_THREAD */
#include "riskflow/daemon.h"

#include <cblas.h>
#include <inttypes.h>
#ifdef __GLIBC__
#include <malloc.h> /* malloc_trim */
#endif
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "riskflow/codec.h"
#include "riskflow/decl.h"
#include "riskflow/demo.h"
#include "riskflow/engine.h"
#include "riskflow/exposition.h"
#include "riskflow/health.h"
#include "riskflow/http.h"
#include "riskflow/epoch.h"
#include "riskflow/txn.h"
#include "riskflow/err.h"
#include "riskflow/kafka.h"
#include "riskflow/log.h"
#include "riskflow/metrics.h"
#include "riskflow/secret.h"
#include "riskflow/store.h"

/* OpenBLAS 0.3.21 exports these without a prototype in cblas.h on every build. */
void openblas_set_num_threads(int num_threads);
char *openblas_get_corename(void);

struct daemon {
    uv_loop_t loop;
    const struct rf_conf *conf;
    int demo_mode;
    rf_schemas_t *schemas;
    rf_decl_t *decl;
    rf_store_t *store;
    rd_kafka_t *rk, *rkp;
    rd_kafka_queue_t *rkqu_cons, *rkqu_prod;
    struct rf_kafka_watch watch_cons, watch_prod;
    rf_engine_t *engine;
    rf_epoch_t *epoch; /* Redis backend: subscribing waits for its verdict */
    rf_txn_t *txn;     /* exactly-once: subscribing waits for its init too */
    int epoch_pending, txn_pending;
    int subscribed;
    uint64_t join_wait_until_ns; /* a stop waiting for the first assignment (on_stop_check) */
    rf_demo_t *demo;
    rf_health_t *health; /* readiness, systemd's notifications and watchdog */
    rf_http_t *http;     /* metrics.listen: /metrics, /healthz, /readyz */
    double start_time_s;
    struct rf_metrics metrics;

    uv_signal_t sig_term, sig_int, sig_hup;
    uv_timer_t stats_timer;  /* periodic counters; in demo mode also checks for the end */
    uv_timer_t commit_timer; /* commit.interval.ms: async commits of the stored offsets */
    uv_timer_t stop_timer;   /* zero-delay: runs the stop check from a clean stack */
    uv_timer_t deadline;     /* shutdown.timeout.ms */
    uint64_t settle_until_ms; /* the last Redis writes of a stop wait until then */

    int demo_started;
    int watching; /* both queue watches are up */
    int stopping;
    int stopped;
    int timed_out;
    uint64_t stop_deadline_ns;
    uint64_t committed_mark; /* metrics.offsets_stored at the last commit */
    uint64_t trimmed_ms;     /* the loop's clock at the last malloc_trim */
    uint64_t done0, warmup;  /* events done before the measured part (the demo's warm-up) */
    uint64_t jobs_events0[RF_METRIC_JOBS];
    int exit_code;
    uint64_t t_start_ns, t_end_ns;
    struct rusage ru_start, ru_thread_start;
};

static void on_dry_idle(void *arg) {
    (void)arg;
}

static void on_walk_close(uv_handle_t *h, void *arg);

/* A stop or reload signal that reached a thread started before main() blocked them (the
 * loader's and OpenBLAS's own start threads at load time, with the signals unblocked): kept
 * here, acted on once the loop's handlers are in place. */
static volatile sig_atomic_t early_signal;

static void on_early_signal(int signum) {
    early_signal = signum;
}

void rf_daemon_block_signals(int block) {
    static const int sigs[] = {SIGTERM, SIGINT, SIGHUP};
    sigset_t set;
    sigemptyset(&set);
    for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++)
        sigaddset(&set, sigs[i]);
    if (block) {
        /* Blocking covers this thread and those it starts; a thread that existed before
         * main() does not block them, and the default action there would kill the process:
         * a handler of our own takes them until libuv's replace it. */
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = on_early_signal;
        sigemptyset(&sa.sa_mask);
        for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++)
            sigaction(sigs[i], &sa, NULL);
    }
    pthread_sigmask(block ? SIG_BLOCK : SIG_UNBLOCK, &set, NULL);
}

void rf_daemon_default_signals(void) {
    signal(SIGTERM, SIG_DFL);
    signal(SIGINT, SIG_DFL);
    signal(SIGHUP, SIG_DFL);
    rf_daemon_block_signals(0);
}

int rf_daemon_check(const struct rf_conf *conf, FILE *layout, char *errstr, size_t size) {
    char err[768];
    int rc = RF_E_CONF;
    if (rf_kafka_conf_check(conf, errstr, size) != 0)
        return RF_E_CONF;
    rf_schemas_t *schemas = rf_schemas_load(conf->schemas_dir, err, sizeof err);
    if (!schemas) {
        snprintf(errstr, size, "schemas.dir: %s", err);
        return RF_E_CONF;
    }
    rf_decl_t *decl = rf_decl_load(conf->features_path, schemas, err, sizeof err);
    if (!decl) {
        snprintf(errstr, size, "%s", err);
        goto free_schemas;
    }
    /* The engine as it starts, without Kafka: jobs load their models and check every
     * feature they read against the declarations. */
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct rf_metrics metrics;
    memset(&metrics, 0, sizeof metrics);
    struct rf_engine_deps deps = {.loop = &loop, .conf = conf, .schemas = schemas, .decl = decl,
                                  .metrics = &metrics, .on_idle = on_dry_idle};
    rf_engine_t *engine = rf_engine_new(&deps, err, sizeof err);
    if (engine && err[0] == '\0') {
        rc = 0;
        if (layout)
            rf_decl_print_layout(decl, layout);
    } else
        snprintf(errstr, size, "%s", err);
    if (engine)
        rf_engine_close(engine, NULL, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    rf_engine_destroy(engine);
    uv_loop_close(&loop);
    rf_decl_destroy(decl);
free_schemas:
    rf_schemas_destroy(schemas);
    return rc;
}

/* ---- callbacks into the engine ---- */

static void on_cons_ready(void *arg) {
    struct daemon *d = arg;
    if (d->engine)
        rf_engine_drain(d->engine);
}

static void on_prod_ready(void *arg) {
    struct daemon *d = arg;
    if (d->engine)
        rf_engine_serve_producer(d->engine);
    else
        while (rd_kafka_poll(d->rkp, 0) > 0)
            ;
}

static void dr_cb(rd_kafka_t *rkp, const rd_kafka_message_t *rkm, void *opaque) {
    struct daemon *d = opaque;
    rf_engine_dr_cb(rkp, rkm, d->engine);
}

static void rebalance_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                         rd_kafka_topic_partition_list_t *parts, void *opaque) {
    struct daemon *d = opaque;
    rf_engine_rebalance_cb(rk, err, parts, d->engine);
}

/* Async commit results: a failure is logged and the next tick commits again. */
static void offset_commit_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                             rd_kafka_topic_partition_list_t *offsets, void *opaque) {
    struct daemon *d = opaque;
    if (err && err != RD_KAFKA_RESP_ERR__NO_OFFSET) {
        RF_WARN("KAFKA", "commit: %s (retried on the next tick)", rd_kafka_err2str(err));
        d->committed_mark = 0;
        return;
    }
    /* What the group has committed is never redelivered: its journal can go. */
    for (int i = 0; offsets && d->engine && i < offsets->cnt; i++)
        if (!offsets->elems[i].err)
            rf_engine_committed(d->engine, offsets->elems[i].topic, offsets->elems[i].partition,
                                offsets->elems[i].offset);
}

/* The join state from librdkafka's statistics ("cgrp": {..., "join_state": "steady", ...}).
 * A cheap scan, once a second: the JSON is librdkafka's own and well-formed. */
static int stats_cb(rd_kafka_t *rk, char *json, size_t len, void *opaque) {
    struct daemon *d = opaque;
    const char *cgrp = strstr(json, "\"cgrp\":");
    const char *js = cgrp ? strstr(cgrp, "\"join_state\":\"") : NULL;
    if (js && d->engine) {
        js += strlen("\"join_state\":\"");
        rf_engine_group_state(d->engine, strncmp(js, "steady\"", 7) == 0);
    }
    return 0;
}

/* Whether a commit may go out now: not inside a rebalance, as far as we can tell (our own
 * callbacks, and librdkafka's join state as of its last statistics). */
static int may_commit(const struct daemon *d) {
    return rf_engine_may_commit(d->engine);
}

static void on_fetched(rf_store_t *store, int status, void *arg) {
    struct daemon *d = arg;
    rf_engine_on_fetched(d->engine, status);
}

static void on_log_fetched(rf_store_t *store, int status, void *arg) {
    struct daemon *d = arg;
    rf_engine_on_log_fetched(d->engine, status);
}

static void on_flushed(rf_store_t *store, uint64_t gen, void *arg) {
    struct daemon *d = arg;
    rf_engine_on_flushed(d->engine, gen);
}

static void on_store_state(rf_store_t *store, int status, void *arg) {
    struct daemon *d = arg;
    char where[300];
    if (strcmp(d->conf->redis_cluster_nodes, "none") != 0)
        snprintf(where, sizeof where, "the cluster of %s", d->conf->redis_cluster_nodes);
    else if (strcmp(d->conf->redis_socket, "none") != 0)
        snprintf(where, sizeof where, "%s", d->conf->redis_socket);
    else
        snprintf(where, sizeof where, "%s:%d", d->conf->redis_host, d->conf->redis_port);
    if (status == 0)
        RF_NOTICE("REDIS", "connected to %s%s", where,
                  strcmp(d->conf->redis_password_file, "none") ? " (authenticated)" : "");
    else
        RF_WARN("REDIS", "%s: %s: %s (retrying)", where, rf_strerror(status),
                rf_store_errstr(store));
}

/* A stored value of another layout or type: logged (the first 20, then every 1000th) and
 * counted; the entity is set aside, or starts fresh (store.on.foreign). */
static void on_store_mismatch(rf_store_t *store, const char *key, void *arg) {
    struct daemon *d = arg;
    int stop = strcmp(d->conf->store_on_foreign, "stop") == 0;
    if (d->metrics.store_mismatch <= 20 || d->metrics.store_mismatch % 1000 == 0)
        RF_LOG(stop ? RF_LOG_ERR : RF_LOG_WARN, "REDIS",
               "%s: the stored value is not of this feature file's layout (%s)%s (%" PRIu64
               " so far)", key, d->conf->features_path,
               stop ? ": its events are dead-lettered (reason state) and the key is left as it "
                      "is, until it is fixed or deleted (store.on.foreign=stop)"
                    : ": the entity starts fresh over it (store.on.foreign=replace)",
               d->metrics.store_mismatch);
}

/* ---- stopping ---- */

static void begin_stop(struct daemon *d, const char *why);
static void on_stop_check(uv_timer_t *t);

static void on_engine_idle(void *arg) {
    struct daemon *d = arg;
    if (!uv_is_closing((uv_handle_t *)&d->stop_timer))
        uv_timer_start(&d->stop_timer, on_stop_check, 0, 0);
}

static void close_handle(uv_handle_t *h) {
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

static void on_walk_close(uv_handle_t *h, void *arg) {
    (void)arg;
    close_handle(h);
}

static int group_in_flux(rd_kafka_resp_err_t err) {
    return err == RD_KAFKA_RESP_ERR_ILLEGAL_GENERATION ||
           err == RD_KAFKA_RESP_ERR_REBALANCE_IN_PROGRESS ||
           err == RD_KAFKA_RESP_ERR_UNKNOWN_MEMBER_ID;
}

/*
 * Commit the stored offsets synchronously, and make it land even when the signal caught the
 * group mid-rebalance: librdkafka 2.0.2 then holds the commit until the rejoin completes and
 * sends it with the old generation (ILLEGAL_GENERATION). Serving the consumer queue lets the
 * rebalance finish (our rebalance callback commits what it revokes); then we try again, until
 * the shutdown deadline. Messages the queue hands us meanwhile are not processed and their
 * offsets are never stored: they are redelivered, never lost.
 */
static void serve_consumer_ms(struct daemon *d, unsigned ms) {
    uint64_t until = uv_hrtime() + (uint64_t)ms * 1000000ULL;
    while (uv_hrtime() < until) {
        rd_kafka_message_t *rkm = rd_kafka_consumer_poll(d->rk, 50);
        if (rkm)
            rd_kafka_message_destroy(rkm); /* stopping: never stored, so redelivered */
    }
}

static rd_kafka_resp_err_t final_commit(struct daemon *d) {
    rf_engine_settle_revoke(d->engine); /* everything has drained, or we gave up waiting */
    /* Caught between the halves of a cooperative rebalance: let it finish first, or the
     * commit itself would cost us the assignment (librdkafka issue #4059). */
    if (!may_commit(d))
        RF_INFO("KAFKA", "final commit waits for the rebalance under way");
    while (!may_commit(d) && !d->timed_out && uv_hrtime() < d->stop_deadline_ns)
        serve_consumer_ms(d, 200);
    for (;;) {
        rd_kafka_topic_partition_list_t *l = rf_engine_commit_list(d->engine, NULL);
        rd_kafka_resp_err_t err = l ? rd_kafka_commit(d->rk, l, 0) : RD_KAFKA_RESP_ERR__NO_OFFSET;
        if (l)
            rd_kafka_topic_partition_list_destroy(l);
        if (err == RD_KAFKA_RESP_ERR_NO_ERROR || err == RD_KAFKA_RESP_ERR__NO_OFFSET)
            return RD_KAFKA_RESP_ERR_NO_ERROR;
        if (!group_in_flux(err) || d->timed_out || uv_hrtime() >= d->stop_deadline_ns)
            return err;
        RF_WARN("KAFKA", "final commit: %s: waiting for the group to settle",
                rd_kafka_err2str(err));
        serve_consumer_ms(d, 500);
    }
}

/* Close every handle the daemon's objects hold; the loop then runs out. The one close
 * sequence, for a normal stop and for a failed start alike. */
static void close_all(struct daemon *d) {
    if (d->rkqu_cons)
        rd_kafka_queue_io_event_enable(d->rkqu_cons, -1, NULL, 0);
    if (d->rkqu_prod)
        rd_kafka_queue_io_event_enable(d->rkqu_prod, -1, NULL, 0);
    if (d->watching) {
        rf_kafka_watch_close(&d->watch_cons, NULL);
        rf_kafka_watch_close(&d->watch_prod, NULL);
    }
    if (d->engine)
        rf_engine_close(d->engine, NULL, NULL);
    if (d->store)
        rf_store_close(d->store, NULL, NULL);
    d->store = NULL;
    if (d->demo)
        rf_demo_close(d->demo, NULL, NULL);
    rf_health_close(d->health);
    rf_http_close(d->http);
    d->http = NULL;
    /* Signals, timers: whatever is left. */
    uv_walk(&d->loop, on_walk_close, NULL);
}

static void on_settle(uv_timer_t *t);
static void log_stats(struct daemon *d);

/* Everything in flight is done (or abandoned): commit, leave the group, flush, close. */
static void finish(struct daemon *d) {
    if (d->stopped)
        return;
    d->stopped = 1;
    d->t_end_ns = uv_hrtime();
    uv_timer_stop(&d->deadline);
    if (!d->demo && d->conf->stats_interval_ms > 0)
        log_stats(d); /* the counters as the run ends */
    if (d->rk && d->txn) {
        /* Exactly-once: the offsets go with the transaction, ended before any revocation
         * lets its partitions go; nothing is committed through the consumer. */
        char msg[512];
        int r = d->subscribed ? rf_engine_txn_final(d->engine, d->stop_deadline_ns, msg,
                                                    sizeof msg)
                              : RF_TXN_COMMITTED; /* nothing consumed, nothing to end */
        if (!d->subscribed && rf_txn_busy(d->txn))
            rf_txn_cancel(d->txn); /* an init still retrying: the loop waits for it */
        /* An abort at the stop (the group refused the offsets: a broker restart or a
         * rebalance caught us) loses nothing: the inputs since the last commit are processed
         * again by their next owner, as replays. A clean stop all the same. */
        if (r == RF_TXN_COMMITTED) {
            RF_INFO("KAFKA", "transaction committed with the offsets");
        } else if (r == RF_TXN_ABORTED) {
            RF_WARN("KAFKA", "final %s; the inputs since the last commit will be processed "
                    "again by their next owner", msg);
        } else {
            RF_ERR("KAFKA", "final transaction: %s", msg[0] ? msg : "failed");
            d->exit_code = RF_EXIT_FAILURE;
        }
        rf_engine_settle_revoke(d->engine);
        rd_kafka_consumer_close(d->rk);
    } else if (d->rk) {
        rd_kafka_resp_err_t err = final_commit(d);
        if (err) {
            RF_ERR("KAFKA", "final commit: %s", rd_kafka_err2str(err));
            d->exit_code = RF_EXIT_FAILURE;
        } else {
            RF_INFO("KAFKA", "offsets committed");
            rf_engine_prune_committed(d->engine);
        }
        rd_kafka_consumer_close(d->rk);
    }
    if (d->rkp) {
        rd_kafka_resp_err_t err = rd_kafka_flush(d->rkp, 10000);
        if (err)
            RF_ERR("KAFKA", "producer flush: %s", rd_kafka_err2str(err));
        rf_engine_serve_producer(d->engine);
    }
    /* The journal prunes of the final commit are on their way to Redis: let them land (a
     * clean stop leaves no journal behind), for at most a second. */
    d->settle_until_ms = uv_now(&d->loop) + 1000;
    on_settle(&d->stop_timer);
}

static void on_settle(uv_timer_t *t) {
    struct daemon *d = t->data;
    uv_update_time(&d->loop);
    if (d->store && rf_store_pending(d->store) > 0 && uv_now(&d->loop) < d->settle_until_ms) {
        uv_timer_start(&d->stop_timer, on_settle, 5, 0);
        return;
    }
    close_all(d);
}

/* Whether a stop must wait before it closes the consumer: librdkafka 2.0 (Debian 12's)
 * aborts in rd_kafka_destroy when a cooperative-sticky member is closed after its JoinGroup
 * chose the protocol and before its first assignment set the assignor's state
 * (librdkafka#4312, fixed in 2.3). A SIGTERM that early (systemctl stop right after start)
 * waits for the assignment, which follows within a round trip, for at most 10 s, serving the
 * consumer queue as the final commit does (what it hands over is never stored). */
static int joining(struct daemon *d) {
    if (!d->rk || !d->subscribed || rf_engine_assignments(d->engine) > 0 ||
        strcmp(rd_kafka_rebalance_protocol(d->rk), "NONE") == 0)
        return 0;
    uint64_t now = uv_hrtime();
    if (!d->join_wait_until_ns) {
        d->join_wait_until_ns = now + 10000000000ULL;
        RF_INFO("DAEMON", "stopping once the group has assigned this member (it has joined)");
    }
    return now < d->join_wait_until_ns;
}

static void on_stop_check(uv_timer_t *t) {
    struct daemon *d = t->data;
    if (rf_engine_failed(d->engine)) {
        d->exit_code = d->exit_code ? d->exit_code : RF_EXIT_FAILURE;
        if (!d->stopping)
            begin_stop(d, "fatal error");
    }
    /* After a failure nothing in flight can be trusted to finish (an output that can never be
     * produced would hold its event, and the shutdown, forever): stop now. What completed is
     * committed; the rest is redelivered, and the journal answers its replays. */
    if (d->stopping && (rf_engine_inflight(d->engine) == 0 || d->timed_out ||
                        rf_engine_failed(d->engine))) {
        while (!d->timed_out && joining(d))
            serve_consumer_ms(d, 50); /* the assignment comes through our rebalance callback */
        finish(d);
    }
}

static void on_deadline(uv_timer_t *t) {
    struct daemon *d = t->data;
    RF_ERR("DAEMON", "shutdown timed out with %d events in flight; their offsets are not "
           "committed and they will be redelivered", rf_engine_inflight(d->engine));
    d->timed_out = 1;
    d->exit_code = RF_EXIT_FAILURE;
    finish(d);
}

static void begin_stop(struct daemon *d, const char *why) {
    if (d->stopping)
        return;
    d->stopping = 1;
    RF_NOTICE("DAEMON", "stopping (%s): %d events in flight", why, rf_engine_inflight(d->engine));
    if (d->health)
        rf_health_stopping(d->health);
    rf_engine_stop(d->engine);
    d->stop_deadline_ns = uv_hrtime() + (uint64_t)d->conf->shutdown_timeout_ms * 1000000ULL;
    if (d->conf->shutdown_timeout_ms > 0)
        uv_timer_start(&d->deadline, on_deadline, (uint64_t)d->conf->shutdown_timeout_ms, 0);
    on_engine_idle(d);
}

/* The HTTP listener's three paths. */
static int on_http(void *arg, const char *path, struct rf_http_body *body, const char **ctype) {
    struct daemon *d = arg;
    if (strcmp(path, "/metrics") == 0) {
        struct rf_expo_src src = {&d->metrics, d->engine, d->store, d->health, d->http,
                                  d->start_time_s};
        rf_expo_render(&src, body);
        *ctype = "text/plain; version=0.0.4; charset=utf-8";
        return 200;
    }
    if (strcmp(path, "/healthz") == 0) {
        rf_http_printf(body, "ok\n"); /* answered from the loop: it turns */
        return 200;
    }
    if (strcmp(path, "/readyz") == 0) {
        const char *why;
        if (rf_health_ready(d->health, &why)) {
            rf_http_printf(body, "ready\n");
            return 200;
        }
        rf_http_printf(body, "not ready: %s\n", why);
        return 503;
    }
    rf_http_printf(body, "not found (try /metrics, /healthz, /readyz)\n");
    return 404;
}

/* A reload's outcome, job by job: what serves now, or why a file was refused. */
static void on_reloaded(rf_engine_t *e, const struct rf_reload_result *res, int n, void *arg) {
    struct daemon *d = arg;
    (void)e;
    for (int j = 0; j < n; j++) {
        const struct rf_reload_result *r = &res[j];
        if (r->skipped)
            continue;
        if (r->ok)
            RF_NOTICE("MODEL", "%s: reloaded: %s", r->job, r->serving);
        else
            RF_ERR("MODEL", "%s: reload refused, the running model stays: %s%s%s", r->job,
                   r->error, r->serving[0] ? "; reloaded: " : "", r->serving);
    }
    rf_health_reload_end(d->health);
}

static void handle_signal(struct daemon *d, int signum) {
    if (signum == SIGHUP) {
        if (d->stopping)
            return;
        int rc = rf_engine_reload(d->engine, on_reloaded, d);
        if (rc == 0) {
            RF_NOTICE("DAEMON", "SIGHUP: reloading the models (off the loop; the running ones "
                      "serve meanwhile)");
            rf_health_reload_begin(d->health);
        } else {
            RF_WARN("DAEMON", "SIGHUP: %s", rc == RF_E_BUSY ? "a reload is already in progress"
                                                           : rf_strerror(rc));
        }
        return;
    }
    if (d->stopping) {
        RF_WARN("DAEMON", "second %s: still draining %d events", strsignal(signum),
                rf_engine_inflight(d->engine));
        return;
    }
    begin_stop(d, strsignal(signum));
}

static void on_signal(uv_signal_t *s, int signum) {
    handle_signal(s->data, signum);
}

/* ---- commits ---- */

static void on_commit_timer(uv_timer_t *t) {
    struct daemon *d = t->data;
    if (d->epoch && !d->stopping)
        rf_epoch_check(d->epoch); /* has Redis lost its data meanwhile? */
    if (d->stopping || !may_commit(d))
        return; /* the final commit, or the next tick after the rebalance, takes it */
    if (d->txn) {
        rf_engine_txn_tick(d->engine);
        return;
    }
    if (d->metrics.offsets_stored == d->committed_mark)
        return; /* nothing new stored since the last commit */
    d->committed_mark = d->metrics.offsets_stored;
    rd_kafka_topic_partition_list_t *l = rf_engine_commit_list(d->engine, NULL);
    if (!l)
        return;
    rd_kafka_resp_err_t err = rd_kafka_commit(d->rk, l, 1 /* async */);
    rd_kafka_topic_partition_list_destroy(l);
    if (err && err != RD_KAFKA_RESP_ERR__NO_OFFSET)
        RF_WARN("KAFKA", "commit: %s", rd_kafka_err2str(err));
}

/* ---- stats ---- */

/* "fraud=20000 (scores=20000 alerts=250) credit=..." for the stats line and the summary. */
static void jobs_text(const struct rf_metrics *m, char *buf, size_t size) {
    size_t off = 0;
    buf[0] = '\0';
    for (int j = 0; j < RF_METRIC_JOBS && off < size; j++) {
        const struct rf_job_metrics *jm = &m->jobs[j];
        if (!jm->name)
            continue;
        off += (size_t)snprintf(buf + off, size - off, " %s=%" PRIu64, jm->name, jm->events);
        if (jm->passed && off < size)
            off += (size_t)snprintf(buf + off, size - off, " %s.passed=%" PRIu64, jm->name,
                                    jm->passed);
        if (jm->dead_lettered && off < size)
            off += (size_t)snprintf(buf + off, size - off, " %s.dlq=%" PRIu64, jm->name,
                                    jm->dead_lettered);
        for (int k = 0; k < jm->kinds && k < RF_METRIC_KINDS && off < size; k++)
            off += (size_t)snprintf(buf + off, size - off, " %s.%s=%" PRIu64, jm->name,
                                    jm->kind_names[k], jm->outputs[k]);
    }
}

static void log_stats(struct daemon *d) {
    const struct rf_metrics *m = &d->metrics;
    char reasons[256] = "", jobs[512];
    size_t off = 0;
    for (int r = 1; r < RF_DLQ_REASONS && off < sizeof reasons; r++)
        if (m->dlq_by_reason[r])
            off += (size_t)snprintf(reasons + off, sizeof reasons - off, " dlq.%s=%" PRIu64,
                                    rf_err_reason(-r), m->dlq_by_reason[r]);
    jobs_text(m, jobs, sizeof jobs);
    char cluster[128] = "";
    if (d->store && rf_store_partial_flushes(d->store)) {
        uint64_t moved, ask;
        rf_store_redirects(d->store, &moved, &ask);
        snprintf(cluster, sizeof cluster,
                 " replays_repaired=%" PRIu64 " redis_moved=%" PRIu64 " redis_ask=%" PRIu64,
                 m->replays_repaired, moved, ask);
    }
    /* What the allocator holds, all arenas: in use, and free but not returned (trim_memory). */
    size_t heap_used = 0, heap_free = 0;
#ifdef __GLIBC__
    struct mallinfo2 mi = mallinfo2();
    heap_used = mi.uordblks + mi.hblkhd;
    heap_free = mi.fordblks;
#endif
    RF_INFO("STATS", "in=%" PRIu64 " scored=%" PRIu64 "%s dlq=%" PRIu64 "%s replays=%" PRIu64
            "%s replayed_outputs=%" PRIu64 " inflight=%d cache=%d p50=%" PRIu64 "us p99=%" PRIu64 "us store_errors=%" PRIu64
            " mismatch=%" PRIu64 " produce_retries=%" PRIu64 " txn_commits=%" PRIu64
            " txn_aborts=%" PRIu64 " trim_us=%" PRIu64 " heap_used_kb=%zu heap_free_kb=%zu",
            m->events_in, m->scored, jobs, m->dead_lettered, reasons, m->replays, cluster,
            m->replayed_outputs, rf_engine_inflight(d->engine), rf_store_size(d->store),
            rf_hist_quantile(&m->latency, 0.5), rf_hist_quantile(&m->latency, 0.99),
            m->store_errors, m->store_mismatch, m->produce_retries, m->txn_commits,
            m->txn_aborts, m->trim_us, heap_used / 1024, heap_free / 1024);
}

/* Latency, throughput and CPU figures count from now on (the demo's history is done). */
static void measure_from_now(struct daemon *d) {
    struct rf_metrics *m = &d->metrics;
    memset(&m->latency, 0, sizeof m->latency);
    for (int j = 0; j < RF_METRIC_JOBS; j++) {
        memset(&m->jobs[j].latency, 0, sizeof m->jobs[j].latency);
        m->jobs[j].ns = 0;
        d->jobs_events0[j] = m->jobs[j].events;
    }
    m->first_in_ns = uv_hrtime();
    d->done0 = m->scored + m->dead_lettered;
    d->warmup = d->done0;
    getrusage(RUSAGE_SELF, &d->ru_start);
    getrusage(RUSAGE_THREAD, &d->ru_thread_start);
}

/*
 * Give the allocator's free pages back to the kernel, once a minute. An outage (Redis or the
 * broker down) fills buffers — generations and journal bytes up to pipeline.max.inflight, the
 * producer's queue, librdkafka's fetch and request buffers in its own threads' arenas — and
 * glibc keeps what they freed: the soak measured resident memory stepping up 5–35 MiB at
 * each outage and never coming down, while the heap in use (massif) stayed at its
 * high-water mark. A trim walks the arenas' free chunks (a millisecond or so here) and
 * releases whole free pages; the memory in use is untouched.
 */
static void trim_memory(struct daemon *d) {
#ifdef __GLIBC__
    uint64_t now = uv_now(&d->loop);
    if (now - d->trimmed_ms < 60000)
        return;
    d->trimmed_ms = now;
    uint64_t t0 = uv_hrtime();
    malloc_trim(0);
    d->metrics.trim_us = (uv_hrtime() - t0) / 1000;
#else
    (void)d;
#endif
}

static void on_stats(uv_timer_t *t) {
    struct daemon *d = t->data;
    trim_memory(d);
    /* A fatal client error reaches us through error_cb only when nothing was in flight to
     * fail: look for it here too. */
    char fatal[256];
    if (!d->stopping && ((d->rkp && rd_kafka_fatal_error(d->rkp, fatal, sizeof fatal)) ||
                         (d->rk && rd_kafka_fatal_error(d->rk, fatal, sizeof fatal)))) {
        RF_ERR("KAFKA", "fatal error: %s", fatal);
        d->exit_code = RF_EXIT_FAILURE;
        begin_stop(d, "fatal Kafka error");
    }
    if (d->demo) {
        uint64_t total;
        /* Generate only once we consume: the latency figures are then the steady state at
         * demo.rate, not the drain of a backlog built while the group formed. */
        if (!d->demo_started && rf_engine_assigned(d->engine) > 0) {
            d->demo_started = 1;
            rf_demo_start(d->demo);
        }
        /* The history is complete: measure, and print outputs, from here. */
        if (rf_demo_warm(d->demo, d->metrics.scored + d->metrics.dead_lettered)) {
            measure_from_now(d);
            rf_engine_set_print(d->engine, strcmp(d->conf->outputs_print, "stdout") == 0);
        }
        if (!d->stopping && rf_demo_done(d->demo, &total) &&
            d->metrics.scored + d->metrics.dead_lettered >= total) {
            begin_stop(d, "demo stream complete");
        }
        return;
    }
    if (d->conf->stats_interval_ms > 0)
        log_stats(d);
}

static double tv_s(struct timeval tv) {
    return (double)tv.tv_sec + (double)tv.tv_usec / 1e6;
}

static void print_summary(struct daemon *d, FILE *out) {
    const struct rf_metrics *m = &d->metrics;
    struct rusage ru, rt;
    getrusage(RUSAGE_SELF, &ru);
    getrusage(RUSAGE_THREAD, &rt); /* the loop thread: decode, features, models, encode */
    double cpu = tv_s(ru.ru_utime) + tv_s(ru.ru_stime) - tv_s(d->ru_start.ru_utime) -
                 tv_s(d->ru_start.ru_stime);
    double cpu_loop = tv_s(rt.ru_utime) + tv_s(rt.ru_stime) -
                      tv_s(d->ru_thread_start.ru_utime) - tv_s(d->ru_thread_start.ru_stime);
    uint64_t t0 = m->first_in_ns ? m->first_in_ns : d->t_start_ns;
    /* From the first message taken (after the demo's warm-up) to the last event completed:
     * the time spent waiting for a signal afterwards is not throughput. */
    uint64_t t1 = m->last_done_ns ? m->last_done_ns : d->t_end_ns;
    double wall = t1 > t0 ? (double)(t1 - t0) / 1e9 : 0.0;
    uint64_t done = m->scored + m->dead_lettered - d->done0;
    fprintf(out, "\n== riskflowd summary ==\n");
    if (d->demo) {
        struct rf_demo_counts n;
        rf_demo_counts(d->demo, &n);
        fprintf(out, "generated:      a history of %" PRId64 " messages (%d customers' last 3 "
                     "months, the market's last 15 minutes), then %" PRId64 " card payments (%"
                     PRId64 " in fraud bursts), %" PRId64 " salaries, %" PRId64 " credit events, %"
                     PRId64 " trades, %" PRId64 " quotes and %" PRId64 " poison messages\n",
                n.history, d->conf->demo_customers, n.card_payments, n.fraud, n.salaries,
                n.credit, n.trades, n.quotes, n.poison);
        if (n.failed)
            fprintf(out, "NOT delivered:  %" PRId64 " generated messages the mock broker refused "
                         "(they never reached riskflowd)\n", n.failed);
    }
    fprintf(out, "events in:      %" PRIu64 "\n", m->events_in);
    fprintf(out, "scored:         %" PRIu64 "\n", m->scored);
    for (int j = 0; j < RF_METRIC_JOBS; j++) {
        const struct rf_job_metrics *jm = &m->jobs[j];
        if (!jm->name)
            continue;
        fprintf(out, "%-7s         %" PRIu64 " events", jm->name, jm->events);
        if (jm->passed)
            fprintf(out, " (%" PRIu64 " outside its filter)", jm->passed);
        for (int k = 0; k < jm->kinds && k < RF_METRIC_KINDS; k++)
            fprintf(out, "%s %" PRIu64 " %s", k ? "," : ";", jm->outputs[k], jm->kind_names[k]);
        fprintf(out, "; %" PRIu64 " dead-lettered", jm->dead_lettered);
        fprintf(out, "; latency p50 %" PRIu64 " us, p99 %" PRIu64 " us",
                rf_hist_quantile(&jm->latency, 0.5), rf_hist_quantile(&jm->latency, 0.99));
        uint64_t ev = jm->events - d->jobs_events0[j];
        if (jm->ns && ev)
            fprintf(out, "; %.2f us/event in the job (features read, model, outputs)",
                    (double)jm->ns / 1e3 / (double)ev);
        fprintf(out, "\n");
    }
    fprintf(out, "dead-lettered:  %" PRIu64, m->dead_lettered);
    const char *sep = " (";
    for (int r = 1; r < RF_DLQ_REASONS; r++) {
        if (m->dlq_by_reason[r]) {
            fprintf(out, "%s%s: %" PRIu64, sep, rf_err_reason(-r), m->dlq_by_reason[r]);
            sep = ", ";
        }
    }
    fprintf(out, "%s\n", sep[0] == ',' ? ")" : "");
    char after[96] = "";
    if (d->warmup)
        snprintf(after, sizeof after, ", after the history's %" PRIu64 " events", d->warmup);
    fprintf(out, "throughput:     %.0f events/s (%" PRIu64 " events in %.2f s%s)\n",
            wall > 0 ? (double)done / wall : 0.0, done, wall, after);
    fprintf(out, "latency:        p50 %" PRIu64 " us, p99 %" PRIu64 " us, max %" PRIu64
                 " us (consumed -> outputs acknowledged and state written%s)\n",
            rf_hist_quantile(&m->latency, 0.5), rf_hist_quantile(&m->latency, 0.99),
            m->latency.max_us, after);
    fprintf(out, "cpu:            %.2f us/event on the loop thread%s; %.2f us/event for the "
                 "whole process (%.2f s%s)\n",
            done ? cpu_loop * 1e6 / (double)done : 0.0,
            d->demo ? " (includes the generators' produce calls)" : "",
            done ? cpu * 1e6 / (double)done : 0.0,
            cpu, d->demo ? ", includes the in-process mock broker and generators" : "");
    fprintf(out, "batches:        mean %.1f events\n",
            m->batch_size.count ? (double)m->batch_size.sum_us / (double)m->batch_size.count
                                : 0.0);
    if (d->txn)
        fprintf(out, "transactions:   %" PRIu64 " committed, %" PRIu64 " aborted (exactly-once; "
                "%" PRIu64 " outputs failed inside one)\n",
                m->txn_commits, m->txn_aborts, m->txn_lost);
}

/* ---- start ---- */

static int subscribe(struct daemon *d, char *errstr, size_t size) {
    rd_kafka_topic_partition_list_t *topics = rd_kafka_topic_partition_list_new(4);
    const char *cur = d->conf->input_topics;
    struct rf_conf_topic t;
    int rc;
    while ((rc = rf_conf_topic_next(&cur, &t, errstr, size)) == 1)
        rd_kafka_topic_partition_list_add(topics, t.name, RD_KAFKA_PARTITION_UA);
    rd_kafka_resp_err_t err = rc < 0 ? RD_KAFKA_RESP_ERR__INVALID_ARG
                                     : rd_kafka_subscribe(d->rk, topics);
    rd_kafka_topic_partition_list_destroy(topics);
    if (err) {
        if (rc >= 0)
            snprintf(errstr, size, "subscribe: %s", rd_kafka_err2str(err));
        return RF_E_KAFKA;
    }
    return 0;
}

/* Subscribe once nothing is left to wait for: the Redis epoch's verdict, the transactions'
 * init. */
static void maybe_subscribe(struct daemon *d) {
    if (d->subscribed || d->stopping || d->epoch_pending || d->txn_pending)
        return;
    char err[256];
    if (subscribe(d, err, sizeof err) != 0) {
        RF_ERR("KAFKA", "%s", err);
        d->exit_code = RF_EXIT_UNAVAILABLE;
        begin_stop(d, "cannot subscribe");
        return;
    }
    d->subscribed = 1;
}

/* The Redis epoch's verdict (epoch.h): subscribe, or stop for an operator. */
static void on_epoch(rf_epoch_t *ep, int lost, const char *msg, void *arg) {
    struct daemon *d = arg;
    if (d->stopping)
        return;
    if (lost) {
        RF_ERR("REDIS", "%s", msg);
        d->metrics.redis_data_lost++;
        if (strcmp(d->conf->redis_on_data_loss, "continue") == 0) {
            RF_WARN("REDIS", "redis.on.data.loss=continue: going on with what Redis holds now");
            rf_epoch_adopt(ep);
            return;
        }
        d->exit_code = d->subscribed ? RF_EXIT_FAILURE : RF_EXIT_UNAVAILABLE;
        begin_stop(d, "Redis lost its data (redis.on.data.loss=stop)");
        rf_engine_fail(d->engine); /* write nothing more into it */
        return;
    }
    RF_NOTICE("REDIS", "%s", msg);
    rf_engine_set_commit_metadata(d->engine, rf_epoch_metadata(ep));
    d->epoch_pending = 0;
    maybe_subscribe(d);
}

/* Exactly-once: the producer's transactions are initialised (earlier producers with our
 * transactional.id fenced, what they left open aborted) and the first one begun. */
static void on_txn_ready(rf_txn_t *t, int result, const char *msg, void *arg) {
    struct daemon *d = arg;
    (void)t;
    d->txn_pending = 0;
    if (result != RF_TXN_COMMITTED) {
        RF_ERR("KAFKA", "%s", msg);
        d->exit_code = RF_EXIT_UNAVAILABLE;
        begin_stop(d, "cannot initialise transactions");
        return;
    }
    RF_NOTICE("KAFKA", "exactly-once: transactions initialised");
    maybe_subscribe(d);
}

static int start(struct daemon *d, char *errstr, size_t size) {
    const struct rf_conf *conf = d->conf;
    char err[512];

    openblas_set_num_threads(1); /* idle OpenBLAS threads spin (design.md §8) */
    RF_INFO("MODEL", "OpenBLAS core: %s", openblas_get_corename());

    d->schemas = rf_schemas_load(conf->schemas_dir, err, sizeof err);
    if (!d->schemas) {
        snprintf(errstr, size, "schemas.dir: %s", err);
        return RF_EXIT_CONFIG;
    }
    d->decl = rf_decl_load(conf->features_path, d->schemas, err, sizeof err);
    if (!d->decl) {
        snprintf(errstr, size, "%s", err);
        return RF_EXIT_CONFIG;
    }

    const char *bootstrap = NULL;
    const char *group = NULL;
    if (d->demo_mode) {
        d->demo = rf_demo_new(&d->loop, conf, d->schemas, err, sizeof err);
        if (!d->demo) {
            snprintf(errstr, size, "%s", err);
            return RF_EXIT_UNAVAILABLE;
        }
        bootstrap = rf_demo_bootstrap(d->demo);
        group = "riskflow-demo";
    }

    size_t dlq_max;
    if (rf_kafka_conf_check(conf, err, sizeof err) != 0 ||
        rf_kafka_dlq_value_max(conf, &dlq_max, err, sizeof err) != 0) {
        snprintf(errstr, size, "%s", err);
        return RF_EXIT_CONFIG;
    }
    /* The configuration was checked above and by rf_conf_validate: a client that cannot be
     * created now lacks resources (memory, threads, descriptors), not a setting. */
    char tid[512];
    int eos = rf_kafka_exactly_once(conf);
    if (eos)
        rf_kafka_transactional_id(conf, group, tid, sizeof tid);
    d->rkp = rf_kafka_producer_new(conf, bootstrap, eos ? tid : NULL, dr_cb, d, err, sizeof err);
    if (!d->rkp) {
        snprintf(errstr, size, "%s", err);
        return RF_EXIT_UNAVAILABLE;
    }
    struct rf_kafka_consumer_cbs ccbs = {rebalance_cb, offset_commit_cb, stats_cb, d};
    d->rk = rf_kafka_consumer_new(conf, bootstrap, group, &ccbs, err, sizeof err);
    if (!d->rk) {
        snprintf(errstr, size, "%s", err);
        return RF_EXIT_UNAVAILABLE;
    }

    if (eos) {
        d->txn = rf_txn_new(&d->loop, d->rkp, d->rk);
        if (!d->txn) {
            snprintf(errstr, size, "out of memory");
            return RF_EXIT_UNAVAILABLE;
        }
        RF_NOTICE("KAFKA", "exactly-once: transactional.id %s", tid);
    }
    struct rf_engine_deps deps = {
        .loop = &d->loop,
        .conf = conf,
        .rk = d->rk,
        .rkp = d->rkp,
        .schemas = d->schemas,
        .decl = d->decl,
        .metrics = &d->metrics,
        .dlq_value_max = dlq_max,
        .txn = d->txn,
        .time_jobs = d->demo_mode || strcmp(conf->stats_job_time, "on") == 0,
        .on_idle = on_engine_idle,
        .arg = d,
    };
    /* Jobs first (they register entity state), then the store over the finished layout. */
    d->engine = rf_engine_new(&deps, err, sizeof err);
    if (!d->engine || err[0]) {
        snprintf(errstr, size, "%s", d->engine ? err : "out of memory");
        /* A model or declaration the jobs refuse is configuration; memory is not. */
        return !d->engine || strcmp(err, "out of memory") == 0 ? RF_EXIT_UNAVAILABLE
                                                                : RF_EXIT_CONFIG;
    }
    if (d->demo)
        rf_engine_set_print(d->engine, 0); /* until the history is done */
    struct rf_store_conf sc = {
        .backend = strcmp(conf->store_backend, "memory") == 0 ? RF_STORE_MEMORY : RF_STORE_REDIS,
        .redis_host = conf->redis_host,
        .redis_port = conf->redis_port,
        .connect_timeout_ms = (unsigned)conf->redis_connect_timeout_ms,
        .command_timeout_ms = (unsigned)conf->redis_command_timeout_ms,
        .key_prefix = conf->redis_key_prefix,
        .cache_max = conf->store_cache_max,
        .foreign_stop = strcmp(conf->store_on_foreign, "stop") == 0,
        .slice_refresh_ms = (unsigned)conf->store_slice_refresh_ms,
        .redis_socket = strcmp(conf->redis_socket, "none") ? conf->redis_socket : NULL,
        .redis_cluster = strcmp(conf->redis_cluster_nodes, "none") ? conf->redis_cluster_nodes
                                                                  : NULL,
        .redis_user = strcmp(conf->redis_user, "none") ? conf->redis_user : NULL,
    };
    unsigned char password[512];
    size_t plen = 0;
    if (strcmp(conf->redis_password_file, "none") != 0) {
        if (rf_secret_read(conf->redis_password_file, password, sizeof password, &plen, err,
                           sizeof err) != 0) {
            snprintf(errstr, size, "%s: redis.password.file: %s",
                     rf_conf_where(conf, "redis.password.file"), err);
            return RF_EXIT_CONFIG;
        }
        sc.redis_password = (const char *)password;
    }
    struct rf_store_cbs cbs = {on_flushed,         on_fetched,     on_store_state,
                               on_store_mismatch, on_log_fetched, d};
    d->store = rf_store_new(&d->loop, &sc, d->decl, &cbs, &d->metrics, err, sizeof err);
    memset(password, 0, sizeof password); /* the client holds its own copy */
    if (!d->store) { /* its bounds are checked by rf_conf_validate: resources */
        snprintf(errstr, size, "store: %s", err);
        return RF_EXIT_UNAVAILABLE;
    }
    rf_engine_set_store(d->engine, d->store);

    d->rkqu_cons = rd_kafka_queue_get_consumer(d->rk);
    d->rkqu_prod = rd_kafka_queue_get_main(d->rkp);
    if (rf_kafka_watch_init(&d->loop, &d->watch_cons, d->rkqu_cons, on_cons_ready, d) != 0) {
        snprintf(errstr, size, "cannot create the queue wake-up pipes");
        return RF_EXIT_UNAVAILABLE;
    }
    if (rf_kafka_watch_init(&d->loop, &d->watch_prod, d->rkqu_prod, on_prod_ready, d) != 0) {
        rf_kafka_watch_close(&d->watch_cons, NULL);
        snprintf(errstr, size, "cannot create the queue wake-up pipes");
        return RF_EXIT_UNAVAILABLE;
    }
    d->watching = 1;
    if (d->txn) {
        d->txn_pending = 1;
        if (rf_txn_init(d->txn, on_txn_ready, d) != 0) {
            snprintf(errstr, size, "cannot start the transactions' init");
            return RF_EXIT_UNAVAILABLE;
        }
    }
    if (sc.backend == RF_STORE_REDIS) {
        /* Subscribe once the Redis epoch agrees with the group's commits (on_epoch). */
        d->epoch = rf_epoch_new(&d->loop, d->store, d->rk, conf, on_epoch, d);
        if (!d->epoch) {
            snprintf(errstr, size, "out of memory");
            return RF_EXIT_UNAVAILABLE;
        }
        d->epoch_pending = 1;
        rf_epoch_start(d->epoch);
    } else {
        maybe_subscribe(d);
    }
    RF_NOTICE("DAEMON", "consuming %s as group %s; jobs %s; features %s; dlq -> %s; store %s",
              conf->input_topics, group ? group : rf_conf_kafka_get(conf, "group.id"),
              rf_engine_jobs(d->engine), conf->features_path, conf->dlq_topic,
              conf->store_backend);

    struct rf_health_deps hd = {&d->loop, d->store, d->engine, &d->metrics,
                                sc.backend == RF_STORE_REDIS};
    d->health = rf_health_new(&hd, err, sizeof err);
    if (!d->health) {
        snprintf(errstr, size, "%s", err);
        return RF_EXIT_UNAVAILABLE;
    }
    rf_health_start(d->health);
    if (strcmp(conf->metrics_listen, "none") != 0) {
        d->http = rf_http_new(&d->loop, conf->metrics_listen, on_http, d, err, sizeof err);
        if (!d->http) {
            snprintf(errstr, size, "%s: metrics.listen: %s",
                     rf_conf_where(conf, "metrics.listen"), err);
            return RF_EXIT_UNAVAILABLE;
        }
        RF_NOTICE("DAEMON", "HTTP listener on %s, port %d: /metrics, /healthz, /readyz",
                  conf->metrics_listen, rf_http_port(d->http));
    }
    if (rf_health_watchdog_usec(d->health))
        RF_INFO("DAEMON", "systemd watchdog: every %" PRIu64 " ms (half of WatchdogSec)",
                rf_health_watchdog_usec(d->health) / 2000);

    uv_signal_init(&d->loop, &d->sig_term);
    uv_signal_init(&d->loop, &d->sig_int);
    uv_signal_init(&d->loop, &d->sig_hup);
    d->sig_term.data = d->sig_int.data = d->sig_hup.data = d;
    uv_signal_start(&d->sig_term, on_signal, SIGTERM);
    uv_signal_start(&d->sig_int, on_signal, SIGINT);
    uv_signal_start(&d->sig_hup, on_signal, SIGHUP);
    rf_daemon_block_signals(0); /* main() held them; one sent while starting arrives now */
    if (early_signal) /* one a thread of before main() took (rf_daemon_block_signals) */
        handle_signal(d, early_signal);
    uint64_t every = d->demo ? 20 : (uint64_t)(conf->stats_interval_ms ? conf->stats_interval_ms
                                                                       : 1000);
    uv_timer_start(&d->stats_timer, on_stats, every, every);
    uv_timer_start(&d->commit_timer, on_commit_timer, (uint64_t)conf->commit_interval_ms,
                   (uint64_t)conf->commit_interval_ms);
    /* Anything queued before the watch existed would never wake us: look once now. */
    on_cons_ready(d);
    on_prod_ready(d);
    return RF_EXIT_OK;
}

int rf_daemon_run(const struct rf_conf *conf, int demo) {
    struct daemon *d = calloc(1, sizeof *d);
    if (!d) {
        RF_ERR("DAEMON", "out of memory");
        return RF_EXIT_FAILURE;
    }
    int level;
    if (rf_log_level_parse(conf->log_level, &level) == 0)
        rf_log_level = level;
    d->conf = conf;
    d->demo_mode = demo;
    d->t_start_ns = uv_hrtime();
    {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        d->start_time_s = (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
    }
    getrusage(RUSAGE_SELF, &d->ru_start);
    getrusage(RUSAGE_THREAD, &d->ru_thread_start);
    uv_loop_init(&d->loop);
    uv_timer_init(&d->loop, &d->stats_timer);
    uv_timer_init(&d->loop, &d->stop_timer);
    uv_timer_init(&d->loop, &d->deadline);
    uv_timer_init(&d->loop, &d->commit_timer);
    d->stats_timer.data = d->stop_timer.data = d->deadline.data = d->commit_timer.data = d;

    char errstr[1024] = "";
    int rc = start(d, errstr, sizeof errstr);
    if (rc != RF_EXIT_OK) {
        RF_ERR("DAEMON", "%s", errstr);
        d->exit_code = rc;
        d->stopped = 1;
        close_all(d);
    }
    uv_run(&d->loop, UV_RUN_DEFAULT);

    rf_engine_close_print(d->engine);
    if (d->metrics.print_dropped > 0)
        RF_WARN("DAEMON", "%" PRIu64 " printed outputs dropped: stdout did not keep up "
                "(the outputs themselves were produced all the same)", d->metrics.print_dropped);
    if (rc == RF_EXIT_OK)
        print_summary(d, d->demo ? stdout : stderr);
    rf_engine_destroy(d->engine);
    if (d->rkqu_cons)
        rd_kafka_queue_destroy(d->rkqu_cons);
    if (d->rkqu_prod)
        rd_kafka_queue_destroy(d->rkqu_prod);
    if (d->rk)
        rd_kafka_destroy(d->rk);
    if (d->rkp)
        rd_kafka_destroy(d->rkp);
    rf_demo_destroy(d->demo);
    rf_health_destroy(d->health);
    rf_epoch_destroy(d->epoch);
    rf_txn_destroy(d->txn);
    rf_decl_destroy(d->decl);
    rf_schemas_destroy(d->schemas);
    if (uv_loop_close(&d->loop) != 0) {
        RF_ERR("DAEMON", "a handle was left open at exit");
        d->exit_code = d->exit_code ? d->exit_code : RF_EXIT_FAILURE;
    }
    int code = d->exit_code;
    free(d);
    return code;
}
