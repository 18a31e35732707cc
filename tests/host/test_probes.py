"""The probes' own HTTP client against real loopback servers speaking the HTTP/1.1 variants it must read."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import ssl
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import psutil
import pytest
from anyio.abc import Listener
from anyio.streams.tls import TLSListener

from supervisor._host.logs import LineStream
from supervisor._host.probes import PollBudget, ProbeTarget, ReadinessRunner
from supervisor._spec.model import ExecCheck, HttpCheck, Probe, TcpCheck

pytestmark = pytest.mark.anyio


TLS_FILES = Path(__file__).resolve().parents[1] / "tls"


@pytest.fixture(scope="module")
def tls() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """Contexts for https on loopback with the self-signed test certificate: (server, client)."""
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(TLS_FILES / "localhost-cert.pem", TLS_FILES / "localhost-key.pem")
    return server, ssl.create_default_context(cafile=str(TLS_FILES / "localhost-cert.pem"))


@asynccontextmanager
async def serving(
    response: bytes, *, host: str = "127.0.0.1", close: bool = True, tls: ssl.SSLContext | None = None
) -> AsyncIterator[int]:
    """A loopback server that answers every request with ``response`` (and keeps the socket open unless close)."""
    tcp = await anyio.create_tcp_listener(local_host=host)
    port = tcp.extra(anyio.abc.SocketAttribute.local_port)
    listener: Listener[Any] = tcp if tls is None else TLSListener(tcp, tls, standard_compatible=False)

    async def handle(stream: anyio.abc.ByteStream) -> None:
        async with stream:
            with contextlib.suppress(anyio.EndOfStream, anyio.BrokenResourceError, ssl.SSLError):
                await stream.receive()
                await stream.send(response)
                if not close:
                    await anyio.sleep(30)

    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, handle)
        yield port
        tg.cancel_scope.cancel()


OK_JSON = b'HTTP/1.1 200 OK\r\nContent-Length: 15\r\n\r\n{"status":"ok"}'
CHUNKED = b'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n8\r\n{"status\r\n7\r\n":"ok"}\r\n0\r\n\r\n'
HTTP10 = b'HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n{"status": "ok", "model": {"id": "m"}}'
LOADING = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 7\r\n\r\nloading"
NO_CONTENT = b"HTTP/1.1 204 No Content\r\n\r\n"
#: ``/v1/models`` serving a name that JSON escapes (a quote, a backslash, ``é`` as ``\u00e9``)
ESCAPED_NAME = 'a"b\\c-\u00e9'
_MODELS = json.dumps({"object": "list", "data": [{"id": "other"}, {"id": ESCAPED_NAME, "object": "model"}]}).encode()
MODELS = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(_MODELS), _MODELS)

#: (id, response, server closes after it, check arguments, passes, a piece of the detail)
HTTP_CASES = [
    ("content-length, socket kept open", OK_JSON, False, {"json": {"status": "ok"}}, True, "status 200"),
    ("chunked + json", CHUNKED, True, {"json": {"status": "ok"}}, True, "status 200"),
    ("HTTP/1.0 close-delimited + nested json", HTTP10, True, {"json": {"model": {"id": "m"}}}, True, "status 200"),
    ("body regex", HTTP10, True, {"body": r'"status": "ok"'}, True, "status 200"),
    ("body regex misses", OK_JSON, True, {"body": "^ready$"}, False, "body does not match"),
    ("json lacks a key", CHUNKED, True, {"json": {"status": "ok", "x": 1}}, False, "lacks"),
    ("json list holds an escaped id", MODELS, True, {"json": {"data": [{"id": ESCAPED_NAME}]}}, True, "status 200"),
    ("json list lacks the id", MODELS, True, {"json": {"data": [{"id": "a"}]}}, False, "lacks"),
    ("json list is no mapping", MODELS, True, {"json": {"object": ["list"]}}, False, "lacks"),
    ("non-2xx fails by default", LOADING, True, {}, False, "status 503: 'loading'"),
    ("expected status", LOADING, True, {"status": 503}, True, "status 503"),
    ("204 without a body", NO_CONTENT, True, {}, True, "status 204"),
    ("not HTTP", b"garbage\r\n\r\n", True, {}, False, ""),
]
HOSTS = [("127.0.0.1", "127.0.0.1"), ("::1", "[::1]"), ("127.0.0.1", "localhost")]  # (bind, URL host)


def runner_for(check: HttpCheck, client: Callable[[], httpx.AsyncClient], **probe: Any) -> ReadinessRunner:
    return ReadinessRunner(
        Probe(check, **probe), target=ProbeTarget("x", "x", 0, 1, "127.0.0.1", {}), stream=LineStream(None), env={},
        http_client=client, budget=PollBudget(),
    )  # fmt: skip


@pytest.mark.parametrize("scheme", ["http", "https"])
@pytest.mark.parametrize(("bind", "url_host"), HOSTS, ids=[url for _, url in HOSTS])
@pytest.mark.parametrize(
    ("response", "close", "arguments", "passes", "detail"),
    [case[1:] for case in HTTP_CASES],
    ids=[case[0] for case in HTTP_CASES],
)
async def test_http_check_table(
    tls: tuple[ssl.SSLContext, ssl.SSLContext], scheme: str, bind: str, url_host: str,
    response: bytes, close: bool, arguments: dict[str, Any], passes: bool, detail: str,
) -> None:  # fmt: skip
    """One table, both paths: http:// over the probes' own client (never httpx), https:// over httpx."""
    server_tls, client_tls = tls
    async with (
        serving(response, host=bind, close=close, tls=server_tls if scheme == "https" else None) as port,
        httpx.AsyncClient(verify=client_tls, trust_env=False) as client,
    ):
        check = HttpCheck(f"{scheme}://{url_host}:{port}/health", **arguments)
        use = (lambda: client) if scheme == "https" else (lambda: pytest.fail("http:// must not need httpx"))
        with anyio.fail_after(10):
            result = await runner_for(check, use, attempt_timeout_seconds=5).check_once()
    assert result.ok is passes, result.detail
    assert detail in result.detail


