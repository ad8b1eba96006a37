#!/usr/bin/env python3
"""redis_memory.py — what riskflowd's state costs in Redis, per entity kind.

After a run (e.g. tools/bench/bench_e2e.py, whose key prefixes are bench-<topic>-<run>), it
scans the keys under one prefix, asks Redis `MEMORY USAGE key SAMPLES 0` (the key, its value
and Redis's own overhead, every field of a hash counted) for up to --sample keys of each kind,
and prints per kind: the keys found, the mean bytes per key, the hash fields per key for a
sliced kind, and what a million entities of that kind take. A measurement, not a test.

    .venv/bin/python tools/bench/redis_memory.py --prefix bench-bench-1a2b3c4d-0
    .venv/bin/python tools/bench/redis_memory.py --list     # the prefixes present
"""
import argparse
import os
import random
import statistics
import sys

import redis


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--prefix", help="riskflowd's redis.key.prefix of the run to measure")
    ap.add_argument("--list", action="store_true", help="list the key prefixes present")
    ap.add_argument("--sample", type=int, default=2000, help="keys measured per kind")
    ap.add_argument("--host", default=os.environ.get("RF_REDIS_HOST", "127.0.0.1"))
    ap.add_argument("--port", type=int, default=int(os.environ.get("RF_REDIS_PORT", "6379")))
    a = ap.parse_args()
    r = redis.Redis(host=a.host, port=a.port)
    if a.list or not a.prefix:
        prefixes = {}
        for k in r.scan_iter(count=10000):
            p = k.decode(errors="replace").split(":", 1)[0]
            prefixes[p] = prefixes.get(p, 0) + 1
        for p, n in sorted(prefixes.items()):
            print("%-40s %d keys" % (p, n))
        return
    kinds = {}
    for k in r.scan_iter(match=a.prefix + ":*", count=10000):
        parts = k.decode(errors="replace").split(":")
        kind = parts[1] if len(parts) > 2 else parts[-1]
        kinds.setdefault(kind, []).append(k)
    if not kinds:
        sys.exit("no keys under %s: (--list shows the prefixes)" % a.prefix)
    rng = random.Random(1)
    print("%-10s %9s %12s %8s %16s" % ("kind", "keys", "bytes/key", "fields", "per 1M entities"))
    for kind, keys in sorted(kinds.items()):
        sample = keys if len(keys) <= a.sample else rng.sample(keys, a.sample)
        sizes = [r.memory_usage(k, samples=0) or 0 for k in sample]
        fields = ""
        if r.type(sample[0]) == b"hash":
            fields = "%.2f" % statistics.mean(r.hlen(k) for k in sample)
        mean = statistics.mean(sizes)
        print("%-10s %9d %12.0f %8s %13.2f GB" % (kind, len(keys), mean, fields, mean * 1e6 / 1e9))
    info = r.info("memory")
    print("used_memory %.1f MB, of it the dataset %s" % (info["used_memory"] / 1e6,
                                                        info.get("used_memory_dataset", "?")))


if __name__ == "__main__":
    main()
