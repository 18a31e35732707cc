"""The control socket of a running group: status, restart, stop, events and mark over real unix sockets,
and requests that are malformed, huge, too many, or from clients that vanish: each gets an error or only
ends its own connection, and the run keeps going."""

from __future__ import annotations

import functools
import json
import os
import socket
import stat
import threading
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest

import supervisor as sv
from supervisor._control.protocol import MAX_CLIENTS, MAX_LINE_BYTES, request_blocking, short_address
from supervisor._runtime.group import RunningTopology
from supervisor._runtime.runner import launch_prepared

from ..helpers import PYTHON, alive, wait_for

pytestmark = pytest.mark.anyio

_SLEEP = "import sys, time; print('up', flush=True); time.sleep(3600)"


def topology(name: str = "ctl") -> sv.Topology:
    web = sv.Service(name="web", command=[PYTHON, "-c", _SLEEP], ports=["port"], ready=sv.LogCheck("up"))
    worker = sv.Service(
        name="worker", command=[PYTHON, "-c", _SLEEP], replicas=2, depends_on=["web"], ready=sv.LogCheck("up")
    )
    return sv.Topology(name=name, services=[web, worker])


async def ask(group: RunningTopology, op: str, **fields: Any) -> dict[str, Any]:
    """One request from a blocking client (as the CLI does it), off the event loop."""
    assert group.control_socket is not None, "the control socket is not open"
    call = functools.partial(request_blocking, group.control_socket, op, timeout_seconds=30, **fields)
    return await anyio.to_thread.run_sync(call)


def exchange(path: Path, data: bytes) -> list[dict[str, Any]]:
    """Send raw bytes, close our sending side, and read every reply line until the run closes."""
    with short_address(path) as address, socket.socket(socket.AF_UNIX) as client:
        client.settimeout(30)
        client.connect(address)
        client.sendall(data)
        client.shutdown(socket.SHUT_WR)
        received = b""
        while chunk := client.recv(65536):
            received += chunk
    return [json.loads(line) for line in received.splitlines()]


def leave_early(path: Path) -> None:
    """Two clients that go away: one mid-line, one right after its events stream began."""
    with short_address(path) as address, socket.socket(socket.AF_UNIX) as client:
        client.connect(address)
        client.sendall(b'{"v": 1, "op": "sta')
    with short_address(path) as address, socket.socket(socket.AF_UNIX) as client:
        client.settimeout(30)
        client.connect(address)
        client.sendall(b'{"v": 1, "id": "e", "op": "events", "history": true}\n')
        with client.makefile("rb") as reader:
            assert json.loads(reader.readline()) == {"v": 1, "id": "e", "ok": True, "streaming": True}


async def opened(group: RunningTopology) -> Path:
    """The socket path, once the server has bound it (it starts after the first spawn)."""
    with anyio.fail_after(10):
        while group.control_socket is None or not group.control_socket.exists():
            await anyio.sleep(0.01)
    return group.control_socket


async def test_status_reports_every_replica_and_the_socket_is_private(runs_dir: Path) -> None:
    """``status`` returns state, pid, ports, url, restarts, time to ready and GPUs per replica; the socket
    is mode 0600 in the run dir and named in the manifest."""
    async with sv.launch(topology(), runs_dir=runs_dir) as group:
        path = await opened(group)
        assert path == group.run_dir / "control.sock"
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600 and stat.S_ISSOCK(os.stat(path).st_mode)
        reply = await ask(group, "status")
        assert reply["ok"] and reply["v"] == 1 and reply["id"] == 1
        status = reply["status"]
        assert status["run_id"] == group.run_id and status["phase"] == "running"
        assert status["supervisor_pid"] == os.getpid()
        web = status["services"]["web"]["replicas"][0]
        assert web["state"] == "ready" and web["pid"] == group["web"].pids[0]
        assert web["ports"] == {"port": group["web"].port} and web["url"] == group["web"].url
        assert web["restarts"] == 0 and web["gpus"] == [] and web["ready_seconds"] > 0
        workers = status["services"]["worker"]
        assert [r["name"] for r in workers["replicas"]] == ["worker.0", "worker.1"] and workers["ready"] == 2
        assert workers["depends_on"] == {"web": "ready"}
        with anyio.fail_after(10):  # the manifest written once all is ready names the socket
            while json.loads((group.run_dir / "manifest.json").read_text()).get("control_socket") != str(path):
                await anyio.sleep(0.02)
    assert not path.exists()  # removed at teardown


