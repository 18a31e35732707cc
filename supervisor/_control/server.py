"""The run's control socket: a task of the running group that answers the protocol of
``_control.protocol`` with the operations of ``_control.ops``.

Nothing a client does can hurt the run: every request is checked before it runs, a bad one gets an error
reply, an op that raises gets its error as the reply, a line over ``MAX_LINE_BYTES`` or a client beyond
``MAX_CLIENTS`` is answered and closed, and a client that goes away (even mid-stream) only ends its own
connection. Only processes of our own user may talk to it (mode 0600 in a 0700 directory, and the peer's
uid checked with SO_PEERCRED, whose pid is recorded with each request).
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
from typing import Any

import anyio
import anyio.abc
from anyio.streams.buffered import BufferedByteReceiveStream

from .._errors import SupervisorError
from .._events import ControlRequest
from .._redact import REDACTED, hide_flag_values, is_secret_name
from .ops import ControlledRun, Operation, Unsupported, parse_request
from .protocol import (
    MAX_CLIENTS,
    MAX_LINE_BYTES,
    PROTOCOL_VERSION,
    ProtocolError,
    decode_line,
    encode,
    error_reply,
    short_address,
    socket_path,
)

__all__ = ["ControlServer"]

_log = logging.getLogger("supervisor.control")
#: a streaming client that reads nothing for this long while events wait is dropped (its backlog would grow)
SEND_TIMEOUT_SECONDS = 10.0
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


def _redacted_args(value: Any) -> Any:
    """The request's fields for the record: the value under a secret-looking name is hidden (an override
    ``HF_TOKEN=...``), and so is a secret flag's value in a string (``args="--api-key X"``); known secret
    values are replaced later by the event log's redactor."""
    if isinstance(value, str):
        return hide_flag_values(value)
    if isinstance(value, dict):
        return {
            k: REDACTED if isinstance(k, str) and is_secret_name(k) else _redacted_args(v) for k, v in value.items()
        }
    if isinstance(value, list):
        return [_redacted_args(v) for v in value]
    return value


async def _until_closed(stream: anyio.abc.SocketStream, *, max_bytes: int | None = None) -> None:
    """Read and drop what the client sends until it closes its end (or ``max_bytes`` were dropped).

    Waits with ``wait_readable`` and reads the raw socket, not the stream: a stream ``receive`` cancelled
    just as data arrives trips an asyncio-backend bug (anyio#1267), and these waits are cancelled often."""
    raw = stream.extra(anyio.abc.SocketAttribute.raw_socket)
    dropped = 0
    while max_bytes is None or dropped < max_bytes:
        try:
            await anyio.wait_readable(raw)
            data = raw.recv(65536, socket.MSG_DONTWAIT)
        except BlockingIOError:
            continue
        except (OSError, anyio.ClosedResourceError, anyio.BusyResourceError):
            return
        if not data:
            return
        dropped += len(data)


async def _drain(stream: anyio.abc.SocketStream) -> None:
    """Before closing on a client that is still sending: our side is done, and what it sends is read
    and dropped for a moment (bounded), so the close does not reset the connection and lose our reply."""
    with contextlib.suppress(*_ANYIO_CLOSED):
        await stream.send_eof()
    with anyio.move_on_after(1.0):
        await _until_closed(stream, max_bytes=16 * MAX_LINE_BYTES)


