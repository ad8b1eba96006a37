/*
 * test_codec.c — the schema registry and the hand-written Avro codecs (codec.h).
 *
 * avro-c's generic value API is the oracle: payments it writes must decode with ours to the
 * same fields, and what our encoders write must read back through avro-c to the same values.
 * Hostile input is covered by construction (every prefix, each malformed field, an
 * independent little encoder in this file that can write what ours refuses to) and by seeded
 * random and mutated inputs; run under the ASan build to catch what a CHECK cannot.
 * Runs from the repo root (./schemas). Temp files go under /tmp and are removed.
 */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <avro.h>

#include "riskflow/codec.h"
#include "riskflow/err.h"
#include "rf_test.h"

#define CAP (1 << 16)
#define PAYMENT_ID 1

/* ---- shared fixtures -------------------------------------------------------------------- */

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint64_t rnd(void) { /* xorshift64*: seeded, so a failure replays */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 2685821657736338717ull;
}

static void rnd_str(char *dst, size_t size, size_t maxlen) {
    static const char alphabet[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_:";
    size_t n = (size_t)(rnd() % (maxlen + 1));
    if (n >= size)
        n = size - 1;
    for (size_t i = 0; i < n; i++)
        dst[i] = alphabet[rnd() % (sizeof alphabet - 1)];
    dst[n] = '\0';
}

/* Variant 0 is plain, 1 pushes every field to its edge (full-length ids, extreme numbers,
 * empty strings, non-ASCII UTF-8), 2+ are random. */
static void sample_payment(struct rf_payment *p, int variant) {
    memset(p, 0, sizeof *p);
    if (variant == 0) {
        strcpy(p->event_id, "9f1c2d3e-0000-4000-8000-000000000001");
        strcpy(p->customer_id, "cust-42");
        strcpy(p->card_token, "tok_4b1d");
        strcpy(p->merchant_id, "m-777");
        strcpy(p->terminal_id, "t-12");
        p->mcc = 5411;
        p->amount_minor = 12345;
        strcpy(p->currency, "EUR");
        p->channel = RF_CHANNEL_ECOM;
        strcpy(p->country, "FR");
        p->kind = RF_KIND_PURCHASE;
        p->event_time_ms = 1718000000123;
    } else if (variant == 1) {
        memset(p->event_id, 'e', RF_ID_MAX - 1);
        p->customer_id[0] = '\0';
        memset(p->card_token, 'c', RF_ID_MAX - 1);
        strcpy(p->merchant_id, "caf\xc3\xa9-\xe2\x82\xac"); /* UTF-8 passes through untouched */
        memset(p->terminal_id, 't', RF_ID_MAX - 1);
        p->mcc = INT32_MIN;
        p->amount_minor = INT64_MIN;
        strcpy(p->currency, "XXX");
        p->channel = RF_CHANNEL_MOBILE;
        strcpy(p->country, "GBR");
        p->kind = RF_KIND_MISSED_PAYMENT;
        p->event_time_ms = INT64_MAX;
    } else {
        rnd_str(p->event_id, sizeof p->event_id, RF_ID_MAX - 1);
        rnd_str(p->customer_id, sizeof p->customer_id, RF_ID_MAX - 1);
        rnd_str(p->card_token, sizeof p->card_token, RF_ID_MAX - 1);
        rnd_str(p->merchant_id, sizeof p->merchant_id, RF_ID_MAX - 1);
        rnd_str(p->terminal_id, sizeof p->terminal_id, RF_ID_MAX - 1);
        p->mcc = (int32_t)(uint32_t)rnd();
        unsigned shift = (unsigned)(rnd() % 64); /* one call per statement: order is fixed */
        p->amount_minor = (int64_t)(rnd() >> shift);
        if ((rnd() & 1) && p->amount_minor != INT64_MIN)
            p->amount_minor = -p->amount_minor;
        rnd_str(p->currency, sizeof p->currency, RF_CURRENCY_MAX - 1);
        p->channel = (enum rf_channel)(rnd() % RF_CHANNEL__N);
        rnd_str(p->country, sizeof p->country, RF_COUNTRY_MAX - 1);
        p->kind = (enum rf_payment_kind)(rnd() % RF_KIND__N);
        p->event_time_ms = (int64_t)(rnd() >> 20);
    }
}

static int payment_eq(const struct rf_payment *a, const struct rf_payment *b) {
    return strcmp(a->event_id, b->event_id) == 0 && strcmp(a->customer_id, b->customer_id) == 0 &&
           strcmp(a->card_token, b->card_token) == 0 &&
           strcmp(a->merchant_id, b->merchant_id) == 0 &&
           strcmp(a->terminal_id, b->terminal_id) == 0 && a->mcc == b->mcc &&
           a->amount_minor == b->amount_minor && strcmp(a->currency, b->currency) == 0 &&
           a->channel == b->channel && strcmp(a->country, b->country) == 0 &&
           a->kind == b->kind && a->event_time_ms == b->event_time_ms;
}

static void check_payment(const struct rf_payment *got, const struct rf_payment *want) {
    CHECK_EQ_STR(got->event_id, want->event_id);
    CHECK_EQ_STR(got->customer_id, want->customer_id);
    CHECK_EQ_STR(got->card_token, want->card_token);
    CHECK_EQ_STR(got->merchant_id, want->merchant_id);
    CHECK_EQ_STR(got->terminal_id, want->terminal_id);
    CHECK_EQ_INT(got->mcc, want->mcc);
    CHECK_EQ_INT(got->amount_minor, want->amount_minor);
    CHECK_EQ_STR(got->currency, want->currency);
    CHECK_EQ_INT(got->channel, want->channel);
    CHECK_EQ_STR(got->country, want->country);
    CHECK_EQ_INT(got->kind, want->kind);
    CHECK_EQ_INT(got->event_time_ms, want->event_time_ms);
}

static rf_schemas_t *load_repo_schemas(void) {
    char errstr[512];
    rf_schemas_t *schemas = rf_schemas_load("schemas", errstr, sizeof errstr);
    if (!schemas)
        fprintf(stderr, "rf_schemas_load(schemas): %s\n", errstr);
    CHECK(schemas != NULL);
    return schemas;
}

static int is_decode_reason(int rc) {
    return rc == RF_E_TRUNCATED || rc == RF_E_BADMAGIC || rc == RF_E_UNKNOWN_SCHEMA ||
           rc == RF_E_OVERSIZE || rc == RF_E_MALFORMED;
}

/* ---- an independent encoder, able to write what ours refuses to ------------------------- */

struct raw {
    uint8_t b[1024];
    size_t n;
};

static void raw_bytes(struct raw *r, const void *src, size_t n) {
    memcpy(r->b + r->n, src, n);
    r->n += n;
}

static void raw_uvarint(struct raw *r, uint64_t u) {
    do {
        uint8_t byte = (uint8_t)(u & 0x7f);
        u >>= 7;
        r->b[r->n++] = (uint8_t)(byte | (u ? 0x80 : 0));
    } while (u);
}

static void raw_long(struct raw *r, int64_t v) {
    raw_uvarint(r, v < 0 ? ~((uint64_t)v << 1) : (uint64_t)v << 1);
}

static void raw_str(struct raw *r, const char *s, size_t n) {
    raw_long(r, (int64_t)n);
    raw_bytes(r, s, n);
}

static void raw_header(struct raw *r, uint32_t id) {
    uint8_t h[5] = {0, (uint8_t)(id >> 24), (uint8_t)(id >> 16), (uint8_t)(id >> 8), (uint8_t)id};
    raw_bytes(r, h, sizeof h);
}

enum { F_EVENT, F_CUSTOMER, F_CARD, F_MERCHANT, F_TERMINAL, F_MCC, F_AMOUNT, F_CURRENCY,
       F_CHANNEL, F_COUNTRY, F_KIND, F_TIME, F__N };

/* Payment variant 0, with field `field` replaced by raw bytes (field = -1: none). */
static void raw_payment(struct raw *r, int field, const void *bytes, size_t n) {
    struct rf_payment p;
    sample_payment(&p, 0);
    for (int f = 0; f < F__N; f++) {
        if (f == field) {
            raw_bytes(r, bytes, n);
            continue;
        }
        switch (f) {
        case F_EVENT: raw_str(r, p.event_id, strlen(p.event_id)); break;
        case F_CUSTOMER: raw_str(r, p.customer_id, strlen(p.customer_id)); break;
        case F_CARD: raw_str(r, p.card_token, strlen(p.card_token)); break;
        case F_MERCHANT: raw_str(r, p.merchant_id, strlen(p.merchant_id)); break;
        case F_TERMINAL: raw_str(r, p.terminal_id, strlen(p.terminal_id)); break;
        case F_MCC: raw_long(r, p.mcc); break;
        case F_AMOUNT: raw_long(r, p.amount_minor); break;
        case F_CURRENCY: raw_str(r, p.currency, strlen(p.currency)); break;
        case F_CHANNEL: raw_long(r, p.channel); break;
        case F_COUNTRY: raw_str(r, p.country, strlen(p.country)); break;
        case F_KIND: raw_long(r, p.kind); break;
        case F_TIME: raw_long(r, p.event_time_ms); break;
        }
    }
}

/* Decode raw bytes in both framings; both must give the same answer, which is returned. */
static int decode_both(const struct raw *body, struct rf_payment *out) {
    struct raw framed = {.n = 0};
    raw_header(&framed, PAYMENT_ID);
    raw_bytes(&framed, body->b, body->n);
    int plain = rf_decode_payment(body->b, body->n, RF_FRAMING_PLAIN, PAYMENT_ID, CAP, out);
    int conf = rf_decode_payment(framed.b, framed.n, RF_FRAMING_CONFLUENT, PAYMENT_ID, CAP, out);
    CHECK_EQ_INT(plain, conf);
    return plain;
}

static int decode_field(int field, const void *bytes, size_t n, struct rf_payment *out) {
    struct raw r = {.n = 0};
    raw_payment(&r, field, bytes, n);
    return decode_both(&r, out);
}

/* ---- avro-c as the oracle --------------------------------------------------------------- */

static avro_value_t field_of(avro_value_t *rec, const char *name) {
    avro_value_t f = {NULL, NULL};
    int rc = avro_value_get_by_name(rec, name, &f, NULL);
    CHECK_EQ_INT(rc, 0);
    return f;
}

static void set_str(avro_value_t *rec, const char *name, const char *s) {
    avro_value_t f = field_of(rec, name);
    CHECK_EQ_INT(avro_value_set_string(&f, s), 0);
}

static void set_long(avro_value_t *rec, const char *name, int64_t v) {
    avro_value_t f = field_of(rec, name);
    CHECK_EQ_INT(avro_value_set_long(&f, v), 0);
}

static void set_int(avro_value_t *rec, const char *name, int32_t v) {
    avro_value_t f = field_of(rec, name);
    CHECK_EQ_INT(avro_value_set_int(&f, v), 0);
}

static void set_enum(avro_value_t *rec, const char *name, int v) {
    avro_value_t f = field_of(rec, name);
    CHECK_EQ_INT(avro_value_set_enum(&f, v), 0);
}

static void expect_str(avro_value_t *v, const char *want) {
    const char *s = NULL;
    size_t size = 0;
    CHECK_EQ_INT(avro_value_get_string(v, &s, &size), 0);
    /* avro-c counts the NUL it adds in size */
    CHECK_EQ_INT(size, strlen(want) + 1);
    CHECK_EQ_STR(s, want);
}

static void expect_field_str(avro_value_t *rec, const char *name, const char *want) {
    avro_value_t f = field_of(rec, name);
    expect_str(&f, want);
}

static void expect_field_long(avro_value_t *rec, const char *name, int64_t want) {
    avro_value_t f = field_of(rec, name);
    int64_t v = 0;
    CHECK_EQ_INT(avro_value_get_long(&f, &v), 0);
    CHECK_EQ_INT(v, want);
}

static void expect_field_int(avro_value_t *rec, const char *name, int32_t want) {
    avro_value_t f = field_of(rec, name);
    int32_t v = 0;
    CHECK_EQ_INT(avro_value_get_int(&f, &v), 0);
    CHECK_EQ_INT(v, want);
}

static void expect_field_enum(avro_value_t *rec, const char *name, int want) {
    avro_value_t f = field_of(rec, name);
    int v = -1;
    CHECK_EQ_INT(avro_value_get_enum(&f, &v), 0);
    CHECK_EQ_INT(v, want);
}

/* Doubles compare bit for bit: NaN, -0.0 and subnormals must survive the wire exactly. */
static void expect_double(avro_value_t *f, double want) {
    double v = 0;
    uint64_t a, b;
    CHECK_EQ_INT(avro_value_get_double(f, &v), 0);
    memcpy(&a, &v, sizeof a);
    memcpy(&b, &want, sizeof b);
    CHECK(a == b);
    if (a != b)
        fprintf(stderr, "  double %.17g != %.17g\n", v, want);
}

static void expect_field_double(avro_value_t *rec, const char *name, double want) {
    avro_value_t f = field_of(rec, name);
    expect_double(&f, want);
}

static void avro_set_payment(avro_value_t *rec, const struct rf_payment *p) {
    set_str(rec, "event_id", p->event_id);
    set_str(rec, "customer_id", p->customer_id);
    set_str(rec, "card_token", p->card_token);
    set_str(rec, "merchant_id", p->merchant_id);
    set_str(rec, "terminal_id", p->terminal_id);
    set_int(rec, "mcc", p->mcc);
    set_long(rec, "amount_minor", p->amount_minor);
    set_str(rec, "currency", p->currency);
    set_enum(rec, "channel", p->channel);
    set_str(rec, "country", p->country);
    set_enum(rec, "kind", p->kind);
    set_long(rec, "event_time", p->event_time_ms);
}

static void avro_expect_payment(avro_value_t *rec, const struct rf_payment *p) {
    expect_field_str(rec, "event_id", p->event_id);
    expect_field_str(rec, "customer_id", p->customer_id);
    expect_field_str(rec, "card_token", p->card_token);
    expect_field_str(rec, "merchant_id", p->merchant_id);
    expect_field_str(rec, "terminal_id", p->terminal_id);
    expect_field_int(rec, "mcc", p->mcc);
    expect_field_long(rec, "amount_minor", p->amount_minor);
    expect_field_str(rec, "currency", p->currency);
    expect_field_enum(rec, "channel", p->channel);
    expect_field_str(rec, "country", p->country);
    expect_field_enum(rec, "kind", p->kind);
    expect_field_long(rec, "event_time", p->event_time_ms);
}

/* One generic value of a registry schema, reused across reads and writes. */
struct oracle {
    avro_value_iface_t *iface;
    avro_value_t val;
};

static int oracle_init(struct oracle *o, rf_schemas_t *schemas, int32_t id) {
    avro_schema_t schema = rf_schemas_avro(schemas, id);
    CHECK(schema != NULL);
    if (!schema)
        return -1;
    o->iface = avro_generic_class_from_schema(schema);
    CHECK(o->iface != NULL);
    if (!o->iface)
        return -1;
    CHECK_EQ_INT(avro_generic_value_new(o->iface, &o->val), 0);
    return 0;
}

static void oracle_close(struct oracle *o) {
    avro_value_decref(&o->val);
    avro_value_iface_decref(o->iface);
}

/* avro-c writes the value; returns the body length. */
static size_t oracle_write(struct oracle *o, uint8_t *buf, size_t cap) {
    avro_writer_t w = avro_writer_memory((const char *)buf, (int64_t)cap);
    CHECK_EQ_INT(avro_value_write(w, &o->val), 0);
    size_t n = (size_t)avro_writer_tell(w);
    avro_writer_free(w);
    return n;
}

/* avro-c reads an Avro body into the value; the re-encoded size must be the whole input, so
 * avro-c and we agree where the record ends. */
static int oracle_read(struct oracle *o, const uint8_t *body, size_t len) {
    avro_value_reset(&o->val);
    avro_reader_t r = avro_reader_memory((const char *)body, (int64_t)len);
    int rc = avro_value_read(r, &o->val);
    avro_reader_free(r);
    CHECK_EQ_INT(rc, 0);
    if (rc)
        fprintf(stderr, "  avro-c: %s\n", avro_strerror());
    return rc;
}

/* avro-c, having read body into o->val, agrees with us on every byte: the record's encoded
 * size is the whole body (nothing left unread or read twice) and writing it back gives the
 * same bytes. */
static void expect_oracle_same_bytes(struct oracle *o, const uint8_t *body, size_t len) {
    uint8_t again[4096];
    size_t size = 0;
    CHECK_EQ_INT(avro_value_sizeof(&o->val, &size), 0);
    CHECK_EQ_INT(size, len);
    CHECK(len <= sizeof again);
    if (len > sizeof again)
        return;
    size_t n = oracle_write(o, again, sizeof again);
    CHECK(n == len && memcmp(again, body, n) == 0);
}

/* ---- the registry ----------------------------------------------------------------------- */

static void test_registry_load(void) {
    rf_schemas_t *schemas = load_repo_schemas();
    if (!schemas)
        return;
    CHECK_EQ_INT(rf_schemas_find(schemas, "riskflow.Payment"), 1);
    CHECK_EQ_INT(rf_schemas_find(schemas, "riskflow.FraudScore"), 2);
    CHECK_EQ_INT(rf_schemas_find(schemas, "riskflow.FraudAlert"), 3);
    CHECK_EQ_INT(rf_schemas_find(schemas, "riskflow.Trade"), 4);
    CHECK_EQ_INT(rf_schemas_find(schemas, "riskflow.Quote"), 5);
    CHECK_EQ_INT(rf_schemas_find(schemas, "riskflow.CreditEvent"), 6);
    CHECK_EQ_INT(rf_schemas_find(schemas, "riskflow.PdUpdate"), 7);
    CHECK_EQ_INT(rf_schemas_find(schemas, "riskflow.MarketSignal"), 8);
    CHECK_EQ_INT(rf_schemas_find(schemas, "Payment"), RF_E_NOTFOUND);
    CHECK_EQ_INT(rf_schemas_find(schemas, "riskflow.Channel"), RF_E_NOTFOUND);
    CHECK_EQ_INT(rf_schemas_find(schemas, NULL), RF_E_INVAL);
    avro_schema_t pay = rf_schemas_avro(schemas, 1);
    CHECK(pay != NULL);
    CHECK_EQ_INT(rf_schemas_find(schemas, "riskflow.FraudLabel"), 9);
    CHECK(rf_schemas_avro(schemas, 10) == NULL);
    CHECK(rf_schemas_avro(schemas, -1) == NULL);
    if (pay) {
        CHECK_EQ_STR(avro_schema_name(pay), "Payment");
        /* event.h's enums and struct are in the schema's order; the decoder relies on it */
        CHECK_EQ_INT(avro_schema_record_size(pay), F__N);
        avro_schema_t ch = avro_schema_record_field_get(pay, "channel");
        avro_schema_t kind = avro_schema_record_field_get(pay, "kind");
        CHECK_EQ_INT(avro_schema_enum_number_of_symbols(ch), RF_CHANNEL__N);
        CHECK_EQ_INT(avro_schema_enum_number_of_symbols(kind), RF_KIND__N);
        CHECK_EQ_STR(avro_schema_enum_get(ch, RF_CHANNEL_ATM), "ATM");
        CHECK_EQ_STR(avro_schema_enum_get(kind, RF_KIND_LOAN_REPAYMENT), "LOAN_REPAYMENT");
        CHECK_EQ_STR(avro_schema_record_field_name(pay, F_COUNTRY), "country");
    }
    rf_schemas_destroy(schemas);
    rf_schemas_destroy(NULL);
}

static char tmpdir[64];

static void write_tmp(const char *name, const char *text) {
    char path[256];
    snprintf(path, sizeof path, "%s/%s", tmpdir, name);
    FILE *fp = fopen(path, "w");
    CHECK(fp != NULL);
    if (!fp)
        return;
    fputs(text, fp);
    fclose(fp);
}

static void remove_tmp(const char *name) {
    char path[256];
    snprintf(path, sizeof path, "%s/%s", tmpdir, name);
    unlink(path);
}

/* Loads tmpdir; expects failure with an errstr containing each of want1, want2. */
static void expect_load_error(const char *registry, const char *want1, const char *want2) {
    char errstr[512];
    write_tmp("registry.txt", registry);
    strcpy(errstr, "unset");
    rf_schemas_t *schemas = rf_schemas_load(tmpdir, errstr, sizeof errstr);
    CHECK(schemas == NULL);
    rf_schemas_destroy(schemas);
    CHECK(strstr(errstr, want1) != NULL);
    if (want2)
        CHECK(strstr(errstr, want2) != NULL);
    if (!strstr(errstr, want1) || (want2 && !strstr(errstr, want2)))
        fprintf(stderr, "  errstr: %s (wanted '%s' '%s')\n", errstr, want1, want2 ? want2 : "");
}

static const char payment_v2[] =
    "{\"type\":\"record\",\"name\":\"Payment\",\"namespace\":\"riskflow\",\"fields\":["
    "{\"name\":\"event_id\",\"type\":\"string\"}]}";

static void test_registry_errors(void) {
    char errstr[512];
    char reg[300];
    strcpy(tmpdir, "/tmp/rf_test_codec_XXXXXX");
    CHECK(mkdtemp(tmpdir) != NULL);
    snprintf(reg, sizeof reg, "%s/registry.txt", tmpdir);

    /* no registry.txt at all */
    CHECK(rf_schemas_load(tmpdir, errstr, sizeof errstr) == NULL);
    CHECK(strstr(errstr, reg) != NULL && strstr(errstr, "No such file") != NULL);
    CHECK(rf_schemas_load(NULL, errstr, sizeof errstr) == NULL);

    write_tmp("p.avsc", payment_v2);
    write_tmp("bad.avsc", "{\"type\":\"record\",\"name\":\"X\",\"fields\":[{\"name\":\"a\"}]}");
    write_tmp("notjson.avsc", "{ this is not json");
    snprintf(errstr, sizeof errstr, "%s:3:", reg);
    expect_load_error("# comment\n\nx p.avsc\n", errstr, "expected");
    expect_load_error("# comment\n\n1\n", errstr, "expected");
    expect_load_error("# comment\n\n1 p.avsc extra\n", errstr, "expected");
    expect_load_error("# comment\n\n-1 p.avsc\n", errstr, "expected");
    expect_load_error("# comment\n\n0x1 p.avsc\n", errstr, "expected");
    expect_load_error("# comment\n\n4294967296 p.avsc\n", errstr, "out of range");
    expect_load_error("1 p.avsc\n2 p.avsc\n1 p.avsc\n", errstr, "duplicate schema id 1 (also on line 1)");
    expect_load_error("1 p.avsc\n\n7 missing.avsc\n", errstr, "missing.avsc: No such file");
    expect_load_error("1 p.avsc\n2 p.avsc\n3 bad.avsc\n", errstr, "bad.avsc");
    expect_load_error("1 p.avsc\n2 p.avsc\n3 notjson.avsc\n", errstr, "notjson.avsc");

    /* comments, blank lines, CRLF, tabs; two versions of one record: find gives the newest */
    write_tmp("registry.txt", "# ids\r\n\r\n  5\tp.avsc   # old\r\n7 p.avsc\r\n2 p2.avsc\n");
    write_tmp("p2.avsc", "{\"type\":\"record\",\"name\":\"riskflow.Other\",\"fields\":[]}");
    rf_schemas_t *schemas = rf_schemas_load(tmpdir, errstr, sizeof errstr);
    CHECK(schemas != NULL);
    if (!schemas)
        fprintf(stderr, "  errstr: %s\n", errstr);
    CHECK_EQ_INT(rf_schemas_find(schemas, "riskflow.Payment"), 7);
    CHECK_EQ_INT(rf_schemas_find(schemas, "riskflow.Other"), 2);
    CHECK(rf_schemas_avro(schemas, 5) != NULL && rf_schemas_avro(schemas, 6) == NULL);
    rf_schemas_destroy(schemas);

    /* an empty registry is valid: it names nothing */
    write_tmp("registry.txt", "# nothing yet\n");
    schemas = rf_schemas_load(tmpdir, errstr, sizeof errstr);
    CHECK(schemas != NULL);
    CHECK_EQ_INT(rf_schemas_find(schemas, "riskflow.Payment"), RF_E_NOTFOUND);
    rf_schemas_destroy(schemas);

    remove_tmp("registry.txt");
    remove_tmp("p.avsc");
    remove_tmp("p2.avsc");
    remove_tmp("bad.avsc");
    remove_tmp("notjson.avsc");
    CHECK_EQ_INT(rmdir(tmpdir), 0);
}

/* ---- round trips and the oracle --------------------------------------------------------- */

static void test_roundtrip(void) {
    uint8_t buf[512];
    size_t len = 0;
    struct rf_payment p, q;
    for (int v = 0; v < 200; v++) {
        sample_payment(&p, v);
        for (int fr = 0; fr < 2; fr++) {
            enum rf_framing framing = fr ? RF_FRAMING_PLAIN : RF_FRAMING_CONFLUENT;
            CHECK_EQ_INT(rf_encode_payment(&p, framing, PAYMENT_ID, buf, sizeof buf, &len), 0);
            memset(&q, 0x5a, sizeof q);
            CHECK_EQ_INT(rf_decode_payment(buf, len, framing, PAYMENT_ID, CAP, &q), 0);
            if (!payment_eq(&p, &q)) {
                fprintf(stderr, "  variant %d framing %d\n", v, fr);
                check_payment(&q, &p);
            }
            CHECK(payment_eq(&p, &q));
        }
    }
    /* the Confluent header is magic 0 then the id big-endian */
    sample_payment(&p, 0);
    CHECK_EQ_INT(rf_encode_payment(&p, RF_FRAMING_CONFLUENT, 0x01020304, buf, sizeof buf, &len), 0);
    CHECK(buf[0] == 0 && buf[1] == 1 && buf[2] == 2 && buf[3] == 3 && buf[4] == 4);
    CHECK_EQ_INT(rf_decode_payment(buf, len, RF_FRAMING_CONFLUENT, 0x01020304, CAP, &q), 0);
    CHECK(payment_eq(&p, &q));
}

/* avro-c writes, we decode; and avro-c's bytes are exactly ours (both encoders are canonical). */
static void test_oracle_decode(void) {
    rf_schemas_t *schemas = load_repo_schemas();
    struct oracle o;
    if (!schemas || oracle_init(&o, schemas, PAYMENT_ID) != 0)
        goto out;
    uint8_t body[512], framed[600], ours[600];
    size_t ours_len = 0;
    struct rf_payment p, q;
    for (int v = 0; v < 300; v++) {
        sample_payment(&p, v);
        avro_set_payment(&o.val, &p);
        size_t n = oracle_write(&o, body, sizeof body);
        CHECK(n > 0);
        memset(&q, 0x5a, sizeof q);
        CHECK_EQ_INT(rf_decode_payment(body, n, RF_FRAMING_PLAIN, PAYMENT_ID, CAP, &q), 0);
        CHECK(payment_eq(&p, &q));
        framed[0] = 0;
        framed[1] = framed[2] = framed[3] = 0;
        framed[4] = PAYMENT_ID;
        memcpy(framed + 5, body, n);
        memset(&q, 0x5a, sizeof q);
        CHECK_EQ_INT(rf_decode_payment(framed, n + 5, RF_FRAMING_CONFLUENT, PAYMENT_ID, CAP, &q), 0);
        CHECK(payment_eq(&p, &q));
        if (!payment_eq(&p, &q))
            check_payment(&q, &p);
        CHECK_EQ_INT(rf_encode_payment(&p, RF_FRAMING_PLAIN, 0, ours, sizeof ours, &ours_len), 0);
        CHECK(ours_len == n && memcmp(ours, body, n) == 0);
    }
    oracle_close(&o);
out:
    rf_schemas_destroy(schemas);
}

static void test_oracle_encode_payment(void) {
    rf_schemas_t *schemas = load_repo_schemas();
    struct oracle o;
    if (!schemas || oracle_init(&o, schemas, PAYMENT_ID) != 0)
        goto out;
    uint8_t buf[600];
    size_t len = 0;
    struct rf_payment p;
    for (int v = 0; v < 300; v++) {
        sample_payment(&p, v);
        CHECK_EQ_INT(rf_encode_payment(&p, RF_FRAMING_CONFLUENT, 1, buf, sizeof buf, &len), 0);
        if (oracle_read(&o, buf + 5, len - 5) != 0)
            continue;
        avro_expect_payment(&o.val, &p);
        expect_oracle_same_bytes(&o, buf + 5, len - 5);
    }
    oracle_close(&o);
out:
    rf_schemas_destroy(schemas);
}

static const double odd_doubles[] = {0.0,     -0.0,    0.1,      -1.5e-300, DBL_MIN / 4,
                                     DBL_MAX, INFINITY, -INFINITY, NAN,     0.8731234567890123};

static void sample_score(struct rf_fraud_score *s, int n_features, char names[][48]) {
    memset(s, 0, sizeof *s);
    s->event_id = "9f1c2d3e-0000-4000-8000-000000000001";
    s->customer_id = n_features % 2 ? "" : "cust-42";
    s->score = odd_doubles[n_features % 10];
    s->model_version = "fraud-xgb-2024.06.1";
    s->n_features = n_features;
    for (int i = 0; i < n_features; i++) {
        snprintf(names[i], 48, "feat_%d_%s", i, i % 3 ? "1h" : "amount_ratio_30d");
        s->features[i].name = names[i];
        s->features[i].value = i < 10 ? odd_doubles[i] : (double)i * -3.25e7 + 1.0 / (i + 1);
    }
    s->event_time_ms = 1718000000123 + n_features;
    s->scored_at_ms = n_features == 32 ? INT64_MIN : 1718000000456;
    s->source_partition = n_features == 32 ? INT32_MAX : n_features;
    s->source_offset = (int64_t)1 << 40 | n_features;
}

static void test_oracle_encode_score(void) {
    rf_schemas_t *schemas = load_repo_schemas();
    struct oracle o;
    if (!schemas || oracle_init(&o, schemas, 2) != 0)
        goto out;
    static const int counts[] = {0, 1, 2, 3, 10, RF_FEATURES_MAX};
    char names[RF_FEATURES_MAX][48];
    uint8_t buf[4096];
    size_t len = 0;
    struct rf_fraud_score s;
    for (size_t c = 0; c < sizeof counts / sizeof counts[0]; c++) {
        sample_score(&s, counts[c], names);
        for (int fr = 0; fr < 2; fr++) {
            enum rf_framing framing = fr ? RF_FRAMING_PLAIN : RF_FRAMING_CONFLUENT;
            size_t hdr = fr ? 0 : 5;
            CHECK_EQ_INT(rf_encode_fraud_score(&s, framing, 2, buf, sizeof buf, &len), 0);
            if (!fr)
                CHECK(buf[0] == 0 && buf[1] == 0 && buf[2] == 0 && buf[3] == 0 && buf[4] == 2);
            if (oracle_read(&o, buf + hdr, len - hdr) != 0)
                continue;
            expect_field_str(&o.val, "event_id", s.event_id);
            expect_field_str(&o.val, "customer_id", s.customer_id);
            expect_field_double(&o.val, "score", s.score);
            expect_field_str(&o.val, "model_version", s.model_version);
            avro_value_t arr = field_of(&o.val, "features");
            size_t n = 0;
            CHECK_EQ_INT(avro_value_get_size(&arr, &n), 0);
            CHECK_EQ_INT(n, s.n_features);
            for (size_t i = 0; i < n && i < (size_t)s.n_features; i++) {
                avro_value_t item, f;
                CHECK_EQ_INT(avro_value_get_by_index(&arr, i, &item, NULL), 0);
                f = field_of(&item, "name");
                expect_str(&f, s.features[i].name);
                f = field_of(&item, "value");
                expect_double(&f, s.features[i].value);
            }
            expect_field_long(&o.val, "event_time", s.event_time_ms);
            expect_field_long(&o.val, "scored_at", s.scored_at_ms);
            expect_field_int(&o.val, "source_partition", s.source_partition);
            expect_field_long(&o.val, "source_offset", s.source_offset);
            expect_oracle_same_bytes(&o, buf + hdr, len - hdr);
        }
    }
    oracle_close(&o);
out:
    rf_schemas_destroy(schemas);
}

static void sample_alert(struct rf_fraud_alert *a, int n_reasons) {
    static const char *const feats[] = {"amount_ratio_30d", "cnt_1h", "terminal_risk_7d"};
    memset(a, 0, sizeof *a);
    a->event_id = "ev-1";
    a->customer_id = "cust-42";
    a->card_token = n_reasons == 2 ? "" : "tok_4b1d";
    a->terminal_id = "t-12";
    a->amount_minor = n_reasons == 3 ? INT64_MAX : -987654321;
    a->currency = "EUR";
    a->score = 0.9731;
    a->threshold = odd_doubles[n_reasons + 5];
    a->model_version = "fraud-xgb-2024.06.1";
    a->n_reasons = n_reasons;
    for (int i = 0; i < n_reasons; i++) {
        a->reasons[i].feature = feats[i];
        a->reasons[i].value = odd_doubles[i + 2];
        a->reasons[i].contribution = 1.0 / (i + 3);
    }
    a->event_time_ms = 1718000000123;
    a->alerted_at_ms = 1718000000999;
}

static void test_oracle_encode_alert(void) {
    rf_schemas_t *schemas = load_repo_schemas();
    struct oracle o;
    if (!schemas || oracle_init(&o, schemas, 3) != 0)
        goto out;
    uint8_t buf[2048];
    size_t len = 0;
    struct rf_fraud_alert a;
    for (int nr = 0; nr <= RF_REASONS_MAX; nr++) {
        sample_alert(&a, nr);
        for (int fr = 0; fr < 2; fr++) {
            enum rf_framing framing = fr ? RF_FRAMING_PLAIN : RF_FRAMING_CONFLUENT;
            size_t hdr = fr ? 0 : 5;
            CHECK_EQ_INT(rf_encode_fraud_alert(&a, framing, 3, buf, sizeof buf, &len), 0);
            if (oracle_read(&o, buf + hdr, len - hdr) != 0)
                continue;
            expect_field_str(&o.val, "event_id", a.event_id);
            expect_field_str(&o.val, "customer_id", a.customer_id);
            expect_field_str(&o.val, "card_token", a.card_token);
            expect_field_str(&o.val, "terminal_id", a.terminal_id);
            expect_field_long(&o.val, "amount_minor", a.amount_minor);
            expect_field_str(&o.val, "currency", a.currency);
            expect_field_double(&o.val, "score", a.score);
            expect_field_double(&o.val, "threshold", a.threshold);
            expect_field_str(&o.val, "model_version", a.model_version);
            avro_value_t arr = field_of(&o.val, "reasons");
            size_t n = 0;
            CHECK_EQ_INT(avro_value_get_size(&arr, &n), 0);
            CHECK_EQ_INT(n, a.n_reasons);
            for (size_t i = 0; i < n && i < (size_t)a.n_reasons; i++) {
                avro_value_t item, f;
                CHECK_EQ_INT(avro_value_get_by_index(&arr, i, &item, NULL), 0);
                f = field_of(&item, "feature");
                expect_str(&f, a.reasons[i].feature);
                f = field_of(&item, "value");
                expect_double(&f, a.reasons[i].value);
                f = field_of(&item, "contribution");
                expect_double(&f, a.reasons[i].contribution);
            }
            expect_field_long(&o.val, "event_time", a.event_time_ms);
            expect_field_long(&o.val, "alerted_at", a.alerted_at_ms);
            expect_oracle_same_bytes(&o, buf + hdr, len - hdr);
        }
    }
    oracle_close(&o);
out:
    rf_schemas_destroy(schemas);
}

/* ---- hostile input ---------------------------------------------------------------------- */

static void test_truncation_every_prefix(void) {
    uint8_t buf[512];
    size_t len = 0;
    struct rf_payment p, q;
    for (int v = 0; v < 20; v++) {
        sample_payment(&p, v);
        for (int fr = 0; fr < 2; fr++) {
            enum rf_framing framing = fr ? RF_FRAMING_PLAIN : RF_FRAMING_CONFLUENT;
            CHECK_EQ_INT(rf_encode_payment(&p, framing, PAYMENT_ID, buf, sizeof buf, &len), 0);
            for (size_t cut = 0; cut < len; cut++) {
                /* a heap copy of exactly `cut` bytes, so ASan sees any read past it */
                uint8_t *m = malloc(cut ? cut : 1);
                memcpy(m, buf, cut);
                int rc = rf_decode_payment(m, cut, framing, PAYMENT_ID, CAP, &q);
                if (rc != RF_E_TRUNCATED)
                    fprintf(stderr, "  variant %d framing %d cut %zu/%zu: %d\n", v, fr, cut, len, rc);
                CHECK_EQ_INT(rc, RF_E_TRUNCATED);
                free(m);
            }
            CHECK_EQ_INT(rf_decode_payment(buf, len, framing, PAYMENT_ID, CAP, &q), 0);
        }
    }
    CHECK_EQ_INT(rf_decode_payment(NULL, 0, RF_FRAMING_PLAIN, PAYMENT_ID, CAP, &q), RF_E_TRUNCATED);
}

static void test_framing_errors(void) {
    uint8_t buf[512];
    size_t len = 0;
    struct rf_payment p, q;
    sample_payment(&p, 0);
    CHECK_EQ_INT(rf_encode_payment(&p, RF_FRAMING_CONFLUENT, PAYMENT_ID, buf, sizeof buf, &len), 0);

    /* wrong magic: a Confluent-looking header with byte 0 set, JSON, a plain Avro body */
    static const uint8_t magics[] = {1, 0x7b, 0xff, 0x80};
    for (size_t i = 0; i < sizeof magics; i++) {
        buf[0] = magics[i];
        CHECK_EQ_INT(rf_decode_payment(buf, len, RF_FRAMING_CONFLUENT, PAYMENT_ID, CAP, &q),
                     RF_E_BADMAGIC);
        CHECK_EQ_INT(rf_decode_payment(buf, 5, RF_FRAMING_CONFLUENT, PAYMENT_ID, CAP, &q),
                     RF_E_BADMAGIC);
        /* shorter than a header: the magic byte still decides */
        CHECK_EQ_INT(rf_decode_payment(buf, 1, RF_FRAMING_CONFLUENT, PAYMENT_ID, CAP, &q),
                     RF_E_BADMAGIC);
    }
    static const uint8_t json[] = "{}\n";
    CHECK_EQ_INT(rf_decode_payment(json, 3, RF_FRAMING_CONFLUENT, PAYMENT_ID, CAP, &q),
                 RF_E_BADMAGIC);
    buf[0] = 0;
    uint8_t body[512];
    size_t blen = 0;
    CHECK_EQ_INT(rf_encode_payment(&p, RF_FRAMING_PLAIN, 0, body, sizeof body, &blen), 0);
    CHECK_EQ_INT(rf_decode_payment(body, blen, RF_FRAMING_CONFLUENT, PAYMENT_ID, CAP, &q),
                 body[0] == 0 ? RF_E_UNKNOWN_SCHEMA : RF_E_BADMAGIC);

    /* ids other than the payment's: unknown ones, and FraudScore's (2), which the registry
     * knows but this decoder does not read */
    static const uint32_t ids[] = {0, 2, 3, 99, 0x01000001, 0x80000001, 0xffffffff};
    for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++) {
        buf[1] = (uint8_t)(ids[i] >> 24);
        buf[2] = (uint8_t)(ids[i] >> 16);
        buf[3] = (uint8_t)(ids[i] >> 8);
        buf[4] = (uint8_t)ids[i];
        CHECK_EQ_INT(rf_decode_payment(buf, len, RF_FRAMING_CONFLUENT, PAYMENT_ID, CAP, &q),
                     RF_E_UNKNOWN_SCHEMA);
        CHECK_EQ_INT(rf_decode_payment(buf, 5, RF_FRAMING_CONFLUENT, PAYMENT_ID, CAP, &q),
                     RF_E_UNKNOWN_SCHEMA);
    }
    /* a real FraudScore, framed with its own id */
    struct rf_fraud_score s;
    char names[RF_FEATURES_MAX][48];
    sample_score(&s, 3, names);
    CHECK_EQ_INT(rf_encode_fraud_score(&s, RF_FRAMING_CONFLUENT, 2, buf, sizeof buf, &len), 0);
    CHECK_EQ_INT(rf_decode_payment(buf, len, RF_FRAMING_CONFLUENT, PAYMENT_ID, CAP, &q),
                 RF_E_UNKNOWN_SCHEMA);
    /* read as a plain payment body it must not pass either */
    CHECK(rf_decode_payment(buf + 5, len - 5, RF_FRAMING_PLAIN, PAYMENT_ID, CAP, &q) != 0);

    /* bad arguments */
    CHECK_EQ_INT(rf_decode_payment(body, blen, RF_FRAMING_PLAIN, PAYMENT_ID, CAP, NULL), RF_E_INVAL);
    CHECK_EQ_INT(rf_decode_payment(NULL, 10, RF_FRAMING_PLAIN, PAYMENT_ID, CAP, &q), RF_E_INVAL);
    CHECK_EQ_INT(rf_decode_payment(body, blen, (enum rf_framing)7, PAYMENT_ID, CAP, &q), RF_E_INVAL);
}

