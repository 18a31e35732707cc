"""``topologies.pd_proxy`` speaks the protocol of vLLM's NixlConnector proxy to real HTTP servers.

The reference is vLLM's ``tests/v1/kv_connector/nixl_integration/toy_proxy_server.py`` (vLLM main, 2025-11;
the proxy ``docs/features/nixl_connector_usage.md`` points to): the prefill request carries
``kv_transfer_params`` = ``{"do_remote_decode": true, "do_remote_prefill": false, "remote_*": null}``,
``stream=false``, ``max_tokens=1`` (and ``max_completion_tokens=1`` when given), no ``stream_options``, and
neither ``min_tokens`` nor ``min_completion_tokens`` ("These args are not supported for P"); the decode request
is the client's own, with the prefill answer's ``kv_transfer_params``; both carry the same ``X-Request-Id``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from topologies.pd_proxy import BACKLOG

from ..helpers import running_pd_proxy, send_json

CONCURRENT = 130  #: streams in flight at once: more than httpx's default pool (100 connections)
PARAMS = {"remote_engine_id": "e", "remote_block_ids": [1, 2], "remote_host": "127.0.0.1", "remote_port": 5600}


class _Recorder(BaseHTTPRequestHandler):
    """A vLLM-like server: a remote-decode request is a prefill (answered with kv_transfer_params)."""

    seen: list[tuple[str, dict[str, object], str | None]]
    barrier: threading.Barrier | None = None  #: decode answers once this many decode requests are in flight

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        remote = (body.get("kv_transfer_params") or {}).get("do_remote_decode")
        self.seen.append(("prefill" if remote else "decode", body, self.headers.get("x-request-id")))
        if self.barrier is not None and not remote:
            try:
                self.barrier.wait()
            except threading.BrokenBarrierError:
                self.send_error(504, "fewer decode requests than expected were in flight at once")
                return
        send_json(self, 200, {"choices": [{"text": "x"}], "kv_transfer_params": PARAMS if remote else None})

    def log_message(self, *_: object) -> None:
        pass


class _Server(ThreadingHTTPServer):
    request_queue_size = 2 * CONCURRENT  #: the listen backlog: every stream connects at once
    daemon_threads = True


Seen = list[tuple[str, dict[str, object], str | None]]


@pytest.fixture
def handler() -> type[_Recorder]:
    return type("Handler", (_Recorder,), {"seen": []})


@pytest.fixture
def recorder(handler: type[_Recorder]) -> Iterator[tuple[str, Seen]]:
    server = _Server(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler.seen
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.fixture
def proxy(recorder: tuple[str, Seen]) -> Iterator[str]:
    with running_pd_proxy(recorder[0], recorder[0]) as url:
        yield url


def test_prefill_then_decode_as_vllms_toy_proxy_does(proxy: str, recorder: tuple[str, Seen]) -> None:
    """Proves the prefill request drops what vLLM's prefill side does not support (min_completion_tokens was
    passed on) and the decode request is the client's, with the prefill's kv_transfer_params."""
    request = {
        "model": "m", "messages": [{"role": "user", "content": "hi"}], "max_completion_tokens": 9,
        "min_tokens": 2, "min_completion_tokens": 2, "stream": True, "stream_options": {"include_usage": True},
    }  # fmt: skip
    answer = httpx.post(proxy + "/v1/chat/completions", json=request, timeout=30)
    assert answer.status_code == 200, answer.text
    (role_p, prefill, id_p), (role_d, decode, id_d) = recorder[1]
    assert (role_p, role_d) == ("prefill", "decode")
    assert prefill["kv_transfer_params"] == {
        "do_remote_decode": True, "do_remote_prefill": False, "remote_engine_id": None,
        "remote_block_ids": None, "remote_host": None, "remote_port": None,
    }  # fmt: skip
    assert (prefill["stream"], prefill["max_tokens"], prefill["max_completion_tokens"]) == (False, 1, 1)
    assert not {"stream_options", "min_tokens", "min_completion_tokens"} & prefill.keys(), prefill
    assert decode == {**request, "kv_transfer_params": PARAMS}
    assert id_p is not None and id_p == id_d


def test_more_streams_at_once_than_httpx_pools_by_default(proxy: str, handler: type[_Recorder]) -> None:
    """Proves the proxy holds as many decode streams open upstream as clients ask for: vLLM's toy proxy builds
    its clients with ``httpx.Limits(max_connections=None, max_keepalive_connections=None)``; ours used httpx's
    default pool of 100, so a benchmark at concurrency 130 had 30 requests queued inside the proxy."""
    handler.barrier = threading.Barrier(CONCURRENT, timeout=20)  # each decode answers once all are in flight
    request = {"model": "m", "prompt": "hi", "max_tokens": 4}
    with httpx.Client(timeout=60, limits=httpx.Limits(max_connections=None)) as client:

        def one(_: int) -> int:
            return client.post(proxy + "/v1/completions", json=request).status_code

        with ThreadPoolExecutor(max_workers=CONCURRENT) as pool:
            statuses = list(pool.map(one, range(CONCURRENT)))
    assert statuses == [200] * CONCURRENT


def test_the_listen_backlog_takes_a_burst_of_clients(proxy: str) -> None:
    """Proves the proxy listens with uvicorn's backlog of 2048 (what vLLM's toy proxy gets), not asyncio's
    default 100: past the backlog the kernel drops SYNs and those clients retry a second later."""
    if shutil.which("ss") is None:
        pytest.skip("needs ss (iproute2) to read a listening socket's backlog")
    port = proxy.rsplit(":", 1)[1]
    listing = subprocess.run(["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True, check=True)
    backlogs = {int(line.split()[2]) for line in listing.stdout.splitlines() if line.startswith("LISTEN")}
    cap = int(Path("/proc/sys/net/core/somaxconn").read_text())
    assert backlogs == {min(BACKLOG, cap)}, listing.stdout
