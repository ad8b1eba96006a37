/*
 * loop_check.h — the end of every component case: the loop closes with no handle left open
 * (uv_loop_close() == 0, else UV_EBUSY is a failed check), and a failing case still closes
 * what it left so the next case starts clean.
 */
#ifndef RF_TEST_LOOP_CHECK_H
#define RF_TEST_LOOP_CHECK_H

#include <uv.h>

#include "rf_test.h"

static void loop_check_walk_close(uv_handle_t *h, void *arg) {
    (void)arg;
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

/* Runs the loop out, then closes it: a check that the code under test closed its handles. */
static void loop_check_close(uv_loop_t *loop) {
    uv_run(loop, UV_RUN_DEFAULT);
    int rc = uv_loop_close(loop);
    CHECK_EQ_INT(rc, 0); /* UV_EBUSY: a handle was left open */
    if (rc != 0) {
        uv_walk(loop, loop_check_walk_close, NULL);
        uv_run(loop, UV_RUN_DEFAULT);
        uv_loop_close(loop);
    }
}

#endif
