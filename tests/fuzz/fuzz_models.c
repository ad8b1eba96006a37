/*
 * fuzz_models.c — libFuzzer target for the model loaders: the fraud model JSON (model.h), the
 * scorecard JSON (scorecard.h) and the GRU/LSTM safetensors file (recurrent.h). Input: one
 * selector byte, then the file's bytes. Every file either loads (and is freed) or is refused
 * with a message; no crash, no leak, no read past the file.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "riskflow/model.h"
#include "riskflow/recurrent.h"
#include "riskflow/scorecard.h"

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
    switch (data[0] % 3) {
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
