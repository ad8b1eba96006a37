/*
 * test_model.c — the fraud logistic regression against scikit-learn, and its loader's
 * rejections.
 *
 * Parity: every row of the fixture written by tools/train/train_fraud.py (the model's feature
 * values and sklearn's predict_proba[:, 1]) must score the same in C to 1e-6 relative, at
 * several batch sizes. Load errors: small bad files written to /tmp and removed again.
 * Reasons: a hand-made model whose contributions are known. Runs from the repo root.
 */
#include <stddef.h> /* model.h uses size_t without including it */

#include <cblas.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "npy.h"
#include "rf_test.h"
#include "riskflow/err.h"
#include "riskflow/model.h"

#ifndef FRAUD_MODEL_PATH
#define FRAUD_MODEL_PATH "deploy/models/fraud_lr.json"
#endif
#ifndef FRAUD_PARITY_PATH
#define FRAUD_PARITY_PATH "tests/fixtures/fraud_lr_parity.csv"
#endif

/* The parity fixture: rows × (n features + 1) doubles, the last column sklearn's score. */
struct fixture {
    int cols;
    int rows;
    double *v;
    char names[RF_FEATURES_MAX + 1][64];
};

static void chomp(char *s) {
    size_t n = strlen(s);
    while (n > 0 && (s[n - 1] == '\n' || s[n - 1] == '\r'))
        s[--n] = '\0';
}

/* Reads the CSV; 0 on success. Failures are reported and counted by the caller's CHECKs. */
static int fixture_load(struct fixture *fx, const char *path) {
    FILE *fp = fopen(path, "r");
    char *line = NULL;
    size_t cap = 0;
    int cap_rows = 0;
    int rc = -1;

    memset(fx, 0, sizeof *fx);
    if (!fp) {
        fprintf(stderr, "cannot open %s\n", path);
        return -1;
    }
    if (getline(&line, &cap, fp) < 0)
        goto close_file;
    chomp(line);
    for (char *save = NULL, *tok = strtok_r(line, ",", &save); tok;
         tok = strtok_r(NULL, ",", &save)) {
        if (fx->cols > RF_FEATURES_MAX || strlen(tok) >= sizeof fx->names[0])
            goto close_file;
        strcpy(fx->names[fx->cols++], tok);
    }
    while (getline(&line, &cap, fp) >= 0) {
        chomp(line);
        if (line[0] == '\0')
            continue;
        if (fx->rows == cap_rows) {
            cap_rows = cap_rows ? 2 * cap_rows : 1024;
            double *v = realloc(fx->v, (size_t)cap_rows * (size_t)fx->cols * sizeof *v);
            if (!v)
                goto close_file;
            fx->v = v;
        }
        double *row = fx->v + (size_t)fx->rows * (size_t)fx->cols;
        char *p = line;
        for (int c = 0; c < fx->cols; c++) {
            char *end;
            row[c] = strtod(p, &end);
            if (end == p || (c + 1 < fx->cols ? *end != ',' : *end != '\0')) {
                fprintf(stderr, "%s: row %d column %d: bad number\n", path, fx->rows + 2, c);
                goto close_file;
            }
            p = end + 1;
        }
        fx->rows++;
    }
    rc = 0;
close_file:
    free(line);
    fclose(fp);
    return rc;
}

/* A shipped model against the library that trained it, on its committed parity rows (the
 * last column the library's score, named `truth`): every batch size, 1e-6. */