async def test_restart_through_the_socket_gives_a_new_pid_and_is_recorded(runs_dir: Path) -> None:
    """``restart`` answers once the replica is ready again; the request is a ``ControlRequest`` event
    naming the client's pid, in memory and in events.jsonl."""
    async with sv.launch(topology(), runs_dir=runs_dir) as group:
        await opened(group)
        before = group["worker.1"].pids[0]
        reply = await ask(group, "restart", name="worker.1")
        assert reply["ok"], reply
        after = group["worker.1"].pids[0]
        assert after != before and alive(after) and not alive(before)
        assert group["worker.1"].state is sv.ReplicaState.READY
        requests = [e for e in group.event_history if isinstance(e, sv.ControlRequest)]
        assert [(e.op, e.args, e.client_pid, e.error) for e in requests] == [
            ("restart", {"name": "worker.1"}, os.getpid(), None)
        ]
        unknown = await ask(group, "restart", name="nope")
        assert not unknown["ok"] and "no service or replica named 'nope'" in unknown["error"]
    lines = [json.loads(line) for line in (group.run_dir / "events.jsonl").read_text().splitlines()]
    recorded = [line for line in lines if line["event"] == "control_request"]
    assert recorded[0]["op"] == "restart" and recorded[0]["client_pid"] == os.getpid()


async def test_malformed_requests_get_errors_and_the_run_keeps_going(runs_dir: Path) -> None:
    """Not JSON, not an object, wrong version (the refusal lists the versions the run speaks), unknown op,
    wrong and missing and unknown fields: one error reply each, on the same connection; nothing is
    restarted or stopped."""
    async with sv.launch(topology(), runs_dir=runs_dir) as group:
        path = await opened(group)
        pids = {r.name: r.pid for r in group.replicas}
        bad = [
            b"this is not json",
            b"[1, 2, 3]",
            b'"a string"',
            b'{"v": 2, "id": 1, "op": "status"}',
            b'{"v": 1, "id": 2, "op": "reboot"}',
            b'{"v": 1, "id": 3, "op": 7}',
            b'{"v": 1, "id": 4, "op": "restart"}',
            b'{"v": 1, "id": 5, "op": "restart", "name": 3}',
            b'{"v": 1, "id": 6, "op": "scale", "service": "worker", "replicas": "4"}',
            b'{"v": 1, "id": 7, "op": "scale", "service": "worker", "replicas": true}',
            b'{"v": 1, "id": 8, "op": "stop", "name": "web", "force": true}',
            b'{"v": 1, "id": [1], "op": "status"}',
            b'{"v": 1, "id": 9, "op": "rolling_restart", "service": "worker", "overrides": {"a": [1]}}',
            b'{"v": 1, "id": 10, "op": "mark", "label": "two\\nlines"}',
            b"\xff\xfe\x00",
            b'{"v": 1, "id": 11, "op": "events", "since": "soon"}',
        ]
        replies = await anyio.to_thread.run_sync(exchange, path, b"\n".join(bad) + b"\n")
        assert len(replies) == len(bad) and not any(r["ok"] for r in replies), replies
        errors = [r["error"] for r in replies]
        assert "not JSON" in errors[0] and "expected a JSON object" in errors[1] and "object" in errors[2]
        assert "unsupported protocol version 2" in errors[3]
        assert replies[3]["versions"] == [1] and "versions" not in replies[4]  # a client can pick one it speaks
        assert "unknown op 'reboot'" in errors[4] and "'op' must be a string" in errors[5]
        assert "missing field 'name'" in errors[6] and "'name' must be a string, got an integer" in errors[7]
        assert "'replicas' must be an integer, got a string" in errors[8]
        assert "'replicas' must be an integer, got a boolean" in errors[9]
        assert "unknown field 'force'" in errors[10] and "'id' must be" in errors[11]
        assert "value of 'a' must be a string or a number" in errors[12] and "label" in errors[13]
        assert [r["id"] for r in replies[4:11]] == [2, 3, 4, 5, 6, 7, 8]
        assert "'since' must be a number, got a string" in errors[-1]
        # the connection is still usable after errors, and the run is untouched
        assert (await ask(group, "status"))["status"]["phase"] == "running"
        assert {r.name: r.pid for r in group.replicas} == pids and all(alive(p) for p in group.service("worker").pids)
        refused = [e for e in group.event_history if isinstance(e, sv.ControlRequest)]
        assert len(refused) == len(bad) and sum(1 for e in refused if e.error) == len(bad) - 1  # mark ran, and failed