class ControlServer:
    """Serves one run's control socket until ``close()`` (teardown) or cancellation."""

    def __init__(self, group: ControlledRun, path: Path | None = None) -> None:
        self.group = group
        self.path = path if path is not None else socket_path(group.run_dir)
        self.clients = 0
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
                        clients.start_soon(self._serve_client, stream)
            finally:
                with anyio.CancelScope(shield=True):
                    await listener.aclose()
                self._unlink()

    async def _listen(self) -> anyio.abc.SocketListener:
        """Bound under a temporary name, listening, mode 0600 (in a 0700 run dir), then renamed into
        place: a client that sees ``control.sock`` can connect at once (a socket file that exists before
        ``listen()`` refuses connections)."""
        staging = self.path.with_name(f".{self.path.name}.{os.getpid()}")
        with short_address(staging) as staged, short_address(self.path) as final:
            listener = await anyio.create_unix_listener(staged, mode=0o600, backlog=MAX_CLIENTS)
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

    async def _serve_client(self, stream: anyio.abc.SocketStream) -> None:
        self.clients += 1
        try:
            async with stream:
                if self.clients > MAX_CLIENTS:
                    await self._refuse(stream, f"too many clients (at most {MAX_CLIENTS})")
                    return
                pid, uid = _peer(stream)
                if uid is not None and uid != os.getuid():
                    await self._refuse(stream, "permission denied: another user's process")
                    return
                await self._serve_requests(stream, pid)
        except _ANYIO_CLOSED:
            pass  # the client went away; only its connection ends
        except Exception:  # a bug of ours must not take the run down with it
            _log.exception("control socket: a client's connection failed")
        finally:
            self.clients -= 1

    async def _serve_requests(self, stream: anyio.abc.SocketStream, pid: int | None) -> None:
        received = BufferedByteReceiveStream(stream)
        while True:
            try:
                line = await received.receive_until(b"\n", MAX_LINE_BYTES)
            except anyio.DelimiterNotFound:
                await self._refuse(stream, f"request line longer than {MAX_LINE_BYTES} bytes")
                return
            except (anyio.IncompleteRead, anyio.EndOfStream):
                return
            if not line.strip():
                continue
            request: dict[str, Any] = {}
            try:
                request = decode_line(line)
                op, operation, args = parse_request(request)
            except ProtocolError as exc:
                asked = request.get("op")
                self._record(asked[:100] if isinstance(asked, str) else "?", pid, request.get("id"), {}, str(exc))
                await self._send(stream, error_reply(request.get("id"), str(exc)))
                continue
            request_id = request.get("id")
            if operation.recorded:
                self._record(op, pid, request_id, args, None)
            if operation.stream:
                await self._stream_events(stream, request_id, bool(args.get("history", False)), args.get("since"))
                return
            await self._answer(stream, op, operation, request_id, args)

    def _record(self, op: str, pid: int | None, request_id: object, args: dict[str, Any], error: str | None) -> None:
        if self.group.phase == "stopped":
            return  # the event log is closed
        rid = request_id if isinstance(request_id, (str, int, float)) and not isinstance(request_id, bool) else None
        self.group.emit(
            ControlRequest(
                replica="", service="", op=op, client_pid=pid, request_id=rid, args=_redacted_args(args), error=error
            )
        )

    async def _answer(
        self, stream: anyio.abc.SocketStream, op: str, operation: Operation, request_id: object, args: dict[str, Any]
    ) -> None:
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
                with anyio.move_on_after(_SHIELDED_REPLY_SECONDS if operation.shielded else SEND_TIMEOUT_SECONDS):
                    await stream.send(encode(reply))
        finally:
            self._answering.discard(answered)
            answered.set()

    async def _refuse(self, stream: anyio.abc.SocketStream, message: str) -> None:
        """One error, then the connection closes (without resetting it while the client still sends)."""
        await self._send(stream, error_reply(None, message))
        await _drain(stream)

    async def _send(self, stream: anyio.abc.SocketStream, message: dict[str, Any]) -> None:
        with anyio.move_on_after(SEND_TIMEOUT_SECONDS):
            await stream.send(encode(message))

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
                await _until_closed(stream)  # anything it sends now is ignored
                tg.cancel_scope.cancel()

            tg.start_soon(until_client_leaves)
            ended = True
            async for event in subscription:
                if since is not None and event.monotonic < since:
                    continue
                line = {"v": PROTOCOL_VERSION, "id": request_id, "event": redact(event.to_json())}
                if not await self._try_send(stream, line):
                    ended = False
                    break
            if ended:
                await self._try_send(stream, {"v": PROTOCOL_VERSION, "id": request_id, "ok": True, "end": True})
            tg.cancel_scope.cancel()

    async def _try_send(self, stream: anyio.abc.SocketStream, message: dict[str, Any]) -> bool:
        """Send, or False when the client is gone or has not read for ``SEND_TIMEOUT_SECONDS``."""
        with anyio.move_on_after(SEND_TIMEOUT_SECONDS) as scope:
            try:
                await stream.send(encode(message))
            except _ANYIO_CLOSED:
                return False
        return not scope.cancelled_caught
