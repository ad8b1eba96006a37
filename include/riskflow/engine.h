/*
 * engine.h — the generic batch engine: consume → decode by record type → load the entities
 * each record touches → replay check → the jobs' hooks around applying declared features →
 * the jobs score their batch and write outputs → close a generation; and the bookkeeping that
 * makes every input message end in exactly one counted outcome (docs/ENGINE.md).
 *
 * Owns the pool of in-flight events (pipeline.max.inflight, allocated once), the jobs (built
 * from the jobs table and `jobs=`), the outputs module and the offsets module. Borrows the
 * clients, the store, the declarations, the schemas and the metrics from the daemon.
 *
 * Write first, then produce: a batch's outputs are staged, journaled in its generation
 * (journal.h) and produced only once the store flush that writes the generation (state and
 * journal in one MULTI/EXEC) has succeeded; a replay produces its first outputs again from the
 * journal. An event is complete when its generation is written and every output it wrote is
 * acknowledged by the broker.
 * Only a complete event's offset can be stored, and only once every earlier offset on its
 * partition is complete too (offsets.h). The daemon's commit timer sends stored offsets.
 * Loop thread only. Allocates nothing per event once warm, except what librdkafka does.
 */
#ifndef RISKFLOW_ENGINE_H
#define RISKFLOW_ENGINE_H

#include <librdkafka/rdkafka.h>
#include <stdio.h>
#include <uv.h>

#include "riskflow/codec.h"
#include "riskflow/conf.h"
#include "riskflow/decl.h"
#include "riskflow/job.h"
#include "riskflow/metrics.h"
#include "riskflow/store.h"
#include "riskflow/txn.h"

typedef struct rf_engine_s rf_engine_t;

struct rf_engine_deps {
    uv_loop_t *loop;
    const struct rf_conf *conf;
    rd_kafka_t *rk;  /* consumer */
    rd_kafka_t *rkp; /* producer */
    const rf_schemas_t *schemas;
    rf_decl_t *decl; /* not finished: the engine finishes it once the jobs registered state */
    struct rf_metrics *metrics;
    size_t dlq_value_max; /* rf_kafka_dlq_value_max (0: RF_DLQ_VALUE_MAX) */
    rf_txn_t *txn; /* exactly-once mode's transactions, initialised and begun; NULL for
                    * at-least-once */
    int time_jobs; /* measure each job's loop time (metrics.jobs[].ns): two clock reads per
                    * hook call, so only where the figure is wanted (the demo's summary) */
    /* Called (on the loop) when the engine has nothing in flight after rf_engine_stop, on
     * every completion while stopping, or after a failure, so the daemon can check. */
    void (*on_idle)(void *arg);
    void *arg;
};

/* Build the jobs named by `jobs=` (their models, topics, entity state), finish the
 * declarations, resolve the input topics' record types. NULL + errstr on a configuration
 * error. The store comes later (it needs the finished declarations): rf_engine_set_store. */
rf_engine_t *rf_engine_new(const struct rf_engine_deps *deps, char *errstr, size_t errstr_size);
void rf_engine_set_store(rf_engine_t *e, rf_store_t *store);
void rf_engine_destroy(rf_engine_t *e); /* after rf_engine_close's callback */

/* One job's part of a hot reload. */
struct rf_reload_result {
    const char *job;
    int skipped;      /* the job has no reload */
    int ok;           /* every model file of the job loaded and now serves */
    char serving[512]; /* what serves after the swap (the job's words) */
    char error[1024];  /* the files that failed and why; their running models stay */
};
typedef void (*rf_engine_reload_cb)(rf_engine_t *e, const struct rf_reload_result *res, int n,
                                    void *arg);

/*
 * Hot reload (SIGHUP): every job that has one (job.h reload_*) loads, validates and warms up
 * its model files again on libuv's threadpool while the engine keeps serving; then, on the
 * loop and so between two batches, what loaded is swapped in and serves from the next batch
 * on, and a file that failed leaves its running model in place. cb reports per job (not
 * called when the engine stops first). 0, RF_E_BUSY while one is in progress, RF_E_CLOSED
 * when stopping.
 */
int rf_engine_reload(rf_engine_t *e, rf_engine_reload_cb cb, void *arg);

/* For each assigned partition: its consumer lag — the broker's high watermark as of the last
 * fetch minus the next offset to complete, -1 before both are known — and whether it is
 * paused (a revocation draining it). Loop thread; no request to the broker. */
typedef void (*rf_engine_part_fn)(void *arg, const char *topic, int32_t partition, int64_t lag,
                                  int paused);
void rf_engine_each_partition(rf_engine_t *e, rf_engine_part_fn fn, void *arg);

/* The models the jobs serve (job.h rf_model_info), at most max; returns how many. */
int rf_engine_models(const rf_engine_t *e, struct rf_model_info *out, int max);

/* Take messages from the consumer queue until it is empty or a limit is reached. */
void rf_engine_drain(rf_engine_t *e);

