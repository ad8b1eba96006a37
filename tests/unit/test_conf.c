/*
 * test_conf.c — the property table: defaults, file parsing, errors that name file and line,
 * -X overrides, kafka.* pass-through, cross-key validation, dump → load round trip.
 */
#include <stdlib.h>
#include <unistd.h>

#include "rf_test.h"
#include "riskflow/conf.h"
#include "riskflow/err.h"

static char path[64];

static const char *write_file(const char *text) {
    snprintf(path, sizeof path, "/tmp/rf_test_conf_%d.properties", (int)getpid());
    FILE *f = fopen(path, "w");
    fputs(text, f);
    fclose(f);
    return path;
}

static void test_defaults(void) {
    char err[512];
    struct rf_conf *c = rf_conf_new(err, sizeof err);
    CHECK(c != NULL);
    CHECK_EQ_STR(c->input_topics, "txn.payments");
    CHECK_EQ_STR(c->input_framing, "confluent");
    CHECK_EQ_INT(c->batch_max, 64);
    CHECK_EQ_INT(c->input_max_bytes, 65536);
    CHECK_EQ_STR(c->jobs, "fraud");
    CHECK_EQ_STR(c->features_path, "deploy/features.conf");
    /* a job's keys live in its own table */
    CHECK_EQ_STR(rf_conf_str(c, "fraud.scores.topic"), "fraud.scores");
    CHECK(rf_conf_str(c, "fraud.alert.threshold") == NULL); /* a number, not a string */
    CHECK(rf_conf_str(c, "nope") == NULL);
    CHECK_EQ_STR(rf_conf_where(c, "fraud.scores.topic"), "default");
    CHECK_EQ_INT(c->n_kafka, 0);
    rf_conf_destroy(c);
}

/* One key twice in one file is refused, naming both lines, for kafka.* keys too; -X may
 * override. */
static void test_file_duplicate(void) {
    char err[512];
    const char *texts[] = {"pipeline.batch.max=32\n# x\npipeline.batch.max=16\n",
                           "kafka.group.id=g1\n# x\n kafka.group.id = g2\n"};
    for (int i = 0; i < 2; i++) {
        struct rf_conf *c = rf_conf_new(err, sizeof err);
        const char *p = write_file(texts[i]);
        err[0] = '\0';
        CHECK_EQ_INT(rf_conf_load_file(c, p, err, sizeof err), RF_E_CONF);
        CHECK(strstr(err, "set twice") != NULL);
        CHECK(strstr(err, ":3:") != NULL && strstr(err, ":1)") != NULL);
        rf_conf_destroy(c);
    }
    struct rf_conf *c = rf_conf_new(err, sizeof err);
    CHECK_EQ_INT(rf_conf_load_file(c, write_file("pipeline.batch.max=32\n"), err, sizeof err), 0);
    CHECK_EQ_INT(rf_conf_set_kv(c, "pipeline.batch.max=16", err, sizeof err), 0);
    CHECK_EQ_INT(c->batch_max, 16);
    rf_conf_destroy(c);
}

static void test_file_ok(void) {
    char err[512];
    struct rf_conf *c = rf_conf_new(err, sizeof err);
    const char *p = write_file("# a comment\n"
                               "\n"
                               "  input.topics = a,b:plain  \n"
                               "pipeline.batch.max=32\n"
                               "fraud.alert.threshold=0.75\n"
                               "kafka.bootstrap.servers=127.0.0.1:9092\n"
                               "kafka.group.id = g2\n"
                               "store.backend=memory\n");
    CHECK_EQ_INT(rf_conf_load_file(c, p, err, sizeof err), 0);
    CHECK_EQ_STR(c->input_topics, "a,b:plain");
    CHECK_EQ_INT(c->batch_max, 32);
    CHECK(strstr(rf_conf_where(c, "fraud.alert.threshold"), ":5") != NULL);
    CHECK(strstr(rf_conf_where(c, "store.backend"), ":8") != NULL);
    CHECK(strstr(rf_conf_where(c, "pipeline.batch.max"), ":4") != NULL);
    CHECK_EQ_INT(c->n_kafka, 2);
    CHECK_EQ_STR(rf_conf_kafka_get(c, "group.id"), "g2");
    CHECK_EQ_STR(rf_conf_kafka_get(c, "bootstrap.servers"), "127.0.0.1:9092");
    CHECK(rf_conf_kafka_get(c, "nope") == NULL);
    CHECK_EQ_STR(c->store_backend, "memory");
    CHECK_EQ_INT(rf_conf_validate(c, 0, err, sizeof err), 0);
    /* -X overrides the file */
    CHECK_EQ_INT(rf_conf_set_kv(c, "pipeline.batch.max=8", err, sizeof err), 0);
    CHECK_EQ_INT(c->batch_max, 8);
    CHECK_EQ_INT(rf_conf_set_kv(c, "kafka.linger.ms=1", err, sizeof err), 0);
    CHECK_EQ_STR(rf_conf_kafka_get(c, "linger.ms"), "1");
    rf_conf_destroy(c);
    unlink(p);
}

