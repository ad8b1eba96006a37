/*
 * store.c — customer states: the local cache, the Redis reads on a miss and the coalesced
 * write-back flushes. See store.h for the contract.
 *
 * Loop thread only. The cache is a pool of entries addressed by index (so it can grow by
 * realloc without dangling references in the pipeline), a chained hash index and an LRU list.
 * Once the pool has grown to the working set nothing here allocates: key strings, packed
 * values and hiredis argv arrays live in buffers that only ever grow.
 * Must never: evict a dirty, pinned or loading entry; report a generation durable before
 * every SET of a flush covering it has been acknowledged.
 */
#include "riskflow/store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "riskflow/err.h"
#include "riskflow/redis.h"

#define KEY_MAX 128
#define PREFIX_MAX 32
#define RETRY_MIN_MS 50
#define RETRY_MAX_MS 2000

enum { ST_READY, ST_NEW, ST_LOADING };

struct entry {
    char key[KEY_MAX]; /* "<prefix>:cust:{<id>}" */
    uint16_t key_len;
    uint8_t status;
    uint8_t dirty;
    uint32_t pins;
    uint32_t hash;
    uint32_t epoch; /* store epoch when the state was loaded: older ones may be stale */
    int32_t hnext; /* hash chain, or free list when unused */
    int32_t lru_prev, lru_next;
    struct rf_cust_state st;
};

/* A growable array of int32 indexes. */
struct ivec {
    int32_t *v;
    int n, cap;
};

struct rf_store_s {
    uv_loop_t *loop;
    enum rf_store_backend backend;
    struct rf_store_cbs cbs;
    struct rf_metrics *metrics;
    char prefix[PREFIX_MAX + 1];
    int cache_max;

    struct entry *pool;
    int pool_cap, used;
    int32_t free_head;
    int32_t *buckets;
    uint32_t nbuckets; /* power of two */
    int32_t lru_head, lru_tail; /* head = most recent */

    uint32_t epoch;      /* bumped at every rebalance (rf_store_new_epoch) */
    struct ivec dirty;   /* entries with dirty = 1 */
    struct ivec to_fetch; /* entries in ST_NEW */

    /* The fetch in flight: one MGET. */
    struct ivec fetching;
    int fetch_busy;
    int fetch_retry;

    /* The flush in flight: pipelined SETs of packed values. */
    struct ivec flushing;
    uint8_t *packed;
    int packed_cap;
    int flush_busy;
    int flush_waiting; /* replies still expected */
    int flush_failed;
    int flush_retry;
    uint64_t flush_covers;
    uint64_t gen_open;

    /* hiredis argv for MGET / SET, grown to the largest batch seen. */
    const char **argv;
    size_t *argvlen;
    int argv_cap;

    rf_redis_t *redis;
    uv_timer_t retry_timer;
    unsigned retry_ms;
    int closing;
    int closing_left;
    void (*close_cb)(void *);
    void *close_arg;
};

static int ivec_push(struct ivec *iv, int32_t x) {
    if (iv->n == iv->cap) {
        int cap = iv->cap ? iv->cap * 2 : 64;
        int32_t *v = realloc(iv->v, sizeof *v * (size_t)cap);
        if (!v)
            return RF_E_NOMEM;
        iv->v = v;
        iv->cap = cap;
    }
    iv->v[iv->n++] = x;
    return 0;
}

static uint32_t hash_id(const char *s, size_t n) {
    uint32_t h = 2166136261u; /* FNV-1a */
    for (size_t i = 0; i < n; i++) {
        h ^= (uint8_t)s[i];
        h *= 16777619u;
    }
    return h;
}

static void lru_unlink(rf_store_t *store, int32_t i) {
    struct entry *e = &store->pool[i];
    if (e->lru_prev >= 0)
        store->pool[e->lru_prev].lru_next = e->lru_next;
    else
        store->lru_head = e->lru_next;
    if (e->lru_next >= 0)
        store->pool[e->lru_next].lru_prev = e->lru_prev;
    else
        store->lru_tail = e->lru_prev;
    e->lru_prev = e->lru_next = -1;
}

static void lru_push_front(rf_store_t *store, int32_t i) {
    struct entry *e = &store->pool[i];
    e->lru_prev = -1;
    e->lru_next = store->lru_head;
    if (store->lru_head >= 0)
        store->pool[store->lru_head].lru_prev = i;
    store->lru_head = i;
    if (store->lru_tail < 0)
        store->lru_tail = i;
}

