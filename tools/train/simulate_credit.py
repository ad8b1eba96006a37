#!/usr/bin/env python3
"""simulate_credit — customers with a revolving credit line, their payments, and a default label
drawn from a known PD function of the features riskflowd serves.

The world (one numpy stream per customer: adding customers does not change the earlier ones):

  * A customer has a current account (income in, spending out: riskflow.Payment records) and a
    revolving credit line (riskflow.CreditEvent records). History starts 6-15 calendar months
    before the observation date (--obs-date, 2026-01-01T00:00Z by default); nothing after it
    is generated.
  * Profile: monthly income (log-normal, median ~2 300 EUR), salaried (one TRANSFER_IN on a
    payday, 80 %) or irregular (a few transfers of varying size); a credit limit of 0.5-2.5
    months of income; how much of the income goes on purchases; how often cash is withdrawn;
    transactor (repays the statement in full) or revolver (repays a fraction); payment
    discipline; fragility (the monthly chance of a financial shock); rent (TRANSFER_OUT) for
    most; an occasional REFUND.
  * Spending: 3-9 purchases a month sharing the month's budget; cash withdrawals (ATM); now
    and then a big-ticket purchase paid for by a DRAWDOWN on the line.
  * Shocks: a stressed customer (job loss, illness: 1-12 months) loses 25-85 % of the income,
    keeps most of the spending, withdraws more cash, and so runs the current account into the
    red: the credit line is drawn down (DRAWDOWN) to cover it, utilisation climbs, and a
    repayment that the current account cannot cover (or that a stressed or careless customer
    does not make) is missed (MISSED_PAYMENT; arrears and days past due grow until a
    repayment clears them).
  * The line: a monthly STATEMENT (interest at 19.9 % APR, minimum due = max(25, 3 %) plus
    arrears), the repayment decision on the due date 21 days later (REPAYMENT or
    MISSED_PAYMENT; a late fee of 25), catch-up repayments when income arrives, the line
    frozen and the limit cut to the balance at 60 days past due (LIMIT_CHANGE), and a limit
    review every 6 months (LIMIT_CHANGE up for clean accounts).

The label: a customer's credit features at the observation date, x (the snapshot after the
customer's last event before it, evaluated by the feature engine exactly as riskflowd would),
give the true 12-month PD = sigmoid(g(x)), g below (`true_log_odds`): additive, monotone and
non-linear in utilisation, days past due, missed payments, time since the last missed payment,
cash withdrawals, income, spending over income and drawdowns. default ~ Bernoulli(PD), drawn
from its own seeded stream. Customers already in default at the observation date (90 days past
due or more) are not in the sample (the usual exclusion). The best AUC any model of x can have
is, in expectation, the AUC of sigmoid(g(x)) itself: the **oracle AUC**.

Records are dicts with the Avro field names (schemas/credit_event.avsc, schemas/payment.avsc),
enums as symbol strings, event_time in Unix ms, in event-time order (ties: customer, then the
customer's own order). The command line writes them as JSON lines
{"type": "riskflow.CreditEvent"|"riskflow.Payment", "topic": ..., "record": {...}} and, with
--labels-out, the snapshot, true PD and default per customer (a CSV) — that needs the feature
engine, tools/train/riskflow_features.py. numpy + standard library.
"""

import argparse
import array
import datetime
import heapq
import json
import math
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import riskflow_scorecard as rsc  # noqa: E402  (the credit job's state bytes)

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.normpath(os.path.join(HERE, "..", ".."))

DEFAULT_OBS = "2026-01-01T00:00:00Z"
DAY_MS = 86400000
HOUR_MS = 3600000
CREDIT_TYPE = "riskflow.CreditEvent"
PAYMENT_TYPE = "riskflow.Payment"
CREDIT_TOPIC = "credit.events"
PAYMENT_TOPIC = "txn.payments"

CREDIT_KINDS = ("STATEMENT", "REPAYMENT", "MISSED_PAYMENT", "DRAWDOWN", "LIMIT_CHANGE")
PAYMENT_KINDS = ("PURCHASE", "REFUND", "CASH_WITHDRAWAL", "TRANSFER_IN", "TRANSFER_OUT",
                 "LOAN_REPAYMENT", "MISSED_PAYMENT")
