"""One local Flink cluster for the engine tests (issue 17), started once per session.

The cluster is deploy/flink's (the route README.md documents and `make flink-up` runs):
a JobManager and two TaskManagers on 127.0.0.1, Beam's Flink job server and Beam's
Python worker pool, whose SDK workers are separate processes. The fixture installs it if
absent (deploy/flink/install.sh: Maven Central and PyPI), starts it, and stops it at the
end of the session, failed tests or not. A failed test gets the tails of the cluster's
logs in its report.

BEAM_ML_FLINK_RUNNING=1 uses a cluster already started with `make flink-up` (and leaves
it running): quicker while working on these tests.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "flink"
LOG_DIR = DEPLOY / ".local" / "log"
REST = "http://127.0.0.1:8081"
JOB_ENDPOINT = "127.0.0.1:8099"
WORKER_POOL = "127.0.0.1:50000"
INSTALL_TIMEOUT_S = 1200  # a cold install downloads ~440 MB
START_TIMEOUT_S = 300  # start.sh waits up to 120 + 60 + 60 s itself


def _script(name: str, timeout: float) -> subprocess.CompletedProcess:
    env = {**os.environ, "PROJECT_PYTHON": os.environ.get("PROJECT_PYTHON", sys.executable)}
    return subprocess.run(
        ["bash", str(DEPLOY / name)],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def log_tails(lines: int = 40) -> str:
    """The last lines of every log of the cluster (job server, worker pool, Flink)."""
    parts = []
    for path in sorted(LOG_DIR.glob("*")):
        if path.suffix in (".log", ".out") and path.stat().st_size:
            tail = path.read_text(errors="replace").splitlines()[-lines:]
            parts.append(f"==> {path} <==\n" + "\n".join(tail))
    return "\n\n".join(parts) or f"(no logs in {LOG_DIR})"


def _fail(what: str, result: subprocess.CompletedProcess) -> None:
    pytest.fail(
        f"{what} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}\n{log_tails()}",
        pytrace=False,
    )


@pytest.fixture(scope="session")
def flink_cluster():
    """Pipeline arguments for the running cluster: parallelism 2, EXTERNAL SDK workers."""
    reuse = os.environ.get("BEAM_ML_FLINK_RUNNING") == "1"
    if not reuse:
        installed = _script("install.sh", INSTALL_TIMEOUT_S)
        if installed.returncode:
            _fail("deploy/flink/install.sh", installed)
        started = _script("start.sh", START_TIMEOUT_S)
        if started.returncode:  # start.sh stops what it started when it gives up
            _fail("deploy/flink/start.sh", started)
    try:
        yield [
            "--runner=PortableRunner",
            f"--job_endpoint={JOB_ENDPOINT}",
            "--environment_type=EXTERNAL",
            f"--environment_config={WORKER_POOL}",
            "--parallelism=2",
        ]
    finally:
        if not reuse:
            stopped = _script("stop.sh", 120)
            if stopped.returncode:
                print(f"deploy/flink/stop.sh: {stopped.stdout}{stopped.stderr}", file=sys.stderr)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed and "flink_cluster" in item.fixturenames:
        report.sections.append(("Flink cluster logs (tails)", log_tails()))


def rest(path: str):
    """GET a path of Flink's REST API (JSON)."""
    with urllib.request.urlopen(REST + path, timeout=30) as response:
        return json.load(response)


def flink_job(name: str) -> dict:
    """The finished Flink job whose name is ``name`` (Beam's ``--job_name``): its details,
    each vertex with its subtasks (which TaskManager ran each, records in and out)."""
    jobs = [j for j in rest("/jobs/overview")["jobs"] if j["name"] == name]
    assert len(jobs) == 1, f"expected one Flink job named {name!r}, found {jobs}"
    job = rest(f"/jobs/{jobs[0]['jid']}")
    for vertex in job["vertices"]:
        vertex["subtasks"] = rest(f"/jobs/{job['jid']}/vertices/{vertex['id']}")["subtasks"]
    return job


def start_taskmanager() -> None:
    """One more TaskManager for the cluster (deploy/flink/taskmanager.sh)."""
    started = _script("taskmanager.sh", 120)
    if started.returncode:
        _fail("deploy/flink/taskmanager.sh", started)


def taskmanager_pid(taskmanager_id: str) -> int:
    """The process of a TaskManager, from its Flink id (``127.0.0.1:<rpc port>-<suffix>``):
    the recorded TaskManager process that listens on that port (found through /proc)."""
    port = int(taskmanager_id.split("-")[0].rsplit(":", 1)[1])
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:  # LISTEN
                inodes.add(f"socket:[{fields[9]}]")
    pids = [
        pid
        for recorded in (DEPLOY / ".local" / "run").glob("flink-*-taskexecutor.pid")
        for pid in recorded.read_text().split()
    ]
    for pid in pids:
        try:
            links = {os.readlink(fd) for fd in Path(f"/proc/{pid}/fd").iterdir()}
        except (FileNotFoundError, PermissionError):
            continue  # an earlier, stopped TaskManager
        if links & inodes:
            return int(pid)
    raise AssertionError(f"no recorded TaskManager process listens on port {port} ({pids})")
