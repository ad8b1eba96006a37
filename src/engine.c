/*
 * engine.c — one micro-batch at a time from the consumer through the jobs to the producer,
 * and the bookkeeping that turns out-of-order completions into safe offsets and safe writes.
 * See engine.h and docs/ENGINE.md.
 *
 * Loop thread only: librdkafka callbacks (rebalance, delivery reports, logs) run here because
 * we serve its queues from the loop; store callbacks run from Redis replies on the loop.
 * Must never: store an offset past an event that is not complete; produce an output before the
 * flush that journals it has succeeded (a replay would not find it); drop a message without an
 * outcome; apply an event twice (replays); allocate per event once warm (librdkafka's own
 * message copies aside).
 */
#include "riskflow/engine.h"
#include "riskflow/keyhash.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "riskflow/err.h"
#include "riskflow/feat.h"
#include "riskflow/job.h"
#include "riskflow/journal.h"
#include "riskflow/jobs.h"
#include "riskflow/log.h"
#include "riskflow/offsets.h"
#include "riskflow/outputs.h"
#include "riskflow/sink.h"

#define NO_REF UINT32_MAX
#define TAG_DLQ 0xff /* the job byte of a dead letter's tag */

enum { TXN_OPEN, TXN_QUIESCE, TXN_ENDING }; /* exactly-once: the transaction's phase */
#define JG_RING_MIN 16 /* the journal ring's first size (jgen_push, jgen_shrink) */

struct evt {
    rd_kafka_message_t *rkm; /* owned: destroyed when the event leaves its partition FIFO */
    int32_t part;
    int32_t flush_next; /* FIFO of events waiting for their generation's flush, then free list */
    int64_t offset;
    uint64_t t_in_ns;
    uint64_t t_proc_ns; /* its batch was processed (0: not yet) */
    uint64_t gen;     /* its batch's generation (0: dead-lettered, none) */
    int32_t pending;  /* outputs not yet acknowledged + 1 while its generation is unwritten */
    int32_t out_head, out_tail; /* its outputs staged in this batch (struct stage indices) */
    int8_t reason;    /* 0: a record; else -RF_E_* of why it is dead-lettered */
    uint8_t replay;
    int16_t jreq;     /* a replay: its journal read's index, else -1 */
    int16_t rtype;    /* its record type's index once framed, else -1: whose dead letter */
    uint8_t hashed;   /* its input.hash.fields are tokens (rec.ext) */
    uint32_t refs[RF_KINDS_MAX];
    struct rf_rec rec;
    char ext[RF_HASH_FIELDS_MAX * RF_KEYHASH_TOKEN_LEN]; /* the tokens rec.ext points at */
};

struct job {
    const struct rf_job_ops *ops;
    void *obj;
    int index; /* in the jobs table: its config and metrics slot */
};

struct rf_job_host {
    rf_engine_t *e;
};

/* An output a job wrote in the current batch, encoded as a journal output record at
 * stage_bytes[at, at + size); key and payload at the given distances from `at`. */
struct stage {
    int32_t next;
    uint8_t job, kind;
    rf_out_topic_t *topic;
    size_t at, size, key_rel, key_len, pay_rel, len;
};

/* An output journaled in a generation, produced once the generation's flush succeeds. */
struct pend {
    int32_t slot;
    uint8_t job, kind;
    rf_out_topic_t *topic;
    size_t key_at, key_len, pay_at, len; /* in the generation's journal bytes */
};

/* A closed generation's journal chunks and outputs, until they are produced. */
struct jgen {
    uint64_t gen;
    struct rf_jbuf bytes;
    struct pend *p;
    int n, cap;
};

struct rf_engine_s {
    uint64_t assignments; /* assignment callbacks so far (0 partitions included) */
    struct rf_engine_deps d;
    rf_store_t *store;
    rf_outputs_t *out;
    rf_offsets_t *offs;
    struct rf_job_host host;
    struct job jobs[RF_JOBS_KNOWN_MAX];
    int n_jobs;
    char job_names[256];
    /* by record type index: which of our jobs take it (bit j: jobs[j]) */
    uint32_t *takers;
    int n_rtypes;
    int n_kinds;
    uint32_t sliced;           /* bit k: kind k is sliced (decl.h) */
    int reloading;             /* a model reload is staging off the loop */
    /* input.hash.fields: the key, and per record type index the fields to replace */
    rf_keyhash_t *keyhash;
    int hash_original;         /* input.hash.dlq=original: the clear bytes stay */
    int8_t (*hash_fields)[RF_HASH_FIELDS_MAX]; /* by record type; -1 ends */
    uint64_t batch_t0;         /* uv_hrtime() the current batch was formed */
    uint8_t *view[RF_KINDS_MAX]; /* sliced kinds: a slice plus the others, as jobs read it */
    int print;
    rf_sink_t *sink; /* outputs.print=stdout: lines go to a thread of their own */
    char commit_md[96]; /* metadata every commit carries: "rf.epoch=<id>" */

    struct evt *pool;
    int pool_n;
    int32_t free_head;
    int inflight;

    int32_t batch[256];
    int batch_n;
    int fetch_wait;
    int starved; /* stopped taking messages for lack of room: resume on completion */

    int32_t flush_head, flush_tail;

    /* the current batch's outputs, staged until the batch closes its generation */
    struct stage *stage;
    int stage_n, stage_cap;
    struct rf_jbuf stage_bytes;

    /* generations closed and not yet produced: a ring, oldest first (buffers reused) */
    struct jgen *jg;
    int jg_cap, jg_head, jg_n;

    uv_idle_t kick;
    uv_timer_t revoke_timer;
    int closing_left;
    void (*close_cb)(void *);
    void *close_arg;

    int stopping;
    int failed;
    rd_kafka_topic_partition_list_t *revoking; /* a revocation waiting for its events */
    int revoke_works; /* revocation commits on the threadpool, their unassign still to come */
    int revoking_cooperative;
    uint64_t revoke_deadline_ms;
    uint64_t log_budget_reset_ms;
    int log_budget;

    /* exactly-once (d.txn) */
    int txn_phase;    /* TXN_*: quiescing stops taking; ending runs on a worker */
    const char *txn_doomed; /* why the transaction must abort (an output failed inside it, the
                             * assignment was lost), NULL: it may commit */
    uint64_t txn_taken; /* events taken since the transaction began */
    uv_timer_t txn_timer; /* starts an end from a clean stack */
};

/* Per-message problems are logged at most 20 times a second: the counters have the rest. */
static int log_allowed(rf_engine_t *e) {
    uint64_t now = uv_now(e->d.loop);
    if (now - e->log_budget_reset_ms >= 1000) {
        e->log_budget_reset_ms = now;
        e->log_budget = 20;
    }
    return e->log_budget-- > 0;
}

int64_t rf_job_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static uint64_t make_tag(int32_t slot, int job, int kind) {
    return (uint64_t)slot << 16 | (uint64_t)(job & 0xff) << 8 | (uint64_t)(kind & 0xff);
}

static void kick(rf_engine_t *e);
static void on_revoke_timer(uv_timer_t *t);
static void txn_check(rf_engine_t *e);
static void txn_request(rf_engine_t *e);
static void revoke_settle(rf_engine_t *e);

/* Something no retry can mend: the daemon stops (offsets of unfinished events unstored). */
static void fail(rf_engine_t *e) {
    e->failed = 1;
    e->d.on_idle(e->d.arg);
}

/* ---- completion ---- */

static void release_slot(int32_t slot, void *arg) {
    rf_engine_t *e = arg;
    struct evt *ev = &e->pool[slot];
    rd_kafka_message_destroy(ev->rkm);
    ev->rkm = NULL;
    ev->flush_next = e->free_head;
    e->free_head = slot;
    e->inflight--;
}

static void complete(rf_engine_t *e, int32_t slot) {
    struct evt *ev = &e->pool[slot];
    struct rf_metrics *m = e->d.metrics;
    uint64_t now = uv_hrtime();
    uint64_t us = (now - ev->t_in_ns) / 1000;
    rf_hist_add(&m->latency, us);
    if (ev->t_proc_ns)
        rf_hist_add(&m->stage_ack, (now - ev->t_proc_ns) / 1000);
    m->last_done_ns = now;
    if (ev->reason == 0) {
        m->scored++;
        uint32_t takers = e->takers[ev->rec.type->index];
        for (int j = 0; j < e->n_jobs; j++) {
            if (takers & (1u << j)) {
                struct rf_job_metrics *jm = &m->jobs[e->jobs[j].index];
                jm->events++;
                rf_hist_add(&jm->latency, us);
            }
        }
    }
    int part;
    int64_t off = rf_offsets_done(e->offs, slot, &part, release_slot, e);
    if (off >= 0) {
        struct rf_part *pt = rf_offsets_part_at(e->offs, part);
        rd_kafka_resp_err_t err = rd_kafka_offset_store(pt->handle, pt->partition, off);
        if (err) {
            if (log_allowed(e))
                RF_WARN("KAFKA", "offset store %s [%" PRId32 "] @%" PRId64 ": %s", pt->topic,
                        pt->partition, off + 1, rd_kafka_err2str(err));
        } else {
            rf_offsets_stored(e->offs, part, off);
            m->offsets_stored++;
        }
    }
    /* A revocation waits for its partitions to drain: look again from a clean stack (it
     * commits synchronously and unassigns, which must not run inside a delivery report). */
    if (e->revoking && !e->d.txn && !uv_is_closing((uv_handle_t *)&e->revoke_timer))
        uv_timer_start(&e->revoke_timer, on_revoke_timer, 0, 0);
    if (e->txn_phase == TXN_QUIESCE)
        txn_check(e);
    if (e->stopping || e->failed)
        e->d.on_idle(e->d.arg);
    else if (e->starved)
        kick(e);
}

