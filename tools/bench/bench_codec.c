/*
 * bench_codec.c — ns per payment decode/encode: our schema-specific codec vs avro-c's generic
 * value API (one reused value), on the same bytes.
 *
 * A tool with one job, single-threaded; it owns its buffers and the avro-c value. It measures
 * what design.md §10 claims (~440 ns vs ~35 ns a decode) so a change to codec_avro.c can be
 * checked against it. Each figure is the median of several timed runs after a warm-up; the
 * machine is noisy, so the min and max are printed too. Each measured loop is its own
 * non-inlined function so callgrind can count just that loop:
 *   valgrind --tool=callgrind --toggle-collect=loop_decode_ours bench_codec -o decode_ours -r 1
 * (instructions per decode = Ir / the -n count).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <avro.h>

#include "riskflow/codec.h"
#include "riskflow/err.h"

#define PAYMENT_ID 1
#define RUNS_MAX 50

static volatile int64_t sink; /* keeps the compiler from dropping the loops */

static double now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static void sample(struct rf_payment *p) {
    memset(p, 0, sizeof *p);
    strcpy(p->event_id, "9f1c2d3e-5b7a-4c1e-8d2f-6a0b1c2d3e4f");
    strcpy(p->customer_id, "C0012345678");
    strcpy(p->card_token, "tok_4b1d9a7c3e5f2b8d");
    strcpy(p->merchant_id, "M-000777123");
    strcpy(p->terminal_id, "T-00012");
    p->mcc = 5411;
    p->amount_minor = 123456;
    strcpy(p->currency, "EUR");
    p->channel = RF_CHANNEL_ECOM;
    strcpy(p->country, "FR");
    p->kind = RF_KIND_PURCHASE;
    p->event_time_ms = 1718000000123;
}

/* What a generic-value consumer must do too: copy the fields out into our struct. */
static int copy_str(avro_value_t *rec, size_t idx, char *dst, size_t cap) {
    avro_value_t f;
    const char *s;
    size_t size;
    if (avro_value_get_by_index(rec, idx, &f, NULL) || avro_value_get_string(&f, &s, &size) ||
        size == 0 || size > cap)
        return -1;
    memcpy(dst, s, size);
    return 0;
}

static int copy_out(avro_value_t *rec, struct rf_payment *p) {
    avro_value_t f;
    int e = 0;
    int rc = copy_str(rec, 0, p->event_id, sizeof p->event_id) |
             copy_str(rec, 1, p->customer_id, sizeof p->customer_id) |
             copy_str(rec, 2, p->card_token, sizeof p->card_token) |
             copy_str(rec, 3, p->merchant_id, sizeof p->merchant_id) |
             copy_str(rec, 4, p->terminal_id, sizeof p->terminal_id) |
             copy_str(rec, 7, p->currency, sizeof p->currency) |
             copy_str(rec, 9, p->country, sizeof p->country);
    rc |= avro_value_get_by_index(rec, 5, &f, NULL) | avro_value_get_int(&f, &p->mcc);
    rc |= avro_value_get_by_index(rec, 6, &f, NULL) | avro_value_get_long(&f, &p->amount_minor);
    rc |= avro_value_get_by_index(rec, 8, &f, NULL) | avro_value_get_enum(&f, &e);
    p->channel = (enum rf_channel)e;
    rc |= avro_value_get_by_index(rec, 10, &f, NULL) | avro_value_get_enum(&f, &e);
    p->kind = (enum rf_payment_kind)e;
    rc |= avro_value_get_by_index(rec, 11, &f, NULL) | avro_value_get_long(&f, &p->event_time_ms);
    return rc ? -1 : 0;
}

