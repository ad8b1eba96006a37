"""End-to-end tests of riskflowd against a real Kafka 3.9 broker and a real redis-server.

Run (from the repo root, services from tools/services.sh):
    source .run/services.env
    RF_DAEMON=build/riskflowd .venv/bin/python -m pytest -q tests/integration/test_e2e.py

Everything the daemon is checked against is computed here, independently: payments are encoded
with fastavro from schemas/*.avsc and framed by hand, features come from
tools/train/riskflow_features.py, scores and reasons from the model JSON (rfkit.Model).
Every run uses fresh topics, consumer group and Redis key prefix (uuid suffix).
RF_E2E_SEED=<int> replays a particular generated stream.

  A  test_acceptance_...        two input topics, every kind of poison, exact outputs/state/offsets
  B  test_sigterm_mid_stream_.. SIGTERM mid-stream, restart with the same group
  D  test_customer_on_two_...   one customer on two input topics (replay guard vs topics)
  E  test_sigterm_during_reb..  rolling restart: SIGTERM while a cooperative rebalance runs
  (C, configuration errors, is tests/integration/test_cli.py: no services needed.)
Assertions that fail because of a known daemon bug say "DAEMON BUG" in their message.
"""

import os
import random
import time
from collections import defaultdict

import pytest

import rfkit
from rfkit import Produced, close

SEED = int(os.environ.get("RF_E2E_SEED", "20261129"))
THRESHOLD = 0.5
MAX_BYTES = 4096


def base_conf(svc, run, inputs, scores, alerts, dlq):
    return {
        "kafka.bootstrap.servers": svc.bootstrap,
        "kafka.group.id": run + ".group",
        "input.topics": inputs,
        "fraud.scores.topic": scores,
        "fraud.alerts.topic": alerts,
        "output.dlq.topic": dlq,
        "redis.host": svc.redis_host,
        "redis.port": svc.redis_port,
        "redis.key.prefix": run,
        "fraud.alert.threshold": THRESHOLD,
        "input.max.message.bytes": MAX_BYTES,
        "schemas.dir": rfkit.SCHEMAS_DIR,
        "fraud.model.path": rfkit.MODEL_PATH,
        # every payment kind scored: these tests hold the engine to one score per payment of
        # any kind (the default filter, money coming in left out, is test_credit's)
        "fraud.score.where": "all",
        "features.path": rfkit.FEATURES_PATH,
        "log.level": "info",
        "stats.interval.ms": 1000,
    }


def first(items, n=5):
    items = list(items)
    return "%d: %s%s" % (len(items), items[:n], " ..." if len(items) > n else "")


def wait_for_scores(reader, daemon, want_ids, timeout, min_count=None):
    """Poll the scores topic until every id in want_ids has a score (or min_count records
    arrived). Returns the decoded records seen so far."""
    deadline = time.monotonic() + timeout
    want_ids = want_ids or set()
    seen = set()
    n = 0
    while True:
        reader.poll()
        for m in reader.msgs[n:]:
            rec = rfkit.decode_confluent(m.value(), rfkit.SCORE_ID, rfkit.SCORE_SCHEMA)
            seen.add(rec["event_id"])
        n = len(reader.msgs)
        if min_count is not None and n >= min_count:
            return
        if min_count is None and want_ids <= seen:
            return
        daemon.assert_alive()
        if time.monotonic() > deadline:
            pytest.fail("after %d s: %d score records (want %s), %d of %d event ids scored; "
                        "missing %s\n%s"
                        % (timeout, n, min_count, len(seen & want_ids), len(want_ids),
                           first(sorted(want_ids - seen)), daemon.log_tail()), pytrace=False)


def check_stop(daemon, what):
    rc, secs = daemon.stop(timeout=30)
    assert rc is not None, "%s: riskflowd did not exit within 30 s of SIGTERM (killed)\n%s" % (
        what, daemon.log_tail())
    assert rc == 0, "%s: riskflowd exited %s after SIGTERM, want 0\n%s" % (
        what, rc, daemon.log_tail())
    return secs


# ============================================================================ Test A