static void unpend(rf_engine_t *e, int32_t slot) {
    if (--e->pool[slot].pending == 0)
        complete(e, slot);
}

/* ---- outputs ---- */

rf_out_topic_t *rf_job_topic(rf_job_host_t *host, const char *name) {
    return rf_outputs_topic(host->e->out, name);
}

/* Outputs wait for the flush that journals them: staged here until the batch closes. */
void rf_job_emit(rf_job_host_t *host, int32_t handle, int jobs_index, int kind,
                 rf_out_topic_t *topic, const void *key, size_t key_len, const void *payload,
                 size_t len) {
    rf_engine_t *e = host->e;
    struct evt *ev = &e->pool[handle];
    if (ev->replay)
        return; /* its first outputs come from the journal (repair) */
    if (e->stage_n == e->stage_cap) {
        int cap = e->stage_cap ? e->stage_cap * 2 : 256;
        struct stage *st = realloc(e->stage, sizeof *st * (size_t)cap);
        if (!st)
            abort(); /* grows once, to the largest batch's outputs */
        e->stage = st;
        e->stage_cap = cap;
    }
    struct stage *st = &e->stage[e->stage_n];
    size_t at = e->stage_bytes.n, key_at, pay_at;
    if (rf_journal_output(&e->stage_bytes, jobs_index, kind, rf_outputs_topic_name(topic), key,
                          key_len, payload, len, &key_at, &pay_at) != 0) {
        /* A key over 64 KiB: no entity id is; a job bug, not an input problem. */
        RF_ERR("ENGINE", "output of %s: key of %zu bytes cannot be journaled",
               rf_outputs_topic_name(topic), key_len);
        fail(e);
        return;
    }
    *st = (struct stage){-1, (uint8_t)jobs_index, (uint8_t)kind, topic, at,
                         e->stage_bytes.n - at, key_at - at, key_len, pay_at - at, len};
    if (ev->out_tail >= 0)
        e->stage[ev->out_tail].next = e->stage_n;
    else
        ev->out_head = e->stage_n;
    ev->out_tail = e->stage_n++;
}

void rf_engine_set_print(rf_engine_t *e, int on) {
    e->print = on;
}

void rf_job_pass(rf_job_host_t *host, int jobs_index) {
    host->e->d.metrics->jobs[jobs_index].passed++;
}

static struct job *job_by_index(rf_engine_t *e, int index) {
    for (int j = 0; j < e->n_jobs; j++)
        if (e->jobs[j].index == index)
            return &e->jobs[j];
    return NULL;
}

static void on_acked(uint64_t tag, const rd_kafka_message_t *rkm, void *arg) {
    rf_engine_t *e = arg;
    int32_t slot = (int32_t)(tag >> 16);
    int job = (int)((tag >> 8) & 0xff), kind = (int)(tag & 0xff);
    struct evt *ev = &e->pool[slot];
    struct rf_metrics *m = e->d.metrics;
    if (job == TAG_DLQ) {
        m->dead_lettered++;
        if (ev->reason > 0 && ev->reason < RF_DLQ_REASONS)
            m->dlq_by_reason[ev->reason]++;
        /* A record of a known type that its jobs could not take (an empty key, a body cut
         * short): theirs too. Garbage, unknown ids and wrong types belong to no job. */
        uint32_t takers = ev->rtype >= 0 ? e->takers[ev->rtype] : 0;
        for (int j = 0; j < e->n_jobs; j++)
            if (takers & (1u << j))
                m->jobs[e->jobs[j].index].dead_lettered++;
        unpend(e, slot);
        return;
    }
    /* A replayed output may name a job of another config: counted only if it is one of ours. */
    struct job *jb = job_by_index(e, job);
    if (jb && kind < RF_METRIC_KINDS)
        m->jobs[job].outputs[kind]++;
    if (e->print && e->sink && jb && jb->ops->print) {
        jb->ops->print(jb->obj, kind, rkm->payload, rkm->len, rf_sink_begin(e->sink));
        rf_sink_commit(e->sink);
    }
    unpend(e, slot);
}

void rf_engine_fail(rf_engine_t *e) {
    fail(e);
}

static void on_output_failed(uint64_t tag, const char *what, void *arg) {
    fail(arg);
}

/* Exactly-once: an output failed inside the transaction. The event counts as done for the
 * quiesce; the abort voids all of the transaction and its inputs are consumed again. */
static void on_output_lost(uint64_t tag, const char *what, void *arg) {
    rf_engine_t *e = arg;
    (void)what;
    e->txn_doomed = "an output failed inside it";
    e->d.metrics->txn_lost++;
    txn_request(e);
    unpend(e, (int32_t)(tag >> 16));
}

void rf_engine_dr_cb(rd_kafka_t *rkp, const rd_kafka_message_t *rkm, void *opaque) {
    rf_engine_t *e = opaque;
    rf_outputs_dr_cb(rkp, rkm, e->out);
}

void rf_engine_serve_producer(rf_engine_t *e) {
    while (rd_kafka_poll(e->d.rkp, 0) > 0)
        ;
}

/* ---- the batch ---- */

static void dead_letter(rf_engine_t *e, int32_t slot) {
    struct evt *ev = &e->pool[slot];
    const struct rf_part *pt = rf_offsets_part_at(e->offs, ev->part);
    int rc = -ev->reason;
    ev->pending = 1;
    rf_outputs_dlq(e->out, make_tag(slot, TAG_DLQ, 0), ev->rkm, rf_err_reason(rc),
                   rf_strerror(rc), pt->topic, pt->partition, ev->offset,
                   e->keyhash && !e->hash_original && !ev->hashed);
}

static void unpin_all(rf_engine_t *e, struct evt *ev) {
    for (int k = 0; k < e->n_kinds; k++) {
        if (ev->refs[k] != NO_REF) {
            rf_store_unpin(e->store, ev->refs[k]);
            ev->refs[k] = NO_REF;
        }
    }
}

/* One job hook (hook NULL: its end_batch), timed when the engine times jobs. */
static void run_hook(rf_engine_t *e, int j, void (*hook)(void *, const struct rf_job_event *),
                     const struct rf_job_event *jev) {
    uint64_t t0 = e->d.time_jobs ? uv_hrtime() : 0;
    if (hook)
        hook(e->jobs[j].obj, jev);
    else
        e->jobs[j].ops->end_batch(e->jobs[j].obj);
    if (t0)
        e->d.metrics->jobs[e->jobs[j].index].ns += uv_hrtime() - t0;
}

/* ---- journal ---- */

static struct jgen *jgen_at(rf_engine_t *e, int i) {
    return &e->jg[(e->jg_head + i) % e->jg_cap];
}

static struct jgen *jgen_push(rf_engine_t *e, uint64_t gen) {
    if (e->jg_n == e->jg_cap) {
        int cap = e->jg_cap ? e->jg_cap * 2 : JG_RING_MIN;
        struct jgen *v = calloc((size_t)cap, sizeof *v);
        if (!v)
            abort();
        for (int i = 0; i < e->jg_cap; i++)
            v[i] = *jgen_at(e, i); /* live ones first, then the spare buffers */
        free(e->jg);
        e->jg = v;
        e->jg_head = 0;
        e->jg_cap = cap;
    }
    struct jgen *g = jgen_at(e, e->jg_n++);
    g->gen = gen;
    g->bytes.n = 0;
    g->n = 0;
    return g;
}

static void pend_push(struct jgen *g, const struct pend *p) {
    if (g->n == g->cap) {
        int cap = g->cap ? g->cap * 2 : 64;
        struct pend *v = realloc(g->p, sizeof *v * (size_t)cap);
        if (!v)
            abort();
        g->p = v;
        g->cap = cap;
    }
    g->p[g->n++] = *p;
}

/* Journal the batch's staged outputs in generation `gen`: one chunk per input partition, its
 * events in offset order, handed to the store to be written with the generation. */
static void journal_batch(rf_engine_t *e, uint64_t gen) {
    struct jgen *g = jgen_push(e, gen);
    uint8_t done[256] = {0};
    for (int b = 0; b < e->batch_n; b++) {
        struct evt *ev = &e->pool[e->batch[b]];
        if (done[b] || ev->reason || ev->replay || ev->out_head < 0)
            continue;
        size_t chunk_at = rf_journal_chunk_begin(&g->bytes);
        uint32_t n_entries = 0;
        int64_t last = 0;
        for (int c = b; c < e->batch_n; c++) {
            int32_t slot = e->batch[c];
            struct evt *ec = &e->pool[slot];
            if (done[c] || ec->part != ev->part || ec->reason || ec->replay || ec->out_head < 0)
                continue;
            done[c] = 1;
            size_t entry_at = rf_journal_entry_begin(&g->bytes, ec->offset);
            int n_out = 0;
            for (int32_t i = ec->out_head; i >= 0; i = e->stage[i].next, n_out++) {
                const struct stage *st = &e->stage[i];
                size_t at = g->bytes.n;
                memcpy(rf_jbuf_room(&g->bytes, st->size), e->stage_bytes.b + st->at, st->size);
                g->bytes.n += st->size;
                pend_push(g, &(struct pend){slot, st->job, st->kind, st->topic,
                                            at + st->key_rel, st->key_len, at + st->pay_rel,
                                            st->len});
            }
            rf_journal_entry_end(&g->bytes, entry_at, n_out);
            n_entries++;
            last = ec->offset;
        }
        rf_journal_chunk_end(&g->bytes, chunk_at, n_entries);
        const struct rf_part *pt = rf_offsets_part_at(e->offs, ev->part);
        if (rf_store_add_log(e->store, pt->topic, pt->partition, last, g->bytes.b + chunk_at,
                             g->bytes.n - chunk_at) != 0) {
            RF_ERR("ENGINE", "journal of %s [%" PRId32 "]: cannot be written", pt->topic,
                   pt->partition);
            fail(e);
        }
    }
    e->stage_n = 0;
    e->stage_bytes.n = 0;
}

