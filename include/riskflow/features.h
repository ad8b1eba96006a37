/*
 * features.h — per-customer rolling features: the state, its wire layout, and the math.
 *
 * Owns the definition of every feature the models may read (the catalogue below) and the
 * compact binary value that holds one customer's state in Redis (design.md §10: one value per
 * entity, watermark inside it, read on a cache miss, written back in coalesced flushes).
 * Pure functions over caller-owned memory: no allocation, no I/O, any thread.
 *
 * Windows are tiles (fixed buckets), not event lists, so the state has a fixed size:
 *   1 h  window = 12 tiles of 5 minutes     (tile index = floor(event_time_ms / 300000))
 *   24 h window = 24 tiles of 1 hour        (tile index = floor(event_time_ms / 3600000))
 * Each window keeps a ring of N tiles and a head: the largest tile index seen. An event with
 * tile index ti:
 *   - ti > head: the tiles between move out of the window (zeroed), head = ti;
 *   - head - N < ti <= head: added to its tile (a late event inside the window);
 *   - ti <= head - N: too late for this window; it still counts as applied.
 * A window's count/sum is the total over its ring (everything in the ring is inside it), i.e.
 * over events whose tile index is in (head - N, head]. With event times increasing per
 * customer this is "the events of the last 12 five-minute tiles / 24 hour tiles, this one
 * included".
 *
 * Replays: the state keeps a watermark per source — a source is one (topic, partition), the
 * topic named by topic_id = rf_feature_topic_id(topic name) — for up to RF_STATE_SOURCES
 * sources, most recently applied first. An event from a source the state holds, at or below
 * that source's offset, is a replay: not applied again (at-least-once redelivery must not
 * double-count), its features computed from the state as it stands. Any other event is
 * applied, and its source moves to the front with the event's offset (inserted at the front
 * when new; when RF_STATE_SOURCES are held already, the least recently applied — the last —
 * is dropped). Offsets of different topics or partitions are never compared, so a customer
 * fed by several input topics (input.topics=A,B) has every event applied once.
 * Limit: a customer fed from more than RF_STATE_SOURCES (topic, partition) sources loses
 * exact replay protection for the oldest: a redelivery from a dropped source is applied
 * again. (Keyed by customer, one customer normally has one partition per input topic.)
 *
 * Wire layout of the Redis value (little-endian, RF_CUST_STATE_SIZE = 528 bytes):
 *   0   u32 magic  0x31434652 ("RFC1")
 *   4   u16 version (2)      6  u16 n_sources (0..RF_STATE_SOURCES)
 *   8   i64 last_event_ms (INT64_MIN: no event yet)
 *   16  i64 head_5m           24  i64 head_1h   (INT64_MIN in a fresh state: no tile yet)
 *   32  sources[4], 16 bytes each, most recently applied first; slots >= n_sources are 0:
 *         +0 u32 topic_id     +4 i32 partition     +8 i64 offset (of the last event applied)
 *   96  u32 cnt_5m[12]        144 i64 sum_5m[12]   (amounts in minor units)
 *   240 u32 cnt_1h[24]        336 i64 sum_1h[24]
 * A value with another size, magic or version, or n_sources > RF_STATE_SOURCES, is rejected.
 * Redis key: "<prefix>:cust:{<customer_id>}" (hash tag keeps it on one Cluster slot).
 */
#ifndef RISKFLOW_FEATURES_H
#define RISKFLOW_FEATURES_H

#include <stddef.h>
#include <stdint.h>

#include "riskflow/event.h"

#define RF_TILES_5M 12
#define RF_TILE_5M_MS 300000LL
#define RF_TILES_1H 24
#define RF_TILE_1H_MS 3600000LL
#define RF_CUST_STATE_MAGIC 0x31434652u
#define RF_CUST_STATE_VERSION 2
#define RF_CUST_STATE_SIZE 528
#define RF_STATE_SOURCES 4 /* replay watermarks kept per customer */
#define RF_SECS_SINCE_LAST_CAP 2592000.0 /* 30 days: also the value when there is no previous */

