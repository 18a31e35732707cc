"""The run's control socket: a task of the running group that answers the protocol of
``_control.protocol`` with the operations of ``_control.ops``.

Nothing a client does can hurt the run: every request is checked before it runs, a bad one gets an error
reply, an op that raises gets its error as the reply, a line over ``MAX_LINE_BYTES`` or a client beyond
the connection limit is answered and closed, and a client that goes away (even mid-stream) only ends its
own connection. Requests are read while earlier ones are answered (``_control.connection``), so a client
may write thousands before it reads a reply. Only processes of our own user may talk to it (mode 0600 in
a 0700 directory, and the peer's uid checked with SO_PEERCRED, whose pid is recorded with each request).

Clients cannot lock the CLI out: a connection with no request under way that sends none for
``IDLE_TIMEOUT_SECONDS`` is told so and closed, and past ``MAX_CLIENTS`` connections one more (the spare)
is served for a single request that is not an event stream, which is all the CLI's ``status``,
``restart``, ``scale`` and ``stop`` send on a connection; so ``MAX_CLIENTS`` event streams or long
restarts still leave it a way in. The listen queue (``LISTEN_BACKLOG``) is far longer than the clients
served, so a burst of connections waits to be accepted (and told "too many") instead of being refused by
the kernel.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import stat
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import anyio
import anyio.abc
import attrs

from .._errors import SupervisorError
from .._events import ControlRequest
from .connection import Closing, Inbox, read_until_closed
from .ops import ControlledRun, Operation, Unsupported, parse_request
from .protocol import (
    MAX_CLIENTS,
    MAX_LINE_BYTES,
    PROTOCOL_VERSION,
    ProtocolError,
    UnsupportedVersion,
    decode_line,
    encode,
    error_reply,
    is_request_id,
    short_address,
    socket_path,
)
from .recorded import recorded_args

__all__ = ["IDLE_TIMEOUT_SECONDS", "LISTEN_BACKLOG", "ControlServer"]

_log = logging.getLogger("supervisor.control")
#: a client that reads nothing for this long while a reply or events wait is dropped (its backlog would grow)
SEND_TIMEOUT_SECONDS = 10.0
#: a connection with no request under way that sends none for this long is told so and closed
IDLE_TIMEOUT_SECONDS = 30.0
#: connections the kernel queues until we accept them (capped at net.core.somaxconn, 4096 since Linux 5.4)
LISTEN_BACKLOG = 1024
_TOO_MANY = f"too many clients (at most {MAX_CLIENTS}, and one more for a single request)"
_SPARE_NO_STREAM = (
    f"an event stream needs one of the {MAX_CLIENTS} connections, and all are in use"
    " (this one is kept for single requests)"
)
_SPARE_ONLY = "this connection is kept for single requests (all others are in use): closing after one reply"
#: the reply of a shielded op (``stop``) still goes out during shutdown, within this
_SHIELDED_REPLY_SECONDS = 2.0
_ANYIO_CLOSED = (anyio.BrokenResourceError, anyio.ClosedResourceError, anyio.EndOfStream, OSError)


def _peer(stream: anyio.abc.SocketStream) -> tuple[int | None, int | None]:
    """The client's pid and uid (SO_PEERCRED), or None where the platform has no such option."""
    raw = stream.extra(anyio.abc.SocketAttribute.raw_socket)
    option = getattr(socket, "SO_PEERCRED", None)
    if option is None:
        return None, None
    try:
        pid, uid, _ = struct.unpack("3i", raw.getsockopt(socket.SOL_SOCKET, option, struct.calcsize("3i")))
    except OSError:
        return None, None
    return pid, uid


async def _drain(stream: anyio.abc.SocketStream) -> None:
    """Before closing on a client that is still sending: our side is done, and what it sends is read
    and dropped for a moment (bounded), so the close does not reset the connection and lose our reply."""
    with contextlib.suppress(*_ANYIO_CLOSED):
        await stream.send_eof()
    with anyio.move_on_after(1.0):
        await read_until_closed(stream, max_bytes=16 * MAX_LINE_BYTES)


