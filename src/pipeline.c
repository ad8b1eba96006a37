/*
 * pipeline.c — one micro-batch at a time from the consumer to the producer, and the
 * bookkeeping that turns out-of-order completions into safe offsets. See pipeline.h.
 *
 * Loop thread only: librdkafka callbacks (rebalance, delivery reports, logs) run here because
 * we serve its queues from the loop; store callbacks run from Redis replies on the loop.
 * Must never: store an offset past an event that is not complete; drop a message without an
 * outcome; allocate per event (librdkafka's own message copies aside).
 */
#include "riskflow/pipeline.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "riskflow/err.h"
#include "riskflow/features.h"
#include "riskflow/log.h"

enum { OUT_SCORE, OUT_ALERT, OUT_DLQ, OUT__N };

#define RETRY_MIN_MS 100  /* produce retries back off from here ... */
#define RETRY_MAX_MS 5000 /* ... to here while the broker keeps refusing */

struct evt;

/* What a delivery report points back to: one output of one event. */
struct out_slot {
    struct evt *ev;
    uint8_t kind;
};

struct evt {
    rd_kafka_message_t *rkm; /* owned: destroyed when the event leaves its partition FIFO */
    int32_t part;
    int32_t next;       /* partition FIFO, then free list */
    int32_t flush_next; /* FIFO of events waiting for a store flush */
    int64_t offset;
    uint64_t t_in_ns;
    uint64_t flush_gen;
    int32_t store_idx;
    int16_t pending; /* outputs not yet acknowledged + 1 while the state flush is due */
    int8_t reason;   /* 0: a payment; else -RF_E_* of the decode error (dead-lettered) */
    uint32_t part_gen; /* the partition's generation when this event was consumed */
    uint8_t done;
    uint8_t alert;
    struct out_slot out[OUT__N];
    int64_t scored_at_ms;
    double score;
    struct rf_payment p;
    double feat[RF_FEAT__N];
};

struct part {
    char topic[256];
    uint32_t topic_id; /* rf_feature_topic_id(topic): the replay guard's source id */
    int32_t partition;
    const rd_kafka_topic_t *seen; /* the consumer's topic handle, to skip strcmp */
    rd_kafka_topic_t *rkt;        /* our own reference, for rd_kafka_offset_store */
    enum rf_framing framing;
    int32_t head, tail;
    int64_t stored; /* highest offset stored (its next offset was committed), -1: none */
    int assigned;
    uint32_t generation; /* bumped at each assign: events of an older one store no offset */
};

struct rf_pipeline_s {
    struct rf_pipeline_deps d;
    struct evt *pool;
    int pool_n;
    int32_t free_head;
    int inflight;

    struct part *parts;
    int n_parts, cap_parts;

    int32_t batch[256];
    int batch_n;
    int fetch_wait;
    int starved; /* stopped taking messages for lack of room: resume on completion */

    int32_t flush_head, flush_tail;

    double *x;      /* batch_max × n_features */
    double *scores; /* batch_max */
    const int *feat_ids;
    int n_feat;
    uint8_t enc[16384];

    int32_t payment_id, score_id, alert_id;
    enum rf_framing out_framing;
    double threshold;
    rd_kafka_topic_t *rkt_scores, *rkt_alerts, *rkt_dlq;

    /* Outputs to produce again (queue full, failed delivery). */
    struct out_slot **retry;
    int retry_n, retry_cap;
    unsigned retry_ms;
    uv_timer_t retry_timer;
    uv_idle_t kick;
    int closing_left;
    void (*close_cb)(void *);
    void *close_arg;

    int stopping;
    int failed;
    int rejoin_assigns;           /* assign callbacks still due after a cooperative revoke */
    rd_kafka_topic_partition_list_t *revoking; /* a revocation waiting for its events */
    int revoking_cooperative;
    uint64_t revoke_deadline_ms;
    uv_timer_t revoke_timer;
    uint64_t rebalance_start_ms;
    uint64_t log_budget_reset_ms;
    int log_budget;
};

/* Per-message problems are logged at most 20 times a second: the counters have the rest. */
static int log_allowed(rf_pipeline_t *pl) {
    uint64_t now = uv_now(pl->d.loop);
    if (now - pl->log_budget_reset_ms >= 1000) {
        pl->log_budget_reset_ms = now;
        pl->log_budget = 20;
    }
    return pl->log_budget-- > 0;
}

static int64_t wall_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Framing of a topic: its ":plain"/":confluent" suffix in input.topics, else input.framing. */
static enum rf_framing topic_framing(const struct rf_conf *conf, const char *topic) {
    size_t tlen = strlen(topic);
    const char *p = conf->input_topics;
    while (*p) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        if (len > tlen && strncmp(p, topic, tlen) == 0 && p[tlen] == ':')
            return p[tlen + 1] == 'p' ? RF_FRAMING_PLAIN : RF_FRAMING_CONFLUENT;
        if (!comma)
            break;
        p = comma + 1;
    }
    return strcmp(conf->input_framing, "plain") == 0 ? RF_FRAMING_PLAIN : RF_FRAMING_CONFLUENT;
}

