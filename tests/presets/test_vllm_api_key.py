"""A vLLM deployment started with an API key: readiness that can pass, and a proxy that passes the
client's credentials on to the prefill and decode servers."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

import supervisor as sv
import topologies

from ..helpers import running_pd_proxy, send_json

KEY = "Bearer s3cret"


@pytest.mark.parametrize(
    ("args", "env"),
    [({"api_key": "s3cret"}, None), (["--api-key", "s3cret"], None), (None, {"VLLM_API_KEY": "s3cret"})],
)
def test_a_server_with_an_api_key_is_ready_on_health(args: object, env: dict[str, str] | None) -> None:
    """Proves readiness no longer polls /v1/models (401 forever once vLLM has an API key) in that case."""
    for topology in (topologies.vllm(model="m", args=args, env=env),  # type: ignore[arg-type]
                     topologies.vllm(model="m", args=args, env=env, mode="disagg")):  # type: ignore[arg-type]  # fmt: skip
        for service in topology.services:
            probe = service.ready
            assert isinstance(probe, sv.Probe) and isinstance(probe.check, sv.HttpCheck)
            assert probe.check.url.endswith("/health"), (service.name, probe.check.url)
    without = topologies.vllm(model="m").services[0].ready
    assert isinstance(without, sv.Probe) and isinstance(without.check, sv.HttpCheck)
    assert without.check.url.endswith("/v1/models")


def test_an_api_key_in_one_roles_args_makes_that_role_ready_on_health() -> None:
    """Proves ``decode_args={"api_key": ...}`` also moves that role's readiness to /health (it polled /v1/models,
    401 forever with vLLM's ``--api-key``), while the other role keeps /v1/models."""
    prefill, decode, _ = topologies.vllm(model="m", mode="disagg", decode_args={"api_key": "s3cret"}).services
    urls = [s.ready.check.url for s in (prefill, decode)]  # type: ignore[union-attr]
    assert urls == ["http://{host}:{port}/v1/models", "http://{host}:{port}/health"]


class _Upstream(BaseHTTPRequestHandler):
    """A server that, like vLLM with ``--api-key``, answers 401 on /v1 without the bearer token."""

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        if self.headers.get("authorization") != KEY:
            self._send(401, {"error": "Unauthorized"})
        elif body.get("kv_transfer_params", {}).get("do_remote_decode"):
            self._send(200, {"choices": [{"text": "x"}], "kv_transfer_params": {"remote_engine_id": "e"}})
        else:
            self._send(200, {"choices": [{"text": "decoded"}], "seen": body.get("kv_transfer_params")})

    def _send(self, status: int, answer: object) -> None:
        send_json(self, status, answer)

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def upstream() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Upstream)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def test_the_proxy_passes_the_clients_credentials_on(upstream: str) -> None:
    """Proves a request with a bearer token gets through the prefill/decode proxy (it was 401 upstream)."""
    with running_pd_proxy(upstream, upstream) as url:
        request = {"model": "m", "prompt": "hi", "max_tokens": 4}
        answer = httpx.post(url + "/v1/completions", json=request, headers={"Authorization": KEY}, timeout=30)
        assert answer.status_code == 200, answer.text
        assert b'"decoded"' in answer.content and b'"remote_engine_id": "e"' in answer.content
        refused = httpx.post(url + "/v1/completions", json=request, timeout=30)
        assert refused.status_code == 401


def test_numbers_in_a_list_of_args_are_fine() -> None:
    """Proves a raw args list holding a number builds (the API-key check called str methods on it)."""
    (server,) = topologies.vllm(model="m", args=["--max-model-len", 4096]).services
    assert server.command[-2:] == ("--max-model-len", "4096")