/* As the store's generation ring (store.c, gens_shrink): grown while an outage held
 * generations back, halved once they are down to an eighth of it, the spare buffers that no
 * longer fit freed. */
static void jgen_shrink(rf_engine_t *e) {
    while (e->jg_cap > JG_RING_MIN && e->jg_n <= e->jg_cap / 8) {
        int cap = e->jg_cap / 2;
        struct jgen *v = calloc((size_t)cap, sizeof *v);
        if (!v)
            return; /* keep the larger ring */
        for (int i = 0; i < e->jg_cap; i++) { /* the live ones first, then the spares */
            struct jgen *old = jgen_at(e, i);
            if (i < cap) {
                v[i] = *old;
            } else {
                rf_jbuf_free(&old->bytes);
                free(old->p);
            }
        }
        free(e->jg);
        e->jg = v;
        e->jg_head = 0;
        e->jg_cap = cap;
    }
}

/* Produce the journaled outputs of every generation up to `gen`: their flush succeeded. */
static void produce_gens(rf_engine_t *e, uint64_t gen) {
    while (e->jg_n > 0 && jgen_at(e, 0)->gen <= gen) {
        struct jgen *g = jgen_at(e, 0);
        for (int i = 0; i < g->n; i++) {
            const struct pend *p = &g->p[i];
            e->pool[p->slot].pending++;
            rf_outputs_produce(e->out, make_tag(p->slot, p->job, p->kind), p->topic,
                               g->bytes.b + p->key_at, p->key_len, g->bytes.b + p->pay_at,
                               p->len);
        }
        e->jg_head = (e->jg_head + 1) % e->jg_cap;
        e->jg_n--;
    }
    jgen_shrink(e);
}

/* A replay: produce the outputs its first pass journaled (read back from the store), exactly
 * as they were. None found: it wrote none (or its journal was pruned after a commit). */
static void replay_outputs(rf_engine_t *e, int32_t slot, int req) {
    struct evt *ev = &e->pool[slot];
    int chunks = req >= 0 ? rf_store_log_chunks(e->store) : 0;
    for (int k = 0; k < chunks; k++) {
        size_t len;
        int from;
        const uint8_t *c = rf_store_log_chunk(e->store, k, &len, &from);
        const uint8_t *p;
        int n;
        if (from != req)
            continue;
        int rc = rf_journal_find(c, len, ev->offset, &p, &n);
        if (rc < 0) {
            e->d.metrics->journal_bad++;
            if (log_allowed(e))
                RF_WARN("ENGINE", "a journal chunk of %zu bytes is not well-formed: ignored",
                        len);
            continue;
        }
        if (rc == 0)
            continue;
        for (int i = 0; i < n; i++) {
            struct rf_jout o;
            char topic[RF_JOURNAL_TOPIC_MAX + 1];
            rf_journal_next(&p, &o);
            memcpy(topic, o.topic, o.topic_len);
            topic[o.topic_len] = '\0';
            rf_out_topic_t *t = rf_outputs_topic(e->out, topic);
            if (!t) {
                RF_ERR("ENGINE", "replay: no handle for topic %s", topic);
                fail(e);
                return;
            }
            ev->pending++;
            e->d.metrics->replayed_outputs++;
            rf_outputs_produce(e->out, make_tag(slot, o.job, o.kind), t, o.key, o.key_len,
                               o.payload, o.len);
        }
        return;
    }
}

/* ---- the batch ---- */

/* An event's entity values (by kind, NULL where it touches none) and its source; returns its
 * partition. */
static const struct rf_part *event_view(rf_engine_t *e, const struct evt *ev, uint8_t **ents,
                                        struct rf_src *src) {
    for (int k = 0; k < RF_KINDS_MAX; k++)
        ents[k] = k < e->n_kinds && ev->refs[k] != NO_REF ? rf_store_value(e->store, ev->refs[k])
                                                         : NULL;
    const struct rf_part *pt = rf_offsets_part_at(e->offs, ev->part);
    *src = (struct rf_src){pt->topic_id, pt->partition, ev->offset};
    return pt;
}

/* Whether one of the event's entities holds a foreign value in Redis (store.on.foreign). */
static int touches_foreign(const rf_engine_t *e, const struct evt *ev) {
    for (int k = 0; k < e->n_kinds; k++)
        if (ev->refs[k] != NO_REF && rf_store_foreign(e->store, ev->refs[k]))
            return 1;
    return 0;
}

/* The batch's entities are loaded: mark its replays (events its entities already hold; the
 * state is as it was before the batch, so order does not matter) and ask for their journal.
 * Returns 1 when the batch must wait for the journal read. */
static int batch_loaded(rf_engine_t *e) {
    int any = 0;
    for (int b = 0; b < e->batch_n; b++) {
        struct evt *ev = &e->pool[e->batch[b]];
        ev->out_head = ev->out_tail = -1;
        ev->jreq = -1;
        if (ev->reason)
            continue;
        if (touches_foreign(e, ev)) {
            ev->reason = (int8_t)-RF_E_STATE;
            unpin_all(e, ev);
            if (log_allowed(e)) {
                const struct rf_part *pt = rf_offsets_part_at(e->offs, ev->part);
                RF_WARN("ENGINE", "%s [%" PRId32 "] @%" PRId64 ": %s: dead-lettered", pt->topic,
                        pt->partition, ev->offset, rf_strerror(RF_E_STATE));
            }
            continue;
        }
        uint8_t *ents[RF_KINDS_MAX];
        struct rf_src src;
        event_view(e, ev, ents, &src);
        ev->replay = (uint8_t)rf_feat_is_replay(e->d.decl, &ev->rec, ents, &src);
        any |= ev->replay;
    }
    if (!any || !rf_store_has_log(e->store))
        return 0;
    /* One read per partition with replays, over their offset range. */
    int nreq = 0;
    for (int b = 0; b < e->batch_n; b++) {
        struct evt *ev = &e->pool[e->batch[b]];
        if (!ev->replay || ev->jreq >= 0)
            continue;
        int64_t lo = ev->offset, hi = ev->offset;
        for (int c = b; c < e->batch_n; c++) {
            struct evt *ec = &e->pool[e->batch[c]];
            if (ec->replay && ec->part == ev->part) {
                ec->jreq = (int16_t)nreq;
                hi = ec->offset > hi ? ec->offset : hi;
            }
        }
        const struct rf_part *pt = rf_offsets_part_at(e->offs, ev->part);
        if (rf_store_want_log(e->store, pt->topic, pt->partition, lo, hi) != 0)
            abort(); /* busy or a key that cannot be: one batch at a time, topics fit */
        nreq++;
    }
    return rf_store_fetch_log(e->store) == 0;
}

/* Apply ev to its entities (all of them, or with `missing` those that do not hold it yet) and
 * mark the ones it changed dirty. */
static void apply_marked(rf_engine_t *e, struct evt *ev, uint8_t **ents, const struct rf_src *src,
                         int missing) {
    uint32_t mask = ~0u;
    if (missing)
        mask = rf_feat_apply_missing(e->d.decl, &ev->rec, ents, src);
    else
        rf_feat_apply(e->d.decl, &ev->rec, ents, src);
    for (int k = 0; k < e->n_kinds; k++)
        if (ev->refs[k] != NO_REF && (mask & (1u << k)))
            rf_store_mark_dirty(e->store, ev->refs[k]);
}

/* An event through its jobs' hooks and the features: the `before` hooks, the features
 * applied (to every entity, or with `missing` to those that do not hold the event yet), the
 * sliced entities read with their other slices, the `after` hooks. */
static void run_event(rf_engine_t *e, int32_t slot, struct evt *ev, uint8_t **ents,
                      const struct rf_src *src, const struct rf_part *pt, int missing) {
    struct rf_job_event jev = {slot, &ev->rec, ents, pt->topic, pt->partition, ev->offset};
    uint32_t takers = e->takers[ev->rec.type->index];
    for (int j = 0; j < e->n_jobs; j++)
        if ((takers & (1u << j)) && e->jobs[j].ops->before)
            run_hook(e, j, e->jobs[j].ops->before, &jev);
    apply_marked(e, ev, ents, src, missing);
    /* A sliced entity reads as its slice plus the other slices (copied, so the slice
     * itself stays this partition's alone). */
    for (uint32_t sl = e->sliced; sl; sl &= sl - 1) {
        int k = __builtin_ctz(sl);
        const uint8_t *others = ents[k] ? rf_store_others(e->store, ev->refs[k]) : NULL;
        if (!others)
            continue;
        memcpy(e->view[k], ents[k], rf_decl_value_size(e->d.decl, k));
        rf_feat_merge(e->d.decl, k, e->view[k], others);
        ents[k] = e->view[k];
    }
    for (int j = 0; j < e->n_jobs; j++)
        if ((takers & (1u << j)) && e->jobs[j].ops->after)
            run_hook(e, j, e->jobs[j].ops->after, &jev);
}

/* A replay in a cluster: a flush cut short may have written the event into some of its
 * entities only (store.h). Its outputs come from the journal, written before any value; the
 * entities that miss it get it now. The kinds with previous values or job state are written
 * last: when every one of them the event touches misses it, the jobs' hooks run again too
 * (their state never saw it; what they emit for a replay is dropped, rf_job_emit), and when
 * they hold it, so does every other entity. Two such kinds cut apart by a crash get the
 * features only. */
