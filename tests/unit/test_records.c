/*
 * test_records.c — compiled record types and the generic record decoder (codec.h).
 *
 * avro-c is the oracle: for every input record type in schemas/ (Payment, Trade, Quote,
 * CreditEvent), random records built with avro-c's generic values are written by avro-c and
 * must decode with ours to the same field values; every prefix of a valid record is
 * TRUNCATED, a record with bytes after it MALFORMED; values no input may carry (a NaN or
 * infinite double, a 64-byte string, a NUL inside a string, a boolean byte of 2, an enum out of
 * range) are MALFORMED. Runs from the repo root (./schemas).
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <avro.h>

#include "riskflow/codec.h"
#include "riskflow/err.h"
#include "rf_test.h"

static uint64_t rng_state = 0x243f6a8885a308d3ull;

static uint64_t rnd(void) { /* xorshift64*: seeded, so a failure replays */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 2685821657736338717ull;
}

static rf_schemas_t *load(void) {
    char err[512];
    rf_schemas_t *s = rf_schemas_load("schemas", err, sizeof err);
    if (!s)
        fprintf(stderr, "schemas: %s\n", err);
    CHECK(s != NULL);
    return s;
}

static void test_registry_types(void) {
    rf_schemas_t *s = load();
    if (!s)
        return;
    /* inputs compile; outputs (arrays) are not input types */
    static const char *const inputs[] = {"riskflow.Payment", "riskflow.Trade", "riskflow.Quote",
                                         "riskflow.CreditEvent", "riskflow.FraudLabel"};
    static const char *const times[] = {"event_time", "trade_time", "quote_time", "event_time",
                                        "label_time"};
    CHECK_EQ_INT(rf_schemas_n_rtypes(s), 5);
    for (int i = 0; i < 5; i++) {
        const struct rf_rtype *t = rf_schemas_rtype_named(s, inputs[i]);
        CHECK(t != NULL);
        if (!t)
            continue;
        CHECK(rf_schemas_rtype(s, t->schema_id) == t);
        CHECK(rf_schemas_rtype_at(s, t->index) == t);
        CHECK_EQ_STR(t->fields[t->time_field].name, times[i]);
        CHECK(t->fields[t->time_field].timestamp);
        CHECK(rf_schemas_rtype_named(s, t->name) == t); /* short names are unique here */
    }
    CHECK(rf_schemas_rtype(s, 2) == NULL); /* FraudScore */
    CHECK(rf_schemas_rtype(s, 7) == NULL); /* PdUpdate */
    CHECK(rf_schemas_rtype(s, 99) == NULL);
    CHECK(rf_schemas_rtype_named(s, "riskflow.FraudScore") == NULL);
    CHECK(rf_schemas_rtype_named(s, "Nope") == NULL);

    /* the built-in payment type (event.h's struct) is the registry's, field for field */
    const struct rf_rtype *reg = rf_schemas_rtype_named(s, "Payment");
    const struct rf_rtype *bi = rf_payment_rtype();
    if (reg) {
        CHECK_EQ_INT(reg->n_fields, bi->n_fields);
        CHECK_EQ_INT(reg->time_field, bi->time_field);
        for (int k = 0; k < reg->n_fields && k < bi->n_fields; k++) {
            CHECK_EQ_STR(reg->fields[k].name, bi->fields[k].name);
            CHECK_EQ_INT(reg->fields[k].type, bi->fields[k].type);
            CHECK_EQ_INT(reg->fields[k].n_symbols, bi->fields[k].n_symbols);
            for (int j = 0; j < reg->fields[k].n_symbols && j < bi->fields[k].n_symbols; j++)
                CHECK_EQ_STR(reg->fields[k].symbols[j], bi->fields[k].symbols[j]);
        }
    }
    const struct rf_rtype *tr = rf_schemas_rtype_named(s, "Trade");
    if (tr) {
        int side = rf_rtype_field(tr, "aggressor_side");
        CHECK(side >= 0);
        if (side >= 0) {
            CHECK_EQ_INT(rf_rfield_symbol(&tr->fields[side], "SELL"), 1);
            CHECK_EQ_INT(rf_rfield_symbol(&tr->fields[side], "HOLD"), RF_E_NOTFOUND);
        }
        CHECK_EQ_INT(rf_rtype_field(tr, "nope"), RF_E_NOTFOUND);
        CHECK_EQ_INT(tr->fields[rf_rtype_field(tr, "price")].type, RF_FT_DOUBLE);
    }
    rf_schemas_destroy(s);
}

