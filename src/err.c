/*
 * err.c — the text behind the RF_E* table. Static strings only: safe from any thread.
 */
#include "riskflow/err.h"

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
