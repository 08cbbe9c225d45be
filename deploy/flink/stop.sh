#!/usr/bin/env bash
# Stops what start.sh started, by the process ids it recorded (nothing else).
set -uo pipefail
source "$(dirname "$0")/common.sh"

stop_pid_file() {  # stop_pid_file NAME
  local file=$RUN_DIR/$1.pid pid
  [ -f "$file" ] || return 0
  pid=$(cat "$file")
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid"   # the worker pool's atexit ends its SDK worker processes
    for _ in $(seq 1 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
    echo "stopped $1 ($pid)"
  fi
  rm -f "$file"
}

stop_pid_file worker-pool
stop_pid_file job-server
if FLINK_HOME=$(flink_home 2>/dev/null); then
  # Flink's scripts stop the instances recorded in $FLINK_PID_DIR only
  "$FLINK_HOME/bin/taskmanager.sh" stop-all
  "$FLINK_HOME/bin/jobmanager.sh" stop-all
fi
