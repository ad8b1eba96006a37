"""Faults on the real broker and Redis: what a redelivered event gets back (issue 6).

Every output riskflowd writes is journaled in Redis in the same transaction as the state its
event produced, and produced only after that transaction (docs/ENGINE.md §4). So an event the
broker delivers again either finds its entities already holding it (a replay: its first
outputs go out again, byte for byte, from the journal) or finds them without it (its outputs
were never produced, and it is scored now for the first time).

The tests read every output back with independent clients and check:
  - test_replay_after_kill: everything scored, then SIGKILL before any commit, so the whole
    stream is redelivered: every score and alert comes exactly twice, byte-identical (the
    scored_at stamp included); the state is not applied twice (equal to the reference); a
    clean stop leaves no journal behind (pruned to the committed offsets).
  - test_kills_mid_stream: a paced stream with riskflowd SIGKILLed and restarted five times
    while it runs: every payment scored, every duplicate byte-identical to its first, scores
    and features equal to the independent Python reference, the final Redis values equal to a
    fault-free run's, the dead letters exactly the poison.
RF_E2E_SEED=<int> picks another stream.
"""

import os
import random
import re
import subprocess
import time

import pytest

import rfkit
from rfkit import Produced

SEED = int(os.environ.get("RF_E2E_SEED", "20261202"))


def first(items, n=5):
    items = list(items)
    return "%d: %s%s" % (len(items), items[:n], " ..." if len(items) > n else "")


def conf_for(svc, run, topics, commit_ms):
    return {
        "kafka.bootstrap.servers": svc.bootstrap,
        "kafka.group.id": run + ".group",
        "input.topics": topics["in"],
        "fraud.scores.topic": topics["scores"],
        "fraud.alerts.topic": topics["alerts"],
        "output.dlq.topic": topics["dlq"],
        "redis.host": svc.redis_host,
        "redis.port": svc.redis_port,
        "redis.key.prefix": run,
        "fraud.alert.threshold": 0.5,
        "fraud.score.where": "all",
        "schemas.dir": rfkit.SCHEMAS_DIR,
        "fraud.model.path": rfkit.MODEL_PATH,
        "features.path": rfkit.FEATURES_PATH,
        "commit.interval.ms": commit_ms,
        "stats.interval.ms": 1000,
    }


def make_world(svc, name, customers, n, n_poison, seed, partitions=4):
    """Topics for one test and a stream of n payments over customers C0000.. with n_poison
    poison messages mixed in: (run, topics, recs, poison)."""
    rng = random.Random(seed)
    run = rfkit.unique(name)
    topics = {"in": run + ".payments", "scores": run + ".scores", "alerts": run + ".alerts",
              "dlq": run + ".dlq"}
    rfkit.create_topics(svc, {topics["in"]: partitions, topics["scores"]: 3, topics["alerts"]: 1,
                              topics["dlq"]: 1})
    cust = ["C%04d" % i for i in range(customers)]
    pays = rfkit.gen_stream(rng, cust, n, run, huge_rate=0.05)
    recs = [Produced(topics["in"], p["customer_id"].encode(), rfkit.encode_payment(p), payment=p)
            for p in pays]
    poison = []
    for i in range(n_poison):
        c = rng.choice(cust).encode()
        kind = i % 3
        if kind == 0:
            poison.append((c, b"\x00\x00\x00\x00\x01\x02", "truncated"))
        elif kind == 1:
            poison.append((c, b"\x07garbage-" + str(i).encode(), "bad_magic"))
        else:
            poison.append((c, b"\x00\x00\x00\x7f\x7f" + b"x" * 20, "unknown_schema"))
    for key, value, reason in poison:
        recs.insert(rng.randrange(len(recs)), Produced(topics["in"], key, value,
                                                       expect=("poison", reason)))
    return run, topics, recs, poison


