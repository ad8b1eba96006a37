#!/usr/bin/env python3
"""replay_fraud.py — the fraud model's training rows from riskflowd itself (issue 7 item 3).

For each seed: simulates payments and their labels (simulate_fraud.py, the Handbook's
simulator; a CHARGEBACK label 7 days after each fraud), writes both into one Avro container
file in event-time order (a union of riskflow.Payment and riskflow.FraudLabel, as they would
arrive on the topics), and runs `riskflowd --replay` on it with a feature file: one CSV row
per payment with every feature riskflowd computes for it, through the daemon's own decoder and
feature code. evaluate_fraud.py --candidate-features reads those rows, so the model is
trained on exactly what is served.

    .venv-train/bin/python tools/train/replay_fraud.py --seeds 1,2,3 --out '/tmp/rf_rows_{seed}.csv'
    .venv-train/bin/python tools/train/evaluate_fraud.py --candidate-features '/tmp/rf_rows_{seed}.csv' \
        --candidate-model xgboost

Needs a built riskflowd (--daemon, default build/riskflowd) and fastavro.
"""
import argparse
import heapq
import json
import os
import subprocess
import sys
import tempfile
import time

import fastavro

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
import simulate_fraud  # noqa: E402


def log(msg):
    sys.stderr.write("replay_fraud: %s\n" % msg)
    sys.stderr.flush()


def schema(name):
    with open(os.path.join(ROOT, "schemas", name)) as f:
        return json.load(f)


def records(data, customers, seed):
    """Payments and labels merged by event time (a payment before a label at the same ms)."""
    pays = ((p["event_time"], 0, "riskflow.Payment", p)
            for p in simulate_fraud.iter_payments(data, customers, seed))
    labs = ((lab["label_time"], 1, "riskflow.FraudLabel", lab)
            for lab in simulate_fraud.iter_labels(data, customers, seed))
    for _, _, name, rec in heapq.merge(pays, labs, key=lambda r: (r[0], r[1])):
        yield name, rec


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", default="1,2,3")
    ap.add_argument("--customers", type=int, default=5000)
    ap.add_argument("--terminals", type=int, default=10000)
    ap.add_argument("--days", type=int, default=183)
    ap.add_argument("--features", default=os.path.join(HERE, "fraud_features.conf"))
    ap.add_argument("--daemon", default=os.path.join(ROOT, "build", "riskflowd"))
    ap.add_argument("--out", default="/tmp/rf_rows_{seed}.csv",
                    help="rows per seed ({seed} in the path)")
    a = ap.parse_args(argv)
    union = fastavro.parse_schema([schema("payment.avsc"), schema("fraud_label.avsc")])
    for seed in [int(s) for s in a.seeds.split(",")]:
        t0 = time.time()
        log("seed %d: simulating %d customers, %d terminals, %d days"
            % (seed, a.customers, a.terminals, a.days))
        data, _, _ = simulate_fraud.simulate(n_customers=a.customers, n_terminals=a.terminals,
                                             n_days=a.days, seed=seed)
        with tempfile.TemporaryDirectory(prefix="rf-replay-") as tmp:
            path = os.path.join(tmp, "events.avro")
            with open(path, "wb") as f:
                fastavro.writer(f, union, records(data, a.customers, seed))
            log("seed %d: %d payments written in %.0f s; replaying through riskflowd"
                % (seed, len(data), time.time() - t0))
            out = a.out.replace("{seed}", str(seed))
            res = subprocess.run([a.daemon, "-X", "features.path=" + a.features,
                                  "-X", "schemas.dir=" + os.path.join(ROOT, "schemas"),
                                  "--replay", path, "--out", out],
                                 capture_output=True, text=True)
            if res.returncode != 0:
                raise SystemExit("riskflowd --replay failed (%d): %s" % (res.returncode,
                                                                       res.stderr))
            log("seed %d: %s -> %s (%.0f s in all)" % (seed, res.stderr.strip().split(": ", 1)[-1],
                                                      out, time.time() - t0))


if __name__ == "__main__":
    main()