async def test_unsendable_url_fails_each_attempt_instead_of_the_spawn() -> None:
    runner = runner_for(HttpCheck("http://127.0.0.1:1/a b"), lambda: pytest.fail("unused"))
    result = await runner.check_once()
    assert not result.ok and "cannot send GET '/a b'" in result.detail


async def test_tcp_check_resolves_localhost_off_the_event_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 11: a tcp probe on ``localhost`` resolved the name with a blocking call on the event loop."""
    loop_thread = threading.get_ident()
    on_loop: list[str] = []
    in_worker: list[str] = []
    real = socket.getaddrinfo

    def spy(host: Any, port: Any, family: int = 0, type: int = 0, proto: int = 0, flags: int = 0) -> Any:
        name = host.decode() if isinstance(host, bytes) else str(host)
        if not flags & socket.AI_NUMERICHOST:  # numeric-only calls never wait for a lookup (trio tries one first)
            (on_loop if threading.get_ident() == loop_thread else in_worker).append(name)
        return real(host, port, family, type, proto, flags)

    async with serving(OK_JSON) as port:
        monkeypatch.setattr(socket, "getaddrinfo", spy)
        runner = ReadinessRunner(
            Probe(TcpCheck(f"localhost:{port}")), target=ProbeTarget("x", "x", 0, 1, "127.0.0.1", {}),
            stream=LineStream(None), env={}, http_client=lambda: pytest.fail("unused"), budget=PollBudget(),
        )  # fmt: skip
        with anyio.fail_after(10):
            result = await runner.check_once()
    assert result.ok, result.detail
    assert not on_loop, f"getaddrinfo ran on the event loop thread for {on_loop}"
    assert in_worker == ["localhost"], "the name was not resolved in a worker thread (once)"


async def test_refused_connection_is_reported_as_cheap() -> None:
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    await listener.aclose()
    runner = runner_for(HttpCheck(f"http://127.0.0.1:{port}/"), lambda: pytest.fail("unused"), timeout_seconds=0.2)
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


async def test_exec_probe_that_exits_leaves_no_background_child(tmp_path: Path) -> None:
    """A command that exits 0 but left a background child passes at once, and the child ends with it
    (it held the output pipe, so the attempt used to wait for it and time out)."""
    pids_file = tmp_path / "pids"
    probe = Probe(ExecCheck(["sh", "-c", f"sleep 60 & echo $! >> {pids_file}; echo up"]), attempt_timeout_seconds=5)
    runner = ReadinessRunner(
        probe, target=ProbeTarget("x", "x", 0, 1, "127.0.0.1", {}), stream=LineStream(None),
        env=dict(os.environ), http_client=lambda: pytest.fail("unused"), liveness=True,
    )  # fmt: skip
    try:
        with anyio.fail_after(10):
            result = await runner.check_once()
        assert result.ok and result.detail == "exit 0: up", result.detail
        left = await _survivors([int(word) for word in pids_file.read_text().split()])
        assert not left, f"the background child of the exec probe is still alive: {left}"
    finally:
        _kill_all(pids_file)


async def test_exec_probe_attempts_leave_no_setsid_child_of_an_exited_subshell(tmp_path: Path) -> None:
    """``(setsid sleep &); exit 0``: the sleep leaves the attempt's group and session, and its parent (the
    subshell) is gone before the attempt ends, so neither the group's signal nor the tree walk reaches it.
    Attempts piled them up (6, 13, 17, 22 after 2, 4, 6, 8 s at a 200 ms period); each attempt now ends its
    own escapee, found by the attempt's mark once the pipe it still holds tells that one escaped."""
    pids_file = tmp_path / "pids"
    script = f"(setsid sleep 100016 & echo $! >> {pids_file}); exit 0"
    probe = Probe(ExecCheck(["sh", "-c", script]), attempt_timeout_seconds=5)
    runner = ReadinessRunner(
        probe, target=ProbeTarget("x", "x", 0, 1, "127.0.0.1", {}), stream=LineStream(None),
        env=dict(os.environ), http_client=lambda: pytest.fail("unused"), liveness=True,
    )  # fmt: skip
    try:
        for attempt in range(1, 6):
            with anyio.fail_after(10):
                result = await runner.check_once()
            assert result.ok, result.detail
            assert len(pids_file.read_text().split()) == attempt  # written before the attempt exits
        pids = [int(word) for word in pids_file.read_text().split()]
        assert len(pids) == 5
        left = await _survivors(pids)
        assert not left, f"escaped children of ended probe attempts still alive: {left}"
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


