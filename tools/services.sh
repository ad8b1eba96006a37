#!/usr/bin/env bash
# Real test services for riskflow: a single-node KRaft Kafka 3.9.1 broker, a redis-server and
# a 3-master Redis Cluster (tools/redis_cluster.sh), all on loopback ports, state in .run/
# (gitignored).
#
#   tools/services.sh start                    fresh data dirs, start all three, wait until they answer
#   tools/services.sh stop                     SIGTERM, wait, SIGKILL fallback
#   tools/services.sh status                   exit 0 only if all three run and answer
#   tools/services.sh create-topic NAME PARTITIONS
#
# Ports (env): RF_KAFKA_PORT=19092, RF_KAFKA_CONTROLLER_PORT=19093, RF_REDIS_PORT=16379,
# RF_REDIS_CLUSTER_PORTS=7101,7102,7103 (read by tools/redis_cluster.sh).
# `start` writes .run/services.env (RF_KAFKA_BOOTSTRAP, RF_REDIS_HOST, RF_REDIS_PORT,
# RF_REDIS_CLUSTER) to source.
# Needs what tools/deps.sh installs (java, kcat, redis-server, tools/kafka/libs).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RUN="$ROOT/.run"
LIBS="$ROOT/tools/kafka/libs"
CLUSTER="$ROOT/tools/redis_cluster.sh"
LOG4J="$ROOT/tools/kafka/log4j.properties"

KAFKA_PORT="${RF_KAFKA_PORT:-19092}"
CONTROLLER_PORT="${RF_KAFKA_CONTROLLER_PORT:-19093}"
# A second listener, SASL_SSL with SCRAM-SHA-256, for the security test: certificates made
# here with openssl (a CA, the broker's key and certificate for 127.0.0.1), one SCRAM user.
SASL_PORT="${RF_KAFKA_SASL_PORT:-19094}"
SASL_USER=riskflow
SASL_PASSWORD=riskflow-scram-secret
REDIS_PORT="${RF_REDIS_PORT:-16379}"
HOST=127.0.0.1
KAFKA_DEADLINE="${RF_KAFKA_START_TIMEOUT:-90}"
REDIS_DEADLINE=20

KAFKA_PID="$RUN/kafka.pid"
KAFKA_LOG="$RUN/kafka.log"
REDIS_PID="$RUN/redis.pid"
REDIS_LOG="$RUN/redis.log"
ENV_FILE="$RUN/services.env"
PORTS_FILE="$RUN/ports"

# Once started, the ports in use are those recorded in .run/ports, whatever the env says now.
if [[ "${1:-}" != start && -f "$PORTS_FILE" ]]; then
  # shellcheck disable=SC1090
  source "$PORTS_FILE"
fi

JAVA="${JAVA:-java}"
# shellcheck source=tools/service_lib.sh
source "$ROOT/tools/service_lib.sh"

STARTING=0
say() { printf 'services: %s\n' "$*" >&2; }
die() {
  say "ERROR: $*"
  if (( STARTING )); then   # never leave half a set running
    stop_one kafka "$KAFKA_PID"
    stop_one redis "$REDIS_PID"
    bash "$CLUSTER" stop || true
  fi
  exit 1
}

kafka_java() {
  # shellcheck disable=SC2086
  "$JAVA" ${RF_KAFKA_JAVA_OPTS:-} -Djava.awt.headless=true \
    -Dlog4j.configuration="file:$LOG4J" -cp "$LIBS/*" "$@"
}

kafka_answers() {
  # broker 1 must appear in the metadata the broker itself serves.
  timeout 10 kcat -b "$HOST:$KAFKA_PORT" -L -m 5 2>/dev/null | grep -q "broker 1 at $HOST:$KAFKA_PORT"
}

redis_answers() {
  [[ "$(timeout 5 redis-cli -h "$HOST" -p "$REDIS_PORT" PING 2>/dev/null)" == PONG ]]
}

check_tools() {
  command -v "$JAVA" >/dev/null || die "java not found (run tools/deps.sh)"
  command -v kcat >/dev/null || die "kcat not found (run tools/deps.sh)"
  command -v redis-server >/dev/null || die "redis-server not found (run tools/deps.sh)"
  command -v redis-cli >/dev/null || die "redis-cli not found (run tools/deps.sh)"
  [[ -f "$LIBS/.complete" ]] || die "Kafka jars missing in $LIBS (run tools/deps.sh)"
}

