/*
 * test_trees.c — the tree evaluator against XGBoost and LightGBM themselves: the committed
 * fixtures (tools/train/make_tree_fixtures.py) hold each library's predictions, margins and
 * SHAP contributions on 10 000 rows with NaN, zeros and values sitting on thresholds; both
 * evaluators (branch-free padded trees and the node walk) must give them. Plus hand-made
 * trees whose answers are known, and files that must be refused with a message naming why.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "npy.h"
#include "rf_test.h"
#include "riskflow/err.h"
#include "riskflow/trees.h"

#define FIX "tests/fixtures/"

static double *fixture(const char *name, int rows, int cols) {
    char path[256];
    int r = 0, c = 0;
    snprintf(path, sizeof path, FIX "%s", name);
    double *a = rf_npy_read(path, &r, &c);
    CHECK(a != NULL);
    CHECK_EQ_INT(r, rows);
    CHECK_EQ_INT(c, cols);
    if (!a || r != rows || c != cols) {
        fprintf(stderr, "fixture %s unreadable\n", path);
        exit(1);
    }
    return a;
}

#define ROWS 10000
#define NF 12

/* Predictions over the rows in batches of 1, 7 and 64 (batching must not matter), compared
 * with the library's to rel 1e-6 (the bar) — and counted exactly equal, reported. */
static void compare(rf_trees_t *t, const double *x, const double *want, int margin,
                    const char *what, double tol) {
    static const int batch[] = {1, 7, 64, RF_TREES_BATCH_MAX};
    double out[RF_TREES_BATCH_MAX];
    for (int b = 0; b < 4; b++) {
        int exact = 0, bad = 0;
        double worst = 0;
        for (int r0 = 0; r0 < ROWS; r0 += batch[b]) {
            int n = ROWS - r0 < batch[b] ? ROWS - r0 : batch[b];
            int rc = margin ? rf_trees_margin(t, x + (size_t)r0 * NF, n, out)
                            : rf_trees_predict(t, x + (size_t)r0 * NF, n, out);
            CHECK_EQ_INT(rc, 0);
            for (int i = 0; i < n; i++) {
                double w = want[r0 + i], d = fabs(out[i] - w);
                double rel = d / (fabs(w) > 1e-300 ? fabs(w) : 1);
                exact += out[i] == w;
                if (rel > worst)
                    worst = rel;
                if (!(rel <= tol) && bad++ < 5)
                    fprintf(stderr, "%s row %d: %.17g, library %.17g\n", what, r0 + i, out[i], w);
            }
        }
        CHECK_EQ_INT(bad, 0);
        if (b == 0)
            fprintf(stderr, "  %s: %d/%d rows bit-equal, worst relative difference %.3g\n", what,
                    exact, ROWS, worst);
    }
}

static void shap_compare(rf_trees_t *t, const double *x, const double *want, const char *what,
                         double tol) {
    double phi[NF + 1], margin;
    double worst = 0;
    int bad = 0;
    for (int r = 0; r < 1000; r++) {
        CHECK_EQ_INT(rf_trees_shap(t, x + (size_t)r * NF, phi), 0);
        CHECK_EQ_INT(rf_trees_margin(t, x + (size_t)r * NF, 1, &margin), 0);
        double sum = 0;
        for (int i = 0; i <= NF; i++) {
            double d = fabs(phi[i] - want[r * (NF + 1) + i]);
            if (d > worst)
                worst = d;
            if (!(d <= tol) && bad++ < 5)
                fprintf(stderr, "%s row %d phi[%d]: %.9g, library %.9g\n", what, r, i, phi[i],
                        want[r * (NF + 1) + i]);
            sum += phi[i];
        }
        /* Local accuracy: the contributions add up to the margin. */
        CHECK_NEAR(sum, margin, 0, 1e-5);
    }
    CHECK_EQ_INT(bad, 0);
    fprintf(stderr, "  %s SHAP: worst absolute difference %.3g over 1 000 rows\n", what, worst);
}