static void repair(rf_engine_t *e, int32_t slot, struct evt *ev) {
    uint8_t *ents[RF_KINDS_MAX];
    struct rf_src src;
    const struct rf_part *pt = event_view(e, ev, ents, &src);
    uint32_t touched = 0, late = 0, held = 0;
    for (int k = 0; k < e->n_kinds; k++) {
        if (!ents[k])
            continue;
        uint8_t *one[RF_KINDS_MAX] = {0};
        one[k] = ents[k];
        touched |= 1u << k;
        held |= rf_feat_is_replay(e->d.decl, &ev->rec, one, &src) ? 1u << k : 0;
        late |= rf_decl_written_last(e->d.decl, k) ? 1u << k : 0;
    }
    if (held == touched)
        return;
    e->d.metrics->replays_repaired++;
    if ((late & held) == 0)
        run_event(e, slot, ev, ents, &src, pt, 1);
    else
        apply_marked(e, ev, ents, &src, 1);
}

static void batch_finish(rf_engine_t *e) {
    struct rf_metrics *m = e->d.metrics;
    int any = 0;
    uint64_t t0 = uv_hrtime();
    rf_hist_add(&m->stage_load, (t0 - e->batch_t0) / 1000);
    for (int b = 0; b < e->batch_n; b++) {
        int32_t slot = e->batch[b];
        struct evt *ev = &e->pool[slot];
        if (ev->reason)
            continue;
        any = 1;
        /* Its entities already hold it: applied and written, with its outputs journaled in
         * the same transaction. Nothing to apply; its first outputs go out again. */
        if (ev->replay) {
            m->replays++;
            if (rf_store_partial_flushes(e->store))
                repair(e, slot, ev);
            replay_outputs(e, slot, ev->jreq);
            continue;
        }
        uint8_t *ents[RF_KINDS_MAX];
        struct rf_src src;
        const struct rf_part *pt = event_view(e, ev, ents, &src);
        if (rf_feat_too_late(e->d.decl, &ev->rec, ents,
                             (uint64_t)e->d.conf->input_max_lateness_s * 1000)) {
            ev->reason = (int8_t)-RF_E_TOO_LATE;
            unpin_all(e, ev);
            if (log_allowed(e))
                RF_WARN("ENGINE", "%s [%" PRId32 "] @%" PRId64 ": %s: dead-lettered", pt->topic,
                        pt->partition, ev->offset, rf_strerror(RF_E_TOO_LATE));
            continue;
        }
        run_event(e, slot, ev, ents, &src, pt, 0);
    }
    for (int j = 0; j < e->n_jobs; j++)
        run_hook(e, j, NULL, NULL);

    /* The batch's changes are one generation, its outputs journaled in it; they are produced
     * once its flush has succeeded (rf_engine_on_flushed). */
    uint64_t gen = any ? rf_store_close_gen(e->store) : 0;
    if (gen)
        journal_batch(e, gen);
    uint64_t t1 = uv_hrtime();
    rf_hist_add(&m->stage_process, (t1 - t0) / 1000);
    for (int b = 0; b < e->batch_n; b++) {
        int32_t slot = e->batch[b];
        struct evt *ev = &e->pool[slot];
        ev->t_proc_ns = t1;
        if (ev->reason) {
            dead_letter(e, slot);
            continue;
        }
        unpin_all(e, ev);
        ev->gen = gen;
        ev->pending++; /* its generation's flush */
        ev->flush_next = -1;
        if (e->flush_tail >= 0)
            e->pool[e->flush_tail].flush_next = slot;
        else
            e->flush_head = slot;
        e->flush_tail = slot;
    }
    e->batch_n = 0;
    if (gen)
        rf_store_release(e->store, gen);
}

/* input.hash.fields: the key, and which fields of each input record type it replaces. A
 * name no input record type has as a string field is a configuration error. */
static int setup_hashing(rf_engine_t *e, char *errstr, size_t size) {
    const struct rf_conf *conf = e->d.conf;
    if (strcmp(conf->input_hash_fields, "none") == 0)
        return 0;
    const char *where = rf_conf_where(conf, "input.hash.fields");
    if (strcmp(conf->input_hash_key_file, "none") == 0) {
        snprintf(errstr, size, "%s: input.hash.fields needs input.hash.key.file", where);
        return RF_E_CONF;
    }
    char err[512];
    e->keyhash = rf_keyhash_new(conf->input_hash_key_file, err, sizeof err);
    if (!e->keyhash) {
        snprintf(errstr, size, "%s: input.hash.key.file: %s",
                 rf_conf_where(conf, "input.hash.key.file"), err);
        return RF_E_CONF;
    }
    e->hash_original = strcmp(conf->input_hash_dlq, "original") == 0;
    e->hash_fields = malloc(sizeof *e->hash_fields * (size_t)(e->n_rtypes + 1));
    if (!e->hash_fields) {
        snprintf(errstr, size, "out of memory");
        return RF_E_NOMEM;
    }
    memset(e->hash_fields, -1, sizeof *e->hash_fields * (size_t)(e->n_rtypes + 1));
    char list[512];
    snprintf(list, sizeof list, "%s", conf->input_hash_fields);
    int n = 0;
    for (char *save = NULL, *name = strtok_r(list, ",", &save); name;
         name = strtok_r(NULL, ",", &save), n++) {
        int found = 0;
        if (n == RF_HASH_FIELDS_MAX) {
            snprintf(errstr, size, "%s: input.hash.fields: at most %d fields", where,
                     RF_HASH_FIELDS_MAX);
            return RF_E_CONF;
        }
        for (int i = 0; i < e->n_rtypes; i++) {
            const struct rf_rtype *t = rf_schemas_rtype_at(e->d.schemas, i);
            int f = rf_rtype_field(t, name);
            if (f < 0 || t->fields[f].type != RF_FT_STRING)
                continue;
            int k = 0;
            while (e->hash_fields[i][k] >= 0)
                k++;
            e->hash_fields[i][k] = (int8_t)f;
            found = 1;
        }
        if (!found) {
            snprintf(errstr, size, "%s: input.hash.fields: no input record type has a string "
                     "field '%s'", where, name);
            return RF_E_CONF;
        }
    }
    return 0;
}

/* input.hash.fields: each named field of the record becomes its token, in ev->ext, before
 * anything reads it; its clear bytes in the message are zeroed (unless input.hash.dlq keeps
 * the original). An empty field stays empty (a bad key where it keys an entity). */
static int hash_fields(rf_engine_t *e, struct evt *ev) {
    const int8_t *fs = e->hash_fields[ev->rec.type->index];
    ev->hashed = 1;
    ev->rec.ext = (const uint8_t *)ev->ext;
    for (int k = 0; k < RF_HASH_FIELDS_MAX && fs[k] >= 0; k++) {
        size_t n;
        const char *clear = rf_rec_str(&ev->rec, fs[k], &n);
        if (n == 0)
            continue;
        char *tok = ev->ext + k * RF_KEYHASH_TOKEN_LEN;
        if (rf_keyhash_token(e->keyhash, clear, n, tok) != 0)
            return RF_E_MALFORMED; /* libcrypto out of memory: never let the clear bytes by */
        if (!e->hash_original)
            memset((char *)clear, 0, n); /* ours: the message buffer of this event */
        ev->rec.v[fs[k]].s.off = RF_STR_EXT | (uint32_t)(k * RF_KEYHASH_TOKEN_LEN);
        ev->rec.v[fs[k]].s.len = RF_KEYHASH_TOKEN_LEN;
    }
    return 0;
}

/* Decode, dispatch by record type, look up entities. Returns 1 when the batch must wait for
 * a store fetch. */
static int batch_start(rf_engine_t *e) {
    size_t max = (size_t)e->d.conf->input_max_bytes;
    int64_t future = e->d.conf->input_max_future_ms;
    int64_t latest = future ? rf_job_now_ms() + future : INT64_MAX;
    for (int b = 0; b < e->batch_n; b++) {
        struct evt *ev = &e->pool[e->batch[b]];
        const struct rf_part *pt = rf_offsets_part_at(e->offs, ev->part);
        const char *slice = e->sliced ? pt->slice : "";
        const uint8_t *body;
        size_t blen;
        int32_t id = pt->type_id;
        const struct rf_rtype *t = NULL;
        int rc = rf_frame(ev->rkm->payload, ev->rkm->len, (enum rf_framing)pt->framing, max, &id,
                          &body, &blen);
        if (rc == 0) {
            t = rf_schemas_rtype(e->d.schemas, id);
            rc = !t ? RF_E_UNKNOWN_SCHEMA : !e->takers[t->index] ? RF_E_WRONG_TYPE : 0;
        }
        ev->rtype = t ? (int16_t)t->index : -1;
        if (rc == 0)
            rc = rf_rec_decode(t, body, blen, &ev->rec);
        if (rc == 0 && e->keyhash)
            rc = hash_fields(e, ev);
        /* A time from the future would move its entities' windows ahead for good; one before
         * 1970 is nobody's real time (and INT64_MIN means "never" in a stored value). */
        if (rc == 0 && rf_rec_time(&ev->rec) < 0)
            rc = RF_E_BAD_TIME;
        else if (rc == 0 && rf_rec_time(&ev->rec) > latest)
            rc = RF_E_FUTURE;
        for (int k = 0; rc == 0 && k < e->n_kinds; k++) {
            int f = rf_decl_key_field(e->d.decl, k, t);
            if (f < 0)
                continue;
            size_t n;
            const char *id_s = rf_rec_str(&ev->rec, f, &n);
            if (rf_store_lookup_slice(e->store, k, id_s, n, slice, &ev->refs[k]) < 0)
                rc = RF_E_BAD_KEY; /* empty: no entity to keep state for, no key to order by */
        }
        if (rc != 0) {
            unpin_all(e, ev);
            ev->reason = (int8_t)-rc;
            if (log_allowed(e))
                RF_WARN("ENGINE", "%s [%" PRId32 "] @%" PRId64 ": %s: dead-lettered", pt->topic,
                        pt->partition, ev->offset, rf_strerror(rc));
        }
    }
    int rc = rf_store_fetch(e->store);
    if (rc < 0) {
        RF_ERR("ENGINE", "store fetch: %s", rf_strerror(rc));
        abort(); /* BUSY can't happen: one batch at a time */
    }
    return rc == 0;
}

