/*
 * avro_view.h — reading our own output records back by field name, for printing them.
 *
 * Owns one avro-c generic value per view (one output schema). Off the hot path by design:
 * avro-c's generic values cost microseconds per record, fine for the few outputs that are
 * printed (alerts, PD updates, signals in the demo) and never used to score anything.
 * Loop thread (one reader at a time per view); records read are valid until the next read.
 */
#ifndef RISKFLOW_AVRO_VIEW_H
#define RISKFLOW_AVRO_VIEW_H

#include <avro.h>
#include <stddef.h>
#include <stdint.h>

#include "riskflow/codec.h"

typedef struct rf_avro_view_s rf_avro_view_t;

struct rf_avro_rec {
    avro_value_t v;
};

/* A view of schema `id` (NULL when the id is not in the registry or out of memory). */
rf_avro_view_t *rf_avro_view_new(const rf_schemas_t *schemas, int32_t id);
void rf_avro_view_destroy(rf_avro_view_t *view); /* accepts NULL */

/* Read one record (Confluent-framed with this view's id, or plain). 0 or RF_E_MALFORMED. */
int rf_avro_view_read(rf_avro_view_t *view, const void *payload, size_t len,
                      struct rf_avro_rec *out);

/* Fields by name: a string ("" when absent), a number (int, long, float, double; 0 when
 * absent), an array's length and item. */
const char *rf_avro_view_str(const struct rf_avro_rec *r, const char *name);
double rf_avro_view_num(const struct rf_avro_rec *r, const char *name);
int rf_avro_view_len(const struct rf_avro_rec *r, const char *array);
int rf_avro_view_item(const struct rf_avro_rec *r, const char *array, int i,
                      struct rf_avro_rec *item);

#endif
