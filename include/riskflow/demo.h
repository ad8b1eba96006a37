/*
 * demo.h — the zero-setup demo: librdkafka's in-process mock cluster and a generator of
 * synthetic payments with fraud and poison messages in them.
 *
 * Owns the generator's producer handle (which owns the mock cluster) and the pacing timer.
 * The synthetic stream: demo.customers customers with their own spending level; about 1% of
 * events are fraud bursts (a compromised card: several large e-commerce payments within
 * minutes, mostly at night); one message in 2000 is poison (garbage, wrong magic byte,
 * unknown schema id, truncated, oversize), so the dead-letter path shows in the summary.
 * Loop thread; the mock cluster runs on librdkafka's threads.
 */
#ifndef RISKFLOW_DEMO_H
#define RISKFLOW_DEMO_H

#include <stdint.h>
#include <uv.h>

#include "riskflow/codec.h"
#include "riskflow/conf.h"

typedef struct rf_demo_s rf_demo_t;

/* Create the mock cluster and its topics. NULL + errstr on failure. */
rf_demo_t *rf_demo_new(uv_loop_t *loop, const struct rf_conf *conf, const rf_schemas_t *schemas,
                       char *errstr, size_t errstr_size);

/* The mock cluster's bootstrap servers (borrowed). */
const char *rf_demo_bootstrap(const rf_demo_t *demo);

/* Start producing at demo.rate. */
void rf_demo_start(rf_demo_t *demo);

/* 1 once every message is produced and acknowledged; *total gets how many there were. */
int rf_demo_done(const rf_demo_t *demo, uint64_t *total);

/* Messages by kind so far, and how many the mock broker refused (0 in a healthy run). */
void rf_demo_counts(const rf_demo_t *demo, uint64_t *payments, uint64_t *fraud,
                    uint64_t *poison, uint64_t *failed);

/* Stop the timer; cb(arg) when closed. Then rf_demo_destroy. */
void rf_demo_close(rf_demo_t *demo, void (*cb)(void *arg), void *arg);
void rf_demo_destroy(rf_demo_t *demo);

#endif
