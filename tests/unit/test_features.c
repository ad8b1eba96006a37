/*
 * test_features.c — the rolling customer state against hand-computed values and a brute-force
 * oracle.
 *
 * Covers every catalogue feature, tile boundaries of both windows, late and too-late events,
 * replays (per (topic, partition) source: several input topics, interleaving, the most
 * recently applied order and eviction of a fifth source), the wire layout byte by byte, and
 * randomized runs (increasing times, late events, redeliveries, several topics, times on both
 * sides of the epoch) checked against a definition-level implementation that keeps every
 * event. No network, single thread.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "rf_test.h"
#include "riskflow/err.h"
#include "riskflow/features.h"

/* 2024-01-01T12:00:00Z: on an hour (so on a 5-minute tile) boundary, and not night. */
#define T0 1704110400000LL
#define MIN 60000LL
#define HOUR 3600000LL
#define DAY 86400000LL

static struct rf_payment pay(int64_t t_ms, int64_t amount_minor) {
    struct rf_payment p;
    memset(&p, 0, sizeof p);
    strcpy(p.event_id, "e");
    strcpy(p.customer_id, "c1");
    p.amount_minor = amount_minor;
    p.channel = RF_CHANNEL_POS;
    p.kind = RF_KIND_PURCHASE;
    p.event_time_ms = t_ms;
    return p;
}

/* The single-source tests read topic "txn.payments", partition 0. */
#define TOPIC "txn.payments"

static int apply_src(struct rf_cust_state *st, const char *topic, int32_t partition,
                     int64_t t_ms, int64_t amount_minor, int64_t offset, double out[RF_FEAT__N]) {
    struct rf_payment p = pay(t_ms, amount_minor);
    return rf_features_apply(st, &p, rf_feature_topic_id(topic), partition, offset, out);
}

static int apply(struct rf_cust_state *st, int64_t t_ms, int64_t amount_minor, int64_t offset,
                 double out[RF_FEAT__N]) {
    return apply_src(st, TOPIC, 0, t_ms, amount_minor, offset, out);
}

/* Source i of st is (topic, partition, offset). */
static int has_source(const struct rf_cust_state *st, int i, const char *topic,
                      int32_t partition, int64_t offset) {
    return i < st->n_sources && st->sources[i].topic_id == rf_feature_topic_id(topic) &&
           st->sources[i].partition == partition && st->sources[i].offset == offset;
}

static void test_topic_id(void) {
    /* FNV-1a 32-bit reference values. */
    CHECK_EQ_INT(rf_feature_topic_id(""), 0x811c9dc5u);
    CHECK_EQ_INT(rf_feature_topic_id("a"), 0xe40c292cu);
    CHECK_EQ_INT(rf_feature_topic_id("foobar"), 0xbf9cf968u);
    CHECK_EQ_INT(rf_feature_topic_id(NULL), 0x811c9dc5u);
    /* Bytes, not chars: a byte >= 0x80 must not sign-extend. */
    CHECK_EQ_INT(rf_feature_topic_id("\xc3\xa9"), 0x1e9de8c1u);
    CHECK(rf_feature_topic_id("txn.payments") != rf_feature_topic_id("txn.transfers"));
}

static void test_catalogue_names(void) {
    static const char *const expect[] = {"amount",
                                         "log_amount",
                                         "cust_count_1h",
                                         "cust_sum_1h",
                                         "cust_count_24h",
                                         "cust_sum_24h",
                                         "cust_secs_since_last",
                                         "cust_amount_ratio_24h",
                                         "is_ecom",
                                         "is_night",
                                         "is_cash"};
    CHECK_EQ_INT(RF_FEAT__N, 11);
    for (int i = 0; i < RF_FEAT__N; i++) {
        CHECK_EQ_STR(rf_feature_name(i), expect[i]);
        CHECK_EQ_INT(rf_feature_lookup(expect[i]), i);
    }
    CHECK_EQ_INT(rf_feature_lookup("cust_count_7d"), RF_E_NOTFOUND);
    CHECK_EQ_INT(rf_feature_lookup("Amount"), RF_E_NOTFOUND);
    CHECK_EQ_INT(rf_feature_lookup(""), RF_E_NOTFOUND);
    CHECK_EQ_INT(rf_feature_lookup(NULL), RF_E_NOTFOUND);
    CHECK(rf_feature_name(-1) == NULL);
    CHECK(rf_feature_name(RF_FEAT__N) == NULL);
}

static void test_init(void) {
    struct rf_cust_state st;
    memset(&st, 0xa5, sizeof st);
    rf_cust_state_init(&st);
    CHECK_EQ_INT(st.n_sources, 0);
    for (int i = 0; i < RF_STATE_SOURCES; i++)
        CHECK(st.sources[i].topic_id == 0 && st.sources[i].partition == 0 &&
              st.sources[i].offset == 0);
    CHECK(st.last_event_ms == INT64_MIN);
    CHECK(st.head_5m == INT64_MIN && st.head_1h == INT64_MIN);
    for (int i = 0; i < RF_TILES_5M; i++)
        CHECK(st.cnt_5m[i] == 0 && st.sum_5m[i] == 0);
    for (int i = 0; i < RF_TILES_1H; i++)
        CHECK(st.cnt_1h[i] == 0 && st.sum_1h[i] == 0);
}

static void test_first_event(void) {
    struct rf_cust_state st;
    double f[RF_FEAT__N];
    rf_cust_state_init(&st);
    struct rf_payment p = pay(T0 + 90000, 12345);
    p.channel = RF_CHANNEL_ECOM;
    p.kind = RF_KIND_CASH_WITHDRAWAL;

    CHECK_EQ_INT(rf_features_apply(&st, &p, rf_feature_topic_id(TOPIC), 3, 10, f), 1);
    CHECK_NEAR(f[RF_FEAT_AMOUNT], 123.45, 1e-15, 0);
    CHECK_NEAR(f[RF_FEAT_LOG_AMOUNT], log1p(123.45), 1e-15, 0);
    CHECK(f[RF_FEAT_CUST_COUNT_1H] == 1.0);
    CHECK_NEAR(f[RF_FEAT_CUST_SUM_1H], 123.45, 1e-15, 0);
    CHECK(f[RF_FEAT_CUST_COUNT_24H] == 1.0);
    CHECK_NEAR(f[RF_FEAT_CUST_SUM_24H], 123.45, 1e-15, 0);
    CHECK(f[RF_FEAT_CUST_SECS_SINCE_LAST] == 2592000.0);
    CHECK(f[RF_FEAT_CUST_AMOUNT_RATIO_24H] == 1.0);
    CHECK(f[RF_FEAT_IS_ECOM] == 1.0);
    CHECK(f[RF_FEAT_IS_NIGHT] == 0.0);
    CHECK(f[RF_FEAT_IS_CASH] == 1.0);

    CHECK_EQ_INT(st.n_sources, 1);
    CHECK(has_source(&st, 0, TOPIC, 3, 10));
    CHECK_EQ_INT(st.last_event_ms, T0 + 90000);
    CHECK_EQ_INT(st.head_5m, T0 / RF_TILE_5M_MS);
    CHECK_EQ_INT(st.head_1h, T0 / RF_TILE_1H_MS);
    int s5 = (int)((T0 / RF_TILE_5M_MS) % RF_TILES_5M);
    int s1 = (int)((T0 / RF_TILE_1H_MS) % RF_TILES_1H);
    CHECK_EQ_INT(st.cnt_5m[s5], 1);
    CHECK_EQ_INT(st.sum_5m[s5], 12345);
    CHECK_EQ_INT(st.cnt_1h[s1], 1);
    CHECK_EQ_INT(st.sum_1h[s1], 12345);
}

