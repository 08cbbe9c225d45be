"""More than one epoch over bounded input, inside one Beam pipeline.

A stream is one pass by nature; bounded input may be read ``epochs`` times. Epoch 1 is
the usual ``CombineGlobally(StateCombineFn(config))``. For every further epoch, each Beam
bundle trains a *replica* that starts from the previous epoch's state (a side input,
:meth:`continued`: its last partial mini-batch trained, its per-feature counts restarted),
and the replicas are averaged by the state's merge, exactly like the replicas of epoch 1
that start from the seeded initialization; ``finish_round`` then gets the merge and the
start point the replicas shared (SGD states scale the merged step there). Between epochs
the state is an ordinary PCollection element: :class:`TrainEpochs` can write each epoch's
state as a checkpoint, and ``start_from`` continues training from one.

No MXNet here: the states train themselves (and load MXNet) on the workers.
"""

from __future__ import annotations

from typing import Any

import apache_beam as beam
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.timestamp import MIN_TIMESTAMP
from apache_beam.utils.windowed_value import WindowedValue

from beam_ml.core.combine import StateCombineFn
from beam_ml.core.state import TrainingState, load_state, state_class_for

__all__ = [
    "TrainEpochs",
    "adopt_runtime_options",
    "continue_epochs",
    "finish_first_round",
    "train_on_from",
]


class _TrainReplica(beam.DoFn):
    """Trains one replica per bundle, starting from the side-input state."""

    def setup(self) -> None:
        self._start_key: Any = None
        self._start: Any = None

    def start_bundle(self) -> None:
        self._replica = None

    def process(self, block: Any, start: TrainingState) -> None:
        if self._replica is None:
            if self._start_key != id(start):
                # continued() trains the start's last partial mini-batch: once per worker.
                self._start_key, self._start = id(start), start.continued()
            copy = getattr(self._start, "_copy", None)  # else a round trip through bytes
            self._replica = copy() if copy else load_state(self._start.to_bytes())
        self._replica.update(block)

    def finish_bundle(self) -> Any:
        if self._replica is not None:
            yield WindowedValue(self._replica, MIN_TIMESTAMP, [GlobalWindow()])
            self._replica = None


def _or_start(merged: TrainingState, start: TrainingState) -> TrainingState:
    # No replica at all (no blocks): the epoch leaves the state where it was.
    if not merged.n_seen:
        return start.continued()
    return merged.finish_round(start.continued()) if merged.PLAN.finishes_rounds else merged


def finish_first_round(state: beam.PCollection, state_class: type, label: str) -> Any:
    """The first round's merge, finished against the initial state (SGD states only)."""
    if not state_class.PLAN.finishes_rounds:
        return state
    return state | label >> beam.Map(lambda s: s.finish_round(None)).with_output_types(
        TrainingState
    )


def continue_epochs(
    blocks: beam.PCollection,
    state: beam.PCollection,
    config: Any,
    first_epoch: int = 2,
    checkpoint_dir: str | None = None,
) -> beam.PCollection:
    """Epochs ``first_epoch``..``config.epochs`` over ``blocks``, continuing from ``state``.

    Raises
    ------
    ValueError
        When ``blocks`` is unbounded (a stream is one pass) and more epochs are asked.
    """
    epochs = state_class_for(config).PLAN.epochs_of(config)  # k-means: one pass
    if epochs >= max(first_epoch, 2) and not blocks.is_bounded:
        raise ValueError(
            f"epochs={epochs} needs bounded input: a stream is read once. "
            "Use epochs=1 for unbounded sources."
        )
    family = state_class_for(config).FAMILY
    for epoch in range(first_epoch, epochs + 1):
        label = f"BeamML_{family}_Epoch{epoch}"
        start = beam.pvalue.AsSingleton(state)
        replicas = blocks | f"{label}_Replicas" >> beam.ParDo(_TrainReplica(), start)
        merged = replicas | f"{label}_Merge" >> beam.CombineGlobally(
            StateCombineFn(config)
        ).with_output_types(TrainingState)
        state = merged | f"{label}_OrStart" >> beam.Map(_or_start, start).with_output_types(
            TrainingState
        )
        if checkpoint_dir is not None:
            _write(state, checkpoint_dir, epoch, label)
    return state


def adopt_runtime_options(states: beam.PCollection, config: Any) -> beam.PCollection:
    """States from elsewhere (a checkpoint) with this run's runtime options, so their
    work runs where ``config`` says (a GPU-trained checkpoint resumes on a CPU)."""
    label = f"BeamML_{state_class_for(config).FAMILY}_RuntimeOptions"
    return states | label >> beam.Map(_with_runtime_options, config).with_output_types(
        TrainingState
    )


def _with_runtime_options(state: TrainingState, config: Any) -> TrainingState:
    return state.with_runtime_options(config)


def _followed_by(later: TrainingState, earlier: TrainingState) -> TrainingState:
    return earlier.followed_by(later)


def train_on_from(blocks: beam.PCollection, start: beam.PCollection, config: Any) -> Any:
    """New data training on from ``start`` (one state): ``config.epochs`` passes over
    ``blocks`` (one for a stream), the first from ``start.continued()``, then
    ``start.followed_by`` the result, so counts and statistics cover old and new rows."""
    later = continue_epochs(blocks, start, config, first_epoch=1)
    return later | "BeamML_FollowedBy" >> beam.Map(
        _followed_by, beam.pvalue.AsSingleton(start)
    ).with_output_types(TrainingState)


def _write(state: beam.PCollection, checkpoint_dir: str, epoch: int, label: str) -> None:
    from beam_ml.io.checkpoints import WriteCheckpoint

    path = f"{checkpoint_dir.rstrip('/')}/epoch-{epoch:03d}"
    _ = state | f"{label}_Checkpoint" >> WriteCheckpoint(path, {"epoch": epoch})


class TrainEpochs(beam.PTransform):
    """Blocks in, the state after ``config.epochs`` epochs out (bounded input only).

    Parameters
    ----------
    config : a gradient-trained algorithm's config (with ``epochs``)
    checkpoint_dir : str, optional
        Write the state after each epoch to ``<checkpoint_dir>/epoch-NNN``.
    start_from : PCollection of one state, optional
        Continue from this state (e.g. ``p | ReadCheckpoint(path)``): every epoch of
        ``config.epochs`` then starts from the one before, the first from this state.
    """

    def __init__(
        self,
        config: Any,
        checkpoint_dir: str | None = None,
        start_from: beam.PCollection | None = None,
    ):
        super().__init__()
        self.state_class = state_class_for(config)
        self.config, self.checkpoint_dir, self.start_from = config, checkpoint_dir, start_from

    def default_label(self) -> str:
        return f"BeamML_TrainEpochs_{self.state_class.FAMILY}"

    def expand(self, blocks):
        if self.state_class.PLAN.epochs_of(self.config) > 1 and not blocks.is_bounded:
            # Before epoch 1's combine, whose own complaint about streams says less.
            continue_epochs(blocks, None, self.config, 2)
        if self.start_from is not None:
            start = adopt_runtime_options(self.start_from, self.config)
            return continue_epochs(blocks, start, self.config, 1, self.checkpoint_dir)
        state = blocks | "Epoch1" >> beam.CombineGlobally(
            StateCombineFn(self.config, self.state_class)
        ).with_output_types(TrainingState)
        state = finish_first_round(state, self.state_class, "Epoch1_FinishRound")
        if self.checkpoint_dir is not None:
            _write(state, self.checkpoint_dir, 1, "BeamML_Epoch1")
        return continue_epochs(blocks, state, self.config, 2, self.checkpoint_dir)