static int32_t take(rf_engine_t *e, rd_kafka_message_t *rkm, int part) {
    int32_t slot = e->free_head;
    struct evt *ev = &e->pool[slot];
    e->free_head = ev->flush_next;
    e->inflight++;
    ev->rkm = rkm;
    ev->part = part;
    ev->offset = rkm->offset;
    ev->t_in_ns = uv_hrtime();
    ev->t_proc_ns = 0;
    ev->hashed = 0;
    ev->gen = 0;
    ev->pending = 0;
    ev->out_head = ev->out_tail = -1;
    ev->reason = 0;
    ev->replay = 0;
    ev->jreq = -1;
    ev->rtype = -1;
    for (int k = 0; k < RF_KINDS_MAX; k++)
        ev->refs[k] = NO_REF;
    rf_offsets_take(e->offs, part, slot, rkm->offset);
    if (e->d.txn) {
        struct rf_part *pt = rf_offsets_part_at(e->offs, part);
        if (pt->txn_base < 0)
            pt->txn_base = rkm->offset;
        e->txn_taken++;
    }
    return slot;
}

/* A fatal client error (idempotence broken, fenced): the daemon stops. */
static int fatal(rf_engine_t *e, rd_kafka_t *rk, const char *who) {
    char reason[256];
    if (!rd_kafka_fatal_error(rk, reason, sizeof reason))
        return 0;
    RF_ERR("KAFKA", "%s fatal error: %s", who, reason);
    e->failed = 1;
    e->d.on_idle(e->d.arg);
    return 1;
}

static void consumer_error(rf_engine_t *e, const rd_kafka_message_t *rkm) {
    if (rkm->err == RD_KAFKA_RESP_ERR__PARTITION_EOF)
        return;
    if (rkm->err == RD_KAFKA_RESP_ERR__FATAL && fatal(e, e->d.rk, "consumer"))
        return;
    if (log_allowed(e))
        RF_WARN("KAFKA", "consumer: %s%s%s", rd_kafka_err2str(rkm->err), rkm->rkt ? " on " : "",
                rkm->rkt ? rd_kafka_topic_name(rkm->rkt) : "");
}

/* The partition's engine data: its own topic handle (for offset stores), framing and type. */
static int part_of(rf_engine_t *e, const rd_kafka_topic_t *seen, const char *topic,
                   int32_t partition);

void rf_engine_drain(rf_engine_t *e) {
    int max = e->d.conf->batch_max;
    while (!e->stopping && !e->failed && !e->fetch_wait && e->txn_phase == TXN_OPEN) {
        int n = 0;
        e->starved = 0;
        while (n < max) {
            if (e->free_head < 0) {
                e->starved = 1; /* completions free room and kick us */
                break;
            }
            rd_kafka_message_t *rkm = rd_kafka_consumer_poll(e->d.rk, 0);
            if (!rkm)
                break;
            if (rkm->err) {
                consumer_error(e, rkm);
                rd_kafka_message_destroy(rkm);
                continue;
            }
            int part = part_of(e, rkm->rkt, rd_kafka_topic_name(rkm->rkt), rkm->partition);
            /* A message of a partition we no longer own (prefetched before a revocation and
             * still queued) belongs to its new owner: taking it here would score it twice,
             * and its offset could not be stored anyway. */
            if (!rf_offsets_part_at(e->offs, part)->assigned) {
                e->d.metrics->not_owned++;
                if (log_allowed(e))
                    RF_INFO("KAFKA", "%s [%" PRId32 "] @%" PRId64 ": no longer assigned here; "
                            "left to its new owner", rd_kafka_topic_name(rkm->rkt),
                            rkm->partition, rkm->offset);
                rd_kafka_message_destroy(rkm);
                continue;
            }
            e->batch[n++] = take(e, rkm, part);
        }
        if (n == 0)
            return;
        e->batch_n = n;
        e->batch_t0 = uv_hrtime();
        struct rf_metrics *m = e->d.metrics;
        if (m->events_in == 0)
            m->first_in_ns = e->pool[e->batch[0]].t_in_ns;
        m->events_in += (uint64_t)n;
        rf_hist_add(&m->batch_size, (uint64_t)n);
        if (batch_start(e)) {
            e->fetch_wait = 1;
            return; /* rf_engine_on_fetched resumes */
        }
        if (batch_loaded(e)) {
            e->fetch_wait = 1;
            return; /* rf_engine_on_log_fetched resumes */
        }
        batch_finish(e);
    }
}

void rf_engine_on_fetched(rf_engine_t *e, int status) {
    e->fetch_wait = 0;
    if (status != 0)
        return; /* closing: the batch's events are abandoned, their offsets not stored */
    if (batch_loaded(e)) {
        e->fetch_wait = 1;
        return;
    }
    batch_finish(e);
    kick(e);
}

void rf_engine_on_log_fetched(rf_engine_t *e, int status) {
    e->fetch_wait = 0;
    if (status != 0)
        return; /* closing, as above */
    batch_finish(e);
    kick(e);
}

void rf_engine_committed(rf_engine_t *e, const char *topic, int32_t partition, int64_t offset) {
    if (offset < 0 || !e->offs)
        return;
    struct rf_part *pt = rf_offsets_part_at(e->offs, part_of(e, NULL, topic, partition));
    if (offset <= pt->pruned)
        return;
    pt->pruned = offset;
    rf_store_prune_log(e->store, topic, partition, offset);
}

void rf_engine_set_commit_metadata(rf_engine_t *e, const char *metadata) {
    snprintf(e->commit_md, sizeof e->commit_md, "%s", metadata ? metadata : "");
}

rd_kafka_topic_partition_list_t *rf_engine_commit_list(rf_engine_t *e,
                                                       const rd_kafka_topic_partition_list_t *only) {
    rd_kafka_topic_partition_list_t *l = NULL;
    for (int i = 0; e->offs && i < rf_offsets_n_parts(e->offs); i++) {
        const struct rf_part *pt = rf_offsets_part_at(e->offs, i);
        if (!pt->assigned || pt->stored < 0)
            continue;
        if (only && !rd_kafka_topic_partition_list_find(only, pt->topic, pt->partition))
            continue;
        if (!l)
            l = rd_kafka_topic_partition_list_new(8);
        rd_kafka_topic_partition_t *p =
            rd_kafka_topic_partition_list_add(l, pt->topic, pt->partition);
        p->offset = pt->stored + 1;
        size_t n = strlen(e->commit_md);
        if (n) {
            p->metadata = malloc(n); /* the list frees it */
            if (!p->metadata)
                abort();
            memcpy(p->metadata, e->commit_md, n);
            p->metadata_size = n;
        }
    }
    return l;
}

void rf_engine_prune_committed(rf_engine_t *e) {
    for (int i = 0; e->offs && i < rf_offsets_n_parts(e->offs); i++) {
        const struct rf_part *pt = rf_offsets_part_at(e->offs, i);
        if (pt->assigned && pt->stored >= 0)
            rf_engine_committed(e, pt->topic, pt->partition, pt->stored + 1);
    }
}

void rf_engine_on_flushed(rf_engine_t *e, uint64_t gen) {
    produce_gens(e, gen);
    while (e->flush_head >= 0 && e->pool[e->flush_head].gen <= gen) {
        int32_t slot = e->flush_head;
        e->flush_head = e->pool[slot].flush_next;
        if (e->flush_head < 0)
            e->flush_tail = -1;
        unpend(e, slot);
    }
}

static void on_kick(uv_idle_t *idle) {
    rf_engine_t *e = idle->data;
    uv_idle_stop(idle);
    rf_engine_drain(e);
}

/* Drain again on the next loop turn, from a clean stack. */
static void kick(rf_engine_t *e) {
    if (!e->stopping && !uv_is_closing((uv_handle_t *)&e->kick))
        uv_idle_start(&e->kick, on_kick);
}

/* ---- exactly-once: transactions ---- */

/* Where an abort rewinds to: the first offset taken from each assigned partition since the
 * last commit. NULL when nothing was taken. */
static rd_kafka_topic_partition_list_t *rewind_list(rf_engine_t *e) {
    rd_kafka_topic_partition_list_t *l = NULL;
    for (int i = 0; i < rf_offsets_n_parts(e->offs); i++) {
        const struct rf_part *pt = rf_offsets_part_at(e->offs, i);
        if (!pt->assigned || pt->txn_base < 0)
            continue;
        if (!l)
            l = rd_kafka_topic_partition_list_new(8);
        rd_kafka_topic_partition_list_add(l, pt->topic, pt->partition)->offset = pt->txn_base;
    }
    return l;
}

static void txn_ended(rf_txn_t *t, int result, const char *msg, void *arg) {
    rf_engine_t *e = arg;
    (void)t;
    e->txn_phase = TXN_OPEN;
    e->txn_doomed = NULL;
    e->txn_taken = 0;
    if (result == RF_TXN_FATAL) {
        RF_ERR("KAFKA", "%s", msg);
        fail(e);
        return;
    }
    for (int i = 0; i < rf_offsets_n_parts(e->offs); i++) {
        struct rf_part *pt = rf_offsets_part_at(e->offs, i);
        if (result == RF_TXN_COMMITTED) {
            if (pt->assigned && pt->stored >= 0)
                rf_engine_committed(e, pt->topic, pt->partition, pt->stored + 1);
            pt->txn_base = -1;
        } else if (pt->assigned && pt->txn_base >= 0) {
            rf_offsets_stored(e->offs, i, pt->txn_base - 1); /* consumed again from there */
        }
    }
    if (result == RF_TXN_COMMITTED) {
        e->d.metrics->txn_commits++;
    } else {
        e->d.metrics->txn_aborts++;
        RF_WARN("KAFKA", "%s; its inputs are consumed again", msg);
    }
    revoke_settle(e); /* a revocation that waited for this end */
    if (e->stopping || e->failed)
        e->d.on_idle(e->d.arg);
    else
        kick(e);
}

