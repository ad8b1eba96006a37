#!/usr/bin/env python3
"""train_market — train the market job's GRU (and a small LSTM) and export them for riskflowd.

One command:

  1. simulate trades and quotes with simulate_market.py (a latent order-flow signal of known
     strength, so the best possible IC is known);
  2. replay every event in time order through riskflow_features.py (the Python reference of
     the declared-feature engine, reading deploy/features.conf) driven by
     riskflow_recurrent.MarketJob (the job's bar rules, ENGINE.md §5): one raw feature row per
     instrument per closed bar — exactly what riskflowd would feed the model;
  3. labels: the forward log return of the mid quote over `horizon_bars` bars, in basis points,
     and the up move (return > 0);
  4. time-based split (train / validation / test, with a gap of horizon_bars between them so no
     label crosses a boundary); standardisation on the training bars (stored as scaler.*);
  5. a one-layer GRU + linear head with PyTorch on the CPU (loss: MSE on the standardised
     return + BCE on the up move), early stopping on the validation IC;
  6. out-of-sample metrics on the test bars (IC, IC IR, hit rate, long/short Sharpe before and
     after costs) next to the best possible IC (the simulator's oracle on the same bars);
  7. exports deploy/models/market_gru.safetensors (MODELS.md §3), a small LSTM
     (tests/fixtures/market_lstm_small.safetensors), the parity fixtures
     tests/fixtures/market_{gru,lstm}_parity.safetensors, checks riskflow_recurrent's numpy step
     against PyTorch on them, and writes tools/train/MARKET_REPORT.md with plots under
     tools/train/report/.

numpy, torch (CPU), scipy (ranks), safetensors, matplotlib.
"""

import argparse
import datetime
import hashlib
import inspect
import math
import multiprocessing
import os
import platform
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.normpath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, HERE)

import riskflow_features as rff  # noqa: E402
import riskflow_recurrent as rr  # noqa: E402
import simulate_market as sm  # noqa: E402

MODEL_NAME = "market"
# The model's inputs, in model order: every one declared in deploy/features.conf (market
# section), stateful or derived from stateful features, so available for Trade and Quote.
FEATURES = [
    "mkt_ret_1m",
    "mkt_ret_5m",
    "mkt_ret_15m",
    "mkt_rv_5m",
    "mkt_ofi",
    "mkt_ofi_2m",
    "mkt_ofi_10m",
    "mkt_sell_share_2m",
    "mkt_sell_share_10m",
    "mkt_side_imb_1m",
    "mkt_log_trades_1m",
    "mkt_spread_bps",
    "mkt_quote_imb",
    "mkt_book_imb_2m",
]
TRADES_TOPIC = "market.trades"
QUOTES_TOPIC = "market.quotes"
BARS_PER_YEAR_1M = 365 * 24 * 60  # continuous (24/7) trading


def log(msg):
    print("train_market: " + msg, file=sys.stderr, flush=True)


# ---- replay -------------------------------------------------------------------------------

_SIM = None


