/*
 * demo.c — the mock cluster and the synthetic streams of `riskflowd --demo`: payments (with
 * fraud bursts and salaries), credit events, and trades and quotes, with poison in each.
 *
 * Loop thread: the pacing timer produces a slice of every stream each 10 ms and serves the
 * generator's delivery reports. Records are built as generic records of their registry type
 * and encoded with rf_rec_encode (the end-to-end tests use independent encoders instead; here
 * we only need realistic input). Three independent random streams (payments, credit, market),
 * so adding to one does not change the others.
 * The fraud pattern follows the Fraud Detection Handbook's scenarios in spirit (compromised
 * cards spending far above their customer's level in quick bursts); the credit stream moves
 * some customers into financial stress mid-run (drawdowns, missed payments, utilisation up);
 * the market stream is a random walk per instrument with a latent order-flow signal that tilts
 * the aggressor side, trade sizes and the book.
 * History, then steady state: the generator first sends every customer's last three months
 * (salaries, statements, repayments) and the market's last 15 minutes, as a bank's and a
 * desk's streams would have carried them before the demo starts, and waits until the engine
 * has completed all of it (rf_demo_warm); only then does the paced stream begin. So the
 * outputs that print are those of customers and instruments with a past (not every new
 * customer's first PD), and the latency the summary prints is that of a paced stream, not of
 * a backlog built while the consumer group formed.
 */
#include "riskflow/demo.h"

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "riskflow/err.h"

#define TICK_MS 10
#define GEN_QUEUE_MAX 50000       /* messages queued in the generator's producer at most */
#define DAY_MS 86400000LL
#define MONTH_MS (30 * DAY_MS)
#define HISTORY_MONTHS 3           /* each customer's past, sent before the measured stream */
#define MARKET_HISTORY_S 900       /* the market's past: 15 minutes (the longest return window) */
#define SIM_MARKET_S 5400          /* simulated market seconds over the run: 90 minutes */
#define STR_BUF 1024

struct rng {
    uint64_t s;
};

