/*
 * model.c — the fraud logistic regression: JSON loading with full validation, batch scoring
 * through one OpenBLAS dgemv, and exact per-feature contributions for alert reasons.
 *
 * Owns the model's parameters (copied out of jansson, which is released before load returns)
 * and a scratch matrix of RF_MODEL_BATCH_MAX rows, so scoring allocates nothing. Loading runs
 * off the hot path (start-up, reload); scoring and reasons run on the loop thread. A model is
 * not re-entrant for scoring: the scratch is shared, so one thread scores a given model.
 *
 * Must never print (errors go to errstr) and never allocate or block after load. The score is
 * defined as scikit-learn's predict_proba of a StandardScaler + LogisticRegression pipeline,
 * so the arithmetic follows the same order: standardise, dot, add intercept, expit.
 */
/* model.h uses size_t without including <stddef.h>; until the header includes it itself. */
#include <stddef.h>

#include "riskflow/model.h"

#include <cblas.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "riskflow/err.h"

#define RF_MODEL_FORMAT "riskflow.logistic.v1"

struct rf_model_s {
    char *version;
    int n;                      /* features */
    char names[RF_FEATURES_MAX][RF_MODEL_NAME_MAX]; /* model order; declared in the feature file */
    double mean[RF_FEATURES_MAX];
    double scale[RF_FEATURES_MAX];
    double coef[RF_FEATURES_MAX];
    double intercept;
    double threshold;
    double *scratch; /* RF_MODEL_BATCH_MAX x n, standardised rows */
};

static char *dupstr(const char *s) {
    size_t len = strlen(s) + 1;
    char *d = malloc(len);
    if (d)
        memcpy(d, s, len);
    return d;
}

/* A non-empty string member, or NULL with errstr set. */
static const char *get_string(json_t *root, const char *key, const char *path, char *errstr,
                              size_t size) {
    json_t *v = json_object_get(root, key);
    if (!v) {
        rf_errf(errstr, size, path, "missing field '%s'", key);
        return NULL;
    }
    if (!json_is_string(v) || json_string_length(v) == 0) {
        rf_errf(errstr, size, path, "%s: expected a non-empty string", key);
        return NULL;
    }
    return json_string_value(v);
}

/* A finite number member (integer or real). Returns 0 or -1 with errstr set. */
static int get_number(json_t *obj, const char *key, const char *where, double *out,
                      const char *path, char *errstr, size_t size) {
    json_t *v = json_object_get(obj, key);
    if (!v) {
        rf_errf(errstr, size, path, "missing field '%s%s'", where, key);
        return -1;
    }
    if (!json_is_number(v) || !isfinite(json_number_value(v))) {
        rf_errf(errstr, size, path, "%s%s: expected a finite number", where, key);
        return -1;
    }
    *out = json_number_value(v);
    return 0;
}

/* An array of exactly n finite numbers into out[n]. Returns 0 or -1 with errstr set. */
static int get_vector(json_t *obj, const char *key, const char *where, int n, double *out,
                      const char *path, char *errstr, size_t size) {
    json_t *arr = json_object_get(obj, key);
    if (!arr) {
        rf_errf(errstr, size, path, "missing field '%s%s'", where, key);
        return -1;
    }
    if (!json_is_array(arr)) {
        rf_errf(errstr, size, path, "%s%s: expected an array", where, key);
        return -1;
    }
    if (json_array_size(arr) != (size_t)n) {
        rf_errf(errstr, size, path, "%s%s: length %zu, expected %d (one per feature)", where, key,
               json_array_size(arr), n);
        return -1;
    }
    for (int i = 0; i < n; i++) {
        json_t *v = json_array_get(arr, (size_t)i);
        if (!json_is_number(v) || !isfinite(json_number_value(v))) {
            rf_errf(errstr, size, path, "%s%s[%d]: expected a finite number", where, key, i);
            return -1;
        }
        out[i] = json_number_value(v);
    }
    return 0;
}