CHANNELS = ("POS", "ECOM", "ATM", "MOBILE")
STATEMENT, REPAYMENT, MISSED, DRAWDOWN, LIMIT_CHANGE = range(5)
PURCHASE, REFUND, CASH, TRANSFER_IN, TRANSFER_OUT = 0, 1, 2, 3, 4
POS, ECOM, ATM, MOBILE = range(4)
PURCHASE_MCCS = (5411, 5812, 5541, 5311, 5912, 5999, 5732, 5651, 4121, 7832, 5969, 4722)
ATM_MCC = 6011
TRANSFER_MCC = 4829

APR = 0.199
LATE_FEE = 25.0
MIN_DUE_FLOOR = 25.0
MIN_DUE_RATE = 0.03
DUE_DAYS = 21
FREEZE_DPD = 60
DEFAULT_DPD = 90           # in default at the observation date: excluded from the sample
HISTORY_MONTHS = (6, 15)   # history before the observation date, calendar months, inclusive

# Internal schedule entries (heap): (time, seq, op, amount)
_OP_INCOME, _OP_PURCHASE, _OP_CASH, _OP_RENT, _OP_REFUND, _OP_STATEMENT, _OP_DUE, \
    _OP_REVIEW, _OP_BIG = range(9)


def parse_time(text):
    dt = datetime.datetime.strptime(text.replace("Z", "+0000"), "%Y-%m-%dT%H:%M:%S%z")
    return int(dt.timestamp()) * 1000


def month_starts_ms(obs_ms, n_months):
    """Start (Unix ms) of the n_months calendar months before the observation date's month
    start, oldest first, plus that month start itself (n_months + 1 values)."""
    d = datetime.datetime.fromtimestamp(obs_ms / 1000, tz=datetime.timezone.utc)
    m = np.datetime64("%04d-%02d" % (d.year, d.month), "M")
    months = np.arange(m - n_months, m + 1, dtype="datetime64[M]")
    return months.astype("datetime64[ms]").astype(np.int64)


class Events:
    """Column arrays of the simulated events, in event-time order."""

    COLS = (("t", "q"), ("cust", "i"), ("rtype", "b"), ("kind", "b"), ("amount", "q"),
            ("balance", "q"), ("limit", "q"), ("dpd", "i"), ("channel", "b"), ("mcc", "i"),
            ("merchant", "i"))

    def __init__(self, cols, n_customers, seed):
        self.__dict__.update(cols)
        self.n_customers = n_customers
        self.seed = seed

    def __len__(self):
        return len(self.t)

    def _lists(self):
        if not hasattr(self, "_py"):
            self._py = {name: getattr(self, name).tolist() for name, _ in self.COLS}
        return self._py

    def record(self, i):
        """(record type, topic, record dict) of event i."""
        L = self._lists()
        c = L["cust"][i]
        if L["rtype"][i] == 0:
            return CREDIT_TYPE, CREDIT_TOPIC, {
                "event_id": "CE%d-%09d" % (self.seed, i),
                "customer_id": "C%06d" % c,
                "account_id": "A%06d" % c,
                "kind": CREDIT_KINDS[L["kind"][i]],
                "amount_minor": L["amount"][i],
                "balance_minor": L["balance"][i],
                "credit_limit_minor": L["limit"][i],
                "days_past_due": L["dpd"][i],
                "currency": "EUR",
                "event_time": L["t"][i],
            }
        return PAYMENT_TYPE, PAYMENT_TOPIC, {
            "event_id": "P%d-%09d" % (self.seed, i),
            "customer_id": "C%06d" % c,
            "card_token": "tok_%d_%06d" % (self.seed, c),
            "merchant_id": "M%06d" % L["merchant"][i],
            "terminal_id": "T%06d" % L["merchant"][i],
            "mcc": L["mcc"][i],
            "amount_minor": L["amount"][i],
            "currency": "EUR",
            "channel": CHANNELS[L["channel"][i]],
            "country": "FR",
            "kind": PAYMENT_KINDS[L["kind"][i]],
            "event_time": L["t"][i],
        }

    def records(self):
        for i in range(len(self.t)):
            yield self.record(i)


