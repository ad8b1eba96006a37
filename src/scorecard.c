/*
 * scorecard.c — loading and scoring riskflow.scorecard.v1 (docs/MODELS.md §2). See
 * scorecard.h. The arithmetic follows MODELS.md's text in the same order of operations as
 * tools/train/riskflow_scorecard.py, so parity holds to the last bits in practice and to 1e-9
 * by test. Must never print: load errors go back through errstr.
 */
#include "riskflow/err.h"
#include "riskflow/scorecard.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FORMAT "riskflow.scorecard.v1"

struct sc_feature {
    char name[RF_SC_NAME_MAX];
    int n_edges;
    double edges[RF_SC_BINS_MAX];
    double woe[RF_SC_BINS_MAX + 1];
    double points[RF_SC_BINS_MAX + 1]; /* -factor * coef * woe, per bin */
    double best;                       /* max over bins of points */
    double coef;
};

struct rf_scorecard_s {
    char version[RF_SC_VERSION_MAX + 1];
    int n;
    struct sc_feature f[RF_SC_FEATURES_MAX];
    double intercept;
    double factor, offset;
    int n_bands;
    char band_name[RF_SC_BANDS_MAX][RF_SC_NAME_MAX];
    double band_min[RF_SC_BANDS_MAX]; /* -inf for the last */
};

/* A finite JSON number (integers too). */
static int num(json_t *v, double *out) {
    if (!json_is_number(v))
        return -1;
    *out = json_number_value(v);
    return isfinite(*out) ? 0 : -1;
}

static int parse_feature(json_t *jf, struct sc_feature *f, int i, const char *path, char *errstr,
                         size_t size) {
    const char *name = json_string_value(json_object_get(jf, "name"));
    if (!json_is_object(jf) || !name || !*name || strlen(name) >= RF_SC_NAME_MAX) {
        rf_errf(errstr, size, path, "features[%d]: an object with a name of 1 to %d bytes", i,
               RF_SC_NAME_MAX - 1);
        return -1;
    }
    memcpy(f->name, name, strlen(name) + 1);
    json_t *edges = json_object_get(jf, "edges"), *woe = json_object_get(jf, "woe");
    if (!json_is_array(edges) || !json_is_array(woe)) {
        rf_errf(errstr, size, path, "features[%d] (%s): 'edges' and 'woe' arrays expected", i, name);
        return -1;
    }
    size_t ne = json_array_size(edges);
    if (ne > RF_SC_BINS_MAX) {
        rf_errf(errstr, size, path, "features[%d] (%s): %zu edges, at most %d", i, name, ne,
               RF_SC_BINS_MAX);
        return -1;
    }
    if (json_array_size(woe) != ne + 1) {
        rf_errf(errstr, size, path, "features[%d] (%s): %zu woe values for %zu edges (want %zu)", i,
               name, json_array_size(woe), ne, ne + 1);
        return -1;
    }
    f->n_edges = (int)ne;
    for (size_t k = 0; k < ne; k++) {
        if (num(json_array_get(edges, k), &f->edges[k]) != 0 ||
            (k > 0 && !(f->edges[k] > f->edges[k - 1]))) {
            rf_errf(errstr, size, path, "features[%d] (%s): edges[%zu]: finite and strictly "
                   "increasing numbers expected", i, name, k);
            return -1;
        }
    }
    for (size_t k = 0; k <= ne; k++) {
        if (num(json_array_get(woe, k), &f->woe[k]) != 0) {
            rf_errf(errstr, size, path, "features[%d] (%s): woe[%zu]: a finite number expected", i,
                   name, k);
            return -1;
        }
    }
    return 0;
}

