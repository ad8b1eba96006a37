/*
 * trees.c — XGBoost JSON and LightGBM text tree ensembles: parsing with full validation into
 * one flattened node array, a branch-free level-synchronous evaluator for shallow trees, a
 * node walk for deep ones, and TreeSHAP.
 *
 * Both formats become the same thing at load: nodes (absolute indexes, a leaf has left = -1)
 * whose test is "go left iff x' < thr", where x' is the row as the library compares it and
 * the per-node flags say where NaN and (LightGBM's zero-as-missing) 0 go. LightGBM's
 * "x <= thr" becomes "x < nextafter(thr, +inf)", the same set of doubles. The two evaluators
 * and SHAP share that one test, so they cannot disagree on a path.
 */
#include "riskflow/trees.h"

#include <errno.h>
#include <float.h>
#include <jansson.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "riskflow/decl.h" /* rf_fnv1a64 */
#include "riskflow/err.h"

#define NODES_MAX (1 << 26)
#define TREES_MAX 100000
#define NAME_MAX_LEN 255
#define RF_STR_(x) #x
#define RF_STR(x) RF_STR_(x)

struct tnode {
    double thr;
    double value; /* leaves */
    double cover; /* XGBoost sum_hessian, LightGBM count: SHAP's weights */
    int32_t left, right; /* absolute indexes; -1 for a leaf */
    int32_t feat;
    uint8_t nan_left, zero, zero_left;
};

/* The padded, complete trees' internal nodes are three parallel arrays (children of i at 2i+1
 * and 2i+2), not an array of structs: each is then indexed by the x86 addressing mode itself
 * (scale 8, 4, 1), which saves three instructions a step of the inner loop. */
enum { DF_NAN_LEFT = 1, DF_ZERO = 2, DF_ZERO_LEFT = 4 };

enum link { LINK_IDENTITY, LINK_XGB_SIGMOID, LINK_SIGMOID };

struct shap_el {
    int32_t feat;
    double zero, one, w;
};

struct rf_trees_s {
    enum rf_trees_library lib;
    uint64_t content_hash; /* FNV-1a 64 of the file's bytes */
    int nf;
    char **names; /* nf entries or NULL */
    int n_trees;
    int32_t *root;  /* per tree */
    int32_t *depth; /* per tree */
    struct tnode *nodes;
    int n_nodes;
    int max_depth;
    /* the dense form: per tree, offsets into dn/dleaf, or -1 when walked */
    int32_t *doff, *loff;
    double *dthr;
    int32_t *dfeat;
    uint8_t *dflag;
    double *dleaf;
    int n_dense;
    int dd; /* the depth every dense tree is padded to */
    int has_zero; /* some node is LightGBM zero-as-missing */
    enum link link;
    double sigmoid_s;   /* LightGBM's sigmoid:s */
    int average;        /* LightGBM's average_output */
    float base_f;       /* XGBoost's base margin (float) */
    double expected;    /* Σ trees' expected values (SHAP's phi[nf], before the base) */
    double *mean;       /* per node: the cover-weighted mean of its leaves (path attribution) */
    /* scratch */
    double *xr;
    float *accf;
    double *accd;
    double *shap_x;
    struct shap_el *path;
};

/* A double as XGBoost's float: beyond float's range it is ±inf (a plain conversion would be
 * undefined behaviour there), NaN stays NaN. */
static inline float to_float(double x) {
    const double mid = (double)FLT_MAX + 0x1p103; /* FLT_MAX + half its ulp: rounds to inf */
    if (x >= mid)
        return INFINITY;
    if (x <= -mid)
        return -INFINITY;
    if (x > FLT_MAX || x < -FLT_MAX) /* rounds to ±FLT_MAX */
        return x > 0 ? FLT_MAX : -FLT_MAX;
    return (float)x;
}

/* ---- the one node test ---- */

static inline int goes_left(double v, double thr, int nan_left, int zero, int zero_left) {
    int isn = v != v;
    int z = zero & (v == 0.0);
    int lt = v < thr;
    return (isn & nan_left) | (z & zero_left) | ((!z) & lt);
}

/* The row as the library compares it. Returns whether it holds a NaN. */
static int transform_row(const rf_trees_t *t, const double *x, double *xr) {
    int nan = 0;
    if (t->lib == RF_TREES_XGBOOST) {
        for (int i = 0; i < t->nf; i++) {
            xr[i] = (double)to_float(x[i]);
            nan |= xr[i] != xr[i];
        }
    } else {
        for (int i = 0; i < t->nf; i++) {
            xr[i] = fabs(x[i]) <= (double)1e-35f ? 0.0 : x[i];
            nan |= xr[i] != xr[i];
        }
    }
    return nan;
}

/* ---- building ---- */

void rf_trees_destroy(rf_trees_t *t) {
    if (!t)
        return;
    if (t->names) {
        for (int i = 0; i < t->nf; i++)
            free(t->names[i]);
        free(t->names);
    }
    free(t->root);
    free(t->depth);
    free(t->nodes);
    free(t->doff);
    free(t->loff);
    free(t->dthr);
    free(t->dfeat);
    free(t->dflag);
    free(t->dleaf);
    free(t->xr);
    free(t->accf);
    free(t->accd);
    free(t->shap_x);
    free(t->path);
    free(t->mean);
    free(t);
}

/* Depth of the subtree at n (a leaf is 0); -1 past RF_TREES_DEPTH_MAX, -2 for a child index
 * outside [lo, hi), -3 for a node reached twice (a cycle, or two parents: walking such a
 * "tree" could take exponential time, so it is refused before anything else walks it). */
static int subtree_depth(const struct tnode *nodes, uint8_t *seen, int32_t n, int32_t lo,
                         int32_t hi, int level) {
    if (level > RF_TREES_DEPTH_MAX)
        return -1;
    if (seen[n - lo])
        return -3;
    seen[n - lo] = 1;
    const struct tnode *nd = &nodes[n];
    if (nd->left < 0)
        return 0;
    if (nd->left < lo || nd->left >= hi || nd->right < lo || nd->right >= hi)
        return -2;
    int a = subtree_depth(nodes, seen, nd->left, lo, hi, level + 1);
    if (a < 0)
        return a;
    int b = subtree_depth(nodes, seen, nd->right, lo, hi, level + 1);
    if (b < 0)
        return b;
    return 1 + (a > b ? a : b);
}

/* Expected value (cover-weighted mean of the leaves) of the subtree at n, stored for every
 * node of it in mean[] (absolute indexes). */
static double subtree_mean(const struct tnode *nodes, int32_t n, double *mean) {
    const struct tnode *nd = &nodes[n];
    if (nd->left < 0)
        return mean[n] = nd->value;
    const struct tnode *l = &nodes[nd->left], *r = &nodes[nd->right];
    double ml = subtree_mean(nodes, nd->left, mean), mr = subtree_mean(nodes, nd->right, mean);
    if (!(nd->cover > 0.0))
        return mean[n] = 0.5 * (ml + mr);
    return mean[n] = (l->cover * ml + r->cover * mr) / nd->cover;
}

