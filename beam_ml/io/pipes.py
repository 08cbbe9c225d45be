"""Reading a pipe (standard input) into blocks: ``ReadPipe``.

``cat x.csv | beam-ml train pca --input - --format csv ...`` feeds a pipeline from a
pipe. A pipe can be read once, by one process, from the start: it has no byte ranges
to hand to workers and no way to seek back. So the driver copies it, in 1 MiB chunks
(memory stays bounded however long the pipe is), to a *spill file*, and the pipeline
reads that file with :class:`~beam_ml.io.sources.ReadBlocks`: the same planning (header,
label column and feature count found from the first lines), the same vectorized parsers,
byte-range splits read in parallel, and the same dead letters. Byte offsets and line
numbers of bad records are those of the pipe, because the spill file is a byte-exact
copy; their ``file`` is ``'<stdin>'`` (or the ``name`` given).

The copy happens at construction, which returns after the pipe's end (EOF): this is the
bounded case. An endless pipe (``tail -F log.csv``) needs a streaming source that groups
records into blocks by size and time; that is not what this transform does.

Examples
--------
>>> import io
>>> read = ReadPipe("csv", stream=io.BytesIO(b"a,b\\n1,2\\n3,4\\n"))
>>> read.n_features
2
"""

from __future__ import annotations

import atexit
import logging
import os
import re
import shutil
import sys
import tempfile
import uuid
from typing import Any, BinaryIO

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from beam_ml.core.errors import BadInputError
from beam_ml.io.dead_letters import Reader
from beam_ml.io.sources import FORMATS, ReadBlocks

__all__ = ["ReadPipe", "temp_dir"]

_COPY_CHUNK = 1 << 20
_log = logging.getLogger("beam_ml.io")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: it exists, as another user's
        return True
    return True


def sweep_temp_dirs(kind: str) -> list[str]:
    """Remove the folders :func:`temp_dir` made for ``kind`` in processes that are gone
    (a ``kill -9`` skips every clean-up); returns their paths. Only this user's."""
    root = tempfile.gettempdir()
    pattern = re.compile(rf"beam_ml_{re.escape(kind)}_pid(\d+)_")
    removed = []
    try:
        names = os.listdir(root)
    except OSError:
        return removed
    for name in names:
        match = pattern.match(name)
        if not match or int(match.group(1)) == os.getpid() or _alive(int(match.group(1))):
            continue
        path = os.path.join(root, name)
        try:
            if not os.path.isdir(path) or os.lstat(path).st_uid != os.getuid():
                continue
        except OSError:
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    if removed:
        _log.debug("removed the temporary folders of ended runs: %s", removed)
    return removed


def temp_dir(kind: str) -> str:
    """A new local temporary folder ``beam_ml_<kind>_pid<pid>_*`` (spill files of
    pipes, Kafka and Pub/Sub records, dead letters of a cycle), after removing those a
    process that no longer runs left behind. Its owner removes it when done; the pid in
    its name lets the next run remove it when the owner was killed."""
    sweep_temp_dirs(kind)
    return tempfile.mkdtemp(prefix=f"beam_ml_{kind}_pid{os.getpid()}_")


def pipeline_in(folder: str, options: Any) -> beam.Pipeline:
    """A Beam pipeline whose own local folder (``beam-pipeline-temp*``, made when it is
    built and removed at the end of ``run``) goes inside ``folder``, a :func:`temp_dir`:
    when a ``kill -9`` skips Beam's clean-up, the next run's sweep removes it too."""
    saved, tempfile.tempdir = tempfile.tempdir, folder
    try:
        return beam.Pipeline(options=options)
    finally:
        tempfile.tempdir = saved


def _spill(stream: BinaryIO, spill_dir: str | None, format: str) -> tuple[str, int]:
    """Copy ``stream`` to a new file in ``spill_dir`` (a local temporary folder, removed
    when this process exits, if None); returns (path, bytes copied)."""
    if spill_dir is None:
        spill_dir = temp_dir("pipe")
        atexit.register(shutil.rmtree, spill_dir, ignore_errors=True)
    # The extension tells ReadBlocks the data is not compressed (a '.gz' name would not).
    path = FileSystems.join(spill_dir, f"pipe-{uuid.uuid4().hex[:12]}.{format}")
    copied = 0
    with FileSystems.create(path, compression_type=CompressionTypes.UNCOMPRESSED) as out:
        while chunk := stream.read(_COPY_CHUNK):
            out.write(chunk)
            copied += len(chunk)
    return path, copied


def _rename_source(record: dict[str, Any], name: str) -> dict[str, Any]:
    return {**record, "file": name}


class ReadPipe(Reader):
    """Read a pipe (by default standard input) into a PCollection of blocks.

    Parameters
    ----------
    format : {'csv', 'libsvm', 'jsonl', 'npy', 'parquet'}
        The record format, as for :class:`~beam_ml.io.sources.ReadBlocks`.
    stream : binary file object, optional
        What to read, up to its end; default ``sys.stdin.buffer``.
    spill_dir : str, optional
        Folder of the spill file (any Beam file system: a ``gs://`` folder lets remote
        workers read it). Default: a local temporary folder deleted when the process
        exits (after a ``kill -9``, by the next run that reads a pipe), which suits
        the DirectRunner.
    name : str, default '<stdin>'
        What bad records name as their ``file``.
    **options
        ``label_column``, ``header``, ``delimiter``, ``feature_dim``, ``zero_based``,
        ``block_size``, ``split_bytes``, ``strict``, ``features_key``: as for
        :class:`~beam_ml.io.sources.ReadBlocks`.

    Attributes
    ----------
    n_features : int or None
        Feature columns per row, found from the first records; None if the pipe was
        empty.
    spill_path : str
        The copy of the pipe the pipeline reads.
    n_bytes : int
        Bytes read from the pipe.

    Raises
    ------
    BadInputError
        At construction, for the reasons ``ReadBlocks`` gives (unknown format, a label
        column that is not in the header, ...).

    Notes
    -----
    Construction blocks until the pipe ends; memory is one 1 MiB chunk, disk the size of
    the input. Pipeline shape and counters are those of ``ReadBlocks``.
    """

    def __init__(
        self,
        format: str,
        *,
        stream: BinaryIO | None = None,
        spill_dir: str | None = None,
        name: str = "<stdin>",
        **options: Any,
    ):
        super().__init__()
        if format not in FORMATS:
            raise BadInputError(
                f"The 'format' parameter of ReadPipe must be one of {list(FORMATS)}. "
                f"Got {format!r} instead."
            )
        if stream is None:
            stream = sys.stdin.buffer
        self.spill_path, self.n_bytes = _spill(stream, spill_dir, format)
        self._name = name
        _log.info("read %d bytes from %s into %s", self.n_bytes, name, self.spill_path)
        self._inner = ReadBlocks(self.spill_path, format, **options)

    @property
    def n_features(self) -> int | None:
        return self._inner.n_features

    @property
    def strict(self) -> bool:
        return self._inner.strict

    def expand(self, pbegin: beam.pvalue.PBegin) -> Any:
        if not self._with_dead_letters:
            return pbegin | "ReadSpill" >> self._inner
        # dead letters: bad-record dicts whose ``file`` is the pipe's ``name``
        blocks, dead = pbegin | "ReadSpill" >> self._inner.with_dead_letters()
        return blocks, dead | "NameSource" >> beam.Map(_rename_source, self._name)
