"""Redis outages under a live stream: riskflowd against a real Kafka broker and a redis-server
this test starts, hangs or kills, and brings back.

Run (from the repo root, services from tools/services.sh; their Redis is not touched here):
    source .run/services.env
    RF_DAEMON=build/riskflowd .venv/bin/python -m pytest -q tests/integration/test_outage.py

  hang   SIGSTOP the redis-server for ~3 s, then SIGCONT: commands and connects time out
         (redis.command.timeout.ms / redis.connect.timeout.ms = 300), riskflowd drops the
         connection, reconnects with backoff and retries its MGETs and SETs.
  crash  SIGKILL the redis-server (connections drop, then connect is refused) for ~3 s, then
         start it again on the same port from its append-only file (appendfsync always, so it
         comes back with every write it acknowledged).

Both produce 6000 payments of 100 customers over ~6 s into a fresh 4-partition topic and take
Redis away in the middle of the stream. riskflowd's local cache is kept small
(store.cache.max.entries=32 for 100 customers): most batches need an MGET, so states keep being
evicted and loaded again from Redis, before, during and after the outage. That makes the test
see what was (or was not) durable in Redis, and makes the outage stop the scoring: a batch that
needs a fetch waits for Redis (README "Backpressure, never loss").

After the stream is scored and riskflowd has stopped on SIGTERM (exit 0), every check is
against an independent reference (rfkit: fastavro, tools/train/riskflow_features.py, the model
JSON in plain Python):
  - every payment has exactly one score (no restart happened, so at-least-once has no excuse
    for a duplicate), with the right source partition/offset;
  - every score's features equal the Python reference replaying the inputs in per-partition
    offset order (no event applied twice, none skipped, no state that was not loaded), and
    the score equals the model's;
  - every customer's final Redis value equals the reference state;
  - the committed offsets equal the end offsets;
  - the log shows the Redis loss (REDIS facility, "(retrying)") and a reconnect after it;
  - no score was computed inside the outage (after a short grace for batches already in hand).
Assertions that fail because of daemon behaviour say "DAEMON BUG" in their message.
RF_E2E_SEED=<int> replays a particular generated stream.
"""

import os
import random
import re
import shutil
import signal
import socket
import subprocess
import time

import pytest

import rfkit
from rfkit import Produced, close

SEED = int(os.environ.get("RF_E2E_SEED", "20261129"))
N_PAYMENTS = 6000
N_CUSTOMERS = 100
RATE = 1000            # payments/s: ~6 s of stream
SCORES_BEFORE = 1200   # take Redis away once this many scores have arrived
OUTAGE_S = 3.0
GRACE_S = 1.0          # after the outage starts, batches already past their fetch may finish
CACHE_ENTRIES = 32     # < N_CUSTOMERS: states keep going back to Redis
TIMEOUT_MS = 300       # redis.command.timeout.ms and redis.connect.timeout.ms
THRESHOLD = 0.5


# ---------------------------------------------------------------------------- private Redis

def free_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
    finally:
        s.close()