static int32_t get_part(rf_pipeline_t *pl, const rd_kafka_topic_t *seen, const char *topic,
                        int32_t partition) {
    for (int i = 0; i < pl->n_parts; i++) {
        struct part *pt = &pl->parts[i];
        if (pt->partition == partition &&
            ((seen && pt->seen == seen) || strcmp(pt->topic, topic) == 0)) {
            if (seen)
                pt->seen = seen;
            return i;
        }
    }
    if (pl->n_parts == pl->cap_parts) {
        int cap = pl->cap_parts ? pl->cap_parts * 2 : 16;
        struct part *p = realloc(pl->parts, sizeof *p * (size_t)cap);
        if (!p)
            abort();
        pl->parts = p;
        pl->cap_parts = cap;
    }
    struct part *pt = &pl->parts[pl->n_parts];
    memset(pt, 0, sizeof *pt);
    snprintf(pt->topic, sizeof pt->topic, "%s", topic);
    pt->topic_id = rf_feature_topic_id(topic);
    pt->partition = partition;
    pt->seen = seen;
    pt->rkt = rd_kafka_topic_new(pl->d.rk, topic, NULL);
    pt->framing = topic_framing(pl->d.conf, topic);
    pt->head = pt->tail = -1;
    pt->stored = -1;
    return pl->n_parts++;
}

static void kick(rf_pipeline_t *pl);
static void produce(rf_pipeline_t *pl, struct out_slot *slot);
static int inflight_in(const rf_pipeline_t *pl, const rd_kafka_topic_partition_list_t *parts);
static void on_revoke_timer(uv_timer_t *t);

static void release(rf_pipeline_t *pl, int32_t i) {
    struct evt *ev = &pl->pool[i];
    rd_kafka_message_destroy(ev->rkm);
    ev->rkm = NULL;
    ev->next = pl->free_head;
    pl->free_head = i;
    pl->inflight--;
}

static void complete(rf_pipeline_t *pl, struct evt *ev) {
    ev->done = 1;
    uint64_t now = uv_hrtime();
    rf_hist_add(&pl->d.metrics->latency, (now - ev->t_in_ns) / 1000);
    pl->d.metrics->last_done_ns = now;
    if (ev->reason == 0)
        pl->d.metrics->scored++;

    /* Advance the partition's watermark over every complete event at its head. */
    struct part *pt = &pl->parts[ev->part];
    int64_t last = -1;
    uint32_t last_gen = 0;
    while (pt->head >= 0 && pl->pool[pt->head].done) {
        int32_t h = pt->head;
        last = pl->pool[h].offset;
        last_gen = pl->pool[h].part_gen;
        pt->head = pl->pool[h].next;
        if (pt->head < 0)
            pt->tail = -1;
        release(pl, h);
    }
    /* An event consumed before the partition was revoked and given back must not store its
     * offset: the member that had it meanwhile may have committed further, and the commit
     * would go backwards. */
    if (last >= 0 && pt->assigned && last_gen == pt->generation && last > pt->stored) {
        rd_kafka_resp_err_t err = rd_kafka_offset_store(pt->rkt, pt->partition, last);
        if (err) {
            if (log_allowed(pl))
                RF_WARN("KAFKA", "offset store %s [%" PRId32 "] @%" PRId64 ": %s", pt->topic,
                        pt->partition, last + 1, rd_kafka_err2str(err));
        } else {
            pt->stored = last;
            pl->d.metrics->offsets_stored++;
        }
    }
    /* A revocation waits for its partitions to drain: look again from a clean stack (it
     * commits synchronously and unassigns, which must not run inside a delivery report). */
    if (pl->revoking && !uv_is_closing((uv_handle_t *)&pl->revoke_timer) &&
        inflight_in(pl, pl->revoking) == 0)
        uv_timer_start(&pl->revoke_timer, on_revoke_timer, 0, 0);
    if (pl->stopping || pl->failed)
        pl->d.on_idle(pl->d.arg);
    else if (pl->starved)
        kick(pl);
}

static void unpend(rf_pipeline_t *pl, struct evt *ev) {
    if (--ev->pending == 0)
        complete(pl, ev);
}

/* ---- outputs ---- */

static void on_retry(uv_timer_t *t);

static void queue_retry(rf_pipeline_t *pl, struct out_slot *slot) {
    if (pl->retry_n == pl->retry_cap)
        abort(); /* sized for every output of every pooled event: cannot happen */
    pl->retry[pl->retry_n++] = slot;
    if (!uv_is_active((uv_handle_t *)&pl->retry_timer)) {
        uv_timer_start(&pl->retry_timer, on_retry, pl->retry_ms, 0);
        pl->retry_ms = pl->retry_ms * 2 > RETRY_MAX_MS ? RETRY_MAX_MS : pl->retry_ms * 2;
    }
}

static void on_retry(uv_timer_t *t) {
    rf_pipeline_t *pl = t->data;
    int n = pl->retry_n;
    pl->retry_n = 0;
    for (int i = 0; i < n; i++)
        produce(pl, pl->retry[i]);
}

static int model_row(rf_pipeline_t *pl, const struct evt *ev, double *row) {
    for (int j = 0; j < pl->n_feat; j++)
        row[j] = ev->feat[pl->feat_ids[j]];
    return pl->n_feat;
}

