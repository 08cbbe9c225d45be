"""Declarative parameter constraints, checked in one place [STYLE §1.7].

A config declares what each field accepts, in the manner of scikit-learn's
``_parameter_constraints`` (``sklearn/utils/_param_validation.py``), and validates
itself in ``__post_init__`` with one call::

    @dataclass(frozen=True)
    class PCAConfig:
        PARAMETER_CONSTRAINTS: ClassVar[Constraints] = {
            "num_components": [Interval(int, 1, None)],
            "feature_dim": [Interval(int, 1, None), None],
            "algorithm_mode": [Options(("regular", "randomized", "sketch"))],
        }

        def __post_init__(self) -> None:
            validate_parameters(self)

A field is valid when any of its constraints accepts it; otherwise the error names the
field, the owner and what it accepts, in the form users already see::

    The 'num_components' parameter of PCAConfig must be an int in [1, inf]. Got 0 instead.

``None`` in a list accepts None without being named (an optional field), ``Hidden``
accepts without being named (``'auto'`` beside a number), and ``Described`` names a
group of constraints with a sentence of its own where the generated one would differ
from the message users know. Checks across fields stay in ``__post_init__``.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "Constraint",
    "Constraints",
    "Interval",
    "Options",
    "Hidden",
    "Described",
    "check_value",
    "validate_parameters",
]


class Constraint:
    """What a parameter accepts (``accepts``) and how an error names it (``describe``)."""

    shown = True

    def accepts(self, value: Any) -> bool:
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError


@dataclass(frozen=True)
class Interval(Constraint):
    """An int or a finite float in ``[low, high]`` (``None``: unbounded).

    ``closed`` says which ends belong to it for floats: 'both', 'left', 'right' or
    'neither'. Ints are always closed and named ``an int in [low, inf]`` (today's form,
    bracket included); floats ``a float in (low, high]`` with the bounds as written.
    """

    type: type
    low: float | None
    high: float | None
    closed: str = "both"

    def __post_init__(self) -> None:
        if self.type not in (int, float):
            raise TypeError(f"Interval takes int or float, not {self.type!r}.")
        if self.closed not in ("both", "left", "right", "neither"):
            raise ValueError("Interval's closed must be 'both', 'left', 'right' or 'neither'.")
        if self.type is int and self.closed != "both":
            raise ValueError("An int Interval is closed at both ends.")

    def accepts(self, value: Any) -> bool:
        if isinstance(value, bool):
            return False
        if self.type is int:
            if not isinstance(value, numbers.Integral):
                return False
        elif not (isinstance(value, numbers.Real) and math.isfinite(value)):
            return False
        left_open = self.closed in ("right", "neither")
        right_open = self.closed in ("left", "neither")
        if self.low is not None and (value <= self.low if left_open else value < self.low):
            return False
        return self.high is None or (value < self.high if right_open else value <= self.high)

    def describe(self) -> str:
        if self.type is int:
            high = "inf" if self.high is None else int(self.high)
            return f"an int in [{self.low}, {high}]"
        left = "(" if self.closed in ("right", "neither") else "["
        right = ")" if self.closed in ("left", "neither") else "]"
        low = -math.inf if self.low is None else self.low
        high = math.inf if self.high is None else self.high
        return f"a float in {left}{low}, {high}{right}"


@dataclass(frozen=True)
class Options(Constraint):
    """One of the given values, named ``one of ['a', 'b']`` in the order given."""

    values: tuple[Any, ...]

    def accepts(self, value: Any) -> bool:
        return value in self.values

    def describe(self) -> str:
        return f"one of {list(self.values)}"


@dataclass(frozen=True)
class Hidden(Constraint):
    """Accepts what ``constraint`` accepts; not named in the error message."""

    constraint: Any
    shown = False

    def accepts(self, value: Any) -> bool:
        return _as_constraint(self.constraint).accepts(value)


@dataclass(frozen=True, init=False)
class Described(Constraint):
    """Accepts what any of ``constraints`` accepts, named by ``description``."""

    description: str
    constraints: tuple[Any, ...]

    def __init__(self, description: str, *constraints: Any):
        object.__setattr__(self, "description", description)
        object.__setattr__(self, "constraints", constraints)

    def accepts(self, value: Any) -> bool:
        return any(_as_constraint(c).accepts(value) for c in self.constraints)

    def describe(self) -> str:
        return self.description


class _Type(Constraint):
    """``bool`` (or another type) in a constraint list: an instance of it."""

    def __init__(self, kind: type):
        self.kind = kind

    def accepts(self, value: Any) -> bool:
        return isinstance(value, self.kind)

    def describe(self) -> str:
        return f"a {self.kind.__name__}"


class _NoneConstraint(Constraint):
    shown = False

    def accepts(self, value: Any) -> bool:
        return value is None


Constraints = Mapping[str, Sequence[Any]]


def _as_constraint(item: Any) -> Constraint:
    if isinstance(item, Constraint):
        return item
    if item is None:
        return _NoneConstraint()
    if isinstance(item, type):
        return _Type(item)
    raise TypeError(f"{item!r} is not a parameter constraint.")


def check_value(value: Any, name: str, where: str, constraints: Sequence[Any]) -> Any:
    """Return ``value`` if one of ``constraints`` accepts it, else raise ValueError
    naming the parameter, ``where`` and what the shown constraints accept."""
    parsed = [_as_constraint(c) for c in constraints]
    if any(c.accepts(value) for c in parsed):
        return value
    need = " or ".join(c.describe() for c in parsed if c.shown)
    raise ValueError(f"The {name!r} parameter of {where} must be {need}. Got {value!r} instead.")


def validate_parameters(
    config: Any, constraints: Constraints | None = None, where: str | None = None
) -> None:
    """Check every field of the dataclass ``config`` that ``constraints`` (default: its
    class's ``PARAMETER_CONSTRAINTS``) names, in the order named; ``where`` defaults to
    the class name."""
    constraints = type(config).PARAMETER_CONSTRAINTS if constraints is None else constraints
    where = type(config).__name__ if where is None else where
    fields = {f.name for f in dataclasses.fields(config)}
    for name, allowed in constraints.items():
        if name not in fields:
            raise TypeError(f"{where} has no field {name!r} to constrain.")
        check_value(getattr(config, name), name, where, allowed)