def _replay_worker(args):
    """Replay the events of some instruments through the feature engine and the job's bars.
    Instruments share no state, so a subset replays exactly as in the whole stream."""
    insts, conf, schemas, bar_type, bar_ms, bar_trades, hidden, wid = args
    sim = _SIM
    decl = rff.load(conf, schemas_dir=schemas)
    nbytes = 24 + 4 * hidden
    eng = rff.Engine(decl, job_state={rr.JOB_NAME: ("instrument", rr.JOB_VERSION, nbytes)})
    job = rr.MarketJob(eng, None, bar_type=bar_type, bar_ms=bar_ms, bar_trades=bar_trades,
                       features=FEATURES, hidden=hidden)
    keep = np.flatnonzero(np.isin(sim.ev_inst, np.asarray(insts)))
    inst_idx = {name: i for i, name in enumerate(sim.instruments)}
    out_i, out_b, out_e, out_x = [], [], [], []
    t0, n = time.time(), len(keep)
    step = max(1, n // 10)
    for j, (k, (rt, rec)) in enumerate(zip(keep, sim.iter_events(indices=keep))):
        topic = TRADES_TOPIC if rt == rr.TRADE else QUOTES_TOPIC
        # partition 0 of each topic, offset = the event's index in the whole stream
        for s in job.process(rt, rec, topic, 0, int(k)):
            out_i.append(inst_idx[s["instrument"]])
            out_b.append(s["bar_index"])
            out_e.append(s["bar_end"])
            out_x.append(s["row"])
        if wid == 0 and j and j % step == 0:
            log("  replay %3.0f%% (%d events, %.0f s)" % (100.0 * j / n, j, time.time() - t0))
    return (np.array(out_i, np.int64), np.array(out_b, np.int64), np.array(out_e, np.int64),
            np.array(out_x, np.float64).reshape(len(out_x), len(FEATURES)))


def rows_key(a):
    """What the replayed rows depend on."""
    h = hashlib.sha256()
    h.update(repr((a.seed, a.instruments, a.hours, a.bar_ms, FEATURES,
                   vars(sm.SimParams()))).encode())
    for fn in (sm.simulate, sm._ou, sm._book, sm._loguniform, sm._sigmoid, sm.MarketSim.iter_events):
        h.update(inspect.getsource(fn).encode())
    for path in (a.features_conf, rff.__file__, rr.__file__):
        with open(path, "rb") as f:
            h.update(f.read())
    return h.hexdigest()


def replay(sim, conf, schemas, bar_type="time", bar_ms=60000, bar_trades=100, hidden=32,
           workers=2):
    """Rows per closed bar: (inst, bar_index, bar_end, X [n, F]) sorted by (inst, bar)."""
    global _SIM
    _SIM = sim
    M = sim.n_instruments
    parts = [list(range(w, M, workers)) for w in range(workers)]
    jobs = [(p, conf, schemas, bar_type, bar_ms, bar_trades, hidden, w)
            for w, p in enumerate(parts) if p]
    if workers > 1:
        ctx = multiprocessing.get_context("fork")
        with ctx.Pool(len(jobs)) as pool:
            res = pool.map(_replay_worker, jobs)
    else:
        res = [_replay_worker(j) for j in jobs]
    inst = np.concatenate([r[0] for r in res])
    bar = np.concatenate([r[1] for r in res])
    end = np.concatenate([r[2] for r in res])
    X = np.concatenate([r[3] for r in res])
    o = np.lexsort((bar, inst))
    return inst[o], bar[o], end[o], X[o]


# ---- the panel: bars x instruments, labels, oracle ----------------------------------------

class Panel:
    def __init__(self, **kw):
        self.__dict__.update(kw)


def build_panel(sim, inst, bar, end, X, bar_ms, horizon):
    """Time bars on a common grid: X [M, B, F] (NaN where an instrument made no bar), labels,
    oracle, costs. Bar b's price is the mid of the book at its end."""
    M, F = sim.n_instruments, X.shape[1]
    b0 = int(bar.min())
    B = int(bar.max()) - b0 + 1
    P = np.full((M, B, F), np.nan)
    have = np.zeros((M, B), bool)
    P[inst, bar - b0] = X
    have[inst, bar - b0] = True
    ends = (np.arange(B) + b0 + 1) * bar_ms
    # prices at the bar ends: the simulator's book at that time (the quote messages sample it;
    # the last quote message before the bar end can be seconds stale, and trades seen since
    # would predict its next update: not the signal under study)
    grid = (np.arange(B + horizon) + b0 + 1) * bar_ms
    mid = np.empty((M, B + horizon))
    hs = np.empty((M, B))
    for i in range(M):
        bid, ask = sim.book_at(np.full(len(grid), i), grid)
        mid[i] = 0.5 * (bid + ask)
        hs[i] = 1e4 * 0.5 * (ask - bid)[:B] / mid[i, :B]
    lm = np.log(mid)
    y = 1e4 * (lm[:, horizon:horizon + B] - lm[:, :B])   # label: h-bar forward return, bps
    r1 = 1e4 * (lm[:, 1:1 + B] - lm[:, :B])              # next-bar return, for the P&L
    # the last `horizon` bars have no complete label inside the simulation
    last_end = sim.start_ms + sim.n_seconds * 1000
    full = (ends + horizon * bar_ms) <= last_end
    y[:, ~full] = np.nan
    r1[:, ~((ends + bar_ms) <= last_end)] = np.nan
    oracle = np.empty((M, B))
    latent = np.empty((M, B))
    for i in range(M):
        oracle[i] = sim.oracle_bps(np.full(B, i), ends, horizon * bar_ms)
        latent[i] = sim.latent_at(np.full(B, i), ends)
    return Panel(X=P, have=have, y=y, r1=r1, hs=hs, oracle=oracle, latent=latent,
                 bar0=b0, B=B, ends=ends, M=M, F=F, sim=sim, bar_ms=bar_ms)


def fwd_returns(P, k):
    """k-bar forward log return of the mid (bps) from each bar end; NaN past the data."""
    sim, B = P.sim, P.B
    grid = (np.arange(B + k) + P.bar0 + 1) * P.bar_ms
    out = np.full((P.M, B), np.nan)
    last_end = sim.start_ms + sim.n_seconds * 1000
    full = (P.ends + k * P.bar_ms) <= last_end
    for i in range(P.M):
        bid, ask = sim.book_at(np.full(len(grid), i), grid)
        lm = np.log(0.5 * (bid + ask))
        out[i] = 1e4 * (lm[k:k + B] - lm[:B])
    out[:, ~full] = np.nan
    return out


# ---- metrics ------------------------------------------------------------------------------

def _ranks(a):
    from scipy.stats import rankdata
    return rankdata(a)


def per_bar_ic(pred, y, bars, method="spearman", min_n=10):
    """Cross-sectional IC per bar (columns `bars`): Spearman (Pearson of ranks, average ranks
    for ties) or Pearson, over the instruments with both values. Returns (bars used, ics)."""
    used, ics = [], []
    for b in bars:
        p, r = pred[:, b], y[:, b]
        ok = np.isfinite(p) & np.isfinite(r)
        if ok.sum() < min_n:
            continue
        p, r = p[ok], r[ok]
        if method == "spearman":
            p, r = _ranks(p), _ranks(r)
        if np.std(p) == 0 or np.std(r) == 0:
            continue
        used.append(b)
        ics.append(float(np.corrcoef(p, r)[0, 1]))
    return np.array(used, np.int64), np.array(ics)


def long_short(pred, r1, hs, bars, frac=0.2, hold=1):
    """Each bar: long the top `frac` of instruments by prediction, short the bottom `frac`,
    equal weights (+1/k, -1/k: 1 unit long, 1 unit short). With hold > 1, the book is the
    average of the last `hold` bars' portfolios (each held `hold` bars). P&L per bar in bps of
    one unit: sum w r(next bar); cost: half the quoted spread (bps, at the bar end) per unit
    traded, sum |w_t - w_{t-1}| hs. Returns (gross pnl, cost, turnover) per bar."""
    M = pred.shape[0]
    cohorts = []
    w_prev = np.zeros(M)
    gross, cost, turn = [], [], []
    for b in bars:
        p = pred[:, b]
        ok = np.isfinite(p) & np.isfinite(r1[:, b]) & np.isfinite(hs[:, b])
        w = np.zeros(M)
        n = int(ok.sum())
        k = max(1, int(round(frac * n)))
        if n >= 2 * k:
            idx = np.flatnonzero(ok)
            o = idx[np.argsort(p[ok], kind="stable")]
            w[o[-k:]] = 1.0 / k
            w[o[:k]] = -1.0 / k
        cohorts.append(w)
        if len(cohorts) > hold:
            cohorts.pop(0)
        book = np.sum(cohorts, axis=0) / hold
        dw = np.abs(book - w_prev)
        rr_ = np.where(np.isfinite(r1[:, b]), r1[:, b], 0.0)
        hh = np.where(np.isfinite(hs[:, b]), hs[:, b], 0.0)
        gross.append(float(book @ rr_))
        cost.append(float(dw @ hh))
        turn.append(float(dw.sum()))
        w_prev = book
    return np.array(gross), np.array(cost), np.array(turn)


def ratio_interval(res_a, res_b, block=30, n=2000, seed=0):
    """Moving-block bootstrap (blocks of `block` bars, over the test bars) of
    mean IC(a) / mean IC(b): the 5%, 50% and 95% points."""
    common, ia, ib = np.intersect1d(res_a["ic_bars"], res_b["ic_bars"], return_indices=True)
    xa, xb = res_a["ic_series"][ia], res_b["ic_series"][ib]
    nb = len(common)
    rng = np.random.default_rng(seed)
    k = int(math.ceil(nb / block))
    out = np.empty(n)
    for j in range(n):
        st = rng.integers(0, nb - block + 1, k)
        idx = (st[:, None] + np.arange(block)[None, :]).ravel()[:nb]
        out[j] = xa[idx].mean() / xb[idx].mean()
    return [float(v) for v in np.percentile(out, [5, 50, 95])]


def sharpe(pnl, per_year):
    sd = pnl.std(ddof=1)
    return float(pnl.mean() / sd * math.sqrt(per_year)) if sd > 0 else float("nan")


def auc(score, label):
    from scipy.stats import rankdata
    r = rankdata(score)
    n1 = int(label.sum())
    n0 = len(label) - n1
    return float((r[label == 1].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def evaluate(pred, p_up, P, bars, per_year, horizon):
    """Out-of-sample metrics of a prediction panel on `bars`."""
    used, ic = per_bar_ic(pred, P.y, bars)
    _, icp = per_bar_ic(pred, P.y, bars, "pearson")
    sel = np.zeros_like(P.y, bool)
    sel[:, bars] = True
    ok = sel & np.isfinite(pred) & np.isfinite(P.y) & (P.y != 0)
    hit = float(np.mean(np.sign(pred[ok]) == np.sign(P.y[ok])))
    out = {"ic": float(ic.mean()), "ic_sd": float(ic.std(ddof=1)),
           "ic_ir": float(ic.mean() / ic.std(ddof=1)), "ic_pearson": float(icp.mean()),
           "ic_pos": float(np.mean(ic > 0)), "n_bars": len(used), "ic_series": ic,
           "ic_bars": used, "hit": hit, "n_obs": int(ok.sum())}
    if p_up is not None:
        ok2 = sel & np.isfinite(p_up) & np.isfinite(P.y)
        up = (P.y[ok2] > 0).astype(int)
        out["auc_up"] = auc(p_up[ok2], up)
        out["hit_up"] = float(np.mean((p_up[ok2] > 0.5) == (up == 1)))
        out["mean_p_up"] = float(p_up[ok2].mean())
        out["up_rate"] = float(up.mean())
    for hold in (1, horizon):
        g, c, t = long_short(pred, P.r1, P.hs, bars, hold=hold)
        out["ls%d" % hold] = {
            "gross_bps": float(g.mean()), "cost_bps": float(c.mean()),
            "net_bps": float((g - c).mean()), "turnover": float(t.mean()),
            "sharpe_gross": sharpe(g, per_year), "sharpe_net": sharpe(g - c, per_year),
            "pnl_gross": g, "pnl_net": g - c}
    return out


# ---- the networks -------------------------------------------------------------------------

def make_net(torch, cell, F, H, n_aux=0):
    """nn.GRU/nn.LSTM + nn.Linear(H, 2) (the exported head); with n_aux > 0 also a training-only
    linear head for auxiliary targets (not exported)."""
    nn = torch.nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = (nn.GRU if cell == "gru" else nn.LSTM)(F, H, batch_first=True)
            self.head = nn.Linear(H, 2)
            self.aux = nn.Linear(H, n_aux) if n_aux else None

        def forward(self, z, state=None):
            out, st = self.rnn(z, state)
            return self.head(out), out, st

    return Net()


def standardise(torch, x, mean, scale):
    """(x - mean) / scale in float32, x raw (cast to float32 first), as MODELS.md §3."""
    return (torch.as_tensor(np.asarray(x, np.float32)) - torch.as_tensor(mean)) / torch.as_tensor(
        scale)


def train_net(torch, cell, H, Z, T, up, valid, train_bars, val_bars, P, args, seed, tag):
    """Train on random windows of the training bars; early stopping on the validation IC of a
    full-sequence run (hidden state carried from the first bar, as riskflowd runs it).

    T [M, B, K]: standardised targets, T[..., 0] the exported return output's, the others
    auxiliary (other horizons, a training-only head); up [M, B] the up move."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    M, B, F = Z.shape
    K = T.shape[2]
    net = make_net(torch, cell, F, H, K - 1)
    opt = torch.optim.Adam(net.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    L, burn = args.window, args.burn_in
    lo, hi = int(train_bars[0]), int(train_bars[-1]) + 1
    Zt = torch.as_tensor(np.nan_to_num(Z).astype(np.float32))
    Tt = torch.as_tensor(np.nan_to_num(T).astype(np.float32))
    Mt = torch.as_tensor((np.isfinite(T) & valid[..., None]).astype(np.float32))
    Ut = torch.as_tensor(np.nan_to_num(up).astype(np.float32))
    bce = torch.nn.BCEWithLogitsLoss(reduction="none")
    # an exponential moving average of the weights (evaluated and kept): the labels are mostly
    # noise, and the average of the iterates is a far less noisy estimate than the last one
    ema = {k: v.detach().clone() for k, v in net.state_dict().items()}
    live = None
    best = (-1e9, None, -1)
    history = []
    t0 = time.time()
    for epoch in range(args.epochs):
        net.train()
        tot = 0.0
        for _ in range(args.batches):
            ii = rng.integers(0, M, args.batch)
            ss = rng.integers(lo, hi - L + 1, args.batch)
            idx_b = ss[:, None] + np.arange(L)[None, :]
            z = Zt[ii[:, None], idx_b]
            tt, mt, ut = Tt[ii[:, None], idx_b], Mt[ii[:, None], idx_b].clone(), Ut[ii[:, None], idx_b]
            mt[:, :burn] = 0.0
            y, out, _ = net(z)
            m0 = mt[..., 0]
            w = m0.sum().clamp(min=1.0)
            loss = (((y[..., 0] - tt[..., 0]) ** 2 * m0).sum()
                    + args.bce_weight * (bce(y[..., 1], ut) * m0).sum()) / w
            if K > 1:
                ya = net.aux(out)
                ma = mt[..., 1:]
                loss = loss + args.aux_weight * ((ya - tt[..., 1:]) ** 2 * ma).sum() / ma.sum().clamp(min=1.0) * (K - 1)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            opt.step()
            tot += float(loss.detach())
            with torch.no_grad():
                for k, v in net.state_dict().items():
                    ema[k].mul_(args.ema).add_(v, alpha=1.0 - args.ema)
        live = {k: v.detach().clone() for k, v in net.state_dict().items()}
        net.load_state_dict(ema)
        net.eval()
        with torch.no_grad():
            y, _, _ = net(Zt[:, :int(val_bars[-1]) + 1])
        pred = y[..., 0].numpy().astype(np.float64)
        pred_full = np.full((M, B), np.nan)
        pred_full[:, :pred.shape[1]] = pred
        _, ic = per_bar_ic(pred_full, P.y, val_bars)
        vic = float(ic.mean())
        history.append((epoch + 1, tot / args.batches, vic))
        if vic > best[0]:
            best = (vic, {k: v.clone() for k, v in ema.items()}, epoch + 1)
        net.load_state_dict(live)
        log("  %s epoch %2d  loss %.4f  val IC %.4f  (best %.4f @%d, %.0f s)"
            % (tag, epoch + 1, tot / args.batches, vic, best[0], best[2], time.time() - t0))
        if epoch + 1 - best[2] >= args.patience:
            break
    net.load_state_dict(best[1])
    return net, best[2], best[0], history, time.time() - t0


def export_tensors(net, mean, scale, y_scale):
    """The file's tensors: rnn.* as trained, head row 0 scaled to basis points, scaler.*."""
    sd = {k: v.detach().numpy().astype(np.float32) for k, v in net.state_dict().items()
          if not k.startswith("aux.")}
    hw, hb = sd["head.weight"].copy(), sd["head.bias"].copy()
    hw[0] *= np.float32(y_scale)
    hb[0] *= np.float32(y_scale)
    return {"rnn.weight_ih_l0": sd["rnn.weight_ih_l0"], "rnn.weight_hh_l0": sd["rnn.weight_hh_l0"],
            "rnn.bias_ih_l0": sd["rnn.bias_ih_l0"], "rnn.bias_hh_l0": sd["rnn.bias_hh_l0"],
            "head.weight": hw, "head.bias": hb,
            "scaler.mean": mean.astype(np.float32), "scaler.scale": scale.astype(np.float32)}


def combine_gru(parts):
    """K GRUs (hidden h each, same inputs and scaler) as one GRU of hidden K h whose output is
    the average of theirs: per gate, the input weights and biases stacked, the recurrent
    weights block-diagonal (no unit sees another member's units), the head's weights side by
    side over K and its bias the average. Exact: every gate is elementwise."""
    K = len(parts)
    h = parts[0]["rnn.weight_hh_l0"].shape[1]
    H = K * h
    out = {}
    for name in ("rnn.weight_ih_l0", "rnn.bias_ih_l0", "rnn.bias_hh_l0"):
        gates = [np.split(p[name], 3, axis=0) for p in parts]
        out[name] = np.concatenate([g[j] for j in range(3) for g in gates], axis=0)
    whh = np.zeros((3 * H, H), np.float32)
    for k, p in enumerate(parts):
        for j, blk in enumerate(np.split(p["rnn.weight_hh_l0"], 3, axis=0)):
            whh[j * H + k * h:j * H + (k + 1) * h, k * h:(k + 1) * h] = blk
    out["rnn.weight_hh_l0"] = whh
    out["head.weight"] = (np.concatenate([p["head.weight"] for p in parts], axis=1)
                          / np.float32(K)).astype(np.float32)
    out["head.bias"] = (np.sum([p["head.bias"].astype(np.float64) for p in parts], axis=0)
                        / K).astype(np.float32)
    out["scaler.mean"], out["scaler.scale"] = parts[0]["scaler.mean"], parts[0]["scaler.scale"]
    for p in parts[1:]:
        assert np.array_equal(p["scaler.mean"], out["scaler.mean"])
    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in out.items()}


def check_combined(torch, combined, parts, xs):
    """The combined GRU's forward equals the average of its members' (float32 tolerance)."""
    outs = []
    for tens in [combined] + parts:
        net = torch_reference(torch, "gru", tens)
        with torch.no_grad():
            y, _, _ = net(standardise(torch, xs, tens["scaler.mean"], tens["scaler.scale"]))
        outs.append(y.numpy().astype(np.float64))
    avg = np.mean(outs[1:], axis=0)
    d = np.abs(outs[0] - avg) / np.maximum(1.0, np.abs(avg))
    if d.max() > 1e-5:
        raise SystemExit("combined GRU differs from its members' average by %.3g" % d.max())
    return float(d.max())


def version_of(cell, tensors, features, horizon, date):
    h = hashlib.sha256()
    for k in sorted(tensors):
        h.update(k.encode())
        h.update(np.ascontiguousarray(tensors[k], "<f4").tobytes())
    h.update((",".join(features) + ";%d" % horizon).encode())
    return "market-%s-%s-%s" % (cell, date, h.hexdigest()[:8])


def save_safetensors(path, tensors, meta):
    """Write with riskflow_recurrent's writer (the `safetensors` package's layout: tensors in
    name order, header padded with spaces to 8 bytes, but the metadata in a fixed order, so the
    same tensors give the same bytes), then read back with the `safetensors` package."""
    from safetensors.numpy import load_file
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    rr.write_safetensors(path, {k: np.ascontiguousarray(v) for k, v in tensors.items()}, meta)
    back = load_file(path)
    assert set(back) == set(tensors) and all(np.array_equal(back[k], tensors[k]) for k in back)


def save_model(path, tensors, cell, version, features, horizon, bar_ms):
    # bar_type / bar_ms: the bars it was trained on; riskflowd refuses other bars (MODELS.md §3)
    meta = {"format": rr.FORMAT, "cell": cell, "name": MODEL_NAME, "version": version,
            "features": ",".join(features), "horizon_bars": str(horizon),
            "bar_type": "time", "bar_ms": str(bar_ms)}
    save_safetensors(path, tensors, meta)
    return meta


def torch_reference(torch, cell, tensors):
    """A plain nn.GRU/nn.LSTM + nn.Linear holding the exported tensors."""
    H = tensors["rnn.weight_hh_l0"].shape[1]
    F = tensors["rnn.weight_ih_l0"].shape[1]
    net = make_net(torch, cell, F, H)
    sd = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in tensors.items()
          if not k.startswith("scaler.")}
    net.load_state_dict(sd)
    net.eval()
    return net


def torch_forward(torch, net, tensors, xs):
    """PyTorch's own forward pass on raw rows xs [N, L, F] (float32) from zero state: h, c, y
    with y[..., 1] = sigmoid of the head's second output."""
    with torch.no_grad():
        z = standardise(torch, xs, tensors["scaler.mean"], tensors["scaler.scale"])
        N, L, _ = xs.shape
        hs, cs = [], []
        state = None
        # step by step so the cell state of an LSTM is available after every step too
        for k in range(L):
            _, out, state = net(z[:, k:k + 1], state)
            if isinstance(state, tuple):
                hs.append(state[0][0].clone())
                cs.append(state[1][0].clone())
            else:
                hs.append(state[0].clone())
        h = torch.stack(hs, 1)
        # the whole-sequence forward (cuDNN-free CPU kernel) must agree with the stepping
        y_full, out_full, _ = net(z)
        assert torch.allclose(out_full, h, rtol=1e-5, atol=1e-6)
        y = net.head(h)
        y = torch.stack([y[..., 0], torch.sigmoid(y[..., 1])], -1)
        c = torch.stack(cs, 1).numpy() if cs else None
    return h.numpy(), c, y.numpy()


def parity_fixture(torch, cell, tensors, version, X_raw, seqs, L, path, rng):
    """x [N, L, F] raw rows (float32), h [N, L, H], (c), y [N, L, 2] from PyTorch."""
    xs = np.stack([X_raw[i, s:s + L] for i, s in seqs]).astype(np.float32)
    # a few sequences with extreme inputs (saturated gates), at the end
    n_ext = 16
    ext = xs[rng.choice(len(xs), n_ext, replace=False)].copy()
    mean, scale = tensors["scaler.mean"], tensors["scaler.scale"]
    ext = (mean + (ext - mean) * rng.choice([8.0, 30.0, -30.0], (n_ext, 1, 1))).astype(np.float32)
    xs = np.concatenate([xs, ext])
    net = torch_reference(torch, cell, tensors)
    h, c, y = torch_forward(torch, net, tensors, xs)
    out = {"x": xs, "h": h.astype(np.float32), "y": y.astype(np.float32)}
    if c is not None:
        out["c"] = c.astype(np.float32)
    meta = {"model_version": version, "cell": cell,
            "description": "x: raw feature rows (model order, unscaled) of %d test-period "
                           "sequences of %d closed bars plus %d with extreme inputs (last); "
                           "h%s: state after each step from zeros; y: expected_return_bps, "
                           "p_up (sigmoid applied), PyTorch %s forward pass, float32"
                           % (len(xs) - n_ext, L, n_ext, ", c" if c is not None else "",
                              torch.__version__)}
    save_safetensors(path, out, meta)
    return out


def check_parity(model_path, fixture):
    """riskflow_recurrent (numpy) against the fixture: worst abs and relative differences."""
    m = rr.load_model(model_path)
    h, c, y = m.run(fixture["x"])
    res = {}
    for name, ours, ref in (("h", h, fixture["h"]), ("c", c, fixture.get("c")),
                            ("y0", y[..., 0], fixture["y"][..., 0]),
                            ("y1", y[..., 1], fixture["y"][..., 1])):
        if ref is None:
            continue
        d = np.abs(ours.astype(np.float64) - ref.astype(np.float64))
        rel = d / np.maximum(np.abs(ref.astype(np.float64)), 1e-30)
        big = np.abs(ref) >= 1e-3
        res[name] = {"abs": float(d.max()),
                     "rel": float(rel[big].max()) if big.any() else 0.0,
                     "crit": float((d / np.maximum(np.abs(ref), 1.0)).max())}
    return res


# ---- the report ---------------------------------------------------------------------------

def fmt(v, nd=4):
    return ("%%.%df" % nd) % v


def plots(outdir, P, test_bars, gru, orc, pred, y_scale, horizon):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    os.makedirs(outdir, exist_ok=True)
    files = []
    # 1. IC over time
    fig, ax = plt.subplots(figsize=(9, 4))
    for r, name, st in ((gru, "GRU", "-"), (orc, "oracle (best possible)", "--")):
        s = r["ic_series"]
        k = 30
        roll = np.convolve(s, np.ones(k) / k, mode="valid")
        ax.plot(r["ic_bars"][k - 1:] - test_bars[0], roll, st, label="%s, mean %.3f" % (name, s.mean()))
    ax.axhline(0, color="grey", lw=0.5)
    ax.set_xlabel("test bar (1 minute)")
    ax.set_ylabel("Spearman IC, 30-bar rolling mean")
    ax.set_title("Cross-sectional IC per bar, test period")
    ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(outdir, "market_ic.png"), dpi=110)
    plt.close(fig)
    files.append("market_ic.png")
    # 2. cumulative long/short
    fig, axs = plt.subplots(1, 2, figsize=(11, 4))
    for ax, hold in zip(axs, (1, horizon)):
        for r, name, st in ((gru, "GRU", "-"), (orc, "oracle", "--")):
            ls = r["ls%d" % hold]
            ax.plot(np.cumsum(ls["pnl_gross"]), st, label="%s before costs" % name)
            ax.plot(np.cumsum(ls["pnl_net"]), st, label="%s after costs" % name)
        ax.axhline(0, color="grey", lw=0.5)
        ax.set_xlabel("test bar")
        ax.set_ylabel("cumulative P&L, bps of 1 unit long + 1 short")
        ax.set_title("quintile long/short, %s" % ("rebalanced every bar" if hold == 1 else
                                                 "%d staggered cohorts" % hold))
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(outdir, "market_longshort.png"), dpi=110)
    plt.close(fig)
    files.append("market_longshort.png")
    # 3. predicted vs realised
    fig, axs = plt.subplots(1, 2, figsize=(11, 4))
    sel = np.zeros_like(P.y, bool)
    sel[:, test_bars] = True
    for ax, pr, name in ((axs[0], pred, "GRU expected_return_bps"), (axs[1], P.oracle, "oracle E[r | latent]")):
        ok = sel & np.isfinite(pr) & np.isfinite(P.y)
        p, y = pr[ok], P.y[ok]
        q = np.quantile(p, np.linspace(0, 1, 21))
        b = np.clip(np.searchsorted(q, p, side="right") - 1, 0, 19)
        mp = np.array([p[b == j].mean() for j in range(20)])
        my = np.array([y[b == j].mean() for j in range(20)])
        se = np.array([y[b == j].std() / math.sqrt(max(1, (b == j).sum())) for j in range(20)])
        ax.errorbar(mp, my, yerr=2 * se, fmt="o", ms=3)
        lim = max(abs(mp).max(), abs(my).max()) * 1.1
        ax.plot([-lim, lim], [-lim, lim], color="grey", lw=0.5)
        ax.set_xlabel("predicted %d-bar return, bps (20 quantile bins)" % horizon)
        ax.set_ylabel("mean realised return, bps (±2 s.e.)")
        ax.set_title(name)
    fig.tight_layout()
    fig.savefig(os.path.join(outdir, "market_pred_vs_real.png"), dpi=110)
    plt.close(fig)
    files.append("market_pred_vs_real.png")
    return files


