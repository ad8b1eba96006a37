"""Tests of riskflow_recurrent.py against the text of docs/MODELS.md §3 and docs/ENGINE.md §5.

    .venv-train/bin/python -m pytest tools/train/test_riskflow_recurrent.py

numpy + pytest; the PyTorch comparison is skipped when torch is not installed.
"""

import json
import math
import os
import struct
import sys

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.normpath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, HERE)

import riskflow_recurrent as rr  # noqa: E402


def sig(v):
    return 1.0 / (1.0 + math.exp(-v))


def tiny_tensors(cell, H=1, F=1, seed=None):
    G = 3 if cell == "gru" else 4
    if seed is None:
        # hand-picked: rows in gate order
        w_ih = np.array([[0.5], [-1.0], [2.0], [0.25]][:G], np.float32)
        w_hh = np.array([[1.5], [0.5], [-0.75], [1.0]][:G], np.float32)
        b_ih = np.array([0.1, 0.2, -0.3, 0.4][:G], np.float32)
        b_hh = np.array([-0.2, 0.3, 0.05, -0.1][:G], np.float32)
        head_w = np.array([[3.0], [-2.0]], np.float32)
        head_b = np.array([0.5, 0.25], np.float32)
        mean = np.array([1.0], np.float32)
        scale = np.array([2.0], np.float32)
    else:
        r = np.random.default_rng(seed)
        w_ih = r.normal(0, 0.5, (G * H, F)).astype(np.float32)
        w_hh = r.normal(0, 0.5, (G * H, H)).astype(np.float32)
        b_ih = r.normal(0, 0.3, G * H).astype(np.float32)
        b_hh = r.normal(0, 0.3, G * H).astype(np.float32)
        head_w = r.normal(0, 1, (2, H)).astype(np.float32)
        head_b = r.normal(0, 1, 2).astype(np.float32)
        mean = r.normal(0, 2, F).astype(np.float32)
        scale = r.uniform(0.5, 3, F).astype(np.float32)
    return {"rnn.weight_ih_l0": w_ih, "rnn.weight_hh_l0": w_hh, "rnn.bias_ih_l0": b_ih,
            "rnn.bias_hh_l0": b_hh, "head.weight": head_w, "head.bias": head_b,
            "scaler.mean": mean, "scaler.scale": scale}


def meta(cell, F=1, version="test-v1", horizon="3"):
    return {"format": rr.FORMAT, "cell": cell, "name": "market", "version": version,
            "features": ",".join("f%d" % i for i in range(F)), "horizon_bars": horizon}


def model(cell, H=1, F=1, seed=None, version="test-v1"):
    return rr.load_model(rr.write_safetensors(None, tiny_tensors(cell, H, F, seed),
                                              meta(cell, F, version)))


# ---- FNV, safetensors ---------------------------------------------------------------------

def test_fnv1a64_known_values():
    assert rr.fnv1a64(b"") == 0xCBF29CE484222325
    assert rr.fnv1a64(b"a") == 0xAF63DC4C8601EC8C
    assert rr.fnv1a64("foobar") == 0x85944171F73967E8


def test_safetensors_roundtrip_and_layout():
    t = tiny_tensors("gru", 3, 2, seed=1)
    buf = rr.write_safetensors(None, t, meta("gru", 2))
    (n,) = struct.unpack_from("<Q", buf)
    assert n % 8 == 0
    header = json.loads(buf[8:8 + n])
    assert header["__metadata__"]["cell"] == "gru"
    assert header["rnn.weight_ih_l0"]["dtype"] == "F32"
    assert header["rnn.weight_ih_l0"]["shape"] == [9, 2]
    back, m = rr.read_safetensors(buf)
    assert m == meta("gru", 2)
    for k in t:
        assert back[k].dtype == np.float32 and np.array_equal(back[k], t[k])


def test_safetensors_matches_the_safetensors_package():
    st = pytest.importorskip("safetensors.numpy")
    t = tiny_tensors("lstm", 4, 3, seed=2)
    ours = rr.write_safetensors(None, t, meta("lstm", 3))
    theirs = st.save(t, metadata=meta("lstm", 3))
    a, ma = rr.read_safetensors(theirs)
    assert ma == meta("lstm", 3)
    assert all(np.array_equal(a[k], t[k]) for k in t)
    b = st.load(ours)
    assert all(np.array_equal(b[k], t[k]) for k in t)


