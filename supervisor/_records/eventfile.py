"""The one writer of ``events.jsonl``: the supervisor, its watchdog and ``supervisor stop`` all append here.

Each event is one line written with one ``write`` on an ``O_APPEND`` descriptor, so lines from several
writers never interleave. A write that fails (a full disk) is a warning once, never an exception: the
event stays in memory, the run goes on. Standard library only: the watchdog imports this at start.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["EventFile", "append_event"]

_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
_log = logging.getLogger("supervisor.records")


def _line(event: Mapping[str, Any]) -> bytes:
    return (json.dumps(event) + "\n").encode()


def append_event(path: Path, event: Mapping[str, Any]) -> None:
    """Append one event to ``path`` (open, write, close); raises OSError for the caller to judge."""
    fd = os.open(path, _FLAGS, 0o600)
    try:
        os.write(fd, _line(event))
    finally:
        os.close(fd)


class EventFile:
    """An ``events.jsonl`` kept open for a run's many events; ``write`` never raises."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.failed = False  #: a write failed (warned once)
        self._fd: int | None = os.open(path, _FLAGS, 0o600)

    def write(self, event: Mapping[str, Any]) -> bool:
        """Append one event; False (and a warning the first time) when the disk refuses it."""
        if self._fd is None:
            return False
        try:
            os.write(self._fd, _line(event))
        except OSError as exc:
            if not self.failed:
                self.failed = True
                why = exc.strerror or str(exc)
                _log.warning("cannot write %s (%s); events are kept in memory only", self.path, why)
            return False
        return True

    def close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)
