/*
 * recurrent.c — safetensors loading and the batched GRU/LSTM step. See recurrent.h and
 * docs/MODELS.md §3. Loading runs once (allocation, file I/O, jansson); the step runs on the
 * loop thread per micro-batch and allocates nothing.
 */
#include "riskflow/recurrent.h"

#include <cblas.h>
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "riskflow/decl.h"
#include "riskflow/err.h"

#define FORMAT "riskflow.recurrent.v1"
#define FILE_MAX (64u << 20)   /* a model of our sizes is a few hundred KB */
#define HEADER_MAX (1u << 20)

struct rf_rnn_s {
    enum rf_rnn_cell cell;
    int F, H, G; /* features, hidden, gates (3 or 4) */
    float *w_ih, *w_hh, *b_ih, *b_hh, *head_w, *head_b;
    float mean[RF_RNN_FEATURES_MAX], scale[RF_RNN_FEATURES_MAX];
    char names[RF_RNN_FEATURES_MAX][RF_RNN_NAME_MAX];
    char version[RF_RNN_VERSION_MAX + 1];
    int horizon;
    int bar_type;     /* 0: not declared; RF_RNN_BARS_TIME or RF_RNN_BARS_TRADES */
    int64_t bar_len;  /* ms or trades */
    uint64_t sig;
    float *xs, *gi, *gh; /* scratch: [B × F], [B × GH], [B × GH] */
};

/* ---- safetensors ---- */

struct st_file {
    uint8_t *data;   /* the whole file */
    size_t len;
    size_t base;     /* where tensor bytes start: 8 + header length */
    json_t *header;
};

static void st_close(struct st_file *f) {
    free(f->data);
    json_decref(f->header);
}

static int st_open(struct st_file *f, const char *path, char *errstr, size_t size) {
    memset(f, 0, sizeof *f);
    FILE *fp = fopen(path, "rb");
    if (!fp) {
        rf_errf(errstr, size, path, "cannot open: %s", strerror(errno));
        return -1;
    }
    /* The size first, so a model costs its own bytes and a huge file is refused unread. */
    long flen = fseek(fp, 0, SEEK_END) == 0 ? ftell(fp) : -1;
    if (flen < 0 || fseek(fp, 0, SEEK_SET) != 0) {
        fclose(fp);
        rf_errf(errstr, size, path, "cannot size the file: %s", strerror(errno));
        return -1;
    }
    if ((unsigned long)flen > FILE_MAX) {
        fclose(fp);
        rf_errf(errstr, size, path, "%ld bytes, larger than %u MiB: not a model of ours", flen,
               FILE_MAX >> 20);
        return -1;
    }
    f->data = malloc((size_t)flen + 1);
    if (!f->data) {
        fclose(fp);
        rf_errf(errstr, size, path, "out of memory");
        return -1;
    }
    f->len = fread(f->data, 1, (size_t)flen, fp);
    int bad = ferror(fp) || f->len != (size_t)flen;
    fclose(fp);
    if (bad) {
        rf_errf(errstr, size, path, "read error");
        return -1;
    }
    if (f->len < 8) {
        rf_errf(errstr, size, path, "truncated: %zu bytes, shorter than the 8-byte header length",
               f->len);
        return -1;
    }
    uint64_t n = 0;
    for (int i = 0; i < 8; i++)
        n |= (uint64_t)f->data[i] << (8 * i);
    if (n > HEADER_MAX || n > f->len - 8) {
        rf_errf(errstr, size, path, "header length %llu does not fit the file (%zu bytes): "
               "truncated or not safetensors", (unsigned long long)n, f->len);
        return -1;
    }
    json_error_t jerr;
    f->header = json_loadb((const char *)f->data + 8, (size_t)n, JSON_REJECT_DUPLICATES, &jerr);
    if (!json_is_object(f->header)) {
        rf_errf(errstr, size, path, "header: %s", f->header ? "not a JSON object" : jerr.text);
        return -1;
    }
    f->base = 8 + (size_t)n;
    return 0;
}

