/*
 * txn.c — exactly-once mode's transactions, ended on libuv's threadpool. See txn.h.
 *
 * Must never: produce or begin while an end runs (the caller guarantees it by quiescing);
 * retry send_offsets with other offsets than the first attempt's (librdkafka: not resumable,
 * the transaction would hold what we do not think it holds); treat an error that is neither
 * retriable nor abortable as anything but fatal (librdkafka's advice).
 */
#include "riskflow/txn.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "riskflow/err.h"

#define TXN_RETRY_MS 100 /* between retries of a retriable error */

struct rf_txn_s {
    uv_loop_t *loop;
    rd_kafka_t *rkp, *rk;
    uv_work_t work;
    int busy;
    atomic_int cancel;
    /* the operation under way */
    int init, begin;
    const char *abort_why; /* the caller's reason to abort, NULL: commit */
    uint64_t deadline_ns; /* retries end here (0: when cancelled) */
    rd_kafka_topic_partition_list_t *offsets, *rewind;
    rd_kafka_consumer_group_metadata_t *cgmd;
    int result;
    char msg[512];
    rf_txn_cb cb;
    void *arg;
};

rf_txn_t *rf_txn_new(uv_loop_t *loop, rd_kafka_t *rkp, rd_kafka_t *rk) {
    rf_txn_t *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    t->loop = loop;
    t->rkp = rkp;
    t->rk = rk;
    t->work.data = t;
    atomic_init(&t->cancel, 0);
    return t;
}

static void clear_op(rf_txn_t *t) {
    if (t->offsets)
        rd_kafka_topic_partition_list_destroy(t->offsets);
    if (t->rewind)
        rd_kafka_topic_partition_list_destroy(t->rewind);
    if (t->cgmd)
        rd_kafka_consumer_group_metadata_destroy(t->cgmd);
    t->offsets = t->rewind = NULL;
    t->cgmd = NULL;
}

void rf_txn_destroy(rf_txn_t *t) {
    if (!t)
        return;
    clear_op(t);
    free(t);
}

int rf_txn_busy(const rf_txn_t *t) {
    return t->busy;
}

void rf_txn_cancel(rf_txn_t *t) {
    atomic_store(&t->cancel, 1);
}

static void pause_ms(int ms) {
    struct timespec ts = {0, (long)ms * 1000000L};
    nanosleep(&ts, NULL);
}

static int give_up(rf_txn_t *t) {
    if (atomic_load(&t->cancel))
        return 1;
    return t->deadline_ns && uv_hrtime() >= t->deadline_ns;
}

/* One call's outcome: 0 done; 1 retry; 2 must abort; -1 fatal (t->msg says why). */
static int verdict(rf_txn_t *t, rd_kafka_error_t *error, const char *what) {
    if (!error)
        return 0;
    int v = rd_kafka_error_is_fatal(error)             ? -1
            : rd_kafka_error_txn_requires_abort(error) ? 2
            : rd_kafka_error_is_retriable(error)       ? 1
                                                       : -1;
    snprintf(t->msg, sizeof t->msg, "%s: %s%s", what, rd_kafka_error_string(error),
             v < 0 ? " (fatal)" : v == 2 ? " (the transaction must abort)" : "");
    rd_kafka_error_destroy(error);
    if (v == 1 && give_up(t)) {
        strncat(t->msg, ", given up", sizeof t->msg - strlen(t->msg) - 1);
        return -1;
    }
    return v;
}

/* Call `expr` until it succeeds, must abort, fails for good or we give up. */
#define TXN_CALL(t, v, expr, what)                                                             \
    do {                                                                                       \
        while (((v) = verdict((t), (expr), (what))) == 1)                                      \
            pause_ms(TXN_RETRY_MS);                                                            \
    } while (0)

/* Back to where the aborted transaction started: its inputs are consumed again (as replays:
 * their state is written, their outputs journaled). A seek whose outcome is unknown leaves
 * the positions unknown: fatal. */
static int seek_back(rf_txn_t *t) {
    rd_kafka_error_t *error = rd_kafka_seek_partitions(t->rk, t->rewind, 10000);
    if (error) {
        snprintf(t->msg, sizeof t->msg, "rewind after an abort: %s (fatal)",
                 rd_kafka_error_string(error));
        rd_kafka_error_destroy(error);
        return -1;
    }
    for (int i = 0; i < t->rewind->cnt; i++) {
        const rd_kafka_topic_partition_t *p = &t->rewind->elems[i];
        if (p->err) {
            snprintf(t->msg, sizeof t->msg, "rewind after an abort: %s [%d]: %s (fatal)",
                     p->topic, (int)p->partition, rd_kafka_err2str(p->err));
            return -1;
        }
    }
    return 0;
}

