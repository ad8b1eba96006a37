#!/usr/bin/env bash
# The models' cost per row (issue 5 item 10): build/bench_models's timings (medians of 7 runs,
# batch 64, one thread) and, under callgrind, the instructions per row of each measured loop,
# which do not move with the machine's noise. Run from anywhere; needs a build (cmake) and
# valgrind (tools/deps.sh installs it).
#   tools/bench/bench_models.sh [BATCH]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
batch=${1:-64}
bin=build/bench_models
[ -x "$bin" ] || { echo "bench_models.sh: $bin is not built (cmake --build build)" >&2; exit 1; }
"$bin" -b "$batch" -r 7
n=400
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
echo "callgrind, instructions per row at batch $batch ($n batches each):"
for b in fraud scorecard scorecard_reasons gru all; do
    valgrind --tool=callgrind --callgrind-out-file="$out/cg.$b" --toggle-collect="loop_$b" \
        "$bin" -o "$b" -r 1 -n "$n" -b "$batch" >/dev/null 2>"$out/log.$b"
    ir=$(sed -n 's/.*Collected : \([0-9]*\).*/\1/p' "$out/log.$b")
    awk -v b="$b" -v ir="$ir" -v n="$n" -v bt="$batch" \
        'BEGIN { printf "  %-18s %8.0f instructions per row\n", b, ir / (n * bt) }'
done
