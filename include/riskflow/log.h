/*
 * log.h — one line per event on stderr.
 *
 * Owns the process-wide log level and format. Under journald (JOURNAL_STREAM set) lines carry
 * syslog "<N>" level prefixes instead of a timestamp, so the journal keeps the severity.
 * The level is checked before the arguments are evaluated (RF_LOG is a macro). Logs carry ids
 * and offsets, never payload bytes. Loop thread in practice; a single write per line keeps
 * lines whole if another thread ever logs.
 */
#ifndef RISKFLOW_LOG_H
#define RISKFLOW_LOG_H

enum rf_log_level {
    RF_LOG_ERR = 3,    /* syslog LOG_ERR */
    RF_LOG_WARN = 4,   /* LOG_WARNING */
    RF_LOG_NOTICE = 5, /* LOG_NOTICE */
    RF_LOG_INFO = 6,   /* LOG_INFO */
    RF_LOG_DEBUG = 7   /* LOG_DEBUG */
};

extern int rf_log_level;

/* Parse "error|warn|notice|info|debug" into *level. 0 or RF_E_INVAL. */
int rf_log_level_parse(const char *s, int *level);

/* Format and write one line. Use RF_LOG, which skips the call below the level. */
void rf_log_write(int level, const char *fac, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define RF_LOG(level, fac, ...)                      \
    do {                                             \
        if ((level) <= rf_log_level)                 \
            rf_log_write((level), (fac), __VA_ARGS__); \
    } while (0)

#define RF_ERR(fac, ...) RF_LOG(RF_LOG_ERR, fac, __VA_ARGS__)
#define RF_WARN(fac, ...) RF_LOG(RF_LOG_WARN, fac, __VA_ARGS__)
#define RF_NOTICE(fac, ...) RF_LOG(RF_LOG_NOTICE, fac, __VA_ARGS__)
#define RF_INFO(fac, ...) RF_LOG(RF_LOG_INFO, fac, __VA_ARGS__)
#define RF_DEBUG(fac, ...) RF_LOG(RF_LOG_DEBUG, fac, __VA_ARGS__)

#endif
