#!/usr/bin/env python3
"""bench_e2e.py — riskflowd end to end against the real Kafka broker and Redis.

Pre-produces N payments (Confluent-framed Avro, fastavro; 4 partitions, keyed by customer) into
a fresh topic, then runs riskflowd on it R times — each run a new consumer group and a new Redis
key prefix, so every run starts cold and reads the same backlog — and stops it (SIGTERM) once
its stats line says every payment is scored. riskflowd prints its summary at exit; this script
collects throughput, latency p50/p99 and CPU per event (the daemon process alone: no broker, no
generator in it) and prints each run and the medians. With --rate it also measures the latency
an independent reader sees: from the producer's send to the score arriving at a consumer of the
scores topic (read_committed, so with processing.guarantee=exactly-once it includes waiting for
the transaction's commit).

A benchmark, not a test: it asserts nothing about speed. Needs the services
(tools/services.sh start; source .run/services.env) and the venv (tools/deps.sh):

    .venv/bin/python tools/bench/bench_e2e.py --events 200000 --runs 3
"""
import argparse
import io
import json
import os
import re
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid

import fastavro
from confluent_kafka import OFFSET_END, Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def payments(n, customers, seed=7):
    import random
    rng = random.Random(seed)
    # midnight UTC 30 days ago: the stream lies in the past (input.max.future.ms)
    t0 = (int(time.time()) // 86400 - 30) * 86400000
    for i in range(n):
        c = rng.randrange(customers)
        yield {
            "event_id": "b-%09d" % i, "customer_id": "C%06d" % c, "card_token": "tok_%06d" % c,
            "merchant_id": "M%04d" % rng.randrange(2000), "terminal_id": "T%05d" % rng.randrange(10000),
            "mcc": 5411, "amount_minor": int(rng.lognormvariate(3.3, 0.8) * 100) + 1,
            "currency": "EUR", "channel": rng.choice(["POS", "POS", "POS", "ECOM", "ATM"]),
            "country": "FR", "kind": "PURCHASE", "event_time": t0 + i * 50,
        }


def produce(bootstrap, topic, n, customers, rate=0, sent=None):
    """rate 0: as fast as possible (a backlog); else paced at rate payments/s. sent: a list
    that gets each payment's send time (time.monotonic())."""
    schema = fastavro.parse_schema(json.load(open(os.path.join(ROOT, "schemas", "payment.avsc"))))
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20 if not rate else 1,
                  "acks": "all", "queue.buffering.max.messages": 1000000})
    header = b"\x00" + struct.pack(">I", 1)
    t0 = time.monotonic()
    for i, pay in enumerate(payments(n, customers)):
        if rate and i % 100 == 0:
            ahead = t0 + i / rate - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)
        buf = io.BytesIO()
        fastavro.schemaless_writer(buf, schema, pay)
        while True:
            try:
                p.produce(topic, header + buf.getvalue(), key=pay["customer_id"])
                if sent is not None:
                    sent.append(time.monotonic())
                break
            except BufferError:
                p.poll(0.05)
        p.poll(0)
    if p.flush(60) != 0:
        sys.exit("bench: producer did not flush")


class Reader(threading.Thread):
    """Receives the scores as an independent read_committed consumer would, from the topic's
    end at the start: {payment index: arrival time}."""

    def __init__(self, bootstrap, topic):
        super().__init__(daemon=True)
        self.c = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-reader-" +
                           uuid.uuid4().hex[:8], "isolation.level": "read_committed",
                           "enable.auto.commit": False, "fetch.wait.max.ms": 5})
        self.c.assign([TopicPartition(topic, p, OFFSET_END) for p in range(4)])
        self.got = {}
        self.stop = False

    def run(self):
        while not self.stop:
            for m in self.c.consume(1000, 0.05):
                if m.error():
                    continue
                t = time.monotonic()
                v = m.value()
                n, shift, i = 0, 0, 5  # the Avro string event_id "b-%09d" after the framing
                while True:
                    b = v[i]
                    n |= (b & 0x7F) << shift
                    i += 1
                    shift += 7
                    if not b & 0x80:
                        break
                eid = v[i:i + (n >> 1)].decode()
                self.got.setdefault(int(eid[2:]), t)
        self.c.close()


