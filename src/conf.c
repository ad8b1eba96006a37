/*
 * conf.c — THE core property table, and everything driven by it and by the jobs' tables.
 *
 * One row per key: name, type, where it lives in its struct, default, bounds, allowed values
 * and the sentence that documents it. Parsing, defaults, validation, --dump-config and the
 * generated reference all read the tables (the core one here, each job's in its module), so a
 * key cannot exist in one and not the others. Runs before the loop starts; allocation is fine.
 */
#include "riskflow/conf.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "riskflow/err.h"
#include "riskflow/jobs.h"
#include "riskflow/store.h"

#define STR(name, field, def, desc) RF_PROP_S(name, struct rf_conf, field, def, desc)
#define INT(name, field, def, min, max, desc) RF_PROP_I(name, struct rf_conf, field, def, min, max, desc)
#define DBL(name, field, def, min, max, desc) RF_PROP_D(name, struct rf_conf, field, def, min, max, desc)
#define ENUM(name, field, def, values, desc) RF_PROP_E(name, struct rf_conf, field, def, values, desc)

static const struct rf_conf_prop props[] = {
    STR("input.topics", input_topics, "txn.payments",
        "Comma-separated input topics. A topic may carry its framing: `topic:confluent`, or "
        "`topic:plain` with the record type its messages hold, `topic:plain:riskflow.Trade` "
        "(without a type: input.schema.id); without a suffix it uses input.framing. "
        "Confluent-framed messages name their record type by schema id."),
    ENUM("input.framing", input_framing, "confluent", "confluent|plain",
         "Default wire framing of input messages: Confluent (magic byte 0 + 4-byte schema id "
         "+ Avro) or plain Avro."),
    INT("input.schema.id", input_schema_id, "0", 0, 2147483647,
        "Schema id of the messages of plain-framed topics that declare no record type. 0: the "
        "id of riskflow.Payment in schemas.dir/registry.txt."),
    INT("input.max.message.bytes", input_max_bytes, "65536", 16, 900000,
        "Size cap: a larger input message is dead-lettered with reason `oversize` before any "
        "decoding. A dead letter carries the original bytes up to what the producer's "
        "kafka.message.max.bytes leaves after a 4096-byte key and 2048 bytes of headers (at "
        "most 900000), cut beyond that (headers rf.truncated, rf.original.size), so it always "
        "fits; a message.max.bytes below 7168 is a configuration error."),
    INT("input.max.future.ms", input_max_future_ms, "300000", 0, 2147483647,
        "An event whose time is more than this ahead of the wall clock is dead-lettered "
        "(reason `future`), never applied: one wrong timestamp would otherwise move its "
        "entity's windows years ahead. 0: no check (replaying a simulated future)."),
    INT("input.max.lateness.s", input_max_lateness_s, "7776000", 0, 2147483647,
        "An event whose time is more than this (default 90 days, the longest window of "
        "deploy/features.conf) behind the latest event of an entity it touches is "
        "dead-lettered (reason `too_late`), never applied. Less late events update the right "
        "tiles (docs/FEATURES.md); a customer fed by two topics consumed at different paces "
        "sees its events out of time order by the lag between them. 0: no check. An event "
        "time before 1970 is always dead-lettered (`bad_time`)."),
    STR("jobs", jobs, "fraud",
        "Comma-separated jobs to run (fraud, credit, market), each with its own keys below. "
        "A record that no enabled job takes is dead-lettered (wrong_type). The order is the "
        "order of the jobs' state in entity values."),
    STR("features.path", features_path, "deploy/features.conf",
        "The feature declarations: entities, features and derived features "
        "(docs/FEATURES.md). Every model reads features declared here."),
    STR("output.dlq.topic", dlq_topic, "riskflow.dlq",
        "Dead-letter topic: the original bytes, with reason and source topic/partition/offset "
        "in headers (rf.reason, rf.error, rf.source.topic, rf.source.partition, "
        "rf.source.offset)."),
    ENUM("output.framing", output_framing, "confluent", "confluent|plain",
         "Wire framing of every job's output records."),
    ENUM("outputs.print", outputs_print, "none", "none|stdout",
         "Also print each notable output (fraud alerts, PD band changes, market signals) to "
         "stdout as the broker acknowledges it."),
    STR("schemas.dir", schemas_dir, "schemas",
        "Directory holding registry.txt (`<id> <file>` lines) and the .avsc files."),
    ENUM("store.backend", store_backend, "redis", "redis|memory",
         "Feature store: `redis` (shared, durable) or `memory` (in-process, for the demo and "
         "tests; state is lost at exit)."),
    STR("redis.host", redis_host, "127.0.0.1", "Redis host (IPv4/IPv6 address or name)."),
    INT("redis.port", redis_port, "6379", 1, 65535, "Redis port."),
    INT("redis.connect.timeout.ms", redis_connect_timeout_ms, "2000", 10, 600000,
        "Give up one connection attempt after this long (then back off and retry)."),
    INT("redis.command.timeout.ms", redis_command_timeout_ms, "2000", 10, 600000,
        "A command without a reply after this long fails with a timeout; the connection is "
        "dropped and re-established, and the work is retried."),
    ENUM("redis.on.data.loss", redis_on_data_loss, "stop", "stop|continue",
         "When Redis has lost what riskflowd wrote (the group's commits name a Redis epoch "
         "that Redis no longer holds, at start or while running: README \"Redis durability\"): "
         "`stop` exits (69 at start, 1 while running) with an error naming both epochs, so "
         "that an operator decides; `continue` adopts what Redis holds now and goes on (every "
         "entity that lost its state starts empty)."),
    STR("redis.cluster.nodes", redis_cluster_nodes, "none",
        "A Redis Cluster instead of one server: some of its masters as host:port,host:port "
        "(the rest are found with CLUSTER SLOTS); redis.host and redis.port are then unused. "
        "Commands go by hash slot, MOVED and ASK followed; a flush is written slot by slot "
        "(README \"Redis Cluster\"). none: one server."),
    STR("redis.socket", redis_socket, "none",
        "A Unix socket path to reach Redis by, instead of redis.host:redis.port (no TCP: "
        "nothing on the network to sniff). none: TCP."),
    STR("redis.user", redis_user, "none",
        "The Redis ACL user riskflowd authenticates as (AUTH user password); none: the "
        "default user (AUTH password), when redis.password.file is set."),
    STR("redis.password.file", redis_password_file, "none",
        "A file holding the Redis password, or credential:NAME for "
        "$CREDENTIALS_DIRECTORY/NAME (systemd LoadCredential=); sent as AUTH on every "
        "connection before anything else. Debian 12's hiredis 0.14 has no TLS: reach a remote "
        "Redis through stunnel on loopback or over redis.socket (README, \"Redis "
        "security\"). none: no AUTH."),
    STR("redis.key.prefix", redis_key_prefix, "rf",
        "Prefix of every Redis key (at most 32 bytes); an entity's state lives at "
        "`<prefix>:<kind>:{<id>}`."),
    ENUM("store.on.foreign", store_on_foreign, "stop", "stop|replace",
         "When an entity's Redis key holds something that is not a value of this feature "
         "file's layout (another version or declaration, garbage, a hash): `stop` sets that "
         "entity aside (its events are dead-lettered with reason `state`, the key is never "
         "written) and logs it until an operator fixes or deletes the key; `replace` starts the "
         "entity fresh over it (counted and logged)."),
    STR("input.hash.fields", input_hash_fields, "none",
        "Comma-separated string fields (a card number, say) replaced, right after decoding and "
        "before anything reads them, by a keyed hash: \"h1.\" and 32 base64url characters of "
        "HMAC-SHA256 under input.hash.key.file (README, \"Card numbers\"). Features, keys "
        "and outputs see only the token; the clear bytes in the message are zeroed (but see "
        "input.hash.dlq). At most 4. none: no field."),
    STR("input.hash.key.file", input_hash_key_file, "none",
        "The HMAC key for input.hash.fields: a file of at least 32 bytes (a trailing newline "
        "is cut), or credential:NAME for $CREDENTIALS_DIRECTORY/NAME (systemd "
        "LoadCredential=)."),
    ENUM("input.hash.dlq", input_hash_dlq, "redacted", "redacted|original",
         "What a dead letter carries when input.hash.fields is set: redacted (the message "
         "with the hashed fields' bytes zeroed; one that could not be decoded, so could not be "
         "hashed, goes without its body, header rf.body=withheld) or original (the bytes as "
         "received, card numbers in clear: the dead-letter topic is then as sensitive as the "
         "input and must be protected like it)."),
    STR("metrics.listen", metrics_listen, "none",
        "HOST:PORT of the HTTP listener serving /metrics (Prometheus text), /healthz (the loop "
        "answers) and /readyz (200 once partitions are assigned, Redis answers a PING and the "
        "models are loaded; 503 and what it waits for before that); an IPv4 address, port 0 "
        "picks one (the log says which). none: no listener."),
    INT("store.slice.refresh.ms", store_slice_refresh_ms, "1000", 0, 3600000,
        "Sliced entity kinds (docs/FEATURES.md §2.1): a slice reads the other partitions' "
        "slices of its entity from Redis again at its first use this long after the last "
        "read (0: at every batch that uses it). Features over windows that end a label delay "
        "back do not see a few seconds of staleness."),
    INT("store.cache.max.entries", store_cache_max, "200000", 16, 100000000,
        "Local cache of entity states, per entity kind. Above this, clean least-recently-used "
        "entries are evicted (with store.backend=memory nothing is ever evicted)."),
    INT("pipeline.batch.max", batch_max, "64", 1, 256,
        "Events taken from the consumer per micro-batch (one Redis round trip, one model call "
        "per job)."),
    INT("pipeline.max.inflight", max_inflight, "8192", 64, 1048576,
        "Events consumed but not yet complete (outputs acknowledged and state flushed). At the "
        "limit riskflowd stops taking messages until completions free room."),
    INT("rebalance.drain.timeout.ms", rebalance_drain_timeout_ms, "10000", 0, 600000,
        "On a revocation, how long to wait for the events already taken from those partitions "
        "to complete (outputs acknowledged, state flushed, offsets committed) before letting "
        "them go. Events still unfinished then are scored again by the next owner. 0: let go "
        "at once."),
    ENUM("processing.guarantee", processing_guarantee, "at-least-once",
         "at-least-once|exactly-once",
         "`at-least-once`: every input gets its outputs; after a crash a reader can see an "
         "output twice (identical copies). `exactly-once`: each commit interval's outputs, "
         "dead letters and input offsets are one Kafka transaction, so a `read_committed` "
         "reader sees exactly one output per input across any crash (README \"Exactly-once\"). "
         "The producer's `kafka.transactional.id` must be unique per instance (default "
         "`<group.id>.<hostname>`)."),
    INT("commit.interval.ms", commit_interval_ms, "1000", 50, 3600000,
        "Commit the stored input offsets this often (never while a cooperative rebalance is "
        "under way; librdkafka's own auto commit is off). With exactly-once, end the "
        "transaction this often: `read_committed` readers see outputs up to this much later."),
    INT("shutdown.timeout.ms", shutdown_timeout_ms, "30000", 1, 3600000,
        "On SIGTERM/SIGINT, how long to wait for in-flight events before giving up on them "
        "(their offsets are then not committed, so they are redelivered)."),
    ENUM("log.level", log_level, "info", "error|warn|notice|info|debug", "Log level."),
    INT("stats.interval.ms", stats_interval_ms, "10000", 0, 86400000,
        "Log a line of counters this often (0: never)."),
    ENUM("stats.job.time", stats_job_time, "off", "off|on",
         "on: time each job's hooks and model (two clock reads per job per event) and print "
         "each job's loop time per event in the summary (tools/bench/bench_jobs.py; the demo "
         "turns it on)."),
    INT("demo.events", demo_events, "20000", 1, 10000000,
        "--demo: synthetic card payments to generate (plus each customer's salary, credit "
        "events, the market stream and a few poison messages)."),
    INT("demo.customers", demo_customers, "2000", 1, 1000000, "--demo: customers in the stream."),
    INT("demo.rate", demo_rate, "10000", 0, 10000000,
        "--demo: card payments per second the generator produces, the other streams in step "
        "(0: as fast as it can)."),
    INT("demo.seed", demo_seed, "42", 0, 2147483647, "--demo: generator seed."),
    INT("demo.instruments", demo_instruments, "6", 1, 1000,
        "--demo: instruments in the market stream (trades and quotes over 90 simulated "
        "minutes, paced with the payments; on the second of input.topics)."),
};

