/*
 * feat.c — the feature math over stored entity values. See feat.h; the semantics are
 * docs/FEATURES.md, which this file follows to the letter (the Python reference,
 * tools/train/riskflow_features.py, follows the same text, and the tests hold them together).
 *
 * Values are the little-endian stored form, read and written in place through memcpy (the
 * compiler turns those into plain loads and stores on the hosts we build for, which the static
 * assert below pins to little-endian). Any thread; the loop thread per event.
 * Must never allocate (plans aside), print or block, and never let a hostile stored value
 * cause undefined behaviour: tile distances are unsigned, counts saturate, logs are guarded.
 */
#include "riskflow/feat.h"

#include <math.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

#include "riskflow/err.h"
#include "decl_int.h"

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "entity values are kept in memory in their little-endian stored form"
#endif

#define MS_DAY 86400000LL
#define MS_HOUR 3600000LL
#define LN2 0.6931471805599453

/* ---- value access ---- */

static inline int64_t ld_i64(const uint8_t *v, uint32_t off) {
    int64_t x;
    memcpy(&x, v + off, 8);
    return x;
}
static inline void st_i64(uint8_t *v, uint32_t off, int64_t x) {
    memcpy(v + off, &x, 8);
}
static inline double ld_f64(const uint8_t *v, uint32_t off) {
    double x;
    memcpy(&x, v + off, 8);
    return x;
}
static inline void st_f64(uint8_t *v, uint32_t off, double x) {
    memcpy(v + off, &x, 8);
}
static inline uint32_t ld_u32(const uint8_t *v, uint32_t off) {
    uint32_t x;
    memcpy(&x, v + off, 4);
    return x;
}
static inline void st_u32(uint8_t *v, uint32_t off, uint32_t x) {
    memcpy(v + off, &x, 4);
}
static inline uint16_t ld_u16(const uint8_t *v, uint32_t off) {
    uint16_t x;
    memcpy(&x, v + off, 2);
    return x;
}
static inline void st_u16(uint8_t *v, uint32_t off, uint16_t x) {
    memcpy(v + off, &x, 2);
}

uint32_t rf_feat_topic_id(const char *topic) {
    return topic ? rf_fnv1a32(topic, strlen(topic)) : rf_fnv1a32("", 0);
}

int64_t rf_feat_t_last(const uint8_t *v) {
    return ld_i64(v, RF_VOFF_TLAST);
}


static int64_t floormod(int64_t a, int64_t b) {
    int64_t r = a % b;
    if (r != 0 && ((r < 0) != (b < 0)))
        r += b;
    return r;
}

/* |a - b| for a >= b as an exact unsigned distance (no int64 overflow for hostile values). */
static uint64_t udist(int64_t a, int64_t b) {
    return (uint64_t)a - (uint64_t)b;
}

/* ---- fresh values, checks ---- */

void rf_feat_init_value(const rf_decl_t *d, int kind, uint8_t *v) {
    const struct kind *k = &d->kinds[kind];
    memset(v, 0, k->size);
    memcpy(v + RF_VOFF_MAGIC, &(uint32_t){RF_VALUE_MAGIC}, 4);
    st_u16(v, RF_VOFF_VERSION, RF_VALUE_VERSION);
    memcpy(v + RF_VOFF_HASH, &k->hash, 8);
    st_i64(v, RF_VOFF_TLAST, INT64_MIN);
    for (int g = 0; g < k->n_groups; g++)
        st_i64(v, k->groups[g].off, INT64_MIN);
    for (int i = 0; i < k->n_scalars; i++) {
        const struct rf_feature *f = &d->feats[k->scalars[i]];
        st_i64(v, f->off, INT64_MIN); /* every scalar slot starts with its time */
        if (f->agg == RF_AGG_TSL)
            st_f64(v, f->off + 8, f->cap_s);
    }
}

int rf_feat_check_value(const rf_decl_t *d, int kind, const uint8_t *buf, size_t len) {
    const struct kind *k = &d->kinds[kind];
    uint64_t hash;
    if (!buf || len != k->size || ld_u32(buf, RF_VOFF_MAGIC) != RF_VALUE_MAGIC ||
        ld_u16(buf, RF_VOFF_VERSION) != RF_VALUE_VERSION || ld_u16(buf, RF_VOFF_NSOURCES) > RF_SOURCES)
        return RF_E_MALFORMED;
    memcpy(&hash, buf + RF_VOFF_HASH, 8);
    return hash == k->hash ? 0 : RF_E_MALFORMED;
}

