/*
 * test_journal.c — the replay journal's chunk format (journal.h): what is written reads back
 * byte for byte, offsets are found or not, and nothing a hostile chunk holds is read past its
 * end (every truncation, every single-byte corruption of the lengths).
 */
#include <stdlib.h>
#include <string.h>

#include "rf_test.h"
#include "riskflow/err.h"
#include "riskflow/journal.h"

/* A chunk of three events: offset 10 with two outputs, 11 with none, 13 with one (an empty key
 * and an empty payload). Returns its length. */
static size_t sample(struct rf_jbuf *j, size_t *key_at, size_t *pay_at) {
    j->n = 0;
    size_t c = rf_journal_chunk_begin(j);
    size_t e = rf_journal_entry_begin(j, 10);
    CHECK_EQ_INT(rf_journal_output(j, 0, 0, "fraud.scores", "cust-1", 6, "\x01\x02\x03", 3,
                                   &key_at[0], &pay_at[0]), 0);
    CHECK_EQ_INT(rf_journal_output(j, 0, 1, "fraud.alerts", "cust-1", 6, "alert!", 6, &key_at[1],
                                   &pay_at[1]), 0);
    rf_journal_entry_end(j, e, 2);
    e = rf_journal_entry_begin(j, 11);
    rf_journal_entry_end(j, e, 0);
    e = rf_journal_entry_begin(j, 13);
    CHECK_EQ_INT(rf_journal_output(j, 2, 0, "market.signals", "", 0, "", 0, &key_at[2],
                                   &pay_at[2]), 0);
    rf_journal_entry_end(j, e, 1);
    rf_journal_chunk_end(j, c, 3);
    return j->n;
}

static void test_round_trip(void) {
    struct rf_jbuf j = {0};
    size_t ka[3], pa[3];
    size_t len = sample(&j, ka, pa);
    CHECK(memcmp(j.b, RF_JOURNAL_MAGIC, 4) == 0);
    CHECK(memcmp(j.b + ka[0], "cust-1", 6) == 0);
    CHECK(memcmp(j.b + pa[1], "alert!", 6) == 0);

    const uint8_t *p;
    int n;
    CHECK_EQ_INT(rf_journal_find(j.b, len, 10, &p, &n), 1);
    CHECK_EQ_INT(n, 2);
    struct rf_jout o;
    rf_journal_next(&p, &o);
    CHECK_EQ_INT(o.job, 0);
    CHECK_EQ_INT(o.kind, 0);
    CHECK(o.topic_len == 12 && memcmp(o.topic, "fraud.scores", 12) == 0);
    CHECK(o.key_len == 6 && memcmp(o.key, "cust-1", 6) == 0);
    CHECK(o.len == 3 && memcmp(o.payload, "\x01\x02\x03", 3) == 0);
    CHECK(o.payload == j.b + pa[0]);
    rf_journal_next(&p, &o);
    CHECK_EQ_INT(o.kind, 1);
    CHECK(o.len == 6 && memcmp(o.payload, "alert!", 6) == 0);

    CHECK_EQ_INT(rf_journal_find(j.b, len, 11, &p, &n), 1);
    CHECK_EQ_INT(n, 0);
    CHECK_EQ_INT(rf_journal_find(j.b, len, 13, &p, &n), 1);
    CHECK_EQ_INT(n, 1);
    rf_journal_next(&p, &o);
    CHECK_EQ_INT(o.job, 2);
    CHECK_EQ_INT(o.key_len, 0);
    CHECK_EQ_INT(o.len, 0);
    CHECK(p == j.b + len);
    CHECK_EQ_INT(rf_journal_find(j.b, len, 12, &p, &n), 0);
    CHECK_EQ_INT(rf_journal_find(j.b, len, 9, &p, &n), 0);

    int64_t first = 0, last = 0;
    CHECK_EQ_INT(rf_journal_span(j.b, len, &first, &last), 0);
    CHECK_EQ_INT(first, 10);
    CHECK_EQ_INT(last, 13);

    /* Two chunks in one buffer: the second starts where the first ends. */
    size_t c2 = rf_journal_chunk_begin(&j);
    size_t e = rf_journal_entry_begin(&j, -5);
    rf_journal_entry_end(&j, e, 0);
    rf_journal_chunk_end(&j, c2, 1);
    CHECK_EQ_INT(c2, len);
    CHECK_EQ_INT(rf_journal_find(j.b + c2, j.n - c2, -5, &p, &n), 1);
    CHECK_EQ_INT(rf_journal_span(j.b + c2, j.n - c2, &first, &last), 0);
    CHECK_EQ_INT(first, -5);

    /* Limits: a topic over 255 bytes or a key over 64 KiB writes nothing. */
    size_t before = j.n, a, b;
    char topic[300];
    memset(topic, 't', sizeof topic - 1);
    topic[sizeof topic - 1] = '\0';
    CHECK_EQ_INT(rf_journal_output(&j, 0, 0, topic, "k", 1, "v", 1, &a, &b), RF_E_INVAL);
    static char bigkey[70000];
    CHECK_EQ_INT(rf_journal_output(&j, 0, 0, "t", bigkey, sizeof bigkey, "v", 1, &a, &b),
                 RF_E_INVAL);
    CHECK_EQ_INT(j.n, before);
    rf_jbuf_free(&j);
}

