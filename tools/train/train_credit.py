#!/usr/bin/env python3
"""train_credit — train the credit-default scorecard and export it for riskflowd.

  1. simulate (simulate_credit.py, seeded): customers' credit events and payments up to the
     observation date;
  2. features: every event replayed in event-time order through riskflow_features.py (the
     reference of riskflowd's declared-feature engine, deploy/features.conf); each customer's
     snapshot is its credit features after its last event before the observation date (what
     the credit job scored last); a few customers are traced after every event;
  3. labels: the simulator's known PD, sigmoid(g(x)) of the snapshot, and a default drawn from
     it; customers already 90+ days past due are excluded;
  4. split by customer (--test-frac, seeded); on the training customers: per feature, fine
     quantile bins merged until the default rate is monotone and every bin is big enough;
     WoE per bin; information value; LogisticRegression on the WoE columns; features with
     IV < --min-iv or a coefficient of the wrong sign are dropped;
  5. points (base score 600 at odds 50:1, PDO 20), bands (one PDO wide: the odds double from
     one band to the next), the riskflow.scorecard.v1 JSON (docs/MODELS.md §2);
  6. metrics on the test customers next to the oracle (the AUC of the true PD itself): AUC,
     KS, Brier, calibration and band tables, ROC and calibration plots; the parity fixture for
     the C scorecard; tools/train/CREDIT_REPORT.md.

numpy + scikit-learn + matplotlib + standard library.
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
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal

import numpy as np
import sklearn
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import brier_score_loss, roc_auc_score, roc_curve

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.normpath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, HERE)

import riskflow_scorecard as rsc  # noqa: E402
import simulate_credit as sim  # noqa: E402

MODEL_FORMAT = rsc.FORMAT
MODEL_NAME = "credit"
BASE_SCORE, BASE_ODDS, PDO = 600, 50, 20
BAND_NAMES = "ABCDEFGHIJKL"
NEAR_BAND = 1e-6  # parity rows whose score is this close to a band edge are left out


def log(msg):
    print("train_credit: " + msg, file=sys.stderr, flush=True)


# -- binning -----------------------------------------------------------------------------------

def nice_edge(lo, hi):
    """The decimal with the fewest significant digits e, lo < e <= hi (lo < hi): a value
    <= lo falls below the edge, a value >= hi above it (edges belong to the upper bin)."""
    if not lo < hi:
        raise ValueError("nice_edge(%r, %r)" % (lo, hi))
    if lo < 0.0 <= hi:
        return 0.0
    for digits in range(1, 18):
        for x, rnd in ((hi, ROUND_FLOOR), (lo, ROUND_CEILING)):
            d = Decimal(repr(float(x)))
            e = float(d.quantize(Decimal(1).scaleb(d.adjusted() - digits + 1), rounding=rnd))
            if lo < e <= hi:
                return e
    return float(hi)


def fine_edges(x, max_bins):
    """Candidate edges: between every two distinct values when there are at most max_bins of
    them, else between the distinct values around each of max_bins - 1 quantiles."""
    u = np.unique(x)
    if len(u) <= max_bins:
        pairs = zip(u[:-1], u[1:])
    else:
        qs = np.unique(np.quantile(x, np.linspace(0, 1, max_bins + 1)[1:-1],
                                   method="inverted_cdf"))
        k = np.searchsorted(u, qs, side="right")
        k = k[k < len(u)]
        pairs = zip(u[k - 1], u[k])
    return sorted(set(nice_edge(float(a), float(b)) for a, b in pairs))


def bin_of(edges, x):
    """MODELS.md §2: the number of edges <= x; a non-finite x is in bin 0."""
    b = np.searchsorted(np.asarray(edges, dtype=float), x, side="right")
    return np.where(np.isfinite(x), b, 0)


def monotone_merge(edges, n, bad, direction, min_n, min_bad):
    """Merge adjacent bins until every bin has >= min_n rows, >= min_bad defaults and
    >= min_bad non-defaults, and the default rate is strictly monotone in `direction`
    (+1: rises with the value, -1: falls). Returns (edges, n, bad)."""
    edges, n, bad = list(edges), list(map(float, n)), list(map(float, bad))

    def merge(j):  # bins j and j + 1
        n[j:j + 2] = [n[j] + n[j + 1]]
        bad[j:j + 2] = [bad[j] + bad[j + 1]]
        del edges[j]

    while len(n) > 1:
        small = [i for i in range(len(n))
                 if n[i] < min_n or bad[i] < min_bad or n[i] - bad[i] < min_bad]
        if small:
            i = min(small, key=lambda k: (n[k], k))
            if i == 0:
                merge(0)
            elif i == len(n) - 1:
                merge(i - 1)
            else:
                merge(i - 1 if n[i - 1] <= n[i + 1] else i)
            continue
        rate = [b / m for b, m in zip(bad, n)]
        viol = [i for i in range(len(n) - 1) if direction * (rate[i + 1] - rate[i]) <= 0]
        if not viol:
            break
        merge(viol[0])
    return edges, np.array(n), np.array(bad)


def woe_values(n, bad, smooth):
    """ln(%good / %bad) per bin; `smooth` added to every bin's goods and bads (so that a bin
    without one or the other still has a finite WoE; the merge above leaves none)."""
    good = n - bad
    B, G = bad.sum(), good.sum()
    k = len(n)
    return np.log(((good + smooth) / (G + smooth * k)) / ((bad + smooth) / (B + smooth * k)))


def fit_binning(x, y, max_bins, min_frac, min_bad, smooth):
    edges = fine_edges(x, max_bins)
    n = np.bincount(bin_of(edges, x), minlength=len(edges) + 1)
    bad = np.bincount(bin_of(edges, x), weights=y, minlength=len(edges) + 1)
    # the trend: the sign of the rank correlation with the default
    if np.ptp(x) > 0:
        rx = np.argsort(np.argsort(x, kind="stable"), kind="stable").astype(float)
        rho = float(np.corrcoef(rx, y)[0, 1])
    else:
        rho = 0.0
    direction = 1 if rho >= 0 else -1
    edges, n, bad = monotone_merge(edges, n, bad, direction, min_frac * len(x), min_bad)
    woe = woe_values(n, bad, smooth)
    good = n - bad
    iv = float(np.sum((good / good.sum() - bad / bad.sum()) * woe))
    return {"edges": [float(e) for e in edges], "woe": [float(w) for w in woe],
            "n": n.astype(int).tolist(), "bad": bad.astype(int).tolist(), "iv": iv,
            "direction": direction, "rho": rho}


def woe_matrix(X, bins, cols):
    return np.column_stack([np.asarray(bins[j]["woe"])[bin_of(bins[j]["edges"], X[:, j])]
                            for j in cols])


def wald_p(W, lr):
    """Two-sided Wald p-values of the coefficients of a fitted (practically unpenalised)
    logistic regression, from the inverse of the observed information."""
    A = np.column_stack([np.ones(len(W)), W])
    p = lr.predict_proba(W)[:, 1]
    H = (A * (p * (1 - p))[:, None]).T @ A
    se = np.sqrt(np.diag(np.linalg.inv(H)))[1:]
    zs = np.abs(lr.coef_[0] / se)
    return np.array([math.erfc(z / math.sqrt(2.0)) for z in zs])


# -- metrics -----------------------------------------------------------------------------------

def ks_stat(y, s):
    fpr, tpr, _ = roc_curve(y, s)
    return float(np.max(tpr - fpr))


def auc_gap_ci(y, s_model, s_oracle, n_boot, seed):
    """Paired bootstrap over the test customers: the 95 % interval of oracle AUC - model AUC."""
    rng = np.random.default_rng(seed)
    gaps = []
    n = len(y)
    for _ in range(n_boot):
        i = rng.integers(0, n, n)
        if y[i].min() == y[i].max():
            continue
        gaps.append(roc_auc_score(y[i], s_oracle[i]) - roc_auc_score(y[i], s_model[i]))
    return float(np.percentile(gaps, 2.5)), float(np.percentile(gaps, 97.5))


def calibration_table(y, p_model, p_true, n_groups=10):
    """Groups of equal size by the model's PD: n, mean model PD, mean true PD, default rate."""
    order = np.argsort(p_model, kind="stable")
    rows = []
    for part in np.array_split(order, n_groups):
        rows.append((len(part), float(p_model[part].mean()), float(p_true[part].mean()),
                     float(y[part].mean()), float(p_model[part].min()),
                     float(p_model[part].max())))
    return rows