def run_once(svc, run, topics, recs, conf, tmp_path):
    """Produce recs, run riskflowd until the group has committed them all, SIGTERM it, and
    read every output back: (daemon, outputs)."""
    producer = rfkit.make_producer(svc)
    daemon = rfkit.Daemon(tmp_path, conf)
    try:
        rfkit.produce_checked(producer, recs)
        daemon.start()
        rfkit.wait_committed_to_end(svc, daemon, run + ".group", topics["in"])
        rfkit.stop_clean(daemon)
        return daemon, read_all(svc, topics)
    except BaseException:
        daemon.kill()
        print(daemon.log_tail(100))
        raise


def read_all(svc, topics, timeout=30, isolation="read_committed"):
    out = {}
    for k in ("scores", "alerts", "dlq"):
        r = rfkit.TopicReader(svc, topics[k], isolation)
        try:
            r.read_to_end(timeout)
        finally:
            r.close()
        out[k] = r.msgs
    return out


def by_event(msgs, schema_id, schema):
    """{event_id: [raw value, ...]} and {event_id: first decoded record}."""
    raw, dec = {}, {}
    for m in msgs:
        rec = rfkit.decode_confluent(m.value(), schema_id, schema)
        raw.setdefault(rec["event_id"], []).append((m.key(), m.value()))
        dec.setdefault(rec["event_id"], rec)
    return raw, dec


def check_against_reference(svc, run, recs, scores, model, red=None):
    """Scores and features equal the reference's; Redis values equal a fault-free run's (read
    from red, default the services' Redis)."""
    order = sorted((r for r in recs if r.payment), key=lambda r: (r.partition, r.offset))
    feats, states = rfkit.replay_features([(r.payment, r.topic, r.partition, r.offset)
                                           for r in order])
    feat_bad, score_bad = rfkit.compare_scores(scores, feats, model)
    assert not feat_bad, "features differ from the reference: " + first(feat_bad, 3)
    assert not score_bad, "scores differ from the reference: " + first(score_bad, 3)
    bad = rfkit.states_differ(svc, run, states, red=red)
    assert not bad, "Redis values differ from a fault-free run's: " + first(bad, 3)


def check_at_least_once(svc, run, recs, poison, out, model, red=None):
    """The fault runs' verdict on what independent readers got back: every payment scored,
    every duplicate score and alert identical to its first copy, features and scores equal to
    the reference, the final Redis values equal to a fault-free run's, the dead letters
    exactly the poison. Returns (payments, duplicate scores)."""
    raw, dec = by_event(out["scores"], rfkit.SCORE_ID, rfkit.SCORE_SCHEMA)
    ids = {r.payment["event_id"] for r in recs if r.payment}
    missing = ids - set(raw)
    assert not missing, "payments without a score: " + first(sorted(missing))
    differ = [e for e, v in raw.items() if any(x != v[0] for x in v[1:])]
    assert not differ, "duplicates that differ from the first output: " + first(differ)
    araw, _ = by_event(out["alerts"], rfkit.ALERT_ID, rfkit.ALERT_SCHEMA)
    bad = [e for e, v in araw.items() if any(x != v[0] for x in v[1:])]
    assert not bad, "duplicate alerts that differ: " + first(bad)
    check_against_reference(svc, run, recs, dec, model, red)
    rfkit.check_poison(out["dlq"], poison)
    return len(ids), sum(len(v) - 1 for v in raw.values())


def check_exactly_once(svc, run, recs, poison, out, model):
    """One score per payment, at most one alert each, one dead letter per poison message, all
    as the reference has them. Returns the number of payments."""
    raw, dec = by_event(out["scores"], rfkit.SCORE_ID, rfkit.SCORE_SCHEMA)
    ids = {r.payment["event_id"] for r in recs if r.payment}
    missing = ids - set(raw)
    assert not missing, "payments without a committed score: " + first(sorted(missing))
    twice = [(e, len(v)) for e, v in raw.items() if len(v) != 1]
    assert not twice, "payments with more than one committed score: " + first(twice)
    araw, _ = by_event(out["alerts"], rfkit.ALERT_ID, rfkit.ALERT_SCHEMA)
    assert len(araw) > 5, "only %d alerts: not a test" % len(araw)
    twice = [(e, len(v)) for e, v in araw.items() if len(v) != 1]
    assert not twice, "alerts committed more than once: " + first(twice)
    check_against_reference(svc, run, recs, dec, model)
    rfkit.check_poison(out["dlq"], poison)
    assert len(out["dlq"]) == len(poison), "%d committed dead letters for %d poison messages" % (
        len(out["dlq"]), len(poison))
    return len(ids)


