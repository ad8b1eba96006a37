#!/usr/bin/env python3
"""simulate_market — trades and quotes with a latent order-flow signal of known strength.

Per instrument i, on a one-second grid (continuous trading, 24/7, from --start):

  latent order flow   s_i(t): Ornstein-Uhlenbeck, stationary N(0, 1), half-life
                      `signal_halflife_s` (exact discretisation, one step per second);
  volatility regime   v_i(t): log-vol OU (sd `logvol_sd`, half-life `logvol_halflife_s`),
                      volfac = exp(v - logvol_sd^2/2) (mean 1): scales the idiosyncratic
                      volatility, the spread and the trade rate;
  efficient log price p_i(t+1) = p_i(t) + mu_i s_i(t) + beta_i m(t) + sigma_i volfac e_i(t)
                      m(t) ~ N(0, mkt_vol²) a market factor shared by all instruments,
                      e_i(t) ~ Student-t(`t_df`) scaled to unit variance (fat tails),
                      sigma_i per second from the instrument's 1-minute idiosyncratic vol,
                      mu_i = alpha * sigma_1m_i / 60: at s = 1 the drift per minute is `alpha`
                      one-minute idiosyncratic standard deviations;
  quotes              Poisson(quote_rate_i) per second; bid = floor(P (1 - hs) / tick) tick,
                      ask = ceil(P (1 + hs) / tick) tick (at least one tick apart),
                      hs = half_spread_i * volfac; sizes lognormal, bid size x exp(+book_tilt s),
                      ask size x exp(-book_tilt s) (book pressure leans with the flow);
  trades              Poisson(trade_rate_i * volfac) per second, at a uniform millisecond;
                      aggressor BUY with probability sigmoid(side_tilt * s), price = the ask
                      for a BUY, the bid for a SELL; quantity lognormal x exp(+size_tilt * s)
                      for a BUY and exp(-size_tilt * s) for a SELL, rounded to whole lots.

The signal predicts returns with a known strength: with the latent known at time T, the
expected log return over the next tau seconds is

    E[p(T + tau) - p(T) | s(T)] = mu_i s(T) (1 - phi^tau) / (1 - phi),   phi = exp(-kappa),

(the sum of the OU's conditional means over the grid steps), `oracle_bps()`. Its information
coefficient against the realised returns, on the same bars as a model, is the best any
predictor that sees only the order flow can do on average (the rest of the return is noise
independent of everything observable). Nothing else is predictable: the efficient price is a
random walk plus that drift.

Output (`iter_events`): ("riskflow.Trade" | "riskflow.Quote", dict with the Avro field names of
schemas/trade.avsc / quote.avsc, enums as symbol strings, times in Unix ms), in time order (ties:
quotes before trades, then instrument, then generation order). Deterministic: the same arguments
give the same events. numpy + standard library.
"""

import argparse
import dataclasses
import datetime
import json
import math
import sys
import time

import numpy as np

DEFAULT_START = "2026-04-01T00:00:00Z"
VENUES = ("XSIM", "XALT", "XDRK")
VENUE_P = (0.6, 0.3, 0.1)
TRADE = "riskflow.Trade"
QUOTE = "riskflow.Quote"


@dataclasses.dataclass
class SimParams:
    # the signal
    signal_halflife_s: float = 1800.0   # latent OU half-life
    alpha: float = 0.06                # drift per minute at s=1, in 1-minute idio sds
    side_tilt: float = 0.6             # P(BUY) = sigmoid(side_tilt * s)
    size_tilt: float = 0.25            # log-size tilt per unit s (BUY +, SELL -)
    book_tilt: float = 0.08            # log bid size +, ask size - per unit s
    # prices and volatility
    mkt_vol_1m_bps: float = 4.0        # market factor, 1-minute sd
    idio_vol_1m_bps: tuple = (5.0, 12.0)   # per instrument, uniform range
    beta_range: tuple = (0.6, 1.4)
    logvol_sd: float = 0.3
    logvol_halflife_s: float = 3 * 3600.0
    t_df: float = 5.0
    price_range: tuple = (20.0, 400.0)  # log-uniform
    tick: float = 0.01
    half_spread_bps: tuple = (0.8, 3.0)
    # activity
    trade_rate: tuple = (0.20, 0.50)   # trades per second at volfac 1
    quote_rate: tuple = (0.08, 0.20)   # quotes per second
    mean_size: tuple = (50.0, 500.0)   # log-uniform, lots
    size_sd: float = 0.8               # lognormal sd of a trade's size
    book_size_sd: float = 0.6


