/*
 * store.h — the customer-state store: a bounded local cache in front of Redis.
 *
 * Owns every customer state the daemon holds, the Redis client (redis.h) and the flush
 * machinery. Laid out as design.md §10 says the measurements demand: one compact binary value
 * per customer (features.h) with its last applied offset inside; read only on a cache miss,
 * with one MGET for all the misses of a batch; written back by pipelined SETs in coalesced
 * flushes (a customer touched by 40 events since the last flush is written once).
 * With backend "memory" there is no Redis: the cache is the store and is never evicted.
 *
 * Durability is tracked by flush generations. Events applied while generation G is open are
 * durable once a flush covering G has succeeded; flushed_cb(G) says so. A failed fetch or
 * flush is retried by the store itself (the entries stay dirty, the batch keeps waiting), so
 * Redis being down means backpressure, never lost or wrong state.
 *
 * Entries are named by index; an index stays valid while the entry is pinned. Pointers from
 * rf_store_state() are valid only until the next rf_store_lookup() (the pool may grow).
 * Loop thread only; allocates only when the cache grows, never per event once warm.
 */
#ifndef RISKFLOW_STORE_H
#define RISKFLOW_STORE_H

#include <stdint.h>
#include <uv.h>

#include "riskflow/features.h"
#include "riskflow/metrics.h"

typedef struct rf_store_s rf_store_t;

enum rf_store_backend { RF_STORE_MEMORY, RF_STORE_REDIS };

struct rf_store_conf {
    enum rf_store_backend backend;
    const char *redis_host;
    int redis_port;
    unsigned connect_timeout_ms;
    unsigned command_timeout_ms;
    const char *key_prefix; /* at most 32 bytes */
    int cache_max;
};

/* Generation `gen` and all before it are durable. */
typedef void (*rf_store_flushed_cb)(rf_store_t *store, uint64_t gen, void *arg);
/* Every entry that was pending a fetch is loaded (status 0), or the store is closing
 * (RF_E_CLOSED). */
typedef void (*rf_store_fetched_cb)(rf_store_t *store, int status, void *arg);
/* Redis connection up (0) or down (< 0): for logs and readiness. */
typedef void (*rf_store_state_cb)(rf_store_t *store, int status, void *arg);

struct rf_store_cbs {
    rf_store_flushed_cb flushed;
    rf_store_fetched_cb fetched;
    rf_store_state_cb state;
    void *arg;
};

/* metrics is borrowed (the daemon's) and must outlive the store. */
rf_store_t *rf_store_new(uv_loop_t *loop, const struct rf_store_conf *conf,
                         const struct rf_store_cbs *cbs, struct rf_metrics *metrics,
                         char *errstr, size_t errstr_size);

/*
 * Find or create the entry for a customer id and pin it. *idx gets its index.
 * Returns 1 when the state is loaded, 0 when it must be fetched first (rf_store_fetch), or
 * RF_E_INVAL for an id that does not fit a key. Out of memory aborts.
 * A clean entry loaded before the last rf_store_new_epoch() is fetched again.
 */
int rf_store_lookup(rf_store_t *store, const char *customer_id, int32_t *idx);

/* Unpin an entry looked up earlier (it may be evicted again once clean). */
void rf_store_unpin(rf_store_t *store, int32_t idx);

/* The state of a loaded entry (borrowed; see the note on pointers above). */
struct rf_cust_state *rf_store_state(rf_store_t *store, int32_t idx);

/* Fetch every entry waiting for its state. Returns 1 when there was nothing to fetch
 * (no callback), 0 when fetched_cb will be called, or a negative RF_E_*. One fetch at a time:
 * RF_E_BUSY if one is in flight. */
int rf_store_fetch(rf_store_t *store);

/* Record that a loaded entry changed; returns the open generation its change belongs to. */
uint64_t rf_store_mark_dirty(rf_store_t *store, int32_t idx);

/* Start a flush of the dirty entries if none is in flight (else one starts when it ends).
 * With the memory backend flushed_cb is called before this returns. */
void rf_store_flush(rf_store_t *store);

/* 1 when nothing is dirty, no flush or fetch is in flight. */
int rf_store_idle(const rf_store_t *store);

/* A rebalance happened: from now on, a clean cached state loaded before it is read from
 * Redis again on its next use (another member may have written it meanwhile). */
void rf_store_new_epoch(rf_store_t *store);

/* Drop every clean, unpinned entry (after a rebalance the cached copies may be stale). */
void rf_store_drop_clean(rf_store_t *store);

/* Text of the last Redis connection failure ("" if none, or the memory backend). Borrowed. */
const char *rf_store_errstr(const rf_store_t *store);

/* Entries in the cache. */
int rf_store_size(const rf_store_t *store);

/* Close Redis and every handle; close_cb runs when done and the memory is freed. Pending
 * fetch gets fetched_cb(RF_E_CLOSED); unflushed state is lost (the offsets of its events were
 * not committed, so they are redelivered). */
void rf_store_close(rf_store_t *store, void (*close_cb)(void *arg), void *arg);

#endif
