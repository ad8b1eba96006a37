"""riskflow_features — reference implementation of include/riskflow/features.h in pure Python.

This module is the independent computation the C daemon's feature values are checked against
(end-to-end tests) and the feature code the models are trained on (train_fraud.py). It follows
the text of features.h; where that text leaves a choice open, the choice made here is written
next to the code as "CHOICE:" and listed in tools/train/README.md.

Standard library only (struct, math): usable from any Python 3.8+ without a venv.

    st = CustomerState()                       # a fresh state: no event applied
    feats = st.apply(payment, partition, offset, topic="txn.payments")
                                               # dict: feature name -> float
    buf = st.pack()                            # the 528-byte Redis value
    st2 = CustomerState.unpack(buf)            # parse a value (ValueError when malformed)

An event's source is (topic, partition): the replay guard keeps one offset watermark per
source (up to STATE_SOURCES of them), so `topic` is required — the input topic's name, as
the daemon sees it (topic_id(name) is what the state stores).

A payment is a dict with the field names of schemas/payment.avsc: amount_minor (int),
channel / kind (Avro enum symbol strings, or their index), event_time (Unix ms). Other
fields are ignored.
"""

import math
import struct

__all__ = [
    "FEATURES",
    "CHANNELS",
    "KINDS",
    "TILES_5M",
    "TILE_5M_MS",
    "TILES_1H",
    "TILE_1H_MS",
    "STATE_MAGIC",
    "STATE_VERSION",
    "STATE_SIZE",
    "STATE_SOURCES",
    "SECS_SINCE_LAST_CAP",
    "INT64_MIN",
    "CustomerState",
    "compute_features",
    "topic_id",
]

# Catalogue, in catalogue order (RF_FEATURE_LIST in features.h): the order of rf_feature_id.
FEATURES = (
    "amount",
    "log_amount",
    "cust_count_1h",
    "cust_sum_1h",
    "cust_count_24h",
    "cust_sum_24h",
    "cust_secs_since_last",
    "cust_amount_ratio_24h",
    "is_ecom",
    "is_night",
    "is_cash",
)

# Avro enum symbols, in symbol order (schemas/payment.avsc, enum order in event.h).
CHANNELS = ("POS", "ECOM", "ATM", "MOBILE")
KINDS = (
    "PURCHASE",
    "REFUND",
    "CASH_WITHDRAWAL",
    "TRANSFER_IN",
    "TRANSFER_OUT",
    "LOAN_REPAYMENT",
    "MISSED_PAYMENT",
)

TILES_5M = 12
TILE_5M_MS = 300000
TILES_1H = 24
TILE_1H_MS = 3600000
STATE_MAGIC = 0x31434652  # "RFC1" little-endian
STATE_VERSION = 2
STATE_SIZE = 528
STATE_SOURCES = 4  # replay watermarks kept per customer (RF_STATE_SOURCES)
SECS_SINCE_LAST_CAP = 2592000.0  # 30 days; also the value when there is no previous event
INT64_MIN = -(1 << 63)
INT64_MAX = (1 << 63) - 1
_U32_MAX = 0xFFFFFFFF

# Wire layout (little-endian, no padding):
#   0 u32 magic | 4 u16 version | 6 u16 n_sources (0..4)
#   8 i64 last_event_ms | 16 i64 head_5m | 24 i64 head_1h
#   32 sources[4] x 16 bytes: u32 topic_id, i32 partition, i64 offset (unused slots zero)
#   96 u32 cnt_5m[12] | 144 i64 sum_5m[12] | 240 u32 cnt_1h[24] | 336 i64 sum_1h[24]
_LAYOUT = struct.Struct(
    "<IHHqqq%s%dI%dq%dI%dq" % ("Iiq" * STATE_SOURCES, TILES_5M, TILES_5M, TILES_1H, TILES_1H)
)
assert _LAYOUT.size == STATE_SIZE
_FIELDS_HEAD = 6  # magic, version, n_sources, last_event_ms, head_5m, head_1h