def test_f64_tensors_are_accepted_and_converted():
    t = {k: v.astype(np.float64) for k, v in tiny_tensors("gru").items()}
    m = rr.load_model(rr.write_safetensors(None, t, meta("gru")))
    assert m.w_ih.dtype == np.float32


@pytest.mark.parametrize("mutate, msg", [
    (lambda t, m: m.update(format="riskflow.logistic.v1"), "format"),
    (lambda t, m: m.update(cell="rnn"), "cell"),
    (lambda t, m: m.update(horizon_bars="0"), "horizon_bars"),
    (lambda t, m: m.update(horizon_bars="2.5"), "horizon_bars"),
    (lambda t, m: m.update(version="v" * 128), "version"),
    (lambda t, m: m.update(features="f0,f0"), "features"),
    (lambda t, m: m.pop("features"), "features"),
    (lambda t, m: t.pop("head.bias"), "head.bias"),
    (lambda t, m: t.update({"scaler.scale": np.zeros(1, np.float32)}), "zero"),
    (lambda t, m: t.update({"head.weight": np.zeros((2, 2), np.float32)}), "head.weight"),
    (lambda t, m: t.update({"rnn.weight_ih_l0": np.zeros((3, 2), np.float32)}), "weight_ih"),
])
def test_bad_models_are_refused(mutate, msg):
    t, m = tiny_tensors("gru"), meta("gru")
    mutate(t, m)
    with pytest.raises(ValueError, match=msg):
        rr.load_model(rr.write_safetensors(None, t, m))


def test_truncated_and_bad_files_are_refused():
    buf = rr.write_safetensors(None, tiny_tensors("gru"), meta("gru"))
    for cut in (0, 4, 8, 20, len(buf) - 1):
        with pytest.raises(ValueError):
            rr.load_model(buf[:cut])
    (n,) = struct.unpack_from("<Q", buf)
    h = json.loads(buf[8:8 + n])
    h["head.weight"]["data_offsets"] = [0, 8]  # the range of head.bias, the first tensor
    hj = json.dumps(h).encode()
    with pytest.raises(ValueError, match="overlap"):
        rr.read_safetensors(struct.pack("<Q", len(hj)) + hj + buf[8 + n:])
    h["head.bias"]["dtype"] = "I32"
    hj = json.dumps(h).encode()
    with pytest.raises(ValueError, match="dtype"):
        rr.read_safetensors(struct.pack("<Q", len(hj)) + hj + buf[8 + n:])


# ---- the steps, by hand -------------------------------------------------------------------

def test_gru_step_by_hand():
    m = model("gru")
    x_raw, h = 2.0, 0.5
    x = (x_raw - 1.0) / 2.0
    r = sig(0.5 * x + 0.1 + 1.5 * h - 0.2)
    z = sig(-1.0 * x + 0.2 + 0.5 * h + 0.3)
    n = math.tanh(2.0 * x - 0.3 + r * (-0.75 * h + 0.05))
    h2 = (1 - z) * n + z * h
    y0, y1 = 3.0 * h2 + 0.5, -2.0 * h2 + 0.25
    hh, cc, y = m.step([[x_raw]], [[h]])
    assert cc is None
    assert hh.dtype == np.float32 and y.dtype == np.float32
    assert hh[0, 0] == pytest.approx(h2, rel=1e-6)
    assert y[0, 0] == pytest.approx(y0, rel=1e-6)
    er, p = m.head(hh)
    assert er[0] == pytest.approx(y0, rel=1e-6)
    assert p[0] == pytest.approx(sig(y1), rel=1e-6)


def test_lstm_step_by_hand():
    m = model("lstm")
    x_raw, h, c = -1.0, -0.25, 0.75
    x = (x_raw - 1.0) / 2.0
    i = sig(0.5 * x + 0.1 + 1.5 * h - 0.2)
    f = sig(-1.0 * x + 0.2 + 0.5 * h + 0.3)
    g = math.tanh(2.0 * x - 0.3 + -0.75 * h + 0.05)
    o = sig(0.25 * x + 0.4 + 1.0 * h - 0.1)
    c2 = f * c + i * g
    h2 = o * math.tanh(c2)
    hh, cc, y = m.step([[x_raw]], [[h]], [[c]])
    assert cc[0, 0] == pytest.approx(c2, rel=1e-6)
    assert hh[0, 0] == pytest.approx(h2, rel=1e-6)
    assert y[0, 1] == pytest.approx(-2.0 * h2 + 0.25, rel=1e-6)