/* Serve producer events (delivery reports) until none is left. */
void rf_engine_serve_producer(rf_engine_t *e);

/* The store's callbacks, wired by the daemon. */
void rf_engine_on_fetched(rf_engine_t *e, int status);
void rf_engine_on_log_fetched(rf_engine_t *e, int status);
void rf_engine_on_flushed(rf_engine_t *e, uint64_t gen);

/* The group committed `offset` (the next to consume) for (topic, partition): the journal
 * below it is no longer needed. */
void rf_engine_committed(rf_engine_t *e, const char *topic, int32_t partition, int64_t offset);
/* The metadata every commit carries from now on (the Redis epoch: "rf.epoch=<id>"). */
void rf_engine_set_commit_metadata(rf_engine_t *e, const char *metadata);

/* The stored offsets (+1) of the assigned partitions (only those in `only`, unless NULL), with
 * the commit metadata: a list for rd_kafka_commit (the caller destroys it), or NULL when none
 * is stored. Every commit goes through it, so every commit says which Redis it goes with. */
rd_kafka_topic_partition_list_t *rf_engine_commit_list(rf_engine_t *e,
                                                       const rd_kafka_topic_partition_list_t *only);

/* The final commit succeeded: prune every assigned partition's journal below what it stored. */
void rf_engine_prune_committed(rf_engine_t *e);

/*
 * Exactly-once mode (deps.txn): a transaction holds the outputs and dead letters of a set of
 * inputs and, when it commits, their offsets. To make both the same set, ending one first
 * quiesces: nothing more is taken until every event taken is complete; then the offsets
 * stored (all of them, by then) go into the transaction, it commits on a worker (txn.h), the
 * journal below them is pruned, and taking resumes in the next transaction. An output that
 * fails inside a transaction dooms it: it is aborted instead, and the consumer rewinds to
 * where it began; those inputs come back as replays (their state is written), and the
 * journal gives them their first outputs, in the next transaction. A revocation ends the
 * transaction before it lets go; a lost assignment dooms it.
 */
/* The commit timer's tick: end the transaction if anything was taken since the last. */
void rf_engine_txn_tick(rf_engine_t *e);
/* The final stop (nothing in flight): end the transaction here and now (commit, or abort if
 * it is doomed or the engine failed), without beginning another; the journal is pruned
 * after a commit. Returns an enum rf_txn_result; msg says what happened. */
int rf_engine_txn_final(rf_engine_t *e, uint64_t deadline_ns, char *msg, size_t msg_size);

/* The producer's delivery report callback (opaque = the engine). */
void rf_engine_dr_cb(rd_kafka_t *rkp, const rd_kafka_message_t *rkm, void *opaque);

/* The consumer's rebalance callback (opaque = the engine). */
void rf_engine_rebalance_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                            rd_kafka_topic_partition_list_t *parts, void *opaque);

/* A revocation deferred until its partitions drain: finish it now (before the final commit). */
void rf_engine_settle_revoke(rf_engine_t *e);

/* librdkafka's statistics said the group's join state is (not) steady. */
void rf_engine_group_state(rf_engine_t *e, int steady);

/* Whether a commit may be sent now (offsets.h's policy). */
int rf_engine_may_commit(const rf_engine_t *e);

/* Stop taking messages; in-flight events still complete. */
void rf_engine_stop(rf_engine_t *e);

int rf_engine_assigned(const rf_engine_t *e);
/* Assignment callbacks so far, one of 0 partitions included (the member has joined). */
uint64_t rf_engine_assignments(const rf_engine_t *e);
/* Events in flight, revocations whose commit and unassign are still to come, and a
 * transaction being ended. */
int rf_engine_inflight(const rf_engine_t *e);
/* Stop for good, now: nothing in flight is waited for (the daemon's call when Redis has lost
 * its data: writing on would mix old and new). */
void rf_engine_fail(rf_engine_t *e);

/* 1 after a fatal error (fatal producer error, an output that can never be produced). */
int rf_engine_failed(const rf_engine_t *e);

/* Print notable outputs (outputs.print=stdout) from now on, or stop printing them: the demo
 * holds its history's outputs back. */
void rf_engine_set_print(rf_engine_t *e, int on);

/* Let the printed lines drain (at most 5 s) and stop the printing thread: before anything
 * else goes to stdout at exit. Lines dropped because stdout did not keep up are then in
 * metrics.print_dropped. */
void rf_engine_close_print(rf_engine_t *e);

/* The enabled jobs' names, comma-separated (borrowed). */
const char *rf_engine_jobs(const rf_engine_t *e);

/* Close the engine's handles; cb(arg) when closed. */
void rf_engine_close(rf_engine_t *e, void (*cb)(void *arg), void *arg);

/* A topic's framing (enum rf_framing) and, for plain framing, the record type id its messages
 * are, from input.topics and input.framing: the engine's rule, which --replay shares. */
void rf_engine_topic_type(const struct rf_conf *conf, const rf_schemas_t *schemas,
                          const char *topic, int *framing, int32_t *type_id);

#endif
