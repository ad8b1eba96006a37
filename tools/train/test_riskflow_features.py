"""Tests of riskflow_features.py against the text of docs/FEATURES.md.

Run: python3 -m pytest tools/train/test_riskflow_features.py   (or run this file directly:
standard library only, no pytest needed — ctest runs it as unit.py_riskflow_features).

Most cases use a small test registry (written to a temporary directory) with one record type
of every field type; the expected values are computed by hand from the text, the arithmetic
written out next to each case.
"""

import atexit
import csv
import math
import os
import random
import shutil
import struct
import subprocess
import sys
import tempfile
import traceback
from fractions import Fraction

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.normpath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, HERE)

import riskflow_features as rff  # noqa: E402

SCHEMAS = os.path.join(REPO, "schemas")
FEATURES_CONF = os.path.join(REPO, "deploy", "features.conf")
FRAUD_FIXTURE = os.path.join(REPO, "tests", "fixtures", "fraud_reference_features.csv")
INT64_MIN = -(1 << 63)
CAP30D = 2592000.0
TOPIC = "t.events"

_TMP = tempfile.mkdtemp(prefix="rff-test-")
atexit.register(shutil.rmtree, _TMP, True)


# ------------------------------------------------------------------------------------ helpers

def raises(exc, fn, *args, **kw):
    """Call fn; it must raise exc. Returns the exception."""
    try:
        fn(*args, **kw)
    except exc as e:
        return e
    raise AssertionError("%s not raised by %s%r" % (exc.__name__, getattr(fn, "__name__", fn),
                                                     args))


def close(a, b, rel=1e-12, abs_=1e-12):
    return math.isclose(a, b, rel_tol=rel, abs_tol=abs_)


def fnv64(data):
    """FNV-1a 64 written out again from FEATURES.md §4 (not the module's)."""
    h = 0xcbf29ce484222325  # 14695981039346656037
    for byte in data:
        h ^= byte
        h = (h * 0x100000001b3) % (1 << 64)  # 1099511628211
    return h


def decay(d_ms, h_ms):
    return math.exp(-0.6931471805599453 * float(d_ms) / float(h_ms))


_SCHEMA_FILES = {
    "ev.avsc": """{"type": "record", "name": "Ev", "namespace": "t", "fields": [
        {"name": "acct", "type": "string"},
        {"name": "user", "type": "string"},
        {"name": "x", "type": "double"},
        {"name": "y", "type": "double"},
        {"name": "f", "type": "float"},
        {"name": "i", "type": "int"},
        {"name": "n", "type": "long"},
        {"name": "b", "type": "boolean"},
        {"name": "side", "type": {"type": "enum", "name": "Side", "symbols": ["BUY", "SELL"]}},
        {"name": "side2", "type": "Side"},
        {"name": "tag", "type": "string"},
        {"name": "ts", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "ts2", "type": {"type": "long", "logicalType": "timestamp-millis"}}]}""",
    "other.avsc": """{"type": "record", "name": "Other", "namespace": "t", "fields": [
        {"name": "acct", "type": "string"},
        {"name": "z", "type": "double"},
        {"name": "at", "type": {"type": "long", "logicalType": "timestamp-millis"}}]}""",
    "out.avsc": """{"type": "record", "name": "Out", "namespace": "t", "fields": [
        {"name": "acct", "type": "string"},
        {"name": "list", "type": {"type": "array", "items": "double"}},
        {"name": "at", "type": {"type": "long", "logicalType": "timestamp-millis"}}]}""",
    "notime.avsc": """{"type": "record", "name": "NoTime", "namespace": "t", "fields": [
        {"name": "acct", "type": "string"}, {"name": "at", "type": "long"}]}""",
    "dup1.avsc": """{"type": "record", "name": "Dup", "namespace": "t", "fields": [
        {"name": "acct", "type": "string"},
        {"name": "at", "type": {"type": "long", "logicalType": "timestamp-millis"}}]}""",
    "dup2.avsc": """{"type": "record", "name": "Dup", "namespace": "u", "fields": [
        {"name": "acct", "type": "string"},
        {"name": "at", "type": {"type": "long", "logicalType": "timestamp-millis"}}]}""",
}
TSCHEMAS = os.path.join(_TMP, "schemas")
os.makedirs(TSCHEMAS)
for _name, _text in _SCHEMA_FILES.items():
    with open(os.path.join(TSCHEMAS, _name), "w") as _f:
        _f.write(_text)
with open(os.path.join(TSCHEMAS, "registry.txt"), "w") as _f:
    _f.write("# test registry\n1 ev.avsc\n2 other.avsc\n3 out.avsc\n4 notime.avsc\n"
             "5 dup1.avsc\n6 dup2.avsc\n")

_n_files = [0]


def write(text, name=None):
    _n_files[0] += 1
    path = os.path.join(_TMP, name or "f%d.conf" % _n_files[0])
    with open(path, "w") as f:
        f.write(text)
    return path


def write_bytes(data):
    _n_files[0] += 1
    path = os.path.join(_TMP, "f%d.conf" % _n_files[0])
    with open(path, "wb") as f:
        f.write(data)
    return path


def decl_of(text, schemas=None):
    return rff.load(write(text), schemas or TSCHEMAS)


def ev(t, x=0.0, acct="a", **kw):
    r = {"acct": acct, "user": "u", "x": x, "y": 0.0, "f": 0.0, "i": 0, "n": 0, "b": False,
         "side": "BUY", "side2": "BUY", "tag": "", "ts": t, "ts2": 0}
    r.update(kw)
    return r


def other(t, z=0.0, acct="a"):
    return {"acct": acct, "z": z, "at": t}


class Feed:
    """An Engine with one topic/partition and increasing offsets."""

    def __init__(self, decl, topic=TOPIC, partition=0, job_state=None):
        self.eng = rff.Engine(decl, job_state)
        self.topic, self.partition, self.offset = topic, partition, 0

    def __call__(self, rec, rtype="Ev", names=None):
        assert self.eng.apply(rtype, rec, self.topic, self.partition, self.offset)
        self.offset += 1
        return self.eng.evaluate(rtype, rec, names)

    def values(self, kind="acct", id="a"):
        st = self.eng.state(kind, id)
        return {f.name: st.value(f) for f in st.layout.features if f.stateful}


def pay(t, amount_minor=1000, channel="POS", kind="PURCHASE", cust="C1"):
    return {"event_id": "e%d" % t, "customer_id": cust, "card_token": "tok",
            "merchant_id": "M1", "terminal_id": "T1", "mcc": 5411,
            "amount_minor": amount_minor, "currency": "EUR", "channel": channel,
            "country": "FR", "kind": kind, "event_time": t}


# ------------------------------------------------------------------------------------ hashes

def test_topic_id_and_fnv64():
    assert rff.topic_id("") == 0x811c9dc5
    assert rff.topic_id("a") == 0xe40c292c
    assert rff.topic_id("foobar") == 0xbf9cf968
    assert rff.topic_id(b"foobar") == 0xbf9cf968
    assert rff.topic_id("\u00e9") == 0x1e9de8c1  # UTF-8 c3 a9
    raises(TypeError, rff.topic_id, 3)
    # published FNV-1a 64 test vectors
    assert rff.fnv1a64(b"") == 0xcbf29ce484222325
    assert rff.fnv1a64(b"a") == 0xaf63dc4c8601ec8c
    assert rff.fnv1a64(b"foobar") == 0x85944171f73967e8
    for s in (b"", b"a", b"foobar", b"entity x key=y\n"):
        assert rff.fnv1a64(s) == fnv64(s)


# ------------------------------------------------------------------------- the real file

def test_features_conf_loads():
    decl = rff.load(FEATURES_CONF, SCHEMAS)
    assert [e.name for e in decl.entities] == ["customer", "instrument", "terminal", "payment"]
    assert decl.names[:3] == ["amount", "cust_nb_tx_7d", "cust_avg_amount_7d"]
    assert len(decl.names) == 72
    cust, inst = decl.kind("customer"), decl.kind("instrument")
    term, pay = decl.kind("terminal"), decl.kind("payment")
    assert [e.sliced for e in decl.entities] == [False, False, True, False]
    assert (term.size, pay.size) == (968, 104)
    # pinned: the C engine is checked against this printout (python3 riskflow_features.py
    # --layout deploy/features.conf)
    assert (cust.size, cust.hash) == (4064, 0x908e1c68831a24aa)
    assert (inst.size, inst.hash) == (904, 0xf901b31c6821b272)
    for lay in (cust, inst, term, pay):
        # slots tile the value exactly, each at its natural alignment
        off = 0
        for o, size, _ in lay.slots:
            assert o == off, (lay.name, o, off)
            if size in (2, 4, 8):
                assert o % size == 0
            off += size
        assert off == lay.size
        assert lay.canonical_text.startswith("entity %s key=" % lay.name)
        assert rff.fnv1a64(lay.canonical_text.encode()) == lay.hash
        assert len(lay.fresh().pack()) == lay.size
    # the market features share groups: mkt_trades_1m rides on mkt_ret_1m's ring,
    # mkt_rv_5m_sq adds sq() to mkt_ret_5m's; the filtered counts by side have their own
    assert len(inst.groups) == 5
    assert [(c, i.text) for c, i in inst.groups[1].cols] == [
        ("sum", "logchange(price)"), ("sq", "logchange(price)")]
    assert decl.feature("mkt_trades_1m").group == 0


def test_available_features_conf():
    decl = rff.load(FEATURES_CONF, SCHEMAS)
    pay_av = decl.available("riskflow.Payment")
    assert pay_av == decl.available("Payment")
    fraud = ["amount", "log_amount", "cust_count_1h", "cust_sum_1h", "cust_count_24h",
             "cust_sum_24h", "cust_secs_since_last", "cust_amount_ratio_24h", "is_ecom",
             "is_night", "is_cash"]
    assert all(n in pay_av for n in fraud)
    assert "cr_utilisation" in pay_av and "cr_spend_to_income" in pay_av  # stateful, customer
    assert not any(n.startswith("mkt_") for n in pay_av)
    credit = decl.available("CreditEvent")
    assert "cust_count_1h" in credit and "cr_balance" in credit and "cr_utilisation" in credit
    # value() on Payment and what derives from it are not available for a credit event
    for n in ("amount", "log_amount", "cust_amount_ratio_24h", "is_ecom", "is_cash"):
        assert n not in credit
    quote = decl.available("Quote")
    assert "mkt_ofi" in quote and "mkt_spread_bps" in quote and "mkt_ret_1m" in quote
    assert not any(n.startswith(("cust_", "cr_")) for n in quote)
    assert decl.available("Trade") == quote
    raises(ValueError, decl.available, "Nope")
    raises(ValueError, decl.available, "FraudScore")  # not an input record (arrays)


