"""Running a source in a test pipeline and collecting what it emits."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import apache_beam as beam
import numpy as np

from tests.conftest import REPO, direct_options

#: Beam options of a local run in two worker processes (ranges read in parallel).
MULTI_PROCESS = ("--direct_num_workers", "2", "--direct_running_mode", "multi_processing")


class _Collect(beam.DoFn):
    """Appends every element to a module-level list (the DirectRunner runs in-process)."""

    store: dict[str, list[Any]] = {}

    def __init__(self, key: str):
        self._key = key

    def process(self, element: Any):
        _Collect.store.setdefault(self._key, []).append(element)


def run_source(read: beam.PTransform, n_outputs: int = 1) -> list[list[Any]]:
    """Run ``read`` (returning one PCollection or a tuple of them) and return each
    output's elements."""
    keys = [f"{id(read)}-{i}" for i in range(n_outputs)]
    for key in keys:
        _Collect.store[key] = []
    with beam.Pipeline(options=direct_options()) as p:
        outputs = p | "Read" >> read
        if n_outputs == 1:
            outputs = (outputs,)
        for i, (key, pcoll) in enumerate(zip(keys, outputs, strict=True)):
            pcoll | f"Collect{i}" >> beam.ParDo(_Collect(key))
    return [_Collect.store.pop(key) for key in keys]


def stack(blocks: list[Any]) -> tuple[np.ndarray, np.ndarray | None]:
    """The rows of ``blocks`` in origin order: (features, labels)."""
    blocks = sorted(blocks, key=lambda b: b.origin)
    features = np.vstack([np.asarray(b.features) for b in blocks])
    labels = None if blocks[0].labels is None else np.concatenate([b.labels for b in blocks])
    return features, labels


def beam_ml(*args: Any, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    """The beam-ml command in a subprocess; fails the test with its stderr if it fails."""
    done = subprocess.run(
        [sys.executable, "-m", "beam_ml.cli", *map(str, args)],
        input=stdin,
        capture_output=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        cwd=REPO,
        timeout=120,
    )
    if done.returncode != 0:
        raise AssertionError(f"beam-ml {args} failed ({done.returncode}):\n{done.stderr.decode()}")
    return done
