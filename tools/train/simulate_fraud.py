#!/usr/bin/env python3
"""simulate_fraud — payment transactions with labelled fraud, after the Fraud Detection Handbook.

A reimplementation, from its text, of the transaction data simulator of Le Borgne et al.,
"Reproducible Machine Learning for Credit Card Fraud Detection — Practical Handbook",
chapter 3.2 "Transaction data simulator":

  1. customer profiles: a location (x, y) uniform on a 100 x 100 grid, mean_amount ~ U(5, 100),
     std_amount = mean_amount / 2, mean_nb_tx_per_day ~ U(0, 4);
  2. terminal profiles: a location (x, y) uniform on the same grid;
  3. each customer uses the terminals within a radius r (5) of its location;
  4. transactions: for each day, nb_tx ~ Poisson(mean_nb_tx_per_day); each at a time of day
     ~ Normal(86400 / 2, 20000) seconds, dropped when outside the day; amount ~
     Normal(mean_amount, std_amount), redrawn ~ U(0, 2 mean_amount) when negative, rounded to
     cents (at least one cent); terminal uniform among the customer's terminals;
  5. fraud scenarios, applied in this order:
     (1) every transaction with an amount > 220 is fraud;
     (2) each day 2 random terminals are compromised: all their transactions in the next
         28 days (that day included) are fraud;
     (3) each day 3 random customers are compromised: 1/3 of their transactions in the next
         14 days (that day included) have their amount multiplied by 5 and are fraud.

What riskflow adds to it (the handbook has none of these fields, so none of them carries any
fraud signal): every terminal gets a type (POS 80 %, ECOM 15 %, ATM 5 %), a merchant, an MCC
and a country; ATM transactions are cash withdrawals, all others purchases; currency is EUR.

Output: one JSON object per line, sorted by event_time, with the fields of
schemas/payment.avsc (enums as symbol strings, event_time in Unix ms, day 0 starting at
--start, 2026-04-01T00:00Z by default) plus "fraud" (0/1) and "fraud_scenario" (0-3).
Deterministic: the same arguments give the same bytes. numpy + standard library.

Labels (--labels-out, iter_labels()): the labels stream, schemas/fraud_label.avsc
(riskflow.FraudLabel) dicts, one JSON per line, sorted by label_time (ties: the payment's
order). Every fraudulent payment gets a CHARGEBACK label (is_fraud true) --label-delay-days
(7) after it: the Handbook's assumption that a fraud is known 7 days after it happened. The
simulator has no alerting model, so "genuine payments that were alerted and cleared by an
analyst" are a uniformly random --cleared-fraction of the genuine payments (default 0: none),
each with a CLEARED label (is_fraud false) --cleared-delay-days (1) after it; drawn from a
random stream of its own (the payments do not change, with or without labels).
"""

import argparse
import datetime
import hashlib
import json
import sys
import time

import numpy as np

DEFAULT_START = "2026-04-01T00:00:00Z"
DAY_MS = 86400000

TERMINAL_TYPES = ("POS", "ECOM", "ATM")
TERMINAL_TYPE_P = (0.80, 0.15, 0.05)
POS_MCCS = np.array([5411, 5812, 5541, 5311, 5912, 5999, 5732, 5651, 4121, 7832])
ECOM_MCCS = np.array([5969, 5999, 4722, 5818, 5735])
ATM_MCC = 6011
FOREIGN = ("DE", "BE", "ES", "IT", "NL", "GB")


class Data:
    """Column arrays of the simulated transactions (one entry per transaction)."""

    def __init__(self, **cols):
        self.__dict__.update(cols)

    def __len__(self):
        return len(self.time_ms)


def parse_start(text):
    dt = datetime.datetime.strptime(text.replace("Z", "+0000"), "%Y-%m-%dT%H:%M:%S%z")
    return int(dt.timestamp()) * 1000


def _customer_terminals(cust_xy, term_xy, radius, chunk=500):
    """For each customer, the indices of the terminals within radius (handbook step 3)."""
    out = []
    r2 = radius * radius
    for i in range(0, len(cust_xy), chunk):
        c = cust_xy[i:i + chunk]
        d2 = ((c[:, None, :] - term_xy[None, :, :]) ** 2).sum(axis=2)
        for row in d2:
            out.append(np.flatnonzero(row < r2))
    return out