async def test_a_huge_line_is_refused_and_only_its_connection_closes(runs_dir: Path) -> None:
    """A request line over the limit gets one error and its connection closes; the run answers others."""
    async with sv.launch(topology(), runs_dir=runs_dir) as group:
        path = await opened(group)
        huge = b'{"v": 1, "op": "mark", "label": "' + b"x" * (MAX_LINE_BYTES + 10) + b'"}\n'
        replies = await anyio.to_thread.run_sync(exchange, path, huge)
        assert len(replies) == 1 and f"longer than {MAX_LINE_BYTES} bytes" in replies[0]["error"]
        assert (await ask(group, "status"))["ok"]


async def test_too_many_clients_get_an_error_and_vanishing_clients_do_no_harm(runs_dir: Path) -> None:
    """Past ``MAX_CLIENTS`` open connections and the spare one a new one is told so and closed; clients
    that disconnect mid-line or mid-stream only end their own connection."""
    async with sv.launch(topology(), runs_dir=runs_dir) as group:
        path = await opened(group)
        held: list[socket.socket] = []
        try:
            with short_address(path) as address:
                for _ in range(MAX_CLIENTS + 1):
                    client = socket.socket(socket.AF_UNIX)
                    client.connect(address)
                    held.append(client)
                with anyio.fail_after(10):
                    while group._run.control is None or not group._run.control.spare_in_use:
                        await anyio.sleep(0.01)
                replies = await anyio.to_thread.run_sync(exchange, path, b'{"v": 1, "id": 1, "op": "status"}\n')
                too_many = f"too many clients (at most {MAX_CLIENTS}, and one more for a single request)"
                assert replies == [{"v": 1, "id": None, "ok": False, "error": too_many}]
        finally:
            for client in held:
                client.close()
        with anyio.fail_after(10):
            while group._run.control.clients:
                await anyio.sleep(0.01)
        # half a request, then gone; an events stream, then gone before the events it asked for
        await anyio.to_thread.run_sync(leave_early, path)
        for index in range(50):  # events for a stream nobody reads any more
            group.mark(f"after the client left {index}")
        with anyio.fail_after(10):
            while group._run.control.clients:
                await anyio.sleep(0.01)
        assert (await ask(group, "status"))["status"]["phase"] == "running"
        assert all(alive(pid) for pid in group.service("worker").pids)


async def test_events_stream_history_then_live_then_end(runs_dir: Path) -> None:
    """``events`` with history sends the past events, then new ones as they happen, then an end line
    when the run is over; each line reads back as the typed event."""
    async with sv.launch(topology(), runs_dir=runs_dir) as group:
        path = await opened(group)
        with short_address(path) as address:
            client = socket.socket(socket.AF_UNIX)
            client.settimeout(30)
            client.connect(address)
        reader = client.makefile("rb")
        try:
            client.sendall(b'{"v": 1, "id": 7, "op": "events", "history": true}\n')
            assert json.loads(await anyio.to_thread.run_sync(reader.readline))["streaming"] is True
            kinds = []
            while "ready" not in kinds or kinds.count("ready") < 3:
                kinds.append(json.loads(await anyio.to_thread.run_sync(reader.readline))["event"]["event"])
            assert kinds[0] == "spawned"
            mark = await ask(group, "mark", label="from a client")
            assert mark["ok"] and mark["event"]["label"] == "from a client"
            seen = []
            while not any(e.get("event", {}).get("event") == "mark" for e in seen):
                seen.append(json.loads(await anyio.to_thread.run_sync(reader.readline)))
            event = sv._events.event_from_json(seen[-1]["event"])
            assert isinstance(event, sv.Marked) and event.label == "from a client"
            await group.stop()
            lines = await anyio.to_thread.run_sync(lambda: [json.loads(line) for line in reader])
        finally:
            reader.close()
            client.close()
        assert lines[-1] == {"v": 1, "id": 7, "ok": True, "end": True}
        assert {"stopping", "stopped"} <= {line["event"]["event"] for line in lines[:-1]}


