/*
 * metrics.c — the histogram arithmetic. Bucket b covers values whose top bits fall in
 * sub-bucket (b % RF_HIST_SUB) of power (b / RF_HIST_SUB); values below RF_HIST_SUB are exact.
 */
#include "riskflow/metrics.h"

static int bucket_of(uint64_t v) {
    if (v < RF_HIST_SUB)
        return (int)v;
    int pow = 63 - __builtin_clzll(v); /* >= 3 */
    int sub = (int)((v >> (pow - 3)) & (RF_HIST_SUB - 1));
    int b = (pow - 2) * RF_HIST_SUB + sub;
    return b < RF_HIST_BUCKETS ? b : RF_HIST_BUCKETS - 1;
}

static uint64_t bucket_upper(int b) {
    if (b < RF_HIST_SUB)
        return (uint64_t)b;
    int pow = b / RF_HIST_SUB + 2;
    uint64_t sub = (uint64_t)(b % RF_HIST_SUB);
    return ((RF_HIST_SUB + sub + 1) << (pow - 3)) - 1;
}

void rf_hist_add(struct rf_hist *h, uint64_t us) {
    h->count++;
    h->sum_us += us;
    if (us > h->max_us)
        h->max_us = us;
    h->buckets[bucket_of(us)]++;
}

uint64_t rf_hist_count_le(const struct rf_hist *h, uint64_t le_us) {
    uint64_t n = 0;
    for (int b = 0; b < RF_HIST_BUCKETS && bucket_upper(b) <= le_us; b++)
        n += h->buckets[b];
    return n;
}

uint64_t rf_hist_prom_edge(int i) {
    return ((uint64_t)1 << (8 + i)) - 1;
}

uint64_t rf_hist_quantile(const struct rf_hist *h, double q) {
    if (h->count == 0)
        return 0;
    uint64_t rank = (uint64_t)(q * (double)h->count);
    if (rank >= h->count)
        rank = h->count - 1;
    uint64_t seen = 0;
    for (int b = 0; b < RF_HIST_BUCKETS; b++) {
        seen += h->buckets[b];
        if (seen > rank) {
            uint64_t up = bucket_upper(b);
            return up < h->max_us ? up : h->max_us;
        }
    }
    return h->max_us;
}