static void on_txn_timer(uv_timer_t *t) {
    rf_engine_t *e = t->data;
    /* Stopping: the final stop ends the transaction itself (rf_engine_txn_final). */
    if (e->txn_phase != TXN_QUIESCE || e->inflight > 0 || e->stopping || e->failed)
        return;
    rd_kafka_topic_partition_list_t *offsets =
        e->txn_doomed ? NULL : rf_engine_commit_list(e, NULL);
    e->txn_phase = TXN_ENDING;
    int rc = rf_txn_end(e->d.txn, offsets, rewind_list(e), e->txn_doomed, txn_ended, e);
    if (rc != 0) {
        e->txn_phase = TXN_QUIESCE;
        RF_ERR("KAFKA", "cannot end the transaction: %s", rf_strerror(rc));
        fail(e);
    }
}

/* Every event taken is complete: end the transaction (from a clean stack). */
static void txn_check(rf_engine_t *e) {
    if (e->txn_phase == TXN_QUIESCE && e->inflight == 0 &&
        !uv_is_closing((uv_handle_t *)&e->txn_timer))
        uv_timer_start(&e->txn_timer, on_txn_timer, 0, 0);
}

/* End the transaction at the next quiet moment: take nothing more until every event taken
 * is complete, so that its outputs and its offsets are of the same inputs. */
static void txn_request(rf_engine_t *e) {
    if (!e->d.txn || e->txn_phase != TXN_OPEN || e->stopping || e->failed)
        return;
    e->txn_phase = TXN_QUIESCE;
    txn_check(e);
}

void rf_engine_txn_tick(rf_engine_t *e) {
    if (e->d.txn && (e->txn_taken > 0 || e->txn_doomed))
        txn_request(e);
}

int rf_engine_txn_final(rf_engine_t *e, uint64_t deadline_ns, char *msg, size_t size) {
    if (!e->d.txn) {
        snprintf(msg, size, "not in exactly-once mode");
        return RF_TXN_FATAL;
    }
    if (e->txn_phase == TXN_ENDING) {
        rf_txn_cancel(e->d.txn);
        snprintf(msg, size, "the transaction's end was still under way");
        return RF_TXN_FATAL;
    }
    const char *why = e->txn_doomed ? e->txn_doomed
                      : e->failed   ? "riskflowd failed"
                      : e->inflight ? "events still in flight at the stop"
                                    : NULL;
    rd_kafka_topic_partition_list_t *offsets = why ? NULL : rf_engine_commit_list(e, NULL);
    e->txn_phase = TXN_OPEN;
    int r = rf_txn_end_sync(e->d.txn, offsets, why, deadline_ns, msg, size);
    if (r == RF_TXN_COMMITTED) {
        e->d.metrics->txn_commits++;
        rf_engine_prune_committed(e);
    } else if (r == RF_TXN_ABORTED) {
        e->d.metrics->txn_aborts++;
    }
    return r;
}

/* ---- partitions and rebalances ---- */

void rf_engine_topic_type(const struct rf_conf *conf, const rf_schemas_t *schemas,
                          const char *topic, int *framing, int32_t *type_id) {
    const char *cur = conf->input_topics;
    struct rf_conf_topic t;
    char err[256];
    *framing = strcmp(conf->input_framing, "plain") == 0 ? RF_FRAMING_PLAIN
                                                         : RF_FRAMING_CONFLUENT;
    const struct rf_rtype *plain = conf->input_schema_id
                                       ? rf_schemas_rtype(schemas, conf->input_schema_id)
                                       : rf_schemas_rtype_named(schemas, "riskflow.Payment");
    *type_id = plain ? plain->schema_id : conf->input_schema_id;
    while (rf_conf_topic_next(&cur, &t, err, sizeof err) == 1) {
        if (strcmp(t.name, topic) != 0)
            continue;
        if (t.framing >= 0)
            *framing = t.framing ? RF_FRAMING_PLAIN : RF_FRAMING_CONFLUENT;
        if (t.type[0]) {
            const struct rf_rtype *rt = rf_schemas_rtype_named(schemas, t.type);
            *type_id = rt ? rt->schema_id : -1;
        }
    }
}

_Static_assert(sizeof(((struct rf_part *)0)->slice) == RF_STORE_SLICE_MAX, "a slice name fits");

/* Framing and record type of a topic, from input.topics (validated at start). */
static void topic_setup(rf_engine_t *e, struct rf_part *pt) {
    int framing;
    rf_engine_topic_type(e->d.conf, e->d.schemas, pt->topic, &framing, &pt->type_id);
    pt->framing = framing;
}

static int part_of(rf_engine_t *e, const rd_kafka_topic_t *seen, const char *topic,
                   int32_t partition) {
    int n = rf_offsets_n_parts(e->offs);
    int part = rf_offsets_find(e->offs, seen, topic, partition);
    if (part == n) { /* new */
        struct rf_part *pt = rf_offsets_part_at(e->offs, part);
        pt->topic_id = rf_feat_topic_id(topic);
        /* Named once: formatting it per event cost 5 % of the demo's instructions. */
        rf_store_slice_name(pt->topic_id, pt->partition, pt->slice);
        pt->handle = rd_kafka_topic_new(e->d.rk, topic, NULL);
        topic_setup(e, pt);
    }
    return part;
}

/* Hand librdkafka the assignment change the rebalance callback must make: incremental for the
 * cooperative protocol, the whole assignment (or none) for the eager one. Errors are logged:
 * librdkafka has no other answer to them here. */
static void change_assignment(rd_kafka_t *rk, rd_kafka_topic_partition_list_t *parts,
                              int cooperative, int assign) {
    rd_kafka_error_t *error = NULL;
    rd_kafka_resp_err_t rerr = 0;
    if (cooperative)
        error = assign ? rd_kafka_incremental_assign(rk, parts)
                       : rd_kafka_incremental_unassign(rk, parts);
    else
        rerr = rd_kafka_assign(rk, assign ? parts : NULL);
    const char *what = assign ? "assign" : "unassign";
    if (error) {
        RF_ERR("KAFKA", "%s: %s", what, rd_kafka_error_string(error));
        rd_kafka_error_destroy(error);
    } else if (rerr) {
        RF_ERR("KAFKA", "%s: %s", what, rd_kafka_err2str(rerr));
    }
}

/* Let go of revoked partitions: commit what is stored, synchronously, then unassign. */
/* A revocation's commit, on libuv's threadpool: a synchronous commit is a broker round trip,
 * and the loop has other partitions to serve meanwhile. The unassign follows it. */
struct revoke_work {
    uv_work_t req;
    rf_engine_t *e;
    rd_kafka_topic_partition_list_t *offsets, *parts;
    int cooperative;
    rd_kafka_resp_err_t err;
};

static void revoke_commit(uv_work_t *req) {
    struct revoke_work *w = req->data;
    w->err = rd_kafka_commit(w->e->d.rk, w->offsets, 0);
}

static void revoke_committed(uv_work_t *req, int status) {
    struct revoke_work *w = req->data;
    if (status == 0 && w->err && w->err != RD_KAFKA_RESP_ERR__NO_OFFSET)
        RF_WARN("KAFKA", "commit on revoke: %s", rd_kafka_err2str(w->err));
    change_assignment(w->e->d.rk, w->parts, w->cooperative, 0);
    w->e->revoke_works--;
    if (w->e->stopping)
        w->e->d.on_idle(w->e->d.arg); /* the stop waits for it */
    rd_kafka_topic_partition_list_destroy(w->offsets);
    rd_kafka_topic_partition_list_destroy(w->parts);
    free(w);
}

/* Let go of revoked partitions: commit what is stored (off the loop, unless stopping), then
 * unassign. Nothing of theirs is taken from here on. */
static void revoke_finish(rf_engine_t *e, rd_kafka_t *rk, rd_kafka_topic_partition_list_t *parts,
                          int cooperative, int lost) {
    /* Exactly-once: the transaction that ended before this carried the offsets. */
    rd_kafka_topic_partition_list_t *l = lost || e->d.txn ? NULL : rf_engine_commit_list(e, parts);
    /* A cooperative revoke is followed by the assign that ends its round, and then the member
     * rejoins: commits wait for the assign that ends that second round. A lost assignment has
     * no second round to wait for. */
    if (cooperative && !lost)
        rf_offsets_rebalance_begin(e->offs, uv_now(e->d.loop));
    for (int i = 0; i < parts->cnt; i++) {
        int part = part_of(e, NULL, parts->elems[i].topic, parts->elems[i].partition);
        rf_offsets_revoke(e->offs, part);
        RF_INFO("KAFKA", "revoked %s [%" PRId32 "]", parts->elems[i].topic,
                parts->elems[i].partition);
    }
    /* Another member may now change these entities: cached copies could go stale. */
    rf_store_drop_clean(e->store);
    rf_store_new_epoch(e->store);
    struct revoke_work *w = l && !e->stopping ? calloc(1, sizeof *w) : NULL;
    if (w) {
        *w = (struct revoke_work){.e = e, .offsets = l, .cooperative = cooperative,
                                  .parts = rd_kafka_topic_partition_list_copy(parts)};
        w->req.data = w;
        if (uv_queue_work(e->d.loop, &w->req, revoke_commit, revoke_committed) == 0) {
            e->revoke_works++;
            return;
        }
        rd_kafka_topic_partition_list_destroy(w->parts);
        free(w);
    }
    /* Stopping (the final stop may block), or no worker: here and now. */
    rd_kafka_resp_err_t cerr = l ? rd_kafka_commit(rk, l, 0) : RD_KAFKA_RESP_ERR_NO_ERROR;
    if (l)
        rd_kafka_topic_partition_list_destroy(l);
    if (cerr && cerr != RD_KAFKA_RESP_ERR__NO_OFFSET)
        RF_WARN("KAFKA", "commit on revoke: %s", rd_kafka_err2str(cerr));
    change_assignment(rk, parts, cooperative, 0);
}

