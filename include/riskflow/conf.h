/*
 * conf.h — riskflowd's configuration: one properties file, one table.
 *
 * Owns struct rf_conf and the property tables that drive parsing, defaults, range checks,
 * `-X key=value` overrides, `--dump-config` and docs/CONFIGURATION.md: the core table
 * (src/conf.c) and one table per job (its "<job>." keys, in its own module, laid over its own
 * config struct; see job.h). Keys under `kafka.` are in no table: they pass through to
 * librdkafka unchanged (without the prefix) and librdkafka validates them when the clients are
 * built. Every key remembers where its value came from ("file:line", "-X" or "default"), so
 * later errors about a value (a model that does not load) can name the line.
 * Errors name the source and line ("riskflow.conf:12: unknown key 'foo'"); the daemon exits
 * with 78 (EX_CONFIG) on any of them. Loaded before the loop starts; read-only afterwards.
 */
#ifndef RISKFLOW_CONF_H
#define RISKFLOW_CONF_H

#include <stddef.h>
#include <stdio.h>
#include <stdint.h>

enum rf_prop_type { RF_PROP_STR, RF_PROP_INT, RF_PROP_DBL, RF_PROP_ENUM };

/* One row of a property table: the key, its type, where it lives in its struct, its default
 * (as text, parsed like user input), bounds (INT, DBL), allowed values (ENUM: "a|b|c") and the
 * sentence that documents it. */
struct rf_conf_prop {
    const char *name;
    enum rf_prop_type type;
    size_t offset;
    const char *def;
    double min, max;
    const char *values;
    const char *desc;
};

#define RF_PROP_S(name, st, field, def, desc) \
    {name, RF_PROP_STR, offsetof(st, field), def, 0, 0, NULL, desc}
#define RF_PROP_I(name, st, field, def, min, max, desc) \
    {name, RF_PROP_INT, offsetof(st, field), def, min, max, NULL, desc}
#define RF_PROP_D(name, st, field, def, min, max, desc) \
    {name, RF_PROP_DBL, offsetof(st, field), def, min, max, NULL, desc}
#define RF_PROP_E(name, st, field, def, values, desc) \
    {name, RF_PROP_ENUM, offsetof(st, field), def, 0, 0, values, desc}

/* One `kafka.*` pass-through property (prefix removed). */
struct rf_conf_kv {
    char *key;
    char *value;
    char *where; /* "file:line" or "-X": librdkafka's verdict on the value names it */
};

struct rf_conf {
    /* input */
    char *input_topics;      /* comma list: "topic", "topic:confluent", "topic:plain[:Type]" */
    char *input_framing;     /* default framing for topics without a suffix */
    int input_schema_id;     /* plain topics without a type: this schema id; 0: riskflow.Payment */
    int input_max_bytes;     /* size cap; larger messages are dead-lettered (oversize) */
    int input_max_future_ms;   /* event time bound ahead of the clock (0: none) */
    int input_max_lateness_s;  /* behind an entity's latest event, seconds (0: none) */
    /* jobs and features */
    char *jobs;              /* comma list of enabled jobs, in layout order */
    char *features_path;     /* the feature declarations (docs/FEATURES.md) */
    /* outputs */
    char *dlq_topic;
    char *output_framing;
    char *outputs_print;     /* "none" or "stdout": print each notable output as acknowledged */
    char *schemas_dir;
    /* feature store */
    char *store_backend;     /* "redis" or "memory" */
    char *store_on_foreign;  /* stop|replace: a stored value not of our layout */
    int store_slice_refresh_ms; /* sliced kinds: read the other slices again after this long */
    char *metrics_listen;    /* HOST:PORT of /metrics, /healthz, /readyz; "none" */
    char *input_hash_fields; /* comma list of string fields replaced by keyed hashes; "none" */
    char *input_hash_key_file;
    char *input_hash_dlq;    /* redacted|original */
    char *redis_on_data_loss; /* stop|continue: the Redis epoch is not the commits' */
    char *processing_guarantee; /* at-least-once|exactly-once (Kafka transactions) */
    char *redis_host;
    int redis_port;
    char *redis_socket;        /* Unix socket path, or "none" */
    char *redis_cluster_nodes; /* seeds "host:port,...", or "none" */
    char *redis_user;          /* ACL user, or "none" */
    char *redis_password_file; /* file or credential:NAME, or "none" */
    int redis_connect_timeout_ms;
    int redis_command_timeout_ms;
    char *redis_key_prefix;
    int store_cache_max;
    /* pipeline */
    int batch_max;
    int max_inflight;
    /* daemon */
    int rebalance_drain_timeout_ms;
    int commit_interval_ms;
    int shutdown_timeout_ms;
    char *log_level;
    int stats_interval_ms;
    char *stats_job_time;
    /* demo (riskflowd --demo) */
    int demo_events;
    int demo_customers;
    int demo_rate;
    int demo_seed;
    int demo_instruments;
    /* the jobs' own config structs, by index in the jobs table (jobs.h) */
    void *job[8]; /* RF_JOBS_KNOWN_MAX */
    /* kafka.* */
    struct rf_conf_kv *kafka;
    int n_kafka;
    /* where each table key's value came from */
    struct rf_conf_kv *origin;
    int n_origin;
};