static void test_flags(void) {
    struct rf_cust_state st;
    double f[RF_FEAT__N];
    static const struct {
        int64_t t;
        int night;
    } cases[] = {
        {T0 - 12 * HOUR, 1},                   /* 00:00:00.000 */
        {T0 - 6 * HOUR - 1, 1},                /* 05:59:59.999 */
        {T0 - 6 * HOUR, 0},                    /* 06:00:00.000 */
        {T0 + 11 * HOUR + 59 * MIN, 0},        /* 23:59 */
        {-1, 0},                               /* 1969-12-31 23:59:59.999 */
        {-DAY + HOUR, 1},                      /* 1969-12-31 01:00 */
        {-DAY + 6 * HOUR, 0},                  /* 1969-12-31 06:00 */
        {0, 1},                                /* the epoch */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        rf_cust_state_init(&st);
        apply(&st, cases[i].t, 100, 1, f);
        CHECK_EQ_INT(f[RF_FEAT_IS_NIGHT], cases[i].night);
    }
    for (int ch = 0; ch < RF_CHANNEL__N; ch++) {
        struct rf_payment p = pay(T0, 100);
        p.channel = (enum rf_channel)ch;
        rf_cust_state_init(&st);
        rf_features_apply(&st, &p, rf_feature_topic_id(TOPIC), 0, 0, f);
        CHECK_EQ_INT(f[RF_FEAT_IS_ECOM], ch == RF_CHANNEL_ECOM);
    }
    for (int k = 0; k < RF_KIND__N; k++) {
        struct rf_payment p = pay(T0, 100);
        p.kind = (enum rf_payment_kind)k;
        rf_cust_state_init(&st);
        rf_features_apply(&st, &p, rf_feature_topic_id(TOPIC), 0, 0, f);
        CHECK_EQ_INT(f[RF_FEAT_IS_CASH], k == RF_KIND_CASH_WITHDRAWAL);
    }
}

static void test_same_tile(void) {
    struct rf_cust_state st;
    double f[RF_FEAT__N];
    rf_cust_state_init(&st);
    apply(&st, T0 + 30000, 1000, 1, f);
    CHECK_EQ_INT(apply(&st, T0 + 90000, 4000, 2, f), 1);
    CHECK(f[RF_FEAT_AMOUNT] == 40.0);
    CHECK(f[RF_FEAT_CUST_COUNT_1H] == 2.0);
    CHECK(f[RF_FEAT_CUST_SUM_1H] == 50.0);
    CHECK(f[RF_FEAT_CUST_COUNT_24H] == 2.0);
    CHECK(f[RF_FEAT_CUST_SUM_24H] == 50.0);
    CHECK(f[RF_FEAT_CUST_SECS_SINCE_LAST] == 60.0);
    CHECK(f[RF_FEAT_CUST_AMOUNT_RATIO_24H] == 40.0 / 25.0);
    int s5 = (int)((T0 / RF_TILE_5M_MS) % RF_TILES_5M);
    CHECK_EQ_INT(st.cnt_5m[s5], 2);
    CHECK_EQ_INT(st.sum_5m[s5], 5000);

    /* Third event 2.5 h later: secs since last, 1 h window holds it alone, 24 h holds all. */
    apply(&st, T0 + 90000 + 150 * MIN, 1000, 3, f);
    CHECK(f[RF_FEAT_CUST_SECS_SINCE_LAST] == 9000.0);
    CHECK(f[RF_FEAT_CUST_COUNT_1H] == 1.0);
    CHECK(f[RF_FEAT_CUST_SUM_1H] == 10.0);
    CHECK(f[RF_FEAT_CUST_COUNT_24H] == 3.0);
    CHECK(f[RF_FEAT_CUST_SUM_24H] == 60.0);
    CHECK(f[RF_FEAT_CUST_AMOUNT_RATIO_24H] == 10.0 / 20.0);
}

static void test_ratio_zero_mean(void) {
    struct rf_cust_state st;
    double f[RF_FEAT__N];

    /* A zero-amount event: the 24 h mean is 0, so the ratio is defined as 1. */
    rf_cust_state_init(&st);
    apply(&st, T0, 0, 1, f);
    CHECK(f[RF_FEAT_CUST_AMOUNT_RATIO_24H] == 1.0);
    CHECK(f[RF_FEAT_LOG_AMOUNT] == 0.0);
    /* A refund cancelling a purchase: sum 0 over 2 events. */
    apply(&st, T0 + MIN, 2500, 2, f);
    CHECK(f[RF_FEAT_CUST_AMOUNT_RATIO_24H] == 2.0); /* 25 / (25 / 2) */
    apply(&st, T0 + 2 * MIN, -2500, 3, f);
    CHECK(f[RF_FEAT_CUST_SUM_24H] == 0.0);
    CHECK(f[RF_FEAT_CUST_AMOUNT_RATIO_24H] == 1.0);
    apply(&st, T0 + 3 * MIN, 3000, 4, f);
    CHECK(f[RF_FEAT_CUST_AMOUNT_RATIO_24H] == 30.0 / (30.0 / 4.0));

    /* Empty windows with a watermark (e.g. a stored value): a replay sees count 0, mean 0. */
    rf_cust_state_init(&st);
    st.n_sources = 1;
    st.sources[0].topic_id = rf_feature_topic_id(TOPIC);
    st.sources[0].partition = 0;
    st.sources[0].offset = 10;
    CHECK_EQ_INT(apply(&st, T0, 700, 5, f), 0);
    CHECK(f[RF_FEAT_CUST_COUNT_24H] == 0.0);
    CHECK(f[RF_FEAT_CUST_AMOUNT_RATIO_24H] == 1.0);
    CHECK(f[RF_FEAT_CUST_SECS_SINCE_LAST] == 2592000.0);
}

/* Features of event B at t_b, after a single event A at t_a. */
static void pair(int64_t t_a, int64_t t_b, double f[RF_FEAT__N]) {
    struct rf_cust_state st;
    rf_cust_state_init(&st);
    apply(&st, t_a, 1000, 1, f);
    apply(&st, t_b, 3000, 2, f);
}

