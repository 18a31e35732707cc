"""A replica's output: drained from its pipe, normalised into lines, written to a rotating file, fanned out.

The file and every subscriber see the same complete lines. A line is never split across two files and
never written twice; ``\\r`` progress updates (tqdm) become lines of their own so logs stay readable.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import anyio
import anyio.lowlevel

__all__ = ["LineStream", "RotatingLogFile", "pump_pipe"]

LineSubscriber = Callable[[bytes], None]
_MAX_PARTIAL_LINE = 1 << 20  # a "line" this long with no newline is written out anyway
_TAIL_BYTES = 64 * 1024  # error messages and fatal-output checks read this much of the end
_READ_SIZE = 1 << 20


class RotatingLogFile:
    """Appends whole lines; before a write would pass ``max_bytes`` it rotates ``x.log`` -> ``x.log.1`` ..."""

    def __init__(self, path: Path, max_bytes: int, backups: int) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.backups = backups
        self._fd = self._open()
        self._size = os.fstat(self._fd).st_size

    def _open(self) -> int:
        return os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)

    def write_lines(self, block: bytes) -> None:
        """Write ``block`` (complete lines only), rotating between lines as needed."""
        view = memoryview(block)
        start = 0
        while start < len(block):
            room = self.max_bytes - self._size
            end = len(block)
            if end - start > room:
                cut = block.rfind(b"\n", start, start + max(room, 0))
                if cut < 0:  # the next line does not fit: rotate first, or write it alone if it never fits
                    if self._size > 0:
                        self._rotate()
                        continue
                    cut = block.find(b"\n", start)
                    cut = len(block) - 1 if cut < 0 else cut
                end = cut + 1
            self._write_all(view[start:end])
            start = end
            if self._size >= self.max_bytes and start < len(block):
                self._rotate()

    def _write_all(self, data: memoryview) -> None:
        while data:
            written = os.write(self._fd, data)
            self._size += written
            data = data[written:]

    def _rotate(self) -> None:
        os.close(self._fd)
        if self.backups > 0:
            for index in range(self.backups - 1, 0, -1):
                older = self.path.with_name(f"{self.path.name}.{index}")
                if older.exists():
                    os.replace(older, self.path.with_name(f"{self.path.name}.{index + 1}"))
            os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
        else:
            os.unlink(self.path)
        self._fd = self._open()
        self._size = 0

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class LineStream:
    """Turns raw output chunks into complete lines for the log file, the tail buffer and subscribers."""

    def __init__(self, sink: RotatingLogFile | None) -> None:
        self.sink = sink
        self.bytes_seen = 0
        self._pending = b""
        self._tail = b""
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

    def _emit(self, complete: bytes) -> None:
        if self.sink is not None:
            self.sink.write_lines(complete)
        if len(complete) >= _TAIL_BYTES:
            self._tail = complete[-_TAIL_BYTES:]
        else:
            self._tail = (self._tail + complete)[-_TAIL_BYTES:]
        for subscriber in list(self._subscribers):
            subscriber(complete)
        self._wake()

    def _wake(self) -> None:
        self.generation += 1
        if self._activity is not None:
            self._activity.set()
            self._activity = None

    def tail_text(self) -> str:
        """The last 64 KiB of output, including a last line still without its newline."""
        text = self._tail.decode("utf-8", "replace")
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


async def pump_pipe(fd: int, stream: LineStream) -> None:
    """Drain a non-blocking pipe into ``stream`` until end of file; yields to the loop between chunks."""
    try:
        while True:
            try:
                chunk = os.read(fd, _READ_SIZE)
            except BlockingIOError:
                await anyio.wait_readable(fd)
                continue
            if not chunk:
                return
            stream.feed(chunk)
            await anyio.lowlevel.checkpoint()
    finally:
        stream.close()
