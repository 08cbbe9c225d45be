"""The training skeleton every gradient-trained state shares (FM and the linear learner's
packed models now; NTM and DeepAR next), in the manner of GluonTS: a state holds a
*network*'s parameters and feeds it mini-batches; the network knows its step.

Start point
    Replicas of a state (one per Beam bundle or worker) begin at one start point: the
    seeded initialization, or ``continued()`` of the previous epoch's (or yesterday's)
    state; replicas of different start points never merge.
Pending mini-batches
    :class:`PendingRows` cuts the stream of rows into mini-batches of exactly
    ``mini_batch_size`` rows whatever the block boundaries, labels or not, keeping the
    remainder in the state: updating with one block or row by row takes the same steps.
Progressive validation
    Before its step every mini-batch is scored by the parameters about to learn it (Blum,
    Kalai & Langford 1999): an honest out-of-sample loss without a validation set, kept
    for the first sight of the rows only (issue 24). Every state keeps its sums as
    ``progressive`` and its score histograms as ``progressive_hist`` (the payloads keep
    their array names, and the earlier attribute names read the same arrays: :func:`alias`).
Rounds, resume and epochs
    :class:`GradientState` declares the plan (:class:`~beam_ml.core.plan.ResumePlan`):
    new data continues (``continued`` / ``followed_by``), bounded input is read
    ``config.epochs`` times, and a state that scales a round's merged step says so
    (``finish_round``). :attr:`GradientState.epochs_done` counts the passes closed
    before the current one, the same way for every family.
Averaged replicas
    :class:`AveragingState` is the bookkeeping of the states whose merge averages replicas
    of one start point (FM, NTM, DeepAR): the start point (``n_before``, ``epoch``), rows
    since it, steps, the progressive sums, the merge's checks and ``continued`` /
    ``followed_by``; each family says how its parameters average (``_average``).
Networks
    :class:`Network` is what a state asks of its network: a training step on one
    mini-batch, in place on the parameters, returning what progressive validation needs
    (the pre-step scores), with numpy or MXNet behind it (MXNet imported lazily): a
    state builds it on first use (:func:`lazy_network`) and never pickles it.
"""

from __future__ import annotations

import abc
import functools
from collections.abc import Callable
from typing import Any, ClassVar, Protocol

import numpy as np
import scipy.sparse as sp

from beam_ml.core.block import Block
from beam_ml.core.errors import IncompatibleStateError
from beam_ml.core.plan import ResumePlan
from beam_ml.core.state import TrainingState
from beam_ml.nn.engine import CsrRows, rows_from_arrays, rows_to_arrays

__all__ = [
    "AveragingState",
    "GradientState",
    "Network",
    "PendingRows",
    "alias",
    "csr_rows",
    "lazy_network",
]

#: A mini-batch: its rows (CSR views) and their labels (None for unsupervised networks).
Batch = tuple[Any, "np.ndarray | None"]


class Network(Protocol):
    """A gradient-trained network (GluonTS's split of network and trainer): the state
    owns the parameters, the network takes a step on them. FM's
    :class:`~beam_ml.nn.fm.NumpyFMTrainer` (numpy, the CPU) and
    :class:`~beam_ml.nn.fm.FMTrainer` (MXNet, a GPU) are two of them."""

    def step(self, *parameters_and_batch: Any) -> Any:
        """``step(*parameters, features, labels, step)``: one optimizer step on a
        mini-batch, in place on the parameters; returns the mini-batch's scores before
        the step (and what else the state keeps)."""


def lazy_network(attribute: str) -> Callable[[Callable[[Any], Any]], Callable[[Any], Any]]:
    """Decorates a method that builds a network: the first call builds it and keeps it
    in ``attribute`` (None until then), later calls return that one. The build imports
    MXNet and claims the device, so it happens on first training or prediction, not when
    a state is made or read; the owner drops ``attribute`` when pickled (MXNet handles
    stay in their process).

    >>> class Owner:
    ...     _net = None
    ...     @lazy_network("_net")
    ...     def net(self):
    ...         return object()
    >>> owner = Owner()
    >>> owner.net() is owner.net() is owner._net
    True
    """

    def decorate(build: Callable[[Any], Any]) -> Callable[[Any], Any]:
        @functools.wraps(build)
        def built(self: Any) -> Any:
            network = getattr(self, attribute)
            if network is None:
                network = build(self)
                setattr(self, attribute, network)
            return network

        return built

    return decorate


