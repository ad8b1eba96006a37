/*
 * kafka.c — building librdkafka clients and binding their queues to the loop.
 *
 * Config precedence: our defaults < kafka.* keys from the user < the few settings the
 * delivery guarantees rest on (manual offset store, idempotence, event routing). Those are
 * forced, because a user who turns them off would silently get a different product.
 * Runs on the loop thread (construction happens before the loop runs).
 */
#include "riskflow/kafka.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "riskflow/err.h"
#include "riskflow/log.h"
#include "riskflow/outputs.h"
#include "riskflow/secret.h"

static int set(rd_kafka_conf_t *kc, const char *key, const char *value, const char *where,
               char *errstr, size_t size) {
    char err[512];
    if (rd_kafka_conf_set(kc, key, value, err, sizeof err) != RD_KAFKA_CONF_OK) {
        snprintf(errstr, size, "%s%skafka.%s: %s", where ? where : "", where ? ": " : "", key,
                 err);
        return RF_E_CONF;
    }
    return 0;
}

/* kafka.* keys go to both clients, except those only one of them understands: librdkafka would
 * warn about them on every start of the other one. */
static const char *const consumer_only[] = {
    "group.id", "group.instance.id", "partition.assignment.strategy", "session.timeout.ms",
    "heartbeat.interval.ms", "group.protocol.type", "coordinator.query.interval.ms",
    "max.poll.interval.ms", "enable.auto.commit", "auto.commit.interval.ms",
    "enable.auto.offset.store", "queued.min.messages", "queued.max.messages.kbytes",
    "fetch.wait.max.ms", "fetch.message.max.bytes", "max.partition.fetch.bytes",
    "fetch.max.bytes", "fetch.min.bytes", "fetch.error.backoff.ms", "offset.store.method",
    "isolation.level", "enable.partition.eof", "check.crcs", "allow.auto.create.topics",
    "auto.offset.reset", "consume.callback.max.messages", NULL,
};
static const char *const producer_only[] = {
    "transactional.id", "transaction.timeout.ms", "enable.idempotence",
    "enable.gapless.guarantee", "queue.buffering.max.messages", "queue.buffering.max.kbytes",
    "queue.buffering.max.ms", "linger.ms", "message.send.max.retries", "retries",
    "queue.buffering.backpressure.threshold", "compression.codec", "compression.type",
    "compression.level", "batch.num.messages", "batch.size", "delivery.report.only.error",
    "acks", "request.required.acks", "request.timeout.ms", "message.timeout.ms",
    "delivery.timeout.ms", "partitioner", "sticky.partitioning.linger.ms", NULL,
};

static int listed(const char *const *list, const char *key) {
    for (; *list; list++)
        if (strcmp(*list, key) == 0)
            return 1;
    return 0;
}

/* kafka.sasl.password.file (ours, not librdkafka's): the SASL password read from a file or a
 * systemd credential (secret.h), so that it need not sit in the config file. */
static int set_secret(rd_kafka_conf_t *kc, const char *key, const struct rf_conf_kv *kv,
                      char *errstr, size_t size) {
    unsigned char secret[1024];
    size_t n;
    char err[512];
    if (rf_secret_read(kv->value, secret, sizeof secret, &n, err, sizeof err) != 0) {
        snprintf(errstr, size, "%s: kafka.%s: %s", kv->where, kv->key, err);
        return RF_E_CONF;
    }
    int rc = set(kc, key, (const char *)secret, kv->where, errstr, size);
    memset(secret, 0, sizeof secret);
    return rc;
}

/* Defaults, then the user's kafka.* keys (those the other client owns skipped), then the
 * forced ones. */
static rd_kafka_conf_t *build(const struct rf_conf *conf, rd_kafka_type_t type,
                              const char *const *defaults, const char *const *forced,
                              const char *bootstrap, char *errstr, size_t size) {
    const char *const *skip = type == RD_KAFKA_CONSUMER ? producer_only : consumer_only;
    rd_kafka_conf_t *kc = rd_kafka_conf_new();
    for (const char *const *kv = defaults; *kv; kv += 2)
        if (set(kc, kv[0], kv[1], NULL, errstr, size) != 0)
            goto fail;
    for (int i = 0; i < conf->n_kafka; i++) {
        const struct rf_conf_kv *kv = &conf->kafka[i];
        if (strcmp(kv->key, "sasl.password.file") == 0) {
            if (set_secret(kc, "sasl.password", kv, errstr, size) != 0)
                goto fail;
            continue;
        }
        if (!listed(skip, kv->key) && set(kc, kv->key, kv->value, kv->where, errstr, size) != 0)
            goto fail;
    }
    for (const char *const *kv = forced; *kv; kv += 2)
        if (set(kc, kv[0], kv[1], NULL, errstr, size) != 0)
            goto fail;
    if (bootstrap && set(kc, "bootstrap.servers", bootstrap, NULL, errstr, size) != 0)
        goto fail;
    rd_kafka_conf_set_error_cb(kc, rf_kafka_error_cb);
    rd_kafka_conf_set_log_cb(kc, rf_kafka_log_cb);
    return kc;
fail:
    rd_kafka_conf_destroy(kc);
    return NULL;
}

