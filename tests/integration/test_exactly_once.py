"""Exactly-once mode on the real broker and Redis (issue 6, item 2).

processing.guarantee=exactly-once: each commit interval's outputs, dead letters and input
offsets are one Kafka transaction (README "Exactly-once"). A read_committed reader must see
exactly one score per payment, at most one alert, one dead letter per poison message, across
every fault; the aborted copies are there for a read_uncommitted reader to see, which shows
the faults really cut transactions short.

  - test_exactly_once_across_kills: a paced stream, riskflowd SIGKILLed and restarted four
    times while it runs (each restart's init aborts the transaction the killed one left
    open; its inputs come back as replays and get their first outputs from the journal).
  - test_fenced_rebalanced_and_timed_out: a second instance joins and leaves (revocations
    end the transaction before letting go); a third with the first's transactional.id
    fences the first, which must stop; the survivor is frozen (SIGSTOP) past
    transaction.timeout.ms, so the coordinator aborts its transaction under it.
Both check the outputs against the independent Python reference and Redis against a
fault-free run's state.
"""

import re
import signal
import time

import rfkit
import test_faults as tf

SEED = tf.SEED + 100


def eos_conf(svc, run, topics, tid, commit_ms=200):
    conf = tf.conf_for(svc, run, topics, commit_ms)
    conf["processing.guarantee"] = "exactly-once"
    conf["kafka.transactional.id"] = tid
    conf["kafka.session.timeout.ms"] = 6000
    conf["kafka.heartbeat.interval.ms"] = 500
    return conf


def uncommitted_scores(svc, topics):
    r = rfkit.TopicReader(svc, topics["scores"], "read_uncommitted")
    try:
        r.read_to_end(30)
    finally:
        r.close()
    return len(r.msgs)


def test_exactly_once_across_kills(services, model, tmp_path):
    run, topics, recs, poison = tf.make_world(services, "rf-eos-kills", 150, 5000, 9, SEED)
    producer = rfkit.make_producer(services)
    conf = eos_conf(services, run, topics, run + ".txn")
    # Static membership: a restarted instance takes its partitions back at once instead of
    # waiting out the killed one's session, so every run gets to commit before it is killed.
    conf["kafka.group.instance.id"] = run + ".a"
    daemon = rfkit.Daemon(tmp_path, conf)
    pacer = rfkit.Pacer(producer, recs, 1000)
    kills = 4
    out = tf.kill_while_streaming(services, daemon, producer, recs, pacer, run, topics, kills,
                                  lambda: 1.6)
    n = tf.check_exactly_once(services, run, recs, poison, out, model)
    total = uncommitted_scores(services, topics)
    assert total > n, "read_uncommitted sees %d scores for %d payments: no transaction was " \
        "cut short by the kills, so this test showed nothing" % (total, n)
    commits = tf.stats_counter(daemon, "txn_commits")
    assert commits >= 5, "only %d transactions committed" % commits
    # The offsets committed in transactions carry the Redis epoch, as plain commits do: the
    # last start found every partition committed under it.
    found = re.findall(r"(\d+) committed partitions, (\d+) of them under this epoch",
                       daemon.log_text())
    assert found and found[-1][0] == found[-1][1] != "0", "epoch in the transactions' " \
        "commits: %s" % found
    left = sorted(k.decode() for k in services.redis().scan_iter(match=run + ":log:*"))
    assert not left, "journal keys left after a clean stop: " + tf.first(left)
    print("exactly-once across %d SIGKILLs: %d payments, one committed score each; %d scores "
          "in aborted transactions; %d transactions committed, %d replays" % (
              kills, n, total - n, commits, tf.stats_counter(daemon, "replays")))
    rfkit.delete_topics(services, list(topics.values()))


def test_fenced_rebalanced_and_timed_out(services, model, tmp_path):
    run, topics, recs, poison = tf.make_world(services, "rf-eos-fence", 150, 6000, 6, SEED + 1)
    producer = rfkit.make_producer(services)
    conf = eos_conf(services, run, topics, run + ".txn-a")
    # The coordinator aborts a transaction open longer than this (messages must time out
    # within it too: librdkafka's rule).
    conf["kafka.transaction.timeout.ms"] = 4000
    conf["kafka.message.timeout.ms"] = 4000
    a = rfkit.Daemon(tmp_path, conf, name="a")
    b = rfkit.Daemon(tmp_path, dict(conf, **{"kafka.transactional.id": run + ".txn-b"}),
                     name="b")
    z = rfkit.Daemon(tmp_path, conf, name="z")  # a's transactional.id: fences a
    pacer = rfkit.Pacer(producer, recs, 600)
    steps = []
    try:
        a.start()
        pacer.start()
        time.sleep(2)
        b.start()
        steps.append("b joins")
        time.sleep(3)
        rc, _ = b.stop(timeout=60)
        assert rc == 0, "b exited %s\n%s" % (rc, b.log_tail())
        steps.append("b leaves")
        time.sleep(1.5)
        z.start()
        steps.append("z starts with a's transactional.id")
        deadline = time.monotonic() + 60
        while a.alive() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not a.alive(), "a was not fenced out within 60 s\n" + a.log_tail()
        assert a.proc.returncode not in (0, None), "fenced a exited %s" % a.proc.returncode
        assert "fenced" in a.log_text().lower(), "a's log does not say it was fenced\n" + \
            a.log_tail()
        steps.append("a fenced, exits %d" % a.proc.returncode)
        time.sleep(2)
        z.proc.send_signal(signal.SIGSTOP)
        time.sleep(7)
        z.proc.send_signal(signal.SIGCONT)
        steps.append("z frozen 7 s (transaction.timeout.ms 4 s)")
        time.sleep(3)
        if not z.alive():  # librdkafka may find the timed-out transaction fatal: restart
            steps.append("z exits %d after its transaction timed out; restarted" %
                         z.proc.returncode)
            z.start()
        pacer.join()
        assert pacer.error is None, pacer.error
        rfkit.flush_checked(producer, recs)
        rfkit.wait_committed_to_end(services, z, run + ".group", topics["in"], timeout=180)
        rfkit.stop_clean(z)
        out = tf.read_all(services, topics)
    except BaseException:
        for d in (a, b, z):
            d.kill()
        print("steps:", steps)
        print(a.log_tail(60), b.log_tail(40), z.log_tail(120))
        raise
    n = tf.check_exactly_once(services, run, recs, poison, out, model)
    aborts = tf.stats_counter(z, "txn_aborts")
    print("exactly-once: %d payments, one committed score each; %s; z's aborts: %d" % (
        n, ", ".join(steps), aborts))
    rfkit.delete_topics(services, list(topics.values()))
