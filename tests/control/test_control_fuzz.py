"""The control socket under abuse: deep nesting, ids that are not JSON numbers, thousands of requests
written before a reply is read, hundreds of clients at once, idle clients holding every slot, labels with
control characters. Each gets an answer (or a stated reason and a close), and the run keeps serving."""

from __future__ import annotations

import json
import selectors
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest

import supervisor as sv
from supervisor._control.connection import MAX_PENDING_REQUESTS
from supervisor._control.protocol import MAX_CLIENTS, short_address
from supervisor._control.server import IDLE_TIMEOUT_SECONDS, ControlServer
from supervisor._runtime.group import RunningTopology

from .test_control import ask, opened, topology

pytestmark = pytest.mark.anyio

_DEADLINE_SECONDS = 120.0  #: generous: the machine may be loaded; a correct server answers in a second or two


def strict_json(line: bytes) -> dict[str, Any]:
    """A reply as a strict JSON parser reads it: ``NaN``/``Infinity`` are not JSON."""

    def refuse(constant: str) -> None:
        raise ValueError(f"not JSON: {constant}")

    value = json.loads(line, parse_constant=refuse)
    assert isinstance(value, dict), line
    return value


def converse(path: Path, data: bytes, *, replies: int | None = None) -> list[dict[str, Any]]:
    """Write all of ``data`` before reading anything (a client that pipelines), then read reply lines:
    ``replies`` of them, or (with None) every line until the run closes the connection."""
    with short_address(path) as address, socket.socket(socket.AF_UNIX) as client:
        client.settimeout(_DEADLINE_SECONDS)
        client.connect(address)
        client.sendall(data)
        if replies is None:
            client.shutdown(socket.SHUT_WR)
        with client.makefile("rb") as reader:
            lines = []
            while replies is None or len(lines) < replies:
                line = reader.readline()
                if not line:
                    break
                lines.append(strict_json(line))
    return lines


def control_of(group: RunningTopology) -> ControlServer:
    control = group._run.control
    assert control is not None
    return control


async def until(predicate: Callable[[], object], what: str) -> None:
    """Poll ``predicate`` while the run's event loop goes on; fail naming ``what`` at the deadline."""
    deadline = time.monotonic() + _DEADLINE_SECONDS
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await anyio.sleep(0.01)