#define N_PROPS (sizeof props / sizeof props[0])

static void errf(char *errstr, size_t size, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(errstr, size, fmt, ap);
    va_end(ap);
}

/* The tables: 0 is the core one over struct rf_conf, t > 0 job t-1's over conf->job[t-1]. */
static int n_tables(void) {
    return 1 + rf_jobs_n();
}

static const struct rf_conf_prop *table(int t, int *n) {
    if (t == 0) {
        *n = (int)N_PROPS;
        return props;
    }
    *n = rf_jobs_at(t - 1)->n_props;
    return rf_jobs_at(t - 1)->props;
}

static char *table_base(const struct rf_conf *conf, int t) {
    return t == 0 ? (char *)conf : (char *)conf->job[t - 1];
}

/* A key's row; *base gets the struct its value lives in. */
static const struct rf_conf_prop *find_prop(const struct rf_conf *conf, const char *name,
                                            char **base) {
    for (int t = 0; t < n_tables(); t++) {
        int n;
        const struct rf_conf_prop *rows = table(t, &n);
        for (int i = 0; i < n; i++) {
            if (strcmp(rows[i].name, name) == 0) {
                *base = table_base(conf, t);
                return &rows[i];
            }
        }
    }
    return NULL;
}

/* Remember where a key's value came from (the last setting wins, like the value). */
static int set_origin(struct rf_conf *conf, const char *key, const char *where) {
    char *w = strdup(where);
    if (!w)
        return RF_E_NOMEM;
    for (int i = 0; i < conf->n_origin; i++) {
        if (strcmp(conf->origin[i].key, key) == 0) {
            free(conf->origin[i].where);
            conf->origin[i].where = w;
            return 0;
        }
    }
    struct rf_conf_kv *o = realloc(conf->origin, sizeof *o * (size_t)(conf->n_origin + 1));
    char *k = strdup(key);
    if (!o || !k) {
        free(w);
        free(k);
        if (o)
            conf->origin = o;
        return RF_E_NOMEM;
    }
    conf->origin = o;
    o[conf->n_origin].key = k;
    o[conf->n_origin].value = NULL;
    o[conf->n_origin].where = w;
    conf->n_origin++;
    return 0;
}

