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
    applied, f = st.apply_ex(pay(T0 + 13 * HOUR, 1234), 0, 0)
    assert applied
    assert list(f) == list(rf.FEATURES)
    assert f["amount"] == 12.34
    assert f["log_amount"] == math.log1p(12.34)
    assert f["cust_count_1h"] == 1.0 and f["cust_sum_1h"] == 12.34
    assert f["cust_count_24h"] == 1.0 and f["cust_sum_24h"] == 12.34
    assert f["cust_secs_since_last"] == rf.SECS_SINCE_LAST_CAP  # no previous event
    assert f["cust_amount_ratio_24h"] == 1.0  # 12.34 / (12.34 / 1)
    assert f["is_ecom"] == 0.0 and f["is_night"] == 0.0 and f["is_cash"] == 0.0
    assert st.last_partition == 0 and st.last_offset == 0
    assert st.last_event_ms == T0 + 13 * HOUR
    assert st.head_5m == (T0 + 13 * HOUR) // rf.TILE_5M_MS
    assert st.head_1h == (T0 + 13 * HOUR) // rf.TILE_1H_MS


def test_flags():
    st = rf.CustomerState()
    f = st.apply(pay(T0 + 5 * HOUR + 59 * MIN, channel="ECOM"), 0, 0)
    assert f["is_ecom"] == 1.0 and f["is_night"] == 1.0 and f["is_cash"] == 0.0
    f = st.apply(pay(T0 + 6 * HOUR, channel="ATM", kind="CASH_WITHDRAWAL"), 0, 1)
    assert f["is_ecom"] == 0.0 and f["is_night"] == 0.0 and f["is_cash"] == 1.0
    # is_night uses the UTC hour of the day, whatever the day
    f = st.apply(pay(T0 + 3 * 24 * HOUR + 2 * HOUR, channel="MOBILE"), 0, 2)
    assert f["is_night"] == 1.0 and f["is_ecom"] == 0.0
    # enum given by index instead of symbol
    f = st.apply(pay(T0 + 4 * 24 * HOUR + 12 * HOUR, channel=1, kind=2), 0, 3)
    assert f["is_ecom"] == 1.0 and f["is_cash"] == 1.0


def test_two_events_same_5m_tile():
    st = rf.CustomerState()
    t1 = T0 + 10 * HOUR + 60000  # 10:01
    t2 = T0 + 10 * HOUR + 240000  # 10:04, same 5-minute tile
    st.apply(pay(t1, 1000), 0, 0)
    f = st.apply(pay(t2, 3000), 0, 1)
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
    st.apply(pay(t1, 1000), 0, 0)
    f = st.apply(pay(t1 + 61 * MIN, 2000), 0, 1)  # 11:03, tile 11:00: 12 tiles later
    assert f["cust_count_1h"] == 1.0 and f["cust_sum_1h"] == 20.0
    assert f["cust_count_24h"] == 2.0 and f["cust_sum_24h"] == 30.0
    assert f["cust_secs_since_last"] == 3660.0
    assert f["cust_amount_ratio_24h"] == 20.0 / (30.0 / 2.0)


def test_1h_window_is_tiles_not_exact_minutes():
    # 10:00:00 and 10:59:59: 11 tiles apart -> still inside; 11:00 tile is 12 apart -> out.
    st = rf.CustomerState()
    st.apply(pay(T0 + 10 * HOUR, 500), 0, 0)
    f = st.apply(pay(T0 + 11 * HOUR - 1000, 700), 0, 1)
    assert f["cust_count_1h"] == 2.0
    f = st.apply(pay(T0 + 11 * HOUR + 1, 900), 0, 2)
    assert f["cust_count_1h"] == 2.0 and f["cust_sum_1h"] == 16.0  # 10:59:59 and 11:00


def test_24h_window_moves_and_clears():
    st = rf.CustomerState()
    st.apply(pay(T0 + 1 * HOUR, 100), 0, 0)
    st.apply(pay(T0 + 5 * HOUR, 200), 0, 1)
    f = st.apply(pay(T0 + 24 * HOUR + 30 * MIN, 400), 0, 2)  # hour tile 24: tile 0 is out
    assert f["cust_count_24h"] == 3.0 and f["cust_sum_24h"] == 7.0
    f = st.apply(pay(T0 + 25 * HOUR + 30 * MIN, 800), 0, 3)  # tile 25: tile 1 drops
    assert f["cust_count_24h"] == 3.0 and f["cust_sum_24h"] == 14.0
    f = st.apply(pay(T0 + 100 * HOUR, 1600), 0, 4)  # a jump of > 24 tiles: everything out
    assert f["cust_count_24h"] == 1.0 and f["cust_sum_24h"] == 16.0
    assert sum(st.cnt_1h) == 1 and sum(st.cnt_5m) == 1