/* ---- inputs and conditions ---- */

static double hour_of(int64_t t) {
    return (double)(floormod(t, MS_DAY) / MS_HOUR);
}

/* 0 Monday .. 6 Sunday (UTC): 1970-01-01, day 0, was a Thursday. */
static double weekday_of(int64_t t) {
    return (double)floormod(rf_floordiv(t, MS_DAY) + 3, 7);
}

/* Previous values as they were before the event touched any entity (delta inputs read them):
 * by kind, by previous-value slot. */
struct prevsnap {
    uint8_t has[RF_KINDS_MAX][PREVS_MAX];
    double val[RF_KINDS_MAX][PREVS_MAX];
};

static double input(const struct rf_input *in, const struct rf_rec *r, const struct kind *k,
                    const uint8_t *v, const struct prevsnap *pre) {
    switch (in->op) {
    case RF_IN_NONE:
        return 1.0;
    case RF_IN_FIELD:
        return rf_rec_num(r, in->field);
    case RF_IN_MUL:
        return rf_rec_num(r, in->field) * in->k;
    case RF_IN_DIV:
        return rf_rec_num(r, in->field) / in->k;
    case RF_IN_HOUR:
        return hour_of(r->v[in->field].i);
    case RF_IN_WEEKDAY:
        return weekday_of(r->v[in->field].i);
    case RF_IN_DELTA: /* applied events only: pre is there */
        return rf_rec_num(r, in->field) -
               (pre && pre->has[in->dkind][in->prev] ? pre->val[in->dkind][in->prev] : 0.0);
    case RF_IN_CHANGE:
    case RF_IN_LOGCHANGE: {
        uint32_t off = k->prevs[in->prev].off;
        double x = rf_rec_num(r, in->field);
        if (ld_i64(v, off) == 0)
            return 0.0;
        double p = ld_f64(v, off + 8);
        if (in->op == RF_IN_CHANGE)
            return x - p;
        return x > 0.0 && p > 0.0 ? log(x / p) : 0.0;
    }
    }
    return 0.0;
}

static int cond_holds(const struct rf_cond *c, const struct rf_rec *r) {
    if (c->is_str) {
        size_t n;
        const char *s = rf_rec_str(r, c->field, &n);
        int eq = n == c->str_len && memcmp(s, c->str, n) == 0;
        return c->cmp == RF_CMP_EQ ? eq : !eq;
    }
    double x = c->hour == 1   ? hour_of(r->v[c->field].i)
               : c->hour == 2 ? weekday_of(r->v[c->field].i)
                              : rf_rec_num(r, c->field);
    switch (c->cmp) {
    case RF_CMP_EQ: return x == c->num;
    case RF_CMP_NE: return x != c->num;
    case RF_CMP_LT: return x < c->num;
    case RF_CMP_LE: return x <= c->num;
    case RF_CMP_GT: return x > c->num;
    case RF_CMP_GE: return x >= c->num;
    }
    return 0;
}

int rf_where_matches(const struct rf_rtype *rec, const struct rf_where *w, const struct rf_rec *r) {
    if (r->type != rec)
        return 0;
    for (int i = 0; i < w->n; i++)
        if (!cond_holds(&w->c[i], r))
            return 0;
    return 1;
}

/* ---- windows ---- */

/* Move the window's head to tile ti (when later), clearing the slots it passes. */
static void advance_tile(const struct group *g, uint8_t *v, int64_t ti) {
    int64_t h = ld_i64(v, g->off);
    if (ti <= h)
        return;
    uint64_t gap = udist(ti, h);
    uint32_t cnt = g->off + 8;
    if (gap >= (uint64_t)g->n) {
        memset(v + cnt, 0, 4 * (size_t)g->n);
        for (int c = 0; c < g->n_cols; c++)
            memset(v + g->cols[c].off, 0, 8 * (size_t)g->n);
    } else {
        /* The slots of h+1 .. ti held tiles that are now n tiles old. */
        for (uint64_t j = 1; j <= gap; j++) {
            uint32_t slot = (uint32_t)floormod(h + (int64_t)j, g->n);
            st_u32(v, cnt + 4 * slot, 0);
            for (int c = 0; c < g->n_cols; c++)
                st_f64(v, g->cols[c].off + 8 * slot, 0.0);
        }
    }
    st_i64(v, g->off, ti);
}