/* Events consumed from these partitions and not yet complete. */
static int inflight_in(rf_engine_t *e, const rd_kafka_topic_partition_list_t *parts) {
    int n = 0;
    for (int i = 0; i < parts->cnt; i++)
        n += rf_offsets_inflight(e->offs,
                                 part_of(e, NULL, parts->elems[i].topic, parts->elems[i].partition));
    return n;
}

/* Finish a deferred revocation now: its partitions drained, or the wait is over. */
static void revoke_settle(rf_engine_t *e) {
    rd_kafka_topic_partition_list_t *parts = e->revoking;
    if (!parts)
        return;
    /* Exactly-once: letting go before the transaction ended would leave outputs of these
     * partitions in it without their offsets. Stopping aborts it instead. */
    if (e->d.txn && (e->txn_phase != TXN_OPEN || e->inflight > 0)) {
        RF_ERR("KAFKA", "revocation: the transaction did not end in time; stopping so that "
               "it aborts");
        fail(e);
    }
    e->revoking = NULL;
    uv_timer_stop(&e->revoke_timer);
    int left = inflight_in(e, parts);
    if (left)
        RF_WARN("KAFKA", "revocation: %d events of the revoked partitions did not finish in "
                "rebalance.drain.timeout.ms; the next owner will see them again", left);
    rd_kafka_resume_partitions(e->d.rk, parts); /* a pause must not outlive the assignment */
    revoke_finish(e, e->d.rk, parts, e->revoking_cooperative, 0);
    rd_kafka_topic_partition_list_destroy(parts);
}

static void on_revoke_timer(uv_timer_t *t) {
    rf_engine_t *e = t->data;
    if (e->d.txn) { /* the deadline of a revocation that waits for the transaction's end */
        uint64_t now = uv_now(e->d.loop);
        if (e->revoking && now < e->revoke_deadline_ms)
            uv_timer_start(&e->revoke_timer, on_revoke_timer, e->revoke_deadline_ms - now, 0);
        else if (e->revoking)
            revoke_settle(e);
        return;
    }
    if (e->revoking && inflight_in(e, e->revoking) > 0 &&
        uv_now(e->d.loop) < e->revoke_deadline_ms) {
        uv_timer_start(&e->revoke_timer, on_revoke_timer,
                       e->revoke_deadline_ms - uv_now(e->d.loop), 0);
        return;
    }
    revoke_settle(e);
}

void rf_engine_settle_revoke(rf_engine_t *e) {
    revoke_settle(e);
}

void rf_engine_rebalance_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                            rd_kafka_topic_partition_list_t *parts, void *opaque) {
    rf_engine_t *e = opaque;
    int cooperative = strcmp(rd_kafka_rebalance_protocol(rk), "COOPERATIVE") == 0;
    int lost = rd_kafka_assignment_lost(rk);
    RF_INFO("KAFKA", "rebalance: %s of %d partition(s), %s protocol%s",
            err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS   ? "assignment"
            : err == RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS ? "revocation"
                                                          : rd_kafka_err2name(err),
            parts->cnt, rd_kafka_rebalance_protocol(rk), lost ? ", assignment LOST" : "");
    /* librdkafka starts no new rebalance before the last unassign: settle one that waits. */
    revoke_settle(e);

    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
        e->assignments++;
        for (int i = 0; i < parts->cnt; i++) {
            int part = part_of(e, NULL, parts->elems[i].topic, parts->elems[i].partition);
            rf_offsets_assign(e->offs, part);
            RF_INFO("KAFKA", "assigned %s [%" PRId32 "]", parts->elems[i].topic,
                    parts->elems[i].partition);
        }
        /* Partitions coming back may have been changed by another member meanwhile. */
        rf_store_new_epoch(e->store);
        rf_offsets_rebalance_round(e->offs); /* every round ends with an assign, even empty */
        change_assignment(rk, parts, cooperative, 1);
        return;
    }

    /* Revoked: finish the events already taken from these partitions before letting go, so
     * their offsets are stored and committed and the next owner does not see them again
     * (design.md §3). That takes broker acknowledgements and Redis flushes, i.e. the loop:
     * pause the partitions, return, and unassign once they have drained. librdkafka waits
     * for the unassign. A lost assignment is already gone, and a stopping daemon has
     * drained already (or gave up): both let go at once. */
    int n = inflight_in(e, parts);
    RF_INFO("KAFKA", "revocation: %d events of those partitions in flight (%d in all)", n,
            e->inflight);
    /* Exactly-once: the transaction holds outputs of these partitions. Before letting go it
     * commits them with their offsets (txn_ended settles the revocation), within
     * rebalance.drain.timeout.ms; a lost assignment can commit nothing: abort. */
    if (e->d.txn && lost) {
        e->txn_doomed = "the group took the assignment away";
        txn_request(e);
    } else if (e->d.txn && !e->stopping) {
        uint64_t wait = (uint64_t)e->d.conf->rebalance_drain_timeout_ms;
        e->revoking = rd_kafka_topic_partition_list_copy(parts);
        e->revoking_cooperative = cooperative;
        e->revoke_deadline_ms = uv_now(e->d.loop) + wait;
        uv_timer_start(&e->revoke_timer, on_revoke_timer, wait, 0);
        if (e->txn_phase == TXN_OPEN)
            txn_request(e);
        return;
    }
    if (!lost && !e->stopping && n > 0 && e->d.conf->rebalance_drain_timeout_ms > 0) {
        e->revoking = rd_kafka_topic_partition_list_copy(parts);
        e->revoking_cooperative = cooperative;
        e->revoke_deadline_ms = uv_now(e->d.loop) + (uint64_t)e->d.conf->rebalance_drain_timeout_ms;
        rd_kafka_pause_partitions(rk, e->revoking);
        RF_INFO("KAFKA", "revocation waits for %d in-flight events of those partitions", n);
        uv_timer_start(&e->revoke_timer, on_revoke_timer,
                       (uint64_t)e->d.conf->rebalance_drain_timeout_ms, 0);
        return;
    }
    revoke_finish(e, rk, parts, cooperative, lost);
}

void rf_engine_group_state(rf_engine_t *e, int steady) {
    rf_offsets_group_state(e->offs, steady);
}

int rf_engine_may_commit(const rf_engine_t *e) {
    return rf_offsets_may_commit(e->offs, uv_now(e->d.loop));
}

/* ---- life cycle ---- */

/* Build the jobs `jobs=` names, in that order. */
static int build_jobs(rf_engine_t *e, char *errstr, size_t size) {
    const char *p = e->d.conf->jobs;
    size_t off = 0;
    while (*p) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        int idx = rf_jobs_find(p, len);
        if (idx < 0) {
            snprintf(errstr, size, "jobs: unknown job '%.*s'", (int)len, p);
            return RF_E_CONF;
        }
        const struct rf_job_ops *ops = rf_jobs_at(idx);
        struct rf_job_env env = {
            .conf = e->d.conf,
            .jconf = e->d.conf->job[idx],
            .schemas = e->d.schemas,
            .decl = e->d.decl,
            .jobs_index = idx,
            .host = &e->host,
            .metrics = e->d.metrics,
            .out_framing = strcmp(e->d.conf->output_framing, "plain") == 0 ? RF_FRAMING_PLAIN
                                                                            : RF_FRAMING_CONFLUENT,
        };
        struct job *jb = &e->jobs[e->n_jobs];
        jb->ops = ops;
        jb->index = idx;
        jb->obj = ops->init(&env, errstr, size);
        if (!jb->obj)
            return RF_E_CONF;
        e->n_jobs++;
        struct rf_job_metrics *jm = &e->d.metrics->jobs[idx];
        jm->name = ops->name;
        jm->kind_names = ops->kind_names;
        jm->kinds = ops->kinds;
        off += (size_t)snprintf(e->job_names + off, sizeof e->job_names - off, "%s%s",
                                off ? "," : "", ops->name);
        if (!comma)
            break;
        p = comma + 1;
    }
    return 0;
}

/* Every topic of input.topics: a plain one's declared type must be an input record type. */
static int check_topics(rf_engine_t *e, char *errstr, size_t size) {
    const char *cur = e->d.conf->input_topics;
    struct rf_conf_topic t;
    int rc;
    while ((rc = rf_conf_topic_next(&cur, &t, errstr, size)) == 1) {
        if (t.type[0] && !rf_schemas_rtype_named(e->d.schemas, t.type)) {
            snprintf(errstr, size, "input.topics: '%s' is not an input record type of the "
                     "schema registry (topic %s)", t.type, t.name);
            return RF_E_CONF;
        }
    }
    return rc;
}

