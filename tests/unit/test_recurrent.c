/*
 * test_recurrent.c — the market job's GRU/LSTM (docs/MODELS.md §3): the batched float32 step
 * against an independent double-precision reference written from the equations, batch and
 * restart invariance (a state carried out of one model and into a freshly loaded one goes on
 * exactly), every refusal of a bad file (metadata, shapes, dtypes, offsets, non-finite weights,
 * truncation at every length), and parity with PyTorch's forward pass on the committed
 * fixtures of the shipped GRU and the small LSTM.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "riskflow/decl.h"
#include "riskflow/err.h"
#include "riskflow/recurrent.h"
#include "rf_test.h"

#define GRU_MODEL "deploy/models/market_gru.safetensors"
#define GRU_FIXTURE "tests/fixtures/market_gru_parity.safetensors"
#define LSTM_MODEL "tests/fixtures/market_lstm_small.safetensors"
#define LSTM_FIXTURE "tests/fixtures/market_lstm_parity.safetensors"

/* ---- writing safetensors files ---- */

static uint64_t rng_state = 88172645463325252ull;

static double urand(void) { /* xorshift64: [-1, 1) */
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (double)(rng_state >> 11) / (double)(1ull << 52) - 1.0;
}

enum { T_WIH, T_WHH, T_BIH, T_BHH, T_HW, T_HB, T_MEAN, T_SCALE, T_N };
static const char *tnames[T_N] = {"rnn.weight_ih_l0", "rnn.weight_hh_l0", "rnn.bias_ih_l0",
                                  "rnn.bias_hh_l0",   "head.weight",      "head.bias",
                                  "scaler.mean",      "scaler.scale"};

/* A model's weights (float32 values held as doubles) and how to spoil its file. */
struct spec {
    const char *cell; /* "gru" / "lstm" */
    int F, H;
    double *t[T_N];
    int64_t shape[T_N][2];
    int ndim[T_N];
    /* the file */
    const char *format, *version, *features, *horizon; /* NULL: a good value; "-": absent */
    int f64;                /* write F64 tensors */
    int omit;               /* tensor index to leave out, or -1 */
    int dtype_bad;          /* tensor index written with dtype "I32", or -1 */
    int shape_bad;          /* tensor index whose first dimension is declared one larger, or -1 */
    int offsets_bad;        /* tensor index whose end offset points past the data, or -1 */
    const char *extra_meta; /* raw JSON appended inside __metadata__ */
    const char *header_raw; /* the whole header text instead */
    long long header_len;   /* nonzero: this header length field instead */
};

static void spec_init(struct spec *s, const char *cell, int F, int H) {
    memset(s, 0, sizeof *s);
    s->cell = cell;
    s->F = F;
    s->H = H;
    s->omit = s->dtype_bad = s->shape_bad = s->offsets_bad = -1;
    int G = strcmp(cell, "gru") == 0 ? 3 : 4;
    int64_t shapes[T_N][2] = {{G * H, F}, {G * H, H}, {G * H, 0}, {G * H, 0},
                              {2, H},     {2, 0},     {F, 0},     {F, 0}};
    for (int i = 0; i < T_N; i++) {
        s->shape[i][0] = shapes[i][0];
        s->shape[i][1] = shapes[i][1];
        s->ndim[i] = shapes[i][1] ? 2 : 1;
        size_t n = (size_t)shapes[i][0] * (size_t)(shapes[i][1] ? shapes[i][1] : 1);
        s->t[i] = malloc(n * sizeof(double));
        for (size_t k = 0; k < n; k++) {
            double v = i == T_MEAN    ? 10.0 * urand()
                       : i == T_SCALE ? 0.5 + 2.0 * fabs(urand())
                                      : 0.6 * urand();
            s->t[i][k] = (float)v; /* the values a float32 file holds */
        }
    }
}

static void spec_free(struct spec *s) {
    for (int i = 0; i < T_N; i++)
        free(s->t[i]);
}

static size_t tcount(const struct spec *s, int i) {
    return (size_t)s->shape[i][0] * (size_t)(s->ndim[i] == 2 ? s->shape[i][1] : 1);
}

