#!/usr/bin/env python3
"""train_fraud — train the fraud logistic regression and export it for riskflowd.

  1. payments: simulated in-process with simulate_fraud.py (default) or read from a .jsonl
     (--in; the simulator's output format: payment fields + "fraud" + "fraud_scenario");
  2. features: every payment replayed in event-time order through riskflow_features.py — the
     reference of the daemon's declared-feature engine — with the declarations of
     deploy/features.conf (--features), as partition 0 of one topic, offset = its global
     index; the model reads MODEL_FEATURES, which must be available for riskflow.Payment;
  3. split by time, the Fraud Detection Handbook's protocol (chapter 5, model selection): the
     last --test-days days are the test period, the --delay-days before them the label delay,
     the --train-days before that the training period; in the test period the cards already
     known to be compromised (fraud in the training period, or in the delay period up to the
     test day minus the delay) are removed;
  4. scikit-learn make_pipeline(StandardScaler(), LogisticRegression()) on the training period;
  5. metrics on the test period: AUC ROC, Average Precision, Card Precision@100 (handbook
     definitions); the alert threshold: the lowest score whose test-period precision is at
     least --target-precision (the largest recall at that precision);
  6. writes deploy/models/fraud_lr.json (include/riskflow/model.h format),
     tests/fixtures/fraud_lr_parity.csv (raw feature rows + sklearn's predict_proba) and
     tools/train/REPORT.md.

numpy + scikit-learn + standard library (no pandas).
"""

import argparse
import datetime
import hashlib
import json
import math
import os
import platform
import sys
import time

import numpy as np
import sklearn
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score, roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.normpath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, HERE)

import handbook_fraud as hb  # noqa: E402
import riskflow_features as rf  # noqa: E402
import simulate_fraud as sim  # noqa: E402

MODEL_FORMAT = "riskflow.logistic.v1"
MODEL_NAME = "fraud"
# The features the model reads, in model order (declared in deploy/features.conf).
MODEL_FEATURES = ["amount", "log_amount", "cust_count_1h", "cust_sum_1h", "cust_count_24h",
                  "cust_sum_24h", "cust_secs_since_last", "cust_amount_ratio_24h", "is_ecom",
                  "is_night", "is_cash"]
RECORD_TYPE = "riskflow.Payment"
FEATURES_PATH = os.path.join(REPO, "deploy", "features.conf")
SCHEMAS_DIR = os.path.join(REPO, "schemas")
DAY_MS = 86400000
# The handbook's logistic regression, model-selection table (AUC ROC, AP, CP@100).
HANDBOOK_LR = (0.868, 0.623, 0.297)
HANDBOOK_XGB = (0.869, 0.687, 0.303)
HANDBOOK_RF = (0.870, 0.678, 0.299)


def log(msg):
    print("train_fraud: " + msg, file=sys.stderr, flush=True)


def read_jsonl(path):
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line:
                yield json.loads(line)


# The replay reads one input topic: one source, so the replay guard never triggers and the
# topic's name does not change any feature value.
INPUT_TOPIC = "txn.payments"


def load_features(path=FEATURES_PATH, schemas_dir=SCHEMAS_DIR, names=MODEL_FEATURES):
    """The declarations; every model feature must be available for a payment."""
    decl = rf.load(path, schemas_dir)
    avail = set(decl.available(RECORD_TYPE))
    missing = [n for n in names if n not in avail]
    if missing:
        raise SystemExit("%s: not available for %s: %s" % (path, RECORD_TYPE,
                                                            ", ".join(missing)))
    return decl


