/*
 * err.c — the text behind the RF_E* table. Static strings only: safe from any thread.
 */
#include "riskflow/err.h"

#include <stdarg.h>
#include <stdio.h>

const char *rf_strerror(int err) {
    switch (err) {
#define RF_ERR_CASE(name, val, tok, msg) \
    case (val):                          \
        return (msg);
        RF_ERRORS(RF_ERR_CASE)
#undef RF_ERR_CASE
    }
    return "unknown error";
}

const char *rf_err_reason(int err) {
    switch (err) {
#define RF_ERR_CASE(name, val, tok, msg) \
    case (val):                          \
        return (tok);
        RF_ERRORS(RF_ERR_CASE)
#undef RF_ERR_CASE
    }
    return "unknown";
}

void rf_errf(char *errstr, size_t size, const char *where, const char *fmt, ...) {
    if (!errstr || size == 0)
        return;
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    snprintf(errstr, size, "%s: %s", where, msg);
}