/* In-memory form of one customer's state (host order; see rf_cust_state_pack/unpack). */
struct rf_cust_state {
    uint16_t n_sources; /* 0..RF_STATE_SOURCES: sources[0..n_sources) are in use */
    struct rf_source {
        uint32_t topic_id; /* rf_feature_topic_id() of the topic name */
        int32_t partition;
        int64_t offset; /* offset of the last event applied from this (topic, partition) */
    } sources[RF_STATE_SOURCES]; /* most recently applied first */
    int64_t last_event_ms;
    int64_t head_5m;
    int64_t head_1h;
    uint32_t cnt_5m[RF_TILES_5M];
    int64_t sum_5m[RF_TILES_5M];
    uint32_t cnt_1h[RF_TILES_1H];
    int64_t sum_1h[RF_TILES_1H];
};

/*
 * The feature catalogue. A model names the features it reads; rf_feature_lookup() maps a name
 * to its id. Values (double):
 *   amount                 amount_minor / 100
 *   log_amount             log1p(max(amount, 0)): a negative amount (a reversal) must not
 *                          turn into NaN
 *   cust_count_1h          events in the 1 h window, this one included
 *   cust_sum_1h            sum of amount (major units) in the 1 h window, this one included
 *   cust_count_24h, cust_sum_24h   the same over 24 h
 *   cust_secs_since_last   (event_time - previous last_event_ms) / 1000, clamped to
 *                          [0, 30 days]; 30 days when there is no previous event
 *   cust_amount_ratio_24h  amount / (cust_sum_24h / cust_count_24h); 1 when that mean is 0
 *   is_ecom                1 if channel == ECOM else 0
 *   is_night               1 if the UTC hour of event_time is < 6 else 0
 *   is_cash                1 if kind == CASH_WITHDRAWAL else 0
 */
#define RF_FEATURE_LIST(X)     \
    X(AMOUNT, "amount")                   \
    X(LOG_AMOUNT, "log_amount")           \
    X(CUST_COUNT_1H, "cust_count_1h")     \
    X(CUST_SUM_1H, "cust_sum_1h")         \
    X(CUST_COUNT_24H, "cust_count_24h")   \
    X(CUST_SUM_24H, "cust_sum_24h")       \
    X(CUST_SECS_SINCE_LAST, "cust_secs_since_last") \
    X(CUST_AMOUNT_RATIO_24H, "cust_amount_ratio_24h") \
    X(IS_ECOM, "is_ecom")                 \
    X(IS_NIGHT, "is_night")               \
    X(IS_CASH, "is_cash")

enum rf_feature_id {
#define RF_FEAT_ENUM(id, name) RF_FEAT_##id,
    RF_FEATURE_LIST(RF_FEAT_ENUM)
#undef RF_FEAT_ENUM
        RF_FEAT__N
};

/* Catalogue id for a feature name, or RF_E_NOTFOUND. */
int rf_feature_lookup(const char *name);

/* Name of a catalogue id (static string), or NULL when out of range. */
const char *rf_feature_name(int id);

/* The source id of a topic: FNV-1a 32-bit over the bytes of its name (offset basis 2166136261,
 * prime 16777619). NULL hashes like "". Stable: it is stored in the customer state. */
uint32_t rf_feature_topic_id(const char *topic);

/* A fresh state: no event applied. */
void rf_cust_state_init(struct rf_cust_state *st);

/*
 * Apply payment p, read from (topic_id, partition, offset) — topic_id from
 * rf_feature_topic_id() — to st and compute the whole catalogue into out[RF_FEAT__N]. Returns
 * 1 when applied, 0 when it was a replay (state unchanged; out is computed from the state as
 * it stands). See "Replays" above.
 */
int rf_features_apply(struct rf_cust_state *st, const struct rf_payment *p, uint32_t topic_id,
                      int32_t partition, int64_t offset, double out[RF_FEAT__N]);

/* Serialise st into buf[RF_CUST_STATE_SIZE] (the wire layout above). */
void rf_cust_state_pack(const struct rf_cust_state *st, uint8_t buf[RF_CUST_STATE_SIZE]);

/* Parse a stored value. RF_E_MALFORMED for a wrong size, magic or version, or n_sources >
 * RF_STATE_SOURCES (st untouched). */
int rf_cust_state_unpack(struct rf_cust_state *st, const uint8_t *buf, size_t len);

#endif
