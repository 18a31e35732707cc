"""Stand-ins for an LLM-serving stack: etcd-like ``kv``, vLLM-like ``worker``, Dynamo-like ``frontend``.

The demo and the tests need processes that start, log, turn ready, serve and die like real GPU servers,
without GPUs. This module imports the standard library only (never the rest of ``supervisor``), so a
process starts in tens of milliseconds. Run as::

    python -m supervisor.standin {kv,worker,frontend} --port N [options]

Every role prints ``INFO:     Uvicorn running on http://HOST:PORT (Press CTRL+C to quit)`` once bound and
exactly one ``INFO:     Application startup complete.`` line at the moment ``GET /health`` turns 200.
SIGTERM/SIGINT exit 0 within milliseconds; ``--exit-after S`` simulates a crash S seconds after readiness.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import signal
import sys
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from http import HTTPStatus
from urllib.parse import parse_qs, unquote, urlsplit

__all__ = ["main"]

DEFAULT_MODEL = "standin/tiny-llm"
_MAX_BODY = 16 * 1024 * 1024
_MAX_HEADER_LINES = 100
_KEEPALIVE_IDLE_S = 75.0
_KV_POLL_S = 0.2
_REGISTER_RETRY_S = 10.0
_REGISTER_REFRESH_S = 2.0
_DEREGISTER_TIMEOUT_S = 0.1
_FALLBACK_WORDS = ("the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog")
_HEX = re.compile(r"[0-9A-Fa-f]+")
_METHOD = re.compile(r"[A-Z]+")
_VERSION = re.compile(r"HTTP/1\.[01]")
_WORD = re.compile(r"[A-Za-z0-9']+")


# --------------------------------------------------------------------------------------------- output


class _Log:
    """vLLM/uvicorn-looking lines, flushed at once because a supervisor reads them through a pipe."""

    def __init__(self, component: str) -> None:
        self._component = component

    def _write(self, text: str, *, error: bool = False) -> None:
        out = sys.stderr if error else sys.stdout
        with contextlib.suppress(OSError, ValueError):  # the reader went away: keep serving regardless
            out.write(text)
            out.flush()

    def _line(self, level: str, message: str, *, error: bool = False) -> None:
        stamp = time.strftime("%m-%d %H:%M:%S")
        self._write(f"{level} {stamp} [standin.{self._component}] {message}\n", error=error)

    def info(self, message: str) -> None:
        self._line("INFO", message)

    def warning(self, message: str) -> None:
        self._line("WARNING", message)

    def error(self, message: str) -> None:
        self._line("ERROR", message, error=True)

    def uvicorn(self, message: str) -> None:
        self._write(f"INFO:     {message}\n")

    def raw(self, text: str) -> None:
        self._write(text)


def _clock(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes:02d}:{secs:02d}"


def _progress(desc: str, done: int, total: int, elapsed: float) -> str:
    """A tqdm-style bar as vLLM prints it, so log scrapers see the real shape."""
    rate = done / elapsed if done and elapsed > 0 else 0.0
    remaining = (total - done) / rate if rate else None
    rate_text = f"{rate:5.2f}it/s" if rate else "?it/s"
    times = f"{_clock(elapsed)}<{_clock(remaining)}"
    return f"{desc}: {100 * done / total:3.0f}% Completed | {done}/{total} [{times}, {rate_text}]"


# ----------------------------------------------------------------------------------------- HTTP core


class HttpError(Exception):
    """Aborts a request with ``status``; the server answers with an OpenAI-style error body."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class _PeerClosed(EOFError):
    """The other side closed the connection mid-message."""


class _UpstreamError(Exception):
    """A request to another stand-in failed (refused, timed out, or garbled)."""


class Request:
    __slots__ = ("body", "headers", "method", "path", "query", "version")

    def __init__(
        self,
        method: str,
        path: str,
        query: dict[str, list[str]],
        version: str,
        headers: dict[str, str],
        body: bytes,
    ) -> None:
        self.method = method
        self.path = path
        self.query = query
        self.version = version
        self.headers = headers
        self.body = body

    def json(self) -> object:
        try:
            return json.loads(self.body)
        except ValueError as exc:
            raise HttpError(400, f"request body is not valid JSON: {exc}") from None


class Response:
    __slots__ = ("body", "content_type", "headers", "status")

    def __init__(
        self,
        status: int,
        body: bytes,
        content_type: str = "application/json",
        headers: list[tuple[str, str]] | None = None,
    ) -> None:
        self.status = status
        self.body = body
        self.content_type = content_type
        self.headers = headers or []


class StreamResponse:
    """A 200 whose body is produced piece by piece (SSE); sent chunked, then the connection closes."""

    __slots__ = ("chunks", "content_type", "headers")

    def __init__(
        self,
        chunks: AsyncGenerator[bytes, None],
        content_type: str = "text/event-stream",
        headers: list[tuple[str, str]] | None = None,
    ) -> None:
        self.chunks = chunks
        self.content_type = content_type
        self.headers = headers or []


Handler = Callable[[Request], Awaitable[Response | StreamResponse]]


def _json_response(status: int, payload: object, headers: list[tuple[str, str]] | None = None) -> Response:
    return Response(status, json.dumps(payload).encode(), headers=headers)


