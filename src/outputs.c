/*
 * outputs.c — producing outputs and dead letters, retries, delivery reports. See outputs.h.
 *
 * Loop thread only. Must never: drop an output without an outcome (acked, or failed and the
 * daemon stopping), retry forever in silence on an error no retry can mend, or log per
 * message beyond a rate limit (the metrics have the rest).
 */
#include "riskflow/outputs.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "riskflow/err.h"
#include "riskflow/log.h"

#define OUT_RETRY_MIN_MS 100  /* produce retries back off from here ... */
#define OUT_RETRY_MAX_MS 5000 /* ... to here while the broker keeps refusing */

/* An output to produce again: its own copies. */
struct retry {
    uint64_t tag;
    rd_kafka_topic_t *rkt;
    void *key;
    size_t key_len;
    void *val;
    size_t len;
    rd_kafka_headers_t *hdrs;
};

struct rf_out_topic {
    char *name;
    rd_kafka_topic_t *rkt; /* NULL in a dry run */
};

struct rf_outputs_s {
    uv_loop_t *loop;
    rd_kafka_t *rkp;
    struct rf_outputs_cbs cbs;
    rd_kafka_topic_t *rkt_dlq;
    size_t dlq_value_max;
    struct rf_out_topic **topics;
    int n_topics;
    struct retry *retry;
    int retry_n, retry_cap;
    unsigned retry_ms;
    uv_timer_t retry_timer;
    void (*close_cb)(void *);
    void *close_arg;
    uint64_t log_reset_ms;
    int log_budget;
    int txn; /* exactly-once: failures void the transaction, never retried into it */
};

/* Per-message problems are logged at most 20 times a second. */
static int log_allowed(rf_outputs_t *out) {
    uint64_t now = uv_now(out->loop);
    if (now - out->log_reset_ms >= 1000) {
        out->log_reset_ms = now;
        out->log_budget = 20;
    }
    return out->log_budget-- > 0;
}

rf_out_topic_t *rf_outputs_topic(rf_outputs_t *out, const char *name) {
    for (int i = 0; i < out->n_topics; i++)
        if (strcmp(out->topics[i]->name, name) == 0)
            return out->topics[i];
    struct rf_out_topic **v = realloc(out->topics, sizeof *v * (size_t)(out->n_topics + 1));
    if (!v)
        return NULL;
    out->topics = v;
    struct rf_out_topic *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    t->name = strdup(name);
    if (t->name && out->rkp)
        t->rkt = rd_kafka_topic_new(out->rkp, name, NULL);
    if (!t->name || (out->rkp && !t->rkt)) {
        free(t->name);
        free(t);
        return NULL;
    }
    v[out->n_topics++] = t;
    return t;
}

const char *rf_outputs_topic_name(const rf_out_topic_t *topic) {
    return topic->name;
}

rf_outputs_t *rf_outputs_new(uv_loop_t *loop, rd_kafka_t *rkp, const char *dlq_topic,
                             size_t dlq_value_max, const struct rf_outputs_cbs *cbs,
                             char *errstr, size_t size) {
    rf_outputs_t *out = calloc(1, sizeof *out);
    if (!out) {
        snprintf(errstr, size, "out of memory");
        return NULL;
    }
    out->loop = loop;
    out->rkp = rkp;
    out->cbs = *cbs;
    out->dlq_value_max = dlq_value_max ? dlq_value_max : RF_DLQ_VALUE_MAX;
    out->retry_ms = OUT_RETRY_MIN_MS;
    struct rf_out_topic *dlq = rf_outputs_topic(out, dlq_topic);
    out->rkt_dlq = dlq ? dlq->rkt : NULL;
    if (!dlq) {
        snprintf(errstr, size, "output.dlq.topic %s: cannot create the topic handle", dlq_topic);
        free(out);
        return NULL;
    }
    uv_timer_init(loop, &out->retry_timer);
    out->retry_timer.data = out;
    return out;
}

static void on_closed(uv_handle_t *h) {
    rf_outputs_t *out = h->data;
    if (out->close_cb)
        out->close_cb(out->close_arg);
}

void rf_outputs_close(rf_outputs_t *out, void (*cb)(void *), void *arg) {
    out->close_cb = cb;
    out->close_arg = arg;
    uv_close((uv_handle_t *)&out->retry_timer, on_closed);
}

static void retry_free(struct retry *r) {
    free(r->key);
    free(r->val);
    if (r->hdrs)
        rd_kafka_headers_destroy(r->hdrs);
}

