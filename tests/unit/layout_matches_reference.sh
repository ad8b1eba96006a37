#!/usr/bin/env bash
# The C engine and the Python reference lay out every entity kind of a feature file the same
# way (docs/FEATURES.md §4): the same value size and layout hash per kind, every slot at the
# same offset with the same size, the enabled jobs' state included.
# usage: layout_matches_reference.sh RISKFLOWD FEATURES_FILE [riskflowd -X args...]
set -euo pipefail
daemon="$1" features="$2"
shift 2
c_out="$("$daemon" -X kafka.bootstrap.servers=127.0.0.1:1 -X kafka.group.id=layout \
          -X features.path="$features" "$@" --layout)"
# The jobs riskflowd registered, as the reference's --job NAME:KIND:VERSION:BYTES arguments.
jobs=()
kind=""
while IFS= read -r line; do
  if [[ "$line" =~ ^entity\ ([a-z0-9_]+):\  ]]; then
    kind="${BASH_REMATCH[1]}"
  elif [[ "$line" =~ job\ ([a-z0-9_]+)\ version\ ([0-9]+)\ state\ \(([0-9]+)\ bytes\) ]]; then
    jobs+=(--job "${BASH_REMATCH[1]}:$kind:${BASH_REMATCH[2]}:${BASH_REMATCH[3]}")
  fi
done <<<"$c_out"
p_out="$(python3 tools/train/riskflow_features.py --layout "$features" "${jobs[@]}")"
pick() { grep -E '^entity [a-z0-9_]+: |^ +[0-9]+ +[0-9]+ ' | awk '{print $1, $2, $3}'; }
if ! diff -u <(pick <<<"$p_out") <(pick <<<"$c_out"); then
  echo "layout: riskflowd (+) and tools/train/riskflow_features.py (-) disagree for $features" >&2
  exit 1
fi
echo "layout: riskflowd and the Python reference agree on $features ($(grep -c '^entity [a-z0-9_]*: ' <<<"$c_out") kinds; jobs: ${jobs[*]:-none})"