/* A random value for each field of the avro-c record, remembered in want[] the way our
 * decoder reports it. Strings: 0..63 bytes of printable ASCII. */
static void fill(const struct rf_rtype *t, avro_value_t *rec, union rf_fval *want,
                 char strs[][RF_FIELD_STR_MAX + 1]) {
    for (int k = 0; k < t->n_fields; k++) {
        avro_value_t f;
        CHECK_EQ_INT(avro_value_get_by_index(rec, (size_t)k, &f, NULL), 0);
        switch (t->fields[k].type) {
        case RF_FT_STRING: {
            size_t n = (size_t)(rnd() % (RF_FIELD_STR_MAX + 1));
            for (size_t i = 0; i < n; i++)
                strs[k][i] = (char)(' ' + rnd() % 95);
            strs[k][n] = '\0';
            avro_value_set_string_len(&f, strs[k], n + 1);
            want[k].s.len = (uint32_t)n;
            break;
        }
        case RF_FT_INT:
            want[k].i = (int32_t)(uint32_t)rnd();
            avro_value_set_int(&f, (int32_t)want[k].i);
            break;
        case RF_FT_LONG:
            want[k].i = (int64_t)(rnd() >> (rnd() % 64));
            if (rnd() & 1)
                want[k].i = -want[k].i;
            avro_value_set_long(&f, want[k].i);
            break;
        case RF_FT_FLOAT:
            want[k].d = (float)((double)(int64_t)rnd() / 1e9);
            avro_value_set_float(&f, (float)want[k].d);
            break;
        case RF_FT_DOUBLE:
            want[k].d = (double)(int64_t)rnd() / (double)(1 + rnd() % 1000000);
            avro_value_set_double(&f, want[k].d);
            break;
        case RF_FT_BOOLEAN:
            want[k].i = (int64_t)(rnd() & 1);
            avro_value_set_boolean(&f, (int)want[k].i);
            break;
        case RF_FT_ENUM:
            want[k].i = (int64_t)(rnd() % (uint64_t)t->fields[k].n_symbols);
            avro_value_set_enum(&f, (int)want[k].i);
            break;
        }
    }
}

static void check_rec(const struct rf_rtype *t, const struct rf_rec *r, const union rf_fval *want,
                      char strs[][RF_FIELD_STR_MAX + 1]) {
    for (int k = 0; k < t->n_fields; k++) {
        switch (t->fields[k].type) {
        case RF_FT_STRING: {
            size_t n;
            const char *p = rf_rec_str(r, k, &n);
            CHECK_EQ_INT(n, want[k].s.len);
            CHECK(n == want[k].s.len && memcmp(p, strs[k], n) == 0);
            break;
        }
        case RF_FT_FLOAT:
        case RF_FT_DOUBLE:
            CHECK(r->v[k].d == want[k].d);
            CHECK(rf_rec_num(r, k) == want[k].d);
            break;
        default:
            CHECK_EQ_INT(r->v[k].i, want[k].i);
            CHECK(rf_rec_num(r, k) == (double)want[k].i);
            break;
        }
    }
}