def topic_id(topic):
    """rf_feature_topic_id: FNV-1a 32-bit over the bytes of the topic name (str as UTF-8)."""
    if isinstance(topic, str):
        topic = topic.encode("utf-8")
    elif not isinstance(topic, (bytes, bytearray)):
        raise TypeError("topic must be a name (str or bytes), not %r" % (topic,))
    h = 2166136261
    for b in topic:
        h = ((h ^ b) * 16777619) & 0xFFFFFFFF
    return h


def _sat_add(a, b):
    """a + b clamped to int64 (C's saturating add on sums)."""
    v = a + b
    if v > INT64_MAX:
        return INT64_MAX
    if v < INT64_MIN:
        return INT64_MIN
    return v


def _symbol_index(value, symbols, field):
    if isinstance(value, str):
        try:
            return symbols.index(value)
        except ValueError:
            raise ValueError("unknown %s symbol %r" % (field, value)) from None
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(symbols):
        return value
    raise ValueError("bad %s %r" % (field, value))


class _Window:
    """One tiled window: a ring of n tiles (count, sum in minor units) and a head.

    CHOICE: tile index ti lives in ring slot ti mod n (floor modulo). features.h says "a ring
    of N tiles" without naming the slot of a tile; the slot only shows in the packed bytes.
    """

    __slots__ = ("n", "tile_ms", "head", "cnt", "sum")

    def __init__(self, n, tile_ms):
        self.n = n
        self.tile_ms = tile_ms
        # CHOICE: a fresh state's head is INT64_MIN, "no tile yet" (features.h does not say;
        # src/features.c does the same). The first event is then "far ahead" and clears the
        # ring like any long gap. Only visible in the bytes of a packed fresh state.
        self.head = INT64_MIN
        self.cnt = [0] * n
        self.sum = [0] * n

    def add(self, event_ms, amount_minor):
        n = self.n
        ti = event_ms // self.tile_ms  # floor, as "floor(event_time_ms / tile_ms)"
        head = self.head
        if ti > head:
            # The tiles in (head, ti] move out of the window: zero their slots (all of them
            # when the jump is N tiles or more), then ti becomes the head.
            if ti - head >= n:
                for s in range(n):
                    self.cnt[s] = 0
                    self.sum[s] = 0
            else:
                for t in range(head + 1, ti + 1):
                    s = t % n
                    self.cnt[s] = 0
                    self.sum[s] = 0
            self.head = ti
        elif ti <= head - n:
            return False  # too late for this window (the event still counts as applied)
        s = ti % n
        # Absurd values saturate instead of overflowing (u32 counts, i64 sums), as in
        # src/features.c; unreachable with real traffic.
        if self.cnt[s] < _U32_MAX:
            self.cnt[s] += 1
        self.sum[s] = _sat_add(self.sum[s], amount_minor)
        return True

    def totals(self):
        """(count, sum in minor units) over the ring: the events with tile in (head-N, head]."""
        total = 0
        for v in self.sum:
            total = _sat_add(total, v)
        return sum(self.cnt), total


