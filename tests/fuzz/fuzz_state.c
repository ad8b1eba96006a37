/*
 * fuzz_state.c — libFuzzer target for what riskflowd reads back from Redis: stored entity
 * values (feat.h) and replay journal chunks (journal.h).
 *
 * Input: one selector byte, then the bytes Redis would hand back. Selector 0..N-1: a value of
 * entity kind (selector % kinds) of deploy/features.conf; if rf_feat_check_value accepts it,
 * every feature available for the record types that touch the kind is evaluated, the record
 * is checked for a replay and applied, and the features are evaluated again (FEATURES.md §4:
 * any bytes past the header give some values, never undefined behaviour). Selector 255: a
 * journal chunk, looked up at a few offsets and walked. Aborts when an accepted value stops
 * being accepted after an apply (the writer would then write what the reader refuses).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "riskflow/codec.h"
#include "riskflow/decl.h"
#include "riskflow/err.h"
#include "riskflow/feat.h"
#include "riskflow/journal.h"

static rf_schemas_t *schemas;
static rf_decl_t *decl;
static struct rf_rec recs[2];
static uint8_t bodies[2][512];
static int n_recs;

static void die(const char *what, const char *err) {
    fprintf(stderr, "fuzz_state: %s: %s (run from the repo root)\n", what, err);
    exit(1);
}

/* A valid record of each input type that touches an entity: decoded from bytes our own
 * encoder wrote, as the engine would see it. */
static void add_payment(void) {
    struct rf_payment p;
    memset(&p, 0, sizeof p);
    snprintf(p.event_id, sizeof p.event_id, "e1");
    snprintf(p.customer_id, sizeof p.customer_id, "C0001");
    snprintf(p.card_token, sizeof p.card_token, "tok");
    snprintf(p.merchant_id, sizeof p.merchant_id, "m1");
    snprintf(p.terminal_id, sizeof p.terminal_id, "t1");
    snprintf(p.currency, sizeof p.currency, "EUR");
    snprintf(p.country, sizeof p.country, "DE");
    p.amount_minor = 12345;
    p.event_time_ms = 1790000000000LL;
    size_t len = 0;
    if (rf_encode_payment(&p, RF_FRAMING_PLAIN, 1, bodies[0], sizeof bodies[0], &len) != 0)
        die("encode", "payment");
    const struct rf_rtype *t = rf_schemas_rtype_named(schemas, "riskflow.Payment");
    if (!t || rf_rec_decode(t, bodies[0], len, &recs[n_recs]) != 0)
        die("decode", "payment");
    n_recs++;
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    char err[512];
    (void)argc;
    (void)argv;
    schemas = rf_schemas_load("schemas", err, sizeof err);
    if (!schemas)
        die("schemas", err);
    decl = rf_decl_load("deploy/features.conf", schemas, err, sizeof err);
    if (!decl || rf_decl_finish(decl, err, sizeof err) != 0)
        die("deploy/features.conf", err);
    add_payment();
    return 0;
}

#ifdef RF_FUZZ_SEEDS
/* Built as a plain program: seeds into DIR — a fresh value of each kind, the same after a
 * payment, and a journal chunk. */
static void put(const char *dir, const char *name, uint8_t sel, const uint8_t *b, size_t n) {
    char p[512];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    FILE *f = fopen(p, "wb");
    if (!f)
        die("seed", p);
    fputc(sel, f);
    fwrite(b, 1, n, f);
    fclose(f);
}

int main(int argc, char **argv) {
    if (argc != 2)
        die("usage", "fuzz_state_seeds DIR");
    LLVMFuzzerInitialize(NULL, NULL);
    static _Alignas(8) uint8_t v[RF_VALUE_MAX];
    for (int k = 0; k < rf_decl_n_kinds(decl); k++) {
        uint32_t n = rf_decl_value_size(decl, k);
        char name[32];
        rf_feat_init_value(decl, k, v);
        snprintf(name, sizeof name, "fresh-%d", k);
        put(argv[1], name, (uint8_t)k, v, n);
        uint8_t *ents[RF_KINDS_MAX] = {0};
        if (rf_decl_key_field(decl, k, recs[0].type) >= 0) {
            ents[k] = v;
            struct rf_src src = {1, 0, 1};
            rf_feat_apply(decl, &recs[0], ents, &src);
            snprintf(name, sizeof name, "applied-%d", k);
            put(argv[1], name, (uint8_t)k, v, n);
        }
    }
    struct rf_jbuf j = {0};
    size_t c = rf_journal_chunk_begin(&j), ka, pa;
    size_t e = rf_journal_entry_begin(&j, 7);
    rf_journal_output(&j, 0, 0, "fraud.scores", "C0001", 5, "payload", 7, &ka, &pa);
    rf_journal_entry_end(&j, e, 1);
    rf_journal_chunk_end(&j, c, 1);
    put(argv[1], "journal", 255, j.b, j.n);
    rf_jbuf_free(&j);
    return 0;
}
#else
static double sink;

static void eval_all(const struct rf_rec *r, uint8_t *const *ents) {
    for (int id = 0; id < rf_decl_n_features(decl); id++)
        if (rf_decl_available(decl, id, r->type))
            sink += rf_feat_eval_one(decl, id, r, ents);
}

static void value_case(int kind, const uint8_t *data, size_t size) {
    if (rf_feat_check_value(decl, kind, data, size) != 0)
        return;
    static _Alignas(8) uint8_t v[RF_VALUE_MAX];
    memcpy(v, data, size);
    for (int i = 0; i < n_recs; i++) {
        const struct rf_rec *r = &recs[i];
        uint8_t *ents[RF_KINDS_MAX] = {0};
        int touched = 0;
        for (int k = 0; k < rf_decl_n_kinds(decl); k++) {
            if (rf_decl_key_field(decl, k, r->type) < 0)
                continue;
            if (k != kind)
                return; /* a record touching another kind too: not this case */
            ents[k] = v;
            touched = 1;
        }
        if (!touched)
            continue;
        eval_all(r, ents);
        struct rf_src src = {rf_feat_topic_id("t"), 0, 42};
        if (!rf_feat_is_replay(decl, r, ents, &src))
            rf_feat_apply(decl, r, ents, &src);
        eval_all(r, ents);
        if (rf_feat_check_value(decl, kind, v, size) != 0) {
            fprintf(stderr, "fuzz_state: an accepted value was refused after an apply\n");
            abort();
        }
    }
}

static void journal_case(const uint8_t *data, size_t size) {
    int64_t first, last;
    if (rf_journal_span(data, size, &first, &last) != 0)
        return;
    int64_t probes[] = {first, last, first < INT64_MAX ? first + 1 : first,
                        last > INT64_MIN ? last - 1 : last, 0};
    for (size_t i = 0; i < sizeof probes / sizeof probes[0]; i++) {
        const uint8_t *p;
        int n;
        if (rf_journal_find(data, size, probes[i], &p, &n) != 1)
            continue;
        for (int k = 0; k < n; k++) {
            struct rf_jout o;
            rf_journal_next(&p, &o);
            if (o.payload + o.len > data + size || o.key + o.key_len > data + size)
                abort();
            sink += o.len + o.key_len + o.topic_len;
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1)
        return 0;
    if (data[0] == 255)
        journal_case(data + 1, size - 1);
    else
        value_case(data[0] % rf_decl_n_kinds(decl), data + 1, size - 1);
    return 0;
}
#endif
