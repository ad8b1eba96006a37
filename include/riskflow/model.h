/*
 * model.h — the fraud model, scored in batches: a logistic regression loaded from JSON, or a
 * tree ensemble (trees.h) — an XGBoost JSON or LightGBM text file as the library saved it, or
 * a riskflow.trees.v1 manifest that names one and adds riskflow's version and threshold.
 *
 * Owns the model's parameters and a scratch matrix sized for one batch, so scoring allocates
 * nothing. Loaded once (off the hot path); scored on the loop thread. Dense math goes
 * through OpenBLAS (dgemv over the batch); the caller sets OpenBLAS to one thread.
 *
 * The tree manifest (docs/MODELS.md §4):
 *   {"format": "riskflow.trees.v1", "name": "fraud", "version": "fraud-xgb-…",
 *    "model": "fraud_xgb.json"       the library's file, relative to the manifest's directory
 *    "threshold": t,                  the alert threshold chosen on validation data
 *    "features": [...]}               optional: names for a file that carries none
 * A library file loaded directly has no threshold (NaN: the job's config must give one) and
 * is versioned "<file name>@<hash of its bytes>". Reasons for trees are TreeSHAP
 * contributions in log-odds.
 *
 * The logistic format (JSON under deploy/models/, written by tools/train/train_fraud.py):
 *   {
 *     "format": "riskflow.logistic.v1",
 *     "name": "fraud",
 *     "version": "fraud-lr-…",                 stamped on every output
 *     "features": ["amount", …],               declared in the feature file (decl.h)
 *     "scaler": {"mean": [...], "scale": [...]},   z_i = (x_i - mean_i) / scale_i
 *     "coefficients": [...],
 *     "intercept": b,
 *     "threshold": t                           suggested alert threshold (config wins)
 *   }
 *   score = 1 / (1 + exp(-(b + Σ coef_i z_i)))  — scikit-learn's predict_proba[:, 1] for a
 *   StandardScaler + LogisticRegression pipeline. Contribution of feature i = coef_i z_i.
 */
#ifndef RISKFLOW_MODEL_H
#define RISKFLOW_MODEL_H

#include <stddef.h>

#include "riskflow/event.h"

#define RF_MODEL_BATCH_MAX 256 /* rows per rf_model_score_batch call */
#define RF_MODEL_VERSION_MAX 128 /* characters; the version is stamped on every output */
#define RF_MODEL_NAME_MAX 48     /* feature names, NUL included (decl.h's RF_NAME_MAX) */
#define RF_STR_(x) #x
#define RF_STR(x) RF_STR_(x)

typedef struct rf_model_s rf_model_t;

/* Load and validate a model file. NULL with a message in errstr on any error (length
 * mismatch, scale of 0, non-finite numbers, more than RF_FEATURES_MAX features, a duplicate
 * name). Whether its features are declared is checked by the job against the feature file.
 * The caller owns the result (rf_model_destroy). */
rf_model_t *rf_model_load(const char *path, char *errstr, size_t errstr_size);

/* Accepts NULL. */
void rf_model_destroy(rf_model_t *model);

/* Borrowed strings/arrays: valid until rf_model_destroy. */
const char *rf_model_version(const rf_model_t *model);
int rf_model_n_features(const rf_model_t *model);
const char *rf_model_feature_name(const rf_model_t *model, int i);
/* The model's suggested alert threshold; NaN for a library file loaded directly. */
double rf_model_threshold(const rf_model_t *model);

/* Score n rows (n <= RF_MODEL_BATCH_MAX). x: n × n_features, row-major, raw values in model
 * order. out: n probabilities. Returns 0 or RF_E_INVAL. */
int rf_model_score_batch(rf_model_t *model, const double *x, int n, double *out);

/* The k (<= RF_REASONS_MAX) largest positive contributions of one row, descending; names
 * borrowed from the model. Returns how many were written (fewer when fewer are positive).
 * Not const: a tree ensemble's SHAP uses the model's scratch. */
int rf_model_reasons(rf_model_t *model, const double *x_row, struct rf_reason *out, int k);

/* Trees only: reasons by path attribution (trees.h) instead of TreeSHAP — 60-160 times
 * cheaper per alert; no effect on a logistic model. */
void rf_model_set_path_reasons(rf_model_t *model, int on);

#endif