def test_sigmoid32_saturates_without_overflow():
    with np.errstate(over="raise"):
        s = rr.sigmoid32(np.array([-1e4, -100, 0, 100, 1e4], np.float32))
    assert s.dtype == np.float32
    assert s[0] == 0.0 and s[2] == 0.5 and s[-1] == 1.0


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_steps_equal_pytorch(cell):
    torch = pytest.importorskip("torch")
    H, F, N, L = 5, 3, 7, 6
    m = model(cell, H, F, seed=3)
    t = tiny_tensors(cell, H, F, seed=3)
    rnn = (torch.nn.GRU if cell == "gru" else torch.nn.LSTM)(F, H, batch_first=True)
    with torch.no_grad():
        for k in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"):
            getattr(rnn, k).copy_(torch.from_numpy(t["rnn." + k]))
    xs = np.random.default_rng(4).normal(0, 3, (N, L, F)).astype(np.float32)
    with torch.no_grad():
        z = (torch.from_numpy(xs) - torch.from_numpy(t["scaler.mean"])) / torch.from_numpy(
            t["scaler.scale"])
        out, _ = rnn(z)
        y = out @ torch.from_numpy(t["head.weight"]).T + torch.from_numpy(t["head.bias"])
    hs, cs, ys = m.run(xs)
    np.testing.assert_allclose(hs, out.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ys[..., 0], y[..., 0].numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ys[..., 1], torch.sigmoid(y[..., 1]).numpy(), rtol=1e-5,
                               atol=1e-6)


def test_run_carries_state_across_a_restart():
    m = model("lstm", 4, 2, seed=5)
    xs = np.random.default_rng(6).normal(0, 1, (3, 8, 2))
    h, c, y = m.run(xs)
    h2, c2, y2 = m.run(xs[:, 5:], h[:, 4], c[:, 4])
    np.testing.assert_array_equal(h2, h[:, 5:])
    np.testing.assert_array_equal(y2, y[:, 5:])


# ---- the job state ------------------------------------------------------------------------

def test_job_state_layout_gru():
    js = rr.JobState(3)
    js.bar, js.events, js.trades, js.signature = -5, 7, 2, rr.fnv1a64("v1")
    js.h = np.array([1.5, -2.0, 0.25], np.float32)
    b = js.pack()
    assert len(b) == 24 + 4 * 3
    assert b[:8] == struct.pack("<q", -5)
    assert b[8:16] == struct.pack("<II", 7, 2)
    assert b[16:24] == struct.pack("<Q", rr.fnv1a64("v1"))
    assert b[24:] == struct.pack("<3f", 1.5, -2.0, 0.25)
    back = rr.JobState.unpack(b, 3)
    assert (back.bar, back.events, back.trades, back.signature) == (-5, 7, 2, rr.fnv1a64("v1"))
    assert np.array_equal(back.h, js.h) and back.c is None


def test_job_state_layout_lstm_and_size():
    m = model("lstm", 4, 2, seed=1)
    assert rr.job_state_bytes(m) == 24 + 8 * 4
    assert rr.job_state_bytes(model("gru", 4, 2, seed=1)) == 24 + 4 * 4
    js = rr.JobState(2, lstm=True)
    js.h[:] = [1, 2]
    js.c[:] = [3, 4]
    b = js.pack()
    assert b[24:] == struct.pack("<4f", 1, 2, 3, 4)
    assert np.array_equal(rr.JobState.unpack(b, 2, True).c, [3, 4])
    fresh = rr.JobState.unpack(bytes(24 + 16), 2, True)
    assert (fresh.bar, fresh.events, fresh.trades, fresh.signature) == (0, 0, 0, 0)
    with pytest.raises(ValueError):
        rr.JobState.unpack(bytes(24 + 15), 2, True)


# ---- the bars, over a stand-in engine -----------------------------------------------------