static void parity(const char *model_path, const char *parity_path, const char *truth) {
    char err[512] = "";
    struct fixture fx;
    rf_model_t *model = rf_model_load(model_path, err, sizeof err);
    if (!model)
        fprintf(stderr, "load: %s\n", err);
    CHECK(model != NULL);
    CHECK_EQ_INT(fixture_load(&fx, parity_path), 0);
    if (!model || !fx.v) {
        free(fx.v);
        rf_model_destroy(model);
        return;
    }

    int nf = rf_model_n_features(model);
    CHECK(rf_model_version(model)[0] != '\0');
    CHECK(rf_model_threshold(model) > 0.0 && rf_model_threshold(model) < 1.0);
    CHECK_EQ_INT(fx.cols, nf + 1);
    CHECK_EQ_STR(fx.names[fx.cols - 1], truth);
    for (int i = 0; i < nf && i < fx.cols; i++) {
        CHECK_EQ_STR(fx.names[i], rf_model_feature_name(model, i));
    }
    CHECK(fx.rows >= 100); /* a fixture that lost its rows must not pass vacuously */
    fprintf(stderr, "parity: %s, %d features, %d rows\n", rf_model_version(model), nf, fx.rows);
    if (fx.cols != nf + 1)
        goto done;

    static const int batches[] = {1, 7, 64, RF_MODEL_BATCH_MAX};
    double x[RF_MODEL_BATCH_MAX * RF_FEATURES_MAX];
    double out[RF_MODEL_BATCH_MAX];
    for (size_t b = 0; b < sizeof batches / sizeof batches[0]; b++) {
        int bad = 0;
        double worst = 0.0;
        for (int r0 = 0; r0 < fx.rows; r0 += batches[b]) {
            int n = fx.rows - r0 < batches[b] ? fx.rows - r0 : batches[b];
            for (int r = 0; r < n; r++)
                memcpy(x + (size_t)r * (size_t)nf, fx.v + (size_t)(r0 + r) * (size_t)fx.cols,
                       (size_t)nf * sizeof(double));
            CHECK_EQ_INT(rf_model_score_batch(model, x, n, out), 0);
            for (int r = 0; r < n; r++) {
                double py = fx.v[(size_t)(r0 + r) * (size_t)fx.cols + (size_t)nf];
                double m = fabs(py) > fabs(out[r]) ? fabs(py) : fabs(out[r]);
                double rel = m > 0 ? fabs(out[r] - py) / m : 0.0;
                if (rel > worst)
                    worst = rel;
                /* Report the first few misses; one CHECK per row would flood the output. */
                if (!(fabs(out[r] - py) <= 1e-6 * m + 1e-12) && bad++ < 5)
                    CHECK_NEAR(out[r], py, 1e-6, 1e-12);
            }
        }
        CHECK_EQ_INT(bad, 0);
        fprintf(stderr, "parity: batch %d: worst relative difference %.3g\n", batches[b], worst);
    }
done:
    free(fx.v);
    rf_model_destroy(model);
}

static void test_parity(void) {
    parity(FRAUD_MODEL_PATH, FRAUD_PARITY_PATH, "sklearn_proba");
    /* The exported tree model (tools/train/evaluate_fraud.py --export-model) against
     * xgboost's predict_proba on rows replayed by riskflowd. */
    parity("deploy/models/fraud_xgb.manifest.json", "tests/fixtures/fraud_xgb_parity.csv",
           "xgb_proba");
}

/* A tiny model: amount, is_ecom, is_night, is_cash; contributions are easy to do by hand. */
static const char tiny_model[] =
    "{\"format\": \"riskflow.logistic.v1\", \"name\": \"tiny\", \"version\": \"tiny-1\",\n"
    " \"features\": [\"amount\", \"is_ecom\", \"is_night\", \"is_cash\"],\n"
    " \"scaler\": {\"mean\": [1, 0, 0, 0], \"scale\": [1, 1, 1, 2]},\n"
    " \"coefficients\": [1, -2, 3, 4],\n"
    " \"intercept\": -0.5,\n"
    " \"threshold\": 0.75}\n";

static char tmp_path[64];

static const char *write_tmp(const char *text) {
    snprintf(tmp_path, sizeof tmp_path, "/tmp/rf_test_model_%ld.json", (long)getpid());
    FILE *fp = fopen(tmp_path, "w");
    if (!fp)
        return tmp_path;
    fputs(text, fp);
    fclose(fp);
    return tmp_path;
}

/* Replaces the first occurrence of from in tiny_model with to. */
static const char *tiny_with(const char *from, const char *to) {
    static char buf[2048];
    const char *at = strstr(tiny_model, from);
    if (!at)
        return "(pattern not found)";
    snprintf(buf, sizeof buf, "%.*s%s%s", (int)(at - tiny_model), tiny_model, to,
             at + strlen(from));
    return buf;
}