static char *features_list(int F) {
    static char buf[1024];
    size_t off = 0;
    buf[0] = '\0';
    for (int i = 0; i < F; i++)
        off += (size_t)snprintf(buf + off, sizeof buf - off, "%sf%d", i ? "," : "", i);
    return buf;
}

static void meta_kv(char *h, size_t size, size_t *off, const char *key, const char *val,
                    const char *dflt) {
    if (val && strcmp(val, "-") == 0)
        return;
    *off += (size_t)snprintf(h + *off, size - *off, "%s\"%s\":\"%s\"", h[*off - 1] == '{' ? "" : ",",
                             key, val ? val : dflt);
}

/* Write s to path, then cut `truncate` bytes off its end. Returns the file's full length. */
static size_t write_spec(const struct spec *s, const char *path, size_t truncate) {
    static char h[65536];
    size_t off = 0, data = 0;
    off += (size_t)snprintf(h, sizeof h, "{\"__metadata__\":{");
    meta_kv(h, sizeof h, &off, "format", s->format, "riskflow.recurrent.v1");
    meta_kv(h, sizeof h, &off, "cell", NULL, s->cell);
    meta_kv(h, sizeof h, &off, "name", NULL, "test");
    meta_kv(h, sizeof h, &off, "version", s->version, "test-v1");
    meta_kv(h, sizeof h, &off, "features", s->features, features_list(s->F));
    meta_kv(h, sizeof h, &off, "horizon_bars", s->horizon, "3");
    if (s->extra_meta)
        off += (size_t)snprintf(h + off, sizeof h - off, ",%s", s->extra_meta);
    off += (size_t)snprintf(h + off, sizeof h - off, "}");
    size_t es = s->f64 ? 8 : 4;
    for (int i = 0; i < T_N; i++) {
        if (i == s->omit)
            continue;
        size_t bytes = tcount(s, i) * es;
        char shape[64];
        int64_t d0 = s->shape[i][0] + (i == s->shape_bad);
        if (s->ndim[i] == 2)
            snprintf(shape, sizeof shape, "[%lld,%lld]", (long long)d0, (long long)s->shape[i][1]);
        else
            snprintf(shape, sizeof shape, "[%lld]", (long long)d0);
        off += (size_t)snprintf(h + off, sizeof h - off,
                                ",\"%s\":{\"dtype\":\"%s\",\"shape\":%s,\"data_offsets\":[%zu,%zu]}",
                                tnames[i], i == s->dtype_bad ? "I32" : s->f64 ? "F64" : "F32",
                                shape, data, data + bytes + (i == s->offsets_bad ? 1u << 20 : 0));
        data += bytes;
    }
    off += (size_t)snprintf(h + off, sizeof h - off, "}");
    const char *hdr = s->header_raw ? s->header_raw : h;
    size_t hl = strlen(hdr);
    size_t total = 8 + hl + data;
    uint8_t *buf = malloc(total);
    uint64_t n = s->header_len ? (uint64_t)s->header_len : hl;
    for (int i = 0; i < 8; i++)
        buf[i] = (uint8_t)(n >> (8 * i));
    memcpy(buf + 8, hdr, hl);
    uint8_t *p = buf + 8 + hl;
    for (int i = 0; i < T_N; i++) {
        if (i == s->omit)
            continue;
        for (size_t k = 0; k < tcount(s, i); k++) {
            if (s->f64) {
                memcpy(p, &s->t[i][k], 8);
                p += 8;
            } else {
                float f = (float)s->t[i][k];
                memcpy(p, &f, 4);
                p += 4;
            }
        }
    }
    FILE *f = fopen(path, "wb");
    fwrite(buf, 1, total - truncate, f);
    fclose(f);
    free(buf);
    return total;
}

static char tmpdir[] = "/tmp/rf_test_recurrent_XXXXXX";

static const char *tmp_path(const char *name) {
    static char p[256];
    snprintf(p, sizeof p, "%s/%s", tmpdir, name);
    return p;
}

