/*
 * epoch.h — noticing a Redis that lost its data (README, "Redis durability").
 *
 * Owns this process's view of the Redis epoch: the random id in "<prefix>:epoch" (store.h,
 * rf_store_epoch), which every offset commit carries as its metadata ("rf.epoch=<id>",
 * engine.h). Kafka keeps commits durably; so when the group's committed offsets name an epoch
 * that Redis no longer holds, Redis lost what riskflowd wrote under it (restarted without
 * persistence, flushed, failed over to a replica that never had it), and scoring on would
 * read empty states as if they were true. Checked at start, before subscribing (Redis's
 * marker, then the group's committed offsets of every input partition, read by a worker
 * thread: rd_kafka_committed blocks), and every check_ms while running (the marker alone).
 * Loop thread only, apart from that worker.
 */
#ifndef RISKFLOW_EPOCH_H
#define RISKFLOW_EPOCH_H

#include <librdkafka/rdkafka.h>
#include <uv.h>

#include "riskflow/conf.h"
#include "riskflow/store.h"

typedef struct rf_epoch_s rf_epoch_t;

/* The verdict. lost 0: the epoch is known and consistent (rf_epoch_metadata is what commits
 * carry from now on). lost 1: Redis lost its data; msg says what was found (borrowed for the
 * call). Called once after rf_epoch_start, then only when a periodic check finds the marker
 * gone or changed. */
typedef void (*rf_epoch_cb)(rf_epoch_t *ep, int lost, const char *msg, void *arg);

/* store, rk (the consumer, not yet subscribed) and conf are borrowed. NULL out of memory. */
rf_epoch_t *rf_epoch_new(uv_loop_t *loop, rf_store_t *store, rd_kafka_t *rk,
                         const struct rf_conf *conf, rf_epoch_cb cb, void *arg);

/* Read (or create) the marker, then compare the group's commits with it; cb when done. */
void rf_epoch_start(rf_epoch_t *ep);

/* Read the marker again (from a timer): cb(lost = 1) if it is gone or another. */
void rf_epoch_check(rf_epoch_t *ep);

/* Adopt whatever Redis holds now (after an operator chose redis.on.data.loss=continue): write
 * a new marker if there is none; cb(lost = 0) once it is known. */
void rf_epoch_adopt(rf_epoch_t *ep);

/* "rf.epoch=<id>", or "" before the epoch is known. */
const char *rf_epoch_metadata(const rf_epoch_t *ep);

/* After the loop has run out (no check in flight). Accepts NULL. */
void rf_epoch_destroy(rf_epoch_t *ep);

#endif
