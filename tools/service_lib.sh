# shellcheck shell=bash
# Helpers shared by tools/services.sh and tools/redis_cluster.sh (sourced, not run): pid files,
# port checks, log tails and a stop with a SIGKILL fallback. The caller defines HOST and say().

# A pid from a pid file, if that process still runs.
live_pid() {
  local f="$1" pid
  [[ -s "$f" ]] || return 1
  pid="$(cat "$f")"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  printf '%s\n' "$pid"
}

# True if something accepts TCP connections on $HOST:$1.
port_busy() {
  (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null
}

# The last lines of a log on stderr, so a failed start says why.
tail_log() {
  local f="$1"
  if [[ -f "$f" ]]; then
    say "---- last 60 lines of $f ----"
    tail -n 60 "$f" >&2 || true
    say "---- end of $f ----"
  fi
}

# SIGTERM the process of a pid file, wait up to 30 s, then SIGKILL; removes the pid file.
stop_one() {
  local name="$1" pidfile="$2" pid waited=0
  if pid="$(live_pid "$pidfile")"; then
    kill -TERM "$pid" 2>/dev/null || true
    while kill -0 "$pid" 2>/dev/null && (( waited < 300 )); do   # 30 s
      sleep 0.1; waited=$((waited + 1))
    done
    if kill -0 "$pid" 2>/dev/null; then
      say "$name (pid $pid) ignored SIGTERM for 30 s; sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      waited=0
      while kill -0 "$pid" 2>/dev/null && (( waited < 100 )); do sleep 0.1; waited=$((waited + 1)); done
    fi
    say "$name stopped (pid $pid)"
  fi
  rm -f "$pidfile"
}
