/*
 * exposition.c — /metrics in the Prometheus text format. See exposition.h.
 */
#include "riskflow/exposition.h"

#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "riskflow/err.h"

#define MODELS_MAX 16

static void family(struct rf_http_body *o, const char *name, const char *type, const char *help) {
    rf_http_printf(o, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* A label value with \, " and newline escaped (the format's rule), into buf. */
static const char *esc(const char *s, char *buf, size_t size) {
    size_t n = 0;
    for (; *s && n + 2 < size; s++) {
        if (*s == '\\' || *s == '"' || *s == '\n') {
            buf[n++] = '\\';
            buf[n++] = *s == '\n' ? 'n' : *s;
        } else {
            buf[n++] = *s;
        }
    }
    buf[n] = '\0';
    return buf;
}

/* One histogram series: cumulative buckets at the exported edges, +Inf, sum and count. */
static void hist(struct rf_http_body *o, const char *name, const char *labels,
                 const struct rf_hist *h) {
    const char *sep = labels[0] ? "," : "";
    for (int i = 0; i < RF_HIST_PROM_EDGES; i++) {
        uint64_t edge = rf_hist_prom_edge(i);
        rf_http_printf(o, "%s_bucket{%s%sle=\"%.6f\"} %" PRIu64 "\n", name, labels, sep,
                       (double)edge / 1e6, rf_hist_count_le(h, edge));
    }
    rf_http_printf(o, "%s_bucket{%s%sle=\"+Inf\"} %" PRIu64 "\n", name, labels, sep, h->count);
    const char *lb = labels[0] ? "{" : "", *rb = labels[0] ? "}" : "";
    rf_http_printf(o, "%s_sum%s%s%s %.6f\n%s_count%s%s%s %" PRIu64 "\n", name, lb, labels, rb,
                   (double)h->sum_us / 1e6, name, lb, labels, rb, h->count);
}

struct parts {
    struct rf_http_body *o;
    int paused;
};

static void on_part(void *arg, const char *topic, int32_t partition, int64_t lag, int paused) {
    struct parts *p = arg;
    char t[512];
    p->paused += paused;
    if (lag >= 0)
        rf_http_printf(p->o, "riskflow_consumer_lag{topic=\"%s\",partition=\"%d\"} %" PRId64 "\n",
                       esc(topic, t, sizeof t), partition, lag);
}

/* Resident and virtual size from /proc/self/statm: procfs answers from memory, never from
 * a disk, so the read cannot stall the loop. */
static void process_memory(uint64_t *rss, uint64_t *vsz) {
    *rss = *vsz = 0;
    int fd = open("/proc/self/statm", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return;
    char buf[128];
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return;
    buf[n] = '\0';
    unsigned long long pages_v, pages_r;
    if (sscanf(buf, "%llu %llu", &pages_v, &pages_r) == 2) {
        uint64_t page = (uint64_t)sysconf(_SC_PAGESIZE);
        *vsz = pages_v * page;
        *rss = pages_r * page;
    }
}

void rf_expo_render(const struct rf_expo_src *src, struct rf_http_body *o) {
    const struct rf_metrics *m = src->metrics;
    char a[256], c[512];

    family(o, "riskflow_events_in_total", "counter", "Messages taken from the input topics.");
    rf_http_printf(o, "riskflow_events_in_total %" PRIu64 "\n", m->events_in);
    family(o, "riskflow_events_total", "counter",
           "Events by job and outcome: scored (complete with its outputs), passed (outside the "
           "job's filter), dead_lettered.");
    for (int j = 0; j < RF_METRIC_JOBS; j++) {
        const struct rf_job_metrics *jm = &m->jobs[j];
        if (!jm->name)
            continue;
        rf_http_printf(o, "riskflow_events_total{job=\"%s\",outcome=\"scored\"} %" PRIu64 "\n"
                          "riskflow_events_total{job=\"%s\",outcome=\"passed\"} %" PRIu64 "\n"
                          "riskflow_events_total{job=\"%s\",outcome=\"dead_lettered\"} %" PRIu64
                          "\n",
                       jm->name, jm->events, jm->name, jm->passed, jm->name, jm->dead_lettered);
    }
    family(o, "riskflow_outputs_total", "counter", "Outputs acknowledged by the broker, by job "
           "and kind.");
    for (int j = 0; j < RF_METRIC_JOBS; j++) {
        const struct rf_job_metrics *jm = &m->jobs[j];
        for (int k = 0; jm->name && k < jm->kinds; k++)
            rf_http_printf(o, "riskflow_outputs_total{job=\"%s\",kind=\"%s\"} %" PRIu64 "\n",
                           jm->name, jm->kind_names[k], jm->outputs[k]);
    }
    family(o, "riskflow_dead_letters_total", "counter", "Dead-letter records acknowledged, by "
           "reason.");
    for (int r = 1; r < RF_DLQ_REASONS; r++)
        if (m->dlq_by_reason[r])
            rf_http_printf(o, "riskflow_dead_letters_total{reason=\"%s\"} %" PRIu64 "\n",
                           rf_err_reason(-r), m->dlq_by_reason[r]);

    static const struct {
        const char *name, *help;
        size_t off;
    } counters[] = {
#define CTR(n, f, h) {n, h, offsetof(struct rf_metrics, f)}
        CTR("riskflow_replays_total", replays, "Redelivered events their entities already held."),
        CTR("riskflow_replays_repaired_total", replays_repaired,
            "Replays some of whose entities missed them (a cluster flush cut short), applied "
            "to those."),
        CTR("riskflow_replayed_outputs_total", replayed_outputs,
            "First outputs produced again from the replay journal."),
        CTR("riskflow_produce_retries_total", produce_retries,
            "Outputs produced again after a failed delivery."),
        CTR("riskflow_store_fetches_total", store_fetches, "Redis reads of entity states."),
        CTR("riskflow_store_flushes_total", store_flushes, "Redis write-backs (MULTI/EXEC)."),
        CTR("riskflow_store_errors_total", store_errors, "Redis commands that failed (retried)."),
        CTR("riskflow_store_mismatch_total", store_mismatch,
            "Stored values not of this feature file's layout."),
        CTR("riskflow_redis_data_lost_total", redis_data_lost,
            "Times the Redis epoch was not the commits' (Redis lost data)."),
        CTR("riskflow_txn_commits_total", txn_commits, "Exactly-once transactions committed."),
        CTR("riskflow_txn_aborts_total", txn_aborts, "Exactly-once transactions aborted."),
#undef CTR
    };
    for (size_t i = 0; i < sizeof counters / sizeof counters[0]; i++) {
        uint64_t v;
        memcpy(&v, (const char *)m + counters[i].off, sizeof v);
        family(o, counters[i].name, "counter", counters[i].help);
        rf_http_printf(o, "%s %" PRIu64 "\n", counters[i].name, v);
    }

    family(o, "riskflow_latency_seconds", "histogram",
           "Per event, consumed to complete (end_to_end); its stages: load (a batch's wait for "
           "its entities' states), process (a batch's apply, features, models, encoding), ack "
           "(an event's wait for its outputs' acknowledgement and its state's write).");
    hist(o, "riskflow_latency_seconds", "stage=\"end_to_end\"", &m->latency);
    hist(o, "riskflow_latency_seconds", "stage=\"load\"", &m->stage_load);
    hist(o, "riskflow_latency_seconds", "stage=\"process\"", &m->stage_process);
    hist(o, "riskflow_latency_seconds", "stage=\"ack\"", &m->stage_ack);
    family(o, "riskflow_job_latency_seconds", "histogram",
           "Per job, its events consumed to complete.");
    for (int j = 0; j < RF_METRIC_JOBS; j++)
        if (m->jobs[j].name) {
            snprintf(a, sizeof a, "job=\"%s\"", m->jobs[j].name);
            hist(o, "riskflow_job_latency_seconds", a, &m->jobs[j].latency);
        }

    family(o, "riskflow_consumer_lag", "gauge",
           "Messages behind the partition's end (high watermark as of the last fetch minus the "
           "next offset to complete).");
    struct parts p = {o, 0};
    rf_engine_each_partition(src->engine, on_part, &p);
    family(o, "riskflow_partitions_assigned", "gauge", "Input partitions assigned here.");
    rf_http_printf(o, "riskflow_partitions_assigned %d\n", rf_engine_assigned(src->engine));
    family(o, "riskflow_partitions_paused", "gauge",
           "Assigned partitions paused (a revocation draining them).");
    rf_http_printf(o, "riskflow_partitions_paused %d\n", p.paused);
    family(o, "riskflow_events_in_flight", "gauge", "Events taken and not yet complete.");
    rf_http_printf(o, "riskflow_events_in_flight %d\n", rf_engine_inflight(src->engine));
    family(o, "riskflow_cache_entries", "gauge", "Entity states in the local cache.");
    rf_http_printf(o, "riskflow_cache_entries %d\n", rf_store_size(src->store));

    uint64_t moved, ask;
    rf_store_redirects(src->store, &moved, &ask);
    family(o, "riskflow_redis_redirects_total", "counter",
           "Redis Cluster redirects followed: moved (a slot's owner changed), ask (a slot "
           "migrating).");
    rf_http_printf(o, "riskflow_redis_redirects_total{kind=\"moved\"} %" PRIu64 "\n"
                      "riskflow_redis_redirects_total{kind=\"ask\"} %" PRIu64 "\n",
                   moved, ask);
    family(o, "riskflow_redis_rtt_seconds", "histogram", "Redis PING round trips (every second).");
    hist(o, "riskflow_redis_rtt_seconds", "", rf_health_rtt_hist(src->health));
    family(o, "riskflow_redis_up", "gauge", "1 when the last PING was answered (or no Redis).");
    rf_http_printf(o, "riskflow_redis_up %d\n", rf_health_redis_up(src->health));
    family(o, "riskflow_systemd_notify_dropped_total", "counter",
           "systemd notifications (READY, WATCHDOG, STATUS, ...) that could not be sent.");
    rf_http_printf(o, "riskflow_systemd_notify_dropped_total %" PRIu64 "\n",
                   rf_health_notify_dropped(src->health));
    const char *why;
    family(o, "riskflow_ready", "gauge",
           "1 when partitions are assigned, Redis answers and the models are loaded (/readyz).");
    rf_http_printf(o, "riskflow_ready %d\n", rf_health_ready(src->health, &why));

    struct rf_model_info mi[MODELS_MAX];
    int n = rf_engine_models(src->engine, mi, MODELS_MAX);
    family(o, "riskflow_model_info", "gauge", "The models serving, by job and role (value 1).");
    for (int i = 0; i < n; i++)
        rf_http_printf(o, "riskflow_model_info{job=\"%s\",role=\"%s\",version=\"%s\",path=\"%s\"} 1\n",
                       mi[i].job, mi[i].role, esc(mi[i].version, a, sizeof a),
                       esc(mi[i].path, c, sizeof c));
    family(o, "riskflow_model_loaded_timestamp_seconds", "gauge",
           "When each serving model was loaded (at start or by the last reload).");
    for (int i = 0; i < n; i++)
        rf_http_printf(o, "riskflow_model_loaded_timestamp_seconds{job=\"%s\",role=\"%s\"} %.3f\n",
                       mi[i].job, mi[i].role, (double)mi[i].loaded_ms / 1000.0);

    if (src->http) {
        unsigned long long hc[3];
        rf_http_counts(src->http, hc);
        family(o, "riskflow_http_requests_total", "counter", "Requests to this listener, by "
               "status class.");
        rf_http_printf(o, "riskflow_http_requests_total{code=\"2xx\"} %llu\n"
                          "riskflow_http_requests_total{code=\"4xx\"} %llu\n"
                          "riskflow_http_requests_total{code=\"5xx\"} %llu\n",
                       hc[0], hc[1], hc[2]);
    }

    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double cpu = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
                 (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
    uint64_t rss, vsz;
    process_memory(&rss, &vsz);
    family(o, "process_cpu_seconds_total", "counter", "User and system CPU time spent.");
    rf_http_printf(o, "process_cpu_seconds_total %.6f\n", cpu);
    family(o, "process_resident_memory_bytes", "gauge", "Resident memory size.");
    rf_http_printf(o, "process_resident_memory_bytes %" PRIu64 "\n", rss);
    family(o, "process_virtual_memory_bytes", "gauge", "Virtual memory size.");
    rf_http_printf(o, "process_virtual_memory_bytes %" PRIu64 "\n", vsz);
    family(o, "process_start_time_seconds", "gauge", "Start time since the Unix epoch.");
    rf_http_printf(o, "process_start_time_seconds %.3f\n", src->start_time_s);
}