static void advance(const struct group *g, uint8_t *v, int64_t t) {
    advance_tile(g, v, rf_floordiv(t, g->tile_ms));
}

static void group_add(const struct group *g, const struct kind *k, uint8_t *v,
                      const struct rf_rec *r, int64_t t, const struct prevsnap *pre) {
    /* time=FIELD: the tile of that time (a label lands in its payment's tile). */
    int64_t ti = rf_floordiv(g->time_field >= 0 ? r->v[g->time_field].i : t, g->tile_ms);
    int64_t h = ld_i64(v, g->off);
    /* After advance ti <= h for the event time; a time= field may be later than the head
     * (unsigned: a huge distance) or older than the ring: neither is in any tile. */
    if (udist(h, ti) >= (uint64_t)g->n)
        return;
    uint32_t slot = (uint32_t)floormod(ti, g->n);
    uint32_t cnt_off = g->off + 8 + 4 * slot;
    uint32_t n = ld_u32(v, cnt_off);
    double dn = (double)n;
    double upd[GROUP_COLS_MAX];
    /* Every new value from the old ones first, then the stores: m2 needs its input's old sum
     * (FEATURES.md §2.5), and (s + x) - x is not s in floating point. */
    for (int c = 0; c < g->n_cols; c++) {
        const struct col *cl = &g->cols[c];
        double x = input(&cl->in, r, k, v, pre);
        double cur = ld_f64(v, cl->off + 8 * slot);
        switch (cl->col) {
        case RF_COL_SUM:
            upd[c] = cur + x;
            break;
        case RF_COL_SQ:
            upd[c] = cur + x * x;
            break;
        case RF_COL_M2: {
            double s = ld_f64(v, g->cols[cl->sum_col].off + 8 * slot);
            upd[c] = n == 0 ? 0.0 : cur + (x - s / dn) * (x - (s + x) / (dn + 1.0));
            break;
        }
        case RF_COL_MIN: /* strict comparisons: a tie keeps the current value (±0 too) */
            upd[c] = n == 0 || x < cur ? x : cur;
            break;
        case RF_COL_MAX:
            upd[c] = n == 0 || x > cur ? x : cur;
            break;
        }
    }
    for (int c = 0; c < g->n_cols; c++)
        st_f64(v, g->cols[c].off + 8 * slot, upd[c]);
    if (n < UINT32_MAX)
        st_u32(v, cnt_off, n + 1);
}

/* The slots in the window's value, as up to two ranges [b, e) in increasing slot order (the
 * order values are summed in): all of them without a delay; with one, the slots whose tile
 * h - ((h - s) mod n) is at least `delay` tiles before the head h — those of the tiles
 * h - delay - win + 1 .. h - delay, a cyclic run of `win` slots. (h mod n is taken exactly:
 * a hostile stored head cannot wrap.) */
static inline int window_ranges(const struct group *g, int64_t h, int b[2], int e[2]) {
    if (g->delay == 0) {
        b[0] = 0;
        e[0] = g->n;
        return 1;
    }
    int64_t lo = floormod(floormod(h, g->n) - g->delay - g->win + 1, g->n);
    if (lo + g->win <= g->n) {
        b[0] = (int)lo;
        e[0] = (int)lo + g->win;
        return 1;
    }
    b[0] = 0;
    e[0] = (int)(lo + g->win - g->n);
    b[1] = (int)lo;
    e[1] = g->n;
    return 2;
}

