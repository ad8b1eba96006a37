#!/usr/bin/env bash
# What a tree ensemble costs per row (issue 7 item 6): build/bench_trees's timings (medians
# of 7 runs; the branch-free evaluator and the node walk side by side, batch 1 and 64) and,
# under callgrind, the instructions per row of each, which do not move with the machine's
# noise. Default model: 300 synthetic XGBoost trees of depth 6; any other with -m FILE.
#   tools/bench/bench_trees.sh [bench_trees options, e.g. -m deploy/models/fraud_xgb.json]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
bin=build/bench_trees
[ -x "$bin" ] || { echo "bench_trees.sh: $bin is not built (cmake --build build)" >&2; exit 1; }
"$bin" -r 7 "$@"
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
echo "callgrind, instructions per row:"
for b in 1 64; do
    n=$((12800 / b))
    for e in dense walk; do
        valgrind --tool=callgrind --callgrind-out-file="$out/cg" --toggle-collect="loop_$e" \
            "$bin" -o "$e" -r 1 -n "$n" -b "$b" "$@" >/dev/null 2>"$out/log"
        ir=$(sed -n 's/.*Collected : \([0-9]*\).*/\1/p' "$out/log")
        # bench_trees runs each loop twice (a warm-up, then the timed run).
        awk -v e="$e" -v ir="$ir" -v n="$n" -v b="$b" \
            'BEGIN { printf "  %-6s batch %-3d %9.0f instructions per row\n", e, b, ir / (2 * n * b) }'
    done
done
