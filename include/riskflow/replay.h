/*
 * replay.h — riskflowd --replay: recorded events through the same decoder and the same feature
 * code as the daemon, one row of features per event out, nothing produced anywhere.
 *
 * Training reads these rows, so a model is trained on exactly the features riskflowd serves
 * (docs/FEATURES.md; issue 7 item 3). The input is an Avro object container file whose schema
 * is one of the registry's input record types or a union of them (fastavro writes both); each
 * record's schema must equal the registry's, and records are applied in file order (write them
 * in event-time order, as they would arrive). Or one partition's offset range of a topic,
 * framed as input.topics says (the daemon's consumer settings; no group is joined, nothing is
 * committed), applied in offset order; a message that is not a record the decoder accepts is
 * skipped as the daemon dead-letters it. Every record updates the entities it touches as
 * in the daemon — the same admission rules (a record of a type no declared feature reads and
 * not of the row type, a time before 1970, an empty key, an event later than
 * input.max.lateness.s behind its entity: skipped, counted, as the daemon dead-letters them) —
 * and every record of the row type (riskflow.Payment by default) writes one CSV row
 * after it is applied, as the fraud job reads its features: event_id, event_time (ms), every
 * feature available for the row type in file order (derived ones included), and label.
 * label: when the file holds riskflow.FraudLabel records, the verdict of the last label on the
 * row's payment (1 fraud, 0 genuine), in whatever position in the file; empty when it has none.
 * Numbers are written in the shortest form that reads back to the same double.
 * Not replayed: the jobs' own state (the market job's bars and hidden state): features only.
 *
 * Owns, for the run: the entity values (a hash table in memory), the labels, the reader. One
 * thread; allocation is fine here (a batch tool, not the hot path).
 */
#ifndef RISKFLOW_REPLAY_H
#define RISKFLOW_REPLAY_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "riskflow/conf.h"

struct rf_replay_opts {
    const char *in_path;   /* the Avro object container file, or NULL: */
    const char *topic;     /* "TOPIC:PARTITION:FROM:TO" (TO exclusive, -1 the end offset) */
    const char *out_path;  /* the CSV; NULL or "-": stdout */
    const char *row_type;  /* full name; NULL: riskflow.Payment */
};

struct rf_replay_stats {
    uint64_t records;      /* read from the file */
    uint64_t applied;
    uint64_t rows;
    uint64_t labels;       /* riskflow.FraudLabel records in the file */
    uint64_t labelled;     /* rows with a label */
    uint64_t skipped_malformed, skipped_wrong_type, skipped_bad_time, skipped_bad_key;
    uint64_t skipped_too_late;
    uint64_t entities;
};

/* Run the replay with conf's schemas, feature file and input.max.lateness.s. 0, or a negative
 * RF_E_* with errstr: RF_E_CONF for the configuration, the declarations, a file whose schema
 * is not the registry's or an unknown row type; RF_E_MALFORMED for a record the decoder
 * refuses (with its index); RF_E_IO for reading or writing. */
int rf_replay_run(const struct rf_conf *conf, const struct rf_replay_opts *opts,
                  struct rf_replay_stats *stats, char *errstr, size_t errstr_size);

#endif
