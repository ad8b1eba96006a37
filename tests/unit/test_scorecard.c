/*
 * test_scorecard.c — the credit scorecard (docs/MODELS.md §2): bins (a value on an edge falls
 * in the upper bin), PD, points (base_score at base_odds, pdo more points double the odds),
 * bands, adverse-action reasons and their order, and every load error; then parity with the
 * Python scorecard on the committed fixture when it is there.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "riskflow/scorecard.h"
#include "rf_test.h"

#define TINY "tests/fixtures/scorecard_tiny.json"

static double sigmoid(double z) {
    return 1.0 / (1.0 + exp(-z));
}

static void test_by_hand(void) {
    char err[512];
    rf_scorecard_t *sc = rf_scorecard_load(TINY, err, sizeof err);
    CHECK(sc != NULL);
    if (!sc) {
        fprintf(stderr, "  %s\n", err);
        return;
    }
    CHECK_EQ_STR(rf_scorecard_version(sc), "tiny-sc-1");
    CHECK_EQ_INT(rf_scorecard_n_features(sc), 3);
    CHECK_EQ_STR(rf_scorecard_feature(sc, 1), "cr_missed_90d");
    CHECK_EQ_INT(rf_scorecard_n_bands(sc), 4);
    CHECK_EQ_STR(rf_scorecard_band(sc, 3), "D");
    double factor = 20.0 / log(2.0), offset = 600.0 - factor * log(50.0);
    struct rf_sc_result r;
    /* utilisation 0.1 (bin 0, woe 0.8), missed 0 (bin 0, 0.5): z = -3 - 0.8 - 0.4 = -4.2 */
    double x[3] = {0.1, 0.0, 7.0};
    rf_scorecard_score(sc, x, 1, &r);
    double z = -3.0 + -1.0 * 0.8 + -0.8 * 0.5 + 0.3 * 0.0;
    CHECK_NEAR(r.pd, sigmoid(z), 1e-15, 0);
    CHECK_NEAR(r.score, offset - factor * z, 1e-12, 0);
    CHECK_EQ_INT(r.band, 2); /* 600 + 20/ln2 * (4.2 - ln 50) = 616.6: band C (600..640) */
    CHECK_EQ_INT(r.n_reasons, 0); /* every feature in its best bin */
    /* a value on an edge falls in the upper bin: 0.6 -> bin 2 (woe -0.4); missed 1 -> bin 1 */
    double x2[3] = {0.6, 1.0, 0.0};
    rf_scorecard_score(sc, x2, 1, &r);
    z = -3.0 + -1.0 * -0.4 + -0.8 * -1.5;
    CHECK_NEAR(r.pd, sigmoid(z), 1e-15, 0);
    CHECK_NEAR(r.score, offset - factor * z, 1e-12, 0);
    /* reasons: points lost = factor * |coef| * (best woe - woe): missed 0.8*2.0=1.6, util 1.2 */
    CHECK_EQ_INT(r.n_reasons, 2);
    if (r.n_reasons == 2) {
        CHECK_EQ_STR(r.reasons[0].feature, "cr_missed_90d");
        CHECK_NEAR(r.reasons[0].points_lost, factor * 0.8 * 2.0, 1e-12, 0);
        CHECK(r.reasons[0].value == 1.0);
        CHECK_EQ_STR(r.reasons[1].feature, "cr_utilisation");
        CHECK_NEAR(r.reasons[1].points_lost, factor * 1.0 * 1.2, 1e-12, 0);
    }
    /* without reasons asked, none */
    rf_scorecard_score(sc, x2, 0, &r);
    CHECK_EQ_INT(r.n_reasons, 0);
    /* identities: z = ln(base_odds of bad)... score = base_score at odds 50:1 good:bad */
    /* bands: the first whose min_score <= score; the last catches the rest */
    for (double u = -1; u <= 2.0; u += 0.05) {
        for (int m = 0; m <= 3; m++) {
            double xx[3] = {u, (double)m, 1.0};
            rf_scorecard_score(sc, xx, 0, &r);
            int want = r.score >= 680 ? 0 : r.score >= 640 ? 1 : r.score >= 600 ? 2 : 3;
            CHECK_EQ_INT(r.band, want);
            CHECK(r.pd > 0 && r.pd < 1);
        }
    }
    /* hysteresis: out of a band only more than the margin beyond its edges */
    CHECK(!rf_scorecard_outside(sc, 1, 650, 5));   /* B is [640, 680) */
    CHECK(!rf_scorecard_outside(sc, 1, 636, 5));
    CHECK(rf_scorecard_outside(sc, 1, 634.9, 5));
    CHECK(!rf_scorecard_outside(sc, 1, 684.9, 5));
    CHECK(rf_scorecard_outside(sc, 1, 685, 5));
    CHECK(!rf_scorecard_outside(sc, 0, 1e9, 5));   /* the best band has no upper edge */
    CHECK(!rf_scorecard_outside(sc, 3, -1e9, 5));  /* the worst no lower one */
    CHECK(rf_scorecard_outside(sc, 3, 605, 5));
    CHECK(!rf_scorecard_outside(sc, 3, 604.9, 5));
    CHECK(rf_scorecard_outside(sc, 1, 639, 0));    /* no margin: the band itself */
    CHECK(rf_scorecard_outside(sc, 7, 650, 5));    /* no such band */
    /* NaN falls in bin 0 */
    double xn[3] = {NAN, NAN, NAN};
    rf_scorecard_score(sc, xn, 0, &r);
    CHECK_NEAR(r.pd, sigmoid(-3.0 - 0.8 - 0.4), 1e-15, 0);
    rf_scorecard_destroy(sc);
}

