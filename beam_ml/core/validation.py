"""Parameter checks with scikit-learn style messages [STYLE §1.7].

One-off checks of a single value (derive arguments); configs declare theirs with
:mod:`beam_ml.core.constraints`, which writes every message.
"""

from __future__ import annotations

from typing import Any

from beam_ml.core.constraints import Interval, Options, check_value

__all__ = ["check_int", "check_float", "check_choice", "check_bool"]


def check_int(value: Any, name: str, where: str, low: int, high: float | None = None) -> int:
    """Return ``value`` if it is an int in [low, high], else raise ValueError."""
    return int(check_value(value, name, where, [Interval(int, low, high)]))


def check_float(
    value: Any, name: str, where: str, low: float, high: float | None = None, closed: str = "both"
) -> float:
    """Return ``value`` as a float if it is a finite real in the interval (``closed`` as
    :class:`Interval`'s), else raise ValueError."""
    return float(check_value(value, name, where, [Interval(float, low, high, closed)]))


def check_choice(value: Any, name: str, where: str, choices: tuple[str, ...]) -> str:
    return check_value(value, name, where, [Options(tuple(choices))])


def check_bool(value: Any, name: str, where: str) -> bool:
    return check_value(value, name, where, [bool])
