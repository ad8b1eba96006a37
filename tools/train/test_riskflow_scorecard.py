"""Hand-computed cases for riskflow_scorecard.py against docs/MODELS.md §2 and the publish rule
of docs/ENGINE.md §5.

Run: python3 -m pytest tools/train/test_riskflow_scorecard.py   (or run this file directly).
Standard library only.
"""

import copy
import json
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import riskflow_scorecard as rsc  # noqa: E402

FACTOR = 20 / math.log(2)              # pdo / ln 2
OFFSET = 600 - FACTOR * math.log(50)   # base_score - factor ln(base_odds)

DOC = {
    "format": "riskflow.scorecard.v1",
    "name": "credit",
    "version": "credit-sc-20260101-00000000",
    "features": [
        {"name": "util", "edges": [0.3, 0.6, 0.9], "woe": [0.8, 0.2, -0.4, -1.1]},
        {"name": "dpd", "edges": [1, 31], "woe": [0.5, -0.7, -2.0]},
        {"name": "flat", "edges": [], "woe": [0.25]},
    ],
    "coefficients": [-1.0, -0.5, -0.3],
    "intercept": -3.0,
    "scaling": {"base_score": 600, "base_odds": 50, "pdo": 20},
    "bands": [{"name": "A", "min_score": 640}, {"name": "B", "min_score": 620},
              {"name": "C", "min_score": 600}, {"name": "D", "min_score": None}],
}


def card(**changes):
    d = copy.deepcopy(DOC)
    d.update(changes)
    return rsc.Scorecard(d)


def close(a, b, rel=1e-12):
    return abs(a - b) <= rel * max(abs(a), abs(b), 1e-300)


# -- bins ----------------------------------------------------------------------------------

def test_bins_edges_fall_in_the_upper_bin():
    e = [0.3, 0.6, 0.9]
    assert rsc.bin_index(e, -5.0) == 0
    assert rsc.bin_index(e, 0.29999999999999999) == 1  # that literal is the double 0.3
    assert rsc.bin_index(e, math.nextafter(0.3, 0)) == 0
    assert rsc.bin_index(e, 0.3) == 1
    assert rsc.bin_index(e, 0.45) == 1
    assert rsc.bin_index(e, 0.6) == 2
    assert rsc.bin_index(e, 0.9) == 3
    assert rsc.bin_index(e, 1e300) == 3
    assert rsc.bin_index([], 7.0) == 0
    assert rsc.bin_index([1.0], 1.0) == 1 and rsc.bin_index([1.0], 0.0) == 0


def test_bins_non_finite_fall_in_bin_zero():
    e = [0.3, 0.6, 0.9]
    for x in (float("nan"), float("inf"), float("-inf")):
        assert rsc.bin_index(e, x) == 0
    r = card().score({"util": float("inf"), "dpd": float("nan"), "flat": float("-inf")})
    assert r.bins == [0, 0, 0]


def test_bins_match_searchsorted_right():
    edges = [-2.0, -0.5, 0.0, 1.0, 1.5, 10.0]
    xs = [-3, -2, -1, -0.5, -0.25, 0, 0.5, 1, 1.25, 1.5, 9.99, 10, 11]
    for x in xs:
        want = sum(1 for e in edges if e <= x)
        assert rsc.bin_index(edges, float(x)) == want, x


# -- PD, points -----------------------------------------------------------------------------

def test_hand_computed_row():
    sc = card()
    # util 0.6 is on an edge: bin 2 (woe -0.4); dpd 0: bin 0 (woe 0.5); flat: bin 0 (0.25)
    r = sc.score({"util": 0.6, "dpd": 0, "flat": 123.0})
    assert r.bins == [2, 0, 0]
    z = -3.0 + (-1.0) * -0.4 + (-0.5) * 0.5 + (-0.3) * 0.25   # = -2.925
    assert r.log_odds == z
    assert close(r.log_odds, -2.925)
    assert r.pd == math.exp(z) / (1 + math.exp(z))
    assert close(r.pd, 1 / (1 + math.exp(2.925)))
    assert close(r.score, OFFSET + FACTOR * 2.925)
    # points: util p(b) = factor*woe (coefficient -1), dpd p(b) = 0.5*factor*woe
    assert close(r.points[0], FACTOR * -0.4)
    assert close(r.points[1], FACTOR * 0.25)
    assert close(r.points[2], 0.3 * FACTOR * 0.25)
    # the score is also offset - factor*intercept + sum of points
    assert close(r.score, OFFSET - FACTOR * -3.0 + sum(r.points))
    # only util lost points: from its best bin (woe 0.8) to woe -0.4
    assert r.reasons == [rsc.Reason("util", 0.6, FACTOR * 0.8 - FACTOR * -0.4)]
    assert close(r.reasons[0].points_lost, 1.2 * FACTOR)
    assert r.band == "D" and r.band_index == 3  # score ~ 571.5


