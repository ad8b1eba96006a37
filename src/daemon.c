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
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "riskflow/codec.h"
#include "riskflow/demo.h"
#include "riskflow/err.h"
#include "riskflow/kafka.h"
#include "riskflow/log.h"
#include "riskflow/metrics.h"
#include "riskflow/model.h"
#include "riskflow/pipeline.h"
#include "riskflow/store.h"

/* OpenBLAS 0.3.21 exports these without a prototype in cblas.h on every build. */
void openblas_set_num_threads(int num_threads);
char *openblas_get_corename(void);

struct daemon {
    uv_loop_t loop;
    const struct rf_conf *conf;
    int demo_mode;
    rf_schemas_t *schemas;
    rf_model_t *model;
    rf_store_t *store;
    rd_kafka_t *rk, *rkp;
    rd_kafka_queue_t *rkqu_cons, *rkqu_prod;
    struct rf_kafka_watch watch_cons, watch_prod;
    rf_pipeline_t *pl;
    rf_demo_t *demo;
    struct rf_metrics metrics;

    uv_signal_t sig_term, sig_int, sig_hup;
    uv_timer_t stats_timer;  /* periodic counters; in demo mode also checks for the end */
    uv_timer_t commit_timer; /* commit.interval.ms: async commits of the stored offsets */
    uv_timer_t stop_timer;   /* zero-delay: runs the stop check from a clean stack */
    uv_timer_t deadline;     /* shutdown.timeout.ms */

    int demo_started;
    int stopping;
    int stopped;
    int timed_out;
    uint64_t stop_deadline_ns;
    uint64_t committed_mark; /* metrics.offsets_stored at the last commit */
    int group_steady;        /* the consumer group's join state is "steady" (statistics) */
    int group_state_seen; /* uv_hrtime() when shutdown.timeout.ms runs out */
    int exit_code;
    uint64_t t_start_ns, t_end_ns;
    struct rusage ru_start, ru_thread_start;
};

int rf_daemon_check(const struct rf_conf *conf, char *errstr, size_t size) {
    char err[512];
    if (rf_kafka_conf_check(conf, errstr, size) != 0)
        return RF_E_CONF;
    rf_schemas_t *schemas = rf_schemas_load(conf->schemas_dir, err, sizeof err);
    if (!schemas) {
        snprintf(errstr, size, "schemas.dir: %s", err);
        return RF_E_CONF;
    }
    int rc = 0;
    if (rf_schemas_find(schemas, "riskflow.Payment") < 0 ||
        rf_schemas_find(schemas, "riskflow.FraudScore") < 0 ||
        rf_schemas_find(schemas, "riskflow.FraudAlert") < 0) {
        snprintf(errstr, size, "schemas.dir: %s/registry.txt must name riskflow.Payment, "
                 "riskflow.FraudScore and riskflow.FraudAlert", conf->schemas_dir);
        rc = RF_E_CONF;
    }
    rf_schemas_destroy(schemas);
    if (rc)
        return rc;
    rf_model_t *model = rf_model_load(conf->fraud_model_path, err, sizeof err);
    if (!model) {
        snprintf(errstr, size, "model.fraud.path: %s", err);
        return RF_E_CONF;
    }
    rf_model_destroy(model);
    return 0;
}

/* ---- callbacks into the pipeline ---- */

static void on_cons_ready(void *arg) {
    struct daemon *d = arg;
    if (d->pl)
        rf_pipeline_drain(d->pl);
}

static void on_prod_ready(void *arg) {
    struct daemon *d = arg;
    if (d->pl)
        rf_pipeline_serve_producer(d->pl);
    else
        while (rd_kafka_poll(d->rkp, 0) > 0)
            ;
}

static void dr_cb(rd_kafka_t *rkp, const rd_kafka_message_t *rkm, void *opaque) {
    struct daemon *d = opaque;
    rf_pipeline_dr_msg_cb(rkp, rkm, d->pl);
}

