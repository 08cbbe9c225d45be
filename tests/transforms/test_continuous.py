"""ContinuousTrainer's cycles, fed from memory: snapshots, a sliding window that forgets,
SGD models that learn on across cycles, and a restart that continues."""

from __future__ import annotations

import apache_beam as beam
import numpy as np
import pytest

from beam_ml import LinearLearnerConfig, LinearLearnerState, PCAConfig, read_checkpoint
from beam_ml.core.block import Block
from beam_ml.core.errors import BadInputError
from beam_ml.io.checkpoints import read_manifest
from beam_ml.transforms.continuous import ContinuousTrainer, Feed, Take

pytestmark = pytest.mark.beam


class _Read(beam.PTransform):
    def __init__(self, blocks, bad):
        super().__init__()
        self.blocks, self.bad = blocks, bad

    def expand(self, pbegin):
        blocks = pbegin | "Blocks" >> beam.Create(self.blocks, reshuffle=False)
        bad = pbegin | "Bad" >> beam.Create(self.bad, reshuffle=False)
        return blocks, bad


class _ListFeed(Feed):
    """One list of blocks per cycle; positions count the cycles taken."""

    name = "memory"

    def __init__(self, cycles, bad=None):
        self.cycles, self.bad = cycles, bad or {}
        self.committed = []

    def take(self, positions):
        i = int(positions.get("cycle", 0))
        if i >= len(self.cycles):
            return None
        return Take(_Read(self.cycles[i], self.bad.get(i, [])), {"cycle": i + 1})

    def commit(self, take):
        self.committed.append(take.positions["cycle"])

    def ended(self):
        return True  # stop when the list is used up


def _run(feed, config, tmp_path, **options):
    trainer = ContinuousTrainer(
        config,
        feed,
        str(tmp_path / "state"),
        snapshot_every_seconds=0.01,
        model_output=str(tmp_path / "model"),
        dead_letters=str(tmp_path / "dead.jsonl"),
        **options,
    )
    return trainer, trainer.run()


def _subspace(rng, basis, n):
    return rng.normal(size=(n, basis.shape[0])) @ basis + 0.01 * rng.normal(size=(n, 6))


def test_a_sliding_window_forgets_old_cycles_and_a_restart_goes_on(tmp_path, rng):
    old, new = np.eye(6)[:2], np.eye(6)[3:5]
    cycles = [[_subspace(rng, old, 400)] for _ in range(3)]
    cycles += [[_subspace(rng, new, 400)] for _ in range(2)]
    feed = _ListFeed(cycles)
    _, snaps = _run(feed, PCAConfig(num_components=2), tmp_path, window=2)
    assert [s.snapshot for s in snaps] == [1, 2, 3, 4, 5] and feed.committed == [1, 2, 3, 4, 5]
    model, manifest = read_checkpoint(str(tmp_path / "model"), "model")
    assert manifest["extra"]["n_seen"] == 800 and manifest["extra"]["snapshot"] == 5
    # Only the new subspace is left: the components span axes 3 and 4.
    assert (np.linalg.norm(model.components[:, [3, 4]], axis=1) > 0.99).all()
    assert np.abs(model.components[:, :3]).max() < 0.05
    assert len(read_manifest(str(tmp_path / "state"))["history"]) == 2

    # A restart continues after the stored position: only the new cycle is read.
    cycles.append([_subspace(rng, new, 100)])
    trainer, snaps = _run(_ListFeed(cycles), PCAConfig(num_components=2), tmp_path, window=2)
    assert trainer.resumed and [s.snapshot for s in snaps] == [6]
    assert read_manifest(str(tmp_path / "model"))["extra"]["n_seen"] == 500


def test_sgd_models_learn_on_across_cycles(tmp_path, rng):
    w = rng.normal(size=40) / 2

    def block(n):
        x = rng.normal(size=(n, 40))
        return Block(x, (x @ w + rng.logistic(size=n) > 0).astype(float))

    config = LinearLearnerConfig(predictor_type="binary_classifier", num_models=4)
    test = block(20_000)
    cycles = [[block(1_000)] for _ in range(6)]
    _, snaps = _run(_ListFeed(cycles), config, tmp_path)
    assert [s.n_seen for s in snaps] == [1_000 * (i + 1) for i in range(6)]
    state, _ = read_checkpoint(str(tmp_path / "state"))
    assert state.stepped == 6_000  # every row trained once, none lost to averaging
    model, _ = read_checkpoint(str(tmp_path / "model"), "model")
    loss = model.score("binary_classification_cross_entropy", test)
    # As good as one uninterrupted pass over the same rows (not an average of 6 models
    # trained on 2,000 rows each).
    x = np.vstack([c[0].features for c in cycles])
    y = np.concatenate([c[0].labels for c in cycles])
    one_pass = LinearLearnerState(config).update(Block(x, y)).derive()
    reference = one_pass.score("binary_classification_cross_entropy", test)
    first = LinearLearnerState(config).update(cycles[0][0]).derive()
    assert loss <= 1.01 * reference, (loss, reference)
    assert loss < 0.95 * first.score("binary_classification_cross_entropy", test)
    with pytest.raises(BadInputError, match="forget old data"):
        ContinuousTrainer(config, _ListFeed([]), str(tmp_path / "x"), window=3)


def test_a_cycle_of_only_malformed_records_moves_on(tmp_path, rng):
    bad = {0: [{"file": "memory", "offset": 0, "line": 1, "record": "x", "reason": "bad"}]}
    feed = _ListFeed([[], [rng.normal(size=(50, 3))]], bad)
    _, snaps = _run(feed, PCAConfig(num_components=1), tmp_path)
    assert [s.snapshot for s in snaps] == [0, 1] and snaps[1].n_seen == 50
    assert (tmp_path / "dead.jsonl").read_text().count("\n") == 1
    assert read_manifest(str(tmp_path / "state"))["extra"]["source_positions"] == {"cycle": 2}


def test_the_drivers_old_name_still_runs_it_with_a_deprecation_warning():
    import beam_ml
    from beam_ml.transforms import continuous

    with pytest.warns(DeprecationWarning, match="now ContinuousTrainer"):
        old = continuous.TrainContinuously
    assert old is ContinuousTrainer
    with pytest.warns(DeprecationWarning):
        from beam_ml.transforms.continuous import TrainContinuously  # noqa: F401
    assert beam_ml.ContinuousTrainer is ContinuousTrainer
    with pytest.raises(AttributeError):
        continuous.TrainSomehow  # noqa: B018
