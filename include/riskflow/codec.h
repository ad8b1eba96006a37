/*
 * codec.h — Avro on the wire: the schema registry, the payment decoder, the output encoders.
 *
 * Owns the local schema registry (schemas/registry.txt: "<id> <file>" lines, parsed with
 * avro-c) and the schema-specific codecs compiled for the .avsc files under schemas/. avro-c parses schemas
 * and is the test oracle; the hot path uses our bounds-checked decoder/encoders, which
 * allocate nothing (design.md §10: ~35 ns instead of ~440 ns per payment).
 *
 * Decoding is hostile-input safe: every length is checked against the bytes left and against
 * the destination buffer before anything is copied; the message size is capped first.
 * Errors are the DLQ reasons: RF_E_OVERSIZE, RF_E_BADMAGIC, RF_E_UNKNOWN_SCHEMA,
 * RF_E_TRUNCATED (the input ended inside the record), RF_E_MALFORMED (anything else: bad
 * varint, negative length, string longer than its field, enum index out of range, bytes left
 * over after the record).
 * Any thread; the registry is immutable after load.
 */
#ifndef RISKFLOW_CODEC_H
#define RISKFLOW_CODEC_H

#include <stddef.h>
#include <stdint.h>

#include "riskflow/event.h"

typedef struct rf_schemas_s rf_schemas_t;

/* Load dir/registry.txt and every schema it names. NULL + errstr ("file:line: reason") on a
 * missing file, a bad line, a duplicate id or a schema avro-c rejects. Caller owns it. */
rf_schemas_t *rf_schemas_load(const char *dir, char *errstr, size_t errstr_size);
void rf_schemas_destroy(rf_schemas_t *schemas); /* accepts NULL */

/* The schema id whose record full name is `fullname` (e.g. "riskflow.Payment"), or
 * RF_E_NOTFOUND. */
int32_t rf_schemas_find(const rf_schemas_t *schemas, const char *fullname);

/* The parsed avro-c schema for an id (an avro_schema_t, borrowed), or NULL. For tests. */
void *rf_schemas_avro(const rf_schemas_t *schemas, int32_t id);

/* The 5-byte Confluent header: magic 0, big-endian schema id. */
#define RF_CONFLUENT_HEADER 5

/*
 * Decode one payment. framing PLAIN: buf is the Avro body of payment_schema_id.
 * framing CONFLUENT: buf starts with the header; the id must be payment_schema_id (any other
 * id, known or not, is RF_E_UNKNOWN_SCHEMA: this decoder reads payments only).
 * max_bytes caps len (RF_E_OVERSIZE above it). *out is fully written on success and left in
 * an unspecified state on error. Returns 0 or a negative RF_E_* reason.
 */
int rf_decode_payment(const void *buf, size_t len, enum rf_framing framing,
                      int32_t payment_schema_id, size_t max_bytes, struct rf_payment *out);

/*
 * Encoders: write one record into buf[cap] with the given framing (CONFLUENT adds the header
 * with schema_id). *len gets the bytes written. RF_E_NOSPACE if cap is too small, RF_E_INVAL
 * for a value the schema cannot carry (an enum out of range, a NULL string).
 */
int rf_encode_payment(const struct rf_payment *p, enum rf_framing framing, int32_t schema_id,
                      uint8_t *buf, size_t cap, size_t *len);
int rf_encode_fraud_score(const struct rf_fraud_score *s, enum rf_framing framing,
                          int32_t schema_id, uint8_t *buf, size_t cap, size_t *len);
int rf_encode_fraud_alert(const struct rf_fraud_alert *a, enum rf_framing framing,
                          int32_t schema_id, uint8_t *buf, size_t cap, size_t *len);

#endif