/* Path attribution against XGBoost's approx_contribs, and local accuracy. */
static void path_compare(rf_trees_t *t, const double *x, const double *want) {
    double phi[NF + 1], margin, worst = 0;
    int bad = 0;
    for (int r = 0; r < 1000; r++) {
        CHECK_EQ_INT(rf_trees_path_contribs(t, x + (size_t)r * NF, phi), 0);
        CHECK_EQ_INT(rf_trees_margin(t, x + (size_t)r * NF, 1, &margin), 0);
        double sum = 0;
        for (int i = 0; i <= NF; i++) {
            double d = fabs(phi[i] - want[r * (NF + 1) + i]);
            worst = d > worst ? d : worst;
            if (!(d <= 2e-5) && bad++ < 5)
                fprintf(stderr, "path row %d phi[%d]: %.9g, xgboost %.9g\n", r, i, phi[i],
                        want[r * (NF + 1) + i]);
            sum += phi[i];
        }
        CHECK_NEAR(sum, margin, 0, 1e-5);
    }
    CHECK_EQ_INT(bad, 0);
    fprintf(stderr, "  xgboost path attribution: worst absolute difference %.3g\n", worst);
}

static void test_xgboost_parity(void) {
    double *x = fixture("trees_x.npy", ROWS, NF);
    double *saabas = fixture("trees_xgb_saabas.npy", 1000, NF + 1);
    double *pred = fixture("trees_xgb_pred.npy", ROWS, 1);
    double *margin = fixture("trees_xgb_margin.npy", ROWS, 1);
    double *shap = fixture("trees_xgb_shap.npy", 1000, NF + 1);
    char err[512];
    int dense[] = {RF_TREES_DENSE_DEPTH, 0};
    for (int d = 0; d < 2; d++) {
        rf_trees_t *t = rf_trees_load(FIX "trees_xgb.json", dense[d], err, sizeof err);
        CHECK(t != NULL);
        if (!t) {
            fprintf(stderr, "%s\n", err);
            continue;
        }
        CHECK_EQ_INT(rf_trees_library(t), RF_TREES_XGBOOST);
        CHECK_EQ_INT(rf_trees_n_features(t), NF);
        CHECK_EQ_INT(rf_trees_n_trees(t), 40);
        CHECK(rf_trees_max_depth(t) <= 6);
        CHECK_EQ_INT(rf_trees_n_dense(t), d == 0 ? 40 : 0);
        CHECK_EQ_STR(rf_trees_feature_name(t, 0), "amount");
        CHECK_EQ_STR(rf_trees_feature_name(t, 11), "noise");
        CHECK(rf_trees_is_probability(t));
        compare(t, x, pred, 0, d == 0 ? "xgboost dense" : "xgboost walk", 1e-6);
        compare(t, x, margin, 1, "xgboost margin", 1e-6);
        if (d == 0) {
            shap_compare(t, x, shap, "xgboost", 2e-5);
            path_compare(t, x, saabas);
        }
        rf_trees_destroy(t);
    }
    free(saabas);
    free(x);
    free(pred);
    free(margin);
    free(shap);
}

static void test_lightgbm_parity(void) {
    double *x = fixture("trees_x.npy", ROWS, NF);
    double *pred = fixture("trees_lgb_pred.npy", ROWS, 1);
    double *raw = fixture("trees_lgb_raw.npy", ROWS, 1);
    double *shap = fixture("trees_lgb_shap.npy", 1000, NF + 1);
    double *zpred = fixture("trees_lgb_zero_pred.npy", ROWS, 1);
    char err[512];
    int dense[] = {RF_TREES_DENSE_DEPTH, 0, 16};
    for (int d = 0; d < 3; d++) {
        rf_trees_t *t = rf_trees_load(FIX "trees_lgb.txt", dense[d], err, sizeof err);
        CHECK(t != NULL);
        if (!t) {
            fprintf(stderr, "%s\n", err);
            continue;
        }
        CHECK_EQ_INT(rf_trees_library(t), RF_TREES_LIGHTGBM);
        CHECK_EQ_INT(rf_trees_n_features(t), NF);
        CHECK_EQ_INT(rf_trees_n_trees(t), 40);
        CHECK_EQ_STR(rf_trees_feature_name(t, 5), "term_risk_7d");
        if (d == 0) {
            /* Leaf-wise trees: some deeper than the dense limit, walked. */
            CHECK(rf_trees_max_depth(t) > RF_TREES_DENSE_DEPTH);
            CHECK(rf_trees_n_dense(t) > 0 && rf_trees_n_dense(t) < 40);
        }
        compare(t, x, pred, 0, d == 0 ? "lightgbm mixed" : d == 1 ? "lightgbm walk"
                                                                  : "lightgbm dense<=16", 1e-12);
        compare(t, x, raw, 1, "lightgbm raw", 1e-12);
        if (d == 0)
            shap_compare(t, x, shap, "lightgbm", 1e-9);
        rf_trees_destroy(t);
    }
    rf_trees_t *z = rf_trees_load(FIX "trees_lgb_zero.txt", RF_TREES_DENSE_DEPTH, err, sizeof err);
    CHECK(z != NULL);
    if (z)
        compare(z, x, zpred, 0, "lightgbm zero_as_missing", 1e-12);
    rf_trees_destroy(z);
    free(x);
    free(pred);
    free(raw);
    free(shap);
    free(zpred);
}

