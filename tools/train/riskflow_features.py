#!/usr/bin/env python3
"""riskflow_features — the independent Python reference of docs/FEATURES.md.

Written from the text of docs/FEATURES.md (the feature declaration language, the semantics of
every aggregation, window advance, replays, the stored value and its layout hash). The C engine
(src/decl.c, src/feat.c) is written from the same text; end-to-end tests hold each to the
other. Where the text leaves a choice open, the choice made here is marked "CHOICE:" next to the
code (tools/train/README.md lists them all).

Standard library only: usable from any Python 3.8+ without a venv.

    import riskflow_features as rff
    decl = rff.load("deploy/features.conf", schemas_dir="schemas")   # rff.DeclError
    eng = rff.Engine(decl, job_state={"credit": ("customer", 1, 16)})
    applied = eng.apply("riskflow.Payment", record, topic, partition, offset)  # False: replay
    feats = eng.evaluate("Payment", record, names=None)   # {name: float}, available features
    st = eng.state("customer", "C0001")                   # the entity's EntityState
    buf = st.pack()                                       # the FEATURES.md §4 bytes
    st2 = eng.kind("customer").unpack(buf)                # ValueError when not this layout
    st.job_state("credit")[0:8] = ...                     # a job's bytes, kept in the value

Without jobs, `decl.kind("customer").unpack(buf)` is the same as `eng.kind(...)`; with jobs,
the layout (size, hash) depends on them: `decl.kind(name, job_state)` or `eng.kind(name)`.

Records are dicts keyed by Avro field names; enum fields are symbol strings or indexes; record
types are named by full name (riskflow.Payment) or unique short name (Payment).

CLI: python3 tools/train/riskflow_features.py --layout deploy/features.conf [--schemas DIR]
     [--job NAME:KIND:VERSION:BYTES ...]
prints, per kind, every slot with its byte offset and size, the value size, the layout hash
and the canonical text that was hashed.
"""

import json
import math
import operator
import os
import re
import struct
import sys

__all__ = [
    "DeclError", "BadKey", "Malformed", "load", "load_schemas", "Decl", "KindLayout",
    "EntityState", "Engine", "topic_id", "fnv1a64", "layout_report", "main",
    "INT64_MIN", "INT64_MAX", "U32_MAX", "MAGIC", "VERSION", "HEADER_SIZE", "MAX_SOURCES",
    "MAX_VALUE_SIZE", "MAX_KINDS", "MAX_CONDS", "DEFAULT_CAP_MS", "EXIT_CONFIG",
]

INT64_MIN = -(1 << 63)
INT64_MAX = (1 << 63) - 1
INT32_MIN = -(1 << 31)
INT32_MAX = (1 << 31) - 1
U32_MAX = 0xFFFFFFFF
U64_MAX = (1 << 64) - 1

MAGIC = 0x31454652          # "RFE1" read as bytes (little-endian u32)
VERSION = 1
MAX_SOURCES = 4
HEADER_SIZE = 88
MAX_VALUE_SIZE = 16384      # 16 KiB
MAX_KINDS = 8
MAX_CONDS = 4
MAX_TILES = 128
MAX_RING = 512              # tiles of one window ring: TILES + delay / tile
MAX_STRING = 63             # bytes of a decoded string
DAY_MS = 86400000
HOUR_MS = 3600000
DEFAULT_CAP_MS = 30 * DAY_MS
MAX_WINDOW_MS = 366 * DAY_MS
MAX_CAP_MS = 3660 * DAY_MS
MAX_HALFLIFE_MS = 366 * DAY_MS
MIN_TILE_MS = 1000
LN2 = 0.6931471805599453
EXIT_CONFIG = 78

_UNITS = {"ms": 1, "s": 1000, "m": 60000, "h": HOUR_MS, "d": DAY_MS}
_NAME_RE = re.compile(r"[a-z][a-z0-9_]{0,47}\Z")
_FIELD_RE = r"[A-Za-z_][A-Za-z0-9_]*"
# CHOICE: "a decimal number" is an optional '-', digits, and optionally '.' and digits
# (-12, 0.5, 100.25). No '+', no exponent, no leading or trailing '.', no inf/nan. It is read
# as the nearest double (Python float() = a correctly rounded strtod).
_NUM_RE = re.compile(r"-?[0-9]+(?:\.[0-9]+)?\Z")
_DUR_RE = re.compile(r"([0-9]+)(ms|s|m|h|d)\Z")
# CHOICE: whitespace between tokens is ASCII space, \t, \r, \v, \f (C isspace in the C locale);
# lines end at \n.
_WS_RE = re.compile(r"[ \t\r\v\f]+")
_INPUT_FN_RE = re.compile(r"(hour|weekday|change|logchange)\((" + _FIELD_RE + r")\)\Z")
_INPUT_DELTA_RE = re.compile(r"delta\((" + _FIELD_RE + r"),([a-z][a-z0-9_]*)\)\Z")
_INPUT_ARITH_RE = re.compile(r"(" + _FIELD_RE + r")([/*])(.+)\Z")
_INPUT_FIELD_RE = re.compile(_FIELD_RE + r"\Z")
_AGG_RE = re.compile(r"([a-z_]+)(?:\((.*)\))?\Z")
_COND_RE = re.compile(r"((?:hour|weekday)\(" + _FIELD_RE + r"\)|" + _FIELD_RE
                      + r")(<=|>=|!=|=|<|>)(.*)\Z")
_DERIVED_RE = re.compile(r"([a-z0-9_]+)\(([^()]*)\)\Z")

_WINDOWED = ("count", "sum", "mean", "std", "sumsq", "min", "max")
_SCALAR = ("last", "time_since_last", "age", "ewma", "dsum")
_NO_INPUT = ("count", "time_since_last", "age")
_DERIVED_ARITY = {"ratio": 2, "diff": 2, "imbalance": 2, "logratio": 2, "log1p": 1, "sqrt": 1}
# Scalar slot formats (FEATURES.md §4.2) and their sizes.
_SCALAR_FMT = {"last": "qd", "time_since_last": "qd", "age": "q", "ewma": "qdd", "dsum": "qd"}
_SCALAR_DESC = {"last": "i64 t, f64 x", "time_since_last": "i64 t, f64 gap", "age": "i64 t",
                "ewma": "i64 t0, f64 S, f64 W", "dsum": "i64 t0, f64 S"}


class DeclError(Exception):
    """A bad declaration: str(e) is "FILE:LINE: message" (a configuration error, exit 78)."""


class Malformed(ValueError):
    """A record the decoder would dead-letter as `malformed` (FEATURES.md §1)."""


class BadKey(ValueError):
    """An event whose entity id is empty: dead-lettered as `bad_key`, nothing applied."""


# ------------------------------------------------------------------------------------ hashes

def topic_id(topic):
    """FNV-1a 32-bit of the topic name (str as UTF-8, or bytes): the source's topic_id."""
    if isinstance(topic, str):
        topic = topic.encode("utf-8")
    elif not isinstance(topic, (bytes, bytearray)):
        raise TypeError("topic must be a name (str or bytes), not %r" % (topic,))
    h = 2166136261
    for b in topic:
        h = ((h ^ b) * 16777619) & 0xFFFFFFFF
    return h


def fnv1a64(data):
    """FNV-1a 64-bit (offset basis 14695981039346656037, prime 1099511628211)."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    h = 14695981039346656037
    for b in data:
        h = ((h ^ b) * 1099511628211) & U64_MAX
    return h


# ------------------------------------------------------------------------------ float helpers

def _fmin(a, b):
    """C fmin(a, b): a NaN argument loses.
    CHOICE: on equal arguments (also -0.0 vs +0.0) the first argument (the current minimum)
    is kept, so the sign of a zero is deterministic; libc fmin implementations differ there."""
    if a != a:
        return b
    if b != b:
        return a
    return b if b < a else a


def _fmax(a, b):
    """C fmax(a, b), NaN losing, the first argument kept on ties (see _fmin)."""
    if a != a:
        return b
    if b != b:
        return a
    return b if b > a else a


def _ln(x):
    """C log(x) without Python's exceptions: log(0) = -inf, log(<0) = nan."""
    if x > 0.0:
        if x == math.inf:
            return math.inf
        return math.log(x)
    if x == 0.0:
        return -math.inf
    return math.nan


def _div(a, b):
    """IEEE a / b (Python raises on / 0.0)."""
    if b != 0.0:
        return a / b
    if a != a or a == 0.0:
        return math.nan
    return math.copysign(math.inf, a) * math.copysign(1.0, b)


def _decay(d, halflife_ms):
    """exp(-0.6931471805599453 * (double)d / (double)H), d >= 0 an exact integer difference."""
    return math.exp(-LN2 * float(d) / float(halflife_ms))


def _finite(x):
    return x == x and x not in (math.inf, -math.inf)


# ------------------------------------------------------------------------------------ schemas

_PRIMITIVES = ("string", "int", "long", "float", "double", "boolean")


class Field:
    """One field of a record type: name, type (a primitive, "enum", or "other"), enum
    symbols, ts (a long with logicalType timestamp-millis)."""

    __slots__ = ("name", "type", "symbols", "ts", "index", "avro")

    def __init__(self, name, type_, symbols=None, ts=False, index=0, avro=None):
        self.name, self.type, self.symbols, self.ts, self.index = name, type_, symbols, ts, index
        self.avro = avro

    def __repr__(self):
        return "Field(%s: %s%s)" % (self.name, self.type, " ts" if self.ts else "")