@attrs.frozen
class _EventsAsked:
    """An ``events`` request: the connection becomes its stream once the reading task has stopped."""

    request_id: object
    history: bool
    since: float | None


_Slot = Literal["client", "spare"]


class ControlServer:
    """Serves one run's control socket until ``close()`` (teardown) or cancellation."""

    def __init__(
        self, group: ControlledRun, path: Path | None = None, *, idle_timeout_seconds: float = IDLE_TIMEOUT_SECONDS
    ) -> None:
        self.group = group
        self.path = path if path is not None else socket_path(group.run_dir)
        self.idle_timeout_seconds = idle_timeout_seconds  #: read as each connection waits for its next request
        self.clients = 0  #: connections in the ``MAX_CLIENTS`` ordinary slots
        self.spare_in_use = False  #: whether the spare connection (one request, no stream) is taken
        self._accepting = anyio.CancelScope()
        self._closed = False
        self._answering: set[anyio.Event] = set()  #: one per operation whose answer is not sent yet

    async def wait_answered(self, seconds: float) -> None:
        """Until every operation under way (a scale, a rolling restart; not the ``stop`` that waits for
        the teardown) has ended and its answer went out, at most ``seconds``: the teardown cuts them
        short, then waits here, so their end is in the records and their client hears why."""
        with anyio.move_on_after(seconds):
            for answered in list(self._answering):
                await answered.wait()

    async def serve(self, on_listening: Callable[[Path], None] | None = None) -> None:
        """Bind, then accept clients, each in its own task; returns once closed. ``on_listening`` hears
        the path once clients can connect. A socket that cannot be bound is a warning: the run goes on
        without one."""
        try:
            listener = await self._listen()
        except OSError as exc:
            _log.warning("run %s: no control socket at %s: %s", self.group.run_id, self.path, exc)
            return
        if on_listening is not None:
            on_listening(self.path)
        async with anyio.create_task_group() as clients:
            try:
                with self._accepting:
                    while not self._closed:
                        try:
                            stream = await listener.accept()
                        except OSError as exc:  # out of descriptors: answer later rather than spin
                            _log.warning("control socket: accept failed: %s", exc)
                            await anyio.sleep(0.1)
                            continue
                        clients.start_soon(self._serve_client, stream, self._take_slot())
            finally:
                with anyio.CancelScope(shield=True):
                    await listener.aclose()
                self._unlink()

    def _take_slot(self) -> _Slot | None:
        """An ordinary slot while one is free, else the spare while it is free, else none (in the order
        connections are accepted: the task that serves one may start later)."""
        if self.clients < MAX_CLIENTS:
            self.clients += 1
            return "client"
        if not self.spare_in_use:
            self.spare_in_use = True
            return "spare"
        return None

    def _free_slot(self, slot: _Slot | None) -> None:
        if slot == "client":
            self.clients -= 1
        elif slot == "spare":
            self.spare_in_use = False

    async def _listen(self) -> anyio.abc.SocketListener:
        """Bound under a temporary name, listening, mode 0600 (in a 0700 run dir), then renamed into
        place: a client that sees ``control.sock`` can connect at once (a socket file that exists before
        ``listen()`` refuses connections)."""
        staging = self.path.with_name(f".{self.path.name}.{os.getpid()}")
        with short_address(staging) as staged, short_address(self.path) as final:
            listener = await anyio.create_unix_listener(staged, mode=0o600, backlog=LISTEN_BACKLOG)
            try:
                os.rename(staged, final)  # replaces a stale socket file of the same name
            except OSError:
                await listener.aclose()
                with contextlib.suppress(OSError):
                    os.unlink(staged)
                raise
        return listener

    def close(self) -> None:
        """Stop taking new clients (the teardown began) and remove the socket file; clients already
        connected keep their connection until they leave or the run's task group ends."""
        self._closed = True
        self._accepting.cancel()
        self._unlink()

    def _unlink(self) -> None:
        with contextlib.suppress(OSError), short_address(self.path) as address:
            if stat.S_ISSOCK(os.lstat(address).st_mode):
                os.unlink(address)

    async def _serve_client(self, stream: anyio.abc.SocketStream, slot: _Slot | None) -> None:
        try:
            async with stream:
                if slot is None:
                    await self._refuse(stream, _TOO_MANY)
                    return
                pid, uid = _peer(stream)
                if uid is not None and uid != os.getuid():
                    await self._refuse(stream, "permission denied: another user's process")
                    return
                await self._serve_requests(stream, pid, spare=slot == "spare")
        except _ANYIO_CLOSED:
            pass  # the client went away; only its connection ends
        except Exception:  # a bug of ours must not take the run down with it
            _log.exception("control socket: a client's connection failed")
        finally:
            self._free_slot(slot)

    async def _serve_requests(self, stream: anyio.abc.SocketStream, pid: int | None, *, spare: bool) -> None:
        """One task reads requests into an inbox while this one answers them in order; the connection
        then closes (after a line saying why, where it is our choice), or becomes an event stream."""
        inbox = Inbox()
        async with anyio.create_task_group() as reading:
            reading.start_soon(inbox.fill, stream)
            events = await self._answer_all(stream, inbox, pid, spare=spare)
            reading.cancel_scope.cancel()  # before the stream watches the socket itself
        if events is not None:
            await self._stream_events(stream, events.request_id, events.history, events.since)
            return
        await _drain(stream)

    async def _answer_all(
        self, stream: anyio.abc.SocketStream, inbox: Inbox, pid: int | None, *, spare: bool
    ) -> _EventsAsked | None:
        """Answer the inbox's requests in order until the connection is to close; an ``events`` request
        is returned to be streamed. The spare connection answers a single request."""
        while True:
            item: bytes | Closing | None = None
            with anyio.move_on_after(self.idle_timeout_seconds):
                item = await inbox.next()
            if item is None:
                idle = f"idle for {self.idle_timeout_seconds:g} s with no request: closing the connection"
                await self._send(stream, error_reply(None, idle))
                return None
            if isinstance(item, Closing):
                if item.reason is not None:
                    await self._send(stream, error_reply(None, item.reason))
                return None
            outcome = await self._handle(stream, item, pid, spare=spare)
            if isinstance(outcome, _EventsAsked):
                return outcome
            if not outcome:
                return None
            if spare:
                if inbox.waiting():
                    await self._send(stream, error_reply(None, _SPARE_ONLY))
                return None

    async def _handle(
        self, stream: anyio.abc.SocketStream, line: bytes, pid: int | None, *, spare: bool
    ) -> bool | _EventsAsked:
        """One request: True once its reply went out, False when the connection is to close (the reply
        could not go out), or the ``events`` request to stream."""
        request: dict[str, Any] = {}
        try:
            request = decode_line(line)
            op, operation, args = parse_request(request)
        except ProtocolError as exc:
            asked = request.get("op")
            self._record(asked[:100] if isinstance(asked, str) else "?", pid, request.get("id"), {}, str(exc))
            refused_version = isinstance(exc, UnsupportedVersion)  # the client hears which versions we speak
            return await self._send(stream, error_reply(request.get("id"), str(exc), versions=refused_version))
        request_id = request.get("id")
        if operation.stream and spare:
            self._record(op, pid, request_id, args, _SPARE_NO_STREAM)
            await self._send(stream, error_reply(request_id, _SPARE_NO_STREAM))
            return False
        if operation.recorded:
            self._record(op, pid, request_id, args, None)
        if operation.stream:
            return _EventsAsked(request_id, bool(args.get("history", False)), args.get("since"))
        return await self._answer(stream, op, operation, request_id, args)

    def _record(self, op: str, pid: int | None, request_id: object, args: dict[str, Any], error: str | None) -> None:
        if self.group.phase == "stopped":
            return  # the event log is closed
        rid = request_id if is_request_id(request_id) else None
        recorded = recorded_args(args, self.group.plan)
        self.group.emit(
            ControlRequest(replica="", service="", op=op, client_pid=pid, request_id=rid, args=recorded, error=error)
        )

    async def _answer(
        self, stream: anyio.abc.SocketStream, op: str, operation: Operation, request_id: object, args: dict[str, Any]
    ) -> bool:
        """Run the op and send its reply; False when the reply could not go out (the client is gone or
        read nothing for the send timeout: the connection closes rather than skip a reply)."""
        assert operation.handler is not None
        answered = anyio.Event()
        if not operation.shielded:
            self._answering.add(answered)
        try:
            with anyio.CancelScope(shield=operation.shielded):
                try:
                    result = await operation.handler(self.group, args)
                except (SupervisorError, ValueError, TypeError, Unsupported) as exc:
                    reply = error_reply(request_id, str(exc))
                except KeyError as exc:
                    reply = error_reply(request_id, str(exc.args[0]) if exc.args else "not found")
                except Exception as exc:  # a bug of ours: the client hears of it, the run goes on
                    _log.exception("control socket: op %r failed", op)
                    reply = error_reply(request_id, f"internal error: {type(exc).__name__}: {exc}")
                else:
                    reply = {"v": PROTOCOL_VERSION, "id": request_id, "ok": True, **result}
                sent = await self._send(stream, reply, _SHIELDED_REPLY_SECONDS if operation.shielded else None)
        finally:
            self._answering.discard(answered)
            answered.set()
        return sent

    async def _refuse(self, stream: anyio.abc.SocketStream, message: str) -> None:
        """One error, then the connection closes (without resetting it while the client still sends)."""
        await self._send(stream, error_reply(None, message))
        await _drain(stream)

    async def _send(
        self, stream: anyio.abc.SocketStream, message: dict[str, Any], timeout_seconds: float | None = None
    ) -> bool:
        """One line within ``timeout_seconds`` (default ``SEND_TIMEOUT_SECONDS``); False when the client is
        gone or did not read it in time (part of the line may have gone: the connection must close)."""
        with anyio.move_on_after(SEND_TIMEOUT_SECONDS if timeout_seconds is None else timeout_seconds) as scope:
            try:
                await stream.send(encode(message))
            except _ANYIO_CLOSED:
                return False
        return not scope.cancelled_caught

    async def _stream_events(
        self, stream: anyio.abc.SocketStream, request_id: object, history: bool, since: float | None
    ) -> None:
        """An acknowledgement, then one line per event (past ones first with ``history``; with ``since``,
        every event from that monotonic time on, past or not) until the run ends (a last ``"end": true``
        line) or the client closes its end."""
        subscription = self.group.events(history=history or since is not None)
        redact = self.group.redactor().data
        await self._send(stream, {"v": PROTOCOL_VERSION, "id": request_id, "ok": True, "streaming": True})
        async with anyio.create_task_group() as tg:

            async def until_client_leaves() -> None:
                await read_until_closed(stream)  # anything it sends now is ignored
                tg.cancel_scope.cancel()

            tg.start_soon(until_client_leaves)
            ended = True
            async for event in subscription:
                if since is not None and event.monotonic < since:
                    continue
                line = {"v": PROTOCOL_VERSION, "id": request_id, "event": redact(event.to_json())}
                if not await self._send(stream, line):
                    ended = False
                    break
            if ended:
                await self._send(stream, {"v": PROTOCOL_VERSION, "id": request_id, "ok": True, "end": True})
            tg.cancel_scope.cancel()
