"""Writing model outputs: one CSV line per input row, in input order."""

from __future__ import annotations

import hashlib
import io
import uuid
from typing import Any

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

__all__ = ["WriteRowsInOrder", "format_rows"]


def format_rows(outputs: np.ndarray) -> bytes:
    """CSV text of a (rows, columns) array; integers stay integers."""
    outputs = np.asarray(outputs)
    if outputs.ndim == 1:
        outputs = outputs[:, None]
    buffer = io.BytesIO()
    fmt = "%d" if outputs.dtype.kind in "iub" else "%.9g"
    np.savetxt(buffer, outputs, fmt=fmt, delimiter=",")
    return buffer.getvalue()


class WriteRowsInOrder(beam.PTransform):
    """``(origin, outputs)`` pairs in; one CSV file at ``path`` out, ordered by origin.

    Blocks are processed in any order on any worker, so each writes its rows to a part
    file; a last step concatenates the parts in (source, offset) order and deletes them.
    Memory is one block at a time; the list of part names is the only thing gathered.
    """

    def __init__(self, path: str):
        super().__init__()
        self.path = path

    def expand(self, pairs):
        parts_dir = f"{self.path}.parts-{uuid.uuid4().hex[:8]}"
        return (
            pairs
            | "BeamML_WritePart" >> beam.Map(_write_part, parts_dir)
            | "BeamML_PartNames" >> beam.combiners.ToList()
            | "BeamML_Concatenate" >> beam.Map(_concatenate, self.path, parts_dir)
        )


def _write_part(pair: tuple[Any, np.ndarray], parts_dir: str) -> tuple[Any, str]:
    origin, outputs = pair
    name = hashlib.sha1(repr(origin).encode()).hexdigest()[:20] + ".csv"
    part = FileSystems.join(parts_dir, name)
    with FileSystems.create(part, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
        handle.write(format_rows(outputs))
    return origin, part


def _concatenate(parts: list[tuple[Any, str]], path: str, parts_dir: str) -> str:
    temporary = f"{path}.{uuid.uuid4().hex[:8]}.tmp"
    with FileSystems.create(temporary, compression_type=CompressionTypes.UNCOMPRESSED) as out:
        for _, part in sorted(parts, key=lambda p: p[0]):
            with FileSystems.open(part, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
                while chunk := handle.read(1 << 22):
                    out.write(chunk)
    FileSystems.rename([temporary], [path])
    if parts:
        FileSystems.delete([part for _, part in parts])
    if FileSystems.exists(parts_dir):
        FileSystems.delete([parts_dir])
    return path