static void pad_fill(rf_trees_t *t, int tree, int32_t n, int pos, int level, int d) {
    const struct tnode *nd = &t->nodes[n];
    if (level == d) {
        t->dleaf[t->loff[tree] + pos - ((1 << d) - 1)] = nd->value;
        return;
    }
    size_t at = (size_t)t->doff[tree] + (size_t)pos;
    if (nd->left < 0) {
        /* A shallow leaf: both ways lead to copies of it. */
        t->dthr[at] = 0;
        t->dfeat[at] = 0;
        t->dflag[at] = 0;
        pad_fill(t, tree, n, 2 * pos + 1, level + 1, d);
        pad_fill(t, tree, n, 2 * pos + 2, level + 1, d);
        return;
    }
    t->dthr[at] = nd->thr;
    t->dfeat[at] = nd->feat;
    t->dflag[at] = (uint8_t)((nd->nan_left ? DF_NAN_LEFT : 0) | (nd->zero ? DF_ZERO : 0) |
                             (nd->zero_left ? DF_ZERO_LEFT : 0));
    pad_fill(t, tree, nd->left, 2 * pos + 1, level + 1, d);
    pad_fill(t, tree, nd->right, 2 * pos + 2, level + 1, d);
}

/* After the parser filled nodes/root/n_trees/nf: checks the structure, computes depths and
 * expected values, builds the dense form and the scratch. */
static int finish(rf_trees_t *t, const int32_t *tree_end, int dense_depth, const char *where,
                  char *errstr, size_t size) {
    t->depth = calloc((size_t)t->n_trees + 1, sizeof *t->depth);
    t->mean = calloc((size_t)t->n_nodes + 1, sizeof *t->mean);
    t->doff = calloc((size_t)t->n_trees + 1, sizeof *t->doff);
    t->loff = calloc((size_t)t->n_trees + 1, sizeof *t->loff);
    if (!t->depth || !t->doff || !t->loff || !t->mean)
        goto nomem;
    size_t n_int = 0, n_leaf = 0;
    for (int k = 0; k < t->n_trees; k++) {
        int32_t lo = t->root[k], hi = tree_end[k];
        for (int32_t i = lo; i < hi; i++) {
            const struct tnode *nd = &t->nodes[i];
            if (nd->left >= 0 && (nd->feat < 0 || nd->feat >= t->nf)) {
                rf_errf(errstr, size, where, "tree %d node %d: feature %d, the model has %d", k,
                        i - lo, nd->feat, t->nf);
                return -1;
            }
            if (nd->left >= 0 && nd->zero)
                t->has_zero = 1;
            if (nd->left < 0 ? !isfinite(nd->value) : isnan(nd->thr)) {
                rf_errf(errstr, size, where, "tree %d node %d: a non-finite %s", k, i - lo,
                        nd->left < 0 ? "leaf value" : "threshold");
                return -1;
            }
        }
        uint8_t *seen = calloc((size_t)(hi - lo), 1);
        if (!seen)
            goto nomem;
        int d = subtree_depth(t->nodes, seen, lo, lo, hi, 0);
        free(seen);
        if (d < 0) {
            rf_errf(errstr, size, where, "tree %d: %s", k,
                    d == -2 ? "a child index out of range"
                    : d == -3 ? "a node with two parents (a cycle?)"
                              : "deeper than " RF_STR(RF_TREES_DEPTH_MAX) " levels");
            return -1;
        }
        t->depth[k] = d;
        if (d > t->max_depth)
            t->max_depth = d;
        t->expected += subtree_mean(t->nodes, lo, t->mean);
        if (d <= dense_depth && d > t->dd)
            t->dd = d;
    }
    /* Every dense tree is padded to the deepest one's depth: one stride, one loop bound, so
     * eight trees can be walked side by side for a lone row. */
    size_t stride = ((size_t)1 << t->dd) - 1;
    for (int k = 0; k < t->n_trees; k++) {
        if (t->depth[k] <= dense_depth) {
            t->doff[k] = (int32_t)n_int;
            t->loff[k] = (int32_t)n_leaf;
            n_int += stride;
            n_leaf += stride + 1;
            t->n_dense++;
        } else {
            t->doff[k] = t->loff[k] = -1;
        }
    }
    if (n_int > NODES_MAX) {
        rf_errf(errstr, size, where, "padded trees over %d nodes: lower the dense depth",
                NODES_MAX);
        return -1;
    }
    t->dthr = calloc(n_int + 1, sizeof *t->dthr);
    t->dfeat = calloc(n_int + 1, sizeof *t->dfeat);
    t->dflag = calloc(n_int + 1, sizeof *t->dflag);
    t->dleaf = calloc(n_leaf + 1, sizeof *t->dleaf);
    if (!t->dthr || !t->dfeat || !t->dflag || !t->dleaf)
        goto nomem;
    for (int k = 0; k < t->n_trees; k++)
        if (t->doff[k] >= 0)
            pad_fill(t, k, t->root[k], 0, 0, t->dd);
    size_t md = (size_t)t->max_depth + 2;
    t->xr = calloc((size_t)RF_TREES_BATCH_MAX * (size_t)t->nf, sizeof *t->xr);
    t->accf = calloc(RF_TREES_BATCH_MAX, sizeof *t->accf);
    t->accd = calloc(RF_TREES_BATCH_MAX, sizeof *t->accd);
    t->shap_x = calloc((size_t)t->nf, sizeof *t->shap_x);
    t->path = calloc(md * (md + 1) / 2 + md, sizeof *t->path);
    if (!t->xr || !t->accf || !t->accd || !t->shap_x || !t->path)
        goto nomem;
    return 0;
nomem:
    rf_errf(errstr, size, where, "out of memory");
    return -1;
}

static int grow_nodes(rf_trees_t *t, size_t *cap, size_t need, const char *where, char *errstr,
                      size_t size) {
    if (need > NODES_MAX) {
        rf_errf(errstr, size, where, "more than %d nodes", NODES_MAX);
        return -1;
    }
    if (need <= *cap)
        return 0;
    size_t nc = *cap ? *cap : 1024;
    while (nc < need)
        nc *= 2;
    struct tnode *n = realloc(t->nodes, nc * sizeof *n);
    if (!n) {
        rf_errf(errstr, size, where, "out of memory");
        return -1;
    }
    t->nodes = n;
    *cap = nc;
    return 0;
}

static int set_names(rf_trees_t *t, int n, const char *const *names, const size_t *lens,
                     const char *where, char *errstr, size_t size) {
    t->names = calloc((size_t)n, sizeof *t->names);
    if (!t->names) {
        rf_errf(errstr, size, where, "out of memory");
        return -1;
    }
    for (int i = 0; i < n; i++) {
        if (lens[i] == 0 || lens[i] > NAME_MAX_LEN) {
            rf_errf(errstr, size, where, "feature %d: a name of 1 to %d bytes expected", i,
                    NAME_MAX_LEN);
            return -1;
        }
        t->names[i] = malloc(lens[i] + 1);
        if (!t->names[i]) {
            rf_errf(errstr, size, where, "out of memory");
            return -1;
        }
        memcpy(t->names[i], names[i], lens[i]);
        t->names[i][lens[i]] = 0;
        for (int j = 0; j < i; j++) {
            if (strcmp(t->names[j], t->names[i]) == 0) {
                rf_errf(errstr, size, where, "feature %d: duplicate name '%s'", i, t->names[i]);
                return -1;
            }
        }
    }
    return 0;
}

