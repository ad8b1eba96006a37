/*
 * demo.h — the zero-setup demo: librdkafka's in-process mock cluster and generators of
 * synthetic payments (with fraud bursts), credit events and trades and quotes, with poison
 * messages in them, for the three jobs.
 *
 * Owns the generator's producer handle (which owns the mock cluster) and the pacing timer.
 * The synthetic stream: first a history (every customer's last three months of salaries,
 * statements and repayments; the market's last 15 minutes), then the paced stream:
 * demo.customers customers with their own spending level; about 1% of events are fraud bursts (a compromised card: several large e-commerce payments within
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

/* What the generator sent so far after the history (and how many messages the history was). */
struct rf_demo_counts {
    int64_t card_payments; /* the demo.events payments (purchases, cash, fraud bursts) */
    int64_t salaries;      /* salaries whose payday fell in the stream */
    int64_t fraud;         /* payments in fraud bursts */
    int64_t credit;        /* credit events */
    int64_t trades, quotes;
    int64_t poison;        /* messages made to be dead-lettered */
    int64_t history;       /* messages sent as the history, before the measured stream */
    int64_t failed;        /* messages the mock broker refused (0 in a healthy run) */
};

/* Create the mock cluster and its topics. NULL + errstr on failure. */
rf_demo_t *rf_demo_new(uv_loop_t *loop, const struct rf_conf *conf, const rf_schemas_t *schemas,
                       char *errstr, size_t errstr_size);

/* The mock cluster's bootstrap servers (borrowed). */
const char *rf_demo_bootstrap(const rf_demo_t *demo);

/* Start: the history first, then (after rf_demo_warm) the paced stream at demo.rate. */
void rf_demo_start(rf_demo_t *demo);

/* The engine has completed `done` messages (outputs acknowledged, or dead-lettered): once that
 * covers the history, the measured stream starts and this returns 1 (once), so the caller
 * can reset its figures and start printing outputs. */
int rf_demo_warm(rf_demo_t *demo, uint64_t done);

/* 1 once every message is produced and acknowledged; *total gets how many there were. */
int rf_demo_done(const rf_demo_t *demo, uint64_t *total);

void rf_demo_counts(const rf_demo_t *demo, struct rf_demo_counts *out);

/* Stop the timer; cb(arg) when closed. Then rf_demo_destroy. */
void rf_demo_close(rf_demo_t *demo, void (*cb)(void *arg), void *arg);
void rf_demo_destroy(rf_demo_t *demo);

#endif
