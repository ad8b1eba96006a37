#!/usr/bin/env python3
"""Checks of handbook_fraud.py (numpy only): the window features against a brute-force loop on
a small simulated sample (times rounded to the hour, so that ties and transactions exactly on
a window's edge are common), the protocol's removal of known compromised cards and the Card
Precision@k on hand-made cases, the protocol's week starts, and simulate_fraud's labels.

    .venv/bin/python -m pytest -q tools/train/test_handbook_features.py
    python3 tools/train/test_handbook_features.py          # without pytest
"""

import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import handbook_fraud as hb  # noqa: E402
import simulate_fraud as sim  # noqa: E402

DAY = hb.DAY_MS


def _sample(seed=5, hour_round=True):
    data, _, _ = sim.simulate(60, 150, 50, seed)
    t = data.time_ms.copy()
    if hour_round:
        t = t // 3600000 * 3600000  # non-decreasing still: index order = time order
    return data, t


def _brute_customer(t, cust, amount_minor, w):
    """pandas' rolling('wd') per customer: rows j of the customer with t_j in (t_i - w, t_i],
    of those at t_i only j <= i (the window ends at the current row)."""
    n = len(t)
    nb = np.zeros(n)
    avg = np.zeros(n)
    rows = {}
    for i in range(n):
        rows.setdefault(int(cust[i]), []).append(i)
    for i in range(n):
        cnt, tot = 0, 0
        for j in rows[int(cust[i])]:
            if t[j] > t[i] - w * DAY and (t[j] < t[i] or (t[j] == t[i] and j <= i)):
                cnt += 1
                tot += int(amount_minor[j])
        nb[i] = cnt
        avg[i] = tot / cnt / 100.0
    return nb, avg


def _brute_terminal(t, term, fraud, w, d=7):
    """rolling(d + w) - rolling(d) per terminal: rows j with t_j in (t_i - d - w, t_i - d]."""
    n = len(t)
    nb = np.zeros(n)
    risk = np.zeros(n)
    rows = {}
    for i in range(n):
        rows.setdefault(int(term[i]), []).append(i)
    for i in range(n):
        cnt, nf = 0, 0
        for j in rows[int(term[i])]:
            if t[i] - (d + w) * DAY < t[j] <= t[i] - d * DAY:
                cnt += 1
                nf += int(fraud[j])
        nb[i] = cnt
        risk[i] = nf / cnt if cnt else 0.0
    return nb, risk


def test_window_features_match_brute_force():
    for hour_round in (True, False):
        data, t = _sample(hour_round=hour_round)
        X = hb.handbook_features(t, data.cust, data.term, data.amount_minor, data.fraud)
        assert X.shape == (len(t), len(hb.FEATURE_NAMES))
        col = {n: X[:, k] for k, n in enumerate(hb.FEATURE_NAMES)}
        assert np.array_equal(col["TX_AMOUNT"], data.amount_minor / 100.0)
        for w in hb.CUSTOMER_WINDOWS:
            nb, avg = _brute_customer(t, data.cust, data.amount_minor, w)
            assert np.array_equal(col["CUSTOMER_ID_NB_TX_%dDAY_WINDOW" % w], nb), w
            assert np.array_equal(col["CUSTOMER_ID_AVG_AMOUNT_%dDAY_WINDOW" % w], avg), w
        for w in hb.TERMINAL_WINDOWS:
            nb, risk = _brute_terminal(t, data.term, data.fraud, w)
            assert np.array_equal(col["TERMINAL_ID_NB_TX_%dDAY_WINDOW" % w], nb), w
            assert np.array_equal(col["TERMINAL_ID_RISK_%dDAY_WINDOW" % w], risk), w
        if hour_round:
            # the sample does exercise ties and exact edges
            same = (np.diff(t) == 0) & (np.diff(data.cust) == 0)
            assert same.any()
            assert (col["TERMINAL_ID_RISK_1DAY_WINDOW"] > 0).any()


def test_window_edges_by_hand():
    # one customer, one terminal; times in hours
    h = 3600000
    t = np.array([0, 24 * h, 24 * h, 25 * h, 8 * 24 * h, 8 * 24 * h + 1, 9 * 24 * h], np.int64)
    cust = np.zeros(len(t), np.int64)
    term = np.zeros(len(t), np.int64)
    amt = np.array([100, 200, 300, 400, 500, 600, 700], np.int64)
    fraud = np.array([1, 0, 1, 0, 0, 0, 0])
    cw = hb.customer_window_features(t, cust, amt, (1,))
    # row 1 at exactly t0 + 1 day: row 0 (t - 1 day, excluded: the window is (t - w, t])
    assert cw[1][0].tolist() == [1, 1, 2, 3, 1, 2, 2]
    assert cw[1][1][2] == 2.5 and cw[1][1][3] == 3.0
    tw = hb.terminal_window_features(t, term, fraud, (1,))
    # row 4 at day 8: (day 0, day 1] holds rows 1, 2 (row 0 at day 0 excluded), 1 fraud
    # row 5 at day 8 + 1 ms: (day 0 + 1 ms, day 1 + 1 ms] -> rows 1, 2
    # row 6 at day 9: (day 1, day 2] -> row 3
    assert tw[1][0].tolist() == [0, 0, 0, 0, 2, 2, 1]
    assert tw[1][1].tolist() == [0, 0, 0, 0, 0.5, 0.5, 0.0]