static void test_rollover_1h(void) {
    double f[RF_FEAT__N];

    /* A at the start of a tile. 55 min later: 11 tiles ahead, both in the window. */
    pair(T0, T0 + 55 * MIN, f);
    CHECK(f[RF_FEAT_CUST_COUNT_1H] == 2.0);
    CHECK(f[RF_FEAT_CUST_SUM_1H] == 40.0);
    /* 59:59.999 later: still tile +11. */
    pair(T0, T0 + 60 * MIN - 1, f);
    CHECK(f[RF_FEAT_CUST_COUNT_1H] == 2.0);
    /* Exactly 60 min later: tile +12, A's tile has left the 12-tile window. */
    pair(T0, T0 + 60 * MIN, f);
    CHECK(f[RF_FEAT_CUST_COUNT_1H] == 1.0);
    CHECK(f[RF_FEAT_CUST_SUM_1H] == 30.0);
    CHECK(f[RF_FEAT_CUST_COUNT_24H] == 2.0);
    CHECK(f[RF_FEAT_CUST_SUM_24H] == 40.0);
    CHECK(f[RF_FEAT_CUST_SECS_SINCE_LAST] == 3600.0);
    /* 65 min later: tile +13. */
    pair(T0, T0 + 65 * MIN, f);
    CHECK(f[RF_FEAT_CUST_COUNT_1H] == 1.0);
    CHECK(f[RF_FEAT_CUST_SUM_1H] == 30.0);
    CHECK(f[RF_FEAT_CUST_COUNT_24H] == 2.0);

    /* Tiles, not a sliding window: A late in its tile (T0+4:59) and B 55:01 later at T0+60
     * are 12 tiles apart, so A is out although less than an hour passed ... */
    pair(T0 + 5 * MIN - 1000, T0 + 60 * MIN, f);
    CHECK(f[RF_FEAT_CUST_COUNT_1H] == 1.0);
    /* ... while A at T0+2:00 and B at T0+55:30 (tile +11) are both in. */
    pair(T0 + 2 * MIN, T0 + 55 * MIN + 30000, f);
    CHECK(f[RF_FEAT_CUST_COUNT_1H] == 2.0);
}

static void test_rollover_24h(void) {
    double f[RF_FEAT__N];

    pair(T0, T0 + 23 * HOUR, f);
    CHECK(f[RF_FEAT_CUST_COUNT_24H] == 2.0);
    CHECK(f[RF_FEAT_CUST_SUM_24H] == 40.0);
    CHECK(f[RF_FEAT_CUST_COUNT_1H] == 1.0);
    pair(T0, T0 + 24 * HOUR - 1, f);
    CHECK(f[RF_FEAT_CUST_COUNT_24H] == 2.0);
    pair(T0, T0 + 24 * HOUR, f);
    CHECK(f[RF_FEAT_CUST_COUNT_24H] == 1.0);
    CHECK(f[RF_FEAT_CUST_SUM_24H] == 30.0);
    CHECK(f[RF_FEAT_CUST_AMOUNT_RATIO_24H] == 1.0);
    CHECK(f[RF_FEAT_CUST_SECS_SINCE_LAST] == 86400.0);
    pair(T0, T0 + 25 * HOUR, f);
    CHECK(f[RF_FEAT_CUST_COUNT_24H] == 1.0);
    CHECK(f[RF_FEAT_CUST_SUM_24H] == 30.0);

    /* 40 days later: the ring is wiped, and secs since last is capped at 30 days. */
    pair(T0, T0 + 40 * DAY, f);
    CHECK(f[RF_FEAT_CUST_COUNT_24H] == 1.0);
    CHECK(f[RF_FEAT_CUST_COUNT_1H] == 1.0);
    CHECK(f[RF_FEAT_CUST_SECS_SINCE_LAST] == 2592000.0);

    /* Partial advance keeps the tiles still inside: events at T0, T0+10h, T0+30h → at T0+30h
     * the window is tiles (T0+6h, T0+30h]: T0+10h and T0+30h. */
    struct rf_cust_state st;
    rf_cust_state_init(&st);
    apply(&st, T0, 100, 1, f);
    apply(&st, T0 + 10 * HOUR, 200, 2, f);
    apply(&st, T0 + 30 * HOUR, 400, 3, f);
    CHECK(f[RF_FEAT_CUST_COUNT_24H] == 2.0);
    CHECK(f[RF_FEAT_CUST_SUM_24H] == 6.0);
    CHECK(f[RF_FEAT_CUST_AMOUNT_RATIO_24H] == 4.0 / 3.0);
}

static void test_late_event(void) {
    struct rf_cust_state st;
    double f[RF_FEAT__N];
    int64_t base5 = T0 / RF_TILE_5M_MS;

    rf_cust_state_init(&st);
    apply(&st, T0 + 30 * MIN, 1000, 1, f);
    /* 25 minutes late: tile base5+1, head stays at base5+6. */
    CHECK_EQ_INT(apply(&st, T0 + 5 * MIN + 1000, 2000, 2, f), 1);
    CHECK_EQ_INT(st.head_5m, base5 + 6);
    CHECK_EQ_INT(st.cnt_5m[(base5 + 1) % RF_TILES_5M], 1);
    CHECK_EQ_INT(st.sum_5m[(base5 + 1) % RF_TILES_5M], 2000);
    CHECK_EQ_INT(st.cnt_5m[(base5 + 6) % RF_TILES_5M], 1);
    CHECK(f[RF_FEAT_CUST_COUNT_1H] == 2.0);
    CHECK(f[RF_FEAT_CUST_SUM_1H] == 30.0);
    CHECK(f[RF_FEAT_CUST_COUNT_24H] == 2.0);
    CHECK(f[RF_FEAT_CUST_SECS_SINCE_LAST] == 0.0); /* negative gap clamps to 0 */
    CHECK_EQ_INT(st.last_event_ms, T0 + 30 * MIN); /* the newest time is kept */
    CHECK(has_source(&st, 0, TOPIC, 0, 2));

    /* The next on-time event measures from the newest time, not from the late one. */
    apply(&st, T0 + 40 * MIN, 500, 3, f);
    CHECK(f[RF_FEAT_CUST_SECS_SINCE_LAST] == 600.0);
    CHECK(f[RF_FEAT_CUST_COUNT_1H] == 3.0);

    /* At T0+65 min (tile +13) the window is tiles +2..+13: the late event in tile +1 leaves,
     * which shows it went into tile +1 and not into the head's tile. */
    apply(&st, T0 + 65 * MIN, 100, 4, f);
    CHECK(f[RF_FEAT_CUST_COUNT_1H] == 3.0);
    CHECK(f[RF_FEAT_CUST_SUM_1H] == 16.0);
    CHECK(f[RF_FEAT_CUST_COUNT_24H] == 4.0);
    CHECK(f[RF_FEAT_CUST_SUM_24H] == 36.0);
}

static void test_too_late_event(void) {
    struct rf_cust_state st, before;
    double f[RF_FEAT__N];

    rf_cust_state_init(&st);
    apply(&st, T0 + 2 * HOUR, 1000, 1, f);
    /* 90 minutes late: outside the 1 h window (tile diff 18), inside the 24 h one (diff 2). */
    memcpy(&before, &st, sizeof st);
    CHECK_EQ_INT(apply(&st, T0 + 30 * MIN, 2000, 2, f), 1);
    CHECK(memcmp(st.cnt_5m, before.cnt_5m, sizeof st.cnt_5m) == 0);
    CHECK(memcmp(st.sum_5m, before.sum_5m, sizeof st.sum_5m) == 0);
    CHECK_EQ_INT(st.head_5m, before.head_5m);
    CHECK(f[RF_FEAT_CUST_COUNT_1H] == 1.0);
    CHECK(f[RF_FEAT_CUST_SUM_1H] == 10.0);
    CHECK(f[RF_FEAT_CUST_COUNT_24H] == 2.0);
    CHECK(f[RF_FEAT_CUST_SUM_24H] == 30.0);
    CHECK(has_source(&st, 0, TOPIC, 0, 2));

    /* Two days late: in no window at all, yet applied (the offset advances). */
    memcpy(&before, &st, sizeof st);
    CHECK_EQ_INT(apply(&st, T0 - 2 * DAY, 5000, 3, f), 1);
    CHECK(has_source(&st, 0, TOPIC, 0, 3));
    CHECK_EQ_INT(st.n_sources, 1);
    CHECK_EQ_INT(st.last_event_ms, T0 + 2 * HOUR);
    before.sources[0].offset = 3;
    CHECK(memcmp(&st, &before, sizeof st) == 0);
    CHECK(f[RF_FEAT_CUST_COUNT_1H] == 1.0);
    CHECK(f[RF_FEAT_CUST_COUNT_24H] == 2.0);
    CHECK(f[RF_FEAT_AMOUNT] == 50.0);
    CHECK(f[RF_FEAT_CUST_AMOUNT_RATIO_24H] == 50.0 / 15.0);
    /* Redelivered, it is a replay now. */
    CHECK_EQ_INT(apply(&st, T0 - 2 * DAY, 5000, 3, f), 0);
}