# -- points and bands ----------------------------------------------------------------------------

def factor_offset():
    factor = PDO / math.log(2)
    return factor, BASE_SCORE - factor * math.log(BASE_ODDS)


def choose_bands(scores, min_share):
    """Bands one PDO wide on the grid base_score + k*PDO (each band's odds are twice the next
    one's), from the top: the grid points with at least min_share of the customers above the
    highest and below the lowest; A is the best band."""
    grid = [BASE_SCORE + k * PDO for k in range(8, -12, -1)]
    n = len(scores)
    mins = []
    for g in grid:
        above = np.mean(scores >= g)
        if above < min_share:
            continue
        below = np.mean(scores < g)
        if below < min_share:
            break
        if mins and np.mean((scores >= g) & (scores < mins[-1])) < min_share:
            continue
        mins.append(g)
    if len(mins) + 1 > len(BAND_NAMES):
        mins = mins[:len(BAND_NAMES) - 1]
    bands = [{"name": BAND_NAMES[i], "min_score": float(m)} for i, m in enumerate(mins)]
    bands.append({"name": BAND_NAMES[len(mins)], "min_score": None})
    assert n > 0
    return bands


# -- the model file ------------------------------------------------------------------------------

def model_doc(names, bins, cols, coef, intercept, bands, date):
    body = {
        "features": [{"name": names[j], "edges": bins[j]["edges"], "woe": bins[j]["woe"]}
                     for j in cols],
        "coefficients": [float(c) for c in coef],
        "intercept": float(intercept),
        "scaling": {"base_score": BASE_SCORE, "base_odds": BASE_ODDS, "pdo": PDO},
        "bands": bands,
    }
    canon = json.dumps(body, sort_keys=True, separators=(",", ":"))
    digest = hashlib.sha256(canon.encode("utf-8")).hexdigest()[:8]
    doc = {"format": MODEL_FORMAT, "name": MODEL_NAME,
           "version": "credit-sc-%s-%s" % (date, digest)}
    doc.update(body)
    text = rsc.dumps(doc)
    back = json.loads(text)
    assert back == json.loads(json.dumps(doc)), "model JSON does not read back"
    return doc, text


# -- parity fixture ------------------------------------------------------------------------------

def fixture_header(feats):
    cols = list(feats) + ["pd", "score", "band"]
    for k in range(1, rsc.MAX_REASONS + 1):
        cols += ["reason%d_feature" % k, "reason%d_points_lost" % k]
    return cols


def fixture_row(sc, values):
    r = sc.score_values(values)
    out = [repr(float(v)) for v in values] + [repr(r.pd), repr(r.score), r.band]
    for k in range(rsc.MAX_REASONS):
        if k < len(r.reasons):
            out += [r.reasons[k].feature, repr(r.reasons[k].points_lost)]
        else:
            out += ["", ""]
    return out, r