void rf_outputs_destroy(rf_outputs_t *out) {
    if (!out)
        return;
    for (int i = 0; i < out->retry_n; i++)
        retry_free(&out->retry[i]);
    free(out->retry);
    for (int i = 0; i < out->n_topics; i++) {
        if (out->topics[i]->rkt)
            rd_kafka_topic_destroy(out->topics[i]->rkt);
        free(out->topics[i]->name);
        free(out->topics[i]);
    }
    free(out->topics);
    free(out);
}

int rf_outputs_retrying(const rf_outputs_t *out) {
    return out->retry_n;
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

static void on_retry(uv_timer_t *t);

static void *dup_bytes(const void *p, size_t n) {
    void *c = malloc(n ? n : 1);
    if (!c)
        abort(); /* the retry path: out of memory is not a state to run on in */
    if (n)
        memcpy(c, p, n);
    return c;
}

/* Keep copies and come back later. */
static void queue_retry(rf_outputs_t *out, uint64_t tag, rd_kafka_topic_t *rkt, const void *key,
                        size_t key_len, const void *val, size_t len, rd_kafka_headers_t *hdrs) {
    if (out->retry_n == out->retry_cap) {
        int cap = out->retry_cap ? out->retry_cap * 2 : 64;
        struct retry *r = realloc(out->retry, sizeof *r * (size_t)cap);
        if (!r)
            abort();
        out->retry = r;
        out->retry_cap = cap;
    }
    out->retry[out->retry_n++] = (struct retry){tag,
                                                 rkt,
                                                 dup_bytes(key, key_len),
                                                 key_len,
                                                 dup_bytes(val, len),
                                                 len,
                                                 hdrs ? rd_kafka_headers_copy(hdrs) : NULL};
    if (!uv_is_active((uv_handle_t *)&out->retry_timer) &&
        !uv_is_closing((uv_handle_t *)&out->retry_timer)) {
        uv_timer_start(&out->retry_timer, on_retry, out->retry_ms, 0);
        out->retry_ms = out->retry_ms * 2 > OUT_RETRY_MAX_MS ? OUT_RETRY_MAX_MS : out->retry_ms * 2;
    }
}

/* A fatal producer error (idempotence broken, fenced): nothing more may be produced. */
static int fatal(rf_outputs_t *out, uint64_t tag) {
    char reason[256];
    if (!rd_kafka_fatal_error(out->rkp, reason, sizeof reason))
        return 0;
    RF_ERR("KAFKA", "producer fatal error: %s", reason);
    out->cbs.failed(tag, "producer fatal error", out->cbs.arg);
    return 1;
}

void rf_outputs_set_txn(rf_outputs_t *out, int on) {
    out->txn = on;
}

/* An output failed: retry what may succeed, report what cannot. */
static void output_failed(rf_outputs_t *out, uint64_t tag, rd_kafka_topic_t *rkt, const char *what,
                          rd_kafka_resp_err_t err, const void *key, size_t key_len,
                          const void *val, size_t len, rd_kafka_headers_t *hdrs) {
    if (err == RD_KAFKA_RESP_ERR__FATAL && fatal(out, tag))
        return;
    if (permanent(err)) {
        RF_ERR("KAFKA", "%s to %s: %s: cannot succeed, stopping", what, rd_kafka_topic_name(rkt),
               rd_kafka_err2str(err));
        out->cbs.failed(tag, rd_kafka_err2str(err), out->cbs.arg);
        return;
    }
    /* Anything else may succeed next time, but not in this transaction (a full queue aside:
     * the transaction is fine). */
    if (out->txn && err != RD_KAFKA_RESP_ERR__QUEUE_FULL) {
        if (log_allowed(out))
            RF_WARN("KAFKA", "%s to %s: %s: the transaction will abort", what,
                    rd_kafka_topic_name(rkt), rd_kafka_err2str(err));
        out->cbs.lost(tag, rd_kafka_err2str(err), out->cbs.arg);
        return;
    }
    if (log_allowed(out))
        RF_WARN("KAFKA", "%s to %s: %s (will retry)", what, rd_kafka_topic_name(rkt),
                rd_kafka_err2str(err));
    queue_retry(out, tag, rkt, key, key_len, val, len, hdrs);
}

/* hdrs: taken by a successful producev, else still ours. */
static rd_kafka_resp_err_t produce_one(rf_outputs_t *out, uint64_t tag, rd_kafka_topic_t *rkt,
                                       const void *key, size_t key_len, const void *val,
                                       size_t len, rd_kafka_headers_t *hdrs) {
    if (hdrs)
        return rd_kafka_producev(out->rkp, RD_KAFKA_V_RKT(rkt), RD_KAFKA_V_KEY(key, key_len),
                                 RD_KAFKA_V_VALUE((void *)val, len),
                                 RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                                 RD_KAFKA_V_OPAQUE((void *)(uintptr_t)tag),
                                 RD_KAFKA_V_HEADERS(hdrs), RD_KAFKA_V_END);
    return rd_kafka_producev(out->rkp, RD_KAFKA_V_RKT(rkt), RD_KAFKA_V_KEY(key, key_len),
                             RD_KAFKA_V_VALUE((void *)val, len),
                             RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                             RD_KAFKA_V_OPAQUE((void *)(uintptr_t)tag), RD_KAFKA_V_END);
}

static void on_retry(uv_timer_t *t) {
    rf_outputs_t *out = t->data;
    int n = out->retry_n;
    struct retry *batch = out->retry;
    out->retry = NULL;
    out->retry_n = out->retry_cap = 0;
    for (int i = 0; i < n; i++) {
        struct retry *r = &batch[i];
        rd_kafka_headers_t *h = r->hdrs ? rd_kafka_headers_copy(r->hdrs) : NULL;
        rd_kafka_resp_err_t err =
            produce_one(out, r->tag, r->rkt, r->key, r->key_len, r->val, r->len, h);
        if (err) {
            if (h)
                rd_kafka_headers_destroy(h);
            output_failed(out, r->tag, r->rkt, "produce", err, r->key, r->key_len, r->val,
                          r->len, r->hdrs);
        }
        retry_free(r);
    }
    free(batch);
}

void rf_outputs_produce(rf_outputs_t *out, uint64_t tag, rf_out_topic_t *topic, const void *key,
                        size_t key_len, const void *payload, size_t len) {
    rd_kafka_resp_err_t err = produce_one(out, tag, topic->rkt, key, key_len, payload, len, NULL);
    if (err)
        output_failed(out, tag, topic->rkt, "produce", err, key, key_len, payload, len, NULL);
}

void rf_outputs_dlq(rf_outputs_t *out, uint64_t tag, const rd_kafka_message_t *in,
                    const char *reason, const char *error, const char *topic, int32_t partition,
                    int64_t offset, int withhold) {
    char num[32];
    rd_kafka_headers_t *h = rd_kafka_headers_new(8);
    rd_kafka_header_add(h, "rf.reason", -1, reason, -1);
    rd_kafka_header_add(h, "rf.error", -1, error, -1);
    rd_kafka_header_add(h, "rf.source.topic", -1, topic, -1);
    snprintf(num, sizeof num, "%" PRId32, partition);
    rd_kafka_header_add(h, "rf.source.partition", -1, num, -1);
    snprintf(num, sizeof num, "%" PRId64, offset);
    rd_kafka_header_add(h, "rf.source.offset", -1, num, -1);
    size_t vmax = out->dlq_value_max;
    if (in->len > vmax || in->key_len > RF_DLQ_KEY_MAX) {
        rd_kafka_header_add(h, "rf.truncated", -1, "true", -1);
        snprintf(num, sizeof num, "%zu", in->len);
        rd_kafka_header_add(h, "rf.original.size", -1, num, -1);
    }
    size_t len = in->len < vmax ? in->len : vmax;
    if (withhold) {
        rd_kafka_header_add(h, "rf.body", -1,
                            "withheld: not decoded, so its hashed fields (input.hash.fields) "
                            "could not be hashed", -1);
        len = 0;
    }
    size_t klen = in->key_len < RF_DLQ_KEY_MAX ? in->key_len : RF_DLQ_KEY_MAX;
    rd_kafka_resp_err_t err = produce_one(out, tag, out->rkt_dlq, in->key, klen, in->payload, len, h);
    if (err) {
        output_failed(out, tag, out->rkt_dlq, "dead letter", err, in->key, klen, in->payload,
                      len, h);
        rd_kafka_headers_destroy(h); /* only a successful producev takes them */
    }
}

void rf_outputs_dr_cb(rd_kafka_t *rkp, const rd_kafka_message_t *rkm, void *opaque) {
    rf_outputs_t *out = opaque;
    uint64_t tag = (uint64_t)(uintptr_t)rkm->_private;
    if (rkm->err) {
        rd_kafka_headers_t *h = NULL;
        rd_kafka_message_headers(rkm, &h); /* borrowed: queue_retry copies them */
        output_failed(out, tag, rkm->rkt, "delivery", rkm->err, rkm->key, rkm->key_len,
                      rkm->payload, rkm->len, h);
        return;
    }
    out->retry_ms = OUT_RETRY_MIN_MS; /* the broker takes messages again */
    out->cbs.acked(tag, rkm, out->cbs.arg);
}
