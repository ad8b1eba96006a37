#!/usr/bin/env python3
"""crosscheck_fraud_reference — the fraud declarations of deploy/features.conf against the
previous, hard-coded reference of the fraud features (riskflow_features.py as of bb4115f).

    git show bb4115f:tools/train/riskflow_features.py > /tmp/old_rff.py
    python3 tools/train/crosscheck_fraud_reference.py --old /tmp/old_rff.py
    python3 tools/train/crosscheck_fraud_reference.py --old /tmp/old_rff.py \
        --write-fixture tests/fixtures/fraud_reference_features.csv

Simulates payments (simulate_fraud.py), replays them through both (partition 0, offset = the
delivery index, one topic) twice: in event-time order, and with --late of them delivered late
(up to 30 h, so some land inside a window and some outside it), and compares the 11 fraud
features to a relative 1e-9. --write-fixture writes a small stream (its own, smaller
simulation) and the old reference's values, for test_riskflow_features.py, which then needs
neither the old module nor numpy. Needs numpy (the simulator).
"""

import argparse
import csv
import importlib.util
import math
import os
import random
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.normpath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, HERE)

import riskflow_features as rff  # noqa: E402
import simulate_fraud as sim  # noqa: E402

NAMES = ["amount", "log_amount", "cust_count_1h", "cust_sum_1h", "cust_count_24h",
         "cust_sum_24h", "cust_secs_since_last", "cust_amount_ratio_24h", "is_ecom",
         "is_night", "is_cash"]
TOPIC = "txn.payments"


def load_old(path):
    spec = importlib.util.spec_from_file_location("old_riskflow_features", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def payments(customers, terminals, days, seed, late, max_late_ms=30 * 3600000):
    data, _, _ = sim.simulate(customers, terminals, days, seed)
    pays = list(sim.iter_payments(data, customers, seed))
    if late <= 0:
        return pays
    rnd = random.Random(seed)
    delay = [rnd.randint(1, max_late_ms) if rnd.random() < late else 0 for _ in pays]
    order = sorted(range(len(pays)), key=lambda i: (pays[i]["event_time"] + delay[i], i))
    return [pays[i] for i in order]


def compare(old, decl, pays):
    """Returns (rows of (payment, old features), n mismatches, max relative difference)."""
    eng = rff.Engine(decl)
    states = {}
    rows = []
    bad = 0
    worst = 0.0
    for off, p in enumerate(pays):
        st = states.get(p["customer_id"])
        if st is None:
            st = states[p["customer_id"]] = old.CustomerState()
        fo = st.apply(p, 0, off, topic=TOPIC)
        if not eng.apply("riskflow.Payment", p, TOPIC, 0, off):
            raise SystemExit("offset %d: a replay?" % off)
        fn = eng.evaluate("riskflow.Payment", p, NAMES)
        for k in NAMES:
            a, b = fo[k], fn[k]
            if not math.isclose(a, b, rel_tol=1e-9, abs_tol=0.0):
                bad += 1
                if bad <= 10:
                    print("  MISMATCH offset %d %s: old %r new %r" % (off, k, a, b))
            elif a != b:
                worst = max(worst, abs(a - b) / abs(a))
        rows.append((p, fo))
    return rows, bad, worst


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--old", required=True, help="the old riskflow_features.py (bb4115f)")
    ap.add_argument("--features", default=os.path.join(REPO, "deploy", "features.conf"))
    ap.add_argument("--schemas", default=os.path.join(REPO, "schemas"))
    ap.add_argument("--customers", type=int, default=300)
    ap.add_argument("--terminals", type=int, default=600)
    ap.add_argument("--days", type=int, default=20)
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--late", type=float, default=0.1,
                    help="fraction delivered late in the second run (default %(default)s)")
    ap.add_argument("--write-fixture", metavar="CSV")
    a = ap.parse_args(argv)
    old = load_old(a.old)
    decl = rff.load(a.features, a.schemas)
    total_bad = 0
    for late in (0.0, a.late):
        pays = payments(a.customers, a.terminals, a.days, a.seed, late)
        _, bad, worst = compare(old, decl, pays)
        total_bad += bad
        print("%d payments (%s): %d of %d feature values differ by more than rel 1e-9; "
              "largest relative difference otherwise %.3g"
              % (len(pays), "in time order" if not late else "%g delivered late" % late, bad,
                 len(pays) * len(NAMES), worst))
    if a.write_fixture:
        pays = payments(50, 500, 12, 5, 0.15)
        rows, bad, _ = compare(old, decl, pays)
        if bad:
            raise SystemExit("not writing a fixture the new engine does not reproduce")
        with open(a.write_fixture, "w", newline="") as f:
            w = csv.writer(f, lineterminator="\n")
            w.writerow(["customer_id", "event_time", "amount_minor", "channel", "kind"] + NAMES)
            for p, fo in rows:
                w.writerow([p["customer_id"], p["event_time"], p["amount_minor"],
                            p["channel"], p["kind"]] + [repr(fo[k]) for k in NAMES])
        print("wrote %s: %d payments (50 customers, 500 terminals, 12 days, seed 5, 15%% late)"
              % (a.write_fixture, len(rows)))
    return 1 if total_bad else 0


if __name__ == "__main__":
    sys.exit(main())
