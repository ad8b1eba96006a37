"""The credit job end to end on the real broker and Redis (docs/ENGINE.md §5).

Customers' credit events and payments come from tools/train/simulate_credit.py (the simulator
the scorecard was trained on) and share ONE Confluent-framed topic keyed by customer: the
schema id names each record's type, and a customer's events reach riskflowd in one partition's
offset order, so the independent Python reference (riskflow_features.Engine for the features,
riskflow_scorecard.CreditJob for the publish rule) replays exactly what the daemon saw.

Runs riskflowd with jobs=fraud,credit (payments feed both), SIGKILLs it mid-stream, restarts
it, SIGTERMs it later, restarts it again, and checks:
  - every PdUpdate the reference publishes is there, and nothing else: the distinct
    (customer, causing event) pairs are equal; a duplicate (the SIGKILL can redeliver events
    whose outputs were acknowledged but whose state was not yet written) is identical in
    content but for updated_at;
  - each update's PD, score, band, previous band, reasons (feature, value, points lost),
    model version, cause and source coordinates equal the reference's;
  - every customer's Redis value (features and the credit job's state) equals the reference's;
  - one fraud score per payment that fraud.score.where admits (by default not the money
    coming in: salaries and refunds), none for the others;
  - credit poison dead-lettered with its reason: a record of a type no enabled job takes
    (wrong_type), an empty customer id (bad_key), a truncated credit event;
  - the group's committed offsets at the end of every input partition.
RF_E2E_SEED=<int> picks another simulated world.
"""

import os
import random
import sys

import pytest

import rfkit
from rfkit import Produced

sys.path.insert(0, os.path.join(rfkit.ROOT, "tools", "train"))
import riskflow_scorecard as rsc  # noqa: E402
import simulate_credit  # noqa: E402

SEED = int(os.environ.get("RF_E2E_SEED", "20261201"))
CUSTOMERS = 80
CREDIT_ID, PD_ID, TRADE_ID = 6, 7, 4
PD_SCHEMA = rfkit._load_schema("pd_update.avsc")
CREDIT_SCHEMA = rfkit._load_schema("credit_event.avsc")
TRADE_SCHEMA = rfkit._load_schema("trade.avsc")
CREDIT_MODEL = os.path.join(rfkit.ROOT, "deploy", "models", "credit_scorecard.json")
JOB_STATE = {"credit": ("customer", rsc.STATE_VERSION, rsc.STATE_BYTES)}
DELTA, HYSTERESIS = 0.02, 5.0


def first(items, n=5):
    items = list(items)
    return "%d: %s%s" % (len(items), items[:n], " ..." if len(items) > n else "")


def encode(rtype, rec):
    if rtype == "riskflow.CreditEvent":
        return rfkit.confluent(CREDIT_ID, rfkit.avro_body(CREDIT_SCHEMA, rec))
    return rfkit.encode_payment(rec)


def reference(recs):
    """Replay each partition in offset order: the features riskflowd computes, and the
    credit job's publish rule. Returns ({cause_event_id: expected update}, engine)."""
    sc = rsc.load(CREDIT_MODEL)
    job = rsc.CreditJob(sc, DELTA, HYSTERESIS)
    eng = rfkit.rff.Engine(rfkit.DECL, JOB_STATE)
    want = {}
    for r in sorted(recs, key=lambda r: (r.partition, r.offset)):
        rtype, rec = r.expect
        if not eng.apply(rtype, rec, r.topic, r.partition, r.offset):
            continue
        feats = eng.evaluate(rtype, rec, sc.features)
        st = eng.state("customer", rec["customer_id"])
        up, new = job.on_event(rsc.CreditState.unpack(st.job_state("credit")), feats)
        if up is None:
            continue
        st.set_job_state("credit", new.pack())
        up.update(customer_id=rec["customer_id"], cause_event_id=rec["event_id"],
                  cause_type=rtype, event_time=rec["event_time"], source_partition=r.partition,
                  source_offset=r.offset)
        want[rec["event_id"]] = up
    return want, eng