static int encode(rf_pipeline_t *pl, const struct evt *ev, int kind, size_t *len) {
    double row[RF_FEATURES_MAX];
    model_row(pl, ev, row);
    const char *version = rf_model_version(pl->d.model);
    if (kind == OUT_SCORE) {
        struct rf_fraud_score s = {
            .event_id = ev->p.event_id,
            .customer_id = ev->p.customer_id,
            .score = ev->score,
            .model_version = version,
            .n_features = pl->n_feat,
            .event_time_ms = ev->p.event_time_ms,
            .scored_at_ms = ev->scored_at_ms,
            .source_partition = pl->parts[ev->part].partition,
            .source_offset = ev->offset,
        };
        for (int j = 0; j < pl->n_feat; j++) {
            s.features[j].name = rf_model_feature_name(pl->d.model, j);
            s.features[j].value = row[j];
        }
        return rf_encode_fraud_score(&s, pl->out_framing, pl->score_id, pl->enc, sizeof pl->enc,
                                     len);
    }
    struct rf_fraud_alert a = {
        .event_id = ev->p.event_id,
        .customer_id = ev->p.customer_id,
        .card_token = ev->p.card_token,
        .terminal_id = ev->p.terminal_id,
        .amount_minor = ev->p.amount_minor,
        .currency = ev->p.currency,
        .score = ev->score,
        .threshold = pl->threshold,
        .model_version = version,
        .event_time_ms = ev->p.event_time_ms,
        .alerted_at_ms = ev->scored_at_ms,
    };
    a.n_reasons = rf_model_reasons(pl->d.model, row, a.reasons, RF_REASONS_MAX);
    return rf_encode_fraud_alert(&a, pl->out_framing, pl->alert_id, pl->enc, sizeof pl->enc, len);
}

/* A DLQ record must be producible whatever arrived: an input message can be as large as the
 * broker allows (1048588 bytes by default), over the producer's message.max.bytes (1000000).
 * The original bytes go to the DLQ intact up to DLQ_VALUE_MAX, the key up to DLQ_KEY_MAX;
 * beyond that they are cut, and the headers say so. */
#define DLQ_VALUE_MAX 900000
#define DLQ_KEY_MAX 1024

static rd_kafka_headers_t *dlq_headers(rf_pipeline_t *pl, const struct evt *ev) {
    const struct part *pt = &pl->parts[ev->part];
    char num[32];
    rd_kafka_headers_t *h = rd_kafka_headers_new(8);
    const char *reason = rf_err_reason(-ev->reason);
    rd_kafka_header_add(h, "rf.reason", -1, reason, -1);
    rd_kafka_header_add(h, "rf.error", -1, rf_strerror(-ev->reason), -1);
    rd_kafka_header_add(h, "rf.source.topic", -1, pt->topic, -1);
    snprintf(num, sizeof num, "%" PRId32, pt->partition);
    rd_kafka_header_add(h, "rf.source.partition", -1, num, -1);
    snprintf(num, sizeof num, "%" PRId64, ev->offset);
    rd_kafka_header_add(h, "rf.source.offset", -1, num, -1);
    if (ev->rkm->len > DLQ_VALUE_MAX || ev->rkm->key_len > DLQ_KEY_MAX) {
        rd_kafka_header_add(h, "rf.truncated", -1, "true", -1);
        snprintf(num, sizeof num, "%zu", ev->rkm->len);
        rd_kafka_header_add(h, "rf.original.size", -1, num, -1);
    }
    return h;
}

/* A fatal client error (idempotence broken, fenced): nothing more may be produced or
 * committed by this instance, so the daemon stops. Returns 1 when rk had one. */
static int fatal(rf_pipeline_t *pl, rd_kafka_t *rk, const char *who) {
    char reason[256];
    if (!rd_kafka_fatal_error(rk, reason, sizeof reason))
        return 0;
    RF_ERR("KAFKA", "%s fatal error: %s", who, reason);
    pl->failed = 1;
    pl->d.on_idle(pl->d.arg);
    return 1;
}

/* Errors that no retry can mend: the output can never be produced as it is. */
static int permanent(rd_kafka_resp_err_t err) {
    switch (err) {
    case RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE:
    case RD_KAFKA_RESP_ERR_INVALID_MSG:
    case RD_KAFKA_RESP_ERR_INVALID_RECORD:
    case RD_KAFKA_RESP_ERR_RECORD_LIST_TOO_LARGE:
    case RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED:
    case RD_KAFKA_RESP_ERR_CLUSTER_AUTHORIZATION_FAILED:
    case RD_KAFKA_RESP_ERR_INVALID_REQUIRED_ACKS:
    case RD_KAFKA_RESP_ERR__INVALID_ARG:
        return 1;
    default:
        return 0;
    }
}

/* An output failed. Transient errors are retried (backing off); a fatal client error or a
 * permanent one stops the daemon: retrying forever would stall the partition in silence, and
 * the event's offset is never stored, so nothing is lost. */
static void output_failed(rf_pipeline_t *pl, struct out_slot *slot, const char *what,
                          rd_kafka_resp_err_t err) {
    struct evt *ev = slot->ev;
    const struct part *pt = &pl->parts[ev->part];
    if (err == RD_KAFKA_RESP_ERR__FATAL && fatal(pl, pl->d.rkp, "producer"))
        return;
    if (permanent(err)) {
        RF_ERR("KAFKA", "%s for %s [%" PRId32 "] @%" PRId64 ": %s: cannot succeed, stopping",
               what, pt->topic, pt->partition, ev->offset, rd_kafka_err2str(err));
        pl->failed = 1;
        pl->d.on_idle(pl->d.arg);
        return;
    }
    if (log_allowed(pl))
        RF_WARN("KAFKA", "%s for %s [%" PRId32 "] @%" PRId64 ": %s (will retry)", what, pt->topic,
                pt->partition, ev->offset, rd_kafka_err2str(err));
    pl->d.metrics->produce_retries++;
    queue_retry(pl, slot);
}

