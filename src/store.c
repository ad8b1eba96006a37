/*
 * store.c — entity values: the local cache per kind, the Redis reads on a miss, the
 * generation snapshots and the gated, transactional write-back. See store.h for the contract.
 *
 * Loop thread only. Each kind has its own table: entries in chunks that never move (so value
 * pointers stay valid), a chained hash index and an LRU list. A generation is a list of
 * (entry, snapshot) pairs whose bytes live in the generation's own buffer; buffers are reused
 * once written. Once the working set is cached nothing here allocates: keys, snapshots and
 * hiredis argv arrays live in buffers that only grow.
 * Must never: evict a dirty, pinned, loading or unwritten entry; write a generation before it
 * is released; report a generation durable before the EXEC covering it has succeeded.
 */
#include "riskflow/store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "riskflow/err.h"
#include "riskflow/feat.h"
#include "riskflow/rcluster.h"
#include "riskflow/redis.h"

#define KEY_MAX 192 /* prefix (32) : kind (47) :{ id (63) } */
#define CHUNK_SHIFT 10
#define CHUNK (1 << CHUNK_SHIFT)
#define IDX_MAX ((1 << 28) - 1)
#define STORE_RETRY_MIN_MS 50
#define STORE_RETRY_MAX_MS 2000
#define LOG_KEY_MAX 320 /* prefix (32) :log:{ topic (249) : partition } */

/* ST_FOREIGN: Redis holds something at its key that is not a value of this layout (another
 * version or declaration, garbage, a hash): unusable, never written over. */
enum { ST_READY, ST_NEW, ST_LOADING, ST_FOREIGN };

struct entry {
    char key[KEY_MAX]; /* the Redis key, NUL, and for a sliced kind the slice's field, NUL */
    uint16_t key_len;
    uint8_t field_len; /* sliced kinds: the hash field of this slice; 0 otherwise */
    uint8_t status;
    uint8_t dirty; /* changed since the last closed generation */
    uint8_t refresh;    /* sliced: queued to read the other slices again */
    uint16_t slot;      /* the key's hash slot in a cluster (0 with one server) */
    uint8_t has_others; /* sliced: the value is followed by the sum of the other slices */
    uint64_t others_ms; /* sliced: loop time the other slices were read */
    uint32_t pins;
    uint32_t hash;
    uint32_t epoch;   /* store epoch when the value was loaded: older ones may be stale */
    int32_t hnext;    /* hash chain, or free list when unused */
    int32_t lru_prev, lru_next;
    uint64_t snap_gen; /* newest generation holding a snapshot of it (0: none) */
    uint64_t flush_id; /* the flush that picked its snapshot */
    const uint8_t *flush_snap;
    _Alignas(8) uint8_t value[]; /* the kind's value size */
};

/* A growable array of int32 values. */
struct ivec {
    int32_t *v;
    int n, cap;
};

struct table {
    int kind;
    int sliced;        /* the kind is sliced (Redis backend): values are fields of one hash */
    int late;          /* previous values or job state: written last in a cluster */
    uint32_t vsize;
    char ttl[24];      /* the kind's ttl=DUR in ms, as SET's PX argument; "" for none */
    size_t ttl_len;
    size_t stride;
    uint8_t **chunks;
    int n_chunks;
    int cap, used; /* entries allocated, entries live */
    int32_t free_head;
    int32_t *buckets;
    uint32_t nbuckets; /* power of two */
    int32_t lru_head, lru_tail; /* head = most recent */
};

struct snap_rec {
    uint32_t ref;
    uint32_t off; /* into the generation's bytes */
};

/* A journal chunk of the generation: key, score and chunk bytes in the generation's buffer. */
struct log_rec {
    uint32_t key_off, key_len;
    uint32_t score_off, score_len;
    uint32_t val_off, val_len;
};

#define GEN_RING_MIN 64 /* the generation ring's first size (gen_push, gens_shrink) */

struct gen {
    uint64_t id;
    uint8_t *bytes;
    size_t n, cap;
    struct snap_rec *recs;
    int n_recs, cap_recs;
    struct log_rec *logs;
    int n_logs, cap_logs;
};

/* A journal read: the chunks of one key that may hold offsets lo.. (ZRANGEBYSCORE). */
struct log_req {
    char key[LOG_KEY_MAX];
    size_t key_len;
    char lo[24], count[24];
};

struct rf_store_s {
    uv_loop_t *loop;
    enum rf_store_backend backend;
    struct rf_store_cbs cbs;
    struct rf_metrics *metrics;
    const rf_decl_t *decl;
    char prefix[RF_STORE_PREFIX_MAX + 1];
    int cache_max;
    struct table tables[RF_KINDS_MAX];
    int n_tables;

    uint32_t epoch;
    struct ivec dirty;    /* refs with dirty = 1 */
    struct ivec to_fetch; /* refs in ST_NEW */

    /* The fetch in flight: one MGET (+ EXISTS, + TYPEs) for plain kinds, one HGETALL per
     * slice of a sliced kind. */
    struct ivec fetching;
    struct ivec fetch_plain;  /* the refs the MGETs read, in their order, by slot in a cluster */
    struct ivec fetch_group;  /* where each MGET's refs start in fetch_plain, then its end */
    struct ivec fetch_sliced; /* the refs the HGETALLs read, in their order */
    struct ivec fetch_nils; /* refs MGET read as nil */
    int fetch_busy;
    int fetch_retry;
    int fetch_waiting, fetch_failed, fetch_phase, fetch_exist;
    int foreign_stop; /* store.on.foreign=stop */
    uint64_t slice_refresh_ms;

    /* Generations not yet written: a ring of gen buffers, oldest first. */
    struct gen *gens;
    int gen_cap, gen_head, gen_n;
    uint64_t gen_closed;   /* the last closed generation */
    uint64_t gen_released; /* generations up to this may be written */
    uint64_t gen_flushed;  /* ... and up to this are */

    /* The flush in flight: MULTI, SETs, EXEC. */
    struct ivec flushing;
    uint64_t flush_covers;
    int flush_logs; /* journal chunks (ZADDs) in the flush */
    int flush_step; /* a cluster's flush: 0 journal, 1 values, 2 the late kinds' values */
    int flush_extra; /* PEXPIREs of sliced kinds' hashes in the flush */
    uint64_t flush_seq;
    int flush_busy;
    int flush_waiting; /* replies still expected */
    int flush_failed;
    int flush_retry;

    /* The journal read in flight: one ZRANGEBYSCORE per request, the chunks copied out. */
    struct log_req *logq;
    int logq_n, logq_cap;
    int log_busy, log_waiting, log_failed, log_retry;
    uint8_t *log_bytes;
    size_t log_n, log_cap;
    size_t *log_at; /* chunk k: log_bytes + log_at[k], log_at[k + 1] - log_at[k] bytes */
    int *log_from;  /* chunk k came from request log_from[k] */
    int log_chunks, log_at_cap;

    /* The epoch marker read (and maybe written) in flight. */
    int epoch_busy, epoch_waiting, epoch_failed, epoch_created, epoch_retry;
    char epoch_fresh[64], epoch_id[64];
    rf_store_epoch_cb epoch_cb;
    void *epoch_arg;

    /* The health PING in flight. */
    int ping_busy;
    uint64_t ping_t0;
    rf_store_ping_cb ping_cb;
    void *ping_arg;

    uint64_t *sort_buf; /* fetch_plain by slot: (slot << 32 | ref), grown to the largest */
    int sort_cap;

    /* hiredis argv for MGET / SET, grown to the largest seen. */
    const char **argv;
    size_t *argvlen;
    int argv_cap;

    rf_redis_t *redis;       /* one Redis server, or */
    rf_rcluster_t *cluster;  /* a Redis Cluster (redis.cluster.nodes) */
    struct req *req_free;    /* command contexts not in use (chunks that never move) */
    struct req **req_chunks;
    int n_req_chunks;
    uv_timer_t retry_timer;
    unsigned retry_ms;
    int closing;
    int closing_left;
    void (*close_cb)(void *);
    void *close_arg;
};

static unsigned key_slot(const rf_store_t *store, const char *key, size_t len);

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

static struct entry *ent(const struct table *t, int32_t i) {
    return (struct entry *)(void *)(t->chunks[i >> CHUNK_SHIFT] +
                                    (size_t)(i & (CHUNK - 1)) * t->stride);
}

static struct table *ref_table(rf_store_t *store, uint32_t ref) {
    return &store->tables[ref >> 28];
}