static void test_tiny_model(void) {
    char err[256] = "";
    rf_model_t *model = rf_model_load(write_tmp(tiny_model), err, sizeof err);
    unlink(tmp_path);
    CHECK(model != NULL);
    if (!model) {
        fprintf(stderr, "load: %s\n", err);
        return;
    }
    CHECK_EQ_STR(rf_model_version(model), "tiny-1");
    CHECK_EQ_INT(rf_model_n_features(model), 4);
    CHECK_EQ_STR(rf_model_feature_name(model, 0), "amount");
    CHECK_EQ_STR(rf_model_feature_name(model, 3), "is_cash");
    CHECK_EQ_STR(rf_model_feature_name(model, 2), "is_night");
    CHECK(rf_model_feature_name(model, 4) == NULL);
    CHECK(rf_model_feature_name(model, -1) == NULL);
    CHECK(rf_model_threshold(model) == 0.75);

    /* z = (2, 1, 1, 0.5): logit = 2 - 2 + 3 + 2 - 0.5 = 4.5. Extremes must not overflow. */
    double x[4 * 4] = {3, 1, 1, 1, 1, 0, 0, 0, 1e6, 0, 0, 0, -1e6, 0, 0, 0};
    double out[4];
    CHECK_EQ_INT(rf_model_score_batch(model, x, 4, out), 0);
    CHECK_NEAR(out[0], 1.0 / (1.0 + exp(-4.5)), 1e-15, 0);
    CHECK_NEAR(out[1], 1.0 / (1.0 + exp(0.5)), 1e-15, 0);
    CHECK(out[2] == 1.0);
    CHECK(out[3] == 0.0);
    CHECK_EQ_INT(rf_model_score_batch(model, x, 0, out), 0);
    CHECK_EQ_INT(rf_model_score_batch(model, x, -1, out), RF_E_INVAL);
    CHECK_EQ_INT(rf_model_score_batch(model, x, RF_MODEL_BATCH_MAX + 1, out), RF_E_INVAL);
    CHECK_EQ_INT(rf_model_score_batch(model, NULL, 1, out), RF_E_INVAL);
    CHECK_EQ_INT(rf_model_score_batch(NULL, x, 1, out), RF_E_INVAL);

    /* Contributions of row 0: amount 2, is_ecom -2, is_night 3, is_cash 2. Positive ones,
     * descending; the tie amount/is_cash keeps model order. */
    struct rf_reason rs[RF_REASONS_MAX + 2];
    memset(rs, 0, sizeof rs);
    CHECK_EQ_INT(rf_model_reasons(model, x, rs, 3), 3);
    CHECK_EQ_STR(rs[0].feature, "is_night");
    CHECK(rs[0].value == 1.0 && rs[0].contribution == 3.0);
    CHECK_EQ_STR(rs[1].feature, "amount");
    CHECK(rs[1].value == 3.0 && rs[1].contribution == 2.0);
    CHECK_EQ_STR(rs[2].feature, "is_cash");
    CHECK(rs[2].value == 1.0 && rs[2].contribution == 2.0);

    CHECK_EQ_INT(rf_model_reasons(model, x, rs, 2), 2);
    CHECK_EQ_STR(rs[0].feature, "is_night");
    CHECK_EQ_STR(rs[1].feature, "amount");
    CHECK_EQ_INT(rf_model_reasons(model, x, rs, 1), 1);
    CHECK_EQ_STR(rs[0].feature, "is_night");
    CHECK_EQ_INT(rf_model_reasons(model, x, rs, 0), 0);
    /* More than RF_REASONS_MAX asked: capped, never writes past it. */
    rs[RF_REASONS_MAX].feature = "sentinel";
    CHECK_EQ_INT(rf_model_reasons(model, x, rs, RF_REASONS_MAX + 2), RF_REASONS_MAX);
    CHECK_EQ_STR(rs[RF_REASONS_MAX].feature, "sentinel");

    /* Ascending input order must still come out descending: amount 5 (4), is_cash 1 (2),
     * is_night 1 (3) → is_cash's 2 < is_night's 3 < amount's 4. */
    double y[4] = {5, 0, 1, 1};
    CHECK_EQ_INT(rf_model_reasons(model, y, rs, 3), 3);
    CHECK_EQ_STR(rs[0].feature, "amount");
    CHECK(rs[0].contribution == 4.0);
    CHECK_EQ_STR(rs[1].feature, "is_night");
    CHECK_EQ_STR(rs[2].feature, "is_cash");

    /* Only one positive contribution: fewer than k. */
    double z[4] = {0, 1, 1, 0}; /* -1, -2, 3, 0 */
    CHECK_EQ_INT(rf_model_reasons(model, z, rs, 3), 1);
    CHECK_EQ_STR(rs[0].feature, "is_night");
    /* None positive. */
    double w[4] = {1, 0, 0, 0};
    CHECK_EQ_INT(rf_model_reasons(model, w, rs, 3), 0);

    rf_model_destroy(model);
    rf_model_destroy(NULL);
}