def stats_counter(daemon, name):
    """The last value of counter `name` in each run's STATS lines, summed over runs."""
    total = 0
    for run in daemon.log_text().split("===== run ")[1:]:
        vals = re.findall(r"\b%s=(\d+)" % re.escape(name), run)
        if vals:
            total += int(vals[-1])
    return total


def test_replay_after_kill(services, model, tmp_path):
    run, topics, recs, poison = make_world(services, "rf-replay", 60, 1500, 6, SEED)
    producer = rfkit.make_producer(services)
    rfkit.produce_checked(producer, recs)
    n_pay = sum(1 for r in recs if r.payment)
    # Run 1 never commits: everything it scored comes back.
    d1 = rfkit.Daemon(tmp_path, conf_for(services, run, topics, 3600000), name="run1")
    d2 = rfkit.Daemon(tmp_path, conf_for(services, run, topics, 200), name="run2")
    scores_r = rfkit.TopicReader(services, topics["scores"])
    try:
        d1.start()
        rfkit.wait_outputs(scores_r, d1, n_pay, "run 1")
        d1.kill()
        assert not rfkit.committed_offsets(services, run + ".group", [
            (topics["in"], p) for p in range(4)]).get((topics["in"], 0), -1) > 0
        d2.start()
        rfkit.wait_committed_to_end(services, d2, run + ".group", topics["in"])
        rfkit.stop_clean(d2)
        out = read_all(services, topics)
    except BaseException:
        d1.kill()
        d2.kill()
        print(d1.log_tail(60), d2.log_tail(100))
        raise
    finally:
        scores_r.close()

    raw, dec = by_event(out["scores"], rfkit.SCORE_ID, rfkit.SCORE_SCHEMA)
    ids = {r.payment["event_id"] for r in recs if r.payment}
    assert set(raw) == ids, "scores: %d events of %d" % (len(set(raw) & ids), len(ids))
    not_twice = [e for e, v in raw.items() if len(v) != 2]
    assert not not_twice, "each payment scored exactly twice (first + replay): " + first(
        [(e, len(raw[e])) for e in not_twice])
    differ = [e for e, v in raw.items() if v[0] != v[1]]
    assert not differ, "replayed scores that differ from the first, byte for byte: " + first(
        differ)
    araw, _ = by_event(out["alerts"], rfkit.ALERT_ID, rfkit.ALERT_SCHEMA)
    assert len(araw) > 10, "only %d alerts: not a test" % len(araw)
    bad = [e for e, v in araw.items() if len(v) != 2 or v[0] != v[1]]
    assert not bad, "alerts not replayed identically: " + first(bad)
    assert stats_counter(d2, "replays") == n_pay, "run 2 replays: %d, want %d" % (
        stats_counter(d2, "replays"), n_pay)
    check_against_reference(services, run, recs, dec, model)
    rfkit.check_poison(out["dlq"], poison)
    red = services.redis()
    left = sorted(k.decode() for k in red.scan_iter(match=run + ":log:*", count=1000))
    assert not left, "journal keys left after a clean stop: " + first(left)
    print("replay after kill: %d payments, %d alerts, every output twice and identical"
          % (n_pay, len(araw)))
    rfkit.delete_topics(services, list(topics.values()))