static void set_from(avro_value_t *rec, const struct rf_payment *p) {
    avro_value_t f;
    const char *strs[] = {p->event_id, p->customer_id, p->card_token, p->merchant_id,
                          p->terminal_id};
    for (size_t i = 0; i < 5; i++) {
        avro_value_get_by_index(rec, i, &f, NULL);
        avro_value_set_string(&f, strs[i]);
    }
    avro_value_get_by_index(rec, 5, &f, NULL);
    avro_value_set_int(&f, p->mcc);
    avro_value_get_by_index(rec, 6, &f, NULL);
    avro_value_set_long(&f, p->amount_minor);
    avro_value_get_by_index(rec, 7, &f, NULL);
    avro_value_set_string(&f, p->currency);
    avro_value_get_by_index(rec, 8, &f, NULL);
    avro_value_set_enum(&f, p->channel);
    avro_value_get_by_index(rec, 9, &f, NULL);
    avro_value_set_string(&f, p->country);
    avro_value_get_by_index(rec, 10, &f, NULL);
    avro_value_set_enum(&f, p->kind);
    avro_value_get_by_index(rec, 11, &f, NULL);
    avro_value_set_long(&f, p->event_time_ms);
}

struct ctx {
    const uint8_t *body;
    size_t len;
    avro_reader_t reader;
    avro_writer_t writer;
    avro_value_t val;
    struct rf_payment p;
    const struct rf_rtype *rtype;
    uint8_t out[512];
};

/* What the engine runs per message: the generic decoder with the registry's Payment type. */
__attribute__((noinline)) static int loop_decode_ours(struct ctx *c, long n) {
    struct rf_rec r;
    for (long i = 0; i < n; i++) {
        if (rf_rec_decode(c->rtype, c->body, c->len, &r) != 0)
            return -1;
        sink += r.v[6].i;
    }
    return 0;
}

/* The same plus the copy into event.h's fixed struct (tools, tests, the demo). */
__attribute__((noinline)) static int loop_decode_struct(struct ctx *c, long n) {
    struct rf_payment q;
    for (long i = 0; i < n; i++) {
        if (rf_decode_payment(c->body, c->len, RF_FRAMING_PLAIN, PAYMENT_ID, 1 << 20, &q) != 0)
            return -1;
        sink += q.amount_minor;
    }
    return 0;
}

__attribute__((noinline)) static int loop_decode_avro(struct ctx *c, long n) {
    for (long i = 0; i < n; i++) {
        avro_reader_memory_set_source(c->reader, (const char *)c->body, (int64_t)c->len);
        if (avro_value_read(c->reader, &c->val) != 0)
            return -1;
    }
    sink += n;
    return 0;
}

__attribute__((noinline)) static int loop_decode_avro_copy(struct ctx *c, long n) {
    struct rf_payment q;
    for (long i = 0; i < n; i++) {
        avro_reader_memory_set_source(c->reader, (const char *)c->body, (int64_t)c->len);
        if (avro_value_read(c->reader, &c->val) != 0 || copy_out(&c->val, &q) != 0)
            return -1;
        sink += q.amount_minor;
    }
    return 0;
}

__attribute__((noinline)) static int loop_encode_ours(struct ctx *c, long n) {
    size_t len = 0;
    for (long i = 0; i < n; i++) {
        c->p.event_time_ms = i;
        if (rf_encode_payment(&c->p, RF_FRAMING_PLAIN, 0, c->out, sizeof c->out, &len) != 0)
            return -1;
        sink += (int64_t)len;
    }
    return 0;
}

/* Sets every field from the struct, then writes: the work a generic-value producer does. */
__attribute__((noinline)) static int loop_encode_avro(struct ctx *c, long n) {
    for (long i = 0; i < n; i++) {
        c->p.event_time_ms = i;
        set_from(&c->val, &c->p);
        avro_writer_memory_set_dest(c->writer, (const char *)c->out, sizeof c->out);
        if (avro_value_write(c->writer, &c->val) != 0)
            return -1;
        sink += avro_writer_tell(c->writer);
    }
    return 0;
}

struct bench {
    const char *name;
    int (*fn)(struct ctx *, long);
    int weight; /* how many times slower than ours, roughly: fewer iterations */
};

static const struct bench benches[] = {
    {"decode_ours", loop_decode_ours, 1},
    {"decode_struct", loop_decode_struct, 1},
    {"decode_avro", loop_decode_avro, 10},
    {"decode_avro_copy", loop_decode_avro_copy, 10},
    {"encode_ours", loop_encode_ours, 1},
    {"encode_avro", loop_encode_avro, 10},
};

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void usage(const char *argv0) {
    fprintf(stderr,
            "usage: %s [-s SCHEMAS_DIR] [-n ITERATIONS] [-r RUNS] [-o BENCH]\n"
            "  BENCH: decode_ours decode_struct decode_avro decode_avro_copy encode_ours encode_avro (default: all)\n"
            "  -n is for our codec; avro-c loops run n/10. Default -n 2000000 -r 5.\n",
            argv0);
}