static void test_oversize(void) {
    uint8_t buf[512];
    size_t len = 0;
    struct rf_payment p, q;
    sample_payment(&p, 1);
    for (int fr = 0; fr < 2; fr++) {
        enum rf_framing framing = fr ? RF_FRAMING_PLAIN : RF_FRAMING_CONFLUENT;
        CHECK_EQ_INT(rf_encode_payment(&p, framing, PAYMENT_ID, buf, sizeof buf, &len), 0);
        CHECK_EQ_INT(rf_decode_payment(buf, len, framing, PAYMENT_ID, len, &q), 0);
        CHECK_EQ_INT(rf_decode_payment(buf, len, framing, PAYMENT_ID, len - 1, &q), RF_E_OVERSIZE);
        CHECK_EQ_INT(rf_decode_payment(buf, len, framing, PAYMENT_ID, 0, &q), RF_E_OVERSIZE);
    }
    /* the cap covers the header: a body that fits alone is still too big once framed */
    CHECK_EQ_INT(rf_decode_payment(buf, len, RF_FRAMING_PLAIN, PAYMENT_ID, len, &q), 0);
    CHECK_EQ_INT(rf_encode_payment(&p, RF_FRAMING_CONFLUENT, PAYMENT_ID, buf, sizeof buf, &len), 0);
    CHECK_EQ_INT(rf_decode_payment(buf, len, RF_FRAMING_CONFLUENT, PAYMENT_ID, len - 5, &q),
                 RF_E_OVERSIZE);
    /* and comes before anything else is looked at */
    uint8_t junk[64];
    memset(junk, 0xff, sizeof junk);
    CHECK_EQ_INT(rf_decode_payment(junk, sizeof junk, RF_FRAMING_CONFLUENT, PAYMENT_ID, 63, &q),
                 RF_E_OVERSIZE);
    CHECK_EQ_INT(rf_decode_payment(junk, 3, RF_FRAMING_CONFLUENT, PAYMENT_ID, 2, &q), RF_E_OVERSIZE);
    CHECK_EQ_INT(rf_decode_payment(junk, sizeof junk, RF_FRAMING_CONFLUENT, PAYMENT_ID, 64, &q),
                 RF_E_BADMAGIC);
}

