/*
 * bench_models.c — what the three jobs' models cost per row on one core, at a given batch
 * size: the fraud logistic model (one dgemv per batch), the credit scorecard (bins, WoE,
 * points; with and without adverse-action reasons) and the market GRU step (two sgemm per
 * batch and the gate arithmetic), each alone and the three in one loop side by side.
 *
 * A tool with one job, single-threaded (OpenBLAS pinned to one thread, as riskflowd runs it).
 * Rows are real ones: the committed parity fixtures' feature rows, cycled. Each figure is the
 * median of several timed runs after a warm-up, with the min and max (the machine is shared
 * and noisy). Each measured loop is its own non-inlined function so callgrind counts just it:
 *   valgrind --tool=callgrind --toggle-collect=loop_gru build/bench_models -o gru -r 1 -n 2000
 * (instructions per row = Ir / (n x batch)); tools/bench/bench_models.sh does that for each.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "riskflow/model.h"
#include "riskflow/recurrent.h"
#include "riskflow/scorecard.h"

void openblas_set_num_threads(int num_threads);

#define RUNS_MAX 50
#define ROWS_MAX 4096

static volatile double sink;

static double now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

struct ctx {
    int batch;
    rf_model_t *fraud;
    rf_scorecard_t *sc;
    rf_rnn_t *rnn;
    int fF, sF, gF, gH;
    double *fx, *sx, *gx; /* rows, row-major */
    int fn, sn, gn;       /* rows held */
    double *out;
    float *h, *c;
};

/* The first `cols` columns of a CSV's data rows (the fixtures put the features first). */
static int read_csv(const char *path, int cols, double *rows, int max) {
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    char line[8192];
    int n = 0;
    if (!fgets(line, sizeof line, f)) { /* the header */
        fclose(f);
        return -1;
    }
    while (n < max && fgets(line, sizeof line, f)) {
        char *p = line;
        for (int k = 0; k < cols; k++) {
            rows[(size_t)n * cols + k] = strtod(p, &p);
            if (*p == ',')
                p++;
        }
        n++;
    }
    fclose(f);
    return n;
}

__attribute__((noinline)) static void loop_fraud(struct ctx *c, long iters) {
    for (long i = 0; i < iters; i++) {
        int at = (int)((i * c->batch) % (c->fn - c->batch + 1));
        rf_model_score_batch(c->fraud, c->fx + (size_t)at * c->fF, c->batch, c->out);
        sink += c->out[0];
    }
}

__attribute__((noinline)) static void loop_scorecard(struct ctx *c, long iters) {
    struct rf_sc_result r;
    for (long i = 0; i < iters; i++) {
        int at = (int)((i * c->batch) % (c->sn - c->batch + 1));
        for (int k = 0; k < c->batch; k++) {
            rf_scorecard_score(c->sc, c->sx + (size_t)(at + k) * c->sF, 0, &r);
            sink += r.pd;
        }
    }
}

__attribute__((noinline)) static void loop_scorecard_reasons(struct ctx *c, long iters) {
    struct rf_sc_result r;
    for (long i = 0; i < iters; i++) {
        int at = (int)((i * c->batch) % (c->sn - c->batch + 1));
        for (int k = 0; k < c->batch; k++) {
            rf_scorecard_score(c->sc, c->sx + (size_t)(at + k) * c->sF, 1, &r);
            sink += r.pd;
        }
    }
}

/* The carried state goes on from batch to batch, as an instrument's does from bar to bar. */
__attribute__((noinline)) static void loop_gru(struct ctx *c, long iters) {
    for (long i = 0; i < iters; i++) {
        int at = (int)((i * c->batch) % (c->gn - c->batch + 1));
        rf_rnn_step(c->rnn, c->batch, c->gx + (size_t)at * c->gF, c->h, c->c, c->out);
        sink += c->out[0];
    }
}

__attribute__((noinline)) static void loop_all(struct ctx *c, long iters) {
    loop_fraud(c, iters);
    loop_scorecard(c, iters);
    loop_gru(c, iters);
}

struct bench {
    const char *name;
    void (*fn)(struct ctx *, long);
    const char *what;
};

static const struct bench benches[] = {
    {"fraud", loop_fraud, "fraud logistic (dgemv over the batch)"},
    {"scorecard", loop_scorecard, "credit scorecard, no reasons"},
    {"scorecard_reasons", loop_scorecard_reasons, "credit scorecard with its 3 reasons"},
    {"gru", loop_gru, "market GRU step (2 sgemm + gates + head)"},
    {"all", loop_all, "the three in one loop (fraud + scorecard + GRU)"},
};

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void usage(const char *argv0) {
    fprintf(stderr,
            "usage: %s [-b BATCH] [-n BATCHES] [-r RUNS] [-o BENCH]\n"
            "  BENCH: fraud scorecard scorecard_reasons gru all (default: every one)\n"
            "  Defaults: -b 64 -n 20000 -r 7. Run from the project root (models, fixtures).\n",
            argv0);
}

