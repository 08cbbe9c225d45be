"""The MXNet engine shared by beam_ml's gradient-trained algorithms.

What lives here is written once for Factorization Machines, NTM and DeepAR (DESIGN.md §4):

Device
    ``device='cpu'`` (default), ``'gpu'`` or ``'gpu:N'`` picks the MXNet context; every
    other line of code is the same on both. Asking for a GPU that MXNet does not see raises
    :class:`DeviceUnavailableError` before any data is touched. MXNet 1.9.1's GPU builds
    carry kernels for compute capability 5.0-8.6 only (no Hopper).
Seeded initialization
    :func:`initial_values` draws from ``numpy.random.default_rng([seed, stream])`` on the
    host, so every replica of a state (one per Beam bundle or worker) starts from the same
    parameters without talking to the others, on any device. That shared start is what
    makes averaging replicas meaningful.
Parameter tables
    :class:`ParameterTable` keeps each parameter row *beside its optimizer state* in one
    float32 record, on the host. A mini-batch gathers the records of the rows it touches
    (one random memory access per row: a hashed 2^20-row table is bound by memory latency,
    and separate arrays would cost one access per array), trains them on the device and
    scatters them back. This is MXNet's kvstore ``row_sparse_pull`` pattern: the full table
    never goes to the device and is never densified per step, only the rows in use.
Optimizers
    SGD, Adam and AdaGrad as MXNet NDArray arithmetic with per-column learning rates and
    weight decays, and *lazy* updates: a row's parameters, moments and weight decay change
    only in steps whose mini-batch touches it (MXNet's ``lazy_update`` for row-sparse
    gradients). The gradient is ``clip(rescale_grad * grad, clip_gradient) + wd * w``.
Mini-batches independent of blocks
    :class:`beam_ml.nn.skeleton.PendingRows` (the training skeleton) cuts the stream of
    rows into mini-batches of exactly ``mini_batch_size`` rows whatever the block
    boundaries; :class:`CsrRows` are the views a step reads.
Merge
    :meth:`ParameterTable.merged` averages two replicas row by row, each row weighted by
    the number of examples that touched it in each replica since their shared start
    (example-weighted parameter averaging, the "loose consistency" of a parameter server;
    Zinkevich et al. 2010). Weighting per row rather than per replica keeps a sparse
    feature that only one replica saw at that replica's value instead of halving it.
    :meth:`ParameterTable.aligned_to` first rotates a replica's factor columns onto the
    other's (orthogonal Procrustes). The merge is approximate (SGD is not a sufficient statistic); its cost in quality is
    measured by the tests (tests/algorithms/test_factorization_machines.py).

Payloads are plain numpy arrays in the state's versioned format: no pickle, no MXNet file.
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import scipy.sparse as sp

from beam_ml.core.errors import BeamMLError, IncompatibleStateError

__all__ = [
    "DeviceUnavailableError",
    "OPTIMIZERS",
    "INIT_METHODS",
    "mxnet",
    "check_device",
    "runtime_option",
    "context",
    "initial_values",
    "OptimizerSpec",
    "apply_update",
    "ParameterTable",
    "CsrRows",
    "rows_to_arrays",
    "rows_from_arrays",
    "unique_inverse",
]

OPTIMIZERS = ("adam", "adagrad", "sgd")
INIT_METHODS = ("normal", "uniform", "constant")
_SLOTS = {"sgd": 0, "adam": 2, "adagrad": 1}
_DEVICE = re.compile(r"^(cpu|gpu)(?::(\d+))?$")


class DeviceUnavailableError(BeamMLError, RuntimeError):
    """The configured device (a GPU) is not available to MXNet on this machine."""


# --- MXNet and the device -----------------------------------------------------------------
def mxnet() -> Any:
    """The ``mxnet`` module, imported on first use with a clear error if it cannot be."""
    # Storage fallbacks on the compact (rows-in-use) arrays are expected and cheap; MXNet
    # would otherwise print a warning per operator.
    os.environ.setdefault("MXNET_STORAGE_FALLBACK_LOG_VERBOSE", "0")
    try:
        import mxnet as mx
    except (ImportError, AttributeError, OSError) as exc:  # numpy>=1.24 fails inside mxnet
        raise ImportError(
            "beam_ml's gradient-trained algorithms need MXNet 1.9.1 "
            "(pip install mxnet==1.9.1; Python <= 3.11 and numpy < 1.24, numpy "
            f"{np.__version__} is installed). Import failed with: {exc}"
        ) from exc
    return mx


def check_device(value: Any, name: str, where: str) -> str:
    """Validate a device string ('cpu', 'gpu' or 'gpu:N') without importing MXNet."""
    if isinstance(value, str) and _DEVICE.match(value) and not value.startswith("cpu:"):
        return value
    raise ValueError(
        f"The {name!r} parameter of {where} must be 'cpu', 'gpu' or 'gpu:N'. Got {value!r} instead."
    )


def runtime_option(default: Any) -> Any:
    """A config field that says where the work runs, not what it computes (the device):
    kept with the config (checkpoints and the CLI see it) but never compared, so states
    that differ in it merge."""
    return dataclasses.field(default=default, compare=False, metadata={"runtime": True})


def context(device: str) -> Any:
    """The MXNet context for ``device``; :class:`DeviceUnavailableError` if it is absent."""
    mx = mxnet()
    kind, index = _DEVICE.match(device).groups()
    if kind == "cpu":
        return mx.cpu()
    gpu = int(index or 0)
    available = mx.context.num_gpus()
    if gpu >= available:
        seen = "no GPU" if available == 0 else f"{available} GPU(s) (gpu:0..gpu:{available - 1})"
        raise DeviceUnavailableError(
            f"device={device!r} was asked for, but MXNet sees {seen} on this machine. "
            "Use device='cpu', or install a CUDA build of MXNet 1.9.1 (e.g. mxnet-cu112) "
            "on a machine with an NVIDIA GPU of compute capability 5.0-8.6."
        )
    return mx.gpu(gpu)


# --- initialization ---------------------------------------------------------------------------
def initial_values(
    shape: tuple[int, ...],
    method: str,
    *,
    sigma: float | None,
    scale: float | None,
    value: float | None,
    seed: int,
    stream: int,
) -> np.ndarray:
    """Seeded float32 initial values (SageMaker's ``*_init_method`` semantics).

    ``normal``: N(0, sigma^2); ``uniform``: U[-scale, scale]; ``constant``: ``value``.
    ``stream`` separates the parameter groups (bias, linear, factors ...) drawn with one
    seed, so each is reproducible on its own and on any device.
    """
    if method == "constant":
        return np.full(shape, value, dtype=np.float32)
    rng = np.random.default_rng([seed, stream])
    if method == "normal":
        out = rng.standard_normal(shape, dtype=np.float32)
        out *= np.float32(sigma)
        return out
    out = rng.random(shape, dtype=np.float32)  # uniform
    out *= np.float32(2 * scale)
    out -= np.float32(scale)
    return out


# --- optimizers --------------------------------------------------------------------------------
@dataclass(frozen=True)
class OptimizerSpec:
    """An optimizer and its settings (MXNet's names).

    Parameters
    ----------
    name : {'adam', 'adagrad', 'sgd'}
    eps : float
        Added to the denominators of Adam and AdaGrad.
    clip_gradient : float, optional
        Clip each rescaled gradient entry to [-clip_gradient, clip_gradient].
    rescale_grad : float, optional
        Multiplies the summed mini-batch gradient; None means 1 / rows in the mini-batch
        (the mean).
    beta1, beta2 : float
        Adam's moment decay rates.
    """

    name: str = "adam"
    eps: float = 1e-8
    clip_gradient: float | None = None
    rescale_grad: float | None = None
    beta1: float = 0.9
    beta2: float = 0.999

    @property
    def slots(self) -> int:
        """Optimizer state arrays per parameter array (Adam: mean and variance)."""
        return _SLOTS[self.name]


def apply_update(
    nd: Any,
    weight: Any,
    slots: list[Any],
    grad: Any,
    lr: Any,
    wd: Any,
    step: int,
    rows: int,
    spec: OptimizerSpec,
) -> tuple[Any, list[Any]]:
    """One optimizer step on NDArrays (on the device); returns (weight, slots).

    ``lr`` and ``wd`` are floats or NDArrays of shape (1, width) broadcast over the rows,
    so one step serves parameter groups with different rates (linear and factors columns).
    ``step`` counts from 1 (Adam's bias correction); ``rows`` is the mini-batch size.
    ``weight`` and ``slots`` are updated in place where they are arrays (fewer temporary
    arrays: most of a small step's cost) and returned; ``grad`` is never changed.
    """
    scale = spec.rescale_grad if spec.rescale_grad is not None else 1.0 / rows
    g = grad * scale
    if spec.clip_gradient is not None:
        g = nd.clip(g, -spec.clip_gradient, spec.clip_gradient)
    g += _mul(nd, wd, weight)  # L2 weight decay, never clipped
    if spec.name == "sgd":
        weight -= _mul(nd, lr, g)
        return weight, []
    if spec.name == "adagrad":
        (history,) = slots
        history += g * g
        g /= nd.sqrt(history + spec.eps)
        weight -= _mul(nd, lr, g)
        return weight, [history]
    mean, var = slots
    mean *= spec.beta1
    mean += (1.0 - spec.beta1) * g
    var *= spec.beta2
    g *= g
    g *= 1.0 - spec.beta2
    var += g
    # Bias correction folded into the step size, as MXNet's Adam does.
    correction = np.sqrt(1.0 - spec.beta2**step) / (1.0 - spec.beta1**step)
    denominator = nd.sqrt(var)
    denominator += spec.eps
    step_size = mean / denominator
    step_size *= correction
    weight -= _mul(nd, lr, step_size)
    return weight, [mean, var]


def _mul(nd: Any, factor: Any, array: Any) -> Any:
    if isinstance(factor, (int, float)):
        return array * factor
    return nd.broadcast_mul(factor, array)


# --- parameter tables ---------------------------------------------------------------------------
class ParameterTable:
    """Parameter rows, each stored beside its optimizer state, with per-row example counts.

    Parameters
    ----------
    values : ndarray of shape (n_rows, (1 + slots) * width), float32
        Row ``i`` is ``[params_i, slot_1_i, ..., slot_s_i]``, each of ``width`` floats.
    width : int
        Parameters per row (FM: 1 linear weight + num_factors factors).
    slots : int
        Optimizer state arrays (Adam 2, AdaGrad 1, SGD 0).
    counts : ndarray of shape (n_rows,), int64
        Examples that touched each row since the state's start point: the merge weights.
    replicas : ndarray of shape (n_rows,), int32, optional
        Replicas merged into each row since the start point (0 where this table is one
        replica: see :meth:`trained_by`).
    """

    def __init__(
        self,
        values: np.ndarray,
        width: int,
        slots: int,
        counts: np.ndarray,
        replicas: np.ndarray | None = None,
    ):
        n = values.shape[0]
        replicas = np.zeros(n, dtype=np.int32) if replicas is None else replicas
        if values.shape[1] != (1 + slots) * width or {counts.shape, replicas.shape} != {(n,)}:
            raise IncompatibleStateError(
                f"Parameter table of shape {values.shape} with {counts.shape} counts and "
                f"{replicas.shape} replica counts does not "
                f"hold {width} parameters and {slots} optimizer slots per row."
            )
        self.values, self.width, self.slots, self.counts = values, width, slots, counts
        self.replicas = replicas

    @classmethod
    def initial(cls, params: np.ndarray, slots: int) -> ParameterTable:
        """A table of ``params`` (n_rows, width) with zeroed optimizer state and counts."""
        n, width = params.shape
        values = np.zeros((n, (1 + slots) * width), dtype=np.float32)
        values[:, :width] = params
        return cls(values, width, slots, np.zeros(n, dtype=np.int64))

    @property
    def n_rows(self) -> int:
        return self.values.shape[0]

    @property
    def params(self) -> np.ndarray:
        """The parameters, a view of shape (n_rows, width)."""
        return self.values[:, : self.width]

    def gather(self, rows: np.ndarray) -> np.ndarray:
        """Records of ``rows``: shape (len(rows), (1 + slots) * width), a copy."""
        return np.take(self.values, rows, axis=0)

    def scatter(self, rows: np.ndarray, records: np.ndarray, touches: np.ndarray) -> None:
        """Write trained records back and count the examples that touched each row."""
        self.values[rows] = records
        self.counts[rows] += touches

    def copy(self) -> ParameterTable:
        return ParameterTable(
            self.values.copy(), self.width, self.slots, self.counts.copy(), self.replicas.copy()
        )

    def restarted(self) -> ParameterTable:
        """A copy whose counts start again from zero (a new start point for replicas)."""
        return ParameterTable(
            self.values.copy(), self.width, self.slots, np.zeros_like(self.counts)
        )

    def trained_by(self) -> np.ndarray:
        """How many replicas trained each row since the start point (0: none)."""
        return np.maximum(self.replicas, self.counts > 0)

    def extend_steps(self, start: ParameterTable, columns: slice, scale: Any) -> None:
        """Scale each row's merged step from ``start`` by ``1 + scale (r - 1)`` in place
        (``r`` the replicas that trained it): ``scale`` 1 sums the replicas' steps."""
        others = np.maximum(self.trained_by() - 1, 0).astype(np.float32)[:, None]
        values = self.values[:, columns]
        values += others * scale * (values - start.values[:, columns])

    def aligned_to(self, reference: ParameterTable, start: int) -> ParameterTable:
        """A copy whose parameter columns ``start:width`` are rotated onto ``reference``'s.

        The rotation is the orthogonal ``Q`` that minimizes ``sum w ||v Q - r||^2`` over
        the rows both replicas trained (``w`` the harmonic mean of their example counts):
        orthogonal Procrustes, one SVD of a (width - start)^2 matrix. A model of inner
        products of these vectors (FM factors) does not change under ``Q``, but replicas
        that grow their factors from a small initialization on different data settle in
        different orientations, and averaging misaligned factors loses part of what each
        learned. Optimizer slots stay as they are: AdaGrad's history and Adam's second
        moment are per coordinate, Adam's first moment is forgotten within ~10 steps.
        """
        out = self.copy()
        both = np.flatnonzero((self.counts > 0) & (reference.counts > 0))
        if both.size == 0 or start >= self.width:
            return out
        c_mine = self.counts[both].astype(np.float64)
        c_ref = reference.counts[both].astype(np.float64)
        w = (c_mine * c_ref / (c_mine + c_ref))[:, None]
        mine = self.values[both, start : self.width].astype(np.float64)
        ref = reference.values[both, start : self.width].astype(np.float64)
        u, _, vt = np.linalg.svd((mine * w).T @ ref)
        rows = np.flatnonzero(self.counts)  # the others hold the shared start values
        block = out.values[rows, start : self.width].astype(np.float64)
        out.values[rows, start : self.width] = (block @ (u @ vt)).astype(np.float32)
        return out

    def merged(self, other: ParameterTable) -> ParameterTable:
        """Row-wise example-weighted average of two replicas from the same start point.

        A row touched by neither keeps its (shared) start value; by one only, that
        replica's value; by both, ``(c_a * a + c_b * b) / (c_a + c_b)`` for the parameters
        and the optimizer state alike. Associative and commutative up to rounding.
        """
        out = self.copy()
        rows = np.flatnonzero(other.counts)
        if rows.size:
            c_a = self.counts[rows].astype(np.float64)
            c_b = other.counts[rows].astype(np.float64)
            w_b = (c_b / (c_a + c_b)).astype(np.float32)[:, None]  # (rows, 1)
            a, b = self.gather(rows), other.gather(rows)
            # a + (b - a) * w_b is exactly b when a row is new to self (w_b == 1).
            out.values[rows] = np.where(w_b == 1, b, a + (b - a) * w_b)
            out.counts[rows] += other.counts[rows]
            out.replicas[rows] = self.trained_by()[rows] + other.trained_by()[rows]
        return out

    def to_arrays(self, prefix: str, slot_names: tuple[str, ...]) -> dict[str, np.ndarray]:
        """Named arrays for the payload: parameters, then each optimizer slot, then counts."""
        w = self.width
        arrays = {f"{prefix}": self.values[:, :w]}
        for i, name in enumerate(slot_names, start=1):
            arrays[f"{prefix}.{name}"] = self.values[:, i * w : (i + 1) * w]
        arrays[f"{prefix}.counts"] = self.counts
        arrays[f"{prefix}.replicas"] = self.replicas
        return arrays

    @classmethod
    def from_arrays(
        cls, arrays: dict[str, np.ndarray], prefix: str, slot_names: tuple[str, ...]
    ) -> ParameterTable:
        try:
            parts = [arrays[prefix]] + [arrays[f"{prefix}.{n}"] for n in slot_names]
            counts = arrays[f"{prefix}.counts"]
        except KeyError as exc:
            raise IncompatibleStateError(f"State payload lacks the array {exc}.") from None
        shapes = {p.shape for p in parts}
        if len(shapes) != 1 or parts[0].ndim != 2:
            raise IncompatibleStateError(
                f"State arrays {prefix!r} have inconsistent shapes {sorted(shapes)}."
            )
        values = np.concatenate([p.astype(np.float32, copy=False) for p in parts], axis=1)
        replicas = arrays.get(f"{prefix}.replicas")  # absent from states of before 2026-11-25
        return cls(
            values,
            parts[0].shape[1],
            len(slot_names),
            counts.astype(np.int64),
            None if replicas is None else replicas.astype(np.int32),
        )


# --- mini-batches independent of block boundaries ------------------------------------------------
def unique_inverse(indices: np.ndarray, scratch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(unique, inverse)`` of an index array in O(len) time, any order of ``unique``.

    ``scratch`` is an int array with one entry per possible index, reused across calls
    and never cleared: each call overwrites the entries it reads. ``numpy.unique`` sorts
    (O(n log n)), a third of a mini-batch's host time on 40,000 indices.
    """
    position = np.arange(indices.shape[0], dtype=scratch.dtype)
    scratch[indices] = position
    representative = scratch[indices]  # one position per distinct index, whichever won
    first = representative == position
    local = np.cumsum(first) - 1
    return indices[first], local[representative]


def rows_to_arrays(
    prefix: str, features: sp.csr_matrix, labels: np.ndarray | None
) -> dict[str, Any]:
    """CSR rows (and their labels, if any) as named arrays of a payload."""
    arrays = {
        f"{prefix}.data": features.data,
        f"{prefix}.indices": features.indices.astype(np.int64),
        f"{prefix}.indptr": features.indptr.astype(np.int64),
    }
    if labels is not None:
        arrays[f"{prefix}.labels"] = labels
    return arrays


def rows_from_arrays(
    arrays: dict[str, np.ndarray], prefix: str, n_features: int, what: str, labelled: bool = True
) -> tuple[sp.csr_matrix, np.ndarray | None]:
    indptr = arrays[f"{prefix}.indptr"]
    try:
        features = sp.csr_matrix(
            (arrays[f"{prefix}.data"], arrays[f"{prefix}.indices"], indptr),
            shape=(len(indptr) - 1, n_features),
        )
    except ValueError as exc:
        raise IncompatibleStateError(f"{what} in the state are invalid: {exc}") from None
    return features, arrays[f"{prefix}.labels"] if labelled else None


class CsrRows(NamedTuple):
    """Consecutive rows of a CSR matrix as views of its arrays (what a step reads).

    scipy's row slicing costs ~0.1 ms (index checks, a new matrix), as much as a whole
    100-row step; these views cost a few microseconds.
    """

    data: np.ndarray
    indices: np.ndarray
    indptr: np.ndarray
    shape: tuple[int, int]

    @classmethod
    def of(cls, features: sp.csr_matrix, start: int, stop: int) -> CsrRows:
        indptr = features.indptr[start : stop + 1]
        first, last = indptr[0], indptr[-1]
        return cls(
            features.data[first:last],
            features.indices[first:last],
            indptr - first,
            (stop - start, features.shape[1]),
        )


def _mix64(h: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer, elementwise on uint64 (wrapping arithmetic)."""
    h = h ^ (h >> np.uint64(30))
    h = h * np.uint64(0xBF58476D1CE4E5B9)
    h = h ^ (h >> np.uint64(27))
    h = h * np.uint64(0x94D049BB133111EB)
    return h ^ (h >> np.uint64(31))


def row_keys(features: sp.csr_matrix, labels: np.ndarray) -> np.ndarray:
    """A 64-bit hash of each row's content (columns, values, label), uint64 of shape (rows,).

    The same row gets the same key in any block, worker or epoch; distinct rows collide
    with probability ~2^-64. Entries are hashed one by one and summed per row (order of
    the entries does not matter), through a prefix sum so empty rows work too.
    """
    with np.errstate(over="ignore"):
        columns = features.indices.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
        values = features.data.astype(np.float32).view(np.uint32).astype(np.uint64)
        entry = _mix64(columns ^ (values << np.uint64(32)))
        prefix = np.concatenate([np.zeros(1, np.uint64), np.cumsum(entry, dtype=np.uint64)])
        rows = prefix[features.indptr[1:]] - prefix[features.indptr[:-1]]
        label = labels.astype(np.float64).view(np.uint64)
        return _mix64(rows + _mix64(label ^ np.uint64(0xD1B54A32D192ED03)))


class MergeSample:
    """Rows set aside from training, a bounded uniform sample of them: the held-out
    evidence that decides how a merge of replicas is finished
    (``FactorizationMachinesState.finish_round``).

    A row is set aside when its :func:`row_keys` falls in the lowest ``holdout`` fraction
    of the key space (the same rows in any block, worker or epoch). The sample keeps the
    ``size`` set-aside rows of smallest key (a bottom-k sketch): uniform, the same
    whatever order or split the rows arrived in, and merging two samples is exact (the
    smallest keys of the union; a row two replicas both saw counts once). The rows in
    the sample never train a replica, in any epoch (a derived model learns them at the
    end); a row pushed out of it by a row of smaller key trains then, in that row's
    place. Rows arrive in the sample one at a time, in order, whatever the blocks they
    came in, so the rows trained, and their order, depend only on the sequence of rows
    (a block update equals row-by-row updates). Memory: ``size`` rows, whatever the
    number of rows seen.
    """

    def __init__(self, size: int, n_features: int, holdout: float):
        self.size, self.n_features, self.holdout = size, n_features, holdout
        self.features = sp.csr_matrix((0, n_features), dtype=np.float32)
        self.labels = np.zeros(0, dtype=np.float32)
        self.keys = np.zeros(0, dtype=np.uint64)

    @property
    def n_rows(self) -> int:
        return self.features.shape[0]

    def set_aside(
        self, features: sp.csr_matrix, labels: np.ndarray
    ) -> tuple[sp.csr_matrix, np.ndarray]:
        """The rows to train on, in order: the rows the sample does not take, and in the
        place of a row it takes, the row that one pushes out (if any).

        A set-aside row enters while the sample holds fewer than ``size`` rows, or when
        its key is below the largest kept (which only falls, and in a merge too);
        otherwise it trains like any other. Only the rows in the sample at the end, and
        those a merge of samples drops, never train.
        """
        if self.size == 0 or self.holdout == 0 or features.shape[0] == 0:
            return features, labels
        keys = row_keys(features, labels)
        aside = np.flatnonzero(keys < np.uint64(self.holdout * 2.0**64))  # holdout <= 0.5
        if aside.shape[0] == 0:
            return features, labels
        # The pool: the rows kept so far, then this block's set-aside rows, as stored.
        before = self.n_rows
        pool_features = sp.vstack([self.features, features[aside]], format="csr")
        pool_labels = np.concatenate([self.labels, labels[aside].astype(np.float32)])
        pool_keys = np.concatenate([self.keys, keys[aside]])
        kept, emitted = self._arrivals(pool_keys, before)
        self.features, self.labels = pool_features[kept], pool_labels[kept]
        self.keys = pool_keys[kept]
        # Each block row trains in its place, or the pool row its arrival emitted, or none.
        source = np.arange(features.shape[0])
        source[aside] = np.where(emitted == before + np.arange(aside.shape[0]), aside, -1)
        pushed = (emitted >= 0) & (source[aside] < 0)
        source[aside[pushed]] = features.shape[0] + emitted[pushed]
        source = source[source >= 0]
        if not pushed.any():
            return features[source], labels[source]
        rows = sp.vstack([features, pool_features], format="csr")[source]
        return rows, np.concatenate([labels, pool_labels.astype(labels.dtype)])[source]

    def _arrivals(self, keys: np.ndarray, before: int) -> tuple[np.ndarray, np.ndarray]:
        """The rows of ``keys`` (the ``before`` kept, sorted and distinct, then the
        arrivals in order) kept after the arrivals, sorted by key, and for each
        arrival the row it lets train: itself (not taken), the largest kept that it
        pushes out, or -1 (taken while the sample fills, or already kept). A loop per
        arrival taken once the sample is full: rare (``size * ln(arrivals / size)``)."""
        n = keys.shape[0] - before
        emitted = before + np.arange(n)  # itself, unless taken
        kept, start = np.arange(before), 0
        while start < n:
            if kept.shape[0] < self.size:  # filling: the next ones are all taken
                step = np.arange(start, min(start + self.size - kept.shape[0], n))
                emitted[step] = -1
            else:
                below = np.flatnonzero(keys[before + start :] < keys[kept[-1]])
                if below.shape[0] == 0:
                    break
                step = below[:1] + start
                if keys[before + step[0]] not in keys[kept]:  # pushes the largest out
                    emitted[step[0]] = kept[-1]
                else:
                    emitted[step[0]] = -1  # the same row is kept already
            rows = np.concatenate([kept, before + step])
            _, first = np.unique(keys[rows], return_index=True)  # by key, duplicates once
            kept, start = rows[first][: self.size], int(step[-1]) + 1
        return kept, emitted

    def merged(self, other: MergeSample) -> MergeSample:
        out = self.copy()
        if other.n_rows:
            out._keep_smallest(other.features, other.labels, other.keys)
        return out

    def _keep_smallest(self, features: sp.csr_matrix, labels: np.ndarray, keys: np.ndarray) -> None:
        all_keys = np.concatenate([self.keys, keys])
        _, first = np.unique(all_keys, return_index=True)  # sorted by key, duplicates once
        keep = first[: self.size]
        self.features = sp.vstack([self.features, features], format="csr")[keep]
        self.labels = np.concatenate([self.labels, labels.astype(np.float32)])[keep]
        self.keys = all_keys[keep]

    def restarted(self) -> MergeSample:
        """An empty sample of the same size (a new start point)."""
        return MergeSample(self.size, self.n_features, self.holdout)

    def copy(self) -> MergeSample:
        out = MergeSample(self.size, self.n_features, self.holdout)
        out.features, out.labels, out.keys = self.features.copy(), self.labels.copy(), self.keys
        return out

    def to_arrays(self, prefix: str) -> dict[str, np.ndarray]:
        return {**rows_to_arrays(prefix, self.features, self.labels), f"{prefix}.keys": self.keys}

    @classmethod
    def from_arrays(
        cls, arrays: dict[str, np.ndarray], prefix: str, size: int, n_features: int, holdout: float
    ) -> MergeSample:
        out = cls(size, n_features, holdout)
        if f"{prefix}.keys" not in arrays:  # states of before 2026-11-25: no sample
            return out
        out.features, labels = rows_from_arrays(arrays, prefix, n_features, "The merge sample rows")
        out.labels = labels.astype(np.float32)
        out.keys = arrays[f"{prefix}.keys"].astype(np.uint64)
        if not out.labels.shape == out.keys.shape == (out.n_rows,) or out.n_rows > size:
            raise IncompatibleStateError(
                f"The state's merge sample holds {out.n_rows} rows, {out.labels.shape[0]} "
                f"labels and {out.keys.shape[0]} keys; expected one of each, at most {size}."
            )
        if np.any(np.diff(out.keys) <= 0):
            raise IncompatibleStateError("The state's merge sample keys are not increasing.")
        return out
