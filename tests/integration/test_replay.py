"""Replayed features equal the online ones for the same events (issue 7 item 3).

A stream of payments and fraud labels (late, repeated, withdrawn, for unknown and future
payments, with empty keys and events 30 days late: tests/unit/replay_matches_reference.py's
generator) goes, in event-time order, through ONE partition of a real topic to riskflowd
(jobs=fraud, the labels feature file tests/fixtures/features_labels.conf, a logistic model
that reads every feature available for payments, every payment scored); the same records go
into an Avro container file for `riskflowd --replay` with the same config. Checks:
  - every payment the daemon scored has a replay row, and the other way round;
  - every feature in each FraudScore (its name and value) equals the row's, bit for bit;
  - the records the daemon dead-lettered (bad_key, too_late) are the ones the replay skipped;
  - `--replay-topic` over the topic's partition writes the same rows as the file replay.
"""

import csv
import json
import os
import random
import subprocess
import sys

import fastavro

import rfkit
from rfkit import Produced

sys.path.insert(0, os.path.join(rfkit.ROOT, "tests", "unit"))
import replay_matches_reference as gen  # noqa: E402

FEATURES = os.path.join(rfkit.ROOT, "tests", "fixtures", "features_labels.conf")
LABEL_ID = 9
LABEL_SCHEMA = rfkit._load_schema("fraud_label.avsc")
LATENESS_S = 7 * 86400


def all_features_model(path):
    """A riskflow.logistic.v1 model reading every feature available for payments."""
    decl = rfkit.rff.load(FEATURES, rfkit.SCHEMAS_DIR)
    names = decl.available("riskflow.Payment")
    doc = {"format": "riskflow.logistic.v1", "name": "fraud", "version": "replay-test",
           "features": names, "scaler": {"mean": [0.0] * len(names), "scale": [1.0] * len(names)},
           "coefficients": [0.0] * len(names), "intercept": 0.0, "threshold": 1.0}
    with open(path, "w") as f:
        json.dump(doc, f)
    return names


def test_replay_equals_online(services, daemon_bin, tmp_path):
    rng = random.Random(int(os.environ.get("RF_E2E_SEED", "20261202")))
    recs = gen.stream(rng, n_pay=3000)
    run = rfkit.unique("rf-replay")
    feed, scores_t, alerts_t, dlq_t = run + ".feed", run + ".scores", run + ".alerts", run + ".dlq"
    rfkit.create_topics(services, {feed: 1, scores_t: 1, alerts_t: 1, dlq_t: 1})
    model_path = str(tmp_path / "all_features.json")
    names = all_features_model(model_path)
    produced = []
    for rtype, rec, _ in recs:
        if rtype == "riskflow.Payment":
            value = rfkit.encode_payment(rec)
        else:
            value = rfkit.confluent(LABEL_ID, rfkit.avro_body(LABEL_SCHEMA, rec))
        produced.append(Produced(feed, rec["customer_id"].encode(), value, expect=(rtype, rec)))
    conf = {
        "kafka.bootstrap.servers": services.bootstrap,
        "kafka.group.id": run + ".group",
        "input.topics": feed,
        "jobs": "fraud",
        "features.path": FEATURES,
        "schemas.dir": rfkit.SCHEMAS_DIR,
        "fraud.model.path": model_path,
        "fraud.score.where": "all",
        "fraud.scores.topic": scores_t,
        "fraud.alerts.topic": alerts_t,
        "output.dlq.topic": dlq_t,
        "input.max.lateness.s": LATENESS_S,
        "redis.host": services.redis_host,
        "redis.port": services.redis_port,
        "redis.key.prefix": run,
        "commit.interval.ms": 200,
    }
    producer = rfkit.make_producer(services)
    rfkit.produce_checked(producer, produced)
    daemon = rfkit.Daemon(tmp_path, conf).start()
    scores_r = rfkit.TopicReader(services, scores_t)
    dlq_r = rfkit.TopicReader(services, dlq_t)
    try:
        rfkit.wait_committed_to_end(services, daemon, run + ".group", feed, timeout=180)
        rc, _ = daemon.stop()
        assert rc == 0, daemon.log_tail()
        scores_r.read_to_end()
        dlq_r.read_to_end()
    except BaseException:
        daemon.kill()
        print(daemon.log_tail(200))
        raise

    # The same records, in the same order, replayed from a file.
    avro_path = str(tmp_path / "events.avro")
    union = [gen.schema("payment.avsc"), gen.schema("fraud_label.avsc")]
    with open(avro_path, "wb") as f:
        fastavro.writer(f, fastavro.parse_schema(union), [(t, r) for t, r, _ in recs])
    rows_path = str(tmp_path / "rows.csv")
    res = subprocess.run([daemon_bin, "-c", daemon.conf_path, "--replay", avro_path, "--out",
                          rows_path], capture_output=True, text=True, cwd=rfkit.ROOT)
    assert res.returncode == 0, res.stderr
    with open(rows_path) as f:
        rd = csv.reader(f)
        header = next(rd)
        rows = {r[0]: r for r in rd}
    col = {n: header.index(n) for n in names}

    online = {}
    for m in scores_r.msgs:
        s = rfkit.decode_confluent(m.value(), rfkit.SCORE_ID, rfkit.SCORE_SCHEMA)
        online[s["event_id"]] = s
    assert len(online) > 2500, "only %d scores" % len(online)
    assert set(online) == set(rows), "scored online but no row: %s; a row but no score: %s" % (
        sorted(set(online) - set(rows))[:5], sorted(set(rows) - set(online))[:5])
    bad = []
    for eid, s in online.items():
        feats = {f["name"]: f["value"] for f in s["features"]}
        assert list(feats) == names
        for n in names:
            if float(rows[eid][col[n]]) != feats[n]:
                bad.append((eid, n, feats[n], rows[eid][col[n]]))
    assert not bad, "online and replayed features differ (%d): %s" % (len(bad), bad[:5])
    # labels reached the terminal features online too: some rows have fraud counts
    fr = [float(r[col["term_nb_fraud_30d"]]) for r in rows.values()]
    assert sum(1 for x in fr if x > 0) > 100, "the labels changed no terminal feature"
    # dead letters: the replay's skipped records
    reasons = {}
    for m in dlq_r.msgs:
        h = rfkit.headers_dict(m)
        reasons[h.get("rf.reason", "?")] = reasons.get(h.get("rf.reason", "?"), 0) + 1
    st = res.stderr
    assert "%d bad_key" % reasons.get("bad_key", 0) in st, (reasons, st)
    assert "%d too_late" % reasons.get("too_late", 0) in st, (reasons, st)
    assert reasons.get("bad_key", 0) > 0 and reasons.get("too_late", 0) > 0, reasons

    # The same from the topic itself: offsets [0, end) of its one partition.
    topic_rows = str(tmp_path / "topic_rows.csv")
    res2 = subprocess.run([daemon_bin, "-c", daemon.conf_path, "--replay-topic", feed + ":0:0:-1",
                           "--out", topic_rows], capture_output=True, text=True, cwd=rfkit.ROOT)
    assert res2.returncode == 0, res2.stderr
    with open(rows_path) as a, open(topic_rows) as b:
        assert a.read() == b.read(), "the topic's replay differs from the file's"