/* Feature names → catalogue ids. Returns the count or -1 with errstr set. */
static int get_features(json_t *root, char (*names)[RF_MODEL_NAME_MAX], const char *path, char *errstr, size_t size) {
    json_t *arr = json_object_get(root, "features");
    if (!arr) {
        rf_errf(errstr, size, path, "missing field 'features'");
        return -1;
    }
    if (!json_is_array(arr)) {
        rf_errf(errstr, size, path, "features: expected an array");
        return -1;
    }
    size_t n = json_array_size(arr);
    if (n == 0 || n > RF_FEATURES_MAX) {
        rf_errf(errstr, size, path, "features: %zu features, expected 1..%d", n, RF_FEATURES_MAX);
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        json_t *v = json_array_get(arr, i);
        if (!json_is_string(v)) {
            rf_errf(errstr, size, path, "features[%zu]: expected a string", i);
            return -1;
        }
        const char *name = json_string_value(v);
        /* Whether it is declared (and available for payments) is the fraud job's check, with
         * the feature file at hand: here, only what the file itself can get wrong. */
        if (strlen(name) == 0 || strlen(name) >= RF_MODEL_NAME_MAX) {
            rf_errf(errstr, size, path, "features[%zu]: a name of 1 to %d bytes expected", i,
                   RF_MODEL_NAME_MAX - 1);
            return -1;
        }
        /* A repeated column is a training-export bug, and reasons would name it twice. */
        for (size_t j = 0; j < i; j++) {
            if (strcmp(names[j], name) == 0) {
                rf_errf(errstr, size, path, "features[%zu]: duplicate feature '%s'", i, name);
                return -1;
            }
        }
        memcpy(names[i], name, strlen(name) + 1);
    }
    return (int)n;
}

/* Validates the whole document and fills model's parameters and version. */
static int parse(json_t *root, rf_model_t *model, const char *path, char *errstr, size_t size) {
    if (!json_is_object(root)) {
        rf_errf(errstr, size, path, "expected a JSON object");
        return -1;
    }
    const char *format = get_string(root, "format", path, errstr, size);
    if (!format)
        return -1;
    if (strcmp(format, RF_MODEL_FORMAT) != 0) {
        rf_errf(errstr, size, path, "format: '%s', expected '%s'", format, RF_MODEL_FORMAT);
        return -1;
    }
    /* Required so a file says what it is, though only the version goes on outputs. */
    if (!get_string(root, "name", path, errstr, size))
        return -1;
    const char *version = get_string(root, "version", path, errstr, size);
    if (!version)
        return -1;
    /* It goes on every output record: bounded, so an output always fits its buffer. */
    if (strlen(version) == 0 || strlen(version) > RF_MODEL_VERSION_MAX) {
        rf_errf(errstr, size, path, "'version' must be 1 to " RF_STR(RF_MODEL_VERSION_MAX)
                                   " characters");
        return -1;
    }

    model->n = get_features(root, model->names, path, errstr, size);
    if (model->n < 0)
        return -1;

    json_t *scaler = json_object_get(root, "scaler");
    if (!scaler) {
        rf_errf(errstr, size, path, "missing field 'scaler'");
        return -1;
    }
    if (!json_is_object(scaler)) {
        rf_errf(errstr, size, path, "scaler: expected an object");
        return -1;
    }
    if (get_vector(scaler, "mean", "scaler.", model->n, model->mean, path, errstr, size) < 0)
        return -1;
    if (get_vector(scaler, "scale", "scaler.", model->n, model->scale, path, errstr, size) < 0)
        return -1;
    for (int i = 0; i < model->n; i++) {
        /* scikit-learn replaces a zero variance by 1 when it fits; a 0 here means the file
         * was not written by a fitted scaler, and dividing by it would yield inf/NaN. */
        if (model->scale[i] == 0.0) {
            rf_errf(errstr, size, path, "scaler.scale[%d]: 0 (feature '%s')", i, model->names[i]);
            return -1;
        }
    }
    if (get_vector(root, "coefficients", "", model->n, model->coef, path, errstr, size) < 0)
        return -1;
    if (get_number(root, "intercept", "", &model->intercept, path, errstr, size) < 0)
        return -1;
    if (get_number(root, "threshold", "", &model->threshold, path, errstr, size) < 0)
        return -1;
    if (model->threshold < 0.0 || model->threshold > 1.0) {
        rf_errf(errstr, size, path, "threshold: %g, expected a probability in [0, 1]",
               model->threshold);
        return -1;
    }

    model->version = dupstr(version);
    if (!model->version) {
        rf_errf(errstr, size, path, "out of memory");
        return -1;
    }
    return 0;
}

/* Everything is validated before the model exists, so a caller never sees half a model;
 * the JSON tree is released before returning (nothing borrowed from jansson survives). */