class MarketSim:
    """The simulation: instrument parameters, the one-second grid and the event columns."""

    def __init__(self, **kw):
        self.__dict__.update(kw)

    @property
    def n_events(self):
        return len(self.ev_time)

    def iter_events(self, instruments=None, indices=None):
        """(record type, record dict) in time order; `instruments`: instrument indexes to keep
        (all); `indices`: the events to give, by index in the stream (increasing)."""
        sel = None if instruments is None else np.isin(self.ev_inst, np.asarray(instruments))
        names = self.instruments
        t, inst, kind = self.ev_time, self.ev_inst, self.ev_kind
        a, b, c, d, seq, ven = (self.ev_a, self.ev_b, self.ev_c, self.ev_d, self.ev_seq,
                                self.ev_venue)
        for k in (range(len(t)) if indices is None else indices):
            if sel is not None and not sel[k]:
                continue
            name = names[inst[k]]
            if kind[k] == 1:
                yield TRADE, {
                    "instrument": name,
                    "venue": VENUES[ven[k]],
                    "trade_id": "%s-%09d" % (name, seq[k]),
                    "price": float(a[k]),
                    "quantity": float(b[k]),
                    "aggressor_side": "BUY" if c[k] > 0 else "SELL",
                    "trade_time": int(t[k]),
                }
            else:
                yield QUOTE, {
                    "instrument": name,
                    "venue": VENUES[ven[k]],
                    "bid": float(a[k]),
                    "ask": float(b[k]),
                    "bid_size": float(c[k]),
                    "ask_size": float(d[k]),
                    "quote_time": int(t[k]),
                }

    def latent_at(self, inst, t_ms):
        """Latent s_i at the grid second containing t_ms (vectorised)."""
        sec = np.clip((np.asarray(t_ms) - self.start_ms) // 1000, 0, self.n_seconds - 1)
        return self.latent[sec, np.asarray(inst)]

    def book_at(self, inst, t_ms):
        """(bid, ask) of the book prevailing at time t_ms (the grid second containing it): what
        the quote messages sample (vectorised)."""
        sec = np.clip((np.asarray(t_ms) - self.start_ms) // 1000, 0, self.n_seconds - 1)
        inst = np.asarray(inst)
        P = np.exp(self.logp[sec, inst])
        return _book(P, self.half_spread[inst] * self.volfac[sec, inst], self.params.tick)

    def oracle_bps(self, inst, t_ms, horizon_ms):
        """E[log return over (t, t + horizon] | s(t)] in basis points (vectorised)."""
        tau = np.asarray(horizon_ms) / 1000.0
        phi = self.phi
        k = (1.0 - phi ** tau) / (1.0 - phi)
        return 1e4 * self.mu[np.asarray(inst)] * self.latent_at(inst, t_ms) * k


def parse_start(text):
    dt = datetime.datetime.strptime(text.replace("Z", "+0000"), "%Y-%m-%dT%H:%M:%S%z")
    return int(dt.timestamp()) * 1000


def _ou(rng, n_steps, n, halflife, sd=1.0):
    """n independent stationary OU paths (n_steps x n), exact one-step discretisation."""
    phi = math.exp(-math.log(2.0) / halflife)
    eps = rng.standard_normal((n_steps, n)) * (sd * math.sqrt(1.0 - phi * phi))
    x = np.empty((n_steps, n))
    x[0] = rng.standard_normal(n) * sd
    for k in range(1, n_steps):
        x[k] = phi * x[k - 1] + eps[k]
    return x, phi


def _loguniform(rng, lo_hi, n):
    lo, hi = lo_hi
    return np.exp(rng.uniform(math.log(lo), math.log(hi), n))


def _book(P, hs, tick):
    """Top of book around efficient prices P with half spreads hs (fractions), on the tick."""
    bid = np.floor(P * (1.0 - hs) / tick) * tick
    ask = np.ceil(P * (1.0 + hs) / tick) * tick
    ask = np.maximum(ask, bid + tick)
    nd = max(0, int(round(-math.log10(tick))))
    return np.round(bid, nd), np.round(ask, nd)


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def simulate(n_instruments=40, hours=36.0, seed=1, start_ms=None, params=None, log=None):
    """Simulate; returns a MarketSim."""
    p = params or SimParams()
    if start_ms is None:
        start_ms = parse_start(DEFAULT_START)
    T = int(round(hours * 3600))
    M = int(n_instruments)
    if T < 2 or M < 1:
        raise ValueError("need at least 2 seconds and 1 instrument")
    root = np.random.SeedSequence(seed)
    ss_par, ss_lat, ss_vol, ss_px, ss_trd, ss_quo = root.spawn(6)

    rng = np.random.default_rng(ss_par)
    price0 = _loguniform(rng, p.price_range, M)
    sigma_1m = rng.uniform(*p.idio_vol_1m_bps, M) * 1e-4
    beta = rng.uniform(*p.beta_range, M)
    half_spread = rng.uniform(*p.half_spread_bps, M) * 1e-4
    trade_rate = rng.uniform(*p.trade_rate, M)
    quote_rate = rng.uniform(*p.quote_rate, M)
    mean_size = _loguniform(rng, p.mean_size, M)
    sigma_s = sigma_1m / math.sqrt(60.0)
    mu = p.alpha * sigma_1m / 60.0

    rng = np.random.default_rng(ss_lat)
    latent, phi = _ou(rng, T, M, p.signal_halflife_s)
    rng = np.random.default_rng(ss_vol)
    logvol, _ = _ou(rng, T, M, p.logvol_halflife_s, p.logvol_sd)
    volfac = np.exp(logvol - 0.5 * p.logvol_sd ** 2)
    del logvol

    rng = np.random.default_rng(ss_px)
    mkt = rng.standard_normal(T) * (p.mkt_vol_1m_bps * 1e-4 / math.sqrt(60.0))
    e = rng.standard_t(p.t_df, (T, M)) * math.sqrt((p.t_df - 2.0) / p.t_df)
    dlogp = mu * latent + beta * mkt[:, None] + sigma_s * volfac * e
    del e
    logp = np.empty((T, M))
    logp[0] = np.log(price0)
    np.cumsum(dlogp[:-1], axis=0, out=logp[1:])
    logp[1:] += logp[0]
    del dlogp
    P = np.exp(logp)
    bid, ask = _book(P, half_spread * volfac, p.tick)
    del P

    # trades
    rng = np.random.default_rng(ss_trd)
    cnt = rng.poisson(trade_rate * volfac)
    sec, inst = np.nonzero(cnt)
    rep = cnt[sec, inst]
    sec, inst = np.repeat(sec, rep), np.repeat(inst, rep)
    n_tr = len(sec)
    t_ms = start_ms + sec.astype(np.int64) * 1000 + rng.integers(0, 1000, n_tr)
    s_at = latent[sec, inst]
    buy = rng.random(n_tr) < _sigmoid(p.side_tilt * s_at)
    side = np.where(buy, 1, -1)
    qty = np.maximum(1.0, np.rint(mean_size[inst] * np.exp(
        p.size_sd * rng.standard_normal(n_tr) - 0.5 * p.size_sd ** 2
        + p.size_tilt * side * s_at)))
    tprice = np.where(buy, ask[sec, inst], bid[sec, inst])
    tven = rng.choice(len(VENUES), n_tr, p=VENUE_P)
    del cnt

    # quotes
    rng = np.random.default_rng(ss_quo)
    cnt = rng.poisson(np.broadcast_to(quote_rate, (T, M)))
    qsec, qinst = np.nonzero(cnt)
    rep = cnt[qsec, qinst]
    qsec, qinst = np.repeat(qsec, rep), np.repeat(qinst, rep)
    n_q = len(qsec)
    q_ms = start_ms + qsec.astype(np.int64) * 1000 + rng.integers(0, 1000, n_q)
    qs = latent[qsec, qinst]
    bsz = np.maximum(1.0, np.rint(mean_size[qinst] * 3 * np.exp(
        p.book_size_sd * rng.standard_normal(n_q) + p.book_tilt * qs)))
    asz = np.maximum(1.0, np.rint(mean_size[qinst] * 3 * np.exp(
        p.book_size_sd * rng.standard_normal(n_q) - p.book_tilt * qs)))
    qven = rng.choice(len(VENUES), n_q, p=VENUE_P)
    del cnt

    # merge, time order; ties: quotes (kind 0) before trades, then instrument, then generation
    ev_time = np.concatenate([q_ms, t_ms])
    ev_kind = np.concatenate([np.zeros(n_q, np.int8), np.ones(n_tr, np.int8)])
    ev_inst = np.concatenate([qinst, inst]).astype(np.int32)
    gen = np.arange(n_q + n_tr)
    order = np.lexsort((gen, ev_inst, ev_kind, ev_time))
    ev_a = np.concatenate([bid[qsec, qinst], tprice])[order]
    ev_b = np.concatenate([ask[qsec, qinst], qty])[order]
    ev_c = np.concatenate([bsz, side.astype(np.float64)])[order]
    ev_d = np.concatenate([asz, np.zeros(n_tr)])[order]
    ev_venue = np.concatenate([qven, tven]).astype(np.int8)[order]
    ev_time, ev_kind, ev_inst = ev_time[order], ev_kind[order], ev_inst[order]
    # trade sequence numbers per instrument, in time order
    ev_seq = np.zeros(len(ev_time), np.int64)
    trd = ev_kind == 1
    ti = ev_inst[trd]
    o = np.argsort(ti, kind="stable")
    seq = np.empty(len(ti), np.int64)
    starts = np.searchsorted(ti[o], np.arange(M))
    seq[o] = np.arange(len(ti)) - np.repeat(starts, np.bincount(ti, minlength=M))
    ev_seq[trd] = seq + 1

    sim = MarketSim(
        params=p, seed=seed, start_ms=start_ms, n_seconds=T, n_instruments=M,
        instruments=["SIM%03d" % i for i in range(M)],
        price0=price0, sigma_1m=sigma_1m, beta=beta, half_spread=half_spread,
        trade_rate=trade_rate, quote_rate=quote_rate, mean_size=mean_size, mu=mu, phi=phi,
        latent=latent, volfac=volfac, logp=logp,
        ev_time=ev_time, ev_kind=ev_kind, ev_inst=ev_inst, ev_a=ev_a, ev_b=ev_b, ev_c=ev_c,
        ev_d=ev_d, ev_venue=ev_venue, ev_seq=ev_seq)
    if log:
        log("simulated %d instruments x %.1f h: %d trades, %d quotes (%.1f events per "
            "instrument-minute)" % (M, hours, n_tr, n_q, (n_tr + n_q) / (M * T / 60.0)))
    return sim


def describe(sim, bar_s=60):
    """Plausibility statistics of the simulated market (dict of floats)."""
    T, M = sim.n_seconds, sim.n_instruments
    n = T // bar_s
    lp = sim.logp[: n * bar_s: bar_s]
    r = np.diff(lp, axis=0) * 1e4  # bar returns of the efficient price, bps
    k = ((r - r.mean(0)) ** 4).mean(0) / r.var(0) ** 2
    ac = [np.corrcoef(r[:-1, i], r[1:, i])[0, 1] for i in range(M)]
    q = sim.ev_kind == 0
    spread = 1e4 * (sim.ev_b[q] - sim.ev_a[q]) / (0.5 * (sim.ev_b[q] + sim.ev_a[q]))
    trd = sim.ev_kind == 1
    buy = sim.ev_c[trd] > 0
    return {
        "bar_s": bar_s,
        "ret_sd_bps_median": float(np.median(r.std(0))),
        "ret_sd_bps_min": float(r.std(0).min()),
        "ret_sd_bps_max": float(r.std(0).max()),
        "ann_vol_median": float(np.median(r.std(0)) * 1e-4 * math.sqrt(365 * 86400 / bar_s)),
        "kurtosis_median": float(np.median(k)),
        "autocorr_median": float(np.median(ac)),
        "spread_bps_median": float(np.median(spread)),
        "spread_bps_p90": float(np.percentile(spread, 90)),
        "trades_per_min": float(trd.sum() / (M * T / 60.0)),
        "quotes_per_min": float(q.sum() / (M * T / 60.0)),
        "buy_fraction": float(buy.mean()),
        "mean_trade_qty": float(sim.ev_b[trd].mean()),
        "price_min": float(sim.ev_a[trd].min()),
        "price_max": float(sim.ev_a[trd].max()),
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--instruments", type=int, default=40)
    ap.add_argument("--hours", type=float, default=36.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--start", default=DEFAULT_START, help="time 0, UTC (%(default)s)")
    ap.add_argument("--out", help="write the events as JSON lines: {\"type\": ..., \"record\": ...}")
    ap.add_argument("--describe", action="store_true", help="print plausibility statistics")
    a = ap.parse_args(argv)
    t0 = time.time()

    def log(msg):
        print("simulate_market: " + msg, file=sys.stderr)

    sim = simulate(a.instruments, a.hours, a.seed, parse_start(a.start), log=log)
    if a.describe:
        print(json.dumps(describe(sim), indent=1))
    if a.out:
        n = 0
        out = sys.stdout if a.out == "-" else open(a.out, "w", encoding="utf-8")
        for rt, rec in sim.iter_events():
            out.write(json.dumps({"type": rt, "record": rec}, separators=(",", ":")) + "\n")
            n += 1
        if out is not sys.stdout:
            out.close()
        log("wrote %d events to %s in %.1f s" % (n, a.out, time.time() - t0))
    return 0


if __name__ == "__main__":
    sys.exit(main())