static int grow_buckets(rf_store_t *store, uint32_t n) {
    int32_t *b = malloc(sizeof *b * n);
    if (!b)
        return RF_E_NOMEM;
    for (uint32_t i = 0; i < n; i++)
        b[i] = -1;
    /* Rehash the live entries: those on the LRU list. */
    for (int32_t i = store->lru_head; i >= 0; i = store->pool[i].lru_next) {
        struct entry *e = &store->pool[i];
        uint32_t h = e->hash & (n - 1);
        e->hnext = b[h];
        b[h] = i;
    }
    free(store->buckets);
    store->buckets = b;
    store->nbuckets = n;
    return 0;
}

static int grow_pool(rf_store_t *store) {
    int cap = store->pool_cap ? store->pool_cap * 2 : 1024;
    struct entry *p = realloc(store->pool, sizeof *p * (size_t)cap);
    if (!p)
        return RF_E_NOMEM;
    store->pool = p;
    for (int i = cap - 1; i >= store->pool_cap; i--) {
        p[i].hnext = store->free_head;
        store->free_head = i;
    }
    store->pool_cap = cap;
    if ((uint32_t)cap * 2 > store->nbuckets)
        return grow_buckets(store, (uint32_t)cap * 2);
    return 0;
}

static void hash_remove(rf_store_t *store, int32_t i) {
    int32_t *pp = &store->buckets[store->pool[i].hash & (store->nbuckets - 1)];
    while (*pp != i)
        pp = &store->pool[*pp].hnext;
    *pp = store->pool[i].hnext;
}

/* Evict clean, unpinned, loaded entries from the cold end until under the cap. The scan is
 * bounded so a cache full of dirty entries costs little: it just stays over the cap until
 * the next flush. */
static void evict(rf_store_t *store) {
    int scanned = 0;
    int32_t i = store->lru_tail;
    while (store->used >= store->cache_max && i >= 0 && scanned < 64) {
        int32_t prev = store->pool[i].lru_prev;
        struct entry *e = &store->pool[i];
        if (!e->dirty && e->pins == 0 && e->status == ST_READY) {
            hash_remove(store, i);
            lru_unlink(store, i);
            e->hnext = store->free_head;
            store->free_head = i;
            store->used--;
        }
        scanned++;
        i = prev;
    }
}

int rf_store_lookup(rf_store_t *store, const char *id, int32_t *idx) {
    size_t idlen = strlen(id);
    size_t plen = strlen(store->prefix);
    if (plen + idlen + 9 > KEY_MAX - 1)
        return RF_E_INVAL;
    char key[KEY_MAX];
    memcpy(key, store->prefix, plen);
    memcpy(key + plen, ":cust:{", 7);
    memcpy(key + plen + 7, id, idlen);
    key[plen + 7 + idlen] = '}';
    size_t klen = plen + 8 + idlen;
    key[klen] = '\0';
    uint32_t h = hash_id(key, klen);

    if (store->nbuckets) {
        for (int32_t i = store->buckets[h & (store->nbuckets - 1)]; i >= 0;
             i = store->pool[i].hnext) {
            struct entry *e = &store->pool[i];
            if (e->hash == h && e->key_len == klen && memcmp(e->key, key, klen) == 0) {
                /* Loaded before the last rebalance and untouched since: another member may
                 * have changed it in Redis meanwhile, so read it again. A dirty or pinned
                 * entry holds our own unflushed events and stays (the stale-writer case). */
                if (store->backend == RF_STORE_REDIS && e->status == ST_READY &&
                    e->epoch != store->epoch && !e->dirty && e->pins == 0) {
                    e->status = ST_NEW;
                    if (ivec_push(&store->to_fetch, i) != 0)
                        abort();
                }
                e->epoch = store->epoch;
                e->pins++;
                lru_unlink(store, i);
                lru_push_front(store, i);
                *idx = i;
                return e->status == ST_READY;
            }
        }
    }
    if (store->backend == RF_STORE_REDIS && store->used >= store->cache_max)
        evict(store);
    if (store->free_head < 0 && grow_pool(store) != 0)
        abort(); /* like Redis: out of memory is not a state to run on in */
    int32_t i = store->free_head;
    struct entry *e = &store->pool[i];
    store->free_head = e->hnext;
    memcpy(e->key, key, klen + 1);
    e->key_len = (uint16_t)klen;
    e->hash = h;
    e->dirty = 0;
    e->pins = 1;
    e->epoch = store->epoch;
    rf_cust_state_init(&e->st);
    uint32_t b = h & (store->nbuckets - 1);
    e->hnext = store->buckets[b];
    store->buckets[b] = i;
    lru_push_front(store, i);
    store->used++;
    *idx = i;
    if (store->backend == RF_STORE_MEMORY) {
        e->status = ST_READY;
        return 1;
    }
    e->status = ST_NEW;
    if (ivec_push(&store->to_fetch, i) != 0)
        abort();
    return 0;
}

