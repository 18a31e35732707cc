"""``attach``: the group interface of ``launch`` for a run owned by another process, over its control socket.

``group["frontend"].url``, ``group["decode"].replicas``, ``group.run_dir`` read the run's status as of the
last request (``await group.refresh()`` asks again; every operation refreshes it). Operations are sent to
the run, which does them and answers once done, as ``launch``'s group would return; an error the run
reports is raised here as ``ControlError`` with the run's message. Leaving the ``async with`` closes our
connections and leaves the run as it is.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc
import anyio.to_thread
from anyio.streams.buffered import BufferedByteReceiveStream

from .._errors import ControlError, IncompatibleVersion
from .._events import Event, Marked, event_from_json
from .protocol import (
    MAX_REPLY_BYTES,
    PROTOCOL_VERSION,
    check_reply,
    connect_blocking,
    decode_line,
    encode,
    short_address,
    socket_path,
)
from .service_view import ServiceAddresses

__all__ = ["AttachedTopology", "RemoteReplica", "RemoteService", "attach", "locate_socket", "no_socket_reason"]


class RemoteReplica:
    """One replica of an attached run, as its last status said: ``pid``, ``port``, ``url``, ``state``."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data  #: the status entry as the run sent it
        self.name: str = data.get("name", "")
        self.service: str = data.get("service", "")
        self.index: int = data.get("index", 0)
        self.state: str = data.get("state", "unknown")  #: a ``ReplicaState`` value: ``"ready"``, ...
        self.pid: int | None = data.get("pid")
        self.running: bool = bool(data.get("running"))
        self.ports: dict[str, int] = dict(data.get("ports") or {})
        self.url: str | None = data.get("url")
        self.api: dict[str, str] = dict(data.get("api") or {})  #: route name -> URL (an older run sends none)
        self.restarts: int = data.get("restarts", 0)
        self.ready_seconds: float | None = data.get("ready_seconds")
        self.gpus: list[int] = list(data.get("gpus") or [])
        self.log_path = Path(data["log"]) if data.get("log") else None

    @property
    def port(self) -> int | None:
        return next(iter(self.ports.values()), None)

    @property
    def pids(self) -> list[int]:
        return [self.pid] if self.pid is not None else []

    def __repr__(self) -> str:
        return f"<RemoteReplica {self.name} pid={self.pid} port={self.port} {self.state}>"


class RemoteService(ServiceAddresses):
    """Every replica of one service of an attached run; ``port``/``url`` are replica 0's."""

    replicas: list[RemoteReplica]

    def __init__(self, name: str, data: dict[str, Any]) -> None:
        self.name = name
        self.data = data
        self.replicas = [RemoteReplica(r) for r in data.get("replicas", [])]
        self.min_ready: int | None = data.get("min_ready")

    @property
    def ready_count(self) -> int:
        return sum(r.state == "ready" for r in self.replicas)

    def __repr__(self) -> str:
        return f"<RemoteService {self.name} x{len(self.replicas)} pids={self.pids}>"


class RemoteEvents:
    """Typed events of an attached run over a connection of its own: those from the moment ``events()``
    was called (the run sends them from that time on its monotonic clock, which the machine shares, so
    nothing between the call and the first ``async for`` is lost), or all of them with ``history``. Ends
    when the run is over; ``aclose()`` (or leaving ``attach``) ends it early."""

    def __init__(self, path: Path, *, history: bool, opened: set[RemoteEvents]) -> None:
        self._path = path
        self._since = None if history else time.monotonic()
        self._opened = opened
        self._stream: anyio.abc.SocketStream | None = None
        self._received: BufferedByteReceiveStream | None = None
        self._done = False

    def __aiter__(self) -> RemoteEvents:
        return self

    async def __anext__(self) -> Event:
        if self._done:
            raise StopAsyncIteration
        if self._received is None:
            await self._open()
        assert self._received is not None
        while True:
            try:
                line = await self._received.receive_until(b"\n", MAX_REPLY_BYTES)
            except (anyio.EndOfStream, anyio.IncompleteRead, anyio.BrokenResourceError, anyio.ClosedResourceError):
                await self.aclose()
                raise StopAsyncIteration from None
            message = await self._checked(decode_line(line))
            if message.get("end"):
                await self.aclose()
                raise StopAsyncIteration
            event = event_from_json(message.get("event"))
            if event is not None:
                return event

    async def _open(self) -> None:
        self._stream = await _connect(self._path)
        self._opened.add(self)
        self._received = BufferedByteReceiveStream(self._stream)
        window = {"history": True} if self._since is None else {"since": self._since}
        await self._stream.send(encode({"v": PROTOCOL_VERSION, "id": "events", "op": "events", **window}))
        ack = await self._checked(decode_line(await self._received.receive_until(b"\n", MAX_REPLY_BYTES)))
        if not ack.get("ok"):
            await self.aclose()
            raise ControlError(f"events: {ack.get('error', 'refused')}")

    async def _checked(self, message: dict[str, Any]) -> dict[str, Any]:
        """``message``, or ``IncompatibleVersion`` (the stream closed) when the run speaks a newer protocol."""
        try:
            return check_reply(message, self._path.parent.name)  # the run dir is named by its run id
        except IncompatibleVersion:
            await self.aclose()
            raise

    async def aclose(self) -> None:
        self._done = True
        self._opened.discard(self)
        if self._stream is not None:
            stream, self._stream = self._stream, None
            with contextlib.suppress(OSError, anyio.BrokenResourceError):
                await stream.aclose()


