/*
 * test_rcluster.c — rcluster.c without a server: key slots (the specification's examples, the
 * hash-tag rules, the table-driven CRC against a bit-by-bit one), the parser of MOVED / ASK /
 * TRYAGAIN error texts (good ones, and every way a redirect can be malformed), and seed lists
 * refused at creation with the loop left clean.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "riskflow/err.h"
#include "riskflow/rcluster.h"
#include "rf_test.h"

static unsigned slot_of(const char *key) {
    return rf_rcluster_slot(key, strlen(key));
}

/* CRC16-XMODEM one bit at a time: an oracle written differently from the table. */
static unsigned crc16_bits(const unsigned char *p, size_t len) {
    unsigned crc = 0;
    for (size_t i = 0; i < len; i++) {
        crc ^= (unsigned)p[i] << 8;
        for (int b = 0; b < 8; b++)
            crc = crc & 0x8000 ? ((crc << 1) ^ 0x1021) & 0xffff : (crc << 1) & 0xffff;
    }
    return crc;
}

static void test_slots(void) {
    /* The specification's check value, and keys whose slots redis-cli CLUSTER KEYSLOT gives. */
    CHECK_EQ_INT(crc16_bits((const unsigned char *)"123456789", 9), 0x31c3);
    CHECK_EQ_INT(slot_of("123456789"), 0x31c3 % 16384); /* 12739 */
    CHECK_EQ_INT(slot_of("123456789"), 12739);
    CHECK_EQ_INT(slot_of("foo"), 12182);
    CHECK_EQ_INT(slot_of("bar"), 5061);
    CHECK_EQ_INT(slot_of(""), 0);
    /* Hash tags: the same tag, the same slot. */
    CHECK_EQ_INT(slot_of("{user1000}.following"), slot_of("{user1000}.followers"));
    CHECK_EQ_INT(slot_of("{user1000}.following"), slot_of("user1000"));
    /* "{}" is no tag: the whole key. */
    CHECK_EQ_INT(slot_of("foo{}{bar}"), crc16_bits((const unsigned char *)"foo{}{bar}", 10) & 16383);
    CHECK(slot_of("foo{}{bar}") != slot_of("bar"));
    /* The first '{' and the first '}' after it: the tag is "{bar". */
    CHECK_EQ_INT(slot_of("foo{{bar}}zap"), slot_of("{bar"));
    CHECK_EQ_INT(slot_of("foo{{bar}}zap"), crc16_bits((const unsigned char *)"{bar", 4) & 16383);
    /* Only the first tag counts. */
    CHECK_EQ_INT(slot_of("foo{bar}{zap}"), slot_of("bar"));
    /* An open brace with no close: the whole key. */
    CHECK_EQ_INT(slot_of("foo{bar"), crc16_bits((const unsigned char *)"foo{bar", 7) & 16383);
    CHECK_EQ_INT(slot_of("}foo{"), crc16_bits((const unsigned char *)"}foo{", 5) & 16383);
    /* Binary keys (NUL bytes, high bytes) against the bit-by-bit CRC. */
    unsigned char key[64];
    uint32_t x = 12345;
    int bad = 0;
    for (int n = 0; n < 5000; n++) {
        size_t len = (size_t)(n % 64);
        for (size_t i = 0; i < len; i++) {
            x = x * 1103515245u + 12345u;
            key[i] = (unsigned char)(x >> 16);
            if (key[i] == '{' || key[i] == '}')
                key[i] = 'x';
        }
        bad += rf_rcluster_slot((const char *)key, len) != (crc16_bits(key, len) & 16383);
    }
    CHECK_EQ_INT(bad, 0);
}

static int parse(const char *s, struct rf_rcluster_redirect *rd) {
    return rf_rcluster_parse_redirect(s, strlen(s), rd);
}