def replay(payments, names, decl):
    """Feature rows for every payment, replayed in the given (time) order.

    Returns a dict of numpy columns: X (n x len(names)), y, scenario, time_ms, customer
    (int codes), customer_ids (list)."""
    eng = rf.Engine(decl)
    cust_code = {}
    rows, y, scen, tms, cust = [], [], [], [], []
    last_t = None
    for offset, p in enumerate(payments):
        t = int(p["event_time"])
        if last_t is not None and t < last_t:
            raise SystemExit("input is not sorted by event_time (offset %d)" % offset)
        last_t = t
        cid = p["customer_id"]
        if cid not in cust_code:
            cust_code[cid] = len(cust_code)
        if not eng.apply(RECORD_TYPE, p, INPUT_TOPIC, 0, offset):
            raise SystemExit("offset %d: replayed (one topic, increasing offsets?)" % offset)
        f = eng.evaluate(RECORD_TYPE, p, names)
        rows.append([f[n] for n in names])
        y.append(int(p.get("fraud", 0)))
        scen.append(int(p.get("fraud_scenario", 0)))
        tms.append(t)
        cust.append(cust_code[cid])
    return {
        "X": np.asarray(rows, dtype=np.float64).reshape(len(rows), len(names)),
        "y": np.asarray(y, dtype=np.int8),
        "scenario": np.asarray(scen, dtype=np.int8),
        "time_ms": np.asarray(tms, dtype=np.int64),
        "customer": np.asarray(cust, dtype=np.int64),
        "customer_ids": list(cust_code),
    }


def split_handbook(day, y, customer, train_days, delay_days, test_days):
    """Masks (train, test_all, test_eval) and the day numbers, after the handbook: the test
    period is the last test_days days.

    test_eval drops, for each test day, the customers known to be compromised by then: those
    with a fraud in the training period, or in the delay period up to that test day minus the
    delay minus one (handbook_fraud.protocol_masks, the book's get_train_test_set)."""
    last_day = int(day.max())
    test_start = last_day - test_days + 1
    delay_start = test_start - delay_days
    train_start = delay_start - train_days
    if train_start < 1:
        raise SystemExit("not enough days: need %d + %d + %d and at least one day of warm-up"
                         % (train_days, delay_days, test_days))
    train, test_all, test_eval = hb.protocol_masks(day, y, customer, train_start, train_days,
                                                   delay_days, test_days)
    days = {"train": (train_start, delay_start - 1), "delay": (delay_start, test_start - 1),
            "test": (test_start, last_day)}
    return train, test_all, test_eval, days


def card_precision_at_k(day, customer, y, score, k=100):
    """Handbook's Card Precision@k (handbook_fraud.card_precision_at_k): per day, the k cards
    with the highest max score, the fraction of them compromised that day, averaged over the
    days; cards detected on a day are removed from the following days. (mean, per-day list)"""
    mean, per_day, _ = hb.card_precision_at_k(day, customer, y, score, k)
    return mean, per_day


def pick_threshold(y, score, target_precision):
    """The lowest score t such that precision(score >= t) >= target (the largest recall at
    that precision). Returns (t, precision, recall, n_alerts)."""
    order = np.argsort(-score, kind="stable")
    s = score[order]
    tp = np.cumsum(y[order] == 1)
    n = np.arange(1, len(s) + 1)
    # only cut between distinct scores
    last_of_value = np.r_[s[1:] != s[:-1], True]
    prec = tp / n
    ok = np.flatnonzero(last_of_value & (prec >= target_precision))
    if len(ok) == 0:
        i = int(np.flatnonzero(last_of_value)[0])
    else:
        i = int(ok[-1])
    pos = max(int((y == 1).sum()), 1)
    return float(s[i]), float(prec[i]), float(tp[i] / pos), int(n[i])


def model_json(pipe, names, threshold, date):
    scaler = pipe.named_steps["standardscaler"]
    lr = pipe.named_steps["logisticregression"]
    body = {
        "features": list(names),
        "scaler": {"mean": [float(v) for v in scaler.mean_],
                   "scale": [float(v) for v in scaler.scale_]},
        "coefficients": [float(v) for v in lr.coef_[0]],
        "intercept": float(lr.intercept_[0]),
        "threshold": float(threshold),
    }
    digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:8]
    doc = {"format": MODEL_FORMAT, "name": MODEL_NAME,
           "version": "fraud-lr-%s-%s" % (date, digest)}
    doc.update(body)
    for v in doc["scaler"]["mean"] + doc["scaler"]["scale"] + doc["coefficients"] + [
            doc["intercept"], doc["threshold"]]:
        if not math.isfinite(v):
            raise SystemExit("non-finite model parameter")
    if any(v == 0.0 for v in doc["scaler"]["scale"]):
        raise SystemExit("scale of 0 in the scaler")
    return doc