def alias(name: str) -> property:
    """Another name for the attribute ``name`` (read and written through)."""
    return property(
        lambda self: getattr(self, name),
        lambda self, value: setattr(self, name, value),
        doc=f"The same as ``{name}``.",
    )


class GradientState(TrainingState):
    """A state trained by gradient steps (see the module notes).

    Subclasses implement ``continued`` (the start of the next pass), ``followed_by``
    (this state extended by one trained on new rows from ``continued()``) and, when
    their plan finishes rounds, ``finish_round``.
    """

    PLAN = ResumePlan(resume="continue", epochs="epochs")

    @property
    @abc.abstractmethod
    def epochs_done(self) -> int:
        """Passes over the data closed before the current one (0 in the first): the one
        convention across families, whose own ``epoch`` fields predate it."""


class AveragingState(GradientState):
    """A gradient state whose merge averages replicas that began at one start point.

    Attributes
    ----------
    steps : int
        Optimizer steps taken (the most of the replicas' after a merge).
    n_before, epoch : int
        The start point this state continues from: rows seen before it and the pass
        index (from 0). Replicas merge only with replicas of the same start point.
    n_rows : int
        Rows folded in since the start point.
    progressive : ndarray of shape (3,), float64
        Progressive validation sums, on the rows' first sight only (the first of
        ``epochs`` passes); the family says what they sum.

    Subclasses implement ``_pristine`` (nothing trained or waiting), ``_copy`` (a deep
    copy, optionally under another config) and ``_average`` (the rest of a merge).
    """

    #: The arrays of progressive sums that replicas and resumed states add up (an array
    #: that is None for some configs is skipped).
    PROGRESSIVE: ClassVar[tuple[str, ...]] = ("progressive",)
    #: The error when replicas of different start points meet, formatted with ``mine``
    #: and ``theirs`` (each family's own words).
    START_POINTS_DIFFER: ClassVar[str]

    def __init__(self, config: Any):
        super().__init__(config)
        self.steps = self.n_before = self.epoch = self.n_rows = 0
        self.progressive = np.zeros(3)

    @property
    def n_seen(self) -> int:
        return self.n_before + self.n_rows

    @property
    def epochs_done(self) -> int:
        return self.epoch  # the epoch index counts from 0

    @property
    def owner(self) -> str:
        return type(self).__name__

    @property
    def _first_sight(self) -> bool:
        """Whether this pass's rows are new to the parameters: the first of ``epochs``
        passes over the same data, or the first pass over new data (training continued).
        Only then is a row's score before its step an honest out-of-sample score."""
        return self.epoch % self.config.epochs == 0

    @abc.abstractmethod
    def _pristine(self) -> bool:
        """Whether nothing was trained or waits here (an empty accumulator)."""

    @abc.abstractmethod
    def _copy(self, config: Any = None) -> AveragingState:
        """A deep copy (under ``config`` when given)."""

    @abc.abstractmethod
    def _average(self, merged: AveragingState, other: AveragingState) -> None:
        """The family's part of ``self.merge(other)``, on ``merged`` (a copy of this state
        with the shared counts merged): average the parameters, merge its own counts and
        samples, then train ``other``'s pending rows."""

    def merge(self, other: AveragingState) -> AveragingState:
        """Both replicas averaged (``_average``), their rows and first-sight progressive
        sums added up; an empty side gives a copy of the other."""
        self.check_mergeable(other)
        if other._pristine():
            return self._copy()
        if self._pristine():
            return other._copy(self.config)
        if (self.n_before, self.epoch) != (other.n_before, other.epoch):
            raise IncompatibleStateError(self.START_POINTS_DIFFER.format(mine=self, theirs=other))
        merged = self._copy()
        merged.steps = max(self.steps, other.steps)
        merged.n_rows += other.n_rows
        if self._first_sight:  # later passes' replicas carry their start's, the same
            for name, mine, theirs in self._progressive(merged, other):
                setattr(merged, name, mine + theirs)
        self._average(merged, other)
        return merged

    def _progressive(self, a: AveragingState, b: AveragingState) -> list[tuple[str, Any, Any]]:
        """(name, a's array, b's array) of each progressive sum the config keeps."""
        names = [name for name in self.PROGRESSIVE if getattr(a, name) is not None]
        return [(name, getattr(a, name), getattr(b, name)) for name in names]

    def _next_pass(self) -> None:
        """Close this pass (on a copy that ``continued`` returns): its rows count as seen
        before the next start point; new data (not another epoch) keeps its own
        progressive sums (``followed_by`` adds them up)."""
        self.n_before, self.n_rows, self.epoch = self.n_seen, 0, self.epoch + 1
        if self._first_sight:
            for name, sums, _ in self._progressive(self, self):
                setattr(self, name, np.zeros_like(sums))

    def followed_by(self, later: AveragingState) -> AveragingState:
        """This state extended by ``later``, trained on new rows from ``continued``:
        ``later``'s parameters (they went on from this state's) and row count (which
        already counts this state's rows), both progressive validations added up."""
        out = later._copy()
        out.epoch = self.epoch
        for name, mine, theirs in self._progressive(self, later):
            setattr(out, name, mine + theirs)
        return out


