"""Trained state bytes, hashed: proof that a refactoring changes no behaviour.

    PYTHONPATH=<checkout> python benchmarks/state_bytes_check.py

Trains linear learner and PCA states on fixed seeded data (no files, a few seconds) and
prints one line per case: its name and the sha256 of the state's bytes (``to_bytes``),
and of the bytes of a model derived from it. Run it on two checkouts (``git worktree add
/tmp/before <commit>``, then ``PYTHONPATH=/tmp/before python benchmarks/state_bytes_check.py``
against ``PYTHONPATH=$PWD``) and ``diff`` the outputs: a refactoring that keeps behaviour
prints the same hashes, bit for bit.

The cases cover the linear learner's packed models (dense float64 and float32, CSR;
logistic, hinge with balanced weights, squared loss with the exact path, softmax, a
regressor with Adam and a running scaler, RMSProp; blocks that leave rows pending; merges;
epochs > 1 with validation rows, through ``continued`` and ``followed_by``) and PCA
(regular and sketch modes, dense, float32 and CSR rows, blocks of one row, merges).
"""

from __future__ import annotations

import hashlib
import sys

import numpy as np
import scipy.sparse as sp

import beam_ml
from beam_ml import Block, LinearLearnerConfig, LinearLearnerState
from beam_ml.algorithms.pca import PCAConfig, PCAState


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def report(name: str, state, **derive) -> None:
    print(
        f"{name:40s} state {digest(state.to_bytes())} model {digest(state.derive(**derive).to_bytes())}"
    )


def blocks(x, y, size):
    return [Block(x[i : i + size], y[i : i + size]) for i in range(0, x.shape[0], size)]


def trained(config, parts) -> LinearLearnerState:
    state = LinearLearnerState(config)
    for block in parts:
        state = state.update(block)
    return state


def merged(config, parts) -> LinearLearnerState:
    half = len(parts) // 2
    return trained(config, parts[:half]).merge(trained(config, parts[half:]))


def epochs(config, parts, count) -> LinearLearnerState:
    """``count`` passes, each one from ``continued()``, merged from two halves."""
    half = len(parts) // 2
    state = LinearLearnerState(config)
    for _ in range(count):
        start = state.continued() if state.n else state
        a, b = start, LinearLearnerState.from_bytes(start.to_bytes())
        for block in parts[:half]:
            a = a.update(block)
        for block in parts[half:]:
            b = b.update(block)
        state = a.merge(b)
    return state