/* ---- XGBoost JSON ---- */

/* XGBoost writes its parameters as strings ("5E-1", "[2.865E-1]", "12"). */
static int xgb_param(json_t *obj, const char *key, double *out) {
    json_t *v = json_object_get(obj, key);
    if (json_is_number(v)) {
        *out = json_number_value(v);
        return 0;
    }
    const char *s = json_string_value(v);
    if (!s)
        return -1;
    if (*s == '[')
        s++;
    char *end;
    errno = 0;
    *out = strtod(s, &end);
    if (end == s || errno == ERANGE || (*end != 0 && !(*end == ']' && end[1] == 0)))
        return -1;
    return 0;
}

static json_t *xgb_array(json_t *tree, const char *key, size_t n) {
    json_t *a = json_object_get(tree, key);
    return json_is_array(a) && json_array_size(a) == n ? a : NULL;
}

static int xgb_tree(rf_trees_t *t, json_t *tree, int k, size_t *cap, int32_t *end,
                    const char *where, char *errstr, size_t size) {
    double num_nodes, leaf_vec = 1;
    json_t *tp = json_object_get(tree, "tree_param");
    if (xgb_param(tp, "num_nodes", &num_nodes) != 0 || num_nodes < 1 || num_nodes > NODES_MAX) {
        rf_errf(errstr, size, where, "trees[%d]: tree_param.num_nodes missing or out of range", k);
        return -1;
    }
    if (xgb_param(tp, "size_leaf_vector", &leaf_vec) == 0 && leaf_vec > 1) {
        rf_errf(errstr, size, where, "trees[%d]: vector leaves (multi-target) are not supported",
                k);
        return -1;
    }
    size_t n = (size_t)num_nodes;
    static const char *const keys[] = {"left_children", "right_children", "split_indices",
                                       "split_conditions", "default_left", "sum_hessian"};
    json_t *a[6];
    for (int i = 0; i < 6; i++) {
        a[i] = xgb_array(tree, keys[i], n);
        if (!a[i]) {
            rf_errf(errstr, size, where, "trees[%d].%s: missing, or not %zu entries", k, keys[i],
                    n);
            return -1;
        }
    }
    json_t *st = json_object_get(tree, "split_type");
    json_t *cats = json_object_get(tree, "categories_nodes");
    if (json_array_size(cats) > 0) {
        rf_errf(errstr, size, where, "trees[%d]: categorical splits are not supported", k);
        return -1;
    }
    int32_t base = (int32_t)t->n_nodes;
    if (grow_nodes(t, cap, (size_t)t->n_nodes + n, where, errstr, size) != 0)
        return -1;
    for (size_t i = 0; i < n; i++) {
        json_t *jl = json_array_get(a[0], i), *jr = json_array_get(a[1], i);
        json_t *jf = json_array_get(a[2], i), *jc = json_array_get(a[3], i);
        json_t *jd = json_array_get(a[4], i), *jh = json_array_get(a[5], i);
        if (!json_is_integer(jl) || !json_is_integer(jr) || !json_is_integer(jf) ||
            !json_is_number(jc) || !(json_is_integer(jd) || json_is_boolean(jd)) ||
            !json_is_number(jh)) {
            rf_errf(errstr, size, where, "trees[%d] node %zu: a field of the wrong type", k, i);
            return -1;
        }
        if (json_is_array(st) && json_integer_value(json_array_get(st, i)) != 0) {
            rf_errf(errstr, size, where, "trees[%d] node %zu: categorical splits are not supported",
                    k, i);
            return -1;
        }
        json_int_t l = json_integer_value(jl), r = json_integer_value(jr);
        struct tnode *nd = &t->nodes[base + (int32_t)i];
        memset(nd, 0, sizeof *nd);
        nd->cover = json_number_value(jh);
        float c = to_float(json_number_value(jc));
        if (l == -1) {
            nd->left = nd->right = -1;
            nd->value = (double)c;
            continue;
        }
        if (l < 0 || r < 0 || (size_t)l >= n || (size_t)r >= n) {
            rf_errf(errstr, size, where, "trees[%d] node %zu: a child index out of range", k, i);
            return -1;
        }
        nd->left = base + (int32_t)l;
        nd->right = base + (int32_t)r;
        json_int_t f = json_integer_value(jf);
        nd->feat = f < 0 || f > INT32_MAX ? -1 : (int32_t)f;
        nd->thr = (double)c;
        nd->nan_left =
            (uint8_t)(json_is_boolean(jd) ? json_is_true(jd) : json_integer_value(jd) != 0);
    }
    t->n_nodes += (int)n;
    t->root[k] = base;
    end[k] = (int32_t)t->n_nodes;
    return 0;
}

static float xgb_logit(float p) {
    return -logf(1.0f / p - 1.0f);
}

