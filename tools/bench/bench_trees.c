/*
 * bench_trees.c — what a tree ensemble costs per row in riskflowd (issue 7 item 6): the
 * branch-free padded evaluator against the node walk, at batch 1 and 64, side by side.
 *
 * The model is either a file (-m: an XGBoost JSON or LightGBM text model, such as the shipped
 * fraud model) or, by default, a synthetic XGBoost ensemble of -t trees (300) of complete depth
 * -d (6), its thresholds drawn from the rows themselves so that every path is taken: the
 * dense evaluator's cost does not depend on what the trees learned, only on their shape.
 * Rows are the committed tree fixture's (tests/fixtures/trees_x.npy, 12 features), cycled,
 * its NaN replaced by 0 as riskflowd's declared features never are NaN (-N keeps them: the
 * evaluator's slower NaN-aware test); a model with more features reads them repeated. Each figure is the median of -r
 * timed runs (min and max beside it) after a warm-up, one thread. Each measured loop is its
 * own function so that callgrind can count it alone:
 *   valgrind --tool=callgrind --toggle-collect=loop_dense build/bench_trees -r 1 -n 200
 * tools/bench/bench_trees.sh runs both. Last, the reasons an alert costs: TreeSHAP and path
 * attribution per row (-o shap for those alone).
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "npy.h"
#include "riskflow/trees.h"

#define ROWS 10000
#define XF 12

static volatile double sink;

static double now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint64_t next(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

/* A complete-depth XGBoost JSON model, thresholds from the rows. Returns malloc'd text. */
static char *synthetic(int trees, int depth, const double *x, size_t *len) {
    size_t cap = (size_t)trees * ((size_t)2 << depth) * 64 + 4096, n = 0;
    char *s = malloc(cap);
    int nodes = (2 << depth) - 1, internal = (1 << depth) - 1;
#define P(...) (n += (size_t)snprintf(s + n, cap - n, __VA_ARGS__))
    P("{\"learner\":{\"feature_names\":[],\"gradient_booster\":{\"name\":\"gbtree\",\"model\":{"
      "\"gbtree_model_param\":{\"num_trees\":\"%d\"},\"tree_info\":[", trees);
    for (int t = 0; t < trees; t++)
        P("%s0", t ? "," : "");
    P("],\"trees\":[");
    for (int t = 0; t < trees; t++) {
        const char *keys[] = {"left_children", "right_children", "split_indices",
                              "split_conditions", "default_left", "sum_hessian"};
        P("%s{\"tree_param\":{\"num_nodes\":\"%d\",\"size_leaf_vector\":\"1\"}", t ? "," : "",
          nodes);
        int feat[1024];
        for (int k = 0; k < 6; k++) {
            P(",\"%s\":[", keys[k]);
            for (int i = 0; i < nodes; i++) {
                int leaf = i >= internal;
                if (k == 0)
                    P("%s%d", i ? "," : "", leaf ? -1 : 2 * i + 1);
                else if (k == 1)
                    P("%s%d", i ? "," : "", leaf ? -1 : 2 * i + 2);
                else if (k == 2)
                    P("%s%d", i ? "," : "", feat[i] = leaf ? 0 : (int)(next() % XF));
                else if (k == 3) {
                    double v = leaf ? ((double)(next() % 2001) - 1000) / 1e4
                                    : x[(next() % ROWS) * XF + (size_t)feat[i]];
                    P("%s%.9g", i ? "," : "", isnan(v) ? 0.0 : v);
                } else if (k == 4)
                    P("%s%d", i ? "," : "", (int)(next() & 1));
                else
                    P("%s%d", i ? "," : "", 1 << (depth + 1 - (31 - __builtin_clz((unsigned)i + 1))));
            }
            P("]");
        }
        P("}");
    }
    P("]}},\"learner_model_param\":{\"base_score\":\"5E-1\",\"num_class\":\"0\","
      "\"num_feature\":\"%d\",\"num_target\":\"1\"},\"objective\":{\"name\":\"binary:logistic\"}}}",
      XF);
#undef P
    *len = n;
    return s;
}

struct ctx {
    rf_trees_t *t;
    const double *x; /* ROWS x nf */
    int nf, batch, n;
    double out[RF_TREES_BATCH_MAX];
};