/* splitmix64: tiny, seeded, good enough for synthetic data */
static uint64_t rnd(struct rng *r) {
    uint64_t z = (r->s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static double unif(struct rng *r) {
    return (double)(rnd(r) >> 11) / 9007199254740992.0;
}

static double normal(struct rng *r) {
    double u = unif(r), v = unif(r);
    return sqrt(-2.0 * log(u + 1e-300)) * cos(2 * M_PI * v);
}

/* A record being built: its type, its field values, its strings. */
struct rb {
    const struct rf_rtype *t;
    struct rf_rec r;
    uint8_t str[STR_BUF];
    size_t used;
};

static void rb_start(struct rb *b, const struct rf_rtype *t) {
    memset(&b->r, 0, sizeof b->r);
    b->t = t;
    b->r.type = t;
    b->r.base = b->str;
    b->used = 0;
}

static int fld(const struct rf_rtype *t, const char *name) {
    int f = rf_rtype_field(t, name);
    if (f < 0)
        abort(); /* the demo's own schemas: checked by rf_demo_new */
    return f;
}

static void rb_str(struct rb *b, const char *name, const char *s) {
    int f = fld(b->t, name);
    size_t n = strlen(s);
    if (b->used + n > sizeof b->str)
        abort();
    memcpy(b->str + b->used, s, n);
    b->r.v[f].s.off = (uint32_t)b->used;
    b->r.v[f].s.len = (uint32_t)n;
    b->used += n;
}

static void rb_int(struct rb *b, const char *name, int64_t v) {
    b->r.v[fld(b->t, name)].i = v;
}

static void rb_dbl(struct rb *b, const char *name, double v) {
    b->r.v[fld(b->t, name)].d = v;
}

static void rb_enum(struct rb *b, const char *name, const char *symbol) {
    int f = fld(b->t, name);
    int s = rf_rfield_symbol(&b->t->fields[f], symbol);
    if (s < 0)
        abort();
    b->r.v[f].i = s;
}

struct customer {
    double mean;       /* usual spend, major units */
    int64_t payday;    /* ms into each 30-day month */
    int stressed;
    int64_t limit, balance; /* minor units */
    int dpd;
    int64_t income;
};

struct instrument {
    char id[16];
    double logp;      /* efficient log price */
    double s;         /* latent order flow, OU N(0, 1) */
    double vol_s;     /* idiosyncratic log-vol per simulated second */
    double half_spread;
};

struct rf_demo_s {
    uv_loop_t *loop;
    const struct rf_conf *conf;
    rd_kafka_t *rk; /* owns the mock cluster */
    char bootstrap[256];
    uv_timer_t timer;
    void (*close_cb)(void *);
    void *close_arg;

    const struct rf_rtype *t_pay, *t_credit, *t_trade, *t_quote;
    char payments_topic[256]; /* the first of input.topics: payments and credit events */
    char market_topic[256];   /* the second: trades and quotes */
    struct rng r_pay, r_credit, r_market;
    int64_t t0_ms;         /* event time origin: 9 to 12 days ago, so the whole stream (two
                            * days, and repayments up to 5 days after the history) is in the
                            * past (input.max.future.ms); a multiple of 3 days, the widest
                            * tile, so every window's tiles fall alike and the demo prints
                            * the same whatever the date */
    int64_t sim_ms;        /* payments' simulated clock */
    int64_t sim_step_ms;   /* per payment: the stream covers two simulated days */
    int *by_payday;        /* customers in payday order */
    int next_payday;       /* the next in by_payday to be paid in the stream */
    int64_t mkt_ms;        /* the market's simulated clock */
    struct customer *cust;
    struct instrument *inst;
    int n_inst;
    int burst_left, burst_customer;
    int warm;              /* 0: history not sent; 1: sent, waiting; 2: measured stream */
    int64_t history;       /* messages in the history */
    int64_t pay_seq;       /* payments' event ids */
    struct rf_demo_counts hist; /* the counts when the history was sent */
    struct rf_demo_counts n;
    int64_t acked, failed, produced;
    struct rb b;
    uint8_t buf[4096];
};

static void on_gen_delivery(rd_kafka_t *rk, const rd_kafka_message_t *rkm, void *opaque) {
    rf_demo_t *d = opaque;
    if (rkm->err)
        d->failed++;
    else
        d->acked++;
}

static void emit_raw(rf_demo_t *d, const char *topic, const char *key, const void *val,
                     size_t len) {
    rd_kafka_resp_err_t err = rd_kafka_producev(
        d->rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_KEY(key, strlen(key)),
        RD_KAFKA_V_VALUE((void *)val, len), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
        RD_KAFKA_V_OPAQUE(d), RD_KAFKA_V_END);
    if (err)
        d->failed++;
    else
        d->produced++;
}

/* Encode the record being built (Confluent framing: its schema id names its type). */
static size_t encode(rf_demo_t *d) {
    size_t len = 0;
    if (rf_rec_encode(d->b.t, &d->b.r, RF_FRAMING_CONFLUENT, d->b.t->schema_id, d->buf,
                      sizeof d->buf, &len) != 0)
        abort(); /* the generator's own values: always encodable */
    return len;
}

static void emit(rf_demo_t *d, const char *topic, const char *key) {
    emit_raw(d, topic, key, d->buf, encode(d));
}

/* ---- payments and credit events ---- */

static void payment(rf_demo_t *d, int c, int64_t t, const char *kind, const char *channel,
                    double amount, int terminal) {
    char id[64], cust[16], tok[16], term[16], merch[16];
    snprintf(id, sizeof id, "demo-%08lld", (long long)d->pay_seq++);
    snprintf(cust, sizeof cust, "C%06d", c);
    snprintf(tok, sizeof tok, "tok_%06d", c);
    snprintf(term, sizeof term, "T%05d", terminal);
    snprintf(merch, sizeof merch, "M%04d", terminal / 5);
    rb_start(&d->b, d->t_pay);
    rb_str(&d->b, "event_id", id);
    rb_str(&d->b, "customer_id", cust);
    rb_str(&d->b, "card_token", tok);
    rb_str(&d->b, "merchant_id", merch);
    rb_str(&d->b, "terminal_id", term);
    rb_int(&d->b, "mcc", 5411 + terminal % 7);
    rb_int(&d->b, "amount_minor", (int64_t)(amount * 100.0) + 1);
    rb_str(&d->b, "currency", "EUR");
    rb_enum(&d->b, "channel", channel);
    rb_str(&d->b, "country", "FR");
    rb_enum(&d->b, "kind", kind);
    rb_int(&d->b, "event_time", t);
    emit(d, d->payments_topic, cust);
}

static void credit_event(rf_demo_t *d, int c, int64_t t, const char *kind, int64_t amount) {
    struct customer *cu = &d->cust[c];
    char id[64], cust[16], acct[16];
    snprintf(id, sizeof id, "demo-ce-%08lld", (long long)d->n.credit);
    snprintf(cust, sizeof cust, "C%06d", c);
    snprintf(acct, sizeof acct, "A%06d", c);
    rb_start(&d->b, d->t_credit);
    rb_str(&d->b, "event_id", id);
    rb_str(&d->b, "customer_id", cust);
    rb_str(&d->b, "account_id", acct);
    rb_enum(&d->b, "kind", kind);
    rb_int(&d->b, "amount_minor", amount);
    rb_int(&d->b, "balance_minor", cu->balance);
    rb_int(&d->b, "credit_limit_minor", cu->limit);
    rb_int(&d->b, "days_past_due", cu->dpd);
    rb_str(&d->b, "currency", "EUR");
    rb_int(&d->b, "event_time", t);
    emit(d, d->payments_topic, cust); /* same topic and key: a customer's events stay in order */
    d->n.credit++;
}

/* A customer's last HISTORY_MONTHS months before the stream: each month the salary comes in,
 * the card account has its statement and most of the balance is repaid. In event-time order,
 * on the customer's key, so they reach the engine in order. */
static void history(rf_demo_t *d, int c) {
    struct customer *cu = &d->cust[c];
    struct rng *r = &d->r_credit;
    cu->payday = (int64_t)(rnd(r) % (uint64_t)MONTH_MS);
    cu->income = (int64_t)(exp(7.7 + 0.35 * normal(r)) * 100.0); /* ~2 200 EUR */
    cu->limit = (cu->income / 10000 + 1) * 10000 * (1 + (int64_t)(rnd(r) % 3));
    cu->balance = (int64_t)((double)cu->limit * (0.1 + 0.5 * unif(r)));
    for (int k = HISTORY_MONTHS; k >= 1; k--) {
        int64_t m = d->t0_ms + cu->payday - k * MONTH_MS;
        int64_t spend = (int64_t)((double)cu->limit * (0.1 + 0.3 * unif(r))); /* the month's */
        cu->balance += spend < cu->limit - cu->balance ? spend : 0;
        payment(d, c, m, "TRANSFER_IN", "MOBILE", (double)cu->income / 100.0, 0);
        credit_event(d, c, m + 3600000, "STATEMENT", 0);
        int64_t a = (int64_t)((double)cu->balance * (0.5 + 0.4 * unif(r)));
        cu->balance -= a;
        credit_event(d, c, m + 5 * DAY_MS, "REPAYMENT", a);
    }
}

/* Salaries whose payday falls in the stream so far. */
static void paydays(rf_demo_t *d) {
    while (d->next_payday < d->conf->demo_customers) {
        int c = d->by_payday[d->next_payday];
        if (d->t0_ms + d->cust[c].payday > d->sim_ms)
            return;
        payment(d, c, d->t0_ms + d->cust[c].payday, "TRANSFER_IN", "MOBILE",
                (double)d->cust[c].income / 100.0, 0);
        d->n.salaries++;
        d->next_payday++;
    }
}

/* After a customer's payment, now and then, its credit line moves; stressed customers draw
 * down, miss payments and fall behind. */
static void credit_step(rf_demo_t *d, int c) {
    struct customer *cu = &d->cust[c];
    struct rng *r = &d->r_credit;
    if (unif(r) >= 0.12)
        return;
    double u = unif(r);
    if (cu->stressed) {
        if (u < 0.45) {
            int64_t a = (int64_t)((double)cu->limit * (0.08 + 0.15 * unif(r)));
            cu->balance += a;
            credit_event(d, c, d->sim_ms, "DRAWDOWN", a);
        } else if (u < 0.8) {
            cu->dpd += 30;
            credit_event(d, c, d->sim_ms, "MISSED_PAYMENT", 0);
        } else {
            credit_event(d, c, d->sim_ms, "STATEMENT", 0);
        }
    } else {
        if (u < 0.5) {
            int64_t a = (int64_t)((double)cu->balance * (0.2 + 0.6 * unif(r)));
            cu->balance -= a;
            cu->dpd = 0;
            credit_event(d, c, d->sim_ms, "REPAYMENT", a);
        } else if (u < 0.75) {
            int64_t a = (int64_t)((double)cu->limit * 0.05 * unif(r));
            cu->balance += a;
            credit_event(d, c, d->sim_ms, "DRAWDOWN", a);
        } else {
            credit_event(d, c, d->sim_ms, "STATEMENT", 0);
        }
    }
}

static void next_payment(rf_demo_t *d) {
    struct rng *r = &d->r_pay;
    if (d->burst_left == 0 && unif(r) < 0.0025) {
        d->burst_left = 3 + (int)(rnd(r) % 4);
        d->burst_customer = (int)(rnd(r) % (uint64_t)d->conf->demo_customers);
    }
    int fraud = d->burst_left > 0;
    int c = fraud ? d->burst_customer : (int)(rnd(r) % (uint64_t)d->conf->demo_customers);
    int terminal = (int)(rnd(r) % 5000);
    struct customer *cu = &d->cust[c];
    double amount = cu->mean * exp(0.4 * normal(r));
    const char *channel, *kind = "PURCHASE";
    if (fraud) {
        /* A compromised card: far above the usual level, online. */
        amount = cu->mean * (5.0 + 10.0 * unif(r)) + 150.0 * unif(r);
        channel = "ECOM";
        d->burst_left--;
        d->n.fraud++;
    } else {
        uint64_t ch = rnd(r) % 10;
        channel = ch < 7 ? "POS" : ch < 9 ? "ECOM" : "ATM";
        if (ch == 9)
            kind = "CASH_WITHDRAWAL";
    }
    d->sim_ms += d->sim_step_ms;
    paydays(d);
    payment(d, c, d->sim_ms, kind, channel, amount, terminal);
    credit_step(d, c);
}

/* Stress arrives for some customers part way through the run. */
static void stress(rf_demo_t *d) {
    for (int c = 0; c < d->conf->demo_customers; c++)
        if (unif(&d->r_credit) < 0.08)
            d->cust[c].stressed = 1;
}

/* ---- trades and quotes ---- */

static void trade(rf_demo_t *d, struct instrument *in, int64_t t) {
    struct rng *r = &d->r_market;
    double p_buy = 1.0 / (1.0 + exp(-0.6 * in->s));
    int buy = unif(r) < p_buy;
    double mid = exp(in->logp);
    double price = round(mid * (1.0 + (buy ? in->half_spread : -in->half_spread)) * 100.0) / 100.0;
    double qty = round(exp(3.0 + 0.8 * normal(r) + (buy ? 0.25 : -0.25) * in->s));
    char id[32];
    snprintf(id, sizeof id, "tr-%lld", (long long)d->n.trades);
    rb_start(&d->b, d->t_trade);
    rb_str(&d->b, "instrument", in->id);
    rb_str(&d->b, "venue", "XSIM");
    rb_str(&d->b, "trade_id", id);
    rb_dbl(&d->b, "price", price);
    rb_dbl(&d->b, "quantity", qty < 1 ? 1 : qty);
    rb_enum(&d->b, "aggressor_side", buy ? "BUY" : "SELL");
    rb_int(&d->b, "trade_time", t);
    emit(d, d->market_topic, in->id);
    d->n.trades++;
}

static void build_quote(rf_demo_t *d, struct instrument *in, int64_t t) {
    struct rng *r = &d->r_market;
    double mid = exp(in->logp);
    rb_start(&d->b, d->t_quote);
    rb_str(&d->b, "instrument", in->id);
    rb_str(&d->b, "venue", "XSIM");
    rb_dbl(&d->b, "bid", floor(mid * (1.0 - in->half_spread) * 100.0) / 100.0);
    rb_dbl(&d->b, "ask", ceil(mid * (1.0 + in->half_spread) * 100.0) / 100.0 + 0.01);
    rb_dbl(&d->b, "bid_size", round(exp(5.0 + 0.5 * normal(r) + 0.08 * in->s)));
    rb_dbl(&d->b, "ask_size", round(exp(5.0 + 0.5 * normal(r) - 0.08 * in->s)));
    rb_int(&d->b, "quote_time", t);
}

static void quote(rf_demo_t *d, struct instrument *in, int64_t t) {
    build_quote(d, in, t);
    emit(d, d->market_topic, in->id);
    d->n.quotes++;
}

/* One simulated second of every instrument: the latent flow and the price move, then the
 * second's trades (Poisson, ~0.3/s) and quotes (~0.15/s) at their milliseconds. */
static void market_second(rf_demo_t *d) {
    struct rng *r = &d->r_market;
    const double phi = exp(-0.6931471805599453 / 1800.0); /* latent half-life: 30 minutes */
    for (int i = 0; i < d->n_inst; i++) {
        struct instrument *in = &d->inst[i];
        /* at s = 1 the drift per minute is 0.06 one-minute standard deviations */
        double mu = 0.06 * in->vol_s * sqrt(60.0) / 60.0;
        in->s = phi * in->s + sqrt(1.0 - phi * phi) * normal(r);
        in->logp += mu * in->s + in->vol_s * normal(r);
        int64_t base = d->mkt_ms;
        for (double u = unif(r); u > 0.7408; u *= unif(r)) /* Poisson(0.3): exp(-0.3) */
            trade(d, in, base + (int64_t)(rnd(r) % 1000));
        if (unif(r) < 0.15)
            quote(d, in, base + (int64_t)(rnd(r) % 1000));
    }
    d->mkt_ms += 1000;
}

/* ---- poison ---- */

/* One poison message of each payment kind in turn. */
static void payment_poison(rf_demo_t *d) {
    static const char *kinds[] = {"garbage", "bad_magic", "unknown_schema", "truncated",
                                  "oversize"};
    int kind = (int)(d->n.poison % 5);
    char key[64];
    snprintf(key, sizeof key, "poison-%s", kinds[kind]);
    rb_start(&d->b, d->t_pay);
    rb_str(&d->b, "event_id", "poison");
    rb_str(&d->b, "customer_id", "C999999");
    rb_str(&d->b, "card_token", "t");
    rb_str(&d->b, "merchant_id", "m");
    rb_str(&d->b, "terminal_id", "t");
    rb_str(&d->b, "currency", "EUR");
    rb_str(&d->b, "country", "FR");
    rb_int(&d->b, "event_time", d->sim_ms);
    size_t len = encode(d);
    uint32_t id = (uint32_t)d->t_pay->schema_id;
    switch (kind) {
    case 0:
        len = 40;
        for (size_t i = 5; i < len; i++)
            d->buf[i] = (uint8_t)(rnd(&d->r_pay) | 0x80); /* every byte a varint continuation */
        break; /* a valid header over a body that is not Avro: malformed */
    case 1:
        d->buf[0] = 0x7b; /* '{': someone sent JSON */
        break;
    case 2:
        d->buf[4] = (uint8_t)(id + 90); /* an id the registry does not have */
        break;
    case 3:
        len /= 2;
        break;
    case 4: {
        /* One byte over the cap, with a valid header (the generator is not the hot path). */
        size_t big = (size_t)d->conf->input_max_bytes + 1;
        uint8_t *m = calloc(1, big);
        if (m) {
            memcpy(m, d->buf, len < big ? len : big);
            emit_raw(d, d->payments_topic, key, m, big);
            free(m);
        }
        d->n.poison++;
        return;
    }
    }
    emit_raw(d, d->payments_topic, key, d->buf, len);
    d->n.poison++;
}

/* Market poison: a trade without an instrument (bad_key), a quote cut short (truncated). */
static void market_poison(rf_demo_t *d) {
    struct instrument empty = d->inst[0];
    empty.id[0] = '\0';
    if (d->n.poison % 2 == 0) {
        int64_t before = d->n.trades;
        trade(d, &empty, d->mkt_ms);
        d->n.trades = before;
    } else {
        build_quote(d, &d->inst[0], d->mkt_ms);
        emit_raw(d, d->market_topic, d->inst[0].id, d->buf, encode(d) - 9);
    }
    d->n.poison++;
}

/* ---- pacing ---- */

static int queue_full(rf_demo_t *d) {
    /* Hold back while the producer's queue is deep: a full queue would refuse messages, and
     * the stream would silently be shorter than asked. */
    return rd_kafka_outq_len(d->rk) > GEN_QUEUE_MAX;
}

static rf_demo_t *sort_demo; /* qsort's context: the loop thread only */

static int by_payday(const void *a, const void *b) {
    int64_t x = sort_demo->cust[*(const int *)a].payday, y = sort_demo->cust[*(const int *)b].payday;
    return (x > y) - (x < y);
}

/* The customers' and the market's past, in one go before the measured stream. */
static void send_history(rf_demo_t *d) {
    int n = d->conf->demo_customers;
    for (int c = 0; c < n; c++) {
        history(d, c);
        d->by_payday[c] = c;
    }
    sort_demo = d;
    qsort(d->by_payday, (size_t)n, sizeof *d->by_payday, by_payday);
    d->mkt_ms = d->t0_ms - MARKET_HISTORY_S * 1000LL;
    while (d->mkt_ms < d->t0_ms)
        market_second(d);
    d->history = d->produced;
    d->hist = d->n;
}

static void on_tick(uv_timer_t *t) {
    rf_demo_t *d = t->data;
    int total = d->conf->demo_events;
    if (d->warm == 0) {
        send_history(d);
        d->warm = 1;
    }
    if (d->warm == 1) { /* waiting for the engine to complete the history */
        rd_kafka_poll(d->rk, 0);
        return;
    }
    int slice = d->conf->demo_rate > 0 ? d->conf->demo_rate * TICK_MS / 1000 : 2000;
    if (slice < 1)
        slice = 1;
    for (int i = 0; i < slice && d->n.card_payments < total && !queue_full(d); i++) {
        next_payment(d);
        d->n.card_payments++;
        if (d->n.card_payments == total * 2 / 5)
            stress(d);
        if (d->n.card_payments % 2000 == 1000)
            payment_poison(d);
        /* the market keeps pace: its 90 simulated minutes over the payments' run */
        int64_t want = (int64_t)SIM_MARKET_S * d->n.card_payments / total;
        while ((d->mkt_ms - d->t0_ms) / 1000 < want) {
            market_second(d);
            if (((d->mkt_ms - d->t0_ms) / 1000) % 2000 == 1000)
                market_poison(d);
        }
    }
    rd_kafka_poll(d->rk, 0);
    if (d->n.card_payments >= total && rd_kafka_outq_len(d->rk) == 0)
        uv_timer_stop(t);
}

int rf_demo_warm(rf_demo_t *d, uint64_t done) {
    if (d->warm == 1 && done >= (uint64_t)d->history && d->history > 0) {
        d->warm = 2;
        return 1;
    }
    return 0;
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
    d->r_pay.s = (uint64_t)conf->demo_seed * 0x2545F4914F6CDD1DULL + 1;
    d->r_credit.s = (uint64_t)conf->demo_seed * 0x9E3779B97F4A7C15ULL + 7;
    d->r_market.s = (uint64_t)conf->demo_seed * 0xD1B54A32D192ED03ULL + 13;
    d->t_pay = rf_schemas_rtype_named(schemas, "riskflow.Payment");
    d->t_credit = rf_schemas_rtype_named(schemas, "riskflow.CreditEvent");
    d->t_trade = rf_schemas_rtype_named(schemas, "riskflow.Trade");
    d->t_quote = rf_schemas_rtype_named(schemas, "riskflow.Quote");
    if (!d->t_pay || !d->t_credit || !d->t_trade || !d->t_quote) {
        snprintf(errstr, size, "demo: the registry must have Payment, CreditEvent, Trade and "
                 "Quote records");
        goto fail;
    }
    const char *cur = conf->input_topics;
    struct rf_conf_topic t;
    if (rf_conf_topic_next(&cur, &t, errstr, size) != 1)
        goto fail;
    snprintf(d->payments_topic, sizeof d->payments_topic, "%s", t.name);
    snprintf(d->market_topic, sizeof d->market_topic, "%s",
             rf_conf_topic_next(&cur, &t, errstr, size) == 1 ? t.name : d->payments_topic);
    d->t0_ms = ((int64_t)time(NULL) / 259200 * 259200 - 9 * 86400) * 1000LL;
    d->sim_ms = d->mkt_ms = d->t0_ms;
    d->sim_step_ms = 2 * 86400000LL / conf->demo_events;
    if (d->sim_step_ms < 1)
        d->sim_step_ms = 1;
    d->cust = calloc((size_t)conf->demo_customers, sizeof *d->cust);
    d->by_payday = calloc((size_t)conf->demo_customers, sizeof *d->by_payday);
    d->n_inst = conf->demo_instruments;
    d->inst = calloc((size_t)d->n_inst, sizeof *d->inst);
    if (!d->cust || !d->inst || !d->by_payday) {
        snprintf(errstr, size, "out of memory");
        goto fail;
    }
    for (int c = 0; c < conf->demo_customers; c++)
        d->cust[c].mean = exp(3.3 + 0.5 * normal(&d->r_pay)); /* ~27 EUR, a few in the hundreds */
    for (int i = 0; i < d->n_inst; i++) {
        struct instrument *in = &d->inst[i];
        snprintf(in->id, sizeof in->id, "XSIM:%c%c%c", 'A' + i % 26, 'A' + (i / 26) % 26,
                 'K' + i % 7);
        in->logp = log(20.0 * exp(3.0 * unif(&d->r_market)));
        in->s = normal(&d->r_market);
        in->vol_s = (5.0 + 7.0 * unif(&d->r_market)) / 1e4 / sqrt(60.0);
        in->half_spread = (0.8 + 2.2 * unif(&d->r_market)) / 1e4;
    }

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
    static const struct {
        const char *key;
        int parts;
    } outs[] = {{"fraud.scores.topic", 8}, {"fraud.alerts.topic", 2}, {"credit.pd.topic", 4},
                {"market.signals.topic", 4}};
    int bad = rd_kafka_mock_topic_create(mc, d->payments_topic, 4, 1) ||
              rd_kafka_mock_topic_create(mc, conf->dlq_topic, 1, 1) ||
              (strcmp(d->market_topic, d->payments_topic) != 0 &&
               rd_kafka_mock_topic_create(mc, d->market_topic, 4, 1));
    for (size_t i = 0; !bad && i < sizeof outs / sizeof outs[0]; i++) {
        const char *name = rf_conf_str(conf, outs[i].key);
        bad = name && rd_kafka_mock_topic_create(mc, name, outs[i].parts, 1);
    }
    if (bad) {
        snprintf(errstr, size, "demo: cannot create mock topics");
        goto fail;
    }
    uv_timer_init(loop, &d->timer);
    d->timer.data = d;
    return d;
fail:
    if (d->rk)
        rd_kafka_destroy(d->rk);
    free(d->cust);
    free(d->by_payday);
    free(d->inst);
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
    return d->n.card_payments >= d->conf->demo_events && d->acked + d->failed >= d->produced;
}

void rf_demo_counts(const rf_demo_t *d, struct rf_demo_counts *out) {
    *out = d->n;
    out->credit -= d->hist.credit;
    out->trades -= d->hist.trades;
    out->quotes -= d->hist.quotes;
    out->failed = d->failed;
    out->history = d->history;
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
    free(d->cust);
    free(d->by_payday);
    free(d->inst);
    free(d);
}