# The test CA and the broker's certificate (PEM; Kafka reads PEM key stores since 2.7).
make_certs() {
  local d="$1"
  mkdir -p "$d"
  openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=riskflow test CA" \
    -keyout "$d/ca.key" -out "$d/ca.pem" >/dev/null 2>&1 || die "openssl: CA"
  openssl req -newkey rsa:2048 -nodes -subj "/CN=$HOST" -keyout "$d/broker.key.rsa" \
    -out "$d/broker.csr" >/dev/null 2>&1 || die "openssl: broker key"
  printf 'subjectAltName=IP:%s,DNS:localhost\n' "$HOST" >"$d/san.ext"
  openssl x509 -req -in "$d/broker.csr" -CA "$d/ca.pem" -CAkey "$d/ca.key" -CAcreateserial \
    -days 30 -extfile "$d/san.ext" -out "$d/broker.pem" >/dev/null 2>&1 || die "openssl: sign"
  openssl pkcs8 -topk8 -nocrypt -in "$d/broker.key.rsa" -out "$d/broker.key" \
    >/dev/null 2>&1 || die "openssl: pkcs8"
  cat "$d/broker.key" "$d/broker.pem" >"$d/broker.keystore.pem"
}

start_kafka() {
  local dir="$RUN/kafka" props="$RUN/kafka/server.properties" id
  rm -rf "$dir"
  mkdir -p "$dir/data"
  make_certs "$dir/tls"
  cat >"$props" <<EOF
# Written by tools/services.sh; a fresh single-node KRaft broker for tests.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@$HOST:$CONTROLLER_PORT
listeners=PLAINTEXT://$HOST:$KAFKA_PORT,CONTROLLER://$HOST:$CONTROLLER_PORT,SASL_SSL://$HOST:$SASL_PORT
advertised.listeners=PLAINTEXT://$HOST:$KAFKA_PORT,SASL_SSL://$HOST:$SASL_PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SASL_SSL:SASL_SSL
sasl.enabled.mechanisms=SCRAM-SHA-256
listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
ssl.keystore.type=PEM
ssl.keystore.location=$dir/tls/broker.keystore.pem
ssl.truststore.type=PEM
ssl.truststore.location=$dir/tls/ca.pem
log.dirs=$dir/data
metadata.log.dir=$dir/data
num.partitions=1
default.replication.factor=1
auto.create.topics.enable=false
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
group.initial.rebalance.delay.ms=0
# Tests only: fewer internal partitions make the first consumer group and the
# first transactional producer come up in well under a second on 2 cores.
offsets.topic.num.partitions=5
transaction.state.log.num.partitions=5
# Let tests use short consumer session timeouts when they kill a member.
group.min.session.timeout.ms=1000
EOF
  id="$(kafka_java kafka.tools.StorageTool random-uuid 2>>"$KAFKA_LOG")" \
    || { tail_log "$KAFKA_LOG"; die "kafka StorageTool random-uuid failed"; }
  id="$(printf '%s' "$id" | tail -n 1 | tr -d '[:space:]')"
  [[ -n "$id" ]] || die "kafka StorageTool random-uuid printed nothing"
  kafka_java kafka.tools.StorageTool format -t "$id" -c "$props" \
    --add-scram "SCRAM-SHA-256=[name=$SASL_USER,password=$SASL_PASSWORD]" >>"$KAFKA_LOG" 2>&1 \
    || { tail_log "$KAFKA_LOG"; die "kafka StorageTool format failed"; }

  launch_kafka
}

# Start the broker on the data dir as it is (a restart keeps every topic and offset).
launch_kafka() {
  local props="$RUN/kafka/server.properties"
  # shellcheck disable=SC2086
  nohup "$JAVA" -Xmx512m -Xms128m ${RF_KAFKA_JAVA_OPTS:-} -Djava.awt.headless=true \
    -Dlog4j.configuration="file:$LOG4J" -cp "$LIBS/*" kafka.Kafka "$props" \
    </dev/null >>"$KAFKA_LOG" 2>&1 &
  echo $! >"$KAFKA_PID"
}

start_redis() {
  rm -rf "$RUN/redis"
  mkdir -p "$RUN/redis"
  launch_redis
}

# Start redis-server on its dir as it is (a restart loads the AOF).
launch_redis() {
  local dir="$RUN/redis"
  # Persistence as production needs it (README "Redis durability"): AOF, fsync every second.
  nohup redis-server --bind "$HOST" --port "$REDIS_PORT" --dir "$dir" \
    --save '' --appendonly yes --appendfsync everysec --daemonize no --logfile '' \
    </dev/null >>"$REDIS_LOG" 2>&1 &
  echo $! >"$REDIS_PID"
}

wait_ready() {
  local start=$SECONDS kafka_ok=0 redis_ok=0 pid
  while :; do
    if (( ! redis_ok )); then
      pid="$(live_pid "$REDIS_PID")" || { tail_log "$REDIS_LOG"; return 1; }
      redis_answers && { redis_ok=1; say "redis up on $HOST:$REDIS_PORT after $((SECONDS - start)) s"; }
      if (( ! redis_ok && SECONDS - start > REDIS_DEADLINE )); then
        tail_log "$REDIS_LOG"; say "redis did not answer PING within $REDIS_DEADLINE s"; return 1
      fi
    fi
    if (( ! kafka_ok )); then
      pid="$(live_pid "$KAFKA_PID")" || { tail_log "$KAFKA_LOG"; say "kafka broker exited during start"; return 1; }
      kafka_answers && { kafka_ok=1; say "kafka up on $HOST:$KAFKA_PORT after $((SECONDS - start)) s"; }
      if (( ! kafka_ok && SECONDS - start > KAFKA_DEADLINE )); then
        tail_log "$KAFKA_LOG"; say "kafka broker did not answer within $KAFKA_DEADLINE s"; return 1
      fi
    fi
    (( kafka_ok && redis_ok )) && return 0
    sleep 0.5
  done
}