def test_pd_formula_both_signs_and_extremes():
    for z in (-800.0, -40.0, -1.5, 0.0, 1.5, 40.0, 800.0):
        sc = card(intercept=z, coefficients=[0.0, 0.0, 0.0])
        r = sc.score({"util": 0, "dpd": 0, "flat": 0})
        assert r.log_odds == z
        want = 1 / (1 + math.exp(-z)) if z >= 0 else math.exp(z) / (1 + math.exp(z))
        assert r.pd == want
        assert 0.0 <= r.pd <= 1.0
    # the z < 0 form keeps relative precision where 1 - 1/(1+e^z) would not
    sc = card(intercept=-40.0, coefficients=[0.0, 0.0, 0.0])
    assert close(sc.score({"util": 0, "dpd": 0, "flat": 0}).pd, math.exp(-40.0), 1e-15)


def test_base_score_at_base_odds():
    # z = ln(1/50): odds good:bad = 50 -> exactly the base score
    sc = card(intercept=-math.log(50), coefficients=[0.0, 0.0, 0.0])
    r = sc.score({"util": 0, "dpd": 0, "flat": 0})
    assert close(r.score, 600.0)
    assert close((1 - r.pd) / r.pd, 50.0)


def test_pdo_points_double_the_odds():
    sc = card()
    a = sc.score({"util": 0.1, "dpd": 0, "flat": 0})
    # a second card whose intercept is ln 2 lower: odds of good doubled
    sc2 = card(intercept=DOC["intercept"] - math.log(2))
    b = sc2.score({"util": 0.1, "dpd": 0, "flat": 0})
    assert close(b.score - a.score, 20.0)
    odds = lambda r: (1 - r.pd) / r.pd  # noqa: E731
    assert close(odds(b) / odds(a), 2.0, 1e-9)
    # and in general: score = offset - factor * ln(pd / (1 - pd))
    for x in ({"util": 0.95, "dpd": 40, "flat": 0}, {"util": 0.0, "dpd": 0, "flat": 0}):
        r = sc.score(x)
        assert close(r.score, OFFSET - FACTOR * math.log(r.pd / (1 - r.pd)), 1e-9)


def test_other_scaling():
    sc = card(scaling={"base_score": 500, "base_odds": 19, "pdo": 40})
    f = 40 / math.log(2)
    r = sc.score({"util": 0.5, "dpd": 5, "flat": 1})
    assert close(r.score, 500 - f * math.log(19) - f * r.log_odds)


# -- bands ----------------------------------------------------------------------------------

def test_band_edges():
    sc = card()
    assert sc.band_of(640.0) == (0, "A")
    assert sc.band_of(math.nextafter(640.0, 0)) == (1, "B")
    assert sc.band_of(620.0) == (1, "B")
    assert sc.band_of(600.0) == (2, "C")
    assert sc.band_of(599.999) == (3, "D")
    assert sc.band_of(-1e9) == (3, "D")
    assert sc.band_of(1e9) == (0, "A")


def test_band_of_a_scored_row():
    # intercept chosen so that the score is 620 + 1e-6 or 620 - 1e-6 (no feature effect)
    for delta, band in ((1e-6, "B"), (-1e-6, "C")):
        z = (OFFSET - (620 + delta)) / FACTOR
        sc = card(intercept=z, coefficients=[0.0, 0.0, 0.0])
        r = sc.score({"util": 0, "dpd": 0, "flat": 0})
        assert r.band == band, (r.score, band)


def test_single_band():
    sc = card(bands=[{"name": "ALL", "min_score": None}])
    assert sc.score({"util": 2, "dpd": 99, "flat": 0}).band == "ALL"


