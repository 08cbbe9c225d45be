"""Beam's Prism runner for tests: the Go binary, built from the Go module proxy.

``make test`` builds it (``python -m tests.streaming.prism``: ``go install`` into
``tests/streaming/.prism``, git-ignored; ~2 min on a cold Go cache), or point
``BEAM_ML_PRISM`` at a built binary. Its version is the apache-beam pin of setup.py.
Pipelines use Beam's ``PrismRunner`` with that binary and ``LOOPBACK`` workers (the
SDK harness runs in the test process, so tests read what a pipeline wrote).

Loopback: the in-process worker pool of LOOPBACK is bound to 127.0.0.1 here (Beam
binds ``[::]``, with no option). Prism's own job port cannot be: Prism 2.77's job
service listens on ``":<port>"`` (every interface; ``jobservices.NewServer``) and has
no host flag; its web UI, which would listen too, is off (``--serve_http=false``,
set by ``PrismRunner``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

PRISM_VERSION = f"v{version('apache-beam')}"  # setup.py pins apache-beam: the runner matches it
HERE = Path(__file__).resolve().parent
BINARY = HERE / ".prism" / "prism"
PACKAGE = "github.com/apache/beam/sdks/v2/go/cmd/prism"


def binary() -> Path:
    """The Prism binary: ``BEAM_ML_PRISM``, else the one ``build`` made."""
    found = Path(os.environ.get("BEAM_ML_PRISM", BINARY))
    if not found.is_file():
        raise RuntimeError(
            f"no Prism binary at {found}: run `make test`, or (Go installed) "
            "python -m tests.streaming.prism"
        )
    return found


def build() -> None:
    """``go install`` the Prism of ``PRISM_VERSION`` into ``BINARY`` (once)."""
    if BINARY.is_file():
        return
    go = shutil.which("go")
    if go is None:
        raise RuntimeError("building Prism needs Go (https://go.dev): go is not on PATH")
    done = subprocess.run(
        [go, "install", f"{PACKAGE}@{PRISM_VERSION}"],
        env={**os.environ, "GOBIN": str(BINARY.parent)},
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if done.returncode != 0:
        raise RuntimeError(f"go install {PACKAGE}@{PRISM_VERSION} failed:\n{done.stderr[-3000:]}")


def loopback_worker_pool() -> None:
    """Bind the LOOPBACK worker pool (``worker_pool_main``) to 127.0.0.1. Idempotent."""
    from beam_ml.core.beam_internals import bind_worker_pool_to_loopback

    bind_worker_pool_to_loopback()


def prism_options(*argv: str, streaming: bool = True):
    """Pipeline options of a run on Prism (one Prism per test session, started by Beam)."""
    from beam_ml.core.runner import pipeline_options

    loopback_worker_pool()
    flags = [
        "--runner=PrismRunner",
        f"--prism_location={binary()}",
        "--environment_type=LOOPBACK",
        *(["--streaming"] if streaming else []),
        *argv,
    ]
    return pipeline_options(flags)


def stop_prism() -> None:
    """Stop the Prism that ``PrismRunner`` shares across a process's pipelines (it
    would stop at exit, logging into closed streams under pytest)."""
    from apache_beam.runners.portability.prism_runner import PrismRunner

    server = PrismRunner.shared_handle.acquire(lambda: None)  # None when none runs
    if server is not None:
        server.stop()


if __name__ == "__main__":  # `make test` builds Prism before the tests run
    try:
        build()
    except RuntimeError as exc:
        sys.exit(str(exc))
