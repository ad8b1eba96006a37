/*
 * store.h — entity values: a bounded local cache per entity kind in front of Redis.
 *
 * Owns every entity value the daemon holds (each kind's values are fixed-size, laid out by
 * decl.h, kept in memory in their stored form), the Redis client (redis.h) and the write-back
 * machinery. Laid out as design.md §10 says the measurements demand: one compact binary value
 * per entity with its replay watermarks inside; read only on a cache miss, with one MGET for
 * all the misses of a batch, every kind together; written back in coalesced flushes.
 *
 * Generations (docs/ENGINE.md §4). The engine closes a generation after each batch: the store
 * snapshots every value the batch changed. A generation is written to Redis only once the
 * engine releases it (the engine releases each as it closes), and a flush writes, for each
 * entity, its newest released snapshot inside MULTI/EXEC, so Redis holds all of a flush or
 * none of it. flushed_cb(G): generation G and every one before it are durable. A failed fetch
 * or flush is retried by the store itself (backoff), so Redis being down means backpressure,
 * never lost or wrong state.
 * The replay journal (journal.h) rides along: the engine adds each batch's journal chunks to
 * the generation it just closed, and a flush writes them in the same MULTI/EXEC as the
 * values, into one sorted set per input partition ("<prefix>:log:{<topic>:<partition>}",
 * each chunk scored by its last offset). So a value in Redis always comes with the outputs of
 * the events it holds, and a redelivered event finds its first outputs there. Chunks below a
 * partition's committed offset are pruned (rf_store_prune_log): the journal stays bounded by
 * the uncommitted stretch of each partition.
 * With backend "memory" there is no Redis: the cache is the store, never evicted, and a
 * released generation is durable at once.
 *
 * Sliced kinds (decl.h rf_decl_sliced; FEATURES.md §2.1). An entity written from every input
 * partition (a terminal, when payments are keyed by customer) keeps one slice per partition:
 * an entry of its own (rf_store_lookup_slice), one writer (whoever owns the partition), with
 * its own replay watermark, stored as field "<topic id>:<partition>" of one Redis hash at the
 * entity's key (HSET in the flush's MULTI; the ttl is the hash's, PEXPIRE). A fetch reads the
 * whole hash (HGETALL): the own field is the value, the others are added up
 * (rf_feat_merge) into a second buffer behind it (rf_store_others) — read again, at a use, once
 * they are store.slice.refresh.ms old. The others are what Redis holds, so a partition's slice
 * counts there once its generation is written: features over windows that end a label delay
 * back do not see the lag. With the memory backend there are no slices: one value per entity,
 * which one process is the only writer of.
 *
 * Something at an entity's key that is not a value of this layout (another version or
 * declaration, garbage, a key of another Redis type: EXISTS beside the MGET tells a hash from
 * a missing key) is never misread and, by default (foreign_stop), never written over: the
 * entry is "foreign" (rf_store_foreign) until an operator fixes or deletes the key; it is read
 * again on every use. Without foreign_stop the entity starts fresh over it.
 * Entries are named by a ref (kind and index); a value pointer from rf_store_value() stays
 * valid while the entry is pinned (entries never move). Loop thread only; allocates only when
 * the cache grows, never per event once warm.
 */
#ifndef RISKFLOW_STORE_H
#define RISKFLOW_STORE_H

#include <stdint.h>
#include <uv.h>

#include "riskflow/decl.h"
#include "riskflow/metrics.h"

typedef struct rf_store_s rf_store_t;

enum rf_store_backend { RF_STORE_MEMORY, RF_STORE_REDIS };

#define RF_STORE_PREFIX_MAX 32

struct rf_store_conf {
    enum rf_store_backend backend;
    const char *redis_host;
    int redis_port;
    const char *redis_socket;   /* NULL: TCP */
    const char *redis_cluster;  /* "host:port,...": the seeds of a Redis Cluster, used instead
                                 * of redis_host/port (NULL or "": one server). In a cluster
                                 * a flush is three steps, each acknowledged before the next:
                                 * the journal chunks, the values, then the values of kinds
                                 * that keep previous values or job state
                                 * (rf_decl_written_last; a transaction spans one slot only). */
    const char *redis_user;     /* NULL: the default user */
    const char *redis_password; /* NULL: no AUTH (copied by the client) */
    unsigned connect_timeout_ms;
    unsigned command_timeout_ms;
    const char *key_prefix; /* at most RF_STORE_PREFIX_MAX bytes */
    int cache_max;          /* entries per kind */
    int foreign_stop;       /* store.on.foreign=stop: set foreign values aside, never replace */
    unsigned slice_refresh_ms; /* sliced kinds: read the other slices again after this long */
};

/* Generation `gen` and all before it are durable. */
typedef void (*rf_store_flushed_cb)(rf_store_t *store, uint64_t gen, void *arg);
/* Every entry that was pending a fetch is loaded (status 0), or the store is closing
 * (RF_E_CLOSED). */