__attribute__((noinline)) static void run_rows(struct ctx *c) {
    int r = 0;
    for (int i = 0; i < c->n; i++) {
        rf_trees_predict(c->t, c->x + (size_t)r * (size_t)c->nf, c->batch, c->out);
        sink += c->out[0];
        r += c->batch;
        if (r + c->batch > ROWS)
            r = 0;
    }
}
__attribute__((noinline)) void loop_dense(struct ctx *c) {
    run_rows(c);
}
__attribute__((noinline)) void loop_walk(struct ctx *c) {
    run_rows(c);
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void measure(const char *name, void (*loop)(struct ctx *), struct ctx *c, int runs) {
    double ns[64];
    loop(c); /* warm-up */
    for (int i = 0; i < runs; i++) {
        double t0 = now_ns();
        loop(c);
        ns[i] = (now_ns() - t0) / ((double)c->n * c->batch);
    }
    qsort(ns, (size_t)runs, sizeof ns[0], cmp);
    printf("  %-6s batch %-3d %9.1f ns/row  (min %.1f, max %.1f, %d runs)\n", name, c->batch,
           ns[runs / 2], ns[0], ns[runs - 1], runs);
}

int main(int argc, char **argv) {
    const char *model = NULL, *only = NULL;
    int trees = 300, depth = 6, runs = 7, nbatches = 0, opt;
    int batches[2] = {1, 64}, nb = 2, keep_nan = 0;
    while ((opt = getopt(argc, argv, "m:t:d:r:n:b:o:N")) != -1) {
        switch (opt) {
        case 'm': model = optarg; break;
        case 't': trees = atoi(optarg); break;
        case 'd': depth = atoi(optarg); break;
        case 'r': runs = atoi(optarg); break;
        case 'n': nbatches = atoi(optarg); break;
        case 'b': batches[0] = atoi(optarg); nb = 1; break;
        case 'o': only = optarg; break;
        case 'N': keep_nan = 1; break;
        default:
            fprintf(stderr, "usage: bench_trees [-m MODEL | -t TREES -d DEPTH] [-b BATCH] "
                            "[-r RUNS] [-n BATCHES] [-o dense|walk|shap] [-N]\n");
            return 2;
        }
    }
    if (runs < 1 || runs > 64 || depth < 1 || depth > 9 || trees < 1 || trees > 5000 ||
        batches[0] < 1 || batches[0] > RF_TREES_BATCH_MAX) {
        fprintf(stderr, "bench_trees: -r 1..64, -d 1..9, -t 1..5000, -b 1..%d\n",
                RF_TREES_BATCH_MAX);
        return 2;
    }
    int xr_rows = 0, xr_cols = 0;
    double *x12 = rf_npy_read("tests/fixtures/trees_x.npy", &xr_rows, &xr_cols);
    if (!x12 || xr_rows != ROWS || xr_cols != XF) {
        fprintf(stderr, "bench_trees: tests/fixtures/trees_x.npy unreadable (run from the root)\n");
        return 1;
    }
    char err[512];
    char *text = NULL;
    size_t len = 0;
    if (!model)
        text = synthetic(trees, depth, x12, &len);
    rf_trees_t *m[2];
    for (int k = 0; k < 2; k++) {
        int dd = k == 0 ? RF_TREES_DENSE_DEPTH : 0;
        m[k] = model ? rf_trees_load(model, dd, err, sizeof err)
                     : rf_trees_parse(text, len, "synthetic", dd, err, sizeof err);
        if (!m[k]) {
            fprintf(stderr, "bench_trees: %s\n", err);
            return 1;
        }
    }
    free(text);
    int nf = rf_trees_n_features(m[0]);
    double *x = malloc((size_t)ROWS * (size_t)nf * sizeof *x);
    for (int r = 0; r < ROWS; r++)
        for (int j = 0; j < nf; j++) {
            double v = x12[(size_t)r * XF + (size_t)(j % XF)];
            x[(size_t)r * (size_t)nf + (size_t)j] = isnan(v) && !keep_nan ? 0.0 : v;
        }
    printf("%s: %d trees, max depth %d, %d features, %d of them evaluated branch-free; rows %s\n",
           model ? model : "synthetic XGBoost", rf_trees_n_trees(m[0]), rf_trees_max_depth(m[0]),
           nf, rf_trees_n_dense(m[0]), keep_nan ? "with NaN (-N)" : "without NaN (as riskflowd's features)");
    for (int b = 0; b < nb; b++) {
        for (int k = 0; k < 2; k++) {
            if (only && strcmp(only, k == 0 ? "dense" : "walk") != 0)
                continue;
            struct ctx c = {.t = m[k], .x = x, .nf = nf, .batch = batches[b]};
            c.n = nbatches ? nbatches : (int)(2e6 / (rf_trees_n_trees(m[0]) * (double)c.batch)) + 1;
            measure(k == 0 ? "dense" : "walk", k == 0 ? loop_dense : loop_walk, &c, runs);
        }
    }
    if (!only || strcmp(only, "shap") == 0) {
        /* TreeSHAP, computed for alerts only: its cost per alerted row. */
        double *phi = calloc((size_t)nf + 1, sizeof *phi), ns[64];
        int n = nbatches ? nbatches : 200;
        for (int k = 0; k < runs; k++) {
            double t0 = now_ns();
            for (int r = 0; r < n; r++)
                rf_trees_shap(m[0], x + (size_t)(r % ROWS) * (size_t)nf, phi);
            ns[k] = (now_ns() - t0) / n;
            sink += phi[0];
        }
        qsort(ns, (size_t)runs, sizeof ns[0], cmp);
        printf("  shap   per row   %9.1f ns/row  (min %.1f, max %.1f, %d runs)\n", ns[runs / 2],
               ns[0], ns[runs - 1], runs);
        for (int k = 0; k < runs; k++) {
            double t0 = now_ns();
            for (int r = 0; r < 100 * n; r++)
                rf_trees_path_contribs(m[0], x + (size_t)(r % ROWS) * (size_t)nf, phi);
            ns[k] = (now_ns() - t0) / (100.0 * n);
            sink += phi[0];
        }
        qsort(ns, (size_t)runs, sizeof ns[0], cmp);
        printf("  path   per row   %9.1f ns/row  (min %.1f, max %.1f, %d runs)\n", ns[runs / 2],
               ns[0], ns[runs - 1], runs);
        free(phi);
    }
    rf_trees_destroy(m[0]);
    rf_trees_destroy(m[1]);
    free(x);
    free(x12);
    return 0;
}