static void test_redirects(void) {
    struct rf_rcluster_redirect rd;
    CHECK_EQ_INT(parse("MOVED 3999 127.0.0.1:6381", &rd), 0);
    CHECK_EQ_INT(rd.kind, RF_RCLUSTER_MOVED);
    CHECK_EQ_INT(rd.slot, 3999);
    CHECK_EQ_STR(rd.host, "127.0.0.1");
    CHECK_EQ_INT(rd.port, 6381);
    CHECK_EQ_INT(parse("ASK 16383 redis-2.example:7000", &rd), 0);
    CHECK_EQ_INT(rd.kind, RF_RCLUSTER_ASK);
    CHECK_EQ_INT(rd.slot, 16383);
    CHECK_EQ_STR(rd.host, "redis-2.example");
    CHECK_EQ_INT(rd.port, 7000);
    /* IPv6: the port is after the last ':'. */
    CHECK_EQ_INT(parse("MOVED 0 ::1:7102", &rd), 0);
    CHECK_EQ_INT(rd.slot, 0);
    CHECK_EQ_STR(rd.host, "::1");
    CHECK_EQ_INT(rd.port, 7102);
    /* No endpoint announced (Redis 7 "unknown-endpoint"): empty host, same node's address. */
    CHECK_EQ_INT(parse("MOVED 12 :7103", &rd), 0);
    CHECK_EQ_INT(rd.kind, RF_RCLUSTER_MOVED);
    CHECK_EQ_STR(rd.host, "");
    CHECK_EQ_INT(rd.port, 7103);
    CHECK_EQ_INT(parse("TRYAGAIN Multiple keys request during rehashing of slot", &rd), 0);
    CHECK_EQ_INT(rd.kind, RF_RCLUSTER_TRYAGAIN);
    CHECK_EQ_INT(parse("TRYAGAIN", &rd), 0);
    CHECK_EQ_INT(rd.kind, RF_RCLUSTER_TRYAGAIN);
    /* Other errors are not redirects. */
    static const char *const plain[] = {
        "ERR unknown command", "CLUSTERDOWN The cluster is down", "MOVEDX 1 h:1", "ASKING",
        "EXECABORT Transaction discarded because of previous errors.", "", "moved 1 h:1",
        "TRYAGAINX"};
    for (size_t i = 0; i < sizeof plain / sizeof plain[0]; i++) {
        rd.kind = RF_RCLUSTER_MOVED;
        CHECK_EQ_INT(parse(plain[i], &rd), 0);
        CHECK_EQ_INT(rd.kind, RF_RCLUSTER_NOT_REDIRECT);
    }
    /* Malformed redirects are refused, never half-read. */
    static const char *const bad[] = {
        "MOVED",           "MOVED ",          "MOVED 1",          "MOVED 1 ",
        "MOVED x 1.2.3.4:5", "MOVED -1 h:1",  "MOVED 16384 h:1",  "MOVED 99999 h:1",
        "MOVED 123456 h:1", "MOVED 1 h",       "MOVED 1 h:",       "MOVED 1 h:0",
        "MOVED 1 h:65536", "MOVED 1 h:12x",    "MOVED 1 h:1 extra", "MOVED 1  h:1x",
        "ASK 1",           "ASK 1 h:99999999", "MOVED 1\th:1",      "ASK 1x h:1"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int rc = parse(bad[i], &rd);
        if (rc != RF_E_INVAL)
            fprintf(stderr, "accepted: \"%s\"\n", bad[i]);
        CHECK_EQ_INT(rc, RF_E_INVAL);
        CHECK_EQ_INT(rd.kind, RF_RCLUSTER_NOT_REDIRECT);
    }
    /* A host too long for the buffer is refused, not cut. */
    char longhost[400] = "MOVED 5 ";
    memset(longhost + 8, 'h', 300);
    strcpy(longhost + 308, ":7000");
    CHECK_EQ_INT(parse(longhost, &rd), RF_E_INVAL);
    /* The length is honoured: text past len is not read. */
    CHECK_EQ_INT(rf_rcluster_parse_redirect("MOVED 7 h:70009", 14, &rd), 0);
    CHECK_EQ_INT(rd.port, 7000);
}

static void test_bad_seeds(void) {
    uv_loop_t loop;
    CHECK_EQ_INT(uv_loop_init(&loop), 0);
    struct rf_rcluster_conf conf;
    memset(&conf, 0, sizeof conf);
    conf.node = (struct rf_redis_conf){NULL, 0, 1000, 1000, 50, 1000, NULL, NULL, NULL};
    static const char *const seeds[] = {"", " , ", "127.0.0.1", "127.0.0.1:", ":7000",
                                        "127.0.0.1:0", "127.0.0.1:70000", "127.0.0.1:7x"};
    for (size_t i = 0; i < sizeof seeds / sizeof seeds[0]; i++) {
        char err[256] = "";
        conf.seeds = seeds[i];
        CHECK(rf_rcluster_new(&loop, &conf, NULL, NULL, err, sizeof err) == NULL);
        CHECK(err[0] != 0);
    }
    /* Bad node timeouts are rf_redis's to refuse: reported for the first seed. */
    char err[256] = "";
    conf.seeds = "127.0.0.1:7101";
    conf.node.command_timeout_ms = 0;
    CHECK(rf_rcluster_new(&loop, &conf, NULL, NULL, err, sizeof err) == NULL);
    CHECK(strstr(err, "timeout") != NULL);
    conf.seeds = NULL;
    CHECK(rf_rcluster_new(&loop, &conf, NULL, NULL, err, sizeof err) == NULL);
    /* Every refused client closed what it had opened. */
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK_EQ_INT(uv_loop_close(&loop), 0);
}

RF_TEST_MAIN(RF_TEST(test_slots), RF_TEST(test_redirects), RF_TEST(test_bad_seeds))
