/*
 * model.c — the fraud model: a logistic regression (JSON loading with full validation, batch
 * scoring through one OpenBLAS dgemv, exact per-feature contributions for alert reasons) or a
 * tree ensemble (trees.c: XGBoost JSON or LightGBM text, TreeSHAP reasons), one interface.
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
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "riskflow/err.h"
#include "riskflow/trees.h"

#define RF_MODEL_FORMAT "riskflow.logistic.v1"
#define RF_TREES_FORMAT "riskflow.trees.v1"

struct rf_model_s {
    rf_trees_t *trees; /* a tree ensemble; NULL for the logistic model */
    int path_reasons;  /* trees: path attribution instead of TreeSHAP */
    double phi[RF_FEATURES_MAX + 1];
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

/* The model's own copy of its version: nothing borrowed from jansson survives the load. */
static int set_version(rf_model_t *model, const char *version, const char *path, char *errstr,
                       size_t size) {
    model->version = dupstr(version);
    if (!model->version) {
        rf_errf(errstr, size, path, "out of memory");
        return -1;
    }
    return 0;
}

/* What both riskflow formats carry beside the parameters: a name, the version stamped on every
 * output (bounded, so an output always fits its buffer) and the alert threshold. Returns the
 * version (borrowed from root) or NULL with errstr set. */
static const char *get_header(json_t *root, rf_model_t *model, const char *path, char *errstr,
                              size_t size) {
    /* The name is required so a file says what it is, though only the version goes on outputs. */
    if (!get_string(root, "name", path, errstr, size))
        return NULL;
    const char *version = get_string(root, "version", path, errstr, size);
    if (!version)
        return NULL;
    if (strlen(version) > RF_MODEL_VERSION_MAX) {
        rf_errf(errstr, size, path, "'version' must be 1 to " RF_STR(RF_MODEL_VERSION_MAX)
                                    " characters");
        return NULL;
    }
    if (get_number(root, "threshold", "", &model->threshold, path, errstr, size) < 0)
        return NULL;
    if (model->threshold < 0.0 || model->threshold > 1.0) {
        rf_errf(errstr, size, path, "threshold: %g, expected a probability in [0, 1]",
                model->threshold);
        return NULL;
    }
    return version;
}

/* The tree ensemble's names into the model: at most RF_FEATURES_MAX, each named. */
static int take_tree_names(rf_model_t *model, const char *path, char *errstr, size_t size) {
    int n = rf_trees_n_features(model->trees);
    if (n > RF_FEATURES_MAX) {
        rf_errf(errstr, size, path, "%d features, at most %d", n, RF_FEATURES_MAX);
        return -1;
    }
    for (int i = 0; i < n; i++) {
        const char *name = rf_trees_feature_name(model->trees, i);
        if (!name) {
            rf_errf(errstr, size, path, "the model names no features: train it with feature "
                                        "names, or list them in a " RF_TREES_FORMAT " manifest");
            return -1;
        }
        if (strlen(name) >= RF_MODEL_NAME_MAX) {
            rf_errf(errstr, size, path, "feature %d: a name of 1 to %d bytes expected", i,
                    RF_MODEL_NAME_MAX - 1);
            return -1;
        }
        memcpy(model->names[i], name, strlen(name) + 1);
    }
    model->n = n;
    return 0;
}

/* A riskflow.trees.v1 manifest: the version and threshold riskflow stamps and alerts on, and
 *   "model": the library's own file (a path relative to the manifest's directory),
 *   "features": optional, the names in the model's column order when the file has none. */
