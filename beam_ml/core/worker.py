"""The worker process of a local multi-process run, with the logging its command chose.

``--direct_running_mode multi_processing`` starts each worker as ``python -m
apache_beam.runners.worker.sdk_worker_main``, which inherits the command's standard
error: its imports log warnings (no GCS file system, no apitools), the first of them
makes Python's default logging print everything at INFO, and the harness then logs a
dozen INFO lines per worker. The ``beam-ml`` command asks for this module instead
(:class:`beam_ml.core.runner.LocalRunner` does, when :data:`LOG_LEVELS_ENV` is set): it
sets up standard error with those levels *before* Beam is imported, then runs Beam's
worker unchanged. What a worker logs still reaches the runner through the Fn API, and a
failed bundle's error is reported by the runner.

No Beam import at module level: importing Beam logs.
"""

from __future__ import annotations

import logging
import os
import sys

__all__ = ["LOG_LEVELS_ENV", "log_levels", "main"]

#: The environment variable a worker reads its levels from: ``name=LEVEL`` pairs
#: separated by commas; ``=LEVEL`` (no name) for every other logger. E.g.
#: ``beam_ml=WARNING,apache_beam=CRITICAL,=ERROR``.
LOG_LEVELS_ENV = "BEAM_ML_WORKER_LOG_LEVELS"


def log_levels(text: str) -> dict[str, int]:
    """``{logger name: level}`` from :data:`LOG_LEVELS_ENV`'s syntax; '' is the default."""
    levels: dict[str, int] = {}
    for item in text.split(","):
        name, _, level = item.strip().rpartition("=")
        if level:
            value = logging.getLevelName(level.strip().upper())
            levels[name.strip()] = value if isinstance(value, int) else logging.WARNING
    return levels


class _ByLogger(logging.Filter):
    """Lets a record through when it reaches the level set for its logger (or the
    closest parent named): the harness resets the root logger's level as it starts, so
    the levels live here, on the handler."""

    def __init__(self, levels: dict[str, int]):
        super().__init__()
        self._levels = levels

    def filter(self, record: logging.LogRecord) -> bool:
        name = record.name
        while name not in self._levels and name:
            name = name.rpartition(".")[0]
        return record.levelno >= self._levels.get(name, logging.WARNING)


def main() -> None:
    text = os.environ.get(LOG_LEVELS_ENV)
    if text:
        levels = log_levels(text)
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        handler.addFilter(_ByLogger(levels))
        logging.getLogger().addHandler(handler)  # and no implicit basicConfig later
        if levels.get("apache_beam", logging.WARNING) > logging.ERROR:
            # Not even Beam's errors: the harness also prints a failed bundle's traceback
            # straight to sys.stderr, and the runner reports that failure anyway (the
            # command as one line). The handler above keeps the real standard error.
            sys.stderr = open(os.devnull, "w")  # noqa: SIM115 (for the process's life)
    from apache_beam.runners.worker import sdk_worker_main

    sdk_worker_main.main(sys.argv)


if __name__ == "__main__":
    main()
