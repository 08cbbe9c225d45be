#!/usr/bin/env bash
# Starts one more TaskManager for the running cluster (start.sh's), e.g. to replace one
# that was lost: it registers with the JobManager at 127.0.0.1:6123 and offers 2 slots.
# Its process id joins the others in $RUN_DIR, so stop.sh stops it too.
set -euo pipefail
source "$(dirname "$0")/common.sh"
"$(flink_home)/bin/taskmanager.sh" start
