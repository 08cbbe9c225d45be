"""TrainStreaming: one growing state over an unbounded input, snapshotted on schedule.

A stateful DoFn keyed by model id holds the state in a combining state cell (the same
``StateCombineFn`` and versioned ``StateCoder`` as batch training) [STYLE §1.9] and
emits a *snapshot* of it

- when ``snapshot_every_rows`` rows arrived since the last snapshot, or
- when a block arrives ``snapshot_every_seconds`` or more after the last snapshot, and
  otherwise by a processing-time timer that many seconds after the first unsnapshotted
  block (so a quiet stream still publishes its last rows), and
- at the end of a bounded input (an event-time timer at the end of the global window).

All three go through one ``_flush`` helper. Snapshots feed ``Derive``/``WriteCheckpoint``
like any state, so models follow a stream within the snapshot interval.
"""

from __future__ import annotations

import time
from typing import Any

import apache_beam as beam
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import (
    CombiningValueStateSpec,
    ReadModifyWriteStateSpec,
    TimerSpec,
    on_timer,
)
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.timestamp import Timestamp

from beam_ml.core.combine import StateCoder, StateCombineFn
from beam_ml.core.state import TrainingState, state_class_for

__all__ = ["TrainStreaming"]


def _make_snapshot_fn(config: Any, every_seconds: float | None, every_rows: int | None):
    """A DoFn class whose state specs carry ``config``'s CombineFn (specs are class-level)."""
    state_spec = CombiningValueStateSpec("state", StateCoder(), StateCombineFn(config))
    pending_spec = ReadModifyWriteStateSpec("pending", beam.coders.VarIntCoder())
    last_spec = ReadModifyWriteStateSpec("last", beam.coders.FloatCoder())
    clock_spec = TimerSpec("clock", TimeDomain.REAL_TIME)
    end_spec = TimerSpec("end", TimeDomain.WATERMARK)

    class SnapshotFn(beam.DoFn):
        def process(
            self,
            element,
            state=beam.DoFn.StateParam(state_spec),
            pending=beam.DoFn.StateParam(pending_spec),
            last=beam.DoFn.StateParam(last_spec),
            clock=beam.DoFn.TimerParam(clock_spec),
            end=beam.DoFn.TimerParam(end_spec),
            key=beam.DoFn.KeyParam,
        ):
            _, block = element
            state.add(block)
            rows = (pending.read() or 0) + _rows(block)
            now = time.time()
            if last.read() is None:
                last.write(now)
                end.set(GlobalWindow().max_timestamp())
            if (every_rows and rows >= every_rows) or (
                every_seconds is not None and now - last.read() >= every_seconds
            ):
                yield from _flush(key, state, pending, last, rows)
                return
            if not pending.read() and every_seconds is not None:
                clock.set(Timestamp.now() + every_seconds)  # the quiet-stream safety net
            pending.write(rows)

        @on_timer(clock_spec)
        def on_clock(
            self,
            state=beam.DoFn.StateParam(state_spec),
            pending=beam.DoFn.StateParam(pending_spec),
            last=beam.DoFn.StateParam(last_spec),
            key=beam.DoFn.KeyParam,
        ):
            yield from _flush(key, state, pending, last, pending.read() or 0)

        @on_timer(end_spec)
        def on_end(
            self,
            state=beam.DoFn.StateParam(state_spec),
            pending=beam.DoFn.StateParam(pending_spec),
            last=beam.DoFn.StateParam(last_spec),
            key=beam.DoFn.KeyParam,
        ):
            yield from _flush(key, state, pending, last, pending.read() or 0)

    return SnapshotFn()


def _rows(block: Any) -> int:
    if isinstance(block, TrainingState):
        return 0
    features = getattr(block, "features", block)
    return int(features.shape[0])


def _flush(key, state, pending, last, rows: int):
    """Emit the current state if anything arrived since the last snapshot."""
    pending.write(0)
    last.write(time.time())
    if rows:
        yield key, state.read()


class TrainStreaming(beam.PTransform):
    """Blocks (or ``(model_id, block)`` pairs) in; state snapshots out, on schedule.

    Parameters
    ----------
    config : an algorithm config
    snapshot_every_seconds : float, optional
        Publish at most this long after new rows arrive (default 30).
    snapshot_every_rows : int, optional
        Also publish every this many rows.
    keyed : bool
        Input elements are ``(model_id, block)``: one state per model id, and the
        output is ``(model_id, state)``. Otherwise one state, output as states.
    """

    def __init__(
        self,
        config: Any,
        snapshot_every_seconds: float | None = 30.0,
        snapshot_every_rows: int | None = None,
        keyed: bool = False,
    ):
        super().__init__()
        self.state_class = state_class_for(config)
        if snapshot_every_seconds is None and not snapshot_every_rows:
            raise ValueError("TrainStreaming needs snapshot_every_seconds or snapshot_every_rows.")
        if snapshot_every_seconds is not None and snapshot_every_seconds <= 0:
            raise ValueError(
                f"snapshot_every_seconds must be > 0. Got {snapshot_every_seconds!r} instead."
            )
        self.config, self.keyed = config, keyed
        self.every_seconds, self.every_rows = snapshot_every_seconds, snapshot_every_rows

    def default_label(self) -> str:
        return f"BeamML_TrainStreaming_{self.state_class.FAMILY}"

    def expand(self, blocks):
        keyed = blocks if self.keyed else blocks | "Key" >> beam.Map(lambda b: ("model", b))
        snapshots = keyed | "Snapshot" >> beam.ParDo(
            _make_snapshot_fn(self.config, self.every_seconds, self.every_rows)
        )
        if self.keyed:
            return snapshots
        return snapshots | "DropKey" >> beam.Map(lambda kv: kv[1]).with_output_types(TrainingState)
