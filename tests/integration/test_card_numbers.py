"""Card numbers never leave riskflowd in clear (issue 8 item 4), on the real broker and Redis.

Payments carry known card numbers in card_token; riskflowd runs with
input.hash.fields=card_token and a key file. Some payments are made to alert, one has an
empty customer (dead-lettered after decoding: bad_key), and two poison messages hold a card
number in clear but cannot be decoded. Checks:
  - every alert's card_token is "h1." + base64url(HMAC-SHA256(key, number)[:24]), computed
    here with Python's hmac;
  - no known card number, in any form searched (the digits, their UTF-8 and Avro bytes), is
    in riskflowd's log or stdout, in any score, alert or dead letter (value, key, headers), or
    in any Redis key or value under the run's prefix;
  - the decoded dead letter is the message with the number's bytes zeroed; the undecodable
    ones come without a body, header rf.body=withheld;
  - with input.hash.dlq=original the dead letters keep the bytes as received (the config
    choice: the DLQ topic is then as sensitive as the input).
"""

import base64
import hashlib
import hmac
import os
import random

import rfkit
from rfkit import Produced

KEY = b"k" * 16 + os.urandom(24)


def token(number):
    mac = hmac.new(KEY, number.encode(), hashlib.sha256).digest()[:24]
    return "h1." + base64.urlsafe_b64encode(mac).decode().rstrip("=")


def card(rng):
    return "4" + "".join(str(rng.randrange(10)) for _ in range(15))


def run_once(services, tmp_path, name, dlq_mode):
    rng = random.Random(5)
    run = rfkit.unique("rf-pan-" + name)
    feed, scores_t, alerts_t, dlq_t = run + ".feed", run + ".scores", run + ".alerts", run + ".dlq"
    rfkit.create_topics(services, {feed: 2, scores_t: 1, alerts_t: 1, dlq_t: 1})
    key_file = str(tmp_path / ("%s.key" % name))
    with open(key_file, "wb") as f:
        f.write(KEY + b"\n")
    pays = rfkit.gen_stream(rng, ["c%02d" % i for i in range(25)], 200, "pan" + name,
                            huge_rate=0.2)
    numbers = {}
    for p in pays:
        p["card_token"] = numbers.setdefault(p["customer_id"], card(rng))
    bad = dict(pays[0], event_id="pan-badkey-" + name, customer_id="", card_token=card(rng))
    recs = [Produced(feed, p["customer_id"].encode(), rfkit.encode_payment(p), payment=p)
            for p in pays]
    recs.append(Produced(feed, b"bad", rfkit.encode_payment(bad), payment=bad))
    clear_poison = [card(rng), card(rng)]
    recs.append(Produced(feed, b"x", b"\x00\x00\x00\x00\x01" + clear_poison[0].encode() +
                         b"\xff\xff"))
    recs.append(Produced(feed, b"y", clear_poison[1].encode()))
    conf = rfkit.fraud_conf(services, run, input_hash_fields="card_token",
                            input_hash_key_file=key_file, input_hash_dlq=dlq_mode,
                            fraud_score_where="all", outputs_print="stdout")
    d = rfkit.Daemon(tmp_path, conf, name=name)
    readers = {t: rfkit.TopicReader(services, t) for t in (scores_t, alerts_t, dlq_t)}
    producer = rfkit.make_producer(services)
    try:
        d.start()
        rfkit.produce_checked(producer, recs)
        rfkit.wait_committed_to_end(services, d, run + ".group", feed)
        rfkit.stop_clean(d)
        for r in readers.values():
            r.read_to_end()
    except BaseException:
        d.kill()
        print(d.log_tail(80))
        raise
    return run, d, readers, numbers, bad, clear_poison, (scores_t, alerts_t, dlq_t)


def forms(number):
    b = number.encode()
    # as text, and as an Avro string (zigzag length prefix then the bytes)
    return [b, bytes([len(b) * 2]) + b]


def test_card_numbers_hashed(services, tmp_path):
    run, d, readers, numbers, bad, poison, (scores_t, alerts_t, dlq_t) = run_once(
        services, tmp_path, "redacted", "redacted")
    all_numbers = list(numbers.values()) + [bad["card_token"]] + poison

    alerts = [rfkit.decode_confluent(m.value(), rfkit.ALERT_ID, rfkit.ALERT_SCHEMA)
              for m in readers[alerts_t].msgs]
    assert len(alerts) >= 5, "too few alerts to check (%d)" % len(alerts)
    for a in alerts:
        assert a["card_token"] == token(numbers[a["customer_id"]]), a["card_token"]
    assert len(readers[scores_t].msgs) == 200

    # Search every place a number could leak to.
    blobs = [("log", d.log_text().encode()), ("stdout", open(d.out_path, "rb").read())]
    for t, r in readers.items():
        for m in r.msgs:
            blobs.append((t + " value", m.value() or b""))
            blobs.append((t + " key", m.key() or b""))
            for k, v in (m.headers() or []):
                blobs.append((t + " header " + k, v or b""))
    red = services.redis()
    for k in red.scan_iter(match=run + "*"):
        blobs.append(("redis key", k))
        if red.type(k) in (b"string", "string"):
            blobs.append(("redis value", red.get(k) or b""))
    leaks = [(where, n) for n in all_numbers for where, blob in blobs
             for f in forms(n) if f in blob]
    assert not leaks, "card numbers in clear: %s" % leaks[:5]
    assert any(b"h1." in blob for _, blob in blobs if _ == "stdout"), "no token printed"

    # Dead letters: the decoded one redacted in place, the undecodable ones without a body.
    assert len(readers[dlq_t].msgs) == 3, len(readers[dlq_t].msgs)
    by_reason = {}
    for m in readers[dlq_t].msgs:
        by_reason.setdefault(rfkit.headers_dict(m)["rf.reason"], []).append(m)
    (bk,) = by_reason["bad_key"]
    body = rfkit.encode_payment(bad)
    n = bad["card_token"].encode()
    i = body.index(n)
    assert bk.value() == body[:i] + b"\x00" * len(n) + body[i + len(n):]
    withheld = [m for r, ms in by_reason.items() if r != "bad_key" for m in ms]
    assert len(withheld) == 2
    for m in withheld:
        assert not m.value() and rfkit.headers_dict(m)["rf.body"].startswith("withheld"), \
            rfkit.headers_dict(m)


def test_dlq_original_keeps_bytes(services, tmp_path):
    run, d, readers, numbers, bad, poison, (_, _, dlq_t) = run_once(services, tmp_path, "orig",
                                                                   "original")
    vals = [m.value() for m in readers[dlq_t].msgs]
    assert rfkit.encode_payment(bad) in vals
    assert any(poison[1].encode() == v for v in vals)
