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
#include "riskflow/redis.h"

#define KEY_MAX 192 /* prefix (32) : kind (47) :{ id (63) } */
#define CHUNK_SHIFT 10
#define CHUNK (1 << CHUNK_SHIFT)
#define IDX_MAX ((1 << 28) - 1)
#define STORE_RETRY_MIN_MS 50
#define STORE_RETRY_MAX_MS 2000

enum { ST_READY, ST_NEW, ST_LOADING };

struct entry {
    char key[KEY_MAX];
    uint16_t key_len;
    uint8_t status;
    uint8_t dirty; /* changed since the last closed generation */
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
    uint32_t vsize;
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

struct gen {
    uint64_t id;
    uint8_t *bytes;
    size_t n, cap;
    struct snap_rec *recs;
    int n_recs, cap_recs;
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

    /* The fetch in flight: one MGET. */
    struct ivec fetching;
    int fetch_busy;
    int fetch_retry;

    /* Generations not yet written: a ring of gen buffers, oldest first. */
    struct gen *gens;
    int gen_cap, gen_head, gen_n;
    uint64_t gen_closed;   /* the last closed generation */
    uint64_t gen_released; /* generations up to this may be written */
    uint64_t gen_flushed;  /* ... and up to this are */

    /* The flush in flight: MULTI, SETs, EXEC. */
    struct ivec flushing;
    uint64_t flush_covers;
    uint64_t flush_seq;
    int flush_busy;
    int flush_waiting; /* replies still expected */
    int flush_failed;
    int flush_retry;

    /* hiredis argv for MGET / SET, grown to the largest seen. */
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
    return !e->dirty && e->pins == 0 && e->status == ST_READY &&
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
    struct table *t = &store->tables[kind];
    const char *kname = rf_decl_kind_name(store->decl, kind);
    size_t plen = strlen(store->prefix), klen = strlen(kname);
    if (id_len == 0 || plen + klen + id_len + 5 > KEY_MAX - 1)
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
    uint32_t h = rf_fnv1a32(key, n);

