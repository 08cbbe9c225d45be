"""Input and output. Reading data into blocks: ``ReadBlocks`` (Beam) and
``read_blocks_local`` (no Beam).

Readers emit :class:`~beam_ml.core.block.Block` objects of about ``block_size`` rows
straight from file splits (DESIGN.md §2); the format parsers live in
:mod:`beam_ml.io.formats`, the Beam wiring in :mod:`beam_ml.io.sources`. Checkpoints
and ordered output files are in :mod:`beam_ml.io.checkpoints` and :mod:`beam_ml.io.sinks`.
"""

from __future__ import annotations

from beam_ml.io.sources import (
    DEAD_LETTERS,
    FORMATS,
    METRICS_NAMESPACE,
    ReadBlocks,
    read_blocks_local,
)

__all__ = [
    "DEAD_LETTERS",
    "FORMATS",
    "METRICS_NAMESPACE",
    "ReadBlocks",
    "read_blocks_local",
]