def _error_response(status: int, message: str) -> Response:
    kind = "invalid_request_error" if status < 500 else "server_error"
    return _json_response(status, {"error": {"message": message, "type": kind, "code": status}})


def _head_bytes(status: int, headers: list[tuple[str, str]]) -> bytes:
    lines = [f"HTTP/1.1 {status} {HTTPStatus(status).phrase}", "server: standin"]
    lines.extend(f"{name}: {value}" for name, value in headers)
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def _read_head(reader: asyncio.StreamReader) -> list[str] | None:
    """Lines of a message head up to the blank line; None on a clean EOF before the first byte."""
    lines: list[str] = []
    while True:
        raw = await reader.readline()  # ValueError past the reader's line limit
        if not raw.endswith(b"\n"):
            if not raw and not lines:
                return None
            raise _PeerClosed("connection closed inside a message head")
        line = raw.rstrip(b"\r\n").decode("latin-1")
        if not line:
            if lines:
                return lines
            continue  # RFC 9112 2.2: ignore empty lines before a request line
        lines.append(line)
        if len(lines) > _MAX_HEADER_LINES:
            raise HttpError(400, "too many header lines")


def _parse_headers(lines: list[str]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in lines:
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise HttpError(400, f"malformed header line {line[:80]!r}")
        key = name.lower()
        value = value.strip()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    return headers


async def _iter_chunked(reader: asyncio.StreamReader, limit: int | None) -> AsyncGenerator[bytes, None]:
    """Payloads of a chunked body, one per chunk, so relays can pass chunks on as they come."""
    total = 0
    while True:
        size_line = await reader.readline()
        if not size_line.endswith(b"\n"):
            raise _PeerClosed("connection closed inside a chunked body")
        size_text = size_line.split(b";", 1)[0].strip().decode("latin-1")
        if not _HEX.fullmatch(size_text):
            raise HttpError(400, f"bad chunk size {size_text[:20]!r}")
        size = int(size_text, 16)
        if size == 0:
            while (await reader.readline()).strip():  # trailers, ignored
                pass
            return
        total += size
        if limit is not None and total > limit:
            raise HttpError(413, "request body too large")
        data = await reader.readexactly(size)
        if (await reader.readline()).strip():
            raise HttpError(400, "chunk data longer than its size")
        yield data


async def _read_body(reader: asyncio.StreamReader, headers: dict[str, str], *, request: bool) -> bytes:
    """A whole body; requests without a length have none, responses without one run to EOF."""
    encoding = headers.get("transfer-encoding", "").strip().lower()
    if encoding:
        if encoding != "chunked":
            raise HttpError(400, f"unsupported transfer-encoding {encoding!r}")
        chunks = _iter_chunked(reader, _MAX_BODY if request else None)
        try:
            return b"".join([piece async for piece in chunks])
        finally:
            await chunks.aclose()
    length_text = headers.get("content-length")
    if length_text is None:
        return b"" if request else await reader.read()
    if not length_text.strip().isdigit():
        raise HttpError(400, f"bad content-length {length_text[:20]!r}")
    length = int(length_text)
    if request and length > _MAX_BODY:
        raise HttpError(413, "request body too large")
    return await reader.readexactly(length)


class _HttpServer:
    """A small HTTP/1.1 server: keep-alive for plain responses, chunked SSE, 400s for garbage."""

    def __init__(self, handler: Handler, log: _Log, access_log: bool) -> None:
        self._handler = handler
        self._log = log
        self._access_log = access_log
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[object]] = set()

    async def start(self, host: str, port: int) -> int:
        self._server = await asyncio.start_server(self._on_connect, host, port)
        return int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        """Stops listening and drops open connections: a stand-in exits now, it does not drain."""
        if self._server is not None:
            self._server.close()
        tasks = list(self._connections)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=0.1)

    async def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._connections.add(task)
        try:
            await self._serve(reader, writer)
        except (OSError, EOFError):
            pass  # the client went away
        except asyncio.CancelledError:
            pass  # close() drops us; ending normally keeps asyncio's stream callback quiet
        finally:
            if task is not None:
                self._connections.discard(task)
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        client = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) and len(peer) >= 2 else "-"
        while True:
            try:
                head = await asyncio.wait_for(_read_head(reader), _KEEPALIVE_IDLE_S)
                if head is None:
                    return
                request = await self._parse(head, reader, writer)
            except asyncio.TimeoutError:
                return
            except ValueError:  # a line over the reader's limit
                await self._send(writer, _error_response(400, "header line too long"), keep_alive=False)
                return
            except HttpError as exc:
                await self._send(writer, _error_response(exc.status, exc.message), keep_alive=False)
                return
            response = await self._dispatch(request)
            if self._access_log:
                status = response.status if isinstance(response, Response) else 200
                line = f'{client} - "{request.method} {request.path} {request.version}" {status}'
                self._log.uvicorn(f"{line} {HTTPStatus(status).phrase}")
            if isinstance(response, StreamResponse):
                await self._send_stream(writer, request, response)
                return
            keep_alive = _keep_alive(request)
            await self._send(writer, response, keep_alive=keep_alive)
            if not keep_alive:
                return

    async def _parse(self, head: list[str], reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> Request:
        parts = head[0].split(" ")
        if len(parts) != 3:
            raise HttpError(400, f"malformed request line {head[0][:80]!r}")
        method, target, version = parts
        if not _METHOD.fullmatch(method) or not _VERSION.fullmatch(version) or not target.startswith("/"):
            raise HttpError(400, f"malformed request line {head[0][:80]!r}")
        headers = _parse_headers(head[1:])
        if headers.get("expect", "").lower() == "100-continue":
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        body = await _read_body(reader, headers, request=True)
        split = urlsplit(target)
        return Request(method, unquote(split.path), parse_qs(split.query), version, headers, body)

    async def _dispatch(self, request: Request) -> Response | StreamResponse:
        try:
            return await self._handler(request)
        except HttpError as exc:
            return _error_response(exc.status, exc.message)
        except Exception as exc:  # a bug in a stand-in must not kill the connection loop silently
            self._log.error(f"{request.method} {request.path} failed: {exc!r}")
            return _error_response(500, f"internal error: {exc!r}")

    async def _send(self, writer: asyncio.StreamWriter, response: Response, *, keep_alive: bool) -> None:
        headers = [
            ("content-type", response.content_type),
            ("content-length", str(len(response.body))),
            ("connection", "keep-alive" if keep_alive else "close"),
            *response.headers,
        ]
        writer.write(_head_bytes(response.status, headers) + response.body)
        await writer.drain()

    async def _send_stream(self, writer: asyncio.StreamWriter, request: Request, response: StreamResponse) -> None:
        chunked = request.version == "HTTP/1.1"
        headers = [("content-type", response.content_type), ("cache-control", "no-cache")]
        if chunked:
            headers.append(("transfer-encoding", "chunked"))
        headers += [("connection", "close"), *response.headers]
        try:
            writer.write(_head_bytes(200, headers))
            await writer.drain()
            async for piece in response.chunks:
                if not piece:
                    continue
                if writer.is_closing():
                    raise _PeerClosed("client went away mid-stream")
                writer.write(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
                await writer.drain()
            if chunked:
                writer.write(b"0\r\n\r\n")
                await writer.drain()
        except (OSError, EOFError):
            pass
        except Exception as exc:  # e.g. a relayed upstream died: close without the final chunk
            self._log.warning(f"stream for {request.path} aborted: {exc}")
        finally:
            await response.chunks.aclose()


def _keep_alive(request: Request) -> bool:
    connection = request.headers.get("connection", "").lower()
    if request.version == "HTTP/1.0":
        return "keep-alive" in connection
    return "close" not in connection


# ---------------------------------------------------------------------------------------- HTTP client


class _Upstream:
    """A response being read from another stand-in; the caller must ``close()`` it."""

    __slots__ = ("_reader", "_writer", "headers", "status")

    def __init__(
        self, status: int, headers: dict[str, str], reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.status = status
        self.headers = headers
        self._reader = reader
        self._writer = writer

    async def read(self, timeout: float) -> bytes:
        try:
            return await asyncio.wait_for(_read_body(self._reader, self.headers, request=False), timeout)
        except (OSError, EOFError, ValueError, asyncio.TimeoutError, HttpError) as exc:
            raise _UpstreamError(f"reading the response failed: {exc!r}") from None

    async def pieces(self, timeout: float) -> AsyncGenerator[bytes, None]:
        """The body as it arrives (one item per chunk when chunked); ``timeout`` applies per piece."""
        chunked = self.headers.get("transfer-encoding", "").lower() == "chunked"
        source = _iter_chunked(self._reader, None) if chunked else self._raw_pieces()
        try:
            while True:
                try:
                    piece = await asyncio.wait_for(source.__anext__(), timeout)
                except StopAsyncIteration:
                    return
                except (OSError, EOFError, ValueError, asyncio.TimeoutError, HttpError) as exc:
                    raise _UpstreamError(f"upstream stream failed: {exc!r}") from None
                yield piece
        finally:
            await source.aclose()

    async def _raw_pieces(self) -> AsyncGenerator[bytes, None]:
        length_text = self.headers.get("content-length")
        remaining = int(length_text) if length_text and length_text.isdigit() else None
        while remaining is None or remaining > 0:
            piece = await self._reader.read(65536 if remaining is None else min(remaining, 65536))
            if not piece:
                return
            if remaining is not None:
                remaining -= len(piece)
            yield piece

    def close(self) -> None:
        self._writer.close()


async def _open(url: str, method: str = "GET", body: bytes | None = None, timeout: float = 2.0) -> _Upstream:
    """Sends one request (``Connection: close``) and reads the response head within ``timeout``."""
    split = urlsplit(url)
    host = split.hostname or "127.0.0.1"
    port = split.port or 80
    target = (split.path or "/") + (f"?{split.query}" if split.query else "")
    lines = [f"{method} {target} HTTP/1.1", f"host: {split.netloc}", "connection: close", "accept: */*"]
    if body is not None:
        lines += ["content-type: application/json", f"content-length: {len(body)}"]
    writer: asyncio.StreamWriter | None = None
    try:
        reader, opened = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
        writer = opened
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b""))
        await writer.drain()
        head = await asyncio.wait_for(_read_head(reader), timeout)
        if head is None:
            raise _PeerClosed("empty response")
        status = int(head[0].split(" ", 2)[1])
        return _Upstream(status, _parse_headers(head[1:]), reader, opened)
    except (OSError, EOFError, ValueError, IndexError, asyncio.TimeoutError, HttpError) as exc:
        if writer is not None:
            writer.close()
        raise _UpstreamError(f"{method} {url}: {exc!r}") from None


async def _fetch(url: str, method: str = "GET", body: bytes | None = None, timeout: float = 2.0) -> tuple[int, bytes]:
    upstream = await _open(url, method, body, timeout)
    try:
        return upstream.status, await upstream.read(timeout)
    finally:
        upstream.close()


# ---------------------------------------------------------------------------------------------- roles


class _Role:
    """What every role shares: readiness, health, metrics, and the route table."""

    name = "role"

    def __init__(self, args: argparse.Namespace, log: _Log) -> None:
        self.args = args
        self.log = log
        self.ready = asyncio.Event()
        self.base_url = ""
        self.requests_total = 0

    def bound(self, host: str, port: int) -> None:
        advertised = "127.0.0.1" if host in ("", "0.0.0.0") else ("::1" if host == "::" else host)
        self.base_url = f"http://[{advertised}]:{port}" if ":" in advertised else f"http://{advertised}:{port}"

    def mark_ready(self) -> None:
        """Health turns 200 and the readiness line is printed in the same loop step."""
        self.ready.set()
        self.log.uvicorn("Application startup complete.")

    async def startup(self) -> None:
        raise NotImplementedError

    async def shutdown(self, graceful: bool) -> None:
        """Role-specific cleanup, bounded to a few milliseconds."""

    def healthy(self) -> bool:
        return self.ready.is_set()

    def health_payload(self) -> dict[str, object]:
        return {"status": "ok" if self.healthy() else "loading"}

    def metric_lines(self) -> list[str]:
        return []

    async def handle(self, request: Request) -> Response | StreamResponse:
        if request.path == "/health":
            _require(request, "GET")
            return _json_response(200 if self.healthy() else 503, self.health_payload())
        if request.path == "/metrics":
            _require(request, "GET")
            return Response(200, self._metrics().encode(), "text/plain; version=0.0.4; charset=utf-8")
        return await self.route(request)

    async def route(self, request: Request) -> Response | StreamResponse:
        raise HttpError(404, f"no route for {request.path}")

    def _metrics(self) -> str:
        labels = f'role="{self.name}"'
        lines = [
            "# HELP standin_requests_total Requests handled by this stand-in's API.",
            "# TYPE standin_requests_total counter",
            f"standin_requests_total{{{labels}}} {self.requests_total}",
            *self.metric_lines(),
            "# HELP standin_ready 1 once the stand-in is ready to serve.",
            "# TYPE standin_ready gauge",
            f"standin_ready{{{labels}}} {int(self.healthy())}",
        ]
        return "\n".join(lines) + "\n"


def _require(request: Request, *methods: str) -> None:
    if request.method not in methods:
        raise HttpError(405, f"{request.method} not allowed on {request.path} (use {', '.join(methods)})")


def _models_response(model: str) -> Response:
    return _json_response(200, {"object": "list", "data": [{"id": model, "object": "model", "owned_by": "standin"}]})


class _KvStore(_Role):
    """etcd's part in Dynamo: workers register under ``workers/<role>/<port>``, the frontend lists them."""

    name = "kv"

    def __init__(self, args: argparse.Namespace, log: _Log) -> None:
        super().__init__(args, log)
        self.data: dict[str, str] = {}

    async def startup(self) -> None:
        self.log.info("starting key-value store")
        await asyncio.sleep(max(0.0, self.args.load_seconds))
        self.mark_ready()

    def metric_lines(self) -> list[str]:
        return [
            "# HELP standin_kv_keys Keys currently stored.",
            "# TYPE standin_kv_keys gauge",
            f'standin_kv_keys{{role="kv"}} {len(self.data)}',
        ]

    async def route(self, request: Request) -> Response | StreamResponse:
        if request.path == "/v1/kv":
            _require(request, "GET")
            self._count_operation()
            prefix = request.query.get("prefix", [""])[0]
            return _json_response(200, {k: v for k, v in sorted(self.data.items()) if k.startswith(prefix)})
        if not request.path.startswith("/v1/kv/"):
            raise HttpError(404, f"no route for {request.path}")
        key = request.path[len("/v1/kv/") :]
        if not key:
            raise HttpError(400, "empty key")
        _require(request, "GET", "PUT", "DELETE")
        self._count_operation()
        if request.method == "GET":
            if key not in self.data:
                raise HttpError(404, f"no such key {key!r}")
            return Response(200, self.data[key].encode(), "text/plain; charset=utf-8")
        if request.method == "PUT":
            try:
                value = request.body.decode("utf-8")
            except UnicodeDecodeError:
                raise HttpError(400, "value must be UTF-8 text") from None
            created = key not in self.data
            self.data[key] = value
            return _json_response(200, {"key": key, "created": created})
        deleted = self.data.pop(key, None) is not None
        return _json_response(200, {"key": key, "deleted": int(deleted)})

    def _count_operation(self) -> None:
        """Counts a kv operation; like a starting etcd, answers 503 until ready."""
        self.requests_total += 1
        if not self.ready.is_set():
            raise HttpError(503, "key-value store is still starting")


class _Worker(_Role):
    """A vLLM worker: loads for a while (503), then serves OpenAI chat completions at a set pace."""

    name = "worker"

    def __init__(self, args: argparse.Namespace, log: _Log) -> None:
        super().__init__(args, log)
        self.name = args.role_name
        self.model: str = args.model
        self.tokens_total = 0
        self.running = 0
        self._key = ""
        self._registered = False
        self._refresher: asyncio.Task[None] | None = None

    def bound(self, host: str, port: int) -> None:
        super().bound(host, port)
        self._key = f"workers/{self.name}/{port}"

    async def startup(self) -> None:
        await self._load()
        self.mark_ready()
        if self.args.kv:
            await self._register()
            self._refresher = asyncio.create_task(self._keep_registered())

    async def _load(self) -> None:
        """Prints what vLLM prints while loading, spread over ``--load-seconds``."""
        loop = asyncio.get_running_loop()
        budget = max(0.0, self.args.load_seconds)
        start = loop.time()
        self.log.info(f"vLLM API server version 0.0.0+standin; model={self.model!r} role={self.name}")
        self.log.info(f"Starting to load model {self.model}...")
        shards = 5
        for done in range(shards + 1):
            if done:
                await asyncio.sleep(budget * 0.6 / shards)
            line = _progress("Loading safetensors checkpoint shards", done, shards, loop.time() - start)
            self.log.raw(("\r" if done else "") + line)
        self.log.raw("\n")
        loaded = loop.time() - start
        self.log.info(f"Loading weights took {loaded:.2f} seconds")
        self.log.info(f"Model loading took 0.01 GiB and {loaded:.2f} seconds")
        await asyncio.sleep(budget * 0.2)
        self.log.info(f"Memory profiling takes {budget * 0.2:.2f} seconds")
        self.log.info("# cuda blocks: 4096, # CPU blocks: 512")
        self.log.info("Maximum concurrency for 2048 tokens per request: 32.00x")
        graphs, graph_start = 4, loop.time()
        for done in range(graphs + 1):
            if done:
                await asyncio.sleep(budget * 0.2 / graphs)
            line = _progress("Capturing CUDA graph shapes", done, graphs, loop.time() - graph_start)
            self.log.raw(("\r" if done else "") + line)
        self.log.raw("\n")
        self.log.info(f"Graph capturing finished in {loop.time() - graph_start:.2f} secs")
        self.log.info(f"init engine (profile, create kv cache, warmup model) took {loop.time() - start:.2f} seconds")

    async def _register(self) -> None:
        url = f"{self.args.kv.rstrip('/')}/v1/kv/{self._key}"
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _REGISTER_RETRY_S
        problem = ""
        while loop.time() < deadline:
            try:
                status, _ = await _fetch(url, "PUT", self.base_url.encode(), timeout=1.0)
                if status == 200:
                    self._registered = True
                    self.log.info(f"registered {self._key} = {self.base_url} with {self.args.kv}")
                    return
                problem = f"HTTP {status}"
            except _UpstreamError as exc:
                problem = str(exc)
            await asyncio.sleep(0.1)
        self.log.warning(f"could not register with {self.args.kv} within {_REGISTER_RETRY_S:.0f}s: {problem}")

    async def _keep_registered(self) -> None:
        """Re-puts the key now and then, so a restarted (empty) kv learns about this worker again."""
        url = f"{self.args.kv.rstrip('/')}/v1/kv/{self._key}"
        healthy = self._registered
        while True:
            await asyncio.sleep(_REGISTER_REFRESH_S)
            try:
                status, _ = await _fetch(url, "PUT", self.base_url.encode(), timeout=1.0)
                ok = status == 200
            except _UpstreamError:
                ok = False
            if ok and not healthy:
                self.log.info(f"registration with {self.args.kv} restored")
            elif healthy and not ok:
                self.log.warning(f"registration with {self.args.kv} failing; will keep trying")
            healthy = ok
            self._registered = self._registered or ok

    async def shutdown(self, graceful: bool) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
        if graceful and self._registered:
            url = f"{self.args.kv.rstrip('/')}/v1/kv/{self._key}"
            try:
                await _fetch(url, "DELETE", timeout=_DEREGISTER_TIMEOUT_S)
                self.log.info(f"deregistered {self._key}")
            except _UpstreamError as exc:
                self.log.warning(f"could not deregister {self._key}: {exc}")

    def metric_lines(self) -> list[str]:
        labels = f'role="{self.name}",model={json.dumps(self.model)}'
        return [
            "# HELP standin_tokens_generated_total Completion tokens generated.",
            "# TYPE standin_tokens_generated_total counter",
            f"standin_tokens_generated_total{{{labels}}} {self.tokens_total}",
            "# HELP standin_requests_running Requests being generated right now.",
            "# TYPE standin_requests_running gauge",
            f"standin_requests_running{{{labels}}} {self.running}",
        ]

    async def route(self, request: Request) -> Response | StreamResponse:
        if request.path == "/v1/models":
            _require(request, "GET")
            return _models_response(self.model)
        if request.path == "/v1/chat/completions":
            _require(request, "POST")
            return await self._chat(request)
        raise HttpError(404, f"no route for {request.path}")

    async def _chat(self, request: Request) -> Response | StreamResponse:
        if not self.ready.is_set():
            raise HttpError(503, "model is still loading")
        chat = _ChatRequest.parse(request, self.model)
        self.requests_total += 1
        completion_id = f"chatcmpl-standin-{os.getpid()}-{self.requests_total}"
        if chat.stream:
            return StreamResponse(self._stream(chat, completion_id))
        self.running += 1
        try:
            text = "".join([token async for token in self._generate(chat)])
        finally:
            self.running -= 1
        return _json_response(
            200,
            {
                "id": completion_id,
                "object": "chat.completion",
                "created": int(time.time()),
                "model": self.model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text},
                        "finish_reason": "length",
                    }
                ],
                "usage": chat.usage(),
            },
        )

    async def _stream(self, chat: _ChatRequest, completion_id: str) -> AsyncGenerator[bytes, None]:
        created = int(time.time())

        def event(choices: list[object], **extra: object) -> bytes:
            chunk = {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": self.model,
                "choices": choices,
                **extra,
            }
            return b"data: " + json.dumps(chunk).encode() + b"\n\n"

        def delta(content: dict[str, str], finish: str | None = None) -> bytes:
            return event([{"index": 0, "delta": content, "finish_reason": finish}])

        self.running += 1
        try:
            yield delta({"role": "assistant", "content": ""})
            async for token in self._generate(chat):
                yield delta({"content": token})
            yield delta({}, "length")
            if chat.include_usage:
                yield event([], usage=chat.usage())
            yield b"data: [DONE]\n\n"
        finally:
            self.running -= 1

    async def _generate(self, chat: _ChatRequest) -> AsyncGenerator[str, None]:
        """Deterministic tokens (the prompt's words, cycled), paced at ``--tokens-per-second``."""
        loop = asyncio.get_running_loop()
        rate = self.args.tokens_per_second
        start = loop.time()
        words = chat.words
        for index in range(chat.max_tokens):
            if rate > 0:
                delay = start + (index + 1) / rate - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
            self.tokens_total += 1
            word = words[index % len(words)]
            yield word if index == 0 else " " + word


