"""Kafka over TLS with SASL/SCRAM (issue 8 item 4, the Kafka half), against the real broker's
SASL_SSL listener (tools/services.sh: certificates made with openssl at start, a CA and the
broker's certificate for 127.0.0.1; one SCRAM-SHA-256 user).

riskflowd consumes and produces only through that listener (kafka.security.protocol=SASL_SSL,
kafka.sasl.mechanisms=SCRAM-SHA-256, kafka.ssl.ca.location, the password from a file via
kafka.sasl.password.file): every payment is scored, the scores read back over the plaintext
listener. With a wrong password the log says the authentication failed, nothing is scored,
and /readyz never answers 200; the password never reaches the log.
"""

import os
import random
import time

import rfkit
from rfkit import Produced


def sasl_conf(services, run, password_file, **extra):
    return rfkit.fraud_conf(
        services, run, kafka_bootstrap_servers=os.environ["RF_KAFKA_SASL_BOOTSTRAP"],
        kafka_security_protocol="SASL_SSL", kafka_sasl_mechanisms="SCRAM-SHA-256",
        kafka_sasl_username=os.environ["RF_KAFKA_SASL_USER"],
        kafka_sasl_password_file=password_file, kafka_ssl_ca_location=os.environ["RF_KAFKA_CA"],
        fraud_score_where="all", **extra)


def test_sasl_ssl(services, tmp_path):
    assert os.environ.get("RF_KAFKA_SASL_BOOTSTRAP"), \
        "tools/services.sh did not export the SASL_SSL listener (source .run/services.env)"
    run = rfkit.unique("rf-sasl")
    rfkit.create_topics(services, {run + ".feed": 2, run + ".scores": 1, run + ".alerts": 1,
                                   run + ".dlq": 1})
    pays = rfkit.gen_stream(random.Random(9), ["c%02d" % i for i in range(15)], 80, "sasl")
    rfkit.produce_checked(rfkit.make_producer(services),
                          [Produced(run + ".feed", p["customer_id"].encode(),
                                    rfkit.encode_payment(p), payment=p) for p in pays])
    good = tmp_path / "sasl.pw"
    good.write_text(os.environ["RF_KAFKA_SASL_PASSWORD"] + "\n")
    bad = tmp_path / "bad.pw"
    bad.write_text("not-the-password\n")

    port = rfkit.free_port()
    d_bad = rfkit.Daemon(tmp_path, sasl_conf(services, run, str(bad),
                                             kafka_group_id=run + ".badgroup",
                                             metrics_listen="127.0.0.1:%d" % port), name="bad")
    try:
        d_bad.start()
        deadline = time.monotonic() + 20
        while "Authentication failed" not in d_bad.log_text():
            assert time.monotonic() < deadline, d_bad.log_tail()
            time.sleep(0.2)
        assert rfkit.readyz(port)[0] == 503, "ready with a wrong SASL password"
    finally:
        d_bad.kill()
    assert "not-the-password" not in d_bad.log_text()

    d = rfkit.Daemon(tmp_path, sasl_conf(services, run, str(good)), name="ok")
    scores = rfkit.TopicReader(services, run + ".scores")  # read over plaintext
    rfkit.run_to_outputs(d, scores, len(pays), "scores over SASL_SSL")
    got = {rfkit.decode_confluent(m.value(), rfkit.SCORE_ID, rfkit.SCORE_SCHEMA)["event_id"]
           for m in scores.msgs}
    assert got == {p["event_id"] for p in pays}
    assert os.environ["RF_KAFKA_SASL_PASSWORD"] not in d.log_text()
