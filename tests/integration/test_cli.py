"""riskflowd's configuration errors and --check-config (no Kafka or Redis needed).

Bad configuration exits 78 (EX_CONFIG) and says where: the file, the line, the key.
"""

import os
import re
import subprocess

import pytest

import rfkit

GOOD = {
    "kafka.bootstrap.servers": "127.0.0.1:1",   # never contacted by --check-config
    "kafka.group.id": "rf-cli-test",
    "input.topics": "payments,transfers:plain",
    "schemas.dir": rfkit.SCHEMAS_DIR,
    "fraud.model.path": rfkit.MODEL_PATH,
    "redis.port": "6379",
    "fraud.alert.threshold": "0.5",
}


def write_conf(tmp_path, lines, name="riskflowd.properties"):
    path = os.path.join(str(tmp_path), name)
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


def good_lines(**over):
    conf = dict(GOOD, **over)
    return ["# riskflowd test config", ""] + ["%s=%s" % kv for kv in conf.items()]


def run(daemon_bin, *args, timeout=30):
    p = subprocess.run([daemon_bin, *args], capture_output=True, text=True, timeout=timeout,
                       stdin=subprocess.DEVNULL, cwd=rfkit.ROOT)
    return p.returncode, p.stdout + p.stderr


def names_line(out, path, line):
    """The message points at path and line: "path:LINE" or "path ... line LINE"."""
    return path in out and re.search(r"(%s:%d\b)|(line %d\b)" % (re.escape(path), line, line),
                                     out) is not None


def test_check_config_good(daemon_bin, tmp_path):
    path = write_conf(tmp_path, good_lines())
    rc, out = run(daemon_bin, "-c", path, "--check-config")
    assert rc == 0, "--check-config on a good config exited %d:\n%s" % (rc, out)


@pytest.mark.parametrize("mode", [[], ["--check-config"]], ids=["run", "check-config"])
def test_unknown_key(daemon_bin, tmp_path, mode):
    lines = good_lines()
    lines.insert(4, "fraud.alert.treshold=0.7")  # a typo: line 5
    path = write_conf(tmp_path, lines)
    rc, out = run(daemon_bin, "-c", path, *mode)
    assert rc == rfkit.EXIT_CONFIG, "unknown key: exit %d, want 78:\n%s" % (rc, out)
    assert "fraud.alert.treshold" in out, "the message does not name the key:\n" + out
    assert names_line(out, path, 5), "the message does not name %s line 5:\n%s" % (path, out)


@pytest.mark.parametrize("key,value", [
    ("redis.port", "63x79"),
    ("redis.port", "99999"),
    ("pipeline.batch.max", ""),
    ("input.max.message.bytes", "4k"),
    ("fraud.alert.threshold", "high"),
    ("log.level", "loud"),
])
def test_bad_value(daemon_bin, tmp_path, key, value):
    lines = [l for l in good_lines() if not l.startswith(key + "=")]
    lines.insert(3, "%s=%s" % (key, value))  # line 4
    path = write_conf(tmp_path, lines)
    rc, out = run(daemon_bin, "-c", path, "--check-config")
    assert rc == rfkit.EXIT_CONFIG, "%s=%r: exit %d, want 78:\n%s" % (key, value, rc, out)
    assert key in out, "the message does not name the key %s:\n%s" % (key, out)
    assert names_line(out, path, 4), "the message does not name %s line 4:\n%s" % (path, out)


def test_bad_value_on_command_line(daemon_bin, tmp_path):
    path = write_conf(tmp_path, good_lines())
    rc, out = run(daemon_bin, "-c", path, "-X", "redis.port=abc", "--check-config")
    assert rc == rfkit.EXIT_CONFIG, "-X redis.port=abc: exit %d, want 78:\n%s" % (rc, out)
    assert "redis.port" in out and "-X" in out, out


def test_missing_model_check_config(daemon_bin, tmp_path):
    missing = os.path.join(str(tmp_path), "no-such-model.json")
    path = write_conf(tmp_path, good_lines(**{"fraud.model.path": missing}))
    rc, out = run(daemon_bin, "-c", path, "--check-config")
    assert rc == rfkit.EXIT_CONFIG, "missing model: exit %d, want 78:\n%s" % (rc, out)
    assert missing in out and "fraud.model.path" in out, out


def test_missing_config_file(daemon_bin, tmp_path):
    path = os.path.join(str(tmp_path), "nope.properties")
    rc, out = run(daemon_bin, "-c", path, "--check-config")
    assert rc == rfkit.EXIT_CONFIG, "missing config file: exit %d, want 78:\n%s" % (rc, out)
    assert path in out, out