class PendingRows:
    """Cuts a stream of rows into mini-batches of exactly ``batch_rows`` rows.

    Rows are CSR (FM) or dense or CSR (the linear learner); ``rows(x, start, stop, copy)``
    says how a mini-batch's rows are taken (views for the step, copies to keep): FM's
    kernels read :class:`CsrRows`, the linear learner's products scipy matrices. Labels
    are optional (``labels=None``: an unsupervised network such as NTM); a batch is
    ``(rows, labels or None)``. The rows after the last full mini-batch stay here, in the
    state, until more rows arrive, the state is merged, or a model is derived
    (:meth:`flush`), so the mini-batches depend only on the sequence of rows, not on how
    it is cut into blocks.

    With ``buffer_rows`` > ``batch_rows`` the rows also leave in a seeded random order:
    every time ``buffer_rows`` rows wait, they are permuted (``numpy.random.default_rng
    ([seed, windows so far])``) and cut into mini-batches, the few left over wait for the
    next window. SGD follows the order of its input, and input sorted by a key (ratings
    by user) trains worse models; a window mixes the rows of many keys.
    """

    def __init__(
        self,
        batch_rows: int,
        n_features: int,
        buffer_rows: int = 0,
        seed: int = 0,
        labelled: bool = True,
        rows: Any = None,
    ):
        self.batch_rows, self.n_features, self.labelled = batch_rows, n_features, labelled
        self.buffer_rows = buffer_rows if buffer_rows > batch_rows else 0
        self.seed, self.windows = seed, 0
        self.rows = rows or csr_rows
        self._clear()

    def _clear(self) -> None:
        self.features: Any = sp.csr_matrix((0, self.n_features), dtype=np.float32)
        self.labels: np.ndarray | None = np.zeros(0, dtype=np.float32) if self.labelled else None

    @property
    def n_rows(self) -> int:
        return self.features.shape[0]

    @property
    def capacity(self) -> int:
        """At most this many rows wait here (more only while :meth:`hold` keeps them)."""
        return max(self.batch_rows, self.buffer_rows)

    def hold(self, features: Any, labels: np.ndarray | None, copy: bool = True) -> None:
        """Keep these rows too, cutting no mini-batch (the linear learner's scaler sample)."""
        if self.n_rows:
            self.features, self.labels = _joined(self.features, self.labels, features, labels)
        else:
            self.features = self.rows(features, 0, features.shape[0], copy)
            self.labels = _copy(labels)

    def take(self) -> Batch:
        """Every pending row, as one part; none are left here."""
        out = (self.features, self.labels)
        self._clear()
        return out

    def feed(
        self, features: Any, labels: np.ndarray | None = None, copy: bool = True
    ) -> list[Batch]:
        """Full mini-batches from the pending rows followed by these; keeps the rest
        (copied with ``copy``: the state must not alias, or later see changes to, the
        caller's block)."""
        if self.buffer_rows:
            return self._feed_windows(features, labels)
        batch, start, rows = self.batch_rows, 0, features.shape[0]
        batches: list[Batch] = []
        if self.n_rows:  # top the pending rows up to a mini-batch
            take = min(batch - self.n_rows, rows)
            top_up = self.rows(features, 0, take, True), _part(labels, 0, take)
            self.features, self.labels = _joined(self.features, self.labels, *top_up)
            start = take
            if self.n_rows == batch:
                batches.append(self.take())
        while rows - start >= batch:
            batches.append(
                (
                    self.rows(features, start, start + batch, False),
                    _part(labels, start, start + batch),
                )
            )
            start += batch
        if start < rows:
            self.features = self.rows(features, start, rows, copy)
            self.labels = _copy(_part(labels, start, None))
        return batches

    def _feed_windows(self, features: Any, labels: np.ndarray | None) -> list[Batch]:
        if self.n_rows:
            features, labels = _joined(self.features, self.labels, features, labels)
        batches: list[Batch] = []
        while features.shape[0] >= self.buffer_rows:
            window, window_labels = self._shuffled(
                features[: self.buffer_rows], _part(labels, 0, self.buffer_rows)
            )
            full = self._cut(window, window_labels, batches)
            features, labels = _joined(
                window[full:],
                _part(window_labels, full, None),
                features[self.buffer_rows :],
                _part(labels, self.buffer_rows, None),
            )
        self.features, self.labels = features, _copy(labels)
        return batches

    def flush(self) -> list[Batch]:
        """Every pending row in mini-batches (in a random order with a buffer), the last
        one short, leaving none here."""
        features, labels = self.take()
        if not features.shape[0]:
            return []
        if self.buffer_rows:
            features, labels = self._shuffled(features, labels)
        batches: list[Batch] = []
        full = self._cut(features, labels, batches)
        if full < features.shape[0]:
            batches.append(
                (self.rows(features, full, features.shape[0], False), _part(labels, full, None))
            )
        return batches

    def _shuffled(self, features: Any, labels: np.ndarray | None) -> tuple[Any, Any]:
        order = np.random.default_rng([self.seed, self.windows]).permutation(features.shape[0])
        self.windows += 1
        return features[order], None if labels is None else labels[order]

    def _cut(self, features: Any, labels: np.ndarray | None, batches: list) -> int:
        """Appends the full mini-batches of ``features`` to ``batches``; the rows used."""
        b = self.batch_rows
        full = features.shape[0] // b * b
        batches.extend(
            (self.rows(features, start, start + b, False), _part(labels, start, start + b))
            for start in range(0, full, b)
        )
        return full

    def copy(self) -> PendingRows:
        out = PendingRows(
            self.batch_rows, self.n_features, self.buffer_rows, self.seed, self.labelled, self.rows
        )
        out.features, out.labels = self.features.copy(), _copy(self.labels)
        out.windows = self.windows
        return out

    def to_arrays(self, prefix: str) -> dict[str, np.ndarray]:
        arrays = rows_to_arrays(prefix, self.features, self.labels)
        arrays[f"{prefix}.windows"] = np.array([self.windows], dtype=np.int64)
        return arrays

    @classmethod
    def from_arrays(
        cls,
        arrays: dict[str, np.ndarray],
        prefix: str,
        batch_rows: int,
        n_features: int,
        buffer_rows: int = 0,
        seed: int = 0,
        labelled: bool = True,
    ) -> PendingRows:
        out = cls(batch_rows, n_features, buffer_rows, seed, labelled)
        out.features, out.labels = rows_from_arrays(
            arrays, prefix, n_features, "Pending rows", labelled
        )
        windows = arrays.get(f"{prefix}.windows")  # absent from states of before 2026-12-04
        if windows is not None:
            if windows.shape != (1,) or windows[0] < 0:
                raise IncompatibleStateError(f"The state's {prefix}.windows is not one count.")
            out.windows = int(windows[0])
        shape = (out.n_rows,) if out.labels is None else out.labels.shape
        if shape != (out.n_rows,) or out.n_rows >= out.capacity:
            raise IncompatibleStateError(
                f"The state holds {out.n_rows} pending rows with {shape[0]} labels; "
                f"expected fewer than {out.capacity} (mini_batch_size, or shuffle_buffer), "
                "one label each."
            )
        return out


# --- a uniform sample of the rows a round trained on ---------------------------------------------


def csr_rows(x: sp.csr_matrix, start: int, stop: int, copy: bool) -> Any:
    """Rows ``start:stop`` of a CSR matrix: views (:class:`CsrRows`) for a step, or a copy."""
    return x[start:stop] if copy else CsrRows.of(x, start, stop)


def _joined(a: Any, a_labels: Any, b: Any, b_labels: Any) -> tuple[Any, np.ndarray | None]:
    """Rows ``a`` above rows ``b`` and their labels (:meth:`Block.concat`)."""
    joined = Block.concat([Block(a, a_labels), Block(b, b_labels)])
    return joined.features, joined.labels


def _part(labels: np.ndarray | None, start: int, stop: int | None) -> np.ndarray | None:
    return None if labels is None else labels[start:stop]


def _copy(labels: np.ndarray | None) -> np.ndarray | None:
    return None if labels is None else labels.copy()
