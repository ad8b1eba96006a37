#!/usr/bin/env python3
"""handbook_fraud — the Fraud Detection Handbook's features, protocol and card metric, in numpy.

From Le Borgne et al., "Reproducible Machine Learning for Credit Card Fraud Detection —
Practical Handbook" (the book's shared_functions.py), re-implemented without pandas:

- handbook_features(): the baseline feature transformation of chapter 3.4 (15 features,
  FEATURE_NAMES, in the book's input_features order). The book computes the windows with pandas
  time-based rolling windows; here each entity's transactions are sorted by (time, index) and
  the window bounds found with searchsorted on the timestamps — the same semantics:
    * customer, window w: the transactions of the customer in (t - w, t], the current one
      included, and of those at exactly t only the ones up to the current one (a pandas rolling
      window ends at the current row): CUSTOMER_ID_NB_TX_{w}DAY_WINDOW = their number,
      CUSTOMER_ID_AVG_AMOUNT_{w}DAY_WINDOW = their mean amount;
    * terminal, delay d = 7 days, window w: the transactions of the terminal in
      (t - d - w, t - d] (the book: rolling(d + w) minus rolling(d));
      TERMINAL_ID_NB_TX_{w}DAY_WINDOW = their number, TERMINAL_ID_RISK_{w}DAY_WINDOW = their
      number of frauds / that number, 0 when there are none (the book's fillna(0));
    * TX_DURING_WEEKEND = the UTC date's weekday is Saturday or Sunday; TX_DURING_NIGHT =
      UTC hour <= 6 (the book's `tx_datetime.hour <= 6`).
  Sums of amounts are exact (integer cents), so the means are the correctly rounded quotients.
- protocol_masks(): the train / delay / test split of chapter 5 (get_train_test_set) with the
  removal, from each test day, of the customers known to be compromised by then.
- card_precision_at_k(): the book's Card Precision@k (card_precision_top_k), and
  card_precision_ceiling(): the same metric for a perfect scorer.
- test_week_starts(): the training-week start days of successive protocol windows
  (prequential, one week apart, as the book's model-selection folds).

numpy + standard library only (the repo's .venv runs the tests of this file).
"""

import numpy as np

DAY_MS = 86400000
HOUR_MS = 3600000
CUSTOMER_WINDOWS = (1, 7, 30)
TERMINAL_WINDOWS = (1, 7, 30)
TERMINAL_DELAY_DAYS = 7

FEATURE_NAMES = (
    ["TX_AMOUNT", "TX_DURING_WEEKEND", "TX_DURING_NIGHT"]
    + [n for w in CUSTOMER_WINDOWS for n in ("CUSTOMER_ID_NB_TX_%dDAY_WINDOW" % w,
                                              "CUSTOMER_ID_AVG_AMOUNT_%dDAY_WINDOW" % w)]
    + [n for w in TERMINAL_WINDOWS for n in ("TERMINAL_ID_NB_TX_%dDAY_WINDOW" % w,
                                              "TERMINAL_ID_RISK_%dDAY_WINDOW" % w)]
)

# The book's model-selection test folds train from 2018-07-25 to 2018-08-15, its data starting
# 2018-04-01: training weeks starting on days 115, 122, 129, 136.
HANDBOOK_FIRST_TRAIN_DAY = 115


def _sorted_keys(entity, time_ms, span_back_ms):
    """Order of the rows by (entity, time, index) and a strictly comparable int64 key per row
    such that key - x (0 <= x <= span_back_ms) stays above every key of a lower entity."""
    entity = np.asarray(entity, dtype=np.int64)
    time_ms = np.asarray(time_ms, dtype=np.int64)
    n = len(time_ms)
    if n == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    if entity.min() < 0:
        raise ValueError("entity codes must be >= 0")
    order = np.lexsort((np.arange(n), time_ms, entity))
    t0 = int(time_ms.min())
    rng = int(time_ms.max()) - t0
    span = rng + span_back_ms + 1
    if (int(entity.max()) + 1) * span >= 2 ** 62:
        raise ValueError("time range x entity count too large for int64 keys")
    key = entity[order] * span + (time_ms[order] - t0) + span_back_ms
    return order, key


