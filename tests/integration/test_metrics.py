"""/metrics, /healthz and /readyz during a run on the real broker and Redis (issue 8 item 2).

riskflowd (jobs=fraud, metrics.listen on a free port) scores a stream with poison in it. Then,
with a real HTTP client:
  - /healthz 200; /readyz 200 "ready"; an unknown path 404; POST 405; a malformed request
    line 400; a request over 8 KiB 431;
  - /metrics passes `promtool check metrics` (Debian's prometheus package), and says what
    happened: events by job and outcome equal to what was scored, dead letters by reason equal
    to the poison, latency histograms (end to end and per stage) counting every event, consumer
    lag 0 per partition at the end, the model's version, Redis up with round trips measured,
    process CPU and memory;
  - every metric the shipped Grafana dashboard and alert rules name is exposed.
A second riskflowd pointed at an unreachable Redis answers /healthz 200 and /readyz 503 with
what it waits for.
"""

import json
import os
import re
import socket
import subprocess
import time
import urllib.error
import urllib.request

import rfkit
from rfkit import Produced

N = 300



def get(port, path, method="GET"):
    req = urllib.request.Request("http://127.0.0.1:%d%s" % (port, path), method=method)
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, r.read().decode(), r.headers
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(), e.headers


def first_answer(daemon, port, path, timeout=30):
    """GET path once the listener is up (riskflowd starts it during its start)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return get(port, path)
        except OSError:
            assert time.monotonic() < deadline, daemon.log_tail()
            daemon.assert_alive()
            time.sleep(0.1)


def raw(port, data):
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(data)
    out = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        out += chunk
    s.close()
    return out.decode(errors="replace")


def samples(text):
    """{(name, frozenset(labels)): value} from the exposition text."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$', line)
        assert m, "not a sample line: %r" % line
        labels = frozenset(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(3) or ""))
        out[(m.group(1), labels)] = float(m.group(4))
    return out


def value(s, name, **labels):
    return s.get((name, frozenset(labels.items())))