def build_poison(rng, t1, t2, t1_customers, t2_customers):
    """Every kind of undecodable input, with the DLQ reason riskflowd must give it."""
    def fake_payment(customer, **over):
        p = {"event_id": "poison-%d" % rng.randrange(10**9), "customer_id": customer,
             "card_token": "tok_x", "merchant_id": "m0001", "terminal_id": "t00001",
             "mcc": 5411, "amount_minor": 12345, "currency": "EUR", "channel": "ECOM",
             "country": "DE", "kind": "PURCHASE", "event_time": rfkit.T_BASE_MS + 1}
        p.update(over)
        return p

    c1 = lambda: rng.choice(t1_customers).encode()  # noqa: E731
    c2 = lambda: rng.choice(t2_customers).encode()  # noqa: E731
    valid1 = rfkit.encode_payment(fake_payment("x"))
    plain = rfkit.encode_payment(fake_payment("y"), framing="plain")
    score_rec = {"event_id": "e1", "customer_id": "c1", "score": 0.25, "model_version": "v",
                 "features": [{"name": "amount", "value": 1.0}], "event_time": 1,
                 "scored_at": 2, "source_partition": 0, "source_offset": 7}
    long_id = rfkit.encode_payment(fake_payment("z", event_id="E" * 100))  # > RF_ID_MAX
    big = rfkit.confluent(1, rfkit.avro_body(rfkit.PAYMENT_SCHEMA,
                                             fake_payment("w", merchant_id="M" * 5000)))
    at_cap = valid1 + b"\x00" * (MAX_BYTES - len(valid1))   # exactly the cap: decoded, malformed
    over_cap = at_cap + b"\x00"                             # one byte over: oversize
    garbage = bytes([0xFF]) + bytes(rng.randrange(256) for _ in range(63))
    poison = [
        # (topic, key, value, reason, label)
        (t1, c1(), garbage, "bad_magic", "garbage bytes"),
        (t1, c1(), rfkit.confluent(1, b"\x01" + bytes(rng.randrange(256) for _ in range(40))),
         "malformed", "garbage body under a valid header (string length -1)"),
        (t1, c1(), b"\x01" + valid1[1:], "bad_magic", "wrong magic byte"),
        (t1, c1(), rfkit.confluent(77, valid1[5:]), "unknown_schema", "unknown schema id 77"),
        (t1, c1(), rfkit.confluent(2, rfkit.avro_body(rfkit.SCORE_SCHEMA, score_rec)),
         "unknown_schema", "known schema id 2 (FraudScore), not a payment"),
        (t1, c1(), valid1[:-3], "truncated", "valid payment cut short"),
        (t1, c1(), b"\x00\x00\x00", "truncated", "shorter than the Confluent header"),
        (t1, c1(), big, "oversize", "5 KB payment over input.max.message.bytes"),
        (t1, c1(), over_cap, "oversize", "cap + 1 bytes"),
        (t1, c1(), at_cap, "malformed", "exactly the cap, trailing zero bytes"),
        (t1, c1(), long_id, "malformed", "event_id longer than the daemon's id bound"),
        (t1, None, valid1[:10], "truncated", "null key, truncated"),
        (t2, c2(), plain + b"\x07", "malformed", "plain topic: payment + a trailing byte"),
        (t2, c2(), plain[:-2], "truncated", "plain topic: payment cut short"),
        (t2, c2(), b"\x00" + plain + b"\x00" * 5000, "oversize", "plain topic: oversize"),
    ]
    return poison


