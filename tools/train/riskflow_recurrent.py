"""riskflow_recurrent — Python reference of the market job: the recurrent model and the bars.

Written from docs/MODELS.md §3 (the `riskflow.recurrent.v1` safetensors file, the GRU/LSTM
step and the head) and docs/ENGINE.md §5 "market" (time and trade-count bars, the job's state
bytes on the instrument). numpy + standard library; no torch.

    m = load_model("deploy/models/market_gru.safetensors")      # ValueError naming the problem
    h, c, y = m.step(x_raw, h, c)            # one step for a batch of rows (float32)
    er_bps, p_up = m.head(h)

    eng = rff.Engine(decl, job_state={"market": ("instrument", 1, job_state_bytes(m))})
    job = MarketJob(eng, m, bar_type="time", bar_ms=60000)
    for sig in job.process("riskflow.Trade", record, topic, partition, offset): ...

Choices where the docs are silent are marked CHOICE: and listed in tools/train/README.md.
"""

import json
import math
import struct

import numpy as np

__all__ = [
    "FORMAT",
    "fnv1a64",
    "read_safetensors",
    "write_safetensors",
    "RecurrentModel",
    "load_model",
    "sigmoid32",
    "gru_step",
    "lstm_step",
    "JobState",
    "job_state_bytes",
    "MarketJob",
    "JOB_NAME",
    "JOB_VERSION",
]

FORMAT = "riskflow.recurrent.v1"
JOB_NAME = "market"
JOB_VERSION = 1
MAX_HEADER = 100 * 1024 * 1024
_DTYPES = {"F32": np.dtype("<f4"), "F64": np.dtype("<f8")}
U32_MAX = 0xFFFFFFFF


