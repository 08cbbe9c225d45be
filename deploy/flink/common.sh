# Shared settings for install.sh, start.sh and stop.sh (sourced, not run).
# Versions: see README.md for what the registries serve and why these.
FLINK_VERSION=${FLINK_VERSION:-1.19.3}             # apache-flink + apache-flink-libraries wheels
FLINK_MINOR=${FLINK_VERSION%.*}
BEAM_JOB_SERVER_VERSION=${BEAM_JOB_SERVER_VERSION:-2.62.0}  # org.apache.beam:beam-runners-flink-$FLINK_MINOR

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
LOCAL=$HERE/.local                                 # git-ignored: venv, jars, logs, pids
FLINK_VENV=$LOCAL/flink-venv
JOB_SERVER_LIB=$LOCAL/job-server/lib
LAUNCHER_JAR=$LOCAL/job-server/launcher.jar        # LoopbackFlinkJobServer, built by install.sh
RUN_DIR=$LOCAL/run
LOG_DIR=$LOCAL/log

export JAVA_HOME=${JAVA_HOME:-/usr/lib/jvm/java-17-openjdk-amd64}
export FLINK_CONF_DIR=$LOCAL/conf
export FLINK_PID_DIR=$RUN_DIR
export FLINK_LOG_DIR=$LOG_DIR
PROJECT_PYTHON=${PROJECT_PYTHON:-$REPO/.venv/bin/python}  # runs the worker pool (needs beam_ml)

HOST=127.0.0.1
REST_PORT=8081 JOB_PORT=8099 ARTIFACT_PORT=8098 EXPANSION_PORT=8097 WORKER_POOL_PORT=50000

flink_home() {
  local d
  d=$(echo "$FLINK_VENV"/lib/python3*/site-packages/pyflink)
  [ -x "$d/bin/jobmanager.sh" ] || { echo "no Flink in $FLINK_VENV: run deploy/flink/install.sh" >&2; return 1; }
  echo "$d"
}

port_open() { (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null; }
