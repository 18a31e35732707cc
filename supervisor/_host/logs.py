"""A replica's output: drained from its pipe, normalised into lines, written to a rotating file, fanned out.

The file and every subscriber see the same complete lines. A line is never split across two files and
never written twice; ``\\r`` progress updates (tqdm) become lines of their own so logs stay readable.

The supervisor's own cost follows the output's volume, not its number of writes: the pipe is read into one
reused buffer, lines go from it to the file without a copy while nobody subscribes, and a writer that keeps
the pipe busy is read in batches (a short nap lets the 1 MiB pipe fill) instead of at each of its writes.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import math
import os
import time
import unicodedata
from collections.abc import Callable
from pathlib import Path

import anyio
import anyio.lowlevel

from supervisor._host.fileroom import release_room, reserve_room, room_helps

__all__ = [
    "MARK_PREFIX",
    "ChainOffsets",
    "LineStream",
    "RotatingLogFile",
    "mark_line",
    "offsets_path",
    "pump_pipe",
    "read_offsets",
]

LineSubscriber = Callable[[bytes], None]
_MAX_PARTIAL_LINE = 1 << 20  # a "line" this long with no newline is written out anyway
_TAIL_BYTES = 64 * 1024  # error messages and fatal-output checks read this much of the end
_READ_SIZE = 1 << 20  # the pipe's size (``process._PIPE_SIZE``): one read can empty it
_FIRST_READ_SIZE = 16 * 1024  # a replica's first read buffer: a quiet one never needs more
_BUSY_BYTES = 64 * 1024  # a wake-up that found this much: the writer is busy, so read it in batches
_NAP_MIN_SECONDS = 0.001  # asyncio's timers have 1 ms resolution: a shorter nap is a 1 ms one there
_NAP_MAX_SECONDS = 0.004  # how late a line of a busy writer's can be read (a ready line among its output)
_BUSY_GAP_SECONDS = 0.002  # output again this soon after the last: a busy writer of small writes (print)
_ROOM_FROM_BYTES = 256 * 1024  # a batch this large: a writer busy enough to reserve disk room for (``fileroom``)
_ROOM_BYTES = 2 << 20  # how far ahead of such a writer's batch; what is left is given back at rotation and close
_REOPEN_INTERVAL_SECONDS = 1.0  # after a failed write, how often to try the file again
_log = logging.getLogger("supervisor._host.logs")


MARK_PREFIX = "--- topovisor mark: "  #: starts every bookmark line that ``group.mark`` writes into the logs


#: Unicode categories a label may not hold: control characters (NUL, ESC of a terminal escape, NEL, DEL),
#: unpaired surrogates, and the line and paragraph separators (U+2028/U+2029, line breaks to many readers)
_NOT_IN_A_LABEL = frozenset({"Cc", "Cs", "Zl", "Zp"})
#: the bidirectional embeddings, overrides and isolates, which make a log line display other than it reads
_BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def _label_problem(label: object) -> str | None:
    if not isinstance(label, str) or not label.strip():
        return "is empty"
    for position, char in enumerate(label):
        category = unicodedata.category(char)
        if category in _NOT_IN_A_LABEL or char in _BIDI_CONTROLS:
            kind = {"Zl": "a line separator", "Zp": "a paragraph separator", "Cs": "a lone surrogate"}.get(
                category, "a bidirectional control" if char in _BIDI_CONTROLS else "a control character"
            )
            return f"has {kind} ({char!r}) at position {position}"
    return None


def mark_line(label: str, wall_time: float) -> bytes:
    """``--- topovisor mark: <label> <UTC ISO time> ---``: one line, clearly ours; a label is one line of
    printable text too (it goes into every replica's log: no forged lines, no terminal escapes, no NUL)."""
    problem = _label_problem(label)
    if problem is not None:
        shown = repr(label) if len(repr(label)) <= 120 else repr(label)[:117] + "..."
        raise ValueError(f"a mark's label is a non-empty single line of printable text; {shown} {problem}")
    when = datetime.datetime.fromtimestamp(wall_time, datetime.timezone.utc).isoformat(timespec="milliseconds")
    return f"{MARK_PREFIX}{label} {when} ---\n".encode()


class RotatingLogFile:
    """Appends whole lines; before a write would pass ``max_bytes`` it rotates ``x.log`` -> ``x.log.1`` ...

    A log that cannot be written (a full disk, the run dir deleted) never stops the output from being
    drained: lines are dropped and counted, ``on_error`` is called once per outage, and the file is tried
    again at most once a second, so a service never dies of EPIPE or blocks on a full pipe because of it.
    """

    def __init__(
        self, path: Path, max_bytes: int, backups: int, *, on_error: Callable[[OSError], None] | None = None
    ) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.backups = backups
        self.on_error = on_error
        self.error: OSError | None = None  #: the current outage, None while writes succeed
        self.dropped_bytes = 0
        self._retry_at = 0.0
        self._fd = -1
        self._size = 0
        self._present = 0  #: x.log.1 .. x.log.<present> exist (kept, not re-scanned)
        self._room_to = 0  #: disk room is reserved up to this offset of the current file (``fileroom``)
        self._room_helps: bool | None = None  #: whether reserving pays on the file's filesystem, once asked
        self._offsets = ChainOffsets(path)
        try:  # a replica (re)started after its logs dir was deleted must still start: never raise here
            self._fd = self._open()
            self._size = os.fstat(self._fd).st_size
            self._present = self._count_backups()
            self._offsets.resume(self._fd, [self._backup(i) for i in range(1, self._present + 1)])
        except OSError as error:
            self._failed(error, 0)

    def _open(self) -> int:
        """Open for appending; a logs dir that was deleted is made again (inside a run dir that exists)."""
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC
        try:
            return os.open(self.path, flags, 0o600)
        except FileNotFoundError:
            if not self.path.parent.parent.is_dir():
                raise
            self.path.parent.mkdir(mode=0o700, exist_ok=True)
            return os.open(self.path, flags, 0o600)

    def _backup(self, index: int) -> Path:
        return self.path.with_name(f"{self.path.name}.{index}")

    def _count_backups(self) -> int:
        present = 0
        while present < self.backups and self._backup(present + 1).exists():
            present += 1
        return present

    def write_lines(self, block: bytes | bytearray, start: int = 0, stop: int | None = None) -> None:
        """Write ``block[start:stop]`` (complete lines only), rotating between lines as needed; never raises
        OSError. A range of a reused read buffer is written from it, with no copy."""
        stop = len(block) if stop is None else stop
        if self.error is not None and not self._recover():
            self.dropped_bytes += stop - start
            return
        try:
            self._write_lines(block, start, stop)
        except OSError as error:
            self._failed(error, stop - start)

    def _write_lines(self, block: bytes | bytearray, start: int, stop: int) -> None:
        if stop - start >= _ROOM_FROM_BYTES and self._size + stop - start > self._room_to:
            self._reserve(stop - start)
        view = memoryview(block)
        while start < stop:
            room = self.max_bytes - self._size
            end = stop
            if end - start > room:
                cut = block.rfind(b"\n", start, start + max(room, 0))
                if cut < 0:  # the next line does not fit: rotate first, or write it alone if it never fits
                    if self._size > 0:
                        self._rotate()
                        continue
                    cut = block.find(b"\n", start, stop)
                    cut = stop - 1 if cut < 0 else cut
                end = cut + 1
            self._write_all(view[start:end])
            start = end
            if self._size >= self.max_bytes and start < stop:
                self._rotate()

    def _write_all(self, data: memoryview) -> None:
        while data:
            written = os.write(self._fd, data)
            self._size += written
            data = data[written:]

    def _reserve(self, coming: int) -> None:
        """This batch and a busy writer's next MiBs in blocks the file already has, up to the rotation.

        A reservation refused for a full disk is asked again only past its end (it may have kept part of
        the room, given back like the rest); one the file cannot have is not asked again."""
        if self._room_helps is None:
            self._room_helps = room_helps(self._fd)
        start = max(self._size, self._room_to)
        end = min(self._size + coming + _ROOM_BYTES, self.max_bytes)
        if not self._room_helps or end <= start:
            return
        if reserve_room(self._fd, start, end - start) is None:
            self._room_helps = False
        else:
            self._room_to = end

    def _rotate(self) -> None:
        """Shift only the backups that exist: the cost follows the files on disk, not ``backups``.

        The oldest backup of a full chain is removed before the shift, so no rename lands on a file that
        exists: ext4 writes out the renamed file's dirty pages then and there when one does (its
        ``auto_da_alloc``), which cost a busy log 6-8 ms of CPU and up to 30 ms of the event loop's time
        at each rotation, against 3 ms for the removal alone."""
        ended_at = self._size
        self._close_fd()
        if self.backups > 0:
            if self._present >= self.backups:
                with contextlib.suppress(FileNotFoundError):  # removed by hand meanwhile: one less to drop
                    os.unlink(self._backup(self.backups))
            for index in range(min(self._present, self.backups - 1), 0, -1):
                os.replace(self._backup(index), self._backup(index + 1))
            os.replace(self.path, self._backup(1))
            self._present = min(self._present + 1, self.backups)
        else:
            os.unlink(self.path)
        self._fd = self._open()
        self._size = 0
        self._offsets.rotated(self._fd, ended_at=ended_at, keep=self._present)

    def _failed(self, error: OSError, lost: int) -> None:
        self.dropped_bytes += lost
        self._retry_at = time.monotonic() + _REOPEN_INTERVAL_SECONDS
        if self.error is None:
            self.error = error
            _log.warning("cannot write %s (%s): dropping its output until it can be written again", self.path, error)
            if self.on_error is not None:
                self.on_error(error)

    def _recover(self) -> bool:
        """After an outage: reopen the file (at most once a second); True when writes can go on."""
        if time.monotonic() < self._retry_at:
            return False
        self._close_fd()
        try:
            self._fd = self._open()
            self._size = os.fstat(self._fd).st_size
            self._present = self._count_backups()
            self._offsets.resume(self._fd, [self._backup(i) for i in range(1, self._present + 1)])
        except OSError:
            self._retry_at = time.monotonic() + _REOPEN_INTERVAL_SECONDS
            return False
        _log.warning("%s is writable again; %d bytes of output were dropped", self.path, self.dropped_bytes)
        self.error = None
        return True

    def _close_fd(self) -> None:
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            if self._room_to:
                self._room_to = 0
                release_room(fd)
            with contextlib.suppress(OSError):  # ENOSPC/EIO can surface at close; the fd is gone anyway
                os.close(fd)

    def close(self) -> None:
        self._close_fd()
        self._offsets.close()


class ChainOffsets:
    """Where each file of a log's chain starts in the whole output (a byte offset, counted across
    rotations and restarts), in ``x.offsets`` beside ``x.log``: a follower that fell behind the backups
    (``logfollow``) tells from it how much it missed. Costs nothing per write (the file sizes are known)
    and one small write per rotation.

    The file holds one fixed-width record ``<inode> <offset>`` for ``x.log`` and each backup, newest first.
    It is a hint for readers: when it cannot be written the log goes on, and a reader says the amount is
    unknown."""

    def __init__(self, log: Path) -> None:
        self.path = offsets_path(log)
        self._chain: list[tuple[int, int]] = []  #: (inode, offset of its first byte), x.log first
        self._fd = -1
        self._written = 0

    def resume(self, fd: int, backups: list[Path]) -> None:
        """The chain on disk (``backups``: x.log.1 onwards), numbered as the file says, or from 0."""
        known = read_offsets(self.path)
        inodes = [os.fstat(fd).st_ino]
        for backup in backups:
            try:
                inodes.append(os.stat(backup).st_ino)
            except OSError:
                break
        self._chain = [(inode, known.get(inode, 0)) for inode in inodes]
        if inodes[0] not in known:
            self._save()

    def rotated(self, fd: int, *, ended_at: int, keep: int) -> None:
        """A new ``x.log`` (``fd``) follows one of ``ended_at`` bytes; ``keep`` backups are left."""
        start = (self._chain[0][1] if self._chain else 0) + ended_at
        self._chain = [(os.fstat(fd).st_ino, start), *self._chain][: keep + 1]
        self._save()

    def _save(self) -> None:
        text = "".join(f"{inode:20d} {start:20d}\n" for inode, start in self._chain).encode()
        try:
            if self._fd < 0:
                self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            os.pwrite(self._fd, text, 0)  # one small write of whole records: a reader sees old or new ones
            if len(text) < self._written:
                os.ftruncate(self._fd, len(text))
            self._written = len(text)
        except OSError:  # only a hint for readers: the log itself goes on
            self.close()

    def close(self) -> None:
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            with contextlib.suppress(OSError):
                os.close(fd)


def offsets_path(log: Path) -> Path:
    """``x.offsets`` beside ``x.log`` (not ``x.log.offsets``: readers take ``x.log.<n>`` for backups)."""
    return log.with_suffix(".offsets")


def read_offsets(path: Path) -> dict[int, int]:
    """``x.offsets``: inode -> the offset of its first byte in the whole output; empty when unreadable."""
    offsets: dict[int, int] = {}
    try:
        text = path.read_bytes().decode("ascii")
    except (OSError, UnicodeDecodeError):
        return offsets
    for line in text.splitlines():
        words = line.split()
        if len(words) == 2 and words[0].isdigit() and words[1].isdigit():
            offsets[int(words[0])] = int(words[1])
    return offsets


class LineStream:
    """Turns raw output chunks into complete lines for the log file, the tail buffer and subscribers."""

    def __init__(self, sink: RotatingLogFile | None) -> None:
        self.sink = sink
        self.bytes_seen = 0
        self._pending = b""
        self._tail = bytearray()  #: the end of the output: at least the last _TAIL_BYTES, trimmed now and then
        self._subscribers: list[LineSubscriber] = []
        self._activity: anyio.Event | None = None
        self.generation = 0  #: counts blocks of output; lets a waiter notice output that came meanwhile
        self.closed = False

    def subscribe(self, subscriber: LineSubscriber) -> Callable[[], None]:
        """Call ``subscriber`` with each block of complete lines; returns the unsubscribe function."""
        self._subscribers.append(subscriber)
        return lambda: self._subscribers.remove(subscriber) if subscriber in self._subscribers else None

    async def wait_activity(self, since: int | None = None) -> None:
        """Return once new output arrives (or the stream ends); at once if ``generation`` moved past
        ``since`` already (output that came while the caller was busy is not lost as a wake-up)."""
        if since is not None and self.generation != since:
            return
        if self.closed:
            await anyio.sleep_forever()
        if self._activity is None:
            self._activity = anyio.Event()
        await self._activity.wait()

    @property
    def fast(self) -> bool:
        """Whether output goes from the read buffer to the file with no copy: nobody subscribes (readiness,
        phases, a ``--logs`` or ``on_output`` consumer) and the file is the only reader."""
        return not self._subscribers and self.sink is not None

    def feed_buffer(self, buffer: bytearray, size: int) -> None:
        """``feed`` for the first ``size`` bytes of a read buffer that is reused once this returns.

        With nobody subscribed and no ``\\r`` in the chunk, its whole lines are written to the file straight
        from ``buffer``; only the line before (held back for its newline), the partial line after and the
        tail are copied. Otherwise it is ``feed`` of a copy: both give the file the same bytes."""
        if self.closed:
            return
        if not self.fast or buffer.find(b"\r", 0, size) >= 0 or self._pending.endswith(b"\r"):
            self.feed(bytes(memoryview(buffer)[:size]))
            return
        assert self.sink is not None  # ``fast``
        self.bytes_seen += size
        view = memoryview(buffer)
        cut = buffer.rfind(b"\n", 0, size) + 1
        start = 0
        if cut and self._pending:  # the held-back line ends in this chunk: it goes first, whole
            start = buffer.find(b"\n", 0, size) + 1
            self._to_file(self._pending + view[:start])
        if cut > start:
            self.sink.write_lines(buffer, start, cut)
            self._keep_tail(view[max(start, cut - _TAIL_BYTES) : cut])
        rest = bytes(view[cut:size])
        self._pending = self._pending + rest if not cut else rest
        if len(self._pending) > _MAX_PARTIAL_LINE:
            self._to_file(self._pending + b"\n")
            self._pending = b""
        self._wake()

    def feed(self, chunk: bytes) -> None:
        if self.closed:  # a process we could not reach still holds the pipe; its log is already closed
            return
        self.bytes_seen += len(chunk)
        data = self._pending + chunk if self._pending else chunk
        hold = b""
        if b"\r" in data:
            if data.endswith(b"\r"):  # may be the first half of \r\n: decide with the next chunk
                data, hold = data[:-1], b"\r"
            data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        cut = data.rfind(b"\n") + 1
        complete, rest = data[:cut], data[cut:]
        if len(rest) > _MAX_PARTIAL_LINE:
            complete, rest = complete + rest + b"\n", b""
        self._pending = rest + hold
        if complete:
            self._emit(complete)

    def annotate(self, line: bytes) -> None:
        """Our own line (a mark) into the log file only: readiness, phase and fatal-output scanning, the tail
        in error messages and ``--logs`` never see it, so it is never taken for the service's output. A
        partial line of the service's still waiting for its newline stays whole (it is written after)."""
        if self.sink is not None and not self.closed:
            self.sink.write_lines(line)

    def close(self) -> None:
        """End of output: a last line without a newline still counts."""
        if self.closed:
            return
        pending = self._pending.replace(b"\r", b"")
        self._pending = b""
        if pending:
            self._emit(pending + b"\n")
        self.closed = True
        if self.sink is not None:
            self.sink.close()
        self._wake()

    def _to_file(self, complete: bytes) -> None:
        """Complete lines to the file and the tail, for nobody else (the fast path)."""
        if self.sink is not None:
            self.sink.write_lines(complete)
        self._keep_tail(complete)

    def _keep_tail(self, complete: bytes | memoryview) -> None:
        """Appended, and trimmed only once it holds twice the tail: each byte is copied about once."""
        if len(complete) >= _TAIL_BYTES:
            self._tail[:] = complete[-_TAIL_BYTES:]
            return
        self._tail += complete
        if len(self._tail) > 2 * _TAIL_BYTES:
            del self._tail[:-_TAIL_BYTES]

    def _emit(self, complete: bytes) -> None:
        self._to_file(complete)
        for subscriber in list(self._subscribers):
            try:
                subscriber(complete)
            except Exception as error:  # a consumer that fails (`--logs | head`) must not stop the draining
                _log.warning("dropping an output subscriber that failed: %r", error)
                with contextlib.suppress(ValueError):
                    self._subscribers.remove(subscriber)
        self._wake()

    def _wake(self) -> None:
        self.generation += 1
        if self._activity is not None:
            self._activity.set()
            self._activity = None

    def tail_text(self) -> str:
        """The last 64 KiB of output, including a last line still without its newline."""
        text = self._tail[-_TAIL_BYTES:].decode("utf-8", "replace")
        if self._pending:
            text += self._pending.decode("utf-8", "replace").replace("\r", "") + "\n"
        return text

    def tail(self, lines: int = 20) -> list[str]:
        return [line for line in self.tail_text().splitlines() if line.strip()][-lines:]

    async def wait_closed(self, timeout_seconds: float) -> bool:
        """Wait until the output has ended (every writer closed the pipe); False at the timeout."""
        with anyio.move_on_after(timeout_seconds):
            while not self.closed:
                await self.wait_activity()
        return self.closed


def _next_nap(nap: float | None, drained: int, since_last_seconds: float) -> float | None:
    """How long to nap before the next read, from the last nap (None: the last wait was for the pipe to be
    readable) and what this turn drained; None: wait until the pipe is readable. That is for a quiet
    writer, whose next line is read at once, and for one that nearly fills the pipe within the shortest
    nap (1 MB blocks), which is read as it writes: a nap would only block it.

    The nap keeps a busy writer's batches between a quarter and three quarters of the pipe: longer while
    they are small, shorter while they are large. A batch is one read per wake-up, so the supervisor's CPU
    follows the volume, not the writer's number of writes, and the writer is never left blocked for long."""
    busy = drained >= _BUSY_BYTES or since_last_seconds < _BUSY_GAP_SECONDS
    if not drained or not busy:
        return None
    if drained >= _READ_SIZE * 7 // 8 and (nap is None or nap <= _NAP_MIN_SECONDS):
        return None  # the pipe nearly filled within the shortest nap (1 MB blocks): read it as it writes
    if nap is None:  # woken at the writer's first write: the batch says nothing of its pace yet
        return _NAP_MIN_SECONDS
    if drained >= _READ_SIZE * 3 // 4:
        return max(nap / 2, _NAP_MIN_SECONDS)
    if drained < _READ_SIZE // 4:
        return min(nap * 1.5, _NAP_MAX_SECONDS)
    return nap


async def pump_pipe(fd: int, stream: LineStream) -> None:
    """Drain a non-blocking pipe into ``stream`` until end of file; yields to the loop between chunks.

    Each wake-up empties the pipe. One that found a busy writer (``_BUSY_BYTES`` or more, or output again
    within ``_BUSY_GAP_SECONDS`` of the last) naps before the next instead of waiting to be woken at once
    (``_next_nap``): the writer's next writes gather in the pipe and are read together, so the wake-ups,
    and the supervisor's CPU, follow the volume rather than the number of writes, and a line after a quiet
    spell (a ready line) is still read at once. A pipe found full is read again at once.

    The read buffer starts small and grows (8x, up to the pipe's size) each time a read fills it: the
    memory follows the output, not the number of replicas (1 MiB each held 200 MB for 200 idle ones)."""
    buffer = bytearray(_FIRST_READ_SIZE)
    last_drained_at = -math.inf
    nap: float | None = None  #: the last nap; None when the last wait was for the pipe to be readable
    try:
        while True:
            drained = 0
            while True:
                try:
                    size = os.readv(fd, [buffer])
                except BlockingIOError:
                    break
                if not size:
                    return
                stream.feed_buffer(buffer, size)
                drained += size
                if size < len(buffer):  # that read emptied the pipe: what came since waits for the next turn
                    break  # (reading on would follow a fast writer write by write, never napping)
                if len(buffer) < _READ_SIZE:  # a writer with more to say: read it in larger chunks
                    buffer = bytearray(min(len(buffer) * 8, _READ_SIZE))
                await anyio.lowlevel.checkpoint()  # a full buffer: read on at once, letting others run
            now = time.monotonic()
            nap = _next_nap(nap, drained, now - last_drained_at)
            if drained:
                last_drained_at = now
            if nap is not None:
                await anyio.sleep(nap)
            else:
                await anyio.wait_readable(fd)
    finally:
        stream.close()