def parity_rows(sc, real_rows, rng):
    """Real rows, then for each feature: every edge exactly and the double just below it,
    extremes and non-finite values (the other features from a real row), then every feature
    in its best bin and every feature in its worst bin."""
    real_rows = [list(map(float, r)) for r in real_rows]
    edge_rows = []
    k = len(sc.features)

    def base():
        return list(real_rows[int(rng.integers(0, len(real_rows)))])

    for j in range(k):
        for e in sc.edges[j]:
            for v in (e, math.nextafter(e, -math.inf), math.nextafter(e, math.inf)):
                r = base()
                r[j] = v
                edge_rows.append(r)
        for v in (0.0, -0.0, -1.0, 1.0, 1e-300, -1e300, 1e300, 5e-324, 1.7976931348623157e308,
                  float("nan"), float("inf"), float("-inf")):
            r = base()
            r[j] = v
            edge_rows.append(r)
    # best bin and worst bin of every feature at once: the first value of that bin
    best, worst = [], []
    for j in range(k):
        pts = sc.bin_points[j]
        bb = max(range(len(pts)), key=lambda b: (pts[b], -b))
        wb = min(range(len(pts)), key=lambda b: (pts[b], b))
        val = lambda b: (sc.edges[j][b - 1] if b > 0 else  # noqa: E731
                         (sc.edges[j][0] - 1.0 if sc.edges[j] else 0.0))
        best.append(val(bb))
        worst.append(val(wb))
    edge_rows += [best, worst]
    return real_rows, edge_rows


def write_parity(path, sc, real_rows, seed):
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0xF1C7]))
    real, edge = parity_rows(sc, real_rows, rng)
    near_band = math.inf
    n_reasons = [0] * (rsc.MAX_REASONS + 1)
    rows, n_left_out = [], 0
    with open(path, "w", encoding="utf-8") as f:
        f.write(",".join(fixture_header(sc.features)) + "\n")
        for r in real + edge:
            out, res = fixture_row(sc, r)
            d = min([abs(res.score - m) for m in sc.band_min if m is not None] or [math.inf])
            if d < NEAR_BAND:
                n_left_out += 1
                continue
            near_band = min(near_band, d)
            f.write(",".join(out) + "\n")
            rows.append(r)
            n_reasons[len(res.reasons)] += 1
    # read back: every float parses to the same double, every row scores the same
    with open(path, encoding="utf-8") as f:
        head = f.readline().rstrip("\n").split(",")
        k = len(sc.features)
        for line, r in zip(f, rows):
            cells = line.rstrip("\n").split(",")
            vals = [float(c) for c in cells[:k]]
            assert all((a == b) or (math.isnan(a) and math.isnan(b)) for a, b in zip(vals, r))
            assert len(cells) == len(head)
    return {"rows": len(rows), "real": len(real), "edge": len(edge), "left_out": n_left_out,
            "near_band": near_band, "n_reasons": n_reasons}


# -- plots ---------------------------------------------------------------------------------------

def plots(outdir, y, p_model, p_true, auc_m, auc_o, calib):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(outdir, exist_ok=True)
    fig, ax = plt.subplots(figsize=(5.5, 5.0), dpi=110)
    for s, lbl in ((p_model, "scorecard (AUC %.4f)" % auc_m), (p_true, "oracle: true PD (AUC %.4f)" % auc_o)):
        fpr, tpr, _ = roc_curve(y, s)
        ax.plot(fpr, tpr, label=lbl)
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
    ax.set_xlabel("false positive rate (non-defaults)")
    ax.set_ylabel("true positive rate (defaults)")
    ax.set_title("Credit scorecard, test customers")
    ax.legend(loc="lower right")
    fig.tight_layout()
    roc_path = os.path.join(outdir, "credit_roc.png")
    fig.savefig(roc_path)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(5.5, 5.0), dpi=110)
    pm = [c[1] for c in calib]
    pt = [c[2] for c in calib]
    obs = [c[3] for c in calib]
    ns = [c[0] for c in calib]
    lo = min(min(pm), min(pt), min(o for o in obs if o > 0) if any(obs) else 1.0) / 1.5
    hi = max(max(pm), max(obs), max(pt)) * 1.5
    # 95 % interval of the observed rate (normal approximation), clipped to the plot
    err_lo = [max(0.0, min(o - lo, 1.96 * math.sqrt(o * (1 - o) / n))) for o, n in zip(obs, ns)]
    err_hi = [1.96 * math.sqrt(max(o * (1 - o), 1e-12) / n) for o, n in zip(obs, ns)]
    ax.plot([lo, hi], [lo, hi], color="grey", lw=0.8, ls="--")
    ax.errorbar(pm, [max(o, lo) for o in obs], yerr=[err_lo, err_hi], fmt="o",
                label="observed default rate (95% CI)")
    ax.plot(pm, pt, "s", mfc="none", label="mean true PD")
    ax.set_xlabel("mean scorecard PD (deciles of the scorecard PD)")
    ax.set_ylabel("default rate")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_title("Calibration, test customers")
    ax.legend(loc="upper left")
    fig.tight_layout()
    cal_path = os.path.join(outdir, "credit_calibration.png")
    fig.savefig(cal_path)
    plt.close(fig)
    return roc_path, cal_path


# -- the publish rule over traced customers ------------------------------------------------------

HYSTERESIS = 5.0  # credit.band.hysteresis, riskflowd's default