# ---- main ---------------------------------------------------------------------------------

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=1, help="simulation seed")
    ap.add_argument("--train-seed", type=int, default=1, help="torch / sampling seed")
    ap.add_argument("--instruments", type=int, default=50)
    ap.add_argument("--hours", type=float, default=48.0)
    ap.add_argument("--bar-ms", type=int, default=60000)
    ap.add_argument("--horizon-bars", type=int, default=5)
    ap.add_argument("--hidden", type=int, default=32)
    ap.add_argument("--members", type=int, default=4,
                    help="GRUs of hidden/members units trained independently, averaged")
    ap.add_argument("--lstm-hidden", type=int, default=8)
    ap.add_argument("--train-frac", type=float, default=0.5)
    ap.add_argument("--val-frac", type=float, default=0.2)
    ap.add_argument("--warmup-bars", type=int, default=20,
                    help="first bars left out (15-minute windows filling)")
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--lstm-epochs", type=int, default=40)
    ap.add_argument("--batches", type=int, default=40, help="minibatches per epoch")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--window", type=int, default=96)
    ap.add_argument("--burn-in", type=int, default=32)
    ap.add_argument("--patience", type=int, default=10)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--weight-decay", type=float, default=1e-5)
    ap.add_argument("--ema", type=float, default=0.995, help="weight averaging per batch (0: off)")
    ap.add_argument("--bce-weight", type=float, default=1.0)
    ap.add_argument("--aux-horizons", type=lambda v: [int(x) for x in v.split(",") if x],
                    default=[1, 15, 30], help="bars; training-only targets (default 1,15,30)")
    ap.add_argument("--aux-weight", type=float, default=1.0)
    ap.add_argument("--demean", type=int, default=1, help="demean targets per bar (1) or not")
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    ap.add_argument("--workers", type=int, default=2, help="replay processes")
    ap.add_argument("--parity-seqs", type=int, default=1024)
    ap.add_argument("--parity-len", type=int, default=16)
    ap.add_argument("--features", type=lambda v: v.split(","), default=None,
                    help="the model's inputs, a subset of FEATURES (default: all of them)")
    ap.add_argument("--date", help="YYYYMMDD in the versions (default: today, UTC)")
    ap.add_argument("--features-conf", default=os.path.join(REPO, "deploy", "features.conf"))
    ap.add_argument("--schemas", default=os.path.join(REPO, "schemas"))
    ap.add_argument("--model-out", default=os.path.join(REPO, "deploy", "models",
                                                        "market_gru.safetensors"))
    ap.add_argument("--fixtures-dir", default=os.path.join(REPO, "tests", "fixtures"))
    ap.add_argument("--report-out", default=os.path.join(HERE, "MARKET_REPORT.md"))
    ap.add_argument("--plots-dir", default=os.path.join(HERE, "report"))
    ap.add_argument("--no-export", action="store_true", help="metrics only, write nothing")
    ap.add_argument("--summary-out", help="write the key test metrics as JSON")
    ap.add_argument("--seed-summaries", type=lambda v: [x for x in v.split(",") if x],
                    default=[], help="JSON summaries of other runs (--summary-out) to list in "
                    "the report")
    ap.add_argument("--rows-cache", help="keep the replayed rows in this .npz (keyed by the "
                    "simulation, bar, feature file and feature code): later runs with the same "
                    "inputs skip the replay")
    a = ap.parse_args(argv)

    import torch
    torch.set_num_threads(a.threads)
    date = a.date or datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d")
    T0 = time.time()
    timing = {}

    # 1. simulate
    t = time.time()
    sim = sm.simulate(a.instruments, a.hours, a.seed, log=log)
    desc = sm.describe(sim, a.bar_ms // 1000)
    timing["simulate"] = time.time() - t

    # 2. replay through the feature engine and the job's bars
    t = time.time()
    log("replaying %d events through riskflow_features + MarketJob (%d workers)"
        % (sim.n_events, a.workers))
    key = rows_key(a)
    cached = None
    if a.rows_cache and os.path.exists(a.rows_cache):
        z = np.load(a.rows_cache)
        if str(z["key"]) == key:
            cached = (z["inst"], z["bar"], z["end"], z["X"])
            log("rows from %s (replay skipped)" % a.rows_cache)
    if cached is None:
        inst, bar, end, X = replay(sim, a.features_conf, a.schemas, "time", a.bar_ms, 100,
                                   a.hidden, a.workers)
        if a.rows_cache:
            np.savez(a.rows_cache, key=key, inst=inst, bar=bar, end=end, X=X)
    else:
        inst, bar, end, X = cached
    timing["replay"] = time.time() - t
    log("%d closed bars in %.0f s (%.1f us per event)" % (len(bar), timing["replay"],
                                                          1e6 * timing["replay"] / sim.n_events))

    # the model's inputs (the replay computes every one of FEATURES)
    names = a.features = a.features or list(FEATURES)
    bad = [n for n in names if n not in FEATURES]
    if bad:
        raise SystemExit("--features: %s not in FEATURES" % ",".join(bad))
    X = X[:, [FEATURES.index(n) for n in names]]

    # 3. panel, labels, split
    h = a.horizon_bars
    P = build_panel(sim, inst, bar, end, X, a.bar_ms, h)
    M, B, F = P.M, P.B, P.F
    n_lab = int(np.isfinite(P.y).any(axis=0).sum())
    usable = np.arange(a.warmup_bars, n_lab)
    n_tr = int(a.train_frac * len(usable))
    n_va = int(a.val_frac * len(usable))
    train_bars = usable[:n_tr - h]                       # gap of h bars: no label crosses
    val_bars = usable[n_tr:n_tr + n_va - h]
    test_bars = usable[n_tr + n_va:]
    missing = int((~P.have).sum())
    log("panel: %d instruments x %d bars (%d instrument-bars without a bar); train %d, "
        "validation %d, test %d bars" % (M, B, missing, len(train_bars), len(val_bars),
                                         len(test_bars)))

    # standardisation on the training bars
    Xtr = P.X[:, train_bars].reshape(-1, F)
    Xtr = Xtr[np.all(np.isfinite(Xtr), 1)]
    mean = Xtr.astype(np.float32).mean(0, dtype=np.float64)
    scale = Xtr.astype(np.float32).std(0, dtype=np.float64)
    scale[scale == 0] = 1.0
    mean32, scale32 = mean.astype(np.float32), scale.astype(np.float32)
    Z = ((np.nan_to_num(P.X).astype(np.float32) - mean32) / scale32)
    # targets: the label and the auxiliary horizons' returns, each minus its cross-sectional
    # mean per bar (the market's move is noise for ranking instruments), over its training sd
    horizons = [h] + [k for k in a.aux_horizons if k != h]
    T = np.empty((M, B, len(horizons)))
    y_scale = None
    for j, k in enumerate(horizons):
        yk = P.y if k == h else fwd_returns(P, k)
        if a.demean:
            cnt = np.isfinite(yk).sum(axis=0, keepdims=True)
            yk = yk - np.nansum(yk, axis=0, keepdims=True) / np.maximum(cnt, 1)
        sd_k = float(np.nanstd(yk[:, train_bars]))
        if j == 0:
            y_scale = sd_k
        T[..., j] = np.clip(yk / sd_k, -5, 5)
    up = (P.y > 0).astype(np.float64)
    valid = np.isfinite(P.y) & P.have
    valid[:, test_bars[0]:] = False                      # never train on test labels

    # 4. GRU: an average of independently trained small GRUs, exported as one GRU
    t = time.time()
    K = a.members
    if a.hidden % K:
        raise SystemExit("--hidden must be a multiple of --members")
    log("training GRU: %d members of hidden %d (one GRU of hidden %d) on %d x %d bars"
        % (K, a.hidden // K, a.hidden, M, len(train_bars)))
    tv = valid.copy()
    tv[:, train_bars[-1] + 1:] = False                   # train on training labels only
    members = []
    for k in range(K):
        net, ep, vic, _, _ = train_net(torch, "gru", a.hidden // K, Z, T, up, tv, train_bars,
                                       val_bars, P, a, a.train_seed + k, "GRU %d/%d" % (k + 1, K))
        members.append({"tensors": export_tensors(net, mean32, scale32, y_scale), "epoch": ep,
                        "val_ic": vic, "seed": a.train_seed + k})
    g_t = combine_gru([mb["tensors"] for mb in members])
    check_combined(torch, g_t, [mb["tensors"] for mb in members], P.X[:, :256])
    timing["train_gru"] = time.time() - t
    g_ver = version_of("gru", g_t, names, h, date)

    # 5. small LSTM
    t = time.time()
    log("training LSTM (hidden %d)" % a.lstm_hidden)
    la = argparse.Namespace(**vars(a))
    la.epochs = a.lstm_epochs
    lstm, lstm_epoch, lstm_val, _, _ = train_net(
        torch, "lstm", a.lstm_hidden, Z, T, up, tv, train_bars, val_bars, P, la,
        a.train_seed + 100, "LSTM")
    timing["train_lstm"] = time.time() - t
    l_t = export_tensors(lstm, mean32, scale32, y_scale)
    l_ver = version_of("lstm", l_t, names, h, date)

    # 6. predictions on every bar with the exported numpy model (as riskflowd: the hidden state
    # carried from each instrument's first bar), checked against PyTorch on the same rows
    t = time.time()
    preds = {}
    for cell, tens, ver in (("gru", g_t, g_ver), ("lstm", l_t, l_ver)):
        meta = {"format": rr.FORMAT, "cell": cell, "name": MODEL_NAME, "version": ver,
                "features": ",".join(names), "horizon_bars": str(h)}
        m = rr.RecurrentModel(tens, meta)
        # instruments make a bar in every interval here; a missing bar would be skipped
        if missing:
            raise SystemExit("an instrument has an empty bar interval: sequences are not aligned")
        hs_, _, ys = m.run(P.X)
        net = torch_reference(torch, cell, tens)
        with torch.no_grad():
            yt, _, _ = net(standardise(torch, P.X, tens["scaler.mean"], tens["scaler.scale"]))
        d = float(np.max(np.abs(ys[..., 0] - yt[..., 0].numpy())))
        preds[cell] = (ys[..., 0].astype(np.float64), ys[..., 1].astype(np.float64), d)
        log("%s: numpy vs PyTorch over all %d x %d bars: worst |diff| %.3g bps" % (cell, M, B, d))
    timing["predict"] = time.time() - t

    # a linear baseline on the same rows (no recurrence): ridge regression of the standardised
    # target on the standardised features of the bar
    tm_ = tv & np.isfinite(T[..., 0])
    Zc = np.concatenate([Z.astype(np.float64), np.ones((M, B, 1))], axis=2)
    A = Zc[tm_]
    wr = np.linalg.solve(A.T @ A + 1.0 * np.eye(A.shape[1]), A.T @ T[..., 0][tm_])
    preds["ridge"] = ((Zc @ wr) * y_scale, None, 0.0)

    per_year = BARS_PER_YEAR_1M * 60000 / a.bar_ms
    res = {
        "gru": evaluate(preds["gru"][0], preds["gru"][1], P, test_bars, per_year, h),
        "lstm": evaluate(preds["lstm"][0], preds["lstm"][1], P, test_bars, per_year, h),
        "oracle": evaluate(P.oracle, None, P, test_bars, per_year, h),
        "ridge": evaluate(preds["ridge"][0], None, P, test_bars, per_year, h),
        "gru_val": evaluate(preds["gru"][0], preds["gru"][1], P, val_bars, per_year, h),
        "oracle_val": evaluate(P.oracle, None, P, val_bars, per_year, h),
    }
    # each member alone, for the report
    for mb in members:
        net = torch_reference(torch, "gru", mb["tensors"])
        with torch.no_grad():
            yk, _, _ = net(standardise(torch, P.X, mb["tensors"]["scaler.mean"],
                                       mb["tensors"]["scaler.scale"]))
        pk = yk[..., 0].numpy().astype(np.float64)
        mb["test_ic"] = float(per_bar_ic(pk, P.y, test_bars)[1].mean())
        mb["skill"] = float(per_bar_ic(pk, P.oracle, test_bars)[1].mean())
    # how well the model's state tracks the latent (test bars)
    sel = np.zeros((M, B), bool)
    sel[:, test_bars] = True
    lat_corr = float(np.corrcoef(preds["gru"][0][sel] / np.repeat(
        sim.mu[:, None], B, 1)[sel], P.latent[sel])[0, 1])
    ratio = res["gru"]["ic"] / res["oracle"]["ic"]
    ratio_ci = ratio_interval(res["gru"], res["oracle"])
    # skill without the return noise: per-bar Spearman correlation with the oracle's prediction
    skill = {k: float(per_bar_ic(preds[k][0], P.oracle, test_bars)[1].mean())
             for k in ("gru", "lstm", "ridge")}
    log("test: rank correlation with the oracle's prediction: GRU %.3f, LSTM %.3f, ridge %.3f; "
        "ridge IC %.4f" % (skill["gru"], skill["lstm"], skill["ridge"], res["ridge"]["ic"]))
    log("validation: GRU IC %.4f, oracle IC %.4f" % (res["gru_val"]["ic"], res["oracle_val"]["ic"]))
    log("test: GRU IC %.4f, oracle IC %.4f, ratio %.3f (90%% block bootstrap %.3f-%.3f); "
        "LSTM IC %.4f" % (res["gru"]["ic"], res["oracle"]["ic"], ratio, ratio_ci[0],
                          ratio_ci[2], res["lstm"]["ic"]))
    summary = {
        "command": " ".join([".venv-train/bin/python", "tools/train/train_market.py"]
                            + (argv if argv is not None else sys.argv[1:])),
        "seed": a.seed, "train_seeds": [a.train_seed + k for k in range(a.members)],
        "ic_gru": res["gru"]["ic"], "ic_oracle": res["oracle"]["ic"], "ratio": ratio,
        "ratio_90": [ratio_ci[0], ratio_ci[2]], "ic_ir_gru": res["gru"]["ic_ir"],
        "hit_gru": res["gru"]["hit"], "skill_gru": skill["gru"], "ic_ridge": res["ridge"]["ic"],
        "skill_ridge": skill["ridge"], "ic_lstm": res["lstm"]["ic"],
        "sharpe_gross": res["gru"]["ls%d" % h]["sharpe_gross"],
        "sharpe_net": res["gru"]["ls%d" % h]["sharpe_net"],
        "val_ic_gru": res["gru_val"]["ic"], "val_ic_oracle": res["oracle_val"]["ic"]}
    if a.summary_out:
        import json
        with open(a.summary_out, "w", encoding="utf-8") as f:
            json.dump(summary, f, indent=1, sort_keys=True)
            f.write("\n")

    if a.no_export:
        log("--no-export: done in %.0f s" % (time.time() - T0))
        return 0

    # 7. export, fixtures, parity
    t = time.time()
    g_meta = save_model(a.model_out, g_t, "gru", g_ver, names, h, a.bar_ms)
    lstm_path = os.path.join(a.fixtures_dir, "market_lstm_small.safetensors")
    l_meta = save_model(lstm_path, l_t, "lstm", l_ver, names, h, a.bar_ms)
    rng = np.random.default_rng(a.seed * 1000 + 7)
    L = a.parity_len
    seqs = [(int(rng.integers(0, M)), int(rng.integers(test_bars[0], test_bars[-1] - L + 2)))
            for _ in range(a.parity_seqs)]
    gfix = parity_fixture(torch, "gru", g_t, g_ver, P.X, seqs, L,
                          os.path.join(a.fixtures_dir, "market_gru_parity.safetensors"), rng)
    lfix = parity_fixture(torch, "lstm", l_t, l_ver, P.X, seqs, L,
                          os.path.join(a.fixtures_dir, "market_lstm_parity.safetensors"), rng)
    par_g = check_parity(a.model_out, gfix)
    par_l = check_parity(lstm_path, lfix)
    for nm, pr in (("GRU", par_g), ("LSTM", par_l)):
        log("parity %s: %s" % (nm, ", ".join("%s abs %.2e rel %.2e" % (k, v["abs"], v["rel"])
                                             for k, v in pr.items())))
        worst = max(v["crit"] for v in pr.values())
        if worst > 1e-5:
            raise SystemExit("numpy step differs from PyTorch by %.3g (> 1e-5)" % worst)

    # the job end to end: a fresh small simulation replayed through MarketJob with the exported
    # GRU stepping inside the job, against PyTorch on the rows it produced
    e2e = job_check(torch, a, g_t, g_meta)
    timing["export"] = time.time() - t
    timing["total"] = time.time() - T0

    pngs = plots(a.plots_dir, P, test_bars, res["gru"], res["oracle"], preds["gru"][0],
                 y_scale, h)
    write_report(argparse.Namespace(
        a=a, sim=sim, desc=desc, P=P, train_bars=train_bars, val_bars=val_bars,
        test_bars=test_bars, mean=mean, scale=scale, y_scale=y_scale, res=res, ratio=ratio,
        skill=skill, lat_corr=lat_corr, ratio_ci=ratio_ci, summary=summary, g_meta=g_meta, l_meta=l_meta, members=members,
        lstm_epoch=lstm_epoch, lstm_val=lstm_val, par_g=par_g, par_l=par_l, gfix=gfix,
        lfix=lfix, e2e=e2e, preds=preds, timing=timing, pngs=pngs, torch=torch,
        horizons=horizons, names=names))
    log("wrote %s, %s, fixtures, %s in %.0f s" % (a.model_out, lstm_path, a.report_out,
                                                  time.time() - T0))
    return 0


def job_check(torch, a, tensors, meta):
    """The job end to end, on a fresh simulation (6 instruments, 3 hours, seed + 100):
    MarketJob with the exported model stepping inside it (numpy), against PyTorch's forward
    pass over the rows it produced; and the same stream with a restart half way (every
    instrument's value packed to its stored bytes, loaded into a new engine and job with the
    model read again from the file) giving the same signals, bit for bit."""
    sim = sm.simulate(6, 3.0, a.seed + 100)
    events = list(sim.iter_events())
    decl = rff.load(a.features_conf, schemas_dir=a.schemas)

    def new_job():
        m = rr.load_model(a.model_out)
        eng = rff.Engine(decl, job_state={rr.JOB_NAME: ("instrument", rr.JOB_VERSION,
                                                        rr.job_state_bytes(m))})
        return eng, rr.MarketJob(eng, m, bar_type="time", bar_ms=a.bar_ms), m

    def run(eng, job, lo, hi, out):
        for k in range(lo, hi):
            rt, rec = events[k]
            topic = TRADES_TOPIC if rt == rr.TRADE else QUOTES_TOPIC
            for sg in job.process(rt, rec, topic, 0, k):
                out.setdefault(sg["instrument"], []).append(sg)

    eng, job, m = new_job()
    sigs = {}
    run(eng, job, 0, len(events), sigs)
    # restart half way
    half = len(events) // 2
    eng1, job1, _ = new_job()
    sigs2 = {}
    run(eng1, job1, 0, half, sigs2)
    stored = {inst: eng1.state("instrument", inst).pack() for inst in sim.instruments}
    eng2, job2, _ = new_job()
    for inst, buf in stored.items():
        eng2.put_state("instrument", inst, buf)
    run(eng2, job2, half, len(events), sigs2)
    same = all(
        len(sigs[i]) == len(sigs2.get(i, [])) and all(
            x["bar_index"] == y["bar_index"] and x["expected_return_bps"] == y["expected_return_bps"]
            and x["p_up"] == y["p_up"] and np.array_equal(x["row"], y["row"])
            for x, y in zip(sigs[i], sigs2[i])) for i in sigs)
    net = torch_reference(torch, "gru", tensors)
    worst_er, worst_p, n = 0.0, 0.0, 0
    for inst, ss in sigs.items():
        xs = np.array([[sg["row"] for sg in ss]])
        with torch.no_grad():
            y, _, _ = net(standardise(torch, xs, tensors["scaler.mean"], tensors["scaler.scale"]))
        ref_er = y[0, :, 0].numpy().astype(np.float64)
        ref_p = torch.sigmoid(y[0, :, 1]).numpy().astype(np.float64)
        er = np.array([sg["expected_return_bps"] for sg in ss])
        pu = np.array([sg["p_up"] for sg in ss])
        worst_er = max(worst_er, float(np.max(np.abs(er - ref_er) / np.maximum(1.0, np.abs(ref_er)))))
        worst_p = max(worst_p, float(np.max(np.abs(pu - ref_p))))
        n += len(ss)
        # the job state holds the last hidden state and the model's signature
        js = rr.JobState.unpack(bytes(eng.state("instrument", inst).job_state(rr.JOB_NAME)), m.H)
        assert js.signature == rr.fnv1a64(meta["version"])
        assert np.array_equal(js.h, ss[-1]["h"])
    if not same:
        raise SystemExit("job check: the restarted stream gave other signals")
    if max(worst_er, worst_p) > 1e-5:
        raise SystemExit("job check: the job's signals differ from PyTorch by %.3g"
                         % max(worst_er, worst_p))
    return {"signals": n, "instruments": len(sigs), "worst_er": worst_er, "worst_p": worst_p,
            "restart_same": same, "events": len(events),
            "value_bytes": len(stored[sim.instruments[0]])}


def write_report(R):
    import matplotlib
    import safetensors
    import scipy
    a, sim, P, res, torch = R.a, R.sim, R.P, R.res, R.torch
    p, desc, names = sim.params, R.desc, R.names
    g, o, l, rg = res["gru"], res["oracle"], res["lstm"], res["ridge"]
    hz = a.horizon_bars
    start = datetime.datetime.fromtimestamp(sim.start_ms / 1000, datetime.timezone.utc)

    def bar_time(b):
        return datetime.datetime.fromtimestamp(P.ends[b] / 1000, datetime.timezone.utc).strftime(
            "%Y-%m-%d %H:%M")

    cmd = ".venv-train/bin/python tools/train/train_market.py --seed %d" % a.seed
    if a.train_seed != 1:
        cmd += " --train-seed %d" % a.train_seed
    if a.date:
        cmd += " --date %s" % a.date
    sel = np.zeros_like(P.y, bool)
    sel[:, R.test_bars] = True
    orc_sd = float(np.nanstd(P.oracle[sel]))
    L = []
    w = L.append
    w("# Market model — training report")
    w("")
    w("Generated by `tools/train/train_market.py` (do not edit by hand). Model `%s`, written to "
      "`deploy/models/market_gru.safetensors`." % R.g_meta["version"])
    w("")
    w("Every number below comes from one command: `%s` (simulation seed %d; torch and sampling "
      "seeds %s for the GRU members, %d for the LSTM; %d torch thread(s), %d replay processes)."
      % (cmd, a.seed, ", ".join(str(mb["seed"]) for mb in R.members), a.train_seed + 100,
         a.threads, a.workers))
    w("")
    w("## Result (test period, out of sample)")
    w("")
    w("| predictor | mean IC (Spearman) | IC IR | bars with IC > 0 | Pearson IC | hit rate | "
      "rank corr. with the oracle | L/S Sharpe before costs | after costs |")
    w("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, r, sk in (("**GRU (shipped)**", g, R.skill["gru"]),
                        ("LSTM, hidden %d (test fixture)" % a.lstm_hidden, l, R.skill["lstm"]),
                        ("ridge on the same features (baseline, not shipped)", rg, R.skill["ridge"]),
                        ("**oracle E[r \\| latent] (best possible)**", o, 1.0)):
        ls = r["ls%d" % hz]
        w("| %s | %s | %s | %.0f%% | %s | %.1f%% | %.3f | %.1f | %.1f |" % (
            name, fmt(r["ic"]), fmt(r["ic_ir"], 3), 100 * r["ic_pos"], fmt(r["ic_pearson"]),
            100 * r["hit"], sk, ls["sharpe_gross"], ls["sharpe_net"]))
    w("")
    w("**GRU IC / best possible IC = %.4f / %.4f = %.3f** (goal: at least 0.80); 90%% "
      "interval %.3f–%.3f (moving-block bootstrap of the test bars, blocks of 30 bars). On the "
      "validation period: GRU %.4f, oracle %.4f (ratio %.3f). The GRU's rank correlation with "
      "the oracle's prediction, %.3f, is the share of the best possible IC to expect on another "
      "test set; the ratio on one test set scatters around it (return noise that happens to "
      "agree with the model's errors)." % (
          g["ic"], o["ic"], R.ratio, R.ratio_ci[0], R.ratio_ci[2], res["gru_val"]["ic"],
          res["oracle_val"]["ic"], res["gru_val"]["ic"] / res["oracle_val"]["ic"],
          R.skill["gru"]))
    w("")
    w("On these features a linear model (ridge, last row but one) tracks the latent about as "
      "well as the GRU (rank correlation with the oracle %.3f vs %.3f): the declared features "
      "already integrate the order flow over 30 s, 2 min and 10 min, so the recurrent state has "
      "little left to add in this simulator, whose latent is one linear mean-reverting "
      "process. The GRU is what the market job runs; its value over a per-bar model would show "
      "with signals that need memory beyond the features' horizons." % (
          R.skill["ridge"], R.skill["gru"]))
    w("")
    if a.seed_summaries:
        import json
        rows = [R.summary] + [json.load(open(f, encoding="utf-8")) for f in a.seed_summaries]
        w("Other simulation seeds (same code and options; each row's command produced it):")
        w("")
        w("| simulation seed | GRU IC | oracle IC | ratio | 90% interval | rank corr. with oracle | ridge IC | validation ratio | command |")
        w("|---:|---:|---:|---:|---|---:|---:|---:|---|")
        for r in rows:
            w("| %d | %.4f | %.4f | **%.3f** | %.3f–%.3f | %.3f | %.4f | %.3f | `%s` |" % (
                r["seed"], r["ic_gru"], r["ic_oracle"], r["ratio"], r["ratio_90"][0],
                r["ratio_90"][1], r["skill_gru"], r["ic_ridge"],
                r["val_ic_gru"] / r["val_ic_oracle"], r["command"]))
        w("")
    w("- **IC**: per bar, the cross-sectional Spearman rank correlation between the prediction "
      "(`expected_return_bps`) and the realised %d-bar return over the %d instruments, averaged "
      "over the %d test bars. **IC IR** = mean / standard deviation of the per-bar IC (per bar, "
      "not annualised; consecutive labels overlap by %d bars, so the per-bar ICs are "
      "autocorrelated). Pearson IC alongside." % (hz, P.M, g["n_bars"], hz - 1))
    w("- **Best possible IC**: the simulator's oracle E[return over the horizon | latent at the "
      "bar end] = mu_i s_i(T) (1 − phi^tau)/(1 − phi) (`simulate_market.MarketSim.oracle_bps`), "
      "on exactly the same bars and labels. Nothing observable carries more information about "
      "future returns than the latent, so no model can beat it on average; on a finite test set "
      "a model can land above or below its expected share. The **rank correlation with the "
      "oracle** (per bar, Spearman between the prediction and the oracle's prediction, "
      "averaged) measures how well a model tracks the latent without the return noise; the "
      "GRU's expected_return_bps / mu_i has a correlation of %.3f with the latent itself." % R.lat_corr)
    w("- **Hit rate**: the fraction of (instrument, bar) pairs where the sign of the prediction "
      "is the sign of the realised return (zero returns left out; %d pairs). `p_up` of the GRU: "
      "AUC %.3f for the up move, right %.1f%% of the time at 0.5 (mean p_up %.3f, up rate %.3f)."
      % (g["n_obs"], g["auc_up"], 100 * g["hit_up"], g["mean_p_up"], g["up_rate"]))
    w("- **Long/short** (the Sharpe columns above): each bar, long the top 20%% of instruments "
      "by prediction and short the bottom 20%%, equal weights (1 unit long, 1 unit short); each "
      "bar's portfolio is held %d bars (%d staggered cohorts, the position is their average), P&L "
      "bar by bar from the mid of the book. **Cost model: half the quoted spread (the book at the bar end) "
      "per unit traded**, i.e. sum over instruments of |change in weight| × "
      "half-spread, no impact, no fees. Sharpe annualised with %d one-minute bars a year (the "
      "simulated market trades 24/7)." % (hz, hz, BARS_PER_YEAR_1M))
    w("")
    w("| rule | predictor | gross bps/bar | cost bps/bar | net bps/bar | turnover/bar | Sharpe gross | Sharpe net |")
    w("|---|---|---:|---:|---:|---:|---:|---:|")
    for hold, rule in ((hz, "%d staggered cohorts (each held %d bars)" % (hz, hz)),
                       (1, "rebalanced every bar")):
        for name, r in (("GRU", g), ("oracle", o)):
            ls = r["ls%d" % hold]
            w("| %s | %s | %.3f | %.3f | %.3f | %.2f | %.1f | %.1f |" % (
                rule, name, ls["gross_bps"], ls["cost_bps"], ls["net_bps"], ls["turnover"],
                ls["sharpe_gross"], ls["sharpe_net"]))
    w("")
    w("Scale: the oracle's expected %d-bar return has a standard deviation of %.2f bps across "
      "instrument-bars, and half the quoted spread is %.2f bps (median): the edge is of the "
      "order of the cost of crossing the spread, so a portfolio rebalanced every minute gives "
      "most or all of it away, and holding each bar's portfolio for the horizon keeps more. "
      "Annualised Sharpe ratios of 1-minute strategies over 525,600 bars a year are large by "
      "construction (and the simulated market has no impact, no fees and a signal of fixed "
      "strength): compare them with each other, not with real strategies."
      % (hz, orc_sd, float(np.nanmedian(P.hs))))
    w("")
    for f in R.pngs:
        w("![%s](report/%s)" % (f, f))
    w("")
    w("## Simulated market")
    w("")
    w("`simulate_market.py`: %d instruments, %.0f hours of continuous trading from %s, seed %d: "
      "%d trades and %d quotes (%d events)." % (
          sim.n_instruments, sim.n_seconds / 3600, start.strftime("%Y-%m-%d %H:%M UTC"), a.seed,
          int((sim.ev_kind == 1).sum()), int((sim.ev_kind == 0).sum()), sim.n_events))
    w("")
    w("- A **latent order flow** s_i(t) per instrument: an Ornstein-Uhlenbeck process, N(0, 1), "
      "half-life %.0f min. It tilts the aggressor side (P(BUY) = sigmoid(%.2f s), %.2f at one "
      "standard deviation), the trade sizes (lognormal, × e^(±%.2f s) for buys/sells) and, "
      "weakly, the displayed sizes (bid × e^(%.2f s), ask × e^(−%.2f s)); and it **drives the "
      "efficient price**: drift mu_i s per second with mu_i = %.3f × (1-minute idiosyncratic "
      "sd) / 60, so at s = 1 the price drifts %.3f idiosyncratic sds per minute." % (
          p.signal_halflife_s / 60, p.side_tilt, 1 / (1 + math.exp(-p.side_tilt)), p.size_tilt,
          p.book_tilt, p.book_tilt,
          p.alpha, p.alpha))
    w("- Efficient log price: the drift, a market factor (1-minute sd %.1f bps, betas %.1f–%.1f) "
      "and idiosyncratic Student-t(%g) shocks (1-minute sd %.0f–%.0f bps across instruments) "
      "scaled by a slow volatility regime (log-vol OU, sd %.1f, half-life %.0f h) that also "
      "widens spreads and speeds up trading. Quotes: bid/ask around the efficient price, half "
      "spread %.1f–%.1f bps × the regime, on a %.2f tick; trades at the touch." % (
          p.mkt_vol_1m_bps, p.beta_range[0], p.beta_range[1], p.t_df, p.idio_vol_1m_bps[0],
          p.idio_vol_1m_bps[1], p.logvol_sd, p.logvol_halflife_s / 3600, p.half_spread_bps[0],
          p.half_spread_bps[1], p.tick))
    w("- All parameters: %s." % ", ".join("`%s=%s`" % (k, v) for k, v in vars(p).items()))
    w("- What it looks like (1-minute bars of the efficient price): return sd per bar median "
      "%.1f bps (%.1f–%.1f across instruments; %.0f%% annualised over 24/7), kurtosis %.1f, "
      "lag-1 autocorrelation %.3f; quoted spread median %.1f bps (90th percentile %.1f); %.1f "
      "trades and %.1f quotes per instrument-minute; %.1f%% of trades buyer-initiated; prices "
      "%.2f–%.2f." % (
          desc["ret_sd_bps_median"], desc["ret_sd_bps_min"], desc["ret_sd_bps_max"],
          100 * desc["ann_vol_median"], desc["kurtosis_median"], desc["autocorr_median"],
          desc["spread_bps_median"], desc["spread_bps_p90"], desc["trades_per_min"],
          desc["quotes_per_min"], 100 * desc["buy_fraction"], desc["price_min"],
          desc["price_max"]))
    w("")
    w("## Data")
    w("")
    w("- Bars: `market.bar.type=time`, `market.bar.ms=%d`. Every event replayed in time order "
      "through `riskflow_features.py` with `deploy/features.conf`, driven by "
      "`riskflow_recurrent.MarketJob` (ENGINE.md §5: features evaluated as of each bar's last "
      "event, when the next bar's first event arrives) — the rows riskflowd would feed the "
      "model. Trades from topic `%s`, quotes from `%s`, partition 0, offset = the event's index "
      "in the stream. %d closed bars, %d instruments × %d bars." % (
          a.bar_ms, TRADES_TOPIC, QUOTES_TOPIC, int(P.have.sum()), P.M, P.B))
    w("- Label: the log return of the mid of the top of book from the bar end to %d bars later, "
      "in bps (sd %.2f on the training bars); up move = return > 0. The book is the simulator's "
      "(`MarketSim.book_at`), which the quote messages sample every 5–12 s: the last quote "
      "message before a bar end can be seconds stale, and the trades since would predict its "
      "next update, a (real, but here unwanted) effect outside the latent signal; the P&L and "
      "the half-spread of the cost model use the same book." % (hz, R.y_scale))
    w("- Split by time: bars %d–%d (%s – %s UTC) train, %d–%d (%s – %s) validation, %d–%d "
      "(%s – %s) test; the first %d bars are left out (15-minute windows filling) and %d bars "
      "after the training and validation periods, so no label reaches into the next period. "
      "The hidden state is always carried from each instrument's first bar, as riskflowd "
      "carries it." % (
          R.train_bars[0], R.train_bars[-1], bar_time(R.train_bars[0]), bar_time(R.train_bars[-1]),
          R.val_bars[0], R.val_bars[-1], bar_time(R.val_bars[0]), bar_time(R.val_bars[-1]),
          R.test_bars[0], R.test_bars[-1], bar_time(R.test_bars[0]), bar_time(R.test_bars[-1]),
          a.warmup_bars, hz))
    w("")
    w("## Model")
    w("")
    K = len(R.members)
    w("One `nn.GRU(%d, %d)` + `nn.Linear(%d, 2)` (PyTorch %s, CPU), built from **%d GRUs of "
      "hidden %d trained independently** (seeds %s) and averaged: per gate their input weights "
      "and biases are stacked, their recurrent weights placed block-diagonally and the head "
      "averages theirs — the same function, exactly (checked against the members' average to "
      "1e-5), in the one-layer GRU format of MODELS.md §3. The labels are mostly noise (the best "
      "possible IC is ~%.2f) and a single network fits part of it; averaging members cuts "
      "that part down. Test period, each member alone: %s; the average: IC %.4f, rank "
      "correlation with the oracle %.3f." % (
          len(names), a.hidden, a.hidden, torch.__version__, K, a.hidden // K,
          ", ".join(str(mb["seed"]) for mb in R.members), o["ic"],
          "; ".join("IC %.4f, rank correlation with the oracle %.3f" % (mb["test_ic"], mb["skill"])
                    for mb in R.members), g["ic"], R.skill["gru"]))
    w("")
    w("Each member: inputs standardised with the training bars' mean and sd (`scaler.*`); loss "
      "= MSE of output 0 against the %d-bar label + %.1f × BCE of output 1 against the up move, "
      "plus %.1f × MSE of a training-only linear head against the %s-bar returns; every return "
      "target minus its cross-sectional mean per bar (the market's move is noise for ranking) "
      "over its training sd, clipped at ±5. Windows of %d bars (the first %d only warm the "
      "hidden state up) drawn at random from the training bars, %d per batch, %d batches per "
      "epoch, Adam lr %g, weight decay %g, gradient norm clipped at 1, an exponential moving "
      "average of the weights (%.3f per batch) evaluated and kept; up to %d epochs, the epoch "
      "with the best validation IC kept (patience %d): %s. At export output 0 is scaled to "
      "basis points (head row 0 × %.4f), so `expected_return_bps` = y[0] and `p_up` = "
      "sigmoid(y[1]) as MODELS.md §3 states." % (
          hz, a.bce_weight, a.aux_weight, ", ".join(str(k) for k in R.horizons[1:]), a.window,
          a.burn_in, a.batch, a.batches, a.lr, a.weight_decay, a.ema, a.epochs, a.patience,
          "; ".join("member %d epoch %d, validation IC %.4f" % (i + 1, mb["epoch"], mb["val_ic"])
                    for i, mb in enumerate(R.members)), R.y_scale))
    w("")
    w("Metadata: %s." % ", ".join("`%s`=`%s`" % (k, v) for k, v in R.g_meta.items()))
    w("")
    w("| # | feature (deploy/features.conf) | scaler.mean | scaler.scale |")
    w("|---:|---|---:|---:|")
    for j, n in enumerate(names):
        w("| %d | `%s` | %.6g | %.6g |" % (j, n, R.mean[j], R.scale[j]))
    w("")
    w("Small LSTM (`tests/fixtures/market_lstm_small.safetensors`, for the C loader's LSTM "
      "path, not for use): one `nn.LSTM(%d, %d)`, same features, scaler and loss, seed %d, "
      "epoch %d kept (validation IC %.4f); version `%s`." % (
          len(names), a.lstm_hidden, a.train_seed + 100, R.lstm_epoch, R.lstm_val,
          R.l_meta["version"]))
    w("")
    w("## Parity")
    w("")
    for nm, fx, pr, fn in (("GRU", R.gfix, R.par_g, "market_gru_parity.safetensors"),
                           ("LSTM", R.lfix, R.par_l, "market_lstm_parity.safetensors")):
        N, Lq, Fq = fx["x"].shape
        w("- `tests/fixtures/%s`: `x` [%d, %d, %d] float32 raw feature rows (model order, "
          "unscaled): %d sequences of %d consecutive test-period bars of random instruments, then "
          "16 with inputs pushed 8–30 scaler sds out (saturated gates); `h` [%d, %d, %d]%s the "
          "state after each step, from zeros; `y` [%d, %d, 2] = (expected_return_bps, p_up) from "
          "PyTorch's own forward pass (nn.%s + Linear + sigmoid, float32). "
          "`riskflow_recurrent` on `x`, worst |diff|: %s; worst relative diff where |ref| ≥ "
          "1e-3: %s; worst |diff| / max(1, |ref|): %.2e." % (
              fn, N, Lq, Fq, N - 16, Lq, N, Lq, fx["h"].shape[2],
              (", `c` [%d, %d, %d]" % fx["c"].shape) if "c" in fx else "", N, Lq, nm,
              ", ".join("%s %.2e" % (k, v["abs"]) for k, v in pr.items()),
              ", ".join("%s %.2e" % (k, v["rel"]) for k, v in pr.items()),
              max(v["crit"] for v in pr.values())))
    w("- A pure relative test fails near zero in float32 (a hidden unit of 1e-3 computed with "
      "another summation order differs in its 4th digit): the C test should use |diff| ≤ 1e-5 × "
      "max(1, |ref|), the criterion applied here (y0, expected_return_bps, is in bps).")
    w("- Over every bar of the simulation (numpy model vs PyTorch, hidden state carried over "
      "%d bars): worst |diff| of expected_return_bps %.2e bps (GRU), %.2e (LSTM)." % (
          P.B, R.preds["gru"][2], R.preds["lstm"][2]))
    e = R.e2e
    w("- The job end to end: a fresh simulation (6 instruments, 3 hours, seed %d, %d events) "
      "through `MarketJob` with the exported GRU stepping inside the job (hidden state in the "
      "instrument's job-state bytes, %d-byte instrument values): %d signals; worst difference "
      "from PyTorch on the same rows %.2e (expected_return_bps, relative to max(1, |ref|)) and "
      "%.2e (p_up); each instrument's state holds the last hidden state and FNV-1a 64 of the "
      "version. The same stream with a restart half way (every value packed, loaded into a new "
      "engine, the model read again): %s." % (
          a.seed + 100, e["events"], e["value_bytes"], e["signals"], e["worst_er"], e["worst_p"],
          "the same signals, bit for bit" if e["restart_same"] else "DIFFERENT signals"))
    w("")
    w("## Environment and run time")
    w("")
    w("Python %s, numpy %s, torch %s (CPU, %d thread(s)), scipy %s, safetensors %s, "
      "matplotlib %s." % (platform.python_version(), np.__version__, torch.__version__,
                          a.threads, scipy.__version__, safetensors.__version__,
                          matplotlib.__version__))
    w("")
    w("Run time on the shared 2-core machine: %s." % ", ".join(
        "%s %.0f s" % (k.replace("_", " "), v) for k, v in R.timing.items()))
    w("")
    with open(a.report_out, "w", encoding="utf-8") as f:
        f.write("\n".join(L))


if __name__ == "__main__":
    sys.exit(main())