class RecordType:
    """A registered record type. `input_error` is None when it can be an input record (every
    field of a supported type, a timestamp-millis long field), else why it cannot."""

    def __init__(self, full_name, fields, schema_id=None, path=None):
        self.full_name = full_name
        self.short_name = full_name.rsplit(".", 1)[-1]
        self.fields = fields
        self.by_name = {f.name: f for f in fields}
        self.schema_id = schema_id
        self.path = path
        self.time_field = None
        for f in fields:
            if f.type == "long" and f.ts:
                self.time_field = f.name  # the first timestamp-millis long: the event time
                break
        self.input_error = None
        for f in fields:
            if f.type == "other":
                self.input_error = "field '%s' is of type %s" % (f.name, f.avro)
                break
        if self.input_error is None and self.time_field is None:
            self.input_error = "no long field with logicalType timestamp-millis"

    def __repr__(self):
        return "RecordType(%s)" % self.full_name


def _schema_fields(doc, path):
    if not isinstance(doc, dict) or doc.get("type") != "record":
        raise ValueError("%s: not an Avro record schema" % path)
    ns = doc.get("namespace")
    name = doc["name"]
    full = name if "." in name or not ns else ns + "." + name
    named = {}  # named enums of this schema, by full and short name

    def field_of(fname, t, index):
        if isinstance(t, str):
            if t in _PRIMITIVES:
                return Field(fname, t, index=index, avro=t)
            e = named.get(t)
            if e is not None:
                return Field(fname, "enum", symbols=e, index=index, avro=t)
            return Field(fname, "other", index=index, avro=t)
        if isinstance(t, dict):
            tt = t.get("type")
            if tt == "enum":
                syms = tuple(t["symbols"])
                ename = t["name"]
                ens = t.get("namespace", ns)
                efull = ename if "." in ename or not ens else ens + "." + ename
                named[efull] = syms
                named[efull.rsplit(".", 1)[-1]] = syms
                return Field(fname, "enum", symbols=syms, index=index, avro=efull)
            if tt in _PRIMITIVES:
                return Field(fname, tt, ts=(tt == "long"
                                            and t.get("logicalType") == "timestamp-millis"),
                             index=index, avro=tt)
            return Field(fname, "other", index=index, avro=json.dumps(tt))
        return Field(fname, "other", index=index, avro=json.dumps(t))

    fields = [field_of(f["name"], f["type"], i) for i, f in enumerate(doc["fields"])]
    return full, fields


class Schemas:
    """The registered record types of a schemas directory (registry.txt)."""

    def __init__(self, records, directory=None):
        self.records = records  # full name -> RecordType, registry order
        self.directory = directory
        self._short = {}
        for rt in records.values():
            self._short.setdefault(rt.short_name, []).append(rt)

    def resolve(self, name):
        """The record type named by full name or unique short name; KeyError(message)."""
        rt = self.records.get(name)
        if rt is not None:
            return rt
        cands = self._short.get(name, [])
        if len(cands) == 1:
            return cands[0]
        if cands:
            raise KeyError("record name '%s' is ambiguous (%s)"
                           % (name, ", ".join(r.full_name for r in cands)))
        raise KeyError("unknown record '%s'" % name)


def _default_schemas_dir():
    return os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                         "..", "..", "schemas"))


