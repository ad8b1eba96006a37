"""riskflow_scorecard — the Python scorecard of riskflowd's credit job (docs/MODELS.md §2).

The reference the C scorecard is held to (tests/fixtures/credit_scorecard_parity.csv, 1e-9
relative), and the scorer train_credit.py exports and checks. Standard library only (math,
json, struct): importable from any Python 3.8+ without a venv.

    import riskflow_scorecard as rsc
    sc = rsc.load("deploy/models/credit_scorecard.json")     # rsc.ScorecardError if bad
    r = sc.score({"cr_utilisation": 0.42, ...})              # a Result
    r.pd, r.score, r.band, r.reasons                          # reasons: [Reason(feature, value, points_lost)]

    job = rsc.CreditJob(sc, pd_delta=0.02)                    # ENGINE.md §5, the publish rule
    state = rsc.CreditState()                                 # nothing published yet
    update, state = job.on_event(state, features)             # update: a PdUpdate dict or None

Arithmetic, in the order the C code uses it (the parity is to 1e-9 relative, but the order is
written down so that it can be exact):

    bin_j   = number of edges e with e <= x  (x not finite: 0)
    z       = intercept + c_1*woe_1[bin_1] + c_2*woe_2[bin_2] + ...      (file order)
    pd      = 1/(1+exp(-z)) if z >= 0 else exp(z)/(1+exp(z))
    factor  = pdo / ln(2) ;  offset = base_score - factor*ln(base_odds)
    score   = offset - factor*z
    p_j(b)  = -factor * c_j * woe_j[b]            ((-factor)*c_j, then *woe)
    lost_j  = max_b p_j(b) - p_j(bin_j)
    band    = the first band (file order) with min_score <= score; the last band's is null
    reasons = features with lost_j > 0, largest lost first, ties in file order, at most 3
"""

import json
import math
import struct

__all__ = [
    "FORMAT",
    "MAX_REASONS",
    "ScorecardError",
    "Scorecard",
    "Result",
    "Reason",
    "CreditState",
    "CreditJob",
    "load",
    "loads",
    "bin_index",
]

FORMAT = "riskflow.scorecard.v1"
MAX_REASONS = 3
LN2 = math.log(2.0)


class ScorecardError(ValueError):
    """A scorecard document that is not a valid riskflow.scorecard.v1."""


class Reason:
    """An adverse-action reason: the feature, its value and the points it lost."""

    __slots__ = ("feature", "value", "points_lost")

    def __init__(self, feature, value, points_lost):
        self.feature = feature
        self.value = value
        self.points_lost = points_lost

    def as_dict(self):
        return {"feature": self.feature, "value": self.value, "points_lost": self.points_lost}

    def __eq__(self, other):
        return isinstance(other, Reason) and (self.feature, self.value, self.points_lost) == (
            other.feature, other.value, other.points_lost)

    def __repr__(self):
        return "Reason(%r, %r, %r)" % (self.feature, self.value, self.points_lost)


class Result:
    """One scorecard evaluation."""

    __slots__ = ("pd", "score", "band", "band_index", "log_odds", "bins", "points", "reasons")

    def __init__(self, pd, score, band, band_index, log_odds, bins, points, reasons):
        self.pd = pd                  # probability of default
        self.score = score            # points: offset - factor * log_odds
        self.band = band              # band name
        self.band_index = band_index  # its index in the file's band list
        self.log_odds = log_odds      # z
        self.bins = bins              # bin index per feature, file order
        self.points = points          # p_j(bin_j) per feature, file order
        self.reasons = reasons        # [Reason], at most MAX_REASONS

    def __repr__(self):
        return "Result(pd=%r, score=%r, band=%r, reasons=%r)" % (
            self.pd, self.score, self.band, self.reasons)


def bin_index(edges, x):
    """The number of edges e with e <= x (a value on an edge falls in the upper bin); a
    non-finite x falls in bin 0. numpy's searchsorted(edges, x, side="right")."""
    if not math.isfinite(x):
        return 0
    lo, hi = 0, len(edges)
    while lo < hi:  # first edge > x
        mid = (lo + hi) // 2
        if edges[mid] <= x:
            lo = mid + 1
        else:
            hi = mid
    return lo


def _sigmoid(z):
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


