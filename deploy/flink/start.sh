#!/usr/bin/env bash
# Starts, on 127.0.0.1: a Flink JobManager and two TaskManagers (2 slots each), Beam's
# Flink job server (job endpoint 127.0.0.1:8099) and Beam's Python worker pool
# (127.0.0.1:50000, for --environment_type=EXTERNAL). stop.sh stops them all.
set -euo pipefail
source "$(dirname "$0")/common.sh"
FLINK_HOME=$(flink_home)
mkdir -p "$RUN_DIR" "$LOG_DIR"
for port in 6123 6124 $REST_PORT $JOB_PORT $ARTIFACT_PORT $EXPANSION_PORT $WORKER_POOL_PORT; do
  if port_open "$port"; then echo "port $port on $HOST is taken: stop.sh first?" >&2; exit 1; fi
done

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
  local limit=$1 what=$2; shift 2
  for _ in $(seq 1 "$limit"); do "$@" && return 0; sleep 1; done
  echo "timed out after ${limit}s waiting for $what (logs: $LOG_DIR)" >&2; "$HERE/stop.sh" >&2; exit 1
}
taskmanagers() {
  curl -s -m 2 "http://$HOST:$REST_PORT/overview" | grep -q '"taskmanagers":2,'
}

t0=$(date +%s)
"$FLINK_HOME/bin/jobmanager.sh" start
"$FLINK_HOME/bin/taskmanager.sh" start
"$FLINK_HOME/bin/taskmanager.sh" start
wait_for 120 "2 TaskManagers on http://$HOST:$REST_PORT" taskmanagers
echo "Flink up in $(( $(date +%s) - t0 ))s: $(curl -s "http://$HOST:$REST_PORT/overview")"

# Beam's FlinkJobServerDriver binds the job and artifact ports on every interface
# (--job-host only names the advertised address): LoopbackFlinkJobServer runs the same
# driver with both bound to 127.0.0.1 (README.md).
[ -f "$LAUNCHER_JAR" ] || { echo "no $LAUNCHER_JAR: run deploy/flink/install.sh" >&2; exit 1; }
nohup "$JAVA_HOME/bin/java" -cp "$LAUNCHER_JAR:$JOB_SERVER_LIB/*" LoopbackFlinkJobServer \
  --flink-master="$HOST:$REST_PORT" --job-host="$HOST" --job-port="$JOB_PORT" \
  --artifact-port="$ARTIFACT_PORT" --expansion-port="$EXPANSION_PORT" \
  > "$LOG_DIR/job-server.log" 2>&1 &
echo $! > "$RUN_DIR/job-server.pid"
wait_for 60 "the job server on $HOST:$JOB_PORT" port_open "$JOB_PORT"

# PYTHONPATH: the SDK workers import beam_ml from this checkout, whatever PROJECT_PYTHON has
PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" nohup "$PROJECT_PYTHON" "$HERE/worker_pool.py" --service_port="$WORKER_POOL_PORT" \
  > "$LOG_DIR/worker-pool.log" 2>&1 &
echo $! > "$RUN_DIR/worker-pool.pid"
wait_for 60 "the worker pool on $HOST:$WORKER_POOL_PORT" port_open "$WORKER_POOL_PORT"
echo "all up in $(( $(date +%s) - t0 ))s: job endpoint $HOST:$JOB_PORT," \
  "worker pool $HOST:$WORKER_POOL_PORT, Flink UI http://$HOST:$REST_PORT"