static void rebalance_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                         rd_kafka_topic_partition_list_t *parts, void *opaque) {
    struct daemon *d = opaque;
    rf_pipeline_rebalance_cb(rk, err, parts, d->pl);
}

/* Async commit results: a failure is logged and the next tick commits again. */
static void offset_commit_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                             rd_kafka_topic_partition_list_t *offsets, void *opaque) {
    struct daemon *d = opaque;
    if (err && err != RD_KAFKA_RESP_ERR__NO_OFFSET) {
        RF_WARN("KAFKA", "commit: %s (retried on the next tick)", rd_kafka_err2str(err));
        d->committed_mark = 0;
    }
}

/* The join state from librdkafka's statistics ("cgrp": {..., "join_state": "steady", ...}).
 * A cheap scan, once a second: the JSON is librdkafka's own and well-formed. */
static int stats_cb(rd_kafka_t *rk, char *json, size_t len, void *opaque) {
    struct daemon *d = opaque;
    const char *cgrp = strstr(json, "\"cgrp\":");
    const char *js = cgrp ? strstr(cgrp, "\"join_state\":\"") : NULL;
    if (js) {
        js += strlen("\"join_state\":\"");
        d->group_steady = strncmp(js, "steady\"", 7) == 0;
        d->group_state_seen = 1;
    }
    return 0;
}

/* Whether a commit may go out now: not inside a rebalance, as far as we can tell (our own
 * callbacks, and librdkafka's join state as of its last statistics). */
static int may_commit(const struct daemon *d) {
    return !rf_pipeline_rebalancing(d->pl) && (!d->group_state_seen || d->group_steady);
}

static void on_fetched(rf_store_t *store, int status, void *arg) {
    struct daemon *d = arg;
    rf_pipeline_on_fetched(d->pl, status);
}

static void on_flushed(rf_store_t *store, uint64_t gen, void *arg) {
    struct daemon *d = arg;
    rf_pipeline_on_flushed(d->pl, gen);
}

static void on_store_state(rf_store_t *store, int status, void *arg) {
    struct daemon *d = arg;
    if (status == 0)
        RF_NOTICE("REDIS", "connected to %s:%d", d->conf->redis_host, d->conf->redis_port);
    else
        RF_WARN("REDIS", "%s:%d: %s: %s (retrying)", d->conf->redis_host, d->conf->redis_port,
                rf_strerror(status), rf_store_errstr(store));
}

/* ---- stopping ---- */

static void begin_stop(struct daemon *d, const char *why);
static void on_stop_check(uv_timer_t *t);

static void on_pipeline_idle(void *arg) {
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
    rf_pipeline_settle_revoke(d->pl); /* everything has drained, or we gave up waiting */
    /* Caught between the halves of a cooperative rebalance: let it finish first, or the
     * commit itself would cost us the assignment (librdkafka issue #4059). */
    if (!may_commit(d))
        RF_INFO("KAFKA", "final commit waits for the rebalance under way");
    while (!may_commit(d) && !d->timed_out && uv_hrtime() < d->stop_deadline_ns)
        serve_consumer_ms(d, 200);
    for (;;) {
        rd_kafka_resp_err_t err = rd_kafka_commit(d->rk, NULL, 0);
        if (err == RD_KAFKA_RESP_ERR_NO_ERROR || err == RD_KAFKA_RESP_ERR__NO_OFFSET)
            return RD_KAFKA_RESP_ERR_NO_ERROR;
        if (!group_in_flux(err) || d->timed_out || uv_hrtime() >= d->stop_deadline_ns)
            return err;
        RF_WARN("KAFKA", "final commit: %s: waiting for the group to settle",
                rd_kafka_err2str(err));
        serve_consumer_ms(d, 500);
    }
}