static int parse(json_t *root, rf_scorecard_t *sc, const char *path, char *errstr, size_t size) {
    if (!json_is_object(root)) {
        rf_errf(errstr, size, path, "expected a JSON object");
        return -1;
    }
    const char *format = json_string_value(json_object_get(root, "format"));
    if (!format || strcmp(format, FORMAT) != 0) {
        rf_errf(errstr, size, path, "format: '%s', expected '" FORMAT "'", format ? format : "");
        return -1;
    }
    const char *version = json_string_value(json_object_get(root, "version"));
    if (!version || !*version || strlen(version) > RF_SC_VERSION_MAX) {
        rf_errf(errstr, size, path, "'version': a string of 1 to %d characters expected",
               RF_SC_VERSION_MAX);
        return -1;
    }
    memcpy(sc->version, version, strlen(version) + 1);
    json_t *feats = json_object_get(root, "features"), *coefs = json_object_get(root, "coefficients");
    if (!json_is_array(feats) || json_array_size(feats) == 0 ||
        json_array_size(feats) > RF_SC_FEATURES_MAX) {
        rf_errf(errstr, size, path, "features: an array of 1 to %d features expected",
               RF_SC_FEATURES_MAX);
        return -1;
    }
    sc->n = (int)json_array_size(feats);
    if (!json_is_array(coefs) || json_array_size(coefs) != (size_t)sc->n) {
        rf_errf(errstr, size, path, "coefficients: %d numbers expected (one per feature)", sc->n);
        return -1;
    }
    for (int i = 0; i < sc->n; i++) {
        if (parse_feature(json_array_get(feats, (size_t)i), &sc->f[i], i, path, errstr, size))
            return -1;
        for (int j = 0; j < i; j++) {
            if (strcmp(sc->f[j].name, sc->f[i].name) == 0) {
                rf_errf(errstr, size, path, "features[%d]: duplicate feature '%s'", i,
                       sc->f[i].name);
                return -1;
            }
        }
        if (num(json_array_get(coefs, (size_t)i), &sc->f[i].coef) != 0) {
            rf_errf(errstr, size, path, "coefficients[%d]: a finite number expected", i);
            return -1;
        }
    }
    if (num(json_object_get(root, "intercept"), &sc->intercept) != 0) {
        rf_errf(errstr, size, path, "intercept: a finite number expected");
        return -1;
    }
    json_t *scaling = json_object_get(root, "scaling");
    double base_score, base_odds, pdo;
    if (!json_is_object(scaling) || num(json_object_get(scaling, "base_score"), &base_score) ||
        num(json_object_get(scaling, "base_odds"), &base_odds) ||
        num(json_object_get(scaling, "pdo"), &pdo) || !(base_odds > 0) || !(pdo > 0)) {
        rf_errf(errstr, size, path, "scaling: {base_score, base_odds > 0, pdo > 0} expected");
        return -1;
    }
    sc->factor = pdo / log(2.0);
    sc->offset = base_score - sc->factor * log(base_odds);
    json_t *bands = json_object_get(root, "bands");
    size_t nb = json_array_size(bands);
    if (!json_is_array(bands) || nb == 0 || nb > RF_SC_BANDS_MAX) {
        rf_errf(errstr, size, path, "bands: an array of 1 to %d bands expected", RF_SC_BANDS_MAX);
        return -1;
    }
    sc->n_bands = (int)nb;
    for (size_t b = 0; b < nb; b++) {
        json_t *jb = json_array_get(bands, b);
        const char *name = json_string_value(json_object_get(jb, "name"));
        json_t *min = json_object_get(jb, "min_score");
        if (!name || !*name || strlen(name) >= RF_SC_NAME_MAX) {
            rf_errf(errstr, size, path, "bands[%zu]: a name of 1 to %d bytes expected", b,
                   RF_SC_NAME_MAX - 1);
            return -1;
        }
        memcpy(sc->band_name[b], name, strlen(name) + 1);
        if (b + 1 == nb) {
            if (!json_is_null(min)) {
                rf_errf(errstr, size, path, "bands[%zu] (%s): the last band's min_score must be "
                       "null (it catches every score)", b, name);
                return -1;
            }
            sc->band_min[b] = -INFINITY;
        } else if (num(min, &sc->band_min[b]) != 0 ||
                   (b > 0 && !(sc->band_min[b] < sc->band_min[b - 1]))) {
            rf_errf(errstr, size, path, "bands[%zu] (%s): min_score: a finite number below the "
                   "previous band's expected", b, name);
            return -1;
        }
    }
    /* Points per bin and the best one, once: reasons then cost a subtraction. */
    for (int i = 0; i < sc->n; i++) {
        struct sc_feature *f = &sc->f[i];
        for (int k = 0; k <= f->n_edges; k++) {
            f->points[k] = -sc->factor * f->coef * f->woe[k];
            if (k == 0 || f->points[k] > f->best)
                f->best = f->points[k];
        }
    }
    return 0;
}

