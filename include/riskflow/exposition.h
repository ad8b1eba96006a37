/*
 * exposition.h — the daemon's state in the Prometheus text format (version 0.0.4), for
 * /metrics.
 *
 * Owns nothing: renders, on the loop thread, what the metrics, the engine, the store and the
 * health check hold at that moment into an HTTP body. Every family has # HELP and # TYPE;
 * counters end in _total; durations are histograms in seconds whose `le` edges are exact
 * edges of the daemon's own histograms (metrics.h rf_hist_prom_edge), so no count is moved to
 * another bucket; label values are escaped. deploy/grafana/riskflow.json and
 * deploy/prometheus/riskflow-rules.yml read these names (README, "Metrics").
 */
#ifndef RISKFLOW_EXPOSITION_H
#define RISKFLOW_EXPOSITION_H

#include <stdint.h>

#include "riskflow/engine.h"
#include "riskflow/health.h"
#include "riskflow/http.h"
#include "riskflow/metrics.h"
#include "riskflow/store.h"

struct rf_expo_src {
    const struct rf_metrics *metrics;
    rf_engine_t *engine;
    rf_store_t *store;
    const rf_health_t *health;
    const rf_http_t *http;     /* its request counts; may be NULL */
    double start_time_s;       /* Unix seconds the process started */
};

void rf_expo_render(const struct rf_expo_src *src, struct rf_http_body *out);

#endif