def compare_update(got, want):
    bad = []
    for k in ("customer_id", "band", "previous_band", "model_version", "cause_event_id",
              "cause_type", "source_partition", "source_offset"):
        if got[k] != want[k]:
            bad.append((k, got[k], want[k]))
    if rfkit.ts_ms(got["event_time"]) != want["event_time"]:
        bad.append(("event_time", got["event_time"], want["event_time"]))
    for k in ("pd", "score"):
        if not rfkit.close(got[k], want[k]):
            bad.append((k, got[k], want[k]))
    g = [(x["feature"], x["value"], x["points_lost"]) for x in got["reasons"]]
    w = [(x["feature"], x["value"], x["points_lost"]) for x in want["reasons"]]
    if [x[0] for x in g] != [x[0] for x in w] or not all(
            rfkit.close(a[1], b[1]) and rfkit.close(a[2], b[2]) for a, b in zip(g, w)):
        bad.append(("reasons", g, w))
    return bad


def test_credit_job(services, daemon_bin, tmp_path):
    rng = random.Random(SEED)
    run = rfkit.unique("rf-credit")
    feed, pd_t = run + ".feed", run + ".pd"
    scores_t, alerts_t, dlq_t = run + ".scores", run + ".alerts", run + ".dlq"
    rfkit.create_topics(services, {feed: 4, pd_t: 4, scores_t: 2, alerts_t: 1, dlq_t: 1})
    ev, _ = simulate_credit.simulate(n_customers=CUSTOMERS, seed=SEED % 100000)
    stream = list(ev.records())
    recs = [Produced(feed, rec["customer_id"].encode(), encode(rtype, rec), expect=(rtype, rec))
            for rtype, _topic, rec in stream]
    n_payments = sum(1 for r in recs if r.expect[0] == "riskflow.Payment")
    # poison, interleaved: a Trade (no enabled job takes trades), an empty customer id, a
    # credit event cut short
    a_ce = next(rec for rtype, _t, rec in stream if rtype == "riskflow.CreditEvent")
    trade = {"instrument": "XPAR:ABC", "venue": "XPAR", "trade_id": "t1", "price": 10.5,
             "quantity": 3.0, "aggressor_side": "BUY", "trade_time": a_ce["event_time"]}
    poison = [
        (b"C999999", rfkit.confluent(TRADE_ID, rfkit.avro_body(TRADE_SCHEMA, trade)),
         "wrong_type"),
        (b"", encode("riskflow.CreditEvent", dict(a_ce, customer_id="", event_id="p-empty")),
         "bad_key"),
        (b"C999998", encode("riskflow.CreditEvent", dict(a_ce, event_id="p-cut"))[:-4],
         "truncated"),
    ]
    for key, value, reason in poison:
        recs.insert(rng.randrange(len(recs)), Produced(feed, key, value, expect=("poison", reason)))
    half, three_q = len(recs) // 2, len(recs) * 3 // 4
    conf = {
        "kafka.bootstrap.servers": services.bootstrap,
        "kafka.group.id": run + ".group",
        "input.topics": feed,
        "jobs": "fraud,credit",
        "features.path": rfkit.FEATURES_PATH,
        "schemas.dir": rfkit.SCHEMAS_DIR,
        "fraud.model.path": rfkit.MODEL_PATH,
        "fraud.scores.topic": scores_t,
        "fraud.alerts.topic": alerts_t,
        "credit.model.path": CREDIT_MODEL,
        "credit.pd.topic": pd_t,
        "credit.pd.delta": DELTA,
        "credit.band.hysteresis": HYSTERESIS,
        "output.dlq.topic": dlq_t,
        "redis.host": services.redis_host,
        "redis.port": services.redis_port,
        "redis.key.prefix": run,
        "commit.interval.ms": 200,
        "stats.interval.ms": 1000,
    }
    producer = rfkit.make_producer(services)
    daemon = rfkit.Daemon(tmp_path, conf)
    pd_r = rfkit.TopicReader(services, pd_t)
    try:
        rfkit.run_with_restarts(services, producer, daemon, recs, (half, three_q), pd_r, 20,
                                run + ".group", feed)
        pd_r.read_to_end()
        scores_r = rfkit.TopicReader(services, scores_t)
        scores_r.read_to_end()
        dlq_r = rfkit.TopicReader(services, dlq_t)
        dlq_r.read_to_end()
    except BaseException:
        daemon.kill()
        print(daemon.log_tail(200))
        raise
    finally:
        pd_r.close()

    # ---- PD updates against the reference
    want, eng = reference([r for r in recs if r.expect[0] != "poison"])
    assert len(want) > 50, "simulator: only %d PD updates: not a test" % len(want)
    got, dups, dup_bad = {}, 0, []
    for m in pd_r.msgs:
        u = rfkit.decode_confluent(m.value(), PD_ID, PD_SCHEMA)
        assert m.key() == u["customer_id"].encode(), "PdUpdate keyed %r" % m.key()
        eid = u["cause_event_id"]
        if eid in got:
            dups += 1
            prev = dict(got[eid], updated_at=None)
            if dict(u, updated_at=None) != prev:
                dup_bad.append(eid)
            continue
        got[eid] = u
    assert not dup_bad, "duplicate PdUpdates that differ in content: " + first(dup_bad)
    missing, unexpected = sorted(set(want) - set(got)), sorted(set(got) - set(want))
    assert not missing and not unexpected, "PdUpdates: %d expected, %d distinct got; missing " \
        "%s; unexpected %s" % (len(want), len(got), first(missing), first(unexpected))
    bad = [(eid, b) for eid in want for b in [compare_update(got[eid], want[eid])] if b]
    assert not bad, "PdUpdates differ from the reference: " + first(bad, 3)
    bands_changed = sum(1 for u in want.values() if u["previous_band"] not in ("", u["band"]))
    assert bands_changed > 5, "simulator: only %d band changes" % bands_changed

    # ---- fraud: one score per payment that fraud.score.where admits (both jobs take payments)
    score_ids = {}
    for m in scores_r.msgs:
        s = rfkit.decode_confluent(m.value(), rfkit.SCORE_ID, rfkit.SCORE_SCHEMA)
        score_ids[s["event_id"]] = s
    pays = [r.expect[1] for r in recs if r.expect[0] == "riskflow.Payment"]
    scored = {p["event_id"] for p in pays if p["kind"] not in ("TRANSFER_IN", "REFUND")}
    passed = {p["event_id"] for p in pays} - scored
    assert len(pays) == n_payments and len(passed) > 50 and len(scored) > 1000, \
        "simulator: %d payments, %d incoming" % (len(pays), len(passed))
    assert set(score_ids) == scored, "fraud scores for %d of %d scored payments; %d for " \
        "incoming ones" % (len(set(score_ids) & scored), len(scored), len(set(score_ids) & passed))

    # ---- Redis: every customer's value, features and the credit job's state
    red = services.redis()
    r_bad = []
    # A sliced kind (the terminal) is a hash of per-partition slices: test_sliced.py holds those.
    sliced = {e.name for e in eng.decl.entities if e.sliced}
    for (kind, cid), st in eng.states.items():
        if kind in sliced:
            continue
        raw = red.get(rfkit.state_key(run, kind, cid))
        got_st = rfkit.unpack_state(raw, kind, JOB_STATE) if raw is not None else None
        if got_st is None or got_st != st:
            r_bad.append((cid, "missing" if got_st is None else rfkit.state_diff(got_st, st)))
    assert not r_bad, "Redis values differ from the reference: " + first(r_bad, 3)

    # ---- poison (a message taken again after the SIGKILL is dead-lettered again)
    rfkit.check_poison(dlq_r.msgs, poison)
    print("credit e2e: %d events (%d payments), %d PD updates (%d band changes), %d duplicate "
          "after the SIGKILL" % (len(recs), n_payments, len(want), bands_changed, dups))
    rfkit.delete_topics(services, [feed, pd_t, scores_t, alerts_t, dlq_t])