def load_schemas(schemas_dir=None):
    """Record types of schemas_dir/registry.txt ("<id> <file>" lines, # comments)."""
    if schemas_dir is None:
        schemas_dir = _default_schemas_dir()
    reg = os.path.join(schemas_dir, "registry.txt")
    records = {}
    with open(reg, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            parts = line.split()
            if len(parts) != 2 or not parts[0].isdigit():
                raise ValueError("%s:%d: expected '<schema id> <file>'" % (reg, n))
            path = os.path.join(schemas_dir, parts[1])
            with open(path, encoding="utf-8") as sf:
                doc = json.load(sf)
            full, fields = _schema_fields(doc, path)
            if full in records:
                raise ValueError("%s:%d: record %s registered twice" % (reg, n, full))
            records[full] = RecordType(full, fields, int(parts[0]), path)
    return Schemas(records, schemas_dir)


# ------------------------------------------------------------------------- declaration model

class Entity:
    """`entity KIND key=FIELD`; index = declaration order."""

    def __init__(self, name, key, index, line, tokens):
        self.name, self.key, self.index, self.line, self.tokens = name, key, index, line, tokens
        self.ttl_ms, self.sliced = 0, False

    def touches(self, rt):
        f = rt.by_name.get(self.key)
        return rt.input_error is None and f is not None and f.type == "string"


class Input:
    """An INPUT as written (FEATURES.md §2.3). form: field | div | mul | hour | change |
    logchange. prev: index of the kind's previous-value slot (change/logchange)."""

    def __init__(self, text, form, field, num=None, dkind=None):
        self.text, self.form, self.field, self.num = text, form, field, num
        self.prev = None
        self.dkind = dkind       # delta: the kind (name) that keeps the previous value

    def value(self, vals, prevs, pre=None):
        """The input's value for an event (vals: the record's converted fields; prevs: the
        entity's previous-value slots, [has, value] each; pre: {kind name: prevs} as they
        were before the event touched any entity, for delta)."""
        form = self.form
        v = vals[self.field]
        if form == "delta":
            p = pre[self.dkind][self.prev]
            return float(v) - (p[1] if p[0] else 0.0)
        if form == "field":
            return float(v)
        if form == "div":
            return float(v) / self.num
        if form == "mul":
            return float(v) * self.num
        if form == "hour":
            return float((v % DAY_MS) // HOUR_MS)  # Python's % is the non-negative floormod
        if form == "weekday":
            return float((v // DAY_MS + 3) % 7)   # 0 Monday: 1970-01-01 was a Thursday
        p = prevs[self.prev]
        if form == "change":
            if not p[0]:  # CHOICE: a stored `has` other than 0 counts as present
                return 0.0
            return float(v) - p[1]
        # logchange
        x = float(v)
        if not p[0] or not x > 0.0 or not p[1] > 0.0:
            return 0.0
        return _ln(x / p[1])


class Cond:
    """`LHS OP RHS` (FEATURES.md §2.4), compiled."""

    def __init__(self, text, field, hour, op, rhs):
        self.text, self.field, self.hour, self.op, self.rhs = text, field, hour, op, rhs

    def holds(self, vals):
        v = vals[self.field]
        if self.hour == "weekday":
            v = float((v // DAY_MS + 3) % 7)
        elif self.hour:
            v = float((v % DAY_MS) // HOUR_MS)
        elif not isinstance(v, str):
            v = float(v)
        op, r = self.op, self.rhs
        if op == "=":
            return v == r
        if op == "!=":
            return v != r
        if op == "<":
            return v < r
        if op == "<=":
            return v <= r
        if op == ">":
            return v > r
        return v >= r


def _matches(record, conds, rt, vals):
    """An event matches when it is of the record type and every condition holds (§2.4)."""
    return rt is record and all(c.holds(vals) for c in conds)


class Feature:
    """A `feature` line. agg: count|sum|mean|std|sumsq|min|max|last|time_since_last|age|
    ewma|dsum|value. kind: the Entity (None for a value() without per)."""

    derived = False

    def __init__(self, name, line, tokens):
        self.name, self.line, self.tokens = name, line, tokens
        self.agg = None
        self.input = None
        self.kind = None
        self.record = None
        self.conds = ()
        self.window = None       # (window ms, tiles, tile ms)
        self.window_text = None
        self.halflife_ms = None
        self.cap_ms = None
        self.group = None        # index of the group in its kind (windowed)
        self.scalar = None       # index of the scalar slot in its kind
        self.cols = ()           # windowed: indexes of the columns it reads, by need

    @property
    def stateful(self):
        return self.agg != "value"

    @property
    def cap_s(self):
        # CHOICE: the cap in seconds is (double)cap_ms / 1000.0.
        return None if self.cap_ms is None else self.cap_ms / 1000.0

    def matches(self, rt, vals):
        return _matches(self.record, self.conds, rt, vals)

    def __repr__(self):
        return "Feature(%s)" % self.name


class Derived:
    """A `derived` line."""

    derived = True
    stateful = False

    def __init__(self, name, line, tokens, op, args, scale, default):
        self.name, self.line, self.tokens = name, line, tokens
        self.op, self.args, self.scale, self.default = op, args, scale, default

    def compute(self, a, b=None):
        op = self.op
        if op == "ratio":
            ok, v = b != 0.0, (_div(a, b) if b != 0.0 else 0.0)
        elif op == "diff":
            ok, v = True, a - b
        elif op == "imbalance":
            s = a + b
            ok, v = s != 0.0, ((a - b) / s if s != 0.0 else 0.0)
        elif op == "logratio":
            ok = not (a <= 0.0 or b <= 0.0)
            v = _ln(a / b) if ok else 0.0
        elif op == "log1p":
            # CHOICE: max(a, 0) is `a > 0 ? a : 0` (a NaN argument gives 0).
            ok, v = True, math.log1p(a if a > 0.0 else 0.0)
        else:  # sqrt
            ok, v = True, math.sqrt(a if a > 0.0 else 0.0)
        if not ok or not _finite(v):
            v = self.default
        return v * self.scale

    def __repr__(self):
        return "Derived(%s)" % self.name


class _Group:
    """A window group of a kind: the features with the same (RECORD, conditions as written,
    window) share one ring. cols: [(col kind, Input)], col kind in sum|m2|sq|min|max."""

    def __init__(self, index, kind, record, conds, window, window_text, line, delay=0,
                 time_field=None):
        self.index = index
        self.kind = kind
        self.record = record
        self.conds = conds
        self.window_ms, self.win, self.tile_ms = window
        self.delay = delay            # tiles the value is shifted back by
        self.n = self.win + delay     # tiles in the ring
        self.time_field = time_field  # the field whose time picks the tile (None: event time)
        self.window_text = window_text
        self.line = line
        self.cols = []
        self.col_index = {}      # (col kind, input text) -> column index
        self.features = []
        self.inputs = []         # distinct inputs, by first need
        self.blocks = []         # per input: (input index, sum, m2, sq, min, max col or None)

    def need(self, ckind, inp):
        key = (ckind, inp.text)
        i = self.col_index.get(key)
        if i is None:
            i = self.col_index[key] = len(self.cols)
            self.cols.append((ckind, inp))
        return i

    def finish(self):
        """The per-input column blocks used by add()."""
        by_input = {}
        for i, (ck, inp) in enumerate(self.cols):
            b = by_input.get(inp.text)
            if b is None:
                b = by_input[inp.text] = {"input": inp}
                self.inputs.append(inp)
            b[ck] = i
        self.blocks = [(inp, by_input[inp.text].get("sum"), by_input[inp.text].get("m2"),
                        by_input[inp.text].get("sq"), by_input[inp.text].get("min"),
                        by_input[inp.text].get("max")) for inp in self.inputs]

    def size(self):
        n = self.n
        return 8 + 4 * n + (4 if n % 2 else 0) + 8 * n * len(self.cols)

    def matches(self, rt, vals):
        return _matches(self.record, self.conds, rt, vals)

    def describe(self):
        s = "%s window=%s" % (self.record.short_name, self.window_text)
        if self.conds:
            s += " where " + " and ".join(c.text for c in self.conds)
        return s


class _KindDecl:
    """What the file declares for one kind: groups, scalar features, previous-value slots,
    and the canonical text lines (without jobs)."""

    def __init__(self, entity):
        self.entity = entity
        self.groups = []
        self.group_index = {}
        self.scalars = []        # stateful non-windowed features, file order
        self.prevs = []          # (RecordType, field name)
        self.prev_index = {}
        self.features = []       # every feature line with `per KIND` (file order)
        # The ttl is not part of the layout: changing it keeps the stored values.
        self.lines = [" ".join(entity.tokens[:3])]

    def base_size(self):
        size = HEADER_SIZE
        for g in self.groups:
            size += g.size()
        for f in self.scalars:
            size += struct.calcsize("<" + _SCALAR_FMT[f.agg])
        size += 16 * len(self.prevs)
        return size


# -------------------------------------------------------------------------------- the parser

def _parse_dur(text):
    m = _DUR_RE.match(text)
    if not m:
        return None
    return int(m.group(1)) * _UNITS[m.group(2)]


def _parse_num(text):
    if not _NUM_RE.match(text):
        return None
    return float(text)


class _Parser:
    def __init__(self, path, schemas):
        self.path = path
        self.schemas = schemas
        self.entities = []
        self.kinds = {}          # name -> _KindDecl
        self.items = []          # Feature and Derived, file order
        self.names = {}          # feature/derived name -> item

    def err(self, line, msg):
        raise DeclError("%s:%d: %s" % (self.path, line, msg))

    def parse(self, data):
        for n, raw in enumerate(data.split(b"\n"), 1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                self.err(n, "not UTF-8")
            text = text.split("#", 1)[0]
            toks = [t for t in _WS_RE.split(text) if t]
            if not toks:
                continue
            kw = toks[0]
            if kw == "entity":
                self.entity(n, toks)
            elif kw == "feature":
                self.feature(n, toks)
            elif kw == "derived":
                self.derived(n, toks)
            else:
                self.err(n, "unknown keyword '%s' (entity, feature or derived)" % kw)

    # -- helpers
    def check_name(self, n, name, what):
        if not _NAME_RE.match(name):
            self.err(n, "bad %s name '%s' (want [a-z][a-z0-9_]{0,47})" % (what, name))

    def record(self, n, name):
        try:
            rt = self.schemas.resolve(name)
        except KeyError as e:
            self.err(n, e.args[0])
        if rt.input_error:
            self.err(n, "record %s cannot be an input record: %s" % (rt.full_name,
                                                                   rt.input_error))
        return rt

    def field(self, n, rt, name):
        f = rt.by_name.get(name)
        if f is None:
            self.err(n, "record %s has no field '%s'" % (rt.short_name, name))
        return f

    # -- entity KIND key=FIELD
    def entity(self, n, toks):
        opts = toks[3:]
        ttls = [t for t in opts if t.startswith("ttl=")]
        sliced = opts.count("sliced")
        if (len(toks) not in (3, 4, 5) or not toks[2].startswith("key=") or len(ttls) > 1
                or sliced > 1 or len(ttls) + sliced != len(opts)):
            self.err(n, "expected 'entity KIND key=FIELD [ttl=DUR] [sliced]'")
        name, key = toks[1], toks[2][4:]
        ttl_ms = 0
        if ttls:
            ttl_ms = _parse_dur(ttls[0][4:])
            if ttl_ms is None or ttl_ms < 1000 or ttl_ms > MAX_CAP_MS:
                self.err(n, "bad ttl '%s' (1s..3660d)" % ttls[0][4:])
        self.check_name(n, name, "entity")
        if name in self.kinds:
            self.err(n, "duplicate entity '%s' (line %d)" % (name, self.kinds[name].entity.line))
        if len(self.entities) >= MAX_KINDS:
            self.err(n, "too many entities (at most %d)" % MAX_KINDS)
        if not re.match(_FIELD_RE + r"\Z", key):
            self.err(n, "bad key field '%s'" % key)
        # CHOICE: a key field that no input record has as a string field is an error (such an
        # entity could never be touched).
        if not any(rt.input_error is None and rt.by_name.get(key) is not None
                   and rt.by_name[key].type == "string" for rt in self.schemas.records.values()):
            self.err(n, "no input record has a string field '%s'" % key)
        e = Entity(name, key, len(self.entities), n, toks)
        e.ttl_ms = ttl_ms
        # sliced: one value per source partition, read as their sum (FEATURES.md §2.1). The
        # reference keeps one value per entity: the sum of the slices, had it one writer.
        e.sliced = bool(sliced)
        self.entities.append(e)
        self.kinds[name] = _KindDecl(e)

    def new_name(self, n, name):
        self.check_name(n, name, "feature")
        if name in self.names:
            self.err(n, "duplicate name '%s' (line %d)" % (name, self.names[name].line))

    # -- feature NAME = EXPR ...
    def feature(self, n, toks):
        if len(toks) < 4 or toks[2] != "=":
            self.err(n, "expected 'feature NAME = EXPR ...'")
        name = toks[1]
        self.new_name(n, name)
        f = Feature(name, n, toks)
        m = _AGG_RE.match(toks[3])
        if not m:
            self.err(n, "bad expression '%s'" % toks[3])
        agg, arg = m.group(1), m.group(2)
        if agg not in _WINDOWED + _SCALAR + ("value",):
            self.err(n, "unknown aggregation '%s'" % agg)
        if agg in _NO_INPUT and arg is not None:
            self.err(n, "%s takes no input (write '%s')" % (agg, agg))
        if agg not in _NO_INPUT and agg != "value" and not arg:
            self.err(n, "%s needs an input: %s(INPUT)" % (agg, agg))
        if agg == "value" and arg is None:
            self.err(n, "value needs parentheses: value(INPUT) or value()")
        f.agg = agg

        # CHOICE: after the expression, `per KIND`, `on RECORD` and the KEY=VALUE options come
        # in any order, each at most once; `where` starts the conditions, which run to the end
        # of the line.
        opts = {}
        per = on = None
        conds = None
        i = 4
        while i < len(toks):
            t = toks[i]
            if t in ("per", "on"):
                if i + 1 >= len(toks):
                    self.err(n, "'%s' needs a name" % t)
                if (per if t == "per" else on) is not None:
                    self.err(n, "'%s' given twice" % t)
                if t == "per":
                    per = toks[i + 1]
                else:
                    on = toks[i + 1]
                i += 2
                continue
            if t == "where":
                conds = toks[i + 1:]
                break
            if "=" in t:
                k, v = t.split("=", 1)
                if k not in ("window", "halflife", "cap", "scale", "default", "delay", "time"):
                    self.err(n, "unknown option '%s'" % k)
                if k in opts:
                    self.err(n, "option %s given twice" % k)
                opts[k] = v
                i += 1
                continue
            self.err(n, "unexpected '%s'" % t)
        if on is None:
            self.err(n, "missing 'on RECORD'")
        rt = self.record(n, on)
        f.record = rt

        if per is not None:
            kd = self.kinds.get(per)
            if kd is None:
                # CHOICE: an entity must be declared on an earlier line than its features.
                self.err(n, "unknown entity '%s'" % per)
            if not kd.entity.touches(rt):
                self.err(n, "record %s does not touch entity %s (no string field '%s')"
                         % (rt.short_name, per, kd.entity.key))
            f.kind = kd.entity
        elif agg != "value":
            self.err(n, "%s needs 'per KIND'" % agg)
        if per is not None and agg == "value":
            self.err(n, "value() is stateless: it takes no 'per KIND'")

        # options
        allowed = {"value": (), "last": ()}
        for a in _WINDOWED:
            allowed[a] = ("window", "delay", "time")
        allowed["time_since_last"] = allowed["age"] = ("cap",)
        allowed["ewma"] = allowed["dsum"] = ("halflife",)
        for k in opts:
            if k not in allowed[agg]:
                self.err(n, "option %s is not allowed for %s" % (k, agg))
        if agg in _WINDOWED:
            if "window" not in opts:
                self.err(n, "%s needs window=DUR/TILES" % agg)
            f.window = self.window(n, opts["window"])
            f.window_text = opts["window"]
            tile = f.window[2]
            f.delay_tiles = 0
            if "delay" in opts:
                d = _parse_dur(opts["delay"])
                if d is None or d > MAX_WINDOW_MS:
                    self.err(n, "bad delay '%s' (up to 366d)" % opts["delay"])
                if d % tile:
                    self.err(n, "delay %s is not a whole number of %d ms tiles"
                             % (opts["delay"], tile))
                f.delay_tiles = d // tile
                if f.window[1] + f.delay_tiles > MAX_RING:
                    self.err(n, "window with delay: %d tiles, at most %d"
                             % (f.window[1] + f.delay_tiles, MAX_RING))
                f.window_text += " delay=" + opts["delay"]
            f.time_field = None
            if "time" in opts:
                fld = self.field(n, rt, opts["time"])
                if not (fld.type == "long" and fld.ts):
                    self.err(n, "time=%s: not a timestamp-millis field" % opts["time"])
                f.time_field = opts["time"]
                f.window_text += " time=" + opts["time"]
        if agg in ("ewma", "dsum"):
            if "halflife" not in opts:
                self.err(n, "%s needs halflife=DUR" % agg)
            h = _parse_dur(opts["halflife"])
            if h is None:
                self.err(n, "bad duration '%s'" % opts["halflife"])
            if h < 1 or h > MAX_HALFLIFE_MS:
                self.err(n, "halflife=%s out of range (1ms..366d)" % opts["halflife"])
            f.halflife_ms = h
        if agg in ("time_since_last", "age"):
            f.cap_ms = DEFAULT_CAP_MS
            if "cap" in opts:
                c = _parse_dur(opts["cap"])
                if c is None:
                    self.err(n, "bad duration '%s'" % opts["cap"])
                # CHOICE: cap=0 (any unit) is allowed; only the upper bound is stated.
                if c > MAX_CAP_MS:
                    self.err(n, "cap=%s out of range (at most 3660d)" % opts["cap"])
                f.cap_ms = c

        # input
        if arg:
            f.input = self.input(n, rt, arg)
            if f.input.form in ("change", "logchange", "delta") and agg == "value":
                self.err(n, "%s() is an input of stateful aggregations only, not of value()"
                         % f.input.form)
        # conditions
        if conds is not None:
            f.conds = self.conditions(n, rt, conds)

        self.names[name] = f
        self.items.append(f)
        if f.kind is not None:
            self.place(n, f)

    def window(self, n, text):
        if "/" not in text:
            self.err(n, "bad window '%s' (want DUR/TILES)" % text)
        d, t = text.split("/", 1)
        dur = _parse_dur(d)
        if dur is None:
            self.err(n, "bad duration '%s'" % d)
        if not t.isdigit() or not t.isascii():
            self.err(n, "bad tile count '%s'" % t)
        tiles = int(t)
        if tiles < 1 or tiles > MAX_TILES:
            self.err(n, "tiles %s out of range (1..%d)" % (t, MAX_TILES))
        if dur > MAX_WINDOW_MS:
            self.err(n, "window %s longer than 366d" % d)
        if dur % tiles:
            self.err(n, "window %s is not a multiple of %d ms" % (d, tiles))
        tile = dur // tiles
        if tile < MIN_TILE_MS:
            self.err(n, "tile of %d ms is shorter than 1s" % tile)
        return (dur, tiles, tile)

    def input(self, n, rt, text):
        m = _INPUT_DELTA_RE.match(text)
        if m:
            fname, kname = m.groups()
            fld = self.field(n, rt, fname)
            self.numeric(n, fld, text)
            kd = self.kinds.get(kname)
            if kd is None:
                self.err(n, "delta(%s,%s): unknown entity '%s'" % (fname, kname, kname))
            if not kd.entity.touches(rt):
                self.err(n, "delta(%s,%s): record %s does not touch entity %s"
                         % (fname, kname, rt.short_name, kname))
            return Input(text, "delta", fname, dkind=kname)
        m = _INPUT_FN_RE.match(text)
        if m:
            form, fname = m.group(1), m.group(2)
            fld = self.field(n, rt, fname)
            if form in ("hour", "weekday"):
                if not (fld.type == "long" and fld.ts):
                    self.err(n, "%s(%s): not a timestamp-millis field" % (form, fname))
            else:
                self.numeric(n, fld, "%s(%s)" % (form, fname))
            return Input(text, form, fname)
        m = _INPUT_ARITH_RE.match(text)
        if m:
            fname, op, num = m.groups()
            fld = self.field(n, rt, fname)
            self.numeric(n, fld, text)
            v = _parse_num(num)
            if v is None:
                self.err(n, "bad number '%s'" % num)
            if op == "/" and v == 0.0:
                self.err(n, "division by 0 in '%s'" % text)
            return Input(text, "div" if op == "/" else "mul", fname, v)
        if _INPUT_FIELD_RE.match(text):
            fld = self.field(n, rt, text)
            self.numeric(n, fld, text)
            return Input(text, "field", text)
        self.err(n, "bad input '%s'" % text)

    def numeric(self, n, fld, text):
        # CHOICE: change()/logchange() take the same fields as a plain FIELD input: numeric,
        # boolean or enum.
        if fld.type not in ("int", "long", "float", "double", "boolean", "enum"):
            self.err(n, "%s: field %s is a %s, not a number" % (text, fld.name, fld.type))

    def conditions(self, n, rt, toks):
        if not toks:
            self.err(n, "'where' needs a condition")
        conds = []
        expect = True
        for t in toks:
            if expect:
                if t == "and":
                    self.err(n, "expected a condition, got 'and'")
                conds.append(self.condition(n, rt, t))
                expect = False
            else:
                if t != "and":
                    self.err(n, "expected 'and' between conditions, got '%s'" % t)
                expect = True
        if expect:
            self.err(n, "'and' needs a condition after it")
        if len(conds) > MAX_CONDS:
            self.err(n, "too many conditions (at most %d)" % MAX_CONDS)
        return tuple(conds)

    def condition(self, n, rt, text):
        m = _COND_RE.match(text)
        if not m:
            self.err(n, "bad condition '%s'" % text)
        lhs, op, rhs = m.groups()
        hour = "weekday" if lhs.startswith("weekday(") else lhs.startswith("hour(")
        fname = lhs[lhs.index("(") + 1:-1] if hour else lhs
        fld = self.field(n, rt, fname)
        if hour:
            if not (fld.type == "long" and fld.ts):
                self.err(n, "%s(%s): not a timestamp-millis field"
                         % ("weekday" if hour == "weekday" else "hour", fname))
        if rhs == "":
            # CHOICE: an empty right-hand side is an error (also for strings: no way to match
            # an empty string).
            self.err(n, "condition '%s' has no value" % text)
        if not hour and fld.type == "enum":
            if op not in ("=", "!="):
                self.err(n, "%s: only = and != for enum field %s" % (text, fname))
            if rhs not in fld.symbols:
                self.err(n, "%s: unknown symbol '%s' of %s (%s)"
                         % (text, rhs, fld.avro, ", ".join(fld.symbols)))
            return Cond(text, fname, False, op, float(fld.symbols.index(rhs)))
        if not hour and fld.type == "string":
            if op not in ("=", "!="):
                self.err(n, "%s: only = and != for string field %s" % (text, fname))
            # CHOICE: a literal longer than 63 bytes (it could never match) is an error.
            if len(rhs.encode("utf-8")) > MAX_STRING:
                self.err(n, "%s: string longer than %d bytes" % (text, MAX_STRING))
            return Cond(text, fname, False, op, rhs)
        if not hour and fld.type not in ("int", "long", "float", "double", "boolean"):
            self.err(n, "%s: field %s is a %s" % (text, fname, fld.type))
        v = _parse_num(rhs)
        if v is None:
            self.err(n, "%s: bad number '%s'" % (text, rhs))
        return Cond(text, fname, hour, op, v)

    # -- the kind's layout, as features arrive
    def place(self, n, f):
        kd = self.kinds[f.kind.name]
        kd.features.append(f)
        kd.lines.append(" ".join(f.tokens))
        if f.agg in _WINDOWED:
            # CHOICE: the group key is (record, the conditions' texts in order, window length
            # and tile count); 1h/12 and 60m/12 are the same window.
            key = (f.record.full_name, tuple(c.text for c in f.conds), f.window,
                   f.delay_tiles, f.time_field)
            gi = kd.group_index.get(key)
            if gi is None:
                gi = kd.group_index[key] = len(kd.groups)
                kd.groups.append(_Group(gi, f.kind, f.record, f.conds, f.window,
                                        f.window_text, n, f.delay_tiles, f.time_field))
            g = kd.groups[gi]
            g.features.append(f)
            f.group = gi
            if f.agg in ("sum", "mean"):
                f.cols = (g.need("sum", f.input),)
            elif f.agg == "std":
                f.cols = (g.need("sum", f.input), g.need("m2", f.input))
            elif f.agg == "sumsq":
                f.cols = (g.need("sq", f.input),)
            elif f.agg in ("min", "max"):
                f.cols = (g.need(f.agg, f.input),)
        elif f.agg in _SCALAR:
            if kd.entity.sliced and f.agg == "time_since_last":
                self.err(n, "feature '%s': entity '%s' is sliced: time_since_last needs the "
                         "entity's last two events, which no slice alone knows"
                         % (f.name, kd.entity.name))
            f.scalar = len(kd.scalars)
            kd.scalars.append(f)
        if f.input is not None and f.input.form in ("change", "logchange", "delta"):
            # delta's slot is on the kind it names, created there on first use.
            pk = self.kinds[f.input.dkind] if f.input.form == "delta" else kd
            if pk.entity.sliced:
                self.err(n, "entity '%s' is sliced: it keeps no previous values (change(), "
                         "logchange(), delta() over it)" % pk.entity.name)
            key = (f.record.full_name, f.input.field)
            pi = pk.prev_index.get(key)
            if pi is None:
                pi = pk.prev_index[key] = len(pk.prevs)
                pk.prevs.append((f.record, f.input.field))
            f.input.prev = pi
            if pk is not kd and pk.base_size() > MAX_VALUE_SIZE:
                self.err(n, "the value of entity %s would be %d bytes (at most %d)"
                         % (pk.entity.name, pk.base_size(), MAX_VALUE_SIZE))
        size = kd.base_size()
        if size > MAX_VALUE_SIZE:
            self.err(n, "the value of entity %s would be %d bytes (at most %d)"
                     % (f.kind.name, size, MAX_VALUE_SIZE))

    # -- derived NAME = OP(A[,B]) [scale=NUM] [default=NUM]
    def derived(self, n, toks):
        if len(toks) < 4 or toks[2] != "=":
            self.err(n, "expected 'derived NAME = OP(ARGS) ...'")
        name = toks[1]
        self.new_name(n, name)
        m = _DERIVED_RE.match(toks[3])
        if not m:
            self.err(n, "bad expression '%s' (want OP(A) or OP(A,B))" % toks[3])
        op, argtext = m.groups()
        if op not in _DERIVED_ARITY:
            self.err(n, "unknown operation '%s' (%s)" % (op, ", ".join(_DERIVED_ARITY)))
        args = argtext.split(",") if argtext else []
        if len(args) != _DERIVED_ARITY[op]:
            self.err(n, "%s takes %d argument%s, not %d"
                     % (op, _DERIVED_ARITY[op], "s" if _DERIVED_ARITY[op] > 1 else "",
                        len(args)))
        for a in args:
            if a not in self.names:
                self.err(n, "'%s' is not a feature declared on an earlier line" % a)
        scale, default = 1.0, 0.0
        seen = set()
        for t in toks[4:]:
            if "=" not in t:
                self.err(n, "unexpected '%s'" % t)
            k, v = t.split("=", 1)
            if k not in ("scale", "default", "window", "halflife", "cap"):
                self.err(n, "unknown option '%s'" % k)
            if k not in ("scale", "default"):
                self.err(n, "option %s is not allowed for derived" % k)
            if k in seen:
                self.err(n, "option %s given twice" % k)
            seen.add(k)
            num = _parse_num(v)
            if num is None:
                self.err(n, "bad number '%s'" % v)
            if k == "scale":
                scale = num
            else:
                default = num
        d = Derived(name, n, toks, op, tuple(args), scale, default)
        self.names[name] = d
        self.items.append(d)


# -------------------------------------------------------------------------------- the layout

class KindLayout:
    """The stored value of one kind (FEATURES.md §4), for a given list of jobs."""

    def __init__(self, kd, jobs=()):
        self.name = kd.entity.name
        self.entity = kd.entity
        self.groups = kd.groups
        self.scalars = kd.scalars
        self.prevs = kd.prevs
        self.features = kd.features
        # jobs: (name, version, size, fresh bytes)
        self.jobs = tuple(jobs)
        self.job_index = {j[0]: i for i, j in enumerate(self.jobs)}
        lines = list(kd.lines)
        for name, version, size, _ in self.jobs:
            lines.append("job %s %d %d" % (name, version, size))
        self.canonical_text = "".join(line + "\n" for line in lines)
        self.hash = fnv1a64(self.canonical_text.encode("utf-8"))

        fmt = ["<IHHQq", "Iiq" * MAX_SOURCES]
        slots = [(0, 4, "magic (u32 0x%08x)" % MAGIC), (4, 2, "version (u16 %d)" % VERSION),
                 (6, 2, "n_sources (u16)"), (8, 8, "layout hash (u64)"),
                 (16, 8, "t_last (i64)"),
                 (24, 16 * MAX_SOURCES,
                  "sources[%d] (u32 topic_id, i32 partition, i64 offset)" % MAX_SOURCES)]
        off = HEADER_SIZE
        for g in self.groups:
            n = g.n
            desc = "group %d: %s" % (g.index, g.describe())
            slots.append((off, 8, "%s: head (i64)" % desc))
            off += 8
            slots.append((off, 4 * n, "%s: cnt[%d] (u32)" % (desc, n)))
            off += 4 * n
            fmt.append("q%dI" % n)
            if n % 2:
                slots.append((off, 4, "%s: padding" % desc))
                off += 4
                fmt.append("4x")
            for ck, inp in g.cols:
                slots.append((off, 8 * n, "%s: %s(%s)[%d] (f64)" % (desc, ck, inp.text, n)))
                off += 8 * n
                fmt.append("%dd" % n)
        for f in self.scalars:
            sz = struct.calcsize("<" + _SCALAR_FMT[f.agg])
            slots.append((off, sz, "%s: %s (%s)" % (f.name, f.agg, _SCALAR_DESC[f.agg])))
            off += sz
            fmt.append(_SCALAR_FMT[f.agg])
        for rt, fld in self.prevs:
            slots.append((off, 16, "previous %s.%s (i64 has, f64 value)"
                          % (rt.short_name, fld)))
            off += 16
            fmt.append("qd")
        self.job_offsets = {}
        for name, version, size, _ in self.jobs:
            rounded = (size + 7) // 8 * 8
            slots.append((off, size, "job %s version %d state (%d bytes)"
                          % (name, version, size)))
            self.job_offsets[name] = off
            fmt.append("%ds" % size)
            if rounded > size:
                slots.append((off + size, rounded - size, "job %s: padding" % name))
                fmt.append("%dx" % (rounded - size))
            off += rounded
        self.size = off
        self.slots = slots
        self.struct = struct.Struct("".join(fmt))
        assert self.struct.size == self.size, (self.struct.size, self.size)
        if self.size > MAX_VALUE_SIZE:
            raise ValueError("the value of entity %s would be %d bytes (at most %d)"
                             % (self.name, self.size, MAX_VALUE_SIZE))

    def fresh(self, id=None):
        """A fresh value: heads, t fields and t_last INT64_MIN, time_since_last gaps = cap,
        every other byte 0 (job bytes: the job's fresh bytes, zeros by default)."""
        return EntityState(self, id)

    def unpack(self, buf, id=None):
        """Parse a stored value of this layout. ValueError on another size, magic, version or
        layout hash, or n_sources > 4. Any other bytes are accepted as they are (CHOICE: the
        padding bytes and source slots >= n_sources are not read, and are written back as 0)."""
        buf = bytes(buf)
        if len(buf) != self.size:
            raise ValueError("%s value: %d bytes, want %d" % (self.name, len(buf), self.size))
        v = self.struct.unpack(buf)
        if v[0] != MAGIC:
            raise ValueError("%s value: bad magic 0x%08x" % (self.name, v[0]))
        if v[1] != VERSION:
            raise ValueError("%s value: unsupported version %d" % (self.name, v[1]))
        if v[3] != self.hash:
            raise ValueError("%s value: layout hash 0x%016x, want 0x%016x"
                             % (self.name, v[3], self.hash))
        if v[2] > MAX_SOURCES:
            raise ValueError("%s value: %d sources, at most %d" % (self.name, v[2], MAX_SOURCES))
        st = EntityState.__new__(EntityState)
        st.layout = self
        st.id = id
        st.t_last = v[4]
        i = 5
        st.sources = [list(v[i + 3 * k:i + 3 * k + 3]) for k in range(v[2])]
        i += 3 * MAX_SOURCES
        st.groups = []
        for g in self.groups:
            n = g.n
            head = v[i]
            cnt = list(v[i + 1:i + 1 + n])
            i += 1 + n
            cols = []
            for _ in g.cols:
                cols.append(list(v[i:i + n]))
                i += n
            st.groups.append(_GroupState(head, cnt, cols))
        st.scalars = []
        for f in self.scalars:
            k = len(_SCALAR_FMT[f.agg])
            st.scalars.append(list(v[i:i + k]))
            i += k
        st.prevs = []
        for _ in self.prevs:
            st.prevs.append([v[i], v[i + 1]])
            i += 2
        st.jobs = []
        for _ in self.jobs:
            st.jobs.append(bytearray(v[i]))
            i += 1
        return st

    def describe(self):
        """The printout of this layout (see layout_report)."""
        out = ["entity %s: value %d bytes, layout hash 0x%016x" % (self.name, self.size,
                                                                    self.hash),
               "  %6s %6s  slot" % ("offset", "size")]
        for off, size, desc in self.slots:
            out.append("  %6d %6d  %s" % (off, size, desc))
        out.append("  canonical text (%d bytes), hashed with FNV-1a 64, between the rules:"
                   % len(self.canonical_text.encode("utf-8")))
        out.append("-" * 79)
        out.append(self.canonical_text.rstrip("\n"))
        out.append("-" * 79)
        return "\n".join(out)


class _GroupState:
    __slots__ = ("head", "cnt", "cols")

    def __init__(self, head, cnt, cols):
        self.head, self.cnt, self.cols = head, cnt, cols


class EntityState:
    """One entity's value, in the §4 layout: t_last, sources (most recently applied first),
    groups (head, cnt[N], cols[c][N]), scalars (one list per scalar slot, its fields in
    order), prevs ([has, value] per previous-value slot), and the jobs' bytes."""

    def __init__(self, layout, id=None):
        self.layout = layout
        self.id = id
        self.t_last = INT64_MIN
        self.sources = []        # [topic_id, partition, offset], most recently applied first
        self.groups = [_GroupState(INT64_MIN, [0] * g.n, [[0.0] * g.n for _ in g.cols])
                       for g in layout.groups]
        self.scalars = []
        for f in layout.scalars:
            if f.agg == "time_since_last":
                self.scalars.append([INT64_MIN, f.cap_s])
            elif f.agg == "age":
                self.scalars.append([INT64_MIN])
            elif f.agg == "ewma":
                self.scalars.append([INT64_MIN, 0.0, 0.0])
            else:  # last, dsum
                self.scalars.append([INT64_MIN, 0.0])
        self.prevs = [[0, 0.0] for _ in layout.prevs]
        self.jobs = [bytearray(j[3]) if j[3] is not None else bytearray(j[2])
                     for j in layout.jobs]

    @property
    def kind(self):
        return self.layout.name

    @property
    def n_sources(self):
        return len(self.sources)

    def source_tuples(self):
        return tuple(tuple(s) for s in self.sources)

    def pack(self):
        """The stored value (FEATURES.md §4): exactly layout.size bytes."""
        lay = self.layout
        vals = [MAGIC, VERSION, len(self.sources), lay.hash, self.t_last]
        for k in range(MAX_SOURCES):
            vals.extend(self.sources[k] if k < len(self.sources) else (0, 0, 0))
        for g in self.groups:
            vals.append(g.head)
            vals.extend(g.cnt)
            for c in g.cols:
                vals.extend(c)
        for s in self.scalars:
            vals.extend(s)
        for p in self.prevs:
            vals.extend(p)
        for j in self.jobs:
            vals.append(bytes(j))
        return lay.struct.pack(*vals)

    def copy(self):
        return self.layout.unpack(self.pack(), self.id)

    def __eq__(self, other):
        if not isinstance(other, EntityState):
            return NotImplemented
        return self.layout.hash == other.layout.hash and self.pack() == other.pack()

    def __ne__(self, other):
        r = self.__eq__(other)
        return r if r is NotImplemented else not r

    __hash__ = None

    def __repr__(self):
        return "EntityState(%s:%r, t_last=%d, sources=%r)" % (self.layout.name, self.id,
                                                            self.t_last, self.sources)

    # -- job state
    def job_state(self, job):
        """The job's bytes in this value: a live bytearray (change it in place, or use
        set_job_state). Its length is the job's BYTES (the rounding padding is not in it)."""
        i = self.layout.job_index.get(job)
        if i is None:
            raise KeyError("no job %r keeps state on entity %s" % (job, self.layout.name))
        return self.jobs[i]

    def set_job_state(self, job, data):
        buf = self.job_state(job)
        data = bytes(data)
        if len(data) != len(buf):
            raise ValueError("job %s state is %d bytes, not %d" % (job, len(buf), len(data)))
        buf[:] = data

    # -- feature values
    def value(self, name):
        """The value of a stateful feature of this kind, as the state now stands."""
        f = name
        if isinstance(name, str):
            f = None
            for x in self.layout.features:
                if x.name == name:
                    f = x
            if f is None:
                raise KeyError("%r is not a feature of entity %s" % (name, self.layout.name))
        return _stateful_value(f, self)


def _window_value(f, gs, g=None):
    agg = f.agg
    cnt = gs.cnt
    cols = gs.cols
    if g is not None and g.delay:
        # Only the slots whose tile is at least `delay` tiles before the head (the others read
        # as empty): slot k holds tile head - (head - k) mod n.
        keep = [(gs.head - k) % g.n >= g.delay for k in range(g.n)]
        cnt = [c if keep[k] else 0 for k, c in enumerate(cnt)]
        cols = [[x if keep[k] else 0.0 for k, x in enumerate(col)] for col in cols]
    count = 0
    for c in cnt:
        count += c
    if agg == "count":
        return float(count)
    if agg in ("sum", "mean", "sumsq"):
        col = cols[f.cols[0]]
        s = 0.0
        for v in col:  # every slot, slot order
            s += v
        if agg == "mean":
            return s / float(count) if count else 0.0
        return s
    if agg in ("min", "max"):
        if not count:
            return 0.0
        col = cols[f.cols[0]]
        fn = _fmin if agg == "min" else _fmax
        acc = None
        for k, c in enumerate(cnt):
            if c > 0:
                acc = col[k] if acc is None else fn(acc, col[k])
        return acc
    # std: the merge of FEATURES.md §2.5
    sums = cols[f.cols[0]]
    m2s = cols[f.cols[1]]
    N = 0.0
    S = 0.0
    M2 = 0.0
    for k, c in enumerate(cnt):
        if c > 0:
            n = float(c)
            if N == 0.0:
                N, S, M2 = n, sums[k], m2s[k]
            else:
                d = sums[k] / n - S / N
                M2 = M2 + m2s[k] + d * d * (N * n / (N + n))
                N = N + n
                S = S + sums[k]
    if N == 0.0:
        return 0.0
    v = M2 / N
    # CHOICE: max(0, M2 / N) is `v > 0 ? v : 0` (a NaN from a hostile stored value gives 0).
    return math.sqrt(v) if v > 0.0 else 0.0


def _stateful_value(f, st):
    if f.group is not None:
        return _window_value(f, st.groups[f.group], st.layout.groups[f.group])
    s = st.scalars[f.scalar]
    agg = f.agg
    if agg == "last":
        return s[1]
    if agg == "time_since_last":
        return s[1]
    if agg == "age":
        t = s[0]
        if t == INT64_MIN:
            return f.cap_s
        v = (float(st.t_last) - float(t)) / 1000.0
        return min(max(v, 0.0), f.cap_s)
    if agg == "ewma":
        W = s[2]
        return s[1] / W if W != 0.0 else 0.0
    # dsum
    t0 = s[0]
    if t0 == INT64_MIN:
        return 0.0
    # CHOICE: t_last < t0 cannot come from applied events (t_last >= t0 always); from hostile
    # stored bytes it is taken as no decay (d = 0), never as growth.
    d = st.t_last - t0
    return s[1] * (_decay(d, f.halflife_ms) if d > 0 else 1.0)


# ------------------------------------------------------------------------------- declarations

class Decl:
    """The declarations of a feature file (load())."""

    def __init__(self, path, schemas, parser):
        self.path = path
        self.schemas = schemas
        self.entities = parser.entities                     # Entity, declaration order
        self._kinds = parser.kinds
        self.items = parser.items                           # Feature and Derived, file order
        self._by_name = parser.names
        self._layouts = {}
        self._avail = {}

    @property
    def names(self):
        """Every feature and derived name, in file order."""
        return [it.name for it in self.items]

    def feature(self, name):
        """The Feature or Derived of that name (KeyError)."""
        return self._by_name[name]

    def record(self, name):
        """The record type named (full or unique short name); ValueError if unknown or not an
        input record."""
        try:
            rt = self.schemas.resolve(name)
        except KeyError as e:
            raise ValueError(e.args[0]) from None
        if rt.input_error:
            raise ValueError("record %s cannot be an input record: %s"
                             % (rt.full_name, rt.input_error))
        return rt

    def touched(self, record_type):
        """The entities a record type touches, in declaration order."""
        rt = record_type if isinstance(record_type, RecordType) else self.record(record_type)
        return [e for e in self.entities if e.touches(rt)]

    def kind(self, name, job_state=None):
        """The KindLayout of an entity kind, with the jobs of job_state (name -> (kind,
        version, bytes[, fresh bytes])) that keep state on it, in the order given."""
        kd = self._kinds.get(name)
        if kd is None:
            raise KeyError("unknown entity %r" % (name,))
        jobs = _jobs_for(job_state, name, self._kinds)
        key = (name, jobs)
        lay = self._layouts.get(key)
        if lay is None:
            lay = self._layouts[key] = KindLayout(kd, jobs)
        return lay

    def available(self, record_type):
        """The names of the features available for a record type (FEATURES.md §2.7), in file
        order."""
        rt = record_type if isinstance(record_type, RecordType) else self.record(record_type)
        r = self._avail.get(rt.full_name)
        if r is None:
            touched = set(e.name for e in self.touched(rt))
            ok = set()
            r = []
            for it in self.items:
                if it.derived:
                    a = all(x in ok for x in it.args)
                elif it.agg == "value":
                    a = it.record is rt and (it.kind is None or it.kind.name in touched)
                else:
                    a = it.kind.name in touched
                if a:
                    ok.add(it.name)
                    r.append(it.name)
            r = self._avail[rt.full_name] = tuple(r)
        return list(r)


def _jobs_for(job_state, kind, kinds):
    """((name, version, bytes, fresh), ...) of the jobs keeping state on kind, in the order of
    job_state (a dict or a sequence of pairs). Validates every job."""
    if not job_state:
        return ()
    items = job_state.items() if isinstance(job_state, dict) else job_state
    out = []
    for name, spec in items:
        if not isinstance(name, str) or not _NAME_RE.match(name):
            raise ValueError("bad job name %r" % (name,))
        if len(spec) not in (3, 4):
            raise ValueError("job %s: want (kind, version, bytes[, fresh bytes])" % name)
        k, version, size = spec[0], spec[1], spec[2]
        fresh = spec[3] if len(spec) == 4 else None
        if k not in kinds:
            raise ValueError("job %s: unknown entity %r" % (name, k))
        version, size = operator.index(version), operator.index(size)
        if not 0 <= version <= U32_MAX:
            raise ValueError("job %s: bad version %d" % (name, version))
        if not 1 <= size <= MAX_VALUE_SIZE:
            raise ValueError("job %s: bad state size %d" % (name, size))
        if fresh is not None:
            fresh = bytes(fresh)
            if len(fresh) != size:
                raise ValueError("job %s: fresh state of %d bytes, not %d"
                                 % (name, len(fresh), size))
        if k == kind:
            out.append((name, version, size, fresh))
    return tuple(out)


def load(path, schemas_dir=None):
    """Read a feature file. DeclError("FILE:LINE: message") on any bad declaration."""
    schemas = schemas_dir if isinstance(schemas_dir, Schemas) else load_schemas(schemas_dir)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise DeclError("%s:0: cannot read: %s" % (path, e.strerror or e)) from None
    p = _Parser(path, schemas)
    p.parse(data)
    for kd in p.kinds.values():
        for g in kd.groups:
            g.finish()
    return Decl(path, schemas, p)


# -------------------------------------------------------------------------------- the engine

def _conv_int(lo, hi):
    def conv(v):
        if isinstance(v, float):
            raise Malformed("not an integer: %r" % (v,))
        try:
            i = operator.index(v)
        except TypeError:
            raise Malformed("not an integer: %r" % (v,)) from None
        if not lo <= i <= hi:
            raise Malformed("integer out of range: %d" % i)
        return i
    return conv


def _conv_double(v):
    if isinstance(v, (str, bytes)) or v is None:
        raise Malformed("not a number: %r" % (v,))
    try:
        x = float(v)
    except (TypeError, ValueError, OverflowError):
        raise Malformed("not a number: %r" % (v,)) from None
    if not _finite(x):
        raise Malformed("not a finite number: %r" % (v,))
    return x


def _conv_float(v):
    # Avro float is 32-bit: the value as the decoder sees it is the float32, widened.
    x = _conv_double(v)
    try:
        y = struct.unpack("<f", struct.pack("<f", x))[0]
    except OverflowError:
        raise Malformed("out of float range: %r" % (v,)) from None
    if not _finite(y):
        raise Malformed("out of float range: %r" % (v,))
    return y


def _conv_bool(v):
    if v is True or v is False or v in (0, 1):
        return 1 if v else 0
    raise Malformed("not a boolean: %r" % (v,))


def _conv_string(v):
    if isinstance(v, (bytes, bytearray)):
        try:
            v = bytes(v).decode("utf-8")
        except UnicodeDecodeError:
            raise Malformed("string not UTF-8") from None
    if not isinstance(v, str):
        raise Malformed("not a string: %r" % (v,))
    if len(v) > MAX_STRING or len(v.encode("utf-8")) > MAX_STRING:
        raise Malformed("string longer than %d bytes" % MAX_STRING)
    if "\0" in v:
        raise Malformed("string with a NUL byte")
    return v


def _conv_enum(symbols):
    index = {s: i for i, s in enumerate(symbols)}

    def conv(v):
        if isinstance(v, str):
            i = index.get(v)
            if i is None:
                raise Malformed("unknown symbol %r (%s)" % (v, ", ".join(symbols)))
            return i
        if isinstance(v, bool):
            raise Malformed("bad enum value %r" % (v,))
        try:
            i = operator.index(v)
        except TypeError:
            raise Malformed("bad enum value %r" % (v,)) from None
        if not 0 <= i < len(symbols):
            raise Malformed("enum index %d out of range" % i)
        return i
    return conv


def _converter(f):
    t = f.type
    if t == "int":
        return _conv_int(INT32_MIN, INT32_MAX)
    if t == "long":
        return _conv_int(INT64_MIN, INT64_MAX)
    if t == "double":
        return _conv_double
    if t == "float":
        return _conv_float
    if t == "boolean":
        return _conv_bool
    if t == "string":
        return _conv_string
    return _conv_enum(f.symbols)


class _KindPlan:
    """What an event of one record type does to one kind."""

    def __init__(self, decl, layout, rt):
        self.layout = layout
        self.name = layout.name
        self.key = layout.entity.key
        self.all_groups = layout.groups
        self.groups = [g for g in layout.groups if g.record is rt]
        self.scalars = [f for f in layout.scalars if f.record is rt]
        self.prevs = [(i, fld) for i, (r, fld) in enumerate(layout.prevs) if r is rt]


class _RecordPlan:
    def __init__(self, decl, layouts, rt):
        self.rt = rt
        self.time_field = rt.time_field
        self.convs = [(f.name, _converter(f)) for f in rt.fields]
        kinds = [e for e in decl.entities if e.touches(rt)]
        self.kinds = [_KindPlan(decl, layouts[e.name], rt) for e in kinds]
        needed = {rt.time_field}
        for e in kinds:
            needed.add(e.key)
        for it in decl.items:
            if not it.derived and it.record is rt:
                if it.input is not None:
                    needed.add(it.input.field)
                for c in it.conds:
                    needed.add(c.field)
        self.needed = needed

    def extract(self, record):
        """The record's fields as features see them (FEATURES.md §1): ints stay ints (long
        arithmetic for hour() and times), float/double as doubles, booleans 0/1, enums their
        index, strings as str. Malformed when a decoder would dead-letter it.
        CHOICE: only the fields the declarations need (event time, entity keys, inputs,
        conditions) must be present; any other schema field present is checked as the decoder
        would; keys that are not schema fields are ignored."""
        vals = {}
        for name, conv in self.convs:
            try:
                v = record[name]
            except KeyError:
                if name in self.needed:
                    raise Malformed("record %s: missing field %s"
                                    % (self.rt.short_name, name)) from None
                continue
            try:
                vals[name] = conv(v)
            except Malformed as e:
                raise Malformed("record %s, field %s: %s" % (self.rt.short_name, name,
                                                              e)) from None
        return vals


class Engine:
    """Applies events to entity states and evaluates features (FEATURES.md §3).

    job_state: job name -> (kind, version, bytes[, fresh bytes]): each job keeping state on a
    kind; their bytes are laid out in the order of job_state (the order of riskflowd's
    `jobs=`), as FEATURES.md §4.4 says. bytes is the size before rounding to 8; the optional
    fresh bytes are the job's fresh state (zeros by default)."""

    def __init__(self, decl, job_state=None):
        self.decl = decl
        self.job_state = dict(job_state) if isinstance(job_state, dict) else (
            list(job_state) if job_state else {})
        # Validate every job (also those on no kind this decl knows: an error).
        _jobs_for(self.job_state, None, decl._kinds)
        self.layouts = {e.name: decl.kind(e.name, self.job_state) for e in decl.entities}
        self.states = {}         # (kind, id) -> EntityState
        self._plans = {}
        self._eval_plans = {}
        self._last_record = None
        self._last_rt = None
        self._last_prevs = None  # per touched kind: the prevs before the last applied event

    # -- lookups
    def kind(self, name):
        """The KindLayout of a kind with this engine's jobs."""
        return self.layouts[name]

    def available(self, record_type):
        return self.decl.available(record_type)

    def _plan(self, record_type):
        p = self._plans.get(record_type)
        if p is None:
            rt = record_type if isinstance(record_type, RecordType) else \
                self.decl.record(record_type)
            p = self._plans.get(rt.full_name)
            if p is None:
                p = self._plans[rt.full_name] = _RecordPlan(self.decl, self.layouts, rt)
            self._plans[record_type] = p
        return p

    def state(self, kind, id):
        """The entity's EntityState (a fresh one, kept from now on, if it has none yet)."""
        lay = self.layouts[kind]
        st = self.states.get((kind, id))
        if st is None:
            st = self.states[(kind, id)] = lay.fresh(id)
        return st

    def has_state(self, kind, id):
        return (kind, id) in self.states

    def put_state(self, kind, id, value):
        """Set an entity's state: an EntityState of this kind's layout, or stored bytes
        (unpacked; ValueError when they are not of this layout)."""
        lay = self.layouts[kind]
        if isinstance(value, EntityState):
            if value.layout.hash != lay.hash or value.layout.size != lay.size:
                raise ValueError("state of another layout")
            st = value
        else:
            st = lay.unpack(value, id)
        st.id = id
        self.states[(kind, id)] = st
        return st

    def _ids(self, plan, vals):
        ids = []
        for kp in plan.kinds:
            i = vals[kp.key]
            if i == "":
                raise BadKey("record %s: empty %s (entity %s)" % (plan.rt.short_name, kp.key,
                                                                  kp.name))
            ids.append(i)
        return ids

    # -- apply
    def apply(self, record_type, record, topic, partition, offset):
        """Apply an event from (topic, partition, offset). Returns False for a replay (nothing
        changed), True otherwise. Malformed / BadKey: the event would be dead-lettered
        (nothing changed).
        CHOICE: an event of a record type that touches no kind has nothing to apply: True."""
        plan = self._plan(record_type)
        vals = plan.extract(record)
        ids = self._ids(plan, vals)
        tid = topic_id(topic)
        partition = operator.index(partition)
        offset = operator.index(offset)
        if not INT32_MIN <= partition <= INT32_MAX:
            raise ValueError("partition %d out of range" % partition)
        if not INT64_MIN <= offset <= INT64_MAX:
            raise ValueError("offset %d out of range" % offset)
        # 1. the replay check, over every touched entity (before any state is created)
        for kp, i in zip(plan.kinds, ids):
            st = self.states.get((kp.name, i))
            if st is not None:
                for s in st.sources:
                    if s[0] == tid and s[1] == partition and s[2] >= offset:
                        self._last_record = None
                        return False
        # 2. apply, kind by kind in declaration order
        t = vals[plan.time_field]
        pre = []
        states = [self.state(kp.name, i) for kp, i in zip(plan.kinds, ids)]
        # delta() reads another kind's previous values as they were before this event.
        snap = {kp.name: [list(p) for p in st.prevs] for kp, st in zip(plan.kinds, states)}
        for kp, st in zip(plan.kinds, states):
            pre.append(snap[kp.name])
            self._apply_kind(kp, st, plan.rt, vals, t, tid, partition, offset, snap)
        self._last_record = record
        self._last_rt = plan.rt
        self._last_prevs = pre
        return True

    @staticmethod
    def _apply_kind(kp, st, rt, vals, t, tid, partition, offset, snap=None):
        if t > st.t_last:
            st.t_last = t
        # advance every group of the kind
        for g, gs in zip(kp.all_groups, st.groups):
            ti = t // g.tile_ms  # floor division, also for negative t
            h = gs.head
            if ti > h:
                n = g.n
                # ti - h is exact here (Python ints): the unsigned 64-bit difference of the C
                # side, which cannot overflow.
                if ti - h >= n:
                    cnt = gs.cnt
                    for k in range(n):
                        cnt[k] = 0
                    for c in gs.cols:
                        for k in range(n):
                            c[k] = 0.0
                else:
                    for x in range(h + 1, ti + 1):
                        k = x % n
                        gs.cnt[k] = 0
                        for c in gs.cols:
                            c[k] = 0.0
                gs.head = ti
        prevs = st.prevs
        # add the event to the groups of its record that it matches
        for g in kp.groups:
            gs = st.groups[g.index]
            # time=FIELD: that time picks the tile; one later than the head, or older than the
            # ring, is in no tile.
            ti = (t if g.time_field is None else vals[g.time_field]) // g.tile_ms
            if ti > gs.head or gs.head - ti >= g.n or not g.matches(rt, vals):
                continue
            k = ti % g.n
            n = gs.cnt[k]
            cols = gs.cols
            for inp, cs, cm2, csq, cmin, cmax in g.blocks:
                x = inp.value(vals, prevs, snap)
                if cm2 is not None:
                    if n == 0:
                        cols[cm2][k] = 0.0
                    else:
                        s = cols[cs][k]  # the sum before this add
                        fn = float(n)
                        cols[cm2][k] += (x - s / fn) * (x - (s + x) / (fn + 1.0))
                if cs is not None:
                    cols[cs][k] += x
                if csq is not None:
                    cols[csq][k] += x * x
                if cmin is not None:
                    cols[cmin][k] = x if n == 0 else _fmin(cols[cmin][k], x)
                if cmax is not None:
                    cols[cmax][k] = x if n == 0 else _fmax(cols[cmax][k], x)
            if n < U32_MAX:
                gs.cnt[k] = n + 1
        # scalar features of this record, file order
        for f in kp.scalars:
            if not f.matches(rt, vals):
                continue
            s = st.scalars[f.scalar]
            agg = f.agg
            if agg == "last":
                if s[0] == INT64_MIN or t >= s[0]:
                    s[0] = t
                    s[1] = f.input.value(vals, prevs, snap)
            elif agg == "time_since_last":
                if s[0] == INT64_MIN:
                    s[1] = f.cap_s
                else:
                    gap = (float(t) - float(s[0])) / 1000.0
                    s[1] = min(max(gap, 0.0), f.cap_s)
                if t > s[0]:
                    s[0] = t
            elif agg == "age":
                if t > s[0]:
                    s[0] = t
            else:  # ewma, dsum: the same S (and W for ewma)
                x = f.input.value(vals, prevs, snap)
                t0 = s[0]
                ew = agg == "ewma"
                if t0 == INT64_MIN:
                    s[1] = x
                    if ew:
                        s[2] = 1.0
                    s[0] = t
                elif t >= t0:
                    # CHOICE: e - t0 (>= 0) is the exact difference (unsigned 64-bit in C),
                    # converted to double; likewise t0 - e below.
                    k = _decay(t - t0, f.halflife_ms)
                    s[1] = s[1] * k + x
                    if ew:
                        s[2] = s[2] * k + 1.0
                    s[0] = t
                else:
                    k = _decay(t0 - t, f.halflife_ms)
                    s[1] = s[1] + k * x
                    if ew:
                        s[2] = s[2] + k
        # previous values of this record's fields, after every feature
        for pi, fld in kp.prevs:
            p = prevs[pi]
            p[0] = 1
            p[1] = float(vals[fld])
        # the source: to the front with this offset, or inserted there (dropping the 5th)
        src = st.sources
        for j, s in enumerate(src):
            if s[0] == tid and s[1] == partition:
                # CHOICE: with duplicate sources (only from hostile stored bytes), the first
                # (most recent) one is moved.
                del src[j]
                break
        src.insert(0, [tid, partition, offset])
        del src[MAX_SOURCES:]

    # -- evaluate
    def _eval_plan(self, plan, names):
        key = (plan.rt.full_name, names)
        ep = self._eval_plans.get(key)
        if ep is not None:
            return ep
        decl = self.decl
        avail = decl.available(plan.rt)
        if names is None:
            want = list(avail)
        else:
            want = list(names)
            av = set(avail)
            for nm in want:
                if nm not in decl._by_name:
                    raise KeyError("unknown feature %r" % (nm,))
                if nm not in av:
                    raise ValueError("feature %s is not available for record %s"
                                     % (nm, plan.rt.full_name))
        need = set(want)
        for it in reversed(decl.items):
            if it.name in need and it.derived:
                need.update(it.args)
        order = [it for it in decl.items if it.name in need]
        kind_pos = {kp.name: i for i, kp in enumerate(plan.kinds)}
        steps = []
        for it in order:
            if it.derived:
                steps.append((0, it, None))
            elif it.agg == "value":
                steps.append((1, it, kind_pos.get(it.kind.name) if it.kind else None))
            else:
                steps.append((2, it, kind_pos[it.kind.name]))
        ep = self._eval_plans[key] = (steps, want)
        return ep

    def evaluate(self, record_type, record, names=None):
        """{name: float} for the features available for the record type (names=None: all of
        them, in file order), from the states as they now stand and the event itself; derived
        in file order. An entity never applied is evaluated as a fresh state.
        CHOICE: change()/logchange() in a value() feature compare the event with the entity's
        previous value *before* this event: when `record` is the record last passed to a
        successful apply(), the previous values as they were before that apply are used (so
        value(change(x)) is the event's change, evaluated before or after applying it)."""
        plan = self._plan(record_type)
        vals = plan.extract(record)
        ids = self._ids(plan, vals)
        steps, want = self._eval_plan(plan, tuple(names) if names is not None else None)
        states = []
        for kp, i in zip(plan.kinds, ids):
            st = self.states.get((kp.name, i))
            states.append(st if st is not None else kp.layout.fresh(i))
        after_apply = record is self._last_record and plan.rt is self._last_rt
        rt = plan.rt
        out = {}
        for typ, it, pos in steps:
            if typ == 2:
                out[it.name] = _stateful_value(it, states[pos])
            elif typ == 1:
                if not it.matches(rt, vals):
                    out[it.name] = 0.0
                elif it.input is None:
                    out[it.name] = 1.0
                else:
                    if pos is None:
                        prevs = None
                    elif after_apply:
                        prevs = self._last_prevs[pos]
                    else:
                        prevs = states[pos].prevs
                    out[it.name] = it.input.value(vals, prevs)
            else:
                a = out[it.args[0]]
                b = out[it.args[1]] if len(it.args) > 1 else None
                out[it.name] = it.compute(a, b)
        if len(out) != len(want):
            out = {nm: out[nm] for nm in want}
        return out


# ----------------------------------------------------------------------------------- the CLI

def layout_report(decl, job_state=None):
    """Per kind: every slot with its byte offset and size, the value size, the layout hash and
    the canonical text that was hashed."""
    out = ["# layout of %s (docs/FEATURES.md §4), %d entit%s"
           % (decl.path, len(decl.entities), "y" if len(decl.entities) == 1 else "ies")]
    for e in decl.entities:
        out.append("")
        out.append(decl.kind(e.name, job_state).describe())
    return "\n".join(out) + "\n"


def _parse_job(text):
    parts = text.split(":")
    if len(parts) != 4:
        raise ValueError("--job %s: want NAME:KIND:VERSION:BYTES" % text)
    return parts[0], (parts[1], int(parts[2]), int(parts[3]))


def main(argv=None):
    import argparse
    ap = argparse.ArgumentParser(
        description="Print the stored layout of every entity of a feature file "
                    "(docs/FEATURES.md §4).")
    ap.add_argument("--layout", required=True, metavar="FILE", help="the feature file")
    ap.add_argument("--schemas", default=None, metavar="DIR",
                    help="schemas directory with registry.txt (default: the repo's schemas/)")
    ap.add_argument("--job", action="append", default=[], metavar="NAME:KIND:VERSION:BYTES",
                    help="a job keeping state on a kind (repeat, in the order of jobs=)")
    a = ap.parse_args(argv)
    try:
        jobs = [_parse_job(j) for j in a.job]
        decl = load(a.layout, a.schemas)
        text = layout_report(decl, jobs)
    except DeclError as e:
        print(str(e), file=sys.stderr)
        return EXIT_CONFIG
    except (OSError, ValueError, KeyError) as e:
        print("riskflow_features: %s" % (e,), file=sys.stderr)
        return EXIT_CONFIG
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