static void test_replay(void) {
    struct rf_cust_state st, snap;
    double f[RF_FEAT__N], g[RF_FEAT__N];

    rf_cust_state_init(&st);
    for (int i = 1; i <= 5; i++)
        CHECK_EQ_INT(apply(&st, T0 + i * MIN, 1000 * i, 100 + i, f), 1);
    memcpy(&snap, &st, sizeof st);

    /* Below and at the last offset on the same partition: not applied. */
    CHECK_EQ_INT(apply(&st, T0 + 3 * MIN, 3000, 103, g), 0);
    CHECK(memcmp(&st, &snap, sizeof st) == 0);
    CHECK(g[RF_FEAT_CUST_COUNT_1H] == 5.0);
    CHECK(g[RF_FEAT_CUST_SUM_1H] == 150.0);
    CHECK(g[RF_FEAT_CUST_COUNT_24H] == 5.0);
    CHECK(g[RF_FEAT_AMOUNT] == 30.0);
    CHECK(g[RF_FEAT_CUST_SECS_SINCE_LAST] == 0.0); /* from the state as it stands */
    CHECK(g[RF_FEAT_CUST_AMOUNT_RATIO_24H] == 1.0);

    /* The last event replayed: the windows already hold it, so they match its first
     * vector, but the time since last is now measured from itself. A replay reproduces the
     * first score only through the caller's snapshot (design.md §3), not through this. */
    CHECK_EQ_INT(apply(&st, T0 + 5 * MIN, 5000, 105, g), 0);
    CHECK(memcmp(&st, &snap, sizeof st) == 0);
    for (int i = 0; i < RF_FEAT__N; i++) {
        if (i != RF_FEAT_CUST_SECS_SINCE_LAST)
            CHECK(g[i] == f[i]);
    }
    CHECK(f[RF_FEAT_CUST_SECS_SINCE_LAST] == 60.0);
    CHECK(g[RF_FEAT_CUST_SECS_SINCE_LAST] == 0.0);

    /* A later offset applies. */
    CHECK_EQ_INT(apply(&st, T0 + 6 * MIN, 6000, 106, g), 1);
    CHECK(g[RF_FEAT_CUST_COUNT_1H] == 6.0);

    /* A lower offset on another partition (repartitioned topic) is a different event. */
    CHECK_EQ_INT(apply_src(&st, TOPIC, 1, T0 + 7 * MIN, 100, 0, g), 1);
    CHECK_EQ_INT(st.n_sources, 2);
    CHECK(has_source(&st, 0, TOPIC, 1, 0));
    CHECK(has_source(&st, 1, TOPIC, 0, 106));
    CHECK(g[RF_FEAT_CUST_COUNT_1H] == 7.0);
    /* Partition 0's watermark survived the switch: its redeliveries are still replays. */
    memcpy(&snap, &st, sizeof st);
    CHECK_EQ_INT(apply(&st, T0 + 6 * MIN, 6000, 106, g), 0);
    CHECK_EQ_INT(apply(&st, T0 + 1 * MIN, 1000, 101, g), 0);
    CHECK(memcmp(&st, &snap, sizeof st) == 0);
}

/* The bug the end-to-end test found: one customer, input.topics=A,B, A[0] offsets 0-4 then
 * B[0] offsets 0-2. With a single (partition, offset) watermark the B events looked like
 * replays of A's offsets (<= 4 "on partition 0") and never entered the windows. */
static void test_two_topics_same_partition(void) {
    struct rf_cust_state st;
    double f[RF_FEAT__N];

    rf_cust_state_init(&st);
    for (int i = 0; i < 5; i++) {
        CHECK_EQ_INT(apply_src(&st, "A", 0, T0 + i * MIN, 1000, i, f), 1);
        CHECK(f[RF_FEAT_CUST_COUNT_1H] == i + 1.0);
    }
    for (int i = 0; i < 3; i++) {
        CHECK_EQ_INT(apply_src(&st, "B", 0, T0 + (10 + i) * MIN, 2000, i, f), 1);
        CHECK(f[RF_FEAT_CUST_COUNT_1H] == 6.0 + i); /* 6, 7, 8 */
        CHECK(f[RF_FEAT_CUST_COUNT_24H] == 6.0 + i);
        CHECK(f[RF_FEAT_CUST_SUM_1H] == 50.0 + 20.0 * (i + 1));
        CHECK(f[RF_FEAT_CUST_SECS_SINCE_LAST] == (i == 0 ? 360.0 : 60.0));
    }
    CHECK_EQ_INT(st.n_sources, 2);
    CHECK(has_source(&st, 0, "B", 0, 2));
    CHECK(has_source(&st, 1, "A", 0, 4));

    /* Every redelivery of either topic is a replay now. */
    struct rf_cust_state snap;
    memcpy(&snap, &st, sizeof st);
    for (int i = 0; i < 5; i++)
        CHECK_EQ_INT(apply_src(&st, "A", 0, T0 + i * MIN, 1000, i, f), 0);
    for (int i = 0; i < 3; i++)
        CHECK_EQ_INT(apply_src(&st, "B", 0, T0 + (10 + i) * MIN, 2000, i, f), 0);
    CHECK(memcmp(&st, &snap, sizeof st) == 0);
    CHECK(f[RF_FEAT_CUST_COUNT_1H] == 8.0);

    /* And the next of each is applied. */
    CHECK_EQ_INT(apply_src(&st, "A", 0, T0 + 20 * MIN, 1000, 5, f), 1);
    CHECK_EQ_INT(apply_src(&st, "B", 0, T0 + 21 * MIN, 1000, 3, f), 1);
    CHECK(f[RF_FEAT_CUST_COUNT_1H] == 10.0);
}

/* Interleaved sources: a redelivery from one topic after an event from the other must still be
 * recognised (with a single watermark it was re-applied: double counted). */
