/*
 * trees.h — tree ensembles as the libraries that train them save them: XGBoost's JSON
 * (`Booster.save_model("m.json")`, gbtree, one output) and LightGBM's text
 * (`Booster.save_model("m.txt")`, one class, numerical splits), flattened at load into
 * contiguous node arrays and scored over a whole batch; TreeSHAP contributions for reasons.
 *
 * Owns the flattened trees, the feature names and the scratch for one batch (the rows as the
 * library compares them, the accumulators, the SHAP path), so scoring allocates nothing.
 * Loaded off the hot path; scored on one thread (the scratch is shared: not re-entrant).
 * Must never print (errors go to errstr) and never accept a file it cannot score exactly as
 * its library does: categorical splits, several classes or targets, DART weights, linear
 * leaves and objectives other than those below are refused by name.
 *
 * Exactness, per library (docs/MODELS.md §4):
 *  - XGBoost compares in float32 (`(float)x < split_condition`, NaN → the node's default
 *    direction) and sums leaves in float32 in tree order from the base margin
 *    (logit(base_score) for the logistic objectives); binary:logistic and reg:logistic apply
 *    its float sigmoid. Done the same way here, so scores are XGBoost's to the last bit or two.
 *  - LightGBM compares in double (`x <= threshold`), maps |x| <= 1e-35 to 0 as its dense
 *    predictor does, follows its missing types (None: NaN reads as 0; Zero: 0 and NaN take the
 *    default direction; NaN: NaN does) and sums leaves in double in tree order (the initial
 *    score is in tree 0); `binary sigmoid:s` applies 1/(1+exp(-s·raw)); average_output (random
 *    forest mode) divides by the number of trees.
 *
 * Two evaluators, one result: trees of depth <= dense_depth are padded into complete trees
 * (a shallow leaf copied down) and walked level-synchronously and branch-free over the batch,
 * tree by tree (design.md §10: 7x faster than chasing pointers); deeper trees (LightGBM grows
 * leaf-wise) are walked node by node from the same flattened array.
 */
#ifndef RISKFLOW_TREES_H
#define RISKFLOW_TREES_H

#include <stddef.h>
#include <stdint.h>

#define RF_TREES_BATCH_MAX 256   /* rows per scoring call (RF_MODEL_BATCH_MAX) */
#define RF_TREES_DENSE_DEPTH 10  /* the default: deeper trees are walked node by node */
#define RF_TREES_DEPTH_MAX 64    /* deeper is refused (a cycle or a corrupt file) */
#define RF_TREES_FEATURES_MAX 1024

typedef struct rf_trees_s rf_trees_t;

enum rf_trees_library { RF_TREES_XGBOOST, RF_TREES_LIGHTGBM };

/* Load an XGBoost JSON or LightGBM text model; the format is recognised from the content.
 * dense_depth: trees up to this depth use the branch-free evaluator (RF_TREES_DENSE_DEPTH;
 * 0 walks every tree, which tests use to check one evaluator against the other). NULL with
 * a message naming the file and the problem (truncated, a missing or malformed field, a child
 * out of range, a cycle, an unsupported feature of the format). The caller owns the result. */
rf_trees_t *rf_trees_load(const char *path, int dense_depth, char *errstr, size_t errstr_size);

/* The same from a buffer (len bytes, need not be NUL-terminated); `where` names it in errors. */
rf_trees_t *rf_trees_parse(const char *buf, size_t len, const char *where, int dense_depth,
                           char *errstr, size_t errstr_size);

void rf_trees_destroy(rf_trees_t *t); /* accepts NULL */

enum rf_trees_library rf_trees_library(const rf_trees_t *t);
/* FNV-1a 64 of the bytes the model was parsed from: names the exact file in a version. */
uint64_t rf_trees_content_hash(const rf_trees_t *t);
int rf_trees_n_features(const rf_trees_t *t);
/* The file's name for feature i (borrowed), or NULL when the file names none. */
const char *rf_trees_feature_name(const rf_trees_t *t, int i);
int rf_trees_n_trees(const rf_trees_t *t);
int rf_trees_max_depth(const rf_trees_t *t);
/* Trees evaluated branch-free (the rest are walked). */
int rf_trees_n_dense(const rf_trees_t *t);
/* 1 when the output is a probability (a logistic link), 0 when it is the raw sum. */
int rf_trees_is_probability(const rf_trees_t *t);

/* n rows (n <= RF_TREES_BATCH_MAX), x row-major n × n_features in the file's feature order.
 * out: n predictions as the library's predict() gives them (the link applied).
 * Returns 0 or RF_E_INVAL. */
int rf_trees_predict(rf_trees_t *t, const double *x, int n, double *out);

/* The same before the link (XGBoost's output_margin, LightGBM's raw_score). */
int rf_trees_margin(rf_trees_t *t, const double *x, int n, double *out);

/* TreeSHAP (Lundberg et al. 2018, the exact polynomial algorithm) for one row: phi[i] for
 * each feature and phi[n_features] the expected value, in margin units, so that they sum to
 * the margin. Covers are XGBoost's sum_hessian or LightGBM's counts, as each library's own
 * pred_contribs / pred_contrib uses. Computed in double. Returns 0 or RF_E_INVAL. */
int rf_trees_shap(rf_trees_t *t, const double *x_row, double *phi);

/* Path attribution (Saabas): along each tree's decision path, the change in the node's
 * expected value goes to the split's feature; phi[n_features] the expected value. O(trees x
 * depth): 60-160 times cheaper than TreeSHAP on 300 trees of depth 6 (bench_trees -o shap),
 * and what XGBoost's pred_contribs with approx_contribs=True gives. It sums to the margin too,
 * but it is not a Shapley value (it depends on the order of the splits). 0 or RF_E_INVAL. */
int rf_trees_path_contribs(rf_trees_t *t, const double *x_row, double *phi);

#endif