class FakeEngine:
    """Stand-in for riskflow_features.Engine: one feature per instrument, `n` = events applied
    and `last_t` = the latest event time, plus the job bytes and the replay guard (offsets per
    topic/partition, as FEATURES.md §3)."""

    def __init__(self, nbytes):
        self.nbytes = nbytes
        self.n, self.last_t, self.job, self.src = {}, {}, {}, {}
        self.applied = []

    def apply(self, rtype, rec, topic, partition, offset):
        inst = rec["instrument"]
        key = (inst, topic, partition)
        if key in self.src and self.src[key] >= offset:
            return False
        self.src[key] = offset
        t = rec.get("trade_time", rec.get("quote_time"))
        self.n[inst] = self.n.get(inst, 0) + 1
        self.last_t[inst] = max(self.last_t.get(inst, t), t)
        self.applied.append((inst, offset))
        return True

    def evaluate(self, rtype, rec, names=None):
        inst = rec["instrument"]
        return {"f0": float(self.n.get(inst, 0)), "f1": float(self.last_t.get(inst, 0))}

    def state(self, kind, key):
        assert kind == "instrument"
        return FakeState(self, key)


class FakeState:
    def __init__(self, eng, key):
        self.eng, self.key = eng, key

    def job_state(self, job):
        assert job == "market"
        return self.eng.job.setdefault(("instrument", self.key, job), bytearray(self.eng.nbytes))


def trade(t, inst="A"):
    return ("riskflow.Trade", {"instrument": inst, "price": 1.0, "quantity": 1.0,
                               "aggressor_side": "BUY", "trade_time": t})


def quote(t, inst="A"):
    return ("riskflow.Quote", {"instrument": inst, "bid": 1.0, "ask": 1.1, "bid_size": 1.0,
                               "ask_size": 1.0, "quote_time": t})


def run(job, events, topic="t", start=0):
    out = []
    for k, (rt, rec) in enumerate(events):
        out += job.process(rt, rec, topic, 0, start + k)
    return out


def make_job(bar_type="time", cell="gru", **kw):
    m = model(cell, 2, 2, seed=7)
    eng = FakeEngine(rr.job_state_bytes(m))
    return rr.MarketJob(eng, m, bar_type=bar_type, **kw), eng, m


def jstate(job, inst="A"):
    return job._load(inst)


def test_time_bars_close_on_the_next_bars_event_with_features_before_it():
    job, eng, m = make_job(bar_ms=1000)
    ev = [quote(100), trade(400), trade(999), trade(1000), quote(1500), trade(2001)]
    out = run(job, ev)
    assert [(s["bar_index"], s["bar_end"], s["source_offset"]) for s in out] == [
        (0, 1000, 3), (1, 2000, 5)]
    # features as of the bar's last event: 3 events applied, latest time 999
    assert out[0]["features"] == [("f0", 3.0), ("f1", 999.0)]
    assert out[1]["features"] == [("f0", 5.0), ("f1", 1500.0)]
    js = jstate(job)
    assert (js.bar, js.events, js.trades) == (2, 1, 1)
    assert js.signature == m.signature
    # the hidden state is the model run over the rows
    h, _, y = m.run(np.array([[s["row"] for s in out]]))
    assert np.array_equal(js.h, h[0, -1])
    assert out[1]["expected_return_bps"] == float(y[0, 1, 0])
    assert out[1]["p_up"] == float(y[0, 1, 1])
    assert out[1]["horizon_bars"] == 3 and out[1]["model_version"] == "test-v1"


def test_time_bars_open_bar_counts_events_and_trades():
    job, eng, _ = make_job(bar_ms=1000)
    run(job, [quote(5000), trade(5001), trade(5002), quote(5999)])
    js = jstate(job)
    assert (js.bar, js.events, js.trades) == (5, 4, 2)
    assert bytes(eng.job[("instrument", "A", "market")][:16]) == struct.pack("<qII", 5, 4, 2)


def test_time_bars_empty_intervals_make_no_bar():
    job, eng, _ = make_job(bar_ms=1000)
    out = run(job, [trade(500), trade(4200), quote(4300), trade(9000)])
    assert [(s["bar_index"], s["bar_end"]) for s in out] == [(0, 1000), (4, 5000)]
    assert jstate(job).bar == 9


def test_time_bars_late_events_update_features_only():
    job, eng, _ = make_job(bar_ms=1000)
    out = run(job, [trade(1500), trade(1600), trade(700), quote(1999), trade(2500)])
    # the late trade (bar 0) opened and closed nothing, but was applied (f0 counts it)
    assert [(s["bar_index"], s["features"][0][1]) for s in out] == [(1, 4.0)]
    assert len(eng.applied) == 5
    js = jstate(job)
    assert (js.bar, js.events, js.trades) == (2, 1, 1)