/* ---- the reference step, in double, from docs/MODELS.md §3 ---- */

static double sig(double x) {
    return 1.0 / (1.0 + exp(-x));
}

static void ref_step(const struct spec *s, const double *x, double *h, double *c, double *y) {
    int F = s->F, H = s->H, G = strcmp(s->cell, "gru") == 0 ? 3 : 4;
    double xs[64], gi[4 * 64], gh[4 * 64], hn[64];
    for (int k = 0; k < F; k++)
        xs[k] = (x[k] - s->t[T_MEAN][k]) / s->t[T_SCALE][k];
    for (int r = 0; r < G * H; r++) {
        gi[r] = s->t[T_BIH][r];
        gh[r] = s->t[T_BHH][r];
        for (int k = 0; k < F; k++)
            gi[r] += s->t[T_WIH][r * F + k] * xs[k];
        for (int k = 0; k < H; k++)
            gh[r] += s->t[T_WHH][r * H + k] * h[k];
    }
    for (int j = 0; j < H; j++) {
        if (G == 3) {
            double rg = sig(gi[j] + gh[j]), zg = sig(gi[H + j] + gh[H + j]);
            double ng = tanh(gi[2 * H + j] + rg * gh[2 * H + j]);
            hn[j] = (1 - zg) * ng + zg * h[j];
        } else {
            double ig = sig(gi[j] + gh[j]), fg = sig(gi[H + j] + gh[H + j]);
            double gg = tanh(gi[2 * H + j] + gh[2 * H + j]), og = sig(gi[3 * H + j] + gh[3 * H + j]);
            c[j] = fg * c[j] + ig * gg;
            hn[j] = og * tanh(c[j]);
        }
    }
    memcpy(h, hn, sizeof(double) * (size_t)H);
    for (int k = 0; k < 2; k++) {
        double v = s->t[T_HB][k];
        for (int j = 0; j < H; j++)
            v += s->t[T_HW][k * H + j] * h[j];
        y[k] = k == 0 ? v : sig(v);
    }
}

/* ---- tests ---- */

#define ROWS 9
#define STEPS 12

/* n rows over STEPS steps against the reference; inputs spread around each feature's mean. */
static void check_against_reference(const char *cell, int f64) {
    struct spec s;
    spec_init(&s, cell, 5, 7);
    s.f64 = f64;
    const char *path = tmp_path("ref.safetensors");
    write_spec(&s, path, 0);
    char err[512];
    rf_rnn_t *m = rf_rnn_load(path, err, sizeof err);
    CHECK(m != NULL);
    if (!m) {
        fprintf(stderr, "  %s\n", err);
        spec_free(&s);
        return;
    }
    int lstm = strcmp(cell, "lstm") == 0;
    CHECK_EQ_INT(rf_rnn_cell(m), lstm ? RF_RNN_LSTM : RF_RNN_GRU);
    CHECK_EQ_INT(rf_rnn_features(m), 5);
    CHECK_EQ_INT(rf_rnn_hidden(m), 7);
    CHECK_EQ_STR(rf_rnn_feature(m, 4), "f4");
    CHECK(rf_rnn_feature(m, 5) == NULL);
    CHECK_EQ_STR(rf_rnn_version(m), "test-v1");
    CHECK_EQ_INT(rf_rnn_horizon(m), 3);
    CHECK(rf_rnn_signature(m) == rf_fnv1a64("test-v1", 7));

    float h[ROWS * 7] = {0}, c[ROWS * 7] = {0};
    double rh[ROWS][7] = {{0}}, rc[ROWS][7] = {{0}}, x[ROWS * 5], y[ROWS * 2], ry[2];
    double worst = 0;
    for (int t = 0; t < STEPS; t++) {
        for (int r = 0; r < ROWS; r++)
            for (int k = 0; k < 5; k++) /* a few rows far out: saturated gates */
                x[r * 5 + k] = s.t[T_MEAN][k] + s.t[T_SCALE][k] * urand() * (r == 0 ? 40.0 : 2.0);
        CHECK_EQ_INT(rf_rnn_step(m, ROWS, x, h, lstm ? c : NULL, y), 0);
        for (int r = 0; r < ROWS; r++) {
            ref_step(&s, x + r * 5, rh[r], rc[r], ry);
            for (int j = 0; j < 7; j++) {
                double d = fabs(h[r * 7 + j] - rh[r][j]) / fmax(1.0, fabs(rh[r][j]));
                worst = fmax(worst, d);
                if (lstm)
                    worst = fmax(worst, fabs(c[r * 7 + j] - rc[r][j]) / fmax(1.0, fabs(rc[r][j])));
            }
            for (int k = 0; k < 2; k++)
                worst = fmax(worst, fabs(y[r * 2 + k] - ry[k]) / fmax(1.0, fabs(ry[k])));
        }
    }
    fprintf(stderr, "  %s%s: worst difference from the double reference %.2e\n", cell,
            f64 ? " (F64 file)" : "", worst);
    CHECK(worst <= 1e-5);
    rf_rnn_destroy(m);
    spec_free(&s);
}