def fnv1a64(data):
    """FNV-1a 64-bit (offset basis 14695981039346656037, prime 1099511628211)."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    h = 14695981039346656037
    for b in data:
        h = ((h ^ b) * 1099511628211) & 0xFFFFFFFFFFFFFFFF
    return h


# ---- safetensors --------------------------------------------------------------------------

def read_safetensors(path_or_bytes):
    """(tensors {name: ndarray (native float, copied)}, metadata {str: str}) from a file.

    Checks what MODELS.md §3 relies on: header length inside the file, a JSON object, each
    tensor's dtype F32/F64, shape x itemsize = its byte range, ranges inside the data and not
    overlapping. Raises ValueError naming the problem."""
    if isinstance(path_or_bytes, (bytes, bytearray, memoryview)):
        buf = bytes(path_or_bytes)
    else:
        with open(path_or_bytes, "rb") as f:
            buf = f.read()
    if len(buf) < 8:
        raise ValueError("truncated: no header length")
    (n,) = struct.unpack_from("<Q", buf, 0)
    if n > MAX_HEADER or 8 + n > len(buf):
        raise ValueError("header length %d beyond the file (%d bytes)" % (n, len(buf)))
    try:
        header = json.loads(buf[8:8 + n].decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise ValueError("header is not JSON: %s" % e) from None
    if not isinstance(header, dict):
        raise ValueError("header is not a JSON object")
    data = memoryview(buf)[8 + n:]
    meta = header.pop("__metadata__", None) or {}
    if not isinstance(meta, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
        raise ValueError("__metadata__ is not a map of strings")
    tensors, ranges = {}, []
    for name, info in header.items():
        if not isinstance(info, dict):
            raise ValueError("tensor %s: not an object" % name)
        dt = _DTYPES.get(info.get("dtype"))
        if dt is None:
            raise ValueError("tensor %s: dtype %r (F32 or F64 expected)" % (name, info.get("dtype")))
        shape, offs = info.get("shape"), info.get("data_offsets")
        if (not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape)
                or not isinstance(offs, list) or len(offs) != 2
                or not all(isinstance(o, int) for o in offs)):
            raise ValueError("tensor %s: bad shape or data_offsets" % name)
        b, e = offs
        if not 0 <= b <= e <= len(data):
            raise ValueError("tensor %s: data_offsets [%d, %d] outside the data (%d bytes)"
                             % (name, b, e, len(data)))
        if math.prod(shape) * dt.itemsize != e - b:
            raise ValueError("tensor %s: shape %s does not fill [%d, %d]" % (name, shape, b, e))
        ranges.append((b, e, name))
        tensors[name] = np.frombuffer(data[b:e], dtype=dt).reshape(shape).astype(dt.newbyteorder("="))
    ranges.sort()
    for (b0, e0, n0), (b1, e1, n1) in zip(ranges, ranges[1:]):
        if b1 < e0:
            raise ValueError("tensors %s and %s overlap" % (n0, n1))
    return tensors, dict(meta)


def write_safetensors(path, tensors, metadata=None):
    """Write float32/float64 arrays as safetensors, laid out like the `safetensors` package:
    tensors in name order, header padded with spaces to a multiple of 8. Returns the bytes."""
    header = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    blobs, off = [], 0
    for name in sorted(tensors):
        a = np.asarray(tensors[name])
        if a.dtype == np.float32:
            code, a = "F32", a.astype("<f4")
        elif a.dtype == np.float64:
            code, a = "F64", a.astype("<f8")
        else:
            raise ValueError("tensor %s: dtype %s (float32 or float64 only)" % (name, a.dtype))
        raw = np.ascontiguousarray(a).tobytes()
        header[name] = {"dtype": code, "shape": list(a.shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    hj = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hj += b" " * (-len(hj) % 8)
    out = struct.pack("<Q", len(hj)) + hj + b"".join(blobs)
    if path is not None:
        with open(path, "wb") as f:
            f.write(out)
    return out


# ---- the model ----------------------------------------------------------------------------

def sigmoid32(x):
    """Logistic function in float32, without overflow: 1/(1+e^-x) for x >= 0, e^x/(1+e^x) else."""
    x = np.asarray(x, dtype=np.float32)
    e = np.exp(-np.abs(x))
    one = np.float32(1)
    return np.where(x >= 0, one / (one + e), e / (one + e)).astype(np.float32)


def gru_step(x, h, w_ih, w_hh, b_ih, b_hh):
    """One PyTorch GRU step (MODELS.md §3) for rows x [B, F], h [B, H]; float32."""
    H = h.shape[1]
    gi = x @ w_ih.T + b_ih
    gh = h @ w_hh.T + b_hh
    r = sigmoid32(gi[:, :H] + gh[:, :H])
    z = sigmoid32(gi[:, H:2 * H] + gh[:, H:2 * H])
    n = np.tanh(gi[:, 2 * H:] + r * gh[:, 2 * H:])
    return ((np.float32(1) - z) * n + z * h).astype(np.float32)


def lstm_step(x, h, c, w_ih, w_hh, b_ih, b_hh):
    """One PyTorch LSTM step (MODELS.md §3): returns (h', c'); float32."""
    H = h.shape[1]
    g = (x @ w_ih.T + b_ih) + (h @ w_hh.T + b_hh)
    i = sigmoid32(g[:, :H])
    f = sigmoid32(g[:, H:2 * H])
    gg = np.tanh(g[:, 2 * H:3 * H])
    o = sigmoid32(g[:, 3 * H:])
    c2 = (f * c + i * gg).astype(np.float32)
    return (o * np.tanh(c2)).astype(np.float32), c2


class RecurrentModel:
    """A `riskflow.recurrent.v1` model (MODELS.md §3), float32 throughout."""

    def __init__(self, tensors, metadata):
        meta = dict(metadata)
        if meta.get("format") != FORMAT:
            raise ValueError("format %r, expected %s" % (meta.get("format"), FORMAT))
        self.cell = meta.get("cell")
        if self.cell not in ("gru", "lstm"):
            raise ValueError("cell %r (gru or lstm)" % self.cell)
        for k in ("name", "version", "features", "horizon_bars"):
            if not meta.get(k):
                raise ValueError("metadata %s missing" % k)
        self.name, self.version = meta["name"], meta["version"]
        if len(self.version.encode("utf-8")) > 127:
            raise ValueError("version longer than 127 bytes")
        self.features = meta["features"].split(",")
        if len(set(self.features)) != len(self.features) or not all(self.features):
            raise ValueError("features: empty or repeated name")
        hb = meta["horizon_bars"]
        if not hb.isdigit() or int(hb) < 1:
            raise ValueError("horizon_bars %r (an integer >= 1)" % hb)
        self.horizon_bars = int(hb)
        # the bars it was trained on (optional; MODELS.md §3): (type, ms or trades) or None
        self.bars = None
        if "bar_type" in meta:
            bt = meta["bar_type"]
            key = {"time": "bar_ms", "trades": "bar_trades"}.get(bt)
            if key is None:
                raise ValueError("bar_type %r (time or trades)" % bt)
            bl = meta.get(key, "")
            if not bl.isdigit() or not 1 <= int(bl) <= 86400000:
                raise ValueError("%s %r (an integer >= 1 with bar_type %s)" % (key, bl, bt))
            self.bars = (bt, int(bl))
        self.metadata = meta
        F = len(self.features)
        if not 1 <= F <= 64:
            raise ValueError("%d features (1..64)" % F)
        G = 3 if self.cell == "gru" else 4
        need = ("rnn.weight_ih_l0", "rnn.weight_hh_l0", "rnn.bias_ih_l0", "rnn.bias_hh_l0",
                "head.weight", "head.bias", "scaler.mean", "scaler.scale")
        for k in need:
            if k not in tensors:
                raise ValueError("tensor %s missing" % k)
        w_hh = tensors["rnn.weight_hh_l0"]
        if w_hh.ndim != 2 or w_hh.shape[0] % G or w_hh.shape[0] // G != w_hh.shape[1]:
            raise ValueError("rnn.weight_hh_l0 shape %s" % (list(w_hh.shape),))
        H = w_hh.shape[1]
        if not 1 <= H <= 256:
            raise ValueError("hidden size %d (1..256)" % H)
        shapes = {"rnn.weight_ih_l0": (G * H, F), "rnn.weight_hh_l0": (G * H, H),
                  "rnn.bias_ih_l0": (G * H,), "rnn.bias_hh_l0": (G * H,),
                  "head.weight": (2, H), "head.bias": (2,), "scaler.mean": (F,),
                  "scaler.scale": (F,)}
        t = {}
        for k, shp in shapes.items():
            a = np.asarray(tensors[k])
            if tuple(a.shape) != shp:
                raise ValueError("tensor %s shape %s, expected %s" % (k, list(a.shape), list(shp)))
            a = a.astype(np.float32)
            if not np.all(np.isfinite(a)):
                raise ValueError("tensor %s: not finite" % k)
            t[k] = a
        if np.any(t["scaler.scale"] == 0):
            raise ValueError("scaler.scale has a zero")
        self.H, self.F = H, F
        self.w_ih, self.w_hh = t["rnn.weight_ih_l0"], t["rnn.weight_hh_l0"]
        self.b_ih, self.b_hh = t["rnn.bias_ih_l0"], t["rnn.bias_hh_l0"]
        self.head_w, self.head_b = t["head.weight"], t["head.bias"]
        self.mean, self.scale = t["scaler.mean"], t["scaler.scale"]
        self.signature = fnv1a64(self.version)

    def standardise(self, x):
        # CHOICE: the raw (double) feature value is rounded to float32 first, then
        # (x - mean) / scale in float32, as PyTorch does on a float32 input tensor.
        x = np.asarray(x, dtype=np.float32)
        return ((x - self.mean) / self.scale).astype(np.float32)

    def step(self, x_raw, h, c=None):
        """One step for rows x_raw [B, F] (raw features); returns (h', c' or None, y [B, 2])."""
        x = self.standardise(np.atleast_2d(x_raw))
        h = np.asarray(h, dtype=np.float32).reshape(x.shape[0], self.H)
        if self.cell == "gru":
            h2, c2 = gru_step(x, h, self.w_ih, self.w_hh, self.b_ih, self.b_hh), None
        else:
            c = np.asarray(c, dtype=np.float32).reshape(x.shape[0], self.H)
            h2, c2 = lstm_step(x, h, c, self.w_ih, self.w_hh, self.b_ih, self.b_hh)
        return h2, c2, self.raw_head(h2)

    def raw_head(self, h):
        return (np.asarray(h, np.float32) @ self.head_w.T + self.head_b).astype(np.float32)

    def head(self, h):
        """(expected return in bps [B], probability of an up move [B]) from hidden states."""
        y = self.raw_head(h)
        return y[:, 0], sigmoid32(y[:, 1])

    def run(self, xs, h0=None, c0=None):
        """Run sequences xs [N, L, F] from zeros (or h0/c0); returns (h [N,L,H], c or None, y [N,L,2])
        with y[..., 1] the probability (sigmoid applied)."""
        xs = np.asarray(xs)
        N, L, _ = xs.shape
        h = np.zeros((N, self.H), np.float32) if h0 is None else np.asarray(h0, np.float32)
        c = None
        if self.cell == "lstm":
            c = np.zeros((N, self.H), np.float32) if c0 is None else np.asarray(c0, np.float32)
        hs = np.empty((N, L, self.H), np.float32)
        cs = np.empty((N, L, self.H), np.float32) if c is not None else None
        ys = np.empty((N, L, 2), np.float32)
        for k in range(L):
            h, c, y = self.step(xs[:, k], h, c)
            hs[:, k] = h
            if cs is not None:
                cs[:, k] = c
            ys[:, k, 0] = y[:, 0]
            ys[:, k, 1] = sigmoid32(y[:, 1])
        return hs, cs, ys


def load_model(path_or_bytes):
    tensors, meta = read_safetensors(path_or_bytes)
    return RecurrentModel(tensors, meta)


# ---- the job's state on the instrument ----------------------------------------------------

_JS_HEAD = struct.Struct("<qIIQ")


def job_state_bytes(model):
    """Size of the market job's state (ENGINE.md §5): 24 + 4H (GRU) or 24 + 8H (LSTM)."""
    return _JS_HEAD.size + 4 * model.H * (2 if model.cell == "lstm" else 1)