def linear_learner() -> None:
    rng = np.random.default_rng(7)
    n, d = 6000, 12
    x = rng.normal(size=(n, d)) * rng.uniform(0.5, 3, size=d) + rng.normal(size=d)
    w = rng.normal(size=d)
    logit = x @ w * 0.5
    binary = (logit + rng.logistic(size=n) > 0).astype(float)
    value = x @ w + rng.normal(size=n)
    classes = np.argmax(x[:, :3] + rng.gumbel(size=(n, 3)), axis=1).astype(float)
    x32 = x.astype(np.float32)
    xs = sp.random(n, 200, density=0.05, format="csr", random_state=3, dtype=np.float64)
    xs.data[:] = 1.0
    ys = (np.asarray(xs @ rng.normal(size=200)).ravel() + rng.logistic(size=n) > 0).astype(float)

    small = dict(num_models=6, mini_batch_size=64)
    cfg = LinearLearnerConfig(predictor_type="binary_classifier", **small)
    report("ll binary dense", trained(cfg, blocks(x, binary, 777)))
    report(
        "ll binary dense merged",
        merged(cfg, blocks(x, binary, 500)),
        binary_classifier_model_selection_criteria="f_beta",
    )
    report("ll binary float32", trained(cfg, blocks(x32, binary, 1000)))
    report("ll binary sparse", trained(cfg, blocks(xs, ys, 333)))
    report("ll binary sparse merged", merged(cfg, blocks(xs, ys, 600)))
    hinge = LinearLearnerConfig(
        predictor_type="binary_classifier",
        loss="hinge_loss",
        positive_example_weight_mult="balanced",
        l1=0.001,
        **small,
    )
    report("ll hinge balanced l1", trained(hinge, blocks(x, binary, 1000)))
    reg = LinearLearnerConfig(predictor_type="regressor", **small)
    report("ll regressor exact", trained(reg, blocks(x, value, 900)), solver="packed")
    report("ll regressor exact merged", merged(reg, blocks(x, value, 900)))
    adam = LinearLearnerConfig(
        predictor_type="regressor",
        loss="huber_loss",
        optimizer="adam",
        num_point_for_scaler=0,
        **small,
    )
    report("ll huber adam running scaler", trained(adam, blocks(x, value, 500)))
    rms = LinearLearnerConfig(
        predictor_type="regressor", loss="absolute_loss", optimizer="rmsprop", **small
    )
    report("ll absolute rmsprop sparse", trained(rms, blocks(xs, ys * 3, 1000)))
    multi = LinearLearnerConfig(predictor_type="multiclass_classifier", num_classes=3, **small)
    report("ll multiclass", merged(multi, blocks(x, classes, 700)))
    big_lr = LinearLearnerConfig(
        predictor_type="regressor", loss="squared_loss", mini_batch_size=50, wd=0.0
    )
    report(
        "ll diverging learning rates",
        trained(big_lr, blocks(x * 100, value * 100, 1000)),
        solver="packed",
    )
    three = LinearLearnerConfig(predictor_type="binary_classifier", epochs=3, **small)
    report("ll binary 3 epochs validation", epochs(three, blocks(x, binary, 1000), 3))
    sparse3 = LinearLearnerConfig(
        predictor_type="binary_classifier", epochs=3, early_stopping_patience=1, **small
    )
    report("ll sparse 3 epochs early stop", epochs(sparse3, blocks(xs, ys, 1000), 3))
    no_val = LinearLearnerConfig(
        predictor_type="regressor", epochs=2, validation_fraction=0.0, **small
    )
    report("ll regressor 2 epochs", epochs(no_val, blocks(x, value, 1000), 2))
    day1 = trained(cfg, blocks(x[:3000], binary[:3000], 1000))
    day2 = day1.continued()
    for block in blocks(x[3000:], binary[3000:], 1000):
        day2 = day2.update(block)
    report("ll followed_by", day1.followed_by(day2))


def pca() -> None:
    rng = np.random.default_rng(11)
    n, d = 4000, 30
    x = rng.normal(size=(n, d)) @ rng.normal(size=(d, d)) + rng.normal(size=d) * 5
    xs = sp.random(n, 60, density=0.1, format="csr", random_state=5)
    for mode in ("regular", "sketch"):
        cfg = PCAConfig(num_components=5, algorithm_mode=mode)
        state = PCAState(cfg)
        for block in blocks(x, np.zeros(n), 333):
            state = state.update(Block(block.features))
        report(f"pca {mode}", state)
        parts = [PCAState(cfg).update(Block(x[i : i + 1000])) for i in range(0, n, 1000)]
        total = parts[0]
        for part in parts[1:]:
            total = total.merge(part)
        report(f"pca {mode} merged", total, subtract_mean=False)
        rows = PCAState(cfg)
        for i in range(300):
            rows = rows.update(Block(x[i : i + 1].astype(np.float32)))
        report(
            f"pca {mode} single float32 rows", rows.merge(PCAState(cfg).update(Block(x[300:600])))
        )
        sparse = PCAState(PCAConfig(num_components=4, algorithm_mode=mode, feature_dim=60))
        for i in range(0, n, 900):
            sparse = sparse.update(Block(xs[i : i + 900]))
        report(f"pca {mode} sparse", sparse, whiten=True)


if __name__ == "__main__":
    print(f"beam_ml from {beam_ml.__file__}", file=sys.stderr)
    linear_learner()
    pca()