def finish(proc, log, n, timeout=600):
    """Wait until riskflowd's stats line counts n events done (scored or dead-lettered), stop
    it with SIGTERM and return its log (the summary at the end)."""
    deadline = time.monotonic() + timeout
    done = 0
    while done < n:
        if proc.poll() is not None or time.monotonic() > deadline:
            log.seek(0)
            sys.exit("bench: riskflowd ended or stalled at %d/%d:\n%s" % (done, n,
                                                                          log.read()[-3000:]))
        time.sleep(0.1)
        log.seek(0)
        text = log.read()
        sc, dl = re.findall(r"scored=(\d+)", text), re.findall(r" dlq=(\d+)", text)
        done = (int(sc[-1]) if sc else 0) + (int(dl[-1]) if dl else 0)
    proc.send_signal(signal.SIGTERM)
    rc = proc.wait(60)
    log.seek(0)
    text = log.read()
    if rc != 0:
        sys.exit("bench: riskflowd exited %d:\n%s" % (rc, text[-3000:]))
    return text


def run_once(daemon, bootstrap, redis_port, topic, n, run_id, paced=None, out=None, extra=()):
    """paced: (customers, rate): produce while the daemon runs, once it has its partitions.
    extra: "key=value" settings over the bench's own."""
    conf = {
        "kafka.bootstrap.servers": bootstrap, "kafka.group.id": "bench-" + run_id,
        "input.topics": topic, "fraud.scores.topic": (out or topic) + ".scores",
        "fraud.alerts.topic": (out or topic) + ".alerts", "output.dlq.topic": (out or topic) + ".dlq",
        "redis.port": str(redis_port), "redis.key.prefix": "bench-" + run_id,
        "schemas.dir": os.path.join(ROOT, "schemas"),
        "fraud.model.path": os.path.join(ROOT, "deploy", "models", "fraud_xgb.manifest.json"),
        "features.path": os.path.join(ROOT, "deploy", "features.conf"),
        "stats.interval.ms": "200", "log.level": "info",
    }
    conf.update(kv.split("=", 1) for kv in extra)
    with tempfile.NamedTemporaryFile("w", suffix=".conf", delete=False) as f:
        f.write("".join("%s=%s\n" % kv for kv in conf.items()))
        path = f.name
    log = tempfile.TemporaryFile("w+")
    proc = subprocess.Popen([daemon, "-c", path], stderr=log, stdout=subprocess.DEVNULL)
    visible = None
    if paced:
        t = time.monotonic() + 60
        # wait for the assignment, then feed the topic at the given rate
        while True:
            log.seek(0)
            if "assignment of" in log.read():
                break
            if time.monotonic() > t or proc.poll() is not None:
                sys.exit("bench: riskflowd got no partitions")
            time.sleep(0.05)
        reader = Reader(bootstrap, (out or topic) + ".scores")
        reader.start()
        time.sleep(1.0)  # its end offsets resolved before the first score
        sent = []
        produce(bootstrap, topic, n, paced[0], paced[1], sent)
    text = finish(proc, log, n)
    if paced:
        time.sleep(1.0)
        reader.stop = True
        reader.join()
        lat = sorted(reader.got[i] - sent[i] for i in reader.got if i < len(sent))
        visible = (lat[len(lat) // 2] * 1e6, lat[int(len(lat) * 0.99)] * 1e6, len(lat)) \
            if lat else (0, 0, 0)
    os.unlink(path)
    m = {
        "throughput": float(re.search(r"throughput: +([\d.]+) events/s", text).group(1)),
        "p50_us": int(re.search(r"latency: +p50 (\d+) us", text).group(1)),
        "p99_us": int(re.search(r"p99 (\d+) us", text).group(1)),
        "cpu_us_event": float(re.search(r"us/event on the loop thread.*?; ([\d.]+) us/event for the whole process", text).group(1)),
        "loop_cpu_us_event": float(re.search(r"cpu: +([\d.]+) us/event on the loop thread", text).group(1)),
        "batch": float(re.search(r"batches: +mean ([\d.]+)", text).group(1)),
    }
    if visible:
        m["seen_p50_us"], m["seen_p99_us"], m["seen_n"] = visible
    return m


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--events", type=int, default=200000)
    ap.add_argument("--customers", type=int, default=20000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--daemon", default=os.path.join(ROOT, "build", "riskflowd"))
    ap.add_argument("--rate", type=int, default=0,
                    help="produce at this rate while riskflowd runs (steady-state latency); "
                         "0: pre-produce a backlog (throughput)")
    ap.add_argument("-X", action="append", default=[], metavar="KEY=VALUE",
                    help="a riskflowd setting over the bench's own (repeatable)")
    a = ap.parse_args()
    bootstrap = os.environ.get("RF_KAFKA_BOOTSTRAP")
    redis_port = os.environ.get("RF_REDIS_PORT")
    if not bootstrap or not redis_port:
        sys.exit("bench: RF_KAFKA_BOOTSTRAP / RF_REDIS_PORT unset (source .run/services.env)")
    topic = "bench-" + uuid.uuid4().hex[:8]
    admin = AdminClient({"bootstrap.servers": bootstrap})
    fs = admin.create_topics([NewTopic(t, num_partitions=p, replication_factor=1) for t, p in
                              ((topic, 4), (topic + ".scores", 4), (topic + ".alerts", 1),
                               (topic + ".dlq", 1))])
    for f in fs.values():
        f.result(30)
    if not a.rate:
        t = time.monotonic()
        produce(bootstrap, topic, a.events, a.customers)
        print("produced %d payments into %s in %.1f s" % (a.events, topic, time.monotonic() - t))
    results = []
    for r in range(a.runs):
        run_topic = topic
        if a.rate:  # each paced run gets its own input topic, fed while it runs
            run_topic = "%s-r%d" % (topic, r)
            for f in admin.create_topics([NewTopic(run_topic, num_partitions=4,
                                                   replication_factor=1)]).values():
                f.result(30)
        m = run_once(a.daemon, bootstrap, redis_port, run_topic, a.events, "%s-%d" % (topic, r),
                     paced=(a.customers, a.rate) if a.rate else None, out=topic, extra=a.X)
        results.append(m)
        print("run %d: %.0f events/s, p50 %d us, p99 %d us, %.2f us CPU/event (loop thread %.2f), "
              "mean batch %.1f" % (r + 1, m["throughput"], m["p50_us"], m["p99_us"],
                                   m["cpu_us_event"], m["loop_cpu_us_event"], m["batch"]))
        if "seen_n" in m:
            print("       a read_committed reader saw %d scores: send -> arrival p50 %d us, "
                  "p99 %d us" % (m["seen_n"], m["seen_p50_us"], m["seen_p99_us"]))
    med = {k: statistics.median(x[k] for x in results) for k in results[0]}
    print("median of %d: %.0f events/s, p50 %d us, p99 %d us, %.2f us CPU/event (loop thread %.2f)"
          % (a.runs, med["throughput"], med["p50_us"], med["p99_us"], med["cpu_us_event"],
             med["loop_cpu_us_event"]))
    if "seen_n" in med:
        print("median of %d, as a read_committed reader sees it: send -> arrival p50 %d us, "
              "p99 %d us" % (a.runs, med["seen_p50_us"], med["seen_p99_us"]))


if __name__ == "__main__":
    main()
