/*
 * offsets.h — which input offsets are safe to store, and when a commit may go out.
 *
 * Owns the per-partition FIFOs of in-flight events (by event slot, 0..slots-1) that turn
 * out-of-order completions into a contiguous watermark per partition (design.md §3), each
 * partition's assignment state and generation, and the commit policy: no commit between a
 * cooperative revoke and the assign that ends the rebalance's second round (librdkafka before
 * 2.10 loses the assignment when a commit lands there, its issue #4059), nor while the group's
 * statistics show it is not steady.
 * No librdkafka types and no I/O: the engine makes the librdkafka calls this module decides
 * on, so all of it is unit-tested alone. Loop thread only; allocates at creation and when a new
 * partition is first seen, never per event.
 */
#ifndef RISKFLOW_OFFSETS_H
#define RISKFLOW_OFFSETS_H

#include <stdint.h>

typedef struct rf_offsets_s rf_offsets_t;

struct rf_part {
    char topic[256];
    uint32_t topic_id; /* the caller's: the replay guard's source id of the topic */
    char slice[24];    /* the caller's: the partition's field in sliced kinds' hashes */
    int32_t partition;
    const void *seen;  /* the consumer's topic handle last seen, to skip strcmp */
    void *handle;      /* the engine's own per-partition data (its topic handle) */
    int framing;       /* enum rf_framing of the topic */
    int32_t type_id;   /* plain framing: the topic's record type's schema id */
    int assigned;
    uint32_t generation; /* bumped at each assign: older events store no offset */
    int64_t stored;      /* highest offset stored since the assign, -1: none */
    int32_t head, tail;  /* FIFO of slots */
    int inflight;        /* slots in the FIFO not yet done */
    int64_t pruned;      /* the caller's: its journal is pruned below this offset */
    int64_t txn_base;    /* the caller's, exactly-once: the first offset taken since the last
                          * transaction committed (where an abort rewinds to), -1: none */
};

rf_offsets_t *rf_offsets_new(int slots);
void rf_offsets_destroy(rf_offsets_t *o); /* accepts NULL */

/* The index of (topic, partition), created on first sight (not assigned). Pointers from
 * rf_offsets_part_at are valid until the next call that may create one. seen: an opaque topic
 * handle that identifies the topic faster than its name (may be NULL). */
int rf_offsets_find(rf_offsets_t *o, const void *seen, const char *topic, int32_t partition);
struct rf_part *rf_offsets_part_at(rf_offsets_t *o, int part);
int rf_offsets_n_parts(const rf_offsets_t *o);

/* Append slot to its partition's FIFO as an event at `offset`. */
void rf_offsets_take(rf_offsets_t *o, int part, int32_t slot, int64_t offset);

/*
 * The event in slot is complete. Every complete event at the head of its partition's FIFO
 * leaves it: release(slot, arg) for each, in offset order. Returns the offset to store (the
 * last one released) when it may be stored — the partition is assigned, the events are of
 * its current generation and it moves the watermark forward — else -1. *part gets the
 * partition. The caller stores it and then calls rf_offsets_stored().
 */
int64_t rf_offsets_done(rf_offsets_t *o, int32_t slot, int *part,
                        void (*release)(int32_t slot, void *arg), void *arg);
void rf_offsets_stored(rf_offsets_t *o, int part, int64_t offset);

/* Events of the partition not yet complete (O(1)). */
int rf_offsets_inflight(const rf_offsets_t *o, int part);

/* Assignment: a fresh generation, nothing stored yet. */
void rf_offsets_assign(rf_offsets_t *o, int part);
void rf_offsets_revoke(rf_offsets_t *o, int part);
int rf_offsets_n_assigned(const rf_offsets_t *o);

/* ---- commit policy ---- */

/* A cooperative revoke was let go (its commit sent): commits wait for the assign callbacks
 * that end this rebalance (two rounds with librdkafka 2.0.2). now_ms: the loop's clock. */
void rf_offsets_rebalance_begin(rf_offsets_t *o, uint64_t now_ms);
/* An assign callback (even an empty one) ended a rebalance round. */
void rf_offsets_rebalance_round(rf_offsets_t *o);
/* 1 while a cooperative rebalance is under way (bounded: after a minute commits resume). */
int rf_offsets_rebalancing(const rf_offsets_t *o, uint64_t now_ms);
/* The group's join state from librdkafka's statistics: steady or not. */
void rf_offsets_group_state(rf_offsets_t *o, int steady);
/* Whether a commit may be sent now. */
int rf_offsets_may_commit(const rf_offsets_t *o, uint64_t now_ms);

#endif
