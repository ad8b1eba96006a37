"""rfkit — helpers for riskflow's end-to-end tests (tests/integration/test_e2e.py).

Everything here is independent of the daemon's own code: payments are encoded with fastavro
from schemas/*.avsc and framed by hand, features come from tools/train/riskflow_features.py,
scores from the model JSON with plain Python math. Kafka through confluent-kafka (its own
bundled librdkafka), Redis through redis-py.
"""

import io
import json
import math
import os
import signal
import struct
import subprocess
import sys
import threading
import time
import uuid

import fastavro
import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
SCHEMAS_DIR = os.path.join(ROOT, "schemas")
MODEL_PATH = os.path.join(ROOT, "deploy", "models", "fraud_lr.json")
FEATURES_PATH = os.path.join(ROOT, "deploy", "features.conf")

sys.path.insert(0, os.path.join(ROOT, "tools", "train"))
import riskflow_features as rff  # noqa: E402  (the independent feature computation)

PAYMENT_ID, SCORE_ID, ALERT_ID = 1, 2, 3

# The declarations the daemon runs with (features.path), read by the independent reference.
DECL = rff.load(FEATURES_PATH, SCHEMAS_DIR)
EXIT_CONFIG = 78


# ---------------------------------------------------------------------------- environment

def daemon_path():
    path = os.environ.get("RF_DAEMON")
    if not path:
        pytest.fail("RF_DAEMON is not set: point it at the riskflowd binary to test "
                    "(ctest sets it; by hand: RF_DAEMON=build/riskflowd)", pytrace=False)
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        pytest.fail("RF_DAEMON=%s is not an executable file" % path, pytrace=False)
    return path


class Services:
    def __init__(self, bootstrap, redis_host, redis_port):
        self.bootstrap = bootstrap
        self.redis_host = redis_host
        self.redis_port = redis_port
        self.admin = AdminClient({"bootstrap.servers": bootstrap})

    def redis(self):
        import redis
        return redis.Redis(host=self.redis_host, port=self.redis_port, socket_timeout=10)


def connect_services():
    """The services of tools/services.sh, from the env it writes. Fails (never skips) when they
    are not configured or do not answer: an integration run without them proves nothing."""
    boot = os.environ.get("RF_KAFKA_BOOTSTRAP")
    rport = os.environ.get("RF_REDIS_PORT")
    rhost = os.environ.get("RF_REDIS_HOST", "127.0.0.1")
    missing = [n for n, v in (("RF_KAFKA_BOOTSTRAP", boot), ("RF_REDIS_PORT", rport)) if not v]
    if missing:
        pytest.fail("%s not set: the end-to-end tests need the real Kafka broker and Redis. "
                    "Run `tools/services.sh start` and `source .run/services.env` (tools/test.sh "
                    "does both)." % " and ".join(missing), pytrace=False)
    svc = Services(boot, rhost, int(rport))
    try:
        md = svc.admin.list_topics(timeout=10)
        if not md.brokers:
            raise KafkaException("no brokers in metadata")
    except Exception as e:  # noqa: BLE001
        pytest.fail("Kafka at RF_KAFKA_BOOTSTRAP=%s does not answer: %s (is tools/services.sh "
                    "running?)" % (boot, e), pytrace=False)
    try:
        if not svc.redis().ping():
            raise RuntimeError("PING failed")
    except Exception as e:  # noqa: BLE001
        pytest.fail("Redis at %s:%s does not answer: %s (is tools/services.sh running?)"
                    % (rhost, rport, e), pytrace=False)
    return svc


def unique(prefix):
    return "%s-%s" % (prefix, uuid.uuid4().hex[:12])


def create_topics(svc, topics, timeout=30):
    """topics: {name: partitions}. Waits until the metadata shows every partition led."""
    fs = svc.admin.create_topics([NewTopic(t, num_partitions=n, replication_factor=1)
                                  for t, n in topics.items()], operation_timeout=timeout)
    for t, f in fs.items():
        f.result(timeout=timeout)
    deadline = time.monotonic() + timeout
    while True:
        md = svc.admin.list_topics(timeout=10)
        ok = all(t in md.topics and md.topics[t].error is None
                 and len(md.topics[t].partitions) == n
                 and all(p.leader >= 0 for p in md.topics[t].partitions.values())
                 for t, n in topics.items())
        if ok:
            return
        if time.monotonic() > deadline:
            raise AssertionError("topics %s not ready after %d s" % (list(topics), timeout))
        time.sleep(0.1)


