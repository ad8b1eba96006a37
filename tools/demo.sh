#!/usr/bin/env bash
# README's first command: install what the build needs (Debian packages only: the demo needs no
# Kafka broker, no Redis and no Python), build, and run riskflowd on its embedded default:
# librdkafka's in-process mock cluster, an in-process feature store, a synthetic payment
# stream with fraud bursts and poison messages. Alerts print as they happen; a summary ends it.
# Extra arguments go to riskflowd, e.g. tools/demo.sh -X demo.events=100000 -X demo.rate=0
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash tools/deps.sh --apt-only
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j2 >/dev/null
exec ./build/riskflowd --demo "$@"