def test_late_event_inside_window():
    st = rf.CustomerState()
    t1 = T0 + 10 * HOUR + 30 * MIN  # 10:30
    st.apply(pay(t1, 1000), 0, 0)
    late = t1 - 20 * MIN  # 10:10: 4 tiles behind the 5m head, same hour tile
    applied, f = st.apply_ex(pay(late, 3000), 0, 1)
    assert applied
    assert f["cust_count_1h"] == 2.0 and f["cust_sum_1h"] == 40.0
    assert f["cust_count_24h"] == 2.0 and f["cust_sum_24h"] == 40.0
    assert f["cust_secs_since_last"] == 0.0  # negative gap clamped to 0
    assert st.head_5m == t1 // rf.TILE_5M_MS  # the head does not move back
    assert st.last_event_ms == t1  # CHOICE: last_event_ms never moves back
    slot = (late // rf.TILE_5M_MS) % rf.TILES_5M
    assert st.cnt_5m[slot] == 1 and st.sum_5m[slot] == 3000
    # the next in-order event measures its gap from 10:30, not 10:10
    f = st.apply(pay(t1 + 5 * MIN, 500), 0, 2)
    assert f["cust_secs_since_last"] == 300.0
    assert f["cust_count_1h"] == 3.0


def test_too_late_event():
    st = rf.CustomerState()
    t1 = T0 + 10 * HOUR + 30 * MIN  # 10:30
    st.apply(pay(t1, 1000), 0, 0)
    # 08:30: too late for the 1 h window (24 five-minute tiles behind), inside the 24 h one
    t_late = t1 - 2 * HOUR
    before = st.pack()
    applied, f = st.apply_ex(pay(t_late, 5000), 0, 1)
    assert applied  # it still counts as applied
    assert st.last_offset == 1
    assert f["cust_count_1h"] == 1.0 and f["cust_sum_1h"] == 10.0  # not in the 1 h ring
    assert f["cust_count_24h"] == 2.0 and f["cust_sum_24h"] == 60.0
    assert f["cust_amount_ratio_24h"] == 50.0 / (60.0 / 2.0)
    assert f["cust_secs_since_last"] == 0.0
    assert st.pack() != before
    # 2 days earlier: too late for both windows; only (partition, offset) move
    b2 = st.pack()
    applied, f = st.apply_ex(pay(t1 - 48 * HOUR, 7000), 0, 2)
    assert applied
    assert f["cust_count_1h"] == 1.0 and f["cust_count_24h"] == 2.0
    assert f["cust_sum_24h"] == 60.0
    assert f["cust_amount_ratio_24h"] == 70.0 / (60.0 / 2.0)
    assert st.last_offset == 2
    s2 = rf.CustomerState.unpack(b2)
    s2.last_offset = 2
    assert s2 == st  # nothing but the offset changed


def test_tile_boundary_too_late_exactly_n_tiles_back():
    st = rf.CustomerState()
    t1 = T0 + 10 * HOUR  # 5m tile h
    st.apply(pay(t1, 100), 0, 0)
    # tile h-12 is "ti <= head - N": too late; tile h-11 is inside
    f = st.apply(pay(t1 - 12 * 5 * MIN, 100), 0, 1)
    assert f["cust_count_1h"] == 1.0
    f = st.apply(pay(t1 - 11 * 5 * MIN, 100), 0, 2)
    assert f["cust_count_1h"] == 2.0


def test_replay_leaves_state_unchanged():
    st = rf.CustomerState()
    t1 = T0 + 9 * HOUR
    st.apply(pay(t1, 1000), 3, 100)
    f2 = st.apply(pay(t1 + 10 * MIN, 2500), 3, 101)
    snap = st.pack()
    # same offset again, and a lower offset, on the same partition: not applied
    for off, t, amt in ((101, t1 + 10 * MIN, 2500), (100, t1, 1000), (5, t1 + HOUR, 9999)):
        applied, f = st.apply_ex(pay(t, amt), 3, off)
        assert not applied
        assert st.applied is False
        assert st.pack() == snap
        # features from the state as it stands
        assert f["cust_count_1h"] == 2.0 and f["cust_sum_1h"] == 35.0
        assert f["cust_count_24h"] == 2.0
        assert f["amount"] == amt / 100
    # the replay of the last event: its window features equal the first time's
    applied, f = st.apply_ex(pay(t1 + 10 * MIN, 2500), 3, 101)
    for k in ("amount", "cust_count_1h", "cust_sum_1h", "cust_count_24h", "cust_sum_24h",
              "cust_amount_ratio_24h"):
        assert f[k] == f2[k]
    assert f["cust_secs_since_last"] == 0.0  # from the state as it stands (f2 had 600)
    assert f2["cust_secs_since_last"] == 600.0
    # another partition, even at a lower offset, is applied
    applied, f = st.apply_ex(pay(t1 + 11 * MIN, 100), 4, 0)
    assert applied and f["cust_count_1h"] == 3.0
    assert st.last_partition == 4 and st.last_offset == 0


def test_secs_since_last_clamped_to_30_days():
    st = rf.CustomerState()
    st.apply(pay(T0, 100), 0, 0)
    f = st.apply(pay(T0 + 40 * 24 * HOUR, 100), 0, 1)
    assert f["cust_secs_since_last"] == rf.SECS_SINCE_LAST_CAP
    f = st.apply(pay(T0 + 40 * 24 * HOUR + 1500, 100), 0, 2)
    assert f["cust_secs_since_last"] == 1.5


def test_ratio_mean_zero_and_amount_zero():
    st = rf.CustomerState()
    f = st.apply(pay(T0 + HOUR, 0), 0, 0)
    assert f["amount"] == 0.0 and f["log_amount"] == 0.0
    assert f["cust_amount_ratio_24h"] == 1.0  # mean 0 -> 1
    f = st.apply(pay(T0 + HOUR + MIN, 500), 0, 1)
    assert f["cust_amount_ratio_24h"] == 5.0 / (5.0 / 2.0)


def test_sums_are_minor_totals_over_100():
    # 0.1 + 0.2 in doubles is not 0.3; the sum is (10 + 20) / 100.
    st = rf.CustomerState()
    st.apply(pay(T0 + HOUR, 10), 0, 0)
    f = st.apply(pay(T0 + HOUR + 1, 20), 0, 1)
    assert f["cust_sum_1h"] == 0.3 and f["cust_sum_24h"] == 0.3


def test_pack_unpack_round_trip():
    st = rf.CustomerState()
    t = T0 + 7 * HOUR
    for i in range(40):
        st.apply(pay(t + i * 7 * MIN, 100 + 37 * i), 2, 1000 + i)
    buf = st.pack()
    assert isinstance(buf, bytes) and len(buf) == rf.STATE_SIZE == 480
    assert struct.unpack_from("<I", buf, 0)[0] == 0x31434652
    assert buf[:4] == b"RFC1"
    assert struct.unpack_from("<HH", buf, 4) == (1, 0)
    assert struct.unpack_from("<ii", buf, 8) == (2, 0)
    assert struct.unpack_from("<qqqq", buf, 16) == (
        1039, t + 39 * 7 * MIN, (t + 39 * 7 * MIN) // rf.TILE_5M_MS,
        (t + 39 * 7 * MIN) // rf.TILE_1H_MS)
    assert list(struct.unpack_from("<12I", buf, 48)) == list(st.cnt_5m)
    assert list(struct.unpack_from("<12q", buf, 96)) == list(st.sum_5m)
    assert list(struct.unpack_from("<24I", buf, 192)) == list(st.cnt_1h)
    assert list(struct.unpack_from("<24q", buf, 288)) == list(st.sum_1h)
    st2 = rf.CustomerState.unpack(buf)
    assert st2.pack() == buf and st2 == st
    # an unpacked state continues exactly like the original
    nxt = pay(t + 41 * 7 * MIN, 4242)
    assert st2.apply(nxt, 2, 1040) == st.apply(nxt, 2, 1040)
    assert st2.pack() == st.pack()
    # in-place form
    st3 = rf.CustomerState()
    assert st3.unpack(buf) is st3 and st3.pack() == buf


def test_fresh_state_pack():
    buf = rf.CustomerState().pack()
    assert len(buf) == 480
    assert struct.unpack_from("<iiqqqq", buf, 8) == (-1, 0, -1, rf.INT64_MIN, rf.INT64_MIN,
                                                     rf.INT64_MIN)
    assert buf[48:] == bytes(480 - 48)


def test_unpack_rejects_malformed():
    good = rf.CustomerState().pack()
    for bad in (good[:-1], good + b"\0", b"",
                b"XXXX" + good[4:],
                good[:4] + struct.pack("<H", 2) + good[6:]):
        try:
            rf.CustomerState.unpack(bad)
        except ValueError:
            pass
        else:
            raise AssertionError("accepted a malformed value")


if __name__ == "__main__":
    n = 0
    for name, fn in sorted(globals().items()):
        if name.startswith("test_") and callable(fn):
            fn()
            n += 1
    print("ok: %d tests" % n)