const char *rf_conf_str(const struct rf_conf *conf, const char *key) {
    char *base;
    const struct rf_conf_prop *pr = find_prop(conf, key, &base);
    if (!pr || (pr->type != RF_PROP_STR && pr->type != RF_PROP_ENUM))
        return NULL;
    return *(char **)(void *)(base + pr->offset);
}

const char *rf_conf_where(const struct rf_conf *conf, const char *key) {
    for (int i = 0; i < conf->n_origin; i++)
        if (strcmp(conf->origin[i].key, key) == 0)
            return conf->origin[i].where;
    return "default";
}

static int enum_allows(const char *values, const char *v) {
    size_t n = strlen(v);
    for (const char *p = values; *p;) {
        const char *bar = strchr(p, '|');
        size_t len = bar ? (size_t)(bar - p) : strlen(p);
        if (len == n && strncmp(p, v, n) == 0)
            return 1;
        if (!bar)
            break;
        p = bar + 1;
    }
    return 0;
}

static int set_prop(char *st, const struct rf_conf_prop *pr, const char *value,
                    const char *where, char *errstr, size_t size) {
    char *base = st + pr->offset;
    char *end;
    switch (pr->type) {
    case RF_PROP_ENUM:
        if (!enum_allows(pr->values, value)) {
            errf(errstr, size, "%s: %s: '%s' is not one of %s", where, pr->name, value,
                 pr->values);
            return RF_E_CONF;
        }
        /* fall through */
    case RF_PROP_STR: {
        if (pr->type == RF_PROP_STR && *value == '\0') {
            errf(errstr, size, "%s: %s: empty value", where, pr->name);
            return RF_E_CONF;
        }
        char *copy = strdup(value);
        if (!copy) {
            errf(errstr, size, "%s: out of memory", where);
            return RF_E_NOMEM;
        }
        char **slot = (char **)(void *)base;
        free(*slot);
        *slot = copy;
        return 0;
    }
    case RF_PROP_INT: {
        errno = 0;
        long long v = strtoll(value, &end, 10);
        if (errno || end == value || *end != '\0') {
            errf(errstr, size, "%s: %s: '%s' is not an integer", where, pr->name, value);
            return RF_E_CONF;
        }
        if ((double)v < pr->min || (double)v > pr->max) {
            errf(errstr, size, "%s: %s: %lld is out of range [%.0f, %.0f]", where, pr->name, v,
                 pr->min, pr->max);
            return RF_E_CONF;
        }
        *(int *)(void *)base = (int)v;
        return 0;
    }
    case RF_PROP_DBL: {
        errno = 0;
        double v = strtod(value, &end);
        if (errno || end == value || *end != '\0' || !isfinite(v)) {
            errf(errstr, size, "%s: %s: '%s' is not a number", where, pr->name, value);
            return RF_E_CONF;
        }
        if (v < pr->min || v > pr->max) {
            errf(errstr, size, "%s: %s: %g is out of range [%g, %g]", where, pr->name, v,
                 pr->min, pr->max);
            return RF_E_CONF;
        }
        *(double *)(void *)base = v;
        return 0;
    }
    }
    return RF_E_INVAL;
}