static const char *const consumer_defaults[] = {
        "partition.assignment.strategy", "cooperative-sticky",
        "auto.offset.reset", "earliest",
        "socket.nagle.disable", "true",
        /* librdkafka 2.0.2 backs off a full second once the prefetch queue passes
         * queued.min.messages: size it for ~1-2 s of traffic (design.md §8). */
        "queued.min.messages", "200000",
        "statistics.interval.ms", "1000", /* the group's join state: see the commit guard */
        NULL,
};
static const char *const consumer_forced[] = {
        "enable.auto.offset.store", "false", /* stored only when the event is complete */
        /* The daemon commits on its own timer, never inside a cooperative rebalance: with
         * librdkafka before 2.10 (issue #4059) a commit sent during the second join of a
         * cooperative rebalance fails with ILLEGAL_GENERATION and the assignment is lost. */
        "enable.auto.commit", "false",
        "log.queue", "true",                 /* logs served on the loop, not librdkafka threads */
        NULL,
};

rd_kafka_t *rf_kafka_consumer_new(const struct rf_conf *conf, const char *bootstrap,
                                  const char *group_id, const struct rf_kafka_consumer_cbs *cbs,
                                  char *errstr, size_t size) {
    rd_kafka_conf_t *kc = build(conf, RD_KAFKA_CONSUMER, consumer_defaults, consumer_forced,
                                bootstrap, errstr, size);
    if (!kc)
        return NULL;
    if ((group_id && set(kc, "group.id", group_id, NULL, errstr, size) != 0) ||
        (rf_kafka_exactly_once(conf) &&
         set(kc, "isolation.level", "read_committed", NULL, errstr, size) != 0)) {
        rd_kafka_conf_destroy(kc);
        return NULL;
    }
    rd_kafka_conf_set_rebalance_cb(kc, cbs->rebalance);
    if (cbs->offset_commit)
        rd_kafka_conf_set_offset_commit_cb(kc, cbs->offset_commit);
    if (cbs->stats)
        rd_kafka_conf_set_stats_cb(kc, cbs->stats);
    rd_kafka_conf_set_opaque(kc, cbs->opaque);
    char err[512];
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, kc, err, sizeof err);
    if (!rk) {
        snprintf(errstr, size, "consumer: %s", err);
        rd_kafka_conf_destroy(kc);
        return NULL;
    }
    rd_kafka_set_log_queue(rk, NULL); /* logs to the main queue ... */
    rd_kafka_poll_set_consumer(rk);   /* ... which now forwards to the consumer queue */
    return rk;
}

static const char *const producer_defaults[] = {
        "linger.ms", "5",
        "socket.nagle.disable", "true",
        "queue.buffering.max.messages", "1000000",
        "message.timeout.ms", "30000",
        "compression.codec", "lz4",
        NULL,
};
static const char *const producer_forced[] = {
        "enable.idempotence", "true", /* per-key order, no duplicates from retries */
        "acks", "all",
        "log.queue", "true",
        NULL,
};

int rf_kafka_exactly_once(const struct rf_conf *conf) {
    return strcmp(conf->processing_guarantee, "exactly-once") == 0;
}

void rf_kafka_transactional_id(const struct rf_conf *conf, const char *group, char *buf,
                               size_t size) {
    const char *id = rf_conf_kafka_get(conf, "transactional.id");
    if (id) {
        snprintf(buf, size, "%s", id);
        return;
    }
    char host[256];
    if (gethostname(host, sizeof host) != 0)
        snprintf(host, sizeof host, "localhost");
    host[sizeof host - 1] = '\0';
    snprintf(buf, size, "%s.%s", group ? group : rf_conf_kafka_get(conf, "group.id"), host);
}

rd_kafka_t *rf_kafka_producer_new(const struct rf_conf *conf, const char *bootstrap,
                                  const char *transactional_id,
                                  void (*dr_msg_cb)(rd_kafka_t *, const rd_kafka_message_t *,
                                                    void *),
                                  void *opaque, char *errstr, size_t size) {
    rd_kafka_conf_t *kc = build(conf, RD_KAFKA_PRODUCER, producer_defaults, producer_forced,
                                bootstrap, errstr, size);
    if (!kc)
        return NULL;
    if (transactional_id &&
        set(kc, "transactional.id", transactional_id, NULL, errstr, size) != 0) {
        rd_kafka_conf_destroy(kc);
        return NULL;
    }
    rd_kafka_conf_set_dr_msg_cb(kc, dr_msg_cb);
    rd_kafka_conf_set_opaque(kc, opaque);
    char err[512];
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, kc, err, sizeof err);
    if (!rk) {
        snprintf(errstr, size, "producer: %s", err);
        rd_kafka_conf_destroy(kc);
        return NULL;
    }
    rd_kafka_set_log_queue(rk, NULL);
    return rk;
}

