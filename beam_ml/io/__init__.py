"""Input and output. Reading data into blocks: ``ReadBlocks`` (Beam) and
``read_blocks_local`` (no Beam).

Readers emit :class:`~beam_ml.core.block.Block` objects of about ``block_size`` rows
straight from file splits (DESIGN.md §2). The formats are a registry,
:mod:`beam_ml.io.formats` (one module per format, ``formats.get(name)``); the Beam
wiring of files is in :mod:`beam_ml.io.sources`, reading ranges in parallel (files and
SQL) in :mod:`beam_ml.io.ranges`, bad records and the reader base (``Reader``, with
``with_dead_letters()``) in :mod:`beam_ml.io.dead_letters`. Checkpoints and ordered
output files are in :mod:`beam_ml.io.checkpoints` and :mod:`beam_ml.io.sinks`.
Row-at-a-time sources, imported from their modules: :mod:`beam_ml.io.pipes` (standard
input), :mod:`beam_ml.io.sql` (query results through SQLAlchemy), :mod:`beam_ml.io.kafka`
(Kafka topics through kafka-python), :mod:`beam_ml.io.pubsub` (Pub/Sub subscriptions
through Beam's ``ReadFromPubSub`` and google-cloud-pubsub); both decode one row per
record with :mod:`beam_ml.io.records`.

The names below come from :mod:`beam_ml.io.sources` on first use (PEP 562): importing a
module of this package, e.g. :mod:`beam_ml.io.checkpoints` to read a checkpoint, does not
import Apache Beam.
"""

from __future__ import annotations

from typing import Any

from beam_ml._exports import export

__all__ = [
    "DEAD_LETTERS",
    "FORMATS",
    "METRICS_NAMESPACE",
    "ReadBlocks",
    "read_blocks_local",
]
_WHERE = dict.fromkeys(__all__, "beam_ml.io.sources")


def __getattr__(name: str) -> Any:
    return export(globals(), _WHERE, name)


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
