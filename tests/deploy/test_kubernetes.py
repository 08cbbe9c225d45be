"""deploy/kubernetes without a Kubernetes: every manifest parses, and what must agree
does — image versions with deploy/flink's Flink and job server and setup.py's
apache-beam, the worker pool's port with the pipelines' --environment_config, Services'
ports with their pods' containers, the job server with the JobManager, arguments and
mounts with the files the images and volumes have."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.conftest import (
    REPO,
    beam_ml_version,
    beam_pin,
    copied,
    dockerfile,
    flink_version,
    job_server_version,
    pipeline,
)

KUBERNETES = REPO / "deploy" / "kubernetes"
ROUTES = ["session", "application"]


def documents(route: str) -> list[dict[str, Any]]:
    docs = []
    for path in sorted((KUBERNETES / route).rglob("*.yaml")):
        docs += [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]
    return docs


def shared_claims() -> list[dict[str, Any]]:
    """The session's volume claim, which the application's worker pools mount too."""
    return [d for d in documents("session") if d["kind"] == "PersistentVolumeClaim"]


def pod_specs(route: str) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(name, labels, pod spec) of every workload and pod template of a route."""
    out = []
    for doc in documents(route):
        if doc["kind"] in ("Deployment", "Job"):
            template = doc["spec"]["template"]
            out.append((doc["metadata"]["name"], template["metadata"]["labels"], template["spec"]))
        elif doc["kind"] == "Pod":
            out.append((doc["metadata"]["name"], doc["metadata"].get("labels", {}), doc["spec"]))
    return out


def containers(route: str) -> list[tuple[str, dict[str, Any]]]:
    return [(name, c) for name, _, spec in pod_specs(route) for c in spec["containers"]]


def flag(args: list[str], name: str) -> str:
    """The value of ``--name=value`` among ``args`` (exactly one)."""
    (value,) = [a.split("=", 1)[1] for a in args if a.startswith(f"--{name}=")]
    return value


def worker_pool_port() -> int:
    """The port of the worker image's worker pool (its ENTRYPOINT), the one it EXPOSEs."""
    instructions = dockerfile(KUBERNETES / "worker" / "Dockerfile")
    (entrypoint,) = [rest for word, rest in instructions if word == "ENTRYPOINT"]
    port = int(re.search(r'"--service_port=(\d+)"', entrypoint).group(1))
    assert ("EXPOSE", str(port)) in instructions
    assert "apache_beam.runners.worker.worker_pool_main" in entrypoint
    return port


@pytest.mark.parametrize("route", ROUTES)
def test_every_manifest_parses_with_unique_names(route):
    docs = documents(route)
    assert docs, f"no manifests in deploy/kubernetes/{route}"
    seen = set()
    for doc in docs:
        assert doc.get("apiVersion") and doc.get("kind"), doc
        key = (doc["kind"], doc["metadata"]["name"])
        assert key not in seen, f"{key} twice in {route}"
        seen.add(key)
    for _, _, spec in pod_specs(route):
        names = [c["name"] for c in spec["containers"]]
        assert len(names) == len(set(names))


def test_images_are_the_versions_of_deploy_flink_and_setup_py():
    flink, minor = flink_version(), flink_version().rsplit(".", 1)[0]
    expected = {
        "flink": f"flink:{flink}-scala_2.12-java17",
        "apache/beam_flink": f"apache/beam_flink{minor}_job_server:{job_server_version()}",
        "beam-ml-worker": f"beam-ml-worker:{beam_ml_version()}-beam{beam_pin()}",
        "beam-ml-flink-app": f"beam-ml-flink-app:{beam_ml_version()}-flink{flink}",
    }
    used = set()
    for route in ROUTES:
        for name, container in containers(route):
            image = container.get("image")
            if image is None:  # the native pod template's Flink container: Flink sets it
                assert container["name"] == "flink-main-container"
                continue
            repository = re.match(r"(apache/beam_flink|[^:]+)", image).group(1)
            assert repository in expected, f"{route}/{name}: unknown image {image}"
            assert image == expected[repository], f"{route}/{name}"
            used.add(repository)
    assert used == set(expected)
    # The Dockerfiles build those images from those versions (their `docker build -t` lines).
    worker = dockerfile(KUBERNETES / "worker" / "Dockerfile")
    assert worker[0] == ("FROM", "python:3.11-slim")
    assert ("ARG", f"BEAM_VERSION={beam_pin()}") in worker
    application = dockerfile(KUBERNETES / "application" / "Dockerfile")
    assert application[0] == ("FROM", expected["flink"])
    for path, repository in [("worker", "beam-ml-worker"), ("application", "beam-ml-flink-app")]:
        text = (KUBERNETES / path / "Dockerfile").read_text()
        assert f"-t {expected[repository]} " in text, f"{path}/Dockerfile's build command"