void rf_store_new_epoch(rf_store_t *store) {
    store->epoch++;
}

void rf_store_unpin(rf_store_t *store, int32_t idx) {
    if (store->pool[idx].pins > 0)
        store->pool[idx].pins--;
}

struct rf_cust_state *rf_store_state(rf_store_t *store, int32_t idx) {
    return &store->pool[idx].st;
}

uint64_t rf_store_mark_dirty(rf_store_t *store, int32_t idx) {
    struct entry *e = &store->pool[idx];
    if (!e->dirty) {
        e->dirty = 1;
        if (ivec_push(&store->dirty, idx) != 0)
            abort(); /* like Redis: out of memory is not a recoverable state here */
    }
    return store->gen_open;
}

static int ensure_argv(rf_store_t *store, int n) {
    if (n <= store->argv_cap)
        return 0;
    int cap = n * 2;
    const char **a = realloc(store->argv, sizeof *a * (size_t)cap);
    if (!a)
        return RF_E_NOMEM;
    store->argv = a;
    size_t *l = realloc(store->argvlen, sizeof *l * (size_t)cap);
    if (!l)
        return RF_E_NOMEM;
    store->argvlen = l;
    store->argv_cap = cap;
    return 0;
}

static void schedule_retry(rf_store_t *store);
static void on_timer_closed(uv_handle_t *h);

/* ---- fetch ---- */

static void fetch_done(rf_store_t *store, int status) {
    store->fetch_busy = 0;
    store->fetching.n = 0;
    store->retry_ms = RETRY_MIN_MS;
    store->cbs.fetched(store, status, store->cbs.arg);
}

static void on_mget(rf_redis_t *r, int status, redisReply *reply, void *arg) {
    rf_store_t *store = arg;
    if (store->closing)
        return; /* rf_store_close reports the fetch as closed */
    if (status != 0 || reply->type != REDIS_REPLY_ARRAY ||
        reply->elements != (size_t)store->fetching.n) {
        store->metrics->store_errors++;
        store->fetch_retry = 1;
        schedule_retry(store);
        return;
    }
    for (int k = 0; k < store->fetching.n; k++) {
        struct entry *e = &store->pool[store->fetching.v[k]];
        redisReply *el = reply->element[k];
        rf_cust_state_init(&e->st);
        if (el->type == REDIS_REPLY_STRING) {
            if (rf_cust_state_unpack(&e->st, (const uint8_t *)el->str, el->len) != 0) {
                /* Counted and logged by the daemon; starting over is the only option left. */
                store->metrics->store_corrupt++;
                rf_cust_state_init(&e->st);
            }
        }
        e->status = ST_READY;
    }
    store->metrics->store_fetches++;
    fetch_done(store, 0);
}

static int fetch_send(rf_store_t *store) {
    int n = store->fetching.n;
    if (ensure_argv(store, n + 1) != 0)
        return RF_E_NOMEM;
    store->argv[0] = "MGET";
    store->argvlen[0] = 4;
    for (int k = 0; k < n; k++) {
        struct entry *e = &store->pool[store->fetching.v[k]];
        store->argv[k + 1] = e->key;
        store->argvlen[k + 1] = e->key_len;
    }
    return rf_redis_command_argv(store->redis, n + 1, store->argv, store->argvlen, on_mget, store);
}

int rf_store_fetch(rf_store_t *store) {
    /* Busy first: an entry whose MGET is out is loading, not in to_fetch, and "nothing to
     * fetch" would let the caller use a state that is not loaded yet. */
    if (store->fetch_busy)
        return RF_E_BUSY;
    if (store->to_fetch.n == 0)
        return 1;
    if (store->closing)
        return RF_E_CLOSED;
    /* Swap the lists: to_fetch becomes the batch in flight. */
    struct ivec t = store->fetching;
    store->fetching = store->to_fetch;
    store->to_fetch = t;
    store->to_fetch.n = 0;
    for (int k = 0; k < store->fetching.n; k++)
        store->pool[store->fetching.v[k]].status = ST_LOADING;
    store->fetch_busy = 1;
    if (fetch_send(store) != 0) {
        store->metrics->store_errors++;
        store->fetch_retry = 1;
        schedule_retry(store);
    }
    return 0;
}

/* ---- flush ---- */

static void flush_start(rf_store_t *store);

