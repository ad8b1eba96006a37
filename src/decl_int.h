/*
 * decl_int.h — the declarations' layout, shared by decl.c (which builds it) and feat.c (which
 * applies events and evaluates features over it). Private to those two files: everything else
 * goes through decl.h and feat.h.
 */
#ifndef RISKFLOW_DECL_INT_H
#define RISKFLOW_DECL_INT_H

#include "riskflow/decl.h"

#define GROUP_COLS_MAX 32
#define PREVS_MAX 32
#define TEXT_MAX 256

struct col {
    enum rf_col col;
    struct rf_input in;
    char in_text[TEXT_MAX]; /* the input as written: column identity */
    uint32_t off;
    int sum_col; /* RF_COL_M2: the index of the same input's sum column */
};

struct group {
    const struct rf_rtype *rec;
    struct rf_where where;
    char where_text[TEXT_MAX]; /* the conditions' tokens joined by " and " */
    int64_t tile_ms;
    int n;          /* tiles in the ring: win + delay */
    int win;        /* tiles the value covers (window=DUR/TILES) */
    int delay;      /* tiles the value is shifted back by (delay=DUR) */
    int time_field; /* time=FIELD: the record's field that picks the tile; -1: event time */
    uint32_t off; /* i64 head, then u32 cnt[n] (+4 when n is odd), then the columns */
    int n_cols;
    struct col cols[GROUP_COLS_MAX];
};

struct prev {
    const struct rf_rtype *rec;
    int field;
    uint32_t off;
};

struct job_state {
    char name[RF_NAME_MAX];
    int version;
    uint32_t bytes;
    uint32_t off;
};

struct kind {
    char name[RF_NAME_MAX];
    char key[RF_NAME_MAX + 16];
    int64_t ttl_ms; /* ttl=DUR: values expire this long after their last write; 0: never */
    int sliced;     /* sliced: one value per source partition, read as their sum */
    int *key_field; /* by record type index: the key field, or -1 */
    struct group *groups;
    int n_groups;
    int *scalars; /* feature ids of scalar aggregations, file order */
    int n_scalars;
    struct prev prevs[PREVS_MAX];
    int n_prevs;
    struct job_state jobs[RF_JOBS_MAX];
    int n_jobs;
    char *canonical;
    size_t canonical_len, canonical_cap;
    uint32_t size;
    uint64_t hash;
};

struct rf_decl_s {
    char *path;
    const rf_schemas_t *schemas;
    struct kind kinds[RF_KINDS_MAX];
    int n_kinds;
    struct rf_feature *feats;
    int n_feats;
    struct {
        int kind, job;
    } job_slots[RF_JOBS_MAX * RF_KINDS_MAX];
    int n_job_slots;
    int finished;
    int has_delta; /* some input is delta(FIELD,KIND): apply snapshots previous values first */
};


#endif