static void test_oracle_all_types(void) {
    rf_schemas_t *s = load();
    if (!s)
        return;
    for (int ti = 0; ti < rf_schemas_n_rtypes(s); ti++) {
        const struct rf_rtype *t = rf_schemas_rtype_at(s, ti);
        avro_value_iface_t *iface = avro_generic_class_from_schema(rf_schemas_avro(s, t->schema_id));
        avro_value_t rec;
        CHECK_EQ_INT(avro_generic_value_new(iface, &rec), 0);
        int bad_prefix = 0, bad_trailing = 0;
        for (int it = 0; it < 2000; it++) {
            union rf_fval want[RF_RTYPE_FIELDS_MAX];
            char strs[RF_RTYPE_FIELDS_MAX][RF_FIELD_STR_MAX + 1];
            uint8_t buf[4096];
            fill(t, &rec, want, strs);
            avro_writer_t w = avro_writer_memory((const char *)buf, sizeof buf - 1);
            CHECK_EQ_INT(avro_value_write(w, &rec), 0);
            size_t n = (size_t)avro_writer_tell(w);
            avro_writer_free(w);
            struct rf_rec r;
            CHECK_EQ_INT(rf_rec_decode(t, buf, n, &r), 0);
            check_rec(t, &r, want, strs);
            CHECK_EQ_INT(rf_rec_time(&r), want[t->time_field].i);
            /* the generic encoder gives avro-c's bytes back, in both framings */
            uint8_t again[4096];
            size_t m = 0;
            CHECK_EQ_INT(rf_rec_encode(t, &r, RF_FRAMING_PLAIN, 0, again, sizeof again, &m), 0);
            CHECK(m == n && memcmp(again, buf, n) == 0);
            CHECK_EQ_INT(rf_rec_encode(t, &r, RF_FRAMING_CONFLUENT, t->schema_id, again,
                                       sizeof again, &m), 0);
            CHECK(m == n + 5 && again[0] == 0 && again[4] == (uint8_t)t->schema_id &&
                  memcmp(again + 5, buf, n) == 0);
            CHECK_EQ_INT(rf_rec_encode(t, &r, RF_FRAMING_PLAIN, 0, again, n - 1, &m),
                         n ? RF_E_NOSPACE : 0);
            if (it < 50) {
                for (size_t cut = 0; cut < n; cut++)
                    bad_prefix += rf_rec_decode(t, buf, cut, &r) != RF_E_TRUNCATED;
            }
            buf[n] = (uint8_t)rnd();
            bad_trailing += rf_rec_decode(t, buf, n + 1, &r) != RF_E_MALFORMED;
        }
        CHECK_EQ_INT(bad_prefix, 0);
        CHECK_EQ_INT(bad_trailing, 0);
        avro_value_decref(&rec);
        avro_value_iface_decref(iface);
    }
    rf_schemas_destroy(s);
}

/* A Trade body by hand, so values avro-c would not write can be put on the wire. */
struct raw {
    uint8_t b[512];
    size_t n;
};

static void raw_long(struct raw *r, int64_t v) {
    uint64_t u = ((uint64_t)v << 1) ^ (0 - ((uint64_t)v >> 63));
    while (u >= 0x80) {
        r->b[r->n++] = (uint8_t)(u | 0x80);
        u >>= 7;
    }
    r->b[r->n++] = (uint8_t)u;
}

static void raw_str(struct raw *r, const char *s, size_t n) {
    raw_long(r, (int64_t)n);
    memcpy(r->b + r->n, s, n);
    r->n += n;
}

static void raw_double(struct raw *r, double d) {
    uint64_t u;
    memcpy(&u, &d, 8);
    for (int i = 0; i < 8; i++)
        r->b[r->n++] = (uint8_t)(u >> (8 * i));
}

/* instrument, venue, trade_id, price, quantity, aggressor_side, trade_time */
static void raw_trade(struct raw *r, const char *instrument, size_t ilen, double price,
                      int64_t side) {
    r->n = 0;
    raw_str(r, instrument, ilen);
    raw_str(r, "XPAR", 4);
    raw_str(r, "t-1", 3);
    raw_double(r, price);
    raw_double(r, 10.0);
    raw_long(r, side);
    raw_long(r, 1795996800000LL);
}