def delete_topics(svc, names):
    try:
        fs = svc.admin.delete_topics(list(names), operation_timeout=30)
        for f in fs.values():
            try:
                f.result(timeout=30)
            except Exception:  # noqa: BLE001
                pass
    except Exception:  # noqa: BLE001
        pass


# ---------------------------------------------------------------------------- Avro

def _load_schema(name):
    with open(os.path.join(SCHEMAS_DIR, name)) as f:
        return fastavro.parse_schema(json.load(f))


PAYMENT_SCHEMA = _load_schema("payment.avsc")
SCORE_SCHEMA = _load_schema("fraud_score.avsc")
ALERT_SCHEMA = _load_schema("fraud_alert.avsc")


def avro_body(schema, record):
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, schema, record)
    return buf.getvalue()


def confluent(schema_id, body):
    return b"\x00" + struct.pack(">I", schema_id) + body


def encode_payment(p, framing="confluent"):
    body = avro_body(PAYMENT_SCHEMA, p)
    return confluent(PAYMENT_ID, body) if framing == "confluent" else body


def decode_confluent(buf, schema_id, schema):
    """Decode one Confluent-framed record; the whole buffer must be consumed."""
    assert buf is not None and len(buf) >= 5, "output record shorter than the Confluent header"
    assert buf[0] == 0, "output record: magic byte %d, want 0" % buf[0]
    sid = struct.unpack(">I", buf[1:5])[0]
    assert sid == schema_id, "output record: schema id %d, want %d" % (sid, schema_id)
    bio = io.BytesIO(buf[5:])
    rec = fastavro.schemaless_reader(bio, schema, return_record_name=False)
    assert bio.tell() == len(buf) - 5, \
        "output record: %d trailing bytes after the Avro body" % (len(buf) - 5 - bio.tell())
    return rec


def ts_ms(v):
    """fastavro turns timestamp-millis into datetimes; back to Unix ms."""
    if isinstance(v, int):
        return v
    return int(round(v.timestamp() * 1000))


# ---------------------------------------------------------------------------- payments

def _symbols(schema_file, field):
    with open(os.path.join(SCHEMAS_DIR, schema_file)) as f:
        doc = json.load(f)
    for fl in doc["fields"]:
        if fl["name"] == field:
            return tuple(fl["type"]["symbols"])
    raise KeyError(field)


