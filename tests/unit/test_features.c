/*
 * test_features.c — the rolling customer state against hand-computed values and a brute-force
 * oracle.
 *
 * Covers every catalogue feature, tile boundaries of both windows, late and too-late events,
 * replays, the wire layout byte by byte, and a randomized run (increasing times, late events,
 * redeliveries, times on both sides of the epoch) checked against a definition-level
 * implementation that keeps every event. No network, single thread.
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

static int apply(struct rf_cust_state *st, int64_t t_ms, int64_t amount_minor, int64_t offset,
                 double out[RF_FEAT__N]) {
    struct rf_payment p = pay(t_ms, amount_minor);
    return rf_features_apply(st, &p, 0, offset, out);
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
    CHECK_EQ_INT(st.last_partition, -1);
    CHECK_EQ_INT(st.last_offset, -1);
    CHECK(st.last_event_ms == INT64_MIN);
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

    CHECK_EQ_INT(rf_features_apply(&st, &p, 3, 10, f), 1);
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

    CHECK_EQ_INT(st.last_partition, 3);
    CHECK_EQ_INT(st.last_offset, 10);
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
        rf_features_apply(&st, &p, 0, 0, f);
        CHECK_EQ_INT(f[RF_FEAT_IS_ECOM], ch == RF_CHANNEL_ECOM);
    }
    for (int k = 0; k < RF_KIND__N; k++) {
        struct rf_payment p = pay(T0, 100);
        p.kind = (enum rf_payment_kind)k;
        rf_cust_state_init(&st);
        rf_features_apply(&st, &p, 0, 0, f);
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
    st.last_partition = 0;
    st.last_offset = 10;
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
    CHECK_EQ_INT(st.last_offset, 2);

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
    CHECK_EQ_INT(st.last_offset, 2);

    /* Two days late: in no window at all, yet applied (the offset advances). */
    memcpy(&before, &st, sizeof st);
    CHECK_EQ_INT(apply(&st, T0 - 2 * DAY, 5000, 3, f), 1);
    CHECK_EQ_INT(st.last_offset, 3);
    CHECK_EQ_INT(st.last_event_ms, T0 + 2 * HOUR);
    before.last_offset = 3;
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
    struct rf_payment p = pay(T0 + 7 * MIN, 100);
    CHECK_EQ_INT(rf_features_apply(&st, &p, 1, 0, g), 1);
    CHECK_EQ_INT(st.last_partition, 1);
    CHECK_EQ_INT(st.last_offset, 0);
    CHECK(g[RF_FEAT_CUST_COUNT_1H] == 7.0);
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
    rf_features_apply(&st, &p, 9, 77, f);
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
    st.last_partition = 7;
    st.last_offset = 0x0102030405060708LL;
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
        0x01, 0x00, 0x00, 0x00,                         /* 4   version 1, reserved */
        0x07, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, /* 8   partition 7, reserved */
        0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01, /* 16  last_offset */
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x80, /* 24  last_event_ms INT64_MIN */
        0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, /* 32  head_5m -2 */
        0x0d, 0x0c, 0x0b, 0x0a, 0x00, 0x00, 0x00, 0x00, /* 40  head_1h */
        0xdd, 0xcc, 0xbb, 0xaa,                         /* 48  cnt_5m[0] */
    };
    CHECK(memcmp(buf, head, sizeof head) == 0);
    static const uint8_t sum5_1[] = {0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
    CHECK(memcmp(buf + 96 + 8, sum5_1, 8) == 0);
    static const uint8_t cnt1h_23[] = {0x05, 0x00, 0x00, 0x00};
    CHECK(memcmp(buf + 192 + 4 * 23, cnt1h_23, 4) == 0);
    static const uint8_t sum1h_23[] = {0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11};
    CHECK(memcmp(buf + 288 + 8 * 23, sum1h_23, 8) == 0);
    /* Every other count and sum is zero: the only non-zero bytes are the ones above. */
    int nonzero = 0;
    for (int i = 52; i < RF_CUST_STATE_SIZE; i++)
        nonzero += buf[i] != 0;
    CHECK_EQ_INT(nonzero, 8 + 1 + 8);

    st.last_partition = -1;
    rf_cust_state_pack(&st, buf);
    CHECK(buf[8] == 0xff && buf[9] == 0xff && buf[10] == 0xff && buf[11] == 0xff);
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
    CHECK(memcmp(&out, &sentinel, sizeof out) == 0);

    buf[3] = 0x32; /* "RFC2" */
    CHECK_EQ_INT(rf_cust_state_unpack(&out, buf, RF_CUST_STATE_SIZE), RF_E_MALFORMED);
    CHECK(memcmp(&out, &sentinel, sizeof out) == 0);
    buf[3] = 0x31;

    buf[4] = 2; /* version 2 */
    CHECK_EQ_INT(rf_cust_state_unpack(&out, buf, RF_CUST_STATE_SIZE), RF_E_MALFORMED);
    buf[4] = 1;
    buf[5] = 1; /* version 257: the high byte counts too */
    CHECK_EQ_INT(rf_cust_state_unpack(&out, buf, RF_CUST_STATE_SIZE), RF_E_MALFORMED);
    buf[5] = 0;
    CHECK(memcmp(&out, &sentinel, sizeof out) == 0);

    /* Reserved bytes are ignored (room for a later writer), not rejected. */
    buf[6] = 0x11;
    buf[12] = 0x22;
    CHECK_EQ_INT(rf_cust_state_unpack(&out, buf, RF_CUST_STATE_SIZE), 0);
    CHECK(memcmp(&out, &st, sizeof out) == 0);
}