class _ChatRequest:
    """The parts of an OpenAI chat request a stand-in uses, validated like vLLM would (400/404)."""

    __slots__ = ("include_usage", "max_tokens", "prompt_tokens", "stream", "words")

    def __init__(self, words: list[str], prompt_tokens: int, max_tokens: int, stream: bool, usage: bool) -> None:
        self.words = words
        self.prompt_tokens = prompt_tokens
        self.max_tokens = max_tokens
        self.stream = stream
        self.include_usage = usage

    @classmethod
    def parse(cls, request: Request, served_model: str) -> _ChatRequest:
        body = request.json()
        if not isinstance(body, dict):
            raise HttpError(400, "request body must be a JSON object")
        model = body.get("model")
        if model is not None and model != served_model:
            raise HttpError(404, f"The model `{model}` does not exist.")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
            raise HttpError(400, "'messages' must be a non-empty list of message objects")
        max_tokens = body.get("max_tokens", body.get("max_completion_tokens"))
        max_tokens = 16 if max_tokens is None else max_tokens
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
            raise HttpError(400, f"'max_tokens' must be a positive integer, got {max_tokens!r}")
        stream = body.get("stream", False)
        if not isinstance(stream, bool):
            raise HttpError(400, f"'stream' must be a boolean, got {stream!r}")
        options = body.get("stream_options")
        usage = isinstance(options, dict) and options.get("include_usage") is True
        texts = [_message_text(m) for m in messages]
        prompt_words = [w for text in texts for w in _WORD.findall(text)]
        last_user = next(
            (t for m, t in zip(reversed(messages), reversed(texts), strict=True) if m.get("role") == "user"),
            "",
        )
        words = [w.lower() for w in _WORD.findall(last_user)] or list(_FALLBACK_WORDS)
        return cls(words, len(prompt_words), max_tokens, stream, usage)

    def usage(self) -> dict[str, int]:
        total = self.prompt_tokens + self.max_tokens
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.max_tokens,
            "total_tokens": total,
        }


