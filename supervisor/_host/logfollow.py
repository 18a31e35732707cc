"""Follow one replica's log as it grows, by inode, across any number of rotations between two reads.

The writer (``logs.RotatingLogFile``) closes ``x.log`` when it is full and shifts the chain:
``x.log.N-1 -> x.log.N``, ..., ``x.log -> x.log.1``, then starts a new ``x.log``. A renamed file keeps its
inode, so the follower holds the file it reads open and reads it to its end, whatever its name is by now.
Once ``x.log`` is another inode, the files written since are the ones in front of ours in the chain: they
are read from their beginning, oldest first, and the newest one is held from then on. Lines are lost only
when the writer rotates more than ``backups`` times between two reads (the files after ours were deleted by
then); the follower then tells how much (``take_missed``), from where each file starts in the whole
output, which the writer keeps in ``x.offsets`` (``logs.ChainOffsets``).
"""

from __future__ import annotations

import contextlib
import os
import re
from io import BufferedReader
from pathlib import Path
from typing import NamedTuple

from .logs import offsets_path, read_offsets

__all__ = ["LogFollower", "Missed"]


class Missed(NamedTuple):
    """Output lost to rotation in one gap: exactly ``bytes``, about ``lines`` (at the mean length of the
    lines read just after the gap); both None when the writer left no offsets to tell."""

    bytes: int | None
    lines: int | None


class LogFollower:
    """Reads ``path`` (``x.log``) and whatever rotation made of it; ``new_lines`` returns complete lines."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: BufferedReader | None = None
        self._inode: int | None = None
        self._partial = b""
        self._start: int | None = None  #: where the file held starts in the whole output
        self._missed: list[Missed] = []
        self._file = self._open(path)

    def _open(self, path: Path) -> BufferedReader | None:
        try:
            file = open(path, "rb")  # noqa: SIM115 - kept open across reads, closed in close()
        except OSError:
            return None
        self._hold(file)
        return file

    def _hold(self, file: BufferedReader) -> None:
        self._inode = os.fstat(file.fileno()).st_ino
        self._start = read_offsets(offsets_path(self.path)).get(self._inode)

    def take_missed(self) -> list[Missed]:
        """What was lost since the last call, one entry per gap: the writer rotated past every backup
        between two reads and deleted files this follower never read."""
        missed, self._missed = self._missed, []
        return missed

    def history(self, count: int) -> list[str]:
        """The last ``count`` lines up to now (reaching into ``x.log.1`` if the file is young); reading
        continues from here."""
        if self._file is None:
            return []
        lines = self._file.read().split(b"\n")
        self._partial = lines.pop()
        if len(lines) < count:
            with contextlib.suppress(OSError):
                lines = self.path.with_name(self.path.name + ".1").read_bytes().split(b"\n")[:-1] + lines
        return [_text(line) for line in lines[-count:]] if count else []

    def new_lines(self) -> list[str]:
        """Every complete line written since the last call, in order, across rotations."""
        lines = self._read_to_end(self._file)
        try:
            current = os.stat(self.path).st_ino
        except OSError:
            current = None  # between the rename and the new file: the chain is looked at once it exists
        if current is not None and current == self._inode and self._file is not None:
            return lines
        if current is None and self._file is not None:
            return lines
        newer, ours_kept = self._newer_files()
        if not newer:
            return lines
        gap = None if ours_kept else self._gap_before(newer[0])
        if self._partial:  # the writer writes whole lines; a cut one ends with its file
            lines.append(_text(self._partial))
            self._partial = b""
        after_gap = len(lines)
        for file in newer[:-1]:  # finished files, oldest first
            lines += self._read_to_end(file)
            if self._partial:
                lines.append(_text(self._partial))
                self._partial = b""
            file.close()
        self.close()
        self._file = newer[-1]
        self._hold(self._file)
        lines += self._read_to_end(self._file)
        if not ours_kept and gap != 0:  # the lines just after a gap are the likeliest like those lost in it
            self._missed.append(Missed(gap, None if gap is None else _line_count(gap, lines[after_gap:])))
        return lines

    def _gap_before(self, oldest_newer: BufferedReader) -> int | None:
        """Our file left the chain: the bytes written between its end and ``oldest_newer`` (0: none lost),
        None when the writer left no offsets to tell. Ours is read to its end (we hold it open)."""
        assert self._file is not None
        start = read_offsets(offsets_path(self.path)).get(os.fstat(oldest_newer.fileno()).st_ino)
        if start is None or self._start is None:
            return None
        return max(0, start - (self._start + os.fstat(self._file.fileno()).st_size))

    def _newer_files(self) -> tuple[list[BufferedReader], bool]:
        """The files written after ours, opened, oldest first (all of the chain if ours is gone), and whether
        ours is still in the chain.

        Scanning from ``x.log`` towards the oldest backup, a rotation in the middle of the scan can only
        move a file further along, where we meet it again (same inode, skipped): nothing is missed."""
        found: list[BufferedReader] = []
        inodes: set[int] = set()
        for index in range(self._last_backup() + 2):  # one past the last: a rotation may have just added it
            path = self.path if index == 0 else self.path.with_name(f"{self.path.name}.{index}")
            try:
                file = open(path, "rb")  # noqa: SIM115 - handed to the caller, which closes it
            except OSError:
                continue  # a gap while the chain shifts
            inode = os.fstat(file.fileno()).st_ino
            if inode == self._inode:
                file.close()
                return found[::-1], True
            if inode in inodes:
                file.close()
                continue
            inodes.add(inode)
            found.append(file)
        return found[::-1], self._file is None

    def _last_backup(self) -> int:
        pattern = re.compile(re.escape(self.path.name) + r"\.(\d+)")
        indices = [0]
        with contextlib.suppress(OSError):
            for name in os.listdir(self.path.parent):
                match = pattern.fullmatch(name)
                if match:
                    indices.append(int(match.group(1)))
        return max(indices)

    def _read_to_end(self, file: BufferedReader | None) -> list[str]:
        if file is None:
            return []
        data = file.read()
        if not data:
            return []
        pieces = (self._partial + data).split(b"\n")
        self._partial = pieces.pop()
        return [_text(piece) for piece in pieces]

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def _line_count(missed_bytes: int, sample: list[str]) -> int | None:
    """About how many lines ``missed_bytes`` held, at the mean length of the ``sample`` lines."""
    size = sum(len(line.encode()) + 1 for line in sample)
    return round(missed_bytes * len(sample) / size) if size else None


def _text(line: bytes) -> str:
    return line.decode("utf-8", "replace").rstrip("\r")