def _draw_profiles(rng, n):
    """Per-customer profile arrays (all drawn from one stream, in a fixed order)."""
    p = {}
    p["income"] = np.clip(np.exp(rng.normal(math.log(2300.0), 0.45, n)), 700.0, 15000.0)
    p["irregular"] = rng.random(n) < 0.20
    p["payday"] = rng.integers(1, 29, n)
    p["limit"] = np.clip(np.round(p["income"] * rng.uniform(0.5, 2.5, n), -2), 500.0, 20000.0)
    p["spend_ratio"] = np.clip(rng.normal(0.62, 0.13, n), 0.25, 1.05)
    p["n_purchases"] = rng.uniform(3.0, 9.0, n)
    p["cash_rate"] = rng.gamma(0.6, 0.8, n)
    p["transactor"] = rng.random(n) < 0.35
    p["repay_frac"] = rng.uniform(0.03, 0.25, n)
    p["discipline"] = rng.random(n)
    p["fragility"] = rng.beta(0.8, 60.0, n)
    p["rent"] = np.where(rng.random(n) < 0.6, p["income"] * rng.uniform(0.2, 0.35, n), 0.0)
    p["buffer"] = p["income"] * np.exp(rng.normal(math.log(0.5), 0.8, n))
    p["balance0"] = p["limit"] * rng.beta(0.9, 2.2, n)
    p["statement_day"] = rng.integers(1, 29, n)
    p["history"] = rng.integers(HISTORY_MONTHS[0], HISTORY_MONTHS[1] + 1, n)
    p["big_rate"] = rng.uniform(0.0, 0.08, n)
    return p


def _cents(x):
    return int(round(x * 100.0))


