/*
 * daemon.h — riskflowd's life cycle: build everything, run the loop, stop in order.
 *
 * Owns the libuv loop and every long-lived object: schemas, model, store, Kafka clients,
 * pipeline, signals, timers and (with --demo) the in-process mock cluster and generator.
 * Start order: schemas → model → store → producer → consumer → pipeline → queue watches →
 * subscribe. Stop order on SIGTERM/SIGINT: stop taking messages → wait for every in-flight
 * event (bounded by shutdown.timeout.ms) → commit stored offsets synchronously → close the
 * consumer → flush the producer → close handles → uv_loop_close() == 0.
 * Never exits the process: it returns an exit code to main().
 */
#ifndef RISKFLOW_DAEMON_H
#define RISKFLOW_DAEMON_H

#include <stddef.h>
#include <stdio.h>

#include "riskflow/conf.h"

/* sysexits.h values, so systemd and scripts can tell the cases apart. */
#define RF_EXIT_OK 0
#define RF_EXIT_FAILURE 1      /* a runtime failure (fatal Kafka error, shutdown timed out) */
#define RF_EXIT_USAGE 64       /* EX_USAGE */
#define RF_EXIT_UNAVAILABLE 69 /* EX_UNAVAILABLE: could not start (e.g. Kafka client) */
#define RF_EXIT_CONFIG 78      /* EX_CONFIG */

/* Load what the config names (schemas, feature declarations, every enabled job's model and
 * the features it reads) without starting anything: --check-config. With `layout`, print the
 * entity value layout there (--layout). 0, or RF_E_CONF with the reason in errstr. */
int rf_daemon_check(const struct rf_conf *conf, FILE *layout, char *errstr, size_t errstr_size);

/* Run until stopped; returns a RF_EXIT_* code. demo: run against the in-process mock cluster
 * with the synthetic generator and print a summary at the end. */
int rf_daemon_run(const struct rf_conf *conf, int demo);

/* Block (1) or unblock (0) SIGTERM, SIGINT and SIGHUP in the calling thread (and the threads
 * it starts): main() blocks them first thing, rf_daemon_run unblocks them once its handlers
 * are installed, so a stop sent while starting is a clean stop. */
void rf_daemon_block_signals(int block);
/* The default actions back for SIGTERM, SIGINT and SIGHUP, unblocked (the batch tools). */
void rf_daemon_default_signals(void);

#endif
