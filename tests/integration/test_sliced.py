"""A sliced entity kind written by two riskflowd instances at once (issue 7: a terminal's state
when payments are keyed by customer, so one terminal's payments arrive on every partition).

Payments keyed by customer go through a 4-partition topic, paced, to two riskflowd instances in
one consumer group (jobs=fraud; terminal declared `sliced`). One instance is stopped mid-stream
and started again, so partitions move between them twice. Checks, on the real broker and Redis:
  - every payment has a score, and every duplicate is identical to its first copy;
  - each terminal's Redis key is a hash with exactly one field per partition that carried its
    payments, and each field holds exactly what the Python reference computes from that
    partition's payments alone — one writer per slice, no lost update, whichever instance
    owned the partition;
  - the slices add up to the terminal's counts over the whole stream (tile by tile);
  - the features read the other slices: many scores count more terminal payments than their
    own partition holds.
"""

import os
import random
import time

import rfkit
from rfkit import Produced

FEATURES_TEXT = """\
entity customer key=customer_id
entity terminal key=terminal_id sliced
feature amount = value(amount_minor/100) on Payment
feature cust_n_1d = count per customer on Payment window=1d/24
feature term_n_1h = count per terminal on Payment window=1h/6
feature term_n_1d = count per terminal on Payment window=1d/4 delay=1d
feature term_amt_7d = mean(amount_minor/100) per terminal on Payment window=7d/7 delay=1d
"""
NAMES = ["amount", "cust_n_1d", "term_n_1h", "term_n_1d", "term_amt_7d"]
PARTS = 4


def logistic_model(path):
    import json
    doc = {"format": "riskflow.logistic.v1", "name": "fraud", "version": "sliced-test",
           "features": NAMES, "scaler": {"mean": [0.0] * len(NAMES), "scale": [1.0] * len(NAMES)},
           "coefficients": [0.0] * len(NAMES), "intercept": 0.0, "threshold": 1.0}
    with open(path, "w") as f:
        json.dump(doc, f)


def test_sliced_two_instances(services, daemon_bin, tmp_path):
    rng = random.Random(int(os.environ.get("RF_E2E_SEED", "20261202")))
    customers = ["c%03d" % i for i in range(200)]
    pays = rfkit.gen_stream(rng, customers, 4000, "sl")
    # A few busy terminals: each sees payments from every partition.
    for p in pays:
        p["terminal_id"] = "T%02d" % rng.randrange(12)
    run = rfkit.unique("rf-sliced")
    feed, scores_t, alerts_t, dlq_t = run + ".feed", run + ".scores", run + ".alerts", run + ".dlq"
    rfkit.create_topics(services, {feed: PARTS, scores_t: 1, alerts_t: 1, dlq_t: 1})
    features = str(tmp_path / "features_sliced.conf")
    with open(features, "w") as f:
        f.write(FEATURES_TEXT)
    model = str(tmp_path / "model.json")
    logistic_model(model)
    conf = rfkit.fraud_conf(services, run, features=features, model=model,
                            fraud_score_where="all", store_slice_refresh_ms=200,
                            commit_interval_ms=200)
    recs = [Produced(feed, p["customer_id"].encode(), rfkit.encode_payment(p), payment=p)
            for p in pays]
    a = rfkit.Daemon(tmp_path, conf, name="a")
    b = rfkit.Daemon(tmp_path, conf, name="b")
    scores_r = rfkit.TopicReader(services, scores_t)
    producer = rfkit.make_producer(services)
    try:
        a.start()
        b.start()
        time.sleep(3)
        pacer = rfkit.Pacer(producer, recs, rate=400)
        pacer.start()
        time.sleep(4)
        a.assert_alive()
        b.assert_alive()
        rc, _ = a.stop()
        assert rc == 0, a.log_tail()
        time.sleep(2)
        a.start()
        pacer.join(120)
        assert not pacer.is_alive() and pacer.error is None, pacer.error
        assert all(r.err is None and r.offset is not None for r in recs)
        rfkit.wait_committed_to_end(services, b, run + ".group", feed, timeout=180)
        a.assert_alive()
        for d in (a, b):
            rc, _ = d.stop()
            assert rc == 0, d.log_tail()
        scores_r.read_to_end()
    except BaseException:
        a.kill()
        b.kill()
        print(a.log_tail(100))
        print(b.log_tail(100))
        raise

    # Every payment scored; duplicates (redelivered after the handover) identical.
    first = {}
    for m in scores_r.msgs:
        s = rfkit.decode_confluent(m.value(), rfkit.SCORE_ID, rfkit.SCORE_SCHEMA)
        if s["event_id"] in first:
            assert first[s["event_id"]][0] == m.value(), "a duplicate differs: " + s["event_id"]
        else:
            first[s["event_id"]] = (m.value(), s)
    assert set(first) == {p["event_id"] for p in pays}

    # The reference per partition: each slice is that partition's payments alone.
    decl = rfkit.rff.load(features, rfkit.SCHEMAS_DIR)
    by_part = {p: rfkit.rff.Engine(decl) for p in range(PARTS)}
    whole = rfkit.rff.Engine(decl)
    own_only = {}
    seen = {}
    for r in sorted(recs, key=lambda r: (r.partition, r.offset)):
        p = r.payment
        eng = by_part[r.partition]
        assert eng.apply("riskflow.Payment", p, feed, r.partition, r.offset)
        own_only[p["event_id"]] = eng.evaluate("riskflow.Payment", p)
        seen.setdefault(p["terminal_id"], set()).add(r.partition)
    for r in sorted(recs, key=lambda r: (r.payment["event_time"], r.payment["event_id"])):
        whole.apply("riskflow.Payment", r.payment, feed, r.partition, r.offset)
    tid = rfkit.rff.topic_id(feed)
    red = services.redis()
    bad = []
    for term, parts in sorted(seen.items()):
        key = rfkit.state_key(run, "terminal", term)
        assert red.type(key) in (b"hash", "hash"), (key, red.type(key))
        got = red.hgetall(key)
        want_fields = {("%08x:%d" % (tid, p)).encode() for p in parts}
        assert set(got) == want_fields, (term, sorted(got), sorted(want_fields))
        slices = []
        for p in parts:
            raw = got[("%08x:%d" % (tid, p)).encode()]
            st = by_part[p].state("terminal", term)
            if raw != st.pack():
                bad.append((term, p, rfkit.state_diff(
                    by_part[p].kind("terminal").unpack(raw), st)))
            slices.append(st)
        # The slices add up to the whole stream's counts, tile by tile (by absolute tile).
        full = whole.state("terminal", term)
        for gi, g in enumerate(full.groups):
            n = len(g.cnt)
            head = max(s.groups[gi].head for s in slices)
            assert head == g.head, (term, gi, head, g.head)
            for slot in range(n):
                tile = head - ((head - slot) % n)
                total = sum(s.groups[gi].cnt[slot] for s in slices
                            if s.groups[gi].head - tile < n and tile <= s.groups[gi].head)
                assert total == g.cnt[slot], (term, gi, slot, total, g.cnt[slot])
    assert not bad, "slices differ from their partitions' reference: %s" % bad[:3]

    # The features read the other slices too.
    more = sum(1 for eid, (_, s) in first.items()
               if {f["name"]: f["value"] for f in s["features"]}["term_n_1h"]
               > own_only[eid]["term_n_1h"])
    assert more > len(first) // 10, "only %d of %d scores read other slices" % (more, len(first))