def test_the_worker_pool_is_where_the_pipelines_look_for_it():
    port = worker_pool_port()
    for route in ROUTES:
        pods = pod_specs(route)
        taskmanagers = [
            spec
            for _, _, spec in pods
            if any(
                c.get("args") == ["taskmanager"] or c["name"] == "flink-main-container"
                for c in spec["containers"]
            )
        ]
        assert taskmanagers, route
        for spec in taskmanagers:  # every TaskManager pod has its worker-pool sidecar
            (pool,) = [c for c in spec["containers"] if c["name"] == "beam-worker-pool"]
            assert [p["containerPort"] for p in pool["ports"]] == [port]
        for name, container in containers(route):
            args = container.get("args", [])
            if any(a.startswith("--environment_config=") for a in args):
                assert flag(args, "environment_type") == "EXTERNAL", name
                assert flag(args, "environment_config") == f"localhost:{port}", name
    build_job_jar = (KUBERNETES / "application" / "build_job_jar.py").read_text()
    assert f'WORKER_POOL = "localhost:{port}"' in build_job_jar


@pytest.mark.parametrize("route", ROUTES)
def test_services_ports_are_their_pods_container_ports(route):
    pods = pod_specs(route)
    services = [d for d in documents(route) if d["kind"] == "Service"]
    assert services
    for service in services:
        selector = service["spec"]["selector"]
        selected = [spec for _, labels, spec in pods if selector.items() <= labels.items()]
        assert selected, f"Service {service['metadata']['name']} selects no pod"
        for spec in selected:
            ports = {p["containerPort"] for c in spec["containers"] for p in c.get("ports", [])}
            for port in service["spec"]["ports"]:
                assert port["targetPort"] in ports, (service["metadata"]["name"], port)


@pytest.mark.parametrize("route", ROUTES)
def test_flink_configuration_names_the_jobmanager_service_and_ports(route):
    docs = documents(route)
    (config_map,) = [d for d in docs if d["kind"] == "ConfigMap"]
    config = yaml.safe_load(config_map["data"]["config.yaml"])
    service = next(
        d for d in docs if d["kind"] == "Service" and d["metadata"]["name"].endswith("jobmanager")
    )
    ports = {p["name"]: p["port"] for p in service["spec"]["ports"]}
    assert config["jobmanager.rpc.address"] == service["metadata"]["name"]
    assert config["rest.address"] == service["metadata"]["name"]
    assert config["jobmanager.rpc.port"] == ports["rpc"]
    assert config["blob.server.port"] == ports["blob-server"]
    assert config["rest.port"] == ports["webui"]
    for _, container in containers(route):
        if container.get("args") == ["taskmanager"]:
            assert [p["containerPort"] for p in container["ports"]] == [
                config["taskmanager.rpc.port"]
            ]


def test_job_server_submits_to_the_jobmanager_and_is_reached_by_its_service():
    docs = documents("session")
    services = {
        d["metadata"]["name"]: {p["port"] for p in d["spec"]["ports"]}
        for d in docs
        if d["kind"] == "Service"
    }
    (server,) = [c for _, c in containers("session") if c["name"] == "beam-job-server"]
    args = server["args"]
    host, port = flag(args, "flink-master").split(":")
    assert int(port) in services[host]  # the JobManager's REST port
    assert flag(args, "job-host") in services  # the address it hands out resolves
    container_ports = {p["containerPort"] for p in server["ports"]}
    for name in ("job-port", "artifact-port", "expansion-port"):
        assert int(flag(args, name)) in container_ports
        assert int(flag(args, name)) in services[flag(args, "job-host")]
    for name, container in containers("session"):
        if name.startswith("beam-ml-"):  # the submitting Jobs
            endpoint_host, endpoint_port = flag(container["args"], "job_endpoint").split(":")
            assert endpoint_host == flag(args, "job-host")
            assert endpoint_port == flag(args, "job-port")