static void produce(rf_pipeline_t *pl, struct out_slot *slot) {
    struct evt *ev = slot->ev;
    rd_kafka_resp_err_t err;
    if (slot->kind == OUT_DLQ) {
        rd_kafka_headers_t *h = dlq_headers(pl, ev);
        size_t len = ev->rkm->len < DLQ_VALUE_MAX ? ev->rkm->len : DLQ_VALUE_MAX;
        size_t klen = ev->rkm->key_len < DLQ_KEY_MAX ? ev->rkm->key_len : DLQ_KEY_MAX;
        err = rd_kafka_producev(pl->d.rkp, RD_KAFKA_V_RKT(pl->rkt_dlq),
                                RD_KAFKA_V_KEY(ev->rkm->key, klen),
                                RD_KAFKA_V_VALUE(ev->rkm->payload, len),
                                RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                                RD_KAFKA_V_OPAQUE(slot), RD_KAFKA_V_HEADERS(h), RD_KAFKA_V_END);
        if (err)
            rd_kafka_headers_destroy(h); /* only a successful producev takes them */
    } else {
        size_t len = 0;
        int rc = encode(pl, ev, slot->kind, &len);
        if (rc != 0) {
            /* Every field is bounded (ids by the decoder, the version by the model loader,
             * RF_FEATURES_MAX names from the catalogue) and the buffer holds the bounds: this
             * is a bug, and the daemon stops cleanly rather than emit a wrong record. */
            RF_ERR("PIPE", "encode event %s: %s: stopping", ev->p.event_id, rf_strerror(rc));
            pl->failed = 1;
            pl->d.on_idle(pl->d.arg);
            return;
        }
        err = rd_kafka_producev(pl->d.rkp,
                                RD_KAFKA_V_RKT(slot->kind == OUT_SCORE ? pl->rkt_scores
                                                                       : pl->rkt_alerts),
                                RD_KAFKA_V_KEY(ev->p.customer_id, strlen(ev->p.customer_id)),
                                RD_KAFKA_V_VALUE(pl->enc, len),
                                RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                                RD_KAFKA_V_OPAQUE(slot), RD_KAFKA_V_END);
    }
    if (err)
        output_failed(pl, slot, "produce", err);
}

static void print_alert(rf_pipeline_t *pl, const struct evt *ev) {
    double row[RF_FEATURES_MAX];
    struct rf_reason reasons[RF_REASONS_MAX];
    model_row(pl, ev, row);
    int n = rf_model_reasons(pl->d.model, row, reasons, RF_REASONS_MAX);
    char why[512];
    size_t off = 0;
    for (int i = 0; i < n && off < sizeof why; i++)
        off += (size_t)snprintf(why + off, sizeof why - off, "%s%s=%.4g (%+.2f)", i ? ", " : "",
                                reasons[i].feature, reasons[i].value, reasons[i].contribution);
    if (n == 0)
        snprintf(why, sizeof why, "-");
    /* The magnitude as unsigned: -INT64_MIN does not exist, and -0.50 keeps its sign. */
    uint64_t mag = ev->p.amount_minor < 0 ? 0 - (uint64_t)ev->p.amount_minor
                                          : (uint64_t)ev->p.amount_minor;
    printf("ALERT %s customer=%s card=%s amount=%s%" PRIu64 ".%02" PRIu64 " %s score=%.3f "
           "threshold=%.3f model=%s reasons: %s\n",
           ev->p.event_id, ev->p.customer_id, ev->p.card_token, ev->p.amount_minor < 0 ? "-" : "",
           mag / 100, mag % 100, ev->p.currency, ev->score, pl->threshold,
           rf_model_version(pl->d.model), why);
    fflush(stdout);
}

void rf_pipeline_dr_msg_cb(rd_kafka_t *rkp, const rd_kafka_message_t *rkm, void *opaque) {
    rf_pipeline_t *pl = opaque;
    struct out_slot *slot = rkm->_private;
    struct evt *ev = slot->ev;
    if (rkm->err) {
        if (fatal(pl, rkp, "producer"))
            return;
        output_failed(pl, slot, "delivery", rkm->err);
        return;
    }
    pl->retry_ms = RETRY_MIN_MS; /* the broker takes messages again */
    if (slot->kind == OUT_ALERT) {
        pl->d.metrics->alerts++;
        if (strcmp(pl->d.conf->alerts_print, "stdout") == 0)
            print_alert(pl, ev);
    } else if (slot->kind == OUT_DLQ) {
        pl->d.metrics->dead_lettered++;
        if (ev->reason > 0 && ev->reason < RF_DLQ_REASONS)
            pl->d.metrics->dlq_by_reason[ev->reason]++;
    }
    unpend(pl, ev);
}

void rf_pipeline_serve_producer(rf_pipeline_t *pl) {
    while (rd_kafka_poll(pl->d.rkp, 0) > 0)
        ;
}

/* ---- the batch ---- */