int main(int argc, char **argv) {
    const char *dir = "schemas";
    const char *only = NULL;
    long n = 2000000;
    int runs = 5;
    int opt;
    int status = 1;
    char errstr[512];
    uint8_t body[512];
    struct ctx c;
    avro_value_iface_t *iface = NULL;

    while ((opt = getopt(argc, argv, "s:n:r:o:h")) != -1) {
        switch (opt) {
        case 's': dir = optarg; break;
        case 'n': n = atol(optarg); break;
        case 'r': runs = atoi(optarg); break;
        case 'o': only = optarg; break;
        default: usage(argv[0]); return opt == 'h' ? 0 : 2;
        }
    }
    if (n < 10 || runs < 1 || runs > RUNS_MAX) {
        usage(argv[0]);
        return 2;
    }

    memset(&c, 0, sizeof c);
    rf_schemas_t *schemas = rf_schemas_load(dir, errstr, sizeof errstr);
    if (!schemas) {
        fprintf(stderr, "bench_codec: %s\n", errstr);
        goto fail;
    }
    iface = avro_generic_class_from_schema(rf_schemas_avro(schemas, PAYMENT_ID));
    if (!iface) {
        fprintf(stderr, "bench_codec: avro-c: %s\n", avro_strerror());
        goto free_schemas;
    }
    if (avro_generic_value_new(iface, &c.val) != 0) {
        fprintf(stderr, "bench_codec: avro-c: %s\n", avro_strerror());
        goto free_iface;
    }
    sample(&c.p);
    if (rf_encode_payment(&c.p, RF_FRAMING_PLAIN, 0, body, sizeof body, &c.len) != 0) {
        fprintf(stderr, "bench_codec: cannot encode the sample payment\n");
        goto free_val;
    }
    c.body = body;
    c.rtype = rf_schemas_rtype(schemas, PAYMENT_ID);
    if (!c.rtype) {
        fprintf(stderr, "bench_codec: no payment record type in the registry\n");
        goto free_val;
    }
    c.reader = avro_reader_memory((const char *)body, (int64_t)c.len);
    c.writer = avro_writer_memory((const char *)c.out, sizeof c.out);
    if (!c.reader || !c.writer)
        goto free_io;

    printf("payment: %zu bytes, 12 fields; %d runs; median (min..max) ns per op\n", c.len, runs);
    for (size_t b = 0; b < sizeof benches / sizeof benches[0]; b++) {
        const struct bench *bn = &benches[b];
        long iters = n / bn->weight;
        double ns[RUNS_MAX];
        if (only && strcmp(only, bn->name) != 0)
            continue;
        if (!only && bn->fn(&c, iters / 10 + 1) != 0) { /* warm-up: caches, branch predictors */
            fprintf(stderr, "bench_codec: %s failed\n", bn->name);
            goto free_io;
        }
        for (int r = 0; r < runs; r++) {
            double t0 = now_ns();
            if (bn->fn(&c, iters) != 0) {
                fprintf(stderr, "bench_codec: %s failed\n", bn->name);
                goto free_io;
            }
            ns[r] = (now_ns() - t0) / (double)iters;
        }
        qsort(ns, (size_t)runs, sizeof ns[0], cmp_double);
        printf("%-17s %8.1f ns  (%.1f..%.1f)  x%ld\n", bn->name, ns[runs / 2], ns[0],
               ns[runs - 1], iters);
    }
    status = 0;

free_io:
    if (c.reader)
        avro_reader_free(c.reader);
    if (c.writer)
        avro_writer_free(c.writer);
free_val:
    avro_value_decref(&c.val);
free_iface:
    avro_value_iface_decref(iface);
free_schemas:
    rf_schemas_destroy(schemas);
fail:
    return status;
}