def _num(v, what):
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ScorecardError("%s: not a number: %r" % (what, v))
    v = float(v)
    if not math.isfinite(v):
        raise ScorecardError("%s: not finite: %r" % (what, v))
    return v


class Scorecard:
    """A riskflow.scorecard.v1 model. Build with load()/loads() or Scorecard(doc)."""

    def __init__(self, doc):
        if not isinstance(doc, dict):
            raise ScorecardError("the document is not a JSON object")
        if doc.get("format") != FORMAT:
            raise ScorecardError("format: expected %r, got %r" % (FORMAT, doc.get("format")))
        for k in ("name", "version"):
            if not isinstance(doc.get(k), str) or not doc[k]:
                raise ScorecardError("%s: a non-empty string is required" % k)
        self.name = doc["name"]
        self.version = doc["version"]
        feats = doc.get("features")
        if not isinstance(feats, list) or not feats:
            raise ScorecardError("features: a non-empty list is required")
        coefs = doc.get("coefficients")
        if not isinstance(coefs, list) or len(coefs) != len(feats):
            raise ScorecardError("coefficients: one per feature is required (%d features)"
                                 % len(feats))
        self.features = []   # names, file order
        self.edges = []      # [[float]]
        self.woe = []        # [[float]]
        seen = set()
        for j, f in enumerate(feats):
            where = "features[%d]" % j
            if not isinstance(f, dict) or not isinstance(f.get("name"), str) or not f["name"]:
                raise ScorecardError("%s: an object with a name is required" % where)
            name = f["name"]
            if name in seen:
                raise ScorecardError("%s: feature %r appears twice" % (where, name))
            seen.add(name)
            edges = f.get("edges")
            woe = f.get("woe")
            if not isinstance(edges, list) or not isinstance(woe, list):
                raise ScorecardError("%s (%s): edges and woe lists are required" % (where, name))
            edges = [_num(e, "%s.edges" % name) for e in edges]
            woe = [_num(w, "%s.woe" % name) for w in woe]
            for a, b in zip(edges, edges[1:]):
                if not a < b:
                    raise ScorecardError("%s.edges: not strictly increasing (%r, %r)"
                                         % (name, a, b))
            if len(woe) != len(edges) + 1:
                raise ScorecardError("%s: %d edges need %d woe values, got %d"
                                     % (name, len(edges), len(edges) + 1, len(woe)))
            self.features.append(name)
            self.edges.append(edges)
            self.woe.append(woe)
        self.coefficients = [_num(c, "coefficients[%d]" % j) for j, c in enumerate(coefs)]
        self.intercept = _num(doc.get("intercept"), "intercept")
        sc = doc.get("scaling")
        if not isinstance(sc, dict):
            raise ScorecardError("scaling: an object is required")
        self.base_score = _num(sc.get("base_score"), "scaling.base_score")
        self.base_odds = _num(sc.get("base_odds"), "scaling.base_odds")
        self.pdo = _num(sc.get("pdo"), "scaling.pdo")
        if not self.base_odds > 0:
            raise ScorecardError("scaling.base_odds: must be > 0")
        if not self.pdo > 0:
            raise ScorecardError("scaling.pdo: must be > 0")
        bands = doc.get("bands")
        if not isinstance(bands, list) or not bands:
            raise ScorecardError("bands: a non-empty list is required")
        self.band_names = []
        self.band_min = []   # float, None for the last
        for i, b in enumerate(bands):
            if not isinstance(b, dict) or not isinstance(b.get("name"), str) or not b["name"]:
                raise ScorecardError("bands[%d]: an object with a name is required" % i)
            if "min_score" not in b:
                raise ScorecardError("bands[%d]: min_score is required" % i)
            last = i == len(bands) - 1
            if last:
                if b["min_score"] is not None:
                    raise ScorecardError("bands[%d]: the last band's min_score must be null" % i)
                m = None
            else:
                m = _num(b["min_score"], "bands[%d].min_score" % i)
                if self.band_min and not m < self.band_min[-1]:
                    raise ScorecardError("bands[%d].min_score: bands must be in decreasing "
                                         "min_score order" % i)
            if b["name"] in self.band_names:
                raise ScorecardError("bands[%d]: band %r appears twice" % (i, b["name"]))
            self.band_names.append(b["name"])
            self.band_min.append(m)
        self.factor = self.pdo / LN2
        self.offset = self.base_score - self.factor * math.log(self.base_odds)
        # p_j(b) for every bin, and each feature's best
        self.bin_points = [[-self.factor * c * w for w in woe]
                           for c, woe in zip(self.coefficients, self.woe)]
        self.max_points = [max(p) for p in self.bin_points]
        self.doc = doc

    # -- scoring --------------------------------------------------------------------------

    def band_of(self, score):
        """(index, name) of the first band whose min_score <= score."""
        for i, m in enumerate(self.band_min):
            if m is None or m <= score:
                return i, self.band_names[i]
        raise AssertionError("unreachable: the last band catches everything")

    def score(self, features):
        """Score a mapping feature name -> value (every model feature must be present)."""
        values = []
        for name in self.features:
            try:
                values.append(float(features[name]))
            except KeyError:
                raise KeyError("feature %r missing" % name) from None
        return self.score_values(values)

    def score_values(self, values):
        """Score the model's features given as a sequence in file order."""
        if len(values) != len(self.features):
            raise ValueError("%d values for %d features" % (len(values), len(self.features)))
        z = self.intercept
        bins = []
        for edges, woe, c, x in zip(self.edges, self.woe, self.coefficients, values):
            b = bin_index(edges, x)
            bins.append(b)
            z = z + c * woe[b]
        pd = _sigmoid(z)
        score = self.offset - self.factor * z
        points = [self.bin_points[j][b] for j, b in enumerate(bins)]
        lost = []
        for j, b in enumerate(bins):
            pl = self.max_points[j] - points[j]
            if pl > 0:
                lost.append((-pl, j))
        lost.sort()  # largest first; ties: file order (j)
        reasons = [Reason(self.features[j], float(values[j]), -npl)
                   for npl, j in lost[:MAX_REASONS]]
        bi, bn = self.band_of(score)
        return Result(pd, score, bn, bi, z, bins, points, reasons)

    def to_json(self):
        return dumps(self.doc)