static struct entry *ref_entry(rf_store_t *store, uint32_t ref) {
    return ent(ref_table(store, ref), (int32_t)(ref & IDX_MAX));
}

/* ---- the cache ---- */

static void lru_unlink(struct table *t, int32_t i) {
    struct entry *e = ent(t, i);
    if (e->lru_prev >= 0)
        ent(t, e->lru_prev)->lru_next = e->lru_next;
    else
        t->lru_head = e->lru_next;
    if (e->lru_next >= 0)
        ent(t, e->lru_next)->lru_prev = e->lru_prev;
    else
        t->lru_tail = e->lru_prev;
    e->lru_prev = e->lru_next = -1;
}

static void lru_push_front(struct table *t, int32_t i) {
    struct entry *e = ent(t, i);
    e->lru_prev = -1;
    e->lru_next = t->lru_head;
    if (t->lru_head >= 0)
        ent(t, t->lru_head)->lru_prev = i;
    t->lru_head = i;
    if (t->lru_tail < 0)
        t->lru_tail = i;
}

static int grow_buckets(struct table *t, uint32_t n) {
    int32_t *b = malloc(sizeof *b * n);
    if (!b)
        return RF_E_NOMEM;
    for (uint32_t i = 0; i < n; i++)
        b[i] = -1;
    for (int32_t i = t->lru_head; i >= 0; i = ent(t, i)->lru_next) {
        struct entry *e = ent(t, i);
        uint32_t h = e->hash & (n - 1);
        e->hnext = b[h];
        b[h] = i;
    }
    free(t->buckets);
    t->buckets = b;
    t->nbuckets = n;
    return 0;
}

static int grow_table(struct table *t) {
    if (t->cap + CHUNK > IDX_MAX)
        return RF_E_NOMEM;
    uint8_t **c = realloc(t->chunks, sizeof *c * (size_t)(t->n_chunks + 1));
    if (!c)
        return RF_E_NOMEM;
    t->chunks = c;
    c[t->n_chunks] = aligned_alloc(8, t->stride * CHUNK);
    if (!c[t->n_chunks])
        return RF_E_NOMEM;
    int base = t->n_chunks++ * CHUNK;
    for (int i = CHUNK - 1; i >= 0; i--) {
        ent(t, base + i)->hnext = t->free_head;
        t->free_head = base + i;
    }
    t->cap += CHUNK;
    if ((uint32_t)t->cap * 2 > t->nbuckets)
        return grow_buckets(t, (uint32_t)t->cap * 2);
    return 0;
}

static void hash_remove(struct table *t, int32_t i) {
    int32_t *pp = &t->buckets[ent(t, i)->hash & (t->nbuckets - 1)];
    while (*pp != i)
        pp = &ent(t, *pp)->hnext;
    *pp = ent(t, i)->hnext;
}

/* Clean, unpinned, loaded, and every snapshot of it written. */
static int evictable(const rf_store_t *store, const struct entry *e) {
    return !e->dirty && e->pins == 0 && (e->status == ST_READY || e->status == ST_FOREIGN) &&
           e->snap_gen <= store->gen_flushed;
}

static void drop(struct table *t, int32_t i) {
    hash_remove(t, i);
    lru_unlink(t, i);
    ent(t, i)->hnext = t->free_head;
    t->free_head = i;
    t->used--;
}

/* Evict from the cold end until under the cap. The scan is bounded so a cache full of
 * unwritten entries costs little: it just stays over the cap until the next flush. */
static void evict(rf_store_t *store, struct table *t) {
    int scanned = 0;
    int32_t i = t->lru_tail;
    while (t->used >= store->cache_max && i >= 0 && scanned < 64) {
        int32_t prev = ent(t, i)->lru_prev;
        if (evictable(store, ent(t, i)))
            drop(t, i);
        scanned++;
        i = prev;
    }
}

int rf_store_lookup(rf_store_t *store, int kind, const char *id, size_t id_len, uint32_t *ref) {
    return rf_store_lookup_slice(store, kind, id, id_len, NULL, ref);
}

int rf_store_slice_name(uint32_t topic_id, int32_t partition, char buf[RF_STORE_SLICE_MAX]) {
    return snprintf(buf, RF_STORE_SLICE_MAX, "%08x:%d", (unsigned)topic_id, (int)partition);
}

int rf_store_lookup_slice(rf_store_t *store, int kind, const char *id, size_t id_len,
                          const char *slice, uint32_t *ref) {
    struct table *t = &store->tables[kind];
    const char *kname = rf_decl_kind_name(store->decl, kind);
    size_t plen = strlen(store->prefix), klen = strlen(kname);
    size_t flen = t->sliced && slice ? strlen(slice) : 0;
    if (id_len == 0 || plen + klen + id_len + 5 + flen + 1 > KEY_MAX - 1 ||
        flen >= RF_STORE_SLICE_MAX || (t->sliced && flen == 0))
        return RF_E_INVAL;
    char key[KEY_MAX];
    size_t n = 0;
    memcpy(key, store->prefix, plen);
    n += plen;
    key[n++] = ':';
    memcpy(key + n, kname, klen);
    n += klen;
    key[n++] = ':';
    key[n++] = '{';
    memcpy(key + n, id, id_len);
    n += id_len;
    key[n++] = '}';
    key[n] = '\0';
    /* A slice is its own entry: the field joins the identity. */
    if (flen)
        memcpy(key + n + 1, slice, flen);
    key[n + 1 + flen] = '\0';
    uint32_t h = rf_fnv1a32(key, n + 1 + flen);

    if (t->nbuckets) {
        for (int32_t i = t->buckets[h & (t->nbuckets - 1)]; i >= 0; i = ent(t, i)->hnext) {
            struct entry *e = ent(t, i);
            if (e->hash != h || e->key_len != n || e->field_len != flen ||
                memcmp(e->key, key, n + 1 + flen) != 0)
                continue;
            /* Loaded before the last rebalance and untouched since: another member may have
             * changed it in Redis meanwhile, so read it again. One holding our own unwritten
             * events stays (the stale-writer case, docs/ENGINE.md). */
            /* A foreign value is read again on every use: an operator may have fixed it. */
            if (store->backend == RF_STORE_REDIS && evictable(store, e) &&
                (e->epoch != store->epoch || e->status == ST_FOREIGN)) {
                e->status = ST_NEW;
                if (ivec_push(&store->to_fetch, (int32_t)RF_STORE_REF(kind, i)) != 0)
                    abort();
            } else if (t->sliced && e->status == ST_READY && !e->refresh &&
                       uv_now(store->loop) - e->others_ms >= store->slice_refresh_ms) {
                /* The other slices, as Redis holds them now; this slice is ours. */
                e->refresh = 1;
                if (ivec_push(&store->to_fetch, (int32_t)RF_STORE_REF(kind, i)) != 0)
                    abort();
            }
            e->epoch = store->epoch;
            e->pins++;
            lru_unlink(t, i);
            lru_push_front(t, i);
            *ref = RF_STORE_REF(kind, i);
            return e->status == ST_READY && !e->refresh;
        }
    }
    if (store->backend == RF_STORE_REDIS && t->used >= store->cache_max)
        evict(store, t);
    if (t->free_head < 0 && grow_table(t) != 0)
        abort(); /* like Redis: out of memory is not a state to run on in */
    int32_t i = t->free_head;
    struct entry *e = ent(t, i);
    t->free_head = e->hnext;
    memcpy(e->key, key, n + 2 + flen);
    e->key_len = (uint16_t)n;
    e->field_len = (uint8_t)flen;
    e->slot = (uint16_t)key_slot(store, key, n);
    e->refresh = 0;
    e->has_others = 0;
    e->others_ms = 0;
    e->hash = h;
    e->dirty = 0;
    e->pins = 1;
    e->epoch = store->epoch;
    e->snap_gen = 0;
    e->flush_id = 0;
    e->flush_snap = NULL;
    uint32_t b = h & (t->nbuckets - 1);
    e->hnext = t->buckets[b];
    t->buckets[b] = i;
    lru_push_front(t, i);
    t->used++;
    *ref = RF_STORE_REF(kind, i);
    if (store->backend == RF_STORE_MEMORY) {
        rf_feat_init_value(store->decl, kind, e->value);
        e->status = ST_READY;
        return 1;
    }
    e->status = ST_NEW;
    if (ivec_push(&store->to_fetch, (int32_t)*ref) != 0)
        abort();
    return 0;
}