def compute_features(amount_minor, channel, kind, event_time_ms, cnt_1h, sum_1h_minor,
                     cnt_24h, sum_24h_minor, prev_last_event_ms):
    """The catalogue for one event, given the window totals and the previous last_event_ms.

    Arithmetic is written the way C does it in double precision, so values match bit for bit:
      amount      = (double)amount_minor / 100.0
      cust_sum_*  = (double)(ring total in minor units) / 100.0
      secs        = (double)(event_time - last_event_ms) / 1000.0, clamped to [0, cap]
      ratio       = amount / (cust_sum_24h / cust_count_24h), 1.0 when that mean is 0
    """
    amount = float(amount_minor) / 100.0
    # features.h: log1p(max(amount, 0)), so a reversal never feeds NaN to a model.
    log_amount = math.log1p(amount if amount > 0.0 else 0.0)

    count_1h = float(cnt_1h)
    sum_1h = float(sum_1h_minor) / 100.0
    count_24h = float(cnt_24h)
    sum_24h = float(sum_24h_minor) / 100.0

    if prev_last_event_ms == INT64_MIN:
        secs = SECS_SINCE_LAST_CAP
    else:
        # ((double)t - (double)prev) / 1000.0: identical to the exact difference for any
        # time below 2^53 ms, and what C can compute without int64 overflow.
        secs = (float(event_time_ms) - float(prev_last_event_ms)) / 1000.0
        if secs < 0.0:
            secs = 0.0
        elif secs > SECS_SINCE_LAST_CAP:
            secs = SECS_SINCE_LAST_CAP

    # CHOICE: with an empty 24 h ring (count 0) the mean is taken as 0, so the ratio is 1 (in C
    # a naive 0.0/0.0 would be NaN). It cannot happen after an applied event at a time >= 0.
    mean_24h = sum_24h / count_24h if count_24h != 0.0 else 0.0
    ratio = 1.0 if mean_24h == 0.0 else amount / mean_24h

    hour_utc = (event_time_ms // TILE_1H_MS) % 24  # floor division: the UTC hour of the day
    return {
        "amount": amount,
        "log_amount": log_amount,
        "cust_count_1h": count_1h,
        "cust_sum_1h": sum_1h,
        "cust_count_24h": count_24h,
        "cust_sum_24h": sum_24h,
        "cust_secs_since_last": secs,
        "cust_amount_ratio_24h": ratio,
        "is_ecom": 1.0 if channel == 1 else 0.0,
        "is_night": 1.0 if hour_utc < 6 else 0.0,
        "is_cash": 1.0 if kind == 2 else 0.0,
    }


class _Unpack:
    """`CustomerState.unpack(buf)` returns a new state; `st.unpack(buf)` loads into st."""

    def __get__(self, obj, cls):
        if obj is None:
            def unpack_new(buf):
                st = cls()
                st._load(buf)
                return st
            unpack_new.__doc__ = "Parse a stored value into a new CustomerState."
            return unpack_new

        def unpack_into(buf):
            obj._load(buf)
            return obj
        unpack_into.__doc__ = "Parse a stored value into this state (returns it)."
        return unpack_into


class CustomerState:
    """One customer's rolling state (struct rf_cust_state) and the feature math over it."""

    __slots__ = ("_sources", "last_event_ms", "w5m", "w1h", "applied")

    def __init__(self):
        # Replay watermarks, most recently applied first: [topic_id, partition, offset].
        self._sources = []
        self.last_event_ms = INT64_MIN
        self.w5m = _Window(TILES_5M, TILE_5M_MS)
        self.w1h = _Window(TILES_1H, TILE_1H_MS)
        self.applied = None  # result of the last apply(): True applied, False replay

    # Read-only views of the struct fields, for tests and debugging.
    @property
    def n_sources(self):
        return len(self._sources)

    @property
    def sources(self):
        """((topic_id, partition, offset), ...), most recently applied first."""
        return tuple(tuple(s) for s in self._sources)

    @property
    def head_5m(self):
        return self.w5m.head

    @property
    def head_1h(self):
        return self.w1h.head

    @property
    def cnt_5m(self):
        return tuple(self.w5m.cnt)

    @property
    def sum_5m(self):
        return tuple(self.w5m.sum)

    @property
    def cnt_1h(self):
        return tuple(self.w1h.cnt)

    @property
    def sum_1h(self):
        return tuple(self.w1h.sum)

    def _find_source(self, tid, partition):
        for i, s in enumerate(self._sources):
            if s[0] == tid and s[1] == partition:
                return i
        return -1

    def is_replay(self, partition, offset, *, topic):
        """An event from a held source (topic, partition) at or below its offset."""
        i = self._find_source(topic_id(topic), int(partition))
        return i >= 0 and int(offset) <= self._sources[i][2]

    def apply_ex(self, payment, partition, offset, *, topic):
        """Like rf_features_apply: (applied, features). applied is False for a replay (the
        state is unchanged and the features come from the state as it stands).

        topic: the input topic's name; (topic, partition) is the event's source."""
        amount_minor = int(payment["amount_minor"])
        channel = _symbol_index(payment["channel"], CHANNELS, "channel")
        kind = _symbol_index(payment["kind"], KINDS, "kind")
        t = int(payment["event_time"])
        tid = topic_id(topic)
        partition = int(partition)
        offset = int(offset)

        prev_last = self.last_event_ms
        i = self._find_source(tid, partition)
        if i >= 0 and offset <= self._sources[i][2]:
            applied = False
        else:
            applied = True
            self.w5m.add(t, amount_minor)
            self.w1h.add(t, amount_minor)
            # The source moves to the front (most recently applied first) with this offset;
            # a new one is inserted there, and beyond STATE_SOURCES the last is dropped (its
            # redeliveries would then be applied again: features.h, "Replays").
            if i >= 0:
                del self._sources[i]
            self._sources.insert(0, [tid, partition, offset])
            del self._sources[STATE_SOURCES:]
            # CHOICE: last_event_ms only moves forward (max), so a late event does not pull
            # it back; features.h does not say whether a late event sets it.
            if prev_last == INT64_MIN or t > prev_last:
                self.last_event_ms = t
        self.applied = applied

        c1, s1 = self.w5m.totals()
        c24, s24 = self.w1h.totals()
        # For a replay, "previous last_event_ms" is the state's as it stands (prev_last is
        # unchanged since nothing was applied).
        feats = compute_features(amount_minor, channel, kind, t, c1, s1, c24, s24, prev_last)
        return applied, feats

    def apply(self, payment, partition, offset, *, topic):
        """Apply payment read from topic's (partition, offset); returns dict feature name ->
        float."""
        return self.apply_ex(payment, partition, offset, topic=topic)[1]

    def vector(self, feats, names=FEATURES):
        """The values of feats in the order of names (a model's feature list)."""
        return [feats[n] for n in names]

    def pack(self):
        """The 528-byte little-endian Redis value (rf_cust_state_pack)."""
        src = []
        for k in range(STATE_SOURCES):
            src.extend(self._sources[k] if k < len(self._sources) else (0, 0, 0))
        return _LAYOUT.pack(
            STATE_MAGIC, STATE_VERSION, len(self._sources),
            self.last_event_ms, self.w5m.head, self.w1h.head,
            *src,
            *self.w5m.cnt, *self.w5m.sum, *self.w1h.cnt, *self.w1h.sum,
        )

    unpack = _Unpack()

    def _load(self, buf):
        buf = bytes(buf)
        if len(buf) != STATE_SIZE:
            raise ValueError("customer state: %d bytes, want %d" % (len(buf), STATE_SIZE))
        v = _LAYOUT.unpack(buf)
        if v[0] != STATE_MAGIC:
            raise ValueError("customer state: bad magic 0x%08x" % v[0])
        if v[1] != STATE_VERSION:
            raise ValueError("customer state: unsupported version %d" % v[1])
        n = v[2]
        if n > STATE_SOURCES:
            raise ValueError("customer state: %d sources, at most %d" % (n, STATE_SOURCES))
        # Slots at or past n_sources are not read (written as 0).
        i = _FIELDS_HEAD
        sources = [list(v[i + 3 * k:i + 3 * k + 3]) for k in range(n)]
        i += 3 * STATE_SOURCES
        cnt_5m = list(v[i:i + TILES_5M]); i += TILES_5M
        sum_5m = list(v[i:i + TILES_5M]); i += TILES_5M
        cnt_1h = list(v[i:i + TILES_1H]); i += TILES_1H
        sum_1h = list(v[i:i + TILES_1H])
        self._sources = sources
        self.last_event_ms = v[3]
        self.w5m.head, self.w1h.head = v[4], v[5]
        self.w5m.cnt, self.w5m.sum = cnt_5m, sum_5m
        self.w1h.cnt, self.w1h.sum = cnt_1h, sum_1h
        self.applied = None

    def __eq__(self, other):
        if not isinstance(other, CustomerState):
            return NotImplemented
        return self.pack() == other.pack()

    __hash__ = None

    def __repr__(self):
        c1, s1 = self.w5m.totals()
        c24, s24 = self.w1h.totals()
        return ("CustomerState(sources=%s, last_event_ms=%d, head_5m=%d, head_1h=%d, "
                "1h=%d/%d, 24h=%d/%d)" % (["0x%08x/%d@%d" % tuple(s) for s in self._sources],
                                          self.last_event_ms, self.w5m.head, self.w1h.head,
                                          c1, s1, c24, s24))