static void test_strings(void) {
    struct rf_payment q;
    struct raw f;
    char big[RF_ID_MAX + 1];
    memset(big, 'x', sizeof big);

    /* ids: 63 bytes fit with the NUL, 64 do not; every string field is checked */
    static const int id_fields[] = {F_EVENT, F_CUSTOMER, F_CARD, F_MERCHANT, F_TERMINAL};
    for (size_t i = 0; i < sizeof id_fields / sizeof id_fields[0]; i++) {
        f.n = 0;
        raw_str(&f, big, RF_ID_MAX - 1);
        CHECK_EQ_INT(decode_field(id_fields[i], f.b, f.n, &q), 0);
        f.n = 0;
        raw_str(&f, big, RF_ID_MAX);
        CHECK_EQ_INT(decode_field(id_fields[i], f.b, f.n, &q), RF_E_MALFORMED);
    }
    f.n = 0;
    raw_str(&f, big, RF_ID_MAX - 1);
    CHECK_EQ_INT(decode_field(F_TERMINAL, f.b, f.n, &q), 0);
    CHECK_EQ_INT(strlen(q.terminal_id), RF_ID_MAX - 1);
    f.n = 0;
    raw_str(&f, "EURO", 4);
    CHECK_EQ_INT(decode_field(F_CURRENCY, f.b, f.n, &q), RF_E_MALFORMED);
    f.n = 0;
    raw_str(&f, "GBRX", 4);
    CHECK_EQ_INT(decode_field(F_COUNTRY, f.b, f.n, &q), RF_E_MALFORMED);
    f.n = 0;
    raw_str(&f, "", 0);
    CHECK_EQ_INT(decode_field(F_COUNTRY, f.b, f.n, &q), 0);
    CHECK_EQ_STR(q.country, "");

    /* a length the field cannot hold is malformed even where the bytes are not there:
     * no complete message could make it valid */
    f.n = 0;
    raw_long(&f, 1000);
    CHECK_EQ_INT(decode_field(F_CARD, f.b, f.n, &q), RF_E_MALFORMED);
    f.n = 0;
    raw_long(&f, INT64_MAX);
    CHECK_EQ_INT(decode_field(F_EVENT, f.b, f.n, &q), RF_E_MALFORMED);

    /* negative lengths */
    static const int64_t negs[] = {-1, -2, -64, INT64_MIN};
    for (size_t i = 0; i < sizeof negs / sizeof negs[0]; i++) {
        f.n = 0;
        raw_long(&f, negs[i]);
        raw_bytes(&f, "abc", 3);
        CHECK_EQ_INT(decode_field(F_MERCHANT, f.b, f.n, &q), RF_E_MALFORMED);
    }

    /* a NUL anywhere inside a string */
    static const char *const nuls[] = {"\0abc", "ab\0c", "abc\0"};
    for (size_t i = 0; i < 3; i++) {
        f.n = 0;
        raw_str(&f, nuls[i], 4);
        CHECK_EQ_INT(decode_field(F_CUSTOMER, f.b, f.n, &q), RF_E_MALFORMED);
    }
    f.n = 0;
    raw_str(&f, "E\0R", 3);
    CHECK_EQ_INT(decode_field(F_CURRENCY, f.b, f.n, &q), RF_E_MALFORMED);
}