/* Everything in flight is done (or abandoned): commit, leave the group, flush, close. */
static void finish(struct daemon *d) {
    if (d->stopped)
        return;
    d->stopped = 1;
    d->t_end_ns = uv_hrtime();
    uv_timer_stop(&d->deadline);
    if (d->rk) {
        rd_kafka_resp_err_t err = final_commit(d);
        if (err) {
            RF_ERR("KAFKA", "final commit: %s", rd_kafka_err2str(err));
            d->exit_code = RF_EXIT_FAILURE;
        } else {
            RF_INFO("KAFKA", "offsets committed");
        }
        rd_kafka_consumer_close(d->rk);
    }
    if (d->rkp) {
        rd_kafka_resp_err_t err = rd_kafka_flush(d->rkp, 10000);
        if (err)
            RF_ERR("KAFKA", "producer flush: %s", rd_kafka_err2str(err));
        rf_pipeline_serve_producer(d->pl);
    }
    if (d->rkqu_cons)
        rd_kafka_queue_io_event_enable(d->rkqu_cons, -1, NULL, 0);
    if (d->rkqu_prod)
        rd_kafka_queue_io_event_enable(d->rkqu_prod, -1, NULL, 0);
    rf_kafka_watch_close(&d->watch_cons, NULL);
    rf_kafka_watch_close(&d->watch_prod, NULL);
    rf_pipeline_close(d->pl, NULL, NULL);
    rf_store_close(d->store, NULL, NULL);
    d->store = NULL;
    if (d->demo)
        rf_demo_close(d->demo, NULL, NULL);
    /* Signals, timers: whatever is left. */
    uv_walk(&d->loop, on_walk_close, NULL);
}

static void on_stop_check(uv_timer_t *t) {
    struct daemon *d = t->data;
    if (rf_pipeline_failed(d->pl)) {
        d->exit_code = RF_EXIT_FAILURE;
        if (!d->stopping)
            begin_stop(d, "fatal error");
    }
    if (d->stopping && (rf_pipeline_inflight(d->pl) == 0 || d->timed_out))
        finish(d);
}

static void on_deadline(uv_timer_t *t) {
    struct daemon *d = t->data;
    RF_ERR("DAEMON", "shutdown timed out with %d events in flight; their offsets are not "
           "committed and they will be redelivered", rf_pipeline_inflight(d->pl));
    d->timed_out = 1;
    d->exit_code = RF_EXIT_FAILURE;
    finish(d);
}

static void begin_stop(struct daemon *d, const char *why) {
    if (d->stopping)
        return;
    d->stopping = 1;
    RF_NOTICE("DAEMON", "stopping (%s): %d events in flight", why, rf_pipeline_inflight(d->pl));
    rf_pipeline_stop(d->pl);
    d->stop_deadline_ns = uv_hrtime() + (uint64_t)d->conf->shutdown_timeout_ms * 1000000ULL;
    if (d->conf->shutdown_timeout_ms > 0)
        uv_timer_start(&d->deadline, on_deadline, (uint64_t)d->conf->shutdown_timeout_ms, 0);
    on_pipeline_idle(d);
}

static void on_signal(uv_signal_t *s, int signum) {
    struct daemon *d = s->data;
    if (signum == SIGHUP) {
        RF_NOTICE("DAEMON", "SIGHUP: model reload is not implemented yet; ignored");
        return;
    }
    if (d->stopping) {
        RF_WARN("DAEMON", "second %s: still draining %d events", strsignal(signum),
                rf_pipeline_inflight(d->pl));
        return;
    }
    begin_stop(d, strsignal(signum));
}

/* ---- commits ---- */

static void on_commit_timer(uv_timer_t *t) {
    struct daemon *d = t->data;
    if (d->stopping || !may_commit(d))
        return; /* the final commit, or the next tick after the rebalance, takes it */
    if (d->metrics.offsets_stored == d->committed_mark)
        return; /* nothing new stored since the last commit */
    d->committed_mark = d->metrics.offsets_stored;
    rd_kafka_resp_err_t err = rd_kafka_commit(d->rk, NULL, 1 /* async */);
    if (err && err != RD_KAFKA_RESP_ERR__NO_OFFSET)
        RF_WARN("KAFKA", "commit: %s", rd_kafka_err2str(err));
}