async def test_scale_and_rolling_restart_go_to_the_group_methods(runs_dir: Path) -> None:
    """The socket hands ``scale``/``rolling_restart`` to the group's methods of those names (with the
    fields given, secrets hidden in the record), and says "not supported by this run" without them."""
    async with sv.launch(topology(), runs_dir=runs_dir) as group:
        await opened(group)
        for op, fields in (("scale", {"service": "worker", "replicas": 4}), ("rolling_restart", {"service": "worker"})):
            if not hasattr(RunningTopology, op):
                reply = await ask(group, op, **fields)
                assert reply == {"v": 1, "id": 1, "ok": False, "error": f"{op!r} is not supported by this run"}
        calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []

        async def fake_scale(service: str, replicas: int) -> None:
            calls.append(("scale", (service,), {"replicas": replicas}))

        async def fake_roll(service: str, **options: Any) -> dict[str, Any]:
            calls.append(("rolling_restart", (service,), options))
            return {"rolled": ["worker.0", "worker.1"]}

        group.scale = fake_scale  # type: ignore[attr-defined]
        group.rolling_restart = fake_roll  # type: ignore[attr-defined]
        assert await ask(group, "scale", service="worker", replicas=4) == {"v": 1, "id": 1, "ok": True}
        secret = "s3cr3t-value-42"
        reply = await ask(
            group, "rolling_restart", service="worker", max_unavailable=2, overrides={"HF_TOKEN": secret, "tp": 2}
        )
        assert reply["ok"] and reply["result"] == {"rolled": ["worker.0", "worker.1"]}
        assert calls == [
            ("scale", ("worker",), {"replicas": 4}),
            ("rolling_restart", ("worker",), {"max_unavailable": 2, "overrides": {"HF_TOKEN": secret, "tp": 2}}),
        ]

        async def broken_scale(service: str, replicas: int) -> None:
            raise RuntimeError("boom")

        group.scale = broken_scale  # type: ignore[attr-defined]
        broken = await ask(group, "scale", service="worker", replicas=1)
        assert broken == {"v": 1, "id": 1, "ok": False, "error": "internal error: RuntimeError: boom"}
        assert (await ask(group, "status"))["status"]["phase"] == "running"
    recorded = (group.run_dir / "events.jsonl").read_text()
    assert secret not in recorded and '"HF_TOKEN": "<redacted>"' in recorded
    assert '"tp": "<redacted>"' in recorded  # built in code: no file to tell what an override feeds


async def test_stop_through_the_socket_ends_the_run_as_a_signal_would(runs_dir: Path) -> None:
    """``stop`` cancels the owner's body (its cleanup runs first, as on Ctrl-C), tears everything down,
    and answers once it is over: the socket is gone, the manifest says stopped."""
    replies: list[dict[str, Any]] = []
    cleanup: list[str] = []
    body_went_on = False
    async with sv.launch(topology(), runs_dir=runs_dir) as group:
        path = await opened(group)
        pids = [r.pid for r in group.replicas]
        asker = threading.Thread(target=lambda: replies.append(request_blocking(path, "stop", timeout_seconds=60)))
        asker.start()
        try:
            await anyio.sleep(60)
            body_went_on = True
        finally:
            cleanup.append(group.phase)  # the body's cleanup runs before the teardown
    await anyio.to_thread.run_sync(asker.join, 60)
    assert replies == [{"v": 1, "id": 1, "ok": True}] and cleanup == ["running"] and not body_went_on
    assert not any(alive(pid) for pid in pids if pid is not None)
    assert not path.exists() and group.phase == "stopped"
    assert json.loads((group.run_dir / "manifest.json").read_text())["phase"] == "stopped"


async def test_a_stop_during_a_scale_says_the_scale_was_cut_short(runs_dir: Path) -> None:
    """A ``stop`` while a scale waits for its new replicas: the scale's client gets an answer (not a
    closed connection) saying it was cut short by the stop, and the summary's operation has that error."""
    only_the_first_gets_ready = (
        "import os, time; first = os.environ['TOPOVISOR_REPLICA'] == 'web'; "
        "print('up' if first else 'loading', flush=True); time.sleep(3600)"
    )
    web = sv.Service(name="web", command=[PYTHON, "-c", only_the_first_gets_ready], replicas=1, ready=sv.LogCheck("up"))
    scaled: list[dict[str, Any]] = []
    async with sv.launch(sv.Topology(name="cutshort", services=[web]), runs_dir=runs_dir) as group:
        path = await opened(group)
        scaler = threading.Thread(
            target=lambda: scaled.append(request_blocking(path, "scale", timeout_seconds=60, service="web", replicas=3))
        )
        scaler.start()
        await wait_for(group, lambda events: sum(isinstance(e, sv.Spawned) for e in events) == 3, timeout=30)
        stopper = threading.Thread(target=lambda: request_blocking(path, "stop", timeout_seconds=60))
        stopper.start()
        await anyio.sleep(60)  # the stop cancels this body
    await anyio.to_thread.run_sync(scaler.join, 60)
    await anyio.to_thread.run_sync(stopper.join, 60)
    assert len(scaled) == 1 and scaled[0]["ok"] is False, scaled
    assert scaled[0]["error"].startswith(f"cut short: run {group.run_id} is being stopped"), scaled
    (operation,) = json.loads((group.run_dir / "summary.json").read_text())["operations"]
    assert operation["kind"] == "scale" and operation["error"] == scaled[0]["error"], operation
    assert operation["seconds"] is not None


