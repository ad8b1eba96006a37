#!/usr/bin/env bash
# Build the libFuzzer targets (clang, ASan + UBSan) and run each for SECONDS (default 10):
#   fuzz_decode  the record decoder (avro-c as the oracle)
#   fuzz_conf    the configuration parser
#   fuzz_models  the fraud model, scorecard, GRU/LSTM and tree-ensemble loaders
#   fuzz_state   stored entity values and replay journal chunks, as Redis hands them back
# The suite runs it for 10 s a target (ctest unit.fuzz); longer: tests/fuzz/run.sh 600.
# Each target starts from seeds made fresh (valid inputs) plus its corpus from earlier runs in
# OUT/corpus/<target>; a crash or leak fails the run and leaves its input in OUT/.
# Env: RF_FUZZ_OUT (default build/fuzz). Run from anywhere; works in the repo root.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
SECONDS_EACH="${1:-10}"
OUT="${RF_FUZZ_OUT:-$ROOT/build/fuzz}"
CC_FUZZ="${RF_FUZZ_CC:-clang}"
command -v "$CC_FUZZ" >/dev/null || { echo "fuzz: $CC_FUZZ not found (tools/deps.sh installs clang)"; exit 1; }
mkdir -p "$OUT/obj" "$OUT/corpus"

SAN="-fsanitize=address,undefined -fno-sanitize-recover=undefined"
CFLAGS="-std=c11 -D_POSIX_C_SOURCE=200809L -D_DEFAULT_SOURCE -DRF_SOURCE_DIR=\"$ROOT\" -g -O1 -Iinclude -Isrc $(pkg-config --cflags avro-c libuv rdkafka hiredis 2>/dev/null || true) -I/usr/include/x86_64-linux-gnu/openblas-pthread"
LIBS="$(pkg-config --libs avro-c libuv rdkafka hiredis jansson libcrypto) -lopenblas -lm -lpthread"

# The library, once, instrumented for coverage (every src/*.c but main.c).
objs=()
for src in src/*.c; do
  [[ "$src" == src/main.c ]] && continue
  obj="$OUT/obj/$(basename "${src%.c}").o"
  if [[ ! -f "$obj" || "$src" -nt "$obj" || -n "$(find include src -newer "$obj" -name '*.h' -print -quit)" ]]; then
    # shellcheck disable=SC2086
    "$CC_FUZZ" $CFLAGS $SAN -fsanitize=fuzzer-no-link -c "$src" -o "$obj"
  fi
  objs+=("$obj")
done

targets=(fuzz_decode fuzz_conf fuzz_models fuzz_state)
for t in "${targets[@]}"; do
  # shellcheck disable=SC2086
  "$CC_FUZZ" $CFLAGS $SAN -fsanitize=fuzzer "tests/fuzz/$t.c" "${objs[@]}" $LIBS -o "$OUT/$t"
done

# Seeds: valid inputs of every kind.
seed() { rm -rf "$OUT/seeds/$1"; mkdir -p "$OUT/seeds/$1" "$OUT/corpus/$1"; }
seed fuzz_decode
# shellcheck disable=SC2086
cc -std=c11 -DRF_FUZZ_SEEDS -Iinclude tests/fuzz/fuzz_decode.c src/codec_avro.c src/err.c -o "$OUT/seeds_decode"
"$OUT/seeds_decode" "$OUT/seeds/fuzz_decode"
seed fuzz_state
# shellcheck disable=SC2086
"$CC_FUZZ" $CFLAGS $SAN -DRF_FUZZ_SEEDS tests/fuzz/fuzz_state.c "${objs[@]}" $LIBS -o "$OUT/seeds_state"
"$OUT/seeds_state" "$OUT/seeds/fuzz_state"
seed fuzz_conf
cp deploy/riskflowd.conf "$OUT/seeds/fuzz_conf/deploy.conf"
printf 'kafka.bootstrap.servers=h:1\nkafka.group.id=g\njobs=fraud,credit\ninput.topics=a,b:plain:riskflow.Trade\n' \
  > "$OUT/seeds/fuzz_conf/jobs.conf"
seed fuzz_models
{ printf '\0'; cat deploy/models/fraud_lr.json; } > "$OUT/seeds/fuzz_models/fraud"
{ printf '\1'; cat deploy/models/credit_scorecard.json; } > "$OUT/seeds/fuzz_models/scorecard"
{ printf '\2'; cat tests/fixtures/market_lstm_small.safetensors; } > "$OUT/seeds/fuzz_models/lstm"
{ printf '\3'; cat tests/fixtures/trees_lgb_zero.txt; } > "$OUT/seeds/fuzz_models/lightgbm"
{ printf '\3'; printf '%s' '{"learner":{"feature_names":["a","b"],"gradient_booster":{"name":"gbtree","model":{"gbtree_model_param":{"num_trees":"1"},"tree_info":[0],"trees":[{"tree_param":{"num_nodes":"3"},"left_children":[1,-1,-1],"right_children":[2,-1,-1],"split_indices":[1,0,0],"split_conditions":[0.5,-0.25,0.75],"default_left":[1,0,0],"sum_hessian":[4,3,1]}]}},"learner_model_param":{"base_score":"[5E-1]","num_class":"0","num_feature":"2"},"objective":{"name":"binary:logistic"}}}'; } > "$OUT/seeds/fuzz_models/xgboost"

fail=0
for t in "${targets[@]}"; do
  echo "fuzz: $t for ${SECONDS_EACH} s"
  max_len=4096
  [[ $t == fuzz_models ]] && max_len=65536
  [[ $t == fuzz_state ]] && max_len=20000
  if ! "$OUT/$t" -max_total_time="$SECONDS_EACH" -max_len="$max_len" -print_final_stats=1 \
       -artifact_prefix="$OUT/$t-" "$OUT/corpus/$t" "$OUT/seeds/$t" 2> "$OUT/$t.log"; then
    echo "fuzz: $t FAILED; see $OUT/$t.log"
    tail -30 "$OUT/$t.log"
    fail=1
  else
    grep -E 'stat::number_of_executed_units|cov:' "$OUT/$t.log" | tail -2 | sed "s/^/fuzz: $t: /"
  fi
done
exit $fail
