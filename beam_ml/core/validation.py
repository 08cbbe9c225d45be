"""Parameter checks with scikit-learn style messages [STYLE §1.7]."""

from __future__ import annotations

import numbers
from typing import Any

__all__ = ["check_int", "check_choice", "check_bool"]


def check_int(value: Any, name: str, where: str, low: int, high: float | None = None) -> int:
    """Return ``value`` if it is an int in [low, high], else raise ValueError."""
    ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if ok and value >= low and (high is None or value <= high):
        return int(value)
    upper = "inf" if high is None else int(high)
    raise ValueError(
        f"The {name!r} parameter of {where} must be an int in [{low}, {upper}]. "
        f"Got {value!r} instead."
    )


def check_choice(value: Any, name: str, where: str, choices: tuple[str, ...]) -> str:
    if value in choices:
        return value
    raise ValueError(
        f"The {name!r} parameter of {where} must be one of {list(choices)}. Got {value!r} instead."
    )


def check_bool(value: Any, name: str, where: str) -> bool:
    if isinstance(value, bool):
        return value
    raise ValueError(f"The {name!r} parameter of {where} must be a bool. Got {value!r} instead.")
