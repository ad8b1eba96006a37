"""The market job end to end on the real broker and Redis (docs/ENGINE.md §5).

Trades and quotes come from tools/train/simulate_market.py (the simulator the shipped GRU was
trained on) and share ONE Confluent-framed topic keyed by instrument: the schema id names each
record's type, and an instrument's events reach riskflowd in one partition's offset order, so
the independent Python reference (riskflow_features.Engine for the features,
riskflow_recurrent.MarketJob for the bars and the numpy GRU) replays exactly what it saw.

Runs riskflowd with jobs=market twice: the shipped GRU on one-minute time bars, and the small
LSTM of the parity fixtures (its file rewritten to say it was trained on bars of 30 trades) on
trade-count bars. Each time it SIGKILLs riskflowd mid-stream, restarts it, SIGTERMs it later,
restarts it again, and checks:
  - exactly one MarketSignal per closed bar per instrument: the distinct (instrument,
    bar_index) pairs equal the reference's; a duplicate (the SIGKILL can redeliver events
    whose outputs were acknowledged but whose state was not yet written) is identical in
    content but for signal_at;
  - per instrument the signals come in bar order (a redelivered one repeats an earlier bar,
    never overtakes a later one);
  - each signal's bar end, horizon, model version, source coordinates and the features the
    model saw equal the reference's, and its expected return and p_up equal the numpy GRU's
    to 1e-5 (float32 sums in another order: |diff| <= 1e-5 x max(1, |value|));
  - every instrument's Redis value equals the reference's: features exact, the job's bar
    counters and model signature exact, the hidden state to 1e-5 — carried through both
    restarts;
  - two late trades (time bars: of a bar already closed) update the features but close and
    open no bar of their own;
  - poison dead-lettered with its reason: a payment on the market topic (no enabled job takes
    it: wrong_type), a trade with an empty instrument (bad_key), a quote cut short (truncated);
  - the group's committed offsets at the end of every input partition.
RF_E2E_SEED=<int> picks another simulated market.
"""

import os
import random
import sys

import numpy as np
import pytest

import rfkit
from rfkit import Produced

sys.path.insert(0, os.path.join(rfkit.ROOT, "tools", "train"))
import riskflow_recurrent as rr  # noqa: E402
import simulate_market  # noqa: E402

SEED = int(os.environ.get("RF_E2E_SEED", "20261201"))
INSTRUMENTS, HOURS = 6, 0.75
TRADE_ID, QUOTE_ID, SIGNAL_ID = 4, 5, 8
SCHEMAS = {"riskflow.Trade": (TRADE_ID, rfkit._load_schema("trade.avsc")),
           "riskflow.Quote": (QUOTE_ID, rfkit._load_schema("quote.avsc"))}
SIGNAL_SCHEMA = rfkit._load_schema("market_signal.avsc")
GRU_PATH = os.path.join(rfkit.ROOT, "deploy", "models", "market_gru.safetensors")
LSTM_PATH = os.path.join(rfkit.ROOT, "tests", "fixtures", "market_lstm_small.safetensors")
BAR_MS, BAR_TRADES = 60000, 30


class Setup:
    """A model file and the bars it runs on, and the reference's view of its job state."""

    def __init__(self, model_path, bar_type, bar_len):
        self.path, self.bar_type, self.bar_len = model_path, bar_type, bar_len
        self.model = rr.load_model(model_path)
        self.job_state = {"market": ("instrument", 1, rr.job_state_bytes(self.model))}
        self.job_off = rfkit.rff.Engine(rfkit.DECL, self.job_state).kind(
            "instrument").job_offsets["market"]

    def job(self, eng):
        if self.bar_type == "time":
            return rr.MarketJob(eng, self.model, bar_type="time", bar_ms=self.bar_len)
        return rr.MarketJob(eng, self.model, bar_type="trades", bar_trades=self.bar_len)

    def conf(self):
        key = "market.bar.ms" if self.bar_type == "time" else "market.bar.trades"
        return {"market.model.path": self.path, "market.bar.type": self.bar_type,
                key: self.bar_len}


def lstm_on_trade_bars(tmp_path):
    """The parity fixtures' LSTM, its metadata saying bars of BAR_TRADES trades."""
    tensors, meta = rr.read_safetensors(open(LSTM_PATH, "rb").read())
    meta = {k: v for k, v in meta.items() if k not in ("bar_ms", "bar_trades")}
    meta.update(bar_type="trades", bar_trades=str(BAR_TRADES))
    path = os.path.join(str(tmp_path), "market_lstm_trades.safetensors")
    rr.write_safetensors(path, tensors, meta)
    return path


TIME_FIELD = {"riskflow.Trade": "trade_time", "riskflow.Quote": "quote_time"}