/* A chunk with no entry has no span; the empty chunk is still well-formed for find. */
static void test_empty(void) {
    struct rf_jbuf j = {0};
    size_t c = rf_journal_chunk_begin(&j);
    rf_journal_chunk_end(&j, c, 0);
    const uint8_t *p;
    int n;
    int64_t f, l;
    CHECK_EQ_INT(rf_journal_find(j.b, j.n, 0, &p, &n), 0);
    CHECK_EQ_INT(rf_journal_span(j.b, j.n, &f, &l), RF_E_MALFORMED);
    rf_jbuf_free(&j);
}

/* Every prefix, every chunk with a byte appended, and every single-byte change: each either
 * reads as a well-formed chunk whose outputs all lie inside it, or is refused. Run under ASan
 * in the sanitizer build, so a read past the end would stop the test. */
static void test_hostile(void) {
    struct rf_jbuf j = {0};
    size_t ka[3], pa[3];
    size_t len = sample(&j, ka, pa);
    const uint8_t *p;
    int n;
    for (size_t cut = 0; cut < len; cut++) {
        uint8_t *copy = malloc(cut ? cut : 1);
        memcpy(copy, j.b, cut);
        CHECK_EQ_INT(rf_journal_find(copy, cut, 10, &p, &n), RF_E_MALFORMED);
        free(copy);
    }
    uint8_t *longer = malloc(len + 1);
    memcpy(longer, j.b, len);
    longer[len] = 0;
    CHECK_EQ_INT(rf_journal_find(longer, len + 1, 10, &p, &n), RF_E_MALFORMED);
    free(longer);
    int refused = 0, accepted = 0;
    for (size_t i = 0; i < len; i++) {
        for (int bit = 0; bit < 8; bit++) {
            uint8_t *copy = malloc(len);
            memcpy(copy, j.b, len);
            copy[i] ^= (uint8_t)(1u << bit);
            for (int64_t off = 9; off <= 14; off++) {
                int rc = rf_journal_find(copy, len, off, &p, &n);
                if (rc < 0) {
                    refused++;
                    continue;
                }
                accepted++;
                for (int k = 0; rc == 1 && k < n; k++) {
                    struct rf_jout o;
                    rf_journal_next(&p, &o);
                    CHECK(o.payload + o.len <= copy + len);
                    CHECK(o.key + o.key_len <= copy + len);
                }
            }
            free(copy);
        }
    }
    CHECK(refused > 0);
    CHECK(accepted > 0); /* flips in payload bytes or job numbers leave it well-formed */
    rf_jbuf_free(&j);
}

RF_TEST_MAIN(RF_TEST(test_round_trip), RF_TEST(test_empty), RF_TEST(test_hostile))