static void expect_load_error(const char *text, const char *want) {
    char err[512] = "";
    const char *path = write_tmp(text);
    rf_model_t *model = rf_model_load(path, err, sizeof err);
    unlink(path);
    CHECK(model == NULL);
    rf_model_destroy(model);
    /* The message names the file first, then what is wrong with it. */
    CHECK(strncmp(err, path, strlen(path)) == 0);
    if (!strstr(err, want)) {
        fprintf(stderr, "errstr \"%s\" lacks \"%s\"\n", err, want);
        CHECK(strstr(err, want) != NULL);
    }
}

static void test_load_errors(void) {
    /* an undeclared name loads here: the fraud job refuses it against the feature file */
    expect_load_error(tiny_with("\"is_ecom\"", "\"\""), "features[1]: a name of 1 to 47 bytes");
    expect_load_error(tiny_with("\"is_ecom\"", "\"amount\""), "features[1]: duplicate feature");
    expect_load_error(tiny_with("\"is_ecom\"", "7"), "features[1]: expected a string");
    expect_load_error(tiny_with("[\"amount\", \"is_ecom\", \"is_night\", \"is_cash\"]", "[]"),
                      "features: 0 features");
    expect_load_error(tiny_with("[1, -2, 3, 4]", "[1, -2, 3]"), "coefficients: length 3");
    expect_load_error(tiny_with("[1, 0, 0, 0]", "[1, 0, 0, 0, 0]"), "scaler.mean: length 5");
    expect_load_error(tiny_with("[1, 1, 1, 2]", "[1, 1, 0, 2]"), "scaler.scale[2]: 0");
    expect_load_error(tiny_with("[1, 1, 1, 2]", "[1, 1, 0.0, 2]"), "scaler.scale[2]: 0");
    expect_load_error(tiny_with("[1, 1, 1, 2]", "[1, 1, \"1\", 2]"), "scaler.scale[2]: expected");
    expect_load_error(tiny_with(" \"intercept\": -0.5,\n", ""), "missing field 'intercept'");
    expect_load_error(tiny_with("\"threshold\": 0.75", "\"thresh\": 0.75"),
                      "missing field 'threshold'");
    expect_load_error(tiny_with("\"threshold\": 0.75", "\"threshold\": 1.5"), "threshold: 1.5");
    expect_load_error(tiny_with("\"intercept\": -0.5", "\"intercept\": null"),
                      "intercept: expected a finite number");
    expect_load_error(tiny_with("\"version\": \"tiny-1\",", ""), "missing field 'version'");
    {
        /* The version goes on every output: longer than RF_MODEL_VERSION_MAX is refused at
         * load, not discovered when the first record does not fit its buffer. */
        char v[RF_MODEL_VERSION_MAX + 32];
        memset(v, 'v', sizeof v);
        memcpy(v, "\"version\": \"", 12);
        memcpy(v + 12 + RF_MODEL_VERSION_MAX + 1, "\",", 3);
        expect_load_error(tiny_with("\"version\": \"tiny-1\",", v), "'version' must be 1 to 128");
        memcpy(v + 12 + RF_MODEL_VERSION_MAX, "\",", 3); /* exactly the maximum: accepted */
        char err[256];
        const char *text = tiny_with("\"version\": \"tiny-1\",", v);
        FILE *f = fopen("/tmp/rf_test_model_vmax.json", "w");
        fputs(text, f);
        fclose(f);
        rf_model_t *m = rf_model_load("/tmp/rf_test_model_vmax.json", err, sizeof err);
        CHECK(m != NULL);
        CHECK(m && strlen(rf_model_version(m)) == RF_MODEL_VERSION_MAX);
        rf_model_destroy(m);
        remove("/tmp/rf_test_model_vmax.json");
    }
    expect_load_error(tiny_with("\"name\": \"tiny\",", ""), "missing field 'name'");
    expect_load_error(tiny_with("\"scaler\"", "\"scalar\""), "missing field 'scaler'");
    expect_load_error(tiny_with("\"scale\":", "\"std\":"), "missing field 'scaler.scale'");
    expect_load_error(tiny_with("\"riskflow.logistic.v1\"", "\"riskflow.logistic.v2\""),
                      "format: 'riskflow.logistic.v2', expected 'riskflow.logistic.v1'");
    expect_load_error(tiny_with("\"format\": \"riskflow.logistic.v1\", ", ""),
                      "missing field 'format'");
    expect_load_error("this is not JSON\n", "line 1");
    expect_load_error("[1, 2, 3]\n", "expected a JSON object");
    expect_load_error(tiny_with("\"intercept\": -0.5", "\"intercept\": 1e999"), "line");
    expect_load_error(tiny_with("\"intercept\": -0.5", "\"intercept\": 0, \"intercept\": 1"),
                      "duplicate");

    /* Too many features: RF_FEATURES_MAX + 1 names (unknown ones, but the count is checked
     * first so the message says what is really wrong). */
    char big[4096];
    size_t len = (size_t)snprintf(big, sizeof big, "{\"format\": \"riskflow.logistic.v1\", "
                                                    "\"name\": \"x\", \"version\": \"x\", \"threshold\": 0.5, "
                                                    "\"features\": [");
    for (int i = 0; i <= RF_FEATURES_MAX; i++)
        len += (size_t)snprintf(big + len, sizeof big - len, "%s\"amount\"", i ? ", " : "");
    snprintf(big + len, sizeof big - len, "]}\n");
    expect_load_error(big, "features: 33 features, expected 1..32");

    char err[256] = "";
    CHECK(rf_model_load("/nonexistent/model.json", err, sizeof err) == NULL);
    CHECK(strstr(err, "/nonexistent/model.json") == err);
    /* A small errstr is truncated, not overrun. */
    char small[8];
    memset(small, 'x', sizeof small);
    CHECK(rf_model_load("/nonexistent/model.json", small, 4) == NULL);
    CHECK(small[3] == '\0' && small[4] == 'x');
}

