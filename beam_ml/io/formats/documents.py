"""The documents kind of block: many texts, what the vocabulary stage takes.

A :class:`DocumentBlock` holds its texts as one Arrow string array, so tokenizing and
counting run over the whole block in Arrow's C++ kernels (no Python loop over
documents); the ``text`` formats (:mod:`beam_ml.io.formats.text`) read files into
them, and a vocabulary model (:mod:`beam_ml.algorithms.vocabulary`) turns them into
CSR rows of word counts for the bag-of-words algorithms.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from beam_ml.core.block import BlockKind, InputSpec
from beam_ml.core.errors import BadInputError

__all__ = ["DocumentBlock", "DocumentSpec"]


@dataclass(frozen=True, eq=False)
class DocumentBlock(BlockKind):
    """The documents kind: one text per unit.

    Parameters
    ----------
    texts : pyarrow.StringArray or LargeStringArray
        The documents, without nulls.
    origin : (str, int), optional
        The file and byte offset of the first document.
    """

    texts: Any
    origin: tuple[str, int] | None = None

    @classmethod
    def from_texts(
        cls, texts: Sequence[str], origin: tuple[str, int] | None = None
    ) -> DocumentBlock:
        return cls(pa.array(texts, type=pa.string()), origin)

    @property
    def n_rows(self) -> int:
        return len(self.texts)

    def to_list(self) -> list[str]:
        return self.texts.to_pylist()

    @classmethod
    def concat(cls, blocks: Sequence[DocumentBlock]) -> DocumentBlock:
        if not blocks:
            raise ValueError("DocumentBlock.concat needs at least one block.")
        if len(blocks) == 1:
            return blocks[0]
        kinds = {b.texts.type for b in blocks}
        texts = [b.texts.cast(pa.large_string()) if len(kinds) > 1 else b.texts for b in blocks]
        return DocumentBlock(pa.concat_arrays(texts), blocks[0].origin)

    def slice(self, start: int, stop: int) -> DocumentBlock:
        start, stop, _ = slice(start, stop).indices(self.n_rows)
        stop = max(start, stop)
        return DocumentBlock(self.texts.slice(start, stop - start), self._sliced_origin(start))

    @classmethod
    def validate(
        cls, data: Any, *, owner: str = "beam_ml", spec: InputSpec | None = None
    ) -> DocumentBlock:
        """``data`` (a DocumentBlock, or a sequence or 1-D array of str) as a checked
        DocumentBlock, or a :class:`BadInputError` naming the owner and the document."""
        block = data if isinstance(data, DocumentBlock) else None
        note = "" if block is None else block.origin_note()
        if block is None:
            if isinstance(data, np.ndarray) and data.ndim != 1:
                raise BadInputError(
                    f"{owner} expects documents (a 1-D sequence of str); got an array of "
                    f"shape {data.shape}."
                )
            if isinstance(data, (str, bytes)) or not isinstance(
                data, (Sequence, np.ndarray, pa.Array)
            ):
                raise BadInputError(
                    f"{owner} expects documents (a DocumentBlock or a sequence of str); "
                    f"got a {type(data).__name__}."
                )
            for i, text in enumerate(data.to_pylist() if isinstance(data, pa.Array) else data):
                if text is not None and not isinstance(text, str):
                    raise BadInputError(
                        f"{owner} expects documents (str); document {i} is a {type(text).__name__}."
                    )
            block = cls(pa.array(list(data), type=pa.string()))
        if not pa.types.is_string(block.texts.type) and not pa.types.is_large_string(
            block.texts.type
        ):
            raise BadInputError(
                f"{owner} expects documents as Arrow strings; the block holds "
                f"{block.texts.type}.{note}"
            )
        if block.texts.null_count:
            i = int(np.flatnonzero(pc.is_null(block.texts).to_numpy(zero_copy_only=False))[0])
            raise BadInputError(f"{owner} expects text; document {i} is missing (None).{note}")
        return block


@dataclass(frozen=True)
class DocumentSpec(InputSpec):
    """Documents: nothing to match but the kind."""

    KIND: ClassVar[type[BlockKind]] = DocumentBlock

    def mismatch(self, other: InputSpec) -> str:
        return f"with inputs {self} and {other}"

    def probe(self) -> DocumentBlock:
        return DocumentBlock.from_texts([""])