static int set_kafka(struct rf_conf *conf, const char *key, const char *value, const char *where,
                     char *errstr, size_t size) {
    if (*key == '\0') {
        errf(errstr, size, "%s: 'kafka.' needs a librdkafka property name after it", where);
        return RF_E_CONF;
    }
    for (int i = 0; i < conf->n_kafka; i++) {
        if (strcmp(conf->kafka[i].key, key) == 0) {
            char *v = strdup(value);
            char *w = strdup(where);
            if (!v || !w) {
                free(v);
                free(w);
                goto nomem;
            }
            free(conf->kafka[i].value);
            free(conf->kafka[i].where);
            conf->kafka[i].value = v;
            conf->kafka[i].where = w;
            return 0;
        }
    }
    struct rf_conf_kv *kv = realloc(conf->kafka, sizeof *kv * (size_t)(conf->n_kafka + 1));
    if (!kv)
        goto nomem;
    conf->kafka = kv;
    kv[conf->n_kafka].key = strdup(key);
    kv[conf->n_kafka].value = strdup(value);
    kv[conf->n_kafka].where = strdup(where);
    if (!kv[conf->n_kafka].key || !kv[conf->n_kafka].value || !kv[conf->n_kafka].where) {
        free(kv[conf->n_kafka].key);
        free(kv[conf->n_kafka].value);
        free(kv[conf->n_kafka].where);
        goto nomem;
    }
    conf->n_kafka++;
    return 0;
nomem:
    errf(errstr, size, "%s: out of memory", where);
    return RF_E_NOMEM;
}

