/*
 * features.c — per-customer rolling state: applying an event, computing the catalogue, and the
 * 528-byte wire form stored in Redis.
 *
 * Owns the tile arithmetic (floor division, ring slots, head advance) and the byte layout of
 * RF_CUST_STATE_*; the layout and semantics are specified in features.h and this file follows
 * that text to the letter. Runs on the loop thread, but every function is pure over caller
 * memory, so any thread may call it.
 *
 * Must never allocate, print or block: it runs once per event on the hot path. It must also
 * never trust a stored value beyond its size/magic/version: a corrupt or hostile head or sum
 * read from Redis may make features wrong, never undefined behaviour (hence the unsigned
 * differences and saturating sums below).
 */
#include "riskflow/features.h"

#include <math.h>
#include <string.h>

#include "riskflow/err.h"

#define MS_PER_DAY 86400000LL
#define MS_PER_HOUR 3600000LL

static const char *const names[RF_FEAT__N] = {
#define RF_FEAT_NAME(id, name) name,
    RF_FEATURE_LIST(RF_FEAT_NAME)
#undef RF_FEAT_NAME
};

/* Linear scan: 11 names, called only when a model loads. */
int rf_feature_lookup(const char *name) {
    if (!name)
        return RF_E_NOTFOUND;
    for (int i = 0; i < RF_FEAT__N; i++) {
        if (strcmp(names[i], name) == 0)
            return i;
    }
    return RF_E_NOTFOUND;
}

/* Static strings: valid forever, so models and outputs may borrow them. */
const char *rf_feature_name(int id) {
    if (id < 0 || id >= RF_FEAT__N)
        return NULL;
    return names[id];
}

/* FNV-1a 32-bit: tiny, stable and with no seed, so Python (tools/train/riskflow_features.py)
 * computes the same id. Collisions between two input topics' names are possible in principle
 * (1 in 2^32 per pair): their partitions would then share watermarks. */
uint32_t rf_feature_topic_id(const char *topic) {
    uint32_t h = 2166136261u;
    if (!topic)
        return h;
    for (const unsigned char *c = (const unsigned char *)topic; *c; c++) {
        h ^= *c;
        h *= 16777619u;
    }
    return h;
}

/* C division truncates toward zero; tiles and hours need floor so that times before the epoch
 * land in the tile that contains them rather than the one nearer zero. */
static int64_t floordiv(int64_t a, int64_t b) {
    int64_t q = a / b;
    if ((a % b != 0) && ((a < 0) != (b < 0)))
        q--;
    return q;
}

static int64_t floormod(int64_t a, int64_t b) {
    int64_t r = a % b;
    if (r != 0 && ((r < 0) != (b < 0)))
        r += b;
    return r;
}

/* Amounts come from the wire and sums from Redis: clamp instead of overflowing (signed
 * overflow is undefined, and a pinned sum is at least visibly absurd). */
static int64_t sat_add(int64_t a, int64_t b) {
    if (b > 0 && a > INT64_MAX - b)
        return INT64_MAX;
    if (b < 0 && a < INT64_MIN - b)
        return INT64_MIN;
    return a + b;
}

/* memset first so padding is zero too: states are compared and copied bytewise in tests. */
void rf_cust_state_init(struct rf_cust_state *st) {
    memset(st, 0, sizeof *st); /* n_sources 0, unused source slots 0 */
    st->last_event_ms = INT64_MIN;
    /* INT64_MIN heads make the first event of each window "far ahead", which clears the ring
     * through the same path as any long gap — no special first-event case. */
    st->head_5m = INT64_MIN;
    st->head_1h = INT64_MIN;
}

/*
 * Put one event into a window's ring. Differences between tile indexes are taken as uint64:
 * for a <= b, (uint64)b - (uint64)a is the exact distance even when b - a would overflow
 * int64 (INT64_MIN heads, hostile stored values).
 */
