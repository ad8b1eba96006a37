/*
 * codec.h — Avro on the wire: the schema registry, record types, the decoders, the encoders.
 *
 * Owns the local schema registry (schemas/registry.txt: "<id> <file>" lines, parsed with
 * avro-c) and, for every registered record whose fields are all primitive (string, int, long,
 * float, double, boolean, enum), a compiled **record type**: its fields by index, enum symbols,
 * and its event time (the first long with logicalType timestamp-millis). Input records of any
 * such type are decoded by one bounds-checked decoder into a generic record (values by field
 * index, strings pointing into the message), which allocates nothing (design.md §10: ~35 ns
 * where avro-c's generic values take ~440 ns). avro-c parses schemas and is the test oracle.
 *
 * Decoding is hostile-input safe: every length is checked against the bytes left before
 * anything is read; the message size is capped first. Errors are the DLQ reasons:
 * RF_E_OVERSIZE, RF_E_BADMAGIC, RF_E_UNKNOWN_SCHEMA, RF_E_TRUNCATED (the input ended inside the
 * record), RF_E_MALFORMED (anything else: bad varint, negative length, a string over
 * RF_FIELD_STR_MAX bytes or with a NUL, a NaN or infinite float/double, enum index or boolean
 * byte out of range, bytes left over after the record).
 * Any thread; the registry and its record types are immutable after load.
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

/* ---- record types ---- */

#define RF_RTYPE_FIELDS_MAX 32 /* fields of an input record type */
#define RF_FIELD_STR_MAX 63    /* bytes of any string field of an input record (ids, codes) */

enum rf_ftype {
    RF_FT_STRING,
    RF_FT_INT,
    RF_FT_LONG,
    RF_FT_FLOAT,
    RF_FT_DOUBLE,
    RF_FT_BOOLEAN,
    RF_FT_ENUM
};

struct rf_rfield {
    const char *name;
    enum rf_ftype type;
    int timestamp;               /* a long with logicalType timestamp-millis */
    int n_symbols;               /* RF_FT_ENUM: symbols[0..n_symbols) in schema order */
    const char *const *symbols;
};

/* An input record type. Strings are borrowed from the registry (or static for the built-in
 * payment type): valid as long as the registry. */
struct rf_rtype {
    int32_t schema_id;
    int index;                   /* dense: 0..rf_schemas_n_rtypes()-1; -1 for the built-in */
    const char *fullname;        /* "riskflow.Payment" */
    const char *name;            /* "Payment" */
    int n_fields;
    int time_field;              /* index of the event time field */
    struct rf_rfield fields[RF_RTYPE_FIELDS_MAX];
};

/* One field's value: i for int/long/boolean/enum (the symbol index), d for float/double,
 * s for a string (bytes base[off, off + len) of its record, no NUL inside). */
union rf_fval {
    int64_t i;
    double d;
    struct {
        uint32_t off, len;
    } s;
};

/* s.off with this bit: the string is in rec->ext, not the body (a field replaced by its
 * keyed hash before anything read it: keyhash.h). */
#define RF_STR_EXT 0x80000000u

/* A decoded input record. Borrows the message body (base), its type, and ext (where
 * replaced strings live; NULL when none is). */
struct rf_rec {
    const struct rf_rtype *type;
    const uint8_t *base;
    const uint8_t *ext;
    union rf_fval v[RF_RTYPE_FIELDS_MAX];
};

/* The record type with this schema id, or NULL (unknown id, or a schema that is not an input
 * record type: arrays, unions, ...). */
const struct rf_rtype *rf_schemas_rtype(const rf_schemas_t *schemas, int32_t id);

/* By full name ("riskflow.Trade"), or by short name ("Trade") when no other record type has
 * it; NULL otherwise. For several registrations of one record, the highest id. */
const struct rf_rtype *rf_schemas_rtype_named(const rf_schemas_t *schemas, const char *name);

/* Input record types in the registry; rf_schemas_rtype_at(i) has index i. */
int rf_schemas_n_rtypes(const rf_schemas_t *schemas);
const struct rf_rtype *rf_schemas_rtype_at(const rf_schemas_t *schemas, int i);

