/*
 * feat.h — applying events to entity values and evaluating declared features over them
 * (docs/FEATURES.md §2.5–§4; the declarations come from decl.h).
 *
 * An entity value is the stored form itself (FEATURES.md §4: little-endian, natural
 * alignment): riskflowd keeps it in memory exactly as Redis holds it, so writing it back is a
 * copy. Values passed here must be 8-byte aligned buffers of rf_decl_value_size() bytes.
 *
 * Owns nothing but evaluation plans (rf_feat_plan_t: the features a model reads, in its
 * order, with the derived features they need). Pure functions over caller memory otherwise: no
 * allocation, no I/O, any thread; the loop thread calls them once per event.
 * Must never trust a value beyond rf_feat_check_value(): any bytes give some features, never
 * undefined behaviour (unsigned tile distances, saturating counts, guarded logs).
 */
#ifndef RISKFLOW_FEAT_H
#define RISKFLOW_FEAT_H

#include <stddef.h>
#include <stdint.h>

#include "riskflow/codec.h"
#include "riskflow/decl.h"

/* Where an event came from: its replay-guard source and offset. */
struct rf_src {
    uint32_t topic_id; /* rf_feat_topic_id(topic name) */
    int32_t partition;
    int64_t offset;
};

/* FNV-1a 32-bit of a topic name (offset basis 2166136261, prime 16777619): stored in values. */
uint32_t rf_feat_topic_id(const char *topic);

/* a / b rounded down (C division truncates toward zero): event-time tiles, hours and bars,
 * so times before the epoch land in the tile or bar that holds them. */
static inline int64_t rf_floordiv(int64_t a, int64_t b) {
    int64_t q = a / b;
    return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}

/* A fresh value of `kind` (FEATURES.md §4) into v[rf_decl_value_size()]. */
void rf_feat_init_value(const rf_decl_t *d, int kind, uint8_t *v);

/* Whether buf is a value of `kind` as this declaration lays it out: size, magic, version,
 * layout hash and n_sources <= 4. 0 or RF_E_MALFORMED. */
int rf_feat_check_value(const rf_decl_t *d, int kind, const uint8_t *buf, size_t len);

/* The entity time of a value (INT64_MIN when fresh). */
int64_t rf_feat_t_last(const uint8_t *v);

/*
 * ents[k] is the value of the entity of kind k the record touches, or NULL for a kind it does
 * not touch. Replay check (FEATURES.md §3): 1 when any touched entity already holds an
 * offset >= src->offset for src's (topic, partition), else 0.
 */
int rf_feat_is_replay(const rf_decl_t *d, const struct rf_rec *r, uint8_t *const ents[],
                      const struct rf_src *src);

/* Whether the record is more than late_ms behind the latest event of one of its entities
 * (input.max.lateness.s; 0: never): it is then dead-lettered (too_late), never applied.
 * Times are >= 0 here; a stored t_last may be anything (unsigned distance). */
int rf_feat_too_late(const rf_decl_t *d, const struct rf_rec *r, uint8_t *const ents[],
                     uint64_t late_ms);

/* Apply a record that is not a replay to every entity it touches (FEATURES.md §3 step 2). */
void rf_feat_apply(const rf_decl_t *d, const struct rf_rec *r, uint8_t *const ents[],
                   const struct rf_src *src);

/* A replay some of whose entities do not hold it yet (a Redis Cluster's flush writes slot by
 * slot, so a crash can leave an event in some entities only): apply it to those, previous
 * values read from all of ents as they are. Returns the kinds applied to (bit k), 0 when
 * every entity holds it. */
uint32_t rf_feat_apply_missing(const rf_decl_t *d, const struct rf_rec *r, uint8_t *const ents[],
                               const struct rf_src *src);

/*
 * Add slice src of a sliced kind (decl.h rf_decl_sliced) into dst, both values of `kind`:
 * afterwards dst is the value one entity would hold had it been fed both slices' events — per
 * window, the later head of the two, and each tile both rings hold pooled (counts and sums
 * added, M2 by Chan's formula, min of mins, max of maxes); scalar slots as FEATURES.md §2.1
 * says (time_since_last is not kept on sliced kinds); t_last the later; dst's sources stay. Sums are added in another order
 * than one value would add them: equal up to rounding. A fresh dst takes src's rings as they
 * are.
 */
void rf_feat_merge(const rf_decl_t *d, int kind, uint8_t *dst, const uint8_t *src);

/* Whether r is of type rec and meets every condition of w (FEATURES.md §2.4). */
int rf_where_matches(const struct rf_rtype *rec, const struct rf_where *w, const struct rf_rec *r);

/* One feature's value for record r from the values as they stand (derived included, its
 * arguments evaluated recursively). For tests and tools; jobs use plans. */
double rf_feat_eval_one(const rf_decl_t *d, int id, const struct rf_rec *r, uint8_t *const ents[]);

typedef struct rf_feat_plan_s rf_feat_plan_t;

/*
 * The features a model reads, in its order. Every name must be declared and available for
 * every record type in types[0..n_types) (FEATURES.md §2.7): else NULL and errstr names the
 * feature, the record type and, for a declared one, its line in the feature file.
 */
rf_feat_plan_t *rf_feat_plan_new(const rf_decl_t *d, const char *const *names, int n,
                                 const struct rf_rtype *const *types, int n_types, char *errstr,
                                 size_t errstr_size);
void rf_feat_plan_destroy(rf_feat_plan_t *plan); /* accepts NULL */
int rf_feat_plan_n(const rf_feat_plan_t *plan);
/* Whether the plan's features (with the derived ones' arguments) keep state that records of
 * type t update: a job whose model reads them must take such records (a labels stream). */
int rf_feat_plan_reads(const rf_feat_plan_t *plan, const struct rf_rtype *t);
/* The name of the plan's i-th feature (borrowed from the declarations). */
const char *rf_feat_plan_name(const rf_feat_plan_t *plan, int i);

/* Evaluate the plan for record r: out[0..n) in the plan's order. */
void rf_feat_eval(const rf_feat_plan_t *plan, const struct rf_rec *r, uint8_t *const ents[],
                  double *out);

#endif
