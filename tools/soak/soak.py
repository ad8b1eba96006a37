#!/usr/bin/env python3
"""soak.py — riskflowd for a long stretch at a fixed rate, with a fault every few minutes.

A command, never part of the suite (issue 6, item 6). Against the real broker and Redis
(tools/services.sh start; source .run/services.env) and the built daemon (RF_DAEMON, default
build/riskflowd):

    .venv/bin/python tools/soak/soak.py --minutes 30 --rate 400 --fault-every 180

Produces payments at a fixed rate (plus a poison message now and then) for --minutes, and every
--fault-every seconds injects the next fault of the cycle: riskflowd SIGKILLed and restarted,
Redis killed -9 and restarted from its AOF, the broker killed -9 and restarted on its log dirs,
a second riskflowd joining the group (and leaving it, SIGTERM, a minute later). Meanwhile it
samples every riskflowd's resident memory once a second and measures each score's latency as
an independent client sees it (sent by the producer -> the score readable in its topic).

At the end it checks what the fault tests check (tests/integration/test_faults.py): every
payment scored, every duplicate identical to its first copy, features and scores equal to the
Python reference, the final Redis values equal to a fault-free run's, the dead letters exactly
the poison; and writes OUT/soak.csv and OUT/soak.png (memory and latency over time; the plot
needs matplotlib: this interpreter's, RF_PLOT_PYTHON's, or tools/train's .venv-train). Exit 0 when every check
holds. Prints the memory at the start and the end of each process's life, and latency
percentiles per fault period.
"""
import argparse
import csv
import math
import os
import random
import signal
import statistics
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
os.environ.setdefault("RF_DAEMON", os.path.join(ROOT, "build", "riskflowd"))

import rfkit  # noqa: E402
import test_faults as tf  # noqa: E402
from rfkit import Produced  # noqa: E402

FAULTS = ["sigkill", "redis", "broker", "join"]


def rss_kb(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


class Stream(threading.Thread):
    """Payments at a fixed rate, each customer's times increasing; a poison message every
    ~5000. Records when each was sent."""

    def __init__(self, topic, producer, rate, seconds, customers, seed):
        super().__init__(daemon=True)
        self.topic, self.producer, self.rate, self.seconds = topic, producer, rate, seconds
        self.rng = random.Random(seed)
        self.customers = ["C%05d" % i for i in range(customers)]
        self.t_cust = {c: rfkit.T_BASE_MS + self.rng.randrange(3600000) for c in self.customers}
        self.recs, self.poison, self.sent_at = [], [], {}
        self.error = None

    def payment(self, i):
        c = self.rng.choice(self.customers)
        self.t_cust[c] += self.rng.randrange(1000, 6 * 3600 * 1000)
        amount = int(math.exp(self.rng.gauss(math.log(4500), 0.9)))
        if self.rng.random() < 0.03:
            amount = self.rng.randrange(150000, 2500000)
        return {"event_id": "soak-%08d" % i, "customer_id": c, "card_token": "tok_" + c,
                "merchant_id": "m%04d" % self.rng.randrange(500),
                "terminal_id": "t%05d" % self.rng.randrange(2000), "mcc": 5411,
                "amount_minor": amount, "currency": "EUR",
                "channel": self.rng.choice(rfkit.CHANNELS), "country": "DE",
                "kind": "PURCHASE", "event_time": self.t_cust[c]}

    def run(self):
        try:
            t0 = time.monotonic()
            n = int(self.rate * self.seconds)
            for i in range(n):
                if i % 5000 == 2500:
                    key = self.rng.choice(self.customers).encode()
                    r = Produced(self.topic, key, b"\x07soak-poison-%d" % i,
                                 expect=("poison", "bad_magic"))
                    self.poison.append((key, r.value, "bad_magic"))
                else:
                    p = self.payment(i)
                    r = Produced(self.topic, p["customer_id"].encode(), rfkit.encode_payment(p),
                                 payment=p)
                    self.sent_at[p["event_id"]] = time.time()
                rfkit.produce(self.producer, r)
                self.recs.append(r)
                ahead = t0 + (i + 1) / self.rate - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)
            if self.producer.flush(120):
                self.error = "producer did not flush"
        except Exception as e:  # noqa: BLE001
            self.error = repr(e)


