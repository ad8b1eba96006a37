/*
 * conf.h — riskflowd's configuration: one properties file, one table.
 *
 * Owns struct rf_conf and the property table (src/conf.c) that drives parsing, defaults,
 * range checks, `-X key=value` overrides, `--dump-config` and docs/CONFIGURATION.md.
 * Keys under `kafka.` are not in the table: they pass through to librdkafka unchanged
 * (without the prefix) and librdkafka validates them when the clients are built.
 * Errors name the source and line ("riskflow.conf:12: unknown key 'foo'"); the daemon exits
 * with 78 (EX_CONFIG) on any of them. Loaded before the loop starts; read-only afterwards.
 */
#ifndef RISKFLOW_CONF_H
#define RISKFLOW_CONF_H

#include <stddef.h>
#include <stdio.h>

/* One `kafka.*` pass-through property (prefix removed). */
struct rf_conf_kv {
    char *key;
    char *value;
    char *where; /* "file:line" or "-X": librdkafka's verdict on the value names it */
};

struct rf_conf {
    /* input */
    char *input_topics;      /* comma list; "topic" or "topic:plain" / "topic:confluent" */
    char *input_framing;     /* default framing for topics without a suffix */
    int input_schema_id;     /* schema id of plain-framed payments; 0: look up riskflow.Payment */
    int input_max_bytes;     /* size cap; larger messages are dead-lettered (oversize) */
    /* outputs */
    char *scores_topic;
    char *alerts_topic;
    char *dlq_topic;
    char *output_framing;
    char *schemas_dir;
    /* feature store */
    char *store_backend;     /* "redis" or "memory" */
    char *redis_host;
    int redis_port;
    int redis_connect_timeout_ms;
    int redis_command_timeout_ms;
    char *redis_key_prefix;
    int store_cache_max;
    /* pipeline */
    int batch_max;
    int max_inflight;
    /* model */
    char *fraud_model_path;
    double fraud_threshold; /* < 0: the model's own threshold */
    /* daemon */
    int rebalance_drain_timeout_ms;
    int commit_interval_ms;
    int shutdown_timeout_ms;
    char *log_level;
    int stats_interval_ms;
    char *alerts_print;     /* "none" or "stdout": print each alert as it is acknowledged */
    /* demo (riskflowd --demo) */
    int demo_events;
    int demo_customers;
    int demo_rate;
    int demo_seed;
    /* kafka.* */
    struct rf_conf_kv *kafka;
    int n_kafka;
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

/* The value of a kafka.* pass-through key (without prefix), or NULL. */
const char *rf_conf_kafka_get(const struct rf_conf *conf, const char *key);

/* Every key with its current value, as a loadable properties file. */
void rf_conf_dump(const struct rf_conf *conf, FILE *out);

/* The configuration reference (markdown table) generated from the table. */
void rf_conf_reference(FILE *out);

#endif