typedef void (*rf_store_fetched_cb)(rf_store_t *store, int status, void *arg);
/* Redis connection up (0) or down (< 0): for logs and readiness. */
typedef void (*rf_store_state_cb)(rf_store_t *store, int status, void *arg);
/* A stored value that is not a value of this declaration's layout (another version, another
 * declaration, garbage, another Redis type): set aside (foreign_stop) or the entity starts
 * fresh. key: borrowed, for the log. */
typedef void (*rf_store_mismatch_cb)(rf_store_t *store, const char *key, void *arg);

/* The journal read asked for by rf_store_fetch_log is in (status 0: rf_store_log_chunk has
 * the chunks), or the store is closing (RF_E_CLOSED). */
typedef void (*rf_store_log_cb)(rf_store_t *store, int status, void *arg);

struct rf_store_cbs {
    rf_store_flushed_cb flushed;
    rf_store_fetched_cb fetched;
    rf_store_state_cb state;
    rf_store_mismatch_cb mismatch;
    rf_store_log_cb log_fetched;
    void *arg;
};

/* decl (finished) and metrics are borrowed and must outlive the store. */
rf_store_t *rf_store_new(uv_loop_t *loop, const struct rf_store_conf *conf, const rf_decl_t *decl,
                         const struct rf_store_cbs *cbs, struct rf_metrics *metrics,
                         char *errstr, size_t errstr_size);

/* A ref: the kind in the top 4 bits, the entry's index in the other 28. */
#define RF_STORE_REF(kind, idx) (((uint32_t)(kind) << 28) | (uint32_t)(idx))

/*
 * Find or create the entry for (kind, id) and pin it; *ref names it. Returns 1 when its value
 * is loaded, 0 when it must be fetched first (rf_store_fetch), RF_E_INVAL for an empty id or
 * one that does not fit a key. Out of memory aborts. A clean entry loaded before the last
 * rf_store_new_epoch() is fetched again.
 */
int rf_store_lookup(rf_store_t *store, int kind, const char *id, size_t id_len, uint32_t *ref);

/* The slice field of (topic id, partition): "%08x:%d". Returns its length. */
#define RF_STORE_SLICE_MAX 24
int rf_store_slice_name(uint32_t topic_id, int32_t partition, char buf[RF_STORE_SLICE_MAX]);

/* rf_store_lookup for a kind that may be sliced: slice (a NUL-terminated field from
 * rf_store_slice_name, borrowed) names the slice, and is ignored for a kind that is not sliced
 * or with the memory backend. A sliced entry loaded longer ago than slice_refresh_ms than its
 * others were read returns 0 too: the next fetch reads them again (its value stays). */
int rf_store_lookup_slice(rf_store_t *store, int kind, const char *id, size_t id_len,
                          const char *slice, uint32_t *ref);

/* A slice's others: the sum of the entity's other slices as last read (a value of its kind),
 * or NULL when there are none (or the kind is not sliced). Valid while the entry is pinned. */
const uint8_t *rf_store_others(const rf_store_t *store, uint32_t ref);

/* 1 when the entry's key holds a foreign value (foreign_stop): its value must not be used,
 * and nothing may change it. */
int rf_store_foreign(const rf_store_t *store, uint32_t ref);

/* The value of an entry (its kind's size; valid once loaded, stable while pinned). */
uint8_t *rf_store_value(rf_store_t *store, uint32_t ref);

/* The Redis key of an entry (borrowed). */
const char *rf_store_key(const rf_store_t *store, uint32_t ref);

/* Unpin an entry looked up earlier (it may be evicted again once clean and written). */
void rf_store_unpin(rf_store_t *store, uint32_t ref);

/* Fetch every entry waiting for its value: one MGET. Returns 1 when there was nothing to
 * fetch (no callback), 0 when fetched_cb will be called, or a negative RF_E_*. One fetch at
 * a time: RF_E_BUSY if one is in flight. */
int rf_store_fetch(rf_store_t *store);

/* A loaded entry changed in the current batch. */
void rf_store_mark_dirty(rf_store_t *store, uint32_t ref);

/* End of a batch: snapshot every entry changed since the last call into a new generation and
 * return its number (1, 2, ...). Generations are closed even when nothing changed. */
uint64_t rf_store_close_gen(rf_store_t *store);

/* Add a journal chunk (bytes copied) of input partition (topic, partition), whose last entry
 * is at offset `last`, to the generation rf_store_close_gen just closed (before it is
 * released). 0, or RF_E_INVAL (no such generation, or a topic name that does not fit a key).
 * The memory backend keeps nothing: it never restarts from its own state. */
int rf_store_add_log(rf_store_t *store, const char *topic, int32_t partition, int64_t last,
                     const void *chunk, size_t len);

