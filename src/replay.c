/*
 * replay.c — riskflowd --replay (see replay.h): an Avro object container file through the
 * registry's decoder and feat.c, rows of features out.
 *
 * avro-c reads the container (blocks, codecs, the writer schema); each record is written back
 * to its binary encoding and decoded by our own decoder (codec_avro.c), the one the daemon
 * runs, so that a record means here exactly what it means online. Entities live in a hash
 * table of their stored values; there is no Redis, no Kafka and no job. Two passes over the
 * file when it holds labels: the first collects each payment's last verdict, so a row can
 * carry its label whether the label comes before or after it.
 */
#include "riskflow/replay.h"

#include <avro.h>
#include <errno.h>
#include <inttypes.h>
#include <librdkafka/rdkafka.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "riskflow/codec.h"
#include "riskflow/decl.h"
#include "riskflow/engine.h"
#include "riskflow/err.h"
#include "riskflow/feat.h"
#include "riskflow/kafka.h"

#define BRANCHES_MAX 16
#define LABEL_TYPE "riskflow.FraudLabel"

/* ---- a string-keyed hash table: entities (value per (kind, id)) and labels ---- */

struct slot {
    char *key;        /* kind byte + id; NULL: empty */
    size_t key_len;
    uint64_t *value;  /* entities: the stored value (8-aligned) */
    int64_t time;     /* labels: the label time */
    int verdict;      /* labels: 0 or 1 */
};

struct table {
    struct slot *s;
    size_t cap, n;
};

static uint64_t hash_bytes(const char *p, size_t n) {
    return rf_fnv1a64(p, n);
}

static int table_grow(struct table *t) {
    size_t cap = t->cap ? 2 * t->cap : 4096;
    struct slot *ns = calloc(cap, sizeof *ns);
    if (!ns)
        return RF_E_NOMEM;
    for (size_t i = 0; i < t->cap; i++) {
        if (!t->s[i].key)
            continue;
        size_t j = hash_bytes(t->s[i].key, t->s[i].key_len) & (cap - 1);
        while (ns[j].key)
            j = (j + 1) & (cap - 1);
        ns[j] = t->s[i];
    }
    free(t->s);
    t->s = ns;
    t->cap = cap;
    return 0;
}

/* Where key is, or the empty slot where it would go (the table has one: it is kept at most
 * half full). */
static size_t table_probe(const struct table *t, const char *key, size_t len) {
    size_t j = hash_bytes(key, len) & (t->cap - 1);
    while (t->s[j].key && !(t->s[j].key_len == len && memcmp(t->s[j].key, key, len) == 0))
        j = (j + 1) & (t->cap - 1);
    return j;
}

/* The slot of key (created empty when absent: *created = 1). NULL when out of memory. */
static struct slot *table_get(struct table *t, const char *key, size_t len, int *created) {
    if ((t->n + 1) * 2 > t->cap && table_grow(t) != 0)
        return NULL;
    struct slot *s = &t->s[table_probe(t, key, len)];
    *created = s->key == NULL;
    if (!*created)
        return s;
    char *k = malloc(len + 1);
    if (!k)
        return NULL;
    memcpy(k, key, len);
    k[len] = 0;
    s->key = k;
    s->key_len = len;
    t->n++;
    return s;
}

static const struct slot *table_find(const struct table *t, const char *key, size_t len) {
    if (!t->cap)
        return NULL;
    const struct slot *s = &t->s[table_probe(t, key, len)];
    return s->key ? s : NULL;
}

static void table_free(struct table *t) {
    for (size_t i = 0; i < t->cap; i++) {
        free(t->s[i].key);
        free(t->s[i].value);
    }
    free(t->s);
    memset(t, 0, sizeof *t);
}

/* ---- the container ---- */

struct reader {
    const char *path;
    /* a topic's offset range instead of a file (path NULL) */
    rd_kafka_t *rk;
    rd_kafka_message_t *rkm;   /* the record handed out last */
    char topic[256];
    int32_t partition;
    int64_t from, to;          /* [from, to) */
    int framing;
    int32_t plain_type;
    const rf_schemas_t *schemas;
    size_t max_bytes;
    avro_file_reader_t fr;
    avro_schema_t wschema;
    avro_value_iface_t *iface;
    avro_value_t val;
    int have_val;
    int is_union;
    int n_branches;
    const struct rf_rtype *branch[BRANCHES_MAX]; /* by writer branch */
    avro_writer_t w;
    char *buf;
    size_t buf_cap;
};