def first(items, n=5):
    items = list(items)
    return "%d: %s%s" % (len(items), items[:n], " ..." if len(items) > n else "")


def near(a, b, tol=1e-5):
    return abs(a - b) <= tol * max(1.0, abs(b))


def encode(rtype, rec):
    sid, schema = SCHEMAS[rtype]
    return rfkit.confluent(sid, rfkit.avro_body(schema, rec))


def reference(recs, setup):
    """Replay each partition in offset order through the features and the market job.
    Returns ({(instrument, bar_index): signal}, engine)."""
    eng = rfkit.rff.Engine(rfkit.DECL, setup.job_state)
    job = setup.job(eng)
    want = {}
    for r in sorted(recs, key=lambda r: (r.partition, r.offset)):
        rtype, rec = r.expect
        for s in job.process(rtype, rec, r.topic, r.partition, r.offset):
            key = (s["instrument"], s["bar_index"])
            assert key not in want, "the reference closed %s twice" % (key,)
            want[key] = s
    return want, eng


def compare_signal(got, want):
    bad = []
    if rfkit.ts_ms(got["bar_end"]) != want["bar_end"]:
        bad.append(("bar_end", got["bar_end"], want["bar_end"]))
    for k in ("horizon_bars", "model_version", "source_partition", "source_offset"):
        if got[k] != want[k]:
            bad.append((k, got[k], want[k]))
    for k in ("expected_return_bps", "p_up"):
        if not near(got[k], want[k]):
            bad.append((k, got[k], want[k]))
    g = [(f["name"], f["value"]) for f in got["features"]]
    w = want["features"]
    if [n for n, _ in g] != [n for n, _ in w] or not all(
            rfkit.close(a[1], b[1]) for a, b in zip(g, w)):
        bad.append(("features", g, w))
    return bad


def split_state(st, setup):
    """(the value without the market job's bytes, the job's JobState) of an EntityState."""
    buf, off, m = st.pack(), setup.job_off, setup.model
    n = rr.job_state_bytes(m)
    js = rr.JobState.unpack(buf[off:off + n], m.H, m.cell == "lstm")
    return buf[:off] + buf[off + n:], js