def publish_stats(sc, trace_rows, ev, pd_delta, hysteresis=HYSTERESIS):
    """Run the credit job's publish rule (ENGINE.md §5) after every event of the traced
    customers: updates, and why."""
    job = rsc.CreditJob(sc, pd_delta, hysteresis)
    states = {}
    first_t, last_t = {}, {}
    before = {}  # the band published before the current one
    last_res = {}
    back_feats, back_kinds = {}, {}
    n_ev = n_up = n_first = n_band = n_delta = n_back = 0
    for i, c, row in trace_rows:
        st = states.get(c, rsc.CreditState())
        res = sc.score_values(row)
        up, new = job.decide(st, res)
        prev_res = last_res.get(c)
        last_res[c] = res
        n_ev += 1
        t = int(ev.t[i])
        first_t.setdefault(c, t)
        last_t[c] = t
        published = st.band_index(sc)
        if up is not None:
            n_up += 1
            if published < 0:
                n_first += 1
            elif res.band_index != published:
                n_band += 1
                if before.get(c) == res.band_index:
                    n_back += 1
                    for j, f in enumerate(sc.features):
                        if prev_res is not None and prev_res.bins[j] != res.bins[j]:
                            back_feats[f] = back_feats.get(f, 0) + 1
                    k = ("CreditEvent" if ev.rtype[i] == 0 else "Payment",
                         (sim.CREDIT_KINDS if ev.rtype[i] == 0 else sim.PAYMENT_KINDS)[ev.kind[i]])
                    back_kinds[k] = back_kinds.get(k, 0) + 1
            else:
                n_delta += 1
            if res.band_index != published:
                before[c] = published
        states[c] = new
    months = sum((last_t[c] - first_t[c]) / (30.4375 * sim.DAY_MS) for c in first_t)
    return {"customers": len(first_t), "events": n_ev, "updates": n_up, "first": n_first,
            "band": n_band, "delta": n_delta, "back": n_back, "customer_months": months,
            "back_feats": sorted(back_feats.items(), key=lambda kv: -kv[1]),
            "back_kinds": sorted(back_kinds.items(), key=lambda kv: -kv[1])}