def kill_while_streaming(svc, daemon, producer, recs, pacer, run, topics, kills, pause):
    """Start daemon and pacer; SIGKILL and restart daemon `kills` times, pause() seconds
    apart, while the pacer streams; then let it finish, stop it cleanly and read everything
    back (read_committed)."""
    try:
        daemon.start()
        pacer.start()
        done = 0
        while pacer.is_alive() or done < kills:
            time.sleep(pause())
            if done < kills:
                daemon.assert_alive()
                daemon.kill()
                done += 1
                daemon.start()
        pacer.join()
        assert pacer.error is None, pacer.error
        rfkit.flush_checked(producer, recs)
        rfkit.wait_committed_to_end(svc, daemon, run + ".group", topics["in"])
        rfkit.stop_clean(daemon)
        return read_all(svc, topics)
    except BaseException:
        daemon.kill()
        print(daemon.log_tail(150))
        raise


def test_kills_mid_stream(services, model, tmp_path):
    run, topics, recs, poison = make_world(services, "rf-kills", 150, 6000, 9, SEED + 1)
    producer = rfkit.make_producer(services)
    daemon = rfkit.Daemon(tmp_path, conf_for(services, run, topics, 300))
    pacer = rfkit.Pacer(producer, recs, 1000)
    rng = random.Random(SEED)
    kills = 5
    out = kill_while_streaming(services, daemon, producer, recs, pacer, run, topics, kills,
                               lambda: rng.uniform(0.5, 1.2))
    n, dups = check_at_least_once(services, run, recs, poison, out, model)
    print("kills mid-stream: %d payments, %d SIGKILLs, %d duplicate scores (all identical), "
          "%d replays" % (n, kills, dups, stats_counter(daemon, "replays")))
    rfkit.delete_topics(services, list(topics.values()))