static void ring_add(int64_t *head, uint32_t *cnt, int64_t *sum, int n, int64_t tile_ms,
                     int64_t t_ms, int64_t amount) {
    int64_t ti = floordiv(t_ms, tile_ms);

    if (ti > *head) {
        uint64_t gap = (uint64_t)ti - (uint64_t)*head;
        if (gap >= (uint64_t)n) {
            memset(cnt, 0, (size_t)n * sizeof *cnt);
            memset(sum, 0, (size_t)n * sizeof *sum);
        } else {
            /* The slots of head+1 .. ti held tiles that are now n tiles old: recycle them. */
            for (uint64_t k = 1; k <= gap; k++) {
                int64_t slot = floormod(*head + (int64_t)k, n);
                cnt[slot] = 0;
                sum[slot] = 0;
            }
        }
        *head = ti;
    } else if ((uint64_t)*head - (uint64_t)ti >= (uint64_t)n) {
        return; /* older than the window: applied to the state, counted in no tile */
    }

    int64_t slot = floormod(ti, n);
    if (cnt[slot] < UINT32_MAX)
        cnt[slot]++;
    sum[slot] = sat_add(sum[slot], amount);
}

static void ring_total(const uint32_t *cnt, const int64_t *sum, int n, double *count,
                       double *total_major) {
    uint64_t c = 0;
    int64_t s = 0;
    for (int i = 0; i < n; i++) {
        c += cnt[i];
        s = sat_add(s, sum[i]);
    }
    *count = (double)c;
    *total_major = (double)s / 100.0;
}

/* The whole catalogue from p and the state as it stands (after applying p, or untouched on a
 * replay). prev_ms is the last_event_ms before p was applied. */
static void compute(const struct rf_cust_state *st, const struct rf_payment *p, int64_t prev_ms,
                    double out[RF_FEAT__N]) {
    double amount = (double)p->amount_minor / 100.0;

    out[RF_FEAT_AMOUNT] = amount;
    out[RF_FEAT_LOG_AMOUNT] = log1p(amount > 0 ? amount : 0.0); /* no NaN from a reversal */
    ring_total(st->cnt_5m, st->sum_5m, RF_TILES_5M, &out[RF_FEAT_CUST_COUNT_1H],
               &out[RF_FEAT_CUST_SUM_1H]);
    ring_total(st->cnt_1h, st->sum_1h, RF_TILES_1H, &out[RF_FEAT_CUST_COUNT_24H],
               &out[RF_FEAT_CUST_SUM_24H]);

    double secs = RF_SECS_SINCE_LAST_CAP;
    if (prev_ms != INT64_MIN) {
        /* In double: the difference of two arbitrary int64s may not fit in int64. */
        secs = ((double)p->event_time_ms - (double)prev_ms) / 1000.0;
        if (secs < 0.0)
            secs = 0.0;
        if (secs > RF_SECS_SINCE_LAST_CAP)
            secs = RF_SECS_SINCE_LAST_CAP;
    }
    out[RF_FEAT_CUST_SECS_SINCE_LAST] = secs;

    double n24 = out[RF_FEAT_CUST_COUNT_24H];
    double mean24 = n24 > 0.0 ? out[RF_FEAT_CUST_SUM_24H] / n24 : 0.0;
    out[RF_FEAT_CUST_AMOUNT_RATIO_24H] = mean24 != 0.0 ? amount / mean24 : 1.0;

    out[RF_FEAT_IS_ECOM] = p->channel == RF_CHANNEL_ECOM ? 1.0 : 0.0;
    int64_t hour = floormod(p->event_time_ms, MS_PER_DAY) / MS_PER_HOUR;
    out[RF_FEAT_IS_NIGHT] = hour < 6 ? 1.0 : 0.0;
    out[RF_FEAT_IS_CASH] = p->kind == RF_KIND_CASH_WITHDRAWAL ? 1.0 : 0.0;
}

/* Sources in use. unpack never accepts more than RF_STATE_SOURCES; the clamp only makes sure
 * that a state scribbled on in memory still cannot index past the array. */
static int n_sources(const struct rf_cust_state *st) {
    return st->n_sources < RF_STATE_SOURCES ? st->n_sources : RF_STATE_SOURCES;
}

/* The index of source (topic_id, partition) in st->sources, or -1 when it is not held. */
static int find_source(const struct rf_cust_state *st, uint32_t topic_id, int32_t partition) {
    int n = n_sources(st);
    for (int i = 0; i < n; i++) {
        if (st->sources[i].topic_id == topic_id && st->sources[i].partition == partition)
            return i;
    }
    return -1;
}

/*
 * Record offset as source (topic_id, partition)'s watermark and move it to the front (most
 * recently applied first). found is find_source()'s answer. A new source shifts the others
 * back; with the array full the last (least recently applied) falls off the end.
 */
