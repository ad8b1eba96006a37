#!/usr/bin/env python3
"""bench_jobs.py — what each job costs, alone and the three together, against the real Kafka
broker and Redis (issue 5 item 10).

Pre-produces three Confluent-framed topics once: payments (keyed by customer), credit events
for the same customers (keyed by customer) and trades and quotes from
tools/train/simulate_market.py (keyed by instrument). Then runs riskflowd R times in each
configuration, interleaved so the machine's noise falls on all alike — fraud on the payments,
credit on payments + credit events, market on the trades and quotes, and fraud,credit,market on
all three topics (one mixed stream) — each run a new consumer group and Redis key prefix (cold
start, same backlog), with stats.job.time=on, and stops it (SIGTERM) once its stats line says
every event is done. From riskflowd's summary it takes the process's CPU per event (the daemon
alone: no broker, no producer in it), the loop thread's, and each job's own loop time per event
(its hooks: features read, model, outputs). Prints each run and the medians.

A benchmark, not a test: it asserts nothing about speed. Needs the services and the venv:

    tools/services.sh start && source .run/services.env
    .venv/bin/python tools/bench/bench_jobs.py --payments 200000 --runs 3
"""
import argparse
import io
import json
import os
import random
import re
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import uuid

import fastavro
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tools", "train"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_e2e  # noqa: E402  (its payment generator)
import simulate_market  # noqa: E402

IDS = {"payment": 1, "trade": 4, "quote": 5, "credit_event": 6}
CREDIT_KINDS = ["STATEMENT", "REPAYMENT", "MISSED_PAYMENT", "DRAWDOWN", "LIMIT_CHANGE"]
CONFIGS = [  # name, jobs, topics (suffixes)
    ("fraud", "fraud", ("pay",)),
    ("credit", "credit", ("pay", "credit")),
    ("market", "market", ("mkt",)),
    ("all three", "fraud,credit,market", ("pay", "credit", "mkt")),
]


def schema(name):
    return fastavro.parse_schema(json.load(open(os.path.join(ROOT, "schemas", name + ".avsc"))))


def credit_events(n, customers, seed=11):
    rng = random.Random(seed)
    # midnight UTC 60 days ago: the stream lies in the past (input.max.future.ms)
    t0 = (int(time.time()) // 86400 - 60) * 86400000
    for i in range(n):
        c = rng.randrange(customers)
        limit = 100000 * (1 + c % 5)
        yield {"event_id": "ce-%09d" % i, "customer_id": "C%06d" % c, "account_id": "A%06d" % c,
               "kind": rng.choice(CREDIT_KINDS), "amount_minor": rng.randrange(1, 50000),
               "balance_minor": rng.randrange(0, limit), "credit_limit_minor": limit,
               "days_past_due": rng.choice([0, 0, 0, 0, 30]), "currency": "EUR",
               "event_time": t0 + i * 200}


def produce_all(bootstrap, topic, typed_records, key_field):
    """typed_records: (schema name, record); Confluent framing, keyed by record[key_field]."""
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "acks": "all",
                  "queue.buffering.max.messages": 1000000})
    schemas = {}
    n = 0
    for sname, rec in typed_records:
        if sname not in schemas:
            schemas[sname] = (schema(sname), b"\x00" + struct.pack(">I", IDS[sname]))
        sch, header = schemas[sname]
        buf = io.BytesIO()
        fastavro.schemaless_writer(buf, sch, rec)
        while True:
            try:
                p.produce(topic, header + buf.getvalue(), key=rec[key_field])
                break
            except BufferError:
                p.poll(0.05)
        p.poll(0)
        n += 1
    if p.flush(60) != 0:
        sys.exit("bench: producer did not flush")
    return n