def dump_model(doc):
    """JSON with every float as repr() (the shortest string that reads back to the same
    double), one array per line, keys in model.h order."""
    def arr(xs):
        return "[" + ", ".join(repr(float(x)) for x in xs) + "]"
    lines = [
        "{",
        '  "format": %s,' % json.dumps(doc["format"]),
        '  "name": %s,' % json.dumps(doc["name"]),
        '  "version": %s,' % json.dumps(doc["version"]),
        '  "features": [%s],' % ", ".join(json.dumps(n) for n in doc["features"]),
        '  "scaler": {',
        '    "mean": %s,' % arr(doc["scaler"]["mean"]),
        '    "scale": %s' % arr(doc["scaler"]["scale"]),
        "  },",
        '  "coefficients": %s,' % arr(doc["coefficients"]),
        '  "intercept": %r,' % float(doc["intercept"]),
        '  "threshold": %r' % float(doc["threshold"]),
        "}",
    ]
    text = "\n".join(lines) + "\n"
    back = json.loads(text)
    assert back == doc, "model JSON does not read back to the same values"
    return text


def extreme_rows(names, X_ref, cap):
    """Hand-made rows at the edges of the features' ranges (raw, unscaled); cap: the
    cust_secs_since_last cap in seconds."""
    base = dict(zip(names, np.median(X_ref, axis=0)))

    def row(**kw):
        r = dict(base)
        r.update(kw)
        if "amount" in kw and "log_amount" not in kw:
            r["log_amount"] = math.log1p(kw["amount"])
        return [float(r[n]) for n in names]

    return [
        row(amount=0.0, cust_count_1h=1.0, cust_sum_1h=0.0, cust_count_24h=1.0,
            cust_sum_24h=0.0, cust_secs_since_last=cap, cust_amount_ratio_24h=1.0,
            is_ecom=0.0, is_night=0.0, is_cash=0.0),
        row(amount=0.01, cust_count_1h=1.0, cust_sum_1h=0.01, cust_count_24h=1.0,
            cust_sum_24h=0.01, cust_secs_since_last=0.0, cust_amount_ratio_24h=1.0),
        row(amount=5000.0, cust_count_1h=1.0, cust_sum_1h=5000.0, cust_count_24h=1.0,
            cust_sum_24h=5000.0, cust_amount_ratio_24h=1.0),
        row(amount=2500.0, cust_count_1h=2.0, cust_sum_1h=2510.0, cust_count_24h=3.0,
            cust_sum_24h=2540.0, cust_amount_ratio_24h=2500.0 / (2540.0 / 3.0),
            cust_secs_since_last=1.0, is_ecom=1.0, is_night=1.0),
        row(amount=999.99, cust_count_1h=1.0, cust_sum_1h=999.99, cust_count_24h=12.0,
            cust_sum_24h=1100.0, cust_amount_ratio_24h=999.99 / (1100.0 / 12.0)),
        row(amount=12.5, cust_count_1h=60.0, cust_sum_1h=750.0, cust_count_24h=200.0,
            cust_sum_24h=2500.0, cust_amount_ratio_24h=1.0, cust_secs_since_last=0.0),
        row(amount=1.0, cust_count_1h=1.0, cust_sum_1h=1.0, cust_count_24h=40.0,
            cust_sum_24h=4000.0, cust_amount_ratio_24h=0.01, cust_secs_since_last=cap),
        row(amount=20000.0, cust_count_1h=1.0, cust_sum_1h=20000.0, cust_count_24h=2.0,
            cust_sum_24h=20010.0, cust_amount_ratio_24h=20000.0 / (20010.0 / 2.0),
            is_cash=1.0, is_night=1.0, is_ecom=0.0),
        row(amount=300.0, cust_count_1h=2.0, cust_sum_1h=310.0, cust_count_24h=2.0,
            cust_sum_24h=310.0, cust_amount_ratio_24h=300.0 / (310.0 / 2.0),
            cust_secs_since_last=0.001, is_ecom=1.0, is_night=1.0, is_cash=1.0),
        row(amount=60.0, cust_count_1h=1.0, cust_sum_1h=60.0, cust_count_24h=1.0,
            cust_sum_24h=60.0, cust_amount_ratio_24h=1.0, cust_secs_since_last=cap,
            is_ecom=0.0, is_night=0.0, is_cash=0.0),
        row(amount=150.0, cust_count_1h=1000.0, cust_sum_1h=150000.0, cust_count_24h=5000.0,
            cust_sum_24h=750000.0, cust_amount_ratio_24h=1.0),
        row(amount=0.5, cust_count_1h=1.0, cust_sum_1h=0.5, cust_count_24h=1.0,
            cust_sum_24h=0.5, cust_amount_ratio_24h=1.0, cust_secs_since_last=cap,
            is_night=1.0),
    ]


