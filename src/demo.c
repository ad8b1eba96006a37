/*
 * demo.c — the mock cluster and the synthetic payment stream for `riskflowd --demo`.
 *
 * Loop thread: the pacing timer produces a slice of the stream every 10 ms and serves the
 * generator's delivery reports. Encodes with the codec's payment encoder (the end-to-end test
 * uses an independent producer instead; here we only need realistic input).
 * The fraud pattern follows the Fraud Detection Handbook's scenarios in spirit: large amounts,
 * and compromised cards spending far above their customer's usual level in quick bursts.
 */
#include "riskflow/demo.h"

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "riskflow/err.h"

#define TICK_MS 10
#define GEN_QUEUE_MAX 50000 /* messages queued in the generator's producer at most */
#define DEMO_T0_MS 1795996800000LL /* 2026-11-30T00:00:00Z: simulated event time origin */

struct rf_demo_s {
    uv_loop_t *loop;
    const struct rf_conf *conf;
    rd_kafka_t *rk; /* owns the mock cluster */
    char bootstrap[256];
    uv_timer_t timer;
    void (*close_cb)(void *);
    void *close_arg;

    int32_t payment_id;
    char payments_topic[256]; /* the first of input.topics */
    uint64_t rng;
    int64_t sim_ms;        /* simulated clock */
    int64_t sim_step_ms;   /* advance per payment: the stream covers two simulated days */
    double *cust_mean;     /* each customer's usual amount (major units) */
    int burst_left;        /* fraud payments still to send in the current burst */
    int burst_customer;
    int64_t produced, payments, fraud, poison, acked, failed;
    uint8_t buf[4096];
};