/*
 * The oracle: every applied event of a customer, and the window definition from features.h —
 * an applied event counts when its tile index is in (head - N, head], head being the largest
 * tile index applied. Events that were too late when they arrived fall out of that interval
 * by themselves, since head never decreases.
 */
struct brute_ev {
    int64_t t;
    int64_t amount;
};

struct brute {
    struct brute_ev *ev;
    int n;
    int cap;
    int64_t last_offset;
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

/* Expected vector for p; applies it to b unless it is a replay. Returns 1 when applied. */
static int brute_apply(struct brute *b, const struct rf_payment *p, int64_t offset,
                       double out[RF_FEAT__N]) {
    int applied = offset > b->last_offset;
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
        b->last_offset = offset;
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

static void test_random_vs_brute(void) {
    struct rf_cust_state st[N_CUST];
    struct brute br[N_CUST];
    int64_t now[N_CUST];
    int64_t next_offset[N_CUST];
    int mismatches = 0, replays = 0, lates = 0;

    memset(br, 0, sizeof br);
    for (int c = 0; c < N_CUST; c++) {
        rf_cust_state_init(&st[c]);
        br[c].last_offset = -1;
        /* Customer 0 starts two days before the epoch and crosses it. */
        now[c] = c == 0 ? -2 * DAY + rnd_range(HOUR) : T0 + rnd_range(DAY);
        next_offset[c] = 0;
    }

    for (int i = 0; i < N_EVENTS; i++) {
        int c = (int)rnd_range(N_CUST);
        int64_t r = rnd_range(1000);
        struct rf_payment p;
        int64_t offset;

        if (r < 40 && next_offset[c] > 0) {
            /* Redelivery of an earlier offset: the event's content does not matter. */
            offset = next_offset[c] - 1 - rnd_range(next_offset[c] < 50 ? next_offset[c] : 50);
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
            offset = next_offset[c]++;
        }
        p.channel = (enum rf_channel)rnd_range(RF_CHANNEL__N);
        p.kind = (enum rf_payment_kind)rnd_range(RF_KIND__N);

        /* Sometimes the state goes through Redis between events. */
        if (rnd_range(4) == 0) {
            uint8_t buf[RF_CUST_STATE_SIZE];
            rf_cust_state_pack(&st[c], buf);
            memset(&st[c], 0, sizeof st[c]);
            if (rf_cust_state_unpack(&st[c], buf, sizeof buf) != 0)
                mismatches++;
        }

        double got[RF_FEAT__N], want[RF_FEAT__N];
        struct rf_cust_state before;
        memcpy(&before, &st[c], sizeof before);
        int applied = rf_features_apply(&st[c], &p, 0, offset, got);
        int want_applied = brute_apply(&br[c], &p, offset, want);
        if (applied != want_applied)
            mismatches++;
        if (!applied && memcmp(&before, &st[c], sizeof before) != 0)
            mismatches++;
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
    for (int c = 0; c < N_CUST; c++)
        free(br[c].ev);
}

RF_TEST_MAIN(RF_TEST(test_catalogue_names), RF_TEST(test_init), RF_TEST(test_first_event),
             RF_TEST(test_flags), RF_TEST(test_same_tile), RF_TEST(test_ratio_zero_mean),
             RF_TEST(test_rollover_1h), RF_TEST(test_rollover_24h), RF_TEST(test_late_event),
             RF_TEST(test_too_late_event), RF_TEST(test_replay), RF_TEST(test_negative_times),
             RF_TEST(test_pack_roundtrip), RF_TEST(test_pack_golden),
             RF_TEST(test_unpack_rejects), RF_TEST(test_random_vs_brute))
