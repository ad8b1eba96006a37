/*
 * jobs.c — the table of jobs. A new job: its src/job_<name>.c and one line below.
 */
#include "riskflow/jobs.h"

#include <string.h>

#include "riskflow/err.h"

extern const struct rf_job_ops rf_job_fraud, rf_job_credit, rf_job_market;

static const struct rf_job_ops *const table[] = {
    &rf_job_fraud,
    &rf_job_credit,
    &rf_job_market,
};

_Static_assert(sizeof table / sizeof table[0] <= RF_JOBS_KNOWN_MAX, "struct rf_conf holds 8 jobs");

int rf_jobs_n(void) {
    return (int)(sizeof table / sizeof table[0]);
}

const struct rf_job_ops *rf_jobs_at(int i) {
    return i >= 0 && i < rf_jobs_n() ? table[i] : NULL;
}

int rf_jobs_find(const char *name, size_t len) {
    for (int i = 0; i < rf_jobs_n(); i++)
        if (strlen(table[i]->name) == len && strncmp(table[i]->name, name, len) == 0)
            return i;
    return RF_E_NOTFOUND;
}