/* Every length a field can hold, with a NUL at every position: the decoder copies and
 * checks strings a word at a time (short, long and overlapping tails), the encoder finds
 * the end of a fixed field the same way, so every length and offset takes its own path. */
static void test_string_lengths(void) {
    struct rf_payment p, q;
    uint8_t buf[512];
    size_t len = 0;
    char s[RF_ID_MAX];
    int bad_ok = 0, bad_nul = 0, bad_enc = 0;
    for (size_t n = 0; n < RF_ID_MAX; n++) {
        for (size_t k = 0; k < n; k++)
            s[k] = (char)('a' + (k * 7 + n) % 26);
        s[n] = '\0';
        struct raw f = {.n = 0};
        raw_str(&f, s, n);
        bad_ok += decode_field(F_MERCHANT, f.b, f.n, &q) != 0 || strcmp(q.merchant_id, s) != 0;
        for (size_t at = 0; at < n; at++) {
            char t[RF_ID_MAX];
            memcpy(t, s, n);
            t[at] = '\0';
            f.n = 0;
            raw_str(&f, t, n);
            bad_nul += decode_field(F_MERCHANT, f.b, f.n, &q) != RF_E_MALFORMED;
        }
        /* the encoder: a field of every length, with junk after its NUL */
        sample_payment(&p, 0);
        memset(p.card_token, 'z', sizeof p.card_token);
        memcpy(p.card_token, s, n + 1);
        bad_enc += rf_encode_payment(&p, RF_FRAMING_PLAIN, 0, buf, sizeof buf, &len) != 0 ||
                   rf_decode_payment(buf, len, RF_FRAMING_PLAIN, PAYMENT_ID, CAP, &q) != 0 ||
                   !payment_eq(&p, &q);
    }
    CHECK_EQ_INT(bad_ok, 0);
    CHECK_EQ_INT(bad_nul, 0);
    CHECK_EQ_INT(bad_enc, 0);
    /* a byte of 0x80 or 0x01 is not a NUL (the word test must not confuse them) */
    static const char tricky[][12] = {"\x80\x80\x80\x80\x80\x80\x80\x80\x80", "\x01\x01\x01\x01\x01\x01\x01\x01\x01",
                                      "\xff\x01\x80\x7f\xfe\x01\x01\x80\x81"};
    for (size_t i = 0; i < 3; i++) {
        for (size_t n = 1; n <= 9; n++) {
            struct raw f = {.n = 0};
            raw_str(&f, tricky[i], n);
            CHECK_EQ_INT(decode_field(F_TERMINAL, f.b, f.n, &q), 0);
            CHECK(strlen(q.terminal_id) == n && memcmp(q.terminal_id, tricky[i], n) == 0);
        }
    }
}

