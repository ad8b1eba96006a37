"""Hot reload and shadow scoring (issue 8 item 3), on the real broker and Redis.

riskflowd runs the fraud job with a serving model (a copy of the shipped logistic model,
version reload-a) and a shadow (version shadow-1), under a NOTIFY_SOCKET of the test's own:
  1. payments are scored by reload-a; each also gets a shadow score (shadow-1) on the shadow
     topic, with its own features and score, and no alert comes from the shadow;
  2. the file is replaced by another model (reload-b: other coefficients) and SIGHUP sent:
     RELOADING=1, then READY=1; the log names reload-b; every payment produced after that is
     scored by reload-b, its score the one reload-b computes from the record's features, and
     in every partition the version switches once, in offset order (a -> b, never back);
  3. the file is replaced by garbage and SIGHUP sent: the log says why it was refused,
     riskflowd keeps serving reload-b, alive;
  4. SIGTERM: exit 0.
"""

import json
import os
import re
import signal
import time

import rfkit
from rfkit import Produced
from test_systemd import NotifySocket

N = 150  # payments per step


def write_model(path, version, bump=0.0):
    with open(rfkit.MODEL_PATH) as f:
        doc = json.load(f)
    doc["version"] = version
    doc["intercept"] += bump
    doc["coefficients"] = [c * (1.0 + bump) for c in doc["coefficients"]]
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(doc, f)
    os.rename(tmp, path)  # as a deployment would: the daemon never reads half a file