/* 1 when the store keeps a journal (Redis), 0 for memory. */
int rf_store_has_log(const rf_store_t *store);

/* 1 when a flush can be cut short with some of its values written and others not (a Redis
 * Cluster: written slot by slot), so a replay may be held by some of its entities only. */
int rf_store_partial_flushes(const rf_store_t *store);

/* A cluster's redirects followed so far (MOVED, ASK); 0 and 0 with one server. */
void rf_store_redirects(const rf_store_t *store, uint64_t *moved, uint64_t *ask);

/* Ask for the journal chunks of (topic, partition) that may hold offsets lo..hi (the next
 * rf_store_fetch_log reads them). RF_E_BUSY while a read is in flight. */
int rf_store_want_log(rf_store_t *store, const char *topic, int32_t partition, int64_t lo,
                      int64_t hi);

/* Read every journal range asked for: one ZRANGEBYSCORE each, pipelined; failures are retried
 * with backoff. 1 when nothing was asked (no callback), 0 when log_fetched will be called,
 * RF_E_BUSY or RF_E_CLOSED. */
int rf_store_fetch_log(rf_store_t *store);

/* The chunks the last read returned (borrowed until the next read), in score order per
 * request; *req: which request (0.., in rf_store_want_log order) the chunk answers. */
int rf_store_log_chunks(const rf_store_t *store);
const uint8_t *rf_store_log_chunk(const rf_store_t *store, int k, size_t *len, int *req);

/* The epoch marker: "<prefix>:epoch" holds a random id, written once, the first time any
 * riskflowd meets this Redis (and prefix). A Redis that lost its data (restarted without
 * persistence, flushed, failed over to a replica that never saw it) no longer holds it, or
 * holds another: the daemon compares it with the epoch its group's commits carry (README,
 * "Redis durability"). epoch: the marker's value, NULL when there is none; created: this call
 * wrote it. status RF_E_CLOSED when the store closes first. */
typedef void (*rf_store_epoch_cb)(rf_store_t *store, int status, const char *epoch, int created,
                                  void *arg);

/* Read the marker, writing `fresh` first if there is none (SET NX; fresh NULL: only read).
 * Retried with backoff while Redis is down. 0 (cb will run), 1 with the memory backend (no
 * marker: nothing survives it anyway), RF_E_BUSY, RF_E_CLOSED or RF_E_INVAL (fresh over 63
 * bytes). */
int rf_store_epoch(rf_store_t *store, const char *fresh, rf_store_epoch_cb cb, void *arg);

/* A PING's answer: status 0 (PONG) with its round trip, or a negative RF_E_* (no
 * connection, a timeout, another reply). Never called once the store is closing. */
typedef void (*rf_store_ping_cb)(rf_store_t *store, int status, uint64_t rtt_us, void *arg);

/* Ask Redis whether it answers (readiness, the round-trip metric). 0 (cb will run), 1 with
 * the memory backend (nothing to ask), RF_E_BUSY while one is in flight, RF_E_CONN while not
 * connected, RF_E_CLOSED. */
int rf_store_ping(rf_store_t *store, rf_store_ping_cb cb, void *arg);

/* Offsets below `below` on (topic, partition) are committed: drop the journal chunks that
 * hold only those. Fire and forget (a failure is counted; the next commit prunes again). */
void rf_store_prune_log(rf_store_t *store, const char *topic, int32_t partition, int64_t below);

/* Generations up to `gen` may be written (their events' outputs are acknowledged); `gen` is
 * capped at the last closed one. flushed_cb may run before this returns: always with the
 * memory backend, and with Redis when every released generation is empty. */
void rf_store_release(rf_store_t *store, uint64_t gen);

/* 1 when nothing is waiting to be written and no flush or fetch is in flight. */
int rf_store_idle(const rf_store_t *store);

/* A rebalance happened: from now on, a clean cached value loaded before it is read from
 * Redis again on its next use (another member may have written it meanwhile). */
void rf_store_new_epoch(rf_store_t *store);

/* Drop every clean, unpinned, written entry (after a rebalance the cached copies may be
 * stale). */
void rf_store_drop_clean(rf_store_t *store);

/* Redis commands sent and not yet answered (0 for memory). */
int rf_store_pending(const rf_store_t *store);

/* Text of the last Redis connection failure ("" if none, or the memory backend). Borrowed. */
const char *rf_store_errstr(const rf_store_t *store);

/* Entries in the cache, all kinds. */
int rf_store_size(const rf_store_t *store);

/* Close Redis and every handle; close_cb runs when done and the memory is freed. A pending
 * fetch gets fetched_cb(RF_E_CLOSED); unwritten generations are lost (the offsets of their
 * events were not committed, so they are redelivered). */
void rf_store_close(rf_store_t *store, void (*close_cb)(void *arg), void *arg);

#endif