/* A tensor as float32 into dst (n elements, shape checked). */
static int st_tensor(const struct st_file *f, const char *path, const char *name, int ndim,
                     const int64_t *shape, float *dst, char *errstr, size_t size) {
    json_t *t = json_object_get(f->header, name);
    if (!json_is_object(t)) {
        rf_errf(errstr, size, path, "missing tensor '%s'", name);
        return -1;
    }
    const char *dtype = json_string_value(json_object_get(t, "dtype"));
    json_t *jshape = json_object_get(t, "shape"), *offs = json_object_get(t, "data_offsets");
    int esize = dtype && strcmp(dtype, "F32") == 0 ? 4 : dtype && strcmp(dtype, "F64") == 0 ? 8 : 0;
    if (!esize) {
        rf_errf(errstr, size, path, "tensor '%s': dtype '%s', want F32 or F64", name,
               dtype ? dtype : "?");
        return -1;
    }
    if (!json_is_array(jshape) || (int)json_array_size(jshape) != ndim) {
        rf_errf(errstr, size, path, "tensor '%s': %d dimensions expected", name, ndim);
        return -1;
    }
    size_t count = 1;
    for (int d = 0; d < ndim; d++) {
        json_int_t v = json_integer_value(json_array_get(jshape, (size_t)d));
        if (!json_is_integer(json_array_get(jshape, (size_t)d)) || v != shape[d]) {
            rf_errf(errstr, size, path, "tensor '%s': dimension %d is %lld, want %lld", name, d,
                   (long long)v, (long long)shape[d]);
            return -1;
        }
        count *= (size_t)shape[d];
    }
    json_int_t b = json_integer_value(json_array_get(offs, 0));
    json_int_t e = json_integer_value(json_array_get(offs, 1));
    if (!json_is_array(offs) || json_array_size(offs) != 2 || b < 0 || e < b ||
        (size_t)(e - b) != count * (size_t)esize || (size_t)e > f->len - f->base) {
        rf_errf(errstr, size, path, "tensor '%s': data_offsets [%lld, %lld] do not hold %zu x %d "
               "bytes inside the file (truncated?)", name, (long long)b, (long long)e, count,
               esize);
        return -1;
    }
    const uint8_t *p = f->data + f->base + b;
    for (size_t i = 0; i < count; i++) {
        double v;
        if (esize == 4) {
            float fv;
            memcpy(&fv, p + 4 * i, 4); /* little-endian host: static-asserted in feat.c */
            v = fv;
        } else {
            memcpy(&v, p + 8 * i, 8);
        }
        if (!isfinite(v)) {
            rf_errf(errstr, size, path, "tensor '%s': element %zu is not finite", name, i);
            return -1;
        }
        dst[i] = (float)v;
    }
    return 0;
}

float *rf_safetensors_read(const char *path, const char *name, int64_t shape[4], int *ndim,
                           char *errstr, size_t size) {
    struct st_file f;
    float *out = NULL;
    if (st_open(&f, path, errstr, size) != 0)
        goto done;
    json_t *t = json_object_get(f.header, name);
    json_t *jshape = json_object_get(t, "shape");
    if (!json_is_array(jshape) || json_array_size(jshape) > 4) {
        rf_errf(errstr, size, path, "no tensor '%s' of at most 4 dimensions", name);
        goto done;
    }
    *ndim = (int)json_array_size(jshape);
    size_t count = 1;
    for (int d = 0; d < *ndim; d++) {
        shape[d] = json_integer_value(json_array_get(jshape, (size_t)d));
        if (shape[d] < 0 || shape[d] > (1 << 26)) {
            rf_errf(errstr, size, path, "tensor '%s': bad shape", name);
            goto done;
        }
        count *= (size_t)shape[d];
    }
    out = malloc(count ? count * sizeof *out : 1);
    if (!out || st_tensor(&f, path, name, *ndim, shape, out, errstr, size) != 0) {
        free(out);
        out = NULL;
    }
done:
    st_close(&f);
    return out;
}

/* ---- the model ---- */

