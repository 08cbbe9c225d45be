"""The Beam transforms of checkpoints: ``WriteCheckpoint`` and ``ReadCheckpoint``.

They live apart from :mod:`beam_ml.io.checkpoints`, which exports them on first use, so
that reading or writing a checkpoint outside a pipeline (``beam-ml derive``, ``inspect``)
does not import Apache Beam.
"""

from __future__ import annotations

from typing import Any

import apache_beam as beam

from beam_ml.core.errors import CorruptStateError
from beam_ml.core.state import TrainingState
from beam_ml.io.checkpoints import _join, _listing, read_checkpoint, read_manifest, write_checkpoint

__all__ = ["WriteCheckpoint", "ReadCheckpoint"]


class WriteCheckpoint(beam.PTransform):
    """Write each incoming state (or model) to ``path``; outputs the manifests.

    Meant for a PCollection holding one state (``Train``'s output) or a stream of
    snapshots (``TrainStreaming``'s): each write replaces the last, atomically, and
    ``keep`` > 1 keeps that many previous payloads listed in the manifest.
    ``positions``: a one-element PCollection whose dict is stored in the manifest's
    extra as ``source_positions`` (where a source's read ended, known once it ran).
    """

    def __init__(
        self,
        path: str,
        extra: dict[str, Any] | None = None,
        keep: int = 1,
        positions: beam.PCollection | None = None,
    ):
        super().__init__()
        self.path, self.extra, self.keep = path, extra, keep
        self.positions = positions

    def expand(self, states):
        path, extra, keep = self.path, self.extra, self.keep
        if self.positions is not None:
            return states | "BeamML_WriteCheckpoint" >> beam.Map(
                lambda s, positions: write_checkpoint(
                    path, s, {**(extra or {}), "source_positions": positions}, keep
                ),
                positions=beam.pvalue.AsSingleton(self.positions),
            )
        return states | "BeamML_WriteCheckpoint" >> beam.Map(
            lambda s: write_checkpoint(path, s, extra, keep)
        )


class ReadCheckpoint(beam.PTransform):
    """Read the state at ``path`` into a one-element PCollection (applied to the pipeline)."""

    def __init__(self, path: str):
        super().__init__()
        self.path = path
        # Fail at construction, not on the workers: the manifest, and its payload there.
        manifest = read_manifest(path)
        if _listing(path).get(manifest["payload"]) != manifest["payload_bytes"]:
            raise CorruptStateError(
                f"The checkpoint at {path!r} is missing its payload "
                f"{_join(path, manifest['payload'])!r} (or it is not a plain file of "
                f"{manifest['payload_bytes']} bytes)."
            )

    def expand(self, pbegin):
        path = self.path
        read = beam.Map(lambda p: read_checkpoint(p, "state")[0]).with_output_types(TrainingState)
        return (
            pbegin
            | "BeamML_CheckpointPath" >> beam.Create([path])
            | "BeamML_ReadCheckpoint" >> read
        )