static uint64_t rnd(rf_demo_t *d) {
    /* splitmix64: tiny, seeded, good enough for synthetic data */
    uint64_t z = (d->rng += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static double unif(rf_demo_t *d) {
    return (double)(rnd(d) >> 11) / 9007199254740992.0;
}

static double normal(rf_demo_t *d) {
    double u = unif(d), v = unif(d);
    return sqrt(-2.0 * log(u + 1e-300)) * cos(2 * M_PI * v);
}

static void on_gen_delivery(rd_kafka_t *rk, const rd_kafka_message_t *rkm, void *opaque) {
    rf_demo_t *d = opaque;
    if (rkm->err)
        d->failed++;
    else
        d->acked++;
}

static void emit(rf_demo_t *d, const char *key, const void *val, size_t len) {
    rd_kafka_resp_err_t err = rd_kafka_producev(
        d->rk, RD_KAFKA_V_TOPIC(d->payments_topic), RD_KAFKA_V_KEY(key, strlen(key)),
        RD_KAFKA_V_VALUE((void *)val, len), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
        RD_KAFKA_V_OPAQUE(d), RD_KAFKA_V_END);
    if (err)
        d->failed++;
    else
        d->produced++;
}

static void make_payment(rf_demo_t *d, struct rf_payment *p, int fraud) {
    int c = fraud ? d->burst_customer : (int)(rnd(d) % (uint64_t)d->conf->demo_customers);
    memset(p, 0, sizeof *p);
    snprintf(p->event_id, sizeof p->event_id, "demo-%08lld", (long long)d->payments);
    snprintf(p->customer_id, sizeof p->customer_id, "C%06d", c);
    snprintf(p->card_token, sizeof p->card_token, "tok_%06d", c);
    int terminal = (int)(rnd(d) % 5000);
    snprintf(p->terminal_id, sizeof p->terminal_id, "T%05d", terminal);
    snprintf(p->merchant_id, sizeof p->merchant_id, "M%04d", terminal / 5);
    p->mcc = 5411 + (int32_t)(terminal % 7);
    snprintf(p->currency, sizeof p->currency, "EUR");
    snprintf(p->country, sizeof p->country, "FR");
    p->kind = RF_KIND_PURCHASE;
    double amount = d->cust_mean[c] * exp(0.4 * normal(d));
    if (fraud) {
        /* A compromised card: far above the usual level, online, often at night. */
        amount = d->cust_mean[c] * (5.0 + 10.0 * unif(d)) + 150.0 * unif(d);
        p->channel = RF_CHANNEL_ECOM;
    } else {
        uint64_t ch = rnd(d) % 10;
        p->channel = ch < 7 ? RF_CHANNEL_POS : ch < 9 ? RF_CHANNEL_ECOM : RF_CHANNEL_ATM;
        if (p->channel == RF_CHANNEL_ATM)
            p->kind = RF_KIND_CASH_WITHDRAWAL;
    }
    p->amount_minor = (int64_t)(amount * 100.0) + 1;
    d->sim_ms += d->sim_step_ms;
    p->event_time_ms = d->sim_ms;
}

/* One poison message of each kind in turn. */
static void send_poison(rf_demo_t *d) {
    static const char *kinds[] = {"garbage", "bad_magic", "unknown_schema", "truncated",
                                  "oversize"};
    int kind = (int)(d->poison % 5);
    char key[64];
    snprintf(key, sizeof key, "poison-%s", kinds[kind]);
    struct rf_payment p;
    size_t len = 0;
    make_payment(d, &p, 0);
    rf_encode_payment(&p, RF_FRAMING_CONFLUENT, d->payment_id, d->buf, sizeof d->buf, &len);
    switch (kind) {
    case 0:
        len = 40;
        for (size_t i = 0; i < len; i++)
            d->buf[i] = (uint8_t)(rnd(d) | 0x80); /* every byte a varint continuation */
        /* A valid header over a body that is not Avro: malformed, not a framing error. */
        d->buf[0] = 0;
        d->buf[1] = (uint8_t)(d->payment_id >> 24);
        d->buf[2] = (uint8_t)(d->payment_id >> 16);
        d->buf[3] = (uint8_t)(d->payment_id >> 8);
        d->buf[4] = (uint8_t)d->payment_id;
        break;
    case 1:
        d->buf[0] = 0x7b; /* '{': someone sent JSON */
        break;
    case 2:
        d->buf[4] = 99;
        break;
    case 3:
        len /= 2;
        break;
    case 4: {
        /* One byte over the cap, with a valid header: built on the heap, once per poison
         * message (the generator is not the hot path). */
        size_t big = (size_t)d->conf->input_max_bytes + 1;
        uint8_t *m = calloc(1, big);
        if (m) {
            memcpy(m, d->buf, len < big ? len : big);
            emit(d, key, m, big);
            free(m);
        }
        d->poison++;
        return;
    }
    }
    emit(d, key, d->buf, len);
    d->poison++;
}

static void on_tick(uv_timer_t *t) {
    rf_demo_t *d = t->data;
    int total = d->conf->demo_events;
    int slice = d->conf->demo_rate > 0 ? d->conf->demo_rate * TICK_MS / 1000 : 2000;
    if (slice < 1)
        slice = 1;
    for (int i = 0; i < slice && d->payments < total; i++) {
        /* Hold back while the producer's queue is deep: a full queue would refuse payments,
         * and the stream would silently be shorter than demo.events. */
        if (rd_kafka_outq_len(d->rk) > GEN_QUEUE_MAX)
            break;
        if (d->burst_left == 0 && unif(d) < 0.0025) {
            d->burst_left = 3 + (int)(rnd(d) % 4);
            d->burst_customer = (int)(rnd(d) % (uint64_t)d->conf->demo_customers);
        }
        int fraud = d->burst_left > 0;
        struct rf_payment p;
        make_payment(d, &p, fraud);
        if (fraud) {
            d->burst_left--;
            d->fraud++;
        }
        size_t len = 0;
        if (rf_encode_payment(&p, RF_FRAMING_CONFLUENT, d->payment_id, d->buf, sizeof d->buf,
                              &len) == 0)
            emit(d, p.customer_id, d->buf, len);
        d->payments++;
        if (d->payments % 2000 == 1000)
            send_poison(d);
    }
    rd_kafka_poll(d->rk, 0);
    if (d->payments >= total && rd_kafka_outq_len(d->rk) == 0)
        uv_timer_stop(t);
}

rf_demo_t *rf_demo_new(uv_loop_t *loop, const struct rf_conf *conf, const rf_schemas_t *schemas,
                       char *errstr, size_t size) {
    rf_demo_t *d = calloc(1, sizeof *d);
    if (!d) {
        snprintf(errstr, size, "out of memory");
        return NULL;
    }
    d->loop = loop;
    d->conf = conf;
    d->rng = (uint64_t)conf->demo_seed * 0x2545F4914F6CDD1DULL + 1;
    d->payment_id = rf_schemas_find(schemas, "riskflow.Payment");
    const char *cur = conf->input_topics;
    struct rf_conf_topic t;
    if (rf_conf_topic_next(&cur, &t, errstr, size) != 1)
        goto fail;
    snprintf(d->payments_topic, sizeof d->payments_topic, "%s", t.name);
    d->sim_ms = DEMO_T0_MS;
    d->sim_step_ms = 2 * 86400000LL / conf->demo_events;
    if (d->sim_step_ms < 1)
        d->sim_step_ms = 1;
    d->cust_mean = malloc(sizeof *d->cust_mean * (size_t)conf->demo_customers);
    if (!d->cust_mean || d->payment_id < 0) {
        snprintf(errstr, size, d->payment_id < 0 ? "no riskflow.Payment schema" : "out of memory");
        goto fail;
    }
    for (int c = 0; c < conf->demo_customers; c++)
        d->cust_mean[c] = exp(3.3 + 0.5 * normal(d)); /* ~27 EUR, a few in the hundreds */

    char err[512];
    rd_kafka_conf_t *kc = rd_kafka_conf_new();
    if (rd_kafka_conf_set(kc, "test.mock.num.brokers", "1", err, sizeof err) ||
        rd_kafka_conf_set(kc, "linger.ms", "5", err, sizeof err) ||
        rd_kafka_conf_set(kc, "log_level", "3", err, sizeof err)) {
        snprintf(errstr, size, "demo producer: %s", err);
        rd_kafka_conf_destroy(kc);
        goto fail;
    }
    rd_kafka_conf_set_dr_msg_cb(kc, on_gen_delivery);
    rd_kafka_conf_set_opaque(kc, d);
    d->rk = rd_kafka_new(RD_KAFKA_PRODUCER, kc, err, sizeof err);
    if (!d->rk) {
        snprintf(errstr, size, "demo producer: %s", err);
        rd_kafka_conf_destroy(kc);
        goto fail;
    }
    rd_kafka_mock_cluster_t *mc = rd_kafka_handle_mock_cluster(d->rk);
    snprintf(d->bootstrap, sizeof d->bootstrap, "%s", rd_kafka_mock_cluster_bootstraps(mc));
    /* A mock partition keeps only its last 5 MiB: spread the outputs over partitions (topics
     * of jobs not enabled are created too: harmless). */
    const char *scores = rf_conf_str(conf, "fraud.scores.topic");
    const char *alerts = rf_conf_str(conf, "fraud.alerts.topic");
    if (rd_kafka_mock_topic_create(mc, d->payments_topic, 4, 1) ||
        (scores && rd_kafka_mock_topic_create(mc, scores, 8, 1)) ||
        (alerts && rd_kafka_mock_topic_create(mc, alerts, 2, 1)) ||
        rd_kafka_mock_topic_create(mc, conf->dlq_topic, 1, 1)) {
        snprintf(errstr, size, "demo: cannot create mock topics");
        goto fail;
    }
    uv_timer_init(loop, &d->timer);
    d->timer.data = d;
    return d;
fail:
    if (d->rk)
        rd_kafka_destroy(d->rk);
    free(d->cust_mean);
    free(d);
    return NULL;
}

const char *rf_demo_bootstrap(const rf_demo_t *d) {
    return d->bootstrap;
}

void rf_demo_start(rf_demo_t *d) {
    uv_timer_start(&d->timer, on_tick, 0, TICK_MS);
}

int rf_demo_done(const rf_demo_t *d, uint64_t *total) {
    *total = (uint64_t)d->produced;
    return d->payments >= d->conf->demo_events && d->acked + d->failed >= d->produced;
}

void rf_demo_counts(const rf_demo_t *d, uint64_t *payments, uint64_t *fraud, uint64_t *poison,
                    uint64_t *failed) {
    *payments = (uint64_t)d->payments;
    *fraud = (uint64_t)d->fraud;
    *poison = (uint64_t)d->poison;
    *failed = (uint64_t)d->failed;
}

static void on_closed(uv_handle_t *h) {
    rf_demo_t *d = h->data;
    if (d->close_cb)
        d->close_cb(d->close_arg);
}

void rf_demo_close(rf_demo_t *d, void (*cb)(void *), void *arg) {
    d->close_cb = cb;
    d->close_arg = arg;
    uv_close((uv_handle_t *)&d->timer, on_closed);
}

void rf_demo_destroy(rf_demo_t *d) {
    if (!d)
        return;
    rd_kafka_flush(d->rk, 1000);
    rd_kafka_destroy(d->rk);
    free(d->cust_mean);
    free(d);
}