def simulate(n_customers=5000, n_terminals=10000, n_days=42, seed=1, radius=5.0,
             start_ms=None, log=None):
    """Simulate; returns (Data sorted by time, customer profiles, terminal profiles)."""
    if start_ms is None:
        start_ms = parse_start(DEFAULT_START)
    root = np.random.SeedSequence(seed)
    ss_cust, ss_term, ss_tx, ss_s2, ss_s3, ss_meta = root.spawn(6)

    # 1. customer profiles
    rng = np.random.default_rng(ss_cust)
    cust_xy = rng.uniform(0, 100, size=(n_customers, 2))
    mean_amount = rng.uniform(5, 100, size=n_customers)
    std_amount = mean_amount / 2
    mean_nb_tx = rng.uniform(0, 4, size=n_customers)

    # 2. terminal profiles (+ riskflow's terminal type, merchant, MCC, country)
    rng = np.random.default_rng(ss_term)
    term_xy = rng.uniform(0, 100, size=(n_terminals, 2))
    rng = np.random.default_rng(ss_meta)
    term_type = rng.choice(len(TERMINAL_TYPES), size=n_terminals, p=TERMINAL_TYPE_P)
    term_mcc = np.where(term_type == 0, rng.choice(POS_MCCS, size=n_terminals),
                        np.where(term_type == 1, rng.choice(ECOM_MCCS, size=n_terminals),
                                 ATM_MCC))
    term_merchant = rng.integers(0, max(1, n_terminals // 3), size=n_terminals)
    foreign = rng.random(n_terminals) < np.where(term_type == 1, 0.30, 0.03)
    term_country = np.where(foreign, rng.integers(1, len(FOREIGN) + 1, size=n_terminals), 0)

    # 3. terminals within radius
    cust_terms = _customer_terminals(cust_xy, term_xy, radius)

    # 4. transactions, customer by customer (each with its own stream: adding customers does
    # not change the earlier ones)
    cust_streams = ss_tx.spawn(n_customers)
    cols = {"cust": [], "day": [], "secs": [], "amount": [], "term": []}
    for c in range(n_customers):
        terms = cust_terms[c]
        r = np.random.default_rng(cust_streams[c])
        nb = r.poisson(mean_nb_tx[c], size=n_days)
        total = int(nb.sum())
        if total == 0 or len(terms) == 0:
            continue
        day = np.repeat(np.arange(n_days), nb)
        secs = r.normal(86400 / 2, 20000, size=total).astype(np.int64)  # int(), toward 0
        keep = (secs > 0) & (secs < 86400)
        amt = r.normal(mean_amount[c], std_amount[c], size=total)
        neg = amt < 0
        amt[neg] = r.uniform(0, mean_amount[c] * 2, size=int(neg.sum()))
        term = terms[r.integers(0, len(terms), size=total)]
        day, secs, amt, term = day[keep], secs[keep], amt[keep], term[keep]
        cols["cust"].append(np.full(len(day), c))
        cols["day"].append(day)
        cols["secs"].append(secs)
        cols["amount"].append(amt)
        cols["term"].append(term)
    cust = np.concatenate(cols["cust"])
    day = np.concatenate(cols["day"])
    secs = np.concatenate(cols["secs"])
    amount_minor = np.maximum(np.rint(np.concatenate(cols["amount"]) * 100), 1).astype(np.int64)
    term = np.concatenate(cols["term"])

    # Time order (ties: customer, then generation order): the transaction index used below.
    time_ms = start_ms + day.astype(np.int64) * DAY_MS + secs * 1000
    order = np.lexsort((np.arange(len(time_ms)), cust, time_ms))
    cust, day, secs, amount_minor, term, time_ms = (
        a[order] for a in (cust, day, secs, amount_minor, term, time_ms))
    n = len(time_ms)
    fraud = np.zeros(n, dtype=np.int8)
    scenario = np.zeros(n, dtype=np.int8)

    # 5. fraud scenarios
    # (1) amount > 220
    s1 = amount_minor > 22000
    fraud[s1] = 1
    scenario[s1] = 1
    # (2) 2 terminals a day, all their transactions for 28 days
    rng = np.random.default_rng(ss_s2)
    compromised_terminals = []
    for d in range(n_days):
        ts = rng.choice(n_terminals, size=2, replace=False)
        compromised_terminals.append(ts)
        m = (day >= d) & (day < d + 28) & np.isin(term, ts)
        fraud[m] = 1
        scenario[m] = 2
    # (3) 3 customers a day, 1/3 of their transactions for 14 days: amount x 5
    rng = np.random.default_rng(ss_s3)
    by_cust_start = np.searchsorted(np.sort(cust), np.arange(n_customers + 1))
    idx_by_cust = np.argsort(cust, kind="stable")  # per customer, in time order
    compromised_customers = []
    for d in range(n_days):
        cs = rng.choice(n_customers, size=3, replace=False)
        compromised_customers.append(cs)
        cand = np.concatenate([idx_by_cust[by_cust_start[c]:by_cust_start[c + 1]] for c in cs])
        cand = np.sort(cand[(day[cand] >= d) & (day[cand] < d + 14)])
        k = len(cand) // 3
        if k == 0:
            continue
        pick = rng.choice(cand, size=k, replace=False)
        amount_minor[pick] *= 5
        fraud[pick] = 1
        scenario[pick] = 3

    data = Data(time_ms=time_ms, day=day, cust=cust, term=term, amount_minor=amount_minor,
                fraud=fraud, scenario=scenario, term_type=term_type[term],
                mcc=term_mcc[term], merchant=term_merchant[term],
                country=term_country[term])
    customers = {"xy": cust_xy, "mean_amount": mean_amount, "std_amount": std_amount,
                 "mean_nb_tx_per_day": mean_nb_tx, "terminals": cust_terms}
    terminals = {"xy": term_xy, "type": term_type, "mcc": term_mcc,
                 "merchant": term_merchant, "country": term_country,
                 "compromised_by_day": compromised_terminals,
                 "compromised_customers_by_day": compromised_customers}
    if log:
        log("simulated %d transactions (%d customers, %d terminals, %d days), fraud %.4f"
            % (n, n_customers, n_terminals, n_days, fraud.mean() if n else 0.0))
    return data, customers, terminals


def card_tokens(n_customers, seed):
    """A stable, opaque card token per customer (never a PAN)."""
    return ["tok_" + hashlib.sha256(b"riskflow-sim:%d:%d" % (seed, c)).hexdigest()[:24]
            for c in range(n_customers)]


def event_id(seed, i):
    """The event_id of the simulation's i-th payment (time order, 0-based)."""
    return "E%d-%09d" % (seed, i)


def iter_payments(data, n_customers, seed):
    """Payment dicts (schemas/payment.avsc fields + fraud, fraud_scenario), in time order."""
    tokens = card_tokens(n_customers, seed)
    countries = ("FR",) + FOREIGN
    for i in range(len(data)):
        ttype = int(data.term_type[i])
        yield {
            "event_id": event_id(seed, i),
            "customer_id": "C%06d" % int(data.cust[i]),
            "card_token": tokens[int(data.cust[i])],
            "merchant_id": "M%06d" % int(data.merchant[i]),
            "terminal_id": "T%06d" % int(data.term[i]),
            "mcc": int(data.mcc[i]),
            "amount_minor": int(data.amount_minor[i]),
            "currency": "EUR",
            "channel": TERMINAL_TYPES[ttype],
            "country": countries[int(data.country[i])],
            "kind": "CASH_WITHDRAWAL" if ttype == 2 else "PURCHASE",
            "event_time": int(data.time_ms[i]),
            "fraud": int(data.fraud[i]),
            "fraud_scenario": int(data.scenario[i]),
        }


LABEL_SOURCES = ("CHARGEBACK", "CONFIRMED", "CLEARED", "INVESTIGATION")
# Entropy of the CLEARED draw's own random stream (not one of simulate()'s streams).
_CLEARED_STREAM = 0x434C4541


def label_rows(data, seed, label_delay_ms=7 * DAY_MS, cleared_fraction=0.0,
               cleared_delay_ms=DAY_MS):
    """The labels as arrays, sorted by (label_time, payment index): (payment index,
    label_time ms, is_fraud bool, source index into LABEL_SOURCES)."""
    if not 0.0 <= cleared_fraction <= 1.0:
        raise ValueError("cleared_fraction must be in [0, 1]")
    if label_delay_ms < 0 or cleared_delay_ms < 0:
        raise ValueError("label delays must be >= 0")
    fraud_idx = np.flatnonzero(data.fraud == 1)
    idx = [fraud_idx]
    t = [data.time_ms[fraud_idx] + int(label_delay_ms)]
    is_fraud = [np.ones(len(fraud_idx), dtype=bool)]
    src = [np.full(len(fraud_idx), LABEL_SOURCES.index("CHARGEBACK"), dtype=np.int8)]
    if cleared_fraction > 0.0:
        genuine = np.flatnonzero(data.fraud == 0)
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), _CLEARED_STREAM]))
        cleared = genuine[rng.random(len(genuine)) < cleared_fraction]
        idx.append(cleared)
        t.append(data.time_ms[cleared] + int(cleared_delay_ms))
        is_fraud.append(np.zeros(len(cleared), dtype=bool))
        src.append(np.full(len(cleared), LABEL_SOURCES.index("CLEARED"), dtype=np.int8))
    idx, t, is_fraud, src = (np.concatenate(a) for a in (idx, t, is_fraud, src))
    order = np.lexsort((idx, t))
    return idx[order], t[order], is_fraud[order], src[order]