static void test_gru_reference(void) {
    check_against_reference("gru", 0);
}

static void test_lstm_reference(void) {
    check_against_reference("lstm", 0);
}

static void test_f64_file(void) {
    check_against_reference("gru", 1);
}

/* Rows stepped together equal rows stepped alone; a state carried out of one model into a
 * freshly loaded one (the restart: the state stored in Redis) continues exactly. */
static void test_batch_and_restart(void) {
    struct spec s;
    spec_init(&s, "lstm", 4, 6);
    const char *path = tmp_path("restart.safetensors");
    write_spec(&s, path, 0);
    char err[512];
    rf_rnn_t *a = rf_rnn_load(path, err, sizeof err), *b = rf_rnn_load(path, err, sizeof err);
    CHECK(a && b);
    if (!a || !b)
        goto out;
    enum { R = 5, T = 10, CUT = 4 };
    float h_all[R * 6] = {0}, c_all[R * 6] = {0}, h_one[R * 6] = {0}, c_one[R * 6] = {0};
    double xs[T][R * 4], y_all[R * 2], y_one[2];
    for (int t = 0; t < T; t++)
        for (int i = 0; i < R * 4; i++)
            xs[t][i] = 3.0 * urand();
    double worst = 0;
    for (int t = 0; t < T; t++) {
        /* a to CUT, then b: the uninterrupted run is a throughout on the batch */
        rf_rnn_t *m = t < CUT ? a : b;
        CHECK_EQ_INT(rf_rnn_step(a, R, xs[t], h_all, c_all, y_all), 0);
        for (int r = 0; r < R; r++) {
            CHECK_EQ_INT(rf_rnn_step(m, 1, xs[t] + r * 4, h_one + r * 6, c_one + r * 6, y_one), 0);
            for (int k = 0; k < 2; k++)
                worst = fmax(worst, fabs(y_one[k] - y_all[r * 2 + k]));
        }
    }
    for (int i = 0; i < R * 6; i++)
        worst = fmax(worst, fmax(fabs(h_one[i] - h_all[i]), fabs(c_one[i] - c_all[i])));
    fprintf(stderr, "  one row at a time, across a reload, vs the batch: worst %.2e\n", worst);
    CHECK(worst <= 1e-6);
    /* the step's own refusals */
    CHECK_EQ_INT(rf_rnn_step(a, RF_RNN_BATCH_MAX + 1, xs[0], h_all, c_all, y_all), RF_E_INVAL);
    CHECK_EQ_INT(rf_rnn_step(a, 1, xs[0], h_all, NULL, y_all), RF_E_INVAL); /* LSTM needs c */
    CHECK_EQ_INT(rf_rnn_step(a, 0, xs[0], h_all, c_all, y_all), 0);
out:
    rf_rnn_destroy(a);
    rf_rnn_destroy(b);
    spec_free(&s);
}