static void reader_close(struct reader *r) {
    if (r->rkm)
        rd_kafka_message_destroy(r->rkm);
    if (r->rk) {
        rd_kafka_consumer_close(r->rk);
        rd_kafka_destroy(r->rk);
    }
    if (r->have_val)
        avro_value_decref(&r->val);
    if (r->iface)
        avro_value_iface_decref(r->iface);
    if (r->w)
        avro_writer_free(r->w);
    if (r->wschema)
        avro_schema_decref(r->wschema); /* the getter hands out a reference of its own */
    if (r->fr)
        avro_file_reader_close(r->fr);
    free(r->buf);
    memset(r, 0, sizeof *r);
}

/* The registry's record type for a writer (branch) schema, which must be the registry's own. */
static const struct rf_rtype *match_type(const rf_schemas_t *schemas, avro_schema_t s,
                                         const char *path, char *errstr, size_t size) {
    if (!is_avro_record(s)) {
        rf_errf(errstr, size, path, "the file's schema is neither a record nor a union of "
                                    "records");
        return NULL;
    }
    char full[512];
    const char *ns = avro_schema_namespace(s);
    snprintf(full, sizeof full, "%s%s%s", ns && *ns ? ns : "", ns && *ns ? "." : "",
             avro_schema_name(s));
    int id = rf_schemas_find(schemas, full);
    const struct rf_rtype *t = id >= 0 ? rf_schemas_rtype(schemas, id) : NULL;
    if (!t) {
        rf_errf(errstr, size, path, "record %s is not an input record type of the registry",
                full);
        return NULL;
    }
    if (!avro_schema_equal(s, rf_schemas_avro(schemas, id))) {
        rf_errf(errstr, size, path, "record %s: the file's schema is not the registry's "
                                    "(schemas/ holds the one riskflowd decodes)", full);
        return NULL;
    }
    return t;
}

static int reader_open(struct reader *r, const char *path, const rf_schemas_t *schemas,
                       char *errstr, size_t size) {
    memset(r, 0, sizeof *r);
    r->path = path;
    if (avro_file_reader(path, &r->fr) != 0) {
        r->fr = NULL;
        rf_errf(errstr, size, path, "not an Avro object container file: %s", avro_strerror());
        return RF_E_CONF;
    }
    r->wschema = avro_file_reader_get_writer_schema(r->fr);
    r->is_union = is_avro_union(r->wschema);
    r->n_branches = r->is_union ? (int)avro_schema_union_size(r->wschema) : 1;
    if (r->n_branches > BRANCHES_MAX) {
        rf_errf(errstr, size, path, "a union of %d records, at most %d", r->n_branches,
                BRANCHES_MAX);
        return RF_E_CONF;
    }
    for (int i = 0; i < r->n_branches; i++) {
        avro_schema_t b = r->is_union ? avro_schema_union_branch(r->wschema, i) : r->wschema;
        r->branch[i] = match_type(schemas, b, path, errstr, size);
        if (!r->branch[i])
            return RF_E_CONF;
    }
    r->iface = avro_generic_class_from_schema(r->wschema);
    if (!r->iface || avro_generic_value_new(r->iface, &r->val) != 0) {
        rf_errf(errstr, size, path, "avro-c: %s", avro_strerror());
        return RF_E_NOMEM;
    }
    r->have_val = 1;
    r->w = avro_writer_memory(NULL, 0);
    return r->w ? 0 : RF_E_NOMEM;
}

/* "TOPIC:PARTITION:FROM:TO" (TO exclusive; -1: the end offset when the replay starts). */
static int topic_open(struct reader *r, const struct rf_conf *conf, const rf_schemas_t *schemas,
                      const char *spec, char *errstr, size_t size) {
    memset(r, 0, sizeof *r);
    long long from, to;
    int part, used = 0;
    char topic[256];
    /* Kafka topic names are [a-zA-Z0-9._-]: the first ':' ends the topic. */
    const char *c1 = strchr(spec, ':');
    if (!c1 || (size_t)(c1 - spec) >= sizeof topic || c1 == spec ||
        sscanf(c1 + 1, "%d:%lld:%lld%n", &part, &from, &to, &used) != 3 || c1[1 + used] != 0 ||
        part < 0 || from < 0 || (to >= 0 && to < from)) {
        snprintf(errstr, size, "--replay-topic: '%s': expected TOPIC:PARTITION:FROM:TO (TO "
                 "exclusive, -1 for the end)", spec);
        return RF_E_CONF;
    }
    memcpy(topic, spec, (size_t)(c1 - spec));
    topic[c1 - spec] = 0;
    snprintf(r->topic, sizeof r->topic, "%s", topic);
    r->partition = part;
    r->from = from;
    r->to = to;
    r->schemas = schemas;
    r->max_bytes = (size_t)conf->input_max_bytes;
    rf_engine_topic_type(conf, schemas, topic, &r->framing, &r->plain_type);
    struct rf_kafka_consumer_cbs cbs = {0};
    r->rk = rf_kafka_consumer_new(conf, NULL, "riskflowd.replay", &cbs, errstr, size);
    if (!r->rk)
        return RF_E_CONF;
    if (r->to < 0) {
        int64_t lo, hi;
        rd_kafka_resp_err_t err =
            rd_kafka_query_watermark_offsets(r->rk, topic, part, &lo, &hi, 15000);
        if (err) {
            snprintf(errstr, size, "%s [%d]: end offset: %s", topic, part, rd_kafka_err2str(err));
            return RF_E_IO;
        }
        r->to = hi;
    }
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(l, topic, part)->offset = from;
    rd_kafka_resp_err_t err = rd_kafka_assign(r->rk, l);
    rd_kafka_topic_partition_list_destroy(l);
    if (err) {
        snprintf(errstr, size, "%s [%d]: assign: %s", topic, part, rd_kafka_err2str(err));
        return RF_E_IO;
    }
    return 0;
}