/* Defaults for every table key. NULL + errstr only on out-of-memory. */
struct rf_conf *rf_conf_new(char *errstr, size_t errstr_size);
void rf_conf_destroy(struct rf_conf *conf); /* accepts NULL */

/* Set one key from text; `where` names the source for errors ("file:line", "-X").
 * 0, or RF_E_CONF with "where: reason" in errstr. */
int rf_conf_set(struct rf_conf *conf, const char *key, const char *value, const char *where,
                char *errstr, size_t errstr_size);

/* Parse a properties file: key=value lines, '#' comments, blank lines, whitespace around key
 * and value trimmed. 0, or RF_E_CONF / RF_E_IO with "path:line: reason" in errstr. */
int rf_conf_load_file(struct rf_conf *conf, const char *path, char *errstr, size_t errstr_size);

/* Parse "key=value" (the -X argument). */
int rf_conf_set_kv(struct rf_conf *conf, const char *kv, char *errstr, size_t errstr_size);

/* Cross-key checks after everything is set (e.g. kafka.bootstrap.servers present unless
 * demo). demo: 1 when running --demo. 0 or RF_E_CONF. */
int rf_conf_validate(const struct rf_conf *conf, int demo, char *errstr, size_t errstr_size);

/* One entry of input.topics. framing: -1 (input.framing), 0 confluent, 1 plain; type: the
 * declared record type of a plain topic ("" when none). */
struct rf_conf_topic {
    char name[256];
    int framing;
    char type[128];
};

/* The next entry of a topic list (*cursor starts at conf->input_topics). 1 with *t filled, 0
 * at the end, RF_E_CONF with errstr on a syntax error. The one parser of input.topics. */
int rf_conf_topic_next(const char **cursor, struct rf_conf_topic *t, char *errstr,
                       size_t errstr_size);

/* The value of a string or enum key of any table (the core's or a job's), or NULL. */
const char *rf_conf_str(const struct rf_conf *conf, const char *key);

/* Where a table key's value came from: "file:line", "-X" or "default" (borrowed). */
const char *rf_conf_where(const struct rf_conf *conf, const char *key);

/* The value of a kafka.* pass-through key (without prefix), or NULL. */
const char *rf_conf_kafka_get(const struct rf_conf *conf, const char *key);

/* Every key with its current value, as a loadable properties file. */
void rf_conf_dump(const struct rf_conf *conf, FILE *out);

/* The configuration reference (markdown table) generated from the table. */
void rf_conf_reference(FILE *out);

#endif
