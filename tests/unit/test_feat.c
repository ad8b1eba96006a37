/*
 * test_feat.c — declared features: the parser's errors, the stored layout, and the math of
 * every aggregation (docs/FEATURES.md), against hand-computed cases and a brute-force
 * implementation that keeps every event and recomputes each window from the text.
 * Runs from the repo root (./schemas, ./deploy). Writes temp files under /tmp.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "riskflow/codec.h"
#include "riskflow/decl.h"
#include "riskflow/err.h"
#include "riskflow/feat.h"
#include "rf_test.h"
#include "test_decl.h"

#define T0 1795996800000LL /* 2026-11-30T00:00:00Z */
#define MIN_MS 60000LL
#define HOUR_MS 3600000LL

static rf_schemas_t *schemas;

static uint64_t rng_state = 0x6a09e667f3bcc908ull;
static uint64_t rnd(void) {
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 2685821657736338717ull;
}
static double unif(void) {
    return (double)(rnd() >> 11) / 9007199254740992.0;
}

/* Declarations from text, finished. NULL (and errstr) on error. */
static rf_decl_t *decl_text(const char *text, char *err, size_t size) {
    return rf_test_decl_text(schemas, text, err, size);
}

/* ---- records ---- */

struct payrec {
    uint8_t buf[512];
    struct rf_rec r;
};

static void make_payment(struct payrec *pr, const char *cust, int64_t amount_minor, int64_t t,
                         enum rf_channel ch, enum rf_payment_kind kind) {
    struct rf_payment p;
    memset(&p, 0, sizeof p);
    snprintf(p.event_id, sizeof p.event_id, "e-%lld", (long long)t);
    snprintf(p.customer_id, sizeof p.customer_id, "%s", cust);
    snprintf(p.card_token, sizeof p.card_token, "card-%s", cust);
    snprintf(p.merchant_id, sizeof p.merchant_id, "m");
    snprintf(p.terminal_id, sizeof p.terminal_id, "t");
    snprintf(p.currency, sizeof p.currency, "EUR");
    snprintf(p.country, sizeof p.country, "FR");
    p.amount_minor = amount_minor;
    p.event_time_ms = t;
    p.channel = ch;
    p.kind = kind;
    size_t len = 0;
    CHECK_EQ_INT(rf_encode_payment(&p, RF_FRAMING_PLAIN, 1, pr->buf, sizeof pr->buf, &len), 0);
    const struct rf_rtype *rt = rf_schemas_rtype_named(schemas, "riskflow.Payment");
    CHECK_EQ_INT(rf_rec_decode(rt, pr->buf, len, &pr->r), 0);
}

/* A trade record built field by field (strings point into tr->buf). */
struct traderec {
    char buf[64];
    struct rf_rec r;
};

static void make_trade(struct traderec *tr, const char *inst, double price, double qty, int sell,
                       int64_t t) {
    const struct rf_rtype *rt = rf_schemas_rtype_named(schemas, "riskflow.Trade");
    memset(tr, 0, sizeof *tr);
    size_t n = strlen(inst);
    memcpy(tr->buf, inst, n);
    tr->r.type = rt;
    tr->r.base = (const uint8_t *)tr->buf;
    tr->r.v[rf_rtype_field(rt, "instrument")].s.len = (uint32_t)n;
    tr->r.v[rf_rtype_field(rt, "venue")].s.len = 0;
    tr->r.v[rf_rtype_field(rt, "trade_id")].s.len = 0;
    tr->r.v[rf_rtype_field(rt, "price")].d = price;
    tr->r.v[rf_rtype_field(rt, "quantity")].d = qty;
    tr->r.v[rf_rtype_field(rt, "aggressor_side")].i = sell;
    tr->r.v[rf_rtype_field(rt, "trade_time")].i = t;
}

/* One entity value per kind, 8-aligned. */
struct ents {
    uint64_t mem[RF_KINDS_MAX][RF_VALUE_MAX / 8];
    uint8_t *v[RF_KINDS_MAX];
};

static void ents_fresh(struct ents *e, const rf_decl_t *d) {
    for (int k = 0; k < RF_KINDS_MAX; k++)
        e->v[k] = NULL;
    for (int k = 0; k < rf_decl_n_kinds(d); k++)
        rf_feat_init_value(d, k, (uint8_t *)e->mem[k]);
}

/* Point e->v at the kinds r touches. */
static void ents_for(struct ents *e, const rf_decl_t *d, const struct rf_rec *r) {
    for (int k = 0; k < rf_decl_n_kinds(d); k++)
        e->v[k] = rf_decl_key_field(d, k, r->type) >= 0 ? (uint8_t *)e->mem[k] : NULL;
}

static int64_t next_offset;

/* Apply r (source topic "t", partition 0, the next offset); 1 applied, 0 replay. */
static int apply(const rf_decl_t *d, struct ents *e, const struct rf_rec *r) {
    struct rf_src src = {rf_feat_topic_id("t"), 0, next_offset++};
    ents_for(e, d, r);
    if (rf_feat_is_replay(d, r, e->v, &src))
        return 0;
    rf_feat_apply(d, r, e->v, &src);
    return 1;
}

static double feat(const rf_decl_t *d, struct ents *e, const char *name, const struct rf_rec *r) {
    int id = rf_decl_find(d, name);
    CHECK(id >= 0);
    ents_for(e, d, r);
    return rf_feat_eval_one(d, id, r, e->v);
}

/* ---- the parser ---- */

