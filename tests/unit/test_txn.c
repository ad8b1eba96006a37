/*
 * test_txn.c — exactly-once mode's transaction endings (txn.h) against librdkafka's mock
 * cluster, whose brokers answer the transactional protocol and let us inject the errors
 * librdkafka documents: a retriable error is retried to a commit, one that requires an abort
 * aborts (and reports it), a fenced producer is fatal. The real broker's side (crashes,
 * rebalances, read_committed readers) is tests/integration/test_exactly_once.py.
 */
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <stdio.h>
#include <string.h>
#include <uv.h>

#include "rf_test.h"
#include "riskflow/err.h"
#include "riskflow/txn.h"

/* Kafka protocol API keys (librdkafka names them in a private header). */
#define API_END_TXN 26
#define API_TXN_OFFSET_COMMIT 28

struct outcome {
    int done, result;
    char msg[512];
};

static void on_txn(rf_txn_t *t, int result, const char *msg, void *arg) {
    struct outcome *o = arg;
    (void)t;
    o->done = 1;
    o->result = result;
    snprintf(o->msg, sizeof o->msg, "%s", msg);
}

static rd_kafka_t *producer(const char *bootstrap, const char *tid) {
    char err[512];
    rd_kafka_conf_t *kc = rd_kafka_conf_new();
    rd_kafka_conf_set(kc, "bootstrap.servers", bootstrap, err, sizeof err);
    rd_kafka_conf_set(kc, "transactional.id", tid, err, sizeof err);
    rd_kafka_conf_set(kc, "transaction.timeout.ms", "10000", err, sizeof err);
    rd_kafka_conf_set(kc, "message.timeout.ms", "10000", err, sizeof err);
    rd_kafka_conf_set(kc, "log_level", "0", err, sizeof err);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, kc, err, sizeof err);
    if (!rk)
        fprintf(stderr, "producer: %s\n", err);
    return rk;
}

static rd_kafka_t *consumer(const char *bootstrap) {
    char err[512];
    rd_kafka_conf_t *kc = rd_kafka_conf_new();
    rd_kafka_conf_set(kc, "bootstrap.servers", bootstrap, err, sizeof err);
    rd_kafka_conf_set(kc, "group.id", "rf-test-txn", err, sizeof err);
    rd_kafka_conf_set(kc, "enable.auto.commit", "false", err, sizeof err);
    rd_kafka_conf_set(kc, "log_level", "0", err, sizeof err);
    return rd_kafka_new(RD_KAFKA_CONSUMER, kc, err, sizeof err);
}

/* Run the loop until the operation reports. */
static int wait_for(uv_loop_t *loop, struct outcome *o) {
    while (!o->done)
        uv_run(loop, UV_RUN_ONCE);
    return o->result;
}

static void produce_one(rd_kafka_t *rkp) {
    rd_kafka_resp_err_t err =
        rd_kafka_producev(rkp, RD_KAFKA_V_TOPIC("rf.txn.out"), RD_KAFKA_V_VALUE("x", 1),
                          RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END);
    CHECK_EQ_INT(err, 0);
}

static rd_kafka_topic_partition_list_t *offsets(int64_t off) {
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(l, "rf.txn.in", 0)->offset = off;
    return l;
}

static int end(uv_loop_t *loop, rf_txn_t *t, rd_kafka_topic_partition_list_t *offs, int abort,
               struct outcome *o) {
    memset(o, 0, sizeof *o);
    CHECK_EQ_INT(rf_txn_end(t, offs, NULL, abort ? "the test says so" : NULL, on_txn, o), 0);
    CHECK_EQ_INT(rf_txn_busy(t), 1);
    CHECK_EQ_INT(rf_txn_end(t, NULL, NULL, NULL, on_txn, o), RF_E_BUSY); /* one at a time */
    return wait_for(loop, o);
}