async def _connect(path: Path) -> anyio.abc.SocketStream:
    try:
        with short_address(path) as address:
            return await anyio.connect_unix(address)
    except OSError as exc:
        raise ControlError(f"cannot reach the run's control socket {path}: {exc.strerror or exc}") from None


class AttachedTopology:
    """A run owned by another process, driven through its control socket; see ``attach``."""

    def __init__(self, run_id: str, run_dir: Path, path: Path) -> None:
        self.run_id = run_id
        self.run_dir = run_dir
        self.control_socket = path
        self.status: dict[str, Any] = {}  #: the run's last status reply (``supervisor status --json``)
        self._services: dict[str, RemoteService] = {}
        self._replicas: dict[str, RemoteReplica] = {}
        self._streams: set[RemoteEvents] = set()

    # ----- what the run looks like --------------------------------------------------------------------
    def __getitem__(self, name: str) -> RemoteService | RemoteReplica:
        """A service (``"decode"``) or one replica (``"decode.1"``), as the last status said."""
        if name in self._services:
            return self._services[name]
        if name in self._replicas:
            return self._replicas[name]
        raise KeyError(f"no service or replica named {name!r}; services: {', '.join(self._services)}")

    def __iter__(self) -> Iterator[RemoteService]:
        return iter(self._services.values())

    @property
    def services(self) -> list[RemoteService]:
        return list(self._services.values())

    @property
    def replicas(self) -> list[RemoteReplica]:
        return [r for s in self._services.values() for r in s.replicas]

    @property
    def phase(self) -> str:
        """pending, starting, running, stopping, stopped (as of the last status)."""
        return str(self.status.get("phase", "unknown"))

    async def refresh(self) -> dict[str, Any]:
        """Ask the run for its status now; the lookups above read it."""
        self._take_status((await self.request("status"))["status"])
        return self.status

    def _take_status(self, status: dict[str, Any]) -> None:
        self.status = status
        self._services = {name: RemoteService(name, data) for name, data in status.get("services", {}).items()}
        self._replicas = {}
        for service in self._services.values():
            for replica in service.replicas:
                self._replicas[replica.name] = replica
                self._replicas.setdefault(f"{service.name}.{replica.index}", replica)

    # ----- operations ---------------------------------------------------------------------------------
    async def request(self, op: str, **fields: Any) -> dict[str, Any]:
        """Send one request on a connection of its own; the reply, or ``ControlError`` with the run's
        error. Long operations (a restart waits for readiness) do not hold up others."""
        stream = await _connect(self.control_socket)
        async with stream:
            await stream.send(encode({"v": PROTOCOL_VERSION, "id": 1, "op": op, **fields}))
            try:
                line = await BufferedByteReceiveStream(stream).receive_until(b"\n", MAX_REPLY_BYTES)
            except (anyio.EndOfStream, anyio.IncompleteRead, anyio.BrokenResourceError) as exc:
                raise ControlError(f"run {self.run_id}: the connection closed before {op!r} was answered") from exc
        reply = check_reply(decode_line(line), self.run_id)
        if not reply.get("ok"):
            raise ControlError(f"run {self.run_id}: {op}: {reply.get('error', 'refused')}")
        return reply

    async def _operate(self, op: str, **fields: Any) -> Any:
        reply = await self.request(op, **fields)
        with contextlib.suppress(ControlError):
            await self.refresh()
        return reply.get("result")

    async def restart(self, name: str) -> None:
        """Restart a service or one replica; returns once it is ready again (new pids)."""
        await self._operate("restart", name=name)

    async def stop(self, name: str | None = None) -> None:
        """Stop one service or replica, or, without a name, the whole run (returns once it is down)."""
        if name is not None:
            await self._operate("stop", name=name)
            return
        await self.request("stop")
        self.status = {**self.status, "phase": "stopped"}

    async def scale(self, service: str, replicas: int) -> Any:
        """Run ``replicas`` replicas of ``service`` (see the group's ``scale``)."""
        return await self._operate("scale", service=service, replicas=replicas)

    async def autoscale(self, service: str, enabled: bool) -> Any:
        """Pause or resume the ``autoscale:`` of ``service`` (see the group's ``autoscale``)."""
        return await self._operate("autoscale", service=service, enabled=enabled)

    async def rolling_restart(self, service: str, **options: Any) -> Any:
        """Restart ``service`` replica by replica (see the group's ``rolling_restart`` for the options:
        ``max_unavailable``, ``min_ready``, ``overrides``)."""
        return await self._operate("rolling_restart", service=service, **options)

    def mark(self, label: str) -> Marked:
        """A bookmark in the run's events and every log, as the group's ``mark`` (not awaited either): the
        label is checked here, the request is sent, and the run records it as soon as it reads it, without
        us waiting for the answer (so this never blocks an event loop, even one that runs the run itself).
        The returned event carries our clock; ``await group.request("mark", label=...)`` waits for the
        run's own. ``ValueError`` for a label that is not one line of printable text."""
        from .._host.logs import mark_line

        event = Marked(replica="", service="", label=label)
        mark_line(label, event.wall_time)  # the run would refuse it: say so here
        try:
            with connect_blocking(self.control_socket, timeout_seconds=10.0) as client:
                client.sendall(encode({"v": PROTOCOL_VERSION, "id": None, "op": "mark", "label": label}))
        except OSError as exc:
            raise ControlError(f"run {self.run_id}: mark: {exc.strerror or exc}") from None
        return event

    def events(self, *, history: bool = False) -> RemoteEvents:
        """Typed events from this call on, and only those (the run's start is over by the time one
        attaches); ``history=True`` yields the past ones first, then goes on. Ends when the run is over."""
        return RemoteEvents(self.control_socket, history=history, opened=self._streams)

    async def wait(self) -> None:
        """Until the run is over (stopped by anyone, or failed)."""
        async for _ in self.events():
            pass

    async def aclose(self) -> None:
        """Close our connections; the run goes on."""
        for stream in list(self._streams):
            await stream.aclose()