def loads(text):
    try:
        doc = json.loads(text)
    except ValueError as e:
        raise ScorecardError("not JSON: %s" % e) from None
    return Scorecard(doc)


def load(path):
    with open(path, encoding="utf-8") as f:
        return loads(f.read())


def dumps(doc):
    """The scorecard JSON as train_credit.py writes it: floats as repr (shortest decimal
    that reads back to the same double), one feature per line."""
    def num(v):
        if v is None:
            return "null"
        if isinstance(v, int) and not isinstance(v, bool):
            return str(v)
        return repr(float(v))

    def nums(vs):
        return "[" + ", ".join(num(v) for v in vs) + "]"

    lines = ["{"]
    lines.append('  "format": %s,' % json.dumps(doc["format"]))
    lines.append('  "name": %s,' % json.dumps(doc["name"]))
    lines.append('  "version": %s,' % json.dumps(doc["version"]))
    lines.append('  "features": [')
    fl = []
    for f in doc["features"]:
        fl.append('    {"name": %s, "edges": %s, "woe": %s}'
                  % (json.dumps(f["name"]), nums(f["edges"]), nums(f["woe"])))
    lines.append(",\n".join(fl))
    lines.append("  ],")
    lines.append('  "coefficients": %s,' % nums(doc["coefficients"]))
    lines.append('  "intercept": %s,' % num(doc["intercept"]))
    s = doc["scaling"]
    lines.append('  "scaling": {"base_score": %s, "base_odds": %s, "pdo": %s},'
                 % (num(s["base_score"]), num(s["base_odds"]), num(s["pdo"])))
    bl = ['{"name": %s, "min_score": %s}' % (json.dumps(b["name"]), num(b["min_score"]))
          for b in doc["bands"]]
    lines.append('  "bands": [' + ",\n            ".join(bl) + "]")
    extra = [k for k in doc if k not in ("format", "name", "version", "features",
                                         "coefficients", "intercept", "scaling", "bands")]
    if extra:
        lines[-1] += ","
        for i, k in enumerate(extra):
            lines.append("  %s: %s%s" % (json.dumps(k), json.dumps(doc[k], sort_keys=True),
                                         "," if i < len(extra) - 1 else ""))
    lines.append("}")
    return "\n".join(lines) + "\n"


