/*
 * pipeline.h — the per-batch state machine: consume → decode → features → model → produce,
 * and the bookkeeping that makes every input message end in exactly one counted outcome.
 *
 * Owns the pool of in-flight events (pipeline.max.inflight of them, allocated once), the
 * per-partition FIFOs that turn out-of-order completions into a contiguous offset watermark,
 * and the output encoding buffers. Borrows the clients, the store, the model and the metrics
 * from the daemon.
 *
 * An event is complete when every output of it (score, alert, or its DLQ record) is
 * acknowledged by the broker and the store flush covering its state change has succeeded.
 * Only then can its offset be stored, and only once every earlier offset on its partition is
 * complete too (design.md §3). Offsets go to librdkafka's store; the daemon's commit timer
 * sends them (never mid-rebalance: see rf_pipeline_rebalancing).
 *
 * Micro-batches: drain up to batch_max messages without waiting for more, decode them, look
 * their customers up in the cache, fetch the misses with one MGET, apply features in offset
 * order, score the batch with one model call, produce. While a fetch is out, no new batch is
 * started, so per-customer order holds.
 * Loop thread only. Allocates nothing per event once warm, except what librdkafka does.
 */
#ifndef RISKFLOW_PIPELINE_H
#define RISKFLOW_PIPELINE_H

#include <librdkafka/rdkafka.h>
#include <uv.h>

#include "riskflow/codec.h"
#include "riskflow/conf.h"
#include "riskflow/metrics.h"
#include "riskflow/model.h"
#include "riskflow/store.h"

typedef struct rf_pipeline_s rf_pipeline_t;

struct rf_pipeline_deps {
    uv_loop_t *loop;
    const struct rf_conf *conf;
    rd_kafka_t *rk;  /* consumer */
    rd_kafka_t *rkp; /* producer */
    rf_store_t *store;
    rf_model_t *model;
    const rf_schemas_t *schemas;
    struct rf_metrics *metrics;
    /* Called (on the loop) when the pipeline has nothing in flight after rf_pipeline_stop,
     * or on every completion while stopping, so the daemon can check. */
    void (*on_idle)(void *arg);
    void *arg;
};

rf_pipeline_t *rf_pipeline_new(const struct rf_pipeline_deps *deps, char *errstr,
                               size_t errstr_size);
void rf_pipeline_destroy(rf_pipeline_t *pl); /* after rf_pipeline_close's callback */

/* Take messages from the consumer queue until it is empty or a limit is reached. Called by
 * the daemon when the consumer queue wakes the loop. */
void rf_pipeline_drain(rf_pipeline_t *pl);

/* Serve producer events (delivery reports) until none is left. */
void rf_pipeline_serve_producer(rf_pipeline_t *pl);

/* The store's callbacks, wired by the daemon. */
void rf_pipeline_on_fetched(rf_pipeline_t *pl, int status);
void rf_pipeline_on_flushed(rf_pipeline_t *pl, uint64_t gen);

/* The producer's delivery report callback (opaque = the pipeline). */
void rf_pipeline_dr_msg_cb(rd_kafka_t *rkp, const rd_kafka_message_t *rkm, void *opaque);

/* The consumer's rebalance callback (opaque = the pipeline). */
void rf_pipeline_rebalance_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                              rd_kafka_topic_partition_list_t *parts, void *opaque);

/* A revocation deferred until its partitions drain (see the rebalance callback): finish it
 * now. The daemon calls this before its final commit. */
void rf_pipeline_settle_revoke(rf_pipeline_t *pl);

/* Stop taking messages; in-flight events still complete. */
void rf_pipeline_stop(rf_pipeline_t *pl);

/* 1 between a cooperative revoke and the assign that completes that rebalance: no commit may
 * be sent then (librdkafka issue #4059). */
int rf_pipeline_rebalancing(const rf_pipeline_t *pl);

/* Partitions currently assigned. */
int rf_pipeline_assigned(const rf_pipeline_t *pl);

/* Events consumed and not yet complete. */
int rf_pipeline_inflight(const rf_pipeline_t *pl);

/* 1 after a fatal error (fatal producer error, out of pool): the daemon should stop. */
int rf_pipeline_failed(const rf_pipeline_t *pl);

/* Close the pipeline's own handles; cb(arg) when closed. */
void rf_pipeline_close(rf_pipeline_t *pl, void (*cb)(void *arg), void *arg);

#endif