static int topic_next(struct reader *r, const struct rf_rtype **t, const uint8_t **body,
                      size_t *len, char *errstr, size_t size) {
    if (r->rkm) {
        rd_kafka_message_destroy(r->rkm);
        r->rkm = NULL;
    }
    if (r->from >= r->to)
        return 0;
    int idle_ms = 0;
    for (;;) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(r->rk, 500);
        if (!m) {
            /* Nothing for 30 s while short of the range's end: the range is not there. */
            if ((idle_ms += 500) >= 30000) {
                snprintf(errstr, size,
                         "%s [%" PRId32 "]: no message for 30 s before offset %" PRId64, r->topic,
                         r->partition, r->to);
                return RF_E_TIMEOUT;
            }
            continue;
        }
        idle_ms = 0;
        if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            rd_kafka_message_destroy(m);
            continue;
        }
        if (m->err) {
            snprintf(errstr, size, "%s [%" PRId32 "]: %s", r->topic, r->partition,
                     rd_kafka_message_errstr(m));
            rd_kafka_message_destroy(m);
            return RF_E_KAFKA;
        }
        if (m->offset >= r->to) {
            rd_kafka_message_destroy(m);
            return 0;
        }
        r->from = m->offset + 1;
        r->rkm = m;
        int32_t id = r->plain_type;
        int rc = rf_frame(m->payload, m->len, (enum rf_framing)r->framing, r->max_bytes, &id, body,
                          len);
        const struct rf_rtype *rt = rc == 0 ? rf_schemas_rtype(r->schemas, id) : NULL;
        if (!rt) {
            /* What the daemon dead-letters, the replay skips: the caller counts it. */
            *t = NULL;
            return 1;
        }
        *t = rt;
        return 1;
    }
}

/* The next record: its type and binary encoding (*t NULL for a topic's message that is not
 * a record of the registry). 1, 0 at the end, or a negative RF_E_*. */
static int reader_next(struct reader *r, const struct rf_rtype **t, const uint8_t **body,
                       size_t *len, char *errstr, size_t size) {
    if (r->rk)
        return topic_next(r, t, body, len, errstr, size);
    int rc = avro_file_reader_read_value(r->fr, &r->val);
    if (rc == EOF)
        return 0;
    if (rc != 0) {
        rf_errf(errstr, size, r->path, "reading: %s", avro_strerror());
        return RF_E_IO;
    }
    avro_value_t rec = r->val;
    int which = 0;
    if (r->is_union) {
        if (avro_value_get_discriminant(&r->val, &which) != 0 ||
            avro_value_get_current_branch(&r->val, &rec) != 0 || which < 0 ||
            which >= r->n_branches) {
            rf_errf(errstr, size, r->path, "a union value without a branch");
            return RF_E_MALFORMED;
        }
    }
    size_t n;
    if (avro_value_sizeof(&rec, &n) != 0) {
        rf_errf(errstr, size, r->path, "avro-c: %s", avro_strerror());
        return RF_E_MALFORMED;
    }
    if (n > r->buf_cap) {
        char *nb = realloc(r->buf, n);
        if (!nb)
            return RF_E_NOMEM;
        r->buf = nb;
        r->buf_cap = n;
    }
    avro_writer_memory_set_dest(r->w, r->buf, (int64_t)n);
    if (avro_value_write(r->w, &rec) != 0) {
        rf_errf(errstr, size, r->path, "avro-c: %s", avro_strerror());
        return RF_E_MALFORMED;
    }
    *t = r->branch[which];
    *body = (const uint8_t *)r->buf;
    *len = n;
    return 1;
}