def customer_window_features(time_ms, customer, amount_minor, windows_days=CUSTOMER_WINDOWS):
    """{w: (nb_tx, avg_amount)} per row (avg in major units: cents / 100)."""
    amount_minor = np.asarray(amount_minor, dtype=np.int64)
    n = len(amount_minor)
    wmax = max(windows_days) * DAY_MS
    order, key = _sorted_keys(customer, time_ms, wmax)
    csum = np.concatenate([[0], np.cumsum(amount_minor[order])])
    pos = np.arange(n)
    out = {}
    for w in windows_days:
        start = np.searchsorted(key, key - w * DAY_MS, side="right")
        nb = pos - start + 1
        total = csum[pos + 1] - csum[start]
        nb_row = np.empty(n, dtype=np.float64)
        avg_row = np.empty(n, dtype=np.float64)
        nb_row[order] = nb
        avg_row[order] = total / nb / 100.0
        out[w] = (nb_row, avg_row)
    return out


def terminal_window_features(time_ms, terminal, fraud, windows_days=TERMINAL_WINDOWS,
                             delay_days=TERMINAL_DELAY_DAYS):
    """{w: (nb_tx, risk)} per row: the terminal's transactions in (t - d - w, t - d]."""
    fraud = np.asarray(fraud, dtype=np.int64)
    n = len(fraud)
    d = delay_days * DAY_MS
    order, key = _sorted_keys(terminal, time_ms, d + max(windows_days) * DAY_MS)
    cf = np.concatenate([[0], np.cumsum(fraud[order])])
    hi = np.searchsorted(key, key - d, side="right")
    out = {}
    for w in windows_days:
        lo = np.searchsorted(key, key - d - w * DAY_MS, side="right")
        nb = hi - lo
        nf = cf[hi] - cf[lo]
        risk = np.divide(nf, nb, out=np.zeros(n, dtype=np.float64), where=nb > 0)
        nb_row = np.empty(n, dtype=np.float64)
        risk_row = np.empty(n, dtype=np.float64)
        nb_row[order] = nb
        risk_row[order] = risk
        out[w] = (nb_row, risk_row)
    return out