static void run(rf_txn_t *t) {
    int v = 0;
    t->msg[0] = '\0';
    if (t->init) {
        TXN_CALL(t, v, rd_kafka_init_transactions(t->rkp, 5000), "init transactions");
    } else {
        if (!t->abort_why && t->offsets && t->offsets->cnt > 0)
            TXN_CALL(t, v, rd_kafka_send_offsets_to_transaction(t->rkp, t->offsets, t->cgmd, 30000),
                     "send offsets to the transaction");
        if (!t->abort_why && v == 0)
            TXN_CALL(t, v, rd_kafka_commit_transaction(t->rkp, -1), "commit transaction");
        if (t->abort_why || v == 2) {
            char why[sizeof t->msg];
            snprintf(why, sizeof why, "%s", t->abort_why ? t->abort_why : t->msg);
            TXN_CALL(t, v, rd_kafka_abort_transaction(t->rkp, -1), "abort transaction");
            if (v == 0) {
                snprintf(t->msg, sizeof t->msg, "transaction aborted: %.480s", why);
                v = 2;
            }
            if (v == 2 && t->rewind && seek_back(t) != 0)
                v = -1;
        }
    }
    if (v < 0) {
        t->result = RF_TXN_FATAL;
        return;
    }
    t->result = v == 2 ? RF_TXN_ABORTED : RF_TXN_COMMITTED;
    if (t->begin) {
        int b;
        TXN_CALL(t, b, rd_kafka_begin_transaction(t->rkp), "begin transaction");
        if (b != 0)
            t->result = RF_TXN_FATAL;
    }
}

static void on_work(uv_work_t *w) {
    run(w->data);
}

static void on_done(uv_work_t *w, int status) {
    rf_txn_t *t = w->data;
    t->busy = 0;
    clear_op(t);
    if (status != 0) { /* cancelled before it ran: the loop is closing */
        t->result = RF_TXN_FATAL;
        snprintf(t->msg, sizeof t->msg, "transaction work cancelled");
    }
    t->cb(t, t->result, t->msg, t->arg);
}

/* The operation to run; the lists are taken even when busy (then RF_E_BUSY). */
static int setup(rf_txn_t *t, int init, rd_kafka_topic_partition_list_t *offsets,
                 rd_kafka_topic_partition_list_t *rewind, const char *abort_why, int begin,
                 uint64_t deadline_ns) {
    if (t->busy) {
        if (offsets)
            rd_kafka_topic_partition_list_destroy(offsets);
        if (rewind)
            rd_kafka_topic_partition_list_destroy(rewind);
        return RF_E_BUSY;
    }
    t->init = init;
    t->offsets = offsets;
    t->rewind = rewind;
    t->abort_why = abort_why;
    t->begin = begin;
    t->deadline_ns = deadline_ns;
    t->cgmd = offsets ? rd_kafka_consumer_group_metadata(t->rk) : NULL;
    return 0;
}

static int start(rf_txn_t *t, int init, rd_kafka_topic_partition_list_t *offsets,
                 rd_kafka_topic_partition_list_t *rewind, const char *abort_why, rf_txn_cb cb,
                 void *arg) {
    int rc = setup(t, init, offsets, rewind, abort_why, 1, 0);
    if (rc != 0)
        return rc;
    t->cb = cb;
    t->arg = arg;
    if (uv_queue_work(t->loop, &t->work, on_work, on_done) != 0) {
        clear_op(t);
        return RF_E_NOMEM;
    }
    t->busy = 1;
    return 0;
}

int rf_txn_init(rf_txn_t *t, rf_txn_cb cb, void *arg) {
    return start(t, 1, NULL, NULL, NULL, cb, arg);
}

int rf_txn_end(rf_txn_t *t, rd_kafka_topic_partition_list_t *offsets,
               rd_kafka_topic_partition_list_t *rewind, const char *abort_why, rf_txn_cb cb,
               void *arg) {
    return start(t, 0, offsets, rewind, abort_why, cb, arg);
}

int rf_txn_end_sync(rf_txn_t *t, rd_kafka_topic_partition_list_t *offsets,
                    const char *abort_why, uint64_t deadline_ns, char *msg, size_t msg_size) {
    if (setup(t, 0, offsets, NULL, abort_why, 0, deadline_ns) != 0) {
        snprintf(msg, msg_size, "a transaction operation is still under way");
        return RF_TXN_FATAL;
    }
    run(t);
    clear_op(t);
    snprintf(msg, msg_size, "%s", t->msg);
    return t->result;
}