def test_time_bars_late_event_is_not_counted_in_the_open_bar():
    job, _, _ = make_job(bar_ms=1000)
    run(job, [trade(1500), trade(700)])
    js = jstate(job)
    assert (js.bar, js.events, js.trades) == (1, 1, 1)


def test_time_bars_negative_times_floor():
    job, _, _ = make_job(bar_ms=1000)
    out = run(job, [trade(-1), trade(0)])
    assert [(s["bar_index"], s["bar_end"]) for s in out] == [(-1, 0)]


def test_time_bars_per_instrument():
    job, _, _ = make_job(bar_ms=1000)
    out = run(job, [trade(100, "A"), trade(200, "B"), trade(1100, "A"), trade(1200, "C"),
                    trade(2100, "B")])
    assert [(s["instrument"], s["bar_index"]) for s in out] == [("A", 0), ("B", 0)]


def test_replay_changes_nothing():
    job, eng, _ = make_job(bar_ms=1000)
    run(job, [trade(100), trade(1100)])
    before = {k: bytes(v) for k, v in eng.job.items()}
    out = job.process(*trade(2100), "t", 0, 1)  # offset 1 already applied: a replay
    assert out == [] and {k: bytes(v) for k, v in eng.job.items()} == before
    out = job.process(*trade(2100), "t", 0, 2)
    assert [s["bar_index"] for s in out] == [1]


def test_trade_bars_close_on_the_completing_trade_after_it_is_applied():
    job, eng, _ = make_job("trades", bar_trades=3)
    ev = [trade(10), quote(11), trade(12), trade(13), quote(14), trade(9), trade(15), trade(16)]
    out = run(job, ev)
    assert [(s["bar_index"], s["bar_end"], s["source_offset"]) for s in out] == [
        (0, 13, 3), (1, 16, 7)]
    assert out[0]["features"][0] == ("f0", 4.0)  # the completing trade included
    js = jstate(job)
    assert (js.bar, js.events, js.trades) == (2, 0, 0)
    run(job, [quote(20), trade(21)], start=8)
    js = jstate(job)
    assert (js.bar, js.events, js.trades) == (2, 2, 1)


def test_another_model_version_starts_the_hidden_state_from_zeros():
    job, eng, m = make_job(bar_ms=1000)
    run(job, [trade(100), trade(1100), trade(2100)])
    js = jstate(job)
    assert np.any(js.h != 0)
    # a new model version: same sizes, other signature
    m2 = model("gru", 2, 2, seed=7, version="test-v2")
    job2 = rr.MarketJob(eng, m2, bar_ms=1000)
    out = job2.process(*trade(3100), "t", 0, 3)
    h, _, _ = m2.run(np.array([[out[0]["row"]]]))
    assert np.array_equal(out[0]["h"], h[0, 0])
    js2 = jstate(job2)
    assert js2.signature == rr.fnv1a64("test-v2")
    assert js2.bar == 3


def test_lstm_job_keeps_h_and_c():
    job, eng, m = make_job(cell="lstm", bar_ms=1000)
    out = run(job, [trade(100), trade(1100), trade(2100)])
    h, c, _ = m.run(np.array([[s["row"] for s in out]]))
    js = jstate(job)
    assert np.array_equal(js.h, h[0, -1]) and np.array_equal(js.c, c[0, -1])
    assert len(eng.job[("instrument", "A", "market")]) == 24 + 8 * 2


def test_feature_only_job():
    eng = FakeEngine(24 + 4 * 4)
    job = rr.MarketJob(eng, None, bar_ms=1000, features=["f1"], hidden=4)
    out = run(job, [trade(100), trade(1100)])
    assert out[0]["expected_return_bps"] is None and out[0]["features"] == [("f1", 100.0)]


# ---- the job over the real feature engine -------------------------------------------------

MKT_FEATURES = ["mkt_ret_5m", "mkt_ofi_2m", "mkt_sell_share_2m", "mkt_spread_bps",
                "mkt_book_imb_2m"]