CHANNELS = _symbols("payment.avsc", "channel")
KINDS = _symbols("payment.avsc", "kind")
# Midnight UTC 60 days ago: every generated stream lies in the past, whatever the date
# (riskflowd dead-letters events ahead of its clock: input.max.future.ms).
T_BASE_MS = (int(time.time()) // 86400 - 60) * 86400000


def gen_stream(rng, customers, n, prefix, t_base=T_BASE_MS, huge_rate=0.03):
    """n payments over the given customer ids, sorted by event time. Per customer the times
    are strictly increasing with gaps from seconds (same 5-min tile) to days (windows roll).
    Returns a list of payment dicts (payment.avsc field names, enum symbols as strings)."""
    per = {c: 0 for c in customers}
    for _ in range(n):
        per[rng.choice(customers)] += 1
    events = []
    for ci, c in enumerate(customers):
        t = t_base + rng.randrange(0, 6 * 3600 * 1000)
        for _ in range(per[c]):
            r = rng.random()
            if r < 0.25:
                gap = rng.randrange(1000, 240 * 1000)              # same or next 5-min tile
            elif r < 0.55:
                gap = rng.randrange(5 * 60 * 1000, 55 * 60 * 1000)  # inside the hour
            elif r < 0.75:
                gap = rng.randrange(3600 * 1000, 6 * 3600 * 1000)   # the 1 h window rolls
            elif r < 0.90:
                gap = rng.randrange(6 * 3600 * 1000, 23 * 3600 * 1000)
            else:
                gap = rng.randrange(25 * 3600 * 1000, 4 * 86400 * 1000)  # 24 h rolls too
            t += gap
            r = rng.random()
            if r < huge_rate:
                amount = rng.randrange(150000, 2500000)   # 1500 .. 25000: alerts
            elif r < huge_rate + 0.03:
                amount = -rng.randrange(100, 50000)       # a reversal / refund
            elif r < huge_rate + 0.05:
                amount = 0
            else:
                amount = int(math.exp(rng.gauss(math.log(4500), 0.9)))
            kind = rng.choice(KINDS) if rng.random() < 0.3 else "PURCHASE"
            if amount < 0:
                kind = "REFUND"
            events.append({
                "event_id": "%s-%s-%06d" % (prefix, c, len(events)),
                "customer_id": c,
                "card_token": "tok_%s_%d" % (c, rng.randrange(2)),
                "merchant_id": "m%04d" % rng.randrange(500),
                "terminal_id": "t%05d" % rng.randrange(2000),
                "mcc": rng.choice([5411, 5812, 5999, 6011, 4829, 5732]),
                "amount_minor": amount,
                "currency": rng.choice(["EUR", "EUR", "EUR", "USD", "GBP"]),
                "channel": rng.choice(CHANNELS),
                "country": rng.choice(["DE", "FR", "NL", "GB", "US", "BEL"]),
                "kind": kind,
                "event_time": t,
            })
    events.sort(key=lambda e: (e["event_time"], e["event_id"]))
    return events


class Produced:
    """Where one produced message landed (filled by its delivery report)."""
    __slots__ = ("topic", "key", "value", "partition", "offset", "err", "payment", "expect")

    def __init__(self, topic, key, value, payment=None, expect=None):
        self.topic, self.key, self.value = topic, key, value
        self.payment, self.expect = payment, expect
        self.partition = self.offset = None
        self.err = None


def free_port():
    """A loopback TCP port nothing listens on (for a listener, or a refused connection)."""
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def fraud_conf(svc, run, features=None, model=None, **extra):
    """riskflowd's config for jobs=fraud on topics and keys named after `run` (<run>.feed in,
    <run>.scores, .alerts, .dlq out; Redis prefix <run>); extra: more keys ('_' for '.')."""
    conf = {
        "kafka.bootstrap.servers": svc.bootstrap,
        "kafka.group.id": run + ".group",
        "input.topics": run + ".feed",
        "jobs": "fraud",
        "features.path": features or FEATURES_PATH,
        "schemas.dir": SCHEMAS_DIR,
        "fraud.model.path": model or MODEL_PATH,
        "fraud.scores.topic": run + ".scores",
        "fraud.alerts.topic": run + ".alerts",
        "output.dlq.topic": run + ".dlq",
        "redis.host": svc.redis_host,
        "redis.port": svc.redis_port,
        "redis.key.prefix": run,
    }
    conf.update({k.replace("_", "."): v for k, v in extra.items()})
    return conf


def make_producer(svc, **extra):
    conf = {"bootstrap.servers": svc.bootstrap, "enable.idempotence": True, "acks": "all",
            "linger.ms": 5, "message.max.bytes": 2000000}
    conf.update(extra)
    return Producer(conf)


def produce(producer, rec):
    def on_delivery(err, msg, rec=rec):
        if err is not None:
            rec.err = err
        else:
            rec.partition, rec.offset = msg.partition(), msg.offset()
    while True:
        try:
            producer.produce(rec.topic, key=rec.key, value=rec.value, on_delivery=on_delivery)
            break
        except BufferError:
            producer.poll(0.05)
    producer.poll(0)


def produce_checked(producer, recs, timeout=60):
    """Produce recs and wait until every one is delivered."""
    for r in recs:
        produce(producer, r)
    flush_checked(producer, recs, timeout)


def flush_checked(producer, recs, timeout=60):
    left = producer.flush(timeout)
    assert left == 0, "test producer: %d messages not delivered after %d s" % (left, timeout)
    bad = [r for r in recs if r.err is not None or r.offset is None]
    assert not bad, "test producer: %d messages failed, first: %s" % (len(bad), bad[0].err)


# ---------------------------------------------------------------------------- the daemon

class Daemon:
    """riskflowd as a subprocess with a config file in tmp_dir; stderr to a log file."""

    def __init__(self, tmp_dir, conf, name="riskflowd", stdout_unread=False):
        self.tmp_dir = str(tmp_dir)
        self.conf_path = os.path.join(self.tmp_dir, name + ".properties")
        self.log_path = os.path.join(self.tmp_dir, name + ".log")
        self.out_path = os.path.join(self.tmp_dir, name + ".stdout")
        with open(self.conf_path, "w") as f:
            f.write("# written by tests/integration/test_e2e.py\n")
            for k, v in conf.items():
                f.write("%s=%s\n" % (k, v))
        self.proc = None
        self.runs = 0
        self.stdout_unread = stdout_unread  # stdout a pipe nobody reads (it fills, then blocks)

    def start(self):
        self.runs += 1
        self._log = open(self.log_path, "ab")
        self._log.write(b"\n===== run %d =====\n" % self.runs)
        self._log.flush()
        self._out = open(self.out_path, "ab")
        out = subprocess.PIPE if self.stdout_unread else self._out
        self.proc = subprocess.Popen([daemon_path(), "-c", self.conf_path], stdout=out,
                                     stderr=self._log, stdin=subprocess.DEVNULL, cwd=ROOT)
        return self

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def assert_alive(self):
        if not self.alive():
            pytest.fail("riskflowd exited early with code %s\n%s"
                        % (self.proc.returncode, self.log_tail()), pytrace=False)

    def sigterm_ready(self, timeout=10):
        """Wait until the process blocks or catches SIGTERM (main() blocks it first thing):
        a SIGTERM sent earlier, while the loader or the sanitizers start up, would kill it
        with the default action instead of asking it to stop."""
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            try:
                with open("/proc/%d/status" % self.proc.pid) as f:
                    st = dict(line.split(":", 1) for line in f if ":" in line)
                mask = int(st["SigBlk"], 16) | int(st["SigCgt"], 16)
                if mask & (1 << (signal.SIGTERM - 1)):
                    return
            except (OSError, KeyError, ValueError):
                return
            time.sleep(0.01)

    def stop(self, timeout=30):
        """SIGTERM; returns (exit code, seconds to exit). Kills it if it does not exit."""
        t0 = time.monotonic()
        self.sigterm_ready()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            rc = None
        self._log.close()
        self._out.close()
        return rc, time.monotonic() - t0

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def log_text(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def log_tail(self, lines=80):
        t = self.log_text().splitlines()
        return "---- riskflowd log (%s), last %d lines ----\n%s\n---- end ----" % (
            self.log_path, min(lines, len(t)), "\n".join(t[-lines:]))


# ---------------------------------------------------------------------------- reading topics

def partitions_of(svc, topic):
    md = svc.admin.list_topics(topic, timeout=10)
    return sorted(md.topics[topic].partitions)


class TopicReader:
    """Reads every partition of a topic from the beginning (manual assignment, no commits)."""

    def __init__(self, svc, topic, isolation="read_committed"):
        self.topic = topic
        self.c = Consumer({"bootstrap.servers": svc.bootstrap, "group.id": unique("rf-e2e-reader"),
                           "enable.auto.commit": False, "auto.offset.reset": "earliest",
                           "enable.partition.eof": False, "fetch.wait.max.ms": 50,
                           "isolation.level": isolation})
        self.parts = partitions_of(svc, topic)
        self.c.assign([TopicPartition(topic, p, 0) for p in self.parts])
        self.msgs = []
        OPEN_READERS.append(self)

    def poll(self, max_wait=0.2):
        got = self.c.consume(num_messages=1000, timeout=max_wait)
        for m in got:
            if m.error():
                raise AssertionError("reading %s: %s" % (self.topic, m.error()))
            self.msgs.append(m)
        return len(got)

    def end_offsets(self):
        return {p: self.c.get_watermark_offsets(TopicPartition(self.topic, p), timeout=10)[1]
                for p in self.parts}

    def read_to_end(self, timeout=30):
        """Everything up to the current high watermarks."""
        ends = self.end_offsets()
        deadline = time.monotonic() + timeout
        while True:
            have = {}
            for m in self.msgs:
                have[m.partition()] = max(have.get(m.partition(), -1), m.offset())
            # Transactional outputs end with a commit marker, and aborted ones are skipped:
            # the reader's position passes them without a message to show for it.
            pos = {tp.partition: tp.offset for tp in
                   self.c.position([TopicPartition(self.topic, p) for p in self.parts])}
            if all(have.get(p, -1) + 1 >= e or pos.get(p, -1) >= e for p, e in ends.items()):
                return ends
            if time.monotonic() > deadline:
                raise AssertionError("reading %s: not at the end offsets %s after %d s (have %s)"
                                     % (self.topic, ends, timeout, have))
            self.poll()

    def close(self):
        if self in OPEN_READERS:
            OPEN_READERS.remove(self)
            self.c.close()


OPEN_READERS = []  # readers a test left open: conftest closes them after each test


def committed_offsets(svc, group, topic_parts):
    """The group's committed offsets {(topic, partition): offset} (negative: none)."""
    c = Consumer({"bootstrap.servers": svc.bootstrap, "group.id": group,
                  "enable.auto.commit": False})
    try:
        # A broker just started answers "not coordinator" or "coordinator load in progress"
        # for a while, without flagging them retriable: wait those out.
        waits = (KafkaError.NOT_COORDINATOR, KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
                 KafkaError.COORDINATOR_NOT_AVAILABLE)
        deadline = time.monotonic() + 30
        while True:
            try:
                tps = c.committed([TopicPartition(t, p) for t, p in topic_parts], timeout=15)
                return {(tp.topic, tp.partition): tp.offset for tp in tps}
            except KafkaException as e:
                err = e.args[0] if e.args else None
                if (err is None or not (err.retriable() or err.code() in waits)
                        or time.monotonic() > deadline):
                    raise
                time.sleep(0.5)
    finally:
        c.close()


def end_offsets(svc, topic_parts):
    c = Consumer({"bootstrap.servers": svc.bootstrap, "group.id": unique("rf-e2e-wm"),
                  "enable.auto.commit": False})
    try:
        return {(t, p): c.get_watermark_offsets(TopicPartition(t, p), timeout=10)[1]
                for t, p in topic_parts}
    finally:
        c.close()


def wait_committed_to_end(svc, daemon, group, topic, timeout=120):
    """Wait until the group has committed every partition of topic to its end offset."""
    parts = [(topic, p) for p in partitions_of(svc, topic)]
    ends = end_offsets(svc, parts)
    deadline = time.monotonic() + timeout
    while committed_offsets(svc, group, parts) != ends:
        daemon.assert_alive()
        assert time.monotonic() < deadline, "offsets not committed to the end after %d s\n%s" \
            % (timeout, daemon.log_tail())
        time.sleep(0.5)


def wait_outputs(reader, daemon, n, what, timeout=90):
    """Poll reader until it holds n messages."""
    deadline = time.monotonic() + timeout
    while len(reader.msgs) < n:
        reader.poll()
        daemon.assert_alive()
        assert time.monotonic() < deadline, "%s: %d outputs on %s after %d s, want %d\n%s" % (
            what, len(reader.msgs), reader.topic, timeout, n, daemon.log_tail())


def run_with_restarts(svc, producer, daemon, recs, cuts, reader, step, group, topic):
    """The restart drill: produce recs[:cuts[0]], start, wait for `step` outputs on reader,
    SIGKILL (outputs acknowledged, state maybe not written); produce up to cuts[1], start,
    wait for `step` more, SIGTERM (drains, writes, commits; exit 0); produce the rest, start,
    wait until the group has committed every partition of topic to its end, SIGTERM."""
    produce_checked(producer, recs[:cuts[0]])
    daemon.start()
    wait_outputs(reader, daemon, step, "first run")
    daemon.kill()
    produce_checked(producer, recs[cuts[0]:cuts[1]])
    daemon.start()
    wait_outputs(reader, daemon, len(reader.msgs) + step, "after the SIGKILL")
    stop_clean(daemon)
    produce_checked(producer, recs[cuts[1]:])
    daemon.start()
    wait_committed_to_end(svc, daemon, group, topic)
    stop_clean(daemon)


def run_to_outputs(daemon, reader, n, what):
    """Start daemon, wait for n outputs on reader, stop it cleanly; on failure kill it and
    print its log."""
    try:
        daemon.start()
        wait_outputs(reader, daemon, n, what)
        stop_clean(daemon)
    except BaseException:
        daemon.kill()
        print(daemon.log_tail(80))
        raise


def readyz(port):
    """(status, body) of riskflowd's /readyz on 127.0.0.1:port."""
    import urllib.error
    import urllib.request
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d/readyz" % port, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def stop_clean(daemon):
    """SIGTERM, and exit 0 within 30 s."""
    rc, _ = daemon.stop(timeout=30)
    assert rc == 0, "riskflowd exited %s after SIGTERM\n%s" % (rc, daemon.log_tail())


def check_poison(dlq_msgs, poison):
    """poison: [(key, value, reason)]. Each has a DLQ record with its reason; a message taken
    again after a SIGKILL is dead-lettered again from the same source coordinates, so the
    records come from exactly len(poison) sources."""
    dl = {}
    for m in dlq_msgs:
        h = headers_dict(m)
        dl[(m.key() or b"", h.get("rf.reason"))] = h
    for key, _value, reason in poison:
        assert (key, reason) in dl, "no DLQ record for %r with reason %s; DLQ has %s" % (
            key, reason, sorted(dl))
    sources = {(h["rf.source.partition"], h["rf.source.offset"]) for h in
               (headers_dict(m) for m in dlq_msgs)}
    assert len(sources) == len(poison), "DLQ: records from %d sources, want %d" % (
        len(sources), len(poison))


def headers_dict(msg):
    out = {}
    for k, v in msg.headers() or []:
        assert k not in out, "header %s appears twice" % k
        out[k] = v.decode() if isinstance(v, (bytes, bytearray)) else v
    return out


# ---------------------------------------------------------------------------- the model

class Model:
    """riskflow.logistic.v1 (include/riskflow/model.h) scored with plain Python floats."""

    def __init__(self, path=MODEL_PATH):
        with open(path) as f:
            m = json.load(f)
        self.version = m["version"]
        self.features = list(m["features"])
        self.mean = m["scaler"]["mean"]
        self.scale = m["scaler"]["scale"]
        self.coef = m["coefficients"]
        self.intercept = m["intercept"]

    def contributions(self, x):
        return [c * (v - mu) / s for c, v, mu, s in zip(self.coef, x, self.mean, self.scale)]

    def score(self, x):
        z = self.intercept + math.fsum(self.contributions(x))
        if z >= 0:
            return 1.0 / (1.0 + math.exp(-z))
        e = math.exp(z)
        return e / (1.0 + e)

    def reasons(self, x, k=3):
        """The k largest positive contributions, descending: [(name, value, contribution)]."""
        cs = self.contributions(x)
        order = sorted(range(len(cs)), key=lambda i: -cs[i])
        return [(self.features[i], x[i], cs[i]) for i in order[:k] if cs[i] > 0]


def close(a, b, rel=1e-9, abs_=1e-12):
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return math.isclose(a, b, rel_tol=rel, abs_tol=abs_)


def _both_orders(items):
    """items ((payment, topic, partition, offset), each customer's in its order) in an order
    that also keeps each (topic, partition) in offset order: a topological sort of the two
    chains, the earliest listed first when several are free."""
    import heapq
    nxt, indeg = {}, [0] * len(items)
    last_c, by_part = {}, {}
    for i, (p, topic, part, off) in enumerate(items):
        c = p["customer_id"]
        if c in last_c:
            nxt.setdefault(last_c[c], []).append(i)
            indeg[i] += 1
        last_c[c] = i
        by_part.setdefault((topic, part), []).append((off, i))
    for chain in by_part.values():
        chain.sort()
        for (_, a), (_, b) in zip(chain, chain[1:]):
            nxt.setdefault(a, []).append(b)
            indeg[b] += 1
    free = [i for i in range(len(items)) if indeg[i] == 0]
    heapq.heapify(free)
    out = []
    while free:
        i = heapq.heappop(free)
        out.append(items[i])
        for j in nxt.get(i, ()):
            indeg[j] -= 1
            if indeg[j] == 0:
                heapq.heappush(free, j)
    assert len(out) == len(items), "a customer's order contradicts its partitions' offsets"
    return out


def replay_features(payments_in_order, job_state=None):
    """payments_in_order: [(payment, topic, partition, offset)], each customer's payments in
    the order the daemon applied them (for a customer on one partition: offset order; any
    interleaving across customers). Returns ({event_id: features dict of every feature
    available for payments}, {customer_id: EntityState}). A replay (an event its entities
    already hold) gets no features: the daemon writes nothing for it either.
    Entities other than the customer (a terminal) see payments of many customers, each input
    partition in offset order: the payments are applied in an order that keeps both each
    customer's order and each partition's (the daemon's own order is one such)."""
    eng = rff.Engine(DECL, job_state)
    feats = {}
    customers = set()
    for p, topic, part, off in _both_orders(payments_in_order):
        customers.add(p["customer_id"])
        if eng.apply("riskflow.Payment", p, topic, part, off):
            feats[p["event_id"]] = eng.evaluate("riskflow.Payment", p)
    return feats, {c: eng.state("customer", c) for c in customers}


def state_key(prefix, kind, entity_id):
    """The Redis key of an entity's value: <prefix>:<kind>:{<id>}."""
    return "%s:%s:{%s}" % (prefix, kind, entity_id)


def unpack_state(raw, kind="customer", job_state=None):
    """A stored value, parsed by the reference (ValueError when not of the layout)."""
    return rff.Engine(DECL, job_state).kind(kind).unpack(raw)


def states_differ(svc, prefix, states, kind="customer", job_state=None, red=None):
    """[(entity id, what differs)] for every expected EntityState whose Redis value is not it
    (red: a client of the Redis to read, e.g. a cluster's; default the services' one)."""
    red = red or svc.redis()
    bad = []
    for eid, st in states.items():
        raw = red.get(state_key(prefix, kind, eid))
        got = unpack_state(raw, kind, job_state) if raw is not None else None
        if got is None or got.pack() != st.pack():
            bad.append((eid, "missing" if got is None else state_diff(got, st)))
    return bad


def state_diff(got, want):
    """Readable differences between two EntityStates ('' when equal)."""
    if got.pack() == want.pack():
        return ""
    out = []
    for f in ("t_last", "sources", "prevs", "scalars", "jobs"):
        g, w = getattr(got, f), getattr(want, f)
        if g != w:
            out.append("%s: redis %r, expected %r" % (f, g, w))
    for i, (g, w) in enumerate(zip(got.groups, want.groups)):
        for f in ("head", "cnt", "cols"):
            if getattr(g, f) != getattr(w, f):
                out.append("group %d %s: redis %r, expected %r" % (i, f, getattr(g, f),
                                                                   getattr(w, f)))
    return "; ".join(out) or "bytes differ"


class Pacer(threading.Thread):
    """Produces recs at a steady rate from a thread; delivery reports fill them in."""

    def __init__(self, producer, recs, rate):
        super().__init__(daemon=True)
        self.producer, self.recs, self.rate = producer, recs, rate
        self.error = None
        self.sent = 0

    def run(self):
        try:
            t0 = time.monotonic()
            step = 100
            for i in range(0, len(self.recs), step):
                for r in self.recs[i:i + step]:
                    produce(self.producer, r)
                self.sent = min(i + step, len(self.recs))
                ahead = t0 + self.sent / self.rate - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)
                self.producer.poll(0)
            left = self.producer.flush(60)
            if left:
                self.error = "%d messages not delivered" % left
        except Exception as e:  # noqa: BLE001
            self.error = repr(e)


def compare_scores(scores, ref_feats, model):
    """Each score record against the reference: feature names in model order, every value
    equal to the Python feature reference, the score equal to the model JSON's own.
    scores: {event_id: decoded FraudScore}. Returns (feat_bad, score_bad) lists."""
    feat_bad, score_bad = [], []
    for eid, s in scores.items():
        names = [f["name"] for f in s["features"]]
        if names != model.features:
            feat_bad.append((eid, "names", names))
            continue
        for f in s["features"]:
            if not close(f["value"], ref_feats[eid][f["name"]]):
                feat_bad.append((eid, f["name"], f["value"], ref_feats[eid][f["name"]]))
        want = model.score([ref_feats[eid][nm] for nm in model.features])
        if not close(s["score"], want, abs_=1e-15):
            score_bad.append((eid, s["score"], want))
    return feat_bad, score_bad
