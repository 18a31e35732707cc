"""The one writer of ``events.jsonl``: the supervisor, its watchdog and ``supervisor stop`` all append here;
and its reader.

Each event is one line written with one ``write`` on an ``O_APPEND`` descriptor, so lines from several
writers never interleave. A write that fails (a full disk) is a warning once, never an exception: the
event stays in memory, the run goes on. A full disk can take part of a line: the next event then starts
on a line of its own, and the reader skips the line cut short, saying so. Each line carries the records
version it was written in (``"v"``, ``supervisor._records.version``): a file begun by a newer topovisor is
refused with a message that says so; a line a newer ``supervisor stop`` appended to an older run's file is
skipped, with a warning. Standard library only: the watchdog imports this at start.
"""

from __future__ import annotations

import errno
import json
import logging
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from .version import EVENT_VERSION_FIELD, RECORDS_VERSION, check_records_version

__all__ = ["EventFile", "append_event", "read_events"]

_FLAGS = os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC  #: read too: is the last line cut short?
_log = logging.getLogger("supervisor.records")


def _line(event: Mapping[str, Any]) -> bytes:
    return (json.dumps({EVENT_VERSION_FIELD: RECORDS_VERSION, **event}) + "\n").encode()


def _ends_cut_short(fd: int) -> bool:
    """The file's last line has no newline: a write cut short by a full disk (or a crash) left it."""
    size = os.fstat(fd).st_size
    return size > 0 and os.pread(fd, 1, size - 1) != b"\n"


def append_event(path: Path, event: Mapping[str, Any]) -> None:
    """Append one event to ``path`` (open, write, close), on a line of its own even after a line cut
    short; raises OSError for the caller to judge (a disk that took only part of it: ENOSPC)."""
    fd = os.open(path, _FLAGS, 0o600)
    try:
        line = (b"\n" if _ends_cut_short(fd) else b"") + _line(event)
        if os.write(fd, line) < len(line):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
    finally:
        os.close(fd)


def read_events(path: Path, *, max_bytes: int) -> Iterator[dict[str, Any]]:
    """The events of ``path`` (its first ``max_bytes``), oldest first; a line that does not parse (cut
    short by a full disk or a crash) is skipped with a warning that names the file and the line.
    ``IncompatibleVersion`` when the first event is of a newer records version (a newer topovisor's run);
    a newer line after it (appended by a newer ``supervisor stop``) is skipped with a warning."""
    try:
        with open(path, "rb") as file:
            data = file.read(max_bytes)
    except OSError:
        return
    skipped: list[int] = []
    newer: list[int] = []
    first = True
    for number, line in enumerate(data.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            event = json.loads(line)
        except ValueError:
            event = None
        if not isinstance(event, dict):
            skipped.append(number)
            continue
        if first:
            first = False
            what = f"{path.name}, line {number}"
            check_records_version(event, what, field=EVENT_VERSION_FIELD, run_id=path.parent.name)
        elif _is_newer(event.get(EVENT_VERSION_FIELD)):
            newer.append(number)
            continue
        yield event
    if skipped:
        _log.warning(
            "%s: skipped line %s: cut short or not an event (a full disk, or a crash while writing)",
            path,
            _numbers(skipped),
        )
    if newer:
        _log.warning(
            "%s: skipped line %s: written by a newer topovisor (records version above %d)",
            path,
            _numbers(newer),
            RECORDS_VERSION,
        )


def _is_newer(version: object) -> bool:
    return type(version) is int and version > RECORDS_VERSION


def _numbers(lines: list[int]) -> str:
    return ", ".join(map(str, lines[:5])) + (f" and {len(lines) - 5} more" if len(lines) > 5 else "")


class EventFile:
    """An ``events.jsonl`` kept open for a run's many events; ``write`` never raises."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.failed = False  #: a write failed (warned once)
        self._fd: int | None = os.open(path, _FLAGS, 0o600)
        self._cut_short = _ends_cut_short(self._fd)  #: the next event must begin a new line first

    def write(self, event: Mapping[str, Any]) -> bool:
        """Append one event; False (and a warning the first time) when the disk refuses it."""
        if self._fd is None:
            return False
        line = (b"\n" if self._cut_short else b"") + _line(event)
        try:
            written = os.write(self._fd, line)
            if written < len(line):  # the disk took part of it: that line is cut short
                self._cut_short = True
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        except OSError as exc:
            if not self.failed:
                self.failed = True
                why = exc.strerror or str(exc)
                _log.warning("cannot write %s (%s); events are kept in memory only", self.path, why)
            return False
        self._cut_short = False
        return True

    def close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)