void rf_rnn_destroy(rf_rnn_t *m) {
    if (!m)
        return;
    free(m->w_ih);
    free(m->w_hh);
    free(m->b_ih);
    free(m->b_hh);
    free(m->head_w);
    free(m->head_b);
    free(m->xs);
    free(m->gi);
    free(m->gh);
    free(m);
}

static const char *meta(const struct st_file *f, const char *key) {
    return json_string_value(json_object_get(json_object_get(f->header, "__metadata__"), key));
}

static int parse_meta(rf_rnn_t *m, const struct st_file *f, const char *path, char *errstr,
                      size_t size) {
    const char *format = meta(f, "format"), *cell = meta(f, "cell"), *version = meta(f, "version");
    const char *features = meta(f, "features"), *horizon = meta(f, "horizon_bars");
    if (!format || strcmp(format, FORMAT) != 0) {
        rf_errf(errstr, size, path, "__metadata__.format: '%s', want '" FORMAT "'",
               format ? format : "");
        return -1;
    }
    if (!cell || (strcmp(cell, "gru") != 0 && strcmp(cell, "lstm") != 0)) {
        rf_errf(errstr, size, path, "__metadata__.cell: '%s', want gru or lstm", cell ? cell : "");
        return -1;
    }
    m->cell = cell[0] == 'g' ? RF_RNN_GRU : RF_RNN_LSTM;
    m->G = m->cell == RF_RNN_GRU ? 3 : 4;
    if (!version || !*version || strlen(version) > RF_RNN_VERSION_MAX) {
        rf_errf(errstr, size, path, "__metadata__.version: 1 to %d characters expected",
               RF_RNN_VERSION_MAX);
        return -1;
    }
    memcpy(m->version, version, strlen(version) + 1);
    m->sig = rf_fnv1a64(version, strlen(version));
    char *end;
    long hz = horizon ? strtol(horizon, &end, 10) : 0;
    if (!horizon || *end || hz < 1 || hz > 1000000) {
        rf_errf(errstr, size, path, "__metadata__.horizon_bars: an integer >= 1 expected");
        return -1;
    }
    m->horizon = (int)hz;
    /* The bars it was trained on: optional, but when there the job holds the config to them. */
    const char *bt = meta(f, "bar_type");
    if (bt) {
        int trades = strcmp(bt, "trades") == 0;
        if (!trades && strcmp(bt, "time") != 0) {
            rf_errf(errstr, size, path, "__metadata__.bar_type: '%s', want time or trades", bt);
            return -1;
        }
        const char *key = trades ? "bar_trades" : "bar_ms", *bl = meta(f, key);
        long long len = bl ? strtoll(bl, &end, 10) : 0;
        if (!bl || *end || len < 1 || len > 86400000) {
            rf_errf(errstr, size, path, "__metadata__.%s: an integer >= 1 expected with bar_type "
                   "%s", key, bt);
            return -1;
        }
        m->bar_type = trades ? RF_RNN_BARS_TRADES : RF_RNN_BARS_TIME;
        m->bar_len = len;
    }
    m->F = 0;
    for (const char *p = features ? features : ""; *p;) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        if (m->F == RF_RNN_FEATURES_MAX || len == 0 || len >= RF_RNN_NAME_MAX) {
            rf_errf(errstr, size, path, "__metadata__.features: 1 to %d comma-separated names "
                   "of 1 to %d bytes expected", RF_RNN_FEATURES_MAX, RF_RNN_NAME_MAX - 1);
            return -1;
        }
        memcpy(m->names[m->F], p, len);
        m->names[m->F][len] = '\0';
        for (int j = 0; j < m->F; j++) {
            if (strcmp(m->names[j], m->names[m->F]) == 0) {
                rf_errf(errstr, size, path, "__metadata__.features: '%s' twice", m->names[j]);
                return -1;
            }
        }
        m->F++;
        p = comma ? comma + 1 : p + len;
    }
    if (m->F == 0) {
        rf_errf(errstr, size, path, "__metadata__.features: no feature");
        return -1;
    }
    return 0;
}

