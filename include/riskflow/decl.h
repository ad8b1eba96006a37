/*
 * decl.h — declared entities and features: the parsed feature file and each entity kind's
 * stored layout (docs/FEATURES.md is the specification; this header is its C contract).
 *
 * Owns the parsed declarations: entity kinds (with the field that keys them in each record
 * type), the stateful, value() and derived features, the windows (groups) and their columns,
 * the scalar and previous-value slots, the job-state regions jobs register, and per kind the
 * value size and the layout hash. Built once at start (allocation, file I/O), immutable after
 * rf_decl_finish(), then read from the loop thread by feat.c and the jobs.
 * Must never: accept a declaration FEATURES.md does not (every error names FILE:LINE), or lay
 * out a kind differently from FEATURES.md §4 (tools/train/riskflow_features.py --layout prints
 * the same offsets, and the tests compare).
 */
#ifndef RISKFLOW_DECL_H
#define RISKFLOW_DECL_H

#include <stddef.h>
#include <stdint.h>

#include "riskflow/codec.h"

#define RF_KINDS_MAX 8        /* entity kinds */
#define RF_DECL_FEATURES_MAX 256 /* feature + derived lines */
#define RF_NAME_MAX 48        /* feature and kind names, NUL included */
#define RF_WHERE_MAX 4        /* conditions of one where */
#define RF_TILES_MAX 128
#define RF_RING_MAX 512       /* tiles of one window's ring: TILES + delay/tile */
#define RF_VALUE_MAX 16384    /* bytes of one stored entity value */
#define RF_JOBS_MAX 8
#define RF_SOURCES 4          /* replay watermarks per entity */

/* The stored value's header (FEATURES.md §4). */
#define RF_VALUE_MAGIC 0x31454652u /* "RFE1" */
#define RF_VALUE_VERSION 1
#define RF_VALUE_HEADER 88
#define RF_VOFF_MAGIC 0
#define RF_VOFF_VERSION 4
#define RF_VOFF_NSOURCES 6
#define RF_VOFF_HASH 8
#define RF_VOFF_TLAST 16
#define RF_VOFF_SOURCES 24 /* RF_SOURCES × {u32 topic_id, i32 partition, i64 offset} */

typedef struct rf_decl_s rf_decl_t;

enum rf_agg {
    RF_AGG_COUNT,
    RF_AGG_SUM,
    RF_AGG_MEAN,
    RF_AGG_STD,
    RF_AGG_SUMSQ,
    RF_AGG_MIN,
    RF_AGG_MAX,
    RF_AGG_LAST,
    RF_AGG_TSL, /* time_since_last */
    RF_AGG_AGE,
    RF_AGG_EWMA,
    RF_AGG_DSUM,
    RF_AGG_VALUE,
    RF_AGG_DERIVED
};

enum rf_input_op {
    RF_IN_NONE, /* value() without input: the indicator */
    RF_IN_FIELD,
    RF_IN_MUL,
    RF_IN_DIV,
    RF_IN_HOUR,
    RF_IN_WEEKDAY,
    RF_IN_CHANGE,
    RF_IN_LOGCHANGE,
    RF_IN_DELTA
};

struct rf_input {
    enum rf_input_op op;
    int field;     /* in the feature's record type */
    double k;      /* MUL/DIV */
    int prev;      /* CHANGE/LOGCHANGE/DELTA: previous-value slot of the kind */
    int dkind;     /* DELTA: the kind that keeps that slot */
};

enum rf_cmp { RF_CMP_EQ, RF_CMP_NE, RF_CMP_LT, RF_CMP_LE, RF_CMP_GT, RF_CMP_GE };

struct rf_cond {
    int field;
    int hour;         /* LHS is hour(field) (1) or weekday(field) (2) */
    enum rf_cmp cmp;
    double num;       /* numeric, boolean or enum (the symbol index) RHS */
    char str[RF_FIELD_STR_MAX + 1]; /* string RHS */
    uint32_t str_len;
    int is_str;
};

struct rf_where {
    int n;
    struct rf_cond c[RF_WHERE_MAX];
};

enum rf_col { RF_COL_SUM, RF_COL_M2, RF_COL_SQ, RF_COL_MIN, RF_COL_MAX };

enum rf_derived_op { RF_D_RATIO, RF_D_DIFF, RF_D_IMBALANCE, RF_D_LOGRATIO, RF_D_LOG1P, RF_D_SQRT };

/* One feature or derived line. Read-only after rf_decl_finish. */
struct rf_feature {
    char name[RF_NAME_MAX];
    int line;
    enum rf_agg agg;
    int kind;                     /* stateful, or value() with per: the kind; else -1 */
    const struct rf_rtype *rec;   /* on RECORD; NULL for derived */
    struct rf_input in;
    struct rf_where where;
    /* windowed aggregations */
    int group;                    /* index in its kind's groups */
    uint32_t col[5];              /* offsets of the columns it reads, by enum rf_col */
    /* scalar aggregations */
    uint32_t off;
    double cap_s;                 /* time_since_last, age */
    int64_t halflife_ms;          /* ewma, dsum */
    /* derived */
    enum rf_derived_op op;
    int a, b;                     /* feature ids of the arguments (b: -1 for one-argument ops) */
    double scale, dflt;
};