uint8_t *rf_store_value(rf_store_t *store, uint32_t ref) {
    return ref_entry(store, ref)->value;
}

const uint8_t *rf_store_others(const rf_store_t *store, uint32_t ref) {
    const struct table *t = &store->tables[ref >> 28];
    const struct entry *e = ent(t, (int32_t)(ref & IDX_MAX));
    return e->has_others ? e->value + t->vsize : NULL;
}

const char *rf_store_key(const rf_store_t *store, uint32_t ref) {
    return ref_entry((rf_store_t *)store, ref)->key;
}

void rf_store_unpin(rf_store_t *store, uint32_t ref) {
    struct entry *e = ref_entry(store, ref);
    if (e->pins > 0)
        e->pins--;
}

void rf_store_mark_dirty(rf_store_t *store, uint32_t ref) {
    struct entry *e = ref_entry(store, ref);
    if (!e->dirty) {
        e->dirty = 1;
        if (ivec_push(&store->dirty, (int32_t)ref) != 0)
            abort();
    }
}

void rf_store_new_epoch(rf_store_t *store) {
    store->epoch++;
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

/* ---- commands: to the one server, or to the slot's node of a cluster ---- */

/* A command's reply goes to fn with idx (which key of a fetch, which journal read): in a
 * cluster replies from different nodes arrive in any order, so no handler counts them. */
typedef void (*reply_fn)(rf_store_t *store, int status, redisReply *reply, int idx);

struct req {
    rf_store_t *store;
    reply_fn fn;
    int idx;
    struct req *next; /* the free list */
};

#define REQ_CHUNK 256

static struct req *req_get(rf_store_t *store) {
    if (!store->req_free) {
        struct req **c = realloc(store->req_chunks, sizeof *c * (size_t)(store->n_req_chunks + 1));
        if (!c)
            return NULL;
        store->req_chunks = c;
        struct req *q = calloc(REQ_CHUNK, sizeof *q);
        if (!q)
            return NULL;
        c[store->n_req_chunks++] = q;
        for (int i = 0; i < REQ_CHUNK; i++) {
            q[i].next = store->req_free;
            store->req_free = &q[i];
        }
    }
    struct req *q = store->req_free;
    store->req_free = q->next;
    return q;
}

static void req_put(rf_store_t *store, struct req *q) {
    q->next = store->req_free;
    store->req_free = q;
}

static void req_done(struct req *q, int status, redisReply *reply) {
    rf_store_t *store = q->store;
    reply_fn fn = q->fn;
    int idx = q->idx;
    req_put(store, q);
    fn(store, status, reply, idx);
}

static void on_server_reply(rf_redis_t *r, int status, redisReply *reply, void *arg) {
    (void)r;
    req_done(arg, status, reply);
}

static void on_cluster_reply(rf_rcluster_t *c, int status, redisReply *reply, void *arg) {
    (void)c;
    req_done(arg, status, reply);
}

/* The slot of a key (0 with one server, where it does not matter). */
static unsigned key_slot(const rf_store_t *store, const char *key, size_t len) {
    return store->cluster ? rf_rcluster_slot(key, len) : 0;
}

/* Queue a command for `slot` (key_slot of its key; any slot for a keyless one). 0, or the
 * client's error and fn is never called. */
static int send_cmd(rf_store_t *store, unsigned slot, int argc, const char **argv,
                    const size_t *lens, reply_fn fn, int idx) {
    struct req *q = req_get(store);
    if (!q)
        return RF_E_NOMEM;
    *q = (struct req){store, fn, idx, NULL};
    int rc = store->cluster
                 ? rf_rcluster_command_argv(store->cluster, slot, argc, argv, lens,
                                            on_cluster_reply, q)
                 : rf_redis_command_argv(store->redis, argc, argv, lens, on_server_reply, q);
    if (rc != 0)
        req_put(store, q);
    return rc;
}

static void schedule_retry(rf_store_t *store);
static void on_timer_closed(uv_handle_t *h);
static void on_type(rf_store_t *store, int status, redisReply *reply, int idx);

/* ---- fetch ---- */

static void fetch_done(rf_store_t *store, int status) {
    store->fetch_busy = 0;
    store->fetching.n = 0;
    store->retry_ms = STORE_RETRY_MIN_MS;
    store->cbs.fetched(store, status, store->cbs.arg);
}

/* A stored value that is not ours: by default the entity is set aside (its events are
 * dead-lettered by the engine, its key never written), else it starts fresh. Returns 1 when
 * the store was closed from the callback. */
static int foreign(rf_store_t *store, struct entry *e, int kind) {
    store->metrics->store_mismatch++;
    rf_feat_init_value(store->decl, kind, e->value);
    e->status = store->foreign_stop ? ST_FOREIGN : ST_READY;
    if (store->cbs.mismatch)
        store->cbs.mismatch(store, e->key, store->cbs.arg);
    return store->closing;
}

/* A fetch is MGET, then (with store.on.foreign=stop) EXISTS over the same keys, pipelined: MGET
 * reads a key of another Redis type (a hash, a list) as nil, and only EXISTS tells it from a
 * missing one. When they disagree, TYPE names the culprits. Any failure retries it all. */
static void fetch_step(rf_store_t *store) {
    if (--store->fetch_waiting > 0 || store->closing)
        return;
    if (store->fetch_failed) {
        store->metrics->store_errors++;
        store->fetch_retry = 1;
        schedule_retry(store);
        return;
    }
    if (store->fetch_phase == 0 &&
        store->fetch_exist > store->fetch_plain.n - store->fetch_nils.n) {
        store->fetch_phase = 1; /* some nil is a key of another type: which? */
        for (int i = 0; i < store->fetch_nils.n; i++) {
            struct entry *e = ref_entry(store, (uint32_t)store->fetch_nils.v[i]);
            const char *argv[] = {"TYPE", e->key};
            size_t lens[] = {4, e->key_len};
            if (send_cmd(store, key_slot(store, e->key, e->key_len), 2, argv, lens, on_type,
                         i) != 0) {
                store->fetch_failed = 1;
                break;
            }
            store->fetch_waiting++;
        }
        if (store->fetch_waiting == 0) {
            store->fetch_waiting = 1;
            fetch_step(store);
        }
        return;
    }
    store->metrics->store_fetches++;
    fetch_done(store, 0);
}

static void on_mget(rf_store_t *store, int status, redisReply *reply, int idx) {
    if (store->closing)
        return; /* rf_store_close reports the fetch as closed */
    int from = store->fetch_group.v[idx], to = store->fetch_group.v[idx + 1];
    if (status != 0 || reply->type != REDIS_REPLY_ARRAY || reply->elements != (size_t)(to - from)) {
        store->fetch_failed = 1;
        fetch_step(store);
        return;
    }
    for (int k = from; k < to; k++) {
        uint32_t ref = (uint32_t)store->fetch_plain.v[k];
        int kind = (int)(ref >> 28);
        struct entry *e = ref_entry(store, ref);
        redisReply *el = reply->element[k - from];
        if (el->type == REDIS_REPLY_STRING &&
            rf_feat_check_value(store->decl, kind, (const uint8_t *)el->str, el->len) == 0) {
            memcpy(e->value, el->str, el->len);
            e->status = ST_READY;
        } else if (el->type == REDIS_REPLY_STRING) {
            /* Another layout, version or declaration: never misread it. */
            if (foreign(store, e, kind))
                return; /* closed from the callback: it reported the fetch as closed */
        } else {
            rf_feat_init_value(store->decl, kind, e->value);
            e->status = ST_READY;
            if (ivec_push(&store->fetch_nils, (int32_t)ref) != 0)
                abort();
        }
    }
    fetch_step(store);
}

static void on_exists(rf_store_t *store, int status, redisReply *reply, int idx) {
    if (store->closing)
        return;
    (void)idx;
    if (status != 0 || reply->type != REDIS_REPLY_INTEGER)
        store->fetch_failed = 1;
    else
        store->fetch_exist += (int)reply->integer;
    fetch_step(store);
}

static void on_type(rf_store_t *store, int status, redisReply *reply, int idx) {
    if (store->closing)
        return;
    int i = idx;
    if (status != 0 || reply->type != REDIS_REPLY_STATUS) {
        store->fetch_failed = 1;
    } else if (strcmp(reply->str, "none") != 0 && i < store->fetch_nils.n) {
        uint32_t ref = (uint32_t)store->fetch_nils.v[i];
        if (foreign(store, ref_entry(store, ref), (int)(ref >> 28)))
            return;
    }
    fetch_step(store);
}

/* A slice's HGETALL: its own field is its value (unless it is loaded already: one writer,
 * and that is us), the other fields add up to the others (rf_feat_merge). A field that is not
 * a value of the layout is skipped, counted as a mismatch; one at the own field, or a key of
 * another Redis type, makes the entry foreign. */
static void on_hgetall(rf_store_t *store, int status, redisReply *reply, int idx) {
    if (store->closing)
        return;
    int i = idx;
    if (status != 0 || i >= store->fetch_sliced.n ||
        (reply->type != REDIS_REPLY_ARRAY && reply->type != REDIS_REPLY_ERROR) ||
        (reply->type == REDIS_REPLY_ERROR && strncmp(reply->str, "WRONGTYPE", 9) != 0)) {
        store->fetch_failed = 1;
        fetch_step(store);
        return;
    }
    uint32_t ref = (uint32_t)store->fetch_sliced.v[i];
    int kind = (int)(ref >> 28);
    struct table *t = ref_table(store, ref);
    struct entry *e = ref_entry(store, ref);
    uint8_t *others = e->value + t->vsize;
    int loading = e->status == ST_LOADING, own = 0;
    e->has_others = 0;
    e->refresh = 0;
    e->others_ms = uv_now(store->loop);
    if (reply->type == REDIS_REPLY_ERROR) {
        if (loading && foreign(store, e, kind))
            return;
        fetch_step(store);
        return;
    }
    const char *field = e->key + e->key_len + 1;
    for (size_t k = 0; k + 1 < reply->elements; k += 2) {
        const redisReply *f = reply->element[k], *v = reply->element[k + 1];
        if (f->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING)
            continue;
        int ok = rf_feat_check_value(store->decl, kind, (const uint8_t *)v->str, v->len) == 0;
        if (f->len == e->field_len && memcmp(f->str, field, f->len) == 0) {
            own = 1;
            if (!loading)
                continue;
            if (!ok) {
                if (foreign(store, e, kind))
                    return;
                loading = 0;
                continue;
            }
            memcpy(e->value, v->str, v->len);
            e->status = ST_READY;
            loading = 0;
        } else if (ok) {
            if (!e->has_others)
                rf_feat_init_value(store->decl, kind, others);
            rf_feat_merge(store->decl, kind, others, (const uint8_t *)v->str);
            e->has_others = 1;
        } else {
            store->metrics->store_mismatch++;
        }
    }
    if (loading && !own) {
        rf_feat_init_value(store->decl, kind, e->value);
        e->status = ST_READY;
    }
    fetch_step(store);
}

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* fetch_plain ordered by slot, so each slot's keys are one MGET. */
static int refs_by_slot(rf_store_t *store) {
    int n = store->fetch_plain.n;
    if (n > store->sort_cap) {
        uint64_t *b = realloc(store->sort_buf, sizeof *b * (size_t)n * 2);
        if (!b)
            return RF_E_NOMEM;
        store->sort_buf = b;
        store->sort_cap = n * 2;
    }
    for (int k = 0; k < n; k++) {
        uint32_t ref = (uint32_t)store->fetch_plain.v[k];
        store->sort_buf[k] = (uint64_t)ref_entry(store, ref)->slot << 32 | ref;
    }
    qsort(store->sort_buf, (size_t)n, sizeof *store->sort_buf, cmp_u64);
    for (int k = 0; k < n; k++)
        store->fetch_plain.v[k] = (int32_t)(uint32_t)store->sort_buf[k];
    return 0;
}

/* After a fetch command was queued (rc 0: one more reply to wait for) or refused: 1 to go on;
 * 0 to stop, *out what fetch_send returns — the error when nothing is out yet (the caller
 * retries the whole fetch), else 0 (the replies of those sent settle it, as a retry). */
static int fetch_sent(rf_store_t *store, int rc, int *out) {
    if (rc == 0) {
        store->fetch_waiting++;
        return 1;
    }
    *out = store->fetch_waiting == 0 ? rc : 0;
    if (store->fetch_waiting)
        store->fetch_failed = 1;
    return 0;
}

static int fetch_send(rf_store_t *store) {
    store->fetch_plain.n = 0;
    store->fetch_sliced.n = 0;
    for (int k = 0; k < store->fetching.n; k++) {
        int32_t ref = store->fetching.v[k];
        if (ivec_push(ref_table(store, (uint32_t)ref)->sliced ? &store->fetch_sliced
                                                               : &store->fetch_plain,
                      ref) != 0)
            return RF_E_NOMEM;
    }
    int n = store->fetch_plain.n;
    if (ensure_argv(store, n + 1) != 0)
        return RF_E_NOMEM;
    store->fetch_failed = 0;
    store->fetch_waiting = 0;
    store->fetch_phase = 0;
    store->fetch_exist = 0;
    store->fetch_nils.n = 0; /* a fetch of slices alone has no MGET to reset them */
    for (int k = 0; k < store->fetch_sliced.n; k++) {
        struct entry *e = ref_entry(store, (uint32_t)store->fetch_sliced.v[k]);
        const char *argv[] = {"HGETALL", e->key};
        size_t lens[] = {7, e->key_len};
        int rc = send_cmd(store, key_slot(store, e->key, e->key_len), 2, argv, lens,
                          on_hgetall, k);
        if (!fetch_sent(store, rc, &rc))
            return rc;
    }
    if (n == 0)
        return 0;
    /* One MGET (and EXISTS) per slot: a cluster runs a multi-key command only inside one. */
    if (store->cluster && refs_by_slot(store) != 0)
        return RF_E_NOMEM;
    store->fetch_group.n = 0;
    for (int k = 0; k < n; k++) {
        struct entry *e = ref_entry(store, (uint32_t)store->fetch_plain.v[k]);
        if ((k == 0 || e->slot != ref_entry(store, (uint32_t)store->fetch_plain.v[k - 1])->slot) &&
            ivec_push(&store->fetch_group, k) != 0)
            return RF_E_NOMEM;
        store->argv[k + 1] = e->key;
        store->argvlen[k + 1] = e->key_len;
    }
    if (ivec_push(&store->fetch_group, n) != 0)
        return RF_E_NOMEM;
    for (int g = 0; g + 1 < store->fetch_group.n; g++) {
        int from = store->fetch_group.v[g], cnt = store->fetch_group.v[g + 1] - from;
        const char **argv = store->argv + from; /* argv[from] is free: the key before */
        size_t *lens = store->argvlen + from;
        const char *k0 = argv[1];
        size_t l0 = lens[1];
        unsigned slot = key_slot(store, k0, l0);
        const char *saved = argv[0];
        size_t saved_len = lens[0];
        argv[0] = "MGET";
        lens[0] = 4;
        int rc = send_cmd(store, slot, cnt + 1, argv, lens, on_mget, g);
        int go = fetch_sent(store, rc, &rc);
        if (go && store->foreign_stop) {
            argv[0] = "EXISTS";
            lens[0] = 6;
            go = fetch_sent(store, send_cmd(store, slot, cnt + 1, argv, lens, on_exists, g), &rc);
        }
        argv[0] = saved;
        lens[0] = saved_len;
        if (!go)
            return rc;
    }
    return 0;
}

int rf_store_fetch(rf_store_t *store) {
    /* Busy first: an entry whose MGET is out is loading, not in to_fetch, and "nothing to
     * fetch" would let the caller use a value that is not loaded yet. */
    if (store->fetch_busy)
        return RF_E_BUSY;
    if (store->to_fetch.n == 0)
        return 1;
    if (store->closing)
        return RF_E_CLOSED;
    struct ivec t = store->fetching;
    store->fetching = store->to_fetch;
    store->to_fetch = t;
    store->to_fetch.n = 0;
    for (int k = 0; k < store->fetching.n; k++) {
        struct entry *e = ref_entry(store, (uint32_t)store->fetching.v[k]);
        if (!e->refresh) /* a slice read for its others only keeps its value */
            e->status = ST_LOADING;
    }
    store->fetch_busy = 1;
    if (fetch_send(store) != 0) {
        store->metrics->store_errors++;
        store->fetch_retry = 1;
        schedule_retry(store);
    }
    return 0;
}

/* ---- generations ---- */

static struct gen *gen_at(rf_store_t *store, int i) {
    return &store->gens[(store->gen_head + i) % store->gen_cap];
}

static struct gen *gen_push(rf_store_t *store) {
    if (store->gen_n == store->gen_cap) {
        int cap = store->gen_cap ? store->gen_cap * 2 : GEN_RING_MIN;
        struct gen *g = calloc((size_t)cap, sizeof *g);
        if (!g)
            abort();
        for (int i = 0; i < store->gen_n; i++)
            g[i] = *gen_at(store, i);
        for (int i = store->gen_n; i < store->gen_cap; i++)
            g[i] = *gen_at(store, i); /* keep the spare buffers */
        free(store->gens);
        store->gens = g;
        store->gen_head = 0;
        store->gen_cap = cap;
    }
    struct gen *g = gen_at(store, store->gen_n++);
    g->n = 0;
    g->n_recs = 0;
    g->n_logs = 0;
    return g;
}

/* Room for `size` more bytes in the generation's buffer. */
static void gen_room(struct gen *g, size_t size) {
    if (g->n + size > g->cap) {
        size_t cap = (g->cap ? g->cap * 2 : 65536) + size;
        uint8_t *b = realloc(g->bytes, cap);
        if (!b)
            abort();
        g->bytes = b;
        g->cap = cap;
    }
}

static void gen_add(struct gen *g, uint32_t ref, const uint8_t *value, uint32_t size) {
    gen_room(g, size);
    if (g->n_recs == g->cap_recs) {
        int cap = g->cap_recs ? g->cap_recs * 2 : 64;
        struct snap_rec *r = realloc(g->recs, sizeof *r * (size_t)cap);
        if (!r)
            abort();
        g->recs = r;
        g->cap_recs = cap;
    }
    memcpy(g->bytes + g->n, value, size);
    g->recs[g->n_recs++] = (struct snap_rec){ref, (uint32_t)g->n};
    g->n += size;
}

uint64_t rf_store_close_gen(rf_store_t *store) {
    uint64_t id = ++store->gen_closed;
    if (store->backend == RF_STORE_MEMORY) {
        for (int k = 0; k < store->dirty.n; k++)
            ref_entry(store, (uint32_t)store->dirty.v[k])->dirty = 0;
        store->dirty.n = 0;
        return id;
    }
    struct gen *g = gen_push(store);
    g->id = id;
    for (int k = 0; k < store->dirty.n; k++) {
        uint32_t ref = (uint32_t)store->dirty.v[k];
        struct entry *e = ref_entry(store, ref);
        gen_add(g, ref, e->value, ref_table(store, ref)->vsize);
        e->dirty = 0;
        e->snap_gen = id;
    }
    store->dirty.n = 0;
    return id;
}

/* The journal key of an input partition into buf (LOG_KEY_MAX): its length, or 0 when the
 * topic name does not fit. */
static size_t log_key(const rf_store_t *store, const char *topic, int32_t partition, char *buf) {
    int n = snprintf(buf, LOG_KEY_MAX, "%s:log:{%s:%d}", store->prefix, topic, (int)partition);
    return n > 0 && n < LOG_KEY_MAX ? (size_t)n : 0;
}

/* Append bytes to the generation's buffer: their position. */
static uint32_t gen_put(struct gen *g, const void *p, size_t len) {
    gen_room(g, len);
    memcpy(g->bytes + g->n, p, len);
    g->n += len;
    return (uint32_t)(g->n - len);
}

int rf_store_add_log(rf_store_t *store, const char *topic, int32_t partition, int64_t last,
                     const void *chunk, size_t len) {
    if (store->backend == RF_STORE_MEMORY)
        return 0;
    if (store->gen_n == 0 || gen_at(store, store->gen_n - 1)->id != store->gen_closed ||
        store->gen_released >= store->gen_closed)
        return RF_E_INVAL;
    char key[LOG_KEY_MAX], score[24];
    size_t klen = log_key(store, topic, partition, key);
    if (klen == 0)
        return RF_E_INVAL;
    int slen = snprintf(score, sizeof score, "%lld", (long long)last);
    struct gen *g = gen_at(store, store->gen_n - 1);
    if (g->n_logs == g->cap_logs) {
        int cap = g->cap_logs ? g->cap_logs * 2 : 8;
        struct log_rec *r = realloc(g->logs, sizeof *r * (size_t)cap);
        if (!r)
            abort();
        g->logs = r;
        g->cap_logs = cap;
    }
    struct log_rec *r = &g->logs[g->n_logs++];
    r->key_off = gen_put(g, key, klen);
    r->key_len = (uint32_t)klen;
    r->score_off = gen_put(g, score, (size_t)slen);
    r->score_len = (uint32_t)slen;
    r->val_off = gen_put(g, chunk, len);
    r->val_len = (uint32_t)len;
    return 0;
}

/* ---- the epoch marker ---- */

static void epoch_send(rf_store_t *store);

static void epoch_retry(rf_store_t *store) {
    store->metrics->store_errors++;
    store->epoch_retry = 1;
    schedule_retry(store);
}

static void on_epoch_reply(rf_store_t *store, int status, redisReply *reply, int idx) {
    if (store->closing)
        return;
    /* idx 0: SET NX (OK when it created the marker), 1: GET (nil: the marker is gone). The
     * two go to one key, so to one node, in that order. */
    if (status != 0 || reply->type == REDIS_REPLY_ERROR) {
        store->epoch_failed = 1;
    } else if (idx == 0) {
        store->epoch_created = reply->type == REDIS_REPLY_STATUS;
    } else if (reply->type == REDIS_REPLY_STRING && reply->len < sizeof store->epoch_id) {
        memcpy(store->epoch_id, reply->str, reply->len);
        store->epoch_id[reply->len] = '\0';
    } else {
        store->epoch_id[0] = '\0';
    }
    if (--store->epoch_waiting > 0)
        return;
    if (store->epoch_failed) {
        epoch_retry(store);
        return;
    }
    store->epoch_busy = 0;
    store->retry_ms = STORE_RETRY_MIN_MS;
    rf_store_epoch_cb cb = store->epoch_cb;
    cb(store, 0, store->epoch_id[0] ? store->epoch_id : NULL, store->epoch_created,
       store->epoch_arg);
}

static void epoch_send(rf_store_t *store) {
    char key[LOG_KEY_MAX];
    int klen = snprintf(key, sizeof key, "%s:epoch", store->prefix);
    store->epoch_failed = 0;
    store->epoch_created = 0;
    store->epoch_waiting = 0;
    if (store->epoch_fresh[0]) {
        const char *argv[] = {"SET", key, store->epoch_fresh, "NX"};
        size_t lens[] = {3, (size_t)klen, strlen(store->epoch_fresh), 2};
        if (send_cmd(store, key_slot(store, key, (size_t)klen), 4, argv, lens, on_epoch_reply,
                     0) != 0) {
            epoch_retry(store);
            return;
        }
        store->epoch_waiting++;
    }
    const char *argv[] = {"GET", key};
    size_t lens[] = {3, (size_t)klen};
    if (send_cmd(store, key_slot(store, key, (size_t)klen), 2, argv, lens, on_epoch_reply,
                 1) != 0) {
        store->epoch_failed = 1; /* the SET's reply, if it went out, settles it */
        if (store->epoch_waiting == 0)
            epoch_retry(store);
        return;
    }
    store->epoch_waiting++;
}

int rf_store_epoch(rf_store_t *store, const char *fresh, rf_store_epoch_cb cb, void *arg) {
    if (store->backend != RF_STORE_REDIS)
        return 1;
    if (store->epoch_busy)
        return RF_E_BUSY;
    if (store->closing)
        return RF_E_CLOSED;
    if (fresh && strlen(fresh) >= sizeof store->epoch_fresh)
        return RF_E_INVAL;
    snprintf(store->epoch_fresh, sizeof store->epoch_fresh, "%s", fresh ? fresh : "");
    store->epoch_cb = cb;
    store->epoch_arg = arg;
    store->epoch_busy = 1;
    epoch_send(store);
    return 0;
}

/* ---- the journal: reads and pruning ---- */

void rf_store_redirects(const rf_store_t *store, uint64_t *moved, uint64_t *ask) {
    struct rf_rcluster_stats st = {0};
    if (store->cluster)
        rf_rcluster_stats(store->cluster, &st);
    *moved = st.moved;
    *ask = st.ask;
}

int rf_store_partial_flushes(const rf_store_t *store) {
    return store->cluster != NULL;
}

int rf_store_has_log(const rf_store_t *store) {
    return store->backend == RF_STORE_REDIS;
}

int rf_store_want_log(rf_store_t *store, const char *topic, int32_t partition, int64_t lo,
                      int64_t hi) {
    if (store->log_busy)
        return RF_E_BUSY;
    if (store->logq_n == store->logq_cap) {
        int cap = store->logq_cap ? store->logq_cap * 2 : 8;
        struct log_req *q = realloc(store->logq, sizeof *q * (size_t)cap);
        if (!q)
            abort();
        store->logq = q;
        store->logq_cap = cap;
    }
    struct log_req *q = &store->logq[store->logq_n];
    q->key_len = log_key(store, topic, partition, q->key);
    if (q->key_len == 0)
        return RF_E_INVAL;
    /* Chunks are scored by their last offset and hold at least one entry each: those that
     * may hold lo..hi are the first hi - lo + 1 scored lo or more. */
    snprintf(q->lo, sizeof q->lo, "%lld", (long long)lo);
    snprintf(q->count, sizeof q->count, "%lld", (long long)(hi - lo + 1));
    store->logq_n++;
    return 0;
}

static void log_done(rf_store_t *store, int status) {
    store->log_busy = 0;
    store->logq_n = 0;
    store->retry_ms = STORE_RETRY_MIN_MS;
    if (store->cbs.log_fetched)
        store->cbs.log_fetched(store, status, store->cbs.arg);
}

static void log_keep(rf_store_t *store, int from, const char *p, size_t len) {
    if (store->log_chunks + 2 > store->log_at_cap) {
        int cap = store->log_at_cap ? store->log_at_cap * 2 : 16;
        size_t *a = realloc(store->log_at, sizeof *a * (size_t)cap);
        if (!a)
            abort();
        store->log_at = a;
        int *f = realloc(store->log_from, sizeof *f * (size_t)cap);
        if (!f)
            abort();
        store->log_from = f;
        store->log_at_cap = cap;
    }
    store->log_from[store->log_chunks] = from;
    if (store->log_n + len > store->log_cap) {
        size_t cap = store->log_cap * 2 + len;
        uint8_t *b = realloc(store->log_bytes, cap);
        if (!b)
            abort();
        store->log_bytes = b;
        store->log_cap = cap;
    }
    memcpy(store->log_bytes + store->log_n, p, len);
    store->log_at[store->log_chunks] = store->log_n;
    store->log_n += len;
    store->log_at[++store->log_chunks] = store->log_n;
}

static void on_log_reply(rf_store_t *store, int status, redisReply *reply, int idx) {
    if (store->closing)
        return;
    int from = idx; /* the read's request */
    if (status != 0 || reply->type != REDIS_REPLY_ARRAY) {
        store->log_failed = 1;
    } else {
        for (size_t k = 0; k < reply->elements; k++)
            if (reply->element[k]->type == REDIS_REPLY_STRING)
                log_keep(store, from, reply->element[k]->str, reply->element[k]->len);
    }
    if (--store->log_waiting > 0)
        return;
    if (store->log_failed) {
        store->metrics->store_errors++;
        store->log_retry = 1;
        schedule_retry(store);
        return;
    }
    log_done(store, 0);
}

static void log_send(rf_store_t *store) {
    store->log_failed = 0;
    store->log_waiting = 0;
    store->log_chunks = 0;
    store->log_n = 0;
    for (int i = 0; i < store->logq_n; i++) {
        struct log_req *q = &store->logq[i];
        const char *argv[] = {"ZRANGEBYSCORE", q->key, q->lo, "+inf", "LIMIT", "0", q->count};
        size_t lens[] = {13, q->key_len, strlen(q->lo), 4, 5, 1, strlen(q->count)};
        if (send_cmd(store, key_slot(store, q->key, q->key_len), 7, argv, lens, on_log_reply,
                     i) != 0) {
            store->log_failed = 1;
            break;
        }
        store->log_waiting++;
    }
    if (store->log_waiting == 0) { /* nothing went out: retry the whole read later */
        store->metrics->store_errors++;
        store->log_retry = 1;
        schedule_retry(store);
    }
}

int rf_store_fetch_log(rf_store_t *store) {
    if (store->log_busy)
        return RF_E_BUSY;
    if (store->logq_n == 0 || store->backend != RF_STORE_REDIS)
        return 1;
    if (store->closing)
        return RF_E_CLOSED;
    store->log_busy = 1;
    log_send(store);
    return 0;
}

int rf_store_log_chunks(const rf_store_t *store) {
    return store->log_chunks;
}

const uint8_t *rf_store_log_chunk(const rf_store_t *store, int k, size_t *len, int *req) {
    *len = store->log_at[k + 1] - store->log_at[k];
    *req = store->log_from[k];
    return store->log_bytes + store->log_at[k];
}

static void on_prune_reply(rf_store_t *store, int status, redisReply *reply, int idx) {
    (void)idx;
    if (status != 0 || reply->type == REDIS_REPLY_ERROR)
        store->metrics->store_errors++; /* the next commit prunes again */
}

void rf_store_prune_log(rf_store_t *store, const char *topic, int32_t partition, int64_t below) {
    if (store->backend != RF_STORE_REDIS || store->closing)
        return;
    char key[LOG_KEY_MAX], max[32];
    size_t klen = log_key(store, topic, partition, key);
    if (klen == 0)
        return;
    int mlen = snprintf(max, sizeof max, "(%lld", (long long)below);
    const char *argv[] = {"ZREMRANGEBYSCORE", key, "-inf", max};
    size_t lens[] = {16, klen, 4, (size_t)mlen};
    if (send_cmd(store, key_slot(store, key, klen), 4, argv, lens, on_prune_reply, 0) != 0)
        store->metrics->store_errors++;
}

/* ---- flush ---- */

static void flush_start(rf_store_t *store);

/* The ring grows while generations wait for Redis (an outage: up to pipeline.max.inflight
 * events' worth), each slot keeping the buffers of the largest generation it held, for reuse.
 * Kept at that size, every outage would leave more slots at their high-water mark (the soak
 * measured the heap in use stepping up at each one). Once the backlog has drained to an
 * eighth of the ring, halve it and free the spare buffers that no longer fit; growing at full
 * and shrinking at an eighth never alternates on one generation. */
static void gens_shrink(rf_store_t *store) {
    while (store->gen_cap > GEN_RING_MIN && store->gen_n <= store->gen_cap / 8) {
        int cap = store->gen_cap / 2;
        struct gen *g = calloc((size_t)cap, sizeof *g);
        if (!g)
            return; /* keep the larger ring */
        for (int i = 0; i < store->gen_cap; i++) { /* the live ones first, then the spares */
            struct gen *old = gen_at(store, i);
            if (i < cap) {
                g[i] = *old;
            } else {
                free(old->bytes);
                free(old->recs);
                free(old->logs);
            }
        }
        free(store->gens);
        store->gens = g;
        store->gen_head = 0;
        store->gen_cap = cap;
    }
}

/* Generations up to `covers` are written: forget their snapshots. */
static void gens_written(rf_store_t *store, uint64_t covers) {
    while (store->gen_n > 0 && gen_at(store, 0)->id <= covers) {
        store->gen_head = (store->gen_head + 1) % store->gen_cap;
        store->gen_n--;
    }
    store->gen_flushed = covers;
    gens_shrink(store);
}

static void flush_finish(rf_store_t *store) {
    store->flush_busy = 0;
    store->flushing.n = 0;
    if (store->flush_failed) {
        store->metrics->store_errors++;
        store->flush_retry = 1;
        schedule_retry(store);
        return;
    }
    uint64_t covers = store->flush_covers;
    gens_written(store, covers);
    store->metrics->store_flushes++;
    store->retry_ms = STORE_RETRY_MIN_MS;
    store->cbs.flushed(store, covers, store->cbs.arg);
    if (store->gen_released > store->gen_flushed && !store->closing)
        flush_start(store);
}

static void on_flush_reply(rf_store_t *store, int status, redisReply *reply, int idx) {
    (void)idx;
    if (status != 0 || reply->type == REDIS_REPLY_ERROR)
        store->flush_failed = 1;
    /* The last reply is EXEC's: an array with one reply per SET and ZADD (nil when
     * aborted). */
    if (store->flush_waiting == 1 && status == 0 &&
        (reply->type != REDIS_REPLY_ARRAY ||
         reply->elements !=
             (size_t)(store->flushing.n + store->flush_logs + store->flush_extra)))
        store->flush_failed = 1;
    if (--store->flush_waiting == 0 && !store->closing)
        flush_finish(store);
}

static void flush_cluster(rf_store_t *store);

/* A cluster's flush command acknowledged: the step goes on once all of its are. */
static void on_cluster_flush(rf_store_t *store, int status, redisReply *reply, int idx) {
    (void)idx;
    if (status != 0 || reply->type == REDIS_REPLY_ERROR)
        store->flush_failed = 1;
    if (--store->flush_waiting > 0 || store->closing)
        return;
    if (!store->flush_failed)
        store->flush_step++;
    flush_cluster(store);
}

/* One command of the flush: inside the transaction (one server), or to the key's slot. */
static int flush_cmd(rf_store_t *store, int argc, const char **argv, const size_t *lens) {
    int rc = store->cluster ? send_cmd(store, key_slot(store, argv[1], lens[1]), argc, argv, lens,
                                       on_cluster_flush, 0)
                            : send_cmd(store, 0, argc, argv, lens, on_flush_reply, 0);
    if (rc != 0)
        return -1;
    store->flush_waiting++;
    return 0;
}

/* The k-th entity of the flush: its newest released snapshot, SET (PX its ttl), or for a
 * slice HSET of its field and PEXPIRE of the hash. 0, or -1 when a command could not go. */
static int flush_value(rf_store_t *store, int k) {
    uint32_t ref = (uint32_t)store->flushing.v[k];
    struct entry *e = ref_entry(store, ref);
    const char **argv = store->argv + 8 * k;
    size_t *lens = store->argvlen + 8 * k;
    const struct table *t = ref_table(store, ref);
    if (t->sliced) {
        /* This slice's field of the entity's hash; the ttl is the hash's. */
        argv[0] = "HSET";
        lens[0] = 4;
        argv[1] = e->key;
        lens[1] = e->key_len;
        argv[2] = e->key + e->key_len + 1;
        lens[2] = e->field_len;
        argv[3] = (const char *)e->flush_snap;
        lens[3] = t->vsize;
        argv[4] = "PEXPIRE";
        lens[4] = 7;
        argv[5] = e->key;
        lens[5] = e->key_len;
        argv[6] = t->ttl;
        lens[6] = t->ttl_len;
        if (flush_cmd(store, 4, argv, lens) != 0 ||
            (t->ttl_len && flush_cmd(store, 3, argv + 4, lens + 4) != 0))
            return -1;
        store->flush_extra += t->ttl_len != 0;
        return 0;
    }
    argv[0] = "SET";
    lens[0] = 3;
    argv[1] = e->key;
    lens[1] = e->key_len;
    argv[2] = (const char *)e->flush_snap;
    lens[2] = t->vsize;
    /* ttl=DUR: the value lives that long after its last write (labelled payments). */
    argv[3] = "PX";
    lens[3] = 2;
    argv[4] = t->ttl;
    lens[4] = t->ttl_len;
    return flush_cmd(store, t->ttl_len ? 5 : 3, argv, lens);
}

/* The journal chunks of the generations the flush covers, one ZADD each. */
static int flush_logs(rf_store_t *store) {
    const char **argv = store->argv + 8 * store->flushing.n;
    size_t *lens = store->argvlen + 8 * store->flushing.n;
    for (int i = 0; i < store->gen_n; i++) {
        struct gen *g = gen_at(store, i);
        if (g->id > store->flush_covers)
            break;
        for (int k = 0; k < g->n_logs; k++, argv += 4, lens += 4) {
            const struct log_rec *r = &g->logs[k];
            argv[0] = "ZADD";
            lens[0] = 4;
            argv[1] = (const char *)g->bytes + r->key_off;
            lens[1] = r->key_len;
            argv[2] = (const char *)g->bytes + r->score_off;
            lens[2] = r->score_len;
            argv[3] = (const char *)g->bytes + r->val_off;
            lens[3] = r->val_len;
            if (flush_cmd(store, 4, argv, lens) != 0)
                return -1;
        }
    }
    return 0;
}

/* A cluster runs a transaction only inside one slot, so its flush is three steps, each sent
 * once the one before is acknowledged: the journal chunks, then the values, then the values
 * of the kinds whose previous values delta() reads. A crash between two steps leaves some
 * entities holding an event and others not; the engine then applies it to those that do not
 * (README "Redis Cluster"): its outputs are in the journal, written first, and a late kind
 * holds it only if every other entity does, so the previous values it gives are right. */
static void flush_cluster(rf_store_t *store) {
    while (!store->flush_failed && store->flush_step <= 2) {
        int rc = 0;
        if (store->flush_step == 0) {
            rc = flush_logs(store);
        } else {
            for (int k = 0; k < store->flushing.n && rc == 0; k++)
                if (ref_table(store, (uint32_t)store->flushing.v[k])->late ==
                    (store->flush_step == 2))
                    rc = flush_value(store, k);
        }
        if (rc != 0)
            store->flush_failed = 1;
        if (store->flush_waiting > 0)
            return; /* on_cluster_flush goes on */
        if (!store->flush_failed)
            store->flush_step++;
    }
    flush_finish(store);
}

/* Write every released generation: per entity its newest released snapshot. */
static void flush_start(rf_store_t *store) {
    if (store->flush_busy || store->closing || store->gen_released <= store->gen_flushed)
        return;
    uint64_t covers = store->gen_released;
    uint64_t fid = ++store->flush_seq;
    int n_logs = 0;
    store->flushing.n = 0;
    for (int i = 0; i < store->gen_n; i++) {
        struct gen *g = gen_at(store, i);
        if (g->id > covers)
            break;
        n_logs += g->n_logs;
        for (int k = 0; k < g->n_recs; k++) {
            struct entry *e = ref_entry(store, g->recs[k].ref);
            e->flush_snap = g->bytes + g->recs[k].off; /* a newer generation overrides */
            if (e->flush_id != fid) {
                e->flush_id = fid;
                if (ivec_push(&store->flushing, (int32_t)g->recs[k].ref) != 0)
                    abort();
            }
        }
    }
    store->flush_busy = 1;
    store->flush_failed = 0;
    store->flush_waiting = 0;
    store->flush_covers = covers;
    store->flush_logs = n_logs;
    store->flush_extra = 0;
    int n = store->flushing.n;
    if (n == 0 && n_logs == 0) { /* empty generations: durable as they are */
        flush_finish(store);
        return;
    }
    if (ensure_argv(store, 8 * n + 4 * n_logs + 2) != 0)
        abort();
    if (store->cluster) {
        store->flush_step = 0;
        flush_cluster(store);
        return;
    }
    /* The whole transaction's bytes, reserved at once (RESP framing: under 96 bytes a
     * command besides its arguments). */
    size_t need = 64;
    for (int k = 0; k < n; k++) {
        uint32_t ref = (uint32_t)store->flushing.v[k];
        const struct entry *e = ref_entry(store, ref);
        need += 96 + 2u * e->key_len + e->field_len + ref_table(store, ref)->vsize;
    }
    for (int i = 0; i < store->gen_n; i++) {
        const struct gen *g = gen_at(store, i);
        if (g->id > covers)
            break;
        for (int k = 0; k < g->n_logs; k++)
            need += 96 + g->logs[k].key_len + g->logs[k].score_len + g->logs[k].val_len;
    }
    if (store->redis)
        (void)rf_redis_reserve(store->redis, need);
    static const char *const multi[] = {"MULTI"}, *const exec[] = {"EXEC"};
    static const size_t len5[] = {5}, len4[] = {4};
    if (flush_cmd(store, 1, (const char **)multi, len5) != 0)
        goto sent;
    for (int k = 0; k < n && !store->flush_failed; k++)
        if (flush_value(store, k) != 0)
            store->flush_failed = 1;
    /* The journal chunks of the same generations, in the same transaction: a state in Redis
     * always comes with the outputs of the events it holds. */
    if (!store->flush_failed && flush_logs(store) != 0)
        store->flush_failed = 1;
    /* A SET that could not be queued after MULTI was: DISCARD, so no half of this flush is
     * ever written and the connection leaves the transaction. */
    static const char *const discard[] = {"DISCARD"};
    static const size_t len7[] = {7};
    if (store->flush_failed)
        flush_cmd(store, 1, (const char **)discard, len7);
    else if (flush_cmd(store, 1, (const char **)exec, len4) != 0)
        store->flush_failed = 1;
sent:
    if (store->flush_waiting == 0) {
        store->flush_failed = 1;
        flush_finish(store); /* nothing was queued: retry later */
    }
}

void rf_store_release(rf_store_t *store, uint64_t gen) {
    if (gen > store->gen_closed)
        gen = store->gen_closed; /* a generation not closed yet has no snapshots to write */
    if (gen <= store->gen_released)
        return;
    store->gen_released = gen;
    if (store->backend == RF_STORE_MEMORY) {
        store->gen_flushed = gen;
        store->metrics->store_flushes++;
        store->cbs.flushed(store, gen, store->cbs.arg);
        return;
    }
    if (!store->flush_retry)
        flush_start(store);
}

/* ---- health ---- */

static void on_ping(rf_store_t *store, int status, redisReply *reply, int idx) {
    (void)idx;
    store->ping_busy = 0;
    if (store->closing)
        return;
    if (status == 0 && (reply->type != REDIS_REPLY_STATUS || strcmp(reply->str, "PONG") != 0))
        status = RF_E_REDIS;
    store->ping_cb(store, status, (uv_hrtime() - store->ping_t0) / 1000, store->ping_arg);
}

int rf_store_ping(rf_store_t *store, rf_store_ping_cb cb, void *arg) {
    if (!store->redis && !store->cluster)
        return 1;
    if (store->closing)
        return RF_E_CLOSED;
    if (store->ping_busy)
        return RF_E_BUSY;
    static const char *const argv[] = {"PING"};
    static const size_t lens[] = {4};
    store->ping_cb = cb;
    store->ping_arg = arg;
    store->ping_t0 = uv_hrtime();
    int rc = send_cmd(store, 0, 1, (const char **)argv, lens, on_ping, 0);
    if (rc == 0)
        store->ping_busy = 1;
    return rc;
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
    if (store->log_retry) {
        store->log_retry = 0;
        log_send(store);
    }
    if (store->epoch_retry) {
        store->epoch_retry = 0;
        epoch_send(store);
    }
    if (store->flush_retry) {
        store->flush_retry = 0;
        flush_start(store);
    }
    if (store->fetch_retry || store->flush_retry || store->log_retry || store->epoch_retry)
        schedule_retry(store);
}

static void schedule_retry(rf_store_t *store) {
    if (store->closing || uv_is_active((uv_handle_t *)&store->retry_timer))
        return;
    uv_timer_start(&store->retry_timer, on_retry, store->retry_ms, 0);
    store->retry_ms = store->retry_ms * 2 > STORE_RETRY_MAX_MS ? STORE_RETRY_MAX_MS
                                                                : store->retry_ms * 2;
}

static void on_cluster_state(rf_rcluster_t *c, int status, void *arg) {
    (void)c;
    rf_store_t *store = arg;
    if (store->cbs.state)
        store->cbs.state(store, status, store->cbs.arg);
}

static void on_redis_state(rf_redis_t *r, int status, void *arg) {
    rf_store_t *store = arg;
    if (store->cbs.state)
        store->cbs.state(store, status, store->cbs.arg);
}

int rf_store_idle(const rf_store_t *store) {
    return store->dirty.n == 0 && !store->flush_busy && !store->fetch_busy &&
           !store->flush_retry && !store->fetch_retry && !store->log_busy &&
           store->gen_flushed >= store->gen_closed;
}

int rf_store_foreign(const rf_store_t *store, uint32_t ref) {
    return ref_entry((rf_store_t *)store, ref)->status == ST_FOREIGN;
}

int rf_store_pending(const rf_store_t *store) {
    return store->redis     ? (int)rf_redis_pending(store->redis)
           : store->cluster ? (int)rf_rcluster_pending(store->cluster)
                            : 0;
}

const char *rf_store_errstr(const rf_store_t *store) {
    return store->redis     ? rf_redis_errstr(store->redis)
           : store->cluster ? rf_rcluster_errstr(store->cluster)
                            : "";
}

int rf_store_size(const rf_store_t *store) {
    int n = 0;
    for (int k = 0; k < store->n_tables; k++)
        n += store->tables[k].used;
    return n;
}

void rf_store_drop_clean(rf_store_t *store) {
    if (store->backend != RF_STORE_REDIS)
        return;
    for (int k = 0; k < store->n_tables; k++) {
        struct table *t = &store->tables[k];
        int32_t i = t->lru_head;
        while (i >= 0) {
            int32_t next = ent(t, i)->lru_next;
            if (evictable(store, ent(t, i)))
                drop(t, i);
            i = next;
        }
    }
}

rf_store_t *rf_store_new(uv_loop_t *loop, const struct rf_store_conf *conf, const rf_decl_t *decl,
                         const struct rf_store_cbs *cbs, struct rf_metrics *metrics,
                         char *errstr, size_t errstr_size) {
    if (strlen(conf->key_prefix) > RF_STORE_PREFIX_MAX) {
        snprintf(errstr, errstr_size, "redis.key.prefix longer than %d bytes",
                 RF_STORE_PREFIX_MAX);
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
    store->decl = decl;
    snprintf(store->prefix, sizeof store->prefix, "%s", conf->key_prefix);
    store->cache_max = conf->cache_max;
    store->foreign_stop = conf->foreign_stop;
    store->slice_refresh_ms = conf->slice_refresh_ms;
    store->retry_ms = STORE_RETRY_MIN_MS;
    store->n_tables = rf_decl_n_kinds(decl);
    for (int k = 0; k < store->n_tables; k++) {
        struct table *t = &store->tables[k];
        t->kind = k;
        t->vsize = rf_decl_value_size(decl, k);
        if (rf_decl_ttl_ms(decl, k) > 0)
            t->ttl_len = (size_t)snprintf(t->ttl, sizeof t->ttl, "%lld",
                                          (long long)rf_decl_ttl_ms(decl, k));
        t->sliced = conf->backend == RF_STORE_REDIS && rf_decl_sliced(decl, k);
        t->late = rf_decl_written_last(decl, k);
        /* A slice keeps the sum of the other slices after its value. */
        t->stride = (sizeof(struct entry) + t->vsize * (t->sliced ? 2u : 1u) + 7) & ~(size_t)7;
        t->free_head = -1;
        t->lru_head = t->lru_tail = -1;
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
            .unix_path = conf->redis_socket,
            .user = conf->redis_user,
            .password = conf->redis_password,
        };
        if (conf->redis_cluster && *conf->redis_cluster) {
            struct rf_rcluster_conf cc = {.seeds = conf->redis_cluster, .node = rc};
            if (conf->redis_socket)
                snprintf(errstr, errstr_size, "redis.socket: a cluster is reached over TCP");
            else
                store->cluster = rf_rcluster_new(loop, &cc, on_cluster_state, store, errstr,
                                                 errstr_size);
        } else {
            store->redis = rf_redis_new(loop, &rc, on_redis_state, store, errstr, errstr_size);
        }
        if (!store->redis && !store->cluster) {
            /* The timer is a live handle now: free through its close callback, as always. */
            store->closing = 1;
            store->closing_left = 1;
            uv_close((uv_handle_t *)&store->retry_timer, on_timer_closed);
            return NULL;
        }
    }
    return store;
}

static void free_store(rf_store_t *store) {
    void (*cb)(void *) = store->close_cb;
    void *arg = store->close_arg;
    for (int k = 0; k < store->n_tables; k++) {
        struct table *t = &store->tables[k];
        for (int c = 0; c < t->n_chunks; c++)
            free(t->chunks[c]);
        free(t->chunks);
        free(t->buckets);
    }
    for (int i = 0; i < store->gen_cap; i++) {
        free(store->gens[i].bytes);
        free(store->gens[i].recs);
        free(store->gens[i].logs);
    }
    free(store->logq);
    free(store->log_bytes);
    free(store->log_at);
    free(store->log_from);
    free(store->gens);
    free(store->dirty.v);
    free(store->to_fetch.v);
    free(store->fetching.v);
    free(store->fetch_plain.v);
    free(store->fetch_sliced.v);
    free(store->fetch_nils.v);
    free(store->fetch_group.v);
    free(store->flushing.v);
    free(store->sort_buf);
    for (int c = 0; c < store->n_req_chunks; c++)
        free(store->req_chunks[c]);
    free(store->req_chunks);
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
    if (store->log_busy)
        log_done(store, RF_E_CLOSED);
    if (store->epoch_busy) {
        store->epoch_busy = 0;
        store->epoch_cb(store, RF_E_CLOSED, NULL, 0, store->epoch_arg);
    }
    store->closing_left = store->redis || store->cluster ? 2 : 1;
    uv_close((uv_handle_t *)&store->retry_timer, on_timer_closed);
    if (store->redis)
        rf_redis_close(store->redis, on_redis_closed, store);
    if (store->cluster)
        rf_rcluster_close(store->cluster, on_redis_closed, store);
}