class JobState:
    """The market job's bytes on an instrument (version 1), ENGINE.md §5:
    i64 bar, u32 events in the open bar, u32 trades in it, u64 model signature, f32 h[H],
    (LSTM) f32 c[H]; little-endian."""

    __slots__ = ("bar", "events", "trades", "signature", "h", "c")

    def __init__(self, H, lstm=False):
        self.bar = 0
        self.events = 0
        self.trades = 0
        self.signature = 0
        self.h = np.zeros(H, np.float32)
        self.c = np.zeros(H, np.float32) if lstm else None

    @classmethod
    def unpack(cls, buf, H, lstm=False):
        need = _JS_HEAD.size + 4 * H * (2 if lstm else 1)
        if len(buf) < need:
            raise ValueError("market job state: %d bytes, need %d" % (len(buf), need))
        s = cls(H, lstm)
        s.bar, s.events, s.trades, s.signature = _JS_HEAD.unpack_from(buf, 0)
        s.h = np.frombuffer(bytes(buf[24:24 + 4 * H]), "<f4").astype(np.float32)
        if lstm:
            s.c = np.frombuffer(bytes(buf[24 + 4 * H:24 + 8 * H]), "<f4").astype(np.float32)
        return s

    def pack(self):
        out = _JS_HEAD.pack(self.bar, self.events, self.trades, self.signature)
        out += self.h.astype("<f4").tobytes()
        if self.c is not None:
            out += self.c.astype("<f4").tobytes()
        return out