static double window_value(const struct rf_feature *f, const struct group *g, const uint8_t *v) {
    uint32_t cnt = g->off + 8;
    double count = 0.0;
    uint64_t total = 0;
    int rb[2], re[2];
    const int nr = window_ranges(g, ld_i64(v, g->off), rb, re);
#define SLOTS(s) for (int r_ = 0; r_ < nr; r_++) for (int s = rb[r_]; s < re[r_]; s++)
    switch (f->agg) {
    case RF_AGG_COUNT:
        SLOTS(s) {
            total += ld_u32(v, cnt + 4 * s);
        }
        return (double)total;
    case RF_AGG_SUM:
    case RF_AGG_SUMSQ: {
        uint32_t col = f->agg == RF_AGG_SUM ? f->col[RF_COL_SUM] : f->col[RF_COL_SQ];
        double sum = 0.0;
        SLOTS(s) {
            sum += ld_f64(v, col + 8 * s);
        }
        return sum;
    }
    case RF_AGG_MEAN: {
        double sum = 0.0;
        SLOTS(s) {
            total += ld_u32(v, cnt + 4 * s);
            sum += ld_f64(v, f->col[RF_COL_SUM] + 8 * s);
        }
        count = (double)total;
        return total ? sum / count : 0.0;
    }
    case RF_AGG_STD: {
        double N = 0.0, S = 0.0, M2 = 0.0;
        SLOTS(s) {
            uint32_t n = ld_u32(v, cnt + 4 * s);
            if (n == 0)
                continue;
            double dn = (double)n;
            double sum = ld_f64(v, f->col[RF_COL_SUM] + 8 * s);
            double m2 = ld_f64(v, f->col[RF_COL_M2] + 8 * s);
            if (N == 0.0) {
                N = dn;
                S = sum;
                M2 = m2;
            } else {
                double dl = sum / dn - S / N;
                M2 = M2 + m2 + dl * dl * (N * dn / (N + dn));
                N = N + dn;
                S = S + sum;
            }
        }
        return N > 0.0 ? sqrt(fmax(0.0, M2 / N)) : 0.0;
    }
    case RF_AGG_MIN:
    case RF_AGG_MAX: {
        int any = 0;
        double m = 0.0;
        uint32_t col = f->agg == RF_AGG_MIN ? f->col[RF_COL_MIN] : f->col[RF_COL_MAX];
        SLOTS(s) {
            if (ld_u32(v, cnt + 4 * s) == 0)
                continue;
            double x = ld_f64(v, col + 8 * s);
            if (!any || (f->agg == RF_AGG_MIN ? x < m : x > m))
                m = x;
            any = 1;
        }
        return m;
    }
    default:
        return 0.0;
    }
#undef SLOTS
}

/* ---- slices ---- */

/* Tile slot `s` of src added into the same tile of dst (both hold it). */
static void tile_merge(const struct group *g, uint8_t *dst, const uint8_t *src, uint32_t s) {
    uint32_t cnt = g->off + 8 + 4 * s;
    uint32_t nb = ld_u32(src, cnt);
    if (nb == 0)
        return;
    uint32_t na = ld_u32(dst, cnt);
    double da = (double)na, db = (double)nb;
    double upd[GROUP_COLS_MAX];
    for (int c = 0; c < g->n_cols; c++) {
        const struct col *cl = &g->cols[c];
        double a = ld_f64(dst, cl->off + 8 * s), b = ld_f64(src, cl->off + 8 * s);
        switch (cl->col) {
        case RF_COL_SUM:
        case RF_COL_SQ:
            upd[c] = a + b;
            break;
        case RF_COL_M2: { /* Chan et al.: two tiles' moments pooled */
            if (na == 0) {
                upd[c] = b;
                break;
            }
            uint32_t so = g->cols[cl->sum_col].off + 8 * s;
            double dl = ld_f64(src, so) / db - ld_f64(dst, so) / da;
            upd[c] = a + b + dl * dl * (da * db / (da + db));
            break;
        }
        case RF_COL_MIN:
            upd[c] = na == 0 || b < a ? b : a;
            break;
        case RF_COL_MAX:
            upd[c] = na == 0 || b > a ? b : a;
            break;
        }
    }
    for (int c = 0; c < g->n_cols; c++)
        st_f64(dst, g->cols[c].off + 8 * s, upd[c]);
    st_u32(dst, cnt, na > UINT32_MAX - nb ? UINT32_MAX : na + nb);
}

static double decay(uint64_t dt_ms, int64_t halflife_ms);

/* A scalar slot of src into dst's: the later `last` wins (dst on a tie), `age` keeps the
 * later time, ewma and dsum decay the earlier to the later time and add (S, and W). The
 * parser keeps time_since_last off sliced kinds: it needs the last two events of all. */
static void scalar_merge(const struct rf_feature *f, uint8_t *dst, const uint8_t *src) {
    int64_t ts = ld_i64(src, f->off), td = ld_i64(dst, f->off);
    if (ts == INT64_MIN)
        return;
    if (td == INT64_MIN) {
        memcpy(dst + f->off, src + f->off, f->agg == RF_AGG_EWMA ? 24 : f->agg == RF_AGG_AGE ? 8 : 16);
        return;
    }
    switch (f->agg) {
    case RF_AGG_LAST:
        if (ts > td)
            memcpy(dst + f->off, src + f->off, 16);
        break;
    case RF_AGG_AGE:
        if (ts > td)
            st_i64(dst, f->off, ts);
        break;
    case RF_AGG_EWMA:
    case RF_AGG_DSUM: {
        int ewma = f->agg == RF_AGG_EWMA;
        int64_t t = ts > td ? ts : td;
        double kd = decay(udist(t, td), f->halflife_ms), ks = decay(udist(t, ts), f->halflife_ms);
        st_f64(dst, f->off + 8, ld_f64(dst, f->off + 8) * kd + ld_f64(src, f->off + 8) * ks);
        if (ewma)
            st_f64(dst, f->off + 16,
                   ld_f64(dst, f->off + 16) * kd + ld_f64(src, f->off + 16) * ks);
        st_i64(dst, f->off, t);
        break;
    }
    default:
        break;
    }
}

