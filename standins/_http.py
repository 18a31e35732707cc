"""A small HTTP/1.1 server on asyncio streams: requests, responses, streaming, keep-alive."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncGenerator, Awaitable, Callable
from http import HTTPStatus
from urllib.parse import parse_qs, unquote, urlsplit

from ._output import Log

_MAX_BODY = 16 * 1024 * 1024
_MAX_HEADER_LINES = 100
_KEEPALIVE_IDLE_S = 75.0
_HEX = re.compile(r"[0-9A-Fa-f]+")
_METHOD = re.compile(r"[A-Z]+")
_VERSION = re.compile(r"HTTP/1\.[01]")


class HttpError(Exception):
    """Aborts a request with ``status``; the server answers with an OpenAI-style error body."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class PeerClosed(EOFError):
    """The other side closed the connection mid-message."""


class UpstreamError(Exception):
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


def json_response(status: int, payload: object, headers: list[tuple[str, str]] | None = None) -> Response:
    return Response(status, json.dumps(payload).encode(), headers=headers)


def _error_response(status: int, message: str) -> Response:
    kind = "invalid_request_error" if status < 500 else "server_error"
    return json_response(status, {"error": {"message": message, "type": kind, "code": status}})


def _head_bytes(status: int, headers: list[tuple[str, str]]) -> bytes:
    lines = [f"HTTP/1.1 {status} {HTTPStatus(status).phrase}", "server: standin"]
    lines.extend(f"{name}: {value}" for name, value in headers)
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def read_head(reader: asyncio.StreamReader) -> list[str] | None:
    """Lines of a message head up to the blank line; None on a clean EOF before the first byte."""
    lines: list[str] = []
    while True:
        raw = await reader.readline()  # ValueError past the reader's line limit
        if not raw.endswith(b"\n"):
            if not raw and not lines:
                return None
            raise PeerClosed("connection closed inside a message head")
        line = raw.rstrip(b"\r\n").decode("latin-1")
        if not line:
            if lines:
                return lines
            continue  # RFC 9112 2.2: ignore empty lines before a request line
        lines.append(line)
        if len(lines) > _MAX_HEADER_LINES:
            raise HttpError(400, "too many header lines")


def parse_headers(lines: list[str]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in lines:
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise HttpError(400, f"malformed header line {line[:80]!r}")
        key = name.lower()
        value = value.strip()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    return headers


async def iter_chunked(reader: asyncio.StreamReader, limit: int | None) -> AsyncGenerator[bytes, None]:
    """Payloads of a chunked body, one per chunk, so relays can pass chunks on as they come."""
    total = 0
    while True:
        size_line = await reader.readline()
        if not size_line.endswith(b"\n"):
            raise PeerClosed("connection closed inside a chunked body")
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


async def read_body(reader: asyncio.StreamReader, headers: dict[str, str], *, request: bool) -> bytes:
    """A whole body; requests without a length have none, responses without one run to EOF."""
    encoding = headers.get("transfer-encoding", "").strip().lower()
    if encoding:
        if encoding != "chunked":
            raise HttpError(400, f"unsupported transfer-encoding {encoding!r}")
        chunks = iter_chunked(reader, _MAX_BODY if request else None)
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


class HttpServer:
    """A small HTTP/1.1 server: keep-alive for plain responses, chunked SSE, 400s for garbage."""

    def __init__(self, handler: Handler, log: Log, access_log: bool) -> None:
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
                head = await asyncio.wait_for(read_head(reader), _KEEPALIVE_IDLE_S)
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
        headers = parse_headers(head[1:])
        if headers.get("expect", "").lower() == "100-continue":
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        body = await read_body(reader, headers, request=True)
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
                    raise PeerClosed("client went away mid-stream")
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