def test_metrics_endpoint(services, tmp_path):
    run = rfkit.unique("rf-metrics")
    rfkit.create_topics(services, {run + ".feed": 2, run + ".scores": 1, run + ".alerts": 1,
                                   run + ".dlq": 1})
    port = rfkit.free_port()
    conf = rfkit.fraud_conf(services, run, metrics_listen="127.0.0.1:%d" % port,
                            fraud_score_where="all", commit_interval_ms=200)
    import random
    rng = random.Random(11)
    pays = rfkit.gen_stream(rng, ["c%02d" % i for i in range(30)], N, "mx")
    recs = [Produced(run + ".feed", p["customer_id"].encode(), rfkit.encode_payment(p), payment=p)
            for p in pays]
    poison = [(b"p1", b"\x00\x00\x00\x00\x01garbage", "malformed"),
              (b"p2", b"\x07not-avro", "bad_magic"),
              (b"p3", b"", "truncated")]
    recs += [Produced(run + ".feed", k, v) for k, v, _ in poison]
    d = rfkit.Daemon(tmp_path, conf)
    scores_r = rfkit.TopicReader(services, run + ".scores")
    producer = rfkit.make_producer(services)
    try:
        d.start()
        st, body, _ = first_answer(d, port, "/healthz")
        assert (st, body) == (200, "ok\n")
        rfkit.produce_checked(producer, recs)
        rfkit.wait_committed_to_end(services, d, run + ".group", run + ".feed")
        rfkit.wait_outputs(scores_r, d, N, "scores")
        time.sleep(1.5)  # a PING or two

        st, body, _ = get(port, "/readyz")
        assert (st, body) == (200, "ready\n")
        assert get(port, "/nope")[0] == 404
        assert get(port, "/metrics", method="POST")[0] == 405
        assert raw(port, b"GARBAGE\r\n\r\n").startswith("HTTP/1.1 400 ")
        assert raw(port, b"GET /metrics HTTP/1.1\r\nX: " + b"a" * 9000 + b"\r\n\r\n").startswith(
            "HTTP/1.1 431 ")
        st, text, headers = get(port, "/metrics")
        assert st == 200 and headers["Content-Type"].startswith("text/plain; version=0.0.4")
        head_st, head_body, _ = get(port, "/metrics", method="HEAD")
        assert head_st == 200 and head_body == ""
        rfkit.stop_clean(d)
    except BaseException:
        d.kill()
        print(d.log_tail(80))
        raise

    with open(str(tmp_path / "metrics.txt"), "w") as f:
        f.write(text)
    res = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True,
                         text=True)
    assert res.returncode == 0, "promtool check metrics:\n%s%s" % (res.stdout, res.stderr)

    s = samples(text)
    assert value(s, "riskflow_events_in_total") == N + len(poison)
    assert value(s, "riskflow_events_total", job="fraud", outcome="scored") == N
    assert value(s, "riskflow_outputs_total", job="fraud", kind="scores") == N
    for _, _, reason in poison:
        assert value(s, "riskflow_dead_letters_total", reason=reason) == 1, reason
    assert value(s, "riskflow_latency_seconds_count", stage="end_to_end") == N + len(poison)
    assert value(s, "riskflow_latency_seconds_bucket", stage="end_to_end", le="+Inf") == \
        N + len(poison)
    for stage in ("load", "process"):
        assert value(s, "riskflow_latency_seconds_count", stage=stage) >= 1
    assert value(s, "riskflow_latency_seconds_count", stage="ack") == N + len(poison)
    # cumulative buckets never decrease
    edges = sorted((float(dict(k[1])["le"]), v) for k, v in s.items()
                   if k[0] == "riskflow_latency_seconds_bucket"
                   and dict(k[1]).get("stage") == "end_to_end" and dict(k[1])["le"] != "+Inf")
    assert all(a[1] <= b[1] for a, b in zip(edges, edges[1:]))
    for p in (0, 1):
        assert value(s, "riskflow_consumer_lag", topic=run + ".feed", partition=str(p)) == 0
    assert value(s, "riskflow_partitions_assigned") == 2
    assert value(s, "riskflow_ready") == 1 and value(s, "riskflow_redis_up") == 1
    assert value(s, "riskflow_systemd_notify_dropped_total") == 0
    assert value(s, "riskflow_redis_rtt_seconds_count") >= 1
    with open(rfkit.MODEL_PATH) as f:
        version = json.load(f)["version"]
    assert value(s, "riskflow_model_info", job="fraud", role="serving", version=version,
                 path=rfkit.MODEL_PATH) == 1
    assert value(s, "process_resident_memory_bytes") > 1e6
    assert value(s, "process_cpu_seconds_total") > 0

    # Every metric the dashboard and the alert rules read is exposed.
    names = {k[0] for k in s}
    base = {re.sub(r"_(bucket|sum|count)$", "", n) for n in names} | names
    wanted = set()
    with open(os.path.join(rfkit.ROOT, "deploy", "grafana", "riskflow.json")) as f:
        for p in json.load(f)["panels"]:
            for t in p["targets"]:
                wanted |= set(re.findall(r"\b(riskflow_\w+|process_\w+)", t["expr"]))
    with open(os.path.join(rfkit.ROOT, "deploy", "prometheus", "riskflow-rules.yml")) as f:
        wanted |= set(re.findall(r"\b(riskflow_\w+|process_\w+)", f.read()))
    assert wanted and wanted <= base, sorted(wanted - base)


def test_not_ready_without_redis(services, tmp_path, monkeypatch):
    run = rfkit.unique("rf-metrics-nr")
    rfkit.create_topics(services, {run + ".feed": 1})
    port = rfkit.free_port()
    conf = rfkit.fraud_conf(services, run, metrics_listen="127.0.0.1:%d" % port,
                            redis_port=rfkit.free_port(), redis_connect_timeout_ms=200)
    d = rfkit.Daemon(tmp_path, conf, name="nr")
    # A NOTIFY_SOCKET nobody listens on: every notification is dropped, and counted.
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "nobody.sock"))
    try:
        d.start()
        monkeypatch.delenv("NOTIFY_SOCKET")
        first_answer(d, port, "/readyz")
        time.sleep(1)
        st, body, _ = get(port, "/readyz")
        assert st == 503 and "waiting for Redis to answer" in body, (st, body)
        assert get(port, "/healthz")[0] == 200
        st, text, _ = get(port, "/metrics")
        s = samples(text)
        assert value(s, "riskflow_ready") == 0 and value(s, "riskflow_redis_up") == 0
        assert value(s, "riskflow_systemd_notify_dropped_total") >= 1
    finally:
        d.kill()