void rf_feat_merge(const rf_decl_t *d, int kind, uint8_t *dst, const uint8_t *src) {
    const struct kind *k = &d->kinds[kind];
    for (int i = 0; i < k->n_scalars; i++)
        scalar_merge(&d->feats[k->scalars[i]], dst, src);
    int64_t ts = rf_feat_t_last(src), td = rf_feat_t_last(dst);
    if (ts != INT64_MIN && (td == INT64_MIN || ts > td))
        st_i64(dst, RF_VOFF_TLAST, ts);
    for (int gi = 0; gi < k->n_groups; gi++) {
        const struct group *g = &k->groups[gi];
        int64_t hs = ld_i64(src, g->off);
        if (hs == INT64_MIN)
            continue; /* a fresh slice holds nothing */
        if (ld_i64(dst, g->off) == INT64_MIN) {
            /* a fresh dst: take the ring as it is (same layout, same slots) */
            memcpy(dst + g->off, src + g->off, 8 + 4 * (size_t)g->n);
            for (int c = 0; c < g->n_cols; c++)
                memcpy(dst + g->cols[c].off, src + g->cols[c].off, 8 * (size_t)g->n);
            continue;
        }
        /* The later head wins, as one value fed both slices' events would have it. */
        advance_tile(g, dst, hs);
        int64_t h = ld_i64(dst, g->off);
        /* The tiles both rings hold: h - n < i <= min(h, hs); a tile's slot is i mod n in
         * both. (Unsigned distances: a hostile head cannot overflow.) */
        uint64_t gap = udist(h, hs);
        if (gap >= (uint64_t)g->n)
            continue;
        for (uint64_t j = gap; j < (uint64_t)g->n; j++)
            tile_merge(g, dst, src, (uint32_t)floormod(h - (int64_t)j, g->n));
    }
}

/* ---- scalar slots ---- */

static double decay(uint64_t dt_ms, int64_t halflife_ms) {
    return exp(-LN2 * (double)dt_ms / (double)halflife_ms);
}

static double clamp(double x, double lo, double hi) {
    return x < lo ? lo : x > hi ? hi : x;
}

static void scalar_update(const struct rf_feature *f, const struct kind *k, uint8_t *v,
                          const struct prevsnap *pre,
                          const struct rf_rec *r, int64_t e) {
    int64_t t = ld_i64(v, f->off);
    switch (f->agg) {
    case RF_AGG_LAST:
        if (t == INT64_MIN || e >= t) {
            st_i64(v, f->off, e);
            st_f64(v, f->off + 8, input(&f->in, r, k, v, pre));
        }
        break;
    case RF_AGG_TSL: {
        double gap = t == INT64_MIN ? f->cap_s
                                    : clamp(((double)e - (double)t) / 1000.0, 0.0, f->cap_s);
        st_f64(v, f->off + 8, gap);
        if (t == INT64_MIN || e > t)
            st_i64(v, f->off, e);
        break;
    }
    case RF_AGG_AGE:
        if (t == INT64_MIN || e > t)
            st_i64(v, f->off, e);
        break;
    case RF_AGG_EWMA:
    case RF_AGG_DSUM: {
        double x = input(&f->in, r, k, v, pre);
        double S = ld_f64(v, f->off + 8);
        int ewma = f->agg == RF_AGG_EWMA;
        double W = ewma ? ld_f64(v, f->off + 16) : 0.0;
        if (t == INT64_MIN) {
            S = x;
            W = 1.0;
            st_i64(v, f->off, e);
        } else if (e >= t) {
            double kk = decay(udist(e, t), f->halflife_ms);
            S = S * kk + x;
            W = W * kk + 1.0;
            st_i64(v, f->off, e);
        } else {
            double kk = decay(udist(t, e), f->halflife_ms);
            S = S + kk * x;
            W = W + kk;
        }
        st_f64(v, f->off + 8, S);
        if (ewma)
            st_f64(v, f->off + 16, W);
        break;
    }
    default:
        break;
    }
}