@pytest.mark.parametrize("line", ["kafka.no.such.property=1", "kafka.linger.ms=soon"])
def test_check_config_validates_kafka_keys(daemon_bin, tmp_path, line):
    """kafka.* keys go to librdkafka. The daemon refuses a bad one at start (exit 78); so must
    --check-config, or it says "configuration OK" for a file the daemon will not run with."""
    lines = good_lines()
    lines.insert(3, line)  # line 4
    path = write_conf(tmp_path, lines)
    rc_run, out_run = run(daemon_bin, "-c", path, timeout=30)
    key = line.split("=")[0]
    assert rc_run == rfkit.EXIT_CONFIG, "daemon start with %s: exit %d, want 78:\n%s" % (
        line, rc_run, out_run)
    assert key in out_run, out_run
    rc, out = run(daemon_bin, "-c", path, "--check-config")
    assert rc == rfkit.EXIT_CONFIG, (
        "DAEMON BUG: --check-config exits %d (%s) for `%s`, but starting the daemon with the "
        "same file exits %d. --check-config must build the librdkafka configs too."
        % (rc, out.strip(), line, rc_run))
    assert names_line(out, path, 4), "the message does not name %s line 4:\n%s" % (path, out)
    assert names_line(out_run, path, 4), (
        "DAEMON BUG: the daemon's error for `%s` does not name %s line 4:\n%s"
        % (line, path, out_run))


# ---- jobs, feature declarations, record types (docs/FEATURES.md, docs/ENGINE.md)

def features_with(tmp_path, replace=None, drop=None):
    """deploy/features.conf with one line replaced or dropped; returns (path, line number)."""
    with open(rfkit.FEATURES_PATH) as f:
        lines = f.read().split("\n")
    key = replace[0] if replace else drop
    idx = next(i for i, l in enumerate(lines) if l.startswith(key))
    if replace:
        lines[idx] = replace[1]
    else:
        del lines[idx]
    path = os.path.join(str(tmp_path), "features.conf")
    with open(path, "w") as f:
        f.write("\n".join(lines))
    return path, idx + 1


@pytest.mark.parametrize("mode", [[], ["--check-config"]], ids=["run", "check-config"])
def test_bad_feature_declaration(daemon_bin, tmp_path, mode):
    feats, line = features_with(tmp_path, replace=(
        "feature cust_sum_1h ", "feature cust_sum_1h = sum(nope) per customer on Payment "
        "window=1h/12"))
    path = write_conf(tmp_path, good_lines(**{"features.path": feats}))
    rc, out = run(daemon_bin, "-c", path, *mode)
    assert rc == rfkit.EXIT_CONFIG, "bad declaration: exit %d, want 78:\n%s" % (rc, out)
    assert "%s:%d: " % (feats, line) in out and "no field 'nope'" in out, out


def test_model_feature_not_declared(daemon_bin, tmp_path):
    feats, _ = features_with(tmp_path, drop="feature is_night ")
    path = write_conf(tmp_path, good_lines(**{"features.path": feats}))
    rc, out = run(daemon_bin, "-c", path, "--check-config")
    assert rc == rfkit.EXIT_CONFIG, "undeclared model feature: exit %d, want 78:\n%s" % (rc, out)
    assert "is_night" in out and rfkit.MODEL_PATH in out and feats in out, out
    assert names_line(out, path, 7), "the message does not name fraud.model.path's line:\n" + out


def test_model_feature_not_available(daemon_bin, tmp_path):
    """Declared, but not computable for payments: on another record type."""
    feats, line = features_with(tmp_path, replace=(
        "feature is_night ", "feature is_night = value() on CreditEvent where "
        "hour(event_time)<6"))
    path = write_conf(tmp_path, good_lines(**{"features.path": feats}))
    rc, out = run(daemon_bin, "-c", path, "--check-config")
    assert rc == rfkit.EXIT_CONFIG, out
    assert "is_night" in out and "%s:%d" % (feats, line) in out and "riskflow.Payment" in out, out


@pytest.mark.parametrize("topics,needle", [
    ("payments,trades:plain:riskflow.Nope", "riskflow.Nope"),
    ("payments,scores:plain:riskflow.FraudScore", "riskflow.FraudScore"),
    ("payments,trades:confluent:riskflow.Trade", "plain:RecordType"),
], ids=["unknown-type", "output-type", "type-on-confluent"])
def test_plain_topic_types(daemon_bin, tmp_path, topics, needle):
    path = write_conf(tmp_path, good_lines(**{"input.topics": topics}))
    rc, out = run(daemon_bin, "-c", path, "--check-config")
    assert rc == rfkit.EXIT_CONFIG, "%s: exit %d, want 78:\n%s" % (topics, rc, out)
    assert needle in out and "input.topics" in out, out


def test_unknown_job(daemon_bin, tmp_path):
    path = write_conf(tmp_path, good_lines(jobs="fraud,astrology"))
    rc, out = run(daemon_bin, "-c", path, "--check-config")
    assert rc == rfkit.EXIT_CONFIG, out
    assert "unknown job 'astrology'" in out, out