def _simulate_customer(c, rng, prof, starts, obs_ms, out):
    """Simulate customer c, appending its events (time order) to the column arrays `out`."""
    income = float(prof["income"][c])
    n_hist = int(prof["history"][c])
    months = starts[len(starts) - 1 - n_hist:]          # n_hist month starts + obs month start
    limit = float(prof["limit"][c])
    bal = round(float(prof["balance0"][c]), 2)
    cash = float(prof["buffer"][c])                     # current account
    spend_ratio = float(prof["spend_ratio"][c])
    lam_p = float(prof["n_purchases"][c])
    cash_rate = float(prof["cash_rate"][c])
    transactor = bool(prof["transactor"][c])
    repay_frac = float(prof["repay_frac"][c])
    discipline = float(prof["discipline"][c])
    fragility = float(prof["fragility"][c])
    rent = float(prof["rent"][c])
    big_rate = float(prof["big_rate"][c])
    irregular = bool(prof["irregular"][c])
    payday = int(prof["payday"][c])
    sday = int(prof["statement_day"][c])
    merchants = rng.integers(0, 200000, 12)

    heap = []
    seq = 0

    def push(t, op, amount=0.0):
        nonlocal seq
        if t < obs_ms:
            heapq.heappush(heap, (t, seq, op, amount))
            seq += 1

    # The month plan: shocks decide income, spending and cash for the month.
    stress_left = 0
    severity = 0.0
    stressed_months = []
    for k in range(n_hist):
        m0, m1 = int(months[k]), int(months[k + 1])
        ndays = (m1 - m0) // DAY_MS
        if stress_left > 0:
            stress_left -= 1
        elif rng.random() < fragility:
            stress_left = int(min(12, 1 + rng.geometric(0.3)))
            severity = float(rng.uniform(0.25, 0.85))
        stressed = stress_left > 0
        stressed_months.append(stressed)
        inc_factor = (1.0 - severity) if stressed else 1.0
        # income
        if irregular:
            n_in = int(rng.poisson(3.0))
            if n_in > 0:
                total = income * inc_factor * float(rng.gamma(6.0, 1.0 / 6.0))
                w = rng.dirichlet(np.ones(n_in))
                days = rng.integers(0, ndays, n_in)
                for wi, d in zip(w, days):
                    push(m0 + int(d) * DAY_MS + int(rng.integers(6 * HOUR_MS, 20 * HOUR_MS)),
                         _OP_INCOME, round(total * float(wi), 2))
        else:
            d = min(payday, ndays) - 1
            amt = income * inc_factor * float(rng.normal(1.0, 0.02))
            push(m0 + d * DAY_MS + 5 * HOUR_MS + int(rng.integers(0, HOUR_MS)), _OP_INCOME,
                 round(amt, 2))
            if rng.random() < 0.08:
                push(m0 + int(rng.integers(0, ndays)) * DAY_MS + 9 * HOUR_MS, _OP_INCOME,
                     round(income * float(rng.uniform(0.05, 0.3)), 2))
        # purchases: the month's budget over a Poisson number of purchases
        budget = income * spend_ratio * float(rng.normal(1.0, 0.12)) * (0.85 if stressed else 1.0)
        n_p = max(1, int(rng.poisson(lam_p)))
        w = rng.dirichlet(np.full(n_p, 1.5))
        days = rng.integers(0, ndays, n_p)
        tod = rng.integers(8 * HOUR_MS, 22 * HOUR_MS, n_p)
        for wi, d, s in zip(w, days, tod):
            push(m0 + int(d) * DAY_MS + int(s), _OP_PURCHASE, max(1.0, round(budget * float(wi), 2)))
        # cash withdrawals: more under stress
        n_c = int(rng.poisson(cash_rate * ((1.0 + 4.0 * severity) if stressed else 1.0)))
        for _ in range(n_c):
            amt = 10.0 * max(2, int(round(float(np.exp(rng.normal(math.log(8.0), 0.6))))))
            push(m0 + int(rng.integers(0, ndays)) * DAY_MS
                 + int(rng.integers(7 * HOUR_MS, 23 * HOUR_MS)), _OP_CASH, amt)
        if rent > 0:
            push(m0 + int(rng.integers(0, 4)) * DAY_MS + 8 * HOUR_MS, _OP_RENT, round(rent, 2))
        if rng.random() < 0.15:
            push(m0 + int(rng.integers(0, ndays)) * DAY_MS + 12 * HOUR_MS, _OP_REFUND,
                 round(float(rng.uniform(5.0, 80.0)), 2))
        if rng.random() < big_rate:  # a big-ticket purchase financed from the line
            push(m0 + int(rng.integers(0, ndays)) * DAY_MS + 15 * HOUR_MS, _OP_BIG,
                 round(income * float(rng.uniform(0.2, 1.0)), -1))
        push(m0 + (min(sday, ndays) - 1) * DAY_MS + 2 * HOUR_MS, _OP_STATEMENT)
        if k % 6 == 5:
            push(m0 + 14 * DAY_MS + 3 * HOUR_MS, _OP_REVIEW)

    # Event-by-event, in time order: the current account and the credit line. An event an
    # operation causes (a drawdown covering a purchase, the purchase a drawdown pays for, a
    # catch-up repayment, a limit cut) has the operation's own time and follows it in the
    # stream (the global sort is stable), so every event's balance is the balance as of the
    # events before it.
    arrears = 0.0          # past-due amount
    past_due_since = None  # the oldest unpaid due date (ms)
    frozen = False
    last_miss_t = None
    cushion = 0.05 * income
    t_col, cust_col = out["t"], out["cust"]

    def dpd_at(t):
        return 0 if past_due_since is None else max(1, (t - past_due_since) // DAY_MS)

    def credit(t, kind, amount, dpd):
        t_col.append(t)
        cust_col.append(c)
        out["rtype"].append(0)
        out["kind"].append(kind)
        out["amount"].append(_cents(amount))
        out["balance"].append(_cents(bal))
        out["limit"].append(_cents(limit))
        out["dpd"].append(int(dpd))
        out["channel"].append(0)
        out["mcc"].append(0)
        out["merchant"].append(0)

    def payment(t, kind, amount, channel, mcc, merchant):
        t_col.append(t)
        cust_col.append(c)
        out["rtype"].append(1)
        out["kind"].append(kind)
        out["amount"].append(max(1, _cents(amount)))
        out["balance"].append(0)
        out["limit"].append(0)
        out["dpd"].append(0)
        out["channel"].append(channel)
        out["mcc"].append(mcc)
        out["merchant"].append(merchant)

    def month_of(t):
        return int(np.searchsorted(months, t, side="right")) - 1

    def draw_if_short(t):
        """Cover a current account in the red from the line (if it is open)."""
        nonlocal bal, cash
        if cash >= 0 or frozen:
            return
        avail = limit - bal
        if avail < 50:
            return
        amt = min(avail, math.ceil((cushion - cash) / 50.0) * 50.0)
        amt = math.floor(amt / 10.0) * 10.0
        if amt <= 0:
            return
        bal = round(bal + amt, 2)
        cash += amt
        credit(t, DRAWDOWN, amt, dpd_at(t))

    while heap:
        t, _, op, amt = heapq.heappop(heap)
        k = month_of(t)
        stressed = stressed_months[k] if 0 <= k < len(stressed_months) else False
        if op == _OP_INCOME:
            payment(t, TRANSFER_IN, amt, MOBILE, TRANSFER_MCC, 0)
            cash += amt
            if arrears > 0 and cash - arrears >= cushion and rng.random() < 0.7:
                pay = arrears
                bal = round(bal - pay, 2)
                cash -= pay
                arrears = 0.0
                past_due_since = None
                credit(t, REPAYMENT, pay, 0)
        elif op == _OP_PURCHASE:
            ch = ECOM if rng.random() < 0.25 else (MOBILE if rng.random() < 0.1 else POS)
            j = int(rng.integers(0, len(merchants)))
            payment(t, PURCHASE, amt, ch, PURCHASE_MCCS[j % len(PURCHASE_MCCS)],
                    int(merchants[j]))
            cash -= amt
            draw_if_short(t)
        elif op == _OP_CASH:
            payment(t, CASH, amt, ATM, ATM_MCC, 900000 + c % 1000)
            cash -= amt
            draw_if_short(t)
        elif op == _OP_RENT:
            payment(t, TRANSFER_OUT, amt, MOBILE, TRANSFER_MCC, 0)
            cash -= amt
            draw_if_short(t)
        elif op == _OP_REFUND:
            payment(t, REFUND, amt, POS, PURCHASE_MCCS[0], int(merchants[0]))
            cash += amt
        elif op == _OP_BIG:
            if not frozen and limit - bal >= amt:
                bal = round(bal + amt, 2)
                credit(t, DRAWDOWN, amt, dpd_at(t))
                payment(t, PURCHASE, amt, POS, 5732, int(merchants[1]))
        elif op == _OP_STATEMENT:
            if bal > 0:
                bal = round(bal * (1.0 + APR / 12.0), 2)
            min_due = min(bal, max(MIN_DUE_FLOOR, MIN_DUE_RATE * bal)) if bal > 0 else 0.0
            due = round(min(bal, arrears + min_due), 2) if bal > 0 else 0.0
            credit(t, STATEMENT, due, dpd_at(t))
            if bal > 0:
                push(t + DUE_DAYS * DAY_MS + 20 * HOUR_MS, _OP_DUE, due)
        elif op == _OP_DUE:
            due = min(amt, bal)
            if due <= 0:
                continue
            p_forget = 0.004 + 0.05 * (1.0 - discipline) ** 3 + (0.3 * severity if stressed else 0.0)
            can = cash - due >= 0
            if can and rng.random() >= p_forget:
                if transactor and cash - bal >= cushion:
                    pay = bal
                else:
                    pay = max(due, repay_frac * bal)
                    pay = min(bal, pay, max(due, cash - cushion))
                pay = round(pay, 2)
                bal = round(bal - pay, 2)
                cash -= pay
                arrears = 0.0
                past_due_since = None
                credit(t, REPAYMENT, pay, 0)
            else:
                if past_due_since is None:
                    past_due_since = t
                arrears = due
                bal = round(bal + LATE_FEE, 2)
                tm = t
                last_miss_t = tm
                credit(tm, MISSED, due, dpd_at(tm))
                if not frozen and dpd_at(tm) >= FREEZE_DPD:
                    frozen = True
                    old = limit
                    limit = max(100.0, math.ceil(bal / 100.0) * 100.0)
                    if limit != old:
                        credit(tm, LIMIT_CHANGE, limit - old, dpd_at(tm))
        elif op == _OP_REVIEW:
            clean = past_due_since is None and (last_miss_t is None or t - last_miss_t > 180 * DAY_MS)
            if frozen and past_due_since is None:
                frozen = False
            elif clean and bal < 0.7 * limit and rng.random() < 0.3 and limit < 25000:
                old = limit
                limit = min(25000.0, round(limit * 1.25, -2))
                credit(t, LIMIT_CHANGE, limit - old, 0)
    return seq


def simulate(n_customers=40000, seed=1, obs_ms=None, log=None):
    """Simulate the customers' events up to the observation date. Returns (Events in time
    order, profiles dict)."""
    if obs_ms is None:
        obs_ms = parse_time(DEFAULT_OBS)
    root = np.random.SeedSequence([seed, 0xC4ED17])
    ss_prof, ss_cust = root.spawn(2)
    prof = _draw_profiles(np.random.default_rng(ss_prof), n_customers)
    starts = month_starts_ms(obs_ms, HISTORY_MONTHS[1])
    out = {name: array.array(code) for name, code in Events.COLS}
    streams = ss_cust.spawn(n_customers)
    t0 = time.time()
    step = max(1, n_customers // 10)
    for c in range(n_customers):
        _simulate_customer(c, np.random.default_rng(streams[c]), prof, starts, obs_ms, out)
        if log and (c + 1) % step == 0:
            log("simulated %d/%d customers, %d events, %.1f s"
                % (c + 1, n_customers, len(out["t"]), time.time() - t0))
    cols = {name: np.frombuffer(out[name], dtype=np.dtype(code)).copy()
            for name, code in Events.COLS}
    n = len(cols["t"])
    # each customer's events were made in time order (the balances on them depend on it)
    same = np.diff(cols["cust"]) == 0
    if not np.all(np.diff(cols["t"])[same] >= 0):
        raise AssertionError("a customer's events are not in time order")
    # event-time order; ties: customer, then the customer's own order
    order = np.lexsort((np.arange(n), cols["cust"], cols["t"]))
    cols = {k: v[order] for k, v in cols.items()}
    ev = Events(cols, n_customers, seed)
    if log:
        nc = int((cols["rtype"] == 0).sum())
        log("%d events (%d credit events, %d payments) for %d customers in %.1f s"
            % (n, nc, n - nc, n_customers, time.time() - t0))
    return ev, prof


# -- the known PD ------------------------------------------------------------------------------

# The features g reads (deploy/features.conf, credit section).
PD_FEATURES = ("cr_utilisation", "cr_dpd", "cr_missed_90d", "cr_secs_since_missed",
               "cr_cash_30d", "cr_income_90d", "cr_spend_to_income", "cr_drawdown_30d")
PD_INTERCEPT = -4.9


def true_log_odds(x):
    """g(x): the true log-odds of default within 12 months, from the customer's credit
    features at the observation date (a mapping name -> numpy array or float). Additive,
    monotone in every feature (risk up with utilisation, days past due, missed payments,
    recency of a missed payment, cash withdrawals, spending over income and drawdowns; down
    with income), non-linear."""
    u = np.clip(np.asarray(x["cr_utilisation"], dtype=float), 0.0, 1.3)
    dpd = np.maximum(np.asarray(x["cr_dpd"], dtype=float), 0.0)
    missed = np.minimum(np.asarray(x["cr_missed_90d"], dtype=float), 4.0)
    days_since = np.asarray(x["cr_secs_since_missed"], dtype=float) / 86400.0
    cash = np.maximum(np.asarray(x["cr_cash_30d"], dtype=float), 0.0)
    monthly_income = np.maximum(np.asarray(x["cr_income_90d"], dtype=float) / 3.0, 150.0)
    s2i = np.clip(np.asarray(x["cr_spend_to_income"], dtype=float), 0.0, 3.0)
    draw = np.maximum(np.asarray(x["cr_drawdown_30d"], dtype=float), 0.0)
    g = (PD_INTERCEPT
         + 1.8 * u ** 1.5                                # convex in utilisation
         + 1.0 * (1.0 - np.exp(-dpd / 20.0))              # days past due, saturating
         + 0.35 * missed                                  # missed payments in 90 days
         + 0.7 * np.exp(-days_since / 90.0)               # a recent missed payment
         + 0.3 * np.log1p(cash)                           # cash withdrawals in 30 days
         - 0.5 * np.log(monthly_income / 2000.0)          # income
         + 0.8 * np.clip(s2i - 0.8, 0.0, 1.5)             # spending beyond 80 % of income
         + 0.25 * np.log1p(draw / 500.0))                 # drawdowns in 30 days
    return g


def sigmoid(z):
    z = np.asarray(z, dtype=float)
    out = np.empty_like(z)
    pos = z >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-z[pos]))
    e = np.exp(z[~pos])
    out[~pos] = e / (1.0 + e)
    return out