static void touch_source(struct rf_cust_state *st, int found, uint32_t topic_id,
                         int32_t partition, int64_t offset) {
    int n = n_sources(st);
    int shift; /* entries [0, shift) move to [1, shift] */
    if (found >= 0) {
        shift = found;
    } else {
        shift = n < RF_STATE_SOURCES ? n : RF_STATE_SOURCES - 1;
        n = shift + 1;
    }
    memmove(&st->sources[1], &st->sources[0], (size_t)shift * sizeof st->sources[0]);
    st->sources[0].topic_id = topic_id;
    st->sources[0].partition = partition;
    st->sources[0].offset = offset;
    st->n_sources = (uint16_t)n;
}

/* Replay check first: a redelivered event must leave st bit-for-bit unchanged. */
int rf_features_apply(struct rf_cust_state *st, const struct rf_payment *p, uint32_t topic_id,
                      int32_t partition, int64_t offset, double out[RF_FEAT__N]) {
    int64_t prev_ms = st->last_event_ms;

    /* Offsets are only comparable within one (topic, partition). */
    int found = find_source(st, topic_id, partition);
    if (found >= 0 && offset <= st->sources[found].offset) {
        compute(st, p, prev_ms, out);
        return 0;
    }

    ring_add(&st->head_5m, st->cnt_5m, st->sum_5m, RF_TILES_5M, RF_TILE_5M_MS, p->event_time_ms,
             p->amount_minor);
    ring_add(&st->head_1h, st->cnt_1h, st->sum_1h, RF_TILES_1H, RF_TILE_1H_MS, p->event_time_ms,
             p->amount_minor);
    touch_source(st, found, topic_id, partition, offset);
    /* The newest event time, not the last applied one: a late event must not make the next
     * on-time event look like it came after a long pause. */
    if (prev_ms == INT64_MIN || p->event_time_ms > prev_ms)
        st->last_event_ms = p->event_time_ms;

    compute(st, p, prev_ms, out);
    return 1;
}

/* Explicit little-endian byte writes: the wire form must not depend on the host's byte order
 * or on the struct's padding. */
static void put_u16(uint8_t *b, uint16_t v) {
    b[0] = (uint8_t)v;
    b[1] = (uint8_t)(v >> 8);
}

static void put_u32(uint8_t *b, uint32_t v) {
    for (int i = 0; i < 4; i++)
        b[i] = (uint8_t)(v >> (8 * i));
}

static void put_u64(uint8_t *b, uint64_t v) {
    for (int i = 0; i < 8; i++)
        b[i] = (uint8_t)(v >> (8 * i));
}

static uint16_t get_u16(const uint8_t *b) {
    return (uint16_t)(b[0] | (b[1] << 8));
}

static uint32_t get_u32(const uint8_t *b) {
    uint32_t v = 0;
    for (int i = 0; i < 4; i++)
        v |= (uint32_t)b[i] << (8 * i);
    return v;
}

static uint64_t get_u64(const uint8_t *b) {
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v |= (uint64_t)b[i] << (8 * i);
    return v;
}

/* Two's complement back from the wire without implementation-defined conversions. */
static int64_t to_i64(uint64_t v) {
    if (v <= (uint64_t)INT64_MAX)
        return (int64_t)v;
    return -(int64_t)(~v) - 1;
}

static int32_t to_i32(uint32_t v) {
    if (v <= (uint32_t)INT32_MAX)
        return (int32_t)v;
    return -(int32_t)(~v) - 1;
}

enum {
    OFF_MAGIC = 0,
    OFF_VERSION = 4,
    OFF_N_SOURCES = 6,
    OFF_LAST_EVENT_MS = 8,
    OFF_HEAD_5M = 16,
    OFF_HEAD_1H = 24,
    OFF_SOURCES = 32, /* RF_STATE_SOURCES x SOURCE_SIZE */
    OFF_CNT_5M = 96,
    OFF_SUM_5M = 144,
    OFF_CNT_1H = 240,
    OFF_SUM_1H = 336,
    OFF_END = 528
};

/* One source slot: u32 topic_id, i32 partition, i64 offset. */
enum { SOURCE_SIZE = 16, SRC_TOPIC_ID = 0, SRC_PARTITION = 4, SRC_OFFSET = 8 };

_Static_assert(OFF_CNT_5M == OFF_SOURCES + SOURCE_SIZE * RF_STATE_SOURCES, "sources size");
_Static_assert(OFF_SUM_5M == OFF_CNT_5M + 4 * RF_TILES_5M, "cnt_5m size");
_Static_assert(OFF_CNT_1H == OFF_SUM_5M + 8 * RF_TILES_5M, "sum_5m size");
_Static_assert(OFF_SUM_1H == OFF_CNT_1H + 4 * RF_TILES_1H, "cnt_1h size");
_Static_assert(OFF_END == OFF_SUM_1H + 8 * RF_TILES_1H, "sum_1h size");
_Static_assert(OFF_END == RF_CUST_STATE_SIZE, "wire size");