rf_rnn_t *rf_rnn_load(const char *path, char *errstr, size_t size) {
    struct st_file f;
    rf_rnn_t *m = calloc(1, sizeof *m);
    if (!m) {
        rf_errf(errstr, size, path, "out of memory");
        return NULL;
    }
    if (st_open(&f, path, errstr, size) != 0 || parse_meta(m, &f, path, errstr, size) != 0)
        goto fail;
    /* The hidden size from the recurrent weights' shape. */
    json_t *whh = json_object_get(json_object_get(f.header, "rnn.weight_hh_l0"), "shape");
    json_int_t gh = json_integer_value(json_array_get(whh, 0));
    if (gh <= 0 || gh % m->G != 0 || gh / m->G > RF_RNN_HIDDEN_MAX) {
        rf_errf(errstr, size, path, "rnn.weight_hh_l0: shape [%d*H, H] with 1 <= H <= %d expected",
               m->G, RF_RNN_HIDDEN_MAX);
        goto fail;
    }
    m->H = (int)(gh / m->G);
    int64_t GH = (int64_t)m->G * m->H, F = m->F, H = m->H;
    m->w_ih = malloc(sizeof(float) * (size_t)(GH * F));
    m->w_hh = malloc(sizeof(float) * (size_t)(GH * H));
    m->b_ih = malloc(sizeof(float) * (size_t)GH);
    m->b_hh = malloc(sizeof(float) * (size_t)GH);
    m->head_w = malloc(sizeof(float) * (size_t)(2 * H));
    m->head_b = malloc(sizeof(float) * 2);
    m->xs = malloc(sizeof(float) * (size_t)(RF_RNN_BATCH_MAX * F));
    m->gi = malloc(sizeof(float) * (size_t)(RF_RNN_BATCH_MAX * GH));
    m->gh = malloc(sizeof(float) * (size_t)(RF_RNN_BATCH_MAX * GH));
    float *mean = malloc(sizeof(float) * (size_t)F), *scale = malloc(sizeof(float) * (size_t)F);
    if (!m->w_ih || !m->w_hh || !m->b_ih || !m->b_hh || !m->head_w || !m->head_b || !m->xs ||
        !m->gi || !m->gh || !mean || !scale) {
        free(mean);
        free(scale);
        rf_errf(errstr, size, path, "out of memory");
        goto fail;
    }
    const int64_t s_ih[] = {GH, F}, s_hh[] = {GH, H}, s_b[] = {GH}, s_hw[] = {2, H}, s_hb[] = {2},
                  s_f[] = {F};
    int rc = st_tensor(&f, path, "rnn.weight_ih_l0", 2, s_ih, m->w_ih, errstr, size) ||
             st_tensor(&f, path, "rnn.weight_hh_l0", 2, s_hh, m->w_hh, errstr, size) ||
             st_tensor(&f, path, "rnn.bias_ih_l0", 1, s_b, m->b_ih, errstr, size) ||
             st_tensor(&f, path, "rnn.bias_hh_l0", 1, s_b, m->b_hh, errstr, size) ||
             st_tensor(&f, path, "head.weight", 2, s_hw, m->head_w, errstr, size) ||
             st_tensor(&f, path, "head.bias", 1, s_hb, m->head_b, errstr, size) ||
             st_tensor(&f, path, "scaler.mean", 1, s_f, mean, errstr, size) ||
             st_tensor(&f, path, "scaler.scale", 1, s_f, scale, errstr, size);
    for (int i = 0; rc == 0 && i < m->F; i++) {
        m->mean[i] = mean[i];
        m->scale[i] = scale[i];
        if (scale[i] == 0.0f) {
            rf_errf(errstr, size, path, "scaler.scale[%d] is 0 (feature '%s')", i, m->names[i]);
            rc = -1;
        }
    }
    free(mean);
    free(scale);
    if (rc)
        goto fail;
    st_close(&f);
    return m;
fail:
    st_close(&f);
    rf_rnn_destroy(m);
    return NULL;
}

enum rf_rnn_cell rf_rnn_cell(const rf_rnn_t *m) {
    return m->cell;
}

