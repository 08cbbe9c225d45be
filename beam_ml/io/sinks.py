"""Writing model outputs: one CSV line per input record, in input order."""

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
    Memory is one block at a time; the list of part names (and of the set-aside
    records' places) is the only thing gathered.

    Parameters
    ----------
    path : str
        The CSV file to write.
    header : str, optional
        A first line naming the output columns (without its newline).
    set_aside : PCollection of dict, optional
        The reader's dead letters (``file``, ``offset``): each becomes an *empty line*
        where its record was, so that line i of the output is record i of the input.
    text_format : {'csv', 'libsvm', 'jsonl'}, optional
        Set when origins and dead letters' offsets are byte offsets in text files (the
        file readers'): the records between a block's first line and a set-aside one
        are then counted in the file (only for blocks that have set-aside records
        among their rows). Otherwise offsets count records (``.npy``/Parquet rows,
        Kafka offsets).
    sources : dict, optional
        ``{dead letters' file: the file the blocks' origins name}`` where the two
        differ (``ReadPipe``: ``'<stdin>'`` and its spill file).
    row_format : callable, optional
        ``outputs -> bytes`` of one line per row (default: CSV, :func:`format_rows`;
        :func:`beam_ml.io.sagemaker.row_formatter` gives SageMaker's JSON lines).
    """

    def __init__(
        self,
        path: str,
        header: str | None = None,
        set_aside: Any = None,
        text_format: str | None = None,
        sources: dict[str, str] | None = None,
        row_format: Any = None,
    ):
        super().__init__()
        self.row_format = row_format or format_rows
        self.path, self.header, self.set_aside = path, header, set_aside
        self.text_format, self.sources = text_format, dict(sources or {})

    def expand(self, pairs):
        parts_dir = f"{self.path}.parts-{uuid.uuid4().hex[:8]}"
        holes: Any = ()
        if self.set_aside is not None:
            sources = self.sources
            holes = beam.pvalue.AsSingleton(
                self.set_aside
                | "BeamML_SetAsidePlaces"
                >> beam.Map(lambda r: (sources.get(r["file"], r["file"]), r["offset"]))
                | "BeamML_SetAsideList" >> beam.combiners.ToList()
            )
        return (
            pairs
            | "BeamML_WritePart" >> beam.Map(_write_part, parts_dir, self.row_format)
            | "BeamML_PartNames" >> beam.combiners.ToList()
            | "BeamML_Concatenate"
            >> beam.Map(
                _concatenate,
                self.path,
                parts_dir,
                header=self.header,
                holes=holes,
                text_format=self.text_format,
            )
        )


def _write_part(
    pair: tuple[Any, np.ndarray], parts_dir: str, row_format: Any = format_rows
) -> tuple[Any, str, int]:
    origin, outputs = pair
    name = hashlib.sha1(repr(origin).encode()).hexdigest()[:20] + ".csv"
    part = FileSystems.join(parts_dir, name)
    with FileSystems.create(part, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
        handle.write(row_format(outputs))
    return origin, part, len(outputs)


class _Inputs:
    """The input file being read by the concatenation, kept open from block to block:
    blocks come in offset order, so a compressed file is decompressed once, forward."""

    def __init__(self) -> None:
        self.path: str | None = None
        self.handle: Any = None

    def read(self, path: str, start: int, size: int) -> bytes:
        if path != self.path or self.handle.tell() > start:
            self.close()
            self.path, self.handle = path, FileSystems.open(path)  # decompressed by extension
        self.handle.seek(start)
        return self.handle.read(size)

    def close(self) -> None:
        if self.handle is not None:
            self.handle.close()
        self.path = self.handle = None


def _records_before(
    origin: tuple[str, int], offsets: list[int], text_format: str | None, inputs: _Inputs
) -> list[int]:
    """For each set-aside record at ``offsets`` (sorted, >= the block's origin), how many
    records of its file lie between the block's first record and it."""
    if text_format is None:  # offsets count records
        return [offset - origin[1] for offset in offsets]
    from beam_ml.io.formats import count_records

    data = inputs.read(origin[0], origin[1], offsets[-1] - origin[1])
    counts, total, start = [], 0, 0
    for offset in offsets:
        end = offset - origin[1]
        total += count_records(data[start:end], text_format)
        counts.append(total)
        start = end
    return counts


def _interleave(out: Any, part: str, n_rows: int, before: list[int]) -> None:
    """The part's rows with an empty line for each set-aside record, ``before[k]``
    records (rows and set-aside ones) after the block's first."""
    with FileSystems.open(part, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
        lines = handle.read().splitlines(keepends=True)
    written = 0
    for k, records in enumerate(before):
        rows = min(max(records - k, written), n_rows)  # rows before this record
        out.write(b"".join(lines[written:rows]) + b"\n")
        written = rows
    out.write(b"".join(lines[written:]))


def _concatenate(
    parts: list[tuple[Any, str, int]],
    path: str,
    parts_dir: str,
    header: str | None = None,
    holes: Any = (),
    text_format: str | None = None,
) -> str:
    temporary = f"{path}.{uuid.uuid4().hex[:8]}.tmp"
    blocks = sorted(parts, key=lambda p: p[0])
    places = sorted(holes)
    h, inputs = 0, _Inputs()
    with FileSystems.create(temporary, compression_type=CompressionTypes.UNCOMPRESSED) as out:
        if header is not None:
            out.write(header.encode() + b"\n")
        for i, (origin, part, n_rows) in enumerate(blocks):
            while h < len(places) and places[h] < origin:  # before this block's rows
                out.write(b"\n")
                h += 1
            following = blocks[i + 1][0] if i + 1 < len(blocks) else None
            mine = []  # set aside among (or right after) this block's rows, in its file
            while (
                h < len(places)
                and places[h][0] == origin[0]
                and (following is None or places[h] < following)
            ):
                mine.append(places[h][1])
                h += 1
            if mine:
                before = _records_before(origin, mine, text_format, inputs)
                _interleave(out, part, n_rows, before)
                continue
            with FileSystems.open(part, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
                while chunk := handle.read(1 << 22):
                    out.write(chunk)
        out.write(b"\n" * (len(places) - h))
    inputs.close()
    FileSystems.rename([temporary], [path])
    if parts:
        FileSystems.delete([part for _, part, _ in parts])
    if FileSystems.exists(parts_dir):
        FileSystems.delete([parts_dir])
    return path