static void test_numbers_and_enums(void) {
    struct rf_payment q;
    struct raw f;

    /* enums: last symbol in range, one past it and negatives out */
    f.n = 0;
    raw_long(&f, RF_CHANNEL__N - 1);
    CHECK_EQ_INT(decode_field(F_CHANNEL, f.b, f.n, &q), 0);
    CHECK_EQ_INT(q.channel, RF_CHANNEL_MOBILE);
    f.n = 0;
    raw_long(&f, RF_KIND__N - 1);
    CHECK_EQ_INT(decode_field(F_KIND, f.b, f.n, &q), 0);
    CHECK_EQ_INT(q.kind, RF_KIND_MISSED_PAYMENT);
    static const int64_t bad_enums[] = {RF_CHANNEL__N, RF_KIND__N, -1, 1000, INT32_MIN};
    for (size_t i = 0; i < sizeof bad_enums / sizeof bad_enums[0]; i++) {
        f.n = 0;
        raw_long(&f, bad_enums[i]);
        if (bad_enums[i] != RF_KIND__N)
            CHECK_EQ_INT(decode_field(F_CHANNEL, f.b, f.n, &q), RF_E_MALFORMED);
        if (bad_enums[i] != RF_CHANNEL__N)
            CHECK_EQ_INT(decode_field(F_KIND, f.b, f.n, &q), RF_E_MALFORMED);
    }

    /* int: at most 5 bytes, value within 32 bits */
    static const uint8_t int_min[] = {0xff, 0xff, 0xff, 0xff, 0x0f};      /* INT32_MIN */
    static const uint8_t int_33bit[] = {0x80, 0x80, 0x80, 0x80, 0x10};
    static const uint8_t int_6bytes[] = {0x80, 0x80, 0x80, 0x80, 0x80, 0x00};
    static const uint8_t int_padded[] = {0x8a, 0x80, 0x00};                /* 5, non-minimal */
    CHECK_EQ_INT(decode_field(F_MCC, int_min, sizeof int_min, &q), 0);
    CHECK_EQ_INT(q.mcc, INT32_MIN);
    CHECK_EQ_INT(decode_field(F_MCC, int_33bit, sizeof int_33bit, &q), RF_E_MALFORMED);
    CHECK_EQ_INT(decode_field(F_MCC, int_6bytes, sizeof int_6bytes, &q), RF_E_MALFORMED);
    CHECK_EQ_INT(decode_field(F_MCC, int_padded, sizeof int_padded, &q), 0);
    CHECK_EQ_INT(q.mcc, 5);
    /* an enum index is an int too */
    CHECK_EQ_INT(decode_field(F_KIND, int_33bit, sizeof int_33bit, &q), RF_E_MALFORMED);

    /* long: at most 10 bytes, the 10th carrying only bit 63 */
    static const uint8_t long_min[] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01};
    static const uint8_t long_65bit[] = {0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x02};
    static const uint8_t long_11bytes[] = {0x80, 0x80, 0x80, 0x80, 0x80, 0x80,
                                           0x80, 0x80, 0x80, 0x80, 0x00};
    CHECK_EQ_INT(decode_field(F_AMOUNT, long_min, sizeof long_min, &q), 0);
    CHECK_EQ_INT(q.amount_minor, INT64_MIN);
    CHECK_EQ_INT(decode_field(F_TIME, long_min, sizeof long_min, &q), 0);
    CHECK_EQ_INT(q.event_time_ms, INT64_MIN);
    CHECK_EQ_INT(decode_field(F_AMOUNT, long_65bit, sizeof long_65bit, &q), RF_E_MALFORMED);
    CHECK_EQ_INT(decode_field(F_TIME, long_11bytes, sizeof long_11bytes, &q), RF_E_MALFORMED);
    /* a string length is a long: same rules */
    CHECK_EQ_INT(decode_field(F_EVENT, long_11bytes, sizeof long_11bytes, &q), RF_E_MALFORMED);

    /* bytes after the record, in both framings (decode_field checks both) */
    struct raw r = {.n = 0};
    raw_payment(&r, -1, NULL, 0);
    CHECK_EQ_INT(decode_both(&r, &q), 0);
    r.b[r.n++] = 0;
    CHECK_EQ_INT(decode_both(&r, &q), RF_E_MALFORMED);
    r.n--;
    raw_payment(&r, -1, NULL, 0); /* two records glued together */
    CHECK_EQ_INT(decode_both(&r, &q), RF_E_MALFORMED);
}