static rf_trees_t *parse_xgboost(rf_trees_t *t, const char *buf, size_t len, const char *where,
                                 int dense_depth, char *errstr, size_t size) {
    json_error_t jerr;
    int32_t *end = NULL;
    size_t cap = 0;
    json_t *root = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        rf_errf(errstr, size, where, "not valid JSON (truncated?): line %d column %d: %s",
                jerr.line, jerr.column, jerr.text);
        goto fail;
    }
    json_t *learner = json_object_get(root, "learner");
    json_t *gb = json_object_get(learner, "gradient_booster");
    json_t *mp = json_object_get(learner, "learner_model_param");
    if (!json_is_object(learner) || !json_is_object(gb) || !json_is_object(mp)) {
        rf_errf(errstr, size, where, "not an XGBoost model: no learner.gradient_booster and "
                                     "learner.learner_model_param");
        goto fail;
    }
    const char *gname = json_string_value(json_object_get(gb, "name"));
    if (!gname || strcmp(gname, "gbtree") != 0) {
        rf_errf(errstr, size, where, "booster '%s': only gbtree is supported (DART weights its "
                                     "trees, gblinear has none)", gname ? gname : "?");
        goto fail;
    }
    double num_class = 0, num_target = 1, num_feature, base_score;
    if (xgb_param(mp, "num_class", &num_class) != 0 || num_class > 1 ||
        (xgb_param(mp, "num_target", &num_target) == 0 && num_target > 1)) {
        rf_errf(errstr, size, where, "several classes or targets: one output is supported");
        goto fail;
    }
    if (xgb_param(mp, "num_feature", &num_feature) != 0 || num_feature < 1 ||
        num_feature > RF_TREES_FEATURES_MAX) {
        rf_errf(errstr, size, where, "learner_model_param.num_feature missing or over %d",
                RF_TREES_FEATURES_MAX);
        goto fail;
    }
    if (xgb_param(mp, "base_score", &base_score) != 0 || !isfinite(base_score)) {
        rf_errf(errstr, size, where, "learner_model_param.base_score missing or malformed");
        goto fail;
    }
    t->nf = (int)num_feature;
    const char *obj =
        json_string_value(json_object_get(json_object_get(learner, "objective"), "name"));
    if (!obj) {
        rf_errf(errstr, size, where, "learner.objective.name missing");
        goto fail;
    }
    int logistic = strcmp(obj, "binary:logistic") == 0 || strcmp(obj, "reg:logistic") == 0;
    if (logistic || strcmp(obj, "binary:logitraw") == 0) {
        if (!(base_score > 0.0 && base_score < 1.0)) {
            rf_errf(errstr, size, where, "base_score %g: a probability in (0, 1) expected",
                    base_score);
            goto fail;
        }
        t->base_f = xgb_logit(to_float(base_score));
        t->link = logistic ? LINK_XGB_SIGMOID : LINK_IDENTITY;
    } else if (strcmp(obj, "reg:squarederror") == 0) {
        t->base_f = to_float(base_score);
        t->link = LINK_IDENTITY;
    } else {
        rf_errf(errstr, size, where, "objective '%s' is not supported (binary:logistic, "
                                     "reg:logistic, binary:logitraw, reg:squarederror)", obj);
        goto fail;
    }
    json_t *fnames = json_object_get(learner, "feature_names");
    if (json_is_array(fnames) && json_array_size(fnames) > 0) {
        if (json_array_size(fnames) != (size_t)t->nf) {
            rf_errf(errstr, size, where, "feature_names: %zu names for %d features",
                    json_array_size(fnames), t->nf);
            goto fail;
        }
        const char *names[RF_TREES_FEATURES_MAX];
        size_t lens[RF_TREES_FEATURES_MAX];
        for (int i = 0; i < t->nf; i++) {
            json_t *s = json_array_get(fnames, (size_t)i);
            names[i] = json_string_value(s);
            lens[i] = json_string_length(s);
            if (!names[i]) {
                rf_errf(errstr, size, where, "feature_names[%d]: expected a string", i);
                goto fail;
            }
        }
        if (set_names(t, t->nf, names, lens, where, errstr, size) != 0)
            goto fail;
    }
    json_t *model = json_object_get(gb, "model");
    json_t *trees = json_object_get(model, "trees");
    json_t *info = json_object_get(model, "tree_info");
    double num_trees;
    if (!json_is_array(trees) ||
        xgb_param(json_object_get(model, "gbtree_model_param"), "num_trees", &num_trees) != 0 ||
        !(num_trees >= 1 && num_trees <= TREES_MAX) ||
        (size_t)num_trees != json_array_size(trees)) {
        rf_errf(errstr, size, where, "gradient_booster.model: trees missing, empty, over %d, or "
                                     "not num_trees of them", TREES_MAX);
        goto fail;
    }
    t->n_trees = (int)num_trees;
    for (int k = 0; k < t->n_trees; k++) {
        if (json_integer_value(json_array_get(info, (size_t)k)) != 0) {
            rf_errf(errstr, size, where, "tree_info[%d]: a tree of another class", k);
            goto fail;
        }
    }
    t->root = calloc((size_t)t->n_trees, sizeof *t->root);
    end = calloc((size_t)t->n_trees, sizeof *end);
    if (!t->root || !end) {
        rf_errf(errstr, size, where, "out of memory");
        goto fail;
    }
    for (int k = 0; k < t->n_trees; k++)
        if (xgb_tree(t, json_array_get(trees, (size_t)k), k, &cap, end, where, errstr, size) != 0)
            goto fail;
    json_decref(root);
    root = NULL;
    if (finish(t, end, dense_depth, where, errstr, size) != 0)
        goto fail;
    free(end);
    return t;
fail:
    json_decref(root);
    free(end);
    rf_trees_destroy(t);
    return NULL;
}

/* ---- LightGBM text ---- */

struct line {
    const char *p;
    size_t n;
};

/* The next line of [*pos, end) (without its '\n' or "\r\n"); 0 at the end. */
static int next_line(const char **pos, const char *end, struct line *l) {
    if (*pos >= end)
        return 0;
    const char *nl = memchr(*pos, '\n', (size_t)(end - *pos));
    const char *e = nl ? nl : end;
    l->p = *pos;
    l->n = (size_t)(e - *pos);
    if (l->n > 0 && l->p[l->n - 1] == '\r')
        l->n--;
    *pos = nl ? nl + 1 : end;
    return 1;
}

/* "key=value": the value when the line's key is `key`. */
static int kv(const struct line *l, const char *key, struct line *val) {
    size_t k = strlen(key);
    if (l->n <= k || memcmp(l->p, key, k) != 0 || l->p[k] != '=')
        return 0;
    val->p = l->p + k + 1;
    val->n = l->n - k - 1;
    return 1;
}

/* n space-separated numbers of a value into out (as doubles). -1 on a count or syntax error. */
static int lgb_numbers(const struct line *v, int n, double *out) {
    char tmp[64];
    const char *p = v->p, *e = v->p + v->n;
    for (int i = 0; i < n; i++) {
        while (p < e && *p == ' ')
            p++;
        const char *s = p;
        while (p < e && *p != ' ')
            p++;
        size_t len = (size_t)(p - s);
        if (len == 0 || len >= sizeof tmp)
            return -1;
        memcpy(tmp, s, len);
        tmp[len] = 0;
        char *stop;
        errno = 0;
        out[i] = strtod(tmp, &stop);
        if (*stop != 0 || errno == ERANGE)
            return -1;
    }
    while (p < e && *p == ' ')
        p++;
    return p == e ? 0 : -1;
}

struct lgb_tree {
    int num_leaves;
    int have;
    struct line f[9];
};

enum { LT_FEAT, LT_THR, LT_DT, LT_LEFT, LT_RIGHT, LT_VAL, LT_LCNT, LT_ICNT, LT_NCAT };
static const char *const lgb_keys[] = {"split_feature", "threshold", "decision_type",
                                       "left_child", "right_child", "leaf_value",
                                       "leaf_count", "internal_count", "num_cat"};