def _message_text(message: dict[str, object]) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # [{"type": "text", "text": ...}, ...]
        return " ".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return ""


class _Frontend(_Role):
    """Dynamo's frontend: finds workers in the kv, runs remote prefill, round-robins decode."""

    name = "frontend"

    def __init__(self, args: argparse.Namespace, log: _Log) -> None:
        super().__init__(args, log)
        self.model: str = args.model
        self.kv: str = args.kv.rstrip("/")
        self.workers: dict[str, list[str]] = {"prefill": [], "decode": []}
        self._next: dict[str, int] = {"prefill": 0, "decode": 0}
        self.prefill_total = 0
        self.upstream_errors = 0
        self._poller: asyncio.Task[None] | None = None

    async def startup(self) -> None:
        await asyncio.sleep(max(0.0, self.args.load_seconds))
        self.log.info(f"discovering workers under {self.kv}/v1/kv?prefix=workers/")
        self._poller = asyncio.create_task(self._poll())

    async def shutdown(self, graceful: bool) -> None:
        if self._poller is not None:
            self._poller.cancel()

    def healthy(self) -> bool:
        enough_prefill = bool(self.workers["prefill"]) or not self.args.require_prefill
        return bool(self.workers["decode"]) and enough_prefill

    def health_payload(self) -> dict[str, object]:
        counts = {role: len(urls) for role, urls in self.workers.items()}
        return {"status": "ok" if self.healthy() else "waiting for workers", "workers": counts}

    def metric_lines(self) -> list[str]:
        lines = [
            "# HELP standin_prefill_requests_total Remote prefills done before decoding.",
            "# TYPE standin_prefill_requests_total counter",
            f'standin_prefill_requests_total{{role="frontend"}} {self.prefill_total}',
            "# HELP standin_upstream_errors_total Worker requests that failed and were retried elsewhere.",
            "# TYPE standin_upstream_errors_total counter",
            f'standin_upstream_errors_total{{role="frontend"}} {self.upstream_errors}',
            "# HELP standin_workers Workers currently registered in the kv.",
            "# TYPE standin_workers gauge",
        ]
        lines += [f'standin_workers{{role="{role}"}} {len(urls)}' for role, urls in self.workers.items()]
        return lines

    async def _poll(self) -> None:
        reachable = True
        while True:
            try:
                status, body = await _fetch(f"{self.kv}/v1/kv?prefix=workers/", timeout=1.0)
                listing = json.loads(body) if status == 200 else None
                problem = f"HTTP {status}"
            except (_UpstreamError, ValueError) as exc:
                listing, problem = None, str(exc)
            if isinstance(listing, dict):
                if not reachable:
                    self.log.info(f"kv {self.kv} reachable again")
                reachable = True
                self._update(listing)
            elif reachable:
                reachable = False
                self.log.warning(f"kv {self.kv} not answering ({problem}); keeping the known workers")
            await asyncio.sleep(_KV_POLL_S)

    def _update(self, listing: dict[str, object]) -> None:
        found: dict[str, list[str]] = {"prefill": [], "decode": []}
        for key, value in listing.items():
            parts = key.split("/")
            if len(parts) == 3 and parts[1] in found and isinstance(value, str):
                found[parts[1]].append(value.rstrip("/"))
        for role, urls in found.items():
            urls.sort()
            old = self.workers[role]
            for url in sorted(set(urls) - set(old)):
                self.log.info(f"discovered {role} worker {url}")
            for url in sorted(set(old) - set(urls)):
                self.log.info(f"lost {role} worker {url}")
        self.workers = found
        if self.healthy() and not self.ready.is_set():
            self.mark_ready()

    def _rotation(self, role: str) -> list[str]:
        """All known workers of ``role``, starting at the next one in round-robin order."""
        urls = self.workers[role]
        if not urls:
            return []
        start = self._next[role] % len(urls)
        self._next[role] = start + 1
        return urls[start:] + urls[:start]

    async def route(self, request: Request) -> Response | StreamResponse:
        if request.path == "/v1/models":
            _require(request, "GET")
            return _models_response(self.model)
        if request.path == "/v1/chat/completions":
            _require(request, "POST")
            return await self._chat(request)
        raise HttpError(404, f"no route for {request.path}")

    async def _chat(self, request: Request) -> Response | StreamResponse:
        if not self.healthy():
            raise HttpError(503, "no workers available yet")
        body = request.json()
        if not isinstance(body, dict):
            raise HttpError(400, "request body must be a JSON object")
        self.requests_total += 1
        if self.workers["prefill"]:
            await self._prefill(body)
        stream = body.get("stream") is True
        for url in self._rotation("decode"):
            try:
                upstream = await _open(f"{url}/v1/chat/completions", "POST", request.body, timeout=2.0)
            except _UpstreamError as exc:
                self._upstream_failed("decode", url, str(exc))
                continue
            if upstream.status == 503:
                upstream.close()
                self._upstream_failed("decode", url, "HTTP 503")
                continue
            content_type = upstream.headers.get("content-type", "application/json")
            headers = [("x-standin-worker", url)]
            if stream and upstream.status == 200:
                return StreamResponse(self._relay(upstream), content_type, headers)
            try:
                data = await upstream.read(timeout=600.0)
            except _UpstreamError as exc:
                self._upstream_failed("decode", url, str(exc))
                continue
            finally:
                upstream.close()
            return Response(upstream.status, data, content_type, headers)
        raise HttpError(502, "no decode worker could take the request")

    async def _prefill(self, body: dict[str, object]) -> None:
        """Disaggregated prefill, simulated: one token, non-streaming, on the next prefill worker."""
        payload = {k: v for k, v in body.items() if k not in ("stream_options", "max_completion_tokens")}
        payload.update(max_tokens=1, stream=False)
        data = json.dumps(payload).encode()
        for url in self._rotation("prefill"):
            try:
                status, _ = await _fetch(f"{url}/v1/chat/completions", "POST", data, timeout=30.0)
            except _UpstreamError as exc:
                self._upstream_failed("prefill", url, str(exc))
                continue
            if status == 200:
                self.prefill_total += 1
                return
            self._upstream_failed("prefill", url, f"HTTP {status}")
        self.log.warning("remote prefill failed on every prefill worker; decoding without it")

    def _upstream_failed(self, role: str, url: str, problem: str) -> None:
        self.upstream_errors += 1
        self.log.warning(f"{role} worker {url} failed ({problem}); trying the next one")

    async def _relay(self, upstream: _Upstream) -> AsyncGenerator[bytes, None]:
        try:
            async for piece in upstream.pieces(timeout=60.0):
                yield piece
        finally:
            upstream.close()