int rf_conf_set(struct rf_conf *conf, const char *key, const char *value, const char *where,
                char *errstr, size_t size) {
    if (strncmp(key, "kafka.", 6) == 0)
        return set_kafka(conf, key + 6, value, where, errstr, size);
    char *base;
    const struct rf_conf_prop *pr = find_prop(conf, key, &base);
    if (!pr) {
        errf(errstr, size, "%s: unknown key '%s' (see riskflowd --dump-config)", where, key);
        return RF_E_CONF;
    }
    int rc = set_prop(base, pr, value, where, errstr, size);
    if (rc == 0 && set_origin(conf, key, where) != 0) {
        errf(errstr, size, "%s: out of memory", where);
        return RF_E_NOMEM;
    }
    return rc;
}

struct rf_conf *rf_conf_new(char *errstr, size_t size) {
    struct rf_conf *conf = calloc(1, sizeof *conf);
    if (!conf) {
        errf(errstr, size, "out of memory");
        return NULL;
    }
    for (int j = 0; j < rf_jobs_n(); j++) {
        conf->job[j] = calloc(1, rf_jobs_at(j)->conf_size);
        if (!conf->job[j]) {
            errf(errstr, size, "out of memory");
            rf_conf_destroy(conf);
            return NULL;
        }
    }
    for (int t = 0; t < n_tables(); t++) {
        int n;
        const struct rf_conf_prop *rows = table(t, &n);
        for (int i = 0; i < n; i++) {
            if (set_prop(table_base(conf, t), &rows[i], rows[i].def, "default", errstr, size)) {
                rf_conf_destroy(conf);
                return NULL;
            }
        }
    }
    return conf;
}

