/*
 * recurrent.h — a one-layer GRU or LSTM with a two-output head, loaded from a safetensors file
 * (riskflow.recurrent.v1, docs/MODELS.md §3) and stepped over a batch of instruments at once.
 *
 * Owns the weights (float32, PyTorch's layout and gate order), the input scaler, the metadata
 * (features, version, horizon) and scratch matrices for RF_RNN_BATCH_MAX rows, so a step
 * allocates nothing. The dense math is two OpenBLAS sgemm calls per step (inputs and hidden
 * state against the stacked gate weights); the gates are float32 arithmetic. Loaded once off
 * the hot path; stepped on the loop thread. Parity: PyTorch's own forward pass equals this to
 * 1e-5 relative on committed fixtures (tests/unit/test_recurrent.c).
 * Must never trust the file: every size, offset, dtype and shape is checked, weights must be
 * finite, and a truncated or oversized file is refused with a message saying what is wrong.
 */
#ifndef RISKFLOW_RECURRENT_H
#define RISKFLOW_RECURRENT_H

#include <stddef.h>
#include <stdint.h>

#define RF_RNN_BATCH_MAX 256
#define RF_RNN_FEATURES_MAX 64
#define RF_RNN_HIDDEN_MAX 256
#define RF_RNN_NAME_MAX 48
#define RF_RNN_VERSION_MAX 127

typedef struct rf_rnn_s rf_rnn_t;

enum rf_rnn_cell { RF_RNN_GRU, RF_RNN_LSTM };

rf_rnn_t *rf_rnn_load(const char *path, char *errstr, size_t errstr_size);
void rf_rnn_destroy(rf_rnn_t *m); /* accepts NULL */

enum rf_rnn_cell rf_rnn_cell(const rf_rnn_t *m);
int rf_rnn_features(const rf_rnn_t *m);
int rf_rnn_hidden(const rf_rnn_t *m);
const char *rf_rnn_feature(const rf_rnn_t *m, int i);
const char *rf_rnn_version(const rf_rnn_t *m);
int rf_rnn_horizon(const rf_rnn_t *m);
/* The bars the model was trained on, from its optional bar_type / bar_ms / bar_trades metadata:
 * 0 when it does not say, else RF_RNN_BARS_TIME (*len in ms) or RF_RNN_BARS_TRADES (*len in
 * trades). */
#define RF_RNN_BARS_TIME 1
#define RF_RNN_BARS_TRADES 2
int rf_rnn_bars(const rf_rnn_t *m, int64_t *len);
/* FNV-1a 64 of the version: stored with a carried state, so another model starts from zeros. */
uint64_t rf_rnn_signature(const rf_rnn_t *m);

/*
 * One step for n rows (n <= RF_RNN_BATCH_MAX): x [n × F] raw feature values (the scaler is
 * applied here), h [n × H] the carried hidden state in, the new one out; c [n × H] the LSTM's
 * cell state likewise (NULL for a GRU); out [n × 2]: expected return (bps), probability of an
 * up move. Returns 0 or RF_E_INVAL.
 */
int rf_rnn_step(rf_rnn_t *m, int n, const double *x, float *h, float *c, double *out);

/*
 * The safetensors reader, for tests and tools: the tensor `name` as float32 (F64 converted)
 * into a new malloc'd array (caller frees) with its shape. NULL + errstr when absent or bad.
 */
float *rf_safetensors_read(const char *path, const char *name, int64_t shape[4], int *ndim,
                           char *errstr, size_t errstr_size);

#endif
