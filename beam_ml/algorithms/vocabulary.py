"""The vocabulary of a raw-text corpus in one mergeable pass: a heavy-hitters sketch
of word counts with bounded memory and a stated error, the first stage of a
bag-of-words algorithm on text (NTM).

The state tokenizes each :class:`~beam_ml.io.formats.documents.DocumentBlock` with
Arrow's C++ kernels (lower-casing, a token pattern, a minimum length, stop words),
counts the block's words exactly (``value_counts``), and folds the counts into a
Misra–Gries summary of at most ``sketch_size`` words (Misra & Gries 1982; the mergeable
form of Agarwal et al., "Mergeable Summaries", PODS 2012):

* merge: add the counters of both sides word by word; if more than k = ``sketch_size``
  remain, subtract the (k+1)-th largest count from all and drop those left at zero or
  below. A block's exact counts are a summary with no error, so ``update`` is a merge.
* error: the subtracted amounts add up to ``error``; for every word w with true count
  f(w) the kept count c(w) (0 if not kept) satisfies ``c(w) <= f(w) <= c(w) + error``,
  and ``error <= (n_tokens - sum(c)) / (k + 1) <= n_tokens / (k + 1)``. So every word
  seen more than n/(k+1) times is kept, and counts, hence ranks, are off by at most
  ``error``. Merging is exact up to this bound, which tests assert.
* memory: at most k words of at most ``max_token_bytes`` bytes and k counts, whatever
  the number of documents; the serialized payload has that fixed size.

Why not DataSketches' frequent-items sketch (PyPI ``datasketches``): it is the same
Misra–Gries family with the same bound, but its Python API updates one item per call
(a Python loop over every token), while here a block is tokenized and counted in bulk
and merged with one Arrow ``group_by``; and its own serialization would be a second
format beside the house's versioned, pickle-free payloads. Words are kept as strings
throughout (Arrow arrays), so no hash collisions either.

``derive(max_vocabulary=..., min_count=...)`` gives a :class:`VocabularyModel`: the
top words by count, whose ``encode`` maps documents to CSR rows of word counts, the
input of the bag-of-words algorithms. :func:`load_vocabulary` and
:class:`EncodeDocuments` are the hooks a training command uses (``--vocabulary DIR``).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import scipy.sparse as sp

from beam_ml.core.block import Block
from beam_ml.core.constraints import Constraints, Interval, validate_parameters
from beam_ml.core.errors import BadInputError, IncompatibleStateError, NotEnoughDataError
from beam_ml.core.state import Model, TrainingState, register
from beam_ml.io.formats.documents import DocumentBlock, DocumentSpec

__all__ = [
    "EncodeDocuments",
    "VocabularyConfig",
    "VocabularyModel",
    "VocabularyState",
    "encode_documents",
    "load_vocabulary",
    "pack_words",
    "tokenize",
    "unpack_words",
    "vocabulary_of",
]

#: Unicode word characters (Python's ``\w``) in RE2 syntax: letters, digits, underscore.
WORD_PATTERN = r"[\p{L}\p{N}_]+"
# Tokens of any pattern are found with one regex replace: a token is kept and followed by
# a NUL, any other character becomes a NUL; splitting on NUL then gives the tokens in
# order. (A pattern that is a run of one character class splits on its complement.)
_SEPARATOR = "\x00"


@dataclass(frozen=True)
class VocabularyConfig:
    """What must match for two vocabulary states to merge: the sketch and the tokenizer.

    Parameters
    ----------
    sketch_size : int, default 50000
        Words the Misra–Gries sketch keeps (k): counts are off by at most n/(k+1) for n
        tokens; memory is k words whatever the corpus size.
    lowercase : bool, default True
        Lower-case the text before tokenizing (Unicode-aware).
    token_pattern : str, default '[\\p{L}\\p{N}_]+'
        RE2 regular expression a token matches, found left to right as Python's
        ``re.findall`` would (the default: runs of Unicode word characters).
    min_length : int, default 2
        Shortest token kept, in characters (scikit-learn's default tokenizer keeps 2+).
    max_token_bytes : int, default 40
        Longest token kept, in UTF-8 bytes (longer ones, such as URLs or encoded data,
        are not words; the bound also fixes the state's size).
    stop_words : str, default ''
        Comma-separated words that are not counted (compared after lower-casing).
    """

    sketch_size: int = 50_000
    lowercase: bool = True
    token_pattern: str = WORD_PATTERN
    min_length: int = 2
    max_token_bytes: int = 40
    stop_words: str = ""

    PARAMETER_CONSTRAINTS: ClassVar[Constraints] = {
        "sketch_size": [Interval(int, 1, 10_000_000)],
        "lowercase": [bool],
        "token_pattern": [str],
        "min_length": [Interval(int, 1, None)],
        "max_token_bytes": [Interval(int, 1, 1024)],
        "stop_words": [str],
    }

    def __post_init__(self) -> None:
        validate_parameters(self)
        try:
            pc.replace_substring_regex(pa.array(["a"]), pattern=self.token_pattern, replacement="")
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise ValueError(
                "The 'token_pattern' parameter of VocabularyConfig must be an RE2 regular "
                f"expression. Got {self.token_pattern!r} instead ({exc})."
            ) from None

    @property
    def stop_word_list(self) -> list[str]:
        words = (w.strip() for w in self.stop_words.split(","))
        return [w.lower() if self.lowercase else w for w in words if w]


def _separator(pattern: str) -> str | None:
    """For a token pattern that is a run of one character class (``[...]+``), the
    pattern of what separates tokens (the complement's runs); None for other patterns."""
    match = re.fullmatch(r"\[(\^?)([^\[\]]+)\]\+", pattern)
    if match is None:
        return None
    negated, inner = match.groups()
    return f"[{inner}]+" if negated else f"[^{inner}]+"


def tokenize(texts: Any, config: VocabularyConfig) -> tuple[np.ndarray, pa.Array]:
    """The tokens of each document, in order, in bulk: (document index of each token,
    the tokens as an Arrow string array).

    ``texts`` is a :class:`DocumentBlock` or an Arrow string array. No Python loop
    over documents or tokens: lower-casing, the token regex, splitting and filtering
    are Arrow kernels.
    """
    texts = texts.texts if isinstance(texts, DocumentBlock) else texts
    if config.lowercase:
        texts = pc.utf8_lower(texts)
    separator = _separator(config.token_pattern)
    if separator is not None:  # runs of a character class: split on the rest (10x faster)
        pieces = pc.split_pattern_regex(texts, pattern=separator)
    else:
        marked = pc.replace_substring_regex(
            texts, pattern=f"({config.token_pattern})|(?s:.)", replacement=f"\\1{_SEPARATOR}"
        )
        pieces = pc.split_pattern(marked, pattern=_SEPARATOR)
    parent = pc.list_parent_indices(pieces).to_numpy(zero_copy_only=False)
    tokens = pc.list_flatten(pieces)
    keep = pc.and_(
        pc.greater_equal(pc.utf8_length(tokens), config.min_length),
        pc.less_equal(pc.binary_length(tokens), config.max_token_bytes),
    )
    stop = config.stop_word_list
    if stop:
        keep = pc.and_(keep, pc.invert(pc.is_in(tokens, value_set=pa.array(stop))))
    keep_np = keep.to_numpy(zero_copy_only=False)
    tokens = tokens.filter(keep).cast(pa.string())
    return parent[keep_np].astype(np.int64), tokens


def _canonical(words: pa.Array, counts: np.ndarray) -> tuple[pa.Array, np.ndarray]:
    """Words by count (descending), ties by word: one order whatever the merge order."""
    order = pc.sort_indices(
        pa.table({"w": words, "c": counts}), sort_keys=[("c", "descending"), ("w", "ascending")]
    )
    return words.take(order), counts[order.to_numpy()]


def _misra_gries(words: pa.Array, counts: np.ndarray, k: int) -> tuple[pa.Array, np.ndarray, int]:
    """Counters summed by word, reduced to at most ``k``: (words, counts, subtracted)."""
    if len(words):
        summed = pa.table({"w": words, "c": counts}).group_by("w").aggregate([("c", "sum")])
        words = summed.column("w").combine_chunks()
        counts = summed.column("c_sum").to_numpy().astype(np.int64)
    subtracted = 0
    if len(counts) > k:
        subtracted = int(np.partition(counts, len(counts) - k - 1)[len(counts) - k - 1])
        keep = counts > subtracted
        words, counts = words.filter(pa.array(keep)), counts[keep] - subtracted
    words, counts = _canonical(words.cast(pa.string()), counts)
    return words, counts, subtracted


@register
class VocabularyState(TrainingState):
    """A Misra–Gries sketch of word counts over documents (bounded, mergeable).

    Attributes
    ----------
    words : pyarrow.StringArray of length <= sketch_size
        The words kept, by count (descending), ties by word.
    counts : ndarray of shape (len(words),), int64
        Their kept counts: each at most the true count and at least it minus ``error``.
    error : int
        The most any count is under its true value (a word not kept was seen at most
        this often); at most ``(n_tokens - counts.sum()) / (sketch_size + 1)``.
    n_tokens : int
        Tokens counted.
    n_documents : int
        Documents seen (``n_seen``).
    """

    FAMILY = "vocabulary"
    SERIAL_VERSION = 1
    CONFIG = VocabularyConfig
    BLOCK_KIND = DocumentBlock

    def __init__(self, config: VocabularyConfig):
        super().__init__(config)
        self.words: pa.Array = pa.array([], type=pa.string())
        self.counts = np.zeros(0, dtype=np.int64)
        self.error = 0
        self.n_tokens = 0
        self.n_documents = 0

    @property
    def n_seen(self) -> int:
        return self.n_documents

    @property
    def input_spec(self) -> DocumentSpec:
        return DocumentSpec()

    @property
    def error_bound(self) -> float:
        """The stated bound on ``error``: n_tokens / (sketch_size + 1)."""
        return self.n_tokens / (self.config.sketch_size + 1)

    # --- training --------------------------------------------------------------------
    def update(self, block: Any) -> VocabularyState:
        block = self._check(block)
        if block.n_rows == 0:
            return self
        _, tokens = tokenize(block, self.config)
        found = pc.value_counts(tokens)
        words = pa.concat_arrays([self.words, found.field("values").cast(pa.string())])
        counts = np.concatenate([self.counts, found.field("counts").to_numpy().astype(np.int64)])
        self.words, self.counts, subtracted = _misra_gries(words, counts, self.config.sketch_size)
        self.error += subtracted
        self.n_tokens += len(tokens)
        self.n_documents += block.n_rows
        return self

    def merge(self, other: VocabularyState) -> VocabularyState:
        self.check_mergeable(other)
        merged = VocabularyState(self.config)
        words = pa.concat_arrays([self.words, other.words])
        counts = np.concatenate([self.counts, other.counts])
        merged.words, merged.counts, subtracted = _misra_gries(
            words, counts, self.config.sketch_size
        )
        merged.error = self.error + other.error + subtracted
        merged.n_tokens = self.n_tokens + other.n_tokens
        merged.n_documents = self.n_documents + other.n_documents
        return merged

    def count_of(self, words: list[str]) -> np.ndarray:
        """The kept counts of ``words`` (0 for a word not kept)."""
        at = pc.index_in(pa.array(words, type=pa.string()), value_set=self.words)
        at = at.to_numpy(zero_copy_only=False)
        found = ~np.isnan(at.astype(np.float64))
        out = np.zeros(len(words), dtype=np.int64)
        out[found] = self.counts[at[found].astype(np.int64)]
        return out

    # --- models ----------------------------------------------------------------------
    def derive(self, max_vocabulary: int = 10_000, min_count: int = 1) -> VocabularyModel:
        """The vocabulary: the ``max_vocabulary`` most counted words kept at least
        ``min_count`` times, by count (descending), ties by word.

        Parameters
        ----------
        max_vocabulary : int, default 10000
            Words in the vocabulary at most (NTM's ``feature_dim``); the sketch holds
            at most ``sketch_size``, so that caps it too.
        min_count : int, default 1
            Least kept count of a word in the vocabulary.

        Raises
        ------
        NotEnoughDataError
            No word was counted.
        """
        if (
            isinstance(max_vocabulary, bool)
            or not isinstance(max_vocabulary, int)
            or (max_vocabulary < 1)
        ):
            raise ValueError(
                "The 'max_vocabulary' parameter of vocabulary.derive must be an int >= 1. "
                f"Got {max_vocabulary!r} instead."
            )
        if isinstance(min_count, bool) or not isinstance(min_count, int) or min_count < 1:
            raise ValueError(
                "The 'min_count' parameter of vocabulary.derive must be an int >= 1. "
                f"Got {min_count!r} instead."
            )
        if not len(self.words):
            raise NotEnoughDataError("The vocabulary state has counted no word yet.")
        take = min(max_vocabulary, int(np.count_nonzero(self.counts >= min_count)))
        if take == 0:
            raise NotEnoughDataError(f"No word was kept at least min_count={min_count} times.")
        counts = self.counts[:take]
        # A word is surely among the true top `take` when its count beats, by more than
        # the error, the best count left out (a word not kept was seen <= error times).
        outside = int(self.counts[take]) if take < len(self.counts) else 0
        certain = int(np.count_nonzero(counts > outside + self.error))
        return VocabularyModel(
            self.config,
            self.words.slice(0, take),
            counts.copy(),
            error=self.error,
            n_certain=certain,
            n_tokens=self.n_tokens,
            n_seen=self.n_documents,
        )

    # --- serialization ---------------------------------------------------------------
    def _payload(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        meta = {"n_tokens": int(self.n_tokens), "error": int(self.error)}
        return meta, _word_arrays(self.words, self.counts, self.config)

    @classmethod
    def _from_payload(
        cls, config: VocabularyConfig, meta: dict[str, Any], arrays: dict[str, np.ndarray]
    ) -> VocabularyState:
        state = cls(config)
        state.words, state.counts = _words_from_arrays(arrays, config)
        state.n_tokens, state.error = int(meta["n_tokens"]), int(meta["error"])
        state.n_documents = int(meta["n_seen"])
        return state


def _word_arrays(words: pa.Array, counts: np.ndarray, config: VocabularyConfig) -> dict:
    """Words and counts in arrays of a fixed size (``sketch_size`` words of at most
    ``max_token_bytes``): the payload is as large for one document as for a billion."""
    k, width = config.sketch_size, config.max_token_bytes
    n = len(words)
    text = np.zeros(k * width, dtype=np.uint8)
    ends = np.zeros(k, dtype=np.int64)
    if n:
        offsets = np.frombuffer(words.buffers()[1], dtype=np.int32)[words.offset :][: n + 1]
        data = np.frombuffer(words.buffers()[2], dtype=np.uint8)
        start, used = int(offsets[0]), int(offsets[-1] - offsets[0])
        text[:used] = data[start : start + used]
        ends[:] = used
        ends[:n] = offsets[1:] - start
    padded = np.zeros(k, dtype=np.int64)
    padded[:n] = counts
    return {"word_bytes": text, "word_ends": ends, "counts": padded, "n_words": np.array([n])}


def _words_from_arrays(
    arrays: dict[str, np.ndarray], config: VocabularyConfig
) -> tuple[pa.Array, np.ndarray]:
    k, width = config.sketch_size, config.max_token_bytes
    text, ends, counts = arrays["word_bytes"], arrays["word_ends"], arrays["counts"]
    n = int(arrays["n_words"][0])
    if (
        text.shape != (k * width,)
        or ends.shape != (k,)
        or counts.shape != (k,)
        or not (0 <= n <= k)
    ):
        raise IncompatibleStateError(
            f"vocabulary state arrays do not fit its config (sketch_size={k}, "
            f"max_token_bytes={width})."
        )
    words = unpack_words({"word_bytes": text, "word_ends": ends[:n]})
    return words, counts[:n].astype(np.int64)


class VocabularyModel(Model):
    """A vocabulary: words in order (column j of an encoded row is ``words[j]``).

    Attributes
    ----------
    words : list of str
        The words, by count (descending), ties by word.
    counts : ndarray of shape (len(words),), int64
        Their counts in the training text, each at most ``error`` under the truth.
    error : int
        The sketch's bound on how far any count (and so any rank) is off.
    n_certain : int
        How many of the first words are surely among the true top ``len(words)``.
    n_tokens : int
        Tokens counted in training.
    """

    FAMILY = "vocabulary"
    SERIAL_VERSION = 1
    METRICS = ("coverage", "n_rows")

    def __init__(
        self,
        config: VocabularyConfig,
        words: pa.Array,
        counts: np.ndarray,
        *,
        error: int,
        n_certain: int,
        n_tokens: int,
        n_seen: int,
    ):
        self.config = config
        self._words = words.cast(pa.string())
        self.counts = counts
        self.error, self.n_certain = error, n_certain
        self.n_tokens, self.n_seen = n_tokens, n_seen

    @property
    def words(self) -> list[str]:
        return self._words.to_pylist()

    def __len__(self) -> int:
        return len(self._words)

    @property
    def input_spec(self) -> DocumentSpec:
        return DocumentSpec()

    @property
    def n_features(self) -> int:
        """Columns of an encoded row: the vocabulary's size."""
        return len(self._words)

    def encode(self, texts: Any) -> Block:
        """Documents -> a :class:`Block` of CSR rows of word counts (float32), one row
        per document, ``len(words)`` columns; words outside the vocabulary are not
        counted. ``texts``: a DocumentBlock or a sequence of str; the block's origin
        is kept."""
        block = DocumentBlock.validate(texts, owner="VocabularyModel")
        doc, tokens = tokenize(block, self.config)
        column = pc.index_in(tokens, value_set=self._words)
        known = pc.is_valid(column).to_numpy(zero_copy_only=False)
        column = column.filter(pc.is_valid(column)).to_numpy().astype(np.int32)
        features = sp.csr_matrix(
            (np.ones(len(column), dtype=np.float32), (doc[known], column)),
            shape=(block.n_rows, len(self._words)),
        )
        features.sum_duplicates()
        return Block(features, None, block.origin)

    def evaluate(self, block: Any) -> np.ndarray:
        """Per document: its tokens and those in the vocabulary; shape (n_docs, 2)."""
        block = self._check(block)
        doc, tokens = tokenize(block, self.config)
        known = pc.is_in(tokens, value_set=self._words).to_numpy(zero_copy_only=False)
        total = np.bincount(doc, minlength=block.n_rows)
        covered = np.bincount(doc[known], minlength=block.n_rows)
        return np.column_stack([total, covered]).astype(np.float64)

    def metric_sums(self, block: Any) -> dict[str, float]:
        out = self.evaluate(block)
        return {
            "n_rows": float(len(out)),
            "n_tokens": float(out[:, 0].sum()),
            "n_covered": float(out[:, 1].sum()),
        }

    def metrics_from_sums(self, sums: dict[str, float]) -> dict[str, float]:
        """``coverage``: the share of tokens that are vocabulary words."""
        n = sums.get("n_tokens", 0.0)
        return {
            "n_rows": sums.get("n_rows", 0.0),
            "coverage": sums["n_covered"] / n if n else math.nan,
        }

    def describe(self) -> dict[str, Any]:
        return {
            "n_words": len(self),
            "n_certain": self.n_certain,
            "count_error": self.error,
            "n_tokens": self.n_tokens,
            "n_documents": self.n_seen,
            "top_words": self._words.slice(0, 20).to_pylist(),
        }

    def _payload(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        from beam_ml.core.state import config_to_dict

        meta = {
            "config": config_to_dict(self.config),
            "error": int(self.error),
            "n_certain": int(self.n_certain),
            "n_tokens": int(self.n_tokens),
            "n_seen": int(self.n_seen),
        }
        return meta, {**pack_words(self._words), "counts": self.counts}

    @classmethod
    def _from_payload(cls, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> VocabularyModel:
        from beam_ml.core.state import config_from_dict

        config = config_from_dict(VocabularyConfig, meta["config"])
        words, counts = unpack_words(arrays), arrays["counts"].astype(np.int64)
        if len(counts) != len(words):
            raise IncompatibleStateError(
                f"vocabulary model of {len(words)} words has {len(counts)} counts."
            )
        return cls(
            config,
            words,
            counts,
            error=int(meta["error"]),
            n_certain=int(meta["n_certain"]),
            n_tokens=int(meta["n_tokens"]),
            n_seen=int(meta["n_seen"]),
        )

    def __repr__(self) -> str:
        return f"VocabularyModel(n_words={len(self)}, error={self.error})"


VocabularyState.MODEL = VocabularyModel


# --- the hooks of a bag-of-words training on raw text ---------------------------------------
def pack_words(words: Any) -> dict[str, np.ndarray]:
    """Words (a list of str or an Arrow string array) as the numeric arrays a payload
    stores: ``word_bytes`` (their UTF-8 bytes end to end, uint8) and ``word_ends``
    (where each ends, int64). A model that carries its vocabulary (NTM) stores these."""
    words = pa.array(words, type=pa.string()) if not isinstance(words, pa.Array) else words
    words = words.cast(pa.string())
    lengths = pc.binary_length(words).to_numpy(zero_copy_only=False).astype(np.int64)
    joined = pc.binary_join(pa.array([words], type=pa.list_(pa.string())), "")[0].as_py()
    text = np.frombuffer((joined or "").encode(), dtype=np.uint8).copy()
    return {"word_bytes": text, "word_ends": np.cumsum(lengths)}


def unpack_words(arrays: dict[str, np.ndarray]) -> pa.Array:
    """The words :func:`pack_words` stored, as an Arrow string array (checked)."""
    text, ends = arrays["word_bytes"], arrays["word_ends"]
    bounds = np.concatenate([[0], ends]).astype(np.int64)
    if (np.diff(bounds) < 0).any() or bounds[-1] > len(text):
        raise IncompatibleStateError("the stored words' offsets are damaged.")
    words = pa.Array.from_buffers(
        pa.large_string(),
        len(ends),
        [None, pa.py_buffer(bounds.tobytes()), pa.py_buffer(text.astype(np.uint8).tobytes())],
    )
    try:
        words.validate(full=True)
    except pa.ArrowInvalid as exc:
        raise IncompatibleStateError(f"the stored words are not UTF-8: {exc}") from None
    return words.cast(pa.string())


def vocabulary_of(words: Any, config: VocabularyConfig | None = None) -> VocabularyModel:
    """A vocabulary model of given ``words`` (in column order), tokenizing as ``config``
    (default: :class:`VocabularyConfig`'s): how a model that stored its words encodes
    raw text again."""
    words = pa.array(words, type=pa.string()) if not isinstance(words, pa.Array) else words
    n = len(words)
    return VocabularyModel(
        config or VocabularyConfig(),
        words,
        np.zeros(n, dtype=np.int64),
        error=0,
        n_certain=0,
        n_tokens=0,
        n_seen=0,
    )


def load_vocabulary(path: str) -> VocabularyModel:
    """The vocabulary at ``path``: a derived vocabulary model (``beam-ml derive``), or a
    vocabulary state checkpoint (``beam-ml train vocabulary``), derived with the
    defaults it was trained with."""
    from beam_ml.io.checkpoints import read_checkpoint

    found, manifest = read_checkpoint(path)
    if isinstance(found, VocabularyState):
        return found.derive(**manifest.get("extra", {}).get("derive_defaults", {}))
    if not isinstance(found, VocabularyModel):
        raise BadInputError(
            f"{path} holds a {found.FAMILY} {'state' if isinstance(found, TrainingState) else 'model'}, "
            "not a vocabulary (train one with: beam-ml train vocabulary --format text ...)."
        )
    return found


def encode_documents(block: Any, vocabulary: VocabularyModel) -> Block:
    """One block of documents as CSR word-count rows (``vocabulary.encode``)."""
    return vocabulary.encode(block)


def EncodeDocuments(vocabulary: VocabularyModel | str) -> Any:  # noqa: N802 (a transform)
    """DocumentBlocks -> Blocks of CSR word counts over ``vocabulary`` (a
    :class:`VocabularyModel`, or the path of one for :func:`load_vocabulary`): a
    labelled ``beam.Map`` of :func:`encode_documents`.

    ``p | ReadBlocks(docs, "text") | EncodeDocuments(vocabulary)`` is the input of a
    bag-of-words algorithm with ``feature_dim = len(vocabulary)``. (A function, so that
    importing the algorithms does not import Beam: ``beam-ml derive`` never needs it.)
    """
    import apache_beam as beam

    if isinstance(vocabulary, str):
        vocabulary = load_vocabulary(vocabulary)
    return "EncodeDocuments" >> beam.Map(encode_documents, vocabulary)
