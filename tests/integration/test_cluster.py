"""riskflowd over a Redis Cluster (issue 8 item 5): the 3-master cluster tools/services.sh
starts on loopback (RF_REDIS_CLUSTER; the test fails, never skips, without it).

A paced stream of payments with poison goes through 4 partitions to riskflowd
(redis.cluster.nodes); it is SIGKILLed and restarted three times, and while it runs the slots
of three busy customers move to another master (IMPORTING / MIGRATING, MIGRATE in small steps,
SETSLOT NODE on every master), so its commands meet ASK during the moves and MOVED after.
Checks, with independent readers and a cluster client:
  - every payment scored; every duplicate score and alert byte-identical to its first copy;
  - features and scores equal the Python reference; every customer's value in the cluster
    equals a fault-free run's (the flush goes slot by slot: journal, values, late kinds);
  - the dead letters are exactly the poison; values sit on every master; riskflowd counted
    redirects it followed (STATS; /metrics has the counters); the kills left replays; no journal
    key is left after the clean stop.
"""

import os
import random
import threading
import time

import pytest
import redis
from redis.cluster import ClusterNode, RedisCluster

import rfkit
import test_faults as tf

SEED = tf.SEED + 200


def cluster_nodes():
    seeds = os.environ.get("RF_REDIS_CLUSTER", "")
    if not seeds:
        pytest.fail("RF_REDIS_CLUSTER is not set: tools/services.sh start starts the cluster")
    nodes = []
    for hp in seeds.split(","):
        h, p = hp.rsplit(":", 1)
        nodes.append((h, int(p)))
    return seeds, nodes


class Mover(threading.Thread):
    """Moves slots between masters the way an operator's resharding does, a few keys at a
    time, while riskflowd runs."""

    def __init__(self, nodes, slots, pause):
        super().__init__(daemon=True)
        self.conns = [redis.Redis(host=h, port=p) for h, p in nodes]
        self.slots, self.pause = slots, pause
        self.error, self.moved = None, 0

    def owner(self, slot):
        for s in self.conns[0].execute_command("CLUSTER SLOTS"):
            if s[0] <= slot <= s[1]:
                host, port = s[2][0].decode(), s[2][1]
                for i, c in enumerate(self.conns):
                    kw = c.connection_pool.connection_kwargs
                    if kw["port"] == port and kw["host"] == host:
                        return i
        raise AssertionError("no owner for slot %d" % slot)

    def run(self):
        try:
            ids = [c.execute_command("CLUSTER MYID").decode() for c in self.conns]
            for slot in self.slots:
                time.sleep(self.pause)
                src = self.owner(slot)
                dst = (src + 1) % len(self.conns)
                self.conns[dst].execute_command("CLUSTER SETSLOT", slot, "IMPORTING", ids[src])
                self.conns[src].execute_command("CLUSTER SETSLOT", slot, "MIGRATING", ids[dst])
                kw = self.conns[dst].connection_pool.connection_kwargs
                while True:
                    keys = self.conns[src].execute_command("CLUSTER GETKEYSINSLOT", slot, 2)
                    if not keys:
                        break
                    self.conns[src].execute_command("MIGRATE", kw["host"], kw["port"], "", 0,
                                                    5000, "KEYS", *keys)
                    time.sleep(0.05)  # riskflowd's commands meet the half-moved slot
                self.conns[dst].execute_command("CLUSTER SETSLOT", slot, "NODE", ids[dst])
                for i, c in enumerate(self.conns):
                    if i != dst:
                        c.execute_command("CLUSTER SETSLOT", slot, "NODE", ids[dst])
                self.moved += 1
        except Exception as e:  # noqa: BLE001
            self.error = repr(e)


def test_kills_and_slot_moves_over_the_cluster(services, model, tmp_path):
    seeds, nodes = cluster_nodes()
    cl = RedisCluster(startup_nodes=[ClusterNode(h, p) for h, p in nodes])
    run, topics, recs, poison = tf.make_world(services, "rf-cluster", 150, 8000, 6, SEED)
    conf = tf.conf_for(services, run, topics, 300)
    conf["redis.cluster.nodes"] = seeds
    # Static membership: a restarted instance takes its partitions back at once, so the slot
    # moves happen while it consumes.
    conf["kafka.group.instance.id"] = run + ".a"
    conf["kafka.session.timeout.ms"] = 6000
    conf["kafka.heartbeat.interval.ms"] = 500
    port = rfkit.free_port()
    conf["metrics.listen"] = "127.0.0.1:%d" % port
    producer = rfkit.make_producer(services)
    daemon = rfkit.Daemon(tmp_path, conf)
    pacer = rfkit.Pacer(producer, recs, 800)
    busy = ["C0000", "C0001", "C0002"]
    slots = [cl.keyslot(rfkit.state_key(run, "customer", c)) for c in busy]
    mover = Mover(nodes, slots, 1.5)
    rng = random.Random(SEED)
    scraped = {}

    def pause():
        if not mover.is_alive() and mover.moved == 0:
            mover.start()
        return rng.uniform(2.0, 3.0)

    orig_stop = rfkit.stop_clean

    def scrape_then_stop(d):
        import urllib.request
        with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=5) as r:
            for line in r.read().decode().splitlines():
                if line.startswith("riskflow_redis_redirects_total"):
                    scraped[line.split("}")[0] + "}"] = float(line.split()[-1])
        orig_stop(d)

    rfkit.stop_clean = scrape_then_stop
    try:
        out = tf.kill_while_streaming(services, daemon, producer, recs, pacer, run, topics, 2,
                                      pause)
    finally:
        rfkit.stop_clean = orig_stop
    mover.join(60)
    assert mover.error is None, mover.error
    assert mover.moved == len(slots), "moved %d of %d slots" % (mover.moved, len(slots))
    assert not any(r.err for r in recs)
    n, dups = tf.check_at_least_once(services, run, recs, poison, out, model, red=cl)
    # Spread over the masters, and the moved customers are on their new ones.
    per_node = {}
    for h, p in nodes:
        r = redis.Redis(host=h, port=p)
        per_node[p] = sum(1 for _ in r.scan_iter(match=run + ":customer:*", count=1000))
    assert all(v > 0 for v in per_node.values()), per_node
    assert sum(per_node.values()) == 150, per_node
    left = [k for k in cl.scan_iter(match=run + ":log:*", count=1000)]
    assert not left, "journal keys left after a clean stop: %s" % left[:5]
    moved = tf.stats_counter(daemon, "redis_moved")
    ask = tf.stats_counter(daemon, "redis_ask")
    replays = tf.stats_counter(daemon, "replays")
    print("cluster: %d payments, 2 SIGKILLs, %d slots moved, %d duplicate scores (all "
          "identical), %d replays, values per master %s, redirects followed: %d MOVED, %d ASK"
          % (n, mover.moved, dups, replays, per_node, moved, ask))
    # The moves met riskflowd's commands: it followed redirects (its STATS lines, all runs).
    assert moved + ask > 0, "riskflowd followed no redirect: the moves missed it"
    assert replays > 0 and dups > 0, "the SIGKILLs left nothing to replay: not a test"
    assert set(scraped) == {'riskflow_redis_redirects_total{kind="moved"}',
                            'riskflow_redis_redirects_total{kind="ask"}'}, scraped
    for k in cl.scan_iter(match=run + ":*", count=1000):
        cl.delete(k)
    rfkit.delete_topics(services, list(topics.values()))