async def test_deep_nesting_gets_an_error_reply_and_the_connection_goes_on(
    runs_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """2,000 open brackets (as a line, inside a field, as the id) are each an ``ok: false`` reply, the
    same connection then answers a status, and nothing is logged as a failure of the socket."""
    async with sv.launch(topology(), runs_dir=runs_dir) as group:
        path = await opened(group)
        deep_id = b"[" * 500 + b"]" * 500  # parses under the recursion limit; must not come back as the id
        requests = [
            b"[" * 2000,
            b'{"v": 1, "id": "deep", "op": "status", "x": ' + b'{"a": ' * 2000,
            b'{"v": 1, "id": ' + deep_id + b', "op": "status"}',
            b'{"v": 1, "id": "after", "op": "status"}',
        ]
        replies = await anyio.to_thread.run_sync(converse, path, b"\n".join(requests) + b"\n")
        assert [r["ok"] for r in replies] == [False, False, False, True], replies
        assert "nested too deeply" in replies[0]["error"] and "nested too deeply" in replies[1]["error"]
        assert "'id' must be" in replies[2]["error"] and replies[2]["id"] is None
        assert replies[3]["id"] == "after" and replies[3]["status"]["phase"] == "running"
    assert not [r for r in caplog.records if r.name == "supervisor.control" and r.exc_info], caplog.text


async def test_ids_that_are_not_json_numbers_and_a_boolean_version_are_refused(runs_dir: Path) -> None:
    """An id of NaN or 1e999 would come back as ``NaN``/``Infinity``, which is not JSON: refused, the reply
    strict JSON with a null id; ``"v": true`` is not version 1 (Python's bool is an int); a mark label
    with a control character is refused, not written into every log."""
    async with sv.launch(topology(), runs_dir=runs_dir) as group:
        path = await opened(group)
        requests = [
            b'{"v": 1, "id": NaN, "op": "status"}',
            b'{"v": 1, "id": 1e999, "op": "status"}',
            b'{"v": 1, "id": -Infinity, "op": "status"}',
            b'{"v": true, "id": 4, "op": "status"}',
            b'{"v": 1.0, "id": 5, "op": "status"}',
            b'{"v": 1, "id": 6, "op": "events", "since": NaN}',
            b'{"v": 1, "id": 7, "op": "mark", "label": "red \\u001b[31m alert"}',
            b'{"v": 1, "id": 8, "op": "mark", "label": "nul \\u0000 here"}',
            b'{"v": 1, "id": 9, "op": "mark", "label": "line \\u2028 separator"}',
            b'{"v": 1, "id": 10, "op": "status"}',
        ]
        replies = await anyio.to_thread.run_sync(converse, path, b"\n".join(requests) + b"\n")
        assert [r["ok"] for r in replies] == [False] * 9 + [True], replies
        assert [r["id"] for r in replies] == [None, None, None, 4, 5, 6, 7, 8, 9, 10]
        assert all("'id' must be a string, a finite number or null" in r["error"] for r in replies[:3])
        assert "unsupported protocol version True" in replies[3]["error"]
        assert "unsupported protocol version 1.0" in replies[4]["error"]
        assert "'since' must be a finite number" in replies[5]["error"]
        assert all("control character" in r["error"] or "line separator" in r["error"] for r in replies[6:9])
        assert not [e for e in group.event_history if isinstance(e, sv.Marked)]
        logs = "".join(r.log_path.read_text() for r in group.replicas)
        assert "topovisor mark" not in logs
    assert "NaN" not in (group.run_dir / "events.jsonl").read_text()


async def test_thousands_of_requests_written_before_reading_each_get_their_reply_in_order(runs_dir: Path) -> None:
    """3,000 status requests (long ids: far more bytes than the socket buffers hold) written in one go
    before the client reads anything: the run keeps reading requests while the replies wait, and every
    request gets its reply, in order."""
    count = 3000
    async with sv.launch(topology(), runs_dir=runs_dir) as group:
        path = await opened(group)
        ids = [f"{index:05d}-" + "x" * 200 for index in range(count)]
        data = b"".join(json.dumps({"v": 1, "id": i, "op": "status"}).encode() + b"\n" for i in ids)
        replies = await anyio.to_thread.run_sync(lambda: converse(path, data, replies=count))
        assert [r["id"] for r in replies] == ids
        assert all(r["ok"] and r["status"]["phase"] == "running" for r in replies)


async def test_a_client_far_past_the_pending_bound_is_told_why_and_closed(runs_dir: Path) -> None:
    """Past ``MAX_PENDING_REQUESTS`` requests waiting for their replies the run stops taking them: the ones
    taken are answered in order, then one line says why, then the connection closes."""
    count = MAX_PENDING_REQUESTS + 5000
    async with sv.launch(topology(), runs_dir=runs_dir) as group:
        path = await opened(group)
        data = b"".join(b'{"v":1,"id":%d,"op":"status"}\n' % index for index in range(count))
        replies = await anyio.to_thread.run_sync(converse, path, data)
        *answered, last = replies
        assert len(answered) >= MAX_PENDING_REQUESTS and len(answered) < count
        assert [r["id"] for r in answered] == list(range(len(answered))) and all(r["ok"] for r in answered)
        assert last["ok"] is False and last["id"] is None
        assert f"more than {MAX_PENDING_REQUESTS} requests wait for their replies" in last["error"], last
        assert (await ask(group, "status"))["status"]["phase"] == "running"


def clients_at_once(path: Path, count: int) -> list[socket.socket]:
    """``count`` connections made back to back without waiting (non-blocking: a full listen queue is a
    ``BlockingIOError``, which is what must not happen)."""
    clients = []
    with short_address(path) as address:
        for _ in range(count):
            client = socket.socket(socket.AF_UNIX)
            clients.append(client)
            client.setblocking(False)
            client.connect(address)
    return clients


def first_lines(clients: list[socket.socket]) -> list[dict[str, Any]]:
    """The first reply line of every client (each sent one request), read together within a deadline."""
    buffers = {client: b"" for client in clients}
    lines: dict[socket.socket, dict[str, Any]] = {}
    deadline = time.monotonic() + _DEADLINE_SECONDS
    with selectors.DefaultSelector() as selector:
        for client in clients:
            selector.register(client, selectors.EVENT_READ)
        while len(lines) < len(clients) and time.monotonic() < deadline:
            for key, _ in selector.select(timeout=1.0):
                client = key.fileobj
                assert isinstance(client, socket.socket)
                chunk = client.recv(1 << 20)
                buffers[client] += chunk
                if b"\n" in buffers[client] or not chunk:
                    selector.unregister(client)
                    line = buffers[client].split(b"\n")[0]
                    lines[client] = strict_json(line) if line else {"closed": "without a reply"}
    assert len(lines) == len(clients), f"{len(clients) - len(lines)} clients got no reply"
    return [lines[client] for client in clients]


async def test_three_hundred_clients_at_once_are_served_or_told_there_are_too_many(runs_dir: Path) -> None:
    """300 clients connecting at the same moment (before the run can accept any: this test holds the
    event loop while connecting) all get in the listen queue, and each gets its status or the documented
    "too many clients" reply, never a refused connection."""
    somaxconn = int(Path("/proc/sys/net/core/somaxconn").read_text())
    count = min(300, somaxconn)  # the kernel caps every listen queue at somaxconn (4096 since Linux 5.4)
    async with sv.launch(topology(), runs_dir=runs_dir) as group:
        path = await opened(group)
        clients = clients_at_once(path, count)
        try:
            for index, client in enumerate(clients):
                client.sendall(b'{"v": 1, "id": %d, "op": "status"}\n' % index)
            replies = await anyio.to_thread.run_sync(first_lines, clients)
        finally:
            for client in clients:
                client.close()
        too_many = f"too many clients (at most {MAX_CLIENTS}, and one more for a single request)"
        served = [index for index, r in enumerate(replies) if r.get("ok") and r.get("id") == index]
        refused = [r for r in replies if r == {"v": 1, "id": None, "ok": False, "error": too_many}]
        assert len(served) + len(refused) == count, [r for r in replies if r.get("ok") is not True][:3]
        assert len(served) > MAX_CLIENTS
        await until(lambda: control_of(group).clients == 0, "the clients to be gone")
        assert (await ask(group, "status"))["status"]["phase"] == "running"


async def test_the_spare_connection_serves_the_cli_when_every_slot_is_held(runs_dir: Path) -> None:
    """With ``MAX_CLIENTS`` connections held open, one more connection still serves a single request
    (what ``supervisor status``/``scale``/``restart`` send) but takes no event stream; a client that
    holds that one too is refused with the documented reply."""
    async with sv.launch(topology(), runs_dir=runs_dir) as group:
        path = await opened(group)
        control = control_of(group)
        held: list[socket.socket] = []
        try:
            with short_address(path) as address:
                for _ in range(MAX_CLIENTS):
                    held.append(socket.socket(socket.AF_UNIX))
                    held[-1].connect(address)
            await until(lambda: control.clients == MAX_CLIENTS, "every slot to be held")
            assert (await ask(group, "status"))["status"]["phase"] == "running"
            await until(lambda: not control.spare_in_use, "the spare connection to be free again")
            events = await anyio.to_thread.run_sync(converse, path, b'{"v": 1, "id": 1, "op": "events"}\n')
            assert len(events) == 1 and not events[0]["ok"] and "event stream" in events[0]["error"], events
            await until(lambda: not control.spare_in_use, "the spare connection to be free again")
            with short_address(path) as address:
                held.append(socket.socket(socket.AF_UNIX))
                held[-1].connect(address)
            await until(lambda: control.spare_in_use, "the spare connection to be held")
            refused = await ask(group, "status")
            assert refused["ok"] is False and refused["error"].startswith("too many clients"), refused
        finally:
            for client in held:
                client.close()
        await until(lambda: control.clients == 0 and not control.spare_in_use, "the clients to be gone")


async def test_idle_clients_are_closed_so_they_cannot_lock_out_the_cli(runs_dir: Path) -> None:
    """Clients that connect and send nothing take every connection, the spare included; each is told it
    was idle and closed after the idle timeout (short here), and then a new client is served."""
    async with sv.launch(topology(), runs_dir=runs_dir) as group:
        path = await opened(group)
        control = control_of(group)
        control.idle_timeout_seconds = 0.2

        def idle_clients() -> list[list[dict[str, Any]]]:
            with short_address(path) as address:
                clients = [socket.socket(socket.AF_UNIX) for _ in range(MAX_CLIENTS + 1)]
                try:
                    for client in clients:
                        client.settimeout(_DEADLINE_SECONDS)
                        client.connect(address)
                    heard = []
                    for client in clients:
                        with client.makefile("rb") as reader:
                            heard.append([strict_json(line) for line in reader])  # until the run closes it
                    return heard
                finally:
                    for client in clients:
                        client.close()

        heard = await anyio.to_thread.run_sync(idle_clients)
        idle = {"v": 1, "id": None, "ok": False, "error": "idle for 0.2 s with no request: closing the connection"}
        assert heard == [[idle]] * (MAX_CLIENTS + 1)
        control.idle_timeout_seconds = IDLE_TIMEOUT_SECONDS
        await until(lambda: control.clients == 0 and not control.spare_in_use, "the idle clients to be gone")
        assert (await ask(group, "status"))["status"]["phase"] == "running"
