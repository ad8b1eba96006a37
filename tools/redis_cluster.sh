#!/usr/bin/env bash
# A 3-master Redis Cluster on loopback for riskflow's cluster tests (src/rcluster.c), state in
# .run/cluster/<port> (gitignored). No replicas: the tests move slots between masters, they do
# not fail nodes over.
#
#   tools/redis_cluster.sh start     fresh data dirs, start every node, create the cluster, wait
#                                    until every node says cluster_state:ok with 16384 slots
#   tools/redis_cluster.sh stop      SIGTERM, wait, SIGKILL fallback
#   tools/redis_cluster.sh status    exit 0 only if every node runs and reports the cluster ok
#
# Ports (env): RF_REDIS_CLUSTER_PORTS=7101,7102,7103 (each node also takes port+10000 for the
# cluster bus). `start` prints the RF_REDIS_CLUSTER value (host:port,...) that tests read and
# writes it to .run/cluster/cluster.env; tools/services.sh puts it into .run/services.env.
# Needs redis-server and redis-cli (Debian's redis-server, which pulls redis-tools).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR="$ROOT/.run/cluster"
HOST=127.0.0.1
PORTS_CSV="${RF_REDIS_CLUSTER_PORTS:-7101,7102,7103}"
PORTS_FILE="$DIR/ports"
ENV_FILE="$DIR/cluster.env"
DEADLINE=30

# Once started, the ports in use are those recorded, whatever the env says now.
if [[ "${1:-}" != start && -f "$PORTS_FILE" ]]; then
  PORTS_CSV="$(cat "$PORTS_FILE")"
fi
IFS=, read -r -a PORTS <<<"$PORTS_CSV"
# shellcheck source=tools/service_lib.sh
source "$ROOT/tools/service_lib.sh"

STARTING=0
say() { printf 'redis-cluster: %s\n' "$*" >&2; }
die() {
  say "ERROR: $*"
  if (( STARTING )); then   # never leave half a cluster running
    local p
    for p in "${PORTS[@]}"; do tail_log "$DIR/$p/redis.log"; done
    stop_all
  fi
  exit 1
}

cli() {
  local p="$1"
  shift
  timeout 5 redis-cli -h "$HOST" -p "$p" "$@" 2>/dev/null
}

stop_all() {
  local p
  for p in "${PORTS[@]}"; do stop_one "node $p" "$DIR/$p/redis.pid"; done
}

# A node is healthy when it answers and sees the whole cluster: state ok, every slot assigned,
# every master known (a node that has not met the others yet reports ok too late or not at all).
node_ok() {
  local info
  info="$(cli "$1" CLUSTER INFO | tr -d '\r')" || return 1
  grep -qx 'cluster_state:ok' <<<"$info" &&
    grep -qx 'cluster_slots_assigned:16384' <<<"$info" &&
    grep -qx "cluster_known_nodes:${#PORTS[@]}" <<<"$info"
}

addrs() {
  local p out=()
  for p in "${PORTS[@]}"; do out+=("$HOST:$p"); done
  (IFS=,; printf '%s\n' "${out[*]}")
}

cmd_start() {
  command -v redis-server >/dev/null || die "redis-server not found (run tools/deps.sh)"
  command -v redis-cli >/dev/null || die "redis-cli not found (run tools/deps.sh)"
  (( ${#PORTS[@]} >= 3 )) || die "a cluster needs at least 3 masters (RF_REDIS_CLUSTER_PORTS=$PORTS_CSV)"
  local p
  for p in "${PORTS[@]}"; do
    [[ "$p" =~ ^[0-9]+$ ]] && (( p > 0 && p <= 55535 )) || die "bad port '$p' in RF_REDIS_CLUSTER_PORTS"
  done
  # A previous run's nodes (ours, by pid file: the old ports file names them) go first.
  if [[ -f "$PORTS_FILE" ]]; then
    local want=("${PORTS[@]}")
    IFS=, read -r -a PORTS <"$PORTS_FILE"
    stop_all
    PORTS=("${want[@]}")
  fi
  rm -rf "$DIR"
  mkdir -p "$DIR"
  STARTING=1
  for p in "${PORTS[@]}"; do
    port_busy "$p" && die "port $HOST:$p is already in use by another process (set RF_REDIS_CLUSTER_PORTS)"
    port_busy $((p + 10000)) && die "cluster bus port $HOST:$((p + 10000)) is already in use (set RF_REDIS_CLUSTER_PORTS)"
  done
  printf '%s\n' "$PORTS_CSV" >"$PORTS_FILE"
  for p in "${PORTS[@]}"; do
    mkdir -p "$DIR/$p"
    # Persistence as the single test Redis has it (AOF, fsync every second, no RDB saves).
    nohup redis-server --bind "$HOST" --port "$p" --dir "$DIR/$p" \
      --cluster-enabled yes --cluster-config-file nodes.conf --cluster-node-timeout 5000 \
      --appendonly yes --appendfsync everysec --save '' --daemonize no --logfile '' \
      </dev/null >>"$DIR/$p/redis.log" 2>&1 &
    echo $! >"$DIR/$p/redis.pid"
  done
  local start=$SECONDS
  for p in "${PORTS[@]}"; do
    until [[ "$(cli "$p" PING)" == PONG ]]; do
      live_pid "$DIR/$p/redis.pid" >/dev/null || die "node $p exited during start"
      (( SECONDS - start > DEADLINE )) && die "node $p did not answer PING within $DEADLINE s"
      sleep 0.2
    done
  done
  local nodes=()
  for p in "${PORTS[@]}"; do nodes+=("$HOST:$p"); done
  redis-cli --cluster create "${nodes[@]}" --cluster-replicas 0 --cluster-yes \
    >"$DIR/create.log" 2>&1 || { tail_log "$DIR/create.log"; die "redis-cli --cluster create failed"; }
  for p in "${PORTS[@]}"; do
    until node_ok "$p"; do
      live_pid "$DIR/$p/redis.pid" >/dev/null || die "node $p exited while the cluster formed"
      if (( SECONDS - start > DEADLINE )); then
        cli "$p" CLUSTER INFO >&2 || true
        die "node $p does not report cluster_state:ok with 16384 slots within $DEADLINE s"
      fi
      sleep 0.2
    done
  done
  STARTING=0
  printf 'export RF_REDIS_CLUSTER=%s\n' "$(addrs)" >"$ENV_FILE"
  say "up after $((SECONDS - start)) s: RF_REDIS_CLUSTER=$(addrs)"
}

cmd_stop() {
  stop_all
  rm -f "$ENV_FILE" "$PORTS_FILE"
}

cmd_status() {
  local rc=0 p pid
  for p in "${PORTS[@]}"; do
    if pid="$(live_pid "$DIR/$p/redis.pid")"; then
      if node_ok "$p"; then echo "redis-cluster node $HOST:$p: running (pid $pid), cluster ok"
      else echo "redis-cluster node $HOST:$p: process $pid runs but the cluster is not ok there"; rc=1; fi
    else echo "redis-cluster node $HOST:$p: stopped"; rc=1; fi
  done
  return "$rc"
}

case "${1:-}" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  env) addrs ;;
  *) echo "usage: $0 start|stop|status|env" >&2; exit 2 ;;
esac