/* Each bad line: the error names file:line and says why. */
static void expect_file_error(const char *text, int line, const char *needle) {
    char err[512] = "", where[128];
    struct rf_conf *c = rf_conf_new(err, sizeof err);
    const char *p = write_file(text);
    CHECK_EQ_INT(rf_conf_load_file(c, p, err, sizeof err), RF_E_CONF);
    snprintf(where, sizeof where, "%s:%d: ", p, line);
    CHECK(strncmp(err, where, strlen(where)) == 0);
    CHECK(strstr(err, needle) != NULL);
    if (strncmp(err, where, strlen(where)) != 0 || !strstr(err, needle))
        fprintf(stderr, "  got: %s (wanted %s...%s)\n", err, where, needle);
    rf_conf_destroy(c);
    unlink(p);
}

static void test_file_errors(void) {
    expect_file_error("input.topics=a\nno.such.key=1\n", 2, "unknown key 'no.such.key'");
    expect_file_error("# c\npipeline.batch.max=lots\n", 2, "is not an integer");
    expect_file_error("pipeline.batch.max=1000\n", 1, "out of range");
    expect_file_error("pipeline.batch.max=0\n", 1, "out of range");
    expect_file_error("redis.port=12x\n", 1, "is not an integer");
    expect_file_error("fraud.alert.threshold=1.5\n", 1, "out of range");
    expect_file_error("fraud.alert.threshold=nan\n", 1, "is not a number");
    expect_file_error("store.backend=postgres\n", 1, "'postgres' is not one of redis|memory");
    expect_file_error("\n\njust words\n", 3, "expected key=value");
    expect_file_error("=value\n", 1, "empty key");
    expect_file_error("input.topics=\n", 1, "empty value");
    expect_file_error("kafka.=x\n", 1, "needs a librdkafka property name");
}

static void test_missing_file(void) {
    char err[512];
    struct rf_conf *c = rf_conf_new(err, sizeof err);
    CHECK_EQ_INT(rf_conf_load_file(c, "/nonexistent/rf.conf", err, sizeof err), RF_E_IO);
    CHECK(strstr(err, "/nonexistent/rf.conf: cannot open") == err);
    rf_conf_destroy(c);
}

static void test_kv_errors(void) {
    char err[512];
    struct rf_conf *c = rf_conf_new(err, sizeof err);
    CHECK_EQ_INT(rf_conf_set_kv(c, "novalue", err, sizeof err), RF_E_CONF);
    CHECK(strstr(err, "expected key=value") != NULL);
    CHECK_EQ_INT(rf_conf_set_kv(c, "bogus=1", err, sizeof err), RF_E_CONF);
    CHECK(strstr(err, "-X: unknown key 'bogus'") != NULL);
    rf_conf_destroy(c);
}