/* A decode that succeeded must have produced something our own decoder and avro-c agree on:
 * clean C strings within their fields, enums in range, and the same fields through avro-c. */
static void check_accepted(struct oracle *o, const uint8_t *body, size_t n,
                           const struct rf_payment *q) {
    CHECK(memchr(q->event_id, 0, sizeof q->event_id) && memchr(q->currency, 0, sizeof q->currency) &&
          memchr(q->country, 0, sizeof q->country) && memchr(q->terminal_id, 0, RF_ID_MAX));
    CHECK((int)q->channel >= 0 && q->channel < RF_CHANNEL__N);
    CHECK((int)q->kind >= 0 && q->kind < RF_KIND__N);
    if (o && oracle_read(o, body, n) == 0)
        avro_expect_payment(&o->val, q);
    uint8_t again[512];
    size_t len = 0;
    struct rf_payment q2;
    CHECK_EQ_INT(rf_encode_payment(q, RF_FRAMING_PLAIN, 0, again, sizeof again, &len), 0);
    CHECK_EQ_INT(rf_decode_payment(again, len, RF_FRAMING_PLAIN, PAYMENT_ID, CAP, &q2), 0);
    CHECK(payment_eq(q, &q2));
}

static void test_garbage(void) {
    rf_schemas_t *schemas = load_repo_schemas();
    struct oracle o;
    struct oracle *op = NULL;
    if (schemas && oracle_init(&o, schemas, PAYMENT_ID) == 0)
        op = &o;
    int counts[9] = {0}; /* by -rc: 0 ok, 3 truncated ... 7 malformed */
    struct rf_payment q;
    rng_state = 20240611;

    /* random bytes; some get a valid header so the body decoder is reached, some the magic
     * byte with a random or a known non-payment id */
    for (int i = 0; i < 5000; i++) {
        size_t n = (size_t)(rnd() % 200);
        uint8_t *m = malloc(n ? n : 1);
        for (size_t k = 0; k < n; k++)
            m[k] = (uint8_t)rnd();
        if (n >= 5 && i % 4 == 1) {
            m[0] = m[1] = m[2] = m[3] = 0;
            m[4] = PAYMENT_ID;
        } else if (n >= 5 && i % 4 == 2) {
            m[0] = 0;
        } else if (n >= 5 && i % 4 == 3) {
            m[0] = m[1] = m[2] = m[3] = 0;
            m[4] = 2;
        }
        int rc = rf_decode_payment(m, n, RF_FRAMING_CONFLUENT, PAYMENT_ID, CAP, &q);
        CHECK(rc == 0 || is_decode_reason(rc));
        counts[rc <= 0 && rc > -9 ? -rc : 8]++;
        if (rc == 0)
            check_accepted(op, m + 5, n - 5, &q);
        rc = rf_decode_payment(m, n, RF_FRAMING_PLAIN, PAYMENT_ID, CAP, &q);
        CHECK(rc == 0 || is_decode_reason(rc));
        counts[rc <= 0 && rc > -9 ? -rc : 8]++;
        if (rc == 0)
            check_accepted(op, m, n, &q);
        free(m);
    }

    /* mutations of valid payments: flipped bytes, a varint byte set to 0x80/0xff, cut or
     * extended — these get past the first field, where random bytes rarely do */
    uint8_t base[512];
    size_t blen = 0;
    struct rf_payment p;
    for (int i = 0; i < 20000; i++) {
        sample_payment(&p, 2 + i % 50);
        CHECK_EQ_INT(rf_encode_payment(&p, RF_FRAMING_PLAIN, 0, base, sizeof base, &blen), 0);
        size_t n = blen;
        int op_kind = (int)(rnd() % 4);
        if (op_kind == 3)
            n = blen + 1 + rnd() % 8;
        uint8_t *m = malloc(n);
        memcpy(m, base, blen < n ? blen : n);
        for (size_t k = blen; k < n; k++)
            m[k] = (uint8_t)rnd();
        int flips = 1 + (int)(rnd() % 3);
        for (int k = 0; k < flips && op_kind < 3; k++) {
            size_t at = (size_t)(rnd() % n);
            m[at] = op_kind == 0 ? (uint8_t)rnd() : op_kind == 1 ? 0x80 : (uint8_t)(m[at] ^ 1);
        }
        int rc = rf_decode_payment(m, n, RF_FRAMING_PLAIN, PAYMENT_ID, CAP, &q);
        CHECK(rc == 0 || is_decode_reason(rc));
        counts[rc <= 0 && rc > -9 ? -rc : 8]++;
        if (rc == 0)
            check_accepted(op, m, n, &q);
        free(m);
    }
    fprintf(stderr, "  garbage outcomes: ok %d, truncated %d, bad_magic %d, unknown_schema %d, "
                    "malformed %d\n",
            counts[0], counts[3], counts[4], counts[5], counts[7]);
    /* the inputs reach every outcome, or this test is not testing what it says */
    CHECK(counts[0] > 100);
    CHECK(counts[3] > 100);
    CHECK(counts[4] > 100);
    CHECK(counts[5] > 100);
    CHECK(counts[7] > 100);
    CHECK_EQ_INT(counts[6], 0);
    if (op)
        oracle_close(op);
    rf_schemas_destroy(schemas);
}