    if (t->nbuckets) {
        for (int32_t i = t->buckets[h & (t->nbuckets - 1)]; i >= 0; i = ent(t, i)->hnext) {
            struct entry *e = ent(t, i);
            if (e->hash != h || e->key_len != n || memcmp(e->key, key, n) != 0)
                continue;
            /* Loaded before the last rebalance and untouched since: another member may have
             * changed it in Redis meanwhile, so read it again. One holding our own unwritten
             * events stays (the stale-writer case, docs/ENGINE.md). */
            if (store->backend == RF_STORE_REDIS && e->epoch != store->epoch && evictable(store, e)) {
                e->status = ST_NEW;
                if (ivec_push(&store->to_fetch, (int32_t)RF_STORE_REF(kind, i)) != 0)
                    abort();
            }
            e->epoch = store->epoch;
            e->pins++;
            lru_unlink(t, i);
            lru_push_front(t, i);
            *ref = RF_STORE_REF(kind, i);
            return e->status == ST_READY;
        }
    }
    if (store->backend == RF_STORE_REDIS && t->used >= store->cache_max)
        evict(store, t);
    if (t->free_head < 0 && grow_table(t) != 0)
        abort(); /* like Redis: out of memory is not a state to run on in */
    int32_t i = t->free_head;
    struct entry *e = ent(t, i);
    t->free_head = e->hnext;
    memcpy(e->key, key, n + 1);
    e->key_len = (uint16_t)n;
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

static void schedule_retry(rf_store_t *store);
static void on_timer_closed(uv_handle_t *h);

/* ---- fetch ---- */

static void fetch_done(rf_store_t *store, int status) {
    store->fetch_busy = 0;
    store->fetching.n = 0;
    store->retry_ms = STORE_RETRY_MIN_MS;
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
        uint32_t ref = (uint32_t)store->fetching.v[k];
        int kind = (int)(ref >> 28);
        struct entry *e = ref_entry(store, ref);
        redisReply *el = reply->element[k];
        if (el->type == REDIS_REPLY_STRING &&
            rf_feat_check_value(store->decl, kind, (const uint8_t *)el->str, el->len) == 0) {
            memcpy(e->value, el->str, el->len);
        } else {
            if (el->type == REDIS_REPLY_STRING) {
                /* Another layout, version or declaration: never misread it. */
                store->metrics->store_mismatch++;
                if (store->cbs.mismatch)
                    store->cbs.mismatch(store, e->key, store->cbs.arg);
                if (store->closing)
                    return; /* closed from the callback: it reported the fetch as closed */
            }
            rf_feat_init_value(store->decl, kind, e->value);
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
        struct entry *e = ref_entry(store, (uint32_t)store->fetching.v[k]);
        store->argv[k + 1] = e->key;
        store->argvlen[k + 1] = e->key_len;
    }
    return rf_redis_command_argv(store->redis, n + 1, store->argv, store->argvlen, on_mget, store);
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
    for (int k = 0; k < store->fetching.n; k++)
        ref_entry(store, (uint32_t)store->fetching.v[k])->status = ST_LOADING;
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
        int cap = store->gen_cap ? store->gen_cap * 2 : 64;
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
    return g;
}

static void gen_add(struct gen *g, uint32_t ref, const uint8_t *value, uint32_t size) {
    if (g->n + size > g->cap) {
        size_t cap = (g->cap ? g->cap * 2 : 65536) + size;
        uint8_t *b = realloc(g->bytes, cap);
        if (!b)
            abort();
        g->bytes = b;
        g->cap = cap;
    }
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

/* ---- flush ---- */

static void flush_start(rf_store_t *store);

/* Generations up to `covers` are written: forget their snapshots. */
static void gens_written(rf_store_t *store, uint64_t covers) {
    while (store->gen_n > 0 && gen_at(store, 0)->id <= covers) {
        store->gen_head = (store->gen_head + 1) % store->gen_cap;
        store->gen_n--;
    }
    store->gen_flushed = covers;
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

static void on_flush_reply(rf_redis_t *r, int status, redisReply *reply, void *arg) {
    rf_store_t *store = arg;
    if (status != 0 || reply->type == REDIS_REPLY_ERROR)
        store->flush_failed = 1;
    /* The last reply is EXEC's: an array with one reply per SET (nil when aborted). */
    if (store->flush_waiting == 1 && status == 0 &&
        (reply->type != REDIS_REPLY_ARRAY || reply->elements != (size_t)store->flushing.n))
        store->flush_failed = 1;
    if (--store->flush_waiting == 0 && !store->closing)
        flush_finish(store);
}

static int flush_cmd(rf_store_t *store, int argc, const char **argv, const size_t *lens) {
    if (rf_redis_command_argv(store->redis, argc, argv, lens, on_flush_reply, store) != 0)
        return -1;
    store->flush_waiting++;
    return 0;
}

/* Write every released generation: per entity its newest released snapshot. */
static void flush_start(rf_store_t *store) {
    if (store->flush_busy || store->closing || store->gen_released <= store->gen_flushed)
        return;
    uint64_t covers = store->gen_released;
    uint64_t fid = ++store->flush_seq;
    store->flushing.n = 0;
    for (int i = 0; i < store->gen_n; i++) {
        struct gen *g = gen_at(store, i);
        if (g->id > covers)
            break;
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
    int n = store->flushing.n;
    if (n == 0) { /* empty generations: durable as they are */
        flush_finish(store);
        return;
    }
    if (ensure_argv(store, 3 * n + 2) != 0)
        abort();
    static const char *const multi[] = {"MULTI"}, *const exec[] = {"EXEC"};
    static const size_t len5[] = {5}, len4[] = {4};
    if (flush_cmd(store, 1, (const char **)multi, len5) != 0)
        goto sent;
    for (int k = 0; k < n; k++) {
        uint32_t ref = (uint32_t)store->flushing.v[k];
        struct entry *e = ref_entry(store, ref);
        const char **argv = store->argv + 3 * k;
        size_t *lens = store->argvlen + 3 * k;
        argv[0] = "SET";
        lens[0] = 3;
        argv[1] = e->key;
        lens[1] = e->key_len;
        argv[2] = (const char *)e->flush_snap;
        lens[2] = ref_table(store, ref)->vsize;
        if (flush_cmd(store, 3, argv, lens) != 0) {
            store->flush_failed = 1;
            break;
        }
    }
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
    store->retry_ms = store->retry_ms * 2 > STORE_RETRY_MAX_MS ? STORE_RETRY_MAX_MS
                                                                : store->retry_ms * 2;
}

static void on_redis_state(rf_redis_t *r, int status, void *arg) {
    rf_store_t *store = arg;
    if (store->cbs.state)
        store->cbs.state(store, status, store->cbs.arg);
}

int rf_store_idle(const rf_store_t *store) {
    return store->dirty.n == 0 && !store->flush_busy && !store->fetch_busy &&
           !store->flush_retry && !store->fetch_retry && store->gen_flushed >= store->gen_closed;
}

const char *rf_store_errstr(const rf_store_t *store) {
    return store->redis ? rf_redis_errstr(store->redis) : "";
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
    store->retry_ms = STORE_RETRY_MIN_MS;
    store->n_tables = rf_decl_n_kinds(decl);
    for (int k = 0; k < store->n_tables; k++) {
        struct table *t = &store->tables[k];
        t->kind = k;
        t->vsize = rf_decl_value_size(decl, k);
        t->stride = (sizeof(struct entry) + t->vsize + 7) & ~(size_t)7;
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
        };
        store->redis = rf_redis_new(loop, &rc, on_redis_state, store, errstr, errstr_size);
        if (!store->redis) {
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
    }
    free(store->gens);
    free(store->dirty.v);
    free(store->to_fetch.v);
    free(store->fetching.v);
    free(store->flushing.v);
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