static double scalar_value(const struct rf_feature *f, const uint8_t *v) {
    int64_t t = ld_i64(v, f->off);
    switch (f->agg) {
    case RF_AGG_LAST:
    case RF_AGG_TSL:
        return ld_f64(v, f->off + 8);
    case RF_AGG_AGE: {
        if (t == INT64_MIN)
            return f->cap_s;
        int64_t tl = rf_feat_t_last(v);
        return clamp(((double)tl - (double)t) / 1000.0, 0.0, f->cap_s);
    }
    case RF_AGG_EWMA: {
        double W = ld_f64(v, f->off + 16);
        return W != 0.0 ? ld_f64(v, f->off + 8) / W : 0.0;
    }
    case RF_AGG_DSUM: {
        if (t == INT64_MIN)
            return 0.0;
        int64_t tl = rf_feat_t_last(v);
        return ld_f64(v, f->off + 8) * decay(tl >= t ? udist(tl, t) : 0, f->halflife_ms);
    }
    default:
        return 0.0;
    }
}

/* ---- replays and sources ---- */

static int n_sources(const uint8_t *v) {
    int n = ld_u16(v, RF_VOFF_NSOURCES);
    return n < RF_SOURCES ? n : RF_SOURCES;
}

static int find_source(const uint8_t *v, const struct rf_src *src) {
    int n = n_sources(v);
    for (int i = 0; i < n; i++) {
        uint32_t o = RF_VOFF_SOURCES + 16 * (uint32_t)i;
        if (ld_u32(v, o) == src->topic_id && (int32_t)ld_u32(v, o + 4) == src->partition)
            return i;
    }
    return -1;
}

/* Move (or insert) the source to the front with the event's offset. */
static void touch_source(uint8_t *v, const struct rf_src *src) {
    int n = n_sources(v);
    int found = find_source(v, src);
    int shift; /* entries [0, shift) move to [1, shift] */
    if (found >= 0) {
        shift = found;
    } else {
        shift = n < RF_SOURCES ? n : RF_SOURCES - 1;
        n = shift + 1;
    }
    memmove(v + RF_VOFF_SOURCES + 16, v + RF_VOFF_SOURCES, 16 * (size_t)shift);
    st_u32(v, RF_VOFF_SOURCES, src->topic_id);
    st_u32(v, RF_VOFF_SOURCES + 4, (uint32_t)src->partition);
    st_i64(v, RF_VOFF_SOURCES + 8, src->offset);
    st_u16(v, RF_VOFF_NSOURCES, (uint16_t)n);
}

/* Whether value v already holds src's event (FEATURES.md §3). */
static int holds(const uint8_t *v, const struct rf_src *src) {
    int i = find_source(v, src);
    return i >= 0 && src->offset <= ld_i64(v, RF_VOFF_SOURCES + 16 * (uint32_t)i + 8);
}

int rf_feat_is_replay(const rf_decl_t *d, const struct rf_rec *r, uint8_t *const ents[],
                      const struct rf_src *src) {
    for (int k = 0; k < d->n_kinds; k++)
        if (ents[k] && holds(ents[k], src))
            return 1;
    return 0;
}

int rf_feat_too_late(const rf_decl_t *d, const struct rf_rec *r, uint8_t *const ents[],
                     uint64_t late_ms) {
    int64_t t = rf_rec_time(r);
    for (int k = 0; late_ms && k < d->n_kinds; k++) {
        int64_t last = ents[k] ? rf_feat_t_last(ents[k]) : INT64_MIN;
        if (last > t && (uint64_t)last - (uint64_t)t > late_ms)
            return 1;
    }
    return 0;
}

/* Apply r to the entities in `to` (a subset of ents): previous values are read from all of
 * ents, as they were before the event. */