# ----------------------------------------------------------------------------------------------- main


async def _run(args: argparse.Namespace) -> int:
    log = _Log(args.role)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    reason: list[str] = []
    crash_code: list[int] = []

    def on_signal(sig: signal.Signals) -> None:
        if not reason:
            reason.append(sig.name)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)

    role: _Role = {"kv": _KvStore, "worker": _Worker, "frontend": _Frontend}[args.role](args, log)
    server = _HttpServer(role.handle, log, args.access_log)
    try:
        port = await server.start(args.host, args.port)
    except OSError as exc:
        log.error(f"error while attempting to bind on address ({args.host!r}, {args.port}): {exc}")
        return 1
    role.bound(args.host, port)
    pid = os.getpid()
    log.uvicorn(f"Started server process [{pid}]")
    log.uvicorn("Waiting for application startup.")
    log.uvicorn(f"Uvicorn running on http://{args.host}:{port} (Press CTRL+C to quit)")

    async def start_role() -> None:
        try:
            await role.startup()
        except Exception as exc:
            log.error(f"startup failed: {exc!r}")
            crash_code.append(1)
            stop.set()

    async def crash_later(seconds: float) -> None:
        await role.ready.wait()
        await asyncio.sleep(seconds)
        log.error(
            f"simulated fatal error after {seconds:g}s of readiness (--exit-after); exiting with code {args.exit_code}"
        )
        crash_code.append(args.exit_code)
        stop.set()

    background = [asyncio.create_task(start_role())]
    if args.exit_after is not None:
        background.append(asyncio.create_task(crash_later(args.exit_after)))
    await stop.wait()
    graceful = not crash_code
    if graceful:
        log.uvicorn(f"Shutting down (received {reason[0] if reason else 'stop'})")
    for task in background:
        task.cancel()
    await asyncio.wait(background)
    await role.shutdown(graceful)
    await server.close()
    if not graceful:
        return crash_code[0]
    log.uvicorn("Waiting for application shutdown.")
    log.uvicorn("Application shutdown complete.")
    log.uvicorn(f"Finished server process [{pid}]")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m supervisor.standin",
        description="Fake LLM-serving processes (etcd-like kv, vLLM-like worker, Dynamo-like frontend).",
    )
    roles = parser.add_subparsers(dest="role", required=True, metavar="ROLE")

    def role(name: str, help_text: str, load_seconds: float) -> argparse.ArgumentParser:
        sub = roles.add_parser(name, help=help_text, description=help_text)
        sub.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s)")
        sub.add_argument("--port", type=int, required=True, help="port to bind (0: any free port)")
        sub.add_argument(
            "--load-seconds", type=float, default=load_seconds, help="startup time before ready (%(default)s)"
        )
        sub.add_argument("--exit-after", type=float, metavar="SECONDS", help="crash this long after becoming ready")
        sub.add_argument("--exit-code", type=int, default=1, help="exit status of --exit-after (%(default)s)")
        sub.add_argument("--access-log", action="store_true", help="print one line per HTTP request")
        return sub

    role("kv", "etcd stand-in: an HTTP key-value store under /v1/kv/", 0.2)
    worker = role("worker", "vLLM stand-in: a prefill or decode worker serving /v1/chat/completions", 1.0)
    worker.add_argument("--role-name", choices=("prefill", "decode"), default="decode")
    worker.add_argument("--model", default=DEFAULT_MODEL)
    worker.add_argument("--kv", metavar="URL", help="register under workers/<role-name>/<port> in this kv")
    worker.add_argument("--tokens-per-second", type=float, default=200.0, help="generation pace (%(default)s)")
    frontend = role("frontend", "Dynamo frontend stand-in: routes chat completions to registered workers", 0.0)
    frontend.add_argument("--kv", metavar="URL", required=True, help="kv to discover workers in")
    frontend.add_argument("--model", default=DEFAULT_MODEL)
    frontend.add_argument(
        "--require-prefill",
        action="store_true",
        help="stay unhealthy until a prefill worker is registered too",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Runs one stand-in until SIGTERM/SIGINT (exit 0) or a simulated crash (``--exit-code``)."""
    args = _parser().parse_args(argv)
    return asyncio.run(_run(args))


if __name__ == "__main__":
    raise SystemExit(main())