/* A stump by hand: x0 <= 1 (NaN left) → -1, else 2; a second one-leaf tree adds 0.5. */
static const char *const stump_lgb =
    "tree\nversion=v4\nnum_class=1\nnum_tree_per_iteration=1\nlabel_index=0\n"
    "max_feature_idx=1\nobjective=regression\nfeature_names=a b\n\n"
    "Tree=0\nnum_leaves=2\nnum_cat=0\nsplit_feature=0\nthreshold=1\ndecision_type=10\n"
    "left_child=-1\nright_child=-2\nleaf_value=-1 2\nleaf_count=3 1\ninternal_count=4\n"
    "shrinkage=1\n\nTree=1\nnum_leaves=1\nleaf_value=0.5\n\nend of trees\n";

static void test_by_hand(void) {
    char err[512];
    rf_trees_t *t = rf_trees_parse(stump_lgb, strlen(stump_lgb), "stump", 8, err, sizeof err);
    CHECK(t != NULL);
    if (!t) {
        fprintf(stderr, "%s\n", err);
        return;
    }
    CHECK(!rf_trees_is_probability(t));
    double x[] = {1.0, 0, 1.0000000001, 0, NAN, 0, -5, 0}, out[4];
    CHECK_EQ_INT(rf_trees_predict(t, x, 4, out), 0);
    CHECK(out[0] == -0.5); /* <= is left */
    CHECK(out[1] == 2.5);
    CHECK(out[2] == -0.5); /* NaN: missing type NaN, default left */
    CHECK(out[3] == -0.5);
    /* SHAP of the stump at x0 = 5: expected value (3·-1 + 1·2)/4 + 0.5 = 0.25; phi0 = 2.5 - 0.25. */
    double phi[3];
    CHECK_EQ_INT(rf_trees_shap(t, x + 2, phi), 0);
    CHECK_NEAR(phi[0], 2.25, 0, 1e-12);
    CHECK(phi[1] == 0);
    CHECK_NEAR(phi[2], 0.25, 0, 1e-12);
    CHECK_EQ_INT(rf_trees_predict(t, x, RF_TREES_BATCH_MAX + 1, out), RF_E_INVAL);
    rf_trees_destroy(t);
}

/* XGBoost by hand: b < 0.5 (NaN left) → -0.25, else 0.75; base_score 0.5 is margin 0. */
static const char *const stump_xgb =
    "{\"learner\":{\"feature_names\":[\"a\",\"b\"],\"gradient_booster\":{\"name\":\"gbtree\","
    "\"model\":{\"gbtree_model_param\":{\"num_trees\":\"1\"},\"tree_info\":[0],\"trees\":[{"
    "\"tree_param\":{\"num_nodes\":\"3\"},\"left_children\":[1,-1,-1],\"right_children\":[2,-1,-1],"
    "\"split_indices\":[1,0,0],\"split_conditions\":[0.5,-0.25,0.75],\"default_left\":[1,0,0],"
    "\"sum_hessian\":[4,3,1]}]}},\"learner_model_param\":{\"base_score\":\"[5E-1]\","
    "\"num_class\":\"0\",\"num_feature\":\"2\"},\"objective\":{\"name\":\"binary:logistic\"}}}";

static void test_by_hand_xgboost(void) {
    char err[512];
    rf_trees_t *t = rf_trees_parse(stump_xgb, strlen(stump_xgb), "xgb", 8, err, sizeof err);
    CHECK(t != NULL);
    if (!t) {
        fprintf(stderr, "%s\n", err);
        return;
    }
    double x[] = {9, 0.5, 9, 0.49999999, 9, NAN, 9, 0.4999999}, out[4];
    CHECK_EQ_INT(rf_trees_margin(t, x, 4, out), 0);
    CHECK(out[0] == 0.75);  /* < is left: 0.5 goes right */
    CHECK(out[1] == 0.75);  /* 0.49999999 is 0.5f in XGBoost's float: right too */
    CHECK(out[2] == -0.25); /* NaN: default left */
    CHECK(out[3] == -0.25); /* 0.4999999 is below 0.5f */
    CHECK_EQ_INT(rf_trees_predict(t, x, 1, out), 0);
    CHECK_NEAR(out[0], 1 / (1 + exp(-0.75)), 1e-7, 0);
    double phi[3];
    CHECK_EQ_INT(rf_trees_shap(t, x, phi), 0);
    CHECK(phi[0] == 0);
    CHECK_NEAR(phi[1], 0.75 - (3 * -0.25 + 0.75) / 4, 0, 1e-12);
    CHECK_NEAR(phi[2], (3 * -0.25 + 0.75) / 4, 0, 1e-12);
    rf_trees_destroy(t);
}