static void test_interleaved_sources(void) {
    struct rf_cust_state st, snap;
    double f[RF_FEAT__N];
    static const struct {
        const char *topic;
        int64_t offset;
        int applied;
    } steps[] = {
        {"A", 100, 1}, {"B", 7, 1}, {"A", 101, 1},
        {"A", 100, 0}, /* A's replay after an A event */
        {"B", 8, 1},
        {"A", 101, 0}, /* A's replay after a B event: was re-applied (101 > 8) */
        {"B", 7, 0},   {"A", 100, 0}, {"B", 8, 0}, {"A", 102, 1},
        {"B", 8, 0},   /* B's replay after an A event */
        {"B", 9, 1},   /* B's next event after A's 102: was taken for a replay (9 <= 102) */
        {"A", 50, 0},  {"B", 3, 0},
    };
    int count = 0;

    rf_cust_state_init(&st);
    for (size_t i = 0; i < sizeof steps / sizeof steps[0]; i++) {
        memcpy(&snap, &st, sizeof st);
        int got = apply_src(&st, steps[i].topic, 0, T0 + (int64_t)i * MIN, 100,
                            steps[i].offset, f);
        CHECK_EQ_INT(got, steps[i].applied);
        count += steps[i].applied;
        CHECK(f[RF_FEAT_CUST_COUNT_1H] == count);
        if (!steps[i].applied)
            CHECK(memcmp(&st, &snap, sizeof st) == 0);
    }
    CHECK_EQ_INT(count, 6);
    CHECK_EQ_INT(st.n_sources, 2);
    CHECK(has_source(&st, 0, "B", 0, 9));
    CHECK(has_source(&st, 1, "A", 0, 102));
}

/* Up to RF_STATE_SOURCES watermarks, most recently applied first; a fifth source drops the
 * least recently applied, whose redeliveries are then applied again (the documented limit). */
static void test_sources_mru_and_eviction(void) {
    struct rf_cust_state st, snap;
    double f[RF_FEAT__N];
    int64_t t = T0;

    CHECK_EQ_INT(RF_STATE_SOURCES, 4);
    rf_cust_state_init(&st);
    CHECK_EQ_INT(apply_src(&st, "t1", 0, t += MIN, 100, 10, f), 1);
    CHECK_EQ_INT(apply_src(&st, "t2", 0, t += MIN, 100, 20, f), 1);
    CHECK_EQ_INT(apply_src(&st, "t3", 0, t += MIN, 100, 30, f), 1);
    CHECK_EQ_INT(apply_src(&st, "t1", 1, t += MIN, 100, 40, f), 1); /* partition counts too */
    CHECK_EQ_INT(st.n_sources, 4);
    CHECK(has_source(&st, 0, "t1", 1, 40));
    CHECK(has_source(&st, 1, "t3", 0, 30));
    CHECK(has_source(&st, 2, "t2", 0, 20));
    CHECK(has_source(&st, 3, "t1", 0, 10));

    /* Applying from a held source moves it to the front with its new offset. */
    CHECK_EQ_INT(apply_src(&st, "t2", 0, t += MIN, 100, 21, f), 1);
    CHECK(has_source(&st, 0, "t2", 0, 21));
    CHECK(has_source(&st, 1, "t1", 1, 40));
    CHECK(has_source(&st, 2, "t3", 0, 30));
    CHECK(has_source(&st, 3, "t1", 0, 10));
    /* Moving the front source to the front changes only its offset. */
    CHECK_EQ_INT(apply_src(&st, "t2", 0, t += MIN, 100, 22, f), 1);
    CHECK(has_source(&st, 0, "t2", 0, 22));
    CHECK(has_source(&st, 1, "t1", 1, 40));
    /* A replay does not reorder. */
    memcpy(&snap, &st, sizeof st);
    CHECK_EQ_INT(apply_src(&st, "t1", 0, t, 100, 10, f), 0);
    CHECK(memcmp(&st, &snap, sizeof st) == 0);

    /* A fifth source: the last (t1/0, least recently applied) is dropped. */
    CHECK_EQ_INT(apply_src(&st, "t5", 0, t += MIN, 100, 50, f), 1);
    CHECK_EQ_INT(st.n_sources, 4);
    CHECK(has_source(&st, 0, "t5", 0, 50));
    CHECK(has_source(&st, 1, "t2", 0, 22));
    CHECK(has_source(&st, 2, "t1", 1, 40));
    CHECK(has_source(&st, 3, "t3", 0, 30));
    CHECK(f[RF_FEAT_CUST_COUNT_1H] == 7.0);

    /* The dropped source's redelivery is applied again (counted twice) and re-enters at the
     * front, pushing out t3/0. */
    CHECK_EQ_INT(apply_src(&st, "t1", 0, t, 100, 10, f), 1);
    CHECK(f[RF_FEAT_CUST_COUNT_1H] == 8.0);
    CHECK(has_source(&st, 0, "t1", 0, 10));
    CHECK(has_source(&st, 1, "t5", 0, 50));
    CHECK(has_source(&st, 2, "t2", 0, 22));
    CHECK(has_source(&st, 3, "t1", 1, 40));
    /* The held ones are still protected. */
    CHECK_EQ_INT(apply_src(&st, "t2", 0, t, 100, 22, f), 0);
    CHECK_EQ_INT(apply_src(&st, "t1", 1, t, 100, 39, f), 0);
    CHECK_EQ_INT(apply_src(&st, "t5", 0, t, 100, 50, f), 0);

    /* The order survives the wire. */
    uint8_t buf[RF_CUST_STATE_SIZE];
    struct rf_cust_state back;
    rf_cust_state_pack(&st, buf);
    memset(&back, 0x77, sizeof back);
    CHECK_EQ_INT(rf_cust_state_unpack(&back, buf, sizeof buf), 0);
    CHECK(memcmp(&st, &back, sizeof st) == 0);
}

static void test_negative_times(void) {
    struct rf_cust_state st;
    double f[RF_FEAT__N];

    rf_cust_state_init(&st);
    apply(&st, -1, 100, 1, f);
    CHECK_EQ_INT(st.head_5m, -1);
    CHECK_EQ_INT(st.head_1h, -1);
    CHECK_EQ_INT(st.cnt_5m[11], 1);
    CHECK_EQ_INT(st.cnt_1h[23], 1);
    /* -300000 is the first ms of tile -1, -300001 the last of tile -2. */
    apply(&st, -RF_TILE_5M_MS, 100, 2, f);
    CHECK_EQ_INT(st.cnt_5m[11], 2);
    apply(&st, -RF_TILE_5M_MS - 1, 100, 3, f);
    CHECK_EQ_INT(st.cnt_5m[10], 1);
    /* Crossing the epoch: tile 11 is 12 tiles after tile -1. */
    apply(&st, 11 * RF_TILE_5M_MS, 100, 4, f);
    CHECK_EQ_INT(st.head_5m, 11);
    CHECK(f[RF_FEAT_CUST_COUNT_1H] == 1.0); /* tiles 0..11: -1 and -2 are out */
    CHECK(f[RF_FEAT_CUST_COUNT_24H] == 4.0);
}

static void test_pack_roundtrip(void) {
    struct rf_cust_state st, back;
    uint8_t buf[RF_CUST_STATE_SIZE];
    double f[RF_FEAT__N];

    rf_cust_state_init(&st);
    rf_cust_state_pack(&st, buf);
    memset(&back, 0x5a, sizeof back);
    CHECK_EQ_INT(rf_cust_state_unpack(&back, buf, sizeof buf), 0);
    CHECK(memcmp(&st, &back, sizeof st) == 0);

    struct rf_payment p = pay(T0, -2500); /* a refund-like negative amount */
    rf_features_apply(&st, &p, rf_feature_topic_id("refunds"), 9, 77, f);
    CHECK(f[RF_FEAT_LOG_AMOUNT] == 0.0); /* log1p(max(amount, 0)): no NaN into the model */
    CHECK_NEAR(f[RF_FEAT_AMOUNT], -25.0, 0, 0);
    apply(&st, T0 + 3 * HOUR, 123456789, 78, f);
    apply(&st, T0 + 3 * HOUR + 7 * MIN, 5, 79, f);
    rf_cust_state_pack(&st, buf);
    memset(&back, 0x5a, sizeof back);
    CHECK_EQ_INT(rf_cust_state_unpack(&back, buf, sizeof buf), 0);
    CHECK(memcmp(&st, &back, sizeof st) == 0);

    /* And scoring continues identically from the unpacked copy. */
    double g[RF_FEAT__N];
    apply(&st, T0 + 4 * HOUR, 700, 80, f);
    apply(&back, T0 + 4 * HOUR, 700, 80, g);
    CHECK(memcmp(f, g, sizeof f) == 0);
    CHECK(memcmp(&st, &back, sizeof st) == 0);
}