class Latency(threading.Thread):
    """Reads the scores topic as it fills: the first copy of each score, when it became
    readable, against when its payment was sent."""

    def __init__(self, svc, topic, sent_at, t0):
        super().__init__(daemon=True)
        self.reader = rfkit.TopicReader(svc, topic)
        self.sent_at, self.t0 = sent_at, t0
        self.seen, self.samples = set(), []
        self.stop = False

    def run(self):
        while not self.stop:
            got = self.reader.c.consume(num_messages=500, timeout=0.01)
            now = time.time()
            for m in got:
                if m.error():
                    continue
                s = rfkit.decode_confluent(m.value(), rfkit.SCORE_ID, rfkit.SCORE_SCHEMA)
                eid = s["event_id"]
                if eid in self.seen or eid not in self.sent_at:
                    continue
                self.seen.add(eid)
                self.samples.append((now - self.t0, (now - self.sent_at[eid]) * 1000.0))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, default=30)
    ap.add_argument("--rate", type=float, default=400, help="payments per second")
    ap.add_argument("--fault-every", type=float, default=180, help="seconds between faults")
    ap.add_argument("--faults", default=",".join(FAULTS),
                    help="the fault cycle, comma-separated from %s" % ",".join(FAULTS))
    ap.add_argument("--customers", type=int, default=5000)
    ap.add_argument("--seed", type=int, default=20261202)
    ap.add_argument("--out", default=os.path.join(ROOT, "build", "soak"))
    args = ap.parse_args()
    cycle = args.faults.split(",")
    if not cycle or any(f not in FAULTS for f in cycle):
        sys.exit("soak: --faults: a comma-separated list of %s" % ",".join(FAULTS))
    os.makedirs(args.out, exist_ok=True)
    svc = rfkit.connect_services()
    run = rfkit.unique("rf-soak")
    topics = {"in": run + ".payments", "scores": run + ".scores", "alerts": run + ".alerts",
              "dlq": run + ".dlq"}
    rfkit.create_topics(svc, {topics["in"]: 4, topics["scores"]: 4, topics["alerts"]: 1,
                              topics["dlq"]: 1})
    conf = tf.conf_for(svc, run, topics, 1000)
    conf["kafka.session.timeout.ms"] = 6000
    conf["kafka.heartbeat.interval.ms"] = 500
    a = rfkit.Daemon(args.out, conf, name="soak-a")
    b = rfkit.Daemon(args.out, conf, name="soak-b")
    t0 = time.time()
    producer = rfkit.make_producer(svc)
    stream = Stream(topics["in"], producer, args.rate, args.minutes * 60, args.customers,
                    args.seed)
    lat = Latency(svc, topics["scores"], stream.sent_at, t0)
    rss = []  # (t, daemon name, pid, kB)
    faults = []  # (t, what)
    a.start()
    lat.start()
    stream.start()
    next_fault, k, b_until = t0 + args.fault_every, 0, None
    try:
        while stream.is_alive():
            time.sleep(1)
            now = time.time()
            for d in (a, b):
                if d.alive():
                    kb = rss_kb(d.proc.pid)
                    if kb:
                        rss.append((now - t0, d.conf_path, d.proc.pid, kb))
            if b_until and now >= b_until:
                rc, _ = b.stop(timeout=60)
                faults.append((now - t0, "b leaves (exit %s)" % rc))
                b_until = None
            if now < next_fault:
                continue
            what = cycle[k % len(cycle)]
            k += 1
            next_fault = now + args.fault_every
            if what == "sigkill":
                a.kill()
                a.start()
            elif what in ("redis", "broker"):
                tf.services_restart("kafka" if what == "broker" else "redis")
            elif what == "join" and not b.alive():
                b.start()
                b_until = time.time() + 60
            faults.append((now - t0, what))
            print("soak: t=%4.0f s  fault: %s" % (now - t0, what), flush=True)
        if b.alive():
            b.stop(timeout=60)
        if stream.error:
            sys.exit("soak: producer: " + stream.error)
        rfkit.wait_committed_to_end(svc, a, run + ".group", topics["in"], timeout=300)
        time.sleep(2)
        lat.stop = True
        lat.join()
        rfkit.stop_clean(a)
    except BaseException:
        a.kill()
        b.kill()
        print(a.log_tail(60))
        raise

    # ---- memory and latency over time
    csv_path = os.path.join(args.out, "soak.csv")
    with open(csv_path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["t_s", "series", "pid", "value"])
        for t, name, pid, kb in rss:
            w.writerow(["%.1f" % t, "rss_kb:" + os.path.basename(name).split(".")[0], pid, kb])
        for t, ms in lat.samples:
            w.writerow(["%.3f" % t, "latency_ms", "", "%.2f" % ms])
        for t, what in faults:
            w.writerow(["%.1f" % t, "fault", "", what])
    by_pid = {}
    for t, name, pid, kb in rss:
        by_pid.setdefault(pid, []).append((t, kb))
    for pid, s in by_pid.items():
        if len(s) > 120:  # long-lived processes: first minute after warm-up vs last minute
            early = statistics.median(kb for t, kb in s[60:120])
            late = statistics.median(kb for t, kb in s[-60:])
            print("soak: riskflowd pid %d: %.0f s alive, RSS %.1f MiB after its first 2 min, "
                  "%.1f MiB in its last minute (%+.1f%%)" % (pid, s[-1][0] - s[0][0],
                                                            early / 1024, late / 1024,
                                                            100.0 * (late - early) / early))
    edges = [0.0] + [t for t, _ in faults] + [math.inf]
    for lo, hi in zip(edges, edges[1:]):
        ms = sorted(m for t, m in lat.samples if lo <= t < hi)
        if ms:
            print("soak: t=%5.0f..%-5s s: %6d scores, latency p50 %.0f ms, p99 %.0f ms, max %.0f "
                  "ms" % (lo, "end" if hi == math.inf else "%.0f" % hi, len(ms),
                          ms[len(ms) // 2], ms[int(len(ms) * 0.99)], ms[-1]))
    png = os.path.join(args.out, "soak.png")
    plot = [sys.executable]
    train_py = os.environ.get("RF_PLOT_PYTHON",
                              os.path.join(ROOT, ".venv-train", "bin", "python"))
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        plot = [train_py] if os.path.exists(train_py) else None
    if plot:
        rc = subprocess.call(plot + [os.path.join(ROOT, "tools", "soak", "plot.py"), csv_path,
                                     png])
        print("soak: plot %s" % (png if rc == 0 else "failed"))
    else:
        print("soak: no matplotlib here nor in .venv-train (tools/train/setup.sh): no plot; "
              "the samples are in %s" % csv_path)
    # ---- the fault tests' checks, on everything read back (a large backlog: minutes)
    out = tf.read_all(svc, topics, timeout=900)
    problems, n, dups = [], len([r for r in stream.recs if r.payment]), None
    try:
        n, dups = tf.check_at_least_once(svc, run, stream.recs, stream.poison, out,
                                         rfkit.Model(rfkit.MODEL_PATH))
    except AssertionError as e:
        problems.append(str(e)[:500])
    print("soak: %d payments in %.0f min at %.0f/s, %d faults, %s duplicate scores" % (
        n, args.minutes, args.rate, len(faults), "?" if dups is None else dups))
    if problems:
        print("soak: FAILED: " + "; ".join(problems))
        sys.exit(1)
    print("soak: every check holds")
    rfkit.delete_topics(svc, list(topics.values()))


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.default_int_handler)
    main()