static int lgb_tree(rf_trees_t *t, const struct lgb_tree *lt, int k, size_t *cap, int32_t *end,
                    double *buf, const char *where, char *errstr, size_t size) {
    int nl = lt->num_leaves, ni = nl - 1;
    for (int i = 0; i < 9; i++) {
        /* A one-leaf tree has only leaf_value (and its count). */
        if (!(lt->have & (1 << i)) && (ni > 0 || i == LT_VAL)) {
            rf_errf(errstr, size, where, "Tree=%d: no %s (truncated?)", k, lgb_keys[i]);
            return -1;
        }
    }
    if (lt->have & (1 << LT_NCAT)) {
        double ncat;
        if (lgb_numbers(&lt->f[LT_NCAT], 1, &ncat) != 0 || ncat != 0) {
            rf_errf(errstr, size, where, "Tree=%d: categorical splits are not supported", k);
            return -1;
        }
    }
    int32_t base = (int32_t)t->n_nodes;
    if (grow_nodes(t, cap, (size_t)t->n_nodes + (size_t)ni + (size_t)nl, where, errstr, size) != 0)
        return -1;
    double *val = buf, *lcnt = buf + nl;
    if (lgb_numbers(&lt->f[LT_VAL], nl, val) != 0) {
        rf_errf(errstr, size, where, "Tree=%d: leaf_value: not %d numbers", k, nl);
        return -1;
    }
    if (!(lt->have & (1 << LT_LCNT)) || lgb_numbers(&lt->f[LT_LCNT], nl, lcnt) != 0) {
        if (ni > 0) {
            rf_errf(errstr, size, where, "Tree=%d: leaf_count: not %d numbers", k, nl);
            return -1;
        }
        lcnt[0] = 1;
    }
    /* Leaves after the internal nodes: leaf j at base + ni + j. */
    for (int j = 0; j < nl; j++) {
        struct tnode *nd = &t->nodes[base + ni + j];
        memset(nd, 0, sizeof *nd);
        nd->left = nd->right = -1;
        nd->value = val[j];
        nd->cover = lcnt[j];
    }
    if (ni > 0) {
        double *a[6];
        static const int which[6] = {LT_FEAT, LT_THR, LT_DT, LT_LEFT, LT_RIGHT, LT_ICNT};
        for (int i = 0; i < 6; i++) {
            a[i] = buf + 2 * nl + (size_t)i * (size_t)ni;
            if (lgb_numbers(&lt->f[which[i]], ni, a[i]) != 0) {
                rf_errf(errstr, size, where, "Tree=%d: %s: not %d numbers", k,
                        lgb_keys[which[i]], ni);
                return -1;
            }
        }
        for (int i = 0; i < ni; i++) {
            struct tnode *nd = &t->nodes[base + i];
            memset(nd, 0, sizeof *nd);
            if (!(a[2][i] >= 0 && a[2][i] <= 15) || a[2][i] != (int)a[2][i]) {
                rf_errf(errstr, size, where, "Tree=%d node %d: decision_type %g", k, i, a[2][i]);
                return -1;
            }
            int dt = (int)a[2][i];
            if (dt & 1) {
                rf_errf(errstr, size, where, "Tree=%d node %d: categorical splits are not "
                                             "supported", k, i);
                return -1;
            }
            int dl = (dt >> 1) & 1, mt = (dt >> 2) & 3;
            if (mt == 3) {
                rf_errf(errstr, size, where, "Tree=%d node %d: unknown missing type", k, i);
                return -1;
            }
            double thr = a[1][i];
            nd->thr = nextafter(thr, INFINITY); /* x <= thr  <=>  x < next(thr) */
            nd->feat = a[0][i] >= 0 && a[0][i] < INT32_MAX && a[0][i] == (int32_t)a[0][i]
                           ? (int32_t)a[0][i] : -1;
            nd->zero = (uint8_t)(mt == 1);
            nd->zero_left = (uint8_t)dl;
            nd->nan_left = (uint8_t)(mt == 0 ? 0.0 <= thr : dl);
            nd->cover = a[5][i];
            for (int s = 0; s < 2; s++) {
                double c = a[3 + s][i];
                int32_t to;
                /* The range first: converting an out-of-range double to int is undefined. */
                if (!(c >= -nl && c < ni) || c != (int32_t)c) {
                    rf_errf(errstr, size, where, "Tree=%d node %d: child %g out of range", k, i, c);
                    return -1;
                }
                to = c >= 0 ? base + (int32_t)c : base + ni + ~(int32_t)c;
                if (s == 0)
                    nd->left = to;
                else
                    nd->right = to;
            }
        }
    }
    t->n_nodes += ni + nl;
    t->root[k] = base;
    end[k] = (int32_t)t->n_nodes;
    return 0;
}

static rf_trees_t *parse_lightgbm(rf_trees_t *t, const char *buf, size_t len, const char *where,
                                  int dense_depth, char *errstr, size_t size) {
    const char *pos = buf, *end_buf = buf + len;
    struct line l, v;
    int32_t *end = NULL;
    double *nums = NULL;
    size_t cap = 0, tcap = 0;
    int max_feature_idx = -1, saw_objective = 0, ended = 0;
    struct line names = {0};
    t->sigmoid_s = 1.0;
    /* The header, up to the first tree. */
    while (next_line(&pos, end_buf, &l)) {
        if (l.n >= 5 && memcmp(l.p, "Tree=", 5) == 0) {
            pos = l.p;
            break;
        }
        if (kv(&l, "num_class", &v) || kv(&l, "num_tree_per_iteration", &v)) {
            if (v.n != 1 || v.p[0] != '1') {
                rf_errf(errstr, size, where, "several classes: one output is supported");
                goto fail;
            }
        } else if (kv(&l, "max_feature_idx", &v)) {
            double m;
            if (lgb_numbers(&v, 1, &m) != 0 || m < 0 || m >= RF_TREES_FEATURES_MAX) {
                rf_errf(errstr, size, where, "max_feature_idx: expected 0..%d",
                        RF_TREES_FEATURES_MAX - 1);
                goto fail;
            }
            max_feature_idx = (int)m;
        } else if (kv(&l, "objective", &v)) {
            char obj[128];
            size_t n = v.n < sizeof obj - 1 ? v.n : sizeof obj - 1;
            memcpy(obj, v.p, n);
            obj[n] = 0;
            char *sp = strchr(obj, ' ');
            if (sp)
                *sp = 0;
            saw_objective = 1;
            if (strcmp(obj, "binary") == 0) {
                t->link = LINK_SIGMOID;
                const char *s = sp ? strstr(sp + 1, "sigmoid:") : NULL;
                if (s) {
                    char *stop;
                    t->sigmoid_s = strtod(s + 8, &stop);
                    if (!(t->sigmoid_s > 0) || !isfinite(t->sigmoid_s)) {
                        rf_errf(errstr, size, where, "objective: bad sigmoid parameter");
                        goto fail;
                    }
                }
            } else if (strcmp(obj, "cross_entropy") == 0 || strcmp(obj, "xentropy") == 0) {
                t->link = LINK_SIGMOID;
            } else if (strcmp(obj, "regression") == 0 || strcmp(obj, "regression_l1") == 0 ||
                       strcmp(obj, "huber") == 0 || strcmp(obj, "quantile") == 0) {
                t->link = LINK_IDENTITY;
            } else {
                rf_errf(errstr, size, where, "objective '%s' is not supported (binary, "
                                             "cross_entropy, regression, regression_l1, huber, "
                                             "quantile)", obj);
                goto fail;
            }
        } else if (kv(&l, "feature_names", &v)) {
            names = v;
        } else if (l.n == 14 && memcmp(l.p, "average_output", 14) == 0) {
            t->average = 1;
        } else if (kv(&l, "linear_tree", &v) && !(v.n == 1 && v.p[0] == '0')) {
            rf_errf(errstr, size, where, "linear trees are not supported");
            goto fail;
        }
    }
    if (max_feature_idx < 0 || !saw_objective) {
        rf_errf(errstr, size, where, "no max_feature_idx or objective in the header "
                                     "(truncated, or not a LightGBM model)");
        goto fail;
    }
    t->nf = max_feature_idx + 1;
    if (names.p) {
        const char *np[RF_TREES_FEATURES_MAX];
        size_t nlen[RF_TREES_FEATURES_MAX];
        int n = 0;
        const char *p = names.p, *e = names.p + names.n;
        while (p < e) {
            const char *s = p;
            while (p < e && *p != ' ')
                p++;
            if (n == t->nf) {
                n++;
                break;
            }
            np[n] = s;
            nlen[n++] = (size_t)(p - s);
            if (p < e)
                p++;
        }
        if (n != t->nf) {
            rf_errf(errstr, size, where, "feature_names: %d names for %d features", n, t->nf);
            goto fail;
        }
        if (set_names(t, n, np, nlen, where, errstr, size) != 0)
            goto fail;
    }
    /* The trees, each a block of key=value lines from "Tree=k" to a blank line. */
    while (next_line(&pos, end_buf, &l)) {
        if (l.n == 0)
            continue;
        if (l.n == 12 && memcmp(l.p, "end of trees", 12) == 0) {
            ended = 1;
            break;
        }
        if (!kv(&l, "Tree", &v)) {
            rf_errf(errstr, size, where, "expected 'Tree=%d' or 'end of trees'", t->n_trees);
            goto fail;
        }
        if (t->n_trees == TREES_MAX) {
            rf_errf(errstr, size, where, "more than %d trees", TREES_MAX);
            goto fail;
        }
        struct lgb_tree lt = {0};
        while (next_line(&pos, end_buf, &l) && l.n > 0) {
            if (kv(&l, "num_leaves", &v)) {
                double nl;
                if (lgb_numbers(&v, 1, &nl) != 0 || nl < 1 || nl > NODES_MAX / 2) {
                    rf_errf(errstr, size, where, "Tree=%d: num_leaves out of range", t->n_trees);
                    goto fail;
                }
                lt.num_leaves = (int)nl;
            } else if (kv(&l, "is_linear", &v) && !(v.n == 1 && v.p[0] == '0')) {
                rf_errf(errstr, size, where, "Tree=%d: linear leaves are not supported",
                        t->n_trees);
                goto fail;
            }
            for (int i = 0; i < 9; i++) {
                if (kv(&l, lgb_keys[i], &lt.f[i])) {
                    lt.have |= 1 << i;
                    break;
                }
            }
        }
        if (lt.num_leaves == 0) {
            rf_errf(errstr, size, where, "Tree=%d: no num_leaves (truncated?)", t->n_trees);
            goto fail;
        }
        if ((size_t)t->n_trees == tcap) {
            size_t nc = tcap ? 2 * tcap : 64;
            int32_t *r = realloc(t->root, nc * sizeof *r);
            if (r)
                t->root = r;
            int32_t *e = r ? realloc(end, nc * sizeof *e) : NULL;
            if (!r || !e) {
                rf_errf(errstr, size, where, "out of memory");
                goto fail;
            }
            end = e;
            tcap = nc;
        }
        double *nb = realloc(nums, (size_t)(2 * lt.num_leaves + 6 * lt.num_leaves) * sizeof *nb);
        if (!nb) {
            rf_errf(errstr, size, where, "out of memory");
            goto fail;
        }
        nums = nb;
        if (lgb_tree(t, &lt, t->n_trees, &cap, end, nums, where, errstr, size) != 0)
            goto fail;
        t->n_trees++;
    }
    if (!ended || t->n_trees == 0) {
        rf_errf(errstr, size, where, "%s after %d trees (truncated?)",
                ended ? "no trees" : "no 'end of trees'", t->n_trees);
        goto fail;
    }
    free(nums);
    nums = NULL;
    if (finish(t, end, dense_depth, where, errstr, size) != 0)
        goto fail;
    free(end);
    return t;
fail:
    free(nums);
    free(end);
    rf_trees_destroy(t);
    return NULL;
}