static void batch_finish(rf_pipeline_t *pl) {
    struct rf_metrics *m = pl->d.metrics;
    int rows = 0;
    for (int b = 0; b < pl->batch_n; b++) {
        struct evt *ev = &pl->pool[pl->batch[b]];
        if (ev->reason)
            continue;
        struct rf_cust_state *st = rf_store_state(pl->d.store, ev->store_idx);
        struct part *pt = &pl->parts[ev->part];
        if (rf_features_apply(st, &ev->p, pt->topic_id, pt->partition, ev->offset, ev->feat)) {
            ev->flush_gen = rf_store_mark_dirty(pl->d.store, ev->store_idx);
            ev->pending++;
            int32_t i = pl->batch[b];
            ev->flush_next = -1;
            if (pl->flush_tail >= 0)
                pl->pool[pl->flush_tail].flush_next = i;
            else
                pl->flush_head = i;
            pl->flush_tail = i;
        } else {
            m->replays++;
        }
        rf_store_unpin(pl->d.store, ev->store_idx);
        model_row(pl, ev, pl->x + (size_t)rows * (size_t)pl->n_feat);
        rows++;
    }
    if (rows > 0 && rf_model_score_batch(pl->d.model, pl->x, rows, pl->scores) != 0)
        abort(); /* rows <= batch_max <= RF_MODEL_BATCH_MAX: cannot fail */

    int64_t now = wall_ms();
    int r = 0;
    /* Count every output before producing any: a delivery can't complete an event early,
     * but the memory store's flush below completes events synchronously. */
    for (int b = 0; b < pl->batch_n; b++) {
        struct evt *ev = &pl->pool[pl->batch[b]];
        if (ev->reason) {
            ev->pending++;
            continue;
        }
        ev->score = pl->scores[r++];
        ev->scored_at_ms = now;
        ev->alert = ev->score >= pl->threshold;
        ev->pending += 1 + ev->alert;
    }
    for (int b = 0; b < pl->batch_n; b++) {
        struct evt *ev = &pl->pool[pl->batch[b]];
        if (ev->reason) {
            produce(pl, &ev->out[OUT_DLQ]);
            continue;
        }
        produce(pl, &ev->out[OUT_SCORE]);
        if (ev->alert)
            produce(pl, &ev->out[OUT_ALERT]);
    }
    pl->batch_n = 0;
    rf_store_flush(pl->d.store);
}

/* Decode and look up. Returns 1 when the batch must wait for a store fetch. */
static int batch_start(rf_pipeline_t *pl) {
    for (int b = 0; b < pl->batch_n; b++) {
        struct evt *ev = &pl->pool[pl->batch[b]];
        const struct part *pt = &pl->parts[ev->part];
        int rc = rf_decode_payment(ev->rkm->payload, ev->rkm->len, pt->framing, pl->payment_id,
                                   (size_t)pl->d.conf->input_max_bytes, &ev->p);
        /* RF_E_INVAL: a customer id that does not fit a key is bad data, like any other. */
        if (rc == 0)
            rc = rf_store_lookup(pl->d.store, ev->p.customer_id, &ev->store_idx) < 0
                     ? RF_E_MALFORMED
                     : 0;
        if (rc != 0) {
            ev->reason = (int8_t)-rc;
            if (log_allowed(pl))
                RF_WARN("PIPE", "%s [%" PRId32 "] @%" PRId64 ": %s: dead-lettered", pt->topic,
                        pt->partition, ev->offset, rf_strerror(rc));
        }
    }
    int rc = rf_store_fetch(pl->d.store);
    if (rc < 0) {
        RF_ERR("PIPE", "store fetch: %s", rf_strerror(rc));
        abort(); /* BUSY can't happen: one batch at a time */
    }
    return rc == 0;
}

static int32_t take(rf_pipeline_t *pl, rd_kafka_message_t *rkm) {
    int32_t i = pl->free_head;
    struct evt *ev = &pl->pool[i];
    pl->free_head = ev->next;
    pl->inflight++;
    ev->rkm = rkm;
    ev->part = get_part(pl, rkm->rkt, rd_kafka_topic_name(rkm->rkt), rkm->partition);
    ev->offset = rkm->offset;
    ev->t_in_ns = uv_hrtime();
    ev->flush_gen = 0;
    ev->store_idx = -1;
    ev->pending = 0;
    ev->reason = 0;
    ev->part_gen = pl->parts[ev->part].generation;
    ev->done = 0;
    ev->alert = 0;
    ev->next = -1;
    struct part *pt = &pl->parts[ev->part];
    if (pt->tail >= 0)
        pl->pool[pt->tail].next = i;
    else
        pt->head = i;
    pt->tail = i;
    return i;
}

static void consumer_error(rf_pipeline_t *pl, const rd_kafka_message_t *rkm) {
    if (rkm->err == RD_KAFKA_RESP_ERR__PARTITION_EOF)
        return;
    if (rkm->err == RD_KAFKA_RESP_ERR__FATAL && fatal(pl, pl->d.rk, "consumer"))
        return;
    if (log_allowed(pl))
        RF_WARN("KAFKA", "consumer: %s%s%s", rd_kafka_err2str(rkm->err),
                rkm->rkt ? " on " : "", rkm->rkt ? rd_kafka_topic_name(rkm->rkt) : "");
}

