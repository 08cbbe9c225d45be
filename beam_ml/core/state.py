"""The state contract every algorithm implements, and the family registry.

A *state* is the training state of one algorithm (DESIGN.md §1): sufficient statistics,
a sketch or network parameters. It is updated with blocks, merged with the states of
other workers, serialized without pickle, and turned into *models* by ``derive``,
cheaply and without the data. A *model* maps blocks to outputs (``evaluate``) and scores
itself with additive metric sums, so evaluation is one mergeable pass too.
"""

from __future__ import annotations

import abc
import contextlib
import dataclasses
from collections.abc import Iterator
from typing import Any, ClassVar, TypeVar

import numpy as np

from beam_ml.core import serial
from beam_ml.core.block import Block, BlockKind, InputSpec
from beam_ml.core.errors import BeamMLError, CorruptStateError, IncompatibleStateError
from beam_ml.core.plan import ResumePlan

__all__ = [
    "TrainingState",
    "Model",
    "register",
    "families",
    "state_class",
    "state_class_for",
    "load_state",
    "load_model",
    "config_to_dict",
    "config_from_dict",
]

StateT = TypeVar("StateT", bound="TrainingState")
_REGISTRY: dict[str, type[TrainingState]] = {}


def register(cls: type[StateT]) -> type[StateT]:
    """Class decorator: make a state family loadable by name (never by import path)."""
    if cls.FAMILY in _REGISTRY and _REGISTRY[cls.FAMILY] is not cls:
        raise ValueError(f"family {cls.FAMILY!r} is registered twice")
    _REGISTRY[cls.FAMILY] = cls
    return cls


def _load_algorithms() -> None:
    # The algorithms register themselves on import; core must not import them at
    # module level (they import core), so the registry is filled on first use.
    import beam_ml.algorithms  # noqa: F401


def families() -> dict[str, type[TrainingState]]:
    """The registered state families, by name."""
    _load_algorithms()
    return dict(_REGISTRY)


def state_class_for(config: Any) -> type[TrainingState]:
    """The state class whose ``CONFIG`` is the type of ``config``."""
    for cls in families().values():
        if type(config) is cls.CONFIG:
            return cls
    raise TypeError(f"{type(config).__name__} is not the config of any beam_ml algorithm.")


def state_class(family: str) -> type[TrainingState]:
    _load_algorithms()
    try:
        return _REGISTRY[family]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY)) or "none"
        raise IncompatibleStateError(
            f"Unknown algorithm family {family!r}; this beam_ml knows: {known}."
        ) from None


def config_to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)