def weekend_night(time_ms):
    """(TX_DURING_WEEKEND, TX_DURING_NIGHT) from Unix ms, UTC."""
    time_ms = np.asarray(time_ms, dtype=np.int64)
    days = time_ms // DAY_MS
    weekday = (days + 3) % 7  # 1970-01-01 was a Thursday; Monday = 0
    hour = (time_ms // HOUR_MS) % 24
    return (weekday >= 5).astype(np.float64), (hour <= 6).astype(np.float64)


def handbook_features(time_ms, customer, terminal, amount_minor, fraud):
    """The 15 baseline features of the book (FEATURE_NAMES order), an (n, 15) float64 array.

    time_ms: Unix ms; customer, terminal: int codes >= 0; amount_minor: int cents; fraud: 0/1
    (the terminal risk reads the labels of transactions at least 7 days old)."""
    amount_minor = np.asarray(amount_minor, dtype=np.int64)
    cols = [amount_minor / 100.0]
    cols.extend(weekend_night(time_ms))
    cw = customer_window_features(time_ms, customer, amount_minor)
    for w in CUSTOMER_WINDOWS:
        cols.extend(cw[w])
    tw = terminal_window_features(time_ms, terminal, fraud)
    for w in TERMINAL_WINDOWS:
        cols.extend(tw[w])
    return np.column_stack(cols)


def test_week_starts(n_days, n_weeks, train_days=7, delay_days=7, test_days=7, step=7,
                     anchor=HANDBOOK_FIRST_TRAIN_DAY, min_start=None):
    """Training-week start days of n_weeks successive protocol windows, step days apart.

    The first starts on the book's day 115 when everything fits in n_days, else as late as
    fits. min_start (default 30 + 7 = 37: the 30-day terminal window behind its 7-day delay)
    is the first day whose windows are full; an earlier start is an error."""
    if min_start is None:
        min_start = max(max(CUSTOMER_WINDOWS), max(TERMINAL_WINDOWS) + TERMINAL_DELAY_DAYS)
    last = n_days - (train_days + delay_days + test_days)
    first = min(anchor, last - step * (n_weeks - 1))
    if n_weeks < 1 or first < min_start:
        raise ValueError("%d days cannot hold %d protocol windows (%d+%d+%d days, %d apart) "
                         "after %d days of window warm-up" % (n_days, n_weeks, train_days,
                                                              delay_days, test_days, step,
                                                              min_start))
    return [first + step * k for k in range(n_weeks)]


def protocol_masks(day, y, customer, train_start, train_days=7, delay_days=7, test_days=7):
    """The book's get_train_test_set: (train, test_all, test_eval) boolean masks.

    train: days [train_start, train_start + train_days); test_all: the test_days days after
    the delay; test_eval: test_all without, on test day i (0-based), the customers known to be
    compromised: a fraud in the training period, or on day train_start + train_days + i - 1
    or before (the book's code adds, at test day i, the frauds of day
    start + delta_train + i - 1: the last training day, then the delay days one by one; so
    on a test day t the frauds up to t - delay - 1 are known)."""
    day = np.asarray(day)
    y = np.asarray(y)
    customer = np.asarray(customer, dtype=np.int64)
    n_cust = int(customer.max()) + 1 if len(customer) else 0
    train = (day >= train_start) & (day < train_start + train_days)
    test_start = train_start + train_days + delay_days
    test_all = (day >= test_start) & (day < test_start + test_days)
    known = np.zeros(n_cust, dtype=bool)
    known[customer[train & (y == 1)]] = True
    test_eval = np.zeros(len(day), dtype=bool)
    for i in range(test_days):
        known_day = train_start + train_days + i - 1
        known[customer[(day == known_day) & (y == 1)]] = True
        m = day == test_start + i
        test_eval |= m & ~known[customer]
    return train, test_all, test_eval


def card_precision_at_k(day, customer, y, score, k=100):
    """The book's Card Precision@k (card_precision_top_k with remove_detected_compromised_cards):
    per day (ascending), the cards not detected on an earlier day, each with its maximum
    score and maximum label of the day, the k highest scores (ties: lower card code first);
    precision = the number of them with a fraud that day / k; averaged over the days.

    Returns (mean, per-day list, per-day number of compromised cards still in the running)."""
    day = np.asarray(day)
    customer = np.asarray(customer, dtype=np.int64)
    y = np.asarray(y)
    score = np.asarray(score, dtype=np.float64)
    n_cust = int(customer.max()) + 1 if len(customer) else 0
    detected = np.zeros(n_cust, dtype=bool)
    per_day, n_comp = [], []
    for d in np.unique(day):
        m = (day == d) & ~detected[customer]
        c, s, f = customer[m], score[m], y[m]
        if len(c) == 0:
            per_day.append(0.0)
            n_comp.append(0)
            continue
        uc, inv = np.unique(c, return_inverse=True)
        cmax = np.full(len(uc), -np.inf)
        np.maximum.at(cmax, inv, s)
        cfraud = np.zeros(len(uc), dtype=np.int8)
        np.maximum.at(cfraud, inv, (f == 1).astype(np.int8))
        n_comp.append(int(cfraud.sum()))
        top = np.argsort(-cmax, kind="stable")[:k]
        hits = uc[top][cfraud[top] == 1]
        per_day.append(len(hits) / k)
        detected[hits] = True
    return (float(np.mean(per_day)) if per_day else 0.0), per_day, n_comp


def card_precision_ceiling(day, customer, y, k=100):
    """Card Precision@k of a perfect scorer on the same rows: per day, min(compromised cards
    still in the running, k) / k, averaged (the rows are those the protocol keeps, so cards
    known from the 7-day-late labels are already out)."""
    y = np.asarray(y)
    return card_precision_at_k(day, customer, y, (y == 1).astype(np.float64), k)