static void test_hostile_values(void) {
    rf_schemas_t *s = load();
    if (!s)
        return;
    const struct rf_rtype *t = rf_schemas_rtype_named(s, "riskflow.Trade");
    CHECK(t != NULL);
    if (!t) {
        rf_schemas_destroy(s);
        return;
    }
    struct rf_rec r;
    struct raw w;
    char big[RF_FIELD_STR_MAX + 2];
    memset(big, 'I', sizeof big);

    raw_trade(&w, "ABC", 3, 101.25, 1);
    CHECK_EQ_INT(rf_rec_decode(t, w.b, w.n, &r), 0);
    /* values no input may carry are refused by the encoder too */
    uint8_t out[512];
    size_t olen;
    struct rf_rec bad = r;
    bad.v[3].d = NAN;
    CHECK_EQ_INT(rf_rec_encode(t, &bad, RF_FRAMING_PLAIN, 0, out, sizeof out, &olen), RF_E_INVAL);
    bad = r;
    bad.v[5].i = 2;
    CHECK_EQ_INT(rf_rec_encode(t, &bad, RF_FRAMING_PLAIN, 0, out, sizeof out, &olen), RF_E_INVAL);
    bad = r;
    bad.v[0].s.len = RF_FIELD_STR_MAX + 1;
    CHECK_EQ_INT(rf_rec_encode(t, &bad, RF_FRAMING_PLAIN, 0, out, sizeof out, &olen), RF_E_INVAL);
    CHECK(r.v[3].d == 101.25);
    CHECK_EQ_INT(r.v[5].i, 1);

    raw_trade(&w, big, RF_FIELD_STR_MAX, 1.0, 0);
    CHECK_EQ_INT(rf_rec_decode(t, w.b, w.n, &r), 0);
    raw_trade(&w, big, RF_FIELD_STR_MAX + 1, 1.0, 0);
    CHECK_EQ_INT(rf_rec_decode(t, w.b, w.n, &r), RF_E_MALFORMED);
    raw_trade(&w, "A\0C", 3, 1.0, 0);
    CHECK_EQ_INT(rf_rec_decode(t, w.b, w.n, &r), RF_E_MALFORMED);

    static const double nonfinite[] = {NAN, -NAN, INFINITY, -INFINITY};
    for (int i = 0; i < 4; i++) {
        raw_trade(&w, "ABC", 3, nonfinite[i], 0);
        CHECK_EQ_INT(rf_rec_decode(t, w.b, w.n, &r), RF_E_MALFORMED);
    }
    raw_trade(&w, "ABC", 3, 1.0, 2); /* Side has 2 symbols */
    CHECK_EQ_INT(rf_rec_decode(t, w.b, w.n, &r), RF_E_MALFORMED);
    raw_trade(&w, "ABC", 3, 1.0, -1);
    CHECK_EQ_INT(rf_rec_decode(t, w.b, w.n, &r), RF_E_MALFORMED);

    /* a string length no field can hold is malformed even where the bytes are missing */
    w.n = 0;
    raw_long(&w, 1000);
    CHECK_EQ_INT(rf_rec_decode(t, w.b, w.n, &r), RF_E_MALFORMED);
    w.n = 0;
    raw_long(&w, -3);
    CHECK_EQ_INT(rf_rec_decode(t, w.b, w.n, &r), RF_E_MALFORMED);
    CHECK_EQ_INT(rf_rec_decode(t, NULL, 0, &r), RF_E_TRUNCATED);
    CHECK_EQ_INT(rf_rec_decode(t, NULL, 3, &r), RF_E_INVAL);
    CHECK_EQ_INT(rf_rec_decode(NULL, w.b, w.n, &r), RF_E_INVAL);

    /* a boolean is one byte, 0 or 1: a hand-made type with one */
    struct rf_rtype bt = {.schema_id = 99, .index = -1, .fullname = "t.B", .name = "B",
                          .n_fields = 2, .time_field = 1,
                          .fields = {{"flag", RF_FT_BOOLEAN, 0, 0, NULL},
                                     {"t", RF_FT_LONG, 1, 0, NULL}}};
    for (int v = 0; v < 4; v++) {
        w.n = 0;
        w.b[w.n++] = (uint8_t)v;
        raw_long(&w, 7);
        int rc = rf_rec_decode(&bt, w.b, w.n, &r);
        CHECK_EQ_INT(rc, v <= 1 ? 0 : RF_E_MALFORMED);
        if (rc == 0) {
            CHECK_EQ_INT(r.v[0].i, v);
            CHECK_EQ_INT(rf_rec_time(&r), 7);
        }
    }
    /* a float: 4 bytes, NaN refused */
    struct rf_rtype ft = {.schema_id = 98, .index = -1, .fullname = "t.F", .name = "F",
                          .n_fields = 2, .time_field = 1,
                          .fields = {{"x", RF_FT_FLOAT, 0, 0, NULL}, {"t", RF_FT_LONG, 1, 0, NULL}}};
    float fv = 2.5f;
    w.n = 0;
    memcpy(w.b, &fv, 4); /* the host is little-endian on every platform we build for */
    w.n = 4;
    raw_long(&w, 1);
    CHECK_EQ_INT(rf_rec_decode(&ft, w.b, w.n, &r), 0);
    CHECK(r.v[0].d == 2.5);
    CHECK_EQ_INT(rf_rec_decode(&ft, w.b, 3, &r), RF_E_TRUNCATED);
    fv = NAN;
    memcpy(w.b, &fv, 4);
    CHECK_EQ_INT(rf_rec_decode(&ft, w.b, w.n, &r), RF_E_MALFORMED);
    rf_schemas_destroy(s);
}