/* points: pdo more points double the odds (good:bad), base_score at base_odds */
static void test_scaling(void) {
    char path[] = "/tmp/rf_sc_XXXXXX";
    int fd = mkstemp(path);
    FILE *f = fdopen(fd, "w");
    /* one feature, woe = -z so that z is set by the bin: coef 1, intercept 0 */
    fputs("{\"format\": \"riskflow.scorecard.v1\", \"name\": \"s\", \"version\": \"v\","
          "\"features\": [{\"name\": \"a\", \"edges\": [0, 1], \"woe\": [0, 0, 0]}],"
          "\"coefficients\": [1], \"intercept\": 0,"
          "\"scaling\": {\"base_score\": 600, \"base_odds\": 50, \"pdo\": 20},"
          "\"bands\": [{\"name\": \"X\", \"min_score\": null}]}", f);
    fclose(f);
    char err[512];
    rf_scorecard_t *sc = rf_scorecard_load(path, err, sizeof err);
    unlink(path);
    CHECK(sc != NULL);
    if (!sc)
        return;
    struct rf_sc_result r;
    double x = 0.5;
    rf_scorecard_score(sc, &x, 0, &r);
    /* z = 0: odds good:bad 1:1 -> 600 - 20 * log2(50) points */
    CHECK_NEAR(r.score, 600.0 - 20.0 * log2(50.0), 1e-9, 0);
    CHECK(r.pd == 0.5);
    rf_scorecard_destroy(sc);
}

static void expect_error(const char *json, const char *needle) {
    char path[] = "/tmp/rf_sc_XXXXXX";
    int fd = mkstemp(path);
    FILE *f = fdopen(fd, "w");
    fputs(json, f);
    fclose(f);
    char err[512] = "";
    rf_scorecard_t *sc = rf_scorecard_load(path, err, sizeof err);
    unlink(path);
    CHECK(sc == NULL);
    rf_scorecard_destroy(sc);
    int ok = strstr(err, needle) != NULL && strstr(err, path) == err;
    if (!ok)
        fprintf(stderr, "  got '%s', want '%s'\n", err, needle);
    CHECK(ok);
}

#define HEAD "{\"format\": \"riskflow.scorecard.v1\", \"name\": \"s\", \"version\": \"v\","
#define FEAT "\"features\": [{\"name\": \"a\", \"edges\": [1, 2], \"woe\": [0, 1, 2]}],"
#define REST "\"coefficients\": [1], \"intercept\": 0, \"scaling\": {\"base_score\": 600, " \
             "\"base_odds\": 50, \"pdo\": 20}, \"bands\": [{\"name\": \"X\", \"min_score\": null}]}"

static void test_load_errors(void) {
    expect_error("{\"format\": \"riskflow.logistic.v1\"}", "format: 'riskflow.logistic.v1'");
    expect_error(HEAD FEAT REST "x", "end of file expected");
    expect_error("{\"format\": \"riskflow.scorecard.v1\", " FEAT REST, "'version'");
    expect_error(HEAD "\"features\": []," REST, "features: an array of 1 to");
    expect_error(HEAD "\"features\": [{\"name\": \"a\", \"edges\": [2, 1], \"woe\": [0, 1, 2]}],"
                 REST, "strictly increasing");
    expect_error(HEAD "\"features\": [{\"name\": \"a\", \"edges\": [1, 2], \"woe\": [0, 1]}],"
                 REST, "2 woe values for 2 edges (want 3)");
    expect_error(HEAD "\"features\": [{\"name\": \"a\", \"edges\": [1], \"woe\": [0, \"x\"]}],"
                 REST, "woe[1]");
    expect_error(HEAD "\"features\": [{\"name\": \"a\", \"edges\": [], \"woe\": [0]}, "
                 "{\"name\": \"a\", \"edges\": [], \"woe\": [0]}], \"coefficients\": [1, 1], "
                 "\"intercept\": 0, \"scaling\": {\"base_score\": 600, \"base_odds\": 50, "
                 "\"pdo\": 20}, \"bands\": [{\"name\": \"X\", \"min_score\": null}]}",
                 "duplicate feature 'a'");
    expect_error(HEAD FEAT "\"coefficients\": [1, 2], \"intercept\": 0}", "coefficients: 1 numbers");
    expect_error(HEAD FEAT "\"coefficients\": [1], \"intercept\": 0, \"scaling\": {\"base_score\": "
                 "600, \"base_odds\": 0, \"pdo\": 20}}", "scaling");
    expect_error(HEAD FEAT "\"coefficients\": [1], \"intercept\": 0, \"scaling\": {\"base_score\": "
                 "600, \"base_odds\": 50, \"pdo\": 20}, \"bands\": [{\"name\": \"A\", "
                 "\"min_score\": 600}]}", "the last band's min_score must be null");
    expect_error(HEAD FEAT "\"coefficients\": [1], \"intercept\": 0, \"scaling\": {\"base_score\": "
                 "600, \"base_odds\": 50, \"pdo\": 20}, \"bands\": [{\"name\": \"A\", "
                 "\"min_score\": 600}, {\"name\": \"B\", \"min_score\": 650}, {\"name\": \"C\", "
                 "\"min_score\": null}]}", "below the previous band's");
    char err[256];
    CHECK(rf_scorecard_load("/nonexistent.json", err, sizeof err) == NULL);
    CHECK(strstr(err, "/nonexistent.json: ") == err);
}