rf_trees_t *rf_trees_parse(const char *buf, size_t len, const char *where, int dense_depth,
                           char *errstr, size_t size) {
    size_t i = 0;
    while (i < len && (buf[i] == ' ' || buf[i] == '\t' || buf[i] == '\r' || buf[i] == '\n'))
        i++;
    rf_trees_t *t = calloc(1, sizeof *t);
    if (!t) {
        rf_errf(errstr, size, where, "out of memory");
        return NULL;
    }
    t->content_hash = rf_fnv1a64(buf, len);
    if (dense_depth > RF_TREES_DEPTH_MAX / 4)
        dense_depth = RF_TREES_DEPTH_MAX / 4;
    if (i < len && buf[i] == '{') {
        t->lib = RF_TREES_XGBOOST;
        return parse_xgboost(t, buf, len, where, dense_depth, errstr, size);
    }
    if (len - i >= 5 && memcmp(buf + i, "tree", 4) == 0 &&
        (buf[i + 4] == '\n' || buf[i + 4] == '\r')) {
        t->lib = RF_TREES_LIGHTGBM;
        return parse_lightgbm(t, buf + i, len - i, where, dense_depth, errstr, size);
    }
    free(t);
    rf_errf(errstr, size, where, "neither an XGBoost JSON model nor a LightGBM text model");
    return NULL;
}

rf_trees_t *rf_trees_load(const char *path, int dense_depth, char *errstr, size_t size) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        rf_errf(errstr, size, path, "%s", strerror(errno));
        return NULL;
    }
    char *buf = NULL;
    size_t len = 0, cap = 0;
    for (;;) {
        if (len == cap) {
            size_t nc = cap ? 2 * cap : 1 << 16;
            char *nb = nc > (size_t)1 << 31 ? NULL : realloc(buf, nc);
            if (!nb) {
                fclose(f);
                free(buf);
                rf_errf(errstr, size, path, "out of memory (or over 2 GiB)");
                return NULL;
            }
            buf = nb;
            cap = nc;
        }
        size_t got = fread(buf + len, 1, cap - len, f);
        len += got;
        if (got == 0)
            break;
    }
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        free(buf);
        rf_errf(errstr, size, path, "read error");
        return NULL;
    }
    rf_trees_t *t = rf_trees_parse(buf, len, path, dense_depth, errstr, size);
    free(buf);
    return t;
}

/* ---- accessors ---- */

enum rf_trees_library rf_trees_library(const rf_trees_t *t) {
    return t->lib;
}
uint64_t rf_trees_content_hash(const rf_trees_t *t) {
    return t->content_hash;
}
int rf_trees_n_features(const rf_trees_t *t) {
    return t->nf;
}
const char *rf_trees_feature_name(const rf_trees_t *t, int i) {
    return t->names && i >= 0 && i < t->nf ? t->names[i] : NULL;
}
int rf_trees_n_trees(const rf_trees_t *t) {
    return t->n_trees;
}
int rf_trees_max_depth(const rf_trees_t *t) {
    return t->max_depth;
}
int rf_trees_n_dense(const rf_trees_t *t) {
    return t->n_dense;
}
int rf_trees_is_probability(const rf_trees_t *t) {
    return t->link != LINK_IDENTITY;
}

/* ---- scoring ---- */

/* The modes of the dense kernel, from the cheapest test to the full one. */
enum { TEST_PLAIN, TEST_NAN, TEST_FULL };

/* One level of a padded tree whose nodes start at b: node i → child 2i+1 or 2i+2. MODE is
 * a constant where this expands, so only one of the three tests is compiled in. */
#define STEP_AT(i, x, b)                                                                  \
    do {                                                                                  \
        size_t at_ = (b) + i;                                                             \
        double v_ = (x)[feat[at_]];                                                       \
        size_t l_;                                                                        \
        if (MODE == TEST_FULL)                                                            \
            l_ = (size_t)goes_left(v_, thr[at_], flag[at_] & DF_NAN_LEFT,                 \
                                   (flag[at_] >> 1) & 1, (flag[at_] >> 2) & 1);           \
        else if (MODE == TEST_NAN)                                                        \
            l_ = (size_t)((v_ < thr[at_]) | (flag[at_] & DF_NAN_LEFT & (v_ != v_)));        \
        else                                                                              \
            l_ = (size_t)(v_ < thr[at_]);                                                 \
        i = 2 * i + 2 - l_;                                                               \
    } while (0)