static int refuses(const struct spec *s, size_t truncate, const char *needle) {
    const char *path = tmp_path("bad.safetensors");
    write_spec(s, path, truncate);
    char err[512] = "";
    rf_rnn_t *m = rf_rnn_load(path, err, sizeof err);
    int ok = m == NULL && strstr(err, needle) != NULL && strstr(err, path) != NULL;
    if (!ok)
        fprintf(stderr, "  want a refusal with '%s', got %s: %s\n", needle,
                m ? "a model" : "an error", err);
    rf_rnn_destroy(m);
    return ok;
}

static void test_bad_files(void) {
    struct spec s;
    spec_init(&s, "gru", 3, 4);
    char err[512];
    CHECK(rf_rnn_load(tmp_path("absent.safetensors"), err, sizeof err) == NULL);
    CHECK(strstr(err, "cannot open") != NULL);

    char longv[200];
    memset(longv, 'v', sizeof longv - 1);
    longv[sizeof longv - 1] = '\0';
    /* one metadata value spoiled at a time ("-": the key absent) */
    const struct {
        const char **field;
        const char *value, *needle;
    } metas[] = {
        {&s.format, "riskflow.recurrent.v2", "__metadata__.format"},
        {&s.format, "-", "__metadata__.format"},
        {&s.cell, "rnn", "__metadata__.cell"},
        {&s.version, "", "__metadata__.version"},
        {&s.version, longv, "__metadata__.version"},
        {&s.horizon, "0", "__metadata__.horizon_bars"},
        {&s.horizon, "3x", "__metadata__.horizon_bars"},
        {&s.horizon, "-", "__metadata__.horizon_bars"},
        {&s.features, "f0,f1", "rnn.weight_ih_l0"}, /* weights for 3 features, 2 named */
        {&s.features, "f0,,f2", "__metadata__.features"},
        {&s.features, "f0,f1,f0", "'f0' twice"},
        {&s.features, "-", "__metadata__.features"},
    };
    for (size_t i = 0; i < sizeof metas / sizeof metas[0]; i++) {
        const char *keep = *metas[i].field;
        *metas[i].field = metas[i].value;
        CHECK(refuses(&s, 0, metas[i].needle));
        *metas[i].field = keep;
    }
    for (int i = 0; i < T_N; i++) {
        s.omit = i;
        CHECK(refuses(&s, 0, i == T_WHH ? "rnn.weight_hh_l0" : tnames[i]));
        s.omit = -1;
        s.dtype_bad = i;
        CHECK(refuses(&s, 0, "want F32 or F64"));
        s.dtype_bad = -1;
        s.shape_bad = i;
        CHECK(refuses(&s, 0, tnames[i]));
        s.shape_bad = -1;
        s.offsets_bad = i;
        CHECK(refuses(&s, 0, "data_offsets"));
        s.offsets_bad = -1;
    }
    s.t[T_WHH][5] = NAN;
    CHECK(refuses(&s, 0, "not finite"));
    s.t[T_WHH][5] = 0.1;
    s.t[T_HB][1] = INFINITY;
    CHECK(refuses(&s, 0, "not finite"));
    s.t[T_HB][1] = 0.1;
    s.t[T_SCALE][2] = 0.0;
    CHECK(refuses(&s, 0, "scaler.scale[2] is 0 (feature 'f2')"));
    s.t[T_SCALE][2] = 1.0;
    s.header_raw = "{\"__metadata__\": [1, 2]";
    CHECK(refuses(&s, 0, "header"));
    s.header_raw = "[]";
    CHECK(refuses(&s, 0, "not a JSON object"));
    s.header_raw = NULL;
    s.header_len = 1ll << 40;
    CHECK(refuses(&s, 0, "does not fit the file"));
    s.header_len = 0;
    /* every truncation of a good file is refused, and none reads out of bounds (ASan build) */
    size_t full = write_spec(&s, tmp_path("full.safetensors"), 0);
    rf_rnn_t *good = rf_rnn_load(tmp_path("full.safetensors"), err, sizeof err);
    CHECK(good != NULL);
    rf_rnn_destroy(good);
    int refused = 0;
    for (size_t cut = 1; cut <= full; cut++) {
        const char *path = tmp_path("cut.safetensors");
        write_spec(&s, path, cut);
        rf_rnn_t *m = rf_rnn_load(path, err, sizeof err);
        refused += m == NULL;
        rf_rnn_destroy(m);
    }
    CHECK_EQ_INT(refused, (long long)full);
    /* the bars it was trained on: optional, checked when there */
    int64_t len = -1;
    good = rf_rnn_load(tmp_path("full.safetensors"), err, sizeof err);
    CHECK(good && rf_rnn_bars(good, &len) == 0);
    rf_rnn_destroy(good);
    s.extra_meta = "\"bar_type\":\"trades\",\"bar_trades\":\"250\"";
    write_spec(&s, tmp_path("full.safetensors"), 0);
    good = rf_rnn_load(tmp_path("full.safetensors"), err, sizeof err);
    CHECK(good && rf_rnn_bars(good, &len) == RF_RNN_BARS_TRADES && len == 250);
    rf_rnn_destroy(good);
    s.extra_meta = "\"bar_type\":\"time\",\"bar_ms\":\"60000\"";
    write_spec(&s, tmp_path("full.safetensors"), 0);
    good = rf_rnn_load(tmp_path("full.safetensors"), err, sizeof err);
    CHECK(good && rf_rnn_bars(good, &len) == RF_RNN_BARS_TIME && len == 60000);
    rf_rnn_destroy(good);
    static const char *const bad_bars[][2] = {
        {"\"bar_type\":\"volume\",\"bar_ms\":\"60000\"", "__metadata__.bar_type"},
        {"\"bar_type\":\"time\",\"bar_trades\":\"60\"", "__metadata__.bar_ms"},
        {"\"bar_type\":\"time\",\"bar_ms\":\"0\"", "__metadata__.bar_ms"},
    };
    for (size_t i = 0; i < sizeof bad_bars / sizeof bad_bars[0]; i++) {
        s.extra_meta = bad_bars[i][0];
        CHECK(refuses(&s, 0, bad_bars[i][1]));
    }
    s.extra_meta = NULL;
    /* a hidden size over the limit */
    struct spec big;
    spec_init(&big, "gru", 2, RF_RNN_HIDDEN_MAX + 1);
    CHECK(refuses(&big, 0, "1 <= H <= 256"));
    spec_free(&big);
    spec_free(&s);
}

