/*
 * scorecard.h — a credit scorecard (riskflow.scorecard.v1, docs/MODELS.md §2): binned features
 * with weights of evidence, a logistic model over them, points scaled the way credit teams
 * read them, risk bands and adverse-action reasons.
 *
 * Owns the model's parameters, loaded once from JSON (jansson) off the hot path. Scoring is a
 * handful of comparisons and multiplications per feature: no allocation, any thread (the loop
 * thread per event). Parity: tools/train/riskflow_scorecard.py computes the same numbers, and
 * tests/unit/test_scorecard.c holds the two together to 1e-9 on a committed fixture.
 */
#ifndef RISKFLOW_SCORECARD_H
#define RISKFLOW_SCORECARD_H

#include <stddef.h>

#define RF_SC_FEATURES_MAX 32
#define RF_SC_BINS_MAX 64    /* edges per feature (bins = edges + 1) */
#define RF_SC_BANDS_MAX 16
#define RF_SC_REASONS_MAX 3
#define RF_SC_NAME_MAX 48    /* feature and band names, NUL included */
#define RF_SC_VERSION_MAX 128

typedef struct rf_scorecard_s rf_scorecard_t;

/* One adverse-action reason: a feature, its value, the points it cost against its best bin. */
struct rf_sc_reason {
    const char *feature; /* borrowed from the model */
    double value;
    double points_lost;
};

struct rf_sc_result {
    double pd;     /* probability of default */
    double score;  /* points */
    int band;      /* index into the model's bands */
    int n_reasons;
    struct rf_sc_reason reasons[RF_SC_REASONS_MAX];
};

/* Load and validate (NULL + errstr naming the file and what is wrong). Caller owns it. */
rf_scorecard_t *rf_scorecard_load(const char *path, char *errstr, size_t errstr_size);
void rf_scorecard_destroy(rf_scorecard_t *sc); /* accepts NULL */

const char *rf_scorecard_version(const rf_scorecard_t *sc);
int rf_scorecard_n_features(const rf_scorecard_t *sc);
const char *rf_scorecard_feature(const rf_scorecard_t *sc, int i);
int rf_scorecard_n_bands(const rf_scorecard_t *sc);
const char *rf_scorecard_band(const rf_scorecard_t *sc, int i);

/* Whether `score` is more than `margin` points outside band b's range [min_score(b),
 * min_score(b - 1)) (the first band has no upper edge, the last no lower one). */
int rf_scorecard_outside(const rf_scorecard_t *sc, int b, double score, double margin);

/* Score one row of raw feature values in the model's order. Reasons only when `reasons`. */
void rf_scorecard_score(const rf_scorecard_t *sc, const double *x, int reasons,
                        struct rf_sc_result *out);

#endif