def test_hostile_times_and_a_small_message_limit(services, model, tmp_path):
    """Regressions: an event from the far future (it used to move a customer's windows years
    ahead for good), times before 1970 and INT64_MIN, an event older than its customer's
    latest by more than input.max.lateness.s (7 days here): each dead-lettered with its own
    reason, never applied. And kafka.message.max.bytes=20000 with a 30000-byte poison message: the dead
    letter is cut to fit (it used to be refused as too large and stop riskflowd for good)."""
    run, topics, recs, _ = make_world(services, "rf-hostile", 20, 600, 0, SEED + 2, 2)
    rng = random.Random(SEED + 2)
    pays = [r.payment for r in recs]
    base = dict(pays[0], amount_minor=100000, kind="PURCHASE")
    latest = {}
    for p in pays:
        latest[p["customer_id"]] = max(latest.get(p["customer_id"], 0), p["event_time"])

    def hostile(cid, t, tag):
        p = dict(base, customer_id=cid, event_id="%s-%s" % (run, tag), event_time=t)
        return Produced(topics["in"], cid.encode(), rfkit.encode_payment(p), payment=None,
                        expect=("poison", p))

    poison = [
        (hostile("C0000", 9999999999999, "future"), "future"),
        (hostile("C0001", -1, "before-1970"), "bad_time"),
        (hostile("C0002", -2 ** 63, "int64-min"), "bad_time"),
        (hostile("C0003", latest["C0003"] - 8 * 86400 * 1000, "too-late"), "too_late"),
        (Produced(topics["in"], b"C0004", b"\x07" + bytes(rng.randrange(256) for _ in range(30000)),
                  expect=("poison", None)), "bad_magic"),
    ]
    # the future one early (the rest of C000's payments follow it), the too-late one after
    # all of C003's payments, the others anywhere
    recs.insert(len(recs) // 10, poison[0][0])
    recs.append(poison[3][0])
    for r, _reason in (poison[1], poison[2], poison[4]):
        recs.insert(rng.randrange(len(recs)), r)
    conf = conf_for(services, run, topics, 200)
    conf["kafka.message.max.bytes"] = 20000
    conf["input.max.lateness.s"] = 7 * 86400
    _daemon, out = run_once(services, run, topics, recs, conf, tmp_path)
    rfkit.check_poison(out["dlq"], [(r.key, r.value, reason) for r, reason in poison])
    big = [m for m in out["dlq"] if rfkit.headers_dict(m).get("rf.reason") == "bad_magic"]
    assert len(big) == 1, big
    h = rfkit.headers_dict(big[0])
    assert h.get("rf.truncated") == "true" and h.get("rf.original.size") == "30001", h
    assert len(big[0].value()) == 20000 - 4096 - 2048, len(big[0].value())
    raw, dec = by_event(out["scores"], rfkit.SCORE_ID, rfkit.SCORE_SCHEMA)
    ids = {p["event_id"] for p in pays}
    assert set(raw) == ids, "scores: %d of %d payments, %d others" % (
        len(set(raw) & ids), len(ids), len(set(raw) - ids))
    # C000's payments after the future event scored as if it never happened
    check_against_reference(services, run, recs, dec, model)
    print("hostile times: %d payments scored, dead letters %s" % (
        len(ids), sorted(reason for _r, reason in poison)))
    rfkit.delete_topics(services, list(topics.values()))


def test_printing_to_a_stuck_stdout_does_not_stall(services, model, tmp_path):
    """outputs.print=stdout into a pipe nobody reads: it fills after 64 KiB and every write
    to it blocks. Printing is off the loop, so scoring goes on at full speed, printed lines
    beyond the ring are dropped (and counted), and SIGTERM still exits 0 in seconds."""
    run, topics, recs, _poison = make_world(services, "rf-print", 100, 4000, 0, SEED + 3)
    conf = conf_for(services, run, topics, 200)
    conf["outputs.print"] = "stdout"
    conf["fraud.alert.threshold"] = 0.0  # every payment an alert: a line each
    producer = rfkit.make_producer(services)
    rfkit.produce_checked(producer, recs)
    daemon = rfkit.Daemon(tmp_path, conf, stdout_unread=True)
    try:
        t0 = time.monotonic()
        daemon.start()
        rfkit.wait_committed_to_end(services, daemon, run + ".group", topics["in"], timeout=60)
        took = time.monotonic() - t0
        rc, stop_s = daemon.stop(timeout=30)
        assert rc == 0, "exit %s after SIGTERM\n%s" % (rc, daemon.log_tail())
        assert stop_s < 15, "SIGTERM took %.1f s with stdout stuck" % stop_s
        out = read_all(services, topics)
    except BaseException:
        daemon.kill()
        print(daemon.log_tail(60))
        raise
    raw, _ = by_event(out["scores"], rfkit.SCORE_ID, rfkit.SCORE_SCHEMA)
    assert len(raw) == 4000, len(raw)
    assert "printed outputs dropped" in daemon.log_text(), daemon.log_tail()
    print("stuck stdout: 4000 payments, 4000 alerts printed or dropped, done in %.1f s, "
          "stopped in %.1f s" % (took, stop_s))
    rfkit.delete_topics(services, list(topics.values()))


def test_foreign_values_are_set_aside(services, model, tmp_path):
    """Regression: a key of another Redis type (a hash) at a customer's key read as a new
    customer and was replaced; a value of another layout was counted and replaced. Now (the
    default store.on.foreign=stop) both customers' events are dead-lettered (reason `state`),
    logged, and their keys left exactly as they were; everyone else is scored as usual."""
    run, topics, recs, _ = make_world(services, "rf-foreign", 12, 400, 0, SEED + 4, 2)
    red = services.redis()
    k_hash = rfkit.state_key(run, "customer", "C0001")
    k_junk = rfkit.state_key(run, "customer", "C0002")
    red.hset(k_hash, "owner", "another application")
    red.set(k_junk, b"RFE1" + b"\x00" * 60)
    daemon, out = run_once(services, run, topics, recs, conf_for(services, run, topics, 200),
                           tmp_path)
    set_aside = [r for r in recs if r.payment["customer_id"] in ("C0001", "C0002")]
    assert len(set_aside) > 20, "not a test: %d events of the two customers" % len(set_aside)
    reasons = {}
    for m in out["dlq"]:
        h = rfkit.headers_dict(m)
        reasons[(int(h["rf.source.partition"]), int(h["rf.source.offset"]))] = h["rf.reason"]
    want = {(r.partition, r.offset): "state" for r in set_aside}
    assert reasons == want, "DLQ: %d records, want %d with reason state" % (len(reasons),
                                                                           len(want))
    assert red.type(k_hash) == b"hash" and red.hget(k_hash, "owner") == b"another application"
    assert red.get(k_junk) == b"RFE1" + b"\x00" * 60
    raw, dec = by_event(out["scores"], rfkit.SCORE_ID, rfkit.SCORE_SCHEMA)
    ids = {r.payment["event_id"] for r in recs if r not in set_aside}
    assert set(raw) == ids
    check_against_reference(services, run, [r for r in recs if r not in set_aside], dec, model)
    log = daemon.log_text()
    assert k_hash in log and k_junk in log and "store.on.foreign=stop" in log
    rfkit.delete_topics(services, list(topics.values()))


def test_redis_that_lost_its_data_is_noticed(services, model, tmp_path):
    """Every commit carries the Redis epoch (the random id riskflowd keeps in <prefix>:epoch).
    Redis losing its data (here: every key of the run deleted, as a restart without
    persistence would) is noticed at start, before anything is scored (exit 69, both epochs
    named), and while running (exit 1); redis.on.data.loss=continue goes on with what Redis
    holds now."""
    run, topics, recs, _ = make_world(services, "rf-epoch", 20, 900, 0, SEED + 5, 2)
    first_part, second, third = recs[:300], recs[300:600], recs[600:]
    red = services.redis()
    conf = conf_for(services, run, topics, 200)
    for sub in ("1", "2", "3", "4"):
        (tmp_path / sub).mkdir()
    d1, _out = run_once(services, run, topics, first_part, conf, tmp_path / "1")
    epoch = red.get(run + ":epoch")
    assert epoch and len(epoch) == 32, epoch
    assert "Redis epoch %s (new)" % epoch.decode() in d1.log_text()

    def lose_everything():
        for k in red.scan_iter(match=run + ":*", count=1000):
            red.delete(k)

    lose_everything()
    producer = rfkit.make_producer(services)
    rfkit.produce_checked(producer, second)
    d2 = rfkit.Daemon(tmp_path / "2", conf)
    d2.start()
    try:
        rc = d2.proc.wait(timeout=60)
    except Exception:
        d2.kill()
        raise
    log = d2.log_text()
    assert rc == 69, "exit %s\n%s" % (rc, d2.log_tail())
    assert "Redis lost its data" in log and epoch.decode() in log, d2.log_tail()
    scores = rfkit.TopicReader(services, topics["scores"])
    try:
        scores.read_to_end()
        assert len(scores.msgs) == 300, "scored after the loss: %d" % (len(scores.msgs) - 300)
    finally:
        scores.close()

    # The operator accepts the loss: continue, with what Redis holds now (nothing).
    conf_c = dict(conf, **{"redis.on.data.loss": "continue"})
    d3 = rfkit.Daemon(tmp_path / "3", conf_c)
    d3.start()
    try:
        rfkit.wait_committed_to_end(services, d3, run + ".group", topics["in"])
        assert "redis.on.data.loss=continue" in d3.log_text()
        # ... and while it runs, Redis loses its data again: noticed within a commit tick
        rfkit.produce_checked(producer, third)
        assert d3.log_text().count("adopted") == 1, d3.log_tail()
        lose_everything()
        deadline = time.monotonic() + 20
        while d3.log_text().count("adopted") < 2:
            d3.assert_alive()
            assert time.monotonic() < deadline, d3.log_tail()
            time.sleep(0.2)
        rfkit.wait_committed_to_end(services, d3, run + ".group", topics["in"])
        rfkit.stop_clean(d3)
    except BaseException:
        d3.kill()
        print(d3.log_tail(80))
        raise

    # With the default (stop), a loss while running stops riskflowd: exit 1.
    d4 = rfkit.Daemon(tmp_path / "4", conf)
    d4.start()
    try:
        deadline = time.monotonic() + 30
        while "Redis epoch" not in d4.log_text():
            d4.assert_alive()
            assert time.monotonic() < deadline, d4.log_tail()
            time.sleep(0.2)
        red.delete(run + ":epoch")
        rc = d4.proc.wait(timeout=30)
    except BaseException:
        d4.kill()
        print(d4.log_tail(80))
        raise
    assert rc == 1, "exit %s\n%s" % (rc, d4.log_tail())
    assert "its epoch marker is gone" in d4.log_text(), d4.log_tail()
    rfkit.delete_topics(services, list(topics.values()))


def services_restart(what):
    """kill -9 the test broker or Redis and start it again on its data (tools/services.sh)."""
    p = subprocess.run(["bash", os.path.join(rfkit.ROOT, "tools", "services.sh"), "restart", what],
                       capture_output=True, text=True, timeout=180)
    assert p.returncode == 0, "services.sh restart %s: %s%s" % (what, p.stdout, p.stderr)


@pytest.mark.parametrize("guarantee", ["at-least-once", "exactly-once"])
def test_every_fault_in_one_stream(services, model, tmp_path, guarantee):
    """A paced stream with poison, and while it runs: riskflowd SIGKILLed and restarted, Redis
    killed -9 and restarted from its AOF, the broker killed -9 and restarted on its log dirs,
    a second instance joining the group and leaving it (SIGTERM) again. Read back by
    independent clients: every payment scored, every duplicate identical to its first copy,
    features and scores equal to the reference, the final Redis values equal to a fault-free
    run's, the dead letters exactly the poison."""
    eos = guarantee == "exactly-once"
    run, topics, recs, poison = make_world(services, "rf-allfaults", 200, 9000, 9, SEED + 6)
    conf = conf_for(services, run, topics, 300)
    conf["kafka.session.timeout.ms"] = 6000
    conf["kafka.heartbeat.interval.ms"] = 500
    conf["processing.guarantee"] = guarantee
    producer = rfkit.make_producer(services)
    a = rfkit.Daemon(tmp_path, dict(conf, **{"kafka.transactional.id": run + ".a"}) if eos
                     else conf, name="a")
    b = rfkit.Daemon(tmp_path, dict(conf, **{"kafka.transactional.id": run + ".b"}) if eos
                     else conf, name="b")
    pacer = rfkit.Pacer(producer, recs, 600)
    steps = []
    try:
        a.start()
        pacer.start()
        time.sleep(2)
        a.kill()
        a.start()
        steps.append("SIGKILL a")
        time.sleep(2)
        services_restart("redis")
        steps.append("Redis kill -9 + restart")
        time.sleep(2)
        b.start()
        steps.append("b joins")
        time.sleep(3)
        services_restart("kafka")
        steps.append("broker kill -9 + restart")
        time.sleep(3)
        rc, _ = b.stop(timeout=60)
        assert rc == 0, "b exited %s\n%s" % (rc, b.log_tail())
        steps.append("b leaves")
        a.kill()
        a.start()
        steps.append("SIGKILL a")
        pacer.join()
        assert pacer.error is None, pacer.error
        rfkit.flush_checked(producer, recs)
        rfkit.wait_committed_to_end(services, a, run + ".group", topics["in"], timeout=180)
        rfkit.stop_clean(a)
        out = read_all(services, topics)
    except BaseException:
        a.kill()
        b.kill()
        print("steps:", steps)
        print(a.log_tail(120), b.log_tail(60))
        raise
    if eos:
        n = check_exactly_once(services, run, recs, poison, out, model)
        print("every fault, exactly-once: %d payments, one committed score each; %s; %d "
              "transactions aborted" % (n, ", ".join(steps), stats_counter(a, "txn_aborts") +
                                        stats_counter(b, "txn_aborts")))
    else:
        n, dups = check_at_least_once(services, run, recs, poison, out, model)
        print("every fault: %d payments; %s; %d duplicate scores, all identical" % (
            n, ", ".join(steps), dups))
    rfkit.delete_topics(services, list(topics.values()))