/* The shipped scorecard against tools/train/riskflow_scorecard.py on the committed fixture:
 * PD and score to 1e-9 relative, the band, the reasons and their points lost. */
static void test_parity(void) {
    char err[512];
    rf_scorecard_t *sc = rf_scorecard_load("deploy/models/credit_scorecard.json", err, sizeof err);
    CHECK(sc != NULL);
    if (!sc) {
        fprintf(stderr, "  %s\n", err);
        return;
    }
    FILE *f = fopen("tests/fixtures/credit_scorecard_parity.csv", "r");
    CHECK(f != NULL);
    if (!f) {
        rf_scorecard_destroy(sc);
        return;
    }
    char line[8192];
    int n = rf_scorecard_n_features(sc), rows = 0, bad = 0;
    double worst = 0;
    /* header: the model's features in order, then pd, score, band, reasonK_feature/points */
    CHECK(fgets(line, sizeof line, f) != NULL);
    char *tok = strtok(line, ",\n");
    for (int i = 0; i < n && tok; i++, tok = strtok(NULL, ",\n"))
        CHECK_EQ_STR(tok, rf_scorecard_feature(sc, i));
    while (fgets(line, sizeof line, f)) {
        char *cols[64];
        int nc = 0;
        for (char *p = line; nc < 64;) {
            cols[nc++] = p;
            char *comma = strchr(p, ',');
            if (!comma) {
                p[strcspn(p, "\n")] = '\0';
                break;
            }
            *comma = '\0';
            p = comma + 1;
        }
        if (nc < n + 3)
            continue;
        double x[RF_SC_FEATURES_MAX];
        for (int i = 0; i < n; i++)
            x[i] = strtod(cols[i], NULL);
        struct rf_sc_result r;
        rf_scorecard_score(sc, x, 1, &r);
        double pd = strtod(cols[n], NULL), score = strtod(cols[n + 1], NULL);
        double epd = fabs(r.pd - pd) / fmax(fabs(pd), 1e-300);
        double esc = fabs(r.score - score) / fmax(fabs(score), 1e-300);
        worst = fmax(worst, fmax(epd, esc));
        int row_bad = epd > 1e-9 || esc > 1e-9 || strcmp(rf_scorecard_band(sc, r.band), cols[n + 2]);
        int want_reasons = 0;
        for (int k = 0; k < RF_SC_REASONS_MAX && n + 3 + 2 * k + 1 < nc; k++) {
            const char *fname = cols[n + 3 + 2 * k];
            if (!*fname)
                break;
            want_reasons++;
            if (k >= r.n_reasons || strcmp(r.reasons[k].feature, fname) != 0) {
                row_bad = 1;
                continue;
            }
            double lost = strtod(cols[n + 4 + 2 * k], NULL);
            if (fabs(r.reasons[k].points_lost - lost) > 1e-9 * fmax(fabs(lost), 1.0))
                row_bad = 1;
        }
        row_bad |= want_reasons != r.n_reasons;
        if (row_bad && bad++ < 5)
            fprintf(stderr, "  row %d: pd %.17g vs %.17g, score %.17g vs %.17g, band %s vs %s, "
                    "%d reasons vs %d\n", rows + 2, r.pd, pd, r.score, score,
                    rf_scorecard_band(sc, r.band), cols[n + 2], r.n_reasons, want_reasons);
        rows++;
    }
    fclose(f);
    fprintf(stderr, "  parity: %d rows, worst relative difference %.3g\n", rows, worst);
    CHECK(rows >= 2000);
    CHECK_EQ_INT(bad, 0);
    rf_scorecard_destroy(sc);
}

RF_TEST_MAIN(RF_TEST(test_by_hand), RF_TEST(test_scaling), RF_TEST(test_load_errors),
             RF_TEST(test_parity))