async def test_a_run_dir_past_the_socket_path_limit_still_has_a_socket(tmp_path: Path) -> None:
    """A run dir deeper than a unix socket address allows (108 bytes) still gets its socket there,
    reached through a short name."""
    deep = tmp_path / ("d" * 60) / ("e" * 60) / "runs"
    async with sv.launch(topology(), runs_dir=deep) as group:
        path = await opened(group)
        assert len(str(path)) > 108 and path.parent == group.run_dir
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        reply = await ask(group, "status")
        assert reply["status"]["services"]["web"]["replicas"][0]["state"] == "ready"


def test_a_control_request_is_a_line_on_the_console() -> None:
    """Operations asked through the socket show on the live display, with who asked and any refusal."""
    from supervisor._cli.console import EventText

    asked = sv.ControlRequest(replica="", service="", op="restart", client_pid=42, args={"name": "decode.1"})
    refused = sv.ControlRequest(replica="", service="", op="reboot", client_pid=None, error="unknown op 'reboot'")
    assert EventText().line(asked) == "control: restart name=decode.1 from pid 42"
    assert EventText().line(refused) == "control: reboot (refused: unknown op 'reboot')"


async def test_stop_while_starting_ends_the_start_with_a_clear_error(runs_dir: Path) -> None:
    """A ``stop`` that comes while a service is still starting tears down what started, answers, and
    ``launch`` raises one error saying so (not a bare "generator didn't yield")."""
    slow = sv.Service(name="slow", command=[PYTHON, "-c", _SLEEP], ready=sv.LogCheck("never printed"))
    seen: list[RunningTopology] = []
    replies: list[dict[str, Any]] = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(stop_when_open, seen, replies)
        with pytest.raises(sv.SupervisorError, match="stopped on request while starting"):
            topo = sv.Topology(name="slowstart", services=[slow])
            async with launch_prepared(topo, runs_dir=runs_dir, on_group=seen.append):
                pytest.fail("the start was stopped: the body must not run")
    assert replies == [{"v": 1, "id": 1, "ok": True}]
    assert seen[0].phase == "stopped" and not alive(seen[0]["slow"].pids[0])


async def stop_when_open(seen: list[RunningTopology], replies: list[dict[str, Any]]) -> None:
    """Send ``stop`` as soon as the run's socket is open."""
    with anyio.fail_after(20):
        while not seen or seen[0].control_socket is None or not seen[0].control_socket.exists():
            await anyio.sleep(0.01)
    call = functools.partial(request_blocking, seen[0].control_socket, "stop", timeout_seconds=60)
    replies.append(await anyio.to_thread.run_sync(call))


async def test_an_operation_goes_on_when_its_client_leaves(runs_dir: Path) -> None:
    """A client that asks for a restart and leaves at once: the run still does the restart (the op is
    the run's once asked), and nothing else is disturbed."""
    async with sv.launch(topology(), runs_dir=runs_dir) as group:
        path = await opened(group)
        before, other = group["worker.1"].pids[0], group["worker.0"].pids[0]

        def ask_and_leave() -> None:
            with short_address(path) as address, socket.socket(socket.AF_UNIX) as client:
                client.connect(address)
                client.sendall(b'{"v": 1, "op": "restart", "name": "worker.1"}\n')

        await anyio.to_thread.run_sync(ask_and_leave)
        with anyio.fail_after(20):
            while group["worker.1"].pids[0] == before or group["worker.1"].state is not sv.ReplicaState.READY:
                await anyio.sleep(0.01)
        assert group.phase == "running" and group["worker.0"].pids[0] == other and alive(other)
        assert (await ask(group, "status"))["ok"]


