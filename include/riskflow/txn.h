/*
 * txn.h — the Kafka transactions of exactly-once mode (processing.guarantee=exactly-once).
 *
 * Owns the transactional producer's transaction life cycle: initialising it (which fences any
 * earlier producer with our transactional.id and aborts the transaction it left open), and
 * ending each transaction: the consumed input offsets sent to it with the consumer's group
 * metadata (so a member that a rebalance has replaced cannot commit: KIP-447), committed,
 * and the next one begun; or aborted, when an output of it failed.
 *
 * librdkafka's transactional calls block on broker round trips, so they run on libuv's
 * threadpool, one at a time. While one runs the caller produces nothing and has nothing
 * outstanding (the engine quiesces first): librdkafka forbids producing during a commit, and
 * the flush inside rd_kafka_commit_transaction then has no delivery report to serve on the
 * worker thread (only log lines, whose callback is thread-safe).
 *
 * Errors are handled as librdkafka documents them: a retriable one is retried (the same
 * offsets, the same group metadata) until it succeeds or the caller cancels; one that
 * requires an abort aborts the transaction and reports RF_TXN_ABORTED, and the caller
 * rewinds its inputs to the last committed offsets; any other (fenced by a newer instance
 * with our transactional.id, a transaction timed out by the coordinator that librdkafka
 * cannot recover, authorisation) is fatal: the daemon stops, and its successor's init aborts
 * what was left open.
 * Loop thread only, apart from the worker it starts.
 */
#ifndef RISKFLOW_TXN_H
#define RISKFLOW_TXN_H

#include <librdkafka/rdkafka.h>
#include <stddef.h>
#include <uv.h>

typedef struct rf_txn_s rf_txn_t;

enum rf_txn_result {
    RF_TXN_COMMITTED = 0, /* committed (or, for an init, ready); the next one begun */
    RF_TXN_ABORTED = 1,   /* aborted, its outputs and offsets void; the next one begun */
    RF_TXN_FATAL = -1,    /* nothing more can be produced: stop */
};

/* result: enum rf_txn_result; msg: what happened (borrowed for the call). */
typedef void (*rf_txn_cb)(rf_txn_t *t, int result, const char *msg, void *arg);

/* rkp: the transactional producer, rk: the consumer whose offsets go into the transactions
 * (both borrowed). NULL out of memory. */
rf_txn_t *rf_txn_new(uv_loop_t *loop, rd_kafka_t *rkp, rd_kafka_t *rk);
/* Once no operation is under way (rf_txn_busy 0). Accepts NULL. */
void rf_txn_destroy(rf_txn_t *t);

/* Initialise transactions and begin the first, on a worker; cb on the loop. RF_E_BUSY when an
 * operation is under way. */
int rf_txn_init(rf_txn_t *t, rf_txn_cb cb, void *arg);

/* End the current transaction on a worker: commit it with `offsets` (the next offset to
 * consume per partition; NULL when nothing was consumed), or abort it (abort_why: the
 * caller's reason, NULL to commit; librdkafka may also say it must) and seek the consumer to
 * `rewind` (the offsets the aborted transaction started from; the seek waits until nothing
 * fetched before it can be consumed); then begin the next. Both lists are taken (either may
 * be NULL); abort_why must live until cb. cb on the loop. RF_E_BUSY when an operation is
 * under way. */
int rf_txn_end(rf_txn_t *t, rd_kafka_topic_partition_list_t *offsets,
               rd_kafka_topic_partition_list_t *rewind, const char *abort_why, rf_txn_cb cb,
               void *arg);

/* The same, here and now, with no rewind and without beginning another: the final stop,
 * where the loop may block. Retries end at deadline_ns (uv_hrtime). Returns an enum rf_txn_result, msg filled. */
int rf_txn_end_sync(rf_txn_t *t, rd_kafka_topic_partition_list_t *offsets,
                    const char *abort_why, uint64_t deadline_ns, char *msg, size_t msg_size);

/* 1 while an operation runs on a worker. */
int rf_txn_busy(const rf_txn_t *t);

/* Make a running operation give up at its next retry (the stop's deadline passed); it then
 * reports RF_TXN_FATAL. */
void rf_txn_cancel(rf_txn_t *t);

#endif