# -- main ----------------------------------------------------------------------------------------

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--customers", type=int, default=40000)
    ap.add_argument("--seed", type=int, default=1, help="simulation, labels and split")
    ap.add_argument("--obs-date", default=sim.DEFAULT_OBS)
    ap.add_argument("--features", default=sim.DEFAULT_CONF, help="feature file (%(default)s)")
    ap.add_argument("--test-frac", type=float, default=0.3)
    ap.add_argument("--max-bins", type=int, default=40, help="fine bins before merging")
    ap.add_argument("--min-bin-frac", type=float, default=0.01,
                    help="smallest bin, as a share of the training customers")
    ap.add_argument("--min-bin-bad", type=int, default=10,
                    help="fewest defaults (and non-defaults) in a bin")
    ap.add_argument("--woe-smooth", type=float, default=0.5)
    ap.add_argument("--min-iv", type=float, default=0.02)
    ap.add_argument("--C", type=float, default=1e4, help="LogisticRegression C")
    ap.add_argument("--max-p", type=float, default=0.01,
                    help="backward elimination: drop the feature with the largest Wald p-value "
                    "above this, refit (0: keep all)")
    ap.add_argument("--band-min-share", type=float, default=0.02)
    ap.add_argument("--pd-delta", type=float, default=0.02, help="credit.pd.delta")
    ap.add_argument("--trace-every", type=int, default=200,
                    help="trace every Nth customer after every event (parity rows, publish rate)")
    ap.add_argument("--bootstrap", type=int, default=400)
    ap.add_argument("--jobs", type=int, default=1,
                    help="processes for the feature replay (same values; the machine is shared)")
    ap.add_argument("--date", help="yyyymmdd for the model version (default: today, UTC)")
    ap.add_argument("--model-out",
                    default=os.path.join(REPO, "deploy/models/credit_scorecard.json"))
    ap.add_argument("--parity-out",
                    default=os.path.join(REPO, "tests/fixtures/credit_scorecard_parity.csv"))
    ap.add_argument("--report-out", default=os.path.join(HERE, "CREDIT_REPORT.md"))
    ap.add_argument("--plots-dir", default=os.path.join(HERE, "report"))
    a = ap.parse_args(argv)
    t_start = time.time()
    obs_ms = sim.parse_time(a.obs_date)

    # 1. simulate
    t0 = time.time()
    ev, prof = sim.simulate(a.customers, a.seed, obs_ms, log)
    t_sim = time.time() - t0

    # 2. features
    t0 = time.time()
    trace = set(range(0, a.customers, a.trace_every)) if a.trace_every > 0 else set()
    names, X_all, trace_rows = sim.replay(ev, conf=a.features, trace=trace, log=log,
                                          jobs=a.jobs)
    t_feat = time.time() - t0
    log("features: %d events in %.1f s (%.0f events/s)" % (len(ev), t_feat, len(ev) / t_feat))

    # 3. labels
    keep, g, p_true, y = sim.labels(X_all, names, a.seed)
    X = X_all[keep]
    n_in_default = int((np.isfinite(X_all).all(axis=1) & (X_all[:, names.index("cr_dpd")]
                                                         >= sim.DEFAULT_DPD)).sum())
    log("%d customers in the sample (%d in default at the observation date excluded), "
        "%d defaults (%.2f%%), mean true PD %.4f"
        % (len(keep), n_in_default, y.sum(), 100 * y.mean(), p_true.mean()))

    # 4. split by customer
    rng = np.random.default_rng(np.random.SeedSequence([a.seed, 0x5B117]))
    perm = rng.permutation(len(keep))
    test = np.zeros(len(keep), dtype=bool)
    test[perm[:int(round(a.test_frac * len(keep)))]] = True
    tr = ~test
    yf = y.astype(float)

    # bins, WoE, IV
    t0 = time.time()
    bins = [fit_binning(X[tr, j], yf[tr], a.max_bins, a.min_bin_frac, a.min_bin_bad,
                        a.woe_smooth) for j in range(len(names))]
    cols = [j for j in range(len(names)) if bins[j]["iv"] >= a.min_iv]
    dropped = [(names[j], "IV %.3f < %.2f" % (bins[j]["iv"], a.min_iv))
               for j in range(len(names)) if bins[j]["iv"] < a.min_iv]
    while True:
        W = woe_matrix(X, bins, cols)
        lr = LogisticRegression(C=a.C, max_iter=5000)
        lr.fit(W[tr], y[tr])
        coef = lr.coef_[0]
        if np.any(coef >= 0):
            k = int(np.argmax(coef))
            dropped.append((names[cols[k]], "coefficient %+.3f with the others in (a WoE "
                            "coefficient must be negative)" % coef[k]))
            del cols[k]
            continue
        pv = wald_p(W[tr], lr)
        if a.max_p > 0 and pv.max() > a.max_p:
            k = int(np.argmax(pv))
            dropped.append((names[cols[k]], "p = %.3f > %g with the others in (Wald test)"
                            % (pv[k], a.max_p)))
            del cols[k]
            continue
        break
    p_values = wald_p(W[tr], lr)
    t_fit = time.time() - t0
    log("scorecard: %d features (%s), fit in %.1f s"
        % (len(cols), ", ".join(names[j] for j in cols), t_fit))

    # 5. points, bands, model
    factor, offset = factor_offset()
    z_tr = lr.decision_function(W[tr])
    bands = choose_bands(offset - factor * z_tr, a.band_min_share)
    date = a.date or datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d")
    doc, text = model_doc(names, bins, cols, coef, lr.intercept_[0], bands, date)
    os.makedirs(os.path.dirname(a.model_out), exist_ok=True)
    with open(a.model_out, "w", encoding="utf-8") as f:
        f.write(text)
    sc = rsc.loads(text)
    feats_model = sc.features

    # the reference scorer reproduces scikit-learn's probabilities
    res = [sc.score_values(list(X[i, cols])) for i in range(len(keep))]
    p_model = np.array([r.pd for r in res])
    score = np.array([r.score for r in res])
    band_idx = np.array([r.band_index for r in res])
    p_sk = lr.predict_proba(W)[:, 1]
    rel = float(np.max(np.abs(p_model - p_sk) / p_sk))
    log("riskflow_scorecard vs predict_proba: max relative difference %.3g" % rel)
    if rel > 1e-9:
        raise SystemExit("the exported scorecard does not reproduce predict_proba")

    # 6. metrics
    yt, pm, pt = y[test], p_model[test], p_true[test]
    m = {
        "auc": float(roc_auc_score(yt, pm)), "auc_oracle": float(roc_auc_score(yt, pt)),
        "ks": ks_stat(yt, pm), "ks_oracle": ks_stat(yt, pt),
        "brier": float(brier_score_loss(yt, pm)), "brier_oracle": float(brier_score_loss(yt, pt)),
        "brier_base": float(brier_score_loss(yt, np.full(len(yt), y[tr].mean()))),
        "auc_train": float(roc_auc_score(y[tr], p_model[tr])),
        "auc_oracle_train": float(roc_auc_score(y[tr], p_true[tr])),
        "mean_pd": float(pm.mean()), "rate": float(yt.mean()), "mean_true": float(pt.mean()),
    }
    m["gap"] = m["auc_oracle"] - m["auc"]
    z_test = np.log(pm) - np.log1p(-pm)
    g_test = g[test]
    m["corr_zg"] = float(np.corrcoef(z_test, g_test)[0, 1])
    m["rms_zg"] = float(np.sqrt(np.mean((z_test - g_test) ** 2)))
    m["gap_ci"] = auc_gap_ci(yt, pm, pt, a.bootstrap, a.seed) if a.bootstrap else (None, None)
    log("test: AUC %.4f, oracle %.4f (gap %.4f, 95%% CI %s), KS %.4f, Brier %.5f (oracle %.5f)"
        % (m["auc"], m["auc_oracle"], m["gap"], m["gap_ci"], m["ks"], m["brier"],
           m["brier_oracle"]))
    calib = calibration_table(yt, pm, pt)
    band_rows = []
    for b in range(len(sc.band_names)):
        for part, sel in (("train", tr), ("test", test)):
            mb = sel & (band_idx == b)
            band_rows.append((b, part, int(mb.sum()), int(y[mb].sum()),
                              float(p_model[mb].mean()) if mb.any() else float("nan"),
                              float(p_true[mb].mean()) if mb.any() else float("nan")))
    roc_path, cal_path = plots(a.plots_dir, yt, pm, pt, m["auc"], m["auc_oracle"], calib)

    # the publish rule over the traced customers
    pub = publish_stats(sc, [(i, c, [row[j] for j in cols]) for i, c, row in trace_rows], ev,
                        a.pd_delta)
    # parity fixture: real rows (test snapshots and traced rows) + edge cases
    rng = np.random.default_rng(np.random.SeedSequence([a.seed, 0xF1C8]))
    snap = X[test][:, cols]
    pick = rng.choice(len(snap), size=min(1600, len(snap)), replace=False)
    tr_rows = np.array([[row[j] for j in cols] for _, _, row in trace_rows])
    tpick = rng.choice(len(tr_rows), size=min(400, len(tr_rows)), replace=False)
    real = np.vstack([snap[np.sort(pick)], tr_rows[np.sort(tpick)]])
    os.makedirs(os.path.dirname(a.parity_out), exist_ok=True)
    par = write_parity(a.parity_out, sc, real, a.seed)
    log("parity fixture: %d rows (%d real, %d edge cases), nearest score to a band edge %.3g"
        % (par["rows"], par["real"], par["edge"], par["near_band"]))

    stats = {
        "a": a, "names": names, "bins": bins, "cols": cols, "dropped": dropped,
        "coef": [float(c) for c in coef], "intercept": float(lr.intercept_[0]),
        "p_values": [float(v) for v in p_values],
        "n_iter": int(np.max(lr.n_iter_)), "doc": doc, "sc": sc, "m": m, "calib": calib,
        "band_rows": band_rows, "pub": pub, "par": par, "n_events": len(ev),
        "n_credit": int((ev.rtype == 0).sum()), "n_customers": a.customers,
        "n_sample": len(keep), "n_in_default": n_in_default, "n_defaults": int(y.sum()),
        "n_train": int(tr.sum()), "n_test": int(test.sum()), "def_train": int(y[tr].sum()),
        "def_test": int(y[test].sum()), "X": X, "y": y, "tr": tr, "p_true": p_true,
        "score": score, "t_sim": t_sim, "t_feat": t_feat, "t_fit": t_fit,
        "t_total": time.time() - t_start, "roc_path": roc_path, "cal_path": cal_path,
        "kinds": kind_counts(ev), "obs_ms": obs_ms, "rel": rel, "factor": factor,
        "offset": offset, "feats_model": feats_model,
    }
    with open(a.report_out, "w", encoding="utf-8") as f:
        f.write(report(stats, argv))
    log("wrote %s (%s), %s, %s in %.1f s"
        % (os.path.relpath(a.model_out, REPO), doc["version"],
           os.path.relpath(a.parity_out, REPO), os.path.relpath(a.report_out, REPO),
           time.time() - t_start))
    return 0


