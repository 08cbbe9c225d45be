"""The deploy pipelines built as Dataflow jobs (DataflowRunner --dry_run: the job is
made, not submitted; no network, no credentials), and the flex template's files
(deploy/dataflow) checked against the pipelines' arguments."""

from __future__ import annotations

import json
import re
import socket
import sys

import numpy as np
import pytest
from apache_beam.internal import pickler
from apache_beam.portability.api import beam_runner_api_pb2

import beam_ml
from beam_ml.core.combine import StateCombineFn
from tests.deploy.conftest import REPO, beam_pin, copied, dockerfile, pipeline

DATAFLOW = REPO / "deploy" / "dataflow"
GCP = [
    "--runner=DataflowRunner",
    "--dry_run=True",
    "--project=fake-project",
    "--region=us-central1",
    "--temp_location=gs://fake-bucket/tmp",
]


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """Any network connection (or credential lookup) fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"the dry run opened a connection: {args[1:]}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", "/nonexistent/credentials.json")


def transforms(job) -> dict[str, beam_runner_api_pb2.PTransform]:
    return {t.unique_name: t for t in job.proto_pipeline.components.transforms.values()}


def environment(job) -> tuple[str, list[str]]:
    """The SDK container image of the job's one environment, and its staged files."""
    (env,) = job.proto_pipeline.components.environments.values()
    assert env.urn == "beam:env:docker:v1"
    image = beam_runner_api_pb2.DockerPayload.FromString(env.payload).container_image
    staged = [
        beam_runner_api_pb2.ArtifactStagingToRolePayload.FromString(a.role_payload).staged_name
        for a in env.dependencies
    ]
    return image, staged


def expected_image() -> str:
    """Beam's Python SDK container of this interpreter's Python and setup.py's apache-beam."""
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    assert python == "3.11", "the flex template's launcher base image is Python 3.11's"
    return f"gcr.io/cloud-dataflow/v1beta3/beam_python{python}_sdk:{beam_pin()}"


def test_train_job_builds_a_batch_dataflow_job(tmp_path, rng):
    data = tmp_path / "train.csv"
    np.savetxt(data, rng.normal(size=(100, 5)), delimiter=",")
    args = ["--algorithm=kmeans", '--hyperparameters={"k": 3}', f"--input={data}"]
    args += ["--format=csv", "--output=gs://fake-bucket/models/kmeans"]
    # As the flex template launcher runs it: workers get beam_ml from the staged setup.py.
    result = pipeline("train_job").run(args + GCP + [f"--setup_file={REPO / 'setup.py'}"])
    job = result.job
    assert job.proto.type_ == job.proto.type_.JOB_TYPE_BATCH
    steps = transforms(job)
    assert steps["Read/ListFiles/Impulse"].spec.urn == "beam:transform:impulse:v1"
    assert steps["Read/ReadRanges/ParDo(ReadRangesFn)"].spec.urn == "beam:transform:pardo:v1"
    # The train combine: beam_ml's CombineFn of the asked algorithm and hyperparameters.
    combine = steps["BeamML_Train_kmeans/Combine/CombinePerKey"]
    assert combine.spec.urn == "beam:transform:combine_per_key:v1"
    payload = beam_runner_api_pb2.CombinePayload.FromString(combine.spec.payload)
    combine_fn = pickler.loads(payload.combine_fn.payload)
    assert isinstance(combine_fn, StateCombineFn)
    assert combine_fn.config == beam_ml.KMeansConfig(k=3, feature_dim=5)
    for write in ("WriteState/BeamML_WriteCheckpoint", "WriteModel/BeamML_WriteCheckpoint"):
        assert steps[write].spec.urn == "beam:transform:pardo:v1"
    image, staged = environment(job)
    assert image == expected_image()
    assert "workflow.tar.gz" in staged  # the sdist of beam_ml, built from setup.py