/* The daemon's rule (design.md §8): OpenBLAS on one thread. Runs first. */
static void test_blas_setup(void) {
    openblas_set_num_threads(1);
    CHECK_EQ_INT(openblas_get_num_threads(), 1);
}

/* A tree ensemble through the model interface: the XGBoost fixture loaded as the library saved
 * it (no threshold, versioned by name and hash) and through a manifest (relative path,
 * riskflow's version and threshold); scores equal XGBoost's, reasons are the largest positive
 * SHAP contributions (xgboost's pred_contribs) in order. */
static void test_trees(void) {
    char err[512];
    int rows, cols, srows, scols, prow, pcol;
    double *x = rf_npy_read("tests/fixtures/trees_x.npy", &rows, &cols);
    double *pred = rf_npy_read("tests/fixtures/trees_xgb_pred.npy", &prow, &pcol);
    double *shap = rf_npy_read("tests/fixtures/trees_xgb_shap.npy", &srows, &scols);
    CHECK(x && pred && shap);
    if (!x || !pred || !shap)
        return;
    rf_model_t *raw = rf_model_load("tests/fixtures/trees_xgb.json", err, sizeof err);
    rf_model_t *man = rf_model_load("tests/fixtures/trees_xgb.manifest.json", err, sizeof err);
    CHECK(raw != NULL);
    CHECK(man != NULL);
    if (!raw || !man) {
        fprintf(stderr, "%s\n", err);
        return;
    }
    CHECK(isnan(rf_model_threshold(raw)));
    CHECK(strncmp(rf_model_version(raw), "trees_xgb.json@", 15) == 0);
    CHECK_EQ_INT(strlen(rf_model_version(raw)), 15 + 8);
    CHECK(rf_model_threshold(man) == 0.35);
    CHECK_EQ_STR(rf_model_version(man), "trees-fixture-xgb");
    CHECK_EQ_INT(rf_model_n_features(man), cols);
    CHECK_EQ_STR(rf_model_feature_name(man, 5), "term_risk_7d");
    double out[64];
    for (int r0 = 0; r0 < 640; r0 += 64) {
        CHECK_EQ_INT(rf_model_score_batch(man, x + (size_t)r0 * (size_t)cols, 64, out), 0);
        for (int i = 0; i < 64; i++)
            CHECK(out[i] == pred[r0 + i]);
    }
    for (int r = 0; r < 200; r++) {
        struct rf_reason rs[RF_REASONS_MAX];
        int got = rf_model_reasons(man, x + (size_t)r * (size_t)cols, rs, 3);
        const double *phi = shap + (size_t)r * (size_t)scols;
        /* The expected k: how many contributions are positive (up to 3). */
        int pos = 0;
        for (int i = 0; i < cols; i++)
            pos += phi[i] > 1e-5;
        CHECK(got >= (pos < 3 ? pos : 3));
        for (int j = 0; j < got; j++) {
            int f = -1;
            for (int i = 0; i < cols; i++)
                if (strcmp(rf_model_feature_name(man, i), rs[j].feature) == 0)
                    f = i;
            CHECK(f >= 0);
            if (f < 0)
                continue;
            CHECK_NEAR(rs[j].contribution, phi[f], 0, 2e-5);
            double xv = x[(size_t)r * (size_t)cols + (size_t)f];
            CHECK(rs[j].value == xv || (isnan(xv) && isnan(rs[j].value)));
            /* No positive contribution left out is larger. */
            for (int i = 0; i < cols; i++) {
                int used = 0;
                for (int q = 0; q < got; q++)
                    used |= strcmp(rf_model_feature_name(man, i), rs[q].feature) == 0;
                if (!used)
                    CHECK(phi[i] <= rs[j].contribution + 2e-5);
            }
            if (j > 0)
                CHECK(rs[j].contribution <= rs[j - 1].contribution);
        }
    }
    /* fraud.reasons=path: the largest positive path contributions (approx_contribs). */
    int prow2, pcol2;
    double *saabas = rf_npy_read("tests/fixtures/trees_xgb_saabas.npy", &prow2, &pcol2);
    CHECK(saabas != NULL);
    rf_model_set_path_reasons(man, 1);
    for (int r = 0; saabas && r < 100; r++) {
        struct rf_reason rs[RF_REASONS_MAX];
        int got = rf_model_reasons(man, x + (size_t)r * (size_t)cols, rs, 1);
        double best = 0;
        for (int i = 0; i < cols; i++)
            best = saabas[(size_t)r * (size_t)pcol2 + (size_t)i] > best
                       ? saabas[(size_t)r * (size_t)pcol2 + (size_t)i] : best;
        CHECK_EQ_INT(got, best > 0);
        if (got)
            CHECK_NEAR(rs[0].contribution, best, 0, 2e-5);
    }
    free(saabas);
    rf_model_destroy(raw);
    rf_model_destroy(man);

    /* Manifest errors name the problem. */
    static const struct {
        const char *text, *needle;
    } bad[] = {
        {"{\"format\":\"riskflow.trees.v1\",\"name\":\"f\",\"version\":\"v\",\"threshold\":0.5,"
         "\"model\":\"absent.json\"}", "absent.json"},
        {"{\"format\":\"riskflow.trees.v1\",\"name\":\"f\",\"version\":\"v\",\"threshold\":1.5,"
         "\"model\":\"x.json\"}", "threshold"},
        {"{\"format\":\"riskflow.trees.v1\",\"name\":\"f\",\"version\":\"v\",\"threshold\":0.5}",
         "'model'"},
        {"{\"format\":\"riskflow.trees.v1\",\"name\":\"f\",\"version\":\"v\",\"threshold\":0.5,"
         "\"model\":\"%s/tests/fixtures/trees_xgb.json\",\"features\":[\"a\"]}",
         "1 names, the model has 12"},
    };
    char cwd[1024], text[2048];
    CHECK(getcwd(cwd, sizeof cwd) != NULL);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        snprintf(text, sizeof text, bad[i].text, cwd);
        const char *path = write_tmp(text);
        rf_model_t *m = rf_model_load(path, err, sizeof err);
        unlink(path);
        CHECK(m == NULL);
        if (!strstr(err, bad[i].needle)) {
            fprintf(stderr, "error '%s' does not name '%s'\n", err, bad[i].needle);
            CHECK(0);
        }
        rf_model_destroy(m);
    }
    free(x);
    free(pred);
    free(shap);
}

RF_TEST_MAIN(RF_TEST(test_blas_setup), RF_TEST(test_tiny_model), RF_TEST(test_load_errors),
             RF_TEST(test_parity), RF_TEST(test_trees))