class PrivateRedis:
    """A redis-server of this test's own, on a free loopback port, data dir under tmp_path."""

    def __init__(self, base_dir, aof):
        self.dir = os.path.join(str(base_dir), "redis")
        os.makedirs(self.dir, exist_ok=True)
        self.port = free_port()
        self.aof = aof
        self.proc = None
        self.starts = 0
        self.stopped = False  # SIGSTOPped

    def args(self):
        return ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                "--save", "", "--appendonly", "yes" if self.aof else "no",
                "--appendfsync", "always", "--dir", self.dir,
                "--logfile", os.path.join(self.dir, "redis.log"), "--daemonize", "no"]

    def client(self, timeout=5):
        import redis
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=timeout,
                           socket_connect_timeout=timeout)

    def start(self, timeout=20):
        if shutil.which("redis-server") is None:
            pytest.fail("redis-server not found on PATH (tools/deps.sh installs it)",
                        pytrace=False)
        self.starts += 1
        self.proc = subprocess.Popen(self.args(), stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        last = None
        while True:
            if self.proc.poll() is not None:
                pytest.fail("redis-server (start %d) exited %s on port %d:\n%s"
                            % (self.starts, self.proc.returncode, self.port, self.log_tail()),
                            pytrace=False)
            try:
                if self.client(timeout=1).ping():
                    return self
            except Exception as e:  # noqa: BLE001  (refused, or LOADING while the AOF loads)
                last = e
            if time.monotonic() > deadline:
                pytest.fail("redis-server (start %d) on port %d does not answer after %d s: "
                            "%s\n%s" % (self.starts, self.port, timeout, last, self.log_tail()),
                            pytrace=False)
            time.sleep(0.05)

    def sigstop(self):
        self.proc.send_signal(signal.SIGSTOP)
        self.stopped = True

    def sigcont(self):
        self.proc.send_signal(signal.SIGCONT)
        self.stopped = False

    def state(self):
        """The process state letter from /proc ('T' when stopped), or None."""
        try:
            with open("/proc/%d/stat" % self.proc.pid) as f:
                return f.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            return None

    def sigkill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def shutdown(self):
        if self.proc is not None and self.proc.poll() is None:
            if self.stopped:
                self.sigcont()
            self.proc.kill()
            self.proc.wait()

    def log_tail(self, lines=20):
        try:
            with open(os.path.join(self.dir, "redis.log"), "rb") as f:
                t = f.read().decode("utf-8", "replace").splitlines()
        except OSError:
            return "(no redis log)"
        return "\n".join(t[-lines:])


@pytest.fixture
def private_redis(tmp_path):
    made = []

    def make(aof):
        r = PrivateRedis(tmp_path, aof)
        made.append(r)
        return r.start()
    yield make
    for r in made:
        r.shutdown()


# ---------------------------------------------------------------------------- helpers

def first(items, n=5):
    items = list(items)
    return "%d: %s%s" % (len(items), items[:n], " ..." if len(items) > n else "")


class Scores:
    """Decodes the scores topic as the reader brings it in."""

    def __init__(self, reader):
        self.reader = reader
        self.recs = []   # (decoded record, kafka message)
        self.ids = set()

    def poll(self, max_wait=0.1):
        self.reader.poll(max_wait)
        for m in self.reader.msgs[len(self.recs):]:
            s = rfkit.decode_confluent(m.value(), rfkit.SCORE_ID, rfkit.SCORE_SCHEMA)
            self.recs.append((s, m))
            self.ids.add(s["event_id"])

    def wait(self, daemon, timeout, min_count=None, want_ids=None, what=""):
        deadline = time.monotonic() + timeout
        while True:
            self.poll()
            if min_count is not None and len(self.recs) >= min_count:
                return
            if want_ids is not None and want_ids <= self.ids:
                return
            daemon.assert_alive()
            if time.monotonic() > deadline:
                missing = sorted(want_ids - self.ids) if want_ids is not None else []
                pytest.fail("%s: after %d s, %d score records (want %s); missing %s\n%s"
                            % (what, timeout, len(self.recs), min_count,
                               first(missing), daemon.log_tail(60)), pytrace=False)


def wait_for_log(daemon, needle, timeout):
    deadline = time.monotonic() + timeout
    while needle not in daemon.log_text():
        daemon.assert_alive()
        if time.monotonic() > deadline:
            pytest.fail("riskflowd never logged %r within %d s\n%s"
                        % (needle, timeout, daemon.log_tail()), pytrace=False)
        time.sleep(0.05)


REDIS_LINE = re.compile(r"\bREDIS\b")


def redis_lines(text):
    """riskflowd's REDIS-facility lines: [(kind, line)], kind 'up' (connected) or 'lost'."""
    out = []
    for line in text.splitlines():
        if not REDIS_LINE.search(line):
            continue
        if "connected to" in line:
            out.append(("up", line))
        elif "(retrying)" in line:
            out.append(("lost", line))
    return out


# ---------------------------------------------------------------------------- the test

@pytest.mark.parametrize("kind", ["hang", "crash"])
def test_redis_outage_mid_stream(kind, services, model, daemon_bin, tmp_path, private_redis):
    """Redis hangs (SIGSTOP/SIGCONT) or crashes (SIGKILL, restart from its AOF) mid-stream;
    riskflowd waits, reconnects and loses, duplicates or miscounts nothing."""
    t_start = time.monotonic()
    t0_wall = time.time()
    rng = random.Random(SEED + (31 if kind == "hang" else 32))
    run = rfkit.unique("rf-out-" + kind)
    tin, scores_t, alerts_t, dlq_t = (run + ".payments", run + ".scores", run + ".alerts",
                                      run + ".dlq")
    rfkit.create_topics(services, {tin: 4, scores_t: 4, alerts_t: 1, dlq_t: 1})
    customers = ["C%04d" % i for i in range(N_CUSTOMERS)]
    stream = rfkit.gen_stream(rng, customers, N_PAYMENTS, prefix=kind[0])
    recs = [Produced(tin, p["customer_id"].encode(), rfkit.encode_payment(p), payment=p)
            for p in stream]
    by_id = {r.payment["event_id"]: r for r in recs}
    assert len(by_id) == N_PAYMENTS

    red = private_redis(aof=(kind == "crash"))
    conf = {
        "kafka.bootstrap.servers": services.bootstrap,
        "kafka.group.id": run + ".group",
        "input.topics": tin,
        "fraud.scores.topic": scores_t,
        "fraud.alerts.topic": alerts_t,
        "output.dlq.topic": dlq_t,
        "redis.host": "127.0.0.1",
        "redis.port": red.port,
        "redis.key.prefix": run,
        "redis.command.timeout.ms": TIMEOUT_MS,
        "redis.connect.timeout.ms": TIMEOUT_MS,
        "store.cache.max.entries": CACHE_ENTRIES,
        "fraud.alert.threshold": THRESHOLD,
        "schemas.dir": rfkit.SCHEMAS_DIR,
        "fraud.model.path": rfkit.MODEL_PATH,
        # every payment kind scored: these tests hold the engine to one score per payment of
        # any kind (the default filter, money coming in left out, is test_credit's)
        "fraud.score.where": "all",
        "features.path": rfkit.FEATURES_PATH,
        "log.level": "info",
        "stats.interval.ms": 1000,
        "shutdown.timeout.ms": 20000,
    }
    daemon = rfkit.Daemon(tmp_path, conf)
    reader = rfkit.TopicReader(services, scores_t)
    sc = Scores(reader)
    pacer = rfkit.Pacer(rfkit.make_producer(services), recs, rate=RATE)
    tps = [(tin, p) for p in range(4)]
    try:
        daemon.start()
        wait_for_log(daemon, "assigned", 30)
        pacer.start()
        sc.wait(daemon, 30, min_count=SCORES_BEFORE, what="before the outage")

        # ---- take Redis away
        log_down = len(daemon.log_text())
        keys_before = red.client().dbsize()
        sent_down = pacer.sent
        t_down = time.time()
        if kind == "hang":
            red.sigstop()
        else:
            red.sigkill()
        n_down = len(sc.recs)
        while time.time() < t_down + OUTAGE_S:
            sc.poll()
            daemon.assert_alive()
        if kind == "hang":
            assert red.state() == "T", "test setup: redis-server was not stopped (state %s)" \
                % red.state()
        n_up = len(sc.recs)
        sent_up = pacer.sent
        log_up = len(daemon.log_text())

        # ---- bring it back
        t_up = time.time()
        if kind == "hang":
            red.sigcont()
        else:
            red.start()
            keys_after = red.client().dbsize()
            assert keys_after >= keys_before, (
                "test setup: the restarted redis-server has %d keys, it had %d before SIGKILL "
                "(the append-only file did not bring them back)" % (keys_after, keys_before))
        t_back = time.time()

        pacer.join(60)
        assert not pacer.is_alive(), "the test producer did not finish"
        assert pacer.error is None, "test producer: " + pacer.error
        rfkit.flush_checked(pacer.producer, recs)
        sc.wait(daemon, 60, want_ids=set(by_id),
                what="DAEMON BUG: riskflowd did not score the stream after Redis came back")
        t_all = time.time()
        rc, stop_secs = daemon.stop(timeout=30)
        reader.read_to_end()
        sc.poll()
        committed = rfkit.committed_offsets(services, conf["kafka.group.id"], tps)
        ends = rfkit.end_offsets(services, tps)
    except BaseException:
        daemon.kill()
        print(daemon.log_tail(200))
        raise
    finally:
        reader.close()

    log = daemon.log_text()
    scored_at = sorted(rfkit.ts_ms(s["scored_at"]) / 1000.0 for s, _ in sc.recs)
    after_up = [t for t in scored_at if t >= t_up]
    recovery = (after_up[0] - t_up) if after_up else float("nan")
    print("test outage/%s: %d payments; Redis %s at %.1f s after %d scores (%d produced), "
          "back after %.1f s (%d produced meanwhile, %d scores arrived meanwhile); first score "
          "%.2f s after it came back; all scored %.1f s after; stopped in %.1f s; %.1f s in all"
          % (kind, N_PAYMENTS, "stopped" if kind == "hang" else "killed",
             t_down - t0_wall, n_down, sent_down,
             t_up - t_down, sent_up - sent_down, n_up - n_down, recovery, t_all - t_up,
             stop_secs, time.monotonic() - t_start))
    stats = [l for l in log.splitlines() if " STATS " in l]
    if stats:
        print("last stats: " + stats[-1])

    # ---- the test itself did what it meant to
    assert sent_up - sent_down >= RATE * OUTAGE_S / 2, (
        "test setup: only %d payments were produced during the outage" % (sent_up - sent_down))
    assert sent_down < N_PAYMENTS // 2, "test setup: the outage started late in the stream"

    # ---- the daemon stopped cleanly
    assert rc is not None, "DAEMON BUG: riskflowd did not exit within 30 s of SIGTERM " \
        "(killed)\n" + daemon.log_tail(80)
    assert rc == 0, "DAEMON BUG: riskflowd exited %s after SIGTERM, want 0\n%s" % (
        rc, daemon.log_tail(80))

    # ---- every payment scored exactly once, in the right place
    seen, dup, extra, bad_src = {}, [], [], []
    for s, m in sc.recs:
        eid = s["event_id"]
        r = by_id.get(eid)
        if r is None:
            extra.append(eid)
            continue
        if eid in seen:
            dup.append((eid, r.partition, r.offset))
            continue
        seen[eid] = s
        if (s["source_partition"], s["source_offset"]) != (r.partition, r.offset):
            bad_src.append((eid, s["source_partition"], s["source_offset"], r.partition,
                            r.offset))
        if m.key() != r.payment["customer_id"].encode():
            bad_src.append((eid, "kafka key", m.key()))
    missing = sorted(set(by_id) - set(seen))
    assert not extra, "DAEMON BUG: scores for event ids never produced: " + first(extra)
    assert not missing, "DAEMON BUG: payments never scored (lost): " + first(missing)
    assert not dup, ("DAEMON BUG: payments scored more than once without any restart "
                     "(event, partition, offset): " + first(dup))
    assert not bad_src, "DAEMON BUG: score source fields/key wrong: " + first(bad_src)

    # ---- features: the reference replays each partition in offset order (a customer's
    # payments are all on one partition, keyed by customer)
    order = sorted(recs, key=lambda r: (r.partition, r.offset))
    ref_feats, ref_states = rfkit.replay_features([(r.payment, r.topic, r.partition, r.offset)
                                                  for r in order])
    feat_bad, score_bad = rfkit.compare_scores(seen, ref_feats, model)
    if feat_bad:
        # When in the run did the wrong ones get scored: before, during or after the outage?
        when = {}
        for b in feat_bad:
            t = rfkit.ts_ms(seen[b[0]]["scored_at"]) / 1000.0
            k = "before" if t < t_down else "during" if t < t_up else "after"
            when[k] = when.get(k, 0) + 1
        assert not feat_bad, (
            "DAEMON BUG: features differ from riskflow_features.py replaying the inputs in "
            "offset order (scored %s the outage); (event, feature, daemon, reference): %s"
            % (when, first(feat_bad, 8)))
    assert not score_bad, "DAEMON BUG: scores differ from the model JSON: " + first(score_bad)

    # ---- final Redis state of every customer
    rc_ = red.client()
    r_bad = []
    for c, st in sorted(ref_states.items()):
        raw = rc_.get(rfkit.state_key(run, "customer", c))
        got = rfkit.unpack_state(raw) if raw is not None else None
        if got != st:
            r_bad.append((c, "missing" if got is None else rfkit.state_diff(got, st)))
    assert not r_bad, "DAEMON BUG: final Redis state differs from the reference: " + \
        first(r_bad, 3)

    # ---- offsets
    assert committed == ends, "DAEMON BUG: committed offsets %s != end offsets %s" % (
        committed, ends)

    # ---- the log: loss noticed, then a reconnect
    before, during, after = log[:log_down], log[log_down:log_up], log[log_up:]
    assert any(k == "up" for k, _ in redis_lines(before)), \
        "riskflowd did not log its first Redis connection (REDIS ... connected to)\n" + \
        daemon.log_tail(60)
    assert not any(k == "lost" for k, _ in redis_lines(before)), \
        "Redis trouble logged before the outage: " + first(
            [l for k, l in redis_lines(before) if k == "lost"], 3)
    lost = [l for k, l in redis_lines(during) if k == "lost"]
    assert lost, ("DAEMON BUG: no REDIS '(retrying)' line while Redis was %s for %.1f s "
                  "(REDIS lines then: %s)" % ("stopped" if kind == "hang" else "down",
                                              OUTAGE_S, redis_lines(during)))
    if kind == "hang":
        assert any("timed out" in l for l in lost), \
            "a hung Redis should show up as a timeout: " + first(lost, 3)
    rl = redis_lines(log[log_down:])
    last_lost = max(i for i, (k, _) in enumerate(rl) if k == "lost")
    assert any(k == "up" for k, _ in rl[last_lost + 1:]), (
        "DAEMON BUG: no REDIS 'connected to' line after the last loss %r (yet all scored?)"
        % rl[last_lost][1])
    if kind == "crash":
        assert any(k == "up" for k, _ in redis_lines(after)), \
            "DAEMON BUG: no Redis reconnect logged after the restart"
    print("REDIS lines from the outage on: %d lost, %d connected; first: %s; last: %s"
          % (sum(1 for k, _ in rl if k == "lost"), sum(1 for k, _ in rl if k == "up"),
             rl[0][1] if rl else "-", rl[-1][1] if rl else "-"))

    # ---- backpressure: nothing scored inside the outage (after a grace for batches whose
    # states were already loaded when Redis went away); with a 32-entry cache for 100
    # customers almost every batch needs Redis.
    inside = [t for t in scored_at if t_down + GRACE_S <= t < t_up]
    assert not inside, (
        "DAEMON BUG: %d scores computed while Redis was %s (%.2f s .. %.2f s into the outage; "
        "window %.1f s from %.1f s on)" % (len(inside), "stopped" if kind == "hang" else "down",
                                           inside[0] - t_down, inside[-1] - t_down,
                                           t_up - t_down - GRACE_S, GRACE_S))
    assert after_up, "no score after Redis came back"
    assert t_back >= t_up
    rfkit.delete_topics(services, [tin, scores_t, alerts_t, dlq_t])