# -- the credit job's publish rule (docs/ENGINE.md §5) ---------------------------------------

_STATE = struct.Struct("<diI")
STATE_BYTES = _STATE.size  # 16
STATE_VERSION = 1


def model_signature(version):
    """The low 32 bits of FNV-1a 64 of the model version (docs/ENGINE.md §5)."""
    h = 14695981039346656037
    for b in version.encode():
        h = ((h ^ b) * 1099511628211) & 0xFFFFFFFFFFFFFFFF
    return h & 0xFFFFFFFF


class CreditState:
    """The credit job's state on a customer (docs/ENGINE.md §5), 16 bytes, all zero when
    fresh: f64 published_pd, i32 published band (index + 1; 0: none), u32 model signature."""

    __slots__ = ("published_pd", "band1", "signature")

    def __init__(self, published_pd=0.0, band1=0, signature=0):
        self.published_pd = float(published_pd)
        self.band1 = int(band1)
        self.signature = int(signature)

    def band_index(self, scorecard):
        """The published band's index for this scorecard, or -1: none published, or published
        by another model version (its index may mean another band)."""
        if self.signature != model_signature(scorecard.version):
            return -1
        if not 1 <= self.band1 <= len(scorecard.band_names):
            return -1
        return self.band1 - 1

    def pack(self):
        return _STATE.pack(self.published_pd, self.band1, self.signature)

    @classmethod
    def unpack(cls, buf):
        if len(buf) != STATE_BYTES:
            raise ValueError("credit state: %d bytes, expected %d" % (len(buf), STATE_BYTES))
        return cls(*_STATE.unpack(bytes(buf)))

    def __eq__(self, other):
        return isinstance(other, CreditState) and (
            self.published_pd, self.band1, self.signature) == (
            other.published_pd, other.band1, other.signature)

    def __repr__(self):
        return "CreditState(published_pd=%r, band1=%r, signature=%#x)" % (
            self.published_pd, self.band1, self.signature)


class CreditJob:
    """The credit job's decision after each applied event (docs/ENGINE.md §5): publish a
    PdUpdate when the customer has no published PD from this model version yet, or the score
    is more than `hysteresis` points outside the published band, or |pd - published pd| >
    pd_delta (strictly); then that PD and its band are the published ones. Otherwise nothing
    is published and the state is unchanged."""

    def __init__(self, scorecard, pd_delta=0.02, hysteresis=5.0):
        if not pd_delta >= 0:
            raise ValueError("credit.pd.delta must be >= 0")
        if not hysteresis >= 0:
            raise ValueError("credit.band.hysteresis must be >= 0")
        self.scorecard = scorecard
        self.pd_delta = float(pd_delta)
        self.hysteresis = float(hysteresis)
        self.signature = model_signature(scorecard.version)

    def outside(self, band, score):
        """Whether score is more than the hysteresis outside band's [min_score, the better
        band's min_score) (the best band has no upper edge, the worst no lower one)."""
        mins = self.scorecard.band_min
        lo = mins[band]
        if lo is not None and score < lo - self.hysteresis:
            return True
        return band > 0 and score >= mins[band - 1] + self.hysteresis

    def should_publish(self, state, result):
        """(publish, previous_band): previous_band is "" when nothing was published."""
        b = state.band_index(self.scorecard)
        if b < 0:
            return True, ""
        prev = self.scorecard.band_names[b]
        if abs(result.pd - state.published_pd) > self.pd_delta:
            return True, prev
        return self.outside(b, result.score), prev

    def decide(self, state, result):
        """(update or None, new state) for a scorecard result. The update is a dict with the
        PdUpdate fields the scorecard determines (pd, score, band, previous_band, reasons,
        model_version); the job adds the customer and the cause event."""
        publish, prev = self.should_publish(state, result)
        if not publish:
            return None, state
        update = {
            "pd": result.pd,
            "score": result.score,
            "band": result.band,
            "previous_band": prev,
            "reasons": [r.as_dict() for r in result.reasons],
            "model_version": self.scorecard.version,
        }
        return update, CreditState(result.pd, result.band_index + 1, self.signature)

    def on_event(self, state, features):
        """Score the customer's features (after the event is applied) and decide."""
        return self.decide(state, self.scorecard.score(features))
