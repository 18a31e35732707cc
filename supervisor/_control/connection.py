"""A client connection's requests, read as they arrive while earlier ones are still being answered.

A client may write thousands of requests before it reads a reply. Were the server to read a request only
after the previous reply went out, both sides would block on full socket buffers (the client writing,
the server sending) and replies would time out. So one task reads lines into an ``Inbox`` while another
answers them in order; the inbox holds at most ``MAX_PENDING_REQUESTS`` requests (``MAX_PENDING_BYTES``)
that wait for their replies, and past that it stops taking them, says why as its last item, and reads
and drops what else comes (bounded) so the client can finish writing and read its replies.

Reads go to the raw socket after ``wait_readable``, never through the stream's ``receive``: the reading
task is cancelled whenever its connection ends, and a stream ``receive`` cancelled just as data arrives
trips an asyncio-backend bug (anyio#1267).
"""

from __future__ import annotations

import socket
from collections import deque

import anyio
import anyio.abc
import attrs

from .protocol import MAX_LINE_BYTES

__all__ = ["MAX_PENDING_BYTES", "MAX_PENDING_REQUESTS", "Closing", "Inbox", "read_until_closed"]

MAX_PENDING_REQUESTS = 10_000  #: requests read and waiting for their replies on one connection
MAX_PENDING_BYTES = 16 * 1024 * 1024  #: and their bytes (lines are at most ``MAX_LINE_BYTES`` each)
_READ_SIZE = 65536


@attrs.frozen
class Closing:
    """The inbox's last item: the client ended its side (``reason`` None), or the reason we stop reading."""

    reason: str | None = None


async def _receive(raw: socket.socket) -> bytes:
    """The next bytes the client sent; ``b""`` once it closed its side or the connection broke."""
    while True:
        try:
            await anyio.wait_readable(raw)
            return raw.recv(_READ_SIZE, socket.MSG_DONTWAIT)
        except BlockingIOError:
            continue
        except (OSError, anyio.ClosedResourceError, anyio.BusyResourceError):
            return b""


async def read_until_closed(stream: anyio.abc.SocketStream, *, max_bytes: int | None = None) -> None:
    """Read and drop what the client sends until it closes its end (or ``max_bytes`` were dropped)."""
    raw = stream.extra(anyio.abc.SocketAttribute.raw_socket)
    dropped = 0
    while max_bytes is None or dropped < max_bytes:
        data = await _receive(raw)
        if not data:
            return
        dropped += len(data)


class Inbox:
    """The requests of one connection in the order they came (complete, non-blank lines), then a
    ``Closing``. ``fill`` is the reading task; ``next`` is for the one task that answers them."""

    def __init__(self) -> None:
        self._items: deque[bytes | Closing] = deque()
        self._arrived = anyio.Event()
        self.pending = 0  #: requests taken and not yet handed to the answering task
        self.pending_bytes = 0

    async def next(self) -> bytes | Closing:
        """The next request line, or the ``Closing`` after the last one (again on every later call)."""
        while not self._items:
            if self._arrived.is_set():
                self._arrived = anyio.Event()
            await self._arrived.wait()
        item = self._items[0]
        if isinstance(item, Closing):
            return item  # stays: the end is the end for every later call too
        self._items.popleft()
        self.pending -= 1
        self.pending_bytes -= len(item)
        return item

    def waiting(self) -> bool:
        """Whether a request (not only the end) is already here."""
        return bool(self._items) and not isinstance(self._items[0], Closing)

    def _put(self, item: bytes | Closing) -> None:
        self._items.append(item)
        if isinstance(item, bytes):
            self.pending += 1
            self.pending_bytes += len(item)
        self._arrived.set()

    async def fill(self, stream: anyio.abc.SocketStream) -> None:
        """Read the client's lines into the inbox until it closes its side, a line is too long, or too many
        wait; then the ``Closing``, and (when we stopped early) what else it sends is read and dropped."""
        raw = stream.extra(anyio.abc.SocketAttribute.raw_socket)
        partial = bytearray()
        while True:
            data = await _receive(raw)
            if not data:
                self._put(Closing())  # a last line without its newline is not a request
                return
            partial += data
            lines: list[bytearray] = []
            if b"\n" in data:  # only the new bytes can hold one: ``partial`` had none
                *lines, rest = partial.split(b"\n")
                partial = bytearray(rest)
            reason = None
            for line in lines:
                reason = self._take(line)
                if reason is not None:
                    break
            if reason is None and len(partial) > MAX_LINE_BYTES:
                reason = f"request line longer than {MAX_LINE_BYTES} bytes"
            if reason is not None:
                self._put(Closing(reason))
                await read_until_closed(stream, max_bytes=MAX_PENDING_BYTES)
                return

    def _take(self, line: bytearray) -> str | None:
        """Queue one line; the reason to stop reading instead, if any."""
        if len(line) > MAX_LINE_BYTES:
            return f"request line longer than {MAX_LINE_BYTES} bytes"
        if not line.strip():
            return None
        if self.pending >= MAX_PENDING_REQUESTS or self.pending_bytes + len(line) > MAX_PENDING_BYTES:
            return (
                f"more than {MAX_PENDING_REQUESTS} requests wait for their replies (or {MAX_PENDING_BYTES} bytes):"
                " read the replies while sending; closing the connection"
            )
        self._put(bytes(line) + b"\n")
        return None