static void flush_finish(rf_store_t *store) {
    for (int k = 0; k < store->flushing.n; k++)
        rf_store_unpin(store, store->flushing.v[k]);
    if (store->flush_failed) {
        /* The entries hold their latest state: mark them dirty again and retry. */
        for (int k = 0; k < store->flushing.n; k++) {
            int32_t i = store->flushing.v[k];
            if (!store->pool[i].dirty)
                rf_store_mark_dirty(store, i);
        }
        store->flushing.n = 0;
        store->flush_busy = 0;
        store->metrics->store_errors++;
        store->flush_retry = 1;
        schedule_retry(store);
        return;
    }
    uint64_t covers = store->flush_covers;
    store->flushing.n = 0;
    store->flush_busy = 0;
    store->metrics->store_flushes++;
    store->retry_ms = RETRY_MIN_MS;
    store->cbs.flushed(store, covers, store->cbs.arg);
    if (store->dirty.n > 0 && !store->closing)
        flush_start(store);
}

static void on_set(rf_redis_t *r, int status, redisReply *reply, void *arg) {
    rf_store_t *store = arg;
    if (status != 0 || reply->type == REDIS_REPLY_ERROR)
        store->flush_failed = 1;
    if (--store->flush_waiting == 0 && !store->closing)
        flush_finish(store);
}

static void flush_start(rf_store_t *store) {
    if (store->flush_busy || store->dirty.n == 0 || store->closing)
        return;
    store->flush_covers = store->gen_open++;
    if (store->backend == RF_STORE_MEMORY) {
        for (int k = 0; k < store->dirty.n; k++)
            store->pool[store->dirty.v[k]].dirty = 0;
        store->dirty.n = 0;
        store->metrics->store_flushes++;
        store->cbs.flushed(store, store->flush_covers, store->cbs.arg);
        return;
    }
    int n = store->dirty.n;
    if (n > store->packed_cap) {
        uint8_t *p = realloc(store->packed, (size_t)n * 2 * RF_CUST_STATE_SIZE);
        if (!p)
            abort();
        store->packed = p;
        store->packed_cap = n * 2;
    }
    if (ensure_argv(store, 3 * n) != 0)
        abort();
    /* Swap: the dirty list becomes the flush in flight; snapshot each state now so later
     * events can keep changing the entries. */
    struct ivec t = store->flushing;
    store->flushing = store->dirty;
    store->dirty = t;
    store->dirty.n = 0;
    store->flush_busy = 1;
    store->flush_failed = 0;
    store->flush_waiting = 0;
    for (int k = 0; k < n; k++) {
        struct entry *e = &store->pool[store->flushing.v[k]];
        e->dirty = 0;
        e->pins++; /* not evictable until the flush is over: a failure re-dirties it */
        uint8_t *val = store->packed + (size_t)k * RF_CUST_STATE_SIZE;
        rf_cust_state_pack(&e->st, val);
    }
    for (int k = 0; k < n; k++) {
        struct entry *e = &store->pool[store->flushing.v[k]];
        const char **argv = store->argv + 3 * k;
        size_t *lens = store->argvlen + 3 * k;
        argv[0] = "SET";
        lens[0] = 3;
        argv[1] = e->key;
        lens[1] = e->key_len;
        argv[2] = (const char *)(store->packed + (size_t)k * RF_CUST_STATE_SIZE);
        lens[2] = RF_CUST_STATE_SIZE;
        if (rf_redis_command_argv(store->redis, 3, argv, lens, on_set, store) != 0) {
            store->flush_failed = 1;
            break;
        }
        store->flush_waiting++;
    }
    if (store->flush_waiting == 0)
        flush_finish(store); /* nothing was queued: retry later */
}

void rf_store_flush(rf_store_t *store) {
    if (!store->flush_retry)
        flush_start(store);
}

/* ---- retries ---- */

static void on_retry(uv_timer_t *t) {
    rf_store_t *store = t->data;
    if (store->closing)
        return;
    if (store->fetch_retry) {
        store->fetch_retry = 0;
        if (fetch_send(store) != 0) {
            store->metrics->store_errors++;
            store->fetch_retry = 1;
        }
    }
    if (store->flush_retry) {
        store->flush_retry = 0;
        flush_start(store);
    }
    if (store->fetch_retry || store->flush_retry)
        schedule_retry(store);
}

static void schedule_retry(rf_store_t *store) {
    if (store->closing || uv_is_active((uv_handle_t *)&store->retry_timer))
        return;
    uv_timer_start(&store->retry_timer, on_retry, store->retry_ms, 0);
    store->retry_ms = store->retry_ms * 2 > RETRY_MAX_MS ? RETRY_MAX_MS : store->retry_ms * 2;
}