def write_parity(path, pipe, names, X_pool, y_pool, seed, cap, n_rows=2000):
    """~n_rows held-out rows: random test rows, extra fraud rows, and hand-made extremes."""
    rng = np.random.default_rng(seed + 7)
    extremes = np.asarray(extreme_rows(names, X_pool, cap), dtype=np.float64)
    # keep only extremes whose logit stays where double precision is comfortable
    z = pipe.decision_function(extremes)
    extremes = extremes[np.abs(z) < 700]
    n_fraud = min(int((y_pool == 1).sum()), n_rows // 10)
    fraud_idx = rng.choice(np.flatnonzero(y_pool == 1), size=n_fraud, replace=False)
    n_rand = n_rows - n_fraud - len(extremes)
    rest = np.setdiff1d(np.arange(len(y_pool)), fraud_idx)
    rand_idx = rng.choice(rest, size=n_rand, replace=False)
    idx = np.sort(np.concatenate([rand_idx, fraud_idx]))
    X = np.vstack([X_pool[idx], extremes])
    proba = pipe.predict_proba(X)[:, 1]
    with open(path, "w", encoding="utf-8") as f:
        f.write(",".join(list(names) + ["sklearn_proba"]) + "\n")
        for r, p in zip(X, proba):
            f.write(",".join(repr(float(v)) for v in r) + "," + repr(float(p)) + "\n")
    return len(X), len(extremes), float(proba.min()), float(proba.max())


def fmt_day(start_day_ms, d):
    return datetime.datetime.fromtimestamp((start_day_ms + d * DAY_MS) / 1000,
                                           tz=datetime.timezone.utc).strftime("%Y-%m-%d")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--in", dest="inp", help="read payments from this .jsonl instead of simulating")
    ap.add_argument("--customers", type=int, default=5000)
    ap.add_argument("--terminals", type=int, default=10000)
    ap.add_argument("--days", type=int, default=42)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--write-jsonl", help="also write the simulated payments to this file")
    ap.add_argument("--train-days", type=int, default=7)
    ap.add_argument("--delay-days", type=int, default=7)
    ap.add_argument("--test-days", type=int, default=7)
    ap.add_argument("--C", type=float, default=1.0, help="LogisticRegression C")
    ap.add_argument("--target-precision", type=float, default=0.5)
    ap.add_argument("--date", help="yyyymmdd for the model version (default: today, UTC)")
    ap.add_argument("--model-out", default=os.path.join(REPO, "deploy/models/fraud_lr.json"))
    ap.add_argument("--parity-out",
                    default=os.path.join(REPO, "tests/fixtures/fraud_lr_parity.csv"))
    ap.add_argument("--report-out", default=os.path.join(HERE, "REPORT.md"))
    ap.add_argument("--features", default=FEATURES_PATH,
                    help="feature declarations (default: deploy/features.conf)")
    ap.add_argument("--schemas", default=SCHEMAS_DIR, help="schemas directory (registry.txt)")
    a = ap.parse_args(argv)
    t_start = time.time()
    names = MODEL_FEATURES
    try:
        decl = load_features(a.features, a.schemas, names)
    except rf.DeclError as e:
        raise SystemExit(str(e))
    cap = decl.feature("cust_secs_since_last").cap_s

    # 1. payments
    t0 = time.time()
    if a.inp:
        source = "read from %s" % a.inp
        payments = list(read_jsonl(a.inp))
    else:
        source = ("simulated: %d customers, %d terminals, %d days, seed %d"
                  % (a.customers, a.terminals, a.days, a.seed))
        data, _, _ = sim.simulate(a.customers, a.terminals, a.days, a.seed, log=log)
        payments = list(sim.iter_payments(data, a.customers, a.seed))
        if a.write_jsonl:
            sim.write_jsonl(a.write_jsonl, payments)
    t_sim = time.time() - t0
    log("%d payments (%s) in %.1f s" % (len(payments), source, t_sim))

    # 2. features
    t0 = time.time()
    r = replay(payments, names, decl)
    del payments
    t_feat = time.time() - t0
    log("features for %d payments in %.1f s" % (len(r["y"]), t_feat))
    X, y, scen, cust = r["X"], r["y"], r["scenario"], r["customer"]
    first_day_ms = int(r["time_ms"].min()) // DAY_MS * DAY_MS
    day = (r["time_ms"] - first_day_ms) // DAY_MS

    # 3. split
    train, test_all, test_eval, days = split_handbook(day, y, cust, a.train_days, a.delay_days,
                                                      a.test_days)
    log("train %d rows (%d fraud), test %d rows (%d after removing known cards, %d fraud)"
        % (train.sum(), y[train].sum(), test_all.sum(), test_eval.sum(), y[test_eval].sum()))

    # 4. fit
    t0 = time.time()
    pipe = make_pipeline(StandardScaler(), LogisticRegression(C=a.C, max_iter=2000))
    pipe.fit(X[train], y[train])
    t_fit = time.time() - t0

    # 5. metrics
    s_eval = pipe.predict_proba(X[test_eval])[:, 1]
    y_eval = y[test_eval]
    auc = float(roc_auc_score(y_eval, s_eval))
    ap_ = float(average_precision_score(y_eval, s_eval))
    cp100, cp_days = card_precision_at_k(day[test_eval], cust[test_eval], y_eval, s_eval, 100)
    s_train = pipe.predict_proba(X[train])[:, 1]
    auc_train = float(roc_auc_score(y[train], s_train))
    ap_train = float(average_precision_score(y[train], s_train))
    log("test: AUC %.4f  AP %.4f  CP@100 %.4f" % (auc, ap_, cp100))

    thr, thr_prec, thr_rec, thr_n = pick_threshold(y_eval, s_eval, a.target_precision)
    s_all = pipe.predict_proba(X[test_all])[:, 1]
    y_all, scen_all = y[test_all], scen[test_all]
    alert_all = s_all >= thr
    alert_eval = s_eval >= thr
    scen_eval = scen[test_eval]
    by_scen = []
    for k in (1, 2, 3):
        for lbl, sc, al in (("eval", scen_eval, alert_eval), ("all", scen_all, alert_all)):
            m = (sc == k)
            by_scen.append((k, lbl, int(m.sum()), int((al & m).sum())))
    log("threshold %.6g: precision %.3f recall %.3f, alert rate (whole test period) %.5f"
        % (thr, thr_prec, thr_rec, alert_all.mean()))

    # 6. outputs
    date = a.date or datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d")
    doc = model_json(pipe, names, thr, date)
    os.makedirs(os.path.dirname(a.model_out), exist_ok=True)
    with open(a.model_out, "w", encoding="utf-8") as f:
        f.write(dump_model(doc))
    os.makedirs(os.path.dirname(a.parity_out), exist_ok=True)
    n_par, n_ext, pmin, pmax = write_parity(a.parity_out, pipe, names, X[test_all], y_all,
                                            a.seed, cap)
    # self-check: the exported parameters reproduce sklearn's probabilities
    Z = (X[test_all] - np.asarray(doc["scaler"]["mean"])) / np.asarray(doc["scaler"]["scale"])
    p_mine = 1.0 / (1.0 + np.exp(-(doc["intercept"] + Z @ np.asarray(doc["coefficients"]))))
    rel = float(np.max(np.abs(p_mine - s_all) / np.maximum(s_all, 1e-300)))
    log("exported parameters vs predict_proba: max relative difference %.3g" % rel)
    if rel > 1e-9:
        raise SystemExit("exported model does not reproduce predict_proba")

    # what a model blind to scenario 2 could reach at best on the eval set
    n13 = int(((scen_eval == 1) | (scen_eval == 3)).sum())
    n2 = int((scen_eval == 2).sum())
    auc_ceiling = (n13 + 0.5 * n2) / max(n13 + n2, 1)
    ap_ceiling = (n13 + n2 * n2 / max(len(y_eval) - n13, 1)) / max(n13 + n2, 1)

    lr = pipe.named_steps["logisticregression"]
    stats = {
        "auc_ceiling": auc_ceiling, "ap_ceiling": ap_ceiling, "n13_eval": n13,
        "source": source, "n": len(y), "fraud": int(y.sum()), "days": int(day.max()) + 1,
        "first_day_ms": first_day_ms, "split": days,
        "n_customers_seen": len(r["customer_ids"]),
        "scen_counts": [int((scen == k).sum()) for k in (1, 2, 3)],
        "n_train": int(train.sum()), "fraud_train": int(y[train].sum()),
        "n_test_all": int(test_all.sum()), "fraud_test_all": int(y_all.sum()),
        "n_test_eval": int(test_eval.sum()), "fraud_test_eval": int(y_eval.sum()),
        "auc": auc, "ap": ap_, "cp100": cp100, "cp_days": cp_days,
        "auc_train": auc_train, "ap_train": ap_train,
        "thr": thr, "thr_prec": thr_prec, "thr_rec": thr_rec, "thr_n": thr_n,
        "alert_rate_all": float(alert_all.mean()), "alerts_all": int(alert_all.sum()),
        "alert_prec_all": float(y_all[alert_all].mean()) if alert_all.any() else 0.0,
        "alert_rec_all": float(alert_all[y_all == 1].mean()) if (y_all == 1).any() else 0.0,
        "alert_rate_eval": float(alert_eval.mean()),
        "by_scen": by_scen, "version": doc["version"], "coef": list(lr.coef_[0]),
        "n_iter": int(np.max(lr.n_iter_)), "C": a.C,
        "n_parity": n_par, "n_extreme": n_ext, "pmin": pmin, "pmax": pmax,
        "t_sim": t_sim, "t_feat": t_feat, "t_fit": t_fit, "t_total": time.time() - t_start,
        "model_path": os.path.relpath(a.model_out, REPO),
        "parity_path": os.path.relpath(a.parity_out, REPO),
        "target_precision": a.target_precision, "names": names,
        "features_path": os.path.relpath(a.features, REPO),
        "scaler_mean": doc["scaler"]["mean"], "scaler_scale": doc["scaler"]["scale"],
    }
    with open(a.report_out, "w", encoding="utf-8") as f:
        f.write(report(stats, a))
    log("wrote %s, %s (%d rows, %d extreme), %s in %.1f s total"
        % (stats["model_path"], stats["parity_path"], n_par, n_ext,
           os.path.relpath(a.report_out, REPO), time.time() - t_start))
    return 0


def report(s, a):
    d = s["split"]
    f0 = s["first_day_ms"]

    def span(k):
        lo, hi = d[k]
        return "days %d–%d (%s – %s)" % (lo, hi, fmt_day(f0, lo), fmt_day(f0, hi))

    out = []
    w = out.append
    w("# Fraud model — training report\n")
    w("Generated by `tools/train/train_fraud.py` (do not edit by hand). Model version "
      "`%s`, written to `%s`.\n" % (s["version"], s["model_path"]))
    w("## Data\n")
    w("- Payments: %s (`simulate_fraud.py`, the Fraud Detection Handbook's simulator, ch. 3.2)."
      % s["source"])
    w("- %d payments over %d days, %d customers with at least one payment; fraud rate "
      "%.4f%% (%d frauds: scenario 1 %d, scenario 2 %d, scenario 3 %d)."
      % (s["n"], s["days"], s["n_customers_seen"], 100.0 * s["fraud"] / s["n"], s["fraud"],
         *s["scen_counts"]))
    w("- Features: every payment replayed in time order through `riskflow_features.py` "
      "(partition 0, offset = index), the reference of the daemon's feature engine, with "
      "the declarations of `%s`; the days before the training week warm the windows up."
      % s["features_path"])
    w("- Split (the handbook's protocol): train %s: %d payments, %d fraud (%.3f%%); "
      "label delay %s; test %s: %d payments, %d fraud; after removing the cards known to be "
      "compromised (handbook rule) %d payments, %d fraud (%.3f%%)."
      % (span("train"), s["n_train"], s["fraud_train"], 100.0 * s["fraud_train"] / s["n_train"],
         span("delay"), span("test"), s["n_test_all"], s["fraud_test_all"], s["n_test_eval"],
         s["fraud_test_eval"], 100.0 * s["fraud_test_eval"] / s["n_test_eval"]))
    w("")
    w("## Model\n")
    w("`make_pipeline(StandardScaler(), LogisticRegression(C=%g, max_iter=2000))`, lbfgs, "
      "%d iterations; scikit-learn %s, numpy %s, Python %s."
      % (s["C"], s["n_iter"], sklearn.__version__, np.__version__, platform.python_version()))
    w("")
    w("| feature | mean | scale | coefficient |")
    w("|---|---:|---:|---:|")
    for n, m, sc, c in zip(s["names"], s["scaler_mean"], s["scaler_scale"], s["coef"]):
        w("| %s | %.6g | %.6g | %+.4f |" % (n, m, sc, c))
    w("")
    w("## Metrics on the test week\n")
    w("Handbook definitions: AUC ROC and Average Precision over the test transactions; Card "
      "Precision@100 = per day, the 100 cards with the highest maximum score, the fraction "
      "with a fraud that day, averaged over the test days (cards found on a day are left out "
      "of the following days).\n")
    w("| model | AUC ROC | Average Precision | Card Precision@100 |")
    w("|---|---:|---:|---:|")
    w("| **riskflow fraud-lr (this run)** | **%.3f** | **%.3f** | **%.3f** |"
      % (s["auc"], s["ap"], s["cp100"]))
    w("| handbook logistic regression | %.3f | %.3f | %.3f |" % HANDBOOK_LR)
    w("| handbook random forest | %.3f | %.3f | %.3f |" % HANDBOOK_RF)
    w("| handbook XGBoost | %.3f | %.3f | %.3f |" % HANDBOOK_XGB)
    w("")
    w("On the training week: AUC %.3f, AP %.3f. CP@100 per test day: %s."
      % (s["auc_train"], s["ap_train"], ", ".join("%.2f" % v for v in s["cp_days"])))
    w("")
    w("## Alert threshold\n")
    w("`threshold` = %r: the lowest score with a precision of at least %.2f on the test week "
      "(after the handbook's removal of known cards) — there it alerts on %d payments "
      "(%.3f%%), precision %.3f, recall %.3f. Note it is chosen on the test week itself, as "
      "the issue asked; the daemon's config can override it."
      % (s["thr"], s["target_precision"], s["thr_n"], 100.0 * s["alert_rate_eval"],
         s["thr_prec"], s["thr_rec"]))
    w("")
    w("Over every payment of the test week (what the daemon would see, known cards included): "
      "%d alerts out of %d payments, an alert rate of %.3f%%, precision %.3f, recall %.3f."
      % (s["alerts_all"], s["n_test_all"], 100.0 * s["alert_rate_all"], s["alert_prec_all"],
         s["alert_rec_all"]))
    w("")
    w("| scenario | frauds (eval set) | alerted | frauds (whole week) | alerted |")
    w("|---|---:|---:|---:|---:|")
    names = {1: "1: amount > 220", 2: "2: compromised terminal", 3: "3: compromised card, ×5"}
    bs = {(k, lbl): (n, h) for k, lbl, n, h in s["by_scen"]}
    for k in (1, 2, 3):
        ne, he = bs[(k, "eval")]
        na, ha = bs[(k, "all")]
        w("| %s | %d | %d (%.0f%%) | %d | %d (%.0f%%) |"
          % (names[k], ne, he, 100.0 * he / max(ne, 1), na, ha, 100.0 * ha / max(na, 1)))
    w("")
    w("## Why we are below the handbook\n")
    w("- Our features are the fraud declarations only: the customer's own 1 h and 24 h windows "
      "(count, sum, amount / 24 h mean), time since the customer's last payment, and flags. "
      "The handbook's model reads the customer's 1-, 7- and 30-day windows (number of "
      "payments, mean amount) and the terminal's risk over 1, 7 and 30 days with a 7-day "
      "label delay, plus weekend/night flags.")
    w("- A ceiling for any model on these features: if scenario-2 frauds cannot be told "
      "from genuine payments and every other fraud were ranked first, the test-week AUC "
      "would be %.3f (%d of the %d frauds are scenario 1 or 3) and AP about %.2f."
      % (s["auc_ceiling"], s["n13_eval"], s["fraud_test_eval"], s["ap_ceiling"]))
    w("- Scenario 2 (compromised terminals) is invisible to customer-only features: nothing "
      "about one payment of a customer says that the terminal has gone bad. The handbook "
      "catches it with the terminal-risk features. With scenario 2 the largest share of the "
      "frauds, this is most of the gap in AUC and AP.")
    w("- Scenario 3 (amount × 5) needs the customer's usual amount: a 24 h mean holds ~2 "
      "payments (and includes the fraud itself), a 30-day mean would be a far better "
      "baseline. Scenario 1 (amount > 220) is caught by the amount alone.")
    w("- Card, terminal and 7/30-day features (and terminal risk from the labels topic) "
      "come in later issues; this report is the baseline they have to beat.")
    w("- The simulation is smaller than the handbook's (%d days instead of 183, same "
      "5000 customers / 10000 terminals by default): scenario 2's 28-day compromises have "
      "not all reached their steady state in the first weeks, so the fraud rate is a little "
      "lower than the handbook's ~0.8%%; metrics from one seed move by a few points." % s["days"])
    w("")
    w("## Parity fixture\n")
    w("`%s`: %d rows (%d hand-made extremes at the end), the model's features in model "
      "order (raw, unscaled) then `sklearn_proba` = `pipeline.predict_proba(X)[:, 1]`; "
      "probabilities from %.3g to %.6g. Every float is Python's repr() (reads back to the "
      "same double)." % (s["parity_path"], s["n_parity"], s["n_extreme"], s["pmin"], s["pmax"]))
    w("")
    w("## Run\n")
    w("`%s` — simulate %.1f s, features %.1f s, fit %.1f s, total %.1f s."
      % (" ".join(["python3", "tools/train/train_fraud.py"] + sys.argv[1:]), s["t_sim"],
         s["t_feat"], s["t_fit"], s["t_total"]))
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    sys.exit(main())