def config_from_dict(config_class: type, values: dict[str, Any]) -> Any:
    names = {f.name for f in dataclasses.fields(config_class)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise IncompatibleStateError(
            f"{config_class.__name__} has no parameter(s) {', '.join(unknown)}."
        )
    return config_class(**values)


def _check_version(cls: type, packed: serial.Packed) -> None:
    if packed.serial_version != cls.SERIAL_VERSION:
        raise IncompatibleStateError(
            f"This {packed.kind} of family {packed.family!r} was written in format "
            f"version {packed.serial_version}; this beam_ml reads version "
            f"{cls.SERIAL_VERSION}."
        )


class Model(abc.ABC):
    """An immutable model derived from a state.

    Subclasses set ``FAMILY`` and ``SERIAL_VERSION``, declare ``input_spec`` (what
    ``evaluate`` takes) and implement ``evaluate``, ``metric_sums``,
    ``metrics_from_sums`` and the payload pair.
    """

    FAMILY: ClassVar[str]
    SERIAL_VERSION: ClassVar[int] = 1
    #: The names ``metrics_from_sums`` returns; ``score`` accepts these.
    METRICS: ClassVar[tuple[str, ...]] = ()

    @property
    @abc.abstractmethod
    def input_spec(self) -> InputSpec:
        """What ``evaluate`` takes: a block kind and its shape (a :class:`MatrixSpec`
        of the model's features, a ``SeriesSpec``...)."""

    @property
    def n_features(self) -> int:
        """The number of input features a matrix model expects."""
        return self.input_spec.n_features

    @abc.abstractmethod
    def evaluate(self, block: Any) -> np.ndarray:
        """The model's output for each row: shape (n_rows, n_outputs)."""

    @abc.abstractmethod
    def metric_sums(self, block: Any) -> dict[str, float]:
        """Additive sums over a block from which ``metrics_from_sums`` computes metrics."""

    @abc.abstractmethod
    def metrics_from_sums(self, sums: dict[str, float]) -> dict[str, float]:
        """Metrics (SageMaker names where they exist) from summed ``metric_sums``."""

    def describe(self) -> dict[str, Any]:
        """A short JSON-able summary for people (printed by ``beam-ml derive``)."""
        return {"n_features": self.n_features}

    def score(self, metric: str, data: Any) -> float:
        """One metric of the model on in-memory data (used for model selection)."""
        if metric not in self.METRICS:
            raise ValueError(
                f"The 'metric' parameter of {type(self).__name__}.score must be one of "
                f"{list(self.METRICS)}. Got {metric!r} instead."
            )
        return self.metrics_from_sums(self.metric_sums(data))[metric]

    def _check(self, block: Any) -> Block:
        return self.input_spec.validate(block, owner=type(self).__name__)

    # --- serialization -------------------------------------------------------------
    @abc.abstractmethod
    def _payload(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """(JSON-able scalars, named arrays)."""

    @classmethod
    @abc.abstractmethod
    def _from_payload(cls, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> Model: ...

    def to_bytes(self) -> bytes:
        meta, arrays = self._payload()
        return serial.pack("model", self.FAMILY, self.SERIAL_VERSION, {}, meta, arrays)

    @classmethod
    def from_bytes(cls, data: bytes) -> Model:
        model = load_model(data)
        if cls is not Model and not isinstance(model, cls):
            raise IncompatibleStateError(
                f"Expected a {cls.__name__}, found a {model.FAMILY} model."
            )
        return model


class TrainingState(abc.ABC):
    """A mergeable training state (DESIGN.md §1).

    Subclasses set ``FAMILY``, ``SERIAL_VERSION``, ``CONFIG`` (a frozen dataclass whose
    fields must match for two states to merge) and ``MODEL``, are decorated with
    :func:`register`, and implement the abstract methods below.

    Contract (checked for every family by ``tests/contract``):

    * ``update(block)`` folds a block in, may mutate ``self`` and returns it; it never
      changes the block. Updating with a block equals updating row by row.
    * ``merge(other)`` returns a new state; neither input changes. It is associative
      and, up to the documented tolerance, independent of how data was split.
    * ``to_bytes``/``from_bytes`` round-trip exactly; the size depends on the config,
      never on the number of rows.
    """

    FAMILY: ClassVar[str]
    SERIAL_VERSION: ClassVar[int] = 1
    CONFIG: ClassVar[type]
    MODEL: ClassVar[type[Model]]
    #: The kind of block ``update`` takes (:mod:`beam_ml.core.block`).
    BLOCK_KIND: ClassVar[type[BlockKind]]
    #: How new data, rounds of replicas and epochs extend a state (:class:`ResumePlan`):
    #: by default the new data's own state is merged in, one pass, no rounds to finish.
    PLAN: ClassVar[ResumePlan] = ResumePlan()

    def __init__(self, config: Any):
        if not isinstance(config, self.CONFIG):
            raise TypeError(
                f"{type(self).__name__} needs a {self.CONFIG.__name__}; got {type(config).__name__}."
            )
        self.config = config

    @classmethod
    def empty(cls: type[StateT], config: Any) -> StateT:
        """The state that has seen no data."""
        return cls(config)

    @property
    @abc.abstractmethod
    def n_seen(self) -> int:
        """The number of rows folded into this state."""

    def is_empty(self) -> bool:
        return self.n_seen == 0

    @property
    @abc.abstractmethod
    def input_spec(self) -> InputSpec | None:
        """What ``update`` takes, once the state knows it (a feature count may come
        from the first block): None before. Two states merge only when both specs are
        equal or one is None."""

    def _check(self, block: Any) -> BlockKind:
        """``block`` validated as this state's kind and input (or BadInputError)."""
        return self.BLOCK_KIND.validate(block, owner=type(self).__name__, spec=self.input_spec)

    @abc.abstractmethod
    def update(self: StateT, block: Any) -> StateT:
        """Fold one block in (vectorized) and return ``self``."""

    @abc.abstractmethod
    def merge(self: StateT, other: StateT) -> StateT:
        """A new state equal to having seen the data of both."""

    @abc.abstractmethod
    def derive(self, **params: Any) -> Model:
        """A model, chosen by ``params``, computed from the state alone."""

    def continued(self: StateT) -> StateT:
        """The start of further training (``PLAN.resume == 'continue'``)."""
        raise NotImplementedError(f"{self.FAMILY} states are extended by merging.")

    def followed_by(self: StateT, later: StateT) -> StateT:
        """This state extended by ``later``, trained from ``self.continued()`` on new rows."""
        raise NotImplementedError(f"{self.FAMILY} states are extended by merging.")

    def compact(self: StateT) -> StateT:
        """A possibly smaller equivalent state (called before shuffles)."""
        return self

    def finish_round(self: StateT, start: StateT | None) -> StateT:
        """This merge of a round's replicas, finished against ``start``, the point they
        all began at (``None``: the initial state); called when ``PLAN.finishes_rounds``.
        Statistics states: itself."""
        return self

    # --- compatibility and serialization ---------------------------------------------
    def with_runtime_options(self: StateT, config: Any) -> StateT:
        """This state with ``config``'s runtime options (where its work runs: the device),
        which merging never compares, so a checkpoint trained on a GPU resumes on a CPU.
        A config that differs in more is left to merging to refuse: the state as it is."""
        if config != self.config or config_to_dict(config) == config_to_dict(self.config):
            return self
        meta, arrays = self._payload()
        meta = {"n_seen": int(self.n_seen), **meta}
        return type(self)._from_payload(config, meta, {k: v.copy() for k, v in arrays.items()})

    @property
    def fingerprint(self) -> str:
        return serial.fingerprint(self.FAMILY, config_to_dict(self.config))

    def check_mergeable(self, other: TrainingState) -> None:
        """Raise :class:`IncompatibleStateError` unless ``other`` may merge with self:
        same class, same config, and the same input spec once both know it."""
        if type(other) is not type(self):
            raise IncompatibleStateError(
                f"Cannot merge a {type(self).__name__} with a {type(other).__name__}."
            )
        if other.config != self.config:
            mine, theirs = config_to_dict(self.config), config_to_dict(other.config)
            diff = {k: (mine[k], theirs[k]) for k in mine if mine[k] != theirs[k]}
            raise IncompatibleStateError(
                f"Cannot merge {self.FAMILY} states trained with different configs: "
                + ", ".join(f"{k}={a!r} vs {b!r}" for k, (a, b) in diff.items())
            )
        mine, theirs = self.input_spec, other.input_spec
        if None not in (mine, theirs) and mine != theirs:
            raise IncompatibleStateError(
                f"Cannot merge {self.FAMILY} states {mine.mismatch(theirs)}."
            )

    @abc.abstractmethod
    def _payload(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """(JSON-able scalars, named arrays) that fully describe the state."""

    @classmethod
    @abc.abstractmethod
    def _from_payload(
        cls: type[StateT], config: Any, meta: dict[str, Any], arrays: dict[str, np.ndarray]
    ) -> StateT: ...

    def to_bytes(self) -> bytes:
        meta, arrays = self._payload()
        meta = {"n_seen": int(self.n_seen), **meta}
        return serial.pack(
            "state", self.FAMILY, self.SERIAL_VERSION, config_to_dict(self.config), meta, arrays
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> TrainingState:
        state = load_state(data)
        if cls is not TrainingState and not isinstance(state, cls):
            raise IncompatibleStateError(
                f"Expected a {cls.__name__}, found a {state.FAMILY} state."
            )
        return state

    def __repr__(self) -> str:
        return f"{type(self).__name__}(n_seen={self.n_seen}, config={self.config})"


def load_state(data: bytes, source: str | None = None) -> TrainingState:
    """Rebuild any registered state from its bytes (never runs code from the bytes).

    Any inconsistency between the header, the config and the arrays raises a one-line
    :class:`~beam_ml.core.errors.CorruptStateError` (or ``IncompatibleStateError``)
    that starts with ``source`` when given (the file the bytes came from).
    """
    packed = serial.unpack(data, expected_kind="state", source=source)
    where = source or f"The beam_ml {packed.family} state"
    with _rebuilding(where, packed):
        cls = state_class(packed.family)
        _check_version(cls, packed)
        try:
            config = config_from_dict(cls.CONFIG, packed.config)
        except (TypeError, ValueError) as exc:
            raise IncompatibleStateError(f"the header field 'config' is invalid: {exc}") from None
        meta, arrays = _Reads(packed.meta), _Reads(packed.arrays)
        state = cls._from_payload(config, meta, arrays)
        _check_all_read(packed, meta, arrays, ignored={"n_seen"})
        declared = getattr(config, "feature_dim", None)
        found = getattr(state.input_spec, "n_features", None)
        if None not in (declared, found) and declared != found:
            raise CorruptStateError(
                f"the header field 'config.feature_dim' ({declared}) does not match the "
                f"state's arrays ({found} features)."
            )
        if state.n_seen != packed.meta["n_seen"]:
            raise CorruptStateError(
                f"the header field 'meta.n_seen' ({packed.meta['n_seen']}) does not match "
                f"the state's content ({state.n_seen} rows)."
            )
    return state


def load_model(data: bytes, source: str | None = None) -> Model:
    """Rebuild any registered model from its bytes (see :func:`load_state`)."""
    packed = serial.unpack(data, expected_kind="model", source=source)
    where = source or f"The beam_ml {packed.family} model"
    with _rebuilding(where, packed):
        cls = state_class(packed.family).MODEL
        _check_version(cls, packed)
        meta, arrays = _Reads(packed.meta), _Reads(packed.arrays)
        model = cls._from_payload(meta, arrays)
        _check_all_read(packed, meta, arrays, ignored=set())
        # Models are small and their arrays must fit one another: one row through the
        # model finds what a shape check per family would (a transposed matrix, say).
        model.evaluate(model.input_spec.probe())
    return model


class _Reads(dict):
    """A dict that remembers which keys were read: a meta field or array that the
    family's reader never looks at is not a part of it (a renamed array would
    otherwise leave an empty state that claims n_seen rows)."""

    def __init__(self, values: dict[str, Any]):
        super().__init__(values)
        self.read: set[str] = set()

    def __getitem__(self, key: str) -> Any:
        self.read.add(key)
        return super().__getitem__(key)

    def get(self, key: str, default: Any = None) -> Any:
        self.read.add(key)
        return super().get(key, default)

    def keys(self) -> Any:  # ``**arrays`` and iteration read everything
        self.read.update(dict.keys(self))
        return super().keys()

    def __iter__(self) -> Iterator[str]:
        self.read.update(dict.keys(self))
        return super().__iter__()

    def items(self) -> Any:
        self.read.update(dict.keys(self))
        return super().items()

    def values(self) -> Any:
        self.read.update(dict.keys(self))
        return super().values()


def _check_all_read(packed: serial.Packed, meta: _Reads, arrays: _Reads, ignored: set[str]) -> None:
    for field, reads in (("meta field", meta), ("array", arrays)):
        unread = sorted(set(dict.keys(reads)) - reads.read - ignored)
        if unread:
            raise CorruptStateError(
                f"the {field} {unread[0]!r} is not part of a {packed.family} {packed.kind} "
                "(renamed or added: the file was edited or damaged)."
            )


@contextlib.contextmanager
def _rebuilding(where: str, packed: serial.Packed) -> Iterator[None]:
    """Turn whatever a family's ``_from_payload`` raises on bytes it cannot use (a
    missing array or meta field, a shape that does not fit) into one line naming
    ``where`` and, when it can tell, the field."""
    try:
        yield
    except BeamMLError as exc:
        raise type(exc)(_one_line(f"{where}: {exc}")) from None
    except KeyError as exc:
        key = exc.args[0] if exc.args else "?"
        raise CorruptStateError(
            _one_line(
                f"{where}: the {packed.family} {packed.kind} needs the meta field or "
                f"array {key!r}, which is missing."
            )
        ) from None
    except (TypeError, ValueError, IndexError, AttributeError, ArithmeticError, MemoryError) as exc:
        raise CorruptStateError(
            _one_line(
                f"{where}: its header and arrays do not fit a {packed.family} "
                f"{packed.kind} ({type(exc).__name__}: {exc})."
            )
        ) from None


def _one_line(message: str) -> str:
    return " ".join(message.split())
