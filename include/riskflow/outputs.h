/*
 * outputs.h — everything riskflowd writes to Kafka: job outputs and dead-letter records,
 * produced, retried until acknowledged, and reported back through delivery reports.
 *
 * Owns the output topic handles, the dead-letter record format (the original bytes and key;
 * headers rf.reason, rf.error, rf.source.topic, rf.source.partition, rf.source.offset) and
 * the retry queue (copies of what must be produced again: a full queue or a failed delivery;
 * backing off from 100 ms to 5 s while the broker keeps refusing). Each output carries a
 * 64-bit tag of the caller's (event slot, job, kind) that comes back in acked/failed.
 * Loop thread only (delivery reports are served from the loop). Allocates only on the retry
 * path, never per output otherwise (librdkafka copies the payload: RD_KAFKA_MSG_F_COPY).
 */
#ifndef RISKFLOW_OUTPUTS_H
#define RISKFLOW_OUTPUTS_H

#include <librdkafka/rdkafka.h>
#include <stdint.h>
#include <uv.h>

typedef struct rf_outputs_s rf_outputs_t;
typedef struct rf_out_topic rf_out_topic_t; /* an output topic (owned by the outputs) */

struct rf_outputs_cbs {
    /* Acknowledged by the broker (acks=all): rkm is the delivered message (borrowed). */
    void (*acked)(uint64_t tag, const rd_kafka_message_t *rkm, void *arg);
    /* Can never succeed (a permanent error, or the producer's fatal error): the daemon stops
     * cleanly; the event's offset is never stored, so nothing is lost. */
    void (*failed)(uint64_t tag, const char *what, void *arg);
    /* Exactly-once (rf_outputs_set_txn): the output failed inside a transaction, which must
     * now abort (librdkafka takes no retry into a failed transaction). Nothing is retried;
     * the caller aborts and processes the event again. */
    void (*lost)(uint64_t tag, const char *what, void *arg);
    void *arg;
};

#define RF_DLQ_VALUE_MAX 900000 /* original bytes kept at most (the default message.max.bytes) */
#define RF_DLQ_VALUE_MIN 1024   /* ... and at least: a smaller message.max.bytes is refused */
#define RF_DLQ_KEY_MAX 4096
#define RF_DLQ_OVERHEAD 2048    /* a record's headers and framing, with room to spare */

/* rkp NULL: a dry run (--check-config): topics are named but never created, nothing can be
 * produced. dlq_value_max: the original bytes a dead letter keeps (rf_kafka_dlq_value_max:
 * sized from the producer's message.max.bytes, so a dead letter always fits); 0 for
 * RF_DLQ_VALUE_MAX. */
rf_outputs_t *rf_outputs_new(uv_loop_t *loop, rd_kafka_t *rkp, const char *dlq_topic,
                             size_t dlq_value_max, const struct rf_outputs_cbs *cbs,
                             char *errstr, size_t errstr_size);
void rf_outputs_destroy(rf_outputs_t *out); /* after rf_outputs_close's callback */

/* Exactly-once mode: a failed delivery, or a produce call the transaction refuses, is
 * reported as lost instead of retried (a full queue is still retried: the transaction is
 * fine). */
void rf_outputs_set_txn(rf_outputs_t *out, int on);

/* An output topic, created once per name (owned by the outputs). NULL out of memory. */
rf_out_topic_t *rf_outputs_topic(rf_outputs_t *out, const char *name);

/* An output topic's name (borrowed, lives as long as the outputs). */
const char *rf_outputs_topic_name(const rf_out_topic_t *topic);

/* Produce one output (key and payload copied). */
void rf_outputs_produce(rf_outputs_t *out, uint64_t tag, rf_out_topic_t *topic, const void *key,
                        size_t key_len, const void *payload, size_t len);

/* Dead-letter an input message: its bytes and key as they are (cut beyond the caps, with
 * rf.truncated and rf.original.size), the reason token and sentence, its coordinates.
 * withhold: send no body (header rf.body=withheld): a message that may hold a card number
 * in clear (input.hash.dlq). */
void rf_outputs_dlq(rf_outputs_t *out, uint64_t tag, const rd_kafka_message_t *in,
                    const char *reason, const char *error, const char *topic, int32_t partition,
                    int64_t offset, int withhold);

/* The producer's delivery report callback (opaque = the outputs). */
void rf_outputs_dr_cb(rd_kafka_t *rkp, const rd_kafka_message_t *rkm, void *opaque);

/* Outputs waiting for a retry. */
int rf_outputs_retrying(const rf_outputs_t *out);

/* Close the retry timer; cb(arg) when closed. Pending retries are dropped (their events are
 * not complete, so their offsets are not stored). */
void rf_outputs_close(rf_outputs_t *out, void (*cb)(void *arg), void *arg);

#endif
