/*
 * test_offsets.c — offsets.c alone: out-of-order completions turned into a contiguous
 * watermark per partition, no offset of an earlier assignment stored after a reassign, O(1)
 * in-flight counts, and the commit policy around cooperative rebalances (librdkafka #4059).
 */
#include <stdlib.h>

#include "riskflow/offsets.h"
#include "rf_test.h"

static int32_t released[64];
static int n_released;

static void on_release(int32_t slot, void *arg) {
    (void)arg;
    released[n_released++] = slot;
}

static void test_watermark(void) {
    rf_offsets_t *o = rf_offsets_new(16);
    int a = rf_offsets_find(o, NULL, "t", 0);
    int b = rf_offsets_find(o, NULL, "t", 1);
    CHECK_EQ_INT(rf_offsets_find(o, NULL, "t", 0), a); /* found again, not created */
    CHECK_EQ_INT(rf_offsets_n_parts(o), 2);
    rf_offsets_assign(o, a);
    rf_offsets_assign(o, b);
    CHECK_EQ_INT(rf_offsets_n_assigned(o), 2);
    /* a: slots 0,1,2 at offsets 10,11,12; b: slot 3 at offset 5 */
    rf_offsets_take(o, a, 0, 10);
    rf_offsets_take(o, a, 1, 11);
    rf_offsets_take(o, a, 2, 12);
    rf_offsets_take(o, b, 3, 5);
    CHECK_EQ_INT(rf_offsets_inflight(o, a), 3);
    int part = -1;
    n_released = 0;
    /* 11 completes first: nothing can be stored (10 is not complete) */
    CHECK_EQ_INT(rf_offsets_done(o, 1, &part, on_release, NULL), -1);
    CHECK_EQ_INT(part, a);
    CHECK_EQ_INT(n_released, 0);
    CHECK_EQ_INT(rf_offsets_inflight(o, a), 2);
    /* 10 completes: 10 and 11 leave, in order; 11 may be stored */
    CHECK_EQ_INT(rf_offsets_done(o, 0, &part, on_release, NULL), 11);
    CHECK_EQ_INT(n_released, 2);
    CHECK_EQ_INT(released[0], 0);
    CHECK_EQ_INT(released[1], 1);
    rf_offsets_stored(o, a, 11);
    CHECK_EQ_INT(rf_offsets_done(o, 3, &part, on_release, NULL), 5);
    CHECK_EQ_INT(part, b);
    CHECK_EQ_INT(rf_offsets_done(o, 2, &part, on_release, NULL), 12);
    CHECK_EQ_INT(rf_offsets_inflight(o, a), 0);
    CHECK_EQ_INT(n_released, 4);
    rf_offsets_destroy(o);
}

static void test_reassign_never_goes_back(void) {
    rf_offsets_t *o = rf_offsets_new(8);
    int a = rf_offsets_find(o, NULL, "t", 0);
    rf_offsets_assign(o, a);
    rf_offsets_take(o, a, 0, 100);
    rf_offsets_take(o, a, 1, 101);
    /* revoked with the events in flight, then given back: they are of the old generation */
    rf_offsets_revoke(o, a);
    int part;
    n_released = 0;
    CHECK_EQ_INT(rf_offsets_done(o, 0, &part, on_release, NULL), -1); /* not assigned */
    rf_offsets_assign(o, a);
    CHECK_EQ_INT(rf_offsets_done(o, 1, &part, on_release, NULL), -1); /* older generation */
    CHECK_EQ_INT(n_released, 2);
    /* events of the new generation store again */
    rf_offsets_take(o, a, 2, 90); /* the new owner committed less: redelivered from 90 */
    CHECK_EQ_INT(rf_offsets_done(o, 2, &part, on_release, NULL), 90);
    rf_offsets_stored(o, a, 90);
    rf_offsets_take(o, a, 3, 90); /* a duplicate offset does not move the watermark */
    CHECK_EQ_INT(rf_offsets_done(o, 3, &part, on_release, NULL), -1);
    rf_offsets_destroy(o);
}

static void test_commit_policy(void) {
    rf_offsets_t *o = rf_offsets_new(4);
    uint64_t now = 1000;
    CHECK(rf_offsets_may_commit(o, now));
    /* a cooperative revoke: no commit until two assign rounds */
    rf_offsets_rebalance_begin(o, now);
    CHECK(rf_offsets_rebalancing(o, now));
    CHECK(!rf_offsets_may_commit(o, now + 10));
    rf_offsets_rebalance_round(o);
    CHECK(!rf_offsets_may_commit(o, now + 20));
    rf_offsets_rebalance_round(o);
    CHECK(rf_offsets_may_commit(o, now + 30));
    rf_offsets_rebalance_round(o); /* an extra assign does not go negative */
    CHECK(rf_offsets_may_commit(o, now + 40));
    /* bounded: a rebalance that never ends releases commits after a minute */
    rf_offsets_rebalance_begin(o, now);
    CHECK(!rf_offsets_may_commit(o, now + 59999));
    CHECK(rf_offsets_may_commit(o, now + 60000));
    /* the group's join state from statistics */
    rf_offsets_group_state(o, 0);
    CHECK(!rf_offsets_may_commit(o, now + 70000));
    rf_offsets_group_state(o, 1);
    CHECK(rf_offsets_may_commit(o, now + 70000));
    rf_offsets_destroy(o);
}

static void test_many_partitions(void) {
    rf_offsets_t *o = rf_offsets_new(4);
    int a = rf_offsets_find(o, NULL, "txn.payments", 3);
    CHECK_EQ_STR(rf_offsets_part_at(o, a)->topic, "txn.payments");
    CHECK_EQ_INT(rf_offsets_part_at(o, a)->partition, 3);
    /* many partitions: the table grows, indexes stay */
    for (int p = 0; p < 100; p++)
        CHECK_EQ_INT(rf_offsets_find(o, NULL, "x", p), 1 + p);
    CHECK_EQ_INT(rf_offsets_find(o, NULL, "txn.payments", 3), a);
    /* the consumer's topic handle finds it without the name */
    int dummy;
    CHECK_EQ_INT(rf_offsets_find(o, &dummy, "x", 7), 8);
    CHECK_EQ_INT(rf_offsets_find(o, &dummy, "ignored", 7), 8);
    rf_offsets_destroy(o);
}

RF_TEST_MAIN(RF_TEST(test_watermark), RF_TEST(test_reassign_never_goes_back),
             RF_TEST(test_commit_policy), RF_TEST(test_many_partitions))