void rf_conf_destroy(struct rf_conf *conf) {
    if (!conf)
        return;
    for (int t = 0; t < n_tables(); t++) {
        int n;
        const struct rf_conf_prop *rows = table(t, &n);
        char *base = table_base(conf, t);
        for (int i = 0; base && i < n; i++) {
            if (rows[i].type == RF_PROP_STR || rows[i].type == RF_PROP_ENUM)
                free(*(char **)(void *)(base + rows[i].offset));
        }
    }
    for (int j = 0; j < rf_jobs_n(); j++)
        free(conf->job[j]);
    for (int i = 0; i < conf->n_kafka; i++) {
        free(conf->kafka[i].key);
        free(conf->kafka[i].value);
        free(conf->kafka[i].where);
    }
    free(conf->kafka);
    for (int i = 0; i < conf->n_origin; i++) {
        free(conf->origin[i].key);
        free(conf->origin[i].where);
    }
    free(conf->origin);
    free(conf);
}

static char *trim(char *s) {
    while (isspace((unsigned char)*s))
        s++;
    char *e = s + strlen(s);
    while (e > s && isspace((unsigned char)e[-1]))
        *--e = '\0';
    return s;
}

/* Where key was last set ("FILE:LINE", "-X", "demo"), or NULL if never. */
static const char *where_set(const struct rf_conf *conf, const char *key) {
    if (strncmp(key, "kafka.", 6) == 0) {
        for (int i = 0; i < conf->n_kafka; i++)
            if (strcmp(conf->kafka[i].key, key + 6) == 0)
                return conf->kafka[i].where;
        return NULL;
    }
    for (int i = 0; i < conf->n_origin; i++)
        if (strcmp(conf->origin[i].key, key) == 0)
            return conf->origin[i].where;
    return NULL;
}

int rf_conf_load_file(struct rf_conf *conf, const char *path, char *errstr, size_t size) {
    FILE *f = fopen(path, "r");
    if (!f) {
        errf(errstr, size, "%s: cannot open: %s", path, strerror(errno));
        return RF_E_IO;
    }
    char line[4096];
    char where[1024];
    int lineno = 0;
    int rc = 0;
    while (fgets(line, sizeof line, f)) {
        lineno++;
        snprintf(where, sizeof where, "%s:%d", path, lineno);
        if (!strchr(line, '\n') && !feof(f)) {
            errf(errstr, size, "%s: line too long", where);
            rc = RF_E_CONF;
            break;
        }
        char *s = trim(line);
        if (*s == '\0' || *s == '#')
            continue;
        char *eq = strchr(s, '=');
        if (!eq) {
            errf(errstr, size, "%s: expected key=value", where);
            rc = RF_E_CONF;
            break;
        }
        *eq = '\0';
        char *key = trim(s);
        char *value = trim(eq + 1);
        if (*key == '\0') {
            errf(errstr, size, "%s: empty key", where);
            rc = RF_E_CONF;
            break;
        }
        /* The same key twice in one file is a mistake, not an override (that is what -X is
         * for): the reader of the file would believe the first. */
        const char *before = where_set(conf, key);
        size_t plen = strlen(path);
        if (before && strncmp(before, path, plen) == 0 && before[plen] == ':') {
            errf(errstr, size, "%s: '%s' is set twice (first at %s)", where, key, before);
            rc = RF_E_CONF;
            break;
        }
        if ((rc = rf_conf_set(conf, key, value, where, errstr, size)) != 0)
            break;
    }
    if (rc == 0 && ferror(f)) {
        errf(errstr, size, "%s: read error", path);
        rc = RF_E_IO;
    }
    fclose(f);
    return rc;
}

