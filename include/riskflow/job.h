/*
 * job.h — what a job is: the contract between the engine and the fraud, credit and market
 * jobs (docs/ENGINE.md). A fourth job implements struct rf_job_ops in src/job_<name>.c and
 * adds one line to src/jobs.c; no engine file changes.
 *
 * A job says: its config keys (a property table of its own, under "<name>."), which record
 * types it takes, what it keeps on which entity kind (registered at init, laid out by decl.h),
 * what it does per event (before and after the engine applies the event to the entities'
 * declared features) and per micro-batch (score what it staged with one model call, write its
 * outputs through rf_job_emit), and how its outputs print. The engine owns everything else:
 * consuming, decoding, loading and writing back entity values, replays, offsets, retries,
 * dead letters, rebalances.
 *
 * Threads: everything on the loop thread. Ownership: the engine owns the job object (init
 * creates it, destroy frees it); records and entity values passed to hooks are borrowed for
 * the duration of the batch (the event's record until the event completes).
 * Must never: block, allocate per event once warm, or keep pointers into entity values past
 * the batch.
 */
#ifndef RISKFLOW_JOB_H
#define RISKFLOW_JOB_H

#include <stdint.h>
#include <stdio.h>

#include "riskflow/codec.h"
#include "riskflow/conf.h"
#include "riskflow/decl.h"
#include "riskflow/metrics.h"

#define RF_JOB_KINDS_MAX 8 /* output kinds per job (its own numbering) */

typedef struct rf_job_host rf_job_host_t; /* the engine, as jobs see it */
typedef struct rf_out_topic rf_out_topic_t; /* outputs.h */

/* One event as a job sees it in its hooks. */
struct rf_job_event {
    int32_t handle;              /* for rf_job_emit */
    const struct rf_rec *rec;
    uint8_t *const *ents;        /* by entity kind: the touched entity's value, or NULL */
    const char *topic;
    int32_t partition;
    int64_t offset;
};

/* What the engine lends a job at init. */
struct rf_job_env {
    const struct rf_conf *conf;
    const void *jconf;           /* the job's own config struct (its property table's) */
    const rf_schemas_t *schemas;
    rf_decl_t *decl;             /* not finished: register entity state now */
    int jobs_index;              /* the job's index in the engine (metrics, outputs) */
    rf_job_host_t *host;
    struct rf_metrics *metrics;
    enum rf_framing out_framing;
};

/* A model a job serves, for /metrics: borrowed strings, valid until the next reload. */
struct rf_model_info {
    const char *job;
    const char *role;    /* "serving" or "shadow" */
    const char *path;
    const char *version;
    int64_t loaded_ms;   /* Unix ms it was loaded (at start or by the last reload) */
};

struct rf_job_ops {
    const char *name;            /* "fraud": key prefix, metrics and log label */
    const char *summary;         /* one line for the config reference */
    const struct rf_conf_prop *props;
    int n_props;
    size_t conf_size;            /* the job's config struct */

    /* Load the model, resolve output schemas and topics, register entity state
     * (rf_decl_add_job_state). NULL + errstr ("key: reason") on a configuration error. */
    void *(*init)(const struct rf_job_env *env, char *errstr, size_t errstr_size);
    /* The declarations are finished (offsets known): build evaluation plans. 0, or RF_E_CONF
     * with errstr. */
    int (*ready)(void *job, char *errstr, size_t errstr_size);
    void (*destroy)(void *job);

    /* Whether it takes records of type t. */
    int (*takes)(void *job, const struct rf_rtype *t);
    /* Per event, in offset order, not for replays. before: the entities as they were (may be
     * NULL); after: with the event applied. */
    void (*before)(void *job, const struct rf_job_event *ev);
    void (*after)(void *job, const struct rf_job_event *ev);
    /* After every event of the batch: score the staged rows, write outputs. */
    void (*end_batch)(void *job);

    /* Hot reload (SIGHUP), all three NULL for a job without one. reload_stage runs OFF the
     * loop, on libuv's threadpool, while the job keeps serving: it may read the job's
     * configuration, the finished declarations and the schemas, nothing the hooks change. It
     * loads and validates the job's model files again, builds their plans and warms them up,
     * and returns what it staged (never NULL but for out of memory) with errstr naming every
     * file that failed ("" when none did). reload_swap runs on the loop between two batches:
     * it installs what loaded (a file that failed keeps its running model), frees the rest
     * and `staged`, and writes what now serves into msg; 0, or RF_E_MODEL when a file failed.
     * reload_discard frees a staged reload that will not be swapped in (the engine is
     * closing). */
    void *(*reload_stage)(void *job, char *errstr, size_t errstr_size);
    int (*reload_swap)(void *job, void *staged, char *msg, size_t msg_size);
    void (*reload_discard)(void *staged);

    /* The models it serves now, at most max (may be NULL: none). */
    int (*models)(void *job, struct rf_model_info *out, int max);

    /* Print an acknowledged output (the outputs.print sink); may be NULL. */
    void (*print)(void *job, int kind, const void *payload, size_t len, FILE *out);
    /* Names of its output kinds (for the summary and metrics), kinds entries. */
    const char *const *kind_names;
    int kinds;
};

/* An output topic on the engine's producer (created once, at init). NULL on error. */
rf_out_topic_t *rf_job_topic(rf_job_host_t *host, const char *name);

/* Write one output of an event: payload and key are copied. The engine counts it and retries
 * it until the broker acknowledges it; the event completes only then (and its state is
 * written to Redis only after that). kind: the job's own output number, 0..kinds-1. */
void rf_job_emit(rf_job_host_t *host, int32_t handle, int jobs_index, int kind,
                 rf_out_topic_t *topic, const void *key, size_t key_len, const void *payload,
                 size_t len);

/* Count an event the job passes over: of a record type it takes, but outside its filter (such
 * as fraud.score.where). It emits nothing for it; the count shows it was not lost. */
void rf_job_pass(rf_job_host_t *host, int jobs_index);

/* The wall clock in Unix ms (for "scored_at" stamps). */
int64_t rf_job_now_ms(void);

#endif