@pytest.mark.parametrize("bars", ["gru-time", "lstm-trades"])
def test_market_job(services, daemon_bin, tmp_path, bars):
    setup = Setup(GRU_PATH, "time", BAR_MS) if bars == "gru-time" else \
        Setup(lstm_on_trade_bars(tmp_path), "trades", BAR_TRADES)
    rng = random.Random(SEED)
    run = rfkit.unique("rf-market")
    feed, sig_t, dlq_t = run + ".ticks", run + ".signals", run + ".dlq"
    rfkit.create_topics(services, {feed: 4, sig_t: 4, dlq_t: 1})
    sim = simulate_market.simulate(n_instruments=INSTRUMENTS, hours=HOURS, seed=SEED % 100000)
    stream = list(sim.iter_events())
    recs = [Produced(feed, rec["instrument"].encode(), encode(rtype, rec), expect=(rtype, rec))
            for rtype, rec in stream]
    # two late trades: copies of trades from well inside the stream, stamped three bars back
    for k in (len(recs) // 3, 2 * len(recs) // 3):
        i = next(j for j in range(k, len(recs)) if recs[j].expect[0] == "riskflow.Trade")
        late = dict(recs[i].expect[1], trade_id="late-%d" % i,
                    trade_time=recs[i].expect[1]["trade_time"] - 3 * BAR_MS)
        recs.insert(i + 1, Produced(feed, late["instrument"].encode(),
                                    encode("riskflow.Trade", late), expect=("riskflow.Trade", late)))
    # poison, interleaved
    a_trade = next(rec for rtype, rec in stream if rtype == "riskflow.Trade")
    a_quote = next(rec for rtype, rec in stream if rtype == "riskflow.Quote")
    pay = {"event_id": "p1", "customer_id": "C1", "card_token": "t", "merchant_id": "m",
           "terminal_id": "t", "mcc": 5411, "amount_minor": 100, "currency": "EUR",
           "channel": "POS", "country": "FR", "kind": "PURCHASE",
           "event_time": a_trade["trade_time"]}
    poison = [
        (b"C1", rfkit.encode_payment(pay), "wrong_type"),
        (b"", encode("riskflow.Trade", dict(a_trade, instrument="", trade_id="p-empty")),
         "bad_key"),
        (b"XPOISON", encode("riskflow.Quote", dict(a_quote, instrument="XPOISON"))[:-9],
         "truncated"),
    ]
    for key, value, reason in poison:
        recs.insert(rng.randrange(len(recs)), Produced(feed, key, value, expect=("poison", reason)))
    cut1, cut2 = len(recs) * 2 // 5, len(recs) * 7 // 10
    conf = {
        "kafka.bootstrap.servers": services.bootstrap,
        "kafka.group.id": run + ".group",
        "input.topics": feed,
        "jobs": "market",
        "features.path": rfkit.FEATURES_PATH,
        "schemas.dir": rfkit.SCHEMAS_DIR,
        "market.signals.topic": sig_t,
        "output.dlq.topic": dlq_t,
        "redis.host": services.redis_host,
        "redis.port": services.redis_port,
        "redis.key.prefix": run,
        "commit.interval.ms": 200,
        "stats.interval.ms": 1000,
    }
    conf.update(setup.conf())
    producer = rfkit.make_producer(services)
    daemon = rfkit.Daemon(tmp_path, conf)
    sig_r = rfkit.TopicReader(services, sig_t)

    try:
        rfkit.run_with_restarts(services, producer, daemon, recs, (cut1, cut2), sig_r, 30,
                                run + ".group", feed)
        sig_r.read_to_end()
        dlq_r = rfkit.TopicReader(services, dlq_t)
        dlq_r.read_to_end()
    except BaseException:
        daemon.kill()
        print(daemon.log_tail(200))
        raise
    finally:
        sig_r.close()

    # ---- signals against the reference
    want, eng = reference([r for r in recs if r.expect[0] != "poison"], setup)
    assert len(want) > INSTRUMENTS * 20, "simulator: only %d bars: not a test" % len(want)
    got, dups, dup_bad, order_bad = {}, 0, [], []
    seen_by_inst = {}
    for m in sorted(sig_r.msgs, key=lambda m: (m.partition(), m.offset())):
        s = rfkit.decode_confluent(m.value(), SIGNAL_ID, SIGNAL_SCHEMA)
        assert m.key() == s["instrument"].encode(), "MarketSignal keyed %r" % m.key()
        key = (s["instrument"], s["bar_index"])
        last = seen_by_inst.get(s["instrument"], -1)
        if key in got:
            dups += 1
            if dict(s, signal_at=None) != dict(got[key], signal_at=None):
                dup_bad.append(key)
            continue
        if s["bar_index"] <= last:
            order_bad.append((key, last))
        seen_by_inst[s["instrument"]] = s["bar_index"]
        got[key] = s
    assert not dup_bad, "duplicate signals that differ in content: " + first(dup_bad)
    assert not order_bad, "signals out of bar order: " + first(order_bad)
    missing, unexpected = sorted(set(want) - set(got)), sorted(set(got) - set(want))
    assert not missing and not unexpected, "signals: %d expected, %d distinct got; missing %s; " \
        "unexpected %s" % (len(want), len(got), first(missing), first(unexpected))
    bad = [(k, b) for k in sorted(want) for b in [compare_signal(got[k], want[k])] if b]
    assert not bad, "signals differ from the reference: " + first(bad, 3)
    # the late trades closed nothing: every instrument's bars are consecutive
    for inst in sim.instruments:
        idx = sorted(b for i, b in want if i == inst)
        assert idx == list(range(idx[0], idx[0] + len(idx))), "%s: bars %s" % (inst, idx)

    # ---- Redis: every instrument's value: features exact, job state (hidden state to 1e-5)
    red = services.redis()
    r_bad = []
    for (kind, inst), st in eng.states.items():
        raw = red.get(rfkit.state_key(run, kind, inst))
        if raw is None:
            r_bad.append((inst, "missing"))
            continue
        got_st = rfkit.unpack_state(raw, kind, setup.job_state)
        g_feat, g_js = split_state(got_st, setup)
        w_feat, w_js = split_state(st, setup)
        if g_feat != w_feat:
            r_bad.append((inst, "features: " + rfkit.state_diff(got_st, st)))
        if (g_js.bar, g_js.events, g_js.trades, g_js.signature) != \
                (w_js.bar, w_js.events, w_js.trades, w_js.signature):
            r_bad.append((inst, "bar counters", (g_js.bar, g_js.events, g_js.trades),
                          (w_js.bar, w_js.events, w_js.trades)))
        dh = float(np.max(np.abs(g_js.h.astype(np.float64) - w_js.h)))
        if w_js.c is not None:
            dh = max(dh, float(np.max(np.abs(g_js.c.astype(np.float64) - w_js.c))))
        if dh > 1e-5:
            r_bad.append((inst, "hidden state differs by %.2e" % dh))
    assert len(eng.states) == INSTRUMENTS
    assert not r_bad, "Redis values differ from the reference: " + first(r_bad, 3)

    # ---- poison
    rfkit.check_poison(dlq_r.msgs, poison)
    print("market e2e (%s): %d events, %d signals (%d instruments), %d duplicate after the "
          "SIGKILL" % (bars, len(recs), len(want), INSTRUMENTS, dups))
    rfkit.delete_topics(services, [feed, sig_t, dlq_t])