cmd_start() {
  check_tools
  mkdir -p "$RUN"
  # A previous run's services (ours, by pid file) go first; the data is never reused.
  stop_one kafka "$KAFKA_PID"
  stop_one redis "$REDIS_PID"
  bash "$CLUSTER" stop
  rm -f "$ENV_FILE" "$PORTS_FILE" "$KAFKA_LOG" "$REDIS_LOG"
  STARTING=1
  local p
  for p in "$KAFKA_PORT" "$CONTROLLER_PORT" "$SASL_PORT" "$REDIS_PORT"; do
    port_busy "$p" && die "port $HOST:$p is already in use by another process (set RF_KAFKA_PORT / RF_KAFKA_CONTROLLER_PORT / RF_REDIS_PORT)"
  done
  printf 'KAFKA_PORT=%s\nCONTROLLER_PORT=%s\nREDIS_PORT=%s\n' \
    "$KAFKA_PORT" "$CONTROLLER_PORT" "$REDIS_PORT" >"$PORTS_FILE"
  # The cluster first: it checks its own ports (and their bus ports) and is up in seconds, so a
  # busy port fails the start before the broker spends its minute.
  bash "$CLUSTER" start || die "the Redis Cluster did not start"
  start_redis
  start_kafka
  wait_ready || die "services did not start"
  STARTING=0
  cat >"$ENV_FILE" <<EOF
export RF_KAFKA_BOOTSTRAP=$HOST:$KAFKA_PORT
export RF_KAFKA_SASL_BOOTSTRAP=$HOST:$SASL_PORT
export RF_KAFKA_SASL_USER=$SASL_USER
export RF_KAFKA_SASL_PASSWORD=$SASL_PASSWORD
export RF_KAFKA_CA=$RUN/kafka/tls/ca.pem
export RF_REDIS_HOST=$HOST
export RF_REDIS_PORT=$REDIS_PORT
export RF_REDIS_CLUSTER=$(bash "$CLUSTER" env)
EOF
  say "ready; source $ENV_FILE"
}

cmd_stop() {
  stop_one kafka "$KAFKA_PID"
  stop_one redis "$REDIS_PID"
  bash "$CLUSTER" stop
  rm -f "$ENV_FILE" "$PORTS_FILE"
}

cmd_status() {
  local rc=0 pid
  if pid="$(live_pid "$KAFKA_PID")"; then
    if kafka_answers; then echo "kafka: running (pid $pid) on $HOST:$KAFKA_PORT"
    else echo "kafka: process $pid runs but $HOST:$KAFKA_PORT does not answer"; rc=1; fi
  else echo "kafka: stopped"; rc=1; fi
  if pid="$(live_pid "$REDIS_PID")"; then
    if redis_answers; then echo "redis: running (pid $pid) on $HOST:$REDIS_PORT"
    else echo "redis: process $pid runs but $HOST:$REDIS_PORT does not answer"; rc=1; fi
  else echo "redis: stopped"; rc=1; fi
  bash "$CLUSTER" status || rc=1
  return "$rc"
}

# The fault tests: kill -9 one service and start it again on its data, as a crash and a
# supervisor's restart would (Kafka keeps its log dirs; Redis reloads its AOF).
cmd_restart() {
  local what="$1" pidf pid
  case "$what" in kafka) pidf="$KAFKA_PID" ;; redis) pidf="$REDIS_PID" ;;
    *) die "usage: $0 restart kafka|redis" ;; esac
  check_tools
  pid="$(live_pid "$pidf")" || die "$what is not running"
  kill -9 "$pid"
  while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
  say "$what killed (kill -9, pid $pid)"
  if [[ $what == kafka ]]; then launch_kafka; else launch_redis; fi
  wait_ready || die "$what did not come back"
}

cmd_create_topic() {
  [[ $# -eq 2 && "$2" =~ ^[0-9]+$ ]] || die "usage: $0 create-topic NAME PARTITIONS"
  check_tools
  kafka_java org.apache.kafka.tools.TopicCommand --bootstrap-server "$HOST:$KAFKA_PORT" \
    --create --if-not-exists --topic "$1" --partitions "$2" --replication-factor 1
}

case "${1:-}" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  restart) shift; cmd_restart "${1:-}" ;;
  create-topic) shift; cmd_create_topic "$@" ;;
  *) echo "usage: $0 start|stop|status|restart kafka|redis|create-topic NAME PARTITIONS" >&2; exit 2 ;;
esac
