"""riskflowd speaks systemd's notify protocol (issue 8 item 1), checked with a NOTIFY_SOCKET of
the test's own: a Unix datagram socket that records every datagram and when it came.

  - READY=1 comes once, only after partitions are assigned and Redis answers, and after it
    STATUS= says "ready" with the partition count; WATCHDOG=1 comes every WATCHDOG_USEC/2
    from the start (here 400 ms -> every 200 ms);
  - with Redis unreachable: watchdog pings, STATUS= "waiting for Redis to answer", and no
    READY=1 at all;
  - SIGTERM: STOPPING=1, no READY=1 after it, exit 0;
  - WATCHDOG_PID naming another process: no watchdog pings (they are not for us).
"""

import datetime
import os
import re
import signal
import socket
import threading
import time

import rfkit


class NotifySocket(threading.Thread):
    """Binds a datagram socket and records (monotonic time, message) for each datagram."""

    def __init__(self, path):
        super().__init__(daemon=True)
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.sock.settimeout(0.2)
        self.msgs = []
        self.wall = []  # time.time() of each, to compare with the log's timestamps
        self.done = False

    def run(self):
        while not self.done:
            try:
                data = self.sock.recv(4096)
            except socket.timeout:
                continue
            except OSError:
                return
            for line in data.decode().split("\n"):
                if line:
                    self.msgs.append((time.monotonic(), line))
                    self.wall.append(time.time())

    def close(self):
        self.done = True
        self.join(2)
        self.sock.close()

    def lines(self, prefix):
        return [(t, m) for t, m in self.msgs if m.startswith(prefix)]

    def wait_for(self, prefix, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.lines(prefix)
            if got:
                return got[0]
            time.sleep(0.05)
        return None


def base_conf(services, run, redis_port=None):
    return rfkit.fraud_conf(services, run, redis_port=redis_port or services.redis_port,
                            redis_connect_timeout_ms=200)


def start_with(monkeypatch, daemon, sock_path, watchdog_usec, watchdog_pid=None):
    monkeypatch.setenv("NOTIFY_SOCKET", sock_path)
    monkeypatch.setenv("WATCHDOG_USEC", str(watchdog_usec))
    if watchdog_pid is not None:
        monkeypatch.setenv("WATCHDOG_PID", str(watchdog_pid))
    else:
        monkeypatch.delenv("WATCHDOG_PID", raising=False)
    daemon.start()
    monkeypatch.delenv("NOTIFY_SOCKET")
    monkeypatch.delenv("WATCHDOG_USEC")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)



def test_notify_sequence(services, tmp_path, monkeypatch):
    run = rfkit.unique("rf-notify")
    rfkit.create_topics(services, {run + ".feed": 2, run + ".scores": 1, run + ".alerts": 1,
                                   run + ".dlq": 1})
    ns = NotifySocket(str(tmp_path / "notify.sock"))
    ns.start()
    d = rfkit.Daemon(tmp_path, base_conf(services, run), name="ok")
    try:
        t0 = time.monotonic()
        start_with(monkeypatch, d, ns.path, 400000)
        ready = ns.wait_for("READY=1", 60)
        assert ready, "no READY=1 in 60 s: %s\n%s" % (ns.msgs[-5:], d.log_tail())
        # READY=1 came after the assignment (the log's timestamp of it, in ms), and STATUS
        # says ready with both partitions right after it.
        m = re.search(r"^(\S+)Z info +KAFKA +rebalance: assignment of 2 partition",
                      d.log_text(), re.M)
        assert m, d.log_tail()
        assigned = datetime.datetime.fromisoformat(m.group(1)).replace(
            tzinfo=datetime.timezone.utc).timestamp()
        ready_wall = ns.wall[ns.msgs.index(ready)]
        assert ready_wall >= assigned - 0.002, (ready_wall, assigned)
        time.sleep(1.5)
        statuses = [m for t, m in ns.msgs if m.startswith("STATUS=") and t >= ready[0]]
        assert any(m.startswith("STATUS=ready: 2 partitions") for m in statuses), statuses
        before = [m for t, m in ns.msgs if t < ready[0] and m.startswith("STATUS=")]
        assert all(not m.startswith("STATUS=ready") for m in before), before
        # The watchdog: every 200 ms from the start, also while waiting for readiness.
        wd = [t for t, m in ns.lines("WATCHDOG=1")]
        assert len(wd) >= 5, len(wd)
        gaps = [b - a for a, b in zip(wd, wd[1:])]
        assert max(gaps) < 0.6 and 0.1 < sorted(gaps)[len(gaps) // 2] < 0.3, gaps
        assert wd[0] - t0 < 5, "first WATCHDOG=1 only %.1f s after the start" % (wd[0] - t0)
        d.proc.send_signal(signal.SIGTERM)
        rc = d.proc.wait(30)
        assert rc == 0, d.log_tail()
        stop = ns.wait_for("STOPPING=1", 5)
        assert stop, ns.msgs[-5:]
        assert len(ns.lines("READY=1")) == 1
        assert all(t <= stop[0] for t, m in ns.lines("READY=1"))
    finally:
        d.kill()
        ns.close()


def test_not_ready_without_redis(services, tmp_path, monkeypatch):
    run = rfkit.unique("rf-notify-nr")
    rfkit.create_topics(services, {run + ".feed": 1, run + ".scores": 1, run + ".alerts": 1,
                                   run + ".dlq": 1})
    ns = NotifySocket(str(tmp_path / "notify.sock"))
    ns.start()
    d = rfkit.Daemon(tmp_path, base_conf(services, run, redis_port=rfkit.free_port()), name="nr")
    try:
        start_with(monkeypatch, d, ns.path, 400000)
        time.sleep(5)
        d.assert_alive()
        assert not ns.lines("READY=1"), ns.msgs
        assert len(ns.lines("WATCHDOG=1")) >= 10
        st = ns.lines("STATUS=")
        assert st and "waiting for Redis to answer" in st[-1][1], st
    finally:
        d.kill()
        ns.close()

    # WATCHDOG_PID of another process: the watchdog is not ours to feed.
    ns2 = NotifySocket(str(tmp_path / "notify2.sock"))
    ns2.start()
    d2 = rfkit.Daemon(tmp_path, base_conf(services, run, redis_port=rfkit.free_port()), name="pid")
    try:
        start_with(monkeypatch, d2, ns2.path, 400000, watchdog_pid=os.getpid())
        time.sleep(2)
        d2.assert_alive()
        assert not ns2.lines("WATCHDOG=1"), ns2.msgs
        assert ns2.lines("STATUS=")
    finally:
        d2.kill()
        ns2.close()


def test_sigterm_while_starting(services, tmp_path):
    """A SIGTERM sent as soon as riskflowd has taken over its signals — while it is still
    loading models and joining the group — is a clean stop (exit 0), never the default
    action's kill: threads that exist before main() (OpenBLAS starts its own at load) do not
    block the signal, so main installs a handler for them before anything else."""
    run = rfkit.unique("rf-early-term")
    rfkit.create_topics(services, {run + ".feed": 1})
    for i in range(5):
        d = rfkit.Daemon(tmp_path, base_conf(services, run), name="early%d" % i)
        d.start()
        d.sigterm_ready()
        d.proc.send_signal(signal.SIGTERM)
        try:
            rc = d.proc.wait(30)
        finally:
            d.kill()
        assert rc == 0, "exit %s after an early SIGTERM\n%s" % (rc, d.log_tail())