def iter_labels(data, n_customers, seed, label_delay_ms=7 * DAY_MS, cleared_fraction=0.0,
                cleared_delay_ms=DAY_MS):
    """FraudLabel dicts (schemas/fraud_label.avsc), sorted by label_time: a CHARGEBACK
    label_delay_ms after every fraudulent payment, a CLEARED label cleared_delay_ms after a
    random cleared_fraction of the genuine ones (deterministic for a seed)."""
    tokens = card_tokens(n_customers, seed)
    idx, t, is_fraud, src = label_rows(data, seed, label_delay_ms, cleared_fraction,
                                       cleared_delay_ms)
    for i, lt, f, s in zip(idx.tolist(), t.tolist(), is_fraud.tolist(), src.tolist()):
        c = int(data.cust[i])
        yield {
            "label_time": int(lt),
            "payment_id": event_id(seed, i),
            "payment_time": int(data.time_ms[i]),
            "customer_id": "C%06d" % c,
            "card_token": tokens[c],
            "terminal_id": "T%06d" % int(data.term[i]),
            "is_fraud": bool(f),
            "source": LABEL_SOURCES[s],
        }


def write_jsonl(path, payments):
    n = 0
    with open(path, "w", encoding="utf-8") as f:
        for p in payments:
            f.write(json.dumps(p, separators=(",", ":")))
            f.write("\n")
            n += 1
    return n


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--customers", type=int, default=5000)
    ap.add_argument("--terminals", type=int, default=10000)
    ap.add_argument("--days", type=int, default=42)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--radius", type=float, default=5.0)
    ap.add_argument("--start", default=DEFAULT_START, help="day 0, UTC (%(default)s)")
    ap.add_argument("--out", help="payments .jsonl ('-' for stdout)")
    ap.add_argument("--labels-out", help="also write the labels stream (FraudLabel) to this "
                    ".jsonl ('-' for stdout), sorted by label_time")
    ap.add_argument("--label-delay-days", type=float, default=7.0,
                    help="a fraud's CHARGEBACK label comes this long after it (%(default)s)")
    ap.add_argument("--cleared-fraction", type=float, default=0.0,
                    help="fraction of genuine payments given a CLEARED label (%(default)s)")
    ap.add_argument("--cleared-delay-days", type=float, default=1.0,
                    help="a CLEARED label comes this long after its payment (%(default)s)")
    a = ap.parse_args(argv)
    if a.customers < 3 or a.terminals < 2 or a.days < 1:
        ap.error("need at least 3 customers, 2 terminals and 1 day")
    if not a.out and not a.labels_out:
        ap.error("give --out and/or --labels-out")
    if a.out == "-" and a.labels_out == "-":
        ap.error("only one of --out and --labels-out can be stdout")
    if not 0.0 <= a.cleared_fraction <= 1.0:
        ap.error("--cleared-fraction must be in [0, 1]")
    if a.label_delay_days < 0 or a.cleared_delay_days < 0:
        ap.error("label delays must be >= 0")
    t0 = time.time()

    def log(msg):
        print("simulate_fraud: " + msg, file=sys.stderr)

    data, _, _ = simulate(a.customers, a.terminals, a.days, a.seed, a.radius,
                          parse_start(a.start), log)
    streams = []
    if a.out:
        streams.append(("payments", a.out, iter_payments(data, a.customers, a.seed)))
    if a.labels_out:
        streams.append(("labels", a.labels_out, iter_labels(
            data, a.customers, a.seed, int(round(a.label_delay_days * DAY_MS)),
            a.cleared_fraction, int(round(a.cleared_delay_days * DAY_MS)))))
    for what, path, rows in streams:
        if path == "-":
            n = 0
            for p in rows:
                sys.stdout.write(json.dumps(p, separators=(",", ":")) + "\n")
                n += 1
        else:
            n = write_jsonl(path, rows)
        log("wrote %d %s to %s in %.1f s" % (n, what, path, time.time() - t0))
    return 0


if __name__ == "__main__":
    sys.exit(main())