rf_model_t *rf_model_load(const char *path, char *errstr, size_t errstr_size) {
    json_error_t jerr;
    json_t *root = NULL;
    rf_model_t *model = NULL;

    if (!path) {
        rf_errf(errstr, errstr_size, "(null)", "no model path");
        return NULL;
    }
    root = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        if (jerr.line > 0)
            rf_errf(errstr, errstr_size, path, "line %d column %d: %s", jerr.line, jerr.column,
                   jerr.text);
        else
            rf_errf(errstr, errstr_size, path, "%s", jerr.text);
        return NULL;
    }
    model = calloc(1, sizeof *model);
    if (!model) {
        rf_errf(errstr, errstr_size, path, "out of memory");
        goto decref_json;
    }
    if (parse(root, model, path, errstr, errstr_size) < 0)
        goto destroy_model;
    model->scratch = calloc((size_t)RF_MODEL_BATCH_MAX * (size_t)model->n, sizeof(double));
    if (!model->scratch) {
        rf_errf(errstr, errstr_size, path, "out of memory");
        goto destroy_model;
    }
    json_decref(root);
    return model;

destroy_model:
    rf_model_destroy(model);
decref_json:
    json_decref(root);
    return NULL;
}

/* Also the load path's cleanup: copes with a partly filled model. */
void rf_model_destroy(rf_model_t *model) {
    if (!model)
        return;
    free(model->scratch);
    free(model->version);
    free(model);
}

/* Accessors: borrowed, valid until rf_model_destroy. */
const char *rf_model_version(const rf_model_t *model) {
    return model->version;
}

int rf_model_n_features(const rf_model_t *model) {
    return model->n;
}

const char *rf_model_feature_name(const rf_model_t *model, int i) {
    if (i < 0 || i >= model->n)
        return NULL;
    return model->names[i];
}

double rf_model_threshold(const rf_model_t *model) {
    return model->threshold;
}

/* expit without overflow: exp() only ever sees a non-positive argument. */
static double sigmoid(double z) {
    if (z >= 0.0)
        return 1.0 / (1.0 + exp(-z));
    double e = exp(z);
    return e / (1.0 + e);
}

/* Standardise into the scratch, then one dgemv: BLAS sees the batch, not n dot products. */
int rf_model_score_batch(rf_model_t *model, const double *x, int n, double *out) {
    if (!model || n < 0 || n > RF_MODEL_BATCH_MAX || (n > 0 && (!x || !out)))
        return RF_E_INVAL;
    if (n == 0)
        return 0;

    int nf = model->n;
    for (int r = 0; r < n; r++) {
        const double *xr = x + (size_t)r * (size_t)nf;
        double *zr = model->scratch + (size_t)r * (size_t)nf;
        for (int i = 0; i < nf; i++)
            zr[i] = (xr[i] - model->mean[i]) / model->scale[i];
    }
    /* One matrix-vector product for the whole batch: logits land in out, then expit in place. */
    cblas_dgemv(CblasRowMajor, CblasNoTrans, n, nf, 1.0, model->scratch, nf, model->coef, 1, 0.0,
                out, 1);
    for (int r = 0; r < n; r++)
        out[r] = sigmoid(out[r] + model->intercept);
    return 0;
}

/* Contributions are recomputed from x_row rather than kept from scoring: reasons are needed
 * for alerts only, and recomputing keeps score_batch free of per-row side output. */
int rf_model_reasons(const rf_model_t *model, const double *x_row, struct rf_reason *out, int k) {
    if (!model || !x_row || !out || k <= 0)
        return 0;
    if (k > RF_REASONS_MAX)
        k = RF_REASONS_MAX;

    /* Insertion into a k-long descending list: n <= 32 and k <= 3, so this beats any sort,
     * needs no scratch, and ties keep model order (strict > below). */
    int got = 0;
    for (int i = 0; i < model->n; i++) {
        double c = model->coef[i] * ((x_row[i] - model->mean[i]) / model->scale[i]);
        if (!(c > 0.0))
            continue;
        int pos = got;
        while (pos > 0 && c > out[pos - 1].contribution)
            pos--;
        if (pos >= k)
            continue;
        int last = got < k ? got : k - 1;
        for (int j = last; j > pos; j--)
            out[j] = out[j - 1];
        out[pos].feature = model->names[i];
        out[pos].value = x_row[i];
        out[pos].contribution = c;
        if (got < k)
            got++;
    }
    return got;
}