def run_once(daemon, bootstrap, redis_port, jobs, topics, n, run_id, out):
    conf = {
        "kafka.bootstrap.servers": bootstrap, "kafka.group.id": "bench-" + run_id,
        "input.topics": ",".join(topics), "jobs": jobs,
        "fraud.scores.topic": out + ".scores", "fraud.alerts.topic": out + ".alerts",
        "credit.pd.topic": out + ".pd", "market.signals.topic": out + ".signals",
        "output.dlq.topic": out + ".dlq",
        "redis.port": str(redis_port), "redis.key.prefix": "bench-" + run_id,
        "schemas.dir": os.path.join(ROOT, "schemas"),
        "features.path": os.path.join(ROOT, "deploy", "features.conf"),
        "fraud.model.path": os.path.join(ROOT, "deploy", "models", "fraud_xgb.manifest.json"),
        "credit.model.path": os.path.join(ROOT, "deploy", "models", "credit_scorecard.json"),
        "market.model.path": os.path.join(ROOT, "deploy", "models", "market_gru.safetensors"),
        "stats.interval.ms": "200", "stats.job.time": "on", "log.level": "info",
    }
    with tempfile.NamedTemporaryFile("w", suffix=".conf", delete=False) as f:
        f.write("".join("%s=%s\n" % kv for kv in conf.items()))
        path = f.name
    log = tempfile.TemporaryFile("w+")
    proc = subprocess.Popen([daemon, "-c", path], stderr=log, stdout=subprocess.DEVNULL)
    text = bench_e2e.finish(proc, log, n, timeout=900)
    os.unlink(path)
    m = {
        "throughput": float(re.search(r"throughput: +([\d.]+) events/s", text).group(1)),
        "cpu": float(re.search(r"us/event on the loop thread.*?; ([\d.]+) us/event for the "
                               r"whole process", text).group(1)),
        "loop": float(re.search(r"cpu: +([\d.]+) us/event on the loop thread", text).group(1)),
    }
    for name in ("fraud", "credit", "market"):
        j = re.search(r"^%s +(\d+) events.*?; ([\d.]+) us/event in the job" % name, text, re.M)
        if j:
            m[name + " events"] = int(j.group(1))
            m[name + " in job"] = float(j.group(2))
    return m


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--payments", type=int, default=200000)
    ap.add_argument("--customers", type=int, default=20000)
    ap.add_argument("--credit-events", type=int, default=0, help="default: payments / 4")
    ap.add_argument("--instruments", type=int, default=50)
    ap.add_argument("--market-minutes", type=float, default=0,
                    help="default: about as many trades and quotes as payments")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--daemon", default=os.path.join(ROOT, "build", "riskflowd"))
    a = ap.parse_args()
    bootstrap = os.environ.get("RF_KAFKA_BOOTSTRAP")
    redis_port = os.environ.get("RF_REDIS_PORT")
    if not bootstrap or not redis_port:
        sys.exit("bench: RF_KAFKA_BOOTSTRAP / RF_REDIS_PORT unset (source .run/services.env)")
    n_credit = a.credit_events or a.payments // 4
    minutes = a.market_minutes or a.payments / (29.0 * a.instruments)
    base = "benchjobs-" + uuid.uuid4().hex[:8]
    topics = {s: base + "." + s for s in ("pay", "credit", "mkt")}
    admin = AdminClient({"bootstrap.servers": bootstrap})
    outs = [base + ".out" + s for s in (".scores", ".alerts", ".pd", ".signals", ".dlq")]
    for f in admin.create_topics([NewTopic(t, num_partitions=4, replication_factor=1)
                                  for t in list(topics.values()) + outs]).values():
        f.result(30)
    t = time.monotonic()
    counts = {
        "pay": produce_all(bootstrap, topics["pay"],
                           (("payment", p) for p in bench_e2e.payments(a.payments, a.customers)),
                           "customer_id"),
        "credit": produce_all(bootstrap, topics["credit"],
                              (("credit_event", c) for c in credit_events(n_credit, a.customers)),
                              "customer_id"),
    }
    sim = simulate_market.simulate(n_instruments=a.instruments, hours=minutes / 60.0, seed=5)
    counts["mkt"] = produce_all(bootstrap, topics["mkt"],
                                (("trade" if rt == "riskflow.Trade" else "quote", rec)
                                 for rt, rec in sim.iter_events()), "instrument")
    print("produced %d payments, %d credit events, %d trades and quotes (%d instruments, %.0f "
          "simulated minutes) in %.1f s" % (counts["pay"], counts["credit"], counts["mkt"],
                                            a.instruments, minutes, time.monotonic() - t))
    results = {name: [] for name, _, _ in CONFIGS}
    for r in range(a.runs):
        for name, jobs, sfx in CONFIGS:
            n = sum(counts[s] for s in sfx)
            m = run_once(a.daemon, bootstrap, redis_port, jobs, [topics[s] for s in sfx], n,
                         "%s-%d-%d" % (base[-8:], r, CONFIGS.index((name, jobs, sfx))),
                         base + ".out")
            results[name].append(m)
            per_job = ", ".join("%s %.2f" % (j, m[j + " in job"]) for j in
                                ("fraud", "credit", "market") if j + " in job" in m)
            print("run %d %-9s %7d events: %7.0f events/s, CPU %.2f us/event (loop thread "
                  "%.2f); in each job: %s us/event" % (r + 1, name, n, m["throughput"], m["cpu"],
                                                      m["loop"], per_job), flush=True)
    print("\nmedians of %d runs (us per input event; 'in job': the job's hooks and model on the "
          "loop thread, per event the job takes)" % a.runs)
    print("%-10s %10s %12s %12s  %s" % ("jobs", "events/s", "CPU/event", "loop/event",
                                        "in job"))
    for name, _, _ in CONFIGS:
        rs = results[name]
        med = {k: statistics.median(x[k] for x in rs) for k in rs[0]}
        per_job = ", ".join("%s %.2f" % (j, med[j + " in job"]) for j in
                            ("fraud", "credit", "market") if j + " in job" in med)
        print("%-10s %10.0f %12.2f %12.2f  %s" % (name, med["throughput"], med["cpu"],
                                                  med["loop"], per_job))


if __name__ == "__main__":
    main()