int main(int argc, char **argv) {
    struct ctx c;
    const char *only = NULL;
    long n = 20000;
    int runs = 7, opt, status = 1;
    char err[512];
    memset(&c, 0, sizeof c);
    c.batch = 64;
    while ((opt = getopt(argc, argv, "b:n:r:o:h")) != -1) {
        switch (opt) {
        case 'b': c.batch = atoi(optarg); break;
        case 'n': n = atol(optarg); break;
        case 'r': runs = atoi(optarg); break;
        case 'o': only = optarg; break;
        default: usage(argv[0]); return opt == 'h' ? 0 : 2;
        }
    }
    if (n < 1 || runs < 1 || runs > RUNS_MAX || c.batch < 1 || c.batch > RF_RNN_BATCH_MAX ||
        c.batch > RF_MODEL_BATCH_MAX) {
        usage(argv[0]);
        return 2;
    }
    openblas_set_num_threads(1);
    c.fraud = rf_model_load("deploy/models/fraud_lr.json", err, sizeof err);
    if (!c.fraud)
        goto fail;
    c.sc = rf_scorecard_load("deploy/models/credit_scorecard.json", err, sizeof err);
    if (!c.sc)
        goto fail;
    c.rnn = rf_rnn_load("deploy/models/market_gru.safetensors", err, sizeof err);
    if (!c.rnn)
        goto fail;
    c.fF = rf_model_n_features(c.fraud);
    c.sF = rf_scorecard_n_features(c.sc);
    c.gF = rf_rnn_features(c.rnn);
    c.gH = rf_rnn_hidden(c.rnn);
    c.fx = malloc(sizeof(double) * ROWS_MAX * (size_t)c.fF);
    c.sx = malloc(sizeof(double) * ROWS_MAX * (size_t)c.sF);
    c.gx = malloc(sizeof(double) * ROWS_MAX * (size_t)c.gF);
    c.out = malloc(sizeof(double) * 2 * RF_RNN_BATCH_MAX);
    c.h = calloc((size_t)RF_RNN_BATCH_MAX * (size_t)c.gH, sizeof(float));
    c.c = calloc((size_t)RF_RNN_BATCH_MAX * (size_t)c.gH, sizeof(float));
    c.fn = read_csv("tests/fixtures/fraud_lr_parity.csv", c.fF, c.fx, ROWS_MAX);
    c.sn = read_csv("tests/fixtures/credit_scorecard_parity.csv", c.sF, c.sx, ROWS_MAX);
    int64_t shape[4];
    int nd = 0;
    float *gx = rf_safetensors_read("tests/fixtures/market_gru_parity.safetensors", "x", shape,
                                    &nd, err, sizeof err);
    if (!gx || nd != 3 || shape[2] != c.gF)
        goto fail;
    c.gn = (int)(shape[0] * shape[1] < ROWS_MAX ? shape[0] * shape[1] : ROWS_MAX);
    for (size_t i = 0; i < (size_t)c.gn * (size_t)c.gF; i++)
        c.gx[i] = gx[i];
    free(gx);
    if (c.fn < c.batch || c.sn < c.batch || c.gn < c.batch) {
        snprintf(err, sizeof err, "the fixtures hold fewer rows than a batch");
        goto fail;
    }
    printf("batch %d, one thread; models: fraud %s (%d features), scorecard %s (%d), GRU %s "
           "(%d features, hidden %d); %d runs; median (min..max) ns per row\n", c.batch,
           rf_model_version(c.fraud), c.fF, rf_scorecard_version(c.sc), c.sF,
           rf_rnn_version(c.rnn), c.gF, c.gH, runs);
    for (size_t b = 0; b < sizeof benches / sizeof benches[0]; b++) {
        const struct bench *bn = &benches[b];
        double ns[RUNS_MAX];
        if (only && strcmp(only, bn->name) != 0)
            continue;
        if (!only)
            bn->fn(&c, n / 10 + 1); /* warm-up: caches, branch predictors */
        for (int r = 0; r < runs; r++) {
            double t0 = now_ns();
            bn->fn(&c, n);
            ns[r] = (now_ns() - t0) / ((double)n * c.batch);
        }
        qsort(ns, (size_t)runs, sizeof ns[0], cmp_double);
        printf("%-18s %8.1f ns  (%.1f..%.1f)  %s\n", bn->name, ns[runs / 2], ns[0],
               ns[runs - 1], bn->what);
    }
    status = 0;
fail:
    if (status)
        fprintf(stderr, "bench_models: %s\n", err);
    rf_model_destroy(c.fraud);
    rf_scorecard_destroy(c.sc);
    rf_rnn_destroy(c.rnn);
    free(c.fx);
    free(c.sx);
    free(c.gx);
    free(c.out);
    free(c.h);
    free(c.c);
    return status;
}