def test_weekend_night():
    # 2026-04-04 is a Saturday; 06:59 is night, 07:00 is not
    t0 = sim.parse_start("2026-04-04T06:59:59Z")
    we, ni = hb.weekend_night(np.array([t0, t0 + 1000, t0 - 2 * DAY]))
    assert we.tolist() == [1, 1, 0] and ni.tolist() == [1, 0, 1]


def test_known_compromised_by_hand():
    # customers 0..6, one payment a day each for 21 days; train days 0-6, delay 7-13, test 14-20
    days = np.repeat(np.arange(21), 7)
    cust = np.tile(np.arange(7), 21)
    y = np.zeros(len(days), np.int8)

    def fraud(c, d):
        y[(cust == c) & (days == d)] = 1

    fraud(0, 3)    # training week: out of every test day
    fraud(1, 6)    # last training day: out of every test day
    fraud(2, 7)    # first delay day: known from test day 15 (i=1) on
    fraud(5, 10)   # delay day 10: known from test day 18 (i=4) on
    fraud(3, 13)   # last delay day: known at test day 21, after the test week: kept
    fraud(4, 15)   # a test-day fraud: never known within the week: kept
    train, test_all, test_eval = hb.protocol_masks(days, y, cust, 0, 7, 7, 7)
    assert train.sum() == 49 and test_all.sum() == 49
    kept = {d: sorted(cust[test_eval & (days == d)].tolist()) for d in range(14, 21)}
    assert kept[14] == [2, 3, 4, 5, 6]
    assert kept[15] == kept[16] == kept[17] == [3, 4, 5, 6]
    assert kept[18] == kept[19] == kept[20] == [3, 4, 6]


def test_card_precision_by_hand():
    A, B, C, D, E = range(5)
    rows = [  # day, card, score, fraud
        (0, A, .9, 1), (0, B, .8, 0), (0, C, .7, 1), (0, D, .1, 1),
        (1, A, .95, 1), (1, C, .6, 1), (1, B, .2, 0), (1, B, .99, 0), (1, D, .3, 1),
        (2, C, .9, 1), (2, D, .8, 1), (2, E, .8, 0), (2, E, .05, 1), (2, B, .1, 0),
    ]
    day, card, score, y = (np.array(c) for c in zip(*rows))
    # day 0: top 2 = A, B -> 1 hit (A); day 1: A out, top 2 = B (.99), C -> 1 hit (C);
    # day 2: C out, top 2 = D, E (E: max score .8, a fraud among its payments) -> 2 hits
    mean, per_day, n_comp = hb.card_precision_at_k(day, card, y, score, k=2)
    assert per_day == [0.5, 0.5, 1.0] and abs(mean - 2 / 3) < 1e-15
    assert n_comp == [3, 2, 2]
    # perfect scorer: day 0 frauds A, C, D -> 2 found (A, C: ties by card); day 1: D -> 1;
    # day 2: E (D found on day 1) -> 1
    mean, per_day, n_comp = hb.card_precision_ceiling(day, card, y, k=2)
    assert per_day == [1.0, 0.5, 0.5] and n_comp == [3, 1, 1]
    # k larger than the cards of a day: every card is "in the top k", precision counts
    # against k
    mean, per_day, _ = hb.card_precision_at_k(day, card, y, score, k=100)
    assert per_day == [0.03, 0.0, 0.01]  # day 1: A, C, D found on day 0, B genuine


def test_test_week_starts():
    assert hb.test_week_starts(183, 4) == [115, 122, 129, 136]
    assert hb.test_week_starts(183, 7) == [115, 122, 129, 136, 143, 150, 157]
    assert hb.test_week_starts(183, 8) == [113, 120, 127, 134, 141, 148, 155, 162]
    assert hb.test_week_starts(90, 2) == [62, 69]
    try:
        hb.test_week_starts(60, 2)
    except ValueError:
        pass
    else:
        raise AssertionError("60 days cannot hold two windows after 37 days of warm-up")


def test_labels_stream():
    data, _, _ = sim.simulate(80, 200, 20, 4)
    labels = list(sim.iter_labels(data, 80, 4))
    assert len(labels) == int(data.fraud.sum())
    assert all(lab["source"] == "CHARGEBACK" and lab["is_fraud"] for lab in labels)
    assert all(lab["label_time"] == lab["payment_time"] + 7 * DAY for lab in labels)
    ts = [lab["label_time"] for lab in labels]
    assert ts == sorted(ts)
    pay = {p["event_id"]: p for p in sim.iter_payments(data, 80, 4)}
    for lab in labels:
        p = pay[lab["payment_id"]]
        assert (p["event_time"], p["customer_id"], p["card_token"], p["terminal_id"], p["fraud"]
                ) == (lab["payment_time"], lab["customer_id"], lab["card_token"],
                      lab["terminal_id"], 1)
    more = list(sim.iter_labels(data, 80, 4, cleared_fraction=0.05))
    assert more == list(sim.iter_labels(data, 80, 4, cleared_fraction=0.05))  # deterministic
    cleared = [lab for lab in more if lab["source"] == "CLEARED"]
    n_gen = int((data.fraud == 0).sum())
    assert 0.03 * n_gen < len(cleared) < 0.07 * n_gen
    assert all(not lab["is_fraud"] and pay[lab["payment_id"]]["fraud"] == 0
               and lab["label_time"] == lab["payment_time"] + DAY for lab in cleared)
    assert [lab for lab in more if lab["source"] == "CHARGEBACK"] == labels
    ts = [(lab["label_time"], lab["payment_id"]) for lab in more]
    assert ts == sorted(ts)


if __name__ == "__main__":
    for name, fn in sorted(globals().items()):
        if name.startswith("test_") and callable(fn):
            fn()
            print("ok", name)