def engine_and_model(cell="gru", H=4):
    rff = pytest.importorskip("riskflow_features")
    decl = rff.load(os.path.join(REPO, "deploy", "features.conf"),
                    schemas_dir=os.path.join(REPO, "schemas"))
    t = tiny_tensors(cell, H, len(MKT_FEATURES), seed=9)
    t["scaler.mean"] = np.array([0, 0, 0.5, 5, 0], np.float32)
    t["scaler.scale"] = np.array([0.002, 0.5, 0.15, 2, 0.1], np.float32)
    meta = {"format": rr.FORMAT, "cell": cell, "name": "market", "version": "t-" + cell,
            "features": ",".join(MKT_FEATURES), "horizon_bars": "5"}
    m = rr.load_model(rr.write_safetensors(None, t, meta))
    eng = rff.Engine(decl, job_state={"market": ("instrument", 1, rr.job_state_bytes(m))})
    return rff, decl, eng, m


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_market_job_over_riskflow_features(cell):
    import simulate_market as sm
    rff, decl, eng, m = engine_and_model(cell)
    sim = sm.simulate(3, 0.25, seed=3)
    events = list(sim.iter_events())
    job = rr.MarketJob(eng, m, bar_ms=60000)
    # an independent engine: the features of each instrument right after its latest event
    eng2 = rff.Engine(decl)
    latest = {}
    sigs = []
    for k, (rt, rec) in enumerate(events):
        topic = "market.trades" if rt == rr.TRADE else "market.quotes"
        for s in job.process(rt, rec, topic, 0, k):
            assert s["features"] == list(zip(MKT_FEATURES, latest[s["instrument"]]))
            assert s["bar_end"] <= rec[rr._TIME_FIELD[rt]]
            sigs.append(s)
        eng2.apply(rt, rec, topic, 0, k)
        f = eng2.evaluate(rt, rec, names=MKT_FEATURES)
        latest[rec["instrument"]] = [f[n] for n in MKT_FEATURES]
    assert len(sigs) >= 3 * 13
    # per instrument: consecutive bar indexes, and the steps equal the model run over the rows
    for inst in sim.instruments:
        ss = [s for s in sigs if s["instrument"] == inst]
        assert [s["bar_index"] for s in ss] == list(range(ss[0]["bar_index"],
                                                           ss[0]["bar_index"] + len(ss)))
        h, c, y = m.run(np.array([[s["row"] for s in ss]]))
        assert np.array_equal(np.array([s["expected_return_bps"] for s in ss],
                                       np.float32), y[0, :, 0])
        # the job's bytes sit in the instrument's stored value, after the kind's slots
        st = eng.state("instrument", inst)
        lay = eng.kind("instrument")
        off = lay.job_offsets["market"]
        buf = st.pack()
        js = rr.JobState.unpack(buf[off:off + rr.job_state_bytes(m)], m.H, cell == "lstm")
        assert np.array_equal(js.h, h[0, -1])
        if cell == "lstm":
            assert np.array_equal(js.c, c[0, -1])
        assert js.signature == rr.fnv1a64("t-" + cell)
        assert js.bar == ss[-1]["bar_index"] + 1 and js.events >= 1


def test_market_job_restart_from_stored_values():
    import simulate_market as sm
    rff, decl, eng, m = engine_and_model()
    sim = sm.simulate(2, 0.2, seed=4)
    events = list(sim.iter_events())

    def run(job, lo, hi):
        out = []
        for k in range(lo, hi):
            rt, rec = events[k]
            out += job.process(rt, rec, "market.trades" if rt == rr.TRADE else "market.quotes",
                               0, k)
        return out

    whole = run(rr.MarketJob(eng, m), 0, len(events))
    _, _, eng1, _ = engine_and_model()
    half = len(events) // 2
    first = run(rr.MarketJob(eng1, m), 0, half)
    _, _, eng2, _ = engine_and_model()
    for inst in sim.instruments:
        eng2.put_state("instrument", inst, eng1.state("instrument", inst).pack())
    second = run(rr.MarketJob(eng2, m), half, len(events))
    key = [(s["instrument"], s["bar_index"], s["expected_return_bps"], s["p_up"]) for s in whole]
    assert key == [(s["instrument"], s["bar_index"], s["expected_return_bps"], s["p_up"])
                   for s in first + second]
    # a redelivered event after the restart is a replay: nothing changes
    inst = sim.instruments[0]
    before = eng2.state("instrument", inst).pack()
    k = max(j for j in range(half) if events[j][1]["instrument"] == inst)
    rt, rec = events[k]
    topic = "market.trades" if rt == rr.TRADE else "market.quotes"
    assert rr.MarketJob(eng2, m).process(rt, rec, topic, 0, k) == []
    assert eng2.state("instrument", inst).pack() == before
