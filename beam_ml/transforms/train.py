"""Train: blocks in, one training state out (globally or per key); ``train_cycle``: the
training run that ``beam-ml train`` and continuous training both build."""

from __future__ import annotations

from typing import Any

import apache_beam as beam

from beam_ml.core.combine import StateCombineFn
from beam_ml.core.state import TrainingState, state_class_for
from beam_ml.transforms.epochs import (
    adopt_runtime_options,
    continue_epochs,
    finish_first_round,
    train_on_from,
)

__all__ = ["Train", "TrainPerKey", "train_cycle"]


class Train(beam.PTransform):
    """Fold a PCollection of blocks into a PCollection holding one state.

    Parameters
    ----------
    config : an algorithm config, e.g. ``PCAConfig(num_components=10)``
    resume_from : PCollection of states, optional
        An earlier state (e.g. ``p | ReadCheckpoint(path)``) that the new data extends:
        yesterday's state plus today's data equals training on both. Statistics states
        merge with the new data's state; SGD states (``PLAN.resume == 'continue'``) train on
        from it, so the new rows refine the old model rather than being averaged with
        a fresh one.
    fanout : int, optional
        Intermediate combining keys for very large inputs (``with_fanout``).

    Examples
    --------
    >>> import apache_beam as beam, numpy as np
    >>> from beam_ml import Train, PCAConfig, pipeline_options
    >>> with beam.Pipeline(options=pipeline_options()) as p:
    ...     _ = (p | beam.Create([np.eye(3)]) | Train(PCAConfig(num_components=2))
    ...            | beam.Map(lambda s: print(s.n_seen)))
    3
    """

    def __init__(
        self, config: Any, resume_from: beam.PCollection | None = None, fanout: int | None = None
    ):
        super().__init__()
        self.state_class = state_class_for(config)  # a wrong config fails here, not on workers
        self.config, self.resume_from, self.fanout = config, resume_from, fanout

    def default_label(self) -> str:
        return f"BeamML_Train_{self.state_class.FAMILY}"

    def expand(self, blocks):
        data, resumed = blocks, self.resume_from
        if resumed is not None:
            resumed = adopt_runtime_options(resumed, self.config)
        if resumed is not None and self.state_class.PLAN.continues:
            return train_on_from(blocks, resumed, self.config)
        if resumed is not None:
            blocks = (blocks, resumed) | "WithResumedState" >> beam.Flatten()
        combine = beam.CombineGlobally(StateCombineFn(self.config, self.state_class))
        if self.fanout:
            combine = combine.with_fanout(self.fanout)
        state = blocks | "Combine" >> combine.with_output_types(TrainingState)
        state = finish_first_round(state, self.state_class, "FinishRound")
        # Gradient-trained families (config.epochs > 1) read bounded input again: each
        # further epoch continues from the previous epoch's state (beam_ml.transforms.epochs).
        if self.state_class.PLAN.epochs_of(self.config) > 1:
            state = continue_epochs(data, state, self.config, first_epoch=2)
        return state


class TrainPerKey(beam.PTransform):
    """``(key, block)`` pairs in, ``(key, state)`` out: one model per key."""

    def __init__(self, config: Any):
        super().__init__()
        self.state_class = state_class_for(config)
        self.config = config

    def default_label(self) -> str:
        return f"BeamML_TrainPerKey_{self.state_class.FAMILY}"

    def expand(self, keyed_blocks):
        return keyed_blocks | "CombinePerKey" >> beam.CombinePerKey(
            StateCombineFn(self.config, self.state_class)
        )


def train_cycle(
    blocks: beam.PCollection,
    config: Any,
    output: str,
    extra: dict[str, Any],
    *,
    resume_from: str | None = None,
    keep: int = 1,
    positions: beam.PCollection | None = None,
) -> beam.PCollection:
    """One training run after its read, the one ``beam-ml train`` and every cycle of
    :class:`~beam_ml.transforms.continuous.ContinuousTrainer` build: ``blocks`` train on
    from the state checkpointed at ``resume_from`` (if any; merged or continued, see
    :class:`Train`), and the state is checkpointed to ``output`` with ``extra`` in its
    manifest (the last ``keep`` kept), unless it saw no rows. Returns the manifests.
    ``positions``, a one-element PCollection of the source positions the read reached
    (Kinesis), goes into the manifest as ``source_positions``."""
    from beam_ml.io.checkpoints import ReadCheckpoint, WriteCheckpoint

    resumed = blocks.pipeline | "Resume" >> ReadCheckpoint(resume_from) if resume_from else None
    return (
        blocks
        | Train(config, resume_from=resumed)
        | "SkipEmpty" >> beam.Filter(_has_rows)
        | WriteCheckpoint(output, extra, keep=keep, positions=positions)
    )


def _has_rows(state: TrainingState) -> bool:
    return state.n_seen > 0