static void on_redis_state(rf_redis_t *r, int status, void *arg) {
    rf_store_t *store = arg;
    if (store->cbs.state)
        store->cbs.state(store, status, store->cbs.arg);
}

int rf_store_idle(const rf_store_t *store) {
    return store->dirty.n == 0 && !store->flush_busy && !store->fetch_busy &&
           !store->flush_retry && !store->fetch_retry;
}

const char *rf_store_errstr(const rf_store_t *store) {
    return store->redis ? rf_redis_errstr(store->redis) : "";
}

int rf_store_size(const rf_store_t *store) {
    return store->used;
}

void rf_store_drop_clean(rf_store_t *store) {
    int32_t i = store->lru_head;
    while (i >= 0) {
        int32_t next = store->pool[i].lru_next;
        struct entry *e = &store->pool[i];
        if (!e->dirty && e->pins == 0 && e->status == ST_READY &&
            store->backend == RF_STORE_REDIS) {
            hash_remove(store, i);
            lru_unlink(store, i);
            e->hnext = store->free_head;
            store->free_head = i;
            store->used--;
        }
        i = next;
    }
}

rf_store_t *rf_store_new(uv_loop_t *loop, const struct rf_store_conf *conf,
                         const struct rf_store_cbs *cbs, struct rf_metrics *metrics,
                         char *errstr, size_t errstr_size) {
    if (strlen(conf->key_prefix) > PREFIX_MAX) {
        snprintf(errstr, errstr_size, "redis.key.prefix longer than %d bytes", PREFIX_MAX);
        return NULL;
    }
    rf_store_t *store = calloc(1, sizeof *store);
    if (!store) {
        snprintf(errstr, errstr_size, "out of memory");
        return NULL;
    }
    store->loop = loop;
    store->backend = conf->backend;
    store->cbs = *cbs;
    store->metrics = metrics;
    snprintf(store->prefix, sizeof store->prefix, "%s", conf->key_prefix);
    store->cache_max = conf->cache_max;
    store->free_head = -1;
    store->lru_head = store->lru_tail = -1;
    store->retry_ms = RETRY_MIN_MS;
    store->gen_open = 1;
    if (grow_pool(store) != 0) {
        snprintf(errstr, errstr_size, "out of memory");
        goto fail_pool;
    }
    uv_timer_init(loop, &store->retry_timer);
    store->retry_timer.data = store;
    if (conf->backend == RF_STORE_REDIS) {
        struct rf_redis_conf rc = {
            .host = conf->redis_host,
            .port = conf->redis_port,
            .connect_timeout_ms = conf->connect_timeout_ms,
            .command_timeout_ms = conf->command_timeout_ms,
            .reconnect_min_ms = 100,
            .reconnect_max_ms = 2000,
        };
        store->redis = rf_redis_new(loop, &rc, on_redis_state, store, errstr, errstr_size);
        if (!store->redis)
            goto fail_redis;
    }
    return store;

fail_redis:
    /* The timer is a live handle now: free through its close callback, as always. */
    store->closing = 1;
    store->closing_left = 1;
    uv_close((uv_handle_t *)&store->retry_timer, on_timer_closed);
    return NULL;
fail_pool:
    free(store->pool);
    free(store->buckets);
    free(store);
    return NULL;
}

static void free_store(rf_store_t *store) {
    void (*cb)(void *) = store->close_cb;
    void *arg = store->close_arg;
    free(store->pool);
    free(store->buckets);
    free(store->dirty.v);
    free(store->to_fetch.v);
    free(store->fetching.v);
    free(store->flushing.v);
    free(store->packed);
    free(store->argv);
    free(store->argvlen);
    free(store);
    if (cb)
        cb(arg);
}

/* The store is freed when the last of its handles (timer, Redis client) has closed. */
static void close_one(rf_store_t *store) {
    if (--store->closing_left == 0)
        free_store(store);
}

static void on_timer_closed(uv_handle_t *h) {
    close_one(h->data);
}

static void on_redis_closed(void *arg) {
    close_one(arg);
}

void rf_store_close(rf_store_t *store, void (*close_cb)(void *), void *arg) {
    store->closing = 1;
    store->close_cb = close_cb;
    store->close_arg = arg;
    if (store->fetch_busy)
        fetch_done(store, RF_E_CLOSED);
    store->closing_left = store->redis ? 2 : 1;
    uv_close((uv_handle_t *)&store->retry_timer, on_timer_closed);
    if (store->redis)
        rf_redis_close(store->redis, on_redis_closed, store);
}
