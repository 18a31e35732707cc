"""The stand-in serving stack, tested as the demo uses it: real processes, real HTTP, real signals."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

import httpx
import pytest

from ..helpers import free_port, wait_until

ROOT = Path(__file__).resolve().parents[2]
READY_LINE = "Application startup complete."
CHAT = "/v1/chat/completions"


class Standin:
    """One ``python -m standins`` process; its output is collected by reader threads."""

    def __init__(self, role: str, *args: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
        argv = [sys.executable, "-m", "standins", role, "--port", str(self.port), *args]
        self.proc = subprocess.Popen(
            argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
        )
        self._lock = threading.Lock()
        self._out = bytearray()
        self._err = bytearray()
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self._readers = [
            threading.Thread(target=self._pump, args=(self.proc.stdout, self._out), daemon=True),
            threading.Thread(target=self._pump, args=(self.proc.stderr, self._err), daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    def _pump(self, pipe: IO[bytes], sink: bytearray) -> None:
        while chunk := pipe.read1(65536):  # type: ignore[attr-defined]
            with self._lock:
                sink.extend(chunk)

    @property
    def stdout(self) -> str:
        with self._lock:
            return self._out.decode("utf-8", "replace")

    @property
    def stderr(self) -> str:
        with self._lock:
            return self._err.decode("utf-8", "replace")

    def signal_and_wait(self, sig: signal.Signals = signal.SIGTERM, timeout: float = 5.0) -> tuple[int, float]:
        """Sends ``sig``; returns the exit code and how long the process took to exit."""
        start = time.monotonic()
        self.proc.send_signal(sig)
        code = self.proc.wait(timeout)
        return code, time.monotonic() - start

    def cleanup(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        for reader in self._readers:
            reader.join(5)
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()


Spawn = Callable[..., Standin]


@pytest.fixture
def spawn() -> Iterator[Spawn]:
    started: list[Standin] = []

    def start(role: str, *args: str) -> Standin:
        standin = Standin(role, *args)
        started.append(standin)
        return standin

    try:
        yield start
    finally:
        for standin in started:
            standin.cleanup()


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=5.0) as http:
        yield http


def status(client: httpx.Client, url: str) -> int | None:
    """The status of a GET, or None while nothing listens yet."""
    try:
        return client.get(url).status_code
    except httpx.TransportError:
        return None


def wait_healthy(client: httpx.Client, standin: Standin, timeout: float = 10.0) -> None:
    wait_until(lambda: status(client, f"{standin.url}/health") == 200, timeout, f"{standin.url}/health")


def metric(client: httpx.Client, standin: Standin, name: str) -> float:
    """The value of the first sample of ``name`` (any labels) in the stand-in's /metrics."""
    for line in client.get(f"{standin.url}/metrics").text.splitlines():
        if line.startswith(name) and line[len(name)] in "{ ":
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in {standin.url}/metrics")


def chat_body(max_tokens: int = 5, stream: bool = False) -> dict[str, object]:
    messages = [{"role": "user", "content": "Supervise every serving process"}]
    return {"model": "standin/tiny-llm", "messages": messages, "max_tokens": max_tokens, "stream": stream}


def sse_data(response: httpx.Response) -> list[str]:
    return [line[len("data: ") :] for line in response.iter_lines() if line.startswith("data: ")]


def streamed_text(events: list[str]) -> str:
    chunks = [json.loads(event) for event in events[:-1]]
    assert all(chunk["object"] == "chat.completion.chunk" for chunk in chunks)
    return "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])


