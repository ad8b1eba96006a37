/*
 * fuzz_models.c — libFuzzer target for the model loaders: the fraud model JSON (model.h), the
 * scorecard JSON (scorecard.h), the GRU/LSTM safetensors file (recurrent.h) and the tree
 * ensembles (trees.h: XGBoost JSON, LightGBM text). Input: one selector byte, then the file's
 * bytes. Every file either loads (and is freed) or is refused with a message; no crash, no
 * leak, no read past the file. A tree ensemble that loads is also scored (both evaluators,
 * batches of 1 and 9 rows with NaN, zeros and extremes) and explained (SHAP): whatever
 * structure it was accepted with must be walkable.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "riskflow/model.h"
#include "riskflow/recurrent.h"
#include "riskflow/scorecard.h"
#include "riskflow/trees.h"

static char path[64];

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1)
        return 0;
    if (!path[0])
        snprintf(path, sizeof path, "/dev/shm/rf_fuzz_model_%d", (int)getpid());
    FILE *f = fopen(path, "wb");
    if (!f)
        abort();
    fwrite(data + 1, 1, size - 1, f);
    fclose(f);
    char err[512] = "";
    switch (data[0] % 4) {
    case 3: {
        for (int dense = 0; dense <= RF_TREES_DENSE_DEPTH; dense += RF_TREES_DENSE_DEPTH) {
            rf_trees_t *t = rf_trees_parse((const char *)data + 1, size - 1, "fuzz", dense, err,
                                           sizeof err);
            if (!t) {
                if (!err[0])
                    abort();
                break;
            }
            int nf = rf_trees_n_features(t);
            double *x = calloc((size_t)nf * 9, sizeof *x), out[9];
            double *phi = calloc((size_t)nf + 1, sizeof *phi);
            if (!x || !phi)
                abort();
            static const double vals[] = {0.0, -0.0, 1.0, -1e300, 1e300, 0.5, 1e-36, -7.25, 0.0};
            for (int r = 0; r < 9; r++)
                for (int i = 0; i < nf; i++)
                    x[r * nf + i] = (r + i) % 4 == 3 ? __builtin_nan("") : vals[(r * 7 + i) % 9];
            if (rf_trees_predict(t, x, 9, out) != 0 || rf_trees_predict(t, x, 1, out) != 0 ||
                rf_trees_shap(t, x + nf, phi) != 0)
                abort();
            free(x);
            free(phi);
            rf_trees_destroy(t);
        }
        break;
    }
    case 0: {
        rf_model_t *m = rf_model_load(path, err, sizeof err);
        if (!m && !err[0])
            abort();
        rf_model_destroy(m);
        break;
    }
    case 1: {
        rf_scorecard_t *s = rf_scorecard_load(path, err, sizeof err);
        if (!s && !err[0])
            abort();
        rf_scorecard_destroy(s);
        break;
    }
    default: {
        rf_rnn_t *r = rf_rnn_load(path, err, sizeof err);
        if (!r && !err[0])
            abort();
        rf_rnn_destroy(r);
        break;
    }
    }
    return 0;
}