/* Unused source slots are written as 0 whatever memory holds, so equal states give equal
 * bytes (Redis values compare). */
void rf_cust_state_pack(const struct rf_cust_state *st, uint8_t buf[RF_CUST_STATE_SIZE]) {
    int n = n_sources(st);
    put_u32(buf + OFF_MAGIC, RF_CUST_STATE_MAGIC);
    put_u16(buf + OFF_VERSION, RF_CUST_STATE_VERSION);
    put_u16(buf + OFF_N_SOURCES, (uint16_t)n);
    put_u64(buf + OFF_LAST_EVENT_MS, (uint64_t)st->last_event_ms);
    put_u64(buf + OFF_HEAD_5M, (uint64_t)st->head_5m);
    put_u64(buf + OFF_HEAD_1H, (uint64_t)st->head_1h);
    for (int i = 0; i < RF_STATE_SOURCES; i++) {
        uint8_t *b = buf + OFF_SOURCES + SOURCE_SIZE * i;
        if (i < n) {
            put_u32(b + SRC_TOPIC_ID, st->sources[i].topic_id);
            put_u32(b + SRC_PARTITION, (uint32_t)st->sources[i].partition);
            put_u64(b + SRC_OFFSET, (uint64_t)st->sources[i].offset);
        } else {
            memset(b, 0, SOURCE_SIZE);
        }
    }
    for (int i = 0; i < RF_TILES_5M; i++) {
        put_u32(buf + OFF_CNT_5M + 4 * i, st->cnt_5m[i]);
        put_u64(buf + OFF_SUM_5M + 8 * i, (uint64_t)st->sum_5m[i]);
    }
    for (int i = 0; i < RF_TILES_1H; i++) {
        put_u32(buf + OFF_CNT_1H + 4 * i, st->cnt_1h[i]);
        put_u64(buf + OFF_SUM_1H + 8 * i, (uint64_t)st->sum_1h[i]);
    }
}

/* Validates before writing anything, so a rejected value leaves st as it was. */
int rf_cust_state_unpack(struct rf_cust_state *st, const uint8_t *buf, size_t len) {
    if (!buf || len != RF_CUST_STATE_SIZE)
        return RF_E_MALFORMED;
    if (get_u32(buf + OFF_MAGIC) != RF_CUST_STATE_MAGIC)
        return RF_E_MALFORMED;
    if (get_u16(buf + OFF_VERSION) != RF_CUST_STATE_VERSION)
        return RF_E_MALFORMED;
    uint16_t n = get_u16(buf + OFF_N_SOURCES);
    if (n > RF_STATE_SOURCES)
        return RF_E_MALFORMED;

    /* Source slots at or past n are not read (memory keeps them 0): the watermarks are
     * sources[0, n) and nothing else. */
    memset(st, 0, sizeof *st);
    st->n_sources = n;
    for (int i = 0; i < n; i++) {
        const uint8_t *b = buf + OFF_SOURCES + SOURCE_SIZE * i;
        st->sources[i].topic_id = get_u32(b + SRC_TOPIC_ID);
        st->sources[i].partition = to_i32(get_u32(b + SRC_PARTITION));
        st->sources[i].offset = to_i64(get_u64(b + SRC_OFFSET));
    }
    st->last_event_ms = to_i64(get_u64(buf + OFF_LAST_EVENT_MS));
    st->head_5m = to_i64(get_u64(buf + OFF_HEAD_5M));
    st->head_1h = to_i64(get_u64(buf + OFF_HEAD_1H));
    for (int i = 0; i < RF_TILES_5M; i++) {
        st->cnt_5m[i] = get_u32(buf + OFF_CNT_5M + 4 * i);
        st->sum_5m[i] = to_i64(get_u64(buf + OFF_SUM_5M + 8 * i));
    }
    for (int i = 0; i < RF_TILES_1H; i++) {
        st->cnt_1h[i] = get_u32(buf + OFF_CNT_1H + 4 * i);
        st->sum_1h[i] = to_i64(get_u64(buf + OFF_SUM_1H + 8 * i));
    }
    return 0;
}
