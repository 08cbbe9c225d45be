"""Names a package exports from its modules, imported on first use (PEP 562).

``import beam_ml`` (and ``beam_ml.io``, ``beam_ml.transforms``) then costs what the
names actually used cost: the ``beam-ml`` commands that run no pipeline (``derive``,
``inspect``) never import Apache Beam, about 1.4 s of their time otherwise.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["export"]


def export(namespace: dict[str, Any], where: dict[str, str], name: str) -> Any:
    """The package attribute ``name``, from the module ``where[name]``.

    Called by a package's module-level ``__getattr__`` with its ``globals()``: the value
    is stored there, so the next lookup is an ordinary one.
    """
    if name not in where:
        raise AttributeError(f"module {namespace['__name__']!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(where[name]), name)
    namespace[name] = value
    return value