static void test_endings(void) {
    uv_loop_t loop;
    uv_loop_init(&loop);
    char err[512];
    rd_kafka_conf_t *kc = rd_kafka_conf_new();
    rd_kafka_conf_set(kc, "test.mock.num.brokers", "1", err, sizeof err);
    rd_kafka_conf_set(kc, "log_level", "0", err, sizeof err);
    rd_kafka_t *owner = rd_kafka_new(RD_KAFKA_PRODUCER, kc, err, sizeof err);
    CHECK(owner != NULL);
    rd_kafka_mock_cluster_t *mc = rd_kafka_handle_mock_cluster(owner);
    const char *bootstrap = rd_kafka_mock_cluster_bootstraps(mc);
    CHECK_EQ_INT(rd_kafka_mock_topic_create(mc, "rf.txn.out", 1, 1), 0);
    CHECK_EQ_INT(rd_kafka_mock_topic_create(mc, "rf.txn.in", 1, 1), 0);

    rd_kafka_t *rkp = producer(bootstrap, "rf-test-txn-1");
    rd_kafka_t *rk = consumer(bootstrap);
    rf_txn_t *t = rf_txn_new(&loop, rkp, rk);
    struct outcome o = {0};
    CHECK_EQ_INT(rf_txn_init(t, on_txn, &o), 0);
    CHECK_EQ_INT(wait_for(&loop, &o), RF_TXN_COMMITTED);

    /* A commit with offsets, and one with none consumed. */
    produce_one(rkp);
    CHECK_EQ_INT(end(&loop, t, offsets(10), 0, &o), RF_TXN_COMMITTED);
    produce_one(rkp);
    CHECK_EQ_INT(end(&loop, t, NULL, 0, &o), RF_TXN_COMMITTED);

    /* Retriable: the coordinator is loading, then moved; the commit goes through. */
    produce_one(rkp);
    rd_kafka_mock_push_request_errors(mc, API_END_TXN, 2,
                                      RD_KAFKA_RESP_ERR_COORDINATOR_LOAD_IN_PROGRESS,
                                      RD_KAFKA_RESP_ERR_NOT_COORDINATOR);
    CHECK_EQ_INT(end(&loop, t, offsets(20), 0, &o), RF_TXN_COMMITTED);

    /* The caller dooms it (an output failed): aborted, and the next one begun. */
    produce_one(rkp);
    CHECK_EQ_INT(end(&loop, t, NULL, 1, &o), RF_TXN_ABORTED);
    CHECK(strstr(o.msg, "aborted: the test says so") != NULL);

    /* The group coordinator refuses the offsets: librdkafka says abort. */
    produce_one(rkp);
    rd_kafka_mock_push_request_errors(mc, API_TXN_OFFSET_COMMIT, 1,
                                      RD_KAFKA_RESP_ERR_GROUP_AUTHORIZATION_FAILED);
    int r = end(&loop, t, offsets(30), 0, &o);
    CHECK_EQ_INT(r, RF_TXN_ABORTED);
    if (r != RF_TXN_ABORTED)
        fprintf(stderr, "  (%s)\n", o.msg);

    /* Still usable after the abort. */
    produce_one(rkp);
    CHECK_EQ_INT(end(&loop, t, offsets(40), 0, &o), RF_TXN_COMMITTED);

    /* Another producer with our transactional.id fenced us (the mock broker does not
     * track epochs itself, so it is told to answer as a real one does): fatal, for good. */
    produce_one(rkp);
    rd_kafka_mock_push_request_errors(mc, API_END_TXN, 1, RD_KAFKA_RESP_ERR_PRODUCER_FENCED);
    r = end(&loop, t, offsets(50), 0, &o);
    CHECK_EQ_INT(r, RF_TXN_FATAL);
    CHECK(strstr(o.msg, "fatal") != NULL);
    if (r != RF_TXN_FATAL)
        fprintf(stderr, "  (%s)\n", o.msg);

    /* The final stop's synchronous end: here the fenced producer can only fail. */
    char msg[512];
    CHECK_EQ_INT(rf_txn_end_sync(t, offsets(60), NULL, uv_hrtime() + 5000000000ULL, msg,
                                 sizeof msg),
                 RF_TXN_FATAL);

    rf_txn_destroy(t);
    rd_kafka_destroy(rkp);
    rd_kafka_destroy(rk);
    rd_kafka_destroy(owner);
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK_EQ_INT(uv_loop_close(&loop), 0);
}

RF_TEST_MAIN(RF_TEST(test_endings))
