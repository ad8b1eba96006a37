/*
 * sink.h — printed outputs (outputs.print=stdout), written by a thread of their own.
 *
 * Owns a bounded byte ring, a line buffer with a FILE over it, and the thread that drains the
 * ring into a file descriptor. The loop thread prints a line into the sink's FILE and commits
 * it; a full ring (a slow terminal, a paused pager, a pipe nobody reads) drops the line and
 * counts it, and never makes the loop wait: printing is presentation, and the data path must
 * not slow down for a terminal.
 * Threads: rf_sink_begin/commit/destroy from one thread (the loop); the writer thread is
 * internal. Allocates at creation only.
 */
#ifndef RISKFLOW_SINK_H
#define RISKFLOW_SINK_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

typedef struct rf_sink_s rf_sink_t;

#define RF_SINK_LINE_MAX 65536 /* one print; longer ones are cut */

/* A sink writing to fd (not owned, not closed) through a ring of ring_bytes. NULL + errstr. */
rf_sink_t *rf_sink_new(int fd, size_t ring_bytes, char *errstr, size_t errstr_size);

/* The FILE to print one line (or a few) into; rf_sink_commit hands what was printed to the
 * writer. The FILE stays the sink's. */
FILE *rf_sink_begin(rf_sink_t *s);
void rf_sink_commit(rf_sink_t *s);

/* Let the writer drain the ring for up to drain_ms, then stop it and free the sink; returns
 * the lines dropped in all (the ring was full, or they were still in it). A writer stuck in write() past that is left behind (detached)
 * with its ring: a process that is stopping must not hang on its terminal. Accepts NULL. */
uint64_t rf_sink_destroy(rf_sink_t *s, unsigned drain_ms);

#endif