def locate_socket(run: str | os.PathLike[str]) -> tuple[str, Path, Path]:
    """(run id, run dir, control socket) of a live run named by id (resolved as ``supervisor ps`` does) or
    directory; ``ControlError`` when it is not running, ``UnknownRun`` when nothing matches."""
    from .._records.record import load_run, resolve_run

    path = Path(run).expanduser()
    record = load_run(path).readable() if path.is_dir() else resolve_run(os.fspath(run))
    if not record.supervisor_alive or record.phase == "stopped":
        why = "it was stopped" if record.phase == "stopped" else f"its supervisor is gone; last phase: {record.phase}"
        raise ControlError(f"run {record.run_id} is not running ({why}); `supervisor ps --all` lists it")
    control = record.manifest.control_socket
    return record.run_id, record.run_dir, Path(control) if control else socket_path(record.run_dir)


def no_socket_reason(run_id: str, path: Path) -> str:
    """Why a live run's control socket is not there: its run directory was deleted (the socket went with
    it, for good), or the run is still starting or already stopping (it comes, or it went)."""
    if not path.parent.is_dir():
        return (
            f"run {run_id}: its run directory {path.parent} is gone (deleted while the run runs), and its control "
            f"socket with it; `supervisor stop {run_id}` still stops the run"
        )
    return f"run {run_id} has no control socket at {path} (still starting, stopping, or from a version without one)"


@contextlib.asynccontextmanager
async def attach(run: str | os.PathLike[str]) -> AsyncIterator[AttachedTopology]:
    """``async with supervisor.attach(run_id_or_dir) as group:`` the group interface of ``launch`` for a
    run owned by another process (``supervisor run --detach``, another script). Leaving the block keeps the
    run up. ``ControlError`` when the run is not running or has no control socket."""
    run_id, run_dir, path = await anyio.to_thread.run_sync(locate_socket, run)
    group = AttachedTopology(run_id, run_dir, path)
    try:
        await group.refresh()
    except ControlError as exc:
        if not path.exists():
            raise ControlError(no_socket_reason(run_id, path)) from None
        raise exc from None
    try:
        yield group
    finally:
        with anyio.CancelScope(shield=True):
            await group.aclose()


if TYPE_CHECKING:  # mypy checks that an attached run is a TopologyHandle, as the group is
    from .handle import TopologyHandle

    _handle: type[TopologyHandle] = AttachedTopology
