"""What the deploy tests share: the repository's versions (deploy/flink's Flink and Beam
job server, setup.py's apache-beam pin, beam_ml's version) and the deploy pipelines,
imported from pipelines/ as the launchers run them (scripts, not a package)."""

from __future__ import annotations

import importlib.util
import posixpath
import re
import sys
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[2]
PIPELINES = REPO / "pipelines"


def _read(pattern: str, path: Path) -> str:
    match = re.search(pattern, path.read_text())
    assert match, f"{pattern!r} not found in {path}"
    return match.group(1)


def flink_version() -> str:
    """deploy/flink/common.sh's Flink (the local cluster of tests/engines)."""
    return _read(r"FLINK_VERSION=\$\{FLINK_VERSION:-([\d.]+)\}", REPO / "deploy/flink/common.sh")


def job_server_version() -> str:
    """deploy/flink/common.sh's Beam Flink job server version."""
    return _read(
        r"BEAM_JOB_SERVER_VERSION=\$\{BEAM_JOB_SERVER_VERSION:-([\d.]+)\}",
        REPO / "deploy/flink/common.sh",
    )


def beam_pin() -> str:
    """setup.py's apache-beam pin."""
    return _read(r'"apache-beam==([\d.]+)"', REPO / "setup.py")


def beam_ml_version() -> str:
    return _read(r'__version__ = "([^"]+)"', REPO / "beam_ml/version.py")


def pipeline(name: str) -> ModuleType:
    """pipelines/<name>.py as a module (its folder on sys.path, as when it runs)."""
    if name in sys.modules:
        return sys.modules[name]
    if str(PIPELINES) not in sys.path:
        sys.path.insert(0, str(PIPELINES))
    spec = importlib.util.spec_from_file_location(name, PIPELINES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def dockerfile(path: Path) -> list[tuple[str, str]]:
    """A Dockerfile's instructions as (INSTRUCTION, arguments), continuation lines joined
    and comments dropped."""
    instructions, pending = [], ""
    for line in path.read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        pending += line.rstrip("\\").strip() + " "
        if not line.endswith("\\"):
            word, _, rest = pending.strip().partition(" ")
            instructions.append((word.upper(), rest.strip()))
            pending = ""
    return instructions


def copied(instructions: list[tuple[str, str]]) -> dict[str, str]:
    """COPY destinations (absolute, WORKDIR applied) -> their sources in the build context."""
    workdir, out = "/", {}
    for word, rest in instructions:
        if word == "WORKDIR":
            workdir = rest
        elif word == "COPY":
            parts = [p for p in rest.split() if not p.startswith("--")]
            *sources, target = parts
            directory = target.endswith("/") or target in (".", "./")
            target = posixpath.normpath(posixpath.join(workdir, target)) + (
                "/" if directory else ""
            )
            for source in sources:
                if target.endswith("/") and not source.endswith("/"):
                    out[target + Path(source).name] = source
                else:
                    out[target.rstrip("/") + ("/" if source.endswith("/") else "")] = source
    return out