# -- reasons --------------------------------------------------------------------------------

def test_reasons_order_ties_and_limit():
    feats = [{"name": n, "edges": [1.0], "woe": [1.0, 0.0]} for n in ("f1", "f2", "f3", "f4")]
    # coefficients set the points a feature loses in its bad bin: factor * |c|
    sc = card(features=feats + [{"name": "f5", "edges": [1.0], "woe": [0.0, 1.0]}],
              coefficients=[-1.0, -2.0, -1.0, -2.0, -3.0], intercept=-2.0)
    r = sc.score({"f1": 5, "f2": 5, "f3": 5, "f4": 5, "f5": 5})
    # f5 is in its best bin (woe 1.0 with c -3 -> the most points): no reason
    # f2, f4 lose 2*factor (tie: file order f2 then f4), f1, f3 lose factor (f1 first)
    assert [x.feature for x in r.reasons] == ["f2", "f4", "f1"]
    assert close(r.reasons[0].points_lost, 2 * FACTOR)
    assert r.reasons[0].points_lost == r.reasons[1].points_lost
    assert close(r.reasons[2].points_lost, FACTOR)
    assert [x.value for x in r.reasons] == [5.0, 5.0, 5.0]


def test_no_reasons_when_every_feature_is_at_its_best():
    sc = card()
    r = sc.score({"util": 0.0, "dpd": 0, "flat": 0})  # best bins of util and dpd
    assert r.reasons == []


def test_positive_coefficient_best_bin_is_the_lowest_woe():
    # a positive coefficient turns the points around: the most negative woe is the best bin
    sc = card(coefficients=[1.0, -0.5, -0.3])
    r = sc.score({"util": 0.95, "dpd": 0, "flat": 0})   # util bin 3, woe -1.1: the best
    assert [x.feature for x in r.reasons] == []
    r = sc.score({"util": 0.0, "dpd": 0, "flat": 0})    # util bin 0, woe 0.8
    assert r.reasons[0].feature == "util"
    assert close(r.reasons[0].points_lost, FACTOR * 1.9)


def test_reasons_largest_first():
    sc = card()
    r = sc.score({"util": 0.95, "dpd": 31, "flat": 0})
    # util loses factor*(0.8 - -1.1) = 1.9 factor; dpd 0.5*factor*(0.5 - -2.0) = 1.25 factor
    assert [x.feature for x in r.reasons] == ["util", "dpd"]
    assert close(r.reasons[0].points_lost, 1.9 * FACTOR)
    assert close(r.reasons[1].points_lost, 1.25 * FACTOR)


# -- loading --------------------------------------------------------------------------------

def test_load_roundtrip_and_dumps():
    text = rsc.dumps(DOC)
    sc = rsc.loads(text)
    assert sc.features == ["util", "dpd", "flat"]
    assert json.loads(text)["bands"][-1]["min_score"] is None
    assert rsc.loads(rsc.dumps(sc.doc)).score({"util": 0.7, "dpd": 3, "flat": 0}).score == \
        sc.score({"util": 0.7, "dpd": 3, "flat": 0}).score


def test_bad_documents_are_refused():
    bad = [
        {"format": "riskflow.logistic.v1"},
        {"features": []},
        {"coefficients": [-1.0, -0.5]},
        {"features": [{"name": "a", "edges": [0.5, 0.5], "woe": [0, 0, 0]}], "coefficients": [1]},
        {"features": [{"name": "a", "edges": [0.6, 0.5], "woe": [0, 0, 0]}], "coefficients": [1]},
        {"features": [{"name": "a", "edges": [0.5], "woe": [0]}], "coefficients": [1]},
        {"features": [{"name": "a", "edges": [], "woe": [0]},
                      {"name": "a", "edges": [], "woe": [0]}], "coefficients": [1, 1]},
        {"intercept": "x"},
        {"intercept": float("nan")},
        {"scaling": {"base_score": 600, "base_odds": 0, "pdo": 20}},
        {"scaling": {"base_score": 600, "base_odds": 50, "pdo": -20}},
        {"bands": [{"name": "A", "min_score": 600}]},
        {"bands": [{"name": "A", "min_score": 600}, {"name": "B", "min_score": 650},
                   {"name": "C", "min_score": None}]},
        {"bands": [{"name": "A", "min_score": None}, {"name": "B", "min_score": None}]},
        {"bands": []},
    ]
    for changes in bad:
        d = copy.deepcopy(DOC)
        d.update(changes)
        try:
            rsc.Scorecard(d)
        except rsc.ScorecardError:
            continue
        raise AssertionError("accepted: %r" % changes)
    try:
        rsc.loads("{not json")
    except rsc.ScorecardError:
        pass
    else:
        raise AssertionError("accepted bad JSON")