static void expect_error(const char *text, const char *needle) {
    char err[512] = "";
    rf_trees_t *t = rf_trees_parse(text, strlen(text), "m", 8, err, sizeof err);
    CHECK(t == NULL);
    if (!strstr(err, needle)) {
        fprintf(stderr, "error '%s' does not name '%s'\n", err, needle);
        CHECK(strstr(err, needle) != NULL);
    }
    rf_trees_destroy(t);
}

static char *replace(const char *s, const char *from, const char *to) {
    static char buf[8192];
    const char *p = strstr(s, from);
    if (!p)
        return NULL;
    snprintf(buf, sizeof buf, "%.*s%s%s", (int)(p - s), s, to, p + strlen(from));
    return buf;
}

static char *slurp(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)n + 1);
    *len = fread(b, 1, (size_t)n, f);
    b[*len] = 0;
    fclose(f);
    return b;
}

static void test_refused(void) {
    expect_error("", "neither an XGBoost JSON model nor a LightGBM");
    expect_error("hello", "neither");
    expect_error(replace(stump_lgb, "end of trees\n", ""), "no 'end of trees'");
    expect_error(replace(stump_lgb, "decision_type=10", "decision_type=11"), "categorical");
    expect_error(replace(stump_lgb, "right_child=-2", "right_child=-3"), "out of range");
    expect_error(replace(stump_lgb, "right_child=-2", "right_child=0"), "two parents");
    expect_error(replace(stump_lgb, "leaf_value=-1 2", "leaf_value=-1"), "leaf_value");
    expect_error(replace(stump_lgb, "split_feature=0", "split_feature=7"), "feature 7");
    expect_error(replace(stump_lgb, "objective=regression", "objective=lambdarank"),
                 "objective 'lambdarank'");
    expect_error(replace(stump_lgb, "num_class=1", "num_class=3"), "several classes");
    expect_error(replace(stump_lgb, "leaf_value=-1 2", "leaf_value=-1 nan"), "non-finite");
    expect_error(replace(stump_lgb, "feature_names=a b", "feature_names=a a"), "duplicate");
    expect_error(replace(stump_lgb, "feature_names=a b", "feature_names=a b c"), "3 names");

    /* XGBoost: the committed model, truncated and altered. */
    size_t len;
    char *j = slurp(FIX "trees_xgb.json", &len);
    CHECK(j != NULL);
    if (!j)
        return;
    char err[512];
    CHECK(rf_trees_parse(j, len / 2, "half", 8, err, sizeof err) == NULL);
    CHECK(strstr(err, "not valid JSON (truncated?)") != NULL);
    char *p = strstr(j, "\"binary:logistic\"");
    CHECK(p != NULL);
    if (p) {
        memcpy(p, "\"multi:softmax\"  ", 17);
        CHECK(rf_trees_parse(j, len, "obj", 8, err, sizeof err) == NULL);
        CHECK(strstr(err, "objective 'multi:softmax'") != NULL);
        memcpy(p, "\"binary:logistic\"", 17);
    }
    p = strstr(j, "\"left_children\":[1,");
    if (!p)
        p = strstr(j, "\"left_children\": [1,");
    CHECK(p != NULL);
    if (p) {
        char *one = strchr(p, '[') + 1;
        *one = '0'; /* the root its own left child: a cycle */
        CHECK(rf_trees_parse(j, len, "cycle", 8, err, sizeof err) == NULL);
        CHECK(strstr(err, "two parents") != NULL);
        *one = '1';
    }
    rf_trees_t *ok = rf_trees_parse(j, len, "ok", 8, err, sizeof err);
    CHECK(ok != NULL);
    rf_trees_destroy(ok);
    free(j);
    CHECK(rf_trees_load("tests/fixtures/absent.json", 8, err, sizeof err) == NULL);
    CHECK(strstr(err, "absent.json") != NULL);
}

RF_TEST_MAIN(RF_TEST(test_by_hand), RF_TEST(test_by_hand_xgboost), RF_TEST(test_xgboost_parity), RF_TEST(test_lightgbm_parity),
             RF_TEST(test_refused))
