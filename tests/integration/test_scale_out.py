"""Three riskflowd instances as one consumer group over 12 partitions and the Redis Cluster
(issue 8 item 6): the layout deploy/CAPACITY.md describes.

A paced stream of payments with poison, keyed by customer, goes through a 12-partition topic
to three instances (jobs=fraud, deploy/features.conf: the customer's windows and a sliced
terminal, redis.cluster.nodes). Mid-stream one instance is stopped (SIGTERM: it drains, writes
and commits; its partitions move to the other two) and started again (they come back). Checks,
with independent readers and a cluster client:
  - no input without its output: every payment scored, every poison message dead-lettered;
  - every duplicate score and alert byte-identical to its first copy;
  - every feature of every score, and every score, equal to the Python reference fed each
    partition in offset order; every customer's value in the cluster equal to it, and every
    slice of every terminal equal to the reference fed that partition's payments alone;
  - the three instances each scored a share, and the stopped one took partitions back.
"""

import time

import rfkit
import test_cluster as tc
import test_faults as tf
from redis.cluster import ClusterNode, RedisCluster

SEED = tf.SEED + 300
PARTS = 12


def test_three_instances_over_the_cluster(services, model, tmp_path):
    seeds, nodes = tc.cluster_nodes()
    cl = RedisCluster(startup_nodes=[ClusterNode(h, p) for h, p in nodes])
    run, topics, recs, poison = tf.make_world(services, "rf-scale", 400, 9000, 12, SEED,
                                              partitions=PARTS)
    conf = tf.conf_for(services, run, topics, 300)
    conf["redis.cluster.nodes"] = seeds
    conf["kafka.session.timeout.ms"] = 6000
    conf["kafka.heartbeat.interval.ms"] = 500
    daemons = [rfkit.Daemon(tmp_path, conf, name=n) for n in ("a", "b", "c")]
    producer = rfkit.make_producer(services)
    pacer = rfkit.Pacer(producer, recs, 600)
    try:
        for d in daemons:
            d.start()
        time.sleep(4)  # the group forms: 4 partitions each
        pacer.start()
        time.sleep(5)
        for d in daemons:
            d.assert_alive()
        rc, _ = daemons[1].stop()
        assert rc == 0, daemons[1].log_tail()
        time.sleep(3)
        daemons[1].start()
        pacer.join(120)
        assert not pacer.is_alive() and pacer.error is None, pacer.error
        rfkit.flush_checked(producer, recs)
        rfkit.wait_committed_to_end(services, daemons[0], run + ".group", topics["in"],
                                    timeout=180)
        for d in daemons:
            d.assert_alive()
        for d in daemons:
            rfkit.stop_clean(d)
        out = tf.read_all(services, topics)
    except BaseException:
        for d in daemons:
            d.kill()
            print(d.log_tail(60))
        raise

    n, dups = tf.check_at_least_once(services, run, recs, poison, out, model, red=cl)
    # The terminal (sliced): each partition's slice in the cluster is what the reference
    # computes from that partition's payments alone, whichever instance wrote it.
    decl = rfkit.DECL
    by_part = {}
    seen = {}
    for r in sorted((r for r in recs if r.payment), key=lambda r: (r.partition, r.offset)):
        eng = by_part.setdefault(r.partition, rfkit.rff.Engine(decl))
        assert eng.apply("riskflow.Payment", r.payment, r.topic, r.partition, r.offset)
        seen.setdefault(r.payment["terminal_id"], set()).add(r.partition)
    tid = rfkit.rff.topic_id(topics["in"])
    bad = []
    for term, parts in seen.items():
        got = cl.hgetall(rfkit.state_key(run, "terminal", term))
        want = {("%08x:%d" % (tid, p)).encode(): by_part[p].state("terminal", term).pack()
                for p in parts}
        if got != want:
            bad.append((term, sorted(got), sorted(want)))
    assert not bad, "terminal slices differ from the reference (%d of %d): %s" % (
        len(bad), len(seen), bad[:2])
    shares = [tf.stats_counter(d, "scored") for d in daemons]
    assert all(s > 0 for s in shares), "an instance scored nothing: %s" % shares
    assert sum(shares) >= n, (shares, n)
    runs_b = daemons[1].log_text().split("===== run ")[1:]
    assert len(runs_b) == 2 and "assigned " in runs_b[1], "b took no partitions back"
    print("scale-out: %d payments over %d partitions, 3 instances (scored %s), one stopped and "
          "started again, %d duplicate scores (all identical)" % (n, PARTS, shares, dups))
    for k in cl.scan_iter(match=run + ":*", count=1000):
        cl.delete(k)
    rfkit.delete_topics(services, list(topics.values()))