/* riskflow.PdUpdate: every field through avro-c, 0..3 reasons, both framings. */
static void test_oracle_encode_pd_update(void) {
    rf_schemas_t *schemas = load_repo_schemas();
    struct oracle o;
    if (!schemas || oracle_init(&o, schemas, 7) != 0)
        goto out;
    static const char *const feats[] = {"cr_utilisation", "cr_missed_90d", "cr_cash_30d"};
    uint8_t buf[2048];
    size_t len = 0;
    for (int nr = 0; nr <= RF_REASONS_MAX; nr++) {
        struct rf_pd_update u = {
            .customer_id = "C000042",
            .pd = odd_doubles[nr],
            .score = 612.25 - nr,
            .band = "B",
            .previous_band = nr == 0 ? "" : "A",
            .n_reasons = nr,
            .model_version = "credit-sc-20261201-ab12cd34",
            .cause_event_id = "ce-7",
            .cause_type = "riskflow.CreditEvent",
            .event_time_ms = 1795996800000LL + nr,
            .updated_at_ms = 1795996800999LL,
            .source_partition = nr,
            .source_offset = INT64_MAX - nr,
        };
        for (int i = 0; i < nr; i++)
            u.reasons[i] = (struct rf_adverse_reason){feats[i], odd_doubles[i + 3], 40.0 / (i + 1)};
        for (int fr = 0; fr < 2; fr++) {
            enum rf_framing framing = fr ? RF_FRAMING_PLAIN : RF_FRAMING_CONFLUENT;
            size_t hdr = fr ? 0 : 5;
            CHECK_EQ_INT(rf_encode_pd_update(&u, framing, 7, buf, sizeof buf, &len), 0);
            if (oracle_read(&o, buf + hdr, len - hdr) != 0)
                continue;
            expect_field_str(&o.val, "customer_id", u.customer_id);
            expect_field_double(&o.val, "pd", u.pd);
            expect_field_double(&o.val, "score", u.score);
            expect_field_str(&o.val, "band", u.band);
            expect_field_str(&o.val, "previous_band", u.previous_band);
            avro_value_t arr = field_of(&o.val, "reasons");
            size_t n = 0;
            CHECK_EQ_INT(avro_value_get_size(&arr, &n), 0);
            CHECK_EQ_INT(n, nr);
            for (size_t i = 0; i < n && i < (size_t)nr; i++) {
                avro_value_t item, f;
                CHECK_EQ_INT(avro_value_get_by_index(&arr, i, &item, NULL), 0);
                f = field_of(&item, "feature");
                expect_str(&f, u.reasons[i].feature);
                f = field_of(&item, "value");
                expect_double(&f, u.reasons[i].value);
                f = field_of(&item, "points_lost");
                expect_double(&f, u.reasons[i].points_lost);
            }
            expect_field_str(&o.val, "model_version", u.model_version);
            expect_field_str(&o.val, "cause_event_id", u.cause_event_id);
            expect_field_str(&o.val, "cause_type", u.cause_type);
            expect_field_long(&o.val, "event_time", u.event_time_ms);
            expect_field_long(&o.val, "updated_at", u.updated_at_ms);
            expect_field_int(&o.val, "source_partition", u.source_partition);
            expect_field_long(&o.val, "source_offset", u.source_offset);
            expect_oracle_same_bytes(&o, buf + hdr, len - hdr);
        }
        u.band = NULL;
        CHECK_EQ_INT(rf_encode_pd_update(&u, RF_FRAMING_PLAIN, 7, buf, sizeof buf, &len),
                     RF_E_INVAL);
    }
    struct rf_pd_update bad = {.n_reasons = RF_REASONS_MAX + 1};
    CHECK_EQ_INT(rf_encode_pd_update(&bad, RF_FRAMING_PLAIN, 7, buf, sizeof buf, &len), RF_E_INVAL);
    oracle_close(&o);
out:
    rf_schemas_destroy(schemas);
}

/* riskflow.MarketSignal: every field through avro-c, 0..RF_FEATURES_MAX features. */
static void test_oracle_encode_market_signal(void) {
    rf_schemas_t *schemas = load_repo_schemas();
    struct oracle o;
    if (!schemas || oracle_init(&o, schemas, 8) != 0)
        goto out;
    static const int counts[] = {0, 1, 12, RF_FEATURES_MAX};
    char names[RF_FEATURES_MAX][48];
    uint8_t buf[4096];
    size_t len = 0;
    for (size_t c = 0; c < sizeof counts / sizeof counts[0]; c++) {
        struct rf_market_signal m = {
            .instrument = "XPAR:ABC",
            .bar_end_ms = 1795996860000LL,
            .bar_index = 29933281 + (int64_t)c,
            .horizon_bars = 5,
            .expected_return_bps = odd_doubles[c],
            .p_up = 0.5 + 0.01 * (double)c,
            .model_version = "market-gru-20261201-0badf00d",
            .n_features = counts[c],
            .signal_at_ms = 1795996860123LL,
            .source_partition = 3,
            .source_offset = 99,
        };
        for (int i = 0; i < counts[c]; i++) {
            snprintf(names[i], sizeof names[i], "mkt_feature_%d", i);
            m.features[i] = (struct rf_named_value){names[i], odd_doubles[i % 8] * (i + 1)};
        }
        for (int fr = 0; fr < 2; fr++) {
            enum rf_framing framing = fr ? RF_FRAMING_PLAIN : RF_FRAMING_CONFLUENT;
            size_t hdr = fr ? 0 : 5;
            CHECK_EQ_INT(rf_encode_market_signal(&m, framing, 8, buf, sizeof buf, &len), 0);
            if (oracle_read(&o, buf + hdr, len - hdr) != 0)
                continue;
            expect_field_str(&o.val, "instrument", m.instrument);
            expect_field_long(&o.val, "bar_end", m.bar_end_ms);
            expect_field_long(&o.val, "bar_index", m.bar_index);
            expect_field_int(&o.val, "horizon_bars", m.horizon_bars);
            expect_field_double(&o.val, "expected_return_bps", m.expected_return_bps);
            expect_field_double(&o.val, "p_up", m.p_up);
            expect_field_str(&o.val, "model_version", m.model_version);
            avro_value_t arr = field_of(&o.val, "features");
            size_t n = 0;
            CHECK_EQ_INT(avro_value_get_size(&arr, &n), 0);
            CHECK_EQ_INT(n, m.n_features);
            for (size_t i = 0; i < n && i < (size_t)m.n_features; i++) {
                avro_value_t item, f;
                CHECK_EQ_INT(avro_value_get_by_index(&arr, i, &item, NULL), 0);
                f = field_of(&item, "name");
                expect_str(&f, m.features[i].name);
                f = field_of(&item, "value");
                expect_double(&f, m.features[i].value);
            }
            expect_field_long(&o.val, "signal_at", m.signal_at_ms);
            expect_field_int(&o.val, "source_partition", m.source_partition);
            expect_field_long(&o.val, "source_offset", m.source_offset);
            expect_oracle_same_bytes(&o, buf + hdr, len - hdr);
        }
    }
    oracle_close(&o);
out:
    rf_schemas_destroy(schemas);
}