static void test_validate(void) {
    char err[512];
    struct rf_conf *c = rf_conf_new(err, sizeof err);
    CHECK_EQ_INT(rf_conf_validate(c, 1, err, sizeof err), 0); /* the demo needs no broker */
    CHECK_EQ_INT(rf_conf_validate(c, 0, err, sizeof err), RF_E_CONF);
    CHECK(strstr(err, "kafka.bootstrap.servers is required") != NULL);
    rf_conf_set_kv(c, "kafka.bootstrap.servers=x:1", err, sizeof err);
    CHECK_EQ_INT(rf_conf_validate(c, 0, err, sizeof err), RF_E_CONF);
    CHECK(strstr(err, "kafka.group.id is required") != NULL);
    rf_conf_set_kv(c, "kafka.group.id=g", err, sizeof err);
    CHECK_EQ_INT(rf_conf_validate(c, 0, err, sizeof err), 0);
    rf_conf_set_kv(c, "input.topics=a:json", err, sizeof err);
    CHECK_EQ_INT(rf_conf_validate(c, 0, err, sizeof err), RF_E_CONF);
    CHECK(strstr(err, "must be confluent, plain or plain:RecordType") != NULL);
    rf_conf_set_kv(c, "input.topics=a:plain:riskflow.Trade,b:confluent", err, sizeof err);
    CHECK_EQ_INT(rf_conf_validate(c, 0, err, sizeof err), 0);
    rf_conf_set_kv(c, "input.topics=a:confluent:riskflow.Trade", err, sizeof err);
    CHECK_EQ_INT(rf_conf_validate(c, 0, err, sizeof err), RF_E_CONF);
    rf_conf_set_kv(c, "input.topics=a:plain:", err, sizeof err);
    CHECK_EQ_INT(rf_conf_validate(c, 0, err, sizeof err), RF_E_CONF);
    rf_conf_set_kv(c, "input.topics=a", err, sizeof err);
    rf_conf_set_kv(c, "jobs=fraud,nope", err, sizeof err);
    CHECK_EQ_INT(rf_conf_validate(c, 0, err, sizeof err), RF_E_CONF);
    CHECK(strstr(err, "jobs: unknown job 'nope'") != NULL);
    rf_conf_set_kv(c, "jobs=fraud,fraud", err, sizeof err);
    CHECK_EQ_INT(rf_conf_validate(c, 0, err, sizeof err), RF_E_CONF);
    CHECK(strstr(err, "listed twice") != NULL);
    rf_conf_set_kv(c, "jobs=fraud", err, sizeof err);
    CHECK_EQ_INT(rf_conf_validate(c, 0, err, sizeof err), 0);
    rf_conf_set_kv(c, "input.topics=a,,b", err, sizeof err);
    CHECK_EQ_INT(rf_conf_validate(c, 0, err, sizeof err), RF_E_CONF);
    rf_conf_set_kv(c, "input.topics=a:confluent,b:plain", err, sizeof err);
    CHECK_EQ_INT(rf_conf_validate(c, 0, err, sizeof err), 0);
    rf_conf_set_kv(c, "pipeline.max.inflight=64", err, sizeof err);
    rf_conf_set_kv(c, "pipeline.batch.max=128", err, sizeof err);
    CHECK_EQ_INT(rf_conf_validate(c, 0, err, sizeof err), RF_E_CONF);
    CHECK(strstr(err, "exceeds pipeline.max.inflight") != NULL);
    rf_conf_destroy(c);
}

/* --dump-config output is itself a valid config that reproduces the same values. */
static void test_dump_roundtrip(void) {
    char err[512];
    struct rf_conf *a = rf_conf_new(err, sizeof err);
    rf_conf_set_kv(a, "fraud.alert.threshold=0.123456789012345", err, sizeof err);
    rf_conf_set_kv(a, "kafka.client.id=x", err, sizeof err);
    char *d1 = NULL, *d2 = NULL;
    size_t n1 = 0, n2 = 0;
    FILE *f = open_memstream(&d1, &n1);
    rf_conf_dump(a, f);
    fclose(f);
    struct rf_conf *b = rf_conf_new(err, sizeof err);
    const char *p = write_file(d1);
    CHECK_EQ_INT(rf_conf_load_file(b, p, err, sizeof err), 0);
    f = open_memstream(&d2, &n2);
    rf_conf_dump(b, f);
    fclose(f);
    CHECK_EQ_STR(d1, d2);
    CHECK(strstr(d2, "fraud.alert.threshold=0.123456789012345\n") != NULL);
    free(d1);
    free(d2);
    rf_conf_destroy(a);
    rf_conf_destroy(b);
    unlink(p);
}

RF_TEST_MAIN(RF_TEST(test_defaults), RF_TEST(test_file_ok), RF_TEST(test_file_duplicate), RF_TEST(test_file_errors),
             RF_TEST(test_missing_file), RF_TEST(test_kv_errors), RF_TEST(test_validate),
             RF_TEST(test_dump_roundtrip))
