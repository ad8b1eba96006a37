/*
 * fuzz_decode.c — libFuzzer target for rf_decode_payment, both framings.
 *
 * Owns nothing; runs in the fuzzer's one thread. Beyond "no crash, no out-of-bounds access"
 * (ASan, UBSan) it checks what a fuzzer cannot see for itself, and aborts when one fails:
 *   - the result is 0 or a decode reason (RF_E_TRUNCATED .. RF_E_MALFORMED), never another code;
 *   - a cap one byte below the input is always RF_E_OVERSIZE;
 *   - an accepted input gives clean C strings and in-range enums, re-encodes and decodes to
 *     the same payment, and avro-c (the oracle) reads the same body to the same fields.
 * avro-c only sees inputs our decoder accepted, i.e. valid records: fed arbitrary bytes it
 * allocates whatever a length claims and leaks on failure (design.md §8).
 * Run by tests/fuzz/run.sh (10 s in the suite). Built with -DRF_FUZZ_SEEDS instead, it is a
 * small program that writes a seed corpus.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <avro.h>

#include "riskflow/codec.h"
#include "riskflow/err.h"

#define PAYMENT_ID 1
#define CAP (1 << 16)

#ifndef RF_FUZZ_SEEDS

static avro_value_iface_t *iface;

static void fail(const char *what) {
    fprintf(stderr, "fuzz_decode: %s\n", what);
    abort();
}

/* Needs schemas/ (the payment's writer schema): RF_SCHEMAS_DIR or ./schemas. */
int LLVMFuzzerInitialize(int *argc, char ***argv) {
    char errstr[512];
    const char *dir = getenv("RF_SCHEMAS_DIR");
    rf_schemas_t *schemas = rf_schemas_load(dir ? dir : "schemas", errstr, sizeof errstr);
    if (!schemas) {
        fprintf(stderr, "fuzz_decode: %s (run from the repo root or set RF_SCHEMAS_DIR)\n", errstr);
        exit(1);
    }
    /* The class keeps its own reference to the schema; the registry can go. */
    iface = avro_generic_class_from_schema(rf_schemas_avro(schemas, PAYMENT_ID));
    if (!iface)
        fail("avro-c: cannot make a Payment class");
    rf_schemas_destroy(schemas);
    return 0;
}

static int str_is(avro_value_t *rec, const char *name, const char *want) {
    avro_value_t f;
    const char *s;
    size_t size;
    if (avro_value_get_by_name(rec, name, &f, NULL) || avro_value_get_string(&f, &s, &size))
        return 0;
    return size == strlen(want) + 1 && memcmp(s, want, size) == 0;
}

static int long_is(avro_value_t *rec, const char *name, int64_t want) {
    avro_value_t f;
    int64_t v;
    return !avro_value_get_by_name(rec, name, &f, NULL) && !avro_value_get_long(&f, &v) &&
           v == want;
}

static int int_is(avro_value_t *rec, const char *name, int32_t want) {
    avro_value_t f;
    int32_t v;
    return !avro_value_get_by_name(rec, name, &f, NULL) && !avro_value_get_int(&f, &v) &&
           v == want;
}

static int enum_is(avro_value_t *rec, const char *name, int want) {
    avro_value_t f;
    int v;
    return !avro_value_get_by_name(rec, name, &f, NULL) && !avro_value_get_enum(&f, &v) &&
           v == want;
}

static int same(const struct rf_payment *a, const struct rf_payment *b) {
    return !strcmp(a->event_id, b->event_id) && !strcmp(a->customer_id, b->customer_id) &&
           !strcmp(a->card_token, b->card_token) && !strcmp(a->merchant_id, b->merchant_id) &&
           !strcmp(a->terminal_id, b->terminal_id) && a->mcc == b->mcc &&
           a->amount_minor == b->amount_minor && !strcmp(a->currency, b->currency) &&
           a->channel == b->channel && !strcmp(a->country, b->country) && a->kind == b->kind &&
           a->event_time_ms == b->event_time_ms;
}