/* ---- parity with PyTorch on the committed fixtures ---- */

static float *tensor(const char *path, const char *name, int64_t shape[4], int *ndim) {
    char err[512];
    float *t = rf_safetensors_read(path, name, shape, ndim, err, sizeof err);
    if (!t)
        fprintf(stderr, "  %s\n", err);
    return t;
}

/* The fixture holds N sequences of L raw feature rows and PyTorch's h (c) and y after each
 * step from zeros. The C step runs the N sequences as one batch per step (in chunks of
 * RF_RNN_BATCH_MAX); at step L/2 the state goes through a reload of the model file. */
static void parity(const char *model_path, const char *fixture) {
    char err[512];
    rf_rnn_t *m = rf_rnn_load(model_path, err, sizeof err);
    CHECK(m != NULL);
    if (!m) {
        fprintf(stderr, "  %s\n", err);
        return;
    }
    int lstm = rf_rnn_cell(m) == RF_RNN_LSTM, F = rf_rnn_features(m), H = rf_rnn_hidden(m);
    int64_t sx[4], sh[4], sy[4], sc[4];
    int nx = 0, nh = 0, ny = 0, nc = 0;
    float *X = tensor(fixture, "x", sx, &nx), *Hs = tensor(fixture, "h", sh, &nh);
    float *Y = tensor(fixture, "y", sy, &ny), *C = lstm ? tensor(fixture, "c", sc, &nc) : NULL;
    CHECK(X && Hs && Y && (!lstm || C));
    if (!X || !Hs || !Y || (lstm && !C))
        goto out;
    CHECK(nx == 3 && sx[2] == F && nh == 3 && sh[2] == H && ny == 3 && sy[2] == 2);
    CHECK(sh[0] == sx[0] && sh[1] == sx[1] && sy[0] == sx[0] && sy[1] == sx[1]);
    if (nx != 3 || sx[2] != F || sh[2] != H || sy[2] != 2)
        goto out;
    int64_t N = sx[0], L = sx[1];
    CHECK(N >= 512 && L >= 8);
    float *h = calloc((size_t)(N * H), sizeof *h), *c = calloc((size_t)(N * H), sizeof *c);
    double *x = malloc(sizeof(double) * (size_t)(RF_RNN_BATCH_MAX * F));
    double *y = malloc(sizeof(double) * (size_t)(RF_RNN_BATCH_MAX * 2));
    double worst_h = 0, worst_y = 0, worst_rel = 0;
    for (int64_t t = 0; t < L; t++) {
        if (t == L / 2) { /* the restart: carried state, a model read afresh */
            rf_rnn_destroy(m);
            m = rf_rnn_load(model_path, err, sizeof err);
            CHECK(m != NULL);
            if (!m)
                break;
        }
        for (int64_t b = 0; b < N; b += RF_RNN_BATCH_MAX) {
            int n = (int)(N - b < RF_RNN_BATCH_MAX ? N - b : RF_RNN_BATCH_MAX);
            for (int r = 0; r < n; r++)
                for (int k = 0; k < F; k++)
                    x[r * F + k] = X[((b + r) * L + t) * F + k];
            CHECK_EQ_INT(rf_rnn_step(m, n, x, h + b * H, lstm ? c + b * H : NULL, y), 0);
            for (int r = 0; r < n; r++) {
                int64_t at = (b + r) * L + t;
                for (int j = 0; j < H; j++) {
                    worst_h = fmax(worst_h, fabs(h[(b + r) * H + j] - Hs[at * H + j]));
                    if (lstm) {
                        double rc = C[at * H + j];
                        worst_h = fmax(worst_h, fabs(c[(b + r) * H + j] - rc) / fmax(1.0, fabs(rc)));
                    }
                }
                for (int k = 0; k < 2; k++) {
                    double ref = Y[at * 2 + k], d = fabs(y[r * 2 + k] - ref);
                    worst_y = fmax(worst_y, d / fmax(1.0, fabs(ref)));
                    if (fabs(ref) >= 1e-3)
                        worst_rel = fmax(worst_rel, d / fabs(ref));
                }
            }
        }
    }
    fprintf(stderr, "  %s on %s (%lld x %lld steps, H=%d): h%s worst %.2e, y worst %.2e "
            "(relative %.2e where |y| >= 1e-3)\n", model_path, fixture, (long long)N, (long long)L,
            H, lstm ? "/c" : "", worst_h, worst_y, worst_rel);
    /* 1e-5 relative to the value, or absolute for values under 1 (h lives in (-1, 1)) */
    CHECK(worst_h <= 1e-5);
    CHECK(worst_y <= 1e-5);
    free(h);
    free(c);
    free(x);
    free(y);
out:
    free(X);
    free(Hs);
    free(Y);
    free(C);
    rf_rnn_destroy(m);
}

static void test_parity_gru(void) {
    parity(GRU_MODEL, GRU_FIXTURE);
}

static void test_parity_lstm(void) {
    parity(LSTM_MODEL, LSTM_FIXTURE);
}

static void test_setup(void) {
    CHECK(mkdtemp(tmpdir) != NULL);
}

static void test_cleanup(void) {
    const char *names[] = {"ref.safetensors", "restart.safetensors", "bad.safetensors",
                           "full.safetensors", "cut.safetensors"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        unlink(tmp_path(names[i]));
    CHECK(rmdir(tmpdir) == 0);
}

RF_TEST_MAIN(RF_TEST(test_setup), RF_TEST(test_gru_reference), RF_TEST(test_lstm_reference),
             RF_TEST(test_f64_file), RF_TEST(test_batch_and_restart), RF_TEST(test_bad_files),
             RF_TEST(test_parity_gru), RF_TEST(test_parity_lstm), RF_TEST(test_cleanup))