void rf_pipeline_drain(rf_pipeline_t *pl) {
    int max = pl->d.conf->batch_max;
    while (!pl->stopping && !pl->failed && !pl->fetch_wait) {
        int n = 0;
        pl->starved = 0;
        while (n < max) {
            if (pl->free_head < 0) {
                pl->starved = 1; /* completions free room and kick us */
                break;
            }
            rd_kafka_message_t *rkm = rd_kafka_consumer_poll(pl->d.rk, 0);
            if (!rkm)
                break;
            if (rkm->err) {
                consumer_error(pl, rkm);
                rd_kafka_message_destroy(rkm);
                continue;
            }
            /* A message of a partition we no longer own (prefetched before a revocation and
             * still queued) belongs to its new owner: scoring it here would score it twice,
             * and its offset could not be stored anyway. */
            int32_t k = get_part(pl, rkm->rkt, rd_kafka_topic_name(rkm->rkt), rkm->partition);
            if (!pl->parts[k].assigned) {
                pl->d.metrics->not_owned++;
                if (log_allowed(pl))
                    RF_INFO("KAFKA", "%s [%" PRId32 "] @%" PRId64 ": no longer assigned here; "
                            "left to its new owner", pl->parts[k].topic, rkm->partition,
                            rkm->offset);
                rd_kafka_message_destroy(rkm);
                continue;
            }
            pl->batch[n++] = take(pl, rkm);
        }
        if (n == 0)
            return;
        pl->batch_n = n;
        if (pl->d.metrics->events_in == 0)
            pl->d.metrics->first_in_ns = pl->pool[pl->batch[0]].t_in_ns;
        pl->d.metrics->events_in += (uint64_t)n;
        rf_hist_add(&pl->d.metrics->batch_size, (uint64_t)n);
        if (batch_start(pl)) {
            pl->fetch_wait = 1;
            return; /* rf_pipeline_on_fetched resumes */
        }
        batch_finish(pl);
    }
}

void rf_pipeline_on_fetched(rf_pipeline_t *pl, int status) {
    pl->fetch_wait = 0;
    if (status != 0)
        return; /* closing: the batch's events are abandoned, their offsets not stored */
    batch_finish(pl);
    kick(pl);
}

void rf_pipeline_on_flushed(rf_pipeline_t *pl, uint64_t gen) {
    while (pl->flush_head >= 0 && pl->pool[pl->flush_head].flush_gen <= gen) {
        struct evt *ev = &pl->pool[pl->flush_head];
        pl->flush_head = ev->flush_next;
        if (pl->flush_head < 0)
            pl->flush_tail = -1;
        unpend(pl, ev);
    }
}

static void on_kick(uv_idle_t *idle) {
    rf_pipeline_t *pl = idle->data;
    uv_idle_stop(idle);
    rf_pipeline_drain(pl);
}

/* Drain again on the next loop turn, from a clean stack. */
static void kick(rf_pipeline_t *pl) {
    if (!pl->stopping && !uv_is_closing((uv_handle_t *)&pl->kick))
        uv_idle_start(&pl->kick, on_kick);
}

/* ---- rebalances ---- */

/* Let go of revoked partitions: commit what is stored, synchronously, then unassign. */
static void revoke_finish(rf_pipeline_t *pl, rd_kafka_t *rk,
                          rd_kafka_topic_partition_list_t *parts, int cooperative, int lost) {
    rd_kafka_error_t *error = NULL;
    rd_kafka_resp_err_t rerr = 0;
    rd_kafka_resp_err_t cerr = lost ? RD_KAFKA_RESP_ERR_NO_ERROR /* cannot succeed */
                                    : rd_kafka_commit(rk, NULL, 0);
    if (cerr && cerr != RD_KAFKA_RESP_ERR__NO_OFFSET)
        RF_WARN("KAFKA", "commit on revoke: %s", rd_kafka_err2str(cerr));
    /* A cooperative revoke is followed by the assign that ends its round, and then the
     * member rejoins: commits must wait for the assign that ends that second round
     * (observed with 2.0.2: revoke, an empty assign 2 ms later, the rejoin pending until
     * every member has rejoined). A lost assignment has no second round to wait for. */
    if (cooperative && !lost) {
        pl->rejoin_assigns = 2;
        pl->rebalance_start_ms = uv_now(pl->d.loop);
    }
    for (int i = 0; i < parts->cnt; i++) {
        int32_t k = get_part(pl, NULL, parts->elems[i].topic, parts->elems[i].partition);
        struct part *pt = &pl->parts[k]; /* after get_part: it may move the array */
        pt->assigned = 0;
        RF_INFO("KAFKA", "revoked %s [%" PRId32 "]", pt->topic, pt->partition);
    }
    /* Another member may now change these customers: cached copies could go stale. */
    rf_store_drop_clean(pl->d.store);
    rf_store_new_epoch(pl->d.store);
    if (cooperative)
        error = rd_kafka_incremental_unassign(rk, parts);
    else
        rerr = rd_kafka_assign(rk, NULL);
    if (error) {
        RF_ERR("KAFKA", "unassign: %s", rd_kafka_error_string(error));
        rd_kafka_error_destroy(error);
    } else if (rerr) {
        RF_ERR("KAFKA", "unassign: %s", rd_kafka_err2str(rerr));
    }
}

/* Events consumed from these partitions and not yet complete. */
static int inflight_in(const rf_pipeline_t *pl, const rd_kafka_topic_partition_list_t *parts) {
    int n = 0;
    for (int i = 0; i < parts->cnt; i++) {
        for (int k = 0; k < pl->n_parts; k++) {
            const struct part *pt = &pl->parts[k];
            if (pt->partition != parts->elems[i].partition ||
                strcmp(pt->topic, parts->elems[i].topic) != 0)
                continue;
            for (int32_t e = pt->head; e >= 0; e = pl->pool[e].next)
                n += !pl->pool[e].done;
        }
    }
    return n;
}

