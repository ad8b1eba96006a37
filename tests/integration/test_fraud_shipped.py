"""The shipped fraud configuration on the real broker and Redis (issue 7 item 5): the default
fraud.model.path (the XGBoost manifest in deploy/models) over deploy/features.conf, with fraud
labels beside the payments.

A stream of payments and labels (late, repeated, withdrawn, for unknown and future payments,
with empty keys: tests/unit/replay_matches_reference.py's generator) goes through one
partition to riskflowd with jobs=fraud and no fraud.model.path set. Checks:
  - riskflowd serves the manifest's model (its version on every score);
  - every payment fraud.score.where admits has one score, nothing else does, and labels are
    applied and answered by nothing (no score, no dead letter unless refused);
  - every feature of every score equals the Python reference fed the same records in offset
    order, terminal features included (labels reach them);
  - every score equals the XGBoost file walked here in Python (float32 splits, as xgboost);
  - the alerts are exactly the scores at or above the manifest's threshold, each with three
    reasons at most, positive, in decreasing contribution, each a model feature with the value
    the score saw.
"""

import json
import math
import os
import random
import struct
import sys

import rfkit
from rfkit import Produced

sys.path.insert(0, os.path.join(rfkit.ROOT, "tests", "unit"))
import replay_matches_reference as gen  # noqa: E402

MANIFEST = os.path.join(rfkit.ROOT, "deploy", "models", "fraud_xgb.manifest.json")
FEATURES = os.path.join(rfkit.ROOT, "deploy", "features.conf")
LABEL_ID = 9
LABEL_SCHEMA = rfkit._load_schema("fraud_label.avsc")
ALERT_ID = 3
ALERT_SCHEMA = rfkit._load_schema("fraud_alert.avsc")
LATENESS_S = 7 * 86400


def f32(x):
    return struct.unpack("f", struct.pack("f", x))[0]


class XgbModel:
    """An XGBoost JSON model (binary:logistic, numerical splits) walked node by node."""

    def __init__(self, manifest):
        with open(manifest) as f:
            man = json.load(f)
        with open(os.path.join(os.path.dirname(manifest), man["model"])) as f:
            learner = json.load(f)["learner"]
        assert learner["objective"]["name"] == "binary:logistic"
        self.version, self.threshold = man["version"], man["threshold"]
        self.features = learner["feature_names"]
        assert self.features == man["features"]
        p = float(learner["learner_model_param"]["base_score"].strip("[]"))
        self.base = math.log(p / (1 - p))
        self.trees = learner["gradient_booster"]["model"]["trees"]

    def score(self, x):
        x = [f32(v) if not math.isnan(v) else v for v in x]
        margin = 0.0
        for t in self.trees:
            n = 0
            while t["left_children"][n] != -1:
                v = x[t["split_indices"][n]]
                if math.isnan(v):
                    left = t["default_left"][n]
                else:
                    left = v < t["split_conditions"][n]
                n = t["left_children"][n] if left else t["right_children"][n]
            margin += t["split_conditions"][n]
        return 1.0 / (1.0 + math.exp(-(margin + self.base)))


def reference(recs, feed, names):
    """{event_id: features} for the payments, as riskflowd applies the records at their
    offsets: empty keys and events more than LATENESS_S behind their entity are refused."""
    decl = rfkit.rff.load(FEATURES, rfkit.SCHEMAS_DIR)
    eng = rfkit.rff.Engine(decl)
    out, refused = {}, 0
    for r in recs:
        name, rec = r.expect
        ids = [rec[e.key] for e in decl.touched(name)]
        t = rec["event_time" if name == "riskflow.Payment" else "label_time"]
        if any(i == "" for i in ids) or any(
                eng.has_state(e.name, rec[e.key])
                and eng.state(e.name, rec[e.key]).t_last - t > LATENESS_S * 1000
                for e in decl.touched(name)):
            refused += 1
            continue
        assert eng.apply(name, rec, feed, r.partition, r.offset)
        if name == "riskflow.Payment":
            out[rec["event_id"]] = eng.evaluate(name, rec, names)
    return out, refused


