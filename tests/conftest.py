"""Shared fixtures: a logged, overridable seed; the real datasets; local Beam pipelines."""

from __future__ import annotations

import gzip
import logging
import os
from pathlib import Path

import numpy as np
import pytest

from beam_ml.core.runner import pipeline_options

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("BEAM_ML_DATA", REPO.parent / "shared" / "data"))


def pytest_configure(config):
    for marker, text in [
        ("beam", "runs a Beam pipeline"),
        ("slow", "takes more than a few seconds"),
        ("streaming", "streaming sources and triggers"),
        ("mxnet", "needs MXNet"),
        ("engines", "on a real engine: a local Flink cluster (tests/engines, deploy/flink)"),
    ]:
        config.addinivalue_line("markers", f"{marker}: {text}")


@pytest.fixture(autouse=True)
def seed() -> int:
    """The test seed: BEAM_ML_TEST_SEED or 0, logged so a failure can be replayed."""
    value = int(os.environ.get("BEAM_ML_TEST_SEED", "0"))
    logging.getLogger("beam_ml.tests").info("seed=%d", value)
    return value


@pytest.fixture
def rng(seed) -> np.random.Generator:
    return np.random.default_rng(seed)


def data_path(*parts: str) -> Path:
    """A file of the shared real datasets; a clear failure if the folder is missing."""
    path = DATA.joinpath(*parts)
    if not path.exists():
        pytest.fail(
            f"{path} not found: the real datasets live in ../shared/data beside the "
            "repository; point BEAM_ML_DATA at that folder."
        )
    return path


def load_mnist_images() -> np.ndarray:
    """The 10,000 MNIST test images as a float64 (10000, 784) array of 0..255."""
    with gzip.open(data_path("mnist", "t10k-images-idx3-ubyte.gz")) as handle:
        raw = handle.read()
    count, rows, cols = (int.from_bytes(raw[i : i + 4], "big") for i in (4, 8, 12))
    return np.frombuffer(raw, np.uint8, offset=16).reshape(count, rows * cols).astype(np.float64)


def direct_options(*argv: str):
    """Options for test pipelines: beam_ml's LocalRunner (named by default), loopback only."""
    return pipeline_options(list(argv))