#define STEP(i, x) STEP_AT(i, x, 0)

/* One padded tree over n rows, leaf values into leaf[]: level-synchronous, eight rows at a time
 * with their indexes in registers (eight independent chains of loads for the core to overlap),
 * no branch on the data. MODE (a constant, so each call site gets its own copy): TEST_PLAIN
 * when the batch holds no NaN and the model no zero-as-missing node — the test is one compare;
 * TEST_NAN adds the NaN direction; TEST_FULL is goes_left() itself. */
static inline __attribute__((always_inline)) void dense_tree(
    const double *thr, const int32_t *feat, const uint8_t *flag, const double *dl, int d,
    const double *xr, int nf, int n, double *leaf, const int MODE) {
    /* n is a multiple of 8 (the rest of a batch goes row by row, add_row()). */
    const size_t first = ((size_t)1 << d) - 1;
    int r = 0;
    for (; r + 8 <= n; r += 8) {
        const double *x0 = xr + (size_t)r * (size_t)nf, *x1 = x0 + nf, *x2 = x1 + nf,
                     *x3 = x2 + nf, *x4 = x3 + nf, *x5 = x4 + nf, *x6 = x5 + nf, *x7 = x6 + nf;
        size_t i0 = 0, i1 = 0, i2 = 0, i3 = 0, i4 = 0, i5 = 0, i6 = 0, i7 = 0;
        for (int lv = 0; lv < d; lv++) {
            STEP(i0, x0);
            STEP(i1, x1);
            STEP(i2, x2);
            STEP(i3, x3);
            STEP(i4, x4);
            STEP(i5, x5);
            STEP(i6, x6);
            STEP(i7, x7);
        }
        leaf[r] = dl[i0 - first];
        leaf[r + 1] = dl[i1 - first];
        leaf[r + 2] = dl[i2 - first];
        leaf[r + 3] = dl[i3 - first];
        leaf[r + 4] = dl[i4 - first];
        leaf[r + 5] = dl[i5 - first];
        leaf[r + 6] = dl[i6 - first];
        leaf[r + 7] = dl[i7 - first];
    }
}

static inline void add_leaf(rf_trees_t *t, int r, double v) {
    if (t->lib == RF_TREES_XGBOOST)
        t->accf[r] += (float)v;
    else
        t->accd[r] += v;
}

static double walk(const rf_trees_t *t, int k, const double *row) {
    const struct tnode *nodes = t->nodes;
    int32_t i = t->root[k];
    while (nodes[i].left >= 0) {
        const struct tnode *nd = &nodes[i];
        i = goes_left(row[nd->feat], nd->thr, nd->nan_left, nd->zero, nd->zero_left) ? nd->left
                                                                                      : nd->right;
    }
    return nodes[i].value;
}

/* Tree k over rows [0, n) (n a multiple of 8), added into the accumulators. */
static void add_tree(rf_trees_t *t, int k, int n, int mode) {
    const int nf = t->nf;
    const double *xr = t->xr;
    double leaf[RF_TREES_BATCH_MAX];
    if (t->doff[k] >= 0) {
        size_t o = (size_t)t->doff[k];
        const double *th = t->dthr + o, *dl = t->dleaf + t->loff[k];
        const int32_t *fe = t->dfeat + o;
        const uint8_t *fl = t->dflag + o;
        if (mode == TEST_PLAIN)
            dense_tree(th, fe, fl, dl, t->dd, xr, nf, n, leaf, TEST_PLAIN);
        else if (mode == TEST_NAN)
            dense_tree(th, fe, fl, dl, t->dd, xr, nf, n, leaf, TEST_NAN);
        else
            dense_tree(th, fe, fl, dl, t->dd, xr, nf, n, leaf, TEST_FULL);
    } else {
        for (int r = 0; r < n; r++)
            leaf[r] = walk(t, k, xr + (size_t)r * (size_t)nf);
    }
    for (int r = 0; r < n; r++)
        add_leaf(t, r, leaf[r]);
}

/* Eight consecutive dense trees from k for one row, side by side (the lone-row case: eight
 * independent chains instead of one), their leaves into lv[8]. */
static inline __attribute__((always_inline)) void dense_8trees(const rf_trees_t *t, int k,
                                                               const double *x0, double *lv,
                                                               const int MODE) {
    const size_t stride = ((size_t)1 << t->dd) - 1, o = (size_t)t->doff[k];
    const double *thr = t->dthr + o;
    const int32_t *feat = t->dfeat + o;
    const uint8_t *flag = t->dflag + o;
    size_t i0 = 0, i1 = 0, i2 = 0, i3 = 0, i4 = 0, i5 = 0, i6 = 0, i7 = 0;
    for (int l = 0; l < t->dd; l++) {
        STEP_AT(i0, x0, 0);
        STEP_AT(i1, x0, stride);
        STEP_AT(i2, x0, 2 * stride);
        STEP_AT(i3, x0, 3 * stride);
        STEP_AT(i4, x0, 4 * stride);
        STEP_AT(i5, x0, 5 * stride);
        STEP_AT(i6, x0, 6 * stride);
        STEP_AT(i7, x0, 7 * stride);
    }
    /* Tree j's leaves start at j·(stride + 1); a final index i is leaf i - stride. */
    const double *dl = t->dleaf + t->loff[k] - stride;
    const size_t ls = stride + 1;
    lv[0] = dl[i0];
    lv[1] = dl[ls + i1];
    lv[2] = dl[2 * ls + i2];
    lv[3] = dl[3 * ls + i3];
    lv[4] = dl[4 * ls + i4];
    lv[5] = dl[5 * ls + i5];
    lv[6] = dl[6 * ls + i6];
    lv[7] = dl[7 * ls + i7];
}

/* Row r through every tree, in tree order. */
static void add_row(rf_trees_t *t, int r, int mode) {
    const double *x = t->xr + (size_t)r * (size_t)t->nf;
    const size_t stride = ((size_t)1 << t->dd) - 1;
    double lv[8];
    int k = 0;
    while (k < t->n_trees) {
        if (k + 8 <= t->n_trees && t->doff[k] >= 0 && t->doff[k + 7] >= 0 &&
            (size_t)(t->doff[k + 7] - t->doff[k]) == 7 * stride) {
            if (mode == TEST_PLAIN)
                dense_8trees(t, k, x, lv, TEST_PLAIN);
            else if (mode == TEST_NAN)
                dense_8trees(t, k, x, lv, TEST_NAN);
            else
                dense_8trees(t, k, x, lv, TEST_FULL);
            for (int j = 0; j < 8; j++)
                add_leaf(t, r, lv[j]);
            k += 8;
        } else if (t->doff[k] >= 0) {
            size_t o = (size_t)t->doff[k];
            const double *thr = t->dthr + o;
            const int32_t *feat = t->dfeat + o;
            const uint8_t *flag = t->dflag + o;
            size_t i = 0;
            for (int l = 0; l < t->dd; l++) {
                if (mode == TEST_FULL) {
                    const int MODE = TEST_FULL;
                    STEP(i, x);
                } else {
                    const int MODE = TEST_NAN;
                    STEP(i, x);
                }
            }
            add_leaf(t, r, t->dleaf[(size_t)t->loff[k] + i - stride]);
            k++;
        } else {
            add_leaf(t, r, walk(t, k, x));
            k++;
        }
    }
}