@pytest.mark.parametrize("where,needle", [
    ("kind!=GIFT", "'GIFT' is not a symbol of kind"),
    ("kind!=REFUND or channel=POS", "expected 'and' between conditions, not 'or'"),
    ("amount_minor>ten", "'ten' is not a decimal number"),
    ("colour=RED", "has no field 'colour'"),
], ids=["symbol", "or", "number", "field"])
def test_bad_fraud_score_where(daemon_bin, tmp_path, where, needle):
    lines = good_lines()
    lines.insert(3, "fraud.score.where=" + where)  # line 4
    path = write_conf(tmp_path, lines)
    rc, out = run(daemon_bin, "-c", path, "--check-config")
    assert rc == rfkit.EXIT_CONFIG, "%r: exit %d, want 78:\n%s" % (where, rc, out)
    assert needle in out and "fraud.score.where" in out, out
    assert names_line(out, path, 4), "the message does not name %s line 4:\n%s" % (path, out)


# ---- issue 6: every bound that start checks, --check-config checks too ---------------------

@pytest.mark.parametrize("mode", [[], ["--check-config"]], ids=["run", "check-config"])
def test_duplicate_key(daemon_bin, tmp_path, mode):
    lines = good_lines()
    lines.append("fraud.alert.threshold=0.9")  # set twice in one file: line 10 vs line 9
    lines.append("kafka.group.id=other")
    path = write_conf(tmp_path, lines)
    rc, out = run(daemon_bin, "-c", path, *mode)
    assert rc == 78, out
    assert "set twice" in out and "fraud.alert.threshold" in out, out
    assert names_line(out, path, len(lines) - 1), out
    # -X overrides a file's value: not a duplicate
    path = write_conf(tmp_path, good_lines(), name="ok.properties")
    rc, out = run(daemon_bin, "-c", path, "-X", "fraud.alert.threshold=0.9", "--check-config")
    assert rc == 0, out


@pytest.mark.parametrize("mode", [[], ["--check-config"]], ids=["run", "check-config"])
def test_prefix_too_long(daemon_bin, tmp_path, mode):
    path = write_conf(tmp_path, good_lines(**{"redis.key.prefix": "p" * 33}))
    rc, out = run(daemon_bin, "-c", path, *mode)
    assert rc == 78, out
    assert "redis.key.prefix" in out and "32" in out, out
    path = write_conf(tmp_path, good_lines(**{"redis.key.prefix": "p" * 32}), name="ok.properties")
    rc, out = run(daemon_bin, "-c", path, "--check-config")
    assert rc == 0, out


@pytest.mark.parametrize("mode", [[], ["--check-config"]], ids=["run", "check-config"])
def test_message_max_bytes_leaves_no_room_for_a_dead_letter(daemon_bin, tmp_path, mode):
    path = write_conf(tmp_path, good_lines(**{"kafka.message.max.bytes": "5000"}))
    rc, out = run(daemon_bin, "-c", path, *mode)
    assert rc == 78, out
    assert "message.max.bytes" in out and "dead-letter" in out, out
    path = write_conf(tmp_path, good_lines(**{"kafka.message.max.bytes": "7168"}),
                      name="ok.properties")
    rc, out = run(daemon_bin, "-c", path, "--check-config")
    assert rc == 0, out


@pytest.mark.parametrize("mode", [[], ["--check-config"]], ids=["run", "check-config"])
def test_transactional_id_needs_exactly_once(daemon_bin, tmp_path, mode):
    """A transactional producer refuses every output outside a transaction, and at-least-once
    opens none: the daemon would stop at its first output. Refused up front instead."""
    path = write_conf(tmp_path, good_lines(**{"kafka.transactional.id": "rf-1"}))
    rc, out = run(daemon_bin, "-c", path, *mode)
    assert rc == 78, out
    assert "transactional.id" in out and "exactly-once" in out, out
    path = write_conf(tmp_path, good_lines(**{"kafka.transactional.id": "rf-1",
                                              "processing.guarantee": "exactly-once"}),
                      name="ok.properties")
    rc, out = run(daemon_bin, "-c", path, "--check-config")
    assert rc == 0, out


def test_demo_exactly_once(daemon_bin):
    """The demo's whole stream through transactions on the mock cluster: the same outputs as
    at-least-once, and the summary counts the transactions."""
    rc, out = run(daemon_bin, "--demo", "-X", "processing.guarantee=exactly-once",
                  "-X", "demo.events=3000", timeout=120)
    assert rc == 0, out
    m = re.search(r"transactions:\s+(\d+) committed, (\d+) aborted", out)
    assert m and int(m.group(1)) >= 1 and m.group(2) == "0", out[-3000:]
    assert re.search(r"fraud .*; 3000 scores", out), out[-3000:]