async def test_the_socket_file_appears_only_once_it_listens(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A client that sees ``control.sock`` can connect at once: the socket is bound under another name and
    renamed into place after ``listen()`` (a bound socket file that is not listening refuses connections,
    which a client polling for the file could hit)."""
    from types import SimpleNamespace

    from supervisor._control import server as _control_server

    path = tmp_path / "control.sock"
    visible_before_listening: list[bool] = []
    real = anyio.create_unix_listener

    async def watched(address: str, **options: Any) -> Any:
        listener = await real(address, **options)  # listening from here on
        visible_before_listening.append(path.exists())
        return listener

    monkeypatch.setattr(_control_server.anyio, "create_unix_listener", watched)
    server = _control_server.ControlServer(SimpleNamespace(run_id="r", run_dir=tmp_path), path)  # type: ignore[arg-type]
    listening: list[Path] = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(functools.partial(server.serve, on_listening=listening.append))
        with anyio.fail_after(10):
            while not listening:
                await anyio.sleep(0.005)
        assert visible_before_listening == [False] and listening == [path] and path.exists()
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        with socket.socket(socket.AF_UNIX) as client:
            client.connect(str(path))
        assert sorted(p.name for p in tmp_path.iterdir()) == ["control.sock"]  # no staging name left
        server.close()
    assert not path.exists()


async def test_a_secret_flag_inside_an_override_is_hidden_in_the_record(tmp_path: Path, runs_dir: Path) -> None:
    """``--set 'args=--api-key sk-...'`` through the socket: the value after the secret-named flag is
    hidden in the ``ControlRequest`` (memory, events.jsonl), the other flags stay readable."""
    path = tmp_path / "args.yaml"
    path.write_text(
        'name: ctl\nvars: {args: ""}\nservices:\n  worker:\n'
        f"    command: ['{{python}}', -c, {json.dumps(_SLEEP)}, '${{args}}']\n    ready: {{log: up}}\n"
    )
    async with sv.launch(sv.load(path), runs_dir=runs_dir) as group:
        await opened(group)
        received: list[dict[str, Any]] = []

        async def fake_roll(service: str, **options: Any) -> None:
            received.append(options)

        group.rolling_restart = fake_roll  # type: ignore[attr-defined]
        secret = "sk-live-0123456789"
        args = f"--tp 2 --api-key {secret} --hf-token={secret}x --max-num-seqs 64"
        reply = await ask(group, "rolling_restart", service="worker", overrides={"args": args})
        assert reply["ok"], reply
        assert received == [{"overrides": {"args": args}}]  # the operation gets what was asked
        (request,) = [e for e in group.event_history if isinstance(e, sv.ControlRequest)]
        recorded = request.args["overrides"]["args"]
        assert recorded == "--tp 2 --api-key <redacted> --hf-token=<redacted> --max-num-seqs 64"
    assert secret not in (group.run_dir / "events.jsonl").read_text()


async def test_scale_while_starting_is_refused_in_plain_words_not_as_an_internal_error(
    runs_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """``scale`` and ``rolling_restart`` that come while the run is still starting are refused with the
    run's state ("is starting: cannot ..."), as the Python API refuses them: no "internal error", and
    no traceback logged as if the socket had a bug."""
    slow = sv.Service(name="slow", command=[PYTHON, "-c", _SLEEP], ready=sv.LogCheck("never printed"))
    seen: list[RunningTopology] = []
    replies: list[dict[str, Any]] = []

    async def operate_when_open() -> None:
        with anyio.fail_after(20):
            while not seen or seen[0].control_socket is None or not seen[0].control_socket.exists():
                await anyio.sleep(0.01)
        path = seen[0].control_socket
        for op, fields in (("scale", {"service": "slow", "replicas": 2}), ("rolling_restart", {"service": "slow"})):
            call = functools.partial(request_blocking, path, op, timeout_seconds=30, **fields)
            replies.append(await anyio.to_thread.run_sync(call))
        stop = functools.partial(request_blocking, path, "stop", timeout_seconds=60)
        await anyio.to_thread.run_sync(stop)

    async with anyio.create_task_group() as tg:
        tg.start_soon(operate_when_open)
        with pytest.raises(sv.SupervisorError, match="stopped on request while starting"):
            topo = sv.Topology(name="earlyops", services=[slow])
            async with launch_prepared(topo, runs_dir=runs_dir, on_group=seen.append):
                pytest.fail("the start was stopped: the body must not run")
    assert [r["ok"] for r in replies] == [False, False], replies
    for reply, what in zip(replies, ("scale 'slow'", "roll 'slow'"), strict=True):
        assert reply["error"] == f"run {seen[0].run_id} is starting: cannot {what} now", reply
    assert not [r for r in caplog.records if r.name == "supervisor.control" and r.exc_info], caplog.text
