"""Declarative parameter constraints: today's messages, from one function."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import pytest

from beam_ml.core.constraints import (
    Described,
    Hidden,
    Interval,
    Options,
    check_value,
    validate_parameters,
)
from beam_ml.core.validation import check_bool, check_choice, check_int


@dataclass(frozen=True)
class _Config:
    size: int
    mode: str = "a"
    flag: bool = True
    limit: int | None = None
    factor: int | str = "auto"
    rate: float = 0.5

    PARAMETER_CONSTRAINTS: ClassVar = {
        "size": [Interval(int, 1, 10)],
        "mode": [Options(("a", "b"))],
        "flag": [bool],
        "limit": [Interval(int, 0, None), None],
        "factor": [Hidden(Options(("auto",))), Interval(int, 1, None)],
        "rate": [Interval(float, 0.0, 1.0, closed="left")],
    }

    def __post_init__(self) -> None:
        validate_parameters(self)


def test_valid_values_pass():
    _Config(1, "b", False, 0, 3, 0.0)
    _Config(10, limit=None, factor="auto", rate=0.999)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"size": 0}, "The 'size' parameter of _Config must be an int in [1, 10]. Got 0 instead."),
        ({"size": True}, "must be an int in [1, 10]. Got True instead."),
        ({"size": 2.0}, "must be an int in [1, 10]. Got 2.0 instead."),
        (
            {"size": 1, "mode": "c"},
            "The 'mode' parameter of _Config must be one of ['a', 'b']. Got 'c' instead.",
        ),
        ({"size": 1, "flag": 1}, "The 'flag' parameter of _Config must be a bool. Got 1 instead."),
        (
            {"size": 1, "limit": -1},
            "The 'limit' parameter of _Config must be an int in [0, inf]. Got -1 instead.",
        ),
        (
            {"size": 1, "factor": "x"},
            "The 'factor' parameter of _Config must be an int in [1, inf]. Got 'x' instead.",
        ),
        (
            {"size": 1, "rate": 1.0},
            "The 'rate' parameter of _Config must be a float in [0.0, 1.0). Got 1.0 instead.",
        ),
        ({"size": 1, "rate": float("nan")}, "must be a float in [0.0, 1.0). Got nan instead."),
    ],
)
def test_messages_name_field_owner_and_what_is_accepted(kwargs, message):
    with pytest.raises(ValueError) as info:
        _Config(**kwargs)
    assert message in str(info.value)


def test_fields_are_checked_in_the_declared_order():
    with pytest.raises(ValueError, match="'size'"):
        _Config(0, mode="c")


def test_described_names_a_group_in_its_own_words():
    allowed = [
        Described(
            "a float > 0, 'balanced' or 'auto'",
            Interval(float, 0.0, None, closed="neither"),
            Options(("balanced", "auto")),
        )
    ]
    assert check_value("balanced", "w", "X", allowed) == "balanced"
    assert check_value(2.5, "w", "X", allowed) == 2.5
    with pytest.raises(
        ValueError,
        match=r"^The 'w' parameter of X must be a float > 0, 'balanced' or 'auto'. Got 0.0 instead.$",
    ):
        check_value(0.0, "w", "X", allowed)


def test_a_constraint_on_a_missing_field_is_a_programming_error():
    with pytest.raises(TypeError, match="no field 'nope'"):
        validate_parameters(_Config(1), {"nope": [bool]})


def test_interval_rejects_open_int_bounds_and_other_types():
    with pytest.raises(ValueError):
        Interval(int, 0, 1, closed="left")
    with pytest.raises(TypeError):
        Interval(str, 0, 1)
    with pytest.raises(TypeError, match="not a parameter constraint"):
        check_value(1, "x", "X", ["nonsense"])


def test_one_value_checks_keep_their_messages():
    assert check_int(3, "k", "f", 1, 5) == 3
    with pytest.raises(
        ValueError, match=r"^The 'k' parameter of f must be an int in \[1, 5\]. Got 6 instead.$"
    ):
        check_int(6, "k", "f", 1, 5)
    with pytest.raises(ValueError, match=r"must be one of \['x', 'y'\]. Got 'z' instead.$"):
        check_choice("z", "c", "f", ("x", "y"))
    with pytest.raises(
        ValueError, match=r"^The 'b' parameter of f must be a bool. Got 0 instead.$"
    ):
        check_bool(0, "b", "f")