@pytest.mark.parametrize("route", ROUTES)
def test_mounts_name_volumes_config_maps_and_claims_that_exist(route):
    docs = documents(route)
    config_maps = {d["metadata"]["name"]: d["data"] for d in docs if d["kind"] == "ConfigMap"}
    claims = {d["metadata"]["name"] for d in shared_claims()}
    for name, _, spec in pod_specs(route):
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        for container in spec["containers"]:
            for mount in container.get("volumeMounts", []):
                assert mount["name"] in volumes, (name, mount)
        for volume in volumes.values():
            if "configMap" in volume:
                data = config_maps[volume["configMap"]["name"]]
                assert {item["key"] for item in volume["configMap"]["items"]} <= set(data)
            if "persistentVolumeClaim" in volume:
                assert volume["persistentVolumeClaim"]["claimName"] in claims


def _mounted(container: dict[str, Any], path: str) -> bool:
    return any(
        path.startswith(m["mountPath"].rstrip("/") + "/") for m in container.get("volumeMounts", [])
    )


def test_the_job_servers_artifacts_are_on_the_volume_the_taskmanagers_mount():
    (server,) = [c for _, c in containers("session") if c["name"] == "beam-job-server"]
    artifacts = flag(server["args"], "artifacts-dir")
    assert _mounted(server, artifacts)
    for _, container in containers("session"):
        if container.get("args") == ["taskmanager"]:
            assert _mounted(container, artifacts)  # it serves them to its SDK workers


def test_submitting_jobs_run_pipelines_the_worker_image_has_with_arguments_they_take():
    instructions = dockerfile(KUBERNETES / "worker" / "Dockerfile")
    files = copied(instructions)
    ignored = (KUBERNETES / "worker" / "Dockerfile.dockerignore").read_text().split()
    for source in files.values():  # what the image copies is in the repo and not ignored
        assert (REPO / source).exists(), source
        assert f"!{source.rstrip('/')}" in ignored or f"!{source}" in ignored, source
    submitted = 0
    for name, container in containers("session"):
        command = container.get("command")
        if not command:
            continue
        python, script = command
        assert python == "python"
        folder, _, file_name = script.rpartition("/")
        assert (REPO / files[folder + "/"] / file_name).is_file(), script
        args = container["args"]
        job = pipeline(Path(file_name).stem)
        parsed, beam_args = job.parse(args)  # the pipeline takes these arguments
        assert "--runner=PortableRunner" in beam_args
        for value in (parsed.input, parsed.output):
            if value.startswith("/"):
                assert _mounted(container, value), (name, value)
        submitted += 1
    assert submitted == 2  # the batch and the continuous job


def test_application_jobmanager_runs_the_jar_the_image_has():
    (jobmanager,) = [c for n, c in containers("application") if n.endswith("jobmanager")]
    args = jobmanager["args"]
    assert args[0] == "standalone-job"
    assert args[args.index("--job-classname") + 1] == (
        "org.apache.beam.runners.flink.FlinkPipelineRunner"
    )
    files = copied(dockerfile(KUBERNETES / "application" / "Dockerfile"))
    # usrlib/ holds build_job_jar.py's output: job.jar and lib/ (test_application_jar.py)
    assert files == {
        "/opt/flink/usrlib/": "lib/",
        "/opt/flink/usrlib/beam-ml-job.jar": "job.jar",
    }


def test_readme_commands_name_files_that_exist():
    readme = (KUBERNETES / "README.md").read_text().replace("\\\n", " ")
    commands = re.findall(r"^(?:kubectl|docker|flink|python)\b[^#\n]*", readme, re.M)
    assert any(c.startswith("kubectl apply") for c in commands)
    assert any(c.startswith("flink run-application") for c in commands)
    for command in commands:
        for word in shlex.split(command):
            word = word.split("=", 1)[-1]
            if word.startswith("deploy/") or word.startswith("pipelines/"):
                assert (REPO / word).exists(), f"{word} in {command!r}"
            if command.startswith("kubectl apply") and word.endswith("/"):
                # `kubectl apply -f dir/` takes the folder's files, not its subfolders':
                # no pod template (native/) nor submitting Job (submit/) among them.
                for path in (REPO / word).glob("*.yaml"):
                    kinds = {d["kind"] for d in yaml.safe_load_all(path.read_text()) if d}
                    assert not kinds & {"Pod", "Job"} or "jobmanager" in path.name, path
