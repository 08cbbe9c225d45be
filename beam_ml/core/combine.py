"""The one Beam adapter: a CombineFn whose accumulator *is* the training state.

Every algorithm gets ``CombineGlobally``, ``CombinePerKey`` and streaming (a combining
state spec) from this class alone; the math stays on the state [STYLE §1.2].
"""

from __future__ import annotations

from functools import reduce
from typing import Any

import apache_beam as beam

from beam_ml.core.state import TrainingState, load_state, state_class_for

__all__ = ["StateCombineFn", "StateCoder"]


class StateCoder(beam.coders.Coder):
    """Encodes any registered state with its versioned ``to_bytes`` (never pickle)."""

    def encode(self, value: TrainingState) -> bytes:
        return value.to_bytes()

    def decode(self, encoded: bytes) -> TrainingState:
        return load_state(encoded)

    def is_deterministic(self) -> bool:
        return False

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other)

    def __hash__(self) -> int:
        return hash(type(self))


class StateCombineFn(beam.CombineFn):
    """Folds blocks (and previously trained states) into one state of ``config``.

    An input element that is itself a state (for example one read from a checkpoint)
    is merged rather than updated, so resuming is just one more input:
    ``(new_blocks, old_states) | Flatten() | CombineGlobally(StateCombineFn(config))``.
    """

    def __init__(self, config: Any, state_class: type[TrainingState] | None = None):
        self.config = config
        self.state_class = state_class or state_class_for(config)

    def create_accumulator(self) -> TrainingState:
        return self.state_class.empty(self.config)

    def add_input(self, accumulator: TrainingState, element: Any) -> TrainingState:
        if isinstance(element, TrainingState):
            return accumulator.merge(element)
        return accumulator.update(element)

    def merge_accumulators(self, accumulators: Any) -> TrainingState:
        # Beam's combining state on portable runners (Prism, Flink, the FnApiRunner)
        # merges its bag of accumulators, empty before the first add, at random.
        accumulators = list(accumulators)
        if not accumulators:
            return self.create_accumulator()
        # Counted so that tests on a distributed runner can see partial states meet.
        beam.metrics.Metrics.counter("beam_ml", "accumulators_merged").inc(len(accumulators))
        return reduce(lambda a, b: a.merge(b), accumulators)

    def compact(self, accumulator: TrainingState) -> TrainingState:
        return accumulator.compact()

    def extract_output(self, accumulator: TrainingState) -> TrainingState:
        return accumulator

    def get_accumulator_coder(self) -> StateCoder:
        return StateCoder()

    def display_data(self) -> dict[str, Any]:
        return {"family": self.state_class.FAMILY, "config": repr(self.config)}


# PCollections typed as TrainingState (Train's and ReadCheckpoint's outputs) are
# encoded with the versioned format between stages, not pickled.
beam.coders.registry.register_coder(TrainingState, StateCoder)