/* ---- numbers ---- */

/* The shortest of %.15g, %.16g, %.17g that reads back to x (17 always does). */
static int fmt_double(char *out, size_t size, double x) {
    for (int p = 15; p <= 17; p++) {
        int n = snprintf(out, size, "%.*g", p, x);
        if (p == 17 || strtod(out, NULL) == x)
            return n;
    }
    return 0;
}

/* ---- the run ---- */

static int collect_labels(struct reader *r, struct table *labels, struct rf_replay_stats *st,
                          char *errstr, size_t size) {
    const struct rf_rtype *t;
    const uint8_t *body;
    size_t len;
    struct rf_rec rec;
    int rc;
    while ((rc = reader_next(r, &t, &body, &len, errstr, size)) == 1) {
        if (!t || strcmp(t->fullname, LABEL_TYPE) != 0)
            continue;
        if (rf_rec_decode(t, body, len, &rec) != 0)
            continue; /* the second pass says which record and why */
        st->labels++;
        size_t n;
        const char *pid = rf_rec_str(&rec, rf_rtype_field(t, "payment_id"), &n);
        int created;
        struct slot *s = table_get(labels, pid, n, &created);
        if (!s)
            return RF_E_NOMEM;
        int64_t lt = rf_rec_time(&rec);
        /* The latest verdict by label time (a tie: the later in the file). */
        if (created || lt >= s->time) {
            s->time = lt;
            s->verdict = rec.v[rf_rtype_field(t, "is_fraud")].i != 0;
        }
    }
    return rc;
}

int rf_replay_run(const struct rf_conf *conf, const struct rf_replay_opts *o,
                  struct rf_replay_stats *st, char *errstr, size_t size) {
    char err[768];
    int rc = RF_E_CONF;
    memset(st, 0, sizeof *st);
    struct reader r = {0};
    struct table ents = {0}, labels = {0};
    rf_feat_plan_t *plan = NULL;
    FILE *out = NULL;
    const char **names = NULL;
    rf_decl_t *decl = NULL;
    rf_schemas_t *schemas = rf_schemas_load(conf->schemas_dir, err, sizeof err);
    if (!schemas) {
        snprintf(errstr, size, "schemas.dir: %s", err);
        return RF_E_CONF;
    }
    decl = rf_decl_load(conf->features_path, schemas, err, sizeof err);
    if (!decl || rf_decl_finish(decl, err, sizeof err) != 0) {
        snprintf(errstr, size, "%s", err);
        goto done;
    }
    const char *row_name = o->row_type ? o->row_type : "riskflow.Payment";
    const struct rf_rtype *row_t = rf_schemas_rtype_named(schemas, row_name);
    if (!row_t) {
        snprintf(errstr, size, "--rows: %s is not an input record type of the registry",
                 row_name);
        goto done;
    }
    /* Every feature available for the row type, in file order. */
    int nf = rf_decl_n_features(decl), n = 0;
    names = calloc((size_t)nf + 1, sizeof *names);
    if (!names) {
        rc = RF_E_NOMEM;
        goto done;
    }
    for (int i = 0; i < nf; i++)
        if (rf_decl_available(decl, i, row_t))
            names[n++] = rf_decl_feature(decl, i)->name;
    plan = rf_feat_plan_new(decl, names, n, &row_t, 1, err, sizeof err);
    if (!plan) {
        snprintf(errstr, size, "%s", err);
        goto done;
    }
    int f_id = rf_rtype_field(row_t, "event_id");

    /* Pass 1: the labels (a topic may hold any type: always read it twice). */
#define OPEN(r) (o->in_path ? reader_open(r, o->in_path, schemas, errstr, size) \
                            : topic_open(r, conf, schemas, o->topic, errstr, size))
    if ((rc = OPEN(&r)) != 0)
        goto done;
    int has_labels = !o->in_path && rf_schemas_rtype_named(schemas, LABEL_TYPE);
    for (int i = 0; i < r.n_branches; i++)
        has_labels |= strcmp(r.branch[i]->fullname, LABEL_TYPE) == 0;
    if (has_labels) {
        rc = collect_labels(&r, &labels, st, errstr, size);
        if (rc < 0)
            goto done;
        reader_close(&r);
        if ((rc = OPEN(&r)) != 0)
            goto done;
    }
