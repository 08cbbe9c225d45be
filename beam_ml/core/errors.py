"""Exceptions raised by beam_ml.

Every error a user can cause is a subclass of ``BeamMLError`` and of the builtin
exception a Python programmer would expect (``ValueError`` for bad values), so
``except ValueError`` keeps working.
"""

from __future__ import annotations

__all__ = [
    "BeamMLError",
    "BadInputError",
    "NotEnoughDataError",
    "IncompatibleStateError",
    "CorruptStateError",
]


class BeamMLError(Exception):
    """Base class of every beam_ml error."""


class BadInputError(BeamMLError, ValueError):
    """A block or record does not have the shape or values the algorithm expects."""


class NotEnoughDataError(BeamMLError, ValueError):
    """A model was asked of a state that has not seen enough rows to define it."""


class IncompatibleStateError(BeamMLError, ValueError):
    """Bytes or states that cannot be read or merged: foreign, other version or config."""


class CorruptStateError(IncompatibleStateError):
    """Bytes that claim to be a beam_ml state or model but are truncated or damaged."""