int rf_trees_margin(rf_trees_t *t, const double *x, int n, double *out) {
    if (!t || n < 0 || n > RF_TREES_BATCH_MAX || (n > 0 && (!x || !out)))
        return RF_E_INVAL;
    int nan = 0;
    for (int r = 0; r < n; r++) {
        nan |= transform_row(t, x + (size_t)r * (size_t)t->nf, t->xr + (size_t)r * (size_t)t->nf);
        t->accf[r] = t->base_f;
        t->accd[r] = 0.0;
    }
    int mode = t->has_zero ? TEST_FULL : nan ? TEST_NAN : TEST_PLAIN;
    int n8 = n & ~7;
    if (n8 > 0)
        for (int k = 0; k < t->n_trees; k++)
            add_tree(t, k, n8, mode);
    for (int r = n8; r < n; r++)
        add_row(t, r, mode);
    for (int r = 0; r < n; r++) {
        if (t->lib == RF_TREES_XGBOOST)
            out[r] = (double)t->accf[r];
        else
            out[r] = t->average ? t->accd[r] / t->n_trees : t->accd[r];
    }
    return 0;
}

/* XGBoost's float sigmoid (src/common/math.h), to the bit. */
static float xgb_sigmoid(float x) {
    const float eps = 1e-16f;
    float m = -x < 88.7f ? -x : 88.7f;
    float denom = expf(m) + 1.0f + eps;
    return 1.0f / denom;
}

int rf_trees_predict(rf_trees_t *t, const double *x, int n, double *out) {
    int rc = rf_trees_margin(t, x, n, out);
    if (rc != 0)
        return rc;
    for (int r = 0; r < n; r++) {
        if (t->link == LINK_XGB_SIGMOID)
            out[r] = (double)xgb_sigmoid((float)out[r]);
        else if (t->link == LINK_SIGMOID)
            out[r] = 1.0 / (1.0 + exp(-t->sigmoid_s * out[r]));
    }
    return 0;
}

/* ---- TreeSHAP ---- */

static void shap_extend(struct shap_el *p, int d, double zero, double one, int32_t feat) {
    p[d].feat = feat;
    p[d].zero = zero;
    p[d].one = one;
    p[d].w = d == 0 ? 1.0 : 0.0;
    for (int i = d - 1; i >= 0; i--) {
        p[i + 1].w += one * p[i].w * (i + 1) / (double)(d + 1);
        p[i].w = zero * p[i].w * (d - i) / (double)(d + 1);
    }
}

static void shap_unwind(struct shap_el *p, int d, int at) {
    double one = p[at].one, zero = p[at].zero, next = p[d].w;
    for (int i = d - 1; i >= 0; i--) {
        if (one != 0.0) {
            double tmp = p[i].w;
            p[i].w = next * (d + 1) / ((i + 1) * one);
            next = tmp - p[i].w * zero * (d - i) / (double)(d + 1);
        } else {
            p[i].w = p[i].w * (d + 1) / (zero * (d - i));
        }
    }
    for (int i = at; i < d; i++) {
        p[i].feat = p[i + 1].feat;
        p[i].zero = p[i + 1].zero;
        p[i].one = p[i + 1].one;
    }
}

static double shap_unwound_sum(const struct shap_el *p, int d, int at) {
    double one = p[at].one, zero = p[at].zero, next = p[d].w, total = 0.0;
    for (int i = d - 1; i >= 0; i--) {
        if (one != 0.0) {
            double tmp = next * (d + 1) / ((i + 1) * one);
            total += tmp;
            next = p[i].w - tmp * zero * ((d - i) / (double)(d + 1));
        } else if (zero != 0.0) {
            total += (p[i].w / zero) / ((d - i) / (double)(d + 1));
        }
    }
    return total;
}

static void shap_recurse(const rf_trees_t *t, int32_t n, const double *xr, double *phi,
                         struct shap_el *parent, int d, double pzero, double pone, int32_t pfeat) {
    struct shap_el *p = parent + d + 1;
    if (d > 0)
        memcpy(p, parent, (size_t)(d + 1) * sizeof *p);
    shap_extend(p, d, pzero, pone, pfeat);
    const struct tnode *nd = &t->nodes[n];
    if (nd->left < 0) {
        for (int i = 1; i <= d; i++) {
            double w = shap_unwound_sum(p, d, i);
            phi[p[i].feat] += w * (p[i].one - p[i].zero) * nd->value;
        }
        return;
    }
    int left = goes_left(xr[nd->feat], nd->thr, nd->nan_left, nd->zero, nd->zero_left);
    int32_t hot = left ? nd->left : nd->right, cold = left ? nd->right : nd->left;
    double w = nd->cover;
    double hot_zero = w > 0 ? t->nodes[hot].cover / w : 0.5;
    double cold_zero = w > 0 ? t->nodes[cold].cover / w : 0.5;
    double in_zero = 1.0, in_one = 1.0;
    int at = 0;
    while (at <= d && p[at].feat != nd->feat)
        at++;
    if (at != d + 1) {
        in_zero = p[at].zero;
        in_one = p[at].one;
        shap_unwind(p, d, at);
        d--;
    }
    shap_recurse(t, hot, xr, phi, p, d + 1, hot_zero * in_zero, in_one, nd->feat);
    shap_recurse(t, cold, xr, phi, p, d + 1, cold_zero * in_zero, 0.0, nd->feat);
}

/* Contributions of one row: TreeSHAP, or path attribution (path); the bias last. */
static int contribs(rf_trees_t *t, const double *x_row, double *phi, int path) {
    if (!t || !x_row || !phi)
        return RF_E_INVAL;
    transform_row(t, x_row, t->shap_x);
    for (int i = 0; i <= t->nf; i++)
        phi[i] = 0.0;
    for (int k = 0; k < t->n_trees; k++) {
        int32_t n = t->root[k];
        if (t->nodes[n].left < 0)
            continue; /* a lone leaf moves only the expected value */
        if (!path) {
            shap_recurse(t, n, t->shap_x, phi, t->path, 0, 1.0, 1.0, -1);
            continue;
        }
        /* Along the path, each step's change of expected value goes to its split's feature. */
        while (t->nodes[n].left >= 0) {
            const struct tnode *nd = &t->nodes[n];
            int32_t next = goes_left(t->shap_x[nd->feat], nd->thr, nd->nan_left, nd->zero,
                                     nd->zero_left) ? nd->left : nd->right;
            phi[nd->feat] += t->mean[next] - t->mean[n];
            n = next;
        }
    }
    phi[t->nf] = (t->lib == RF_TREES_XGBOOST ? (double)t->base_f : 0.0) + t->expected;
    if (t->average)
        for (int i = 0; i <= t->nf; i++)
            phi[i] /= t->n_trees;
    return 0;
}

int rf_trees_shap(rf_trees_t *t, const double *x_row, double *phi) {
    return contribs(t, x_row, phi, 0);
}

/* ---- path attribution ---- */

int rf_trees_path_contribs(rf_trees_t *t, const double *x_row, double *phi) {
    return contribs(t, x_row, phi, 1);
}