def test_shipped_fraud_model_with_labels(services, daemon_bin, tmp_path):
    model = XgbModel(MANIFEST)
    rng = random.Random(int(os.environ.get("RF_E2E_SEED", "20261202")))
    recs = gen.stream(rng, n_pay=3000)
    run = rfkit.unique("rf-shipped")
    feed, scores_t, alerts_t, dlq_t = run + ".feed", run + ".scores", run + ".alerts", run + ".dlq"
    rfkit.create_topics(services, {feed: 1, scores_t: 1, alerts_t: 1, dlq_t: 1})
    produced = []
    for rtype, rec, _ in recs:
        value = (rfkit.encode_payment(rec) if rtype == "riskflow.Payment"
                 else rfkit.confluent(LABEL_ID, rfkit.avro_body(LABEL_SCHEMA, rec)))
        produced.append(Produced(feed, rec["customer_id"].encode(), value, expect=(rtype, rec)))
    conf = rfkit.fraud_conf(services, run, features=FEATURES, input_max_lateness_s=LATENESS_S,
                            commit_interval_ms=200)
    del conf["fraud.model.path"]  # the default: what ships
    producer = rfkit.make_producer(services)
    rfkit.produce_checked(producer, produced)
    daemon = rfkit.Daemon(tmp_path, conf).start()
    readers = {t: rfkit.TopicReader(services, t) for t in (scores_t, alerts_t, dlq_t)}
    try:
        rfkit.wait_committed_to_end(services, daemon, run + ".group", feed, timeout=180)
        rc, _ = daemon.stop()
        assert rc == 0, daemon.log_tail()
        for r in readers.values():
            r.read_to_end()
    except BaseException:
        daemon.kill()
        print(daemon.log_tail(200))
        raise
    assert model.version in daemon.log_text(), daemon.log_tail()

    want, refused = reference(produced, feed, model.features)
    kinds = {rec["event_id"]: rec["kind"] for (t, rec, _) in recs if t == "riskflow.Payment"}
    admitted = {eid for eid in want if kinds[eid] not in ("TRANSFER_IN", "REFUND")}
    scores = {}
    for m in readers[scores_t].msgs:
        s = rfkit.decode_confluent(m.value(), rfkit.SCORE_ID, rfkit.SCORE_SCHEMA)
        assert s["event_id"] not in scores, "scored twice: " + s["event_id"]
        scores[s["event_id"]] = s
    assert set(scores) == admitted, (sorted(set(scores) - admitted)[:5],
                                     sorted(admitted - set(scores))[:5])
    assert len(scores) > 2000, len(scores)
    # Refused records (empty keys, too late) are dead-lettered; labels otherwise answer nothing.
    assert len(readers[dlq_t].msgs) == refused and refused > 10, (len(readers[dlq_t].msgs),
                                                                  refused)

    feat_bad, score_bad = [], []
    for eid, s in scores.items():
        assert s["model_version"] == model.version
        got = {f["name"]: f["value"] for f in s["features"]}
        assert list(got) == model.features
        for n in model.features:
            if not rfkit.close(got[n], want[eid][n]):
                feat_bad.append((eid, n, got[n], want[eid][n]))
        ref = model.score([want[eid][n] for n in model.features])
        if abs(s["score"] - ref) > 1e-6:
            score_bad.append((eid, s["score"], ref))
    assert not feat_bad, "features differ from the reference (%d): %s" % (len(feat_bad),
                                                                          feat_bad[:5])
    assert not score_bad, "scores differ from the XGBoost walk (%d): %s" % (len(score_bad),
                                                                           score_bad[:5])
    labelled = [eid for eid in scores if want[eid]["term_nb_fraud_30d"] > 0]
    decayed = [eid for eid in scores if want[eid]["term_fraud_dsum_2d"] > 0]
    assert len(labelled) > 100 and len(decayed) > 20, (len(labelled), len(decayed))

    alerts = {}
    for m in readers[alerts_t].msgs:
        a = rfkit.decode_confluent(m.value(), ALERT_ID, ALERT_SCHEMA)
        alerts[a["event_id"]] = a
    over = {eid for eid, s in scores.items() if s["score"] >= model.threshold}
    assert set(alerts) == over and over, (len(alerts), len(over))
    for eid, a in alerts.items():
        rs = a["reasons"]
        assert 1 <= len(rs) <= 3, rs
        assert all(r["feature"] in model.features for r in rs), rs
        cs = [r["contribution"] for r in rs]
        assert cs == sorted(cs, reverse=True) and cs[-1] > 0, rs
        assert all(r["value"] == scores[eid]["features"][model.features.index(r["feature"])]
                   ["value"] for r in rs), rs
