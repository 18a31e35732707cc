"""The probes' own HTTP client against real loopback servers speaking the HTTP/1.1 variants it must read."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import psutil
import pytest
from anyio.abc import SocketStream

from supervisor.logs import LineStream
from supervisor.probes import PollBudget, ProbeTarget, ReadinessRunner, _raw_get
from supervisor.spec import ExecCheck, HttpCheck, Probe

pytestmark = pytest.mark.anyio


@asynccontextmanager
async def serving(response: bytes, *, close: bool = True) -> AsyncIterator[int]:
    """A loopback server that answers every request with ``response`` (and keeps the socket open unless close)."""
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")

    async def handle(stream: SocketStream) -> None:
        async with stream:
            await stream.receive()
            await stream.send(response)
            if not close:
                await anyio.sleep(30)

    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, handle)
        yield listener.extra(anyio.abc.SocketAttribute.local_port)
        tg.cancel_scope.cancel()


async def test_content_length_response_on_a_kept_open_socket() -> None:
    """Servers that ignore Connection: close must not make the probe wait for a close."""
    async with serving(b'HTTP/1.1 200 OK\r\nContent-Length: 15\r\n\r\n{"status":"ok"}', close=False) as port:
        with anyio.fail_after(5):
            status, body = await _raw_get(("127.0.0.1", port), b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (status, body) == (200, b'{"status":"ok"}')


async def test_chunked_response_and_json_predicate() -> None:
    chunked = b'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n8\r\n{"status\r\n7\r\n":"ok"}\r\n0\r\n\r\n'
    async with serving(chunked) as port:
        probe = Probe(HttpCheck(f"http://127.0.0.1:{port}/health", json={"status": "ok"}))
        runner = ReadinessRunner(
            probe, target=ProbeTarget("x", "x", 0, 1, "127.0.0.1", {}), stream=LineStream(None), env={},
            http_client=lambda: pytest.fail("http:// must not need httpx"), budget=PollBudget(),
        )  # fmt: skip
        with anyio.fail_after(5):
            result = await runner.wait_passed()
    assert result.ok and result.detail == "status 200"


async def test_refused_connection_is_reported_as_cheap() -> None:
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    await listener.aclose()
    probe = Probe(HttpCheck(f"http://127.0.0.1:{port}/"), timeout_seconds=0.2)
    runner = ReadinessRunner(
        probe, target=ProbeTarget("x", "x", 0, 1, "127.0.0.1", {}), stream=LineStream(None), env={},
        http_client=lambda: pytest.fail("unused"), budget=PollBudget(),
    )  # fmt: skip
    with pytest.raises(TimeoutError):
        await runner.wait_passed()
    assert "connection refused" in runner.last.detail and runner.attempts > 5


def test_poll_budget_spreads_a_fixed_rate() -> None:
    budget = PollBudget()
    budget.active = 1
    assert budget.period(cheap=False) == pytest.approx(0.01) and budget.period(cheap=True) == pytest.approx(0.005)
    budget.active = 200
    assert budget.period(cheap=False) == pytest.approx(2.0) and budget.period(cheap=True) == pytest.approx(0.2)


def _tree_probe(pids_file: Path) -> Probe:
    """An exec probe that never answers and leaves two sleeps: one in its group, one that left it (setsid)."""
    script = f"sleep 60 & echo $! >> {pids_file}; setsid sleep 60 & echo $! >> {pids_file}; wait"
    return Probe(ExecCheck(["sh", "-c", script]), attempt_timeout_seconds=1.0)


async def test_exec_probe_timing_out_ends_its_whole_tree(tmp_path: Path) -> None:
    """Issue 12: attempts that time out left the probe command's grandchildren running (2, 4, 9 leaked)."""
    pids_file = tmp_path / "pids"
    runner = ReadinessRunner(
        _tree_probe(pids_file), target=ProbeTarget("x", "x", 0, 1, "127.0.0.1", {}), stream=LineStream(None),
        env=dict(os.environ), http_client=lambda: pytest.fail("unused"), liveness=True,
    )  # fmt: skip
    try:
        for _ in range(2):
            with anyio.fail_after(10):
                result = await runner.check_once()
            assert not result.ok
        pids = [int(word) for word in pids_file.read_text().split()]
        assert len(pids) >= 2, "the probe command did not start its sleeps"
        left = await _survivors(pids)
        assert not left, f"descendants of the exec probe still alive: {left}"
    finally:
        _kill_all(pids_file)


async def test_exec_probe_cancelled_ends_its_whole_tree(tmp_path: Path) -> None:
    """Cancelling an attempt (the replica stops) ends the probe's tree too, and waits for it."""
    pids_file = tmp_path / "pids"
    runner = ReadinessRunner(
        _tree_probe(pids_file), target=ProbeTarget("x", "x", 0, 1, "127.0.0.1", {}), stream=LineStream(None),
        env=dict(os.environ), http_client=lambda: pytest.fail("unused"), liveness=True,
    )  # fmt: skip
    try:
        with anyio.fail_after(10), anyio.CancelScope() as scope:
            async with anyio.create_task_group() as tg:
                tg.start_soon(runner.check_once)
                deadline = time.monotonic() + 8
                while len(pids_file.read_text().split() if pids_file.exists() else []) < 2:
                    assert time.monotonic() < deadline, "the probe command did not start its sleeps"
                    await anyio.sleep(0.01)
                scope.cancel()
        left = await _survivors([int(word) for word in pids_file.read_text().split()])
        assert not left, f"descendants of the exec probe still alive: {left}"
    finally:
        _kill_all(pids_file)


async def _survivors(pids: list[int], within: float = 5.0) -> list[int]:
    """The pids still running (zombies count as gone) once ``within`` seconds passed, or none earlier."""
    deadline = time.monotonic() + within
    while True:
        left = [pid for pid in pids if alive_pid(pid)]
        if not left or time.monotonic() > deadline:
            return left
        await anyio.sleep(0.02)


def alive_pid(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _kill_all(pids_file: Path) -> None:
    """Test cleanup only: the sleeps this test started, by pid."""
    for word in pids_file.read_text().split() if pids_file.exists() else []:
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(word), signal.SIGKILL)
