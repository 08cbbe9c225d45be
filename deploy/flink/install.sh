#!/usr/bin/env bash
# Installs a standalone Flink and Beam's Flink job server into deploy/flink/.local/
# (git-ignored): the apache-flink wheels --no-deps into their own venv (apache-flink
# pins an old apache-beam), the job server's jars with Maven, and the launcher that binds
# the job server to 127.0.0.1 (LoopbackFlinkJobServer.java). Idempotent: a step whose
# result is already there (its stamp file) is skipped, so a second run takes ~2 s.
set -euo pipefail
source "$(dirname "$0")/common.sh"
mkdir -p "$LOCAL" "$RUN_DIR" "$LOG_DIR"

# 1. Flink: the wheels' pyflink/ folder is a complete Flink home (bin/, conf/, lib/).
flink_stamp=$FLINK_VENV/.installed-$FLINK_VERSION
if [ ! -f "$flink_stamp" ]; then
  python=${PYTHON:-$(command -v python3.11 || command -v python3)}  # the wheel is cp311
  [ -x "$FLINK_VENV/bin/python" ] || "$python" -m venv "$FLINK_VENV"
  "$FLINK_VENV/bin/python" -m pip install -q --no-deps \
    "apache-flink==$FLINK_VERSION" "apache-flink-libraries==$FLINK_VERSION"
  touch "$flink_stamp"
fi
FLINK_HOME=$(flink_home)

# 2. Configuration: everything on 127.0.0.1, 2 slots per TaskManager, modest memory.
rm -rf "$FLINK_CONF_DIR"
cp -r "$FLINK_HOME/conf" "$FLINK_CONF_DIR"
java_opts=$(sed -n 's/^ *all: //p' "$FLINK_HOME/conf/config.yaml" | head -1)
sed -e "s|@JAVA_OPTS@|$java_opts|" -e "s|@HOST@|$HOST|g" -e "s|@REST_PORT@|$REST_PORT|" \
  "$HERE/config.yaml.in" > "$FLINK_CONF_DIR/config.yaml"
echo "$HOST:$REST_PORT" > "$FLINK_CONF_DIR/masters"
echo "$HOST" > "$FLINK_CONF_DIR/workers"

# 3. Beam's Flink job server. The shaded beam-runners-flink-<minor>-job-server jar is
# not served (README.md), so the unshaded runner and its dependencies are resolved by
# Maven into one folder and run as a class path.
jars_stamp=$JOB_SERVER_LIB/.installed-$FLINK_MINOR-$BEAM_JOB_SERVER_VERSION
if [ ! -f "$jars_stamp" ]; then
  mkdir -p "$LOCAL/job-server"
  cat > "$LOCAL/job-server/pom.xml" <<POM
  <project xmlns="http://maven.apache.org/POM/4.0.0">
    <modelVersion>4.0.0</modelVersion>
    <groupId>local.beam_ml</groupId><artifactId>flink-job-server</artifactId><version>0</version>
    <dependencies>
      <dependency>
        <groupId>org.apache.beam</groupId><artifactId>beam-runners-flink-$FLINK_MINOR</artifactId>
        <version>$BEAM_JOB_SERVER_VERSION</version>
      </dependency>
    </dependencies>
  </project>
POM
  rm -rf "$JOB_SERVER_LIB"
  mvn -q -B -f "$LOCAL/job-server/pom.xml" dependency:copy-dependencies \
    -DoutputDirectory="$JOB_SERVER_LIB" -DincludeScope=runtime
  touch "$jars_stamp"
fi

# 4. The launcher (start.sh runs it instead of FlinkJobServerDriver): Beam's job server
# binds its job and artifact ports on every interface (README.md); this one, 127.0.0.1.
# A jar, not a folder: the runner stages its class path to Flink, and fails on a folder.
if [ ! -f "$LAUNCHER_JAR" ] || [ "$HERE/LoopbackFlinkJobServer.java" -nt "$LAUNCHER_JAR" ]; then
  classes=$LOCAL/job-server/classes
  rm -rf "$classes" && mkdir -p "$classes"
  "$JAVA_HOME/bin/javac" -nowarn -d "$classes" -cp "$JOB_SERVER_LIB/*" \
    "$HERE/LoopbackFlinkJobServer.java"
  "$JAVA_HOME/bin/jar" cf "$LAUNCHER_JAR" -C "$classes" .
fi
echo "installed Flink $FLINK_VERSION ($FLINK_HOME) and Beam $BEAM_JOB_SERVER_VERSION's" \
  "Flink $FLINK_MINOR job server ($(ls "$JOB_SERVER_LIB" | wc -l) jars)"