int rf_kafka_conf_check(const struct rf_conf *conf, char *errstr, size_t size) {
    size_t cap;
    rd_kafka_conf_t *kc = build(conf, RD_KAFKA_CONSUMER, consumer_defaults, consumer_forced, NULL,
                                errstr, size);
    if (!kc)
        return RF_E_CONF;
    rd_kafka_conf_destroy(kc);
    return rf_kafka_dlq_value_max(conf, &cap, errstr, size);
}

int rf_kafka_dlq_value_max(const struct rf_conf *conf, size_t *cap, char *errstr, size_t size) {
    rd_kafka_conf_t *kc =
        build(conf, RD_KAFKA_PRODUCER, producer_defaults, producer_forced, NULL, errstr, size);
    if (!kc)
        return RF_E_CONF;
    char buf[32];
    size_t n = sizeof buf;
    long mmb = rd_kafka_conf_get(kc, "message.max.bytes", buf, &n) == RD_KAFKA_CONF_OK
                   ? strtol(buf, NULL, 10)
                   : 1000000;
    rd_kafka_conf_destroy(kc);
    long room = mmb - RF_DLQ_KEY_MAX - RF_DLQ_OVERHEAD;
    if (room < RF_DLQ_VALUE_MIN) {
        snprintf(errstr, size, "kafka.message.max.bytes (%ld) leaves no room for a dead-letter "
                 "record: at least %d bytes (a %d-byte key, %d of headers, %d of the original "
                 "message)", mmb, RF_DLQ_KEY_MAX + RF_DLQ_OVERHEAD + RF_DLQ_VALUE_MIN,
                 RF_DLQ_KEY_MAX, RF_DLQ_OVERHEAD, RF_DLQ_VALUE_MIN);
        return RF_E_CONF;
    }
    *cap = room < RF_DLQ_VALUE_MAX ? (size_t)room : RF_DLQ_VALUE_MAX;
    return 0;
}

void rf_kafka_error_cb(rd_kafka_t *rk, int err, const char *reason, void *opaque) {
    /* Transient broker errors are retried by librdkafka itself; only fatal ones stop us,
     * and the daemon checks rd_kafka_fatal_error() for that. */
    RF_WARN("KAFKA", "%s: %s: %s", rd_kafka_name(rk), rd_kafka_err2name(err), reason);
}

void rf_kafka_log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf) {
    int lvl = level <= 3 ? RF_LOG_ERR : level == 4 ? RF_LOG_WARN : level <= 6 ? RF_LOG_INFO
                                                                              : RF_LOG_DEBUG;
    RF_LOG(lvl, "KAFKA", "%s: %s: %s", rd_kafka_name(rk), fac, buf);
}

static void on_readable(uv_poll_t *poll, int status, int events) {
    struct rf_kafka_watch *w = poll->data;
    char buf[256];
    /* Empty the pipe first: an event written after this read wakes us again. */
    while (read(w->fds[0], buf, sizeof buf) > 0)
        ;
    w->cb(w->arg);
}

int rf_kafka_watch_init(uv_loop_t *loop, struct rf_kafka_watch *w, rd_kafka_queue_t *rkqu,
                        void (*cb)(void *arg), void *arg) {
    if (pipe(w->fds) != 0)
        return RF_E_IO;
    for (int i = 0; i < 2; i++) {
        fcntl(w->fds[i], F_SETFL, fcntl(w->fds[i], F_GETFL) | O_NONBLOCK);
        fcntl(w->fds[i], F_SETFD, FD_CLOEXEC);
    }
    w->cb = cb;
    w->arg = arg;
    if (uv_poll_init(loop, &w->poll, w->fds[0]) != 0) {
        close(w->fds[0]);
        close(w->fds[1]);
        return RF_E_IO;
    }
    w->poll.data = w;
    uv_poll_start(&w->poll, UV_READABLE, on_readable);
    rd_kafka_queue_io_event_enable(rkqu, w->fds[1], "1", 1);
    return 0;
}

static void on_watch_closed(uv_handle_t *h) {
    struct rf_kafka_watch *w = h->data;
    close(w->fds[0]);
    close(w->fds[1]);
    if (w->close_cb)
        w->close_cb(w->arg);
}

void rf_kafka_watch_close(struct rf_kafka_watch *w, void (*close_cb)(void *arg)) {
    w->close_cb = close_cb;
    uv_close((uv_handle_t *)&w->poll, on_watch_closed);
}
