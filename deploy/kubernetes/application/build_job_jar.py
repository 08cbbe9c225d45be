"""Build the Flink application jar of a deploy pipeline, and the folder the application
image is built from (application.Dockerfile).

    python deploy/kubernetes/application/build_job_jar.py --out deploy/kubernetes/application/build \\
        pipelines/train_job.py --algorithm kmeans --hyperparameters '{"k": 10}' \\
        --input /shared/data/train-*.csv --format csv --output /shared/models/kmeans

Beam's portable FlinkRunner writes the pipeline (its graph, options and staged files)
into a jar instead of submitting it (``--output_executable_path``); Flink's application
mode runs that jar's main class, FlinkPipelineRunner. No cluster is contacted. The job
server that writes the jar is deploy/flink's: Beam 2.62.0's Flink 1.19 runner with its
dependencies as a class path (the shaded job server jar is not served, see
deploy/flink/README.md), started by the FlinkRunner through a manifest-only launcher jar
whose main class is deploy/flink's LoopbackFlinkJobServer (its ports on 127.0.0.1).

The jar written holds the runner jar's classes, not its dependencies, so the output
folder gets them too (lib/, minus Flink's own jars, which the Flink image has):

    <out>/job.jar   the pipeline, main class FlinkPipelineRunner
    <out>/lib/      the runner's dependencies, for /opt/flink/usrlib

The SDK workers are the TaskManagers' worker-pool sidecars (--environment_type EXTERNAL,
--environment_config localhost:50000, the port of deploy/kubernetes/worker.Dockerfile).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
JOB_SERVER = REPO / "deploy" / "flink" / ".local" / "job-server"  # deploy/flink/install.sh
WORKER_POOL = "localhost:50000"  # the TaskManager pod's sidecar
LAUNCHER_MAIN = "LoopbackFlinkJobServer"  # deploy/flink/LoopbackFlinkJobServer.java


def java_home() -> Path:
    """JAVA_HOME, else deploy/flink's default (Java 17)."""
    return Path(os.environ.get("JAVA_HOME", "/usr/lib/jvm/java-17-openjdk-amd64"))


def check_installed(job_server: Path, java: Path) -> None:
    """A clear error naming what is missing and how to get it."""
    if not java.is_file():
        raise SystemExit(
            f"no Java at {java}: install Java 17 (e.g. apt-get install openjdk-17-jdk-headless) "
            "or set JAVA_HOME"
        )
    if not (job_server / "launcher.jar").is_file() or not list(job_server.glob("lib/*.jar")):
        raise SystemExit(
            f"no Beam Flink job server in {job_server}: run deploy/flink/install.sh "
            "(make flink-install; Maven Central)"
        )


def _manifest_line(name: str, value: str) -> bytes:
    """A manifest header wrapped at 72 bytes, continuation lines starting with a space."""
    raw = f"{name}: {value}".encode()
    lines = [raw[:72]] + [b" " + raw[i : i + 71] for i in range(72, len(raw), 71)]
    return b"\r\n".join(lines) + b"\r\n"


def write_launcher_jar(path: Path, job_server: Path) -> None:
    """A jar with only a manifest: ``java -jar`` runs LoopbackFlinkJobServer with the
    installed jars as its class path (absolute file URLs)."""
    jars = [job_server / "launcher.jar", *sorted((job_server / "lib").glob("*.jar"))]
    manifest = (
        _manifest_line("Manifest-Version", "1.0")
        + _manifest_line("Main-Class", LAUNCHER_MAIN)
        + _manifest_line("Class-Path", " ".join(jar.resolve().as_uri() for jar in jars))
        + b"\r\n"
    )
    with zipfile.ZipFile(path, "w") as jar:
        jar.writestr("META-INF/MANIFEST.MF", manifest)


def copy_dependencies(job_server: Path, lib: Path) -> list[Path]:
    """The runner's dependency jars but Flink's (the Flink image provides those; two
    copies of Flink's classes on the class path would clash)."""
    shutil.rmtree(lib, ignore_errors=True)
    lib.mkdir(parents=True)
    copied = []
    for jar in sorted((job_server / "lib").glob("*.jar")):
        if not jar.name.startswith("flink-"):
            try:  # ~100 MB: a hard link where the file system allows it
                os.link(jar.resolve(), lib / jar.name)
            except OSError:
                shutil.copy2(jar, lib / jar.name)
            copied.append(lib / jar.name)
    return copied


def build(out: Path, pipeline: list[str], job_server: Path = JOB_SERVER) -> Path:
    """Write ``out/job.jar`` (the pipeline run by ``pipeline``: a script and its
    arguments) and ``out/lib/``; returns the jar's path."""
    java = java_home() / "bin" / "java"
    check_installed(job_server, java)
    out.mkdir(parents=True, exist_ok=True)
    launcher = out / "job-server-launcher.jar"
    write_launcher_jar(launcher, job_server)
    job_jar = out / "job.jar"
    job_jar.unlink(missing_ok=True)
    command = [
        sys.executable,
        *pipeline,
        "--runner=FlinkRunner",
        f"--flink_job_server_jar={launcher}",
        f"--job_server_java_launcher={java}",
        f"--output_executable_path={job_jar}",
        "--environment_type=EXTERNAL",
        f"--environment_config={WORKER_POOL}",
    ]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    subprocess.run(command, check=True, env=env)
    if not job_jar.is_file():
        raise SystemExit(f"the FlinkRunner wrote no {job_jar} (its output is above)")
    launcher.unlink()  # names this machine's paths: not for the image
    copy_dependencies(job_server, out / "lib")
    return job_jar


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder of job.jar and lib/")
    parser.add_argument("--job_server", type=Path, default=JOB_SERVER, help=f"default {JOB_SERVER}")
    parser.add_argument("pipeline", nargs=argparse.REMAINDER, help="script and its arguments")
    args = parser.parse_args(argv)
    if not args.pipeline:
        parser.error("give the pipeline script and its arguments")
    print(build(args.out, args.pipeline, args.job_server))


if __name__ == "__main__":
    main()
