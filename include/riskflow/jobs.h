/*
 * jobs.h — the table of jobs riskflowd knows (src/jobs.c). Adding a job is a line there and a
 * src/job_<name>.c implementing job.h; `jobs=` in the config enables them.
 * Static data: any thread.
 */
#ifndef RISKFLOW_JOBS_H
#define RISKFLOW_JOBS_H

#include "riskflow/job.h"

#define RF_JOBS_KNOWN_MAX 8 /* struct rf_conf holds this many job config structs */

int rf_jobs_n(void);
const struct rf_job_ops *rf_jobs_at(int i);
/* Index of a job by name, or RF_E_NOTFOUND. */
int rf_jobs_find(const char *name, size_t len);

#endif