/* ---- stats ---- */

static void log_stats(struct daemon *d) {
    const struct rf_metrics *m = &d->metrics;
    char reasons[256] = "";
    size_t off = 0;
    for (int r = 1; r < RF_DLQ_REASONS && off < sizeof reasons; r++)
        if (m->dlq_by_reason[r])
            off += (size_t)snprintf(reasons + off, sizeof reasons - off, " dlq.%s=%" PRIu64,
                                    rf_err_reason(-r), m->dlq_by_reason[r]);
    RF_INFO("STATS", "in=%" PRIu64 " scored=%" PRIu64 " alerts=%" PRIu64 " dlq=%" PRIu64
            "%s inflight=%d cache=%d p50=%" PRIu64 "us p99=%" PRIu64 "us store_errors=%" PRIu64
            " corrupt=%" PRIu64 " produce_retries=%" PRIu64,
            m->events_in, m->scored, m->alerts, m->dead_lettered, reasons,
            rf_pipeline_inflight(d->pl),
            rf_store_size(d->store), rf_hist_quantile(&m->latency, 0.5),
            rf_hist_quantile(&m->latency, 0.99), m->store_errors, m->store_corrupt,
            m->produce_retries);
}

static void on_stats(uv_timer_t *t) {
    struct daemon *d = t->data;
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
        if (!d->demo_started && rf_pipeline_assigned(d->pl) > 0) {
            d->demo_started = 1;
            rf_demo_start(d->demo);
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
    getrusage(RUSAGE_THREAD, &rt); /* the loop thread: decode, features, model, encode */
    double cpu = tv_s(ru.ru_utime) + tv_s(ru.ru_stime) - tv_s(d->ru_start.ru_utime) -
                 tv_s(d->ru_start.ru_stime);
    double cpu_loop = tv_s(rt.ru_utime) + tv_s(rt.ru_stime) -
                      tv_s(d->ru_thread_start.ru_utime) - tv_s(d->ru_thread_start.ru_stime);
    uint64_t t0 = m->first_in_ns ? m->first_in_ns : d->t_start_ns;
    /* From the first message taken to the last event completed: the time spent waiting
     * for a signal afterwards is not throughput. */
    uint64_t t1 = m->last_done_ns ? m->last_done_ns : d->t_end_ns;
    double wall = (double)(t1 - t0) / 1e9;
    uint64_t done = m->scored + m->dead_lettered;
    fprintf(out, "\n== riskflowd summary ==\n");
    if (d->demo) {
        uint64_t payments, fraud, poison, failed;
        rf_demo_counts(d->demo, &payments, &fraud, &poison, &failed);
        fprintf(out, "generated:      %" PRIu64 " payments (%" PRIu64 " in fraud bursts), %" PRIu64
                     " poison messages\n", payments, fraud, poison);
        if (failed)
            fprintf(out, "NOT delivered:  %" PRIu64 " generated messages the mock broker refused "
                         "(they never reached riskflowd)\n", failed);
    }
    fprintf(out, "events in:      %" PRIu64 "\n", m->events_in);
    fprintf(out, "scored:         %" PRIu64 "\n", m->scored);
    fprintf(out, "alerts:         %" PRIu64 "\n", m->alerts);
    fprintf(out, "dead-lettered:  %" PRIu64, m->dead_lettered);
    const char *sep = " (";
    for (int r = 1; r < RF_DLQ_REASONS; r++) {
        if (m->dlq_by_reason[r]) {
            fprintf(out, "%s%s: %" PRIu64, sep, rf_err_reason(-r), m->dlq_by_reason[r]);
            sep = ", ";
        }
    }
    fprintf(out, "%s\n", sep[0] == ',' ? ")" : "");
    fprintf(out, "throughput:     %.0f events/s (%" PRIu64 " events in %.2f s)\n",
            wall > 0 ? (double)done / wall : 0.0, done, wall);
    fprintf(out, "latency:        p50 %" PRIu64 " us, p99 %" PRIu64 " us, max %" PRIu64
                 " us (consumed -> outputs acknowledged and state flushed)\n",
            rf_hist_quantile(&m->latency, 0.5), rf_hist_quantile(&m->latency, 0.99),
            m->latency.max_us);
    fprintf(out, "cpu:            %.2f us/event on the loop thread%s; %.2f us/event for the "
                 "whole process (%.2f s%s)\n",
            done ? cpu_loop * 1e6 / (double)done : 0.0,
            d->demo ? " (includes the generator's produce calls)" : "",
            done ? cpu * 1e6 / (double)done : 0.0,
            cpu, d->demo ? ", includes the in-process mock broker and generator" : "");
    fprintf(out, "batches:        mean %.1f events\n",
            m->batch_size.count ? (double)m->batch_size.sum_us / (double)m->batch_size.count
                                : 0.0);
}

/* ---- start ---- */

static int subscribe(struct daemon *d, char *errstr, size_t size) {
    rd_kafka_topic_partition_list_t *topics = rd_kafka_topic_partition_list_new(4);
    char name[256];
    const char *p = d->conf->input_topics;
    while (*p) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        const char *colon = memchr(p, ':', len);
        size_t nlen = colon ? (size_t)(colon - p) : len;
        snprintf(name, sizeof name, "%.*s", (int)nlen, p);
        rd_kafka_topic_partition_list_add(topics, name, RD_KAFKA_PARTITION_UA);
        if (!comma)
            break;
        p = comma + 1;
    }
    rd_kafka_resp_err_t err = rd_kafka_subscribe(d->rk, topics);
    rd_kafka_topic_partition_list_destroy(topics);
    if (err) {
        snprintf(errstr, size, "subscribe: %s", rd_kafka_err2str(err));
        return RF_E_KAFKA;
    }
    return 0;
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
    d->model = rf_model_load(conf->fraud_model_path, err, sizeof err);
    if (!d->model) {
        snprintf(errstr, size, "model.fraud.path: %s", err);
        return RF_EXIT_CONFIG;
    }
    RF_INFO("MODEL", "fraud model %s (%d features) from %s", rf_model_version(d->model),
            rf_model_n_features(d->model), conf->fraud_model_path);

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

    struct rf_store_conf sc = {
        .backend = strcmp(conf->store_backend, "memory") == 0 ? RF_STORE_MEMORY : RF_STORE_REDIS,
        .redis_host = conf->redis_host,
        .redis_port = conf->redis_port,
        .connect_timeout_ms = (unsigned)conf->redis_connect_timeout_ms,
        .command_timeout_ms = (unsigned)conf->redis_command_timeout_ms,
        .key_prefix = conf->redis_key_prefix,
        .cache_max = conf->store_cache_max,
    };
    struct rf_store_cbs cbs = {on_flushed, on_fetched, on_store_state, d};
    d->store = rf_store_new(&d->loop, &sc, &cbs, &d->metrics, err, sizeof err);
    if (!d->store) {
        snprintf(errstr, size, "store: %s", err);
        return RF_EXIT_CONFIG;
    }

    d->rkp = rf_kafka_producer_new(conf, bootstrap, dr_cb, d, err, sizeof err);
    if (!d->rkp) {
        snprintf(errstr, size, "%s", err);
        return RF_EXIT_CONFIG;
    }
    struct rf_kafka_consumer_cbs ccbs = {rebalance_cb, offset_commit_cb, stats_cb, d};
    d->rk = rf_kafka_consumer_new(conf, bootstrap, group, &ccbs, err, sizeof err);
    if (!d->rk) {
        snprintf(errstr, size, "%s", err);
        return RF_EXIT_CONFIG;
    }

    struct rf_pipeline_deps deps = {
        .loop = &d->loop,
        .conf = conf,
        .rk = d->rk,
        .rkp = d->rkp,
        .store = d->store,
        .model = d->model,
        .schemas = d->schemas,
        .metrics = &d->metrics,
        .on_idle = on_pipeline_idle,
        .arg = d,
    };
    d->pl = rf_pipeline_new(&deps, err, sizeof err);
    if (!d->pl) {
        snprintf(errstr, size, "%s", err);
        return RF_EXIT_CONFIG;
    }

    d->rkqu_cons = rd_kafka_queue_get_consumer(d->rk);
    d->rkqu_prod = rd_kafka_queue_get_main(d->rkp);
    if (rf_kafka_watch_init(&d->loop, &d->watch_cons, d->rkqu_cons, on_cons_ready, d) != 0 ||
        rf_kafka_watch_init(&d->loop, &d->watch_prod, d->rkqu_prod, on_prod_ready, d) != 0) {
        snprintf(errstr, size, "cannot create the queue wake-up pipes");
        return RF_EXIT_UNAVAILABLE;
    }
    if (subscribe(d, errstr, size) != 0)
        return RF_EXIT_UNAVAILABLE;
    RF_NOTICE("DAEMON", "consuming %s as group %s; scores -> %s, alerts -> %s (threshold %g), "
              "dlq -> %s; store %s", conf->input_topics,
              group ? group : rf_conf_kafka_get(conf, "group.id"), conf->scores_topic,
              conf->alerts_topic,
              conf->fraud_threshold >= 0 ? conf->fraud_threshold : rf_model_threshold(d->model),
              conf->dlq_topic, conf->store_backend);

    uv_signal_init(&d->loop, &d->sig_term);
    uv_signal_init(&d->loop, &d->sig_int);
    uv_signal_init(&d->loop, &d->sig_hup);
    d->sig_term.data = d->sig_int.data = d->sig_hup.data = d;
    uv_signal_start(&d->sig_term, on_signal, SIGTERM);
    uv_signal_start(&d->sig_int, on_signal, SIGINT);
    uv_signal_start(&d->sig_hup, on_signal, SIGHUP);
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
        if (d->rkqu_cons)
            rd_kafka_queue_io_event_enable(d->rkqu_cons, -1, NULL, 0);
        if (d->rkqu_prod)
            rd_kafka_queue_io_event_enable(d->rkqu_prod, -1, NULL, 0);
        if (d->pl)
            rf_pipeline_close(d->pl, NULL, NULL);
        if (d->store)
            rf_store_close(d->store, NULL, NULL);
        if (d->demo)
            rf_demo_close(d->demo, NULL, NULL);
        uv_walk(&d->loop, on_walk_close, NULL);
    }
    uv_run(&d->loop, UV_RUN_DEFAULT);

    if (rc == RF_EXIT_OK)
        print_summary(d, d->demo ? stdout : stderr);
    rf_pipeline_destroy(d->pl);
    if (d->rkqu_cons)
        rd_kafka_queue_destroy(d->rkqu_cons);
    if (d->rkqu_prod)
        rd_kafka_queue_destroy(d->rkqu_prod);
    if (d->rk)
        rd_kafka_destroy(d->rk);
    if (d->rkp)
        rd_kafka_destroy(d->rkp);
    rf_demo_destroy(d->demo);
    rf_model_destroy(d->model);
    rf_schemas_destroy(d->schemas);
    if (uv_loop_close(&d->loop) != 0) {
        RF_ERR("DAEMON", "a handle was left open at exit");
        d->exit_code = d->exit_code ? d->exit_code : RF_EXIT_FAILURE;
    }
    int code = d->exit_code;
    free(d);
    return code;
}