/*
 * Parse "COND [and COND]..." (FEATURES.md §2.4) on record type rec into *out; the empty text is
 * no condition (everything matches). what names the text in errors ("WHAT: message"), e.g. a
 * config key. Jobs use it to choose which events they score.
 */
int rf_where_parse(const struct rf_rtype *rec, const char *text, const char *what,
                   struct rf_where *out, char *errstr, size_t errstr_size);

/*
 * Parse the feature file. NULL + errstr ("FILE:LINE: message") on any error. schemas is
 * borrowed and must outlive the result. The result accepts job-state registrations until
 * rf_decl_finish().
 */
rf_decl_t *rf_decl_load(const char *path, const rf_schemas_t *schemas, char *errstr,
                        size_t errstr_size);
void rf_decl_destroy(rf_decl_t *d); /* accepts NULL */

/* A job keeps `bytes` of state on each entity of kind `kind`, laid out in registration order
 * (the order of jobs=). *job_slot gets the handle for rf_decl_job_off(). RF_E_INVAL after
 * rf_decl_finish, for an unknown kind, or when the value would exceed RF_VALUE_MAX. */
int rf_decl_add_job_state(rf_decl_t *d, int kind, const char *job, int version, uint32_t bytes,
                          int *job_slot);

/* Lay out every kind (FEATURES.md §4) and compute the hashes; no more registrations. 0 or
 * RF_E_CONF with errstr when a value would exceed RF_VALUE_MAX. */
int rf_decl_finish(rf_decl_t *d, char *errstr, size_t errstr_size);

const char *rf_decl_path(const rf_decl_t *d);
const rf_schemas_t *rf_decl_schemas(const rf_decl_t *d);

/* ---- kinds ---- */
int rf_decl_n_kinds(const rf_decl_t *d);
int rf_decl_kind(const rf_decl_t *d, const char *name); /* index or RF_E_NOTFOUND */
const char *rf_decl_kind_name(const rf_decl_t *d, int kind);
uint32_t rf_decl_value_size(const rf_decl_t *d, int kind);
uint64_t rf_decl_hash(const rf_decl_t *d, int kind);
/* The canonical text hashed for a kind (borrowed). */
const char *rf_decl_canonical(const rf_decl_t *d, int kind);
/* ttl=DUR of the kind's entity line: values expire this long after their last write (Redis
 * PX); 0 when they never do. */
int64_t rf_decl_ttl_ms(const rf_decl_t *d, int kind);
/* 1 for a `sliced` kind (FEATURES.md §2.1): each input partition keeps its own slice of an
 * entity (one writer, its own replay watermark), stored as a field of one Redis hash, and the
 * entity's features read the sum of the slices. Only what adds up across slices is kept on it
 * (the parser refuses time_since_last, previous values and job state). */
int rf_decl_sliced(const rf_decl_t *d, int kind);
/* 1 for a kind that keeps previous values (change(), delta() read them) or job state: in a
 * Redis Cluster its values are written after the others (store.h), so when one of its
 * entities holds an event every other entity of the event does too. */
int rf_decl_written_last(const rf_decl_t *d, int kind);
/* The key field of `kind` in record type t, or -1 when t does not touch the kind. */
int rf_decl_key_field(const rf_decl_t *d, int kind, const struct rf_rtype *t);
/* Offset of a job's state in a value of its kind. */
uint32_t rf_decl_job_off(const rf_decl_t *d, int job_slot);

/* ---- features ---- */
int rf_decl_n_features(const rf_decl_t *d);
const struct rf_feature *rf_decl_feature(const rf_decl_t *d, int id);
int rf_decl_find(const rf_decl_t *d, const char *name); /* id or RF_E_NOTFOUND */
/* Whether feature id is available for record type t (FEATURES.md §2.7). */
int rf_decl_available(const rf_decl_t *d, int id, const struct rf_rtype *t);

/* FNV-1a 64 (offset basis 14695981039346656037, prime 1099511628211) of n bytes: the layout
 * hash, and the model signatures jobs keep with their state. */
uint64_t rf_fnv1a64(const void *data, size_t n);

/* FNV-1a 32 (offset basis 2166136261, prime 16777619) of n bytes: topic ids in stored
 * values, the store's cache table. Inline: the store hashes every key it looks up. */
static inline uint32_t rf_fnv1a32(const void *data, size_t n) {
    const uint8_t *p = data;
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 16777619u;
    }
    return h;
}

/* Print each kind's layout (offsets and sizes of every slot, size, hash, canonical text):
 * the same listing as riskflow_features.py --layout. */
void rf_decl_print_layout(const rf_decl_t *d, void *file /* FILE * */);

#endif
