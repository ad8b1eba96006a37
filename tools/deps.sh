#!/usr/bin/env bash
# Installs everything riskflow needs to build and test, on a fresh Debian 12 machine.
# Idempotent, and fast when everything is already there:
#   (a) Debian packages (apt-get update only when one is missing)
#   (b) Kafka 3.9.1 broker jars into tools/kafka/libs (Maven Central), with a stamp
#   (c) the Python venv .venv from tools/requirements.txt (PyPI), with a stamp
# --apt-only: just (a), what building riskflowd and running --demo need (tools/demo.sh).
# Env: RF_DEPS_SKIP_APT=1 skips (a) (for a machine where you are not root).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

say() { printf 'deps: %s\n' "$*" >&2; }
die() { say "ERROR: $*"; exit 1; }

# ---------------------------------------------------------------- (a) apt
APT_PACKAGES=(
  build-essential cmake pkg-config
  librdkafka-dev libuv1-dev libavro-dev libopenblas-dev libhiredis-dev libjansson-dev libssl-dev
  redis-server kcat valgrind python3-venv clang libclang-rt-14-dev
  systemd prometheus openssl
  ca-certificates
)
# Java and Maven (for the Kafka broker) may come from outside Debian (a JDK in /opt,
# say): ask apt for them only when the commands are absent.
command -v java >/dev/null || APT_PACKAGES+=(default-jdk-headless)
command -v mvn >/dev/null || APT_PACKAGES+=(maven)

apt_missing() {
  local p st
  for p in "${APT_PACKAGES[@]}"; do
    st="$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)"
    [[ "$st" == "install ok installed" ]] || printf '%s\n' "$p"
  done
}

install_apt() {
  local missing sudo=()
  mapfile -t missing < <(apt_missing)
  if (( ${#missing[@]} == 0 )); then
    say "apt: all ${#APT_PACKAGES[@]} packages installed"
    return
  fi
  if [[ "${RF_DEPS_SKIP_APT:-0}" == 1 ]]; then
    say "apt: missing ${missing[*]} (RF_DEPS_SKIP_APT=1, not installing)"
    return
  fi
  if (( EUID != 0 )); then
    command -v sudo >/dev/null || die "apt: missing ${missing[*]}; need root or sudo"
    sudo=(sudo)
  fi
  say "apt: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  "${sudo[@]}" apt-get update -qq
  # redis-server's postinst may try to start the distro's own redis on 6379;
  # harmless (our tests use a private port), and in containers it is simply skipped.
  "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  mapfile -t missing < <(apt_missing)
  (( ${#missing[@]} == 0 )) || die "apt: still missing after install: ${missing[*]}"
}

# ---------------------------------------------------------------- (b) Kafka jars
KAFKA_DIR="$ROOT/tools/kafka"
KAFKA_LIBS="$KAFKA_DIR/libs"
KAFKA_STAMP="$KAFKA_LIBS/.complete"

install_kafka() {
  local want
  want="$(sha256sum "$KAFKA_DIR/pom.xml" | cut -d' ' -f1)"
  if [[ -f "$KAFKA_STAMP" && "$(cat "$KAFKA_STAMP")" == "$want" ]] \
     && ls "$KAFKA_LIBS"/kafka_2.13-*.jar >/dev/null 2>&1; then
    say "kafka: jars present ($(ls "$KAFKA_LIBS"/*.jar | wc -l) in tools/kafka/libs)"
    return
  fi
  command -v mvn >/dev/null || die "kafka: mvn not found"
  say "kafka: fetching broker jars with Maven"
  # Into a temp dir, then renamed: an interrupted download never looks complete.
  local tmp
  tmp="$(mktemp -d "${TMPDIR:-/tmp}/rf-kafka-libs.XXXXXX")"
  local mvnlog="$tmp.mvn.log"
  if ! mvn -B -q -Dstyle.color=never -f "$KAFKA_DIR/pom.xml" dependency:copy-dependencies \
        -DincludeScope=runtime -DoutputDirectory="$tmp" >"$mvnlog" 2>&1; then
    cat "$mvnlog" >&2
    rm -rf "$tmp" "$mvnlog"
    die "kafka: mvn dependency:copy-dependencies failed"
  fi
  rm -f "$mvnlog"
  local j
  for j in kafka_2.13-3.9.1.jar kafka-clients-3.9.1.jar kafka-tools-3.9.1.jar \
           slf4j-reload4j-1.7.36.jar reload4j-1.2.19.jar scala-library-2.13.15.jar; do
    [[ -s "$tmp/$j" ]] || { rm -rf "$tmp"; die "kafka: $j missing after Maven run"; }
  done
  rm -rf "$KAFKA_LIBS"
  mv "$tmp" "$KAFKA_LIBS"
  chmod 755 "$KAFKA_LIBS"
  printf '%s\n' "$want" >"$KAFKA_STAMP"
  say "kafka: $(ls "$KAFKA_LIBS"/*.jar | wc -l) jars in tools/kafka/libs"
}

# ---------------------------------------------------------------- (c) Python venv
VENV="$ROOT/.venv"
REQS="$ROOT/tools/requirements.txt"
VENV_STAMP="$VENV/.rf-complete"

install_venv() {
  local py="${RF_PYTHON3:-python3}" want
  command -v "$py" >/dev/null || die "venv: $py not found"
  want="$( { sha256sum "$REQS" | cut -d' ' -f1; "$py" -c 'import sys; print(sys.version)'; } | sha256sum | cut -d' ' -f1)"
  if [[ -f "$VENV_STAMP" && "$(cat "$VENV_STAMP")" == "$want" && -x "$VENV/bin/python" ]] \
     && "$VENV/bin/python" -c 'import sys' 2>/dev/null; then
    say "venv: .venv up to date"
    return
  fi
  say "venv: building .venv from tools/requirements.txt"
  rm -rf "$VENV"
  "$py" -m venv "$VENV" || die "venv: '$py -m venv' failed (Debian's python3 needs python3-venv)"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check --only-binary=:all: \
    -r "$REQS" || die "venv: pip install failed"
  "$VENV/bin/python" -c 'import pytest, confluent_kafka, fastavro, redis, numpy, sklearn' \
    || die "venv: packages do not import"
  printf '%s\n' "$want" >"$VENV_STAMP"
  say "venv: ready ($("$VENV/bin/python" --version))"
}

apt_only=0
for arg in "$@"; do
  case "$arg" in
    --apt-only) apt_only=1 ;;
    *) die "unknown argument: $arg (usage: tools/deps.sh [--apt-only])" ;;
  esac
done

t0=$SECONDS
install_apt
if (( ! apt_only )); then
  install_kafka
  install_venv
fi
say "done in $((SECONDS - t0)) s"