/* ---- encoder limits --------------------------------------------------------------------- */

typedef int (*encode_fn)(const void *rec, enum rf_framing framing, uint8_t *buf, size_t cap,
                         size_t *len);

static int enc_payment(const void *rec, enum rf_framing fr, uint8_t *buf, size_t cap, size_t *len) {
    return rf_encode_payment(rec, fr, 1, buf, cap, len);
}
static int enc_score(const void *rec, enum rf_framing fr, uint8_t *buf, size_t cap, size_t *len) {
    return rf_encode_fraud_score(rec, fr, 2, buf, cap, len);
}
static int enc_alert(const void *rec, enum rf_framing fr, uint8_t *buf, size_t cap, size_t *len) {
    return rf_encode_fraud_alert(rec, fr, 3, buf, cap, len);
}

/* Every cap below the size is NOSPACE and writes nothing at or past cap; the exact size
 * works and gives the same bytes. */
static void check_nospace(encode_fn enc, const void *rec) {
    static uint8_t full[4096], buf[4096];
    for (int fr = 0; fr < 2; fr++) {
        enum rf_framing framing = fr ? RF_FRAMING_PLAIN : RF_FRAMING_CONFLUENT;
        size_t need = 0, len = 0;
        CHECK_EQ_INT(enc(rec, framing, full, sizeof full, &need), 0);
        CHECK(need > 0);
        int bad = 0;
        for (size_t cap = 0; cap < need; cap++) {
            memset(buf, 0xa5, need + 16);
            len = 12345;
            int rc = enc(rec, framing, cap ? buf : NULL, cap, &len);
            for (size_t k = cap; k < need + 16; k++)
                bad += buf[k] != 0xa5;
            bad += rc != RF_E_NOSPACE;
        }
        CHECK_EQ_INT(bad, 0);
        memset(buf, 0xa5, need + 16);
        CHECK_EQ_INT(enc(rec, framing, buf, need, &len), 0);
        CHECK_EQ_INT(len, need);
        CHECK(memcmp(buf, full, need) == 0);
    }
}

static void test_encode_nospace(void) {
    struct rf_payment p;
    struct rf_fraud_score s;
    struct rf_fraud_alert a;
    char names[RF_FEATURES_MAX][48];
    sample_payment(&p, 1);
    check_nospace(enc_payment, &p);
    sample_score(&s, RF_FEATURES_MAX, names);
    check_nospace(enc_score, &s);
    sample_score(&s, 0, names);
    check_nospace(enc_score, &s);
    sample_alert(&a, RF_REASONS_MAX);
    check_nospace(enc_alert, &a);
    sample_alert(&a, 0);
    check_nospace(enc_alert, &a);
}

static void test_encode_inval(void) {
    uint8_t buf[4096];
    size_t len = 0;
    struct rf_payment p;
    struct rf_fraud_score s;
    struct rf_fraud_alert a;
    char names[RF_FEATURES_MAX][48];

    sample_payment(&p, 0);
    p.channel = RF_CHANNEL__N;
    CHECK_EQ_INT(rf_encode_payment(&p, RF_FRAMING_PLAIN, 1, buf, sizeof buf, &len), RF_E_INVAL);
    /* a value the schema cannot carry is INVAL whatever the cap: more room would not help */
    CHECK_EQ_INT(rf_encode_payment(&p, RF_FRAMING_PLAIN, 1, buf, 3, &len), RF_E_INVAL);
    sample_payment(&p, 0);
    p.kind = (enum rf_payment_kind)-1;
    CHECK_EQ_INT(rf_encode_payment(&p, RF_FRAMING_PLAIN, 1, buf, sizeof buf, &len), RF_E_INVAL);
    sample_payment(&p, 0);
    memset(p.currency, 'X', sizeof p.currency); /* no NUL in the field */
    CHECK_EQ_INT(rf_encode_payment(&p, RF_FRAMING_PLAIN, 1, buf, sizeof buf, &len), RF_E_INVAL);
    sample_payment(&p, 0);
    CHECK_EQ_INT(rf_encode_payment(&p, RF_FRAMING_CONFLUENT, -1, buf, sizeof buf, &len), RF_E_INVAL);
    CHECK_EQ_INT(rf_encode_payment(&p, (enum rf_framing)9, 1, buf, sizeof buf, &len), RF_E_INVAL);
    CHECK_EQ_INT(rf_encode_payment(&p, RF_FRAMING_PLAIN, 1, buf, sizeof buf, NULL), RF_E_INVAL);
    CHECK_EQ_INT(rf_encode_payment(NULL, RF_FRAMING_PLAIN, 1, buf, sizeof buf, &len), RF_E_INVAL);
    CHECK_EQ_INT(rf_encode_payment(&p, RF_FRAMING_PLAIN, 1, NULL, 10, &len), RF_E_INVAL);

    sample_score(&s, 3, names);
    s.features[2].name = NULL;
    CHECK_EQ_INT(rf_encode_fraud_score(&s, RF_FRAMING_PLAIN, 2, buf, sizeof buf, &len), RF_E_INVAL);
    CHECK_EQ_INT(rf_encode_fraud_score(&s, RF_FRAMING_PLAIN, 2, buf, 1, &len), RF_E_INVAL);
    sample_score(&s, 3, names);
    s.model_version = NULL;
    CHECK_EQ_INT(rf_encode_fraud_score(&s, RF_FRAMING_PLAIN, 2, buf, sizeof buf, &len), RF_E_INVAL);
    sample_score(&s, 3, names);
    s.n_features = RF_FEATURES_MAX + 1;
    CHECK_EQ_INT(rf_encode_fraud_score(&s, RF_FRAMING_PLAIN, 2, buf, sizeof buf, &len), RF_E_INVAL);
    s.n_features = -1;
    CHECK_EQ_INT(rf_encode_fraud_score(&s, RF_FRAMING_PLAIN, 2, buf, sizeof buf, &len), RF_E_INVAL);

    sample_alert(&a, 2);
    a.currency = NULL;
    CHECK_EQ_INT(rf_encode_fraud_alert(&a, RF_FRAMING_PLAIN, 3, buf, sizeof buf, &len), RF_E_INVAL);
    sample_alert(&a, 2);
    a.reasons[1].feature = NULL;
    CHECK_EQ_INT(rf_encode_fraud_alert(&a, RF_FRAMING_PLAIN, 3, buf, sizeof buf, &len), RF_E_INVAL);
    sample_alert(&a, 2);
    a.n_reasons = RF_REASONS_MAX + 1;
    CHECK_EQ_INT(rf_encode_fraud_alert(&a, RF_FRAMING_PLAIN, 3, buf, sizeof buf, &len), RF_E_INVAL);

    /* arrays: one block then the 0 terminator; an empty array is the 0 alone */
    sample_score(&s, 0, names);
    size_t len0 = 0, len1 = 0;
    CHECK_EQ_INT(rf_encode_fraud_score(&s, RF_FRAMING_PLAIN, 2, buf, sizeof buf, &len0), 0);
    sample_score(&s, 1, names);
    s.customer_id = "cust-42";
    s.score = odd_doubles[0];
    s.event_time_ms--;
    CHECK_EQ_INT(rf_encode_fraud_score(&s, RF_FRAMING_PLAIN, 2, buf, sizeof buf, &len1), 0);
    /* one item adds the count (1 byte), the name (1 + len) and the double (8) */
    CHECK_EQ_INT(len1 - len0, 1 + 1 + strlen(s.features[0].name) + 8);
}

RF_TEST_MAIN(RF_TEST(test_registry_load), RF_TEST(test_registry_errors), RF_TEST(test_roundtrip),
             RF_TEST(test_oracle_decode), RF_TEST(test_oracle_encode_payment),
             RF_TEST(test_oracle_encode_score), RF_TEST(test_oracle_encode_alert),
             RF_TEST(test_oracle_encode_pd_update), RF_TEST(test_oracle_encode_market_signal),
             RF_TEST(test_truncation_every_prefix), RF_TEST(test_framing_errors),
             RF_TEST(test_oversize), RF_TEST(test_strings), RF_TEST(test_string_lengths),
             RF_TEST(test_numbers_and_enums),
             RF_TEST(test_garbage), RF_TEST(test_encode_nospace), RF_TEST(test_encode_inval))