async def test_http_check_sends_its_headers() -> None:
    """``headers:`` reach the server on the probes' own http:// client (a key-guarded ``/v1/models``)."""
    seen: list[bytes] = []
    tcp = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = tcp.extra(anyio.abc.SocketAttribute.local_port)

    async def handle(stream: anyio.abc.ByteStream) -> None:
        async with stream:
            with contextlib.suppress(anyio.EndOfStream, anyio.BrokenResourceError):
                request = await stream.receive()
                seen.append(request)
                guarded = b"\r\nAuthorization: Bearer k-123\r\n" in request
                await stream.send(OK_JSON if guarded else b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n")

    async with tcp, anyio.create_task_group() as tg:
        tg.start_soon(tcp.serve, handle)
        url = f"http://127.0.0.1:{port}/v1/models"
        unused = lambda: pytest.fail("http:// must not need httpx")  # noqa: E731
        with anyio.fail_after(10):
            bare = await runner_for(HttpCheck(url), unused).check_once()
            keyed = await runner_for(HttpCheck(url, headers={"Authorization": "Bearer k-123"}), unused).check_once()
        tg.cancel_scope.cancel()
    assert not bare.ok and "status 401" in bare.detail
    assert keyed.ok, keyed.detail


async def test_https_check_sends_its_headers(tls: tuple[ssl.SSLContext, ssl.SSLContext]) -> None:
    """The same over https (httpx): the header goes with the GET."""
    sent: list[httpx.Request] = []

    async def record(request: httpx.Request) -> None:
        sent.append(request)

    server_tls, client_tls = tls
    async with (
        serving(OK_JSON, tls=server_tls) as port,
        httpx.AsyncClient(verify=client_tls, trust_env=False, event_hooks={"request": [record]}) as client,
    ):
        check = HttpCheck(f"https://localhost:{port}/v1/models", headers={"X-Api-Key": "k-456"})
        with anyio.fail_after(10):
            result = await runner_for(check, lambda: client, attempt_timeout_seconds=5).check_once()
    assert result.ok, result.detail
    assert sent and sent[0].headers["x-api-key"] == "k-456"