static void apply_to(const rf_decl_t *d, const struct rf_rec *r, uint8_t *const ents[],
                     uint8_t *const to[], const struct rf_src *src) {
    int64_t t = rf_rec_time(r);
    struct prevsnap snap, *pre = NULL;
    if (d->has_delta) {
        /* delta() reads another kind's previous value as it was before this event: the kinds
         * are applied one after the other, and an earlier one may already have moved it. */
        pre = &snap;
        for (int ki = 0; ki < d->n_kinds; ki++) {
            const struct kind *k = &d->kinds[ki];
            for (int i = 0; i < k->n_prevs; i++) {
                snap.has[ki][i] = ents[ki] && ld_i64(ents[ki], k->prevs[i].off) != 0;
                snap.val[ki][i] = snap.has[ki][i] ? ld_f64(ents[ki], k->prevs[i].off + 8) : 0.0;
            }
        }
    }
    for (int ki = 0; ki < d->n_kinds; ki++) {
        uint8_t *v = to[ki];
        if (!v)
            continue;
        const struct kind *k = &d->kinds[ki];
        int64_t tl = rf_feat_t_last(v);
        if (tl == INT64_MIN || t > tl)
            st_i64(v, RF_VOFF_TLAST, t);
        for (int g = 0; g < k->n_groups; g++) {
            const struct group *gr = &k->groups[g];
            advance(gr, v, t);
            if (rf_where_matches(gr->rec, &gr->where, r))
                group_add(gr, k, v, r, t, pre);
        }
        for (int i = 0; i < k->n_scalars; i++) {
            const struct rf_feature *f = &d->feats[k->scalars[i]];
            if (rf_where_matches(f->rec, &f->where, r))
                scalar_update(f, k, v, pre, r, t);
        }
        for (int i = 0; i < k->n_prevs; i++) {
            if (k->prevs[i].rec != r->type)
                continue;
            st_i64(v, k->prevs[i].off, 1);
            st_f64(v, k->prevs[i].off + 8, rf_rec_num(r, k->prevs[i].field));
        }
        touch_source(v, src);
    }
}

void rf_feat_apply(const rf_decl_t *d, const struct rf_rec *r, uint8_t *const ents[],
                   const struct rf_src *src) {
    apply_to(d, r, ents, ents, src);
}

uint32_t rf_feat_apply_missing(const rf_decl_t *d, const struct rf_rec *r, uint8_t *const ents[],
                               const struct rf_src *src) {
    uint8_t *to[RF_KINDS_MAX] = {0};
    uint32_t mask = 0;
    for (int k = 0; k < d->n_kinds; k++) {
        if (!ents[k] || holds(ents[k], src))
            continue;
        to[k] = ents[k];
        mask |= 1u << k;
    }
    if (mask)
        apply_to(d, r, ents, to, src);
    return mask;
}

/* ---- evaluation ---- */

static double derived_value(const struct rf_feature *f, double a, double b) {
    double x;
    int defined = 1;
    switch (f->op) {
    case RF_D_RATIO:
        defined = b != 0.0;
        x = defined ? a / b : 0.0;
        break;
    case RF_D_DIFF:
        x = a - b;
        break;
    case RF_D_IMBALANCE:
        defined = a + b != 0.0;
        x = defined ? (a - b) / (a + b) : 0.0;
        break;
    case RF_D_LOGRATIO:
        defined = a > 0.0 && b > 0.0;
        x = defined ? log(a / b) : 0.0;
        break;
    case RF_D_LOG1P:
        x = log1p(a > 0.0 ? a : 0.0);
        break;
    case RF_D_SQRT:
        x = sqrt(a > 0.0 ? a : 0.0);
        break;
    default:
        x = 0.0;
        defined = 0;
    }
    if (!defined || !isfinite(x))
        x = f->dflt;
    return x * f->scale;
}

/* A non-derived feature. */
static double base_value(const rf_decl_t *d, const struct rf_feature *f, const struct rf_rec *r,
                         uint8_t *const ents[]) {
    if (f->agg == RF_AGG_VALUE) {
        const uint8_t *v = f->kind >= 0 ? ents[f->kind] : NULL;
        if (!rf_where_matches(f->rec, &f->where, r))
            return 0.0;
        return input(&f->in, r, f->kind >= 0 ? &d->kinds[f->kind] : NULL, v, NULL);
    }
    const uint8_t *v = ents[f->kind];
    if (!v)
        return 0.0; /* not available for this record: plans never ask */
    if (f->agg <= RF_AGG_MAX)
        return window_value(f, &d->kinds[f->kind].groups[f->group], v);
    return scalar_value(f, v);
}

double rf_feat_eval_one(const rf_decl_t *d, int id, const struct rf_rec *r, uint8_t *const ents[]) {
    const struct rf_feature *f = rf_decl_feature(d, id);
    if (!f)
        return 0.0;
    if (f->agg != RF_AGG_DERIVED)
        return base_value(d, f, r, ents);
    double a = rf_feat_eval_one(d, f->a, r, ents);
    double b = f->b >= 0 ? rf_feat_eval_one(d, f->b, r, ents) : 0.0;
    return derived_value(f, a, b);
}

