"""Hand-made cases for riskflow_features.py against the text of include/riskflow/features.h.

Run: python3 -m pytest tools/train/test_riskflow_features.py   (or run this file directly).
Standard library only.
"""

import math
import os
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import riskflow_features as rf  # noqa: E402

T0 = 1775001600000  # 2026-04-01T00:00:00Z, a multiple of both tile sizes
MIN = 60000
HOUR = 3600000
TOPIC = "txn.payments"  # the single-source tests' input topic


def pay(t, amount_minor=1000, channel="POS", kind="PURCHASE"):
    return {
        "event_id": "e-%d" % t,
        "customer_id": "C000001",
        "card_token": "tok",
        "merchant_id": "M1",
        "terminal_id": "T1",
        "mcc": 5411,
        "amount_minor": amount_minor,
        "currency": "EUR",
        "channel": channel,
        "country": "FR",
        "kind": kind,
        "event_time": t,
    }


def test_catalogue_order():
    assert rf.FEATURES == (
        "amount", "log_amount", "cust_count_1h", "cust_sum_1h", "cust_count_24h",
        "cust_sum_24h", "cust_secs_since_last", "cust_amount_ratio_24h", "is_ecom",
        "is_night", "is_cash",
    )


def test_first_event():
    st = rf.CustomerState()
    applied, f = st.apply_ex(pay(T0 + 13 * HOUR, 1234), 0, 0, topic=TOPIC)
    assert applied
    assert list(f) == list(rf.FEATURES)
    assert f["amount"] == 12.34
    assert f["log_amount"] == math.log1p(12.34)
    assert f["cust_count_1h"] == 1.0 and f["cust_sum_1h"] == 12.34
    assert f["cust_count_24h"] == 1.0 and f["cust_sum_24h"] == 12.34
    assert f["cust_secs_since_last"] == rf.SECS_SINCE_LAST_CAP  # no previous event
    assert f["cust_amount_ratio_24h"] == 1.0  # 12.34 / (12.34 / 1)
    assert f["is_ecom"] == 0.0 and f["is_night"] == 0.0 and f["is_cash"] == 0.0
    assert st.sources == ((rf.topic_id(TOPIC), 0, 0),) and st.n_sources == 1
    assert st.last_event_ms == T0 + 13 * HOUR
    assert st.head_5m == (T0 + 13 * HOUR) // rf.TILE_5M_MS
    assert st.head_1h == (T0 + 13 * HOUR) // rf.TILE_1H_MS


def test_flags():
    st = rf.CustomerState()
    f = st.apply(pay(T0 + 5 * HOUR + 59 * MIN, channel="ECOM"), 0, 0, topic=TOPIC)
    assert f["is_ecom"] == 1.0 and f["is_night"] == 1.0 and f["is_cash"] == 0.0
    f = st.apply(pay(T0 + 6 * HOUR, channel="ATM", kind="CASH_WITHDRAWAL"), 0, 1, topic=TOPIC)
    assert f["is_ecom"] == 0.0 and f["is_night"] == 0.0 and f["is_cash"] == 1.0
    # is_night uses the UTC hour of the day, whatever the day
    f = st.apply(pay(T0 + 3 * 24 * HOUR + 2 * HOUR, channel="MOBILE"), 0, 2, topic=TOPIC)
    assert f["is_night"] == 1.0 and f["is_ecom"] == 0.0
    # enum given by index instead of symbol
    f = st.apply(pay(T0 + 4 * 24 * HOUR + 12 * HOUR, channel=1, kind=2), 0, 3, topic=TOPIC)
    assert f["is_ecom"] == 1.0 and f["is_cash"] == 1.0