# ---- the job ------------------------------------------------------------------------------

TRADE = "riskflow.Trade"
QUOTE = "riskflow.Quote"
_TIME_FIELD = {TRADE: "trade_time", QUOTE: "quote_time"}


def _inc(v):
    return v + 1 if v < U32_MAX else v


class MarketJob:
    """The market job of ENGINE.md §5 over a riskflow_features.Engine.

    process() takes one event (a Trade or a Quote dict) with its source, runs the job's
    before hook, has the engine apply it, runs the after hook, and returns the signals of the
    bars it closed (0 or 1), each a dict: instrument, bar_end, bar_index, horizon_bars,
    expected_return_bps, p_up, model_version, features [(name, value)], source_partition,
    source_offset; plus "row" (the raw feature values, model order) and "h" (the hidden
    state after the step)."""

    def __init__(self, engine, model=None, bar_type="time", bar_ms=60000, bar_trades=100,
                 kind="instrument", features=None, hidden=None, cell="gru"):
        """With model=None (feature extraction for training) the job keeps the bars and
        returns rows of `features` but steps nothing; its state still has the layout of a
        `cell` model with `hidden` units."""
        if bar_type not in ("time", "trades"):
            raise ValueError("bar type %r (time or trades)" % bar_type)
        if bar_type == "time" and bar_ms < 1:
            raise ValueError("bar ms must be >= 1")
        if bar_type == "trades" and bar_trades < 1:
            raise ValueError("bar trades must be >= 1")
        self.eng, self.model = engine, model
        self.bar_type, self.bar_ms, self.bar_trades = bar_type, int(bar_ms), int(bar_trades)
        self.kind = kind
        if model is not None:
            want = (bar_type, self.bar_ms if bar_type == "time" else self.bar_trades)
            if model.bars is not None and model.bars != want:
                raise ValueError("the model was trained on %s bars of %d; the job asks for %s"
                                 % (model.bars[0], model.bars[1], want))
            self.names, self.H, self.lstm = list(model.features), model.H, model.cell == "lstm"
        else:
            if not features or not hidden:
                raise ValueError("without a model, give features and hidden")
            self.names, self.H, self.lstm = list(features), int(hidden), cell == "lstm"

    @property
    def state_bytes(self):
        return 24 + 4 * self.H * (2 if self.lstm else 1)

    # the job's bytes in the instrument's value (FEATURES.md §4, riskflow_features'
    # EntityState.job_state(name): a live bytearray of the job's BYTES)
    def _load(self, inst):
        buf = self.eng.state(self.kind, inst).job_state(JOB_NAME)
        return JobState.unpack(bytes(buf), self.H, self.lstm)

    def _store(self, inst, js):
        buf = self.eng.state(self.kind, inst).job_state(JOB_NAME)
        b = js.pack()
        if len(buf) != len(b):
            raise ValueError("market job state is %d bytes in the engine, the job needs %d"
                             % (len(buf), len(b)))
        buf[:] = b

    def _close(self, inst, js, bar_index, bar_end, feats, partition, offset):
        row = np.array([feats[n] for n in self.names], dtype=np.float64)
        m = self.model
        er = p_up = None
        if m is not None:
            if js.signature != m.signature:
                # a state written by another model version starts its hidden state from zeros
                js.h = np.zeros(m.H, np.float32)
                if self.lstm:
                    js.c = np.zeros(m.H, np.float32)
                js.signature = m.signature
            h2, c2, y = m.step(row[None, :], js.h[None, :],
                               None if js.c is None else js.c[None, :])
            js.h = h2[0]
            if self.lstm:
                js.c = c2[0]
            er, p_up = float(y[0, 0]), float(sigmoid32(y[0, 1]))
        return {
            "instrument": inst,
            "bar_end": int(bar_end),
            "bar_index": int(bar_index),
            "horizon_bars": None if m is None else m.horizon_bars,
            "expected_return_bps": er,
            "p_up": p_up,
            "model_version": None if m is None else m.version,
            "features": list(zip(self.names, (float(v) for v in row))),
            "source_partition": int(partition),
            "source_offset": int(offset),
            "row": row,
            "h": js.h.copy(),
        }

    def process(self, rtype, rec, topic, partition, offset):
        inst = rec["instrument"]
        t = int(rec[_TIME_FIELD[rtype]])
        is_trade = rtype == TRADE
        eng = self.eng
        js = self._load(inst)
        out = []
        if self.bar_type == "time":
            b = t // self.bar_ms  # floor division, also for negative times
            # before hook: the event of a later bar closes the open one, features as of the
            # bar's last event (before this event is applied)
            closing = js.events > 0 and b > js.bar
            feats = eng.evaluate(rtype, rec, names=self.names) if closing else None
            if not eng.apply(rtype, rec, topic, partition, offset):
                return out  # a replay: nothing changes, nothing is written
            if closing:
                out.append(self._close(inst, js, js.bar, (js.bar + 1) * self.bar_ms, feats,
                                       partition, offset))
            if js.events == 0 or b > js.bar:
                # opens bar b (the first event of a fresh instrument, or after a close)
                js.bar, js.events, js.trades = b, 1, int(is_trade)
            elif b == js.bar:
                js.events = _inc(js.events)
                if is_trade:
                    js.trades = _inc(js.trades)
            # CHOICE: an event of an earlier bar (late) is applied to the features but is not
            # counted in the open bar's events or trades.
        else:
            if not eng.apply(rtype, rec, topic, partition, offset):
                return out
            js.events = _inc(js.events)
            if is_trade:
                js.trades = _inc(js.trades)
                # CHOICE: >= rather than ==, so a state written with a larger bar size still
                # closes at its next trade.
                if js.trades >= self.bar_trades:
                    feats = eng.evaluate(rtype, rec, names=self.names)
                    out.append(self._close(inst, js, js.bar, t, feats, partition, offset))
                    js.bar += 1
                    js.events = js.trades = 0
        self._store(inst, js)
        return out