def test_cli_layout_printout():
    r = subprocess.run([sys.executable, os.path.join(HERE, "riskflow_features.py"),
                        "--layout", FEATURES_CONF, "--schemas", SCHEMAS],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "entity customer: value 4064 bytes, layout hash 0x908e1c68831a24aa" in out
    assert "entity instrument: value 904 bytes, layout hash 0xf901b31c6821b272" in out
    assert "    3992     16  cust_secs_since_last: time_since_last (i64 t, f64 gap)" in out
    assert "     444      4  group 2: Trade window=15m/15: padding" in out
    assert ("feature mkt_bid = last(bid) per instrument on Quote\n"
            "feature mkt_ask = last(ask) per instrument on Quote\n") in out
    # with a job
    r = subprocess.run([sys.executable, os.path.join(HERE, "riskflow_features.py"),
                        "--layout", FEATURES_CONF, "--job", "credit:customer:1:16"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "    4064     16  job credit version 1 state (16 bytes)" in r.stdout
    assert "entity customer: value 4080 bytes" in r.stdout
    assert "\njob credit 1 16\n" in r.stdout
    # a bad file: FILE:LINE: message, exit 78
    bad = write("entity customer key=customer_id\nfeature x = count per customer on Payment\n")
    r = subprocess.run([sys.executable, os.path.join(HERE, "riskflow_features.py"),
                        "--layout", bad, "--schemas", SCHEMAS], capture_output=True, text=True)
    assert r.returncode == 78
    assert r.stderr.startswith(bad + ":2: count needs window="), r.stderr


# ------------------------------------------------------------------------------------ layout

LAYOUT_FILE = """\
# a small declaration: offsets by hand below
entity acct key=acct
feature c = count per acct on Ev window=10s/5
feature s = std(x) per acct on Ev window=10s/5
feature mn = min(x*2) per acct on Ev window=10s/5
feature l = last(x) per acct on Ev
feature q = sumsq(x) per acct on Ev window=1m/2 where side=BUY
feature e = ewma(x) per acct on Ev halflife=1s
feature ch = sum(change(x)) per acct on Ev window=10s/5
derived r = ratio(l,c)
feature m = mean(x) per acct on Ev window=10s/5
feature a = age per acct on Ev
feature k = sum(logchange(n)) per acct on Ev window=10s/5
feature v = value(x) on Ev
"""


def test_layout_offsets_by_hand():
    # FEATURES.md §4:
    #   0 header (88)
    #   group 0 (Ev, no conditions, 10s/5, N = 5, odd):
    #     88 head; 96 cnt[5] (20) -> 116; 4 zero bytes -> 120; columns by first need, walking
    #     c (none), s (sum(x), m2(x)), mn (min(x*2)), ch (sum(change(x))), m (sum(x): present),
    #     k (sum(logchange(n))):
    #     120 sum(x), 160 m2(x), 200 min(x*2), 240 sum(change(x)), 280 sum(logchange(n)) -> 320
    #   group 1 (Ev, side=BUY, 1m/2): 320 head; 328 cnt[2] (8); 336 sq(x) (16) -> 352
    #   scalars in file order: 352 l last (16); 368 e ewma (24); 392 a age (8) -> 400
    #   previous values by first appearance: 400 (Ev, x) [ch], 416 (Ev, n) [k] -> 432
    decl = decl_of(LAYOUT_FILE)
    lay = decl.kind("acct")
    assert lay.size == 432
    want = [(0, 4), (4, 2), (6, 2), (8, 8), (16, 8), (24, 64),
            (88, 8), (96, 20), (116, 4), (120, 40), (160, 40), (200, 40), (240, 40),
            (280, 40),
            (320, 8), (328, 8), (336, 16),
            (352, 16), (368, 24), (392, 8),
            (400, 16), (416, 16)]
    assert [(o, s) for o, s, _ in lay.slots] == want
    # the bytes at those offsets after events
    f = Feed(decl)
    f(ev(1000, x=3.0, n=10))                      # tile 0, slot 0
    f(ev(2500, x=5.0, n=20, side="SELL"))          # tile 1, slot 1
    st = f.eng.state("acct", "a")
    b = st.pack()
    assert struct.unpack_from("<IHHQq", b, 0) == (0x31454652, 1, 1, lay.hash, 2500)
    assert b[:4] == b"RFE1"
    assert struct.unpack_from("<Iiq", b, 24) == (rff.topic_id(TOPIC), 0, 1)
    assert b[40:88] == bytes(48)
    assert struct.unpack_from("<q5I", b, 88) == (1, 1, 1, 0, 0, 0)
    assert b[116:120] == bytes(4)
    assert struct.unpack_from("<5d", b, 120) == (3.0, 5.0, 0, 0, 0)          # sum(x)
    assert struct.unpack_from("<5d", b, 160) == (0, 0, 0, 0, 0)              # m2(x)
    assert struct.unpack_from("<5d", b, 200) == (6.0, 10.0, 0, 0, 0)         # min(x*2)
    assert struct.unpack_from("<2d", b, 240) == (0.0, 2.0)                   # change(x)
    assert struct.unpack_from("<2d", b, 280) == (0.0, math.log(2.0))         # logchange(n)
    assert struct.unpack_from("<q2I2d", b, 320) == (0, 1, 0, 9.0, 0.0)       # BUY only
    assert struct.unpack_from("<qd", b, 352) == (2500, 5.0)                  # last
    k = decay(1500, 1000)
    assert struct.unpack_from("<qdd", b, 368) == (2500, 3.0 * k + 5.0, k + 1.0)  # ewma
    assert struct.unpack_from("<q", b, 392) == (2500,)                       # age
    assert struct.unpack_from("<qdqd", b, 400) == (1, 5.0, 1, 20.0)          # previous


def test_fresh_value():
    decl = decl_of(LAYOUT_FILE + "feature g = time_since_last per acct on Ev cap=90s\n"
                   "feature d = dsum(x) per acct on Ev halflife=1m\n")
    lay = decl.kind("acct")
    b = lay.fresh().pack()
    assert len(b) == 432 + 32
    assert struct.unpack_from("<IHHQq", b, 0) == (0x31454652, 1, 0, lay.hash, INT64_MIN)
    assert b[24:88] == bytes(64)
    assert struct.unpack_from("<q", b, 88) == (INT64_MIN,)
    assert b[96:320] == bytes(224)
    assert struct.unpack_from("<q", b, 320) == (INT64_MIN,)
    assert b[328:352] == bytes(24)
    assert struct.unpack_from("<qdqddq", b, 352) == (INT64_MIN, 0.0, INT64_MIN, 0.0, 0.0,
                                                     INT64_MIN)
    # the scalars after a come in file order: g (time_since_last), d (dsum)
    assert struct.unpack_from("<qdqd", b, 400) == (INT64_MIN, 90.0, INT64_MIN, 0.0)
    assert b[432:] == bytes(32)  # previous values: has 0, value 0
    assert lay.unpack(b).pack() == b


def test_layout_hash_by_hand():
    text = ("entity acct key=acct   # comment\n"
            "\n"
            "feature  c =\tcount per acct on Ev window=10s/5   \n"
            "derived r = ratio(c,c)\n"
            "feature v = value(x) on Ev\n"
            "feature w = last(x) on Ev per acct where side=BUY\n")
    canon = ("entity acct key=acct\n"
             "feature c = count per acct on Ev window=10s/5\n"
             "feature w = last(x) on Ev per acct where side=BUY\n")
    lay = decl_of(text).kind("acct")
    assert lay.canonical_text == canon
    assert lay.hash == fnv64(canon.encode())
    assert lay.hash == 0x155572bb178f35d4  # pinned once computed
    assert lay.size == 88 + 8 + 20 + 4 + 16
    # comments, blank lines, whitespace and derived lines do not change the hash
    text2 = ("# another comment\nentity   acct key=acct\n"
             "feature c = count per acct on Ev window=10s/5 # c\n"
             "derived r2 = diff(c,c)\nfeature v = value(x*2) on Ev\n"
             "feature w = last(x) on Ev per acct where side=BUY\n")
    assert decl_of(text2).kind("acct").hash == lay.hash
    # any change to a stateful declaration does (even the same window written otherwise)
    text3 = text.replace("window=10s/5", "window=10000ms/5")
    assert decl_of(text3).kind("acct").hash != lay.hash
    # jobs: one line each, BYTES before rounding, in the order given
    jl = decl_of(text).kind("acct", {"zz": ("acct", 3, 12), "aa": ("acct", 1, 8)})
    canon_j = canon + "job zz 3 12\njob aa 1 8\n"
    assert jl.canonical_text == canon_j and jl.hash == fnv64(canon_j.encode())
    assert jl.size == 136 + 16 + 8
    assert jl.job_offsets == {"zz": 136, "aa": 152}


def test_job_state():
    decl = decl_of(LAYOUT_FILE + "entity user key=user\n"
                   "feature uc = count per user on Ev window=1h/1\n")
    jobs = {"market": ("acct", 2, 12), "credit": ("user", 1, 16, b"\0" * 8 + b"\xff" * 4
                                                  + b"\0" * 4)}
    eng = rff.Engine(decl, jobs)
    lay = eng.kind("acct")
    assert lay.size == 432 + 16 and lay.job_offsets == {"market": 432}
    assert lay.canonical_text.endswith("job market 2 12\n")
    assert decl.kind("acct").size == 432  # the decl's own layout has no jobs
    st = eng.state("acct", "a")
    js = st.job_state("market")
    assert isinstance(js, bytearray) and js == bytearray(12)
    js[0:4] = b"\x01\x02\x03\x04"   # in place
    st.set_job_state("market", st.job_state("market")[:8] + b"WXYZ")
    b = st.pack()
    assert b[432:444] == b"\x01\x02\x03\x04\0\0\0\0WXYZ" and b[444:448] == bytes(4)
    assert lay.unpack(b).job_state("market") == bytearray(b[432:444])
    raises(ValueError, st.set_job_state, "market", b"short")
    raises(KeyError, st.job_state, "credit")  # credit keeps its state on user
    # a job's own fresh bytes (credit: band index -1 when fresh)
    assert eng.state("user", "u").job_state("credit")[8:12] == b"\xff" * 4
    # events leave the job's bytes alone
    assert eng.apply("Ev", ev(1000, x=1.0), TOPIC, 0, 0)
    assert eng.state("acct", "a").job_state("market")[8:] == b"WXYZ"
    # decl.kind(name).unpack refuses a value with jobs (another size and hash)
    raises(ValueError, decl.kind("acct").unpack, b)
    raises(ValueError, rff.Engine, decl, {"bad": ("nokind", 1, 8)})
    raises(ValueError, rff.Engine, decl, {"bad": ("acct", 1, 0)})
    raises(ValueError, rff.Engine, decl, {"Bad": ("acct", 1, 8)})
    raises(ValueError, rff.Engine, decl, {"bad": ("acct", 1, 4, b"123")})


# ------------------------------------------------------------------------------ aggregations

WIN_FILE = """\
entity acct key=acct
feature wc = count per acct on Ev window=10s/5
feature ws = sum(x) per acct on Ev window=10s/5
feature wm = mean(x) per acct on Ev window=10s/5
feature wd = std(x) per acct on Ev window=10s/5
feature wq = sumsq(x) per acct on Ev window=10s/5
feature wmin = min(x) per acct on Ev window=10s/5
feature wmax = max(x) per acct on Ev window=10s/5
feature bc = count per acct on Ev window=10s/5 where side=BUY
feature bs = sum(x) per acct on Ev window=10s/5 where side=BUY
"""


def check(got, **want):
    for k, v in want.items():
        assert close(got[k], v), (k, got[k], v)


def test_window_aggregations_by_hand():
    # window 10 s in 5 tiles of 2 s: tile index ti = floor(t / 2000), slot ti mod 5.
    f = Feed(decl_of(WIN_FILE))
    empty = f.eng.evaluate("Ev", ev(0))  # fresh entity: everything 0
    check(empty, wc=0, ws=0, wm=0, wd=0, wq=0, wmin=0, wmax=0, bc=0, bs=0)
    # t=0, x=1: tile 0
    check(f(ev(0, 1.0)), wc=1, ws=1, wm=1, wd=0, wq=1, wmin=1, wmax=1)
    # t=1000, x=2: tile 0 again; m2 = (2 - 1/1) * (2 - 3/2) = 0.5 -> std sqrt(0.5 / 2) = 0.5
    check(f(ev(1000, 2.0)), wc=2, ws=3, wm=1.5, wd=0.5, wq=5, wmin=1, wmax=2)
    # t=2500, x=4: tile 1. std: slot0 (n 2, sum 3, m2 0.5) + slot1 (1, 4, 0):
    # d = 4 - 1.5 = 2.5, M2 = 0.5 + 6.25 * 2/3 = 14/3, / 3 -> 14/9
    check(f(ev(2500, 4.0)), wc=3, ws=7, wm=7 / 3, wd=math.sqrt(14 / 9), wq=21, wmin=1, wmax=4)
    # t=10000, x=8: tile 5; tiles 2..5 leave (slots 2, 3, 4, 0): tile 0 is out.
    # slot0 (1, 8) + slot1 (1, 4): d = -4, M2 = 16 * 1/2 = 8 -> var 4, std 2
    check(f(ev(10000, 8.0)), wc=2, ws=12, wm=6, wd=2, wq=80, wmin=4, wmax=8)
    # late, inside the window: t=3000 (tile 1, head 5: 5 - 1 < 5) x=-1: slot1 m2 =
    # (-1 - 4) * (-1 - 3/2) = 12.5; merge: d = 1.5 - 8, M2 = 12.5 + 42.25 * 2/3 = 122/3 -> /3
    check(f(ev(3000, -1.0)), wc=3, ws=11, wm=11 / 3, wd=math.sqrt(122 / 9), wq=81, wmin=-1,
          wmax=8)
    st = f.eng.state("acct", "a")
    assert st.t_last == 10000 and st.groups[0].head == 5
    # late, outside: t=1999 (tile 0: 5 - 0 >= 5): applied (its source moves), in no tile
    before = st.pack()
    check(f(ev(1999, 100.0)), wc=3, ws=11, wm=11 / 3, wq=81, wmin=-1, wmax=8)
    after = st.pack()
    assert st.sources == [[rff.topic_id(TOPIC), 0, 5]]
    assert before[:32] == after[:32] and before[40:] == after[40:]  # only the offset moved
    # a gap of exactly N tiles: t=20000 (tile 10, 10 - 5 >= 5) clears everything
    check(f(ev(20000, 5.0)), wc=1, ws=5, wm=5, wd=0, wq=25, wmin=5, wmax=5)
    # a gap of N - 1 tiles keeps the head's tile: t=28000 (tile 14): tiles 11..14 leave
    check(f(ev(28000, 1.0)), wc=2, ws=6, wm=3, wd=2, wq=26, wmin=1, wmax=5)


def test_window_tile_recycling():
    f = Feed(decl_of(WIN_FILE))
    xs = []
    for k in range(13):  # one event per tile, tiles 0..12: the ring holds the last 5
        x = float(k * k)
        xs.append(x)
        g = f(ev(k * 2000 + 1, x))
        last = xs[-5:]
        check(g, wc=len(last), ws=sum(last), wmin=min(last), wmax=max(last))
        st = f.eng.state("acct", "a")
        assert st.groups[0].cnt == [1 if k >= s or k >= 5 else 0 for s in range(5)]
        assert st.groups[0].cols[0][k % 5] == x


def test_window_negative_times():
    f = Feed(decl_of(WIN_FILE))
    # t=-1: tile floor(-1/2000) = -1, slot floormod(-1, 5) = 4
    check(f(ev(-1, 2.0)), wc=1, ws=2)
    st = f.eng.state("acct", "a")
    assert st.groups[0].head == -1 and st.groups[0].cnt == [0, 0, 0, 0, 1]
    # t=-2001: tile -2, slot 3 (late, inside)
    check(f(ev(-2001, 3.0)), wc=2, ws=5)
    assert st.groups[0].cnt == [0, 0, 0, 1, 1]
    # t=-10001: tile -6, head - ti = 5: too old
    check(f(ev(-10001, 7.0)), wc=2, ws=5)
    # t=-2000: tile -1 (floor(-2000/2000) = -1)
    check(f(ev(-2000, 1.0)), wc=3, ws=6)
    assert st.groups[0].cnt == [0, 0, 0, 1, 2]
    # t=0: tile 0, slot 0; one tile leaves (slot 0, empty)
    check(f(ev(0, 4.0)), wc=4, ws=10)
    # t=7999: tile 3: tiles 1..3 leave (slots 1, 2, 3): tile -2 (slot 3) is out
    check(f(ev(7999, 0.5)), wc=4, ws=7.5)
    assert st.t_last == 7999


def test_filtered_window_ages_out():
    f = Feed(decl_of(WIN_FILE))
    check(f(ev(0, 1.0, side="BUY")), wc=1, bc=1, bs=1)
    check(f(ev(5000, 2.0, side="SELL")), wc=2, bc=1, bs=1)
    # a SELL at tile 5: every group advances, the BUY at tile 0 leaves the BUY window too
    check(f(ev(10000, 4.0, side="SELL")), wc=2, ws=6, bc=0, bs=0)
    # the BUY group's ring shows it: head moved to 5 although no BUY arrived
    assert f.eng.state("acct", "a").groups[1].head == 5
    # another record type of the kind advances the rings too (t=20000: everything out)
    assert f.eng.apply("Other", other(20000), TOPIC, 1, 0)
    assert f.values()["wc"] == 0 and f.values()["ws"] == 0


def test_count_saturates():
    decl = decl_of(WIN_FILE)
    lay = decl.kind("acct")
    st = lay.fresh("a")
    st.t_last = 0
    st.groups[0].head = 0
    st.groups[0].cnt[0] = rff.U32_MAX
    st.groups[0].cols[0][0] = 10.0  # sum(x)
    eng = rff.Engine(decl)
    eng.put_state("acct", "a", lay.unpack(st.pack()))
    assert eng.apply("Ev", ev(1, 2.0), TOPIC, 0, 0)
    g = eng.state("acct", "a").groups[0]
    assert g.cnt[0] == rff.U32_MAX and g.cols[0][0] == 12.0
    v = eng.evaluate("Ev", ev(1))
    assert v["wc"] == float(rff.U32_MAX) and v["wm"] == 12.0 / rff.U32_MAX


def test_last():
    f = Feed(decl_of("entity acct key=acct\n"
                     "feature lx = last(x) per acct on Ev\n"
                     "feature lb = last(x*10) per acct on Ev where side=BUY\n"))
    assert f.values() == {"lx": 0.0, "lb": 0.0}  # 0 before any
    check(f(ev(1000, 5.0)), lx=5, lb=50)
    check(f(ev(500, 7.0)), lx=5, lb=50)           # late: the latest event time wins
    check(f(ev(1000, 9.0)), lx=9, lb=90)          # a tie: the later applied
    check(f(ev(2000, 3.0, side="SELL")), lx=3, lb=90)
    check(f(ev(-5, 1.0)), lx=3, lb=90)


def test_time_since_last():
    f = Feed(decl_of("entity acct key=acct\n"
                     "feature tsl = time_since_last per acct on Ev\n"
                     "feature tc = time_since_last per acct on Ev cap=90s where side=BUY\n"))
    assert f.values() == {"tsl": CAP30D, "tc": 90.0}         # cap before any
    check(f(ev(1000)), tsl=CAP30D, tc=90)                     # first matching event: cap
    check(f(ev(3500)), tsl=2.5, tc=2.5)
    check(f(ev(2000)), tsl=0, tc=0)                           # late: 0, t stays 3500
    assert f.eng.state("acct", "a").scalars[0][0] == 3500
    check(f(ev(4000, side="SELL")), tsl=0.5, tc=0)            # tc: not matching, unchanged
    check(f(ev(200000)), tsl=196.0, tc=90)                    # 196.5 s capped at 90
    check(f(ev(200000 + 40 * 86400000)), tsl=CAP30D, tc=90)   # 40 days: capped at 30
    check(f(ev(200000 + 40 * 86400000 + 1)), tsl=0.001, tc=0.001)


def test_age():
    f = Feed(decl_of("entity acct key=acct\n"
                     "feature ag = age per acct on Ev cap=1h where side=BUY\n"
                     "feature ag2 = age per acct on Ev\n"))
    assert f.values() == {"ag": 3600.0, "ag2": CAP30D}
    check(f(ev(1000)), ag=0, ag2=0)
    check(f(ev(5000, side="SELL")), ag=4, ag2=0)
    # another record of the kind moves t_last: age grows, the features did not change
    assert f.eng.apply("Other", other(65000), TOPIC, 1, 0)
    check(f.values(), ag=64, ag2=60)
    check(f(ev(500)), ag=64, ag2=60)   # a late matching event does not move t back
    assert f.eng.apply("Other", other(10 ** 7), TOPIC, 1, 1)
    check(f.values(), ag=3600, ag2=(10 ** 7 - 5000) / 1000)


def test_ewma():
    f = Feed(decl_of("entity acct key=acct\n"
                     "feature ew = ewma(x) per acct on Ev halflife=1s\n"
                     "feature eb = ewma(x) per acct on Ev halflife=2s where side=BUY\n"))
    assert f.values() == {"ew": 0.0, "eb": 0.0}
    check(f(ev(0, 1.0)), ew=1, eb=1)                  # S = 1, W = 1
    k = decay(1000, 1000)                             # 0.5
    S, W = 1 * k + 3, k + 1
    check(f(ev(1000, 3.0, side="SELL")), ew=S / W, eb=1)
    assert close(S / W, 7 / 3)
    # late: t0 stays 1000, the late input weighs decay(t0 - e)
    S, W = S + k * 5, W + k
    check(f(ev(0, 5.0, side="SELL")), ew=S / W)
    assert close(S / W, 3.0)
    k2 = decay(2000, 1000)                            # 0.25
    S, W = S * k2 + 0, W * k2 + 1
    check(f(ev(3000, 0.0, side="SELL")), ew=S / W)
    assert close(S / W, 1.0)
    # the ratio does not depend on when it is read (no decay to the entity time)
    assert f.eng.apply("Other", other(10 ** 6), TOPIC, 1, 0)
    check(f.values(), ew=S / W, eb=1)
    st = f.eng.state("acct", "a")
    assert st.scalars[0][0] == 3000


def test_dsum():
    f = Feed(decl_of("entity acct key=acct\n"
                     "feature ds = dsum(x) per acct on Ev halflife=1s where side=BUY\n"))
    assert f.values() == {"ds": 0.0}
    check(f(ev(0, 2.0)), ds=2)                         # S = 2 at t0 = t_last = 0
    assert f.eng.apply("Other", other(2000), TOPIC, 1, 0)
    check(f.values(), ds=2 * decay(2000, 1000))        # decayed to the entity time: 0.5
    check(f(ev(1000, 4.0)), ds=(2 * decay(1000, 1000) + 4) * decay(1000, 1000))  # 2.5
    check(f(ev(0, 2.0)), ds=(5 + decay(1000, 1000) * 2) * decay(1000, 1000))     # 3
    check(f(ev(5000, 1.0, side="SELL")), ds=6 * decay(4000, 1000))


def test_value_and_indicator():
    decl = decl_of("entity acct key=acct\n"
                   "feature vx = value(x*2) on Ev\n"
                   "feature vi = value() on Ev where side=BUY\n"
                   "feature vd = value(x/4) on Ev where x>1\n"
                   "feature vh = value(hour(ts)) on Ev\n"
                   "feature vo = value(z) on Other\n"
                   "feature vp = value(b) on Ev\n")
    eng = rff.Engine(decl)
    # stateless: evaluated without any apply
    check(eng.evaluate("Ev", ev(0, 3.0)), vx=6, vi=1, vd=0.75, vh=0, vp=0)
    check(eng.evaluate("Ev", ev(0, 0.5, side="SELL", b=True)), vx=1, vi=0, vd=0, vp=1)
    check(eng.evaluate("t.Ev", ev(-1, 1.0)), vh=23, vd=0)   # hour of -1 ms: 23
    check(eng.evaluate("Ev", ev(5 * 3600000 + 3599999)), vh=5)
    assert "vo" not in eng.evaluate("Ev", ev(0)) and "vx" not in eng.evaluate("Other",
                                                                              other(0))
    assert eng.evaluate("Other", other(0, 2.5)) == {"vo": 2.5}
    assert eng.evaluate("Ev", ev(0, 3.0), ["vd", "vx"]) == {"vd": 0.75, "vx": 6.0}
    raises(ValueError, eng.evaluate, "Ev", ev(0), ["vo"])   # not available for Ev
    raises(KeyError, eng.evaluate, "Ev", ev(0), ["nope"])
    assert not eng.states  # evaluate creates no state


def test_weekday():
    # 1970-01-01 (t = 0) was a Thursday: weekday 3 (0 Monday .. 6 Sunday)
    decl = decl_of("entity acct key=acct\n"
                   "feature wd = value(weekday(ts)) on Ev\n"
                   "feature we = value() on Ev where weekday(ts)>=5\n"
                   "feature wc = count per acct on Ev window=7d/7 where weekday(ts)=6\n")
    eng = rff.Engine(decl)
    D = 86400000
    check(eng.evaluate("Ev", ev(0)), wd=3, we=0)
    check(eng.evaluate("Ev", ev(2 * D)), wd=5, we=1)            # Saturday 1970-01-03
    check(eng.evaluate("Ev", ev(4 * D - 1)), wd=6, we=1)        # the last ms of Sunday
    check(eng.evaluate("Ev", ev(4 * D)), wd=0, we=0)            # Monday
    check(eng.evaluate("Ev", ev(-1)), wd=2)                     # Wednesday 1969-12-31
    check(eng.evaluate("Ev", ev(-4 * D)), wd=6, we=1)           # Sunday 1969-12-28
    check(eng.evaluate("Ev", ev(1795996800000)), wd=0)          # 2026-11-30, a Monday
    f = Feed(decl)
    check(f(ev(3 * D)), wc=1)   # Sunday
    check(f(ev(4 * D)), wc=1)   # Monday: not counted
    E(2, "weekday(x): not a timestamp", "entity acct key=acct\n"
      "feature a = value(weekday(x)) on Ev\n")


def test_change_and_logchange():
    f = Feed(decl_of("entity acct key=acct\n"
                     "feature cx = last(change(x)) per acct on Ev\n"
                     "feature lx = last(logchange(x)) per acct on Ev\n"
                     "feature sc = sum(change(x)) per acct on Ev window=1h/1 where side=BUY\n"
                     "feature ll = last(logchange(x)) per acct on Ev where side=BUY\n"
                     "feature oz = last(change(z)) per acct on Other\n"))
    assert f.eng.kind("acct").prevs[0][1] == "x" and len(f.eng.kind("acct").prevs) == 2
    check(f(ev(1, 10.0)), cx=0, lx=0, sc=0, ll=0)                 # first event: no p
    # a SELL: not matching sc/ll, but the previous value still moves to 15
    check(f(ev(2, 15.0, side="SELL")), cx=5, lx=math.log(1.5), sc=0, ll=0)
    check(f(ev(3, 12.0)), cx=-3, lx=math.log(12 / 15), sc=-3, ll=math.log(12 / 15))
    check(f(ev(4, 0.0)), cx=-12, lx=0, sc=-15, ll=0)              # v <= 0
    check(f(ev(5, 3.0)), cx=3, lx=0, sc=-12, ll=0)                # p <= 0
    check(f(ev(6, -2.0)), cx=-5, lx=0, sc=-17, ll=0)
    check(f(ev(7, 4.0)), cx=6, lx=0, sc=-11, ll=0)
    check(f(ev(8, 2.0)), cx=-2, lx=math.log(0.5), sc=-13, ll=math.log(0.5))
    # apply order, not event time: a late event is compared with the last applied (the late
    # event's last() does not replace the newer one's)
    check(f(ev(0, 3.0)), cx=-2, lx=math.log(0.5), sc=-12, ll=math.log(0.5))
    # (Other, z) is its own slot
    r = other(9, 7.0)
    assert f.eng.apply("Other", r, TOPIC, 0, 100)
    assert f.eng.evaluate("Other", r, ["oz"]) == {"oz": 0.0}  # its first value: no p before it
    assert f.eng.apply("Other", other(10, 9.5), TOPIC, 0, 101)
    check(f.eng.evaluate("Other", other(10, 9.5)), oz=2.5)
    st = f.eng.state("acct", "a")
    assert st.prevs == [[1, 3.0], [1, 9.5]]
    # a replay leaves the previous values alone
    rep = ev(1, 99.0)
    assert not f.eng.apply("Ev", rep, TOPIC, 0, 0)
    assert st.prevs == [[1, 3.0], [1, 9.5]]


LABEL_FILE = (
    "entity acct key=acct\n"            # the terminal
    "entity user key=user ttl=30d\n"    # the payment a label names (its previous verdict)
    "feature tx = count per acct on Ev window=2h/2 delay=1h where tag=P\n"
    "feature fr = sum(delta(b,user)) per acct on Ev window=2h/2 delay=1h time=ts2 where tag=L\n"
    "feature now = count per acct on Ev window=2h/2 where tag=P\n"
    "derived risk = ratio(fr,tx) default=0\n")


def test_delay_time_and_delta_by_hand():
    # Tiles of 1 h; the ring holds 2 + 1 tiles; the value covers the 2 tiles that end 1 tile
    # before the head: at head h, tiles h-2 and h-1.
    H = 3600000
    decl = decl_of(LABEL_FILE)
    f = Feed(decl)
    g = f.eng.kind("acct").groups[0]
    assert (g.win, g.delay, g.n) == (2, 1, 3)
    assert f.eng.kind("user").prevs[0][1] == "b"  # delta's slot is on user, not acct

    def P(t, user):
        return ev(t, acct="T", user=user, tag="P", b=False)

    def L(t, user, pay_t, fraud):
        return ev(t, acct="T", user=user, tag="L", ts2=pay_t, b=fraud)

    check(f(P(H // 2, "p1")), tx=0, now=1, fr=0, risk=0)        # head 0: tiles -2, -1
    check(f(P(3 * H // 2, "p2")), tx=1, now=2, fr=0, risk=0)    # head 1: tiles -1, 0
    # p1 labelled fraud: +1 in p1's tile (0), not the label's (1)
    check(f(L(16 * H // 10, "p1", H // 2, True)), tx=1, fr=1, risk=1)
    # the same verdict again: delta 0
    check(f(L(17 * H // 10, "p1", H // 2, True)), tx=1, fr=1, risk=1)
    check(f(P(5 * H // 2, "p3")), tx=2, now=2, fr=1, risk=0.5)  # head 2: tiles 0, 1
    check(f(L(26 * H // 10, "p2", 3 * H // 2, True)), tx=2, fr=2, risk=1)
    # p1's verdict withdrawn: -1 in its tile
    check(f(L(27 * H // 10, "p1", H // 2, False)), tx=2, fr=1, risk=0.5)
    check(f(P(7 * H // 2, "p4")), tx=2, now=2, fr=1, risk=0.5)  # head 3: tiles 1, 2
    # a label for a payment later than the head, and one older than the ring: no tile
    check(f(L(36 * H // 10, "p9", 10 * H, True)), fr=1)
    check(f(L(37 * H // 10, "p8", H // 5, True)), fr=1)
    # a label for a payment never seen (no previous verdict): +1 (tile 2, in the window at
    # head 3 only once the head moves: tiles 1, 2 at head 3)
    check(f(L(38 * H // 10, "p7", 5 * H // 2, True)), fr=2)
    st = f.eng.state("acct", "T")
    assert st.groups[1].head == 3
    # the ttl is not part of the layout: the same hash with and without it
    plain = decl_of(LABEL_FILE.replace(" ttl=30d", ""))
    assert decl.kind("user").hash == plain.kind("user").hash


def test_derived():
    decl = decl_of("entity acct key=acct\n"
                   "feature a = value(x) on Ev\n"
                   "feature b = value(y) on Ev\n"
                   "derived r = ratio(a,b)\n"
                   "derived rd = ratio(a,b) default=-1 scale=10\n"
                   "derived df = diff(a,b) scale=0.5\n"
                   "derived im = imbalance(a,b) default=7\n"
                   "derived lr = logratio(a,b) default=3\n"
                   "derived lp = log1p(a)\n"
                   "derived sq = sqrt(a) scale=2\n"
                   "derived dd = ratio(r,df)\n"
                   "derived sd = sqrt(b) default=5\n")
    eng = rff.Engine(decl)

    def at(a, b):
        return eng.evaluate("Ev", ev(0, a, y=b))
    check(at(6.0, 3.0), r=2, rd=20, df=1.5, im=1 / 3, lr=math.log(2), lp=math.log(7),
          sq=2 * math.sqrt(6), dd=2 / 1.5, sd=math.sqrt(3))
    # b = 0: ratio undefined -> default (0; -1 scaled to -10); logratio: b <= 0
    check(at(1.0, 0.0), r=0, rd=-10, df=0.5, im=1, lr=3, lp=math.log(2), sq=2, dd=0)
    # a + b = 0: imbalance undefined; a <= 0: logratio; max(a, 0) in log1p and sqrt
    check(at(-2.0, 2.0), r=-1, rd=-10, df=-2, im=7, lr=3, lp=0, sq=0, sd=math.sqrt(2))
    # not finite -> default: diff overflows to inf
    check(at(1e308, -1e308), r=-1, df=0, im=7, lr=3)
    # ratio overflows to inf, logratio of inf
    check(at(1e308, 1e-308), r=0, rd=-10, lr=3)
    check(at(0.0, 0.0), r=0, rd=-10, df=0, im=7, lr=3, dd=0, lp=0, sq=0)
    # sqrt of a negative: max(b, 0) = 0 -> 0, a defined result (the default is not used)
    check(at(1.0, -4.0), sd=0)


def test_filters():
    decl = decl_of("entity acct key=acct\n"
                   "feature e1 = value() on Ev where side=BUY\n"
                   "feature e2 = value() on Ev where side!=BUY\n"
                   "feature e3 = value() on Ev where side2=SELL\n"
                   "feature s1 = value() on Ev where tag=abc\n"
                   "feature s2 = value() on Ev where tag!=abc\n"
                   "feature n1 = value() on Ev where x>1.5\n"
                   "feature n2 = value() on Ev where i<=3 and b=1\n"
                   "feature n3 = value() on Ev where f>=0.1\n"
                   "feature n4 = value() on Ev where f<0.1\n"
                   "feature n5 = value() on Ev where n<-5 and n>=-10\n"
                   "feature h1 = value() on Ev where hour(ts)<6\n"
                   "feature h2 = value() on Ev where hour(ts2)=23\n"
                   "feature all4 = value() on Ev where side=SELL and tag=abc and x<0 "
                   "and hour(ts)>=22\n"
                   "feature cnt = count per acct on Ev window=1h/1 where tag=abc and "
                   "hour(ts)>=22\n")
    eng = rff.Engine(decl)
    H = 3600000
    g = eng.evaluate("Ev", ev(5 * H, 2.0, side="BUY", side2=1, tag="abc", i=3, b=True,
                              f=0.1, n=-5, ts2=-1))
    # f = 0.1 is a float field: the float32 0.1 = 0.100000001490116... >= 0.1
    assert g == {"e1": 1, "e2": 0, "e3": 1, "s1": 1, "s2": 0, "n1": 1, "n2": 1, "n3": 1,
                 "n4": 0, "n5": 0, "h1": 1, "h2": 1, "all4": 0, "cnt": 0}
    g = eng.evaluate("Ev", ev(22 * H, -1.0, side=1, tag="abd", i=4, b=False, n=-10,
                              f=0.09))
    assert g == {"e1": 0, "e2": 1, "e3": 0, "s1": 0, "s2": 1, "n1": 0, "n2": 0, "n3": 0,
                 "n4": 1, "n5": 1, "h1": 0, "h2": 0, "all4": 0, "cnt": 0}
    g = eng.evaluate("Ev", ev(23 * H + 86400000 * 3, -1.0, side="SELL", tag="abc"))
    assert g["all4"] == 1 and g["h1"] == 0
    # a filtered window counts matching events only
    for k, (h, tag) in enumerate([(22, "abc"), (21, "abc"), (22, "x"), (22, "abc")]):
        assert eng.apply("Ev", ev(h * H + k, tag=tag), TOPIC, 0, k)
    assert eng.evaluate("Ev", ev(22 * H))["cnt"] == 2


# --------------------------------------------------------------------- entities and replays

MULTI_FILE = """\
entity acct key=acct
entity user key=user
feature ac = count per acct on Ev window=1h/1
feature uc = count per user on Ev window=1h/1
feature us = sum(x) per user on Ev window=1h/1
feature ao = count per acct on Other window=1h/1
derived both = diff(ac,uc)
"""


def test_multi_kind_records():
    decl = decl_of(MULTI_FILE)
    assert [e.name for e in decl.touched("Ev")] == ["acct", "user"]
    assert [e.name for e in decl.touched("Other")] == ["acct"]
    assert decl.available("Ev") == ["ac", "uc", "us", "ao", "both"]
    assert decl.available("Other") == ["ac", "ao"]
    eng = rff.Engine(decl)
    assert eng.apply("Ev", ev(1, 1.0, acct="a1", user="u1"), "A", 0, 0)
    assert eng.apply("Ev", ev(2, 2.0, acct="a2", user="u1"), "A", 0, 1)
    assert eng.apply("Ev", ev(3, 4.0, acct="a1", user="u2"), "A", 0, 2)
    assert eng.apply("Other", other(4, acct="a1"), "B", 0, 0)
    assert eng.evaluate("Ev", ev(5, acct="a1", user="u1")) == {
        "ac": 2.0, "uc": 2.0, "us": 3.0, "ao": 1.0, "both": 0.0}
    assert eng.evaluate("Ev", ev(5, acct="a2", user="u2")) == {
        "ac": 1.0, "uc": 1.0, "us": 4.0, "ao": 0.0, "both": 0.0}
    assert eng.evaluate("Other", other(5, acct="a1")) == {"ac": 2.0, "ao": 1.0}
    # each entity records the source
    assert eng.state("user", "u1").sources == [[rff.topic_id("A"), 0, 1]]
    assert eng.state("acct", "a1").sources == [[rff.topic_id("B"), 0, 0],
                                               [rff.topic_id("A"), 0, 2]]
    # a replay when any touched entity holds the source at or past the offset: u1 holds
    # A/0 at 1, so (a3, u1) at offset 1 is a replay and a3 gets no state at all
    assert not eng.apply("Ev", ev(6, 8.0, acct="a3", user="u1"), "A", 0, 1)
    assert not eng.has_state("acct", "a3")
    # an empty id: bad_key, nothing applied
    snap = {k: v.pack() for k, v in eng.states.items()}
    raises(rff.BadKey, eng.apply, "Ev", ev(7, acct="a1", user=""), "A", 0, 9)
    raises(rff.BadKey, eng.evaluate, "Ev", ev(7, acct="", user="u1"))
    assert {k: v.pack() for k, v in eng.states.items()} == snap


def test_replay_guard():
    decl = decl_of(MULTI_FILE + "feature l = last(x) per acct on Ev\n")
    eng = rff.Engine(decl)
    tid = rff.topic_id
    t = [0]

    def ap(topic, part, off, x=1.0):
        t[0] += 1000
        return eng.apply("Ev", ev(t[0], x, acct="a", user="u"), topic, part, off)

    st = eng.state("acct", "a")
    assert ap("t1", 0, 10) and ap("t2", 0, 20) and ap("t3", 0, 30) and ap("t1", 1, 40)
    assert st.sources == [[tid("t1"), 1, 40], [tid("t3"), 0, 30], [tid("t2"), 0, 20],
                          [tid("t1"), 0, 10]]
    assert ap("t2", 0, 21)  # to the front with its new offset
    assert st.sources == [[tid("t2"), 0, 21], [tid("t1"), 1, 40], [tid("t3"), 0, 30],
                          [tid("t1"), 0, 10]]
    snap = {k: v.pack() for k, v in eng.states.items()}
    # replays (same offset, lower offset, any held source) change nothing, not even order
    for topic, part, off in (("t1", 0, 10), ("t1", 0, 3), ("t2", 0, 21), ("t1", 1, 40),
                             ("t3", 0, 0)):
        assert not ap(topic, part, off, x=99.0)
        assert {k: v.pack() for k, v in eng.states.items()} == snap
    assert eng.evaluate("Ev", ev(1, acct="a", user="u"))["ac"] == 5.0
    # another partition of a held topic is a new source; a fifth source drops the last
    assert ap("t5", 0, 50)
    assert st.sources == [[tid("t5"), 0, 50], [tid("t2"), 0, 21], [tid("t1"), 1, 40],
                          [tid("t3"), 0, 30]]
    assert ap("t1", 0, 10)  # the dropped source's redelivery is applied again (the limit)
    assert st.sources == [[tid("t1"), 0, 10], [tid("t5"), 0, 50], [tid("t2"), 0, 21],
                          [tid("t1"), 1, 40]]
    assert eng.evaluate("Ev", ev(1, acct="a", user="u"))["ac"] == 7.0
    b = st.pack()
    assert struct.unpack_from("<H", b, 6) == (4,)
    assert struct.unpack_from("<IiqIiq", b, 24) == (tid("t1"), 0, 10, tid("t5"), 0, 50)
    assert eng.kind("acct").unpack(b).sources == st.sources
    assert not ap("t2", 0, 21) and not ap("t1", 1, 39) and not ap("t5", 0, 50)
    assert ap("t3", 0, 31)  # no longer held: applied


def test_partition_and_offset_ranges():
    eng = rff.Engine(decl_of(MULTI_FILE))
    assert eng.apply("Ev", ev(1), "A", -1, -5)  # any i32 partition, any i64 offset
    raises(ValueError, eng.apply, "Ev", ev(1), "A", 1 << 31, 0)
    raises(ValueError, eng.apply, "Ev", ev(1), "A", 0, 1 << 63)


# ------------------------------------------------------------------------------- records

def test_records():
    decl = decl_of("entity acct key=acct\n"
                   "feature s = sum(x) per acct on Ev window=1h/1\n"
                   "feature vf = value(f) on Ev\n"
                   "feature vb = value(b) on Ev\n"
                   "feature vs = value(side) on Ev\n"
                   "feature vn = value(n) on Ev\n")
    eng = rff.Engine(decl)
    # names: full or unique short; enums: symbols or indexes
    assert eng.evaluate("t.Ev", ev(0, side=1))["vs"] == 1.0
    assert eng.evaluate("Ev", ev(0, side="SELL"))["vs"] == 1.0
    raises(ValueError, eng.evaluate, "Dup", ev(0))           # ambiguous short name
    raises(ValueError, eng.evaluate, "Nope", ev(0))
    raises(ValueError, eng.apply, "Out", other(0), "A", 0, 0)  # not an input record
    assert eng.evaluate("Ev", ev(0, f=0.1))["vf"] == struct.unpack("<f", struct.pack("<f",
                                                                                     0.1))[0]
    assert eng.evaluate("Ev", ev(0, b=True))["vb"] == 1.0
    assert eng.evaluate("Ev", ev(0, n=(1 << 53) + 1))["vn"] == float(1 << 53)
    # fields the declarations need must be there; others may be left out; extra keys ignored
    r = ev(0)
    del r["y"]
    r["extra"] = object()
    assert eng.apply("Ev", r, "A", 0, 0)
    r = ev(0)
    del r["x"]
    raises(rff.Malformed, eng.evaluate, "Ev", r)
    # what the decoder dead-letters as malformed
    for bad in (dict(x=math.nan), dict(x=math.inf), dict(y=-math.inf), dict(f=1e39),
                dict(side="HOLD"), dict(side=2), dict(side=-1), dict(i=1 << 31),
                dict(n=1 << 63), dict(tag="x" * 64), dict(tag="\u00e9" * 32), dict(tag="a\0"),
                dict(b=2), dict(i=1.5), dict(x="1"), dict(acct=5)):
        raises(rff.Malformed, eng.apply, "Ev", ev(0, **bad), "A", 0, 1)
    assert eng.apply("Ev", ev(0, tag="x" * 63, i=-(1 << 31), n=-(1 << 63)), "A", 0, 1)
    assert eng.state("acct", "a").sources == [[rff.topic_id("A"), 0, 1]]
    # a record type that touches no kind: nothing to apply
    e2 = rff.Engine(decl_of("entity user key=user\nfeature v = value(z) on Other\n"))
    assert e2.apply("Other", other(0, 1.5), "A", 0, 0)
    assert e2.apply("Other", other(0, 1.5), "A", 0, 0)  # no entity: never a replay
    assert e2.evaluate("Other", other(0, 1.5)) == {"v": 1.5} and not e2.states


# ------------------------------------------------------------------ brute force and std

def naive_window(events, n, tile_ms):
    """The window of FEATURES.md §2.5 from a list: the matching events with a tile in
    (h - N, h], h the largest tile of any event applied to the entity."""
    h = max(t // tile_ms for t, _, _ in events)
    return [x for t, x, m in events if m and t // tile_ms > h - n]


def exact_std(xs):
    if not xs:
        return 0.0
    fr = [Fraction(x) for x in xs]
    mean = sum(fr) / len(fr)
    var = sum((x - mean) ** 2 for x in fr) / len(fr)
    return math.sqrt(var)


BRUTE_FILE = """\
entity acct key=acct
feature c1 = count per acct on Ev window=10s/5
feature s1 = sum(x) per acct on Ev window=10s/5
feature m1 = mean(x) per acct on Ev window=10s/5
feature d1 = std(x) per acct on Ev window=10s/5
feature q1 = sumsq(x) per acct on Ev window=10s/5
feature lo1 = min(x) per acct on Ev window=10s/5
feature hi1 = max(x) per acct on Ev window=10s/5
feature c2 = count per acct on Ev window=1m/3 where side=BUY
feature s2 = sum(x) per acct on Ev window=1m/3 where side=BUY
feature d2 = std(x) per acct on Ev window=1m/3 where side=BUY
feature lo2 = min(x) per acct on Ev window=1m/3 where side=BUY
feature hi2 = max(x) per acct on Ev window=1m/3 where side=BUY
feature c3 = count per acct on Ev window=7s/7 where x>0 and tag=k
feature s3 = sum(x) per acct on Ev window=7s/7 where x>0 and tag=k
feature q3 = sumsq(x) per acct on Ev window=7s/7 where x>0 and tag=k
feature c4 = count per acct on Other window=30s/2
"""


def test_brute_force_windows():
    decl = decl_of(BRUTE_FILE)
    groups = [("1", 5, 2000, lambda r: True), ("2", 3, 20000, lambda r: r["side"] == "BUY"),
              ("3", 7, 1000, lambda r: r["x"] > 0 and r["tag"] == "k")]
    for seed in range(12):
        rnd = random.Random(seed)
        eng = rff.Engine(decl)
        hist = []        # (t, record) of every Ev applied, Other as None
        t = rnd.randint(-100000, 100000)
        integer = seed % 2 == 0
        for step in range(400):
            u = rnd.random()
            if u < 0.6:
                t += rnd.randint(0, 3000)
            elif u < 0.8:
                dt = rnd.randint(0, 40000)    # late, inside or outside the windows
            elif u < 0.9:
                t += rnd.randint(5000, 200000)  # gaps, some >= N tiles
            if u >= 0.6 and u < 0.8:
                et = t - dt
            else:
                et = t
            if rnd.random() < 0.1:
                assert eng.apply("Other", other(et), "o", 0, step)
                hist.append((et, None))
            else:
                x = float(rnd.randint(-50, 50)) if integer else rnd.uniform(-1e3, 1e3)
                r = ev(et, x, side=rnd.choice(("BUY", "SELL")), tag=rnd.choice(("k", "j")))
                assert eng.apply("Ev", r, "e", 0, step)
                hist.append((et, r))
            got = eng.evaluate("Other", other(et)) if hist[-1][1] is None else \
                eng.evaluate("Ev", hist[-1][1])
            for g, n, tile, pred in groups:
                evs = [(tt, r["x"] if r else 0.0, r is not None and pred(r)) for tt, r in hist]
                xs = naive_window(evs, n, tile)
                assert got["c" + g] == len(xs), (seed, step, g)
                tol = 0 if integer else 1e-9
                if "s" + g in got:
                    assert close(got["s" + g], sum(xs), tol, tol), (seed, step, g)
                if "q" + g in got:
                    assert close(got["q" + g], sum(x * x for x in xs), tol, tol)
                if "m" + g in got:
                    assert close(got["m" + g], sum(xs) / len(xs) if xs else 0.0, 1e-12, 1e-12)
                if "d" + g in got:
                    assert close(got["d" + g], exact_std(xs), 1e-9, 1e-9), \
                        (seed, step, g, got["d" + g], exact_std(xs))
                if "lo" + g in got:
                    assert got["lo" + g] == (min(xs) if xs else 0.0)
                    assert got["hi" + g] == (max(xs) if xs else 0.0)
            evs = [(tt, 0.0, r is None) for tt, r in hist]
            assert got["c4"] == len(naive_window(evs, 2, 15000))


def test_std_merge_against_exact_two_pass():
    decl = decl_of("entity acct key=acct\n"
                   "feature d = std(x) per acct on Ev window=128s/128\n"
                   "feature m = mean(x) per acct on Ev window=128s/128\n")
    for seed, (lo, hi, shift) in enumerate([(-1, 1, 0.0), (0, 1, 1e6), (-1e3, 1e3, 0.0),
                                            (0, 1e-3, 1.0), (5, 5, 0.0)]):
        rnd = random.Random(100 + seed)
        f = Feed(decl)
        xs = []
        for k in range(600):
            x = shift + rnd.uniform(lo, hi)
            xs.append(x)
            g = f(ev(rnd.randint(0, 127999), x))  # every event inside the 128 tiles
        want = exact_std(xs)
        assert close(g["d"], want, 1e-9, 1e-12), (seed, g["d"], want)
        assert close(g["m"], float(sum(Fraction(x) for x in xs) / len(xs)), 1e-12, 1e-12)
    # the merge formula step by step on two slots (FEATURES.md §2.5)
    f = Feed(decl)
    for t, x in ((0, 1.0), (10, 3.0), (1000, 10.0), (1001, 20.0), (1002, 30.0)):
        g = f(ev(t, x))
    # slot0: n 2, sum 4, m2 2; slot1: n 3, sum 60, m2 200; d = 20 - 2 = 18;
    # M2 = 2 + 200 + 324 * (2 * 3 / 5) = 590.8; std = sqrt(590.8 / 5)
    assert close(g["d"], math.sqrt(590.8 / 5))
    assert close(g["d"], exact_std([1, 3, 10, 20, 30]))


# ----------------------------------------------------------------------- pack and unpack

def test_pack_unpack_round_trip():
    decl = decl_of(LAYOUT_FILE + "feature g = time_since_last per acct on Ev cap=90s\n"
                   "feature d = dsum(x) per acct on Ev halflife=1m\n"
                   "feature mx = max(x) per acct on Ev window=1m/3 where tag=k\n")
    lay = decl.kind("acct")
    rnd = random.Random(7)
    eng = rff.Engine(decl)
    t = 0
    for step in range(300):
        t += rnd.randint(-3000, 5000)
        topic = rnd.choice(("p", "q", "r", "s", "u"))
        eng.apply("Ev", ev(t, rnd.uniform(-5, 5), n=rnd.randint(-3, 9), tag=rnd.choice("kj"),
                           side=rnd.choice(("BUY", "SELL"))), topic, rnd.randint(0, 2),
                  step)
        st = eng.state("acct", "a")
        b = st.pack()
        assert len(b) == lay.size
        st2 = lay.unpack(b)
        assert st2.pack() == b and st2 == st
    # an unpacked state continues exactly like the original
    e2 = rff.Engine(decl)
    e2.put_state("acct", "a", eng.state("acct", "a").pack())
    for step in range(50):
        r = ev(t + step * 700, float(step), n=step, tag="k")
        assert eng.apply("Ev", r, "z", 0, step) == e2.apply("Ev", r, "z", 0, step)
        assert eng.evaluate("Ev", r) == e2.evaluate("Ev", r)
    assert e2.state("acct", "a") == eng.state("acct", "a")
    assert eng.state("acct", "a").copy() == eng.state("acct", "a")


def test_unpack_rejects():
    decl = decl_of(LAYOUT_FILE)
    lay = decl.kind("acct")
    f = Feed(decl)
    f(ev(1000, 1.0))
    good = f.eng.state("acct", "a").pack()
    assert lay.unpack(good).pack() == good
    h = struct.pack("<Q", lay.hash)
    for bad in (good[:-1], good + b"\0", b"", bytes(lay.size),
                b"RFC1" + good[4:],                                  # magic
                good[:4] + struct.pack("<H", 2) + good[6:],          # version
                good[:4] + struct.pack("<H", 0) + good[6:],
                good[:6] + struct.pack("<H", 5) + good[8:],          # n_sources > 4
                good[:8] + struct.pack("<Q", lay.hash ^ 1) + good[16:]):  # hash
        raises(ValueError, lay.unpack, bad)
    # another layout's value (another declaration) is refused by its hash
    other_lay = decl_of(LAYOUT_FILE.replace("halflife=1s", "halflife=2s")).kind("acct")
    assert other_lay.size == lay.size and other_lay.hash != lay.hash
    raises(ValueError, other_lay.unpack, good)
    # slots past n_sources and padding are not read (and written back as 0)
    junk = bytearray(good)
    junk[50] = 0x5A     # source slot 1
    junk[117] = 0x77    # group 0 padding
    st = lay.unpack(bytes(junk))
    assert st.pack() == good
    assert good[8:16] == h


def test_hostile_values():
    """Stored values are not trusted beyond their header: any bytes give some values."""
    decl = decl_of(LAYOUT_FILE + "feature g = time_since_last per acct on Ev cap=90s\n"
                   "feature d = dsum(x) per acct on Ev halflife=1m\n"
                   "feature mx = max(x) per acct on Ev window=1m/3 where tag=k\n"
                   "feature wd = std(x) per acct on Ev window=1m/3 where tag=k\n")
    lay = decl.kind("acct")
    rnd = random.Random(11)
    head = struct.pack("<IHH", 0x31454652, 1, 0) + struct.pack("<Q", lay.hash)
    specials = [struct.pack("<q", v) for v in (INT64_MIN, INT64_MIN + 1, -1, 0, 1,
                                               (1 << 63) - 1)] + \
        [struct.pack("<d", v) for v in (math.nan, math.inf, -math.inf, -0.0, 1e308)]
    for k in range(200):
        body = bytearray(rnd.getrandbits(8) for _ in range(lay.size - 16))
        if k % 2:
            for o in range(0, len(body) - 8, 8):
                if rnd.random() < 0.5:
                    body[o:o + 8] = rnd.choice(specials)
        body[0:8] = struct.pack("<q", rnd.choice((INT64_MIN, 0, 10 ** 12, -1,
                                                  (1 << 63) - 1)))
        buf = head[:6] + struct.pack("<H", rnd.randint(0, 4)) + head[8:] + bytes(body)
        eng = rff.Engine(decl)
        eng.put_state("acct", "a", buf)
        vals = eng.evaluate("Ev", ev(5, 1.0, tag="k"))
        assert all(isinstance(v, float) for v in vals.values())
        for t in (rnd.randint(-10 ** 13, 10 ** 13), INT64_MIN, (1 << 63) - 1, 0):
            eng.apply("Ev", ev(t, rnd.uniform(-1, 1), n=rnd.randint(-2, 2), tag="k"),
                      "h", 0, k * 10 + rnd.randint(0, 9) + (1 << 40))
            vals = eng.evaluate("Ev", ev(t, 1.0, tag="k"))
            assert all(isinstance(v, float) for v in vals.values())
            assert len(eng.state("acct", "a").pack()) == lay.size


# ----------------------------------------------------------------------------- errors

def E(line, msg, text, schemas=None):
    """The file must fail to load with FILE:LINE: message (msg: a part of the message)."""
    path = write(text)
    e = raises(rff.DeclError, rff.load, path, schemas or TSCHEMAS)
    want = "%s:%d: " % (path, line)
    assert str(e).startswith(want), (str(e), want)
    assert msg in str(e), (str(e), msg)


A = "entity acct key=acct\n"


def test_error_keyword_and_syntax():
    E(1, "unknown keyword 'entiti'", "entiti acct key=acct\n")
    E(2, "unknown keyword 'features'", A + "features x = count per acct on Ev window=1h/1\n")
    E(1, "expected 'entity KIND key=FIELD [ttl=DUR] [sliced]'", "entity acct acct\n")
    E(1, "expected 'entity KIND key=FIELD [ttl=DUR] [sliced]'", "entity acct key=acct extra\n")
    E(1, "expected 'entity KIND key=FIELD [ttl=DUR] [sliced]'",
      "entity acct key=acct sliced sliced\n")
    S = "entity acct key=acct sliced\n"
    E(2, "entity 'acct' is sliced: time_since_last needs the entity's last two events",
      S + "feature x = time_since_last per acct on Ev\n")
    E(2, "entity 'acct' is sliced: it keeps no previous values",
      S + "feature x = sum(change(x)) per acct on Ev window=1h/1\n")
    E(2, "expected 'feature NAME = EXPR", A + "feature x value() on Ev\n")
    E(2, "expected 'derived NAME = OP(ARGS)", A + "derived x ratio(a,b)\n")
    E(2, "bad expression", A + "feature x = count) per acct on Ev window=1h/1\n")
    E(2, "unexpected 'acct'", A + "feature x = count per acct acct on Ev window=1h/1\n")
    E(2, "'per' given twice", A + "feature x = count per acct per acct on Ev window=1h/1\n")
    E(2, "'on' needs a name", A + "feature x = count per acct window=1h/1 on\n")
    E(2, "missing 'on RECORD'", A + "feature x = count per acct window=1h/1\n")
    path = write_bytes(A.encode() + b"# ok\nfeature x = value() on Ev where tag=\xff\n")
    e = raises(rff.DeclError, rff.load, path, TSCHEMAS)
    assert str(e) == path + ":3: not UTF-8"


def test_error_bad_names():
    E(1, "bad entity name 'Acct'", "entity Acct key=acct\n")
    E(1, "bad entity name '_a'", "entity _a key=acct\n")
    E(2, "bad feature name '9x'", A + "feature 9x = value() on Ev\n")
    E(2, "bad feature name '%s'" % ("a" * 49), A + "feature %s = value() on Ev\n" % ("a" * 49))
    assert decl_of(A + "feature %s = value() on Ev\n" % ("a" * 48)).names == ["a" * 48]
    E(2, "bad feature name 'x-y'", A + "derived x-y = sqrt(a)\n")
    E(1, "bad key field", "entity acct key=a.b\n")


def test_error_duplicates():
    E(2, "duplicate entity 'acct' (line 1)", A + "entity acct key=user\n")
    E(3, "duplicate name 'x' (line 2)", A + "feature x = value() on Ev\n"
      "feature x = value(x) on Ev\n")
    E(3, "duplicate name 'x' (line 2)", A + "feature x = value() on Ev\nderived x = sqrt(x)\n")
    E(2, "option window given twice",
      A + "feature x = count per acct on Ev window=1h/1 window=1h/1\n")
    E(3, "option scale given twice", A + "feature a = value() on Ev\n"
      "derived x = sqrt(a) scale=1 scale=2\n")


def test_error_unknown_entity_record_field():
    E(2, "unknown entity 'user'", A + "feature x = count per user on Ev window=1h/1\n")
    # an entity declared on a later line is unknown where it is used
    E(2, "unknown entity 'user'", A + "feature x = count per user on Ev window=1h/1\n"
      "entity user key=user\n")
    E(2, "unknown record 'Evt'", A + "feature x = count per acct on Evt window=1h/1\n")
    E(2, "record name 'Dup' is ambiguous (t.Dup, u.Dup)",
      A + "feature x = count per acct on Dup window=1h/1\n")
    assert decl_of(A + "feature x = count per acct on u.Dup window=1h/1\n").names == ["x"]
    E(2, "record t.Out cannot be an input record: field 'list' is of type",
      A + "feature x = value() on Out\n")
    E(2, "record t.NoTime cannot be an input record: no long field with logicalType",
      A + "feature x = value() on NoTime\n")
    E(2, "record Ev has no field 'xx'", A + "feature x = sum(xx) per acct on Ev window=1h/1\n")
    E(2, "record Ev has no field 'X'", A + "feature x = value() on Ev where X=1\n")
    E(2, "record Other has no field 'x'", A + "feature x = last(change(x)) per acct on Other\n")
    E(1, "no input record has a string field 'x'", "entity acct key=x\n")
    E(1, "no input record has a string field 'nope'", "entity acct key=nope\n")
    E(3, "record Other does not touch entity user (no string field 'user')",
      A + "entity user key=user\nfeature x = count per user on Other window=1h/1\n")
    E(1, "no input record has a string field 'customer_id'", "entity c key=customer_id\n")
    E(3, "record Payment does not touch entity instrument",
      "entity customer key=customer_id\nentity instrument key=instrument\n"
      "feature x = count per instrument on Payment window=1h/1\n", schemas=SCHEMAS)
    E(3, "record Quote does not touch entity customer",
      "entity customer key=customer_id\nentity instrument key=instrument\n"
      "feature x = last(bid) on Quote per customer\n", schemas=SCHEMAS)


def test_error_field_types():
    E(2, "tag: field tag is a string, not a number",
      A + "feature x = sum(tag) per acct on Ev window=1h/1\n")
    E(2, "tag/2: field tag is a string, not a number",
      A + "feature x = value(tag/2) on Ev\n")
    E(2, "change(acct): field acct is a string", A + "feature x = last(change(acct)) per acct"
      " on Ev\n")
    E(2, "hour(n): not a timestamp-millis field", A + "feature x = value(hour(n)) on Ev\n")
    E(2, "hour(x): not a timestamp-millis field", A + "feature x = value() on Ev where "
      "hour(x)<3\n")
    E(2, "only = and != for string field tag", A + "feature x = value() on Ev where tag<a\n")
    E(2, "only = and != for enum field side", A + "feature x = value() on Ev where side>=BUY\n")
    E(2, "unknown symbol 'HOLD' of t.Side (BUY, SELL)", A + "feature x = value() on Ev "
      "where side=HOLD\n")
    E(2, "unknown symbol '0'", A + "feature x = value() on Ev where side=0\n")
    E(2, "bad number 'abc'", A + "feature x = value() on Ev where x>abc\n")
    E(2, "bad number '1e3'", A + "feature x = value() on Ev where x>1e3\n")
    E(2, "bad number '.5'", A + "feature x = value() on Ev where b=.5\n")
    E(2, "string longer than 63 bytes", A + "feature x = value() on Ev where tag=%s\n"
      % ("y" * 64))
    E(2, "has no value", A + "feature x = value() on Ev where tag=\n")
    E(2, "bad condition 'x~1'", A + "feature x = value() on Ev where x~1\n")
    E(2, "unknown symbol '=SELL'", A + "feature x = value() on Ev where side==SELL\n")


def test_error_durations_and_windows():
    E(2, "bad duration '1x'", A + "feature x = count per acct on Ev window=1x/12\n")
    E(2, "bad duration '1.5h'", A + "feature x = count per acct on Ev window=1.5h/12\n")
    E(2, "bad duration '10'", A + "feature x = ewma(x) per acct on Ev halflife=10\n")
    E(2, "bad duration '5w'", A + "feature x = age per acct on Ev cap=5w\n")
    E(2, "bad window '1h'", A + "feature x = count per acct on Ev window=1h\n")
    E(2, "bad tile count 'x'", A + "feature x = count per acct on Ev window=1h/x\n")
    E(2, "window 1h is not a multiple of 7 ms", A + "feature x = count per acct on Ev "
      "window=1h/7\n")
    E(2, "tile of 500 ms is shorter than 1s", A + "feature x = count per acct on Ev "
      "window=10s/20\n")
    E(2, "window 367d longer than 366d", A + "feature x = count per acct on Ev "
      "window=367d/1\n")
    E(2, "tiles 0 out of range (1..128)", A + "feature x = count per acct on Ev window=1h/0\n")
    E(2, "tiles 129 out of range (1..128)", A + "feature x = count per acct on Ev "
      "window=129h/129\n")
    E(2, "halflife=0s out of range", A + "feature x = dsum(x) per acct on Ev halflife=0s\n")
    E(2, "halflife=367d out of range", A + "feature x = dsum(x) per acct on Ev "
      "halflife=367d\n")
    E(2, "cap=3661d out of range", A + "feature x = time_since_last per acct on Ev "
      "cap=3661d\n")
    # the edges that are allowed
    d = decl_of(A + "feature a = count per acct on Ev window=366d/128\n"
                "feature b = count per acct on Ev window=1s/1\n"
                "feature c = dsum(x) per acct on Ev halflife=1ms\n"
                "feature e = ewma(x) per acct on Ev halflife=366d\n"
                "feature f = age per acct on Ev cap=3660d\n"
                "feature g = count per acct on Ev window=128s/128\n"
                "feature h = count per acct on Ev window=3s/3\n")
    assert d.feature("a").window == (366 * 86400000, 128, 366 * 86400000 // 128)
    assert d.feature("f").cap_s == 3660 * 86400.0


def test_error_delay_time_delta_ttl():
    base = "entity acct key=acct\nentity user key=user\n"

    def F(msg, text):
        E(3, msg, base + text)
    F("delay", "feature a = count per acct on Ev window=2h/2 delay=30m\n")      # not whole tiles
    F("delay", "feature a = count per acct on Ev window=2h/2 delay=400d\n")
    F("tiles", "feature a = count per acct on Ev window=128h/128 delay=400h\n")  # ring > 512
    F("not a timestamp", "feature a = count per acct on Ev window=2h/2 time=x\n")
    F("time", "feature a = last(x) per acct on Ev time=ts2\n")
    F("delay", "feature a = last(x) per acct on Ev delay=1h\n")
    F("unknown entity", "feature a = sum(delta(x,nope)) per acct on Ev window=1h/1\n")
    F("does not touch", "feature a = sum(delta(z,user)) per acct on Other window=1h/1\n")
    F("stateful", "feature a = value(delta(x,user)) on Ev\n")
    E(1, "ttl", "entity acct key=acct ttl=0s\n")
    E(1, "ttl=DUR", "entity acct key=acct wat=1\n")


def test_error_options():
    E(2, "count needs window=DUR/TILES", A + "feature x = count per acct on Ev\n")
    E(2, "ewma needs halflife=DUR", A + "feature x = ewma(x) per acct on Ev\n")
    E(2, "dsum needs halflife=DUR", A + "feature x = dsum(x) per acct on Ev\n")
    E(2, "option cap is not allowed for count", A + "feature x = count per acct on Ev "
      "window=1h/1 cap=1d\n")
    E(2, "option window is not allowed for last", A + "feature x = last(x) per acct on Ev "
      "window=1h/1\n")
    E(2, "option halflife is not allowed for sum", A + "feature x = sum(x) per acct on Ev "
      "window=1h/1 halflife=1s\n")
    E(2, "option window is not allowed for value", A + "feature x = value(x) on Ev "
      "window=1h/1\n")
    E(2, "option window is not allowed for time_since_last",
      A + "feature x = time_since_last per acct on Ev window=1h/1\n")
    E(2, "option scale is not allowed for value", A + "feature x = value(x) on Ev scale=2\n")
    E(2, "unknown option 'foo'", A + "feature x = value(x) on Ev foo=1\n")
    E(3, "option window is not allowed for derived", A + "feature a = value() on Ev\n"
      "derived x = sqrt(a) window=1h/1\n")
    E(3, "unknown option 'bar'", A + "feature a = value() on Ev\nderived x = sqrt(a) bar=1\n")
    E(3, "bad number 'x'", A + "feature a = value() on Ev\nderived x = sqrt(a) scale=x\n")
    E(3, "unexpected 'where'", A + "feature a = value() on Ev\nderived x = sqrt(a) where\n")
    E(2, "count needs 'per KIND'", A + "feature x = count on Ev window=1h/1\n")
    E(2, "last needs 'per KIND'", A + "feature x = last(x) on Ev\n")
    # options in any order, each at most once; where last
    d = decl_of(A + "feature x = count window=1h/1 on Ev per acct where side=BUY\n")
    assert d.feature("x").conds[0].text == "side=BUY"


def test_error_expressions():
    E(2, "unknown aggregation 'median'", A + "feature x = median(x) per acct on Ev "
      "window=1h/1\n")
    E(2, "count takes no input", A + "feature x = count(x) per acct on Ev window=1h/1\n")
    E(2, "age takes no input", A + "feature x = age() per acct on Ev\n")
    E(2, "sum needs an input", A + "feature x = sum() per acct on Ev window=1h/1\n")
    E(2, "last needs an input", A + "feature x = last per acct on Ev\n")
    E(2, "value needs parentheses", A + "feature x = value on Ev\n")
    E(2, "bad input 'x+1'", A + "feature x = sum(x+1) per acct on Ev window=1h/1\n")
    E(2, "bad input 'change(x)/2'", A + "feature x = sum(change(x)/2) per acct on Ev "
      "window=1h/1\n")
    E(2, "bad number 'a'", A + "feature x = value(x/a) on Ev\n")
    E(2, "bad number '1.'", A + "feature x = value(x*1.) on Ev\n")
    E(2, "division by 0 in 'x/0.0'", A + "feature x = value(x/0.0) on Ev\n")
    E(2, "change() is an input of stateful aggregations only", A + "feature x = value(change(x))"
      " on Ev\n")
    E(2, "logchange() is an input of stateful aggregations only", A + "feature x = "
      "value(logchange(x)) on Ev\n")
    E(2, "value() is stateless: it takes no 'per KIND'", A + "feature x = value(x) on Ev per "
      "acct\n")
    d = decl_of(A + "feature x = value(x*-0.5) on Ev\nfeature y = value(x/-2) on Ev\n")
    assert rff.Engine(d).evaluate("Ev", ev(0, 3.0)) == {"x": -1.5, "y": -1.5}


def test_error_conditions():
    E(2, "'where' needs a condition", A + "feature x = value() on Ev where\n")
    E(2, "expected 'and' between conditions, got 'x<2'", A + "feature x = value() on Ev "
      "where x>1 x<2\n")
    E(2, "'and' needs a condition after it", A + "feature x = value() on Ev where x>1 and\n")
    E(2, "expected a condition, got 'and'", A + "feature x = value() on Ev where and x>1\n")
    E(2, "too many conditions (at most 4)", A + "feature x = value() on Ev where x>1 and x>2 "
      "and x>3 and x>4 and x>5\n")
    assert decl_of(A + "feature x = value() on Ev where x>1 and x>2 and x>3 and x>4\n")


def test_error_derived():
    E(3, "'b' is not a feature declared on an earlier line",
      A + "feature a = value() on Ev\nderived x = ratio(a,b)\nfeature b = value() on Ev\n")
    E(2, "'x' is not a feature declared on an earlier line", A + "derived x = sqrt(x)\n")
    E(3, "unknown operation 'mul'", A + "feature a = value() on Ev\nderived x = mul(a,a)\n")
    E(3, "ratio takes 2 arguments, not 1", A + "feature a = value() on Ev\n"
      "derived x = ratio(a)\n")
    E(3, "sqrt takes 1 argument, not 2", A + "feature a = value() on Ev\n"
      "derived x = sqrt(a,a)\n")
    E(3, "bad expression 'sqrt(a))'", A + "feature a = value() on Ev\nderived x = sqrt(a))\n")
    E(3, "ratio takes 2 arguments, not 0", A + "feature a = value() on Ev\n"
      "derived x = ratio()\n")


def test_error_limits():
    ents = "".join("entity k%d key=acct\n" % i for i in range(8))
    assert len(decl_of(ents).entities) == 8
    E(9, "too many entities (at most 8)", ents + "entity k8 key=user\n")
    # 128 tiles: head 8 + cnt 512 + each column 1024; 16 KiB = 16384
    lines = [A]
    for i in range(11):
        lines.append("feature s%d = sum(x*%d) per acct on Ev window=128s/128\n" % (i, i + 1))
    # 88 + 520 + 11 * 1024 = 11872; + (520 + 1024) * ... : add groups until past 16384
    for i in range(3):
        lines.append("feature g%d = sum(x) per acct on Ev window=128s/128 where i>%d\n"
                     % (i, i))
    # 11872 + 1544 * 3 = 16504 > 16384: line 2 + 11 + 3 - 1 = 15
    E(15, "the value of entity acct would be 16504 bytes (at most 16384)", "".join(lines))
    ok = decl_of("".join(lines[:-1]))
    assert ok.kind("acct").size == 14960
    raises(ValueError, ok.kind, "acct", {"big": ("acct", 1, 1425)})
    assert ok.kind("acct", {"fits": ("acct", 1, 1424)}).size == 16384
    e = raises(rff.DeclError, rff.load, os.path.join(_TMP, "missing.conf"), TSCHEMAS)
    assert str(e).startswith(os.path.join(_TMP, "missing.conf") + ":0: cannot read")


# ------------------------------------------------------------------------ the fraud features

FRAUD_NAMES = ["amount", "log_amount", "cust_count_1h", "cust_sum_1h", "cust_count_24h",
               "cust_sum_24h", "cust_secs_since_last", "cust_amount_ratio_24h", "is_ecom",
               "is_night", "is_cash"]


def test_fraud_features_by_hand():
    decl = rff.load(FEATURES_CONF, SCHEMAS)
    eng = rff.Engine(decl)
    T0 = 1775001600000  # 2026-04-01T00:00Z
    H, M = 3600000, 60000

    def go(p, off):
        assert eng.apply("riskflow.Payment", p, "txn.payments", 0, off)
        return eng.evaluate("riskflow.Payment", p, FRAUD_NAMES)

    f = go(pay(T0 + 3 * H, 1234, channel="ECOM"), 0)
    assert list(f) == FRAUD_NAMES
    check(f, amount=12.34, log_amount=math.log1p(12.34), cust_count_1h=1, cust_sum_1h=12.34,
          cust_count_24h=1, cust_sum_24h=12.34, cust_secs_since_last=CAP30D,
          cust_amount_ratio_24h=1, is_ecom=1, is_night=1, is_cash=0)
    f = go(pay(T0 + 7 * H, 5000, kind="CASH_WITHDRAWAL", channel="ATM"), 1)
    check(f, amount=50, cust_count_1h=1, cust_sum_1h=50, cust_count_24h=2,
          cust_sum_24h=62.34, cust_secs_since_last=4 * 3600,
          cust_amount_ratio_24h=50 / (62.34 / 2), is_ecom=0, is_night=0, is_cash=1)
    f = go(pay(T0 + 7 * H + 30 * M, 0), 2)
    check(f, amount=0, log_amount=0, cust_count_1h=2, cust_sum_1h=50,
          cust_amount_ratio_24h=0, cust_secs_since_last=1800)
    # a credit event of the customer moves its time: the 1 h window is empty (tile 30), the
    # 24 h one holds tiles 7..30 (both payments of tile 7); purchases: 12.34 + 0
    ce = {"event_id": "c", "customer_id": "C1", "account_id": "A", "kind": "DRAWDOWN",
          "amount_minor": 10000, "balance_minor": 50000, "credit_limit_minor": 200000,
          "days_past_due": 0, "currency": "EUR", "event_time": T0 + 30 * H}
    assert eng.apply("CreditEvent", ce, "credit.events", 0, 0)
    c = eng.evaluate("CreditEvent", ce)
    check(c, cr_balance=500, cr_limit=2000, cr_utilisation=0.25, cr_drawdown_30d=100,
          cust_count_24h=2, cust_count_1h=0, cr_spend_90d=12.34, cr_income_90d=0,
          cr_spend_to_income=2, cr_cash_30d=1, cr_secs_since_missed=365 * 86400)


def test_fraud_features_reproduce_the_old_reference():
    """tests/fixtures/fraud_reference_features.csv: simulated payments (some delivered late)
    and the 11 fraud features the previous hard-coded reference (bb4115f) computed for them,
    written by tools/train/crosscheck_fraud_reference.py. deploy/features.conf must give the
    same values (relative 1e-9)."""
    decl = rff.load(FEATURES_CONF, SCHEMAS)
    eng = rff.Engine(decl)
    n = 0
    with open(FRAUD_FIXTURE, newline="") as fh:
        for row in csv.DictReader(fh):
            p = pay(int(row["event_time"]), int(row["amount_minor"]), row["channel"],
                    row["kind"], row["customer_id"])
            assert eng.apply("Payment", p, "txn.payments", 0, n)
            got = eng.evaluate("Payment", p, FRAUD_NAMES)
            for k in FRAUD_NAMES:
                want = float(row[k])
                assert math.isclose(got[k], want, rel_tol=1e-9, abs_tol=0.0), \
                    (n, k, got[k], want)
            n += 1
    assert n >= 1000


# --------------------------------------------------------------------------------- runner

def _main():
    tests = [(k, v) for k, v in sorted(globals().items())
             if k.startswith("test_") and callable(v)]
    failed = 0
    for name, fn in tests:
        try:
            fn()
        except Exception:
            failed += 1
            print("FAIL %s" % name)
            traceback.print_exc()
    print("%s: %d tests, %d failed" % ("ok" if not failed else "FAILED", len(tests), failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(_main())
