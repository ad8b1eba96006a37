#!/usr/bin/env python3
"""riskflowd --replay against the Python reference (tools/train/riskflow_features.py).

Writes a random stream of payments and fraud labels (late, duplicated, withdrawn, for unknown
and future payments, some with empty keys and some far behind their entity) into an Avro
object container file with a union schema, runs `riskflowd --replay` on it with a feature file,
and checks every row against the reference engine fed the same records in the same order:
every feature bit-equal, the label of each row the last verdict on its payment, the skipped
records the ones the reference refuses. Also: a file whose schema is not the registry's is
refused, naming the record.

usage: replay_matches_reference.py RISKFLOWD FEATURES_FILE   (from the repository root; the
repo's .venv: fastavro)
"""
import csv
import json
import os
import random
import subprocess
import sys
import tempfile

import fastavro

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tools", "train"))
import riskflow_features as rff  # noqa: E402

T0 = 1775000000000  # 2026-03-31
DAY = 86400000


def schema(name):
    with open(os.path.join(ROOT, "schemas", name)) as f:
        return json.load(f)


def stream(rng, n_pay=6000):
    pays, labels = [], []
    customers = ["C%03d" % i for i in range(60)]
    terminals = ["T%03d" % i for i in range(40)]
    kinds = ["PURCHASE"] * 8 + ["REFUND", "CASH_WITHDRAWAL", "TRANSFER_IN"]
    t = T0
    for i in range(n_pay):
        t += rng.randrange(1, 40 * 60000)  # ~20 minutes apart: 60+ days in all
        c = rng.choice(customers)
        p = {"event_id": "P%05d" % i, "customer_id": c, "card_token": "K" + c,
             "merchant_id": "M1", "terminal_id": rng.choice(terminals), "mcc": 5411,
             "amount_minor": rng.choice([rng.randrange(1, 20000), rng.randrange(1, 200000)]),
             "currency": "EUR", "channel": rng.choice(["POS", "ECOM", "ATM"]),
             "country": "FR", "kind": rng.choice(kinds), "event_time": t}
        if rng.random() < 0.003:
            p["customer_id"] = ""          # bad key: skipped by both
        pays.append(p)
        if rng.random() < 0.05:            # labelled, 1-10 days later, sometimes twice
            fraud = rng.random() < 0.6
            for k in range(1 + (rng.random() < 0.2)):
                labels.append(label(p, p["event_time"] + rng.randrange(DAY, 10 * DAY), fraud,
                                    "CHARGEBACK" if fraud else "CLEARED"))
            if fraud and rng.random() < 0.1:  # withdrawn
                labels.append(label(p, p["event_time"] + 11 * DAY, False, "INVESTIGATION"))
    # labels for payments never seen, and for payments in the future of their label
    for j in range(20):
        ghost = {"event_id": "G%03d" % j, "customer_id": rng.choice(customers),
                 "card_token": "K", "terminal_id": rng.choice(terminals),
                 "event_time": T0 + rng.randrange(0, 50 * DAY)}
        labels.append(label(ghost, ghost["event_time"] + DAY, True, "CONFIRMED"))
        ahead = dict(ghost, event_id="F%03d" % j, event_time=ghost["event_time"] + 5 * DAY)
        labels.append(label(ahead, ghost["event_time"] + DAY, True, "CONFIRMED"))
    recs = [("riskflow.Payment", p, p["event_time"]) for p in pays]
    recs += [("riskflow.FraudLabel", lab, lab["label_time"]) for lab in labels]
    recs.sort(key=lambda r: r[2])  # in event-time order, as they would arrive
    # and a few that arrive 30 days late: too late with a 7-day lateness bound
    for j in range(12):
        at = rng.randrange(len(recs) // 2, len(recs))
        late = dict(recs[at][1])
        if recs[at][0] != "riskflow.Payment":
            continue
        late["event_id"] = "L%03d" % j
        late["event_time"] -= 30 * DAY
        recs.insert(at + 1, ("riskflow.Payment", late, late["event_time"]))
    return recs


def label(p, when, fraud, source):
    return {"label_time": when, "payment_id": p["event_id"], "payment_time": p["event_time"],
            "customer_id": p["customer_id"], "card_token": p["card_token"],
            "terminal_id": p["terminal_id"], "is_fraud": fraud, "source": source}


def main():
    daemon, features = sys.argv[1], sys.argv[2]
    rng = random.Random(20261202)
    recs = stream(rng)
    tmp = tempfile.mkdtemp(prefix="rf-replay-")
    union = [schema("payment.avsc"), schema("fraud_label.avsc")]
    path = os.path.join(tmp, "events.avro")
    with open(path, "wb") as f:
        fastavro.writer(f, fastavro.parse_schema(union),
                        [(name, r) for name, r, _ in recs])
    out = os.path.join(tmp, "rows.csv")
    lateness = 7 * 86400
    cmd = [daemon, "-X", "features.path=" + features, "-X", "input.max.lateness.s=%d" % lateness,
           "--replay", path, "--out", out]
    res = subprocess.run(cmd, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    print(res.stderr.strip())

    decl = rff.load(features, os.path.join(ROOT, "schemas"))
    eng = rff.Engine(decl)
    names = decl.available("riskflow.Payment")
    verdict = {}
    for name, r, _ in recs:
        if name == "riskflow.FraudLabel":
            prev = verdict.get(r["payment_id"])
            if prev is None or r["label_time"] >= prev[0]:
                verdict[r["payment_id"]] = (r["label_time"], int(r["is_fraud"]))
    want = []
    skipped = 0
    fed = {f.record.full_name for f in decl.items
           if not f.derived and f.kind is not None and f.agg != "value"}
    for off, (name, r, _) in enumerate(recs):
        if name != "riskflow.Payment" and name not in fed:
            skipped += 1   # wrong_type: no feature reads it and no row is written for it
            continue
        try:
            ids = [r[e.key] for e in decl.touched(name)]
            if any(i == "" for i in ids):
                raise rff.BadKey("empty")
            t = r["event_time" if name == "riskflow.Payment" else "label_time"]
            late = any(eng.has_state(e.name, r[e.key]) and
                       eng.state(e.name, r[e.key]).t_last - t > lateness * 1000
                       for e in decl.touched(name))
            if late:
                skipped += 1
                continue
            assert eng.apply(name, r, path, 0, off + 1)
        except rff.BadKey:
            skipped += 1
            continue
        if name == "riskflow.Payment":
            f = eng.evaluate(name, r, names)
            v = verdict.get(r["event_id"])
            want.append((r["event_id"], r["event_time"], [f[n] for n in names],
                         "" if v is None else str(v[1])))
    with open(out) as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["event_id", "event_time"] + names + ["label"], rows[0]
    rows = rows[1:]
    assert len(rows) == len(want), (len(rows), len(want))
    bad = 0
    for got, (eid, et, vals, lab) in zip(rows, want):
        assert got[0] == eid and int(got[1]) == et, (got[:2], eid, et)
        for name, g, w in zip(names, got[2:-1], vals):
            if float(g) != w and bad < 10:
                print("row %s: %s = %s, reference %r" % (eid, name, g, w))
                bad += 1
        assert got[-1] == lab, (eid, got[-1], lab)
    assert bad == 0
    labelled = sum(1 for w in want if w[3] != "")
    assert labelled > 100 and skipped > 10, (labelled, skipped)
    print("replay: %d rows x %d features equal to the reference (%d labelled, %d records "
          "skipped by both)" % (len(rows), len(names), labelled, skipped))

    # A file whose Payment schema is not the registry's: refused by name.
    other = schema("payment.avsc")
    other["fields"] = [dict(f, type="long") if f["name"] == "mcc" else f for f in other["fields"]]
    bad_path = os.path.join(tmp, "bad.avro")
    with open(bad_path, "wb") as f:
        fastavro.writer(f, fastavro.parse_schema(other), [recs[0][1]])
    res = subprocess.run([daemon, "-X", "features.path=" + features, "--replay", bad_path,
                          "--out", os.path.join(tmp, "x.csv")], capture_output=True, text=True)
    assert res.returncode == 78 and "not the registry's" in res.stderr, (res.returncode,
                                                                          res.stderr)


if __name__ == "__main__":
    main()