rf_engine_t *rf_engine_new(const struct rf_engine_deps *deps, char *errstr, size_t size) {
    rf_engine_t *e = calloc(1, sizeof *e);
    if (!e) {
        snprintf(errstr, size, "out of memory");
        return NULL;
    }
    e->d = *deps;
    e->host.e = e;
    const struct rf_conf *conf = deps->conf;
    e->flush_head = e->flush_tail = -1;
    e->free_head = -1;
    uv_idle_init(deps->loop, &e->kick);
    e->kick.data = e;
    uv_timer_init(deps->loop, &e->revoke_timer);
    e->revoke_timer.data = e;
    uv_timer_init(deps->loop, &e->txn_timer);
    e->txn_timer.data = e;
    e->print = strcmp(conf->outputs_print, "stdout") == 0;
    if (e->print && deps->rkp) { /* not in a dry run */
        e->sink = rf_sink_new(STDOUT_FILENO, 4u << 20, errstr, size);
        if (!e->sink)
            return e;
    }
    struct rf_outputs_cbs ocbs = {on_acked, on_output_failed, on_output_lost, e};
    e->out = rf_outputs_new(deps->loop, deps->rkp, conf->dlq_topic, deps->dlq_value_max, &ocbs,
                            errstr, size);
    if (!e->out)
        return e; /* rf_engine_failed_new: the caller closes and destroys */
    rf_outputs_set_txn(e->out, deps->txn != NULL);
    if (check_topics(e, errstr, size) != 0 || build_jobs(e, errstr, size) != 0)
        return e;
    if (rf_decl_finish(deps->decl, errstr, size) != 0)
        return e;
    for (int j = 0; j < e->n_jobs; j++)
        if (e->jobs[j].ops->ready(e->jobs[j].obj, errstr, size) != 0)
            return e;
    e->n_kinds = rf_decl_n_kinds(deps->decl);
    for (int k = 0; k < e->n_kinds; k++) {
        if (!rf_decl_sliced(deps->decl, k))
            continue;
        e->sliced |= 1u << k;
        size_t vs = (rf_decl_value_size(deps->decl, k) + 7) & ~(size_t)7;
        e->view[k] = aligned_alloc(8, vs);
        if (!e->view[k]) {
            snprintf(errstr, size, "out of memory");
            return e;
        }
    }
    e->n_rtypes = rf_schemas_n_rtypes(deps->schemas);
    if (setup_hashing(e, errstr, size) != 0)
        return e;
    e->takers = calloc((size_t)e->n_rtypes + 1, sizeof *e->takers);
    e->pool_n = conf->max_inflight;
    e->pool = calloc((size_t)e->pool_n, sizeof *e->pool);
    e->offs = rf_offsets_new(e->pool_n);
    if (!e->takers || !e->pool || !e->offs) {
        snprintf(errstr, size, "out of memory");
        return e;
    }
    for (int i = 0; i < e->n_rtypes; i++) {
        const struct rf_rtype *t = rf_schemas_rtype_at(deps->schemas, i);
        for (int j = 0; j < e->n_jobs; j++)
            if (e->jobs[j].ops->takes(e->jobs[j].obj, t))
                e->takers[i] |= 1u << j;
    }
    for (int i = e->pool_n - 1; i >= 0; i--) {
        e->pool[i].flush_next = e->free_head;
        e->free_head = i;
    }
    errstr[0] = '\0';
    return e;
}

void rf_engine_set_store(rf_engine_t *e, rf_store_t *store) {
    e->store = store;
}

void rf_engine_stop(rf_engine_t *e) {
    e->stopping = 1;
    uv_idle_stop(&e->kick);
}

uint64_t rf_engine_assignments(const rf_engine_t *e) {
    return e->assignments;
}

int rf_engine_assigned(const rf_engine_t *e) {
    return e->offs ? rf_offsets_n_assigned(e->offs) : 0;
}

void rf_engine_each_partition(rf_engine_t *e, rf_engine_part_fn fn, void *arg) {
    for (int i = 0; e->offs && i < rf_offsets_n_parts(e->offs); i++) {
        const struct rf_part *pt = rf_offsets_part_at(e->offs, i);
        if (!pt->assigned)
            continue;
        int64_t lo = -1, hi = -1, lag = -1;
        /* The broker's end as of the last fetch (cached: no request, no wait). */
        if (e->d.rk && rd_kafka_get_watermark_offsets(e->d.rk, pt->topic, pt->partition, &lo,
                                                      &hi) == RD_KAFKA_RESP_ERR_NO_ERROR &&
            hi >= 0 && pt->stored >= 0)
            lag = hi > pt->stored + 1 ? hi - (pt->stored + 1) : 0;
        int paused = 0;
        for (int k = 0; e->revoking && k < e->revoking->cnt; k++)
            paused |= e->revoking->elems[k].partition == pt->partition &&
                      strcmp(e->revoking->elems[k].topic, pt->topic) == 0;
        fn(arg, pt->topic, pt->partition, lag, paused);
    }
}

int rf_engine_models(const rf_engine_t *e, struct rf_model_info *out, int max) {
    int n = 0;
    for (int j = 0; j < e->n_jobs && n < max; j++)
        if (e->jobs[j].ops->models)
            n += e->jobs[j].ops->models(e->jobs[j].obj, out + n, max - n);
    return n;
}

int rf_engine_inflight(const rf_engine_t *e) {
    return e->inflight + e->revoke_works + (e->txn_phase == TXN_ENDING);
}

int rf_engine_failed(const rf_engine_t *e) {
    return e->failed;
}

void rf_engine_close_print(rf_engine_t *e) {
    if (e && e->sink) {
        e->d.metrics->print_dropped = rf_sink_destroy(e->sink, 5000);
        e->sink = NULL;
    }
}

/* ---- hot reload ---- */

struct reload {
    uv_work_t req;
    rf_engine_t *e;
    rf_engine_reload_cb cb;
    void *arg;
    void *staged[RF_JOBS_KNOWN_MAX];
    struct rf_reload_result res[RF_JOBS_KNOWN_MAX];
    int n;
};

/* Off the loop: each job stages its models (job.h: reload_stage reads nothing the hooks
 * change). */
static void reload_work(uv_work_t *req) {
    struct reload *rl = req->data;
    rf_engine_t *e = rl->e;
    for (int j = 0; j < e->n_jobs; j++) {
        struct rf_reload_result *r = &rl->res[j];
        r->job = e->jobs[j].ops->name;
        r->skipped = !e->jobs[j].ops->reload_stage;
        if (r->skipped)
            continue;
        rl->staged[j] = e->jobs[j].ops->reload_stage(e->jobs[j].obj, r->error, sizeof r->error);
    }
}

/* On the loop, so never inside a batch's hooks and scoring: swap in what loaded. */
static void reload_done(uv_work_t *req, int status) {
    struct reload *rl = req->data;
    rf_engine_t *e = rl->e;
    e->reloading = 0;
    for (int j = 0; j < e->n_jobs; j++) {
        struct rf_reload_result *r = &rl->res[j];
        if (r->skipped)
            continue;
        if (status != 0 || e->stopping || !rl->staged[j]) {
            e->jobs[j].ops->reload_discard(rl->staged[j]);
            if (!rl->staged[j])
                snprintf(r->error, sizeof r->error, "out of memory");
            r->ok = 0;
            continue;
        }
        r->ok = e->jobs[j].ops->reload_swap(e->jobs[j].obj, rl->staged[j], r->serving,
                                             sizeof r->serving) == 0;
    }
    if (!e->stopping)
        rl->cb(e, rl->res, e->n_jobs, rl->arg);
    free(rl);
}

int rf_engine_reload(rf_engine_t *e, rf_engine_reload_cb cb, void *arg) {
    if (e->stopping)
        return RF_E_CLOSED;
    if (e->reloading)
        return RF_E_BUSY;
    struct reload *rl = calloc(1, sizeof *rl);
    if (!rl)
        return RF_E_NOMEM;
    rl->e = e;
    rl->cb = cb;
    rl->arg = arg;
    rl->req.data = rl;
    if (uv_queue_work(e->d.loop, &rl->req, reload_work, reload_done) != 0) {
        free(rl);
        return RF_E_INVAL;
    }
    e->reloading = 1;
    return 0;
}

const char *rf_engine_jobs(const rf_engine_t *e) {
    return e->job_names;
}

static void on_closed(uv_handle_t *h) {
    rf_engine_t *e = h->data;
    if (--e->closing_left == 0 && e->close_cb)
        e->close_cb(e->close_arg);
}

static void on_outputs_closed(void *arg) {
    rf_engine_t *e = arg;
    if (--e->closing_left == 0 && e->close_cb)
        e->close_cb(e->close_arg);
}

void rf_engine_close(rf_engine_t *e, void (*cb)(void *), void *arg) {
    e->stopping = 1;
    e->close_cb = cb;
    e->close_arg = arg;
    e->closing_left = e->out ? 4 : 3;
    uv_close((uv_handle_t *)&e->kick, on_closed);
    uv_close((uv_handle_t *)&e->revoke_timer, on_closed);
    uv_close((uv_handle_t *)&e->txn_timer, on_closed);
    if (e->out)
        rf_outputs_close(e->out, on_outputs_closed, e);
}

void rf_engine_destroy(rf_engine_t *e) {
    if (!e)
        return;
    /* Events abandoned at a timed-out shutdown still hold their consumer messages. */
    for (int i = 0; e->pool && i < e->pool_n; i++)
        if (e->pool[i].rkm)
            rd_kafka_message_destroy(e->pool[i].rkm);
    if (e->revoking)
        rd_kafka_topic_partition_list_destroy(e->revoking);
    for (int i = 0; e->offs && i < rf_offsets_n_parts(e->offs); i++)
        rd_kafka_topic_destroy(rf_offsets_part_at(e->offs, i)->handle);
    for (int j = 0; j < e->n_jobs; j++)
        e->jobs[j].ops->destroy(e->jobs[j].obj);
    rf_outputs_destroy(e->out);
    rf_offsets_destroy(e->offs);
    rf_engine_close_print(e);
    free(e->takers);
    free(e->pool);
    free(e->hash_fields);
    rf_keyhash_destroy(e->keyhash);
    for (int k = 0; k < RF_KINDS_MAX; k++)
        free(e->view[k]);
    free(e->stage);
    rf_jbuf_free(&e->stage_bytes);
    for (int i = 0; i < e->jg_cap; i++) {
        rf_jbuf_free(&e->jg[i].bytes);
        free(e->jg[i].p);
    }
    free(e->jg);
    free(e);
}