int rf_rnn_features(const rf_rnn_t *m) {
    return m->F;
}

int rf_rnn_hidden(const rf_rnn_t *m) {
    return m->H;
}

const char *rf_rnn_feature(const rf_rnn_t *m, int i) {
    return i >= 0 && i < m->F ? m->names[i] : NULL;
}

const char *rf_rnn_version(const rf_rnn_t *m) {
    return m->version;
}

int rf_rnn_horizon(const rf_rnn_t *m) {
    return m->horizon;
}

int rf_rnn_bars(const rf_rnn_t *m, int64_t *len) {
    *len = m->bar_len;
    return m->bar_type;
}

uint64_t rf_rnn_signature(const rf_rnn_t *m) {
    return m->sig;
}

static float sigmoidf(float x) {
    return 1.0f / (1.0f + expf(-x));
}

int rf_rnn_step(rf_rnn_t *m, int n, const double *x, float *h, float *c, double *out) {
    if (n < 0 || n > RF_RNN_BATCH_MAX || (m->cell == RF_RNN_LSTM && !c))
        return RF_E_INVAL;
    if (n == 0)
        return 0;
    const int F = m->F, H = m->H, GH = m->G * m->H;
    /* As PyTorch on a float32 input tensor: the value rounded to float32, then float32
     * arithmetic (MODELS.md §3). */
    for (int r = 0; r < n; r++)
        for (int i = 0; i < F; i++)
            m->xs[r * F + i] = ((float)x[r * F + i] - m->mean[i]) / m->scale[i];
    /* The batch against the stacked gate weights: gi = X W_ih^T, gh = H W_hh^T. */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, GH, F, 1.0f, m->xs, F, m->w_ih, F,
                0.0f, m->gi, GH);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, GH, H, 1.0f, h, H, m->w_hh, H, 0.0f,
                m->gh, GH);
    for (int r = 0; r < n; r++) {
        const float *gi = m->gi + (size_t)r * GH, *gh = m->gh + (size_t)r * GH;
        float *hr = h + (size_t)r * H;
        if (m->cell == RF_RNN_GRU) {
            /* PyTorch: r, z, n = rows [0,H), [H,2H), [2H,3H) */
            for (int j = 0; j < H; j++) {
                float rg = sigmoidf((gi[j] + m->b_ih[j]) + (gh[j] + m->b_hh[j]));
                float zg = sigmoidf((gi[H + j] + m->b_ih[H + j]) + (gh[H + j] + m->b_hh[H + j]));
                float ng = tanhf((gi[2 * H + j] + m->b_ih[2 * H + j]) +
                                 rg * (gh[2 * H + j] + m->b_hh[2 * H + j]));
                hr[j] = (1.0f - zg) * ng + zg * hr[j];
            }
        } else {
            /* PyTorch: i, f, g, o = rows [0,H), [H,2H), [2H,3H), [3H,4H) */
            float *cr = c + (size_t)r * H;
            for (int j = 0; j < H; j++) {
                float ig = sigmoidf((gi[j] + m->b_ih[j]) + (gh[j] + m->b_hh[j]));
                float fg = sigmoidf((gi[H + j] + m->b_ih[H + j]) + (gh[H + j] + m->b_hh[H + j]));
                float gg = tanhf((gi[2 * H + j] + m->b_ih[2 * H + j]) +
                                 (gh[2 * H + j] + m->b_hh[2 * H + j]));
                float og = sigmoidf((gi[3 * H + j] + m->b_ih[3 * H + j]) +
                                    (gh[3 * H + j] + m->b_hh[3 * H + j]));
                cr[j] = fg * cr[j] + ig * gg;
                hr[j] = og * tanhf(cr[j]);
            }
        }
        /* The head: two outputs from the new hidden state. */
        for (int k = 0; k < 2; k++) {
            float y = m->head_b[k];
            for (int j = 0; j < H; j++)
                y += m->head_w[k * H + j] * hr[j];
            out[2 * r + k] = k == 0 ? (double)y : (double)sigmoidf(y);
        }
    }
    return 0;
}