struct rf_feat_plan_s {
    const rf_decl_t *d;
    int n;       /* model features */
    int *out;    /* their positions in the closure */
    int n_cl;
    int *cl;     /* the closure: feature ids in file order (derived after their arguments) */
    int *pos;    /* by feature id: position in the closure, or -1 */
};

void rf_feat_plan_destroy(rf_feat_plan_t *plan) {
    if (!plan)
        return;
    free(plan->out);
    free(plan->cl);
    free(plan->pos);
    free(plan);
}

static void mark(const rf_decl_t *d, int id, char *need) {
    if (need[id])
        return;
    need[id] = 1;
    const struct rf_feature *f = &d->feats[id];
    if (f->agg == RF_AGG_DERIVED) {
        mark(d, f->a, need);
        if (f->b >= 0)
            mark(d, f->b, need);
    }
}

rf_feat_plan_t *rf_feat_plan_new(const rf_decl_t *d, const char *const *names, int n,
                                 const struct rf_rtype *const *types, int n_types, char *errstr,
                                 size_t size) {
    rf_feat_plan_t *plan = calloc(1, sizeof *plan);
    char *need = calloc((size_t)d->n_feats + 1, 1);
    if (!plan || !need)
        goto nomem;
    plan->d = d;
    plan->n = n;
    plan->out = calloc((size_t)n + 1, sizeof *plan->out);
    plan->cl = calloc((size_t)d->n_feats + 1, sizeof *plan->cl);
    plan->pos = calloc((size_t)d->n_feats + 1, sizeof *plan->pos);
    if (!plan->out || !plan->cl || !plan->pos)
        goto nomem;
    for (int i = 0; i < n; i++) {
        int id = rf_decl_find(d, names[i]);
        if (id < 0) {
            snprintf(errstr, size, "feature '%s' is not declared in %s", names[i], d->path);
            goto fail;
        }
        for (int t = 0; t < n_types; t++) {
            if (!rf_decl_available(d, id, types[t])) {
                snprintf(errstr, size, "feature '%s' (%s:%d) is not available for %s records "
                         "(see docs/FEATURES.md §2.7)", names[i], d->path, d->feats[id].line,
                         types[t]->fullname);
                goto fail;
            }
        }
        mark(d, id, need);
        plan->out[i] = id; /* an id for now */
    }
    for (int id = 0; id < d->n_feats; id++) {
        plan->pos[id] = -1;
        if (need[id]) {
            plan->pos[id] = plan->n_cl;
            plan->cl[plan->n_cl++] = id;
        }
    }
    for (int i = 0; i < n; i++)
        plan->out[i] = plan->pos[plan->out[i]];
    free(need);
    return plan;
nomem:
    snprintf(errstr, size, "out of memory");
fail:
    free(need);
    rf_feat_plan_destroy(plan);
    return NULL;
}

int rf_feat_plan_reads(const rf_feat_plan_t *plan, const struct rf_rtype *t) {
    for (int i = 0; i < plan->n_cl; i++) {
        const struct rf_feature *f = &plan->d->feats[plan->cl[i]];
        if (f->rec == t && f->kind >= 0 && f->agg != RF_AGG_VALUE && f->agg != RF_AGG_DERIVED)
            return 1;
    }
    return 0;
}

int rf_feat_plan_n(const rf_feat_plan_t *plan) {
    return plan->n;
}

const char *rf_feat_plan_name(const rf_feat_plan_t *plan, int i) {
    return plan->d->feats[plan->cl[plan->out[i]]].name;
}

void rf_feat_eval(const rf_feat_plan_t *plan, const struct rf_rec *r, uint8_t *const ents[],
                  double *out) {
    const rf_decl_t *d = plan->d;
    double tmp[RF_DECL_FEATURES_MAX];
    for (int i = 0; i < plan->n_cl; i++) {
        const struct rf_feature *f = &d->feats[plan->cl[i]];
        if (f->agg == RF_AGG_DERIVED)
            tmp[i] = derived_value(f, tmp[plan->pos[f->a]], f->b >= 0 ? tmp[plan->pos[f->b]] : 0.0);
        else
            tmp[i] = base_value(d, f, r, ents);
    }
    for (int i = 0; i < plan->n; i++)
        out[i] = tmp[plan->out[i]];
}
