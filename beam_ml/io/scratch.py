"""Local scratch folders that a killed run does not leave behind: ``temp_dir``.

Spill files of pipes, Kafka and Pub/Sub records and a cycle's dead letters go in a folder
named ``beam_ml_<kind>_pid<pid>_*``; the next run's :func:`temp_dir` removes the folders
of processes that are gone (a ``kill -9`` skips every clean-up).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile

__all__ = ["sweep_temp_dirs", "temp_dir"]

_log = logging.getLogger("beam_ml.io")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: it exists, as another user's
        return True
    return True


def sweep_temp_dirs(kind: str) -> list[str]:
    """Remove the folders :func:`temp_dir` made for ``kind`` in processes that are gone
    (a ``kill -9`` skips every clean-up); returns their paths. Only this user's."""
    root = tempfile.gettempdir()
    pattern = re.compile(rf"beam_ml_{re.escape(kind)}_pid(\d+)_")
    removed = []
    try:
        names = os.listdir(root)
    except OSError:
        return removed
    for name in names:
        match = pattern.match(name)
        if not match or int(match.group(1)) == os.getpid() or _alive(int(match.group(1))):
            continue
        path = os.path.join(root, name)
        try:
            if not os.path.isdir(path) or os.lstat(path).st_uid != os.getuid():
                continue
        except OSError:
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    if removed:
        _log.debug("removed the temporary folders of ended runs: %s", removed)
    return removed


def temp_dir(kind: str) -> str:
    """A new local temporary folder ``beam_ml_<kind>_pid<pid>_*`` (spill files of
    pipes, Kafka and Pub/Sub records, dead letters of a cycle), after removing those a
    process that no longer runs left behind. Its owner removes it when done; the pid in
    its name lets the next run remove it when the owner was killed."""
    sweep_temp_dirs(kind)
    return tempfile.mkdtemp(prefix=f"beam_ml_{kind}_pid{os.getpid()}_")