static void check_accepted(const uint8_t *body, size_t n, const struct rf_payment *p) {
    if (!memchr(p->event_id, 0, RF_ID_MAX) || !memchr(p->customer_id, 0, RF_ID_MAX) ||
        !memchr(p->card_token, 0, RF_ID_MAX) || !memchr(p->merchant_id, 0, RF_ID_MAX) ||
        !memchr(p->terminal_id, 0, RF_ID_MAX) || !memchr(p->currency, 0, RF_CURRENCY_MAX) ||
        !memchr(p->country, 0, RF_COUNTRY_MAX))
        fail("accepted a string without its NUL");
    if ((int)p->channel < 0 || p->channel >= RF_CHANNEL__N || (int)p->kind < 0 ||
        p->kind >= RF_KIND__N)
        fail("accepted an enum out of range");

    uint8_t again[512];
    size_t len;
    struct rf_payment q;
    if (rf_encode_payment(p, RF_FRAMING_PLAIN, 0, again, sizeof again, &len) != 0)
        fail("cannot re-encode an accepted payment");
    if (rf_decode_payment(again, len, RF_FRAMING_PLAIN, PAYMENT_ID, CAP, &q) != 0 || !same(p, &q))
        fail("re-encoded payment does not decode to itself");
    if (len > n)
        fail("canonical re-encoding is longer than the input");

    /* A fresh value per read: with one reused value, LeakSanitizer reported a few small
     * blocks allocated inside avro-c 1.11.1's avro_value_read over a long run (README.md). */
    avro_value_t oracle;
    if (avro_generic_value_new(iface, &oracle) != 0)
        fail("avro-c: cannot make a Payment value");
    avro_reader_t r = avro_reader_memory((const char *)body, (int64_t)n);
    int rc = avro_value_read(r, &oracle);
    avro_reader_free(r);
    if (rc)
        fail("avro-c rejects a payment we accepted");
    if (!str_is(&oracle, "event_id", p->event_id) ||
        !str_is(&oracle, "customer_id", p->customer_id) ||
        !str_is(&oracle, "card_token", p->card_token) ||
        !str_is(&oracle, "merchant_id", p->merchant_id) ||
        !str_is(&oracle, "terminal_id", p->terminal_id) || !int_is(&oracle, "mcc", p->mcc) ||
        !long_is(&oracle, "amount_minor", p->amount_minor) ||
        !str_is(&oracle, "currency", p->currency) || !enum_is(&oracle, "channel", p->channel) ||
        !str_is(&oracle, "country", p->country) || !enum_is(&oracle, "kind", p->kind) ||
        !long_is(&oracle, "event_time", p->event_time_ms))
        fail("avro-c reads different fields");
    avro_value_decref(&oracle);
}

static void one(const uint8_t *data, size_t size, enum rf_framing framing) {
    struct rf_payment p;
    int rc = rf_decode_payment(data, size, framing, PAYMENT_ID, CAP, &p);
    if (rc != 0 && (rc > RF_E_TRUNCATED || rc < RF_E_MALFORMED))
        fail("not a decode reason");
    if (rc == 0) {
        size_t hdr = framing == RF_FRAMING_CONFLUENT ? RF_CONFLUENT_HEADER : 0;
        check_accepted(data + hdr, size - hdr, &p);
    }
    if (size > 0 && rf_decode_payment(data, size, framing, PAYMENT_ID, size - 1, &p) !=
                        RF_E_OVERSIZE)
        fail("cap not applied to the whole message");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    one(data, size, RF_FRAMING_PLAIN);
    one(data, size, RF_FRAMING_CONFLUENT);
    return 0;
}

#else /* RF_FUZZ_SEEDS: write a seed corpus into argv[1] */

static int seed(const char *dir, int n, const struct rf_payment *p, enum rf_framing framing) {
    uint8_t buf[512];
    size_t len;
    char path[4096];
    if (rf_encode_payment(p, framing, PAYMENT_ID, buf, sizeof buf, &len) != 0)
        return -1;
    snprintf(path, sizeof path, "%s/seed-%02d", dir, n);
    FILE *fp = fopen(path, "wb");
    if (!fp)
        return -1;
    size_t w = fwrite(buf, 1, len, fp);
    return fclose(fp) == 0 && w == len ? 0 : -1;
}

int main(int argc, char **argv) {
    static const char *const ids[] = {"", "e", "9f1c2d3e-0000-4000-8000-000000000001",
                                      "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"};
    struct rf_payment p;
    int n = 0;
    if (argc != 2) {
        fprintf(stderr, "usage: %s DIR\n", argv[0]);
        return 2;
    }
    for (int i = 0; i < 4; i++) {
        memset(&p, 0, sizeof p);
        strcpy(p.event_id, ids[i]);
        strcpy(p.customer_id, ids[(i + 1) % 4]);
        strcpy(p.card_token, ids[(i + 2) % 4]);
        strcpy(p.merchant_id, ids[(i + 3) % 4]);
        strcpy(p.terminal_id, ids[i]);
        p.mcc = i == 3 ? INT32_MIN : 5411 * i;
        p.amount_minor = i == 3 ? INT64_MAX : -12345 * i;
        strcpy(p.currency, i % 2 ? "EUR" : "");
        p.channel = (enum rf_channel)(i % RF_CHANNEL__N);
        strcpy(p.country, i % 2 ? "FRA" : "GB");
        p.kind = (enum rf_payment_kind)(i * 2 % RF_KIND__N);
        p.event_time_ms = 1718000000123LL * i;
        if (seed(argv[1], n++, &p, RF_FRAMING_PLAIN) || seed(argv[1], n++, &p, RF_FRAMING_CONFLUENT)) {
            perror(argv[1]);
            return 1;
        }
    }
    return 0;
}

#endif