def test_continuous_job_builds_a_streaming_dataflow_job():
    args = ["--algorithm=pca", '--hyperparameters={"num_components": 2}']
    args += ["--input=pubsub://projects/fake-project/subscriptions/rows", "--format=csv"]
    args += ["--feature_dim=4", "--output=gs://fake-bucket/models/pca-live"]
    result = pipeline("continuous_job").run(args + GCP)
    job = result.job
    assert job.proto.type_ == job.proto.type_.JOB_TYPE_STREAMING
    steps = transforms(job)
    assert steps["Read/ReadFromPubSub/Read"].spec.urn == "beam:transform:pubsub_read:v1"
    snapshot = steps["BeamML_TrainStreaming_pca/Snapshot"]
    assert snapshot.spec.urn == "beam:transform:pardo:v1"
    pardo = beam_runner_api_pb2.ParDoPayload.FromString(snapshot.spec.payload)
    assert pardo.state_specs and pardo.timer_family_specs  # keyed state + snapshot timers
    assert steps["WriteState/BeamML_WriteCheckpoint"].spec.urn == "beam:transform:pardo:v1"
    image, _ = environment(job)
    assert image == expected_image()


@pytest.mark.parametrize("name", ["train_job", "continuous_job"])
def test_flex_template_metadata_matches_the_pipeline_arguments(name):
    metadata = json.loads((DATAFLOW / f"{name}.metadata.json").read_text())
    assert metadata["streaming"] == (name == "continuous_job")
    params = {p["name"]: p for p in metadata["parameters"]}
    assert len(params) == len(metadata["parameters"]), "a parameter named twice"
    actions = {a.dest: a for a in pipeline(name).arguments()._actions if a.dest != "help"}
    # Every parameter is an argument of the pipeline, and every argument but --wait (the
    # launcher must not block on a streaming job) is a parameter.
    assert set(params) == set(actions) - {"wait"}
    for dest, param in params.items():
        action = actions[dest]
        assert param["label"] and param["helpText"], dest
        regex = re.compile(param["regexes"][0])
        if action.required:
            assert not param.get("isOptional"), f"{dest} is required by the pipeline"
        if action.choices:  # the regex allows choices only (a subset: streams skip npy)
            alternatives = re.fullmatch(r"\^\((.*)\)\$", regex.pattern).group(1).split("|")
            assert set(alternatives) <= set(action.choices), dest
            if dest == "algorithm":
                assert sorted(alternatives) == sorted(action.choices)
        if param.get("isOptional") and action.default is not None:
            assert regex.fullmatch(str(action.default)), f"{dest}'s default {action.default!r}"
        if action.type in (int, float):
            assert regex.fullmatch("7") and not regex.fullmatch("seven"), dest


def test_flex_template_image_runs_the_pipelines_with_the_setup_file():
    instructions = dockerfile(DATAFLOW / "Dockerfile")
    assert instructions[0] == (
        "FROM",
        "gcr.io/dataflow-templates-base/python311-template-launcher-base",
    )
    args = dict(rest.split("=", 1) for word, rest in instructions if word == "ARG")
    env = dict(rest.split("=", 1) for word, rest in instructions if word == "ENV")
    files = copied(instructions)
    setup_file = env["FLEX_TEMPLATE_PYTHON_SETUP_FILE"]
    assert files[setup_file] == "setup.py"
    for name in ("train_job", "continuous_job"):
        py_file = env["FLEX_TEMPLATE_PYTHON_PY_FILE"].replace("${PIPELINE}", name)
        folder, _, script = py_file.rpartition("/")
        source = files[folder + "/"]
        assert (REPO / source / script).is_file(), py_file
        assert (DATAFLOW / f"{name}.metadata.json").is_file()
    assert args["PIPELINE"] == "train_job"
    (install,) = [rest for word, rest in instructions if word == "RUN" and "pip install" in rest]
    assert '".[dataflow]"' in install  # beam_ml (its apache-beam pin) + what DataflowRunner needs