/* Finish a deferred revocation now: its partitions drained, or the wait is over. */
static void revoke_settle(rf_pipeline_t *pl) {
    rd_kafka_topic_partition_list_t *parts = pl->revoking;
    if (!parts)
        return;
    pl->revoking = NULL;
    uv_timer_stop(&pl->revoke_timer);
    int left = inflight_in(pl, parts);
    if (left)
        RF_WARN("KAFKA", "revocation: %d events of the revoked partitions did not finish in "
                "rebalance.drain.timeout.ms; the next owner will see them again", left);
    rd_kafka_resume_partitions(pl->d.rk, parts); /* a pause must not outlive the assignment */
    revoke_finish(pl, pl->d.rk, parts, pl->revoking_cooperative, 0);
    rd_kafka_topic_partition_list_destroy(parts);
}

static void on_revoke_timer(uv_timer_t *t) {
    rf_pipeline_t *pl = t->data;
    if (pl->revoking && inflight_in(pl, pl->revoking) > 0 &&
        uv_now(pl->d.loop) < pl->revoke_deadline_ms) {
        uv_timer_start(&pl->revoke_timer, on_revoke_timer,
                       pl->revoke_deadline_ms - uv_now(pl->d.loop), 0);
        return;
    }
    revoke_settle(pl);
}

void rf_pipeline_settle_revoke(rf_pipeline_t *pl) {
    revoke_settle(pl);
}

void rf_pipeline_rebalance_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                              rd_kafka_topic_partition_list_t *parts, void *opaque) {
    rf_pipeline_t *pl = opaque;
    int cooperative = strcmp(rd_kafka_rebalance_protocol(rk), "COOPERATIVE") == 0;
    int lost = rd_kafka_assignment_lost(rk);
    RF_INFO("KAFKA", "rebalance: %s of %d partition(s), %s protocol%s",
            err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS   ? "assignment"
            : err == RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS ? "revocation"
                                                          : rd_kafka_err2name(err),
            parts->cnt, rd_kafka_rebalance_protocol(rk), lost ? ", assignment LOST" : "");
    /* librdkafka starts no new rebalance before the last unassign: settle it if one waits. */
    revoke_settle(pl);

    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
        rd_kafka_error_t *error = NULL;
        rd_kafka_resp_err_t rerr = 0;
        for (int i = 0; i < parts->cnt; i++) {
            int32_t k = get_part(pl, NULL, parts->elems[i].topic, parts->elems[i].partition);
            struct part *pt = &pl->parts[k]; /* after get_part: it may move the array */
            pt->assigned = 1;
            pt->stored = -1;
            pt->generation++;
            RF_INFO("KAFKA", "assigned %s [%" PRId32 "]", pt->topic, pt->partition);
        }
        /* Partitions coming back may have been changed by another member meanwhile. */
        rf_store_new_epoch(pl->d.store);
        /* Every rebalance round ends with an assign callback, even an empty one. */
        if (pl->rejoin_assigns > 0)
            pl->rejoin_assigns--;
        if (cooperative)
            error = rd_kafka_incremental_assign(rk, parts);
        else
            rerr = rd_kafka_assign(rk, parts);
        if (error) {
            RF_ERR("KAFKA", "assign: %s", rd_kafka_error_string(error));
            rd_kafka_error_destroy(error);
        } else if (rerr) {
            RF_ERR("KAFKA", "assign: %s", rd_kafka_err2str(rerr));
        }
        return;
    }

    /* Revoked: finish the events already taken from these partitions before letting go, so
     * their offsets are stored and committed and the next owner does not score them again
     * (design.md §3). That takes broker acknowledgements and Redis flushes, i.e. the loop:
     * pause the partitions, return, and unassign once they have drained. librdkafka waits
     * for the unassign. A lost assignment is already gone, and a stopping daemon has
     * drained already (or gave up): both let go at once. */
    int n = inflight_in(pl, parts);
    RF_INFO("KAFKA", "revocation: %d events of those partitions in flight (%d in all)", n,
            pl->inflight);
    if (!lost && !pl->stopping && n > 0 && pl->d.conf->rebalance_drain_timeout_ms > 0) {
        pl->revoking = rd_kafka_topic_partition_list_copy(parts);
        pl->revoking_cooperative = cooperative;
        pl->revoke_deadline_ms = uv_now(pl->d.loop) + (uint64_t)pl->d.conf->rebalance_drain_timeout_ms;
        rd_kafka_pause_partitions(rk, pl->revoking);
        RF_INFO("KAFKA", "revocation waits for %d in-flight events of those partitions", n);
        uv_timer_start(&pl->revoke_timer, on_revoke_timer,
                       (uint64_t)pl->d.conf->rebalance_drain_timeout_ms, 0);
        return;
    }
    revoke_finish(pl, rk, parts, cooperative, lost);
}

/* ---- life cycle ---- */