def test_acceptance_two_topics_poison_features_state_offsets(services, model, daemon_bin,
                                                             tmp_path):
    """The issue's acceptance test: two input topics (Confluent and plain framing), every kind
    of poison, ~3000 payments, some customers paying on both topics. Outputs, features, Redis
    state, DLQ and offsets are all exact."""
    t_start = time.monotonic()
    rng = random.Random(SEED)
    run = rfkit.unique("rf-e2e-a")
    t1, t2 = run + ".payments", run + ".payments-plain"
    scores_t, alerts_t, dlq_t = run + ".scores", run + ".alerts", run + ".dlq"
    rfkit.create_topics(services, {t1: 4, t2: 2, scores_t: 4, alerts_t: 2, dlq_t: 2})

    customers = ["C%04d" % i for i in range(150)]
    t1_customers, t2_customers = customers[:115], customers[115:]
    t2_set = set(t2_customers)
    # C0090..C0114 pay on both topics (say cards and transfers): each of their payments goes
    # to either, so their state is fed by two sources whose offsets overlap.
    both_set = set(customers[90:115])
    topic_rng = random.Random(SEED + 100)  # its own stream: the rest of the run is unchanged
    stream = rfkit.gen_stream(rng, customers, 3000, prefix="a")
    poison = build_poison(rng, t1, t2, t1_customers, t2_customers)

    recs = []
    for p in stream:
        if p["customer_id"] in both_set:
            topic = topic_rng.choice((t1, t2))
        else:
            topic = t2 if p["customer_id"] in t2_set else t1
        framing = "plain" if topic == t2 else "confluent"
        recs.append(Produced(topic, p["customer_id"].encode(), rfkit.encode_payment(p, framing),
                             payment=p))
    # Poison at known positions between 5% and 90% of the stream: every partition still has
    # payments after them, so "all scores arrived" implies the poison was consumed too.
    n = len(recs)
    positions = sorted(rng.sample(range(n // 20, n * 9 // 10), len(poison)), reverse=True)
    poison_recs = []
    for pos, (topic, key, value, reason, label) in zip(positions, poison):
        r = Produced(topic, key, value, expect=(reason, label))
        recs.insert(pos, r)
        poison_recs.append(r)
    payments = [r for r in recs if r.payment is not None]
    by_id = {r.payment["event_id"]: r for r in payments}
    assert len(by_id) == len(payments) == 3000
    on_both = {c for c in both_set
               if len({r.topic for r in payments if r.payment["customer_id"] == c}) == 2}
    assert len(on_both) >= 20, "generator: only %d customers on both topics" % len(on_both)

    conf = base_conf(services, run, "%s,%s:plain" % (t1, t2), scores_t, alerts_t, dlq_t)
    daemon = rfkit.Daemon(tmp_path, conf)
    reader = rfkit.TopicReader(services, scores_t)
    try:
        daemon.start()
        producer = rfkit.make_producer(services)
        for r in recs:
            rfkit.produce(producer, r)
        rfkit.flush_checked(producer, recs)

        wait_for_scores(reader, daemon, set(by_id), timeout=120)
        secs = check_stop(daemon, "test A")
        t_run = time.monotonic() - t_start

        # ---- read every output topic to its end (the daemon has exited)
        reader.read_to_end()
        alerts_r = rfkit.TopicReader(services, alerts_t)
        dlq_r = rfkit.TopicReader(services, dlq_t)
        alerts_r.read_to_end()
        dlq_r.read_to_end()
    except BaseException:
        daemon.kill()
        print(daemon.log_tail(200))
        raise
    finally:
        reader.close()

    print("test A: %d payments + %d poison, daemon stopped in %.1f s, %.1f s to here"
          % (len(payments), len(poison_recs), secs, t_run))

    # ---- scores: exactly one per event id, in the right place, decodable
    scores = {}
    score_seq = []  # event ids in scores-topic order (each partition in offset order)
    dup, extra, bad_fields = [], [], []
    for m in reader.msgs:
        s = rfkit.decode_confluent(m.value(), rfkit.SCORE_ID, rfkit.SCORE_SCHEMA)
        eid = s["event_id"]
        if eid not in by_id:
            extra.append(eid)
            continue
        if eid in scores:
            dup.append(eid)
            continue
        scores[eid] = s
        score_seq.append(eid)
        r = by_id[eid]
        want = {"customer_id": r.payment["customer_id"], "source_partition": r.partition,
                "source_offset": r.offset, "event_time": r.payment["event_time"],
                "model_version": model.version}
        got = dict(s, event_time=rfkit.ts_ms(s["event_time"]))
        for k, v in want.items():
            if got[k] != v:
                bad_fields.append((eid, k, got[k], v))
        if m.key() != r.payment["customer_id"].encode():
            bad_fields.append((eid, "kafka key", m.key(), r.payment["customer_id"]))
    missing = set(by_id) - set(scores)
    assert not extra, "scores for event ids never produced: " + first(extra)
    assert not dup, "event ids scored more than once: " + first(dup)
    assert not missing, "event ids without a score: " + first(sorted(missing))
    assert len(reader.msgs) == len(by_id)
    assert not bad_fields, "score fields differ from the input (event, field, got, want): " + \
        first(bad_fields)

    # ---- features: the Python reference replaying each customer's payments in the order the
    # daemon applied them. A customer's scores share one scores partition (keyed by customer)
    # and are produced in the order they were computed, so that order is the scores topic's.
    # For a customer on one topic it must be offset order; for one on both topics any
    # interleaving of the two is valid, but each (topic, partition) stays in offset order.
    order, unordered, last_off = [], [], {}
    for eid in score_seq:
        r = by_id[eid]
        src = (r.payment["customer_id"], r.topic, r.partition)
        if src in last_off and r.offset <= last_off[src]:
            unordered.append((eid,) + src + (r.offset, last_off[src]))
        last_off[src] = r.offset
        order.append(r)
    assert not unordered, ("a customer's scores are out of offset order within one input "
                           "(topic, partition) (event, customer, topic, partition, offset, "
                           "previous offset): " + first(unordered))
    ref_feats, ref_states = rfkit.replay_features([(r.payment, r.topic, r.partition, r.offset)
                                                  for r in order])
    feat_bad, score_bad = rfkit.compare_scores(scores, ref_feats, model)
    assert not feat_bad, ("features differ from riskflow_features.py (event, feature, daemon, "
                          "reference; customers on both topics: %s): %s"
                          % (sorted({by_id[b[0]].payment["customer_id"] for b in feat_bad}
                                    & on_both)[:5], first(feat_bad, 8)))
    assert not score_bad, "scores differ from the model JSON (event, daemon, reference): " + \
        first(score_bad)
    windows_rolled = sum(1 for f in ref_feats.values() if f["cust_count_24h"] == 1.0
                         and f["cust_secs_since_last"] < 30 * 86400.0)
    assert windows_rolled > 20, "generator: too few 24 h window roll-overs to be a test"

    # ---- alerts: exactly for score >= threshold, consistent with the score
    want_alert = {eid for eid, s in scores.items() if s["score"] >= THRESHOLD}
    assert 10 <= len(want_alert) < len(scores) // 2, \
        "generator: %d alerts out of %d is not a useful mix" % (len(want_alert), len(scores))
    alerts, a_dup, a_bad = {}, [], []
    for m in alerts_r.msgs:
        a = rfkit.decode_confluent(m.value(), rfkit.ALERT_ID, rfkit.ALERT_SCHEMA)
        eid = a["event_id"]
        if eid in alerts:
            a_dup.append(eid)
            continue
        alerts[eid] = a
        s, p = scores.get(eid), by_id[eid].payment if eid in by_id else None
        if s is None or p is None:
            continue
        checks = {
            "score": (a["score"], s["score"]),
            "threshold": (a["threshold"], THRESHOLD),
            "model_version": (a["model_version"], s["model_version"]),
            "customer_id": (a["customer_id"], p["customer_id"]),
            "card_token": (a["card_token"], p["card_token"]),
            "terminal_id": (a["terminal_id"], p["terminal_id"]),
            "amount_minor": (a["amount_minor"], p["amount_minor"]),
            "currency": (a["currency"], p["currency"]),
            "event_time": (rfkit.ts_ms(a["event_time"]), p["event_time"]),
        }
        for k, (g, w) in checks.items():
            if g != w:
                a_bad.append((eid, k, g, w))
        reasons = a["reasons"]
        contribs = [r["contribution"] for r in reasons]
        if not reasons:
            a_bad.append((eid, "reasons", "empty"))
        elif contribs != sorted(contribs, reverse=True):
            a_bad.append((eid, "reasons not sorted by contribution", contribs))
        x = [f["value"] for f in s["features"]]
        ref = model.reasons(x)
        got = [(r["feature"], r["value"], r["contribution"]) for r in reasons]
        if [g[0] for g in got] != [w[0] for w in ref] or not all(
                close(g[1], w[1]) and close(g[2], w[2]) for g, w in zip(got, ref)):
            a_bad.append((eid, "reasons", got, "want top positive contributions", ref))
    assert not a_dup, "alerts produced twice: " + first(a_dup)
    assert set(alerts) == want_alert, "alerts %s; missing %s, unexpected %s" % (
        len(alerts), first(sorted(want_alert - set(alerts))),
        first(sorted(set(alerts) - want_alert)))
    assert not a_bad, "alert fields wrong: " + first(a_bad)

    # ---- Redis: each customer's value equals the reference state after all its events
    red = services.redis()
    r_bad = []
    for c, st in ref_states.items():
        key = rfkit.state_key(run, "customer", c)
        raw = red.get(key)
        if raw is None:
            r_bad.append((key, "missing"))
            continue
        try:
            got = rfkit.unpack_state(raw)
        except ValueError as e:
            r_bad.append((key, str(e)))
            continue
        if got != st:
            r_bad.append((key, rfkit.state_diff(got, st)))
    keys = {k.decode() for k in red.scan_iter(match=run + ":*", count=1000)}
    # every customer's value, every terminal's slices (one hash each: test_sliced.py checks
    # their contents), and the Redis epoch marker (README "Redis durability"); no journal is
    # left after a clean stop
    terminals = {r.payment["terminal_id"] for r in payments}
    want_keys = ({rfkit.state_key(run, "customer", c) for c in ref_states}
                 | {rfkit.state_key(run, "terminal", t) for t in terminals} | {run + ":epoch"})
    assert all(red.type(rfkit.state_key(run, "terminal", t)) == b"hash" for t in terminals)
    assert not r_bad, "Redis state differs from the reference: " + first(r_bad, 3)
    assert keys == want_keys, "Redis keys under the prefix: unexpected %s" % first(
        sorted(keys - want_keys))

    # ---- DLQ: exactly the poison, original bytes and key, reason and source headers
    want_dlq = {(r.topic, r.partition, r.offset): r for r in poison_recs}
    got_dlq, d_bad = {}, []
    for m in dlq_r.msgs:
        h = rfkit.headers_dict(m)
        try:
            src = (h["rf.source.topic"], int(h["rf.source.partition"]),
                   int(h["rf.source.offset"]))
        except (KeyError, ValueError) as e:
            d_bad.append(("bad headers", h, repr(e)))
            continue
        if src in got_dlq:
            d_bad.append((src, "dead-lettered twice"))
            continue
        got_dlq[src] = m
        r = want_dlq.get(src)
        if r is None:
            continue
        reason, label = r.expect
        if h.get("rf.reason") != reason:
            d_bad.append((label, "rf.reason", h.get("rf.reason"), reason))
        if not h.get("rf.error"):
            d_bad.append((label, "rf.error empty"))
        if (m.value() or b"") != r.value:
            d_bad.append((label, "value differs from the original bytes",
                          len(m.value() or b""), len(r.value)))
        if m.key() != r.key:
            d_bad.append((label, "key", m.key(), r.key))
    assert not d_bad, "DLQ records wrong: " + first(d_bad, 8)
    assert set(got_dlq) == set(want_dlq), "DLQ holds %d records; missing %s; unexpected %s" % (
        len(got_dlq), first([want_dlq[k].expect[1] for k in sorted(set(want_dlq) - set(got_dlq))]),
        first(sorted(set(got_dlq) - set(want_dlq))))

    # ---- offsets: the group committed the end of every input partition
    tps = [(t1, p) for p in range(4)] + [(t2, p) for p in range(2)]
    committed = rfkit.committed_offsets(services, conf["kafka.group.id"], tps)
    ends = rfkit.end_offsets(services, tps)
    assert committed == ends, "committed offsets %s != end offsets %s" % (committed, ends)

    rfkit.delete_topics(services, [t1, t2, scores_t, alerts_t, dlq_t])
    print("test A: %.1f s in all" % (time.monotonic() - t_start))


# ============================================================================ Test B

def test_sigterm_mid_stream_then_restart(services, model, daemon_bin, tmp_path):
    """SIGTERM while payments are still arriving: exit 0, everything it scored is committed,
    a restart with the same group scores the rest; nothing is lost, nothing committed is
    scored again, and state carried over through Redis."""
    t_start = time.monotonic()
    rng = random.Random(SEED + 1)
    run = rfkit.unique("rf-e2e-b")
    tin, scores_t, alerts_t, dlq_t = (run + ".payments", run + ".scores", run + ".alerts",
                                      run + ".dlq")
    rfkit.create_topics(services, {tin: 4, scores_t: 4, alerts_t: 2, dlq_t: 1})
    customers = ["C%04d" % i for i in range(500)]
    stream = rfkit.gen_stream(rng, customers, 20000, prefix="b")
    recs = [Produced(tin, p["customer_id"].encode(), rfkit.encode_payment(p), payment=p)
            for p in stream]
    by_id = {r.payment["event_id"]: r for r in recs}
    conf = base_conf(services, run, tin, scores_t, alerts_t, dlq_t)
    daemon = rfkit.Daemon(tmp_path, conf)
    reader = rfkit.TopicReader(services, scores_t)
    pacer = rfkit.Pacer(rfkit.make_producer(services), recs, rate=2000)
    try:
        daemon.start()
        pacer.start()
        wait_for_scores(reader, daemon, None, timeout=60, min_count=4000)
        sent_at_stop = pacer.sent
        check_stop(daemon, "test B, first run (mid-stream)")
        t_stop1 = time.monotonic() - t_start
        assert sent_at_stop < len(recs), \
            "the producer had finished before SIGTERM: not a mid-stream stop"

        tps = [(tin, p) for p in range(4)]
        committed1 = rfkit.committed_offsets(services, conf["kafka.group.id"], tps)
        scores_end1 = reader.read_to_end()
        n_run1 = len(reader.msgs)

        daemon.start()
        pacer.join(120)
        assert not pacer.is_alive(), "the test producer did not finish"
        assert pacer.error is None, "test producer: " + pacer.error
        rfkit.flush_checked(pacer.producer, recs)
        wait_for_scores(reader, daemon, set(by_id), timeout=120)
        check_stop(daemon, "test B, second run")
        reader.read_to_end()
        committed2 = rfkit.committed_offsets(services, conf["kafka.group.id"], tps)
        ends = rfkit.end_offsets(services, tps)
    except BaseException:
        daemon.kill()
        print(daemon.log_tail(200))
        raise
    finally:
        reader.close()
    print("test B: SIGTERM after %d scores (%d of %d produced) at %.1f s; %.1f s in all"
          % (n_run1, sent_at_stop, len(recs), t_stop1, time.monotonic() - t_start))

    run1, run2 = defaultdict(list), defaultdict(list)
    extra = []
    for m in reader.msgs:
        s = rfkit.decode_confluent(m.value(), rfkit.SCORE_ID, rfkit.SCORE_SCHEMA)
        if s["event_id"] not in by_id:
            extra.append(s["event_id"])
            continue
        (run1 if m.offset() < scores_end1[m.partition()] else run2)[s["event_id"]].append(s)
    assert not extra, "scores for event ids never produced: " + first(extra)
    missing = set(by_id) - set(run1) - set(run2)
    assert not missing, "event ids never scored: " + first(sorted(missing))
    for name, rr in (("first", run1), ("second", run2)):
        d = [e for e, v in rr.items() if len(v) > 1]
        assert not d, "the %s run scored events twice: %s" % (name, first(d))
    wrong_src = [(e, s["source_partition"], s["source_offset"], by_id[e].partition,
                  by_id[e].offset) for rr in (run1, run2) for e, v in rr.items() for s in v
                 if (s["source_partition"], s["source_offset"]) != (by_id[e].partition,
                                                                    by_id[e].offset)]
    assert not wrong_src, "source partition/offset wrong: " + first(wrong_src)

    # The brief's guarantee: nothing delivered in run 1 below the committed offset comes again.
    again = [(e, by_id[e].partition, by_id[e].offset) for e in run2 if e in run1
             and by_id[e].offset < committed1[(tin, by_id[e].partition)]]
    assert not again, ("events committed by the first run were scored again by the second "
                       "(event, partition, offset): " + first(again))
    # A clean SIGTERM (exit 0) drains: every event scored in run 1 is covered by the commit,
    # and the commit covers nothing run 1 did not score.
    for p in range(4):
        offs = sorted(by_id[e].offset for e in run1 if by_id[e].partition == p)
        c = committed1[(tin, p)]
        assert offs == list(range(len(offs))), \
            "run 1 scored partition %d with gaps: %s" % (p, first(sorted(
                set(range(offs[-1] + 1 if offs else 0)) - set(offs))))
        assert c == len(offs), ("partition %d: run 1 scored offsets 0..%d and exited 0, but "
                                "committed %d" % (p, len(offs) - 1, c))
    redelivered = [e for e in run2 if e in run1]
    assert not redelivered, "scored in both runs after a clean stop: " + first(redelivered)
    assert committed2 == ends, "final committed offsets %s != end offsets %s" % (committed2, ends)

    # State carried across the restart through Redis: features and final state exact.
    order = sorted(recs, key=lambda r: (r.partition, r.offset))
    ref_feats, ref_states = rfkit.replay_features([(r.payment, r.topic, r.partition, r.offset)
                                                  for r in order])
    feat_bad = []
    for rr in (run1, run2):
        for e, v in rr.items():
            x = {f["name"]: f["value"] for f in v[0]["features"]}
            for name, want in ref_feats[e].items():
                if name in x and not close(x[name], want):
                    feat_bad.append((e, "run1" if rr is run1 else "run2", name, x[name], want))
    assert not feat_bad, "features differ from riskflow_features.py: " + first(feat_bad, 8)
    r_bad = rfkit.states_differ(services, run, ref_states)
    assert not r_bad, "Redis state differs from the reference: " + first(r_bad, 3)
    rfkit.delete_topics(services, [tin, scores_t, alerts_t, dlq_t])


# ============================================================================ Test D

def test_customer_on_two_input_topics(services, model, daemon_bin, tmp_path):
    """One customer's payments arrive on two input topics (input.topics=A,B:plain), e.g. card
    payments and transfers. Every distinct event must be applied to the customer's state once:
    the replay guard must not mistake B's offsets for already-applied offsets of A."""
    run = rfkit.unique("rf-e2e-d")
    ta, tb = run + ".cards", run + ".transfers"
    scores_t, alerts_t, dlq_t = run + ".scores", run + ".alerts", run + ".dlq"
    rfkit.create_topics(services, {ta: 1, tb: 1, scores_t: 1, alerts_t: 1, dlq_t: 1})
    t0 = rfkit.T_BASE_MS + 7 * 3600 * 1000

    def pay(i, minutes, topic):
        return {"event_id": "d-%d" % i, "customer_id": "CX", "card_token": "tok", "merchant_id":
                "m1", "terminal_id": "t1", "mcc": 5411, "amount_minor": 1000 * (i + 1),
                "currency": "EUR", "channel": "POS", "country": "DE",
                "kind": "PURCHASE" if topic == ta else "TRANSFER_OUT",
                "event_time": t0 + minutes * 60 * 1000}

    first_batch = [pay(i, 10 * i, ta) for i in range(5)]          # A, offsets 0..4
    second_batch = [pay(5 + i, 60 + 7 * i, tb) for i in range(3)]  # B, offsets 0..2, later
    conf = base_conf(services, run, "%s,%s:plain" % (ta, tb), scores_t, alerts_t, dlq_t)
    daemon = rfkit.Daemon(tmp_path, conf)
    reader = rfkit.TopicReader(services, scores_t)
    producer = rfkit.make_producer(services)
    try:
        daemon.start()
        recs_a = [Produced(ta, b"CX", rfkit.encode_payment(p), payment=p) for p in first_batch]
        for r in recs_a:
            rfkit.produce(producer, r)
        rfkit.flush_checked(producer, recs_a)
        wait_for_scores(reader, daemon, {p["event_id"] for p in first_batch}, timeout=60)
        recs_b = [Produced(tb, b"CX", rfkit.encode_payment(p, "plain"), payment=p)
                  for p in second_batch]
        for r in recs_b:
            rfkit.produce(producer, r)
        rfkit.flush_checked(producer, recs_b)
        wait_for_scores(reader, daemon, {p["event_id"] for p in first_batch + second_batch},
                        timeout=60)
        check_stop(daemon, "test D")
    except BaseException:
        daemon.kill()
        print(daemon.log_tail(200))
        raise
    finally:
        reader.close()

    # The reference: every payment applied once, A's then B's (B was produced after A's
    # scores arrived), each from its own (topic, partition) source.
    want, states = rfkit.replay_features([(r.payment, r.topic, r.partition, r.offset)
                                          for r in recs_a + recs_b])
    st = states["CX"]
    assert [r.partition for r in recs_a + recs_b] == [0] * 8
    assert [r.offset for r in recs_a + recs_b] == [0, 1, 2, 3, 4, 0, 1, 2]
    got = {}
    for m in reader.msgs:
        s = rfkit.decode_confluent(m.value(), rfkit.SCORE_ID, rfkit.SCORE_SCHEMA)
        got[s["event_id"]] = {f["name"]: f["value"] for f in s["features"]}
    bad = [(e, n, got[e][n], want[e][n]) for e in want for n in got.get(e, {})
           if not close(got[e][n], want[e][n])]
    assert set(got) == set(want), "scores for %s, want %s" % (sorted(got), sorted(want))
    assert [want[p["event_id"]]["cust_count_24h"] for p in second_batch] == [6.0, 7.0, 8.0]
    assert not bad, (
        "replay guard vs topics: payments of customer CX on %s (offsets 0-2) were not applied "
        "once each after %s's offsets 0-4 (e.g. taken for replays of %s's offsets). "
        "(event, feature, daemon, expected): %s" % (tb, ta, ta, first(bad, 8)))
    raw = services.redis().get(rfkit.state_key(run, "customer", "CX"))
    got_st = rfkit.unpack_state(raw)
    assert got_st == st, "Redis state of CX differs from the reference: %s" % (
        rfkit.state_diff(got_st, st))
    assert got_st.source_tuples() == ((rfkit.rff.topic_id(tb), 0, 2), (rfkit.rff.topic_id(ta), 0, 4))
    rfkit.delete_topics(services, [ta, tb, scores_t, alerts_t, dlq_t])


# ============================================================================ Test E

def test_sigterm_during_rebalance(services, model, daemon_bin, tmp_path):
    """A rolling restart: instance B joins the group while A consumes, and A gets SIGTERM
    while the cooperative rebalance is still running (A has revoked half its partitions and
    is rejoining). A must still drain, commit what it scored and exit 0; B takes over; nothing
    is lost and nothing A committed is scored again."""
    rng = random.Random(SEED + 2)
    run = rfkit.unique("rf-e2e-e")
    tin, scores_t, alerts_t, dlq_t = (run + ".payments", run + ".scores", run + ".alerts",
                                      run + ".dlq")
    rfkit.create_topics(services, {tin: 6, scores_t: 4, alerts_t: 1, dlq_t: 1})
    stream = rfkit.gen_stream(rng, ["C%04d" % i for i in range(300)], 16000, prefix="e")
    recs = [Produced(tin, p["customer_id"].encode(), rfkit.encode_payment(p), payment=p)
            for p in stream]
    by_id = {r.payment["event_id"]: r for r in recs}
    conf = base_conf(services, run, tin, scores_t, alerts_t, dlq_t)
    # A lingers 500 ms before sending its outputs, so events are always in flight when its
    # partitions are revoked: the revocation must wait for them (their offsets committed
    # before the partitions go), or B scores them again. A heartbeats every 100 ms, so it
    # learns of B's join (and gets its revocation) well within the linger: with the default
    # 3 s its consumer could sit out the join with nothing in flight.
    a = rfkit.Daemon(tmp_path, dict(conf, **{"kafka.linger.ms": 500,
                                             "kafka.heartbeat.interval.ms": 100}), name="A")
    # B heartbeats every 5 s: the second round of the cooperative rebalance waits for B's
    # next heartbeat, so A stays "rejoining" for a few seconds and the SIGTERM lands there.
    b = rfkit.Daemon(tmp_path, dict(conf, **{"kafka.heartbeat.interval.ms": 5000}), name="B")
    reader = rfkit.TopicReader(services, scores_t)
    pacer = rfkit.Pacer(rfkit.make_producer(services), recs, rate=2000)
    try:
        a.start()
        pacer.start()
        wait_for_scores(reader, a, None, timeout=60, min_count=2000)
        b.start()
        deadline = time.monotonic() + 30
        while "revoked" not in a.log_text():
            a.assert_alive()
            b.assert_alive()
            assert time.monotonic() < deadline, "A never revoked partitions after B joined\n" \
                + a.log_tail()
            time.sleep(0.02)
        time.sleep(1.0)
        rc_a, secs_a = a.stop(timeout=30)
        tps = [(tin, p) for p in range(6)]
        committed_a = rfkit.committed_offsets(services, conf["kafka.group.id"], tps)
        reader.poll()
        pacer.join(120)
        assert pacer.error is None, "test producer: %s" % pacer.error
        rfkit.flush_checked(pacer.producer, recs)
        wait_for_scores(reader, b, set(by_id), timeout=120)
        check_stop(b, "test E, instance B")
        reader.read_to_end()
        committed = rfkit.committed_offsets(services, conf["kafka.group.id"], tps)
        ends = rfkit.end_offsets(services, tps)
    except BaseException:
        a.kill()
        b.kill()
        print(a.log_tail(100))
        print(b.log_tail(100))
        raise
    finally:
        reader.close()

    scored = defaultdict(list)
    for m in reader.msgs:
        s = rfkit.decode_confluent(m.value(), rfkit.SCORE_ID, rfkit.SCORE_SCHEMA)
        scored[s["event_id"]].append(s)
    assert set(scored) == set(by_id), "events never scored: %s; unknown: %s" % (
        first(sorted(set(by_id) - set(scored))), first(sorted(set(scored) - set(by_id))))
    assert committed == ends, "final committed offsets %s != end offsets %s" % (committed, ends)
    order = sorted(recs, key=lambda r: (r.partition, r.offset))
    ref_feats, ref_states = rfkit.replay_features([(r.payment, r.topic, r.partition, r.offset)
                                                  for r in order])
    feat_bad = [(e, n, x, ref_feats[e][n]) for e, v in scored.items()
                for n, x in ((f["name"], f["value"]) for f in v[0]["features"])
                if not close(x, ref_feats[e][n])]
    assert not feat_bad, "features differ from riskflow_features.py: " + first(feat_bad, 8)
    red = services.redis()
    r_bad = [(c, rfkit.state_diff(rfkit.unpack_state(
        red.get(rfkit.state_key(run, "customer", c))), st)) for c, st in ref_states.items()
        if rfkit.unpack_state(red.get(rfkit.state_key(run, "customer", c))) != st]
    assert not r_bad, "Redis state differs from the reference: " + first(r_bad, 3)

    commit_errors = [l for l in a.log_text().splitlines() if "commit" in l.lower()
                     and ("error" in l or "warn" in l)]
    assert rc_a == 0, (
        "DAEMON BUG: instance A exited %s (in %.1f s) on SIGTERM during a cooperative "
        "rebalance, want 0. Its final commit failed, so everything it scored since its last "
        "successful auto-commit is redelivered to B. Committed after A: %s. A's log:\n%s"
        % (rc_a, secs_a, committed_a, "\n".join(commit_errors)))
    assert "revocation waits for" in a.log_text(), (
        "test E never had events in flight at the revocation, so it did not test the wait:\n"
        + a.log_tail(40))
    again = sorted(e for e, v in scored.items() if len(v) > 1)
    assert not again, ("after A's clean stop, %d events were scored twice (A's work was not "
                       "committed): %s" % (len(again), first(again)))
    rfkit.delete_topics(services, [tin, scores_t, alerts_t, dlq_t])