/* Index of a field by name, or RF_E_NOTFOUND. */
int rf_rtype_field(const struct rf_rtype *t, const char *name);

/* Index of an enum field's symbol, or RF_E_NOTFOUND. */
int rf_rfield_symbol(const struct rf_rfield *f, const char *symbol);

/* A field as a number (FEATURES.md §1): int/long/boolean/enum index/float/double. A string
 * field reads as 0 (callers never ask: declarations are checked at load). */
static inline double rf_rec_num(const struct rf_rec *r, int f) {
    enum rf_ftype t = r->type->fields[f].type;
    return t == RF_FT_FLOAT || t == RF_FT_DOUBLE ? r->v[f].d
           : t == RF_FT_STRING                   ? 0.0
                                                 : (double)r->v[f].i;
}

/* The record's event time (Unix ms). */
static inline int64_t rf_rec_time(const struct rf_rec *r) {
    return r->v[r->type->time_field].i;
}

/* A string field: pointer into the message and its length (not NUL-terminated). */
static inline const char *rf_rec_str(const struct rf_rec *r, int f, size_t *len) {
    uint32_t off = r->v[f].s.off;
    *len = r->v[f].s.len;
    return (off & RF_STR_EXT) ? (const char *)r->ext + (off & ~RF_STR_EXT)
                              : (const char *)r->base + off;
}

/* A string field copied out as a C string (it holds no NUL and fits: RF_FIELD_STR_MAX). */
static inline const char *rf_rec_cstr(const struct rf_rec *r, int f,
                                      char buf[RF_FIELD_STR_MAX + 1]) {
    size_t n;
    const char *p = rf_rec_str(r, f, &n);
    for (size_t i = 0; i < n; i++)
        buf[i] = p[i];
    buf[n] = '\0';
    return buf;
}

/*
 * Split the framing off one message: the size cap (RF_E_OVERSIZE), then for CONFLUENT the
 * magic byte (RF_E_BADMAGIC) and the header (RF_E_TRUNCATED), whose id goes to *schema_id;
 * PLAIN leaves *schema_id as the caller set it (the topic's declared type). *body and *body_len
 * get the Avro body.
 */
int rf_frame(const void *buf, size_t len, enum rf_framing framing, size_t max_bytes,
             int32_t *schema_id, const uint8_t **body, size_t *body_len);

/* Decode an Avro body of type t into *out (fully written on success, unspecified on error).
 * Returns 0 or a negative RF_E_* reason (see the top of this file). */
int rf_rec_decode(const struct rf_rtype *t, const uint8_t *body, size_t len, struct rf_rec *out);

/* Encode a generic record of type t (the inverse of rf_rec_decode: strings from r->base):
 * for generators and tests of any input record type. RF_E_NOSPACE, or RF_E_INVAL for a value
 * the type cannot carry (a string over RF_FIELD_STR_MAX or with a NUL, a non-finite number, an
 * enum or boolean out of range). */
int rf_rec_encode(const struct rf_rtype *t, const struct rf_rec *r, enum rf_framing framing,
                  int32_t schema_id, uint8_t *buf, size_t cap, size_t *len);

/* riskflow.Payment as event.h's struct rf_payment sees it (schema order), for tools, tests and
 * the demo; tests check it equals the registry's compiled Payment type. */
const struct rf_rtype *rf_payment_rtype(void);

/*
 * Decode one payment into event.h's fixed struct: rf_frame, rf_rec_decode with the payment
 * type, then the copy into the struct's buffers (a currency or country longer than 3 bytes is
 * RF_E_MALFORMED). framing PLAIN: buf is the Avro body of payment_schema_id. framing
 * CONFLUENT: buf starts with the header; the id must be payment_schema_id (any other id, known
 * or not, is RF_E_UNKNOWN_SCHEMA: this decoder reads payments only). max_bytes caps len.
 * *out is fully written on success and left in an unspecified state on error.
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
int rf_encode_pd_update(const struct rf_pd_update *u, enum rf_framing framing, int32_t schema_id,
                        uint8_t *buf, size_t cap, size_t *len);
int rf_encode_market_signal(const struct rf_market_signal *m, enum rf_framing framing,
                            int32_t schema_id, uint8_t *buf, size_t cap, size_t *len);

#endif
