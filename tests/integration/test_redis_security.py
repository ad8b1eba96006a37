"""Redis with an ACL user and a password, over a Unix socket (issue 8 item 4, the Redis half).

A redis-server of the test's own listens only on a Unix socket, its default user disabled
and one ACL user `rf` with a password. riskflowd (redis.socket, redis.user,
redis.password.file) scores a stream and its state lands in that Redis; with a wrong password
it never gets a connection announced (the log names WRONGPASS), scores nothing and /readyz
stays 503. Debian 12's hiredis (0.14) has no TLS: README "Redis security" says how to put
stunnel in front of a remote Redis instead.
"""

import os
import shutil
import subprocess
import time

import redis as redis_py

import rfkit
from rfkit import Produced


def start_redis(tmp_path, password):
    sock = str(tmp_path / "redis.sock")
    proc = subprocess.Popen([shutil.which("redis-server") or "redis-server", "--port", "0",
                             "--unixsocket", sock, "--unixsocketperm", "700", "--save", "",
                             "--appendonly", "no", "--user", "default", "off",
                             "--user", "rf", "on", ">" + password, "~*", "&*", "+@all"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while not os.path.exists(sock):
        assert proc.poll() is None and time.monotonic() < deadline, "redis-server did not start"
        time.sleep(0.05)
    return proc, sock


def test_acl_user_over_unix_socket(services, tmp_path):
    import random
    password = "pw-" + os.urandom(8).hex()
    proc, sock = start_redis(tmp_path, password)
    try:
        # Without AUTH the server refuses: the ACL is really on.
        anon = redis_py.Redis(unix_socket_path=sock)
        try:
            anon.ping()
            raise AssertionError("the default user answered")
        except redis_py.exceptions.AuthenticationError:
            pass
        except redis_py.exceptions.ResponseError as e:
            assert "NOAUTH" in str(e) or "auth" in str(e).lower(), e
        pw_file = tmp_path / "redis.pw"
        pw_file.write_text(password + "\n")
        bad_file = tmp_path / "bad.pw"
        bad_file.write_text("wrong\n")

        run = rfkit.unique("rf-redissec")
        rfkit.create_topics(services, {run + ".feed": 1, run + ".scores": 1, run + ".alerts": 1,
                                       run + ".dlq": 1})
        pays = rfkit.gen_stream(random.Random(3), ["c%02d" % i for i in range(10)], 60, "rs")
        producer = rfkit.make_producer(services)
        rfkit.produce_checked(producer, [Produced(run + ".feed", p["customer_id"].encode(),
                                                  rfkit.encode_payment(p), payment=p)
                                         for p in pays])
        # A wrong password: never connected, nothing scored, not ready.
        port = rfkit.free_port()
        bad = rfkit.Daemon(tmp_path, rfkit.fraud_conf(
            services, run + "-bad", redis_socket=sock, redis_user="rf",
            redis_password_file=str(bad_file), metrics_listen="127.0.0.1:%d" % port,
            input_topics=run + ".feed", kafka_group_id=run + ".bad"), name="bad")
        try:
            bad.start()
            time.sleep(3)
            bad.assert_alive()
            assert "WRONGPASS" in bad.log_text(), bad.log_tail()
            assert rfkit.readyz(port)[0] == 503, "ready with a wrong Redis password"
        finally:
            bad.kill()

        d = rfkit.Daemon(tmp_path, rfkit.fraud_conf(
            services, run, redis_socket=sock, redis_user="rf",
            redis_password_file=str(pw_file), fraud_score_where="all"), name="ok")
        scores = rfkit.TopicReader(services, run + ".scores")
        rfkit.run_to_outputs(d, scores, len(pays), "scores")
        assert "connected to %s (authenticated)" % sock in d.log_text()
        assert password not in d.log_text()
        red = redis_py.Redis(unix_socket_path=sock, username="rf", password=password)
        keys = list(red.scan_iter(match=run + ":customer:*"))
        assert len(keys) == len({p["customer_id"] for p in pays}), keys
    finally:
        proc.kill()
        proc.wait()