int rf_conf_set_kv(struct rf_conf *conf, const char *kv, char *errstr, size_t size) {
    const char *eq = strchr(kv, '=');
    if (!eq || eq == kv) {
        errf(errstr, size, "-X %s: expected key=value", kv);
        return RF_E_CONF;
    }
    char key[256];
    size_t klen = (size_t)(eq - kv);
    if (klen >= sizeof key) {
        errf(errstr, size, "-X: key too long");
        return RF_E_CONF;
    }
    memcpy(key, kv, klen);
    key[klen] = '\0';
    return rf_conf_set(conf, key, eq + 1, "-X", errstr, size);
}

const char *rf_conf_kafka_get(const struct rf_conf *conf, const char *key) {
    for (int i = 0; i < conf->n_kafka; i++)
        if (strcmp(conf->kafka[i].key, key) == 0)
            return conf->kafka[i].value;
    return NULL;
}

/* "fraud, credit, market": for messages. */
static const char *job_names(void) {
    static char buf[256];
    size_t off = 0;
    buf[0] = '\0';
    for (int i = 0; i < rf_jobs_n() && off < sizeof buf; i++)
        off += (size_t)snprintf(buf + off, sizeof buf - off, "%s%s", i ? ", " : "",
                                rf_jobs_at(i)->name);
    return buf;
}

int rf_conf_validate(const struct rf_conf *conf, int demo, char *errstr, size_t size) {
    if (!demo && !rf_conf_kafka_get(conf, "bootstrap.servers")) {
        errf(errstr, size, "kafka.bootstrap.servers is required");
        return RF_E_CONF;
    }
    if (!demo && !rf_conf_kafka_get(conf, "group.id")) {
        errf(errstr, size, "kafka.group.id is required");
        return RF_E_CONF;
    }
    if (strlen(conf->redis_key_prefix) > RF_STORE_PREFIX_MAX) {
        errf(errstr, size, "redis.key.prefix: longer than %d bytes", RF_STORE_PREFIX_MAX);
        return RF_E_CONF;
    }
    /* A transactional producer refuses every output outside a transaction: with
     * at-least-once there is none, so the daemon would stop at its first output. */
    if (strcmp(conf->processing_guarantee, "exactly-once") != 0 &&
        rf_conf_kafka_get(conf, "transactional.id")) {
        errf(errstr, size, "kafka.transactional.id is set but processing.guarantee is %s: set "
             "processing.guarantee=exactly-once, or remove it", conf->processing_guarantee);
        return RF_E_CONF;
    }
    if (conf->batch_max > conf->max_inflight) {
        errf(errstr, size, "pipeline.batch.max (%d) exceeds pipeline.max.inflight (%d)",
             conf->batch_max, conf->max_inflight);
        return RF_E_CONF;
    }
    /* Topic list syntax: checked here so a typo is a config error, not a runtime one. */
    const char *cur = conf->input_topics;
    struct rf_conf_topic t;
    int rc, n = 0;
    while ((rc = rf_conf_topic_next(&cur, &t, errstr, size)) == 1)
        n++;
    if (rc < 0)
        return rc;
    if (n == 0) {
        errf(errstr, size, "input.topics: no topic");
        return RF_E_CONF;
    }
    /* jobs: known names, each once */
    const char *j = conf->jobs;
    int seen[RF_JOBS_KNOWN_MAX] = {0};
    while (*j) {
        const char *comma = strchr(j, ',');
        size_t len = comma ? (size_t)(comma - j) : strlen(j);
        int idx = rf_jobs_find(j, len);
        if (idx < 0) {
            errf(errstr, size, "jobs: unknown job '%.*s' (known: %s)", (int)len, j, job_names());
            return RF_E_CONF;
        }
        if (seen[idx]++) {
            errf(errstr, size, "jobs: '%.*s' listed twice", (int)len, j);
            return RF_E_CONF;
        }
        if (!comma)
            break;
        j = comma + 1;
    }
    return 0;
}

