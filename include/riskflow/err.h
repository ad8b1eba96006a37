/*
 * err.h — riskflow's error codes.
 *
 * Owns the one table of RF_E* codes. Every internal function returns 0 or one of these
 * (negative) values; rf_strerror() names them. A library's own error type is translated
 * into one of these once, at the module boundary, and goes no further.
 * The DLQ reasons are a subset (RF_E_TRUNCATED .. RF_E_MALFORMED, RF_E_WRONG_TYPE,
 * RF_E_BAD_KEY, RF_E_FUTURE, RF_E_TOO_LATE, RF_E_BAD_TIME, RF_E_STATE):
 * rf_err_reason() gives the short, stable token used in DLQ headers and metrics.
 */
#ifndef RISKFLOW_ERR_H
#define RISKFLOW_ERR_H

#include <stddef.h>

/* X(name, value, reason-token, message) */
#define RF_ERRORS(X)                                                                    \
    X(OK, 0, "ok", "success")                                                           \
    X(NOMEM, -1, "nomem", "out of memory")                                              \
    X(INVAL, -2, "invalid", "invalid argument")                                         \
    X(TRUNCATED, -3, "truncated", "truncated message")                                  \
    X(BADMAGIC, -4, "bad_magic", "wrong magic byte (not Confluent-framed Avro)")        \
    X(UNKNOWN_SCHEMA, -5, "unknown_schema", "unknown schema id")                        \
    X(OVERSIZE, -6, "oversize", "message over the size cap")                            \
    X(MALFORMED, -7, "malformed", "malformed Avro (not a valid record of the schema)") \
    X(NOSPACE, -8, "nospace", "output buffer too small")                                \
    X(IO, -9, "io", "I/O error")                                                        \
    X(TIMEOUT, -10, "timeout", "timed out")                                             \
    X(CONN, -11, "conn", "connection failed or lost")                                   \
    X(REDIS, -12, "redis", "Redis error reply")                                         \
    X(KAFKA, -13, "kafka", "Kafka error")                                               \
    X(CONF, -14, "conf", "configuration error")                                         \
    X(MODEL, -15, "model", "model error")                                               \
    X(SCHEMA, -16, "schema", "schema error")                                            \
    X(BUSY, -17, "busy", "resource busy, try again")                                    \
    X(CLOSED, -18, "closed", "closed or shutting down")                                 \
    X(NOTFOUND, -19, "notfound", "not found")                                           \
    X(WRONG_TYPE, -20, "wrong_type", "a record type no enabled job takes")              \
    X(BAD_KEY, -21, "bad_key", "an entity key field is empty")                         \
    X(FUTURE, -22, "future", "event time too far ahead of the clock (input.max.future.ms)") \
    X(TOO_LATE, -23, "too_late",                                                        \
      "event time too far behind its entity's latest (input.max.lateness.s)")          \
    X(BAD_TIME, -24, "bad_time", "event time before 1970-01-01")                        \
    X(STATE, -25, "state", "an entity's stored value is unreadable (store.on.foreign)")

enum rf_err {
#define RF_ERR_ENUM(name, val, tok, msg) RF_E_##name = (val),
    RF_ERRORS(RF_ERR_ENUM)
#undef RF_ERR_ENUM
};

/* Human-readable message for an RF_E* code (any int: unknown codes get a generic text). */
const char *rf_strerror(int err);

/* Short token for an RF_E* code, stable across releases: used as the DLQ reason. */
const char *rf_err_reason(int err);

/* "WHERE: message" into errstr (truncated to size): the constructors' errstr, where WHERE is
 * usually the file being loaded. */
void rf_errf(char *errstr, size_t size, const char *where, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#endif