def wait_log(daemon, pattern, after, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = daemon.log_text()[after:]
        m = re.search(pattern, text)
        if m:
            return after + m.end()
        daemon.assert_alive()
        time.sleep(0.1)
    raise AssertionError("no %r in the log after %d s\n%s" % (pattern, timeout, daemon.log_tail()))


def produce_step(services, producer, feed, rng, step):
    pays = rfkit.gen_stream(rng, ["c%02d" % i for i in range(40)], N, "rl%d" % step,
                            t_base=rfkit.T_BASE_MS + step * 12 * 86400 * 1000)
    recs = [Produced(feed, p["customer_id"].encode(), rfkit.encode_payment(p), payment=p)
            for p in pays]
    rfkit.produce_checked(producer, recs)
    return {p["event_id"] for p in pays}


def test_reload_and_shadow(services, tmp_path, monkeypatch):
    import random
    rng = random.Random(20261202)
    run = rfkit.unique("rf-reload")
    feed, scores_t, alerts_t, dlq_t, shadow_t = (run + ".feed", run + ".scores", run + ".alerts",
                                                 run + ".dlq", run + ".shadow")
    rfkit.create_topics(services, {feed: 2, scores_t: 1, alerts_t: 1, dlq_t: 1, shadow_t: 1})
    model = str(tmp_path / "model.json")
    shadow = str(tmp_path / "shadow.json")
    write_model(model, "reload-a")
    write_model(shadow, "shadow-1", bump=0.5)
    conf = rfkit.fraud_conf(services, run, model=model, fraud_shadow_model_path=shadow,
                            fraud_shadow_topic=shadow_t, fraud_score_where="all",
                            commit_interval_ms=200)
    ns = NotifySocket(str(tmp_path / "notify.sock"))
    ns.start()
    d = rfkit.Daemon(tmp_path, conf)
    scores_r = rfkit.TopicReader(services, scores_t)
    shadow_r = rfkit.TopicReader(services, shadow_t)
    alerts_r = rfkit.TopicReader(services, alerts_t)
    producer = rfkit.make_producer(services)
    try:
        monkeypatch.setenv("NOTIFY_SOCKET", ns.path)
        d.start()
        monkeypatch.delenv("NOTIFY_SOCKET")
        assert ns.wait_for("READY=1", 60), d.log_tail()
        ids1 = produce_step(services, producer, feed, rng, 1)
        rfkit.wait_outputs(scores_r, d, N, "step 1")
        rfkit.wait_outputs(shadow_r, d, N, "step 1 shadow")

        write_model(model, "reload-b", bump=-0.3)
        t_hup = time.monotonic()
        d.proc.send_signal(signal.SIGHUP)
        pos = wait_log(d, r"fraud: reloaded: fraud model reload-b", 0)
        ids2 = produce_step(services, producer, feed, rng, 2)
        rfkit.wait_outputs(scores_r, d, 2 * N, "step 2")

        with open(model, "w") as f:
            f.write('{"format": "riskflow.logistic.v1", "version": "broken"')
        d.proc.send_signal(signal.SIGHUP)
        wait_log(d, r"fraud: reload refused, the running model stays: .*fraud\.model\.path", pos)
        ids3 = produce_step(services, producer, feed, rng, 3)
        rfkit.wait_outputs(scores_r, d, 3 * N, "step 3")
        rfkit.wait_outputs(shadow_r, d, 3 * N, "step 3 shadow")
        d.assert_alive()
        d.proc.send_signal(signal.SIGTERM)
        assert d.proc.wait(30) == 0, d.log_tail()
        scores_r.read_to_end()
        shadow_r.read_to_end()
        alerts_r.read_to_end()
    except BaseException:
        d.kill()
        print(d.log_tail(120))
        raise
    finally:
        ns.close()

    def decoded(reader):
        out = {}
        for m in reader.msgs:
            s = rfkit.decode_confluent(m.value(), rfkit.SCORE_ID, rfkit.SCORE_SCHEMA)
            out[s["event_id"]] = s
        return out

    scores, shadows = decoded(scores_r), decoded(shadow_r)
    assert set(scores) == ids1 | ids2 | ids3 == set(shadows)
    ma, mb = rfkit.Model(rfkit.MODEL_PATH), None
    with open(str(tmp_path / "b.json"), "w"):
        pass
    write_model(str(tmp_path / "b.json"), "reload-b", bump=-0.3)
    mb = rfkit.Model(str(tmp_path / "b.json"))
    ms = rfkit.Model(shadow)
    bad = []
    for eid, s in scores.items():
        x = [f["value"] for f in s["features"]]
        want_v = "reload-a" if eid in ids1 else "reload-b"
        if s["model_version"] != want_v:
            bad.append((eid, s["model_version"], want_v))
            continue
        m = mb if want_v == "reload-b" else ma
        if not rfkit.close(s["score"], m.score(x)):
            bad.append((eid, s["score"], m.score(x)))
        sh = shadows[eid]
        xs = [f["value"] for f in sh["features"]]
        if sh["model_version"] != "shadow-1" or not rfkit.close(sh["score"], ms.score(xs)):
            bad.append((eid, "shadow", sh["model_version"], sh["score"], ms.score(xs)))
    assert not bad, bad[:5]
    # In each partition the version switches once, in offset order.
    by_part = {}
    for s in scores.values():
        by_part.setdefault(s["source_partition"], []).append((s["source_offset"],
                                                               s["model_version"]))
    for p, seq in by_part.items():
        vs = [v for _, v in sorted(seq)]
        assert vs == sorted(vs), (p, vs)  # reload-a ... reload-b
    # Alerts come from the serving model only.
    for m in alerts_r.msgs:
        a = rfkit.decode_confluent(m.value(), rfkit.ALERT_ID, rfkit.ALERT_SCHEMA)
        assert a["model_version"] in ("reload-a", "reload-b")
    # systemd heard of both reloads: RELOADING=1 each time, READY=1 after each.
    msgs = [(t, m) for t, m in ns.msgs if m in ("READY=1", "RELOADING=1") and t >= t_hup]
    kinds = [m for _, m in msgs]
    assert kinds[:4] == ["RELOADING=1", "READY=1", "RELOADING=1", "READY=1"], kinds


def test_reload_credit(services, tmp_path):
    """The credit scorecard reloads too: PdUpdates name the new version from the swap on (each
    customer's first event after it publishes afresh: its band was another model's); a broken
    file is refused and the running scorecard stays."""
    import random
    rng = random.Random(7)
    run = rfkit.unique("rf-reload-cr")
    feed, pd_t = run + ".feed", run + ".pd"
    rfkit.create_topics(services, {feed: 1, pd_t: 1, run + ".dlq": 1})
    sc_path = str(tmp_path / "scorecard.json")
    src = os.path.join(rfkit.ROOT, "deploy", "models", "credit_scorecard.json")

    def write_sc(version, text=None):
        with open(src) as f:
            doc = json.load(f)
        doc["version"] = version
        with open(sc_path + ".tmp", "w") as f:
            f.write(text if text is not None else json.dumps(doc))
        os.rename(sc_path + ".tmp", sc_path)

    write_sc("sc-a")
    conf = rfkit.fraud_conf(services, run, jobs="credit", credit_model_path=sc_path,
                            credit_pd_topic=pd_t, commit_interval_ms=200)
    d = rfkit.Daemon(tmp_path, conf, name="credit")
    pd_r = rfkit.TopicReader(services, pd_t)
    producer = rfkit.make_producer(services)
    try:
        d.start()
        ids1 = produce_step(services, producer, feed, rng, 1)
        rfkit.wait_committed_to_end(services, d, run + ".group", feed)
        pd_r.read_to_end()
        n1 = len(pd_r.msgs)
        assert n1 > 0
        write_sc("sc-b")
        d.proc.send_signal(signal.SIGHUP)
        pos = wait_log(d, r"credit: reloaded: credit scorecard sc-b", 0)
        ids2 = produce_step(services, producer, feed, rng, 2)
        rfkit.wait_committed_to_end(services, d, run + ".group", feed)
        write_sc("sc-c", text='{"format": "riskflow.scorecard.v1"')
        d.proc.send_signal(signal.SIGHUP)
        wait_log(d, r"credit: reload refused, the running model stays: .*credit\.model\.path", pos)
        ids3 = produce_step(services, producer, feed, rng, 3)
        rfkit.wait_committed_to_end(services, d, run + ".group", feed)
        d.proc.send_signal(signal.SIGTERM)
        assert d.proc.wait(30) == 0, d.log_tail()
        pd_r.read_to_end()
    except BaseException:
        d.kill()
        print(d.log_tail(120))
        raise
    ups = [rfkit.decode_confluent(m.value(), 7, rfkit._load_schema("pd_update.avsc"))
           for m in pd_r.msgs]
    by_cause = {}
    for u in ups:
        by_cause.setdefault(u["model_version"], set()).add(u["cause_event_id"])
    assert by_cause.get("sc-a") and by_cause["sc-a"] <= ids1, sorted(by_cause)
    assert by_cause.get("sc-b") and by_cause["sc-b"] <= ids2 | ids3, sorted(by_cause)
    assert set(by_cause) == {"sc-a", "sc-b"}, sorted(by_cause)
    # After the swap every customer with an event published again under sc-b.
    step2_customers = {u["customer_id"] for u in ups if u["cause_event_id"] in ids2}
    assert len(step2_customers) >= 10


def test_reload_market(services, tmp_path):
    """The market network reloads: the same file again is swapped in; one whose hidden state
    has another shape (the fixtures' small LSTM) or garbage is refused with the reason, and
    the running GRU stays."""
    import shutil
    run = rfkit.unique("rf-reload-mk")
    rfkit.create_topics(services, {run + ".feed": 1, run + ".signals": 1, run + ".dlq": 1})
    path = str(tmp_path / "market.safetensors")
    gru = os.path.join(rfkit.ROOT, "deploy", "models", "market_gru.safetensors")
    shutil.copyfile(gru, path)
    conf = rfkit.fraud_conf(services, run, jobs="market", market_model_path=path,
                            market_signals_topic=run + ".signals")
    d = rfkit.Daemon(tmp_path, conf, name="market")
    try:
        d.start()
        wait_log(d, r"rebalance: assignment", 0)
        d.proc.send_signal(signal.SIGHUP)
        pos = wait_log(d, r"market: reloaded: market model \S+ \(GRU", 0)
        shutil.copyfile(os.path.join(rfkit.ROOT, "tests", "fixtures",
                                     "market_lstm_small.safetensors"), path + ".tmp")
        os.rename(path + ".tmp", path)
        d.proc.send_signal(signal.SIGHUP)
        pos = wait_log(d, r"market: reload refused, the running model stays: .*restart riskflowd",
                       pos)
        with open(path, "wb") as f:
            f.write(b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\":1")
        d.proc.send_signal(signal.SIGHUP)
        wait_log(d, r"market: reload refused, the running model stays: .*market\.model\.path", pos)
        d.assert_alive()
        d.proc.send_signal(signal.SIGTERM)
        assert d.proc.wait(30) == 0, d.log_tail()
    except BaseException:
        d.kill()
        print(d.log_tail(80))
        raise
