"""The Flink application jar of a deploy pipeline, really built: build_job_jar.py runs
pipelines/train_job.py with Beam's FlinkRunner and --output_executable_path, which starts
deploy/flink's installed job server (Java, ephemeral ports on 127.0.0.1; no Flink
cluster) to write the jar. Needs Java 17 and deploy/flink/install.sh's jars (`make test`
installs them): without them the test fails saying so, as tests/engines does."""

from __future__ import annotations

import base64
import json
import re
import sys
import zipfile

import numpy as np
import pytest
import yaml
from apache_beam.portability.api import beam_runner_api_pb2

from tests.deploy.conftest import REPO, beam_pin, job_server_version

sys.path.insert(0, str(REPO / "deploy" / "kubernetes" / "application"))
import build_job_jar  # noqa: E402


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """(job.jar, lib/) of a K-Means training job, built once for the module's tests."""
    java = build_job_jar.java_home() / "bin" / "java"
    try:
        build_job_jar.check_installed(build_job_jar.JOB_SERVER, java)
    except SystemExit as missing:
        pytest.fail(f"cannot build the application jar: {missing}", pytrace=False)
    tmp = tmp_path_factory.mktemp("application")
    rng = np.random.default_rng(17)
    np.savetxt(tmp / "train.csv", rng.normal(size=(200, 4)), delimiter=",")
    out = tmp / "out"
    jar = build_job_jar.build(
        out,
        [
            str(REPO / "pipelines" / "train_job.py"),
            "--algorithm=kmeans",
            '--hyperparameters={"k": 3}',
            f"--input={tmp}/*.csv",
            "--format=csv",
            "--output=/shared/models/kmeans",
            "--job_name=beam-ml-kmeans",
        ],
    )
    return jar, out / "lib"


def _pipeline_files(jar: zipfile.ZipFile) -> tuple[str, dict, dict]:
    job = json.loads(jar.read("BEAM-PIPELINE/pipeline-manifest.json"))["defaultJobName"]
    pipeline = json.loads(jar.read(f"BEAM-PIPELINE/{job}/pipeline.json"))
    options = json.loads(jar.read(f"BEAM-PIPELINE/{job}/pipeline-options.json"))
    return job, pipeline, options


def test_the_jar_runs_flinks_pipeline_runner_the_jobmanager_names(built):
    jar_path, _ = built
    with zipfile.ZipFile(jar_path) as jar:
        manifest = jar.read("META-INF/MANIFEST.MF").decode()
        main_class = re.search(r"Main-Class: (\S+)", manifest).group(1)
        assert main_class.replace(".", "/") + ".class" in jar.namelist()
    jobmanager = yaml.safe_load_all(
        (REPO / "deploy/kubernetes/application/jobmanager.yaml").read_text()
    )
    (job,) = [d for d in jobmanager if d["kind"] == "Job"]
    args = job["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--job-classname") + 1] == main_class


def test_the_jar_holds_the_training_pipeline_for_the_worker_pool_sidecar(built):
    jar_path, _ = built
    with zipfile.ZipFile(jar_path) as jar:
        job, pipeline, options = _pipeline_files(jar)
        names = {t["uniqueName"]: t for t in pipeline["components"]["transforms"].values()}
        assert job.startswith("beam-ml-kmeans")
        for step in ("Read", "BeamML_Train_kmeans", "WriteState", "Derive", "WriteModel"):
            assert step in names, f"{step} not in the jar's pipeline: {sorted(names)}"
        combine = names["BeamML_Train_kmeans/Combine/CombinePerKey"]
        assert combine["spec"]["urn"] == "beam:transform:combine_per_key:v1"
        (environment,) = pipeline["components"]["environments"].values()
        assert environment["urn"] == "beam:env:external:v1"
        payload = beam_runner_api_pb2.ExternalPayload.FromString(
            base64.b64decode(environment["payload"])
        )
        assert payload.endpoint.url == build_job_jar.WORKER_POOL == "localhost:50000"
        sdk = f"beam:version:sdk_base:apache/beam_python3.11_sdk:{beam_pin()}"
        assert sdk in environment["capabilities"]
        assert options["beam:option:environment_type:v1"] == "EXTERNAL"
        # The staged files travel in the jar (Flink serves them from its class path).
        staged = [n for n in jar.namelist() if n.startswith(f"BEAM-PIPELINE/{job}/artifacts/")]
        assert staged and len(staged) == len(environment["dependencies"])


def test_lib_holds_the_runners_dependencies_but_not_flinks(built):
    _, lib = built
    jars = {path.name for path in lib.glob("*.jar")}
    version = job_server_version()
    assert f"beam-runners-flink-1.19-{version}.jar" in jars
    assert f"beam-sdks-java-core-{version}.jar" in jars
    assert not [name for name in jars if name.startswith("flink-")]
    installed = {p.name for p in (build_job_jar.JOB_SERVER / "lib").glob("*.jar")}
    assert jars == {name for name in installed if not name.startswith("flink-")}