rf_pipeline_t *rf_pipeline_new(const struct rf_pipeline_deps *deps, char *errstr, size_t size) {
    rf_pipeline_t *pl = calloc(1, sizeof *pl);
    if (!pl) {
        snprintf(errstr, size, "out of memory");
        return NULL;
    }
    pl->d = *deps;
    const struct rf_conf *conf = deps->conf;
    pl->pool_n = conf->max_inflight;
    pl->pool = calloc((size_t)pl->pool_n, sizeof *pl->pool);
    pl->retry_cap = pl->pool_n * OUT__N;
    pl->retry = calloc((size_t)pl->retry_cap, sizeof *pl->retry);
    pl->n_feat = rf_model_n_features(deps->model);
    pl->feat_ids = rf_model_feature_ids(deps->model);
    pl->x = calloc((size_t)conf->batch_max * (size_t)pl->n_feat, sizeof *pl->x);
    pl->scores = calloc((size_t)conf->batch_max, sizeof *pl->scores);
    if (!pl->pool || !pl->retry || !pl->x || !pl->scores) {
        snprintf(errstr, size, "out of memory");
        goto fail;
    }
    pl->free_head = -1;
    for (int i = pl->pool_n - 1; i >= 0; i--) {
        struct evt *ev = &pl->pool[i];
        for (int k = 0; k < OUT__N; k++) {
            ev->out[k].ev = ev;
            ev->out[k].kind = (uint8_t)k;
        }
        ev->next = pl->free_head;
        pl->free_head = i;
    }
    pl->flush_head = pl->flush_tail = -1;

    pl->payment_id = conf->input_schema_id ? conf->input_schema_id
                                           : rf_schemas_find(deps->schemas, "riskflow.Payment");
    pl->score_id = rf_schemas_find(deps->schemas, "riskflow.FraudScore");
    pl->alert_id = rf_schemas_find(deps->schemas, "riskflow.FraudAlert");
    if (pl->payment_id < 0 || pl->score_id < 0 || pl->alert_id < 0) {
        snprintf(errstr, size, "%s/registry.txt must name riskflow.Payment, riskflow.FraudScore "
                 "and riskflow.FraudAlert", conf->schemas_dir);
        goto fail;
    }
    pl->out_framing = strcmp(conf->output_framing, "plain") == 0 ? RF_FRAMING_PLAIN
                                                                   : RF_FRAMING_CONFLUENT;
    pl->threshold = conf->fraud_threshold >= 0 ? conf->fraud_threshold
                                               : rf_model_threshold(deps->model);
    pl->rkt_scores = rd_kafka_topic_new(deps->rkp, conf->scores_topic, NULL);
    pl->rkt_alerts = rd_kafka_topic_new(deps->rkp, conf->alerts_topic, NULL);
    pl->rkt_dlq = rd_kafka_topic_new(deps->rkp, conf->dlq_topic, NULL);
    uv_timer_init(deps->loop, &pl->retry_timer);
    pl->retry_timer.data = pl;
    pl->retry_ms = RETRY_MIN_MS;
    uv_idle_init(deps->loop, &pl->kick);
    pl->kick.data = pl;
    uv_timer_init(deps->loop, &pl->revoke_timer);
    pl->revoke_timer.data = pl;
    return pl;
fail:
    free(pl->pool);
    free(pl->retry);
    free(pl->x);
    free(pl->scores);
    free(pl);
    return NULL;
}

void rf_pipeline_stop(rf_pipeline_t *pl) {
    pl->stopping = 1;
    uv_idle_stop(&pl->kick);
}

/* Bounded: should librdkafka ever end a rebalance without the assign we count on, commits
 * resume after a minute instead of stopping for good. */
#define REBALANCE_MAX_MS 60000

int rf_pipeline_rebalancing(const rf_pipeline_t *pl) {
    return pl->rejoin_assigns > 0 &&
           uv_now(pl->d.loop) - pl->rebalance_start_ms < REBALANCE_MAX_MS;
}

int rf_pipeline_assigned(const rf_pipeline_t *pl) {
    int n = 0;
    for (int i = 0; i < pl->n_parts; i++)
        n += pl->parts[i].assigned;
    return n;
}

int rf_pipeline_inflight(const rf_pipeline_t *pl) {
    return pl->inflight;
}

int rf_pipeline_failed(const rf_pipeline_t *pl) {
    return pl->failed;
}

static void on_closed(uv_handle_t *h) {
    rf_pipeline_t *pl = h->data;
    if (--pl->closing_left == 0 && pl->close_cb)
        pl->close_cb(pl->close_arg);
}

void rf_pipeline_close(rf_pipeline_t *pl, void (*cb)(void *arg), void *arg) {
    pl->stopping = 1;
    pl->close_cb = cb;
    pl->close_arg = arg;
    pl->closing_left = 3;
    uv_close((uv_handle_t *)&pl->retry_timer, on_closed);
    uv_close((uv_handle_t *)&pl->kick, on_closed);
    uv_close((uv_handle_t *)&pl->revoke_timer, on_closed);
}

void rf_pipeline_destroy(rf_pipeline_t *pl) {
    if (!pl)
        return;
    /* Events abandoned at a timed-out shutdown still hold their consumer messages. */
    for (int i = 0; i < pl->pool_n; i++)
        if (pl->pool[i].rkm)
            rd_kafka_message_destroy(pl->pool[i].rkm);
    if (pl->revoking)
        rd_kafka_topic_partition_list_destroy(pl->revoking);
    for (int i = 0; i < pl->n_parts; i++)
        rd_kafka_topic_destroy(pl->parts[i].rkt);
    rd_kafka_topic_destroy(pl->rkt_scores);
    rd_kafka_topic_destroy(pl->rkt_alerts);
    rd_kafka_topic_destroy(pl->rkt_dlq);
    free(pl->parts);
    free(pl->pool);
    free(pl->retry);
    free(pl->x);
    free(pl->scores);
    free(pl);
}
