/*
 * kafka.h — librdkafka clients built from our config and bound to the libuv loop.
 *
 * Owns the translation of struct rf_conf into rd_kafka_conf_t (our defaults first, then every
 * kafka.* pass-through key, then the settings the guarantees depend on, which the user cannot
 * override), and the queue watch that wakes the loop: rd_kafka_queue_io_event_enable() writes
 * to a pipe when a queue goes from empty to non-empty, and a uv_poll on the pipe's read end
 * calls back on the loop thread. No thread of our own polls Kafka.
 * The watch fires only on that empty -> non-empty edge: the callback must drain the queue
 * until it is empty (or remember to come back), or events stall (design.md §10).
 */
#ifndef RISKFLOW_KAFKA_H
#define RISKFLOW_KAFKA_H

#include <librdkafka/rdkafka.h>
#include <uv.h>

#include "riskflow/conf.h"

/* What the consumer calls back, all on the thread serving its queue (the loop). */
struct rf_kafka_consumer_cbs {
    void (*rebalance)(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                      rd_kafka_topic_partition_list_t *parts, void *opaque);
    void (*offset_commit)(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                          rd_kafka_topic_partition_list_t *offsets, void *opaque);
    /* Statistics JSON every kafka statistics.interval.ms (default 1000 here): the only place
     * librdkafka 2.0.2 shows the group's join state. Return 0 (librdkafka frees json). */
    int (*stats)(rd_kafka_t *rk, char *json, size_t json_len, void *opaque);
    void *opaque;
};

/* Whether processing.guarantee is exactly-once. */
int rf_kafka_exactly_once(const struct rf_conf *conf);

/* Exactly-once mode's transactional.id: kafka.transactional.id, else "<group>.<hostname>"
 * (one per instance: a second producer with the same id fences the first). */
void rf_kafka_transactional_id(const struct rf_conf *conf, const char *group, char *buf,
                               size_t size);

/* Consumer: group member, manual offset store (stored only when complete), no auto commit (the
 * daemon commits on its own timer), cooperative-sticky assignment, logs and errors routed to
 * the consumer queue. bootstrap overrides kafka.bootstrap.servers when not NULL (the demo's
 * mock cluster), group_id kafka.group.id. Exactly-once mode reads read_committed (librdkafka's
 * default, forced there). NULL + errstr on error. */
rd_kafka_t *rf_kafka_consumer_new(const struct rf_conf *conf, const char *bootstrap,
                                  const char *group_id, const struct rf_kafka_consumer_cbs *cbs,
                                  char *errstr, size_t errstr_size);

/* Producer: idempotent, acks=all, linger 5 ms, Nagle off, delivery reports on the main queue.
 * opaque is passed to dr_msg_cb and error_cb. transactional_id: exactly-once mode's (from
 * rf_kafka_transactional_id), NULL for at-least-once. */
rd_kafka_t *rf_kafka_producer_new(const struct rf_conf *conf, const char *bootstrap,
                                  const char *transactional_id,
                                  void (*dr_msg_cb)(rd_kafka_t *, const rd_kafka_message_t *,
                                                    void *),
                                  void *opaque, char *errstr, size_t errstr_size);

/* Run every kafka.* key through librdkafka's own parser for both clients, without creating
 * either: --check-config. 0, or RF_E_CONF with "file:line: kafka.key: reason" in errstr. */
int rf_kafka_conf_check(const struct rf_conf *conf, char *errstr, size_t errstr_size);

/* How many of an input message's bytes a dead-letter record can carry under the producer's
 * effective message.max.bytes (its key, headers and framing take the rest), capped at
 * RF_DLQ_VALUE_MAX. RF_E_CONF with errstr when the limit leaves no room for a record. */
int rf_kafka_dlq_value_max(const struct rf_conf *conf, size_t *cap, char *errstr,
                           size_t errstr_size);

/* Error and log callbacks both clients use: they forward to the daemon's log (on the thread
 * that serves the queue, i.e. the loop). */
void rf_kafka_error_cb(rd_kafka_t *rk, int err, const char *reason, void *opaque);
void rf_kafka_log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf);

struct rf_kafka_watch {
    uv_poll_t poll;
    int fds[2];
    void (*cb)(void *arg);
    void *arg;
    void (*close_cb)(void *arg);
};

/* Start watching rkqu (borrowed; it must outlive the watch). 0 or RF_E_IO. */
int rf_kafka_watch_init(uv_loop_t *loop, struct rf_kafka_watch *w, rd_kafka_queue_t *rkqu,
                        void (*cb)(void *arg), void *arg);

/* Stop watching; close_cb(arg) once the handle is closed (the pipe is closed then). Disable
 * the queue's io event before calling this. */
void rf_kafka_watch_close(struct rf_kafka_watch *w, void (*close_cb)(void *arg));

#endif