def kind_counts(ev):
    out = []
    for rt, kinds in ((0, sim.CREDIT_KINDS), (1, sim.PAYMENT_KINDS)):
        for k, name in enumerate(kinds):
            n = int(((ev.rtype == rt) & (ev.kind == k)).sum())
            if n:
                out.append(("CreditEvent" if rt == 0 else "Payment", name, n))
    return out


def fmt_edges(edges):
    return ", ".join(repr(e) for e in edges)


def report(s, argv):
    a, m, sc = s["a"], s["m"], s["sc"]
    out = []
    w = out.append
    rel = lambda p: os.path.relpath(p, REPO)  # noqa: E731
    w("# Credit scorecard — training report\n")
    w("Generated by `tools/train/train_credit.py` (do not edit by hand). Model `%s`, written "
      "to `%s`.\n" % (s["doc"]["version"], rel(a.model_out)))
    w("## Result\n")
    w("| test customers | AUC | KS | Brier |")
    w("|---|---:|---:|---:|")
    w("| **scorecard** | **%.4f** | **%.4f** | **%.5f** |" % (m["auc"], m["ks"], m["brier"]))
    w("| oracle: the true PD σ(g(x)) | %.4f | %.4f | %.5f |"
      % (m["auc_oracle"], m["ks_oracle"], m["brier_oracle"]))
    w("| the base rate for everyone | 0.5 | 0 | %.5f |" % m["brier_base"])
    w("")
    lo, hi = m["gap_ci"]
    w("Oracle AUC − scorecard AUC = **%.4f** (goal: ≤ 0.01)%s. On the training customers: "
      "scorecard %.4f, oracle %.4f."
      % (m["gap"], "; paired bootstrap over the test customers (%d resamples), 95%% interval "
         "[%.4f, %.4f]" % (a.bootstrap, lo, hi) if lo is not None else "",
         m["auc_train"], m["auc_oracle_train"]))
    w("")
    w("Test customers: %d, %d defaults (%.2f%%); mean scorecard PD %.4f, mean true PD %.4f."
      % (s["n_test"], s["def_test"], 100 * m["rate"], m["mean_pd"], m["mean_true"]))
    w("")
    in_g = [n for n in sim.PD_FEATURES if n not in s["feats_model"]]
    w("What separates the two: the scorecard's log-odds against the true ones on the test "
      "customers have a correlation of %.4f and an RMS difference of %.3f. The scorecard is "
      "a step function per feature where g is smooth; it is estimated from %d training "
      "defaults (on its training customers it is at %.4f against the oracle's %.4f%s); and "
      "WoE comes from each feature alone, so where features "
      "are correlated the shape one coefficient per feature can give is only close to g's. "
      "Features g reads that the scorecard does without: %s — see the features table for "
      "why; what they carry is mostly in the features it keeps."
      % (m["corr_zg"], m["rms_zg"], s["def_train"], m["auc_train"], m["auc_oracle_train"],
         ": it fits some of their noise" if m["auc_train"] > m["auc_oracle_train"] else "",
         ", ".join(in_g) if in_g else "none"))
    w("")
    w("![ROC](report/%s) ![calibration](report/%s)\n"
      % (os.path.basename(s["roc_path"]), os.path.basename(s["cal_path"])))
    # data
    w("## Data\n")
    obs = datetime.datetime.fromtimestamp(s["obs_ms"] / 1000, tz=datetime.timezone.utc)
    w("- Simulated by `simulate_credit.py`: %d customers, seed %d, observation date %s; "
      "6–15 calendar months of history each, nothing after the observation date. %d events: "
      "%d credit events and %d payments."
      % (s["n_customers"], a.seed, obs.strftime("%Y-%m-%d %H:%M UTC"), s["n_events"],
         s["n_credit"], s["n_events"] - s["n_credit"]))
    w("- By kind: " + ", ".join("%s %s %d" % k for k in s["kinds"]) + ".")
    w("- Features: every event replayed in event-time order through `riskflow_features.py` "
      "(`rff.Engine` over `%s`; credit events from topic `%s`, payments from `%s`, "
      "partition 0, offsets in stream order); a customer's snapshot is its credit "
      "features evaluated after its last event before the observation date — what the "
      "credit job scored last. %.0f s for the replay (%.0f events/s)."
      % (rel(a.features), sim.CREDIT_TOPIC, sim.PAYMENT_TOPIC, s["t_feat"],
         s["n_events"] / s["t_feat"]))
    w("- Sample: %d customers; %d already in default at the observation date (90+ days "
      "past due) excluded. Defaults within 12 months: %d (%.2f%%), drawn from the true PD."
      % (s["n_sample"], s["n_in_default"], s["n_defaults"],
         100.0 * s["n_defaults"] / s["n_sample"]))
    w("- Split by customer (seeded, %.0f%% test): train %d customers, %d defaults (%.2f%%); "
      "test %d customers, %d defaults (%.2f%%)."
      % (100 * a.test_frac, s["n_train"], s["def_train"], 100.0 * s["def_train"] / s["n_train"],
         s["n_test"], s["def_test"], 100.0 * s["def_test"] / s["n_test"]))
    w("")
    w("### The true PD (known by construction)\n")
    w("PD = σ(g(x)), x the snapshot; `simulate_credit.true_log_odds`:\n")
    w("```")
    w("g(x) = %.2f" % sim.PD_INTERCEPT)
    w("     + 1.8 * min(max(cr_utilisation, 0), 1.3)^1.5")
    w("     + 1.0 * (1 - exp(-cr_dpd / 20))")
    w("     + 0.35 * min(cr_missed_90d, 4)")
    w("     + 0.7 * exp(-(cr_secs_since_missed / 86400) / 90)")
    w("     + 0.3 * ln(1 + cr_cash_30d)")
    w("     - 0.5 * ln(max(cr_income_90d / 3, 150) / 2000)")
    w("     + 0.8 * min(max(cr_spend_to_income - 0.8, 0), 1.5)")
    w("     + 0.25 * ln(1 + cr_drawdown_30d / 500)")
    w("```\n")
    w("Additive and monotone in every feature, so a scorecard (a step function per feature, "
      "added up in log-odds) can get close to it; the steps and the estimation from a "
      "finite sample are what separates the two.")
    w("")
    # features
    w("## Features\n")
    X, y, tr = s["X"], s["y"], s["tr"]
    w("The credit section of `%s`, every feature a candidate:\n" % rel(a.features))
    w("```")
    with open(a.features, encoding="utf-8") as f:
        w("".join(line for line in f
                  if line.split()[:1] in (["feature"], ["derived"])
                  and line.split()[1].startswith("cr_")).rstrip("\n"))
    w("```\n")
    w("On the training customers:\n")
    w("| feature | p10 | median | p90 | max | IV | trend | bins | in the scorecard |")
    w("|---|---:|---:|---:|---:|---:|---|---:|---|")
    dropped = dict(s["dropped"])
    for j, n in enumerate(s["names"]):
        v = X[tr, j]
        b = s["bins"][j]
        w("| %s | %.4g | %.4g | %.4g | %.4g | %.3f | %s | %d | %s |"
          % (n, *np.percentile(v, [10, 50, 90]), v.max(), b["iv"],
             "risk rises" if b["direction"] > 0 else "risk falls", len(b["woe"]),
             "yes" if j in s["cols"] else "no: " + dropped.get(n, "")))
    w("")
    w("Binning (training customers): %d fine bins per feature (between the distinct values "
      "around quantiles; every distinct value when there are fewer), edges at the shortest "
      "decimal between the two neighbouring values; adjacent bins merged until every bin "
      "holds ≥ %.0f%% of the customers and ≥ %d defaults and non-defaults and the default "
      "rate is strictly monotone in the direction of the rank correlation. WoE = "
      "ln(%%good/%%bad) with %.1f added to each bin's goods and bads. Features with IV < "
      "%.2f are left out; then LogisticRegression(C=%g) on the WoE columns, dropping the "
      "feature with a non-negative coefficient (collinear with the others) and refitting "
      "until none is left (lbfgs, %d iterations)."
      % (a.max_bins, 100 * a.min_bin_frac, a.min_bin_bad, a.woe_smooth, a.min_iv, a.C,
         s["n_iter"]))
    w("")
    # model
    w("## The scorecard\n")
    w("Scaling: %d points at odds %d:1 (good:bad), %d points to double the odds: factor = "
      "%r, offset = %r; score = offset − factor × z. Intercept z₀ = %r."
      % (BASE_SCORE, BASE_ODDS, PDO, s["factor"], s["offset"], s["intercept"]))
    w("")
    for jj, j in enumerate(s["cols"]):
        b = s["bins"][j]
        c = s["coef"][jj]
        pts = sc.bin_points[jj]
        w("**%s** (coefficient %.4f, Wald p %.2g, IV %.3f)\n"
          % (s["names"][j], c, s["p_values"][jj], b["iv"]))
        w("| bin | range | train customers | defaults | default rate | WoE | points |")
        w("|---:|---|---:|---:|---:|---:|---:|")
        e = b["edges"]
        for k in range(len(b["woe"])):
            lo_ = "−∞" if k == 0 else repr(e[k - 1])
            hi_ = "∞" if k == len(e) else repr(e[k])
            w("| %d | [%s, %s) | %d | %d | %.4f | %+.4f | %+.2f |"
              % (k, lo_, hi_, b["n"][k], b["bad"][k], b["bad"][k] / b["n"][k], b["woe"][k],
                 pts[k]))
        w("")
    # calibration
    w("## Calibration (test customers, deciles of the scorecard PD)\n")
    w("| decile | customers | PD range | mean scorecard PD | mean true PD | default rate |")
    w("|---:|---:|---|---:|---:|---:|")
    for i, (n, pmn, ptr, obs_, lo_, hi_) in enumerate(s["calib"]):
        w("| %d | %d | %.4f – %.4f | %.4f | %.4f | %.4f |" % (i + 1, n, lo_, hi_, pmn, ptr, obs_))
    w("")
    # bands
    w("## Bands\n")
    w("One PDO (%d points) wide: each band's odds are twice the next one's. The grid is "
      "base_score + k × PDO; the top and bottom bands are closed where fewer than %.0f%% of "
      "the training customers would be beyond them.\n" % (PDO, 100 * a.band_min_share))
    w("| band | min score | PD at min score | train customers | train default rate | "
      "test customers | test defaults | test default rate | test mean PD | test mean true PD |")
    w("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    br = {(b, part): (n, d, mp, mt) for b, part, n, d, mp, mt in s["band_rows"]}
    for b, name in enumerate(sc.band_names):
        mn = sc.band_min[b]
        pd_at = (1.0 / (1.0 + math.exp((mn - s["offset"]) / s["factor"]))) if mn is not None else None
        ntr, dtr, _, _ = br[(b, "train")]
        nte, dte, mpe, mte = br[(b, "test")]
        w("| %s | %s | %s | %d | %s | %d | %d | %s | %s | %s |"
          % (name, "%g" % mn if mn is not None else "—",
             "%.4f" % pd_at if pd_at is not None else "—", ntr,
             "%.4f" % (dtr / ntr) if ntr else "—", nte, dte,
             "%.4f" % (dte / nte) if nte else "—",
             "%.4f" % mpe if nte else "—", "%.4f" % mte if nte else "—"))
    w("")
    pub = s["pub"]
    w("## PdUpdates (ENGINE.md §5)\n")
    w("Every %dth customer traced after every event (%d customers, %d events, %.0f "
      "customer-months) through `riskflow_scorecard.CreditJob` with credit.pd.delta = %g and "
      "credit.band.hysteresis = %g points: "
      "%d PdUpdates (%.3f per event, %.2f per customer-month): %d first, %d band changes "
      "(%d of them back to the band published before the last change), %d PD moves > delta "
      "in the same band. (Without the hysteresis the same customers gave 3979 PdUpdates, "
      "1.98 per customer-month, 1977 of the 3159 band changes flipping back.)"
      % (a.trace_every, pub["customers"], pub["events"], pub["customer_months"], a.pd_delta,
         HYSTERESIS,
         pub["updates"], pub["updates"] / max(pub["events"], 1),
         pub["updates"] / max(pub["customer_months"], 1e-9), pub["first"], pub["band"],
         pub["back"], pub["delta"]))
    w("")
    if pub["back"]:
        w("At those %d flip-backs, the features whose bin changed with the event: %s; the "
          "events: %s. Window features take a customer back and forth across bin edges as "
          "events enter and leave their windows (a 90-day window holds 2 or 3 monthly "
          "salaries depending on the day, a 30-day count of cash withdrawals rises and "
          "falls), and ratios move with every payment; the hysteresis removes the flips of "
          "a score hovering at a band edge, not those of features that swing by a band."
          % (pub["back"], ", ".join("%s %d" % kv for kv in pub["back_feats"]),
             ", ".join("%s %s %d" % (k[0], k[1], n) for k, n in pub["back_kinds"])))
        w("")
    par = s["par"]
    w("## Parity fixture\n")
    w("`%s`: %d rows — %d real (test snapshots and traced rows), %d edge cases (every edge, "
      "the doubles either side of it, 0, −0, ±1, ±1e300, the largest and smallest doubles, "
      "NaN, ±inf for each feature; every feature in its best bin; every feature in its "
      "worst bin). Rows with 0/1/2/3 reasons: %s. Rows within %g points of a band edge left "
      "out: %d; the nearest score to a band edge is %.3g points away. Format: "
      "tools/train/README.md."
      % (rel(a.parity_out), par["rows"], par["real"], par["edge"],
         "/".join(str(x) for x in par["n_reasons"]), NEAR_BAND, par["left_out"],
         par["near_band"]))
    w("")
    w("`riskflow_scorecard.py` on the exported JSON reproduces scikit-learn's predict_proba "
      "to %.2g relative (every sample customer)." % s["rel"])
    w("")
    # run
    w("## Reproduce\n")
    cmd = " ".join(["python", "tools/train/train_credit.py"] + list(argv or sys.argv[1:]))
    w("```sh")
    w(cmd)
    w("```\n")
    w("Seeds: `--seed %d` drives the simulation (numpy SeedSequence([seed, 0xC4ED17]), one "
      "stream per customer), the default draws (SeedSequence([seed, 0xDEFA17])), the split "
      "(SeedSequence([seed, 0x5B117])), the bootstrap and the fixture's row choice; "
      "everything else is deterministic. The model version's date is the run's date unless "
      "`--date` is given (the hash is of the model's parameters). Simulate %.0f s, features "
      "%.0f s, fit %.1f s, total %.0f s on this machine."
      % (a.seed, s["t_sim"], s["t_feat"], s["t_fit"], s["t_total"]))
    w("")
    w("Python %s; numpy %s, scikit-learn %s, scipy %s, matplotlib %s."
      % (platform.python_version(), np.__version__, sklearn.__version__, _ver("scipy"),
         _ver("matplotlib")))
    return "\n".join(out) + "\n"


def _ver(mod):
    try:
        return __import__(mod).__version__
    except Exception:  # noqa: BLE001
        return "?"


if __name__ == "__main__":
    sys.exit(main())