static void test_frame(void) {
    const uint8_t *body;
    size_t blen;
    int32_t id;
    uint8_t m[16] = {0, 0, 0, 0, 6, 0xaa, 0xbb};
    id = -7;
    CHECK_EQ_INT(rf_frame(m, 7, RF_FRAMING_CONFLUENT, 100, &id, &body, &blen), 0);
    CHECK_EQ_INT(id, 6);
    CHECK(body == m + 5 && blen == 2);
    id = 4;
    CHECK_EQ_INT(rf_frame(m, 7, RF_FRAMING_PLAIN, 100, &id, &body, &blen), 0);
    CHECK_EQ_INT(id, 4); /* plain: the caller's declared type stays */
    CHECK(body == m && blen == 7);
    CHECK_EQ_INT(rf_frame(m, 7, RF_FRAMING_CONFLUENT, 6, &id, &body, &blen), RF_E_OVERSIZE);
    CHECK_EQ_INT(rf_frame(m, 4, RF_FRAMING_CONFLUENT, 100, &id, &body, &blen), RF_E_TRUNCATED);
    CHECK_EQ_INT(rf_frame(NULL, 0, RF_FRAMING_CONFLUENT, 100, &id, &body, &blen), RF_E_TRUNCATED);
    m[0] = 1;
    CHECK_EQ_INT(rf_frame(m, 2, RF_FRAMING_CONFLUENT, 100, &id, &body, &blen), RF_E_BADMAGIC);
    m[0] = 0;
    m[1] = 0x80; /* an id above INT32_MAX cannot be registered */
    CHECK_EQ_INT(rf_frame(m, 7, RF_FRAMING_CONFLUENT, 100, &id, &body, &blen), RF_E_UNKNOWN_SCHEMA);
    CHECK_EQ_INT(rf_frame(m, 7, (enum rf_framing)5, 100, &id, &body, &blen), RF_E_INVAL);
}

RF_TEST_MAIN(RF_TEST(test_registry_types), RF_TEST(test_oracle_all_types),
             RF_TEST(test_hostile_values), RF_TEST(test_frame))
