#!/usr/bin/env python3
"""make_fraud_bench_model.py — a fraud tree model of the target size for the benchmarks.

300 XGBoost trees of depth 6 over every feature tools/train/fraud_features.conf makes
available for payments (names from the Python reference), fitted on random rows: what it
predicts is meaningless, what it costs is what a trained model of that shape costs (the
branch-free evaluator's work depends on the trees' shape only). Writes the model and a
riskflow.trees.v1 manifest (threshold 0.99) into --out (default /tmp/riskflow-bench-model):

    .venv-train/bin/python tools/bench/make_fraud_bench_model.py
    .venv/bin/python tools/bench/bench_e2e.py --events 100000 --runs 1 \\
        -X features.path=tools/train/fraud_features.conf \\
        -X fraud.model.path=/tmp/riskflow-bench-model/fraud_bench.manifest.json
"""
import argparse
import json
import os
import sys

import numpy as np
import xgboost as xgb

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tools", "train"))
import riskflow_features as rff  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--features", default=os.path.join(ROOT, "tools", "train", "fraud_features.conf"))
    ap.add_argument("--trees", type=int, default=300)
    ap.add_argument("--depth", type=int, default=6)
    ap.add_argument("--out", default="/tmp/riskflow-bench-model")
    a = ap.parse_args()
    names = rff.load(a.features, os.path.join(ROOT, "schemas")).available("riskflow.Payment")
    rng = np.random.default_rng(3)
    x = rng.lognormal(1, 1, size=(20000, len(names)))
    y = (x[:, 0] * x[:, -1] > np.median(x[:, 0] * x[:, -1])).astype(int)
    bst = xgb.train({"objective": "binary:logistic", "max_depth": a.depth, "eta": 0.1},
                    xgb.DMatrix(x, label=y, feature_names=names), num_boost_round=a.trees)
    os.makedirs(a.out, exist_ok=True)
    bst.save_model(os.path.join(a.out, "fraud_bench.json"))
    with open(os.path.join(a.out, "fraud_bench.manifest.json"), "w") as f:
        json.dump({"format": "riskflow.trees.v1", "name": "fraud",
                   "version": "bench-xgb-%dx%d" % (a.trees, a.depth),
                   "model": "fraud_bench.json", "threshold": 0.99}, f)
    print("%s: %d trees of depth %d over %d features" % (a.out, a.trees, a.depth, len(names)))


if __name__ == "__main__":
    main()