static void test_errors(void) {
    static const struct {
        const char *text;
        int line;
        const char *want;
    } cases[] = {
        {"entity customer key=customer_id\nbogus x\n", 2, "unknown keyword"},
        {"entity Customer key=customer_id\n", 1, "bad entity kind name"},
        {"entity customer key=nope\n", 1, "no input record type has a string field 'nope'"},
        {"entity customer key=customer_id\nentity customer key=customer_id\n", 2, "declared twice"},
        {"entity customer key=amount_minor\n", 1, "no input record type"},
        {"entity customer\n", 1, "expected 'entity KIND key=FIELD [ttl=DUR] [sliced]'"},
        {"entity customer key=customer_id sliced sliced\n", 1, "expected 'entity KIND"},
        {"entity customer key=customer_id sliced\n"
         "feature a = time_since_last per customer on Payment\n", 2,
         "entity 'customer' is sliced: time_since_last needs the entity's last two events"},
        {"entity customer key=customer_id sliced\nentity card key=card_token\n"
         "feature a = sum(delta(amount_minor,customer)) per card on Payment window=1h/2\n", 3,
         "entity 'customer' is sliced: it keeps no previous values"},
        {"entity customer key=customer_id\nfeature a = count per customer on Payment\n", 2,
         "count needs window"},
        {"entity customer key=customer_id\nfeature a = count per customer on Payment window=1h/7\n",
         2, "whole number of milliseconds"},
        {"entity customer key=customer_id\nfeature a = count per customer on Payment window=1h/0\n",
         2, "tiles must be 1..128"},
        {"entity customer key=customer_id\nfeature a = count per customer on Payment window=10s/20\n",
         2, "shorter than 1s"},
        {"entity customer key=customer_id\nfeature a = count per customer on Payment window=400d/100\n",
         2, "longer than 366d"},
        {"entity customer key=customer_id\nfeature a = count per customer on Payment window=1x/2\n",
         2, "bad window"},
        {"entity customer key=customer_id\nfeature a = sum per customer on Payment window=1h/2\n", 2,
         "sum needs an input"},
        {"entity customer key=customer_id\nfeature a = sum(nope) per customer on Payment window=1h/2\n",
         2, "has no field 'nope'"},
        {"entity customer key=customer_id\nfeature a = sum(currency) per customer on Payment window=1h/2\n",
         2, "is a string, not a number"},
        {"entity customer key=customer_id\nfeature a = count per customer on Trade window=1h/2\n", 2,
         "does not touch entity 'customer'"},
        {"entity customer key=customer_id\nfeature a = count per customer on Nope window=1h/2\n", 2,
         "unknown record type 'Nope'"},
        {"entity customer key=customer_id\nfeature a = count per shop on Payment window=1h/2\n", 2,
         "unknown entity kind 'shop'"},
        {"entity customer key=customer_id\nfeature a = last(amount_minor) on Payment\n", 2,
         "missing 'per KIND'"},
        {"entity customer key=customer_id\nfeature a = last(amount_minor) per customer\n", 2,
         "missing 'on RECORD'"},
        {"entity customer key=customer_id\nfeature a = ewma(amount_minor) per customer on Payment\n",
         2, "needs halflife"},
        {"entity customer key=customer_id\nfeature a = last(amount_minor) per customer on Payment cap=1d\n",
         2, "takes no cap"},
        {"entity customer key=customer_id\nfeature a = last(amount_minor) per customer on Payment window=1h/2\n",
         2, "takes no window"},
        {"entity customer key=customer_id\nfeature a = median(amount_minor) per customer on Payment\n",
         2, "unknown aggregation 'median'"},
        {"entity customer key=customer_id\nfeature a = value() on Payment where kind=LOAN\n", 2,
         "'LOAN' is not a symbol of kind"},
        {"entity customer key=customer_id\nfeature a = value() on Payment where kind<REFUND\n", 2,
         "compares with = or != only"},
        {"entity customer key=customer_id\nfeature a = value() on Payment where mcc<abc\n", 2,
         "not a decimal number"},
        {"entity customer key=customer_id\nfeature a = value() on Payment where hour(mcc)<6\n", 2,
         "not a timestamp-millis field"},
        {"entity customer key=customer_id\nfeature a = value(change(amount_minor)) on Payment\n", 2,
         "stateful aggregations only"},
        {"entity customer key=customer_id\nfeature a = value() on Payment per customer\n", 2,
         "takes no 'per KIND'"},
        {"entity customer key=customer_id\nfeature a = value() on Payment where mcc=1 per customer\n",
         2, "come last"},
        {"entity customer key=customer_id\nfeature a = value(amount_minor*1e3) on Payment\n", 2,
         "not a decimal number"},
        {"entity customer key=customer_id\nfeature a = value(amount_minor/0) on Payment\n", 2,
         "division by zero"},
        {"entity customer key=customer_id\nfeature a = value() on Payment where mcc=1 and\n", 2,
         "'and' needs a condition"},
        {"entity customer key=customer_id\nfeature a = value() on Payment where mcc=1 and b=2\n",
         2, "has no field 'b'"},
        {"entity customer key=customer_id\nfeature a = value() on Payment where mcc=1 and mcc=2 "
         "and mcc=3 and mcc=4 and mcc=5\n", 2, "too many conditions"},
        {"entity customer key=customer_id\nfeature a = value() on Payment on Payment\n", 2,
         "'on' given twice"},
        {"entity customer key=customer_id ttl=0s\n", 1, "bad ttl"},
        {"entity customer key=customer_id wat=1\n", 1, "[ttl=DUR]"},
        {"entity customer key=customer_id\nfeature a = count per customer on Payment window=2h/2 "
         "delay=30m\n", 2, "not a whole number of the window's"},
        {"entity customer key=customer_id\nfeature a = count per customer on Payment "
         "window=128h/128 delay=400h\n", 2, "at most 512"},
        {"entity customer key=customer_id\nfeature a = count per customer on Payment window=2h/2 "
         "time=mcc\n", 2, "not a timestamp-millis field"},
        {"entity customer key=customer_id\nfeature a = last(mcc) per customer on Payment "
         "time=event_time\n", 2, "takes no time"},
        {"entity customer key=customer_id\nfeature a = sum(delta(mcc,nope)) per customer on "
         "Payment window=1h/1\n", 2, "unknown entity kind 'nope'"},
        {"entity customer key=customer_id\nentity payment key=payment_id\nfeature a = "
         "sum(delta(mcc,payment)) per customer on Payment window=1h/1\n", 3,
         "does not touch entity 'payment'"},
        {"entity customer key=customer_id\nfeature a = value(delta(mcc,customer)) on Payment\n",
         2, "stateful aggregations only"},
        {"entity customer key=customer_id\nfeature a = value() on Payment\nfeature a = value() on "
         "Payment\n", 3, "feature 'a' declared twice"},
        {"entity customer key=customer_id\nderived r = ratio(a,b)\n", 2,
         "'a' is not a feature declared on an earlier line"},
        {"entity customer key=customer_id\nfeature a = value() on Payment\nderived r = ratio(a)\n",
         3, "ratio takes 2 arguments"},
        {"entity customer key=customer_id\nfeature a = value() on Payment\nderived r = pow(a,a)\n",
         3, "unknown derived operation 'pow'"},
        {"entity customer key=customer_id\nfeature a = value() on Payment\nderived r = log1p(a) "
         "scale=x\n", 3, "bad scale"},
        {"entity customer key=customer_id\nfeature a = value() on Payment junk\n", 2,
         "unexpected 'junk'"},
        {"entity customer key=customer_id\nfeature 9a = value() on Payment\n", 2,
         "bad feature name"},
        {"entity customer key=customer_id\nfeature a = ewma(amount_minor) per customer on Payment "
         "halflife=400d\n", 2, "bad halflife"},
        {"# only a comment\n", 0, "no entity declared"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char err[1024] = "";
        rf_decl_t *d = decl_text(cases[i].text, err, sizeof err);
        CHECK(d == NULL);
        rf_decl_destroy(d);
        int ok = strstr(err, cases[i].want) != NULL;
        if (cases[i].line > 0) {
            char at[32];
            snprintf(at, sizeof at, ":%d: ", cases[i].line);
            ok = ok && strstr(err, at) != NULL && strstr(err, "/tmp/rf_test_decl_") == err;
        }
        if (!ok)
            fprintf(stderr, "  case %zu: got \"%s\", want line %d and \"%s\"\n", i, err,
                    cases[i].line, cases[i].want);
        CHECK(ok);
    }
    char err[512];
    CHECK(rf_decl_load("/nonexistent/features.conf", schemas, err, sizeof err) == NULL);
    CHECK(strstr(err, "/nonexistent/features.conf: cannot open") != NULL);
}

/* ---- the layout ---- */

static void test_layout(void) {
    char err[512];
    rf_decl_t *d = decl_text("entity customer key=customer_id   # trailing comment\n"
                             "\n"
                             "feature c1 = count per customer on Payment window=1h/3\n"
                             "feature s1 = std(amount_minor) per customer on Payment window=1h/3\n"
                             "feature l =  last(amount_minor) per customer on Payment\n"
                             "derived x = ratio(c1,s1)\n"
                             "feature e = ewma(amount_minor) per customer on Payment halflife=1h\n"
                             "feature p = sum(change(amount_minor)) per customer on Payment "
                             "window=60m/3\n",
                             err, sizeof err);
    CHECK(d != NULL);
    if (!d) {
        fprintf(stderr, "  %s\n", err);
        return;
    }
    /* header 88; group: head 88, cnt[3] 96..108 + 4 pad, sum(amount_minor) 112, m2 136,
     * sum(change(amount_minor)) 160 (60m/3 is the same window as 1h/3); last 184 (16); ewma
     * 200 (24); prev Payment.amount_minor 224 (16); 240 in all */
    CHECK_EQ_INT(rf_decl_value_size(d, 0), 240);
    CHECK_EQ_INT(rf_decl_feature(d, rf_decl_find(d, "l"))->off, 184);
    CHECK_EQ_INT(rf_decl_feature(d, rf_decl_find(d, "e"))->off, 200);
    const struct rf_feature *s1 = rf_decl_feature(d, rf_decl_find(d, "s1"));
    CHECK_EQ_INT(s1->off, 88);
    CHECK_EQ_INT(s1->col[RF_COL_SUM], 112);
    CHECK_EQ_INT(s1->col[RF_COL_M2], 136);
    CHECK_EQ_INT(rf_decl_feature(d, rf_decl_find(d, "p"))->col[RF_COL_SUM], 160);
    /* the canonical text: tokens joined by one space, derived lines left out */
    CHECK_EQ_STR(rf_decl_canonical(d, 0),
                 "entity customer key=customer_id\n"
                 "feature c1 = count per customer on Payment window=1h/3\n"
                 "feature s1 = std(amount_minor) per customer on Payment window=1h/3\n"
                 "feature l = last(amount_minor) per customer on Payment\n"
                 "feature e = ewma(amount_minor) per customer on Payment halflife=1h\n"
                 "feature p = sum(change(amount_minor)) per customer on Payment window=60m/3\n");
    rf_decl_destroy(d);

    /* the hash of a canonical text computed independently (Python, FNV-1a 64) */
    d = decl_text("entity customer key=customer_id\n"
                  "feature c1 = count per customer on Payment window=1h/3\n"
                  "feature s1 = std(amount_minor) per customer on Payment window=1h/3\n"
                  "feature l = last(amount_minor) per customer on Payment\n"
                  "feature e = ewma(amount_minor) per customer on Payment halflife=1h\n"
                  "feature p = sum(change(amount_minor)) per customer on Payment window=1h/3\n",
                  err, sizeof err);
    CHECK(d != NULL);
    if (d) {
        CHECK(rf_decl_hash(d, 0) == 0x0a341b8987e7a3c3ull);
        rf_decl_destroy(d);
    }

    /* job state goes last, 8-aligned, and joins the hash */
    d = decl_text("entity instrument key=instrument\n"
                  "feature q = last(price) per instrument on Trade\n", err, sizeof err);
    CHECK(d != NULL);
    if (d) {
        uint64_t h0 = rf_decl_hash(d, 0);
        rf_decl_destroy(d);
        char path[] = "/tmp/rf_test_decl_XXXXXX";
        int fd = mkstemp(path);
        FILE *f = fdopen(fd, "w");
        fputs("entity instrument key=instrument\nfeature q = last(price) per instrument on Trade\n",
              f);
        fclose(f);
        d = rf_decl_load(path, schemas, err, sizeof err);
        unlink(path);
        int slot = -1, slot2 = -1;
        CHECK_EQ_INT(rf_decl_add_job_state(d, 0, "market", 1, 13, &slot), 0);
        CHECK_EQ_INT(rf_decl_add_job_state(d, 0, "other", 2, 8, &slot2), 0);
        CHECK_EQ_INT(rf_decl_finish(d, err, sizeof err), 0);
        CHECK_EQ_INT(rf_decl_job_off(d, slot), 104);
        CHECK_EQ_INT(rf_decl_job_off(d, slot2), 120);
        CHECK_EQ_INT(rf_decl_value_size(d, 0), 128);
        CHECK(rf_decl_hash(d, 0) != h0);
        CHECK(strstr(rf_decl_canonical(d, 0), "job market 1 13\njob other 2 8\n") != NULL);
        CHECK_EQ_INT(rf_decl_add_job_state(d, 0, "late", 1, 8, &slot), RF_E_INVAL);
        rf_decl_destroy(d);
    }

    /* the shipped file loads */
    d = rf_decl_load("deploy/features.conf", schemas, err, sizeof err);
    CHECK(d != NULL);
    if (!d) {
        fprintf(stderr, "  %s\n", err);
        return;
    }
    CHECK_EQ_INT(rf_decl_finish(d, err, sizeof err), 0);
    CHECK(rf_decl_kind(d, "customer") >= 0 && rf_decl_kind(d, "instrument") >= 0);
    rf_decl_destroy(d);
}

static void test_values(void) {
    char err[512];
    rf_decl_t *d = decl_text("entity customer key=customer_id\n"
                             "feature tsl = time_since_last per customer on Payment cap=1h\n"
                             "feature c = count per customer on Payment window=1h/4\n",
                             err, sizeof err);
    CHECK(d != NULL);
    if (!d)
        return;
    uint64_t mem[64];
    uint8_t *v = (uint8_t *)mem;
    uint32_t n = rf_decl_value_size(d, 0);
    rf_feat_init_value(d, 0, v);
    CHECK_EQ_INT(rf_feat_check_value(d, 0, v, n), 0);
    CHECK_EQ_INT(rf_feat_t_last(v), INT64_MIN);
    CHECK_EQ_INT(rf_feat_check_value(d, 0, v, n - 1), RF_E_MALFORMED);
    v[0] ^= 1;
    CHECK_EQ_INT(rf_feat_check_value(d, 0, v, n), RF_E_MALFORMED);
    v[0] ^= 1;
    v[9] ^= 1; /* the hash */
    CHECK_EQ_INT(rf_feat_check_value(d, 0, v, n), RF_E_MALFORMED);
    v[9] ^= 1;
    v[6] = 5; /* n_sources */
    CHECK_EQ_INT(rf_feat_check_value(d, 0, v, n), RF_E_MALFORMED);
    v[6] = 0;
    v[4] = 2; /* version */
    CHECK_EQ_INT(rf_feat_check_value(d, 0, v, n), RF_E_MALFORMED);
    rf_decl_destroy(d);
    CHECK_EQ_INT(rf_feat_topic_id(""), 2166136261u);
    CHECK_EQ_INT(rf_feat_topic_id(NULL), 2166136261u);
}

/* ---- hand-computed cases ---- */

static void test_windows_by_hand(void) {
    char err[512];
    rf_decl_t *d = decl_text(
        "entity customer key=customer_id\n"
        "feature c = count per customer on Payment window=1h/4\n"
        "feature s = sum(amount_minor/100) per customer on Payment window=1h/4\n"
        "feature m = mean(amount_minor) per customer on Payment window=1h/4\n"
        "feature sd = std(amount_minor) per customer on Payment window=1h/4\n"
        "feature sq = sumsq(amount_minor) per customer on Payment window=1h/4\n"
        "feature lo = min(amount_minor) per customer on Payment window=1h/4\n"
        "feature hi = max(amount_minor) per customer on Payment window=1h/4\n"
        "feature ce = count per customer on Payment window=1h/4 where channel=ECOM\n",
        err, sizeof err);
    CHECK(d != NULL);
    if (!d) {
        fprintf(stderr, "  %s\n", err);
        return;
    }
    struct ents e;
    struct payrec p;
    ents_fresh(&e, d);
    /* tiles of 15 minutes; T0 is a tile boundary */
    make_payment(&p, "C", 100, T0 + 1 * MIN_MS, RF_CHANNEL_POS, RF_KIND_PURCHASE);
    CHECK(apply(d, &e, &p.r));
    make_payment(&p, "C", 300, T0 + 16 * MIN_MS, RF_CHANNEL_ECOM, RF_KIND_PURCHASE);
    CHECK(apply(d, &e, &p.r));
    make_payment(&p, "C", 200, T0 + 20 * MIN_MS, RF_CHANNEL_POS, RF_KIND_PURCHASE);
    CHECK(apply(d, &e, &p.r));
    CHECK(feat(d, &e, "c", &p.r) == 3.0);
    CHECK_NEAR(feat(d, &e, "s", &p.r), 6.0, 1e-15, 0);
    CHECK(feat(d, &e, "m", &p.r) == 200.0);
    CHECK_NEAR(feat(d, &e, "sd", &p.r), sqrt(20000.0 / 3.0), 1e-12, 0);
    CHECK(feat(d, &e, "sq", &p.r) == 140000.0);
    CHECK(feat(d, &e, "lo", &p.r) == 100.0);
    CHECK(feat(d, &e, "hi", &p.r) == 300.0);
    CHECK(feat(d, &e, "ce", &p.r) == 1.0);
    /* 61 minutes: tile 4, the first tile (0) leaves the window */
    make_payment(&p, "C", 50, T0 + 61 * MIN_MS, RF_CHANNEL_POS, RF_KIND_PURCHASE);
    CHECK(apply(d, &e, &p.r));
    CHECK(feat(d, &e, "c", &p.r) == 3.0);
    CHECK(feat(d, &e, "m", &p.r) == 550.0 / 3.0);
    CHECK(feat(d, &e, "lo", &p.r) == 50.0);
    /* a late event inside the window counts in its tile; one older than it does not */
    make_payment(&p, "C", 1000, T0 + 17 * MIN_MS, RF_CHANNEL_ECOM, RF_KIND_PURCHASE);
    CHECK(apply(d, &e, &p.r));
    CHECK(feat(d, &e, "c", &p.r) == 4.0);
    CHECK(feat(d, &e, "hi", &p.r) == 1000.0);
    CHECK(feat(d, &e, "ce", &p.r) == 2.0);
    make_payment(&p, "C", 7, T0 + 2 * MIN_MS, RF_CHANNEL_POS, RF_KIND_PURCHASE);
    CHECK(apply(d, &e, &p.r));
    CHECK(feat(d, &e, "c", &p.r) == 4.0);
    CHECK(feat(d, &e, "lo", &p.r) == 50.0);
    /* a gap of a whole window clears everything */
    make_payment(&p, "C", 5, T0 + 200 * MIN_MS, RF_CHANNEL_POS, RF_KIND_PURCHASE);
    CHECK(apply(d, &e, &p.r));
    CHECK(feat(d, &e, "c", &p.r) == 1.0);
    CHECK(feat(d, &e, "sd", &p.r) == 0.0);
    CHECK(feat(d, &e, "ce", &p.r) == 0.0); /* the filtered window aged out too */
    /* times before the epoch: floor division */
    ents_fresh(&e, d);
    make_payment(&p, "C", 1, -1, RF_CHANNEL_POS, RF_KIND_PURCHASE);
    CHECK(apply(d, &e, &p.r));
    make_payment(&p, "C", 2, -15 * MIN_MS, RF_CHANNEL_POS, RF_KIND_PURCHASE);
    CHECK(apply(d, &e, &p.r));
    make_payment(&p, "C", 4, 0, RF_CHANNEL_POS, RF_KIND_PURCHASE);
    CHECK(apply(d, &e, &p.r));
    CHECK(feat(d, &e, "c", &p.r) == 3.0);
    make_payment(&p, "C", 8, 45 * MIN_MS, RF_CHANNEL_POS, RF_KIND_PURCHASE);
    CHECK(apply(d, &e, &p.r)); /* tile 3: window is tiles 0..3; -1 (tile -1) left */
    CHECK(feat(d, &e, "c", &p.r) == 2.0);
    CHECK(feat(d, &e, "s", &p.r) == 0.12);
    rf_decl_destroy(d);
}

static void test_scalars_by_hand(void) {
    char err[512];
    rf_decl_t *d = decl_text(
        "entity customer key=customer_id\n"
        "feature l = last(amount_minor) per customer on Payment\n"
        "feature t = time_since_last per customer on Payment cap=1h\n"
        "feature te = time_since_last per customer on Payment where channel=ECOM\n"
        "feature a = age per customer on Payment cap=2h where channel=ECOM\n"
        "feature w = ewma(amount_minor) per customer on Payment halflife=10m\n"
        "feature ds = dsum(amount_minor) per customer on Payment halflife=10m\n"
        "feature v = value(amount_minor/100) on Payment\n"
        "feature ind = value() on Payment where kind=CASH_WITHDRAWAL\n"
        "feature night = value() on Payment where hour(event_time)<6\n"
        "feature hr = value(hour(event_time)) on Payment\n"
        "derived r = ratio(v,l) default=-1\n"
        "derived df = diff(v,l) scale=2\n"
        "derived im = imbalance(v,l)\n"
        "derived lr = logratio(v,l) default=7\n"
        "derived lp = log1p(v)\n"
        "derived sq = sqrt(v)\n",
        err, sizeof err);
    CHECK(d != NULL);
    if (!d) {
        fprintf(stderr, "  %s\n", err);
        return;
    }
    struct ents e;
    struct payrec p;
    ents_fresh(&e, d);
    make_payment(&p, "C", 400, T0 + 2 * HOUR_MS, RF_CHANNEL_POS, RF_KIND_CASH_WITHDRAWAL);
    /* before anything: last 0, tsl cap, age cap */
    CHECK(feat(d, &e, "l", &p.r) == 0.0);
    CHECK(feat(d, &e, "t", &p.r) == 3600.0);
    CHECK(feat(d, &e, "te", &p.r) == 30.0 * 86400);
    CHECK(feat(d, &e, "a", &p.r) == 7200.0);
    CHECK(feat(d, &e, "ds", &p.r) == 0.0);
    CHECK(apply(d, &e, &p.r));
    CHECK(feat(d, &e, "l", &p.r) == 400.0);
    CHECK(feat(d, &e, "t", &p.r) == 3600.0); /* no previous: the cap */
    CHECK(feat(d, &e, "w", &p.r) == 400.0);
    CHECK(feat(d, &e, "v", &p.r) == 4.0);
    CHECK(feat(d, &e, "ind", &p.r) == 1.0);
    CHECK(feat(d, &e, "night", &p.r) == 1.0); /* 02:00 UTC */
    CHECK(feat(d, &e, "hr", &p.r) == 2.0);
    CHECK_NEAR(feat(d, &e, "r", &p.r), 0.01, 1e-15, 0);
    CHECK_NEAR(feat(d, &e, "df", &p.r), 2 * (4.0 - 400.0), 1e-15, 0);
    CHECK_NEAR(feat(d, &e, "im", &p.r), (4.0 - 400.0) / 404.0, 1e-15, 0);
    CHECK_NEAR(feat(d, &e, "lr", &p.r), log(0.01), 1e-15, 0);
    CHECK_NEAR(feat(d, &e, "lp", &p.r), log1p(4.0), 1e-15, 0);
    CHECK(feat(d, &e, "sq", &p.r) == 2.0);

    /* 90 s later, e-commerce */
    make_payment(&p, "C", 100, T0 + 2 * HOUR_MS + 90000, RF_CHANNEL_ECOM, RF_KIND_PURCHASE);
    CHECK(apply(d, &e, &p.r));
    CHECK(feat(d, &e, "t", &p.r) == 90.0);
    CHECK(feat(d, &e, "te", &p.r) == 30.0 * 86400); /* the first matching */
    CHECK(feat(d, &e, "a", &p.r) == 0.0);
    double k = exp(-0.6931471805599453 * 90000.0 / 600000.0);
    CHECK_NEAR(feat(d, &e, "w", &p.r), (400.0 * k + 100.0) / (k + 1.0), 1e-15, 0);
    CHECK_NEAR(feat(d, &e, "ds", &p.r), 400.0 * k + 100.0, 1e-15, 0);
    CHECK(feat(d, &e, "ind", &p.r) == 0.0);
    CHECK(feat(d, &e, "night", &p.r) == 1.0);

    /* a late event (60 s before the last): tsl 0, last unchanged, ewma weights it back */
    make_payment(&p, "C", 1000, T0 + 2 * HOUR_MS + 30000, RF_CHANNEL_POS, RF_KIND_PURCHASE);
    CHECK(apply(d, &e, &p.r));
    CHECK(feat(d, &e, "t", &p.r) == 0.0);
    CHECK(feat(d, &e, "l", &p.r) == 100.0);
    double k2 = exp(-0.6931471805599453 * 60000.0 / 600000.0);
    double S = 400.0 * k + 100.0 + k2 * 1000.0, W = k + 1.0 + k2;
    CHECK_NEAR(feat(d, &e, "w", &p.r), S / W, 1e-15, 0);
    /* dsum decays to the entity time (the e-commerce event, the latest) */
    CHECK_NEAR(feat(d, &e, "ds", &p.r), S, 1e-15, 0);
    /* age grows with the entity time, not with this event */
    make_payment(&p, "C", 1, T0 + 3 * HOUR_MS, RF_CHANNEL_POS, RF_KIND_PURCHASE);
    CHECK(apply(d, &e, &p.r));
    CHECK(feat(d, &e, "a", &p.r) == 3600.0 - 90.0);
    CHECK_NEAR(feat(d, &e, "ds", &p.r),
               S * exp(-0.6931471805599453 * (3600000.0 - 90000.0) / 600000.0) + 1.0, 1e-12, 0);
    /* 12 more hours: age capped at 2 h; tsl capped at 1 h */
    make_payment(&p, "C", 1, T0 + 15 * HOUR_MS, RF_CHANNEL_POS, RF_KIND_PURCHASE);
    CHECK(apply(d, &e, &p.r));
    CHECK(feat(d, &e, "a", &p.r) == 7200.0);
    CHECK(feat(d, &e, "t", &p.r) == 3600.0);
    CHECK(feat(d, &e, "night", &p.r) == 0.0); /* 15:00 */

    /* derived defaults: l = 1 > 0 so v/l defined; make v 0 */
    make_payment(&p, "C", 0, T0 + 15 * HOUR_MS, RF_CHANNEL_POS, RF_KIND_PURCHASE);
    CHECK(apply(d, &e, &p.r));
    CHECK(feat(d, &e, "lr", &p.r) == 7.0);     /* log(0/..) undefined */
    CHECK(feat(d, &e, "r", &p.r) == -1.0);     /* l is 0 now: ratio by 0 */
    CHECK(feat(d, &e, "im", &p.r) == 0.0);     /* 0 + 0: the default, 0 */
    CHECK(feat(d, &e, "lp", &p.r) == 0.0);
    rf_decl_destroy(d);
}

static void test_change_and_replays(void) {
    char err[512];
    rf_decl_t *d = decl_text(
        "entity instrument key=instrument\n"
        "feature r = sum(logchange(price)) per instrument on Trade window=1m/6\n"
        "feature dq = sum(change(quantity)) per instrument on Trade window=1m/6 where aggressor_side=SELL\n"
        "feature n = count per instrument on Trade window=1m/6\n",
        err, sizeof err);
    CHECK(d != NULL);
    if (!d) {
        fprintf(stderr, "  %s\n", err);
        return;
    }
    struct ents e;
    struct traderec t;
    ents_fresh(&e, d);
    make_trade(&t, "X", 100.0, 5, 0, T0);
    CHECK(apply(d, &e, &t.r));
    CHECK(feat(d, &e, "r", &t.r) == 0.0); /* no previous price */
    make_trade(&t, "X", 101.0, 7, 1, T0 + 1000);
    CHECK(apply(d, &e, &t.r));
    CHECK_NEAR(feat(d, &e, "r", &t.r), log(101.0 / 100.0), 1e-15, 0);
    CHECK(feat(d, &e, "dq", &t.r) == 2.0); /* the previous is any trade's, filters aside */
    make_trade(&t, "X", 99.0, 4, 0, T0 + 2000);
    CHECK(apply(d, &e, &t.r));
    CHECK_NEAR(feat(d, &e, "r", &t.r), log(101.0 / 100.0) + log(99.0 / 101.0), 1e-15, 0);
    CHECK(feat(d, &e, "dq", &t.r) == 2.0);

    /* replays: a source holds offsets up to its last; 4 sources, most recent first */
    rf_decl_destroy(d);
    d = decl_text("entity instrument key=instrument\n"
                  "feature n = count per instrument on Trade window=1m/6\n", err, sizeof err);
    ents_fresh(&e, d);
    make_trade(&t, "X", 1.0, 1, 0, T0);
    ents_for(&e, d, &t.r);
    struct rf_src s[6];
    for (int i = 0; i < 6; i++)
        s[i] = (struct rf_src){rf_feat_topic_id(i < 3 ? "a" : "b"), i % 3, 10};
    for (int i = 0; i < 5; i++) {
        CHECK(!rf_feat_is_replay(d, &t.r, e.v, &s[i]));
        rf_feat_apply(d, &t.r, e.v, &s[i]);
    }
    CHECK(feat(d, &e, "n", &t.r) == 5.0);
    /* sources 1..4 are held (the 5th applied dropped source 0) */
    for (int i = 1; i < 5; i++) {
        CHECK(rf_feat_is_replay(d, &t.r, e.v, &s[i]));
        struct rf_src later = s[i];
        later.offset = 11;
        CHECK(!rf_feat_is_replay(d, &t.r, e.v, &later));
        later.offset = 9;
        CHECK(rf_feat_is_replay(d, &t.r, e.v, &later));
    }
    CHECK(!rf_feat_is_replay(d, &t.r, e.v, &s[0])); /* dropped: no longer protected */
    CHECK(!rf_feat_is_replay(d, &t.r, e.v, &s[5]));
    /* a replay changes nothing: the caller skips apply, and values compare equal */
    uint8_t before[RF_VALUE_MAX];
    memcpy(before, e.v[0], rf_decl_value_size(d, 0));
    CHECK(rf_feat_is_replay(d, &t.r, e.v, &s[4]));
    CHECK(memcmp(before, e.v[0], rf_decl_value_size(d, 0)) == 0);
    /* applying source 2 again (offset 11) moves it to the front */
    struct rf_src again = s[2];
    again.offset = 11;
    rf_feat_apply(d, &t.r, e.v, &again);
    uint32_t front;
    memcpy(&front, e.v[0] + RF_VOFF_SOURCES, 4);
    int32_t fpart;
    memcpy(&fpart, e.v[0] + RF_VOFF_SOURCES + 4, 4);
    CHECK(front == again.topic_id && fpart == 2);
    CHECK_EQ_INT(e.v[0][RF_VOFF_NSOURCES], 4);
    rf_decl_destroy(d);
}

/* ---- brute force: every windowed aggregation against the text, on random streams ---- */

struct bev {
    int64_t t;
    double x;
    int match;
    int counted; /* inside the window when it arrived */
};

static void test_brute_force(void) {
    char err[512];
    rf_decl_t *d = decl_text(
        "entity customer key=customer_id\n"
        "feature c = count per customer on Payment window=1h/6 where channel!=ATM\n"
        "feature s = sum(amount_minor/100) per customer on Payment window=1h/6 where channel!=ATM\n"
        "feature m = mean(amount_minor/100) per customer on Payment window=1h/6 where channel!=ATM\n"
        "feature sd = std(amount_minor/100) per customer on Payment window=1h/6 where channel!=ATM\n"
        "feature q = sumsq(amount_minor/100) per customer on Payment window=1h/6 where channel!=ATM\n"
        "feature lo = min(amount_minor/100) per customer on Payment window=1h/6 where channel!=ATM\n"
        "feature hi = max(amount_minor/100) per customer on Payment window=1h/6 where channel!=ATM\n"
        "feature w = ewma(amount_minor/100) per customer on Payment halflife=20m\n"
        "feature l = last(amount_minor/100) per customer on Payment\n",
        err, sizeof err);
    CHECK(d != NULL);
    if (!d) {
        fprintf(stderr, "  %s\n", err);
        return;
    }
    const int64_t tile = 10 * MIN_MS, ntiles = 6;
    int bad = 0;
    for (int run = 0; run < 40; run++) {
        struct ents e;
        ents_fresh(&e, d);
        struct bev ev[400];
        int n = 0;
        int64_t head = INT64_MIN, clock = T0 + (int64_t)(rnd() % 1000000);
        double S = 0, W = 0, lx = 0;
        int64_t t0 = INT64_MIN, lt = INT64_MIN;
        for (int i = 0; i < 400; i++) {
            /* mostly forward in bursts, sometimes late, sometimes a long gap */
            double u = unif();
            int64_t t = u < 0.1 ? clock - (int64_t)(rnd() % (2 * HOUR_MS))
                        : u < 0.15 ? (clock += (int64_t)(rnd() % (3 * HOUR_MS)))
                                   : (clock += (int64_t)(rnd() % (5 * MIN_MS)));
            int64_t amt = (int64_t)(rnd() % 100000) - 2000;
            enum rf_channel ch = (enum rf_channel)(rnd() % 4);
            struct payrec p;
            make_payment(&p, "C", amt, t, ch, RF_KIND_PURCHASE);
            CHECK(apply(d, &e, &p.r));
            double x = (double)amt / 100.0;
            int64_t ti = t >= 0 ? t / tile : -((-t + tile - 1) / tile);
            if (head == INT64_MIN || ti > head)
                head = ti;
            ev[n++] = (struct bev){t, x, ch != RF_CHANNEL_ATM, head - ti < ntiles};
            /* ewma, last by the text */
            if (t0 == INT64_MIN) {
                S = x;
                W = 1;
                t0 = t;
            } else if (t >= t0) {
                double k = exp(-0.6931471805599453 * (double)(t - t0) / (20.0 * MIN_MS));
                S = S * k + x;
                W = W * k + 1;
                t0 = t;
            } else {
                double k = exp(-0.6931471805599453 * (double)(t0 - t) / (20.0 * MIN_MS));
                S += k * x;
                W += k;
            }
            if (lt == INT64_MIN || t >= lt) {
                lt = t;
                lx = x;
            }
            /* the window now: counted matching events with tile in (head - N, head] */
            double cnt = 0, sum = 0, sq = 0, lo = 0, hi = 0;
            int any = 0;
            for (int j = 0; j < n; j++) {
                int64_t tj = ev[j].t >= 0 ? ev[j].t / tile : -((-ev[j].t + tile - 1) / tile);
                if (!ev[j].match || !ev[j].counted || head - tj >= ntiles)
                    continue;
                cnt++;
                sum += ev[j].x;
                sq += ev[j].x * ev[j].x;
                lo = any ? fmin(lo, ev[j].x) : ev[j].x;
                hi = any ? fmax(hi, ev[j].x) : ev[j].x;
                any = 1;
            }
            double mean = cnt ? sum / cnt : 0, var = 0;
            for (int j = 0; j < n; j++) {
                int64_t tj = ev[j].t >= 0 ? ev[j].t / tile : -((-ev[j].t + tile - 1) / tile);
                if (ev[j].match && ev[j].counted && head - tj < ntiles)
                    var += (ev[j].x - mean) * (ev[j].x - mean);
            }
            double sd = cnt ? sqrt(var / cnt) : 0;
            double got[9], want[9] = {cnt, sum, mean, sd, sq, lo, hi, S / W, lx};
            static const char *const names[9] = {"c", "s", "m", "sd", "q", "lo", "hi", "w", "l"};
            for (int f = 0; f < 9; f++) {
                got[f] = feat(d, &e, names[f], &p.r);
                double tol = f == 3 ? 1e-7 * (fabs(want[f]) + 1) : 1e-9 * (fabs(want[f]) + 1);
                if (fabs(got[f] - want[f]) > tol) {
                    if (bad++ < 5)
                        fprintf(stderr, "  run %d event %d %s: got %.17g want %.17g\n", run, i,
                                names[f], got[f], want[f]);
                }
            }
        }
    }
    CHECK_EQ_INT(bad, 0);
    rf_decl_destroy(d);
}

/* A sliced kind: each partition's events applied to its own slice, the slices merged
 * (rf_feat_merge), read like one value fed every event — against exactly that value. */
static void test_slices(void) {
    char err[512];
    static const char *const names[] = {"c",  "s",  "m", "sd", "q",  "lo", "hi",
                                        "dc", "dm", "l", "ag", "ew", "ds"};
    enum { NF = 13, NP = 4 };
    rf_decl_t *d = decl_text(
        "entity customer key=customer_id sliced\n"
        "feature c = count per customer on Payment window=1h/6 where channel!=ATM\n"
        "feature s = sum(amount_minor/100) per customer on Payment window=1h/6\n"
        "feature m = mean(amount_minor/100) per customer on Payment window=1h/6\n"
        "feature sd = std(amount_minor/100) per customer on Payment window=1h/6\n"
        "feature q = sumsq(amount_minor/100) per customer on Payment window=1h/6\n"
        "feature lo = min(amount_minor/100) per customer on Payment window=1h/6\n"
        "feature hi = max(amount_minor/100) per customer on Payment window=1h/6\n"
        "feature dc = count per customer on Payment window=1h/6 delay=30m\n"
        "feature dm = mean(amount_minor/100) per customer on Payment window=2h/4 delay=1h\n"
        "feature l = last(amount_minor/100) per customer on Payment\n"
        "feature ag = age per customer on Payment cap=1d where channel=ATM\n"
        "feature ew = ewma(amount_minor/100) per customer on Payment halflife=20m\n"
        "feature ds = dsum(amount_minor/100) per customer on Payment halflife=1h\n",
        err, sizeof err);
    CHECK(d != NULL);
    if (!d) {
        fprintf(stderr, "  %s\n", err);
        return;
    }
    CHECK_EQ_INT(rf_decl_sliced(d, 0), 1);
    uint32_t size = rf_decl_value_size(d, 0);
    int bad = 0;
    for (int run = 0; run < 30; run++) {
        static uint64_t whole[RF_VALUE_MAX / 8], slice[NP][RF_VALUE_MAX / 8],
            merged[RF_VALUE_MAX / 8];
        rf_feat_init_value(d, 0, (uint8_t *)whole);
        for (int p = 0; p < NP; p++)
            rf_feat_init_value(d, 0, (uint8_t *)slice[p]);
        int64_t clock = T0 + (int64_t)(rnd() % 1000000);
        for (int i = 0; i < 300; i++) {
            double u = unif();
            int64_t t = u < 0.1 ? clock - (int64_t)(rnd() % (2 * HOUR_MS))
                        : u < 0.15 ? (clock += (int64_t)(rnd() % (3 * HOUR_MS)))
                                   : (clock += (int64_t)(rnd() % (5 * MIN_MS)));
            struct payrec pr;
            make_payment(&pr, "C", (int64_t)(rnd() % 100000) - 2000, t,
                         (enum rf_channel)(rnd() % 4), RF_KIND_PURCHASE);
            int part = (int)(rnd() % NP);
            struct rf_src src = {rf_feat_topic_id("t"), part, i};
            uint8_t *ev[RF_KINDS_MAX] = {(uint8_t *)whole};
            rf_feat_apply(d, &pr.r, ev, &src);
            ev[0] = (uint8_t *)slice[part];
            rf_feat_apply(d, &pr.r, ev, &src);
            /* the event's own slice first (as the engine reads it), then the others */
            memcpy(merged, slice[part], size);
            for (int p = 0; p < NP; p++)
                if (p != part)
                    rf_feat_merge(d, 0, (uint8_t *)merged, (const uint8_t *)slice[p]);
            CHECK(rf_feat_t_last((uint8_t *)merged) == rf_feat_t_last((uint8_t *)whole));
            for (int f = 0; f < NF; f++) {
                int id = rf_decl_find(d, names[f]);
                ev[0] = (uint8_t *)whole;
                double want = rf_feat_eval_one(d, id, &pr.r, ev);
                ev[0] = (uint8_t *)merged;
                double got = rf_feat_eval_one(d, id, &pr.r, ev);
                double tol = (f == 3 ? 1e-7 : 1e-9) * (fabs(want) + 1);
                if (fabs(got - want) > tol && bad++ < 5)
                    fprintf(stderr, "  slices run %d event %d %s: got %.17g want %.17g\n", run, i,
                            names[f], got, want);
            }
        }
        /* Merged into a fresh value, in another order: the same. */
        rf_feat_init_value(d, 0, (uint8_t *)merged);
        for (int p = NP - 1; p >= 0; p--)
            rf_feat_merge(d, 0, (uint8_t *)merged, (const uint8_t *)slice[p]);
        struct payrec pr;
        make_payment(&pr, "C", 1, clock, RF_CHANNEL_ECOM, RF_KIND_PURCHASE);
        uint8_t *ev[RF_KINDS_MAX] = {(uint8_t *)whole};
        double want = rf_feat_eval_one(d, rf_decl_find(d, "dm"), &pr.r, ev);
        ev[0] = (uint8_t *)merged;
        CHECK(fabs(rf_feat_eval_one(d, rf_decl_find(d, "dm"), &pr.r, ev) - want) <=
              1e-9 * (fabs(want) + 1));
    }
    CHECK_EQ_INT(bad, 0);
    /* A job's state has one writer: never on a sliced kind. */
    char path[] = "/tmp/rf_test_sliced_XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    FILE *fp = fdopen(fd, "w");
    fputs("entity customer key=customer_id sliced\nentity card key=card_token\n", fp);
    fclose(fp);
    rf_decl_t *d2 = rf_decl_load(path, schemas, err, sizeof err);
    unlink(path);
    CHECK(d2 != NULL);
    int slot = -1;
    if (d2) {
        CHECK_EQ_INT(rf_decl_add_job_state(d2, 0, "fraud", 1, 8, &slot), RF_E_INVAL);
        CHECK_EQ_INT(rf_decl_add_job_state(d2, 1, "fraud", 1, 8, &slot), 0);
    }
    rf_decl_destroy(d2);
    rf_decl_destroy(d);
}

static void test_plans(void) {
    char err[512];
    rf_decl_t *d = rf_decl_load("deploy/features.conf", schemas, err, sizeof err);
    CHECK(d != NULL);
    if (!d)
        return;
    CHECK_EQ_INT(rf_decl_finish(d, err, sizeof err), 0);
    const struct rf_rtype *pay = rf_schemas_rtype_named(schemas, "Payment");
    const struct rf_rtype *cred = rf_schemas_rtype_named(schemas, "CreditEvent");
    const struct rf_rtype *types[] = {pay, cred};
    const char *fraud[] = {"amount", "cust_amount_ratio_24h", "is_night"};
    rf_feat_plan_t *plan = rf_feat_plan_new(d, fraud, 3, types, 1, err, sizeof err);
    CHECK(plan != NULL);
    if (plan) {
        CHECK_EQ_INT(rf_feat_plan_n(plan), 3);
        CHECK_EQ_STR(rf_feat_plan_name(plan, 1), "cust_amount_ratio_24h");
        rf_feat_plan_destroy(plan);
    }
    /* amount is value() on Payment: not available for credit events */
    CHECK(rf_feat_plan_new(d, fraud, 3, types, 2, err, sizeof err) == NULL);
    CHECK(strstr(err, "feature 'amount' (deploy/features.conf:") && strstr(err, "riskflow.CreditEvent"));
    const char *credit[] = {"cr_utilisation", "cr_cash_30d"};
    plan = rf_feat_plan_new(d, credit, 2, types, 2, err, sizeof err);
    CHECK(plan != NULL);
    rf_feat_plan_destroy(plan);
    const char *nope[] = {"cr_utilisation", "no_such"};
    CHECK(rf_feat_plan_new(d, nope, 2, types, 2, err, sizeof err) == NULL);
    CHECK(strstr(err, "feature 'no_such' is not declared in deploy/features.conf") != NULL);

    /* a plan evaluates like rf_feat_eval_one */
    struct ents e;
    struct payrec p;
    ents_fresh(&e, d);
    const char *all[] = {"cust_amount_ratio_24h", "amount", "cust_count_1h", "log_amount",
                         "cr_spend_to_income"};
    plan = rf_feat_plan_new(d, all, 5, types, 1, err, sizeof err);
    CHECK(plan != NULL);
    for (int i = 0; plan && i < 50; i++) {
        make_payment(&p, "C", 100 + i * 37, T0 + i * 61000, RF_CHANNEL_POS,
                     i % 3 ? RF_KIND_PURCHASE : RF_KIND_TRANSFER_IN);
        CHECK(apply(d, &e, &p.r));
        double out[5];
        ents_for(&e, d, &p.r);
        rf_feat_eval(plan, &p.r, e.v, out);
        for (int j = 0; j < 5; j++)
            CHECK(out[j] == feat(d, &e, all[j], &p.r));
    }
    rf_feat_plan_destroy(plan);
    rf_decl_destroy(d);
}

static void setup(void) {
    char err[512];
    schemas = rf_schemas_load("schemas", err, sizeof err);
    if (!schemas)
        fprintf(stderr, "schemas: %s\n", err);
}

/* ---- labels: delay=, time=, delta() (FEATURES.md §2.3, §2.5) ---- */

/* A FraudLabel built field by field (strings point into lr->buf). */
struct labelrec {
    char buf[64];
    struct rf_rec r;
};

static void make_label(struct labelrec *lr, const char *payment, int64_t pay_t, int fraud,
                       int64_t t) {
    const struct rf_rtype *rt = rf_schemas_rtype_named(schemas, "riskflow.FraudLabel");
    memset(lr, 0, sizeof *lr);
    size_t n = strlen(payment);
    memcpy(lr->buf, "T1", 2);
    memcpy(lr->buf + 2, payment, n);
    lr->r.type = rt;
    lr->r.base = (const uint8_t *)lr->buf;
    lr->r.v[rf_rtype_field(rt, "terminal_id")].s.len = 2;
    lr->r.v[rf_rtype_field(rt, "payment_id")].s.off = 2;
    lr->r.v[rf_rtype_field(rt, "payment_id")].s.len = (uint32_t)n;
    lr->r.v[rf_rtype_field(rt, "customer_id")].s.len = 2;
    lr->r.v[rf_rtype_field(rt, "card_token")].s.len = 2;
    lr->r.v[rf_rtype_field(rt, "payment_time")].i = pay_t;
    lr->r.v[rf_rtype_field(rt, "label_time")].i = t;
    lr->r.v[rf_rtype_field(rt, "is_fraud")].i = fraud;
}

/* The same case as tools/train/test_riskflow_features.py's test_delay_time_and_delta_by_hand,
 * on the shipped schemas: a terminal's payments and its payments' fraud labels over 1 h tiles,
 * read 1 tile back; each labelled payment keeps its previous verdict (its own value here). */
static void test_labels_by_hand(void) {
    char err[512];
    rf_decl_t *d = decl_text(
        "entity terminal key=terminal_id\n"
        "entity payment key=payment_id ttl=30d\n"
        "feature tx = count per terminal on Payment window=2h/2 delay=1h\n"
        "feature fr = sum(delta(is_fraud,payment)) per terminal on FraudLabel window=2h/2 "
        "delay=1h time=payment_time\n"
        "derived risk = ratio(fr,tx) default=0\n",
        err, sizeof err);
    CHECK(d != NULL);
    if (!d) {
        fprintf(stderr, "%s\n", err);
        return;
    }
    CHECK(rf_decl_ttl_ms(d, 1) == 30 * 24 * HOUR_MS);
    CHECK(rf_decl_ttl_ms(d, 0) == 0);
    {
        const struct rf_rtype *pay = rf_schemas_rtype_named(schemas, "riskflow.Payment");
        const char *risk[] = {"risk"}, *tx[] = {"tx"};
        rf_feat_plan_t *pr = rf_feat_plan_new(d, risk, 1, &pay, 1, err, sizeof err);
        rf_feat_plan_t *pt = rf_feat_plan_new(d, tx, 1, &pay, 1, err, sizeof err);
        CHECK(pr && pt);
        if (pr && pt) {
            /* risk = ratio(fr, tx): its argument fr is kept by labels */
            CHECK(rf_feat_plan_reads(pr, rf_schemas_rtype_named(schemas, "riskflow.FraudLabel")));
            CHECK(rf_feat_plan_reads(pr, pay));
            CHECK(!rf_feat_plan_reads(pt, rf_schemas_rtype_named(schemas, "riskflow.FraudLabel")));
            CHECK(!rf_feat_plan_reads(pr, rf_schemas_rtype_named(schemas, "riskflow.Trade")));
        }
        rf_feat_plan_destroy(pr);
        rf_feat_plan_destroy(pt);
    }
    struct ents e;
    ents_fresh(&e, d);
    static uint64_t pays[10][RF_VALUE_MAX / 8]; /* the payment kind's values, p0..p9 */
    for (int i = 0; i < 10; i++)
        rf_feat_init_value(d, 1, (uint8_t *)pays[i]);
    const int64_t H = HOUR_MS;
    struct payrec pr;
    struct labelrec lr;
#define PAY(t)                                                                     \
    do {                                                                           \
        make_payment(&pr, "c", 1000, T0 + (t), RF_CHANNEL_POS, RF_KIND_PURCHASE); \
        CHECK(apply(d, &e, &pr.r));                                                \
    } while (0)
#define LABEL(t, p, pay_t, fraud)                                                  \
    do {                                                                           \
        char id_[4] = {'p', (char)('0' + (p)), 0, 0};                              \
        make_label(&lr, id_, T0 + (pay_t), fraud, T0 + (t));                       \
        struct rf_src src_ = {rf_feat_topic_id("t"), 0, next_offset++};            \
        ents_for(&e, d, &lr.r);                                                    \
        e.v[1] = (uint8_t *)pays[p];                                               \
        CHECK(!rf_feat_is_replay(d, &lr.r, e.v, &src_));                           \
        rf_feat_apply(d, &lr.r, e.v, &src_);                                       \
    } while (0)
    PAY(H / 2);
    CHECK(feat(d, &e, "tx", &pr.r) == 0);           /* head 0: tiles -2, -1 */
    PAY(3 * H / 2);
    CHECK(feat(d, &e, "tx", &pr.r) == 1);           /* head 1: tiles -1, 0 */
    LABEL(16 * H / 10, 1, H / 2, 1);                /* p1 fraud: +1 in tile 0 */
    CHECK(feat(d, &e, "fr", &lr.r) == 1);
    CHECK(feat(d, &e, "risk", &lr.r) == 1);
    LABEL(17 * H / 10, 1, H / 2, 1);                /* again: delta 0 */
    CHECK(feat(d, &e, "fr", &lr.r) == 1);
    PAY(5 * H / 2);                                 /* head 2: tiles 0, 1 */
    CHECK(feat(d, &e, "tx", &pr.r) == 2);
    CHECK(feat(d, &e, "risk", &pr.r) == 0.5);
    LABEL(26 * H / 10, 2, 3 * H / 2, 1);
    CHECK(feat(d, &e, "fr", &lr.r) == 2);
    LABEL(27 * H / 10, 1, H / 2, 0);                /* p1 withdrawn: -1 */
    CHECK(feat(d, &e, "fr", &lr.r) == 1);
    PAY(7 * H / 2);                                 /* head 3: tiles 1, 2 */
    CHECK(feat(d, &e, "tx", &pr.r) == 2);
    CHECK(feat(d, &e, "fr", &pr.r) == 1);
    LABEL(36 * H / 10, 9, 10 * H, 1);               /* a payment after the head: no tile */
    CHECK(feat(d, &e, "fr", &lr.r) == 1);
    LABEL(37 * H / 10, 8, H / 5, 1);                /* older than the ring: no tile */
    CHECK(feat(d, &e, "fr", &lr.r) == 1);
    LABEL(38 * H / 10, 7, 5 * H / 2, 1);            /* never seen: +1 */
    CHECK(feat(d, &e, "fr", &lr.r) == 2);
#undef PAY
#undef LABEL
    /* The ttl is not part of the layout. */
    rf_decl_t *plain = decl_text("entity terminal key=terminal_id\n"
                                 "entity payment key=payment_id\n"
                                 "feature tx = count per terminal on Payment window=2h/2 delay=1h\n"
                                 "feature fr = sum(delta(is_fraud,payment)) per terminal on "
                                 "FraudLabel window=2h/2 delay=1h time=payment_time\n",
                                 err, sizeof err);
    CHECK(plain != NULL);
    if (plain) {
        CHECK(rf_decl_hash(plain, 1) == rf_decl_hash(d, 1));
        CHECK(rf_decl_value_size(plain, 1) == rf_decl_value_size(d, 1));
    }
    rf_decl_destroy(plain);
    rf_decl_destroy(d);
}

/* A replay held by some of its entities only (a cluster flush cut short, store.h): applied
 * to the others, it leaves every value as one full application does. The labelled payment
 * keeps the previous verdict delta() reads, so it is written last: the cut to repair is the
 * terminal holding the label and the payment not. */
static void test_apply_missing(void) {
    char err[512];
    rf_decl_t *d = decl_text(
        "entity terminal key=terminal_id\n"
        "entity payment key=payment_id\n"
        "feature fr = sum(delta(is_fraud,payment)) per terminal on FraudLabel window=2h/2 "
        "time=payment_time\n"
        "feature n = count per terminal on FraudLabel window=2h/2\n",
        err, sizeof err);
    CHECK(d != NULL);
    if (!d) {
        fprintf(stderr, "%s\n", err);
        return;
    }
    CHECK(!rf_decl_written_last(d, 0) && rf_decl_written_last(d, 1));
    uint32_t ts = rf_decl_value_size(d, 0), ps = rf_decl_value_size(d, 1);
    static uint64_t term[RF_VALUE_MAX / 8], pay[RF_VALUE_MAX / 8];
    static uint64_t full_t[RF_VALUE_MAX / 8], full_p[RF_VALUE_MAX / 8];
    rf_feat_init_value(d, 0, (uint8_t *)term);
    rf_feat_init_value(d, 1, (uint8_t *)pay);
    struct labelrec lr;
    uint8_t *ev[RF_KINDS_MAX] = {(uint8_t *)term, (uint8_t *)pay};
    /* p0 labelled fraud, then genuine (the second label's delta is -1). */
    make_label(&lr, "p0", T0, 1, T0 + 1000);
    struct rf_src s1 = {rf_feat_topic_id("t"), 0, 1}, s2 = {rf_feat_topic_id("t"), 0, 2};
    rf_feat_apply(d, &lr.r, ev, &s1);
    make_label(&lr, "p0", T0, 0, T0 + 2000);
    memcpy(full_t, term, ts);
    memcpy(full_p, pay, ps);
    uint8_t *fv[RF_KINDS_MAX] = {(uint8_t *)full_t, (uint8_t *)full_p};
    rf_feat_apply(d, &lr.r, fv, &s2);
    /* The cut: the terminal holds the second label, the payment does not. */
    memcpy(term, full_t, ts);
    CHECK(rf_feat_is_replay(d, &lr.r, ev, &s2));
    CHECK_EQ_INT((int)rf_feat_apply_missing(d, &lr.r, ev, &s2), 2);
    CHECK(memcmp(term, full_t, ts) == 0 && memcmp(pay, full_p, ps) == 0);
    /* Held by both: nothing to apply. */
    CHECK_EQ_INT((int)rf_feat_apply_missing(d, &lr.r, ev, &s2), 0);
    CHECK(memcmp(term, full_t, ts) == 0 && memcmp(pay, full_p, ps) == 0);
    CHECK(rf_feat_eval_one(d, rf_decl_find(d, "fr"), &lr.r, ev) == 0); /* +1 then -1 */
    rf_decl_destroy(d);
}

/* weekday(): 0 Monday .. 6 Sunday, UTC; T0 (2026-11-30) is a Monday. */
static void test_weekday(void) {
    char err[512];
    rf_decl_t *d = decl_text("entity customer key=customer_id\n"
                             "feature wd = value(weekday(event_time)) on Payment\n"
                             "feature we = value() on Payment where weekday(event_time)>=5\n",
                             err, sizeof err);
    CHECK(d != NULL);
    if (!d)
        return;
    struct ents e;
    ents_fresh(&e, d);
    struct payrec pr;
    static const struct {
        int64_t t;
        double wd, we;
    } cases[] = {{T0, 0, 0},
                 {T0 + 5 * 24 * HOUR_MS, 5, 1},     /* Saturday */
                 {T0 + 7 * 24 * HOUR_MS - 1, 6, 1}, /* the last ms of Sunday */
                 {0, 3, 0},                          /* 1970-01-01, a Thursday */
                 {-1, 2, 0},                         /* 1969-12-31 */
                 {-4 * 24 * HOUR_MS, 6, 1}};         /* Sunday 1969-12-28 */
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        make_payment(&pr, "c", 100, cases[i].t, RF_CHANNEL_POS, RF_KIND_PURCHASE);
        CHECK(feat(d, &e, "wd", &pr.r) == cases[i].wd);
        CHECK(feat(d, &e, "we", &pr.r) == cases[i].we);
    }
    rf_decl_destroy(d);
}

static void teardown(void) {
    rf_schemas_destroy(schemas);
}

static void test_all(void) {
    setup();
    if (!schemas) {
        CHECK(schemas != NULL);
        return;
    }
    test_errors();
    test_layout();
    test_values();
    test_windows_by_hand();
    test_scalars_by_hand();
    test_change_and_replays();
    test_labels_by_hand();
    test_weekday();
    test_apply_missing();
    test_brute_force();
    test_slices();
    test_plans();
    teardown();
}

RF_TEST_MAIN(RF_TEST(test_all))
