/*
 * metrics.h — counters and latency histograms owned by the daemon.
 *
 * Plain structs, loop thread only, no allocation: a histogram is a fixed array of
 * log-linear buckets (8 sub-buckets per power of two, from 1 µs to ~1 h), good to ~9% on a
 * quantile, which is what p50/p99 need. The /metrics endpoint, STATUS= and the summary all
 * read these.
 */
#ifndef RISKFLOW_METRICS_H
#define RISKFLOW_METRICS_H

#include <stdint.h>

#include "riskflow/err.h"

#define RF_HIST_SUB 8
#define RF_HIST_POW 32
#define RF_HIST_BUCKETS (RF_HIST_SUB * RF_HIST_POW)

struct rf_hist {
    uint64_t count;
    uint64_t sum_us;
    uint64_t max_us;
    uint64_t buckets[RF_HIST_BUCKETS];
};

void rf_hist_add(struct rf_hist *h, uint64_t us);
/* Values <= le_us: exact when le_us is a bucket's upper edge, as every edge
 * rf_hist_prom_edge gives is (2^k - 1 µs): Prometheus's cumulative `le` buckets. */
uint64_t rf_hist_count_le(const struct rf_hist *h, uint64_t le_us);
/* The i-th of RF_HIST_PROM_EDGES upper edges exported to Prometheus, in µs: 2^8 - 1 (0.26 ms)
 * to 2^23 - 1 (8.4 s), doubling. */
#define RF_HIST_PROM_EDGES 16
uint64_t rf_hist_prom_edge(int i);

/* The q-quantile (0..1) in microseconds: the upper edge of its bucket; 0 when empty. */
uint64_t rf_hist_quantile(const struct rf_hist *h, double q);

/* DLQ reasons are the decode errors, indexed by -RF_E_* (err.h). */
#define RF_DLQ_REASONS 26

#define RF_METRIC_JOBS 8
#define RF_METRIC_KINDS 8

/* Per job: the events it took that completed, and its outputs acknowledged, by kind. */
struct rf_job_metrics {
    const char *name;          /* NULL: no job in this slot */
    uint64_t events;
    uint64_t passed;           /* of its record types, but outside its filter: no output */
    uint64_t dead_lettered;    /* of its record types, but dead-lettered (bad key, cut short) */
    uint64_t outputs[RF_METRIC_KINDS];
    const char *const *kind_names;
    int kinds;
    struct rf_hist latency;    /* consumed -> complete, for its events */
    uint64_t ns;               /* loop time in its hooks and model (when the engine times jobs) */
};

struct rf_metrics {
    uint64_t events_in;        /* messages taken from the consumer */
    uint64_t scored;           /* events complete with their outputs and state (not DLQ) */
    uint64_t dead_lettered;    /* DLQ records acknowledged */
    uint64_t dlq_by_reason[RF_DLQ_REASONS];
    uint64_t replays;          /* events already applied and written (redelivery) */
    uint64_t replays_repaired; /* replays some of whose entities did not hold them (cluster) */
    uint64_t replayed_outputs; /* their first outputs, produced again from the journal */
    uint64_t redis_data_lost;  /* times the Redis epoch was not the commits' (README) */
    uint64_t print_dropped;    /* printed outputs dropped: stdout did not keep up (at exit) */
    uint64_t journal_bad;      /* journal chunks read back that were not well-formed */
    uint64_t not_owned;        /* messages of partitions no longer assigned, left alone */
    uint64_t txn_commits;      /* exactly-once: transactions committed */
    uint64_t txn_aborts;       /* exactly-once: transactions aborted (inputs consumed again) */
    uint64_t txn_lost;         /* exactly-once: outputs that failed inside a transaction */
    uint64_t trim_us;          /* the last malloc_trim's duration (daemon.c) */
    uint64_t produce_retries;  /* outputs produced again after a failed delivery */
    uint64_t store_fetches;    /* Redis round trips to read states */
    uint64_t store_flushes;    /* Redis flushes (pipelined SETs) completed */
    uint64_t store_errors;     /* Redis commands that failed (then retried) */
    uint64_t store_mismatch;   /* stored values of another layout (the entity started fresh) */
    uint64_t offsets_stored;   /* rd_kafka_offsets_store calls */
    uint64_t first_in_ns;      /* uv_hrtime() of the first message taken */
    uint64_t last_done_ns;     /* uv_hrtime() of the last event completed */
    struct rf_hist latency;    /* consumed -> complete, per event */
    /* The stages of that (engine.c): a batch's wait for its entities (taken -> loaded), its
     * processing (apply, features, models, encoding; per batch), an event's wait for its
     * outputs' acknowledgements and its state's write (processed -> complete). */
    struct rf_hist stage_load, stage_process, stage_ack;
    struct rf_hist batch_size;
    struct rf_job_metrics jobs[RF_METRIC_JOBS];
};

#endif