static void test_pack_golden(void) {
    struct rf_cust_state st;
    uint8_t buf[RF_CUST_STATE_SIZE];

    rf_cust_state_init(&st);
    st.n_sources = 2;
    st.sources[0].topic_id = 0x11223344u;
    st.sources[0].partition = 7;
    st.sources[0].offset = 0x0102030405060708LL;
    st.sources[1].topic_id = 0xdeadbeefu;
    st.sources[1].partition = -1;
    st.sources[1].offset = -2;
    /* Garbage in an unused slot: written as zeros all the same. */
    st.sources[2].topic_id = 0x99999999u;
    st.sources[2].partition = 99;
    st.sources[2].offset = 99;
    st.head_5m = -2;
    st.head_1h = 0x0a0b0c0d;
    st.cnt_5m[0] = 0xaabbccddu;
    st.sum_5m[1] = -2;
    st.cnt_1h[23] = 5;
    st.sum_1h[23] = 0x1122334455667788LL;
    memset(buf, 0xee, sizeof buf);
    rf_cust_state_pack(&st, buf);

    static const uint8_t head[] = {
        0x52, 0x46, 0x43, 0x31,                         /* 0   magic "RFC1" */
        0x02, 0x00, 0x02, 0x00,                         /* 4   version 2, n_sources 2 */
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x80, /* 8   last_event_ms INT64_MIN */
        0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, /* 16  head_5m -2 */
        0x0d, 0x0c, 0x0b, 0x0a, 0x00, 0x00, 0x00, 0x00, /* 24  head_1h */
        0x44, 0x33, 0x22, 0x11, 0x07, 0x00, 0x00, 0x00, /* 32  sources[0] topic_id, partition */
        0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01, /* 40  sources[0] offset */
        0xef, 0xbe, 0xad, 0xde, 0xff, 0xff, 0xff, 0xff, /* 48  sources[1] topic_id, -1 */
        0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, /* 56  sources[1] offset -2 */
    };
    CHECK(memcmp(buf, head, sizeof head) == 0);
    for (int i = 64; i < 96; i++) /* sources[2], sources[3]: unused, zero */
        CHECK(buf[i] == 0);
    static const uint8_t cnt5_0[] = {0xdd, 0xcc, 0xbb, 0xaa};
    CHECK(memcmp(buf + 96, cnt5_0, 4) == 0);
    static const uint8_t sum5_1[] = {0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
    CHECK(memcmp(buf + 144 + 8, sum5_1, 8) == 0);
    static const uint8_t cnt1h_23[] = {0x05, 0x00, 0x00, 0x00};
    CHECK(memcmp(buf + 240 + 4 * 23, cnt1h_23, 4) == 0);
    static const uint8_t sum1h_23[] = {0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11};
    CHECK(memcmp(buf + 336 + 8 * 23, sum1h_23, 8) == 0);
    CHECK_EQ_INT(336 + 8 * 24, RF_CUST_STATE_SIZE);
    /* Every other count and sum is zero: the only non-zero bytes are the ones above. */
    int nonzero = 0;
    for (int i = 96; i < RF_CUST_STATE_SIZE; i++)
        nonzero += buf[i] != 0;
    CHECK_EQ_INT(nonzero, 4 + 8 + 1 + 8);

    /* A fresh state: n_sources 0, no slot written. */
    rf_cust_state_init(&st);
    rf_cust_state_pack(&st, buf);
    CHECK(buf[6] == 0 && buf[7] == 0);
    for (int i = 32; i < 96; i++)
        CHECK(buf[i] == 0);
    CHECK(buf[23] == 0x80 && buf[31] == 0x80); /* INT64_MIN heads */
}

static void test_unpack_rejects(void) {
    struct rf_cust_state st, sentinel;
    uint8_t buf[RF_CUST_STATE_SIZE + 1];
    double f[RF_FEAT__N];

    rf_cust_state_init(&st);
    apply(&st, T0, 100, 1, f);
    rf_cust_state_pack(&st, buf);
    buf[RF_CUST_STATE_SIZE] = 0;
    memset(&sentinel, 0x3c, sizeof sentinel);

    struct rf_cust_state out;
    memcpy(&out, &sentinel, sizeof out); /* memcpy, not =: padding bytes must match too */
    CHECK_EQ_INT(rf_cust_state_unpack(&out, buf, RF_CUST_STATE_SIZE - 1), RF_E_MALFORMED);
    CHECK_EQ_INT(rf_cust_state_unpack(&out, buf, RF_CUST_STATE_SIZE + 1), RF_E_MALFORMED);
    CHECK_EQ_INT(rf_cust_state_unpack(&out, buf, 0), RF_E_MALFORMED);
    CHECK_EQ_INT(rf_cust_state_unpack(&out, buf, 480), RF_E_MALFORMED); /* a version-1 size */
    CHECK_EQ_INT(rf_cust_state_unpack(&out, NULL, RF_CUST_STATE_SIZE), RF_E_MALFORMED);
    CHECK(memcmp(&out, &sentinel, sizeof out) == 0);

    buf[3] = 0x32; /* "RFC2" */
    CHECK_EQ_INT(rf_cust_state_unpack(&out, buf, RF_CUST_STATE_SIZE), RF_E_MALFORMED);
    CHECK(memcmp(&out, &sentinel, sizeof out) == 0);
    buf[3] = 0x31;

    buf[4] = 1; /* version 1: the old (partition, offset) layout */
    CHECK_EQ_INT(rf_cust_state_unpack(&out, buf, RF_CUST_STATE_SIZE), RF_E_MALFORMED);
    buf[4] = 3;
    CHECK_EQ_INT(rf_cust_state_unpack(&out, buf, RF_CUST_STATE_SIZE), RF_E_MALFORMED);
    buf[4] = 2;
    buf[5] = 1; /* version 258: the high byte counts too */
    CHECK_EQ_INT(rf_cust_state_unpack(&out, buf, RF_CUST_STATE_SIZE), RF_E_MALFORMED);
    buf[5] = 0;
    CHECK(memcmp(&out, &sentinel, sizeof out) == 0);

    buf[6] = 5; /* n_sources 5 > RF_STATE_SOURCES */
    CHECK_EQ_INT(rf_cust_state_unpack(&out, buf, RF_CUST_STATE_SIZE), RF_E_MALFORMED);
    buf[6] = 0;
    buf[7] = 1; /* n_sources 256 */
    CHECK_EQ_INT(rf_cust_state_unpack(&out, buf, RF_CUST_STATE_SIZE), RF_E_MALFORMED);
    buf[7] = 0;
    CHECK(memcmp(&out, &sentinel, sizeof out) == 0);

    buf[6] = 1;
    CHECK_EQ_INT(rf_cust_state_unpack(&out, buf, RF_CUST_STATE_SIZE), 0);
    CHECK(memcmp(&out, &st, sizeof out) == 0);

    /* n_sources 4 with all four slots: accepted, all read. */
    uint8_t full[RF_CUST_STATE_SIZE];
    memcpy(full, buf, sizeof full);
    full[6] = 4;
    for (int i = 1; i < 4; i++)
        full[32 + 16 * i] = (uint8_t)(0x10 + i);
    CHECK_EQ_INT(rf_cust_state_unpack(&out, full, sizeof full), 0);
    CHECK_EQ_INT(out.n_sources, 4);
    CHECK_EQ_INT(out.sources[3].topic_id, 0x13);

    /* Bytes of unused source slots are not read: memory keeps them zero, and a re-pack
     * writes zeros. */
    buf[32 + 16 * 3] = 0x5a;
    buf[32 + 16 * 2 + 9] = 0x5a;
    CHECK_EQ_INT(rf_cust_state_unpack(&out, buf, RF_CUST_STATE_SIZE), 0);
    CHECK(memcmp(&out, &st, sizeof out) == 0);
    uint8_t again[RF_CUST_STATE_SIZE];
    rf_cust_state_pack(&out, again);
    CHECK(again[32 + 16 * 3] == 0 && again[32 + 16 * 2 + 9] == 0);
}

/*
 * The oracle: every applied event of a customer, and the window definition from features.h —
 * an applied event counts when its tile index is in (head - N, head], head being the largest
 * tile index applied. Events that were too late when they arrived fall out of that interval
 * by themselves, since head never decreases.
 *
 * Replays, from the text rather than the list the state keeps: every source ever applied has
 * its last applied offset and the time (a counter) it was last applied; the sources "held"
 * are the RF_STATE_SOURCES most recently applied. An event is a replay when its source is
 * held and its offset is at or below that source's.
 */
struct brute_ev {
    int64_t t;
    int64_t amount;
};

#define BRUTE_SOURCES 16

struct brute_src {
    uint32_t topic_id;
    int32_t partition;
    int64_t offset; /* last applied */
    uint64_t stamp; /* when last applied: larger is more recent */
};

struct brute {
    struct brute_ev *ev;
    int n;
    int cap;
    struct brute_src src[BRUTE_SOURCES];
    int n_src;
    uint64_t clock;
    int64_t max_t;
    int any;
};

static int64_t fdiv(int64_t a, int64_t b) {
    int64_t q = a / b;
    return (a % b != 0 && a < 0) ? q - 1 : q;
}

static void brute_window(const struct brute *b, int64_t tile_ms, int n_tiles, double *cnt,
                         double *sum) {
    int64_t head = INT64_MIN;
    for (int i = 0; i < b->n; i++) {
        int64_t ti = fdiv(b->ev[i].t, tile_ms);
        if (ti > head)
            head = ti;
    }
    int64_t c = 0, s = 0;
    for (int i = 0; i < b->n; i++) {
        int64_t ti = fdiv(b->ev[i].t, tile_ms);
        if (ti > head - n_tiles) {
            c++;
            s += b->ev[i].amount;
        }
    }
    *cnt = (double)c;
    *sum = (double)s / 100.0;
}

/* Rank of source i by recency: 0 for the most recently applied. */
static int brute_rank(const struct brute *b, int i) {
    int r = 0;
    for (int k = 0; k < b->n_src; k++)
        r += b->src[k].stamp > b->src[i].stamp;
    return r;
}

/* Expected vector for p; applies it to b unless it is a replay. Returns 1 when applied. */
static int brute_apply(struct brute *b, const struct rf_payment *p, uint32_t topic_id,
                       int32_t partition, int64_t offset, double out[RF_FEAT__N]) {
    int si = -1;
    for (int k = 0; k < b->n_src; k++) {
        if (b->src[k].topic_id == topic_id && b->src[k].partition == partition)
            si = k;
    }
    int held = si >= 0 && brute_rank(b, si) < RF_STATE_SOURCES;
    int applied = !(held && offset <= b->src[si].offset);
    int64_t prev = b->any ? b->max_t : INT64_MIN;
    if (applied) {
        if (b->n == b->cap) {
            b->cap = b->cap ? 2 * b->cap : 64;
            b->ev = realloc(b->ev, (size_t)b->cap * sizeof *b->ev);
            if (!b->ev)
                abort(); /* the test cannot go on without its oracle */
        }
        b->ev[b->n].t = p->event_time_ms;
        b->ev[b->n].amount = p->amount_minor;
        b->n++;
        if (si < 0) {
            if (b->n_src == BRUTE_SOURCES)
                abort(); /* the generator uses fewer sources */
            si = b->n_src++;
            b->src[si].topic_id = topic_id;
            b->src[si].partition = partition;
        }
        b->src[si].offset = offset;
        b->src[si].stamp = ++b->clock;
        if (!b->any || p->event_time_ms > b->max_t)
            b->max_t = p->event_time_ms;
        b->any = 1;
    }
    double amount = (double)p->amount_minor / 100.0;
    out[RF_FEAT_AMOUNT] = amount;
    out[RF_FEAT_LOG_AMOUNT] = log1p(amount > 0 ? amount : 0.0); /* features.h: max(amount, 0) */
    brute_window(b, 5 * MIN, 12, &out[RF_FEAT_CUST_COUNT_1H], &out[RF_FEAT_CUST_SUM_1H]);
    brute_window(b, HOUR, 24, &out[RF_FEAT_CUST_COUNT_24H], &out[RF_FEAT_CUST_SUM_24H]);
    double secs = 30.0 * 86400.0;
    if (prev != INT64_MIN) {
        secs = (double)(p->event_time_ms - prev) / 1000.0;
        secs = secs < 0 ? 0 : secs > 30.0 * 86400.0 ? 30.0 * 86400.0 : secs;
    }
    out[RF_FEAT_CUST_SECS_SINCE_LAST] = secs;
    double mean = out[RF_FEAT_CUST_COUNT_24H] > 0
                      ? out[RF_FEAT_CUST_SUM_24H] / out[RF_FEAT_CUST_COUNT_24H]
                      : 0.0;
    out[RF_FEAT_CUST_AMOUNT_RATIO_24H] = mean != 0.0 ? amount / mean : 1.0;
    out[RF_FEAT_IS_ECOM] = p->channel == RF_CHANNEL_ECOM;
    int64_t ms_of_day = p->event_time_ms - fdiv(p->event_time_ms, DAY) * DAY;
    out[RF_FEAT_IS_NIGHT] = ms_of_day < 6 * HOUR;
    out[RF_FEAT_IS_CASH] = p->kind == RF_KIND_CASH_WITHDRAWAL;
    return applied;
}

/* st's watermarks are the oracle's held sources, most recent first. */
static int brute_sources_match(const struct brute *b, const struct rf_cust_state *st) {
    int want_n = b->n_src < RF_STATE_SOURCES ? b->n_src : RF_STATE_SOURCES;
    if (st->n_sources != want_n)
        return 0;
    for (int k = 0; k < b->n_src; k++) {
        int r = brute_rank(b, k);
        if (r >= RF_STATE_SOURCES)
            continue;
        if (st->sources[r].topic_id != b->src[k].topic_id ||
            st->sources[r].partition != b->src[k].partition ||
            st->sources[r].offset != b->src[k].offset)
            return 0;
    }
    return 1;
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint64_t rnd(void) {
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 2685821657736338717ull;
}

static int64_t rnd_range(int64_t n) {
    return (int64_t)(rnd() % (uint64_t)n);
}

#define N_CUST 8
#define N_EVENTS 10000
#define MAX_TOPICS 3
#define MAX_PARTS 2

static const char *const rnd_topics[MAX_TOPICS] = {"txn.cards", "txn.transfers", "txn.atm"};

/*
 * Customer c reads 2 or 3 topics (2 + c % 2). With parts_per_topic 1 it sits on one partition
 * of each (a different one per customer): at most 3 sources, all held, so every distinct
 * event must be applied exactly once. With 2, up to 6 sources: the oldest get dropped and
 * their redeliveries applied again, as the oracle says. Offsets per source increase with gaps
 * (other customers' events on the same partition).
 */
static void random_vs_brute(int parts_per_topic, int *replays_out, int *reapplied_out) {
    struct rf_cust_state st[N_CUST];
    struct brute br[N_CUST];
    int64_t now[N_CUST];
    int64_t next_offset[N_CUST][MAX_TOPICS][MAX_PARTS];
    int64_t last_offset[N_CUST][MAX_TOPICS][MAX_PARTS];
    int mismatches = 0, replays = 0, lates = 0, reapplied = 0, switches = 0;
    int last_topic[N_CUST];

    memset(br, 0, sizeof br);
    memset(next_offset, 0, sizeof next_offset);
    memset(last_offset, 0, sizeof last_offset);
    for (int c = 0; c < N_CUST; c++) {
        rf_cust_state_init(&st[c]);
        /* Customer 0 starts two days before the epoch and crosses it. */
        now[c] = c == 0 ? -2 * DAY + rnd_range(HOUR) : T0 + rnd_range(DAY);
        last_topic[c] = -1;
    }

    for (int i = 0; i < N_EVENTS; i++) {
        int c = (int)rnd_range(N_CUST);
        int n_topics = 2 + c % 2;
        int ti = (int)rnd_range(n_topics);
        int pi = parts_per_topic == 1 ? 0 : (int)rnd_range(parts_per_topic);
        int32_t partition = (int32_t)(parts_per_topic == 1 ? c % 4 : pi);
        int64_t *next = &next_offset[c][ti][pi];
        int64_t r = rnd_range(1000);
        struct rf_payment p;
        int64_t offset;
        int redelivery = r < 40 && *next > 0;

        if (redelivery) {
            /* Redelivery of an offset at or below the source's last one (the gaps are other
             * customers' events, not redelivered to this one): the content does not matter. */
            int64_t last = last_offset[c][ti][pi];
            offset = last - rnd_range(last < 50 ? last + 1 : 50);
            p = pay(now[c] - rnd_range(HOUR), 1 + rnd_range(100000));
            replays++;
        } else {
            int64_t t;
            if (r < 160) {
                /* Late: up to 30 h behind this customer's clock — inside the windows, past
                 * the 1 h one, or past both. */
                t = now[c] - rnd_range(30 * HOUR);
                lates++;
            } else {
                int64_t g = rnd_range(100);
                int64_t gap = g < 60 ? rnd_range(10 * MIN) : g < 90 ? rnd_range(3 * HOUR)
                              : g < 98 ? rnd_range(2 * DAY) : rnd_range(40 * DAY);
                now[c] += gap;
                t = now[c];
            }
            int64_t amount = rnd_range(20) == 0 ? -rnd_range(50000) : 1 + rnd_range(2000000);
            p = pay(t, amount);
            offset = *next;
            last_offset[c][ti][pi] = offset;
            *next += 1 + rnd_range(3);
        }
        p.channel = (enum rf_channel)rnd_range(RF_CHANNEL__N);
        p.kind = (enum rf_payment_kind)rnd_range(RF_KIND__N);
        switches += last_topic[c] >= 0 && last_topic[c] != ti;
        last_topic[c] = ti;

        /* Sometimes the state goes through Redis between events. */
        if (rnd_range(4) == 0) {
            uint8_t buf[RF_CUST_STATE_SIZE];
            rf_cust_state_pack(&st[c], buf);
            memset(&st[c], 0, sizeof st[c]);
            if (rf_cust_state_unpack(&st[c], buf, sizeof buf) != 0)
                mismatches++;
        }

        uint32_t topic_id = rf_feature_topic_id(rnd_topics[ti]);
        double got[RF_FEAT__N], want[RF_FEAT__N];
        struct rf_cust_state before;
        memcpy(&before, &st[c], sizeof before);
        int applied = rf_features_apply(&st[c], &p, topic_id, partition, offset, got);
        int want_applied = brute_apply(&br[c], &p, topic_id, partition, offset, want);
        if (applied != want_applied)
            mismatches++;
        if (applied && redelivery)
            reapplied++; /* a redelivery applied again: only from a dropped source */
        if (!applied && memcmp(&before, &st[c], sizeof before) != 0)
            mismatches++;
        if (!brute_sources_match(&br[c], &st[c])) {
            if (mismatches < 20)
                fprintf(stderr, "event %d cust %d: watermarks differ from the oracle\n", i, c);
            mismatches++;
        }
        for (int k = 0; k < RF_FEAT__N; k++) {
            int same = got[k] == want[k] || (isnan(got[k]) && isnan(want[k]));
            if (!same && mismatches < 20)
                fprintf(stderr, "event %d cust %d offset %lld: %s = %.17g, brute %.17g\n", i,
                        c, (long long)offset, rf_feature_name(k), got[k], want[k]);
            mismatches += !same;
        }
    }
    CHECK_EQ_INT(mismatches, 0);
    CHECK(replays > 100);
    CHECK(lates > 500);
    CHECK(switches > 1000); /* topics really interleave per customer */
    *replays_out = replays;
    *reapplied_out = reapplied;
    for (int c = 0; c < N_CUST; c++)
        free(br[c].ev);
}

static void test_random_vs_brute(void) {
    int replays, reapplied;
    /* 2-3 topics per customer, one partition each: no source is ever dropped. */
    random_vs_brute(1, &replays, &reapplied);
    CHECK_EQ_INT(reapplied, 0);
}

static void test_random_vs_brute_evictions(void) {
    int replays, reapplied;
    /* 2-3 topics x 2 partitions per customer: up to 6 sources, so some are dropped. */
    random_vs_brute(2, &replays, &reapplied);
    CHECK(reapplied > 0); /* the eviction path really ran */
    CHECK(reapplied < replays);
}

RF_TEST_MAIN(RF_TEST(test_catalogue_names), RF_TEST(test_topic_id), RF_TEST(test_init),
             RF_TEST(test_first_event), RF_TEST(test_flags), RF_TEST(test_same_tile),
             RF_TEST(test_ratio_zero_mean), RF_TEST(test_rollover_1h),
             RF_TEST(test_rollover_24h), RF_TEST(test_late_event), RF_TEST(test_too_late_event),
             RF_TEST(test_replay), RF_TEST(test_two_topics_same_partition),
             RF_TEST(test_interleaved_sources), RF_TEST(test_sources_mru_and_eviction),
             RF_TEST(test_negative_times), RF_TEST(test_pack_roundtrip),
             RF_TEST(test_pack_golden), RF_TEST(test_unpack_rejects),
             RF_TEST(test_random_vs_brute), RF_TEST(test_random_vs_brute_evictions))
