/*
 * log.c — stderr logging. Formats into a stack buffer and writes it with one write(2), so a
 * line is never interleaved; never allocates.
 */
#include "riskflow/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "riskflow/err.h"

int rf_log_level = RF_LOG_INFO;

static const struct {
    const char *name;
    int level;
} levels[] = {{"error", RF_LOG_ERR},   {"warn", RF_LOG_WARN}, {"notice", RF_LOG_NOTICE},
              {"info", RF_LOG_INFO},   {"debug", RF_LOG_DEBUG}};

int rf_log_level_parse(const char *s, int *level) {
    for (size_t i = 0; i < sizeof levels / sizeof levels[0]; i++) {
        if (strcasecmp(s, levels[i].name) == 0) {
            *level = levels[i].level;
            return 0;
        }
    }
    return RF_E_INVAL;
}

static const char *level_name(int level) {
    for (size_t i = 0; i < sizeof levels / sizeof levels[0]; i++)
        if (levels[i].level == level)
            return levels[i].name;
    return "?";
}

void rf_log_write(int level, const char *fac, const char *fmt, ...) {
    /* journald adds its own timestamp and reads the <N> prefix as the priority. */
    static int journal = -1;
    if (journal < 0)
        journal = getenv("JOURNAL_STREAM") != NULL;

    char line[2048];
    int n;
    if (journal) {
        n = snprintf(line, sizeof line, "<%d>%s ", level, fac);
    } else {
        struct timespec ts;
        struct tm tm;
        clock_gettime(CLOCK_REALTIME, &ts);
        gmtime_r(&ts.tv_sec, &tm);
        n = snprintf(line, sizeof line, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %-6s %-6s ",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                     tm.tm_sec, ts.tv_nsec / 1000000, level_name(level), fac);
    }
    if (n < 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
    va_end(ap);
    if (m < 0)
        m = 0;
    size_t len = (size_t)n + (size_t)m;
    if (len > sizeof line - 2)
        len = sizeof line - 2; /* truncated: still one whole line */
    line[len++] = '\n';
    ssize_t w = write(STDERR_FILENO, line, len);
    (void)w; /* nowhere left to report a failed log write */
}