static int parse_manifest(json_t *root, rf_model_t *model, const char *path, char *errstr,
                          size_t size) {
    const char *version = get_header(root, model, path, errstr, size);
    const char *file = version ? get_string(root, "model", path, errstr, size) : NULL;
    if (!file)
        return -1;
    char full[4096];
    const char *slash = strrchr(path, '/');
    if (file[0] == '/' || !slash)
        snprintf(full, sizeof full, "%s", file);
    else
        snprintf(full, sizeof full, "%.*s/%s", (int)(slash - path), path, file);
    char err[512];
    model->trees = rf_trees_load(full, RF_TREES_DENSE_DEPTH, err, sizeof err);
    if (!model->trees) {
        rf_errf(errstr, size, path, "model: %s", err);
        return -1;
    }
    if (!rf_trees_is_probability(model->trees)) {
        rf_errf(errstr, size, path, "model: %s: its objective gives no probability (a logistic "
                                    "objective is needed to alert on a threshold)", full);
        return -1;
    }
    if (json_object_get(root, "features")) {
        int n = get_features(root, model->names, path, errstr, size);
        if (n < 0)
            return -1;
        if (n != rf_trees_n_features(model->trees)) {
            rf_errf(errstr, size, path, "features: %d names, the model has %d features", n,
                    rf_trees_n_features(model->trees));
            return -1;
        }
        model->n = n;
    } else if (take_tree_names(model, path, errstr, size) != 0) {
        return -1;
    }
    return set_version(model, version, path, errstr, size);
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
    if (strcmp(format, RF_TREES_FORMAT) == 0)
        return parse_manifest(root, model, path, errstr, size);
    if (strcmp(format, RF_MODEL_FORMAT) != 0) {
        rf_errf(errstr, size, path, "format: '%s', expected '%s' or '%s'", format,
                RF_MODEL_FORMAT, RF_TREES_FORMAT);
        return -1;
    }
    const char *version = get_header(root, model, path, errstr, size);
    if (!version)
        return -1;

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

    return set_version(model, version, path, errstr, size);
}

/* An XGBoost JSON model (its "learner") or a LightGBM text model ("tree" first), as saved by
 * the library, rather than one of riskflow's own formats. */
static int is_library_file(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f)
        return 0;
    char head[256];
    size_t n = fread(head, 1, sizeof head - 1, f);
    fclose(f);
    head[n] = 0;
    const char *p = head;
    while (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t')
        p++;
    return strncmp(p, "tree\n", 5) == 0 || strncmp(p, "tree\r", 5) == 0 ||
           (*p == '{' && strstr(p, "\"learner\"") != NULL);
}

/* A library's file loaded as it is: no threshold of its own (the job's config gives it,
 * rf_model_threshold is NaN) and, as version, the file's name and a hash of its bytes, so
 * that outputs name exactly the trees that scored them. */
static rf_model_t *load_library_file(const char *path, char *errstr, size_t size) {
    rf_model_t *model = calloc(1, sizeof *model);
    if (!model) {
        rf_errf(errstr, size, path, "out of memory");
        return NULL;
    }
    model->threshold = NAN;
    model->trees = rf_trees_load(path, RF_TREES_DENSE_DEPTH, errstr, size);
    if (!model->trees)
        goto fail;
    if (!rf_trees_is_probability(model->trees)) {
        rf_errf(errstr, size, path, "its objective gives no probability (a logistic objective "
                                    "is needed to alert on a threshold)");
        goto fail;
    }
    if (take_tree_names(model, path, errstr, size) != 0)
        goto fail;
    uint64_t h = rf_trees_content_hash(model->trees);
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    char v[RF_MODEL_VERSION_MAX + 1];
    snprintf(v, sizeof v, "%.*s@%08x", RF_MODEL_VERSION_MAX - 9, base, (unsigned)(h ^ (h >> 32)));
    if (set_version(model, v, path, errstr, size) != 0)
        goto fail;
    return model;
fail:
    rf_model_destroy(model);
    return NULL;
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
    if (is_library_file(path))
        return load_library_file(path, errstr, errstr_size);
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
    rf_trees_destroy(model->trees);
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
    if (model->trees)
        return rf_trees_predict(model->trees, x, n, out);

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
int rf_model_reasons(rf_model_t *model, const double *x_row, struct rf_reason *out, int k) {
    if (!model || !x_row || !out || k <= 0)
        return 0;
    if (k > RF_REASONS_MAX)
        k = RF_REASONS_MAX;
    if (model->trees && (model->path_reasons
                             ? rf_trees_path_contribs(model->trees, x_row, model->phi)
                             : rf_trees_shap(model->trees, x_row, model->phi)) != 0)
        return 0;

    /* Insertion into a k-long descending list: n <= 32 and k <= 3, so this beats any sort,
     * needs no scratch, and ties keep model order (strict > below). */
    int got = 0;
    for (int i = 0; i < model->n; i++) {
        double c = model->trees ? model->phi[i]
                                : model->coef[i] * ((x_row[i] - model->mean[i]) / model->scale[i]);
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

void rf_model_set_path_reasons(rf_model_t *model, int on) {
    model->path_reasons = on;
}