def test_two_events_same_5m_tile():
    st = rf.CustomerState()
    t1 = T0 + 10 * HOUR + 60000  # 10:01
    t2 = T0 + 10 * HOUR + 240000  # 10:04, same 5-minute tile
    st.apply(pay(t1, 1000), 0, 0, topic=TOPIC)
    f = st.apply(pay(t2, 3000), 0, 1, topic=TOPIC)
    assert f["cust_count_1h"] == 2.0 and f["cust_sum_1h"] == 40.0
    assert f["cust_count_24h"] == 2.0 and f["cust_sum_24h"] == 40.0
    assert f["cust_secs_since_last"] == 180.0
    assert f["cust_amount_ratio_24h"] == 30.0 / (40.0 / 2.0)
    slot = (t1 // rf.TILE_5M_MS) % rf.TILES_5M
    assert st.cnt_5m[slot] == 2 and st.sum_5m[slot] == 4000
    assert sum(st.cnt_5m) == 2


def test_61_minutes_later_drops_1h_keeps_24h():
    st = rf.CustomerState()
    t1 = T0 + 10 * HOUR + 2 * MIN  # 10:02, 5m tile 10:00-10:05
    st.apply(pay(t1, 1000), 0, 0, topic=TOPIC)
    # 11:03, tile 11:00: 12 tiles later
    f = st.apply(pay(t1 + 61 * MIN, 2000), 0, 1, topic=TOPIC)
    assert f["cust_count_1h"] == 1.0 and f["cust_sum_1h"] == 20.0
    assert f["cust_count_24h"] == 2.0 and f["cust_sum_24h"] == 30.0
    assert f["cust_secs_since_last"] == 3660.0
    assert f["cust_amount_ratio_24h"] == 20.0 / (30.0 / 2.0)


def test_1h_window_is_tiles_not_exact_minutes():
    # 10:00:00 and 10:59:59: 11 tiles apart -> still inside; 11:00 tile is 12 apart -> out.
    st = rf.CustomerState()
    st.apply(pay(T0 + 10 * HOUR, 500), 0, 0, topic=TOPIC)
    f = st.apply(pay(T0 + 11 * HOUR - 1000, 700), 0, 1, topic=TOPIC)
    assert f["cust_count_1h"] == 2.0
    f = st.apply(pay(T0 + 11 * HOUR + 1, 900), 0, 2, topic=TOPIC)
    assert f["cust_count_1h"] == 2.0 and f["cust_sum_1h"] == 16.0  # 10:59:59 and 11:00


def test_24h_window_moves_and_clears():
    st = rf.CustomerState()
    st.apply(pay(T0 + 1 * HOUR, 100), 0, 0, topic=TOPIC)
    st.apply(pay(T0 + 5 * HOUR, 200), 0, 1, topic=TOPIC)
    # hour tile 24: tile 0 is out
    f = st.apply(pay(T0 + 24 * HOUR + 30 * MIN, 400), 0, 2, topic=TOPIC)
    assert f["cust_count_24h"] == 3.0 and f["cust_sum_24h"] == 7.0
    f = st.apply(pay(T0 + 25 * HOUR + 30 * MIN, 800), 0, 3, topic=TOPIC)  # tile 1 drops
    assert f["cust_count_24h"] == 3.0 and f["cust_sum_24h"] == 14.0
    # a jump of > 24 tiles: everything out
    f = st.apply(pay(T0 + 100 * HOUR, 1600), 0, 4, topic=TOPIC)
    assert f["cust_count_24h"] == 1.0 and f["cust_sum_24h"] == 16.0
    assert sum(st.cnt_1h) == 1 and sum(st.cnt_5m) == 1


def test_late_event_inside_window():
    st = rf.CustomerState()
    t1 = T0 + 10 * HOUR + 30 * MIN  # 10:30
    st.apply(pay(t1, 1000), 0, 0, topic=TOPIC)
    late = t1 - 20 * MIN  # 10:10: 4 tiles behind the 5m head, same hour tile
    applied, f = st.apply_ex(pay(late, 3000), 0, 1, topic=TOPIC)
    assert applied
    assert f["cust_count_1h"] == 2.0 and f["cust_sum_1h"] == 40.0
    assert f["cust_count_24h"] == 2.0 and f["cust_sum_24h"] == 40.0
    assert f["cust_secs_since_last"] == 0.0  # negative gap clamped to 0
    assert st.head_5m == t1 // rf.TILE_5M_MS  # the head does not move back
    assert st.last_event_ms == t1  # CHOICE: last_event_ms never moves back
    slot = (late // rf.TILE_5M_MS) % rf.TILES_5M
    assert st.cnt_5m[slot] == 1 and st.sum_5m[slot] == 3000
    # the next in-order event measures its gap from 10:30, not 10:10
    f = st.apply(pay(t1 + 5 * MIN, 500), 0, 2, topic=TOPIC)
    assert f["cust_secs_since_last"] == 300.0
    assert f["cust_count_1h"] == 3.0


def test_too_late_event():
    st = rf.CustomerState()
    t1 = T0 + 10 * HOUR + 30 * MIN  # 10:30
    st.apply(pay(t1, 1000), 0, 0, topic=TOPIC)
    # 08:30: too late for the 1 h window (24 five-minute tiles behind), inside the 24 h one
    t_late = t1 - 2 * HOUR
    before = st.pack()
    applied, f = st.apply_ex(pay(t_late, 5000), 0, 1, topic=TOPIC)
    assert applied  # it still counts as applied
    assert st.sources == ((rf.topic_id(TOPIC), 0, 1),)
    assert f["cust_count_1h"] == 1.0 and f["cust_sum_1h"] == 10.0  # not in the 1 h ring
    assert f["cust_count_24h"] == 2.0 and f["cust_sum_24h"] == 60.0
    assert f["cust_amount_ratio_24h"] == 50.0 / (60.0 / 2.0)
    assert f["cust_secs_since_last"] == 0.0
    assert st.pack() != before
    # 2 days earlier: too late for both windows; only the source's offset moves
    b2 = st.pack()
    applied, f = st.apply_ex(pay(t1 - 48 * HOUR, 7000), 0, 2, topic=TOPIC)
    assert applied
    assert f["cust_count_1h"] == 1.0 and f["cust_count_24h"] == 2.0
    assert f["cust_sum_24h"] == 60.0
    assert f["cust_amount_ratio_24h"] == 70.0 / (60.0 / 2.0)
    assert st.sources == ((rf.topic_id(TOPIC), 0, 2),)
    b3 = st.pack()
    # nothing but the offset changed (the source's i64 offset at byte 40)
    assert b3[:40] == b2[:40] and b3[48:] == b2[48:]
    assert struct.unpack_from("<q", b3, 40) == (2,)


def test_tile_boundary_too_late_exactly_n_tiles_back():
    st = rf.CustomerState()
    t1 = T0 + 10 * HOUR  # 5m tile h
    st.apply(pay(t1, 100), 0, 0, topic=TOPIC)
    # tile h-12 is "ti <= head - N": too late; tile h-11 is inside
    f = st.apply(pay(t1 - 12 * 5 * MIN, 100), 0, 1, topic=TOPIC)
    assert f["cust_count_1h"] == 1.0
    f = st.apply(pay(t1 - 11 * 5 * MIN, 100), 0, 2, topic=TOPIC)
    assert f["cust_count_1h"] == 2.0


def test_replay_leaves_state_unchanged():
    st = rf.CustomerState()
    t1 = T0 + 9 * HOUR
    st.apply(pay(t1, 1000), 3, 100, topic=TOPIC)
    f2 = st.apply(pay(t1 + 10 * MIN, 2500), 3, 101, topic=TOPIC)
    snap = st.pack()
    # same offset again, and a lower offset, on the same partition: not applied
    for off, t, amt in ((101, t1 + 10 * MIN, 2500), (100, t1, 1000), (5, t1 + HOUR, 9999)):
        applied, f = st.apply_ex(pay(t, amt), 3, off, topic=TOPIC)
        assert not applied
        assert st.applied is False
        assert st.pack() == snap
        # features from the state as it stands
        assert f["cust_count_1h"] == 2.0 and f["cust_sum_1h"] == 35.0
        assert f["cust_count_24h"] == 2.0
        assert f["amount"] == amt / 100
    # the replay of the last event: its window features equal the first time's
    applied, f = st.apply_ex(pay(t1 + 10 * MIN, 2500), 3, 101, topic=TOPIC)
    for k in ("amount", "cust_count_1h", "cust_sum_1h", "cust_count_24h", "cust_sum_24h",
              "cust_amount_ratio_24h"):
        assert f[k] == f2[k]
    assert f["cust_secs_since_last"] == 0.0  # from the state as it stands (f2 had 600)
    assert f2["cust_secs_since_last"] == 600.0
    # another partition, even at a lower offset, is applied
    applied, f = st.apply_ex(pay(t1 + 11 * MIN, 100), 4, 0, topic=TOPIC)
    assert applied and f["cust_count_1h"] == 3.0
    tid = rf.topic_id(TOPIC)
    assert st.sources == ((tid, 4, 0), (tid, 3, 101))
    # partition 3's watermark survived: its redeliveries are still replays
    assert not st.apply_ex(pay(t1, 1000), 3, 100, topic=TOPIC)[0]


def test_secs_since_last_clamped_to_30_days():
    st = rf.CustomerState()
    st.apply(pay(T0, 100), 0, 0, topic=TOPIC)
    f = st.apply(pay(T0 + 40 * 24 * HOUR, 100), 0, 1, topic=TOPIC)
    assert f["cust_secs_since_last"] == rf.SECS_SINCE_LAST_CAP
    f = st.apply(pay(T0 + 40 * 24 * HOUR + 1500, 100), 0, 2, topic=TOPIC)
    assert f["cust_secs_since_last"] == 1.5


def test_ratio_mean_zero_and_amount_zero():
    st = rf.CustomerState()
    f = st.apply(pay(T0 + HOUR, 0), 0, 0, topic=TOPIC)
    assert f["amount"] == 0.0 and f["log_amount"] == 0.0
    assert f["cust_amount_ratio_24h"] == 1.0  # mean 0 -> 1
    f = st.apply(pay(T0 + HOUR + MIN, 500), 0, 1, topic=TOPIC)
    assert f["cust_amount_ratio_24h"] == 5.0 / (5.0 / 2.0)


def test_sums_are_minor_totals_over_100():
    # 0.1 + 0.2 in doubles is not 0.3; the sum is (10 + 20) / 100.
    st = rf.CustomerState()
    st.apply(pay(T0 + HOUR, 10), 0, 0, topic=TOPIC)
    f = st.apply(pay(T0 + HOUR + 1, 20), 0, 1, topic=TOPIC)
    assert f["cust_sum_1h"] == 0.3 and f["cust_sum_24h"] == 0.3


def test_pack_unpack_round_trip():
    st = rf.CustomerState()
    t = T0 + 7 * HOUR
    for i in range(40):
        st.apply(pay(t + i * 7 * MIN, 100 + 37 * i), 2, 1000 + i, topic=TOPIC)
    buf = st.pack()
    st.apply(pay(t + 40 * 7 * MIN, 5), 0, 7, topic="txn.transfers")
    buf = st.pack()
    assert isinstance(buf, bytes) and len(buf) == rf.STATE_SIZE == 528
    assert struct.unpack_from("<I", buf, 0)[0] == 0x31434652
    assert buf[:4] == b"RFC1"
    assert struct.unpack_from("<HH", buf, 4) == (2, 2)  # version 2, two sources
    t_last = t + 40 * 7 * MIN
    assert struct.unpack_from("<qqq", buf, 8) == (
        t_last, t_last // rf.TILE_5M_MS, t_last // rf.TILE_1H_MS)
    assert struct.unpack_from("<IiqIiq", buf, 32) == (
        rf.topic_id("txn.transfers"), 0, 7, rf.topic_id(TOPIC), 2, 1039)
    assert buf[64:96] == bytes(32)  # unused source slots
    assert list(struct.unpack_from("<12I", buf, 96)) == list(st.cnt_5m)
    assert list(struct.unpack_from("<12q", buf, 144)) == list(st.sum_5m)
    assert list(struct.unpack_from("<24I", buf, 240)) == list(st.cnt_1h)
    assert list(struct.unpack_from("<24q", buf, 336)) == list(st.sum_1h)
    st2 = rf.CustomerState.unpack(buf)
    assert st2.pack() == buf and st2 == st
    # an unpacked state continues exactly like the original
    nxt = pay(t + 41 * 7 * MIN, 4242)
    assert st2.apply(nxt, 2, 1040, topic=TOPIC) == st.apply(nxt, 2, 1040, topic=TOPIC)
    assert st2.pack() == st.pack()
    # in-place form
    st3 = rf.CustomerState()
    assert st3.unpack(buf) is st3 and st3.pack() == buf


def test_fresh_state_pack():
    buf = rf.CustomerState().pack()
    assert len(buf) == 528
    assert struct.unpack_from("<IHHqqq", buf, 0) == (0x31434652, 2, 0, rf.INT64_MIN,
                                                      rf.INT64_MIN, rf.INT64_MIN)
    assert buf[32:] == bytes(528 - 32)


def test_pack_golden():
    # The same state and bytes as test_pack_golden in tests/unit/test_features.c.
    buf = bytearray(528)
    buf[0:32] = bytes([
        0x52, 0x46, 0x43, 0x31, 0x02, 0x00, 0x02, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x80,
        0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0x0d, 0x0c, 0x0b, 0x0a, 0x00, 0x00, 0x00, 0x00])
    buf[32:64] = bytes([
        0x44, 0x33, 0x22, 0x11, 0x07, 0x00, 0x00, 0x00,
        0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01,
        0xef, 0xbe, 0xad, 0xde, 0xff, 0xff, 0xff, 0xff,
        0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff])
    buf[96:100] = bytes([0xdd, 0xcc, 0xbb, 0xaa])
    buf[152:160] = bytes([0xfe] + [0xff] * 7)
    buf[240 + 92:240 + 96] = bytes([5, 0, 0, 0])
    buf[336 + 184:336 + 192] = bytes([0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11])
    st = rf.CustomerState.unpack(bytes(buf))
    assert st.sources == ((0x11223344, 7, 0x0102030405060708), (0xdeadbeef, -1, -2))
    assert st.last_event_ms == rf.INT64_MIN
    assert (st.head_5m, st.head_1h) == (-2, 0x0a0b0c0d)
    assert st.cnt_5m[0] == 0xaabbccdd and st.sum_5m[1] == -2
    assert st.cnt_1h[23] == 5 and st.sum_1h[23] == 0x1122334455667788
    assert st.pack() == bytes(buf)


def test_unpack_rejects_malformed():
    st = rf.CustomerState()
    st.apply(pay(T0, 100), 0, 1, topic=TOPIC)
    good = st.pack()
    assert rf.CustomerState.unpack(good) == st
    for bad in (good[:-1], good + b"\0", b"", bytes(480),
                b"XXXX" + good[4:],
                good[:4] + struct.pack("<H", 1) + good[6:],  # version 1
                good[:4] + struct.pack("<H", 3) + good[6:],
                good[:6] + struct.pack("<H", 5) + good[8:],  # n_sources 5
                good[:6] + struct.pack("<H", 256) + good[8:]):
        try:
            rf.CustomerState.unpack(bad)
        except ValueError:
            pass
        else:
            raise AssertionError("accepted a malformed value")
    # unused source slots are not read, and written back as zeros
    junk = good[:80] + b"\x5a" + good[81:]
    st2 = rf.CustomerState.unpack(junk)
    assert st2 == st and st2.pack() == good


def test_topic_id():
    assert rf.topic_id("") == 0x811c9dc5
    assert rf.topic_id("a") == 0xe40c292c
    assert rf.topic_id("foobar") == 0xbf9cf968
    assert rf.topic_id(b"foobar") == 0xbf9cf968
    assert rf.topic_id("\u00e9") == 0x1e9de8c1  # UTF-8 bytes c3 a9, as in test_features.c
    try:
        rf.CustomerState().apply(pay(T0), 0, 0, topic=3)
    except TypeError:
        pass
    else:
        raise AssertionError("a topic id where a topic name belongs was accepted")


def test_two_topics_same_partition():
    # The bug: A[0] offsets 0-4 then B[0] offsets 0-2; B's events are not replays of A's.
    st = rf.CustomerState()
    for i in range(5):
        applied, f = st.apply_ex(pay(T0 + i * MIN, 1000), 0, i, topic="A")
        assert applied and f["cust_count_1h"] == i + 1
    for i in range(3):
        applied, f = st.apply_ex(pay(T0 + (10 + i) * MIN, 2000), 0, i, topic="B")
        assert applied and f["cust_count_1h"] == 6 + i and f["cust_count_24h"] == 6 + i
    assert st.sources == ((rf.topic_id("B"), 0, 2), (rf.topic_id("A"), 0, 4))
    snap = st.pack()
    for i in range(5):
        assert not st.apply_ex(pay(T0 + i * MIN, 1000), 0, i, topic="A")[0]
    for i in range(3):
        assert not st.apply_ex(pay(T0 + (10 + i) * MIN, 2000), 0, i, topic="B")[0]
    assert st.pack() == snap


def test_interleaved_sources():
    steps = [("A", 100, True), ("B", 7, True), ("A", 101, True), ("A", 100, False),
             ("B", 8, True), ("A", 101, False), ("B", 7, False), ("A", 100, False),
             ("B", 8, False), ("A", 102, True), ("B", 8, False), ("B", 9, True),
             ("A", 50, False), ("B", 3, False)]
    st = rf.CustomerState()
    count = 0
    for i, (topic, off, want) in enumerate(steps):
        snap = st.pack()
        applied, f = st.apply_ex(pay(T0 + i * MIN, 100), 0, off, topic=topic)
        assert applied == want, (i, topic, off)
        count += want
        assert f["cust_count_1h"] == count
        if not want:
            assert st.pack() == snap
    assert count == 6
    assert st.sources == ((rf.topic_id("B"), 0, 9), (rf.topic_id("A"), 0, 102))


def test_sources_mru_and_eviction():
    tid = rf.topic_id
    st = rf.CustomerState()
    t = [T0]

    def ap(topic, part, off):
        t[0] += MIN
        return st.apply_ex(pay(t[0], 100), part, off, topic=topic)[0]

    assert rf.STATE_SOURCES == 4
    assert ap("t1", 0, 10) and ap("t2", 0, 20) and ap("t3", 0, 30) and ap("t1", 1, 40)
    assert st.sources == ((tid("t1"), 1, 40), (tid("t3"), 0, 30), (tid("t2"), 0, 20),
                          (tid("t1"), 0, 10))
    assert ap("t2", 0, 21)  # to the front with its new offset
    assert st.sources == ((tid("t2"), 0, 21), (tid("t1"), 1, 40), (tid("t3"), 0, 30),
                          (tid("t1"), 0, 10))
    snap = st.pack()
    assert not ap("t1", 0, 10)  # a replay does not reorder
    assert st.pack() == snap
    assert ap("t5", 0, 50)  # a fifth source: t1/0, the least recently applied, is dropped
    assert st.sources == ((tid("t5"), 0, 50), (tid("t2"), 0, 21), (tid("t1"), 1, 40),
                          (tid("t3"), 0, 30))
    assert ap("t1", 0, 10)  # the dropped source's redelivery is applied again (the limit)
    assert st.sources == ((tid("t1"), 0, 10), (tid("t5"), 0, 50), (tid("t2"), 0, 21),
                          (tid("t1"), 1, 40))
    assert sum(st.cnt_5m) == 7
    assert not ap("t2", 0, 21) and not ap("t1", 1, 39) and not ap("t5", 0, 50)
    assert rf.CustomerState.unpack(st.pack()).sources == st.sources


if __name__ == "__main__":
    n = 0
    for name, fn in sorted(globals().items()):
        if name.startswith("test_") and callable(fn):
            fn()
            n += 1
    print("ok: %d tests" % n)