#undef OPEN
    rc = RF_E_IO;
    out = !o->out_path || strcmp(o->out_path, "-") == 0 ? stdout : fopen(o->out_path, "w");
    if (!out) {
        snprintf(errstr, size, "%s: %s", o->out_path, strerror(errno));
        goto done;
    }
    fprintf(out, "event_id,event_time");
    for (int i = 0; i < n; i++)
        fprintf(out, ",%s", names[i]);
    fprintf(out, ",label\n");

    /* Pass 2: apply every record, a row for each of the row type. */
    int n_kinds = rf_decl_n_kinds(decl);
    uint64_t late_ms = (uint64_t)conf->input_max_lateness_s * 1000;
    double *x = calloc((size_t)n + 1, sizeof *x);
    if (!x) {
        rc = RF_E_NOMEM;
        goto done;
    }
    const struct rf_rtype *t;
    const uint8_t *body;
    size_t len;
    struct rf_rec rec;
    int more;
    uint32_t topic_id = rf_feat_topic_id(o->in_path ? o->in_path : r.topic);
    while ((more = reader_next(&r, &t, &body, &len, errstr, size)) == 1) {
        st->records++;
        /* Not a record of the registry, or one the decoder refuses: dead-lettered online. */
        if (!t || rf_rec_decode(t, body, len, &rec) != 0) {
            st->skipped_malformed++;
            continue;
        }
        /* A type the rows' features do not read: the daemon's fraud job does not take it
         * (wrong_type when no other job does), so nothing of it is applied. */
        if (t != row_t && !rf_feat_plan_reads(plan, t)) {
            st->skipped_wrong_type++;
            continue;
        }
        if (rf_rec_time(&rec) < 0) {
            st->skipped_bad_time++;
            continue;
        }
        uint8_t *ev[RF_KINDS_MAX] = {0};
        int bad = 0;
        for (int k = 0; k < n_kinds && !bad; k++) {
            int f = rf_decl_key_field(decl, k, t);
            if (f < 0)
                continue;
            size_t idn;
            const char *id = rf_rec_str(&rec, f, &idn);
            if (idn == 0) {
                bad = 1;
                break;
            }
            char key[RF_FIELD_STR_MAX + 2];
            key[0] = (char)k;
            memcpy(key + 1, id, idn);
            int created;
            struct slot *s = table_get(&ents, key, idn + 1, &created);
            if (!s) {
                rc = RF_E_NOMEM;
                free(x);
                goto done;
            }
            if (created) {
                s->value = aligned_alloc(8, (rf_decl_value_size(decl, k) + 7) / 8 * 8);
                if (!s->value) {
                    rc = RF_E_NOMEM;
                    free(x);
                    goto done;
                }
                rf_feat_init_value(decl, k, (uint8_t *)s->value);
            }
            ev[k] = (uint8_t *)s->value;
        }
        if (bad) {
            st->skipped_bad_key++;
            continue;
        }
        if (rf_feat_too_late(decl, &rec, ev, late_ms)) {
            st->skipped_too_late++;
            continue;
        }
        struct rf_src src = {topic_id, 0, (int64_t)st->records};
        rf_feat_apply(decl, &rec, ev, &src);
        st->applied++;
        if (t != row_t)
            continue;
        rf_feat_eval(plan, &rec, ev, x);
        char num[40];
        size_t idn = 0;
        const char *id = f_id >= 0 ? rf_rec_str(&rec, f_id, &idn) : "";
        fprintf(out, "%.*s,%lld", (int)idn, id, (long long)rf_rec_time(&rec));
        for (int i = 0; i < n; i++) {
            fmt_double(num, sizeof num, x[i]);
            fprintf(out, ",%s", num);
        }
        /* Labels name payments by their event_id. */
        const struct slot *lab = labels.n && f_id >= 0 ? table_find(&labels, id, idn) : NULL;
        if (lab) {
            st->labelled++;
            fprintf(out, ",%d\n", lab->verdict);
        } else {
            fputs(",\n", out);
        }
        st->rows++;
    }
    free(x);
    if (more < 0) {
        rc = more;
        goto done;
    }
    if (fflush(out) != 0 || ferror(out)) {
        snprintf(errstr, size, "%s: write error", o->out_path ? o->out_path : "stdout");
        rc = RF_E_IO;
        goto done;
    }
    st->entities = ents.n;
    rc = 0;
done:
    if (out && out != stdout)
        fclose(out);
    reader_close(&r);
    table_free(&ents);
    table_free(&labels);
    rf_feat_plan_destroy(plan);
    free(names);
    rf_decl_destroy(decl);
    rf_schemas_destroy(schemas);
    return rc;
}