int rf_conf_topic_next(const char **cursor, struct rf_conf_topic *t, char *errstr, size_t size) {
    const char *p = *cursor;
    if (!*p)
        return 0;
    const char *comma = strchr(p, ',');
    size_t len = comma ? (size_t)(comma - p) : strlen(p);
    *cursor = comma ? comma + 1 : p + len;
    memset(t, 0, sizeof *t);
    t->framing = -1;
    const char *c1 = memchr(p, ':', len);
    size_t nlen = c1 ? (size_t)(c1 - p) : len;
    if (nlen == 0 || nlen >= sizeof t->name) {
        errf(errstr, size, "input.topics: %s topic name in '%.*s'", nlen ? "too long a" : "empty",
             (int)len, p);
        return RF_E_CONF;
    }
    memcpy(t->name, p, nlen);
    if (!c1)
        return 1;
    const char *f = c1 + 1;
    size_t rest = len - nlen - 1;
    const char *c2 = memchr(f, ':', rest);
    size_t flen = c2 ? (size_t)(c2 - f) : rest;
    if (flen == 9 && strncmp(f, "confluent", 9) == 0 && !c2) {
        t->framing = 0;
    } else if (flen == 5 && strncmp(f, "plain", 5) == 0) {
        t->framing = 1;
        if (c2) {
            size_t tl = rest - flen - 1;
            if (tl == 0 || tl >= sizeof t->type) {
                errf(errstr, size, "input.topics: bad record type in '%.*s'", (int)len, p);
                return RF_E_CONF;
            }
            memcpy(t->type, c2 + 1, tl);
        }
    } else {
        errf(errstr, size, "input.topics: '%.*s': the framing must be confluent, plain or "
             "plain:RecordType", (int)len, p);
        return RF_E_CONF;
    }
    return 1;
}

static void prop_value(const char *st, const struct rf_conf_prop *pr, char *buf, size_t n) {
    const char *base = st + pr->offset;
    switch (pr->type) {
    case RF_PROP_STR:
    case RF_PROP_ENUM:
        snprintf(buf, n, "%s", *(char *const *)(const void *)base);
        break;
    case RF_PROP_INT:
        snprintf(buf, n, "%d", *(const int *)(const void *)base);
        break;
    case RF_PROP_DBL:
        snprintf(buf, n, "%.17g", *(const double *)(const void *)base);
        break;
    }
}

void rf_conf_dump(const struct rf_conf *conf, FILE *out) {
    char v[4096];
    for (int t = 0; t < n_tables(); t++) {
        int n;
        const struct rf_conf_prop *rows = table(t, &n);
        for (int i = 0; i < n; i++) {
            prop_value(table_base(conf, t), &rows[i], v, sizeof v);
            fprintf(out, "%s=%s\n", rows[i].name, v);
        }
    }
    for (int i = 0; i < conf->n_kafka; i++)
        fprintf(out, "kafka.%s=%s\n", conf->kafka[i].key, conf->kafka[i].value);
}

void rf_conf_reference(FILE *out) {
    static const char *type_names[] = {"string", "integer", "number", "one of"};
    fprintf(out, "# riskflowd configuration reference\n\n"
                 "Generated by `riskflowd --config-reference` from the property tables (the "
                 "core one in src/conf.c, each job's in src/job_<name>.c). One `key=value` per "
                 "line, `#` comments. Keys starting with "
                 "`kafka.` go to librdkafka without the prefix (both the consumer and the "
                 "producer; see librdkafka's CONFIGURATION.md). `-X key=value` on the command "
                 "line overrides the file.\n\n"
                 "| key | type | default | description |\n|---|---|---|---|\n");
    for (int t = 0; t < n_tables(); t++) {
      int n;
      const struct rf_conf_prop *rows = table(t, &n);
      for (int i = 0; i < n; i++) {
        const struct rf_conf_prop *pr = &rows[i];
        char type[160];
        if (pr->type == RF_PROP_ENUM)
            snprintf(type, sizeof type, "%s `%s`", type_names[pr->type], pr->values);
        else if (pr->type == RF_PROP_STR)
            snprintf(type, sizeof type, "%s", type_names[pr->type]);
        else
            snprintf(type, sizeof type, "%s in [%g, %g]", type_names[pr->type], pr->min,
                     pr->max);
        fprintf(out, "| `%s` | %s | `%s` | %s |\n", pr->name, type, pr->def, pr->desc);
      }
    }
}