def test_missing_feature_is_an_error():
    try:
        card().score({"util": 0.5, "dpd": 0})
    except KeyError as e:
        assert "flat" in str(e)
    else:
        raise AssertionError("scored without 'flat'")


# -- the publish rule (ENGINE.md §5) ---------------------------------------------------------

def test_publish_rule():
    sc = card()
    job = rsc.CreditJob(sc, pd_delta=0.02)
    sig = rsc.model_signature(DOC["version"])
    st = rsc.CreditState()
    assert st.band_index(sc) == -1 and st.pack() == bytes(16)   # zero when fresh: none

    r1 = sc.score({"util": 0.1, "dpd": 0, "flat": 0})
    up, st = job.decide(st, r1)
    assert up is not None and up["previous_band"] == "" and up["band"] == r1.band
    assert up["pd"] == r1.pd and up["score"] == r1.score
    assert up["model_version"] == DOC["version"]
    assert st == rsc.CreditState(r1.pd, r1.band_index + 1, sig)
    assert st.band_index(sc) == r1.band_index

    # the same result again: same band, no move -> nothing, state kept
    up, st2 = job.decide(st, r1)
    assert up is None and st2 == st

    # a band change far out of the published band publishes even for a small PD move
    r_other = sc.score({"util": 0.95, "dpd": 40, "flat": 0})
    assert r_other.band != r1.band
    up, st3 = job.decide(st, r_other)
    assert up["previous_band"] == r1.band and up["band"] == r_other.band
    assert [x["feature"] for x in up["reasons"]] == ["util", "dpd"]
    assert st3.band_index(sc) == r_other.band_index

    # a state another model version published counts as none: its index may mean another band
    other = rsc.CreditState(r1.pd, r1.band_index + 1, sig ^ 1)
    assert other.band_index(sc) == -1
    up, _ = job.decide(other, r1)
    assert up is not None and up["previous_band"] == ""
    # a band index the model does not have: none too
    assert rsc.CreditState(0.1, 9, sig).band_index(sc) == -1


def res(sc, pd, band_index, score):
    return rsc.Result(pd, score, sc.band_names[band_index], band_index, 0.0, [], [], [])


def test_publish_rule_delta_is_strict():
    sc = card()
    job = rsc.CreditJob(sc, pd_delta=0.03125, hysteresis=0)  # exact in binary, as the PDs below
    sig = rsc.model_signature(DOC["version"])
    st = rsc.CreditState(0.5, 4, sig)  # band D (index 3): scores below 600
    assert job.decide(st, res(sc, 0.53125, 3, 590))[0] is None     # |diff| == delta: not published
    assert job.decide(st, res(sc, 0.46875, 3, 590))[0] is None
    assert job.decide(st, res(sc, 0.53125 + 2 ** -40, 3, 590))[0] is not None   # just above
    assert job.decide(st, res(sc, 0.46875 - 2 ** -40, 3, 590))[0] is not None
    up, new = job.decide(st, res(sc, 0.5, 2, 610))               # same PD, other band
    assert up["previous_band"] == "D" and up["band"] == "C" and new.band_index(sc) == 2
    # the published PD is the reference, not the last computed one: drifting by small
    # steps publishes once the sum of the steps exceeds the delta
    st = rsc.CreditState(0.5, 4, sig)
    for k in range(1, 10):
        up, st = job.decide(st, res(sc, 0.5 + k * 2 ** -6, 3, 590))    # steps of 0.015625
        if up is not None:
            break
    assert k == 3 and st.published_pd == 0.5 + 3 * 2 ** -6