def draw_defaults(pd, seed):
    """default ~ Bernoulli(pd), one draw per row in row order, from its own stream."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0xDEFA17]))
    return (rng.random(len(pd)) < pd).astype(np.int8)


# -- features through the reference engine ---------------------------------------------------

DEFAULT_CONF = os.path.join(REPO, "deploy", "features.conf")
DEFAULT_SCHEMAS = os.path.join(REPO, "schemas")
# The credit job's state on the customer (ENGINE.md §5): version 1, 16 bytes, all zero when
# fresh (nothing published). It does not change any feature value; it is here so that the
# engine's layout is the one riskflowd uses.
CREDIT_JOB_STATE = {"credit": ("customer", rsc.STATE_VERSION, rsc.STATE_BYTES,
                               rsc.CreditState().pack())}


def credit_feature_names(conf=DEFAULT_CONF, prefix="cr_"):
    """The credit features declared in the feature file (feature and derived lines whose name
    starts with cr_), in file order."""
    names = []
    with open(conf, encoding="utf-8") as f:
        for line in f:
            tok = line.split("#", 1)[0].split()
            if len(tok) >= 2 and tok[0] in ("feature", "derived") and tok[1].startswith(prefix):
                names.append(tok[1])
    return names


def _replay_part(ev, conf, schemas, names, trace, part, jobs, log):
    """Replay the events of the customers c with c % jobs == part (every customer's events,
    in stream order, with the stream's offsets): an entity's state depends on its own events
    only, so a part gives exactly the values a replay of the whole stream gives."""
    import riskflow_features as rff

    decl = rff.load(conf, schemas_dir=schemas)
    eng = rff.Engine(decl, job_state=CREDIT_JOB_STATE)
    n = len(ev)
    cust = ev.cust.tolist()
    # the offset of each event in its topic (partition 0), in stream order
    is_credit = ev.rtype == 0
    off_col = np.where(is_credit, np.cumsum(is_credit) - 1, np.cumsum(~is_credit) - 1).tolist()
    last_idx = np.full(ev.n_customers, -1, dtype=np.int64)
    np.maximum.at(last_idx, ev.cust, np.arange(n, dtype=np.int64))
    last_idx = last_idx.tolist()
    snaps = {}
    trace_rows = []
    t0 = time.time()
    step = max(1, n // 20)
    n_replays = 0
    for i in range(n):
        c = cust[i]
        if jobs > 1 and c % jobs != part:
            continue
        rtype, topic, rec = ev.record(i)
        if not eng.apply(rtype, rec, topic, 0, off_col[i]):
            n_replays += 1
            continue
        is_last = last_idx[c] == i
        if is_last or c in trace:
            f = eng.evaluate(rtype, rec, names)
            row = [float(f[k]) for k in names]
            if is_last:
                snaps[c] = row
            if c in trace:
                trace_rows.append((i, c, row))
        if log and (i + 1) % step == 0:
            el = time.time() - t0
            log("features: %d/%d events (%.0f%%), %.0f s, %.0f s left"
                % (i + 1, n, 100.0 * (i + 1) / n, el, (n - i - 1) * el / (i + 1)))
    if n_replays:
        raise RuntimeError("%d events were taken for replays: offsets are not increasing"
                           % n_replays)
    return snaps, trace_rows


def _replay_worker(args):
    return _replay_part(_WORKER_EVENTS, *args)


_WORKER_EVENTS = None


def replay(ev, conf=DEFAULT_CONF, schemas=DEFAULT_SCHEMAS, names=None, trace=None, log=None,
           jobs=1):
    """Replay every event in event-time order through the feature engine
    (riskflow_features.Engine, the reference of riskflowd's declared features) — credit
    events as topic credit.events, payments as txn.payments, partition 0, offsets in stream
    order — and evaluate the credit features as the credit job would after an applied event.
    jobs > 1 splits the customers over that many processes (same values).

    Returns (names, X, trace_rows): X[c] is customer c's snapshot at the observation date —
    the features after its last event (NaN row for a customer with no event); trace_rows,
    for the customers in `trace` (a set of customer indexes), (event index, customer,
    feature list) after every one of their events, in stream order."""
    global _WORKER_EVENTS
    if names is None:
        names = credit_feature_names(conf)
    trace = set(trace or ())
    ev._lists()
    if jobs <= 1:
        parts = [_replay_part(ev, conf, schemas, names, trace, 0, 1, log)]
    else:
        import multiprocessing
        _WORKER_EVENTS = ev  # inherited by the forked workers
        ctx = multiprocessing.get_context("fork")
        with ctx.Pool(jobs) as pool:
            parts = pool.map(_replay_worker,
                             [(conf, schemas, names, trace, k, jobs, log if k == 0 else None)
                              for k in range(jobs)])
        _WORKER_EVENTS = None
    X = np.full((ev.n_customers, len(names)), np.nan)
    trace_rows = []
    for snaps, tr in parts:
        for c, row in snaps.items():
            X[c] = row
        trace_rows += tr
    trace_rows.sort(key=lambda r: r[0])
    return names, X, trace_rows


def labels(X, names, seed):
    """The sample and its labels from the snapshots: customers with a snapshot and fewer
    than 90 days past due; true log-odds g(x), true PD, default ~ Bernoulli(PD).
    Returns (index of the customers in the sample, g, pd, default)."""
    col = {k: X[:, j] for j, k in enumerate(names)}
    has = np.isfinite(X).all(axis=1)
    keep = np.flatnonzero(has & (col["cr_dpd"] < DEFAULT_DPD))
    g = true_log_odds({k: v[keep] for k, v in col.items()})
    pd = sigmoid(g)
    y = draw_defaults(pd, seed)
    return keep, g, pd, y


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--customers", type=int, default=40000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--obs-date", default=DEFAULT_OBS, help="observation date, UTC (%(default)s)")
    ap.add_argument("--out", required=True, help="events as JSON lines ('-' for stdout)")
    ap.add_argument("--labels-out", help="also replay through the feature engine and write "
                    "customer_id, the credit features, g, pd, default as CSV")
    ap.add_argument("--features", default=DEFAULT_CONF, help="feature file (%(default)s)")
    ap.add_argument("--jobs", type=int, default=1, help="processes for the feature replay")
    a = ap.parse_args(argv)
    if a.customers < 1:
        ap.error("need at least 1 customer")
    t0 = time.time()

    def log(msg):
        print("simulate_credit: " + msg, file=sys.stderr, flush=True)

    ev, _ = simulate(a.customers, a.seed, parse_time(a.obs_date), log)
    f = sys.stdout if a.out == "-" else open(a.out, "w", encoding="utf-8")
    try:
        for rtype, topic, rec in ev.records():
            f.write(json.dumps({"type": rtype, "topic": topic, "record": rec},
                               separators=(",", ":")) + "\n")
    finally:
        if f is not sys.stdout:
            f.close()
    log("wrote %d events to %s" % (len(ev), a.out))
    if a.labels_out:
        names, X, _ = replay(ev, conf=a.features, log=log, jobs=a.jobs)
        keep, g, pd, y = labels(X, names, a.seed)
        with open(a.labels_out, "w", encoding="utf-8") as out:
            out.write(",".join(["customer_id"] + names + ["g", "pd", "default"]) + "\n")
            for k, c in enumerate(keep):
                out.write(",".join(["C%06d" % c] + [repr(float(v)) for v in X[c]]
                                   + [repr(float(g[k])), repr(float(pd[k])), str(int(y[k]))])
                          + "\n")
        log("wrote %d customers (%d defaults, %.2f%%) to %s"
            % (len(keep), int(y.sum()), 100.0 * y.mean(), a.labels_out))
    log("done in %.1f s" % (time.time() - t0))
    return 0


if __name__ == "__main__":
    sys.exit(main())
