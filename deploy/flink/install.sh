#!/usr/bin/env bash
# Installs a standalone Flink and Beam's Flink job server into deploy/flink/.local/
# (git-ignored): the apache-flink wheels --no-deps into their own venv (apache-flink
# pins an old apache-beam), and the job server's jars with Maven.
set -euo pipefail
source "$(dirname "$0")/common.sh"
mkdir -p "$LOCAL" "$RUN_DIR" "$LOG_DIR"

# 1. Flink: the wheels' pyflink/ folder is a complete Flink home (bin/, conf/, lib/).
if [ ! -x "$FLINK_VENV/bin/python" ]; then
  "${PYTHON:-python3}" -m venv "$FLINK_VENV"
fi
"$FLINK_VENV/bin/pip" install -q --no-deps \
  "apache-flink==$FLINK_VERSION" "apache-flink-libraries==$FLINK_VERSION"
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
echo "installed Flink $FLINK_VERSION ($FLINK_HOME) and Beam $BEAM_JOB_SERVER_VERSION's" \
  "Flink $FLINK_MINOR job server ($(ls "$JOB_SERVER_LIB" | wc -l) jars)"