def raw_exchange(port: int, payload: bytes) -> bytes:
    """Sends raw bytes and reads until the server closes the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=5.0) as sock:
        sock.sendall(payload)
        received = bytearray()
        while chunk := sock.recv(65536):
            received.extend(chunk)
    return bytes(received)


def test_kv_put_get_prefix_delete(spawn: Spawn, client: httpx.Client) -> None:
    kv = spawn("kv", "--load-seconds", "0")
    wait_healthy(client, kv)
    assert client.get(f"{kv.url}/health").json() == {"status": "ok"}
    for key, value in {"workers/decode/1": "http://a", "workers/decode/2": "http://b", "other": "x"}.items():
        assert client.put(f"{kv.url}/v1/kv/{key}", content=value).status_code == 200
    assert client.get(f"{kv.url}/v1/kv/workers/decode/1").text == "http://a"
    assert client.get(f"{kv.url}/v1/kv/missing").status_code == 404
    listing = client.get(f"{kv.url}/v1/kv", params={"prefix": "workers/"}).json()
    assert listing == {"workers/decode/1": "http://a", "workers/decode/2": "http://b"}
    assert len(client.get(f"{kv.url}/v1/kv").json()) == 3
    assert client.delete(f"{kv.url}/v1/kv/workers/decode/1").json()["deleted"] == 1
    assert client.get(f"{kv.url}/v1/kv/workers/decode/1").status_code == 404
    assert client.get(f"{kv.url}/v1/kv", params={"prefix": "workers/"}).json() == {"workers/decode/2": "http://b"}
    assert metric(client, kv, "standin_kv_keys") == 2


def test_http_keep_alive_malformed_and_unknown(spawn: Spawn, client: httpx.Client) -> None:
    kv = spawn("kv", "--load-seconds", "0")
    wait_healthy(client, kv)
    two = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\nGET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    answer = raw_exchange(kv.port, two)
    assert answer.count(b"HTTP/1.1 200 OK") == 2  # both on one connection
    assert b"connection: keep-alive" in answer.lower()
    assert raw_exchange(kv.port, b"NONSENSE\r\n\r\n").startswith(b"HTTP/1.1 400 ")
    assert raw_exchange(kv.port, b"GET /health HTTP/1.1\r\nno colon here\r\n\r\n").startswith(b"HTTP/1.1 400 ")
    bad_length = b"PUT /v1/kv/a HTTP/1.1\r\nContent-Length: nope\r\n\r\n"
    assert raw_exchange(kv.port, bad_length).startswith(b"HTTP/1.1 400 ")
    assert client.get(f"{kv.url}/nope").status_code == 404
    assert client.post(f"{kv.url}/health").status_code == 405


def test_worker_loads_then_turns_healthy_with_the_ready_line(spawn: Spawn, client: httpx.Client) -> None:
    worker = spawn("worker", "--load-seconds", "0.6")
    seen: list[int | None] = []

    def ready_line_printed() -> bool:
        seen.append(status(client, f"{worker.url}/health"))
        return READY_LINE in worker.stdout

    wait_until(ready_line_printed, 10, "the readiness line")
    assert status(client, f"{worker.url}/health") == 200  # healthy as soon as the line is out
    assert 503 in seen  # loading was observable before
    out = worker.stdout
    assert out.count(READY_LINE) == 1
    assert f"Uvicorn running on {worker.url}" in out
    assert out.index("Uvicorn running on") < out.index("Loading safetensors checkpoint shards") < out.index(READY_LINE)
    assert "\r" in out and "5/5" in out


def test_worker_sigterm_while_loading(spawn: Spawn, client: httpx.Client) -> None:
    worker = spawn("worker", "--load-seconds", "30")
    wait_until(lambda: status(client, f"{worker.url}/health") == 503, 10, "the loading worker")
    assert client.get(f"{worker.url}/health").json() == {"status": "loading"}
    assert client.post(f"{worker.url}{CHAT}", json=chat_body()).status_code == 503
    assert metric(client, worker, "standin_ready") == 0
    code, took = worker.signal_and_wait(signal.SIGTERM)
    assert (code, READY_LINE in worker.stdout) == (0, False)
    assert took < 1.0
    assert "Shutting down (received SIGTERM)" in worker.stdout


def test_worker_chat_completions(spawn: Spawn, client: httpx.Client) -> None:
    worker = spawn("worker", "--load-seconds", "0", "--tokens-per-second", "100")
    wait_healthy(client, worker)
    models = client.get(f"{worker.url}/v1/models").json()
    assert models["object"] == "list" and models["data"][0]["id"] == "standin/tiny-llm"

    first = client.post(f"{worker.url}{CHAT}", json=chat_body(5)).json()
    assert first["object"] == "chat.completion"
    text = first["choices"][0]["message"]["content"]
    assert text == "supervise every serving process supervise"  # the prompt's words, cycled
    assert first["usage"]["completion_tokens"] == 5
    again = client.post(f"{worker.url}{CHAT}", json=chat_body(5)).json()
    assert again["choices"][0]["message"]["content"] == text

    start = time.monotonic()
    with client.stream("POST", f"{worker.url}{CHAT}", json=chat_body(5, stream=True)) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = sse_data(response)
    assert time.monotonic() - start >= 5 / 100 * 0.9  # paced at --tokens-per-second
    assert events[-1] == "[DONE]"
    assert streamed_text(events) == text

    assert client.post(f"{worker.url}{CHAT}", content=b"{not json").status_code == 400
    assert client.post(f"{worker.url}{CHAT}", json={**chat_body(), "max_tokens": 0}).status_code == 400
    assert client.post(f"{worker.url}{CHAT}", json={**chat_body(), "model": "other"}).status_code == 404
    assert metric(client, worker, "standin_requests_total") == 3
    assert metric(client, worker, "standin_tokens_generated_total") == 15
    assert metric(client, worker, "standin_ready") == 1


def test_frontend_routes_through_prefill_and_decode(spawn: Spawn, client: httpx.Client) -> None:
    kv = spawn("kv", "--load-seconds", "0")
    frontend = spawn("frontend", "--kv", kv.url, "--require-prefill")
    wait_healthy(client, kv)
    workers = ("--kv", kv.url, "--load-seconds", "0", "--tokens-per-second", "1000")
    decodes = [spawn("worker", "--role-name", "decode", *workers) for _ in range(2)]

    def decode_workers_known(count: int) -> Callable[[], bool]:
        def known() -> bool:
            try:
                return bool(client.get(f"{frontend.url}/health").json()["workers"]["decode"] == count)
            except httpx.TransportError:  # the frontend is still starting
                return False

        return known

    wait_until(decode_workers_known(2), 10, "the frontend to see both decode workers")
    assert client.get(f"{frontend.url}/health").status_code == 503  # still no prefill worker
    assert client.post(f"{frontend.url}{CHAT}", json=chat_body()).status_code == 503
    assert READY_LINE not in frontend.stdout
    prefill = spawn("worker", "--role-name", "prefill", *workers)
    wait_healthy(client, frontend)
    assert READY_LINE in frontend.stdout

    routed = []
    for _ in range(2):
        response = client.post(f"{frontend.url}{CHAT}", json=chat_body(4))
        assert response.status_code == 200
        assert response.json()["choices"][0]["message"]["content"] == "supervise every serving process"
        routed.append(response.headers["x-standin-worker"])
    assert sorted(routed) == sorted(d.url for d in decodes)  # round robin
    with client.stream("POST", f"{frontend.url}{CHAT}", json=chat_body(4, stream=True)) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        events = sse_data(response)
    assert events[-1] == "[DONE]" and len(events) == 4 + 3
    assert streamed_text(events) == "supervise every serving process"
    assert metric(client, prefill, "standin_requests_total") == 3
    assert metric(client, prefill, "standin_tokens_generated_total") == 3  # max_tokens=1 each
    assert sum(metric(client, d, "standin_requests_total") for d in decodes) == 3
    assert metric(client, frontend, "standin_requests_total") == 3
    assert metric(client, frontend, "standin_prefill_requests_total") == 3

    gone = decodes[0]
    assert gone.signal_and_wait(signal.SIGTERM)[0] == 0
    key = f"workers/decode/{gone.port}"
    assert key not in client.get(f"{kv.url}/v1/kv", params={"prefix": "workers/"}).json()
    wait_until(decode_workers_known(1), 10, "the frontend to drop the deregistered worker")
    stale = f"http://127.0.0.1:{free_port()}"  # as if a worker had crashed without deregistering
    client.put(f"{kv.url}/v1/kv/workers/decode/{free_port()}", content=stale)
    wait_until(decode_workers_known(2), 10, "the frontend to see the stale key")
    for _ in range(2):  # the stale entry is refused and skipped
        response = client.post(f"{frontend.url}{CHAT}", json=chat_body(2))
        assert response.status_code == 200 and response.headers["x-standin-worker"] == decodes[1].url
    assert metric(client, frontend, "standin_upstream_errors_total") >= 1


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
@pytest.mark.parametrize("role", ["kv", "worker", "frontend"])
def test_signal_exits_zero_quickly(spawn: Spawn, client: httpx.Client, role: str, sig: signal.Signals) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"  # an unreachable kv: the worker keeps retrying to register
    extra = {"kv": [], "worker": ["--kv", nowhere], "frontend": ["--kv", nowhere]}[role]
    standin = spawn(role, "--load-seconds", "0", *extra)
    wait_until(lambda: "Uvicorn running on" in standin.stdout, 10, "the start line")
    if role != "frontend":
        wait_healthy(client, standin)
    code, took = standin.signal_and_wait(sig, timeout=20)
    assert code == 0, standin.stderr
    assert took < 10  # promptly; the ~20 ms it takes is a benchmark figure, not a test bound
    assert f"Shutting down (received {sig.name})" in standin.stdout
    assert "Finished server process" in standin.stdout


@pytest.mark.parametrize(("role", "code_args", "expected"), [("kv", [], 1), ("worker", ["--exit-code", "3"], 3)])
def test_exit_after_crashes_with_the_code(spawn: Spawn, role: str, code_args: list[str], expected: int) -> None:
    standin = spawn(role, "--load-seconds", "0", "--exit-after", "0.2", *code_args)
    assert standin.proc.wait(10) == expected
    assert READY_LINE in standin.stdout
    assert f"simulated fatal error after 0.2s of readiness (--exit-after); exiting with code {expected}" in (
        standin.stderr
    )
    assert "Shutting down" not in standin.stdout


def test_demo_client_streams_through_the_frontend(spawn: Spawn, client: httpx.Client) -> None:
    kv = spawn("kv", "--load-seconds", "0")
    spawn("worker", "--kv", kv.url, "--load-seconds", "0", "--tokens-per-second", "1000")
    frontend = spawn("frontend", "--kv", kv.url)
    wait_healthy(client, frontend)
    demo = [sys.executable, str(ROOT / "examples" / "demo_client.py")]
    done = subprocess.run([*demo, frontend.url, "--max-tokens", "8"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert "models: standin/tiny-llm" in done.stdout and "tokens=8 " in done.stdout
    failed = subprocess.run(
        [*demo, f"http://127.0.0.1:{free_port()}", "--timeout", "2"], capture_output=True, timeout=30
    )
    assert failed.returncode == 1


def test_standins_import_the_standard_library_only() -> None:
    """The stand-ins are not the library: they never import ``supervisor`` (nor its dependencies)."""
    code = (
        "import sys, standins._cli, standins.kv, standins.worker, standins.frontend\n"
        "print(sorted(m for m in ('supervisor', 'anyio', 'httpx', 'h11', 'psutil', 'attrs') if m in sys.modules))"
    )
    env = {key: value for key, value in os.environ.items() if not key.startswith("PYTHON")}
    env["PYTHONPATH"] = str(ROOT)
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_engine_env_command_makes_an_env_path_whose_programs_are_the_stand_ins(tmp_path: Path) -> None:
    """``python -m standins engine-env DIR`` (the README's rehearsal step): bin/vllm is the vLLM stand-in."""
    root = tmp_path / "engines"
    made = subprocess.run(
        [sys.executable, "-m", "standins", "engine-env", str(root)], capture_output=True, text=True, timeout=60
    )
    assert made.returncode == 0, made.stderr
    assert f"--set env_path={root}" in made.stdout
    usage = subprocess.run([str(root / "bin" / "vllm"), "serve", "--help"], capture_output=True, text=True, timeout=60)
    assert usage.returncode == 0 and "--kv-transfer-config" in usage.stdout, usage.stdout + usage.stderr
    refused = subprocess.run(
        [sys.executable, "-m", "standins", "engine-env"], capture_output=True, text=True, timeout=60
    )
    assert refused.returncode == 2 and "usage" in refused.stderr