def test_hysteresis():
    sc = card()
    job = rsc.CreditJob(sc, pd_delta=0.5, hysteresis=5)  # the PD rule out of the way
    sig = rsc.model_signature(DOC["version"])
    st = rsc.CreditState(0.03, 2, sig)  # published band B: [620, 640)
    for score, publish in [(630, False), (616, False), (615.5, False), (614.99, True),
                           (644.99, False), (645, True), (700, True), (500, True)]:
        band = 0 if score >= 640 else 1 if score >= 620 else 2 if score >= 600 else 3
        up, new = job.decide(st, res(sc, 0.03, band, score))
        assert (up is not None) == publish, (score, up)
        if up is not None:
            assert up["band"] == sc.band_names[band] and new.band_index(sc) == band
    # the best band has no upper edge, the worst no lower one
    st = rsc.CreditState(0.03, 1, sig)
    assert job.decide(st, res(sc, 0.03, 0, 1e9))[0] is None
    st = rsc.CreditState(0.03, 4, sig)
    assert job.decide(st, res(sc, 0.03, 3, -1e9))[0] is None
    assert job.decide(st, res(sc, 0.03, 2, 604.9))[0] is None
    assert job.decide(st, res(sc, 0.03, 2, 605))[0] is not None


def test_default_delta_and_on_event():
    sc = card()
    job = rsc.CreditJob(sc)
    assert job.pd_delta == 0.02 and job.hysteresis == 5.0
    up, st = job.on_event(rsc.CreditState(), {"util": 0.5, "dpd": 0, "flat": 0})
    assert up["previous_band"] == "" and st.band_index(sc) >= 0


def test_state_bytes():
    st = rsc.CreditState(0.0123, 3, 0xDEADBEEF)
    b = st.pack()
    assert len(b) == 16 == rsc.STATE_BYTES
    assert rsc.CreditState.unpack(b) == st
    assert b[8:12] == b"\x03\0\0\0" and b[12:16] == bytes.fromhex("efbeadde")
    assert rsc.CreditState().pack() == bytes(16)                    # fresh: all zero
    # the signature is FNV-1a 64 of the version, low 32 bits
    h = 14695981039346656037
    for c in b"v1":
        h = ((h ^ c) * 1099511628211) % 2 ** 64
    assert rsc.model_signature("v1") == h % 2 ** 32


# -- the shipped scorecard and its parity fixture -------------------------------------------

REPO = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
MODEL = os.path.join(REPO, "deploy", "models", "credit_scorecard.json")
FIXTURE = os.path.join(REPO, "tests", "fixtures", "credit_scorecard_parity.csv")


def test_shipped_fixture_matches_the_shipped_scorecard():
    """Every row of the committed parity fixture is what riskflow_scorecard.py computes from
    the committed model, exactly (the C scorecard is held to it to 1e-9)."""
    if not (os.path.exists(MODEL) and os.path.exists(FIXTURE)):
        return  # not trained yet
    sc = rsc.load(MODEL)
    k = len(sc.features)
    n = 0
    with open(FIXTURE, encoding="utf-8") as f:
        head = f.readline().rstrip("\n").split(",")
        assert head[:k] == sc.features
        assert head[k:] == ["pd", "score", "band", "reason1_feature", "reason1_points_lost",
                            "reason2_feature", "reason2_points_lost", "reason3_feature",
                            "reason3_points_lost"]
        for line in f:
            c = line.rstrip("\n").split(",")
            assert len(c) == len(head)
            r = sc.score_values([float(v) for v in c[:k]])
            assert (float(c[k]), float(c[k + 1]), c[k + 2]) == (r.pd, r.score, r.band), n
            want = [(c[k + 3 + 2 * i], c[k + 4 + 2 * i]) for i in range(3)]
            got = [(x.feature, repr(x.points_lost)) for x in r.reasons]
            got += [("", "")] * (3 - len(got))
            assert want == got, n
            n += 1
    assert n >= 2000


def test_fresh_state_bytes():
    # what the credit job's state holds before anything is published: all zero
    assert rsc.CreditState().pack() == bytes(16)


if __name__ == "__main__":
    n = 0
    for name, fn in sorted(globals().items()):
        if name.startswith("test_") and callable(fn):
            fn()
            n += 1
    print("ok: %d tests" % n)