rf_scorecard_t *rf_scorecard_load(const char *path, char *errstr, size_t size) {
    json_error_t jerr;
    json_t *root = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        rf_errf(errstr, size, path, "%s (line %d)", jerr.text, jerr.line);
        return NULL;
    }
    rf_scorecard_t *sc = calloc(1, sizeof *sc);
    if (!sc) {
        rf_errf(errstr, size, path, "out of memory");
        json_decref(root);
        return NULL;
    }
    int rc = parse(root, sc, path, errstr, size);
    json_decref(root);
    if (rc) {
        free(sc);
        return NULL;
    }
    return sc;
}

void rf_scorecard_destroy(rf_scorecard_t *sc) {
    free(sc);
}

const char *rf_scorecard_version(const rf_scorecard_t *sc) {
    return sc->version;
}

int rf_scorecard_n_features(const rf_scorecard_t *sc) {
    return sc->n;
}

const char *rf_scorecard_feature(const rf_scorecard_t *sc, int i) {
    return i >= 0 && i < sc->n ? sc->f[i].name : NULL;
}

int rf_scorecard_n_bands(const rf_scorecard_t *sc) {
    return sc->n_bands;
}

const char *rf_scorecard_band(const rf_scorecard_t *sc, int i) {
    return i >= 0 && i < sc->n_bands ? sc->band_name[i] : NULL;
}

int rf_scorecard_outside(const rf_scorecard_t *sc, int b, double score, double margin) {
    if (b < 0 || b >= sc->n_bands)
        return 1;
    if (score < sc->band_min[b] - margin) /* -inf for the last band: never below */
        return 1;
    return b > 0 && score >= sc->band_min[b - 1] + margin;
}

/* The number of edges e with e <= x (numpy's searchsorted side="right"); bin 0 for NaN. */
static int bin_of(const struct sc_feature *f, double x) {
    if (!isfinite(x))
        return 0;
    int lo = 0, hi = f->n_edges;
    while (lo < hi) {
        int mid = (lo + hi) / 2;
        if (f->edges[mid] <= x)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

void rf_scorecard_score(const rf_scorecard_t *sc, const double *x, int reasons,
                        struct rf_sc_result *out) {
    double z = sc->intercept;
    int bins[RF_SC_FEATURES_MAX];
    for (int i = 0; i < sc->n; i++) {
        bins[i] = bin_of(&sc->f[i], x[i]);
        z += sc->f[i].coef * sc->f[i].woe[bins[i]];
    }
    out->pd = z >= 0.0 ? 1.0 / (1.0 + exp(-z)) : exp(z) / (1.0 + exp(z));
    out->score = sc->offset - sc->factor * z;
    out->band = sc->n_bands - 1;
    for (int b = 0; b < sc->n_bands; b++) {
        if (sc->band_min[b] <= out->score) {
            out->band = b;
            break;
        }
    }
    out->n_reasons = 0;
    if (!reasons)
        return;
    /* The k largest points lost, descending; ties keep file order (strict > below). */
    for (int i = 0; i < sc->n; i++) {
        double lost = sc->f[i].best - sc->f[i].points[bins[i]];
        if (!(lost > 0.0))
            continue;
        int pos = out->n_reasons;
        while (pos > 0 && lost > out->reasons[pos - 1].points_lost)
            pos--;
        if (pos >= RF_SC_REASONS_MAX)
            continue;
        int last = out->n_reasons < RF_SC_REASONS_MAX ? out->n_reasons : RF_SC_REASONS_MAX - 1;
        for (int j = last; j > pos; j--)
            out->reasons[j] = out->reasons[j - 1];
        out->reasons[pos] = (struct rf_sc_reason){sc->f[i].name, x[i], lost};
        if (out->n_reasons < RF_SC_REASONS_MAX)
            out->n_reasons++;
    }
}
